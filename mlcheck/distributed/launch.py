"""Running a function as N ranks of a process group (SPEC §14), for distributed tests
(:mod:`mlcheck.plugin.distributed`) and checks that launch their own ranks
(:mod:`mlcheck.checks.distributed`). No pytest here.

- Ports: this process hosts the group's ``TCPStore`` on a port the OS picks (port 0) and holds
  it while the ranks run, so two xdist workers never collide and no port is guessed.
- Ranks are fresh interpreters (``subprocess``, not fork: torch's threads do not survive a
  fork) with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set,
  torch's threads divided between them, and they end with this process whatever kills it
  (see :mod:`mlcheck.distributed.rank`). :func:`run_ranks` never returns with one running.
- A hang ends at the timeout with every live rank's Python stack (faulthandler on SIGUSR1);
  ranks still running :data:`GRACE_AFTER_FAILURE_S` after a peer failed (waiting in a
  collective the failed rank will never reach) are stopped the same way.
- :func:`verdict_text`: one verdict for all ranks. The first rank to fail decides the message
  (``rank 1 of 2: AssertionError: ...``: a peer's later error is usually its echo), and every
  failing rank's traceback follows.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import constants
from ..errors import UsageError
from ..text import duration_text

DEFAULT_TIMEOUT_S = 120.0
TIMEOUT_KEY = "distributed_timeout"  # in [tool.mlcheck]
# Peers of a failed rank usually fail fast (gloo sees the closed connection); one waiting on a
# collective the failed rank never reached is stopped after this, with its stack.
GRACE_AFTER_FAILURE_S = 10.0
# Starting the ranks (an interpreter and torch each) takes seconds, minutes on a busy runner:
# the test's timeout starts when every rank has joined the group and imported the test; getting
# there gets at least this.
JOIN_TIMEOUT_S = 120.0
STACKS_WAIT_S = 2.0  # for faulthandler to write the stacks of a hung rank
OUTPUT_TAIL_CHARS = 4000
MASTER_ADDR = "127.0.0.1"

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "xpu": "xccl"}  # device type -> torch backend


@dataclass(frozen=True)
class RankResult:
    rank: int
    world_size: int
    # passed, failed, skipped, crashed (died without a verdict), timeout, stopped (after a
    # peer failed)
    outcome: str
    message: str = ""
    traceback: str = ""
    kind: str = "code"
    duration: float = 0.0
    ended_at: float = 0.0
    stacks: str = ""
    output: str = ""
    value: Any = None  # what the function returned on this rank (when it pickles)

    @property
    def name(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "crashed")


@dataclass(frozen=True)
class Spec:
    """What a ``distributed`` marker asks for."""

    world_size: int
    timeout: float | None = None  # None: the project's distributed_timeout

    @classmethod
    def of(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Spec:
        """From the marker's arguments; a usage error says how to write it."""
        unknown = set(kwargs) - {"world_size", "timeout"}
        world_size = kwargs.get("world_size", args[0] if args else None)
        if unknown or len(args) > 1 or world_size is None:
            raise UsageError(
                "write @pytest.mark.distributed(world_size=N) (optionally timeout=SECONDS), "
                f"got args {tuple(args)!r} kwargs {kwargs!r}"
            )
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise UsageError(
                f"distributed(world_size=...) must be an integer >= 1, got {world_size!r}"
            )
        timeout = kwargs.get("timeout")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise UsageError(f"distributed(timeout=...) must be seconds > 0, got {timeout!r}")
        return cls(world_size, None if timeout is None else float(timeout))


# ---------------------------------------------------------------------------------------------
# running the ranks (no pytest below this line)


def run_ranks(job: dict[str, Any], timeout: float) -> list[RankResult]:
    """Start ``job["world_size"]`` ranks, wait for their verdicts; never leaves one running.

    ``job``: ``module``, ``file``, ``qualname`` (the function each rank imports and calls),
    ``kwargs`` (sent by value; ``dist`` is made in the rank), ``sys_path``, ``world_size``,
    ``backend``, ``device_type``, ``timeout``, ``seed``, ``threads`` (per rank; see
    :func:`threads_per_rank`).
    """
    from datetime import timedelta

    import torch.distributed as tdist

    world_size = int(job["world_size"])
    # The store of the group, on a port the OS picks, held by this process for the test.
    store = tdist.TCPStore(
        MASTER_ADDR, 0, None, True, timedelta(seconds=timeout), wait_for_workers=False
    )
    workdir = Path(tempfile.mkdtemp(prefix="mlcheck-dist-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # the arguments may name functions of the test's modules: a rank unpickles them once
        # it has the test process's sys.path
        sent = {**job, "kwargs": pickle.dumps(job["kwargs"]), "master": (MASTER_ADDR, store.port)}
        with (workdir / "job.pkl").open("wb") as handle:
            pickle.dump(sent, handle)
        package_root = str(Path(__file__).resolve().parent.parent)
        for rank in range(world_size):
            # the rank sets RANK, MASTER_PORT... and its thread count itself, before torch
            code = (
                f"import sys; sys.path.insert(0, {package_root!r}); "
                "from mlcheck.distributed.rank import main; from pathlib import Path; "
                f"main(Path({str(workdir)!r}), {rank})"
            )
            with (workdir / f"rank{rank}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT
                    )
                )
        return _wait(procs, workdir, timeout)
    finally:
        for proc in procs:
            _kill(proc)
        del store
        shutil.rmtree(workdir, ignore_errors=True)


def threads_per_rank(world_size: int) -> int:
    """Each rank's share of the threads torch would use in this process."""
    torch = sys.modules.get("torch")
    if torch is not None:
        total = int(torch.get_num_threads())
    else:
        env = constants.get(constants.ENV_OMP_NUM_THREADS) or ""
        total = int(env) if env.isdigit() and int(env) > 0 else os.cpu_count() or 1
    return max(1, total // world_size)


def _wait(procs: list[subprocess.Popen[bytes]], workdir: Path, timeout: float) -> list[RankResult]:
    """Until every rank ends: :data:`JOIN_TIMEOUT_S` (or ``timeout`` if longer) for the ranks to
    start, join the group and import the test, then ``timeout`` for the test body."""
    started = time.monotonic()
    deadline = started + max(timeout, JOIN_TIMEOUT_S)
    joined = False
    joined_at: float | None = None
    failed_at: float | None = None
    while True:
        if all(p.poll() is not None for p in procs):
            break
        now = time.monotonic()
        if not joined and all((workdir / f"rank{r}.ready").exists() for r in range(len(procs))):
            joined, joined_at, deadline = True, now, now + timeout
        if failed_at is None and any(_ended_badly(p, workdir, r) for r, p in enumerate(procs)):
            failed_at = now
        if now >= deadline:
            break
        if failed_at is not None and now >= min(deadline, failed_at + GRACE_AFTER_FAILURE_S):
            break
        time.sleep(0.05)
    timed_out = failed_at is None and any(p.poll() is None for p in procs)
    stacks = _dump_stacks(procs, workdir)
    # how long the test body ran (or the ranks tried to join, when they never all did)
    waited = time.monotonic() - (joined_at if joined_at is not None else started)
    where = "in the test" if joined else "before the test started (start-up, joining the group)"
    return [
        _result(rank, procs, workdir, stacks.get(rank, ""), timed_out, waited, where)
        for rank in range(len(procs))
    ]


def _ended_badly(proc: subprocess.Popen[bytes], workdir: Path, rank: int) -> bool:
    if proc.poll() is None:
        return False
    verdict = _read_verdict(workdir, rank)
    return verdict is None or verdict.get("outcome") == "failed"


def _read_verdict(workdir: Path, rank: int) -> dict[str, Any] | None:
    try:
        data = json.loads((workdir / f"rank{rank}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _dump_stacks(procs: list[subprocess.Popen[bytes]], workdir: Path) -> dict[int, str]:
    """Every live rank's Python stacks (faulthandler, on SIGUSR1), then the ranks are killed."""
    alive = {rank: p for rank, p in enumerate(procs) if p.poll() is None}
    if not alive or not hasattr(signal, "SIGUSR1"):
        return {}
    for proc in alive.values():
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGUSR1)
    files = {rank: workdir / f"rank{rank}.stacks" for rank in alive}
    deadline = time.monotonic() + STACKS_WAIT_S
    sizes: dict[int, int] = {}
    while time.monotonic() < deadline:  # until every file has stopped growing
        time.sleep(0.1)
        now = {rank: _size(path) for rank, path in files.items()}
        if now == sizes and all(now.values()):
            break
        sizes = now
    for proc in alive.values():
        _kill(proc)
    return {rank: _read(path) for rank, path in files.items()}


def _result(
    rank: int,
    procs: list[subprocess.Popen[bytes]],
    workdir: Path,
    stacks: str,
    timed_out: bool,
    waited: float,
    where: str,
) -> RankResult:
    output = _tail(_read(workdir / f"rank{rank}.log"))
    verdict = _read_verdict(workdir, rank)
    n = len(procs)
    if verdict is not None:
        return RankResult(
            rank=rank,
            world_size=n,
            outcome=str(verdict.get("outcome", "failed")),
            message=str(verdict.get("message", "")),
            traceback=str(verdict.get("traceback", "")),
            kind=str(verdict.get("kind", "code")),
            duration=float(verdict.get("duration", 0.0)),
            ended_at=float(verdict.get("ended_at", 0.0)),
            output=output,
            value=_read_value(workdir, rank),
        )
    if stacks:  # still running when we stopped it
        outcome = "timeout" if timed_out else "stopped"
        why = (
            f"still running {where} after {duration_text(waited)}"
            if timed_out
            else "still running after a peer failed"
        )
        return RankResult(
            rank, n, outcome, why, stacks=stacks, kind="timeout", duration=waited, output=output
        )
    code = procs[rank].returncode
    died = (
        f"died ({_signal_name(-code)})"
        if code is not None and code < 0
        else f"exited with status {code}"
    )
    crash_stacks = _read(workdir / f"rank{rank}.stacks")
    return RankResult(
        rank,
        n,
        "crashed",
        f"{died} before reporting a verdict",
        traceback=crash_stacks,
        kind="crash",
        duration=waited,
        ended_at=time.time(),
        stacks=crash_stacks,
        output=output,
    )


def _read_value(workdir: Path, rank: int) -> Any:
    path = workdir / f"rank{rank}.value.pkl"
    if not path.exists():
        return None
    with path.open("rb") as handle:
        return pickle.load(handle)  # written by our own rank process for this call


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL_CHARS else "..." + text[-OUTPUT_TAIL_CHARS:]


# ---------------------------------------------------------------------------------------------
# the verdict


def verdict_text(results: list[RankResult], timeout: float) -> tuple[str, str] | None:
    """``(failure kind, message)`` for the test, or None when every rank passed or skipped.

    The first line names the rank that decides: the first to fail (a peer's later error is
    usually the echo of it), else the first still running at the timeout.
    """
    failing = sorted((r for r in results if r.failed), key=lambda r: r.ended_at)
    hung = [r for r in results if r.outcome == "timeout"]
    stopped = [r for r in results if r.outcome == "stopped"]
    if not failing and not hung:
        return None
    lines: list[str] = []
    shown = failing[:1]  # the tracebacks to show: one per distinct failure
    if failing:
        kind = failing[0].kind
        lines.append(f"{failing[0].name}: {_first_line(failing[0].message)}")
        for r in failing[1:]:
            if r.message == failing[0].message:
                lines.append(f"{r.name}: the same failure")
            else:
                lines.append(f"{r.name}: {_first_line(r.message)}")
                shown.append(r)
    else:
        kind = "timeout"
        names = ", ".join(r.name for r in hung)
        lines.append(
            f"timeout: the distributed test did not finish within {duration_text(timeout)} "
            f"({TIMEOUT_KEY}); {names}: {hung[0].message}"
        )
    passed = [r.name for r in results if r.outcome == "passed"]
    if passed:
        lines.append(f"passed: {', '.join(passed)}")
    if stopped:
        names = ", ".join(r.name for r in stopped)
        lines.append(
            f"stopped {duration_text(GRACE_AFTER_FAILURE_S)} after the failure: {names} "
            "(waiting for a rank that failed? their stacks follow)"
        )
    for r in shown:
        lines += ["", f"---- {r.name}: {r.outcome} ----", r.traceback.rstrip() or r.message]
    for r in hung + stopped:
        lines += ["", f"---- {r.name}: Python stack when stopped ----", r.stacks.rstrip()]
    return kind, "\n".join(lines)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
