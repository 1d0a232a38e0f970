"""assert_device_roundtrip (mlcheck/checks/devices.py) pass on correct models and fail, with a
message naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import bert_config, make_bert, make_tiny, tabular_batch, text_batch
from torch import nn
from transformers import (
    BertForSequenceClassification,
)

from mlcheck.checks import (
    CheckFailed,
    assert_device_roundtrip,
)
from mlcheck.errors import AcceleratorMissing


class MaskFromCpu(nn.Module):
    """Planted bug: a tensor created inside forward without device=."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.eye(8)  # lands on the CPU whatever the model's device
        return self.linear(x @ weights)


class UnregisteredScale(nn.Module):
    """Planted bug: a plain tensor attribute, which .to() does not move."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)
        self.scale = torch.ones(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale.to(x.device)


class ExtraCpuOutput(nn.Module):
    """Planted bug: an output built on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.linear(x), "counts": torch.zeros(x.shape[0])}


def test_device_roundtrip_meta_passes_and_keeps_weights() -> None:
    model = make_bert()
    before = model.classifier.weight.detach().clone()
    assert_device_roundtrip(model, text_batch(labels=False), device="meta")
    assert_device_roundtrip(make_tiny(), tabular_batch()[0], device="meta")
    assert model.classifier.weight.device.type == "cpu"
    assert torch.equal(model.classifier.weight, before)
    with torch.device("meta"):  # as models.empty builds it: full size, no weights
        empty = BertForSequenceClassification(bert_config())
    assert_device_roundtrip(empty, text_batch(labels=False), device="meta")


def test_device_roundtrip_meta_catches_tensor_created_on_cpu() -> None:
    # meta silently accepts `meta @ cpu`, so only watching every operation catches this
    with pytest.raises(CheckFailed) as failed:
        assert_device_roundtrip(MaskFromCpu(), torch.randn(2, 8), device="meta")
    message = str(failed.value)
    assert "forward uses tensors that are not on meta" in message
    assert "mixes cpu with meta" in message
    assert "test_devices.py" in message and "torch.eye(8)" in message  # the guilty line
    assert "device=x.device" in message


def test_device_roundtrip_names_plain_tensor_attribute() -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_device_roundtrip(UnregisteredScale(), torch.randn(2, 8), device="meta")
    message = str(failed.value)
    assert "tensors stayed off meta after model.to('meta')" in message
    assert "scale (plain tensor attribute, not a registered buffer) on cpu" in message
    assert "register_buffer" in message


def test_device_roundtrip_catches_output_left_on_cpu() -> None:
    with pytest.raises(CheckFailed, match="outputs are not on meta") as failed:
        assert_device_roundtrip(ExtraCpuOutput(), torch.randn(2, 8), device="meta")
    assert "counts on cpu" in str(failed.value)


def test_device_roundtrip_numbers_path_on_cpu() -> None:
    # the path an accelerator takes (reference outputs, comparison, return trip), run on CPU
    model = make_bert()
    assert_device_roundtrip(model, text_batch(labels=False), device="cpu", seed=1)
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="has an accelerator"
)
def test_device_roundtrip_without_accelerator_says_what_to_do() -> None:
    with pytest.raises(AcceleratorMissing) as missing:
        assert_device_roundtrip(make_tiny(), torch.randn(2, 8))
    assert "device='meta'" in str(missing.value)
    assert "mlcheck:gpu" in str(missing.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on GPU machines)")
def test_device_roundtrip_on_cuda() -> None:
    model = make_bert()
    assert_device_roundtrip(model, text_batch(labels=False), device="cuda")
    assert model.classifier.weight.device.type == "cpu"
    with pytest.raises(CheckFailed, match="mixes cpu with cuda"):
        assert_device_roundtrip(MaskFromCpu(), torch.randn(2, 8), device="cuda")
