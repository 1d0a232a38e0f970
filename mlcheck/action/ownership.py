"""Giving the workspace's files to the project's user for its turn (:func:`hand_over`) and
back to the workspace's owner afterwards (:func:`give_back`), on directory handles that never
follow a link (:func:`chown_tree`).
"""

from __future__ import annotations

import os
from pathlib import Path


def chown_tree(root: Path, uid: int, gid: int, only: frozenset[int] | None = None) -> int:
    """Give ``root`` and everything under it (owned by one of ``only``, or all) to ``uid``;
    a count.

    Directory handles all the way (``os.fwalk``, which checks that each folder it enters is
    the one it listed), names changed relative to their folder's handle without following a
    link: a folder swapped for a link while this runs is skipped, never followed, and a link
    is changed itself, never its target.
    """
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return 0
    changed = 0
    try:
        for _dirpath, _dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            if only is None or os.fstat(dir_fd).st_uid in only:
                os.fchown(dir_fd, uid, gid)
                changed += 1
            for name in files:
                try:
                    if (
                        only is None
                        or os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid in only
                    ):
                        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
                        changed += 1
                except OSError:
                    continue  # vanished: leave it
    finally:
        os.close(top)
    return changed


def hand_over(workspace: Path, uid: int, gid: int) -> None:
    """Let ``uid`` write the workspace for the run when it does not own it already.

    On GitHub's runners the checkout already belongs to uid 1001; elsewhere (act, other
    runners) it is given to the project's user and back by :func:`give_back`.
    """
    if workspace.is_dir() and workspace.stat().st_uid != uid:
        chown_tree(workspace, uid, gid)


def give_back(workspace: Path, owner: tuple[int, int], uids: tuple[int, ...]) -> int:
    """Give every path under ``workspace`` owned by one of ``uids`` to ``owner``; a count.

    Call it once the project's processes are dead (:meth:`Sandbox.end`); even so it works on
    directory handles and never follows a link (:func:`chown_tree`).
    """
    wanted = frozenset(uids) - {owner[0]}
    if os.geteuid() != 0 or not wanted:
        return 0
    return chown_tree(workspace, *owner, only=wanted)
