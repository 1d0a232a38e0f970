"""pytest plugin that `mlcheck mutate` loads (``-p mlcheck.power.activate``) in each mutant's run.

At import, which pytest does while it parses the command line (before any conftest or test
module is imported), it injects the mutant named by ``$MLCHECK_MUTANT`` into this process. Each
time the mutant changes behaviour it counts a hit for the running test; the counts go to
``$MLCHECK_MUTANT_HITS/hits-<pid>.json`` after each test that reached it (so they survive a
crash of a later test) and at the end. Without ``$MLCHECK_MUTANT`` it does nothing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Generator
from pathlib import Path

import pytest

from .. import constants

OUTSIDE_TESTS = "(collection)"  # hits while modules were imported or collected

_hits: Counter[str] = Counter()
_current: list[str] = [OUTSIDE_TESTS]
_name = constants.get(constants.ENV_MUTANT)
_folder = constants.get(constants.ENV_MUTANT_HITS)


def _hit() -> None:
    first = not _hits
    _hits[_current[-1]] += 1
    if first:
        _write()  # reached, even if this process dies before the test ends


def _write() -> None:
    if _folder is None:
        return
    path = Path(_folder) / f"hits-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"mutant": _name, "tests": dict(_hits)}))
    tmp.replace(path)


if _name is not None:
    from .mutants import apply

    apply(_name, _hit)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    before = sum(_hits.values())
    _current.append(item.nodeid)
    try:
        return (yield)
    finally:
        _current.pop()
        if sum(_hits.values()) != before:
            _write()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _hits:
        _write()
