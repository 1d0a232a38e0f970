"""The load cache behind ``models.real``: each model loaded once per worker, reused while unchanged.

Loading real weights is most of a real-tier test's time; sharing one loaded model between tests
is the usual cure, and its usual disease is a leak: one test sets ``requires_grad``, calls
``train()``, registers a hook or edits a weight, and the next test inherits it. So the cache takes
a :class:`Fingerprint` of every model when it is loaded, compares it after each test that used
the model (and again before handing it out), and evicts a model that changed: the next test gets
a fresh copy from disk. What the fingerprint covers, and why each part:

- every module's class, training flag, hook dictionaries (forward, pre-forward, backward,
  state-dict and load hooks, with their keys) and attributes (by identity, or by value for plain
  numbers and strings): ``train()``, hooks, a swapped ``forward`` or submodule;
- every parameter and buffer: identity, ``requires_grad``, dtype, device, shape, storage pointer,
  autograd ``_version`` counter (every in-place op bumps it), whether it holds a ``.grad``, its
  tensor hooks, and a checksum of its values (the wrapping integer sum of its bit patterns). The
  checksum is there because an edit through ``.data`` does not bump ``_version``; it reads every
  element (about 25 ms for MiniLM's 22M on one CPU thread), never a sample, because a sample
  would miss an edit outside it and a leak must not pass a later test;
- the config and generation config (their ``to_dict()``, hashed).

A change anywhere evicts: false evictions cost a reload, a missed change could turn a failure
into a pass. The reload comes from memory where that is cheaper than disk: a model on the CPU
gets a private pristine copy (``copy.deepcopy`` right after loading, never handed out) when
copying it took less time than loading it and both fit the memory bound; the next test after an
eviction for a change gets a copy of that copy (:attr:`ModelCache.restores` counts them).
Models on an accelerator are reloaded from disk: a second copy there would halve what fits.
Memory is bounded (``MLCHECK_MODEL_CACHE_GB``, least recently used first, pristine copies
counted; accelerator memory is released on eviction); ``0`` turns reuse off.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CacheEntry", "Fingerprint", "ModelCache", "fingerprint", "model_bytes", "shared"]

GB = 1024**3
# Attributes whose values are plain data are compared by value, everything else by identity.
_PLAIN = (bool, int, float, str, bytes, type(None))
# Per-module dictionaries of hooks (their keys are the handles' ids): any hook added or removed
# shows up here, whichever of torch's hook kinds it is.
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


@dataclass(frozen=True)
class Fingerprint:
    """What a model looked like: compared as a whole, described part by part."""

    modules: tuple[Hashable, ...]
    tensors: tuple[Hashable, ...]
    checksums: bytes
    config: str

    def difference(self, other: Fingerprint) -> str:
        """What changed between ``self`` (before) and ``other`` (after), in words; '' if nothing."""
        if self.modules != other.modules:
            return "a module's training mode, hooks or attributes"
        if self.tensors != other.tensors:
            return _tensor_difference(self.tensors, other.tensors)
        if self.checksums != other.checksums:
            return "parameter or buffer values (an in-place edit)"
        if self.config != other.config:
            return "the config"
        return ""


def fingerprint(model: torch.nn.Module) -> Fingerprint:
    """The model's :class:`Fingerprint` (one pass over its values, one device sync)."""
    import torch

    modules: list[Hashable] = []
    for module in model.modules():
        hooks = tuple(
            (name, tuple(getattr(module, name).keys()))
            for name in _HOOK_DICTS
            if getattr(module, name, None)
        )
        attributes = tuple(
            (key, value if isinstance(value, _PLAIN) else id(value))
            for key, value in sorted(vars(module).items())
            if key not in _HOOK_DICTS
        )
        modules.append((type(module).__qualname__, module.training, hooks, attributes))
        # registered parameters, buffers and children, by name and identity
        for table in ("_parameters", "_buffers", "_modules"):
            entries = getattr(module, table, {})
            modules.append((table, tuple((k, id(v)) for k, v in entries.items())))

    tensors: list[Hashable] = []
    sums: list[torch.Tensor] = []
    named: list[tuple[str, torch.Tensor]] = [*model.named_parameters(remove_duplicate=False)]
    named += model.named_buffers(remove_duplicate=False)
    with torch.no_grad():
        for name, tensor in named:
            tensors.append(
                (
                    name,
                    id(tensor),
                    tensor.requires_grad,
                    str(tensor.dtype),
                    str(tensor.device),
                    tuple(tensor.shape),
                    tensor.data_ptr() if tensor.device.type != "meta" else 0,
                    tensor._version,
                    tensor.grad is not None,
                    tuple(getattr(tensor, "_backward_hooks", None) or ()),
                )
            )
            if tensor.device.type != "meta" and tensor.numel():
                sums.append(_checksum(tensor))
    # one copy to the host per device: one synchronisation, not one per tensor
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for value in sums:
        by_device.setdefault(value.device, []).append(value)
    checksums = b"".join(
        torch.cat(values).cpu().numpy().tobytes()
        for _, values in sorted(by_device.items(), key=lambda kv: str(kv[0]))
    )
    return Fingerprint(tuple(modules), tuple(tensors), checksums, _config_digest(model))


def _checksum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of the tensor's bit patterns as integers of its width, wrapping: exact (any one
    changed element changes it) and as fast as a float32 sum (a float64 sum was 10x slower)."""
    import torch

    flat = tensor.detach().reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
    bits = flat.view(as_int)
    total = bits.sum(dtype=torch.int64 if as_int == torch.uint8 else as_int)
    return total.reshape(1).to(torch.int64)


def _config_digest(model: torch.nn.Module) -> str:
    parts = []
    for name in ("config", "generation_config"):
        config = getattr(model, name, None)
        to_dict = getattr(config, "to_dict", None)
        if callable(to_dict):
            text = json.dumps(to_dict(), sort_keys=True, default=repr)
            parts.append(f"{name}:{id(config)}:{text}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _tensor_difference(before: tuple[Hashable, ...], after: tuple[Hashable, ...]) -> str:
    fields = ("name", "identity", "requires_grad", "dtype", "device", "shape", "storage",
              "in-place version", "gradient", "tensor hooks")  # fmt: skip
    if len(before) != len(after):
        return "the set of parameters and buffers"
    for old, new in zip(before, after, strict=True):
        if old != new:
            assert isinstance(old, tuple) and isinstance(new, tuple)
            changed = [f for f, a, b in zip(fields, old, new, strict=True) if a != b]
            return f"{', '.join(changed)} of {old[0]}"
    return "parameters or buffers"


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's parameters and buffers hold (tied weights counted once)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "meta":
            continue
        key = (str(tensor.device), tensor.data_ptr())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class CacheEntry:
    model: Any
    fingerprint: Fingerprint
    nbytes: int
    reuses: int = 0
    # a private copy as loaded (never handed out), to restore from after a test changed the
    # model; None when copying was not cheaper than loading, or it did not fit
    pristine: Any = None

    def held_bytes(self) -> int:
        return self.nbytes * (2 if self.pristine is not None else 1)


@dataclass
class ModelCache:
    """Loaded models by key, least recently used first; at most ``limit_bytes`` held.

    ``get(key, load)`` returns ``(model, "reused")`` when the cached model's fingerprint is
    unchanged, else loads with ``load()`` and returns ``(model, "loaded")``. ``release(model)``
    (after each test that used it) evicts a model that changed. ``limit_bytes=0`` keeps nothing.
    """

    limit_bytes: int
    entries: OrderedDict[Hashable, CacheEntry] = field(default_factory=OrderedDict)
    evictions: list[tuple[Hashable, str]] = field(default_factory=list)  # (key, why), newest last
    # None: keep a pristine copy when copying is faster than the load was; True/False: always
    # (when it fits) / never
    restore_from_memory: bool | None = None
    restores: int = 0  # fresh copies made from a pristine copy instead of from disk
    # pristine copies of models evicted because a test changed them, by key
    pristine: dict[Hashable, tuple[Any, int]] = field(default_factory=dict)
    # keys whose copy was slower than their load (or impossible): not copied again, so a load
    # pays for a trial copy once per model, not every time
    copy_slower: set[Hashable] = field(default_factory=set)

    def get(self, key: Hashable, load: Callable[[], Any]) -> tuple[Any, str]:
        entry = self.entries.get(key)
        if entry is not None:
            changed = entry.fingerprint.difference(fingerprint(entry.model))
            if not changed:
                self.entries.move_to_end(key)
                entry.reuses += 1
                return entry.model, "reused"
            self.evict(key, f"changed since it was loaded: {changed}", keep_pristine=True)
        if key in self.pristine:
            snapshot, nbytes = self.pristine.pop(key)
            model = copy.deepcopy(snapshot)  # a copy of the copy: the snapshot stays pristine
            self.restores += 1
            self._hold(key, CacheEntry(model, fingerprint(model), nbytes, pristine=snapshot))
            return model, "loaded"
        started = time.perf_counter()
        model = self._load(load)
        load_seconds = time.perf_counter() - started
        nbytes = model_bytes(model)
        if 0 < nbytes <= self.limit_bytes:
            pristine = None
            tried = self.restore_from_memory is not False and key not in self.copy_slower
            if tried and 2 * nbytes <= self.limit_bytes:
                always = bool(self.restore_from_memory)
                pristine = _pristine_copy(model, load_seconds, always=always)
                if pristine is None:
                    self.copy_slower.add(key)
            self._hold(key, CacheEntry(model, fingerprint(model), nbytes, pristine=pristine))
        return model, "loaded"

    def _hold(self, key: Hashable, entry: CacheEntry) -> None:
        """Keep ``entry`` within the memory bound. Pristine copies go first (they only save
        time), oldest first and this entry's last; then models, least recently used first."""

        def over() -> bool:
            return self.held_bytes() + entry.held_bytes() > self.limit_bytes

        while over() and self.pristine:
            self.pristine.pop(next(iter(self.pristine)))
        for other in self.entries.values():
            if over():
                other.pristine = None
        if over():
            entry.pristine = None
        while over() and self.entries:
            oldest = next(iter(self.entries))
            self.evict(oldest, "least recently used, to stay within the memory bound")
        self.entries[key] = entry

    def release(self, model: Any) -> str:
        """Check ``model`` after a test used it: evict it if it changed. Returns what changed."""
        for key, entry in list(self.entries.items()):
            if entry.model is model:
                changed = entry.fingerprint.difference(fingerprint(model))
                if changed:
                    self.evict(key, f"changed by a test: {changed}", keep_pristine=True)
                return changed
        return ""

    def evict(self, key: Hashable, why: str, *, keep_pristine: bool = False) -> None:
        """Drop the model at ``key``; ``keep_pristine``: keep its pristine copy to restore from
        (a test changed the model; any other eviction frees the copy too)."""
        entry = self.entries.pop(key, None)
        if not keep_pristine:
            self.pristine.pop(key, None)
        if entry is None:
            return
        self.evictions.append((key, why))
        if keep_pristine and entry.pristine is not None:
            self.pristine[key] = (entry.pristine, entry.nbytes)
        entry.pristine = None
        on_accelerator = _on_accelerator(entry.model)
        del entry
        if on_accelerator:
            _free_accelerator_memory()

    def clear(self) -> None:
        for key in list(self.entries):
            self.evict(key, "cleared")
        self.pristine.clear()

    def held_bytes(self) -> int:
        kept = sum(nbytes for _, nbytes in self.pristine.values())
        return sum(e.held_bytes() for e in self.entries.values()) + kept

    def _load(self, load: Callable[[], Any]) -> Any:
        import torch

        try:
            return load()
        except torch.OutOfMemoryError:
            if not self.entries:
                raise
        # the accelerator is full, possibly of cached models: drop them all and try once more
        for key in list(self.entries):
            self.evict(key, "to make room on the accelerator for another model")
        return load()


def _pristine_copy(model: Any, load_seconds: float, *, always: bool) -> Any:
    """A private copy of a CPU model as loaded, when copying took less time than loading
    (or ``always``); None otherwise, or when the model cannot be deep-copied."""
    if _on_accelerator(model):
        return None
    started = time.perf_counter()
    try:
        pristine = copy.deepcopy(model)
    except Exception:  # a model that deepcopy refuses is reloaded from disk instead
        return None
    if always or time.perf_counter() - started < load_seconds:
        return pristine
    return None


def _on_accelerator(model: Any) -> bool:
    try:
        return any(p.device.type not in ("cpu", "meta") for p in model.parameters())
    except (AttributeError, TypeError):
        return False


def _free_accelerator_memory() -> None:
    import torch

    gc.collect()  # models hold reference cycles (hooks, tied weights)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        xpu.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def default_limit_bytes() -> int:
    """Half of the machine's physical memory: the bound when ``MLCHECK_MODEL_CACHE_GB`` is unset."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * GB


def limit_from_gb(gb: float | None) -> int:
    if gb is None:
        return default_limit_bytes()
    return 0 if gb <= 0 or math.isnan(gb) else int(gb * GB)


_SHARED: ModelCache | None = None


def shared() -> ModelCache:
    """This process's cache (one per xdist worker), bounded by ``MLCHECK_MODEL_CACHE_GB``."""
    global _SHARED
    if _SHARED is None:
        from ..constants import model_cache_gb

        _SHARED = ModelCache(limit_bytes=limit_from_gb(model_cache_gb()))
    return _SHARED
