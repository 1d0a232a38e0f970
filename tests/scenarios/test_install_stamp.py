"""scripts/install_stamp.py: when scripts/bootstrap.sh may skip pip."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlcheck

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install_stamp.py"
_spec = importlib.util.spec_from_file_location("install_stamp", SCRIPT)
assert _spec is not None and _spec.loader is not None
stamp_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stamp_module)


def _checkout(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir(parents=True)
    for name in ("pyproject.toml", "scripts/bootstrap.sh", "scripts/install_stamp.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_hash_changes_with_pyproject_the_extras_and_the_checkout(tmp_path: Path) -> None:
    root = _checkout(tmp_path / "a")
    first = stamp_module.inputs_hash(root, "example")
    assert stamp_module.inputs_hash(root, "example") == first
    assert stamp_module.inputs_hash(root, "test") != first
    assert stamp_module.inputs_hash(_checkout(tmp_path / "b"), "example") != first  # moved
    with (root / "pyproject.toml").open("a") as fh:
        fh.write("\n# a new dependency, say\n")
    assert stamp_module.inputs_hash(root, "example") != first


def test_an_install_of_another_checkout_is_not_current(tmp_path: Path) -> None:
    root = _checkout(tmp_path / "other")
    stamp = tmp_path / "stamp"
    assert stamp_module.main(["write", str(root), "", str(stamp)]) == 0
    assert stamp_module.main(["check", str(root), "", str(stamp)]) == 1  # mlcheck lives elsewhere


@pytest.mark.skipif(
    not Path(mlcheck.__file__).resolve().is_relative_to(ROOT),
    reason="mlcheck is not installed from this checkout (not an editable install)",
)
def test_a_stamp_written_after_the_install_is_current_until_an_input_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = tmp_path / "stamp"
    check = [sys.executable, "-I", str(SCRIPT), "check", str(ROOT), "", str(stamp)]
    assert subprocess.run(check).returncode == 1  # no stamp yet
    subprocess.run([*check[:3], "write", *check[4:]], check=True)
    assert subprocess.run(check).returncode == 0
    stamp.write_text("0" * 64 + "\n")  # written for other inputs
    assert subprocess.run(check).returncode == 1
    assert stamp_module.installed(ROOT, "")
    # a requirement that is not installed (metadata found first on sys.path): pip must run
    dist_info = tmp_path / "site" / "pytest_mlcheck-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pytest-mlcheck\nVersion: 0.1.0\n"
        "Requires-Dist: mlcheck-no-such-package>=1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert not stamp_module.installed(ROOT, "")
