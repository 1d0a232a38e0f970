"""``junit.xml``: the JUnit XML file of a run, saying what ``results.json`` says.

pytest writes ``junit.xml`` itself (xunit2). Two things are mlcheck's:

- a run killed before pytest's session ended gets a file built from the journal
  (:func:`write_junit`), so CI tools that read JUnit still see what ran;
- pytest's JUnit XML adds a ``<skipped>`` to a testcase for each skipped subtest and counts each
  one in the suite's ``tests`` and ``skipped``: a test whose subtests only partly skipped, which
  passed (or failed) in ``results.json``, reads as skipped to JUnit readers, and the counts do
  not count tests. :func:`reconcile` removes those ``<skipped>`` (a skipped test keeps one),
  notes the skipped subtests in the testcase's ``<system-out>``, and counts each test once: one
  test, one outcome, in both files. A test whose subtests all skipped is ``skipped`` in both
  (:mod:`mlcheck.results.builder`).

Nothing here imports pytest; the testcase names follow pytest's ``mangle_test_address``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from .schema import Outcome, RunResults, RunStatus, TestResult

__all__ = ["junit_names", "reconcile", "write_junit"]

_SKIPPED_LIKE = (Outcome.SKIPPED, Outcome.NOT_RUN, Outcome.XFAILED)


def junit_names(nodeid: str) -> tuple[str, str]:
    """``(classname, name)`` of a test's testcase, as pytest's JUnit XML names it.

    >>> junit_names("tests/test_a.py::TestX::test_b[x/y::z.py]")
    ('tests.test_a.TestX', 'test_b[x/y::z.py]')
    >>> junit_names("test_c.py::test_d")
    ('test_c', 'test_d')
    """
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def _skipped_subtests(test: TestResult) -> int:
    """How many of the test's subtests skipped, those past the recorded ones included."""
    recorded = sum(s.outcome is Outcome.SKIPPED for s in test.subtests)
    return recorded + test.subtests_omitted.get(Outcome.SKIPPED.value, 0)


def _skipped_subtests_note(test: TestResult) -> str:
    skipped = [s for s in test.subtests if s.outcome is Outcome.SKIPPED]
    total = len(test.subtests) + sum(test.subtests_omitted.values())
    lines = [
        f"mlcheck: {_skipped_subtests(test)} of {total} subtests skipped; the test "
        f"{test.outcome.value.replace('_', ' ')} (results.json):"
    ]
    lines += [f"  {s.describe()}: {s.message}" for s in skipped]
    return "\n".join(lines)


def reconcile(results: RunResults, path: Path) -> int:
    """Make pytest's ``junit.xml`` at ``path`` agree with ``results`` for tests with skipped
    subtests (see the module docstring): a test that did not skip loses the ``<skipped>`` its
    subtests added, a skipped one keeps one, each gets a note naming its skipped subtests, and
    the suite's counts become one per test. Returns the number of testcases changed; the file
    is rewritten only when one was."""
    with_skips = {junit_names(t.nodeid): t for t in results.tests if _skipped_subtests(t)}
    if not with_skips or not path.is_file():
        return 0
    try:
        tree = ET.parse(path)
    except ET.ParseError:
        return 0  # not pytest's XML (the tests wrote it): left as it is; results.json rules
    changed = 0
    for suite in tree.getroot().iter("testsuite"):
        cases = suite.findall("testcase")
        touched = 0
        for case in cases:
            test = with_skips.get((case.get("classname", ""), case.get("name", "")))
            skips = [e for e in case if e.tag == "skipped"] if test is not None else []
            keep = 1 if test is not None and test.outcome in _SKIPPED_LIKE else 0
            if test is None or len(skips) <= keep:
                continue
            for element in skips[keep:]:
                case.remove(element)
            out = case.find("system-out")
            if out is None:
                out = ET.SubElement(case, "system-out")
            note = _skipped_subtests_note(test)
            out.text = f"{out.text}\n{note}" if out.text else note
            touched += 1
        if touched:  # pytest counted each subtest report: count each testcase once
            kinds = [{e.tag for e in case} for case in cases]
            suite.set("tests", str(len(cases)))
            suite.set("failures", str(sum("failure" in k for k in kinds)))
            suite.set("errors", str(sum("error" in k for k in kinds)))
            suite.set(
                "skipped", str(sum("skipped" in k and not k & {"failure", "error"} for k in kinds))
            )
            changed += touched
    if changed:
        tree.write(path, encoding="utf-8", xml_declaration=True)
    return changed


def write_junit(results: RunResults, path: Path) -> Path:
    """A JUnit XML file (xunit2, as pytest writes it) for a run pytest could not finish.

    pytest writes ``junit.xml`` itself at the end of its session; a run killed before then
    gets this one, built from the journal, so CI tools that read JUnit still see what ran.
    """
    counts = results.counts()
    failures = counts[Outcome.FAILED.value]
    errors = counts[Outcome.ERROR.value]
    skipped = sum(counts[o.value] for o in _SKIPPED_LIKE)
    suite = ET.Element(
        "testsuite",
        name="mlcheck",
        tests=str(len(results.tests)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{results.run.duration:.3f}",
    )
    for t in results.tests:
        classname, name = junit_names(t.nodeid)
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=name, time=f"{t.duration:.3f}"
        )
        if t.outcome is Outcome.FAILED:
            ET.SubElement(case, "failure", message=t.message[:500]).text = t.traceback
        elif t.outcome is Outcome.ERROR:
            ET.SubElement(case, "error", message=t.message[:500]).text = t.traceback
        elif t.outcome in _SKIPPED_LIKE:
            ET.SubElement(case, "skipped", message=t.message[:500])
        elif _skipped_subtests(t):
            ET.SubElement(case, "system-out").text = _skipped_subtests_note(t)
    if results.run.status is not RunStatus.COMPLETE:
        running = ", ".join(r.nodeid for r in results.run.running) or "none"
        ET.SubElement(suite, "system-err").text = (
            f"mlcheck: run {results.run.status.value} ({results.run.signal or '?'}); "
            f"running: {running}"
        )
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
