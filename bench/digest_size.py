"""Benchmark (not a test): digest size for 10k and 100k tests, v1 (failures only) against v2
(plus the tests that ran and duration buckets), unbounded and within the base digest budget.

    python bench/digest_size.py

The v1 encoder is taken from git (commit e7045f8, the last one with digest v1), so both are
measured in the same process on the same suites. A suite: 5% failing, 5% not run, 5% of the
tests that ran slower than 0.5 s.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mlcheck.publish.tracking import BASE_DIGEST_CHARS
from mlcheck.results import digest
from mlcheck.results.schema import Outcome, RunResults, TestResult

HERE = Path(__file__).resolve().parent
ISSUE_LIMIT = 65_536


def _load(name: str, path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def v1_module():  # type: ignore[no-untyped-def]
    source = subprocess.run(
        ["git", "show", "e7045f8:mlcheck/digest.py"],
        cwd=HERE,
        capture_output=True,
        text=True,
    ).stdout
    source = source.replace("from .errors", "from mlcheck.errors")
    source = source.replace("from .results", "from mlcheck.results.schema")
    path = Path(tempfile.mkdtemp()) / "digest_v1.py"
    path.write_text(source)
    return _load("digest_v1", path)


def suite(n: int, seed: int = 7) -> RunResults:
    cases = _load("golden_cases", HERE.parent / "tests/data/report-golden/cases.py")
    results = cases.big_suite(n, 0.05, seed=seed)
    rng = random.Random(seed)
    tests: list[TestResult] = []
    for t in results.tests:
        slow = t.outcome is not Outcome.NOT_RUN and rng.random() < 0.05
        tests.append(replace(t, duration=rng.uniform(0.5, 60) if slow else rng.uniform(0, 0.4)))
    return replace(results, tests=tuple(tests))


def main() -> None:
    v1 = v1_module()
    for n in (10_000, 100_000):
        results = suite(n)
        for label, encode in (("v1", v1.encode), ("v2", digest.encode)):
            start = time.perf_counter()
            line = encode(results, section="fast", max_chars=10**9)
            took = time.perf_counter() - start
            print(f"{n:>7,} tests  {label} unbounded: {len(line):>7,} chars ({took:.2f} s)")
        for budget in (3_000, BASE_DIGEST_CHARS, ISSUE_LIMIT - 1_000):
            line = digest.encode(results, section="fast", max_chars=budget)
            d = digest.parse(line)["fast"]
            ran_total = sum(1 for t in results.tests if t.outcome in digest.RAN)
            kept = len(d.ran or ()) / max(1, ran_total)
            slow_total = sum(
                1 for t in results.tests if t.outcome in digest.RAN and t.duration >= 0.5
            )
            slow_kept = len(d.slow or {}) / max(1, slow_total)
            print(
                f"{n:>7,} tests  v2 within {budget:>6,}: {len(line):>6,} chars; failures "
                f"{'all' if d.complete else f'{len(d.failing)}'}; ran set {kept:.1%}; "
                f"durations {slow_kept:.1%}"
            )


if __name__ == "__main__":
    main()
