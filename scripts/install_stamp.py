"""Tells scripts/bootstrap.sh whether the editable install of mlcheck is current.

``pip install -e .[extras]`` resolves every dependency again even when all are installed: 12 to
36 s of each demo re-run. An editable install picks up edits to the source by itself; only
pyproject.toml (dependencies, entry points, version), the extras, this script and bootstrap.sh,
the Python, or the checkout's place need a new install. The stamp in the virtual environment
holds the hash of those, one per set of extras.

    python -I scripts/install_stamp.py check ROOT EXTRAS STAMP   # exit 0: current, skip pip
    python -I scripts/install_stamp.py write ROOT EXTRAS STAMP   # after pip succeeded

Run with ``-I`` so that the checkout's own ``mlcheck`` folder (the current directory) does not
pass for an installed package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import re
import sys
from pathlib import Path

DIST = "pytest-mlcheck"


def inputs_hash(root: Path, extras: str) -> str:
    h = hashlib.sha256()
    for part in (str(root.resolve()), extras, sys.version, sys.executable):
        h.update(part.encode() + b"\0")
    for name in ("pyproject.toml", "scripts/bootstrap.sh", "scripts/install_stamp.py"):
        h.update((root / name).read_bytes() + b"\0")
    return h.hexdigest()


def installed(root: Path, extras: str) -> bool:
    """mlcheck imports from this checkout, and every requirement (with the extras) is there."""
    spec = importlib.util.find_spec("mlcheck")
    if spec is None or spec.origin is None:
        return False
    if not Path(spec.origin).resolve().is_relative_to(root.resolve()):
        return False  # an install of another checkout (a shared $MLCHECK_VENV)
    wanted = set(filter(None, extras.split(",")))
    try:
        requires = md.requires(DIST) or []
    except md.PackageNotFoundError:
        return False
    for req in requires:
        name, _, marker = req.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if extra is not None and extra.group(1) not in wanted:
            continue
        dist = re.match(r"[A-Za-z0-9._-]+", name.strip())
        try:
            md.distribution(dist.group(0) if dist else name)
        except md.PackageNotFoundError:
            return False  # uninstalled since: pip must run
    return True


def main(argv: list[str]) -> int:
    action, root, extras, stamp = argv[0], Path(argv[1]), argv[2], Path(argv[3])
    want = inputs_hash(root, extras)
    if action == "write":
        stamp.write_text(want + "\n", encoding="utf-8")
        return 0
    try:
        have = stamp.read_text(encoding="utf-8").strip()
    except OSError:
        return 1
    return 0 if have == want and installed(root, extras) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
