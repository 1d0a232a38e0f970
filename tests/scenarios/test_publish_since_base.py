"""A base digest recorded by a push to the default branch, read by a PR's publish: tests that
stopped running and infrastructure failures, through the public `mlcheck publish` CLI against
the local OpenAPI-checked GitHub server."""

from __future__ import annotations

from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from github_server import ACTIONS_BOT, GitHubServer
from github_server.payloads import EVENTS, HEAD, MAIN, PR

from mlcheck.cli import main
from mlcheck.report import sticky
from mlcheck.results import schema as results
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

FAST_OPTS = ["--settle", "0", "--backoff", "0.001", "--max-wait", "1", "--retries", "3"]


def _env(
    monkeypatch: pytest.MonkeyPatch, gh: GitHubServer, tmp: Path, event: str, **kw: str
) -> None:
    values = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(EVENTS / f"{event}.json"),
        "GITHUB_REPOSITORY": "octo-org/ml-app",
        "GITHUB_SHA": HEAD,
        "GITHUB_REF": "refs/pull/17/merge",
        "GITHUB_SERVER_URL": "https://github.localhost",
        "GITHUB_API_URL": gh.url,
        "GITHUB_RUN_ID": "4242",
        "GITHUB_ACTOR": "alice",
        "GITHUB_TOKEN": gh.token,
        "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
        "GITHUB_OUTPUT": str(tmp / "output"),
        **kw,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def _test(name: str, outcome: Outcome = Outcome.PASSED, **kw: object) -> TestResult:
    return TestResult(f"tests/test_m.py::{name}", outcome, file="tests/test_m.py", line=3, **kw)  # type: ignore[arg-type]


def _publish(folder: Path, sha: str, *tests: TestResult) -> int:
    results.write(RunResults(RunInfo(tiers=("fast",), sha=sha), tests), folder)
    return main(["publish", str(folder), *FAST_OPTS])


def test_a_pr_shows_what_stopped_running_since_the_push_to_main(
    server: GitHubServer, tmp_path: Path, no_github_env: pytest.MonkeyPatch
) -> None:
    gh, monkeypatch = server, no_github_env

    # a push to the default branch records the base digest (in the tracking issue)
    _env(monkeypatch, gh, tmp_path, "push", GITHUB_SHA=MAIN, GITHUB_REF="refs/heads/main")
    base = [_test("test_a"), _test("test_fp16", duration=0.2), _test("test_deleted")]
    base.append(_test("test_hub"))
    assert _publish(tmp_path / "main", MAIN, *base) == 0
    assert [i for i in gh.state.issues.values() if not i["is_pr"]]  # the tracking issue

    # the PR: one test newly skipped, one deleted, one failing because the hub was down
    _env(monkeypatch, gh, tmp_path, "pull_request")
    hub = "OSError: We couldn't connect to 'https://huggingface.co' to load the files"
    pr = (
        _test("test_a"),
        _test("test_fp16", Outcome.SKIPPED, message="test requires a GPU"),
        _test("test_hub", Outcome.FAILED, message=hub, failure_kind="hub"),
    )
    assert _publish(tmp_path / "pr", HEAD, *pr) == 0
    comments = [
        c
        for c in gh.state.comments_on(PR)
        if c["user"] == ACTIONS_BOT and sticky.is_sticky(str(c["body"]))
    ]
    assert len(comments) == 1
    text = sticky.parse_sections(str(comments[0]["body"]))["fast"]
    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    assert (
        "<summary><b>⏸️ Stopped running (2)</b>: 1 skipped — test requires a GPU · "
        "1 no longer collected</summary>" in html
    )
    assert "<li>tests/test_m.py::test_fp16</li>" in html
    # the hub failure is infrastructure: not a new failure, and the outputs say so
    assert "Infrastructure (1): hub 1" in text and "New failures" not in text
    outputs = dict(
        line.split("=", 1) for line in (tmp_path / "output").read_text().splitlines() if "=" in line
    )
    assert outputs["new-failures"] == "0" and outputs["failed"] == "1"
