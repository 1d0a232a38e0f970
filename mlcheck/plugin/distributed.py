"""pytest's side of distributed tests: ``@pytest.mark.distributed(world_size=N)`` runs the test
body as N ranks (:mod:`mlcheck.distributed.launch`) instead of in the pytest process.

- CPU, the fast tier: gloo. With ``@pytest.mark.gpu(count=N)``, the gpu tier: the
  accelerator's backend (nccl on CUDA), one device per rank. The same body runs in both.
- One test, one outcome; each rank is also reported as a subtest (``[rank 1 of 2]``) where
  pytest has subtests, and its output as a report section.
- Fixtures: ``dist`` is made in each rank; other fixtures are computed in the pytest process
  and sent to every rank by value (they must pickle: ``tmp_path``, parametrize values, data);
  fixtures bound to the pytest process (``monkeypatch``, ``capsys``, ``models``...) are refused
  with a message naming them. Autouse fixtures run in the pytest process only.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

from .. import constants
from .. import records as _record
from ..distributed.launch import (
    BACKENDS,
    DEFAULT_TIMEOUT_S,
    TIMEOUT_KEY,
    RankResult,
    Spec,
    run_ranks,
    threads_per_rank,
    verdict_text,
)
from ..errors import UsageError
from ..tiers import DISTRIBUTED_MARKER, GPU_MARKER

if TYPE_CHECKING:
    from ..distributed.rank import Dist

# Fixtures whose value only means something inside the pytest process.
PROCESS_BOUND: Mapping[str, str] = {
    "request": "the pytest request",
    "pytestconfig": "pytest's config",
    "monkeypatch": "patches the pytest process, not the ranks",
    "capsys": "captures the pytest process",
    "capsysbinary": "captures the pytest process",
    "capfd": "captures the pytest process",
    "capfdbinary": "captures the pytest process",
    "caplog": "captures the pytest process's logging",
    "recwarn": "records the pytest process's warnings",
    "record_property": "writes the pytest process's report",
    "record_xml_attribute": "writes the pytest process's report",
    "record_testsuite_property": "writes the pytest process's report",
    "subtests": "reports from the pytest process",
    "tmp_path_factory": "a factory of the pytest process (use tmp_path)",
    "tmpdir_factory": "a factory of the pytest process (use tmp_path)",
    "models": "loads models in the pytest process (build the model inside the test body)",
    "golden": "compares in the pytest process",
}


class DistributedTests:
    """The hooks and the ``dist`` fixture (registered by :mod:`mlcheck.plugin`)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        mark = pyfuncitem.get_closest_marker(DISTRIBUTED_MARKER)
        if mark is None:
            return None
        try:
            spec = Spec.of(tuple(mark.args), dict(mark.kwargs))
        except UsageError as exc:
            pytest.fail(f"{pyfuncitem.nodeid}: {exc}", pytrace=False)
        _run_test(pyfuncitem, spec)
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        _report_ranks(item)

    @pytest.fixture
    def dist(self, request: pytest.FixtureRequest) -> Dist | None:
        """This rank and its process group, in a test marked ``@pytest.mark.distributed``:
        ``rank``, ``world_size``, ``local_rank``, ``device``, ``backend``, ``barrier()``,
        ``all_gather_object(x)``.

        >>> @pytest.mark.distributed(world_size=2)  # doctest: +SKIP
        ... def test_ranks(dist):
        ...     assert dist.all_gather_object(dist.rank) == [0, 1]
        """
        return _dist(request)


def _dist(request: pytest.FixtureRequest) -> Dist | None:
    if request.node.get_closest_marker(DISTRIBUTED_MARKER) is not None:
        return None  # each rank makes its own; the pytest process never calls the body
    pytest.fail(
        "the dist fixture exists only in a distributed test: mark the test "
        "@pytest.mark.distributed(world_size=N)",
        pytrace=False,
    )


def _run_test(item: pytest.Function, spec: Spec) -> None:
    device_type = _device_type(item)
    backend = BACKENDS.get(device_type)
    if backend is None:
        pytest.fail(
            f"distributed tests on {device_type} are not supported: torch.distributed has no "
            "backend for it here (gloo on CPU, nccl on CUDA, xccl on XPU)",
            pytrace=False,
        )
    timeout = spec.timeout or _project_timeout(item.config)
    job = {
        "module": item.module.__name__,
        "file": item.module.__file__,
        "qualname": _qualname(item),
        "sys_path": list(sys.path),
        "kwargs": _rank_kwargs(item),
        "world_size": spec.world_size,
        "backend": backend,
        "device_type": device_type,
        "timeout": timeout,
        "seed": _seed(item.config),
        "threads": threads_per_rank(spec.world_size),
    }
    results = run_ranks(job, timeout)
    _report(item, results, timeout)


def _device_type(item: pytest.Function) -> str:
    from ..tiers import detect_accelerator

    if item.get_closest_marker(GPU_MARKER) is None:
        return "cpu"
    accel = detect_accelerator()
    # mlcheck's setup hook already failed (or skipped) a gpu test on a machine without one
    return accel.type if accel is not None else "cpu"


def _qualname(item: pytest.Function) -> str:
    function = getattr(item.obj, "__func__", item.obj)
    qualname = str(getattr(function, "__qualname__", item.originalname))
    if "<locals>" in qualname:
        pytest.fail(
            f"{qualname}: a distributed test must be defined at module level or in a class, "
            "where each rank can import it",
            pytrace=False,
        )
    return qualname


def _rank_kwargs(item: pytest.Function) -> dict[str, Any]:
    """The test's arguments for the ranks: ``dist`` is made there, the rest sent by value."""
    names = [
        p.name
        for p in inspect.signature(item.obj).parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    bound = [f"{n} ({PROCESS_BOUND[n]})" for n in names if n in PROCESS_BOUND]
    if bound:
        pytest.fail(
            "fixtures not supported in distributed tests (the body runs in separate rank "
            f"processes): {', '.join(bound)}. Ranks get `dist` and, by value, fixtures that "
            "pickle (tmp_path, parametrize values, data)",
            pytrace=False,
        )
    kwargs: dict[str, Any] = {}
    for name in names:
        if name == "dist":
            kwargs[name] = None  # made in each rank
            continue
        value = item.funcargs[name]
        try:
            pickle.dumps(value)
        except Exception as exc:  # pickle raises many types
            pytest.fail(
                f"fixture {name!r} is not supported in distributed tests: its value is sent "
                f"to each rank and cannot be pickled ({type(exc).__name__}: {exc}); create it "
                "inside the test body instead",
                pytrace=False,
            )
        kwargs[name] = value
    return kwargs


def _project_timeout(config: pytest.Config) -> float:
    from ..project.manifest import load_manifest

    raw = load_manifest(config.rootpath).extra.get(TIMEOUT_KEY, DEFAULT_TIMEOUT_S)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
        pytest.fail(
            f"[tool.mlcheck] {TIMEOUT_KEY} must be a number of seconds > 0, got {raw!r}",
            pytrace=False,
        )
    return float(raw)


def _seed(config: pytest.Config) -> int:
    state = config.pluginmanager.get_plugin("mlcheck-state")
    seed = getattr(state, "seed", None)
    return seed if isinstance(seed, int) else constants.env_seed()


RESULTS_KEY = pytest.StashKey[list[RankResult]]()
SUBTESTS_KEY = pytest.StashKey[Any]()


def _report(item: pytest.Function, results: list[RankResult], timeout: float) -> None:
    for r in results:
        if r.output.strip():
            item.add_report_section("call", f"output of {r.name}", r.output)
    item.stash[RESULTS_KEY] = results
    # pytest 9's subtests, or the pytest-subtests plugin on pytest 8; without them the test's
    # own message names every rank
    with contextlib.suppress(pytest.FixtureLookupError, AttributeError):
        item.stash[SUBTESTS_KEY] = item._request.getfixturevalue("subtests")
    verdict = verdict_text(results, timeout)
    if verdict is not None:
        kind, message = verdict
        _record.record("failure_kind", kind)
        pytest.fail(message, pytrace=False)
    if all(r.outcome == "skipped" for r in results):
        pytest.skip(f"every rank skipped: {results[0].message}")


def _report_ranks(item: pytest.Item) -> None:
    """Each rank as a subtest of the test (``[rank 1 of 2]``), reported after the test's own
    verdict: the first failure reported decides a test's message in results, and the test's
    own names the deciding rank and carries every rank's traceback and stack."""
    results = item.stash.get(RESULTS_KEY, None)
    subtests = item.stash.get(SUBTESTS_KEY, None)
    if results is None or subtests is None:
        return
    for r in results:
        with subtests.test(msg=r.name):
            if r.outcome == "skipped":
                pytest.skip(r.message)
            if r.outcome != "passed":
                first = r.message.strip().splitlines()[0] if r.message.strip() else ""
                pytest.fail(f"{r.outcome}: {first}", pytrace=False)
