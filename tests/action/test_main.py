"""mlcheck.action.main: inputs, auto resolution, and whole action runs with the real CLI.

The end-to-end cases run ``mlcheck run`` as a real subprocess on a small project written here
(pure-Python tests: the action's logic does not depend on torch), with real GITHUB_OUTPUT and
GITHUB_STEP_SUMMARY files and a real event payload.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from github_server import ACTIONS_BOT, GitHubServer

from mlcheck.action.main import (
    INPUT_DEFAULTS,
    Inputs,
    cli_args,
    give_back,
    input_env_name,
    main,
    plan,
    should_publish,
)
from mlcheck.errors import UsageError
from mlcheck.github.event import parse_event
from mlcheck.github.workflow import read_output
from mlcheck.publish import BASE_KEY, base_digests, issue_body
from mlcheck.results import schema as results
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

SHA = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
REPO = {"full_name": "octo-org/ml-app", "default_branch": "main"}

PROJECT_TESTS = """
import pytest

def test_adds():
    assert 1 + 1 == 2

def test_breaks():
    assert [1, 2] == [1, 3], "the head lost a label"

@pytest.mark.real_model("org/model")
def test_needs_weights():
    pass
"""


def _pr(number: int, head_repo: str) -> dict[str, object]:
    return {
        "number": number,
        "head": {"sha": SHA, "ref": "feature", "repo": {"full_name": head_repo}},
        "base": {"sha": "1" * 40, "ref": "main", "repo": {"full_name": REPO["full_name"]}},
        "user": {"login": "someone"},
    }


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    project = ws / "proj"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['tests']\n")
    (project / "tests" / "test_things.py").write_text(PROJECT_TESTS)
    return ws


def _environ(ws: Path, event: str, payload: dict[str, object], **inputs: str) -> dict[str, str]:
    """A GitHub Actions environment for a Docker action run in ``ws``."""
    event_path = ws.parent / "event.json"
    event_path.write_text(json.dumps({"repository": REPO, **payload}))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "INPUT_", "MLCHECK_", "PYTEST_"))
    }
    env |= {
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(ws),
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REPOSITORY": REPO["full_name"],
        "GITHUB_SHA": SHA,
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_RUN_ID": "42",
        "GITHUB_OUTPUT": str(ws.parent / "output.txt"),
        "GITHUB_STEP_SUMMARY": str(ws.parent / "summary.md"),
    }
    # Root here (the dev machine's Python lives under /root): these runs keep the project
    # as root; test_pr_code_cannot_find_the_token runs it as the image's user.
    env["MLCHECK_PR_USER"] = "0"
    env |= {input_env_name(k): v for k, v in INPUT_DEFAULTS.items()}
    env[input_env_name("github-token")] = ""
    env |= {input_env_name(k.replace("_", "-")): v for k, v in inputs.items()}
    return env


def _commit_all(folder: Path) -> str:
    """Make ``folder`` a git checkout of one commit of its files; its SHA."""
    import subprocess

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(folder)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return head.stdout.strip()


def _outputs(env: dict[str, str], *more: str) -> dict[str, str]:
    path = env["GITHUB_OUTPUT"]
    # written once: by the action, at the end (the CLI it runs writes into a private file)
    names = [re.split(r"=|<<", line, maxsplit=1)[0] for line in Path(path).read_text().splitlines()]
    assert len(names) == len(set(names)), names
    names = ("passed", "failed", "errors", "not-run", "selected", "new-failures", "results-dir")
    names += ("comment-url",)
    return {name: read_output(path, name) for name in (*names, *more)}


@pytest.fixture
def server(gh: GitHubServer) -> GitHubServer:
    """The local GitHub API for REPO, with a tracking issue whose base digest says that the
    default branch passed every test of the project (so test_breaks is a new failure)."""
    gh.state.owner, gh.state.name = REPO["full_name"].split("/")
    gh.state.next_number = 7
    base = RunResults(
        RunInfo(tiers=("fast",)),
        tuple(
            TestResult(f"tests/test_things.py::{name}", Outcome.PASSED, tier="fast")
            for name in ("test_adds", "test_breaks")
        ),
    )
    body = issue_body({BASE_KEY: "\n".join(base_digests({"fast": base}, "1" * 40).values())})
    gh.state.add_issue(title="mlcheck nightly", body=body, user=ACTIONS_BOT, state="closed")
    return gh


def _to(server: GitHubServer, env: dict[str, str]) -> dict[str, str]:
    """Point the action at the local GitHub API with a workflow token."""
    return env | {"GITHUB_API_URL": server.url, input_env_name("github-token"): server.token}


# --- inputs and resolution


def test_inputs_with_dashes_come_from_their_own_variables() -> None:
    inputs = Inputs.from_env(
        {
            "INPUT_GITHUB-TOKEN": "ghs_x",
            "INPUT_FAIL-ON": "never",
            "INPUT_PATHS": "tests/unit 'tests/with space'",
            "INPUT_TIER": "",
        }
    )
    assert inputs.github_token == "ghs_x"
    assert inputs.fail_on == "never"
    assert inputs.paths == ("tests/unit", "tests/with space")
    assert inputs.tier == "auto"  # empty means the default, as GitHub passes unset inputs


@pytest.mark.parametrize(
    ("name", "value"), [("command", "deploy"), ("comment", "sometimes"), ("fail-on", "errors")]
)
def test_invalid_choices_are_usage_errors_naming_the_input(name: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"`{name}: {value}`"):
        Inputs.from_env({input_env_name(name): value})


@pytest.mark.parametrize(
    ("event", "payload", "command", "tier"),
    [
        ("push", {"after": SHA}, "run", "fast"),
        ("pull_request", {"action": "opened", "pull_request": _pr(7, "a/fork")}, "run", "fast"),
        ("schedule", {"schedule": "0 3 * * *"}, "run", "all"),
        ("workflow_dispatch", {"inputs": {"sha": SHA, "pr": "7", "tier": "gpu"}}, "run", "gpu"),
        ("workflow_dispatch", {"inputs": {"sha": SHA, "pr": "7"}}, "run", "real,gpu"),
        (
            "pull_request_target",
            {"action": "labeled", "pull_request": _pr(7, "a/b")},
            "schedule",
            "real,gpu",
        ),
        ("workflow_run", {"workflow_run": {"id": 1, "head_sha": SHA}}, "publish", "fast"),
    ],
)
def test_auto_command_and_tier_follow_the_event(
    tmp_path: Path, event: str, payload: dict[str, object], command: str, tier: str
) -> None:
    ev = parse_event(event, {"repository": REPO, **payload}, {"GITHUB_REPOSITORY": "o/r"})
    p = plan(Inputs(), ev, {"GITHUB_WORKSPACE": str(tmp_path)})
    assert (p.command, p.tier) == (command, tier)


def test_explicit_inputs_win_over_auto(tmp_path: Path) -> None:
    ev = parse_event("push", {"after": SHA}, {"GITHUB_REPOSITORY": "o/r"})
    p = plan(Inputs(command="run", tier="real"), ev, {"GITHUB_WORKSPACE": str(tmp_path)})
    assert (p.command, p.tier) == ("run", "real")


def test_working_directory_must_stay_inside_the_workspace(tmp_path: Path) -> None:
    ev = parse_event("push", {}, {"GITHUB_REPOSITORY": "o/r"})
    with pytest.raises(UsageError, match="outside the workspace"):
        plan(Inputs(working_directory="../elsewhere"), ev, {"GITHUB_WORKSPACE": str(tmp_path)})


def test_cli_args_for_each_command(tmp_path: Path) -> None:
    ev = parse_event("push", {}, {"GITHUB_REPOSITORY": "o/r"})
    env = {"GITHUB_WORKSPACE": str(tmp_path)}
    inputs = Inputs(workers="auto", shard="2/4", paths=("tests",))
    assert cli_args(inputs, plan(inputs, ev, env)) == [
        "run",
        "--tier",
        "fast",
        "--results-dir",
        "mlcheck-results",
        "--workers",
        "auto",
        "--shard",
        "2/4",
        "tests",
    ]
    target = parse_event(
        "pull_request_target",
        {"action": "labeled", "pull_request": _pr(7, "a/b")},
        {"GITHUB_REPOSITORY": "o/r"},
    )
    sched = Inputs(command="schedule", gpu_label="gpu please", gpu_workflow="gpu.yml")
    assert cli_args(sched, plan(sched, target, env)) == [
        "schedule",
        "--label",
        "gpu please",
        "--workflow",
        "gpu.yml",
        "--tier",
        "real,gpu",  # what `tier: auto` resolved to: the tiers the GPU run gets
        "--workspace",
        ".",
    ]
    (tmp_path / "proj").mkdir()
    pub = Inputs(command="publish", comment="on-failure", working_directory="proj")
    args = cli_args(pub, plan(pub, ev, env))
    assert args[:5] == ["publish", "--comment", "on-failure", "--gpu-label", "mlcheck:gpu"]
    assert args[-3:] == ["--path-prefix", "proj", "mlcheck-results"]
    # the mlcheck CLI accepts exactly these command lines
    from mlcheck.cli import build_parser

    for line in (
        cli_args(inputs, plan(inputs, ev, env)),
        cli_args(sched, plan(sched, target, env)),
    ):
        build_parser().parse_args(line)
    build_parser().parse_args(args)


def test_publish_runs_unless_comment_off_no_token_or_not_in_actions() -> None:
    env = {"GITHUB_REPOSITORY": REPO["full_name"]}
    fork = parse_event("pull_request", {"pull_request": _pr(3, "someone/fork")}, env)
    same = parse_event("pull_request", {"pull_request": _pr(3, REPO["full_name"])}, env)
    token = Inputs(github_token="t")
    assert should_publish(token, same) == (True, "")
    # a fork's read-only token still publishes: base digest for the summary, no comment
    assert should_publish(token, fork) == (True, "")
    assert should_publish(Inputs(), same) == (False, "no github-token")
    assert should_publish(Inputs(github_token="t", comment="on-failure"), same)[0] is True
    assert should_publish(Inputs(github_token="t", comment="off"), same) == (False, "comment: off")
    local = parse_event("local", {}, {})
    assert should_publish(token, local) == (False, "not running in GitHub Actions")


# --- whole runs (real `mlcheck run` subprocesses)


def test_push_run_writes_outputs_summary_and_annotations(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = _environ(workspace, "push", {"after": SHA}, working_directory="proj")
    code = main(env)
    out = capfd.readouterr().out
    assert code == 1  # test_breaks failed
    assert _outputs(env) == {
        "passed": "1",
        "failed": "1",
        "errors": "0",
        "not-run": "1",
        "selected": "2",  # the not-run test is outside the selection
        "new-failures": "0",  # no base digest: nothing can be called new
        "results-dir": "proj/mlcheck-results",  # relative to the repository
        "comment-url": "",
    }
    assert (workspace / "proj" / "mlcheck-results" / "results.json").is_file()
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "test_breaks" in summary and "the head lost a label" in summary
    # links point into the repository at the pushed commit, through the project's folder
    assert f"octo-org/ml-app/blob/{SHA}/proj/tests/test_things.py" in summary
    assert "::error file=proj/tests/test_things.py" in out
    assert "nothing posted to GitHub: no github-token" in out
    assert "/github/workspace" not in out


def test_fail_on_never_keeps_the_step_green_and_install_runs_first(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = _environ(
        workspace,
        "schedule",
        {"schedule": "0 3 * * *"},
        working_directory="proj",
        fail_on="never",
        tier="fast",
        install="echo installed > install-marker.txt",
    )
    if os.geteuid() == 0:
        os.chown(workspace, 1234, 2345)  # the runner's user owns the checkout; we are root
    assert main(env) == 0
    assert (workspace / "proj" / "install-marker.txt").read_text() == "installed\n"
    assert _outputs(env)["failed"] == "1"
    assert "::group::install" in capfd.readouterr().out
    if os.geteuid() == 0:
        for path in (workspace / "proj" / "mlcheck-results").iterdir():
            assert (path.stat().st_uid, path.stat().st_gid) == (1234, 2345), path


def test_a_failed_install_fails_the_step_whatever_fail_on_says(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = _environ(
        workspace,
        "push",
        {"after": SHA},
        working_directory="proj",
        fail_on="never",
        install="echo resolving; exit 3",
    )
    assert main(env) == 2
    out = capfd.readouterr().out
    assert "::error::mlcheck: the install command failed (exit 3)" in out
    assert _outputs(env)["results-dir"] == "proj/mlcheck-results"  # outputs are still written
    assert not (workspace / "proj" / "mlcheck-results").exists()  # and no tests ran


def test_a_bad_input_is_an_annotated_usage_error(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = _environ(workspace, "push", {"after": SHA}, comment="loud")
    assert main(env) == 2
    assert "::error::mlcheck: input `comment: loud`" in capfd.readouterr().out


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another uid needs root")
def test_files_created_in_the_workspace_go_to_its_owner(workspace: Path) -> None:
    os.chown(workspace, 1234, 2345)
    (workspace / "proj" / "made-by-root").mkdir()
    (workspace / "proj" / "made-by-root" / "file").write_text("x")
    os.symlink("/etc/passwd", workspace / "link")  # the link changes, never its target
    changed = give_back(workspace)
    assert changed >= 3
    for path in (workspace / "proj" / "made-by-root", workspace / "proj" / "made-by-root" / "file"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert os.lstat(workspace / "link").st_uid == 1234
    assert Path("/etc/passwd").stat().st_uid == 0


# --- whole runs that talk to the local GitHub API (tests/github_server/)

COMMENTS = "POST /repos/{owner}/{repo}/issues/{issue_number}/comments"


def test_pull_request_run_publishes_once_compared_with_the_tracking_issue(
    workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    pr = server.state.add_pull(head_sha=SHA, head_ref="feature")
    payload = {"action": "synchronize", "pull_request": _pr(pr, REPO["full_name"])}
    env = _to(server, _environ(workspace, "pull_request", payload, working_directory="proj"))
    assert main(env) == 1
    out = capfd.readouterr().out
    outputs = _outputs(env, "issue-url")
    # publish compared with the base digest: test_breaks passed on main, so it is new
    assert outputs["new-failures"] == "1"
    assert (outputs["passed"], outputs["failed"], outputs["not-run"]) == ("1", "1", "1")
    assert outputs["selected"] == "2"  # the not-run test is outside the selection
    comments = server.state.comments_on(pr)
    assert len(comments) == 1 and comments[0]["user"] == ACTIONS_BOT
    assert outputs["comment-url"].endswith(f"#issuecomment-{comments[0]['id']}")
    assert "test_breaks" in comments[0]["body"] and "`fast`" in comments[0]["body"]
    # the job summary and the annotations are written once, by publish, with the comparison
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.count("· mlcheck · `fast`") == 1, summary
    assert "new" in summary.lower()
    assert f"octo-org/ml-app/blob/{SHA}/proj/tests/test_things.py" in summary
    assert out.count("::error file=proj/tests/test_things.py") == 1, out
    # the common path: base digest, list comments, create, re-read, and the re-read after
    # the settle pause that checks no concurrent publisher's write was lost (publish/comment.py)
    assert server.count() <= 5, server.counts()
    assert server.token not in out + summary + Path(env["GITHUB_OUTPUT"]).read_text()


def test_fork_pull_request_posts_nothing_but_still_compares(
    workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    pr = server.state.add_pull(head_sha=SHA, head_repo="someone/ml-app")
    payload = {"action": "opened", "pull_request": _pr(pr, "someone/ml-app")}
    env = _to(server, _environ(workspace, "pull_request", payload, working_directory="proj"))
    assert main(env) == 1
    out = capfd.readouterr().out
    assert server.count(COMMENTS) == 0 and not server.state.comments_on(pr)
    assert "read-only token" in out and "workflow_run" in out
    outputs = _outputs(env)
    assert outputs["comment-url"] == "" and outputs["new-failures"] == "1"
    assert Path(env["GITHUB_STEP_SUMMARY"]).read_text().count("· mlcheck · `fast`") == 1
    assert server.counts() == {"GET /repos/{owner}/{repo}/issues": 1}  # the base digest only


def test_a_refused_publish_keeps_the_verdict_and_the_summary(
    workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    from github_server import Identity

    pr = server.state.add_pull(head_sha=SHA)
    payload = {"action": "opened", "pull_request": _pr(pr, REPO["full_name"])}
    env = _to(server, _environ(workspace, "pull_request", payload, working_directory="proj"))
    # a workflow that forgot `pull-requests: write`
    env["INPUT_GITHUB-TOKEN"] = server.add_token(
        "ghs_noWrite0123", Identity(ACTIONS_BOT, write=frozenset())
    )
    env["INPUT_FAIL-ON"] = "never"
    assert main(env) == 0  # fail-on: never; the reporting failure only warns
    captured = capfd.readouterr()
    assert "pull-requests: write" in captured.out + captured.err
    assert "::warning::mlcheck could not post the results" in captured.out
    assert Path(env["GITHUB_STEP_SUMMARY"]).read_text().count("· mlcheck · `fast`") == 1
    assert _outputs(env)["failed"] == "1" and _outputs(env)["comment-url"] == ""
    assert (workspace / "proj" / "mlcheck-results" / "results.json").is_file()
    assert not server.state.comments_on(pr)


def test_schedule_command_dispatches_the_gpu_workflow(
    workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    server.state.collaborators["maint"] = "write"
    pr = server.state.add_pull(head_sha=SHA, head_repo="someone/ml-app", labels=["mlcheck:gpu"])
    payload = {
        "action": "labeled",
        "label": {"name": "mlcheck:gpu"},
        "sender": {"login": "maint"},
        "pull_request": _pr(pr, "someone/ml-app"),
    }
    env = _to(server, _environ(workspace, "pull_request_target", payload))
    _commit_all(workspace)  # the base branch's checkout (a workspace at no known commit: refused)
    assert main(env) == 0, capfd.readouterr().out
    assert server.state.dispatches == [
        {
            "workflow": "mlcheck-gpu.yml",
            "ref": "main",
            "inputs": {"sha": SHA, "pr": str(pr), "tier": "real,gpu"},
            "by": ACTIONS_BOT,
        }
    ]
    assert server.state.removed_labels == [(pr, "mlcheck:gpu")]
    outputs = _outputs(env, "scheduled")
    assert outputs["scheduled"] == "true"
    (comment,) = server.state.comments_on(pr)
    assert outputs["comment-url"].endswith(f"#issuecomment-{comment['id']}")
    assert f"GPU run scheduled for `{SHA[:7]}` by @maint" in comment["body"]
    assert not (workspace / "mlcheck-results").exists()  # nothing ran


# --- the write token is out of the project's reach (README "Security model")

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
    payload = {"action": "opened", "pull_request": _pr(pr, REPO["full_name"])}
    env = _to(server, _environ(ws, "pull_request", payload, command="publish"))
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


# --- the sandbox: PR code is dead, contained and cannot steer root (README "The sandbox")
#
# These run the action as root, as the image does, with the project under test as a uid of
# its own: one that runs nothing else on this shared machine (kill(-1) as that uid must not
# reach anyone else's processes), owning the workspace, the runner's HOME and the file
# commands as uid 1001 does on GitHub's runners. The project's code is bash: this machine's
# Python lives under /root, out of its reach.

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the action runs as root; needs root")


@pytest.fixture
def pr_uid() -> Iterator[int]:
    """A uid no process on this machine runs as; every process of it is dead afterwards."""
    from mlcheck.action.sandbox import kill_user, processes_of

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
    payload = {"action": "opened", "pull_request": _pr(pr, REPO["full_name"])}
    env = _to(server, _environ(ws, "pull_request", payload, command="publish"))
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

    from mlcheck.action.sandbox import processes_of

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

    from mlcheck.action.sandbox import give_back as give_files_back

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
    from mlcheck.action.sandbox import processes_of

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

    from mlcheck.action.sandbox import processes_of

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


# --- the verdict and its section come from the trusted side (issue 20)

# The project's conftest rewrites its results after the plugin wrote them (pytest_unconfigure
# runs after pytest_sessionfinish): every test passed, all of it the GPU section's.
FORGE_SECTION = """
import json

def pytest_unconfigure(config):
    path = config.rootpath / "mlcheck-results" / "results.json"
    data = json.loads(path.read_text())
    data["run"]["tiers"] = ["real", "gpu"]
    for test in data["tests"]:
        test["outcome"], test["run"] = "passed", "real,gpu"
    path.write_text(json.dumps(data))
"""


# README security model: the section results publish under is the tier the action ran.
def test_a_fast_run_cannot_forge_the_gpu_section(
    workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    from mlcheck.report import sticky

    pr = server.state.add_pull(head_sha=SHA, head_ref="feature")
    gpu = "### ❌ 1 failure · mlcheck · `real,gpu`\n\n`tests/test_gpu.py::test_fp16` failed"
    server.state.add_comment(pr, sticky.build_body({"real,gpu": gpu}), ACTIONS_BOT)
    (workspace / "proj" / "conftest.py").write_text(FORGE_SECTION)
    payload = {"action": "synchronize", "pull_request": _pr(pr, REPO["full_name"])}
    env = _to(server, _environ(workspace, "pull_request", payload, working_directory="proj"))
    env["INPUT_FAIL-ON"] = "never"  # refused results fail the step whatever fail-on says
    assert main(env) == 2
    out = capfd.readouterr()
    (comment,) = server.state.comments_on(pr)
    sections = sticky.parse_sections(comment["body"])
    assert sections["real,gpu"] == gpu  # the GPU section is untouched
    assert "Results not published · `fast`" in sections["fast"]
    assert "claim the section 'real,gpu'" in sections["fast"]
    assert "claim the section 'real,gpu'" in out.err
    assert _outputs(env)["passed"] == "0"  # nothing of the forged results became an output


FORGE_FILE = """
import os

def pytest_unconfigure(config):
    path = config.rootpath / "mlcheck-results" / "results.json"
    path.unlink()
    if os.environ.get("FORGE") == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
"""


# README security model: root reads results without following links, blocking or a size cap.
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("forge", "token"), [("fifo", True), ("zero", False)])
def test_a_fifo_or_a_link_to_dev_zero_as_results_is_refused_promptly(
    workspace: Path,
    server: GitHubServer,
    capfd: pytest.CaptureFixture[str],
    forge: str,
    token: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a token publish reads the results; without one the action does: either way a
    FIFO (which would block the reader) or a link to /dev/zero (which never ends) is refused
    at once, the step fails and its outputs are still written."""
    monkeypatch.setenv("FORGE", forge)
    (workspace / "proj" / "conftest.py").write_text(FORGE_FILE)
    pr = server.state.add_pull(head_sha=SHA, head_ref="feature")
    payload = {"action": "synchronize", "pull_request": _pr(pr, REPO["full_name"])}
    env = _environ(workspace, "pull_request", payload, working_directory="proj", fail_on="never")
    env["FORGE"] = forge
    if token:
        env = _to(server, env)
    assert main(env) == 2
    err = capfd.readouterr()
    what = "a FIFO (named pipe)" if forge == "fifo" else "a symbolic link"
    assert what in err.out + err.err
    outputs = _outputs(env)
    assert outputs["results-dir"] == "proj/mlcheck-results" and outputs["failed"] == "0"
