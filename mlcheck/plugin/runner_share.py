"""One runner class's share of a GPU run (``mlcheck run --runner-share JSON``).

``mlcheck schedule`` with ``[tool.mlcheck] gpu_runners`` may split a GPU run into shares, one
per runner class, each a job of the GPU workflow's matrix (:mod:`mlcheck.action.dispatch_plan`): a
share either lists the tests it runs (``"only"``) or the tests the other shares run
(``"skip"``, the largest class: everything else, new tests included). The tests outside a share
are deselected here, as a shard's are, and the merged results of all shares hold every test
once. Loaded with ``-p mlcheck.plugin.runner_share`` by ``mlcheck run`` only when a share is given.

>>> Share.parse('{"class": "24", "labels": ["gpu-24g"], "only": ["t.py::a"]}').keeps("t.py::b")
False
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from ..errors import UsageError

OPTION = "--mlcheck-runner-share"


@dataclass(frozen=True)
class Share:
    runner_class: str
    only: frozenset[str] | None = None
    skip: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Share:
        """A share from the ``runners`` dispatch input's entry (JSON); UsageError when bad."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{OPTION}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise UsageError(f"{OPTION}: expected an object like {{'class': '24', 'only': [...]}}")
        lists = {}
        for key in ("only", "skip"):
            value = data.get(key)
            if value is not None and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise UsageError(f"{OPTION}: `{key}` must be a list of test ids")
            lists[key] = value
        if lists["only"] is not None and lists["skip"]:
            raise UsageError(f"{OPTION}: give `only` or `skip`, not both")
        return cls(
            runner_class=str(data.get("class", "")),
            only=frozenset(lists["only"]) if lists["only"] is not None else None,
            skip=frozenset(lists["skip"] or ()),
        )

    def keeps(self, nodeid: str) -> bool:
        if self.only is not None:
            return nodeid in self.only
        return nodeid not in self.skip


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("mlcheck").addoption(
        OPTION,
        default=None,
        metavar="JSON",
        help="run only this runner class's share of a GPU run (mlcheck run --runner-share)",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    text = config.getoption(OPTION)
    if not text:
        return
    share = Share.parse(text)
    kept = [item for item in items if share.keeps(item.nodeid)]
    dropped = [item for item in items if not share.keeps(item.nodeid)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
