"""Posting a ``mutation.json`` (``mlcheck publish --mutation``, the action's ``command: mutate``).

The mutation run executed the project's code (in the action: the PR-code sandbox, no token),
so its ``mutation.json`` is **untrusted data**: it is read without following links or waiting
on a FIFO and under a size cap (:func:`~mlcheck.results.untrusted_files.read_beneath`),
checked against
``mlcheck/schema/mutation.schema.json``, and the Markdown section is rendered again here from
the parsed report (:func:`mlcheck.power.report.markdown`, which escapes every string from the
tests, then the redactor). A ``mutation.md`` beside it is never read.

Where the section goes, by event: a PR (``pull_request``, a dispatch with a ``pr`` input, a
push to a PR branch) gets a ``mutation`` section in the sticky comment; the nightly
(``schedule``) a ``mutation`` section in the tracking issue, whose title, state and other
sections stay the nightly publish's; anything else (a manual dispatch without a PR) only the
job summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import GitHubError, ResultsError
from ..errors import NotPlainFile as _NotPlainFile
from ..redact import NO_SECRETS, Redactor
from ..results.untrusted_files import read_beneath
from . import report as power_report

if TYPE_CHECKING:
    from ..github import GitHubClient
    from ..github.event import Event

MUTATION_SECTION = "mutation"  # the key of the section in the PR comment and the tracking issue
MAX_MUTATION_BYTES = 5 * 1024 * 1024  # a dozen mutants with their killers: a few kB


@cache
def _validator() -> Any:
    import jsonschema_rs

    text = resources.files("mlcheck").joinpath("schema/mutation.schema.json").read_text("utf-8")
    return jsonschema_rs.Draft202012Validator(json.loads(text))


def load_untrusted_mutation(folder: Path) -> power_report.MutationReport:
    """The report in ``folder/mutation.json``, read as untrusted data; :class:`ResultsError`
    (exit 2) says what is wrong with it."""
    path = folder / power_report.MUTATION_FILE
    try:
        raw = read_beneath(
            folder, power_report.MUTATION_FILE, MAX_MUTATION_BYTES, follow_root=False
        )
    except FileNotFoundError:
        raise ResultsError(f"no mutation report at {path}: `mlcheck mutate` wrote none") from None
    except _NotPlainFile as exc:  # links, FIFOs, devices, over the cap (TooLarge)
        raise ResultsError(f"{exc}; the mutation report must be a plain file") from None
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ResultsError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
    try:
        error = next(iter(_validator().iter_errors(data)), None)
    except (ValueError, OverflowError) as exc:  # e.g. an integer beyond 64 bits
        raise ResultsError(f"{path} cannot be checked against the schema: {exc}") from None
    if error is not None:
        where = "/".join(str(p) for p in error.instance_path) or "(top level)"
        raise ResultsError(
            f"{path} does not match the mutation schema at {where}: {error.message[:300]}"
        )
    try:
        return power_report.from_dict(data)
    except ValueError as exc:
        raise ResultsError(f"{path}: {exc}") from None


@dataclass
class MutationPublished:
    """What :func:`publish_mutation` did."""

    section: str  # the Markdown it rendered (job summary, comment or issue section)
    comment_url: str | None = None
    issue_url: str | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # GitHub failures: exit 3


def render_section(
    report: power_report.MutationReport, event: Event, redactor: Redactor = NO_SECRETS
) -> str:
    """The section, rendered from the parsed report (never from a ``mutation.md``)."""
    text = power_report.markdown(report)
    if event.run_url:
        text += f"\n[the run]({event.run_url})\n"
    return redactor.redact(text)


def publish_mutation(
    report: power_report.MutationReport,
    event: Event,
    client: GitHubClient | None,
    *,
    comment: str = "always",
    author: str | None = None,
    settle: float = 1.0,
    redactor: Redactor = NO_SECRETS,
    token: str | None = None,
) -> MutationPublished:
    """Post the section where the event says (module docstring); GitHub failures are
    collected in ``problems``, never raised."""
    from ..publish.comment import update_section
    from ..publish.options import resolve_author

    done = MutationPublished(render_section(report, event, redactor))
    if client is None:
        done.notes.append(
            "no github-token: the mutation report is in the job summary only"
            if event.name != "local"
            else "not running in GitHub Actions: nothing posted"
        )
        return done
    if comment == "off":
        done.notes.append("comment: off: the mutation report is in the job summary only")
        return done
    try:
        login = resolve_author(client, token, author)
        if event.name == "schedule":
            done.issue_url = _tracking_section(client, event.repository, login, done.section)
            return done
        pr = _pr(event, client)
        if pr is None:
            done.notes.append(f"no PR for this {event.name} event: job summary only")
        elif event.read_only_token:
            done.notes.append("read-only token (fork PR): the mutation report was not posted")
        else:
            written = update_section(
                client, event.repository, pr, MUTATION_SECTION, done.section,
                author=login, settle=settle,
            )  # fmt: skip
            done.comment_url = written.comment.html_url
    except GitHubError as exc:
        done.problems.append(redactor.redact(f"posting the mutation report failed: {exc}"))
    return done


def _pr(event: Event, client: GitHubClient) -> int | None:
    from ..github.event import find_pr_number

    if event.name in ("pull_request", "workflow_dispatch") or event.pr_number is not None:
        return event.pr_number
    if event.name == "push":
        return find_pr_number(event, client)
    return None


def _tracking_section(client: GitHubClient, repo: str, author: str, section: str) -> str | None:
    """Set the ``mutation`` section of the tracking issue, keeping everything else (title,
    state, the nightly report, the base digests); creates the issue (closed: only the nightly
    opens it) when there is none yet. Its URL."""
    from ..publish.options import PublishOptions
    from ..publish.tracking import (
        ABOUT_KEY,
        _upsert_tracking,
        find_tracking_issue,
        issue_body,
        issue_sections,
    )
    from ..report import messages

    issue = find_tracking_issue(client, repo, author)
    sections = issue_sections(issue.body if issue else None)
    sections.setdefault(ABOUT_KEY, messages.TRACKING_ABOUT)
    sections[MUTATION_SECTION] = section
    title = issue.title if issue else PublishOptions().tracking_title
    state: Literal["open", "closed"] = "open" if issue and issue.state == "open" else "closed"
    return _upsert_tracking(client, repo, issue, title, issue_body(sections), state).html_url
