"""mlcheck.lock: format, staleness, hashing, and `mlcheck lock` against a real olah mirror."""

# Fixtures imported from hubserver are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from hubserver import Hub, free_port, hub, hub_env, mlcheck  # noqa: F401
from projects import project

from mlcheck.project.lock import (
    Lock,
    LockedFile,
    LockedModel,
    dumps_lock,
    file_problem,
    git_blob_id,
    read_lock,
    stale_reasons,
    write_lock,
)
from mlcheck.project.manifest import Manifest, ModelSpec

CONFIG = b'{"model_type": "bert", "hidden_size": 16}\n'
WEIGHTS = bytes(range(256)) * 64


def entry(model_id: str = "org/a", **kw: object) -> LockedModel:
    spec = ModelSpec(model_id, needs="weights")
    values: dict[str, object] = {
        "model_id": model_id,
        "revision": "main",
        "commit": "a" * 40,
        "needs": "weights",
        "patterns": spec.patterns(),
        "files": (
            LockedFile(
                "model.safetensors", len(WEIGHTS), sha256=hashlib.sha256(WEIGHTS).hexdigest()
            ),
            LockedFile("config.json", len(CONFIG), git_blob=git_blob_id(CONFIG)),
        ),
    }
    values.update(kw)
    return LockedModel(**values)  # type: ignore[arg-type]


def test_roundtrip_is_sorted_and_stable(tmp_path: Path) -> None:
    lock = Lock(models={"org/b": entry("org/b"), "org/a": entry("org/a")})
    write_lock(tmp_path, lock)
    text = (tmp_path / "mlcheck.lock").read_text()
    assert text.index('"org/a"') < text.index('"org/b"')
    assert text.index('"config.json"') < text.index('"model.safetensors"')
    again = read_lock(tmp_path)
    assert again is not None and dumps_lock(again) == text
    assert again.models["org/a"].file("config.json") == entry().file("config.json")


def test_damaged_lock_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "mlcheck.lock").write_text("version = 1\n[models.x]\nrevision = 1\n")
    with pytest.raises(Exception, match="delete it and run `mlcheck lock`"):
        read_lock(tmp_path)


def test_git_blob_id_is_gits(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(CONFIG)
    expected = subprocess.run(
        ["git", "hash-object", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_blob_id(CONFIG) == expected
    (tmp_path / "empty").write_bytes(b"")
    empty = subprocess.run(
        ["git", "hash-object", str(tmp_path / "empty")], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_blob_id(b"") == empty == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_file_problem_checks_size_and_both_hashes(tmp_path: Path) -> None:
    weights, config = entry().files
    (tmp_path / "w").write_bytes(WEIGHTS)
    (tmp_path / "c").write_bytes(CONFIG)
    assert file_problem(tmp_path / "w", weights) is None
    assert file_problem(tmp_path / "c", config) is None
    flipped = bytearray(WEIGHTS)
    flipped[7] ^= 1
    (tmp_path / "w").write_bytes(bytes(flipped))
    assert file_problem(tmp_path / "w", weights, full=False) is None  # same size: cheap check
    assert "sha256" in (file_problem(tmp_path / "w", weights) or "")
    (tmp_path / "c").write_bytes(CONFIG.replace(b"16", b"32"))
    assert "git_blob" in (file_problem(tmp_path / "c", config) or "")
    (tmp_path / "c").write_bytes(CONFIG[:5])
    assert "size 5 bytes" in (file_problem(tmp_path / "c", config, full=False) or "")
    assert file_problem(tmp_path / "nope", config) == "missing"


def test_stale_reasons() -> None:
    manifest = Manifest(root=Path("."), models={"org/a": ModelSpec("org/a", needs="weights")})
    assert stale_reasons(manifest, Lock(models={"org/a": entry()})) == []
    assert stale_reasons(manifest, None) == ["there is no mlcheck.lock"]
    moved = Manifest(root=Path("."), models={"org/a": ModelSpec("org/a", "v2", "weights")})
    assert "revision 'v2'" in stale_reasons(moved, Lock(models={"org/a": entry()}))[0]
    fewer = Manifest(root=Path("."), models={"org/a": ModelSpec("org/a", needs="config")})
    assert "changed" in stale_reasons(fewer, Lock(models={"org/a": entry()}))[0]
    extra = Lock(models={"org/a": entry(), "org/z": entry("org/z")})
    assert stale_reasons(manifest, extra) == ["'org/z' is in the lock but not in the manifest"]


# --- against olah ---------------------------------------------------------------------------


def test_lock_pins_commit_and_hashes_from_the_hub(hub: Hub, tmp_path: Path) -> None:
    model = hub.model_id("tiny")
    commit = hub.push(
        model,
        {"config.json": CONFIG, "model.safetensors": WEIGHTS, "README.md": b"# hi\n"},
    )
    fast = hub.model_id("fast")
    hub.push(fast, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    root = project(
        tmp_path,
        {model: '{ revision = "main", needs = "weights" }', fast: '{ needs = "config" }'},
    )
    env = hub_env(hub, tmp_path / "cache")
    assert mlcheck("lock", "--check", cwd=root, env=env).returncode == 1  # no lock yet
    result = mlcheck("lock", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    lock = read_lock(root)
    assert lock is not None
    locked = lock.models[model]
    assert locked.commit == commit and locked.source == "hub"
    assert [f.path for f in locked.files] == ["config.json", "model.safetensors"]  # no README
    weights = locked.file("model.safetensors")
    assert weights is not None and weights.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert weights.size == len(WEIGHTS) and weights.git_blob is None
    config = locked.file("config.json")
    assert config is not None and config.git_blob == git_blob_id(CONFIG)
    # needs = "config": no weights locked
    assert [f.path for f in lock.models[fast].files] == ["config.json"]
    check = mlcheck("lock", "--check", cwd=root, env=env)
    assert check.returncode == 0 and "up to date" in check.stdout


def test_moved_branch_needs_upgrade_and_check_is_offline(hub: Hub, tmp_path: Path) -> None:
    model = hub.model_id("moving")
    first = hub.push(model, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    root = project(tmp_path, {model: '{ needs = "weights" }'})
    env = hub_env(hub, tmp_path / "cache")
    assert mlcheck("lock", cwd=root, env=env).returncode == 0
    second = hub.push(model, {"config.json": CONFIG.replace(b"16", b"32")}, "move main")
    assert mlcheck("lock", cwd=root, env=env).returncode == 0
    lock = read_lock(root)
    assert lock is not None and lock.models[model].commit == first  # kept: like a package lock
    result = mlcheck("lock", "--upgrade", model, cwd=root, env=env)
    assert result.returncode == 0 and f"-> {second[:12]}" in result.stdout
    lock = read_lock(root)
    assert lock is not None and lock.models[model].commit == second
    # the manifest changes -> --check fails, and needs no hub to say so
    (root / "pyproject.toml").write_text(f'[tool.mlcheck.models]\n"{model}" = "v2"\n')
    offline = hub_env(f"http://127.0.0.1:{free_port()}", tmp_path / "cache")
    check = mlcheck("lock", "--check", cwd=root, env=offline)
    assert check.returncode == 1 and "revision 'v2'" in check.stdout


def test_missing_repository_or_revision_exit_2(hub: Hub, tmp_path: Path) -> None:
    model = hub.model_id("exists")
    hub.push(model, {"config.json": CONFIG})
    ghost = hub.model_id("ghost")
    root = project(tmp_path, {ghost: "{}"})
    result = mlcheck("lock", cwd=root, env=hub_env(hub, tmp_path / "cache"))
    assert result.returncode == 2
    assert f"'{ghost}'@main: repository not found" in result.stderr
    assert "Traceback" not in result.stderr and hub.url in result.stderr
    (root / "pyproject.toml").write_text(f'[tool.mlcheck.models]\n"{model}" = "nobranch"\n')
    result = mlcheck("lock", cwd=root, env=hub_env(hub, tmp_path / "cache"))
    # olah answers an unknown revision like an unknown repository (401 "Repository Not Found")
    assert result.returncode == 2 and f"'{model}'@nobranch" in result.stderr


def test_hub_down_exit_2(tmp_path: Path) -> None:
    root = project(tmp_path, {"org/a": "{}"})
    dead = f"http://127.0.0.1:{free_port()}"
    result = mlcheck("lock", cwd=root, env=hub_env(dead, tmp_path / "cache"), timeout=60)
    assert result.returncode == 2
    assert "cannot reach the hub" in result.stderr and dead in result.stderr
    assert "Traceback" not in result.stderr


def test_lock_retries_429_with_retry_after(hub: Hub, tmp_path: Path) -> None:
    model = hub.model_id("limited")
    hub.push(model, {"config.json": CONFIG})
    root = project(tmp_path, {model: "{}"})
    hub.proxy.inject(429, times=2, contains=f"/api/models/{model}", **{"Retry-After": "1"})
    before = hub.requests(f"/api/models/{model}")
    result = mlcheck("lock", cwd=root, env=hub_env(hub, tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert hub.requests(f"/api/models/{model}") - before >= 3  # two 429s, then success
    lock = read_lock(root)
    assert lock is not None and model in lock.models
