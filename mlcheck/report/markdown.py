"""The sticky PR comment's sections (Markdown): results in, text out (no network, no environment).

- :func:`render_section` — one section of the sticky PR comment (a tier's or a run's), with its
  hidden digest, within a character budget.
- :func:`render_report` — every section, one after the other (``report.md``, tracking issue).

What a section shows, in order: status and counts with the change against the base branch;
new failures, failures not compared (no base), failures already on base, flaky tests — each with
its name linked to the file and line at the head SHA, a one-line reason, the loss curve as a
sparkline and a collapsed traceback; tests not run, grouped by reason with how to run them;
device, time, models and cache hits; the digest.

When the budget is tight, detail degrades in steps — full tracebacks, short tracebacks, names
only, counts only — and the section says what it left out and where to find it.

Every string that came from a test goes through :mod:`mlcheck.redact` (redact, then escape).

>>> from mlcheck.results.schema import RunResults, RunInfo, TestResult, Outcome
>>> r = RunResults(RunInfo(), (TestResult("tests/t.py::test_a", Outcome.PASSED),))
>>> "1 passed" in render_section(r, RenderContext())
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from ..redact import code_block, html_text, inline, one_line
from ..results import digest as digest_mod
from ..results.digest import (
    Category,
    Classified,
    Digest,
    is_infrastructure,
    slower_than_base,
    stopped_running,
)
from ..results.failure_kinds import is_hub_skip
from ..results.merge import section_key
from ..results.schema import Outcome, RunResults, RunStatus, TestResult
from ..text import SHA_RE, duration_text
from . import messages
from .blocks import base_time, golden_block, infrastructure_heading, stopped_block
from .common import (
    COLUMNS,
    RenderContext,
    curve,
    empty_selection,
    golden_keys,
    name_of,
    permalink,
    reason_of,
    run_state,
    subtests_line,
    tiers_ran,
    trim_traceback,
)
from .messages import HEADINGS, skip_reason

COMMENT_LIMIT = 65_536  # GitHub refuses longer comment bodies
COMMENT_BUDGET = 60_000  # what all sections of a comment aim for, leaving room for markers
SLOWEST_LISTED = 5  # the slowest tests a section lists

RULE = "\n\n---\n\n"
_MORE_RESERVE = 200  # room for the headings and "… and N more" of lists that get cut


class Detail(IntEnum):
    """How much a section shows; each step is tried until the section fits."""

    FULL = 0  # tracebacks
    SHORT = 1  # last lines of tracebacks
    NAMES = 2  # names and reasons only
    COUNTS = 3  # counts only


@dataclass(frozen=True)
class Level:
    traceback_chars: int
    max_tracebacks: int
    max_names_per_group: int  # names listed under each not-run reason


COMMENT_LEVELS = {
    Detail.FULL: Level(3_000, 20, 20),
    Detail.SHORT: Level(600, 50, 10),
    Detail.NAMES: Level(0, 0, 0),
    Detail.COUNTS: Level(0, 0, 0),
}


def _delta(now: int, before: int | None) -> str:
    if before is None:
        return ""
    d = now - before
    return f"+{d:,}" if d > 0 else f"−{-d:,}" if d < 0 else "±0"


def _counts_table(counts: Counter[str], base: Digest | None, sha: str | None) -> str:
    columns = [
        (label, outs)
        for label, outs in COLUMNS
        if label != "xfail" or any(counts[o.value] for o in outs)
    ]
    head = "| | " + " | ".join(label for label, _ in columns) + " | total |"
    rule = "| --- |" + " ---: |" * (len(columns) + 1)
    total = sum(counts.values())
    row = (
        f"| {messages.THIS_RUN}{f' `{sha[:7]}`' if sha and SHA_RE.fullmatch(sha) else ''} | "
        + " | ".join(f"{sum(counts[o.value] for o in outs):,}" for _, outs in columns)
        + f" | {total:,} |"
    )
    lines = [head, rule, row]
    if base is not None:
        bc = Counter(base.counts)
        bsha = f" `{base.sha[:7]}`" if base.sha and SHA_RE.fullmatch(base.sha) else ""
        lines.append(
            f"| {messages.VS_BASE}{bsha} | "
            + " | ".join(
                _delta(sum(counts[o.value] for o in outs), sum(bc[o.value] for o in outs))
                for _, outs in columns
            )
            + f" | {_delta(total, sum(bc.values()))} |"
        )
    return "\n".join(lines)


def _status(c: Classified, counts: Counter[str], results: RunResults) -> str:
    return messages.section_status(
        c,
        ran=sum(v for k, v in counts.items() if k != Outcome.NOT_RUN.value),
        passed=counts[Outcome.PASSED.value],
        state=run_state(results),
        crashed=results.run.status is RunStatus.CRASHED,
        empty=empty_selection(results),
    )


def _facts_line(results: RunResults) -> str:
    run = results.run
    dev = run.device
    # Numbers from results go out through int()/float(), strings through inline().
    device = messages.device_text(
        inline(dev.name if dev.name else dev.type, 120),
        int(dev.count),
        float(dev.memory_gb) if dev.memory_gb else None,
    )
    return messages.facts_line(
        device,
        run.duration,
        sum(t.duration for t in results.tests),
        int(run.workers) if run.workers else 0,
        inline(run.shard, 20) if run.shard else None,
        int(run.seed) if run.seed is not None else None,
        ", ".join(inline(k, 40) for k in golden_keys(results)),
    )


def _where_else(ctx: RenderContext, summary: bool) -> str:
    artifact = inline(ctx.artifact_name, 100) if ctx.artifact_name else None
    return messages.where_else(ctx.run_url, artifact, summary)


def _cache_state(hits: Sequence[bool | None]) -> str:
    known = [h for h in hits if h is not None]
    return messages.cache_state(sum(known), len(known))


class Renderer:
    """One section at one detail level; caches item text across levels."""

    def __init__(self, results: RunResults, ctx: RenderContext, key: str, summary: bool) -> None:
        self.results = results
        self.ctx = ctx
        self.key = key
        self.summary = summary
        self.base = ctx.base.get(key)
        self.sha = ctx.sha or results.run.sha
        self.c = ctx.classification(key, results)
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
        name = inline(name_of(self.ctx, t), 300)
        return f"[{name}]({url})" if url else name

    def name_line(self, t: TestResult) -> str:
        """``- [name](link) — reason · phase · curve`` (cached: the same at every level)."""
        cached = self._names.get(id(t))
        if cached is not None:
            return cached
        bits = [self.link_name(t)]
        reason = reason_of(self.ctx, t)
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
            extras.append(messages.error_in(t.phase.value))
        failed = sum(1 for a in t.attempts if a.outcome.is_failure)
        if len(t.attempts) > 1:
            extras.append(messages.attempts(failed, len(t.attempts)))
        if t.loss_curve:
            extras.append(f"loss {curve(t.loss_curve)}")
        return "".join(f" · {e}" for e in extras)

    def detailed(self, t: TestResult, chars: int) -> str:
        head = self.name_line(t)
        tb = t.traceback or (
            next((a.message for a in reversed(t.attempts) if a.message), "") or t.message
        )
        if not tb.strip() or chars <= 0:
            return head
        # library frames go before any character does (the full text is in results.json)
        tb = trim_traceback(tb)
        text = self.ctx.redactor.clip(tb, chars, keep="tail")
        label = messages.traceback_label(cut=len(text) < len(tb))
        # Indented two spaces so the block belongs to the list item above it.
        block = f"<details><summary>{label}</summary>\n\n{code_block(text)}\n\n</details>"
        body = "\n".join("  " + ln if ln else "" for ln in block.split("\n"))
        return f"{head}\n\n{body}\n"

    # -- blocks --------------------------------------------------------------------------------

    def header(self) -> str:
        status = _status(self.c, self.counts, self.results)
        by_tier = tiers_ran(self.results)
        title = messages.section_heading(status, by_tier, inline(self.ctx.title, 80), self.key)
        table = _counts_table(self.counts, self.base, self.sha)
        if subtests := subtests_line(self.results):
            table += f"\n\n*{subtests}*"
        if selection := self.results.run.selection:  # --changed-since: ran N of M, or all and why
            table += f"\n\n*{inline(selection, 400)}*"
        return "\n\n".join([title, table, _facts_line(self.results)])

    def failure_blocks(self, level: Level, budget: int) -> tuple[list[str], int]:
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
            title = HEADINGS[category]
            if category is Category.UNCOMPARED and self.base is not None:
                title = messages.UNCOMPARED_NOT_IN_BASE
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
            tail = f"- {messages.and_more(more)}" if more else ""
            blocks.append(heading + "\n\n" + "\n".join([*items, tail] if tail else items))
            used += size + len(tail.encode()) + 2
        return blocks, left_out

    def not_run_block(self, level: Level, detail: Detail) -> str:
        parts = []
        for outcome, (title, note) in (
            (Outcome.NOT_RUN, messages.NOT_RUN_HEADING),
            (Outcome.SKIPPED, messages.SKIPPED_HEADING),
        ):
            tests = [t for t in self.results.tests if t.outcome is outcome]
            if not tests:
                continue
            by_reason: dict[str, list[TestResult]] = {}
            for t in tests:
                reason = one_line(self.ctx.redactor.clip(t.message, 400, keep="head"), 200)
                if outcome is Outcome.SKIPPED:
                    reason = skip_reason(reason, is_hub_skip(reason))  # clipped: cheap
                by_reason.setdefault(reason or messages.NO_REASON, []).append(t)
            ordered = sorted(by_reason.items(), key=lambda kv: -len(kv[1]))
            shown = ordered[:20] if detail < Detail.COUNTS else []
            # Each reason is said once: the first ones as collapsed lists of the tests they
            # cover (at the levels that list names), the rest as rows of a table.
            named = shown[:5] if level.max_names_per_group else []
            blocks = []
            for reason, ts in named:
                listed = "\n".join(
                    f"- {inline(name_of(self.ctx, t), 200)}"
                    for t in ts[: level.max_names_per_group]
                )
                more = len(ts) - level.max_names_per_group
                if more > 0:
                    listed += f"\n- {messages.and_more(more)}"
                blocks.append(
                    f"<details><summary><b>{len(ts):,}</b> · {html_text(reason, 200)}</summary>"
                    f"\n\n{listed}\n\n</details>"
                )
            rows = [f"| {inline(r, 200)} | {len(ts):,} |" for r, ts in shown[len(named) :]]
            if len(ordered) > len(shown):
                rest = sum(len(ts) for _, ts in ordered[len(shown) :])
                other = messages.other_reasons_row(len(ordered) - len(shown))
                rows.append(f"| {other} | {rest:,} |")
            if rows:
                head = messages.other_reasons(note) if named else note
                blocks.append(f"| {head} | tests |\n| --- | ---: |\n" + "\n".join(rows))
            block = f"#### {title} ({len(tests):,})\n\n" + "\n\n".join(blocks)
            parts.append(block)
        return "\n\n".join(parts)

    def models_block(self, detail: Detail) -> str:
        uses: dict[tuple[str, str | None], list[bool | None]] = {}
        loads: dict[tuple[str, str | None], Counter[str]] = {}
        for t in self.results.tests:
            for m in t.models:
                uses.setdefault((m.id, m.revision), []).append(m.cache_hit)
                if m.load is not None:
                    loads.setdefault((m.id, m.revision), Counter())[m.load] += 1
        if not uses or detail >= Detail.COUNTS:
            return ""
        rows = []
        for (model_id, revision), hits in sorted(uses.items(), key=lambda kv: -len(kv[1]))[:20]:
            rev = inline(revision[:12], 20) if revision else "—"
            cache = _cache_state(hits)
            name = inline(self.ctx.redactor.clip(model_id, 200, keep="head"), 120)
            checked = "verified" if model_id in self.results.run.verified else "—"
            row = f"| {name} | {rev} | {len(hits):,} | {cache} | {checked} |"
            if loads:  # the load cache's column, only in runs where models.real was used
                counted = loads.get((model_id, revision), Counter())
                row += f" {counted['loaded']:,} · {counted['reused']:,} |" if counted else " — |"
            rows.append(row)
        more = f"\n\n{messages.and_more(len(uses) - 20, 'models')}" if len(uses) > 20 else ""
        head = "| model | revision | tests | cache | weights |"
        rule = "| --- | --- | ---: | --- | --- |"
        if loads:
            head, rule = head + " loaded · reused |", rule + " ---: |"
        return f"#### Models ({len(uses):,})\n\n{head}\n{rule}\n" + "\n".join(rows) + more

    def slowest_block(self, detail: Detail) -> str:
        """The slowest tests that ran, collapsed: where the run's time went."""
        ran = [t for t in self.results.tests if t.outcome is not Outcome.NOT_RUN and t.duration > 0]
        if len(ran) < 2 or detail >= Detail.NAMES:
            return ""
        slowest = sorted(ran, key=lambda t: -t.duration)[:SLOWEST_LISTED]
        rows = [
            f"| {inline(name_of(self.ctx, t), 200)} | {duration_text(t.duration)} |"
            for t in slowest
        ]
        return (
            f"<details><summary>{messages.slowest_tests(len(slowest), len(ran))}</summary>\n\n"
            "| test | time |\n| --- | ---: |\n" + "\n".join(rows) + "\n\n</details>"
        )

    def curves_block(self, detail: Detail) -> str:
        tests = [t for t in self.results.tests if t.loss_curve and not t.outcome.is_failure]
        if not tests or detail >= Detail.NAMES:
            return ""
        lines = [
            f"- {inline(name_of(self.ctx, t), 200)} · {curve(t.loss_curve or ())}"
            for t in tests[:20]
        ]
        if len(tests) > 20:
            lines.append(f"- {messages.and_more(len(tests) - 20)}")
        return (
            f"<details><summary>{messages.loss_curves(len(tests))}</summary>\n\n"
            + "\n".join(lines)
            + "\n\n</details>"
        )

    def since_base_blocks(self, level: Level, detail: Detail) -> list[str]:
        """ "Stopped running" and "Slower than base": what changed against the base digest."""
        blocks = []
        stopped = stopped_running(self.results, self.base)
        if stopped is not None and stopped.total:
            names = level.max_names_per_group if detail < Detail.COUNTS else 0
            blocks.append(stopped_block(self.ctx, stopped, names))
        elif stopped is not None and stopped.unknown:
            blocks.append(messages.stopped_unknown(stopped.unknown))
        if detail < Detail.COUNTS:
            slower = slower_than_base(self.results.tests, self.base)
            if slower:
                rows = [
                    f"| {inline(name_of(self.ctx, s.test), 200)} | "
                    f"{base_time(s.base_low, s.base_high)} | {duration_text(s.test.duration)} |"
                    for s in slower
                ]
                blocks.append(
                    f"#### {messages.SLOWER_THAN_BASE} ({len(slower)})\n\n"
                    f"{messages.SLOWER_ABOUT}\n\n"
                    "| test | base | now |\n| --- | ---: | ---: |\n" + "\n".join(rows)
                )
        return blocks

    def render(self, detail: Detail, levels: Mapping[Detail, Level], budget: int) -> str | None:
        """The section at ``detail``, or None when it does not fit (names level always fits)."""
        level = levels[detail]
        header = self.header()
        tail_blocks = [
            golden_block(self.results, self.ctx) if detail < Detail.COUNTS else "",
            self.not_run_block(level, detail),
            self.models_block(detail),
            self.curves_block(detail),
            self.slowest_block(detail),
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
                notes.append(messages.not_listed(left_out))
            if detail is Detail.SHORT:
                notes.append(messages.TRACEBACKS_SHORTENED)
            elif detail is Detail.NAMES and self.c.ordered():
                notes.append(messages.TRACEBACKS_LEFT_OUT)
        else:
            notes.append(messages.NAMES_LEFT_OUT)
        text = "\n\n".join([header, *blocks, *([tail] if tail else [])])
        if notes:
            text += "\n\n" + messages.shortened(notes, _where_else(self.ctx, self.summary))
        if len(text.encode()) > budget:
            return None
        return text


def fit(renderer: Renderer, levels: Mapping[Detail, Level], budget: int) -> str:
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
    text = fit(Renderer(results, ctx, key, summary=False), COMMENT_LEVELS, body_budget)
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
        return messages.NO_RESULTS
    share = (budget - len(RULE) * (len(sections) - 1)) // len(sections)
    return RULE.join(
        render_section(r, ctx, key=key, budget=share, digest=digest) for key, r in sections.items()
    )
