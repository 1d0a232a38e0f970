"""A newcomer's first test: a model that is not declared, not locked or not cached fails with a
one-screen message naming the command that fixes *this* state (real pytest runs, pytester)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import transformers  # imported once, before pytester's in-process runs (and used)

from mlcheck.errors import ModelNotCached, ModelNotDeclared, ModelNotLocked
from mlcheck.project.cache import add
from mlcheck.results.failure_kinds import FailureKind, classify_exception

FIRST_TEST = """
def test_first(models):
    model = models.random("gpt2", task="causal-lm")
    assert model.config.n_layer == 2
"""
# what a failure section must never show: mlcheck's internals or the hub library's advice
INTERNALS = (
    "huggingface_hub",
    "local_files_only",
    "Traceback",
    "mlcheck/project/cache.py",
    "mlcheck/models/",
)
LINE_BUDGET = 25


def failure_section(lines: list[str], test: str) -> list[str]:
    """The lines pytest prints for one failed (or errored) test, header included."""
    start = next(i for i, line in enumerate(lines) if re.match(rf"_+ .*\b{test} _+$", line))
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if re.match(r"(_{3,} .* _{3,}|={3,} .*)$", lines[i])
        ),
        len(lines),
    )
    return lines[start:end]


def assert_one_screen(section: list[str], command: str) -> None:
    text = "\n".join(section)
    assert f"`{command}`" in text, text
    assert len(section) <= LINE_BUDGET, f"{len(section)} lines:\n{text}"
    for internal in INTERNALS:
        assert internal not in text, f"{internal!r} shown:\n{text}"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache for the test runs (gpt2 may be cached on this machine)."""
    folder = tmp_path / "hf-cache"
    folder.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    return folder


@pytest.fixture
def tiny_gpt2(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-gpt2"
    transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=64).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "pyproject",
    ['[tool.mlcheck]\nmarkers = { slow = "real" }\n', '[project]\nname = "not-opted-in"\n'],
    ids=["opted-in", "plain-pytest"],
)
def test_undeclared_model_says_mlcheck_add(
    pytester: pytest.Pytester, cache: Path, pyproject: str
) -> None:
    pytester.makepyprojecttoml(pyproject)
    pytester.makepyfile(test_first=FIRST_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    section = failure_section(result.outlines, "test_first")
    assert_one_screen(section, "mlcheck add gpt2 --needs config")
    # the line of the test that needs it is shown, with pytest's own marker
    assert any(line.startswith(">") and "models.random" in line for line in section)


def test_verbose_chains_the_hub_error(pytester: pytest.Pytester, cache: Path) -> None:
    pytester.makepyprojecttoml("[tool.mlcheck]\n")
    pytester.makepyfile(test_first=FIRST_TEST)
    quiet = "\n".join(pytester.runpytest("-p", "no:cacheprovider").outlines)
    verbose = "\n".join(pytester.runpytest("-p", "no:cacheprovider", "-v").outlines)
    assert "LocalEntryNotFoundError" not in quiet
    assert "LocalEntryNotFoundError" in verbose and "mlcheck add gpt2" in verbose


def test_declared_but_not_locked_says_mlcheck_lock(pytester: pytest.Pytester, cache: Path) -> None:
    pytester.makepyprojecttoml(
        '[tool.mlcheck.models]\n"gpt2" = { revision = "main", needs = "config" }\n'
    )
    pytester.makepyfile(test_first=FIRST_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    section = failure_section(result.outlines, "test_first")
    assert_one_screen(section, "mlcheck lock")
    assert "mlcheck add" not in "\n".join(section)


def test_locked_but_not_cached_says_cache_warm(
    pytester: pytest.Pytester, cache: Path, tiny_gpt2: Path, tmp_path: Path
) -> None:
    pytester.makepyprojecttoml(
        '[tool.mlcheck.models]\n"gpt2" = { revision = "main", needs = "config" }\n'
    )
    # locked from another cache: this run's cache (HF_HUB_CACHE) lacks the files
    entry = add(tiny_gpt2, "gpt2", "main", cache_dir=tmp_path / "elsewhere", root=pytester.path)
    lock = pytester.path / "mlcheck.lock"
    # as if locked from the hub: `cache warm` fetches hub entries (a `cache add` one is re-added)
    lock.write_text(lock.read_text().replace('source = "local"', 'source = "hub"'))
    pytester.makepyfile(test_first=FIRST_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    section = failure_section(result.outlines, "test_first")
    assert_one_screen(section, "mlcheck cache warm")
    assert entry.commit[:12] in "\n".join(section)  # the locked commit it looked for


def test_real_model_marker_undeclared_or_config_only_says_add_weights(
    pytester: pytest.Pytester, cache: Path, tiny_gpt2: Path
) -> None:
    pytester.makepyprojecttoml(
        '[tool.mlcheck.models]\n"org/tiny" = { revision = "main", needs = "config" }\n'
    )
    add(tiny_gpt2, "org/tiny", "main", cache_dir=cache, root=pytester.path)
    pytester.makepyfile(
        test_real="""
        import pytest

        @pytest.mark.real_model("org/absent")
        def test_marker_undeclared():
            pass

        @pytest.mark.real_model("org/tiny")
        def test_marker_config_only():
            pass

        def test_fixture_config_only(models):
            models.real("org/tiny")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlcheck-tier=real")
    result.assert_outcomes(errors=2, skipped=1)  # the unmarked test is in the fast tier
    lines = result.outlines
    assert_one_screen(
        failure_section(lines, "test_marker_undeclared"), "mlcheck add org/absent --needs weights"
    )
    assert_one_screen(
        failure_section(lines, "test_marker_config_only"), "mlcheck add org/tiny --needs weights"
    )
    fast = pytester.runpytest("-p", "no:cacheprovider", "-k", "fixture")
    fast.assert_outcomes(failed=1, deselected=2)
    # an unmarked test is in the fast tier, which has no weights (issue 23): the marker first
    assert_one_screen(
        failure_section(fast.outlines, "test_fixture_config_only"),
        '@pytest.mark.real_model("org/tiny")',
    )


def test_failure_kind_follows_the_fix() -> None:
    """A model the project does not declare or lock is the code's to fix (the PR's manifest);
    a locked model missing from the cache is infrastructure (`mlcheck cache warm`)."""
    assert classify_exception(ModelNotDeclared("gpt2", need="config")) is FailureKind.CODE
    assert classify_exception(ModelNotLocked("gpt2", "main")) is FailureKind.CODE
    missing = ModelNotCached("gpt2", "main", "locked commit 0123456789ab: missing config.json")
    assert classify_exception(missing) is FailureKind.HUB
