"""Which GPU runner the scheduler sends a PR's GPU run to, sized from the models (``mlcheck
schedule``, with ``[tool.mlcheck] gpu_runners``).

The scheduler is trusted and never runs the PR's code, so it cannot collect the PR's tests. It
sizes from what the base branch knows (:mod:`mlcheck.project.sizing` does the arithmetic):

- the **last full run's results** (``--sizing-results``, e.g. the nightly's ``results.json``):
  each gpu-tier test's measured ``gpu_peak_bytes``, or else the models it used, built full size
  on the meta device from their configs;
- without them, the **base manifest's models** that need weights: any GPU test may load any of
  them, so the largest of their estimates is the need of the whole run.

Configs come from the hub cache, fetched (configs only, no weights) from the base branch's lock
when missing. Then each sized test goes to the smallest class that holds it
(:func:`mlcheck.project.sizing.plan_runners`). One class: one runner for the whole run. Several: one
share per class, each a job of the GPU workflow's matrix (one dispatch, so the shares' results
are merged into one comment section instead of overwriting each other): the smaller classes run
exactly their sized tests (``only``), the largest class used runs everything else (``skip``:
the tests sent elsewhere), so tests the plan does not know — new in the PR, or without an
estimate — still run, on the largest runner. A test that needs more than the largest class
stops the dispatch before any GPU minute is spent, and the comment says which and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..project.sizing import (
    Estimate,
    RunnerPlan,
    estimate_from_models,
    estimate_from_peak,
    plan_runners,
    read_gpu_runners,
)

# workflow_dispatch inputs are capped (65,535 characters for the whole payload): a plan whose
# shares list more node ids than this runs whole on the largest class it needs instead.
MAX_RUNNERS_INPUT = 48_000
GB = 1024**3


@dataclass(frozen=True)
class DispatchPlan:
    """What ``mlcheck schedule`` dispatches: the ``runners`` input (JSON, None: the workflow's
    default runner), the comment's lines (which runner and why) and the tests too big for
    every class (non-empty: nothing is dispatched)."""

    runners_input: str | None
    lines: tuple[str, ...]
    too_big: tuple[str, ...] = ()

    @property
    def dispatch(self) -> bool:
        return not self.too_big


def _gpu_tests(results: Any) -> list[Any]:
    return [t for t in results.tests if t.tier == "gpu"]


def _estimates(
    workspace: Path, results: Any | None, factory: Any
) -> tuple[list[Estimate], list[str], str]:
    """Estimates (per test, or per model), tests with none, and where they came from."""
    from ..project.manifest import load_manifest

    estimates: list[Estimate] = []
    unknown: list[str] = []
    if results is not None and _gpu_tests(results):
        for t in _gpu_tests(results):
            if t.gpu_peak_bytes is not None:
                estimates.append(estimate_from_peak(t.nodeid, t.gpu_peak_bytes, t.device))
                continue
            ids = sorted({m.id for m in t.models})
            est = _from_models(t.nodeid, ids, factory) if ids else None
            if est is None:
                unknown.append(t.nodeid)
            else:
                estimates.append(est)
        return estimates, unknown, "the last full run's gpu tests"
    manifest = load_manifest(workspace)
    for model_id in sorted(manifest.models):
        if manifest.models[model_id].needs != "weights":
            continue
        est = _from_models(f"any gpu test loading {model_id}", [model_id], factory)
        if est is not None:
            estimates.append(est)
        else:
            unknown.append(model_id)
    return estimates, unknown, "the base manifest's models (no earlier gpu results)"


def _from_models(nodeid: str, ids: Sequence[str], factory: Any) -> Estimate | None:
    from ..errors import MlcheckError

    try:
        return estimate_from_models(nodeid, ids, factory)
    except (MlcheckError, OSError, ValueError):
        return None  # its config is not in the cache: no estimate (said in the comment)


def _warm_configs(workspace: Path) -> str | None:
    """Fetch the base lock's configs (no weights) the cache lacks; a note when that failed."""
    from ..errors import MlcheckError
    from ..project.hub import warm
    from ..project.lock import read_lock

    try:
        if read_lock(workspace) is None:
            return None
        warm(workspace, only_missing=True, weights=False)
    except MlcheckError as exc:
        return f"the base lock's configs could not be fetched ({exc})"
    return None


def plan_dispatch(
    workspace: Path,
    results: Any | None = None,
    *,
    factory: Any = None,
    fetch_configs: bool = True,
) -> DispatchPlan | None:
    """The dispatch for the base branch in ``workspace``; None when it declares no
    ``gpu_runners`` (the GPU workflow's own runner is used, as before)."""
    from ..models import ModelFactory
    from ..project.manifest import load_manifest

    runners = read_gpu_runners(load_manifest(workspace).extra)
    if not runners:
        return None
    note = _warm_configs(workspace) if fetch_configs else None
    estimates, unknown, source = _estimates(workspace, results, factory or ModelFactory())
    return _plan(estimates, unknown, source, runners, note)


def _plan(
    estimates: list[Estimate],
    unknown: list[str],
    source: str,
    runners: Mapping[float, Sequence[str]],
    note: str | None,
) -> DispatchPlan:
    lines = [f"Sized from {source}."]
    if note:
        lines.append(f"Note: {note}.")
    if unknown:
        shown = ", ".join(f"`{u}`" for u in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        lines.append(
            f"No estimate for {len(unknown)} ({shown}): no measured peak and no config in the "
            "cache; they run on the largest runner class used."
        )
    plan = plan_runners(estimates, runners)
    if plan.too_big:
        too_big = tuple(e.nodeid for e in plan.too_big)
        return DispatchPlan(None, tuple(lines + plan.reasons()), too_big)
    if not plan.dispatches:
        lines.append("Nothing to size: the GPU workflow's default runner runs it.")
        return DispatchPlan(None, tuple(lines))
    by_tests = not source.startswith("the base manifest")
    shares = _shares(plan, by_tests)
    text = json.dumps(shares, separators=(",", ":"))
    if len(text) > MAX_RUNNERS_INPUT:
        top = max(plan.dispatches)
        shares = [{"class": f"{top:g}", "labels": list(plan.labels[top])}]
        text = json.dumps(shares, separators=(",", ":"))
        lines.append(f"Too many tests to split by class: all run on the {top:g} GB class.")
    if by_tests:
        lines += plan.reasons()
    else:  # one class for the whole run: the largest model's
        top = max(plan.dispatches)
        largest = max(plan.dispatches[top], key=lambda e: e.gb)
        lines.append(
            f"The whole run on `{', '.join(plan.labels[top])}` ({top:g} GB class): largest need "
            f"{largest.gb:.1f} GB, {largest.nodeid} ({largest.basis})"
        )
    return DispatchPlan(text, tuple(lines))


def _shares(plan: RunnerPlan, by_tests: bool) -> list[dict[str, Any]]:
    """One share per class used. Per model (no per-test results): every test may load the
    largest model, so the whole run goes to the largest class needed."""
    classes = sorted(plan.dispatches)
    top = classes[-1]
    if not by_tests or len(classes) == 1:
        return [{"class": f"{top:g}", "labels": list(plan.labels[top])}]
    sent = [e.nodeid for gb in classes[:-1] for e in plan.dispatches[gb]]
    shares: list[dict[str, Any]] = [
        {
            "class": f"{gb:g}",
            "labels": list(plan.labels[gb]),
            "only": [e.nodeid for e in plan.dispatches[gb]],
        }
        for gb in classes[:-1]
    ]
    shares.append({"class": f"{top:g}", "labels": list(plan.labels[top]), "skip": sent})
    return shares


def too_big_message(plan: DispatchPlan) -> str:
    """The refusal when a test needs more than every runner class (one line, for the log)."""
    names = ", ".join(plan.too_big[:5])
    return (
        f"{len(plan.too_big)} test(s) need more accelerator memory than the largest runner "
        f"class ({names}): no GPU run was dispatched"
    )


def runner_note(plan: DispatchPlan) -> str:
    """The comment's lines on the runner: which and why (escaped: node ids come from results)."""
    from ..redact import inline

    return "\n".join(f"- {inline(line, 600)}" for line in plan.lines)


def too_big_section(key: str, plan: DispatchPlan) -> str:
    """The comment section when nothing was dispatched because a test fits no runner class."""
    return (
        f"### ⛔ GPU run not scheduled · `{key}`\n\n"
        f"{len(plan.too_big)} test(s) need more accelerator memory than the "
        "largest runner class in `[tool.mlcheck] gpu_runners`, so no GPU run was dispatched "
        "(no GPU time spent). Add a larger class or make the tests smaller, then label again.\n\n"
        f"{runner_note(plan)}"
    )


__all__ = [
    "DispatchPlan",
    "plan_dispatch",
    "runner_note",
    "too_big_message",
    "too_big_section",
]
