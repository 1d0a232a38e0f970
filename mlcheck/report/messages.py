"""Every sentence the PR comment and the tracking issue say that is not a test's own text.

Headings and causes the sections use, and the words of the scheduler (GPU run scheduled or
refused), the publisher (results refused, the PR moved on, the nightly intro) and the tracking
issue (its title and what it is). Change how mlcheck talks here; the modules that write to
GitHub only call these functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..digest import Category
from ..safety import inline, one_line

_SHA = re.compile(r"[0-9a-fA-F]{7,64}")

HEADINGS = {
    Category.NEW: "🆕 New failures",
    Category.UNCOMPARED: "❌ Failures",
    Category.ON_BASE: "🔁 Already failing on base",
    Category.FLAKY: "🎲 Flaky (passed on rerun)",
    Category.INFRA: "🏗️ Infrastructure",
}


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


def short_sha(sha: str | None) -> str:
    """Seven hex digits of a SHA, or ``?`` for anything that is not one (payloads are input)."""
    return sha[:7] if sha and _SHA.fullmatch(sha) else "?"


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
    at = f" of `{sha[:7]}`" if sha and _SHA.fullmatch(sha) else ""
    run = f" · [workflow run]({run_url})" if run_url else ""
    if not compared:
        since = "First nightly report: nothing to compare with yet."
    else:
        prev = f" (`{prev_sha[:7]}`)" if prev_sha and _SHA.fullmatch(prev_sha) else ""
        since = (
            f"**{new_failures:,} new since the last nightly run{prev}**; "
            "*Already failing on base* below means already failing in the last nightly run."
        )
    return f"## Nightly run{at}{run}\n\n{since}"
