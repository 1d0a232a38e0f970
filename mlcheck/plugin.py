"""The pytest plugin (entry point ``pytest11: mlcheck``): options, markers, hooks, fixtures.

It only wires pytest to the modules that do the work: ``tiers`` (which tests run, what they
need), ``cache`` (are the weights here), ``models`` (the ``models`` fixture), ``results`` (what
happened). Importing it does not import torch or transformers.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from . import (
    _record,
    constants,
    trusted_options,  # noqa: F401  (reads MLCHECK_SAFETY_OPTIONS before any conftest)
)
from .errors import MlcheckError
from .failure_kinds import (
    FailureKind,
    classify_exception,
    classify_text,
    crash_kind,
    oom_kill_count,
)
from .golden import fixture as _golden
from .golden.fixture import golden  # noqa: F401  (the fixture, registered with the plugin)
from .plugin_distributed import DistributedTests
from .progress import Progress
from .results import JOURNAL_FILE, DeviceInfo, RunInfo, RunResults, RunStatus
from .results import write as write_results
from .results_builder import ResultsBuilder
from .tiers import (
    DEFAULT_GPU_LABEL,
    DISTRIBUTED_MARKER,
    GPU_MARKER,
    REAL_MARKER,
    MarkInfo,
    Needs,
    Tier,
    accelerator_problem,
    detect_accelerator,
    format_tiers,
    needs_of,
    not_run_reason,
    selected_tiers,
)

if TYPE_CHECKING:
    from .failure_kinds import Rule
    from .lock import Project
    from .models import ModelFactory

NEEDS_KEY = pytest.StashKey[Needs]()
NOT_RUN_KEY = pytest.StashKey[str]()
FACTS_KEY = pytest.StashKey[dict[str, Any]]()


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
    # -- run only the real/gpu tests a change can break (mlcheck.selection) --
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
    os.environ[constants.ENV_HF_HUB_OFFLINE] = "1"
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        # Already imported (by another plugin) with the old value: the test run must be offline.
        hub_constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    try:
        state = MlcheckState(config)
    except MlcheckError as exc:
        raise pytest.UsageError(f"mlcheck: {exc}") from exc
    config.pluginmanager.register(state, "mlcheck-state")
    if state.records or state.is_worker:
        # Only where results are built: a wrapper on every report costs a plain suite time.
        config.pluginmanager.register(FactsOnReports(), "mlcheck-facts")
    if config.getoption("mlcheck_record_map"):
        config.pluginmanager.register(FileMapHooks(config, state), "mlcheck-file-map")
    _pin_hub_loads(config)


def _pin_hub_loads(config: pytest.Config) -> None:
    """A suite's own ``from_pretrained("org/name")`` reads the locked commit, verified, and an
    undeclared id fails with the ``mlcheck add`` hint (:mod:`mlcheck.pinned_loads`)."""
    import importlib.util

    if importlib.util.find_spec("huggingface_hub") is None:
        return  # nothing loads from a hub
    from .pinned_loads import PinnedLoads, install

    config.add_cleanup(install(PinnedLoads(partial(_project, config), fail=_fail_test)))


def _fail_test(message: str) -> NoReturn:
    """Fail the running test with one line: ``Failed`` is a BaseException, so neither a
    library's ``except Exception`` nor a test's ``except OSError`` turns it into something else."""
    __tracebackhide__ = True
    pytest.fail(message, pytrace=False)


class MlcheckState:
    """Per-session state and the hooks that need it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.tiers = selected_tiers(config.getoption("mlcheck_tier"), "--mlcheck-tier")
        self.allow_missing: bool = config.getoption("mlcheck_allow_missing")
        seed = config.getoption("mlcheck_seed")
        self.seed: int = seed if seed is not None else constants.env_seed()
        self.gpu_label: str = config.getoption("mlcheck_gpu_label")
        results_dir = config.getoption("mlcheck_results")
        self.results_dir = Path(results_dir) if results_dir else None
        from .decorators import project_rules
        from .manifest import load_manifest

        manifest = load_manifest(config.rootpath)  # once: markers, failure kinds, decorators
        self.manifest_extra = dict(manifest.extra)  # select_core (mlcheck.selection)
        self.selection_text: str | None = None
        self.marker_map = dict(manifest.markers)
        self.failure_rules: tuple[Rule, ...] = manifest.failure_kinds
        self.oom_kills = oom_kill_count()  # to tell the OOM killer's SIGKILL from a crash
        self.decorator_rules = project_rules(manifest)
        for marker, tier in self.marker_map.items():
            config.addinivalue_line("markers", f"{marker}: tier {tier} ([tool.mlcheck] markers)")
        self.is_worker = hasattr(config, "workerinput")
        # Only the process that writes results.json builds them (the xdist controller, or the
        # single process); the terminal summary also needs them under xdist.
        self.records = not self.is_worker and (
            self.results_dir is not None or _xdist_controller(config)
        )
        journal = None
        if self.records and self.results_dir is not None and not constants.no_journal():
            # every report is journaled as it comes: `mlcheck run` rebuilds results.json from it
            # when this process is killed (SIGTERM, OOM) before pytest_sessionfinish
            self.results_dir.mkdir(parents=True, exist_ok=True)
            journal = self.results_dir / JOURNAL_FILE
            journal.unlink(missing_ok=True)
        self.builder = ResultsBuilder(journal=journal)
        self.progress = None if self.is_worker else Progress(config.getoption("mlcheck_progress"))
        self.progress_outcome: dict[str, str] = {}
        if not self.is_worker:  # a long check's progress lines reach the terminal (issue 22)
            from . import progress as _progress

            _progress.check_sink = self._check_progress
        self.started = time.time()
        self.selected: Counter[str] = Counter()
        self.not_run: Counter[str] = Counter()  # per tier
        self.not_run_reasons: Counter[str] = Counter()
        # under xdist the controller collects nothing: it counts not-run tests from reports
        self.not_run_reported: Counter[str] = Counter()
        self.deselected = 0  # by -k, -m, --deselect; under xdist, as a worker reports it
        # under xdist: nodeid -> (tier, not run), from the setup reports, for the tier line
        self.tier_reported: dict[str, tuple[str, bool]] = {}

    # -- collection ---------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        from .decorators import marks_of

        for item in items:
            marks = [MarkInfo(m.name, tuple(m.args), dict(m.kwargs)) for m in item.iter_markers()]
            # the ecosystem's decorators (function and class, read from source) as markers
            marks += marks_of(
                getattr(item, "obj", None), getattr(item, "cls", None), self.decorator_rules
            )
            try:
                needs = needs_of(marks, self.marker_map)
            except MlcheckError as exc:
                raise pytest.UsageError(f"mlcheck: {item.nodeid}: {exc}") from exc
            item.stash[NEEDS_KEY] = needs
            if needs.tier in self.tiers:
                self.selected[needs.tier] += 1
            else:
                reason = not_run_reason(needs, self.gpu_label)
                item.stash[NOT_RUN_KEY] = reason
                # A skip marker, so plain pytest shows the reason too and no fixture runs.
                item.add_marker(pytest.mark.skip(reason=f"not run: {reason}"))
                self.not_run[needs.tier] += 1
                self.not_run_reasons[reason] += 1

        changed_since = self.config.getoption("mlcheck_changed_since")
        if changed_since:
            self._select_by_change(items, changed_since)

    def _select_by_change(self, items: list[pytest.Item], base: str) -> None:
        """Real and gpu tests that no change since ``base`` can break become not run."""
        from .selection import not_affected_reason, select_in_repo

        expensive = {Tier.REAL, Tier.GPU}
        chosen = [
            item
            for item in items
            if NOT_RUN_KEY not in item.stash and item.stash[NEEDS_KEY].tier in expensive
        ]
        collected = {
            item.nodeid: (item.nodeid.split("::")[0], item.stash[NEEDS_KEY].models)
            for item in chosen
        }
        map_option = self.config.getoption("mlcheck_file_map")
        core = self.manifest_extra.get("select_core", [])
        try:
            selection = select_in_repo(
                self.config.rootpath,
                base,
                Path(map_option) if map_option else None,
                collected,
                core=[str(c) for c in core] if isinstance(core, list) else [str(core)],
            )
        except MlcheckError as exc:
            raise pytest.UsageError(f"mlcheck: --mlcheck-changed-since: {exc}") from exc
        reason = not_affected_reason(base)
        kept = sum(selection.keeps(item.nodeid) for item in chosen)
        tiers = "/".join(sorted({item.stash[NEEDS_KEY].tier.value for item in chosen})) or "real"
        if selection.everything:
            self.selection_text = f"ran all {len(chosen)} {tiers} tests: {selection.why}"
        else:
            files = len(selection.changed)
            self.selection_text = (
                f"ran {kept} of {len(chosen)} {tiers} tests: selected by change "
                f"({files} file{'s' if files != 1 else ''}); nightly runs all"
            )
        for item in chosen:
            if selection.keeps(item.nodeid):
                continue
            tier = item.stash[NEEDS_KEY].tier
            item.stash[NOT_RUN_KEY] = reason
            item.add_marker(pytest.mark.skip(reason=f"not run: {reason}"))
            self.selected[tier] -= 1
            self.not_run[tier] += 1
            self.not_run_reasons[reason] += 1

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.deselected += len(items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        # xdist workers collect and deselect; each sends its count at the end of its session
        output = getattr(node, "workeroutput", None) or {}
        self.deselected = max(self.deselected, int(output.get("mlcheck_deselected", 0)))

    def pytest_report_collectionfinish(self, items: Sequence[pytest.Item]) -> list[str]:
        line = self._tier_line(sum(self.selected.values()), self.not_run)
        if self.selection_text:
            line += f"\nmlcheck: {self.selection_text}"
        if not self.config.option.collectonly:
            return [line]
        # `--collect-only` lists each test's tier: what a CPU and a GPU runner must agree on.
        return [line] + [
            f"mlcheck: tier {needs.tier.value} {item.nodeid}"
            for item in items
            if (needs := item.stash.get(NEEDS_KEY, None)) is not None
        ]

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed and self.records:
            self.builder.collection_error(
                nodeid=report.nodeid or ".",
                message=_one_line(report.longreprtext),
                traceback=report.longreprtext,
            )

    # -- running ------------------------------------------------------------------------------

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Runs after the skip markers were evaluated (tryfirst in pytest's skipping plugin) and
        # before fixtures are set up, so a missing model is reported before anything loads.
        needs = item.stash.get(NEEDS_KEY, None)
        facts = item.stash[FACTS_KEY]
        if needs is None:
            return
        if needs.gpu:
            accel = detect_accelerator()
            facts["device"] = f"{accel.type}: {accel.name}" if accel else "cpu"
            self._require(accelerator_problem(needs, accel))
            if needs.memory_auto and needs.models and accel is not None:
                self._require(self._auto_memory_problem(item.nodeid, needs.models, accel))
            from .sizing import reset_peak

            reset_peak()
        if needs.models:
            from .models import weights_problem

            for model_id in needs.models:
                self._require(weights_problem(model_id, _project(self.config)))
        _seed_everything(self.seed)

    def _auto_memory_problem(self, nodeid: str, model_ids: Sequence[str], accel: Any) -> str | None:
        """gpu(min_memory_gb="auto"): the models' meta-device estimate against this device."""
        from .cache import locate
        from .models import ModelFactory
        from .sizing import estimate_from_models, memory_problem

        factory = ModelFactory(locate=partial(locate, project=_project(self.config)))
        try:
            est = estimate_from_models(nodeid, model_ids, factory)
        except MlcheckError as exc:
            return f"cannot estimate the memory it needs (gpu(min_memory_gb='auto')): {exc}"
        return memory_problem(est, accel.memory_gb, accel.name)

    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        needs = item.stash.get(NEEDS_KEY, None)
        if needs is not None and needs.gpu:
            from .sizing import peak_bytes

            if (peak := peak_bytes()) is not None:
                item.stash[FACTS_KEY]["gpu_peak_bytes"] = peak  # the next estimate uses it

    def _require(self, problem: str | None) -> None:
        if problem is None:
            return
        if self.allow_missing:
            pytest.skip(f"missing requirement (--mlcheck-allow-missing): {problem}")
        pytest.fail(problem, pytrace=False)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        needs = item.stash.get(NEEDS_KEY, None)
        facts = _record.start()
        facts["seed"] = self.seed
        facts["device"] = "cpu"
        if needs is not None:
            facts["tier"] = needs.tier.value
        if NOT_RUN_KEY in item.stash:
            facts["not_run"] = True
        item.stash[FACTS_KEY] = facts
        try:
            return (yield)
        finally:
            _record.stop()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.progress is not None and session.items:
            self.progress.total = len(session.items)
        if self.records and session.items:
            self.builder.set_collected(len(session.items))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.progress is not None:
            self.progress.total = len(ids)  # every worker collects the whole suite
        if self.records and self.builder.collected is None:
            self.builder.set_collected(len(ids))

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.records:
            self.builder.start(nodeid, time.time())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.progress is not None:
            self._show_progress(report)
        if not self.records:
            return
        facts: dict[str, Any] = getattr(report, "mlcheck_facts", None) or {}
        message = _message(report)
        if facts.get("not_run") and report.when == "setup":
            self.not_run_reported[message] += 1
        if report.when == "setup" and "tier" in facts:
            self.tier_reported[report.nodeid] = (str(facts["tier"]), bool(facts.get("not_run")))
        if report.failed and "failure_kind" not in facts:
            facts = {**facts, "failure_kind": self._kind_of_text(report.longreprtext)}
        path, line0, _ = report.location
        self.builder.report(
            nodeid=report.nodeid,
            when=report.when or "call",
            subtest=_subtest_context(report),
            outcome=report.outcome,
            duration=report.duration,
            file=path,
            line=line0 + 1 if line0 is not None else None,
            message=message,
            traceback=report.longreprtext if report.failed else "",
            xfail=hasattr(report, "wasxfail"),
            facts=facts,
        )

    def _kind_of_text(self, text: str) -> str:
        kind = classify_text(text, self.failure_rules)
        if kind is FailureKind.CRASH:
            kind = crash_kind(self.oom_kills, oom_kill_count())
        return kind.value

    def _check_progress(self, line: str) -> None:
        """A line from a long-running check, printed past pytest's output capture."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(line)

    def _show_progress(self, report: pytest.TestReport) -> None:
        assert self.progress is not None
        if report.failed:
            outcome = "failed" if report.when == "call" else "error"
            self.progress_outcome.setdefault(report.nodeid, outcome)
        if report.when != "teardown":
            return
        line = self.progress.finished(self.progress_outcome.pop(report.nodeid, "passed"))
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if line and reporter is not None:
            # pytest's progress dots share the line: start a new one first
            reporter.ensure_newline()
            writer = getattr(reporter, "_tw", None)
            if getattr(writer, "width_of_current_line", 0):
                reporter.write("\n")
            reporter.write_line(line)

    # -- reporting ----------------------------------------------------------------------------

    def _tier_line(self, selected: int, not_run: Mapping[str, int]) -> str:
        line = f"mlcheck: tiers {format_tiers(self.tiers)}: {selected} selected"
        if not_run:
            detail = ", ".join(f"{tier} {n}" for tier, n in sorted(not_run.items()))
            line += f", {sum(not_run.values())} not run ({detail})"
        return line

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if _xdist_controller(self.config) and self.tier_reported:
            # the controller collects nothing, so the collection line never came: say it here
            seen = self.tier_reported.values()
            not_run = Counter(tier for tier, skipped in seen if skipped)
            terminalreporter.write_line(self._tier_line(len(seen) - not_run.total(), not_run))
        reasons = self.not_run_reasons or self.not_run_reported
        if self.is_worker or not reasons:
            return
        terminalreporter.section("mlcheck: not run", sep="-")
        for reason, count in reasons.most_common():
            terminalreporter.line(f"{count:5d} {reason}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from . import progress as _progress

        if _progress.check_sink == self._check_progress:
            _progress.check_sink = None
        if self.is_worker:
            self.config.workeroutput["mlcheck_deselected"] = self.deselected  # type: ignore[attr-defined]
        if not self.records or self.results_dir is None:
            return
        results = RunResults(run=self._run_info(int(exitstatus)), tests=self.builder.build())
        write_results(results, self.results_dir)
        self.builder.close()

    def _run_info(self, exitstatus: int) -> RunInfo:
        workers = getattr(self.config.option, "numprocesses", None)
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        return RunInfo(
            status=RunStatus.INTERRUPTED if interrupted else RunStatus.COMPLETE,
            running=self.builder.running(time.time()),
            collected=self.builder.collected,
            deselected=self.deselected,
            signal="SIGINT" if interrupted else None,
            tiers=tuple(format_tiers(self.tiers).split(",")),
            started_at=datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            duration=round(time.time() - self.started, 3),
            shard=self.config.getoption("mlcheck_shard"),
            workers=workers if isinstance(workers, int) else 0,
            seed=self.seed,
            device=_device_info(Tier.GPU in self.tiers),
            sha=constants.github_sha(),
            ref=constants.github_ref(),
            versions=_versions(),
            pytest_exit_code=exitstatus,
        )


class FileMapHooks:
    """``--mlcheck-record-map``: which project files each test runs, for ``--changed-since``
    (the work is in :class:`mlcheck.selection.RecordMap`; these hooks only name the contexts)."""

    def __init__(self, config: pytest.Config, state: MlcheckState) -> None:
        from .selection import RecordMap

        self.map = RecordMap(
            config.rootpath,
            Path(config.getoption("mlcheck_record_map")).resolve(),
            runs_tests=not _xdist_controller(config),
            writes=not state.is_worker,
        )

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        infos = getattr(item, "_fixtureinfo", None)
        shared = []
        for name in getattr(item, "fixturenames", ()):
            defs = infos.name2fixturedefs.get(name) if infos is not None else None
            if defs and defs[-1].scope != "function":
                shared.append(_fixture_context(defs[-1]))
        self.map.runtest_protocol(item.nodeid, shared)
        try:
            return (yield)
        finally:
            self.map.test_done()

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, object, object]:
        shared = fixturedef.scope != "function"
        previous = self.map.fixture_context(_fixture_context(fixturedef) if shared else None)
        try:
            return (yield)
        finally:
            self.map.fixture_context(previous)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        facts = getattr(report, "mlcheck_facts", None) or {}
        self.map.models_used(report.nodeid, [m["id"] for m in facts.get("models") or ()])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        self.map.finish()


def _fixture_context(fixturedef: Any) -> str:
    from .selection import FIXTURE_PREFIX

    return f"{FIXTURE_PREFIX}{fixturedef.baseid}::{fixturedef.argname}"


class FactsOnReports:
    """Attaches each test's facts to its reports, for the process that builds results."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        # A plain attribute travels with the report from xdist workers to the controller.
        facts = item.stash.get(FACTS_KEY, {})
        if report.failed and call.excinfo is not None and "failure_kind" not in facts:
            # the live exception (its cause and context chain) is only here, on the worker
            state = item.config.pluginmanager.get_plugin("mlcheck-state")
            rules = state.failure_rules if isinstance(state, MlcheckState) else ()
            facts["failure_kind"] = classify_exception(call.excinfo.value, rules).value
        report.mlcheck_facts = dict(facts)  # type: ignore[attr-defined]
        return report


class ShowHubCauses:
    """Under ``-v``, a model that is not in the cache shows the hub lookup's own error too: the
    models fixture keeps it out of the chain (one screen, no library traceback) by default."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        cause = getattr(call.excinfo.value, "hub_cause", None) if call.excinfo else None
        if call.excinfo is not None and isinstance(cause, BaseException):
            call.excinfo.value.__cause__ = cause
        return (yield)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def models(request: pytest.FixtureRequest) -> Iterator[ModelFactory]:
    """Models built from the local cache only: ``config``, ``random`` (shrunk), ``empty`` (meta),
    ``real`` (pinned cached weights), ``tokenizer``. See ``mlcheck.models.ModelFactory``.

    >>> def test_head(models):  # doctest: +SKIP
    ...     model = models.random("bert-base-uncased", task="sequence-classification")
    """
    from .cache import locate
    from .models import ModelFactory

    state = request.config.pluginmanager.get_plugin("mlcheck-state")
    # Without opt-in there is no state: the fixture still works, with the default seed.
    seed = state.seed if isinstance(state, MlcheckState) else constants.env_seed()
    # Read through the project's lock (pinned commits, safety options from its manifest).
    # models.real shares this worker's load cache; after the test, models it changed are evicted.
    from .model_cache import shared

    project = _project(request.config)
    factory = ModelFactory(locate=partial(locate, project=project), seed=seed, cache=shared())
    needs = request.node.stash.get(NEEDS_KEY, None)
    if needs is not None and needs.tier is Tier.FAST:
        factory.fast_test = request.node.nodeid  # models.real fails as in CI's fast job
    yield factory
    factory.release()


# ---------------------------------------------------------------------------------------------
# helpers


OPTED_IN_KEY = pytest.StashKey[bool]()


def _opted_in(config: pytest.Config, args: Sequence[str]) -> bool:
    """Decided once per process (see mlcheck.opt_in), from the first hook that sees the args."""
    if OPTED_IN_KEY not in config.stash:
        from .manifest import find_root
        from .opt_in import opted_in

        roots = {config.rootpath, find_root(config.invocation_params.dir)}
        config.stash[OPTED_IN_KEY] = opted_in(args, roots, os.environ)
    return config.stash[OPTED_IN_KEY]


def _set_run_slow(config: pytest.Config) -> None:
    """``RUN_SLOW=1`` when a selected tier is where ``@slow`` tests go: transformers and
    accelerate read it when their testing helpers are imported, i.e. before any test module."""
    from .decorators import needs_run_slow, project_rules
    from .manifest import load_manifest

    try:
        tiers = selected_tiers(config.known_args_namespace.mlcheck_tier, "--mlcheck-tier")
        table = project_rules(load_manifest(config.rootpath))
    except MlcheckError:
        return  # reported with its message by pytest_configure
    if needs_run_slow(tiers, table):
        os.environ[constants.ENV_RUN_SLOW] = "1"


PROJECT_KEY = pytest.StashKey["Project"]()


def _project(config: pytest.Config) -> Project:
    """The manifest and lock, read once per session (per xdist worker), on first use: a test
    that never needs a model never reads the lock."""
    if PROJECT_KEY not in config.stash:
        from .lock import Project

        trusted = constants.env_safety_manifest()
        config.stash[PROJECT_KEY] = Project.read(config.rootpath, trusted=trusted)
    return config.stash[PROJECT_KEY]


def _xdist_controller(config: pytest.Config) -> bool:
    workers = getattr(config.option, "numprocesses", None)
    return bool(workers) and getattr(config.option, "dist", "no") != "no"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    if (np := sys.modules.get("numpy")) is not None:
        np.random.seed(seed)
    if (torch := sys.modules.get("torch")) is not None:
        torch.manual_seed(seed)


def _subtest_context(report: pytest.TestReport) -> dict[str, Any] | None:
    """``{"msg", "params"}`` of a subtest's report, None for a test's own reports.

    pytest 9's ``SubtestReport`` and the pytest-subtests plugin's ``SubTestReport`` (pytest 8)
    both carry ``context`` with ``msg`` and ``kwargs``; both survive xdist's serialisation.
    """
    context = getattr(report, "context", None)
    kwargs = getattr(context, "kwargs", None)
    if context is None or kwargs is None:
        return None
    return {"msg": getattr(context, "msg", None), "params": {k: str(v) for k, v in kwargs.items()}}


def _message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple):
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ").removeprefix("not run: ")
    if not report.failed:
        return ""
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    return _one_line(report.longreprtext)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[0][2:].strip() if errors else lines[-1] if lines else "")[:500]


def _device_info(gpu_selected: bool) -> DeviceInfo:
    if not gpu_selected:
        return DeviceInfo()
    accel = detect_accelerator()
    if accel is None:
        return DeviceInfo()
    return DeviceInfo(
        type=accel.type,
        name=accel.name,
        count=accel.count,
        memory_gb=round(accel.memory_gb, 1) if accel.memory_gb else None,
    )


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("pytest-mlcheck", "pytest", "torch", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
