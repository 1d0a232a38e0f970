"""`mlcheck run`: run the tests of the selected tiers offline and write a results directory."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import constants
from ..errors import EnvironmentProblem, NoTestsCollected, UsageError
from ..tiers import Tier, format_tiers, parse_tiers

if TYPE_CHECKING:
    from ..results import RunResults

HELP = "run the tests of the selected tiers and write mlcheck-results/"
DESCRIPTION = """\
Run pytest with the mlcheck plugin on PATHS, offline (HF_HUB_OFFLINE=1 in the test process),
optionally on several CPU cores (pytest-xdist; torch threads are divided between workers), and
write a results directory: results.json (schema in mlcheck/schema), junit.xml.

Before the run, locked model files missing from the cache are fetched (weights only when the
real or gpu tier is selected); --no-warm forbids any network use.

Tests outside the selected tiers are reported as not run, with how to run them. Selected tests
whose requirements are missing (weights not cached, no accelerator) are errors, unless
--allow-missing turns them into skips.

Arguments after `--` go to pytest unchanged:  mlcheck run tests -- -k tokenizer -x"""
EPILOG = """\
exit codes:
  0  every selected test passed (tests not run because their tier was not selected don't count)
  1  a selected test failed or errored (a cache miss or a setup error is an error)
  2  usage or environment problem: bad arguments, invalid manifest, no tests collected,
     pytest internal error or interruption"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", default=[], help="test files or folders (default .)")
    parser.add_argument(
        "--tier",
        default=None,
        help=f"fast, real, gpu (comma-separated) or all (default ${constants.ENV_TIER} or fast)",
    )
    parser.add_argument(
        "-n",
        "--workers",
        default=None,
        help="pytest-xdist worker processes: a number or auto (default: no xdist)",
    )
    parser.add_argument("--shard", default=None, metavar="I/N", help="run shard I of N (1-based)")
    parser.add_argument(
        "--durations",
        type=Path,
        default=None,
        metavar="FILE",
        help="recorded durations that balance --shard (a previous run's durations.json; "
        "default $MLCHECK_DURATIONS or .test_durations; none: split by count)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path(os.environ.get(constants.ENV_RESULTS_DIR, constants.DEFAULT_RESULTS_DIR)),
        help=f"where to write results (default ${constants.ENV_RESULTS_DIR} or "
        f"{constants.DEFAULT_RESULTS_DIR})",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed given to every test")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="skip selected tests whose weights or accelerator are missing (local use)",
    )
    parser.add_argument(
        "--safety-manifest",
        type=Path,
        default=None,
        metavar="DIR",
        help="take allow_pickle / trust_remote_code from the manifest in DIR (the base "
        "branch's, for pull-request code) instead of the project's own",
    )
    parser.add_argument(
        "--no-warm",
        action="store_true",
        help="never fetch missing locked model files before the run (fully offline)",
    )
    parser.add_argument(
        "--golden",
        choices=["check", "record", "update"],
        default=None,
        help="golden values: check (default), record (write missing values for this "
        "machine's key) or update (also rewrite failing ones)",
    )
    parser.add_argument(
        "--golden-key",
        default=None,
        metavar="KEY",
        help="record and look up golden values under KEY (default, cuda, ...) instead of this "
        "machine's key (cpu, cuda:sm90, ...)",
    )
    parser.set_defaults(handler=handle, accepts_passthrough=True)


def handle(args: argparse.Namespace) -> int:
    tiers = parse_tiers(args.tier or constants.env_tier() or constants.DEFAULT_TIER)
    paths = [Path(p) for p in args.paths] or [Path(".")]
    for path in paths:
        if not path.exists():
            raise UsageError(f"path {str(path)!r} does not exist")
    workers = _parse_workers(args.workers)
    shard = _parse_shard(args.shard)
    extra = list(args.passthrough)

    if not args.no_warm:
        _warm_missing(paths[0], tiers)

    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    stale = results_dir / "results.json"
    stale.unlink(missing_ok=True)  # never report a previous run's results as this run's

    command = [
        sys.executable,
        "-m",
        "pytest",
        *[str(p) for p in paths],
        f"--mlcheck-tier={format_tiers(tiers)}",
        f"--mlcheck-results={results_dir}",
        f"--junitxml={results_dir / 'junit.xml'}",
        "-o",
        "junit_family=xunit2",
        "-rfE",
    ]
    if args.seed is not None:
        command.append(f"--mlcheck-seed={args.seed}")
    if args.allow_missing:
        command.append("--mlcheck-allow-missing")
    if args.golden is not None:
        command.append(f"--mlcheck-golden={args.golden}")
    if args.golden_key is not None:
        command.append(f"--mlcheck-golden-key={args.golden_key}")
    if workers is not None:
        command += ["-n", str(workers)]
    if shard is not None:
        command += shard_args(shard, paths, args.durations)
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        command += ["-p", "mlcheck.plugin", "-p", "xdist.plugin"]
    command += extra

    env = _test_env(workers)
    if args.safety_manifest is not None:
        if not args.safety_manifest.is_dir():
            raise UsageError(f"--safety-manifest {args.safety_manifest}: not a folder")
        env[constants.ENV_SAFETY_MANIFEST] = str(args.safety_manifest.resolve())
    code = subprocess.call(command, env=env)
    return _exit_code(code, results_dir)


def _warm_missing(path: Path, tiers: frozenset[Tier]) -> None:
    """Fetch locked files the cache lacks, in this process, while the network is allowed.

    The tests then run in a separate process with HF_HUB_OFFLINE=1 (huggingface_hub reads it
    at import). A project without a lock has nothing to warm.
    """
    from ..cache import warm
    from ..lock import read_lock
    from ..manifest import find_root

    root = find_root(path.resolve() if path.is_dir() else path.resolve().parent)
    if read_lock(root) is None:
        return
    needs_weights = bool(tiers & {Tier.REAL, Tier.GPU})
    report = warm(root, only_missing=True, weights=needs_weights, progress=sys.stderr.isatty())
    if not report.nothing_to_do:
        mb = report.downloaded_bytes / 1e6
        print(
            f"mlcheck: fetched {len(report.downloaded)} locked file(s), {mb:.1f} MB, "
            f"in {report.seconds:.1f} s",
            file=sys.stderr,
        )


def _test_env(workers: int | str | None) -> dict[str, str]:
    env = dict(os.environ)
    env[constants.ENV_HF_HUB_OFFLINE] = "1"  # nothing reaches a hub during the test run
    cpus = os.cpu_count() or 1
    n = cpus if workers == "auto" else int(workers or 1)
    if n > 1:
        # Each xdist worker would otherwise start one torch thread per core: oversubscription.
        threads = str(max(1, cpus // n))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, threads)
    return env


def _exit_code(pytest_code: int, results_dir: Path) -> int:
    from ..results import read

    if pytest_code == 5:
        raise NoTestsCollected("no tests collected: check the paths and pytest's testpaths")
    if pytest_code in (2, 3, 4):
        names = {2: "interrupted", 3: "an internal error", 4: "a usage error"}
        raise EnvironmentProblem(f"pytest stopped with {names[pytest_code]} (exit {pytest_code})")
    results = read(results_dir)
    _write_reports(results, results_dir)
    return max(results.exit_code(), 1 if pytest_code == 1 else 0)


def _write_reports(results: RunResults, results_dir: Path) -> None:
    """report.md, summary.md, durations (for --shard next time), and the terminal summary."""
    from .. import shard
    from ..merge import merge_sections
    from .report import context_from_env, write_outputs

    shard.write_durations(shard.durations([results]), results_dir / shard.DURATIONS_FILE)
    write_outputs(
        merge_sections([results]),
        results,
        results_dir,
        context_from_env(os.environ),
        formats={"markdown", "summary", "terminal"},
    )


def _parse_workers(text: str | None) -> int | str | None:
    if text is None:
        return None
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--workers takes a positive number or auto, got {text!r}")
    return int(text)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, total = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N like 1/4, got {text!r}") from None
    if not 1 <= index <= total:
        raise UsageError(f"--shard {text}: I must be between 1 and N")
    return index, total


def shard_args(shard: tuple[int, int], paths: list[Path], durations: Path | None) -> list[str]:
    from ..shard import pytest_args

    selection = pytest_args(shard[0], shard[1], paths, durations)
    return [f"--mlcheck-shard={shard[0]}/{shard[1]}", *selection]
