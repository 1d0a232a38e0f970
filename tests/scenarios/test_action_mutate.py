"""The action's ``command: mutate`` and ``mlcheck publish --mutation`` (issue 24).

One whole action run mutates a tiny real torch suite (two mutants: one killed, one survived)
inside the PR-code sandbox and posts the ``mutation`` section to the PR's sticky comment through
the local GitHub API; the trusted side renders it from ``mutation.json`` alone. The other
cases publish a ``mutation.json`` written here (no torch): the nightly's tracking issue,
forged and hostile reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cmarkgfm
import pytest
from action_runs import REPO, SHA, action_environ, action_outputs, pr_payload, to_server
from github_server import ACTIONS_BOT, GitHubServer

from mlcheck.action.inputs import Inputs as ActionInputs
from mlcheck.action.inputs import cli_args, plan
from mlcheck.action.main import main
from mlcheck.github.event import parse_event
from mlcheck.power import report as power_report
from mlcheck.power.runner import Kill, MutantResult, Status
from mlcheck.publish import BASE_KEY, base_digests, issue_body, issue_sections
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

SUITE = """
import torch
from mlcheck.checks import assert_train_mode


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))


def test_dropout_is_on_in_training():
    assert_train_mode(model(), torch.ones(3, 4))


def test_a_training_step_keeps_the_shapes():
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.ones(3, 4)).sum().backward()
    opt.step()
    assert m(torch.ones(3, 4)).shape == (3, 2)
"""

MUTANTS = "dropout-off-in-train,optimizer-noop"


@pytest.fixture
def server(gh: GitHubServer) -> GitHubServer:
    """The local GitHub API for REPO with a tracking issue (a base digest in it)."""
    gh.state.owner, gh.state.name = REPO["full_name"].split("/")
    gh.state.next_number = 7
    base = RunResults(
        RunInfo(tiers=("fast",)), (TestResult("tests/t.py::test_a", Outcome.PASSED, tier="fast"),)
    )
    body = issue_body({BASE_KEY: "\n".join(base_digests({"fast": base}, "1" * 40).values())})
    gh.state.add_issue(title="mlcheck nightly", body=body, user=ACTIONS_BOT, state="closed")
    return gh


@pytest.fixture
def mutate_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    project = ws / "proj"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['tests']\n")
    (project / "tests" / "test_model.py").write_text(SUITE)
    return ws


def test_cli_args_and_tier_for_mutate(tmp_path: Path) -> None:
    event = parse_event("schedule", {}, {"GITHUB_REPOSITORY": "o/r"})
    inputs = ActionInputs(command="mutate", mutants="eval-stuck", budget="30", fail_under="0.8")
    p = plan(inputs, event, {"GITHUB_WORKSPACE": str(tmp_path)})
    assert p.tier == "fast"  # `tier: auto` mutates the fast tier, even on schedule
    assert cli_args(inputs, p) == [
        "mutate", "--tier", "fast", "--results-dir", "mlcheck-results",
        "--mutants", "eval-stuck", "--budget", "30", "--fail-under", "0.8",
    ]  # fmt: skip


def test_action_mutates_in_the_sandbox_and_posts_the_section_it_rendered(
    mutate_workspace: Path, server: GitHubServer, capfd: pytest.CaptureFixture[str]
) -> None:
    pr = server.state.add_pull(head_sha=SHA)
    payload = {"action": "synchronize", "pull_request": pr_payload(pr, REPO["full_name"])}
    env = action_environ(
        mutate_workspace, "pull_request", payload,
        working_directory="proj", command="mutate", mutants=MUTANTS, workers="2",
    )  # fmt: skip
    env = to_server(server, env)
    assert main(env) == 0  # a survivor does not fail the step without fail-under
    out = capfd.readouterr().out
    results = mutate_workspace / "proj" / "mlcheck-results"
    data = json.loads((results / "mutation.json").read_text())
    status = {m["name"]: m["status"] for m in data["mutants"]}
    assert status == {"dropout-off-in-train": "killed", "optimizer-noop": "survived"}
    (comment,) = server.state.comments_on(pr)
    assert comment["user"] == ACTIONS_BOT
    body = comment["body"]
    assert "mlcheck mutate: 1 of 2 reached mutants killed (50%)" in body
    assert "test_dropout_is_on_in_training" in body
    assert "`optimizer-noop` survived" in body and "assert_params_update" in body
    assert "test_a_training_step_keeps_the_shapes" in body  # the advice names the test
    # the same section in the job summary, rendered by the trusted side from mutation.json
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.count("mlcheck mutate: 1 of 2 reached mutants killed") == 1, summary
    assert action_outputs(env)["comment-url"].endswith(f"#issuecomment-{comment['id']}")
    assert server.token not in out + summary + Path(env["GITHUB_OUTPUT"]).read_text()


def test_action_mutate_fail_under_and_a_failing_suite(
    mutate_workspace: Path, server: GitHubServer
) -> None:
    pr = server.state.add_pull(head_sha=SHA)
    payload = {"action": "synchronize", "pull_request": pr_payload(pr, REPO["full_name"])}
    tests = mutate_workspace / "proj" / "tests" / "test_model.py"
    tests.write_text(SUITE + "\n\ndef test_broken():\n    assert 1 == 2\n")
    env = to_server(
        server,
        action_environ(
            mutate_workspace,
            "pull_request",
            payload,
            working_directory="proj",
            command="mutate",
            mutants="optimizer-noop",
        ),
    )
    assert main(env) == 2  # the unmutated run fails: nothing to mutate, nothing posted
    assert not server.state.comments_on(pr)
    assert not (mutate_workspace / "proj" / "mlcheck-results" / "mutation.json").exists()
    tests.write_text(SUITE)
    env["INPUT_FAIL-UNDER"] = "0.5"
    assert main(env) == 1  # optimizer-noop survives: 0% < 50%; the report is posted anyway
    (comment,) = server.state.comments_on(pr)
    assert "0 of 1 reached mutant killed (0%)" in comment["body"]


# --- mlcheck publish --mutation on reports written here (no torch)

HOSTILE = "tests/test_x.py::test_<img src=x onerror=alert(1)>|`a`"


def _report() -> power_report.MutationReport:
    return power_report.MutationReport(
        mutants=(
            MutantResult(
                "eval-stuck",
                Status.KILLED,
                kill=Kill.CRASH,
                killers=(HOSTILE,),
                message="<script>",
                reached_by=(HOSTILE,),
                hits=2,
                duration=1.0,
                tests_run=1,
            ),
            MutantResult(
                "causal-mask-dropped",
                Status.SURVIVED,
                reached_by=("tests/test_lm.py::test_gen",),
                hits=3,
                duration=2.0,
                tests_run=4,
            ),
            MutantResult("kv-cache-stale", Status.NOT_REACHED, duration=1.0, tests_run=4),
        ),
        tests=4,
        unmutated_duration=2.0,
        duration=7.0,
        models={"tests/test_lm.py::test_gen": ("gpt2",)},
        paths=("tests",),
        tier="fast",
    )


def _publish(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlcheck", "publish", "--mutation", "--settle", "0", str(folder)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _env(tmp_path: Path, server: GitHubServer, event: str, payload: dict[str, object]) -> dict:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps({"repository": REPO, **payload}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLCHECK_"))}
    return env | {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REPOSITORY": REPO["full_name"],
        "GITHUB_SHA": SHA,
        "GITHUB_RUN_ID": "42",
        "GITHUB_API_URL": server.url,
        "GITHUB_TOKEN": server.token,
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }


def test_the_nightly_gets_a_mutation_section_in_the_tracking_issue(
    tmp_path: Path, server: GitHubServer
) -> None:
    (issue,) = server.state.issues.values()
    old = issue_sections(issue["body"])
    issue["body"] = issue_body({**old, "nightly": "the nightly report"})
    issue["title"], issue["state"] = "mlcheck nightly: 2 failing", "open"
    power_report.write(_report(), tmp_path / "res")
    # a mutation.md the project's code could have written is never read
    (tmp_path / "res" / "mutation.md").write_text("FORGED all green")
    proc = _publish(tmp_path / "res", _env(tmp_path, server, "schedule", {}))
    assert proc.returncode == 0, proc.stderr
    body = issue["body"]
    sections = issue_sections(body)
    assert sections["nightly"] == "the nightly report" and sections["base"] == old["base"]
    assert (issue["title"], issue["state"]) == ("mlcheck nightly: 2 failing", "open")
    section = sections["mutation"]
    assert "FORGED" not in body and "1 of 2 reached mutants killed (50%)" in section
    assert "`causal-mask-dropped` survived" in section and "`gpt2`" in section
    assert "(crash)" in section
    # strings from the tests are inert: no raw HTML, no broken table
    html = cmarkgfm.github_flavored_markdown_to_html(section)
    assert "<img" not in html and "<script>" not in html
    summary = (tmp_path / "summary.md").read_text()
    assert "FORGED" not in summary and "1 of 2 reached mutants killed" in summary
    assert server.token not in proc.stdout + proc.stderr + summary
    # README "API requests per publish": find the issue, update it
    assert server.counts() == {
        "GET /repos/{owner}/{repo}/issues": 1,
        "PATCH /repos/{owner}/{repo}/issues/{issue_number}": 1,
    }, server.counts()


@pytest.mark.parametrize(
    ("forge", "says"),
    [
        ("link", "symbolic link"),
        ("schema", "does not match the mutation schema at score"),
        ("unknown mutant", "unknown or repeated mutant 'all-green'"),
        ("fifo", "FIFO"),
    ],
)
def test_a_forged_mutation_report_is_refused_with_exit_2(
    tmp_path: Path, server: GitHubServer, forge: str, says: str
) -> None:
    folder = tmp_path / "res"
    folder.mkdir()
    good = power_report.to_dict(_report())
    if forge == "link":
        secret = tmp_path / "secret.json"
        secret.write_text(json.dumps(good))
        (folder / "mutation.json").symlink_to(secret)
    elif forge == "fifo":
        os.mkfifo(folder / "mutation.json")  # would block a naive reader forever
    elif forge == "schema":
        (folder / "mutation.json").write_text(json.dumps({**good, "score": "100%"}))
    else:
        good["mutants"][0]["name"] = "all-green"
        (folder / "mutation.json").write_text(json.dumps(good))
    pr = server.state.add_pull(head_sha=SHA)
    payload = {"action": "synchronize", "pull_request": pr_payload(pr, REPO["full_name"])}
    proc = _publish(folder, _env(tmp_path, server, "pull_request", payload))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr, proc.stderr
    assert not server.state.comments_on(pr)
