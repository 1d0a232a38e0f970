"""``--changed-since``: the real/gpu tests a change can break, and everything when unsure."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from selection_history import replay

from mlcheck.plugin.selection import Change, FileMap, _manifest_changes, function_body_lines, select

OLD = """\
import os

LIMIT = 3


def helper(x):
    y = x + 1
    return y * LIMIT


class Model:
    size = 4

    def forward(self, x):
        return x * self.size
"""

MAP = FileMap(
    commit="a" * 40,
    lock_sha256=None,
    tests={
        "tests/test_a.py::test_helper": frozenset({"tests/test_a.py", "src/m.py"}),
        "tests/test_a.py::test_other": frozenset({"tests/test_a.py"}),
        "tests/test_b.py::test_model": frozenset({"tests/test_b.py", "src/m.py"}),
        "tests/test_b.py::test_plain": frozenset({"tests/test_b.py"}),
    },
    models={"tests/test_b.py::test_plain": frozenset({"org/b"})},
    outside={"src/m.py": frozenset({1, 3, 6, 11, 12, 14})},
)
COLLECTED = {n: (n.split("::")[0], ()) for n in MAP.tests}


def _select(*changes: Change, **kwargs: object) -> set[str] | str:
    file_map = kwargs.pop("file_map", MAP)
    options: dict[str, object] = {
        "old_source": lambda path: OLD if path == "src/m.py" else "",
        "lock_at_base": None,
        "changed_models": set(),
        **kwargs,
    }
    chosen = select(file_map, changes, COLLECTED, **options)  # type: ignore[arg-type]
    return chosen.why if chosen.everything else set(chosen.tests)


def test_function_body_lines_exclude_def_lines_decorators_and_class_bodies() -> None:
    bodies = function_body_lines(OLD)
    assert bodies is not None
    assert {7, 8, 15} <= bodies
    assert not {1, 3, 6, 11, 12, 14} & bodies


def test_a_change_inside_a_function_selects_the_tests_that_ran_its_file() -> None:
    assert _select(Change("src/m.py", "modified", frozenset({7}))) == {
        "tests/test_a.py::test_helper",
        "tests/test_b.py::test_model",
    }
    assert _select(Change("README.md", "modified")) == set()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (Change("src/m.py", "modified", frozenset({3})), "changed outside a function (line 3)"),
        (Change("src/m.py", "modified", frozenset({12})), "changed outside a function"),
        (Change("src/new.py", "added"), "src/new.py was added"),
        (Change("src/m.py", "deleted"), "src/m.py was deleted"),
        (Change("data/labels.json", "modified"), "tests may read it"),
        (Change("tests/conftest.py", "modified"), "reach every test"),
        (Change("src/core.py", "modified", frozenset({1})), "marked core"),
        (Change("tests/test_a.py", "modified", frozenset({1})), "changed outside a function"),
    ],
)
def test_unsure_changes_run_everything(change, why) -> None:
    # test_a.py is imported by another test file: its module level may reach their tests
    assert why in _select(change, core=["src/core*.py"], imported_test_files=["tests/test_a.py"])


def test_no_map_and_a_map_older_than_the_lock_run_everything() -> None:
    assert "no per-test file map" in _select(Change("README.md", "modified"), file_map=None)
    older = _select(Change("README.md", "modified"), lock_at_base="version = 1\n")
    assert older == "the file map (aaaaaaa) is older than the lock"
    assert "could not be compared" in _select(changed_models=None)


def test_new_tests_changed_test_files_and_changed_models_are_selected() -> None:
    collected = {**COLLECTED, "tests/test_c.py::test_new": ("tests/test_c.py", ())}
    chosen = select(
        MAP,
        [Change("tests/test_a.py", "modified", frozenset({2}))],
        collected,
        old_source=lambda path: "",
        lock_at_base=None,
        changed_models={"org/b"},
    )
    assert set(chosen.tests) == {
        "tests/test_c.py::test_new",  # not in the map: added
        "tests/test_a.py::test_helper",  # in the changed test file
        "tests/test_a.py::test_other",
        "tests/test_b.py::test_plain",  # its model's entry changed
    }
    assert chosen.changed == ("model org/b", "tests/test_a.py")


def test_manifest_changes_name_models_and_other_settings_run_everything(tmp_path) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=tmp_path, check=True,
            capture_output=True,
        )  # fmt: skip

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.mlcheck.models]\n"org/a" = { revision = "v1" }\n"org/b" = {}\n')
    (tmp_path / "mlcheck.lock").write_text('version = 1\n[models."org/c"]\ncommit = "1"\n')
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    base = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=tmp_path, text=True).strip()
    pyproject.write_text('[tool.mlcheck.models]\n"org/a" = { revision = "v2" }\n"org/b" = {}\n')
    (tmp_path / "mlcheck.lock").write_text('version = 1\n[models."org/c"]\ncommit = "2"\n')
    assert _manifest_changes(tmp_path, base) == ({"org/a", "org/c"}, "")
    pyproject.write_text(pyproject.read_text() + '[project]\ndependencies = ["torch==9"]\n')
    _, why = _manifest_changes(tmp_path, base)
    assert why == "pyproject.toml changed outside its models (settings, dependencies)"


def test_replayed_history_never_misses_a_failing_test(tmp_path: Path) -> None:
    rows = replay(tmp_path / "repo")
    by_change = {row.change: row for row in rows}
    assert all(row.missed == () for row in rows), [r for r in rows if r.missed]
    assert all(row.disagreed == () for row in rows), [r for r in rows if r.disagreed]
    # regressions happened, and were caught by the selected runs
    assert sum(row.failing for row in rows) >= 4
    # precise where it can be: a function body in text.py runs only the tests that ran text.py
    assert by_change["bug in tokenize's body"].selected == 2
    assert by_change["bug in patches, vision only"].selected == 3  # test_vision.py's three
    # a new test: the tests of its file only
    assert by_change["new test in test_vision.py"].selected == 4
    assert by_change["docs only"].selected == 0
    assert "not affected by this change (since" in by_change["docs only"].why
    # everything where it cannot be sure
    for change in ("module-level constant changed", "data file edited (breaks test_vocab)",
                   "core file changed (select_core)", "conftest fixture body"):  # fmt: skip
        assert by_change[change].selected == by_change[change].total, change
