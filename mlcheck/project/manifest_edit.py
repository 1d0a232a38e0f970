"""Declaring models in the project's manifest (``mlcheck add``), editing the file in place.

The user's ``pyproject.toml`` is edited with tomlkit, which keeps every comment, blank line,
quote style and key order: the only change is the model's own entry (a new line in
``[tool.mlcheck.models]``, or the ``needs``/``revision`` value of an existing one). The file is
never rewritten from parsed data, and a declaration that changes nothing writes nothing, so the
file stays byte-identical::

    plan = plan_declarations(root, [Declaration("gpt2", needs="config")])
    write_declarations(plan)   # appends  "gpt2" = { revision = "main", needs = "config" }
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ManifestError, UsageError
from .manifest import MLCHECK_TOML, NEEDS, PYPROJECT, ModelSpec, Need, is_model_id, load_manifest


@dataclass(frozen=True)
class Declaration:
    """What ``mlcheck add`` was asked to declare. ``None`` keeps what the manifest says (or the
    default for a new model: revision ``main``, needs ``config``)."""

    model_id: str
    revision: str | None = None
    needs: Need | None = None
    # --from-tests: needs may go from config to weights, never back; the revision stays
    upgrade_only: bool = False


@dataclass(frozen=True)
class Change:
    """One model's entry before and after; ``old is None`` for a model not declared yet."""

    model_id: str
    old: ModelSpec | None
    new: ModelSpec
    path: Path  # the manifest file that declares it (or will)

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def describe(self) -> str:
        """``declared gpt2 (revision main, needs config) in pyproject.toml`` and the like."""
        where = self.path.name
        if self.old is None:
            return f"declared {self.model_id} ({_spec_text(self.new)}) in {where}"
        if not self.changed:
            return f"{self.model_id} is already declared ({_spec_text(self.old)}) in {where}"
        return (
            f"changed {self.model_id} in {where}: {_spec_text(self.old)} -> {_spec_text(self.new)}"
        )


def plan_declarations(root: Path, declarations: Sequence[Declaration]) -> list[Change]:
    """What declaring ``declarations`` changes, without writing anything.

    Raises :class:`UsageError` for an id that is not a model id and when the project has no
    ``pyproject.toml`` or ``mlcheck.toml`` to declare it in, and :class:`ManifestError` when the
    manifest is invalid.
    """
    root = Path(root)
    for declaration in declarations:
        if not is_model_id(declaration.model_id):
            raise UsageError(
                f"'{declaration.model_id}' is not a model id; write it as \"org/name\" (for a "
                "local folder: `mlcheck cache add PATH --model org/name`)"
            )
        if declaration.needs is not None and declaration.needs not in NEEDS:
            raise UsageError(f"needs must be one of {', '.join(NEEDS)}, not {declaration.needs!r}")
    manifest = load_manifest(root)  # a broken manifest is reported as such, before any edit
    files = _manifest_files(root)
    changes = []
    for declaration in dict((d.model_id, d) for d in declarations).values():
        old = manifest.model(declaration.model_id)
        path = _declared_in(files, declaration.model_id) if old else _file_for_new(root, files)
        changes.append(Change(declaration.model_id, old, _new_spec(old, declaration), path))
    return changes


def write_declarations(changes: Sequence[Change]) -> list[Path]:
    """Apply the changed entries to their files (atomically, file mode kept); returns the files
    written, none when nothing changed.

    The result is read back: unless the manifest then declares exactly the planned entries, the
    files are restored and :class:`ManifestError` is raised.
    """
    import tomlkit

    originals: dict[Path, bytes] = {}
    for path in dict.fromkeys(c.path for c in changes if c.changed):
        originals[path] = path.read_bytes()
        # bytes, not text: universal newlines would turn a CRLF file into LF
        original = originals[path].decode("utf-8")
        doc = tomlkit.parse(original)
        models = _models_table(doc, path)
        created = not models
        for change in changes:
            if change.changed and change.path == path:
                _set_entry(models, change)
        if created:
            models.add(tomlkit.nl())  # a blank line before the table that follows, if any
        text = doc.as_string()
        if created and text.endswith("\n\n") and not original.endswith("\n\n"):
            text = text[:-1]  # the new table came last
        if "\n" in original and original.count("\n") == original.count("\r\n"):
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")  # the file's line endings
        _replace(path, text.encode("utf-8"))
    if not originals:
        return []
    root = next(iter(originals)).parent
    try:
        manifest = load_manifest(root)
        wrong = [c.model_id for c in changes if manifest.model(c.model_id) != c.new]
    except ManifestError as exc:
        wrong = [str(exc)]
    if wrong:
        for path, data in originals.items():
            _replace(path, data)
        raise ManifestError(
            f"could not declare {', '.join(wrong)} in {', '.join(str(p) for p in originals)} "
            "without changing other entries; the files were restored, declare it by hand"
        )
    return list(originals)


# --- which file -----------------------------------------------------------------------------


def _manifest_files(root: Path) -> dict[Path, Any]:
    """The project's manifest files, parsed by tomlkit: path -> document."""
    import tomlkit

    files: dict[Path, Any] = {}
    for name in (MLCHECK_TOML, PYPROJECT):
        path = root / name
        if path.is_file():
            files[path] = tomlkit.parse(path.read_bytes().decode("utf-8"))
    return files


def _existing_models(doc: Any, path: Path) -> Any:
    if path.name == MLCHECK_TOML:
        return doc.get("models")
    return doc.get("tool", {}).get("mlcheck", {}).get("models")


def _declared_in(files: dict[Path, Any], model_id: str) -> Path:
    for path, doc in files.items():
        models = _existing_models(doc, path)
        if models is not None and model_id in models:
            return path
    raise ManifestError(f"'{model_id}' is declared in a form mlcheck add cannot edit")


def _file_for_new(root: Path, files: dict[Path, Any]) -> Path:
    """The file a new model goes into: the one that already lists models (mlcheck.toml first),
    else mlcheck.toml if the project has one, else pyproject.toml."""
    for path, doc in files.items():
        if _existing_models(doc, path) is not None:
            return path
    if files:
        return next(iter(files))
    raise UsageError(
        f"no {PYPROJECT} (or {MLCHECK_TOML}) in {root}: run `mlcheck add` in your project's "
        f"folder, or create {PYPROJECT} there first"
    )


def _new_spec(old: ModelSpec | None, declaration: Declaration) -> ModelSpec:
    if old is None:
        return ModelSpec(
            declaration.model_id,
            revision=declaration.revision or "main",
            needs=declaration.needs or "config",
        )
    needs = declaration.needs or old.needs
    if declaration.upgrade_only:
        needs = "weights" if "weights" in (needs, old.needs) else "config"
        return replace(old, needs=needs)
    return replace(old, needs=needs, revision=declaration.revision or old.revision)


def _spec_text(spec: ModelSpec) -> str:
    return f"revision {spec.revision}, needs {spec.needs}"


# --- editing --------------------------------------------------------------------------------


def _models_table(doc: Any, path: Path) -> Any:
    """The models table of ``doc``, created (as ``[tool.mlcheck.models]``) when missing."""
    import tomlkit

    if path.name == MLCHECK_TOML:
        parent = doc
    else:
        tool = doc.get("tool")
        if tool is None:
            tool = tomlkit.table(is_super_table=True)
            doc["tool"] = tool
        parent = tool.get("mlcheck")
        if parent is None:
            parent = tomlkit.table(is_super_table=True)
            tool["mlcheck"] = parent
    models = parent.get("models")
    if models is None:
        models = tomlkit.table()
        parent["models"] = models
    return models


def _set_entry(models: Any, change: Change) -> None:
    import tomlkit
    from tomlkit.items import KeyType, SingleKey

    new = change.new
    entry = models.get(change.model_id)
    if entry is None or isinstance(entry, str):  # new, or the "org/name" = "rev" shorthand
        # written like the README's examples: { revision = "main", needs = "config" }
        value = tomlkit.value(
            f'{{ revision = {tomlkit.string(new.revision).as_string()}, needs = "{new.needs}" }}'
        )
        if entry is not None:
            models[change.model_id] = value
        else:
            # quoted like the examples ("org/name" needs quotes; "gpt2" looks the same)
            models.add(SingleKey(change.model_id, t=KeyType.Basic), value)
        return
    old = change.old
    if old is None or old.revision != new.revision:
        entry["revision"] = new.revision
    if old is None or old.needs != new.needs:
        entry["needs"] = new.needs


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
