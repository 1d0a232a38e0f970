"""`mlcheck schedule` on pull_request_target labeled events, against the local GitHub server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from github_server import ACTIONS_BOT, GitHubServer, Identity
from github_server.payloads import EVENTS, HEAD, PR, REPO

from mlcheck.action.label_gate import base_safety
from mlcheck.cli import main
from mlcheck.report import sticky
from mlcheck.results import schema as results
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

PUSHED = "c" * 40  # a push after the label
GPU = "real,gpu"
FAST_OPTS = ["--settle", "0", "--backoff", "0.001", "--max-wait", "1", "--retries", "3"]

REMOVE_LABEL = "DELETE /repos/{owner}/{repo}/issues/{issue_number}/labels/{name}"
PERMISSION = "GET /repos/{owner}/{repo}/collaborators/{username}/permission"
DISPATCH = "POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches"


@pytest.fixture
def pull() -> dict[str, object]:
    """The labeled payload's PR comes from a fork and carries the GPU label."""
    return {"head_repo": "mallory/ml-app", "labels": ["mlcheck:gpu"]}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The base branch's checkout, with a manifest that allows pickles for one model."""
    ws = tmp_path / "base"
    ws.mkdir()
    (ws / "pyproject.toml").write_text(
        "[tool.mlcheck.models]\n"
        '"org/legacy-bin" = { revision = "main", needs = "weights", allow_pickle = true }\n'
        '"org/safe" = { revision = "main" }\n'
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(ws)]
    subprocess.run([*git, "init", "-q"], check=True)  # the scheduler reads its HEAD (fails closed)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    return ws


@pytest.fixture
def labeled(
    server: GitHubServer, tmp_path: Path, no_github_env: pytest.MonkeyPatch, workspace: Path
) -> Path:
    """The Actions environment of the scheduler job; returns the GITHUB_OUTPUT file."""
    monkeypatch = no_github_env
    output = tmp_path / "github_output"
    for key, value in {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request_target",
        "GITHUB_EVENT_PATH": str(EVENTS / "pull_request_target_labeled.json"),
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_SHA": "9049f1265b7d61be4a8904a9a27120d2064dab3b",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_SERVER_URL": "https://github.localhost",
        "GITHUB_API_URL": server.url,
        "GITHUB_TOKEN": server.token,
        "GITHUB_OUTPUT": str(output),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(workspace)
    return output


def run_schedule(gh: GitHubServer, *args: str) -> tuple[int, int]:
    """Exit code and the number of API requests it made."""
    before = gh.count()
    code = main(["schedule", *args, *FAST_OPTS])
    return code, gh.count() - before


def gpu_section(gh: GitHubServer) -> str:
    found = [
        c
        for c in gh.state.comments_on(PR)
        if c["user"] == ACTIONS_BOT and sticky.is_sticky(str(c["body"]))
    ]
    assert len(found) == 1
    return sticky.parse_sections(str(found[0]["body"]))[GPU]


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.mark.parametrize("role", ["write", "maintain", "admin"])
def test_maintainer_label_dispatches_the_pinned_head(
    server: GitHubServer, labeled: Path, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.state.collaborators["mona"] = role
    code, requests = run_schedule(server)
    assert code == 0
    assert server.state.removed_labels == [(PR, "mlcheck:gpu")]
    # The commit the label event carries: the one the maintainer saw.
    assert server.state.dispatches == [
        {
            "workflow": "mlcheck-gpu.yml",
            "ref": "main",
            "inputs": {"sha": HEAD, "pr": str(PR), "tier": GPU},
            "by": ACTIONS_BOT,
        }
    ]
    text = gpu_section(server)
    assert f"GPU run scheduled for `{HEAD[:7]}` by @mona" in text
    page = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    assert (
        'href="https://github.localhost/octo-org/ml-app/actions/workflows/mlcheck-gpu.yml'
        "?query=event%3Aworkflow_dispatch" in page
    )
    assert "org/legacy-bin" in text and "allow\\_pickle" in text  # from the base manifest
    assert outputs(labeled) == {
        "scheduled": "true",
        "sha": HEAD,
        "comment-url": outputs(labeled)["comment-url"],
    }
    assert f"for {HEAD[:7]}" in capsys.readouterr().out
    # remove label, permission, PR, dispatch, then list + create + list for the comment
    assert requests == 7
    print(f"\nschedule, dispatched: {requests} requests")


# README security model: only maintainers start GPU runs; the label is removed either way.
@pytest.mark.parametrize("role", ["read", "triage", None])
def test_outsider_label_is_removed_and_nothing_runs(
    server: GitHubServer, labeled: Path, role: str | None
) -> None:
    if role:
        server.state.collaborators["mona"] = role
    code, requests = run_schedule(server)
    assert code == 0
    assert server.state.removed_labels == [(PR, "mlcheck:gpu")]
    assert server.state.dispatches == []
    text = gpu_section(server)
    assert "GPU run not scheduled" in text
    assert f"they have `{role or 'read'}`" in text  # strangers read a public repository
    assert "write, maintain or admin" in text
    assert outputs(labeled)["scheduled"] == "false"
    assert requests == 5  # remove label, permission, list + create + list
    print(f"\nschedule, refused: {requests} requests")


def test_private_repository_stranger_is_refused(server: GitHubServer, labeled: Path) -> None:
    server.state.private = True
    assert run_schedule(server)[0] == 0
    assert server.state.dispatches == [] and "they have `none`" in gpu_section(server)


def test_a_different_label_does_nothing(
    server: GitHubServer, labeled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = json.loads((EVENTS / "pull_request_target_labeled.json").read_text())
    payload["label"]["name"] = "bug"
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(path))
    server.state.collaborators["mona"] = "admin"
    assert run_schedule(server) == (0, 0)
    assert server.state.removed_labels == [] and server.state.dispatches == []
    assert not server.state.comments
    # A configured label other than the default is honoured.
    server.state.issues[PR]["labels"].append("bug")
    code, _ = run_schedule(server, "--label", "bug", "--tier", "gpu")
    assert code == 0 and server.state.dispatches[0]["inputs"]["tier"] == "gpu"


def test_closed_pr_is_refused(server: GitHubServer, labeled: Path) -> None:
    server.state.collaborators["mona"] = "write"
    server.state.issues[PR]["state"] = "closed"
    assert run_schedule(server)[0] == 0
    assert server.state.dispatches == [] and "the PR is closed" in gpu_section(server)


def test_missing_actions_permission_exits_3_and_names_it(
    server: GitHubServer,
    labeled: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = server.add_token(
        "ghs_noActionsTOKEN0123", Identity(ACTIONS_BOT, write=frozenset({"pull_requests"}))
    )
    monkeypatch.setenv("GITHUB_TOKEN", token)
    server.state.collaborators["mona"] = "write"
    assert run_schedule(server)[0] == 3
    err = capsys.readouterr()
    assert "actions: write" in err.err and token not in err.out + err.err
    assert server.state.removed_labels == [(PR, "mlcheck:gpu")]  # one label = one try
    assert outputs(labeled)["scheduled"] == "false"


def test_other_events_are_a_usage_error(
    server: GitHubServer, labeled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(EVENTS / "pull_request.json"))
    assert run_schedule(server) == (2, 0)


def _git(folder: Path, *args: str) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(folder)]
    return subprocess.run([*git, *args], check=True, capture_output=True, text=True).stdout.strip()


# README security model: the scheduler reads the base checkout; a PR-head workspace is refused.
def test_safety_options_come_from_the_base_checkout_never_the_pr(workspace: Path) -> None:
    safety = base_safety(workspace)
    assert safety.allow_pickle == ("org/legacy-bin",) and safety.trust_remote_code == ()
    assert safety.source == "pyproject.toml"
    # A workspace at the PR's head means the workflow checked out PR code: refused.
    head = _git(workspace, "rev-parse", "HEAD")
    from mlcheck.errors import UsageError

    with pytest.raises(UsageError, match="never the PR"):
        base_safety(workspace, head)
    assert base_safety(workspace, "0" * 40).allow_pickle == ("org/legacy-bin",)


# README security model: the head check reads HEAD as data and fails closed.
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a checkout owned by another uid")
def test_head_check_on_a_checkout_another_user_owns_fails_closed(
    workspace: Path, tmp_path: Path
) -> None:
    """As in the action's container: root runs the scheduler in a checkout owned by the
    runner's uid 1001, where git itself refuses ("dubious ownership"). The check reads HEAD
    as data, in every layout git leaves, and refuses what it cannot read."""
    from mlcheck.action.label_gate import git_head
    from mlcheck.errors import UsageError

    head = _git(workspace, "rev-parse", "HEAD")
    for path in [workspace, *workspace.rglob("*")]:
        os.lchown(path, 1001, 1001)
    dubious = subprocess.run(
        ["git", "-C", str(workspace), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    assert dubious.returncode != 0 and "dubious ownership" in dubious.stderr  # the old None
    with pytest.raises(UsageError, match="never the PR"):
        base_safety(workspace, head)  # a branch's loose ref
    git_dir = workspace / ".git"
    subprocess.run(["git", "-C", str(workspace), "-c", "safe.directory=*", "pack-refs", "--all"])
    assert not any((git_dir / "refs" / "heads").iterdir())  # only in packed-refs now
    assert git_head(workspace) == head
    (git_dir / "HEAD").write_text(head + "\n")  # detached, as actions/checkout leaves it
    assert git_head(workspace) == head
    # a worktree: .git is a file naming its gitdir, refs live in the common dir
    moved = tmp_path / "elsewhere.git"
    git_dir.rename(moved)
    (workspace / ".git").write_text(f"gitdir: {moved}\n")
    (moved / "HEAD").write_text("ref: refs/heads/master\n")
    subprocess.run(["git", "--git-dir", str(moved), "-c", "safe.directory=*", "update-ref",
                    "refs/heads/master", head], check=True)  # fmt: skip
    assert git_head(workspace) == head
    # what cannot be read is refused, never taken as "not the PR"
    (workspace / ".git").unlink()
    (workspace / ".git").symlink_to(moved)
    with pytest.raises(UsageError, match=r"cannot tell which commit.*symbolic link"):
        base_safety(workspace, head)
    (workspace / ".git").unlink()
    with pytest.raises(UsageError, match="cannot tell which commit"):
        base_safety(workspace, "0" * 40)  # no checkout at all
    moved.rename(git_dir)
    (git_dir / "HEAD").unlink()
    (git_dir / "HEAD").symlink_to(tmp_path / "elsewhere-head")
    (tmp_path / "elsewhere-head").write_text("0" * 40 + "\n")
    with pytest.raises(UsageError, match=r"cannot tell which commit.*symbolic link"):
        base_safety(workspace, head)
    (git_dir / "HEAD").unlink()
    (git_dir / "HEAD").write_text("ref: refs/heads/../../../../etc/passwd\n")
    with pytest.raises(UsageError, match="HEAD names no commit"):
        base_safety(workspace, head)


def test_label_to_results_end_to_end_with_a_moved_head(
    server: GitHubServer, labeled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Label -> dispatch -> the GPU job's results published; the PR moved meanwhile."""
    server.state.collaborators["mona"] = "maintain"
    assert run_schedule(server)[0] == 0
    inputs = server.state.dispatches[0]["inputs"]
    assert "scheduled" in gpu_section(server)

    server.state.pulls[PR]["head_sha"] = "d" * 40  # pushed while the GPU job ran
    payload = {"inputs": inputs, "ref": "refs/heads/main", "repository": {"full_name": REPO}}
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps(payload))
    monkeypatch.setenv("GITHUB_EVENT_NAME", "workflow_dispatch")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    out = tmp_path / "gpu-results"
    gpu_test = TestResult("tests/test_gpu.py::test_cuda", Outcome.PASSED, tier="gpu")
    results.write(RunResults(RunInfo(tiers=("real", "gpu"), sha=inputs["sha"]), (gpu_test,)), out)
    assert main(["publish", str(out), *FAST_OPTS]) == 0
    text = gpu_section(server)
    assert "GPU run scheduled" not in text and "1 passed" in text
    assert f"results are for `{HEAD[:7]}`" in text and "moved to `ddddddd`" in text


# --- attacks on the gate (issue 9): each must dispatch nothing


# README security model: GPU runs are for the commit the maintainer labeled.
def test_label_then_push_dispatches_nothing(server: GitHubServer, labeled: Path) -> None:
    """The author pushes between the label and the scheduler: the new commit never runs."""
    server.state.collaborators["mona"] = "admin"
    server.state.pulls[PR]["head_sha"] = PUSHED
    code, requests = run_schedule(server)
    assert code == 0
    assert server.state.dispatches == []
    text = gpu_section(server)
    assert f"the PR moved to `{PUSHED[:7]}` after the label" in text
    assert "label it again to test the new head" in text
    assert outputs(labeled)["scheduled"] == "false"
    assert requests == 6  # remove label, permission, PR, list + create + list


# README security model: a re-run of the scheduler job dispatches nothing.
def test_rerun_of_a_used_label_event_dispatches_nothing(
    server: GitHubServer, labeled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.state.collaborators["mona"] = "admin"
    assert run_schedule(server)[0] == 0
    assert len(server.state.dispatches) == 1
    # Re-run of the same job: the label is gone, the payload is the old one.
    assert run_schedule(server)[0] == 0
    assert len(server.state.dispatches) == 1
    # Even with the label back on the PR, attempt 2 of the old run dispatches nothing.
    server.state.issues[PR]["labels"].append("mlcheck:gpu")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")
    assert run_schedule(server) == (0, 0)
    assert len(server.state.dispatches) == 1
    assert "scheduled" in gpu_section(server)  # the winner's section is left alone


# README security model: a label already gone dispatches nothing.
def test_a_label_no_longer_on_the_pr_dispatches_nothing(
    server: GitHubServer, labeled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.state.collaborators["mona"] = "admin"
    server.state.issues[PR]["labels"].remove("mlcheck:gpu")
    code, requests = run_schedule(server)
    assert (code, requests, server.state.dispatches) == (0, 1, [])
    assert "no longer on PR #17" in capsys.readouterr().out
    assert outputs(labeled)["scheduled"] == "false"


# README security model: of several racing label events at most one dispatches.
def test_racing_label_events_dispatch_at_most_once(server: GitHubServer, labeled: Path) -> None:
    import threading

    from mlcheck.action.label_gate import ScheduleOptions, schedule
    from mlcheck.github import GitHubClient
    from mlcheck.github.event import load_event

    server.state.collaborators["mona"] = "admin"
    event = load_event(os.environ)
    barrier = threading.Barrier(4)
    statuses: list[str] = []

    def one() -> None:
        with GitHubClient(server.token, api_url=server.url, backoff=0.001) as client:
            barrier.wait()
            result = schedule(event, client, ScheduleOptions(settle=0), token=server.token)
            statuses.append(result.status)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(statuses) == ["dispatched", "ignored", "ignored", "ignored"]
    assert [d["inputs"]["sha"] for d in server.state.dispatches] == [HEAD]
