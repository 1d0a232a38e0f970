"""How much faster is mlcheck's fast tier than building the real-size model? (not a test)

For each architecture family, in one process:

  (a) full  - full-size ``AutoModel*.from_config`` with random init + one forward pass
              (only sizes that fit a 24 GiB machine; 7B-class configs skip it)
  (b) empty - ``models.empty`` (full size on the meta device) + one meta forward pass
  (c) tiny  - ``models.random`` (shrunk by ``mlcheck.shrink``) + one forward pass

(b) and (c) are the median of a few repetitions after the family's modules are imported; (a)
runs once. A fresh subprocess also measures ``models.empty`` of a 7B Llama config cold, with the
memory it adds. Usage::

    python bench/fast_tier.py [--json bench/out/fast_tier.json] [--threads 1] [--skip-full]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Reference targets from the issue (reported, never asserted).
TARGET_TINY_FORWARD_MS = 50.0
TARGET_EMPTY_7B_S = 1.0
TARGET_EMPTY_7B_MB = 200.0
TARGET_RATIO = 30.0  # every family
TARGET_MEDIAN_RATIO = 80.0
SEQ = 16  # tokens per forward pass


@dataclass(frozen=True)
class Case:
    name: str
    config: Callable[[], Any]  # full-size config
    task: str | None
    kind: str  # "text", "seq2seq", "image", "clip": which inputs to feed
    full: bool  # run (a): fits in 24 GiB of RAM


def _cases() -> list[Case]:
    import transformers as tf

    return [
        Case("bert-base", tf.BertConfig, None, "text", True),
        Case("roberta-base", lambda: tf.RobertaConfig(max_position_embeddings=514), None,
             "text", True),
        Case("distilbert-base", tf.DistilBertConfig, None, "text", True),
        Case("gpt2", tf.GPT2Config, "causal-lm", "text", True),
        Case("t5-base", lambda: tf.T5Config(d_model=768, d_ff=3072, num_layers=12, num_heads=12),
             "seq2seq-lm", "seq2seq", True),
        Case("bart-base", lambda: tf.BartConfig(
            d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
             "seq2seq-lm", "seq2seq", True),
        Case("vit-base", tf.ViTConfig, None, "image", True),
        Case("clip-base", tf.CLIPConfig, None, "clip", True),
        # Llama-3.2-1B's shape
        Case("llama-1b", lambda: tf.LlamaConfig(
            hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
            tie_word_embeddings=True), "causal-lm", "text", True),
        # Qwen2-0.5B's shape
        Case("qwen2-0.5b", lambda: tf.Qwen2Config(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
            tie_word_embeddings=True), "causal-lm", "text", True),
        Case("llama-7b", tf.LlamaConfig, "causal-lm", "text", False),
        Case("mistral-7b", tf.MistralConfig, "causal-lm", "text", False),
        Case("mixtral-8x7b", tf.MixtralConfig, "causal-lm", "text", False),
    ]  # fmt: skip


def _inputs(kind: str, config: Any, device: str = "cpu") -> dict[str, Any]:
    import torch

    def ids(n: int) -> Any:
        # valid ids for any vocabulary here (all > 1000 entries), away from special tokens
        return (torch.arange(n, device=device) % 900 + 100).unsqueeze(0)

    def pixels() -> Any:
        vision = getattr(config, "vision_config", config)
        size = vision.image_size
        return torch.zeros(1, vision.num_channels, size, size, device=device)

    if kind == "text":
        return {"input_ids": ids(SEQ)}
    if kind == "seq2seq":
        return {"input_ids": ids(SEQ), "decoder_input_ids": ids(4)}
    if kind == "image":
        return {"pixel_values": pixels()}
    return {"input_ids": ids(SEQ), "pixel_values": pixels()}


def _forward(model: Any, inputs: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        model(**inputs)


def _median_s(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Row:
    family: str
    params_full: int
    params_tiny: int
    full_s: float | None  # (a)
    empty_s: float  # (b)
    tiny_s: float  # (c): build + forward
    tiny_forward_ms: float  # (c): forward only
    ratio: float | None  # (a) / (c)
    meta_forward_error: str | None  # (b) then timed the build alone


def _measure(case: Case, models: Any, repeat: int, skip_full: bool) -> Row:
    import transformers as tf

    from mlcheck.models import TASKS

    meta_forward_error: list[str] = []

    def empty() -> Any:
        model = models.empty(case.config(), task=case.task)
        try:
            _forward(model, _inputs(case.kind, model.config, device="meta"))
        except (RuntimeError, NotImplementedError) as exc:
            # some modeling code reads tensor values (masks): that cannot run on meta
            meta_forward_error[:] = [str(exc).splitlines()[0]]
        return model

    def tiny() -> Any:
        model = models.random(case.config(), task=case.task)
        _forward(model, _inputs(case.kind, model.config))
        return model

    full_s = None
    if case.full and not skip_full:
        start = time.perf_counter()
        # a fresh config for each stage: from_config writes dtype and attention choice into it
        config = case.config()
        model = getattr(tf, TASKS[case.task]).from_config(config).eval()
        _forward(model, _inputs(case.kind, config))
        full_s = time.perf_counter() - start
        del model
        gc.collect()

    params_full = empty().num_parameters()  # also imports the family's modules, off the clock
    empty_s = _median_s(empty, repeat)
    small = tiny()
    tiny_s = _median_s(tiny, repeat)
    tiny_inputs = _inputs(case.kind, small.config)
    tiny_forward_ms = 1000 * _median_s(lambda: _forward(small, tiny_inputs), repeat)
    return Row(
        family=case.name,
        params_full=params_full,
        params_tiny=small.num_parameters(),
        full_s=full_s,
        empty_s=empty_s,
        tiny_s=tiny_s,
        tiny_forward_ms=tiny_forward_ms,
        ratio=full_s / tiny_s if full_s else None,
        meta_forward_error=meta_forward_error[0] if meta_forward_error else None,
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:  # Linux: resident pages are the second field
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def empty_probe() -> dict[str, float]:
    """In a fresh process: ``models.empty`` of a 7B Llama config, cold then warm, and its RSS."""
    import resource

    import torch
    import transformers as tf

    from mlcheck.models import ModelFactory

    torch.set_num_threads(1)
    models = ModelFactory()
    config = tf.LlamaConfig()  # Llama-2-7B: 6.74e9 parameters
    rss_start = _rss_mb()
    # process_cold: the first model of a process also imports transformers' modeling stack
    # (modeling_utils, generation: ~1-3 s, paid once per test process, by any transformers use)
    start = time.perf_counter()
    import transformers.modeling_utils  # noqa: F401

    stack_s = time.perf_counter() - start
    rss_before = _rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # first_call: the first Llama, importing modeling_llama on the clock
    start = time.perf_counter()
    model = models.empty(config, task="causal-lm")
    first_s = time.perf_counter() - start
    rss_after = _rss_mb()
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warm_s = _median_s(lambda: models.empty(config, task="causal-lm"), 3)
    return {
        "params": float(model.num_parameters()),
        "modeling_stack_import_s": stack_s,
        "process_cold_s": stack_s + first_s,
        "first_call_s": first_s,
        "warm_s": warm_s,
        "modeling_stack_rss_mb": rss_before - rss_start,
        "rss_added_mb": rss_after - rss_before,
        "peak_added_mb": peak_after - peak_before,
    }


def _run_probe() -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--empty-probe"], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _table(rows: list[Row], probe: dict[str, float], threads: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fast tier vs full size (torch threads: {threads})")
    for column in ("family", "params full", "params tiny", "(a) full s", "(b) empty s",
                   "(c) tiny s", "tiny fwd ms", "(a)/(c)"):  # fmt: skip
        table.add_column(column, justify="left" if column == "family" else "right")
    for r in rows:
        table.add_row(
            r.family,
            f"{r.params_full / 1e6:,.0f}M",
            f"{r.params_tiny / 1e6:.2f}M",
            f"{r.full_s:.2f}" if r.full_s is not None else "meta only",
            f"{r.empty_s:.3f}" + ("*" if r.meta_forward_error else ""),
            f"{r.tiny_s:.3f}",
            f"{r.tiny_forward_ms:.1f}",
            f"{r.ratio:.0f}x" if r.ratio is not None else "-",
        )
    console = Console(width=130)
    console.print(table)
    for r in rows:
        if r.meta_forward_error:
            console.print(f"* {r.family}: build only, its forward fails on meta: "
                          f"{r.meta_forward_error}")  # fmt: skip
    console.print(
        f"models.empty(Llama 7B, {probe['params'] / 1e9:.2f}B params) in a fresh process: "
        f"first call {probe['first_call_s']:.3f} s (+{probe['modeling_stack_import_s']:.2f} s "
        f"importing transformers' modeling stack once per process), warm {probe['warm_s']:.3f} s,"
        f" +{probe['rss_added_mb']:.0f} MB RSS (+{probe['peak_added_mb']:.0f} MB peak)"
    )


def _summary(rows: list[Row], probe: dict[str, float]) -> dict[str, Any]:
    ratios = [r.ratio for r in rows if r.ratio is not None]
    worst_forward = max(rows, key=lambda r: r.tiny_forward_ms)
    return {
        "ratio_min": min(ratios) if ratios else None,
        "ratio_geomean": math.exp(statistics.mean(math.log(r) for r in ratios)) if ratios else None,
        "ratio_median": statistics.median(ratios) if ratios else None,
        "tiny_forward_ms_max": worst_forward.tiny_forward_ms,
        "tiny_forward_ms_max_family": worst_forward.family,
        "targets": {
            "tiny_forward_ms <= 50": worst_forward.tiny_forward_ms <= TARGET_TINY_FORWARD_MS,
            "empty_7b_s <= 1 (first call)": probe["first_call_s"] <= TARGET_EMPTY_7B_S,
            "empty_7b_added_mb < 200": max(probe["rss_added_mb"], probe["peak_added_mb"])
            < TARGET_EMPTY_7B_MB,
            "ratio >= 30 (every family)": bool(ratios) and min(ratios) >= TARGET_RATIO,
            "ratio median >= 80": bool(ratios) and statistics.median(ratios) >= TARGET_MEDIAN_RATIO,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of (b) and (c)")
    parser.add_argument("--skip-full", action="store_true", help="skip (a): quick check only")
    parser.add_argument("--only", help="comma-separated family names")
    parser.add_argument("--empty-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.empty_probe:
        print(json.dumps(empty_probe()))
        return 0

    import torch
    import transformers

    from mlcheck.models import ModelFactory

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    models = ModelFactory(seed=0)
    wanted = set(args.only.split(",")) if args.only else None
    started = time.perf_counter()
    rows = []
    for case in _cases():
        if wanted is None or case.name in wanted:
            rows.append(_measure(case, models, args.repeat, args.skip_full))
            print(f"  measured {case.name}", file=sys.stderr)
    probe = _run_probe()
    _table(rows, probe, args.threads)
    result = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
        },
        "families": [asdict(r) for r in rows],
        "empty_llama_7b": probe,
        "summary": _summary(rows, probe),
        "wall_s": time.perf_counter() - started,
    }
    print(json.dumps(result["summary"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
