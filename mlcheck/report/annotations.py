"""GitHub workflow commands: at most 10 ``::error`` (new failures first), one ``::notice`` for
the rest."""

from __future__ import annotations

from collections.abc import Mapping

from ..redact import one_line
from ..results.digest import Category
from ..results.merge import section_key
from ..results.schema import RunResults, TestResult
from ..text import plural
from .common import RenderContext, name_of, reason_of

MAX_ERROR_ANNOTATIONS = 10


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
        c = ctx.classification(key, results)
        ordered += c.ordered()
        flaky += len(c.flaky)
    # code failures first: an infrastructure failure gets an annotation only if room is left
    rank = {Category.NEW: 0, Category.UNCOMPARED: 1, Category.ON_BASE: 2, Category.INFRA: 3}
    ordered.sort(key=lambda ct: rank[ct[0]])  # stable: keeps the sections' own order
    lines = []
    for category, t in ordered[:max_errors]:
        reason = one_line(reason_of(ctx, t, 300), 300)
        tb = ctx.redactor.clip(t.traceback, 1_500, keep="tail") if t.traceback else ""
        message = reason + (f"\n\n{tb}" if tb else "")
        file = f"{ctx.path_prefix.strip('/')}/{t.file}" if ctx.path_prefix and t.file else t.file
        lines.append(
            workflow_command(
                "error",
                message or "failed",
                file=ctx.redactor.redact(file or ""),
                line=t.line if file else None,
                title=f"{_annotation_title(category, t)}: {one_line(name_of(ctx, t), 200)}",
            )
        )
    rest = len(ordered) - len(lines)
    if rest or flaky:
        parts = []
        if rest:
            parts.append(f"{plural(rest, 'more failure')} not annotated")
        if flaky:
            parts.append(f"{plural(flaky, 'flaky test')} (passed on rerun)")
        lines.append(
            workflow_command("notice", "; ".join(parts) + ": see the job summary", title="mlcheck")
        )
    return lines
