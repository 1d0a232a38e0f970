"""`mlcheck calibrate`: how often does each test fail with no bug? (SPEC §12)"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import constants
from ..errors import MissingFile, UsageError
from .run import _parse_workers

HELP = "run each test under N seeds and measure its false-failure rate"
DESCRIPTION = """\
Run each selected test under N seeds (the seed mlcheck gives random, numpy, torch, the models
fixture and the checks) and report per test the failures out of N with an exact 95%
Clopper-Pearson interval. Tests whose measured rate is above --target are flagged flaky by
design, with the seeds that failed. A test that gives the same outcome on two seeds without
using the seed is deterministic: its other seeds are skipped. The suite line gives the chance
that a whole-suite run fails with no bug.

Writes calibration.json (schema: mlcheck/schema/calibration.schema.json) and calibration.md to
--results-dir; nothing into the project. When --results-dir holds a mutation.json (mlcheck
mutate, best with --all-killers), the table also shows the mutants each test killed: power and
false alarms, per test, in one table. Arguments after `--` go to pytest unchanged."""
EPILOG = """\
exit codes:
  0  the calibration ran (whatever the rates)
  1  only with --fail-flaky: a test is flaky by design
  2  usage error, or no test ran"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", default=[], help="test files or folders (default .)")
    parser.add_argument("--tier", default=None, help="tiers to run (as mlcheck run; default fast)")
    parser.add_argument("--seeds", type=int, default=20, metavar="N", help="seeds (default 20)")
    parser.add_argument(
        "--first-seed", type=int, default=0, metavar="S", help="seeds S, S+1, ... (default 0)"
    )
    parser.add_argument(
        "--target",
        type=float,
        default=1e-3,
        metavar="RATE",
        help="false-failure rate per run above which a test is flaky by design (default 1e-3)",
    )
    parser.add_argument(
        "-n", "--workers", default=None, help="xdist workers (a number or auto; default none)"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path(constants.results_dir()),
        help="where calibration.json and calibration.md go (default "
        f"${constants.ENV_RESULTS_DIR} or {constants.DEFAULT_RESULTS_DIR})",
    )
    parser.add_argument(
        "--fail-flaky", action="store_true", help="exit 1 when a test is flaky by design"
    )
    parser.set_defaults(handler=handle, accepts_passthrough=True)


def _kills(mutation: Path) -> dict[str, list[str]] | None:
    """Power beside false alarms: the mutants each test killed, when `mlcheck mutate` wrote its
    report (validated against its schema) into the same results folder."""
    import json
    from importlib import resources

    import jsonschema

    from ..power.calibrate import kills_from_mutation

    if not mutation.is_file():
        return None
    schema = json.loads(
        resources.files("mlcheck").joinpath("schema/mutation.schema.json").read_text()
    )
    try:
        data = json.loads(mutation.read_text())
        jsonschema.validate(data, schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        print(
            f"mlcheck calibrate: ignoring {mutation}: {str(exc).splitlines()[0]}", file=sys.stderr
        )
        return None
    return kills_from_mutation(data)


def handle(args: argparse.Namespace) -> int:
    from ..power import calibrate

    if args.seeds < 2:
        raise UsageError(f"--seeds takes at least 2 seeds, got {args.seeds}")
    if not 0 < args.target < 1:
        raise UsageError(f"--target takes a rate between 0 and 1, got {args.target}")
    paths = tuple(args.paths) or (".",)
    for path in paths:
        if not Path(path.split("::")[0]).exists():
            raise MissingFile(f"path {path!r} does not exist")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    result = calibrate.measure(
        paths,
        seeds,
        args.target,
        tier=args.tier,
        workers=_parse_workers(args.workers),
        extra=args.passthrough,
        environ=os.environ,
    )
    kills = _kills(args.results_dir / "mutation.json")
    path = calibrate.write(result, args.results_dir, kills)
    print(calibrate.markdown(result, kills))
    print(f"mlcheck calibrate: wrote {path}")
    return 1 if args.fail_flaky and result.flaky() else 0
