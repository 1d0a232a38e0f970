"""The types the checks take, named once: loss functions, reference losses, optimizers, shapes.

>>> import torch
>>> from mlcheck.checks import LossFn
>>> def loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
...     return model(**batch).loss
>>> checked: LossFn = loss
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["LossFn", "OptimizerFactory", "ReferenceLoss", "Shape"]

Shape = Sequence[int | str | None]


class LossFn(Protocol):
    """``loss_fn(model, batch) -> loss``: how the training checks compute a loss.

    Pass your project's own step (the one that does gradient accumulation, label smoothing, a
    custom head) so the checks test your code, not a default.

    >>> def loss_fn(model, batch):  # doctest: +SKIP
    ...     return model(**batch).loss / accumulation_steps
    """

    def __call__(self, model: nn.Module, batch: Any, /) -> torch.Tensor: ...


class ReferenceLoss(Protocol):
    """``reference(outputs, batch) -> loss``: the loss ``assert_loss_matches`` expects, computed
    from the model's outputs (``outputs.logits``) and the raw batch.

    >>> import torch.nn.functional as F
    >>> def reference(outputs, batch):  # doctest: +SKIP
    ...     return F.cross_entropy(outputs.logits, batch["labels"], label_smoothing=0.1)
    """

    def __call__(self, outputs: Any, batch: Any, /) -> torch.Tensor: ...


class OptimizerFactory(Protocol):
    """``optimizer(model) -> torch.optim.Optimizer``: your training code's optimizer set-up."""

    def __call__(self, model: nn.Module, /) -> torch.optim.Optimizer: ...
