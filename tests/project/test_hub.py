"""The hub side of the cache (mlcheck/project/hub.py): retries with ``retry-after``, ``cache
warm`` against olah (a real Hugging Face mirror), and the errors when the hub is down."""

from __future__ import annotations

import shutil
from pathlib import Path

from hubserver import Hub, free_port, hub_env, mlcheck

from mlcheck.project.hub import RetryPolicy


def test_retry_wait_honours_retry_after() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=8.0)
    assert policy.wait(1, 3.0) == 3.0
    assert 0.5 <= policy.wait(1, None) <= 1.0
    assert policy.wait(10, None) <= 8.0


def test_warm_twice_downloads_nothing_the_second_time(
    hub: Hub, tiny_on_hub: tuple[str, str, Path, dict[str, str]]
) -> None:
    model, commit, root, env = tiny_on_hub
    before = hub.requests()
    assert mlcheck("cache", "warm", cwd=root, env=env).returncode == 0
    assert hub.requests(f"/{model}/resolve/{commit}/") > 0
    between = hub.requests()
    second = mlcheck("cache", "warm", cwd=root, env=env)
    assert second.returncode == 0 and "nothing downloaded" in second.stdout
    assert hub.requests() == between > before


def test_warm_retries_429_and_503(
    hub: Hub, tiny_on_hub: tuple[str, str, Path, dict[str, str]]
) -> None:
    model, commit, root, env = tiny_on_hub
    path = f"/{model}/resolve/{commit}/config.json"
    hub.proxy.inject(429, times=1, contains=path, **{"Retry-After": "1"})
    hub.proxy.inject(503, times=1, contains=path)
    before = hub.requests(path)
    result = mlcheck("cache", "warm", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert hub.requests(path) - before >= 3
    assert mlcheck("cache", "verify", cwd=root, env=env).returncode == 0


def test_hub_down_or_repository_gone_exit_2(
    hub: Hub, tiny_on_hub: tuple[str, str, Path, dict[str, str]], tmp_path: Path
) -> None:
    model, commit, root, env = tiny_on_hub
    secret = "hf_mlcheckTESTtokenNEVERprinted"
    dead = {**hub_env(f"http://127.0.0.1:{free_port()}", tmp_path / "cache"), "HF_TOKEN": secret}
    result = mlcheck("cache", "warm", cwd=root, env=dead, timeout=60)
    assert result.returncode == 2
    assert "cannot reach the hub" in result.stderr and model in result.stderr
    assert "Traceback" not in result.stderr and secret not in result.stdout + result.stderr

    shutil.rmtree(hub.repo_dir(model))
    gone = mlcheck("cache", "warm", cwd=root, env={**env, "HF_TOKEN": secret})
    assert gone.returncode == 2
    # olah answers a commit of a deleted repo with 404 EntryNotFound (the hub: RepoNotFound)
    assert f"'{model}'@{commit[:12]}: " in gone.stderr
    assert "not found" in gone.stderr and "Traceback" not in gone.stderr
    assert secret not in gone.stdout + gone.stderr
