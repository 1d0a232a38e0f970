"""Labels and predictions: id2label and canary inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckFailed, UsageError, hide_frame
from ._common import _device_of, _fmt_labels, _listing, _move, _named_outputs, _pick, _short


def assert_labels(
    model: Any, expected: Mapping[int, str] | Sequence[str], *, num_labels: int | None = None
) -> None:
    """``id2label`` means what the test says, e.g. ``{2: "entailment"}``.

    ``model`` is a Hugging Face model, its config, or an ``id2label`` dict. A dict checks the
    given indices; a list (``["contradiction", "neutral", "entailment"]``) checks every index
    and the number of labels, as does ``num_labels=``. Also checks that ``label2id`` agrees
    with ``id2label`` and that the classifier head has one output per label.

    >>> from transformers import BertConfig
    >>> assert_labels(BertConfig(id2label={0: "neg", 1: "pos"}), {1: "pos"})
    """
    __tracebackhide__ = hide_frame
    config = getattr(model, "config", model)
    raw = config if isinstance(config, Mapping) else getattr(config, "id2label", None)
    if raw is None:
        raise UsageError("assert_labels needs a Hugging Face model or config, or an id2label dict")
    id2label = {int(k): v for k, v in raw.items()}
    if isinstance(expected, Mapping):
        want = {int(k): v for k, v in expected.items()}
    else:
        want = dict(enumerate(expected))
        num_labels = len(want) if num_labels is None else num_labels
    problems: list[str] = []
    for index, label in sorted(want.items()):
        got = id2label.get(index)
        if got != label:
            where = [i for i, name in id2label.items() if name == label]
            problems.append(
                f"id2label[{index}] is {got!r}, expected {label!r}"
                + (f" (the model has {label!r} at index {where[0]})" if where else "")
            )
    if num_labels is not None and len(id2label) != num_labels:
        problems.append(f"the model has {len(id2label)} labels, expected {num_labels}")
    label2id = getattr(config, "label2id", None) or {}
    for index, label in id2label.items():
        if label in label2id and int(label2id[label]) != index:
            problems.append(
                f"label2id[{label!r}] is {label2id[label]} but id2label[{index}] = {label!r}"
            )
    head = _head_outputs(model)
    if head is not None and head[1] != len(id2label):
        problems.append(
            f"the head {head[0]} has {head[1]} outputs but id2label has {len(id2label)}"
        )
    if problems:
        hint = ""
        if all(str(v).startswith("LABEL_") for v in id2label.values()):
            hint = "the labels are the default LABEL_i names: was the config saved without them?"
        raise CheckFailed(
            "assert_labels",
            "class indices do not mean what the test expects",
            expected=_fmt_labels(want) + (f" ({num_labels} labels)" if num_labels else ""),
            actual=_fmt_labels(id2label) + f" ({len(id2label)} labels)",
            difference="; ".join(problems),
            details=hint,
        )


def _head_outputs(model: Any) -> tuple[str, int] | None:
    """The classification head's (name, out_features), found by Hugging Face naming."""
    __tracebackhide__ = hide_frame
    if not isinstance(model, nn.Module):
        return None
    heads = ("classifier", "score", "classification_head.out_proj", "classifier.out_proj")
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (name in heads or name.endswith(heads)):
            found = (name, module.out_features)
    return found


def assert_predicts(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Mapping[str, Any]],
    *,
    max_length: int | None = None,
) -> list[tuple[str, float]]:
    """Canary inputs get the expected label and/or a score bound on a sequence classifier.

    Each example is ``{"text": ..., "text_pair": ... (optional), "label": expected label name
    or index, "min_score": ..., "max_score": ..., "score_of": label whose probability the bounds
    apply to (default: ``label``, else the predicted one)}``. Scores are softmax probabilities
    (sigmoid for ``problem_type="multi_label_classification"``). Runs in eval mode in one batch.
    Returns (predicted label, its score) per example.

    >>> assert_predicts(model, tokenizer, [{"text": "I will hurt you", "label": "unsafe",
    ...                                      "min_score": 0.99}])  # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    config = getattr(model, "config", None)
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    texts = [e["text"] for e in examples]
    pairs = [e["text_pair"] for e in examples] if all("text_pair" in e for e in examples) else None
    enc = tokenizer(
        texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, logits = _pick(_named_outputs(model(**_move(dict(enc), _device_of(model)))), None)
    finally:
        model.train(was_training)
    multi = getattr(config, "problem_type", None) == "multi_label_classification"
    probs = (logits.float().sigmoid() if multi else logits.float().softmax(-1)).cpu()
    results: list[tuple[str, float]] = []
    problems: list[str] = []
    for i, example in enumerate(examples):
        row = probs[i]
        top = int(row.argmax())
        results.append((id2label.get(top, str(top)), float(row[top])))
        got = f"{id2label.get(top, top)!r} ({row[top]:.3g})"
        wrong = []
        if "label" in example:
            want = _label_index(example["label"], id2label)
            if want != top:
                wrong.append(f"expected label {example['label']!r} ({row[want]:.3g})")
        score_of = example.get("score_of", example.get("label"))
        index = top if score_of is None else _label_index(score_of, id2label)
        score = float(row[index])
        name = id2label.get(index, index)
        if "min_score" in example and not score >= example["min_score"]:
            wrong.append(f"expected score of {name!r} >= {example['min_score']:g}, got {score:.3g}")
        if "max_score" in example and not score <= example["max_score"]:
            wrong.append(f"expected score of {name!r} <= {example['max_score']:g}, got {score:.3g}")
        if wrong:
            problems.append(f"[{i}] {_short(example['text'])}: {'; '.join(wrong)}; predicted {got}")
    if problems:
        raise CheckFailed(
            "assert_predicts",
            "canary inputs did not get the expected predictions",
            expected="every canary's label / score bound",
            actual=_listing(problems, limit=20),
            difference=f"{len(problems)} of {len(examples)} canaries wrong",
            details=f"labels: {_fmt_labels(id2label)}",
        )
    return results


def _label_index(label: int | str, id2label: Mapping[int, str]) -> int:
    __tracebackhide__ = hide_frame
    if isinstance(label, int):
        return label
    for index, name in id2label.items():
        if name == label:
            return index
    raise CheckFailed(
        "assert_predicts",
        f"label {label!r} is not one of the model's labels",
        expected=repr(label),
        actual=_fmt_labels(id2label),
    )
