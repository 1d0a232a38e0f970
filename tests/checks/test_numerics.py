"""assert_finite, assert_deterministic and assert_dtype_agrees (mlcheck/checks/numerics.py) pass on
correct models and fail, with a message naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import (
    SEEDS,
    TinyNet,
    bert,
    gpt2,
    ids,
    llama,
    make_bert,
    make_tiny,
    tabular_batch,
    text_batch,
)
from torch import nn

from mlcheck.checks import (
    CheckFailed,
    assert_deterministic,
    assert_dtype_agrees,
    assert_finite,
)


class SqrtOfZero(nn.Module):
    """Planted bug: finite outputs, NaN gradients (d sqrt(x)/dx at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y + torch.sqrt(y - y)


def test_finite_passes() -> None:
    assert_finite(torch.tensor([1.0, 2.0]))
    assert_finite(make_bert(), text_batch())
    assert_finite(make_tiny(), tabular_batch()[0])


def test_finite_catches_nan_weight() -> None:
    model = make_bert()
    with torch.no_grad():
        model.classifier.weight[1, 4] = math.nan  # the planted bug
    with pytest.raises(CheckFailed) as failed:
        assert_finite(model, text_batch())
    message = str(failed.value)
    assert "non-finite values in the weights" in message
    assert "classifier.weight: 1 NaN, 0 Inf of 96 values (first at (1, 4))" in message


def test_finite_catches_nan_output_and_gradient() -> None:
    class LogOfNegative(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(self.head(self.body(x)) - 100)

    with pytest.raises(CheckFailed, match="non-finite values in the outputs"):
        assert_finite(LogOfNegative(), tabular_batch()[0])
    torch.manual_seed(0)
    model = SqrtOfZero()
    with pytest.raises(CheckFailed) as failed:
        assert_finite(model, torch.randn(2, 8))
    message = str(failed.value)
    assert "non-finite values in the gradients" in message
    assert "linear.weight.grad: 24 NaN" in message
    assert model.linear.weight.grad is None  # gradients are left as they were
    assert_finite(model, torch.randn(2, 8), grads=False)


def test_finite_blames_the_input() -> None:
    with pytest.raises(CheckFailed, match=r"non-finite input \(not the model's fault"):
        assert_finite(make_tiny(), torch.full((2, 8), math.inf))


def test_deterministic_in_eval_mode() -> None:
    assert_deterministic(make_bert(), text_batch(labels=False))


def test_deterministic_catches_dropout_left_on() -> None:
    model = make_bert().train()  # the planted bug: inference with dropout on
    with pytest.raises(CheckFailed) as failed:
        assert_deterministic(model, text_batch(labels=False))
    message = str(failed.value)
    assert "outputs differ between two identical calls" in message
    assert "logits (torch.float32): max |Δ| =" in message
    assert "model.training is True" in message and "call model.eval()" in message
    assert "bert.embeddings.dropout" in message


class RMSNormNet(nn.Module):
    """Large activations into an RMSNorm; ``upcast=False`` is the planted fp16 bug."""

    def __init__(self, upcast: bool = True) -> None:
        super().__init__()
        self.upcast = upcast
        self.proj = nn.Linear(8, 64)
        self.norm = RMSNorm(64, upcast)
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.proj(x)))


class RMSNorm(nn.Module):
    def __init__(self, size: int, upcast: bool) -> None:
        super().__init__()
        self.upcast = upcast
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float() if self.upcast else x
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.weight * h.to(x.dtype)


def big_inputs(seed: int = 0) -> torch.Tensor:
    # activations of a few hundred, like real models' outlier features: x**2 > 65504
    return 400 * torch.randn(4, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_dtype_agrees_on_correct_models(seed: int, dtype: torch.dtype) -> None:
    assert_dtype_agrees(llama(seed), ids(seed), dtype=dtype)
    assert_dtype_agrees(gpt2(seed), ids(seed), dtype=dtype)
    assert_dtype_agrees(bert(seed), {"input_ids": ids(seed)}, dtype=dtype)
    torch.manual_seed(seed)
    assert_dtype_agrees(RMSNormNet(), big_inputs(seed), dtype=dtype)


def test_dtype_agrees_names_the_rmsnorm_without_upcast() -> None:
    torch.manual_seed(0)
    model = RMSNormNet(upcast=False)
    assert_finite(model.half(), big_inputs().half(), grads=False)  # finite zeros: passes
    model.float()
    with pytest.raises(CheckFailed) as failed:
        assert_dtype_agrees(model, big_inputs(), dtype=torch.float16, seed=4)
    message = str(failed.value)
    assert "the model in torch.float16 does not agree with float32" in message
    assert "first diverging module: norm (RMSNorm)" in message and "all zeros" in message
    assert "upcast with x.float()" in message and "seed:       4" in message
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched


def test_finite_names_the_first_module_producing_non_finite_values() -> None:
    class Exp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x * 1000)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), Exp(), nn.Linear(4, 2))
    with pytest.raises(CheckFailed) as failed:
        assert_finite(model, torch.randn(2, 4) + 5, grads=False)
    assert "first module producing a non-finite value: 1 (Exp)" in str(failed.value)
