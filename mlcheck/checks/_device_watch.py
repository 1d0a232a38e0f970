"""The one place that relies on torch's private dispatch modules.

``_DeviceWatch`` is a ``TorchDispatchMode`` (``torch.utils._python_dispatch``) that sees every
aten operation a forward pass runs, so it can name the operation that mixes devices and the
line that created the stray tensor. Those modules are private to torch:
``tests/checks/test_device_watch.py`` pins what this module takes from them (the mode's
constructor and ``__torch_dispatch__`` protocol, ``tree_flatten``, ``WeakTensorKeyDictionary``,
the aten overloads below, ``_local_scalar_dense`` on meta) and fails loudly, naming the piece,
when a torch release changes one.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    return _same_device(tensor.device, device)


def _same_device(actual: torch.device, wanted: torch.device) -> bool:
    """``cuda:0`` is on ``cuda``; ``cuda:1`` is not on ``cuda:0``."""
    return actual.type == wanted.type and (wanted.index is None or actual.index == wanted.index)


# frames inside mlcheck.checks are the check's, not the user's
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

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
    skip = (os.sep + "torch" + os.sep, _PACKAGE, os.sep + "contextlib.py")
    for frame in reversed(traceback.extract_stack()):
        if not any(part in frame.filename for part in skip):
            return f"{os.path.relpath(frame.filename)}:{frame.lineno} ({frame.line})"
    return "unknown location"
