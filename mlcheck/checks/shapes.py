"""Output shapes with symbolic dims."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CheckFailed, hide_frame
from ._common import _call, _device_of, _fmt_shape, _move, _named_outputs, _pick
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
    if problems:
        raise CheckFailed(
            "assert_output_shape",
            "output shape is not the expected one",
            expected=", ".join(f"{n}: {_fmt_shape(s)}" for n, s in wanted.items()),
            actual=", ".join(f"{n}: {tuple(named[n].shape)}" for n in wanted if n in named),
            difference="; ".join(problems),
        )
    return bindings
