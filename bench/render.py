"""Benchmark (not a test): render 100,000 results with 5% failures; merge 4 shards of 25,000.

    python bench/render.py

Targets (issue 4): rendering <= 2 s, merging <= 2 s. Prints one line per measurement.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mlcheck.github.workflow import annotation_lines
from mlcheck.report import RenderContext, render_annotations, render_section, render_summary
from mlcheck.results import digest
from mlcheck.results import schema as results
from mlcheck.results.merge import merge, merge_sections

HERE = Path(__file__).resolve().parent
CASES = HERE.parent / "tests" / "data" / "report-golden" / "cases.py"
spec = importlib.util.spec_from_file_location("golden_cases", CASES)
assert spec and spec.loader
cases = importlib.util.module_from_spec(spec)
sys.modules["golden_cases"] = cases
spec.loader.exec_module(cases)


def timed(label: str, fn, target: float | None = None):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn()
    took = time.perf_counter() - start
    verdict = "" if target is None else (" OK" if took <= target else f" OVER {target:.1f} s")
    print(f"{label:<58} {took:7.3f} s{verdict}")
    return value


def main() -> int:
    big = cases.big_suite(100_000, 0.05, seed=1, message_chars=2_000)
    print(f"suite: {len(big.tests):,} tests, {len(big.failures()):,} failures")
    half = {t.nodeid for t in big.failures()[::2]}
    base_run = replace(
        big,
        tests=tuple(
            replace(t, outcome=results.Outcome.PASSED) if t.nodeid in half else t for t in big.tests
        ),
    )
    base = digest.parse(digest.encode(base_run, section="fast"))
    ctx = RenderContext(repo="acme/models", sha="a" * 40, run_url="https://x/runs/1", base=base)

    def render_all() -> None:
        render_section(big, ctx)
        render_summary({"fast": big}, ctx)
        annotation_lines(render_annotations({"fast": big}, ctx))

    timed("render 100k (comment section + job summary + annotations)", render_all, 2.0)
    timed("render 100k (comment section only)", lambda: render_section(big, ctx))

    shards = [
        replace(big, run=replace(big.run, shard=f"{i + 1}/4"), tests=big.tests[i::4])
        for i in range(4)
    ]
    timed("merge 4 shards x 25k (in memory)", lambda: merge(shards), 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for i, s in enumerate(shards):
            d = Path(tmp) / f"shard{i}"
            results.write(s, d)
            dirs.append(d)

        def read_merge_write() -> None:
            loaded = [results.read(d) for d in dirs]
            merged = merge(merge_sections(loaded).values())
            results.write(merged, Path(tmp) / "merged")

        timed("merge 4 shards x 25k (read 4 files, merge, write)", read_merge_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
