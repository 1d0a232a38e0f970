"""Golden values: turn observed values into their stored form and compare them.

Stored forms are plain JSON (the shapes ``mlcheck/schema/golden.schema.json`` describes):
``{"tensor": {...}}``, ``{"float": x}``, ``{"int": n}``, ``{"bool": b}``, ``{"str": s}``,
``{"dict": {...}}``, ``{"list": [...]}``. Nothing here imports pytest; torch is imported only
when a tensor is met.

>>> encode({"n": 3, "label": "unsafe"})
{'dict': {'n': {'int': 3}, 'label': {'str': 'unsafe'}}}
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

MAX_WHOLE = 16_384  # elements stored whole; larger tensors store a summary
EDGE = 64  # leading and trailing elements kept of a large tensor
SAMPLE = 1_024  # strided sample of a large tensor

MODES = ("exact", "allclose", "cosine", "topk")

# allclose defaults by dtype: torch.testing.assert_close's (rtol, atol), the tolerances torch
# itself uses for "the same computation on the same kind of machine".
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
    "float": (1e-7, 1e-7),  # Python floats are float64
}
DEFAULT_MIN_COSINE = 0.9999
DEFAULT_K = 1

# significant digits that always round-trip, and a caster that rounds a float64 to the dtype
_F32 = struct.Struct("<f")
_F16 = struct.Struct("<e")


def _to_f32(x: float) -> float:
    return float(_F32.unpack(_F32.pack(x))[0])


def _to_f16(x: float) -> float:
    try:
        return float(_F16.unpack(_F16.pack(x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def _to_bf16(x: float) -> float:
    # bfloat16 is the top half of a float32, rounded to nearest even (as torch does)
    (bits,) = struct.unpack("<I", _F32.pack(x))
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return float(_F32.unpack(struct.pack("<I", bits))[0])


_ROUNDERS = {
    "float16": (_to_f16, 5),
    "bfloat16": (_to_bf16, 4),
    "float32": (_to_f32, 9),
}


def shortest(x: float, dtype: str) -> float | str:
    """The shortest decimal that rounds back to ``x`` in ``dtype`` (JSON-safe: inf/nan as text).

    >>> shortest(0.10000000149011612, "float32"), shortest(0.1005859375, "bfloat16")
    (0.1, 0.1006)
    """
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    rounder = _ROUNDERS.get(dtype)
    if rounder is None:
        return x  # float64: Python's repr is already the shortest round-trip
    cast, digits = rounder
    for p in range(1, digits + 1):
        y = float(f"{x:.{p}g}")
        if cast(y) == x:
            return y
    return x


def _shortest_all(x: Any, dtype: str) -> list[float | str]:
    """:func:`shortest` of every element of a 1-D float tensor."""
    if dtype in ("float16", "float32", "float64"):
        try:
            import numpy as np  # a transformers dependency; its Dragon4 is ~8x the loop below
        except ImportError:
            pass
        else:
            out: list[float | str] = []
            for text in np.asarray(x).astype(str).tolist():
                v = float(text)
                out.append(v if math.isfinite(v) else shortest(v, dtype))
            return out
    return [shortest(v, dtype) for v in x.double().tolist()]


def _decode_float(v: float | str, dtype: str = "float64") -> float:
    """A stored decimal back to the exact value the dtype holds ("nan", "inf" parse too)."""
    x = float(v)
    rounder = _ROUNDERS.get(dtype)
    return rounder[0](x) if rounder is not None and math.isfinite(x) else x


# ---------------------------------------------------------------------------------------------
# Encoding


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "dtype")


def encode(value: Any, *, k: int | None = None) -> dict[str, Any]:
    """The stored form of ``value`` (a tensor, number, string, or nested dict/list of them).

    ``k`` adds the top-k indices of large tensors (``mode="topk"`` cannot be judged from a
    sample).
    """
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, float):
        return {"float": shortest(value, "float64")}
    if isinstance(value, str):
        return {"str": value}
    if _is_tensor(value):
        return {"tensor": _encode_tensor(value, k)}
    if isinstance(value, Mapping):  # dicts and transformers' ModelOutput
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(f"golden values: dict keys must be strings, got {key!r}")
            if item is not None:
                out[key] = encode(item, k=k)
        return {"dict": out}
    if isinstance(value, list | tuple):
        return {"list": [encode(item, k=k) for item in value]}
    raise UsageError(
        f"golden values: cannot store a {type(value).__name__}; pass tensors, numbers, "
        "strings, or dicts/lists of them"
    )


def _dtype_name(tensor: Any) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _encode_tensor(tensor: Any, k: int | None) -> dict[str, Any]:
    import torch

    dtype = _dtype_name(tensor)
    if tensor.is_complex() or tensor.is_quantized or tensor.is_sparse:
        raise UsageError(f"golden values: {dtype} tensors (complex/quantized/sparse) unsupported")
    t = tensor.detach().to("cpu").contiguous()
    flat = t.reshape(-1)
    floating = t.is_floating_point()
    out: dict[str, Any] = {"dtype": dtype, "shape": list(t.shape)}

    def listed(x: Any) -> list[Any]:
        if floating:
            return _shortest_all(x, dtype)
        return [bool(v) if dtype == "bool" else int(v) for v in x.tolist()]

    n = flat.numel()
    if n <= MAX_WHOLE:
        out["values"] = listed(flat)
        return out
    stride = math.ceil(n / SAMPLE)
    as64 = flat.double()
    out["summary"] = {
        name: shortest(float(v), "float64")
        for name, v in (
            ("sum", as64.sum()),
            ("mean", as64.mean()),
            ("std", as64.std()),
            ("norm", torch.linalg.vector_norm(as64)),
        )
    }
    out["head"] = listed(flat[:EDGE])
    out["tail"] = listed(flat[-EDGE:])
    out["stride"] = stride
    out["sample"] = listed(flat[::stride])
    if k is not None and t.dim() >= 1:
        top = torch.topk(t.double(), k, dim=-1).indices.reshape(-1)
        out["topk"] = {"k": k, "indices": [int(i) for i in top.tolist()]}
    return out


# ---------------------------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True)
class Difference:
    """How one leaf (``path``) differs; ``problem`` is the one-line verdict."""

    path: str
    problem: str
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    first: tuple[str, ...] = ()  # "index: expected → actual", the first few
    sampled: str = ""  # set when a large tensor was compared by its summary

    def describe(self) -> str:
        lines = [f"{self.path or 'value'}: {self.problem}"]
        stats = [
            f"{name} {_num(v)}"
            for name, v in (("max abs", self.max_abs), ("max rel", self.max_rel))
            if v is not None
        ]
        if self.cosine is not None:
            stats.append(f"cosine {self.cosine:.8f}")
        if stats:
            lines.append("  " + ", ".join(stats))
        if self.first:
            lines.append("  first differing: " + "; ".join(self.first))
        if self.sampled:
            lines.append("  " + self.sampled)
        return "\n".join(lines)


def _num(v: float) -> str:
    return f"{v:.4g}"


@dataclass(frozen=True)
class Tolerance:
    mode: str = "allclose"
    rtol: float | None = None
    atol: float | None = None
    min_cosine: float | None = None
    k: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"golden.check: mode must be one of {', '.join(MODES)}")
        if (self.rtol is None) != (self.atol is None) and self.mode == "allclose":
            raise UsageError("golden.check: give both rtol and atol, or neither")
        if self.k is not None and self.k < 1:
            raise UsageError("golden.check: k must be at least 1")


def compare(
    expected: Mapping[str, Any], actual: Mapping[str, Any], tol: Tolerance, root: str = ""
) -> list[Difference]:
    """Every difference between two stored forms under ``tol`` (empty: they agree); paths
    start at ``root`` (``logits.hidden[2]``)."""
    out: list[Difference] = []
    _compare(expected, actual, tol, root, out)
    return out


def _kind(v: Mapping[str, Any]) -> str:
    return next(iter(v))


def _compare(
    exp: Mapping[str, Any], act: Mapping[str, Any], tol: Tolerance, path: str, out: list[Difference]
) -> None:
    ek, ak = _kind(exp), _kind(act)
    if ek != ak:
        out.append(Difference(path, f"expected a {ek}, got a {ak}"))
        return
    e, a = exp[ek], act[ak]
    if ek == "dict":
        for key in sorted(set(e) | set(a)):
            sub = f"{path}.{key}" if path else key
            if key not in a:
                out.append(Difference(sub, "missing from the value"))
            elif key not in e:
                out.append(Difference(sub, "not in the golden value"))
            else:
                _compare(e[key], a[key], tol, sub, out)
    elif ek == "list":
        if len(e) != len(a):
            out.append(Difference(path, f"expected {len(e)} items, got {len(a)}"))
            return
        for i, (x, y) in enumerate(zip(e, a, strict=True)):
            _compare(x, y, tol, f"{path}[{i}]", out)
    elif ek == "tensor":
        diff = _compare_tensor(e, a, tol, path)
        if diff is not None:
            out.append(diff)
    elif ek == "float":
        diff = _compare_floats([e], [a], "float", (), tol, path, scalar=True)
        if diff is not None:
            out.append(diff)
    elif e != a:  # int, bool, str: equal or not, whatever the mode
        out.append(Difference(path, f"expected {e!r}, got {a!r}"))


def _compare_tensor(
    e: Mapping[str, Any], a: Mapping[str, Any], tol: Tolerance, path: str
) -> Difference | None:
    if e["dtype"] != a["dtype"]:
        return Difference(path, f"dtype {a['dtype']} but the golden value is {e['dtype']}")
    if list(e["shape"]) != list(a["shape"]):
        return Difference(
            path, f"shape {tuple(a['shape'])} but the golden value is {tuple(e['shape'])}"
        )
    shape = tuple(e["shape"])
    if "values" in e and "values" in a:
        if tol.mode == "topk":
            return _compare_topk(
                _topk(e["values"], shape, tol.k), _topk(a["values"], shape, tol.k), tol, path
            )
        return _compare_floats(e["values"], a["values"], e["dtype"], shape, tol, path)
    # a large tensor: every mode compares the kept parts and the summary statistics
    numel = math.prod(shape)
    note = (
        f"compared by summary: {numel:,} elements are stored as {EDGE} leading, {EDGE} "
        f"trailing, every {e['stride']}th, and sum/mean/std/norm"
    )
    if e.get("stride") != a.get("stride"):
        return Difference(
            path, "the stored summary has another layout; record it again", sampled=note
        )
    if tol.mode == "topk":
        if "topk" not in e or e["topk"]["k"] != a.get("topk", {}).get("k"):
            return Difference(
                path,
                "a large tensor's top-k indices were not recorded with this k; record it again "
                "with mode='topk'",
                sampled=note,
            )
        k = e["topk"]["k"]
        rows = len(e["topk"]["indices"]) // k
        eg = [e["topk"]["indices"][r * k : (r + 1) * k] for r in range(rows)]
        ag = [a["topk"]["indices"][r * k : (r + 1) * k] for r in range(rows)]
        d = _compare_topk(eg, ag, tol, path)
        return None if d is None else Difference(d.path, d.problem, first=d.first, sampled=note)
    parts = ("head", "tail", "sample")
    ev = [v for p in parts for v in e[p]]
    av = [v for p in parts for v in a[p]]
    d = _compare_floats(ev, av, e["dtype"], (), tol, path, index_names=_sample_index(e, numel))
    if d is None:
        # the statistics: within the same relative tolerance (exact: equal)
        stats: tuple[str, ...] = ("sum", "mean", "std", "norm")
        es = [_decode_float(e["summary"][s]) for s in stats]
        as_ = [_decode_float(a["summary"][s]) for s in stats]
        if tol.mode == "cosine":  # scale-free, as cosine is: each statistic over the norm
            es = [x / es[3] if es[3] else x for x in es[:3]]
            as_ = [x / as_[3] if as_[3] else x for x in as_[:3]]
            stats = ("sum/norm", "mean/norm", "std/norm")
        d = _compare_floats(
            es, as_, "float64", (), _stat_tol(tol, e["dtype"]), path, index_names=stats
        )
    if d is None:
        return None
    return Difference(d.path, d.problem, d.max_abs, d.max_rel, d.cosine, d.first, note)


def _stat_tol(tol: Tolerance, dtype: str) -> Tolerance:
    if tol.mode == "exact":
        return tol
    rtol, _ = DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
    if tol.mode == "allclose" and tol.rtol is not None:
        rtol = tol.rtol
    if tol.mode == "cosine":  # cosine near 1 allows about sqrt(2(1-c)) relative change
        rtol = math.sqrt(2 * (1 - (tol.min_cosine or DEFAULT_MIN_COSINE)))
    # accumulated in float64 over many elements: a sum can carry more absolute error
    return Tolerance("allclose", rtol=rtol, atol=max(rtol, 1e-12))


def _sample_index(e: Mapping[str, Any], numel: int) -> list[str]:
    stride = e["stride"]
    return (
        [f"[{i}]" for i in range(EDGE)]
        + [f"[{numel - EDGE + i}]" for i in range(EDGE)]
        + [f"[{i * stride}]" for i in range(len(e["sample"]))]
    )


def _unravel(i: int, shape: tuple[int, ...]) -> str:
    if not shape:
        return "()"
    idx = []
    for dim in reversed(shape):
        idx.append(i % dim)
        i //= dim
    return str(tuple(reversed(idx))).replace(",)", ")")


_TORCH_DTYPES = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}


def _as_float64(raw: Sequence[Any], dtype: str) -> Any:
    """Stored numbers as a float64 tensor holding exactly the dtype's values."""
    import torch

    t = torch.tensor([float(v) for v in raw], dtype=torch.float64)  # "nan"/"inf" parse too
    if dtype in _TORCH_DTYPES:
        t = t.to(getattr(torch, _TORCH_DTYPES[dtype])).double()  # round to nearest, as stored
    return t


def _compare_floats(
    e_raw: Sequence[Any],
    a_raw: Sequence[Any],
    dtype: str,
    shape: tuple[int, ...],
    tol: Tolerance,
    path: str,
    *,
    scalar: bool = False,
    index_names: Sequence[str] | None = None,
) -> Difference | None:
    import torch

    if tol.mode in ("cosine", "topk") and scalar:
        raise UsageError(f"golden.check: mode={tol.mode!r} needs a tensor, not a number")
    e, a = _as_float64(e_raw, dtype), _as_float64(a_raw, dtype)
    floating = dtype.startswith(("float", "bfloat"))
    if floating:
        same = (e == a) | (torch.isnan(e) & torch.isnan(a))
    else:  # integers compared as stored: float64 would merge int64 values above 2**53
        same = torch.tensor([x == y for x, y in zip(e_raw, a_raw, strict=True)], dtype=torch.bool)
    stats = _stats(e, a)

    def first(bad: Any) -> tuple[str, ...]:
        idx = torch.nonzero(bad).reshape(-1)[:5].tolist()
        name = (lambda i: index_names[i]) if index_names else (lambda i: _unravel(i, shape))
        return tuple(f"{name(i)}: {_num(float(e[i]))} → {_num(float(a[i]))}" for i in idx)

    n = e.numel()
    if tol.mode == "exact" or not floating:
        bad = ~same
        what = "not bitwise equal" if tol.mode == "exact" else "integers differ"
        count = int(bad.sum())
        if not count:
            return None
        return Difference(path, f"{count:,} of {n:,} elements {what}", *stats, first(bad))
    if tol.mode == "allclose":
        rtol, atol = DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
        if tol.rtol is not None and tol.atol is not None:
            rtol, atol = tol.rtol, tol.atol
        bad = ~(same | ((a - e).abs() <= atol + rtol * e.abs()))
        count = int(bad.sum())
        if not count:
            return None
        what = f"{count:,} of {n:,} outside rtol={rtol:g}, atol={atol:g}"
        return Difference(path, what, *stats, first(bad))
    if tol.mode == "cosine":
        limit = tol.min_cosine if tol.min_cosine is not None else DEFAULT_MIN_COSINE
        cos = stats[2]
        if cos is not None and cos >= limit:
            return None
        shown = "undefined (a zero or non-finite vector)" if cos is None else f"{cos:.8f}"
        return Difference(
            path, f"cosine similarity {shown} < min_cosine={limit:g}", *stats, first(~same)
        )
    raise AssertionError(tol.mode)


def _stats(e: Any, a: Any) -> tuple[float | None, float | None, float | None]:
    import torch

    finite = torch.isfinite(e) & torch.isfinite(a)
    if not bool(finite.any()):
        return None, None, None
    e, a = e[finite], a[finite]
    diff = (a - e).abs()
    rel = torch.where(e != 0, diff / e.abs(), torch.where(diff == 0, 0.0, math.inf))
    ne, na = float(torch.linalg.vector_norm(e)), float(torch.linalg.vector_norm(a))
    # a non-finite value makes the cosine undefined: a NaN never passes as similar
    cos = float(e @ a) / (ne * na) if ne and na and bool(finite.all()) else None
    return float(diff.max()), float(rel.max()), cos


def _topk(values: Sequence[Any], shape: tuple[int, ...], k: int | None) -> list[list[int]]:
    k = k or DEFAULT_K
    last = shape[-1] if shape else 1
    if not shape or k >= last:
        raise UsageError(
            f"golden.check: mode='topk' needs k smaller than the last dimension ({last}), got k={k}"
        )
    floats = [_decode_float(v) for v in values]
    rows = []
    for r in range(len(floats) // last):
        row = floats[r * last : (r + 1) * last]
        rows.append(sorted(range(last), key=lambda i: (-row[i], i))[:k])
    return rows


def _compare_topk(
    e: list[list[int]], a: list[list[int]], tol: Tolerance, path: str
) -> Difference | None:
    # as sets: near-tied logits may swap order on other kernels; which k classes win is the claim
    bad = [r for r, (x, y) in enumerate(zip(e, a, strict=True)) if set(x) != set(y)]
    if not bad:
        return None
    k = len(e[0]) if e else 0
    first = tuple(f"row {r}: {e[r]} → {a[r]}" for r in bad[:5])
    return Difference(
        path, f"top-{k} indices differ in {len(bad):,} of {len(e):,} rows", first=first
    )


def summary(stored: Mapping[str, Any] | None) -> str:
    """A short description of a stored value, for `mlcheck golden accept`'s old → new lines."""
    if stored is None:
        return "(none)"
    kind = _kind(stored)
    v = stored[kind]
    if kind == "tensor":
        head = f"{v['dtype']}{list(v['shape'])}"
        if "values" in v:
            nums = [_decode_float(x) for x in v["values"]]
            if not nums:
                return head
            finite = [x for x in nums if math.isfinite(x)]
            mean = math.fsum(finite) / len(finite) if finite else math.nan
            return f"{head} mean {_num(mean)} first {_num(nums[0])}"
        return f"{head} mean {_num(_decode_float(v['summary']['mean']))} (summary)"
    if kind == "dict":
        return "{" + ", ".join(f"{key}: {summary(x)}" for key, x in sorted(v.items())) + "}"
    if kind == "list":
        return "[" + ", ".join(summary(x) for x in v) + "]"
    return repr(v)
