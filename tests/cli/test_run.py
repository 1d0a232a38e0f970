"""`mlcheck run` end to end: a real pytest subprocess on generated suites."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from runcli import mlcheck

from mlcheck.results.schema import Outcome, read


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_ok.py").write_text(
        "import os, pytest\n"
        "def test_offline():\n"
        "    assert os.environ['HF_HUB_OFFLINE'] == '1'\n"
        "@pytest.mark.real_model('org/name')\n"
        "def test_real():\n"
        "    pass\n"
        "@pytest.mark.gpu\n"
        "def test_gpu():\n"
        "    pass\n"
    )
    return tmp_path


def test_passing_run_writes_results_and_junit_and_exits_0(suite):
    proc = mlcheck("run", "tests", cwd=suite)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = read(suite / "mlcheck-results")
    assert results.run.tiers == ("fast",)
    assert {t.name: t.outcome for t in results.tests} == {
        "test_offline": Outcome.PASSED,
        "test_real": Outcome.NOT_RUN,
        "test_gpu": Outcome.NOT_RUN,
    }
    junit = ET.parse(suite / "mlcheck-results" / "junit.xml").getroot()
    assert junit.find("testsuite").get("tests") == "3"
    assert "not run" in proc.stdout  # the summary lists the not-run tests


def test_failure_and_missing_weights_exit_1(suite):
    (suite / "tests" / "test_bad.py").write_text("def test_bad():\n    assert 0, 'broken'\n")
    assert mlcheck("run", "tests", cwd=suite).returncode == 1
    (suite / "tests" / "test_bad.py").unlink()
    proc = mlcheck("run", "tests", "--tier", "real", cwd=suite)
    assert proc.returncode == 1  # a cache miss in a selected tier is an error
    real = {t.name: t for t in read(suite / "mlcheck-results").tests}["test_real"]
    # nothing declares the model: the message names the command that declares and fetches it
    assert real.outcome is Outcome.ERROR and "mlcheck add org/name --needs weights" in real.message
    # the report's Models table says the cache did not have it
    assert [(m.id, m.cache_hit) for m in real.models] == [("org/name", False)]
    # --tier real does not run gpu tests
    assert {t.name: t for t in read(suite / "mlcheck-results").tests}[
        "test_gpu"
    ].outcome is Outcome.NOT_RUN


def test_allow_missing_exits_0(suite):
    proc = mlcheck("run", "tests", "--tier", "all", "--allow-missing", cwd=suite)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the summary says what was missing (pytest's own -r shows no skip reasons here)
    assert "Skipped (" in proc.stdout
    assert "(--mlcheck-allow-missing): 'org/name' is not in the cache" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nowhere"], "does not exist"),
        (["run", "tests", "--tier", "gpus"], "unknown tier"),
        (["run", "tests", "--shard", "3/2"], "--shard"),
        (["run", "tests", "-n", "zero"], "--workers"),
        (["run", "empty"], "no tests collected"),
        # pytest exits 5 for both; only one of them is about the paths
        (["run", "tests", "--", "-k", "nomatch"], "3 collected, all deselected"),
    ],
)
def test_usage_and_environment_problems_exit_2(suite, args, message):
    (suite / "empty").mkdir()
    proc = mlcheck(*args, cwd=suite)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_workers_run_under_xdist_and_results_aggregate(suite):
    """Both xdist workers run tests (each test writes down its worker), their results land in
    one results.json, and each worker's torch threads are the cores split between the workers:
    `mlcheck run` sets what the caller left unset and keeps what it set, whatever the
    environment the suite itself runs in (scripts/test sets OMP_NUM_THREADS=1)."""
    seen = suite / "seen"
    seen.mkdir()
    (suite / "tests" / "test_many.py").write_text(
        "import json, os, pytest\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_threads(i):\n"
        f"    path = os.path.join({str(seen)!r}, str(i))\n"
        "    names = ('PYTEST_XDIST_WORKER', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS')\n"
        "    with open(path, 'w') as fh:\n"
        "        json.dump([os.environ.get(n) for n in names], fh)\n"
    )
    split = str(max(1, (os.cpu_count() or 1) // 2))
    given = str(int(split) + 2)  # the caller's own value, unlike what mlcheck would set
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") and not k.startswith("PYTEST_XDIST")
    }
    env["OMP_NUM_THREADS"] = given
    deselect = "tests/test_many.py::test_threads[7]"
    proc = mlcheck(
        "run",
        "tests",
        "-n",
        "2",
        "--results-dir",
        "out",
        "--",
        "--deselect",
        deselect,
        cwd=suite,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [json.loads(path.read_text()) for path in sorted(seen.iterdir())]
    assert len(runs) == 7
    assert {worker for worker, _, _ in runs} == {"gw0", "gw1"}
    assert {(omp, mkl) for _, omp, mkl in runs} == {(given, split)}
    results = read(suite / "out")
    assert results.run.workers == 2
    assert len(results.tests) == 10
    assert results.run.deselected == 1  # counted by the workers, sent to the controller


def test_pytest_args_after_double_dash(suite):
    proc = mlcheck("run", "tests", "--", "-k", "offline", cwd=suite)
    assert proc.returncode == 0
    data = json.loads((suite / "mlcheck-results" / "results.json").read_text())
    assert [t["nodeid"].rsplit("::")[-1] for t in data["tests"]] == ["test_offline"]


def test_help_lists_exit_codes():
    proc = subprocess.run(
        [sys.executable, "-m", "mlcheck", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "exit codes" in proc.stdout and "no tests collected" in proc.stdout
