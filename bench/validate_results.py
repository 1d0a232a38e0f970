"""Benchmark (not a test): how long and how much memory `mlcheck publish` takes to accept or
refuse one untrusted results file of up to 50 MiB (issue 20, finding 6: "validated or refused
within 10 s and 1 GiB").

    python bench/validate_results.py [--json bench/out/validate_results.json]

Each case is written to a temporary file, then loaded by a fresh Python process with
`mlcheck.publish.load_untrusted` (read, bound, parse, schema, dataclasses), which reports its
wall time and peak resident memory (`VmHWM`; `imports` is that peak before loading). The
baseline row validates a smaller file with the pure-Python `jsonschema` (what
`load_untrusted` used before) and with `jsonschema_rs` (what it uses now), in the same
process, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 1024 * 1024

LOAD = """
import json, sys, time
from pathlib import Path
from mlcheck.errors import ResultsError
from mlcheck.publish import load_untrusted
from mlcheck.results.untrusted import _validator
def peak_mib():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
_validator()
before = peak_mib()
start, cpu = time.perf_counter(), time.process_time()
try:
    (r,) = load_untrusted([Path(sys.argv[1])])
    verdict = f"accepted ({len(r.tests):,} tests)"
except ResultsError as exc:
    verdict = "refused: " + str(exc).split(": ", 1)[-1][:60]
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
rss = peak_mib()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": rss,
                  "imports_rss_mib": before,
                  "verdict": verdict}))
"""

BASELINE = """
import json, sys, time
import jsonschema, jsonschema_rs
from mlcheck.results.untrusted import _schema
data = json.loads(open(sys.argv[1], "rb").read())
start = time.perf_counter()
jsonschema.Draft202012Validator(_schema()).validate(data)
py = time.perf_counter() - start
start = time.perf_counter()
jsonschema_rs.Draft202012Validator(_schema()).validate(data)
rs = time.perf_counter() - start
print(json.dumps({"jsonschema_s": py, "jsonschema_rs_s": rs}))
"""


def _test(i: int) -> dict[str, object]:
    failed = i % 50 == 0
    return {
        "nodeid": f"tests/models/test_m{i // 100}.py::test_case[{i}]",
        "outcome": "failed" if failed else "passed",
        "tier": "fast",
        "file": f"tests/models/test_m{i // 100}.py",
        "line": 10 + i % 90,
        "phase": "call",
        "duration": 0.0123,
        "message": "AssertionError: logits differ, max abs diff 0.31 at [0, 3]" if failed else "",
        "attempts": [{"outcome": "failed" if failed else "passed", "duration": 0.0123}],
        "models": [{"id": "org/model", "revision": "main", "cache_hit": True}],
        "device": "cpu",
        "seed": 1234,
    }


def _results(tests: list[dict[str, object]]) -> dict[str, object]:
    return {"schema_version": 2, "run": {"tiers": ["fast"]}, "tests": tests}


def _fit(make_test, target: int) -> bytes:  # type: ignore[no-untyped-def]
    """As many tests as fit in ``target`` bytes."""
    one = len(json.dumps(make_test(10**6))) + 2
    n = max(1, (target - 200) // one)
    while True:
        raw = json.dumps(_results([make_test(i) for i in range(n)])).encode()
        if len(raw) <= target:
            return raw
        n = int(n * 0.98)


def cases() -> dict[str, bytes]:
    target = 50 * MIB - 1024
    # finding 6: one test and 17 million subtests (`{}`, 3 bytes each)
    head = b'{"schema_version": 2, "run": {"tiers": ["fast"]}, "tests": [{"nodeid": "t", '
    head += b'"outcome": "passed", "subtests": ['
    tail = b"{}]}]}"
    subtests = head + b"{}, " * ((target - len(head) - len(tail)) // 4) + tail
    # 50 MiB of tiny strings in one array (no objects at all)
    strings = b'{"schema_version": 2, "run": {"verified": ['
    strings += b'"ab", ' * ((target - len(strings) - 20) // 6) + b'"ab"]}, "tests": []}'
    # one test whose message is the whole file (few values, many bytes)
    big = json.dumps(
        _results([{"nodeid": "t", "outcome": "failed", "message": "x" * (target - 200)}])
    )
    return {
        "17M subtests (finding 6)": subtests,
        "8.7M tiny strings": strings,
        "one 50 MiB message": big.encode(),
        "realistic tests, 50 MiB": _fit(_test, target),
        "realistic tests, 25 MiB": _fit(_test, target // 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--baseline-tests", type=int, default=5000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        print(
            f"{'case':28} {'MiB':>6} {'seconds':>8} {'cpu s':>6} {'peak MiB':>9} {'imports':>8}"
            "  verdict"
        )
        for name, raw in cases().items():
            path.write_bytes(raw)
            done = subprocess.run(
                [sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            row = {"case": name, "mib": len(raw) / MIB, **json.loads(done.stdout)}
            rows.append(row)
            print(
                f"{name:28} {row['mib']:6.1f} {row['seconds']:8.2f} {row['cpu_seconds']:6.2f}"
                f" {row['peak_rss_mib']:9.0f}"
                f" {row['imports_rss_mib']:8.0f}  {row['verdict']}"
            )
        path.write_bytes(
            json.dumps(_results([_test(i) for i in range(args.baseline_tests)])).encode()
        )
        done = subprocess.run(
            [sys.executable, "-c", BASELINE, str(path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        base = json.loads(done.stdout)
        ratio = base["jsonschema_s"] / max(base["jsonschema_rs_s"], 1e-9)
        print(
            f"\nschema check of {args.baseline_tests:,} tests: "
            f"jsonschema {base['jsonschema_s']:.2f} s, "
            f"jsonschema_rs {base['jsonschema_rs_s']:.3f} s ({ratio:.0f}x)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "baseline": base}, indent=1))


if __name__ == "__main__":
    main()
