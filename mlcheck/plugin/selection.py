"""Run only the expensive tests a change can break (``--changed-since REF``); all when unsure.

A full run records, with coverage.py's dynamic contexts (one context per test, one per shared
fixture), which of the project's files each test executed: the **file map**, saved with the
commit and the lock it was recorded at. A later run selects from it:

- tests that executed a changed file, when every change in that file is inside function bodies
  (found with ``ast`` in the version the map saw) that only ran inside tests;
- tests whose models' lock entries changed (``mlcheck.lock``, and the models table of the
  manifest), and tests added or in a changed test file.

Everything runs when the selection cannot be sure: no map; the map is older than the lock;
a file matching ``[tool.mlcheck] select_core`` changed; a change outside function bodies
(imports, constants, class bodies, decorators, signatures), or in code that ran outside any test
(collection hooks); a Python file added or deleted that is not a test file; a changed non-Python
file other than documentation (data and configs that tests may read); ``conftest.py`` or the
rest of ``pyproject.toml``. Coverage sees Python only, so these rules carry what it cannot.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import UsageError

__all__ = [
    "FILE_MAP_VERSION",
    "Change",
    "FileMap",
    "MapRecorder",
    "Selection",
    "changes_since",
    "select",
]

FILE_MAP_VERSION = 1
LOCK_FILE = "mlcheck.lock"
OUTSIDE = ""  # coverage's context for code run outside any test (imports, collection, hooks)
FIXTURE_PREFIX = "fixture:"
# Changes to these never change what a test does; any other non-Python file might (data, configs).
DOC_SUFFIXES = (".md", ".rst")
DOC_DIRS = ("docs/", "doc/")


@dataclass(frozen=True)
class FileMap:
    """Which project files each test executed in a full run, at ``commit``."""

    commit: str
    lock_sha256: str | None  # of mlcheck.lock at the time; None: the project had no lock
    tests: Mapping[str, frozenset[str]]  # nodeid -> files (relative, posix)
    models: Mapping[str, frozenset[str]] = field(default_factory=dict)  # nodeid -> model ids
    outside: Mapping[str, frozenset[int]] = field(
        default_factory=dict
    )  # file -> lines run outside tests

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": FILE_MAP_VERSION,
                "commit": self.commit,
                "lock_sha256": self.lock_sha256,
                "tests": {k: sorted(v) for k, v in sorted(self.tests.items())},
                "models": {k: sorted(v) for k, v in sorted(self.models.items()) if v},
                "outside": {k: sorted(v) for k, v in sorted(self.outside.items())},
            },
            indent=1,
        )

    @classmethod
    def read(cls, path: Path) -> FileMap:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("version") != FILE_MAP_VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {FILE_MAP_VERSION}")
            return cls(
                commit=str(raw["commit"]),
                lock_sha256=raw.get("lock_sha256"),
                tests={k: frozenset(map(str, v)) for k, v in raw["tests"].items()},
                models={k: frozenset(map(str, v)) for k, v in raw.get("models", {}).items()},
                outside={k: frozenset(map(int, v)) for k, v in raw.get("outside", {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(
                f"file map {path} is unreadable ({exc}): record a new one with a full run "
                "(mlcheck run --record-map PATH)"
            ) from exc


# -- recording -----------------------------------------------------------------------------------


class MapRecorder:
    """Coverage of the project's files in this process, one dynamic context per test.

    coverage.py does the tracing (its C tracer, or sys.monitoring); mlcheck only names the
    contexts: the test's node id while it runs, and ``fixture:<id>`` while a fixture shared
    between tests (module, class, package or session scope) is set up, so the files it runs are
    charged to every test that uses it, not only the first.
    """

    def __init__(self, root: Path, data_dir: Path) -> None:
        import coverage

        data_dir.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.cov = coverage.Coverage(
            data_file=str(data_dir / ".coverage"),
            data_suffix=True,  # one file per process (xdist workers), combined at the end
            source=[str(root)],
            omit=[str(root / ".venv" / "*"), "*/site-packages/*"],
            config_file=False,
            branch=False,
        )
        self.cov.start()
        self.context = OUTSIDE

    def switch(self, context: str) -> str:
        """Enter ``context``; returns the one it replaces."""
        previous, self.context = self.context, context
        self.cov.switch_context(context)
        return previous

    def stop(self) -> None:
        self.cov.stop()
        self.cov.save()


def combine(
    data_dir: Path,
    root: Path,
    commit: str,
    lock_sha256: str | None,
    fixtures: Mapping[str, Iterable[str]],
    models: Mapping[str, Iterable[str]],
) -> FileMap:
    """The file map from the coverage data files of every process of a run.

    ``fixtures`` is ``nodeid -> shared fixture contexts it used``; ``models`` is ``nodeid ->
    model ids`` (from the results).
    """
    import coverage

    cov = coverage.Coverage(data_file=str(data_dir / ".coverage"), config_file=False)
    cov.combine([str(data_dir)], keep=False)
    data = cov.get_data()
    by_context: dict[str, set[str]] = {}
    outside: dict[str, set[int]] = {}
    for measured in data.measured_files():
        try:
            rel = PurePosixPath(Path(measured).resolve().relative_to(root.resolve())).as_posix()
        except ValueError:
            continue
        for line, contexts in data.contexts_by_lineno(measured).items():
            for context in contexts:
                if context == OUTSIDE:
                    outside.setdefault(rel, set()).add(line)
                else:
                    by_context.setdefault(context, set()).add(rel)
    tests: dict[str, frozenset[str]] = {}
    for nodeid in set(fixtures) | {c for c in by_context if not c.startswith(FIXTURE_PREFIX)}:
        files = set(by_context.get(nodeid, ()))
        for shared in fixtures.get(nodeid, ()):
            files |= by_context.get(shared, set())
        tests[nodeid] = frozenset(files)
    return FileMap(
        commit=commit,
        lock_sha256=lock_sha256,
        tests=tests,
        models={k: frozenset(v) for k, v in models.items()},
        outside={k: frozenset(v) for k, v in outside.items()},
    )


# -- what changed ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A changed file: its status, and for a modified file the lines of the old version touched."""

    path: str
    status: str  # "added", "deleted", "modified"
    old_lines: frozenset[int] = frozenset()  # touched lines (insertions: the lines around them)


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")


# Untracked files that running the tests makes, and that never change what a test does:
# bytecode (used only beside its source) and the metadata `pip install -e .` derives from the
# (compared) pyproject.toml. Without these a CI checkout with no .gitignore would run all.
GENERATED = ("*/__pycache__/*", "__pycache__/*", "*.egg-info/*")


def changes_since(root: Path, base: str, ignore: Sequence[str] = ()) -> list[Change]:
    """Files changed between commit ``base`` and the working tree (committed or not, untracked
    included), with the lines of ``base``'s version that each change touches. Untracked files
    in the ``ignore`` folders (this run's results) and :data:`GENERATED` ones are not changes."""
    status = _git(root, "diff", "--name-status", "--no-renames", base, "--")
    changes: dict[str, Change] = {}
    for line in status.splitlines():
        code, _, path = line.partition("\t")
        if code.startswith("A"):
            changes[path] = Change(path, "added")
        elif code.startswith("D"):
            changes[path] = Change(path, "deleted")
        else:
            changes[path] = Change(path, "modified", _touched(root, base, path))
    skip = tuple(f"{folder.rstrip('/')}/" for folder in ignore if folder not in ("", "."))
    for path in _git(root, "ls-files", "--others", "--exclude-standard").splitlines():
        if path.startswith(skip) or any(fnmatch.fnmatch(path, g) for g in GENERATED):
            continue
        changes.setdefault(path, Change(path, "added"))
    return sorted(changes.values(), key=lambda c: c.path)


def _touched(root: Path, base: str, path: str) -> frozenset[int]:
    diff = _git(root, "diff", "-U0", "--no-renames", base, "--", path)
    lines: set[int] = set()
    for text in diff.splitlines():
        hunk = _HUNK.match(text)
        if not hunk:
            continue
        start, count = int(hunk.group(1)), int(hunk.group(2) or "1")
        if count == 0:
            lines.update((start, start + 1))  # an insertion after line `start`: both neighbours
        else:
            lines.update(range(start, start + count))
    return frozenset(lines)


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise UsageError(f"git {' '.join(args[:2])} failed in {root}: {detail.strip()}") from exc


def show(root: Path, commit: str, path: str) -> str | None:
    """``path`` as it was at ``commit`` (None: not there)."""
    try:
        return subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True, text=True,
            check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


def function_body_lines(source: str) -> frozenset[int] | None:
    """Lines inside function bodies (not their ``def`` lines, decorators or defaults); None if
    the source does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0].lineno
            last = max(getattr(n, "end_lineno", None) or n.lineno for n in node.body)
            lines.update(range(first, last + 1))
    return frozenset(lines)


# -- selecting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Tests to run: ``everything`` (with why) or ``tests`` (with the files that decided)."""

    everything: bool
    why: str
    tests: frozenset[str] = frozenset()
    changed: tuple[str, ...] = ()  # the changed files that selected tests

    def keeps(self, nodeid: str) -> bool:
        return self.everything or nodeid in self.tests


def _all(why: str) -> Selection:
    return Selection(True, why)


def select(
    file_map: FileMap | None,
    changes: Sequence[Change],
    collected: Mapping[str, tuple[str, Iterable[str]]],
    *,
    old_source: Any,
    lock_at_base: str | None,
    changed_models: Iterable[str] | None,
    core: Sequence[str] = (),
    imported_test_files: Iterable[str] = (),
) -> Selection:
    """Which of ``collected`` (``nodeid -> (file, model ids from its marks)``) to run.

    ``old_source(path)`` is a file's text at the map's commit; ``lock_at_base`` the lock's text
    at the base; ``changed_models`` the models whose lock or manifest entries changed (None: the
    comparison failed, so unsure); ``imported_test_files`` the test files that other test files
    import (a change at their module level can reach those too).
    """
    if file_map is None:
        return _all("no per-test file map from a full run")
    lock_digest = _sha256(lock_at_base) if lock_at_base is not None else None
    if lock_digest != file_map.lock_sha256:
        return _all(f"the file map ({file_map.commit[:7]}) is older than the lock")
    if changed_models is None:
        return _all("the lock or the manifest's models could not be compared")
    test_files = {file for file, _ in collected.values()}
    selected: set[str] = {n for n in collected if n not in file_map.tests}  # added tests
    deciding: set[str] = set()
    for change in changes:
        path = change.path
        name = PurePosixPath(path).name
        if any(fnmatch.fnmatch(path, pattern) for pattern in core):
            return _all(f"{path} is marked core ([tool.mlcheck] select_core)")
        if path in (LOCK_FILE, "pyproject.toml", "mlcheck.toml"):
            continue  # compared entry by entry: changed_models
        if name == "conftest.py":
            return _all(f"{path} changed (fixtures and hooks reach every test)")
        if not path.endswith(".py"):
            if path.endswith(DOC_SUFFIXES) or path.startswith(DOC_DIRS):
                continue
            return _all(f"{path} changed, and tests may read it (coverage sees Python only)")
        if path in test_files:
            selected |= {n for n, (file, _) in collected.items() if file == path}
            selected |= {n for n, files in file_map.tests.items() if path in files}
            deciding.add(path)
            if change.status != "modified" or path not in set(imported_test_files):
                continue  # a test file no other imports: its changes reach only its own tests
        elif change.status != "modified":
            return _all(f"{path} was {change.status}; imports of it are not in the map")
        why = _module_level_change(change, file_map, old_source(path))
        if why:
            return _all(why)
        users = {n for n, files in file_map.tests.items() if path in files}
        if users:
            deciding.add(path)
            selected |= users
    models = set(changed_models)
    if models:
        for nodeid, (_, marked) in collected.items():
            if models & (set(marked) | set(file_map.models.get(nodeid, ()))):
                selected.add(nodeid)
        deciding |= {f"model {m}" for m in sorted(models)}
    return Selection(
        False, "selected by change", frozenset(selected & set(collected)), tuple(sorted(deciding))
    )


def _module_level_change(change: Change, file_map: FileMap, source: str | None) -> str:
    """Why a change to a mapped Python file cannot be charged to the tests that ran it ('' if it
    can): it touches code outside function bodies, or code that ran outside any test."""
    if source is None:
        return f"{change.path} is not in the file map's commit"
    bodies = function_body_lines(source)
    if bodies is None:
        return f"{change.path} did not parse at the file map's commit"
    total = source.count("\n") + 1
    touched = {line for line in change.old_lines if 1 <= line <= total}
    outside_bodies = sorted(touched - bodies)
    if outside_bodies:
        return f"{change.path} changed outside a function (line {outside_bodies[0]})"
    ran_outside = sorted(touched & file_map.outside.get(change.path, frozenset()))
    if ran_outside:
        return f"{change.path} changed code that runs outside tests (line {ran_outside[0]})"
    return ""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lock_digest(root: Path) -> str | None:
    path = root / LOCK_FILE
    return _sha256(path.read_text(encoding="utf-8")) if path.is_file() else None


def changed_model_ids(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> set[str]:
    """Models whose entries differ between two tables (``id -> entry``), added or removed too."""
    old, new = old or {}, new or {}
    return {m for m in set(old) | set(new) if old.get(m) != new.get(m)}


# -- the project's side: git, lock and manifest --------------------------------------------------


def select_in_repo(
    root: Path,
    base: str,
    map_path: Path | None,
    collected: Mapping[str, tuple[str, Iterable[str]]],
    core: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> Selection:
    """:func:`select` for the project in ``root`` against ``base`` (a git ref), with the map at
    ``map_path``: what changed since the map's commit, the lock at ``base``, the models whose
    entries changed. ``ignore``: folders (relative to ``root``) this run writes, whose untracked
    files are not changes (the results folder, when it is inside the checkout)."""
    _git(root, "rev-parse", "--verify", f"{base}^{{commit}}")  # an unknown ref is a usage error
    file_map = FileMap.read(map_path) if map_path is not None and map_path.is_file() else None
    if file_map is None:
        return _all("no per-test file map from a full run")
    if not _has_commit(root, file_map.commit):
        return _all(f"the file map's commit {file_map.commit[:7]} is not in this clone")
    changed_models, project_changed = _manifest_changes(root, file_map.commit)
    if project_changed:
        return _all(project_changed)
    return select(
        file_map,
        changes_since(root, file_map.commit, ignore),
        collected,
        old_source=lambda path: show(root, file_map.commit, path),
        lock_at_base=show(root, base, LOCK_FILE),
        changed_models=changed_models,
        core=core,
        imported_test_files=_imported_test_files(root, {f for f, _ in collected.values()}),
    )


def _imported_test_files(root: Path, test_files: set[str]) -> set[str]:
    """Test files whose module another test file imports (by its name, in an import line)."""
    stems = {PurePosixPath(f).stem: f for f in test_files}
    imported: set[str] = set()
    for path in test_files:
        try:
            text = (root / path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            if re.match(r"\s*(from|import)\s", line):
                words = set(re.findall(r"\w+", line))
                imported |= {f for stem, f in stems.items() if stem in words and f != path}
    return imported


def _has_commit(root: Path, commit: str) -> bool:
    try:
        _git(root, "cat-file", "-e", f"{commit}^{{commit}}")
    except UsageError:
        return False
    return True


def _manifest_changes(root: Path, commit: str) -> tuple[set[str] | None, str]:
    """Models whose lock or manifest entries changed since ``commit`` (None: unsure), and why
    everything must run when the manifest changed outside its models ('' when it did not)."""
    import tomllib

    def parse(text: str | None) -> dict[str, Any]:
        return tomllib.loads(text) if text else {}

    def now(name: str) -> str | None:
        path = root / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    try:
        lock_old, lock_new = parse(show(root, commit, LOCK_FILE)), parse(now(LOCK_FILE))
        changed = changed_model_ids(lock_old.get("models"), lock_new.get("models"))
        for name in ("pyproject.toml", "mlcheck.toml"):
            old, new = parse(show(root, commit, name)), parse(now(name))
            if name == "pyproject.toml":
                old_models, new_models = _tool_mlcheck(old), _tool_mlcheck(new)
            else:
                old_models, new_models = old, new
            changed |= changed_model_ids(old_models.get("models"), new_models.get("models"))
            if _without_models(old, name) != _without_models(new, name):
                return changed, f"{name} changed outside its models (settings, dependencies)"
    except (tomllib.TOMLDecodeError, AttributeError, TypeError):
        return None, ""
    return changed, ""


def _tool_mlcheck(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data.get("tool", {}).get("mlcheck", {}))


def _without_models(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(data, default=str))
    table = copy.get("tool", {}).get("mlcheck", {}) if name == "pyproject.toml" else copy
    table.pop("models", None)
    return copy


def not_affected_reason(base: str) -> str:
    return f"not affected by this change (since {base[:7]})"


# -- the pytest side: recording the map ---------------------------------------------------------


class RecordMap:
    """pytest hooks that record the file map of this run into ``path`` (``--mlcheck-record-map``).

    Every process that runs tests traces with coverage.py and writes what each test used beside
    its data; the process that writes results (the xdist controller, or the only process)
    combines them at the end.
    """

    def __init__(self, root: Path, path: Path, *, runs_tests: bool, writes: bool) -> None:
        self.root, self.path, self.writes = root, path, writes
        self.data_dir = path.parent / f".{path.name}.data"
        if writes and self.data_dir.exists():
            import shutil

            shutil.rmtree(self.data_dir)
        self.recorder = MapRecorder(root, self.data_dir) if runs_tests else None
        self.used: dict[str, dict[str, list[str]]] = {}  # nodeid -> fixtures, models

    def runtest_protocol(self, nodeid: str, shared_fixtures: list[str]) -> None:
        if self.recorder is not None:
            self.used.setdefault(nodeid, {"fixtures": [], "models": []})["fixtures"] = (
                shared_fixtures
            )
            self.recorder.switch(nodeid)

    def fixture_context(self, context: str | None) -> str | None:
        """Enter a shared fixture's context (or the previous one again); returns the previous."""
        if self.recorder is None or context is None:
            return None
        return self.recorder.switch(context)

    def test_done(self) -> None:
        if self.recorder is not None:
            self.recorder.switch(OUTSIDE)

    def models_used(self, nodeid: str, models: Iterable[str]) -> None:
        if self.recorder is not None and models:
            entry = self.used.setdefault(nodeid, {"fixtures": [], "models": []})
            entry["models"] = sorted(set(entry["models"]) | set(models))

    def finish(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()
            side = self.data_dir / f"used-{os.getpid()}.json"
            side.write_text(json.dumps(self.used), encoding="utf-8")
        if not self.writes:
            return
        fixtures: dict[str, list[str]] = {}
        models: dict[str, list[str]] = {}
        for side in sorted(self.data_dir.glob("used-*.json")):
            for nodeid, entry in json.loads(side.read_text(encoding="utf-8")).items():
                fixtures[nodeid] = entry["fixtures"]
                models[nodeid] = entry["models"]
        commit = _git(self.root, "rev-parse", "HEAD").strip()
        file_map = combine(
            self.data_dir, self.root, commit, lock_digest(self.root), fixtures, models
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(file_map.to_json(), encoding="utf-8")
