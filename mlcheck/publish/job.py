"""What one publish does for an event: which section, which PR, comment, issue, summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ResultsError
from ..redact import NO_SECRETS, Redactor
from ..report import RenderContext, render_annotations, render_summary
from ..results import digest as digest_mod
from ..results.digest import Digest
from ..results.merge import merge_sections
from ..results.schema import RunResults

if TYPE_CHECKING:
    from ..github import GitHubClient, Issue
    from ..github.event import Event
from .comment import write_comment
from .options import (
    PublishOptions,
    PublishResult,
    Recorder,
    counts,
    force_section,
    known_section,
    resolve_author,
)
from .tracking import nightly, read_base, write_base


def publish(
    results: Sequence[RunResults],
    event: Event,
    client: GitHubClient | None,
    options: PublishOptions = PublishOptions(),
    *,
    redactor: Redactor = NO_SECRETS,
    token: str | None = None,
) -> PublishResult:
    """Report ``results`` for ``event``: PR comment section, tracking issue, summary, annotations.

    What goes where depends on the event (table in README.md). GitHub failures do not
    raise: they are collected in :attr:`PublishResult.problems` (exit code 3), and the summary
    and annotations are produced anyway. ``client`` None publishes nothing to GitHub.

    >>> from mlcheck.github.event import parse_event
    >>> from mlcheck.results.schema import RunResults, RunInfo
    >>> out = publish([RunResults(RunInfo(), ())], parse_event("local", {}, {}), None)
    >>> out.sections, out.exit_code()
    (('fast',), 0)
    """
    if not results:
        raise ResultsError("nothing to publish: no results given")
    key = options.section or known_section(event)
    sections = force_section(results, key) if key else merge_sections(results)
    ctx = RenderContext.from_event(
        event,
        artifact_name=options.artifact_name,
        title=options.title,
        redactor=redactor,
        path_prefix=options.path_prefix,
    )
    rec = Recorder(redactor)
    comment_url = issue_url = None
    base: Mapping[str, Digest] = {}
    verdict = max(r.exit_code() for r in sections.values()) if sections else 0

    if options.base_digest is not None:
        base = read_digest_file(options.base_digest, rec)
    if client is None:
        if event.name != "local":
            rec.problems.append(
                "no GitHub token: pass `github-token` (or set GITHUB_TOKEN) to post the report"
            )
        else:
            rec.note("not running in GitHub Actions: nothing posted")
    elif event.name == "schedule":
        author = rec.attempt("finding the token's user", lambda: resolve_author(client, token))
        if author:
            issue_url, ctx = nightly(client, event, sections, ctx, options, author, rec)
            base = ctx.base
    else:
        author = rec.attempt(
            "finding the token's user", lambda: resolve_author(client, token, options.author)
        )
        pr = rec.attempt("finding the PR", lambda: _find_pr(event, client, rec))
        read: tuple[Issue | None] | None = None  # the tracking issue, when it was read
        if author and options.base_digest is None:
            read, base = read_base(client, event.repository, author, rec)
        ctx = ctx.with_base(base, sections)
        if pr is None:
            if event.name != "push":
                rec.note(f"no PR to comment on for this {event.name} event")
        elif options.comment == "off":
            rec.note("comment: off")
        elif event.read_only_token:
            rec.note(
                "this pull_request run has a read-only token (fork or Dependabot PR): the "
                "comment is posted by the `workflow_run` publisher (README.md, fork PRs)"
            )
        elif author:
            comment_url = write_comment(client, event, pr, sections, ctx, options, author, rec)
        if author and _is_default_branch_push(event):
            issue_url = write_base(client, event, sections, author, options, rec, read)

    if ctx.base is not base:  # not compared on GitHub: the base-digest file's, or none
        ctx = ctx.with_base(base, sections)
    return PublishResult(
        counts=counts(sections, ctx),
        sections=tuple(sections),
        verdict=verdict,
        comment_url=comment_url,
        issue_url=issue_url,
        notes=tuple(rec.notes),
        problems=tuple(rec.problems),
        summary=render_summary(sections, ctx),
        annotations=tuple(render_annotations(sections, ctx)),
    )


def _find_pr(event: Event, client: GitHubClient, rec: Recorder) -> int | None:
    from ..github.event import find_pr_number

    run = event.workflow_run
    if event.name == "workflow_run" and run is not None and event.pr_number is not None:
        # The run's PR list is not proof: confirm the PR's head is the run's commit and repo.
        pull = client.get_pull(event.repository, event.pr_number)
        if pull.head_sha != run.head_sha or pull.head_repo != run.head_repo:
            rec.note(
                f"nothing posted: the workflow_run names PR #{event.pr_number}, whose head is "
                f"{pull.head_sha[:7]} in {pull.head_repo}, not this run's "
                f"{run.head_sha[:7]} in {run.head_repo}"
            )
            return None
        return event.pr_number
    if event.name == "pull_request" or event.pr_number is not None:
        return event.pr_number
    if event.name in ("push", "workflow_run"):
        return find_pr_number(event, client)
    return None


def _is_default_branch_push(event: Event) -> bool:
    return (
        event.name == "push"
        and event.default_branch is not None
        and event.ref == f"refs/heads/{event.default_branch}"
    )


def read_digest_file(path: Path, rec: Recorder) -> dict[str, Digest]:
    try:
        return digest_mod.read(path)
    except ResultsError as exc:
        rec.note(f"base digest not used: {exc}")
        return {}
