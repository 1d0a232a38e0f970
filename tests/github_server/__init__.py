"""A local GitHub REST API for tests, checked against GitHub's own OpenAPI description.

It serves the endpoints mlcheck calls (``tests/data/github-openapi-subset.json``, extracted by
``scripts/extract_github_openapi.py`` from ``@octokit/openapi``) from in-memory state on
127.0.0.1, with a thread per connection so several publishers can race. Every request is
validated (path parameters, query, JSON body) and refused like GitHub would (400/422) when it
does not match; every response body is validated too, and a mismatch is recorded in
``server.errors`` (the ``github`` fixture fails the test at teardown). Artifact downloads answer
302 to a signed URL under ``/_blobs/`` (off the REST paths, like GitHub's storage URLs); a
request there that carries the token is recorded in ``server.errors`` too.

Faults are injected per request, before or after the request takes effect: 5xx, 429 with
``retry-after``, secondary (403 + ``retry-after``) and primary (``x-ratelimit-remaining: 0``)
rate limits, slow answers and connection resets, from a scripted sequence or at a rate with a
fixed seed.

    with GitHubServer() as gh:
        gh.state.add_pull(5, head_sha="a" * 40)
        client = GitHubClient(gh.token, api_url=gh.url)
        ...
        assert gh.count("POST /repos/{owner}/{repo}/issues/{issue_number}/comments") == 1

The package's modules follow its seams: ``spec`` (the OpenAPI description and validation),
``state`` (the resources), ``faults`` (fault injection), ``routes`` (each operation's
behaviour), ``handler`` (one request's path through them) and ``server`` (``GitHubServer``).
"""

from .faults import TRANSIENT, Fault, Faults
from .handler import Logged
from .routes import ApiError
from .server import GitHubServer
from .spec import DOCS, SPEC_PATH, SUPPORTED_API_VERSIONS, Spec
from .state import ACTIONS_BOT, Identity, State

__all__ = [
    "ACTIONS_BOT",
    "DOCS",
    "SPEC_PATH",
    "SUPPORTED_API_VERSIONS",
    "TRANSIENT",
    "ApiError",
    "Fault",
    "Faults",
    "GitHubServer",
    "Identity",
    "Logged",
    "Spec",
    "State",
]
