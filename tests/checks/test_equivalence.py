"""assert_save_load_roundtrip, assert_batch_invariant and assert_equivalent
(mlcheck/checks/equivalence.py) pass on correct models and fail, with a message naming the likely
bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_models import (
    SEEDS,
    VOCAB,
    Scorer,
    TinyNet,
    bert_config,
    gpt2,
    ids,
    llama,
    make_bert,
    make_tiny,
    tabular_batch,
    text_batch,
    tokens,
)
from torch import nn
from torch.nn import functional as F
from transformers import (
    BertModel,
)

from mlcheck.checks import (
    CheckFailed,
    assert_batch_invariant,
    assert_equivalent,
    assert_save_load_roundtrip,
)


class HeadNotSaved(nn.Module):
    """Planted bug: the head is a plain tensor, so state_dict() does not hold it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = torch.randn(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).relu() @ self.head


class RandomBufferNotSaved(nn.Module):
    """Planted bug: a random projection kept in a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.register_buffer("projection", torch.randn(16, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) @ self.projection


def test_save_load_roundtrip_hf_and_plain(tmp_path: Any) -> None:
    assert_save_load_roundtrip(make_bert(), text_batch(labels=False), tmp_path / "hf")
    assert_save_load_roundtrip(make_tiny(), tabular_batch()[0], tmp_path / "plain")


@pytest.mark.parametrize("planted", [HeadNotSaved, RandomBufferNotSaved])
def test_save_load_roundtrip_catches_head_not_saved(tmp_path: Any, planted: type) -> None:
    torch.manual_seed(0)
    with pytest.raises(CheckFailed) as failed:
        assert_save_load_roundtrip(planted(), torch.randn(2, 8), tmp_path)
    message = str(failed.value)
    assert "outputs differ between the model before saving and after loading" in message
    assert "max |Δ| =" in message
    assert "persistent buffers" in message


def test_save_load_roundtrip_names_missing_keys(tmp_path: Any) -> None:
    class Renamed(TinyNet):
        def state_dict(self, *args: Any, **kwargs: Any) -> Any:
            state = super().state_dict(*args, **kwargs)
            state.pop("head.bias")  # the planted bug: a custom save drops a weight
            return state

    with pytest.raises(CheckFailed, match=r"missing keys: head\.bias"):
        assert_save_load_roundtrip(Renamed(), torch.randn(2, 8), tmp_path)


def test_save_load_roundtrip_asks_for_factory(tmp_path: Any) -> None:
    with pytest.raises(TypeError, match="pass factory=lambda: Linear"):
        assert_save_load_roundtrip(nn.Linear(8, 3), torch.randn(2, 8), tmp_path)
    assert_save_load_roundtrip(
        nn.Linear(8, 3), torch.randn(2, 8), tmp_path, factory=lambda: nn.Linear(8, 3)
    )


class MaskIgnored(nn.Module):
    """Planted bug: a classifier wrapper that drops the attention mask."""

    def __init__(self) -> None:
        super().__init__()
        self.model = make_bert()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.model(input_ids=input_ids)


def test_batch_invariant_with_padding() -> None:
    assert_batch_invariant(make_bert(), text_batch(labels=False))
    torch.manual_seed(0)
    encoder = BertModel(bert_config()).eval()  # per-token outputs compare on real tokens only
    assert_batch_invariant(encoder, text_batch(labels=False), output="last_hidden_state")
    assert_batch_invariant(make_tiny(), tabular_batch()[0])


def test_batch_invariant_catches_ignored_attention_mask() -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_batch_invariant(MaskIgnored(), text_batch(labels=False))
    message = str(failed.value)
    assert "'logits' of a row changes when it is batched with others" in message
    assert "row 2, 5 real tokens of 8" in message and "row 3, 3 real tokens of 8" in message
    assert "row 0" not in message  # unpadded rows agree
    assert "2 of 4 rows differ" in message
    assert "attention mask is ignored" in message


def test_batch_invariant_catches_rows_mixed() -> None:
    class CentredOverBatch(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            return self.head(h - h.mean(0))  # planted bug: dim 0 is the batch, not features

    with pytest.raises(CheckFailed, match="forward mixes rows") as failed:
        assert_batch_invariant(CentredOverBatch(), torch.randn(6, 8))
    assert "6 of 6 rows differ" in str(failed.value)


class PositionsFromOne(nn.Module):
    """Wraps a causal LM and passes position ids; ``start=1`` is the planted bug."""

    def __init__(self, model: nn.Module, start: int = 1) -> None:
        super().__init__()
        self.model, self.start = model, start

    def forward(self, input_ids: torch.Tensor) -> Any:
        positions = torch.arange(self.start, self.start + input_ids.shape[1]).expand_as(input_ids)
        return self.model(input_ids=input_ids, position_ids=positions)


@pytest.mark.parametrize("seed", SEEDS)
def test_equivalent_passes_for_a_correct_wrapper(seed: int) -> None:
    model = gpt2(seed)
    assert_equivalent(PositionsFromOne(model, start=0), model, ids(seed), seed=seed)
    model = llama(seed)
    assert_equivalent(PositionsFromOne(model, start=0), model, ids(seed), seed=seed)


def test_equivalent_catches_position_ids_starting_at_one() -> None:
    model = gpt2()
    wrapper = PositionsFromOne(model)
    # batch invariance cannot see it: every row is shifted alike, batched or alone
    assert_batch_invariant(wrapper, ids())
    with pytest.raises(CheckFailed) as failed:
        assert_equivalent(wrapper, model, ids())
    message = str(failed.value)
    assert "outputs differ between the model and the reference" in message
    assert "logits (torch.float32): max |Δ| =" in message and " at (" in message
    assert "max relative |Δ|" in message
    assert "shifted position ids" in message


def test_batch_invariant_hint_names_left_padding_position_ids() -> None:
    class MaskIgnored(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = gpt2()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            return self.model(input_ids=input_ids)  # drops the mask

    tokens = ids(rows=2, length=6)
    mask = torch.ones_like(tokens)
    mask[1, :2] = 0  # left padding
    with pytest.raises(CheckFailed) as failed:
        assert_batch_invariant(MaskIgnored(), {"input_ids": tokens, "attention_mask": mask})
    assert "position_ids = attention_mask.cumsum(-1) - 1" in str(failed.value)


class NonPersistent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.register_buffer("scale", torch.rand(4), persistent=False)  # random, never saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


def test_save_load_roundtrip_names_non_persistent_buffers(tmp_path: Any) -> None:
    torch.manual_seed(0)
    with pytest.raises(CheckFailed) as failed:
        assert_save_load_roundtrip(NonPersistent(), torch.ones(2, 4), tmp_path)
    message = str(failed.value)
    assert "non-persistent buffers (not saved) that differ after reload: scale" in message


class Block(nn.Module):
    """Embedding, a norm, grouped-query attention (4 query heads, 2 key/value heads), a head.
    ``unbiased`` and ``tiled`` plant the two bugs a port can ship."""

    def __init__(self, unbiased: bool = False, tiled: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.norm = Norm(16, unbiased)
        self.attn = GroupedAttention(tiled)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.norm(self.embed(input_ids))))


class Norm(nn.Module):
    def __init__(self, size: int, unbiased: bool) -> None:
        super().__init__()
        self.unbiased = unbiased
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(-1, keepdim=True, unbiased=self.unbiased)
        return self.weight * (x - x.mean(-1, keepdim=True)) / (var + 1e-5).sqrt()


class GroupedAttention(nn.Module):
    def __init__(self, tiled: bool) -> None:
        super().__init__()
        self.tiled = tiled
        self.q_proj = nn.Linear(16, 16)
        self.kv_proj = nn.Linear(16, 16)  # 2 heads of 4 for k, 2 for v
        self.o_proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, 4, 4).transpose(1, 2)
        k, v = self.kv_proj(x).view(b, t, 4, 4).transpose(1, 2).chunk(2, dim=1)
        if self.tiled:  # the bug: head order k0 k1 k0 k1 instead of k0 k0 k1 k1
            k, v = k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1)
        else:
            k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, 16))


def port(seed: int, **bug: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    reference = Block().eval()
    model = Block(**bug).eval()
    model.load_state_dict(reference.state_dict())
    return model, reference


def test_equivalent_names_the_module_that_diverges_and_its_likely_cause() -> None:
    for seed in SEEDS:
        batch = tokens(seed)
        with pytest.raises(CheckFailed) as failed:
            assert_equivalent(*port(seed, unbiased=True), batch, seed=seed)
        text = str(failed.value)
        assert "first diverging module: norm (Norm)" in text, text
        assert "biased vs unbiased variance" in text and "max relative |Δ|" in text
        assert "shifted position ids" not in text
        with pytest.raises(CheckFailed) as failed:
            assert_equivalent(*port(seed, tiled=True), batch, seed=seed)
        text = str(failed.value)
        # o_proj diverges first in execution order, but on different inputs: not the culprit
        assert "first diverging module: attn (GroupedAttention)" in text, text
        assert "key/value heads repeated in a different order" in text
        assert_equivalent(*port(seed), batch, seed=seed)  # the twin


def test_equivalent_matches_modules_under_another_prefix() -> None:
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    class Renamed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stack = nn.ModuleDict({"0": nn.Linear(4, 8), "2": nn.Linear(8, 2)})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.stack["2"](torch.tanh(self.stack["0"](x)))

    model = Renamed()
    with pytest.raises(CheckFailed, match=r"first diverging module: stack\.0 \(Linear\)"):
        assert_equivalent(model, reference, torch.randn(3, 4))
    model.stack.load_state_dict({k: v for k, v in reference.state_dict().items()})
    assert_equivalent(model, reference, torch.randn(3, 4))


class LogHead(nn.Module):
    """``log`` of a linear output: NaN wherever it is negative (``safe`` adds softplus)."""

    def __init__(self, safe: bool) -> None:
        super().__init__()
        self.safe = safe
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return (F.softplus(h) if self.safe else h).log()


def test_batch_invariant_names_the_rows_with_nan_and_fails_cleanly_without_a_batch_dim() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        x = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))
        with pytest.raises(CheckFailed) as failed:
            assert_batch_invariant(LogHead(safe=False), x, seed=seed)
        text = str(failed.value)
        assert "holds NaN or Inf in the batch" in text and "NaN, 0 Inf of 3 values" in text
        assert "max |Δ| = 0" not in text
        assert_batch_invariant(LogHead(safe=True), x, seed=seed)
        with pytest.raises(CheckFailed) as failed:
            assert_batch_invariant(Scorer(squeeze_all=True), x[:1], seed=seed)
        assert "has no batch dimension" in str(failed.value) and "shape ()" in str(failed.value)
        assert_batch_invariant(Scorer(squeeze_all=False), x[:1], seed=seed)
