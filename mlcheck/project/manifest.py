"""The project's model manifest: ``[tool.mlcheck]`` in pyproject.toml, or ``mlcheck.toml``.

The manifest says which models the tests use, at which revision, what is needed of each
(``config``: config and tokenizer files for the fast tier; ``weights``: those plus the
safetensors weights for the real tier) and what is allowed when loading them. It also maps a
suite's own markers to tiers, so adopting mlcheck needs no test edits::

    [tool.mlcheck]
    markers = { slow = "real", cuda = "gpu" }

    [tool.mlcheck.models]
    "sentence-transformers/all-MiniLM-L6-v2" = { revision = "main", needs = "weights" }
    "meta-llama/Llama-3.1-8B" = { revision = "main", needs = "config" }

``mlcheck.toml`` takes the same keys at its top level. Parsing is strict about what it knows
(every error names the key, the model and the fix) and keeps unknown top-level keys in
:attr:`Manifest.extra` for other parts of mlcheck.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from ..errors import ManifestError, UsageError
from ..results.failure_kinds import Rule, parse_rules
from ..tiers import parse_tier
from .weights import PICKLE_PATTERNS, SAFE_PATTERNS

Need = Literal["config", "weights"]
NEEDS: tuple[Need, ...] = ("config", "weights")

PYPROJECT = "pyproject.toml"
MLCHECK_TOML = "mlcheck.toml"

# What `needs = "config"` fetches: configs, tokenizer and generation files, never weights.
# fnmatch's "*" crosses "/", so "*.json" also matches "1_Pooling/config.json".
CONFIG_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken", "tokenizer*")
REMOTE_CODE_PATTERNS = ("*.py",)

# "org/name", or a legacy org-less id like "gpt2"
_MODEL_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_MODEL_KEYS = ("revision", "needs", "allow_patterns", "allow_pickle", "trust_remote_code")
_TOP_KEYS = ("models", "markers", "failure_kinds", "decorators")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the manifest.

    >>> ModelSpec("org/name", needs="weights").patterns()[-1]
    '*.safetensors'
    """

    model_id: str
    revision: str = "main"
    needs: Need = "config"
    allow_patterns: tuple[str, ...] | None = None  # replaces the defaults of `needs` when set
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def patterns(self) -> tuple[str, ...]:
        """The file patterns `mlcheck lock` and `cache warm` take from the repository."""
        if self.allow_patterns is not None:
            return self.allow_patterns
        patterns: tuple[str, ...] = CONFIG_PATTERNS
        if self.needs == "weights":
            patterns += SAFE_PATTERNS
            if self.allow_pickle:
                patterns += PICKLE_PATTERNS
        if self.trust_remote_code:
            patterns += REMOTE_CODE_PATTERNS
        return patterns


@dataclass(frozen=True)
class Manifest:
    """What the project declares; empty when it declares nothing.

    >>> Manifest(root=Path(".")).tier_of_marker("slow") is None
    True
    """

    root: Path
    models: Mapping[str, ModelSpec] = field(default_factory=dict)
    markers: Mapping[str, str] = field(default_factory=dict)  # marker name -> tier
    # test decorator name (or dotted origin.name) -> tier, extending tiers.decorators.BUILTIN
    decorators: Mapping[str, str] = field(default_factory=dict)
    source: Path | None = None  # the file the manifest was read from (None: no manifest)
    extra: Mapping[str, Any] = field(default_factory=dict)  # top-level keys others define
    # the project's failure-kind patterns, tried before mlcheck's table (results.failure_kinds)
    failure_kinds: tuple[Rule, ...] = ()

    def model(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)

    def tier_of_marker(self, marker: str) -> str | None:
        return self.markers.get(marker)


def load_manifest(root: Path) -> Manifest:
    """Read ``[tool.mlcheck]`` from ``root/pyproject.toml`` and/or ``root/mlcheck.toml``.

    Both files may exist (e.g. markers in one, models in the other); a model or marker declared
    in both is an error naming both files. No manifest at all gives an empty :class:`Manifest`.

    >>> load_manifest(Path("/nonexistent")).models
    {}
    """
    root = Path(root)
    tables: list[tuple[Path, dict[str, Any]]] = []
    pyproject = root / PYPROJECT
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {})
        if isinstance(tool, dict) and "mlcheck" in tool:
            section = tool["mlcheck"]
            if not isinstance(section, dict):
                raise ManifestError(f"{pyproject}: [tool.mlcheck] must be a table")
            tables.append((pyproject, section))
    mlcheck_toml = root / MLCHECK_TOML
    if mlcheck_toml.is_file():
        tables.append((mlcheck_toml, _read_toml(mlcheck_toml)))
    if not tables:
        return Manifest(root=root)

    models: dict[str, ModelSpec] = {}
    markers: dict[str, str] = {}
    decorators: dict[str, str] = {}
    extra: dict[str, Any] = {}
    failure_kinds: list[Rule] = []
    seen_in: dict[tuple[str, str], Path] = {}
    for path, table in tables:
        for key, value in table.items():
            if key not in _TOP_KEYS:
                extra[key] = value
        for model_id, spec in _parse_models(path, table.get("models", {})).items():
            _claim(seen_in, ("model", model_id), path)
            models[model_id] = spec
        for marker, tier in _parse_markers(path, table.get("markers", {})).items():
            _claim(seen_in, ("marker", marker), path)
            markers[marker] = tier
        if "failure_kinds" in table:
            where = "tool.mlcheck.failure_kinds" if path.name == PYPROJECT else "failure_kinds"
            failure_kinds += parse_rules(table["failure_kinds"], f"{path}: `{where}`")
        for name, tier in _parse_tier_table(
            path, "decorators", table.get("decorators", {})
        ).items():
            _claim(seen_in, ("decorator", name), path)
            decorators[name] = tier
    source = tables[-1][0] if len(tables) == 1 else tables[0][0]
    return Manifest(
        root=root,
        models=models,
        markers=markers,
        decorators=decorators,
        source=source,
        extra=extra,
        failure_kinds=tuple(failure_kinds),
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path} is not valid TOML: {exc}") from exc


def _claim(seen_in: dict[tuple[str, str], Path], key: tuple[str, str], path: Path) -> None:
    kind, name = key
    if key in seen_in and seen_in[key] != path:
        raise ManifestError(
            f"{kind} '{name}' is declared in both {seen_in[key]} and {path}; keep it in one of them"
        )
    seen_in[key] = path


def _models_key(path: Path) -> str:
    return "tool.mlcheck.models" if path.name == PYPROJECT else "models"


def _parse_markers(path: Path, raw: object) -> dict[str, str]:
    return _parse_tier_table(path, "markers", raw)


_TIER_TABLE_EXAMPLES = {
    "markers": 'markers = { slow = "real", cuda = "gpu" }',
    "decorators": 'decorators = { require_my_tpu = "gpu", slow = "real" }',
}


def _parse_tier_table(path: Path, name: str, raw: object) -> dict[str, str]:
    """``markers`` / ``decorators``: a table of name = tier."""
    key = f"tool.mlcheck.{name}" if path.name == PYPROJECT else name
    what = name.removesuffix("s")
    if not isinstance(raw, dict):
        raise ManifestError(
            f"{path}: `{key}` must be a table of {what} = tier, e.g. {_TIER_TABLE_EXAMPLES[name]}"
        )
    markers: dict[str, str] = {}
    for marker, tier in raw.items():
        try:  # the one tier parser (mlcheck.tiers), so the manifest reads tiers as --tier does
            markers[marker] = parse_tier(tier, source=f"`{key}.{marker}`").value
        except UsageError as exc:
            raise ManifestError(f"{path}: {exc}") from None
    return markers


def _parse_models(path: Path, raw: object) -> dict[str, ModelSpec]:
    key = _models_key(path)
    if not isinstance(raw, dict):
        raise ManifestError(
            f"{path}: `{key}` must be a table of model id = {{ revision = ..., needs = ... }}"
        )
    return {model_id: _parse_model(path, key, model_id, entry) for model_id, entry in raw.items()}


def _parse_model(path: Path, key: str, model_id: str, entry: object) -> ModelSpec:
    where = f'{path}: `{key}."{model_id}"`'
    if not _MODEL_ID.fullmatch(model_id):
        raise ManifestError(f"{where}: '{model_id}' is not a model id; write it as \"org/name\"")
    if isinstance(entry, str):
        # Shorthand: "org/name" = "main" means a revision with the default needs.
        entry = {"revision": entry}
    if not isinstance(entry, dict):
        raise ManifestError(
            f'{where} must be a table, e.g. {{ revision = "main", needs = "config" }}'
        )
    for name in entry:
        if name not in _MODEL_KEYS:
            close = difflib.get_close_matches(name, _MODEL_KEYS, n=1)
            hint = (
                f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(_MODEL_KEYS)}"
            )
            raise ManifestError(f"{where}: unknown key `{name}`; {hint}")
    revision = entry.get("revision", "main")
    if not isinstance(revision, str) or not revision.strip():
        raise ManifestError(
            f'{where}: `revision` must be a branch, tag or commit string, e.g. revision = "main"'
        )
    needs = entry.get("needs", "config")
    if needs not in NEEDS:
        raise ManifestError(
            f'{where}: `needs` = {needs!r} is not valid; use "config" (fast tier: config and '
            f'tokenizer files) or "weights" (real tier: plus the safetensors weights)'
        )
    patterns = entry.get("allow_patterns")
    if patterns is not None and (
        not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns)
    ):
        raise ManifestError(
            f'{where}: `allow_patterns` must be a list of glob strings, e.g. ["*.json", '
            f'"*.safetensors"]'
        )
    flags: dict[str, bool] = {}
    for flag in ("allow_pickle", "trust_remote_code"):
        value = entry.get(flag, False)
        if not isinstance(value, bool):
            raise ManifestError(f"{where}: `{flag}` must be true or false, not {value!r}")
        flags[flag] = value
    return ModelSpec(
        model_id=model_id,
        revision=revision.strip(),
        needs=cast(Need, needs),
        allow_patterns=tuple(patterns) if patterns is not None else None,
        allow_pickle=flags["allow_pickle"],
        trust_remote_code=flags["trust_remote_code"],
    )


def is_model_id(text: str) -> bool:
    """Whether ``text`` is written like a hub model id (``"org/name"`` or a legacy ``"gpt2"``).

    >>> is_model_id("org/name"), is_model_id("./folder"), is_model_id("a/b/c")
    (True, False, False)
    """
    parts = text.split("/")
    return bool(_MODEL_ID.fullmatch(text)) and all(p[:1].isalnum() for p in parts)


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding a manifest or lock.

    Falls back to ``start`` itself, so a project with nothing declared still has a root.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / name).is_file() for name in (MLCHECK_TOML, "mlcheck.lock", PYPROJECT)):
            return folder
    return here
