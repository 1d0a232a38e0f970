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

from ..errors import ResultsError
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
            raise ResultsError(f"no results at {path}: run `mlcheck run` or download the artifact")
        if len(found) > limits.max_files:
            raise ResultsError(
                f"more than {limits.max_files} results files under the given folders; "
                "pass the results folders themselves"
            )
    if not found:
        raise ResultsError(f"no results.json under {', '.join(map(str, paths))}")
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


def validate(data: Any, *, use_jsonschema: bool | None = None) -> RunResults:
    """Check untrusted results data and build :class:`RunResults` from it.

    The schema version is checked first (its message says which mlcheck wrote the file); then
    the JSON schema when ``jsonschema`` is installed (``use_jsonschema=None``), else the
    dataclass loader plus the type checks the schema would have made.
    """
    if not isinstance(data, dict):
        raise ResultsError("results file is not a JSON object")
    if use_jsonschema is None:
        try:
            import jsonschema
        except ImportError:
            use_jsonschema = False
        else:
            use_jsonschema = True
    if use_jsonschema and data.get("schema_version") == SCHEMA_VERSION:
        import jsonschema

        validator = jsonschema.Draft202012Validator(_schema())
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise ResultsError(
                f"results do not match the results schema at {where}: {error.message[:300]}"
            )
    if not use_jsonschema and data.get("schema_version") == SCHEMA_VERSION:
        for name, kind in (("run", dict), ("tests", list)):
            if not isinstance(data.get(name), kind):
                raise ResultsError(
                    f"results do not match the results schema at {name}: not a {kind.__name__}"
                )
    results = from_dict(data)  # checks schema_version with an actionable message
    if not use_jsonschema:
        _check_types(results)
    return results


_TIERS = {"fast", "real", "gpu"}


def _check_types(results: RunResults) -> None:
    """What the schema checks that the dataclass loader does not (used without jsonschema)."""

    def bad(where: str, what: str) -> ResultsError:
        return ResultsError(f"results do not match the results schema at {where}: {what}")

    if not set(results.run.tiers) <= _TIERS:
        raise bad("run/tiers", f"{sorted(results.run.tiers)!r} is not a list of fast, real, gpu")
    for i, t in enumerate(results.tests):
        for name in ("nodeid", "message", "traceback"):
            if not isinstance(getattr(t, name), str):
                raise bad(f"tests/{i}/{name}", "not a string")
        if t.file is not None and not isinstance(t.file, str):
            raise bad(f"tests/{i}/file", "not a string")
        if t.line is not None and (not isinstance(t.line, int) or t.line < 1):
            raise bad(f"tests/{i}/line", "not a positive integer")
        if t.tier not in _TIERS:
            raise bad(f"tests/{i}/tier", f"{t.tier!r} is not one of fast, real, gpu")
        if t.run is not None and not isinstance(t.run, str):
            raise bad(f"tests/{i}/run", "not a string")
        if not isinstance(t.duration, int | float):
            raise bad(f"tests/{i}/duration", "not a number")


def load_untrusted(
    paths: Iterable[Path], *, limits: Limits = Limits(), use_jsonschema: bool | None = None
) -> list[RunResults]:
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
            loaded.append(validate(data, use_jsonschema=use_jsonschema))
        except ResultsError as exc:
            raise ResultsError(f"{path}: {exc}") from None
    return loaded


def _mib(n: int) -> str:
    return f"{n / 2**20:.3g} MiB"
