"""Saved and reloaded, batched and alone, two implementations: the same outputs."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ..errors import CheckFailed, WrongType, hide_frame
from ._common import (
    _detached,
    _device_of,
    _diff,
    _forward,
    _listing,
    _named_outputs,
    _pick,
    _require_close,
    _seed,
    _seeded,
    _tol,
)


def assert_save_load_roundtrip(
    model: nn.Module,
    inputs: Any,
    tmp_path: str | os.PathLike[str],
    *,
    factory: Callable[[], nn.Module] | None = None,
    output: str | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int | None = None,
) -> None:
    """Saving and loading gives a model with the same outputs (eval mode).

    Hugging Face models go through ``save_pretrained``/``from_pretrained``; other modules
    through ``state_dict`` into a fresh instance from ``factory()`` (default: the class called
    with no arguments). The fresh instance is built under ``seed + 1``, so anything the saved
    state does not hold (a head kept as a plain tensor attribute, a non-persistent buffer
    filled randomly, a parameter left out of the checkpoint) comes back different and fails
    the check, with the missing keys named.

    >>> assert_save_load_roundtrip(model, batch, tmp_path)  # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    name = "assert_save_load_roundtrip"
    seed = _seed(seed)
    folder = Path(tmp_path) / "mlcheck-roundtrip"
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        reference = _detached(_forward(model, inputs, seed))
        missing: list[str] = []
        unexpected: list[str] = []
        with _seeded(seed + 1):
            if factory is None and hasattr(model, "save_pretrained"):
                model.save_pretrained(folder)  # type: ignore[operator]
                loaded, info = type(model).from_pretrained(  # type: ignore[attr-defined]
                    folder, output_loading_info=True
                )
                missing, unexpected = list(info["missing_keys"]), list(info["unexpected_keys"])
            else:
                folder.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), folder / "state_dict.pt")
                loaded = (factory or _default_factory(model))()
                result = loaded.load_state_dict(
                    torch.load(folder / "state_dict.pt", weights_only=True), strict=False
                )
                missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        loaded.to(device).eval()
        after = _detached(_forward(loaded, inputs, seed))
    finally:
        model.train(was_training)
    saved = set(model.state_dict())
    reloaded = dict(loaded.named_buffers())
    # non-persistent buffers are not saved: the reloaded model recomputes them, or gets garbage
    transient = [
        f"{key} (max |Δ| = {(buf.double() - reloaded[key].to(buf).double()).abs().max():.3g})"
        for key, buf in model.named_buffers()
        if key not in saved
        and key in reloaded
        and buf.shape == reloaded[key].shape
        and not torch.equal(buf, reloaded[key].to(buf.device))
    ]
    keys = "".join(
        f"\n{label}: {_listing(sorted(found))}"
        for label, found in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("non-persistent buffers (not saved) that differ after reload", transient),
        )
        if found
    )
    try:
        _require_close(
            name,
            reference,
            after,
            output,
            "exact",
            rtol,
            atol,
            seed,
            what="the model before saving and after loading",
        )
    except CheckFailed as failed:
        raise failed.explained(
            keys.strip() + "\nsomething the model needs is not in what it saves: register "
            "tensors as parameters or persistent buffers",
            check=name,
        ) from None
    if missing:
        raise CheckFailed(
            name,
            "the checkpoint lacks some of the model's weights",
            expected="every weight saved and loaded",
            actual=keys.strip(),
            seed=seed,
        )


def _default_factory(model: nn.Module) -> Callable[[], nn.Module]:
    __tracebackhide__ = hide_frame
    cls = type(model)
    required = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise WrongType(
            f"assert_save_load_roundtrip: {cls.__name__}() needs arguments "
            f"({', '.join(p.name for p in required)}): pass factory=lambda: {cls.__name__}(...)"
        )
    return cls


def assert_batch_invariant(
    model: nn.Module,
    inputs: Any,
    *,
    output: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
) -> None:
    """Each row's output in the batch equals its output when run alone (eval mode).

    With an ``attention_mask`` in the inputs, each row is run alone without its padding (the
    positions where the mask is 0, left or right), and per-token outputs are compared on the
    real tokens only: a model that ignores the mask, or normalises across the batch, fails.
    Tolerance is dtype-aware (float32: rtol=1e-4, atol=1e-5). Rows holding NaN or Inf are named
    (count and first position) instead of being compared, and an output with no batch dimension
    (a 0-d output from ``.squeeze()`` on a batch of one) fails with that message.

    >>> enc = tokenizer(["a long sentence", "short"], padding=True, return_tensors="pt")
    ... # doctest: +SKIP
    >>> assert_batch_invariant(model, dict(enc))  # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    name = "assert_batch_invariant"
    seed = _seed(seed)
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    first = next(t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor))
    rows = first.shape[0]
    length = mask.shape[1] if mask is not None else None
    was_training = model.training
    model.eval()
    problems: list[str] = []
    worst = 0.0
    try:
        out_name, batched = _pick(_named_outputs(_forward(model, inputs, seed)), output)
        if batched.dim() == 0 or batched.shape[0] != rows:
            raise CheckFailed(
                name,
                f"{out_name!r} has no batch dimension",
                expected=f"an output whose first dim is the batch ({rows} rows)",
                actual=f"shape {tuple(batched.shape)}",
                seed=seed,
                details="a .squeeze() (or .item(), a reduction over the batch) dropped the batch "
                "dimension: squeeze only the dim meant (x.squeeze(-1)), so a batch of one keeps "
                "its shape",
            )
        nonfinite = _nonfinite_rows(batched)
        if nonfinite:
            raise CheckFailed(
                name,
                f"{out_name!r} holds NaN or Inf in the batch, so rows cannot be compared",
                expected="finite outputs",
                actual=_listing(nonfinite),
                difference=f"{len(nonfinite)} of {rows} rows non-finite",
                seed=seed,
                details="rows that are all padding (attention_mask all 0) give NaN through a "
                "softmax over nothing; otherwise run assert_finite to find the first module "
                "producing them"
                if mask is not None and any(not bool(m.any()) for m in mask)
                else "run assert_finite(model, inputs) to name the first module producing them",
            )
        for i in range(rows):
            keep = mask[i].bool() if mask is not None else None
            row_inputs = _row(inputs, i, keep, rows, length)
            single = _named_outputs(_forward(model, row_inputs, seed))[out_name][0]
            row = batched[i]
            if keep is not None and row.dim() >= 1 and row.shape[0] == length:
                row = row[keep.to(row.device)]
            if row.shape != single.shape:
                problems.append(f"row {i}: shape {tuple(row.shape)} vs {tuple(single.shape)} alone")
                continue
            alone = _nonfinite_rows(single.unsqueeze(0))
            if alone:
                problems.append(f"row {i} alone (without the batch): {alone[0].split(': ', 1)[1]}")
                continue
            r, a = _tol(row.dtype, "batch", rtol, atol)
            if not torch.allclose(row.double(), single.double(), rtol=r, atol=a):
                worst = max(worst, (row.double() - single.double()).abs().max().item())
                real = f", {int(keep.sum())} real tokens of {length}" if keep is not None else ""
                problems.append(f"row {i}{real}: {_diff(row, single, r, a)}")
    finally:
        model.train(was_training)
    if problems:
        raise CheckFailed(
            name,
            f"{out_name!r} of a row changes when it is batched with others",
            expected="each row's output in the batch == its output alone",
            actual=_listing(problems),
            difference=f"{len(problems)} of {rows} rows differ, max |Δ| = {worst:.3g}",
            seed=seed,
            details="padded rows that differ usually mean the attention mask is ignored; with "
            "left padding, also check the position ids: they must count real tokens only "
            "(position_ids = attention_mask.cumsum(-1) - 1), not start at the padding"
            if mask is not None
            else "rows that differ mean forward mixes rows (batch statistics, reshapes)",
        )


def _nonfinite_rows(batched: torch.Tensor) -> list[str]:
    """``row i: n NaN, m Inf (first at position p)`` for each row with a non-finite value."""
    __tracebackhide__ = hide_frame
    if not batched.is_floating_point():
        return []
    found = []
    for i, row in enumerate(batched):
        bad = ~torch.isfinite(row)
        if bad.any():
            at = tuple(int(x) for x in bad.nonzero()[0].tolist()) if row.dim() else ()
            found.append(
                f"row {i}: {int(torch.isnan(row).sum())} NaN, {int(torch.isinf(row).sum())} "
                f"Inf of {row.numel()} values" + (f" (first at {at})" if at else "")
            )
    return found


def _row(value: Any, i: int, keep: torch.Tensor | None, rows: int, length: int | None) -> Any:
    __tracebackhide__ = hide_frame
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] != rows:
            return value
        one = value[i : i + 1]
        if keep is not None and one.dim() >= 2 and one.shape[1] == length:
            one = one[:, keep.to(one.device)]
        return one
    if isinstance(value, Mapping):
        return {k: _row(v, i, keep, rows, length) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_row(v, i, keep, rows, length) for v in value)
    return value


def assert_equivalent(
    model: nn.Module,
    reference: nn.Module,
    inputs: Any,
    *,
    output: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
) -> None:
    """Two models give the same outputs on ``inputs`` within dtype-aware tolerances (eval mode).

    For a wrapper and the model it wraps, compiled vs eager, a refactor against the code before
    it, a fused kernel against the plain one. Every output the two share by name is compared
    (or only ``output``); float32 tolerance rtol=1e-4, atol=1e-5 (same device, different kernels:
    the batch tolerance). The message gives the max absolute and relative difference and where
    (the index: batch row, position, ...). A wrapper whose position ids start at 1, or that
    drops the attention mask, fails here where batch invariance passes. Deterministic given
    ``seed`` (both run under it). On a failure it reruns both with forward hooks on the modules
    of the same name (a wrapper's ``model.`` prefix allowed) and names the first module that
    gives a different output from the same inputs (path, max abs/rel difference), with the likely
    cause for its kind (an embedding: position ids; a norm: variance or eps; attention: mask or
    key/value head order); where no module names match, the parameters of the same name that
    differ.

    >>> assert_equivalent(MyWrapper(model), model, batch)  # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    name = "assert_equivalent"
    seed = _seed(seed)
    modes = (model.training, reference.training)
    model.eval()
    reference.eval()
    try:
        got = _detached(_forward(model, inputs, seed))
        want = _detached(_forward(reference, inputs, seed))
    finally:
        model.train(modes[0])
        reference.train(modes[1])
    shared = [k for k in want if k in got]
    if output is None and not shared:
        raise CheckFailed(
            name,
            "the two models share no output name",
            expected=f"outputs {', '.join(want)}",
            actual=f"outputs {', '.join(got)}",
            seed=seed,
        )
    if output is None and "logits" in shared:
        shared = ["logits", *[k for k in shared if k != "logits"]]
    keys = [output] if output is not None else shared
    try:
        _require_close(
            name, want, got, output if output is not None else None, "batch", rtol, atol, seed,
            what="the model and the reference",
        )  # fmt: skip
    except CheckFailed as failed:
        __tracebackhide__ = hide_frame
        rel = []
        for key in keys:
            a, b = got[key].double().cpu(), want[key].double().cpu()
            if a.shape == b.shape and a.is_floating_point():
                rel.append(f"{key}: max relative |Δ| = "
                           f"{((a - b).abs() / b.abs().clamp_min(1e-12)).max():.3g}")  # fmt: skip
        where = _first_divergence(model, reference, inputs, seed, rtol, atol)
        raise failed.explained(
            where + "\nthe index is (batch row, position, ...)",
            check=name,
            difference=f"{failed.difference}; " + "; ".join(rel),
        ) from None


# likely causes by the kind of the first module that diverges (its class name, lower case)
_CAUSES = (
    (("embedding",), "the embeddings differ: shifted position ids (or ones counting the "
     "padding), token type ids, or a different embedding table"),
    (("layernorm", "rmsnorm", "norm"), "a normalisation differs: biased vs unbiased variance, "
     "eps, or a float32 upcast"),
    (("attention", "attn", "sdpa"), "attention differs: the attention mask (dropped, inverted), "
     "the scaling, or key/value heads repeated in a different order"),
    (("mlp", "linear", "conv", "ffn", "feedforward"), "a projection differs: its weights "
     "(transposed, not loaded) or its activation"),
)  # fmt: skip


def _calls(model: nn.Module, inputs: Any, seed: int) -> list[tuple[str, list[Any], torch.Tensor]]:
    """(module name, its tensor inputs, its first floating output) in the order forward
    finished them; the root module is left out (it is what the check compares already)."""
    __tracebackhide__ = hide_frame
    seen: list[tuple[str, list[Any], torch.Tensor]] = []
    hooks = []
    for module_name, module in model.named_modules():
        if not module_name:
            continue

        def hook(
            _: nn.Module, args: Any, kwargs: Any, out: Any, module_name: str = module_name
        ) -> None:
            tensors = [t for t in _named_outputs(out).values() if t.is_floating_point()]
            if tensors:
                given = [t.detach() for t in tree_flatten((args, kwargs))[0]
                         if isinstance(t, torch.Tensor)]  # fmt: skip
                seen.append((module_name, given, tensors[0].detach()))

        hooks.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        _forward(model, inputs, seed)
    finally:
        for handle in hooks:
            handle.remove()
    return seen


def _close(x: torch.Tensor, y: torch.Tensor, rtol: float | None, atol: float | None) -> bool:
    __tracebackhide__ = hide_frame
    if x.shape != y.shape:
        return False
    if not x.is_floating_point():
        return torch.equal(x.cpu(), y.cpu())
    r, a = _tol(y.dtype, "batch", rtol, atol)
    return torch.allclose(x.double().cpu(), y.double().cpu(), rtol=r, atol=a, equal_nan=True)


def _first_divergence(
    model: nn.Module,
    reference: nn.Module,
    inputs: Any,
    seed: int,
    rtol: float | None,
    atol: float | None,
) -> str:
    """Where the two models part, measured with forward hooks on modules of the same name (a
    wrapper's ``model.`` prefix allowed): the first module, in the model's execution order, that
    gets the same inputs as the reference's and gives a different output (the bug is inside
    it); else the first whose output differs (it is given different inputs: the bug is in the
    code that calls it). Where no module names match: the parameters of the same name that
    differ."""
    __tracebackhide__ = hide_frame
    modes = (model.training, reference.training)
    model.eval()
    reference.eval()
    try:
        mine = _calls(model, inputs, seed)
        theirs: dict[str, tuple[list[Any], torch.Tensor]] = {}
        for key, given, out in _calls(reference, inputs, seed):
            theirs.setdefault(key, (given, out))
    finally:
        model.train(modes[0])
        reference.train(modes[1])
    matched = 0
    fed_differently = None
    done: set[str] = set()
    for key, given, out in mine:
        other = _same_name(key, theirs)
        if key in done or other is None:
            continue
        done.add(key)
        matched += 1
        their_given, their_out = theirs[other]
        if _close(out, their_out, rtol, atol):
            continue
        same_inputs = len(given) == len(their_given) and all(
            _close(g, t, rtol, atol) for g, t in zip(given, their_given, strict=True)
        )
        kind = type(model.get_submodule(key)).__name__
        if out.shape == their_out.shape:
            x, y = out.double().cpu(), their_out.double().cpu()
            delta = (x - y).abs().nan_to_num(nan=float("inf"))
            size = (
                f"max |Δ| = {delta.max().item():.3g}, max relative |Δ| = "
                f"{(delta / y.abs().clamp_min(1e-12)).max().item():.3g}"
            )
        else:
            size = f"shape {tuple(out.shape)} vs {tuple(their_out.shape)}"
        cause = next(
            (text for words, text in _CAUSES if any(w in kind.lower() for w in words)),
            "the code of this module differs from the reference's",
        )
        if same_inputs:
            return (
                f"first diverging module: {key} ({kind}): {size}, on the same inputs as the "
                f"reference's {other}; every module before it agrees\nlikely cause: {cause}"
            )
        if fed_differently is None:
            fed_differently = (
                f"first diverging module: {key} ({kind}): {size}; its inputs already differ "
                "(no module computes differently from the same inputs): the code that calls it "
                f"passes something else\nlikely cause: {cause}"
            )
    if fed_differently is not None:
        return fed_differently
    if matched:
        return (
            f"the {matched} modules of the same name agree: the difference is in code outside "
            "them (the top-level forward: masks, position ids, the head's input)"
        )
    params = dict(reference.named_parameters())
    differ = []
    for key, param in model.named_parameters():
        other = _same_name(key, params)
        if (
            other is not None
            and params[other].shape == param.shape
            and not torch.equal(params[other].detach().cpu(), param.detach().cpu())
        ):
            differ.append(key)
    if differ:
        return (
            "the module structures differ (no module name in common); parameters of the same "
            f"name with different values: {_listing(differ)}"
        )
    return (
        "the module structures differ (no module name in common) and no parameter of the "
        "same name differs: compare the forward code"
    )


def _same_name(key: str, names: Mapping[str, Any]) -> str | None:
    """``key`` in ``names``, or the longest name that ``key`` ends with (``model.`` prefix of a
    wrapper), or the name that ends with ``key`` (the reference is the wrapper)."""
    __tracebackhide__ = hide_frame
    if key in names:
        return key
    tails = [n for n in names if key.endswith("." + n) or n.endswith("." + key)]
    return max(tails, key=len) if tails else None
