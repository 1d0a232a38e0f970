"""The GPU label gate (``mlcheck schedule``): one maintainer's label becomes one GPU run of
exactly the commit they labeled.

Runs on ``pull_request_target`` ``labeled`` (the base branch's workflow, with a write token).
When the label is the GPU label (default ``mlcheck:gpu``):

1. a re-run of the job (``GITHUB_RUN_ATTEMPT`` > 1) does nothing: its payload and labeler
   are the first attempt's, and one label is one run;
2. the label is removed, whoever added it. If it is already gone (another event for the same
   label won the race, or someone removed it), nothing is dispatched: of two racing label
   events at most one dispatches;
3. the sender's permission is read from the API (``GET .../collaborators/{user}/permission``):
   write, maintain or admin may start GPU runs; read, triage, outsiders and errors may not;
4. the commit is the one **the label event carries** (``pull_request.head.sha``): the
   maintainer saw that one. If ``GET /pulls/N`` says the PR has moved since, nothing is
   dispatched and the comment says to label again;
5. the GPU workflow is dispatched on the default branch with inputs ``sha``, ``pr`` and
   ``tier`` (all three must be declared by that workflow's ``workflow_dispatch``);
6. the PR comment's section for that tier says "GPU run scheduled for `abc1234` by @user" with
   a link to the workflow's runs, or why nothing ran. The GPU run's results replace it.

Steps 1 and 2 write only to the log: the section may already hold the winner's "scheduled"
or a GPU run's results, which a loser must not overwrite.

It never checks out, imports or runs PR code. The safety options (``allow_pickle``,
``trust_remote_code``) it shows come from the manifest in the **workspace**, which in a
``pull_request_target`` job is the base branch's checkout (``actions/checkout`` with no
``ref``); a workspace at the PR's head commit is refused, since that would mean the workflow
checked out PR code with a write token.

>>> ScheduleOptions().label
'mlcheck:gpu'
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from ..errors import UsageError
from ..publish.options import SETTLE, resolve_author
from ..redact import inline
from ..report import messages
from ..results.untrusted_files import NotPlainFile, read_beneath
from ..text import OBJECT_ID_RE
from ..tiers import DEFAULT_GPU_LABEL, DEFAULT_GPU_WORKFLOW, SCHEDULED_TIERS, tier_key

if TYPE_CHECKING:
    from ..github import GitHubClient
    from ..github.event import Event
    from .dispatch_plan import DispatchPlan

_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")


@dataclass(frozen=True)
class ScheduleOptions:
    label: str = DEFAULT_GPU_LABEL
    workflow: str = DEFAULT_GPU_WORKFLOW  # file name (or id) of the GPU workflow
    tier: str = SCHEDULED_TIERS
    workspace: Path = Path(".")  # the base branch's checkout (pull_request_target)
    author: str | None = None  # who the sticky comment is by (default: from the token)
    settle: float = SETTLE  # the sticky loop's re-read delay (publish.options)
    # the last full run's results (measured gpu peaks) for sizing with gpu_runners
    sizing_results: Path | None = None


@dataclass(frozen=True)
class ScheduleResult:
    status: Literal["ignored", "dispatched", "refused"]  # ignored: nothing written to GitHub
    message: str  # one line for the log
    pr: int | None = None
    sha: str | None = None
    section: str | None = None  # the comment section written
    comment_url: str | None = None

    def outputs(self) -> dict[str, str]:
        return {
            "scheduled": "true" if self.status == "dispatched" else "false",
            "sha": self.sha or "",
            "comment-url": self.comment_url or "",
        }


@dataclass(frozen=True)
class SafetyOptions:
    """Which models the base branch's manifest lets load pickles or run their own code."""

    allow_pickle: tuple[str, ...] = ()
    trust_remote_code: tuple[str, ...] = ()
    source: str | None = None  # the manifest file, relative to the workspace

    def describe(self) -> str:
        return messages.safety_note(self.source, self.allow_pickle, self.trust_remote_code)


def base_safety(workspace: Path, pr_head_sha: str | None = None) -> SafetyOptions:
    """Safety options from the manifest in ``workspace`` (the base branch's checkout).

    Refuses (:class:`~mlcheck.errors.UsageError`) a workspace whose git HEAD is the PR's head:
    reading the PR's manifest would let the PR grant itself ``allow_pickle``. It fails closed:
    a workspace whose HEAD cannot be read (no ``.git``, a link, a HEAD that is no commit) is
    refused too (:func:`git_head`).
    """
    from ..project.manifest import load_manifest

    if pr_head_sha and git_head(workspace) == pr_head_sha:
        raise UsageError(
            f"the workspace {workspace} is the PR's head commit: in pull_request_target "
            "workflows check out the base branch (actions/checkout with no `ref`), never the PR"
        )
    manifest = load_manifest(workspace)
    models = manifest.models.values()
    source = None
    if manifest.source is not None:
        try:
            source = str(manifest.source.relative_to(workspace))
        except ValueError:
            source = manifest.source.name
    return SafetyOptions(
        allow_pickle=tuple(sorted(m.model_id for m in models if m.allow_pickle)),
        trust_remote_code=tuple(sorted(m.model_id for m in models if m.trust_remote_code)),
        source=source,
    )


_GIT_FILE_BYTES = 4096  # HEAD, a loose ref, .git as a file, commondir
_PACKED_REFS_BYTES = 64 * 1024 * 1024
_REF = re.compile(r"refs/[A-Za-z0-9._/-]+")


def git_head(workspace: Path) -> str:
    """The commit ``workspace``'s checkout is at, read as data; :class:`UsageError` if unknown.

    No git runs: git as root in a checkout that another user owns refuses ("dubious
    ownership"), and its config could name commands to run. ``.git/HEAD``, the loose ref it
    names and ``packed-refs`` are parsed by hand, each opened without following links
    (:func:`~mlcheck.results.untrusted_files.read_beneath`); worktrees (``.git`` as a
    ``gitdir:`` file, ``commondir``) are understood. Anything else (no ``.git``, a link, a
    HEAD naming no commit) is refused: the scheduler must not guess that the workspace is the
    base branch.

    >>> import subprocess, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / ".git").mkdir(), (d / ".git" / "HEAD").write_text("a" * 40 + "\\n")
    >>> git_head(d) == "a" * 40
    True
    """
    try:
        gitdir = _git_dir(workspace)
        common = gitdir
        try:
            pointer = _read_git(gitdir, "commondir").strip()
            common = (gitdir / pointer) if pointer else gitdir
        except FileNotFoundError:
            pass
        head = _read_git(gitdir, "HEAD").strip()
        for _ in range(5):  # a symbolic ref may name another one
            if OBJECT_ID_RE.fullmatch(head):
                return head
            ref = head.removeprefix("ref:").strip()
            if not head.startswith("ref:") or not _REF.fullmatch(ref) or ".." in ref:
                break
            head = _resolve_ref(gitdir, common, ref)
    except (OSError, UnicodeDecodeError) as exc:
        raise _unknown_head(workspace, str(exc)) from None
    raise _unknown_head(workspace, f"HEAD names no commit ({head[:80]!r})")


def _git_dir(workspace: Path) -> Path:
    """``workspace/.git``, or where a ``.git`` file (``gitdir: PATH``) points."""
    if stat.S_ISDIR(os.lstat(workspace / ".git").st_mode):  # lstat: a link is no folder
        return workspace / ".git"
    text = _read_git(workspace, ".git").strip()
    if not text.startswith("gitdir:"):
        raise NotPlainFile(f"{workspace / '.git'} is a file that names no gitdir")
    return (workspace / text.removeprefix("gitdir:").strip()).resolve()


def _resolve_ref(gitdir: Path, common: Path, ref: str) -> str:
    for folder in dict.fromkeys((gitdir, common)):
        try:
            return _read_git(folder, ref).strip()
        except FileNotFoundError:
            continue
    try:
        packed = read_beneath(common, "packed-refs", _PACKED_REFS_BYTES).decode()
    except FileNotFoundError:
        raise FileNotFoundError(f"the ref {ref} is neither a file nor in packed-refs") from None
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name == ref and OBJECT_ID_RE.fullmatch(sha):
            return sha
    raise FileNotFoundError(f"the ref {ref} is neither a file nor in packed-refs")


def _read_git(folder: Path, name: str) -> str:
    return read_beneath(folder, name, _GIT_FILE_BYTES).decode()


def _unknown_head(workspace: Path, why: str) -> UsageError:
    return UsageError(
        f"cannot tell which commit the workspace {workspace} is at ({why}), so cannot check "
        "that it is the base branch and not the PR: check out the base branch with "
        "actions/checkout (no `ref`) before `mlcheck schedule`"
    )


def runs_url(event: Event, workflow: str) -> str:
    """Where the dispatched runs show up (the dispatch API answers 204 with no run id)."""
    return (
        f"{event.server_url}/{event.repository}/actions/workflows/{quote(workflow, safe='')}"
        "?query=event%3Aworkflow_dispatch"
    )


def schedule(
    event: Event,
    client: GitHubClient,
    options: ScheduleOptions = ScheduleOptions(),
    *,
    token: str | None = None,
) -> ScheduleResult:
    """Handle a ``pull_request_target`` event; see the module docstring for the steps.

    GitHub errors propagate (:class:`~mlcheck.errors.GitHubError`; the CLI exits 3); a refusal
    is a normal outcome, written to the comment.
    """
    from ..publish.comment import update_section

    if event.name != "pull_request_target":
        raise UsageError(
            f"`mlcheck schedule` handles pull_request_target labeled events, not {event.name}; "
            "use `command: auto` or `run`/`publish` here"
        )
    if event.action != "labeled" or event.label != options.label:
        what = f"label {event.label!r}" if event.label else f"action {event.action!r}"
        return ScheduleResult("ignored", f"nothing to do: {what} is not {options.label!r}")
    pr = event.pr_number
    sender = event.sender or ""
    if pr is None or event.pull_request is None:
        raise UsageError("the pull_request_target payload has no pull_request")
    key = tier_key(options.tier)
    repo = event.repository
    author = resolve_author(client, token, options.author)

    def write(section: str) -> str:
        done = update_section(client, repo, pr, key, section, author=author, settle=options.settle)
        return done.comment.html_url

    if event.run_attempt and event.run_attempt != "1":
        return ScheduleResult(
            "ignored",
            f"nothing dispatched: this is attempt {inline(event.run_attempt, 10)} of the job, "
            "and one label is one run; add the label again to start a new GPU run",
            pr=pr,
        )
    labeled_sha = event.pull_request.head_sha  # the commit the maintainer saw when labeling
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", labeled_sha):
        raise UsageError(f"the label event's pull_request.head.sha {labeled_sha!r} is no SHA")
    # One label = one run, allowed or not. A label already gone was used by another event.
    if not client.remove_label(repo, pr, options.label):
        return ScheduleResult(
            "ignored",
            f"nothing dispatched: {options.label!r} is no longer on PR #{pr} (another run "
            "already used it, or it was removed); add it again to start a GPU run",
            pr=pr,
        )
    refusal = None
    if not _LOGIN.fullmatch(sender):
        refusal = messages.refused_no_user()
    else:
        permission = client.collaborator_permission(repo, sender)
        if not permission.can_write:
            refusal = messages.refused_not_a_writer(sender, options.label, permission.role_name)
    if refusal is None:
        pull = client.get_pull(repo, pr)
        if pull.state != "open":
            refusal = messages.refused_pr_state(pull.state)
        elif pull.head_sha != labeled_sha:
            refusal = messages.refused_pr_moved(pull.head_sha, labeled_sha)
    if refusal is not None:
        section = messages.gpu_run_refused(key, refusal, options.label)
        return ScheduleResult(
            "refused", f"refused: {refusal}", pr=pr, section=key, comment_url=write(section)
        )

    sha = labeled_sha
    safety = base_safety(options.workspace, sha)
    # Which runner, sized from the base branch's models (after base_safety: the workspace
    # is the base branch); a test too big for every class stops the dispatch here.
    sized = _dispatch_plan(options)
    if sized is not None and not sized.dispatch:
        from .dispatch_plan import too_big_message, too_big_section

        return ScheduleResult(
            "refused",
            f"refused: {too_big_message(sized)}",
            pr=pr,
            section=key,
            comment_url=write(too_big_section(key, sized)),
        )
    branch = event.default_branch or client.get_repo(repo).default_branch
    inputs = {"sha": sha, "pr": str(pr), "tier": key}  # the tiers as every writer writes them
    if sized is not None and sized.runners_input:
        inputs["runners"] = sized.runners_input  # the GPU workflow's matrix of runner classes
    client.dispatch_workflow(repo, options.workflow, branch, inputs)
    runs = runs_url(event, options.workflow)
    section = messages.gpu_run_scheduled(
        key, sha, sender, options.workflow, runs, safety.describe()
    )
    if sized is not None:
        from .dispatch_plan import runner_note

        section += f"\n\n**Runner** (`[tool.mlcheck] gpu_runners`):\n\n{runner_note(sized)}"
    url = write(section)
    return ScheduleResult(
        "dispatched",
        f"dispatched {options.workflow} on {branch} for {sha[:7]} (PR #{pr}, tier {key})",
        pr=pr,
        sha=sha,
        section=key,
        comment_url=url,
    )


def _dispatch_plan(options: ScheduleOptions) -> DispatchPlan | None:
    """:func:`mlcheck.action.dispatch_plan.plan_dispatch` for the base branch, with the last full
    run's results (read as untrusted data) when given."""
    from .dispatch_plan import plan_dispatch

    results = None
    if options.sizing_results is not None and os.path.lexists(options.sizing_results):
        from ..results.schema import RunResults
        from ..results.untrusted import load_untrusted

        loaded = load_untrusted([options.sizing_results])  # one file, or a folder of shards
        tests = tuple(t for r in loaded for t in r.tests)
        results = RunResults(loaded[0].run, tests) if loaded else None
    return plan_dispatch(options.workspace, results)


__all__ = [
    "DEFAULT_GPU_WORKFLOW",
    "SafetyOptions",
    "ScheduleOptions",
    "ScheduleResult",
    "base_safety",
    "git_head",
    "runs_url",
    "schedule",
]
