"""Numbers: finite values, determinism, low-precision dtypes agreeing with float32."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CheckFailed
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
