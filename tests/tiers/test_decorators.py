"""Tiers from transformers' and accelerate's own decorators (the real ones, installed).

Each scenario is a subprocess: transformers and accelerate read RUN_SLOW when their testing
helpers are imported, which must happen in a fresh process."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from runcli import mlcheck

from mlcheck.results.schema import Outcome, read
from mlcheck.tiers.decorators import rules, tiers_of

HF_STYLE = """
import os
import unittest

import pytest
from accelerate.test_utils import require_cuda, require_multi_device, require_non_cpu
from accelerate.test_utils.testing import slow as accelerate_slow
from transformers import testing_utils
from transformers.testing_utils import require_torch_gpu, require_torch_multi_gpu, slow


class ModelTest(unittest.TestCase):
    def test_forward(self):
        for i in range(2):
            with self.subTest(i=i):
                self.assertEqual(i * 2, i + i)

    @slow
    def test_slow_generation(self):
        self.assertEqual(os.environ.get("RUN_SLOW"), "1")

    @require_torch_gpu
    def test_on_gpu(self):
        pass

    @testing_utils.require_torch_accelerator
    def test_attribute_form(self):
        pass

    @require_torch_multi_gpu
    def test_two_gpus(self):
        pass


@require_cuda
class CudaTest(unittest.TestCase):
    def test_cuda(self):
        pass


@accelerate_slow
class SlowSuite(unittest.TestCase):
    def test_slow_class(self):
        self.assertEqual(os.environ.get("RUN_SLOW"), "1")


@require_multi_device
def test_multi_device():
    pass


@require_non_cpu
def test_non_cpu():
    pass
"""

OWN_DECORATORS = """
def slow(test):  # the project's own `slow`: not transformers', so not the real tier
    return test


def require_my_tpu(test):
    return test


@slow
def test_own_slow():
    pass


@require_my_tpu
def test_tpu():
    pass
"""

TIERS = {
    "ModelTest::test_forward": "fast",
    "ModelTest::test_slow_generation": "real",
    "ModelTest::test_on_gpu": "gpu",
    "ModelTest::test_attribute_form": "gpu",
    "ModelTest::test_two_gpus": "gpu",
    "CudaTest::test_cuda": "gpu",
    "SlowSuite::test_slow_class": "real",
    "test_multi_device": "gpu",
    "test_non_cpu": "gpu",
    "test_own_slow": "fast",
    "test_tpu": "gpu",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.mlcheck]\ndecorators = { require_my_tpu = "gpu" }\n'
    )
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_hf_style.py").write_text(HF_STYLE)
    (tests / "test_own.py").write_text(OWN_DECORATORS)
    return tmp_path


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("RUN_SLOW", "MLCHECK_TIER")}
    out["OMP_NUM_THREADS"] = "1"
    return out


def short(nodeid: str) -> str:
    return nodeid.split(".py::", 1)[1]


def test_collect_only_assigns_tiers_from_the_source_on_any_machine(project: Path) -> None:
    done = mlcheck("run", "--tier", "all", "tests", "--", "--collect-only", cwd=project, env=env())
    found = dict(
        (short(m.group(2)), m.group(1))
        for m in re.finditer(r"^mlcheck: tier (\w+) (\S+)$", done.stdout, re.M)
    )
    assert found == TIERS, done.stdout + done.stderr


def test_fast_tier_runs_fast_tests_and_reports_the_others_as_not_run(project: Path) -> None:
    done = mlcheck("run", "--tier", "fast", "tests", cwd=project, env=env())
    assert done.returncode == 0, done.stdout + done.stderr
    tests = {short(t.nodeid): t for t in read(project / "mlcheck-results").tests}
    assert {name: t.tier for name, t in tests.items()} == TIERS
    for name, tier in TIERS.items():
        expected = Outcome.PASSED if tier == "fast" else Outcome.NOT_RUN
        assert tests[name].outcome is expected, (name, tests[name])
    slow = tests["ModelTest::test_slow_generation"]
    assert "mlcheck run --tier real" in slow.message
    assert "label the PR `mlcheck:gpu`" in tests["CudaTest::test_cuda"].message


def test_real_tier_runs_slow_tests_with_run_slow_set(project: Path) -> None:
    done = mlcheck("run", "--tier", "real", "tests", cwd=project, env=env())
    assert done.returncode == 0, done.stdout + done.stderr
    tests = {short(t.nodeid): t for t in read(project / "mlcheck-results").tests}
    # they assert RUN_SLOW=1 themselves: a skip by transformers would not be a pass
    assert tests["ModelTest::test_slow_generation"].outcome is Outcome.PASSED
    assert tests["SlowSuite::test_slow_class"].outcome is Outcome.PASSED
    assert tests["ModelTest::test_on_gpu"].outcome is Outcome.NOT_RUN
    assert tests["ModelTest::test_forward"].outcome is Outcome.NOT_RUN


def test_gpu_tier_follows_the_tier_rules_on_this_machine(project: Path) -> None:
    import torch

    done = mlcheck("run", "--tier", "gpu", "--allow-missing", "tests", cwd=project, env=env())
    tests = {short(t.nodeid): t for t in read(project / "mlcheck-results").tests}
    gpu = tests["CudaTest::test_cuda"]
    if torch.cuda.is_available():
        assert gpu.outcome is Outcome.PASSED
    else:
        # skipped by mlcheck's tier rule (with the reason), not by accelerate's own skip
        assert gpu.outcome is Outcome.SKIPPED, gpu
        assert "needs an accelerator" in gpu.message
        assert done.returncode == 0, done.stdout + done.stderr
        strict = mlcheck("run", "--tier", "gpu", "tests", cwd=project, env=env())
        assert strict.returncode == 1
        failed = {short(t.nodeid): t for t in read(project / "mlcheck-results").tests}
        assert failed["test_non_cpu"].outcome is Outcome.ERROR


def test_origin_is_checked_and_the_manifest_extends_the_list(tmp_path: Path) -> None:
    import sys

    source = tmp_path / "decorated_mod.py"
    source.write_text(
        textwrap.dedent("""
        from transformers.testing_utils import slow as hf_slow
        def slow(f): return f
        @slow
        def mine(): pass
        @hf_slow
        def theirs(): pass
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import decorated_mod  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    table = rules()
    assert tiers_of(decorated_mod.mine, None, table) == []
    assert [t.tier for t in tiers_of(decorated_mod.theirs, None, table)] == ["real"]  # aliased
    assert [t.tier for t in tiers_of(decorated_mod.mine, None, rules({"slow": "gpu"}))] == ["gpu"]


def test_reading_an_unregistered_pytest_mark_adds_no_warning_of_its_own(
    tmp_path: Path, pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`@pytest.mark.flash_attn_test` (unregistered) warns once, where the test module wrote it;
    reading the decorators must not warn again from mlcheck's own source."""
    import sys
    import warnings

    from _pytest.mark.structures import MARK_GEN

    # pytest warns of unknown marks only while a session's config is set on `pytest.mark`; an
    # earlier in-process pytester run in this worker may have left it unset
    monkeypatch.setattr(MARK_GEN, "_config", pytestconfig)
    source = tmp_path / "marked_mod.py"
    source.write_text("import pytest\n@pytest.mark.not_registered_here\ndef test_x(): pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.warns(pytest.PytestUnknownMarkWarning):
            import marked_mod  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiers_of(marked_mod.test_x, None, rules()) == []


# Accelerator-sounding helpers of the installed transformers and accelerate that still run on a
# CPU-only machine (they check a dtype, a version or a library, or skip on an accelerator):
# they leave a test in its tier.
RUNS_ON_CPU = {
    "require_torch_bf16",
    "require_torch_fp16",
    "require_fp16",
    "require_cuda_capability_at_least",
    "require_deterministic_for_accelerator",
    "require_deterministic_for_xpu",
    "require_non_hpu",
    "require_non_xpu",
    "require_non_torch_xla",
    "require_cpu",
    "require_flash_linear_attention",
}
ACCELERATOR_WORDS = re.compile(
    r"gpu|cuda|xpu|npu|mps|hpu|tpu|xla|mlu|musa|sdaa|neuron|accelerator|device|flash_attn|"
    r"fp8|tf32|tensorrt|transformer_engine"
)


def test_builtin_decorators_cover_every_accelerator_helper_installed() -> None:
    """Read transformers' and accelerate's testing helpers at the installed versions: every
    ``require_*`` that names an accelerator is in the built-in list (tier gpu), or is known to
    run on CPU; every built-in name still exists in one of them."""
    from accelerate.test_utils import testing as accelerate_testing
    from transformers import testing_utils

    from mlcheck.tiers.decorators import BUILTIN

    helpers = {
        name
        for module in (testing_utils, accelerate_testing)
        for name in vars(module)
        if name.startswith("require_") and callable(getattr(module, name))
    }
    accelerator = {n for n in helpers if ACCELERATOR_WORDS.search(n)}
    uncovered = sorted(accelerator - set(BUILTIN) - RUNS_ON_CPU)
    assert uncovered == [], "add these to tiers.decorators.BUILTIN (tier gpu) or RUNS_ON_CPU"
    assert {n for n in BUILTIN if n != "slow"} <= helpers | {"require_torch_cuda"}
    assert {n: BUILTIN[n].tier for n in ("require_torch_mps", "require_torch_npu")} == {
        "require_torch_mps": "gpu",
        "require_torch_npu": "gpu",
    }
