"""assert_loss_decreases, assert_overfits, assert_params_update, assert_frozen and
assert_train_mode (mlcheck/checks/training.py) pass on correct models and fail, with a message
naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_models import (
    SEEDS,
    SummedLoss,
    TinyNet,
    bert,
    bert_config,
    clf_batch,
    gpt2,
    ids,
    llama,
    lm_batch,
    make_bert,
    make_tiny,
    tabular,
    tabular_batch,
    text_batch,
)
from torch import nn
from torch.nn import functional as F
from transformers import (
    BertModel,
)

from mlcheck import records as _record
from mlcheck.checks import (
    CheckFailed,
    assert_frozen,
    assert_loss_decreases,
    assert_overfits,
    assert_params_update,
    assert_train_mode,
)
from mlcheck.errors import NothingToCheck


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


def mlp(seed: int) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(seed)
    return model, (torch.randn(8, 8, generator=g), torch.randint(0, 3, (8,), generator=g))


def cross_entropy(model: nn.Module, batch: Any) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


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
