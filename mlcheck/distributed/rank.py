"""One rank of a distributed test: ``python -m mlcheck.distributed.rank WORKDIR RANK``.

Started by :mod:`mlcheck.distributed.launch` (never forked: a fresh interpreter per rank, as torch
wants). It reads the job from ``WORKDIR/job.pkl``, joins the default process group through the
store the pytest process holds (``MASTER_ADDR``/``MASTER_PORT``), imports the test function by
module and qualified name, calls it with the ``dist`` fixture and the values the pytest process
sent, and writes what happened to ``WORKDIR/rank<R>.json``. Its stacks go to
``WORKDIR/rank<R>.stacks`` when the pytest process asks (SIGUSR1) or when it crashes.

The ``dist`` fixture's object, :class:`Dist`, lives here because it only exists in a rank.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import importlib.util
import json
import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .. import constants

# What the rank reports: one of these outcomes.
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class Dist:
    """The ``dist`` fixture inside a distributed test: this rank and its process group.

    >>> def test_sum(dist):  # doctest: +SKIP
    ...     assert dist.all_gather_object(dist.rank) == list(range(dist.world_size))
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str  # "gloo" on CPU, "nccl" on CUDA, ...
    device: Any  # torch.device: cpu, or this rank's accelerator (cuda:<local_rank>)

    def barrier(self) -> None:
        """Wait until every rank reaches this point."""
        import torch.distributed as tdist

        if self.backend == "nccl":
            tdist.barrier(device_ids=[self.local_rank])
        else:
            tdist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order (any picklable value)."""
        import torch.distributed as tdist

        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out


def main(workdir: Path, rank: int) -> None:
    """Run the job in ``workdir`` as ``rank``; always writes a verdict, then exits."""
    _die_with_parent()
    stacks = (workdir / f"rank{rank}.stacks").open("w")
    # Crashes (segfault, abort) and the parent's SIGUSR1 on a hang write every thread's stack.
    faulthandler.enable(file=stacks, all_threads=True)
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    with (workdir / "job.pkl").open("rb") as handle:
        job = pickle.load(handle)
    started = time.time()
    result: dict[str, Any]
    try:
        result = _run(job, rank, workdir)
    except BaseException as exc:  # everything a rank does is reported
        result = _failure(exc, job)
    result["duration"] = round(time.time() - started, 3)
    result["ended_at"] = time.time()
    tmp = workdir / f"rank{rank}.json.tmp"
    tmp.write_text(json.dumps(result))
    tmp.replace(workdir / f"rank{rank}.json")
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter teardown: a peer's dead socket or a library's atexit hook must not turn a
    # verdict already written into a hang.
    os._exit(0)


def _run(job: dict[str, Any], rank: int, workdir: Path) -> dict[str, Any]:
    sys.path[:] = job["sys_path"]
    threads = job["threads"]
    world_size, backend = job["world_size"], job["backend"]
    local_rank = rank
    host, port = job["master"]
    # as torchrun sets them, for code that reads them; the thread counts before torch loads
    for name, value in (
        (constants.ENV_RANK, rank),
        (constants.ENV_LOCAL_RANK, local_rank),
        (constants.ENV_WORLD_SIZE, world_size),
        (constants.ENV_LOCAL_WORLD_SIZE, world_size),
        (constants.ENV_MASTER_ADDR, host),
        (constants.ENV_MASTER_PORT, port),
        (constants.ENV_OMP_NUM_THREADS, threads),
        (constants.ENV_MKL_NUM_THREADS, threads),
    ):
        os.environ[name] = str(value)
    import torch
    import torch.distributed as tdist

    torch.set_num_threads(threads)
    if job["device_type"] == "cpu":
        device = torch.device("cpu")
    else:
        device = torch.device(job["device_type"], local_rank)
        getattr(torch, job["device_type"]).set_device(device)
    from datetime import timedelta

    # Longer than the pytest process's own deadline, which ends a hang first with every
    # rank's stack; this only backs it up if that process is gone.
    timeout = timedelta(seconds=2 * job["timeout"] + 60)
    store = tdist.TCPStore(host, port, world_size, False, timeout)
    init: dict[str, Any] = {"device_id": device} if device.type != "cpu" else {}
    tdist.init_process_group(
        backend, store=store, rank=rank, world_size=world_size, timeout=timeout, **init
    )
    passed = False
    try:
        function = _import_test(job)
        dist = Dist(rank, world_size, local_rank, backend, device)
        sent = pickle.loads(job["kwargs"])
        kwargs = {name: dist if name == "dist" else value for name, value in sent.items()}
        _seed(job["seed"])
        # the test's timeout starts when every rank is here (started, joined, test imported)
        (workdir / f"rank{rank}.ready").touch()
        try:
            value = function(**kwargs)
        except BaseException as exc:  # the test's failure, whatever it is
            return _failure(exc, job)
        if value is not None:  # a check that launched its ranks reads what each returned
            with (workdir / f"rank{rank}.value.pkl").open("wb") as handle:
                pickle.dump(value, handle)
        passed = True
        return {"outcome": PASSED}
    finally:
        # Only after a pass: a failed rank's peers may sit in a collective, and tearing the
        # group down could wait for them; the process exits right after anyway.
        if passed:
            tdist.destroy_process_group()


def _import_test(job: dict[str, Any]) -> Any:
    name, file = job["module"], job["file"]
    try:
        module = importlib.import_module(name)
    except ImportError:
        # pytest's importlib mode: the module is not on sys.path under its name
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    owner: Any = module
    parts = job["qualname"].split(".")
    for part in parts[:-1]:  # a test class: an instance, as pytest makes one per test
        owner = getattr(owner, part)()
    return getattr(owner, parts[-1])


def _seed(seed: int) -> None:
    """Every rank starts from the run's seed, as the pytest process seeds a test."""
    random.seed(seed)
    if (np := sys.modules.get("numpy")) is not None:
        np.random.seed(seed)
    import torch

    torch.manual_seed(seed)


def _failure(exc: BaseException, job: dict[str, Any]) -> dict[str, Any]:
    from ..results.failure_kinds import classify_exception

    skip = _skip_exception_types()
    if isinstance(exc, skip):
        return {"outcome": SKIPPED, "message": str(getattr(exc, "msg", exc))}
    frames = _from_test(exc.__traceback__, job.get("file"))
    text = "".join(traceback.format_exception(type(exc), exc, frames))
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, AssertionError) and type(exc).__module__ == "builtins":
        message = f"AssertionError: {exc}" if str(exc) else "AssertionError"
    return {
        "outcome": FAILED,
        "message": message,
        "traceback": text,
        "kind": classify_exception(exc).value,
    }


def _skip_exception_types() -> tuple[type[BaseException], ...]:
    pytest = sys.modules.get("pytest")
    if pytest is None:
        return ()
    return (pytest.skip.Exception,)


def _from_test(tb: TracebackType | None, test_file: str | None) -> TracebackType | None:
    """The traceback from the test's own frame on (this module's frames are noise)."""
    current = tb
    while current is not None:
        if current.tb_frame.f_code.co_filename == test_file:
            return current
        current = current.tb_next
    return tb


def _die_with_parent() -> None:
    """End this rank when the pytest process dies, whatever kills it (SIGKILL included)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL) == 0:  # PR_SET_PDEATHSIG
                if os.getppid() != parent:  # orphaned before prctl took effect
                    os._exit(1)
                return

    def watch() -> None:  # elsewhere (macOS): poll the parent
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="mlcheck-parent-watch").start()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
