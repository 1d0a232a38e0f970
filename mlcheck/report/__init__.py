"""Everything mlcheck says about a run, as text: pure functions, results in, text out.

- :mod:`.markdown` — the sticky PR comment's sections and ``report.md``
- :mod:`.summary` — the job summary (``GITHUB_STEP_SUMMARY``)
- :mod:`.annotations` — the workflow's annotations (errors, one notice)
- :mod:`.terminal` — what ``mlcheck run`` and ``mlcheck report`` print
- :mod:`.messages` — every sentence the PR comment, the job summary and the tracking issue
  say (the section's status and headings, the notes of each block, the annotations, GPU run
  scheduled or refused, results refused, the PR moved, the nightly intro, issue titles); the
  renderers above only lay them out
- :mod:`.sticky` — the comment's hidden markers and sections
- :mod:`.common` — the small pieces they share (context, sparklines, permalinks, counts)

Nothing here reads the environment or talks to the network, and no renderer writes a sentence
of its own (tests/scenarios/test_report_package.py checks both).
"""

from __future__ import annotations

from ..text import duration_text
from .annotations import MAX_ERROR_ANNOTATIONS, Annotation, render_annotations
from .common import RenderContext, empty_selection, permalink, run_state, sparkline
from .markdown import COMMENT_BUDGET, COMMENT_LIMIT, Detail, render_report, render_section
from .summary import SUMMARY_BUDGET, SUMMARY_LIMIT, render_summary
from .terminal import terminal_summary

__all__ = [
    "COMMENT_BUDGET",
    "COMMENT_LIMIT",
    "MAX_ERROR_ANNOTATIONS",
    "SUMMARY_BUDGET",
    "SUMMARY_LIMIT",
    "Annotation",
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
]
