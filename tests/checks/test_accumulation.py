"""assert_grad_accumulation (mlcheck/checks/accumulation.py) pass on correct models and fail, with
a message naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_models import SEEDS, gpt2, tokens
from torch import nn

from mlcheck.checks import (
    CheckFailed,
)


def uneven_lm_batch(seed: int) -> dict[str, torch.Tensor]:
    """4 rows of 12 tokens, right-padded to different lengths: micro-batches of uneven size."""
    ids = tokens(seed, rows=4, length=12)
    mask = torch.ones_like(ids)
    for row, length in enumerate((12, 11, 4, 3)):
        mask[row, length:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def scored(micro: dict[str, torch.Tensor]) -> int:
    return int((micro["labels"][:, 1:] != -100).sum())


def mean_of_means(model: nn.Module, micro: list[Any]) -> None:
    for piece in micro:
        (model(**piece).loss / len(micro)).backward()


def undivided(model: nn.Module, micro: list[Any]) -> None:
    for piece in micro:
        model(**piece).loss.backward()


def token_weighted(model: nn.Module, micro: list[Any]) -> None:
    total = sum(scored(piece) for piece in micro)
    for piece in micro:
        (model(**piece).loss * scored(piece) / total).backward()


def test_grad_accumulation_catches_a_mean_of_micro_batch_means() -> None:
    from mlcheck.checks import assert_grad_accumulation

    for seed in SEEDS:
        model, batch = gpt2(seed, n_layer=1, n_positions=32), uneven_lm_batch(seed)
        with pytest.raises(CheckFailed) as failed:
            assert_grad_accumulation(model, batch, mean_of_means, micro_batches=2, seed=seed)
        text = str(failed.value)
        assert "the accumulated gradient is not the full batch's gradient" in text
        assert "a mean of micro-batch means" in text and "[23, 7] labelled tokens" in text
        with pytest.raises(CheckFailed, match="not divided by the number of micro-batches"):
            assert_grad_accumulation(model, batch, undivided, micro_batches=2, seed=seed)
        assert_grad_accumulation(model, batch, token_weighted, micro_batches=2, seed=seed)
        assert all(p.grad is None for p in model.parameters())  # put back
