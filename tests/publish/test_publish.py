"""`mlcheck publish` against the local OpenAPI-checked GitHub server, for every event type."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from github_server import ACTIONS_BOT, Fault, Faults, GitHubServer, Identity
from github_server.payloads import EVENTS, HEAD, MAIN, PR, REPO

from mlcheck import publish
from mlcheck.cli import main
from mlcheck.errors import ResultsError
from mlcheck.redact import ZWSP
from mlcheck.report import sticky
from mlcheck.results import digest
from mlcheck.results import schema as results
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

PUSHED = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
FAST = "fast"
GPU = "real,gpu"

LIST_ISSUES = "GET /repos/{owner}/{repo}/issues"
LIST_COMMENTS = "GET /repos/{owner}/{repo}/issues/{issue_number}/comments"
CREATE_COMMENT = "POST /repos/{owner}/{repo}/issues/{issue_number}/comments"
PATCH_COMMENT = "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}"
CREATE_ISSUE = "POST /repos/{owner}/{repo}/issues"
PATCH_ISSUE = "PATCH /repos/{owner}/{repo}/issues/{issue_number}"
GET_PULL = "GET /repos/{owner}/{repo}/pulls/{pull_number}"

# Requests per publish on each path, filled by the tests and printed at the end (see report).
COSTS: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def print_costs() -> Iterator[None]:
    yield
    if COSTS:
        print("\nrequests per publish:", json.dumps(COSTS, indent=1))


@dataclass
class Actions:
    """The GitHub Actions environment of one step: event, token, summary and output files."""

    gh: GitHubServer
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def event(self, name: str, payload: str | dict[str, object], **extra: str) -> None:
        if isinstance(payload, dict):
            path = self.tmp / f"{name}.json"
            path.write_text(json.dumps(payload))
        else:
            path = EVENTS / payload
        values = {
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": name,
            "GITHUB_EVENT_PATH": str(path),
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_SHA": "e" * 40,
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_SERVER_URL": "https://github.localhost",
            "GITHUB_API_URL": self.gh.url,
            "GITHUB_RUN_ID": "4242",
            "GITHUB_ACTOR": "alice",
            "GITHUB_TOKEN": self.gh.token,
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "GITHUB_OUTPUT": str(self.output),
            **extra,
        }
        for key, value in values.items():
            self.monkeypatch.setenv(key, value)

    @property
    def summary(self) -> Path:
        return self.tmp / "step_summary.md"

    @property
    def output(self) -> Path:
        return self.tmp / "github_output"

    def outputs(self) -> dict[str, str]:
        lines = self.output.read_text().splitlines() if self.output.exists() else []
        return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def actions(server: GitHubServer, tmp_path: Path, no_github_env: pytest.MonkeyPatch) -> Actions:
    return Actions(server, tmp_path, no_github_env)


FAST_OPTS = ["--settle", "0", "--backoff", "0.001", "--max-wait", "1", "--retries", "3"]


def run_publish(gh: GitHubServer, *args: str, label: str | None = None) -> int:
    before = gh.count()
    code = main(["publish", *args, *FAST_OPTS])
    if label:
        COSTS[label] = gh.count() - before
    return code


def write(folder: Path, *tests: TestResult, tiers: tuple[str, ...] = ("fast",), **run: str) -> Path:
    results.write(RunResults(RunInfo(tiers=tiers, sha=run.get("sha", HEAD)), tests), folder)
    return folder


def passed(name: str, tier: str = "fast") -> TestResult:
    return TestResult(f"tests/test_m.py::{name}", Outcome.PASSED, tier=tier, file="tests/test_m.py")


def failed(name: str, tier: str = "fast", message: str = "assert 0") -> TestResult:
    return TestResult(
        f"tests/test_m.py::{name}",
        Outcome.FAILED,
        tier=tier,
        file="tests/test_m.py",
        line=3,
        message=message,
        traceback=f"def {name}():\n>   assert 0\nE   {message}",
    )


def sticky_comments(gh: GitHubServer, number: int = PR) -> list[dict[str, object]]:
    return [
        c
        for c in gh.state.comments_on(number)
        if c["user"] == ACTIONS_BOT and sticky.is_sticky(str(c["body"]))
    ]


def section(gh: GitHubServer, key: str, number: int = PR) -> str:
    found = sticky_comments(gh, number)
    assert len(found) == 1, f"{len(found)} sticky comments"
    return sticky.parse_sections(str(found[0]["body"]))[key]


def html(markdown: str) -> str:
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


def tracking(gh: GitHubServer) -> dict[str, object]:
    found = [
        i
        for i in gh.state.issues.values()
        if not i["is_pr"] and str(i["body"]).startswith(publish.TRACKING_MARKER)
    ]
    assert len(found) == 1, f"{len(found)} tracking issues"
    return found[0]


def add_base(gh: GitHubServer, *tests: TestResult, key: str = FAST) -> int:
    """A tracking issue whose base digest has ``tests`` (as the nightly would have left it)."""
    line = digest.encode(tests, section=key, sha=MAIN)
    body = publish.issue_body({publish.BASE_KEY: line})
    return gh.state.add_issue("mlcheck nightly", body, user=ACTIONS_BOT)


# --- the common path: a PR run's section, compared with the base digest


def test_pull_request_publish_compares_with_the_base_and_costs_4_requests(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gh = actions.gh
    add_base(gh, passed("test_new"), failed("test_old"))
    actions.event("pull_request", "pull_request.json")
    out = write(tmp_path / "r", passed("test_ok"), failed("test_new"), failed("test_old"))

    assert run_publish(gh, str(out), label="pull_request, first publish (creates)") == 0
    assert gh.counts()[CREATE_COMMENT] == 1
    text = section(gh, FAST)
    assert text.index("New failures") < text.index("Already failing on base")
    page = html(text)
    assert '<a href="https://github.localhost/octo-org/ml-app/blob/' + HEAD in page
    assert actions.outputs()["new-failures"] == "1"
    assert actions.outputs()["failed"] == "2"
    assert actions.outputs()["comment-url"].endswith(
        f"/pull/{PR}#issuecomment-" + str(sticky_comments(gh)[0]["id"])
    )
    assert "New failures" in actions.summary.read_text()
    stdout = capsys.readouterr().out
    assert "::error file=tests/test_m.py,line=3,title=new failure" in stdout

    # The common path: the comment exists, nothing to dedupe.
    write(out, passed("test_ok"), passed("test_new"), failed("test_old"))
    assert run_publish(gh, str(out), label="pull_request, common path (updates)") == 0
    assert COSTS["pull_request, common path (updates)"] <= 4
    assert gh.counts()[CREATE_COMMENT] == 1 and gh.counts()[PATCH_COMMENT] == 1
    assert "New failures" not in section(gh, FAST)
    assert run_publish(gh, str(out), label="pull_request, nothing changed") == 0
    assert gh.counts()[PATCH_COMMENT] == 1


def test_sections_of_other_jobs_are_kept(actions: Actions, tmp_path: Path) -> None:
    gh = actions.gh
    gh.state.add_comment(PR, sticky.build_body({GPU: "gpu results"}), ACTIONS_BOT)
    actions.event("pull_request", "pull_request.json")
    assert run_publish(gh, str(write(tmp_path / "r", passed("test_ok")))) == 0
    body = str(sticky_comments(gh)[0]["body"])
    assert sticky.parse_sections(body)[GPU] == "gpu results"
    assert "1 passed" in sticky.parse_sections(body)[FAST]


# --- every event type


def test_push_to_a_pr_branch_comments_on_the_pr_of_that_commit(
    actions: Actions, tmp_path: Path
) -> None:
    gh = actions.gh
    number = gh.state.add_pull(head_sha=PUSHED, head_ref="swap-head")
    actions.event("push", "push.json", GITHUB_SHA=PUSHED, GITHUB_REF="refs/heads/swap-head")
    out = write(tmp_path / "r", failed("test_x"), sha=PUSHED)
    assert run_publish(gh, str(out), label="push to a PR branch") == 0
    assert "1 failure" in section(gh, FAST, number)
    assert not [i for i in gh.state.issues.values() if not i["is_pr"]]  # no base written


def test_push_to_the_default_branch_writes_its_tier_base_digest(
    actions: Actions, tmp_path: Path
) -> None:
    gh = actions.gh
    actions.event("push", "push.json", GITHUB_SHA=MAIN, GITHUB_REF="refs/heads/main")
    out = write(tmp_path / "r", failed("test_broken_on_main"), passed("test_ok"), sha=MAIN)
    assert run_publish(gh, str(out), label="push to default branch, first (creates issue)") == 0
    issue = tracking(gh)
    assert issue["state"] == "closed"  # a push never opens it: only nightly failures do
    base = digest.parse(publish.issue_sections(str(issue["body"]))[publish.BASE_KEY])
    assert set(base) == {FAST}
    assert base[FAST].failed_on_base("tests/test_m.py::test_broken_on_main")
    assert base[FAST].sha == MAIN

    # A later push replaces only its tier's digest, and a PR then compares with it.
    sections = publish.issue_sections(str(issue["body"]))
    gpu_line = digest.encode([failed("test_gpu", "gpu")], section=GPU, sha=MAIN)
    sections[publish.BASE_KEY] += "\n" + gpu_line  # as a GPU run on main would have left it
    issue["body"] = publish.issue_body(sections)
    write(out, passed("test_broken_on_main"), failed("test_ok"), sha=MAIN)
    assert run_publish(gh, str(out), label="push to default branch (updates issue)") == 0
    base = digest.parse(publish.issue_sections(str(tracking(gh)["body"]))[publish.BASE_KEY])
    assert set(base) == {FAST, GPU}
    assert base[FAST].failed_on_base("tests/test_m.py::test_ok")
    assert base[GPU].failed_on_base("tests/test_m.py::test_gpu")

    actions.event("pull_request", "pull_request.json")
    write(out, failed("test_ok"), failed("test_mine"))
    assert run_publish(gh, str(out)) == 0
    text = section(gh, FAST)
    assert "New failures (1)" in text and "Already failing on base (1)" in text


def test_fork_pull_request_with_read_only_token_writes_summary_only(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gh = actions.gh
    gh.state.add_pull(head_sha=HEAD, head_repo="mallory/ml-app")  # 18, the fork PR
    token = gh.add_token("ghs_readonlyTOKEN0123", Identity(ACTIONS_BOT, write=frozenset()))
    actions.event("pull_request", "pull_request_fork.json", GITHUB_TOKEN=token)
    out = write(tmp_path / "r", failed("test_x"))
    assert run_publish(gh, str(out), label="pull_request from a fork (read-only)") == 0
    assert not gh.state.comments
    assert "workflow_run" in capsys.readouterr().out
    assert "1 failure" in actions.summary.read_text()


# README security model: results cannot pick another section.
def test_fork_pr_is_published_from_workflow_run_with_the_artifact_folder(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fork's run uploaded its results; the workflow_run publisher downloaded them."""
    gh = actions.gh
    fork_pr = gh.state.add_pull(head_sha=HEAD, head_ref="swap-head", head_repo="mallory/ml-app")
    artifact = tmp_path / "artifact"
    # Shards unpack into sub-folders; one claims a GPU section it has no say over: refused.
    write(artifact / "shard-1" / "mlcheck-results", passed("test_a"))
    write(artifact / "shard-2" / "mlcheck-results", failed("test_b"), tiers=("real", "gpu"))
    actions.event("workflow_run", "workflow_run_fork.json", GITHUB_SHA=MAIN)
    assert run_publish(gh, str(artifact)) == 2
    assert "claim the section 'real,gpu', but this run publishes under 'fast'" in (
        capsys.readouterr().err
    )
    assert not gh.state.comments_on(fork_pr)  # a fork's run names no PR to say it in
    write(artifact / "shard-2" / "mlcheck-results", failed("test_b"))
    assert run_publish(gh, str(artifact), label="workflow_run of a fork PR") == 0
    found = sticky_comments(gh, fork_pr)
    assert len(found) == 1
    sections = sticky.parse_sections(str(found[0]["body"]))
    assert list(sections) == [FAST]
    assert "❌ 1 failure" in sections[FAST]
    assert f"/blob/{HEAD}/" in sections[FAST]  # links at the run's head, not the results' claim
    assert COSTS["workflow_run of a fork PR"] == 5  # + the PR lookup by head


def test_workflow_run_of_a_same_repo_pr(actions: Actions, tmp_path: Path) -> None:
    gh = actions.gh
    actions.event("workflow_run", "workflow_run.json", GITHUB_SHA=MAIN)
    out = write(tmp_path / "r", passed("test_a"))
    assert run_publish(gh, str(out), label="workflow_run of a same-repo PR") == 0
    assert "1 passed" in section(gh, FAST)


# README security model: the workflow_run publisher posts only after GET /pulls/N
# confirms the head SHA and repository.
def test_workflow_run_naming_a_pr_whose_head_differs_posts_nothing(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's `pull_requests` is not proof: PR #17 has moved on, so nothing is posted."""
    gh = actions.gh
    gh.state.pulls[PR]["head_sha"] = "e" * 40
    actions.event("workflow_run", "workflow_run.json", GITHUB_SHA=MAIN)
    out = write(tmp_path / "r", passed("test_a"))
    assert run_publish(gh, str(out)) == 0
    assert not gh.state.comments_on(PR)
    assert "nothing posted: the workflow_run names PR #17, whose head is eeeeeee" in (
        capsys.readouterr().out
    )


def test_dispatched_gpu_run_reports_into_the_scheduled_section(
    actions: Actions, tmp_path: Path
) -> None:
    gh = actions.gh
    gh.state.add_comment(PR, sticky.build_body({GPU: "GPU run scheduled", FAST: "f"}), ACTIONS_BOT)
    actions.event("workflow_dispatch", "workflow_dispatch.json")
    gpu = TestResult("tests/test_gpu.py::test_fp16", Outcome.PASSED, tier="gpu")
    out = write(tmp_path / "r", gpu, tiers=("real", "gpu"))
    assert run_publish(gh, str(out), label="workflow_dispatch (GPU results)") == 0
    text = section(gh, GPU)
    assert "GPU run scheduled" not in text and "1 passed" in text
    assert section(gh, FAST) == "f"
    assert "WARNING" not in text  # the head did not move


def test_head_moved_after_pinning_says_results_are_for_the_older_commit(
    actions: Actions, tmp_path: Path
) -> None:
    gh = actions.gh
    gh.state.pulls[PR]["head_sha"] = "7" * 40  # pushed after the label
    actions.event("workflow_dispatch", "workflow_dispatch.json")
    out = write(tmp_path / "r", passed("test_gpu", "gpu"), tiers=("real", "gpu"))
    assert run_publish(gh, str(out), label="workflow_dispatch, head moved") == 0
    text = section(gh, GPU)
    assert f"results are for `{HEAD[:7]}`" in text and "moved to `7777777`" in text
    assert "<blockquote" in html(text)


def test_nightly_tracking_issue_lifecycle(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gh = actions.gh
    out = tmp_path / "r"
    all_tiers = ("fast", "real", "gpu")
    actions.event("schedule", "schedule.json", GITHUB_SHA=MAIN)

    # Night 1: one failure -> the issue is created, open.
    write(
        out,
        failed("test_a"),
        passed("test_b", "real"),
        passed("test_c", "gpu"),
        tiers=all_tiers,
        sha=MAIN,
    )
    assert run_publish(gh, str(out), label="nightly, first (creates the issue)") == 0
    issue = tracking(gh)
    assert issue["state"] == "open" and "1 failing" in str(issue["title"])
    assert actions.outputs()["issue-url"].endswith(f"/issues/{issue['number']}")
    body = str(issue["body"])
    assert "First nightly report" in body
    base = digest.parse(publish.issue_sections(body)[publish.BASE_KEY])
    assert set(base) == {"fast,real,gpu", "fast", "real", "gpu", GPU}
    assert base[FAST].counts == {"failed": 1, "not_run": 2}  # as a fast-only run reports
    assert not gh.state.comments

    # Night 2: a new failure next to the old one -> updated, "1 new since the last nightly".
    write(
        out,
        failed("test_a"),
        failed("test_b", "real"),
        passed("test_c", "gpu"),
        tiers=all_tiers,
        sha=MAIN,
    )
    assert run_publish(gh, str(out), label="nightly, update") == 0
    issue = tracking(gh)
    assert issue["state"] == "open" and "2 failing, 1 new" in str(issue["title"])
    nightly = publish.issue_sections(str(issue["body"]))[publish.NIGHTLY_KEY]
    assert "1 new since the last nightly run" in nightly
    assert nightly.index("test_b") < nightly.index("test_a")  # new first
    assert "<h4>🆕 New failures (1)</h4>" in html(nightly)

    # Night 3: all pass -> closed.
    write(
        out,
        passed("test_a"),
        passed("test_b", "real"),
        passed("test_c", "gpu"),
        tiers=all_tiers,
        sha=MAIN,
    )
    assert run_publish(gh, str(out), label="nightly, all pass (closes)") == 0
    issue = tracking(gh)
    assert issue["state"] == "closed" and "all passing" in str(issue["title"])

    # Night 4: failures come back -> the same issue reopens.
    write(out, failed("test_c", "gpu"), tiers=all_tiers, sha=MAIN)
    assert run_publish(gh, str(out), label="nightly, failure again (reopens)") == 0
    assert tracking(gh)["state"] == "open"
    assert gh.count(CREATE_ISSUE) == 1
    assert len(str(tracking(gh)["body"])) <= sticky.MAX_BODY


def test_nightly_issue_from_someone_else_is_ignored(actions: Actions, tmp_path: Path) -> None:
    gh = actions.gh
    forged = publish.issue_body({publish.BASE_KEY: digest.encode([], section=FAST)})
    gh.state.add_issue("mlcheck nightly", forged, user="mallory")
    actions.event("schedule", "schedule.json", GITHUB_SHA=MAIN)
    assert run_publish(gh, str(write(tmp_path / "r", passed("test_a")))) == 0
    assert gh.count(CREATE_ISSUE) == 1
    assert gh.state.issues[PR + 1]["body"] == forged


def test_local_run_posts_nothing(tmp_path: Path, no_github_env: pytest.MonkeyPatch) -> None:
    out = write(tmp_path / "r", failed("t"))
    assert main(["publish", str(out)]) == 0
    assert main(["publish", str(out), "--fail-on", "failures"]) == 1


# --- comment modes


def test_comment_on_failure_and_off(actions: Actions, tmp_path: Path) -> None:
    gh = actions.gh
    actions.event("pull_request", "pull_request.json")
    out = write(tmp_path / "r", passed("test_a"))
    assert run_publish(gh, str(out), "--comment", "on-failure") == 0
    assert not gh.state.comments
    write(out, failed("test_a"))
    assert run_publish(gh, str(out), "--comment", "off") == 0
    assert not gh.state.comments
    assert run_publish(gh, str(out), "--comment", "on-failure") == 0
    assert "1 failure" in section(gh, FAST)
    write(out, passed("test_a"))  # fixed: the existing comment turns green
    assert run_publish(gh, str(out), "--comment", "on-failure") == 0
    assert "1 passed" in section(gh, FAST)


# --- untrusted results


# README security model: size and test-count limits.
def test_oversized_results_are_refused_before_anything_is_posted(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gh = actions.gh
    actions.event("pull_request", "pull_request.json")
    out = write(tmp_path / "r", *(passed(f"test_{i}") for i in range(200)))
    assert run_publish(gh, str(out), "--max-results-mb", "0.01") == 2
    assert "over the 0.01 MiB limit" in capsys.readouterr().err
    assert run_publish(gh, str(out), "--max-tests", "100") == 2
    assert "more than 100 tests" in capsys.readouterr().err
    assert gh.count() == 0


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda d: d["run"].update(tiers=["fast", "evil"]), "run/tiers"),
        (lambda d: d["tests"][0].update(nodeid=["not", "a", "string"]), "tests/0/nodeid"),
        (lambda d: d["tests"][0].update(outcome="hacked"), "hacked"),
        (lambda d: d["tests"][0].update(line=0), "tests/0/line"),
        (lambda d: d.update(tests="nope"), "tests"),
    ],
    ids=["version", "tier", "nodeid-type", "outcome", "line", "tests-type"],
)
def test_results_that_break_the_schema_are_refused(change: object, error: str) -> None:
    data = json.loads(json.dumps(results.to_dict(RunResults(RunInfo(), (passed("test_a"),)))))
    change(data)  # type: ignore[operator]
    with pytest.raises(ResultsError) as e:
        publish.validate(data)
    assert error in str(e.value)


# README security model: symbolic links are refused.
def test_symlinks_and_missing_results_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "results.json").symlink_to(secret)
    with pytest.raises(ResultsError, match="symbolic link"):
        publish.load_untrusted([artifact])
    with pytest.raises(ResultsError, match="no results"):
        publish.load_untrusted([tmp_path / "missing"])
    deep = tmp_path / "deep"
    write(deep / "a" / "b", passed("t"))
    assert len(publish.load_untrusted([deep])) == 1


def test_html_mentions_and_forged_markers_in_results_are_escaped(
    actions: Actions, tmp_path: Path
) -> None:
    gh = actions.gh
    actions.event("pull_request", "pull_request.json")
    evil = (
        "tests/test_x.py::test_<img src=x onerror=alert(1)>_@octo-org/admins_#1"
        "<!-- mlcheck:section fast end -->"
    )
    bad = TestResult(
        evil,
        Outcome.FAILED,
        file="tests/test_x.py",
        line=1,
        message="<script>alert(1)</script> cc @alice fixes #2 [x](javascript:alert(1))",
        traceback="```\n<!-- mlcheck:section gpu start -->\n@bob",
    )
    assert run_publish(gh, str(write(tmp_path / "r", bad))) == 0
    body = str(sticky_comments(gh)[0]["body"])
    assert list(sticky.parse_sections(body)) == [FAST]  # no forged section
    page = html(body)
    assert "<img" not in page and "<script" not in page and 'href="javascript' not in page
    assert "@alice" not in page and "#2" not in page and "@octo-org" not in page
    assert "@" + ZWSP + "alice" in page  # still readable


# --- reporting failures: exit 3, results intact, verdict unchanged


def test_missing_permission_exits_3_naming_it_and_keeps_results(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gh = actions.gh
    token = gh.add_token("ghs_noPermissionsTOKEN01", Identity(ACTIONS_BOT, write=frozenset()))
    actions.event("pull_request", "pull_request.json", GITHUB_TOKEN=token)
    out = write(tmp_path / "r", failed("test_a"))
    before = (out / "results.json").read_bytes()
    assert run_publish(gh, str(out), label="pull_request, 403 (read-only token)") == 3
    err = capsys.readouterr().err
    assert "pull-requests: write" in err and "reporting failed" in err
    assert "tests failed or errored" in err
    assert (out / "results.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    assert actions.outputs()["failed"] == "1"  # the outputs still tell the verdict


def test_transient_faults_are_retried_and_the_comment_is_right(
    actions: Actions, tmp_path: Path
) -> None:
    gh = actions.gh
    actions.event("pull_request", "pull_request.json")
    gh.faults = Faults(script=[Fault.error(502), Fault.too_many(0), Fault.error(502, after=True)])
    assert run_publish(gh, str(write(tmp_path / "r", failed("test_a")))) == 0
    assert "1 failure" in section(gh, FAST)


@pytest.mark.slow
def test_server_down_exits_3_and_the_run_verdict_is_unchanged(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite"
    (suite / "tests").mkdir(parents=True)
    (suite / "tests" / "test_s.py").write_text(
        "def test_ok():\n    pass\n\ndef test_bad():\n    assert 0, 'broken'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    run = subprocess.run(
        [sys.executable, "-m", "mlcheck", "run", "tests", "--no-warm"],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    out = suite / "mlcheck-results"
    files = {p.name: p.read_bytes() for p in out.iterdir()}

    actions.event("pull_request", "pull_request.json", GITHUB_API_URL="http://127.0.0.1:9")
    assert main(["publish", str(out), *FAST_OPTS, "--retries", "2"]) == 3
    err = capsys.readouterr().err
    assert "GitHub may be down" in err and "reporting failed" in err
    assert "exits 3" in err and "tests failed or errored" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert results.read(out).exit_code() == 1  # what `mlcheck run` said, still
    assert main(["publish", str(out), *FAST_OPTS, "--retries", "1", "--fail-on", "failures"]) == 1


def test_the_token_never_appears_in_any_output(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gh = actions.gh
    hf = "hf_" + "S" * 30
    actions.event("pull_request", "pull_request.json", HF_TOKEN=hf)
    leak = f"token={gh.token} hf={hf}"
    bad = TestResult(
        f"tests/t.py::test_{gh.token}",
        Outcome.FAILED,
        file="tests/t.py",
        line=1,
        message=leak,
        traceback=leak,
    )
    out = write(tmp_path / "r", bad, passed("test_ok"))
    assert run_publish(gh, str(out)) == 0
    actions.event("schedule", "schedule.json", HF_TOKEN=hf)
    assert run_publish(gh, str(out)) == 0
    gh.faults = Faults(script=[Fault.error(500)] * 10)
    actions.event("pull_request", "pull_request.json", HF_TOKEN=hf)
    assert run_publish(gh, str(out)) == 3
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, actions.summary.read_text(), actions.output.read_text()]
    texts += [str(c["body"]) for c in gh.state.comments.values()]
    texts += [str(i["body"]) + str(i["title"]) for i in gh.state.issues.values()]
    assert gh.state.comments and any(not i["is_pr"] for i in gh.state.issues.values())
    for text in texts:
        assert gh.token not in text and hf not in text
    assert any("***" in text for text in texts)


# --- request counts per path (the figures in README.md, "API requests per publish")


def test_request_costs_per_path(actions: Actions, tmp_path: Path) -> None:
    """Requests per publish at the shipped ``--settle`` (no flag), as the server counted them:
    README's figures (counted at ``--settle 0``) plus the one verifying re-read per changed
    section that the pause adds; nothing changed costs no more."""
    gh = actions.gh
    shipped = ["--backoff", "0.001", "--max-wait", "1", "--retries", "3"]  # settle: the default
    costs: dict[str, int] = {}

    def publish_at_shipped_settle(label: str, out: Path) -> None:
        before = gh.count()
        assert main(["publish", str(out), *shipped]) in (0, 1)
        costs[label] = gh.count() - before

    out = write(tmp_path / "r", passed("test_a"))
    actions.event("pull_request", "pull_request.json")
    publish_at_shipped_settle("first publish", out)
    write(out, failed("test_a"))
    publish_at_shipped_settle("update (the common path)", out)
    publish_at_shipped_settle("nothing changed", out)
    for i in range(2):  # duplicates from older runs
        gh.state.add_comment(PR, sticky.build_body({f"old{i}": "x"}), ACTIONS_BOT)
    write(out, passed("test_a"))
    publish_at_shipped_settle("dedupe 3 -> 1", out)
    assert len(sticky_comments(gh)) == 1
    COSTS.update({f"{k} (shipped settle)": v for k, v in costs.items()})
    # base digest, list, write, re-read, and the re-read after the pause
    assert costs == {
        "first publish": 5,
        "update (the common path)": 5,
        "nothing changed": 2,
        "dedupe 3 -> 1": 7,
    }


def test_shutil_keeps_results_copyable(tmp_path: Path) -> None:
    """Artifacts are copies: publishing a copied folder works the same (no absolute paths)."""
    src = write(tmp_path / "a", passed("t"))
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    assert publish.load_untrusted([dst])[0].tests[0].nodeid == "tests/test_m.py::t"


def test_after_mlcheck_run_the_summary_and_annotations_are_not_repeated(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The action's run step writes them itself, then publishes with these flags."""
    gh = actions.gh
    actions.event("pull_request", "pull_request.json")
    out = write(tmp_path / "r", failed("test_a"))
    assert run_publish(gh, str(out), "--no-step-summary", "--no-annotations") == 0
    assert not actions.summary.exists()
    assert "::error" not in capsys.readouterr().out
    assert "1 failure" in section(gh, FAST)


def test_refused_gpu_results_say_so_in_their_section(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Otherwise "GPU run scheduled" would stay in the comment forever."""
    gh = actions.gh
    gh.state.add_comment(PR, sticky.build_body({GPU: "GPU run scheduled"}), ACTIONS_BOT)
    actions.event("workflow_dispatch", "workflow_dispatch.json")
    out = tmp_path / "r"
    out.mkdir()
    data = results.to_dict(RunResults(RunInfo(), (passed("test_a"),)))
    data["schema_version"] = 99
    (out / "results.json").write_text(json.dumps(data))
    assert run_publish(gh, str(out)) == 2
    assert "schema_version 99" in capsys.readouterr().err
    text = section(gh, GPU)
    assert "Results not published" in text and "schema\\_version 99" in text


# README security model: results cannot pick another section.
def test_gpu_results_claiming_the_fast_section_are_refused_in_the_gpu_section(
    actions: Actions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gh = actions.gh
    gh.state.add_comment(PR, sticky.build_body({FAST: "f", GPU: "GPU run scheduled"}), ACTIONS_BOT)
    actions.event("workflow_dispatch", "workflow_dispatch.json")
    out = write(tmp_path / "r", passed("test_a"), tiers=("fast",))
    assert run_publish(gh, str(out)) == 2
    assert "claim the section 'fast'" in capsys.readouterr().err
    assert section(gh, FAST) == "f"
    text = section(gh, GPU)
    assert "Results not published" in text and "claim the section" in text


def test_path_prefix_reaches_links(actions: Actions, tmp_path: Path) -> None:
    gh = actions.gh
    actions.event("pull_request", "pull_request.json")
    out = write(tmp_path / "r", failed("test_a"))
    assert run_publish(gh, str(out), "--path-prefix", "proj") == 0
    assert f"/blob/{HEAD}/proj/tests/test_m.py#L3" in section(gh, FAST)


def test_a_bad_section_key_is_a_usage_error(actions: Actions, tmp_path: Path) -> None:
    actions.event("pull_request", "pull_request.json")
    out = write(tmp_path / "r", passed("test_a"))
    assert run_publish(actions.gh, str(out), "--section", "Bad Key!") == 2
    assert actions.gh.count() == 0


# --- results are data (README "Security model")

HOSTILE = "<details open><img src=https://evil.example/x.png> @everyone #1 [x](javascript:alert(1))"


# README security model: results must match the whole schema.
@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["run"].update(workers=HOSTILE),
        lambda d: d["run"].update(seed=HOSTILE),
        lambda d: d["run"]["device"].update(count=HOSTILE),
        lambda d: d["run"]["device"].update(memory_gb=HOSTILE),
        lambda d: d["run"].update(shard=HOSTILE),
        lambda d: d["run"].update(extra=HOSTILE),
        lambda d: d["run"]["device"].update(extra=HOSTILE),
    ],
    ids=["workers", "seed", "count", "memory", "shard", "run-extra", "device-extra"],
)
def test_hostile_run_and_device_numbers_are_refused(change: object) -> None:
    data = json.loads(json.dumps(results.to_dict(RunResults(RunInfo(), (passed("test_a"),)))))
    change(data)  # type: ignore[operator]
    with pytest.raises(ResultsError, match="results schema at run"):
        publish.validate(data)


# README security model: strings from results are escaped, numbers go through int()/float().
def test_hostile_run_and_device_strings_are_rendered_as_text() -> None:
    from mlcheck import report

    data = json.loads(json.dumps(results.to_dict(RunResults(RunInfo(), (passed("test_a"),)))))
    data["run"]["device"].update(name=HOSTILE, type=HOSTILE)
    data["run"].update(ref=HOSTILE, sha=HOSTILE, started_at=HOSTILE, versions={"x": HOSTILE})
    r = publish.validate(data)
    text = report.render_section(r, report.RenderContext(repo="o/r"), key="fast")
    page = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    assert "<details open" not in page and "<img" not in page and 'href="javascript' not in page
    assert "@everyone" not in page.replace(f"@{ZWSP}everyone", "")


# README security model: without jsonschema-rs nothing is accepted.
def test_without_jsonschema_nothing_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: no partial hand-written check lets unchecked fields through."""
    from mlcheck.results import untrusted

    data = json.loads(json.dumps(results.to_dict(RunResults(RunInfo(), (passed("test_a"),)))))
    data["run"].update(workers=HOSTILE)
    untrusted._validator.cache_clear()
    monkeypatch.setitem(sys.modules, "jsonschema_rs", None)  # import -> ImportError
    try:
        for good_or_bad in (data, results.to_dict(RunResults(RunInfo(), ()))):
            with pytest.raises(ResultsError, match="`jsonschema-rs` package is missing"):
                publish.validate(good_or_bad)
    finally:
        untrusted._validator.cache_clear()


# README security model: every array of the results schema is bounded, and so is the number
# of values a publish parses.
def test_results_are_bounded_before_and_by_the_schema(tmp_path: Path) -> None:
    from mlcheck.results import untrusted
    from mlcheck.results.schema import MAX_SUBTESTS

    def arrays(node: object, where: str = "") -> list[tuple[str, object]]:
        found = []
        if isinstance(node, dict):
            if "array" in (
                node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
            ):
                found.append((where, node.get("maxItems")))
            for key, value in node.items():
                found += arrays(value, f"{where}/{key}")
        return found

    schema = untrusted._schema()
    bounded = dict(arrays(schema))
    assert len(bounded) >= 9 and all(bounded.values()), bounded  # every array has maxItems
    assert bounded["/properties/tests"] == publish.MAX_TESTS
    assert bounded["/$defs/test/properties/subtests"] == MAX_SUBTESTS  # what mlcheck records
    one = results.to_dict(RunResults(RunInfo(), (passed("test_a"),)))
    one["tests"][0]["subtests"] = [{"outcome": "passed"}] * (MAX_SUBTESTS + 1)
    with pytest.raises(ResultsError, match="tests/0/subtests"):
        publish.validate(json.loads(json.dumps(one)))
    # Issue 20's file: one test, 17 million subtests in 50 MiB. Refused before it is parsed
    # (the schema alone would still build 17 million objects first).
    head = b'{"schema_version": 2, "run": {}, "tests": [{"nodeid": "t", "outcome": "passed", '
    body = head + b'"subtests": [' + b"{}, " * (50 * 2**20 // 4 - 40) + b"{}]}]}"
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "results.json").write_bytes(body)
    with pytest.raises(ResultsError, match=r"more than 6,000,000 JSON values.*refused unread"):
        publish.load_untrusted([tmp_path / "huge"])
    # the bound counts every file of a publish together, and so does the byte cap
    shards = [
        write(tmp_path / f"s{i}", *(passed(f"t{i}_{j}") for j in range(50))) for i in range(3)
    ]
    assert len(publish.load_untrusted(shards)) == 3
    size = (shards[0] / "results.json").stat().st_size
    with pytest.raises(ResultsError, match="JSON values"):
        publish.load_untrusted(shards, limits=publish.Limits(max_values=1200))
    with pytest.raises(ResultsError, match="in all"):
        publish.load_untrusted(shards, limits=publish.Limits(max_total_bytes=2 * size + 1))


# README security model: results are read without following links or blocking.
def test_a_fifo_device_or_link_is_refused_without_being_read(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "results.json")
    with pytest.raises(ResultsError, match=r"is a FIFO \(named pipe\), not a regular file"):
        publish.load_untrusted([fifo])  # would block forever if opened for reading
    with pytest.raises(ResultsError, match="FIFO"):
        publish.load_untrusted([fifo / "results.json"])
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "results.json").symlink_to("/dev/zero")
    with pytest.raises(ResultsError, match="symbolic link"):
        publish.load_untrusted([zero])
    with pytest.raises(ResultsError, match="symbolic link"):
        results.read(zero)  # mlcheck's own reader too
    with pytest.raises(ResultsError, match="is a device"):
        publish.load_untrusted([Path("/dev/zero")])


def test_selected_output_is_zero_for_an_empty_selection() -> None:
    # A GPU dispatch on a project whose tests are all fast: nothing selected, never "green".
    only_fast = RunResults(
        RunInfo(tiers=("real", "gpu")),
        (TestResult("t.py::a", Outcome.NOT_RUN, tier="fast"),),
    )
    counted = publish.counts({"real,gpu": only_fast}, {})
    assert (counted.selected, counted.not_run, counted.passed) == (0, 1, 0)
    ran = RunResults(
        RunInfo(tiers=("fast",)),
        (TestResult("t.py::a", Outcome.PASSED), TestResult("t.py::b", Outcome.FAILED)),
    )
    assert publish.counts({"fast": ran}, {}).selected == 2


def test_a_linked_results_folder_is_refused_at_read_time(tmp_path: Path) -> None:
    """The folder holding results.json is opened without following a link too (a swap after
    the search cannot redirect the read)."""
    from mlcheck.results.untrusted import read_regular

    real = write(tmp_path / "real", passed("t"))
    (tmp_path / "linked").symlink_to(real)
    with pytest.raises(ResultsError, match="symbolic link"):
        read_regular(tmp_path / "linked" / "results.json", 1 << 20)
    assert read_regular(real / "results.json", 1 << 20).startswith(b"{")
