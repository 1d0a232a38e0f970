"""The in-memory resources behind the API: the repository, its issues, pull requests,
comments, labels, collaborators, workflow dispatches, workflow runs and their artifacts, and
who each token belongs to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .spec import EPOCH, iso

ACTIONS_BOT = "github-actions[bot]"


@dataclass
class Identity:
    """Who a token belongs to and what it may write (``pull_requests``, ``issues``, ``actions``)."""

    login: str
    app: bool = True  # an installation token (GITHUB_TOKEN): GET /user is refused
    write: frozenset[str] = frozenset({"pull_requests", "issues", "actions"})


@dataclass
class State:
    owner: str = "octo"
    name: str = "proj"
    default_branch: str = "main"
    private: bool = False
    branches: set[str] = field(default_factory=lambda: {"main"})
    # workflow file -> declared workflow_dispatch inputs
    workflows: dict[str, set[str]] = field(
        default_factory=lambda: {"mlcheck-gpu.yml": {"sha", "pr", "tier"}}
    )
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> role_name
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)  # PRs too (shared numbers)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    removed_labels: list[tuple[int, str]] = field(default_factory=list)
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # workflow runs by id
    artifacts: dict[int, dict[str, Any]] = field(default_factory=dict)  # by id, with the zip
    downloads: list[dict[str, Any]] = field(default_factory=list)  # signed URLs fetched
    next_number: int = 1
    next_id: int = 1000
    ticks: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def now(self) -> str:
        """A clock that moves one second per write, so creation order is visible."""
        self.ticks += 1
        return iso(EPOCH + timedelta(seconds=self.ticks))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def add_issue(
        self, title: str = "Issue", body: str = "", user: str = "alice", **kw: Any
    ) -> int:
        number = self.next_number
        self.next_number += 1
        now = self.now()
        self.issues[number] = {
            "id": self.new_id(),
            "number": number,
            "title": title,
            "body": body,
            "user": user,
            "state": "open",
            "labels": list(kw.pop("labels", [])),
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "is_pr": False,
            **kw,
        }
        return number

    def add_pull(
        self,
        *,
        head_sha: str = "a" * 40,
        head_ref: str = "feature",
        head_repo: str | None = None,
        base_sha: str = "b" * 40,
        user: str = "alice",
        labels: Iterable[str] = (),
        state: str = "open",
    ) -> int:
        number = self.add_issue(title=f"PR from {user}", user=user, labels=list(labels))
        self.issues[number]["is_pr"] = True
        self.issues[number]["state"] = state
        self.pulls[number] = {
            "head_sha": head_sha,
            "head_ref": head_ref,
            "head_repo": head_repo or self.full_name,
            "base_sha": base_sha,
        }
        return number

    def add_comment(self, number: int, body: str, user: str) -> int:
        now = self.now()
        comment_id = self.new_id()
        self.comments[comment_id] = {
            "id": comment_id,
            "issue": number,
            "body": body,
            "user": user,
            "created_at": now,
            "updated_at": now,
        }
        return comment_id

    def add_run(
        self,
        workflow: str = "mlcheck-nightly.yml",
        *,
        head_sha: str = "c" * 40,
        conclusion: str | None = "success",
        branch: str | None = None,
        event: str = "schedule",
        head_repo: str | None = None,
    ) -> int:
        """A completed run of ``workflow`` (``conclusion`` None: still in progress); newer
        runs get larger ids and later times, like GitHub's."""
        self.workflows.setdefault(workflow, set())
        run_id = self.new_id()
        self.runs[run_id] = {
            "id": run_id,
            "workflow": workflow,
            "run_number": len(self.runs) + 1,
            "head_sha": head_sha,
            "head_branch": branch or self.default_branch,
            "head_repo": head_repo or self.full_name,
            "event": event,
            "status": "completed" if conclusion else "in_progress",
            "conclusion": conclusion,
            "created_at": self.now(),
        }
        return run_id

    def add_artifact(self, run_id: int, name: str, data: bytes, *, expired: bool = False) -> int:
        """Artifact ``name`` of run ``run_id``, whose zip is ``data``."""
        artifact_id = self.new_id()
        self.artifacts[artifact_id] = {
            "id": artifact_id,
            "run": run_id,
            "name": name,
            "zip": data,
            "expired": expired,
            "created_at": self.now(),
        }
        return artifact_id

    def comments_on(self, number: int) -> list[dict[str, Any]]:
        return sorted(
            (c for c in self.comments.values() if c["issue"] == number), key=lambda c: c["id"]
        )
