"""What does running a test body as N ranks cost, against the same body in one process? (not a
test)

Generates a suite of ``--tests`` bodies (a small model's training steps), each twice: marked
``@pytest.mark.distributed(world_size=N)`` and plain. Both halves run in ONE pytest session
(alternating, so machine noise hits both alike) and the per-test call durations pytest reports
are summed per half. Prints the totals and their ratio; ``--json`` writes them. Usage::

    python bench/distributed_overhead.py [--tests 4] [--world-size 2] [--json out.json]

The distributed half pays, per test, N interpreter start-ups with ``import torch``, joining the
process group, and the rank processes' teardown: that is the number this measures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BODY = """
import pytest, torch


def body():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 64), torch.randint(0, 8, (32,))
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
"""

PAIR = """

@pytest.mark.distributed(world_size={world_size})
def test_dist_{i}(dist):
    body()


def test_plain_{i}():
    body()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=4)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text("[tool.mlcheck]\n")
        text = BODY + "".join(
            PAIR.format(i=i, world_size=args.world_size) for i in range(args.tests)
        )
        (root / "test_bench.py").write_text(text)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                "--durations=0",
                "-vv",
                "test_bench.py",
            ],
            cwd=root,
            env={**os.environ},
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    totals = {"dist": 0.0, "plain": 0.0}
    for seconds, kind in re.findall(
        r"^([\d.]+)s call\s+\S+::test_(dist|plain)_\d+", proc.stdout, re.M
    ):
        totals[kind] += float(seconds)
    ratio = totals["dist"] / totals["plain"] if totals["plain"] else float("inf")
    result = {
        "tests": args.tests,
        "world_size": args.world_size,
        "distributed_s": round(totals["dist"], 3),
        "one_process_s": round(totals["plain"], 3),
        "ratio": round(ratio, 1),
    }
    print(
        f"{args.tests} bodies: distributed (world_size={args.world_size}) "
        f"{totals['dist']:.2f} s, one process {totals['plain']:.2f} s, ratio {ratio:.1f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
