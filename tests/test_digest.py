"""The hidden digest: compact, versioned, and the classification it enables."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcheck import digest
from mlcheck.errors import ResultsError
from mlcheck.results import Outcome, RunInfo, RunResults, TestResult

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
