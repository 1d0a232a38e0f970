"""Runs a suite under `mlcheck run` without and with each mutant, and classifies each mutant.

Every run is a separate ``python -m mlcheck run`` (offline, results salvaged if it dies) into
its own folder under a scratch directory; nothing is written into the project (no
``.pytest_cache``, no ``__pycache__``). The unmutated run goes first and must pass. Mutant runs
are single pytest processes, ``-n`` of them at a time (torch threads divided between them),
each stopping at its first failing test (``-x``) unless all killers are wanted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from .. import constants
from ..errors import UnmutatedRunFailed
from ..results.schema import RESULTS_FILE, Outcome, RunResults, RunStatus, read
from .mutants import Mutant


class Status(StrEnum):
    KILLED = "killed"
    SURVIVED = "survived"
    NOT_REACHED = "not reached"  # its patch point never changed anything: not counted
    NOT_RUN = "not run"  # the --budget ran out before (or while) it ran
    ERROR = "error"  # the run itself broke (usage error, pytest internal error)


class Kill(StrEnum):
    FAILED = "failed"  # a test failed or errored
    CRASH = "crash"  # the test process died
    TIMEOUT = "timeout"  # the run took far longer than the unmutated one


@dataclass(frozen=True)
class SuiteRun:
    """One ``mlcheck run`` of the suite (unmutated, or with one mutant)."""

    code: int
    results: RunResults | None
    hits: dict[str, int]  # test node id -> times the mutant changed behaviour in it
    duration: float
    timed_out: bool
    log: Path


@dataclass(frozen=True)
class MutantResult:
    name: str
    status: Status
    kill: Kill | None = None
    killers: tuple[str, ...] = ()  # tests that passed unmutated and failed with the mutant
    message: str = ""  # the first killer's failure, or why it errored / did not run
    reached_by: tuple[str, ...] = ()  # tests in which the mutant changed behaviour
    hits: int = 0
    duration: float = 0.0
    tests_run: int = 0


@dataclass(frozen=True)
class Settings:
    paths: tuple[str, ...]
    tier: str | None = None
    workers: int | str | None = None
    all_killers: bool = False
    budget_s: float | None = None
    extra: tuple[str, ...] = ()  # pytest arguments after `--`
    env: dict[str, str] = field(default_factory=dict)  # the test process's environment
    mutant_timeout_s: float | None = None  # --mutant-timeout; default: see mutant_timeout()


# A mutant's run may take this many times the unmutated run's wall time (and at least
# MIN_TIMEOUT_S) before it is stopped and counted as killed by a timeout: a mutant that makes
# training loop forever is caught, a slow machine is not mistaken for one.
TIMEOUT_FACTOR = 10.0
MIN_TIMEOUT_S = 120.0
GRACE_S = 20.0  # after SIGTERM, `mlcheck run` writes what finished; then it is killed


def mutant_timeout(settings: Settings, unmutated_duration: float) -> float:
    """Seconds a mutant's run may take before it is stopped and counted as killed (timeout)."""
    if settings.mutant_timeout_s is not None:
        return settings.mutant_timeout_s
    return max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * unmutated_duration)


def parallelism(workers: int | str | None) -> int:
    if workers == "auto":
        return os.cpu_count() or 1
    return int(workers or 1)


def run_suite(
    settings: Settings,
    folder: Path,
    *,
    mutant: str | None = None,
    workers: int | str | None = None,
    stop_at_first: bool = False,
    timeout: float | None = None,
    threads: int | None = None,
) -> SuiteRun:
    """``mlcheck run`` of the selected tests into ``folder``, with ``mutant`` injected."""
    folder.mkdir(parents=True, exist_ok=True)
    hits_dir = folder / "hits"
    hits_dir.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlcheck", "run", *settings.paths, "--no-warm"]
    command += ["--results-dir", str(folder)]
    if settings.tier:
        command += ["--tier", settings.tier]
    if workers is not None:
        command += ["-n", str(workers)]
    # no .pytest_cache in the project; the plugin injects the mutant
    command += ["--", "-p", "no:cacheprovider", "-p", "mlcheck.power.activate", "-q"]
    if stop_at_first:
        command.append("-x")
    command += settings.extra
    env = {**settings.env, "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__
    env.pop(constants.ENV_MUTANT, None)
    if mutant is not None:
        env[constants.ENV_MUTANT] = mutant
        env[constants.ENV_MUTANT_HITS] = str(hits_dir)
    if threads is not None:
        env[constants.ENV_OMP_NUM_THREADS] = env[constants.ENV_MKL_NUM_THREADS] = str(threads)
    log = folder / "output.log"
    started = time.monotonic()
    timed_out = False
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)  # forwarded to pytest; results are salvaged
            try:
                code = proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
    results = read(folder) if (folder / RESULTS_FILE).exists() else None
    return SuiteRun(code, results, _read_hits(hits_dir), time.monotonic() - started, timed_out, log)


def _read_hits(folder: Path) -> dict[str, int]:
    total: Counter[str] = Counter()
    for path in sorted(folder.glob("hits-*.json")):
        with contextlib.suppress(OSError, ValueError):
            total.update(json.loads(path.read_text())["tests"])
    return dict(total)


def check_unmutated(run: SuiteRun) -> None:
    """Raise :class:`UnmutatedRunFailed` unless the unmutated run passed with tests in it."""
    tail = _tail(run.log)
    if run.results is None or run.code == 2:
        raise UnmutatedRunFailed(
            f"the unmutated run did not complete (mlcheck run exited {run.code}); "
            f"fix it first. Its output ends:\n{tail}"
        )
    ran = [t for t in run.results.tests if t.outcome is not Outcome.NOT_RUN]
    bad = [t for t in ran if t.outcome in (Outcome.FAILED, Outcome.ERROR)]
    if bad or run.code != 0:
        names = "\n".join(f"  {t.nodeid}: {t.message}" for t in bad[:10])
        raise UnmutatedRunFailed(
            f"the tests fail without any mutant ({len(bad)} failed or errored): mutation "
            f"testing needs a passing suite. Fix or deselect them first:\n{names or tail}"
        )
    if not any(t.outcome is Outcome.PASSED for t in ran):
        raise UnmutatedRunFailed("no test passed in the unmutated run: nothing to mutate")


def classify(name: str, unmutated: RunResults, run: SuiteRun, *, budget_cut: bool) -> MutantResult:
    """killed / survived / not reached (or not run, error) from a mutant's run."""
    passed_before = _passed(unmutated)
    base = MutantResult(
        name,
        Status.SURVIVED,
        reached_by=tuple(sorted(n for n in run.hits if n in passed_before)),
        hits=sum(run.hits.values()),
        duration=round(run.duration, 3),
    )
    if run.timed_out and budget_cut:
        return replace(base, status=Status.NOT_RUN, message="the --budget ran out")
    if run.timed_out and not base.hits:
        # the mutant never changed anything in this run, so it cannot be what made it slow
        return replace(
            base,
            status=Status.ERROR,
            message=f"stopped after {run.duration:.0f} s before the mutant was reached "
            "(the machine is slower than the timeout allows: raise --mutant-timeout)",
        )
    results = run.results
    if results is None:
        if base.hits:
            kill = Kill.TIMEOUT if run.timed_out else Kill.CRASH
            return replace(base, status=Status.KILLED, kill=kill, message=_tail(run.log, 3))
        return replace(base, status=Status.ERROR, message=_tail(run.log, 5))
    running = {r.nodeid for r in results.run.running}
    killers = tuple(
        t.nodeid
        for t in results.tests
        if t.nodeid in passed_before
        and (t.outcome in (Outcome.FAILED, Outcome.ERROR) or t.nodeid in running)
    )
    base = replace(
        base, tests_run=sum(1 for t in results.tests if t.outcome is not Outcome.NOT_RUN)
    )
    if run.timed_out:
        return replace(
            base,
            status=Status.KILLED,
            kill=Kill.TIMEOUT,
            killers=killers or tuple(sorted(running)),
            message=f"stopped after {run.duration:.0f} s (the unmutated run took "
            f"{unmutated.run.duration:.0f} s)",
        )
    if run.code == 2 and not killers:
        return replace(base, status=Status.ERROR, message=_tail(run.log, 5))
    if killers and base.hits:
        crashed = results.run.status is RunStatus.CRASHED or any(
            t.failure_kind == "crash" for t in results.tests if t.nodeid in killers
        )
        first = next(t for t in results.tests if t.nodeid == killers[0])
        kill = Kill.CRASH if crashed else Kill.FAILED
        return replace(
            base, status=Status.KILLED, kill=kill, killers=killers, message=first.message
        )
    if not base.hits:
        message = ""
        if killers:  # the mutant changed nothing, yet a test failed: that test is flaky
            message = f"{killers[0]} failed although the mutant was not reached (flaky?)"
        return replace(base, status=Status.NOT_REACHED, message=message)
    return base


def _passed(results: RunResults) -> set[str]:
    return {t.nodeid for t in results.tests if t.outcome is Outcome.PASSED}


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def run_mutants(
    settings: Settings,
    mutants: Sequence[Mutant],
    scratch: Path,
    unmutated: SuiteRun,
    *,
    deadline: float | None,
    on_done: Callable[[MutantResult], None] | None = None,
) -> list[MutantResult]:
    """Each mutant in its own run, ``settings.workers`` at a time; results in catalogue order."""
    assert unmutated.results is not None
    parallel = max(1, min(parallelism(settings.workers), len(mutants)))
    threads = max(1, (os.cpu_count() or 1) // parallel)
    timeout = mutant_timeout(settings, unmutated.duration)

    def one(mutant: Mutant) -> MutantResult:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            result = MutantResult(mutant.name, Status.NOT_RUN, message="the --budget ran out")
        else:
            limit = timeout if left is None else min(timeout, left)
            run = run_suite(
                settings,
                scratch / mutant.name,
                mutant=mutant.name,
                stop_at_first=not settings.all_killers,
                timeout=limit,
                threads=threads,
            )
            budget_cut = left is not None and left < timeout
            assert unmutated.results is not None
            result = classify(mutant.name, unmutated.results, run, budget_cut=budget_cut)
        if on_done is not None:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, mutants))
