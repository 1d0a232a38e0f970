"""A constructed project history to replay ``--changed-since`` over (tests and bench/).

A git repository with a small package used by two models' tests (a tiny BERT for text, a tiny
ViT for images, both from configs in the repository), a shared helper, a data file, and a
history of commits: bugs in function bodies, fixes, refactors, a module-level constant, a
docs edit, a new test, a data-file edit, a conftest edit, a core file. For each commit,
:func:`replay` runs the full real tier (the truth, and the file map for the next commit) and
the selected run against the previous commit with the previous full run's map, and counts
what was selected and which failing tests the selection left out (must be none).

Runs are in-process (``pytest.main``), with the project's modules dropped from
``sys.modules`` before each run so every run imports the commit's code.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import transformers as tf

PYPROJECT = """\
[tool.mlcheck]
markers = { text = "real", vision = "real" }
select_core = ["src/pkg/core.py"]
"""

TEXT = """\
SCALE = 2


def tokenize(text):
    return text.lower().split()


def vocab_size(folder):
    with open(folder + "/vocab.txt") as f:
        return len(f.read().split())
"""

VISION = """\
def patches(size, patch):
    return (size // patch) ** 2
"""

COMMON = """\
def normalise(values):
    total = sum(values)
    return [v / total for v in values]
"""

CORE = """\
def device():
    return "cpu"
"""

CONFTEST = """\
import pytest


@pytest.fixture
def here():
    return __file__.rsplit("/", 2)[0]
"""

TEST_TEXT = """\
import pytest
from pkg import common, text


@pytest.mark.text
def test_tokenize(models, here):
    model = models.random(here + "/configs/text", task="sequence-classification")
    assert text.tokenize("A B") == ["a", "b"]
    assert model.config.num_labels == 2


@pytest.mark.text
def test_scale():
    assert text.SCALE == 2


@pytest.mark.text
def test_normalise_scores(models, here):
    models.config(here + "/configs/text")
    assert common.normalise([1, 3]) == [0.25, 0.75]


@pytest.mark.text
def test_vocab(here):
    assert text.vocab_size(here + "/src/pkg") == 5
"""

TEST_VISION = """\
import pytest
from pkg import core, vision


@pytest.mark.vision
def test_patches(models, here):
    model = models.random(here + "/configs/vision", task="image-classification")
    assert vision.patches(model.config.image_size, model.config.patch_size) == 4


@pytest.mark.vision
def test_device():
    assert core.device() == "cpu"


@pytest.mark.vision
def test_patch_count():
    assert vision.patches(32, 8) == 16
"""

TEST_FAST = """\
def test_fast():
    assert True
"""


@dataclass(frozen=True)
class Step:
    """One commit: what it does, and the files it writes (path -> text, None deletes)."""

    name: str
    files: dict[str, str | None]


def _edit(path: str, old: str, new: str) -> Callable[[Path], dict[str, str | None]]:
    def apply(root: Path) -> dict[str, str | None]:
        text = (root / path).read_text()
        assert old in text, (path, old)
        return {path: text.replace(old, new)}

    return apply


HISTORY: list[tuple[str, Callable[[Path], dict[str, str | None]]]] = [
    ("bug in tokenize's body", _edit("src/pkg/text.py", ".lower().split()", ".split()")),
    ("fix tokenize", _edit("src/pkg/text.py", "text.split()", "text.lower().split()")),
    ("refactor patches (same result)", _edit("src/pkg/vision.py", "(size // patch) ** 2",
                                              "(size // patch) * (size // patch)")),
    ("module-level constant changed", _edit("src/pkg/text.py", "SCALE = 2", "SCALE = 3")),
    ("constant restored", _edit("src/pkg/text.py", "SCALE = 3", "SCALE = 2")),
    ("docs only", lambda root: {"README.md": "# demo\n\nmore words\n"}),
    ("bug in the shared helper", _edit("src/pkg/common.py", "v / total", "v / (total + 1)")),
    ("helper fixed", _edit("src/pkg/common.py", "v / (total + 1)", "v / total")),
    ("new test in test_vision.py", lambda root: {
        "tests/test_vision.py": (root / "tests/test_vision.py").read_text()
        + "\n\n@pytest.mark.vision\ndef test_new():\n    assert vision.patches(8, 4) == 4\n"}),
    ("data file edited (breaks test_vocab)", lambda root: {"src/pkg/vocab.txt": "a b c d\n"}),
    ("data file restored", lambda root: {"src/pkg/vocab.txt": "a b c d e\n"}),
    ("core file changed (select_core)", _edit("src/pkg/core.py", '"cpu"', '"cpu"  # always')),
    ("conftest fixture body", _edit("tests/conftest.py", 'rsplit("/", 2)[0]',
                                    'rsplit("/", 2)[0]  # the root')),
    ("bug in patches, vision only", _edit("src/pkg/vision.py", "(size // patch) * (size // patch)",
                                          "(size // patch) * (size // patch) + 1")),
]  # fmt: skip


def make_repo(root: Path) -> None:
    """The project at its first commit."""
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": "# demo\n",
        ".gitignore": ".out/\n",
        "src/pkg/__init__.py": "",
        "src/pkg/text.py": TEXT,
        "src/pkg/vision.py": VISION,
        "src/pkg/common.py": COMMON,
        "src/pkg/core.py": CORE,
        "src/pkg/vocab.txt": "a b c d e\n",
        "tests/conftest.py": CONFTEST,
        "tests/test_text.py": TEST_TEXT,
        "tests/test_vision.py": TEST_VISION,
        "tests/test_fast.py": TEST_FAST,
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    tf.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        vocab_size=100,
    ).save_pretrained(root / "configs" / "text")  # fmt: skip
    tf.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=16, patch_size=8,
    ).save_pretrained(root / "configs" / "vision")  # fmt: skip
    _git(root, "init", "-q", "-b", "main")
    _commit(root, "first")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def _commit(root: Path, message: str) -> None:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", message)


def run(root: Path, *args: str) -> dict[str, tuple[str, str]]:
    """One in-process pytest run of the real tier; ``nodeid -> outcome``."""
    # every run imports the commit's code: drop the modules an earlier run imported from it
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(root)):
            del sys.modules[name]
    # importlib mode names a conftest by its path under the rootdir: the repository's
    # tests/conftest.py and ours are both `tests.conftest`; hide ours while the commit runs
    ours = {
        n: sys.modules.pop(n) for n in list(sys.modules) if n == "tests" or n.startswith("tests.")
    }
    importlib.invalidate_caches()
    out = root / ".out"
    try:
        code = _main(root, out, args)
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "tests"]:
            del sys.modules[name]
        sys.modules.update(ours)
    assert code in (0, 1), f"pytest exited {code}"
    tests = json.loads((out / "results.json").read_text())["tests"]
    return {t["nodeid"]: (t["outcome"], t["message"]) for t in tests if t["tier"] == "real"}


def _main(root: Path, out: Path, args: tuple[str, ...]) -> int | pytest.ExitCode:
    return pytest.main(
        [str(root), f"--rootdir={root}", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "--mlcheck-tier=real", f"--mlcheck-results={out}", "--import-mode=importlib",
         f"--override-ini=pythonpath={root / 'src'}", *args],
    )  # fmt: skip


@dataclass(frozen=True)
class Row:
    change: str
    total: int  # real-tier tests at this commit
    selected: int
    failing: int  # in the full run
    missed: tuple[str, ...]  # failing in the full run, not selected
    disagreed: tuple[str, ...]  # selected, with another outcome than in the full run
    why: str  # the not-run reason, or that everything ran


def replay(root: Path) -> list[Row]:
    """Every commit of :data:`HISTORY`, full run vs selected run; the rows, in order."""
    make_repo(root)
    map_path = root.parent / f"{root.name}-maps" / "map-0.json"
    run(root, f"--mlcheck-record-map={map_path}")
    rows = []
    for i, (name, change) in enumerate(HISTORY, start=1):
        for path, text in change(root).items():
            if text is None:
                (root / path).unlink()
            else:
                (root / path).write_text(text)
        _commit(root, name)
        selected = run(root, "--mlcheck-changed-since=HEAD~1", f"--mlcheck-file-map={map_path}")
        map_path = map_path.with_name(f"map-{i}.json")
        full = run(root, f"--mlcheck-record-map={map_path}")
        failing = {n for n, (outcome, _) in full.items() if outcome in ("failed", "error")}
        ran = {n for n, (outcome, _) in selected.items() if outcome != "not_run"}
        reasons = {m for outcome, m in selected.values() if outcome == "not_run"}
        rows.append(
            Row(
                change=name,
                total=len(full),
                selected=len(ran),
                failing=len(failing),
                missed=tuple(sorted(failing - ran)),
                disagreed=tuple(sorted(n for n in ran if selected[n][0] != full[n][0])),
                why=", ".join(sorted(reasons)) or "everything ran",
            )
        )
    return rows
