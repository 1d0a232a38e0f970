"""Tiny real models, batches and planted-bug modules that several test files of the checks use.

Hugging Face models built from configs (no weights downloaded) and small torch modules;
one definition each, imported as ``from tiny_models import ...`` (tests/ is on the path).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

SEEDS = range(5)
VOCAB = 100
NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}


def bert_config(**overrides: Any) -> BertConfig:
    """A two-layer BERT of hidden size 32 with 3 labels; ``id2label`` given sets the labels."""
    settings: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=VOCAB,
        num_labels=3,
    )
    if "id2label" in overrides:  # transformers resets a map that disagrees with num_labels
        del settings["num_labels"]
    settings.update(overrides)
    return BertConfig(**settings)


def gpt2(seed: int = 0, **overrides: Any) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    settings: dict[str, Any] = dict(
        n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=64
    )
    settings.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**settings)).eval()


def clf_batch(seed: int = 0, classes: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, VOCAB, (6, 8), generator=g)
    return {"input_ids": tokens, "labels": torch.randint(0, classes, (6,), generator=g)}


def make_bert(seed: int = 0, **overrides: Any) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    labels = {"id2label": NLI, "label2id": {v: k for k, v in NLI.items()}}
    return BertForSequenceClassification(bert_config(**{**labels, **overrides})).eval()


def text_batch(labels: bool = True) -> dict[str, torch.Tensor]:
    """Four sequences, the last two right-padded."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (4, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if labels:
        batch["labels"] = torch.tensor([0, 1, 2, 1])
    return batch


class TinyNet(nn.Module):
    """A plain classifier: 8 features -> 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_tiny(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def tabular_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)


def llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config()).eval()


def ids(seed: int = 0, rows: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(5, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def lm_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    tokens = ids(seed)
    return {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "labels": tokens}


class SummedLoss(nn.Module):
    """A classifier whose loss sums where it should average (or is negated)."""

    def __init__(self, reduction: str = "sum", sign: float = 1.0) -> None:
        super().__init__()
        self.reduction, self.sign = reduction, sign
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        loss = F.cross_entropy(logits, labels, reduction=self.reduction)
        return {"loss": self.sign * loss, "logits": logits}


def tabular(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(8, 8, generator=g), "labels": torch.randint(0, 3, (8,), generator=g)}


def tokens(seed: int, rows: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(5, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


class Scorer(nn.Module):
    """One score per row; ``squeeze_all`` is the planted ``.squeeze()`` bug."""

    def __init__(self, squeeze_all: bool) -> None:
        super().__init__()
        self.squeeze_all = squeeze_all
        self.proj = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.proj(x)
        return out.squeeze() if self.squeeze_all else out.squeeze(-1)
