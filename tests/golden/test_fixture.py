"""The `golden` fixture end to end: real pytest runs (pytester) of a seeded tiny BERT."""

import itertools
import json
import os
import sys

import pytest
import torch  # noqa: F401  imported before pytester snapshots sys.modules: torch loads once
from runcli import mlcheck
from transformers.models.bert import modeling_bert  # noqa: F401

from mlcheck.results.schema import Outcome, read

MODEL = """
import torch
from transformers import BertConfig, BertForSequenceClassification

def test_logits(golden):
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.bias += {shift}
        out = model(input_ids=torch.tensor([[1, 5, 7, 2], [1, 9, 3, 2]]))
    golden.check("logits", out.logits)
    golden.check("summary", {{"argmax": out.logits.argmax(-1).tolist(), "half": out.logits.half()}})
"""


def run(pytester, *args):
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def golden_file(pytester):
    return json.loads((pytester.path / "__golden__" / "test_model.json").read_text())


def test_record_pass_change_fail_accept(pytester):
    pytester.makepyfile(test_model=MODEL.format(shift=0.0))
    run(pytester).assert_outcomes(failed=1)  # nothing recorded: a failure, never a pass
    run(pytester, "--mlcheck-golden", "record").assert_outcomes(passed=1)
    data = golden_file(pytester)
    entry = data["tests"]["test_logits"]["logits"]["cpu"]
    assert entry["value"]["tensor"]["shape"] == [2, 3]
    assert entry["recorded_with"]["torch"].startswith("2.")
    assert set(data["tests"]["test_logits"]) == {"logits", "summary"}
    run(pytester).assert_outcomes(passed=1)

    # a changed model: the difference is shown, and results carry the observed value
    pytester.makepyfile(test_model=MODEL.format(shift=0.01))
    result = run(pytester, f"--mlcheck-results={pytester.path / 'out'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*golden.check('logits') [[]cpu[]]: allclose failed against cpu: 6 of 6 outside*"
            "max abs 0.01, max rel *, cosine 0.95*, first at (0, 0)",
            "*logits: 6 of 6 outside*",
            "*first differing: (0, 0): * → *",
            "*mlcheck golden accept RESULTS_DIR*",
        ]
    )
    (test,) = read(pytester.path / "out").tests
    assert test.outcome is Outcome.FAILED and test.golden is not None
    assert test.golden.key == "cpu" and test.golden.checks == 1  # the first failure stops the test
    (failure,) = test.golden.failures
    assert (failure.file, failure.test, failure.name, failure.status) == (
        "__golden__/test_model.json",
        "test_logits",
        "logits",
        "mismatch",
    )
    # record does not overwrite a failing value; update does
    run(pytester, "--mlcheck-golden", "record").assert_outcomes(failed=1)

    accepted = mlcheck("golden", "accept", "out", cwd=pytester.path)
    assert accepted.returncode == 0, accepted.stderr
    assert (
        "__golden__/test_model.json  test_logits › logits  [cpu]  float32[2, 3]" in accepted.stdout
    )
    run(pytester).assert_outcomes(failed=1)  # `summary` was never reached: still different
    run(pytester, "--mlcheck-golden", "update").assert_outcomes(passed=1)
    run(pytester).assert_outcomes(passed=1)


ONLY = """
import torch

def test_x(golden):
    golden.check("x", torch.tensor([1.0, 2.0]))
"""


def write_golden(pytester, keys):
    value = {"tensor": {"dtype": "float32", "shape": [2], "values": [1.0, 2.0]}}
    data = {
        "format": 1,
        "tests": {
            "test_x": {
                "x": {k: {"recorded_with": {"torch": "2.12.0"}, "value": value} for k in keys}
            }
        },
    }
    (pytester.path / "__golden__").mkdir(exist_ok=True)
    (pytester.path / "__golden__" / "test_only.json").write_text(json.dumps(data))


def test_another_devices_value_is_never_used(pytester):
    pytester.makepyfile(test_only=ONLY)
    write_golden(pytester, ["cuda:sm90"])
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*no value for cpu in *test_only.json › test_x › x",
            "*values recorded for: cuda:sm90 (another device's values are never used)",
            "*record it: mlcheck run --tier fast --golden record test_only.py::test_x *",
        ]
    )


def test_the_hint_names_the_tier_and_the_test_to_record(pytester):
    """A real-tier test is not run by `mlcheck run` alone (the fast tier): the hint says
    which tier and which test (issue 22)."""
    pytester.makepyfile(
        test_real="import pytest, torch\n\n@pytest.mark.real_model\n"
        "def test_canary(golden):\n    golden.check('x', torch.tensor([1.0]))\n"
    )
    result = run(pytester, "--mlcheck-tier", "real")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*record it: mlcheck run --tier real --golden record test_real.py::test_canary *"]
    )


def test_a_default_key_written_on_purpose_is_used(pytester):
    pytester.makepyfile(test_only=ONLY.replace("2.0]", "2.5]"))
    write_golden(pytester, ["cuda:sm90", "default"])
    result = run(pytester)
    result.assert_outcomes(failed=1)
    # the fallback is named, and so are the differing versions
    result.stdout.fnmatch_lines(
        ["*allclose failed against default*", "*recorded with torch 2.12.0, running 2.*"]
    )
    pytester.makepyfile(test_only=ONLY)
    run(pytester).assert_outcomes(passed=1)
    # --golden-key default records under `default`, never under the machine's key
    (pytester.path / "__golden__" / "test_only.json").unlink()
    run(pytester, "--mlcheck-golden", "record", "--mlcheck-golden-key", "default").assert_outcomes(
        passed=1
    )
    assert set(
        json.loads((pytester.path / "__golden__" / "test_only.json").read_text())["tests"][
            "test_x"
        ]["x"]
    ) == {"default"}


def test_a_hand_edited_golden_file_is_a_clear_error(pytester):
    pytester.makepyfile(test_only=ONLY)
    write_golden(pytester, ["cpu"])
    path = pytester.path / "__golden__" / "test_only.json"
    path.write_text(path.read_text().replace('"shape": [2]', '"shape": [3]'))
    result = run(pytester, "--mlcheck-golden", "update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*golden file *test_only.json at test_x › x [[]cpu[]]: "
            "tensor has 2 values, its shape [[]3[]] says 3*"
        ]
    )
    assert '"shape": [3]' in path.read_text()  # never overwritten


INTERLEAVED = """
import os, time
from pathlib import Path

ORDER = Path({order!r})  # one line per test, appended after its recordings: the worker's pid


def _wait_for_the_other_worker():
    # a worker's second test records only after the other worker's first one did, so the two
    # workers' recordings interleave (A..B..A) however xdist hands out the tests
    me = str(os.getpid())
    deadline = time.monotonic() + 60  # a bound against a hang, not a measurement
    while time.monotonic() < deadline:
        pids = ORDER.read_text().split() if ORDER.exists() else []
        if me not in pids or any(pid != me for pid in pids):
            return
        time.sleep(0.005)
"""


def test_concurrent_recording_under_xdist_loses_no_entry(tmp_path):
    # through `mlcheck run`, as CI does: two workers write the same golden file at once
    order = tmp_path / "order.txt"
    tests = INTERLEAVED.format(order=str(order)) + "\n".join(
        f"def test_{i}(golden):\n    _wait_for_the_other_worker()\n"
        f"    golden.check('v', {i}.5)\n    golden.check('w', [{i}, 'x'])\n"
        f"    with ORDER.open('a') as f:\n        f.write(f'{{os.getpid()}}\\n')\n"
        for i in range(12)
    )
    (tmp_path / "test_many.py").write_text(tests)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = mlcheck("run", "--no-warm", "-n", "2", "--golden", "record", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # the proof that the two workers recorded at the same time: one recorded between two
    # recordings of the other (the pid changes at least twice in the order they finished)
    pids = order.read_text().split()
    assert len(pids) == 12 and len(set(pids)) == 2, pids
    assert sum(a != b for a, b in itertools.pairwise(pids)) >= 2, pids
    data = json.loads((tmp_path / "__golden__" / "test_many.json").read_text())
    assert {t: set(v) for t, v in data["tests"].items()} == {
        f"test_{i}": {"v", "w"} for i in range(12)
    }
    assert {k for t in data["tests"].values() for v in t.values() for k in v} == {"cpu"}
    assert sum(t.golden.written for t in read(tmp_path / "mlcheck-results").tests) == 24
    assert "24 values written by --golden record/update, not compared" in done.stdout
    done = mlcheck("run", "--no-warm", "-n", "2", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-2000:]
    assert {t.golden.key for t in read(tmp_path / "mlcheck-results").tests if t.golden} == {"cpu"}


def test_accept_refuses_paths_outside_the_project(tmp_path):
    from mlcheck.results.schema import (
        GoldenCheck,
        GoldenUse,
        RunInfo,
        RunResults,
        TestResult,
        write,
    )

    bad = GoldenCheck("../evil/__golden__/x.json", "t", "n", "cpu", "missing", value={"int": 1})
    results = RunResults(
        RunInfo(), (TestResult("t", Outcome.FAILED, golden=GoldenUse("cpu", 1, (bad,))),)
    )
    write(results, tmp_path / "out")
    done = mlcheck("golden", "accept", "out", cwd=tmp_path)
    assert done.returncode == 2 and "not a __golden__/*.json path inside the project" in done.stderr
    assert not (tmp_path.parent / "evil").exists()
    # a path inside the project but for a test file that is not there: the wrong --root
    elsewhere = GoldenCheck(
        "tests/__golden__/test_x.json", "t", "n", "cpu", "missing", value={"int": 1}
    )
    results = RunResults(
        RunInfo(), (TestResult("t", Outcome.FAILED, golden=GoldenUse("cpu", 1, (elsewhere,))),)
    )
    write(results, tmp_path / "out")
    done = mlcheck("golden", "accept", "out", cwd=tmp_path)
    assert done.returncode == 2 and "tests/test_x.py does not exist" in done.stderr
    assert "pass --root" in done.stderr and not (tmp_path / "tests").exists()


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="file locks and paths: POSIX here")
