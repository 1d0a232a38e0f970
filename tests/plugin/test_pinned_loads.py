"""A suite's own hub loads (``from_pretrained("org/name")``, ``AutoConfig``, ``pipeline``,
``hf_hub_download``), unedited, get what ``models.real`` gets: the locked commit from the cache,
checked against the lock; an undeclared id fails with the ``mlcheck add`` hint.

Real tiny models on a real olah mirror (hubserver.py); the tests run as subprocesses (plain
pytest with the plugin, and ``mlcheck run``) with the hub reachable, so only mlcheck keeps them
offline and pinned."""

# Fixtures imported from hubserver are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest
from hubserver import Hub, hub, hub_env, mlcheck, tiny_bert_dir  # noqa: F401

from mlcheck.plugin.pinned_loads import PinnedLoads, install
from mlcheck.project.cache import repo_dir, snapshot_dir
from mlcheck.project.lock import Project, read_lock

SUITE = """\
import pytest
from huggingface_hub import hf_hub_download
from transformers import AutoConfig, AutoModel, pipeline
from transformers.testing_utils import slow

MODEL = "{model}"
LOCKED = "{commit}"


def test_config_is_the_locked_one():
    assert getattr(AutoConfig.from_pretrained(MODEL), "note", "v1") == "v1"
    assert f"/snapshots/{{LOCKED}}/" in hf_hub_download(MODEL, "config.json")


@slow
def test_model_and_pipeline():
    model = AutoModel.from_pretrained(MODEL)
    assert model.config.hidden_size == 16 and getattr(model.config, "note", "v1") == "v1"
    features = pipeline("feature-extraction", model=MODEL)("hello")
    assert len(features[0][0]) == 16


def test_undeclared():
    AutoConfig.from_pretrained("hf-internal-testing/tiny-random-undeclared")


def test_fast_test_loads_weights():
    AutoModel.from_pretrained(MODEL)  # cached here; CI's fast job fetches no weights


def test_undeclared_skips_itself_on_oserror():
    try:
        AutoModel.from_pretrained("hf-internal-testing/tiny-random-undeclared")
    except OSError:
        pytest.skip("Could not find or load the model from hf-internal-testing/tiny-random")
"""

HINT = (
    "'hf-internal-testing/tiny-random-undeclared' is loaded by the test but not declared: "
    "run `mlcheck add hf-internal-testing/tiny-random-undeclared --needs weights`"
)


def fail_test(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def pytest_run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def declared(
    hub: Hub, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], str, str]:
    """A project whose tests load a model that `mlcheck add` declared and locked at commit v1,
    in a cache whose ``refs/main`` another load has since moved to v2 (the hub's main moved)."""
    from huggingface_hub import hf_hub_download

    tmp = tmp_path_factory.mktemp("from-pretrained")
    model = hub.model_id("tiny-bert")
    v1 = hub.push_folder(model, tiny_bert_dir)
    root = tmp / "project"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.mlcheck]\n')
    (root / "tests" / "test_suite.py").write_text(SUITE.format(model=model, commit=v1))
    cache = tmp / "cache"
    env = hub_env(hub, cache)
    added = mlcheck("add", model, "--needs", "weights", cwd=root, env=env)
    assert added.returncode == 0, added.stdout + added.stderr
    config = json.loads((tiny_bert_dir / "config.json").read_text())
    v2 = hub.push(model, {"config.json": json.dumps({**config, "note": "v2"}).encode()})
    hf_hub_download(model, "config.json", cache_dir=cache, endpoint=hub.url)  # online: moves main
    assert (repo_dir(cache, model) / "refs" / "main").read_text() == v2 != v1
    return root, env, model, v1


def test_declared_loads_are_pinned_and_undeclared_ones_name_the_fix(
    declared: tuple[Path, dict[str, str], str, str], tmp_path: Path
) -> None:
    root, env, model, _ = declared
    # plain pytest with the plugin: the hub is reachable, yet every load is offline and pinned
    plain = pytest_run(root, env, "-q", "--mlcheck-tier", "fast,real", "-rfEs")
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert "3 failed, 2 passed" in plain.stdout, plain.stdout
    # each failure is the one line, in full, not a hub traceback
    # (in the failures section: the short summary repeats it in full where $CI is set)
    failures = plain.stdout.split("short test summary info")[0]
    assert failures.count(f"{HINT} (tests load only") == 2, plain.stdout
    # weights in a fast test fail here as in CI's fast job, though they are cached here
    fast_weights = (
        f"loading model.safetensors of '{model}' in tests/test_suite.py::"
        "test_fast_test_loads_weights, a fast-tier test: the fast tier has no weights"
    )
    assert failures.count(fast_weights) == 1, plain.stdout
    assert "Traceback" not in plain.stdout and "huggingface_hub.errors" not in plain.stdout

    # `mlcheck run`: the same outcomes, the same one line
    run = mlcheck(
        "run", "--tier", "fast,real", "--results-dir", str(tmp_path / "r"), cwd=root, env=env
    )
    assert run.returncode == 1, run.stdout + run.stderr
    tests = json.loads((tmp_path / "r" / "results.json").read_text())["tests"]
    by_name = {t["nodeid"].rsplit("::", 1)[1]: t for t in tests}
    assert {n: t["outcome"] for n, t in by_name.items()} == {
        "test_config_is_the_locked_one": "passed",
        "test_model_and_pipeline": "passed",
        "test_undeclared": "failed",
        "test_fast_test_loads_weights": "failed",
        "test_undeclared_skips_itself_on_oserror": "failed",
    }
    assert fast_weights in by_name["test_fast_test_loads_weights"]["message"]
    assert '`@pytest.mark.real_model("' in by_name["test_fast_test_loads_weights"]["message"]
    for name in ("test_undeclared", "test_undeclared_skips_itself_on_oserror"):
        assert HINT in by_name[name]["message"]
        # the fix is in the project (declare it), not in the hub or the cache: not infrastructure
        assert by_name[name]["failure_kind"] == "code"


def test_a_tampered_cached_file_fails_verification(
    declared: tuple[Path, dict[str, str], str, str], tmp_path: Path
) -> None:
    root, env, model, v1 = declared
    cache = Path(env["HF_HUB_CACHE"])
    weights = (snapshot_dir(cache, model, v1) / "model.safetensors").resolve()
    original = weights.read_bytes()
    try:
        # same size, one byte changed: only the hash can tell
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        plain = pytest_run(root, env, "-q", "--mlcheck-tier", "real", "-k", "model_and_pipeline")
        assert plain.returncode == 1, plain.stdout + plain.stderr
        assert "1 failed" in plain.stdout, plain.stdout
        assert (
            f"'{model}'@main is not in the cache (model.safetensors at locked commit {v1[:12]} "
            in plain.stdout
        )
        assert "`mlcheck cache warm` repairs it" in plain.stdout

        # the same check in process, for hf_hub_download of the locked file itself
        project = Project.read(root)
        undo = install(PinnedLoads(lambda: project, fail_test, cache))
        try:
            from huggingface_hub import hf_hub_download

            with pytest.raises(pytest.fail.Exception, match=r"model\.safetensors at locked commit"):
                hf_hub_download(model, "model.safetensors", cache_dir=cache)
        finally:
            undo()
    finally:
        weights.write_bytes(original)


def test_hf_hub_download_names_the_fix_for_missing_and_unpinned_files(
    declared: tuple[Path, dict[str, str], str, str], tmp_path: Path
) -> None:
    """In process (no hub needed: nothing here reaches it): a locked file missing from the
    cache and an undeclared id each fail with their fix."""
    from huggingface_hub import hf_hub_download

    root, _, model, _ = declared
    lock = read_lock(root)
    assert lock is not None and lock.model(model) is not None
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    project = Project.read(root)
    pins = PinnedLoads(lambda: project, fail_test, cache)
    undo = install(pins)
    try:
        with pytest.raises(
            pytest.fail.Exception, match=r"missing config\.json\); run `mlcheck cache warm`"
        ):
            hf_hub_download(model, "config.json", cache_dir=cache)
        # weights missing (CI's fast job fetches none): the tier is named beside `cache warm`
        with pytest.raises(
            pytest.fail.Exception, match=r"missing model\.safetensors\).*"
        ) as weights:
            hf_hub_download(model, "model.safetensors", cache_dir=cache)
        assert (
            f'belongs in the real tier (`@slow`, or `@pytest.mark.real_model("{model}")`)'
            in str(weights.value)
        )
        with pytest.raises(pytest.fail.Exception, match=r"mlcheck add org/other --needs weights"):
            hf_hub_download("org/other", "config.json", cache_dir=cache)
        # CI's fast job (no weights cached) fails a fast test's weights load with the same line
        # a warm local cache gets (test_declared_loads_are_pinned_...); configs still load
        pins.fast_test = "tests/test_a.py::test_b"
        with pytest.raises(
            pytest.fail.Exception,
            match=r"loading model\.safetensors of '.*' in tests/test_a\.py::test_b, a fast-tier",
        ):
            hf_hub_download(model, "model.safetensors", cache_dir=cache)
        with pytest.raises(pytest.fail.Exception, match=r"missing config\.json"):
            hf_hub_download(model, "config.json", cache_dir=cache)
        pins.fast_test = None
        # another cache_dir than the project's is the test's own business: left alone
        with pytest.raises(Exception) as other:
            hf_hub_download(
                "org/other", "config.json", cache_dir=tmp_path / "own", local_files_only=True
            )
        assert not isinstance(other.value, pytest.fail.Exception)
    finally:
        undo()


def test_an_unreadable_lock_fails_the_load_instead_of_loading_around_it(tmp_path: Path) -> None:
    """transformers calls resolve_revision inside ``except Exception`` (fail open): an error
    reading the lock must still end the test, not let the load fall back to ``refs/``."""
    from huggingface_hub import HfApi, hf_hub_download

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.mlcheck]\n')
    (tmp_path / "mlcheck.lock").write_text("version = [\n")  # not TOML
    cache = tmp_path / "cache"
    undo = install(PinnedLoads(lambda: Project.read(tmp_path), fail_test, cache))
    try:
        with pytest.raises(pytest.fail.Exception, match=r"mlcheck\.lock"):
            HfApi().resolve_revision("org/x", cache_dir=cache)
        with pytest.raises(pytest.fail.Exception, match=r"mlcheck\.lock"):
            hf_hub_download("org/x", "config.json", cache_dir=cache)
    finally:
        undo()
