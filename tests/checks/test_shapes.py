"""assert_output_shape (mlcheck/checks/shapes.py) pass on correct models and fail, with a message
naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import SEEDS, Scorer, bert_config, make_bert, make_tiny, tabular_batch, text_batch
from transformers import (
    BertForSequenceClassification,
)

from mlcheck.checks import (
    CheckFailed,
    assert_output_shape,
)


def test_output_shape_binds_symbolic_dims() -> None:
    batch = text_batch(labels=False)
    assert assert_output_shape(make_bert(), batch, ("B", 3)) == {"B": 4}
    assert_output_shape(make_tiny(), tabular_batch()[0], {"output": ("B", 3)}, dims={"B": 8})


def test_output_shape_on_meta_model_without_weights() -> None:
    with torch.device("meta"):
        model = BertForSequenceClassification(bert_config())
    assert_output_shape(model, text_batch(labels=False), ("B", 3))


def test_output_shape_names_the_wrong_dim() -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_output_shape(make_bert(num_labels=2), text_batch(labels=False), ("B", 3))
    message = str(failed.value)
    assert "logits dim 1 is 2, expected 3" in message
    assert "expected:   logits: (B, 3)" in message
    assert "actual:     logits: (4, 2)" in message


def test_output_shape_catches_inconsistent_symbol() -> None:
    x = tabular_batch()[0]
    with pytest.raises(CheckFailed, match=r"dim 0 \(B\) is 8, but B = 5 from dims="):
        assert_output_shape(make_tiny(), x, ("B", 3), dims={"B": 5})


def test_output_shape_runs_a_batch_of_one_and_catches_squeeze() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        x = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))
        with pytest.raises(CheckFailed) as failed:
            assert_output_shape(Scorer(squeeze_all=True), x, ("B",))
        text = str(failed.value)
        assert "with a batch of one (the first row) output is (), expected (1,)" in text
        assert ".squeeze()" in text
        assert assert_output_shape(Scorer(squeeze_all=False), x, ("B",)) == {"B": 4}
