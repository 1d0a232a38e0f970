"""Assertion helpers for the seed's critical tests (SPEC §4).

Every check runs the real model (no mocks) and works on any ``torch.nn.Module``; Hugging Face
models get conveniences: outputs by name (``output="logits"``), ``loss`` computed from
``labels`` in the batch, ``save_pretrained``/``from_pretrained``, ``id2label``.

Inputs are given the way the model takes them: a tensor (``model(x)``), a tuple or list
(``model(*inputs)``) or a mapping such as a tokenizer's output (``model(**inputs)``).

Every failure is a :class:`CheckFailed` (an ``AssertionError``) whose message says what was
expected, what happened, how big the difference is, and the seed to reproduce it. Checks that
draw random numbers take ``seed=`` (default: ``MLCHECK_SEED``, else 0) and run inside a forked
RNG state, so they neither depend on nor disturb the test's own random stream.

>>> import torch
>>> from mlcheck.checks import assert_output_shape
>>> assert_output_shape(torch.nn.Linear(4, 3), torch.zeros(2, 4), ("B", 3))
{'B': 2}
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import inspect
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from . import _record
from .constants import env_seed
from .errors import AcceleratorMissing, CheckFailed

__all__ = [
    "CheckFailed",
    "assert_batch_invariant",
    "assert_deterministic",
    "assert_device_roundtrip",
    "assert_finite",
    "assert_frozen",
    "assert_labels",
    "assert_loss_decreases",
    "assert_output_shape",
    "assert_overfits",
    "assert_params_update",
    "assert_predicts",
    "assert_save_load_roundtrip",
]

Shape = Sequence[int | str | None]
LossFn = Callable[[nn.Module, Any], torch.Tensor]
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]

# rtol, atol by dtype. "device": accelerator vs CPU (different kernels, TF32 convolutions);
# "batch": the same device with different shapes (padding changes reduction order).
_TOLERANCE: dict[str, dict[torch.dtype, tuple[float, float]]] = {
    "device": {
        torch.float64: (1e-7, 1e-7),
        torch.float32: (1e-3, 1e-3),
        torch.float16: (1e-2, 1e-2),
        torch.bfloat16: (5e-2, 5e-2),
    },
    "batch": {
        torch.float64: (1e-9, 1e-9),
        torch.float32: (1e-4, 1e-5),
        torch.float16: (5e-3, 1e-3),
        torch.bfloat16: (3e-2, 1e-2),
    },
}


# ---------------------------------------------------------------------------------------------
# Shapes


def assert_output_shape(
    model: nn.Module,
    inputs: Any,
    expected: Shape | Mapping[str, Shape],
    *,
    output: str | None = None,
    dims: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """The output has the expected shape; symbolic dims (``"B"``) must bind consistently.

    ``expected`` is one shape (checked against ``output``, default ``logits`` or the only
    output) or a dict of shapes by output name. A dim is an int, a name that must take the same
    value everywhere it appears (seed it with ``dims={"B": 4}``), or ``None`` for "any". Works
    on meta-device models (``models.empty``): inputs are moved to the model's device. Returns
    the bindings.

    >>> assert_output_shape(model, batch, {"logits": ("B", 3), "hidden_states.0": ("B", "T", 32)})
    ... # doctest: +SKIP
    """
    device = _device_of(model)
    # on meta, the watch lets data-dependent branches (`if mask.all()`) run
    values = _DeviceWatch(device) if device.type == "meta" else contextlib.nullcontext()
    with torch.no_grad(), values:
        named = _named_outputs(_call(model, _move(inputs, device)))
    wanted = (
        dict(expected) if isinstance(expected, Mapping) else {_pick(named, output)[0]: expected}
    )
    bindings: dict[str, int] = dict(dims or {})
    bound_by = {name: "dims=" for name in bindings}
    problems: list[str] = []
    for name, shape in wanted.items():
        if name not in named:
            problems.append(f"no output named {name!r} (outputs: {', '.join(named)})")
            continue
        got = tuple(named[name].shape)
        if len(got) != len(shape):
            problems.append(f"{name} has {len(got)} dims {got}, expected {len(shape)}")
            continue
        for axis, (want, size) in enumerate(zip(shape, got, strict=True)):
            if want is None:
                continue
            if isinstance(want, str):
                if want in bindings and bindings[want] != size:
                    problems.append(
                        f"{name} dim {axis} ({want}) is {size}, but {want} = {bindings[want]} "
                        f"from {bound_by[want]}"
                    )
                else:
                    bindings.setdefault(want, size)
                    bound_by.setdefault(want, f"{name} dim {axis}")
            elif want != size:
                problems.append(f"{name} dim {axis} is {size}, expected {want}")
    if problems:
        raise CheckFailed(
            "assert_output_shape",
            "output shape is not the expected one",
            expected=", ".join(f"{n}: {_fmt_shape(s)}" for n, s in wanted.items()),
            actual=", ".join(f"{n}: {tuple(named[n].shape)}" for n in wanted if n in named),
            difference="; ".join(problems),
        )
    return bindings


# ---------------------------------------------------------------------------------------------
# Devices


def assert_device_roundtrip(
    model: nn.Module,
    inputs: Any,
    device: str | torch.device | None = None,
    *,
    output: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
) -> None:
    """CPU -> ``device`` -> CPU: everything moves, forward stays on the device, numbers agree.

    Checks that every parameter and buffer moves with ``model.to(device)`` (and names plain
    tensor attributes that do not), that no operation in ``forward`` mixes in a tensor from
    another device (a tensor created without ``device=``: reported with the source line), that
    outputs land on the device and, on a real accelerator, agree with the CPU outputs within a
    dtype-aware tolerance (float32: rtol=atol=1e-3), and that the model comes back to CPU
    unchanged. The model ends on CPU.

    ``device=None`` means the accelerator (CUDA/ROCm, then XPU, then MPS); without one it raises
    :class:`~mlcheck.errors.AcceleratorMissing`. ``device="meta"`` checks placement, not
    numbers, on any machine (a copy of the model goes to meta, so weights are kept): placement
    bugs are caught on CPU-only CI. On meta, values read in ``forward`` (``.item()``, ``if
    mask.all()``) read as ``False``/``1``.

    >>> assert_device_roundtrip(model, batch, device="meta")  # doctest: +SKIP
    """
    name = "assert_device_roundtrip"
    seed = _seed(seed)
    target = _resolve_device(device)
    cpu = torch.device("cpu")
    meta_model = _device_of(model).type == "meta"
    if meta_model and target.type != "meta":
        raise ValueError(
            f"{name}: the model is on the meta device (no weights), so it cannot move to "
            f"{target}; use device='meta' or a model with weights"
        )
    reference: dict[str, torch.Tensor] = {}
    if target.type == "meta":
        moved = copy.deepcopy(model)  # .to("meta") drops the weights: keep the caller's
    else:
        moved = model.to(cpu)
        reference = _detached(_forward(model, inputs, seed))
    moved.to(target)
    _require_placed(name, moved, target, f"after model.to({str(target)!r})", seed)
    out = _watched_forward(name, moved, inputs, target, seed)
    named = _named_outputs(out)
    off = {n: str(t.device) for n, t in named.items() if not _on(t, target)}
    if off:
        raise CheckFailed(
            name,
            f"outputs are not on {target}",
            expected=f"every output on {target}",
            actual=", ".join(f"{n} on {d}" for n, d in off.items()),
            difference=f"{len(off)} of {len(named)} outputs",
            seed=seed,
            details="forward returns a tensor it created without device=; create it on the "
            "input's device",
        )
    if target.type == "meta":
        return
    _require_close(name, reference, _detached(named), output, "device", rtol, atol, seed)
    model.to(cpu)
    _require_placed(name, model, cpu, "after moving back with model.to('cpu')", seed)
    _require_close(
        name,
        reference,
        _detached(_forward(model, inputs, seed)),
        output,
        "exact",
        0,
        0,
        seed,
        what="CPU outputs before and after the round trip",
    )


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    from .tiers import require_accelerator

    try:
        accel = require_accelerator()
    except AcceleratorMissing as err:
        raise AcceleratorMissing(
            f"assert_device_roundtrip(device=None) {err}; or pass device='meta' to check "
            "placement (not numbers) on a CPU-only machine"
        ) from None
    return torch.device(accel.type)


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    return _same_device(tensor.device, device)


def _same_device(actual: torch.device, wanted: torch.device) -> bool:
    """``cuda:0`` is on ``cuda``; ``cuda:1`` is not on ``cuda:0``."""
    return actual.type == wanted.type and (wanted.index is None or actual.index == wanted.index)


def _require_placed(
    check: str, model: nn.Module, device: torch.device, when: str, seed: int
) -> None:
    stranded = [
        f"{n} ({kind}) on {t.device}" for n, kind, t in _all_tensors(model) if not _on(t, device)
    ]
    if stranded:
        raise CheckFailed(
            check,
            f"tensors stayed off {device} {when}",
            expected=f"every parameter and buffer on {device}",
            actual=_listing(stranded),
            difference=f"{len(stranded)} tensors",
            seed=seed,
            details="register tensors the model needs with register_buffer (persistent=False "
            "if they should not be saved) so that .to() moves them",
        )


def _all_tensors(model: nn.Module) -> Iterator[tuple[str, str, torch.Tensor]]:
    for name, param in model.named_parameters():
        yield name, "parameter", param
    for name, buffer in model.named_buffers():
        yield name, "buffer", buffer
    for module_name, module in model.named_modules():
        # parameters and buffers live in _parameters/_buffers; a tensor in __dict__ is a plain
        # attribute, which .to() does not move
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                full = f"{module_name}.{attr}" if module_name else attr
                yield full, "plain tensor attribute, not a registered buffer", value


_aten = torch.ops.aten
# explicit transfers are how code gets a tensor onto the right device, not a bug
_TRANSFERS = {_aten._to_copy.default, _aten.copy_.default, _aten._copy_from.default}


class _DeviceWatch(TorchDispatchMode):
    """Records operations that mix tensors from another device into work on ``device``, with
    the line that created the stray tensor."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.mixed: list[str] = []
        self.origins = WeakTensorKeyDictionary()  # stray tensor -> where forward created it

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _TRANSFERS:
            return func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        stray = [t for t in tensors if not _on(t, self.device)]
        # 0-dim CPU tensors are scalars that torch accepts on every device
        mixing = [t for t in stray if t.dim() > 0]
        if mixing and len(stray) < len(tensors) and len(self.mixed) < 5:
            origin = self.origins.get(mixing[0])
            self.mixed.append(
                f"{func} mixes {mixing[0].device} with {self.device} at {_user_frame()}"
                + (f"; the {mixing[0].device} tensor was created at {origin}" if origin else "")
            )
        if func is _aten._local_scalar_dense.default and tensors and tensors[0].is_meta:
            # meta tensors have no values: take one branch of data-dependent code
            return False if tensors[0].dtype == torch.bool else 1
        out = func(*args, **kwargs)
        if len(stray) == len(tensors):  # computed off the device: remember where it came from
            made = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            for tensor in made:
                if not _on(tensor, self.device) and tensor not in self.origins:
                    known = [self.origins[t] for t in stray if t in self.origins]
                    self.origins[tensor] = known[0] if known else _user_frame()
        return out


def _user_frame() -> str:
    """The innermost stack frame outside torch and this module: the user's line."""
    skip = (os.sep + "torch" + os.sep, __file__, os.sep + "contextlib.py")
    for frame in reversed(traceback.extract_stack()):
        if not any(part in frame.filename for part in skip):
            return f"{os.path.relpath(frame.filename)}:{frame.lineno} ({frame.line})"
    return "unknown location"


def _watched_forward(
    check: str, model: nn.Module, inputs: Any, device: torch.device, seed: int
) -> Any:
    watch = _DeviceWatch(device)
    try:
        with _seeded(seed), torch.no_grad(), watch:
            out = _call(model, _move(inputs, device))
    except Exception as err:
        if not watch.mixed and "device" not in str(err):
            err.add_note(f"{check}: raised while running forward on {device}")
            raise
        raise _mixed_failure(check, watch.mixed, device, seed, f"forward raised: {err}") from err
    if watch.mixed:
        raise _mixed_failure(check, watch.mixed, device, seed, "")
    return out


def _mixed_failure(
    check: str, mixed: list[str], device: torch.device, seed: int, extra: str
) -> CheckFailed:
    return CheckFailed(
        check,
        f"forward uses tensors that are not on {device}",
        expected=f"every operation in forward on {device}",
        actual=_listing(mixed) if mixed else extra,
        difference=f"{len(mixed)} operations" if mixed else None,
        seed=seed,
        details=(extra + "\n" if mixed and extra else "")
        + "a tensor created inside forward without device= lands on the CPU: pass "
        "device=x.device, or register it as a buffer",
    )


# ---------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class _Training:
    initial: float  # eval-mode loss on the batch before the first step
    curve: list[float]  # training-mode loss at each step
    final: float  # eval-mode loss after the last step


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


# ---------------------------------------------------------------------------------------------
# Labels and predictions


def assert_labels(
    model: Any, expected: Mapping[int, str] | Sequence[str], *, num_labels: int | None = None
) -> None:
    """``id2label`` means what the test says, e.g. ``{2: "entailment"}``.

    ``model`` is a Hugging Face model, its config, or an ``id2label`` dict. A dict checks the
    given indices; a list (``["contradiction", "neutral", "entailment"]``) checks every index
    and the number of labels, as does ``num_labels=``. Also checks that ``label2id`` agrees
    with ``id2label`` and that the classifier head has one output per label.

    >>> from transformers import BertConfig
    >>> assert_labels(BertConfig(id2label={0: "neg", 1: "pos"}), {1: "pos"})
    """
    config = getattr(model, "config", model)
    raw = config if isinstance(config, Mapping) else getattr(config, "id2label", None)
    if raw is None:
        raise ValueError("assert_labels needs a Hugging Face model or config, or an id2label dict")
    id2label = {int(k): v for k, v in raw.items()}
    if isinstance(expected, Mapping):
        want = {int(k): v for k, v in expected.items()}
    else:
        want = dict(enumerate(expected))
        num_labels = len(want) if num_labels is None else num_labels
    problems: list[str] = []
    for index, label in sorted(want.items()):
        got = id2label.get(index)
        if got != label:
            where = [i for i, name in id2label.items() if name == label]
            problems.append(
                f"id2label[{index}] is {got!r}, expected {label!r}"
                + (f" (the model has {label!r} at index {where[0]})" if where else "")
            )
    if num_labels is not None and len(id2label) != num_labels:
        problems.append(f"the model has {len(id2label)} labels, expected {num_labels}")
    label2id = getattr(config, "label2id", None) or {}
    for index, label in id2label.items():
        if label in label2id and int(label2id[label]) != index:
            problems.append(
                f"label2id[{label!r}] is {label2id[label]} but id2label[{index}] = {label!r}"
            )
    head = _head_outputs(model)
    if head is not None and head[1] != len(id2label):
        problems.append(
            f"the head {head[0]} has {head[1]} outputs but id2label has {len(id2label)}"
        )
    if problems:
        hint = ""
        if all(str(v).startswith("LABEL_") for v in id2label.values()):
            hint = "the labels are the default LABEL_i names: was the config saved without them?"
        raise CheckFailed(
            "assert_labels",
            "class indices do not mean what the test expects",
            expected=_fmt_labels(want) + (f" ({num_labels} labels)" if num_labels else ""),
            actual=_fmt_labels(id2label) + f" ({len(id2label)} labels)",
            difference="; ".join(problems),
            details=hint,
        )


def _head_outputs(model: Any) -> tuple[str, int] | None:
    """The classification head's (name, out_features), found by Hugging Face naming."""
    if not isinstance(model, nn.Module):
        return None
    heads = ("classifier", "score", "classification_head.out_proj", "classifier.out_proj")
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (name in heads or name.endswith(heads)):
            found = (name, module.out_features)
    return found


def assert_predicts(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Mapping[str, Any]],
    *,
    max_length: int | None = None,
) -> list[tuple[str, float]]:
    """Canary inputs get the expected label and/or a score bound on a sequence classifier.

    Each example is ``{"text": ..., "text_pair": ... (optional), "label": expected label name
    or index, "min_score": ..., "max_score": ..., "score_of": label whose probability the bounds
    apply to (default: ``label``, else the predicted one)}``. Scores are softmax probabilities
    (sigmoid for ``problem_type="multi_label_classification"``). Runs in eval mode in one batch.
    Returns (predicted label, its score) per example.

    >>> assert_predicts(model, tokenizer, [{"text": "I will hurt you", "label": "unsafe",
    ...                                      "min_score": 0.99}])  # doctest: +SKIP
    """
    config = getattr(model, "config", None)
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    texts = [e["text"] for e in examples]
    pairs = [e["text_pair"] for e in examples] if all("text_pair" in e for e in examples) else None
    enc = tokenizer(
        texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, logits = _pick(_named_outputs(model(**_move(dict(enc), _device_of(model)))), None)
    finally:
        model.train(was_training)
    multi = getattr(config, "problem_type", None) == "multi_label_classification"
    probs = (logits.float().sigmoid() if multi else logits.float().softmax(-1)).cpu()
    results: list[tuple[str, float]] = []
    problems: list[str] = []
    for i, example in enumerate(examples):
        row = probs[i]
        top = int(row.argmax())
        results.append((id2label.get(top, str(top)), float(row[top])))
        got = f"{id2label.get(top, top)!r} ({row[top]:.3g})"
        wrong = []
        if "label" in example:
            want = _label_index(example["label"], id2label)
            if want != top:
                wrong.append(f"expected label {example['label']!r} ({row[want]:.3g})")
        score_of = example.get("score_of", example.get("label"))
        index = top if score_of is None else _label_index(score_of, id2label)
        score = float(row[index])
        name = id2label.get(index, index)
        if "min_score" in example and not score >= example["min_score"]:
            wrong.append(f"expected score of {name!r} >= {example['min_score']:g}, got {score:.3g}")
        if "max_score" in example and not score <= example["max_score"]:
            wrong.append(f"expected score of {name!r} <= {example['max_score']:g}, got {score:.3g}")
        if wrong:
            problems.append(f"[{i}] {_short(example['text'])}: {'; '.join(wrong)}; predicted {got}")
    if problems:
        raise CheckFailed(
            "assert_predicts",
            "canary inputs did not get the expected predictions",
            expected="every canary's label / score bound",
            actual=_listing(problems, limit=20),
            difference=f"{len(problems)} of {len(examples)} canaries wrong",
            details=f"labels: {_fmt_labels(id2label)}",
        )
    return results


def _label_index(label: int | str, id2label: Mapping[int, str]) -> int:
    if isinstance(label, int):
        return label
    for index, name in id2label.items():
        if name == label:
            return index
    raise CheckFailed(
        "assert_predicts",
        f"label {label!r} is not one of the model's labels",
        expected=repr(label),
        actual=_fmt_labels(id2label),
    )


# ---------------------------------------------------------------------------------------------
# Saving, batching, numbers


def assert_save_load_roundtrip(
    model: nn.Module,
    inputs: Any,
    tmp_path: str | os.PathLike[str],
    *,
    factory: Callable[[], nn.Module] | None = None,
    output: str | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int | None = None,
) -> None:
    """Saving and loading gives a model with the same outputs (eval mode).

    Hugging Face models go through ``save_pretrained``/``from_pretrained``; other modules
    through ``state_dict`` into a fresh instance from ``factory()`` (default: the class called
    with no arguments). The fresh instance is built under ``seed + 1``, so anything the saved
    state does not hold (a head kept as a plain tensor attribute, a non-persistent buffer
    filled randomly, a parameter left out of the checkpoint) comes back different and fails
    the check, with the missing keys named.

    >>> assert_save_load_roundtrip(model, batch, tmp_path)  # doctest: +SKIP
    """
    name = "assert_save_load_roundtrip"
    seed = _seed(seed)
    folder = Path(tmp_path) / "mlcheck-roundtrip"
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        reference = _detached(_forward(model, inputs, seed))
        missing: list[str] = []
        unexpected: list[str] = []
        with _seeded(seed + 1):
            if factory is None and hasattr(model, "save_pretrained"):
                model.save_pretrained(folder)  # type: ignore[operator]
                loaded, info = type(model).from_pretrained(  # type: ignore[attr-defined]
                    folder, output_loading_info=True
                )
                missing, unexpected = list(info["missing_keys"]), list(info["unexpected_keys"])
            else:
                folder.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), folder / "state_dict.pt")
                loaded = (factory or _default_factory(model))()
                result = loaded.load_state_dict(
                    torch.load(folder / "state_dict.pt", weights_only=True), strict=False
                )
                missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        loaded.to(device).eval()
        after = _detached(_forward(loaded, inputs, seed))
    finally:
        model.train(was_training)
    keys = "".join(
        f"\n{label}: {_listing(sorted(found))}"
        for label, found in (("missing keys", missing), ("unexpected keys", unexpected))
        if found
    )
    try:
        _require_close(
            name,
            reference,
            after,
            output,
            "exact",
            rtol,
            atol,
            seed,
            what="the model before saving and after loading",
        )
    except CheckFailed as failed:
        raise CheckFailed(
            name,
            failed.problem,
            expected=failed.expected,
            actual=failed.actual,
            difference=failed.difference,
            seed=seed,
            details=keys.strip()
            + "\nsomething the model needs is not in what it saves: register tensors as "
            "parameters or persistent buffers",
        ) from None
    if missing:
        raise CheckFailed(
            name,
            "the checkpoint lacks some of the model's weights",
            expected="every weight saved and loaded",
            actual=keys.strip(),
            seed=seed,
        )


def _default_factory(model: nn.Module) -> Callable[[], nn.Module]:
    cls = type(model)
    required = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise TypeError(
            f"assert_save_load_roundtrip: {cls.__name__}() needs arguments "
            f"({', '.join(p.name for p in required)}): pass factory=lambda: {cls.__name__}(...)"
        )
    return cls


def assert_batch_invariant(
    model: nn.Module,
    inputs: Any,
    *,
    output: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
) -> None:
    """Each row's output in the batch equals its output when run alone (eval mode).

    With an ``attention_mask`` in the inputs, each row is run alone without its padding (the
    positions where the mask is 0, left or right), and per-token outputs are compared on the
    real tokens only: a model that ignores the mask, or normalises across the batch, fails.
    Tolerance is dtype-aware (float32: rtol=1e-4, atol=1e-5).

    >>> enc = tokenizer(["a long sentence", "short"], padding=True, return_tensors="pt")
    ... # doctest: +SKIP
    >>> assert_batch_invariant(model, dict(enc))  # doctest: +SKIP
    """
    name = "assert_batch_invariant"
    seed = _seed(seed)
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    first = next(t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor))
    rows = first.shape[0]
    length = mask.shape[1] if mask is not None else None
    was_training = model.training
    model.eval()
    problems: list[str] = []
    worst = 0.0
    try:
        out_name, batched = _pick(_named_outputs(_forward(model, inputs, seed)), output)
        for i in range(rows):
            keep = mask[i].bool() if mask is not None else None
            row_inputs = _row(inputs, i, keep, rows, length)
            single = _named_outputs(_forward(model, row_inputs, seed))[out_name][0]
            row = batched[i]
            if keep is not None and row.dim() >= 1 and row.shape[0] == length:
                row = row[keep.to(row.device)]
            if row.shape != single.shape:
                problems.append(f"row {i}: shape {tuple(row.shape)} vs {tuple(single.shape)} alone")
                continue
            r, a = _tol(row.dtype, "batch", rtol, atol)
            if not torch.allclose(row.double(), single.double(), rtol=r, atol=a):
                worst = max(worst, (row.double() - single.double()).abs().max().item())
                real = f", {int(keep.sum())} real tokens of {length}" if keep is not None else ""
                problems.append(f"row {i}{real}: {_diff(row, single, r, a)}")
    finally:
        model.train(was_training)
    if problems:
        raise CheckFailed(
            name,
            f"{out_name!r} of a row changes when it is batched with others",
            expected="each row's output in the batch == its output alone",
            actual=_listing(problems),
            difference=f"{len(problems)} of {rows} rows differ, max |Δ| = {worst:.3g}",
            seed=seed,
            details="padded rows that differ usually mean the attention mask is ignored"
            if mask is not None
            else "rows that differ mean forward mixes rows (batch statistics, reshapes)",
        )


def _row(value: Any, i: int, keep: torch.Tensor | None, rows: int, length: int | None) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] != rows:
            return value
        one = value[i : i + 1]
        if keep is not None and one.dim() >= 2 and one.shape[1] == length:
            one = one[:, keep.to(one.device)]
        return one
    if isinstance(value, Mapping):
        return {k: _row(v, i, keep, rows, length) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_row(v, i, keep, rows, length) for v in value)
    return value


def assert_finite(
    model_or_tensor: Any,
    inputs: Any = None,
    *,
    grads: bool = True,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
) -> None:
    """No NaN or Inf in the weights, the outputs and (``grads=True``) the gradients.

    Given a tensor (or a dict/tuple of them), checks its values. Given a model and ``inputs``,
    checks the weights, runs forward in the model's current mode and, unless ``grads=False``,
    backward from ``loss_fn(model, inputs)`` (default: the Hugging Face ``loss`` when the
    inputs hold ``labels``, else the mean of the main output); existing ``.grad`` are kept.

    >>> assert_finite(torch.tensor([1.0, 2.0]))
    """
    name = "assert_finite"
    if not isinstance(model_or_tensor, nn.Module):
        _require_finite(name, _named_outputs(model_or_tensor), "value", None)
        return
    model = model_or_tensor
    seed = _seed(seed)
    _require_finite(name, dict(model.named_parameters()), "weight", seed)
    _require_finite(name, dict(model.named_buffers()), "buffer", seed)
    if inputs is None:
        return
    _require_finite(name, _named_outputs(inputs), "input (not the model's fault)", seed)
    saved = {n: p.grad for n, p in model.named_parameters()}
    try:
        with _seeded(seed):
            for param in model.parameters():
                param.grad = None
            out = _call(model, inputs)
            named = _named_outputs(out)
            _require_finite(name, {n: t.detach() for n, t in named.items()}, "output", seed)
            if not grads:
                return
            if loss_fn is not None:
                loss = loss_fn(model, inputs)
            elif "loss" in named:
                loss = named["loss"]
            else:
                loss = _pick(named, None)[1].float().mean()
            loss.backward()
            _require_finite(
                name,
                {f"{n}.grad": p.grad for n, p in model.named_parameters() if p.grad is not None},
                "gradient",
                seed,
            )
    finally:
        for n, p in model.named_parameters():
            p.grad = saved[n]


def _require_finite(
    check: str, tensors: Mapping[str, torch.Tensor], kind: str, seed: int | None
) -> None:
    bad = []
    for key, tensor in tensors.items():
        if tensor.is_meta or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        finite = torch.isfinite(tensor)
        if not finite.all():
            nan = int(torch.isnan(tensor).sum())
            inf = int(torch.isinf(tensor).sum())
            where = tuple(int(x) for x in (~finite).nonzero()[0].tolist())
            bad.append(f"{key}: {nan} NaN, {inf} Inf of {tensor.numel()} values (first at {where})")
    if bad:
        raise CheckFailed(
            check,
            f"non-finite values in the {kind}s" if "(" not in kind else f"non-finite {kind}",
            expected="all values finite",
            actual=_listing(bad),
            difference=f"{len(bad)} of {len(tensors)} tensors",
            seed=seed,
        )


def assert_deterministic(
    model: nn.Module,
    inputs: Any,
    *,
    output: str | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
    seed: int | None = None,
) -> None:
    """Two calls on the same inputs give identical outputs, with the model as given.

    The check does not call ``model.eval()``: pass the model the way your inference code
    leaves it, and dropout left on (``model.train()``) fails, with the active dropout modules
    named. The random stream continues between the two calls (it is not reseeded), so random
    operations in ``forward`` show up.

    >>> assert_deterministic(load_for_inference(), batch)  # doctest: +SKIP
    """
    seed = _seed(seed)
    with _seeded(seed), torch.no_grad():
        first = _detached(_named_outputs(_call(model, inputs)))
        second = _detached(_named_outputs(_call(model, inputs)))
    try:
        _require_close(
            "assert_deterministic",
            first,
            second,
            output,
            "exact",
            rtol,
            atol,
            seed,
            what="two identical calls",
        )
    except CheckFailed as failed:
        raise CheckFailed(
            failed.check,
            failed.problem,
            expected=failed.expected,
            actual=failed.actual,
            difference=failed.difference,
            seed=seed,
            details=_nondeterminism_hint(model),
        ) from None


def _nondeterminism_hint(model: nn.Module) -> str:
    dropouts = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
    ]
    training = [n or "<root>" for n, m in model.named_modules() if m.training]
    if model.training:
        return (
            f"the model is in training mode (model.training is True) with {len(dropouts)} "
            f"active dropout modules ({_inline(dropouts)}): call model.eval() "
            "before inference"
        )
    if training:
        return f"submodules left in training mode: {_inline(training)}"
    return (
        "the model is in eval mode, so forward itself is random (functional dropout with "
        "training=True, torch.rand) or uses nondeterministic kernels "
        "(try torch.use_deterministic_algorithms(True))"
    )


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _seed(seed: int | None) -> int:
    return env_seed() if seed is None else seed


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run under ``seed`` without disturbing the caller's random stream."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _restored(model: nn.Module, restore: bool) -> Iterator[None]:
    """Put weights, gradients and train/eval mode back afterwards (when ``restore``)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()} if restore else None
    modes = {n: m.training for n, m in model.named_modules()}
    try:
        yield
    finally:
        if state is not None:
            model.load_state_dict(state)
            for param in model.parameters():
                param.grad = None
        for n, m in model.named_modules():
            m.training = modes.get(n, m.training)


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def _forward(model: nn.Module, inputs: Any, seed: int) -> dict[str, torch.Tensor]:
    with _seeded(seed), torch.no_grad():
        return _named_outputs(_call(model, _move(inputs, _device_of(model))))


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_move(v, device) for v in value)
    return value


def _device_of(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _named_outputs(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors in a (nested) output by name: ``logits``, ``hidden_states.0``, ``0`` ..."""
    if isinstance(value, torch.Tensor):
        return {prefix or "output": value}
    found: dict[str, torch.Tensor] = {}
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, tuple | list):
        items = enumerate(value)
    else:
        return found  # caches and other objects hold no comparable output
    for key, item in items:
        found.update(_named_outputs(item, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _pick(named: Mapping[str, torch.Tensor], output: str | None) -> tuple[str, torch.Tensor]:
    """The output a check looks at: ``output``, else ``logits``, else the first one."""
    if output is not None:
        if output not in named:
            raise ValueError(f"no output named {output!r}; outputs are: {', '.join(named)}")
        return output, named[output]
    if not named:
        raise ValueError("the model returned no tensor")
    key = "logits" if "logits" in named else next(iter(named))
    return key, named[key]


def _detached(named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in named.items()}


def _tol(
    dtype: torch.dtype, kind: str, rtol: float | None, atol: float | None
) -> tuple[float, float]:
    if kind == "exact":
        return rtol or 0.0, atol or 0.0
    default = _TOLERANCE[kind].get(dtype, (0.0, 0.0))
    return (default[0] if rtol is None else rtol, default[1] if atol is None else atol)


def _require_close(
    check: str,
    expected: Mapping[str, torch.Tensor],
    actual: Mapping[str, torch.Tensor],
    output: str | None,
    kind: str,
    rtol: float | None,
    atol: float | None,
    seed: int,
    what: str = "the CPU and the accelerator",
) -> None:
    names = [output] if output is not None else [n for n in expected if n in actual]
    problems = []
    for key in names:
        a, b = expected[key], actual[key]
        if a.shape != b.shape:
            problems.append(f"{key}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
            continue
        if not a.is_floating_point():
            if not torch.equal(a.cpu(), b.cpu()):
                problems.append(f"{key}: {int((a.cpu() != b.cpu()).sum())} values differ")
            continue
        r, t = _tol(a.dtype, kind, rtol, atol)
        if not torch.allclose(a.cpu().double(), b.cpu().double(), rtol=r, atol=t, equal_nan=True):
            problems.append(f"{key} ({a.dtype}): {_diff(a, b, r, t)}")
    if problems:
        raise CheckFailed(
            check,
            f"outputs differ between {what}",
            expected="equal outputs" + ("" if kind == "exact" else " within tolerance"),
            actual=_listing(problems),
            difference=f"{len(problems)} of {len(names)} outputs differ",
            seed=seed,
        )


def _diff(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> str:
    x, y = a.detach().cpu().double(), b.detach().cpu().double()
    delta = (x - y).abs().nan_to_num(nan=float("inf"))
    flat = int(delta.argmax())
    at = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), x.shape))
    outside = int((~torch.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)).sum())
    return (
        f"max |Δ| = {delta.max().item():.3g} at {at} ({x.flatten()[flat].item():.6g} vs "
        f"{y.flatten()[flat].item():.6g}); {outside} of {x.numel()} values outside "
        f"rtol={rtol:g}, atol={atol:g}"
    )


def _listing(items: Sequence[str], limit: int = 10) -> str:
    """One item inline; several as an indented list under the message line."""
    shown = [
        *items[:limit],
        *([f"... and {len(items) - limit} more"] if len(items) > limit else []),
    ]
    if len(shown) == 1:
        return shown[0]
    return "".join(f"\n    - {item}" for item in shown)


def _inline(items: Sequence[str], limit: int = 5) -> str:
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _fmt_shape(shape: Shape) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"


def _fmt_labels(labels: Mapping[int, str]) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in sorted(labels.items())) + "}"


def _short(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")
