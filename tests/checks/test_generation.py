"""assert_causal and assert_cache_consistent (mlcheck/checks/generation.py) pass on correct models
and fail, with a message naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_models import SEEDS, VOCAB, bert_config, gpt2, ids, llama
from torch import nn
from transformers import (
    BertModel,
)

from mlcheck.checks import (
    CheckFailed,
    assert_cache_consistent,
    assert_causal,
)


class TinyCausalLM(nn.Module):
    """Embedding, one self-attention layer, LM head; ``causal=False`` is the planted bug."""

    def __init__(self, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal
        self.embed = nn.Embedding(VOCAB, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        length = x.shape[1]
        mask = torch.ones(length, length, dtype=torch.bool).triu(1) if self.causal else None
        return self.head(x + self.attn(x, x, x, attn_mask=mask, need_weights=False)[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_causal_passes_on_correct_models(seed: int) -> None:
    assert_causal(gpt2(seed), {"input_ids": ids(seed)}, seed=seed)
    assert_causal(llama(seed), ids(seed), seed=seed)
    torch.manual_seed(seed)
    assert_causal(TinyCausalLM(), ids(seed), seed=seed)


def test_causal_catches_the_mask_off() -> None:
    torch.manual_seed(0)
    with pytest.raises(CheckFailed) as failed:
        assert_causal(TinyCausalLM(causal=False), ids(), seed=3)
    message = str(failed.value)
    assert "sees the future" in message
    assert "first leaking position 0" in message
    assert "max |Δ| =" in message and "cut points leak" in message
    assert "seed:       3" in message


def test_causal_fails_on_a_bidirectional_encoder() -> None:
    torch.manual_seed(0)
    with pytest.raises(CheckFailed, match="sees the future"):
        assert_causal(BertModel(bert_config()).eval(), ids(), output="last_hidden_state")


class RestartingPositions(nn.Module):
    """Passes position ids that start at 0 on every call: wrong once a cache holds the prefix."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return self.model(input_ids=input_ids, position_ids=positions, **kwargs)


@pytest.mark.parametrize("seed", SEEDS)
def test_cache_consistent_on_correct_models(seed: int) -> None:
    assert_cache_consistent(gpt2(seed), ids(seed), seed=seed)
    tokens = ids(seed)
    mask = torch.ones_like(tokens)
    assert_cache_consistent(llama(seed), {"input_ids": tokens, "attention_mask": mask}, steps=3)


def test_cache_consistent_catches_positions_restarting_in_decoding() -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_cache_consistent(RestartingPositions(llama()), ids(), steps=4)
    message = str(failed.value)
    assert "decoding with the KV cache gives different logits" in message
    assert "4 of 5 positions differ" in message  # the prefix itself is right
    assert "first at step 1 (next token after position 6)" in message
    assert "position ids (or rotary offsets) that restart" in message
