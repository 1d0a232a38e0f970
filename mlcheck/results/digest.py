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

>>> from mlcheck.results.schema import RunResults, RunInfo, TestResult, Outcome
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
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from ..errors import ResultsError, ResultsMissing
from ..text import SHA_RE
from .failure_kinds import FailureKind
from .schema import Outcome, RunResults, TestResult

DIGEST_VERSION = 2
READABLE_VERSIONS = (1, 2)  # v1: counts and failures only (no ran set, no durations)
HASH_BITS = 32
_SPACE = 1 << HASH_BITS
# Standard base64 has no "-" and no ">", so the payload can never end the HTML comment.
_LINE = re.compile(r"<!-- mlcheck:digest v(\d+) (\S+) ([A-Za-z0-9+/=]*) -->")
DEFAULT_MAX_CHARS = 8_000

# Outcomes that mean the test ran (its body or its setup was attempted).
RAN = frozenset(
    {Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.FLAKY, Outcome.XFAILED, Outcome.XPASSED}
)
# The ran set keeps this many bits beyond log2(tests): a test that did not run on base is
# mistaken for one that did about once in 2**10 lookups (a spurious "stopped running" line, or
# a deleted test not counted); it never touches a verdict.
RAN_EXTRA_BITS = 10
# Durations are kept for tests at least this slow, in buckets a factor sqrt(2) wide; a test that
# ran on base and is not in the list took less than this.
SLOW_FLOOR = 0.5
_MAX_BUCKET = 63


def nodeid_hash(nodeid: str) -> int:
    """A stable 32-bit hash of a node id (collisions: ~1 in a million per failure)."""
    return int.from_bytes(hashlib.blake2b(nodeid.encode(), digest_size=4).digest(), "big")


def duration_bucket(seconds: float) -> int:
    """The bucket of a duration of at least :data:`SLOW_FLOOR` (0 .. 63, sqrt(2) wide).

    >>> duration_bucket(0.5), duration_bucket(1.0), duration_bucket(10.0)
    (0, 2, 8)
    """
    return max(0, min(_MAX_BUCKET, int(2 * math.log2(max(seconds, SLOW_FLOOR) / SLOW_FLOOR))))


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The durations a bucket stands for: ``[low, high)`` seconds."""
    return SLOW_FLOOR * 2 ** (bucket / 2), SLOW_FLOOR * 2 ** ((bucket + 1) / 2)


def _ran_bits(count: int) -> int:
    return min(HASH_BITS, max(1, count.bit_length()) + RAN_EXTRA_BITS)


@dataclass(frozen=True)
class Digest:
    """What a run left for the next one: counts, which tests failed, ran, and were slow.

    ``failing`` holds hashes of failing tests below ``threshold`` (``2**32`` when complete).
    ``ran`` holds the top ``ran_bits`` bits of the hashes of tests that ran, below
    ``ran_threshold`` (``2**ran_bits`` when complete); None in a v1 digest. ``slow`` maps the
    hashes (below ``slow_threshold``) of tests that took at least :data:`SLOW_FLOOR` to their
    duration bucket; None in a v1 digest.
    """

    section: str
    counts: Mapping[str, int] = field(default_factory=dict)
    sha: str | None = None
    failing: frozenset[int] = frozenset()
    threshold: int = _SPACE
    version: int = DIGEST_VERSION
    ran: frozenset[int] | None = None
    ran_bits: int = HASH_BITS
    ran_threshold: int = _SPACE
    slow: Mapping[int, int] | None = None
    slow_threshold: int = _SPACE

    @property
    def complete(self) -> bool:
        return self.threshold >= _SPACE

    @property
    def ran_complete(self) -> bool:
        return self.ran is not None and self.ran_threshold >= 1 << self.ran_bits

    def failed_on_base(self, nodeid: str) -> bool | None:
        """True/False when the digest knows; None when the test's hash was not kept."""
        h = nodeid_hash(nodeid)
        if h >= self.threshold:
            return None
        return h in self.failing

    def ran_key(self, nodeid: str) -> int:
        return nodeid_hash(nodeid) >> (HASH_BITS - self.ran_bits)

    def ran_on_base(self, nodeid: str) -> bool | None:
        """Whether the test ran on base; None when the digest does not know (v1, sampled out)."""
        if self.ran is None:
            return None
        key = self.ran_key(nodeid)
        if key >= self.ran_threshold:
            return None
        return key in self.ran

    def base_duration(self, nodeid: str) -> tuple[float, float] | None:
        """``(low, high)`` seconds the test took on base; None when not known."""
        if self.slow is None:
            return None
        h = nodeid_hash(nodeid)
        if h >= self.slow_threshold:
            return None
        bucket = self.slow.get(h)
        if bucket is not None:
            return bucket_bounds(bucket)
        return (0.0, SLOW_FLOOR) if self.ran_on_base(nodeid) else None


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


@dataclass
class _Set:
    """One sorted hash set of a v2 payload, of which the ``kept`` smallest are written."""

    hashes: list[int]
    space: int
    kept: int = -1  # -1: all

    def take(self) -> tuple[list[int], int]:
        if self.kept < 0 or self.kept >= len(self.hashes):
            return self.hashes, self.space
        return self.hashes[: self.kept], self.hashes[self.kept]


def _pack(header: dict[str, object], sets: Mapping[str, _Set], extra: bytes = b"") -> str:
    head = dict(header)
    blobs = []
    for name, hash_set in sets.items():
        kept, threshold = hash_set.take()
        k, nbits, data = _rice_encode(kept)
        head[name] = [k, nbits, len(kept), threshold, len(data)]
        blobs.append(data)
    # the slow tests' buckets, one byte each, in the order of their kept hashes
    blobs.append(extra[: len(sets["s"].take()[0])])
    raw = json.dumps(head, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    return base64.b64encode(zlib.compress(raw + b"".join(blobs), 9)).decode("ascii")


def _section_name(section: str) -> str:
    # Section names become part of an HTML comment line: keep them to a safe alphabet.
    cleaned = re.sub(r"[^A-Za-z0-9_.+,]", "_", section)
    return cleaned or "default"


def _largest_fitting(count: int, fits: Callable[[int], bool]) -> int | None:
    """The largest k in 0..count with fits(k) (fits is monotone), or None if not even 0."""
    if not fits(0):
        return None
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def encode(
    results: RunResults | Iterable[TestResult],
    *,
    section: str,
    sha: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> str:
    """The digest line for ``results`` (at most ``max_chars`` characters).

    When everything does not fit, detail goes in this order: first the set of tests that ran
    (a uniform sample of it is kept), then the durations, then the failures, so that what
    decides "new failure" is the last to go.
    """
    if isinstance(results, RunResults):
        tests: Iterable[TestResult] = results.tests
        sha = sha or results.run.sha
    else:
        tests = results
    counts: dict[str, int] = {}
    failing: set[int] = set()
    ran: set[int] = set()
    slow: dict[int, int] = {}
    for t in tests:
        counts[t.outcome.value] = counts.get(t.outcome.value, 0) + 1
        h = nodeid_hash(t.nodeid)
        if t.outcome.is_failure:
            failing.add(h)
        if t.outcome in RAN:
            ran.add(h)
            if t.duration >= SLOW_FLOOR:
                slow[h] = duration_bucket(t.duration)
    name = _section_name(section)
    if sha and not SHA_RE.fullmatch(sha):
        sha = None  # results are data from elsewhere: keep the digest small and well-formed
    bits = _ran_bits(len(ran))
    header: dict[str, object] = {"counts": counts, "sha": sha, "rb": bits}
    slow_hashes = sorted(slow)
    sets = {
        "f": _Set(sorted(failing), _SPACE),
        "r": _Set(sorted({h >> (HASH_BITS - bits) for h in ran}), 1 << bits),
        "s": _Set(slow_hashes, _SPACE),
    }
    buckets = bytes(slow[h] for h in slow_hashes)
    prefix = f"<!-- mlcheck:digest v{DIGEST_VERSION} {name} "
    suffix = " -->"

    def line() -> str:
        return prefix + _pack(header, sets, buckets) + suffix

    def fits_with(which: str) -> Callable[[int], bool]:
        def fits(k: int) -> bool:
            sets[which].kept = k
            return len(line()) <= max_chars

        return fits

    full = line()
    if len(full) <= max_chars:
        return full
    for which in ("r", "s", "f"):  # the ran set goes first, failures last
        kept = _largest_fitting(len(sets[which].hashes), fits_with(which))
        if kept is not None:
            sets[which].kept = kept
            return line()
        sets[which].kept = 0
    raise ResultsError(f"max_chars={max_chars} is too small for a digest")


def parse(text: str) -> dict[str, Digest]:
    """Every digest in ``text`` (a comment body, ``report.md``, a digest file), by section.

    Digests of versions this mlcheck does not read are skipped (an old comment after an
    upgrade; v1 is read, without its later parts); a damaged digest raises
    :class:`~mlcheck.errors.ResultsError`.
    """
    found: dict[str, Digest] = {}
    for m in _LINE.finditer(text):
        version, section, payload = int(m.group(1)), m.group(2), m.group(3)
        if version not in READABLE_VERSIONS:
            continue
        try:
            raw = zlib.decompress(base64.b64decode(payload, validate=True))
            head, _, packed = raw.partition(b"\n")
            header = json.loads(head)
            counts = {str(k): int(v) for k, v in dict(header.get("counts") or {}).items()}
            sha = header.get("sha")
            base = Digest(section=section, counts=counts, sha=str(sha) if sha else None)
            found[section] = (
                _parse_v1(base, header, packed) if version == 1 else _parse_v2(base, header, packed)
            )
        except (binascii.Error, zlib.error, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ResultsError(
                f"the mlcheck digest for section {section!r} is damaged: {exc}"
            ) from exc
    return found


def _parse_v1(base: Digest, header: Mapping[str, object], packed: bytes) -> Digest:
    hashes = _rice_decode(int(header["k"]), int(header["b"]), int(header["n"]), packed)  # type: ignore[call-overload]
    return replace(
        base,
        version=1,
        failing=frozenset(hashes),
        threshold=int(header.get("t", _SPACE)),  # type: ignore[call-overload]
    )


def _parse_v2(base: Digest, header: Mapping[str, object], packed: bytes) -> Digest:
    offset = 0
    decoded: dict[str, tuple[list[int], int]] = {}
    for name in ("f", "r", "s"):
        k, nbits, count, threshold, size = (int(x) for x in header[name])  # type: ignore[attr-defined]
        decoded[name] = (_rice_decode(k, nbits, count, packed[offset : offset + size]), threshold)
        offset += size
    slow_hashes, slow_threshold = decoded["s"]
    buckets = packed[offset : offset + len(slow_hashes)]
    if len(buckets) != len(slow_hashes) or offset + len(buckets) != len(packed):
        raise ValueError("digest durations do not match their tests")
    bits = int(header["rb"])  # type: ignore[call-overload]
    if not 1 <= bits <= HASH_BITS:
        raise ValueError(f"ran-set width {bits} is out of range")
    return replace(
        base,
        failing=frozenset(decoded["f"][0]),
        threshold=decoded["f"][1],
        ran=frozenset(decoded["r"][0]),
        ran_bits=bits,
        ran_threshold=decoded["r"][1],
        slow=dict(zip(slow_hashes, buckets, strict=True)),
        slow_threshold=slow_threshold,
    )


def read(path: Path) -> dict[str, Digest]:
    """Digests from a file (``report.md``, ``digest.txt``, a saved comment body)."""
    try:
        return parse(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError as exc:
        raise ResultsMissing(f"no base digest at {path}") from exc


class Category(StrEnum):
    NEW = "new"  # failed here; passed (or did not exist) on base
    ON_BASE = "on_base"  # failed here and on base
    UNCOMPARED = "uncompared"  # failed here; no base, or the base digest did not keep it
    FLAKY = "flaky"  # passed on a rerun
    INFRA = "infra"  # failed for a reason outside the code: hub, oom, device, crash, timeout


@dataclass(frozen=True)
class Classified:
    """This run's problems sorted for the report, new first."""

    new: tuple[TestResult, ...] = ()
    on_base: tuple[TestResult, ...] = ()
    uncompared: tuple[TestResult, ...] = ()
    flaky: tuple[TestResult, ...] = ()
    base: Digest | None = None
    # infrastructure failures: never compared with the base, listed after the code failures
    infra: tuple[TestResult, ...] = ()

    def ordered(self) -> list[tuple[Category, TestResult]]:
        """Failures in the order the report and annotations list them."""
        return [
            *((Category.NEW, t) for t in self.new),
            *((Category.UNCOMPARED, t) for t in self.uncompared),
            *((Category.ON_BASE, t) for t in self.on_base),
            *((Category.INFRA, t) for t in self.infra),
        ]


def classify(tests: Iterable[TestResult], base: Digest | None) -> Classified:
    """Sort failures into new / already failing on base / not compared, and flaky ones.

    >>> from mlcheck.results.schema import TestResult, Outcome
    >>> c = classify([TestResult("t::a", Outcome.FAILED)], None)
    >>> len(c.uncompared), len(c.new)
    (1, 0)
    """
    new: list[TestResult] = []
    on_base: list[TestResult] = []
    uncompared: list[TestResult] = []
    flaky: list[TestResult] = []
    infra: list[TestResult] = []
    for t in tests:
        if t.outcome is Outcome.FLAKY:
            flaky.append(t)
        elif t.outcome.is_failure and is_infrastructure(t):
            infra.append(t)
        elif t.outcome.is_failure:
            known = base.failed_on_base(t.nodeid) if base is not None else None
            (uncompared if known is None else on_base if known else new).append(t)
    return Classified(
        tuple(new), tuple(on_base), tuple(uncompared), tuple(flaky), base, tuple(infra)
    )


_INFRA_KINDS = frozenset(k.value for k in FailureKind if k.infrastructure)


def is_infrastructure(t: TestResult) -> bool:
    """A failure of an infrastructure kind; no kind (schema v1) or an unknown one is code."""
    return t.failure_kind in _INFRA_KINDS


@dataclass(frozen=True)
class Stopped:
    """Tests that ran on base and did not run here.

    ``gone`` counts base tests missing from this run (deleted, renamed or deselected): the
    digest keeps hashes, not names. It is None when this run covers one shard only.
    ``unknown`` counts tests skipped here that the base digest did not keep (a sample).
    """

    tests: tuple[TestResult, ...] = ()
    gone: int | None = 0
    unknown: int = 0
    sampled: bool = False

    @property
    def total(self) -> int:
        return len(self.tests) + (self.gone or 0)


def stopped_running(results: RunResults, base: Digest | None) -> Stopped | None:
    """Which tests stopped running since base; None when the base digest cannot say (v1).

    >>> from mlcheck.results.schema import RunResults, RunInfo, TestResult, Outcome
    >>> b = parse(encode([TestResult("t::a", Outcome.PASSED)], section="f"))["f"]
    >>> s = stopped_running(RunResults(RunInfo(), (TestResult("t::a", Outcome.SKIPPED),)), b)
    >>> [t.nodeid for t in s.tests], s.gone
    (['t::a'], 0)
    """
    if base is None or base.ran is None:
        return None
    stopped: list[TestResult] = []
    unknown = 0
    present: set[int] = set()
    for t in results.tests:
        present.add(base.ran_key(t.nodeid))
        if t.outcome in RAN:
            continue
        known = base.ran_on_base(t.nodeid)
        if known:
            stopped.append(t)
        elif known is None:
            unknown += 1
    gone = None
    if results.run.shard is None:
        gone = sum(1 for key in base.ran if key not in present)
    return Stopped(tuple(stopped), gone, unknown, not base.ran_complete)


@dataclass(frozen=True)
class Slower:
    test: TestResult
    base_low: float
    base_high: float


def slower_than_base(
    tests: Iterable[TestResult],
    base: Digest | None,
    *,
    factor: float = 2.0,
    at_least: float = 1.0,
    top: int = 5,
) -> list[Slower]:
    """Tests that took more than ``factor`` times and ``at_least`` seconds longer than on base.

    Judged against the top of the base's duration bucket, so a test is only listed when it
    certainly grew that much; the biggest growth first.
    """
    found: list[Slower] = []
    if base is None:
        return found
    for t in tests:
        if t.outcome not in RAN or t.duration <= at_least:
            continue
        bounds = base.base_duration(t.nodeid)
        if bounds is None:
            continue
        low, high = bounds
        if t.duration > factor * high and t.duration - high > at_least:
            found.append(Slower(t, low, high))
    found.sort(key=lambda s: (-s.test.duration / max(s.base_high, 1e-3), s.test.nodeid))
    return found[:top]
