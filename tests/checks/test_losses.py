"""assert_loss_matches and assert_initial_loss (mlcheck/checks/losses.py) pass on correct models
and fail, with a message naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from tiny_models import (
    SEEDS,
    VOCAB,
    SummedLoss,
    bert,
    bert_config,
    clf_batch,
    gpt2,
    llama,
    lm_batch,
    tabular,
    tokens,
)
from torch import nn
from torch.nn import functional as F
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
)

from mlcheck.checks import (
    CheckFailed,
    assert_initial_loss,
    assert_loss_matches,
)
from mlcheck.errors import NothingToCheck


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


def padded_lm_batch(seed: int, pad: int) -> dict[str, torch.Tensor]:
    """Two rows ending in EOS (= the pad id), the second right-padded with it."""
    ids = tokens(seed, rows=2, length=10)
    ids[0, -1] = pad
    ids[1, 6] = pad
    ids[1, 7:] = pad
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_loss_matches_names_pad_positions_counted_and_the_dropped_eos() -> None:
    pad = 3
    for seed in SEEDS:
        model = gpt2(seed, n_layer=1, n_positions=32, pad_token_id=pad, eos_token_id=pad)
        batch = padded_lm_batch(seed, pad)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        # bug 1: labels = input_ids, padding not set to -100 (pad positions counted)
        with pytest.raises(CheckFailed) as failed:
            assert_loss_matches(model, {**batch, "labels": ids.clone()}, seed=seed)
        text = str(failed.value)
        assert "the model's loss is the reference with pad positions counted" in text, text
        assert "3 padding positions with a label" in text and "(1, 7)" in text
        assert "references tried: causal-lm (t+1, attention_mask 0 ignored)" in text
        # bug 2: labels -100 wherever the token is the pad id: the real EOS is dropped too
        dropped = ids.masked_fill(ids == pad, -100)
        with pytest.raises(CheckFailed) as failed:
            assert_loss_matches(model, {**batch, "labels": dropped}, seed=seed)
        text = str(failed.value)
        assert "reference with tokens equal to the pad id (3) ignored" in text, text
        assert "2 real tokens labelled -100" in text and "(0, 9)" in text
        # the twin: -100 exactly where attention_mask is 0
        assert_loss_matches(model, {**batch, "labels": ids.masked_fill(mask == 0, -100)})


def test_initial_loss_calls_one_hot_labels_one_hot_and_names_the_loss_checked() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = BertForSequenceClassification(bert_config(num_hidden_layers=1, num_labels=4))
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(5, VOCAB, (6, 8), generator=g)
        labels = torch.randint(0, 4, (6,), generator=g)
        with pytest.raises(CheckFailed) as failed:
            assert_initial_loss(
                model, {"input_ids": ids, "labels": F.one_hot(labels, 4).float()}, seed=seed
            )
        text = str(failed.value)
        assert "one-hot floats over 4 classes" in text and "multi_label_classification" in text
        assert "regression" not in text and "loss from loss_fn=" not in text
        assert "the loss checked: the model's own" in text
        assert model.config.problem_type is None  # put back
        assert_initial_loss(model, {"input_ids": ids, "labels": labels}, seed=seed)


class Smoothed(nn.Module):
    """A classifier whose loss keeps ``label_smoothing`` in every mode (the planted bug)."""

    def __init__(self, seed: int, smoothing: float) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.bert = BertForSequenceClassification(bert_config(num_hidden_layers=1))
        self.smoothing = smoothing

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.bert(input_ids=input_ids).logits
        loss = F.cross_entropy(logits, labels, label_smoothing=self.smoothing)
        return {"loss": loss, "logits": logits}


def test_loss_matches_catches_label_smoothing_left_on_at_evaluation() -> None:
    for seed in SEEDS:
        batch = clf_batch(seed)
        with pytest.raises(CheckFailed) as failed:
            assert_loss_matches(Smoothed(seed, 0.1), batch, "sequence-classification")
        text = str(failed.value)
        assert "label smoothing of 0.1" in text, text
        assert_loss_matches(Smoothed(seed, 0.0), batch, "sequence-classification")


def test_loss_matches_checks_class_labels_and_the_silent_switch_to_multi_label() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = BertForSequenceClassification(bert_config(num_hidden_layers=1)).eval()
        batch = clf_batch(seed)
        with pytest.raises(CheckFailed) as failed:
            assert_loss_matches(
                model, {**batch, "labels": F.one_hot(batch["labels"], 3).float()},
                "sequence-classification",
            )  # fmt: skip
        text = str(failed.value)
        assert "one-hot float labels switched the model to multi-label" in text
        assert model.config.problem_type is None
        with pytest.raises(CheckFailed, match=r"labels outside the model's 3 classes"):
            assert_loss_matches(model, {**batch, "labels": batch["labels"] + 1},
                                "sequence-classification")  # fmt: skip
        assert_loss_matches(model, batch, "sequence-classification")


def masked_lm_batch(seed: int, forgot_ignore: bool) -> dict[str, torch.Tensor]:
    """15% of the positions replaced by [MASK] (id 4); the labels of the others are -100,
    unless the collator ``forgot_ignore``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (2, 16), generator=g)
    chosen = torch.rand(ids.shape, generator=g) < 0.15
    chosen[0, 1] = True  # at least one masked position
    labels = ids.clone() if forgot_ignore else ids.masked_fill(~chosen, -100)
    return {"input_ids": ids.masked_fill(chosen, 4), "labels": labels}


def test_loss_matches_catches_masked_lm_labels_left_on_unmasked_tokens() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = BertForMaskedLM(bert_config(num_hidden_layers=1)).eval()
        with pytest.raises(CheckFailed) as failed:
            assert_loss_matches(model, masked_lm_batch(seed, forgot_ignore=True), "masked-lm")
        text = str(failed.value)
        assert "masked-LM labels sit on positions that were not masked" in text
        assert "did not set labels to -100" in text
        assert_loss_matches(model, masked_lm_batch(seed, forgot_ignore=False), "masked-lm")
