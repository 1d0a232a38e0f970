"""Rewrite the golden reports after an intended change: ``python tests/data/report-golden/regenerate.py``.

Review the diff (``git diff tests/data/report-golden``) before committing: it is what users will see.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import cases  # noqa: E402


def main() -> int:
    expected = cases.render_all()
    for name, text in sorted(expected.items()):
        path = cases.GOLDEN / name
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            path.write_text(text, encoding="utf-8")
            print(f"{'updated' if old is not None else 'created'} {path}")
    stale = {p.name for p in cases.GOLDEN.glob("*.md")} | {
        p.name for p in cases.GOLDEN.glob("*.txt")
    }
    for name in sorted(stale - set(expected)):
        print(f"stale (not produced any more, delete it): {cases.GOLDEN / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
