"""Sharding by recorded durations (pytest-split), checked on a real pytest run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlcheck.errors import UsageError
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult
from mlcheck.results.shard import durations, pytest_args, split, write_durations


def test_split_balances_by_duration_and_covers_every_test_once() -> None:
    ids = [f"t::test_{i}" for i in range(40)]
    recorded = {n: (10.0 if i < 4 else 1.0) for i, n in enumerate(ids)}
    groups = split(ids, recorded, 4)
    assert sorted(n for g, _ in groups for n in g) == sorted(ids)
    loads = [d for _, d in groups]
    assert max(loads) - min(loads) <= 1.0  # 76 s of tests, 19 s per shard
    # every slow test lands on a different shard
    assert all(sum(1 for n in g if recorded[n] == 10.0) == 1 for g, _ in groups)


def test_durations_from_results_skip_tests_that_did_not_run(tmp_path: Path) -> None:
    r = RunResults(
        RunInfo(),
        (
            TestResult("a::x", Outcome.PASSED, duration=2.0),
            TestResult("a::y", Outcome.NOT_RUN, duration=0.0),
            TestResult("a::z", Outcome.FAILED, duration=1.5),
        ),
    )
    path = write_durations(durations([r]), tmp_path / "d.json")
    # what pytest-split's --durations-path reads
    assert json.loads(path.read_text(encoding="utf-8")) == {"a::x": 2.0, "a::z": 1.5}


def test_shards_of_a_real_run_are_disjoint_complete_and_balanced(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_many="\n".join(f"def test_{i}():\n    pass\n" for i in range(12)))
    recorded = {f"test_many.py::test_{i}": (5.0 if i in (0, 1) else 1.0) for i in range(12)}
    dfile = write_durations(recorded, pytester.path / "durations.json")
    selected: list[set[str]] = []
    for index in (1, 2):
        result = pytester.runpytest("-p", "no:mlcheck", *pytest_args(index, 2, (), dfile))
        result.assert_outcomes(passed=6)
        passed = {
            r.nodeid
            for r in result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
            if r.when == "call"
        }
        selected.append(passed)
    assert selected[0].isdisjoint(selected[1])
    assert selected[0] | selected[1] == set(recorded)
    load = [sum(recorded[n] for n in s) for s in selected]
    assert load == [10.0, 10.0]


def test_env_durations_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_durations({"a": 1.0}, tmp_path / "d.json")
    monkeypatch.setenv("MLCHECK_DURATIONS", str(path))
    args = pytest_args(1, 3)
    assert args[args.index("--durations-path") + 1] == str(path)
    monkeypatch.setenv("MLCHECK_DURATIONS", str(tmp_path / "nope.json"))
    with pytest.raises(UsageError):
        pytest_args(1, 3)
