"""Generation: causal models do not see the future, and the KV cache gives the same logits."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckFailed, NothingToCheck, hide_frame
from ._common import _call, _named_outputs, _pick, _seed, _seeded, _tol


def _ids_and_rest(check: str, inputs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    __tracebackhide__ = hide_frame
    if isinstance(inputs, torch.Tensor):
        return inputs, {}
    if isinstance(inputs, Mapping) and "input_ids" in inputs:
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        return inputs["input_ids"], rest
    raise NothingToCheck(f"{check}: pass a dict with `input_ids`, or the ids tensor")


def _vocab(model: nn.Module, ids: torch.Tensor) -> int:
    __tracebackhide__ = hide_frame
    config = getattr(model, "config", None)
    size = getattr(config, "vocab_size", None) or getattr(
        getattr(config, "get_text_config", lambda: None)(), "vocab_size", None
    )
    return int(size) if size else int(ids.max()) + 1


def assert_causal(
    model: nn.Module,
    inputs: Any,
    *,
    output: str | None = None,
    cuts: Sequence[int] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
) -> None:
    """Outputs at positions <= t do not change when the tokens after t change.

    For each cut point t (default: a quarter, half, three quarters of the way, and the
    second-to-last position) the tokens after t are replaced by other random tokens and the
    model run again (eval mode); every output position up to t must be unchanged within the
    float32 batch tolerance (rtol=1e-4, atol=1e-5). A causal mask that is off, or a bidirectional
    layer in a decoder, leaks the future and fails, with the first leaking position and the size
    of the leak. Deterministic given ``seed`` (which draws the replacement tokens).

    >>> assert_causal(models.random("gpt2", task="causal-lm"), ids)  # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    name = "assert_causal"
    seed = _seed(seed)
    ids, rest = _ids_and_rest(name, inputs)
    length = ids.shape[1]
    if length < 2:
        raise NothingToCheck(f"{name}: needs at least 2 tokens per row, got {length}")
    points = sorted({min(max(int(c), 0), length - 2) for c in cuts} if cuts else
                    {length // 4, length // 2, 3 * length // 4, length - 2})  # fmt: skip
    vocab = _vocab(model, ids)
    was_training = model.training
    model.eval()
    leaks: list[tuple[int, int, float, str]] = []  # cut, first position, max |Δ|, detail
    try:
        with _seeded(seed), torch.no_grad():
            out_name, base = _pick(_named_outputs(_call(model, {"input_ids": ids, **rest})), output)
            for cut in points:
                changed = ids.clone()
                tail = changed[:, cut + 1 :]
                # a different token at every position after the cut
                offset = torch.randint(1, max(vocab, 2), tail.shape, device=ids.device)
                changed[:, cut + 1 :] = (tail + offset) % vocab
                _, after = _pick(
                    _named_outputs(_call(model, {"input_ids": changed, **rest})), out_name
                )
                seen, now = base[:, : cut + 1].double(), after[:, : cut + 1].double()
                r, a = _tol(base.dtype, "batch", rtol, atol)
                close = torch.isclose(seen, now, rtol=r, atol=a)
                if not close.all():
                    bad = (~close).reshape(*close.shape[:2], -1).any(-1).any(0)
                    first = int(bad.nonzero()[0])
                    delta = float((seen - now).abs().max())
                    leaks.append((cut, first, delta, f"positions 0..{cut}"))
    finally:
        model.train(was_training)
    if leaks:
        cut, first, delta, _ = min(leaks, key=lambda leak: leak[1])
        raise CheckFailed(
            name,
            f"{out_name!r} at earlier positions changes when later tokens change: the model "
            "sees the future",
            expected="outputs at positions <= t unchanged when tokens after t change",
            actual="\n".join(
                f"    - tokens after {c} changed: position {p} moved by max |Δ| = {d:.3g}"
                for c, p, d, _ in leaks
            ),
            difference=f"first leaking position {first} (tokens after {cut} changed), "
            f"max |Δ| = {max(leak[2] for leak in leaks):.3g}; {len(leaks)} of {len(points)} "
            "cut points leak",
            seed=seed,
            details="the causal mask is off or not applied (is_causal=False, a full attention "
            "mask passed to a decoder, or a bidirectional layer)",
        )


def assert_cache_consistent(
    model: nn.Module,
    inputs: Any,
    *,
    steps: int = 4,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
) -> None:
    """Incremental decoding with the KV cache gives the same next-token logits as no cache.

    Runs the full sequence once without a cache (``use_cache=False``), then the prefix (all but
    the last ``steps`` tokens) into a fresh ``transformers.DynamicCache`` and the remaining tokens
    one at a time, passing the cache back as ``past_key_values`` (the current cache API; models
    that build their own cache class get it from the prefix's output; the keyword is ``cache``
    where the model's forward takes it, as current transformers does, else ``past_key_values``).
    Each step's logits must equal the full forward's at that position within the float32 batch
    tolerance (rtol=1e-4, atol=1e-5: random tiny models attend almost uniformly, so a wrong
    position shifts logits by only ~1e-4; healthy caches agree to ~1e-7; eval mode,
    deterministic). Catches position ids or rotary offsets that
    restart in incremental decoding, masks that ignore the cache, and caches that are not
    updated; the message names the step and position.

    >>> assert_cache_consistent(models.random("meta-llama/Llama-3.1-8B", task="causal-lm"), ids)
    ... # doctest: +SKIP
    """
    __tracebackhide__ = hide_frame
    name = "assert_cache_consistent"
    seed = _seed(seed)
    ids, rest = _ids_and_rest(name, inputs)
    length = ids.shape[1]
    if length <= steps:
        raise NothingToCheck(f"{name}: needs more than steps={steps} tokens per row, got {length}")
    mask = rest.pop("attention_mask", None)
    start = length - steps
    was_training = model.training
    model.eval()
    problems: list[str] = []
    worst = 0.0
    try:
        with _seeded(seed), torch.no_grad():
            full_kwargs = {"input_ids": ids, "use_cache": False, **rest}
            if mask is not None:
                full_kwargs["attention_mask"] = mask
            full = _pick(_named_outputs(model(**full_kwargs)), "logits")[1]
            cache, keyword = _new_cache(model), _cache_keyword(model)
            kwargs: dict[str, Any] = {"input_ids": ids[:, :start], "use_cache": True, **rest}
            if cache is not None:
                kwargs[keyword] = cache
            if mask is not None:
                kwargs["attention_mask"] = mask[:, :start]
            out = model(**kwargs)
            for position in range(start - 1, length):
                logits = out.logits[:, -1]
                r, a = _tol(logits.dtype, "batch", rtol, atol)
                expected = full[:, position]
                if not torch.allclose(logits.double(), expected.double(), rtol=r, atol=a):
                    delta = float((logits.double() - expected.double()).abs().max())
                    worst = max(worst, delta)
                    step = position - start + 1
                    problems.append(
                        f"{'prefix' if step == 0 else f'step {step}'} (next token after position "
                        f"{position}): max |Δ| = {delta:.3g}"
                    )
                if position == length - 1:
                    break
                cache = out.get("cache") or out.get("past_key_values")
                kwargs = {"input_ids": ids[:, position + 1 : position + 2], "use_cache": True}
                kwargs.update({keyword: cache, **rest})
                if mask is not None:
                    kwargs["attention_mask"] = mask[:, : position + 2]
                out = model(**kwargs)
    finally:
        model.train(was_training)
    if problems:
        raise CheckFailed(
            name,
            "decoding with the KV cache gives different logits than a full forward",
            expected="next-token logits with the cache == without it (within tolerance)",
            actual="\n".join(f"    - {p}" for p in problems),
            difference=f"{len(problems)} of {steps + 1} positions differ, max |Δ| = {worst:.3g}"
            + f"; first at {problems[0].split(':')[0]}",
            seed=seed,
            details="position ids (or rotary offsets) that restart at 0 for each new token, an "
            "attention mask that ignores the cached length, or a cache that is not updated",
        )


def _new_cache(model: nn.Module) -> Any:
    """A fresh ``DynamicCache`` for Hugging Face models (None: let the model make its own)."""
    __tracebackhide__ = hide_frame
    config = getattr(model, "config", None)
    if config is None:
        return None
    try:
        from transformers import DynamicCache
    except ImportError:  # pragma: no cover - transformers is a core dependency
        return None
    return DynamicCache(config=config)


def _cache_keyword(model: nn.Module) -> str:
    """``cache`` (transformers 5) or ``past_key_values``: what the model's forward takes; for a
    wrapper taking ``**kwargs``, what the first wrapped module's forward takes."""
    __tracebackhide__ = hide_frame
    for module in model.modules():
        params = inspect.signature(module.forward).parameters
        for keyword in ("cache", "past_key_values"):
            if keyword in params:
                return keyword
    return "past_key_values"
