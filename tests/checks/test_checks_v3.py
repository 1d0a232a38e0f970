"""Checks v3 (issue 22): every failure names the bug, and the bugs v2 missed are caught.

Each planted bug comes with its correct twin: over 5 seeds the natural check fails on the bug
with a message naming it, and passes on the twin. Real tiny models (Hugging Face models built
from configs, small torch modules); 1 torch thread (conftest). The seeds loop inside a test
(one model build per seed, no per-seed test overhead) to keep the suite cheap.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
)

from mlcheck.checks import (
    CheckFailed,
    assert_batch_invariant,
    assert_equivalent,
    assert_frozen,
    assert_initial_loss,
    assert_loss_decreases,
    assert_loss_matches,
    assert_output_shape,
    assert_overfits,
    assert_params_update,
    assert_train_mode,
)

SEEDS = range(5)
VOCAB = 100


def mlp(seed: int) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(seed)
    return model, (torch.randn(8, 8, generator=g), torch.randint(0, 3, (8,), generator=g))


def cross_entropy(model: nn.Module, batch: Any) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def bert_config(**overrides: Any) -> BertConfig:
    settings: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=VOCAB,
        num_labels=3,
    )
    settings.update(overrides)
    return BertConfig(**settings)


def gpt2(seed: int, **overrides: Any) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    settings: dict[str, Any] = dict(
        n_embd=32, n_layer=1, n_head=2, vocab_size=VOCAB, n_positions=32
    )
    settings.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**settings)).eval()


def tokens(seed: int, rows: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(5, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Readable failures


def test_a_check_failure_shows_the_test_line_and_the_message_not_the_checks_source(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import torch
        from mlcheck.checks import assert_loss_decreases, assert_output_shape

        def test_shape():
            assert_output_shape(torch.nn.Linear(4, 3), torch.zeros(2, 4), ("B", 4))

        def test_detached():
            model = torch.nn.Linear(4, 3)
            batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
            loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]).detach()
            assert_loss_decreases(model, batch, loss_fn=loss)
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert ">       assert_output_shape(torch.nn.Linear(4, 3)" in out
    assert ">       assert_loss_decreases(model, batch, loss_fn=loss)" in out
    assert "E       mlcheck.errors.CheckFailed: assert_output_shape: output shape" in out
    # none of the checks' own source or docstrings
    assert "def assert_output_shape" not in out and "Statistical design" not in out
    assert "_training.py" not in out and "shapes.py" not in out
    # the detached loss is a check failure that says so, not torch's autograd RuntimeError
    assert "the loss has no grad_fn: it was detached or computed under no_grad" in out
    assert "does not require grad" not in out


def test_a_detached_loss_is_a_check_failure_in_every_training_check() -> None:
    def detached(model: nn.Module, batch: Any) -> torch.Tensor:
        return cross_entropy(model, batch).detach()

    for seed in SEEDS:
        model, batch = mlp(seed)
        for check in (assert_loss_decreases, assert_overfits, assert_params_update):
            with pytest.raises(CheckFailed, match="no grad_fn: it was detached or computed"):
                check(model, batch, loss_fn=detached, seed=seed)
        with pytest.raises(CheckFailed, match="no grad_fn"):
            assert_frozen(model, "0", batch, loss_fn=detached, seed=seed)
        # the twin
        assert_loss_decreases(model, batch, loss_fn=cross_entropy, seed=seed)
        assert_params_update(model, batch, loss_fn=cross_entropy, seed=seed)


def test_loss_decreases_says_a_negated_loss_is_negated() -> None:
    def negated(model: nn.Module, batch: Any) -> torch.Tensor:
        return -cross_entropy(model, batch)

    for seed in SEEDS:
        model, batch = mlp(seed)
        with pytest.raises(CheckFailed) as failed:
            assert_loss_decreases(model, batch, loss_fn=negated, seed=seed)
        text = str(failed.value)
        assert "is it negated?" in text and "grew in size" in text
        assert "%" not in text.split("details")[0].split("difference")[-1]
        assert_loss_decreases(model, batch, loss_fn=cross_entropy, seed=seed)


def test_loss_decreases_judges_a_loss_that_may_be_negative_by_its_size() -> None:
    """A Gaussian NLL (float targets) is negative when the fit is good; falling is right."""

    def gaussian_nll(model: nn.Module, batch: Any) -> torch.Tensor:
        out = model(batch[0])
        return F.gaussian_nll_loss(out[:, :1], batch[1], out[:, 1:].exp())

    for seed in SEEDS:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
        x = torch.randn(16, 4, generator=torch.Generator().manual_seed(seed))
        batch = (x, 0.01 * x[:, :1])
        assert_loss_decreases(model, batch, loss_fn=gaussian_nll, steps=100, lr=1e-2, seed=seed)


# ---------------------------------------------------------------------------------------------
# assert_equivalent names the first diverging module


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


# ---------------------------------------------------------------------------------------------
# assert_loss_matches: which positions, which references


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
        model = gpt2(seed, pad_token_id=pad, eos_token_id=pad)
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


# ---------------------------------------------------------------------------------------------
# assert_batch_invariant: NaN rows and batchless outputs


class LogHead(nn.Module):
    """``log`` of a linear output: NaN wherever it is negative (``safe`` adds softplus)."""

    def __init__(self, safe: bool) -> None:
        super().__init__()
        self.safe = safe
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return (F.softplus(h) if self.safe else h).log()


class Scorer(nn.Module):
    """One score per row; ``squeeze_all`` is the planted ``.squeeze()`` bug."""

    def __init__(self, squeeze_all: bool) -> None:
        super().__init__()
        self.squeeze_all = squeeze_all
        self.proj = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.proj(x)
        return out.squeeze() if self.squeeze_all else out.squeeze(-1)


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


# ---------------------------------------------------------------------------------------------
# assert_train_mode: an RNG reset inside forward vs bypassed dropout


class DropNet(nn.Module):
    def __init__(self, bug: str = "") -> None:
        super().__init__()
        self.bug = bug
        self.proj = nn.Linear(8, 32)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bug == "reseed":
            torch.manual_seed(1234)  # "for reproducibility"
        h = self.proj(x)
        h = F.dropout(h, 0.1, training=False) if self.bug == "bypass" else self.drop(h)
        return self.head(h)


def test_train_mode_tells_an_rng_reset_in_forward_from_bypassed_dropout() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        x = torch.randn(4, 8)
        with pytest.raises(CheckFailed) as failed:
            assert_train_mode(DropNet("reseed"), x, seed=seed)
        text = str(failed.value)
        assert "forward resets the random generator" in text and "manual_seed" in text
        assert "bypass" not in text
        with pytest.raises(CheckFailed) as failed:
            assert_train_mode(DropNet("bypass"), x, seed=seed)
        text = str(failed.value)
        assert "the dropout modules are bypassed" in text and "resets" not in text
        assert_train_mode(DropNet(), x, seed=seed)


# ---------------------------------------------------------------------------------------------
# assert_initial_loss wording; one-hot labels


def test_initial_loss_calls_one_hot_labels_one_hot_and_names_the_loss_checked() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = BertForSequenceClassification(bert_config(num_labels=4))
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


# ---------------------------------------------------------------------------------------------
# The bugs v2 missed, caught by the natural check


class Smoothed(nn.Module):
    """A classifier whose loss keeps ``label_smoothing`` in every mode (the planted bug)."""

    def __init__(self, seed: int, smoothing: float) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.bert = BertForSequenceClassification(bert_config())
        self.smoothing = smoothing

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.bert(input_ids=input_ids).logits
        loss = F.cross_entropy(logits, labels, label_smoothing=self.smoothing)
        return {"loss": loss, "logits": logits}


def clf_batch(seed: int, classes: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (6, 8), generator=g)
    return {"input_ids": ids, "labels": torch.randint(0, classes, (6,), generator=g)}


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
        model = BertForSequenceClassification(bert_config()).eval()
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
        model = BertForMaskedLM(bert_config()).eval()
        with pytest.raises(CheckFailed) as failed:
            assert_loss_matches(model, masked_lm_batch(seed, forgot_ignore=True), "masked-lm")
        text = str(failed.value)
        assert "masked-LM labels sit on positions that were not masked" in text
        assert "did not set labels to -100" in text
        assert_loss_matches(model, masked_lm_batch(seed, forgot_ignore=False), "masked-lm")


class MultiTask(nn.Module):
    """A shared body and two task heads; ``plain`` keeps the heads in a Python list (the bug)."""

    def __init__(self, plain: bool) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        heads = [nn.Linear(16, 3), nn.Linear(16, 3)]
        self.heads = heads if plain else nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return self.heads[0](h) + self.heads[1](h)


def test_params_update_and_frozen_report_modules_in_plain_containers() -> None:
    for seed in SEEDS:
        _, batch = mlp(seed)
        torch.manual_seed(seed)
        with pytest.raises(CheckFailed) as failed:
            assert_params_update(MultiTask(plain=True), batch, seed=seed)
        text = str(failed.value)
        assert "heads: a plain list of 2 (Linear)" in text and "never trained, saved" in text
        with pytest.raises(CheckFailed, match="heads: a plain list of 2"):
            model = MultiTask(plain=True)
            model.body.requires_grad_(False)
            assert_frozen(model, "body", batch, seed=seed)
        torch.manual_seed(seed)
        assert_params_update(MultiTask(plain=False), batch, seed=seed)


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


def test_overfits_stops_once_the_loss_is_met_with_wrong_predictions() -> None:
    """Labels that never reach the loss (a constant target): the loss target is met early and
    the predictions stay at chance; the check says so well before its 300-step budget."""

    def constant_target(model: nn.Module, batch: Any) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]), torch.zeros_like(batch[1]))

    for seed in SEEDS:
        model, batch = mlp(seed)
        with pytest.raises(CheckFailed) as failed:
            assert_overfits(model, batch, loss_fn=constant_target, seed=seed)
        text = str(failed.value)
        assert "the loss reached its target but the predictions do not fit" in text
        steps = int(text.split("predictions do not fit the batch after ")[1].split(" ")[0])
        assert steps < 300, text
        assert_overfits(model, batch, seed=seed)


# ---------------------------------------------------------------------------------------------
# New checks: assert_grad_accumulation, assert_labels_survive


def uneven_lm_batch(seed: int) -> dict[str, torch.Tensor]:
    """4 rows of 12 tokens, right-padded to different lengths: micro-batches of uneven size."""
    ids = tokens(seed, rows=4, length=12)
    mask = torch.ones_like(ids)
    for row, length in enumerate((12, 11, 4, 3)):
        mask[row, length:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def scored(micro: dict[str, torch.Tensor]) -> int:
    return int((micro["labels"][:, 1:] != -100).sum())


def mean_of_means(model: nn.Module, micro: list[Any]) -> None:
    for piece in micro:
        (model(**piece).loss / len(micro)).backward()


def undivided(model: nn.Module, micro: list[Any]) -> None:
    for piece in micro:
        model(**piece).loss.backward()


def token_weighted(model: nn.Module, micro: list[Any]) -> None:
    total = sum(scored(piece) for piece in micro)
    for piece in micro:
        (model(**piece).loss * scored(piece) / total).backward()


def test_grad_accumulation_catches_a_mean_of_micro_batch_means() -> None:
    from mlcheck.checks import assert_grad_accumulation

    for seed in SEEDS:
        model, batch = gpt2(seed), uneven_lm_batch(seed)
        with pytest.raises(CheckFailed) as failed:
            assert_grad_accumulation(model, batch, mean_of_means, micro_batches=2, seed=seed)
        text = str(failed.value)
        assert "the accumulated gradient is not the full batch's gradient" in text
        assert "a mean of micro-batch means" in text and "[23, 7] labelled tokens" in text
        with pytest.raises(CheckFailed, match="not divided by the number of micro-batches"):
            assert_grad_accumulation(model, batch, undivided, micro_batches=2, seed=seed)
        assert_grad_accumulation(model, batch, token_weighted, micro_batches=2, seed=seed)
        assert all(p.grad is None for p in model.parameters())  # put back


def test_labels_survive_names_the_example_whose_answer_was_truncated_away() -> None:
    from mlcheck.checks import assert_labels_survive

    def preprocess(example: dict[str, str], keep_answer: bool) -> dict[str, list[int]]:
        prompt = [ord(c) for c in example["prompt"]]
        answer = [ord(c) for c in example["answer"]]
        if keep_answer:  # the twin: truncate the prompt, keep the answer
            prompt = prompt[: max(0, 16 - len(answer))]
        ids = (prompt + answer)[:16]
        labels = ([-100] * len(prompt) + answer)[:16]
        return {"input_ids": ids, "labels": labels}

    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        short = int(torch.randint(2, 8, (1,), generator=g))
        examples = [
            {"prompt": "q" * short, "answer": "yes"},
            {"prompt": "x" * (20 + seed), "answer": "no"},
        ]
        with pytest.raises(CheckFailed) as failed:
            assert_labels_survive(lambda e: preprocess(e, keep_answer=False), examples)
        text = str(failed.value)
        assert f"example 1 (prompt: {20 + seed} chars, answer: 2 chars)" in text
        assert "16 input tokens, 16 labels, all -100" in text and "truncation" in text
        assert assert_labels_survive(lambda e: preprocess(e, keep_answer=True), examples) == [3, 2]


def test_a_long_training_check_shows_progress_in_the_terminal(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past pytest's output capture; here "long" is set to 0 s so that every step counts."""
    from mlcheck import progress

    monkeypatch.setattr(progress, "CHECK_AFTER", 0.0)
    monkeypatch.setattr(progress, "CHECK_EVERY", 0.0)
    pytester.makepyfile(
        """
        import torch
        from mlcheck.checks import assert_loss_decreases

        def test_train():
            torch.manual_seed(0)
            model = torch.nn.Linear(4, 3)
            batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
            assert_loss_decreases(model, batch, steps=3, lr=0.1)
        """
    )
    # any --mlcheck-* option opts the run in (SPEC §2); without it the lines go to stderr,
    # which pytest captures and shows with a failure
    result = pytester.runpytest_inprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "--mlcheck-progress=-1"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mlcheck: assert_loss_decreases step 3/3, loss *"])
    assert progress.check_sink is None  # the session put it back
