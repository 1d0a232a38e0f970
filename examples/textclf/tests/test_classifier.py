"""Fast tier: the classifier's code on random/empty weights (no weight download, seconds on CPU).

These tests check our code — pooling, head wiring, the training step, saving, padding,
device placement — not what MiniLM learned; that is the real tier's job (test_real.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import LABELS, MODEL_ID, TEXTS
from textclf import DEFAULT_HEAD_DIR, TextClassifier, load_head, mean_pool

from mlcheck.checks import (
    assert_batch_invariant,
    assert_deterministic,
    assert_device_roundtrip,
    assert_finite,
    assert_frozen,
    assert_initial_loss,
    assert_loss_decreases,
    assert_loss_matches,
    assert_output_shape,
    assert_overfits,
    assert_params_update,
    assert_save_load_roundtrip,
    assert_train_mode,
)


def test_mean_pool_ignores_padding_and_normalises() -> None:
    hidden = torch.tensor([[[2.0, 4.0], [4.0, 4.0], [100.0, -7.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding: it must not count
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled, torch.tensor([[0.6, 0.8]]))  # mean (3, 4), length 5
    assert pooled.norm(dim=-1).item() == pytest.approx(1.0)


def test_output_shapes(tiny_clf: TextClassifier, inputs: dict[str, torch.Tensor]) -> None:
    assert_output_shape(tiny_clf, inputs, {"logits": ("B", len(LABELS))})
    embeddings = tiny_clf.embed(**inputs)
    assert embeddings.shape == (len(TEXTS), tiny_clf.encoder.config.hidden_size)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(TEXTS)))


def test_outputs_are_finite_and_deterministic_in_eval(
    tiny_clf: TextClassifier, inputs: dict[str, torch.Tensor]
) -> None:
    assert_finite(tiny_clf, inputs)
    assert_deterministic(tiny_clf.eval(), inputs)


def test_head_is_built_for_the_encoder_width(models: Any) -> None:
    encoder = models.random(MODEL_ID)
    clf = TextClassifier(encoder, id2label={0: "a", 1: "b", 2: "c"})
    head = clf.classifier
    assert (head.in_features, head.out_features) == (encoder.config.hidden_size, 3)
    assert clf.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert clf.config.label2id == {"a": 0, "b": 1, "c": 2}


def test_trained_head_fits_the_full_size_encoder(models: Any) -> None:
    # Full-size MiniLM on the meta device: shapes of the real model without its weights.
    encoder = models.empty(MODEL_ID)
    clf = TextClassifier.from_encoder(encoder)
    assert clf.classifier.in_features == encoder.config.hidden_size == 384
    assert clf.config.id2label == LABELS


def test_trained_head_refuses_an_encoder_of_another_width(models: Any) -> None:
    tiny = models.random(MODEL_ID)  # shrunk: hidden size 64, not the head's 384
    with pytest.raises(ValueError, match="384-d embeddings but the encoder gives 64-d"):
        TextClassifier.from_encoder(tiny)


def test_shipped_head_is_small_and_labelled() -> None:
    head, id2label = load_head(DEFAULT_HEAD_DIR)
    assert id2label == LABELS
    assert sum(p.numel() for p in head.parameters()) == 384 * 2 + 2
    assert (DEFAULT_HEAD_DIR / "head.safetensors").stat().st_size < 10_000


def test_loss_decreases(tiny_clf: TextClassifier, batch: dict[str, torch.Tensor]) -> None:
    assert_loss_decreases(tiny_clf, batch)


def test_overfits_a_tiny_batch(tiny_clf: TextClassifier, batch: dict[str, torch.Tensor]) -> None:
    # lr 5e-3: on this batch the shrunk encoder reached a tenth of its loss in 30-40 steps for
    # each of 12 seeds (100 allowed); 1e-2 diverged for one seed in ten, 3e-3 needs 60 steps.
    assert_overfits(tiny_clf, batch, lr=5e-3)


def test_every_parameter_trains(tiny_clf: TextClassifier, batch: dict[str, torch.Tensor]) -> None:
    # BERT's pooler (a dense layer on [CLS]) is unused: sentence embeddings are mean-pooled.
    # Everything else, encoder and head, must get a gradient and move.
    assert_params_update(tiny_clf, batch, frozen=["encoder.pooler"])


def test_frozen_encoder_stays_frozen(models: Any, batch: dict[str, torch.Tensor]) -> None:
    clf = TextClassifier(models.random(MODEL_ID), id2label=LABELS, freeze_encoder=True)
    assert_frozen(clf, ["encoder"], batch)
    assert all(p.requires_grad for p in clf.classifier.parameters())  # the head still trains
    assert not clf.train().encoder.training  # no dropout in a frozen feature extractor


def test_save_load_roundtrip(
    tiny_clf: TextClassifier, inputs: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    assert_save_load_roundtrip(tiny_clf, inputs, tmp_path)


def test_saved_folder_reloads_with_its_own_head(
    tiny_clf: TextClassifier, inputs: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    tiny_clf.save_pretrained(tmp_path)
    loaded = TextClassifier.from_pretrained(tmp_path)  # head/ in the folder, not the packaged one
    torch.testing.assert_close(loaded.eval()(**inputs).logits, tiny_clf.eval()(**inputs).logits)


def test_padding_does_not_change_predictions(
    tiny_clf: TextClassifier, inputs: dict[str, torch.Tensor]
) -> None:
    assert_batch_invariant(tiny_clf.eval(), inputs)


def test_predict_keeps_order_across_batches(tiny_clf: TextClassifier, tokenizer: Any) -> None:
    together = tiny_clf.predict(TEXTS, tokenizer)
    one_by_one = tiny_clf.predict(TEXTS, tokenizer, batch_size=1)
    assert [p["label"] for p in together] == [p["label"] for p in one_by_one]
    for a, b in zip(together, one_by_one, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert 0.5 <= a["score"] <= 1.0  # a max over two softmax probabilities
    assert tiny_clf.predict([], tokenizer) == []


def test_device_placement_on_meta(
    tiny_clf: TextClassifier, inputs: dict[str, torch.Tensor]
) -> None:
    # Catches tensors created on the wrong device inside forward, on a CPU-only machine.
    assert_device_roundtrip(tiny_clf, inputs, device="meta")


def test_loss_at_init_is_about_ln_of_the_label_count(
    tiny_clf: TextClassifier, batch: dict[str, torch.Tensor]
) -> None:
    # a random head predicts about uniformly over the labels: ln(3); a `sum` reduction or a
    # loss scaled by the batch would be far off
    assert_initial_loss(tiny_clf, batch, seed=0)


def test_loss_is_cross_entropy_against_the_labels(
    tiny_clf: TextClassifier, batch: dict[str, torch.Tensor]
) -> None:
    assert_loss_matches(tiny_clf, batch, reference="sequence-classification")


def test_training_mode_turns_the_encoders_dropout_on(
    tiny_clf: TextClassifier, inputs: dict[str, torch.Tensor]
) -> None:
    # (with freeze_encoder=True, train() keeps the encoder in eval on purpose: a fixed feature
    # extractor; this is the fine-tuning path, where dropout must be on)
    assert_train_mode(tiny_clf, inputs, seed=0)
