"""Merging results from shards, tiers and jobs."""

from __future__ import annotations

import pytest

from mlcheck.errors import ResultsError
from mlcheck.results.merge import merge, merge_sections, section_key
from mlcheck.results.schema import (
    Attempt,
    DeviceInfo,
    Outcome,
    RunInfo,
    RunResults,
    TestResult,
    from_dict,
    to_dict,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
GPU = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", 1, 79.6)


def run(tiers: tuple[str, ...] = ("fast",), **kw: object) -> RunInfo:
    return RunInfo(tiers=tiers, sha=SHA, **kw)  # type: ignore[arg-type]


def t(nodeid: str, outcome: Outcome, **kw: object) -> TestResult:
    return TestResult(nodeid, outcome, **kw)  # type: ignore[arg-type]


def test_section_key_is_canonical() -> None:
    assert section_key(RunInfo(tiers=("gpu", "real"))) == "real,gpu"
    assert section_key(RunInfo(tiers=())) == "fast"


def test_shards_of_a_tier_merge_into_its_section() -> None:
    s1 = RunResults(run(shard="1/2", duration=10.0, workers=2), (t("a::x", Outcome.PASSED),))
    s2 = RunResults(run(shard="2/2", duration=14.0), (t("b::y", Outcome.FAILED),))
    gpu = RunResults(run(("real", "gpu"), device=GPU), (t("g::z", Outcome.PASSED),))
    sections = merge_sections([gpu, s2, s1])
    assert list(sections) == ["fast", "real,gpu"]  # tier order, whatever the input order
    fast = sections["fast"]
    assert {x.nodeid for x in fast.tests} == {"a::x", "b::y"}
    assert {x.run for x in fast.tests} == {"fast"}
    assert fast.run.shard is None and fast.run.duration == 14.0 and fast.run.workers == 2
    assert sections["real,gpu"].run.device == GPU


def test_a_test_not_run_in_one_job_but_run_in_another_is_not_listed_as_not_run() -> None:
    fast = RunResults(run(), (t("a::x", Outcome.PASSED), t("g::z", Outcome.NOT_RUN)))
    gpu = RunResults(run(("gpu",), device=GPU), (t("g::z", Outcome.FAILED),))
    sections = merge_sections([fast, gpu])
    assert [x.nodeid for x in sections["fast"].tests] == ["a::x"]
    merged = merge([fast, gpu])
    assert merged.counts() == {"passed": 1, "failed": 1}
    assert merged.run.device == GPU and merged.run.tiers == ("fast", "gpu")


def test_duplicate_test_in_two_shards_keeps_the_real_outcome() -> None:
    # e.g. a shard re-run after a crash: the failure must not be hidden by a stale pass
    a = RunResults(run(shard="1/2"), (t("a::x", Outcome.PASSED),))
    b = RunResults(
        run(shard="2/2"), (t("a::x", Outcome.FAILED, attempts=(Attempt(Outcome.FAILED),)),)
    )
    (only,) = merge([a, b]).tests
    assert only.outcome is Outcome.FAILED


def test_merged_file_merges_again_with_the_same_sections() -> None:
    fast = RunResults(run(), (t("a::x", Outcome.PASSED),))
    gpu = RunResults(run(("gpu",), device=GPU), (t("g::z", Outcome.PASSED),))
    once = merge([fast, gpu])
    again = merge_sections([from_dict(to_dict(once))])
    assert list(again) == ["fast", "gpu"]


def test_partial_shards_are_visible() -> None:
    only_first = merge_sections([RunResults(run(shard="1/3"), (t("a::x", Outcome.PASSED),))])
    assert only_first["fast"].run.shard == "1/3"


def test_results_of_different_commits_are_refused() -> None:
    a = RunResults(run(), ())
    b = RunResults(RunInfo(sha="f" * 40), ())
    with pytest.raises(ResultsError, match="different commits"):
        merge([a, b])


def test_nothing_to_merge() -> None:
    with pytest.raises(ResultsError, match="nothing to merge"):
        merge([])
