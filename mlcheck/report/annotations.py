"""What the workflow's annotations say: at most 10 errors (new failures first), one notice for
the rest. The ``::error``/``::notice`` syntax and its escaping are GitHub's, in
:func:`mlcheck.github.workflow.workflow_command`; this module says what, not how.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from ..redact import one_line
from ..results.digest import Category
from ..results.merge import section_key
from ..results.schema import RunResults, TestResult
from . import messages
from .common import RenderContext, name_of, reason_of

MAX_ERROR_ANNOTATIONS = 10


class Annotation(NamedTuple):
    """One workflow annotation: ``command`` (``error``, ``notice``), its message, properties
    (``file``, ``line``, ``title``; None or empty ones are left out when it is printed)."""

    command: str
    message: str
    properties: Mapping[str, str | int | None]


def render_annotations(
    sections: Mapping[str, RunResults] | RunResults,
    ctx: RenderContext,
    *,
    max_errors: int = MAX_ERROR_ANNOTATIONS,
) -> list[Annotation]:
    """The annotations: the most relevant failures as errors (new first), then one notice for
    every failure and flaky test left out (:func:`mlcheck.github.workflow.workflow_command`
    writes each as a line)."""
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
    lines: list[Annotation] = []
    for category, t in ordered[:max_errors]:
        reason = one_line(reason_of(ctx, t, 300), 300)
        tb = ctx.redactor.clip(t.traceback, 1_500, keep="tail") if t.traceback else ""
        message = reason + (f"\n\n{tb}" if tb else "")
        file = f"{ctx.path_prefix.strip('/')}/{t.file}" if ctx.path_prefix and t.file else t.file
        kind = messages.annotation_title(category, one_line(str(t.failure_kind), 20))
        title = f"{kind}: {one_line(name_of(ctx, t), 200)}"
        where = {"file": ctx.redactor.redact(file or ""), "line": t.line if file else None}
        lines.append(Annotation("error", message or "failed", {**where, "title": title}))
    rest = len(ordered) - len(lines)
    if rest or flaky:
        message = messages.annotations_left_out(rest, flaky)
        lines.append(Annotation("notice", message, {"title": "mlcheck"}))
    return lines
