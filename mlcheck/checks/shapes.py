"""Output shapes with symbolic dims."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ..errors import CheckFailed, hide_frame
from ._common import _call, _device_of, _fmt_shape, _move, _named_outputs, _pick, _restored
from ._device_watch import _DeviceWatch
from .types import Shape


def assert_output_shape(
    model: nn.Module,
    inputs: Any,
    expected: Shape | Mapping[str, Shape],
    *,
    output: str | None = None,
    dims: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """The output has the expected shape; symbolic dims (``"B"``) must bind consistently.

    It also runs a batch of one (the first row of every input tensor with the batch's size as
    its first dim) and checks the same symbolic shape with the batch dim at 1: a ``.squeeze()``
    that drops the batch dimension when B = 1 fails here, as it would in serving.

    ``expected`` is one shape (checked against ``output``, default ``logits`` or the only
    output) or a dict of shapes by output name. A dim is an int, a name that must take the same
    value everywhere it appears (seed it with ``dims={"B": 4}``), or ``None`` for "any". Works
    on meta-device models (``models.empty``): inputs are moved to the model's device. Returns
    the bindings.

    >>> assert_output_shape(model, batch, {"logits": ("B", 3), "hidden_states.0": ("B", "T", 32)})
    ... # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
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
    if not problems and device.type != "meta":
        problems += _batch_of_one(model, inputs, device, wanted, named)
    if problems:
        raise CheckFailed(
            "assert_output_shape",
            "output shape is not the expected one",
            expected=", ".join(f"{n}: {_fmt_shape(s)}" for n, s in wanted.items()),
            actual=", ".join(f"{n}: {tuple(named[n].shape)}" for n in wanted if n in named),
            difference="; ".join(problems),
        )
    return bindings


def _batch_of_one(
    model: nn.Module,
    inputs: Any,
    device: torch.device,
    wanted: Mapping[str, Shape],
    named: Mapping[str, torch.Tensor],
) -> list[str]:
    """Problems of the same outputs for the first row alone: every output dim that equals the
    batch size in the full run must be 1, and the number of dims must not change."""
    __tracebackhide__ = hide_frame
    tensors = [t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor) and t.dim()]
    if not tensors:
        return []
    rows = tensors[0].shape[0]
    if rows <= 1:
        return []

    def first(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value[:1] if value.dim() and value.shape[0] == rows else value
        if isinstance(value, Mapping):
            return {k: first(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return type(value)(first(v) for v in value)
        return value

    with torch.no_grad(), _restored(model, restore=False):
        model.eval()  # BatchNorm in training mode refuses a batch of one
        alone = _named_outputs(_call(model, _move(first(inputs), device)))
    problems = []
    for name, shape in wanted.items():
        if name not in named:
            continue
        full = tuple(named[name].shape)
        batch = shape[0] if len(shape) and isinstance(shape[0], str) and full[0] == rows else None
        if batch is None:
            continue  # no batch dim declared at axis 0: nothing to compare at B = 1
        got = tuple(alone[name].shape) if name in alone else None
        want = tuple(1 if dim == batch else size for dim, size in zip(shape, full, strict=True))
        fits = (
            got is not None
            and len(got) == len(want)
            and all(dim is None or g == w for dim, g, w in zip(shape, got, want, strict=True))
        )
        if not fits:
            problems.append(
                f"with a batch of one (the first row) {name} is {got}, expected {want} "
                f"({_fmt_shape(shape)} with {batch} = 1): a .squeeze() that drops the batch "
                "dimension at B = 1? squeeze only the dim meant (x.squeeze(-1))"
            )
    return problems
