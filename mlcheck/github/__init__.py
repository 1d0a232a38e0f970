"""Everything that talks to GitHub or reads what GitHub hands a workflow run.

- :mod:`~mlcheck.github.client` — the one HTTP client (retries, rate limits, redaction) and
  the sticky-comment update loop; the only module that imports the HTTP library;
- :mod:`~mlcheck.github.payloads` — frozen values for what the API returns (PRs, comments,
  issues, permissions);
- :mod:`~mlcheck.github.event` — the run's event, parsed once from the Actions environment
  (what ``command: auto`` and ``tier: auto`` become).

The rest of mlcheck receives a :class:`GitHubClient` and an :class:`~mlcheck.github.event.Event`
and never builds requests itself.
"""

from .client import (
    ACTIONS_BOT,
    API_VERSION,
    PERM_ACTIONS,
    PERM_ISSUES,
    PERM_PULL_REQUESTS,
    GitHubClient,
    StickyResult,
    update_sticky_section,
)
from .payloads import Comment, Issue, Permission, PullRequest, Repository

__all__ = [
    "ACTIONS_BOT",
    "API_VERSION",
    "PERM_ACTIONS",
    "PERM_ISSUES",
    "PERM_PULL_REQUESTS",
    "Comment",
    "GitHubClient",
    "Issue",
    "Permission",
    "PullRequest",
    "Repository",
    "StickyResult",
    "update_sticky_section",
]
