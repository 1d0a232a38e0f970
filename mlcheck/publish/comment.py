"""The sticky PR comment: one section per tier, written without clobbering the others.

:func:`update_section` is the one loop that writes a section (the publisher, the GPU label's
scheduler and refusals all call it); :mod:`mlcheck.report.sticky` builds the body it writes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import GitHubNotFound, StickyCommentConflict
from ..redact import NO_SECRETS, Redactor
from ..report import RenderContext, messages, render_section, sticky
from ..results.schema import RunResults

if TYPE_CHECKING:
    from ..github import Comment, GitHubClient
    from ..github.event import Event
from .options import SETTLE, PublishOptions, Recorder, known_section, resolve_author


@dataclass(frozen=True)
class StickyResult:
    """What :func:`update_section` did."""

    comment: Comment
    action: Literal["created", "updated", "unchanged"]
    rounds: int  # read-merge-write-verify rounds the last write took (1 without interference)
    deleted: tuple[int, ...]  # duplicate comments removed


def update_section(
    client: GitHubClient,
    repo: str,
    number: int,
    key: str,
    section: str,
    *,
    author: str | None = None,
    settle: float = SETTLE,
    max_rounds: int = 6,
) -> StickyResult:
    """Set section ``key`` of the PR's sticky comment to ``section``, leaving other sections:
    the one sticky-comment loop (read, merge, write, then verify it stays).

    The comment is the newest one carrying the marker *and* written by ``author`` (default:
    this token's user, ``github-actions[bot]`` for a workflow token); older duplicates have
    their sections merged into it before they are deleted; nothing is written when nothing
    changed. GitHub has no conditional write for comments, so a concurrent publisher (the fast
    job, the GPU publish, the scheduler) whose read came before our write can land its stale
    body after it, taking our section, or a section of a third job that we had merged, with
    it. Each write (:func:`_write`) re-reads once after ``settle`` x 0.5-1 seconds and goes
    round again while our section is missing or there are several comments. This then
    re-reads every ``settle`` x 2-3 seconds (jittered, so racing publishers do not re-read in
    step) until one comment holds our section and every section we read from other jobs (a
    section is never removed on purpose; newer values of theirs are fine) *and* the comment
    did not change between two re-reads; whenever something is missing it writes again,
    merging what is there now with what it had read. A quiet pause matters because a stale
    write can come from a reader that saw the comment in a moment we never read (between
    another's stale write and its repair): if nothing was written for a whole pause, every
    write still in flight was sent more than ``2 x settle`` seconds ago (2 s by default; a
    GitHub write takes well under that). A write in flight for longer is not caught, which is
    why the shipped workflows also serialise every comment write in a per-PR ``concurrency``
    group (README: "Comment writes are serialised"). Bounded: ``2 x max_rounds`` re-reads,
    then :class:`~mlcheck.errors.StickyCommentConflict`. ``settle=0`` (tests that stage races
    or count requests) is one write with its one re-read and no pause.

    Requests, shipped ``settle``: comment exists, no duplicates: list, write, re-read + 1
    verifying re-read = 4; nothing to change: 1 (list); first comment: create instead of
    write, same count; +1 (``GET /user``) once per client when ``author`` is not given.
    With ``settle=0`` the verifying re-read is left out.
    """
    sticky.check_key(key)
    me = author or client.viewer_login()

    def write(key: str, section: str, settle: float) -> StickyResult:
        for round_ in range(1, max_rounds + 1):
            try:
                return _write(client, repo, number, key, section, me, settle, max_rounds)
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
        found = _mine(client, repo, number, me)
        body = found[-1].body if found else ""
        lost = {k: v for k, v in seen.items() if k != key and k not in sticky.parse_sections(body)}
        if len(found) == 1 and not lost and sticky.has_section(body, key, section):
            if body == last:
                return done  # present, and nothing was written for a whole pause
            last = body  # someone wrote meanwhile, keeping ours: wait until it is quiet
            continue
        # Overwritten by a stale write: put back what it took (sections only we still know
        # of first, then ours, which the write merges with everything now there).
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


def _mine(client: GitHubClient, repo: str, number: int, author: str) -> list[Comment]:
    """``author``'s sticky comments on ``number``, oldest first (others' are never read)."""
    found = [
        c
        for c in client.list_comments(repo, number)
        if c.author == author and sticky.is_sticky(c.body)
    ]
    return sorted(found, key=lambda c: (c.created_at, c.id))


def _write(
    client: GitHubClient,
    repo: str,
    number: int,
    key: str,
    section: str,
    author: str,
    settle: float,
    max_rounds: int,
) -> StickyResult:
    """One write of section ``key``: read, merge duplicates, write, re-read until it holds.

    The re-read waits ``settle`` seconds (jittered, 0.5-1x) so that a concurrent writer's stale
    write, already in flight, lands before we check; if it shows our section missing (a
    concurrent job overwrote it) or several comments, it goes round again, merging from what
    it just read (no extra request). Comment exists, no duplicates: list, write, list = 3.
    """
    current = _mine(client, repo, number, author)
    for round_ in range(1, max_rounds + 1):
        deleted: list[int] = []
        if not current:
            kept = client.create_comment(repo, number, sticky.replace_section(None, key, section))
            action: Literal["created", "updated", "unchanged"] = "created"
        else:
            kept, older = current[-1], current[:-1]
            merged = sticky.merge_sections(
                sticky.parse_sections(kept.body),
                *(sticky.parse_sections(c.body) for c in reversed(older)),
            )
            desired = sticky.replace_section(sticky.build_body(merged), key, section)
            if desired == kept.body and not older:
                return StickyResult(kept, "unchanged", round_, ())
            action = "unchanged"
            if desired != kept.body:
                kept = client.update_comment(repo, kept.id, desired)
                action = "updated"
            # Delete duplicates only after their sections live in the kept comment.
            for dup in older:
                client.delete_comment(repo, dup.id)
                deleted.append(dup.id)
        if settle:
            time.sleep(random.uniform(settle / 2, settle))
        current = _mine(client, repo, number, author)
        if len(current) == 1 and sticky.has_section(current[0].body, key, section):
            return StickyResult(current[0], action, round_, tuple(deleted))
    raise StickyCommentConflict(
        f"the sticky comment on {repo}#{number} kept changing under section {key!r} for "
        f"{max_rounds} rounds; serialise publishers with a per-PR workflow `concurrency` group",
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
