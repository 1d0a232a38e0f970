"""The results schema: one versioned shape for every test run (``results.json``).

Everything that reports (terminal, PR comment, job summary, annotations, merges) reads these
dataclasses; nothing here imports pytest. The plugin feeds pytest's reports into
:class:`mlcheck.results.builder.ResultsBuilder` as plain values, which builds these;
``mlcheck report`` loads and merges files.

>>> r = RunResults(run=RunInfo(tiers=("fast",)), tests=())
>>> r.exit_code()
0
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import ResultsError, ResultsMissing

SCHEMA_VERSION = 2
# Version 2 only added optional fields (subtests, run status, verified models), so version 1
# files read as version 2 files with those fields at their defaults.
READABLE_VERSIONS = (1, 2)
RESULTS_FILE = "results.json"
JUNIT_FILE = "junit.xml"
REPORT_FILE = "report.md"
JOURNAL_FILE = "journal.jsonl"  # every report as it came, so a killed run loses nothing

# Caps keep results files bounded whatever the tests print (a multi-MB assertion message).
MAX_MESSAGE_CHARS = 2_000
MAX_TRACEBACK_CHARS = 20_000
MAX_SUBTESTS = 1_000  # recorded per test; the outcome counts every one
MAX_READ_BYTES = 256 * 1024 * 1024  # a results file read back (publish's own cap is lower)


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # failed outside the test body (setup/teardown/collection) or a missing need
    SKIPPED = "skipped"
    NOT_RUN = "not_run"  # its tier was not selected; `reason` says how to run it
    XFAILED = "xfailed"
    XPASSED = "xpassed"
    FLAKY = "flaky"  # failed, then passed on a rerun

    @property
    def is_failure(self) -> bool:
        return self in (Outcome.FAILED, Outcome.ERROR)


class Phase(StrEnum):
    COLLECT = "collect"
    SETUP = "setup"
    CALL = "call"
    TEARDOWN = "teardown"


@dataclass(frozen=True)
class Attempt:
    """One run of a test (reruns add attempts)."""

    outcome: Outcome
    phase: Phase | None = None  # where it failed; None when it passed
    duration: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class Subtest:
    """One ``subTest``/``subtests.test`` block of a test; a failing one fails its test."""

    params: Mapping[str, str] = field(default_factory=dict)
    msg: str | None = None
    outcome: Outcome = Outcome.PASSED
    message: str = ""
    duration: float = 0.0

    def describe(self) -> str:
        """``[msg] (i=1)`` as pytest prints it, or ``(<subtest>)``."""
        parts = [f"[{self.msg}]"] if self.msg is not None else []
        if self.params:
            parts.append("(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")")
        return " ".join(parts) or "(<subtest>)"


class RunStatus(StrEnum):
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"  # cancelled: SIGTERM/SIGINT, a timeout
    CRASHED = "crashed"  # the test process died (OOM kill, segfault)


@dataclass(frozen=True)
class RunningTest:
    """A test that was running when the run was interrupted or crashed."""

    nodeid: str
    duration: float = 0.0  # so far


@dataclass(frozen=True)
class ModelUse:
    id: str
    revision: str | None = None
    cache_hit: bool | None = None  # found in the local cache (None: not known)
    # models.real: "loaded" from disk for this test, or "reused" from the worker's load cache
    load: str | None = None


@dataclass(frozen=True)
class GoldenCheck:
    """A ``golden.check`` that failed or had no value, with what it observed (to accept it)."""

    file: str  # the golden file, relative to the project root
    test: str  # node name inside the test file
    name: str  # the check's name
    key: str  # hardware key the run used (cpu, cuda:sm90, ...)
    status: str  # "missing" or "mismatch"
    problem: str = ""
    compared_with: str | None = None  # the key whose value it was compared with
    recorded_with: Mapping[str, str] = field(default_factory=dict)  # torch/transformers versions
    value: Mapping[str, Any] = field(default_factory=dict)  # stored form (mlcheck.golden.values)


@dataclass(frozen=True)
class GoldenUse:
    """A test's golden checks: the hardware key, how many, and the ones that failed."""

    key: str
    checks: int = 0
    failures: tuple[GoldenCheck, ...] = ()
    written: int = 0  # values this run recorded (--golden record/update): those checks passed


@dataclass(frozen=True)
class TestResult:
    nodeid: str
    outcome: Outcome
    tier: str = "fast"
    file: str | None = None
    line: int | None = None  # 1-based
    phase: Phase | None = None
    attempts: tuple[Attempt, ...] = ()
    duration: float = 0.0
    message: str = ""  # short reason; for skipped/not-run tests, why and how to run it
    traceback: str = ""
    models: tuple[ModelUse, ...] = ()
    device: str | None = None
    seed: int | None = None
    loss_curve: tuple[float, ...] | None = None
    run: str | None = None  # which job/section produced it (e.g. "fast", "gpu"); set on merge
    subtests: tuple[Subtest, ...] = ()
    # outcome -> count of the subtests past the first MAX_SUBTESTS (not recorded one by one)
    subtests_omitted: Mapping[str, int] = field(default_factory=dict)
    # failed/errored tests only: code, hub, oom, device, crash, timeout (results/failure_kinds)
    failure_kind: str | None = None
    golden: GoldenUse | None = None  # only for tests that used the `golden` fixture
    # gpu-tier tests on CUDA: torch.cuda.max_memory_allocated over the test (mlcheck.project.sizing)
    gpu_peak_bytes: int | None = None

    __test__ = False  # not a pytest test class

    @property
    def name(self) -> str:
        return self.nodeid.rsplit("::", 1)[-1]


@dataclass(frozen=True)
class DeviceInfo:
    type: str = "cpu"  # cpu, cuda, xpu, mps
    name: str = "cpu"
    count: int = 0
    memory_gb: float | None = None


@dataclass(frozen=True)
class RunInfo:
    tiers: tuple[str, ...] = ("fast",)
    started_at: str = ""  # ISO 8601, UTC
    duration: float = 0.0
    shard: str | None = None  # "i/N"
    workers: int = 0  # xdist workers; 0 = in-process
    seed: int | None = None
    device: DeviceInfo = field(default_factory=DeviceInfo)
    sha: str | None = None
    ref: str | None = None
    versions: Mapping[str, str] = field(default_factory=dict)  # python, torch, transformers...
    pytest_exit_code: int | None = None
    status: RunStatus = RunStatus.COMPLETE
    running: tuple[RunningTest, ...] = ()  # interrupted or crashed while these ran
    collected: int | None = None  # tests pytest collected, run or not
    signal: str | None = None  # what stopped the run: SIGTERM, SIGINT, SIGKILL...
    verified: tuple[str, ...] = ()  # models whose weights were hashed against the lock
    deselected: int = 0  # collected, then deselected (-k, -m, --deselect): not in ``tests``
    # --changed-since: "ran 12 of 140 gpu tests: selected by change (3 files); nightly runs all"
    # or "ran all 140 gpu tests: <why the selection could not be sure>"
    selection: str | None = None


@dataclass(frozen=True)
class RunResults:
    run: RunInfo
    tests: tuple[TestResult, ...]
    schema_version: int = SCHEMA_VERSION

    def counts(self) -> Counter[str]:
        """Tests per outcome value, e.g. ``{"passed": 10, "failed": 1}``."""
        return Counter(t.outcome.value for t in self.tests)

    def failures(self) -> list[TestResult]:
        return [t for t in self.tests if t.outcome.is_failure]

    def exit_code(self) -> int:
        """0 when every selected test passed (not-run tests don't count against it), else 1."""
        return 1 if self.failures() else 0


# ---------------------------------------------------------------------------------------------
# Serialisation


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return text[: limit // 2] + f"\n... [{cut} characters cut] ...\n" + text[-limit // 2 :]


def to_dict(results: RunResults) -> dict[str, Any]:
    run = asdict(results.run)
    run["versions"] = dict(results.run.versions)
    run["running"] = [dict(vars(r)) for r in results.run.running]
    run["tiers"], run["verified"] = list(results.run.tiers), list(results.run.verified)
    if not results.run.deselected:
        del run["deselected"]  # optional: only a run given -k/-m has it
    if results.run.selection is None:
        del run["selection"]  # optional: only a run given --changed-since has it
    # schema_version first: readers check it before anything else.
    return {
        "schema_version": results.schema_version,
        "run": run,
        "tests": [_test_to_dict(t) for t in results.tests],
    }


def _test_to_dict(test: TestResult) -> dict[str, Any]:
    # By hand, not dataclasses.asdict: asdict deep-copies every field recursively, which made it
    # half the cost of writing 100k results. Enums are str subclasses and encode as their value.
    data = dict(vars(test))
    data["attempts"] = [dict(vars(a)) for a in test.attempts]
    data["models"] = [_model_to_dict(m) for m in test.models]
    if test.subtests:
        data["subtests"] = [dict(vars(s), params=dict(s.params)) for s in test.subtests]
    else:
        del data["subtests"]
    if test.subtests_omitted:
        data["subtests_omitted"] = dict(test.subtests_omitted)
    else:
        del data["subtests_omitted"]  # optional: only tests with more than MAX_SUBTESTS
    if test.failure_kind is None:
        del data["failure_kind"]  # optional: only failed and errored tests have a kind
    if test.gpu_peak_bytes is None:
        del data["gpu_peak_bytes"]  # optional: only gpu-tier tests that ran on CUDA
    if test.golden is None:
        del data["golden"]  # optional: absent for the tests that use no golden values
    else:
        data["golden"] = asdict(test.golden)
    return data


def _model_to_dict(model: ModelUse) -> dict[str, Any]:
    data = dict(vars(model))
    if model.load is None:
        del data["load"]  # optional: only models.real uses have it
    return data


def from_dict(data: Mapping[str, Any]) -> RunResults:
    if not isinstance(data, Mapping):
        raise ResultsError("results file is not a JSON object")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ResultsError(
            f"results schema_version {version!r} is not supported by this mlcheck "
            f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); "
            "use the mlcheck version that wrote it"
        )
    try:
        run_data = dict(data["run"])
        run_data["device"] = DeviceInfo(**run_data.get("device") or {})
        run_data["tiers"] = tuple(run_data.get("tiers") or ())
        run_data["status"] = RunStatus(run_data.get("status") or RunStatus.COMPLETE)
        run_data["running"] = tuple(RunningTest(**r) for r in run_data.get("running") or ())
        run_data["verified"] = tuple(run_data.get("verified") or ())
        run = RunInfo(**run_data)
        tests = tuple(_test_from_dict(t) for t in data["tests"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsError(f"results file is malformed: {exc}") from exc
    return RunResults(run=run, tests=tests)


def _test_from_dict(t: Mapping[str, Any]) -> TestResult:
    t = dict(t)
    t["outcome"] = Outcome(t["outcome"])
    t["phase"] = Phase(t["phase"]) if t.get("phase") else None
    t["attempts"] = tuple(
        Attempt(
            outcome=Outcome(a["outcome"]),
            phase=Phase(a["phase"]) if a.get("phase") else None,
            duration=float(a.get("duration", 0.0)),
            message=str(a.get("message", "")),
        )
        for a in t.get("attempts") or ()
    )
    t["models"] = tuple(ModelUse(**m) for m in t.get("models") or ())
    t["subtests"] = tuple(
        Subtest(
            params={str(k): str(v) for k, v in (s.get("params") or {}).items()},
            msg=s.get("msg"),
            outcome=Outcome(s.get("outcome", "passed")),
            message=str(s.get("message", "")),
            duration=float(s.get("duration", 0.0)),
        )
        for s in t.get("subtests") or ()
    )
    t["subtests_omitted"] = {str(k): int(v) for k, v in (t.get("subtests_omitted") or {}).items()}
    if t.get("loss_curve") is not None:
        t["loss_curve"] = tuple(float(x) for x in t["loss_curve"])
    t["golden"] = golden_use(t["golden"]) if t.get("golden") is not None else None
    return TestResult(**t)


def golden_use(data: Mapping[str, Any]) -> GoldenUse:
    """A :class:`GoldenUse` from its JSON form (results files, the plugin's per-test facts).

    Results files may be untrusted (artifacts): wrong types raise ``ValueError``.
    """
    texts = ("file", "test", "name", "key", "status", "problem")
    for f in data.get("failures") or ():
        if not isinstance(f, Mapping) or not all(isinstance(f.get(n, ""), str) for n in texts):
            raise ValueError("golden failures must be objects with string fields")
        if not isinstance(f.get("value", {}), Mapping):
            raise ValueError("a golden failure's value must be an object")
    if not isinstance(data.get("key"), str):
        raise ValueError("golden key must be a string")
    return GoldenUse(
        key=str(data["key"]),
        checks=int(data.get("checks", 0)),
        written=int(data.get("written", 0)),
        failures=tuple(
            GoldenCheck(
                **{
                    **f,
                    "recorded_with": dict(f.get("recorded_with") or {}),
                    "value": dict(f.get("value") or {}),
                }
            )
            for f in data.get("failures") or ()
        ),
    )


def write(results: RunResults, directory: Path) -> Path:
    """Write ``results.json`` atomically (a crash never leaves half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RESULTS_FILE
    # A fresh name opened exclusively, not mkstemp: mkstemp's file is 0600 whatever the umask,
    # and results.json must be readable like junit.xml next to it (a CI user, a container's).
    tmp = directory / f".results-{os.getpid()}-{secrets.token_hex(4)}.json"
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            # compact and one-shot: json.dump's streaming and indenting encoders are pure
            # Python, several times slower than dumps' C encoder on 100k tests
            fh.write(json.dumps(to_dict(results), ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read(path: Path) -> RunResults:
    """Read a results file or a results directory; clear errors for anything else.

    The tests wrote it, so it is opened as :mod:`mlcheck.results.untrusted_files` opens such files:
    no link followed, no blocking on a FIFO, a regular file of at most
    :data:`MAX_READ_BYTES`.
    """
    from .untrusted_files import NotPlainFile, read_beneath

    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(read_beneath(path.parent, path.name, MAX_READ_BYTES).decode("utf-8"))
    except FileNotFoundError as exc:
        raise ResultsMissing(f"no results at {path}: run `mlcheck run` first") from exc
    except NotPlainFile as exc:
        raise ResultsError(f"{exc}; results must be plain files") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} is not valid JSON: {exc}") from exc
    return from_dict(data)
