"""Sizing gpu-tier tests: meta-device estimates, measured peaks, runner classes."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from mlcheck.errors import ManifestError
from mlcheck.models import ModelFactory
from mlcheck.project.sizing import (
    ACTIVATION_ALLOWANCE,
    CUDA_CONTEXT_GB,
    GB,
    Estimate,
    estimate,
    estimate_from_models,
    measured_peaks,
    memory_problem,
    parameter_bytes,
    plan_runners,
    read_gpu_runners,
)
from mlcheck.results.schema import Outcome, RunInfo, RunResults, TestResult, from_dict, to_dict
from mlcheck.tiers import MarkInfo, needs_of

LLAMA_8B = tf.LlamaConfig(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    tie_word_embeddings=False,
    dtype="bfloat16",
    architectures=["LlamaForCausalLM"],
)


def _llama_parameters(c: tf.LlamaConfig) -> int:
    """Llama's parameter count from its architecture (no bias anywhere)."""
    head_dim = c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    attention = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv  # q, o; k, v
    mlp = 3 * c.hidden_size * c.intermediate_size  # gate, up, down
    norms = 2 * c.hidden_size
    per_layer = attention + mlp + norms
    embeddings = c.vocab_size * c.hidden_size
    head = 0 if c.tie_word_embeddings else c.vocab_size * c.hidden_size
    return embeddings + c.num_hidden_layers * per_layer + c.hidden_size + head


def test_llama_8b_on_the_meta_device_is_within_5_percent_of_its_true_parameter_bytes() -> None:
    true_params = _llama_parameters(LLAMA_8B)
    assert 8.0e9 < true_params < 8.1e9  # the published 8.03B
    models = ModelFactory()
    model = models.empty(LLAMA_8B, task="causal-lm")
    by_dtype = parameter_bytes(model)
    true_bytes = true_params * 2  # bfloat16
    assert abs(sum(by_dtype.values()) - true_bytes) / true_bytes < 0.05
    assert by_dtype["bfloat16"] == true_bytes  # every parameter is counted, exactly
    est = estimate_from_models("t::llama", [LLAMA_8B], models)
    expected = true_bytes / GB * (1 + ACTIVATION_ALLOWANCE) + CUDA_CONTEXT_GB
    assert est.gb == pytest.approx(expected, rel=0.01)
    assert "bfloat16" in est.basis and "CUDA context" in est.basis


def test_tied_embeddings_are_counted_once_and_dtype_is_honoured() -> None:
    config = tf.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True,
    )  # fmt: skip
    model = ModelFactory().empty(config, task="causal-lm", dtype=torch.float16)
    assert sum(parameter_bytes(model).values()) >= _llama_parameters(config) * 2
    # buffers (rotary inv_freq, float32) are counted at their own dtype
    assert parameter_bytes(model)["float16"] == _llama_parameters(config) * 2


def test_a_measured_peak_replaces_the_model_estimate() -> None:
    test = TestResult(
        nodeid="t::gen", outcome=Outcome.PASSED, tier="gpu", device="cuda: H100",
        gpu_peak_bytes=30 * GB,
    )  # fmt: skip
    results = from_dict(to_dict(RunResults(run=RunInfo(), tests=(test,))))
    assert results.tests[0].gpu_peak_bytes == 30 * GB  # survives results.json
    peaks = measured_peaks(results)
    est = estimate("t::gen", [LLAMA_8B], ModelFactory(), peaks)
    assert est is not None and est.gb == pytest.approx(30 * 1.1 + CUDA_CONTEXT_GB, rel=0.01)
    assert "measured peak 30.0 GB on cuda: H100" in est.basis
    other = estimate("t::other", [LLAMA_8B], ModelFactory(), peaks)
    assert other is not None and "meta device" in other.basis
    assert estimate("t::none", [], ModelFactory(), peaks) is None


def test_runner_plan_uses_the_smallest_class_that_fits_and_reports_what_fits_none() -> None:
    runners = read_gpu_runners(
        {"gpu_runners": {"24": ["self-hosted", "gpu-24g"], "80": ["gpu-80g"]}}
    )
    plan = plan_runners(
        [
            Estimate("t::small", 3.0, "weights"),
            Estimate("t::llama", 20.3, "weights"),
            Estimate("t::big", 41.0, "measured"),
            Estimate("t::huge", 150.0, "weights of a 70B"),
        ],
        runners,
    )
    assert [e.nodeid for e in plan.dispatches[24.0]] == ["t::small", "t::llama"]
    assert [e.nodeid for e in plan.dispatches[80.0]] == ["t::big"]
    assert [e.nodeid for e in plan.too_big] == ["t::huge"]
    lines = plan.reasons()
    assert lines[0].startswith("2 tests on `self-hosted, gpu-24g` (24 GB class): largest need 20.3")
    assert "t::huge needs 150.0 GB" in lines[2] and "largest runner class (80 GB)" in lines[2]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"gpu_runners": ["gpu"]}, "must be a table"),
        ({"gpu_runners": {"big": ["gpu"]}}, "'big' is not a memory size in GB"),
        ({"gpu_runners": {"24": []}}, "must list runs-on labels"),
    ],
)
def test_bad_gpu_runners_tables_are_clear_errors(table, problem) -> None:
    with pytest.raises(ManifestError, match=problem):
        read_gpu_runners(table)


def test_auto_memory_on_a_too_small_device_names_the_need_and_the_fix() -> None:
    est = estimate_from_models("t::llama", [LLAMA_8B], ModelFactory())
    problem = memory_problem(est, 16.0, "NVIDIA T4")
    assert problem is not None
    assert problem.startswith("needs about 18.9 GB of accelerator memory (weights on the meta")
    assert "NVIDIA T4 has 16.0 GB: send it to a larger runner class" in problem
    assert memory_problem(est, 80.0, "NVIDIA H100") is None
    assert memory_problem(est, None, "Apple M2") is None  # MPS reports no total: not checked


def test_gpu_min_memory_auto_is_a_need_not_a_number() -> None:
    needs = needs_of(
        [MarkInfo("gpu", (), {"min_memory_gb": "auto"}), MarkInfo("real_model", ("a/b",))]
    )
    assert needs.memory_auto and needs.min_memory_gb is None and needs.models == ("a/b",)
