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
from pathlib import Path

from .. import constants
from ..github import workflow
from ..publish.outputs import FORMATS


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


def handle(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..publish.outputs import context_from_env, write_outputs
    from ..results.merge import merge, merge_sections
    from ..results.schema import read

    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    unknown = formats - set(FORMATS)
    if unknown:
        raise UsageError(
            f"--format: unknown {', '.join(sorted(unknown))}; use {', '.join(FORMATS)}"
        )
    if args.section:
        from ..publish.options import check_section_key

        check_section_key(args.section)  # the key of a comment section: a usage error here
    sections = merge_sections([read(d) for d in args.dirs], section=args.section)
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
