"""``mlcheck.lock``: every manifest model pinned to a commit, with each file's size and hash.

Like a package lock file: tests run on exactly the bytes that were locked. The file is TOML,
sorted and one file per line, so a re-lock shows up as a small, readable diff::

    version = 1

    [models."sentence-transformers/all-MiniLM-L6-v2"]
    revision = "main"
    commit = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    needs = "weights"
    source = "hub"
    patterns = ["*.json", "*.txt", "*.model", "*.tiktoken", "tokenizer*", "*.safetensors"]
    files = [
      { path = "config.json", size = 612, git_blob = "72b987fd805cfa2b58c4c8c952b274a11bfd5a00" },
      { path = "model.safetensors", size = 90868376, sha256 = "53aa5117..." },
    ]

A file stored in Git LFS is pinned by its LFS sha256 (the sha256 of its bytes); any other file
by its git blob id (sha1 of ``"blob <size>\\0" + bytes``). :func:`file_problem` checks both.

Everything here is offline; :mod:`mlcheck.project.hub` resolves a manifest into a lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ManifestError, UnknownName
from .manifest import Manifest, ModelSpec, Need, find_root, load_manifest
from .weights import is_weights_file

LOCK_NAME = "mlcheck.lock"
LOCK_VERSION = 1
Source = Literal["hub", "local"]  # "local": put in the cache by `mlcheck cache add`

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LockedFile:
    """One file of a locked model: exactly one of ``sha256`` (LFS) or ``git_blob`` is set."""

    path: str
    size: int
    sha256: str | None = None
    git_blob: str | None = None

    @property
    def etag(self) -> str:
        """The name huggingface_hub gives this file's blob in the cache (``blobs/<etag>``)."""
        return self.sha256 or self.git_blob or ""

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class LockedModel:
    model_id: str
    revision: str  # as written in the manifest (branch, tag or commit)
    commit: str  # what it resolved to
    needs: str
    patterns: tuple[str, ...]
    source: Source = "hub"
    files: tuple[LockedFile, ...] = ()

    def file(self, path: str) -> LockedFile | None:
        return next((f for f in self.files if f.path == path), None)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def needed_files(self, need: str) -> tuple[LockedFile, ...]:
        """The files a load of this model needs: those its patterns select, without weights for
        ``need="config"`` (the fast tier). A ``cache add`` entry records every file of the
        folder (README.md, .gitattributes...); those are pinned but never required.

        >>> entry = LockedModel("o/n", "main", "c" * 40, "weights", ("*.json", "*.safetensors"),
        ...     files=(LockedFile(".gitattributes", 1, git_blob="a"),
        ...            LockedFile("config.json", 1, git_blob="b"),
        ...            LockedFile("model.safetensors", 1, sha256="c")))
        >>> [f.path for f in entry.needed_files("config")]
        ['config.json']
        """
        from huggingface_hub.utils import filter_repo_objects

        selected = set(
            filter_repo_objects([f.path for f in self.files], allow_patterns=list(self.patterns))
        )
        return tuple(
            f
            for f in self.files
            if f.path in selected and (need == "weights" or not is_weights_file(f.path))
        )

    def matches(self, spec: ModelSpec) -> bool:
        """Whether this entry still satisfies the manifest's entry (same revision and files)."""
        return self.revision == spec.revision and self.patterns == spec.patterns()


@dataclass(frozen=True)
class Lock:
    models: Mapping[str, LockedModel] = field(default_factory=dict)

    def model(self, model_id: str) -> LockedModel | None:
        return self.models.get(model_id)

    def with_model(self, entry: LockedModel) -> Lock:
        return Lock(models={**self.models, entry.model_id: entry})

    def selected(self, models: Sequence[str] | None) -> list[LockedModel]:
        """The entries of ``models`` (all, sorted, when None); an unknown id is a usage error."""
        if models is None:
            return [self.models[m] for m in sorted(self.models)]
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise UnknownName(
                f"not in mlcheck.lock: {', '.join(unknown)}; run `mlcheck lock` first"
            )
        return [self.models[m] for m in models]


@dataclass(frozen=True)
class Project:
    """A project's manifest and lock, read together once: the pytest plugin holds one per
    session, so ``locate`` does not parse them again for every test and model.

    ``trusted`` is the manifest whose safety options apply instead of the project's
    (``MLCHECK_SAFETY_MANIFEST``, the base branch's), when one is set.

    >>> Project.read(Path("/nonexistent")).lock is None
    True
    """

    root: Path
    manifest: Manifest
    lock: Lock | None
    trusted: Manifest | None = None

    @classmethod
    def read(cls, root: Path | None = None, *, trusted: Path | None = None) -> Project:
        """Read the project at ``root`` (default: found from the cwd upwards)."""
        folder = Path(root) if root is not None else find_root()
        return cls(
            root=folder,
            manifest=load_manifest(folder),
            lock=read_lock(folder),
            trusted=load_manifest(trusted) if trusted is not None else None,
        )


def lock_path(root: Path) -> Path:
    return Path(root) / LOCK_NAME


def read_lock(root: Path) -> Lock | None:
    """The project's lock, or None when it has none.

    >>> read_lock(Path("/nonexistent")) is None
    True
    """
    path = lock_path(root)
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise _damaged(path, exc) from exc
    if data.get("version") != LOCK_VERSION:
        raise ManifestError(
            f"{path} has lock version {data.get('version')!r}, this mlcheck reads "
            f"{LOCK_VERSION}; run `mlcheck lock --upgrade` to rewrite it"
        )
    try:
        models = {
            model_id: LockedModel(
                model_id=model_id,
                revision=entry["revision"],
                commit=entry["commit"],
                needs=entry["needs"],
                patterns=tuple(entry["patterns"]),
                source=entry.get("source", "hub"),
                files=tuple(
                    LockedFile(
                        path=f["path"],
                        size=int(f["size"]),
                        sha256=f.get("sha256"),
                        git_blob=f.get("git_blob"),
                    )
                    for f in entry["files"]
                ),
            )
            for model_id, entry in data.get("models", {}).items()
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, exc) from exc
    return Lock(models=models)


def _damaged(path: Path, exc: Exception) -> ManifestError:
    return ManifestError(
        f"{path} is damaged ({type(exc).__name__}: {exc}); delete it and run `mlcheck lock`"
    )


def require_lock(root: Path) -> Lock:
    """The project's lock; a :class:`ManifestError` saying how to make one when there is none."""
    lock = read_lock(root)
    if lock is None:
        raise ManifestError(
            f"{root} has no mlcheck.lock; run `mlcheck lock` (or `mlcheck cache add`) first, or "
            "`mlcheck add MODEL_ID` to declare, lock and fetch a model"
        )
    return lock


def dumps_lock(lock: Lock) -> str:
    """Render the lock as TOML: models and files sorted, so equal locks are equal bytes."""
    lines = [
        "# Generated by `mlcheck lock` and `mlcheck cache add`; do not edit by hand.",
        f"version = {LOCK_VERSION}",
    ]
    for model_id in sorted(lock.models):
        entry = lock.models[model_id]
        lines += [
            "",
            f"[models.{_q(model_id)}]",
            f"revision = {_q(entry.revision)}",
            f"commit = {_q(entry.commit)}",
            f"needs = {_q(entry.needs)}",
            f"source = {_q(entry.source)}",
            f"patterns = [{', '.join(_q(p) for p in entry.patterns)}]",
            "files = [",
        ]
        for f in sorted(entry.files, key=lambda f: f.path):
            digest = (
                f"sha256 = {_q(f.sha256)}" if f.sha256 else f"git_blob = {_q(f.git_blob or '')}"
            )
            lines.append(f"  {{ path = {_q(f.path)}, size = {f.size}, {digest} }},")
        lines.append("]")
    return "\n".join(lines) + "\n"


def write_lock(root: Path, lock: Lock) -> Path:
    """Write the lock atomically (a reader never sees half a file)."""
    path = lock_path(root)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dumps_lock(lock), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _q(text: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(text, ensure_ascii=False)


def stale_reasons(manifest: Manifest, lock: Lock | None) -> list[str]:
    """Why the lock no longer matches the manifest; empty when it is up to date.

    >>> stale_reasons(Manifest(root=Path(".")), Lock())
    []
    """
    if lock is None:
        return [f"there is no {LOCK_NAME}"] if manifest.models else []
    reasons = []
    for model_id, spec in sorted(manifest.models.items()):
        entry = lock.model(model_id)
        if entry is None:
            reasons.append(f"'{model_id}' is in the manifest but not in the lock")
        elif entry.revision != spec.revision:
            reasons.append(
                f"'{model_id}': the manifest asks for revision {spec.revision!r}, "
                f"the lock has {entry.revision!r}"
            )
        elif entry.patterns != spec.patterns():
            reasons.append(
                f"'{model_id}': the files the manifest asks for (needs/allow_patterns/"
                "allow_pickle/trust_remote_code) changed"
            )
    for model_id in sorted(set(lock.models) - set(manifest.models)):
        reasons.append(f"'{model_id}' is in the lock but not in the manifest")
    return reasons


# --- hashing -------------------------------------------------------------------------------


def git_blob_id(data: bytes) -> str:
    """Git's object id of a blob: sha1 of ``"blob <size>\\0" + data``.

    >>> git_blob_id(b"")
    'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
    """
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def hash_file(path: Path, kind: Literal["sha256", "git_blob"]) -> str:
    """Hash a file the way the lock pins it, reading it in chunks."""
    if kind == "sha256":
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha1.update(chunk)
    return sha1.hexdigest()


def file_problem(path: Path, locked: LockedFile, *, full: bool = True) -> str | None:
    """What is wrong with ``path`` against the lock (None: it matches).

    ``full=False`` only compares sizes: cheap enough for every model load; ``full=True`` also
    re-hashes (``cache verify``, ``cache warm``).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != locked.size:
        return f"size {size} bytes, the lock says {locked.size}"
    if not full:
        return None
    kind: Literal["sha256", "git_blob"] = "sha256" if locked.is_lfs else "git_blob"
    actual = hash_file(path, kind)
    if actual != locked.etag:
        return f"{kind} {actual[:12]}..., the lock says {locked.etag[:12]}..."
    return None


# Weights files are pinned by sha256 like LFS would store them, even when added locally.
_LFS_MIN_SIZE = 10 * 1024 * 1024


def lock_local_file(folder: Path, relpath: str) -> LockedFile:
    """Pin a file from a local folder (``cache add``), choosing LFS-style or git-style hashing."""
    path = folder / relpath
    size = path.stat().st_size
    if is_weights_file(relpath) or size >= _LFS_MIN_SIZE:
        return LockedFile(path=relpath, size=size, sha256=hash_file(path, "sha256"))
    return LockedFile(path=relpath, size=size, git_blob=hash_file(path, "git_blob"))


def content_commit(files: Iterable[LockedFile]) -> str:
    """A 40-hex id derived from the files' paths and hashes: same folder, same commit."""
    digest = hashlib.sha1(usedforsecurity=False)
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.size}\0{f.etag}\n".encode())
    return digest.hexdigest()


def entry_for_spec(
    spec: ModelSpec | None,
    model_id: str,
    revision: str,
    commit: str,
    files: Sequence[LockedFile],
    source: Source,
) -> LockedModel:
    """A lock entry; ``needs``/``patterns`` come from the manifest's entry when there is one."""
    base = spec or ModelSpec(model_id=model_id, revision=revision, needs=_needs_of(files))
    return LockedModel(
        model_id=model_id,
        revision=revision,
        commit=commit,
        needs=base.needs,
        patterns=base.patterns(),
        source=source,
        files=tuple(sorted(files, key=lambda f: f.path)),
    )


def _needs_of(files: Sequence[LockedFile]) -> Need:
    return "weights" if any(is_weights_file(f.path) for f in files) else "config"
