"""What does having mlcheck installed cost a suite with no ML in it? (not a test)

Generates a plain-Python suite (300 tests by default) in a temporary folder and times
``pytest`` on it, as a fresh process each time, with the plugin disabled (``-p no:mlcheck``, as
if not installed), installed but not opted in (inert), opted in (``--mlcheck-tier=fast``), and
(``--results``) opted in and writing ``results.json``,
alternating runs so that machine noise hits all alike. Reports medians and the ratios.
Usage::

    python bench/plugin_overhead.py [--repeat 7] [--json bench/out/plugin_overhead.json]
    python bench/plugin_overhead.py --tests 2010 --results    # results-writing overhead

With ``--results`` it also times results without the per-test journal (MLCHECK_NO_JOURNAL=1)
and prints the journal's cost as a ratio to that, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_OVERHEAD = 0.05  # reported, never asserted

TESTS_PER_FILE = 30

TEMPLATE = """\
import json
import re

import pytest


def slugify(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@pytest.fixture
def record():
    return {{"name": "Ada Lovelace", "tags": ["math", "engines"], "year": 1843}}


@pytest.mark.parametrize("n", range({params}))
def test_roundtrip_{i}(record, n):
    record["n"] = n
    assert json.loads(json.dumps(record)) == record


@pytest.mark.parametrize("text", ["Hello World", "a  b", "Ünïcode ok", "--x--"] * {slug_reps})
def test_slugify_{i}(text):
    assert slugify(text) == slugify(slugify(text))


class TestNumbers{i}:
"""

METHOD = """\
    def test_sum_{j}(self):
        assert sum(range({j})) == {j} * ({j} - 1) // 2
"""


def write_suite(root: Path, files: int) -> int:
    """Write the suite; returns how many tests it holds."""
    params, slug_reps = 10, 3  # 10 + 12 parametrized tests per file
    methods = TESTS_PER_FILE - params - 4 * slug_reps
    for i in range(files):
        body = TEMPLATE.format(i=i, params=params, slug_reps=slug_reps)
        body += "".join(METHOD.format(j=j) for j in range(methods))
        (root / f"test_plain_{i}.py").write_text(body)
    # an empty config file pins the rootdir here, away from any surrounding project's settings
    (root / "pytest.ini").write_text("[pytest]\n")
    return files * TESTS_PER_FILE


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# without: -p no:mlcheck (as if not installed); installed: loaded but the project has not opted
# in (must be inert); with: opted in (--mlcheck-tier); with+results: opted in, writing
# results; with+results-no-journal: the same without the journal (its cost is the ratio).
VARIANTS = ("without", "installed", "with", "with+results", "with+results-no-journal")


def run_pytest(root: Path, variant: str, count: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one pytest process; CPU time suffers less from a busy
    machine than wall time does."""
    enabled = variant not in ("without", "installed")  # opted in: the plugin's hooks are active
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root)]
    if variant == "without":
        args[3:3] = ["-p", "no:mlcheck"]
    env = dict(os.environ)
    if variant == "with":
        args.append("--mlcheck-tier=fast")
    if variant.startswith("with+results"):
        args.append(f"--mlcheck-results={root / 'results'}")
    if variant == "with+results-no-journal":
        env["MLCHECK_NO_JOURNAL"] = "1"  # the journal's cost is the ratio to this variant
    cpu = _children_cpu_s()
    start = time.perf_counter()
    out = subprocess.run(args, cwd=root, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start, _children_cpu_s() - cpu
    if out.returncode != 0 or f"{count} passed" not in out.stdout:
        raise SystemExit(f"pytest failed (plugin enabled={enabled}):\n{out.stdout}\n{out.stderr}")
    # opted in, the plugin prints its tier line; installed but not opted in, nothing at all
    if enabled != ("mlcheck" in out.stdout):
        raise SystemExit(f"plugin enabled={enabled} but its output says otherwise:\n{out.stdout}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pytest time with and without mlcheck")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each (default 7)")
    parser.add_argument("--tests", type=int, default=300, help="suite size, rounded to 30s")
    parser.add_argument(
        "--results", action="store_true", help="also time the plugin writing results.json"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    variants = VARIANTS if args.results else VARIANTS[:3]

    times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="plain-suite-") as tmp:
        root = Path(tmp)
        count = write_suite(root, max(1, round(args.tests / TESTS_PER_FILE)))
        for variant in variants:  # warm the file system cache and bytecode for all variants
            run_pytest(root, variant, count)
        for _ in range(args.repeat):
            for variant in variants:
                times[variant].append(run_pytest(root, variant, count))

    result: dict[str, object] = {"tests": count, "repeat": args.repeat}
    print(f"{count} tests, {args.repeat} runs each (medians):")
    for index, clock in enumerate(("wall", "cpu")):
        base = statistics.median(t[index] for t in times["without"])
        entry: dict[str, object] = {"median_without_s": base}
        line = f"  {clock:4s}: without mlcheck {base:.3f} s"
        for variant in variants[1:]:
            median = statistics.median(t[index] for t in times[variant])
            entry[variant] = {
                "runs_s": [t[index] for t in times[variant]],
                "median_s": median,
                "ratio": median / base,
            }
            line += f"; {variant} {median:.3f} s ({100 * (median / base - 1):+.1f}%)"
        if args.results:
            journal = statistics.median(t[index] for t in times["with+results"])
            bare = statistics.median(t[index] for t in times["with+results-no-journal"])
            entry["journal_ratio"] = journal / bare
            line += f"; journal {100 * (journal / bare - 1):+.1f}% vs no journal"
        result[clock] = entry
        print(line + f"  [target <= +{100 * TARGET_OVERHEAD:.0f}%]")
    result["target_overhead"] = TARGET_OVERHEAD
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
