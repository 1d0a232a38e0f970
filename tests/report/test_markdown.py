"""Renderers: golden reports, budgets and degradation, safety of untrusted text (property-based),
annotations and the terminal summary. Markdown is checked as GitHub renders it (cmark-gfm)."""

from __future__ import annotations

import functools
import importlib.util
import io
import random
import re
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from mlcheck.github.workflow import annotation_lines
from mlcheck.redact import Redactor
from mlcheck.report import (
    COMMENT_BUDGET,
    SUMMARY_LIMIT,
    RenderContext,
    duration_text,
    permalink,
    render_annotations,
    render_section,
    render_summary,
    sparkline,
    sticky,
    terminal_summary,
)
from mlcheck.results import digest
from mlcheck.results.schema import Attempt, Outcome, Phase, RunInfo, RunResults, TestResult

GOLDEN = Path(__file__).parents[1] / "data" / "report-golden"


def _load_cases() -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden_cases", GOLDEN / "cases.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["golden_cases"] = module
    spec.loader.exec_module(module)
    return module


cases = _load_cases()


@functools.cache
def rendered() -> dict[str, str]:
    return dict(cases.render_all())


def to_html(markdown: str) -> str:
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


class _Text(HTMLParser):
    """Text nodes where GitHub would autolink mentions and references (not in code or links)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("pre", "code", "a"):
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("pre", "code", "a"):
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth == 0:
            self.parts.append(data)


def linkable_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return "\n".join(parser.parts)


MENTION = re.compile(r"(?<![\w`])@[A-Za-z0-9]")
REFERENCE = re.compile(r"(?:#|\bGH-)\d", re.I)


# ---------------------------------------------------------------------------------------------
# Golden reports (regenerate: python tests/data/report-golden/regenerate.py)


@pytest.mark.parametrize("name", sorted(cases.render_all()))
def test_golden(name: str) -> None:
    expected = (GOLDEN / name).read_text(encoding="utf-8")
    actual = rendered()[name]
    assert actual == expected, f"{name} changed: run `python {GOLDEN}/regenerate.py`, review"


def test_golden_new_failures_content() -> None:
    text = (GOLDEN / "new_failures.comment.md").read_text(encoding="utf-8")
    html = to_html(text)
    # new failures first, then the one already failing on base
    assert text.index("New failures (2)") < text.index("Already failing on base (1)")
    assert text.index("test\\_loss\\_decreases") < text.index("test\\_label\\_order")
    assert (
        'href="https://github.com/acme/models/blob/0123456789abcdef0123456789abcdef01234567/'
        'tests/test_train.py#L12"' in html
    )
    assert "<details><summary>Traceback</summary>" in html and "error in setup" in html
    assert "▁" in text and "change vs base" in text
    assert html.count("<table>") == 3  # counts, models and the slowest tests


def test_golden_infrastructure_group_and_stopped_running_as_github_renders_them() -> None:
    text = (GOLDEN / "infrastructure.comment.md").read_text(encoding="utf-8")
    html = to_html(text)
    # infrastructure below the code failures, never counted as new failures
    assert text.index("New failures (1)") < text.index("Infrastructure (3): hub 2 · oom 1")
    assert "❌ 1 new failure, 3 infrastructure failures" in text
    group = html.split("Infrastructure (3)")[1].split("</h4>")[1].split("<h4>")[0]
    assert "<strong>hub</strong>" in group and "<code>mlcheck cache warm</code>" in group
    assert "<code>@pytest.mark.gpu(min_memory_gb=...)</code>" in group
    assert group.count("<em>hub</em>") == 2 and group.count("<em>oom</em>") == 1
    # stopped running: collapsed, counts in the summary line, the skipped test named
    summary = re.search(r"<summary><b>⏸️ Stopped running \(2\)</b>: (.*?)</summary>", html)
    assert summary is not None
    assert summary.group(1) == "1 skipped — test requires a GPU · 1 no longer collected"
    stopped = html.split("Stopped running (2)")[1].split("</details>")[0]
    assert "<li>tests/test_gpu.py::test_bf16</li>" in stopped
    assert "no longer collected</strong> (1)" in stopped
    slower = html.split("Slower than base (1)")[1]
    assert "<td>tests/test_train.py::test_overfits</td>" in slower
    assert '<td align="right">9.0 s</td>' in slower
    notes = (GOLDEN / "infrastructure.annotations.txt").read_text().splitlines()
    assert "title=new failure" in notes[0]  # code failures are annotated first
    assert all("title=infrastructure (" in line for line in notes[1:])


def test_infrastructure_failures_with_room_for_one_annotation_leave_code_first() -> None:
    results, base = cases.infrastructure()
    lines = annotation_lines(
        render_annotations(results, replace(cases.CTX, base=base), max_errors=1)
    )
    assert "test_label_order" in lines[0] and "3 more failures not annotated" in lines[1]


def test_only_infrastructure_failures_are_still_red() -> None:
    results, base = cases.infrastructure()
    infra = replace(results, tests=tuple(t for t in results.tests if digest.is_infrastructure(t)))
    text = render_section(infra, replace(cases.CTX, base=base))
    assert text.startswith("### ❌ 3 infrastructure failures")
    assert "New failures" not in text and infra.exit_code() == 1


# ---------------------------------------------------------------------------------------------
# Small pieces


def test_sparkline() -> None:
    assert sparkline([1.0, 1.0]) == "▁▁"
    assert sparkline(list(range(100)), width=8) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, float("nan"), 0.0]) == "█×▁"
    assert sparkline([]) == ""


def test_duration_text() -> None:
    assert [duration_text(s) for s in (0.25, 12.34, 245, 3725)] == [
        "250 ms",
        "12.3 s",
        "4 min 05 s",
        "1 h 02 min",
    ]


def test_permalink_needs_repo_and_sha_and_quotes_the_path() -> None:
    ctx = RenderContext(repo="o/r", server_url="https://ghe.example.com/", path_prefix="sub")
    sha = "a" * 40
    assert permalink(ctx, "tests/a b(1).py", 3, sha) == (
        f"https://ghe.example.com/o/r/blob/{sha}/sub/tests/a%20b%281%29.py#L3"
    )
    assert permalink(RenderContext(), "t.py", 1, sha) == ""
    assert permalink(ctx, "t.py", 1, "not-a-sha") == ""


# ---------------------------------------------------------------------------------------------
# Budget: detail degrades in steps and says so


def _failing(n: int, tb_lines: int = 80) -> RunResults:
    tb = "\n".join(f"  File 'x.py', line {i}, in f\n    frame {i}" for i in range(tb_lines))
    tests = tuple(
        TestResult(
            f"tests/test_m.py::test_{i}",
            Outcome.FAILED,
            file="tests/test_m.py",
            line=i + 1,
            phase=Phase.CALL,
            message=f"AssertionError: {i}",
            traceback=tb + f"\nAssertionError: {i}",
        )
        for i in range(n)
    )
    return RunResults(RunInfo(sha="b" * 40), tests)


@pytest.mark.parametrize(
    ("n", "budget", "expect", "absent"),
    [
        (3, COMMENT_BUDGET, "<summary>Traceback", "Shortened"),
        (40, COMMENT_BUDGET, "tracebacks shortened", "not listed"),
        (400, COMMENT_BUDGET, "tracebacks left out", "not listed"),
        (5_000, COMMENT_BUDGET, "failing or flaky tests not listed", "<details><summary>Trace"),
        (5_000, 3_000, "4,975 failing or flaky tests not listed", "<details><summary>Trace"),
        (5_000, 900, "test names and tracebacks left out", "tests/test_m.py::"),
    ],
)
def test_detail_degrades_in_steps(n: int, budget: int, expect: str, absent: str) -> None:
    ctx = RenderContext(run_url="https://github.com/o/r/actions/runs/1", artifact_name="res")
    text = render_section(_failing(n), ctx, budget=budget)
    assert len(text.encode()) <= budget
    assert expect in text and absent not in text
    if "Shortened" in text:
        assert "[the job summary](https://github.com/o/r/actions/runs/1)" in text
        assert "res artifact" in text
    assert digest.parse(text)["fast"].counts == {"failed": n}


def test_summary_keeps_more_detail_than_the_comment() -> None:
    r = _failing(400)
    summary = render_summary({"fast": r}, RenderContext())
    assert len(summary.encode()) <= SUMMARY_LIMIT
    assert "<summary>Traceback" in summary and "mlcheck:digest" not in summary


def test_sections_fit_the_sticky_comment_together() -> None:
    fast, gpu = _failing(3_000), replace(_failing(2_000), run=RunInfo(tiers=("gpu",)))
    bodies = {}
    for key, r in (("fast", fast), ("gpu", gpu)):
        bodies[key] = render_section(r, RenderContext(), key=key, budget=COMMENT_BUDGET // 2)
    body = sticky.build_body(bodies)
    assert len(body) <= sticky.MAX_BODY
    # the digests survive the sticky comment and the next run finds them
    assert set(digest.parse(body)) == {"fast", "gpu"}


# ---------------------------------------------------------------------------------------------
# Annotations


def test_annotations_new_first_at_most_ten_and_a_notice() -> None:
    results, base = cases.new_failures()
    many = replace(results, tests=results.tests + _failing(20).tests)
    lines = annotation_lines(render_annotations({"fast": many}, RenderContext(base=base)))
    errors = [ln for ln in lines if ln.startswith("::error ")]
    assert len(errors) == 10 and lines[-1].startswith("::notice ")
    assert "13 more failures not annotated" in lines[-1]
    assert "title=new failure%3A tests/test_train.py%3A%3Atest_loss_decreases" in errors[0]
    assert all("failing on base" not in e for e in errors)  # 22 new ones come first
    assert all("\n" not in ln and "\r" not in ln for ln in lines)


# ---------------------------------------------------------------------------------------------
# Terminal


def test_terminal_summary_is_plain_and_safe() -> None:
    secret = "ghp_" + "Z" * 36
    evil = TestResult(
        "tests/t.py::test_[bold]x[/bold]",
        Outcome.FAILED,
        message=f"boom {secret}\n::error::forged",
        loss_curve=(3.0, 2.0, 1.0),
    )
    not_run = TestResult("tests/t.py::test_gpu", Outcome.NOT_RUN, message="label mlcheck:gpu")
    buf = io.StringIO()
    console = Console(file=buf, width=60, soft_wrap=True, color_system=None)
    terminal_summary(RunResults(RunInfo(), (evil, not_run)), console=console)
    out = buf.getvalue()
    assert "test_[bold]x[/bold]" in out and secret not in out and "***" in out
    assert "label mlcheck:gpu" in out and "█▄▁" in out
    assert not any(line.lstrip().startswith("::") for line in out.splitlines())


def test_terminal_summary_gives_the_reasons_of_skips() -> None:
    missing = "missing requirement (--mlcheck-allow-missing): 'org/name' is not in the cache"
    tests = (
        TestResult("tests/t.py::test_a", Outcome.SKIPPED, message=missing),
        TestResult("tests/t.py::test_b", Outcome.SKIPPED, message=missing),
        TestResult("tests/t.py::test_c", Outcome.SKIPPED, message="needs CUDA"),
        TestResult("tests/t.py::test_d", Outcome.PASSED),
    )
    buf = io.StringIO()
    terminal_summary(RunResults(RunInfo(), tests), console=Console(file=buf, width=200))
    lines = [line.strip() for line in buf.getvalue().splitlines()]
    i = lines.index("Skipped (3)")
    assert lines[i + 1 : i + 3] == [f"2  {missing}", "1  needs CUDA"]


# ---------------------------------------------------------------------------------------------
# Property: any results, however large or hostile, give a safe report within budget

ENV_SECRET = "sup3r-s3cret-token-value"
SECRETS = [ENV_SECRET, "ghp_" + "Q" * 36, "hf_" + "w" * 34, "github_pat_" + "1" * 70]
FRAGMENTS = [
    "**",
    "_",
    "`",
    "```",
    "~~~",
    "<details>",
    "</details>",
    "<summary>",
    "</summary>",
    "<script>alert(1)</script>",
    "@user",
    "@org/team",
    "#12",
    "GH-3",
    "[x](javascript:alert(1))",
    "<!-- mlcheck:digest v1 fast AAAA -->",
    "<!-- mlcheck:section fast end -->",
    "|",
    "| --- |",
    "\n",
    "\r\n",
    "\\",
    "&amp;",
    "$x$",
    "    ",
    "- ",
    "# ",
    "::error::",
    *SECRETS,
]


def _hostile(rng: random.Random, size: int) -> str:
    parts = [rng.choice(FRAGMENTS) + "ab" for _ in range(max(1, size // 8))]
    return "".join(parts)[: max(size, 1)]


def _hostile_results(seed: int, n: int, fail_rate: float, message_size: int) -> RunResults:
    rng = random.Random(seed)
    big = _hostile(rng, message_size)  # one shared object: multi-MB without N copies
    outcomes = [Outcome.PASSED, Outcome.SKIPPED, Outcome.NOT_RUN, Outcome.FLAKY, Outcome.XFAILED]
    tests = []
    for i in range(n):
        name = f"tests/{_hostile(rng, 12)}.py::test_{i}[{_hostile(rng, 24)}]"
        if rng.random() < fail_rate:
            outcome = rng.choice([Outcome.FAILED, Outcome.ERROR])
        else:
            outcome = rng.choice(outcomes)
        message = big if rng.random() < 0.5 else _hostile(rng, 40)
        tests.append(
            TestResult(
                nodeid=name,
                outcome=outcome,
                file=name.split("::")[0],
                line=rng.randrange(1, 500),
                phase=Phase.SETUP if outcome is Outcome.ERROR else None,
                attempts=(Attempt(Outcome.FAILED, Phase.CALL, 0.1, message), Attempt(outcome)),
                duration=rng.random(),
                message=message,
                traceback=big if outcome.is_failure else "",
                loss_curve=tuple(rng.random() for _ in range(rng.randrange(0, 30))) or None,
            )
        )
    return RunResults(
        RunInfo(sha="c" * 40, device=replace(RunInfo().device, name="@gpu #1")), tuple(tests)
    )


def _check_markdown(md: str, budget: int) -> None:
    assert len(md) <= len(md.encode()) <= budget
    for secret in SECRETS:
        assert secret not in md
    assert "<!-- mlcheck:section" not in md
    html = to_html(md)
    # every table and <details> block we emitted is intact; none came from a test
    assert html.count("<table>") == len(re.findall(r"^\| --- \|", md, re.M))
    outside_code = re.sub(r"^( *)(`{3,})text\n.*?^\1\2$", "", md, flags=re.M | re.S)
    ours = len(re.findall(r"^ *<details>", outside_code, re.M))
    assert html.count("<details>") == ours == html.count("</details>")
    assert html.count("<summary>") == ours and "<script>" not in html
    text = linkable_text(html)
    assert not MENTION.search(text), MENTION.search(text)
    assert not REFERENCE.search(text), REFERENCE.search(text)
    for secret in SECRETS:
        assert secret not in html


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([0, 1, 5, 300, 5_000, 100_000]),
    fail_rate=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    message_size=st.sampled_from([0, 50, 5_000, 3_000_000]),
    base_seed=st.one_of(st.none(), st.integers(0, 100)),
)
def test_any_results_render_safely_within_budget(
    seed: int, n: int, fail_rate: float, message_size: int, base_seed: int | None
) -> None:
    results = _hostile_results(seed, n, fail_rate, message_size)
    base = {}
    if base_seed is not None:
        base_tests = tuple(
            replace(
                t, outcome=Outcome.FAILED if (hash(t.nodeid) + base_seed) % 3 else Outcome.PASSED
            )
            for t in results.tests
        )
        base = digest.parse(digest.encode(replace(results, tests=base_tests), section="fast"))
    ctx = RenderContext(
        repo="o/r",
        run_url="https://github.com/o/r/actions/runs/1",
        base=base,
        redactor=Redactor.from_env({"HF_TOKEN": ENV_SECRET}),
    )
    section = render_section(results, ctx, budget=COMMENT_BUDGET)
    _check_markdown(section, COMMENT_BUDGET)
    assert digest.parse(section)["fast"].counts == dict(results.counts())
    body = sticky.build_body({"fast": section})
    assert len(body) <= sticky.MAX_BODY and "fast" in digest.parse(body)
    if n <= 5_000:  # the summary renders the same code with larger limits
        _check_markdown(render_summary({"fast": results}, ctx), SUMMARY_LIMIT)
    lines = annotation_lines(render_annotations({"fast": results}, ctx))
    assert sum(ln.startswith("::error") for ln in lines) <= 10 and len(lines) <= 11
    for ln in lines:
        assert "\n" not in ln and not any(s in ln for s in SECRETS)


# ---------------------------------------------------------------------------------------------
# What a reviewer reads first: tiers in the heading, cache state, slowest tests, reasons once


def test_the_heading_counts_each_tier_when_several_ran() -> None:
    text = (GOLDEN / "merged_shards.comment.md").read_text(encoding="utf-8")
    html = to_html(text)
    assert "<h3>✅ 3 passed · 2 real · 1 gpu · mlcheck · <code>real,gpu</code></h3>" in html
    # one tier: no breakdown (it would only repeat the count)
    assert "<h3>❌ 1 failure · mlcheck · <code>fast</code></h3>" in html
    mixed = RunResults(
        RunInfo(tiers=("fast", "real")),
        tuple(TestResult(f"t::f{i}", Outcome.PASSED, tier="fast") for i in range(25))
        + tuple(TestResult(f"t::r{i}", Outcome.PASSED, tier="real") for i in range(6))
        + (TestResult("t::g", Outcome.NOT_RUN, tier="gpu", message="tier gpu not selected"),),
    )
    heading = render_section(mixed, RenderContext()).splitlines()[0]
    assert heading == "### ✅ 31 passed · 25 fast · 6 real · mlcheck · `fast,real`"


def _models_row(html: str, model: str) -> list[str]:
    row = html.split(f"<td>{model}</td>")[1].split("</tr>")[0]
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def test_the_models_table_says_whether_the_cache_had_each_model() -> None:
    from mlcheck.results.schema import ModelUse

    def uses(*hits: bool | None) -> RunResults:
        return RunResults(
            RunInfo(),
            tuple(
                TestResult(f"t::m{i}", Outcome.PASSED, models=(ModelUse("org/m", "a" * 40, h),))
                for i, h in enumerate(hits)
            ),
        )

    def cache_cell(*hits: bool | None) -> str:
        return _models_row(to_html(render_section(uses(*hits), RenderContext())), "org/m")[2]

    assert cache_cell(True, True) == "cached"
    assert cache_cell(False) == "<strong>not cached</strong>"
    assert cache_cell(True, False, False) == "1 hit, 2 misses"
    assert cache_cell(None) == "—"  # a local folder, or results from an older mlcheck


def test_the_slowest_tests_are_listed_collapsed_slowest_first() -> None:
    tests = (
        *(TestResult(f"t::test_{i}", Outcome.PASSED, duration=float(i)) for i in range(1, 9)),
        TestResult("t::skipped", Outcome.NOT_RUN, message="tier gpu not selected"),
    )
    html = to_html(render_section(RunResults(RunInfo(), tests), RenderContext()))
    block = html.split("<summary>Slowest tests (5 of 8)</summary>")[1].split("</details>")[0]
    names = re.findall(r"<td>(t::test_\d)</td>", block)
    assert names == ["t::test_8", "t::test_7", "t::test_6", "t::test_5", "t::test_4"]
    assert re.search(r"<td[^>]*>8.0 s</td>", block)
    assert "Slowest tests" not in render_section(RunResults(RunInfo(), tests[:1]), RenderContext())


def test_each_not_run_reason_is_said_once() -> None:
    text = (GOLDEN / "not_run.comment.md").read_text(encoding="utf-8")
    html = to_html(text)
    for reason in (cases.NOT_RUN_GPU, cases.NOT_RUN_REAL):
        assert text.count(reason.split(":")[0]) == 1, reason
    assert "<summary><b>3</b> · tier gpu not selected" in html
    assert "<li>tests/test_gpu.py::test_fp16[2]</li>" in html
    # more reasons than get name lists: the rest are table rows, still once each
    tests = tuple(
        TestResult(f"t::r{i}_{j}", Outcome.NOT_RUN, message=f"reason number {i}")
        for i in range(8)
        for j in range(i + 1)
    )
    text = render_section(RunResults(RunInfo(), tests), RenderContext())
    for i in range(8):
        assert text.count(f"reason number {i}") == 1
    assert text.count("<details><summary><b>") == 5
    assert "| other reason and how to run them | tests |" in text


# ---------------------------------------------------------------------------------------------
# What the comment says of a Hugging Face-style suite: real tracebacks, hub skips, subtests

DEEP_FAILURE = """
import torch
from transformers import BertConfig, BertModel

def call_model(model):
    return model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.zeros(2, 9))

def test_mask_shape():
    config = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=8, vocab_size=10)
    call_model(BertModel(config))
"""


def test_comment_keeps_the_frames_that_matter_and_groups_hub_skips(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "test_deep.py").write_text(DEEP_FAILURE)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
         f"--mlcheck-results={out}", "test_deep.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    from mlcheck.results.schema import Subtest, read

    failed = read(out).tests[0]
    assert failed.outcome is Outcome.FAILED and "site-packages/torch" in failed.traceback
    hub_skips = tuple(
        TestResult(
            f"tests/test_p.py::T::test_pipe_{i}",
            Outcome.SKIPPED,
            message=f"Could not find or load the model from hf-internal-testing/tiny-{i} with X.",
        )
        for i in range(4)
    )
    subtests = (Subtest({"i": "0"}, outcome=Outcome.SKIPPED, message="needs CUDA"),) * 3
    all_skipped = TestResult("tests/test_s.py::test_s", Outcome.SKIPPED, subtests=subtests)
    results = RunResults(RunInfo(sha="b" * 40), (failed, *hub_skips, all_skipped))
    text = render_section(results, RenderContext())
    html = to_html(text)
    # the test's frame and the one that raised, the library frames between them on one line
    assert "call_model(BertModel(config))" in html and "torch.zeros(2, 9)" in html
    assert re.search(r"… \d+ library frames \((torch|transformers)[^)]*\) …", html)
    assert "_wrapped_call_impl" not in html
    assert len(text) < len(failed.traceback) + 3_000
    # the four hub skips are one reason, under hub; subtests are counted on their own line
    assert "<b>4</b> · hub: the test skipped itself" in html
    assert "tiny-0" not in html
    assert "subtests: 3 skipped" in html
