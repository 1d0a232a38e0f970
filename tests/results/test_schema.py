import json
import os
import stat

import jsonschema
import pytest

from mlcheck.errors import ResultsError
from mlcheck.results.builder import ResultsBuilder
from mlcheck.results.schema import (
    MAX_MESSAGE_CHARS,
    Outcome,
    Phase,
    RunInfo,
    RunResults,
    from_dict,
    read,
    to_dict,
    write,
)

SCHEMA = json.loads(
    __import__("importlib.resources")
    .resources.files("mlcheck")
    .joinpath("schema/results.schema.json")
    .read_text()
)


def feed(builder, nodeid, *phases, **kw):
    for when, outcome, *rest in phases:
        builder.report(
            nodeid=nodeid, when=when, outcome=outcome, message=rest[0] if rest else "", **kw
        )


def build_sample():
    b = ResultsBuilder()
    feed(
        b,
        "t.py::ok",
        ("setup", "passed"),
        ("call", "passed"),
        ("teardown", "passed"),
        facts={"tier": "fast", "seed": 0, "models": [{"id": "o/m", "revision": "abc"}]},
    )
    feed(
        b,
        "t.py::bad",
        ("setup", "passed"),
        ("call", "failed", "assert 1 == 2"),
        ("teardown", "passed"),
        file="t.py",
        line=7,
    )
    feed(b, "t.py::fixture", ("setup", "failed", "weights missing"), ("teardown", "passed"))
    feed(b, "t.py::td", ("setup", "passed"), ("call", "passed"), ("teardown", "failed", "leak"))
    feed(
        b,
        "t.py::flaky",
        ("setup", "passed"),
        ("call", "rerun", "first"),
        ("teardown", "passed"),
        ("setup", "passed"),
        ("call", "passed"),
        ("teardown", "passed"),
    )
    feed(
        b,
        "t.py::nr",
        ("setup", "skipped", "needs real weights"),
        ("teardown", "passed"),
        facts={"not_run": True, "tier": "real"},
    )
    feed(b, "t.py::skip", ("setup", "skipped", "no reason"), ("teardown", "passed"))
    b.report(nodeid="t.py::xf", when="setup", outcome="passed")
    b.report(nodeid="t.py::xf", when="call", outcome="skipped", xfail=True)
    b.report(nodeid="t.py::xf", when="teardown", outcome="passed")
    b.collection_error(nodeid="broken.py", message="SyntaxError")
    return {t.nodeid: t for t in b.build()}


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


def test_exit_code_ignores_not_run_and_counts_errors():
    tests = build_sample()
    ok = RunResults(RunInfo(), tuple(t for k, t in tests.items() if k in ("t.py::ok", "t.py::nr")))
    assert ok.exit_code() == 0
    assert RunResults(RunInfo(), (tests["t.py::fixture"],)).exit_code() == 1


def test_round_trip_and_json_schema(tmp_path):
    results = RunResults(
        RunInfo(tiers=("fast", "real"), shard="1/2", deselected=3), tuple(build_sample().values())
    )
    path = write(results, tmp_path)
    data = json.loads(path.read_text())
    jsonschema.validate(data, SCHEMA)
    assert read(tmp_path) == results
    assert from_dict(to_dict(results)) == results
    assert "deselected" not in to_dict(RunResults(RunInfo(), ()))["run"]  # optional: only -k/-m


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_results_json_gets_the_permissions_of_any_new_file(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = write(RunResults(RunInfo(), ()), tmp_path)
        (tmp_path / "junit.xml").write_text("<testsuites/>")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "junit.xml").stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml", "results.json"]


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


def test_read_errors_are_clear(tmp_path):
    with pytest.raises(ResultsError, match="run `mlcheck run` first"):
        read(tmp_path)
    (tmp_path / "results.json").write_text("{nope")
    with pytest.raises(ResultsError, match="not valid JSON"):
        read(tmp_path)
    (tmp_path / "results.json").write_text(
        json.dumps({"schema_version": 99, "run": {}, "tests": []})
    )
    with pytest.raises(ResultsError, match="schema_version 99"):
        read(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 1, "tests": []}))
    with pytest.raises(ResultsError, match="malformed"):
        read(tmp_path)


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


def test_version_1_files_stay_readable(tmp_path):
    v1 = {
        "schema_version": 1,
        "run": {"tiers": ["fast"], "pytest_exit_code": 1},
        "tests": [{"nodeid": "t::a", "outcome": "failed", "message": "boom"}],
    }
    (tmp_path / "results.json").write_text(json.dumps(v1))
    results = read(tmp_path)
    assert results.tests[0].outcome is Outcome.FAILED and results.tests[0].subtests == ()
    assert results.run.status.value == "complete" and results.exit_code() == 1
    jsonschema.validate(to_dict(results), SCHEMA)  # read as version 2
