"""The recorded event payloads (``tests/data/events``) and the repository they describe: PR #17
of octo-org/ml-app from branch ``swap-head`` at ``HEAD``, based on the default branch at ``MAIN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .server import GitHubServer

EVENTS = Path(__file__).parents[1] / "data" / "events"
REPO = "octo-org/ml-app"
HEAD = "6dcb09b5b57875f334f61aebed695e2e4193db5e"  # the PR head in the payloads
MAIN = "9049f1265b7d61be4a8904a9a27120d2064dab3b"  # its base: the default branch's head
PR = 17


def payload_repo(gh: GitHubServer, **pull: Any) -> GitHubServer:
    """``gh`` serving the payloads' repository with their PR; ``pull`` changes the PR (a fork's
    ``head_repo``, ``labels``)."""
    gh.state.owner, gh.state.name = REPO.split("/")
    gh.state.next_number = PR
    number = gh.state.add_pull(
        **{"head_sha": HEAD, "head_ref": "swap-head", "base_sha": MAIN, **pull}
    )
    assert number == PR
    return gh
