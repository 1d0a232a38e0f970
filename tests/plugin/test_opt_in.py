"""Inert until opted in: plain pytest in a project that never asked for mlcheck is unchanged."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlcheck.plugin.opt_in import declares_manifest, opted_in

PROBE = """
import json, os, random

def test_probe():
    # what a test sees: the environment and the state of the random generator
    with open("probe.json", "w") as fh:
        json.dump({"offline": os.environ.get("HF_HUB_OFFLINE"),
                   "run_slow": os.environ.get("RUN_SLOW"),
                   "random": random.getstate()[1][:4]}, fh)

def test_fails():
    assert 1 == 2
"""


def pytest_run(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, dict]:
    # in-process pytester runs of other tests may have set these in this process
    skip = ("MLCHECK_", "HF_HUB_OFF", "RUN_SLOW")
    base = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        cwd=root,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    probe = json.loads((root / "probe.json").read_text())
    # pytest's own header lists the loaded plugins and the run time: not mlcheck's output
    text = re.sub(r"^plugins: .*$", "", done.stdout, flags=re.M)
    return re.sub(r"in [0-9.]+s( \([0-9:]+\))?", "in Ts", text), probe


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "plain"\n')
    (tmp_path / "test_probe.py").write_text(PROBE)
    return tmp_path


def test_plain_pytest_is_unchanged_without_opt_in(plain: Path) -> None:
    without, seen_without = pytest_run(plain, "-p", "no:mlcheck")
    installed, seen_installed = pytest_run(plain)
    assert installed == without
    # the generator is seeded by the OS in both runs (different every run), never reseeded to 0
    random.seed(0)
    zero = list(random.getstate()[1][:4])
    assert seen_installed["random"] != zero and seen_without["random"] != zero
    assert seen_installed["offline"] is None and seen_installed["run_slow"] is None
    assert "mlcheck" not in installed


@pytest.mark.parametrize("how", ["manifest", "option", "env"])
def test_each_way_of_opting_in_turns_the_plugin_on(plain: Path, how: str) -> None:
    args: list[str] = []
    env: dict[str, str] = {}
    if how == "manifest":
        (plain / "mlcheck.toml").write_text("[models]\n")
    elif how == "option":
        args = ["--mlcheck-tier=fast"]
    else:
        env = {"MLCHECK_TIER": "fast"}
    out, seen = pytest_run(plain, *args, env=env)
    assert "mlcheck: tiers fast: 2 selected" in out
    assert seen["offline"] == "1"
    assert seen["run_slow"] is None  # only a real/gpu tier gets RUN_SLOW
    random.seed(0)
    assert seen["random"] == list(random.getstate()[1][:4])  # opted in: reseeded


def test_the_models_fixture_works_without_opt_in(plain: Path) -> None:
    (plain / "test_probe.py").write_text(
        "import json\n"
        "def test_models(models):\n"
        "    open('probe.json', 'w').write(json.dumps({'seed': models.seed}))\n"
    )
    out, seen = pytest_run(plain)
    assert "1 passed" in out and seen == {"seed": 0}


def test_opted_in_rules(tmp_path: Path) -> None:
    assert not declares_manifest(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    assert not opted_in([], [tmp_path], {})
    (tmp_path / "pyproject.toml").write_text("[tool.mlcheck.models]\n")
    assert opted_in([], [tmp_path], {})
    (tmp_path / "pyproject.toml").write_text("[tool.mlcheck\nbroken")
    assert declares_manifest(tmp_path)  # the manifest parser reports the error
    assert opted_in(["--mlcheck-allow-missing"], [], {})
    assert opted_in([], [], {"MLCHECK_TIER": "real"})
    assert not opted_in(["--mlcheckx"], [], {"MLCHECK_TIER": ""})


def test_an_in_process_run_leaves_the_hub_setting_as_it_was(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is offline; the process after it is not (pytest.main, pytester): a later download
    in the same process must reach the hub."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    pytester.makepyprojecttoml('[project]\nname = "p"\n\n[tool.mlcheck]\n')
    pytester.makepyfile(
        "import os, huggingface_hub.constants as c\n"
        "def test_offline():\n"
        "    assert os.environ['HF_HUB_OFFLINE'] == '1' and c.HF_HUB_OFFLINE is True\n"
    )
    pytester.inline_run("-p", "no:cacheprovider").assertoutcome(passed=1)
    assert "HF_HUB_OFFLINE" not in os.environ
    assert hub_constants.HF_HUB_OFFLINE is False
