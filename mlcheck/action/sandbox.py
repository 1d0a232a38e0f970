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
  (:mod:`mlcheck.action.ownership`).

Dropping the uid is only a boundary if nothing of that uid outlives the project's turn, and if
root never works on a path that uid could change. So:

- whenever :meth:`Sandbox.call` returns (the command ended, failed, timed out or was
  interrupted), every process of the sandbox's uid is dead
  (:func:`~mlcheck.action.processes.kill_user`: a child that becomes that uid sends
  ``kill(-1, SIGKILL)``, repeated until ``/proc`` shows none), whatever session or process
  group it moved to; the uid must run nothing else on the machine
  (:func:`prepare` refuses one that does);
- the job's file commands (``GITHUB_ENV``, ``GITHUB_PATH``, ``GITHUB_OUTPUT``,
  ``GITHUB_STATE``, ``GITHUB_STEP_SUMMARY``) are remembered before the project runs and put
  back afterwards, with mlcheck's own lines appended (:mod:`mlcheck.action.file_commands`):
  the project cannot set environment variables, ``PATH`` entries or outputs for later steps;
- root creates nothing in the workspace, and hands back what the project created with
  directory handles that never follow a link (:mod:`mlcheck.action.ownership`);
- trusted Python runs isolated (``-I``) with a ``HOME`` of its own (:func:`trusted_env`).

What the project can still change is the workspace itself: later steps must treat it as
untrusted (README, "The sandbox for PR code").

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

import argparse
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import constants as C
from ..constants import ENV_PASS_ENV, ENV_PR_USER, INPUT_PREFIX, SECRET_ENV_VARS
from .file_commands import FILE_COMMANDS, FileCommands
from .ownership import chown_tree, give_back, hand_over
from .processes import describe, kill_user, processes_of

if TYPE_CHECKING:
    from ..errors import MlcheckError

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
        if name in FILE_COMMANDS:  # restored after the run anyway: not even advertised
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
        if wanted.isdigit():  # a uid without a name, as `docker run --user 1234` allows
            uid = gid = int(wanted)
        elif wanted != PR_USER:
            from ..errors import UsageError

            raise UsageError(f"{ENV_PR_USER}={wanted!r} is no user of this image") from None
        else:
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
    private: Path  # root-only folder (the event copy, trusted HOME, mlcheck's own file commands)
    _dirs: list[Path] = field(default_factory=list)

    def call(self, argv: list[str], cwd: Path) -> int:
        """Run ``argv`` as the project's user, with the scrubbed environment.

        When this returns (or raises: a timeout, a cancelled step), no process of the
        project's user is left: a daemon the command started cannot outlive it.
        """
        sys.stdout.flush()
        try:
            if not self.user.drops:
                return subprocess.call(argv, cwd=cwd, env=self.env)
            # no supplementary groups: not the Docker socket's group, not root's
            return subprocess.call(
                argv,
                cwd=cwd,
                env=self.env,
                user=self.user.uid,
                group=self.user.gid,
                extra_groups=[],
            )
        finally:
            self.end()

    def end(self) -> None:
        """Kill every process of the project's user
        (:func:`~mlcheck.action.processes.kill_user`)."""
        if self.user.uid is not None and self.user.gid is not None:
            kill_user(self.user.uid, self.user.gid)

    def close(self) -> None:
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


def end_or_error(sandbox: Sandbox) -> MlcheckError | None:
    """:meth:`Sandbox.end`; the error when processes survive, for the caller to raise once
    it has put the file commands back."""
    from ..errors import MlcheckError

    try:
        sandbox.end()
    except MlcheckError as exc:
        return exc
    return None


def trusted_env(environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """``environ`` for trusted processes (root's Python, git): ``HOME`` is ``home``, a folder
    the project cannot write, so nothing it plants in the runner's home (a ``.pth`` in the
    user site, a ``.gitconfig``, a ``.netrc``) reaches them; ``XDG_*`` folders go with it."""
    env = {k: v for k, v in environ.items() if not k.startswith("XDG_")}
    env[C.ENV_HOME] = str(home)
    return env


def prepare(environ: Mapping[str, str], token: str | None, workspace: Path) -> Sandbox:
    """Make the project's user, home, virtual environment and environment for one action run."""
    user = pr_user(environ)
    env = scrubbed_env(environ, token, pass_env(environ))
    private = Path(tempfile.mkdtemp(prefix="mlcheck-private-"))  # 0700, this process's user
    (private / "home").mkdir(mode=0o700)
    sandbox = Sandbox(user, env, sys.executable, private, [private])
    if not user.drops:
        return sandbox
    assert user.uid is not None and user.gid is not None
    if running := processes_of(user.uid):
        from ..errors import EnvironmentProblem

        sandbox.close()
        raise EnvironmentProblem(
            f"uid {user.uid} already runs processes here ({describe(running)}): the project "
            f"under test needs a uid of its own, killed when its turn ends; set {ENV_PR_USER} "
            "to an unused uid"
        )
    home = Path(tempfile.mkdtemp(prefix="mlcheck-home-"))
    sandbox._dirs.append(home)
    venv = home / "venv"
    # Created by root (fast, --without-pip: the image's pip is visible through the system
    # site) and then given to the user, so `pip install` needs no root and no --user.
    subprocess.run(
        [sys.executable, "-I", "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        env=trusted_env(environ, private / "home"),
    )
    chown_tree(home, user.uid, user.gid)
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


# ---------------------------------------------------------------------------------------------
# The same sandbox for a job that runs PR code itself (the GPU job's container)

USAGE = """\
python -I -m mlcheck.action.sandbox [--install COMMAND] [--workspace DIR] -- COMMAND...
python -I -m mlcheck.action.sandbox --stop

Runs the project under test the way the action does (mlcheck/action/sandbox.py): as the image's
unprivileged user with no secret, its own HOME and virtual environment (`python` and `pip`
on PATH are the venv's), every process of that user killed when COMMAND ends (or fails, or
the step is cancelled), then the step's file commands put back as they were. Exit code:
COMMAND's; 2 when --install fails. --stop only kills that user's processes (an always() step
before any trusted step: a cancelled step's processes may still run)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -I -m mlcheck.action.sandbox", usage=USAGE)
    parser.add_argument("--install", default="", help="bash command run first, as the project")
    parser.add_argument("--workspace", default="", help="default: $GITHUB_WORKSPACE, else cwd")
    parser.add_argument("--stop", action="store_true", help="only kill the project's processes")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    return parser


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through Sandbox.call: its processes die first


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``python -I -m mlcheck.action.sandbox``: see :data:`USAGE`."""
    from ..errors import MlcheckError

    args = _parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        user = pr_user(environ)
        if args.stop:
            if user.uid is not None and user.gid is not None:
                kill_user(user.uid, user.gid)
            return 0
        if not command:
            print(USAGE, file=sys.stderr)
            return 2
        if user.warning:
            print(f"::warning::mlcheck: {user.warning}", flush=True)
        workspace = Path(args.workspace or C.get(C.ENV_GITHUB_WORKSPACE, environ) or os.getcwd())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _interrupted)
        kept = FileCommands.remember(environ)
        try:
            return _run_in(workspace, args.install, command, environ, kept)
        finally:
            kept.close()
    except MlcheckError as exc:
        print(f"::error::mlcheck: {exc}", flush=True)
        return exc.exit_code


def _run_in(
    workspace: Path,
    install: str,
    command: list[str],
    environ: Mapping[str, str],
    kept: FileCommands,
) -> int:
    try:
        owner = os.stat(workspace)
        sandbox = prepare(environ, None, workspace)
    except BaseException:
        kept.restore()
        raise
    cwd = Path.cwd()
    try:
        if install.strip():
            code = sandbox.call(["bash", "-eo", "pipefail", "-c", install], cwd)
            if code != 0:
                print(f"::error::mlcheck: the install command failed (exit {code}): {install}")
                return 2
        return sandbox.call(command, cwd)
    finally:
        try:
            survived = end_or_error(sandbox)
            kept.restore()
            if survived is not None:
                raise survived  # nothing handed back while they run
            if sandbox.user.uid is not None:
                give_back(workspace, (owner.st_uid, owner.st_gid), (sandbox.user.uid,))
        finally:
            sandbox.close()


__all__ = [
    "PR_UID",
    "PR_USER",
    "PrUser",
    "Sandbox",
    "main",
    "pr_user",
    "prepare",
    "scrubbed_env",
    "trusted_env",
]

if __name__ == "__main__":
    sys.exit(main())
