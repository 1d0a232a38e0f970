"""The small pieces every report shares: the context, sparklines, permalinks, counts by tier.

Pure: data in, text out. Strings from tests are redacted (``ctx.redactor``) here; escaping for
Markdown or HTML is the caller's (it knows where the text goes). Durations and plurals are
:mod:`mlcheck.text`'s, the one format for everything mlcheck prints.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import quote

from ..redact import NO_SECRETS, Redactor, inline
from ..results.digest import Classified, Digest, classify
from ..results.merge import section_key
from ..results.schema import Outcome, RunResults, RunStatus, TestResult
from ..text import SHA_RE
from ..text import plural as plural  # one home (mlcheck/text.py); the report imports it here
from ..tiers import tier_order
from . import messages
from .messages import COLUMNS as COLUMNS  # the counts' columns: words, so in messages

SPARK = "▁▂▃▄▅▆▇█"


class EventFacts(Protocol):
    """What a context needs of the run's event (``mlcheck.github.event.Event`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def repository(self) -> str: ...
    @property
    def server_url(self) -> str: ...
    @property
    def head_sha(self) -> str: ...
    @property
    def run_url(self) -> str | None: ...


@dataclass(frozen=True)
class RenderContext:
    """Where the report goes and what it links to; built once at the edge with
    :meth:`from_event`, then given the base with :meth:`with_base`.

    ``base`` holds the base branch's digests by section key (from its comment or report.md);
    :meth:`with_base` classifies each section against it once, for every renderer to share.
    """

    repo: str | None = None  # owner/name
    server_url: str = "https://github.com"
    sha: str | None = None  # head SHA for permalinks; defaults to the results' run.sha
    run_url: str | None = None  # the workflow run, where the job summary is
    artifact_name: str | None = None  # the uploaded results artifact
    title: str = "mlcheck"
    base: Mapping[str, Digest] = field(default_factory=dict)
    redactor: Redactor = NO_SECRETS
    path_prefix: str = ""  # the project's folder inside the repository, if not the root
    # key -> (the results and base digest it was computed from, their classification)
    classified: Mapping[str, tuple[RunResults, Digest | None, Classified]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_event(
        cls,
        event: EventFacts,
        *,
        artifact_name: str | None = None,
        title: str = "mlcheck",
        redactor: Redactor = NO_SECRETS,
        path_prefix: str = "",
    ) -> RenderContext:
        """The context of a run of ``event``: links at its head commit (the PR head, a
        dispatched ``sha``; else permalinks use the results' own ``run.sha``), its repository
        and its workflow run.

        >>> from mlcheck.github.event import parse_event
        >>> env = {"GITHUB_REPOSITORY": "o/r", "GITHUB_SHA": "a" * 40, "GITHUB_RUN_ID": "7"}
        >>> ctx = RenderContext.from_event(parse_event("push", {}, env))
        >>> ctx.repo, ctx.sha == "a" * 40, ctx.run_url
        ('o/r', True, 'https://github.com/o/r/actions/runs/7')
        """
        return cls(
            repo=event.repository or None,
            server_url=event.server_url,
            sha=event.head_sha if SHA_RE.fullmatch(event.head_sha or "") else None,
            run_url=event.run_url if event.repository else None,
            artifact_name=artifact_name,
            title=title,
            redactor=redactor,
            path_prefix=path_prefix,
        )

    def with_base(
        self, base: Mapping[str, Digest], sections: Mapping[str, RunResults]
    ) -> RenderContext:
        """This context comparing with ``base``, each of ``sections`` classified once."""
        classified = {
            key: (r, base.get(key), classify(r.tests, base.get(key))) for key, r in sections.items()
        }
        return replace(self, base=base, classified=classified)

    def classification(self, key: str, results: RunResults) -> Classified:
        """Section ``key``'s failures sorted against its base: the one :meth:`with_base`
        computed when it was for these very results and base, else computed now."""
        base = self.base.get(key)
        known = self.classified.get(key)
        if known is not None and known[0] is results and known[1] is base:
            return known[2]
        return classify(results.tests, base)


def sparkline(values: Sequence[float], width: int = 16) -> str:
    """A loss curve in eight block characters, averaged down to ``width``.

    >>> sparkline([3.0, 2.0, 1.0, 0.5])
    '█▅▂▁'
    """
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "×" * min(len(values), width) if values else ""
    if len(values) > width:
        size = len(values) / width
        buckets = [
            values[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)]
            for i in range(width)
        ]
        values = [_mean(b) for b in buckets]
    lo, hi = min(finite), max(finite)
    span = hi - lo
    chars = []
    for v in values:
        if not math.isfinite(v):
            chars.append("×")  # NaN or inf: the run diverged here
        elif span <= 0:
            chars.append(SPARK[0])
        else:
            chars.append(SPARK[min(7, int((v - lo) / span * 7.999))])
    return "".join(chars)


def _mean(values: Sequence[float]) -> float:
    if any(not math.isfinite(v) for v in values):
        return math.nan
    return sum(values) / len(values)


def curve(values: Sequence[float]) -> str:
    if not values:
        return ""
    return f"{sparkline(values)} {_num(values[0])} → {_num(values[-1])}"


def _num(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else str(v)


_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def permalink(ctx: RenderContext, file: str | None, line: int | None, sha: str | None) -> str:
    """``{server}/{repo}/blob/{sha}/{file}#L{line}``, or "" when something is missing.

    >>> permalink(RenderContext(repo="o/r"), "tests/t.py", 3, "abc1234")
    'https://github.com/o/r/blob/abc1234/tests/t.py#L3'
    """
    sha = ctx.sha or sha
    if not (ctx.repo and sha and file and _REPO.fullmatch(ctx.repo) and SHA_RE.fullmatch(sha)):
        return ""
    path = f"{ctx.path_prefix.strip('/')}/{file}" if ctx.path_prefix else file
    path = ctx.redactor.redact(path)  # a URL leaves the comment unescaped: redact it too
    # quote() leaves only URL-safe characters: nothing in it can end the Markdown link.
    url = f"{ctx.server_url.rstrip('/')}/{ctx.repo}/blob/{sha}/{quote(path.lstrip('/'), safe='/')}"
    return f"{url}#L{int(line)}" if line else url


def reason_of(ctx: RenderContext, t: TestResult, limit: int = 160) -> str:
    message = ctx.redactor.clip(t.message, 4 * limit, keep="head")
    first = next((ln for ln in message.splitlines() if ln.strip()), "")
    if not first:
        return messages.failed_in(t.phase.value) if t.phase else ""
    return first


def name_of(ctx: RenderContext, t: TestResult) -> str:
    return ctx.redactor.clip(t.nodeid, 400, keep="head")


# pytest's traceback (--tb=auto): an entry's location is ``path:line: in func`` (short style,
# first line) or ``path:line: ExcType`` (long style, last line); ``_ _ _`` separates entries.
_LOCATION = re.compile(r"^(?P<path>[^\s:][^:\n]*):\d+:(?: in (?P<func>\S+)| (?P<exc>[\w.]*))?\s*$")
_SEPARATOR = re.compile(r"^(?:_ )+_?\s*$")
_LIBRARY = re.compile(r"(?:site|dist)-packages/|/lib/python\d[^/]*/|^<frozen ")
_PACKAGE = re.compile(r"(?:site|dist)-packages/([^/]+)")
_TRIM_MAX_CHARS = 200_000  # pytest tracebacks of deep stacks are tens of KB
_FRAME_LINES = 6  # lines kept of a frame that matters, up to its ">" line, plus its E lines


def trim_traceback(text: str) -> str:
    """pytest's traceback cut to the frames that matter: the test's and the project's, a few
    lines each, and the one that raised; library frames between them (torch, transformers)
    become one line that counts them. Text that is not a pytest traceback comes back as is.

    >>> trim_traceback("AssertionError: 1 != 2")
    'AssertionError: 1 != 2'
    """
    if len(text) > _TRIM_MAX_CHARS:
        return text  # clipped to its last lines anyway; parsing megabytes per failure is not
    entries = _entries(text.splitlines())
    if sum(path is not None for _, path in entries) < 2:
        return text
    out: list[str] = []
    hidden: list[str] = []  # packages of the library frames being skipped
    for index, (lines, path) in enumerate(entries):
        if path is not None and _LIBRARY.search(path) and index < len(entries) - 1:
            package = _PACKAGE.search(path)
            hidden.append(package.group(1) if package else "python")
            continue
        if hidden:
            out.append(messages.library_frames(len(hidden), ", ".join(dict.fromkeys(hidden))))
            hidden = []
        out += _frame_lines(lines)
    trimmed = "\n".join(line.rstrip() for line in out)
    return trimmed if len(trimmed) < len(text) else text


def _entries(lines: list[str]) -> list[tuple[list[str], str | None]]:
    """(lines, location path) of each traceback entry; None where none was found."""
    entries: list[tuple[list[str], str | None]] = []
    chunk: list[str] = []

    def close() -> None:
        first = next((ln for ln in chunk if ln.strip()), "")
        match = _LOCATION.match(first)
        if match and match.group("func"):  # short style: one entry per location line
            for line in chunk:
                found = _LOCATION.match(line)
                if found and found.group("func"):
                    entries.append(([line], found.group("path")))
                elif entries and line.strip():
                    entries[-1][0].append(line)
        elif any(ln.strip() for ln in chunk):
            where = next((m for ln in reversed(chunk) if (m := _LOCATION.match(ln))), None)
            entries.append((list(chunk), where.group("path") if where else None))
        chunk.clear()

    for line in lines:
        if _SEPARATOR.match(line):
            close()
        else:
            chunk.append(line)
    close()
    return entries


def _frame_lines(lines: list[str]) -> list[str]:
    """A long entry from a few lines before its ">" line to its end; a short one as is."""
    marker = next((i for i, ln in enumerate(lines) if ln.startswith(">")), None)
    if marker is None:
        return lines
    return lines[max(0, marker - _FRAME_LINES + 1) :]


def subtests_line(results: RunResults) -> str:
    """The subtests' outcomes, counted apart from the tests': pytest adds each skipped or failed
    subtest to its own "skipped"/"failed" totals, so with this line the counts add up.

    >>> from mlcheck.results.schema import RunResults, RunInfo, TestResult, Outcome, Subtest
    >>> sub = (Subtest(outcome=Outcome.SKIPPED), Subtest(outcome=Outcome.SKIPPED))
    >>> subtests_line(RunResults(RunInfo(), (TestResult("t::a", Outcome.SKIPPED, subtests=sub),)))
    'subtests: 2 skipped'
    """
    counts = Counter(s.outcome.value for t in results.tests for s in t.subtests)
    for t in results.tests:
        counts.update(t.subtests_omitted)  # past the recorded ones: counted all the same
    if not counts:
        return ""
    order = (Outcome.PASSED, Outcome.FAILED, Outcome.SKIPPED, Outcome.XFAILED)
    parts = [f"{counts[o.value]:,} {o.value}" for o in order if counts[o.value]]
    return "subtests: " + ", ".join(parts)


def empty_selection(results: RunResults) -> str:
    """What a run whose selected tiers held no test says instead of a green heading.

    >>> from mlcheck.results.schema import RunResults, RunInfo, TestResult, Outcome
    >>> r = RunResults(RunInfo(tiers=("real", "gpu")), (TestResult("t::a", Outcome.NOT_RUN),))
    >>> empty_selection(r)
    'no tests in tiers real,gpu (1 collected: fast 1)'
    """
    detail = ", ".join(f"{tier} {n:,}" for tier, n in tier_counts(results.tests))
    return messages.empty_selection_text(section_key(results.run), len(results.tests), detail)


def tier_counts(tests: Sequence[TestResult]) -> list[tuple[str, int]]:
    """How many of ``tests`` are in each tier, in tier order (fast, real, gpu, then others).

    >>> from mlcheck.results.schema import TestResult, Outcome
    >>> tests = [TestResult("a", Outcome.PASSED, tier="real"), TestResult("b", Outcome.PASSED)]
    >>> tier_counts(tests)
    [('fast', 1), ('real', 1)]
    """
    tiers = Counter(t.tier for t in tests)
    return sorted(tiers.items(), key=lambda kv: tier_order(kv[0]))


def tiers_ran(results: RunResults) -> str:
    """``25 fast · 6 real`` when the tests that ran came from several tiers, else ""."""
    counts = tier_counts([t for t in results.tests if t.outcome is not Outcome.NOT_RUN])
    if len(counts) < 2:
        return ""
    return " · ".join(f"{n:,} {inline(tier, 20)}" for tier, n in counts)


def run_state(results: RunResults) -> str | None:
    """How a run that did not finish ended, e.g. ``cancelled after 41 of 120 tests; 41 passed``;
    None for a complete run.

    >>> from mlcheck.results.schema import RunResults, RunInfo, RunStatus, TestResult, Outcome
    >>> run = RunInfo(status=RunStatus.INTERRUPTED, collected=120)
    >>> run_state(RunResults(run, (TestResult("t::a", Outcome.PASSED),)))
    'cancelled after 1 of 120 tests; 1 passed'
    """
    run = results.run
    if run.status is RunStatus.COMPLETE:
        return None
    ran = [t for t in results.tests if t.outcome is not Outcome.NOT_RUN]
    counts = Counter(t.outcome.value for t in ran)
    tally = ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    where = ", ".join(r.nodeid for r in run.running)
    crashed = [t.nodeid for t in results.tests if "died" in t.message and t.outcome.is_failure]
    if not where and crashed:
        where = crashed[0]
    return messages.run_state_text(run.status, run.signal, len(ran), run.collected, tally, where)


def golden_keys(results: RunResults) -> list[str]:
    """The hardware keys the run's golden checks used (``cpu``, ``cuda:sm90``)."""
    return sorted({t.golden.key for t in results.tests if t.golden is not None})
