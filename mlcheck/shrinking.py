"""Shrink a transformers config to a tiny model of the same architecture.

A shrunk model keeps what makes the architecture what it is (grouped-query attention, mixture of
experts, encoder-decoder, nested text/vision towers, rotary head dims) and drops what only makes it
big (layers, width, experts, image size), so a forward pass takes milliseconds on a CPU.

The rules work on attribute *names*, not on model families: every config that uses the common
names (``num_hidden_layers``, ``n_layer``, ``d_model``, ``num_key_value_heads``, ...) is shrunk,
including families this module has never heard of. Attributes it does not recognise are kept.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["shrink"]

# Raw attribute names (as stored, not ``attribute_map`` aliases), grouped by meaning.
_LAYERS = (
    "num_hidden_layers",
    "n_layer",
    "n_layers",
    "num_layers",
    "num_decoder_layers",
    "num_encoder_layers",
    "encoder_layers",
    "decoder_layers",
)
_HIDDEN = ("hidden_size", "n_embd", "dim", "d_model", "embed_dim")
_HEADS = (
    "num_attention_heads",
    "n_head",
    "n_heads",
    "num_heads",
    "encoder_attention_heads",
    "decoder_attention_heads",
)
_KV_HEADS = ("num_key_value_heads", "num_kv_heads")
_HEAD_DIM = ("head_dim", "d_kv")
# Feed-forward widths: scaled with the hidden size, keeping the original ratio.
_INTERMEDIATE = (
    "intermediate_size",
    "n_inner",
    "hidden_dim",
    "d_ff",
    "ffn_dim",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
)
# Widths that may not exceed the hidden size (projections, factorised embeddings).
_AT_MOST_HIDDEN = ("projection_dim", "embedding_size", "pooler_output_size", "word_embed_proj_dim")
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_EXPERTS_PER_TOKEN = ("num_experts_per_tok", "moe_top_k", "num_selected_experts")
_POSITIONS = ("max_position_embeddings", "n_positions", "n_ctx")


def shrink(
    config: PretrainedConfig,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    experts: int = 4,
    vocab: int | None = None,
    max_positions: int = 512,
    image_size: int = 32,
    patch_size: int = 8,
) -> PretrainedConfig:
    """Return a new, tiny copy of ``config`` with the same architecture; ``config`` is unchanged.

    - ``layers``, ``hidden``, ``heads``: upper bounds (a config already smaller keeps its value);
      ``hidden`` is rounded up so every head count divides it with an even head dimension (rotary
      embeddings need one). ``head_dim``/``d_kv`` are set to ``hidden // heads``.
    - Grouped-query attention stays grouped: ``num_key_value_heads`` stays below the number of
      heads and divides it (``kv_heads`` picks the value; by default at most 2).
    - Mixture of experts stays MoE: ``experts`` experts (at least 2), and at most half of them
      routed per token, so routing stays sparse.
    - Feed-forward widths keep their ratio to the hidden size unless ``intermediate`` is given.
    - ``vocab=None`` keeps the vocabulary, so the real tokenizer's ids stay valid; a smaller
      ``vocab`` is raised to cover every ``*_token_id`` (pad, bos, eos, ...).
    - Learned position tables are capped at ``max_positions``; rotary models with scaled rope
      (which reads ``max_position_embeddings``) keep theirs.
    - Vision configs get ``image_size`` images cut into ``patch_size`` patches.
    - Nested configs (CLIP ``text_config``/``vision_config``, encoder-decoder ``encoder``/
      ``decoder``, ...) are shrunk with the same arguments.

    >>> from transformers import LlamaConfig
    >>> tiny = shrink(LlamaConfig(num_attention_heads=32, num_key_value_heads=8))
    >>> tiny.num_hidden_layers, tiny.hidden_size, tiny.num_attention_heads, tiny.num_key_value_heads
    (2, 64, 4, 2)
    """
    for name, value in (("layers", layers), ("hidden", hidden), ("heads", heads)):
        if value < 1:
            raise UsageError(f"shrink(): {name} must be >= 1, got {value}")
    new = copy.deepcopy(config)
    _shrink_in_place(
        new,
        _Target(
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_heads=kv_heads,
            intermediate=intermediate,
            experts=experts,
            vocab=vocab,
            max_positions=max_positions,
            image_size=image_size,
            patch_size=patch_size,
        ),
    )
    validate = getattr(new, "validate", None)
    if callable(validate):  # transformers >= 5 checks cross-field rules here
        validate()
    return new


class _Target:
    """The arguments of :func:`shrink`, passed down to nested configs unchanged."""

    def __init__(self, **values: Any) -> None:
        self.layers: int = values["layers"]
        self.hidden: int = values["hidden"]
        self.heads: int = values["heads"]
        self.kv_heads: int | None = values["kv_heads"]
        self.intermediate: int | None = values["intermediate"]
        self.experts: int = values["experts"]
        self.vocab: int | None = values["vocab"]
        self.max_positions: int = values["max_positions"]
        self.image_size: int = values["image_size"]
        self.patch_size: int = values["patch_size"]


def _ints(config: Any, names: tuple[str, ...]) -> dict[str, int]:
    """The attributes of ``config`` among ``names`` that hold an int (None and lists skipped)."""
    found = {}
    for name in names:
        value = vars(config).get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            found[name] = value
    return found


def _shrink_in_place(config: Any, target: _Target) -> None:
    from transformers import PretrainedConfig

    for value in list(vars(config).values()):
        if isinstance(value, PretrainedConfig):
            _shrink_in_place(value, target)

    old_layers = _ints(config, _LAYERS)
    old_hidden = _ints(config, _HIDDEN)
    old_heads = _ints(config, _HEADS)
    old_kv = _ints(config, _KV_HEADS)
    hidden_before = next(iter(old_hidden.values()), None)

    # Layers; per-layer lists (``layer_types``) are cut to match.
    reference_layers = old_layers.get("num_hidden_layers", next(iter(old_layers.values()), None))
    for name, value in old_layers.items():
        setattr(config, name, min(value, target.layers))
    new_layers = min(reference_layers, target.layers) if reference_layers else None
    if reference_layers and new_layers is not None:
        for name, value in list(vars(config).items()):
            if (
                isinstance(value, list)
                and len(value) == reference_layers
                and name != "architectures"
            ):
                setattr(config, name, value[:new_layers])
        _shrink_layer_indices(config, new_layers)

    # Heads, then a hidden size they all divide with an even head dimension.
    new_heads = {name: min(value, target.heads) for name, value in old_heads.items()}
    grouped = _grouped_kv(old_heads, old_kv)
    if grouped and new_heads.get(grouped[0], 0) < 2:
        new_heads[grouped[0]] = 2  # one head cannot be grouped
    step = 2 * math.lcm(*new_heads.values()) if new_heads else 1
    new_hidden = max(step, math.ceil(target.hidden / step) * step)
    for name, value in new_heads.items():
        setattr(config, name, value)
    if old_hidden:
        for name, value in old_hidden.items():
            # a config already narrower keeps its width when its heads still divide it evenly
            fits = all(value % (2 * h) == 0 for h in new_heads.values())
            setattr(config, name, value if value <= new_hidden and fits else new_hidden)
        new_hidden = next(iter(_ints(config, _HIDDEN).values()))

    # Grouped-query attention: fewer key/value heads than heads, dividing them.
    for name, kv in old_kv.items():
        if grouped and name == grouped[1]:
            q = new_heads[grouped[0]]
            kv_new = target.kv_heads if target.kv_heads is not None else min(kv, max(1, q // 2))
            kv_new = max(1, min(kv_new, q - 1))
            while q % kv_new:
                kv_new -= 1
            setattr(config, name, kv_new)
        elif new_heads:
            setattr(config, name, min(kv, next(iter(new_heads.values()))))

    if new_heads and old_hidden:
        head_dim = new_hidden // next(iter(new_heads.values()))
        for name in _ints(config, _HEAD_DIM):
            setattr(config, name, head_dim)

    if hidden_before:
        _shrink_widths(config, hidden_before, new_hidden, target)
    else:  # a composite (CLIP) projects its shrunk towers into a shared space: shrink that too
        for name, value in _ints(config, _AT_MOST_HIDDEN).items():
            setattr(config, name, min(value, target.hidden))
    _shrink_experts(config, target)
    _shrink_vocab(config, target)
    _shrink_positions(config, target)
    _shrink_images(config, target)


def _grouped_kv(heads: dict[str, int], kv: dict[str, int]) -> tuple[str, str] | None:
    """(heads name, kv-heads name) when the config uses grouped-query attention, else None."""
    for kv_name, kv_value in kv.items():
        for head_name, head_value in heads.items():
            if kv_value < head_value:
                return head_name, kv_name
    return None


def _shrink_layer_indices(config: Any, layers: int) -> None:
    """Keep layer-index settings inside the new depth (Qwen2 windows, dense-then-MoE layers)."""
    for name in ("max_window_layers", "first_k_dense_replace", "decoder_sparse_step"):
        value = vars(config).get(name)
        if isinstance(value, int) and value > layers:
            # first_k_dense_replace == layers would leave no MoE layer at all
            setattr(config, name, max(0, layers - 1) if name == "first_k_dense_replace" else layers)
    only = vars(config).get("mlp_only_layers")
    if isinstance(only, list):
        config.mlp_only_layers = [i for i in only if i < layers]


def _shrink_widths(config: Any, hidden_before: int, hidden_after: int, target: _Target) -> None:
    for name, value in _ints(config, _INTERMEDIATE).items():
        if target.intermediate is not None:
            new = target.intermediate
        else:
            new = max(8, round(value * hidden_after / hidden_before))
        setattr(config, name, min(value, new))
    for name, value in _ints(config, _AT_MOST_HIDDEN).items():
        setattr(config, name, min(value, hidden_after))


def _shrink_experts(config: Any, target: _Target) -> None:
    counts = _ints(config, _EXPERTS)
    new_count = None
    for name, value in counts.items():
        new_count = max(2, min(value, target.experts)) if value >= 2 else value
        setattr(config, name, new_count)
    if new_count is None:
        return
    for name, value in _ints(config, _EXPERTS_PER_TOKEN).items():
        # at most half the experts per token: routing must stay a choice
        setattr(config, name, max(1, min(value, new_count // 2)))
    # DeepSeek-style group routing: one group holding every expert
    for name in ("n_group", "topk_group"):
        if isinstance(vars(config).get(name), int):
            setattr(config, name, 1)


def _special_token_ids(config: Any) -> list[int]:
    ids: list[int] = []
    for name, value in vars(config).items():
        if not name.endswith("_token_id"):
            continue
        values = value if isinstance(value, list) else [value]
        ids.extend(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return ids


def _shrink_vocab(config: Any, target: _Target) -> None:
    vocab = vars(config).get("vocab_size")
    if target.vocab is None or not isinstance(vocab, int):
        return
    needed = max(_special_token_ids(config), default=-1) + 1
    config.vocab_size = min(vocab, max(target.vocab, needed))


def _uses_scaled_rope(config: Any) -> bool:
    """Scaled rope variants (llama3, yarn, longrope, dynamic) read max_position_embeddings."""
    for name in ("rope_parameters", "rope_scaling"):
        params = vars(config).get(name)
        if isinstance(params, dict):
            kind = params.get("rope_type", params.get("type", "default"))
            if kind not in (None, "default") or "original_max_position_embeddings" in params:
                return True
    return False


def _shrink_positions(config: Any, target: _Target) -> None:
    if _uses_scaled_rope(config):
        return
    for name, value in _ints(config, _POSITIONS).items():
        setattr(config, name, min(value, target.max_positions))


def _shrink_images(config: Any, target: _Target) -> None:
    image = vars(config).get("image_size")
    patch = vars(config).get("patch_size")
    if not isinstance(image, int | list | tuple) or not isinstance(patch, int | list | tuple):
        return

    def smaller(value: Any, limit: int) -> Any:
        if isinstance(value, int):
            return min(value, limit)
        return type(value)(min(v, limit) for v in value)

    new_image = smaller(image, target.image_size)
    new_patch = smaller(patch, max(1, min(target.patch_size, target.image_size)))
    config.image_size = new_image
    config.patch_size = new_patch
    if vars(config).get("encoder_stride") == patch:  # ViT's masked-image head upsamples by it
        config.encoder_stride = new_patch
