"""Real tier: the real all-MiniLM-L6-v2 weights with the trained head (CPU, a few seconds).

What the model *means*: which class index is "positive", that unambiguous canary sentences get
the right label with a confident score, that the head trained by ``train_head.py`` still
separates held-out sentences, and that the server answers with the real model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import train_head
from conftest import LABELS, MODEL_ID
from textclf import TextClassifier

from mlcheck.checks import assert_labels, assert_predicts
from mlcheck.serving import assert_serves, serve

real = pytest.mark.real_model(MODEL_ID)
EXAMPLE_ROOT = Path(__file__).resolve().parents[1]

# Canaries: not in the training data, and no human would label them otherwise. The score bound
# is a probability the head must exceed (the seed's "0.99 = unsafe, not safe" check); the
# shipped head gives each of them >= 0.996, so 0.95 fails on a real regression, not on noise.
CANARIES: list[dict[str, Any]] = [
    {"text": "This is the best movie I have ever seen!", "label": "positive", "min_score": 0.95},
    {"text": "Absolutely fantastic service, thank you!", "label": "positive", "min_score": 0.95},
    {"text": "I love it.", "label": "positive", "min_score": 0.95},
    {"text": "The worst product I ever bought, it broke.", "label": "negative", "min_score": 0.95},
    {"text": "Horrible. I want my money back.", "label": "negative", "min_score": 0.95},
    {"text": "I hate it.", "label": "negative", "min_score": 0.95},
]


@pytest.fixture
def real_clf(models: Any) -> TextClassifier:
    return TextClassifier.from_encoder(models.real(MODEL_ID))


@pytest.fixture
def real_tokenizer(models: Any) -> Any:
    return models.tokenizer(MODEL_ID)


@real
def test_class_indices_mean_what_we_think(real_clf: TextClassifier) -> None:
    assert_labels(real_clf, LABELS)


@real
def test_canaries(real_clf: TextClassifier, real_tokenizer: Any) -> None:
    assert_predicts(real_clf, real_tokenizer, CANARIES)


@real
def test_predict_returns_labels_and_confident_scores(
    real_clf: TextClassifier, real_tokenizer: Any
) -> None:
    predictions = real_clf.predict([c["text"] for c in CANARIES], real_tokenizer)
    assert [p["label"] for p in predictions] == [c["label"] for c in CANARIES]
    assert all(p["score"] >= c["min_score"] for p, c in zip(predictions, CANARIES, strict=True))


@real
def test_canary_logits_are_golden(
    real_clf: TextClassifier, real_tokenizer: Any, golden: Any
) -> None:
    # "The model still says what it said": the logits of the canaries, recorded for `cpu` in
    # tests/__golden__/test_real.json (`mlcheck run --tier real --golden record`). CPUs differ
    # in their float kernels (AVX2, AVX-512, thread count), so the tolerance is wider than the
    # float32 default; the argmax must agree exactly.
    batch = real_tokenizer([c["text"] for c in CANARIES], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = real_clf(**batch).logits
    golden.check("logits", logits, rtol=1e-4, atol=1e-4)
    golden.check("top class", logits, mode="topk", k=1)


@real
def test_embeddings_match_sentence_transformers(
    real_clf: TextClassifier, real_tokenizer: Any
) -> None:
    # Reference: sentence-transformers 6.2 `SentenceTransformer(MODEL_ID).encode(texts)`, first
    # six dimensions. Our plain-transformers pooling (mean over real tokens, L2 norm) must give
    # the same embeddings, also for the shorter sentence that gets padded in the batch.
    texts = ["I love it.", "The meeting is at 3pm on Tuesday."]
    reference = torch.tensor(
        [
            [-0.0373293, 0.0115623, 0.0492345, 0.0255948, -0.0581102, -0.0372775],
            [-0.0312522, -0.0519690, -0.0615953, 0.0579605, -0.0305445, 0.0322318],
        ]
    )
    batch = real_tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        embeddings = real_clf.embed(**batch)
    assert embeddings.shape == (2, 384)
    torch.testing.assert_close(embeddings[:, :6], reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))


@real
def test_trained_head_generalises_to_held_out_sentences(
    real_clf: TextClassifier, real_tokenizer: Any
) -> None:
    # Training converges on a small sample: retrain the head as train_head.py does.
    texts = [text for text, _ in train_head.TRAIN]
    labels = torch.tensor([label for _, label in train_head.TRAIN])
    held_texts = [text for text, _ in train_head.HELD_OUT]
    held_labels = torch.tensor([label for _, label in train_head.HELD_OUT])
    frozen = TextClassifier(real_clf.encoder, freeze_encoder=True)
    head = train_head.train(
        train_head.embed_all(frozen, real_tokenizer, texts), labels, num_labels=len(LABELS)
    )
    held_x = train_head.embed_all(frozen, real_tokenizer, held_texts)
    assert train_head.accuracy(head, held_x, held_labels) == 1.0
    # and the shipped head is the one this training produces
    torch.testing.assert_close(head.weight, real_clf.classifier.weight, atol=1e-4, rtol=1e-3)


@real
def test_server_answers_with_the_real_model(models: Any, tmp_path: Path) -> None:
    # What production runs: the command-line server, as a subprocess, on a saved model folder.
    TextClassifier.from_encoder(models.real(MODEL_ID)).save_pretrained(tmp_path)
    models.tokenizer(MODEL_ID).save_pretrained(tmp_path)
    command = [sys.executable, "-m", "textclf.server", "--port", "{port}", "--model", str(tmp_path)]
    with serve(command, cwd=EXAMPLE_ROOT, timeout=120) as server:
        assert_serves(
            server,
            [c["text"] for c in CANARIES],
            [{"label": c["label"], "min_score": c["min_score"]} for c in CANARIES],
            request_key="texts",
        )
