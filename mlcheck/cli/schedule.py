"""`mlcheck schedule`: a GPU label on a PR becomes one dispatched GPU run (or a refusal)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..constants import github_token
from ..github import workflow
from ..tiers import DEFAULT_GPU_LABEL, DEFAULT_GPU_WORKFLOW, SCHEDULED_TIERS
from .publish import add_github_options, github_client, report_problem

HELP = "on pull_request_target labeled: dispatch the GPU workflow for the labeled commit"
DESCRIPTION = """\
Run on `pull_request_target: [labeled]`. When the label is --label (default mlcheck:gpu):
skip re-runs of the job, remove it (one label = one run; a label already gone dispatches
nothing), check through the API that the user who added it has write,
maintain or admin permission, pin the head SHA the label event carries (if the PR has moved
since, nothing is dispatched: label again), dispatch --workflow on the
default branch with inputs sha, pr and tier (the GPU workflow must declare all three), and say
"GPU run scheduled for <sha> by @user" in the PR comment's section for --tier, or why nothing
ran. Any other label: nothing happens.

With `[tool.mlcheck] gpu_runners` in the base manifest, it first sizes the run (measured peaks
from --sizing-results, else the base manifest's models on the meta device), dispatches the
runner classes as the `runners` input, and says which runner and why; a test bigger than the
largest class stops the dispatch (the comment names it).

It never checks out or runs PR code. The safety options it reports (allow_pickle,
trust_remote_code) come from the manifest in --workspace, which in pull_request_target is
the base branch's checkout; a workspace at the PR's head commit is refused.

Needs `pull-requests: write` (label, comment) and `actions: write` (dispatch)."""
EPILOG = """\
exit codes:
  0  dispatched, refused (the comment says why) or not our label
  2  usage problem: not a pull_request_target event, bad --tier, invalid base manifest,
     or a workspace holding the PR's code
  3  a GitHub request failed (missing permission, GitHub down); the message names the call
     and the permission to add"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--label", default=DEFAULT_GPU_LABEL, help=f"the GPU label (default {DEFAULT_GPU_LABEL})"
    )
    parser.add_argument(
        "--workflow",
        default=DEFAULT_GPU_WORKFLOW,
        help=f"the GPU workflow's file name or id (default {DEFAULT_GPU_WORKFLOW})",
    )
    parser.add_argument(
        "--tier",
        default=SCHEDULED_TIERS,
        help=f"the `tier` input to dispatch (default {SCHEDULED_TIERS})",
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=Path("."),
        help="the base branch's checkout, where the manifest's safety options are read (default .)",
    )
    parser.add_argument(
        "--sizing-results",
        type=Path,
        default=None,
        metavar="PATH",
        help="the last full GPU run's results (results.json or its folder): with [tool.mlcheck] "
        "gpu_runners, measured peaks size the runner (default: the base manifest's models)",
    )
    add_github_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..action.label_gate import ScheduleOptions, schedule
    from ..errors import GitHubError
    from ..github.event import load_event
    from ..tiers import tier_key

    event = load_event(os.environ)
    wf = workflow.Workflow.from_env(os.environ)
    tier_key(args.tier)  # a bad --tier is a usage error before anything is touched
    token = github_token(os.environ)
    options = ScheduleOptions(
        label=args.label,
        workflow=args.workflow,
        tier=args.tier,
        workspace=args.workspace,
        author=args.comment_author,
        settle=args.settle,
        sizing_results=args.sizing_results,
    )
    with github_client(args, token) as client:
        try:
            result = schedule(event, client, options, token=token)
        except GitHubError as exc:
            report_problem(f"scheduling the GPU run failed: {exc}", wf)
            wf.set_outputs({"scheduled": "false", "sha": "", "comment-url": ""})
            return 3
    print(f"mlcheck: {result.message}")
    if result.comment_url:
        print(f"mlcheck: PR comment: {result.comment_url}")
    wf.set_outputs(result.outputs())
    sys.stdout.flush()
    return 0
