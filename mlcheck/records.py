"""Per-test facts that checks and fixtures report to the plugin (models used, loss curves).

The plugin opens a record around each test; code under test calls :func:`record`. Outside a
test (plain scripts, notebooks) recording is a no-op. Values must be JSON-serialisable: they
travel from xdist workers to the controller and into ``results.json``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_current: ContextVar[dict[str, Any] | None] = ContextVar("mlcheck_record", default=None)


def start() -> dict[str, Any]:
    """Begin recording for one test; returns the dict that collects the facts."""
    facts: dict[str, Any] = {}
    _current.set(facts)
    return facts


def stop() -> dict[str, Any]:
    facts = _current.get() or {}
    _current.set(None)
    return facts


def current() -> dict[str, Any] | None:
    """The running test's facts (None outside a test)."""
    return _current.get()


def record(key: str, value: Any) -> None:
    """Set ``key`` for the running test (last write wins)."""
    facts = _current.get()
    if facts is not None:
        facts[key] = value


def append(key: str, value: Any) -> None:
    """Append ``value`` to the list ``key`` for the running test, once per distinct value."""
    facts = _current.get()
    if facts is not None:
        items = facts.setdefault(key, [])
        if value not in items:
            items.append(value)
