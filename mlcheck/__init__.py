"""mlcheck: test ML code for real in CI.

Importing ``mlcheck`` (or its pytest plugin) does not import torch or transformers: the public
helpers below load on first use, so a suite with no ML pays nothing for having mlcheck installed.

>>> import mlcheck
>>> callable(mlcheck.shrink)  # the first access imports transformers
True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (loaded lazily, see module docstring)
_LAZY = {
    "shrink": "mlcheck.shrinking",
    "ModelFactory": "mlcheck.models",
    "assert_output_shape": "mlcheck.checks",
    "assert_device_roundtrip": "mlcheck.checks",
    "assert_loss_decreases": "mlcheck.checks",
    "assert_overfits": "mlcheck.checks",
    "assert_params_update": "mlcheck.checks",
    "assert_frozen": "mlcheck.checks",
    "assert_labels": "mlcheck.checks",
    "assert_predicts": "mlcheck.checks",
    "assert_save_load_roundtrip": "mlcheck.checks",
    "assert_batch_invariant": "mlcheck.checks",
    "assert_finite": "mlcheck.checks",
    "assert_deterministic": "mlcheck.checks",
    "assert_causal": "mlcheck.checks",
    "assert_loss_matches": "mlcheck.checks",
    "assert_train_mode": "mlcheck.checks",
    "assert_initial_loss": "mlcheck.checks",
    "assert_equivalent": "mlcheck.checks",
    "assert_dtype_agrees": "mlcheck.checks",
    "assert_cache_consistent": "mlcheck.checks",
    "assert_ddp_equivalent": "mlcheck.checks",
    "assert_shards_disjoint": "mlcheck.checks",
    "assert_same_on_all_ranks": "mlcheck.checks",
    "LossFn": "mlcheck.checks",
    "ReferenceLoss": "mlcheck.checks",
    "assert_serves": "mlcheck.serving",
    "CheckFailed": "mlcheck.errors",
    "serve": "mlcheck.serving",
}

# submodules re-exported as attributes
_MODULES = {"checks": "mlcheck.checks", "serving": "mlcheck.serving"}

__all__ = ["__version__", *_LAZY, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'mlcheck' has no attribute {name!r}")
    globals()[name] = value
    return value
