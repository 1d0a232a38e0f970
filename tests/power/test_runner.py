"""`mlcheck mutate`: kills by a crash and by a timeout, and `--calibrate` (power beside false
alarms in one table), on one tiny real torch suite mutated once (issue 24).

Each test of the suite misbehaves only under "its" mutant: with dropout the identity in training
the process kills itself with SIGSEGV; with optimizer steps that change nothing it waits forever
for the weights to move. Unmutated, both pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from runcli import mlcheck

from mlcheck.power.runner import Kill, Status, SuiteRun, classify
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

SUITE = """\
import os
import signal
import time

import torch


def test_crashes_when_dropout_is_off():
    dropout = torch.nn.Dropout(0.5).train()
    x = torch.ones(1000)
    if torch.equal(dropout(x), x):  # the identity in training: the bug
        os.kill(os.getpid(), signal.SIGSEGV)


def test_hangs_when_the_optimizer_does_nothing():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    w.sum().backward()
    opt.step()
    while torch.equal(w.detach(), torch.ones(3)):  # the step changed nothing: the bug
        time.sleep(0.5)
"""

CRASH = "tests/test_bugs.py::test_crashes_when_dropout_is_off"
HANG = "tests/test_bugs.py::test_hangs_when_the_optimizer_does_nothing"


def test_a_crash_and_a_timeout_kill_and_calibrate_reports_both_sides(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['tests']\n")
    (root / "tests" / "test_bugs.py").write_text(SUITE)
    out = tmp_path / "out"
    # the timeout leaves a loaded machine time to start a run (torch import) and reach the test;
    # no -n: on 2 cores, xdist workers and parallel mutants cost more than they save here
    proc = mlcheck(
        "mutate", "tests", "--results-dir", str(out),
        "--mutants", "dropout-off-in-train,optimizer-noop",
        "--mutant-timeout", "45", "--calibrate", "2",
        cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mutants = {m["name"]: m for m in json.loads((out / "mutation.json").read_text())["mutants"]}
    crash, hang = mutants["dropout-off-in-train"], mutants["optimizer-noop"]
    assert (crash["status"], crash["kill"], crash["killers"]) == ("killed", "crash", [CRASH])
    assert "SIGSEGV" in crash["message"]
    assert (hang["status"], hang["kill"], hang["killers"]) == ("killed", "timeout", [HANG])
    assert hang["message"].startswith("stopped after ")
    markdown = (out / "mutation.md").read_text()
    assert "(crash)" in markdown and "(timeout)" in markdown
    # --calibrate: each test's false alarms beside the mutants it killed, one table
    calibration = json.loads((out / "calibration.json").read_text())
    assert {t["nodeid"]: t["failures"] for t in calibration["tests"]} == {CRASH: 0, HANG: 0}
    table = (out / "calibration.md").read_text()
    assert "| mutants killed |" in table
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if "::test_" in line}
    assert rows[f"| `{CRASH}`"].endswith("| 1 (dropout-off-in-train) |"), table
    assert rows[f"| `{HANG}`"].endswith("| 1 (optimizer-noop) |"), table
    assert "mutants killed" in proc.stdout  # the same table on the terminal
    assert not (root / ".pytest_cache").exists()  # nothing written into the project


def test_a_timeout_before_the_mutant_was_reached_is_an_error_not_a_kill(tmp_path: Path) -> None:
    """A run stopped before the mutant changed anything says the machine is slow; a mutant
    that never ran cannot be what made it slow."""
    log = tmp_path / "output.log"
    log.write_text("collecting ...\n")
    unmutated = RunResults(RunInfo(), (TestResult(HANG, Outcome.PASSED),))
    slow = SuiteRun(2, None, {}, 45.0, True, log)
    result = classify("optimizer-noop", unmutated, slow, budget_cut=False)
    assert result.status is Status.ERROR and "raise --mutant-timeout" in result.message
    # reached, then stopped with no results salvaged: a timeout kill, not a crash
    reached = SuiteRun(-9, None, {HANG: 1}, 45.0, True, log)
    result = classify("optimizer-noop", unmutated, reached, budget_cut=False)
    assert (result.status, result.kill) == (Status.KILLED, Kill.TIMEOUT)
