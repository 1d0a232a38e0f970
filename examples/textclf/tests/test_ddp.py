"""Distributed: the training step on 2 processes, in the fast tier (CPU, gloo).

mlcheck runs the test body as 2 ranks of a process group. Adding ``@pytest.mark.gpu(count=2)``
moves the same body to the gpu tier: 2 GPUs, nccl.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import LABELS
from textclf import TextClassifier
from transformers import BertConfig, BertModel

from mlcheck.checks import assert_ddp_equivalent, assert_same_on_all_ranks


def make_classifier() -> TextClassifier:
    """A tiny BERT-shaped encoder from a config (no weights), without dropout."""
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return TextClassifier(BertModel(config, add_pooling_layer=False), id2label=LABELS)


def train_step(model: Any, batch: dict[str, torch.Tensor], optimizer: Any) -> None:
    """One step as the training script takes it (under DDP, ``model`` is the wrapper)."""
    optimizer.zero_grad()
    model(**batch).loss.backward()
    optimizer.step()


@pytest.mark.distributed(world_size=2)
def test_training_step_under_ddp_matches_one_process(dist: Any) -> None:
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(0, 64, (4, 8), generator=generator),
        "attention_mask": torch.ones(4, 8, dtype=torch.long),
        "labels": torch.tensor([0, 1, 1, 0]),
    }
    # every rank builds the same weights (mlcheck seeds each rank alike)
    assert_same_on_all_ranks(make_classifier(), name="initial weights")
    # 2 ranks, 2 rows each, end with the weights one process gets from all 4 rows
    assert_ddp_equivalent(make_classifier, batch, step=train_step, steps=2)
