"""Representative results for the golden reports, and a generator of large suites.

Used by tests/report/test_markdown.py (golden comparison), tests/data/report-golden/regenerate.py (one command to
rewrite the expected files after an intended change) and bench/render.py.
Everything is deterministic: same inputs, same bytes.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from mlcheck.results import digest
from mlcheck.results.merge import merge_sections
from mlcheck.github.workflow import annotation_lines
from mlcheck.report import RenderContext, render_annotations, render_report, render_summary
from mlcheck.results.schema import Attempt, DeviceInfo, ModelUse, Outcome, Phase, RunInfo, RunResults, TestResult

GOLDEN = Path(__file__).parent
SHA = "0123456789abcdef0123456789abcdef01234567"
BASE_SHA = "fedcba9876543210fedcba9876543210fedcba98"
CTX = RenderContext(
    repo="acme/models",
    sha=SHA,
    run_url="https://github.com/acme/models/actions/runs/42",
    artifact_name="mlcheck-results",
)
TRACEBACK = """\
    def test_loss_decreases(models):
        model = models.tiny("bert")
>       mlcheck.assert_loss_decreases(model, batch)
E       AssertionError: loss did not decrease over 20 steps: 2.31 -> 2.40

tests/test_train.py:14: AssertionError"""
NOT_RUN_GPU = "tier gpu not selected: needs an accelerator; label the PR `mlcheck:gpu` to run it"
NOT_RUN_REAL = "tier real not selected: needs real weights; run `mlcheck run --tier real`"


def passed(nodeid: str, line: int = 1, **kw: object) -> TestResult:
    return TestResult(
        nodeid=nodeid,
        outcome=Outcome.PASSED,
        file=nodeid.split("::")[0],
        line=line,
        attempts=(Attempt(Outcome.PASSED, duration=0.01),),
        duration=0.01,
        **kw,  # type: ignore[arg-type]
    )


def failed(nodeid: str, line: int, message: str, **kw: object) -> TestResult:
    phase = kw.pop("phase", Phase.CALL)
    outcome = Outcome.FAILED if phase is Phase.CALL else Outcome.ERROR
    return TestResult(
        nodeid=nodeid,
        outcome=outcome,
        file=nodeid.split("::")[0],
        line=line,
        phase=phase,  # type: ignore[arg-type]
        attempts=(Attempt(outcome, phase, 0.5, message),),  # type: ignore[arg-type]
        duration=0.5,
        message=message,
        traceback=str(kw.pop("traceback", TRACEBACK)),
        **kw,  # type: ignore[arg-type]
    )


def not_run(nodeid: str, reason: str) -> TestResult:
    return TestResult(
        nodeid=nodeid, outcome=Outcome.NOT_RUN, file=nodeid.split("::")[0], line=1, message=reason
    )


def run_info(**kw: object) -> RunInfo:
    base: dict[str, object] = {
        "tiers": ("fast",),
        "started_at": "2025-01-01T00:00:00Z",
        "duration": 12.5,
        "seed": 0,
        "sha": SHA,
    }
    base.update(kw)
    return RunInfo(**base)  # type: ignore[arg-type]


def all_pass() -> RunResults:
    tests = tuple(passed(f"tests/test_model.py::test_shape[{i}]", 10 + i) for i in range(5))
    curve = (2.3, 2.0, 1.6, 1.1, 0.7, 0.4, 0.2, 0.1)
    tests += (
        passed(
            "tests/test_train.py::test_overfits",
            20,
            loss_curve=curve,
            models=(ModelUse("prajjwal1/bert-tiny", "a" * 40, cache_hit=True),),
        ),
    )
    return RunResults(run_info(), tests)


def new_failures() -> tuple[RunResults, dict[str, digest.Digest]]:
    """Three failures: one new, one already failing on base, one error in setup (new)."""
    tests = (
        passed("tests/test_model.py::test_shape", 5),
        failed(
            "tests/test_train.py::test_loss_decreases",
            12,
            "AssertionError: loss did not decrease over 20 steps: 2.31 -> 2.40",
            loss_curve=(2.31, 2.35, 2.33, 2.38, 2.40),
        ),
        failed(
            "tests/test_nli.py::test_label_order", 30, "AssertionError: class 1 is not entailment"
        ),
        failed(
            "tests/test_real.py::test_minilm_embeds",
            8,
            "ModelNotCached: 'sentence-transformers/all-MiniLM-L6-v2'@main is not in the cache; "
            "run `mlcheck cache warm`",
            phase=Phase.SETUP,
            models=(ModelUse("sentence-transformers/all-MiniLM-L6-v2", None, cache_hit=False),),
        ),
    )
    base_tests = (
        passed("tests/test_model.py::test_shape", 5),
        passed("tests/test_train.py::test_loss_decreases", 12),
        failed("tests/test_nli.py::test_label_order", 30, "AssertionError"),
        passed("tests/test_real.py::test_minilm_embeds", 8),
        passed("tests/test_old.py::test_removed", 3),
    )
    base = RunResults(run_info(sha=BASE_SHA), base_tests)
    base_digests = digest.parse(digest.encode(base, section="fast"))
    return RunResults(run_info(), tests), base_digests


def flaky() -> RunResults:
    t = TestResult(
        nodeid="tests/test_serving.py::test_server_batch",
        outcome=Outcome.FLAKY,
        file="tests/test_serving.py",
        line=40,
        attempts=(
            Attempt(Outcome.FAILED, Phase.CALL, 1.0, "ConnectionRefusedError: [Errno 111]"),
            Attempt(Outcome.PASSED, None, 0.8),
        ),
        duration=1.8,
        message="ConnectionRefusedError: [Errno 111]",
    )
    return RunResults(run_info(), (passed("tests/test_model.py::test_shape", 5), t))


def not_run_case() -> RunResults:
    tests = (
        passed("tests/test_model.py::test_shape", 5),
        *(not_run(f"tests/test_gpu.py::test_fp16[{i}]", NOT_RUN_GPU) for i in range(3)),
        not_run("tests/test_real.py::test_minilm_embeds", NOT_RUN_REAL),
        TestResult(
            "tests/test_model.py::test_windows_only",
            Outcome.SKIPPED,
            file="tests/test_model.py",
            line=50,
            message="only on Windows",
        ),
    )
    return RunResults(run_info(), tests)


def merged_shards() -> dict[str, RunResults]:
    """Two fast shards and a GPU job (H100) merged into two sections."""
    shard1 = RunResults(
        run_info(shard="1/2", duration=30.0),
        (
            passed("tests/test_a.py::test_one", 3),
            not_run("tests/test_gpu.py::test_fp16", NOT_RUN_GPU),
        ),
    )
    shard2 = RunResults(
        run_info(shard="2/2", duration=35.0),
        (
            passed("tests/test_b.py::test_two", 4),
            failed("tests/test_b.py::test_three", 9, "ValueError: bad shape (2, 3)"),
        ),
    )
    gpu = RunResults(
        run_info(
            tiers=("real", "gpu"),
            duration=120.0,
            device=DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", 1, 79.6),
        ),
        (
            passed(
                "tests/test_gpu.py::test_fp16",
                7,
                tier="gpu",
                device="NVIDIA H100 80GB HBM3",
                models=(ModelUse("sentence-transformers/all-MiniLM-L6-v2", "c" * 40, True),),
            ),
            *(
                replace(
                    passed(
                        f"tests/test_real.py::test_embeds[{i}]",
                        12,
                        tier="real",
                        models=(ModelUse("sentence-transformers/all-MiniLM-L6-v2", "c" * 40, True),),
                    ),
                    duration=1.5 + i,
                )
                for i in range(2)
            ),
        ),
    )
    return merge_sections([shard1, shard2, gpu])


def big_suite(n: int, fail_rate: float, seed: int, *, message_chars: int = 200) -> RunResults:
    """``n`` tests, ``fail_rate`` of them failing, with realistic names and tracebacks."""
    rng = random.Random(seed)
    tests = []
    tb = TRACEBACK * max(1, message_chars // len(TRACEBACK))
    for i in range(n):
        nodeid = (
            f"tests/pkg{i % 50}/test_mod{i % 997}.py::test_case_{i}[param-{rng.randrange(1000)}]"
        )
        r = rng.random()
        if r < fail_rate:
            tests.append(
                failed(
                    nodeid,
                    1 + i % 400,
                    f"AssertionError: value {rng.random():.4f} != expected",
                    traceback=tb,
                )
            )
        elif r < fail_rate + 0.002:
            tests.append(replace(failed(nodeid, 3, "flaky"), outcome=Outcome.FLAKY))
        elif r < fail_rate + 0.05:
            tests.append(not_run(nodeid, NOT_RUN_GPU if i % 2 else NOT_RUN_REAL))
        else:
            tests.append(passed(nodeid, 1 + i % 400))
    return RunResults(run_info(duration=float(n) / 100), tuple(tests))


def huge_suite() -> tuple[RunResults, dict[str, digest.Digest]]:
    results = big_suite(20_000, 0.05, seed=7)
    # The same suite on base, where every other failure of this run passed.
    failing = [t.nodeid for t in results.failures()]
    fixed = set(failing[::2])
    base_tests = tuple(
        replace(t, outcome=Outcome.PASSED) if t.nodeid in fixed else t for t in results.tests
    )
    base = RunResults(run_info(sha=BASE_SHA), base_tests)
    return results, digest.parse(digest.encode(base, section="fast"))


def infrastructure() -> tuple[RunResults, dict[str, digest.Digest]]:
    """One code failure, three infrastructure failures (hub 2, oom 1), two tests that stopped
    running (one now skipped, one deleted) and one test that got slower than on base."""
    hub = "OSError: We couldn't connect to 'https://huggingface.co' to load the files"
    tests = (
        passed("tests/test_model.py::test_shape", 5),
        failed(
            "tests/test_nli.py::test_label_order", 30, "AssertionError: class 1 is not entailment"
        ),
        failed("tests/test_real.py::test_embeds", 8, hub, failure_kind="hub"),
        failed("tests/test_real.py::test_classify", 20, hub, failure_kind="hub"),
        failed(
            "tests/test_gpu.py::test_fp16",
            12,
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB",
            failure_kind="oom",
        ),
        TestResult(
            "tests/test_gpu.py::test_bf16",
            Outcome.SKIPPED,
            file="tests/test_gpu.py",
            line=30,
            message="test requires a GPU",
        ),
        replace(passed("tests/test_train.py::test_overfits", 40), duration=9.0),
    )
    base_tests = (
        passed("tests/test_model.py::test_shape", 5),
        passed("tests/test_nli.py::test_label_order", 30),
        passed("tests/test_real.py::test_embeds", 8),
        passed("tests/test_real.py::test_classify", 20),
        passed("tests/test_gpu.py::test_fp16", 12),
        passed("tests/test_gpu.py::test_bf16", 30),
        passed("tests/test_train.py::test_overfits", 40),
        passed("tests/test_old.py::test_removed", 3),
    )
    base = RunResults(run_info(sha=BASE_SHA), base_tests)
    return RunResults(run_info(), tests), digest.parse(digest.encode(base, section="fast"))


def render_all() -> dict[str, str]:
    """Every golden file's expected content, by file name."""
    out: dict[str, str] = {}

    def add(name: str, sections: dict[str, RunResults], ctx: RenderContext = CTX) -> None:
        out[f"{name}.comment.md"] = render_report(sections, ctx) + "\n"
        out[f"{name}.summary.md"] = render_summary(sections, ctx) + "\n"
        out[f"{name}.annotations.txt"] = "\n".join(annotation_lines(render_annotations(sections, ctx))) + "\n"

    add("all_pass", {"fast": all_pass()})
    results, base = new_failures()
    add("new_failures", {"fast": results}, replace(CTX, base=base))
    add("flaky", {"fast": flaky()})
    add("not_run", {"fast": not_run_case()})
    add("merged_shards", merged_shards())
    results, base = infrastructure()
    add("infrastructure", {"fast": results}, replace(CTX, base=base))
    results, base = huge_suite()
    huge_ctx = replace(CTX, base=base)
    out["huge_suite.comment.md"] = render_report({"fast": results}, huge_ctx) + "\n"
    out["huge_suite.annotations.txt"] = (
        "\n".join(annotation_lines(render_annotations({"fast": results}, huge_ctx))) + "\n"
    )
    return out
