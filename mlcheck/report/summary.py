"""The job summary (``GITHUB_STEP_SUMMARY``): every section with more detail, no digest."""

from __future__ import annotations

from collections.abc import Mapping

from ..results.schema import RunResults
from . import messages
from .common import RenderContext
from .markdown import RULE, Detail, Level, Renderer, fit

SUMMARY_LIMIT = 1_048_576  # GitHub's job summary limit (bytes)
SUMMARY_BUDGET = 1_000_000

SUMMARY_LEVELS = {
    Detail.FULL: Level(10_000, 300, 200),
    Detail.SHORT: Level(2_000, 300, 50),
    Detail.NAMES: Level(0, 0, 0),
    Detail.COUNTS: Level(0, 0, 0),
}


def render_summary(
    sections: Mapping[str, RunResults], ctx: RenderContext, *, budget: int = SUMMARY_BUDGET
) -> str:
    """The job summary: every section with more detail, no digest, at most ``budget`` bytes."""
    if not sections:
        return messages.NO_RESULTS
    share = (budget - len(RULE) * (len(sections) - 1)) // len(sections)
    return RULE.join(
        fit(Renderer(r, ctx, key, summary=True), SUMMARY_LEVELS, share)
        for key, r in sections.items()
    )
