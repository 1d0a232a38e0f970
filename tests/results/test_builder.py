"""ResultsBuilder (mlcheck/results/builder.py): pytest's reports -> one result per test, with its
attempts and phases; the journal it keeps replays to the same results after a crash."""

import jsonschema
from sample_results import SCHEMA, build_sample, feed

from mlcheck.results.builder import ResultsBuilder
from mlcheck.results.schema import (
    MAX_MESSAGE_CHARS,
    Outcome,
    Phase,
    RunInfo,
    RunResults,
    from_dict,
    to_dict,
)


def test_builder_outcomes_and_phases():
    tests = build_sample()
    assert tests["t.py::ok"].outcome is Outcome.PASSED
    assert tests["t.py::ok"].models[0].revision == "abc"
    bad = tests["t.py::bad"]
    assert (bad.outcome, bad.phase, bad.message, bad.line) == (
        Outcome.FAILED,
        Phase.CALL,
        "assert 1 == 2",
        7,
    )
    assert (tests["t.py::fixture"].outcome, tests["t.py::fixture"].phase) == (
        Outcome.ERROR,
        Phase.SETUP,
    )
    assert (tests["t.py::td"].outcome, tests["t.py::td"].phase) == (Outcome.ERROR, Phase.TEARDOWN)
    flaky = tests["t.py::flaky"]
    assert flaky.outcome is Outcome.FLAKY
    assert [a.outcome for a in flaky.attempts] == [Outcome.FAILED, Outcome.PASSED]
    assert flaky.attempts[0].message == "first"
    nr = tests["t.py::nr"]
    assert (nr.outcome, nr.tier, nr.message) == (Outcome.NOT_RUN, "real", "needs real weights")
    assert tests["t.py::skip"].outcome is Outcome.SKIPPED
    assert tests["t.py::xf"].outcome is Outcome.XFAILED
    assert (tests["broken.py"].outcome, tests["broken.py"].phase) == (Outcome.ERROR, Phase.COLLECT)


def test_rerun_without_teardown_report_starts_a_new_attempt():
    # older pytest-rerunfailures sent no teardown after a rerun
    b = ResultsBuilder()
    feed(
        b,
        "t::x",
        ("setup", "passed"),
        ("call", "rerun", "boom"),
        ("setup", "passed"),
        ("call", "failed", "boom again"),
        ("teardown", "passed"),
    )
    (t,) = b.build()
    assert [a.outcome for a in t.attempts] == [Outcome.FAILED, Outcome.FAILED]
    assert t.outcome is Outcome.FAILED and t.message == "boom again"  # the last failure


def test_messages_are_truncated():
    b = ResultsBuilder()
    feed(
        b,
        "t::big",
        ("setup", "passed"),
        ("call", "failed", "x" * 5_000_000),
        ("teardown", "passed"),
    )
    (t,) = b.build()
    assert len(t.message) < MAX_MESSAGE_CHARS + 100
    assert "characters cut" in t.message


def test_failing_subtest_fails_the_test_and_adds_no_attempt(tmp_path):
    b = ResultsBuilder()
    b.report(nodeid="t::v", when="setup", outcome="passed")
    for i, outcome in enumerate(["passed", "failed", "passed"]):
        b.report(
            nodeid="t::v",
            when="call",
            outcome=outcome,
            message="1 != 1" if outcome == "failed" else "",
            subtest={"msg": None, "params": {"i": str(i)}},
        )
    b.report(nodeid="t::v", when="call", outcome="passed")  # the test's own call report
    b.report(nodeid="t::v", when="teardown", outcome="passed")
    (t,) = b.build()
    assert (t.outcome, len(t.attempts), t.message) == (Outcome.FAILED, 1, "(i=1): 1 != 1")
    assert [s.outcome for s in t.subtests] == [Outcome.PASSED, Outcome.FAILED, Outcome.PASSED]
    results = RunResults(RunInfo(), (t,))
    data = to_dict(results)
    jsonschema.validate(data, SCHEMA)
    assert from_dict(data) == results


def test_subtests_past_the_cap_are_counted_though_not_recorded():
    """HF's test_bc_torch_dtype runs thousands of subTests: pytest counts every one, so must we."""
    from mlcheck.report.common import subtests_line
    from mlcheck.results.schema import MAX_SUBTESTS

    b = ResultsBuilder()
    b.report(nodeid="t::many", when="setup", outcome="passed")
    outcomes = ["skipped"] * MAX_SUBTESTS + ["passed"] * 3 + ["skipped"] * 2
    for i, outcome in enumerate(outcomes):
        b.report(nodeid="t::many", when="call", outcome=outcome, subtest={"params": {"i": str(i)}})
    b.report(nodeid="t::many", when="call", outcome="passed")
    b.report(nodeid="t::many", when="teardown", outcome="passed")
    (t,) = b.build()
    assert len(t.subtests) == MAX_SUBTESTS
    assert dict(t.subtests_omitted) == {"passed": 3, "skipped": 2}
    # three subtests past the cap passed: not "all subtests skipped"
    assert t.outcome is Outcome.PASSED
    results = RunResults(RunInfo(), (t,))
    data = to_dict(results)
    jsonschema.validate(data, SCHEMA)
    assert from_dict(data) == results
    assert subtests_line(results) == f"subtests: 3 passed, {MAX_SUBTESTS + 2:,} skipped"


def test_journal_replay_rebuilds_what_the_builder_saw(tmp_path):
    journal = tmp_path / "journal.jsonl"
    live = ResultsBuilder(journal=journal)
    live.set_collected(3)
    for name in ("a", "b"):
        live.start(f"t::{name}", 100.0)
        live.report(nodeid=f"t::{name}", when="setup", outcome="passed", facts={"tier": "fast"})
        live.report(nodeid=f"t::{name}", when="call", outcome="failed" if name == "b" else "passed")
        live.report(nodeid=f"t::{name}", when="teardown", outcome="passed")
    live.start("t::running", 100.0)
    live.report(nodeid="t::running", when="setup", outcome="passed")
    with journal.open("a") as fh:
        fh.write('["report", {"nodeid": "t::running", "wh')  # torn by a SIGKILL
    replayed = ResultsBuilder.replay(journal)
    assert replayed.build() == live.build()
    assert replayed.collected == 3
    # the running test has no verdict; it is listed as running
    assert [t.nodeid for t in replayed.build()] == ["t::a", "t::b"]
    assert [(r.nodeid, r.duration) for r in replayed.running(102.5)] == [("t::running", 2.5)]
    # a crash fails it, once
    replayed.crashed(103.0, "the test process died (SIGKILL)")
    crashed = {t.nodeid: t for t in replayed.build()}["t::running"]
    assert (crashed.outcome, len(crashed.attempts)) == (Outcome.FAILED, 1)
    assert "died (SIGKILL)" in crashed.message
    live.close()


def test_crashed_xdist_worker_report_is_one_failure():
    b = ResultsBuilder()
    b.start("t::c", 0.0)
    b.report(nodeid="t::c", when="setup", outcome="passed")
    b.report(nodeid="t::c", when="???", outcome="failed", message="worker 'gw0' crashed")
    (t,) = b.build()
    assert (t.outcome, len(t.attempts), t.message) == (Outcome.FAILED, 1, "worker 'gw0' crashed")
    assert b.running(1.0) == ()
