"""Replay a constructed multi-model project history through ``--changed-since`` (not a test).

The history (tests/selection_history.py): a package used by a tiny-BERT text model's tests and a
tiny-ViT vision model's tests, a shared helper, a data file, a core file, and 14 commits (bugs
in function bodies, fixes, a module-level constant, docs, a new test, data, conftest, core).
For each commit: the full real tier (truth, and the next file map) and the run selected against
the previous commit. Prints per change: tests, selected, failing in the full run, missed
(failing but not selected: must be 0), and the overall selected fraction.

    python bench/selection_replay.py [--json bench/out/selection_replay.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from selection_history import replay  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        rows = replay(Path(tmp) / "repo")
    print(f"{'change':42} {'tests':>5} {'ran':>4} {'failing':>7} {'missed':>6}")
    for row in rows:
        print(
            f"{row.change:42} {row.total:5d} {row.selected:4d} {row.failing:7d} "
            f"{len(row.missed):6d}"
        )
    total = sum(r.total for r in rows)
    ran = sum(r.selected for r in rows)
    summary = {
        "commits": len(rows),
        "tests_over_commits": total,
        "selected": ran,
        "selected_fraction": round(ran / total, 3),
        "failing": sum(r.failing for r in rows),
        "missed": sum(len(r.missed) for r in rows),
        "disagreed": sum(len(r.disagreed) for r in rows),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "rows": [asdict(r) for r in rows]}))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
