"""The plugin's session: which tests run, what each needs, and the results (wired by
:mod:`mlcheck.plugin`, as pytest-xdist's ``plugin.py`` wires ``dsession.py``).

:class:`MlcheckState` holds one session's state and the hooks that need it: the tiers of the
collected tests (decided by :func:`mlcheck.tiers.decide.decide`), the requirements checked
before each test (weights, accelerator), the seed, the progress lines, and the results it
builds (:class:`~mlcheck.results.builder.ResultsBuilder`) and writes at the end.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .. import constants
from .. import records as _record
from ..errors import MlcheckError
from ..progress import Progress
from ..report.messages import test_headline  # the line that heads a test in every report
from ..results.builder import ResultsBuilder, installed_versions
from ..results.failure_kinds import FailureKind, classify_text, crash_kind, oom_kill_count
from ..results.schema import JOURNAL_FILE, DeviceInfo, RunInfo, RunResults, RunStatus
from ..results.schema import write as write_results
from ..stash import FACTS_KEY, NEEDS_KEY, NOT_RUN_KEY
from ..tiers import (
    MarkInfo,
    Tier,
    accelerator_problem,
    detect_accelerator,
    format_tiers,
    not_run_reason,
    selected_tiers,
)
from ..tiers.decide import TierRules, decide

if TYPE_CHECKING:
    from ..project.lock import Project
    from ..results.failure_kinds import Rule


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
        from ..project.manifest import load_manifest

        manifest = load_manifest(config.rootpath)  # once: markers, failure kinds, decorators
        self.manifest_extra = dict(manifest.extra)  # select_core (mlcheck.plugin.selection)
        self.selection_text: str | None = None
        self.rules = TierRules.of(manifest)  # the project's markers and decorators
        self.failure_rules: tuple[Rule, ...] = manifest.failure_kinds
        self.oom_kills = oom_kill_count()  # to tell the OOM killer's SIGKILL from a crash
        for marker, tier in self.rules.markers.items():
            config.addinivalue_line("markers", f"{marker}: tier {tier} ([tool.mlcheck] markers)")
        self.is_worker = hasattr(config, "workerinput")
        # Only the process that writes results.json builds them (the xdist controller, or the
        # single process); the terminal summary also needs them under xdist.
        self.records = not self.is_worker and (
            self.results_dir is not None or xdist_controller(config)
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
            from .. import progress as _progress

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

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        """The seed and the selected tiers at the top of the run, as pytest-randomly prints its
        seed: what a failure needs to be run again the same way."""
        tiers = format_tiers(self.tiers)
        return [
            f"mlcheck: tiers {tiers}, seed {self.seed} "
            f"(to reproduce: --mlcheck-tier={tiers} --mlcheck-seed={self.seed})"
        ]

    # -- collection ---------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marks = [MarkInfo(m.name, tuple(m.args), dict(m.kwargs)) for m in item.iter_markers()]
            try:  # markers, the decorators read from source, the project's rules: one decision
                needs = decide(
                    marks, getattr(item, "obj", None), getattr(item, "cls", None), self.rules
                )
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
        root = self.config.rootpath
        # this run's results folder, when inside the checkout: its journal is no change
        ignore: list[str] = []
        if self.results_dir is not None:
            results, checkout = self.results_dir.resolve(), root.resolve()
            if results.is_relative_to(checkout):
                ignore.append(results.relative_to(checkout).as_posix())
        try:
            selection = select_in_repo(
                root,
                base,
                Path(map_option) if map_option else None,
                collected,
                core=[str(c) for c in core] if isinstance(core, list) else [str(core)],
                ignore=ignore,
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
        # every worker selects the same tests (--changed-since): one worker's sentence says it
        self.selection_text = self.selection_text or str(output.get("mlcheck_selection") or "")

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
                message=test_headline(report.longreprtext, skipped=False),
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
            self._require(accelerator_problem(needs, accel, self.gpu_label))
            if needs.memory_auto and needs.models and accel is not None:
                self._require(self._auto_memory_problem(item.nodeid, needs.models, accel))
            from ..project.sizing import reset_peak

            reset_peak()
        if needs.models:
            from ..models import weights_problem

            for model_id in needs.models:
                self._require(weights_problem(model_id, project_of(self.config)))
        _seed_everything(self.seed)

    def _auto_memory_problem(self, nodeid: str, model_ids: Sequence[str], accel: Any) -> str | None:
        """gpu(min_memory_gb="auto"): the models' meta-device estimate against this device."""
        from ..models import ModelFactory
        from ..project.cache import locate
        from ..project.sizing import estimate_from_models, memory_problem

        factory = ModelFactory(locate=partial(locate, project=project_of(self.config)))
        try:
            est = estimate_from_models(nodeid, model_ids, factory)
        except MlcheckError as exc:
            return f"cannot estimate the memory it needs (gpu(min_memory_gb='auto')): {exc}"
        return memory_problem(est, accel.memory_gb, accel.name)

    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        needs = item.stash.get(NEEDS_KEY, None)
        if needs is not None and needs.gpu:
            from ..project.sizing import peak_bytes

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
        if xdist_controller(self.config) and self.tier_reported:
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
        from .. import progress as _progress

        if _progress.check_sink == self._check_progress:
            _progress.check_sink = None
        if self.is_worker:
            self.config.workeroutput["mlcheck_deselected"] = self.deselected  # type: ignore[attr-defined]
            self.config.workeroutput["mlcheck_selection"] = self.selection_text or ""  # type: ignore[attr-defined]
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
            selection=self.selection_text or None,
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
            versions=installed_versions(),
            pytest_exit_code=exitstatus,
        )


# ---------------------------------------------------------------------------------------------
# helpers


PROJECT_KEY = pytest.StashKey["Project"]()


def project_of(config: pytest.Config) -> Project:
    """The manifest and lock, read once per session (per xdist worker), on first use: a test
    that never needs a model never reads the lock."""
    if PROJECT_KEY not in config.stash:
        from ..project.lock import Project

        trusted = constants.env_safety_manifest()
        config.stash[PROJECT_KEY] = Project.read(config.rootpath, trusted=trusted)
    return config.stash[PROJECT_KEY]


def xdist_controller(config: pytest.Config) -> bool:
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
        return test_headline(str(longrepr[2]), skipped=True)
    if not report.failed:
        return ""
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    return test_headline(report.longreprtext, skipped=False)


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
