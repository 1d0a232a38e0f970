"""Talking to the hub (``HF_ENDPOINT``): resolve the manifest into a lock, download what it pins.

- :func:`update_lock` / :func:`resolve`: which commit each revision is, and each file's size
  and hash (``mlcheck lock``);
- :func:`warm`: download what the lock names and the cache lacks or holds broken
  (``cache warm``), at the locked commits, in parallel;
- :class:`RetryPolicy` and :func:`call_hub`: every request retried on 429/5xx with backoff;
  every failure a one-line :class:`HubError` that says what to do (:func:`hub_error`).

Everything offline (the lock file, the cache layout, hashing) lives in :mod:`mlcheck.lock`
and :mod:`mlcheck.project.cache`; this is the only module that makes requests to the hub.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..constants import ENV_HF_TOKEN, hf_hub_cache, hf_token
from ..errors import HubError, LocalModelMissing
from .cache import repo_dir, snapshot_dir
from .lock import Lock, LockedFile, LockedModel, entry_for_spec, file_problem, require_lock
from .manifest import Manifest, ModelSpec
from .weights import is_weights_file

T = TypeVar("T")


# --- retries and errors ----------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """Retries of a hub request on 429/5xx/timeouts, honouring ``Retry-After``.

    >>> RetryPolicy(base_s=1.0).wait(attempt=1, retry_after=3.0)
    3.0
    """

    attempts: int = 5
    base_s: float = 1.0
    max_s: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_s * 4)
        # Exponential backoff with jitter, so parallel runners do not retry in lockstep.
        return min(self.max_s, self.base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def call_hub(what: str, call: Callable[[], T], retry: RetryPolicy) -> T:
    """Run one hub request, retrying transient failures; other failures become HubError."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as exc:
            status, retry_after = _http_status(exc)
            if _retryable(exc, status) and attempt < retry.attempts:
                retry.sleep(retry.wait(attempt, retry_after))
                continue
            error = hub_error(exc, what, status)
            if error is None:
                raise
            raise error from None


def _http_status(exc: BaseException) -> tuple[int | None, float | None]:
    response = getattr(exc, "response", None)
    if response is None:
        return None, None
    retry_after: float | None = None
    raw = response.headers.get("retry-after")
    if raw is not None:
        try:
            retry_after = max(0.0, float(raw))
        except ValueError:
            retry_after = None  # an HTTP date: fall back to our own backoff
    return response.status_code, retry_after


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's error types (huggingface_hub moved from httpx to httpx2)."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        found.append(module.HTTPError)
    return tuple(found)


def _retryable(exc: BaseException, status: int | None) -> bool:
    if status is not None:
        return status == 429 or 500 <= status < 600
    # Timeouts and dropped connections are transient; a refused connection means the hub is
    # down or misnamed, and waiting minutes for it helps nobody.
    names = {"TimeoutException", "ReadTimeout", "RemoteProtocolError", "ReadError"}
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def hub_error(exc: BaseException, what: str, status: int | None = None) -> HubError | None:
    """A one-line, actionable HubError for a huggingface_hub failure (None: not a hub error)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"[HF_ENDPOINT={constants.ENDPOINT}]"
    if isinstance(exc, GatedRepoError) or (
        status in (401, 403) and not isinstance(exc, RepositoryNotFoundError)
    ):
        detail = "access denied (gated or private): set HF_TOKEN to a token with access"
    elif isinstance(exc, RepositoryNotFoundError):
        detail = "repository not found (or private: set HF_TOKEN); check the model id"
    elif isinstance(exc, RevisionNotFoundError):
        detail = "revision not found; fix `revision` in the manifest or run `mlcheck lock`"
    elif isinstance(exc, LocalEntryNotFoundError):
        cause = exc.__cause__ or exc.__context__
        detail = f"cannot reach the hub ({type(cause).__name__ if cause else 'no connection'})"
    elif isinstance(exc, EntryNotFoundError) or status == 404:
        detail = (
            "not found on the hub: the repository, the locked commit or the file is gone "
            "(if the repository was rewritten, re-pin it with `mlcheck lock --upgrade`)"
        )
    elif isinstance(exc, HfHubHTTPError) or status is not None:
        detail = f"the hub answered HTTP {status}"
    elif isinstance(exc, (*_transport_errors(), OSError)):
        detail = f"cannot reach the hub ({type(exc).__name__})"
    else:
        return None
    return HubError(redact(f"{what}: {detail} {where}"))


def redact(text: str) -> str:
    """Hide ``HF_TOKEN``'s value (and anything token-shaped) in text that will be printed,
    with :class:`mlcheck.redact.Redactor`, the one redactor.

    >>> redact("no token here")
    'no token here'
    """
    from ..redact import Redactor

    return Redactor.from_env({ENV_HF_TOKEN: hf_token() or ""}).redact(text)


# --- mlcheck lock ----------------------------------------------------------------------------


def update_lock(
    manifest: Manifest, lock: Lock | None, *, upgrade: Sequence[str] | bool = False
) -> tuple[Lock, list[str]]:
    """The lock for ``manifest``: entries that still match are kept, the rest resolved anew.

    Like a package lock, a branch is not re-resolved just because time passed: pass
    ``upgrade=True`` (all models) or a list of model ids to move them to the branch's current
    commit. Entries of models no longer in the manifest are dropped. Returns the new lock and
    the ids that were (re)resolved.
    """
    old = lock or Lock()
    models: dict[str, LockedModel] = {}
    changed = []
    for model_id, spec in sorted(manifest.models.items()):
        entry = old.model(model_id)
        named = not isinstance(upgrade, bool) and model_id in upgrade
        # `--upgrade` of everything leaves `cache add` models alone: no hub has their commit.
        wants_upgrade = named or (upgrade is True and (entry is None or entry.source == "hub"))
        if entry is not None and entry.matches(spec) and not wants_upgrade:
            models[model_id] = entry
            continue
        models[model_id] = resolve(spec)
        changed.append(model_id)
    return Lock(models=models), changed


def resolve(spec: ModelSpec, *, retry: RetryPolicy | None = None) -> LockedModel:
    """Ask the hub (``HF_ENDPOINT``) which commit ``spec.revision`` is and hash its files.

    ``HfApi().model_info(files_metadata=True)`` gives the commit and, on the Hugging Face hub,
    per file the size, git blob id and LFS sha256; servers whose model info lacks file metadata
    (mirrors such as olah) are asked with ``list_repo_tree`` at the resolved commit instead.
    Only files matching the spec's patterns are locked. Raises :class:`HubError` when the hub
    cannot answer.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi()
    policy = retry or RetryPolicy()
    what = f"'{spec.model_id}'@{spec.revision}"
    info = call_hub(
        what,
        lambda: api.model_info(spec.model_id, revision=spec.revision, files_metadata=True),
        policy,
    )
    commit = info.sha
    if not commit:
        raise HubError(f"{what}: the hub reported no commit")
    siblings = info.siblings or []
    meta: dict[str, tuple[int | None, str | None, str | None]] = {
        s.rfilename: (s.size, s.blob_id, s.lfs.sha256 if s.lfs else None) for s in siblings
    }
    if any(blob is None for _, blob, _ in meta.values()):
        tree = call_hub(
            what,
            lambda: list(api.list_repo_tree(spec.model_id, revision=commit, recursive=True)),
            policy,
        )
        meta = {
            f.path: (f.lfs.size if f.lfs else f.size, f.blob_id, f.lfs.sha256 if f.lfs else None)
            for f in tree
            if isinstance(f, RepoFile)
        }
    files = []
    for name in sorted(filter_repo_objects(list(meta), allow_patterns=list(spec.patterns()))):
        size, blob_id, sha256 = meta[name]
        if size is None or (sha256 is None and blob_id is None):
            raise HubError(f"'{spec.model_id}'@{commit[:12]}: the hub gave no size/hash for {name}")
        if sha256 is not None:
            files.append(LockedFile(path=name, size=size, sha256=sha256))
        else:
            files.append(LockedFile(path=name, size=size, git_blob=blob_id))
    if spec.needs == "weights" and not any(is_weights_file(f.path) for f in files):
        raise HubError(
            f"'{spec.model_id}'@{commit[:12]} has no weights matching "
            f"{list(spec.patterns())}; if it only ships pickle (*.bin) weights, set "
            "allow_pickle = true for it in the manifest (after reviewing the source)"
        )
    return entry_for_spec(spec, spec.model_id, spec.revision, commit, files, "hub")


# --- cache warm ------------------------------------------------------------------------------


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
    hub is unreachable or lacks the repository/commit/file, and :class:`LocalModelMissing` for
    a model added with ``cache add`` whose needed files are missing or broken (no hub has it;
    the rest is fetched first). Only the files a load needs count (``needed_files``).

    >>> warm(Path(".")).nothing_to_do  # doctest: +SKIP
    True
    """
    start = time.perf_counter()
    lock = require_lock(root)
    cache = Path(cache_dir) if cache_dir is not None else hf_hub_cache()
    todo: list[tuple[LockedModel, LockedFile]] = []
    repaired: list[tuple[str, str]] = []
    local_missing: list[LocalModelMissing] = []
    present = 0
    for entry in lock.selected(models):
        snapshot = snapshot_dir(cache, entry.model_id, entry.commit)
        problems = []
        for f in entry.needed_files("weights" if weights else "config"):
            problem = file_problem(snapshot / f.path, f, full=not only_missing)
            if problem is None:
                present += 1
                continue
            problems.append(f"{f.path}: {problem}")
            if entry.source == "local":
                continue  # no hub has it: said below, after what a hub can fetch is fetched
            if problem != "missing":
                repaired.append((entry.model_id, f.path))
                _discard(cache, entry, f)
            todo.append((entry, f))
        if problems and entry.source == "local":
            local_missing.append(
                LocalModelMissing(entry.model_id, entry.revision, entry.commit, problems)
            )
    if todo:
        _fetch_all(todo, cache, max_workers, retry or RetryPolicy(), progress)
    missing_ids = {m.model_id for m in local_missing}
    for entry in lock.selected(models):
        if entry.model_id not in missing_ids:
            _pin_ref(cache, entry)
    if local_missing:
        raise local_missing[0]
    return WarmReport(
        downloaded=tuple((e.model_id, f.path) for e, f in todo),
        downloaded_bytes=sum(f.size for _, f in todo),
        present=present,
        repaired=tuple(repaired),
        seconds=time.perf_counter() - start,
    )


def _pin_ref(cache: Path, entry: LockedModel) -> None:
    """Point ``refs/<revision>`` at the locked commit, as huggingface_hub records a download:
    offline, a suite's own ``from_pretrained("org/name")`` (revision main) then resolves to
    exactly the locked snapshot, the one ``models.real`` loads."""
    if entry.revision == entry.commit:
        return
    ref = repo_dir(cache, entry.model_id) / "refs" / entry.revision
    try:
        if ref.read_text(encoding="utf-8").strip() == entry.commit:
            return
    except OSError:
        pass
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(entry.commit, encoding="utf-8")
    except OSError:
        pass  # a read-only cache (a volume mounted :ro): models.real reads through the lock


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
