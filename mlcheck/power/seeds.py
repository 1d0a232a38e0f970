"""pytest plugin that `mlcheck calibrate` loads (``-p mlcheck.power.seeds``): runs each test once
per seed, in the same process, and records each outcome.

``$MLCHECK_CALIBRATE`` holds ``{"seeds": [...], "out": DIR}``. For each seed the plugin sets the
seed mlcheck gives the test (the ``--mlcheck-seed`` value: random, numpy, torch and the
``models`` fixture) and ``$MLCHECK_SEED`` (what the checks read), then runs the test's whole
protocol (setup, call, teardown), as pytest-rerunfailures reruns a test. Outcomes go to
``DIR/outcomes-<pid>.jsonl``, one line per test and seed.

A test is **deterministic** when, on the first two seeds, it has the same outcome and message
and never used the seed: nothing was drawn from the seeded global generators (their state at
the end equals the state seeding gives) and nothing was seeded with it (``torch.manual_seed``).
Its other seeds are skipped: they cannot change anything.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from .. import constants

_settings: dict[str, Any] = json.loads(constants.get(constants.ENV_CALIBRATE) or "{}")
_seed_used: list[bool] = [False]


def pytest_configure(config: pytest.Config) -> None:
    if not _settings:
        return
    import torch

    original = torch.manual_seed
    run_seed = _current

    def manual_seed(seed: int) -> Any:
        # mlcheck's own seeding before each test is not the test using the seed
        caller = sys._getframe(1).f_globals.get("__name__")
        if run_seed and int(seed) == run_seed[0] and caller != "mlcheck.plugin.session":
            _seed_used[0] = True
        return original(seed)

    torch.manual_seed = manual_seed  # the models fixture and the checks seed through it


_current: list[int] = []


def _rng_untouched(seed: int) -> bool:
    """The global generators are where seeding left them: the test drew nothing from them."""
    import torch

    if random.getstate() != random.Random(seed).getstate():
        return False
    reference = torch.Generator().manual_seed(seed).get_state()
    if not torch.equal(torch.get_rng_state(), reference):
        return False
    np = sys.modules.get("numpy")
    if np is not None:
        state, ref = np.random.get_state(), np.random.RandomState(seed).get_state()
        if state[0] != ref[0] or not np.array_equal(state[1], ref[1]) or state[2:] != ref[2:]:
            return False
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if not _settings:
        return None
    from _pytest.runner import runtestprotocol

    state: Any = item.config.pluginmanager.get_plugin("mlcheck-state")
    seeds: list[int] = _settings["seeds"]
    out = Path(_settings["out"]) / f"outcomes-{os.getpid()}.jsonl"
    seen: list[tuple[str, str, bool]] = []
    with out.open("a") as log:
        for index, seed in enumerate(seeds):
            last = index == len(seeds) - 1
            if state is not None:
                state.seed = seed
            os.environ[constants.ENV_SEED] = str(seed)
            _current[:] = [seed]
            _seed_used[0] = False
            untouched: list[bool] = []

            def check_rng(_s: int = seed, _into: list[bool] = untouched) -> None:
                _into.append(_rng_untouched(_s))

            item.stash[_CHECK] = check_rng
            # between seeds, tear down the test's own fixtures but keep the module's and the
            # session's (their chain is the parent's)
            reports = runtestprotocol(item, nextitem=nextitem if last else item.parent, log=False)  # type: ignore[arg-type]
            outcome, message = _outcome(reports)
            uses_seed = _seed_used[0] or not all(untouched)
            log.write(
                json.dumps(
                    {
                        "nodeid": item.nodeid,
                        "seed": seed,
                        "outcome": outcome,
                        "message": message,
                        "uses_seed": uses_seed,
                    }
                )
                + "\n"
            )
            log.flush()
            seen.append((outcome, message, uses_seed))
            if outcome == "skipped":
                break
            if len(seen) == 2 and seen[0] == seen[1] and not seen[0][2]:
                if not last:  # deterministic: the other seeds cannot change anything
                    runtestprotocol_teardown(item, nextitem)
                break
            item._initrequest()  # type: ignore[attr-defined]  # fresh fixtures for the next seed
    _current[:] = []
    return True


_CHECK = pytest.StashKey[Any]()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    yield
    check = item.stash.get(_CHECK, None)
    if check is not None:
        check()


def runtestprotocol_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Tear down what the early stop kept set up for the next seed."""
    item.session._setupstate.teardown_exact(nextitem)


def _outcome(reports: list[Any]) -> tuple[str, str]:
    for report in reports:
        if report.failed:
            kind = "failed" if report.when == "call" else "error"
            crash = getattr(report.longrepr, "reprcrash", None)
            text = getattr(crash, "message", None) or str(report.longrepr).strip().splitlines()[-1:]
            return kind, str(text)[:500]
    if any(r.skipped for r in reports):
        return "skipped", ""
    return "passed", ""
