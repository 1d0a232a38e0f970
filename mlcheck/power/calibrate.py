"""`mlcheck calibrate`: each test under N seeds; false-failure rates with exact 95% bounds.

The tests run once through `mlcheck run` (offline, tiers, xdist) with the ``seeds`` plugin,
which reruns each test per seed in the same process. A test that failed on some seeds is
**flaky by design** when its measured rate is above the target; the seeds that failed reproduce
it (``MLCHECK_SEED=S mlcheck run --seed S NODEID``: ``--seed`` seeds the test, the variable
the checks).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import constants
from ..errors import MlcheckError
from ..report.messages import code
from ..text import duration_text, plural

CALIBRATION_FILE = "calibration.json"
CALIBRATION_MARKDOWN = "calibration.md"
CALIBRATION_SCHEMA_VERSION = 1
CONFIDENCE = 0.95


# -- exact binomial bounds ------------------------------------------------------------------------
# scipy is not a dependency (it would be for one function): the Clopper-Pearson limits are the
# beta quantiles beta.ppf(1 - a/2, k + 1, n - k) and beta.ppf(a/2, k, n - k + 1), which equal the p
# where the binomial CDF crosses a/2. The CDF is a sum of n + 1 exact terms (in logs, so no
# overflow for large n) and is monotone in p, so bisection finds the limit to 1e-12 in 60 steps.


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p).

    >>> round(binomial_cdf(0, 20, 0.05), 4)
    0.3585
    """
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        log_term = (
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
        ) + (n - i) * log_q
        total += math.exp(log_term)
    return min(total, 1.0)


def _bisect(f: Any, target: float) -> float:
    """The p in [0, 1] where the decreasing function f crosses target."""
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if f(mid) > target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided interval for a binomial rate: k failures in n runs.

    >>> low, high = clopper_pearson(0, 20)
    >>> low, round(high, 4)
    (0.0, 0.1684)
    """
    if n <= 0:
        raise ValueError("clopper_pearson needs n >= 1 runs")
    alpha = 1 - confidence
    # lower: P(X >= k) = a/2, i.e. the CDF at k - 1 (decreasing in p) crosses 1 - a/2
    lower = 0.0 if k == 0 else _bisect(lambda p: binomial_cdf(k - 1, n, p), 1 - alpha / 2)
    upper = 1.0 if k >= n else _bisect(lambda p: binomial_cdf(k, n, p), alpha / 2)
    return lower, upper


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestRate:
    nodeid: str
    runs: int  # seeds it ran under
    failures: int
    failing_seeds: tuple[int, ...]
    deterministic: bool  # same outcome on two seeds and never used the seed: skipped early
    skipped: bool = False  # skipped by the test itself (not calibrated)
    message: str = ""  # the first failure's

    @property
    def rate(self) -> float:
        return self.failures / self.runs if self.runs else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        if self.deterministic or not self.runs:
            return (0.0, 0.0) if not self.failures else (1.0, 1.0)
        return clopper_pearson(self.failures, self.runs)


@dataclass(frozen=True)
class Calibration:
    tests: tuple[TestRate, ...]
    seeds: tuple[int, ...]
    target: float
    duration: float

    def flaky(self) -> list[TestRate]:
        """Fails on some seeds but not all, above the target rate: flaky by design."""
        return [t for t in self.tests if 0 < t.failures < t.runs and t.rate > self.target]

    def always_failing(self) -> list[TestRate]:
        return [t for t in self.tests if t.runs and t.failures == t.runs]

    def suite_false_red(self) -> tuple[float, float]:
        """(estimate, bound) of the chance a whole-suite run fails with no bug: 1 - prod(1 - r),
        from the measured rates and from each test's 95% upper bound (tests that fail on every
        seed are real failures, not false alarms, and are left out)."""
        measured, bounded = 1.0, 1.0
        for t in self.tests:
            if t.skipped or (t.failures == t.runs and t.runs):
                continue
            measured *= 1 - t.rate
            bounded *= 1 - t.interval[1]
        return 1 - measured, 1 - bounded


def aggregate(
    lines: Sequence[dict[str, Any]], seeds: Sequence[int], target: float, duration: float
) -> Calibration:
    by_test: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        by_test[line["nodeid"]].append(line)
    tests = []
    for nodeid, runs in sorted(by_test.items()):
        runs.sort(key=lambda r: seeds.index(r["seed"]) if r["seed"] in seeds else 0)
        if all(r["outcome"] == "skipped" for r in runs):
            tests.append(TestRate(nodeid, 0, 0, (), False, skipped=True))
            continue
        failed = [r for r in runs if r["outcome"] in ("failed", "error")]
        deterministic = (
            len(runs) < len(seeds) and len(runs) == 2 and not any(r["uses_seed"] for r in runs)
        )
        tests.append(
            TestRate(
                nodeid,
                runs=len(runs),
                failures=len(failed),
                failing_seeds=tuple(r["seed"] for r in failed),
                deterministic=deterministic,
                message=failed[0]["message"] if failed else "",
            )
        )
    return Calibration(tuple(tests), tuple(seeds), target, duration)


def measure(
    paths: Sequence[str],
    seeds: Sequence[int],
    target: float,
    *,
    tier: str | None,
    workers: int | str | None,
    extra: Sequence[str],
    environ: Mapping[str, str],
    label: str = "mlcheck calibrate:",
) -> Calibration:
    """Run ``paths`` under every seed (in a scratch folder outside the project, removed after)
    and aggregate the outcomes: what ``mlcheck calibrate`` and ``mlcheck mutate --calibrate``
    both measure."""
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="mlcheck-calibrate-"))  # outside the project
    try:
        print(f"{label} {plural(len(seeds), 'seed')} per test ...", file=sys.stderr)
        lines = run(paths, seeds, scratch, tier=tier, workers=workers, extra=extra, environ=environ)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return aggregate(lines, seeds, target, time.monotonic() - started)


def run(
    paths: Sequence[str],
    seeds: Sequence[int],
    scratch: Path,
    *,
    tier: str | None,
    workers: int | str | None,
    extra: Sequence[str] = (),
    environ: Mapping[str, str],
) -> list[dict[str, Any]]:
    """One `mlcheck run` in which each test runs once per seed; the outcome lines it wrote."""
    import subprocess

    out = scratch / "outcomes"
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "mlcheck", "run", *paths, "--no-warm"]
    command += ["--results-dir", str(scratch / "run")]
    if tier:
        command += ["--tier", tier]
    if workers is not None:
        command += ["-n", str(workers)]
    command += ["--", "-p", "no:cacheprovider", "-p", "mlcheck.power.seeds", "-q", *extra]
    env = {
        **environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        constants.ENV_CALIBRATE: json.dumps({"seeds": list(seeds), "out": str(out)}),
    }
    log = scratch / "output.log"
    with log.open("wb") as handle:
        code = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    lines = [
        json.loads(line)
        for path in sorted(out.glob("outcomes-*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    if not lines:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
        raise MlcheckError(f"no test ran under calibration (mlcheck run exited {code}):\n{tail}")
    return lines


# -- report ---------------------------------------------------------------------------------------


def repro(t: TestRate) -> str | None:
    if not t.failing_seeds:
        return None
    s = t.failing_seeds[0]
    return f"{constants.ENV_SEED}={s} mlcheck run --seed {s} '{t.nodeid}'"


def to_dict(c: Calibration) -> dict[str, Any]:
    estimate, bound = c.suite_false_red()
    return {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        "seeds": list(c.seeds),
        "target": c.target,
        "confidence": CONFIDENCE,
        "duration": round(c.duration, 3),
        "suite_false_red": {"estimate": estimate, "upper_bound": bound},
        "tests": [
            {
                "nodeid": t.nodeid,
                "runs": t.runs,
                "failures": t.failures,
                "rate": t.rate,
                "lower": t.interval[0],
                "upper": t.interval[1],
                "failing_seeds": list(t.failing_seeds),
                "deterministic": t.deterministic,
                "skipped": t.skipped,
                "flaky": t in c.flaky(),
                "message": t.message,
                "repro": repro(t),
            }
            for t in c.tests
        ],
    }


def _pct(x: float) -> str:
    return f"{x:.1%}" if x >= 0.001 or x == 0 else f"{x:.2g}"


def kills_from_mutation(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """test node id -> the mutants it killed, from a ``mutation.json`` (``mlcheck mutate``)."""
    kills: dict[str, list[str]] = defaultdict(list)
    for mutant in data.get("mutants", []):
        for nodeid in mutant.get("killers", []):
            kills[nodeid].append(mutant["name"])
    return dict(kills)


def markdown(c: Calibration, kills: Mapping[str, Sequence[str]] | None = None) -> str:
    """The calibration table; with ``kills`` (from mutation.json) each test's power beside its
    false alarms: the mutants it killed."""
    estimate, bound = c.suite_false_red()
    flaky = c.flaky()
    lines = [
        f"### mlcheck calibrate: {plural(len(flaky), 'test')} flaky by design "
        f"(target {c.target:g} per run)",
        "",
        f"{plural(len(c.tests), 'test')} under {plural(len(c.seeds), 'seed')} in "
        f"{duration_text(c.duration)}. A whole-suite run fails with no bug with chance "
        f"{_pct(estimate)} as measured (at most {_pct(bound)} from the per-test 95% bounds).",
        "",
        "| test | failures | rate | 95% interval | note |"
        + (" mutants killed |" if kills is not None else ""),
        "| --- | --- | --- | --- | --- |" + (" --- |" if kills is not None else ""),
    ]
    for t in c.tests:
        low, high = t.interval
        if t.skipped:
            note, counts = "skipped by the test", "—"
        else:
            counts = f"{t.failures}/{t.runs}"
            note = (
                "deterministic (same on two seeds, seed unused): skipped early"
                if t.deterministic
                else "**flaky by design**"
                if t in flaky
                else "fails on every seed"
                if t.runs and t.failures == t.runs
                else ""
            )
            if t.failing_seeds:
                seeds = ", ".join(str(s) for s in t.failing_seeds[:8])
                more = len(t.failing_seeds) - 8
                note += f"; seeds {seeds}" + (f" +{more}" if more > 0 else "")
        cell = code(t.nodeid, 150).replace("|", "\\|")  # `|` would end the cell
        row = f"| {cell} | {counts} | {_pct(t.rate)} | {_pct(low)}–{_pct(high)} | {note} |"
        if kills is not None:
            killed = kills.get(t.nodeid, ())
            row += f" {len(killed)}" + (f" ({', '.join(killed)})" if killed else "") + " |"
        lines.append(row)
    for t in flaky:
        lines += ["", f"Reproduce {code(t.nodeid, 150)}: {code(repro(t) or '', 300)}"]
    return "\n".join(lines) + "\n"


def write(c: Calibration, folder: Path, kills: Mapping[str, Sequence[str]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CALIBRATION_FILE
    path.write_text(json.dumps(to_dict(c), indent=2) + "\n")
    (folder / CALIBRATION_MARKDOWN).write_text(markdown(c, kills))
    return path
