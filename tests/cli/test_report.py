"""`mlcheck report`: merge result directories and write the report files."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import cmarkgfm
import pytest
from runcli import mlcheck

from mlcheck.cli import main
from mlcheck.results import digest
from mlcheck.results import schema as results
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult

SHA = "0123456789abcdef0123456789abcdef01234567"


def _cases():  # type: ignore[no-untyped-def]
    path = Path(__file__).parents[1] / "data" / "report-golden" / "cases.py"
    spec = importlib.util.spec_from_file_location("golden_cases", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["golden_cases"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def github_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    summary = tmp_path / "step_summary.md"
    for key, value in {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "acme/models",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_SHA": SHA,
        "GITHUB_RUN_ID": "42",
        "GITHUB_STEP_SUMMARY": str(summary),
        "HF_TOKEN": "hf-secret-value-123",
    }.items():
        monkeypatch.setenv(key, value)
    return summary


def test_report_merges_shards_and_tiers(
    tmp_path: Path, github_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _cases()
    s1, s2, gpu = tmp_path / "s1", tmp_path / "s2", tmp_path / "gpu"
    results.write(
        RunResults(
            RunInfo(tiers=("fast",), shard="1/2", sha=SHA),
            (
                TestResult("tests/a.py::test_1", Outcome.PASSED, file="tests/a.py", line=1),
                TestResult(
                    "tests/test_gpu.py::test_fp16", Outcome.NOT_RUN, message="label mlcheck:gpu"
                ),
            ),
        ),
        s1,
    )
    results.write(
        RunResults(
            RunInfo(tiers=("fast",), shard="2/2", sha=SHA),
            (
                TestResult(
                    "tests/b.py::test_2",
                    Outcome.FAILED,
                    file="tests/b.py",
                    line=7,
                    message="AssertionError: token hf-secret-value-123 leaked",
                    traceback="E   AssertionError",
                ),
            ),
        ),
        s2,
    )
    results.write(cases.merged_shards()["real,gpu"], gpu)
    out = tmp_path / "out"
    code = main(["report", str(s1), str(s2), str(gpu), "--out", str(out), "--step-summary"])
    assert code == 1  # a test failed
    merged = results.read(out)
    assert {t.run for t in merged.tests} == {"fast", "real,gpu"}
    assert not [t for t in merged.tests if t.outcome is Outcome.NOT_RUN]  # ran on the GPU job
    report = (out / "report.md").read_text(encoding="utf-8")
    assert len(report) <= 60_000 and "hf-secret-value-123" not in report
    assert set(digest.parse(report)) == {"fast", "real,gpu"}
    assert set(digest.read(out / "digest.txt")) == {"fast", "real,gpu"}
    html = cmarkgfm.github_flavored_markdown_to_html(report)
    assert "https://github.com/acme/models/blob/" + SHA + "/tests/b.py#L7" in html
    assert "NVIDIA H100" in report
    assert github_env.read_text(encoding="utf-8").startswith("### ❌")
    durations = json.loads((out / "durations.json").read_text(encoding="utf-8"))
    assert "tests/b.py::test_2" in durations
    stdout = capsys.readouterr().out
    assert "::error file=tests/b.py,line=7,title=failure%3A tests/b.py%3A%3Atest_2::" in stdout
    assert "hf-secret-value-123" not in stdout


def test_report_with_base_digest_finds_new_failures(
    tmp_path: Path, github_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base"
    results.write(
        RunResults(RunInfo(sha="f" * 40), (TestResult("t.py::test_x", Outcome.PASSED),)), base
    )
    assert main(["report", str(base), "--out", str(base / "out"), "--no-annotations"]) == 0
    head = tmp_path / "head"
    results.write(
        RunResults(RunInfo(sha=SHA), (TestResult("t.py::test_x", Outcome.FAILED, message="x"),)),
        head,
    )
    code = main(
        [
            "report",
            str(head),
            "--out",
            str(head / "out"),
            "--base-digest",
            str(base / "out" / "report.md"),
            "--format",
            "markdown",
        ]
    )
    assert code == 1
    report = (head / "out" / "report.md").read_text(encoding="utf-8")
    assert "New failures (1)" in report and "change vs base" in report
    assert not (head / "out" / "results.json").exists()  # only markdown was asked for


def test_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no results at" in capsys.readouterr().err
    (tmp_path / "results.json").write_text('{"schema_version": 99}', encoding="utf-8")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "schema_version 99" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report"])


@pytest.mark.slow
def test_real_shards_with_reruns_setup_errors_and_xdist_merge(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_suite.py").write_text(
        "import os, pytest\n"
        "@pytest.fixture\n"
        "def broken_model():\n"
        "    raise OSError('weights missing for @someone #12')\n"
        "def test_setup_error(broken_model):\n"
        "    pass\n"
        "def test_fails():\n"
        "    assert 1 == 2, 'numbers differ'\n"
        "def test_flaky():\n"
        "    marker = os.path.join(os.path.dirname(__file__), 'flaky-once')\n"
        "    if not os.path.exists(marker):\n"
        "        open(marker, 'w').close()\n"
        "        assert False, 'first attempt fails'\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_ok(i):\n"
        "    pass\n"
        "@pytest.mark.gpu\n"
        "def test_gpu():\n"
        "    pass\n",
        encoding="utf-8",
    )
    dirs = []
    for i in (1, 2):
        out = tmp_path / f"shard{i}"
        proc = mlcheck(
            "run", "tests", "--shard", f"{i}/2", "-n", "2", "--results-dir", str(out),
            "--", "--reruns", "1", cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        dirs.append(out)
    shard_tests = [{t.nodeid for t in results.read(d).tests} for d in dirs]
    ran = [{n for n in s if "test_gpu" not in n} for s in shard_tests]
    assert ran[0] and ran[1] and ran[0].isdisjoint(ran[1])
    merged_dir = tmp_path / "merged"
    proc = mlcheck("report", *map(str, dirs), "--out", str(merged_dir), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    merged = results.read(merged_dir)
    by_name = {t.name: t for t in merged.tests}
    assert len([n for n in by_name if n.startswith("test_ok")]) == 8
    assert by_name["test_setup_error"].outcome is Outcome.ERROR
    assert by_name["test_setup_error"].phase is not None
    assert by_name["test_setup_error"].phase.value == "setup"
    assert by_name["test_fails"].outcome is Outcome.FAILED
    assert by_name["test_flaky"].outcome is Outcome.FLAKY
    assert by_name["test_gpu"].outcome is Outcome.NOT_RUN
    report = (merged_dir / "report.md").read_text(encoding="utf-8")
    assert "Flaky" in report and "error in setup" in report and "Not run (1)" in report
    # neutralised everywhere GitHub would link them (code blocks are never linked)
    html = cmarkgfm.github_flavored_markdown_to_html(report)
    outside_code = re.sub(r"<pre.*?</pre>", "", html, flags=re.S)
    assert "weights missing for @" in outside_code
    assert "@someone" not in outside_code and "#12" not in outside_code
    assert "shard" not in report.split("<!--")[0].lower()  # both shards: a whole section


def test_links_point_at_the_dispatched_sha_not_github_sha(tmp_path: Path) -> None:
    """A dispatched GPU run runs on the default branch (GITHUB_SHA) but tests `inputs.sha`."""
    from mlcheck.publish.outputs import context_from_env

    pinned, default_branch = "a" * 40, "b" * 40
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"inputs": {"sha": pinned, "pr": "7", "tier": "real,gpu"}}))
    env = {
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_SHA": default_branch,
    }
    assert context_from_env(env).sha == pinned
    assert context_from_env({**env, "GITHUB_EVENT_NAME": "push"}).sha == default_branch
    assert context_from_env({"GITHUB_SHA": default_branch}).sha == default_branch  # local
    unreadable = {**env, "GITHUB_EVENT_PATH": str(tmp_path / "missing.json")}
    assert context_from_env(unreadable).sha == default_branch


def test_section_puts_a_merged_report_in_that_one_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--section nightly` is "one section key for everything": a file that is itself a merge
    (its tests tagged `fast` and `real,gpu`) comes out as the one `nightly` section, with
    every test and the failure's verdict kept."""
    merged = tmp_path / "merged"
    results.write(
        RunResults(
            RunInfo(tiers=("fast", "real", "gpu"), sha=SHA),
            (
                TestResult("t.py::test_fast", Outcome.PASSED, run="fast"),
                TestResult("t.py::test_gpu", Outcome.FAILED, run="real,gpu", message="boom"),
                TestResult("t.py::test_untagged", Outcome.PASSED),
            ),
        ),
        merged,
    )
    out = tmp_path / "out"
    argv = ["report", str(merged), "--out", str(out), "--section", "nightly"]
    assert main([*argv, "--no-annotations", "--no-step-summary"]) == 1
    again = results.read(out)
    assert {t.run for t in again.tests} == {"nightly"} and len(again.tests) == 3
    assert set(digest.read(out / "digest.txt")) == {"nightly"}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert set(digest.parse(report)) == {"nightly"} and "`nightly`" in report
    assert "`fast`" not in report and "`real,gpu`" not in report
    capsys.readouterr()
    assert main(["report", str(merged), "--out", str(out), "--section", "Not A Key"]) == 2
    assert "--section" in capsys.readouterr().err
