"""Where a model's files are on this machine, and keeping them there: the Hugging Face cache.

``locate`` is what the ``models`` fixture and the tier checks use; it never touches the network.
When the project has a lock (``mlcheck.lock``), it reads through it: the model is pinned to the
locked commit, every locked file must be present with its locked size, and the manifest's
safety options (``allow_pickle``, ``trust_remote_code``) travel with the result.

The rest maintains the cache in the layout huggingface_hub uses
(``models--org--name/{blobs,snapshots/<commit>,refs/<revision>}``), so ``from_pretrained``
with ``HF_HUB_OFFLINE=1`` finds the same files:

- :func:`add` puts a local folder into the cache as a model and revision (``cache add``);
- :func:`verify` re-hashes every cached file against the lock (``cache verify``; the hashing
  itself is :mod:`mlcheck.project.verify`);
- :func:`inventory` says what is there (``cache list``); :func:`prune` removes revisions of the
  manifest's models that the lock does not pin (``cache prune``), never anything else; both
  read the cache with huggingface_hub's ``scan_cache_dir``.

Downloading (``cache warm``) is :func:`mlcheck.project.hub.warm`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..constants import env_safety_manifest, hf_hub_cache
from ..errors import (
    LocalModelMissing,
    ModelNotCached,
    ModelNotDeclared,
    ModelNotLocked,
    UsageError,
    hide_frame,
)
from .lock import (
    Lock,
    LockedFile,
    LockedModel,
    Project,
    content_commit,
    entry_for_spec,
    file_problem,
    lock_local_file,
    read_lock,
    require_lock,
    write_lock,
)
from .manifest import Manifest, ModelSpec, Need, load_manifest
from .verify import (
    FileProblem,
    VerifyReport,
    already_verified,
    check_files,
    mark_verified,
    raise_first,
)
from .weights import is_weights_file, loadable_patterns

_COMMIT = re.compile(r"[0-9a-f]{40}")
# Folders of a local model that are tooling, not model files.
_SKIP_DIRS = {".git", ".cache", "__pycache__"}


@dataclass(frozen=True)
class LocalModel:
    """A model's files on disk, with the safety options that apply when loading it."""

    model_id: str
    revision: str | None  # the commit hash for the HF cache; None for a plain local folder
    path: Path
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def has_weights(self) -> bool:
        patterns = loadable_patterns(allow_pickle=self.allow_pickle)
        return any(next(self.path.rglob(p), None) is not None for p in patterns)


# --- locate (offline) ------------------------------------------------------------------------


def locate(
    model_id: str,
    *,
    revision: str | None = None,
    need: Need = "config",
    cache_dir: Path | None = None,
    root: Path | None = None,
    project: Project | None = None,
) -> LocalModel:
    """Find a model's files without touching the network.

    ``model_id`` is a hub id (``"org/name"``) looked up in the Hugging Face cache, or a path to a
    local folder holding ``config.json``. ``project`` is the manifest and lock, read once by the
    caller (the pytest plugin holds one per session); without it they are read from ``root``,
    the project folder (default: found from the current directory upwards). When the lock
    names the model, the locked commit is used and each locked file must be present with its
    locked size (a truncated file raises :class:`CacheCorrupted`: it is never loaded).
    Raises :class:`ModelNotCached` when the files (or, for ``need="weights"``, the weights) are
    not there.

    >>> locate("sentence-transformers/all-MiniLM-L6-v2", need="weights").path  # doctest: +SKIP
    PosixPath('.../snapshots/<commit>')
    """
    __tracebackhide__ = hide_frame  # a miss is the user's next step, not mlcheck's internals
    folder = Path(model_id).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        local = LocalModel(model_id=model_id, revision=None, path=folder.resolve())
        if need == "weights" and not local.has_weights():
            raise ModelNotCached(model_id, None, f"no weights in {folder}")
        return local
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    if project is None:
        project = Project.read(root, trusted=env_safety_manifest())
    spec = project.manifest.model(model_id)
    entry = project.lock.model(model_id) if project.lock else None
    if entry is not None and revision in (None, entry.revision, entry.commit):
        local = _locate_locked(entry, need, cache)
    else:
        wanted = revision or (spec.revision if spec else None)
        try:
            local = _locate_in_hf_cache(model_id, wanted, cache)
        except ModelNotCached as miss:
            if entry is not None:
                raise  # locked at another revision: `cache warm` cannot help either way
            # The message names the command for this state: declare it, or lock it.
            error = (
                ModelNotLocked(model_id, wanted)
                if spec is not None
                else ModelNotDeclared(model_id, need=need, revision=revision)
            )
            error.hub_cause = miss.hub_cause
            raise error from None
    safety = _safety_spec(model_id, spec, project.trusted)
    if safety is not None:
        local = LocalModel(
            model_id=local.model_id,
            revision=local.revision,
            path=local.path,
            allow_pickle=safety.allow_pickle,
            trust_remote_code=safety.trust_remote_code,
        )
    if need == "weights" and not local.has_weights():
        raise ModelNotCached(model_id, local.revision, "config is cached but weights are not")
    return local


def _safety_spec(
    model_id: str, spec: ModelSpec | None, trusted: Manifest | None
) -> ModelSpec | None:
    """Where allow_pickle / trust_remote_code come from: the trusted manifest when one is set
    (``MLCHECK_SAFETY_MANIFEST``; a model it does not name gets neither), else the project's."""
    from .trusted_options import captured

    fixed = captured()  # what `mlcheck run --safety-manifest` resolved before the tests ran
    if fixed is not None:
        pickle, remote = fixed.get(model_id, (False, False))
        base = spec or ModelSpec(model_id)
        return replace(base, allow_pickle=pickle, trust_remote_code=remote)
    return spec if trusted is None else trusted.model(model_id)


def _locate_locked(entry: LockedModel, need: Need, cache: Path) -> LocalModel:
    __tracebackhide__ = hide_frame
    snapshot = snapshot_dir(cache, entry.model_id, entry.commit)
    wanted = entry.needed_files(need)
    if need == "weights" and not any(is_weights_file(f.path) for f in entry.files):
        raise ModelNotCached(
            entry.model_id,
            entry.revision,
            "the lock pins no weights for it",
            fix=f"run `mlcheck add {entry.model_id} --needs weights`",
        )
    missing = [f.path for f in wanted if not (snapshot / f.path).exists()]
    if missing and entry.source == "local":
        raise LocalModelMissing(
            entry.model_id, entry.revision, entry.commit, [f"{m}: missing" for m in missing]
        )
    if missing:
        raise ModelNotCached(
            entry.model_id,
            entry.revision,
            f"locked commit {entry.commit[:12]}: missing {_few(missing)}",
        )
    # Weights are hashed (once per run, see verify_weights) before anything loads them: a
    # same-size corruption passes the size check.
    full = need == "weights" and not already_verified(entry, cache)
    raise_first(entry, check_files(snapshot, wanted, full=full))
    if full:
        mark_verified(entry, cache)
    return LocalModel(model_id=entry.model_id, revision=entry.commit, path=snapshot)


def _locate_in_hf_cache(model_id: str, revision: str | None, cache_dir: Path) -> LocalModel:
    __tracebackhide__ = hide_frame
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(
            snapshot_download(
                model_id, revision=revision, cache_dir=cache_dir, local_files_only=True
            )
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        # ValueError: huggingface_hub's HFValidationError for an id that is not a repo id
        miss = ModelNotCached(model_id, revision)
        miss.hub_cause = exc
        raise miss from None
    if not (snapshot / "config.json").is_file():
        raise ModelNotCached(model_id, revision, "the cached snapshot has no config.json")
    return LocalModel(model_id=model_id, revision=snapshot.name, path=snapshot)


def _few(items: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# --- the cache layout ------------------------------------------------------------------------


def repo_dir(cache: Path, model_id: str) -> Path:
    """``<cache>/models--org--name``, as huggingface_hub names it."""
    return Path(cache) / ("models--" + model_id.replace("/", "--"))


def snapshot_dir(cache: Path, model_id: str, commit: str) -> Path:
    return repo_dir(cache, model_id) / "snapshots" / commit


def _link(blob: Path, pointer: Path) -> None:
    """Point ``snapshots/<commit>/<path>`` at its blob with a relative symlink, like the hub."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))


# --- cache add -------------------------------------------------------------------------------


def add(
    folder: Path,
    model_id: str,
    revision: str = "main",
    *,
    cache_dir: Path | None = None,
    root: Path | None = None,
) -> LockedModel:
    """Put a local model folder into the cache as ``model_id`` at ``revision``.

    Files become blobs named by their hash; the commit is derived from the content (the same
    folder always gives the same commit) unless ``revision`` is itself a 40-hex commit. When
    ``root`` is given, the model's files and hashes are recorded in ``root/mlcheck.lock``.

    >>> add(Path("model"), "org/name", "main", root=Path("."))  # doctest: +SKIP
    LockedModel(model_id='org/name', revision='main', commit='3f2a...', ...)
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; pass the folder holding config.json")
    relpaths = sorted(_walk(folder))
    if not relpaths:
        raise UsageError(f"{folder} holds no files")
    files = [lock_local_file(folder, p) for p in relpaths]
    commit = revision if _COMMIT.fullmatch(revision) else content_commit(files)
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    repo = repo_dir(cache, model_id)
    for f in files:
        blob = repo / "blobs" / f.etag
        # Hashed, not only sized: re-adding is how a broken local model is repaired.
        if file_problem(blob, f, full=True) is not None:
            blob.parent.mkdir(parents=True, exist_ok=True)
            tmp = blob.with_name(f"{blob.name}.{os.getpid()}.incomplete")
            shutil.copyfile(folder / f.path, tmp)
            os.replace(tmp, blob)
        _link(blob, repo / "snapshots" / commit / f.path)
    if commit != revision:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
    manifest = load_manifest(root) if root is not None else None
    entry = entry_for_spec(
        manifest.model(model_id) if manifest else None, model_id, revision, commit, files, "local"
    )
    if root is not None:
        write_lock(root, (read_lock(root) or Lock()).with_model(entry))
    return entry


def _walk(folder: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in filenames:
            yield (Path(dirpath) / name).relative_to(folder).as_posix()


# --- verify ----------------------------------------------------------------------------------


def verify(
    root: Path,
    *,
    cache_dir: Path | None = None,
    models: Sequence[str] | None = None,
    full: bool = True,
) -> VerifyReport:
    """Re-hash every locked file in the cache; report missing files and mismatches.

    >>> verify(Path(".")).ok  # doctest: +SKIP
    True
    """
    lock = require_lock(root)
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    start = time.perf_counter()
    problems: list[FileProblem] = []
    count = nbytes = 0
    for entry in lock.selected(models):
        snapshot = snapshot_dir(cache, entry.model_id, entry.commit)
        files = _checked_files(entry, snapshot)
        found = dict(check_files(snapshot, files, full=full))  # hashed in parallel
        count += len(files)
        nbytes += sum(f.size for f in files if f.path not in found)
        problems += [FileProblem(entry.model_id, path, why) for path, why in found.items()]
    return VerifyReport(count, nbytes, time.perf_counter() - start, tuple(problems))


def _checked_files(entry: LockedModel, snapshot: Path) -> list[LockedFile]:
    """What ``cache verify`` and ``cache list`` hold against the lock: every file a load needs,
    and the other pinned files (a ``cache add`` entry's README.md...) where they are present."""
    needed = entry.needed_files("weights")
    return [f for f in entry.files if f in needed or (snapshot / f.path).exists()]


def verify_weights(
    root: Path, stamp: Path, *, cache_dir: Path | None = None
) -> tuple[list[str], VerifyReport]:
    """Hash every locked file of the manifest's ``needs = "weights"`` models that are in the
    cache, raise :class:`CacheCorrupted` on a mismatch, and write the verified ones to ``stamp``.

    Returns (verified model ids, what was hashed). Models not cached are left to the tests
    (a cache miss is their error).

    >>> verify_weights(Path("."), Path("/tmp/stamp"))  # doctest: +SKIP
    (['sentence-transformers/all-MiniLM-L6-v2'], VerifyReport(...))
    """
    lock = read_lock(root)
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    start = time.perf_counter()
    verified: list[str] = []
    keys: list[str] = []
    count = nbytes = 0
    manifest = load_manifest(root)
    for entry in lock.models.values() if lock is not None else ():
        spec = manifest.models.get(entry.model_id)
        if spec is None or spec.needs != "weights":
            continue
        snapshot = snapshot_dir(cache, entry.model_id, entry.commit)
        files = _checked_files(entry, snapshot)
        if not all((snapshot / f.path).exists() for f in entry.needed_files("weights")):
            continue
        raise_first(entry, check_files(snapshot, files, full=True))
        count += len(files)
        nbytes += sum(f.size for f in files)
        verified.append(entry.model_id)
        keys.append(mark_verified(entry, cache))
    stamp.write_text("".join(k + "\n" for k in keys), encoding="utf-8")
    return verified, VerifyReport(count, nbytes, time.perf_counter() - start)


# --- list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedModel:
    """One row of ``cache list``."""

    model_id: str
    revision: str | None  # from the manifest (or the lock)
    commit: str | None  # locked commit
    needs: str | None
    tier: str  # which tier needs it: "fast" (config) or "real" (weights)
    locked_bytes: int
    present_bytes: int
    missing_files: int
    other_revisions: tuple[str, ...]  # cached commits the lock does not pin (prunable)

    @property
    def status(self) -> str:
        if self.commit is None:
            return "not locked"
        return "complete" if self.missing_files == 0 else f"{self.missing_files} missing"


def inventory(root: Path, *, cache_dir: Path | None = None) -> list[CachedModel]:
    """The manifest's and lock's models, with what of each is in the cache."""
    manifest = load_manifest(root)
    lock = read_lock(root) or Lock()
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    model_ids = sorted(set(manifest.models) | set(lock.models))
    scanned = _scan(cache, model_ids)
    rows = []
    for model_id in model_ids:
        spec: ModelSpec | None = manifest.model(model_id)
        entry = lock.model(model_id)
        present = missing = 0
        if entry is not None:
            snapshot = snapshot_dir(cache, model_id, entry.commit)
            files = _checked_files(entry, snapshot)
            found = dict(check_files(snapshot, files, full=False))
            present = sum(f.size for f in files if f.path not in found)
            missing = len(found)
        needs = spec.needs if spec else (entry.needs if entry else None)
        repo = scanned.repos.get(model_id)
        cached = sorted(r.commit_hash for r in repo.revisions) if repo else []
        rows.append(
            CachedModel(
                model_id=model_id,
                revision=spec.revision if spec else (entry.revision if entry else None),
                commit=entry.commit if entry else None,
                needs=needs,
                tier="real" if needs == "weights" else "fast",
                locked_bytes=entry.size if entry else 0,
                present_bytes=present,
                missing_files=missing,
                other_revisions=tuple(c for c in cached if not entry or c != entry.commit),
            )
        )
    return rows


@dataclass(frozen=True)
class _Scan:
    """huggingface_hub's view of some models' cache folders."""

    info: Any  # huggingface_hub.HFCacheInfo of the whole cache (None: there is no cache)
    repos: dict[str, Any]  # model id -> huggingface_hub.CachedRepoInfo
    damaged: dict[str, str]  # model id -> why huggingface_hub could not read its folder


def _scan(cache: Path, model_ids: Sequence[str]) -> _Scan:
    """Scan the cache with ``scan_cache_dir`` and keep only ``model_ids``' repositories: the
    cache is shared with other projects, and nothing else may be counted or deleted."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return _Scan(info=None, repos={}, damaged={})
    wanted = set(model_ids)
    repos = {r.repo_id: r for r in info.repos if r.repo_type == "model" and r.repo_id in wanted}
    damaged = {}
    for model_id in sorted(wanted - set(repos)):
        folder = repo_dir(cache, model_id)
        if folder.is_dir():  # there, but huggingface_hub skipped it as corrupted
            why = next((str(w) for w in info.warnings if folder.name in str(w)), "unreadable")
            damaged[model_id] = why
    return _Scan(info, repos, damaged)


# --- prune -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneReport:
    removed: tuple[tuple[str, str], ...] = ()  # (model_id, commit)
    freed_bytes: int = 0
    skipped: tuple[str, ...] = ()  # manifest models with no lock entry (nothing known pinned)
    damaged: tuple[tuple[str, str], ...] = ()  # (model_id, why): folders huggingface_hub skips


def prune(root: Path, *, cache_dir: Path | None = None, dry_run: bool = False) -> PruneReport:
    """Remove cached revisions of the manifest's models that the lock does not pin.

    Only folders of models the manifest names are touched: the Hugging Face cache is shared
    with other projects. huggingface_hub plans the deletion (``HFCacheInfo.delete_revisions``):
    blobs still used by the pinned snapshot are kept, refs to removed commits go with them.
    """
    manifest = load_manifest(root)
    lock = read_lock(root) or Lock()
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    scanned = _scan(cache, sorted(manifest.models))
    removed: list[tuple[str, str]] = []
    skipped: list[str] = []
    freed = 0
    for model_id, repo in sorted(scanned.repos.items()):
        entry = lock.model(model_id)
        if entry is None:
            skipped.append(model_id)
            continue
        stale = sorted(r.commit_hash for r in repo.revisions if r.commit_hash != entry.commit)
        if not stale:
            continue
        # One repository at a time: delete_revisions looks a hash up across every repository
        # it holds, and `cache add` of the same files gives two models the same commit.
        only = dataclasses.replace(scanned.info, repos=frozenset({repo}))
        strategy = only.delete_revisions(*stale)
        freed += strategy.expected_freed_size
        removed += [(model_id, c) for c in stale]
        if dry_run:
            continue
        strategy.execute()
        for commit in stale:
            # huggingface_hub leaves its record of the files a removed commit lacks
            shutil.rmtree(repo_dir(cache, model_id) / ".no_exist" / commit, ignore_errors=True)
    return PruneReport(tuple(removed), freed, tuple(skipped), tuple(scanned.damaged.items()))
