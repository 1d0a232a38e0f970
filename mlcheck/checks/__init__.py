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

The checks live in modules by concern (``shapes``, ``devices``, ``training``, ``losses``,
``labels``, ``numerics``, ``equivalence``, ``generation``); this package re-exports them.
"""

from __future__ import annotations

from ..errors import CheckFailed

# checks v3 (issue 22)
from .accumulation import assert_grad_accumulation
from .devices import assert_device_roundtrip
from .distributed import assert_ddp_equivalent, assert_same_on_all_ranks, assert_shards_disjoint
from .equivalence import assert_batch_invariant, assert_equivalent, assert_save_load_roundtrip
from .generation import assert_cache_consistent, assert_causal
from .labels import assert_labels, assert_predicts
from .losses import assert_initial_loss, assert_loss_matches
from .numerics import assert_deterministic, assert_dtype_agrees, assert_finite
from .preprocessing import assert_labels_survive
from .shapes import assert_output_shape
from .training import (
    assert_frozen,
    assert_loss_decreases,
    assert_overfits,
    assert_params_update,
    assert_train_mode,
)
from .types import LossFn, OptimizerFactory, ReferenceLoss, Shape

__all__ = [
    "CheckFailed",
    "LossFn",
    "OptimizerFactory",
    "ReferenceLoss",
    "Shape",
    "assert_batch_invariant",
    "assert_cache_consistent",
    "assert_causal",
    "assert_ddp_equivalent",
    "assert_deterministic",
    "assert_device_roundtrip",
    "assert_dtype_agrees",
    "assert_equivalent",
    "assert_finite",
    "assert_frozen",
    "assert_grad_accumulation",
    "assert_initial_loss",
    "assert_labels",
    "assert_labels_survive",
    "assert_loss_decreases",
    "assert_loss_matches",
    "assert_output_shape",
    "assert_overfits",
    "assert_params_update",
    "assert_predicts",
    "assert_same_on_all_ranks",
    "assert_save_load_roundtrip",
    "assert_shards_disjoint",
    "assert_train_mode",
]
