"""The sticky PR comment: one section per tier, written without clobbering the others."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..report import RenderContext, messages, render_section, sticky
from ..results import RunResults
from ..safety import NO_SECRETS, Redactor

if TYPE_CHECKING:
    from ..github import GitHubClient
    from ..github.event import Event
from .options import PublishOptions, Recorder, known_section, resolve_author


def publish_refusal(
    event: Event,
    client: GitHubClient,
    reason: str,
    options: PublishOptions = PublishOptions(),
    *,
    redactor: Redactor = NO_SECRETS,
    token: str | None = None,
) -> str | None:
    """Say in the PR's section that its results were refused (else "scheduled" would stay).

    Only where the publisher knows the section (a dispatched run, ``--section``) and the PR;
    returns the comment URL, or None when there is nowhere to say it. ``reason`` is escaped.
    """
    from ..github import update_sticky_section

    key = options.section or known_section(event)
    pr = event.pr_number
    if not key or pr is None or event.read_only_token:
        return None
    text = messages.results_refused(key, redactor.redact(reason), event.run_url)
    author = resolve_author(client, token, options.author)
    done = update_sticky_section(
        client, event.repository, pr, key, text, author=author, settle=options.settle
    )
    return done.comment.html_url


# ---------------------------------------------------------------------------------------------
# The PR comment


def write_comment(
    client: GitHubClient,
    event: Event,
    pr: int,
    sections: Mapping[str, RunResults],
    ctx: RenderContext,
    options: PublishOptions,
    author: str,
    rec: Recorder,
) -> str | None:
    from ..github import update_sticky_section

    warning = ""
    if event.name == "workflow_dispatch":
        pull = rec.attempt("reading the PR", lambda: client.get_pull(event.repository, pr))
        if pull is not None and pull.head_sha != event.head_sha:
            warning = head_moved_note(event.head_sha, pull.head_sha, options.gpu_label)
            rec.note(f"the PR head moved to {pull.head_sha[:7]} since {event.head_sha[:7]}")
    failing = any(r.failures() for r in sections.values())
    if options.comment == "on-failure" and not failing:
        mine = rec.attempt(
            "reading the PR comments", lambda: client.list_comments(event.repository, pr)
        )
        if not any(c.author == author and sticky.is_sticky(c.body) for c in mine or ()):
            rec.note("comment: on-failure, and nothing failed")
            return None
    url = None
    for key, r in sections.items():
        budget = options.budget - len(warning)
        text = render_section(r, ctx, key=key, budget=budget)
        if warning:
            text = f"{warning}\n\n{text}"
        done = rec.attempt(
            f"updating the PR comment (section {key})",
            lambda key=key, text=text: update_sticky_section(  # type: ignore[misc]
                client, event.repository, pr, key, text, author=author, settle=options.settle
            ),
        )
        if done is not None:
            url = done.comment.html_url
    return url


def head_moved_note(pinned: str, head: str, label: str) -> str:
    """The warning a section gets when the PR moved past the commit its run tested."""
    return messages.head_moved(pinned, head, label)


# ---------------------------------------------------------------------------------------------
