"""The public names of ``mlcheck`` are what they say, whatever was imported before them.

Regression: ``mlcheck.shrink`` used to be both a submodule and the lazy function; importing the
submodule first replaced the function with the module (``TypeError: 'module' object is not
callable``), so which tests failed depended on their order.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import textwrap
import types

import mlcheck


def test_every_public_name_resolves_after_every_submodule_is_imported() -> None:
    # A fresh interpreter: the order of imports is the point, and this process has its own.
    code = textwrap.dedent(
        """
        import importlib, pkgutil, types
        import mlcheck
        for info in pkgutil.walk_packages(mlcheck.__path__, "mlcheck."):
            if not info.name.endswith("__main__"):  # runs the CLI
                importlib.import_module(info.name)
        bad = []
        for name in mlcheck.__all__:
            value = getattr(mlcheck, name)
            if name in {"checks", "serving"}:
                ok = isinstance(value, types.ModuleType)
            elif name == "__version__":
                ok = isinstance(value, str)
            else:
                ok = callable(value) and not isinstance(value, types.ModuleType)
            if not ok:
                bad.append(f"{name}: {type(value).__name__}")
        print("BAD" if bad else "OK", *bad)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "OK", done.stdout


def test_shrink_is_the_function_after_models_random_imported_its_module() -> None:
    importlib.import_module("mlcheck.shrinking")
    from mlcheck import shrink

    assert callable(shrink) and not isinstance(shrink, types.ModuleType)
    assert mlcheck.shrink is shrink


def test_no_public_name_is_also_a_submodule_name() -> None:
    submodules = {info.name for info in pkgutil.iter_modules(mlcheck.__path__)}
    functions = set(mlcheck.__all__) - {"checks", "serving", "__version__"}
    assert not functions & submodules
