"""Training: loss goes down, the model overfits, parameters update or stay frozen, train mode."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckFailed
from ._common import _listing, _restored, _seed
from ._training import _matches, _one_step, _train, _training_details, _why_unchanged
from .types import LossFn, OptimizerFactory


def assert_loss_decreases(
    model: nn.Module,
    batch: Any,
    *,
    steps: int = 20,
    lr: float = 1e-3,
    min_decrease: float = 0.02,
    loss_fn: LossFn | None = None,
    optimizer: OptimizerFactory | None = None,
    seed: int | None = None,
    restore: bool = True,
) -> list[float]:
    """``steps`` real optimizer steps on ``batch`` lower the loss by at least ``min_decrease``.

    The loss is measured in eval mode (no dropout) on the batch before and after training, and
    the check passes when ``final <= initial * (1 - min_decrease)``. The training losses are
    returned, shown in the failure message and recorded as ``loss_curve`` in the results.

    Statistical design: everything random (initial dropout masks, sampling in ``loss_fn``) runs
    under ``seed``, so a run is reproducible bit for bit on one machine; what varies is the model
    and data a test brings. The defaults (Adam, lr=1e-3, 20 steps, at least a 2 % decrease) were
    calibrated over 200 seeds of an 8-32-3 MLP on 8 random examples and 50 seeds of a 2-layer,
    32-wide BERT classifier on 6 sequences (seed = model init + data): the decrease was
    15.8 % ± 2.8 (smallest 8.5 %) and 26.9 % ± 3.8 (smallest 17.3 %). The 2 % margin sits 5 and
    6.5 standard deviations below the mean, so the false-failure rate aimed at is below 1 in
    100,000 runs for a model that learns; a model that cannot learn (learning rate 0, all
    weights frozen or detached) changes the loss by exactly 0 % and always fails.
    ``tests/test_checks_seeds.py`` keeps this true over 20 seeds.

    ``loss_fn(model, batch)`` defaults to the Hugging Face ``loss`` (the batch holds ``labels``)
    or, for a batch ``(inputs, targets)``, cross-entropy for integer targets and MSE otherwise.
    ``optimizer(model)`` defaults to Adam over the trainable parameters at ``lr``. With
    ``restore`` (default) the weights are put back afterwards.

    >>> assert_loss_decreases(model, {"input_ids": ids, "labels": labels})  # doctest: +SKIP
    """
    seed = _seed(seed)
    run = _train(model, batch, steps, lr, loss_fn, optimizer, seed, restore, stop=None)
    decrease = 1 - run.final / run.initial if run.initial else 0.0
    if not decrease >= min_decrease:  # `not >=` so that NaN fails
        raise CheckFailed(
            "assert_loss_decreases",
            f"loss did not go down after {len(run.curve)} optimizer steps",
            expected=f"loss <= {run.initial * (1 - min_decrease):.4g} "
            f"(initial {run.initial:.4g} lowered by at least {min_decrease:.0%})",
            actual=f"loss {run.final:.4g}",
            difference=f"{decrease:+.1%} change (lower is better, needed -{min_decrease:.0%})"
            if decrease == decrease
            else "loss is NaN",
            seed=seed,
            details=_training_details(model, run, lr, optimizer),
        )
    return run.curve


def assert_overfits(
    model: nn.Module,
    batch: Any,
    *,
    steps: int = 300,
    lr: float = 3e-3,
    max_ratio: float = 0.1,
    max_loss: float | None = None,
    loss_fn: LossFn | None = None,
    optimizer: OptimizerFactory | None = None,
    seed: int | None = None,
    restore: bool = True,
) -> list[float]:
    """The model memorises a small batch within ``steps`` optimizer steps.

    Passes when the eval-mode loss on the batch falls to ``max_loss`` (if given) or to
    ``max_ratio`` times its initial value (default: a tenth). Training stops early once the
    target is met (checked every 10 steps), so a healthy model pays for few steps. The losses
    are returned, shown on failure and recorded as ``loss_curve``.

    Statistical design: seeded as :func:`assert_loss_decreases`. With the defaults (Adam,
    lr=3e-3, loss / 10 within at most 300 steps) the calibration models of
    :func:`assert_loss_decreases` got there in 80 steps (median; at most 140 over 200 seeds)
    for the MLP and 30 (at most 40 over 50 seeds) for the tiny BERT: the budget is twice the
    worst case seen, aiming at a false-failure rate below 1 in 1,000 while a model that cannot
    fit (frozen body, learning rate 0, labels not reaching the loss) fails. Early stopping
    keeps the cost at what the model needs.

    >>> assert_overfits(model, (x, y), max_loss=0.05)  # doctest: +SKIP
    """
    seed = _seed(seed)
    target = max_loss

    def reached(initial: float, loss: float) -> bool:
        return loss <= (target if target is not None else initial * max_ratio)

    run = _train(model, batch, steps, lr, loss_fn, optimizer, seed, restore, stop=reached)
    if not reached(run.initial, run.final):
        goal = target if target is not None else run.initial * max_ratio
        raise CheckFailed(
            "assert_overfits",
            f"the model did not overfit the batch in {len(run.curve)} steps",
            expected=f"loss <= {goal:.4g}"
            + ("" if target is not None else f" ({max_ratio:g} x initial {run.initial:.4g})"),
            actual=f"loss {run.final:.4g}",
            difference=f"{run.final / goal:.3g} x the target" if goal else None,
            seed=seed,
            details=_training_details(model, run, lr, optimizer),
        )
    return run.curve


def assert_params_update(
    model: nn.Module,
    batch: Any,
    *,
    frozen: Sequence[str] = (),
    lr: float = 1e-3,
    loss_fn: LossFn | None = None,
    optimizer: OptimizerFactory | None = None,
    seed: int | None = None,
    restore: bool = True,
) -> None:
    """One optimizer step changes every parameter, except those under ``frozen`` names.

    A parameter that does not change is named with the reason: ``requires_grad=False`` (an
    accidental freeze: list intended ones in ``frozen``), no gradient (not used in the loss, or
    detached), a gradient of exactly zero, or a gradient the optimizer ignored (not in its
    parameter groups, or learning rate 0). Adam moves every parameter with a non-zero gradient
    by about ``lr`` in its first step, so a single step is a sharp test.

    >>> assert_params_update(model, batch, frozen=["bert.embeddings"])  # doctest: +SKIP
    """
    seed = _seed(seed)
    with _restored(model, restore):
        before, grads = _one_step(model, batch, lr, loss_fn, optimizer, seed)
        stale: list[str] = []
        checked = 0
        for name, param in model.named_parameters():
            if _matches(name, frozen):
                continue
            checked += 1
            if torch.equal(before[name], param.detach()):
                stale.append(f"{name}: {_why_unchanged(param, grads.get(name))}")
    if stale:
        raise CheckFailed(
            "assert_params_update",
            "some parameters did not change after an optimizer step",
            expected=f"all {checked} parameters"
            + (f" outside {list(frozen)}" if frozen else "")
            + " change",
            actual=_listing(stale),
            difference=f"{len(stale)} of {checked} unchanged",
            seed=seed,
        )


def assert_frozen(
    model: nn.Module,
    names: Sequence[str] | str,
    batch: Any,
    *,
    lr: float = 1e-3,
    loss_fn: LossFn | None = None,
    optimizer: OptimizerFactory | None = None,
    seed: int | None = None,
    restore: bool = True,
) -> None:
    """The parameters under ``names`` (full names or module prefixes) stay frozen in training.

    Each must have ``requires_grad=False`` (or get no gradient) and be unchanged after a real
    optimizer step; pass your training code's ``optimizer(model)`` to test its parameter
    groups. A name that matches no parameter fails too (a renamed module must not silently
    unfreeze), with the closest names.

    >>> assert_frozen(model, ["bert.embeddings", "bert.encoder.layer.0"], batch)  # doctest: +SKIP
    """
    seed = _seed(seed)
    names = [names] if isinstance(names, str) else list(names)
    all_names = [n for n, _ in model.named_parameters()]
    unmatched = [n for n in names if not any(_matches(p, [n]) for p in all_names)]
    if unmatched:
        close = {n: difflib.get_close_matches(n, all_names, n=3, cutoff=0.5) for n in unmatched}
        raise CheckFailed(
            "assert_frozen",
            "names match no parameter",
            expected=f"parameters under {unmatched}",
            actual="none",
            details="\n".join(f"closest to {n!r}: {c or 'nothing'}" for n, c in close.items()),
        )
    with _restored(model, restore):
        before, grads = _one_step(model, batch, lr, loss_fn, optimizer, seed)
        problems: list[str] = []
        for name, param in model.named_parameters():
            if not _matches(name, names):
                continue
            why = []
            if param.requires_grad:
                why.append("requires_grad=True")
            grad = grads.get(name)
            if grad is not None:
                why.append(f"got a gradient (norm {grad.float().norm():.3g})")
            delta = (param.detach().float() - before[name].float()).abs().max().item()
            if delta > 0:
                why.append(f"changed by max |Δ| = {delta:.3g}")
            if why:
                problems.append(f"{name}: {', '.join(why)}")
    if problems:
        raise CheckFailed(
            "assert_frozen",
            "parameters meant to be frozen are trainable or changed",
            expected=f"parameters under {names}: requires_grad=False, no gradient, unchanged",
            actual=_listing(problems),
            difference=f"{len(problems)} parameters",
            seed=seed,
            details="set param.requires_grad_(False) for them (and leave them out of the "
            "optimizer)",
        )
