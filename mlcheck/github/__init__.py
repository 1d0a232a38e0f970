"""Everything that talks to GitHub or reads what GitHub hands a workflow run.

- :mod:`~mlcheck.github.client` — the one HTTP client (retries, rate limits, redaction); the
  only module that imports the HTTP library;
- :mod:`~mlcheck.github.payloads` — frozen values for what the API returns (PRs, comments,
  issues, permissions);
- :mod:`~mlcheck.github.event` — the run's event, parsed once from the Actions environment
  (what ``command: auto`` and ``tier: auto`` become);
- :mod:`~mlcheck.github.workflow` — what a step hands back to the workflow (outputs, job
  summary, workflow commands);
- :mod:`~mlcheck.github.artifacts` — another run's artifact (the last good nightly's file map
  and results), found, downloaded and read safely.

Nothing here imports :mod:`mlcheck.report` or :mod:`mlcheck.publish`: what the comment says
and how its sections are kept is theirs (the sticky loop is
:func:`mlcheck.publish.comment.update_section`).

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
]
