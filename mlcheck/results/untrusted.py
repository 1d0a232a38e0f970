"""Loading untrusted results: the one place a publish reads what PR code wrote.

Results files are written by code that whoever opened the PR controls, so they are data to
validate, never to trust: no symbolic links, size and count limits, and the results schema
(``mlcheck/schema/results.schema.json``, every array with a ``maxItems``) checked in full by
``jsonschema_rs``, after a bound on the number of values that keeps parsing within a memory
and time budget.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ResultsError, ResultsMissing
from .schema import SCHEMA_VERSION, RunResults, from_dict
from .untrusted_files import NotPlainFile, TooLarge, describe_mode, read_beneath

if TYPE_CHECKING:
    pass

# --- limits on untrusted results

MAX_RESULTS_BYTES = 50 * 1024 * 1024  # one results.json; mlcheck's own are a few MB at most
MAX_TESTS = 200_000  # per publish, all files together
MAX_RESULTS_FILES = 256  # results.json files under the given folders (shards, artifacts)
MAX_TOTAL_BYTES = 256 * 1024 * 1024  # all results files of one publish together
# JSON values per publish, all files together: ~30 per test for MAX_TESTS tests. Keeps parsing
# and validation under 1 GiB and a few seconds (bench/validate_results.py).
MAX_VALUES = 6_000_000
_MAX_DEPTH = 4  # artifact folders nest results one or two levels down

# ---------------------------------------------------------------------------------------------
# Loading untrusted results


@dataclass(frozen=True)
class Limits:
    """How much untrusted input a publish accepts."""

    max_bytes: int = MAX_RESULTS_BYTES
    max_tests: int = MAX_TESTS
    max_files: int = MAX_RESULTS_FILES
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_values: int = MAX_VALUES


def find_results_files(paths: Iterable[Path], limits: Limits = Limits()) -> list[Path]:
    """``results.json`` files in ``paths`` (files, results folders or downloaded artifacts).

    A folder without a ``results.json`` of its own is searched a few levels down (artifacts
    unpack shards into sub-folders). Symbolic links are refused: an artifact could point one at
    a file the publisher can read and the PR author cannot. So is anything that is not a
    regular file (a FIFO would block the reader, a device never ends). Nothing is followed:
    each entry is looked at with ``lstat``, and :func:`read_regular` opens without following.
    """
    found: list[Path] = []
    for path in paths:
        kind = _kind(path)
        if kind == "link":
            raise ResultsError(f"{path} is a symbolic link; results must be plain files")
        if kind == "file":
            found.append(path)
        elif kind == "dir":
            own = path / "results.json"
            own_kind = _kind(own)
            if own_kind == "missing":
                found += _walk(path, 0)
            else:
                _refuse_unless_file(own, own_kind)
                found.append(own)
        elif kind == "missing":
            raise ResultsMissing(
                f"no results at {path}: run `mlcheck run` or download the artifact"
            )
        else:
            _refuse_unless_file(path, kind)
        if len(found) > limits.max_files:
            raise ResultsError(
                f"more than {limits.max_files} results files under the given folders; "
                "pass the results folders themselves"
            )
    if not found:
        raise ResultsMissing(f"no results.json under {', '.join(map(str, paths))}")
    return found


def _kind(path: Path) -> str:
    """``file``, ``dir``, ``link``, ``missing`` or what else it is (``lstat``: no link followed)."""
    # Boilerplate shape shared with untrusted_files.describe_mode (a ladder of stat.S_IS*):
    # this one gives codes to branch on, that one words for a refusal; it falls back to it.
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return describe_mode(mode)


def _refuse_unless_file(path: Path, kind: str) -> None:
    if kind == "file":
        return
    if kind == "link":
        raise ResultsError(f"{path} is a symbolic link; results must be plain files")
    what = "a folder" if kind == "dir" else kind
    raise ResultsError(f"{path} is {what}, not a regular file; results must be plain files")


def _walk(folder: Path, depth: int) -> list[Path]:
    if depth > _MAX_DEPTH:
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        kind = _kind(entry)
        if entry.name == "results.json":
            _refuse_unless_file(entry, kind)
            found.append(entry)
        elif kind == "dir":
            found += _walk(entry, depth + 1)
        # folders linked from elsewhere are not searched; other entries are not results
    return found


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, a results file that untrusted code wrote.

    Its folder and the file are opened without following links, the file without blocking (a
    FIFO would wait for a writer forever), and what was opened must be a regular file of at
    most ``max_bytes`` (:func:`mlcheck.results.untrusted_files.read_beneath`), else
    :class:`~mlcheck.errors.ResultsError` says what it is.
    """
    try:
        return read_beneath(path.parent, path.name, max_bytes, follow_root=False)
    except FileNotFoundError:
        raise ResultsMissing(f"no results at {path}: run `mlcheck run` first") from None
    except TooLarge as exc:
        raise ResultsError(
            f"{path} is {_mib(exc.size)}, over the {_mib(max_bytes)} limit for published "
            "results; it was not read"
        ) from None
    except NotPlainFile as exc:
        raise ResultsError(f"{exc}; results must be plain files") from None
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror or exc}") from None


def _schema() -> dict[str, Any]:
    text = resources.files("mlcheck").joinpath("schema/results.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Any:
    """The compiled results schema (``jsonschema_rs``, once per process)."""
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(_schema())


def validate(data: Any) -> RunResults:
    """Check untrusted results data against the whole results schema; build :class:`RunResults`.

    The schema version is checked first (its message says which mlcheck wrote the file), then
    every field against ``mlcheck/schema/results.schema.json`` (types, lengths, ``maxItems``,
    enums, extra fields), so fields other modules add to the schema are checked without
    changes here. The validator is ``jsonschema_rs`` (Rust): the pure-Python ``jsonschema``
    took 26 s for 20,000 tests (bench/validate_results.py), this takes well under a second.
    Without it nothing is accepted: a partial hand-written check would let the fields it
    forgot reach the comment (fail closed).
    """
    if not isinstance(data, dict):
        raise ResultsError("results file is not a JSON object")
    try:
        validator = _validator()
    except ImportError:
        raise ResultsError(
            "cannot validate untrusted results: the `jsonschema-rs` package is missing "
            "(it is a dependency of pytest-mlcheck: reinstall it, or use mlcheck's image)"
        ) from None
    if data.get("schema_version") == SCHEMA_VERSION:
        try:
            error = next(iter(validator.iter_errors(data)), None)
        except (ValueError, OverflowError) as exc:  # e.g. an integer beyond 64 bits
            raise ResultsError(f"results cannot be checked against the schema: {exc}") from None
        if error is not None:
            where = "/".join(str(p) for p in error.instance_path) or "(top level)"
            raise ResultsError(
                f"results do not match the results schema at {where}: {error.message[:300]}"
            )
    return from_dict(data)  # checks schema_version with an actionable message


def json_values_bound(raw: bytes) -> int:
    """An upper bound on the number of JSON values in ``raw``, counted at C speed.

    Every array element but the first follows a comma and the first follows ``[``; every
    object member's value follows ``:``. Separators inside strings only raise the bound.

    >>> json_values_bound(b'{"a": [1, 2, 3], "b": {}}')
    7
    """
    return 1 + raw.count(b",") + raw.count(b"[") + raw.count(b":")


def load_untrusted(paths: Iterable[Path], *, limits: Limits = Limits()) -> list[RunResults]:
    """Read results from folders or artifacts as untrusted data (see the module docstring).

    Raises :class:`~mlcheck.errors.ResultsError` naming the file and what is wrong with it.
    Nothing is written: the results files stay exactly as they were.
    """
    loaded: list[RunResults] = []
    tests = values = total = 0
    for path in find_results_files(list(paths), limits):
        raw = read_regular(path, limits.max_bytes)
        total += len(raw)
        if total > limits.max_total_bytes:
            raise ResultsError(
                f"{path}: the results given are over {_mib(limits.max_total_bytes)} in all; "
                "publish fewer folders at a time"
            )
        # Bounded before parsing: memory and time grow with the number of values, not bytes
        # (50 MiB of tiny subtests would be 17 million objects).
        values += json_values_bound(raw)
        if values > limits.max_values:
            raise ResultsError(
                f"{path}: more than {limits.max_values:,} JSON values in the published results "
                "(an upper bound, counted by separators): refused unread"
            )
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
