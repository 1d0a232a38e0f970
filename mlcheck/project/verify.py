"""The cached bytes are the locked bytes: hashing against ``mlcheck.lock``, once per run.

:func:`check_files` compares a snapshot's files with their lock entries (sizes only, or sizes
and hashes in parallel); :func:`raise_first` turns the first problem into
:class:`CacheCorrupted`, which names the file and the fix. :func:`mlcheck.project.cache.locate`
hashes a model's weights before anything loads them, unless this process or ``mlcheck run``
(see below) already did; ``cache verify`` (:func:`mlcheck.project.cache.verify`) reports every
problem as a :class:`VerifyReport`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import constants
from ..errors import CacheCorrupted, cache_add_command, hide_frame
from .lock import LockedFile, LockedModel, file_problem


@dataclass(frozen=True)
class FileProblem:
    """One cached file that is not what the lock pins."""

    model_id: str
    path: str
    problem: str  # "missing", or what differs from the lock


@dataclass(frozen=True)
class VerifyReport:
    """What ``cache verify`` (or ``mlcheck run``'s hashing before the tests) checked.

    >>> VerifyReport(checked_files=2, checked_bytes=4_000_000, seconds=2.0).mb_per_s
    2.0
    """

    checked_files: int
    checked_bytes: int
    seconds: float
    problems: tuple[FileProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def mb_per_s(self) -> float:
        return self.checked_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


# --- once per run ----------------------------------------------------------------------------
# `mlcheck run` hashes the manifest's weights models once, in parallel, before pytest starts,
# and lists them in a stamp file outside the workspace (a temp dir; PR code can write the
# workspace), named by $MLCHECK_VERIFIED_STAMP; the test process and its xdist workers read it
# instead of hashing again. Plain pytest, and models met only at collection, hash on first load.

_verified: set[str] = set()  # this process's


def stamp_key(entry: LockedModel, cache: Path) -> str:
    """What the stamp file lists for a verified model: id, commit and cache folder."""
    return f"{entry.model_id}@{entry.commit}@{cache.resolve()}"


def already_verified(entry: LockedModel, cache: Path) -> bool:
    """Whether this process, or `mlcheck run` before it (the stamp file), hashed the entry."""
    key = stamp_key(entry, cache)
    if key in _verified:
        return True
    stamp = constants.verified_stamp()
    if stamp:
        try:
            lines = Path(stamp).read_text(encoding="utf-8").splitlines()
        except OSError:
            return False
        if key in lines:
            _verified.add(key)
            return True
    return False


def mark_verified(entry: LockedModel, cache: Path) -> str:
    """Record that this process hashed the entry; returns its stamp key."""
    key = stamp_key(entry, cache)
    _verified.add(key)
    return key


def raise_first(entry: LockedModel, problems: list[tuple[str, str]]) -> None:
    """A corrupted cached file is an error naming it and the fix."""
    __tracebackhide__ = hide_frame
    if problems:
        path, problem = problems[0]
        # no hub has a `cache add` model: only adding its folder again repairs it
        local = entry.source == "local"
        raise CacheCorrupted(
            entry.model_id,
            entry.revision,
            f"{path} at locked commit {entry.commit[:12]} has {problem}; "
            + (
                "it was added with `mlcheck cache add`"
                if local
                else "`mlcheck cache warm` repairs it"
            ),
            fix=(
                f"run `{cache_add_command(entry.model_id, entry.revision)}` with FOLDER holding "
                "its files"
                if local
                else ""
            ),
        )


def check_files(
    snapshot: Path, files: Sequence[LockedFile], *, full: bool
) -> list[tuple[str, str]]:
    """(path, problem) of the files that differ from the lock, hashed in parallel when full
    (hashlib releases the GIL, so threads use several cores)."""
    if not full:
        checks = [(f.path, file_problem(snapshot / f.path, f, full=False)) for f in files]
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            found = pool.map(lambda f: (f.path, file_problem(snapshot / f.path, f)), files)
            checks = list(found)
    return [(path, problem) for path, problem in checks if problem is not None]
