"""`mlcheck golden accept`: take golden values from a run's results (a CI artifact)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..text import plural

HELP = "accept golden values from results folders (e.g. a GPU run's artifact)"
DESCRIPTION = """\
Golden values (the `golden` fixture) live in __golden__/<test file>.json, keyed by hardware
(cpu, cuda:sm90, ...). A run records in results.json what each failing or missing golden check
observed; `mlcheck golden accept RESULTS_DIR...` writes those values into the golden files,
under the key of the machine that produced them, and prints each change. Commit the result.

  gh run download RUN_ID -n mlcheck-results-gpu -D gpu-results
  mlcheck golden accept gpu-results"""
EPILOG = """\
exit codes:
  0  values written (or nothing to accept)
  2  no results, malformed results or golden files, or a path outside the project"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "golden",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="golden_command", metavar="ACTION", required=True)
    acc = sub.add_parser(
        "accept",
        help="write observed golden values from results folders into the golden files",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    acc.add_argument("results", nargs="+", type=Path, help="results folders or results.json")
    acc.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="the project root the results' paths are relative to (default: .)",
    )
    acc.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    acc.set_defaults(handler=handle_accept)


def handle_accept(args: argparse.Namespace) -> int:
    from ..golden.accept import accept

    changes = accept(args.results, args.root, dry_run=args.dry_run)
    if not changes:
        print("mlcheck golden accept: no failing or missing golden values in these results")
        return 0
    verb = "would write" if args.dry_run else "wrote"
    print(f"mlcheck golden accept: {verb} {plural(len(changes), 'value')}:")
    for change in changes:
        print("  " + change.line())
    return 0
