"""Sizing estimates of full-size configs on the meta device against their true parameter bytes.

For Llama-3-8B, Llama-3-70B, Mistral-7B and Mixtral-8x7B-shaped configs (bfloat16), builds the
model on the meta device with ``models.empty`` (the checkpoint's head) and compares
``mlcheck.project.sizing.parameter_bytes`` with the parameter count computed from the
architecture by hand; prints the estimate ``mlcheck.project.sizing`` gives (weights +
activation allowance + CUDA context) and the runner class it maps to under
``{"24", "48", "80"}`` GB.

    python bench/sizing.py
"""

from __future__ import annotations

import json

import transformers as tf

from mlcheck.models import ModelFactory
from mlcheck.project.sizing import GB, estimate_from_models, parameter_bytes, plan_runners


def _decoder_params(c: tf.PretrainedConfig, experts: int = 0) -> int:
    head_dim = c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    attention = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv
    mlp = 3 * c.hidden_size * c.intermediate_size
    if experts:
        mlp = experts * mlp + c.hidden_size * experts  # experts + router
    per_layer = attention + mlp + 2 * c.hidden_size
    head = 0 if c.tie_word_embeddings else c.vocab_size * c.hidden_size
    return c.vocab_size * c.hidden_size + c.num_hidden_layers * per_layer + c.hidden_size + head


def _configs() -> dict[str, tuple[tf.PretrainedConfig, int]]:
    common = {"dtype": "bfloat16", "tie_word_embeddings": False}
    llama8 = tf.LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        architectures=["LlamaForCausalLM"],
        **common,
    )
    llama70 = tf.LlamaConfig(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
        architectures=["LlamaForCausalLM"],
        **common,
    )
    mistral = tf.MistralConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
        architectures=["MistralForCausalLM"],
        **common,
    )
    mixtral = tf.MixtralConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
        num_local_experts=8,
        architectures=["MixtralForCausalLM"],
        **common,
    )
    return {
        "llama-3-8b": (llama8, _decoder_params(llama8)),
        "llama-3-70b": (llama70, _decoder_params(llama70)),
        "mistral-7b": (mistral, _decoder_params(mistral)),
        "mixtral-8x7b": (mixtral, _decoder_params(mixtral, experts=8)),
    }  # fmt: skip


def main() -> None:
    models = ModelFactory()
    runners = {24.0: ("gpu-24g",), 48.0: ("gpu-48g",), 80.0: ("gpu-80g",)}
    rows = []
    print(f"{'config':14} {'true GB':>8} {'meta GB':>8} {'error':>7} {'need GB':>8}  runner")
    for name, (config, true_params) in _configs().items():
        meta = sum(parameter_bytes(models.empty(config, task="causal-lm")).values())
        true_bytes = true_params * 2
        est = estimate_from_models(name, [config], models)
        plan = plan_runners([est], runners)
        runner = next((f"{gb:g} GB" for gb in plan.dispatches), "too big")
        error = (meta - true_bytes) / true_bytes
        print(
            f"{name:14} {true_bytes / GB:8.2f} {meta / GB:8.2f} {error:7.2%} "
            f"{est.gb:8.2f}  {runner}"
        )
        rows.append({"config": name, "true_bytes": true_bytes, "meta_bytes": meta,
                     "relative_error": error, "estimate_gb": est.gb, "runner": runner})  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
