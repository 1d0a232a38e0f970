"""The training loop the training checks share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import _record
from ..errors import CheckFailed
from ._common import _call, _named_outputs, _pick, _restored, _seeded
from .types import LossFn, OptimizerFactory


@dataclass(frozen=True)
class _Training:
    initial: float  # eval-mode loss on the batch before the first step
    curve: list[float]  # training-mode loss at each step
    final: float  # eval-mode loss after the last step


def _train(
    model: nn.Module,
    batch: Any,
    steps: int,
    lr: float,
    loss_fn: LossFn | None,
    optimizer: OptimizerFactory | None,
    seed: int,
    restore: bool,
    stop: Callable[[float, float], bool] | None,
) -> _Training:
    compute = loss_fn or _default_loss
    curve: list[float] = []
    with _restored(model, restore), _seeded(seed):
        initial = _eval_loss(model, batch, compute)
        opt = _optimizer(model, lr, optimizer)
        final = initial
        for step in range(1, steps + 1):
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = compute(model, batch)
            loss.backward()
            opt.step()
            curve.append(float(loss.detach()))
            if stop is not None and (step % 10 == 0 or step == steps):
                final = _eval_loss(model, batch, compute)
                if stop(initial, final):
                    break
        if stop is None:
            final = _eval_loss(model, batch, compute)
    _record.record("loss_curve", curve)
    return _Training(initial, curve, final)


def _one_step(
    model: nn.Module,
    batch: Any,
    lr: float,
    loss_fn: LossFn | None,
    optimizer: OptimizerFactory | None,
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    """One training step; returns the parameters before it and the gradients it used."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with _seeded(seed):
        opt = _optimizer(model, lr, optimizer)
        model.train()
        opt.zero_grad(set_to_none=True)
        (loss_fn or _default_loss)(model, batch).backward()
        grads = {
            n: (p.grad.detach().clone() if p.grad is not None else None)
            for n, p in model.named_parameters()
        }
        opt.step()
    return before, grads


def _optimizer(
    model: nn.Module, lr: float, factory: OptimizerFactory | None
) -> torch.optim.Optimizer:
    if factory is not None:
        return factory(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise CheckFailed(
            "training check",
            "the model has no trainable parameters",
            expected="parameters with requires_grad=True",
            actual="none",
        )
    return torch.optim.Adam(trainable, lr=lr)


def _default_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Hugging Face ``loss`` from ``labels``, else cross-entropy / MSE on ``(inputs, targets)``."""
    if isinstance(batch, Mapping):
        out = model(**batch)
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if loss is None:
            raise ValueError(
                "the model returned no `loss`: put `labels` in the batch, pass a batch "
                "(inputs, targets), or pass loss_fn=lambda model, batch: ..."
            )
        return loss
    if isinstance(batch, tuple | list) and len(batch) == 2:
        inputs, targets = batch
        _, pred = _pick(_named_outputs(_call(model, inputs)), None)
        if not targets.is_floating_point():
            return nn.functional.cross_entropy(
                pred.reshape(-1, pred.shape[-1]), targets.reshape(-1)
            )
        return nn.functional.mse_loss(pred, targets)
    raise ValueError(
        "cannot compute a loss for this batch: pass a mapping with `labels` (Hugging Face), "
        "a pair (inputs, targets), or loss_fn=lambda model, batch: ..."
    )


def _eval_loss(model: nn.Module, batch: Any, compute: LossFn) -> float:
    model.eval()
    with torch.no_grad():
        return float(compute(model, batch))


def _why_unchanged(param: nn.Parameter, grad: torch.Tensor | None) -> str:
    if not param.requires_grad:
        return "requires_grad=False (frozen; list it in frozen= if intended)"
    if grad is None:
        return "no gradient (not used in the loss, or detached from it)"
    if not grad.any():
        return "gradient is exactly zero"
    return (
        f"gradient norm {grad.float().norm():.3g} but the optimizer did not change it "
        "(not in its parameter groups, or learning rate 0)"
    )


def _training_details(
    model: nn.Module, run: _Training, lr: float, optimizer: OptimizerFactory | None
) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    how = "optimizer=<yours>" if optimizer is not None else f"Adam lr={lr:g}"
    hints = []
    if trainable == 0:
        hints.append("no parameter requires grad")
    elif run.initial == run.final:
        hints.append(
            "the eval loss did not change at all: no weight moved (learning rate 0, or the "
            "loss detached from the weights)"
        )
    return (
        f"loss curve (training mode, per step): {_fmt_curve(run.curve)}\n"
        f"eval loss: {run.initial:.4g} -> {run.final:.4g}; {how}; "
        f"{trainable:,} of {total:,} parameters trainable"
        + ("".join(f"\nhint: {h}" for h in hints))
    )


def _fmt_curve(curve: Sequence[float], points: int = 12) -> str:
    if len(curve) <= points:
        return ", ".join(f"{v:.4g}" for v in curve)
    picks = sorted({round(i * (len(curve) - 1) / (points - 1)) for i in range(points)})
    return ", ".join(f"[{i}] {curve[i]:.4g}" for i in picks)


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)
