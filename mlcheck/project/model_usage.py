"""Which models a test suite uses, read from its source (``mlcheck add --from-tests``).

The test files are parsed with :mod:`ast`, never imported: nothing of the suite runs. A model
id counts when it is a string literal (or a module-level constant bound to one) passed to

- the ``models`` fixture: ``models.config/random/empty/tokenizer(...)`` need the config,
  ``models.real(...)`` the weights;
- the ``real_model`` marker (``@pytest.mark.real_model("org/name")``, ``pytestmark = ...``,
  ``pytest.param(..., marks=...)``): the weights;
- a direct library load, as most existing suites name their models:
  ``AutoConfig/AutoTokenizer/...Processor.from_pretrained(id)`` need the config,
  ``AutoModel...from_pretrained(id)`` (any other class) and ``pipeline(task, model=id)`` the
  weights. ``from_pretrained(tmpdir)`` and other non-literals are listed, like the rest.

A test's parameter counts too when ``@pytest.mark.parametrize`` (on the test or its class) gives
it only string literals. Any other argument (a variable, an f-string, an attribute) is listed
with its file and line, for the user to declare by hand; a config object built in place
(``models.random(BertConfig())``) is not a model id and is skipped.

>>> usage = scan_source('models.random("gpt2")\\nmodels.real(name)\\n', Path("test_x.py"))
>>> usage.models, [u.where for u in usage.unresolved]
({'gpt2': 'config'}, ['test_x.py:2'])
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import Need, is_model_id

# ModelFactory's methods that take a model id first, and what each needs of it.
FACTORY_NEEDS: dict[str, Need] = {
    "config": "config",
    "random": "config",
    "empty": "config",
    "tokenizer": "config",
    "real": "weights",
}
MARKER = "real_model"
_ID_KEYWORDS = ("model_id", "model_id_or_config")
_PRETRAINED_KEYWORDS = ("pretrained_model_name_or_path",)
# `X.from_pretrained` of these classes reads the config and tokenizer files only (fast tier).
_CONFIG_ONLY_CLASSES = (
    "Config",
    "Tokenizer",
    "TokenizerFast",
    "Processor",
    "FeatureExtractor",
    "ImageProcessor",
    "ImageProcessorFast",
    "GenerationConfig",
)
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "build", "dist", "venv"}


@dataclass(frozen=True)
class Site:
    """One call or marker in a test file."""

    path: Path
    line: int
    code: str  # the call as written (``models.random(name)``)
    why: str = ""  # for an unresolved one: what the argument is

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Usage:
    """Model id -> what the tests need of it; the sites that name one; the unresolved sites."""

    models: dict[str, Need] = field(default_factory=dict)
    sites: dict[str, list[Site]] = field(default_factory=dict)
    unresolved: list[Site] = field(default_factory=list)
    files: int = 0

    def add(self, model_id: str, need: Need, site: Site) -> None:
        before = self.models.get(model_id)
        self.models[model_id] = "weights" if "weights" in (need, before) else need
        self.sites.setdefault(model_id, []).append(site)

    def merge(self, other: Usage) -> None:
        for model_id, sites in other.sites.items():
            for site in sites:
                self.add(model_id, other.models[model_id], site)
        self.unresolved += other.unresolved
        self.files += other.files


def find_test_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The test files under ``paths`` (``test_*.py``, ``*_test.py``, ``conftest.py``); a file
    named explicitly is taken whatever its name."""
    for path in paths:
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*.py")):
            parts = found.relative_to(path).parts
            if any(p.startswith(".") or p in _SKIP_DIRS for p in parts[:-1]):
                continue
            name = found.name
            if name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py":
                yield found


def scan(paths: Iterable[Path]) -> Usage:
    """The models the test files under ``paths`` use (see the module's docstring)."""
    usage = Usage()
    for path in find_test_files(paths):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            usage.unresolved.append(Site(path, 1, "", f"could not read it ({exc})"))
            continue
        usage.merge(scan_source(source, path))
    return usage


def scan_source(source: str, path: Path) -> Usage:
    """The models one file's source uses."""
    usage = Usage(files=1)
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        usage.unresolved.append(Site(path, exc.lineno or 1, "", f"not valid Python ({exc.msg})"))
        return usage
    constants = _module_constants(tree)
    parametrized = _parametrized_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        names = {**constants, **parametrized.get(id(node), {})}
        for arg, need in _library_loads(node):
            _resolve(usage, arg, need, node, path, names, config_ok=False)
        if not isinstance(node.func, ast.Attribute):
            continue
        method = node.func.attr
        if method == MARKER and _is_mark(node.func.value):
            args = list(node.args) + _keyword_items(node, "models")
            for marked in args:
                _resolve(usage, marked, "weights", node, path, names, config_ok=False)
        elif method in FACTORY_NEEDS and _is_models_fixture(node.func.value):
            first = node.args[0] if node.args else _keyword(node, _ID_KEYWORDS)
            if first is not None:
                config_ok = method in ("random", "empty")  # these also take a config object
                _resolve(usage, first, FACTORY_NEEDS[method], node, path, names, config_ok)
    return usage


def _resolve(
    usage: Usage,
    arg: ast.expr,
    need: Need,
    call: ast.Call,
    path: Path,
    names: dict[str, str | list[str]],
    config_ok: bool,
) -> None:
    site = Site(path, call.lineno, ast.unparse(call))
    values: list[str] = []
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        values = [arg.value]
    elif isinstance(arg, ast.Name) and arg.id in names:
        found = names[arg.id]
        values = [found] if isinstance(found, str) else found
    elif isinstance(arg, ast.Call) and config_ok:
        return  # a config built in place: nothing to declare
    if not values:
        why = "an f-string" if isinstance(arg, ast.JoinedStr) else f"`{ast.unparse(arg)}`"
        usage.unresolved.append(Site(path, call.lineno, site.code, why))
    for value in values:
        if is_model_id(value):  # any other string is a local folder: nothing to declare
            usage.add(value, need, site)


def _library_loads(call: ast.Call) -> list[tuple[ast.expr, Need]]:
    """The model-id arguments of a direct library load, and what each needs:
    ``X.from_pretrained(id)`` (a config, tokenizer or processor class: the config; anything
    else, a model: the weights) and ``pipeline(task, model=id, tokenizer=id)`` (its model: the
    weights; its tokenizer, a string: the config)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name == "from_pretrained" and isinstance(func, ast.Attribute):
        first = call.args[0] if call.args else _keyword(call, _PRETRAINED_KEYWORDS)
        if first is None:
            return []
        owner = ast.unparse(func.value).rsplit(".", 1)[-1]
        return [(first, "config" if owner.endswith(_CONFIG_ONLY_CLASSES) else "weights")]
    if name != "pipeline":
        return []
    loads: list[tuple[ast.expr, Need]] = []
    model = call.args[1] if len(call.args) > 1 else _keyword(call, ("model",))
    if model is not None:
        loads.append((model, "weights"))
    tokenizer = call.args[3] if len(call.args) > 3 else _keyword(call, ("tokenizer",))
    # a tokenizer object (not a name) is not a load; only a string literal is declared
    if isinstance(tokenizer, ast.Constant) and isinstance(tokenizer.value, str):
        loads.append((tokenizer, "config"))
    return loads


def _parametrized_names(tree: ast.Module) -> dict[int, dict[str, str | list[str]]]:
    """For each call (by ``id``) inside a test or class with ``@pytest.mark.parametrize``: the
    parameter names whose values are all string literals, and those values."""
    scopes: dict[int, dict[str, str | list[str]]] = {}
    # ast.walk goes outside-in, so an inner function's names override its class's
    for scope in ast.walk(tree):
        if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        names: dict[str, str | list[str]] = {}
        for decorator in scope.decorator_list:
            names.update(_parametrize_values(decorator))
        if not names:
            continue
        for node in ast.walk(scope):
            if isinstance(node, ast.Call):
                scopes[id(node)] = {**scopes.get(id(node), {}), **names}
    return scopes


def _parametrize_values(decorator: ast.expr) -> dict[str, str | list[str]]:
    """``@pytest.mark.parametrize("model_id", ["a/b", pytest.param("c/d")])`` -> the names
    whose every value is a string literal."""
    if not (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "parametrize"
        and _is_mark(decorator.func.value)
        and len(decorator.args) >= 2
    ):
        return {}
    argnames, argvalues = decorator.args[0], decorator.args[1]
    if isinstance(argnames, ast.Constant) and isinstance(argnames.value, str):
        names = [n.strip() for n in argnames.value.split(",") if n.strip()]
    elif isinstance(argnames, ast.List | ast.Tuple):
        names = [str(e.value) for e in argnames.elts if isinstance(e, ast.Constant)]
    else:
        return {}
    if not isinstance(argvalues, ast.List | ast.Tuple):
        return {}
    rows: list[list[ast.expr]] = []
    for row in argvalues.elts:
        if isinstance(row, ast.Call) and isinstance(row.func, ast.Attribute):
            row_items = list(row.args)  # pytest.param(...)
        elif len(names) > 1 and isinstance(row, ast.List | ast.Tuple):
            row_items = list(row.elts)
        else:
            row_items = [row]
        rows.append(row_items)
    found: dict[str, str | list[str]] = {}
    for index, name in enumerate(names):
        column = [r[index] if index < len(r) else None for r in rows]
        if column and all(isinstance(c, ast.Constant) and isinstance(c.value, str) for c in column):
            found[name] = [str(c.value) for c in column if isinstance(c, ast.Constant)]
    return found


def _module_constants(tree: ast.Module) -> dict[str, str | list[str]]:
    """Names bound exactly once at module level, to a string literal (``MODEL = "gpt2"``)."""
    bound: dict[str, list[ast.expr | None]] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    bound.setdefault(target.id, []).append(statement.value)
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            bound.setdefault(statement.target.id, []).append(statement.value)
    # a name that a function declares global may be rebound there: not a constant
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            for name in node.names:
                bound.setdefault(name, []).append(None)
    return {
        name: values[0].value
        for name, values in bound.items()
        if len(values) == 1
        and isinstance(values[0], ast.Constant)
        and isinstance(values[0].value, str)
    }


def _is_mark(node: ast.expr) -> bool:
    """``pytest.mark`` or a bare ``mark`` (``from pytest import mark``)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "mark"
    return isinstance(node, ast.Name) and node.id == "mark"


def _is_models_fixture(node: ast.expr) -> bool:
    """``models`` (the fixture argument) or ``self.models`` and the like."""
    if isinstance(node, ast.Name):
        return node.id == "models"
    return isinstance(node, ast.Attribute) and node.attr == "models"


def _keyword(call: ast.Call, names: tuple[str, ...]) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg in names), None)


def _keyword_items(call: ast.Call, name: str) -> list[ast.expr]:
    value = _keyword(call, (name,))
    if value is None:
        return []
    if isinstance(value, ast.List | ast.Tuple):
        return list(value.elts)
    return [value]
