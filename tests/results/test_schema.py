import json
import os
import stat

import jsonschema
import pytest
from sample_results import SCHEMA, build_sample

from mlcheck.errors import ResultsError
from mlcheck.results.schema import (
    Outcome,
    RunInfo,
    RunResults,
    from_dict,
    read,
    to_dict,
    write,
)


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
