"""Device placement: CPU -> device -> CPU."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import AcceleratorMissing, CheckFailed, UsageError, hide_frame
from ..text import plural
from ._common import (
    _call,
    _detached,
    _device_of,
    _forward,
    _listing,
    _move,
    _named_outputs,
    _require_close,
    _seed,
    _seeded,
)
from ._device_watch import _DeviceWatch, _on


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
    __tracebackhide__ = hide_frame
    name = "assert_device_roundtrip"
    seed = _seed(seed)
    target = _resolve_device(device)
    cpu = torch.device("cpu")
    meta_model = _device_of(model).type == "meta"
    if meta_model and target.type != "meta":
        raise UsageError(
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
    __tracebackhide__ = hide_frame
    if device is not None:
        return torch.device(device)
    from ..tiers import require_accelerator

    try:
        accel = require_accelerator()
    except AcceleratorMissing as err:
        raise AcceleratorMissing(
            f"assert_device_roundtrip(device=None) {err}; or pass device='meta' to check "
            "placement (not numbers) on a CPU-only machine"
        ) from None
    return torch.device(accel.type)


def _require_placed(
    check: str, model: nn.Module, device: torch.device, when: str, seed: int
) -> None:
    __tracebackhide__ = hide_frame
    stranded = [
        f"{n} ({kind}) on {t.device}" for n, kind, t in _all_tensors(model) if not _on(t, device)
    ]
    if stranded:
        raise CheckFailed(
            check,
            f"tensors stayed off {device} {when}",
            expected=f"every parameter and buffer on {device}",
            actual=_listing(stranded),
            difference=plural(len(stranded), "tensor"),
            seed=seed,
            details="register tensors the model needs with register_buffer (persistent=False "
            "if they should not be saved) so that .to() moves them",
        )


def _all_tensors(model: nn.Module) -> Iterator[tuple[str, str, torch.Tensor]]:
    __tracebackhide__ = hide_frame
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


def _watched_forward(
    check: str, model: nn.Module, inputs: Any, device: torch.device, seed: int
) -> Any:
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
    return CheckFailed(
        check,
        f"forward uses tensors that are not on {device}",
        expected=f"every operation in forward on {device}",
        actual=_listing(mixed) if mixed else extra,
        difference=plural(len(mixed), "operation") if mixed else None,
        seed=seed,
        details=(extra + "\n" if mixed and extra else "")
        + "a tensor created inside forward without device= lands on the CPU: pass "
        "device=x.device, or register it as a buffer",
    )
