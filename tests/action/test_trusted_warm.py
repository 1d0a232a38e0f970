"""Gated models without exposing the hub token (mlcheck.action.trusted_warm, README "Gated
and private models in CI"): the trusted side fetches them with HF_TOKEN before the PR's code runs,
and the PR's code, in the sandbox, finds the token nowhere — the same hunt as the fast job's
(tests/action/test_sandbox.py::test_pr_code_cannot_find_the_token), against olah as a gated hub."""

# Fixtures imported from hubserver and test_action are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from action.test_sandbox import HUNT, pr_uid  # noqa: F401
from action_runs import REPO, action_environ, pr_payload
from hubserver import Hub, hub, hub_env, mlcheck, tiny_bert_dir  # noqa: F401

from mlcheck.action.trusted_warm import check_cache_location, read_untrusted_lock, validate_lock
from mlcheck.errors import ManifestError, NotPlainFile, UsageError
from mlcheck.project.lock import LockedFile, LockedModel, read_lock

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox drops to another uid")

# The hunt, plus: the hub cache and HF_HOME searched for the token, the token file huggingface_hub
# writes on login, and the warmed config read from the PR's side (the cache was filled for it).
GATED_HUNT = (
    HUNT
    + r"""
grep -rlsF -f /dev/fd/3 "$HF_HUB_CACHE" "$HF_HOME" 3<<<"$SECRET" >> "$OUT" 2>/dev/null || true
for f in "$HF_HOME/token" "$HF_HOME/stored_tokens" "$HOME/.cache/huggingface/token"; do
  [ -e "$f" ] && echo "$f" >> "$OUT"
done
cat "$HF_HUB_CACHE"/models--*/snapshots/*/config.json > "$OUT.config" 2>/dev/null || true
ls "$HF_HUB_CACHE"/models--*/snapshots/* > "$OUT.files" 2>/dev/null || true
env | grep -c '^HF_TOKEN=\|^HUGGING_FACE_HUB_TOKEN=\|^INPUT_HF' > "$OUT.names" || true
"""
)


def _entry(**changes: object) -> LockedModel:
    fields: dict[str, object] = {
        "model_id": "org/model",
        "revision": "main",
        "commit": "a" * 40,
        "needs": "weights",
        "patterns": ("*",),
        "files": (LockedFile("config.json", 10, git_blob="b" * 40),),
    }
    return LockedModel(**(fields | changes))  # type: ignore[arg-type]


# --- the lock, read as data


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"files": (LockedFile("../../etc/cron.d/x", 1),)}, "'../../etc/cron.d/x' is not a plain"),
        ({"files": (LockedFile("/etc/passwd", 1),)}, "'/etc/passwd' is not a plain"),
        ({"model_id": "../org"}, "model id '../org'"),
        ({"commit": "main"}, "commit 'main' is not a 40-digit"),
        ({"revision": "../../refs"}, "revision '../../refs'"),
    ],
)
def test_a_lock_entry_that_would_write_outside_its_snapshot_is_refused(
    change: dict[str, object], said: str
) -> None:
    from mlcheck.project.lock import Lock

    lock = Lock(models={"org/model": _entry(**change)})
    with pytest.raises(ManifestError, match="nothing was fetched with the hub token") as err:
        validate_lock(lock)
    assert said in str(err.value)
    assert validate_lock(Lock(models={"org/model": _entry()})).models  # a sound one passes


def test_the_lock_is_read_without_following_links(tmp_path: Path) -> None:
    secret = tmp_path / "secret.toml"
    secret.write_text('version = 1\n[models."org/m"]\n')
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "mlcheck.lock").symlink_to(secret)
    with pytest.raises(NotPlainFile, match="symbolic link"):
        read_untrusted_lock(tmp_path / "proj")
    assert read_untrusted_lock(tmp_path) is None  # no lock: nothing to fetch


def test_a_cache_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="HF_HUB_CACHE to a folder outside it"):
        check_cache_location(tmp_path / "ws" / ".cache" / "hub", tmp_path / "ws")
    check_cache_location(tmp_path / "cache", tmp_path / "ws")


# --- against a gated hub (olah behind a proxy that wants the token)


@pytest.fixture
def gated(hub: Hub, tiny_bert_dir: Path) -> Iterator[tuple[Hub, str, str]]:
    """The hub, gated by a token for this test; the model id and the token."""
    model = hub.model_id("gated-bert")
    hub.push_folder(model, tiny_bert_dir)
    token = "hf_" + os.urandom(12).hex()
    hub.proxy.token = token
    try:
        yield hub, model, token
    finally:
        hub.proxy.token = None


def _locked_workspace(root: Path, hub: Hub, model: str, token: str, uid: int) -> Path:
    """A PR's checkout with a lock of the gated model (made with the token), owned by ``uid``."""
    ws = root / "ws"
    ws.mkdir()
    manifest = f'[tool.mlcheck.models]\n"{model}" = {{ needs = "weights" }}\n'
    (ws / "pyproject.toml").write_text(manifest)
    env = hub_env(hub, root / "lock-cache") | {"HF_TOKEN": token}
    done = mlcheck("lock", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(ws)], check=True)
    return ws


@needs_root
@pytest.mark.parametrize("pr_user", ["sandbox", "0"])
def test_gpu_job_warms_gated_models_and_pr_code_cannot_find_the_token(
    gated: tuple[Hub, str, str], pr_user: str, pr_uid: int
) -> None:
    """The GPU workflow's steps: the warming step (the secret in its env only) fills the cache,
    then the sandbox step runs the PR's code; HF_TOKEN is even left in the sandbox step's env
    (as a job-level secret would be) to show the sandbox strips it. With the project as root
    (the control), the hunt finds it in /proc."""
    hub, model, token = gated
    root = Path(tempfile.mkdtemp(prefix="mlcheck-hunt-", dir="/tmp"))  # not under /root
    try:
        root.chmod(0o755)
        ws = _locked_workspace(root, hub, model, token, pr_uid)
        lock = read_lock(ws)
        assert lock is not None
        commit = lock.models[model].commit
        base = hub_env(hub, root / "cache", root / "hf-home") | {"GITHUB_WORKSPACE": str(ws)}
        base["HOME"] = str(root / "home")  # the runner's HOME (not /root: grep would read it all)
        (root / "home").mkdir()
        warm = [sys.executable, "-I", "-m", "mlcheck.action.trusted_warm", "--tier", "real,gpu"]
        # the hub is gated: without the token the warming step cannot fetch
        denied = subprocess.run(warm, cwd=ws, env=base, capture_output=True, text=True)
        assert denied.returncode != 0 and "HF_TOKEN" in denied.stdout, denied.stdout
        before = hub.proxy.authorized
        done = subprocess.run(
            warm, cwd=ws, env=base | {"HF_TOKEN": token}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "with HF_TOKEN" in done.stdout and token not in done.stdout + done.stderr
        assert hub.proxy.authorized > before
        snapshot = root / "cache" / f"models--{model.replace('/', '--')}" / "snapshots" / commit
        assert (snapshot / "model.safetensors").is_file() and (snapshot / "config.json").is_file()

        out = ws / "found.txt"
        half = len(token) // 2
        env = base | {"HF_TOKEN": token, "HUGGING_FACE_HUB_TOKEN": token}
        env |= {"SECRET_A": token[:half], "SECRET_B": token[half:], "OUT": str(out), "WS": str(ws)}
        env["MLCHECK_PR_USER"] = "0" if pr_user == "0" else str(pr_uid)
        sandboxed = [
            sys.executable,
            "-I",
            "-m",
            "mlcheck.action.sandbox",
            "--",
            "bash",
            "-c",
            GATED_HUNT,
        ]
        run = subprocess.run(sandboxed, cwd=ws, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        who = Path(f"{out}.who").read_text()
        found = out.read_text().split() if out.exists() else []
        assert Path(f"{out}.names").read_text().strip() == "0"  # stripped by name, either way
        assert '"hidden_size"' in Path(f"{out}.config").read_text()  # the PR reads the cache
        if pr_user == "0":  # the control: root finds it in /proc (its own env is scrubbed)
            assert who.startswith("uid=0") and any("/proc/" in f for f in found), found
            assert "env" not in found
        else:
            assert who.strip() == f"uid={pr_uid} groups={pr_uid}", who
            assert found == [], found
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@needs_root
@pytest.mark.parametrize("tier", ["real", "fast"])
def test_the_action_warms_with_hf_token_before_the_projects_code(
    gated: tuple[Hub, str, str], pr_uid: int, tier: str
) -> None:
    """The action with `hf-token`: root fetches the gated model before `install` (the hunt, as
    the project's user) runs; the project reads the cache and finds the token nowhere. The
    fast tier gets the gated configs and tokenizer, not the weights."""
    hub, model, token = gated
    root = Path(tempfile.mkdtemp(prefix="mlcheck-hunt-", dir="/tmp"))
    try:
        root.chmod(0o755)
        ws = _locked_workspace(root, hub, model, token, pr_uid)
        out = ws / "found.txt"
        payload = {"action": "opened", "pull_request": pr_payload(5, REPO["full_name"])}
        env = action_environ(ws, "pull_request", payload, command="run", tier=tier, comment="off")
        env = {k: v for k, v in env.items() if not k.startswith("HF_")}
        env |= {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"}  # no cache named
        env |= {"INPUT_HF-TOKEN": token, "INPUT_INSTALL": GATED_HUNT}
        env["MLCHECK_PR_USER"] = str(pr_uid)
        half = len(token) // 2
        env |= {"SECRET_A": token[:half], "SECRET_B": token[half:], "OUT": str(out), "WS": str(ws)}
        (root / "home").mkdir()
        env["HOME"] = str(root / "home")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        entry = Path(__file__).parents[2] / "entrypoint.py"
        done = subprocess.run([str(entry)], env=env, capture_output=True, text=True, timeout=300)
        log = done.stdout + done.stderr
        assert "fetched" in log and "with HF_TOKEN" in log, log
        assert token not in log
        assert Path(f"{out}.who").read_text().strip() == f"uid={pr_uid} groups={pr_uid}"
        assert (out.read_text().split() if out.exists() else []) == []
        assert Path(f"{out}.names").read_text().strip() == "0"
        assert '"hidden_size"' in Path(f"{out}.config").read_text()
        files = Path(f"{out}.files").read_text().split()
        assert "config.json" in files and "tokenizer.json" in files
        assert ("model.safetensors" in files) == (tier == "real")
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
