"""mlcheck.action.sandbox: PR code runs as a uid of its own, cannot find the write token, is dead
before root works again, and cannot steer root (README "Security model", "The sandbox").

These run the action as root, as the image does, with the project under test as a uid of
its own: one that runs nothing else on this shared machine (kill(-1) as that uid must not
reach anyone else's processes), owning the workspace, the runner's HOME and the file
commands as uid 1001 does on GitHub's runners. The project's code is bash: this machine's
Python lives under /root, out of its reach.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import action_runs
import pytest
from action_runs import REPO, SHA, action_environ, pr_payload, to_server
from github_server import GitHubServer

from mlcheck.github.workflow import read_output
from mlcheck.results import schema as results
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

# the action's fixtures (a workspace, the GitHub API with a tracking issue), for this module
server = action_runs.server
workspace = action_runs.workspace


HUNT = r"""
SECRET="$SECRET_A$SECRET_B"  # in two halves: the action drops variables holding the token
# The secret never goes on a command line: /proc/*/cmdline is world-readable, so a grep with
# it in argv (this hunt's, or the concurrent control's as root) would be found by the hunt.
case "$(env)" in *"$SECRET"*) echo "env" >> "$OUT";; esac
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  case "$(tr '\0' '\n' < "$f" 2>/dev/null)" in *"$SECRET"*) echo "$f" >> "$OUT";; esac
done
grep -rlsF -f /dev/fd/3 "$HOME" "$WS" /tmp/mlcheck-* 3<<<"$SECRET" >> "$OUT" 2>/dev/null || true
for s in /var/run/docker.sock /run/docker.sock; do [ -w "$s" ] && echo "$s" >> "$OUT"; done
echo "uid=$(id -u) groups=$(id -G)" > "$OUT.who"
"""


# README security model: the project under test never holds a write token
# (env, /proc/*/environ, files, Docker socket).
@pytest.mark.skipif(os.geteuid() != 0, reason="the action runs as root; needs root to test it")
@pytest.mark.parametrize("pr_user", ["sandbox", "0"])
def test_pr_code_cannot_find_the_token(
    tmp_path: Path, server: GitHubServer, pr_user: str, pr_uid: int
) -> None:
    """PR code (the install command, as bash: this machine's Python is private to root) hunts
    the write token in its environment, every readable /proc/*/environ and cmdline, the files
    it can read, and the Docker socket, while the action process (root, as in the container)
    holds it in its own environment. With the project as root (the control), the hunt works."""
    import stat
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mlcheck-hunt-", dir="/tmp"))  # not under /root
    root.chmod(0o755)
    ws = root / "ws"
    results.write(RunResults(RunInfo(tiers=("fast",)), ()), ws / "mlcheck-results")
    # the hosted runner's user owns the checkout (and the results a former step downloaded)
    subprocess.run(["chown", "-R", f"{pr_uid}:{pr_uid}", str(ws)], check=True)
    out = ws / "found.txt"
    pr = server.state.add_pull(head_sha=SHA)
    payload = {"action": "opened", "pull_request": pr_payload(pr, REPO["full_name"])}
    env = to_server(server, action_environ(ws, "pull_request", payload, command="publish"))
    secret = env["INPUT_GITHUB-TOKEN"]
    env |= {"GITHUB_TOKEN": secret, "ACTIONS_RUNTIME_TOKEN": secret}
    # the image's uid 1001 here is a uid of its own: this machine may run other 1001s
    env["MLCHECK_PR_USER"] = "0" if pr_user == "0" else str(pr_uid)
    half = len(secret) // 2
    env |= {"SECRET_A": secret[:half], "SECRET_B": secret[half:]}  # what the hunt looks for
    env |= {"OUT": str(out), "WS": str(ws)}
    (root / "home").mkdir()
    env["HOME"] = str(root / "home")  # the runner's HOME (not /root: grep would read it all)
    env["INPUT_INSTALL"] = HUNT
    entry = Path(__file__).parents[2] / "entrypoint.py"
    try:
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        done = subprocess.run([str(entry)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        who = Path(f"{out}.who").read_text()
        found = out.read_text().split() if out.exists() else []
        if pr_user == "0":  # the control: root finds it (its env is scrubbed, /proc is not)
            assert who.startswith("uid=0") and any("/proc/" in f for f in found), found
            assert "env" not in found
        else:
            assert who.strip() == f"uid={pr_uid} groups={pr_uid}", who
            assert found == [], found
            assert "::warning::" not in done.stdout  # nothing to warn about
        assert server.state.comments_on(pr)  # publish (root, with the token) still posted
        assert stat.S_IMODE(ws.stat().st_mode) and ws.stat().st_uid == pr_uid
        assert (ws / "mlcheck-results").stat().st_uid == pr_uid  # results stay the owner's
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the action runs as root; needs root")


@pytest.fixture
def pr_uid() -> Iterator[int]:
    """A uid no process on this machine runs as; every process of it is dead afterwards."""
    from mlcheck.action.processes import kill_user, processes_of

    uid = 40000 + os.getpid() % 20000
    while processes_of(uid):
        uid += 1
    yield uid
    kill_user(uid, uid)


@dataclasses.dataclass
class Runner:
    """A runner's layout for one Docker action step: what GitHub mounts into the container."""

    root: Path  # everything of this scenario (world-traversable, unlike pytest's tmp_path)
    ws: Path  # /github/workspace
    home: Path  # /github/home
    commands: Path  # /github/file_commands
    env: dict[str, str]
    pr: int  # the pull request publish posts to

    def file(self, name: str) -> Path:
        return Path(self.env[name])


FILE_COMMANDS_BEFORE = {
    "GITHUB_ENV": "FROM_AN_EARLIER_STEP=kept\n",
    "GITHUB_PATH": "/opt/earlier/bin\n",
    "GITHUB_OUTPUT": "",
    "GITHUB_STATE": "post_step=1\n",
    "GITHUB_STEP_SUMMARY": "# an earlier step's summary\n",
}


@pytest.fixture
def runner(pr_uid: int, server: GitHubServer) -> Iterator[Runner]:
    """The hosted runner's layout: workspace, HOME and file commands owned by the project's
    uid; a results folder to publish (command: publish, so only `install` runs PR code)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mlcheck-sandbox-", dir="/tmp"))
    root.chmod(0o755)
    ws, home, commands = root / "workspace", root / "home", root / "file_commands"
    results.write(
        RunResults(
            RunInfo(tiers=("fast",)),
            (TestResult("tests/test_a.py::test_breaks", Outcome.FAILED, tier="fast"),),
        ),
        ws / "mlcheck-results",
    )
    home.mkdir()
    commands.mkdir()
    pr = server.state.add_pull(head_sha=SHA)
    payload = {"action": "opened", "pull_request": pr_payload(pr, REPO["full_name"])}
    env = to_server(server, action_environ(ws, "pull_request", payload, command="publish"))
    env |= {"MLCHECK_PR_USER": str(pr_uid), "HOME": str(home)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for name, content in FILE_COMMANDS_BEFORE.items():
        path = commands / name.lower()
        path.write_text(content)
        env[name] = str(path)
    for path in (ws, home, commands):
        subprocess.run(["chown", "-R", f"{pr_uid}:{pr_uid}", str(path)], check=True)
    try:
        yield Runner(root, ws, home, commands, env, pr)
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _step(runner: Runner, **env: str) -> subprocess.CompletedProcess[str]:
    """One Docker action step: entrypoint.py started by its own first line, as the image's
    ENTRYPOINT is (`env -S python3 -I` here; the image writes its Python's absolute path)."""
    entry = Path(__file__).parents[2] / "entrypoint.py"
    return subprocess.run(
        [str(entry)], env=runner.env | env, capture_output=True, text=True, timeout=120
    )


# A daemon that survives the step (setsid, its own session and process group) and races root:
# it swaps a decoy folder for a link to a stand-in for /var/run (holding a stand-in Docker
# socket, root's), and keeps writing the job's file commands.
DAEMON = r"""
mkdir -p "$WS/decoy/sub" && touch "$WS/decoy/sub/f"
cat > "$WS/.daemon.sh" <<'SH'
echo $$ > "$WS/daemon.pid"
while :; do
  mv "$WS/decoy" "$WS/decoy.d" 2>/dev/null; ln -sfn "$RUN" "$WS/decoy"
  printf 'EVIL=1\nLD_PRELOAD=/tmp/evil.so\n' >> "$CMDS/github_env" 2>/dev/null
  echo /tmp/evil-bin >> "$CMDS/github_path" 2>/dev/null
  echo failed=0 >> "$CMDS/github_output" 2>/dev/null
  rm -f "$WS/decoy"; mv "$WS/decoy.d" "$WS/decoy" 2>/dev/null
done
SH
setsid bash "$WS/.daemon.sh" </dev/null >/dev/null 2>&1 &
for i in $(seq 100); do [ -s "$WS/daemon.pid" ] && break; sleep 0.05; done
# and now the file commands themselves: one link to root's file, one folder
ln -sfn "$VICTIM" "$CMDS/github_state"
"""


# README security model: a daemon the project leaves behind is dead before root reads,
# publishes or touches the workspace, and cannot make root change a path it controls.
# README security model: the job's file commands are put back after the project ran.
@needs_root
def test_a_surviving_daemon_is_dead_before_root_works_and_steers_nothing(
    runner: Runner, server: GitHubServer, pr_uid: int
) -> None:
    import socket
    import stat

    from mlcheck.action.processes import processes_of

    run = runner.root / "run"  # stands in for /var/run: root's, with root's Docker socket
    run.mkdir()
    (run / "sub").mkdir()
    (run / "sub" / "f").write_text("root's")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(run / "docker.sock"))
    victim = runner.root / "victim"
    victim.write_text("root's file\n")
    env = {"WS": str(runner.ws), "RUN": str(run), "CMDS": str(runner.commands)}
    env |= {"VICTIM": str(victim), "INPUT_INSTALL": DAEMON}
    # the runner's workspace belongs to another uid (act, self-hosted): give_back walks it
    os.chown(runner.ws, 4242, 4242)
    try:
        done = _step(runner, **env)
    finally:
        sock.close()
    # published (publish's exit code follows fail-on: 0 or 1), not stopped (2)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    daemon = int((runner.ws / "daemon.pid").read_text())
    assert not Path(f"/proc/{daemon}").exists() or _zombie(daemon)
    assert processes_of(pr_uid) == []
    # nothing of root's changed owner, through the decoy or otherwise
    for path in (run, run / "docker.sock", run / "sub", run / "sub" / "f", victim):
        assert os.lstat(path).st_uid == 0, path
    assert stat.S_ISSOCK(os.lstat(run / "docker.sock").st_mode)
    assert victim.read_text() == "root's file\n"
    # the project's files went to the workspace's owner, links changed themselves
    assert os.lstat(runner.ws / ".daemon.sh").st_uid == 4242
    # the file commands are what the runner left, plus mlcheck's own lines
    for name in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_STATE"):
        path = runner.file(name)
        assert not path.is_symlink() and path.read_text() == FILE_COMMANDS_BEFORE[name], name
        assert os.lstat(path).st_uid == pr_uid  # still the runner's
    outputs = runner.file("GITHUB_OUTPUT").read_text()
    assert read_output(str(runner.file("GITHUB_OUTPUT")), "failed") == "1"
    assert "failed=0" not in outputs
    summary = runner.file("GITHUB_STEP_SUMMARY").read_text()
    assert summary.startswith(FILE_COMMANDS_BEFORE["GITHUB_STEP_SUMMARY"])
    assert summary.count("· mlcheck · `fast`") == 1
    assert server.state.comments_on(runner.pr)  # publish (root, with the token) posted


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# README security model: root hands files back with directory handles, never following a
# link the project swaps in while it walks.
@needs_root
def test_give_back_never_follows_a_folder_swapped_for_a_link(tmp_path: Path, pr_uid: int) -> None:
    """give_back on its own, racing a live swapper of the project's uid (no kill first)."""
    import tempfile

    from mlcheck.action.ownership import give_back as give_files_back

    root = Path(tempfile.mkdtemp(prefix="mlcheck-race-", dir="/tmp"))
    try:
        root.chmod(0o755)
        ws, run = root / "ws", root / "run"
        (ws / "decoy" / "sub").mkdir(parents=True)
        (run / "sub").mkdir(parents=True)
        for folder in (ws / "decoy" / "sub", run / "sub"):
            for i in range(300):  # enough names that the walk overlaps the swaps
                (folder / f"f{i}").write_text("x")
        subprocess.run(["chown", "-R", f"{pr_uid}:{pr_uid}", str(ws)], check=True)
        swap = (
            f"cd {ws}; while :; do mv decoy d 2>/dev/null; ln -sfn {run} decoy; "
            "rm -f decoy; mv d decoy 2>/dev/null; done"
        )
        racer = subprocess.Popen(
            ["bash", "-c", swap], user=pr_uid, group=pr_uid, extra_groups=[], start_new_session=True
        )
        try:
            for _ in range(100):
                give_files_back(ws, (pr_uid, pr_uid), (0,))  # root's files would go to pr_uid
        finally:
            racer.kill()
            racer.wait()
        for path in (run, run / "sub", *(run / "sub").iterdir()):
            assert os.lstat(path).st_uid == 0, path
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


# README security model: every trusted Python is isolated: code the project planted for the
# next step (a .pth in the runner's HOME, a sitecustomize on PYTHONPATH) never runs as root.
@needs_root
def test_code_planted_in_home_by_one_step_does_not_run_as_root_in_the_next(
    runner: Runner, server: GitHubServer
) -> None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    marker = runner.root / "ran-as"
    code = f'import os; open("{marker}", "a").write(str(os.getuid()) + "\\n")'
    plant = (
        f'site="$RUNNER_HOME/.local/lib/{version}/site-packages"\n'
        'mkdir -p "$site" "$RUNNER_HOME/py"\n'
        f"echo '{code}' > \"$site/evil.pth\"\n"
        f"echo '{code}' > \"$RUNNER_HOME/py/sitecustomize.py\"\n"
        "echo planted\n"
    )
    first = _step(runner, INPUT_INSTALL=plant, RUNNER_HOME=str(runner.home))
    assert "planted" in first.stdout, first.stdout + first.stderr
    assert (runner.home / "py" / "sitecustomize.py").is_file()
    assert not marker.exists()  # nothing ran it in the first step
    # the next step: HOME is the same folder; an earlier step's PYTHONPATH points into it
    second = _step(runner, PYTHONPATH=str(runner.home / "py"))
    assert second.returncode in (0, 1), second.stdout + second.stderr  # published
    assert not marker.exists(), marker.read_text()
    # the guard: a non-isolated start is refused (with the planted code: that is why)
    entry = Path(__file__).parents[2] / "entrypoint.py"
    plain = subprocess.run(
        [sys.executable, str(entry)], env=runner.env, capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 2 and "must run isolated" in plain.stdout


@needs_root
def test_a_busy_uid_is_refused_before_any_pr_code_runs(runner: Runner, pr_uid: int) -> None:
    other = subprocess.Popen(["sleep", "60"], user=pr_uid, group=pr_uid, extra_groups=[])
    try:
        done = _step(runner, INPUT_INSTALL=f"touch {runner.ws}/installed")
    finally:
        other.kill()
        other.wait()
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"uid {pr_uid} already runs processes here" in done.stdout
    assert not (runner.ws / "installed").exists()
    assert runner.file("GITHUB_ENV").read_text() == FILE_COMMANDS_BEFORE["GITHUB_ENV"]


# README security model: the GPU job runs install and tests in the same sandbox.
@needs_root
def test_the_gpu_job_sandbox_kills_restores_and_hands_back(runner: Runner, pr_uid: int) -> None:
    from mlcheck.action.processes import processes_of

    os.chown(runner.ws, 4242, 4242)
    leave = (
        f"setsid bash -c 'echo $$ > {runner.ws}/daemon.pid; while :; do "
        f"echo EVIL=1 >> {runner.commands}/github_env; sleep 0.01; done' "
        "</dev/null >/dev/null 2>&1 &"
        f"\nfor i in $(seq 100); do [ -s {runner.ws}/daemon.pid ] && break; sleep 0.05; done"
    )
    argv = [sys.executable, "-I", "-m", "mlcheck.action.sandbox", "--install", leave, "--"]
    argv += [
        "bash",
        "-c",
        f"id -u > {runner.ws}/who; echo x=1 >> $0; exit 7",
        str(runner.file("GITHUB_OUTPUT")),
    ]
    env = {k: v for k, v in runner.env.items() if not k.startswith("INPUT_")}
    done = subprocess.run(argv, cwd=runner.ws, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 7, done.stdout + done.stderr  # the command's verdict
    assert (runner.ws / "who").read_text().strip() == str(pr_uid)
    assert processes_of(pr_uid) == []
    for name, content in FILE_COMMANDS_BEFORE.items():
        assert runner.file(name).read_text() == content, name
    assert os.lstat(runner.ws / "who").st_uid == 4242
    # --stop: what an always() step runs before trusted steps, after a cancelled one
    sleeper = subprocess.Popen(
        ["setsid", "sleep", "60"], user=pr_uid, group=pr_uid, extra_groups=[]
    )
    stop = [sys.executable, "-I", "-m", "mlcheck.action.sandbox", "--stop"]
    assert subprocess.run(stop, env=env, timeout=60).returncode == 0
    sleeper.wait(timeout=10)
    assert processes_of(pr_uid) == []


# README security model: the GPU job runs install and tests in the same sandbox.
def test_the_gpu_workflow_runs_pr_code_only_through_the_sandbox() -> None:
    """Every step of the GPU job that runs the PR's code goes through `mlcheck.action.sandbox`; an
    always() step stops the PR's user before the trusted steps; those run Python isolated."""
    import yaml

    path = Path(__file__).parents[2] / "examples" / "workflows" / "mlcheck-gpu.yml"
    steps = yaml.safe_load(path.read_text())["jobs"]["gpu"]["steps"]
    runs = [(i, " ".join(str(s.get("run", "")).split())) for i, s in enumerate(steps)]
    pr_code = [i for i, r in runs if "pip install" in r or "mlcheck run" in r]
    assert pr_code, runs
    for i in pr_code:
        assert runs[i][1].startswith("python -I -m mlcheck.action.sandbox --install "), runs[i]
    (stop,) = [i for i, r in runs if r == "python -I -m mlcheck.action.sandbox --stop"]
    assert steps[stop]["if"] == "${{ always() }}" and stop == max(pr_code) + 1
    for step, (_, run) in zip(steps[stop + 1 :], runs[stop + 1 :], strict=True):
        assert not run or "python -I -m mlcheck " in run, step  # no console script, no user site
        assert "cache" not in str(step.get("uses", "")), step


# README security model: PR code is dead when its step is interrupted (a cancelled job).
@needs_root
def test_an_interrupted_sandbox_kills_the_project_before_it_exits(
    runner: Runner, pr_uid: int
) -> None:
    import signal
    import time

    from mlcheck.action.processes import processes_of

    started = runner.ws / "started"
    script = f"setsid sleep 300 </dev/null >/dev/null 2>&1 & touch {started}; sleep 300"
    argv = [sys.executable, "-I", "-m", "mlcheck.action.sandbox", "--", "bash", "-c", script]
    env = {k: v for k, v in runner.env.items() if not k.startswith("INPUT_")}
    wrapper = subprocess.Popen(argv, cwd=runner.ws, env=env)
    try:
        while not started.exists():  # bounded by the test's timeout
            assert wrapper.poll() is None
            time.sleep(0.05)
        assert processes_of(pr_uid)
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        wrapper.kill()
    assert processes_of(pr_uid) == []
    assert runner.file("GITHUB_ENV").read_text() == FILE_COMMANDS_BEFORE["GITHUB_ENV"]
