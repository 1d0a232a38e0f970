"""The checks added in v2 pass on correct models over 5 seeds and fail, with a useful message, on
the planted bugs ML engineers actually ship (causal mask off, labels shifted twice, a train()
override that keeps the backbone in eval, loss-scale bugs, frozen BatchNorm statistics that
update, position ids that start at 1, fp16 RMSNorm without an upcast, a negated loss).

Real tiny Hugging Face models built from configs (GPT-2, Llama, BERT) and small hand-written torch
modules for the planted bugs; 1 torch thread (conftest).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import mlcheck
from mlcheck.checks import (
    CheckFailed,
    assert_batch_invariant,
    assert_cache_consistent,
    assert_causal,
    assert_dtype_agrees,
    assert_equivalent,
    assert_finite,
    assert_frozen,
    assert_initial_loss,
    assert_loss_matches,
    assert_overfits,
    assert_save_load_roundtrip,
    assert_train_mode,
)
from mlcheck.errors import NothingToCheck

SEEDS = range(5)
VOCAB = 100


def gpt2(seed: int = 0, **overrides: Any) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    settings: dict[str, Any] = dict(
        n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=64
    )
    settings.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**settings)).eval()


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


def bert_config(**overrides: Any) -> BertConfig:
    settings: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=VOCAB,
        num_labels=3,
    )
    settings.update(overrides)
    return BertConfig(**settings)


def bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config()).eval()


def ids(seed: int = 0, rows: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(5, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def lm_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    tokens = ids(seed)
    return {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "labels": tokens}


def clf_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, VOCAB, (6, 8), generator=g)
    return {"input_ids": tokens, "labels": torch.randint(0, 3, (6,), generator=g)}


# ---------------------------------------------------------------------------------------------
# assert_causal


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


# ---------------------------------------------------------------------------------------------
# assert_loss_matches


@pytest.mark.parametrize("seed", SEEDS)
def test_loss_matches_on_correct_models(seed: int) -> None:
    batch = lm_batch(seed)
    batch["attention_mask"][1, 7:] = 0
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert_loss_matches(gpt2(seed), batch, "causal-lm", seed=seed)
    assert_loss_matches(llama(seed), batch, seed=seed)
    assert_loss_matches(bert(seed), clf_batch(seed), "sequence-classification")
    torch.manual_seed(seed)
    tagger = BertForTokenClassification(bert_config(num_labels=5)).eval()
    tokens = clf_batch(seed)["input_ids"]
    tags = torch.randint(0, 5, tokens.shape, generator=torch.Generator().manual_seed(seed))
    tags[:, 0] = -100
    assert_loss_matches(tagger, {"input_ids": tokens, "labels": tags}, "token-classification")


def test_loss_matches_catches_labels_shifted_twice() -> None:
    batch = lm_batch()
    # the collator shifts (labels[t] = token t+1) and the model shifts again
    shifted = torch.full_like(batch["input_ids"], -100)
    shifted[:, :-1] = batch["input_ids"][:, 1:]
    batch["labels"] = shifted
    with pytest.raises(CheckFailed) as failed:
        assert_loss_matches(gpt2(), batch, "causal-lm")
    message = str(failed.value)
    assert "the model's loss is not the causal-lm reference loss" in message
    assert "against token t+2" in message and "shifted twice" in message
    assert "over logits (2, 10, 100)" in message


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


def test_loss_matches_catches_sum_instead_of_mean_and_a_negated_loss() -> None:
    torch.manual_seed(0)
    with pytest.raises(CheckFailed) as failed:
        assert_loss_matches(SummedLoss(), tabular(), "sequence-classification")
    assert "8x the reference: a sum where a mean was meant" in str(failed.value)
    with pytest.raises(CheckFailed, match="wrong sign: is it negated"):
        assert_loss_matches(SummedLoss("mean", -1.0), tabular(), "sequence-classification")
    assert_loss_matches(SummedLoss("mean"), tabular(), "sequence-classification")


def test_loss_matches_with_a_reference_callable() -> None:
    def smoothed(outputs: Any, batch: Any) -> torch.Tensor:
        return F.cross_entropy(outputs["logits"], batch["labels"], label_smoothing=0.1)

    torch.manual_seed(0)
    with pytest.raises(CheckFailed, match="is not your reference loss"):
        assert_loss_matches(SummedLoss("mean"), tabular(), smoothed)


# ---------------------------------------------------------------------------------------------
# assert_train_mode


class FrozenBackboneClassifier(nn.Module):
    """BERT backbone + head; ``keep_eval`` overrides train() to keep the backbone in eval."""

    def __init__(self, keep_eval: bool = False) -> None:
        super().__init__()
        self.keep_eval = keep_eval
        self.backbone = BertModel(bert_config())
        self.head = nn.Linear(32, 3)

    def train(self, mode: bool = True) -> FrozenBackboneClassifier:
        super().train(mode)
        if self.keep_eval:
            self.backbone.eval()  # the planted bug: dropout is off in training
        return self

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(input_ids=input_ids).last_hidden_state[:, 0])


@pytest.mark.parametrize("seed", SEEDS)
def test_train_mode_passes_on_correct_models(seed: int) -> None:
    model = gpt2(seed)
    assert_train_mode(model, ids(seed), seed=seed)
    assert not model.training  # modes put back
    assert_train_mode(bert(seed), {"input_ids": ids(seed)}, seed=seed)
    torch.manual_seed(seed)
    assert_train_mode(FrozenBackboneClassifier(), ids(seed), seed=seed)


def test_train_mode_names_the_modules_a_train_override_keeps_in_eval() -> None:
    torch.manual_seed(0)
    with pytest.raises(CheckFailed) as failed:
        assert_train_mode(FrozenBackboneClassifier(keep_eval=True), ids())
    message = str(failed.value)
    assert "dropout modules stayed in eval mode after model.train()" in message
    assert "backbone.embeddings.dropout (Dropout, p=0.1)" in message
    assert "of 7 in eval mode" in message  # embeddings + 3 per layer x 2
    assert "overridden train()" in message


def test_train_mode_without_dropout_is_a_usage_error() -> None:
    with pytest.raises(NothingToCheck, match="no dropout-like module with p > 0"):
        assert_train_mode(llama(), ids())
    with pytest.raises(NothingToCheck, match=r"\(4 with p = 0\)"):
        assert_train_mode(nn.Sequential(*[nn.Dropout(0.0) for _ in range(4)]), torch.ones(2))


# ---------------------------------------------------------------------------------------------
# assert_initial_loss


@pytest.mark.parametrize("seed", SEEDS)
def test_initial_loss_is_about_ln_c_on_correct_models(seed: int) -> None:
    loss = assert_initial_loss(gpt2(seed), lm_batch(seed), seed=seed)
    assert abs(loss - math.log(VOCAB)) < 0.1
    assert_initial_loss(llama(seed), lm_batch(seed))
    assert_initial_loss(bert(seed), clf_batch(seed))
    torch.manual_seed(seed)
    assert_initial_loss(SummedLoss("mean"), tabular(seed))


def test_initial_loss_catches_undivided_gradient_accumulation() -> None:
    steps = 4

    def accumulated(model: nn.Module, batch: Any) -> torch.Tensor:
        # the planted bug: the micro-batch losses are summed, not divided by the steps
        chunks = [{k: v[i::steps] for k, v in batch.items()} for i in range(steps)]
        return sum(model(**chunk).loss for chunk in chunks)  # type: ignore[return-value]

    model, batch = bert(), clf_batch()
    batch = {k: torch.cat([v, v]) for k, v in batch.items()}  # 12 rows: 4 micro-batches of 3
    with pytest.raises(CheckFailed) as failed:
        assert_initial_loss(model, batch, loss_fn=accumulated, seed=2)
    message = str(failed.value)
    assert "ln(3) = 1.099" in message
    assert "gradient accumulation not divided by its steps" in message
    assert "the loss checked: your loss_fn(model, batch)" in message
    assert "seed:       2" in message
    assert "3.9" in message or "4x" in message or "4.0" in message  # about k x ln(C)

    def divided(model: nn.Module, batch: Any) -> torch.Tensor:
        return accumulated(model, batch) / steps

    assert_initial_loss(model, batch, loss_fn=divided)


def test_initial_loss_catches_sum_reduction_and_negated_loss() -> None:
    torch.manual_seed(0)
    with pytest.raises(CheckFailed, match="a sum where a mean was meant"):
        assert_initial_loss(SummedLoss("sum"), tabular())
    with pytest.raises(CheckFailed, match="the loss is negative: is it negated"):
        assert_initial_loss(SummedLoss("mean", -1.0), tabular())


def test_initial_loss_on_regression_needs_expected() -> None:
    torch.manual_seed(0)
    batch = (torch.randn(8, 4), torch.randn(8, 1))
    with pytest.raises(NothingToCheck, match="pass expected="):
        assert_initial_loss(nn.Linear(4, 1), batch)
    assert_initial_loss(nn.Linear(4, 1), batch, expected=1.0, rtol=5.0)


# ---------------------------------------------------------------------------------------------
# assert_frozen covers buffers


class BNBackbone(nn.Module):
    """A frozen BatchNorm backbone and a trained head; ``eval_backbone`` is the fix."""

    def __init__(self, eval_backbone: bool = False) -> None:
        super().__init__()
        self.eval_backbone = eval_backbone
        self.backbone = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(16, 3)

    def train(self, mode: bool = True) -> BNBackbone:
        super().train(mode)
        if self.eval_backbone:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def bn_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)


@pytest.mark.parametrize("seed", SEEDS)
def test_frozen_passes_when_the_batchnorm_backbone_stays_in_eval(seed: int) -> None:
    torch.manual_seed(seed)
    assert_frozen(BNBackbone(eval_backbone=True), "backbone", bn_batch(seed), seed=seed)


def test_frozen_catches_batchnorm_running_stats_updating() -> None:
    torch.manual_seed(0)
    model = BNBackbone().eval()
    with pytest.raises(CheckFailed) as failed:
        assert_frozen(model, ["backbone"], bn_batch())
    message = str(failed.value)
    assert "buffers meant to be frozen changed in training" in message
    assert "backbone.1.running_mean: changed by max |Δ|" in message
    assert "backbone.1.running_var" in message
    assert "module.eval()" in message and "backbone.1" in message
    assert not model.training  # modes restored


# ---------------------------------------------------------------------------------------------
# assert_equivalent: a wrapper whose position ids start at 1


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


# ---------------------------------------------------------------------------------------------
# assert_dtype_agrees


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


# ---------------------------------------------------------------------------------------------
# assert_cache_consistent


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


# ---------------------------------------------------------------------------------------------
# assert_overfits judges the predictions


@pytest.mark.parametrize("seed", SEEDS)
def test_overfits_judges_predictions_on_correct_models(seed: int) -> None:
    assert_overfits(gpt2(seed, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
                    lm_batch(seed), seed=seed)  # fmt: skip
    assert_overfits(bert(seed), clf_batch(seed), seed=seed)


def test_overfits_does_not_ask_for_two_next_tokens_after_the_same_context() -> None:
    """Rows that start alike and then differ: after the shared prefix no causal LM can predict
    both next tokens (1 in 50 seeds of a random 2x10 batch: bench/false_failures.py), so either
    one counts as right; everywhere else every prediction must still be right."""
    tokens = ids(0)
    tokens[1, :2] = tokens[0, :2]
    assert tokens[1, 2] != tokens[0, 2]
    batch = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "labels": tokens}
    assert_overfits(gpt2(0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), batch, seed=0)


def test_overfits_fails_a_negated_loss_with_its_own_message() -> None:
    torch.manual_seed(0)
    with pytest.raises(CheckFailed) as failed:
        assert_overfits(SummedLoss("mean", -1.0), tabular(), seed=1)
    message = str(failed.value)
    assert "the loss is negative: is it negated?" in message
    assert "predictions right on" in message and "seed:       1" in message


class LossOnOtherLabels(SummedLoss):
    """The loss trains against labels rolled by one row: it falls, predictions stay wrong."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels.roll(1)), "logits": logits}


def test_overfits_fails_when_the_loss_falls_but_predictions_are_wrong() -> None:
    torch.manual_seed(0)
    batch = tabular()
    batch["labels"] = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])  # rolled differs on every row
    with pytest.raises(CheckFailed) as failed:
        assert_overfits(LossOnOtherLabels(), batch, lr=1e-2)
    message = str(failed.value)
    assert "the loss reached its target but the predictions do not fit" in message
    assert "argmax accuracy 1.0 (classification" in message
    assert "first at row 0: predicted" in message


def test_overfits_regression_keeps_the_loss_rule() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    assert_overfits(nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1)),
                    (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
                    lr=1e-2)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# message improvements


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


def test_finite_names_the_first_module_producing_non_finite_values() -> None:
    class Exp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x * 1000)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), Exp(), nn.Linear(4, 2))
    with pytest.raises(CheckFailed) as failed:
        assert_finite(model, torch.randn(2, 4) + 5, grads=False)
    assert "first module producing a non-finite value: 1 (Exp)" in str(failed.value)


def test_new_checks_are_importable_from_mlcheck() -> None:
    for name in ("assert_causal", "assert_loss_matches", "assert_train_mode",
                 "assert_initial_loss", "assert_equivalent", "assert_dtype_agrees",
                 "assert_cache_consistent", "LossFn", "ReferenceLoss"):  # fmt: skip
        assert getattr(mlcheck, name) is getattr(mlcheck.checks, name)
