"""`mlcheck run --changed-since`: the sentence "ran N of M ... tests: selected by change" lands in
results.json (``run.selection``, schema-valid) and in the PR comment section, the tests left out
are not run "not affected by this change (since abc1234)", and when unsure everything runs and
the sentence says why. Through `mlcheck run` in a subprocess on a small git project, and the
real comment renderer (cmark-gfm)."""

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

from mlcheck import results
from mlcheck.action import Inputs, Plan, selection_args
from mlcheck.errors import UsageError
from mlcheck.github.event import Event, parse_event
from mlcheck.report import RenderContext, render_section
from mlcheck.results import Outcome

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
    schema = Path(results.__file__).parent / "schema" / "results.schema.json"
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
