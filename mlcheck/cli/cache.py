"""`mlcheck cache add | warm | verify | list | prune`: the local model cache, against the lock."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..project.manifest import find_root
from ..text import duration_text, plural

HELP = "fill, check, list and prune the local model cache (the Hugging Face cache)"
# Each subcommand says what it does and what its exit codes mean (`mlcheck cache warm --help`).
_ENV_PROBLEM = "2 usage or environment problem (no lock, bad manifest"
EXIT_CODES = {
    "cache": "exit codes: those of the ACTION (see `mlcheck cache ACTION --help`); 2 no ACTION.",
    "add": f"exit codes: 0 added; {_ENV_PROBLEM}, the folder is not a model).",
    "warm": "exit codes: 0 every locked file is in the cache; "
    f"{_ENV_PROBLEM}, hub unreachable, repository or file not found on the hub).",
    "verify": "exit codes: 0 every file matches the lock; 1 missing or corrupted files "
    f"(`mlcheck cache warm` repairs them); {_ENV_PROBLEM}).",
    "list": f"exit codes: 0 listed; {_ENV_PROBLEM}).",
    "prune": f"exit codes: 0 pruned (or, with --dry-run, listed); {_ENV_PROBLEM}).",
}
DESCRIPTIONS = {
    "add": "Put a local model folder into the cache as MODEL at REVISION, and record its files "
    "in mlcheck.lock: for air-gapped teams, and for weights that come from a package.",
    "warm": "Download exactly what mlcheck.lock names and the cache lacks (configs and tokenizer "
    'files for `needs = "config"` models, weights for `needs = "weights"` ones) from '
    "HF_ENDPOINT (token from HF_TOKEN), with progress, resuming and retrying 429/5xx. Cached "
    "files are re-hashed against the lock unless --quick.",
    "verify": "Re-hash every cached file of the locked revisions against mlcheck.lock (sha256 "
    "for LFS files, git blob ids for the rest). Offline.",
    "list": "The manifest's models: locked revision, what is cached, its size, and the tier "
    "that needs it. Offline.",
    "prune": "Remove cached revisions of the manifest's models that mlcheck.lock no longer "
    "pins. Models the manifest does not name are never touched (the Hugging Face cache is "
    "shared).",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cache",
        help=HELP,
        description=HELP + ". The cache is HF_HUB_CACHE (or HF_HOME/hub).",
        epilog=EXIT_CODES["cache"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=lambda args: _help(parser))
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION")

    add = sub.add_parser(
        "add",
        help="put a local model folder into the cache as a model and revision (air-gapped)",
        **_texts("add"),
    )
    add.add_argument("path", type=Path, help="folder holding the model files (config.json, ...)")
    add.add_argument("--model", required=True, help='model id to file it under, e.g. "org/name"')
    add.add_argument("--revision", default="main", help="revision to record (default: main)")
    add.add_argument(
        "--no-lock", action="store_true", help="do not record the files in mlcheck.lock"
    )
    _common(add)
    add.set_defaults(handler=_add)

    warm = sub.add_parser(
        "warm",
        help="download what mlcheck.lock names and the cache lacks (HF_ENDPOINT, HF_TOKEN)",
        **_texts("warm"),
    )
    warm.add_argument("models", nargs="*", help="only these models (default: all locked)")
    warm.add_argument(
        "--quick",
        action="store_true",
        help="trust cached files of the right size instead of re-hashing them",
    )
    warm.add_argument("--workers", type=int, default=8, help="parallel downloads (default: 8)")
    warm.add_argument("--retries", type=int, default=5, help="attempts per file (default: 5)")
    _common(warm)
    warm.set_defaults(handler=_warm)

    verify = sub.add_parser(
        "verify", help="re-hash cached files against mlcheck.lock", **_texts("verify")
    )
    verify.add_argument("models", nargs="*", help="only these models (default: all locked)")
    _common(verify)
    verify.set_defaults(handler=_verify)

    lst = sub.add_parser(
        "list", help="models, revisions, sizes and the tier that needs them", **_texts("list")
    )
    _common(lst)
    lst.set_defaults(handler=_list)

    prune = sub.add_parser(
        "prune",
        help="remove revisions of the manifest's models that the lock does not pin",
        **_texts("prune"),
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed")
    _common(prune)
    prune.set_defaults(handler=_prune)


def _texts(name: str) -> dict[str, str]:
    return {"description": DESCRIPTIONS[name], "epilog": EXIT_CODES[name]}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="project folder with the manifest and mlcheck.lock (default: found from cwd)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="cache folder (default: HF_HUB_CACHE)"
    )


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root) if args.root is not None else find_root()


def _add(args: argparse.Namespace) -> int:
    from ..project.cache import add
    from ..project.manifest import load_manifest

    root = _root(args)
    entry = add(
        args.path,
        args.model,
        args.revision,
        cache_dir=args.cache_dir,
        root=None if args.no_lock else root,
    )
    print(
        f"added '{entry.model_id}'@{entry.revision} as commit {entry.commit[:12]}: "
        f"{plural(len(entry.files), 'file')}, {_mb(entry.size)}"
        + ("" if args.no_lock else f"; recorded in {root / 'mlcheck.lock'}")
    )
    if not args.no_lock and load_manifest(root).model(args.model) is None:
        # `mlcheck add` finds the entry just locked and asks no hub: it works offline.
        revision = f" --revision {args.revision}" if args.revision != "main" else ""
        print(
            f"note: '{args.model}' is not in the manifest yet; declare it (offline) with: "
            f"mlcheck add {args.model} --needs {entry.needs}{revision}"
        )
    return 0


def _warm(args: argparse.Namespace) -> int:
    from ..project.hub import RetryPolicy, warm

    report = warm(
        _root(args),
        only_missing=args.quick,
        models=args.models or None,
        cache_dir=args.cache_dir,
        max_workers=args.workers,
        retry=RetryPolicy(attempts=max(1, args.retries)),
        progress=sys.stderr.isatty(),
    )
    for model_id, path in report.repaired:
        print(f"repaired {model_id} {path} (did not match the lock)")
    if report.nothing_to_do:
        print(f"cache is warm: {plural(report.present, 'locked file')} present, nothing downloaded")
    else:
        print(
            f"downloaded {plural(len(report.downloaded), 'file')} ({_mb(report.downloaded_bytes)}) "
            f"in {duration_text(report.seconds)}; {report.present:,} already present"
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..project.cache import verify

    report = verify(_root(args), cache_dir=args.cache_dir, models=args.models or None)
    for p in report.problems:
        print(f"{p.model_id}: {p.path}: {p.problem}")
    summary = (
        f"verified {plural(report.checked_files, 'file')}, {_mb(report.checked_bytes)} in "
        f"{duration_text(report.seconds)} ({report.mb_per_s:.0f} MB/s)"
    )
    if report.ok:
        print(f"{summary}: all match mlcheck.lock")
        return 0
    print(
        f"{summary}: {len(report.problems)} missing or corrupted; run `mlcheck cache warm` "
        "to repair",
    )
    return 1


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..project.cache import inventory

    rows = inventory(_root(args), cache_dir=args.cache_dir)
    table = Table(title="mlcheck models")
    for column in ("model", "revision", "commit", "needs", "tier", "size", "cached", "status"):
        table.add_column(column, justify="right" if column in ("size", "cached") else "left")
    table.add_column("other cached revisions")
    for r in rows:
        table.add_row(
            r.model_id,
            r.revision or "-",
            (r.commit or "-")[:12],
            r.needs or "-",
            r.tier,
            _mb(r.locked_bytes),
            _mb(r.present_bytes),
            r.status,
            ", ".join(c[:12] for c in r.other_revisions) or "-",
        )
    Console(width=160).print(table)
    if not rows:
        print("no models in the manifest or mlcheck.lock")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from ..project.cache import prune

    report = prune(_root(args), cache_dir=args.cache_dir, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for model_id, commit in report.removed:
        print(f"{verb} {model_id}@{commit[:12]}")
    for model_id in report.skipped:
        print(f"kept {model_id}: not in mlcheck.lock (run `mlcheck lock` first)")
    for model_id, why in report.damaged:
        print(f"kept {model_id}: huggingface_hub cannot read its cache folder ({why})")
    print(f"{verb} {len(report.removed)} revisions, {_mb(report.freed_bytes)}")
    return 0


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"
