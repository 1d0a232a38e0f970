"""Hooks that attach what a test produced to its reports: its facts (for the process that
builds results, across xdist) and, under ``-v``, the hub lookup behind a missing model."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from ..results.failure_kinds import classify_exception
from ..stash import FACTS_KEY
from .session import MlcheckState


class FactsOnReports:
    """Attaches each test's facts to its reports, for the process that builds results."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        # A plain attribute travels with the report from xdist workers to the controller.
        facts = item.stash.get(FACTS_KEY, {})
        if report.failed and call.excinfo is not None and "failure_kind" not in facts:
            # the live exception (its cause and context chain) is only here, on the worker
            state = item.config.pluginmanager.get_plugin("mlcheck-state")
            rules = state.failure_rules if isinstance(state, MlcheckState) else ()
            facts["failure_kind"] = classify_exception(call.excinfo.value, rules).value
        report.mlcheck_facts = dict(facts)  # type: ignore[attr-defined]
        return report


class ShowHubCauses:
    """Under ``-v``, a model that is not in the cache shows the hub lookup's own error too: the
    models fixture keeps it out of the chain (one screen, no library traceback) by default."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        cause = getattr(call.excinfo.value, "hub_cause", None) if call.excinfo else None
        if call.excinfo is not None and isinstance(cause, BaseException):
            call.excinfo.value.__cause__ = cause
        return (yield)
