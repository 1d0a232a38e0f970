"""The `mlcheck` command line: one subcommand per module in ``mlcheck/cli/``.

Exit codes shared by every subcommand: 0 success, 1 tests failed or errored, 2 usage or
environment problems (bad arguments, invalid manifest, no tests collected, hub unreachable).
Errors mlcheck raises on purpose (:class:`~mlcheck.errors.MlcheckError`) print one line, no
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import MlcheckError
from .commands import COMMAND_MODULES

EPILOG = """\
exit codes: 0 success; 1 a selected test failed or errored; 2 usage or environment problem
(bad arguments or manifest, no tests collected, hub unreachable). Each subcommand's --help
says more."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlcheck",
        description="Test ML code for real: fast tests on random/empty weights on every push, "
        "real weights and GPUs when asked, one report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mlcheck {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is passed through unparsed (argparse's REMAINDER would swallow
    # options that follow a positional argument).
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if passthrough and not getattr(args, "accepts_passthrough", False):
        parser.error(f"`mlcheck {args.command}` takes no arguments after --")
    args.passthrough = passthrough
    try:
        code: int = args.handler(args)
    except MlcheckError as exc:
        print(f"mlcheck: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mlcheck: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
