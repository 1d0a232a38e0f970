"""Where the project under test runs inside the action: as an unprivileged user, without secrets.

The Docker action's container runs as root and holds the workflow's write token (the
``github-token`` input arrives as ``INPUT_GITHUB-TOKEN``). Root in that container can always
read the token back, whatever ``os.environ`` says later: ``/proc/1/environ`` keeps the original
environment, ``/proc/<pid>/mem`` any process's memory, and the runner's Docker socket answers
``docker inspect`` with every ``INPUT_*``. So the project under test (its ``install`` command,
conftest, tests and their subprocesses) never runs as root here. It runs as :data:`PR_UID`
(the image's user ``mlcheck``, uid 1001, which is also the hosted runner's uid) with:

- an environment without any secret (:func:`scrubbed_env`): no ``GITHUB_TOKEN``, ``GH_TOKEN``,
  ``INPUT_*``, ``ACTIONS_*`` (runtime and OIDC tokens and URLs), ``HF_TOKEN`` unless the
  workflow names it in ``MLCHECK_PASS_ENV``, and no variable whose value is the token;
- no supplementary groups (so not the Docker socket's group);
- its own ``HOME`` and a virtual environment (``--system-site-packages``: the image's torch
  and mlcheck stay visible) that ``pip install`` writes to;
- the workspace handed to it for the run, and back to its owner afterwards
  (:func:`hand_over`, :func:`give_back`).

Processes of another uid cannot read root's ``/proc/<pid>/environ`` or memory, so what stays
root — the action itself and ``mlcheck publish`` after the tests — keeps the token out of reach.
Those root processes run Python isolated (``-I``: no user site, no ``PYTHON*`` variables, not
the current folder on ``sys.path``) and read a private copy of the event payload, so files the
tests could have written cannot change what they do.

>>> env = scrubbed_env({"PATH": "/bin", "GITHUB_TOKEN": "t", "INPUT_GITHUB-TOKEN": "t"}, "t")
>>> sorted(env)
['PATH']
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import constants as C
from .constants import ENV_PASS_ENV, ENV_PR_USER, INPUT_PREFIX, SECRET_ENV_VARS

PR_USER = "mlcheck"  # the image's unprivileged user (Dockerfile)
PR_UID = 1001  # used when the image has no such user: the hosted runner's uid
# Variables that hold tokens or the URLs they unlock; removed whatever their value.
SECRET_NAMES = frozenset(SECRET_ENV_VARS)
SECRET_PREFIXES = (INPUT_PREFIX, "ACTIONS_")  # action inputs; runtime/OIDC/cache tokens and URLs
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


def scrubbed_env(
    environ: Mapping[str, str], token: str | None = None, keep: tuple[str, ...] = ()
) -> dict[str, str]:
    """``environ`` without secrets (see the module docstring); ``keep`` names pass anyway.

    ``keep`` never brings back ``INPUT_*``/``ACTIONS_*`` or the write token's value.
    """
    out = {}
    for name, value in environ.items():
        if name.startswith(SECRET_PREFIXES) or (token and token in value):
            continue
        if name in SECRET_NAMES and name not in keep:
            continue
        out[name] = value
    return out


def pass_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The names in ``MLCHECK_PASS_ENV`` (space or comma separated)."""
    return tuple((environ.get(ENV_PASS_ENV) or "").replace(",", " ").split())


@dataclass(frozen=True)
class PrUser:
    """Who the project under test runs as; ``uid`` None: as this process (not root)."""

    uid: int | None
    gid: int | None
    warning: str = ""  # said in the log when the token cannot be kept from the project

    @property
    def drops(self) -> bool:
        return self.uid is not None


def pr_user(environ: Mapping[str, str]) -> PrUser:
    """The user to run the project as: :data:`PR_USER`, else uid :data:`PR_UID`, when root."""
    if os.geteuid() != 0:
        return PrUser(
            None,
            None,
            f"mlcheck runs as uid {os.geteuid()}, not root: the project under test runs as the "
            "same user and could read the token from this process; use the image",
        )
    wanted = (environ.get(ENV_PR_USER) or PR_USER).strip()
    try:
        entry = pwd.getpwuid(int(wanted)) if wanted.isdigit() else pwd.getpwnam(wanted)
        uid, gid = entry.pw_uid, entry.pw_gid
    except (KeyError, ValueError):
        if wanted != PR_USER:
            from .errors import UsageError

            raise UsageError(f"{ENV_PR_USER}={wanted!r} is no user of this image") from None
        uid = gid = PR_UID
    if uid == 0:
        return PrUser(
            None,
            None,
            f"{ENV_PR_USER}={wanted}: the project under test runs as root and can read "
            "the write token",
        )
    return PrUser(uid, gid)


@dataclass
class Sandbox:
    """The run's home, virtual environment and environment for the project under test."""

    user: PrUser
    env: dict[str, str]
    python: str  # the interpreter `mlcheck run` starts with
    private: Path  # root-only folder (the event copy)
    _dirs: list[Path] = field(default_factory=list)

    def call(self, argv: list[str], cwd: Path) -> int:
        """Run ``argv`` as the project's user, with the scrubbed environment."""
        sys.stdout.flush()
        if not self.user.drops:
            return subprocess.call(argv, cwd=cwd, env=self.env)
        # no supplementary groups: not the Docker socket's group, not root's
        return subprocess.call(
            argv, cwd=cwd, env=self.env, user=self.user.uid, group=self.user.gid, extra_groups=[]
        )

    def close(self) -> None:
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


def prepare(environ: Mapping[str, str], token: str | None, workspace: Path) -> Sandbox:
    """Make the project's user, home, virtual environment and environment for one action run."""
    user = pr_user(environ)
    env = scrubbed_env(environ, token, pass_env(environ))
    private = Path(tempfile.mkdtemp(prefix="mlcheck-private-"))  # 0700, this process's user
    sandbox = Sandbox(user, env, sys.executable, private, [private])
    if not user.drops:
        return sandbox
    assert user.uid is not None and user.gid is not None
    home = Path(tempfile.mkdtemp(prefix="mlcheck-home-"))
    sandbox._dirs.append(home)
    venv = home / "venv"
    # Created by root (fast, --without-pip: the image's pip is visible through the system
    # site) and then given to the user, so `pip install` needs no root and no --user.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
    )
    _chown_tree(home, user.uid, user.gid)
    env[C.ENV_HOME] = str(home)
    env[C.ENV_VIRTUAL_ENV] = str(venv)
    env[C.ENV_PATH] = f"{venv / 'bin'}{os.pathsep}{env.get(C.ENV_PATH, os.defpath)}"
    env.pop(C.ENV_PYTHONHOME, None)
    sandbox.python = str(venv / "bin" / "python")
    hand_over(workspace, user.uid, user.gid)
    return sandbox


def docker_socket_warning() -> str:
    """A warning when a Docker socket is open to every user (then no user change protects)."""
    for sock in DOCKER_SOCKETS:
        try:
            mode = os.stat(sock).st_mode
        except OSError:
            continue
        if stat.S_ISSOCK(mode) and mode & 0o006:
            return f"{sock} is writable by every user: the project under test can use it"
    return ""


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(dirpath, name), uid, gid)


def hand_over(workspace: Path, uid: int, gid: int) -> None:
    """Let ``uid`` write the workspace for the run when it does not own it already.

    On GitHub's runners the checkout already belongs to uid 1001; elsewhere (act, other
    runners) it is given to the project's user and back by :func:`give_back`.
    """
    if workspace.is_dir() and workspace.stat().st_uid != uid:
        _chown_tree(workspace, uid, gid)


def give_back(workspace: Path, owner: tuple[int, int], uids: tuple[int, ...]) -> int:
    """Give every path under ``workspace`` owned by one of ``uids`` to ``owner``; a count.

    Links are changed themselves, never their targets.
    """
    if os.geteuid() != 0 or not workspace.is_dir():
        return 0
    changed = 0
    wanted = set(uids) - {owner[0]}
    paths = [str(workspace)]
    for root, dirs, files in os.walk(workspace):
        paths += [os.path.join(root, name) for name in (*dirs, *files)]
    for path in paths:
        try:
            if os.lstat(path).st_uid in wanted:
                os.lchown(path, *owner)
                changed += 1
        except OSError:
            continue  # vanished or not ours to change: leave it
    return changed


__all__ = [
    "PR_UID",
    "PR_USER",
    "PrUser",
    "Sandbox",
    "give_back",
    "hand_over",
    "pr_user",
    "prepare",
    "scrubbed_env",
]
