"""What kind of red a failure is: the project's code, or the infrastructure it ran on.

ML CI fails for reasons that are not the change under test: a hub download error or a 429, a
CUDA out-of-memory on a shared GPU, a driver or NCCL error, a worker killed by the OOM killer, a
timeout. Each failed or errored test gets a :class:`FailureKind`, decided from its exception
chain (``__cause__`` / ``__context__``) against one table of known types and messages
(:data:`RULES`), plus the project's own patterns (``[tool.mlcheck] failure_kinds``). A kind never
changes a verdict: an infrastructure failure still fails the run.

Every exception of the chain is matched as lines ``module.Class: message``, one per class of its
MRO, so a rule on a base class also catches its subclasses.

>>> classify_exception(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
<FailureKind.OOM: 'oom'>
>>> classify_exception(AssertionError("loss did not decrease"))
<FailureKind.CODE: 'code'>
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..errors import ManifestError


class FailureKind(StrEnum):
    CODE = "code"  # the project's code or its use of a library (the default)
    HUB = "hub"  # the model hub or the local model cache
    OOM = "oom"  # out of memory (accelerator or host)
    DEVICE = "device"  # accelerator runtime, driver, NCCL: not out of memory
    CRASH = "crash"  # the worker process died (segfault, abort, killed)
    TIMEOUT = "timeout"  # pytest-timeout or the run's own time limit

    @property
    def infrastructure(self) -> bool:
        return self is not FailureKind.CODE


@dataclass(frozen=True)
class Rule:
    """``pattern`` is searched in each ``module.Class: message`` line of the chain."""

    kind: FailureKind
    pattern: re.Pattern[str]


def _rule(kind: FailureKind, *alternatives: str) -> Rule:
    return Rule(kind, re.compile("|".join(f"(?:{a})" for a in alternatives)))


_HUB_ERRORS = "huggingface_hub\\.errors\\."
# Order matters: the first rule that matches a line decides (OOM before device: "CUDA error: out
# of memory" is an OOM; timeout before everything: a timed-out download is a timeout).
RULES: tuple[Rule, ...] = (
    _rule(
        FailureKind.TIMEOUT,
        r"^(?:builtins|_pytest\.outcomes)\.Failed: Timeout \(>[\d.]+s\) from pytest-timeout",
    ),
    _rule(
        FailureKind.OOM,
        r"^torch\.OutOfMemoryError: ",
        r"^builtins\.MemoryError: ",
        r"\b(?:CUDA|MPS|XPU|HIP|ROCm)\b[^\n]{0,40}\bout of memory",
        r"CUDA error: out of memory",
        r"CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED",
        r"killed by the OOM killer",
    ),
    _rule(
        FailureKind.DEVICE,
        r"^torch\.AcceleratorError: ",
        r"^torch\.distributed\.DistBackendError: ",
        r"\bCUDA error\b|\bCUDA driver\b|no CUDA GPUs are available|Found no NVIDIA driver",
        r"CUBLAS_STATUS_|CUDNN_STATUS_|cuDNN error|\bNCCL (?:error|WARN)|ncclSystemError",
        r"\bHIP error\b|\bXPU error\b|UR_RESULT_ERROR|\bdevice-side assert",
        r"needs an accelerator|needs \d+ accelerators|GB of accelerator memory",
    ),
    _rule(
        FailureKind.CRASH,
        r"worker '[^']*' crashed while running",
        r"Fatal Python error: (?:Segmentation fault|Aborted|Bus error)",
        r"\bSIGSEGV\b|\bSIGABRT\b|\bSIGBUS\b|\bSIGKILL\b",
    ),
    _rule(
        FailureKind.HUB,
        _HUB_ERRORS + r"(?:OfflineModeIsEnabled|LocalEntryNotFoundError|EntryNotFoundError): ",
        _HUB_ERRORS + r"(?:GatedRepoError|OverloadedError|XetDownloadError): ",
        # HTTP 429 and 5xx from a hub (the status is in huggingface_hub's message)
        _HUB_ERRORS + r"HfHubHTTPError: [^\n]*\b(?:429|5\d\d)\b",
        # transformers wraps the hub's errors in an OSError with these words
        r"couldn't connect to '[^']*' to load (?:the|this) files?",
        r"outgoing traffic has been disabled|offline mode is enabled",
        # connection errors name the host they could not reach
        r"^(?:httpx2?|requests\.exceptions|urllib3\.exceptions)\.\w*(?:Connect|Timeout)\w*: "
        r"[^\n]*(?:huggingface\.co|hf\.co)",
        # mlcheck's own cache miss (ModelNotCached), also when reported through pytest.fail
        r"is not in the cache[^\n]*mlcheck cache warm",
    ),
)


# How suites word a skip they take when a model cannot be loaded from the hub (transformers'
# pipeline tests: "Could not find or load the model from {repo_id} with {class}").
_HUB_SKIP = re.compile(
    r"could not (?:find or )?load (?:the model|any tokenizer|any tokenizer / processor) from"
    r"|(?:can(?:no|')t|could not|couldn't|unable to) (?:reach|connect to) (?:the )?hub",
    re.IGNORECASE,
)


def is_hub_skip(reason: str) -> bool:
    """Whether a test skipped itself because the hub (or a model from it) was unreachable: the
    report groups those under hub, not with the suite's own skip reasons.

    >>> is_hub_skip("Could not find or load the model from hf-internal-testing/tiny-random-bert")
    True
    >>> is_hub_skip("test requires CUDA")
    False
    """
    return bool(_HUB_SKIP.search(reason)) or classify_text(reason) is FailureKind.HUB


def _lines(exc: BaseException) -> Iterator[str]:
    message = str(exc)
    for cls in type(exc).__mro__:
        if cls in (BaseException, Exception, object):
            continue
        yield f"{cls.__module__}.{cls.__qualname__}: {message}"


def chain(exc: BaseException, limit: int = 20) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, outermost first (cycles and depth bounded)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < limit:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )


def classify_exception(exc: BaseException, extra: Sequence[Rule] = ()) -> FailureKind:
    """The kind of a failure raised as ``exc``; ``extra`` (the project's rules) are tried first.

    >>> classify_exception(OSError("We couldn't connect to 'https://hf.co' to load the files"))
    <FailureKind.HUB: 'hub'>
    """
    return classify_lines([line for e in chain(exc) for line in _lines(e)], extra)


def classify_text(text: str, extra: Sequence[Rule] = ()) -> FailureKind:
    """The kind of a failure known only as text (an xdist crash report, a collection error).

    >>> classify_text("worker 'gw1' crashed while running 'tests/t.py::test_a'")
    <FailureKind.CRASH: 'crash'>
    """
    return classify_lines(text.splitlines() or [""], extra)


def classify_lines(lines: Sequence[str], extra: Sequence[Rule] = ()) -> FailureKind:
    for rules in (extra, RULES):
        for rule in rules:
            if any(rule.pattern.search(line) for line in lines):
                return rule.kind
    return FailureKind.CODE


# The OOM killer sends SIGKILL, which looks like any other crash from outside; the cgroup's
# memory.events counts its kills (cgroup v2), so a rise during the run tells the two apart.
MEMORY_EVENTS = Path("/sys/fs/cgroup/memory.events")


def oom_kill_count(path: Path = MEMORY_EVENTS) -> int | None:
    """The cgroup's ``oom_kill`` counter, or None where it cannot be read (no cgroup v2)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    match = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def crash_kind(kills_before: int | None, kills_now: int | None) -> FailureKind:
    """A dead worker: ``oom`` when the OOM killer killed something meanwhile, else ``crash``."""
    if kills_before is not None and kills_now is not None and kills_now > kills_before:
        return FailureKind.OOM
    return FailureKind.CRASH


def parse_rules(raw: object, where: str) -> tuple[Rule, ...]:
    """The project's ``failure_kinds = { hub = ["MirrorDown", ...], ... }`` as rules.

    Each pattern is a regular expression searched in the ``module.Class: message`` lines of
    the exception chain; ``code`` is allowed, to keep a message the table would misread.

    >>> [r.kind.value for r in parse_rules({"hub": ["MirrorDown"]}, "failure_kinds")]
    ['hub']
    """
    kinds = ", ".join(k.value for k in FailureKind)
    if not isinstance(raw, Mapping):
        raise ManifestError(
            f'{where} must be a table of kind = [patterns], e.g. {{ hub = ["MirrorDown"] }}'
        )
    rules: list[Rule] = []
    for kind, patterns in raw.items():
        try:
            parsed = FailureKind(kind)
        except ValueError:
            raise ManifestError(f"{where}.{kind}: not a failure kind; use one of {kinds}") from None
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise ManifestError(f"{where}.{kind} must be a list of regular expressions")
        for pattern in patterns:
            try:
                rules.append(Rule(parsed, re.compile(pattern)))
            except re.error as exc:
                raise ManifestError(
                    f"{where}.{kind}: {pattern!r} is not a valid regular expression: {exc}"
                ) from None
    return tuple(rules)


__all__ = [
    "RULES",
    "FailureKind",
    "Rule",
    "chain",
    "classify_exception",
    "classify_text",
    "crash_kind",
    "oom_kill_count",
    "parse_rules",
]
