"""How a publish is configured and what it hands back: options, counts, outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..errors import GitHubError, ResultsError, UsageError
from ..redact import Redactor
from ..report import COMMENT_BUDGET, Annotation, RenderContext, messages, sticky
from ..results.digest import Digest
from ..results.merge import merge_sections
from ..results.schema import Outcome, RunResults
from ..tiers import DEFAULT_GPU_LABEL, section_key, tier_key

if TYPE_CHECKING:
    from ..github import GitHubClient
    from ..github.event import Event

SECTION_BUDGET = COMMENT_BUDGET // 2  # a PR comment holds a fast and a GPU section

TRACKING_TITLE = messages.TRACKING_TITLE
# Seconds the sticky loop waits before re-reading, so that a concurrent stale write in flight
# lands first (README: "Comment writes are serialised"): the CLI's --settle default.
SETTLE = 1.0
# When the PR comment is posted (the CLI's --comment, the action's `comment` input).
CommentMode = Literal["always", "on-failure", "off"]
COMMENT_MODES: tuple[CommentMode, ...] = get_args(CommentMode)
EXIT_OK = 0
EXIT_TESTS_FAILED = 1  # only with fail_on="failures"
EXIT_REPORTING_FAILED = 3


def force_section(results: Sequence[RunResults], key: str) -> dict[str, RunResults]:
    """Every test in one section ``key``, the one the trusted side ran or was told.

    Results that claim another section (their run's tiers, or a test's section tag) are
    refused (:class:`~mlcheck.errors.ResultsError`), never re-labelled: results written by PR
    code do not pick the section they land in, and a forged claim is said, not hidden.
    """
    check_section_key(key)
    check_claims(results, key)
    return merge_sections(results, section=key)


def check_section_key(key: str) -> None:
    """A bad section key (``--section``) is a usage error."""
    try:
        sticky.check_key(key)
    except ValueError as exc:
        raise UsageError(f"--section: {exc}") from None


def check_claims(results: Sequence[RunResults], key: str) -> None:
    """Refuse results that claim a section other than ``key`` (see :func:`force_section`)."""
    for r in results:
        own = section_key(r.run.tiers)
        claims = {t.run or own for t in r.tests} or {own}
        other = sorted(claims - {key})
        if other:
            raise ResultsError(
                f"the results claim the section {', '.join(map(repr, other))}, but this run "
                f"publishes under {key!r} (the tier it ran): refused. Results of another tier "
                "come from the job that ran that tier; `mlcheck run --tier` writes matching ones"
            )


# ---------------------------------------------------------------------------------------------
# What a publish does


@dataclass(frozen=True)
class Counts:
    passed: int = 0  # flaky tests passed in the end: counted here too
    failed: int = 0
    errors: int = 0
    not_run: int = 0
    selected: int = 0  # tests in the selected tiers; 0 is an empty selection, not a green run
    new_failures: int = 0


def counts(
    sections: Mapping[str, RunResults], base: Mapping[str, Digest] | RenderContext
) -> Counts:
    """The action outputs' numbers; ``new_failures`` counts failures classified as new, against
    ``base`` (digests), or as a context's :meth:`~RenderContext.with_base` classified them."""
    ctx = base if isinstance(base, RenderContext) else RenderContext().with_base(base, sections)
    total: dict[str, int] = {}
    new = selected = 0
    for key, r in sections.items():
        selected += sum(t.outcome is not Outcome.NOT_RUN for t in r.tests)
        for outcome, n in r.counts().items():
            total[outcome] = total.get(outcome, 0) + n
        new += len(ctx.classification(key, r).new)
    return Counts(
        passed=total.get(Outcome.PASSED.value, 0) + total.get(Outcome.FLAKY.value, 0),
        failed=total.get(Outcome.FAILED.value, 0),
        errors=total.get(Outcome.ERROR.value, 0),
        not_run=total.get(Outcome.NOT_RUN.value, 0),
        selected=selected,
        new_failures=new,
    )


@dataclass(frozen=True)
class PublishOptions:
    """How to publish; the CLI (and the action) build it from their inputs."""

    comment: CommentMode = "always"
    title: str = "mlcheck"
    section: str | None = None  # force every result into this section key
    base_digest: Path | None = None  # a digest file instead of the tracking issue
    author: str | None = None  # who the sticky comment/issue is by (default: from the token)
    artifact_name: str | None = "mlcheck-results"
    budget: int = SECTION_BUDGET
    settle: float = SETTLE  # the sticky loop's re-read delay (publish.comment.update_section)
    gpu_label: str = DEFAULT_GPU_LABEL
    tracking_title: str = TRACKING_TITLE
    path_prefix: str = ""  # the project's folder inside the repository, for links


@dataclass(frozen=True)
class PublishResult:
    """What a publish did, for the log and the action outputs."""

    counts: Counts
    sections: tuple[str, ...]
    verdict: int  # the tests' verdict: 0 all selected passed, 1 a failure or error
    comment_url: str | None = None
    issue_url: str | None = None
    notes: tuple[str, ...] = ()  # what was skipped and why (not failures)
    problems: tuple[str, ...] = ()  # reporting failures: each makes the exit code 3
    summary: str = ""  # the job summary (Markdown)
    annotations: tuple[Annotation, ...] = ()  # printed by github.workflow

    def exit_code(self, fail_on: Literal["failures", "never"] = "never") -> int:
        """0 published; 1 tests failed (``fail_on="failures"``); 3 reporting failed.

        A failing verdict wins over a reporting failure: the problem is printed either way,
        and nothing a publish does can turn a red run green.
        """
        if fail_on == "failures" and self.verdict:
            return EXIT_TESTS_FAILED
        return EXIT_REPORTING_FAILED if self.problems else EXIT_OK

    def outputs(self) -> dict[str, str]:
        """The action outputs (``GITHUB_OUTPUT`` names)."""
        return {
            "passed": str(self.counts.passed),
            "failed": str(self.counts.failed),
            "errors": str(self.counts.errors),
            "not-run": str(self.counts.not_run),
            "selected": str(self.counts.selected),
            "new-failures": str(self.counts.new_failures),
            "comment-url": self.comment_url or "",
            "issue-url": self.issue_url or "",
        }


def known_section(event: Event) -> str | None:
    """The section the publisher knows results belong to, whatever the results claim."""
    if event.name == "workflow_dispatch" and event.pr_number is not None:
        return tier_key(event.auto_tier)  # the scheduler's `tier` input
    if event.name == "workflow_run":
        return "fast"  # pull_request runs use `tier: auto` = fast; --section says otherwise
    return None


def resolve_author(client: GitHubClient, token: str | None, author: str | None = None) -> str:
    """Who comments made with this token are by, without a request where the token says so.

    Installation tokens (``ghs_``: a workflow's ``GITHUB_TOKEN``) comment as
    ``github-actions[bot]``; for other tokens ``GET /user`` tells (once per client).
    """
    from ..github import ACTIONS_BOT

    if author:
        return author
    if token and token.startswith("ghs_"):
        return ACTIONS_BOT
    return client.viewer_login()


class Recorder:
    """Collects notes and reporting failures; GitHub errors become problems, never raises."""

    def __init__(self, redactor: Redactor) -> None:
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.redactor = redactor

    def note(self, text: str) -> None:
        self.notes.append(self.redactor.redact(text))

    def attempt(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except GitHubError as exc:
            self.problems.append(self.redactor.redact(f"{what} failed: {exc}"))
            return None


code = messages.code  # the one definition is where the sentences are
