"""The runner sized from the model, through `mlcheck schedule` against the local GitHub server
(mlcheck.action.dispatch_plan), and one class's share through `mlcheck run --runner-share`."""

# Fixtures imported from action/test_label_gate.py are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cmarkgfm
import pytest
import yaml
from action.test_label_gate import gpu_section, labeled, outputs, pull, run_schedule  # noqa: F401
from cmarkgfm.cmark import Options
from github_server import GitHubServer
from github_server.payloads import HEAD, PR

from mlcheck.results import schema as results
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

GB = 1024**3
RUNNERS = '{ "24" = ["self-hosted", "gpu-24g"], "80" = ["self-hosted", "gpu-80g"] }'
GPU_WORKFLOW = Path(__file__).parents[2] / "examples" / "workflows" / "mlcheck-gpu.yml"


def _commit(ws: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(ws)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)


@pytest.fixture(autouse=True)
def gpu_workflow_inputs(server: GitHubServer) -> None:
    """The server accepts what the example GPU workflow declares, as GitHub would (422 else)."""
    server.state.workflows["mlcheck-gpu.yml"] = _declared_inputs()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The base branch's checkout: two runner classes, no models."""
    ws = tmp_path / "base"
    ws.mkdir()
    (ws / "pyproject.toml").write_text(f"[tool.mlcheck]\ngpu_runners = {RUNNERS}\n")
    _commit(ws)
    return ws


def _last_full_run(tmp_path: Path, peaks: dict[str, float | None]) -> Path:
    """A nightly's results: gpu tests with measured peaks (GB; None: no peak, no model)."""
    tests = tuple(
        TestResult(
            nodeid,
            Outcome.PASSED,
            tier="gpu",
            device="cuda:0",
            gpu_peak_bytes=None if gb is None else int(gb * GB),
        )
        for nodeid, gb in peaks.items()
    )
    folder = tmp_path / "nightly"
    results.write(RunResults(RunInfo(tiers=("gpu",)), tests), folder)
    return folder


def _declared_inputs() -> set[str]:
    workflow = yaml.safe_load(GPU_WORKFLOW.read_text())
    return set(workflow[True]["workflow_dispatch"]["inputs"])  # YAML 1.1 reads `on` as True


def test_tests_of_two_classes_get_one_share_each_and_the_comment_says_why(
    server: GitHubServer, labeled: Path, tmp_path: Path
) -> None:
    server.state.collaborators["mona"] = "write"
    nightly = _last_full_run(
        tmp_path,
        {
            "tests/test_gen.py::test_small": 10.0,  # 10 * 1.1 + 1 = 12 GB -> 24
            "tests/test_gen.py::test_large": 40.0,  # 45 GB -> 80
            "tests/test_gen.py::test_unsized": None,  # no peak, no model: with the largest
        },
    )
    code, _ = run_schedule(server, "--sizing-results", str(nightly))
    assert code == 0
    (dispatch,) = server.state.dispatches
    inputs = dispatch["inputs"]
    assert (inputs["sha"], inputs["pr"]) == (HEAD, str(PR))
    shares = json.loads(inputs["runners"])
    assert shares == [
        {
            "class": "24",
            "labels": ["self-hosted", "gpu-24g"],
            "only": ["tests/test_gen.py::test_small"],
        },
        {
            "class": "80",
            "labels": ["self-hosted", "gpu-80g"],
            "skip": ["tests/test_gen.py::test_small"],  # everything else, new tests included
        },
    ]
    text = gpu_section(server)
    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    assert f"GPU run scheduled for `{HEAD[:7]}`" in text
    assert "gpu-24g" in html and "gpu-80g" in html
    assert "measured peak 40.0 GB on cuda:0" in html  # why the 80 GB class
    assert "test_unsized" in html and "largest runner class used" in html
    assert outputs(labeled)["scheduled"] == "true"


def test_a_test_bigger_than_every_class_is_reported_and_nothing_is_dispatched(
    server: GitHubServer, labeled: Path, tmp_path: Path
) -> None:
    server.state.collaborators["mona"] = "write"
    nightly = _last_full_run(
        tmp_path, {"tests/test_gen.py::test_fits": 5.0, "tests/test_gen.py::test_70b": 130.0}
    )
    code, _ = run_schedule(server, "--sizing-results", str(nightly))
    assert code == 0
    assert server.state.dispatches == []  # no GPU minute spent
    assert server.state.removed_labels == [(PR, "mlcheck:gpu")]
    text = gpu_section(server)
    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    assert "GPU run not scheduled" in text and "no GPU run was dispatched" in text
    assert "test_70b needs 144.0 GB" in html and "largest runner class (80 GB)" in html
    assert outputs(labeled)["scheduled"] == "false"


def test_without_results_the_base_manifests_models_size_the_whole_run(
    server: GitHubServer,
    labeled: Path,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Llama-8B config (no weights) in the base lock: 15 GB bf16 on the meta device -> the
    24 GB class for the whole run (any gpu test may load it)."""
    from transformers import LlamaConfig

    config = tmp_path / "llama-8b"
    LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        architectures=["LlamaForCausalLM"],
        torch_dtype="bfloat16",
    ).save_pretrained(config)
    (workspace / "pyproject.toml").write_text(
        f"[tool.mlcheck]\ngpu_runners = {RUNNERS}\n"
        '[tool.mlcheck.models]\n"org/llama-8b" = { needs = "weights" }\n'
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    add = [sys.executable, "-m", "mlcheck", "cache", "add", str(config), "--model", "org/llama-8b"]
    done = subprocess.run(add, cwd=workspace, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _commit(workspace)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    server.state.collaborators["mona"] = "write"
    code, _ = run_schedule(server)
    assert code == 0
    (dispatch,) = server.state.dispatches
    assert json.loads(dispatch["inputs"]["runners"]) == [
        {"class": "24", "labels": ["self-hosted", "gpu-24g"]}
    ]
    text = gpu_section(server)
    assert "base manifest" in text and "org/llama-8b" in text and "18.9 GB" in text


# --- the share a matrix job runs

SUITE = """
import pytest
@pytest.mark.gpu
def test_small(): pass
@pytest.mark.gpu
def test_large(): pass
@pytest.mark.gpu
def test_new_in_the_pr(): pass
"""


def _share_run(tmp_path: Path, share: str) -> set[str]:
    project = tmp_path / "proj"
    (project / "tests").mkdir(parents=True, exist_ok=True)
    (project / "tests" / "test_gen.py").write_text(SUITE)
    out = tmp_path / f"results-{abs(hash(share))}"
    argv = [sys.executable, "-m", "mlcheck", "run", "--tier", "gpu", "--no-warm"]
    argv += ["--results-dir", str(out), "--runner-share", share, "tests"]
    done = subprocess.run(argv, cwd=project, capture_output=True, text=True)
    # 1: no accelerator here, so the gpu tests that ran error ("needs an accelerator")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    ran = {t.nodeid.rsplit("::", 1)[1] for t in results.read(out / "results.json").tests}
    return ran


def test_the_shares_of_a_split_run_hold_every_test_once(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    small = json.dumps({"class": "24", "only": ["tests/test_gen.py::test_small"]})
    a = _share_run(tmp_path, small)  # through `mlcheck run --runner-share`
    assert a == {"test_small"}
    # the largest class's share, in a subprocess (the plugin `mlcheck run` loads with -p)
    pytester.makepyfile(test_gen=SUITE.replace("@pytest.mark.gpu\n", ""))
    skip = json.dumps({"class": "80", "skip": ["test_gen.py::test_small"]})
    share = f"--mlcheck-runner-share={skip}"
    result = pytester.runpytest_subprocess("-v", "-p", "mlcheck.plugin.runner_share", share)
    result.assert_outcomes(passed=2, deselected=1)
    # the test nobody sized (new in the PR) runs too; the one sent elsewhere does not
    result.stdout.fnmatch_lines(["*test_large PASSED*", "*test_new_in_the_pr PASSED*"])
    result.stdout.no_fnmatch_line("*test_small *")
    from mlcheck.cli import main

    # a bad share is a usage error before pytest starts
    assert main(["run", "--runner-share", '{"only": "x"}', str(tmp_path)]) == 2
