"""`mlcheck run`: run the tests of the selected tiers offline and write a results directory."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import constants
from ..errors import EnvironmentProblem, MissingFile, NoTestsCollected, UsageError
from ..results.schema import JOURNAL_FILE, JUNIT_FILE, RESULTS_FILE
from ..text import duration_text, plural
from ..tiers import Tier, format_tiers, selected_tiers

if TYPE_CHECKING:
    from ..results.schema import RunResults

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
     pytest internal error, cached weights that differ from the lock; with
     --fail-on-empty, no test in the selected tiers
  130, 143  cancelled by SIGINT / SIGTERM: the signal went to pytest and its workers, what
     finished is in results.json (run marked interrupted, the running tests listed)

On SIGTERM or SIGINT the tests get the signal, then at most 5 s to stop before they are
killed. If pytest dies (OOM kill, segfault) the finished results survive; the run is marked
crashed and the running test failed."""


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
        default=constants.results_dir(),
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
        "--fail-on-empty",
        action="store_true",
        help="exit 2 when the selected tiers contain no test (default: exit 0, and say so)",
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
    # -- only the real/gpu tests a change can break (mlcheck.plugin.selection) --
    parser.add_argument(
        "--changed-since",
        default=None,
        metavar="REF",
        help="run only the real and gpu tests a change since git REF can break, by --file-map; "
        "the rest are not run ('not affected by this change'); everything when unsure",
    )
    parser.add_argument(
        "--file-map",
        default=None,
        metavar="PATH",
        help="the per-test file map of a full run (--record-map) that --changed-since uses",
    )
    parser.add_argument(
        "--record-map",
        default=None,
        metavar="PATH",
        help="record which project files each test executes (coverage.py) into PATH; for full "
        "runs (nightly, pushes to the default branch)",
    )
    # -- one runner class's share of a GPU run (mlcheck.plugin.runner_share) --
    parser.add_argument(
        "--runner-share",
        default=None,
        metavar="JSON",
        help="run only this runner class's share of a GPU run: an entry of the `runners` input "
        "that `mlcheck schedule` dispatches with [tool.mlcheck] gpu_runners",
    )
    parser.set_defaults(handler=handle, accepts_passthrough=True)


def handle(args: argparse.Namespace) -> int:
    tiers = selected_tiers(args.tier, "--tier")
    paths = [Path(p) for p in args.paths] or [Path(".")]
    for path in paths:
        if not Path(str(path).split("::")[0]).exists():  # a node id names its file first
            raise MissingFile(f"path {str(path)!r} does not exist")
    workers = _parse_workers(args.workers)
    shard = _parse_shard(args.shard)
    extra = list(args.passthrough)

    if not args.no_warm:
        _warm_missing(paths[0], tiers)

    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    for stale in (RESULTS_FILE, JOURNAL_FILE, JUNIT_FILE):
        # never report a previous run's results as this run's
        (results_dir / stale).unlink(missing_ok=True)

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
    for option, value in (
        ("changed-since", args.changed_since),
        ("file-map", args.file_map),
        ("record-map", args.record_map),
    ):
        if value is not None:
            command.append(f"--mlcheck-{option}={value}")
    if args.runner_share:
        from ..plugin.runner_share import OPTION, Share

        Share.parse(args.runner_share)  # a bad share is a usage error before pytest starts
        command += ["-p", "mlcheck.plugin.runner_share", f"{OPTION}={args.runner_share}"]
    if workers is not None:
        command += ["-n", str(workers)]
    if shard is not None:
        command += shard_args(shard, paths, args.durations)
    if constants.plugin_autoload_disabled():
        command += ["-p", "mlcheck.plugin", "-p", "xdist.plugin"]
    command += extra

    env = _test_env(workers)
    if args.safety_manifest is not None:
        if not args.safety_manifest.is_dir():
            raise UsageError(f"--safety-manifest {args.safety_manifest}: not a folder")
        env[constants.ENV_SAFETY_MANIFEST] = str(args.safety_manifest.resolve())
        # Resolved here, in the parent, before any PR code of the test process runs.
        from ..project.trusted_options import encode, resolve

        env[constants.ENV_SAFETY_OPTIONS] = encode(resolve(args.safety_manifest))
    stamp_dir = Path(tempfile.mkdtemp(prefix="mlcheck-verified-"))  # outside the workspace
    try:  # removed also when the verification fails (corrupted weights: exit 2)
        verified = _verify_weights(paths[0], tiers, stamp_dir / "stamp", env)
        return _run_and_report(command, env, args, results_dir, tiers, workers, shard, verified)
    finally:
        shutil.rmtree(stamp_dir, ignore_errors=True)


def _verify_weights(
    path: Path, tiers: frozenset[Tier], stamp: Path, env: dict[str, str]
) -> tuple[str, ...]:
    """Hash the manifest's weights once, before pytest, when the real or gpu tier runs."""
    from ..project.cache import verify_weights
    from ..project.manifest import find_root

    if not tiers & {Tier.REAL, Tier.GPU}:
        return ()
    root = find_root(path.resolve() if path.is_dir() else path.resolve().parent)
    verified, report = verify_weights(root, stamp)
    env[constants.ENV_VERIFIED_STAMP] = str(stamp)
    if verified:
        print(
            f"mlcheck: verified {plural(len(verified), 'model')} against the lock: "
            f"{report.checked_bytes / 1e6:.1f} MB in {duration_text(report.seconds)} "
            f"({report.mb_per_s:.0f} MB/s)",
            file=sys.stderr,
        )
    return tuple(verified)


def _run_and_report(
    command: list[str],
    env: dict[str, str],
    args: argparse.Namespace,
    results_dir: Path,
    tiers: frozenset[Tier],
    workers: int | str | None,
    shard: tuple[int, int] | None,
    verified: tuple[str, ...],
) -> int:
    started = time.time()
    code, received = _run_forwarding_signals(command, env)
    if received is not None or code < 0 or not (results_dir / RESULTS_FILE).exists():
        return _salvage(results_dir, code, received, started, tiers, workers, shard, verified)
    return _exit_code(code, results_dir, fail_on_empty=args.fail_on_empty, verified=verified)


GRACE_S = 5.0  # GitHub's cancel escalates SIGINT -> SIGTERM -> kill within about 10 s


def _run_forwarding_signals(command: list[str], env: dict[str, str]) -> tuple[int, int | None]:
    """Run pytest in its own process group; forward SIGTERM/SIGINT to the whole group.

    Returns (pytest's exit status, negative for a signal; the signal this process received).
    After a forwarded signal pytest gets ``GRACE_S`` seconds, then the group is killed; and
    whatever is left of the group when pytest exits (orphaned xdist workers, servers a test
    started) is killed too, so nothing outlives the run.
    """
    received: list[int] = []
    group: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if group:
            _signal_group(group[0], signum)

    # Installed before the child starts: exec resets handled signals to their defaults, so
    # pytest can take SIGINT as KeyboardInterrupt even where this process was started with
    # SIGINT ignored (a background job of a non-interactive shell).
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        proc = subprocess.Popen(command, env=env, start_new_session=True)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    group.append(proc.pid)
    if received:  # arrived before the group existed
        _signal_group(proc.pid, received[0])
    try:
        deadline: float | None = None
        while True:
            try:
                code = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if received and deadline is None:
                deadline = time.monotonic() + GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                _signal_group(proc.pid, signal.SIGKILL)
                code = proc.wait()
                break
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # the rest of the group, if any
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code, received[0] if received else None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pgid, signum)


def _salvage(
    results_dir: Path,
    code: int,
    received: int | None,
    started: float,
    tiers: frozenset[Tier],
    workers: int | str | None,
    shard: tuple[int, int] | None,
    verified: tuple[str, ...] = (),
) -> int:
    """results.json, junit.xml and the report from the journal of a run cut short."""
    from dataclasses import replace

    from ..results.builder import ResultsBuilder
    from ..results.junit import reconcile, write_junit
    from ..results.schema import RunInfo, RunResults, RunStatus, read, write

    builder = ResultsBuilder.replay(results_dir / JOURNAL_FILE)
    now = time.time()
    base: RunInfo | None = None
    if (results_dir / RESULTS_FILE).exists():  # pytest finished its session (SIGINT)
        base = read(results_dir).run
    name: str | None
    if received is not None:
        status, name = RunStatus.INTERRUPTED, signal.Signals(received).name
        exit_code = 128 + received
    else:
        status = RunStatus.CRASHED
        name = signal.Signals(-code).name if code < 0 else None
        why = f"the test process died ({name})" if name else f"pytest exited {code} early"
        builder.crashed(now, why)
        exit_code = 1
    run = RunInfo(
        tiers=tuple(format_tiers(tiers).split(",")),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
        shard=f"{shard[0]}/{shard[1]}" if shard else None,
        workers=workers if isinstance(workers, int) else 0,
    )
    run = replace(
        base or run,
        duration=round(now - started, 3),
        status=status,
        running=builder.running(now),
        collected=builder.collected if base is None else base.collected,
        signal=name,
        pytest_exit_code=code,
        verified=verified,
    )
    results = RunResults(run=run, tests=builder.build())
    write(results, results_dir)
    if (results_dir / JUNIT_FILE).exists():  # pytest's, from a session that ended (SIGINT)
        reconcile(results, results_dir / JUNIT_FILE)
    else:
        write_junit(results, results_dir / JUNIT_FILE)
    _write_reports(results, results_dir)
    return exit_code if status is RunStatus.INTERRUPTED else max(exit_code, results.exit_code())


def _warm_missing(path: Path, tiers: frozenset[Tier]) -> None:
    """Fetch locked files the cache lacks, in this process, while the network is allowed.

    The tests then run in a separate process with HF_HUB_OFFLINE=1 (huggingface_hub reads it
    at import). A project without a lock has nothing to warm.
    """
    from ..errors import LocalModelMissing
    from ..project.hub import warm
    from ..project.lock import read_lock
    from ..project.manifest import find_root

    root = find_root(path.resolve() if path.is_dir() else path.resolve().parent)
    if read_lock(root) is None:
        return
    needs_weights = bool(tiers & {Tier.REAL, Tier.GPU})
    try:
        report = warm(root, only_missing=True, weights=needs_weights, progress=sys.stderr.isatty())
    except LocalModelMissing as missing:
        # No hub has it; what a hub has was fetched. The tests that load it fail with this
        # same message, and tests that never touch it still run.
        print(f"mlcheck: warning: {missing}", file=sys.stderr)
        return
    if not report.nothing_to_do:
        mb = report.downloaded_bytes / 1e6
        print(
            f"mlcheck: fetched {plural(len(report.downloaded), 'locked file')}, {mb:.1f} MB, "
            f"in {duration_text(report.seconds)}",
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
        for var in (constants.ENV_OMP_NUM_THREADS, constants.ENV_MKL_NUM_THREADS):
            env.setdefault(var, threads)
    return env


def _exit_code(
    pytest_code: int,
    results_dir: Path,
    *,
    fail_on_empty: bool = False,
    verified: tuple[str, ...] = (),
) -> int:
    from dataclasses import replace

    from ..results.junit import reconcile
    from ..results.schema import Outcome, read, write

    if pytest_code == 5:
        deselected = (
            read(results_dir).run.deselected if (results_dir / RESULTS_FILE).exists() else 0
        )
        if deselected:
            raise NoTestsCollected(
                f"{deselected:,} collected, all deselected (-k, -m or --deselect): no test ran"
            )
        raise NoTestsCollected("no tests collected: check the paths and pytest's testpaths")
    if pytest_code in (2, 3, 4):
        names = {2: "interrupted", 3: "an internal error", 4: "a usage error"}
        raise EnvironmentProblem(f"pytest stopped with {names[pytest_code]} (exit {pytest_code})")
    results = read(results_dir)
    reconcile(results, results_dir / JUNIT_FILE)  # one test, one outcome: as results.json says
    if verified:
        results = replace(results, run=replace(results.run, verified=verified))
        write(results, results_dir)
    _write_reports(results, results_dir)
    code = max(results.exit_code(), 1 if pytest_code == 1 else 0)
    if fail_on_empty and all(t.outcome is Outcome.NOT_RUN for t in results.tests):
        from ..report import empty_selection

        print(f"mlcheck: {empty_selection(results)} (--fail-on-empty)", file=sys.stderr)
        return max(code, 2)
    return code


def _write_reports(results: RunResults, results_dir: Path) -> None:
    """report.md, summary.md, durations (for --shard next time), and the terminal summary."""
    from ..publish.outputs import context_from_env, write_outputs
    from ..results import shard
    from ..results.merge import merge_sections

    shard.write_durations(shard.durations([results]), results_dir / shard.DURATIONS_FILE)
    sections = merge_sections([results])
    write_outputs(
        sections,
        results,
        results_dir,
        context_from_env(os.environ).with_base({}, sections),
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
    from ..results.shard import pytest_args

    selection = pytest_args(shard[0], shard[1], paths, durations)
    return [f"--mlcheck-shard={shard[0]}/{shard[1]}", *selection]
