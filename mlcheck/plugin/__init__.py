"""The pytest plugin (entry point ``pytest11: mlcheck``): options, markers, hooks, fixtures.

It only wires pytest to the modules beside it that do the work, as pytest-xdist's ``plugin.py``
wires ``dsession.py``: :mod:`~mlcheck.plugin.session` (the session's state: tiers, needs,
seed, results), :mod:`~mlcheck.plugin.reports` (facts on reports),
:mod:`~mlcheck.plugin.file_map` (``--mlcheck-record-map``), :mod:`~mlcheck.plugin.fixtures`
(``models``), :mod:`~mlcheck.plugin.distributed` and :mod:`~mlcheck.plugin.opt_in`. Importing
it does not import torch or transformers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import partial
from typing import NoReturn

import pytest

from .. import constants
from ..errors import MlcheckError
from ..golden import fixture as _golden
from ..golden.fixture import golden  # noqa: F401  (the fixture, registered with the plugin)
from ..project import trusted_options  # noqa: F401  (reads MLCHECK_SAFETY_OPTIONS before any conftest)
from ..tiers import DEFAULT_GPU_LABEL, DISTRIBUTED_MARKER, GPU_MARKER, REAL_MARKER, selected_tiers
from .distributed import DistributedTests
from .fixtures import models  # noqa: F401  (the fixture, registered with the plugin)
from .reports import FactsOnReports, ShowHubCauses
from .session import MlcheckState, project_of


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlcheck", "mlcheck: tiers, models and results")
    group.addoption(
        "--mlcheck-tier",
        default=None,
        metavar="TIERS",
        help="tiers to run: fast, real, gpu (comma-separated) or all; default from "
        f"${constants.ENV_TIER}, else fast. Tests of other tiers are reported as not run.",
    )
    group.addoption(
        "--mlcheck-allow-missing",
        action="store_true",
        default=False,
        help="skip (instead of error) selected tests whose weights are not cached or whose "
        "accelerator is missing; for local use, never in CI",
    )
    group.addoption(
        "--mlcheck-results",
        default=None,
        metavar="DIR",
        help="write results.json into DIR (mlcheck run sets it)",
    )
    group.addoption(
        "--mlcheck-seed",
        type=int,
        default=None,
        metavar="N",
        help=f"seed for random, numpy and torch before each test (default ${constants.ENV_SEED} "
        "or 0); recorded in results to reproduce failures",
    )
    group.addoption(
        "--mlcheck-gpu-label",
        default=DEFAULT_GPU_LABEL,
        metavar="LABEL",
        help="PR label that schedules real/gpu tiers, named in not-run reasons",
    )
    group.addoption(
        "--mlcheck-progress",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="print a status line (done/total, failures so far, time left) every SECONDS "
        "during long runs (default 30; negative: never)",
    )
    group.addoption(
        "--mlcheck-shard",
        default=None,
        metavar="I/N",
        help="recorded in results as the shard this run covers (mlcheck run --shard selects it)",
    )
    _golden.addoption(group)
    # -- run only the real/gpu tests a change can break (mlcheck.plugin.selection) --
    group.addoption(
        "--mlcheck-changed-since",
        default=None,
        metavar="REF",
        help="run only the real and gpu tests that a change since git REF can break, by the "
        "file map of a full run (--mlcheck-file-map); everything when unsure",
    )
    group.addoption(
        "--mlcheck-file-map",
        default=None,
        metavar="PATH",
        help="the per-test file map that --mlcheck-changed-since selects by",
    )
    group.addoption(
        "--mlcheck-record-map",
        default=None,
        metavar="PATH",
        help="record which project files each test executes (coverage.py) into PATH, for "
        "later --mlcheck-changed-since runs; nightly and default-branch runs",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    if not _opted_in(early_config, args):
        return  # inert: plain pytest stays exactly as without mlcheck
    # Tests run offline (SPEC §2). huggingface_hub reads this at import, so set it before any
    # conftest can import it; `mlcheck run` also sets it in the test process's environment.
    early_config.stash[_OFFLINE_BEFORE_KEY] = constants.get(constants.ENV_HF_HUB_OFFLINE)
    os.environ[constants.ENV_HF_HUB_OFFLINE] = "1"
    _set_run_slow(early_config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{REAL_MARKER}(*model_ids): needs the real weights of these models from the local cache "
        "(tier real); not run unless the tier is selected",
    )
    config.addinivalue_line(
        "markers",
        f"{GPU_MARKER}(min_memory_gb=None, count=1): needs an accelerator (tier gpu); not run "
        "unless the tier is selected",
    )
    # distributed tests' hooks and `dist` fixture: a marker asks for them, opted in or not
    config.pluginmanager.register(DistributedTests(), "mlcheck-distributed")
    config.addinivalue_line(
        "markers",
        f"{DISTRIBUTED_MARKER}(world_size, timeout=None): runs the test body in world_size "
        "processes with a process group (gloo on CPU; with gpu, one device per rank)",
    )
    if config.get_verbosity() > 0:
        config.pluginmanager.register(ShowHubCauses(), "mlcheck-hub-causes")
    if not _opted_in(config, config.invocation_params.args):
        return  # markers and fixtures stay available; no hooks, no environment changes
    before = config.stash.get(_OFFLINE_BEFORE_KEY, constants.get(constants.ENV_HF_HUB_OFFLINE))
    os.environ[constants.ENV_HF_HUB_OFFLINE] = "1"
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        # Already imported (by another plugin) with the old value: the test run must be offline.
        hub_constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    config.add_cleanup(partial(_back_online, before))
    try:
        state = MlcheckState(config)
    except MlcheckError as exc:
        raise pytest.UsageError(f"mlcheck: {exc}") from exc
    config.pluginmanager.register(state, "mlcheck-state")
    if state.records or state.is_worker:
        # Only where results are built: a wrapper on every report costs a plain suite time.
        config.pluginmanager.register(FactsOnReports(), "mlcheck-facts")
    if config.getoption("mlcheck_record_map"):
        from .file_map import FileMapHooks

        config.pluginmanager.register(FileMapHooks(config, state), "mlcheck-file-map")
    _pin_hub_loads(config)


def _pin_hub_loads(config: pytest.Config) -> None:
    """A suite's own ``from_pretrained("org/name")`` reads the locked commit, verified, and an
    undeclared id fails with the ``mlcheck add`` hint (:mod:`mlcheck.plugin.pinned_loads`)."""
    import importlib.util

    if importlib.util.find_spec("huggingface_hub") is None:
        return  # nothing loads from a hub
    from .pinned_loads import PinnedLoads, TierHooks, install

    pins = PinnedLoads(partial(project_of, config), fail=_fail_test)
    config.add_cleanup(install(pins))
    config.pluginmanager.register(TierHooks(pins), "mlcheck-pinned-loads")


def _back_online(before: str | None) -> None:
    """After the run, the process's hub setting is what it was: a process that runs pytest in
    process (pytest.main, pytester) and then downloads is not left offline."""
    constants.restore(constants.ENV_HF_HUB_OFFLINE, before)
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:  # read back as huggingface_hub reads the variable
        hub_constants.HF_HUB_OFFLINE = hub_constants._is_true(before)  # type: ignore[attr-defined]


def _fail_test(message: str) -> NoReturn:
    """Fail the running test with one line: ``Failed`` is a BaseException, so neither a
    library's ``except Exception`` nor a test's ``except OSError`` turns it into something else."""
    __tracebackhide__ = True
    pytest.fail(message, pytrace=False)


# ---------------------------------------------------------------------------------------------
# helpers


OPTED_IN_KEY = pytest.StashKey[bool]()
_OFFLINE_BEFORE_KEY = pytest.StashKey[str | None]()  # HF_HUB_OFFLINE before the run set it


def _opted_in(config: pytest.Config, args: Sequence[str]) -> bool:
    """Decided once per process (see plugin.opt_in), from the first hook that sees the args."""
    if OPTED_IN_KEY not in config.stash:
        from ..project.manifest import find_root
        from .opt_in import opted_in

        roots = {config.rootpath, find_root(config.invocation_params.dir)}
        config.stash[OPTED_IN_KEY] = opted_in(args, roots, os.environ)
    return config.stash[OPTED_IN_KEY]


def _set_run_slow(config: pytest.Config) -> None:
    """``RUN_SLOW=1`` when a selected tier is where ``@slow`` tests go: transformers and
    accelerate read it when their testing helpers are imported, i.e. before any test module."""
    from ..project.manifest import load_manifest
    from ..tiers.decide import TierRules

    try:
        tiers = selected_tiers(config.known_args_namespace.mlcheck_tier, "--mlcheck-tier")
        rules = TierRules.of(load_manifest(config.rootpath))
    except MlcheckError:
        return  # reported with its message by pytest_configure
    if rules.run_slow(tiers):
        os.environ[constants.ENV_RUN_SLOW] = "1"
