"""What ``mlcheck run`` and ``mlcheck report`` print: counts, failures, not-run reasons (rich)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..redact import one_line
from ..results.digest import Category
from ..results.failure_kinds import is_hub_skip
from ..results.merge import section_key
from ..results.schema import Outcome, RunResults
from ..text import duration_text
from .common import (
    COLUMNS,
    RenderContext,
    curve,
    empty_selection,
    golden_keys,
    reason_of,
    run_state,
    subtests_line,
)
from .messages import HEADINGS, skip_reason

if TYPE_CHECKING:
    from rich.console import Console


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
        c = ctx.classification(key, r)
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
        columns = [(label, outs) for label, outs in COLUMNS if any(counts[o.value] for o in outs)]
        for label, _ in columns:
            table.add_column(label, justify="right")
        if columns:
            table.add_row(*(f"{sum(counts[o.value] for o in outs):,}" for _, outs in columns))
            console.print(table)
        if subtests := subtests_line(r):
            console.print(Text(f"  {subtests}"))
        for category, tests in (
            (Category.NEW, c.new),
            (Category.UNCOMPARED, c.uncompared),
            (Category.ON_BASE, c.on_base),
            (Category.FLAKY, c.flaky),
            (Category.INFRA, c.infra),
        ):
            if not tests:
                continue
            console.print(Text(f"  {HEADINGS[category]} ({len(tests):,})", style="bold"))
            style = "yellow" if category is Category.FLAKY else "red"
            for t in tests[:max_per_group]:
                line = Text("    ✗ " if style == "red" else "    ~ ", style=style)
                line.append(clean(t.nodeid, 300))
                reason = clean(reason_of(ctx, t))
                if reason:
                    line.append(f" — {reason}", style="dim")
                if t.loss_curve:
                    line.append(f" loss {curve(t.loss_curve)}", style="dim")
                console.print(line)
            if len(tests) > max_per_group:
                console.print(Text(f"    … and {len(tests) - max_per_group:,} more"))
        # skipped: what --allow-missing turned into skips says what was missing
        for label, outcome in (("Not run", Outcome.NOT_RUN), ("Skipped", Outcome.SKIPPED)):
            reasons = Counter(
                skip_reason(clean(t.message), is_hub_skip(clean(t.message)))
                if outcome is Outcome.SKIPPED
                else clean(t.message)
                for t in r.tests
                if t.outcome is outcome
            )
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
