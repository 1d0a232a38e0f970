"""Shared fixtures: a tiny random MiniLM-shaped encoder for the fast tier, inline data."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from textclf import TextClassifier

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
LABELS = {0: "negative", 1: "positive"}

# Small inline samples (seed guideline 1): different lengths, so batches carry padding.
TEXTS = [
    "I loved it.",
    "Terrible service, the food was cold and the waiter ignored us all evening.",
    "Fine.",
    "A wonderful film with a great cast and a moving story.",
]
TARGETS = [1, 0, 1, 1]


@pytest.fixture
def tokenizer(models: Any) -> Any:
    """MiniLM's real tokenizer: only its small files are needed, no weights."""
    return models.tokenizer(MODEL_ID)


@pytest.fixture
def tiny_clf(models: Any) -> TextClassifier:
    """The classifier on a shrunk, randomly initialised MiniLM (BERT) encoder."""
    return TextClassifier(models.random(MODEL_ID), id2label=LABELS)


@pytest.fixture
def inputs(tokenizer: Any) -> dict[str, torch.Tensor]:
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


@pytest.fixture
def batch(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**inputs, "labels": torch.tensor(TARGETS)}
