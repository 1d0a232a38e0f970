"""A sample of results built the way the plugin builds them: pytest's phase reports fed to a
``ResultsBuilder``, and the JSON schema a results file follows; used by the builder's and the
schema's tests."""

import json
from importlib import resources

from mlcheck.results.builder import ResultsBuilder

SCHEMA = json.loads(resources.files("mlcheck").joinpath("schema/results.schema.json").read_text())


def feed(builder, nodeid, *phases, **kw):
    for when, outcome, *rest in phases:
        builder.report(
            nodeid=nodeid, when=when, outcome=outcome, message=rest[0] if rest else "", **kw
        )


def build_sample():
    b = ResultsBuilder()
    feed(
        b,
        "t.py::ok",
        ("setup", "passed"),
        ("call", "passed"),
        ("teardown", "passed"),
        facts={"tier": "fast", "seed": 0, "models": [{"id": "o/m", "revision": "abc"}]},
    )
    feed(
        b,
        "t.py::bad",
        ("setup", "passed"),
        ("call", "failed", "assert 1 == 2"),
        ("teardown", "passed"),
        file="t.py",
        line=7,
    )
    feed(b, "t.py::fixture", ("setup", "failed", "weights missing"), ("teardown", "passed"))
    feed(b, "t.py::td", ("setup", "passed"), ("call", "passed"), ("teardown", "failed", "leak"))
    feed(
        b,
        "t.py::flaky",
        ("setup", "passed"),
        ("call", "rerun", "first"),
        ("teardown", "passed"),
        ("setup", "passed"),
        ("call", "passed"),
        ("teardown", "passed"),
    )
    feed(
        b,
        "t.py::nr",
        ("setup", "skipped", "needs real weights"),
        ("teardown", "passed"),
        facts={"not_run": True, "tier": "real"},
    )
    feed(b, "t.py::skip", ("setup", "skipped", "no reason"), ("teardown", "passed"))
    b.report(nodeid="t.py::xf", when="setup", outcome="passed")
    b.report(nodeid="t.py::xf", when="call", outcome="skipped", xfail=True)
    b.report(nodeid="t.py::xf", when="teardown", outcome="passed")
    b.collection_error(nodeid="broken.py", message="SyntaxError")
    return {t.nodeid: t for t in b.build()}
