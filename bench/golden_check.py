"""Overhead of `golden.check` on a 1M-element float32 tensor: time (record, check) and file size.

    python bench/golden_check.py [--numel 1000000] [--repeat 5]

Baseline in the same process: torch.testing.assert_close of the same tensor against a copy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mlcheck.golden import store
from mlcheck.golden.fixture import Golden, GoldenMode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--numel", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.numel // 1000, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "__golden__" / "test_bench.json"

        def golden(mode: GoldenMode) -> Golden:
            return Golden(path, "test_bench", "cpu", mode, "__golden__/test_bench.json")

        record, check, baseline = [], [], []
        for _ in range(args.repeat):
            path.unlink(missing_ok=True)
            t0 = time.perf_counter()
            golden(GoldenMode.RECORD).check("x", x)
            record.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            golden(GoldenMode.CHECK).check("x", x.clone())
            check.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            torch.testing.assert_close(x, x.clone())
            baseline.append(time.perf_counter() - t0)
        size = path.stat().st_size
        assert store.read(path)["tests"]["test_bench"]["x"]["cpu"]
    rec, chk, base = (statistics.median(v) for v in (record, check, baseline))
    print(f"tensor: float32 {tuple(x.shape)} ({x.numel():,} elements), medians of {args.repeat}")
    print(f"golden.check record: {rec * 1e3:.1f} ms")
    ratio = chk / base
    print(f"golden.check check:  {chk * 1e3:.1f} ms  ({ratio:.1f}x torch.testing.assert_close)")
    print(f"torch.testing.assert_close: {base * 1e3:.1f} ms")
    print(f"golden file: {size:,} bytes")


if __name__ == "__main__":
    main()
