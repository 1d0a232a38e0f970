"""Self-contained blocks of a section: golden values, infrastructure failures, tests that
stopped running since the base."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from ..digest import (
    Category,
    Stopped,
)
from ..results import Outcome, RunResults, TestResult
from ..safety import html_text, inline, one_line
from ..text import duration_text
from .common import RenderContext, name_of
from .messages import HEADINGS, INFRA_CAUSES, infra_fix

_GOLDEN_LISTED = 10


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


def infrastructure_heading(tests: Sequence[TestResult]) -> str:
    """``#### Infrastructure (3): hub 2 · oom 1`` and one cause/fix line per kind.

    These failures still fail the run; they are listed apart from the code's failures and are
    never counted as new failures against the base.
    """
    kinds = Counter(str(t.failure_kind) for t in tests)
    ordered = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    summary = " · ".join(f"{inline(kind, 20)} {n:,}" for kind, n in ordered)
    lines = [f"#### {HEADINGS[Category.INFRA]} ({len(tests):,}): {summary}", ""]
    lines.append(
        "Failed for a reason outside the code under test; they still fail the run, and are "
        "not compared with the base."
    )
    lines.append("")
    for kind, _ in ordered:
        cause = INFRA_CAUSES.get(kind, ("", ""))[0]
        fix = infra_fix(kind, [t.message for t in tests if str(t.failure_kind) == kind])
        if cause:
            lines.append(f"- **{kind}**: {cause}. *Fix:* {fix}.")
    return "\n".join(lines)


def base_time(low: float, high: float) -> str:
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
            body.append(f"  - {inline(name_of(ctx, t), 200)}")
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
