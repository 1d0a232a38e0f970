"""User projects for tests: a project with only a model manifest, and copies of the example.

One definition each, imported as ``from projects import ...`` (tests/ is on the path).
"""

from __future__ import annotations

import shutil
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "textclf"


def project(tmp_path: Path, models: dict[str, str]) -> Path:
    """``tmp_path/project`` whose pyproject.toml lists ``models`` (model id -> TOML entry)."""
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    lines = ["[tool.mlcheck.models]"] + [f'"{m}" = {spec}' for m, spec in models.items()]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return root


def copy_example(dest: Path) -> Path:
    """A copy of examples/textclf at ``dest``, without what earlier runs left in it."""
    ignore = shutil.ignore_patterns("mlcheck-results", "__pycache__", ".pytest_cache")
    shutil.copytree(EXAMPLE, dest, ignore=ignore)
    return dest
