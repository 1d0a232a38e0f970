"""Reading files that untrusted code could have written, without trusting their paths.

The action's trusted side (root in the container) reads a few files in folders that PR code
controls: the results it wrote, the ``.git`` of a checkout. A path there can be a symbolic link
to a file only root may read, a FIFO that blocks the reader forever, or a device that never
ends. :func:`read_beneath` walks from a trusted folder one component at a time on directory
handles (``openat`` with ``O_NOFOLLOW``: no link is followed at any step), opens the file
without blocking, and checks what it opened (``fstat``: a regular file, at most ``max_bytes``)
before reading: what is checked is what is read, so a swap after the check changes nothing.

The standard library has the pieces (``os.open`` with ``dir_fd``) but no function that chains
them; this is that function, kept small.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from ..errors import NotPlainFile, TooLarge

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

__all__ = ["NotPlainFile", "TooLarge", "describe_mode", "read_beneath"]


def describe_mode(mode: int) -> str:
    """What a file of ``mode`` is, in words (for refusals)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def read_beneath(root: Path, relative: str, max_bytes: int, *, follow_root: bool = True) -> bytes:
    """The bytes of ``root/relative``, following no link below ``root``.

    ``root`` itself is trusted (opened as given; with ``follow_root=False`` it must not be a
    link either); every component of ``relative`` must be a real folder and the last a
    regular file of at most ``max_bytes``. Raises
    :class:`FileNotFoundError` when something is missing and :class:`NotPlainFile` (saying
    what was found) for links, FIFOs, devices and files over the cap.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "a").mkdir(); _ = (d / "a" / "f").write_text("hi")
    >>> read_beneath(d, "a/f", 10)
    b'hi'
    """
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("..", "/") for p in parts):
        raise ValueError(f"{relative!r}: a relative path without `..`")
    try:
        fd = os.open(root, _DIR if not follow_root else _DIR & ~os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(root):
            raise NotPlainFile(f"{root} is a symbolic link; it was not followed") from None
        raise
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            opened = _step(fd, part, _FILE if last else _DIR, root.joinpath(*parts[: i + 1]))
            os.close(fd)
            fd = opened
        st = os.fstat(fd)
        where = root / relative
        if not stat.S_ISREG(st.st_mode):
            raise NotPlainFile(f"{where} is {describe_mode(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise TooLarge(
                f"{where} is {st.st_size:,} bytes, over the {max_bytes:,} limit", st.st_size
            )
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew while read
            raise TooLarge(f"{where} is over the {max_bytes:,} bytes limit", len(data))
        return data
    finally:
        os.close(fd)


def _step(fd: int, name: str, flags: int, where: Path) -> int:
    """Open ``name`` in the folder ``fd``; a link is refused, by name."""
    try:
        return os.open(name, flags, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            except OSError:
                mode = 0
            if stat.S_ISLNK(mode) or exc.errno == errno.ELOOP:
                raise NotPlainFile(f"{where} is a symbolic link; it was not followed") from None
            raise NotPlainFile(f"{where} is {describe_mode(mode)}, not a folder") from None
        raise
