"""Ending the project's turn: every process of the sandbox's uid killed, wherever it moved
(:func:`kill_user`), read from ``/proc`` (:func:`processes_of`). Used by
:mod:`mlcheck.action.sandbox`; nothing trusted runs until it returns.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

KILL_TIMEOUT_S = 30.0  # kill(-1) rounds until /proc shows no process of the uid


def processes_of(uid: int) -> list[int]:
    """Live processes (not zombies) with ``uid`` as their real, effective, saved or file uid.

    Read from ``/proc`` by hand: ``psutil`` is not a dependency, and the fields needed are
    two lines of ``status``.
    """
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as fh:
                status = fh.read(1 << 16).decode("ascii", "replace")
        except OSError:
            continue  # gone meanwhile
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        state = fields.get("State", "").split()
        uids = fields.get("Uid", "").split()
        if state and state[0] in ("Z", "X"):
            continue  # a zombie runs no code; its parent reaps it
        if str(uid) in uids:
            found.append(int(name))
    return found


def describe(pids: list[int]) -> str:
    out = []
    for pid in pids[:3]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()[:60].replace(b"\0", b" ")
        except OSError:
            cmd = b"?"
        out.append(f"pid {pid}: {cmd.decode(errors='replace').strip()}")
    return "; ".join(out) + (f" and {len(pids) - 3} more" if len(pids) > 3 else "")


def kill_user(uid: int, gid: int, timeout: float = KILL_TIMEOUT_S) -> None:
    """Kill every process of ``uid``, wherever it moved (``setsid``, another process group).

    A child becomes ``uid`` and sends ``kill(-1, SIGKILL)``, which reaches every process that
    uid may signal (its own, whatever their session) but itself; repeated until ``/proc``
    lists none, so processes forked during a round die in the next. Raises
    :class:`~mlcheck.errors.EnvironmentProblem` if some survive ``timeout`` seconds: then
    nothing trusted may run.
    """
    if uid == 0 or os.geteuid() != 0:
        return
    deadline = time.monotonic() + timeout
    while running := processes_of(uid):
        if time.monotonic() > deadline:
            from ..errors import EnvironmentProblem

            raise EnvironmentProblem(
                f"processes of uid {uid} survive SIGKILL ({describe(running)}): stopping "
                "before anything trusted runs"
            )
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only makes system calls, then exits
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        _reap_children()
        time.sleep(0.005)  # SIGKILLed processes need a moment to leave /proc's live list


def _reap_children() -> None:
    """Reap our own children that died (orphans of the project reparented to us)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
