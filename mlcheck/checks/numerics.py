"""Numbers: finite values, determinism, low-precision dtypes agreeing with float32."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CheckFailed, hide_frame
from ._common import (
    _call,
    _detached,
    _inline,
    _listing,
    _named_outputs,
    _pick,
    _require_close,
    _seed,
    _seeded,
)
from .types import LossFn


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
    __tracebackhide__ = hide_frame
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
            try:
                _require_finite(name, {n: t.detach() for n, t in named.items()}, "output", seed)
            except CheckFailed as failed:
                where = _first_module(
                    model, inputs, seed, lambda _, t: not bool(t.isfinite().all())
                )
                if where is None:
                    raise
                raise failed.explained(
                    f"first module producing a non-finite value: {where}", check=name
                ) from None
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
    """Raise naming every tensor with NaN or Inf (first index, counts)."""
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
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
        raise failed.explained(_nondeterminism_hint(model)) from None


def _nondeterminism_hint(model: nn.Module) -> str:
    __tracebackhide__ = hide_frame
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


def _module_outputs(model: nn.Module, inputs: Any, seed: int) -> list[tuple[str, torch.Tensor]]:
    """(module name, its first floating output) in the order forward finished them."""
    __tracebackhide__ = hide_frame
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = []
    for module_name, module in model.named_modules():

        def hook(_: nn.Module, __: Any, out: Any, module_name: str = module_name) -> None:
            __tracebackhide__ = hide_frame
            tensors = [t for t in _named_outputs(out).values() if t.is_floating_point()]
            if tensors:
                seen.append((module_name or type(model).__name__, tensors[0].detach()))

        hooks.append(module.register_forward_hook(hook))
    try:
        with _seeded(seed), torch.no_grad():
            _call(model, inputs)
    finally:
        for handle in hooks:
            handle.remove()
    return seen


def _first_module(model: nn.Module, inputs: Any, seed: int, bad: Any) -> str | None:
    """The first module (in execution order) whose output satisfies ``bad(name, tensor)``."""
    __tracebackhide__ = hide_frame
    for module_name, tensor in _module_outputs(model, inputs, seed):
        if bad(module_name, tensor):
            return (
                f"{module_name} ({type(model.get_submodule(module_name)).__name__})"
                if module_name != type(model).__name__
                else module_name
            )
    return None


# relative error (||low - float32|| / ||float32||) a healthy model stays under, by dtype
_DTYPE_RTOL = {torch.float16: 0.02, torch.bfloat16: 0.05}


def assert_dtype_agrees(
    model: nn.Module,
    inputs: Any,
    *,
    dtype: torch.dtype = torch.bfloat16,
    output: str | None = None,
    rtol: float | None = None,
    seed: int | None = None,
) -> None:
    """A copy of the model in ``dtype`` agrees with float32; names the first module that diverges.

    Runs the model (eval mode) in float32 and a deep copy cast to ``dtype`` (float inputs cast
    too) with forward hooks on every module, and compares the main output by relative error
    ``||low - fp32|| / ||fp32||``: at most 0.02 for float16 and 0.05 for bfloat16 by default. On
    a failure the message names the first module, in execution order, whose output is
    non-finite or beyond the tolerance, with its error: an RMSNorm computing ``x**2`` in float16
    without a float32 upcast overflows to Inf, ``rsqrt`` gives 0, and the outputs are finite
    zeros that :func:`assert_finite` lets through; this check names the norm. Works on CPU for
    float16 and bfloat16.

    Statistical design: deterministic given the model and inputs. The tolerances were measured on
    tiny random BERT, GPT-2 and Llama models (2 layers, 32 wide) and an RMSNorm MLP fed
    activations of a few hundred, 5 seeds each (the cases of ``tests/checks/``): the
    largest errors were 0.002 (float16) and 0.0094 (bfloat16), so the defaults sit 10x and 5x
    above what healthy models showed, aiming at no false failure on models of that kind (deeper
    models accumulate more rounding: raise ``rtol`` for them); the float16 RMSNorm bug gives an
    error of 1.0 (all zeros).

    >>> assert_dtype_agrees(model, batch, dtype=torch.float16)  # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    name = "assert_dtype_agrees"
    seed = _seed(seed)
    tolerance = _DTYPE_RTOL.get(dtype, 0.1) if rtol is None else rtol
    low = copy.deepcopy(model).to(dtype).eval()
    low_inputs = _cast(inputs, dtype)
    was_training = model.training
    model.eval()
    try:
        ref_modules = dict(_module_outputs(model, inputs, seed))
        low_modules = _module_outputs(low, low_inputs, seed)
        with _seeded(seed), torch.no_grad():
            out_name, ref = _pick(_named_outputs(_call(model, inputs)), output)
            got = _named_outputs(_call(low, low_inputs))[out_name]
    finally:
        model.train(was_training)
    error = _relative_error(got, ref)
    if error <= tolerance:
        return
    first = None
    for module_name, tensor in low_modules:
        expected = ref_modules.get(module_name)
        if expected is None or expected.shape != tensor.shape:
            continue
        module_error = _relative_error(tensor, expected)
        if module_error > tolerance:
            kind = type(low.get_submodule(module_name)).__name__ if module_name in dict(
                low.named_modules()) else type(low).__name__  # fmt: skip
            finite = bool(tensor.isfinite().all())
            first = (
                f"{module_name} ({kind}): relative error {module_error:.3g}"
                + ("" if finite else ", non-finite values")
                + (", all zeros" if finite and not tensor.any() else "")
            )
            break
    raise CheckFailed(
        name,
        f"the model in {dtype} does not agree with float32",
        expected=f"||{out_name} in {dtype} - float32|| / ||float32|| <= {tolerance:g}",
        actual=f"relative error {error:.3g}"
        + (" (non-finite values)" if not bool(got.isfinite().all()) else ""),
        difference=f"{error / tolerance:.3g}x the tolerance; first diverging module: "
        f"{first or 'none found by hooks'}",
        seed=seed,
        details="a module computing in low precision what needs float32: norms (x**2 overflows "
        "float16 above 256: upcast with x.float()), softmax, exp, large reductions",
    )


def _relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    __tracebackhide__ = hide_frame
    a, b = got.double(), ref.double()
    if not bool(a.isfinite().all()):
        return float("inf")
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _cast(value: Any, dtype: torch.dtype) -> Any:
    __tracebackhide__ = hide_frame
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, Mapping):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_cast(v, dtype) for v in value)
    return value
