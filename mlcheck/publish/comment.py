"""The sticky PR comment: one section per tier, written without clobbering the others."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import GitHubNotFound, StickyCommentConflict
from ..redact import NO_SECRETS, Redactor
from ..report import RenderContext, messages, render_section, sticky
from ..results.schema import RunResults

if TYPE_CHECKING:
    from ..github import GitHubClient, StickyResult
    from ..github.event import Event
from .options import PublishOptions, Recorder, known_section, resolve_author


def update_section(
    client: GitHubClient,
    repo: str,
    number: int,
    key: str,
    section: str,
    *,
    author: str | None = None,
    settle: float = 1.0,
    max_rounds: int = 6,
) -> StickyResult:
    """Set section ``key`` of the PR's sticky comment: read, merge, write, then verify it stays.

    GitHub has no conditional write for comments, so a concurrent publisher (the fast job, the
    GPU publish, the scheduler) whose read came before our write can land its stale body after
    it, taking our section, or a section of a third job that we had merged, with it.
    :func:`mlcheck.github.update_sticky_section` reads, merges, writes and re-reads once, after
    ``settle`` x 0.5-1 seconds. This then re-reads every ``settle`` x 2-3 seconds (jittered, so
    racing publishers do not re-read in step) until one comment holds our section and every
    section we read from other jobs (a section is never removed on purpose; newer values of
    theirs are fine) *and* the comment did not change between two re-reads; whenever something
    is missing it writes again, merging what is there now with what it had read. A quiet pause
    matters because a stale write can come from a reader that saw the comment in a moment we
    never read (between another's stale write and its repair): if nothing was written for a
    whole pause, every write still in flight was sent more than ``2 x settle`` seconds ago
    (2 s by default; a GitHub write takes well under that). A write in flight for longer is not
    caught, which is why the shipped workflows also serialise every comment write in a per-PR
    ``concurrency`` group (README: "Comment writes are serialised"). Bounded: ``2 x
    max_rounds`` re-reads, then :class:`~mlcheck.errors.StickyCommentConflict`. ``settle=0``
    (tests that count requests) is the primitive alone.

    Common path: the primitive's 3 requests (list, write, re-read) + 1 re-read; nothing to
    change: the primitive's 1 (list).
    """
    from ..github import update_sticky_section

    me = author or client.viewer_login()

    def write(key: str, section: str, settle: float) -> StickyResult:
        for round_ in range(1, max_rounds + 1):
            try:
                return update_sticky_section(
                    client, repo, number, key, section, author=me, max_rounds=max_rounds,
                    settle=settle,
                )  # fmt: skip
            except GitHubNotFound as err:
                # The duplicate we were updating was merged and deleted by a concurrent
                # publisher: read again (the list no longer has it). Anything else propagates.
                if err.method != "PATCH" or round_ == max_rounds:
                    raise
        raise AssertionError("unreachable")

    done = write(key, section, settle)
    if not settle or done.action == "unchanged":  # nothing of ours in flight to verify
        return done
    seen = sticky.parse_sections(done.comment.body)  # ours and the other jobs' we kept
    last = done.comment.body
    for _ in range(2 * max_rounds):
        time.sleep(random.uniform(2 * settle, 3 * settle))
        found = [
            c
            for c in client.list_comments(repo, number)
            if c.author == me and sticky.is_sticky(c.body)
        ]
        body = found[-1].body if found else ""
        lost = {k: v for k, v in seen.items() if k != key and k not in sticky.parse_sections(body)}
        if len(found) == 1 and not lost and sticky.has_section(body, key, section):
            if body == last:
                return done  # present, and nothing was written for a whole pause
            last = body  # someone wrote meanwhile, keeping ours: wait until it is quiet
            continue
        # Overwritten by a stale write: put back what it took (sections only we still know
        # of first, then ours, which the primitive writes merged with everything now there).
        for other, text in lost.items():
            write(other, text, 0)
        done = write(key, section, settle)
        seen = {**seen, **sticky.parse_sections(done.comment.body)}
        last = done.comment.body
    raise StickyCommentConflict(
        f"the sticky comment on {repo}#{number} kept losing section {key!r} for {max_rounds} "
        "rounds; serialise publishers with a per-PR workflow `concurrency` group",
        method="PATCH",
        path=f"/repos/{repo}/issues/{number}/comments",
    )


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
    key = options.section or known_section(event)
    pr = event.pr_number
    if not key or pr is None or event.read_only_token:
        return None
    text = messages.results_refused(key, redactor.redact(reason), event.run_url)
    author = resolve_author(client, token, options.author)
    done = update_section(
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
            lambda key=key, text=text: update_section(  # type: ignore[misc]
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
