"""What a weights file is (project/weights.py); the lock, the cache and warm agree on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlcheck.errors import ModelNotCached
from mlcheck.project.cache import add, locate, snapshot_dir
from mlcheck.project.hub import warm
from mlcheck.project.lock import lock_local_file
from mlcheck.project.manifest import ModelSpec
from mlcheck.project.weights import is_pickle, is_weights_file, loadable_patterns


@pytest.mark.parametrize(
    "path",
    [
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "sub/folder/model.safetensors",
        "pytorch_model.bin",
        "training_args.bin",
        "model.pt",
        "model.pth",
        "last.ckpt",
        "tf_model.h5",
        "flax_model.msgpack",
        "onnx/model.onnx",
    ],
)
def test_weights_in_every_format_are_weights(path: str) -> None:
    assert is_weights_file(path)


@pytest.mark.parametrize(
    "path",
    [
        "config.json",
        "model.safetensors.index.json",  # the index of shards, not a shard
        "pytorch_model.bin.index.json",
        "tokenizer.model",
        "vocab.txt",
        "safetensors/README.md",
        "modeling_custom.py",
    ],
)
def test_configs_tokenizers_and_indexes_are_not_weights(path: str) -> None:
    assert not is_weights_file(path)


def test_pickle_is_only_the_pickle_formats() -> None:
    assert [p for p in ("a.bin", "a.pt", "a.pth", "a.ckpt") if is_pickle(p)] == [
        "a.bin",
        "a.pt",
        "a.pth",
        "a.ckpt",
    ]
    assert not any(is_pickle(p) for p in ("a.safetensors", "a.h5", "a.onnx", "a.msgpack"))
    assert loadable_patterns(allow_pickle=False) == ("*.safetensors",)
    assert set(loadable_patterns(allow_pickle=True)) == {"*.safetensors", "*.bin", "*.pt"} | {
        "*.pth",
        "*.ckpt",
    }


def test_the_manifest_locks_what_weights_loads() -> None:
    weights = ModelSpec("o/m", needs="weights").patterns()
    config = ModelSpec("o/m", needs="config").patterns()
    assert set(weights) - set(config) == set(loadable_patterns(allow_pickle=False))
    pickle = ModelSpec("o/m", needs="weights", allow_pickle=True).patterns()
    assert set(pickle) - set(config) == set(loadable_patterns(allow_pickle=True))


def test_other_formats_are_pinned_like_lfs(tmp_path: Path) -> None:
    for name in ("model.onnx", "tf_model.h5", "flax_model.msgpack", "config.json"):
        (tmp_path / name).write_bytes(b"x" * 10)
    assert lock_local_file(tmp_path, "model.onnx").is_lfs
    assert lock_local_file(tmp_path, "tf_model.h5").is_lfs
    assert lock_local_file(tmp_path, "flax_model.msgpack").is_lfs
    assert not lock_local_file(tmp_path, "config.json").is_lfs


def test_the_fast_tier_neither_needs_nor_downloads_onnx_h5_or_msgpack(tmp_path: Path) -> None:
    """Regression: warm's weights filter knew only safetensors and pickle, while locate's knew
    every format; a fast-tier warm went for an ONNX file that the fast tier never reads."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for name in ("model.safetensors", "model.onnx", "tf_model.h5", "flax_model.msgpack"):
        (folder / name).write_bytes(b"\0" * 64)
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.mlcheck.models]\n"org/m" = { needs = "weights" }\n')
    cache = tmp_path / "cache"
    entry = add(folder, "org/m", "main", cache_dir=cache, root=root)
    snapshot = snapshot_dir(cache, "org/m", entry.commit)
    for name in ("model.onnx", "tf_model.h5", "flax_model.msgpack"):
        (snapshot / name).unlink()

    # no hub is configured: a download attempt (of a `cache add` model) would raise
    report = warm(root, cache_dir=cache, weights=False)
    assert report.nothing_to_do and report.present == 1  # config.json: nothing else is asked
    assert locate("org/m", need="config", cache_dir=cache, root=root).revision == entry.commit
    # the real tier needs what torch loads (the entry's patterns: safetensors), not the
    # ONNX/TF/Flax copies a `cache add` folder also held (pinned, never required)
    assert locate("org/m", need="weights", cache_dir=cache, root=root).revision == entry.commit
    assert warm(root, cache_dir=cache, weights=True).nothing_to_do
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(ModelNotCached, match="missing"):
        locate("org/m", need="weights", cache_dir=cache, root=root)
    with pytest.raises(ModelNotCached, match=r"model\.safetensors: missing"):
        warm(root, cache_dir=cache, weights=True)
