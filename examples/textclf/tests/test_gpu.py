"""GPU tier: the classifier on an accelerator (CUDA/ROCm, XPU or MPS, whatever torch reports).

Run with ``mlcheck run --tier gpu`` on a machine with one; elsewhere these tests are reported
as not run, with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import MODEL_ID
from test_real import CANARIES
from textclf import TextClassifier

from mlcheck.checks import assert_device_roundtrip, assert_predicts
from mlcheck.tiers import require_accelerator


@pytest.mark.gpu
def test_device_roundtrip_on_the_accelerator(
    tiny_clf: TextClassifier, inputs: dict[str, torch.Tensor]
) -> None:
    # CPU -> accelerator -> CPU: every weight moves, forward stays on the device, and the
    # accelerator's logits agree with the CPU's.
    assert_device_roundtrip(tiny_clf, inputs)


@pytest.mark.gpu
@pytest.mark.real_model(MODEL_ID)
def test_real_model_on_the_accelerator(models: Any) -> None:
    tokenizer = models.tokenizer(MODEL_ID)
    device = require_accelerator().type
    cpu = TextClassifier.from_encoder(models.real(MODEL_ID))
    gpu = TextClassifier.from_encoder(models.real(MODEL_ID, device=device))
    assert {p.device.type for p in gpu.parameters()} == {device}  # the head followed the encoder
    assert_predicts(gpu, tokenizer, CANARIES)
    texts = [c["text"] for c in CANARIES]
    on_cpu, on_gpu = cpu.predict(texts, tokenizer), gpu.predict(texts, tokenizer)
    assert [p["label"] for p in on_gpu] == [p["label"] for p in on_cpu]
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)
