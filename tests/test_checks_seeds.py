"""The training checks' defaults hold across seeds: correct models pass on every one of 20.

This is the check on the statistical design stated in the docstrings of
``assert_loss_decreases`` / ``assert_overfits``: the seed changes the model's initialisation,
the data and the dropout masks; the defaults must not fail a model that learns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from mlcheck.checks import (
    CheckFailed,
    assert_loss_decreases,
    assert_overfits,
    assert_params_update,
)

SEEDS = range(20)


def bert(seed: int) -> tuple[nn.Module, Any]:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
        num_labels=3,
    )
    model = BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (6, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[3:, 5:] = 0
    labels = torch.randint(0, 3, (6,), generator=g)
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


def mlp(seed: int) -> tuple[nn.Module, Any]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    g = torch.Generator().manual_seed(seed)
    return model, (torch.randn(8, 8, generator=g), torch.randint(0, 3, (8,), generator=g))


CHECKS: dict[str, Callable[..., Any]] = {
    "loss_decreases": assert_loss_decreases,
    "overfits": assert_overfits,
    "params_update": assert_params_update,
}


@pytest.mark.slow
@pytest.mark.parametrize("family", [mlp, bert], ids=["mlp", "bert"])
@pytest.mark.parametrize("check", list(CHECKS))
def test_correct_models_pass_on_every_seed(
    family: Callable[[int], tuple[nn.Module, Any]], check: str
) -> None:
    failures = []
    for seed in SEEDS:
        model, batch = family(seed)
        try:
            CHECKS[check](model, batch, seed=seed)
        except CheckFailed as failed:
            failures.append(f"seed {seed}: {failed}")
    assert not failures, f"{len(failures)} of {len(SEEDS)} seeds failed:\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("family", [mlp, bert], ids=["mlp", "bert"])
def test_learning_rate_zero_fails_on_every_seed(
    family: Callable[[int], tuple[nn.Module, Any]],
) -> None:
    """The other side of the design: a model that cannot learn never passes."""
    passed = []
    for seed in SEEDS:
        model, batch = family(seed)
        try:
            assert_loss_decreases(model, batch, lr=0.0, steps=3, seed=seed)
            passed.append(seed)
        except CheckFailed:
            pass
    assert not passed, f"lr=0 passed on seeds {passed}"
