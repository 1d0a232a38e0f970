"""Helpers every check shares: seeding, calling a model, naming outputs, comparing them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..constants import env_seed
from ..errors import CheckFailed, NothingToCheck, UnknownName, hide_frame
from ..errors import listing as _listing
from .types import Shape

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


def _seed(seed: int | None) -> int:
    __tracebackhide__ = hide_frame
    return env_seed() if seed is None else seed


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run under ``seed`` without disturbing the caller's random stream."""
    __tracebackhide__ = hide_frame
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _restored(model: nn.Module, restore: bool) -> Iterator[None]:
    """Put weights, gradients and train/eval mode back afterwards (when ``restore``)."""
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def _split(batch: Any) -> tuple[Any, Any] | None:
    """``(inputs, labels)`` of a batch: a mapping is its own inputs with ``labels`` in it (None
    when absent); a pair is ``(inputs, targets)``; anything else has no labels to find."""
    __tracebackhide__ = hide_frame
    if isinstance(batch, Mapping):
        return batch, batch.get("labels")
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    return None


def _forward(model: nn.Module, inputs: Any, seed: int) -> dict[str, torch.Tensor]:
    __tracebackhide__ = hide_frame
    with _seeded(seed), torch.no_grad():
        return _named_outputs(_call(model, _move(inputs, _device_of(model))))


def _move(value: Any, device: torch.device) -> Any:
    __tracebackhide__ = hide_frame
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_move(v, device) for v in value)
    return value


def _device_of(model: nn.Module) -> torch.device:
    __tracebackhide__ = hide_frame
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _named_outputs(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors in a (nested) output by name: ``logits``, ``hidden_states.0``, ``0`` ..."""
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
    if output is not None:
        if output not in named:
            raise UnknownName(f"no output named {output!r}; outputs are: {', '.join(named)}")
        return output, named[output]
    if not named:
        raise NothingToCheck("the model returned no tensor")
    key = "logits" if "logits" in named else next(iter(named))
    return key, named[key]


def _detached(named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    __tracebackhide__ = hide_frame
    return {k: v.detach() for k, v in named.items()}


def _tol(
    dtype: torch.dtype, kind: str, rtol: float | None, atol: float | None
) -> tuple[float, float]:
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
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
    __tracebackhide__ = hide_frame
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


def _inline(items: Sequence[str], limit: int = 5) -> str:
    __tracebackhide__ = hide_frame
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _fmt_shape(shape: Shape) -> str:
    __tracebackhide__ = hide_frame
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"


def _fmt_labels(labels: Mapping[int, str]) -> str:
    __tracebackhide__ = hide_frame
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in sorted(labels.items())) + "}"


def _short(text: str, width: int = 40) -> str:
    __tracebackhide__ = hide_frame
    return repr(text if len(text) <= width else text[: width - 1] + "…")
