"""`mlcheck mutate`: which realistic ML bugs would the suite miss? (SPEC §12)"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .. import constants
from ..errors import MissingFile, UsageError
from .run import _parse_workers

HELP = "inject realistic ML bugs one at a time and report which tests catch them"
DESCRIPTION = """\
Run the selected tests once without mutants (they must pass), then once per ML mutant: a
realistic bug (dropout off in training, causal mask dropped, labels unshifted, optimizer no-op,
...) injected inside the test process only. No file of the project is changed or written: the
runs go to a scratch folder outside it, the report to --results-dir.

Each mutant is killed (a test that passed without it fails: errors, crashes and timeouts
count), survived (every test still passes: the report says which check would catch it), or not
reached (the tests never ran the code it changes; not counted). Score = killed / reached.

Arguments after `--` go to pytest unchanged."""
EPILOG = """\
exit codes:
  0  the mutation run completed, whatever the score
  1  only with --fail-under: the score is below SCORE
  2  the tests fail (or collect nothing) without mutants, or usage is wrong

Writes mutation.json (schema: mlcheck/schema/mutation.schema.json) and mutation.md; with
--calibrate also calibration.json and calibration.md (false alarms beside each test's kills).
In GitHub Actions, `command: mutate` of the action runs this and posts the report."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mutate",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", default=[], help="test files or folders (default .)")
    parser.add_argument("--tier", default=None, help="tiers to run (as mlcheck run; default fast)")
    parser.add_argument(
        "--mutants",
        default="all",
        metavar="all|NAME,...",
        help="which mutants (default all); `mlcheck mutate --list` names them",
    )
    parser.add_argument(
        "-n",
        "--workers",
        default=None,
        help="mutant runs at the same time (a number or auto); the unmutated run uses xdist",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path(constants.results_dir()),
        help="where mutation.json and mutation.md go (default "
        f"${constants.ENV_RESULTS_DIR} or {constants.DEFAULT_RESULTS_DIR})",
    )
    parser.add_argument(
        "--all-killers",
        action="store_true",
        help="run every test under each mutant (default: stop at the first that kills it)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="MINUTES",
        help="stop starting mutants after MINUTES; report what ran (the rest: not run)",
    )
    parser.add_argument(
        "--fail-under",
        type=float,
        default=None,
        metavar="SCORE",
        help="exit 1 when killed/reached is below SCORE (0-1, or a percentage like 80)",
    )
    parser.add_argument(
        "--mutant-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop a mutant's run after SECONDS and count the mutant killed by a timeout "
        "(default: 10x the unmutated run, at least 120)",
    )
    parser.add_argument(
        "--calibrate",
        type=int,
        default=None,
        metavar="SEEDS",
        help="then run `mlcheck calibrate --seeds SEEDS` on the same tests: calibration.json "
        "and one table per test with its false alarms beside the mutants it killed (use "
        "--all-killers to credit every test that catches a mutant)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.set_defaults(handler=handle, accepts_passthrough=True)


def handle(args: argparse.Namespace) -> int:
    from ..power import report as power_report
    from ..power.mutants import MUTANTS, select
    from ..power.runner import Settings, check_unmutated, run_mutants, run_suite

    if args.list:
        for m in MUTANTS.values():
            print(f"{m.name:24} {m.bug} (caught by {m.check})")
        return 0
    mutants = select(args.mutants)
    fail_under = _fraction(args.fail_under)
    if args.mutant_timeout is not None and args.mutant_timeout <= 0:
        raise UsageError(
            f"--mutant-timeout takes a positive number of seconds, got {args.mutant_timeout}"
        )
    if args.calibrate is not None and args.calibrate < 2:
        raise UsageError(f"--calibrate takes at least 2 seeds, got {args.calibrate}")
    if args.budget is not None and args.budget <= 0:
        raise UsageError(f"--budget takes a positive number of minutes, got {args.budget}")
    paths = tuple(args.paths) or (".",)
    for path in paths:
        if not Path(path.split("::")[0]).exists():
            raise MissingFile(f"path {path!r} does not exist")
    settings = Settings(
        paths=paths,
        tier=args.tier,
        workers=_parse_workers(args.workers),
        all_killers=args.all_killers,
        budget_s=None if args.budget is None else args.budget * 60,
        extra=tuple(args.passthrough),
        env=dict(os.environ),
        mutant_timeout_s=args.mutant_timeout,
    )
    started = time.monotonic()
    deadline = None if settings.budget_s is None else started + settings.budget_s
    scratch = Path(tempfile.mkdtemp(prefix="mlcheck-mutate-"))  # outside the project
    try:
        print("mlcheck mutate: unmutated run ...", file=sys.stderr)
        unmutated = run_suite(settings, scratch / "unmutated", workers=settings.workers)
        check_unmutated(unmutated)
        assert unmutated.results is not None
        passing = sum(1 for t in unmutated.results.tests if t.outcome.value == "passed")
        print(
            f"mlcheck mutate: {passing} tests pass unmutated in {unmutated.duration:.1f} s; "
            f"{len(mutants)} mutants ...",
            file=sys.stderr,
        )

        def progress(result: object) -> None:
            print(f"  {result.name}: {result.status.value}", file=sys.stderr)  # type: ignore[attr-defined]

        results = run_mutants(
            settings, mutants, scratch, unmutated, deadline=deadline, on_done=progress
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = power_report.MutationReport(
        mutants=tuple(results),
        tests=passing,
        unmutated_duration=unmutated.duration,
        duration=time.monotonic() - started,
        models=power_report.models_of(unmutated.results),
        paths=paths,
        tier=args.tier,
        all_killers=args.all_killers,
        budget_minutes=args.budget,
    )
    path = power_report.write(report, args.results_dir)
    power_report.print_terminal(report)
    print(f"mlcheck mutate: wrote {path} and {path.with_name(power_report.MUTATION_MARKDOWN)}")
    _write_job_summary(path.with_name(power_report.MUTATION_MARKDOWN))
    if args.calibrate is not None:
        _calibrate(args, paths, power_report.to_dict(report))
    if fail_under is not None and (report.score or 0.0) < fail_under:
        print(
            f"mlcheck mutate: score {report.score or 0:.0%} is below --fail-under {fail_under:.0%}",
            file=sys.stderr,
        )
        return 1
    return 0


def _calibrate(
    args: argparse.Namespace, paths: tuple[str, ...], mutation: dict[str, object]
) -> None:
    """``--calibrate SEEDS``: the false-alarm side, beside each test's kills (one table)."""
    from ..power import calibrate
    from ..power.calibrate import kills_from_mutation

    seeds = list(range(args.calibrate))
    result = calibrate.measure(
        paths,
        seeds,
        1e-3,
        tier=args.tier,
        workers=_parse_workers(args.workers),
        extra=args.passthrough,
        environ=os.environ,
        label="mlcheck mutate: calibrating,",
    )
    kills = kills_from_mutation(mutation)
    path = calibrate.write(result, args.results_dir, kills)
    print(calibrate.markdown(result, kills))
    print(f"mlcheck mutate: wrote {path}")
    _write_job_summary(path.with_name(calibrate.CALIBRATION_MARKDOWN))


def _write_job_summary(markdown: Path) -> None:
    """Append the section to the job summary when running in GitHub Actions."""
    summary = constants.get(constants.ENV_GITHUB_STEP_SUMMARY)
    if summary:
        with open(summary, "a", encoding="utf-8") as out:
            out.write(markdown.read_text() + "\n")


def _fraction(value: float | None) -> float | None:
    if value is None:
        return None
    if value < 0 or value > 100:
        raise UsageError(f"--fail-under takes a score from 0 to 1 (or a percentage), got {value}")
    return value / 100 if value > 1 else value
