"""Every docstring example in the ``mlcheck`` package runs and says what the code does.

The stdlib's doctest runner (what ``pytest --doctest-modules`` uses), module by module, so a
wrong example fails here under the module's name. Examples that need a network, a GPU or a
project on disk say ``# doctest: +SKIP``; the rest run, the ones with torch on tiny tensors.
(A dedicated test rather than ``--doctest-modules`` in addopts: that option would also import
every ``.py`` under ``tests/``, data and golden fixtures included.)
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import mlcheck

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(mlcheck.__path__, "mlcheck.")
    if not info.name.endswith("__main__")  # runs the CLI
)


def _run(name: str) -> tuple[doctest.TestResults, str]:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out = io.StringIO()
    for test in doctest.DocTestFinder().find(module, name):
        if test.examples:
            runner.run(test, out=out.write)
    return runner.summarize(verbose=False), out.getvalue()


@pytest.mark.parametrize("name", ["mlcheck", *MODULES])
def test_docstring_examples_are_right(name: str) -> None:
    results, report = _run(name)
    assert results.failed == 0, report


def test_the_examples_are_found_and_run() -> None:
    """The runner finds the examples (a finder that found none would pass every test above)."""
    results, report = _run("mlcheck.project.lock")
    assert results.attempted >= 3 and results.failed == 0, report
    broken = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "broken", "broken.py", 0)
    runner = doctest.DocTestRunner()
    runner.run(broken, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1
