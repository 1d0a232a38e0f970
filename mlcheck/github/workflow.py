"""GitHub's workflow files and commands, in one object: what a step hands back to the workflow.

- step outputs (``$GITHUB_OUTPUT``): ``name=value`` lines, or ``name<<DELIMITER`` blocks for
  multi-line values, with a random delimiter so that no value can end the block early and
  set another output;
- the job summary (``$GITHUB_STEP_SUMMARY``): Markdown appended to a file;
- workflow commands on stdout: ``::error``/``::warning``/``::notice`` (escaped by
  ``workflow_command``) and ``::group::``/``::endgroup::``. (``::add-mask::`` is not used: the
  runner masks the secrets it passes, and mlcheck redacts every value it prints.)

Build a :class:`Workflow` once at the edge (``Workflow.from_env()``, or
:func:`from_args` in a subcommand) and pass it in. Defaults, the same for every subcommand
(:func:`add_options` defines the two options once): annotations are printed and the job
summary is written when running inside GitHub Actions (``$GITHUB_ACTIONS`` is ``true`` /
``$GITHUB_STEP_SUMMARY`` is set); ``--no-annotations`` and ``--no-step-summary`` turn them off.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "output"
>>> wf = Workflow(output=out)
>>> wf.set_outputs({"passed": "3", "comment-url": "a\\nb"})
>>> wf.read_outputs(("passed", "comment-url", "missing"))
{'passed': '3', 'comment-url': 'a\\nb'}
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .. import constants

__all__ = [
    "Workflow",
    "add_options",
    "annotation_lines",
    "from_args",
    "parse_outputs",
    "read_output",
    "workflow_command",
]

# An annotation as the report renders it (:class:`mlcheck.report.annotations.Annotation`):
# command, message, properties. A plain tuple type, so that this module imports no report.
AnnotationLike = tuple[str, str, Mapping[str, str | int | None]]


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: str | int | None) -> str:
    """``::command key=value,...::message`` with GitHub's escaping (one line, whatever the
    message holds, so no test output can start a command of its own).

    >>> workflow_command("error", "50% off\\nnow", file="a,b.py", line=3)
    '::error file=a%2Cb.py,line=3::50%25 off%0Anow'
    """
    props = ",".join(
        f"{k}={_escape_property(str(v))}" for k, v in properties.items() if v not in (None, "")
    )
    return f"::{command}{' ' + props if props else ''}::{_escape_data(message)}"


def annotation_lines(annotations: Iterable[AnnotationLike]) -> list[str]:
    """Each rendered annotation as its workflow-command line."""
    return [workflow_command(command, message, **props) for command, message, props in annotations]


@dataclass(frozen=True)
class Workflow:
    """Where this step's outputs and summary go, and whether workflow commands are printed.

    Outside Actions every field is off and nothing is written.
    """

    output: Path | None = None  # $GITHUB_OUTPUT
    summary: Path | None = None  # $GITHUB_STEP_SUMMARY, when the job summary is wanted
    annotations: bool = False  # print ::error/::warning annotations
    in_actions: bool = False  # $GITHUB_ACTIONS is true: workflow commands are understood

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        annotations: bool | None = None,
        step_summary: bool | None = None,
    ) -> Workflow:
        """From the runner's variables; ``None`` options take the defaults (see the module)."""
        in_actions = constants.in_github_actions(environ)
        summary = constants.github_step_summary(environ)
        return cls(
            output=constants.github_output(environ),
            summary=summary if step_summary is not False else None,
            annotations=in_actions if annotations is None else annotations,
            in_actions=in_actions,
        )

    # -- files ---------------------------------------------------------------------------------

    def set_outputs(self, values: Mapping[str, str]) -> None:
        """Append ``values`` to ``$GITHUB_OUTPUT`` (the last value of a name wins, as in GitHub)."""
        if self.output is None or not values:
            return
        with self.output.open("a", encoding="utf-8") as fh:
            fh.write("".join(_output_line(name, value) for name, value in values.items()))

    def read_outputs(self, names: Iterable[str]) -> dict[str, str]:
        """The outputs among ``names`` this file holds (absent ones left out)."""
        if self.output is None or not self.output.exists():
            return {}
        found = parse_outputs(self.output.read_text(encoding="utf-8"))
        return {name: found[name] for name in names if found.get(name)}

    def append_summary(self, markdown: str) -> None:
        """Append ``markdown`` to the job summary (nothing when there is none)."""
        if self.summary is None:
            return
        with self.summary.open("a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip("\n") + "\n")

    # -- commands ------------------------------------------------------------------------------

    def print_annotations(
        self, annotations: Iterable[AnnotationLike], stream: TextIO | None = None
    ) -> None:
        """Print rendered annotations as workflow commands when they are wanted."""
        if not self.annotations:
            return
        out = stream or sys.stdout
        for line in annotation_lines(annotations):
            out.write(line + "\n")
        out.flush()

    # These print whether or not ``in_actions``: the caller decides (the action always runs
    # in Actions; the CLI checks ``in_actions`` first).

    def command(self, command: str, message: str, **properties: str | int | None) -> None:
        """Print one escaped workflow command (``error``, ``warning``, ``notice``)."""
        print(workflow_command(command, message, **properties), flush=True)

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A collapsible group of log lines."""
        print(f"::group::{title}", flush=True)
        try:
            yield
        finally:
            print("::endgroup::", flush=True)


def _output_line(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        delimiter = f"mlcheck_{uuid.uuid4().hex}"
        return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"
    return f"{name}={value}\n"


def parse_outputs(text: str) -> dict[str, str]:
    """Every output in a ``$GITHUB_OUTPUT`` file's text, read as the runner reads it: one
    entry after the other, a ``name<<DELIMITER`` block up to its delimiter line (so nothing
    inside a block is taken for another output); the last value of a name wins."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        head, eq, value = line.partition("=")
        name, heredoc, delimiter = line.partition("<<")
        if heredoc and (not eq or len(name) < len(head)):
            end = lines.index(delimiter, i + 1) if delimiter in lines[i + 1 :] else len(lines)
            values[name] = "\n".join(lines[i + 1 : end])
            i = end
        elif eq:
            values[head] = value
        i += 1
    return values


def read_output(path: str | Path | None, name: str) -> str:
    """The last value written for ``name`` into a ``$GITHUB_OUTPUT`` file ("" if none)."""
    if not path or not Path(path).exists():
        return ""
    return parse_outputs(Path(path).read_text(encoding="utf-8")).get(name, "")


# -- the two options every subcommand that reports shares -------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--annotations`` and ``--step-summary`` (both on inside GitHub Actions by default)."""
    group = parser.add_argument_group("GitHub Actions")
    group.add_argument(
        "--annotations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print ::error annotations (default: on when $GITHUB_ACTIONS is true)",
    )
    group.add_argument(
        "--step-summary",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append the job summary to $GITHUB_STEP_SUMMARY (default: on when it is set)",
    )


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Workflow:
    """The :class:`Workflow` of a subcommand registered with :func:`add_options`."""
    return Workflow.from_env(environ, annotations=args.annotations, step_summary=args.step_summary)
