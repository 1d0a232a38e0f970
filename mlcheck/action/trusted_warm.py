"""Gated and private models for PR code: the trusted side fetches them, the PR never sees the token.

A pull request's code (its ``install`` command, conftest and tests) must not hold ``HF_TOKEN``:
it could print it, send it away or keep it. Yet a GPU run of a project whose models are gated
needs their files. So the cache is filled first, by a trusted process that holds the token
and runs none of the PR's code, and the PR's code then runs offline, without it:

1. the trusted side (the action's root process, or a workflow step with the secret given to
   that step only) reads the PR's ``mlcheck.lock`` **as data**: no link followed, a regular
   file of bounded size (:func:`mlcheck.results.untrusted_files.read_beneath`), parsed and then
   validated (:func:`validate_lock`): model ids, commits, revisions and file paths must be
   what the hub could have written, so no entry makes the token's holder write outside a
   model's snapshot in the cache;
2. :func:`mlcheck.project.hub.warm` downloads what the lock names at its locked commits, into the
   cache the PR's code will read (``HF_HUB_CACHE``), with ``HF_TOKEN`` from this process's
   environment. The hub is ``HF_ENDPOINT`` from the workflow's environment, never from the
   PR, so the token goes nowhere the PR chose;
3. the PR's code runs in the sandbox (:mod:`mlcheck.action.sandbox`): ``HF_TOKEN``,
   ``HUGGING_FACE_HUB_TOKEN`` and every ``INPUT_*`` are removed from its environment, and the
   trusted processes holding the token run as another user, so ``/proc`` does not show it.

The cache must not be inside the workspace: the PR's checkout could have put links there
that the trusted writer would follow (:func:`check_cache_location`).

Command line (the GPU workflow's warming step)::

    python -I -m mlcheck.action.trusted_warm --tier real,gpu [--project DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import constants as C
from ..errors import ManifestError, MlcheckError, UsageError
from ..project.lock import LOCK_NAME, Lock, LockedModel, read_lock, write_lock
from ..results.untrusted_files import read_beneath

MAX_LOCK_BYTES = 8 << 20  # a lock of thousands of models is a few hundred KB
# What the hub accepts as a repository id: ``name`` or ``org/name``.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SAFE_CHARS = re.compile(r"[A-Za-z0-9._+@=, ()\[\]/-]+")


def _safe_relative(text: str) -> bool:
    """A relative POSIX path of plain components (no ``..``, ``.``, empty, absolute or ``\\``)."""
    if not text or not _SAFE_CHARS.fullmatch(text) or text.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in text.split("/"))


def entry_problems(entry: LockedModel) -> list[str]:
    """Why ``entry`` (from a lock the PR wrote) must not be fetched; empty when it may.

    >>> from mlcheck.project.lock import LockedFile
    >>> bad = LockedModel("org/m", "main", "a" * 40, "weights", ("*",),
    ...                   files=(LockedFile("../x", 1),))
    >>> entry_problems(bad)
    ["file path '../x' is not a plain relative path"]
    """
    problems = []
    if not _MODEL_ID.fullmatch(entry.model_id) or ".." in entry.model_id:
        problems.append(f"model id {entry.model_id!r} is not a hub repository id")
    if not _COMMIT.fullmatch(entry.commit):
        problems.append(f"commit {entry.commit!r} is not a 40-digit commit hash")
    if not _safe_relative(entry.revision):
        problems.append(f"revision {entry.revision!r} is not a plain branch, tag or commit name")
    for f in entry.files:
        if not _safe_relative(f.path):
            problems.append(f"file path {f.path!r} is not a plain relative path")
        if f.size < 0:
            problems.append(f"file {f.path!r} has a negative size")
    return problems


def validate_lock(lock: Lock) -> Lock:
    """``lock`` when every entry is safe to fetch with the token; else a :class:`ManifestError`
    naming each refused entry and why (nothing is fetched then)."""
    refused = [
        f"{entry.model_id!r}: {'; '.join(problems)}"
        for entry in lock.models.values()
        if (problems := entry_problems(entry))
    ]
    if refused:
        raise ManifestError(
            f"{LOCK_NAME} of the code under test was read as data and refused, so nothing was "
            f"fetched with the hub token: {' | '.join(refused)}. Re-create it with `mlcheck lock`"
        )
    return lock


def read_untrusted_lock(project: Path) -> Lock | None:
    """The lock in ``project`` (a folder the PR wrote), read as data and validated; None
    when there is none."""
    try:
        data = read_beneath(project, LOCK_NAME, MAX_LOCK_BYTES)
    except FileNotFoundError:
        return None
    with tempfile.TemporaryDirectory(prefix="mlcheck-lock-") as private:
        (Path(private) / LOCK_NAME).write_bytes(data)
        lock = read_lock(Path(private))  # the same parser and errors as any lock
    return validate_lock(lock) if lock is not None else None


def check_cache_location(cache: Path, workspace: Path | None) -> None:
    """Refuse a cache inside the workspace: the PR's checkout is there, and links it holds
    would be followed by the writer that holds the token."""
    if workspace is None:
        return
    cache_abs = Path(os.path.abspath(cache))
    ws = Path(os.path.abspath(workspace))
    if cache_abs == ws or ws in cache_abs.parents:
        raise UsageError(
            f"the hub cache {cache} is inside the workspace {workspace}, which holds the code "
            "under test: set HF_HUB_CACHE to a folder outside it (e.g. $RUNNER_TEMP/hf-cache)"
        )


def needs_weights(tier: str) -> bool:
    """Whether ``tier`` (``fast``, ``real,gpu``, ``all``...) loads weights (else configs only).

    >>> needs_weights("fast"), needs_weights("real,gpu"), needs_weights("all")
    (False, True, True)
    """
    names = {t.strip() for t in tier.split(",")}
    return bool(names & {"real", "gpu", "all"})


def warm_for_pr(
    project: Path,
    *,
    cache: Path,
    weights: bool,
    workspace: Path | None = None,
) -> str:
    """Fill ``cache`` with what the PR's lock names (``HF_TOKEN`` from this process's
    environment, the hub from ``HF_ENDPOINT``); a one-line account for the log."""
    from ..errors import LocalModelMissing
    from ..project.hub import warm

    check_cache_location(cache, workspace)
    lock = read_untrusted_lock(project)
    if lock is None:
        return f"no {LOCK_NAME} in {project}: nothing to fetch"
    with tempfile.TemporaryDirectory(prefix="mlcheck-lock-") as private:
        write_lock(Path(private), lock)  # only the validated entries, as this parser read them
        try:
            report = warm(Path(private), only_missing=True, cache_dir=cache, weights=weights)
        except LocalModelMissing as missing:
            return f"warning: {missing}"  # no hub has it; the tests that load it say so
    token = "with HF_TOKEN" if C.hf_token() else "without a token"
    mb = report.downloaded_bytes / 1e6
    return (
        f"fetched {len(report.downloaded)} locked file(s), {mb:.1f} MB, {token}; "
        f"{report.present} already cached; the code under test runs without the token"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -I -m mlcheck.action.trusted_warm",
        description="Fetch what the PR's mlcheck.lock names into the hub cache, with HF_TOKEN, "
        "before any of the PR's code runs (see the module docstring).",
    )
    parser.add_argument("--project", default=".", help="the folder with mlcheck.lock")
    parser.add_argument("--tier", default="real,gpu", help="fast fetches configs only")
    parser.add_argument("--workspace", default="", help="default: $GITHUB_WORKSPACE")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    workspace = args.workspace or C.get(C.ENV_GITHUB_WORKSPACE, environ)
    try:
        line = warm_for_pr(
            Path(args.project),
            cache=C.hf_hub_cache(environ),
            weights=needs_weights(args.tier),
            workspace=Path(workspace) if workspace else None,
        )
    except MlcheckError as exc:
        print(f"::error::mlcheck: {exc}", flush=True)
        return exc.exit_code
    print(f"mlcheck: {line}", flush=True)
    return 0


__all__ = [
    "check_cache_location",
    "entry_problems",
    "main",
    "needs_weights",
    "read_untrusted_lock",
    "validate_lock",
    "warm_for_pr",
]

if __name__ == "__main__":
    sys.exit(main())
