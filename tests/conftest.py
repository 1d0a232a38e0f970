"""Shared fixtures for mlcheck's own tests.

torch is imported here, once, before any in-process pytester run: pytester removes modules
that an inner run imported, and importing torch a second time in one process crashes it.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import torch  # noqa: F401
from _pytest.pytester import SysModulesSnapshot

# pytester's in-process runs remove afterwards every module the inner run imported. For installed
# libraries that is fatal: transformers imports torch's submodules and optional integrations
# (torch.distributed.tensor, kernels) lazily, torch's operators register once per process, and
# after the removal the next import fails ("Only a single TORCH_LIBRARY ...") or two copies of
# one enum meet, in whichever later test of the worker needs them. pytester has no option for
# this (it preserves only zope and readline), so its restore keeps what came from an installed
# library or the standard library and still drops the inner run's own modules.
_RUNTIME = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sys.base_prefix)
_restore = SysModulesSnapshot.restore


def _restore_keeping_libraries(self: SysModulesSnapshot) -> None:
    loaded = {
        name: module
        for name, module in sys.modules.items()
        if str(getattr(module, "__file__", None) or "").startswith(_RUNTIME)
    }
    _restore(self)
    sys.modules.update(loaded)


SysModulesSnapshot.restore = _restore_keeping_libraries  # type: ignore[method-assign]

if TYPE_CHECKING:
    from github_server import GitHubServer


@pytest.fixture
def gh() -> Iterator[GitHubServer]:
    """The local GitHub API server (tests/github_server/); fails the test on spec breaks."""
    from github_server import GitHubServer

    with GitHubServer() as server:
        yield server
        server.assert_clean()


@pytest.fixture
def pull() -> dict[str, Any]:
    """How the payloads' PR differs from a same-repository PR; a test module overrides it."""
    return {}


@pytest.fixture
def server(gh: GitHubServer, pull: dict[str, Any]) -> GitHubServer:
    """``gh`` serving the recorded payloads' repository with their PR #17 (``payloads.py``)."""
    from github_server.payloads import payload_repo

    return payload_repo(gh, **pull)


@pytest.fixture
def no_github_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GitHub Actions variables, action inputs, token or results folder from the machine that
    runs the tests (a CI runner sets them): each test sets the ones it means."""
    for key in list(os.environ):
        if key.startswith(("GITHUB_", "INPUT_")) or key in ("GH_TOKEN", "MLCHECK_RESULTS_DIR"):
            monkeypatch.delenv(key)
    return monkeypatch
