"""assert_labels and assert_predicts (mlcheck/checks/labels.py) pass on correct models and fail,
with a message naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_models import NLI, bert_config, make_bert
from transformers import (
    BertForSequenceClassification,
    BertTokenizer,
)

from mlcheck.checks import (
    CheckFailed,
    assert_labels,
    assert_predicts,
)


def test_labels_match() -> None:
    model = make_bert()
    assert_labels(model, {2: "entailment"})
    assert_labels(model.config, ["contradiction", "neutral", "entailment"])
    assert_labels(NLI, {0: "contradiction"}, num_labels=3)


def test_labels_catches_swapped_id2label() -> None:
    swapped = {0: "entailment", 1: "neutral", 2: "contradiction"}  # the planted bug
    model = make_bert(id2label=swapped, label2id={v: k for k, v in swapped.items()})
    with pytest.raises(CheckFailed) as failed:
        assert_labels(model, {2: "entailment"})
    message = str(failed.value)
    assert "id2label[2] is 'contradiction', expected 'entailment'" in message
    assert "the model has 'entailment' at index 0" in message


def test_labels_catches_wrong_number_of_labels() -> None:
    model = make_bert(id2label={0: "contradiction", 1: "entailment"}, label2id=None)
    with pytest.raises(CheckFailed, match="the model has 2 labels, expected 3"):
        assert_labels(model, ["contradiction", "neutral", "entailment"])


def test_labels_catches_head_size_and_label2id_mismatch() -> None:
    model = make_bert(id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    model.config.id2label = NLI  # relabelled without resizing the head
    model.config.label2id = {"contradiction": 2, "neutral": 1, "entailment": 0}
    with pytest.raises(CheckFailed) as failed:
        assert_labels(model, {1: "neutral"})
    message = str(failed.value)
    assert "the head classifier has 2 outputs but id2label has 3" in message
    assert "label2id['contradiction'] is 2 but id2label[0] = 'contradiction'" in message


SAFETY = {0: "safe", 1: "unsafe"}


SENTENCE_WORDS = "i love this movie what a nice day thank you so much hurt kill hate your family"


WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *SENTENCE_WORDS.split(),
    "will",
    "we",
    "them",
    "all",
]


TRAIN = [
    ("i love this movie", 0),
    ("what a nice day", 0),
    ("thank you so much", 0),
    ("i will hurt you", 1),
    ("we will kill them all", 1),
    ("i hate your family", 1),
]


@pytest.fixture(scope="module")
def safety_model() -> tuple[BertForSequenceClassification, BertTokenizer]:
    """A tiny BERT really trained on a few sentences (fractions of a second)."""
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        bert_config(vocab_size=len(WORDS), id2label=SAFETY, label2id={"safe": 0, "unsafe": 1})
    )
    enc = tokenizer([t for t, _ in TRAIN], padding=True, return_tensors="pt")
    labels = torch.tensor([y for _, y in TRAIN])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(20):
        optimizer.zero_grad()
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


def test_predicts_canaries(safety_model: Any) -> None:
    model, tokenizer = safety_model
    results = assert_predicts(
        model,
        tokenizer,
        [
            {"text": "i will hurt you", "label": "unsafe", "min_score": 0.95},
            {"text": "thank you so much", "label": "safe"},
            {"text": "i love this movie", "score_of": "unsafe", "max_score": 0.05},
        ],
    )
    assert [label for label, _ in results] == ["unsafe", "safe", "safe"]


def test_predicts_catches_swapped_labels(safety_model: Any) -> None:
    model, tokenizer = safety_model
    model.config.id2label = {0: "unsafe", 1: "safe"}  # the planted bug
    try:
        with pytest.raises(CheckFailed) as failed:
            assert_predicts(
                model,
                tokenizer,
                [{"text": "i will hurt you", "label": "unsafe", "min_score": 0.95}],
            )
    finally:
        model.config.id2label = SAFETY
    message = str(failed.value)
    assert "[0] 'i will hurt you': expected label 'unsafe'" in message
    assert "expected score of 'unsafe' >= 0.95, got 0.0" in message
    assert "predicted 'safe' (0.9" in message
    assert "1 of 1 canaries wrong" in message
