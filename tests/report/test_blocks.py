"""Golden values in the report: the key the run used, what differs, the command to accept."""

import io

import cmarkgfm
from cmarkgfm.cmark import Options
from rich.console import Console

from mlcheck.report import RenderContext, render_section, terminal_summary
from mlcheck.results.schema import GoldenCheck, GoldenUse, Outcome, RunInfo, RunResults, TestResult


def results() -> RunResults:
    failing = GoldenCheck(
        file="tests/__golden__/test_m.json",
        test="test_logits",
        name="logits",
        key="cuda:sm90",
        status="missing",
        problem="no value for cuda:sm90 in tests/__golden__/test_m.json › test_logits › logits "
        "<b>@someone</b>",
        value={"float": 1.0},
    )
    return RunResults(
        RunInfo(tiers=("gpu",)),
        (
            TestResult(
                "tests/test_m.py::test_logits",
                Outcome.FAILED,
                tier="gpu",
                message="golden.check('logits') [cuda:sm90]: no value for cuda:sm90",
                golden=GoldenUse("cuda:sm90", 1, (failing,)),
            ),
            TestResult("tests/test_m.py::test_ok", Outcome.PASSED, golden=GoldenUse("cpu", 2)),
        ),
    )


def test_the_comment_names_the_key_the_difference_and_the_accept_command():
    text = render_section(results(), RenderContext(artifact_name="mlcheck-results-gpu"))
    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    assert "<strong>Golden key:</strong> cpu, cuda:sm90" in html
    assert "Golden values differ or are missing (1)" in html
    assert "<code>mlcheck golden accept mlcheck-results-gpu</code>" in html
    assert "no value for cuda:sm90" in html
    assert "<b>" not in html and "&lt;b&gt;" in html  # test text stays text
    assert "@someone" not in html.replace("@\u200bsomeone", "")  # mentions neutralised


def test_without_an_artifact_name_it_points_at_the_results_folder():
    text = render_section(results(), RenderContext(artifact_name=None))
    assert "`mlcheck golden accept RESULTS_DIR`" in text
    passing = RunResults(RunInfo(), (results().tests[1],))
    assert "Golden values differ" not in render_section(passing, RenderContext())


def test_the_terminal_summary_shows_the_key():
    out = io.StringIO()
    terminal_summary(results(), console=Console(file=out, width=200))
    assert "golden key cpu, cuda:sm90" in out.getvalue()


def test_published_results_keep_golden_values_and_refuse_bad_ones():
    import json

    import pytest

    from mlcheck.errors import ResultsError
    from mlcheck.publish import validate
    from mlcheck.results.schema import to_dict

    data = json.loads(json.dumps(to_dict(results())))
    loaded = validate(data)  # jsonschema is a runtime dependency: always the whole schema
    (failure,) = loaded.tests[0].golden.failures
    assert failure.value == {"float": 1.0} and failure.key == "cuda:sm90"
    data["tests"][0]["golden"]["failures"][0]["key"] = 5
    with pytest.raises(ResultsError, match="golden"):
        validate(data)


def test_a_model_from_the_cache_is_recorded_as_a_cache_hit_and_a_missing_one_as_a_miss(
    tmp_path,
):
    """What the Models table's cache column shows comes from the models fixture's record."""
    import pytest

    from mlcheck import records as _record
    from mlcheck.errors import ModelNotCached
    from mlcheck.models import ModelFactory
    from mlcheck.project.cache import LocalModel

    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')

    def locate(model_id: str, *, need: object = "config") -> LocalModel:
        if model_id == "org/missing":
            raise ModelNotCached(model_id, "abc123")
        return LocalModel(model_id=model_id, revision="c" * 40, path=folder)

    factory = ModelFactory(locate=locate)
    facts = _record.start()
    try:
        factory.config("org/cached")
        with pytest.raises(ModelNotCached):
            factory.config("org/missing")
    finally:
        _record.stop()
    assert facts["models"] == [
        {"id": "org/cached", "revision": "c" * 40, "cache_hit": True},
        {"id": "org/missing", "revision": "abc123", "cache_hit": False},
    ]
