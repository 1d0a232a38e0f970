"""Every sentence the PR comment, the job summary and the tracking issue say that is not a
test's own text.

The sections' words (the status heading, the headings and notes of each block, the
annotations), and the words of the scheduler (GPU run scheduled or refused), the publisher
(results refused, the PR moved on, the nightly intro) and the tracking issue (its title and
what it is). Change how mlcheck talks here: the renderers (:mod:`.markdown`, :mod:`.blocks`,
:mod:`.summary`, :mod:`.common`, :mod:`.annotations`) lay these out in tables and lists, and the
modules that write to GitHub only call these functions
(tests/scenarios/test_report_package.py checks that no sentence is written anywhere else).
Functions here take numbers and already-escaped text, and return words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..redact import inline, one_line
from ..results.digest import Category, Classified
from ..results.schema import Outcome, RunStatus
from ..text import SHA_RE, duration_text, plural, short_sha

HEADINGS = {
    Category.NEW: "🆕 New failures",
    Category.UNCOMPARED: "❌ Failures",
    Category.ON_BASE: "🔁 Already failing on base",
    Category.FLAKY: "🎲 Flaky (passed on rerun)",
    Category.INFRA: "🏗️ Infrastructure",
}
# The failures heading when a base digest was given but did not know these tests.
UNCOMPARED_NOT_IN_BASE = "❓ Failures not in the base digest (not compared)"


# One line per kind: what went wrong, and what to do about it.
INFRA_CAUSES: dict[str, tuple[str, str]] = {
    "hub": (
        "model files were not in the local cache, or the hub refused or failed a request",
        "run `mlcheck cache warm` before the tests (the cache of what mlcheck.lock names); "
        "a 429/5xx passes on retry",
    ),
    "oom": (
        "out of memory (accelerator, or a worker killed by the OOM killer)",
        "declare what the test needs with `@pytest.mark.gpu(min_memory_gb=...)` or use a bigger "
        "runner",
    ),
    "device": (
        "accelerator runtime, driver or NCCL error (not out of memory), or no accelerator",
        "check the runner's GPU and driver (`nvidia-smi`), then rerun on a healthy runner",
    ),
    "crash": (
        "the test's worker process died (segfault, abort or killed)",
        "rerun the test alone (`pytest -p no:xdist NODEID`) to see how it dies",
    ),
    "timeout": (
        "the test ran past its time limit",
        "raise the limit (`@pytest.mark.timeout(...)`) or find what got slow",
    ),
}


# ---------------------------------------------------------------------------------------------
# A section of the comment (and of the job summary): heading, counts, facts, notes


def section_status(
    c: Classified,
    ran: int,
    passed: int,
    *,
    state: str | None = None,
    crashed: bool = False,
    empty: str | None = None,
) -> str:
    """The status that heads a section: ``❌ 2 new failures, 1 failing on base too``.

    ``ran`` counts the tests that ran (not "not run"); ``state`` is :func:`run_state_text`
    for a run that did not finish; ``empty`` is :func:`empty_selection_text` for a run whose
    selection held no test.

    >>> from mlcheck.results.digest import Classified
    >>> section_status(Classified(), ran=3, passed=3)
    '✅ 3 passed'
    """
    failures = len(c.new) + len(c.on_base) + len(c.uncompared) + len(c.infra)
    if state is not None:
        return ("❌ " if failures or crashed else "⏹️ ") + state
    if failures:
        parts = []
        if c.new:
            parts.append(plural(len(c.new), "new failure"))
        if c.uncompared:
            parts.append(plural(len(c.uncompared), "failure"))
        if c.on_base:
            parts.append(f"{len(c.on_base):,} failing on base too")
        if c.infra:
            parts.append(plural(len(c.infra), "infrastructure failure"))
        return "❌ " + ", ".join(parts)
    if c.flaky:
        return f"⚠️ passed, {plural(len(c.flaky), 'flaky test')}"
    if not ran:
        return "⏭️ " + (empty or "nothing ran")
    return f"✅ {passed:,} passed"


def test_headline(longrepr: str, *, skipped: bool) -> str:
    """The one line that heads a test in every report: a skip's reason (without pytest's
    ``Skipped:`` and mlcheck's ``not run:`` prefixes), or a failure's ``E`` line (the last
    line when there is none). The plugin stores it as the test's ``message``.

    >>> test_headline("not run: tier real not selected", skipped=True)
    'tier real not selected'
    >>> text = ">       assert x == 2\\nE       assert 1 == 2\\nt.py:2: AssertionError"
    >>> test_headline(text, skipped=False)
    'assert 1 == 2'
    """
    if skipped:
        return longrepr.removeprefix("Skipped: ").removeprefix("not run: ")
    lines = [line.strip() for line in longrepr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[0][2:].strip() if errors else lines[-1] if lines else "")[:500]


def section_heading(status: str, by_tier: str, title: str, key: str) -> str:
    """``### ✅ 3 passed · 2 fast · 1 real · mlcheck · `fast``` (``title`` already escaped)."""
    status += f" · {by_tier}" if by_tier else ""
    return f"### {status} · {title} · `{key}`"


def empty_selection_text(tiers: str, collected: int, by_tier: str) -> str:
    """What a run whose selected tiers held no test says instead of a green heading."""
    return f"no tests in tiers {tiers} ({collected:,} collected{': ' + by_tier if by_tier else ''})"


def run_state_text(
    status: RunStatus, signal: str | None, ran: int, collected: int | None, tally: str, where: str
) -> str:
    """How a run that did not finish ended: ``cancelled after 41 of 120 tests; 41 passed``."""
    of = f" of {collected:,}" if collected else ""
    text = f"after {ran:,}{of} tests; {tally or 'none finished'}"
    if status is RunStatus.INTERRUPTED:
        by = f" ({signal})" if signal else ""
        return f"cancelled{by} {text}"
    return f"crashed{f' in {where}' if where else ''} {text}"


# The columns of a section's counts table (and the terminal's), with the outcomes each counts.
COLUMNS: list[tuple[str, tuple[Outcome, ...]]] = [
    ("passed", (Outcome.PASSED,)),
    ("failed", (Outcome.FAILED,)),
    ("errors", (Outcome.ERROR,)),
    ("flaky", (Outcome.FLAKY,)),
    ("skipped", (Outcome.SKIPPED,)),
    ("not run", (Outcome.NOT_RUN,)),
    ("xfail", (Outcome.XFAILED, Outcome.XPASSED)),
]
THIS_RUN = "this run"  # the counts table's rows
VS_BASE = "change vs base"


def device_text(name: str, count: int, memory_gb: float | None) -> str:
    """``NVIDIA H100 ×2 (80 GB)``; ``name`` already escaped."""
    text = name + (f" ×{count}" if count > 1 else "")
    return text + (f" ({memory_gb:.0f} GB)" if memory_gb else "")


def facts_line(
    device: str,
    duration: float,
    test_time: float,
    workers: int,
    shard: str | None,
    seed: int | None,
    golden_keys: str,
) -> str:
    """``**Device:** cpu · **Time:** 3 s · **Seed:** 1`` (strings already escaped)."""
    parts = [f"**Device:** {device}", f"**Time:** {duration_text(duration)}"]
    if test_time and abs(test_time - duration) > 1:
        parts[-1] += f" (tests {duration_text(test_time)})"
    if workers:
        parts.append(f"**Workers:** {workers}")
    if shard:
        parts.append(f"**Shard:** {shard} only")
    if seed is not None:
        parts.append(f"**Seed:** {seed}")
    if golden_keys:
        parts.append("**Golden key:** " + golden_keys)
    return " · ".join(parts)


def and_more(n: int, what: str = "") -> str:
    """``*… and 3 more*`` (an item of a list that was cut)."""
    return f"*… and {n:,} more{' ' + what if what else ''}*"


def error_in(phase: str) -> str:
    return f"*error in {phase}*"


def failed_in(phase: str) -> str:
    """The reason of a failure that gave no message."""
    return f"failed in {phase}"


def attempts(failed: int, total: int) -> str:
    return f"failed {failed} of {total} attempts"


def traceback_label(cut: bool) -> str:
    return "Traceback (last lines)" if cut else "Traceback"


def library_frames(n: int, packages: str) -> str:
    """The line that stands for library frames left out of a traceback."""
    return f"    … {plural(n, 'library frame')} ({packages}) …"


NO_REASON = "(no reason given)"
NOT_RUN_HEADING = ("⏭️ Not run", "reason and how to run them")  # heading, reasons column
SKIPPED_HEADING = ("Skipped", "reason")


def other_reasons(column: str) -> str:
    return f"other {column}"


def other_reasons_row(n: int) -> str:
    return f"*{n:,} other reasons*"


def cache_state(hits: int, known: int) -> str:
    """The Models table's cache cell: ``cached``, ``not cached``, or hits and misses; "—" when
    no test knew (a local folder, or results from an older mlcheck)."""
    if not known:
        return "—"
    if hits == known:
        return "cached"
    if hits == 0:
        return "**not cached**"
    return f"{plural(hits, 'hit')}, {plural(known - hits, 'miss', 'misses')}"


def slowest_tests(shown: int, ran: int) -> str:
    return f"Slowest tests ({shown} of {ran:,})"


def loss_curves(n: int) -> str:
    return f"Loss curves ({n:,})"


SLOWER_THAN_BASE = "🐢 Slower than base"
SLOWER_ABOUT = "Took more than twice as long and over 1 s more than on base."


def stopped_unknown(n: int) -> str:
    """When the base digest had no room to say which of the tests not run here ran there."""
    return (
        f"*Stopped running: {plural(n, 'test')} skipped or not run here could not be compared: "
        "the base digest had no room for the tests that ran on base.*"
    )


STOPPED_LABELS = {Outcome.SKIPPED: "skipped", Outcome.NOT_RUN: "not run"}


def stopped_summary(total: int, parts: Sequence[str], other: int, gone: int | None) -> str:
    """``<b>⏸️ Stopped running (3)</b>: 2 skipped — reason · 1 no longer collected``."""
    parts = list(parts)
    if other:
        parts.append(f"{other:,} for other reasons")
    if gone:
        parts.append(f"{gone:,} no longer collected")
    return f"<b>⏸️ Stopped running ({total:,})</b>: " + " · ".join(parts)


def stopped_gone(gone: int) -> str:
    return (
        f"- **no longer collected** ({gone:,}): ran on base, not in this run "
        "(deleted, renamed or deselected); the base digest keeps hashes, not names"
    )


def stopped_sampled(unknown: int) -> str:
    return (
        f"- *the base digest kept a sample of the tests that ran there: counts are a lower "
        f"bound ({unknown:,} skipped here could not be compared)*"
    )


def golden_heading(n: int) -> str:
    return f"#### Golden values differ or are missing ({n:,})"


def golden_accept(artifact: str | None) -> str:
    """The one command that accepts new golden values (``artifact``: a safe name, or None)."""
    source = f"the `{artifact}` artifact into `{artifact}/`" if artifact else "the results folder"
    command = f"mlcheck golden accept {artifact or 'RESULTS_DIR'}"
    return f"If the change is intended, download {source} and run `{command}`, then commit."


INFRA_ABOUT = (
    "Failed for a reason outside the code under test; they still fail the run, and are "
    "not compared with the base."
)


def infra_cause(kind: str, cause: str, fix: str) -> str:
    return f"- **{kind}**: {cause}. *Fix:* {fix}."


def not_listed(n: int) -> str:
    return f"{n:,} failing or flaky tests not listed"


TRACEBACKS_SHORTENED = "tracebacks shortened"
TRACEBACKS_LEFT_OUT = "tracebacks left out"
NAMES_LEFT_OUT = "test names and tracebacks left out"


def where_else(run_url: str | None, artifact_name: str | None, summary: bool) -> str:
    """Where the whole report is, for a section that was shortened (``artifact_name``
    already escaped)."""
    places = []
    if not summary:
        places.append(f"[the job summary]({run_url})" if run_url else "the job summary")
    if artifact_name:
        places.append(f"the {artifact_name} artifact (results.json)")
    else:
        places.append("the results artifact (results.json)")
    return " and ".join(places)


def shortened(notes: Sequence[str], where: str) -> str:
    """The note a section that did not fit gets: what it left out and where the rest is."""
    return (
        f"> [!NOTE]\n> Shortened to fit GitHub's limit: {', '.join(notes)}. "
        f"Everything is in {where}."
    )


NO_RESULTS = "*mlcheck: no results*"


def section_truncated(over: int) -> str:
    """The note a section cut to fit the whole comment ends with (the last guard)."""
    return (
        f"*(section truncated: {over} characters over GitHub's comment limit; see the job summary)*"
    )


# ---------------------------------------------------------------------------------------------
# The workflow's annotations

ANNOTATION_TITLES = {
    Category.NEW: "new failure",
    Category.UNCOMPARED: "failure",
    Category.ON_BASE: "failing on base too",
    Category.INFRA: "infrastructure",
}


def annotation_title(category: Category, kind: str) -> str:
    """``new failure``; ``infrastructure (oom)`` (``kind``: the failure kind, one line)."""
    if category is Category.INFRA:
        return f"{ANNOTATION_TITLES[category]} ({kind})"
    return ANNOTATION_TITLES[category]


def annotations_left_out(failures: int, flaky: int) -> str:
    """The one notice for the failures and flaky tests not annotated one by one."""
    parts = []
    if failures:
        parts.append(f"{plural(failures, 'more failure')} not annotated")
    if flaky:
        parts.append(f"{plural(flaky, 'flaky test')} (passed on rerun)")
    return "; ".join(parts) + ": see the job summary"


# ---------------------------------------------------------------------------------------------
# Names and commits
# A model added with `mlcheck cache add` that a machine lacks (errors.LocalModelMissing says
# "(commit ..., added with `mlcheck cache add`) is not in the cache"): no hub has it, so the
# hub kind's fix, `mlcheck cache warm`, cannot help; the test's own message names the command.
LOCAL_MODEL_MISS = re.compile(r"added with `mlcheck cache add`\) is not in the cache")
HUB_LOCAL_FIX = (
    "for a model added with `mlcheck cache add` (no hub has it), run the "
    "`mlcheck cache add FOLDER --model ID --revision REV` its test names, or give the runner "
    'the cache it was added to (README: "Offline: give the container a cache")'
)


def infra_fix(kind: str, messages: Sequence[str]) -> str:
    """The fix the infrastructure section gives for ``kind``, from its failures' messages: a
    ``cache add`` model's miss never gets "run `mlcheck cache warm`".

    >>> infra_fix("hub", ["'org/m'@main (commit abc, added with `mlcheck cache add`) is not "
    ...     "in the cache: config.json: missing"]).startswith("for a model added with")
    True
    >>> infra_fix("hub", ["'gpt2'@main is not in the cache; run `mlcheck cache warm`"])[:22]
    'run `mlcheck cache war'
    """
    fix = INFRA_CAUSES.get(kind, ("", ""))[1]
    if kind != "hub":
        return fix
    local = [bool(LOCAL_MODEL_MISS.search(m)) for m in messages]
    if local and all(local):
        return HUB_LOCAL_FIX
    return f"{fix}; {HUB_LOCAL_FIX}" if any(local) else fix


def code(text: str, limit: int = 80) -> str:
    """A short code span for a configured name (a label, a workflow file): no backticks inside.

    >>> code("mlcheck:`gpu`")
    "`mlcheck:'gpu'`"
    """
    return "`" + one_line(text, limit).replace("`", "'") + "`"


# ---------------------------------------------------------------------------------------------
# The GPU label (mlcheck schedule): the PR comment's section for the GPU tier


def gpu_run_scheduled(
    key: str, sha: str, sender: str, workflow: str, runs: str, safety: str
) -> str:
    """The section a dispatched GPU run holds until its results replace it.

    ``runs`` is the URL of the workflow's dispatched runs; ``safety`` is :func:`safety_note`.
    """
    return (
        f"### ⏳ GPU run scheduled · `{key}`\n\n"
        f"GPU run scheduled for `{sha[:7]}` by @{sender}: "
        f"[{inline(workflow, 80)} runs]({runs}). "
        "Its results replace this section.\n\n"
        f"<sub>{safety}</sub>"
    )


def gpu_run_refused(key: str, refusal: str, label: str) -> str:
    """The section a refused GPU label leaves: why, and how to try again."""
    return (
        f"### ⛔ GPU run not scheduled · `{key}`\n\n{refusal}. The label was removed; "
        f"a maintainer can add {code(label)} again to run the GPU tests "
        "on this PR."
    )


def refused_no_user() -> str:
    return "the event names no valid user who added the label"


def refused_not_a_writer(sender: str, label: str, role: str) -> str:
    return (
        f"`{sender}` added {code(label)}, but starting GPU runs needs "
        f"write, maintain or admin permission on this repository (they have "
        f"`{inline(role, 20)}`)"
    )


def refused_pr_state(state: str) -> str:
    return f"the PR is {inline(state, 20)}"


def refused_pr_moved(head: str, labeled: str) -> str:
    return (
        f"the PR moved to `{short_sha(head)}` after the label was added to "
        f"`{short_sha(labeled)}`; label it again to test the new head"
    )


def safety_note(
    source: str | None, allow_pickle: Sequence[str], trust_remote_code: Sequence[str]
) -> str:
    """Where a GPU run's safety options come from (the base branch), and what they allow."""

    def names(ids: Sequence[str]) -> str:
        return ", ".join(inline(i, 100) for i in ids) if ids else "none"

    where = f"`{inline(source, 100)}`" if source else "no manifest"
    return (
        f"Safety options come from the base branch ({where}), never from the PR: "
        f"allow\\_pickle: {names(allow_pickle)} · "
        f"trust\\_remote\\_code: {names(trust_remote_code)}."
    )


# ---------------------------------------------------------------------------------------------
# The publisher: notes on a PR's section


def results_refused(key: str, reason: str, run_url: str | None) -> str:
    """The section that says a run's results were refused (``reason`` already redacted)."""
    text = (
        f"### ⚠️ Results not published · `{key}`\n\n"
        f"mlcheck refused this run's results: {inline(reason, 600)}"
    )
    if run_url:
        text += f"\n\nSee [the workflow run]({run_url})."
    return text


def head_moved(pinned: str, head: str, label: str) -> str:
    """The warning a section gets when the PR moved past the commit its run tested."""
    return (
        f"> [!WARNING]\n> These results are for `{pinned[:7]}`, the commit this run was "
        f"scheduled for: the PR head has since moved to `{head[:7]}`. Add the "
        f"{code(label)} label again to test the new head."
    )


# ---------------------------------------------------------------------------------------------
# The tracking issue (nightly runs)

# The one reason under which tests that skipped themselves for want of the hub are grouped.
HUB_SKIP_REASON = (
    "hub: the test skipped itself because it could not load a model (tests run offline): "
    "declare the ids it loads with `mlcheck add --from-tests`, then `mlcheck cache warm`"
)


def skip_reason(message: str, is_hub: bool) -> str:
    """The reason a skipped test is grouped under: its own, or the hub's for a hub skip.

    >>> skip_reason("requires CUDA", False)
    'requires CUDA'
    """
    return HUB_SKIP_REASON if is_hub else message


TRACKING_TITLE = "mlcheck nightly"  # the tracking issue's title, before its status
TRACKING_ABOUT = (
    "*This issue is kept up to date by mlcheck: the nightly report above, and (hidden) the "
    "default branch's last results that PR reports compare with. It is closed while everything "
    "passes and reopened when a nightly run fails. Do not edit its body.*"
)


def tracking_title(title: str, failing: int, new_failures: int, compared: bool) -> str:
    """``mlcheck nightly: ❌ 3 failing, 1 new`` or ``mlcheck nightly: ✅ all passing``.

    >>> tracking_title("mlcheck nightly", 3, 1, compared=True)
    'mlcheck nightly: ❌ 3 failing, 1 new'
    """
    if failing:
        new = f", {new_failures:,} new" if compared else ""
        return f"{title}: ❌ {failing:,} failing{new}"
    return f"{title}: ✅ all passing"


def nightly_intro(
    sha: str | None, run_url: str | None, prev_sha: str | None, compared: bool, new_failures: int
) -> str:
    """The heading of the nightly report and what it was compared with."""
    at = f" of `{sha[:7]}`" if sha and SHA_RE.fullmatch(sha) else ""
    run = f" · [workflow run]({run_url})" if run_url else ""
    if not compared:
        since = "First nightly report: nothing to compare with yet."
    else:
        prev = f" (`{prev_sha[:7]}`)" if prev_sha and SHA_RE.fullmatch(prev_sha) else ""
        since = (
            f"**{new_failures:,} new since the last nightly run{prev}**; "
            "*Already failing on base* below means already failing in the last nightly run."
        )
    return f"## Nightly run{at}{run}\n\n{since}"
