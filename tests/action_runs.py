"""A run of the GitHub Action on a small project: its workspace, its environment, its outputs,
and the GitHub API it talks to; shared by tests/action/test_main.py and test_sandbox.py.

Fixtures are imported into each test module that uses them (``server`` here, with a tracking
issue, is not the payloads' repository of tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from github_server import ACTIONS_BOT, GitHubServer

from mlcheck.action.inputs import INPUT_DEFAULTS, input_env_name
from mlcheck.github.workflow import read_output
from mlcheck.publish import BASE_KEY, base_digests, issue_body
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


def pr_payload(number: int, head_repo: str) -> dict[str, object]:
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


def action_environ(
    ws: Path, event: str, payload: dict[str, object], **inputs: str
) -> dict[str, str]:
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


def commit_all(folder: Path) -> str:
    """Make ``folder`` a git checkout of one commit of its files; its SHA."""
    import subprocess

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(folder)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return head.stdout.strip()


def action_outputs(env: dict[str, str], *more: str) -> dict[str, str]:
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


def to_server(server: GitHubServer, env: dict[str, str]) -> dict[str, str]:
    """Point the action at the local GitHub API with a workflow token."""
    return env | {"GITHUB_API_URL": server.url, input_env_name("github-token"): server.token}
