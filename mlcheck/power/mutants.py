"""The ML mutants: realistic bugs, each a small documented patch of a torch or transformers entry
point, applied inside the test process only (``mlcheck.power.activate``), never to files.

Each patch calls ``hit()`` where it *changes behaviour* (dropout that would have dropped, a
causal mask that would have masked, a padded batch whose padding is now attended): a mutant with
no hit during a run was **not reached** by the selected tests (no dropout in training, no
generation), which says something else than "survived".

>>> sorted(MUTANTS)[:3]
['attention-mask-ignored', 'causal-mask-dropped', 'dropout-off-in-train']
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Hit = Callable[[], None]


class Patcher:
    """Sets attributes and remembers the originals, so ``undo`` puts everything back."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def set(self, owner: Any, name: str, value: Any) -> None:
        old = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        setattr(owner, name, value)
        self._undo.append(lambda: setattr(owner, name, old))

    def on_undo(self, action: Callable[[], None]) -> None:
        self._undo.append(action)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


@dataclass(frozen=True)
class Mutant:
    """One ML bug: how it is injected and which check would catch it."""

    name: str
    bug: str  # what the mutant does, one line
    check: str  # the mlcheck check that catches it
    example: str  # the call to add, e.g. "assert_causal(model, inputs)"
    missing: str  # what a suite lacks when it survives: "no test checks causality"
    unreached: str  # what a suite lacks when it is not reached
    apply: Callable[[Hit, Patcher], None]


# -- torch.nn.functional argument handling -------------------------------------------------------

_SDPA_PARAMS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")


def _sdpa_kwargs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``scaled_dot_product_attention``'s arguments by name (it is a builtin: no signature)."""
    named = dict(zip(_SDPA_PARAMS, args, strict=False))
    named.update(kwargs)
    return named


def _wrap_sdpa(patcher: Patcher, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    """Patch ``F.scaled_dot_product_attention``; ``change`` returns new arguments (or None)."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def sdpa(*args: Any, **kwargs: Any) -> Any:
        named = _sdpa_kwargs(args, kwargs)
        changed = change(named)
        return original(**(changed if changed is not None else named))

    patcher.set(F, "scaled_dot_product_attention", sdpa)


def _wrap_bound(
    patcher: Patcher,
    owner: Any,
    name: str,
    change: Callable[[inspect.BoundArguments], bool],
    after: Callable[[Any, inspect.BoundArguments], Any] | None = None,
) -> None:
    """Patch a Python function; ``change`` edits its bound arguments in place."""
    original = getattr(owner, name)
    signature = inspect.signature(original)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        changed = change(bound)
        result = original(*bound.args, **bound.kwargs)
        return after(result, bound) if after is not None and changed else result

    patcher.set(owner, name, wrapper)


# -- the mutants ---------------------------------------------------------------------------------

_DROPOUTS = (
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
)


def _dropout_off_in_train(hit: Hit, patcher: Patcher) -> None:
    # nn.Dropout* modules call F.dropout* by attribute, and so does transformers' eager
    # attention; sdpa attention passes dropout_p to the kernel.
    import torch.nn.functional as F

    for name in _DROPOUTS:
        original = getattr(F, name)
        signature = inspect.signature(original)  # alpha_dropout's training defaults to False

        def identity(*args: Any, _f: Any = original, _sig: Any = signature, **kwargs: Any) -> Any:
            bound = _sig.bind(*args, **kwargs)
            bound.apply_defaults()
            if bound.arguments["training"] and bound.arguments["p"] > 0:
                hit()
                return bound.arguments["input"]
            return _f(*args, **kwargs)

        patcher.set(F, name, functools.wraps(original)(identity))

    def no_attention_dropout(named: dict[str, Any]) -> dict[str, Any] | None:
        if named.get("dropout_p", 0.0) > 0:
            hit()
            return {**named, "dropout_p": 0.0}
        return None

    _wrap_sdpa(patcher, no_attention_dropout)


def _eval_stuck(hit: Hit, patcher: Patcher) -> None:
    from torch import nn

    original = nn.Module.train

    def train(self: nn.Module, mode: bool = True) -> nn.Module:
        if mode:
            hit()
        return original(self, False)

    patcher.set(nn.Module, "train", train)


def _attention_mask_ignored(hit: Hit, patcher: Patcher) -> None:
    # transformers builds every attention mask (eager, sdpa, flex; causal or not) from
    # masking_utils.padding_mask_function, looked up at call time; torch's own attention
    # module takes key_padding_mask.
    import torch
    from torch import nn
    from transformers import masking_utils

    original = masking_utils.padding_mask_function

    def padding_ignored(padding_mask: torch.Tensor) -> Any:
        if not bool(padding_mask.all()):
            hit()
        return original(torch.ones_like(padding_mask, dtype=torch.bool))

    patcher.set(masking_utils, "padding_mask_function", padding_ignored)

    def drop_key_padding(bound: inspect.BoundArguments) -> bool:
        mask = bound.arguments.get("key_padding_mask")
        if mask is not None:
            hit()
            bound.arguments["key_padding_mask"] = None
        return False

    _wrap_bound(patcher, nn.MultiheadAttention, "forward", drop_key_padding)


def _causal_mask_dropped(hit: Hit, patcher: Patcher) -> None:
    import torch
    from torch import nn
    from transformers import masking_utils

    def everything_visible(batch_idx: Any, head_idx: Any, q_idx: Any, kv_idx: Any) -> Any:
        hit()
        return (kv_idx <= q_idx) | (kv_idx > q_idx)  # True, broadcast like the causal one

    patcher.set(masking_utils, "causal_mask_function", everything_visible)

    def not_causal(named: dict[str, Any]) -> dict[str, Any] | None:
        if named.get("is_causal"):
            hit()
            return {**named, "is_causal": False}
        return None

    _wrap_sdpa(patcher, not_causal)

    def no_subsequent_mask(sz: int, device: Any = None, dtype: Any = None) -> torch.Tensor:
        hit()
        return torch.zeros(sz, sz, device=device, dtype=dtype or torch.float32)

    patcher.set(nn.Transformer, "generate_square_subsequent_mask", staticmethod(no_subsequent_mask))


def _labels_unshifted(hit: Hit, patcher: Patcher) -> None:
    from transformers.loss import loss_utils

    original: Any = loss_utils.LOSS_MAPPING["ForCausalLM"]

    def unshifted(logits: Any, labels: Any, *args: Any, shift_labels: Any = None, **kw: Any) -> Any:
        if shift_labels is None:
            hit()
            shift_labels = labels.contiguous()  # position t is scored against label t
        return original(logits, labels, *args, shift_labels=shift_labels, **kw)

    mapping = loss_utils.LOSS_MAPPING
    mapping["ForCausalLM"] = unshifted
    patcher.on_undo(lambda: mapping.__setitem__("ForCausalLM", original))


_LOSSES = (
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
)


def _loss_detached(hit: Hit, patcher: Patcher) -> None:
    # Losses go through torch.nn.functional (the nn.*Loss modules and transformers' loss
    # functions call it by attribute). The loss still accepts backward(), so a training loop
    # runs; only no parameter gets a gradient: the subtle form of the bug.
    import torch.nn.functional as F

    for name in _LOSSES:
        original = getattr(F, name)

        def detached(*args: Any, _f: Any = original, **kwargs: Any) -> Any:
            loss = _f(*args, **kwargs)
            if loss.requires_grad:
                hit()
                return loss.detach().requires_grad_()
            return loss

        patcher.set(F, name, functools.wraps(original)(detached))


def _optimizer_noop(hit: Hit, patcher: Patcher) -> None:
    # Global step hooks see every torch.optim.Optimizer (and subclasses such as transformers'):
    # the parameters are put back after each step, as with lr=0.
    import torch
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    saved: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def before(opt: Any, args: Any, kwargs: Any) -> None:
        hit()
        params = [p for group in opt.param_groups for p in group["params"]]
        saved[id(opt)] = [(p, p.detach().clone()) for p in params]

    def after(opt: Any, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for param, old in saved.pop(id(opt), []):
                param.copy_(old)

    for handle in (
        register_optimizer_step_pre_hook(before),
        register_optimizer_step_post_hook(after),
    ):
        patcher.on_undo(handle.remove)


def _reduction_sum(hit: Hit, patcher: Patcher) -> None:
    import torch.nn.functional as F

    def to_sum(bound: inspect.BoundArguments) -> bool:
        if bound.arguments.get("reduction") == "mean" and bound.arguments.get("reduce") is None:
            hit()
            bound.arguments["reduction"] = "sum"
        return False

    for name in ("cross_entropy", "nll_loss"):
        _wrap_bound(patcher, F, name, to_sum)


def _softmax_wrong_dim(hit: Hit, patcher: Patcher) -> None:
    # Eager attention normalises [batch, heads, query, key] scores with F.softmax(dim=-1); sdpa
    # does it inside the kernel, so sdpa is replaced by the textbook formula with the bug.
    import torch
    import torch.nn.functional as F

    def wrong_dim(bound: inspect.BoundArguments) -> bool:
        tensor, dim = bound.arguments["input"], bound.arguments.get("dim")
        if getattr(tensor, "dim", lambda: 0)() == 4 and dim in (-1, 3):
            hit()
            bound.arguments["dim"] = -2
        return False

    _wrap_bound(patcher, F, "softmax", wrong_dim)
    original_sdpa = F.scaled_dot_product_attention

    def sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
        named = _sdpa_kwargs(args, kwargs)
        query, key, value = named["query"], named["key"], named["value"]
        if query.dim() != 4:
            return original_sdpa(**named)
        hit()
        if named.get("enable_gqa") and key.shape[-3] != query.shape[-3]:
            repeat = query.shape[-3] // key.shape[-3]
            key = key.repeat_interleave(repeat, -3)
            value = value.repeat_interleave(repeat, -3)
        scale = named.get("scale") or 1 / math.sqrt(query.shape[-1])
        scores = (query @ key.transpose(-2, -1)) * scale
        length, kv_length = query.shape[-2], key.shape[-2]
        if named.get("is_causal"):
            allowed = torch.ones(length, kv_length, dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~allowed, float("-inf"))
        mask = named.get("attn_mask")
        if mask is not None:
            scores = (
                scores.masked_fill(~mask, float("-inf"))
                if mask.dtype == torch.bool
                else (scores + mask)
            )
        weights = torch.nan_to_num(torch.softmax(scores, dim=-2), nan=0.0)  # the bug
        if named.get("dropout_p", 0.0) > 0:
            weights = F.dropout(weights, named["dropout_p"], training=True)
        return weights @ value

    patcher.set(F, "scaled_dot_product_attention", sdpa)


def _weights_not_loaded(hit: Hit, patcher: Patcher) -> None:
    # from_pretrained (also under AutoModel*.from_pretrained and models.real) returns the same
    # architecture, freshly initialised: the checkpoint was silently not loaded.
    import torch
    from transformers import PreTrainedModel

    original = PreTrainedModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def from_pretrained(cls: type[PreTrainedModel], *args: Any, **kwargs: Any) -> Any:
        loaded = original(cls, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        hit()
        fresh = type(model)(copy.deepcopy(model.config))
        with torch.no_grad():
            own = model.state_dict()
            for name, tensor in fresh.state_dict().items():
                if name in own and own[name].shape == tensor.shape:
                    own[name].copy_(tensor)
        return loaded

    patcher.set(PreTrainedModel, "from_pretrained", classmethod(from_pretrained))


def _labels_permuted(hit: Hit, patcher: Patcher) -> None:
    # A config with named labels gets them rotated by one: index 0 means what index 1 meant.
    # Patched where configs are made (config.json, or PretrainedConfig(id2label=...) in code)
    # and where models are built (labels set after construction, e.g. config overrides).
    # Default names (LABEL_0, ...) mean nothing: untouched. Each config is rotated once.
    import weakref

    from transformers import PretrainedConfig, PreTrainedModel

    rotated: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def rotate(config: Any) -> None:
        id2label = dict(getattr(config, "id2label", None) or {})
        names = [id2label[k] for k in sorted(id2label)]
        if rotated.get(id(config)) is config or len(names) < 2:
            return
        if names == [f"LABEL_{i}" for i in range(len(names))]:
            return
        hit()
        new = dict(zip(sorted(id2label), names[1:] + names[:1], strict=True))
        config.id2label = new
        config.label2id = {label: index for index, label in new.items()}
        rotated[id(config)] = config

    original_config = PretrainedConfig.__post_init__

    def config_post_init(self: Any, **kwargs: Any) -> None:
        original_config(self, **kwargs)
        rotate(self)

    patcher.set(PretrainedConfig, "__post_init__", config_post_init)
    original_model = PreTrainedModel.post_init

    def model_post_init(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_model(self, *args, **kwargs)
        rotate(self.config)
        return result

    patcher.set(PreTrainedModel, "post_init", model_post_init)


def _kv_cache_stale(hit: Hit, patcher: Patcher) -> None:
    # After the prompt, each decoding step stores (and attends to) the last cached key/value
    # again instead of the new token's: the cache is not refreshed. Shapes stay right, so
    # generation runs; only its numbers are wrong.
    from transformers.cache_utils import DynamicLayer

    original = DynamicLayer.update

    def update(self: Any, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        keys = getattr(self, "keys", None)
        if getattr(self, "is_initialized", False) and keys is not None and keys.numel():
            hit()
            key_states = keys[..., -1:, :].expand_as(key_states).clone()
            value_states = self.values[..., -1:, :].expand_as(value_states).clone()
        return original(self, key_states, value_states, *args, **kwargs)

    patcher.set(DynamicLayer, "update", update)


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "dropout-off-in-train",
            "dropout (modules, functional and in attention) is the identity in training",
            "assert_train_mode",
            "assert_train_mode(model, inputs)",
            "no test checks that training mode turns dropout on",
            "no test ran a model with dropout in training mode",
            _dropout_off_in_train,
        ),
        Mutant(
            "eval-stuck",
            "Module.train() leaves the modules in eval mode",
            "assert_train_mode",
            "assert_train_mode(model, inputs)",
            "no test checks that train() puts the model in training mode",
            "no test called train()",
            _eval_stuck,
        ),
        Mutant(
            "attention-mask-ignored",
            "padding masks are dropped in attention (padded tokens are attended)",
            "assert_batch_invariant",
            "assert_batch_invariant(model, inputs)",
            "no test compares a padded batch with its rows one by one",
            "no test ran attention on a padded batch",
            _attention_mask_ignored,
        ),
        Mutant(
            "causal-mask-dropped",
            "attention is not causal (future tokens are visible)",
            "assert_causal",
            "assert_causal(model, inputs)",
            "no test checks causality",
            "no test ran causal attention",
            _causal_mask_dropped,
        ),
        Mutant(
            "labels-unshifted",
            "the causal-LM loss compares position t with label t (no shift)",
            "assert_loss_matches",
            'assert_loss_matches(model, batch, reference="causal-lm")',
            "no test compares the causal-LM loss with a reference",
            "no test computed a causal-LM loss from labels",
            _labels_unshifted,
        ),
        Mutant(
            "loss-detached",
            "the loss carries no gradient to the parameters (backward still runs)",
            "assert_loss_decreases",
            "assert_loss_decreases(model, batch)",
            "no test trains and checks that the loss goes down",
            "no test computed a loss with gradients",
            _loss_detached,
        ),
        Mutant(
            "optimizer-noop",
            "torch.optim steps change nothing (as with lr 0)",
            "assert_params_update",
            "assert_params_update(model, batch)",
            "no test checks that an optimizer step moves the parameters",
            "no test took an optimizer step",
            _optimizer_noop,
        ),
        Mutant(
            "reduction-sum",
            "cross-entropy sums over the batch instead of averaging",
            "assert_initial_loss",
            "assert_initial_loss(model, batch)",
            "no test checks the loss value at initialisation",
            "no test computed a mean cross-entropy",
            _reduction_sum,
        ),
        Mutant(
            "softmax-wrong-dim",
            "attention's softmax normalises over the query axis instead of the keys",
            "assert_batch_invariant, assert_causal, golden",
            # padding adds query rows, which the wrong axis lets leak (encoders and decoders)
            "assert_batch_invariant(model, inputs)",
            "no test checks attention outputs (causality, or golden values)",
            "no test ran attention",
            _softmax_wrong_dim,
        ),
        Mutant(
            "weights-not-loaded",
            "from_pretrained (and models.real) returns a random initialisation",
            "assert_predicts",
            'assert_predicts(model, tokenizer, [{"text": ..., "label": ...}])',
            "no test checks what a loaded model predicts (or a save/load roundtrip)",
            "no test loaded weights with from_pretrained",
            _weights_not_loaded,
        ),
        Mutant(
            "labels-permuted",
            "a classifier's id2label is rotated by one (index 0 means what 1 meant)",
            "assert_labels",
            "assert_labels(model, {0: ..., 1: ...})",
            "no test checks what each class index means",
            "no test built a config with named labels",
            _labels_permuted,
        ),
        Mutant(
            "kv-cache-stale",
            "the KV cache is not refreshed while decoding (the last cached entry repeats)",
            "assert_cache_consistent",
            "assert_cache_consistent(model, inputs)",
            "no test compares cached decoding with a full forward",
            "no test decoded with a KV cache",
            _kv_cache_stale,
        ),
    )
}


def apply(name: str, hit: Hit) -> Patcher:
    """Inject mutant ``name`` into this process; ``hit`` is called where it changes behaviour."""
    patcher = Patcher()
    MUTANTS[name].apply(hit, patcher)
    return patcher


def select(spec: str | None) -> list[Mutant]:
    """``all`` (or None) or a comma-separated list of names, in catalogue order."""
    from ..errors import UsageError

    if spec is None or spec.strip() == "all":
        return list(MUTANTS.values())
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in MUTANTS]
    if unknown or not names:
        raise UsageError(
            f"--mutants: unknown {', '.join(unknown) or '(empty)'}; known: all, "
            + ", ".join(MUTANTS)
        )
    return [m for m in MUTANTS.values() if m.name in names]
