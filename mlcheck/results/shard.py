"""Split a test suite across machines, balanced by recorded durations (``--shard i/N``).

We use pytest-split (maintained, used widely) rather than our own splitter: it selects the
shard's tests in ``pytest_collection_modifyitems`` from a JSON file of ``{nodeid: seconds}``
and reports the rest as deselected, which works the same under pytest-xdist. Its
``least_duration`` algorithm (largest test first onto the least-loaded shard) balances better
than its default contiguous chunks; it sorts by node id first, so every machine computes the
same split. Tests with no recorded duration count as the average one.

mlcheck's part: turn earlier ``results.json`` files into the durations file, and give
``mlcheck run`` (which parses ``i/N``) the pytest arguments.

>>> " ".join(Shard(2, 4).pytest_args(None))
'--splits 4 --group 2 --splitting-algorithm least_duration'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .. import constants
from ..errors import EnvironmentProblem, MissingFile
from .schema import Outcome, RunResults

ALGORITHM = "least_duration"
DURATIONS_FILE = "durations.json"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``total`` (``mlcheck run`` parses ``--shard I/N``)."""

    index: int
    total: int

    def pytest_args(self, durations_path: Path | None, *, load_plugin: bool = False) -> list[str]:
        """Arguments that make pytest run only this shard's tests.

        ``load_plugin`` adds ``-p pytest_split.plugin``, needed only where plugin autoloading is
        off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``): with autoloading on, pytest refuses to
        register it twice.
        """
        _require_pytest_split()
        args = ["-p", "pytest_split.plugin"] if load_plugin else []
        args += [
            "--splits",
            str(self.total),
            "--group",
            str(self.index),
            "--splitting-algorithm",
            ALGORITHM,
        ]
        if durations_path is not None:
            args += ["--durations-path", str(durations_path)]
        return args


def _require_pytest_split() -> None:
    try:
        import pytest_split  # noqa: F401
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise EnvironmentProblem("--shard needs pytest-split: pip install pytest-split") from exc


def durations(results: Iterable[RunResults]) -> dict[str, float]:
    """``{nodeid: seconds}`` from earlier runs (later files win); tests that did not run are
    left out, so they count as the average test rather than as zero."""
    out: dict[str, float] = {}
    for r in results:
        for t in r.tests:
            if t.outcome not in (Outcome.NOT_RUN, Outcome.SKIPPED):
                out[t.nodeid] = t.duration
    return out


def write_durations(values: Mapping[str, float], path: Path) -> Path:
    """Write a pytest-split durations file (sorted keys, so it diffs well when committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(values), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


class _Item(NamedTuple):
    # pytest-split's algorithms only read ``nodeid`` from an item.
    nodeid: str


def split(
    nodeids: Sequence[str], recorded: Mapping[str, float], total: int
) -> list[tuple[list[str], float]]:
    """Preview the split pytest-split will make: per shard, its node ids and estimated seconds.

    >>> [ids for ids, _ in split(["a", "b", "c"], {"a": 3.0, "b": 1.0, "c": 1.0}, 2)]
    [['a'], ['b', 'c']]
    """
    from pytest_split.algorithms import Algorithms

    algorithm = Algorithms[ALGORITHM].value
    groups = algorithm(total, [_Item(n) for n in nodeids], dict(recorded))
    return [([item.nodeid for item in g.selected], g.duration) for g in groups]


def find_durations(explicit: Path | None = None) -> Path | None:
    """The durations file to balance by: ``explicit``, else ``$MLCHECK_DURATIONS``, else
    pytest-split's ``.test_durations`` in the current folder; None splits by test count."""
    if explicit is not None:
        if not explicit.is_file():
            raise MissingFile(f"no durations file at {explicit}")
        return explicit
    if env := constants.env_durations():
        return find_durations(Path(env))
    default = Path(".test_durations")
    return default if default.is_file() else None


def pytest_args(
    index: int, total: int, paths: Sequence[Path] = (), durations_path: Path | None = None
) -> list[str]:
    """What ``mlcheck run --shard index/total`` adds to pytest's command line.

    ``paths`` are the test paths of the run; a ``.test_durations`` next to the first one is
    used when the current folder has none.
    """
    found = find_durations(durations_path)
    if found is None:
        for p in paths:
            candidate = (p if p.is_dir() else p.parent) / ".test_durations"
            if candidate.is_file():
                found = candidate
                break
    autoload_off = constants.plugin_autoload_disabled()
    return Shard(index, total).pytest_args(found, load_plugin=autoload_off)
