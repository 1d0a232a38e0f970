"""The loss itself: it is the loss it claims to be, and it starts where random init puts it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import CheckFailed, NothingToCheck, hide_frame
from ._common import _call, _named_outputs, _pick, _seed, _seeded, _split
from ._training import _default_loss
from .types import LossFn, ReferenceLoss

REFERENCES = ("causal-lm", "masked-lm", "sequence-classification", "token-classification")


def assert_loss_matches(
    model: nn.Module,
    batch: Mapping[str, Any],
    reference: str | ReferenceLoss = "causal-lm",
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    seed: int | None = None,
) -> float:
    """The ``loss`` the model reports equals a reference loss recomputed from its logits.

    Proves the loss is computed against the right targets, aligned and reduced as intended:
    ``"causal-lm"`` is the cross-entropy of ``logits[:, :-1]`` against ``input_ids[:, 1:]``,
    positions where ``attention_mask`` is 0 ignored (so labels shifted twice, by the collator and
    again by the model, fail); ``"masked-lm"``, ``"sequence-classification"`` and
    ``"token-classification"`` are the cross-entropy against ``labels`` with ``-100`` ignored
    (regression heads: MSE; ``problem_type="multi_label_classification"``: BCE with logits). A
    callable is a :class:`~mlcheck.checks.ReferenceLoss` ``(outputs, batch) -> loss``. Runs once
    in eval mode: deterministic, so there is no false-failure rate beyond float rounding
    (``rtol=1e-4``). On a mismatch the message gives the ratio (2x, -1x: a sum, an undivided
    accumulation, a negated loss) and, for causal LMs, which label shift the model's loss matches.
    Returns the reference loss.

    Checks v3: the gradient with respect to the logits must match too, not only the value (at
    near-uniform logits a label-smoothed cross-entropy has the plain one's value; the message
    measures the smoothing). For causal LMs a mismatch lists the references tried (pad positions
    counted, tokens equal to the pad id ignored, the last real token masked, the batch's own
    labels) with the one the model's loss matches, and the positions where the labels disagree
    with the real tokens. The classification references check that integer labels lie in
    ``[0, num_labels)`` and fail on one-hot float labels that switch a Hugging Face classifier
    to ``multi_label_classification``; the masked-LM reference fails when most labelled
    positions (8 or more) keep their input token: labels left on unmasked tokens.

    >>> assert_loss_matches(gpt2, {"input_ids": ids, "labels": ids})  # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    name = "assert_loss_matches"
    seed = _seed(seed)
    config = getattr(model, "config", None)
    problem_before = getattr(config, "problem_type", None)
    if reference in ("sequence-classification", "token-classification"):
        _require_class_labels(name, batch, config, seed)
    if reference == "masked-lm":
        _require_masked_positions(name, batch, seed)
    was_training = model.training
    model.eval()
    try:
        with _seeded(seed), torch.enable_grad():  # the gradient is compared too
            outputs = _call(model, batch)
    finally:
        model.train(was_training)
    if reference in ("sequence-classification", "token-classification") and (
        _switched_to_multi_label(problem_before, config, _one_hot_targets(batch))
    ):
        config.problem_type = problem_before  # type: ignore[union-attr]  # as it was given
        raise CheckFailed(
            name,
            "one-hot float labels switched the model to multi-label classification (BCE)",
            expected=f"the {reference} reference: cross-entropy over the classes, integer labels",
            actual=f"float labels of shape {tuple(batch['labels'].shape)}, one-hot; "
            "problem_type was unset and the model set 'multi_label_classification'",
            seed=seed,
            details="a Hugging Face classifier picks its loss from the labels' dtype: float "
            "labels mean multi-label (a per-class sigmoid + BCE), not a softmax over the classes: "
            "pass class indices (labels.argmax(-1), dtype long) or set config.problem_type",
        )
    named = _named_outputs(outputs)
    if "loss" not in named:
        raise NothingToCheck(
            f"{name}: the model returned no `loss`: put `labels` in the batch (Hugging Face "
            "models compute the loss from them)"
        )
    loss = float(named["loss"].detach())
    if callable(reference):
        want_tensor = reference(outputs, batch)
        what = "your reference loss"
    else:
        want_tensor = _reference(name, reference, named, batch, config)
        what = f"the {reference} reference loss"
    want = float(want_tensor.detach() if isinstance(want_tensor, torch.Tensor) else want_tensor)
    if abs(loss - want) <= atol + rtol * abs(want):
        _require_same_gradient(name, named, want_tensor, batch, what, seed)
        return want
    hints = []
    ratio = loss / want if want else math.inf
    if ratio < 0:
        hints.append("the loss has the wrong sign: is it negated?")
    elif abs(ratio - round(ratio)) < 0.01 * ratio and round(ratio) >= 2:
        hints.append(
            f"the loss is {round(ratio)}x the reference: a sum where a mean was meant, or "
            "gradient accumulation not divided by its steps?"
        )
    gap = _gradient_gap(named, want_tensor, batch)
    if gap is not None and gap[2]:
        hints.append(gap[2])
    tried = ""
    if reference == "causal-lm" and "logits" in named:
        variants = _causal_variants(named["logits"], batch, config)
        agree = [k for k, v in variants.items() if abs(v - loss) <= atol + rtol * abs(v)]
        tried = "references tried: " + "; ".join(
            f"{k}: {v:.6g}" + (" (matches the model's loss)" if k in agree else "")
            for k, v in variants.items()
        )
        hints += [f"the model's loss is the reference with {k}" for k in agree]
        positions = _label_positions(batch)
        if positions:
            hints.append(positions)
    if reference == "causal-lm":
        shifts = {k: _causal_ce(named["logits"], batch, k) for k in (0, 1, 2, 3)}
        same = [k for k, v in shifts.items() if abs(v - loss) <= atol + rtol * abs(v)]
        if same and same[0] != 1:
            hints.append(
                f"the model's loss is the cross-entropy of logits at t against token t+{same[0]}"
                " (the reference is t+1): labels shifted "
                + ("twice (the collator and the model both shift)" if same[0] == 2 else "wrongly")
            )
    raise CheckFailed(
        name,
        f"the model's loss is not {what}",
        expected=f"loss {want:.6g} ({what})",
        actual=f"loss {loss:.6g}",
        difference=f"|Δ| = {abs(loss - want):.3g} ({ratio:.3g}x the reference), "
        f"over logits {tuple(named['logits'].shape) if 'logits' in named else '?'}",
        seed=seed,
        details="\n".join([*(f"hint: {h}" for h in hints), *([tried] if tried else [])]),
    )


def _reference(
    check: str, kind: str, named: Mapping[str, torch.Tensor], batch: Any, config: Any
) -> torch.Tensor:
    __tracebackhide__ = hide_frame
    if kind not in REFERENCES:
        raise NothingToCheck(
            f"{check}: unknown reference {kind!r}; use one of {', '.join(REFERENCES)} or a "
            "callable (outputs, batch) -> loss"
        )
    if not isinstance(batch, Mapping):
        raise NothingToCheck(f"{check}: the batch must be a mapping (input_ids, labels, ...)")
    logits = named.get("logits")
    if logits is None:
        raise NothingToCheck(f"{check}: the model returned no `logits` to recompute the loss from")
    if kind == "causal-lm":
        return torch.tensor(_causal_ce(logits, batch, 1))
    if "labels" not in batch:
        raise NothingToCheck(f"{check}: the {kind} reference needs `labels` in the batch")
    labels = batch["labels"].to(logits.device)
    problem = getattr(config, "problem_type", None)
    if labels.is_floating_point() or problem == "regression":
        if problem == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return F.mse_loss(logits.float().squeeze(-1), labels.float().squeeze(-1))
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def _require_same_gradient(
    check: str,
    named: Mapping[str, torch.Tensor],
    want: Any,
    batch: Any,
    what: str,
    seed: int,
) -> None:
    """The model's loss and the reference have the same gradient with respect to the logits.

    Equal values are not enough: near random init the logits are almost uniform, where a
    label-smoothed cross-entropy has the same value as the plain one (every class scores the
    same) but a different gradient (``softmax - smoothed target``), so training optimises a
    different loss. Compared with a tolerance of 1e-3 of the largest gradient entry."""
    __tracebackhide__ = hide_frame
    found = _gradient_gap(named, want, batch)
    if found is None:
        return
    worst, scale, hint = found
    raise CheckFailed(
        check,
        f"the model's loss has the value of {what} but not its gradient",
        expected="d loss / d logits equal to the reference's",
        actual=f"max |Δ| of the gradients {worst:.3g} (largest reference entry {scale:.3g})",
        seed=seed,
        details=hint
        or "equal values with different gradients: the loss optimises something else than "
        "the reference (a different target distribution, weights or a term that is 0 at "
        "these logits)",
    )


def _gradient_gap(
    named: Mapping[str, torch.Tensor], want: Any, batch: Any
) -> tuple[float, float, str] | None:
    """(max |Δ| of d loss / d logits, largest reference entry, hint) when the gradients of the
    model's loss and the reference differ; None when they agree or cannot be compared."""
    __tracebackhide__ = hide_frame
    loss, logits = named.get("loss"), named.get("logits")
    if not (isinstance(want, torch.Tensor) and logits is not None and loss is not None):
        return None
    if not (loss.requires_grad and want.requires_grad and logits.requires_grad):
        return None
    mine = torch.autograd.grad(loss, logits, retain_graph=True, allow_unused=True)[0]
    theirs = torch.autograd.grad(want, logits, retain_graph=True, allow_unused=True)[0]
    if mine is None or theirs is None:
        return None
    x, y = mine.double(), theirs.double()
    scale = float(y.abs().max())
    worst = float((x - y).abs().max())
    if worst <= 1e-3 * scale + 1e-12:
        return None
    hint = ""
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    if isinstance(labels, torch.Tensor) and not labels.is_floating_point():
        smoothing = _smoothing(x - y, labels, logits.shape[-1])
        if smoothing is not None:
            hint = (
                f"the difference is label smoothing of {smoothing:.3g} (measured from d loss / "
                "d logits): a loss with label_smoothing > 0 where the plain cross-entropy was "
                "meant (left on at evaluation?)"
            )
    return worst, scale, hint


def _smoothing(diff: torch.Tensor, labels: torch.Tensor, classes: int) -> float | None:
    """ε when ``diff`` (model gradient minus reference gradient, wrt the logits) is
    ``ε (one_hot - 1/C) / N``, the signature of label smoothing; None otherwise."""
    __tracebackhide__ = hide_frame
    flat = diff.reshape(-1, classes)
    targets = labels.reshape(-1).to(flat.device)
    if flat.shape[0] != targets.shape[0]:
        return None
    scored = targets != -100
    basis = torch.zeros_like(flat)
    basis[scored] = F.one_hot(targets[scored], classes).double() - 1.0 / classes
    basis /= max(int(scored.sum()), 1)
    norm = float((basis * basis).sum())
    if norm == 0:
        return None
    eps = float((flat * basis).sum()) / norm
    residual = float((flat - eps * basis).norm()) / max(float(flat.norm()), 1e-30)
    return eps if residual < 0.05 and 0 < eps < 1 else None


def _causal_variants(
    logits: torch.Tensor, batch: Mapping[str, Any], config: Any
) -> dict[str, float]:
    """The causal-LM reference and the variants that common label bugs compute, by name."""
    __tracebackhide__ = hide_frame
    found = {"causal-lm (t+1, attention_mask 0 ignored)": _causal_ce(logits, batch, 1)}
    mask = batch.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        unmasked = {k: v for k, v in batch.items() if k != "attention_mask"}
        found["pad positions counted (attention_mask ignored)"] = _causal_ce(logits, unmasked, 1)
    pad = getattr(config, "pad_token_id", None)
    ids = batch["input_ids"]
    if pad is not None and bool((ids[:, 1:] == pad).any()):
        found[f"tokens equal to the pad id ({pad}) ignored (pad = eos drops the real EOS)"] = (
            _causal_ce(logits, batch, 1, drop=ids == pad)
        )
    real = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
    last = torch.zeros_like(real)
    ends = real.long().cumsum(-1).argmax(-1)  # the last real token of each row
    last[torch.arange(len(ends)), ends] = True
    found["the last real token of each row masked"] = _causal_ce(logits, batch, 1, drop=last)
    labels = batch.get("labels")
    if isinstance(labels, torch.Tensor) and labels.shape == ids.shape:
        found["the batch's labels (shifted once, -100 ignored)"] = _causal_ce(
            logits, {"input_ids": labels}, 1
        )
    return found


def _label_positions(batch: Mapping[str, Any]) -> str:
    """Where the batch's ``labels`` disagree with the real tokens (input_ids where
    attention_mask is 1); "" when they agree or cannot be compared."""
    __tracebackhide__ = hide_frame
    labels, ids = batch.get("labels"), batch.get("input_ids")
    if not (isinstance(labels, torch.Tensor) and isinstance(ids, torch.Tensor)):
        return ""
    if labels.shape != ids.shape:
        return ""
    mask = batch.get("attention_mask")
    real = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
    scored = labels != -100
    kinds = (
        ("padding positions with a label (pad counted in the loss)", scored & ~real),
        ("real tokens labelled -100 (left out of the loss)", ~scored & real),
        ("real tokens whose label is not the input token", scored & real & (labels != ids)),
    )
    parts = []
    for what, where in kinds:
        where = where.clone()
        where[:, 0] = False  # position 0 is never a target after the shift
        if where.any():
            at = [f"({int(r)}, {int(c)})" for r, c in where.nonzero()[:5].tolist()]
            parts.append(f"{int(where.sum())} {what}, at (row, position) {', '.join(at)}")
    return "; ".join(parts)


def _require_class_labels(check: str, batch: Any, config: Any, seed: int) -> None:
    """Class labels are integers in [0, num_labels) (or -100): else the reference is moot."""
    __tracebackhide__ = hide_frame
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    classes = getattr(config, "num_labels", None)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or classes is None:
        return
    if getattr(config, "problem_type", None) == "regression":
        return
    bad = (labels != -100) & ((labels < 0) | (labels >= classes))
    if bad.any():
        values = sorted({int(v) for v in labels[bad].tolist()})
        raise CheckFailed(
            check,
            f"labels outside the model's {classes} classes",
            expected=f"integer labels in [0, {classes}) or -100 (config.num_labels = {classes})",
            actual=f"{int(bad.sum())} labels out of range: {values[:10]}",
            seed=seed,
            details="num_labels in the config does not match the dataset's classes (or the "
            "labels are 1-based): the head has no output for these labels",
        )


def _require_masked_positions(check: str, batch: Any, seed: int) -> None:
    """A masked-LM batch labels only the positions it masked or replaced: labels sitting on
    positions whose input token is the label itself, at most of the labelled positions, are a
    collator that forgot ``-100`` at the unmasked tokens.

    The Hugging Face collator keeps 10% of the positions it selects unchanged, so one such
    position is normal: the check fails only when at least 8 labelled positions keep their
    input token and they are more than half of the labelled ones (probability under the
    collator at most about 4e-5: 8 or more of 15 Binomial(0.1) draws; the forgotten ``-100``
    gives about 85%)."""
    __tracebackhide__ = hide_frame
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
    if not (isinstance(labels, torch.Tensor) and isinstance(ids, torch.Tensor)):
        return
    if labels.shape != ids.shape:
        return
    scored = labels != -100
    mask = batch.get("attention_mask")
    if mask is not None:
        scored &= mask.bool()
    kept = scored & (labels == ids)
    total, same = int(scored.sum()), int(kept.sum())
    if same >= 8 and same > total / 2:
        at = [f"({int(r)}, {int(c)})" for r, c in kept.nonzero()[:5].tolist()]
        raise CheckFailed(
            check,
            "masked-LM labels sit on positions that were not masked",
            expected="labels only where the input was masked or replaced (-100 elsewhere)",
            actual=f"{same} of {total} labelled positions keep their input token (label == "
            f"input_ids), at (row, position) {', '.join(at)}",
            seed=seed,
            details="the collator did not set labels to -100 at the unmasked positions, so the "
            "loss rewards copying the input (the model learns nothing about the masked tokens); "
            "DataCollatorForLanguageModeling does this for you",
        )


def _causal_ce(
    logits: torch.Tensor,
    batch: Mapping[str, Any],
    shift: int,
    drop: torch.Tensor | None = None,
) -> float:
    """Cross-entropy of the logits at position t against token t + ``shift``."""
    __tracebackhide__ = hide_frame
    ids = batch["input_ids"].to(logits.device)
    length = ids.shape[1]
    if shift >= length:
        return math.nan
    targets = ids[:, shift:].clone()
    mask = batch.get("attention_mask")
    if mask is not None:
        targets[mask[:, shift:].to(ids.device) == 0] = -100
    if drop is not None:
        targets[drop[:, shift:].to(ids.device)] = -100
    scores = logits[:, : length - shift].detach().float()
    return float(
        F.cross_entropy(
            scores.reshape(-1, scores.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
    )


def assert_initial_loss(
    model: nn.Module,
    batch: Any,
    *,
    expected: float | None = None,
    loss_fn: LossFn | None = None,
    rtol: float = 0.35,
    seed: int | None = None,
) -> float:
    """At random init the loss is about ``ln(C)``: the classic "check the loss at init".

    A freshly initialised classifier predicts roughly uniformly over its ``C`` classes (the
    number of logits: ``num_labels``, or the vocabulary for language models), so its
    cross-entropy is close to ``ln(C)``. Loss-scale and reduction bugs show up as a multiple:
    ``reduction="sum"`` gives B x ln(C) (or B*T x), gradient accumulation over k micro-batches
    without dividing gives k x ln(C), a negated loss -ln(C). Pass the project's ``loss_fn(model,
    batch)`` (its training step's loss) to test that function rather than the model's own loss.
    ``expected`` overrides ln(C) (label smoothing, class weights, a regression head). Runs once in
    eval mode on the given, untrained model; returns the loss.

    Statistical design: the loss at init depends on the init seed and the data. ``rtol=0.35``
    (pass when ``|loss - ln C| <= 0.35 ln C``) was calibrated on tiny Hugging Face models (BERT,
    GPT-2, Llama; 2-32 classes and 100-1000-token vocabularies) and a default-initialised 8-32-3
    MLP, over 20 seeds each (measured with the models of ``tests/tiny_models.py``; the
    seed test keeps it true): the largest deviation seen was 0.14 ln C (the MLP, whose default
    init gives logits of std ~0.5; the transformers start near 0 and stayed within 0.015 ln C),
    so the band holds 2.5x the worst case seen, aiming at a false-failure rate below 1 in 1,000,
    while the smallest bug it targets (a 2x scale) is 1.0 ln C away and always fails.

    >>> assert_initial_loss(models.random("bert-base-uncased", task="sequence-classification"),
    ...                     batch)  # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    name = "assert_initial_loss"
    seed = _seed(seed)
    config = getattr(model, "config", None)
    problem_before = getattr(config, "problem_type", None)
    was_training = model.training
    model.eval()
    try:
        with _seeded(seed), torch.no_grad():
            loss = float((loss_fn or _default_loss)(model, batch))
            classes = _classes(model, batch)
    finally:
        model.train(was_training)
    one_hot = _one_hot_targets(batch)
    if expected is None:
        if classes is None and one_hot is None:
            raise NothingToCheck(
                f"{name}: the batch has float targets that are not one-hot (regression), so "
                "there is no ln(C) to expect: pass expected= (the loss of predicting the mean: "
                "the targets' variance)"
            )
        classes = classes if classes is not None else one_hot
        expected = math.log(classes)  # type: ignore[arg-type]
        what = f"ln({classes}) = {expected:.4g}, the cross-entropy of a uniform guess"
    else:
        what = f"{expected:.4g} (expected=)"
    switched = _switched_to_multi_label(problem_before, config, one_hot)
    if switched:
        config.problem_type = problem_before  # type: ignore[union-attr]  # as it was given
    if abs(loss - expected) <= rtol * abs(expected) and not switched:
        return loss
    ratio = loss / expected if expected else math.inf
    hint = ""
    if switched:
        hint = (
            f"the labels are one-hot floats over {one_hot} classes: a Hugging Face classifier "
            "given float labels switches to problem_type='multi_label_classification' (a "
            "per-class binary cross-entropy, about ln 2 = 0.693 at init) instead of the "
            "cross-entropy over the classes: pass class indices (labels.argmax(-1)) or set "
            "problem_type explicitly"
        )
    elif loss < 0:
        hint = "the loss is negative: is it negated?"
    elif ratio >= 1.8:
        hint = (
            f"the loss is {ratio:.3g}x the expected: a sum where a mean was meant, or gradient "
            "accumulation not divided by its steps?"
        )
    elif ratio <= 0.55:
        hint = (
            "the loss is far below a uniform guess before any training: divided twice, labels "
            "leaking into the inputs, or a model that is not freshly initialised?"
        )
    raise CheckFailed(
        name,
        "the loss at initialisation is not what a random model gives",
        expected=f"loss within ±{rtol:.0%} of {what}",
        actual=f"loss {loss:.4g}",
        difference=f"{ratio:.3g}x the expected ({loss - expected:+.3g})",
        seed=seed,
        details=(f"hint: {hint}\n" if hint else "")
        + (
            "the loss checked: your loss_fn(model, batch)"
            if loss_fn is not None
            else "the loss checked: the model's own (from the batch's labels)"
        ),
    )


def _switched_to_multi_label(before: Any, config: Any, one_hot: int | None) -> bool:
    """The model set ``problem_type="multi_label_classification"`` itself (it was unset before
    the forward) because the labels are one-hot floats: the classic silent switch to BCE."""
    __tracebackhide__ = hide_frame
    after = getattr(config, "problem_type", None)
    return before is None and after == "multi_label_classification" and one_hot is not None


def _one_hot_targets(batch: Any) -> int | None:
    """C when the batch's targets are float one-hot (or probability) rows over C classes."""
    __tracebackhide__ = hide_frame
    split = _split(batch)
    if split is None:
        return None
    targets = split[1]
    if not (torch.is_tensor(targets) and targets.is_floating_point() and targets.dim() >= 2):
        return None
    if targets.shape[-1] < 2 or bool((targets < 0).any()):
        return None
    if not torch.allclose(targets.sum(-1).double(), torch.ones(()).double(), atol=1e-4):
        return None
    return int(targets.shape[-1])


def _classes(model: nn.Module, batch: Any) -> int | None:
    """C for ln(C): the logits' last dim (None for float targets)."""
    __tracebackhide__ = hide_frame
    split = _split(batch)
    if split is None:
        return None
    inputs, targets = split
    out = _call(model, inputs)
    if targets is not None and torch.is_tensor(targets) and targets.is_floating_point():
        return None
    _, logits = _pick(_named_outputs(out), "logits" if "logits" in _named_outputs(out) else None)
    return int(logits.shape[-1])
