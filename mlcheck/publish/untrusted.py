"""Loading untrusted results: the one place a publish reads what PR code wrote.

Results files are written by code that whoever opened the PR controls, so they are data to
validate, never to trust: no symbolic links, size and count limits, and the results schema
(``mlcheck/schema/results.schema.json``) checked in full by ``jsonschema``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ResultsError, ResultsMissing
from ..results import SCHEMA_VERSION, RunResults, from_dict

if TYPE_CHECKING:
    pass

# --- limits on untrusted results

MAX_RESULTS_BYTES = 50 * 1024 * 1024  # one results.json; mlcheck's own are a few MB at most
MAX_TESTS = 200_000  # per publish, all files together
MAX_RESULTS_FILES = 256  # results.json files under the given folders (shards, artifacts)
_MAX_DEPTH = 4  # artifact folders nest results one or two levels down

# ---------------------------------------------------------------------------------------------
# Loading untrusted results


@dataclass(frozen=True)
class Limits:
    """How much untrusted input a publish accepts."""

    max_bytes: int = MAX_RESULTS_BYTES
    max_tests: int = MAX_TESTS
    max_files: int = MAX_RESULTS_FILES


def find_results_files(paths: Iterable[Path], limits: Limits = Limits()) -> list[Path]:
    """``results.json`` files in ``paths`` (files, results folders or downloaded artifacts).

    A folder without a ``results.json`` of its own is searched a few levels down (artifacts
    unpack shards into sub-folders). Symbolic links are refused: an artifact could point one at
    a file the publisher can read and the PR author cannot.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_symlink() or (path / "results.json").is_symlink():
            raise ResultsError(f"{path} is a symbolic link; results must be plain files")
        if path.is_file():
            found.append(path)
        elif (path / "results.json").is_file():
            found.append(path / "results.json")
        elif path.is_dir():
            found += _walk(path, 0)
        else:
            raise ResultsMissing(
                f"no results at {path}: run `mlcheck run` or download the artifact"
            )
        if len(found) > limits.max_files:
            raise ResultsError(
                f"more than {limits.max_files} results files under the given folders; "
                "pass the results folders themselves"
            )
    if not found:
        raise ResultsMissing(f"no results.json under {', '.join(map(str, paths))}")
    for f in found:
        if f.is_symlink():
            raise ResultsError(f"{f} is a symbolic link; results must be plain files")
    return found


def _walk(folder: Path, depth: int) -> list[Path]:
    if depth > _MAX_DEPTH:
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            if entry.name == "results.json":
                raise ResultsError(f"{entry} is a symbolic link; results must be plain files")
            continue  # folders linked from elsewhere are not searched
        if entry.is_file() and entry.name == "results.json":
            found.append(entry)
        elif entry.is_dir():
            found += _walk(entry, depth + 1)
    return found


def _schema() -> dict[str, Any]:
    text = resources.files("mlcheck").joinpath("schema/results.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(data: Any) -> RunResults:
    """Check untrusted results data against the whole results schema; build :class:`RunResults`.

    The schema version is checked first (its message says which mlcheck wrote the file), then
    every field with ``jsonschema`` against ``mlcheck/schema/results.schema.json`` (types,
    lengths, enums, extra fields), so fields other modules add to the schema are checked
    without changes here. Without ``jsonschema`` nothing is accepted: a partial hand-written
    check would let the fields it forgot reach the comment (fail closed).
    """
    if not isinstance(data, dict):
        raise ResultsError("results file is not a JSON object")
    try:
        import jsonschema
    except ImportError:
        raise ResultsError(
            "cannot validate untrusted results: the `jsonschema` package is missing "
            "(it is a dependency of pytest-mlcheck: reinstall it, or use mlcheck's image)"
        ) from None
    if data.get("schema_version") == SCHEMA_VERSION:
        validator = jsonschema.Draft202012Validator(_schema())
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise ResultsError(
                f"results do not match the results schema at {where}: {error.message[:300]}"
            )
    return from_dict(data)  # checks schema_version with an actionable message


def load_untrusted(paths: Iterable[Path], *, limits: Limits = Limits()) -> list[RunResults]:
    """Read results from folders or artifacts as untrusted data (see the module docstring).

    Raises :class:`~mlcheck.errors.ResultsError` naming the file and what is wrong with it.
    Nothing is written: the results files stay exactly as they were.
    """
    loaded: list[RunResults] = []
    tests = 0
    for path in find_results_files(list(paths), limits):
        try:
            with path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > limits.max_bytes:
                    raise ResultsError(
                        f"{path} is {_mib(size)}, over the {_mib(limits.max_bytes)} limit for "
                        "published results; it was not read"
                    )
                raw = fh.read(limits.max_bytes + 1)
        except OSError as exc:
            raise ResultsError(f"cannot read {path}: {exc}") from None
        if len(raw) > limits.max_bytes:  # grew while we read it
            raise ResultsError(f"{path} is over the {_mib(limits.max_bytes)} limit")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ResultsError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
        if isinstance(data, dict) and isinstance(data.get("tests"), list):
            tests += len(data["tests"])
            if tests > limits.max_tests:
                raise ResultsError(
                    f"{path}: more than {limits.max_tests:,} tests in the published results; "
                    "raise --max-tests if that is real"
                )
        try:
            loaded.append(validate(data))
        except ResultsError as exc:
            raise ResultsError(f"{path}: {exc}") from None
    return loaded


def _mib(n: int) -> str:
    return f"{n / 2**20:.3g} MiB"
