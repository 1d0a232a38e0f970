"""mlcheck.action.main: inputs, auto resolution, and whole action runs with the real CLI.

The end-to-end cases run ``mlcheck run`` as a real subprocess on a small project written here
(pure-Python tests: the action's logic does not depend on torch), with real GITHUB_OUTPUT and
GITHUB_STEP_SUMMARY files and a real event payload.
"""

from __future__ import annotations

import os
from pathlib import Path

import action_runs
import pytest
from action_runs import (
    REPO,
    SHA,
    action_environ,
    action_outputs,
    commit_all,
    pr_payload,
    to_server,
)
from github_server import ACTIONS_BOT, GitHubServer

from mlcheck.action.inputs import Inputs, cli_args, input_env_name, plan
from mlcheck.action.main import give_back, main, should_publish
from mlcheck.errors import UsageError
from mlcheck.github.event import parse_event

# the action's fixtures (a workspace, the GitHub API with a tracking issue), for this module
server = action_runs.server
workspace = action_runs.workspace


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
        (
            "pull_request",
            {"action": "opened", "pull_request": pr_payload(7, "a/fork")},
            "run",
            "fast",
        ),
        ("schedule", {"schedule": "0 3 * * *"}, "run", "all"),
        ("workflow_dispatch", {"inputs": {"sha": SHA, "pr": "7", "tier": "gpu"}}, "run", "gpu"),
        ("workflow_dispatch", {"inputs": {"sha": SHA, "pr": "7"}}, "run", "real,gpu"),
        (
            "pull_request_target",
            {"action": "labeled", "pull_request": pr_payload(7, "a/b")},
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
        {"action": "labeled", "pull_request": pr_payload(7, "a/b")},
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
    fork = parse_event("pull_request", {"pull_request": pr_payload(3, "someone/fork")}, env)
    same = parse_event("pull_request", {"pull_request": pr_payload(3, REPO["full_name"])}, env)
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
    env = action_environ(workspace, "push", {"after": SHA}, working_directory="proj")
    code = main(env)
    out = capfd.readouterr().out
    assert code == 1  # test_breaks failed
    assert action_outputs(env) == {
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
    env = action_environ(
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
    assert action_outputs(env)["failed"] == "1"
    assert "::group::install" in capfd.readouterr().out
    if os.geteuid() == 0:
        for path in (workspace / "proj" / "mlcheck-results").iterdir():
            assert (path.stat().st_uid, path.stat().st_gid) == (1234, 2345), path


def test_a_failed_install_fails_the_step_whatever_fail_on_says(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = action_environ(
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
    assert action_outputs(env)["results-dir"] == "proj/mlcheck-results"  # outputs are still written
    assert not (workspace / "proj" / "mlcheck-results").exists()  # and no tests ran


def test_a_bad_input_is_an_annotated_usage_error(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = action_environ(workspace, "push", {"after": SHA}, comment="loud")
    assert main(env) == 2
    assert "::error::mlcheck: input `comment: loud`" in capfd.readouterr().out


@pytest.mark.parametrize(
    ("event", "payload", "tier", "said"),
    [
        ("push", {"after": SHA}, "real,gpus", "input `tier`: unknown tier 'gpus'"),
        (
            "workflow_dispatch",
            {"inputs": {"sha": SHA, "pr": "7", "tier": "fats"}},
            "auto",
            "workflow_dispatch input `tier`: unknown tier 'fats'",
        ),
    ],
)
def test_a_bad_tier_fails_the_step_before_install_runs(
    workspace: Path,
    capfd: pytest.CaptureFixture[str],
    event: str,
    payload: dict[str, object],
    tier: str,
    said: str,
) -> None:
    """A typo in `tier:` (or in the dispatch's `tier`) is a usage error before any project code:
    the install command never runs (it used to run, and `mlcheck run` refused the tier after)."""
    env = action_environ(
        workspace,
        event,
        payload,
        working_directory="proj",
        tier=tier,
        install="echo installed > install-marker.txt",
    )
    assert main(env) == 2
    out = capfd.readouterr().out
    assert f"::error::mlcheck: {said}: use fast, real, gpu" in out
    assert "::group::install" not in out
    assert not (workspace / "proj" / "install-marker.txt").exists()


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
    payload = {"action": "synchronize", "pull_request": pr_payload(pr, REPO["full_name"])}
    env = to_server(
        server, action_environ(workspace, "pull_request", payload, working_directory="proj")
    )
    assert main(env) == 1
    out = capfd.readouterr().out
    outputs = action_outputs(env, "issue-url")
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


def test_command_nightly_fetches_the_last_good_nightlys_map_into_results_dir(
    workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """The GPU workflow's `file-map` job: `command: nightly` is `mlcheck nightly fetch`, with
    the action's token, into `results-dir` (handed on as an artifact of the run)."""
    import io
    import zipfile

    from mlcheck.cli import build_parser
    from mlcheck.plugin.selection import FileMap

    run = server.state.add_run("mlcheck-nightly.yml", head_sha=SHA)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("file-map.json", FileMap(SHA, None, {}).to_json())
    server.state.add_artifact(run, "mlcheck-results-nightly", buffer.getvalue())
    payload = {"inputs": {"sha": SHA, "pr": "7"}}
    inputs = {"command": "nightly", "results_dir": "mlcheck-nightly"}
    env = to_server(server, action_environ(workspace, "workflow_dispatch", payload, **inputs))
    args = cli_args(
        Inputs.from_env(env), plan(Inputs.from_env(env), parse_event("push", {}, env), env)
    )
    assert args == ["nightly", "fetch", "--out", "mlcheck-nightly"]
    build_parser().parse_args(args)
    assert main(env) == 0
    assert FileMap.read(workspace / "mlcheck-nightly" / "file-map.json").commit == SHA
    out = capfd.readouterr().out
    assert f"nightly run #1 of {SHA[:7]}" in out and server.token not in out


def test_fork_pull_request_posts_nothing_but_still_compares(
    workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    pr = server.state.add_pull(head_sha=SHA, head_repo="someone/ml-app")
    payload = {"action": "opened", "pull_request": pr_payload(pr, "someone/ml-app")}
    env = to_server(
        server, action_environ(workspace, "pull_request", payload, working_directory="proj")
    )
    assert main(env) == 1
    out = capfd.readouterr().out
    assert server.count(COMMENTS) == 0 and not server.state.comments_on(pr)
    assert "read-only token" in out and "workflow_run" in out
    outputs = action_outputs(env)
    assert outputs["comment-url"] == "" and outputs["new-failures"] == "1"
    assert Path(env["GITHUB_STEP_SUMMARY"]).read_text().count("· mlcheck · `fast`") == 1
    assert server.counts() == {"GET /repos/{owner}/{repo}/issues": 1}  # the base digest only


def test_a_refused_publish_keeps_the_verdict_and_the_summary(
    workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    from github_server import Identity

    pr = server.state.add_pull(head_sha=SHA)
    payload = {"action": "opened", "pull_request": pr_payload(pr, REPO["full_name"])}
    env = to_server(
        server, action_environ(workspace, "pull_request", payload, working_directory="proj")
    )
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
    assert action_outputs(env)["failed"] == "1" and action_outputs(env)["comment-url"] == ""
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
        "pull_request": pr_payload(pr, "someone/ml-app"),
    }
    env = to_server(server, action_environ(workspace, "pull_request_target", payload))
    commit_all(workspace)  # the base branch's checkout (a workspace at no known commit: refused)
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
    outputs = action_outputs(env, "scheduled")
    assert outputs["scheduled"] == "true"
    (comment,) = server.state.comments_on(pr)
    assert outputs["comment-url"].endswith(f"#issuecomment-{comment['id']}")
    assert f"GPU run scheduled for `{SHA[:7]}` by @maint" in comment["body"]
    assert not (workspace / "mlcheck-results").exists()  # nothing ran


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
    payload = {"action": "synchronize", "pull_request": pr_payload(pr, REPO["full_name"])}
    env = to_server(
        server, action_environ(workspace, "pull_request", payload, working_directory="proj")
    )
    env["INPUT_FAIL-ON"] = "never"  # refused results fail the step whatever fail-on says
    assert main(env) == 2
    out = capfd.readouterr()
    (comment,) = server.state.comments_on(pr)
    sections = sticky.parse_sections(comment["body"])
    assert sections["real,gpu"] == gpu  # the GPU section is untouched
    assert "Results not published · `fast`" in sections["fast"]
    assert "claim the section 'real,gpu'" in sections["fast"]
    assert "claim the section 'real,gpu'" in out.err
    assert action_outputs(env)["passed"] == "0"  # nothing of the forged results became an output


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
    payload = {"action": "synchronize", "pull_request": pr_payload(pr, REPO["full_name"])}
    env = action_environ(
        workspace, "pull_request", payload, working_directory="proj", fail_on="never"
    )
    env["FORGE"] = forge
    if token:
        env = to_server(server, env)
    assert main(env) == 2
    err = capfd.readouterr()
    what = "a FIFO (named pipe)" if forge == "fifo" else "a symbolic link"
    assert what in err.out + err.err
    outputs = action_outputs(env)
    assert outputs["results-dir"] == "proj/mlcheck-results" and outputs["failed"] == "0"
