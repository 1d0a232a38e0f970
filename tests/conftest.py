"""Shared fixtures for mlcheck's own tests.

torch is imported here, once, before any in-process pytester run: pytester removes modules
that an inner run imported, and importing torch a second time in one process crashes it.
"""

import pytest
import torch  # noqa: F401


@pytest.fixture
def gh():  # type: ignore[no-untyped-def]
    """The local GitHub API server (tests/github_server.py); fails the test on spec breaks."""
    from github_server import GitHubServer

    with GitHubServer() as server:
        yield server
        server.assert_clean()
