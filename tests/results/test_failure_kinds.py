"""Failure kinds: the real exceptions of the installed libraries, and a real `mlcheck run`."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import httpx2
import pytest
import torch
import transformers
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import hf_raise_for_status
from runcli import mlcheck

from mlcheck.errors import ManifestError, ModelNotCached
from mlcheck.project.manifest import load_manifest
from mlcheck.results.failure_kinds import (
    FailureKind,
    classify_exception,
    classify_text,
    crash_kind,
    oom_kill_count,
    parse_rules,
)


def raised(fn: object) -> BaseException:
    with pytest.raises(BaseException) as info:
        fn()  # type: ignore[operator]
    return info.value


# --- hub: provoked through the real libraries


def test_uncached_from_pretrained_offline_is_hub(tmp_path: Path) -> None:
    exc = raised(
        lambda: transformers.AutoConfig.from_pretrained(
            "acme/never-cached", cache_dir=tmp_path, local_files_only=True
        )
    )
    assert isinstance(exc, OSError)  # transformers wraps the hub's LocalEntryNotFoundError
    assert classify_exception(exc) is FailureKind.HUB


def test_hub_download_with_no_cache_is_hub(tmp_path: Path) -> None:
    exc = raised(
        lambda: hf_hub_download("acme/x", "config.json", cache_dir=tmp_path, local_files_only=True)
    )
    assert classify_exception(exc) is FailureKind.HUB
    offline = OfflineModeIsEnabled("Cannot reach https://huggingface.co/x: offline mode is enabled")
    assert classify_exception(offline) is FailureKind.HUB


def _hub_response(status: int, **headers: str) -> BaseException:
    request = httpx2.Request("GET", "https://huggingface.co/api/models/acme/x")
    response = httpx2.Response(status, request=request, headers=headers)
    return raised(lambda: hf_raise_for_status(response))


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_rate_limits_and_server_errors_of_the_hub_are_hub(status: int) -> None:
    assert classify_exception(_hub_response(status)) is FailureKind.HUB


def test_a_repository_that_does_not_exist_is_the_codes_fault() -> None:
    # a typo in a model id is a bug of the PR, not of the hub
    exc = _hub_response(404, **{"X-Error-Code": "RepoNotFound"})
    assert classify_exception(exc) is FailureKind.CODE


def test_mlchecks_own_cache_miss_is_hub_also_through_pytest_fail() -> None:
    assert classify_exception(ModelNotCached("org/name", "abc123")) is FailureKind.HUB
    failed = raised(lambda: pytest.fail(str(ModelNotCached("org/name")), pytrace=False))
    assert classify_exception(failed) is FailureKind.HUB


# --- oom, device, timeout, crash


def test_torch_out_of_memory_is_oom() -> None:
    def allocate() -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    assert classify_exception(raised(allocate)) is FailureKind.OOM
    assert torch.cuda.OutOfMemoryError is torch.OutOfMemoryError  # the CUDA name is the same
    assert classify_exception(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")) == (
        FailureKind.OOM
    )
    assert classify_exception(RuntimeError("CUDA error: out of memory")) is FailureKind.OOM


def test_accelerator_errors_that_are_not_oom_are_device() -> None:
    illegal = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    assert classify_exception(illegal) is FailureKind.DEVICE
    assert classify_exception(RuntimeError("NCCL error in: ProcessGroupNCCL.cpp")) == (
        FailureKind.DEVICE
    )


def test_cuda_in_a_test_on_a_cpu_torch_is_the_codes_fault() -> None:
    # a fast-tier test that hard-codes "cuda" is a bug of the test, not of the runner
    exc = raised(lambda: torch.zeros(1, device="cuda"))
    assert classify_exception(exc) is FailureKind.CODE


def test_pytest_timeout_is_timeout() -> None:
    pytest_timeout = pytest.importorskip("pytest_timeout")
    message = pytest_timeout.PYTEST_FAILURE_MESSAGE % 1.0
    assert classify_exception(raised(lambda: pytest.fail(message))) is FailureKind.TIMEOUT


def test_a_dead_worker_is_a_crash_unless_the_oom_killer_counted_a_kill(tmp_path: Path) -> None:
    text = "worker 'gw1' crashed while running 'tests/test_a.py::test_big'"
    assert classify_text(text) is FailureKind.CRASH
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    assert oom_kill_count(events) == 2
    assert oom_kill_count(tmp_path / "absent") is None
    assert crash_kind(2, 3) is FailureKind.OOM
    assert crash_kind(2, 2) is FailureKind.CRASH
    assert crash_kind(None, 3) is FailureKind.CRASH  # no cgroup counter: say only what we know


# --- the chain, and the default


def test_the_exception_chain_is_walked() -> None:
    def load() -> None:
        try:
            hf_hub_download(
                "acme/x", "config.json", cache_dir="/nonexistent", local_files_only=True
            )
        except Exception as exc:
            raise AssertionError("the model could not be loaded") from exc

    assert classify_exception(raised(load)) is FailureKind.HUB

    def unrelated() -> None:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError:
            raise AssertionError("wrong label") from None

    assert classify_exception(raised(unrelated)) is FailureKind.CODE


def test_plain_failures_and_model_servers_refusing_are_code() -> None:
    assert classify_exception(AssertionError("class 1 is not entailment")) is FailureKind.CODE
    refused = raised(lambda: httpx2.get("http://127.0.0.1:9/health", timeout=1))
    assert classify_exception(refused) is FailureKind.CODE  # the test's own server, not a hub


# --- the project's own patterns


def test_project_patterns_come_first_and_are_validated(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.mlcheck]
            failure_kinds = { hub = ["MirrorDown"], code = ["CUDA out of memory in my test"] }
            """
        )
    )
    rules = load_manifest(tmp_path).failure_kinds

    class MirrorDown(Exception):
        pass

    assert classify_exception(MirrorDown("s3 mirror down"), rules) is FailureKind.HUB
    planted = RuntimeError("CUDA out of memory in my test (expected by the test)")
    assert classify_exception(planted, rules) is FailureKind.CODE
    assert classify_exception(planted) is FailureKind.OOM
    with pytest.raises(ManifestError, match="not a failure kind; use one of code, hub"):
        parse_rules({"network": ["x"]}, "failure_kinds")
    with pytest.raises(ManifestError, match="not a valid regular expression"):
        parse_rules({"hub": ["("]}, "failure_kinds")
    with pytest.raises(ManifestError, match="must be a table"):
        parse_rules(["hub"], "failure_kinds")


# --- a real `mlcheck run`: every kind raised for real in one small run


SUITE = """
import os
import signal
import time

import pytest


class MirrorDown(Exception):
    pass


def test_ok():
    pass


def test_code():
    assert 1 + 1 == 3


def test_uncached():
    import transformers

    # a cache of its own: in the project's cache an undeclared id fails with the `mlcheck add`
    # hint instead, a code failure (tests/plugin/test_pinned_loads.py)
    transformers.AutoConfig.from_pretrained("acme/never-cached", cache_dir="own-cache")


def test_mirror():
    raise MirrorDown("the project's model mirror is down")


def test_oom():
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_killed():
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(1)
def test_slow():
    time.sleep(30)
"""


def test_each_kind_for_real_in_mlcheck_run(tmp_path: Path) -> None:
    pytest.importorskip("pytest_timeout")
    project = tmp_path / "proj"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_kinds.py").write_text(SUITE)
    (project / "pyproject.toml").write_text(
        '[tool.mlcheck]\nfailure_kinds = { hub = ["MirrorDown"] }\n'
    )
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MLCHECK_RESULTS_DIR", None)
    proc = mlcheck("run", "-n", "2", cwd=project, env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads((project / "mlcheck-results" / "results.json").read_text())
    kinds = {
        t["nodeid"].split("::")[1]: (t["outcome"], t.get("failure_kind")) for t in data["tests"]
    }
    assert kinds == {
        "test_ok": ("passed", None),
        "test_code": ("failed", "code"),
        "test_uncached": ("failed", "hub"),
        "test_mirror": ("failed", "hub"),
        "test_oom": ("failed", "oom"),
        "test_killed": ("failed", "crash"),
        "test_slow": ("failed", "timeout"),
    }
    report = (project / "mlcheck-results" / "report.md").read_text()
    assert "❌ 1 failure, 5 infrastructure failures" in report
    assert "#### 🏗️ Infrastructure (5): hub 2 · crash 1 · oom 1 · timeout 1" in report
    assert report.index("test\\_code") < report.index("Infrastructure (5)")
