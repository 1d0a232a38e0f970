"""``--mlcheck-record-map``: the hooks that name each test's and shared fixture's coverage
context (the work is in :class:`~mlcheck.plugin.selection.RecordMap`)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .session import MlcheckState, xdist_controller


class FileMapHooks:
    """``--mlcheck-record-map``: which project files each test runs, for ``--changed-since``
    (the work is in :class:`~mlcheck.plugin.selection.RecordMap`; these hooks name the contexts)."""

    def __init__(self, config: pytest.Config, state: MlcheckState) -> None:
        from .selection import RecordMap

        self.map = RecordMap(
            config.rootpath,
            Path(config.getoption("mlcheck_record_map")).resolve(),
            runs_tests=not xdist_controller(config),
            writes=not state.is_worker,
        )

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        infos = getattr(item, "_fixtureinfo", None)
        shared = []
        for name in getattr(item, "fixturenames", ()):
            defs = infos.name2fixturedefs.get(name) if infos is not None else None
            if defs and defs[-1].scope != "function":
                shared.append(_fixture_context(defs[-1]))
        self.map.runtest_protocol(item.nodeid, shared)
        try:
            return (yield)
        finally:
            self.map.test_done()

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, object, object]:
        shared = fixturedef.scope != "function"
        previous = self.map.fixture_context(_fixture_context(fixturedef) if shared else None)
        try:
            return (yield)
        finally:
            self.map.fixture_context(previous)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        facts = getattr(report, "mlcheck_facts", None) or {}
        self.map.models_used(report.nodeid, [m["id"] for m in facts.get("models") or ()])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        self.map.finish()


def _fixture_context(fixturedef: Any) -> str:
    from .selection import FIXTURE_PREFIX

    return f"{FIXTURE_PREFIX}{fixturedef.baseid}::{fixturedef.argname}"
