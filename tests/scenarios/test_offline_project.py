"""A project set up only with `mlcheck cache add` (no hub anywhere): its fast and real tiers run
offline, `cache warm` says what is missing and the one command that fixes it, and `models.real`
in a fast-tier test fails the way CI's fast job would, under plain pytest and `mlcheck run`.

Every command runs as a subprocess with HF_ENDPOINT on a closed port: any hub request fails."""

# Fixtures imported from hubserver are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hubserver import free_port, minilm_dir, mlcheck, tiny_bert_dir  # noqa: F401

from mlcheck.errors import LocalModelMissing
from mlcheck.project.cache import add, snapshot_dir
from mlcheck.project.hub import warm
from mlcheck.project.lock import read_lock
from mlcheck.project.manifest import load_manifest

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

TESTS = f'''\
import pytest

def test_fast_config(models):
    assert models.config("{MINILM}").hidden_size == 384

@pytest.mark.real_model("{MINILM}")
def test_real_embeds(models):
    tokenizer = models.tokenizer("{MINILM}")
    out = models.real("{MINILM}")(**tokenizer("hello", return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 384
'''


def offline_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLCHECK_"))}
    env["HF_HUB_CACHE"] = str(cache)
    env["HF_HOME"] = str(cache.parent / "hf-home")
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing listens: no hub
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    return env


def new_project(tmp_path: Path, tests: str) -> Path:
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.mlcheck]\n')
    (root / "tests" / "test_model.py").write_text(tests)
    return root


def test_cache_add_project_runs_offline_and_warm_names_the_fix(tmp_path: Path) -> None:
    root = new_project(tmp_path, TESTS + "\ndef test_plain():\n    assert 1 + 1 == 2\n")
    cache = tmp_path / "cache"
    env = offline_env(cache)
    added = mlcheck("cache", "add", str(minilm_dir()), "--model", MINILM, cwd=root, env=env)
    assert added.returncode == 0, added.stderr
    # the hint is the command, not a hand edit; and that command works with no hub
    hint = f"mlcheck add {MINILM} --needs weights"
    assert hint in added.stdout
    declared = mlcheck(*hint.split()[1:], cwd=root, env=env)
    assert declared.returncode == 0, declared.stdout + declared.stderr
    spec = load_manifest(root).model(MINILM)
    assert spec is not None and spec.needs == "weights"
    lock = read_lock(root)
    assert lock is not None
    entry = lock.models[MINILM]
    assert entry.source == "local" and entry.file(".gitattributes") is not None

    # A cache without the weights and without the folder's README.md and .gitattributes (as a
    # cache restored with only what loads need): the fast tier's warm needs only the config;
    # the real tier's names what is missing and the one command that fixes it.
    snapshot = snapshot_dir(cache, MINILM, entry.commit)
    for name in (".gitattributes", "README.md", "model.safetensors"):
        (snapshot / name).unlink()
    assert warm(root, weights=False, cache_dir=cache).nothing_to_do  # no hub asked
    with pytest.raises(LocalModelMissing) as missing:
        warm(root, weights=True, cache_dir=cache)
    assert "model.safetensors: missing" in str(missing.value)
    assert ".gitattributes" not in str(missing.value)

    # This machine has no cache at all (the lock was committed, the cache was not): `mlcheck
    # run` warns once, the test that needs the model errors with the fix, the others run.
    shutil.rmtree(cache)
    run = mlcheck("run", "--results-dir", str(tmp_path / "r1"), cwd=root, env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "added with `mlcheck cache add`" in run.stderr
    by_name = outcomes(tmp_path / "r1")
    assert {n: t["outcome"] for n, t in by_name.items()} == {
        "test_fast_config": "failed",
        "test_real_embeds": "not_run",
        "test_plain": "passed",
    }
    fix = f"mlcheck cache add FOLDER --model {MINILM} --revision main"
    assert f"run `{fix}`" in by_name["test_fast_config"]["message"]
    # the report's infrastructure section gives the same fix, not the hub's `cache warm`
    report = (tmp_path / "r1" / "report.md").read_text()
    (cause,) = [line for line in report.splitlines() if line.startswith("- **hub**")]
    assert "*Fix:* for a model added with `mlcheck cache add`" in cause
    assert "mlcheck cache add FOLDER --model ID" in cause and "cache warm" not in cause

    # `cache warm` cannot fetch it, and says so: what is missing, and the one command
    warm_cli = mlcheck("cache", "warm", cwd=root, env=env)
    assert warm_cli.returncode == 2
    line = warm_cli.stderr.strip()
    assert "config.json: missing" in line and f"run `{fix}`" in line
    assert "run `mlcheck cache warm`" not in line and "Traceback" not in line

    # The fix, as printed (FOLDER: the model's files), then both tiers, offline
    command = fix.replace("FOLDER", str(minilm_dir())).split()
    assert mlcheck(*command[1:], cwd=root, env=env).returncode == 0
    for name in (".gitattributes", "README.md"):
        (snapshot / name).unlink()
    run = mlcheck(
        "run", "--tier", "fast,real", "--results-dir", str(tmp_path / "r2"), cwd=root, env=env
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert {n: t["outcome"] for n, t in outcomes(tmp_path / "r2").items()} == {
        "test_fast_config": "passed",
        "test_real_embeds": "passed",
        "test_plain": "passed",
    }


def outcomes(results_dir: Path) -> dict[str, dict[str, Any]]:
    results = json.loads((results_dir / "results.json").read_text())
    return {t["nodeid"].rsplit("::", 1)[1]: t for t in results["tests"]}


REAL_IN_FAST = """\
import pytest

def test_sneaky(models):
    models.real("org/tiny")

@pytest.mark.real_model("org/tiny")
def test_marked(models):
    assert models.real("org/tiny").config.hidden_size == 16
"""


def test_models_real_in_a_fast_test_fails_with_the_marker_hint(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    root = new_project(tmp_path, REAL_IN_FAST)
    env = offline_env(tmp_path / "cache")
    add(tiny_bert_dir, "org/tiny", cache_dir=tmp_path / "cache", root=root)
    hint = '@pytest.mark.real_model("org/tiny")'
    # plain pytest, the weights in the cache all along: still the fast tier's failure
    plain = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 1, plain.stdout
    assert "1 failed" in plain.stdout and "1 skipped" in plain.stdout
    assert hint in plain.stdout and "a fast-tier test" in plain.stdout
    # `mlcheck run`: the same failure; the marked test runs in the real tier
    both = mlcheck(
        "run", "--tier", "fast,real", "--results-dir", str(tmp_path / "r"), cwd=root, env=env
    )
    assert both.returncode == 1
    by_name = outcomes(tmp_path / "r")
    assert by_name["test_marked"]["outcome"] == "passed"
    assert by_name["test_sneaky"]["outcome"] == "failed"
    assert hint in by_name["test_sneaky"]["message"]
