"""The layout STYLE.md describes, kept by reading the package's source (ast, no imports):

- every environment variable is read through ``mlcheck/constants.py``;
- nothing at or below ``results`` in the flow imports pytest;
- the renderers import no network code; only ``mlcheck/github/`` uses the HTTP library;
- no import cycles among mlcheck's modules (module-level imports).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from mlcheck import constants

PACKAGE = Path(__file__).resolve().parents[2] / "mlcheck"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, ast.Module]:
    return {
        _module_name(path): ast.parse(path.read_text(encoding="utf-8"), str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, *, module_level: bool) -> Iterator[str]:
    """Every module ``module`` imports (``from x import y`` yields x and x.y); with
    ``module_level``, only what runs at import (not in functions or ``if TYPE_CHECKING``)."""

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            yield node
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from walk([c for c in children if isinstance(c, ast.stmt)])
            if isinstance(node, ast.Try):
                for handler in node.handlers:
                    yield from walk(handler.body)

    tree = _modules()[module]
    for node in walk(tree.body) if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _internal(names: Iterator[str]) -> set[str]:
    known = _modules()
    return {name for name in names if name in known}


def _closure(module: str) -> set[str]:
    """``module`` and every module (ours and third-party) importing it imports, at import."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in _modules():
            parents = [".".join(current.split(".")[:i]) for i in range(2, current.count(".") + 1)]
            todo.extend(p for p in parents if p in _modules())
            todo.extend(_imports(current, module_level=True))
    return seen


def _top(name: str) -> str:
    return name.split(".")[0]


# --- environment variables -----------------------------------------------------------------

# Modules at the edge may hand this process's whole environment inward (``os.environ`` as a
# mapping) and write variables for child processes; they never read one variable directly.
EDGE = re.compile(
    r"mlcheck\.(cli(\..+)?|action\.main|plugin|github\.event)$"
    # starts a model server with this process's environment plus PORT
    r"|mlcheck\.serving$"
    # `python -I -m mlcheck.action.sandbox`: the GPU job's command line for the PR-code sandbox
    r"|mlcheck\.action\.sandbox$"
    # `python -I -m mlcheck.action.trusted_warm`: the GPU job's fetch step, HF_TOKEN in its env
    r"|mlcheck\.action\.trusted_warm$"
)
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_-]*[A-Z0-9]$")


def _env_violations(module: str) -> Iterator[str]:
    def is_os_environ(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )

    def literal(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str)

    tree = _modules()[module]
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr == "getenv":
            yield f"{where}: os.getenv (use mlcheck.constants)"
        if is_os_environ(node):
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute):
                yield f"{where}: os.environ.{parent.attr} (use mlcheck.constants)"
            elif isinstance(parent, ast.Subscript) and parent.value is node:
                if isinstance(parent.ctx, ast.Load):
                    yield f"{where}: os.environ[...] read (use mlcheck.constants)"
                elif literal(parent.slice):
                    yield f"{where}: os.environ[{ast.unparse(parent.slice)}] = ...: use its name"
            elif not EDGE.match(module):
                yield f"{where}: os.environ outside the edge modules (take a mapping)"
        # environ.get("GITHUB_OUTPUT") / env["HF_TOKEN"]: the names live in constants.py
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
            and literal(node.args[0])
            and ENV_NAME.fullmatch(node.args[0].value)  # type: ignore[attr-defined]
            and "env" in ast.unparse(node.func.value).lower()
        ):
            yield f"{where}: {ast.unparse(node)}: use the name from mlcheck.constants"
        if (
            isinstance(node, ast.Subscript)
            and literal(node.slice)
            and ENV_NAME.fullmatch(node.slice.value)  # type: ignore[attr-defined]
            and "env" in ast.unparse(node.value).lower()
        ):
            yield f"{where}: {ast.unparse(node)}: use the name from mlcheck.constants"


def _env_problems(module: str) -> list[str]:
    """One problem per offending line."""
    by_line = {v.split(": ", 1)[0]: v for v in _env_violations(module)}
    return sorted(by_line.values())


def test_every_environment_variable_is_read_through_constants() -> None:
    violations = [
        v for module in _modules() if module != "mlcheck.constants" for v in _env_problems(module)
    ]
    assert not violations, "\n".join(violations)


def test_the_environment_check_catches_a_direct_read(tmp_path: Path) -> None:
    # the rule above must be able to fail: each of these is one violation
    source = (
        "import os\n"
        "a = os.environ.get('GITHUB_SHA')\n"
        "b = os.getenv('X')\n"
        "c = os.environ['GITHUB_REF']\n"
        "os.environ['RUN_SLOW'] = '1'\n"
        "def f(environ): return environ.get('GITHUB_OUTPUT')\n"
        "d = dict(os.environ)\n"
    )
    _modules()["mlcheck._probe"] = ast.parse(source)
    try:
        assert len(_env_problems("mlcheck._probe")) == 6
    finally:
        del _modules()["mlcheck._probe"]


def test_every_env_name_in_constants_is_documented() -> None:
    names = {v for k, v in vars(constants).items() if k.startswith("ENV_")}
    assert names == set(constants.VARIABLES)
    for var in constants.VARIABLES.values():
        assert var.meaning.strip(), var.name


# --- the flow: pytest, network, GitHub ------------------------------------------------------

# The pytest side of the flow (STYLE.md): the plugin, what it wires (fixtures, checks,
# decorators, golden values, shards), and what those need. Everything else is at or below
# `results` (results, merge, digest, report, github, publish, the CLI and the action) or
# below the manifest (manifest, lock, cache), and must load without pytest.
PYTEST_SIDE = re.compile(
    r"mlcheck(\.(plugin(\..+)?|tiers\.decorators|models(\..+)?|shrinking|serving|results\.shard"
    r"|progress|stash|checks(\..+)?|golden(\..+)?"
    r"|power\.(activate|seeds)))?$"  # the pytest plugins `mlcheck mutate` / `calibrate` load
)
NETWORK = {"httpx", "requests", "urllib3", "http", "socket", "huggingface_hub", "mlcheck.github"}
HTTP_LIBRARIES = {"httpx", "requests", "urllib3"}


def _pytest_free() -> list[str]:
    return [m for m in _modules() if not PYTEST_SIDE.match(m)]


def _renderers() -> list[str]:
    return [m for m in _modules() if m == "mlcheck.report" or m.startswith("mlcheck.report.")]


def test_the_sets_name_real_modules() -> None:
    assert "mlcheck.results.schema" in _pytest_free()
    assert "mlcheck.github.client" in _pytest_free()
    assert "mlcheck.plugin" not in _pytest_free()
    assert _renderers()


@pytest.mark.parametrize("module", _pytest_free())
def test_nothing_below_results_imports_pytest(module: str) -> None:
    direct = {_top(name) for name in _imports(module, module_level=False)}
    assert not direct & {"pytest", "_pytest", "xdist"}, f"{module} imports pytest"
    loaded = {_top(name) for name in _closure(module)}
    assert "pytest" not in loaded, f"importing {module} imports pytest"


@pytest.mark.parametrize("module", _renderers())
def test_renderers_import_no_network_code(module: str) -> None:
    direct = set(_imports(module, module_level=False))
    for name in direct | _closure(module):
        assert _top(name) not in NETWORK and not name.startswith("mlcheck.github"), (
            f"{module} reaches network code: {name}"
        )


def test_only_the_github_package_uses_the_http_library() -> None:
    users = {
        module
        for module in _modules()
        if {_top(name) for name in _imports(module, module_level=False)} & HTTP_LIBRARIES
    }
    assert users and all(m.startswith("mlcheck.github.") for m in users), users


def _runtime_imports(module: str) -> Iterator[str]:
    """Every import that can run: at module level and inside functions (not ``TYPE_CHECKING``)."""

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (n for c in child.orelse for n in walk(c))
                continue
            yield from walk(child)

    for node in walk(_modules()[module]):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _with_parents(name: str) -> set[str]:
    """Importing ``mlcheck.a.b`` runs ``mlcheck/a/__init__.py`` first: its parents are imported."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)}


def test_no_import_cycles() -> None:
    """No circle, counting imports inside functions and the ``__init__`` each import runs."""
    graph = {
        m: _internal(iter({p for name in _runtime_imports(m) for p in _with_parents(name)})) - {m}
        for m in _modules()
    }
    # `from mlcheck import x` names the package too; a module's own packages are not a cycle
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "a, b",
    [
        ("from mlcheck import _b\n", "import mlcheck._a\n"),
        # the circle the first check missed: one side imports inside a function
        ("from mlcheck import _b\n", "def f():\n    from mlcheck._a import x\n"),
    ],
    ids=["module-level", "inside-a-function"],
)
def test_the_cycle_check_can_fail(a: str, b: str) -> None:
    _modules()["mlcheck._a"] = ast.parse(a)
    _modules()["mlcheck._b"] = ast.parse(b)
    try:
        with pytest.raises(AssertionError, match="_a"):
            test_no_import_cycles()
    finally:
        del _modules()["mlcheck._a"], _modules()["mlcheck._b"]


# --- the outcome's path to the comment, in layers --------------------------------------------

# A failing test's outcome goes results -> report (words) -> publish (sections, GitHub) -> cli /
# action (the commands). `github` is the client beside them: it knows neither the words nor
# the comment's sections. Each package imports none of those after it (at import, inside
# functions too; `if TYPE_CHECKING:` imports are types only and are left out).
LATER = {
    "mlcheck.results": ("report", "github", "publish", "cli", "action", "plugin"),
    "mlcheck.report": ("github", "publish", "cli", "action", "plugin"),
    "mlcheck.github": ("report", "publish", "cli", "action", "plugin"),
    "mlcheck.publish": ("cli", "action", "plugin"),
}
# The commands on the path share code through report/ and publish/, not through each other.
PATH_COMMANDS = (
    "mlcheck.cli.run",
    "mlcheck.cli.report",
    "mlcheck.cli.publish",
    "mlcheck.action.main",
)


def _back_up_imports(module: str) -> list[str]:
    found = []
    for package, later in LATER.items():
        if module == package or module.startswith(package + "."):
            for name in set(_runtime_imports(module)):
                if any(name == f"mlcheck.{p}" or name.startswith(f"mlcheck.{p}.") for p in later):
                    found.append(f"{module} imports {name}")
    if module in PATH_COMMANDS:
        commands = {m for m in _modules() if m.startswith("mlcheck.cli.")} - {
            "mlcheck.cli.commands"
        }
        found += [
            f"{module} imports {name}"
            for name in set(_runtime_imports(module))
            if name in commands and name != module
        ]
    return sorted(found)


def test_no_import_back_up_the_layers() -> None:
    found = [line for module in _modules() for line in _back_up_imports(module)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "module, source",
    [
        ("mlcheck.github._probe", "def f():\n    from mlcheck.report import sticky\n"),
        ("mlcheck.results._probe", "from ..report.messages import HEADINGS\n"),
        ("mlcheck.cli.run", "def f():\n    from .report import write_outputs\n"),
    ],
    ids=["github-to-report", "results-to-report", "command-to-command"],
)
def test_the_layer_check_can_fail(module: str, source: str) -> None:
    saved = _modules().get(module)
    _modules()[module] = ast.parse(source)
    try:
        assert _back_up_imports(module), source
    finally:
        if saved is None:
            del _modules()[module]
        else:
            _modules()[module] = saved


# --- module size ------------------------------------------------------------------------------

MAX_MODULE_LINES = 600  # issue 21: split along real seams past this


def _long_modules(package: Path, limit: int) -> dict[str, int]:
    lines = {
        path.relative_to(package.parent).as_posix(): len(
            path.read_text(encoding="utf-8").splitlines()
        )
        for path in sorted(package.rglob("*.py"))
    }
    return {path: n for path, n in lines.items() if n > limit}


def test_no_module_is_over_600_lines() -> None:
    assert _long_modules(PACKAGE, MAX_MODULE_LINES) == {}


def test_the_size_check_can_fail(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (package / "small.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    assert _long_modules(package, MAX_MODULE_LINES) == {"pkg/sub/big.py": MAX_MODULE_LINES + 1}


# ---------------------------------------------------------------------------------------------
# Tests mirror the package: tests/project/test_lock.py for mlcheck/project/lock.py


TESTS = PACKAGE.parent / "tests"


def _tested_module(test: Path, package: Path = PACKAGE) -> Path | None:
    """The module a test file is named for, or None: ``tests/P/test_M.py`` tests
    ``mlcheck/P/M.py`` (or the private ``_M.py``, or the package ``M/``), and
    ``tests/P/test_P.py`` the package ``mlcheck/P/__init__.py``."""
    folder = package.joinpath(*test.parent.relative_to(TESTS).parts)
    name = test.stem.removeprefix("test_")
    candidates = [folder / f"{name}.py", folder / f"_{name}.py", folder / name / "__init__.py"]
    if folder != package and name == folder.name:
        candidates.append(folder / "__init__.py")
    return next((c for c in candidates if c.is_file()), None)


def _unmapped_test_files(tests: Path = TESTS, package: Path = PACKAGE) -> list[str]:
    return [
        str(test.relative_to(tests))
        for test in sorted(tests.rglob("test_*.py"))
        if test.relative_to(tests).parts[0] not in ("scenarios", "data")
        and _tested_module(test, package) is None
    ]


def test_every_test_file_maps_to_a_module_or_is_a_scenario() -> None:
    unmapped = _unmapped_test_files()
    assert not unmapped, (
        f"{unmapped}: name a test file for the module it tests (tests/project/test_lock.py for "
        "mlcheck/project/lock.py), or move a test that crosses modules to tests/scenarios/"
    )


def test_the_mapping_check_can_fail() -> None:
    assert _tested_module(TESTS / "project" / "test_lock.py") == PACKAGE / "project" / "lock.py"
    assert _tested_module(TESTS / "checks" / "test_checks.py") == PACKAGE / "checks" / "__init__.py"
    assert _tested_module(TESTS / "checks" / "test_checks_v2.py") is None
    assert _tested_module(TESTS / "test_project.py") == PACKAGE / "project" / "__init__.py"
    assert _tested_module(TESTS / "project" / "test_project.py") is not None
    assert _tested_module(TESTS / "test_layout.py") is None
