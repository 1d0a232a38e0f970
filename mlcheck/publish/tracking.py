"""The tracking issue: the nightly report and the base digests PR runs compare with."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from ..errors import GitHubError, ResultsError
from ..report import COMMENT_BUDGET, RenderContext, messages, render_report, sticky
from ..results import digest as digest_mod
from ..results.digest import Digest
from ..results.schema import Outcome, RunResults, TestResult
from ..tiers import SCHEDULED_TIERS, TIER_NAMES

if TYPE_CHECKING:
    from ..github import GitHubClient, Issue
    from ..github.event import Event
from .options import PublishOptions, Recorder, counts

# --- where things go

TRACKING_MARKER = sticky.TRACKING_MARKER
TRACKING_LABELS = ("mlcheck",)
NIGHTLY_KEY = "nightly"  # the visible report in the tracking issue
BASE_KEY = "base"  # the hidden base digests in the tracking issue
ABOUT_KEY = "about"
# Base digests are written for these keys too when a run covers them (the nightly runs all
# tiers; PR runs compare with `fast`, dispatched GPU runs with `real,gpu`).
BASE_KEYS = (*TIER_NAMES, SCHEDULED_TIERS)
# each; a digest is only as long as it needs. 12k keeps every failure and every test that ran
# for ~5k tests (a sample of the ran set beyond that; bench/digest_size.py), and 4 keys still
# leave the nightly report in the tracking issue room under GitHub's 65,536 characters
BASE_DIGEST_CHARS = 12_000
_ABOUT = messages.TRACKING_ABOUT

# The tracking issue: nightly report and base digests


def find_tracking_issue(client: GitHubClient, repo: str, author: str) -> Issue | None:
    """The tracking issue (newest first), found by marker and author (one request, one page)."""
    for issue in client.list_issues(repo, state="all", creator=author):
        if issue.author == author and issue.body.lstrip().startswith(TRACKING_MARKER):
            return issue
    return None


def issue_sections(body: str | None) -> dict[str, str]:
    """The sections of a tracking issue body (``{}`` for anything else)."""
    if not body or not body.lstrip().startswith(TRACKING_MARKER):
        return {}
    return sticky.parse_sections(body.lstrip()[len(TRACKING_MARKER) :].lstrip("\n"))


def issue_body(sections: Mapping[str, str]) -> str:
    """A tracking issue body: the marker, then sticky-style sections (each within the limit)."""
    fitted: dict[str, str] = {}
    for key in (k for k in sections if k != NIGHTLY_KEY):
        fitted[key] = sticky.fit_section(fitted, key, sections[key])
    if NIGHTLY_KEY in sections:
        room = {**fitted, "marker-room": TRACKING_MARKER}  # the marker line counts too
        fitted[NIGHTLY_KEY] = sticky.fit_section(room, NIGHTLY_KEY, sections[NIGHTLY_KEY])
    return f"{TRACKING_MARKER}\n{sticky.build_body(fitted)}"


def _parse_digests(text: str, rec: Recorder, where: str) -> dict[str, Digest]:
    try:
        return digest_mod.parse(text)
    except ResultsError as exc:
        rec.note(f"{where} not used: {exc}")
        return {}


def read_base(
    client: GitHubClient, repo: str, author: str, rec: Recorder
) -> tuple[tuple[Issue | None] | None, dict[str, Digest]]:
    """The tracking issue (``(issue,)``, None if it could not be read) and its base digests."""
    try:
        issue = find_tracking_issue(client, repo, author)
    except GitHubError as exc:
        # No base only means "not compared": worth a note, not a failed publish.
        rec.note(f"base digest not read ({exc}); failures are not compared with the base")
        return None, {}
    if issue is None:
        rec.note("no base digest yet (the nightly or a push to the default branch writes it)")
        return (None,), {}
    digests = _parse_digests(issue_sections(issue.body).get(BASE_KEY, ""), rec, "base digest")
    return (issue,), digests


def base_digests(
    sections: Mapping[str, RunResults], sha: str | None, *, max_chars: int = BASE_DIGEST_CHARS
) -> dict[str, str]:
    """Digest lines, by key, that later runs of each tier compare with.

    A section covering several tiers (the nightly's ``fast,real,gpu``) also gives one digest
    per key in :data:`BASE_KEYS` that it covers, built as a run of only those tiers would have
    reported: the other tiers' tests counted as not run.
    """
    lines: dict[str, str] = {}
    for key, r in sections.items():
        lines[key] = digest_mod.encode(r.tests, section=key, sha=sha, max_chars=max_chars)
    for r in sections.values():
        tiers = set(r.run.tiers) | {t.tier for t in r.tests}
        for sub in BASE_KEYS:
            wanted = set(sub.split(","))
            if sub in lines or not wanted < tiers:
                continue
            tests = [t if t.tier in wanted else _not_run(t) for t in r.tests]
            lines[sub] = digest_mod.encode(tests, section=sub, sha=sha, max_chars=max_chars)
    return dict(sorted(lines.items()))


def _not_run(t: TestResult) -> TestResult:
    return replace(t, outcome=Outcome.NOT_RUN, attempts=(), traceback="")


_DIGEST_LINE = re.compile(r"<!-- mlcheck:digest v\d+ (\S+) [A-Za-z0-9+/=]* -->")


def _merge_base(old: str, new: Mapping[str, str]) -> str:
    """The base section with ``new`` digest lines replacing those of the same keys."""
    lines = {m.group(1): m.group(0) for m in _DIGEST_LINE.finditer(old)}
    lines.update(new)
    return "\n".join(lines[k] for k in sorted(lines))


def _upsert_tracking(
    client: GitHubClient,
    repo: str,
    issue: Issue | None,
    title: str,
    body: str,
    state: Literal["open", "closed"],
) -> Issue:
    if issue is None:
        created = client.create_issue(repo, title, body, TRACKING_LABELS)
        if state == "closed":
            created = client.update_issue(repo, created.number, state="closed")
        return created
    if (issue.title, issue.body, issue.state) == (title, body, state):
        return issue
    return client.update_issue(repo, issue.number, title=title, body=body, state=state)


def write_base(
    client: GitHubClient,
    event: Event,
    sections: Mapping[str, RunResults],
    author: str,
    options: PublishOptions,
    rec: Recorder,
    read: tuple[Issue | None] | None = None,
) -> str | None:
    """A push to the default branch: replace its tiers' base digests in the tracking issue.

    ``read`` is the issue as :func:`_read_base` found it moments ago (saves a request).
    """
    repo = event.repository

    def write() -> str:
        issue = read[0] if read is not None else find_tracking_issue(client, repo, author)
        old = issue_sections(issue.body if issue else None)
        new = base_digests(sections, event.head_sha or None)
        merged = {**old, BASE_KEY: _merge_base(old.get(BASE_KEY, ""), new)}
        merged.setdefault(ABOUT_KEY, _ABOUT)
        title = issue.title if issue else options.tracking_title
        # A push keeps the issue's state: only the nightly opens and closes it.
        state: Literal["open", "closed"] = "open" if issue and issue.state == "open" else "closed"
        return _upsert_tracking(client, repo, issue, title, issue_body(merged), state).html_url

    url: str | None = rec.attempt("writing the base digest to the tracking issue", write)
    return url


def nightly(
    client: GitHubClient,
    event: Event,
    sections: Mapping[str, RunResults],
    ctx: RenderContext,
    options: PublishOptions,
    author: str,
    rec: Recorder,
) -> tuple[str | None, RenderContext]:
    """Keep the tracking issue up to date; returns its URL and ``ctx`` comparing with the
    previous nightly's digests (each section classified once, for the summary too)."""
    repo = event.repository
    try:
        issue = find_tracking_issue(client, repo, author)
    except GitHubError as exc:
        rec.problems.append(rec.redactor.redact(f"finding the tracking issue failed: {exc}"))
        return None, ctx.with_base({}, sections)
    old = issue_sections(issue.body if issue else None)
    previous = _parse_digests(old.get(NIGHTLY_KEY, ""), rec, "previous nightly digest")
    sha = event.head_sha or None
    base = _merge_base(old.get(BASE_KEY, ""), base_digests(sections, sha))
    ctx = ctx.with_base(previous, sections)
    c = counts(sections, ctx)
    failing = c.failed + c.errors
    prev_sha = next((d.sha for d in previous.values() if d.sha), None)
    intro = messages.nightly_intro(sha, event.run_url, prev_sha, bool(previous), c.new_failures)
    budget = (
        COMMENT_BUDGET
        - len(base)
        - len(intro)
        - len(_ABOUT)
        - len(TRACKING_MARKER)
        - 400  # section markers
    )
    report = render_report(sections, ctx, budget=budget)
    body = issue_body(
        {**old, NIGHTLY_KEY: f"{intro}\n\n{report}", ABOUT_KEY: _ABOUT, BASE_KEY: base}
    )
    title = messages.tracking_title(options.tracking_title, failing, c.new_failures, bool(previous))
    state: Literal["open", "closed"] = "open" if failing else "closed"
    done = rec.attempt(
        "updating the tracking issue",
        lambda: _upsert_tracking(client, repo, issue, title, body, state),
    )
    return (done.html_url if done is not None else None), ctx


# ---------------------------------------------------------------------------------------------
# Writing outputs at the edge
