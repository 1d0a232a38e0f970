"""`mlcheck lock`: pin every manifest model to a commit, with file sizes and hashes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import MissingFile
from ..project.manifest import find_root
from ..text import plural

HELP = "resolve the manifest's model revisions to commits and file hashes in mlcheck.lock"
EXIT_CODES = """\
exit codes: 0 lock written (or, with --check, up to date); 1 --check: the lock is stale against
the manifest; 2 usage or environment problem (bad manifest, hub unreachable, repository or
revision not found)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lock",
        help=HELP,
        description=HELP + ". Entries that still match the manifest are kept; a branch moves "
        "only with --upgrade. Asks HF_ENDPOINT (token from HF_TOKEN).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if mlcheck.lock does not match the manifest (offline, for CI)",
    )
    parser.add_argument(
        "--upgrade",
        nargs="*",
        metavar="MODEL",
        default=None,
        help="re-resolve these models (all hub models when none is named) to their "
        "revision's current commit",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="project folder with the manifest (default: found from cwd)",
    )
    parser.set_defaults(handler=_lock)


def _lock(args: argparse.Namespace) -> int:
    from ..project.hub import update_lock
    from ..project.lock import lock_path, read_lock, stale_reasons, write_lock
    from ..project.manifest import load_manifest

    root = Path(args.root) if args.root is not None else find_root()
    manifest = load_manifest(root)
    if manifest.source is None:
        raise MissingFile(
            f"no manifest in {root}: run `mlcheck add MODEL_ID` (declares, locks and fetches "
            "it), or declare the models your tests use under [tool.mlcheck.models] in "
            "pyproject.toml (or in mlcheck.toml), then run `mlcheck lock`"
        )
    lock = read_lock(root)
    if args.check:
        reasons = stale_reasons(manifest, lock)
        for reason in reasons:
            print(f"stale: {reason}")
        if reasons:
            print("mlcheck.lock is out of date; run `mlcheck lock` and commit the result")
            return 1
        print(f"{lock_path(root)} is up to date ({plural(len(manifest.models), 'model')})")
        return 0
    upgrade: list[str] | bool = (
        False if args.upgrade is None else (list(args.upgrade) if args.upgrade else True)
    )
    new, changed = update_lock(manifest, lock, upgrade=upgrade)
    path = write_lock(root, new)
    for model_id in changed:
        entry = new.models[model_id]
        print(
            f"locked {model_id}@{entry.revision} -> {entry.commit[:12]} "
            f"({plural(len(entry.files), 'file')}, {entry.size / 1e6:.1f} MB)"
        )
    kept = len(new.models) - len(changed)
    print(f"wrote {path}: {plural(len(new.models), 'model')} ({kept} unchanged)")
    return 0
