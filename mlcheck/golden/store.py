"""Golden files (``__golden__/<test file stem>.json``): read, validate, merge, write.

Golden files come from the repository, so a pull request controls them: everything read here
is validated before use (the shape ``mlcheck/schema/golden.schema.json`` describes; errors name
the file and the entry). Writes merge under a file lock, so xdist workers recording at the same
time lose no entry.

>>> golden_path(Path("tests/test_model.py"))
PosixPath('tests/__golden__/test_model.json')
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import GoldenFileError

FORMAT = 1
FOLDER = "__golden__"
# cpu, mps, default, cuda:sm90, rocm:gfx942, xpu:arc-a770 ...
KEY_RE = re.compile(r"^[a-z][a-z0-9]*(:[A-Za-z0-9_.+-]+)?$")
WIDTH = 100  # lists of numbers are packed into lines of at most this many characters


def golden_path(test_file: Path) -> Path:
    """Where the golden values of ``test_file`` live."""
    return test_file.parent / FOLDER / f"{test_file.stem}.json"


# ---------------------------------------------------------------------------------------------
# Validation (untrusted input)


def _fail(path: Path, where: str, problem: str) -> GoldenFileError:
    at = f" at {where}" if where else ""
    return GoldenFileError(
        f"golden file {path}{at}: {problem}; fix or delete the entry (a merge conflict? keep one "
        "side and record again with `mlcheck run --golden update`)"
    )


def _check_value(path: Path, where: str, v: Any, depth: int = 0) -> None:
    if depth > 32:
        raise _fail(path, where, "values nest too deeply")
    if not isinstance(v, dict) or len(v) != 1:
        raise _fail(path, where, "a value must be an object with one key (tensor, float, ...)")
    kind, body = next(iter(v.items()))
    ok = {
        "bool": lambda b: isinstance(b, bool),
        "int": lambda b: isinstance(b, int) and not isinstance(b, bool),
        "float": _is_float,
        "str": lambda b: isinstance(b, str),
    }
    if kind in ok:
        if not ok[kind](body):
            raise _fail(path, where, f"{kind} value {body!r} has the wrong type")
    elif kind == "dict":
        if not isinstance(body, dict):
            raise _fail(path, where, "dict value must be an object")
        for key, item in body.items():
            _check_value(path, f"{where}.{key}", item, depth + 1)
    elif kind == "list":
        if not isinstance(body, list):
            raise _fail(path, where, "list value must be an array")
        for i, item in enumerate(body):
            _check_value(path, f"{where}[{i}]", item, depth + 1)
    elif kind == "tensor":
        _check_tensor(path, where, body)
    else:
        raise _fail(path, where, f"unknown value kind {kind!r}")


def _is_float(b: Any) -> bool:
    if isinstance(b, str):
        return b in ("nan", "inf", "-inf")
    return isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b)


def _check_tensor(path: Path, where: str, t: Any) -> None:
    if not isinstance(t, dict):
        raise _fail(path, where, "tensor must be an object")
    dtype, shape = t.get("dtype"), t.get("shape")
    if not isinstance(dtype, str) or not re.fullmatch(r"[a-z0-9_]+", dtype):
        raise _fail(path, where, f"tensor dtype {dtype!r} is not a dtype name")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _fail(path, where, f"tensor shape {shape!r} is not a list of sizes")
    numel = math.prod(shape)
    allowed = {"dtype", "shape", "values", "summary", "head", "tail", "stride", "sample", "topk"}
    extra = set(t) - allowed
    if extra:
        raise _fail(path, where, f"unknown tensor fields {sorted(extra)}")

    def numbers(name: str, length: int | None) -> None:
        xs = t.get(name)
        if not isinstance(xs, list) or not all(_is_float(x) or isinstance(x, bool) for x in xs):
            raise _fail(path, where, f"tensor {name} must be a list of numbers")
        if length is not None and len(xs) != length:
            raise _fail(
                path, where, f"tensor has {len(xs)} {name}, its shape {shape} says {length}"
            )

    if "values" in t:
        numbers("values", numel)
        return
    for name in ("head", "tail", "sample"):
        numbers(name, None)
    stride, summary = t.get("stride"), t.get("summary")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise _fail(path, where, "tensor stride must be a positive integer")
    if not isinstance(summary, dict) or set(summary) != {"sum", "mean", "std", "norm"}:
        raise _fail(path, where, "tensor summary must hold sum, mean, std and norm")
    if not all(_is_float(x) for x in summary.values()):
        raise _fail(path, where, "tensor summary values must be numbers")
    topk = t.get("topk")
    if topk is not None and (
        not isinstance(topk, dict)
        or not isinstance(topk.get("k"), int)
        or not isinstance(topk.get("indices"), list)
        or not all(isinstance(i, int) for i in topk["indices"])
    ):
        raise _fail(path, where, "tensor topk must hold k and a list of indices")


def validate(path: Path, data: Any) -> dict[str, Any]:
    """``data`` if it is a well-formed golden file, else :class:`GoldenFileError`."""
    if not isinstance(data, dict) or set(data) != {"format", "tests"}:
        raise _fail(path, "", 'expected an object with "format" and "tests"')
    if data["format"] != FORMAT:
        raise _fail(path, "format", f"format {data['format']!r} is not {FORMAT}: a newer mlcheck?")
    tests = data["tests"]
    if not isinstance(tests, dict):
        raise _fail(path, "tests", "must be an object of tests")
    for test, checks in tests.items():
        if not isinstance(checks, dict):
            raise _fail(path, test, "must be an object of checks")
        for name, keyed in checks.items():
            where = f"{test} › {name}"
            if not isinstance(keyed, dict) or not keyed:
                raise _fail(path, where, "must be an object of hardware keys")
            for key, record in keyed.items():
                at = f"{where} [{key}]"
                if not KEY_RE.match(key):
                    raise _fail(path, at, f"{key!r} is not a hardware key (cpu, cuda:sm90, ...)")
                if not isinstance(record, dict) or set(record) != {"recorded_with", "value"}:
                    raise _fail(path, at, 'expected "recorded_with" and "value"')
                versions = record["recorded_with"]
                if not isinstance(versions, dict) or not all(
                    isinstance(v, str) for v in versions.values()
                ):
                    raise _fail(path, at, "recorded_with must map names to version strings")
                _check_value(path, at, record["value"])
    return data


_cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def read_cached(path: Path) -> dict[str, Any]:
    """:func:`read`, parsed once per process while the file is unchanged: a test file with
    many checks reads its golden file once, not once per check. Do not modify the result."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {"format": FORMAT, "tests": {}}
    signature = (st.st_ino, st.st_mtime_ns, st.st_size)  # writes replace the inode
    hit = _cache.get(path)
    if hit is not None and hit[0] == signature:
        return hit[1]
    data = read(path)
    _cache[path] = (signature, data)
    return data


def read(path: Path) -> dict[str, Any]:
    """The golden file at ``path`` (an empty one if it does not exist), validated."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"format": FORMAT, "tests": {}}
    if "\n<<<<<<< " in "\n" + text:
        raise _fail(path, "", "it holds merge-conflict markers")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"line {exc.lineno}", f"not valid JSON ({exc.msg})") from exc
    return validate(path, data)


# ---------------------------------------------------------------------------------------------
# Writing


def dumps(data: Any) -> str:
    """Diff-friendly JSON: sorted keys, one key per line, numbers packed to ``WIDTH`` columns."""
    return _dump(data, 0) + "\n"


def _scalar(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def _dump(v: Any, indent: int) -> str:
    pad = "  " * (indent + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{pad}{_scalar(k)}: {_dump(v[k], indent + 1)}" for k in sorted(v)]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(v, list):
        if not v:
            return "[]"
        if all(not isinstance(x, dict | list) for x in v):
            one = "[" + ", ".join(_scalar(x) for x in v) + "]"
            if len(one) + len(pad) <= WIDTH:
                return one
            lines, line = [], ""
            for x in v:
                s = _scalar(x)
                if line and len(pad) + len(line) + len(s) + 2 > WIDTH:
                    lines.append(line + ",")
                    line = ""
                line = f"{line}, {s}" if line else s
            lines.append(line)
            return "[\n" + "\n".join(pad + ln for ln in lines) + "\n" + "  " * indent + "]"
        items = [pad + _dump(x, indent + 1) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return _scalar(v)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for read-modify-write of one golden file (across processes)."""
    import hashlib

    from filelock import FileLock  # huggingface_hub's own dependency

    # in the temp folder, not beside the file: nothing to gitignore in the project. The lock
    # file stays: removing it would race with a process waiting for it.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    lock = FileLock(os.path.join(tempfile.gettempdir(), f"mlcheck-golden-{digest}.lock"))
    with lock:
        yield


def write(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically (a crash never leaves half a golden file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(dumps(data))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # a committed file, not mkstemp's private 0600
    os.replace(tmp, path)


def put(
    path: Path, test: str, name: str, key: str, record: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Merge one value into the file under the lock; returns the record it replaced."""
    with locked(path):
        data = read(path)
        keyed = data["tests"].setdefault(test, {}).setdefault(name, {})
        old = keyed.get(key)
        keyed[key] = dict(record)
        write(path, data)
        _cache.pop(path, None)
    return old


def lookup(keyed: Mapping[str, Any], key: str) -> tuple[str, Mapping[str, Any]] | None:
    """The record for hardware ``key``: the exact key, then its device type (``cuda`` for
    ``cuda:sm90``) if one was written, then ``default`` if one was written. Another device's
    exact key (``cuda:sm80`` for ``cuda:sm90``) is never used.

    >>> lookup({"cuda:sm80": 1, "default": 2}, "cuda:sm90")
    ('default', 2)
    >>> lookup({"cuda:sm80": 1}, "cuda:sm90") is None
    True
    """
    for candidate in (key, key.split(":", 1)[0], "default"):
        if candidate in keyed:
            return candidate, keyed[candidate]
    return None
