"""The GitHub Actions event, parsed once into a frozen :class:`Event`.

Everything mlcheck needs to know about why it runs comes from here: the event name and
payload (``GITHUB_EVENT_NAME``, ``GITHUB_EVENT_PATH``) and the run's context variables. The
rest of the package receives an :class:`Event` and never reads the environment itself.

What ``command: auto`` and ``tier: auto`` resolve to (also in the README):

=========================================  ==============  ===========================
event                                      command         tier
=========================================  ==============  ===========================
``push``, ``pull_request``, ``merge_group``  ``run``         ``fast``
``workflow_dispatch``                      ``run``         input ``tier``, else ``real,gpu``
``schedule``                               ``run``         ``all``
``pull_request_target``                    ``schedule``    ``real,gpu`` (what it dispatches)
``workflow_run``                           ``publish``     (from the results it publishes)
not in GitHub Actions                      ``run``         ``fast``
=========================================  ==============  ===========================

>>> event = parse_event("schedule", {"schedule": "0 3 * * *"}, {"GITHUB_REPOSITORY": "o/r"})
>>> event.auto_command, event.auto_tier
('run', 'all')
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mlcheck import constants as C
from mlcheck.errors import UsageError
from mlcheck.github.payloads import PullRequest, parse_pull_request
from mlcheck.text import OBJECT_ID_RE
from mlcheck.tiers import SCHEDULED_TIERS, Tier, parse_tiers

if TYPE_CHECKING:
    from mlcheck.github.client import GitHubClient

RUN, SCHEDULE, PUBLISH = "run", "schedule", "publish"
TIER_FAST, TIER_ALL = Tier.FAST.value, "all"
_RUN_EVENTS = ("push", "pull_request", "merge_group")


@dataclass(frozen=True)
class WorkflowRunInfo:
    """The run a ``workflow_run`` event reports on (its results are untrusted data)."""

    id: int
    name: str
    event: str
    conclusion: str | None
    head_sha: str
    head_branch: str | None
    head_repo: str | None
    pr_numbers: tuple[int, ...]  # empty for fork PRs: GitHub omits them there
    html_url: str


@dataclass(frozen=True)
class Event:
    """Why this run happens, and against what. Build it with :func:`load_event`."""

    name: str  # GITHUB_EVENT_NAME; "local" outside GitHub Actions
    repository: str  # OWNER/NAME
    sha: str  # GITHUB_SHA (for pull_request: the test merge commit)
    ref: str
    action: str | None = None  # payload "action" (opened, labeled, completed...)
    server_url: str = C.DEFAULT_GITHUB_SERVER_URL
    api_url: str = C.DEFAULT_GITHUB_API_URL
    run_id: str | None = None
    run_attempt: str | None = None
    workflow: str | None = None
    actor: str | None = None
    sender: str | None = None  # who triggered it (the labeler for pull_request_target)
    default_branch: str | None = None
    pull_request: PullRequest | None = None
    label: str | None = None  # the label added (pull_request_target labeled)
    inputs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    workflow_run: WorkflowRunInfo | None = None

    # -- what to test and where to report ------------------------------------------------------

    @property
    def head_sha(self) -> str:
        """The commit results are about: PR head, dispatched ``sha``, or the pushed commit."""
        if self.name == "workflow_dispatch" and self.inputs.get("sha"):
            return self.inputs["sha"]
        if self.pull_request is not None:
            return self.pull_request.head_sha
        if self.workflow_run is not None:
            return self.workflow_run.head_sha
        return self.sha

    @property
    def pr_number(self) -> int | None:
        """The PR from the payload or the ``pr`` input; for pushes see :func:`find_pr_number`."""
        if self.pull_request is not None:
            return self.pull_request.number
        if self.name == "workflow_dispatch" and self.inputs.get("pr"):
            return int(self.inputs["pr"])
        if self.workflow_run is not None and len(self.workflow_run.pr_numbers) == 1:
            return self.workflow_run.pr_numbers[0]
        return None

    @property
    def is_fork(self) -> bool:
        return self.pull_request is not None and self.pull_request.is_fork

    @property
    def read_only_token(self) -> bool:
        """Whether GitHub gives this run a read-only token whatever the workflow asks for.

        ``pull_request`` from forks, and Dependabot's PRs, run with read-only tokens and no
        secrets: such runs write the job summary and results, and ``publish`` posts later.
        """
        if self.name != "pull_request":
            return False
        return self.is_fork or self.actor == "dependabot[bot]"

    @property
    def run_url(self) -> str | None:
        if not self.run_id:
            return None
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"

    @property
    def auto_command(self) -> str:
        """What ``command: auto`` does on this event (see the module table)."""
        if self.name == "pull_request_target":
            return SCHEDULE
        if self.name == "workflow_run":
            return PUBLISH
        if self.name in (*_RUN_EVENTS, "workflow_dispatch", "schedule", "local"):
            return RUN
        raise UsageError(
            f"`command: auto` does not know what to do on `{self.name}` events; "
            "set `command:` to run, schedule or publish"
        )

    @property
    def auto_tier(self) -> str:
        """What ``tier: auto`` selects on this event (see the module table)."""
        if self.name == "workflow_dispatch":
            tier = self.inputs.get("tier", "")
            return tier if tier and tier != "auto" else SCHEDULED_TIERS
        if self.name == "schedule":
            return TIER_ALL
        if self.name == "pull_request_target":
            return SCHEDULED_TIERS
        return TIER_FAST


# --- parsing


def load_event(environ: Mapping[str, str] | None = None) -> Event:
    """The event of this run, from the environment (``os.environ`` by default).

    Outside GitHub Actions (no ``GITHUB_EVENT_NAME``) it is a ``local`` event.
    """
    env = os.environ if environ is None else environ
    name = env.get(C.ENV_GITHUB_EVENT_NAME)
    if not name:
        return parse_event("local", {}, env)
    path = env.get(C.ENV_GITHUB_EVENT_PATH)
    payload: dict[str, Any] = {}
    if path:
        payload = _read_payload(Path(path))
    return parse_event(name, payload, env)


# GitHub caps webhook payloads at 25 MB; nothing larger is an event.
MAX_EVENT_BYTES = 25 * 1024 * 1024


def read_event_bytes(path: Path) -> bytes:
    """The event payload's bytes, read as untrusted data: the runner's copy sits in a folder
    the project's uid owns, so an earlier step's PR code may have swapped it for a link, a
    FIFO or a device. Never followed, never blocked on, never read past the cap."""
    from ..results.untrusted_files import read_beneath

    try:
        return read_beneath(path.parent, path.name, MAX_EVENT_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read the event payload {path} ({exc})") from None


def _read_payload(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(read_event_bytes(path).decode("utf-8"))
    except ValueError as exc:
        raise UsageError(f"cannot read the event payload {path} ({exc})") from None
    if not isinstance(payload, dict):
        raise UsageError(f"cannot read the event payload {path} (not a JSON object)")
    return payload


def parse_event(name: str, payload: Mapping[str, Any], environ: Mapping[str, str]) -> Event:
    """Build an :class:`Event` from an event name, its payload and the context variables."""
    repo_payload = payload.get("repository") or {}
    repository = environ.get(C.ENV_GITHUB_REPOSITORY) or repo_payload.get("full_name") or ""
    if name != "local" and not repository:
        raise UsageError("GITHUB_REPOSITORY is not set; is this running in GitHub Actions?")
    pull = payload.get("pull_request")
    label = (payload.get("label") or {}).get("name") if name.startswith("pull_request") else None
    return Event(
        name=name,
        repository=repository,
        sha=environ.get(C.ENV_GITHUB_SHA) or payload.get("after") or "",
        ref=environ.get(C.ENV_GITHUB_REF) or payload.get("ref") or "",
        action=payload.get("action"),
        server_url=(environ.get(C.ENV_GITHUB_SERVER_URL) or C.DEFAULT_GITHUB_SERVER_URL).rstrip(
            "/"
        ),
        api_url=(environ.get(C.ENV_GITHUB_API_URL) or C.DEFAULT_GITHUB_API_URL).rstrip("/"),
        run_id=environ.get(C.ENV_GITHUB_RUN_ID) or None,
        run_attempt=environ.get(C.ENV_GITHUB_RUN_ATTEMPT) or None,
        workflow=environ.get(C.ENV_GITHUB_WORKFLOW) or None,
        actor=environ.get(C.ENV_GITHUB_ACTOR) or None,
        sender=(payload.get("sender") or {}).get("login"),
        default_branch=repo_payload.get("default_branch"),
        pull_request=parse_pull_request(pull, repository) if pull else None,
        label=label,
        inputs=MappingProxyType(_inputs(payload) if name == "workflow_dispatch" else {}),
        workflow_run=_workflow_run(payload["workflow_run"])
        if payload.get("workflow_run")
        else None,
    )


def _inputs(payload: Mapping[str, Any]) -> dict[str, str]:
    """Dispatch inputs as strings, checked: they choose what runs against which commit."""
    raw = payload.get("inputs") or {}
    inputs = {str(k): "" if v is None else str(v).strip() for k, v in raw.items()}
    if (sha := inputs.get("sha")) and not OBJECT_ID_RE.fullmatch(sha):
        raise UsageError(f"workflow_dispatch input sha={sha!r} is not a full commit SHA")
    if (pr := inputs.get("pr")) and not pr.isdigit():
        raise UsageError(f"workflow_dispatch input pr={pr!r} is not a PR number")
    if (tier := inputs.get("tier")) and tier != "auto":
        parse_tiers(tier, source="workflow_dispatch input `tier`")  # the one tier parser
    return inputs


def _workflow_run(raw: Mapping[str, Any]) -> WorkflowRunInfo:
    head_repo = raw.get("head_repository")
    return WorkflowRunInfo(
        id=int(raw["id"]),
        name=raw.get("name", ""),
        event=raw.get("event", ""),
        conclusion=raw.get("conclusion"),
        head_sha=raw["head_sha"],
        head_branch=raw.get("head_branch"),
        head_repo=head_repo["full_name"] if head_repo else None,
        pr_numbers=tuple(int(p["number"]) for p in raw.get("pull_requests") or ()),
        html_url=raw.get("html_url", ""),
    )


def find_pr_number(event: Event, client: GitHubClient) -> int | None:
    """The PR this run reports to, asking GitHub when the payload does not say.

    A ``push`` reports to the open PR whose head is the pushed commit. A ``workflow_run`` from
    a fork has no PR list in its payload, and GitHub's commit-to-PR lookup does not see fork
    commits, so the PR is found by its head (``fork-owner:branch``) and must still be at the
    run's commit.
    """
    if (number := event.pr_number) is not None:
        return number
    run = event.workflow_run
    if run is not None and run.head_repo and run.head_repo != event.repository:
        if not run.head_branch:
            return None
        owner = run.head_repo.split("/")[0]
        pulls = client.pulls_for_head(event.repository, owner, run.head_branch)
        return next((p.number for p in pulls if p.head_sha == run.head_sha), None)
    if event.name not in ("push", "workflow_run") or not event.head_sha:
        return None
    pull = client.open_pull_for_commit(event.repository, event.head_sha)
    if pull is None or (run is not None and pull.head_sha != run.head_sha):
        return None  # no PR, or it moved on: its head is not the commit these results are about
    return pull.number
