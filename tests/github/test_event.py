"""Event parsing from real-shaped payloads (tests/data/events/), and what `auto` resolves to."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from github_server import GitHubServer
from github_server.payloads import EVENTS, HEAD

from mlcheck.errors import UsageError
from mlcheck.github import GitHubClient
from mlcheck.github.event import Event, find_pr_number, load_event, parse_event

PUSHED = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"


def env(name: str, payload_file: str, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": name,
        "GITHUB_EVENT_PATH": str(EVENTS / payload_file),
        "GITHUB_REPOSITORY": "octo-org/ml-app",
        "GITHUB_SHA": extra.pop("sha", "f" * 40),
        "GITHUB_REF": extra.pop("ref", "refs/heads/main"),
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_API_URL": "https://api.github.com",
        "GITHUB_RUN_ID": "9876543210",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_ACTOR": extra.pop("actor", "alice"),
        **extra,
    }


@pytest.mark.parametrize(
    ("name", "payload", "command", "tier"),
    [
        ("push", "push.json", "run", "fast"),
        ("pull_request", "pull_request.json", "run", "fast"),
        ("pull_request", "pull_request_fork.json", "run", "fast"),
        ("pull_request_target", "pull_request_target_labeled.json", "schedule", "real,gpu"),
        ("workflow_dispatch", "workflow_dispatch.json", "run", "real,gpu"),
        ("schedule", "schedule.json", "run", "all"),
        ("workflow_run", "workflow_run.json", "publish", "fast"),
        ("workflow_run", "workflow_run_fork.json", "publish", "fast"),
    ],
)
def test_auto_command_and_tier_per_event(name: str, payload: str, command: str, tier: str) -> None:
    event = load_event(env(name, payload))
    assert (event.name, event.auto_command, event.auto_tier) == (name, command, tier)
    assert event.repository == "octo-org/ml-app"
    assert event.run_url == "https://github.com/octo-org/ml-app/actions/runs/9876543210"


def test_push_reports_against_the_pushed_commit_and_has_no_pr_in_the_payload() -> None:
    event = load_event(env("push", "push.json", sha=PUSHED, ref="refs/heads/swap-head"))
    assert event.head_sha == PUSHED
    assert event.pr_number is None
    assert not event.read_only_token


def test_pull_request_reports_against_the_head_not_the_merge_commit() -> None:
    event = load_event(env("pull_request", "pull_request.json", sha="e" * 40))
    assert event.head_sha == HEAD
    assert event.pr_number == 17
    assert not event.is_fork and not event.read_only_token


def test_fork_pull_request_has_a_read_only_token() -> None:
    event = load_event(env("pull_request", "pull_request_fork.json", actor="mallory"))
    assert event.is_fork and event.read_only_token
    assert event.pull_request is not None and event.pull_request.head_repo == "mallory/ml-app"


def test_dependabot_pull_requests_also_get_a_read_only_token() -> None:
    event = load_event(env("pull_request", "pull_request.json", actor="dependabot[bot]"))
    assert not event.is_fork and event.read_only_token


def test_pull_request_target_labeled_names_the_label_and_who_added_it() -> None:
    event = load_event(env("pull_request_target", "pull_request_target_labeled.json"))
    assert (event.action, event.label, event.sender) == ("labeled", "mlcheck:gpu", "mona")
    assert event.pr_number == 17 and event.head_sha == HEAD
    assert event.default_branch == "main"
    assert not event.read_only_token  # pull_request_target runs with the base's token


def test_workflow_dispatch_from_the_scheduler_pins_sha_and_pr() -> None:
    event = load_event(env("workflow_dispatch", "workflow_dispatch.json"))
    assert event.head_sha == HEAD and event.pr_number == 17
    assert dict(event.inputs) == {"sha": HEAD, "pr": "17", "tier": "auto"}
    with pytest.raises(TypeError):
        event.inputs["sha"] = "0" * 40  # type: ignore[index]


def test_workflow_dispatch_tier_input_wins_over_auto() -> None:
    payload = {"inputs": {"sha": HEAD, "pr": "17", "tier": "gpu"}}
    event = parse_event("workflow_dispatch", payload, {"GITHUB_REPOSITORY": "o/r"})
    assert event.auto_tier == "gpu"


@pytest.mark.parametrize(
    "inputs",
    [{"sha": "abc1234"}, {"sha": "HEAD~1"}, {"pr": "17; rm -rf /"}, {"tier": "fast gpu"}],
)
def test_workflow_dispatch_inputs_are_checked(inputs: dict[str, str]) -> None:
    with pytest.raises(UsageError, match="workflow_dispatch input"):
        parse_event("workflow_dispatch", {"inputs": inputs}, {"GITHUB_REPOSITORY": "o/r"})


def test_workflow_run_of_a_same_repo_pr_carries_the_pr() -> None:
    event = load_event(env("workflow_run", "workflow_run.json"))
    assert event.workflow_run is not None
    assert event.workflow_run.conclusion == "failure" and event.workflow_run.event == "pull_request"
    assert event.pr_number == 17 and event.head_sha == HEAD


def test_workflow_run_of_a_fork_pr_finds_the_pr_through_the_api() -> None:
    event = load_event(env("workflow_run", "workflow_run_fork.json"))
    assert event.pr_number is None
    with GitHubServer() as gh:
        gh.state.owner, gh.state.name = "octo-org", "ml-app"
        gh.state.add_pull(head_sha="1" * 40)
        gh.state.add_pull(
            head_sha=HEAD, head_ref="swap-head", head_repo="mallory/ml-app", state="closed"
        )
        number = gh.state.add_pull(
            head_sha=HEAD, head_ref="swap-head", head_repo="mallory/ml-app", user="mallory"
        )
        with GitHubClient(gh.token, api_url=gh.url, backoff=0.001) as client:
            # GitHub's commit -> PR lookup does not see fork commits: the head filter does.
            assert client.pulls_for_commit("octo-org/ml-app", HEAD) == []
            assert find_pr_number(event, client) == number
            # The PR moved on since the run: the results are not for its head any more.
            gh.state.pulls[number]["head_sha"] = "2" * 40
            assert find_pr_number(event, client) is None
        gh.assert_clean()


def test_push_finds_the_open_pr_of_the_pushed_commit() -> None:
    event = load_event(env("push", "push.json", sha=PUSHED))
    with GitHubServer() as gh:
        gh.state.owner, gh.state.name = "octo-org", "ml-app"
        with GitHubClient(gh.token, api_url=gh.url, backoff=0.001) as client:
            assert find_pr_number(event, client) is None  # a push with no PR
            closed = gh.state.add_pull(head_sha=PUSHED, state="closed")
            assert find_pr_number(event, client) is None
            number = gh.state.add_pull(head_sha=PUSHED)
            assert number != closed and find_pr_number(event, client) == number
        assert gh.count("GET /repos/{owner}/{repo}/commits/{commit_sha}/pulls") == 3
        gh.assert_clean()


def test_outside_github_actions_it_is_a_local_run() -> None:
    event = load_event({})
    assert (event.name, event.auto_command, event.auto_tier) == ("local", "run", "fast")


def test_unknown_events_ask_for_an_explicit_command() -> None:
    event = parse_event("issue_comment", {}, {"GITHUB_REPOSITORY": "o/r"})
    with pytest.raises(UsageError, match="set `command:`"):
        _ = event.auto_command


def test_unreadable_payload_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "event.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="cannot read the event payload"):
        load_event(
            {"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(bad), "GITHUB_REPOSITORY": "o/r"}
        )


def test_event_is_frozen() -> None:
    event = load_event(env("push", "push.json"))
    with pytest.raises(AttributeError):
        event.name = "schedule"  # type: ignore[misc]
    assert isinstance(event, Event)
    assert json.loads((EVENTS / "push.json").read_text())["after"] == PUSHED


# README security model: the event payload is read as untrusted data (an earlier step's PR
# code owns the runner's folder): a FIFO, a link or an oversized file is refused, unread.
@pytest.mark.parametrize("kind", ["fifo", "link", "huge"])
def test_an_event_payload_that_is_not_a_plain_file_is_refused_unread(
    tmp_path: Path, kind: str
) -> None:
    from mlcheck.github.event import MAX_EVENT_BYTES

    path = tmp_path / "event.json"
    if kind == "fifo":
        os.mkfifo(path)  # a blocking read would never return
    elif kind == "link":
        secret = tmp_path / "secret"
        secret.write_text('{"pull_request": {"number": 1}}')
        path.symlink_to(secret)
    else:
        with path.open("wb") as f:
            f.truncate(MAX_EVENT_BYTES + 1)
    env = {
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_REPOSITORY": "o/r",
    }
    with pytest.raises(UsageError, match="cannot read the event payload"):
        load_event(env)
