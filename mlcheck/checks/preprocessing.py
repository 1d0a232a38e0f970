"""Preprocessing: what the tokenizer and collator leave of the labels."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..errors import CheckFailed, UsageError, hide_frame
from ._common import _listing


def assert_labels_survive(
    preprocess: Callable[[Any], Mapping[str, Any]],
    examples: Sequence[Any],
    *,
    ignore_index: int = -100,
) -> list[int]:
    """Every example keeps at least one label after ``preprocess``: the answer is not cut off.

    ``preprocess(example)`` is the project's own step that turns one raw example into model
    inputs with ``labels`` (tokenize, truncate to ``max_length``, mask the prompt with
    ``ignore_index``). When truncation removes the whole answer of a long prompt, every label is
    ``ignore_index``: the example adds nothing to the loss (or a NaN: 0 / 0 tokens) and nothing
    fails. The message names each such example with its lengths before (the raw fields: text
    in characters, lists in items) and after (input tokens, labelled tokens). Deterministic.
    Returns the number of labels that survive, per example.

    >>> from mlcheck.checks import assert_labels_survive
    >>> def preprocess(example):
    ...     ids = list(range(len(example["prompt"]) + len(example["answer"])))[:8]
    ...     labels = [-100] * len(example["prompt"]) + ids[len(example["prompt"]):]
    ...     return {"input_ids": ids, "labels": labels[:8]}
    >>> assert_labels_survive(preprocess, [{"prompt": "abc", "answer": "de"}])
    [2]
    """
    __tracebackhide__ = hide_frame
    name = "assert_labels_survive"
    if not examples:
        raise UsageError(f"{name}: no examples given")
    counts: list[int] = []
    lost: list[str] = []
    for i, example in enumerate(examples):
        out = preprocess(example)
        if not isinstance(out, Mapping) or "labels" not in out:
            raise UsageError(
                f"{name}: preprocess(example) must return a mapping with `labels`; example {i} "
                f"gave {type(out).__name__}"
                + (f" with keys {', '.join(map(str, out))}" if isinstance(out, Mapping) else "")
            )
        labels = torch.as_tensor(out["labels"])
        kept = int((labels != ignore_index).sum())
        counts.append(kept)
        if kept == 0:
            ids = out.get("input_ids")
            after = (
                f"{len(torch.as_tensor(ids).reshape(-1))} input tokens" if ids is not None else ""
            )
            lost.append(
                f"example {i} ({_lengths(example)}): after preprocess {after}"
                f"{', ' if after else ''}{labels.numel()} labels, all {ignore_index}"
            )
    if lost:
        raise CheckFailed(
            name,
            "examples lost every label in preprocessing",
            expected=f"at least one label that is not {ignore_index} in every example",
            actual=_listing(lost),
            difference=f"{len(lost)} of {len(examples)} examples have no label left",
            details="truncation (max_length) cut off the answer after a long prompt: truncate "
            "the prompt first (keep the answer), raise max_length, or drop such examples "
            "knowingly; an example with no label adds nothing to the loss, or NaN (0 / 0)",
        )
    return counts


def _lengths(example: Any) -> str:
    """``prompt: 812 chars, answer: 40 chars`` for the example's raw fields."""
    __tracebackhide__ = hide_frame
    if isinstance(example, str):
        return f"{len(example)} chars"
    if not isinstance(example, Mapping):
        return type(example).__name__
    parts = []
    for key, value in example.items():
        if isinstance(value, str):
            parts.append(f"{key}: {len(value)} chars")
        elif isinstance(value, Sequence | torch.Tensor):
            parts.append(f"{key}: {len(value)} items")
    return ", ".join(parts) or "no sized fields"
