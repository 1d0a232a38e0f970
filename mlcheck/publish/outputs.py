"""What a run leaves on disk and the context its report is rendered in, for every command.

``mlcheck run`` (one run), ``mlcheck report`` (a merge of many) and the action (when ``mlcheck
publish`` did not run) all write the same files and render in the same context, so both live
here once: :func:`write_outputs` and :func:`context_for` / :func:`context_from_env`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .. import constants

if TYPE_CHECKING:
    from ..github.event import Event
    from ..report import RenderContext
    from ..results.schema import RunResults

# What `mlcheck report --format` may ask for; `annotations` only on request.
FORMATS = ("terminal", "markdown", "summary", "annotations", "json")


def context_from_env(
    environ: Mapping[str, str], *, title: str = "mlcheck", base: Path | None = None
) -> RenderContext:
    """A :class:`~mlcheck.report.RenderContext` from the GitHub Actions environment: links at
    the event's head (a dispatched GPU run's ``sha`` input, a PR's head), not ``GITHUB_SHA``
    (the default branch, or the PR's merge commit)."""
    from ..errors import UsageError
    from ..github.event import load_event, parse_event

    try:
        event = load_event(environ)
    except UsageError:  # unreadable payload: links at GITHUB_SHA are still better than none
        event = parse_event("local", {}, environ)
    return context_for(event, environ, title=title, base=base)


def context_for(
    event: Event,
    environ: Mapping[str, str],
    *,
    title: str = "mlcheck",
    base: Path | None = None,
    path_prefix: str = "",
) -> RenderContext:
    """The context of ``event``'s report (the one builder, :meth:`RenderContext.from_event`),
    with the environment's artifact name and secrets to redact, and the base digest file."""
    from dataclasses import replace

    from ..redact import Redactor
    from ..report import RenderContext
    from ..results.digest import read as read_digest

    ctx = RenderContext.from_event(
        event,
        artifact_name=constants.artifact_name(environ),
        title=title,
        redactor=Redactor.from_env(environ),
        path_prefix=path_prefix,
    )
    return replace(ctx, base=read_digest(base)) if base is not None else ctx


def write_outputs(
    sections: Mapping[str, RunResults],
    merged: RunResults,
    out: Path,
    ctx: RenderContext,
    *,
    formats: set[str] | frozenset[str] = frozenset(FORMATS) - {"annotations"},
    budget: int | None = None,
) -> None:
    """Write the report files into ``out`` and print what ``formats`` asks for.

    ``mlcheck run`` calls it too, so one run and a merge of many produce the same files.
    """
    from ..github.workflow import annotation_lines
    from ..report import (
        COMMENT_BUDGET,
        render_annotations,
        render_report,
        render_summary,
        terminal_summary,
    )
    from ..results import shard
    from ..results.digest import encode
    from ..results.schema import REPORT_FILE, write

    out.mkdir(parents=True, exist_ok=True)
    if "json" in formats:
        write(merged, out)
        shard.write_durations(shard.durations([merged]), out / shard.DURATIONS_FILE)
    if "markdown" in formats:
        report = render_report(sections, ctx, budget=budget or COMMENT_BUDGET)
        (out / REPORT_FILE).write_text(report + "\n", encoding="utf-8")
        digests = [encode(r, section=k, sha=ctx.sha) for k, r in sections.items()]
        (out / "digest.txt").write_text("\n".join(digests) + "\n", encoding="utf-8")
    if "summary" in formats:
        (out / "summary.md").write_text(render_summary(sections, ctx) + "\n", "utf-8")
    if "terminal" in formats:
        terminal_summary(sections, results_dir=out, ctx=ctx)
    if "annotations" in formats:
        for line in annotation_lines(render_annotations(sections, ctx)):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
