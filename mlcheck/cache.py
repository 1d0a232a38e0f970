"""Where a model's files are on this machine, and keeping them there: the Hugging Face cache.

``locate`` is what the ``models`` fixture and the tier checks use; it never touches the network.
When the project has a lock (``mlcheck.lock``), it reads through it: the model is pinned to the
locked commit, every locked file must be present with its locked size, and the manifest's
safety options (``allow_pickle``, ``trust_remote_code``) travel with the result.

The rest maintains the cache in the layout huggingface_hub uses
(``models--org--name/{blobs,snapshots/<commit>,refs/<revision>}``), so ``from_pretrained``
with ``HF_HUB_OFFLINE=1`` finds the same files:

- :func:`add` puts a local folder into the cache as a model and revision (``cache add``);
- :func:`warm` downloads what the lock names and is missing or broken (``cache warm``);
- :func:`verify` re-hashes every cached file against the lock (``cache verify``);
- :func:`inventory` says what is there (``cache list``); :func:`prune` removes revisions of the
  manifest's models that the lock does not pin (``cache prune``), never anything else.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from .constants import env_safety_manifest, hf_hub_cache
from .errors import (
    CacheCorrupted,
    HubError,
    ManifestError,
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
    RetryPolicy,
    call_hub,
    content_commit,
    entry_for_spec,
    file_problem,
    lock_local_file,
    read_lock,
    write_lock,
)
from .manifest import Manifest, ModelSpec, find_root, load_manifest

Need = Literal["config", "weights"]

WEIGHT_SAFE_PATTERNS = ("*.safetensors",)
WEIGHT_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
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
        patterns = WEIGHT_SAFE_PATTERNS + (WEIGHT_PICKLE_PATTERNS if self.allow_pickle else ())
        return any(next(self.path.rglob(p), None) is not None for p in patterns)


# --- locate (offline) ------------------------------------------------------------------------


def locate(
    model_id: str,
    *,
    revision: str | None = None,
    need: Need = "config",
    cache_dir: Path | None = None,
    root: Path | None = None,
) -> LocalModel:
    """Find a model's files without touching the network.

    ``model_id`` is a hub id (``"org/name"``) looked up in the Hugging Face cache, or a path to a
    local folder holding ``config.json``. ``root`` is the project folder holding the manifest
    and ``mlcheck.lock`` (default: found from the current directory upwards). When the lock
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
    manifest, lock = _project(root)
    spec = manifest.model(model_id) if manifest else None
    entry = lock.model(model_id) if lock else None
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
    safety = _safety_spec(model_id, spec)
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


def _safety_spec(model_id: str, spec: ModelSpec | None) -> ModelSpec | None:
    """Where allow_pickle / trust_remote_code come from: the trusted manifest when one is set
    (``MLCHECK_SAFETY_MANIFEST``; a model it does not name gets neither), else the project's."""
    from .manifest import ModelSpec
    from .trusted_options import captured

    fixed = captured()  # what `mlcheck run --safety-manifest` resolved before the tests ran
    if fixed is not None:
        pickle, remote = fixed.get(model_id, (False, False))
        base = spec or ModelSpec(model_id)
        return replace(base, allow_pickle=pickle, trust_remote_code=remote)
    trusted = env_safety_manifest()
    if trusted is None:
        return spec
    return load_manifest(trusted).model(model_id)


def _project(root: Path | None) -> tuple[Manifest | None, Lock | None]:
    """The manifest and lock of the project at ``root`` (or found from the cwd)."""
    folder = Path(root) if root is not None else find_root()
    return load_manifest(folder), read_lock(folder)


def _locate_locked(entry: LockedModel, need: Need, cache: Path) -> LocalModel:
    __tracebackhide__ = hide_frame
    snapshot = snapshot_dir(cache, entry.model_id, entry.commit)
    wanted = [f for f in entry.files if need == "weights" or not _is_weight(f.path)]
    if need == "weights" and not any(_is_weight(f.path) for f in entry.files):
        raise ModelNotCached(
            entry.model_id,
            entry.revision,
            "the lock pins no weights for it",
            fix=f"run `mlcheck add {entry.model_id} --needs weights`",
        )
    missing = [f.path for f in wanted if not (snapshot / f.path).exists()]
    if missing:
        raise ModelNotCached(
            entry.model_id,
            entry.revision,
            f"locked commit {entry.commit[:12]}: missing {_few(missing)}",
        )
    # Weights are hashed (once per run, see verify_weights) before anything loads them: a
    # same-size corruption passes the size check.
    full = need == "weights" and not _already_verified(entry, cache)
    _raise_first(entry, _hash_files(snapshot, wanted, full=full))
    if full:
        _verified.add(_stamp_key(entry, cache))
    return LocalModel(model_id=entry.model_id, revision=entry.commit, path=snapshot)


# --- verification stamps ---------------------------------------------------------------------
# `mlcheck run` hashes the manifest's weights models once, in parallel, before pytest starts,
# and lists them in a stamp file outside the workspace (a temp dir; PR code can write the
# workspace), named by $MLCHECK_VERIFIED_STAMP; the test process and its xdist workers read it
# instead of hashing again. Plain pytest, and models met only at collection, hash on first load.

ENV_VERIFIED_STAMP = "MLCHECK_VERIFIED_STAMP"
_verified: set[str] = set()  # this process's


def _stamp_key(entry: LockedModel, cache: Path) -> str:
    return f"{entry.model_id}@{entry.commit}@{cache.resolve()}"


def _already_verified(entry: LockedModel, cache: Path) -> bool:
    key = _stamp_key(entry, cache)
    if key in _verified:
        return True
    stamp = os.environ.get(ENV_VERIFIED_STAMP)
    if stamp:
        try:
            lines = Path(stamp).read_text(encoding="utf-8").splitlines()
        except OSError:
            return False
        if key in lines:
            _verified.add(key)
            return True
    return False


def _raise_first(entry: LockedModel, problems: list[tuple[str, str]]) -> None:
    """A corrupted cached file is an error naming it and the fix."""
    __tracebackhide__ = hide_frame
    if problems:
        path, problem = problems[0]
        raise CacheCorrupted(
            entry.model_id,
            entry.revision,
            f"{path} at locked commit {entry.commit[:12]} has {problem}; "
            "`mlcheck cache warm` repairs it",
        )


def _hash_files(
    snapshot: Path, files: Sequence[LockedFile], *, full: bool
) -> list[tuple[str, str]]:
    """(path, problem) of the files that differ from the lock, hashed in parallel when full
    (hashlib releases the GIL, so threads use several cores)."""
    if not full:
        checks = [(f.path, file_problem(snapshot / f.path, f, full=False)) for f in files]
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            found = pool.map(lambda f: (f.path, file_problem(snapshot / f.path, f)), files)
            checks = list(found)
    return [(path, problem) for path, problem in checks if problem is not None]


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
        if not all((snapshot / f.path).exists() for f in entry.files):
            continue
        _raise_first(entry, _hash_files(snapshot, entry.files, full=True))
        count += len(entry.files)
        nbytes += sum(f.size for f in entry.files)
        verified.append(entry.model_id)
        keys.append(_stamp_key(entry, cache))
        _verified.add(keys[-1])
    stamp.write_text("".join(k + "\n" for k in keys), encoding="utf-8")
    return verified, VerifyReport(count, nbytes, time.perf_counter() - start)


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


def _is_weight(path: str) -> bool:
    return path.endswith(_WEIGHT_SUFFIXES)


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
        if file_problem(blob, f, full=False) is not None:
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


@dataclass(frozen=True)
class FileProblem:
    model_id: str
    path: str
    problem: str  # "missing", or what differs from the lock


@dataclass(frozen=True)
class VerifyReport:
    checked_files: int
    checked_bytes: int
    seconds: float
    problems: tuple[FileProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def mb_per_s(self) -> float:
        return self.checked_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


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
    lock = _require_lock(root)
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    start = time.perf_counter()
    problems: list[FileProblem] = []
    count = nbytes = 0
    for entry in _selected(lock, models):
        snapshot = snapshot_dir(cache, entry.model_id, entry.commit)
        for f in entry.files:
            problem = file_problem(snapshot / f.path, f, full=full)
            count += 1
            if problem is None:
                nbytes += f.size
            else:
                problems.append(FileProblem(entry.model_id, f.path, problem))
    return VerifyReport(count, nbytes, time.perf_counter() - start, tuple(problems))


def _require_lock(root: Path) -> Lock:
    lock = read_lock(root)
    if lock is None:
        raise ManifestError(
            f"{root} has no mlcheck.lock; run `mlcheck lock` (or `mlcheck cache add`) first"
        )
    return lock


def _selected(lock: Lock, models: Sequence[str] | None) -> list[LockedModel]:
    if models is None:
        return [lock.models[m] for m in sorted(lock.models)]
    unknown = [m for m in models if m not in lock.models]
    if unknown:
        raise UsageError(f"not in mlcheck.lock: {', '.join(unknown)}; run `mlcheck lock` first")
    return [lock.models[m] for m in models]


# --- warm ------------------------------------------------------------------------------------


def is_weight_file(path: str) -> bool:
    name = PurePosixPath(path).name
    return any(fnmatch(name, p) for p in WEIGHT_SAFE_PATTERNS + WEIGHT_PICKLE_PATTERNS)


@dataclass(frozen=True)
class WarmReport:
    """What :func:`warm` did: files fetched (and their bytes), files already good, time."""

    downloaded: tuple[tuple[str, str], ...] = ()  # (model_id, path)
    downloaded_bytes: int = 0
    present: int = 0
    repaired: tuple[tuple[str, str], ...] = ()  # broken in the cache, fetched again
    seconds: float = 0.0

    @property
    def nothing_to_do(self) -> bool:
        return not self.downloaded


ProgressFn = Callable[[str, str, int], None]  # (model_id, path, size) when a file is done


def warm(
    root: Path,
    *,
    only_missing: bool = True,
    models: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    max_workers: int = 8,
    retry: RetryPolicy | None = None,
    progress: bool = False,
    weights: bool = True,
) -> WarmReport:
    """Download what ``root/mlcheck.lock`` names and the cache lacks, at the locked commits.

    ``weights=False`` leaves weight files out (a fast-tier run needs configs and tokenizers
    only, so CPU runners don't download gigabytes they won't load).

    ``only_missing=True`` trusts files already cached at their locked size (cheap: right
    before a test run); ``only_missing=False`` re-hashes them and fetches again any that do not
    match (``mlcheck cache warm``). Files are fetched with huggingface_hub from ``HF_ENDPOINT``
    (token from ``HF_TOKEN``), ``max_workers`` at a time, each retried on 429/5xx with backoff.
    A model whose files are all good makes no request at all. Raises :class:`HubError` when the
    hub is unreachable or lacks the repository/commit/file, and :class:`ModelNotCached` for a
    model added with ``cache add`` that is missing (no hub has it).

    >>> warm(Path(".")).nothing_to_do  # doctest: +SKIP
    True
    """
    start = time.perf_counter()
    lock = _require_lock(root)
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    todo: list[tuple[LockedModel, LockedFile]] = []
    repaired: list[tuple[str, str]] = []
    present = 0
    for entry in _selected(lock, models):
        snapshot = snapshot_dir(cache, entry.model_id, entry.commit)
        for f in entry.files:
            if not weights and is_weight_file(f.path):
                continue
            problem = file_problem(snapshot / f.path, f, full=not only_missing)
            if problem is None:
                present += 1
                continue
            if entry.source == "local":
                raise ModelNotCached(
                    entry.model_id,
                    entry.revision,
                    f"{f.path}: {problem}; it was added with `mlcheck cache add`, add it again",
                )
            if problem != "missing":
                repaired.append((entry.model_id, f.path))
                _discard(cache, entry, f)
            todo.append((entry, f))
    if not todo:
        return WarmReport(present=present, seconds=time.perf_counter() - start)
    _fetch_all(todo, cache, max_workers, retry or RetryPolicy(), progress)
    return WarmReport(
        downloaded=tuple((e.model_id, f.path) for e, f in todo),
        downloaded_bytes=sum(f.size for _, f in todo),
        present=present,
        repaired=tuple(repaired),
        seconds=time.perf_counter() - start,
    )


def _discard(cache: Path, entry: LockedModel, f: LockedFile) -> None:
    """Remove a broken file (its snapshot link and blob) so it is fetched afresh."""
    pointer = snapshot_dir(cache, entry.model_id, entry.commit) / f.path
    target = pointer.resolve() if pointer.is_symlink() else pointer
    for path in (pointer, target):
        if path.is_symlink() or path.exists():
            path.unlink()
    blob = repo_dir(cache, entry.model_id) / "blobs" / f.etag
    if blob.exists():
        blob.unlink()


def _fetch_all(
    todo: list[tuple[LockedModel, LockedFile]],
    cache: Path,
    max_workers: int,
    retry: RetryPolicy,
    progress: bool,
) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    # One cheap request per model first: a missing repository or commit, or a hub that is
    # down, fails in a second with a clear message instead of after every file's retries.
    api = HfApi()
    for entry in {e.model_id: e for e, _ in todo}.values():
        _preflight(api, entry, retry)
    bar = _Progress(sum(f.size for _, f in todo), len(todo)) if progress else None
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()  # one bar of ours, not one tqdm bar per file and thread
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            futures = [pool.submit(_fetch_one, e, f, cache, retry) for e, f in todo]
            for future in as_completed(futures):
                entry, f = future.result()
                if bar is not None:
                    bar.done(entry.model_id, f)
    finally:
        if not bars_were_off:
            enable_progress_bars()
        if bar is not None:
            bar.close()


def _preflight(api: Any, entry: LockedModel, retry: RetryPolicy) -> None:
    call_hub(
        f"'{entry.model_id}'@{entry.commit[:12]}",
        lambda: api.model_info(entry.model_id, revision=entry.commit),
        retry,
    )


def _fetch_one(
    entry: LockedModel, f: LockedFile, cache: Path, retry: RetryPolicy
) -> tuple[LockedModel, LockedFile]:
    """Download one locked file (huggingface_hub resumes partial downloads) and check it."""
    from huggingface_hub import hf_hub_download

    what = f"'{entry.model_id}'@{entry.commit[:12]} {f.path}"
    for _ in range(max(1, retry.attempts)):
        path = call_hub(
            what,
            lambda: hf_hub_download(entry.model_id, f.path, revision=entry.commit, cache_dir=cache),
            retry,
        )
        problem = file_problem(Path(path), f)
        if problem is None:
            return entry, f
        _discard(cache, entry, f)
    raise HubError(
        f"{what}: the hub served a file with {problem}; the mirror is wrong or the repository "
        f"was rewritten (run `mlcheck lock --upgrade {entry.model_id}` to re-pin it)"
    )


class _Progress:
    """A rich progress bar over bytes; one line, updated as files complete."""

    def __init__(self, total_bytes: int, total_files: int) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._lock = threading.Lock()
        self._files = total_files
        self._done = 0
        self._progress = Progress(
            TextColumn("[bold]warm[/] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(f"0/{total_files} files", total=total_bytes)
        self._progress.start()

    def done(self, model_id: str, f: LockedFile) -> None:
        with self._lock:
            self._done += 1
            self._progress.update(
                self._task,
                advance=f.size,
                description=f"{self._done}/{self._files} files ({model_id})",
            )

    def close(self) -> None:
        self._progress.stop()


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
    rows = []
    for model_id in sorted(set(manifest.models) | set(lock.models)):
        spec: ModelSpec | None = manifest.model(model_id)
        entry = lock.model(model_id)
        present = missing = 0
        if entry is not None:
            snapshot = snapshot_dir(cache, model_id, entry.commit)
            for f in entry.files:
                if file_problem(snapshot / f.path, f, full=False) is None:
                    present += f.size
                else:
                    missing += 1
        needs = spec.needs if spec else (entry.needs if entry else None)
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
                other_revisions=tuple(
                    c for c in _cached_commits(cache, model_id) if not entry or c != entry.commit
                ),
            )
        )
    return rows


def _cached_commits(cache: Path, model_id: str) -> list[str]:
    snapshots = repo_dir(cache, model_id) / "snapshots"
    return sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []


# --- prune -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneReport:
    removed: tuple[tuple[str, str], ...] = ()  # (model_id, commit)
    freed_bytes: int = 0
    skipped: tuple[str, ...] = ()  # manifest models with no lock entry (nothing known pinned)


def prune(root: Path, *, cache_dir: Path | None = None, dry_run: bool = False) -> PruneReport:
    """Remove cached revisions of the manifest's models that the lock does not pin.

    Only folders of models the manifest names are touched: the Hugging Face cache is shared
    with other projects. Blobs still used by the pinned snapshot are kept.
    """
    manifest = load_manifest(root)
    lock = read_lock(root) or Lock()
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    removed: list[tuple[str, str]] = []
    skipped: list[str] = []
    freed = 0
    for model_id in sorted(manifest.models):
        entry = lock.model(model_id)
        repo = repo_dir(cache, model_id)
        if not repo.is_dir():
            continue
        if entry is None:
            skipped.append(model_id)
            continue
        stale = [c for c in _cached_commits(cache, model_id) if c != entry.commit]
        if not stale:
            continue
        keep_blobs = _blobs_of(repo / "snapshots" / entry.commit)
        doomed_blobs = set().union(*(_blobs_of(repo / "snapshots" / c) for c in stale))
        doomed_blobs -= keep_blobs
        freed += sum(b.stat().st_size for b in doomed_blobs if b.exists())
        removed += [(model_id, c) for c in stale]
        if dry_run:
            continue
        for commit in stale:
            shutil.rmtree(repo / "snapshots" / commit)
            shutil.rmtree(repo / ".no_exist" / commit, ignore_errors=True)
        for blob in doomed_blobs:
            blob.unlink(missing_ok=True)
        refs = repo / "refs"
        if refs.is_dir():
            for ref in [p for p in refs.rglob("*") if p.is_file()]:
                if ref.read_text().strip() in stale:
                    ref.unlink()
    return PruneReport(tuple(removed), freed, tuple(skipped))


def _blobs_of(snapshot: Path) -> set[Path]:
    blobs = set()
    for path in snapshot.rglob("*"):
        if path.is_symlink():
            blobs.add(path.resolve())
    return blobs
