"""Every check passes on a correct model and fails, with a useful message, on a planted bug.

Real tiny models only: Hugging Face BERT built from a config and small plain torch modules.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

from mlcheck import records as _record
from mlcheck.checks import (
    CheckFailed,
    assert_batch_invariant,
    assert_deterministic,
    assert_device_roundtrip,
    assert_finite,
    assert_frozen,
    assert_labels,
    assert_loss_decreases,
    assert_output_shape,
    assert_overfits,
    assert_params_update,
    assert_predicts,
    assert_save_load_roundtrip,
)
from mlcheck.errors import AcceleratorMissing

NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}


def bert_config(**overrides: Any) -> BertConfig:
    settings: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
        id2label=NLI,
        label2id={v: k for k, v in NLI.items()},
    )
    settings.update(overrides)
    return BertConfig(**settings)


def make_bert(seed: int = 0, **overrides: Any) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(**overrides)).eval()


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


# ---------------------------------------------------------------------------------------------
# assert_output_shape


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


# ---------------------------------------------------------------------------------------------
# assert_device_roundtrip


class MaskFromCpu(nn.Module):
    """Planted bug: a tensor created inside forward without device=."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.eye(8)  # lands on the CPU whatever the model's device
        return self.linear(x @ weights)


class UnregisteredScale(nn.Module):
    """Planted bug: a plain tensor attribute, which .to() does not move."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)
        self.scale = torch.ones(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale.to(x.device)


class ExtraCpuOutput(nn.Module):
    """Planted bug: an output built on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.linear(x), "counts": torch.zeros(x.shape[0])}


def test_device_roundtrip_meta_passes_and_keeps_weights() -> None:
    model = make_bert()
    before = model.classifier.weight.detach().clone()
    assert_device_roundtrip(model, text_batch(labels=False), device="meta")
    assert_device_roundtrip(make_tiny(), tabular_batch()[0], device="meta")
    assert model.classifier.weight.device.type == "cpu"
    assert torch.equal(model.classifier.weight, before)
    with torch.device("meta"):  # as models.empty builds it: full size, no weights
        empty = BertForSequenceClassification(bert_config())
    assert_device_roundtrip(empty, text_batch(labels=False), device="meta")


def test_device_roundtrip_meta_catches_tensor_created_on_cpu() -> None:
    # meta silently accepts `meta @ cpu`, so only watching every operation catches this
    with pytest.raises(CheckFailed) as failed:
        assert_device_roundtrip(MaskFromCpu(), torch.randn(2, 8), device="meta")
    message = str(failed.value)
    assert "forward uses tensors that are not on meta" in message
    assert "mixes cpu with meta" in message
    assert "test_checks.py" in message and "torch.eye(8)" in message  # the guilty line
    assert "device=x.device" in message


def test_device_roundtrip_names_plain_tensor_attribute() -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_device_roundtrip(UnregisteredScale(), torch.randn(2, 8), device="meta")
    message = str(failed.value)
    assert "tensors stayed off meta after model.to('meta')" in message
    assert "scale (plain tensor attribute, not a registered buffer) on cpu" in message
    assert "register_buffer" in message


def test_device_roundtrip_catches_output_left_on_cpu() -> None:
    with pytest.raises(CheckFailed, match="outputs are not on meta") as failed:
        assert_device_roundtrip(ExtraCpuOutput(), torch.randn(2, 8), device="meta")
    assert "counts on cpu" in str(failed.value)


def test_device_roundtrip_numbers_path_on_cpu() -> None:
    # the path an accelerator takes (reference outputs, comparison, return trip), run on CPU
    model = make_bert()
    assert_device_roundtrip(model, text_batch(labels=False), device="cpu", seed=1)
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="has an accelerator"
)
def test_device_roundtrip_without_accelerator_says_what_to_do() -> None:
    with pytest.raises(AcceleratorMissing) as missing:
        assert_device_roundtrip(make_tiny(), torch.randn(2, 8))
    assert "device='meta'" in str(missing.value)
    assert "mlcheck:gpu" in str(missing.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on GPU machines)")
def test_device_roundtrip_on_cuda() -> None:
    model = make_bert()
    assert_device_roundtrip(model, text_batch(labels=False), device="cuda")
    assert model.classifier.weight.device.type == "cpu"
    with pytest.raises(CheckFailed, match="mixes cpu with cuda"):
        assert_device_roundtrip(MaskFromCpu(), torch.randn(2, 8), device="cuda")


# ---------------------------------------------------------------------------------------------
# Training: assert_loss_decreases, assert_overfits, assert_params_update, assert_frozen


def test_loss_decreases_and_records_curve() -> None:
    facts = _record.start()
    try:
        curve = assert_loss_decreases(make_bert(), text_batch())
    finally:
        _record.stop()
    assert len(curve) == 20 and facts["loss_curve"] == curve
    assert_loss_decreases(make_tiny(), tabular_batch())


def test_loss_decreases_restores_weights() -> None:
    model = make_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert_loss_decreases(model, tabular_batch())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loss_decreases_fails_with_learning_rate_zero() -> None:
    def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=0.0)  # the planted bug

    with pytest.raises(CheckFailed) as failed:
        assert_loss_decreases(make_bert(), text_batch(), steps=5, optimizer=make_optimizer, seed=3)
    message = str(failed.value)
    assert "loss did not go down after 5 optimizer steps" in message
    assert "+0.0% change" in message
    assert "loss curve (training mode, per step)" in message
    assert "learning rate 0" in message
    assert "seed:       3 (reproduce with seed=3 or MLCHECK_SEED=3)" in message


def test_overfits_small_batch() -> None:
    curve = assert_overfits(make_tiny(), tabular_batch(), lr=1e-2)
    assert curve[-1] < curve[0] and len(curve) < 300  # stopped early
    assert_overfits(make_bert(), text_batch(), lr=1e-2, max_loss=0.05)


def test_overfits_fails_when_body_is_frozen() -> None:
    model = make_tiny()
    model.body.requires_grad_(False)  # the planted bug: only the last layer trains...
    model.head.weight.requires_grad_(False)  # ...and then only its bias
    with pytest.raises(CheckFailed) as failed:
        assert_overfits(model, tabular_batch(), steps=60)
    message = str(failed.value)
    assert "did not overfit the batch in 60 steps" in message
    assert "3 of 387 parameters trainable" in message
    assert "[59]" in message  # the curve shows the last step


def test_params_update_passes_on_correct_models() -> None:
    assert_params_update(make_bert(), text_batch())
    assert_params_update(make_tiny(), tabular_batch())


def test_params_update_names_accidentally_frozen_layer() -> None:
    model = make_bert()
    model.bert.encoder.layer[1].requires_grad_(False)  # the planted bug
    with pytest.raises(CheckFailed) as failed:
        assert_params_update(model, text_batch())
    message = str(failed.value)
    assert "bert.encoder.layer.1.attention.self.query.weight: requires_grad=False" in message
    assert "bert.encoder.layer.0" not in message
    assert "16 of 41 unchanged" in message
    # declaring the freeze makes it pass
    assert_params_update(model, text_batch(), frozen=["bert.encoder.layer.1"])


def test_params_update_explains_missing_gradient_and_optimizer_gap() -> None:
    class Detached(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).detach())  # planted bug: body gets no gradient

    with pytest.raises(CheckFailed, match=r"body\.0\.weight: no gradient"):
        assert_params_update(Detached(), tabular_batch())

    def head_only(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.head.parameters(), lr=0.1)  # forgets the body

    with pytest.raises(CheckFailed, match=r"did not change it \(not in its parameter groups"):
        assert_params_update(make_tiny(), tabular_batch(), optimizer=head_only)


def test_frozen_passes_when_embeddings_are_frozen() -> None:
    model = make_bert()
    model.bert.embeddings.requires_grad_(False)
    assert_frozen(model, ["bert.embeddings"], text_batch())


def test_frozen_fails_when_layer_still_trains() -> None:
    model = make_bert()
    model.bert.embeddings.word_embeddings.requires_grad_(False)  # forgot the other embeddings
    with pytest.raises(CheckFailed) as failed:
        assert_frozen(model, "bert.embeddings", text_batch())
    message = str(failed.value)
    assert "parameters meant to be frozen are trainable or changed" in message
    assert "bert.embeddings.position_embeddings.weight: requires_grad=True" in message
    assert "changed by max |Δ|" in message
    assert "word_embeddings" not in message


def test_frozen_fails_on_a_name_that_matches_nothing() -> None:
    with pytest.raises(CheckFailed, match=r"closest to 'bert\.embedding': \['bert\.embeddings"):
        assert_frozen(make_bert(), ["bert.embedding"], text_batch())


# ---------------------------------------------------------------------------------------------
# assert_labels, assert_predicts


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


# ---------------------------------------------------------------------------------------------
# assert_save_load_roundtrip


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


# ---------------------------------------------------------------------------------------------
# assert_batch_invariant


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


# ---------------------------------------------------------------------------------------------
# assert_finite


class SqrtOfZero(nn.Module):
    """Planted bug: finite outputs, NaN gradients (d sqrt(x)/dx at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y + torch.sqrt(y - y)


def test_finite_passes() -> None:
    assert_finite(torch.tensor([1.0, 2.0]))
    assert_finite(make_bert(), text_batch())
    assert_finite(make_tiny(), tabular_batch()[0])


def test_finite_catches_nan_weight() -> None:
    model = make_bert()
    with torch.no_grad():
        model.classifier.weight[1, 4] = math.nan  # the planted bug
    with pytest.raises(CheckFailed) as failed:
        assert_finite(model, text_batch())
    message = str(failed.value)
    assert "non-finite values in the weights" in message
    assert "classifier.weight: 1 NaN, 0 Inf of 96 values (first at (1, 4))" in message


def test_finite_catches_nan_output_and_gradient() -> None:
    class LogOfNegative(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(self.head(self.body(x)) - 100)

    with pytest.raises(CheckFailed, match="non-finite values in the outputs"):
        assert_finite(LogOfNegative(), tabular_batch()[0])
    torch.manual_seed(0)
    model = SqrtOfZero()
    with pytest.raises(CheckFailed) as failed:
        assert_finite(model, torch.randn(2, 8))
    message = str(failed.value)
    assert "non-finite values in the gradients" in message
    assert "linear.weight.grad: 24 NaN" in message
    assert model.linear.weight.grad is None  # gradients are left as they were
    assert_finite(model, torch.randn(2, 8), grads=False)


def test_finite_blames_the_input() -> None:
    with pytest.raises(CheckFailed, match=r"non-finite input \(not the model's fault"):
        assert_finite(make_tiny(), torch.full((2, 8), math.inf))


# ---------------------------------------------------------------------------------------------
# assert_deterministic


def test_deterministic_in_eval_mode() -> None:
    assert_deterministic(make_bert(), text_batch(labels=False))


def test_deterministic_catches_dropout_left_on() -> None:
    model = make_bert().train()  # the planted bug: inference with dropout on
    with pytest.raises(CheckFailed) as failed:
        assert_deterministic(model, text_batch(labels=False))
    message = str(failed.value)
    assert "outputs differ between two identical calls" in message
    assert "logits (torch.float32): max |Δ| =" in message
    assert "model.training is True" in message and "call model.eval()" in message
    assert "bert.embeddings.dropout" in message
