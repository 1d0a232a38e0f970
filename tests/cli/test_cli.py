"""CLI details a newcomer meets first: bad tier text, an empty manifest, each command's --help."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runcli import mlcheck


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLCHECK_TIER"}
    return env | more


def test_an_empty_tier_option_is_an_error(tmp_path: Path) -> None:
    proc = mlcheck("run", "--tier", "", cwd=tmp_path, env=_env())
    assert proc.returncode == 2
    assert "--tier: no tier given" in proc.stderr


def test_a_bad_mlcheck_tier_names_the_variable(tmp_path: Path) -> None:
    proc = mlcheck("run", cwd=tmp_path, env=_env(MLCHECK_TIER="fsat"))
    assert proc.returncode == 2
    assert "MLCHECK_TIER=fsat: unknown tier 'fsat'" in proc.stderr


def test_lock_without_a_manifest_says_so_and_writes_nothing(tmp_path: Path) -> None:
    proc = mlcheck("lock", cwd=tmp_path, env=_env())
    assert proc.returncode == 2
    assert "no manifest" in proc.stderr and "[tool.mlcheck.models]" in proc.stderr
    assert not (tmp_path / "mlcheck.lock").exists()


def test_lock_counts_models_in_english(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.mlcheck]\n")
    proc = mlcheck("lock", cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert "0 models (0 unchanged)" in proc.stdout


def test_a_count_of_one_is_singular(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    hf = tmp_path / "hf"
    args = ["cache", "add", str(folder), "--model", "org/tiny", "--revision", "main", "--no-lock"]
    proc = mlcheck(*args, "--cache-dir", str(hf), cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert ": 1 file, " in proc.stdout, proc.stdout


@pytest.mark.parametrize("action", ["add", "warm", "verify", "list", "prune"])
def test_each_cache_action_has_its_own_help(action: str, tmp_path: Path) -> None:
    proc = mlcheck("cache", action, "--help", cwd=tmp_path, env=_env())
    assert proc.returncode == 0
    others = {"add", "warm", "verify", "list", "prune"} - {action}
    assert "exit codes: 0" in proc.stdout
    # its own description, not verify's (each names what it does first)
    first = proc.stdout.split("\n\n")[1].lower()
    assert not any(first.startswith(o) for o in others), first


def test_report_help_has_no_rest_markup(tmp_path: Path) -> None:
    proc = mlcheck("report", "--help", cwd=tmp_path, env=_env())
    assert proc.returncode == 0
    assert "``" not in proc.stdout and "`results.json`" in proc.stdout
