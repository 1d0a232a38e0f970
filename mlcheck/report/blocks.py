"""Self-contained blocks of a section: golden values, infrastructure failures, tests that
stopped running since the base."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from ..redact import html_text, inline, one_line
from ..results.digest import Category, Stopped
from ..results.schema import RunResults, TestResult
from ..text import duration_text
from . import messages
from .common import RenderContext, name_of
from .messages import HEADINGS, INFRA_CAUSES, infra_fix

_GOLDEN_LISTED = 10


def golden_block(results: RunResults, ctx: RenderContext) -> str:
    """Failing or missing golden values, and the one command that accepts them."""
    failures = [f for t in results.tests if t.golden is not None for f in t.golden.failures]
    if not failures:
        return ""
    lines = [messages.golden_heading(len(failures)), ""]

    def clean(text: str, limit: int) -> str:
        return inline(ctx.redactor.clip(text, 4 * limit, keep="head"), limit)

    for f in failures[:_GOLDEN_LISTED]:
        where = clean(f"{f.file} › {f.test} › {f.name} [{f.key}]", 300)
        lines.append(f"- {where} — {clean(f.problem, 240)}")
    if len(failures) > _GOLDEN_LISTED:
        lines.append(f"- {messages.and_more(len(failures) - _GOLDEN_LISTED)}")
    # the artifact name is ours (the workflow's input), not the tests': a code span is safe
    artifact = re.sub(r"[^A-Za-z0-9._-]", "", ctx.artifact_name or "") or None
    lines += ["", messages.golden_accept(artifact)]
    return "\n".join(lines)


def infrastructure_heading(tests: Sequence[TestResult]) -> str:
    """``#### Infrastructure (3): hub 2 · oom 1`` and one cause/fix line per kind.

    These failures still fail the run; they are listed apart from the code's failures and are
    never counted as new failures against the base.
    """
    kinds = Counter(str(t.failure_kind) for t in tests)
    ordered = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    summary = " · ".join(f"{inline(kind, 20)} {n:,}" for kind, n in ordered)
    lines = [f"#### {HEADINGS[Category.INFRA]} ({len(tests):,}): {summary}", ""]
    lines.append(messages.INFRA_ABOUT)
    lines.append("")
    for kind, _ in ordered:
        cause = INFRA_CAUSES.get(kind, ("", ""))[0]
        fix = infra_fix(kind, [t.message for t in tests if str(t.failure_kind) == kind])
        if cause:
            lines.append(messages.infra_cause(kind, cause, fix))
    return "\n".join(lines)


def base_time(low: float, high: float) -> str:
    if low <= 0:
        return f"< {duration_text(high)}"
    return f"{duration_text(low)}–{duration_text(high)}"


def stopped_block(ctx: RenderContext, stopped: Stopped, max_names: int) -> str:
    """The collapsed "Stopped running (N): ..." list: tests that ran on base and did not here."""
    groups: dict[tuple[str, str], list[TestResult]] = {}
    for t in stopped.tests:
        reason = one_line(ctx.redactor.clip(t.message, 400, keep="head"), 200)
        label = messages.STOPPED_LABELS.get(t.outcome, t.outcome.value)
        groups.setdefault((label, reason or messages.NO_REASON), []).append(t)
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    parts = [
        f"{len(ts):,} {label} — {html_text(reason, 80)}" for (label, reason), ts in ordered[:3]
    ]
    other = sum(len(ts) for _, ts in ordered[3:])
    summary = messages.stopped_summary(stopped.total, parts, other, stopped.gone)
    body: list[str] = []
    for (label, reason), ts in ordered[:20]:
        body.append(f"- **{label}** — {inline(reason, 200)} ({len(ts):,})")
        for t in ts[:max_names]:
            body.append(f"  - {inline(name_of(ctx, t), 200)}")
        if max_names and len(ts) > max_names:
            body.append(f"  - {messages.and_more(len(ts) - max_names)}")
    if stopped.gone:
        body.append(messages.stopped_gone(stopped.gone))
    if stopped.sampled:
        body.append(messages.stopped_sampled(stopped.unknown))
    return f"<details><summary>{summary}</summary>\n\n" + "\n".join(body) + "\n\n</details>"
