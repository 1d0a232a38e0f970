"""Benchmark the model cache against a real olah mirror on 127.0.0.1 (not a test).

Measures, on the example project's manifest (examples/textclf: all-MiniLM-L6-v2, weights):

1. ``cache warm`` into a cold cache vs a direct ``huggingface_hub.snapshot_download`` of the
   same files at the same commit, alternated in the same process (median of ``--rounds``);
   the ratio is direct time / warm time (1.0 = as fast as the library on its own; the issue
   asks for >= 0.8). warm also re-hashes every downloaded file against the lock.
2. ``cache verify`` throughput in MB/s (sha256 / git blob ids of every locked file).
3. Requests reaching the hub during a full example-suite run (``mlcheck run --tier fast,real``)
   with a warm cache, counted by the reverse proxy in front of olah: must be 0.

    python bench/cache_warm.py [--rounds 3] [--skip-suite]

Prints a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from hubserver import Hub, hub_env, minilm_dir, start_hub  # noqa: E402

EXAMPLE = REPO / "examples" / "textclf"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# Runs in a child process: huggingface_hub reads HF_ENDPOINT at import.
TIMING = r"""
import json, shutil, statistics, sys, time
from pathlib import Path
from huggingface_hub import snapshot_download
from huggingface_hub.utils import disable_progress_bars
from mlcheck.project.cache import verify
from mlcheck.project.hub import warm
from mlcheck.project.lock import read_lock

disable_progress_bars()
root, scratch, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
lock = read_lock(root)
direct, ours = [], []
for i in range(rounds):
    for kind in (("direct", "warm") if i % 2 == 0 else ("warm", "direct")):
        cache = scratch / f"{kind}-{i}"
        start = time.perf_counter()
        if kind == "direct":
            for entry in lock.models.values():
                snapshot_download(entry.model_id, revision=entry.commit, cache_dir=cache,
                                  allow_patterns=[f.path for f in entry.files])
            direct.append(time.perf_counter() - start)
        else:
            report = warm(root, only_missing=True, cache_dir=cache)
            ours.append(time.perf_counter() - start)
            assert len(report.downloaded) == sum(len(e.files) for e in lock.models.values())
        if i < rounds - 1:
            shutil.rmtree(cache)
final = scratch / f"warm-{rounds - 1}"
if not final.exists():
    final = scratch / f"direct-{rounds - 1}"
verifies = [verify(root, cache_dir=final) for _ in range(3)]
assert all(v.ok for v in verifies), verifies[0].problems
print(json.dumps({
    "bytes": sum(e.size for e in lock.models.values()),
    "files": sum(len(e.files) for e in lock.models.values()),
    "direct_s": direct, "warm_s": ours,
    "verify_mb_per_s": [round(v.mb_per_s, 1) for v in verifies],
    "verify_bytes": verifies[0].checked_bytes,
    "cache": str(final),
}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-suite", action="store_true", help="skip the example-suite run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlcheck-bench-") as tmp:
        work = Path(tmp)
        hub, olah = start_hub(work / "olah")
        try:
            return _run(hub, work, args)
        finally:
            hub.proxy.stop()
            olah.terminate()
            olah.wait(timeout=10)


def _run(hub: Hub, work: Path, args: argparse.Namespace) -> int:
    commit = hub.push_folder(MINILM, minilm_dir(), "all-MiniLM-L6-v2")
    project = work / "textclf"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("mlcheck.lock", "*-results"))
    # Timing talks to olah directly: the counting proxy is for request counts, not speed.
    direct_env = hub_env(hub.olah_url, work / "lock-cache")
    _check(["lock"], project, direct_env)
    timing = subprocess.run(
        [sys.executable, "-c", TIMING, str(project), str(work / "scratch"), str(args.rounds)],
        env=direct_env,
        capture_output=True,
        text=True,
        check=False,
    )
    if timing.returncode != 0:
        print(timing.stderr, file=sys.stderr)
        return 1
    facts = json.loads(timing.stdout.strip().splitlines()[-1])
    direct_s, warm_s = statistics.median(facts["direct_s"]), statistics.median(facts["warm_s"])
    mb = facts["bytes"] / 1e6
    summary: dict[str, object] = {
        "model": MINILM,
        "commit": commit,
        "files": facts["files"],
        "mb": round(mb, 1),
        "rounds": args.rounds,
        "direct_snapshot_download_s": round(direct_s, 3),
        "cache_warm_s": round(warm_s, 3),
        "direct_mb_per_s": round(mb / direct_s, 1),
        "warm_mb_per_s": round(mb / warm_s, 1),
        "ratio_direct_over_warm": round(direct_s / warm_s, 3),
        "verify_mb_per_s": facts["verify_mb_per_s"],
    }
    print(
        f"cold warm: {warm_s:.2f}s ({mb / warm_s:.0f} MB/s) vs direct snapshot_download "
        f"{direct_s:.2f}s ({mb / direct_s:.0f} MB/s): ratio {direct_s / warm_s:.2f}"
    )
    print(f"cache verify: {facts['verify_mb_per_s']} MB/s over {mb:.1f} MB")

    if not args.skip_suite:
        env = hub_env(hub, Path(facts["cache"]))
        env["PYTHONPATH"] = str(project)
        before = hub.requests()
        suite = subprocess.run(
            [sys.executable, "-m", "mlcheck", "run", "--tier", "fast,real", "tests"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        summary["suite_exit_code"] = suite.returncode
        summary["suite_hub_requests"] = hub.requests() - before
        print(
            f"example suite (mlcheck run --tier fast,real), warm cache: exit "
            f"{suite.returncode}, {summary['suite_hub_requests']} requests reached the hub"
        )
        if suite.returncode not in (0, 1):
            print(suite.stdout[-2000:], suite.stderr[-2000:], file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _check(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlcheck", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"mlcheck {' '.join(argv)} failed: {result.stderr}")


if __name__ == "__main__":
    sys.exit(main())
