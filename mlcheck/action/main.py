"""The GitHub Action: its inputs, what it runs, and what it hands back to the workflow.

``entrypoint.py`` (the Docker action's entry point) calls :func:`main`; the rest of mlcheck
reads no ``INPUT_*`` variable but the token input (:func:`mlcheck.constants.github_token`),
and the project under test sees none (:mod:`mlcheck.action.sandbox`). One action run:

1. reads the inputs (:class:`Inputs`, from ``INPUT_<NAME>``; inputs with dashes keep them:
   ``INPUT_GITHUB-TOKEN``) and the event (:mod:`mlcheck.github.event`), and resolves
   ``command: auto`` and ``tier: auto`` by event;
2. runs the ``install`` command in the project folder, and ``mlcheck run``, as the image's
   unprivileged user with no secret in reach (:mod:`mlcheck.action.sandbox`);
3. runs the mlcheck CLI for the command (``mlcheck run``, ``mlcheck schedule``,
   ``mlcheck publish``), so the action does nothing the CLI cannot do locally;
4. after ``run``: hands the results to ``mlcheck publish`` under the section of the tier it
   ran (results claiming another are refused) unless ``comment: off``, no token or no GitHub
   say otherwise; publish writes the job summary and annotations, compared with the tracking
   issue's base digest, and its counts, ``new-failures`` and ``comment-url`` are the action's
   outputs: the results, which the project's code wrote, are read once, by publish, as
   untrusted data. Without publish the action reads them itself, the same way, and compares
   with the ``base-digest`` input only. The CLI subcommands write their outputs into a
   private file, and the action writes ``$GITHUB_OUTPUT`` once, at the end
   (:mod:`mlcheck.github.workflow`);
5. once the project's processes are dead, puts the job's file commands back as they were
   before it ran and appends its own outputs and summary, then gives the files the project
   created in the workspace to the workspace's owner (the container runs as root; the
   runner's user must be able to clean the workspace); root itself creates nothing there.

``command: mutate`` (issue 24) runs ``mlcheck mutate`` in the same sandbox and then ``mlcheck
publish --mutation`` as root, which reads ``mutation.json`` as untrusted data and renders the
``mutation`` section itself (:func:`mutate_sandboxed`); the step exits as ``mlcheck mutate`` did.

Exit codes: those of the CLI (0 passed, 1 a selected test failed or errored, 2 usage or
environment), except that ``fail-on: never`` turns 1 into 0. A failure in the results fails
the step even when ``mlcheck run`` (the project's process) exited 0. A failed install, a bad
input or refused results are 2 whatever ``fail-on`` says: a broken set-up must not look green.
``command: publish`` passes ``fail-on`` on: the sharded workflow's report job fails when a
shard's test failed.

>>> Inputs.from_env({"INPUT_TIER": "fast", "INPUT_GITHUB-TOKEN": "x"}).tier
'fast'
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import constants as C
from ..errors import EnvironmentProblem, MlcheckError, ResultsError, UsageError
from ..github.event import PUBLISH, RUN, Event, load_event, read_event_bytes
from ..github.workflow import Workflow
from ..tiers import tier_key

if TYPE_CHECKING:
    from .file_commands import FileCommands
    from .sandbox import Sandbox

from .inputs import (
    CLI_OUTPUTS,
    MUTATE,
    NIGHTLY,
    OUTPUTS,
    Inputs,
    Plan,
    cli_args,
    plan,
    selection_args,
)

# `mlcheck publish` exit codes after which it has written the summary and annotations
# (0 published, 1 tests failed with --fail-on, 3 GitHub failed); 2 means it stopped first.
EXIT_TESTS_FAILED, EXIT_RESULTS_REFUSED, EXIT_REPORTING_FAILED = 1, 2, 3
_PUBLISH_REPORTED = (0, EXIT_TESTS_FAILED, EXIT_REPORTING_FAILED)


def publish_after_run(inputs: Inputs, p: Plan) -> list[str]:
    """``mlcheck publish`` for the results the ``run`` just wrote, under the tier it ran.

    Its exit code says how reporting went (``--fail-on never``); the counts it computed
    (its outputs) join ``mlcheck run``'s exit code in the step's verdict (:func:`verdict`).
    """
    publish = dataclasses.replace(inputs, paths=(inputs.results_dir,), fail_on="never")
    args = cli_args(publish, dataclasses.replace(p, command=PUBLISH))
    if "--section" not in args:  # `tier: all` ran every tier: the one section they make
        args[1:1] = ["--section", tier_key(p.tier)]
    return args


def _mlcheck(args: Sequence[str], cwd: Path, env: Mapping[str, str]) -> int:
    """The CLI as this (trusted) process's user, Python isolated (``-I``): no user site, no
    ``PYTHON*`` variables and not ``cwd`` on ``sys.path``, so files the tests wrote in the
    project or in ``HOME`` cannot run here."""
    sys.stdout.flush()
    return subprocess.call([sys.executable, "-I", "-m", "mlcheck", *args], cwd=cwd, env=dict(env))


def _has_command(name: str) -> bool:
    from ..cli import COMMAND_MODULES

    return any(m.__name__.rsplit(".", 1)[-1] == name for m in COMMAND_MODULES)


def run_install(command: str, cwd: Path, sandbox: Sandbox) -> None:
    """Run the ``install`` input with bash in the project folder, as the project's user
    (:mod:`mlcheck.action.sandbox`); raise when it fails."""
    if not command.strip():
        return
    with Workflow().group("install"):
        code = sandbox.call(["bash", "-eo", "pipefail", "-c", command], cwd)
    if code != 0:
        raise EnvironmentProblem(f"the install command failed (exit {code}): {command}")


# ---------------------------------------------------------------------------------------------
# Outputs, summary, annotations


def empty_outputs(p: Plan) -> dict[str, str]:
    """The outputs before anything ran: counts 0, URLs empty."""
    outputs = {name: "" for name in OUTPUTS} | {"results-dir": p.relative(p.results_dir)}
    return (
        outputs
        | {name: "0" for name in ("passed", "failed", "errors", "not-run", "selected")}
        | {"new-failures": "0"}
    )


def report(
    p: Plan,
    inputs: Inputs,
    event: Event,
    environ: Mapping[str, str],
    *,
    workflow: Workflow | None = None,
) -> dict[str, str]:
    """When ``mlcheck publish`` did not run: the outputs, the job summary and annotations.

    The results were written by the project's code: they are read once, as untrusted data
    (:func:`mlcheck.publish.load_untrusted`: no links, regular files, size caps, the schema),
    and a refusal raises :class:`~mlcheck.errors.ResultsError`. The comparison uses the
    ``base-digest`` input only (publish compares with the tracking issue's digest).
    """
    from ..publish import counts, load_untrusted
    from ..publish.outputs import context_for
    from ..report import render_annotations, render_summary
    from ..results.merge import merge_sections

    outputs = empty_outputs(p)
    results = load_untrusted([p.results_dir / "results.json"])
    base = Path(p.project / inputs.base_digest) if inputs.base_digest else None
    sections = merge_sections(results)
    ctx = context_for(event, environ, base=base, path_prefix=p.path_prefix)
    ctx = ctx.with_base(ctx.base, sections)  # classified once: outputs, summary, annotations
    n = counts(sections, ctx)
    outputs |= {
        "passed": str(n.passed),
        "failed": str(n.failed),
        "errors": str(n.errors),
        "not-run": str(n.not_run),
        # 0 is an empty selection (e.g. a GPU dispatch on a project whose tests are all fast)
        "selected": str(n.selected),
        "new-failures": str(n.new_failures),
    }
    wf = workflow or Workflow.from_env(environ, annotations=True)
    wf.append_summary(render_summary(sections, ctx))
    wf.print_annotations(render_annotations(sections, ctx))
    return outputs


def verdict(code: int, outputs: Mapping[str, str], refused: bool, fail_on: str) -> int:
    """The step's exit code, from ``mlcheck run``'s and the counts read from its results.

    ``mlcheck run`` ran as the project's user; the counts (``outputs``) come from the one
    trusted read of its results (publish's, or :func:`report`'s). A failure either one saw
    fails the step; results that were refused fail it whatever ``fail-on`` says (a verdict
    nobody could read is no pass); ``fail-on: never`` turns 1 into 0.

    >>> red = {"failed": "1", "errors": "0"}
    >>> verdict(0, red, False, "failures"), verdict(0, red, False, "never")
    (1, 0)
    >>> verdict(0, {}, True, "never")  # refused results
    2
    """
    if refused:
        return max(code, EXIT_RESULTS_REFUSED)
    failures = sum(int(outputs.get(k) or 0) for k in ("failed", "errors"))
    if failures and code == 0:
        code = EXIT_TESTS_FAILED
    if code == EXIT_TESTS_FAILED and fail_on == "never":
        return 0
    return code


def should_publish(inputs: Inputs, event: Event) -> tuple[bool, str]:
    """Whether ``mlcheck publish`` runs after ``run``, and why not when it does not.

    ``comment: on-failure`` and read-only tokens (fork PRs) still publish: publish then reads
    the base digest for the summary, updates an existing comment that is now green, and says
    why it wrote no comment. ``comment: off`` posts nothing at all (matrix shards use it).
    """
    if inputs.comment == "off":
        return False, "comment: off"
    if not inputs.github_token:
        return False, "no github-token"
    if event.name == "local":
        return False, "not running in GitHub Actions"
    return True, ""


# ---------------------------------------------------------------------------------------------
# File ownership


def give_back(workspace: Path) -> int:
    """Give what root created under ``workspace`` to the workspace's owner; a count.

    The Docker action runs as root while the runner's user owns the checkout; without this,
    the runner cannot clean up root-owned results and caches.
    """
    from .ownership import give_back as give

    owner = _owner(workspace)
    return give(workspace, owner, (0,)) if owner is not None and owner[0] != 0 else 0


# ---------------------------------------------------------------------------------------------
# Entry


def run_action(environ: Mapping[str, str]) -> int:
    """One action run (see the module docstring); returns the exit code."""
    from .file_commands import FileCommands

    inputs = Inputs.from_env(environ)
    event = load_event(environ)
    p = plan(inputs, event, environ)
    # Before any PR code: the job's file commands as the runner left them, put back (with
    # mlcheck's own lines) once the project's processes are dead (mlcheck/action/file_commands.py).
    kept = FileCommands.remember(environ)
    try:
        return _run_sandboxed(inputs, event, p, environ, kept)
    finally:
        kept.close()


def _run_sandboxed(
    inputs: Inputs,
    event: Event,
    p: Plan,
    environ: Mapping[str, str],
    kept: FileCommands,
) -> int:
    from . import sandbox as pr_code
    from .file_commands import FILE_COMMANDS
    from .ownership import give_back as give_files_back

    token = inputs.github_token or C.get(C.ENV_GITHUB_TOKEN, environ)
    owner = _owner(p.workspace)
    # The project under test runs as another user without any secret (mlcheck/action/sandbox.py).
    try:
        sandbox = pr_code.prepare(environ, token, p.workspace)
    except BaseException:
        kept.restore()
        raise
    # mlcheck's own outputs and summary go to private files first, appended to the runner's
    # once the project is dead and the files are restored.
    mine = {
        C.ENV_GITHUB_OUTPUT: sandbox.private / "outputs",
        C.ENV_GITHUB_STEP_SUMMARY: sandbox.private / "summary.md",
    }
    # the action prints its annotations whatever $GITHUB_ACTIONS says: it runs in Actions
    wf = Workflow.from_env(environ, annotations=True)
    wf = dataclasses.replace(
        wf,
        output=mine[C.ENV_GITHUB_OUTPUT],
        summary=mine[C.ENV_GITHUB_STEP_SUMMARY] if wf.summary else None,
    )
    for warning in (sandbox.user.warning, pr_code.docker_socket_warning()):
        if warning:
            wf.command("warning", f"mlcheck: {warning}")
    # What stays root: the token, a private copy of the event (the tests can write the
    # runner's copy as the runner's uid), and a HOME of its own (they can write the runner's).
    trusted = {
        k: v
        for k, v in pr_code.trusted_env(environ, sandbox.private / "home").items()
        if not k.startswith(C.INPUT_PREFIX) and k not in FILE_COMMANDS
    }
    if inputs.github_token:
        trusted[C.ENV_GITHUB_TOKEN] = inputs.github_token
    if event_path := C.get(C.ENV_GITHUB_EVENT_PATH, environ):
        copy = sandbox.private / "event.json"
        # read as untrusted data (no link followed, no FIFO waited on, size capped)
        copy.write_bytes(read_event_bytes(Path(event_path)))
        trusted[C.ENV_GITHUB_EVENT_PATH] = str(copy)
    # The CLI subcommands write their outputs here; the action writes $GITHUB_OUTPUT once.
    cli = Workflow(output=sandbox.private / "cli-outputs")
    trusted[C.ENV_GITHUB_OUTPUT] = str(cli.output)
    if wf.summary:
        trusted[C.ENV_GITHUB_STEP_SUMMARY] = str(wf.summary)
    tiered = p.command in (RUN, MUTATE)
    print(f"mlcheck: {p.command}" + (f", tier {p.tier}" if tiered else ""), flush=True)
    outputs = empty_outputs(p)
    try:
        if p.command == RUN and inputs.hf_token:
            warm_with_token(inputs.hf_token, p, sandbox, trusted)  # before any of the PR's code
        run_install(inputs.install, p.project, sandbox)  # the project's processes end with it
        if p.command == MUTATE:
            code, found = mutate_sandboxed(inputs, event, p, sandbox, trusted, cli, wf)
            outputs |= found
            return code
        if p.command != RUN:
            if not _has_command(p.command):
                raise UsageError(f"`mlcheck {p.command}` is not available in this version")
            code = _mlcheck(cli_args(inputs, p), p.project, trusted)
            outputs |= cli.read_outputs(CLI_OUTPUTS)
            return code
        args = cli_args(inputs, p)
        selecting, why = selection_args(inputs, p, event)
        args[1:1] = selecting  # options right after `run`, before the paths
        if why:
            print(f"mlcheck: {why}", flush=True)
        code = sandbox.call([sandbox.python, "-m", "mlcheck", *args], p.project)
        post, why_not = should_publish(inputs, event)
        # lexists: a link or a FIFO in its place is refused by the reader, never skipped
        ran = os.path.lexists(p.results_dir / "results.json")
        reported = None
        if post and ran:
            reported = _mlcheck(publish_after_run(inputs, p), p.project, trusted)
            if reported == EXIT_REPORTING_FAILED:
                # A reporting failure never hides the test result (SPEC §7).
                wf.command("warning", "mlcheck could not post the results; see the log above")
        elif not post:
            print(f"mlcheck: nothing posted to GitHub: {why_not}")
        refused = reported == EXIT_RESULTS_REFUSED
        if reported in _PUBLISH_REPORTED:
            # publish read the results once, as untrusted data: its numbers are the outputs
            # (compared with the tracking issue's base digest); nothing reads the file again
            outputs |= cli.read_outputs(CLI_OUTPUTS)
        elif ran and not refused:
            try:
                outputs = report(p, inputs, event, environ, workflow=wf)
            except ResultsError as exc:
                wf.command("error", f"mlcheck: results refused: {exc}")
                refused = True
        return verdict(code, outputs, refused, inputs.fail_on)
    finally:
        try:
            # Already dead after each call; again, whatever raised. If some survive, the file
            # commands are still put back, but without outputs, nothing is handed back and
            # the step stops with exit 2.
            survived = pr_code.end_or_error(sandbox)
            if survived is None:
                # outputs that do not apply to this command stay unset rather than empty
                optional = ("issue-url", "scheduled")
                wf.set_outputs({k: v for k, v in outputs.items() if v or k not in optional})
            kept.restore({name: _read_private(path) for name, path in mine.items()})
            if survived is not None:
                raise survived
            if owner is not None:
                # Root's own processes create nothing in the workspace: only the project's
                # files go back (and root's when the project ran as root, MLCHECK_PR_USER=0).
                uids: tuple[int, ...] = (
                    (sandbox.user.uid,) if sandbox.user.uid is not None else (0,)
                )
                if p.command == NIGHTLY:  # no project code ran: what root fetched goes back too
                    uids = (*uids, 0)
                give_files_back(p.workspace, owner, uids)
        finally:
            sandbox.close()


def mutate_sandboxed(
    inputs: Inputs,
    event: Event,
    p: Plan,
    sandbox: Sandbox,
    trusted: Mapping[str, str],
    cli: Workflow,
    wf: Workflow,
) -> tuple[int, dict[str, str]]:
    """``command: mutate``: ``mlcheck mutate`` as the project's user (no token), then
    ``mlcheck publish --mutation`` as root, which reads its ``mutation.json`` as untrusted data
    and renders the section itself (a ``mutation.md`` the project's code wrote is never
    read). The exit code is ``mlcheck mutate``'s (0 it ran, 1 under ``fail-under``, 2 the
    unmutated run failed or usage), 2 when its report is missing or refused.
    """
    code = sandbox.call([sandbox.python, "-m", "mlcheck", *cli_args(inputs, p)], p.project)
    # lexists: a link or a FIFO in its place is refused by the reader, never skipped
    if not os.path.lexists(p.results_dir / "mutation.json"):
        if code == 0:
            wf.command("error", "mlcheck: `mlcheck mutate` exited 0 but wrote no mutation.json")
        return code or EXIT_RESULTS_REFUSED, {}
    post, why_not = should_publish(inputs, event)
    if not post:
        print(f"mlcheck: nothing posted to GitHub: {why_not}")
    args = ["publish", "--mutation", "--comment", inputs.comment if post else "off"]
    reported = _mlcheck([*args, str(p.results_dir)], p.project, trusted)
    if reported == EXIT_RESULTS_REFUSED:
        wf.command("error", "mlcheck: the mutation report was refused; see the log above")
        return max(code, EXIT_RESULTS_REFUSED), {}
    if reported == EXIT_REPORTING_FAILED:
        wf.command("warning", "mlcheck could not post the mutation report; see the log above")
    return code, cli.read_outputs(("comment-url", "issue-url"))


def warm_with_token(hf_token: str, p: Plan, sandbox: Sandbox, trusted: Mapping[str, str]) -> None:
    """Gated and private models (the ``hf-token`` input): fetch what the project's lock names
    as root, with the token, before any of the project's code runs; the project then reads
    that cache without the token (:mod:`mlcheck.action.trusted_warm`). Raises when fetching fails:
    tests of models that could not be fetched would fail for a reason that is not theirs."""
    import tempfile

    if C.get(C.ENV_HF_HUB_CACHE, trusted) or C.get(C.ENV_HF_HOME, trusted):
        cache = C.hf_hub_cache(trusted)  # the workflow's cache (one actions/cache may restore)
    else:  # root's HOME is private: a cache of this run's own, readable by the project
        cache = Path(tempfile.mkdtemp(prefix="mlcheck-hub-cache-"))
        cache.chmod(0o755)
        sandbox._dirs.append(cache)  # removed with the sandbox
    env = dict(trusted) | {C.ENV_HF_HUB_CACHE: str(cache), C.ENV_HF_TOKEN: hf_token}
    argv = [sys.executable, "-I", "-m", "mlcheck.action.trusted_warm", "--project", str(p.project)]
    argv += ["--tier", p.tier, "--workspace", str(p.workspace)]
    with Workflow().group("fetch gated models (hf-token, before the project's code)"):
        sys.stdout.flush()
        code = subprocess.call(argv, cwd=sandbox.private, env=env)
    if code != 0:
        raise EnvironmentProblem(f"fetching the locked models with hf-token failed (exit {code})")
    # The project reads the same cache, with no token: not by name (scrubbed_env) and not as
    # the value of any other variable.
    for name in [k for k, v in sandbox.env.items() if hf_token in v]:
        del sandbox.env[name]
    sandbox.env[C.ENV_HF_HUB_CACHE] = str(cache)


def _read_private(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _owner(workspace: Path) -> tuple[int, int] | None:
    try:
        st = workspace.stat()
    except OSError:
        return None
    return st.st_uid, st.st_gid


def main(environ: Mapping[str, str] | None = None) -> int:
    """The Docker action's entry point (``entrypoint.py``)."""
    environ = os.environ if environ is None else environ
    try:
        return run_action(environ)
    except MlcheckError as exc:
        Workflow().command("error", f"mlcheck: {exc}")
        return exc.exit_code
