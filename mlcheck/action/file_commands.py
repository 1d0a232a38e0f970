"""The job's file commands (``GITHUB_ENV``, ``GITHUB_PATH``, ``GITHUB_OUTPUT``,
``GITHUB_STATE``, ``GITHUB_STEP_SUMMARY``): remembered before the project under test runs and
put back once it is dead, with mlcheck's own lines appended (:class:`FileCommands`), so the
project cannot set environment variables, ``PATH`` entries or outputs for later steps.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import constants as C

# The runner's file commands: files a step appends to, read by the runner after the step. Only
# this module reads them (constants.py has the two mlcheck writes through github/workflow.py).
FILE_COMMANDS = (
    "GITHUB_ENV",
    "GITHUB_PATH",
    C.ENV_GITHUB_OUTPUT,
    "GITHUB_STATE",
    C.ENV_GITHUB_STEP_SUMMARY,
)
# GitHub caps a step's summary at 1 MiB and reads outputs into memory; anything bigger than
# this was not written by the runner and is not kept.
FILE_COMMAND_MAX_BYTES = 16 << 20


@dataclass
class _Remembered:
    name: str  # the variable, e.g. GITHUB_ENV
    dir_fd: int  # the file's folder, opened before the project ran
    base: str  # the file's name in that folder
    content: bytes | None  # None: there was no such file
    mode: int
    owner: tuple[int, int]


@dataclass
class FileCommands:
    """The job's file commands as they were before the project ran (:meth:`remember`), put back
    once it is dead with mlcheck's own lines appended (:meth:`restore`).

    The files and their folder belong to the runner's user, which on GitHub's runners is the
    project's uid too: it could append ``LD_PRELOAD=...`` to ``GITHUB_ENV``, a folder to
    ``GITHUB_PATH`` or a forged output, or swap a file for a link. Restoring works on the
    folder's handle, opened before the project ran, and replaces whatever the name now is
    with a new regular file: no link is followed.
    """

    remembered: list[_Remembered] = field(default_factory=list)

    @classmethod
    def remember(cls, environ: Mapping[str, str]) -> FileCommands:
        out = cls()
        for name in FILE_COMMANDS:
            path = environ.get(name)
            if not path:
                continue
            folder, base = os.path.split(os.path.abspath(path))
            try:
                dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue  # no folder: the runner does not use this one
            content, mode, owner = _read_regular(dir_fd, base)
            out.remembered.append(_Remembered(name, dir_fd, base, content, mode, owner))
        return out

    def restore(self, appends: Mapping[str, bytes] | None = None) -> None:
        """Put every file back as it was, then append ``appends[name]``.

        Raises :class:`~mlcheck.errors.EnvironmentProblem` naming the files it could not put
        back (after trying every one): then the step must not look green.
        """
        appends = appends or {}
        failed = []
        for r in self.remembered:
            content = (r.content or b"") + appends.get(r.name, b"")
            try:
                _replace(r, content)
            except OSError as exc:
                failed.append(f"{r.name} ({exc.strerror or exc})")
        if failed:
            from ..errors import EnvironmentProblem

            raise EnvironmentProblem(
                "could not put back the job's file commands after the project under test ran: "
                + ", ".join(failed)
            )

    def close(self) -> None:
        for r in self.remembered:
            os.close(r.dir_fd)
        self.remembered.clear()


def _replace(r: _Remembered, content: bytes) -> None:
    """Make ``r``'s name a regular file holding ``content``, never writing through a link."""
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        _remove(r.dir_fd, r.base)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EPERM, errno.EACCES):
            raise
        # a file mounted on its own (some runners) cannot be removed: rewrite it in place,
        # if it is still a regular file
        fd = os.open(r.base, flags, dir_fd=r.dir_fd)
        with os.fdopen(fd, "wb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise OSError(errno.EINVAL, "not a regular file") from exc
            fh.truncate(0)
            fh.write(content)
        return
    if r.content is None and not content:
        return
    fd = os.open(r.base, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=r.dir_fd)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
        os.fchmod(fh.fileno(), r.mode)
        if os.geteuid() == 0:
            os.fchown(fh.fileno(), *r.owner)


def _read_regular(dir_fd: int, base: str) -> tuple[bytes | None, int, tuple[int, int]]:
    """A regular file's content, mode and owner, read without following a link or blocking
    on a FIFO; ``None`` content when there is none."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        st = os.stat(dir_fd)
        return None, 0o644, (st.st_uid, st.st_gid)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > FILE_COMMAND_MAX_BYTES:
            return None, 0o644, (st.st_uid, st.st_gid)
        return fh.read(FILE_COMMAND_MAX_BYTES), stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)


def _remove(dir_fd: int, base: str) -> None:
    """Remove ``base`` from the folder, whatever it is now (file, link, FIFO, folder)."""
    try:
        os.unlink(base, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except (IsADirectoryError, PermissionError) as exc:
        if not stat.S_ISDIR(os.stat(base, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise exc
        shutil.rmtree(base, dir_fd=dir_fd)  # fd-based: never follows a link inside
