"""`mlcheck publish DIR...`: post results produced elsewhere to GitHub (untrusted data)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .. import constants
from ..constants import github_token
from ..github import workflow
from ..tiers import DEFAULT_GPU_LABEL

if TYPE_CHECKING:
    from ..github import GitHubClient
    from ..github.event import Event
    from ..redact import Redactor

HELP = "post results from results folders or artifacts: PR comment, tracking issue, summary"
DESCRIPTION = """\
Publish results that another job produced: the GPU job (no write token), a fork PR's run
(read-only token; publish from a `workflow_run` workflow), or matrix shards. DIRs are results
folders, results.json files, or downloaded artifact folders (searched a few levels down).

The results are untrusted data: symbolic links, FIFOs and devices, files over
--max-results-mb, more than --max-tests tests or 6 million JSON values, results that claim
another section than --section (or the one the event fixes) and anything that does not match
the results schema are refused; every string is redacted and escaped before it reaches
GitHub. The results files are only read.

What it posts depends on the event (GITHUB_EVENT_NAME; table in README.md):
  pull_request, push to a PR branch, workflow_run, workflow_dispatch from `mlcheck schedule`
      -> this run's section of the PR's sticky comment, compared with the base digest
  push to the default branch -> also the base digest in the tracking issue
  schedule (nightly) -> the tracking issue: full report, failures new since the last
      nightly; closed when everything passes, reopened when something fails
and always the job summary ($GITHUB_STEP_SUMMARY), annotations and the action outputs
($GITHUB_OUTPUT). The token comes from $GITHUB_TOKEN (never from the command line)."""
EPILOG = """\
exit codes:
  0  published (or nothing to publish for this event; the log says why)
  1  only with --fail-on failures: a test failed or errored (publishing itself succeeded)
  2  usage problem, or results refused: unreadable, wrong schema version, over the limits
  3  reporting failed: a GitHub request failed (missing permission, GitHub down, rate
     limited); the message names the call and the permission to add. The results files are
     untouched and the tests' verdict is what `mlcheck run` returned; rerun the publish job."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..publish.options import COMMENT_MODES

    parser = subparsers.add_parser(
        "publish",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dirs",
        nargs="*",
        type=Path,
        metavar="DIR",
        help=f"results folders, files or artifact folders (default ${constants.ENV_RESULTS_DIR} "
        f"or {constants.DEFAULT_RESULTS_DIR})",
    )
    parser.add_argument(
        "--section",
        default=None,
        metavar="KEY",
        help="the comment section these results belong to; results that claim another are "
        "refused (default: the dispatched tier for workflow_dispatch, fast for workflow_run, "
        "else the results' tiers; the action passes the tier it ran)",
    )
    parser.add_argument(
        "--comment",
        choices=COMMENT_MODES,
        default="always",
        help="post the PR comment always, only when something failed (or a comment exists "
        "already), or never (default always)",
    )
    parser.add_argument("--title", default="mlcheck", help="heading of each section")
    parser.add_argument(
        "--path-prefix",
        default="",
        metavar="DIR",
        help="the project's folder inside the repository, for links and annotations",
    )
    parser.add_argument(
        "--base-digest",
        type=Path,
        default=None,
        metavar="FILE",
        help="compare with this digest file instead of the tracking issue's base digest",
    )
    parser.add_argument(
        "--fail-on",
        choices=("failures", "never"),
        default="never",
        help="exit 1 when a test failed or errored (default never: the run job reports that)",
    )
    parser.add_argument(
        "--gpu-label", default=DEFAULT_GPU_LABEL, help="the label that schedules GPU runs"
    )
    parser.add_argument(
        "--max-results-mb",
        type=float,
        default=50,
        help="refuse a results.json larger than this (default 50)",
    )
    parser.add_argument(
        "--max-tests", type=int, default=200_000, help="refuse more tests than this in all"
    )
    # issue 24: the report of `mlcheck mutate` (the action's `command: mutate`)
    parser.add_argument(
        "--mutation",
        action="store_true",
        help="DIR holds a mutation.json (mlcheck mutate): post its report as the `mutation` "
        "section (PR comment, or the tracking issue on schedule) and the job summary",
    )
    workflow.add_options(parser)
    add_github_options(parser)
    parser.set_defaults(handler=handle)


def add_github_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that talk to GitHub."""
    from ..publish.options import SETTLE

    group = parser.add_argument_group("GitHub")
    group.add_argument(
        "--comment-author",
        default=None,
        metavar="LOGIN",
        help="who the sticky comment is by (default: github-actions[bot] for a workflow "
        "token, else the token's user); set it for a GitHub App token: APP-SLUG[bot]",
    )
    group.add_argument(
        "--retries", type=int, default=6, help="attempts per GitHub request (default 6)"
    )
    group.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="longest wait for a rate limit, in seconds, before giving up (default 60)",
    )
    group.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        help="first retry delay in seconds, doubled per attempt (default 1)",
    )
    group.add_argument(
        "--settle",
        type=float,
        default=SETTLE,
        help="seconds to wait before re-reading the comment to check no concurrent job "
        f"overwrote it (default {SETTLE:g})",
    )


def github_client(args: argparse.Namespace, token: str | None) -> GitHubClient:
    from ..github import GitHubClient

    return GitHubClient.from_env(
        token=token or "",
        max_attempts=args.retries,
        max_wait=args.max_wait,
        backoff=args.backoff,
    )


def redactor_for(environ: Mapping[str, str], token: str | None) -> Redactor:
    from ..redact import Redactor, all_values

    return all_values([Redactor.from_env(environ), Redactor(values=(token,) if token else ())])


def report_problem(text: str, wf: workflow.Workflow | None = None) -> None:
    """A reporting failure: one line on stderr, and an error annotation inside Actions."""
    wf = wf or workflow.Workflow.from_env()
    print(f"mlcheck: reporting failed: {text}", file=sys.stderr)
    if wf.in_actions:
        wf.command("error", text, title="mlcheck: reporting failed")


def handle(args: argparse.Namespace) -> int:
    from ..errors import GitHubError, ResultsError
    from ..github.event import load_event
    from ..publish import Limits, PublishOptions, load_untrusted, publish, publish_refusal
    from ..publish.options import check_claims, check_section_key, known_section
    from ..report import terminal_summary
    from ..results.merge import merge_sections

    env = os.environ
    wf = workflow.from_args(args, env)
    dirs = args.dirs or [constants.results_dir(env)]
    event = load_event(env)
    if args.mutation:
        return _publish_mutation(args, dirs, event, wf)
    limits = Limits(max_bytes=int(args.max_results_mb * 1024 * 1024), max_tests=args.max_tests)
    token = github_token(env)
    redactor = redactor_for(env, token)
    options = PublishOptions(
        comment=args.comment,
        title=args.title,
        section=args.section,
        base_digest=args.base_digest,
        author=args.comment_author,
        artifact_name=constants.artifact_name(env),
        settle=args.settle,
        gpu_label=args.gpu_label,
        path_prefix=args.path_prefix,
    )
    key = options.section or known_section(event)
    if key:
        check_section_key(key)  # a bad --section is a usage error before anything is read
    client = github_client(args, token) if token and event.name != "local" else None
    try:
        results = load_untrusted(dirs, limits=limits)
        if key:
            check_claims(results, key)  # results never pick their section (exit 2 if they try)
    except ResultsError as exc:  # exit 2; the PR's section says so where we know it
        if client is not None:
            try:
                publish_refusal(event, client, str(exc), options, redactor=redactor, token=token)
            except GitHubError as err:
                report_problem(f"saying the results were refused failed: {err}", wf)
            finally:
                client.close()
        raise
    try:
        result = publish(results, event, client, options, redactor=redactor, token=token)
    finally:
        if client is not None:
            client.close()

    terminal_summary(merge_sections(results))
    wf.print_annotations(result.annotations)
    wf.append_summary(result.summary)
    wf.set_outputs(result.outputs())
    for note in result.notes:
        print(f"mlcheck: {note}")
    if result.comment_url:
        print(f"mlcheck: PR comment: {result.comment_url}")
    if result.issue_url:
        print(f"mlcheck: tracking issue: {result.issue_url}")
    for problem in result.problems:
        report_problem(problem, wf)
    code = result.exit_code(args.fail_on)
    if result.problems:
        verdict = "failed or errored" if result.verdict else "passed"
        print(
            f"mlcheck: publish exits {code}; the results files are untouched and the tests "
            f"{verdict} (that verdict is `mlcheck run`'s exit code, not this one)",
            file=sys.stderr,
        )
    sys.stdout.flush()
    return code


def _publish_mutation(
    args: argparse.Namespace, dirs: list[Path], event: Event, wf: workflow.Workflow
) -> int:
    """``--mutation``: one folder's ``mutation.json``, read as untrusted data, re-rendered."""
    from ..errors import UsageError
    from ..power.publish import load_untrusted_mutation, publish_mutation

    if len(dirs) != 1:
        raise UsageError("--mutation publishes one folder (the one holding mutation.json)")
    env = os.environ
    token = github_token(env)
    redactor = redactor_for(env, token)
    report = load_untrusted_mutation(Path(dirs[0]))  # ResultsError: exit 2
    client = github_client(args, token) if token and event.name != "local" else None
    try:
        done = publish_mutation(
            report, event, client, comment=args.comment, author=args.comment_author,
            settle=args.settle, redactor=redactor, token=token,
        )  # fmt: skip
    finally:
        if client is not None:
            client.close()
    wf.append_summary(done.section)
    wf.set_outputs({"comment-url": done.comment_url or "", "issue-url": done.issue_url or ""})
    for note in done.notes:
        print(f"mlcheck: {note}")
    if done.comment_url:
        print(f"mlcheck: PR comment: {done.comment_url}")
    if done.issue_url:
        print(f"mlcheck: tracking issue: {done.issue_url}")
    for problem in done.problems:
        report_problem(problem, wf)
    sys.stdout.flush()
    return 3 if done.problems else 0
