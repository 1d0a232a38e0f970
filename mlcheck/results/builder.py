"""Building results from a test run: pytest's reports (plain values, fed by the plugin) in,
one :class:`~mlcheck.results.schema.TestResult` per test out, journaled as they come.

The accounting lives here (attempts and reruns, flaky, subtests, crashes); the shape it
builds is :mod:`mlcheck.results.schema`. Every event is appended to ``journal.jsonl`` first, so a
run killed before pytest's session ends loses nothing: ``mlcheck run`` replays the journal
(:meth:`ResultsBuilder.replay`). Nothing here imports pytest.

>>> b = ResultsBuilder()
>>> b.report(nodeid="t.py::a", when="setup", outcome="passed")
>>> b.report(nodeid="t.py::a", when="call", outcome="failed", message="boom")
>>> b.report(nodeid="t.py::a", when="teardown", outcome="passed")
>>> [(t.nodeid, t.outcome.value, t.message) for t in b.build()]
[('t.py::a', 'failed', 'boom')]
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..text import duration_text
from .schema import (
    MAX_MESSAGE_CHARS,
    MAX_SUBTESTS,
    MAX_TRACEBACK_CHARS,
    Attempt,
    ModelUse,
    Outcome,
    Phase,
    RunningTest,
    Subtest,
    TestResult,
    golden_use,
    truncate,
)


@dataclass
class _Pending:
    nodeid: str
    file: str | None
    line: int | None
    attempts: list[Attempt] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0  # all attempts
    # the attempt in progress: its outcome so far (None = nothing but passes), failing phase...
    current: Outcome | None = None
    phase: Phase | None = None
    attempt_duration: float = 0.0
    message: str = ""
    traceback: str = ""  # of the latest failure
    phases: set[Phase] = field(default_factory=set)  # seen in the attempt in progress
    subtests: list[Subtest] = field(default_factory=list)  # of the attempt in progress
    finished_subtests: tuple[Subtest, ...] = ()  # of the last closed attempt
    # outcome -> count of the last attempt's subtests past MAX_SUBTESTS
    finished_omitted: dict[str, int] = field(default_factory=dict)

    def fail(self, phase: Phase, message: str, traceback: str) -> None:
        if self.current is None or not self.current.is_failure:  # the first failure decides
            self.current = Outcome.FAILED if phase is Phase.CALL else Outcome.ERROR
            self.phase, self.message, self.traceback = phase, message, traceback

    def mark(self, outcome: Outcome, message: str) -> None:
        if self.current is None:
            self.current, self.message = outcome, message

    def close_attempt(self) -> None:
        outcome = self.current or Outcome.PASSED
        failed = outcome.is_failure
        self.attempts.append(
            Attempt(
                outcome=outcome,
                phase=self.phase if failed else None,
                duration=round(self.attempt_duration, 6),
                message=truncate(self.message, MAX_MESSAGE_CHARS) if failed else "",
            )
        )
        self.current, self.phase, self.attempt_duration, self.phases = None, None, 0.0, set()
        self.finished_subtests = tuple(self.subtests[:MAX_SUBTESTS])
        # only the first MAX_SUBTESTS are kept, but every one is counted (pytest counts them all)
        self.finished_omitted = dict(Counter(s.outcome.value for s in self.subtests[MAX_SUBTESTS:]))
        self.subtests = []
        if outcome is Outcome.PASSED:
            self.message = ""


_PHASES = frozenset(p.value for p in Phase)


class ResultsBuilder:
    """Turns a stream of per-phase reports into one :class:`TestResult` per test.

    Call :meth:`report` for every setup/call/teardown report (from any xdist worker), then
    :meth:`build`. A rerun (pytest-rerunfailures) reports the failed phase with
    ``outcome="rerun"``; the next setup report starts a new attempt. A test whose last attempt
    passed after a failed one is ``flaky``. Subtest reports (``subtest=`` given: pytest 9's
    ``subtests``/``unittest.subTest``, or the pytest-subtests plugin) are recorded under their
    test and never start an attempt; a failing subtest fails the test.
    """

    def __init__(self, journal: Path | None = None) -> None:
        self._tests: dict[str, _Pending] = {}
        self._started: dict[str, float] = {}  # running tests: nodeid -> start time (epoch)
        self.collected: int | None = None
        # Line-buffered: each event reaches the OS as its line ends, so a SIGKILL of this
        # process loses at most the line being written (replay skips a torn last line).
        self._journal = open(journal, "a", encoding="utf-8", buffering=1) if journal else None  # noqa: SIM115

    def _log(self, kind: str, data: Mapping[str, Any]) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps([kind, data], ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    @classmethod
    def replay(cls, path: Path) -> ResultsBuilder:
        """A builder fed with a journal's events, as if they had just happened."""
        builder = cls()
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return builder
        for text in lines:
            try:
                kind, data = json.loads(text)
            except (ValueError, TypeError):
                continue  # the line a killed process was writing
            if kind == "report":
                builder.report(**data)
            elif kind == "start":
                builder.start(data["nodeid"], data["at"])
            elif kind == "collected":
                builder.set_collected(data["count"])
            elif kind == "collection_error":
                builder.collection_error(**data)
        return builder

    def set_collected(self, count: int) -> None:
        self._log("collected", {"count": count})
        self.collected = count

    def start(self, nodeid: str, at: float) -> None:
        """A test began running (``pytest_runtest_logstart``)."""
        self._log("start", {"nodeid": nodeid, "at": at})
        self._started[nodeid] = at

    def running(self, now: float) -> tuple[RunningTest, ...]:
        """Tests started and not finished, with how long they have run by ``now``."""
        return tuple(
            RunningTest(nodeid, round(max(0.0, now - at), 3))
            for nodeid, at in self._started.items()
        )

    def report(
        self,
        *,
        nodeid: str,
        when: str,
        outcome: str,
        duration: float = 0.0,
        file: str | None = None,
        line: int | None = None,
        message: str = "",
        traceback: str = "",
        xfail: bool = False,
        facts: Mapping[str, Any] | None = None,
        subtest: Mapping[str, Any] | None = None,
    ) -> None:
        if self._journal is not None:
            event = {"nodeid": nodeid, "when": when, "outcome": outcome, "duration": duration}
            for key, value in (
                ("file", file),
                ("line", line),
                ("message", message),
                ("traceback", traceback),
                ("xfail", xfail),
                ("facts", facts),
                ("subtest", subtest),
            ):
                if value:
                    event[key] = value
            self._log("report", event)
        test = self._tests.get(nodeid)
        if test is None:
            test = self._tests[nodeid] = _Pending(nodeid, file, line)
        if facts:
            test.facts.update(facts)
        if subtest is not None:
            self._subtest(test, subtest, outcome, duration, message, traceback, xfail)
            return
        if when not in _PHASES:
            # pytest-xdist's report for a test that crashed its worker (when="???"): the test
            # failed, once; nothing else of this attempt will come
            test.fail(Phase.CALL, message, traceback)
            test.duration += duration
            test.close_attempt()
            self._started.pop(nodeid, None)
            return
        phase = Phase(when)
        if phase in test.phases:
            # pytest-rerunfailures before 15 sent no teardown report after a rerun
            test.close_attempt()
        test.phases.add(phase)
        test.duration += duration
        test.attempt_duration += duration
        if outcome in ("failed", "rerun"):
            test.fail(phase, message, traceback)
        elif outcome == "skipped":
            if xfail:
                test.mark(Outcome.XFAILED, message)
            else:
                test.mark(
                    Outcome.NOT_RUN if test.facts.get("not_run") else Outcome.SKIPPED, message
                )
        elif outcome == "passed" and xfail:
            test.mark(Outcome.XPASSED, message)
        if phase is Phase.TEARDOWN:
            test.close_attempt()
            self._started.pop(nodeid, None)

    @staticmethod
    def _subtest(
        test: _Pending,
        context: Mapping[str, Any],
        outcome: str,
        duration: float,
        message: str,
        traceback: str,
        xfail: bool,
    ) -> None:
        if outcome == "failed":
            result = Outcome.FAILED
        elif outcome == "skipped":
            result = Outcome.XFAILED if xfail else Outcome.SKIPPED
        else:
            result = Outcome.PASSED
        params = context.get("params") or {}
        sub = Subtest(
            params={str(k): str(v) for k, v in params.items()},
            msg=None if context.get("msg") is None else str(context["msg"]),
            outcome=result,
            message=truncate(message, MAX_MESSAGE_CHARS) if result is not Outcome.PASSED else "",
            duration=round(duration, 6),
        )
        test.subtests.append(sub)
        if result is Outcome.FAILED:
            # the test fails with the first failing subtest's reason, named like pytest does
            test.fail(Phase.CALL, f"{sub.describe()}: {message}", traceback)

    def collection_error(self, *, nodeid: str, message: str, traceback: str = "") -> None:
        self._log(
            "collection_error", {"nodeid": nodeid, "message": message, "traceback": traceback}
        )
        test = self._tests[nodeid] = _Pending(nodeid, nodeid.split("::")[0] or None, None)
        test.fail(Phase.COLLECT, message, traceback)
        test.close_attempt()

    def build(self) -> tuple[TestResult, ...]:
        for nodeid, test in self._tests.items():
            if nodeid in self._started:
                continue  # still running (interrupted or crashed): not a verdict, see running()
            if test.current is not None:  # a verdict came, its teardown report did not
                test.close_attempt()
        return tuple(
            _finish(t)
            for nodeid, t in self._tests.items()
            if t.attempts and nodeid not in self._started
        )

    def crashed(self, now: float, why: str) -> None:
        """The test process died: each running test failed (as xdist reports a crashed worker)."""
        for item in self.running(now):
            test = self._tests.get(item.nodeid) or _Pending(item.nodeid, None, None)
            self._tests[item.nodeid] = test
            test.fail(Phase.CALL, f"{why} while this test ran ({duration_text(item.duration)})", "")
            test.attempt_duration += item.duration
            test.duration += item.duration
            test.close_attempt()
        self._started.clear()


def _finish(test: _Pending) -> TestResult:
    last = test.attempts[-1]
    outcome = last.outcome
    earlier_failed = any(a.outcome.is_failure for a in test.attempts[:-1])
    if outcome is Outcome.PASSED and earlier_failed:
        outcome = Outcome.FLAKY
    subtests = test.finished_subtests
    all_skipped = (
        bool(subtests)
        and all(s.outcome is Outcome.SKIPPED for s in subtests)
        and set(test.finished_omitted) <= {Outcome.SKIPPED.value}
    )
    if outcome is Outcome.PASSED and all_skipped:
        # Nothing it checked ran: skipped, as pytest's JUnit XML says (results.json and
        # junit.xml agree); its reason is its first subtest's. A failed or flaky test keeps
        # its verdict whatever its subtests did.
        outcome = Outcome.SKIPPED
    failing = next((a for a in reversed(test.attempts) if a.outcome.is_failure), None)
    facts = test.facts
    # skipped / not-run tests keep their reason as the message
    message = failing.message if failing and outcome.is_failure else test.message
    if outcome is Outcome.SKIPPED and all_skipped:
        message = subtests[0].message
    curve = facts.get("loss_curve")
    return TestResult(
        nodeid=test.nodeid,
        outcome=outcome,
        tier=str(facts.get("tier", "fast")),
        file=test.file,
        line=test.line,
        phase=failing.phase if failing and outcome.is_failure else None,
        attempts=tuple(test.attempts),
        duration=round(test.duration, 6),
        message=truncate(message, MAX_MESSAGE_CHARS),
        traceback=truncate(test.traceback, MAX_TRACEBACK_CHARS) if outcome.is_failure else "",
        models=tuple(
            ModelUse(
                id=str(m["id"]),
                revision=m.get("revision"),
                cache_hit=m.get("cache_hit"),
                load=m.get("load"),
            )
            for m in facts.get("models") or ()
        ),
        device=facts.get("device"),
        seed=facts.get("seed"),
        loss_curve=tuple(float(x) for x in curve) if curve is not None else None,
        run=facts.get("run"),
        subtests=test.finished_subtests,
        subtests_omitted=test.finished_omitted,
        failure_kind=str(facts.get("failure_kind") or "code") if outcome.is_failure else None,
        golden=golden_use(facts["golden"]) if facts.get("golden") else None,
        gpu_peak_bytes=_peak(facts.get("gpu_peak_bytes")),
    )


def _peak(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value >= 0 else None


# What a run records of its software (``RunInfo.versions``), and golden values beside them.
RUN_DISTRIBUTIONS = ("pytest-mlcheck", "pytest", "torch", "transformers")


def installed_versions(dists: Iterable[str] = RUN_DISTRIBUTIONS) -> dict[str, str]:
    """Python's version and each installed distribution's among ``dists`` (absent ones left
    out): the one probe the run's facts and the golden values' records share.

    >>> installed_versions(("no-such-distribution-xyz",)).keys()
    dict_keys(['python'])
    """
    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
