"""mlcheck.shrink: every family builds a tiny model of the same architecture that runs forward."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import transformers as tf

from mlcheck.shrinking import shrink

IDS = torch.tensor([[5, 6, 7, 8, 9], [9, 8, 7, 6, 5]])
PIXELS = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)


@dataclass(frozen=True)
class Family:
    name: str
    make: Callable[[], Any]  # builds the full-size config
    auto: str  # transformers auto class
    inputs: dict[str, torch.Tensor]
    output: str  # attribute of the model output checked for shape
    shape: Callable[[Any], tuple[int, ...]]  # expected shape from the shrunk config


def _hidden(n: int) -> Callable[[Any], tuple[int, ...]]:
    return lambda c: (2, n, c.hidden_size)


def _vocab(n: int) -> Callable[[Any], tuple[int, ...]]:
    return lambda c: (2, n, c.vocab_size)


TEXT = {"input_ids": IDS, "attention_mask": torch.ones_like(IDS)}
SEQ2SEQ = {"input_ids": IDS, "decoder_input_ids": IDS[:, :4]}

FAMILIES = [
    Family("bert", tf.BertConfig, "AutoModel", TEXT, "last_hidden_state", _hidden(5)),
    Family("roberta", tf.RobertaConfig, "AutoModel", TEXT, "last_hidden_state", _hidden(5)),
    Family("distilbert", tf.DistilBertConfig, "AutoModel", TEXT, "last_hidden_state", _hidden(5)),
    Family("gpt2", tf.GPT2Config, "AutoModelForCausalLM", TEXT, "logits", _vocab(5)),
    Family(
        "llama",
        lambda: tf.LlamaConfig(num_attention_heads=32, num_key_value_heads=8),
        "AutoModelForCausalLM",
        TEXT,
        "logits",
        _vocab(5),
    ),
    Family("mistral", tf.MistralConfig, "AutoModelForCausalLM", TEXT, "logits", _vocab(5)),
    Family(
        "qwen2",
        # Qwen2-7B's shape: 28 heads sharing 4 key/value heads
        lambda: tf.Qwen2Config(
            hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, num_hidden_layers=28
        ),
        "AutoModelForCausalLM",
        TEXT,
        "logits",
        _vocab(5),
    ),
    Family("mixtral", tf.MixtralConfig, "AutoModelForCausalLM", TEXT, "logits", _vocab(5)),
    Family("t5", tf.T5Config, "AutoModelForSeq2SeqLM", SEQ2SEQ, "logits", _vocab(4)),
    Family("bart", tf.BartConfig, "AutoModelForSeq2SeqLM", SEQ2SEQ, "logits", _vocab(4)),
    # 32x32 images in 8x8 patches: 16 patches + [CLS]
    Family(
        "vit", tf.ViTConfig, "AutoModel", {"pixel_values": PIXELS}, "last_hidden_state", _hidden(17)
    ),
    Family(
        "clip",
        tf.CLIPConfig,
        "AutoModel",
        {"input_ids": IDS, "pixel_values": PIXELS},
        "logits_per_image",
        lambda c: (2, 2),
    ),
]


def _build(config: Any, auto: str) -> Any:
    torch.manual_seed(0)
    return getattr(tf, auto).from_config(config).eval()


def _head_counts(config: Any) -> tuple[int, int | None]:
    return config.num_attention_heads, getattr(config, "num_key_value_heads", None)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_shrunk_family_runs_forward(family: Family) -> None:
    full = family.make()
    before = full.to_dict()
    tiny = shrink(full)

    assert full.to_dict() == before, "shrink() must not modify its argument"
    assert type(tiny) is type(full)
    for sub in ("text_config", "vision_config"):  # CLIP: both towers shrunk, not just the top
        if getattr(full, sub, None) is not None:
            assert getattr(tiny, sub).num_hidden_layers == 2
            assert getattr(tiny, sub).hidden_size == 64
    if hasattr(tiny, "num_hidden_layers") and not hasattr(full, "text_config"):
        assert tiny.num_hidden_layers == 2
        assert tiny.hidden_size == 64
    # the tokenizer's ids stay valid: the vocabulary is kept by default
    assert getattr(tiny, "vocab_size", None) == getattr(full, "vocab_size", None)

    model = _build(tiny, family.auto)
    with torch.no_grad():
        out = model(**family.inputs)
    result = getattr(out, family.output)
    assert tuple(result.shape) == family.shape(tiny)
    assert torch.isfinite(result).all()

    # small: under a million parameters besides the (kept) vocabulary tables
    text = getattr(tiny, "text_config", tiny)
    vocab = getattr(text, "vocab_size", None)
    body = sum(p.numel() for p in model.parameters() if vocab not in p.shape)
    assert body < 1_000_000
    assert model.num_parameters() < 25_000_000


@pytest.mark.parametrize(
    ("config", "heads", "kv_heads"),
    [
        (tf.LlamaConfig(num_attention_heads=32, num_key_value_heads=8), 4, 2),
        (tf.MistralConfig(), 4, 2),
        (tf.Qwen2Config(hidden_size=3584, num_attention_heads=28, num_key_value_heads=4), 4, 2),
        (tf.MixtralConfig(), 4, 2),
        (tf.LlamaConfig(num_attention_heads=32, num_key_value_heads=1), 4, 1),  # multi-query
        (tf.LlamaConfig(num_attention_heads=32, num_key_value_heads=32), 4, 4),  # plain MHA
    ],
    ids=["llama-gqa", "mistral", "qwen2", "mixtral", "mqa", "mha"],
)
def test_grouped_query_attention_stays_grouped(config: Any, heads: int, kv_heads: int) -> None:
    tiny = shrink(config)
    assert _head_counts(tiny) == (heads, kv_heads)
    assert tiny.num_attention_heads % tiny.num_key_value_heads == 0
    model = _build(tiny, "AutoModelForCausalLM")
    attention = model.model.layers[0].self_attn
    head_dim = tiny.hidden_size // tiny.num_attention_heads
    assert attention.k_proj.out_features == kv_heads * head_dim
    assert attention.q_proj.out_features == heads * head_dim


def test_kv_heads_argument_is_bounded_to_stay_grouped() -> None:
    config = tf.LlamaConfig(num_attention_heads=32, num_key_value_heads=8)
    assert _head_counts(shrink(config, heads=8, kv_heads=4)) == (8, 4)
    # 3 does not divide 8 heads, and 8 would no longer be grouped
    assert _head_counts(shrink(config, heads=8, kv_heads=3)) == (8, 2)
    assert _head_counts(shrink(config, heads=8, kv_heads=8)) == (8, 4)
    # a single head cannot be grouped: shrink keeps two
    assert _head_counts(shrink(config, heads=1)) == (2, 1)


def test_head_dim_follows_the_new_width() -> None:
    # Llama-style configs store head_dim explicitly; a stale 128 would break q/k/v shapes
    tiny = shrink(tf.LlamaConfig(num_key_value_heads=8), hidden=96, heads=6)
    assert tiny.head_dim == 96 // 6
    assert (tiny.head_dim % 2) == 0  # rotary embeddings rotate pairs
    t5 = shrink(tf.T5Config())
    assert t5.d_kv * t5.num_heads == t5.d_model
    # width rounded up so every head count divides it with an even head dim
    odd = shrink(tf.BertConfig(), hidden=50, heads=4)
    assert odd.hidden_size == 56


def test_moe_stays_moe_with_sparse_routing() -> None:
    tiny = shrink(tf.MixtralConfig())
    assert tiny.num_local_experts == 4
    assert tiny.num_experts_per_tok == 2
    assert shrink(tf.MixtralConfig(), experts=1).num_local_experts == 2  # two at least
    model = _build(tiny, "AutoModelForCausalLM")
    out = model(input_ids=IDS, output_router_logits=True)
    assert out.router_logits[0].shape[-1] == 4

    qwen_moe = shrink(tf.Qwen2MoeConfig())  # 60 experts, 4 per token, shared expert
    assert (qwen_moe.num_experts, qwen_moe.num_experts_per_tok) == (4, 2)
    assert qwen_moe.moe_intermediate_size < 1408
    assert qwen_moe.num_hidden_layers == 2 and qwen_moe.max_window_layers <= 2
    logits = _build(qwen_moe, "AutoModelForCausalLM")(input_ids=IDS).logits
    assert logits.shape == (2, 5, qwen_moe.vocab_size)


def test_encoder_decoder_depths_and_widths() -> None:
    t5 = shrink(tf.T5Config(num_layers=12, num_decoder_layers=12, d_ff=3072))
    assert (t5.num_layers, t5.num_decoder_layers, t5.d_model, t5.num_heads) == (2, 2, 64, 4)
    assert t5.d_ff == 3072 * 64 // 512  # feed-forward keeps its ratio to the width
    bart = shrink(tf.BartConfig())
    assert (bart.encoder_layers, bart.decoder_layers, bart.d_model) == (2, 2, 64)
    assert (bart.encoder_attention_heads, bart.decoder_attention_heads) == (4, 4)
    assert (bart.encoder_ffn_dim, bart.decoder_ffn_dim) == (256, 256)
    assert bart.max_position_embeddings == 512


def test_vision_sizes() -> None:
    vit = shrink(tf.ViTConfig())
    assert (vit.image_size, vit.patch_size, vit.encoder_stride) == (32, 8, 8)
    assert vit.pooler_output_size == 64
    clip = shrink(tf.CLIPConfig())
    assert (clip.vision_config.image_size, clip.vision_config.patch_size) == (32, 8)
    assert clip.projection_dim == clip.text_config.projection_dim == 64
    assert clip.text_config.max_position_embeddings == 77  # already small: kept


def test_per_layer_lists_follow_the_depth() -> None:
    tiny = shrink(tf.Qwen2Config(use_sliding_window=True, sliding_window=128, max_window_layers=20))
    assert len(tiny.layer_types) == tiny.num_hidden_layers == 2
    _build(tiny, "AutoModelForCausalLM")(input_ids=IDS)


def test_reduced_vocab_keeps_special_token_ids_valid() -> None:
    gpt2 = shrink(tf.GPT2Config(), vocab=1000)
    assert gpt2.vocab_size == 50257  # eos is 50256: cannot go lower
    roberta = shrink(tf.RobertaConfig(), vocab=1000)
    assert roberta.vocab_size == 1000
    assert max(roberta.pad_token_id, roberta.bos_token_id, roberta.eos_token_id) < 1000
    logits = _build(shrink(tf.LlamaConfig(), vocab=100), "AutoModelForCausalLM")(input_ids=IDS)
    assert logits.logits.shape[-1] == 100


def test_positions_capped_unless_rope_is_scaled() -> None:
    assert shrink(tf.GPT2Config()).n_positions == 512
    assert shrink(tf.MistralConfig()).max_position_embeddings == 512
    llama31 = tf.LlamaConfig(
        max_position_embeddings=131072,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    tiny = shrink(llama31)
    assert tiny.max_position_embeddings == 131072  # llama3 rope scaling reads it
    _build(tiny, "AutoModelForCausalLM")(input_ids=IDS)


def test_small_configs_are_not_grown() -> None:
    small = tf.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    tiny = shrink(small)
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads) == (32, 1, 2)
    assert tiny.intermediate_size == 37


def test_unknown_family_shrinks_the_names_it_knows() -> None:
    # a family transformers has never heard of, with the common attribute names
    custom = tf.PretrainedConfig(
        hidden_size=2048,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=4,
        intermediate_size=8192,
        max_position_embeddings=4096,
        frobnication_level=7,
    )
    tiny = shrink(custom)
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.intermediate_size) == (64, 2, 256)
    assert (tiny.num_attention_heads, tiny.num_key_value_heads) == (4, 2)
    assert tiny.max_position_embeddings == 512
    assert tiny.frobnication_level == 7
    # nothing recognisable: returned unchanged (a copy)
    bare = tf.PretrainedConfig(frobnication_level=7)
    assert shrink(bare).to_dict() == bare.to_dict()
    assert shrink(bare) is not bare


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="layers must be >= 1"):
        shrink(tf.BertConfig(), layers=0)
