"""``--changed-since``: the real/gpu tests a change can break, and everything when unsure."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cmarkgfm
import jsonschema
import pytest
from cmarkgfm.cmark import Options
from selection_history import replay

from mlcheck.action.inputs import Inputs, Plan, selection_args
from mlcheck.errors import UsageError
from mlcheck.github.event import Event, parse_event
from mlcheck.plugin.selection import (
    Change,
    FileMap,
    _manifest_changes,
    changes_since,
    function_body_lines,
    select,
)
from mlcheck.report import RenderContext, render_section
from mlcheck.results import schema as results
from mlcheck.results.schema import Outcome

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


# --- test_selection_report.py (merged) --------------------
# `mlcheck run --changed-since`: the sentence "ran N of M ... tests: selected by change" lands in
# results.json (``run.selection``, schema-valid) and in the PR comment section, the tests left out
# are not run "not affected by this change (since abc1234)", and when unsure everything runs and
# the sentence says why. Through `mlcheck run` in a subprocess on a small git project, and the
# real comment renderer (cmark-gfm).

PYPROJECT = """\
[tool.mlcheck]
markers = { heavy = "real" }

[tool.pytest.ini_options]
markers = ["heavy"]
"""
TEXT = "def shout(s):\n    return s.upper()\n"
IMAGE = "def flip(xs):\n    return xs[::-1]\n"
TESTS = """\
import pytest
from pkg import image, text


@pytest.mark.heavy
def test_shout():
    assert text.shout("a") == "A"


@pytest.mark.heavy
def test_flip():
    assert image.flip([1, 2]) == [2, 1]


@pytest.mark.heavy
def test_flip_twice():
    assert image.flip(image.flip([1, 2])) == [1, 2]
"""
CONFTEST = "import sys, os\nsys.path.insert(0, os.path.join(os.path.dirname(__file__), 'src'))\n"


def _git(root: Path, *args: str) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    return subprocess.run([*git, *args], check=True, capture_output=True, text=True).stdout.strip()


def _run(root: Path, out: Path, *args: str) -> results.RunResults:
    """`mlcheck run` on the real tier; results (and maps) outside the checkout, as in CI."""
    argv = [sys.executable, "-m", "mlcheck", "run", "--tier", "real", "--no-warm"]
    done = subprocess.run(
        [*argv, "--results-dir", str(out), *args, "tests"], cwd=root, capture_output=True, text=True
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    data = json.loads((Path(out) / "results.json").read_text())
    schema = Path(results.__file__).parents[1] / "schema" / "results.schema.json"
    jsonschema.validate(data, json.loads(schema.read_text()))
    return results.read(Path(out) / "results.json")


def _html(run: results.RunResults) -> str:
    text = render_section(run, RenderContext(title="mlcheck"))
    return cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)


def test_selected_by_change_in_results_and_comment_and_all_when_unsure(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "conftest.py").write_text(CONFTEST)
    (root / "src" / "pkg" / "__init__.py").write_text("")
    (root / "src" / "pkg" / "text.py").write_text(TEXT)
    (root / "src" / "pkg" / "image.py").write_text(IMAGE)
    (root / "tests" / "test_things.py").write_text(TESTS)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")
    base = _git(root, "rev-parse", "HEAD")
    file_map = str(tmp_path / "map.json")
    full = _run(root, tmp_path / "full", "--record-map", file_map)  # the nightly: records the map
    assert full.run.selection is None and len(full.tests) == 3

    # a bug in a function body only test_flip* execute
    (root / "src" / "pkg" / "image.py").write_text(IMAGE.replace("[::-1]", "[::1]"))
    _git(root, "commit", "-qam", "break flip")
    # two xdist workers: each selects, and the controller writes one worker's sentence
    picked = _run(
        root, tmp_path / "picked", "--changed-since", base, "--file-map", file_map, "--workers", "2"
    )
    sentence = "ran 2 of 3 real tests: selected by change (1 file); nightly runs all"
    assert picked.run.selection == sentence
    by_name = {t.nodeid.rsplit("::", 1)[1]: t for t in picked.tests}
    assert by_name["test_flip"].outcome is Outcome.FAILED  # the regression is caught
    assert by_name["test_flip_twice"].outcome is Outcome.PASSED
    left_out = by_name["test_shout"]
    assert left_out.outcome is Outcome.NOT_RUN
    assert f"not affected by this change (since {base[:7]})" in (left_out.message or "")
    html = _html(picked)
    assert sentence in html
    assert f"since {base[:7]}" in html

    # unsure (no map): everything runs, and the sentence says why
    unsure = _run(root, tmp_path / "unsure", "--changed-since", base)
    assert {t.outcome for t in unsure.tests} == {Outcome.PASSED, Outcome.FAILED}
    assert unsure.run.selection is not None
    assert unsure.run.selection.startswith("ran all 3 real tests: ")
    assert unsure.run.selection in _html(unsure).replace("\\", "")


def test_what_the_run_itself_writes_is_no_change(tmp_path: Path) -> None:
    """The results folder inside the checkout (the action's and the GPU workflow's), bytecode
    and pip's egg-info are written by the run, not by the change: without this, every run with
    results in the checkout ran everything ("journal.jsonl changed")."""
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "m.py").write_text("X = 1\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")
    base = _git(root, "rev-parse", "HEAD")
    for made in (
        "mlcheck-results/journal.jsonl",
        "pkg/__pycache__/m.cpython-311.pyc",
        "src/proj.egg-info/PKG-INFO",
        "data.csv",  # a file the change added: tests may read it
    ):
        (root / made).parent.mkdir(parents=True, exist_ok=True)
        (root / made).write_text("x")
    found = [c.path for c in changes_since(root, base, ["mlcheck-results"])]
    assert found == ["data.csv"]
    assert "mlcheck-results/journal.jsonl" in [c.path for c in changes_since(root, base)]


# --- the action's `select` input


def _event(name: str, payload: dict[str, object]) -> Event:
    return parse_event(name, payload, {"GITHUB_REPOSITORY": "o/r", "GITHUB_SHA": "b" * 40})


PR_PAYLOAD = {
    "action": "opened",
    "pull_request": {
        "number": 7,
        "head": {"sha": "a" * 40, "ref": "f", "repo": {"full_name": "o/r"}},
        "base": {"sha": "c" * 40, "ref": "main", "repo": {"full_name": "o/r"}},
        "user": {"login": "x"},
    },
}


def test_the_action_selects_by_change_on_the_gpu_dispatch_and_records_the_map_nightly() -> None:
    plan = Plan("run", "real,gpu", Path("/w"), Path("/w"), Path("/w/mlcheck-results"))
    dispatch = _event("workflow_dispatch", {"inputs": {"sha": "a" * 40, "pr": "7"}})
    args, why = selection_args(Inputs(file_map="maps/file-map.json"), plan, dispatch)
    assert args == ["--changed-since", "b" * 40, "--file-map", "maps/file-map.json"]
    assert "changed since bbbbbbb" in why
    # a labeled PR's own run compares with the PR's base; `select: all` turns it off
    pr = _event("pull_request", PR_PAYLOAD)
    assert selection_args(Inputs(select="changed"), plan, pr)[0] == ["--changed-since", "c" * 40]
    assert selection_args(Inputs(), plan, pr) == ([], "")  # default all outside the dispatch
    assert selection_args(Inputs(select="all"), plan, dispatch) == ([], "")
    # the nightly records the map into its results (the artifact carries it)
    nightly = _event("schedule", {"schedule": "0 3 * * *"})
    assert selection_args(Inputs(), plan, nightly)[0] == [
        "--record-map",
        "mlcheck-results/file-map.json",
    ]
    fast = dataclasses.replace(plan, tier="fast")  # fast tests are never left out
    assert selection_args(Inputs(select="changed"), fast, dispatch) == ([], "")
    with pytest.raises(UsageError, match="`select: some`"):
        Inputs.from_env({"INPUT_SELECT": "some"})
