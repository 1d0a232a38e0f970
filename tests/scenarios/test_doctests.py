"""Every docstring example in the ``mlcheck`` package runs and says what the code does.

The stdlib's doctest runner (what ``pytest --doctest-modules`` uses), one case per docstring
that has an example to run, so a wrong example fails here under the docstring's name, and a
case that ran nothing fails too. Examples that need a network, a GPU or a project on disk say
``# doctest: +SKIP``; a docstring whose every example is skipped is listed in ``ALL_SKIPPED``
with the reason. (A dedicated test rather than ``--doctest-modules`` in addopts: that option
would also import every ``.py`` under ``tests/``, data and golden fixtures included.)
"""

from __future__ import annotations

import ast
import doctest
import importlib
import io
from pathlib import Path

import pytest

import mlcheck

PACKAGE = Path(mlcheck.__file__).parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Docstrings whose examples all need what a unit test does not have; each runs in its own tests.
ALL_SKIPPED = {
    "a model, a training run or a GPU (tests/checks/)": (
        "mlcheck.checks.accumulation.assert_grad_accumulation",
        "mlcheck.checks.devices.assert_device_roundtrip",
        "mlcheck.checks.equivalence.assert_batch_invariant",
        "mlcheck.checks.equivalence.assert_equivalent",
        "mlcheck.checks.equivalence.assert_save_load_roundtrip",
        "mlcheck.checks.generation.assert_cache_consistent",
        "mlcheck.checks.generation.assert_causal",
        "mlcheck.checks.labels.assert_predicts",
        "mlcheck.checks.losses.assert_initial_loss",
        "mlcheck.checks.losses.assert_loss_matches",
        "mlcheck.checks.numerics.assert_deterministic",
        "mlcheck.checks.numerics.assert_dtype_agrees",
        "mlcheck.checks.shapes.assert_output_shape",
        "mlcheck.checks.training.assert_frozen",
        "mlcheck.checks.training.assert_loss_decreases",
        "mlcheck.checks.training.assert_overfits",
        "mlcheck.checks.training.assert_params_update",
        "mlcheck.checks.training.assert_train_mode",
        "mlcheck.checks.types.LossFn",
    ),
    "several processes (tests/distributed/)": (
        "mlcheck.checks.distributed.assert_ddp_equivalent",
        "mlcheck.checks.distributed.assert_same_on_all_ranks",
        "mlcheck.distributed.rank.Dist",
        "mlcheck.plugin.distributed.DistributedTests.dist",
    ),
    "a pytest run, a model, a project, a cache or the hub": (
        "mlcheck.golden.accept.accept",
        "mlcheck.golden.fixture",
        "mlcheck.golden.fixture.Golden",
        "mlcheck.models.ModelFactory.config",
        "mlcheck.models.ModelFactory.empty",
        "mlcheck.models.ModelFactory.random",
        "mlcheck.models.ModelFactory.real",
        "mlcheck.models.ModelFactory.tokenizer",
        "mlcheck.plugin.fixtures.models",
        "mlcheck.project.cache.add",
        "mlcheck.project.cache.locate",
        "mlcheck.project.cache.verify",
        "mlcheck.project.cache.verify_weights",
        "mlcheck.project.hub.warm",
    ),
    "a model server (tests/test_serving.py)": (
        "mlcheck.serving",
        "mlcheck.serving.assert_serves",
        "mlcheck.serving.serve",
    ),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstrings(module: str, tree: ast.AST, prefix: str) -> dict[str, str]:
    """Docstrings by the name doctest gives them: module, classes, functions, methods."""
    found = {prefix: ast.get_docstring(tree, clean=False) or ""} if prefix == module else {}
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}.{node.name}"
            found[name] = ast.get_docstring(node, clean=False) or ""
            if isinstance(node, ast.ClassDef):
                found |= {k: v for k, v in _docstrings(module, node, name).items() if k != name}
    return found


def _runnable(text: str) -> int:
    """How many of a docstring's examples run (not marked ``+SKIP``)."""
    examples = doctest.DocTestParser().get_examples(text)
    return sum(1 for e in examples if not e.options.get(doctest.SKIP))


def _cases() -> tuple[dict[str, int], list[str]]:
    """Docstrings with examples to run (name -> how many), and those whose every example skips."""
    runnable: dict[str, int] = {}
    skipped: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module.endswith("__main__"):  # runs the CLI
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, text in _docstrings(module, tree, module).items():
            if ">>>" not in text:
                continue
            if count := _runnable(text):
                runnable[name] = count
            else:
                skipped.append(name)
    return runnable, skipped


RUNNABLE, SKIPPED = _cases()


def _run(name: str) -> tuple[doctest.TestResults, str]:
    """Runs the one docstring called ``name`` (its module imported), however deep it sits."""
    module = name
    while True:
        try:
            imported = importlib.import_module(module)
            break
        except ModuleNotFoundError:
            module = module.rpartition(".")[0]
    tests = [t for t in doctest.DocTestFinder().find(imported, module) if t.name == name]
    assert tests, f"doctest does not find the docstring {name} that has examples"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out = io.StringIO()
    runner.run(tests[0], out=out.write)
    return runner.summarize(verbose=False), out.getvalue()


@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_docstring_examples_are_right(name: str) -> None:
    results, report = _run(name)
    assert results.failed == 0, report
    assert results.attempted == RUNNABLE[name], f"{name}: ran {results.attempted} examples"


def test_a_docstring_whose_examples_all_skip_says_why() -> None:
    listed = sorted(name for names in ALL_SKIPPED.values() for name in names)
    assert sorted(SKIPPED) == listed, (
        "give the docstring an example that runs on tiny inputs, or list it in ALL_SKIPPED "
        "with what its examples need"
    )


def test_the_examples_are_found_and_run() -> None:
    """The runner finds the examples (a finder that found none would pass every test above)."""
    assert len(RUNNABLE) >= 50
    results, report = _run("mlcheck.project.lock.read_lock")
    assert results.attempted >= 1 and results.failed == 0, report
    broken = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "broken", "broken.py", 0)
    runner = doctest.DocTestRunner()
    runner.run(broken, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1
