"""A suite's own hub loads, pinned and verified: ``from_pretrained("org/name")`` in a test gets
what ``models.real("org/name")`` gets.

In an opted-in test run (``HF_HUB_OFFLINE=1``), a load of a hub id through transformers or
huggingface_hub (``from_pretrained``, ``AutoConfig.from_pretrained``, ``pipeline(model=...)``,
``hf_hub_download``) goes through :meth:`PinnedLoads.commit_for`:

- a model the project declares (and locks) is read at its **locked commit** from the cache, after
  its cached files were checked against the lock (sizes; hashes once per run, as
  :func:`~mlcheck.project.cache.locate` does for ``models.real``); a corrupted file, a locked file
  missing
  from the cache, or weights the lock does not pin fail the test with the command that fixes it;
- any other id fails the test with one line naming ``mlcheck add ID --needs weights``: in CI no
  cache holds a model that no lock pins, so a local pass on a warm cache would be a CI failure.

huggingface_hub's own mechanisms do most of it: ``HF_HUB_OFFLINE`` keeps every load in the cache,
``cache warm`` records ``refs/<revision>`` -> locked commit as huggingface_hub does after a
download, and the loads below read files at the commit ``resolve_revision`` returns. What
huggingface_hub has no hook for is a project lock: ``refs/main`` in a shared cache is moved by any
other project's online load of the same model (or cannot be written at all, in a read-only cache),
files are never checked against pinned hashes, and an id nobody declared fails as a hub traceback.
So two functions are wrapped, each at the one place where huggingface_hub turns a revision into a
commit:

- ``HfApi.resolve_revision``: every transformers entry point (model, config, tokenizer, processor,
  generation config, ``pipeline``) resolves the revision once through it and then reads each file
  at that commit (``try_to_load_from_cache``). Wrapped on the class, so transformers' shared
  ``HfApi`` instance sees it whatever the import order.
- ``huggingface_hub.file_download._hf_hub_download_to_cache_dir``: where ``hf_hub_download``
  (called by a test, or by transformers for a file not yet known at the commit) reads the cache;
  ``hf_hub_download`` looks it up at each call.

Failures are raised by ``fail``, which the plugin makes ``pytest.fail(..., pytrace=False)``: an
exception that escapes transformers'
fail-open ``except Exception`` around ``resolve_revision`` (which would fall back to ``refs/``, the
unpinned path) and a suite's own ``except OSError: self.skipTest(...)`` (a corrupted or undeclared
model must not read as a skip), shown as one line.

In a fast-tier test, reading a declared model's **weights** fails as ``models.real`` does there
(:class:`~mlcheck.errors.RealWeightsInFastTest`): CI's fast job fetches no weights, so such a
test would pass on a warm cache here and fail there. transformers reads each file of a pinned
commit through its own imported name ``transformers.utils.hub.try_to_load_from_cache`` (no
huggingface_hub hook sees which file), so that name is wrapped too, once transformers is
imported (:meth:`PinnedLoads.wrap_late`, at each test's start).

Loads into another ``cache_dir`` than the project's cache, of datasets or spaces, and of local
folders are left alone.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from ..constants import hf_hub_cache
from ..errors import (
    LocalModelMissing,
    MlcheckError,
    ModelNotCached,
    ModelNotLocked,
    RealWeightsInFastTest,
)
from ..project.cache import snapshot_dir
from ..project.verify import already_verified, check_files, mark_verified, raise_first
from ..project.weights import is_weights_file
from ..stash import NEEDS_KEY
from ..tiers import Tier

if TYPE_CHECKING:
    from ..project.lock import LockedModel, Project

__all__ = ["PinnedLoads", "TierHooks", "install"]


def undeclared_hint(model_id: str) -> str:
    """The one line a load of an undeclared model fails with.

    >>> print(undeclared_hint("org/name"))  # doctest: +ELLIPSIS
    'org/name' is loaded by the test but not declared: run `mlcheck add org/name --needs ...` ...
    """
    # the fix first: terminals and summaries clip long messages
    return (
        f"'{model_id}' is loaded by the test but not declared: run `mlcheck add {model_id} "
        "--needs weights` (tests load only the models in [tool.mlcheck.models], at their "
        "locked commit, so that CI gets the same files)"
    )


Fail = Callable[[str], NoReturn]


class PinnedLoads:
    """Which commit a hub load of a model id reads in this test process, checked against the
    project's lock (``project`` is read on first use: a run that loads nothing reads nothing).
    ``fail(message)`` ends the test (see the module docstring for why it must escape
    ``except Exception``)."""

    def __init__(
        self, project: Callable[[], Project], fail: Fail, cache: Path | None = None
    ) -> None:
        self._project = project
        self._fail = fail
        self.cache = Path(cache) if cache is not None else hf_hub_cache()
        self._checked: set[str] = set()  # model ids whose cached files were checked
        self._lock = threading.Lock()  # loads may run in threads (sharded weights)
        # the running test's node id while its tier is fast (set by the plugin around each test)
        self.fast_test: str | None = None
        self.wrap_late: Callable[[], None] = lambda: None  # set by install()

    def applies(self, repo_id: str, repo_type: str | None, cache_dir: Any) -> bool:
        """Whether the load is one this module pins: a model id (not a folder) in the cache."""
        if repo_type not in (None, "model"):
            return False
        if cache_dir is not None and _resolved(cache_dir) != _resolved(self.cache):
            return False  # a test managing a cache of its own
        if Path(repo_id).expanduser().exists():
            return False
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            return False  # not an id: huggingface_hub says what is wrong with it
        return True

    def commit_for(self, repo_id: str, revision: str | None) -> str:
        """The locked commit of ``repo_id``, its cached files checked; the test fails (one line,
        with the fix) for an undeclared, unlocked or corrupted model or another revision."""
        try:
            project = self._project()
        except MlcheckError as exc:  # an unreadable manifest or lock: said, never loaded around
            self._fail(str(exc))
        entry = project.lock.model(repo_id) if project.lock is not None else None
        if entry is None:
            if project.manifest.model(repo_id) is not None:
                self._fail(str(ModelNotLocked(repo_id, revision or "main")))
            self._fail(undeclared_hint(repo_id))
        if revision not in (None, entry.revision, entry.commit):
            self._fail(
                f"'{repo_id}'@{revision} is loaded by the test, but mlcheck.lock pins "
                f"'{repo_id}'@{entry.revision} (commit {entry.commit[:12]}): load that revision, "
                f"or pin this one with `mlcheck add {repo_id} --revision {revision}`"
            )
        self._check(entry)
        return entry.commit

    def check_tier(self, repo_id: str, filename: str) -> None:
        """A fast-tier test reading weights fails here as it would in CI's fast job."""
        if self.fast_test is not None and is_weights_file(filename):
            self._fail(
                str(
                    RealWeightsInFastTest(
                        repo_id, self.fast_test, what=f"loading {filename} of {repo_id!r}"
                    )
                )
            )

    def check_file(self, repo_id: str, filename: str) -> None:
        """Before ``hf_hub_download`` reads one file of a pinned model: a locked file missing
        from the cache, or weights the lock does not pin, fail with the command that fixes it."""
        entry = self._entry(repo_id)
        locked = entry.file(filename)
        pointer = snapshot_dir(self.cache, repo_id, entry.commit) / filename
        if locked is None:
            if is_weights_file(filename) and not any(is_weights_file(f.path) for f in entry.files):
                self._fail(
                    str(
                        ModelNotCached(
                            repo_id,
                            entry.revision,
                            f"the test loads {filename}, and the lock pins no weights for it",
                            fix=f"run `mlcheck add {repo_id} --needs weights`",
                        )
                    )
                )
            return  # a file the model does not have (transformers probes for optional ones)
        if pointer.exists():
            return
        if entry.source == "local":
            missing = LocalModelMissing(
                repo_id, entry.revision, entry.commit, [f"{filename}: missing"]
            )
            self._fail(str(missing))
        # Weights missing where configs are cached is how CI's fast job looks (it fetches no
        # weights): the test then belongs in the real tier, which `cache warm` cannot tell it.
        fast_tier = (
            "; the fast tier fetches no weights: a test that loads them belongs in the real "
            f'tier (`@slow`, or `@pytest.mark.real_model("{repo_id}")`)'
            if is_weights_file(filename)
            else ""
        )
        self._fail(
            str(
                ModelNotCached(
                    repo_id,
                    entry.revision,
                    f"locked commit {entry.commit[:12]}: missing {filename}",
                )
            )
            + fast_tier
        )

    def _entry(self, repo_id: str) -> LockedModel:
        project = self._project()
        entry = project.lock.model(repo_id) if project.lock is not None else None
        assert entry is not None, "check_file after commit_for"
        return entry

    def _check(self, entry: LockedModel) -> None:
        """The entry's cached files against the lock, once per process: sizes, and hashes
        unless ``mlcheck run`` (or this process) already hashed the model."""
        with self._lock:
            if entry.model_id in self._checked:
                return
            snapshot = snapshot_dir(self.cache, entry.model_id, entry.commit)
            present = [f for f in entry.files if (snapshot / f.path).exists()]
            full = not already_verified(entry, self.cache)
            try:
                raise_first(entry, check_files(snapshot, present, full=full))
            except ModelNotCached as corrupted:
                self._fail(str(corrupted))
            weights = [f for f in entry.files if is_weights_file(f.path)]
            if full and weights and all(f in present for f in weights):
                mark_verified(entry, self.cache)
            self._checked.add(entry.model_id)


class TierHooks:
    """Tells the pinned loads whether the running test is a fast-tier one (its weights loads
    then fail as in CI's fast job), and wraps transformers once a test file imported it."""

    def __init__(self, pins: PinnedLoads) -> None:
        self.pins = pins

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        needs = item.stash.get(NEEDS_KEY, None)
        self.pins.wrap_late()
        self.pins.fast_test = item.nodeid if needs is not None and needs.tier is Tier.FAST else None
        try:
            return (yield)
        finally:
            self.pins.fast_test = None


def _resolved(path: Any) -> Path:
    return Path(path).expanduser().resolve()


def install(pins: PinnedLoads) -> Callable[[], None]:
    """Wrap huggingface_hub's two revision-to-commit points (see the module docstring) so that
    loads go through ``pins``; returns the function that undoes it."""
    from huggingface_hub import ResolvedRevision, file_download
    from huggingface_hub.hf_api import HfApi

    original_resolve = HfApi.resolve_revision
    original_download = file_download._hf_hub_download_to_cache_dir

    def resolve_revision(
        self: HfApi,
        repo_id: str,
        *,
        repo_type: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> ResolvedRevision:
        if not pins.applies(repo_id, repo_type, cache_dir):
            return original_resolve(
                self, repo_id, repo_type=repo_type, revision=revision, cache_dir=cache_dir, **kwargs
            )
        asked = revision.initial if isinstance(revision, ResolvedRevision) else revision
        commit = pins.commit_for(repo_id, asked)
        return ResolvedRevision(resolved=commit, initial=asked, repo_id=repo_id, repo_type="model")

    def download_to_cache_dir(
        *,
        cache_dir: str,
        repo_id: str,
        filename: str,
        repo_type: str,
        revision: str,
        **kwargs: Any,
    ) -> Any:
        if pins.applies(repo_id, repo_type, cache_dir):
            revision = pins.commit_for(repo_id, revision)
            pins.check_tier(repo_id, filename)
            pins.check_file(repo_id, filename)
        return original_download(
            cache_dir=cache_dir,
            repo_id=repo_id,
            filename=filename,
            repo_type=repo_type,
            revision=revision,
            **kwargs,
        )

    wrapped: dict[str, Any] = {}  # transformers.utils.hub's try_to_load_from_cache, once loaded

    def wrap_late() -> None:
        hub = sys.modules.get("transformers.utils.hub")
        if hub is None or "try_to_load_from_cache" in wrapped:
            return
        original_try = wrapped["try_to_load_from_cache"] = hub.try_to_load_from_cache

        def try_to_load_from_cache(
            repo_id: str, filename: str, cache_dir: Any = None, *args: Any, **kwargs: Any
        ) -> Any:
            found = original_try(repo_id, filename, cache_dir, *args, **kwargs)
            repo_type = kwargs.get("repo_type", args[1] if len(args) > 1 else None)
            fast = pins.fast_test is not None and isinstance(found, str)  # a file that is there
            if fast and pins.applies(repo_id, repo_type, cache_dir):
                pins.check_tier(repo_id, filename)
            return found

        hub.try_to_load_from_cache = try_to_load_from_cache  # type: ignore[attr-defined]

    HfApi.resolve_revision = resolve_revision  # type: ignore[method-assign]
    file_download._hf_hub_download_to_cache_dir = download_to_cache_dir
    pins.wrap_late = wrap_late
    wrap_late()

    def undo() -> None:
        HfApi.resolve_revision = original_resolve  # type: ignore[method-assign]
        file_download._hf_hub_download_to_cache_dir = original_download
        hub = sys.modules.get("transformers.utils.hub")
        if hub is not None and "try_to_load_from_cache" in wrapped:
            hub.try_to_load_from_cache = wrapped.pop("try_to_load_from_cache")  # type: ignore[attr-defined]

    return undo
