"""The action's inputs: what each means and its default, the plan an event and the inputs make
(which command, which tier, where), and the CLI arguments that plan becomes.

The inputs are read once, here, from ``INPUT_<NAME>`` (inputs with dashes keep them:
``INPUT_GITHUB-TOKEN``), and checked before anything runs: a typo in ``tier:`` fails the step
before the ``install`` command (:func:`mlcheck.tiers.parse_tiers`).

>>> Inputs.from_env({"INPUT_TIER": "fast", "INPUT_GITHUB-TOKEN": "x"}).tier
'fast'
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import constants as C
from ..errors import UsageError
from ..github.event import PUBLISH, RUN, SCHEDULE, TIER_ALL, Event
from ..tiers import DEFAULT_GPU_LABEL, DEFAULT_GPU_WORKFLOW, parse_tiers, tier_key

MUTATE = "mutate"  # issue 24: `mlcheck mutate` in the sandbox, its report posted by root
# issue 25: `mlcheck nightly fetch` into results-dir (a trusted job with `actions: read`)
NIGHTLY = "nightly"
COMMANDS = ("auto", RUN, SCHEDULE, PUBLISH, MUTATE, NIGHTLY)
FAIL_ON = ("failures", "never")
SELECT_MODES = ("all", "changed")
# Where a nightly run records its per-test file map: inside the results, so the results
# artifact carries it, next to the commit it was recorded at (mlcheck.plugin.selection.FileMap).
FILE_MAP_NAME = "file-map.json"
OUTPUTS = (
    "passed",
    "failed",
    "errors",
    "not-run",
    "selected",
    "new-failures",
    "results-dir",
    "comment-url",
    "issue-url",
    "scheduled",
)
# Outputs the CLI subcommands write themselves (``mlcheck publish``, ``mlcheck schedule``).
CLI_OUTPUTS = tuple(name for name in OUTPUTS if name != "results-dir")

# Every input of action.yml with the default it has there (GitHub fills defaults in; these
# apply when the module runs outside Actions). tests/scenarios/test_consistency.py keeps them
# in sync.
INPUT_DEFAULTS: dict[str, str] = {
    "command": "auto",
    "tier": "auto",
    "paths": "",
    "working-directory": ".",
    "workers": "",
    "shard": "",
    "results-dir": C.DEFAULT_RESULTS_DIR,
    "github-token": "",
    "gpu-label": DEFAULT_GPU_LABEL,
    "gpu-workflow": DEFAULT_GPU_WORKFLOW,
    "comment": "always",
    "fail-on": "failures",
    "install": "",
    "base-digest": "",
    # command: mutate (issue 24)
    "mutants": "all",
    "budget": "",
    "fail-under": "",
    "hf-token": "",
    "sizing-results": "",
    "select": "",
    "file-map": "",
}


def input_env_name(name: str) -> str:
    """The variable GitHub passes an input in: ``github-token`` -> ``INPUT_GITHUB-TOKEN``."""
    return C.INPUT_PREFIX + name.replace(" ", "_").upper()


@dataclass(frozen=True)
class Inputs:
    """The action's inputs, validated. Build with :meth:`from_env`."""

    command: str = "auto"
    tier: str = "auto"
    paths: tuple[str, ...] = ()
    working_directory: str = "."
    workers: str = ""
    shard: str = ""
    results_dir: str = C.DEFAULT_RESULTS_DIR
    github_token: str = ""
    gpu_label: str = DEFAULT_GPU_LABEL
    gpu_workflow: str = DEFAULT_GPU_WORKFLOW
    comment: str = "always"
    fail_on: str = "failures"
    install: str = ""
    base_digest: str = ""
    mutants: str = "all"
    budget: str = ""
    fail_under: str = ""
    hf_token: str = ""
    sizing_results: str = ""
    select: str = ""
    file_map: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Inputs:
        """Read ``INPUT_*`` variables; empty values mean the default."""
        raw = {
            name: (environ.get(input_env_name(name)) or "").strip() or default
            for name, default in INPUT_DEFAULTS.items()
        }
        from ..publish.options import COMMENT_MODES

        _choice("command", raw["command"], COMMANDS)
        _choice("comment", raw["comment"], COMMENT_MODES)
        _choice("fail-on", raw["fail-on"], FAIL_ON)
        if raw["tier"] != "auto":
            # here, before `install` runs: a typo fails the step before any project code
            parse_tiers(raw["tier"], source="input `tier`")
        if raw["select"]:
            _choice("select", raw["select"], SELECT_MODES)
        return cls(
            command=raw["command"],
            tier=raw["tier"],
            paths=tuple(shlex.split(raw["paths"])),
            working_directory=raw["working-directory"],
            workers=raw["workers"],
            shard=raw["shard"],
            results_dir=raw["results-dir"],
            github_token=raw["github-token"],
            gpu_label=raw["gpu-label"],
            gpu_workflow=raw["gpu-workflow"],
            comment=raw["comment"],
            fail_on=raw["fail-on"],
            install=raw["install"],
            base_digest=raw["base-digest"],
            mutants=raw["mutants"],
            budget=raw["budget"],
            fail_under=raw["fail-under"],
            hf_token=raw["hf-token"],
            sizing_results=raw["sizing-results"],
            select=raw["select"],
            file_map=raw["file-map"],
        )


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UsageError(f"input `{name}: {value}`: use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Plan:
    """What this action run does, resolved from the inputs and the event."""

    command: str
    tier: str
    workspace: Path  # the repository checkout (GITHUB_WORKSPACE)
    project: Path  # working-directory, inside the workspace
    results_dir: Path  # absolute

    @property
    def path_prefix(self) -> str:
        """The project's folder inside the repository ("" at the root), for links."""
        prefix = self.relative(self.project)
        return "" if prefix == "." else prefix

    def relative(self, path: Path) -> str:
        """``path`` as the repository sees it (not ``/github/workspace/...``)."""
        try:
            return path.resolve().relative_to(self.workspace.resolve()).as_posix() or "."
        except ValueError:
            return str(path)


def plan(inputs: Inputs, event: Event, environ: Mapping[str, str]) -> Plan:
    """Resolve ``auto`` and the folders.

    >>> from mlcheck.github.event import parse_event
    >>> p = plan(Inputs(), parse_event("schedule", {}, {"GITHUB_REPOSITORY": "o/r"}), {})
    >>> p.command, p.tier
    ('run', 'all')
    """
    command = event.auto_command if inputs.command == "auto" else inputs.command
    text = event.auto_tier if inputs.tier == "auto" else inputs.tier
    if command == MUTATE and inputs.tier == "auto":
        text = "fast"  # mutants are cheap on the fast tier's small models; `tier` overrides
    # written one way (`real,gpu`) to `mlcheck run --tier`, `schedule --tier` and `--section`;
    # `all` stays `all`: the nightly publishes the results' own sections
    tier = TIER_ALL if text.strip().lower() == TIER_ALL else tier_key(text)
    workspace = Path(C.get(C.ENV_GITHUB_WORKSPACE, environ) or os.getcwd())
    project = (workspace / inputs.working_directory).resolve()
    if not project.is_relative_to(workspace.resolve()):
        raise UsageError(f"working-directory {inputs.working_directory!r} is outside the workspace")
    if not project.is_dir():
        raise UsageError(f"working-directory {inputs.working_directory!r} is not a folder")
    return Plan(command, tier, workspace, project, project / inputs.results_dir)


# ---------------------------------------------------------------------------------------------
# Commands


def cli_args(inputs: Inputs, p: Plan) -> list[str]:
    """The mlcheck command line for the plan (without the program itself).

    >>> cli_args(Inputs(workers="2", paths=("tests",)), Plan("run", "fast", Path("/w"),
    ...          Path("/w"), Path("/w/mlcheck-results")))
    ['run', '--tier', 'fast', '--results-dir', 'mlcheck-results', '--workers', '2', 'tests']
    """
    if p.command == RUN:
        args = ["run", "--tier", p.tier, "--results-dir", inputs.results_dir]
        if inputs.workers:
            args += ["--workers", inputs.workers]
        if inputs.shard:
            args += ["--shard", inputs.shard]
        return [*args, *inputs.paths]
    if p.command == MUTATE:
        args = ["mutate", "--tier", p.tier, "--results-dir", inputs.results_dir]
        args += ["--mutants", inputs.mutants]
        if inputs.workers:
            args += ["--workers", inputs.workers]
        if inputs.budget:
            args += ["--budget", inputs.budget]
        if inputs.fail_under:
            args += ["--fail-under", inputs.fail_under]
        return [*args, *inputs.paths]
    if p.command == NIGHTLY:
        # The last successful nightly's file-map.json and results.json, for a later job: the
        # GPU run's selection (--file-map), the scheduler's runner sizing (sizing-results)
        return ["nightly", "fetch", "--out", inputs.results_dir]
    if p.command == SCHEDULE:
        # The workspace is the base branch's checkout (pull_request_target): the safety
        # options the comment shows come from its manifest, never from the PR.
        args = [
            "schedule",
            *("--label", inputs.gpu_label, "--workflow", inputs.gpu_workflow),
            *("--tier", p.tier, "--workspace", "."),
        ]
        if inputs.sizing_results:  # the last full GPU run's results: measured peaks
            args += ["--sizing-results", inputs.sizing_results]
        return args
    args = ["publish", "--comment", inputs.comment, "--gpu-label", inputs.gpu_label]
    args += ["--annotations", "--fail-on", inputs.fail_on]
    if p.tier != TIER_ALL:
        # The section is the tier this step ran (or was told): results claiming another are
        # refused. `all` (the nightly) keeps the results' own tier sections.
        args += ["--section", tier_key(p.tier)]
    if p.path_prefix:
        args += ["--path-prefix", p.path_prefix]
    if inputs.base_digest:
        args += ["--base-digest", inputs.base_digest]
    return [*args, *(inputs.paths or (inputs.results_dir,))]


def selection_args(inputs: Inputs, p: Plan, event: Event) -> tuple[list[str], str]:
    """``mlcheck run`` options for the ``select`` input, and a line for the log.

    Only real and gpu tests are ever left out (:mod:`mlcheck.plugin.selection`). ``select`` defaults
    to ``changed`` for the GPU dispatch (``workflow_dispatch`` with a ``pr``), ``all``
    otherwise. ``changed`` compares with the PR's base commit (the payload's, or the
    dispatched workflow's own commit: the default branch) using the ``file-map`` a full run
    recorded; without a map, or when unsure, everything runs and the results say why. A nightly
    (``schedule``) run of real or gpu tests records that map into the results folder
    (``file-map.json``), so the results artifact carries it, with its commit.

    >>> from mlcheck.github.event import parse_event
    >>> ev = parse_event("workflow_dispatch", {"inputs": {"sha": "a" * 40, "pr": "7"}},
    ...                  {"GITHUB_REPOSITORY": "o/r", "GITHUB_SHA": "b" * 40})
    >>> p = Plan("run", "real,gpu", Path("/w"), Path("/w"), Path("/w/r"))
    >>> selection_args(Inputs(file_map="map.json"), p, ev)[0] == [
    ...     "--changed-since", "b" * 40, "--file-map", "map.json"]
    True
    """
    names = {t.strip() for t in p.tier.split(",")}
    if not names & {"real", "gpu", "all"}:
        return [], ""
    args: list[str] = []
    if event.name == "schedule":
        args += ["--record-map", f"{inputs.results_dir}/{FILE_MAP_NAME}"]
    gpu_dispatch = event.name == "workflow_dispatch" and bool(event.inputs.get("pr"))
    mode = inputs.select or ("changed" if gpu_dispatch else "all")
    if mode != "changed":
        return args, ""
    base = event.pull_request.base_sha if event.pull_request is not None else ""
    if not base and event.name == "workflow_dispatch":
        base = event.sha  # the dispatched workflow runs on the default branch's head
    if not base:
        return args, "select: changed, but this event names no base commit: every test runs"
    args += ["--changed-since", base]
    if inputs.file_map:
        args += ["--file-map", inputs.file_map]
    return args, f"select: changed since {base[:7]} (tests no change can break are not run)"
