"""The cached bytes are the locked bytes (mlcheck/project/verify.py): ``cache verify`` finds a
corrupted file and ``cache warm`` repairs it, against olah (a real Hugging Face mirror)."""

from __future__ import annotations

from pathlib import Path

from hubserver import Hub, mlcheck

from mlcheck.project.cache import snapshot_dir


def test_verify_catches_corruption_and_warm_repairs(
    hub: Hub, tiny_on_hub: tuple[str, str, Path, dict[str, str]]
) -> None:
    model, commit, root, env = tiny_on_hub
    assert mlcheck("cache", "warm", cwd=root, env=env).returncode == 0
    assert mlcheck("cache", "verify", cwd=root, env=env).returncode == 0
    snapshot = snapshot_dir(Path(env["HF_HUB_CACHE"]), model, commit)
    weights = (snapshot / "model.safetensors").resolve()
    flipped = bytearray(weights.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # same size: only the hash can tell
    weights.write_bytes(bytes(flipped))
    config = (snapshot / "config.json").resolve()
    config.write_bytes(config.read_bytes()[:10])  # truncated
    (snapshot / "vocab.txt").unlink()  # missing

    result = mlcheck("cache", "verify", cwd=root, env=env)
    assert result.returncode == 1
    assert f"{model}: model.safetensors: sha256" in result.stdout
    assert f"{model}: config.json: size 10 bytes" in result.stdout
    assert f"{model}: vocab.txt: missing" in result.stdout
    assert "3 missing or corrupted" in result.stdout

    warm = mlcheck("cache", "warm", cwd=root, env=env)
    assert warm.returncode == 0, warm.stderr
    assert "repaired" in warm.stdout and "downloaded 3 files" in warm.stdout
    assert mlcheck("cache", "verify", cwd=root, env=env).returncode == 0
