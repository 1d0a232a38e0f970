"""The hidden digest a report carries so that a later run can compare with it.

A section of the PR comment (and ``report.md``) ends with one line::

    <!-- mlcheck:digest v1 fast eNpd...== -->

The payload is zlib-compressed JSON (counts, head SHA) followed by the failing tests as sorted
32-bit hashes of their node ids, Golomb-Rice coded: under 3 bytes per failure, so thousands fit
in a few kilobytes. When even that is too big for the budget, only the hashes below a threshold are
kept, which is a uniform sample; a failure whose hash is above it is reported as "not compared"
rather than guessed.

Given the digest of the base branch, :func:`classify` sorts this run's failures into **new**
(failed here, not failing on base), **already failing on base**, and **flaky** (passed on a
rerun).

>>> from mlcheck.results import RunResults, RunInfo, TestResult, Outcome
>>> base = RunResults(RunInfo(), (TestResult("t::a", Outcome.FAILED),))
>>> line = encode(base, section="fast")
>>> parse(line)["fast"].failed_on_base("t::a")
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .errors import ResultsError
from .results import Outcome, RunResults, TestResult

DIGEST_VERSION = 1
HASH_BITS = 32
_SPACE = 1 << HASH_BITS
# Standard base64 has no "-" and no ">", so the payload can never end the HTML comment.
_LINE = re.compile(r"<!-- mlcheck:digest v(\d+) (\S+) ([A-Za-z0-9+/=]*) -->")
DEFAULT_MAX_CHARS = 8_000


def nodeid_hash(nodeid: str) -> int:
    """A stable 32-bit hash of a node id (collisions: ~1 in a million per failure)."""
    return int.from_bytes(hashlib.blake2b(nodeid.encode(), digest_size=4).digest(), "big")


@dataclass(frozen=True)
class Digest:
    """What a run left for the next one: counts and which tests failed.

    ``failing`` holds hashes of failing tests below ``threshold`` (``2**32`` when complete).
    """

    section: str
    counts: Mapping[str, int] = field(default_factory=dict)
    sha: str | None = None
    failing: frozenset[int] = frozenset()
    threshold: int = _SPACE
    version: int = DIGEST_VERSION

    @property
    def complete(self) -> bool:
        return self.threshold >= _SPACE

    def failed_on_base(self, nodeid: str) -> bool | None:
        """True/False when the digest knows; None when the test's hash was not kept."""
        h = nodeid_hash(nodeid)
        if h >= self.threshold:
            return None
        return h in self.failing


def _rice_encode(values: list[int]) -> tuple[int, int, bytes]:
    """Golomb-Rice code of sorted hashes' gaps: about log2(mean gap) + 1.5 bits each."""
    gaps, prev = [], 0
    for v in values:
        gaps.append(v - prev)
        prev = v
    mean = (prev // len(gaps)) if gaps else 1
    k = max(0, mean.bit_length() - 1)
    mask = (1 << k) - 1
    bits = "".join("1" * (g >> k) + "0" + (format(g & mask, f"0{k}b") if k else "") for g in gaps)
    nbits = len(bits)
    data = int(bits, 2).to_bytes((nbits + 7) // 8, "big") if bits else b""
    return k, nbits, data


def _rice_decode(k: int, nbits: int, count: int, data: bytes) -> list[int]:
    bits = format(int.from_bytes(data, "big"), "b").zfill(len(data) * 8)[-nbits:] if nbits else ""
    values, prev, i = [], 0, 0
    for _ in range(count):
        zero = bits.index("0", i)
        q, i = zero - i, zero + 1
        r = int(bits[i : i + k], 2) if k else 0
        i += k
        prev += (q << k) | r
        values.append(prev)
    if i != nbits:
        raise ValueError("digest payload has trailing bits")
    return values


def _pack(header: dict[str, object], hashes: list[int]) -> str:
    k, nbits, data = _rice_encode(hashes)
    head = dict(header, k=k, b=nbits, n=len(hashes))
    raw = json.dumps(head, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    return base64.b64encode(zlib.compress(raw + data, 9)).decode("ascii")


def _section_name(section: str) -> str:
    # Section names become part of an HTML comment line: keep them to a safe alphabet.
    cleaned = re.sub(r"[^A-Za-z0-9_.+,]", "_", section)
    return cleaned or "default"


def encode(
    results: RunResults | Iterable[TestResult],
    *,
    section: str,
    sha: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> str:
    """The digest line for ``results`` (at most ``max_chars`` characters)."""
    if isinstance(results, RunResults):
        tests: Iterable[TestResult] = results.tests
        sha = sha or results.run.sha
    else:
        tests = results
    counts: dict[str, int] = {}
    failing: set[int] = set()
    for t in tests:
        counts[t.outcome.value] = counts.get(t.outcome.value, 0) + 1
        if t.outcome.is_failure:
            failing.add(nodeid_hash(t.nodeid))
    name = _section_name(section)
    if sha and not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
        sha = None  # results are data from elsewhere: keep the digest small and well-formed
    header: dict[str, object] = {"counts": counts, "sha": sha}
    hashes = sorted(failing)
    prefix = f"<!-- mlcheck:digest v{DIGEST_VERSION} {name} "
    suffix = " -->"

    def line(kept: list[int], threshold: int) -> str:
        head = dict(header, t=threshold) if threshold < _SPACE else header
        return prefix + _pack(head, kept) + suffix

    full = line(hashes, _SPACE)
    if len(full) <= max_chars:
        return full
    # Keep the k smallest hashes (a uniform sample); find the largest k that fits by bisection.
    lo, hi = 0, len(hashes)
    best = line([], hashes[0] if hashes else _SPACE)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        candidate = line(hashes[:mid], hashes[mid] if mid < len(hashes) else _SPACE)
        if len(candidate) <= max_chars:
            best, lo = candidate, mid
        else:
            hi = mid - 1
    if len(best) > max_chars:
        raise ResultsError(f"max_chars={max_chars} is too small for a digest")
    return best


def parse(text: str) -> dict[str, Digest]:
    """Every digest in ``text`` (a comment body, ``report.md``, a digest file), by section.

    Digests of another version are skipped (an old comment after an upgrade); a damaged digest
    raises :class:`~mlcheck.errors.ResultsError`.
    """
    found: dict[str, Digest] = {}
    for m in _LINE.finditer(text):
        version, section, payload = int(m.group(1)), m.group(2), m.group(3)
        if version != DIGEST_VERSION:
            continue
        try:
            raw = zlib.decompress(base64.b64decode(payload, validate=True))
            head, _, packed = raw.partition(b"\n")
            header = json.loads(head)
            hashes = _rice_decode(int(header["k"]), int(header["b"]), int(header["n"]), packed)
            counts = {str(k): int(v) for k, v in dict(header.get("counts") or {}).items()}
            sha = header.get("sha")
            found[section] = Digest(
                section=section,
                counts=counts,
                sha=str(sha) if sha else None,
                failing=frozenset(hashes),
                threshold=int(header.get("t", _SPACE)),
            )
        except (binascii.Error, zlib.error, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ResultsError(
                f"the mlcheck digest for section {section!r} is damaged: {exc}"
            ) from exc
    return found


def read(path: Path) -> dict[str, Digest]:
    """Digests from a file (``report.md``, ``digest.txt``, a saved comment body)."""
    try:
        return parse(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError as exc:
        raise ResultsError(f"no base digest at {path}") from exc


class Category(StrEnum):
    NEW = "new"  # failed here; passed (or did not exist) on base
    ON_BASE = "on_base"  # failed here and on base
    UNCOMPARED = "uncompared"  # failed here; no base, or the base digest did not keep it
    FLAKY = "flaky"  # passed on a rerun


@dataclass(frozen=True)
class Classified:
    """This run's problems sorted for the report, new first."""

    new: tuple[TestResult, ...] = ()
    on_base: tuple[TestResult, ...] = ()
    uncompared: tuple[TestResult, ...] = ()
    flaky: tuple[TestResult, ...] = ()
    base: Digest | None = None

    def ordered(self) -> list[tuple[Category, TestResult]]:
        """Failures in the order the report and annotations list them."""
        return [
            *((Category.NEW, t) for t in self.new),
            *((Category.UNCOMPARED, t) for t in self.uncompared),
            *((Category.ON_BASE, t) for t in self.on_base),
        ]


def classify(tests: Iterable[TestResult], base: Digest | None) -> Classified:
    """Sort failures into new / already failing on base / not compared, and flaky ones.

    >>> from mlcheck.results import TestResult, Outcome
    >>> c = classify([TestResult("t::a", Outcome.FAILED)], None)
    >>> len(c.uncompared), len(c.new)
    (1, 0)
    """
    new: list[TestResult] = []
    on_base: list[TestResult] = []
    uncompared: list[TestResult] = []
    flaky: list[TestResult] = []
    for t in tests:
        if t.outcome is Outcome.FLAKY:
            flaky.append(t)
        elif t.outcome.is_failure:
            known = base.failed_on_base(t.nodeid) if base is not None else None
            (uncompared if known is None else on_base if known else new).append(t)
    return Classified(tuple(new), tuple(on_base), tuple(uncompared), tuple(flaky), base)
