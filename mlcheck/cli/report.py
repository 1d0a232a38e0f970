"""`mlcheck report DIR...`: merge results from shards, tiers and jobs into one report.

Reads each DIR's (or file's) results.json, merges shards of the same tiers into one section,
compares with a base digest when given, and writes into ``--out``:

- ``results.json`` — the merged results (same schema; tests tagged with their section)
- ``report.md`` — the PR-comment sections, within GitHub's comment limit, with digests
- ``summary.md`` — the job summary (up to 1 MiB); also appended to ``$GITHUB_STEP_SUMMARY``
  when it is set (``--no-step-summary``: not)
- ``digest.txt`` — the digests alone, for the next run's ``--base-digest``
- ``durations.json`` — recorded durations, for ``mlcheck run --shard`` (pytest-split format)

It prints the terminal summary, and the annotations (``::error``...) with ``--annotations``
(default on inside GitHub Actions).

Exit codes: 0 every selected test passed; 1 a test failed or errored; 2 unreadable or
incompatible results, or bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .. import constants
from ..github import workflow

if TYPE_CHECKING:
    from ..github.event import Event
    from ..report import RenderContext
    from ..results.schema import RunResults

FORMATS = ("terminal", "markdown", "summary", "annotations", "json")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="merge results (shards, tiers, jobs) and write the report",
        # reST's ``literal`` markup reads as noise in a terminal
        description=re.sub(r"``([^`]+)``", r"`\1`", __doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="results dirs or files")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(constants.DEFAULT_RESULTS_DIR),
        help=f"where to write the merged report (default {constants.DEFAULT_RESULTS_DIR})",
    )
    parser.add_argument(
        "--base-digest",
        type=Path,
        default=None,
        metavar="FILE",
        help="the base branch's digest.txt, report.md or comment body: failures are then "
        "classified as new, already failing on base, or flaky",
    )
    parser.add_argument(
        "--format",
        default="terminal,markdown,summary,json",
        help=f"comma-separated outputs among {', '.join(FORMATS)} (default: all but annotations)",
    )
    workflow.add_options(parser)
    parser.add_argument("--title", default="mlcheck", help="heading of each section")
    parser.add_argument(
        "--section", default=None, help="one section key for everything (e.g. nightly)"
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="characters for report.md (default 60000, within GitHub's 65536)",
    )
    parser.set_defaults(handler=handle)


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


def handle(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..results.merge import merge, merge_sections
    from ..results.schema import read

    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    unknown = formats - set(FORMATS)
    if unknown:
        raise UsageError(
            f"--format: unknown {', '.join(sorted(unknown))}; use {', '.join(FORMATS)}"
        )
    loaded = [read(d) for d in args.dirs]
    if args.section:
        from ..results.schema import with_run

        loaded = [with_run(r, args.section) for r in loaded]
    sections = merge_sections(loaded)
    merged = merge(sections.values())
    ctx = context_from_env(os.environ, title=args.title, base=args.base_digest)
    ctx = ctx.with_base(ctx.base, sections)  # classified once, for every format
    wf = workflow.from_args(args)
    if wf.annotations:
        formats.add("annotations")
    write_outputs(sections, merged, args.out, ctx, formats=formats, budget=args.budget)
    if wf.summary is not None:
        from ..report import render_summary

        wf.append_summary(render_summary(sections, ctx))
    return merged.exit_code()


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
        for line in render_annotations(sections, ctx):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
