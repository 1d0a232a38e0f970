"""Merge results from shards, tiers and jobs into one report.

Every results file belongs to a *section* of the report, named by its tiers (``fast``,
``real,gpu``...). Shards of the same tiers merge into one section; different tiers stay
separate sections of the same report. A test that one job reports as *not run* (its tier was not
selected there) but another job ran is dropped from the first job's not-run list.

>>> from mlcheck.results.schema import RunResults, RunInfo, TestResult, Outcome
>>> a = RunResults(RunInfo(tiers=("fast",), shard="1/2"), (TestResult("t::a", Outcome.PASSED),))
>>> b = RunResults(RunInfo(tiers=("fast",), shard="2/2"), (TestResult("t::b", Outcome.FAILED),))
>>> m = merge_sections([a, b])
>>> list(m), len(m["fast"].tests), m["fast"].run.shard
(['fast'], 2, None)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from ..errors import ResultsError
from ..tiers import section_key as tiers_section_key
from ..tiers import tier_order
from .schema import DeviceInfo, Outcome, RunInfo, RunResults, RunStatus, TestResult

_STATUS_RANK = [RunStatus.COMPLETE, RunStatus.INTERRUPTED, RunStatus.CRASHED]

# Which report of the same test wins when two results files both have it (a re-run job, or a
# test listed as not run by one job and run by another): a real outcome beats "not run".
_RANK = {
    Outcome.NOT_RUN: 0,
    Outcome.SKIPPED: 1,
    Outcome.XFAILED: 2,
    Outcome.XPASSED: 2,
    Outcome.PASSED: 3,
    Outcome.FLAKY: 4,
    Outcome.FAILED: 5,
    Outcome.ERROR: 5,
}


def section_key(run: RunInfo) -> str:
    """The report section a run belongs to: its tiers in canonical order, e.g. ``real,gpu``
    (:func:`mlcheck.tiers.section_key`)."""
    return tiers_section_key(run.tiers)


def _merge_run(runs: Sequence[RunInfo]) -> RunInfo:
    shas = {r.sha for r in runs if r.sha}
    if len(shas) > 1:
        raise ResultsError(
            f"results come from different commits ({', '.join(sorted(shas))}); "
            "merge only the shards and jobs of one run"
        )
    tiers: list[str] = []
    for r in runs:
        tiers += [t for t in r.tiers if t not in tiers]
    seeds = {r.seed for r in runs}
    # An accelerator says more than "cpu": a section with a GPU job shows the GPU.
    devices = sorted((r.device for r in runs), key=lambda d: d.type == "cpu")
    shards = {r.shard for r in runs}
    versions: dict[str, str] = {}
    for r in runs:
        versions.update(r.versions)
    codes = [r.pytest_exit_code for r in runs if r.pytest_exit_code is not None]
    started = sorted(r.started_at for r in runs if r.started_at)
    return RunInfo(
        tiers=tuple(sorted(tiers, key=tier_order)),
        started_at=started[0] if started else "",
        # shards and jobs run side by side: the wall time is the slowest one's
        duration=max((r.duration for r in runs), default=0.0),
        shard=shards.pop() if len(shards) == 1 else None,
        workers=max((r.workers for r in runs), default=0),
        seed=seeds.pop() if len(seeds) == 1 else None,
        device=devices[0] if devices else DeviceInfo(),
        sha=shas.pop() if shas else None,
        ref=next((r.ref for r in runs if r.ref), None),
        versions=versions,
        pytest_exit_code=max(codes) if codes else None,
        # a section with one cancelled or crashed job is not complete (crashed says most)
        status=max((r.status for r in runs), key=_STATUS_RANK.index, default=RunStatus.COMPLETE),
        running=tuple(x for r in runs for x in r.running),
        collected=sum(r.collected for r in runs if r.collected) or None,
        signal=next((r.signal for r in runs if r.signal), None),
        verified=tuple(dict.fromkeys(m for r in runs for m in r.verified)),
        deselected=sum(r.deselected for r in runs),
        selection="; ".join(dict.fromkeys(r.selection for r in runs if r.selection)) or None,
    )


def _better(a: TestResult, b: TestResult) -> TestResult:
    return b if _RANK[b.outcome] > _RANK[a.outcome] else a


def _merge_tests(groups: Iterable[Iterable[TestResult]], key: str) -> tuple[TestResult, ...]:
    merged: dict[str, TestResult] = {}
    for tests in groups:
        for t in tests:
            if t.run != key:
                t = replace(t, run=key)
            seen = merged.get(t.nodeid)
            merged[t.nodeid] = t if seen is None else _better(seen, t)
    return tuple(merged.values())


def merge_sections(
    results: Iterable[RunResults], *, section: str | None = None
) -> dict[str, RunResults]:
    """Group results by section and merge each group (shards) into one ``RunResults``.

    Tests are tagged with their section (``TestResult.run``); a file that is itself a merge
    keeps its tests' tags. Sections come out in tier order. With ``section``, every test is in
    that one section, whatever its run's tiers or its own tag said (``mlcheck report
    --section``, and :func:`mlcheck.publish.options.force_section` once it refused other
    claims): the one section tagger.

    >>> from mlcheck.results.schema import RunResults, RunInfo, TestResult, Outcome
    >>> gpu = RunResults(RunInfo(tiers=("gpu",)), (TestResult("t::g", Outcome.PASSED, run="gpu"),))
    >>> list(merge_sections([gpu])), list(merge_sections([gpu], section="nightly"))
    (['gpu'], ['nightly'])
    """
    runs: dict[str, list[RunInfo]] = {}
    tests: dict[str, list[list[TestResult]]] = {}
    for r in results:
        default = section or section_key(r.run)
        by_key: dict[str, list[TestResult]] = {}
        for t in r.tests:
            by_key.setdefault(section or t.run or default, []).append(t)
        for key, ts in (by_key or {default: []}).items():
            runs.setdefault(key, []).append(r.run)
            tests.setdefault(key, []).append(ts)
    merged = {key: RunResults(_merge_run(runs[key]), _merge_tests(tests[key], key)) for key in runs}
    merged = _drop_covered_not_run(merged)
    return dict(sorted(merged.items(), key=lambda kv: _key_order(kv[0])))


def _key_order(key: str) -> tuple[tuple[int, str], ...]:
    return tuple(tier_order(t) for t in key.split(","))


def _drop_covered_not_run(sections: Mapping[str, RunResults]) -> dict[str, RunResults]:
    if len(sections) < 2:
        return dict(sections)
    ran = {t.nodeid for r in sections.values() for t in r.tests if t.outcome is not Outcome.NOT_RUN}
    out = {}
    for key, r in sections.items():
        kept = tuple(t for t in r.tests if t.outcome is not Outcome.NOT_RUN or t.nodeid not in ran)
        out[key] = r if len(kept) == len(r.tests) else replace(r, tests=kept)
    return out


def merge(results: Iterable[RunResults]) -> RunResults:
    """All results as one ``RunResults`` (what ``mlcheck report`` writes as results.json).

    Tests keep their section in ``TestResult.run``, so the merged file can be merged or
    rendered again with the same sections.
    """
    sections = merge_sections(results)
    if not sections:
        raise ResultsError("nothing to merge: no results given")
    run = _merge_run([r.run for r in sections.values()])
    if len(sections) > 1:
        run = replace(run, shard=None)
    tests = tuple(t for r in sections.values() for t in r.tests)
    return RunResults(run=run, tests=tests)
