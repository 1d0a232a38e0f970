"""After a test changed a cached model, the next one gets a fresh copy restored from a private
in-memory copy instead of from disk (mlcheck.model_cache), pristine after every kind of change;
the copies count against the memory bound and go first when room is needed."""

# Fixtures imported from test_model_cache are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import pytest
import transformers as tf
from test_model_cache import MUTATIONS, _pristine, tiny  # noqa: F401

from mlcheck.model_cache import GB, ModelCache, model_bytes


class Disk:
    """The real load from disk (from_pretrained, eval mode, as models.real does), counted."""

    def __init__(self, folder: str) -> None:
        self.folder, self.loads = folder, 0

    def __call__(self) -> Any:
        self.loads += 1
        return tf.BertModel.from_pretrained(self.folder).eval()


@pytest.mark.parametrize("change", sorted(MUTATIONS))
def test_a_changed_model_is_restored_from_memory_and_is_pristine(tiny, change) -> None:
    cache = ModelCache(limit_bytes=4 * GB, restore_from_memory=True)
    disk = Disk(tiny)
    model, how = cache.get("tiny", disk)
    assert how == "loaded" and disk.loads == 1
    MUTATIONS[change](model)
    assert cache.release(model), f"{change} went unnoticed"
    again, how = cache.get("tiny", disk)
    assert (how, disk.loads, cache.restores) == ("loaded", 1, 1)  # from memory, not disk
    assert again is not model
    _pristine(again, tiny)
    # the private copy is never handed out: changed again, restored again, still pristine
    MUTATIONS[change](again)
    assert cache.release(again)
    third, _ = cache.get("tiny", disk)
    assert (disk.loads, cache.restores) == (1, 2) and third is not again
    _pristine(third, tiny)
    assert cache.get("tiny", disk)[0] is third  # unchanged: reused


def test_without_room_for_a_copy_or_when_off_the_model_comes_from_disk(tiny) -> None:
    size = model_bytes(Disk(tiny)())
    for cache in (
        ModelCache(limit_bytes=int(size * 1.5), restore_from_memory=True),  # one copy fits
        ModelCache(limit_bytes=4 * GB, restore_from_memory=False),
    ):
        disk = Disk(tiny)
        model, _ = cache.get("tiny", disk)
        model.train()
        cache.release(model)
        again, _ = cache.get("tiny", disk)
        assert (disk.loads, cache.restores) == (2, 0)
        _pristine(again, tiny)
        assert cache.held_bytes() <= cache.limit_bytes


def test_copies_count_against_the_bound_and_go_before_models_in_use(tiny) -> None:
    size = model_bytes(Disk(tiny)())
    cache = ModelCache(limit_bytes=int(size * 3.5), restore_from_memory=True)
    a, _ = cache.get("a", Disk(tiny))
    assert cache.held_bytes() == 2 * size  # the model and its pristine copy
    b, _ = cache.get("b", Disk(tiny))  # room for b and its copy: a's copy goes, a stays
    assert cache.held_bytes() == 3 * size <= cache.limit_bytes
    assert cache.get("a", Disk(tiny))[0] is a and cache.get("b", Disk(tiny))[0] is b
    assert not cache.evictions  # no model in use was evicted for a copy
