"""The hidden digest: compact, versioned, and the classification it enables."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcheck.errors import ResultsError
from mlcheck.results import digest
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

SHA = "0123456789abcdef0123456789abcdef01234567"


def results(outcomes: dict[str, Outcome]) -> RunResults:
    return RunResults(RunInfo(sha=SHA), tuple(TestResult(n, o) for n, o in outcomes.items()))


def test_round_trip_counts_sha_and_failures() -> None:
    r = results({"t::a": Outcome.FAILED, "t::b": Outcome.PASSED, "t::c": Outcome.ERROR})
    line = digest.encode(r, section="fast")
    assert line.startswith("<!-- mlcheck:digest v2 fast ") and line.endswith(" -->")
    d = digest.parse(f"some comment\n\n{line}\n")["fast"]
    assert d.sha == SHA and d.counts == {"failed": 1, "passed": 1, "error": 1} and d.complete
    assert d.failed_on_base("t::a") and d.failed_on_base("t::c")
    assert d.failed_on_base("t::b") is False and d.failed_on_base("t::new") is False


def test_classify_new_on_base_flaky() -> None:
    base = digest.parse(
        digest.encode(results({"t::a": Outcome.FAILED, "t::b": Outcome.PASSED}), section="fast")
    )["fast"]
    head = [
        TestResult("t::a", Outcome.FAILED),
        TestResult("t::b", Outcome.FAILED),
        TestResult("t::c", Outcome.ERROR),  # a test that did not exist on base
        TestResult("t::d", Outcome.FLAKY),
        TestResult("t::e", Outcome.PASSED),
    ]
    c = digest.classify(head, base)
    assert [t.nodeid for t in c.new] == ["t::b", "t::c"]
    assert [t.nodeid for t in c.on_base] == ["t::a"]
    assert [t.nodeid for t in c.flaky] == ["t::d"] and not c.uncompared
    assert [t.nodeid for _, t in c.ordered()] == ["t::b", "t::c", "t::a"]
    assert [t.nodeid for t in digest.classify(head, None).uncompared] == ["t::a", "t::b", "t::c"]


def test_many_failures_are_sampled_within_budget_and_never_misclassified() -> None:
    n = 20_000
    r = results({f"tests/t{i}.py::test_{i}": Outcome.FAILED for i in range(n)})
    line = digest.encode(r, section="fast", max_chars=4_000)
    assert len(line) <= 4_000
    d = digest.parse(line)["fast"]
    assert not d.complete
    known = [d.failed_on_base(t.nodeid) for t in r.tests]
    # what the digest knows is right; what it dropped is "unknown", never "passed on base"
    assert False not in known
    assert 0.05 < known.count(True) / n < 0.5
    fresh = [d.failed_on_base(f"other::{i}") for i in range(2_000)]
    assert fresh.count(True) <= 1  # 32-bit hashes: collisions are about one in a million


def test_compact_about_three_bytes_per_failure_and_two_per_test_that_ran() -> None:
    # a failing test is in both sets: ~3 bytes as a failure, ~1.5 in the ran set, base64 4/3
    r = results({f"tests/t{i}.py::test_{i}": Outcome.FAILED for i in range(1_000)})
    assert len(digest.encode(r, section="fast", max_chars=100_000)) < 6.5 * 1_000 + 200


def test_other_versions_are_skipped_and_damage_is_reported() -> None:
    assert digest.parse("<!-- mlcheck:digest v999 fast AAAA -->") == {}
    with pytest.raises(ResultsError, match="damaged"):
        digest.parse("<!-- mlcheck:digest v1 fast AAAA -->")


def test_read_missing_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ResultsError, match="no base digest"):
        digest.read(tmp_path / "nope.txt")


@settings(max_examples=25, deadline=None)
@given(
    names=st.sets(st.text(min_size=1, max_size=40), min_size=0, max_size=60),
    data=st.data(),
)
def test_round_trip_property(names: set[str], data: st.DataObject) -> None:
    failing = {n for n in names if data.draw(st.booleans())}
    r = results({n: Outcome.FAILED if n in failing else Outcome.PASSED for n in names})
    section = data.draw(st.sampled_from(["fast", "real,gpu", "nightly"]))
    d = digest.parse(digest.encode(r, section=section))[section]
    for n in names:
        assert d.failed_on_base(n) is (n in failing)


# --- v2: tests that ran, durations, and what a v1 digest still gives


def _t(nodeid: str, outcome: Outcome, duration: float = 0.01, **kw: object) -> TestResult:
    return TestResult(nodeid, outcome, duration=duration, **kw)  # type: ignore[arg-type]


def _run(*tests: TestResult, shard: str | None = None) -> RunResults:
    return RunResults(RunInfo(shard=shard), tests)


def test_stopped_running_lists_skipped_and_counts_tests_no_longer_collected() -> None:
    base = digest.parse(
        digest.encode(
            [_t(f"t::a{i}", Outcome.PASSED) for i in range(50)]
            + [_t("t::was_skipped", Outcome.SKIPPED), _t("t::gone", Outcome.FAILED)],
            section="fast",
        )
    )["fast"]
    now = _run(
        *(_t(f"t::a{i}", Outcome.PASSED) for i in range(48)),
        _t("t::a48", Outcome.SKIPPED, message="test requires a GPU"),
        _t("t::a49", Outcome.NOT_RUN),
        _t("t::was_skipped", Outcome.SKIPPED),  # skipped on base too: did not stop
        _t("t::brand_new", Outcome.SKIPPED),  # new: never ran
    )
    stopped = digest.stopped_running(now, base)
    assert stopped is not None
    assert [t.nodeid for t in stopped.tests] == ["t::a48", "t::a49"]
    assert stopped.gone == 1 and stopped.total == 3 and not stopped.sampled
    # one shard of a run cannot tell a deleted test from one in another shard
    assert digest.stopped_running(replace(now, run=RunInfo(shard="1/2")), base).gone is None  # type: ignore[union-attr]


def test_durations_in_buckets_find_tests_that_certainly_got_slower() -> None:
    base = digest.parse(
        digest.encode(
            [
                _t("t::fast", Outcome.PASSED, 0.05),
                _t("t::steady", Outcome.PASSED, 4.0),
                _t("t::doubled", Outcome.PASSED, 3.0),
                _t("t::tiny", Outcome.PASSED, 0.01),
            ],
            section="fast",
        )
    )["fast"]
    low, high = base.base_duration("t::steady")  # type: ignore[misc]
    assert low <= 4.0 < high and high / low == pytest.approx(2**0.5)
    assert base.base_duration("t::fast") == (0.0, digest.SLOW_FLOOR)
    assert base.base_duration("t::never") is None
    now = [
        _t("t::fast", Outcome.PASSED, 30.0),  # started downloading for real
        _t("t::steady", Outcome.PASSED, 4.5),
        _t("t::doubled", Outcome.PASSED, 6.5),  # 2.2x of 3 s, but not of its bucket's top
        _t("t::tiny", Outcome.PASSED, 1.2),  # > 2x and > 1 s over the bucket's top (0.5 s)?
        _t("t::new", Outcome.PASSED, 100.0),  # no base: not compared
    ]
    slower = digest.slower_than_base(now, base)
    assert [s.test.nodeid for s in slower] == ["t::fast"]  # tiny: 1.2 - 0.5 < 1 s
    assert [s.test.nodeid for s in digest.slower_than_base(now, base, at_least=0.5)] == [
        "t::fast",
        "t::tiny",
    ]


def test_infrastructure_failures_are_never_new_and_keep_the_verdict() -> None:
    base = digest.parse(digest.encode([_t("t::hub", Outcome.PASSED)], section="fast"))["fast"]
    tests = (
        _t("t::hub", Outcome.FAILED, failure_kind="hub"),
        _t("t::code", Outcome.FAILED, failure_kind="code"),
        _t("t::v1", Outcome.ERROR),  # schema v1: no kind, a code failure
    )
    c = digest.classify(tests, base)
    assert [t.nodeid for t in c.infra] == ["t::hub"]
    assert [t.nodeid for t in c.new] == ["t::code", "t::v1"]
    assert [t.nodeid for _, t in c.ordered()][-1] == "t::hub"
    assert _run(*tests).exit_code() == 1
    assert _run(tests[0]).exit_code() == 1  # only an infrastructure failure: still red


def test_v1_digests_are_still_read_without_the_new_parts() -> None:
    # written by the previous mlcheck (digest v1): t::a failed, t::b errored, t::c passed
    old = (
        "<!-- mlcheck:digest v1 fast eNqrVkpSsjK10FFKzi/NKylWsqpWSi0qyi9SsjLUUUpLzMxJTQEzCxKLi8H"
        "MWh2lbCUrI3MdpTwgpaNUnJGoZKVkYGhkbGJqZm5hmZiUnJKahouvVMvFyC3XsXWJpCcAXXMhwQ== -->"
    )
    base = digest.parse(old)["fast"]
    assert base.version == 1 and base.ran is None and base.slow is None
    assert base.failed_on_base("t::a") and base.failed_on_base("t::b")
    assert base.failed_on_base("t::c") is False and base.sha == SHA
    assert digest.stopped_running(_run(_t("t::a", Outcome.SKIPPED)), base) is None
    assert digest.slower_than_base([_t("t::a", Outcome.PASSED, 50.0)], base) == []


def test_a_tight_budget_samples_the_ran_set_first_and_keeps_failures_whole() -> None:
    tests = [_t(f"t::{i}", Outcome.FAILED if i < 100 else Outcome.PASSED) for i in range(5_000)]
    line = digest.encode(tests, section="fast", max_chars=2_000)
    assert len(line) <= 2_000
    base = digest.parse(line)["fast"]
    assert base.complete and not base.ran_complete and base.ran
    assert all(base.failed_on_base(f"t::{i}") for i in range(100))
    skipped = _run(*(_t(f"t::{i}", Outcome.SKIPPED) for i in range(5_000)))
    stopped = digest.stopped_running(skipped, base)
    assert stopped is not None and stopped.sampled
    # a sample: every test listed really ran on base; the rest are counted as not compared
    assert 0 < len(stopped.tests) < 5_000 and len(stopped.tests) + stopped.unknown == 5_000


def test_an_unknown_failure_kind_from_untrusted_results_counts_as_code() -> None:
    tests = [_t("t::a", Outcome.FAILED, failure_kind="totally-infra"), _t("t::b", Outcome.PASSED)]
    c = digest.classify(tests, None)
    assert not c.infra and [t.nodeid for t in c.uncompared] == ["t::a"]
