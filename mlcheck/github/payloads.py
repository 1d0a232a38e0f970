"""What GitHub's REST API and event payloads describe, reduced to what mlcheck uses: frozen
values parsed from the JSON (untrusted input: only the fields named here are read).

>>> parse_pull_request({"number": 7, "head": {"sha": "a", "ref": "f", "repo": None},
...     "base": {"sha": "b", "ref": "main", "repo": {"full_name": "o/r"}}}).is_fork
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PullRequest:
    """A PR as an event payload or the REST API describes it (the same shape)."""

    number: int
    head_sha: str
    head_ref: str
    head_repo: str | None  # None when the fork was deleted
    base_ref: str
    base_sha: str
    base_repo: str
    author: str
    state: str = "open"
    html_url: str = ""

    @property
    def is_fork(self) -> bool:
        """From another repository: ``pull_request`` runs get a read-only token, no secrets."""
        return self.head_repo != self.base_repo


def parse_pull_request(raw: Mapping[str, Any], repository: str = "") -> PullRequest:
    """A PR from an event payload's ``pull_request`` or a REST API answer."""
    head, base = raw["head"], raw["base"]
    head_repo = head.get("repo")
    return PullRequest(
        number=int(raw["number"]),
        head_sha=head["sha"],
        head_ref=head["ref"],
        head_repo=head_repo["full_name"] if head_repo else None,
        base_ref=base["ref"],
        base_sha=base["sha"],
        base_repo=(base.get("repo") or {}).get("full_name", repository),
        author=(raw.get("user") or {}).get("login", ""),
        state=raw.get("state") or "open",
        html_url=raw.get("html_url") or "",
    )


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    author: str
    created_at: str
    html_url: str


@dataclass(frozen=True)
class Issue:
    number: int
    title: str
    body: str
    state: str
    author: str
    labels: tuple[str, ...]
    html_url: str


@dataclass(frozen=True)
class Repository:
    full_name: str
    default_branch: str
    private: bool
    html_url: str


@dataclass(frozen=True)
class Permission:
    user: str
    permission: str  # admin, write, read, none (maintain shows as write, triage as read)
    role_name: str  # admin, maintain, write, triage, read, or a custom role

    @property
    def can_write(self) -> bool:
        """Write, maintain or admin (custom roles inherit their base permission)."""
        return self.permission in ("admin", "write") or self.role_name in ("maintain", "write")


def parse_comment(raw: Mapping[str, Any]) -> Comment:
    return Comment(
        id=raw["id"],
        body=raw.get("body") or "",
        author=(raw.get("user") or {}).get("login", ""),
        created_at=raw["created_at"],
        html_url=raw["html_url"],
    )


def parse_issue(raw: Mapping[str, Any]) -> Issue:
    labels = tuple(lab if isinstance(lab, str) else lab["name"] for lab in raw.get("labels", []))
    return Issue(
        number=raw["number"],
        title=raw["title"],
        body=raw.get("body") or "",
        state=raw["state"],
        author=(raw.get("user") or {}).get("login", ""),
        labels=labels,
        html_url=raw["html_url"],
    )
