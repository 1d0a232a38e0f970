"""mlcheck/github/workflow.py: GitHub's workflow files and commands, written by one object."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mlcheck.github import workflow
from mlcheck.github.workflow import Workflow, read_output


def test_outputs_file_round_trip_with_multiline_values(tmp_path: Path) -> None:
    wf = Workflow(output=tmp_path / "out")
    wf.set_outputs({"passed": "3", "comment-url": "line one\nline two"})
    wf.set_outputs({"passed": "4"})
    assert read_output(wf.output, "passed") == "4"  # the last write wins, as in GitHub
    assert read_output(wf.output, "comment-url") == "line one\nline two"
    assert read_output(wf.output, "missing") == ""
    assert wf.read_outputs(("passed", "missing")) == {"passed": "4"}


def test_a_multiline_value_cannot_set_another_output(tmp_path: Path) -> None:
    # a value that tries to close the block and set `failed` itself stays one value
    wf = Workflow(output=tmp_path / "out")
    hostile = "x\nEOF\nfailed=0\nmlcheck_0\nfailed=0"
    wf.set_outputs({"failed": "2", "comment-url": hostile})
    assert read_output(wf.output, "failed") == "2"
    assert read_output(wf.output, "comment-url") == hostile


def test_outside_actions_nothing_is_written_or_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = Workflow.from_env({})
    assert wf == Workflow()
    wf.set_outputs({"passed": "1"})
    wf.append_summary("# report")
    wf.print_annotations([("error", "x", {})])
    assert capsys.readouterr().out == ""
    assert list(tmp_path.iterdir()) == []


def test_one_default_for_annotations_and_the_step_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    for command in ("report", "publish"):  # the same options, the same defaults
        parser = argparse.ArgumentParser(prog=command)
        workflow.add_options(parser)
        on = workflow.from_args(parser.parse_args([]), env)
        assert (on.annotations, on.summary) == (True, summary)
        off = workflow.from_args(parser.parse_args(["--no-annotations", "--no-step-summary"]), env)
        assert (off.annotations, off.summary) == (False, None)
        outside = workflow.from_args(parser.parse_args(["--step-summary"]), {})
        assert (outside.annotations, outside.summary) == (False, None)  # no file to write


def test_summary_is_appended_with_one_trailing_newline(tmp_path: Path) -> None:
    wf = Workflow(summary=tmp_path / "s.md")
    wf.append_summary("first\n\n")
    wf.append_summary("second")
    assert (tmp_path / "s.md").read_text() == "first\nsecond\n"


def test_commands_are_escaped_and_groups_closed(capsys: pytest.CaptureFixture[str]) -> None:
    wf = Workflow()
    with wf.group("install"):
        wf.command("error", "50% done\nthen", title="a: b, c")
    assert capsys.readouterr().out.splitlines() == [
        "::group::install",
        "::error title=a%3A b%2C c::50%25 done%0Athen",
        "::endgroup::",
    ]


def test_workflow_command_escaping_keeps_a_message_on_one_line() -> None:
    line = workflow.workflow_command(
        "error", "a%b\r\nc::d", file="x,y:z.py", line=1, title="t: 1, 2"
    )
    assert line == "::error file=x%2Cy%3Az.py,line=1,title=t%3A 1%2C 2::a%25b%0D%0Ac::d"


def test_annotations_print_as_escaped_lines_when_wanted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hostile = ("error", "boom\n::error::forged", {"file": "a.py", "line": 3, "title": None})
    Workflow(annotations=True).print_annotations([hostile, ("notice", "2 more", {})])
    assert capsys.readouterr().out.splitlines() == [
        "::error file=a.py,line=3::boom%0A::error::forged",
        "::notice::2 more",
    ]
