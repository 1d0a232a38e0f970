"""What ``mlcheck.checks._device_watch`` takes from torch's private modules still holds.

``_DeviceWatch`` builds on ``torch.utils._python_dispatch`` and friends, which torch may change in
any release. Each test names the one piece it pins, so a torch upgrade that breaks it fails here
with that name, before the device checks start giving wrong verdicts.
"""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

from mlcheck.checks import _device_watch
from mlcheck.checks._device_watch import _TRANSFERS, _DeviceWatch

PRIVATE = [
    ("torch.utils._python_dispatch", "TorchDispatchMode"),
    ("torch.utils._pytree", "tree_flatten"),
    ("torch.utils.weak", "WeakTensorKeyDictionary"),
]


@pytest.mark.parametrize(("module", "name"), PRIVATE, ids=[n for _, n in PRIVATE])
def test_private_torch_names_exist(module: str, name: str) -> None:
    found = getattr(importlib.import_module(module), name, None)
    assert found is not None, (
        f"torch {torch.__version__} no longer has {module}.{name}, which "
        "mlcheck/checks/_device_watch.py relies on: port _DeviceWatch"
    )


def test_aten_overloads_the_watch_names_exist() -> None:
    aten = torch.ops.aten
    for name in ("_to_copy", "copy_", "_copy_from", "_local_scalar_dense"):
        assert hasattr(getattr(aten, name), "default"), f"aten.{name}.default is gone"
    assert len(_TRANSFERS) == 3


def test_dispatch_mode_sees_every_aten_op_with_its_arguments() -> None:
    """The protocol: ``__torch_dispatch__(func, types, args, kwargs)`` once per aten op."""
    seen: list[str] = []

    class Spy(_DeviceWatch):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            seen.append(str(func))
            return super().__torch_dispatch__(func, types, args, kwargs)

    with Spy(torch.device("cpu")):
        (torch.ones(3) * 2).sum()
    assert any("mul" in op for op in seen) and any("sum" in op for op in seen), seen


def test_watch_reports_a_cpu_tensor_mixed_into_meta_work_with_its_origin() -> None:
    x = torch.ones(2, 3, device="meta")
    watch = _DeviceWatch(torch.device("meta"))
    with watch, contextlib.suppress(RuntimeError):  # torch refuses the mix after the watch saw it
        stray = torch.ones(3) + 1  # created off the device, inside the watch
        x.add(stray)
    assert watch.mixed, "the dispatch mode no longer sees mixed-device operations"
    assert "tests/checks/test_device_watch.py" in watch.mixed[0], watch.mixed[0]
    assert "created at" in watch.mixed[0], watch.mixed[0]


def test_local_scalar_on_meta_is_answered_by_the_watch() -> None:
    """``.item()`` / ``if mask.all()`` on meta go through ``_local_scalar_dense``."""
    with _DeviceWatch(torch.device("meta")):
        assert bool(torch.ones(2, device="meta").bool().all()) is False
        assert int(torch.ones((), device="meta", dtype=torch.long)) == 1


def test_user_frame_skips_the_checks_package() -> None:
    assert _device_watch._PACKAGE.endswith("checks/")
    assert "tests/checks/test_device_watch.py" in _device_watch._user_frame()
