"""The training loop the training checks share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import records as _record
from ..errors import CheckFailed, UsageError, hide_frame
from ..progress import CheckProgress
from ._common import _call, _named_outputs, _pick, _restored, _seeded, _split
from .types import LossFn, OptimizerFactory


@dataclass(frozen=True)
class _Training:
    initial: float  # eval-mode loss on the batch before the first step
    curve: list[float]  # training-mode loss at each step
    final: float  # eval-mode loss after the last step
    fit: _Fit | None = None  # how well the predictions fit the labels at the end (None: not judged)


@dataclass(frozen=True)
class _Fit:
    """Argmax predictions against integer labels, on the non-ignored (``!= -100``) labels."""

    kind: str  # what was compared, for the message
    correct: int
    total: int
    first_wrong: str  # "" when all are right

    @property
    def perfect(self) -> bool:
        __tracebackhide__ = hide_frame
        return self.correct == self.total


def _fit(model: nn.Module, batch: Any) -> _Fit | None:
    """Judge the predictions (eval mode); None where there is nothing to judge (float labels)."""
    __tracebackhide__ = hide_frame
    split = _split(batch)
    if split is None:
        return None
    inputs, labels = split
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point():
        return None
    model.eval()
    with torch.no_grad():
        named = _named_outputs(_call(model, inputs))
    if isinstance(batch, Mapping) and "logits" not in named:
        return None
    _, logits = _pick(named, "logits" if "logits" in named else None)
    labels = labels.to(logits.device)
    ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
    if _is_causal_lm(model) and ids is not None and labels.shape == ids.shape:
        kind = "causal LM: argmax of logits[:, :-1] against labels[:, 1:]"
        logits, labels = logits[:, :-1], labels[:, 1:]
    elif labels.dim() == 1 and logits.dim() == 2:
        kind = "classification: argmax of the logits against the labels"
    elif tuple(labels.shape) == tuple(logits.shape[:-1]):
        kind = "token classification: argmax per token against the labels"
    else:
        return None
    predicted = logits.argmax(-1)
    counted = labels != -100
    wrong = (predicted != labels) & counted
    if (
        kind.startswith("causal LM")
        and ids is not None
        and isinstance(batch, Mapping)
        and wrong.any()
    ):
        mask = batch.get("attention_mask")
        wrong &= ~_ambiguous_ok(ids, mask, predicted, labels)
    first = ""
    if wrong.any():
        at = tuple(int(i) for i in wrong.nonzero()[0])
        where = f"row {at[0]}" + (f", position {at[1]}" if len(at) > 1 else "")
        first = f"{where}: predicted {int(predicted[at])}, label {int(labels[at])}"
    return _Fit(kind, int((~wrong & counted).sum()), int(counted.sum()), first)


def _ambiguous_ok(
    ids: torch.Tensor, mask: torch.Tensor | None, predicted: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Positions whose context (the ids up to and including it, and their mask) is also the
    context of another row with a different next token, where the prediction is one of those
    tokens: no model can predict both, so one of them counts as right. (Rows that start with
    the same token and then differ, 1 in 50 seeds of the calibration's 2x10 random batch.)"""
    __tracebackhide__ = hide_frame
    ok = torch.zeros_like(labels, dtype=torch.bool)
    rows, length = labels.shape
    for t in range(length):
        groups: dict[tuple[int, ...], list[int]] = {}
        for b in range(rows):
            key = tuple(ids[b, : t + 1].tolist())
            if mask is not None:
                key += tuple(mask[b, : t + 1].tolist())
            groups.setdefault(key, []).append(b)
        for members in groups.values():
            targets = {int(labels[b, t]) for b in members if int(labels[b, t]) != -100}
            if len(targets) > 1:
                for b in members:
                    ok[b, t] = int(predicted[b, t]) in targets
    return ok


def _integer_labels(batch: Any) -> bool:
    """The batch's labels (``labels``, or the targets of ``(inputs, targets)``) are integers:
    the loss is a cross-entropy type, never negative."""
    __tracebackhide__ = hide_frame
    split = _split(batch)
    labels = None if split is None else split[1]
    return isinstance(labels, torch.Tensor) and not labels.is_floating_point()


def _is_causal_lm(model: nn.Module) -> bool:
    __tracebackhide__ = hide_frame
    if type(model).__name__.endswith("ForCausalLM"):
        return True
    try:
        from transformers import GenerationMixin
    except ImportError:  # pragma: no cover - transformers is a core dependency
        return False
    encoder_decoder = getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    return isinstance(model, GenerationMixin) and not encoder_decoder


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
    judge: bool = False,
    check: str = "training check",
) -> _Training:
    """Train on ``batch``; with ``stop``, check every 10 steps and stop once it holds (and, with
    ``judge``, once every prediction is right; a negative cross-entropy-type loss stops too).

    With ``judge``, a run whose loss target is met while predictions stay wrong stops once the
    verdict is certain: the target held at 6 checks in a row (50 steps) and the number of right
    predictions did not grow over them. (Healthy calibration models reach accuracy 1.0 at the
    same check as the loss target, see ``assert_overfits``; a model whose labels never reach
    the loss sits at chance accuracy however long it trains.)"""
    __tracebackhide__ = hide_frame
    progress = CheckProgress(check, steps)
    held: list[int] = []  # right predictions at each check since the loss target held

    def settled(fit: _Fit) -> bool:
        held.append(fit.correct)
        return len(held) >= 6 and held[-1] <= held[-6]

    compute = loss_fn or _default_loss
    curve: list[float] = []
    fit = None
    with _restored(model, restore), _seeded(seed):
        initial = _eval_loss(model, batch, compute)
        opt = _optimizer(model, lr, optimizer)
        final = initial
        judged = judge and _fit(model, batch) is not None
        for step in range(1, steps + 1):
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = compute(model, batch)
            _backward(check, loss)
            opt.step()
            curve.append(float(loss.detach()))
            progress.step(step, curve[-1])
            if stop is not None and (step % 10 == 0 or step == steps):
                final = _eval_loss(model, batch, compute)
                fit = _fit(model, batch) if judged else None
                if judged and final < 0:
                    break
                if not stop(initial, final):
                    held.clear()
                elif fit is None or fit.perfect or settled(fit):
                    break
        if stop is None:
            final = _eval_loss(model, batch, compute)
    _record.record("loss_curve", curve)
    return _Training(initial, curve, final, fit)


def _one_step(
    model: nn.Module,
    batch: Any,
    lr: float,
    loss_fn: LossFn | None,
    optimizer: OptimizerFactory | None,
    seed: int,
    check: str = "training check",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    """One training step; returns the parameters before it and the gradients it used."""
    __tracebackhide__ = hide_frame
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with _seeded(seed):
        opt = _optimizer(model, lr, optimizer)
        model.train()
        opt.zero_grad(set_to_none=True)
        _backward(check, (loss_fn or _default_loss)(model, batch))
        grads = {
            n: (p.grad.detach().clone() if p.grad is not None else None)
            for n, p in model.named_parameters()
        }
        opt.step()
    return before, grads


def _backward(check: str, loss: Any) -> None:
    """``loss.backward()``, or a check failure that says why there is nothing to backpropagate
    (torch's own "element 0 of tensors does not require grad" names no cause)."""
    __tracebackhide__ = hide_frame
    if not isinstance(loss, torch.Tensor):
        raise CheckFailed(
            check,
            "the loss is not a tensor",
            expected="a scalar tensor from loss_fn(model, batch)",
            actual=f"{type(loss).__name__} {loss!r:.60}",
            details="a float (loss.item(), float(loss)) has no gradient: return the tensor",
        )
    if loss.grad_fn is None and not loss.requires_grad:
        raise CheckFailed(
            check,
            "the loss has no grad_fn: it was detached or computed under no_grad",
            expected="a loss connected to the model's parameters (loss.grad_fn set)",
            actual=f"loss {float(loss.detach().float().mean()):.4g} with grad_fn=None, "
            "requires_grad=False",
            details="look for loss.detach(), loss.item() wrapped back into a tensor, "
            "torch.no_grad() / torch.inference_mode() around the forward, or every parameter "
            "frozen (requires_grad=False)",
        )
    if loss.numel() != 1:
        raise CheckFailed(
            check,
            "the loss is not a scalar",
            expected="a loss with one value (reduced: mean or sum)",
            actual=f"a tensor of shape {tuple(loss.shape)}",
            details="reduction='none' left on, or a per-row loss not averaged",
        )
    loss.backward()


def _optimizer(
    model: nn.Module, lr: float, factory: OptimizerFactory | None
) -> torch.optim.Optimizer:
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
    if isinstance(batch, Mapping):
        out = model(**batch)
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if loss is None:
            raise UsageError(
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
    raise UsageError(
        "cannot compute a loss for this batch: pass a mapping with `labels` (Hugging Face), "
        "a pair (inputs, targets), or loss_fn=lambda model, batch: ..."
    )


def _eval_loss(model: nn.Module, batch: Any, compute: LossFn) -> float:
    __tracebackhide__ = hide_frame
    model.eval()
    with torch.no_grad():
        return float(compute(model, batch))


def _why_unchanged(param: nn.Parameter, grad: torch.Tensor | None) -> str:
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
    if len(curve) <= points:
        return ", ".join(f"{v:.4g}" for v in curve)
    picks = sorted({round(i * (len(curve) - 1) / (points - 1)) for i in range(points)})
    return ", ".join(f"[{i}] {curve[i]:.4g}" for i in picks)


def _unregistered(model: nn.Module) -> list[str]:
    """Tensors and modules a module holds in plain lists, tuples or dicts (attributes that are
    not ``nn.ModuleList``/``ParameterList``/...): never registered, so never trained by an
    optimizer over ``model.parameters()``, never saved, never moved to the device."""
    __tracebackhide__ = hide_frame
    found = []
    for owner, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr.startswith("_") or not isinstance(value, list | tuple | dict):
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            held = [
                f"{type(v).__name__}"
                + (" (requires_grad)" if getattr(v, "requires_grad", 0) else "")
                for _, v in items
                if isinstance(v, nn.Module | torch.Tensor)
            ]
            if held:
                where = f"{owner}.{attr}" if owner else attr
                kinds = sorted(set(held))
                found.append(
                    f"{where}: a plain {type(value).__name__} of {len(held)} "
                    f"({', '.join(kinds)}); use nn.ModuleList / nn.ModuleDict / "
                    "nn.ParameterList / register_buffer"
                )
    return found


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    __tracebackhide__ = hide_frame
    return any(name == p or name.startswith(p + ".") for p in prefixes)
