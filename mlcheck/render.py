"""Pure renderers: results in, text out (no network, no environment reads).

- :func:`render_section` — one section of the sticky PR comment (a tier's or a run's), with its
  hidden digest, within a character budget.
- :func:`render_report` — every section, one after the other (``report.md``, tracking issue).
- :func:`render_summary` — the job summary (``GITHUB_STEP_SUMMARY``, up to 1 MiB).
- :func:`render_annotations` — GitHub workflow commands: at most 10 ``::error``, new failures first,
  and one ``::notice`` for the rest.
- :func:`terminal_summary` — the summary ``mlcheck run`` and ``mlcheck report`` print (rich).

What a section shows, in order: status and counts with the change against the base branch;
new failures, failures not compared (no base), failures already on base, flaky tests — each with
its name linked to the file and line at the head SHA, a one-line reason, the loss curve as a
sparkline and a collapsed traceback; tests not run, grouped by reason with how to run them;
device, time, models and cache hits; the digest.

When the budget is tight, detail degrades in steps — full tracebacks, short tracebacks, names
only, counts only — and the section says what it left out and where to find it.

Every string that came from a test goes through :mod:`mlcheck.safety` (redact, then escape).

>>> from mlcheck.results import RunResults, RunInfo, TestResult, Outcome
>>> r = RunResults(RunInfo(), (TestResult("tests/t.py::test_a", Outcome.PASSED),))
>>> "1 passed" in render_section(r, RenderContext())
True
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from mlcheck.tiers import tier_order  # absolute: survives the move to report/

from . import digest as digest_mod
from .digest import (
    Category,
    Classified,
    Digest,
    Stopped,
    classify,
    is_infrastructure,
    slower_than_base,
    stopped_running,
)
from .merge import section_key
from .results import Outcome, RunResults, RunStatus, TestResult
from .safety import NO_SECRETS, Redactor, code_block, html_text, inline, one_line

if TYPE_CHECKING:
    from rich.console import Console

COMMENT_LIMIT = 65_536  # GitHub refuses longer comment bodies
COMMENT_BUDGET = 60_000  # what all sections of a comment aim for, leaving room for markers
SUMMARY_LIMIT = 1_048_576  # GitHub's job summary limit (bytes)
SUMMARY_BUDGET = 1_000_000
MAX_ERROR_ANNOTATIONS = 10

SPARK = "▁▂▃▄▅▆▇█"
_RULE = "\n\n---\n\n"
_MORE_RESERVE = 200  # room for the headings and "… and N more" of lists that get cut


class Detail(IntEnum):
    """How much a section shows; each step is tried until the section fits."""

    FULL = 0  # tracebacks
    SHORT = 1  # last lines of tracebacks
    NAMES = 2  # names and reasons only
    COUNTS = 3  # counts only


@dataclass(frozen=True)
class _Level:
    traceback_chars: int
    max_tracebacks: int
    max_names_per_group: int  # names listed under each not-run reason


_COMMENT_LEVELS = {
    Detail.FULL: _Level(3_000, 20, 20),
    Detail.SHORT: _Level(600, 50, 10),
    Detail.NAMES: _Level(0, 0, 0),
    Detail.COUNTS: _Level(0, 0, 0),
}
_SUMMARY_LEVELS = {
    Detail.FULL: _Level(10_000, 300, 200),
    Detail.SHORT: _Level(2_000, 300, 50),
    Detail.NAMES: _Level(0, 0, 0),
    Detail.COUNTS: _Level(0, 0, 0),
}


@dataclass(frozen=True)
class RenderContext:
    """Where the report goes and what it links to; built at the edge from the environment.

    ``base`` holds the base branch's digests by section key (from its comment or report.md).
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


# ---------------------------------------------------------------------------------------------
# Small pieces


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


def _curve(values: Sequence[float]) -> str:
    if not values:
        return ""
    return f"{sparkline(values)} {_num(values[0])} → {_num(values[-1])}"


def _num(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else str(v)


def duration_text(seconds: float) -> str:
    """Human time: ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``1 h 02 min``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_SHA = re.compile(r"[0-9a-fA-F]{7,64}")


def permalink(ctx: RenderContext, file: str | None, line: int | None, sha: str | None) -> str:
    """``{server}/{repo}/blob/{sha}/{file}#L{line}``, or "" when something is missing.

    >>> permalink(RenderContext(repo="o/r"), "tests/t.py", 3, "abc1234")
    'https://github.com/o/r/blob/abc1234/tests/t.py#L3'
    """
    sha = ctx.sha or sha
    if not (ctx.repo and sha and file and _REPO.fullmatch(ctx.repo) and _SHA.fullmatch(sha)):
        return ""
    path = f"{ctx.path_prefix.strip('/')}/{file}" if ctx.path_prefix else file
    path = ctx.redactor.redact(path)  # a URL leaves the comment unescaped: redact it too
    # quote() leaves only URL-safe characters: nothing in it can end the Markdown link.
    url = f"{ctx.server_url.rstrip('/')}/{ctx.repo}/blob/{sha}/{quote(path.lstrip('/'), safe='/')}"
    return f"{url}#L{int(line)}" if line else url


def _reason(ctx: RenderContext, t: TestResult, limit: int = 160) -> str:
    message = ctx.redactor.clip(t.message, 4 * limit, keep="head")
    first = next((ln for ln in message.splitlines() if ln.strip()), "")
    if not first:
        return f"failed in {t.phase.value}" if t.phase else ""
    return first


def _name(ctx: RenderContext, t: TestResult) -> str:
    return ctx.redactor.clip(t.nodeid, 400, keep="head")


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _delta(now: int, before: int | None) -> str:
    if before is None:
        return ""
    d = now - before
    return f"+{d:,}" if d > 0 else f"−{-d:,}" if d < 0 else "±0"


# ---------------------------------------------------------------------------------------------
# Markdown


_COLUMNS: list[tuple[str, tuple[Outcome, ...]]] = [
    ("passed", (Outcome.PASSED,)),
    ("failed", (Outcome.FAILED,)),
    ("errors", (Outcome.ERROR,)),
    ("flaky", (Outcome.FLAKY,)),
    ("skipped", (Outcome.SKIPPED,)),
    ("not run", (Outcome.NOT_RUN,)),
    ("xfail", (Outcome.XFAILED, Outcome.XPASSED)),
]


def _counts_table(counts: Counter[str], base: Digest | None, sha: str | None) -> str:
    columns = [
        (label, outs)
        for label, outs in _COLUMNS
        if label != "xfail" or any(counts[o.value] for o in outs)
    ]
    head = "| | " + " | ".join(label for label, _ in columns) + " | total |"
    rule = "| --- |" + " ---: |" * (len(columns) + 1)
    total = sum(counts.values())
    row = (
        f"| this run{f' `{sha[:7]}`' if sha and _SHA.fullmatch(sha) else ''} | "
        + " | ".join(f"{sum(counts[o.value] for o in outs):,}" for _, outs in columns)
        + f" | {total:,} |"
    )
    lines = [head, rule, row]
    if base is not None:
        bc = Counter(base.counts)
        bsha = f" `{base.sha[:7]}`" if base.sha and _SHA.fullmatch(base.sha) else ""
        lines.append(
            f"| change vs base{bsha} | "
            + " | ".join(
                _delta(sum(counts[o.value] for o in outs), sum(bc[o.value] for o in outs))
                for _, outs in columns
            )
            + f" | {_delta(total, sum(bc.values()))} |"
        )
    return "\n".join(lines)


def empty_selection(results: RunResults) -> str:
    """What a run whose selected tiers held no test says instead of a green heading.

    >>> from mlcheck.results import RunResults, RunInfo, TestResult, Outcome
    >>> r = RunResults(RunInfo(tiers=("real", "gpu")), (TestResult("t::a", Outcome.NOT_RUN),))
    >>> empty_selection(r)
    'no tests in tiers real,gpu (1 collected: fast 1)'
    """
    tiers = Counter(t.tier for t in results.tests)
    detail = ", ".join(
        f"{tier} {n:,}" for tier, n in sorted(tiers.items(), key=lambda kv: tier_order(kv[0]))
    )
    return (
        f"no tests in tiers {section_key(results.run)} "
        f"({len(results.tests):,} collected{': ' + detail if detail else ''})"
    )


def run_state(results: RunResults) -> str | None:
    """How a run that did not finish ended, e.g. ``cancelled after 41 of 120 tests; 41 passed``;
    None for a complete run.

    >>> from mlcheck.results import RunResults, RunInfo, RunStatus, TestResult, Outcome
    >>> run = RunInfo(status=RunStatus.INTERRUPTED, collected=120)
    >>> run_state(RunResults(run, (TestResult("t::a", Outcome.PASSED),)))
    'cancelled after 1 of 120 tests; 1 passed'
    """
    run = results.run
    if run.status is RunStatus.COMPLETE:
        return None
    ran = [t for t in results.tests if t.outcome is not Outcome.NOT_RUN]
    of = f" of {run.collected:,}" if run.collected else ""
    counts = Counter(t.outcome.value for t in ran)
    tally = ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    text = f"after {len(ran):,}{of} tests; {tally or 'none finished'}"
    if run.status is RunStatus.INTERRUPTED:
        by = f" ({run.signal})" if run.signal else ""
        return f"cancelled{by} {text}"
    running = ", ".join(r.nodeid for r in run.running)
    where = f" in {running}" if running else ""
    crashed = [t.nodeid for t in results.tests if "died" in t.message and t.outcome.is_failure]
    if not where and crashed:
        where = f" in {crashed[0]}"
    return f"crashed{where} {text}"


def _status(c: Classified, counts: Counter[str], results: RunResults | None = None) -> str:
    failures = len(c.new) + len(c.on_base) + len(c.uncompared) + len(c.infra)
    ran = sum(v for k, v in counts.items() if k not in (Outcome.NOT_RUN.value,))
    state = run_state(results) if results is not None else None
    if results is not None and state is not None:
        return ("❌ " if failures or results.run.status is RunStatus.CRASHED else "⏹️ ") + state
    if failures:
        parts = []
        if c.new:
            parts.append(_plural(len(c.new), "new failure"))
        if c.uncompared:
            parts.append(_plural(len(c.uncompared), "failure"))
        if c.on_base:
            parts.append(f"{len(c.on_base):,} failing on base too")
        if c.infra:
            parts.append(_plural(len(c.infra), "infrastructure failure"))
        return "❌ " + ", ".join(parts)
    if c.flaky:
        return f"⚠️ passed, {_plural(len(c.flaky), 'flaky test')}"
    if not ran:
        return "⏭️ " + (empty_selection(results) if results is not None else "nothing ran")
    return f"✅ {counts[Outcome.PASSED.value]:,} passed"


def _facts_line(results: RunResults) -> str:
    run = results.run
    dev = run.device
    device = dev.name if dev.name else dev.type
    # Numbers from results go out through int()/float(), strings through inline().
    if int(dev.count) > 1:
        device += f" ×{int(dev.count)}"
    if dev.memory_gb:
        device += f" ({float(dev.memory_gb):.0f} GB)"
    test_time = sum(t.duration for t in results.tests)
    parts = [f"**Device:** {inline(device, 120)}", f"**Time:** {duration_text(run.duration)}"]
    if test_time and abs(test_time - run.duration) > 1:
        parts[-1] += f" (tests {duration_text(test_time)})"
    if run.workers:
        parts.append(f"**Workers:** {int(run.workers)}")
    if run.shard:
        parts.append(f"**Shard:** {inline(run.shard, 20)} only")
    if run.seed is not None:
        parts.append(f"**Seed:** {int(run.seed)}")
    if keys := golden_keys(results):
        parts.append("**Golden key:** " + ", ".join(inline(k, 40) for k in keys))
    return " · ".join(parts)


# -- golden values (mlcheck/golden) ------------------------------------------------------------

_GOLDEN_LISTED = 10


def golden_keys(results: RunResults) -> list[str]:
    """The hardware keys the run's golden checks used (``cpu``, ``cuda:sm90``)."""
    return sorted({t.golden.key for t in results.tests if t.golden is not None})


def golden_block(results: RunResults, ctx: RenderContext) -> str:
    """Failing or missing golden values, and the one command that accepts them."""
    failures = [f for t in results.tests if t.golden is not None for f in t.golden.failures]
    if not failures:
        return ""
    lines = [f"#### Golden values differ or are missing ({len(failures):,})", ""]

    def clean(text: str, limit: int) -> str:
        return inline(ctx.redactor.clip(text, 4 * limit, keep="head"), limit)

    for f in failures[:_GOLDEN_LISTED]:
        where = clean(f"{f.file} › {f.test} › {f.name} [{f.key}]", 300)
        lines.append(f"- {where} — {clean(f.problem, 240)}")
    if len(failures) > _GOLDEN_LISTED:
        lines.append(f"- *… and {len(failures) - _GOLDEN_LISTED:,} more*")
    # the artifact name is ours (the workflow's input), not the tests': a code span is safe
    artifact = re.sub(r"[^A-Za-z0-9._-]", "", ctx.artifact_name or "") or None
    source = f"the `{artifact}` artifact into `{artifact}/`" if artifact else "the results folder"
    command = f"mlcheck golden accept {artifact or 'RESULTS_DIR'}"
    lines += ["", f"If the change is intended, download {source} and run `{command}`, then commit."]
    return "\n".join(lines)


def _where_else(ctx: RenderContext, summary: bool) -> str:
    places = []
    if not summary:
        places.append(f"[the job summary]({ctx.run_url})" if ctx.run_url else "the job summary")
    if ctx.artifact_name:
        places.append(f"the {inline(ctx.artifact_name, 100)} artifact (results.json)")
    else:
        places.append("the results artifact (results.json)")
    return " and ".join(places)


_HEADINGS = {
    Category.NEW: "🆕 New failures",
    Category.UNCOMPARED: "❌ Failures",
    Category.ON_BASE: "🔁 Already failing on base",
    Category.FLAKY: "🎲 Flaky (passed on rerun)",
    Category.INFRA: "🏗️ Infrastructure",
}


class _Renderer:
    """One section at one detail level; caches item text across levels."""

    def __init__(self, results: RunResults, ctx: RenderContext, key: str, summary: bool) -> None:
        self.results = results
        self.ctx = ctx
        self.key = key
        self.summary = summary
        self.base = ctx.base.get(key)
        self.sha = ctx.sha or results.run.sha
        self.c = classify(results.tests, self.base)
        self.counts = results.counts()
        self._names: dict[int, str] = {}

    def groups(self) -> list[tuple[Category, tuple[TestResult, ...]]]:
        c = self.c
        return [
            (Category.NEW, c.new),
            (Category.UNCOMPARED, c.uncompared),
            (Category.ON_BASE, c.on_base),
            (Category.FLAKY, c.flaky),
            (Category.INFRA, c.infra),
        ]

    def link_name(self, t: TestResult) -> str:
        url = permalink(self.ctx, t.file, t.line, self.sha)
        name = inline(_name(self.ctx, t), 300)
        return f"[{name}]({url})" if url else name

    def name_line(self, t: TestResult) -> str:
        """``- [name](link) — reason · phase · curve`` (cached: the same at every level)."""
        cached = self._names.get(id(t))
        if cached is not None:
            return cached
        bits = [self.link_name(t)]
        reason = _reason(self.ctx, t)
        if reason:
            bits.append(inline(reason, 160))
        line = "- " + " — ".join(bits) + self._extras(t)
        self._names[id(t)] = line
        return line

    def _extras(self, t: TestResult) -> str:
        extras = []
        if is_infrastructure(t):
            extras.append(f"*{inline(str(t.failure_kind), 20)}*")
        if t.outcome is Outcome.ERROR and t.phase is not None:
            extras.append(f"*error in {t.phase.value}*")
        failed = sum(1 for a in t.attempts if a.outcome.is_failure)
        if len(t.attempts) > 1:
            extras.append(f"failed {failed} of {len(t.attempts)} attempts")
        if t.loss_curve:
            extras.append(f"loss {_curve(t.loss_curve)}")
        return "".join(f" · {e}" for e in extras)

    def detailed(self, t: TestResult, chars: int) -> str:
        head = self.name_line(t)
        tb = t.traceback or (
            next((a.message for a in reversed(t.attempts) if a.message), "") or t.message
        )
        if not tb.strip() or chars <= 0:
            return head
        text = self.ctx.redactor.clip(tb, chars, keep="tail")
        label = "Traceback" if len(text) >= len(tb) else "Traceback (last lines)"
        # Indented two spaces so the block belongs to the list item above it.
        block = f"<details><summary>{label}</summary>\n\n{code_block(text)}\n\n</details>"
        body = "\n".join("  " + ln if ln else "" for ln in block.split("\n"))
        return f"{head}\n\n{body}\n"

    # -- blocks --------------------------------------------------------------------------------

    def header(self) -> str:
        status = _status(self.c, self.counts, self.results)
        title = f"### {status} · {inline(self.ctx.title, 80)} · `{self.key}`"
        return "\n\n".join(
            [title, _counts_table(self.counts, self.base, self.sha), _facts_line(self.results)]
        )

    def failure_blocks(self, level: _Level, budget: int) -> tuple[list[str], int]:
        """Failure lists that fit ``budget`` bytes; returns (blocks, tests left out).

        Lists come in order of relevance (new first); once one is cut, the later ones are only
        counted, so what is shown is always the most relevant part.
        """
        blocks: list[str] = []
        used = 0
        left_out = 0
        tracebacks = 0
        for category, tests in self.groups():
            if not tests:
                continue
            title = _HEADINGS[category]
            if category is Category.UNCOMPARED and self.base is not None:
                title = "❓ Failures not in the base digest (not compared)"
            heading = f"#### {title} ({len(tests):,})"
            if category is Category.INFRA:
                heading = infrastructure_heading(tests)
            items: list[str] = []
            size = len(heading) + 2
            for t in tests if not left_out else ():
                if tracebacks < level.max_tracebacks:
                    item = self.detailed(t, level.traceback_chars)
                    tracebacks += 1
                else:
                    item = self.name_line(t)
                cost = len(item.encode()) + 1
                if used + size + cost + _MORE_RESERVE > budget:
                    break
                items.append(item)
                size += cost
            more = len(tests) - len(items)
            left_out += more
            tail = f"- *… and {more:,} more*" if more else ""
            blocks.append(heading + "\n\n" + "\n".join([*items, tail] if tail else items))
            used += size + len(tail.encode()) + 2
        return blocks, left_out

    def not_run_block(self, level: _Level, detail: Detail) -> str:
        parts = []
        for outcome, title, note in (
            (Outcome.NOT_RUN, "⏭️ Not run", "reason and how to run them"),
            (Outcome.SKIPPED, "Skipped", "reason"),
        ):
            tests = [t for t in self.results.tests if t.outcome is outcome]
            if not tests:
                continue
            by_reason: dict[str, list[TestResult]] = {}
            for t in tests:
                reason = one_line(self.ctx.redactor.clip(t.message, 400, keep="head"), 200)
                by_reason.setdefault(reason or "(no reason given)", []).append(t)
            ordered = sorted(by_reason.items(), key=lambda kv: -len(kv[1]))
            shown = ordered[:20] if detail < Detail.COUNTS else []
            rows = [f"| {inline(r, 200)} | {len(ts):,} |" for r, ts in shown]
            if len(ordered) > len(shown):
                rest = sum(len(ts) for _, ts in ordered[len(shown) :])
                rows.append(f"| *{len(ordered) - len(shown):,} other reasons* | {rest:,} |")
            table = f"| {note} | tests |\n| --- | ---: |\n" + "\n".join(rows)
            names = []
            if level.max_names_per_group:
                for reason, ts in shown[:5]:
                    listed = "\n".join(
                        f"- {inline(_name(self.ctx, t), 200)}"
                        for t in ts[: level.max_names_per_group]
                    )
                    more = len(ts) - level.max_names_per_group
                    if more > 0:
                        listed += f"\n- *… and {more:,} more*"
                    names.append(
                        f"<details><summary>{html_text(reason, 100)}</summary>\n\n{listed}\n\n"
                        "</details>"
                    )
            block = f"#### {title} ({len(tests):,})\n\n{table}"
            if names:
                block += "\n\n" + "\n\n".join(names)
            parts.append(block)
        return "\n\n".join(parts)

    def models_block(self, detail: Detail) -> str:
        uses: dict[tuple[str, str | None], list[bool | None]] = {}
        for t in self.results.tests:
            for m in t.models:
                uses.setdefault((m.id, m.revision), []).append(m.cache_hit)
        if not uses or detail >= Detail.COUNTS:
            return ""
        rows = []
        for (model_id, revision), hits in sorted(uses.items(), key=lambda kv: -len(kv[1]))[:20]:
            rev = inline(revision[:12], 20) if revision else "—"
            known = [h for h in hits if h is not None]
            hit = sum(known)
            cache = f"{_plural(hit, 'hit')}, {_plural(len(known) - hit, 'miss', 'misses')}"
            cache = cache if known else "—"
            name = inline(self.ctx.redactor.clip(model_id, 200, keep="head"), 120)
            checked = "verified" if model_id in self.results.run.verified else "—"
            rows.append(f"| {name} | {rev} | {len(hits):,} | {cache} | {checked} |")
        more = f"\n\n*… and {len(uses) - 20:,} more models*" if len(uses) > 20 else ""
        return (
            f"#### Models ({len(uses):,})\n\n| model | revision | tests | cache | weights |\n"
            "| --- | --- | ---: | --- | --- |\n" + "\n".join(rows) + more
        )

    def curves_block(self, detail: Detail) -> str:
        tests = [t for t in self.results.tests if t.loss_curve and not t.outcome.is_failure]
        if not tests or detail >= Detail.NAMES:
            return ""
        lines = [
            f"- {inline(_name(self.ctx, t), 200)} · {_curve(t.loss_curve or ())}"
            for t in tests[:20]
        ]
        if len(tests) > 20:
            lines.append(f"- *… and {len(tests) - 20:,} more*")
        return (
            f"<details><summary>Loss curves ({len(tests):,})</summary>\n\n"
            + "\n".join(lines)
            + "\n\n</details>"
        )

    def since_base_blocks(self, level: _Level, detail: Detail) -> list[str]:
        """ "Stopped running" and "Slower than base": what changed against the base digest."""
        blocks = []
        stopped = stopped_running(self.results, self.base)
        if stopped is not None and stopped.total:
            names = level.max_names_per_group if detail < Detail.COUNTS else 0
            blocks.append(stopped_block(self.ctx, stopped, names))
        elif stopped is not None and stopped.unknown:
            blocks.append(
                f"*Stopped running: {_plural(stopped.unknown, 'test')} skipped or not run here "
                "could not be compared: the base digest had no room for the tests that ran on "
                "base.*"
            )
        if detail < Detail.COUNTS:
            slower = slower_than_base(self.results.tests, self.base)
            if slower:
                rows = [
                    f"| {inline(_name(self.ctx, s.test), 200)} | "
                    f"{_base_time(s.base_low, s.base_high)} | {duration_text(s.test.duration)} |"
                    for s in slower
                ]
                blocks.append(
                    f"#### 🐢 Slower than base ({len(slower)})\n\n"
                    "Took more than twice as long and over 1 s more than on base.\n\n"
                    "| test | base | now |\n| --- | ---: | ---: |\n" + "\n".join(rows)
                )
        return blocks

    def render(self, detail: Detail, levels: Mapping[Detail, _Level], budget: int) -> str | None:
        """The section at ``detail``, or None when it does not fit (names level always fits)."""
        level = levels[detail]
        header = self.header()
        tail_blocks = [
            golden_block(self.results, self.ctx) if detail < Detail.COUNTS else "",
            self.not_run_block(level, detail),
            self.models_block(detail),
            self.curves_block(detail),
            *self.since_base_blocks(level, detail),
        ]
        tail = "\n\n".join(b for b in tail_blocks if b)
        fixed = len(header.encode()) + len(tail.encode()) + 600  # 600: the left-out note
        if fixed > budget and detail < Detail.COUNTS:
            return None
        notes = []
        blocks: list[str] = []
        if detail < Detail.COUNTS:
            blocks, left_out = self.failure_blocks(level, budget - fixed)
            if left_out and detail < Detail.NAMES:
                return None  # fewer details, more names: try the next level
            if left_out:
                notes.append(f"{left_out:,} failing or flaky tests not listed")
            if detail is Detail.SHORT:
                notes.append("tracebacks shortened")
            elif detail is Detail.NAMES and self.c.ordered():
                notes.append("tracebacks left out")
        else:
            notes.append("test names and tracebacks left out")
        text = "\n\n".join([header, *blocks, *([tail] if tail else [])])
        if notes:
            text += (
                f"\n\n> [!NOTE]\n> Shortened to fit GitHub's limit: {', '.join(notes)}. "
                f"Everything is in {_where_else(self.ctx, self.summary)}."
            )
        if len(text.encode()) > budget:
            return None
        return text


# ---------------------------------------------------------------------------------------------
# Infrastructure failures and tests that stopped running

# One line per kind: what went wrong, and what to do about it.
INFRA_CAUSES: dict[str, tuple[str, str]] = {
    "hub": (
        "model files were not in the local cache, or the hub refused or failed a request",
        "run `mlcheck cache warm` before the tests (the cache of what mlcheck.lock names); "
        "a 429/5xx passes on retry",
    ),
    "oom": (
        "out of memory (accelerator, or a worker killed by the OOM killer)",
        "declare what the test needs with `@pytest.mark.gpu(min_memory_gb=...)` or use a bigger "
        "runner",
    ),
    "device": (
        "accelerator runtime, driver or NCCL error (not out of memory), or no accelerator",
        "check the runner's GPU and driver (`nvidia-smi`), then rerun on a healthy runner",
    ),
    "crash": (
        "the test's worker process died (segfault, abort or killed)",
        "rerun the test alone (`pytest -p no:xdist NODEID`) to see how it dies",
    ),
    "timeout": (
        "the test ran past its time limit",
        "raise the limit (`@pytest.mark.timeout(...)`) or find what got slow",
    ),
}


def infrastructure_heading(tests: Sequence[TestResult]) -> str:
    """``#### Infrastructure (3): hub 2 · oom 1`` and one cause/fix line per kind.

    These failures still fail the run; they are listed apart from the code's failures and are
    never counted as new failures against the base.
    """
    kinds = Counter(str(t.failure_kind) for t in tests)
    ordered = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    summary = " · ".join(f"{inline(kind, 20)} {n:,}" for kind, n in ordered)
    lines = [f"#### {_HEADINGS[Category.INFRA]} ({len(tests):,}): {summary}", ""]
    lines.append(
        "Failed for a reason outside the code under test; they still fail the run, and are "
        "not compared with the base."
    )
    lines.append("")
    for kind, _ in ordered:
        cause, fix = INFRA_CAUSES.get(kind, ("", ""))
        if cause:
            lines.append(f"- **{kind}**: {cause}. *Fix:* {fix}.")
    return "\n".join(lines)


def _base_time(low: float, high: float) -> str:
    if low <= 0:
        return f"< {duration_text(high)}"
    return f"{duration_text(low)}–{duration_text(high)}"


_STOPPED_LABEL = {Outcome.SKIPPED: "skipped", Outcome.NOT_RUN: "not run"}


def stopped_block(ctx: RenderContext, stopped: Stopped, max_names: int) -> str:
    """The collapsed "Stopped running (N): ..." list: tests that ran on base and did not here."""
    groups: dict[tuple[str, str], list[TestResult]] = {}
    for t in stopped.tests:
        reason = one_line(ctx.redactor.clip(t.message, 400, keep="head"), 200)
        label = _STOPPED_LABEL.get(t.outcome, t.outcome.value)
        groups.setdefault((label, reason or "(no reason given)"), []).append(t)
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    parts = [
        f"{len(ts):,} {label} — {html_text(reason, 80)}" for (label, reason), ts in ordered[:3]
    ]
    if len(ordered) > 3:
        parts.append(f"{sum(len(ts) for _, ts in ordered[3:]):,} for other reasons")
    if stopped.gone:
        parts.append(f"{stopped.gone:,} no longer collected")
    summary = f"<b>⏸️ Stopped running ({stopped.total:,})</b>: " + " · ".join(parts)
    body: list[str] = []
    for (label, reason), ts in ordered[:20]:
        body.append(f"- **{label}** — {inline(reason, 200)} ({len(ts):,})")
        for t in ts[:max_names]:
            body.append(f"  - {inline(_name(ctx, t), 200)}")
        if max_names and len(ts) > max_names:
            body.append(f"  - *… and {len(ts) - max_names:,} more*")
    if stopped.gone:
        body.append(
            f"- **no longer collected** ({stopped.gone:,}): ran on base, not in this run "
            "(deleted, renamed or deselected); the base digest keeps hashes, not names"
        )
    if stopped.sampled:
        body.append(
            f"- *the base digest kept a sample of the tests that ran there: counts are a lower "
            f"bound ({stopped.unknown:,} skipped here could not be compared)*"
        )
    return f"<details><summary>{summary}</summary>\n\n" + "\n".join(body) + "\n\n</details>"


def _fit(renderer: _Renderer, levels: Mapping[Detail, _Level], budget: int) -> str:
    for detail in Detail:
        text = renderer.render(detail, levels, budget)
        if text is not None:
            return text
    # Even counts do not fit (a tiny budget): say so in as few characters as possible.
    counts = ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(renderer.counts.items()))
    return f"**{renderer.key}**: {counts}"[:budget]


def render_section(
    results: RunResults,
    ctx: RenderContext,
    *,
    key: str | None = None,
    budget: int = COMMENT_BUDGET,
    digest: bool = True,
) -> str:
    """One PR-comment section (Markdown, ending with its digest), at most ``budget`` bytes.

    ``key`` names the section (default: the run's tiers, e.g. ``fast`` or ``real,gpu``); the base
    digest compared with is ``ctx.base[key]``. Budgets count UTF-8 bytes, never fewer than
    characters, so a budget in bytes also holds in characters.
    """
    key = key or section_key(results.run)
    line = ""
    if digest:
        line = digest_mod.encode(
            results, section=key, sha=ctx.sha, max_chars=max(200, min(8_000, budget // 5))
        )
    body_budget = budget - len(line) - 2
    text = _fit(_Renderer(results, ctx, key, summary=False), _COMMENT_LEVELS, body_budget)
    return f"{text}\n\n{line}" if line else text


def render_report(
    sections: Mapping[str, RunResults],
    ctx: RenderContext,
    *,
    budget: int = COMMENT_BUDGET,
    digest: bool = True,
) -> str:
    """Every section, one after the other, sharing ``budget`` (``report.md``, tracking issue)."""
    if not sections:
        return "*mlcheck: no results*"
    share = (budget - len(_RULE) * (len(sections) - 1)) // len(sections)
    return _RULE.join(
        render_section(r, ctx, key=key, budget=share, digest=digest) for key, r in sections.items()
    )


def render_summary(
    sections: Mapping[str, RunResults], ctx: RenderContext, *, budget: int = SUMMARY_BUDGET
) -> str:
    """The job summary: every section with more detail, no digest, at most ``budget`` bytes."""
    if not sections:
        return "*mlcheck: no results*"
    share = (budget - len(_RULE) * (len(sections) - 1)) // len(sections)
    return _RULE.join(
        _fit(_Renderer(r, ctx, key, summary=True), _SUMMARY_LEVELS, share)
        for key, r in sections.items()
    )


# ---------------------------------------------------------------------------------------------
# Annotations (workflow commands)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: str | int | None) -> str:
    """``::command key=value,...::message`` with GitHub's escaping.

    >>> workflow_command("error", "50% off\\nnow", file="a,b.py", line=3)
    '::error file=a%2Cb.py,line=3::50%25 off%0Anow'
    """
    props = ",".join(
        f"{k}={_escape_property(str(v))}" for k, v in properties.items() if v not in (None, "")
    )
    return f"::{command}{' ' + props if props else ''}::{_escape_data(message)}"


_CATEGORY_TITLE = {
    Category.NEW: "new failure",
    Category.UNCOMPARED: "failure",
    Category.ON_BASE: "failing on base too",
    Category.INFRA: "infrastructure",
}


def _annotation_title(category: Category, t: TestResult) -> str:
    if category is Category.INFRA:
        return f"infrastructure ({one_line(str(t.failure_kind), 20)})"
    return _CATEGORY_TITLE[category]


def render_annotations(
    sections: Mapping[str, RunResults] | RunResults,
    ctx: RenderContext,
    *,
    max_errors: int = MAX_ERROR_ANNOTATIONS,
) -> list[str]:
    """Workflow-command lines: the most relevant failures as errors (new first), then one notice
    for every failure and flaky test left out."""
    if isinstance(sections, RunResults):
        sections = {section_key(sections.run): sections}
    ordered: list[tuple[Category, TestResult]] = []
    flaky = 0
    for key, results in sections.items():
        c = classify(results.tests, ctx.base.get(key))
        ordered += c.ordered()
        flaky += len(c.flaky)
    # code failures first: an infrastructure failure gets an annotation only if room is left
    rank = {Category.NEW: 0, Category.UNCOMPARED: 1, Category.ON_BASE: 2, Category.INFRA: 3}
    ordered.sort(key=lambda ct: rank[ct[0]])  # stable: keeps the sections' own order
    lines = []
    for category, t in ordered[:max_errors]:
        reason = one_line(_reason(ctx, t, 300), 300)
        tb = ctx.redactor.clip(t.traceback, 1_500, keep="tail") if t.traceback else ""
        message = reason + (f"\n\n{tb}" if tb else "")
        file = f"{ctx.path_prefix.strip('/')}/{t.file}" if ctx.path_prefix and t.file else t.file
        lines.append(
            workflow_command(
                "error",
                message or "failed",
                file=ctx.redactor.redact(file or ""),
                line=t.line if file else None,
                title=f"{_annotation_title(category, t)}: {one_line(_name(ctx, t), 200)}",
            )
        )
    rest = len(ordered) - len(lines)
    if rest or flaky:
        parts = []
        if rest:
            parts.append(f"{_plural(rest, 'more failure')} not annotated")
        if flaky:
            parts.append(f"{_plural(flaky, 'flaky test')} (passed on rerun)")
        lines.append(
            workflow_command("notice", "; ".join(parts) + ": see the job summary", title="mlcheck")
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Terminal


def terminal_summary(
    results: RunResults | Mapping[str, RunResults],
    *,
    results_dir: Path | None = None,
    ctx: RenderContext | None = None,
    console: Console | None = None,
    max_per_group: int = 30,
) -> None:
    """Print the run's summary: counts, failures (new first), not-run reasons, device, time.

    Untrusted text is printed as plain ``Text`` (no rich markup) on lines that start with our
    own prefix, so a test cannot forge a workflow command (``::error::``) in CI logs.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    ctx = ctx or RenderContext()
    console = console or Console(soft_wrap=True, highlight=False)
    sections = {section_key(results.run): results} if isinstance(results, RunResults) else results

    def clean(text: str, limit: int = 200) -> str:
        return one_line(ctx.redactor.clip(text, 4 * limit, keep="head"), limit)

    for key, r in sections.items():
        c = classify(r.tests, ctx.base.get(key))
        counts = r.counts()
        console.rule(Text(f"mlcheck · {key}"))
        state = run_state(r)
        if state is not None:
            console.print(Text(f"  {clean(state, 400)}", style="bold red"))
        elif all(t.outcome is Outcome.NOT_RUN for t in r.tests):
            console.print(Text(f"  {empty_selection(r)}", style="bold yellow"))
        for running in r.run.running:
            console.print(
                Text(
                    f"    running: {clean(running.nodeid, 300)} ({duration_text(running.duration)})"
                )
            )
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        columns = [(label, outs) for label, outs in _COLUMNS if any(counts[o.value] for o in outs)]
        for label, _ in columns:
            table.add_column(label, justify="right")
        if columns:
            table.add_row(*(f"{sum(counts[o.value] for o in outs):,}" for _, outs in columns))
            console.print(table)
        for category, tests in (
            (Category.NEW, c.new),
            (Category.UNCOMPARED, c.uncompared),
            (Category.ON_BASE, c.on_base),
            (Category.FLAKY, c.flaky),
            (Category.INFRA, c.infra),
        ):
            if not tests:
                continue
            console.print(Text(f"  {_HEADINGS[category]} ({len(tests):,})", style="bold"))
            style = "yellow" if category is Category.FLAKY else "red"
            for t in tests[:max_per_group]:
                line = Text("    ✗ " if style == "red" else "    ~ ", style=style)
                line.append(clean(t.nodeid, 300))
                reason = clean(_reason(ctx, t))
                if reason:
                    line.append(f" — {reason}", style="dim")
                if t.loss_curve:
                    line.append(f" loss {_curve(t.loss_curve)}", style="dim")
                console.print(line)
            if len(tests) > max_per_group:
                console.print(Text(f"    … and {len(tests) - max_per_group:,} more"))
        # skipped: what --allow-missing turned into skips says what was missing
        for label, outcome in (("Not run", Outcome.NOT_RUN), ("Skipped", Outcome.SKIPPED)):
            reasons = Counter(clean(t.message) for t in r.tests if t.outcome is outcome)
            if reasons:
                console.print(Text(f"  {label} ({sum(reasons.values()):,})", style="bold"))
                for reason, n in reasons.most_common(10):
                    console.print(Text(f"    {n:6,}  {reason or '(no reason given)'}"))
        dev = r.run.device
        facts = f"device {dev.name or dev.type} · time {duration_text(r.run.duration)}"
        if r.run.shard:
            facts += f" · shard {r.run.shard} only"
        if keys := golden_keys(r):
            facts += f" · golden key {', '.join(keys)}"
            written = sum(t.golden.written for t in r.tests if t.golden is not None)
            if written:
                facts += f" ({written:,} values written by --golden record/update, not compared)"
        console.print(Text("  " + clean(facts, 300), style="dim"))
    if results_dir is not None:
        console.print(Text(f"  results: {results_dir}", style="dim"))


__all__ = [
    "COMMENT_BUDGET",
    "COMMENT_LIMIT",
    "SUMMARY_BUDGET",
    "SUMMARY_LIMIT",
    "Detail",
    "RenderContext",
    "duration_text",
    "empty_selection",
    "permalink",
    "render_annotations",
    "render_report",
    "render_section",
    "render_summary",
    "run_state",
    "sparkline",
    "terminal_summary",
    "workflow_command",
]
