"""Every sentence `mlcheck mutate` and `mlcheck calibrate` say: ``mutation.json``, the terminal, the
Markdown section (PR comment, nightly issue, job summary). Pure functions of the results.

Node ids, messages and model ids come from the tests: in Markdown they are escaped
(``safety.inline``) or put in code spans without backticks (``messages.code``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..redact import inline
from ..report.messages import code
from ..results.schema import RunResults
from ..text import duration_text, plural
from .mutants import MUTANTS
from .runner import MutantResult, Status

MUTATION_FILE = "mutation.json"
MUTATION_MARKDOWN = "mutation.md"
MUTATION_SCHEMA_VERSION = 1
SHOWN_KILLERS = 3  # killing tests named per mutant; the rest are counted


@dataclass(frozen=True)
class MutationReport:
    mutants: tuple[MutantResult, ...]
    tests: int  # tests that passed in the unmutated run
    unmutated_duration: float  # wall time of the unmutated run (one plain `mlcheck run`)
    duration: float  # wall time of everything, unmutated run included
    models: Mapping[str, tuple[str, ...]]  # node id -> model ids it used (unmutated run)
    paths: tuple[str, ...] = ()
    tier: str | None = None
    all_killers: bool = False
    budget_minutes: float | None = None

    def count(self, status: Status) -> int:
        return sum(1 for m in self.mutants if m.status is status)

    @property
    def reached(self) -> int:
        return self.count(Status.KILLED) + self.count(Status.SURVIVED)

    @property
    def score(self) -> float | None:
        """Killed / reached; None when no mutant was reached."""
        return self.count(Status.KILLED) / self.reached if self.reached else None

    @property
    def cost(self) -> float | None:
        """Wall time as a multiple of one plain run."""
        return self.duration / self.unmutated_duration if self.unmutated_duration > 0 else None


def suggestion(result: MutantResult, models: Mapping[str, tuple[str, ...]]) -> str | None:
    """The one-line advice for a survivor (or a mutant not reached), adapted to the suite."""
    mutant = MUTANTS[result.name]
    if result.status is Status.NOT_REACHED:
        return f"`{result.name}` not reached: {mutant.unreached}"
    if result.status is not Status.SURVIVED:
        return None
    where = _where(result.reached_by, models)
    return f"`{result.name}` survived: {mutant.missing}; add `{mutant.example}` to {where}"


def _where(reached_by: Sequence[str], models: Mapping[str, tuple[str, ...]]) -> str:
    """'a test that builds `gpt2` (e.g. `tests/test_lm.py::test_loss`)' from the tests that
    reached the mutant, preferring one that used a declared model."""
    with_models = [n for n in reached_by if models.get(n)]
    if with_models:
        nodeid = with_models[0]
        names = " or ".join(f"`{m}`" for m in models[nodeid][:2])
        return f"a test that builds {names} (e.g. `{nodeid}`)"
    if reached_by:
        return f"a test that runs this code, e.g. `{reached_by[0]}`"
    return "a test that runs the model"


# -- mutation.json --------------------------------------------------------------------------------


def to_dict(report: MutationReport) -> dict[str, Any]:
    return {
        "schema_version": MUTATION_SCHEMA_VERSION,
        "score": None if report.score is None else round(report.score, 4),
        "killed": report.count(Status.KILLED),
        "survived": report.count(Status.SURVIVED),
        "not_reached": report.count(Status.NOT_REACHED),
        "not_run": report.count(Status.NOT_RUN),
        "errors": report.count(Status.ERROR),
        "reached": report.reached,
        "unmutated": {"tests": report.tests, "duration": round(report.unmutated_duration, 3)},
        "duration": round(report.duration, 3),
        "cost": None if report.cost is None else round(report.cost, 2),
        "settings": {
            "paths": list(report.paths),
            "tier": report.tier,
            "all_killers": report.all_killers,
            "budget_minutes": report.budget_minutes,
        },
        "mutants": [
            {
                "name": m.name,
                "bug": MUTANTS[m.name].bug,
                "check": MUTANTS[m.name].check,
                "status": m.status.value,
                "kill": m.kill.value if m.kill else None,
                "killers": list(m.killers),
                "message": m.message,
                "reached_by": list(m.reached_by),
                "hits": m.hits,
                "duration": m.duration,
                "tests_run": m.tests_run,
                "suggestion": suggestion(m, report.models),
            }
            for m in report.mutants
        ],
        # the model ids of the tests the report names, so a reader of this file (the action's
        # trusted side) can render the same suggestions without the unmutated results
        "models": {n: list(report.models[n]) for n in _named(report) if report.models.get(n)},
    }


def _named(report: MutationReport) -> list[str]:
    named = {n for m in report.mutants for n in (*m.reached_by, *m.killers)}
    return sorted(named)


def from_dict(data: Mapping[str, Any]) -> MutationReport:
    """The report of a ``mutation.json`` that matched the schema (:mod:`mlcheck.power.publish`).

    Counts, score and cost are computed again from the mutants, never taken from the file;
    a mutant name outside the catalogue, or twice, is a :class:`ValueError`.
    """
    from .runner import Kill

    mutants: list[MutantResult] = []
    for m in data["mutants"]:
        if m["name"] not in MUTANTS or any(x.name == m["name"] for x in mutants):
            raise ValueError(f"unknown or repeated mutant {str(m['name'])[:60]!r}")
        mutants.append(
            MutantResult(
                name=m["name"],
                status=Status(m["status"]),
                kill=Kill(m["kill"]) if m["kill"] else None,
                killers=tuple(m["killers"]),
                message=m["message"],
                reached_by=tuple(m["reached_by"]),
                hits=m["hits"],
                duration=m["duration"],
                tests_run=m["tests_run"],
            )
        )
    settings = data["settings"]
    return MutationReport(
        mutants=tuple(mutants),
        tests=data["unmutated"]["tests"],
        unmutated_duration=data["unmutated"]["duration"],
        duration=data["duration"],
        models={n: tuple(ids) for n, ids in data.get("models", {}).items()},
        paths=tuple(settings["paths"]),
        tier=settings["tier"],
        all_killers=settings["all_killers"],
        budget_minutes=settings["budget_minutes"],
    )


def write(report: MutationReport, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MUTATION_FILE
    path.write_text(json.dumps(to_dict(report), indent=2) + "\n")
    (folder / MUTATION_MARKDOWN).write_text(markdown(report))
    return path


def models_of(results: RunResults) -> dict[str, tuple[str, ...]]:
    return {t.nodeid: tuple(m.id for m in t.models) for t in results.tests if t.models}


# -- Markdown -------------------------------------------------------------------------------------


def headline(report: MutationReport) -> str:
    killed = report.count(Status.KILLED)
    if report.score is None:
        return "mlcheck mutate: no mutant was reached by the selected tests"
    return (
        f"mlcheck mutate: {killed} of {plural(report.reached, 'reached mutant')} killed "
        f"({report.score:.0%})"
    )


def _killed_by(m: MutantResult) -> str:
    if m.status is Status.KILLED:
        # `|` would end the table cell, even inside a code span
        names = ", ".join(code(n, 150).replace("|", "\\|") for n in m.killers[:SHOWN_KILLERS])
        more = len(m.killers) - SHOWN_KILLERS
        how = "" if m.kill is None or m.kill.value == "failed" else f" ({m.kill.value})"
        return (names or "(the running test)") + (f" +{more} more" if more > 0 else "") + how
    if m.status in (Status.NOT_RUN, Status.ERROR):
        return inline(m.message, 160)  # escapes `|` too
    return "—"


def markdown(report: MutationReport) -> str:
    cost = f", {report.cost:.1f}× one plain run" if report.cost is not None else ""
    lines = [
        f"### {headline(report)}",
        "",
        f"{plural(report.tests, 'passing test')} (tier {report.tier or 'fast'}), "
        f"{plural(len(report.mutants), 'mutant')} in {duration_text(report.duration)}{cost}. "
        "A mutant is a realistic ML bug injected while the tests run; killed means a test "
        "caught it. Not-reached mutants are not counted.",
        "",
        "| mutant | result | killed by |",
        "| --- | --- | --- |",
    ]
    for m in report.mutants:
        status = f"**{m.status.value}**" if m.status is Status.SURVIVED else m.status.value
        lines.append(f"| {code(m.name)} | {status} | {_killed_by(m)} |")
    survivors = [m for m in report.mutants if m.status is Status.SURVIVED]
    if survivors:
        lines += ["", "**What would catch the survivors:**", ""]
        lines += [f"- {_md_suggestion(m, report.models)}" for m in survivors]
    unreached = [m for m in report.mutants if m.status is Status.NOT_REACHED]
    if unreached:
        lines += ["", "Not reached (the selected tests never ran that code; not counted):", ""]
        lines += [f"- {_md_suggestion(m, report.models)}" for m in unreached]
    return "\n".join(lines) + "\n"


def _md_suggestion(m: MutantResult, models: Mapping[str, tuple[str, ...]]) -> str:
    """The suggestion with the tests' node ids and model ids made safe for Markdown."""
    safe_models = {_span(n): tuple(_span(x) for x in v) for n, v in models.items()}
    safe = MutantResult(m.name, m.status, reached_by=tuple(_span(n) for n in m.reached_by))
    return suggestion(safe, safe_models) or ""


def _span(text: str) -> str:
    """Text from the tests, to sit between backticks (code spans render literally)."""
    return code(text, 150)[1:-1]


# -- terminal -------------------------------------------------------------------------------------


def print_terminal(report: MutationReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(stderr=False, highlight=False, soft_wrap=True)
    table = Table(title=headline(report), title_justify="left")
    table.add_column("mutant")
    table.add_column("result")
    table.add_column("killed by / note")
    colours = {
        Status.KILLED: "green",
        Status.SURVIVED: "bold red",
        Status.NOT_REACHED: "dim",
        Status.NOT_RUN: "yellow",
        Status.ERROR: "yellow",
    }
    for m in report.mutants:
        if m.status is Status.KILLED:
            note = ", ".join(m.killers[:SHOWN_KILLERS]) + (
                f" +{len(m.killers) - SHOWN_KILLERS} more" if len(m.killers) > SHOWN_KILLERS else ""
            )
            if m.kill is not None and m.kill.value != "failed":
                note += f" ({m.kill.value})"
        else:
            note = m.message or MUTANTS[m.name].bug
        table.add_row(
            m.name, f"[{colours[m.status]}]{m.status.value}[/]", escape(note.splitlines()[0])
        )
    console.print(table)
    for m in report.mutants:
        text = suggestion(m, report.models)
        if text and m.status is Status.SURVIVED:
            console.print(escape(text.replace("`", "")))
    cost = f" ({report.cost:.1f}× the unmutated run)" if report.cost is not None else ""
    console.print(f"took {duration_text(report.duration)}{cost}")
