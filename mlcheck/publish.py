"""Publish results produced elsewhere: the sticky PR comment, the tracking issue, the job summary.

``mlcheck publish`` runs in a job that has a write token but never ran the code under test: the
GPU workflow's ``publish`` job (the GPU job ran PR code with no write token), the fork-safe
``workflow_run`` publisher (the fork's run had a read-only token), a merge job after matrix
shards. The results it reads were written by code that whoever opened the PR controls, so they
are **untrusted data**: :func:`load_untrusted` refuses symbolic links, files over
:data:`MAX_RESULTS_BYTES`, more than :data:`MAX_TESTS` tests and anything that does not match
``mlcheck/schema/results.schema.json`` (with ``jsonschema`` when installed, else the dataclass
loader plus type checks), and every string reaches GitHub through the renderer
(:mod:`mlcheck.render`), which redacts and escapes it. Where the publisher knows which section
the results belong to (a dispatched GPU run: its ``tier`` input; a ``workflow_run`` publisher:
``fast`` unless told), the results cannot choose another one, so a PR's GPU job cannot
overwrite the fast section with a fake green one.

Where the base digest lives (for "new failure" vs "already failing on base"): in a hidden
section of the **tracking issue**, the one issue mlcheck keeps per repository (found by
:data:`TRACKING_MARKER` and by its author, so nobody else can forge it). The nightly run writes
the digests of every tier there; a push to the default branch replaces its own tier's digest.
Why there and not in an artifact or a check run:

- one read for a PR run (``GET /issues?creator=...``, one page), so the common PR publish stays
  at 4 requests; an artifact costs a runs query, an artifacts query and a zip download;
- readable with the read-only token of fork PRs and with ``issues: read`` only; artifacts
  expire (90 days at most, often 1-7), and downloading them needs ``actions: read``;
- a check run's output is tied to a commit, so finding "the last completed run on the base
  branch" would mean walking commits; the issue is one place, always current;
- it is also where the nightly report goes, so the "new since the last nightly" comparison
  reads the previous nightly's digests from the same body it rewrites (no extra request).

The cost: pushes to the default branch and the nightly need ``issues: write``; concurrent
writers of the issue (a push and the nightly finishing together) are last-writer-wins for
the whole body, which at worst leaves one tier's base digest one run old.

>>> from mlcheck.results import RunResults, RunInfo, TestResult, Outcome
>>> r = RunResults(RunInfo(), (TestResult("t::a", Outcome.FAILED),))
>>> counts(merge_sections([r]), {}).failed
1
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import digest as digest_mod
from . import render, sticky
from .digest import Digest, classify
from .errors import GitHubError, ResultsError, UsageError
from .merge import merge, merge_sections, section_key
from .results import SCHEMA_VERSION, Outcome, RunInfo, RunResults, TestResult, from_dict
from .safety import NO_SECRETS, Redactor, inline, one_line

if TYPE_CHECKING:
    from .event import Event
    from .github import GitHubClient, Issue

# --- limits on untrusted results

MAX_RESULTS_BYTES = 50 * 1024 * 1024  # one results.json; mlcheck's own are a few MB at most
MAX_TESTS = 200_000  # per publish, all files together
MAX_RESULTS_FILES = 256  # results.json files under the given folders (shards, artifacts)
_MAX_DEPTH = 4  # artifact folders nest results one or two levels down

# --- where things go

TRACKING_MARKER = "<!-- mlcheck:tracking v1 -->"
TRACKING_TITLE = "mlcheck nightly"
TRACKING_LABELS = ("mlcheck",)
NIGHTLY_KEY = "nightly"  # the visible report in the tracking issue
BASE_KEY = "base"  # the hidden base digests in the tracking issue
ABOUT_KEY = "about"
# Base digests are written for these keys too when a run covers them (the nightly runs all
# tiers; PR runs compare with `fast`, dispatched GPU runs with `real,gpu`).
BASE_KEYS = ("fast", "real", "gpu", "real,gpu")
# each; a digest is only as long as it needs. 12k keeps every failure and every test that ran
# for ~5k tests (a sample of the ran set beyond that; bench/digest_size.py), and 4 keys still
# leave the nightly report in the tracking issue room under GitHub's 65,536 characters
BASE_DIGEST_CHARS = 12_000
SECTION_BUDGET = render.COMMENT_BUDGET // 2  # a PR comment holds a fast and a GPU section

COMMENT_MODES = ("always", "on-failure", "off")
EXIT_OK = 0
EXIT_TESTS_FAILED = 1  # only with fail_on="failures"
EXIT_REPORTING_FAILED = 3

_ABOUT = (
    "*This issue is kept up to date by mlcheck: the nightly report above, and (hidden) the "
    "default branch's last results that PR reports compare with. It is closed while everything "
    "passes and reopened when a nightly run fails. Do not edit its body.*"
)
_SHA = re.compile(r"[0-9a-fA-F]{7,64}")


# ---------------------------------------------------------------------------------------------
# Loading untrusted results


@dataclass(frozen=True)
class Limits:
    """How much untrusted input a publish accepts."""

    max_bytes: int = MAX_RESULTS_BYTES
    max_tests: int = MAX_TESTS
    max_files: int = MAX_RESULTS_FILES


def find_results_files(paths: Iterable[Path], limits: Limits = Limits()) -> list[Path]:
    """``results.json`` files in ``paths`` (files, results folders or downloaded artifacts).

    A folder without a ``results.json`` of its own is searched a few levels down (artifacts
    unpack shards into sub-folders). Symbolic links are refused: an artifact could point one at
    a file the publisher can read and the PR author cannot.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_symlink() or (path / "results.json").is_symlink():
            raise ResultsError(f"{path} is a symbolic link; results must be plain files")
        if path.is_file():
            found.append(path)
        elif (path / "results.json").is_file():
            found.append(path / "results.json")
        elif path.is_dir():
            found += _walk(path, 0)
        else:
            raise ResultsError(f"no results at {path}: run `mlcheck run` or download the artifact")
        if len(found) > limits.max_files:
            raise ResultsError(
                f"more than {limits.max_files} results files under the given folders; "
                "pass the results folders themselves"
            )
    if not found:
        raise ResultsError(f"no results.json under {', '.join(map(str, paths))}")
    for f in found:
        if f.is_symlink():
            raise ResultsError(f"{f} is a symbolic link; results must be plain files")
    return found


def _walk(folder: Path, depth: int) -> list[Path]:
    if depth > _MAX_DEPTH:
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            if entry.name == "results.json":
                raise ResultsError(f"{entry} is a symbolic link; results must be plain files")
            continue  # folders linked from elsewhere are not searched
        if entry.is_file() and entry.name == "results.json":
            found.append(entry)
        elif entry.is_dir():
            found += _walk(entry, depth + 1)
    return found


def _schema() -> dict[str, Any]:
    text = resources.files("mlcheck").joinpath("schema/results.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(data: Any, *, use_jsonschema: bool | None = None) -> RunResults:
    """Check untrusted results data and build :class:`RunResults` from it.

    The schema version is checked first (its message says which mlcheck wrote the file); then
    the JSON schema when ``jsonschema`` is installed (``use_jsonschema=None``), else the
    dataclass loader plus the type checks the schema would have made.
    """
    if not isinstance(data, dict):
        raise ResultsError("results file is not a JSON object")
    if use_jsonschema is None:
        try:
            import jsonschema
        except ImportError:
            use_jsonschema = False
        else:
            use_jsonschema = True
    if use_jsonschema and data.get("schema_version") == SCHEMA_VERSION:
        import jsonschema

        validator = jsonschema.Draft202012Validator(_schema())
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise ResultsError(
                f"results do not match the results schema at {where}: {error.message[:300]}"
            )
    if not use_jsonschema and data.get("schema_version") == SCHEMA_VERSION:
        for name, kind in (("run", dict), ("tests", list)):
            if not isinstance(data.get(name), kind):
                raise ResultsError(
                    f"results do not match the results schema at {name}: not a {kind.__name__}"
                )
    results = from_dict(data)  # checks schema_version with an actionable message
    if not use_jsonschema:
        _check_types(results)
    return results


_TIERS = {"fast", "real", "gpu"}


def _check_types(results: RunResults) -> None:
    """What the schema checks that the dataclass loader does not (used without jsonschema)."""

    def bad(where: str, what: str) -> ResultsError:
        return ResultsError(f"results do not match the results schema at {where}: {what}")

    if not set(results.run.tiers) <= _TIERS:
        raise bad("run/tiers", f"{sorted(results.run.tiers)!r} is not a list of fast, real, gpu")
    for i, t in enumerate(results.tests):
        for name in ("nodeid", "message", "traceback"):
            if not isinstance(getattr(t, name), str):
                raise bad(f"tests/{i}/{name}", "not a string")
        if t.file is not None and not isinstance(t.file, str):
            raise bad(f"tests/{i}/file", "not a string")
        if t.line is not None and (not isinstance(t.line, int) or t.line < 1):
            raise bad(f"tests/{i}/line", "not a positive integer")
        if t.tier not in _TIERS:
            raise bad(f"tests/{i}/tier", f"{t.tier!r} is not one of fast, real, gpu")
        if t.run is not None and not isinstance(t.run, str):
            raise bad(f"tests/{i}/run", "not a string")
        if not isinstance(t.duration, int | float):
            raise bad(f"tests/{i}/duration", "not a number")


def load_untrusted(
    paths: Iterable[Path], *, limits: Limits = Limits(), use_jsonschema: bool | None = None
) -> list[RunResults]:
    """Read results from folders or artifacts as untrusted data (see the module docstring).

    Raises :class:`~mlcheck.errors.ResultsError` naming the file and what is wrong with it.
    Nothing is written: the results files stay exactly as they were.
    """
    loaded: list[RunResults] = []
    tests = 0
    for path in find_results_files(list(paths), limits):
        try:
            with path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > limits.max_bytes:
                    raise ResultsError(
                        f"{path} is {_mib(size)}, over the {_mib(limits.max_bytes)} limit for "
                        "published results; it was not read"
                    )
                raw = fh.read(limits.max_bytes + 1)
        except OSError as exc:
            raise ResultsError(f"cannot read {path}: {exc}") from None
        if len(raw) > limits.max_bytes:  # grew while we read it
            raise ResultsError(f"{path} is over the {_mib(limits.max_bytes)} limit")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ResultsError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
        if isinstance(data, dict) and isinstance(data.get("tests"), list):
            tests += len(data["tests"])
            if tests > limits.max_tests:
                raise ResultsError(
                    f"{path}: more than {limits.max_tests:,} tests in the published results; "
                    "raise --max-tests if that is real"
                )
        try:
            loaded.append(validate(data, use_jsonschema=use_jsonschema))
        except ResultsError as exc:
            raise ResultsError(f"{path}: {exc}") from None
    return loaded


def _mib(n: int) -> str:
    return f"{n / 2**20:.3g} MiB"


def force_section(results: Sequence[RunResults], key: str) -> dict[str, RunResults]:
    """Every test in one section ``key``, whatever the results say about themselves."""
    try:
        sticky.check_key(key)
    except ValueError as exc:
        raise UsageError(f"--section: {exc}") from None
    tagged = [replace(r, tests=tuple(replace(t, run=key) for t in r.tests)) for r in results]
    return {key: merge(tagged)}


def tier_key(tier: str) -> str:
    """The section key of a tier selection: ``"gpu,real"`` and ``"real,gpu"`` give ``real,gpu``."""
    from .tiers import parse_tiers

    return section_key(RunInfo(tiers=tuple(t.value for t in parse_tiers(tier))))


# ---------------------------------------------------------------------------------------------
# What a publish does


@dataclass(frozen=True)
class Counts:
    passed: int = 0  # flaky tests passed in the end: counted here too
    failed: int = 0
    errors: int = 0
    not_run: int = 0
    new_failures: int = 0


def counts(sections: Mapping[str, RunResults], base: Mapping[str, Digest]) -> Counts:
    """The action outputs' numbers; ``new_failures`` counts failures classified as new."""
    total: dict[str, int] = {}
    new = 0
    for key, r in sections.items():
        for outcome, n in r.counts().items():
            total[outcome] = total.get(outcome, 0) + n
        new += len(classify(r.tests, base.get(key)).new)
    return Counts(
        passed=total.get(Outcome.PASSED.value, 0) + total.get(Outcome.FLAKY.value, 0),
        failed=total.get(Outcome.FAILED.value, 0),
        errors=total.get(Outcome.ERROR.value, 0),
        not_run=total.get(Outcome.NOT_RUN.value, 0),
        new_failures=new,
    )


@dataclass(frozen=True)
class PublishOptions:
    """How to publish; the CLI (and the action) build it from their inputs."""

    comment: Literal["always", "on-failure", "off"] = "always"
    title: str = "mlcheck"
    section: str | None = None  # force every result into this section key
    base_digest: Path | None = None  # a digest file instead of the tracking issue
    author: str | None = None  # who the sticky comment/issue is by (default: from the token)
    artifact_name: str | None = "mlcheck-results"
    budget: int = SECTION_BUDGET
    settle: float = 1.0  # the sticky loop's re-read delay (see github.update_sticky_section)
    gpu_label: str = "mlcheck:gpu"
    tracking_title: str = TRACKING_TITLE
    path_prefix: str = ""  # the project's folder inside the repository, for links


@dataclass(frozen=True)
class PublishResult:
    """What a publish did, for the log and the action outputs."""

    counts: Counts
    sections: tuple[str, ...]
    verdict: int  # the tests' verdict: 0 all selected passed, 1 a failure or error
    comment_url: str | None = None
    issue_url: str | None = None
    notes: tuple[str, ...] = ()  # what was skipped and why (not failures)
    problems: tuple[str, ...] = ()  # reporting failures: each makes the exit code 3
    summary: str = ""  # the job summary (Markdown)
    annotations: tuple[str, ...] = ()  # workflow commands

    def exit_code(self, fail_on: Literal["failures", "never"] = "never") -> int:
        """0 published; 1 tests failed (``fail_on="failures"``); 3 reporting failed.

        A failing verdict wins over a reporting failure: the problem is printed either way,
        and nothing a publish does can turn a red run green.
        """
        if fail_on == "failures" and self.verdict:
            return EXIT_TESTS_FAILED
        return EXIT_REPORTING_FAILED if self.problems else EXIT_OK

    def outputs(self) -> dict[str, str]:
        """The action outputs (``GITHUB_OUTPUT`` names)."""
        return {
            "passed": str(self.counts.passed),
            "failed": str(self.counts.failed),
            "errors": str(self.counts.errors),
            "not-run": str(self.counts.not_run),
            "new-failures": str(self.counts.new_failures),
            "comment-url": self.comment_url or "",
            "issue-url": self.issue_url or "",
        }


def resolve_author(client: GitHubClient, token: str | None, author: str | None = None) -> str:
    """Who comments made with this token are by, without a request where the token says so.

    Installation tokens (``ghs_``: a workflow's ``GITHUB_TOKEN``) comment as
    ``github-actions[bot]``; for other tokens ``GET /user`` tells (once per client).
    """
    from .github import ACTIONS_BOT

    if author:
        return author
    if token and token.startswith("ghs_"):
        return ACTIONS_BOT
    return client.viewer_login()


class _Recorder:
    """Collects notes and reporting failures; GitHub errors become problems, never raises."""

    def __init__(self, redactor: Redactor) -> None:
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.redactor = redactor

    def note(self, text: str) -> None:
        self.notes.append(self.redactor.redact(text))

    def attempt(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except GitHubError as exc:
            self.problems.append(self.redactor.redact(f"{what} failed: {exc}"))
            return None


def publish(
    results: Sequence[RunResults],
    event: Event,
    client: GitHubClient | None,
    options: PublishOptions = PublishOptions(),
    *,
    redactor: Redactor = NO_SECRETS,
    token: str | None = None,
) -> PublishResult:
    """Report ``results`` for ``event``: PR comment section, tracking issue, summary, annotations.

    What goes where depends on the event (table in README.md). GitHub failures do not
    raise: they are collected in :attr:`PublishResult.problems` (exit code 3), and the summary
    and annotations are produced anyway. ``client`` None publishes nothing to GitHub.

    >>> from mlcheck.event import parse_event
    >>> from mlcheck.results import RunResults, RunInfo
    >>> out = publish([RunResults(RunInfo(), ())], parse_event("local", {}, {}), None)
    >>> out.sections, out.exit_code()
    (('fast',), 0)
    """
    if not results:
        raise ResultsError("nothing to publish: no results given")
    key = options.section or _known_section(event)
    sections = force_section(results, key) if key else merge_sections(results)
    sha = event.head_sha if event.name != "local" else ""
    ctx = render.RenderContext(
        repo=event.repository or None,
        server_url=event.server_url,
        sha=sha if _SHA.fullmatch(sha or "") else None,
        run_url=event.run_url,
        artifact_name=options.artifact_name,
        title=options.title,
        redactor=redactor,
        path_prefix=options.path_prefix,
    )
    rec = _Recorder(redactor)
    comment_url = issue_url = None
    base: dict[str, Digest] = {}
    verdict = max(r.exit_code() for r in sections.values()) if sections else 0

    if options.base_digest is not None:
        base = _read_digest_file(options.base_digest, rec)
    if client is None:
        if event.name != "local":
            rec.problems.append(
                "no GitHub token: pass `github-token` (or set GITHUB_TOKEN) to post the report"
            )
        else:
            rec.note("not running in GitHub Actions: nothing posted")
    elif event.name == "schedule":
        author = rec.attempt("finding the token's user", lambda: resolve_author(client, token))
        if author:
            issue_url, base = _nightly(client, event, sections, ctx, options, author, rec)
    else:
        author = rec.attempt(
            "finding the token's user", lambda: resolve_author(client, token, options.author)
        )
        pr = rec.attempt("finding the PR", lambda: _find_pr(event, client))
        read: tuple[Issue | None] | None = None  # the tracking issue, when it was read
        if author and options.base_digest is None:
            read, base = _read_base(client, event.repository, author, rec)
        ctx = replace(ctx, base=base)
        if pr is None:
            if event.name != "push":
                rec.note(f"no PR to comment on for this {event.name} event")
        elif options.comment == "off":
            rec.note("comment: off")
        elif event.read_only_token:
            rec.note(
                "this pull_request run has a read-only token (fork or Dependabot PR): the "
                "comment is posted by the `workflow_run` publisher (README.md, fork PRs)"
            )
        elif author:
            comment_url = _comment(client, event, pr, sections, ctx, options, author, rec)
        if author and _is_default_branch_push(event):
            issue_url = _write_base(client, event, sections, author, options, rec, read)

    ctx = replace(ctx, base=base)
    return PublishResult(
        counts=counts(sections, base),
        sections=tuple(sections),
        verdict=verdict,
        comment_url=comment_url,
        issue_url=issue_url,
        notes=tuple(rec.notes),
        problems=tuple(rec.problems),
        summary=render.render_summary(sections, ctx),
        annotations=tuple(render.render_annotations(sections, ctx)),
    )


def publish_refusal(
    event: Event,
    client: GitHubClient,
    reason: str,
    options: PublishOptions = PublishOptions(),
    *,
    redactor: Redactor = NO_SECRETS,
    token: str | None = None,
) -> str | None:
    """Say in the PR's section that its results were refused (else "scheduled" would stay).

    Only where the publisher knows the section (a dispatched run, ``--section``) and the PR;
    returns the comment URL, or None when there is nowhere to say it. ``reason`` is escaped.
    """
    from .github import update_sticky_section

    key = options.section or _known_section(event)
    pr = event.pr_number
    if not key or pr is None or event.read_only_token:
        return None
    text = (
        f"### ⚠️ Results not published · `{key}`\n\n"
        f"mlcheck refused this run's results: {inline(redactor.redact(reason), 600)}"
    )
    if event.run_url:
        text += f"\n\nSee [the workflow run]({event.run_url})."
    author = resolve_author(client, token, options.author)
    done = update_sticky_section(
        client, event.repository, pr, key, text, author=author, settle=options.settle
    )
    return done.comment.html_url


def _known_section(event: Event) -> str | None:
    """The section the publisher knows results belong to, whatever the results claim."""
    if event.name == "workflow_dispatch" and event.pr_number is not None:
        return tier_key(event.auto_tier)  # the scheduler's `tier` input
    if event.name == "workflow_run":
        return "fast"  # pull_request runs use `tier: auto` = fast; --section says otherwise
    return None


def _find_pr(event: Event, client: GitHubClient) -> int | None:
    from .event import find_pr_number

    if event.name == "pull_request" or event.pr_number is not None:
        return event.pr_number
    if event.name in ("push", "workflow_run"):
        return find_pr_number(event, client)
    return None


def _is_default_branch_push(event: Event) -> bool:
    return (
        event.name == "push"
        and event.default_branch is not None
        and event.ref == f"refs/heads/{event.default_branch}"
    )


def _read_digest_file(path: Path, rec: _Recorder) -> dict[str, Digest]:
    try:
        return digest_mod.read(path)
    except ResultsError as exc:
        rec.note(f"base digest not used: {exc}")
        return {}


# ---------------------------------------------------------------------------------------------
# The PR comment


def _comment(
    client: GitHubClient,
    event: Event,
    pr: int,
    sections: Mapping[str, RunResults],
    ctx: render.RenderContext,
    options: PublishOptions,
    author: str,
    rec: _Recorder,
) -> str | None:
    from .github import update_sticky_section

    warning = ""
    if event.name == "workflow_dispatch":
        pull = rec.attempt("reading the PR", lambda: client.get_pull(event.repository, pr))
        if pull is not None and pull.head_sha != event.head_sha:
            warning = head_moved_note(event.head_sha, pull.head_sha, options.gpu_label)
            rec.note(f"the PR head moved to {pull.head_sha[:7]} since {event.head_sha[:7]}")
    failing = any(r.failures() for r in sections.values())
    if options.comment == "on-failure" and not failing:
        mine = rec.attempt(
            "reading the PR comments", lambda: client.list_comments(event.repository, pr)
        )
        if not any(c.author == author and sticky.is_sticky(c.body) for c in mine or ()):
            rec.note("comment: on-failure, and nothing failed")
            return None
    url = None
    for key, r in sections.items():
        budget = options.budget - len(warning)
        text = render.render_section(r, ctx, key=key, budget=budget)
        if warning:
            text = f"{warning}\n\n{text}"
        done = rec.attempt(
            f"updating the PR comment (section {key})",
            lambda key=key, text=text: update_sticky_section(  # type: ignore[misc]
                client, event.repository, pr, key, text, author=author, settle=options.settle
            ),
        )
        if done is not None:
            url = done.comment.html_url
    return url


def code(text: str, limit: int = 80) -> str:
    """A short code span for a configured name (a label, a workflow file): no backticks inside."""
    return "`" + one_line(text, limit).replace("`", "'") + "`"


def head_moved_note(pinned: str, head: str, label: str) -> str:
    """The warning a section gets when the PR moved past the commit its run tested."""
    return (
        f"> [!WARNING]\n> These results are for `{pinned[:7]}`, the commit this run was "
        f"scheduled for: the PR head has since moved to `{head[:7]}`. Add the "
        f"{code(label)} label again to test the new head."
    )


# ---------------------------------------------------------------------------------------------
# The tracking issue: nightly report and base digests


def find_tracking_issue(client: GitHubClient, repo: str, author: str) -> Issue | None:
    """The tracking issue (newest first), found by marker and author (one request, one page)."""
    for issue in client.list_issues(repo, state="all", creator=author):
        if issue.author == author and issue.body.lstrip().startswith(TRACKING_MARKER):
            return issue
    return None


def issue_sections(body: str | None) -> dict[str, str]:
    """The sections of a tracking issue body (``{}`` for anything else)."""
    if not body or not body.lstrip().startswith(TRACKING_MARKER):
        return {}
    return sticky.parse_sections(body.lstrip()[len(TRACKING_MARKER) :].lstrip("\n"))


def issue_body(sections: Mapping[str, str]) -> str:
    """A tracking issue body: the marker, then sticky-style sections (each within the limit)."""
    fitted: dict[str, str] = {}
    for key in (k for k in sections if k != NIGHTLY_KEY):
        fitted[key] = sticky.fit_section(fitted, key, sections[key])
    if NIGHTLY_KEY in sections:
        room = {**fitted, "marker-room": TRACKING_MARKER}  # the marker line counts too
        fitted[NIGHTLY_KEY] = sticky.fit_section(room, NIGHTLY_KEY, sections[NIGHTLY_KEY])
    return f"{TRACKING_MARKER}\n{sticky.build_body(fitted)}"


def _parse_digests(text: str, rec: _Recorder, where: str) -> dict[str, Digest]:
    try:
        return digest_mod.parse(text)
    except ResultsError as exc:
        rec.note(f"{where} not used: {exc}")
        return {}


def _read_base(
    client: GitHubClient, repo: str, author: str, rec: _Recorder
) -> tuple[tuple[Issue | None] | None, dict[str, Digest]]:
    """The tracking issue (``(issue,)``, None if it could not be read) and its base digests."""
    try:
        issue = find_tracking_issue(client, repo, author)
    except GitHubError as exc:
        # No base only means "not compared": worth a note, not a failed publish.
        rec.note(f"base digest not read ({exc}); failures are not compared with the base")
        return None, {}
    if issue is None:
        rec.note("no base digest yet (the nightly or a push to the default branch writes it)")
        return (None,), {}
    digests = _parse_digests(issue_sections(issue.body).get(BASE_KEY, ""), rec, "base digest")
    return (issue,), digests


def base_digests(
    sections: Mapping[str, RunResults], sha: str | None, *, max_chars: int = BASE_DIGEST_CHARS
) -> dict[str, str]:
    """Digest lines, by key, that later runs of each tier compare with.

    A section covering several tiers (the nightly's ``fast,real,gpu``) also gives one digest
    per key in :data:`BASE_KEYS` that it covers, built as a run of only those tiers would have
    reported: the other tiers' tests counted as not run.
    """
    lines: dict[str, str] = {}
    for key, r in sections.items():
        lines[key] = digest_mod.encode(r.tests, section=key, sha=sha, max_chars=max_chars)
    for r in sections.values():
        tiers = set(r.run.tiers) | {t.tier for t in r.tests}
        for sub in BASE_KEYS:
            wanted = set(sub.split(","))
            if sub in lines or not wanted < tiers:
                continue
            tests = [t if t.tier in wanted else _not_run(t) for t in r.tests]
            lines[sub] = digest_mod.encode(tests, section=sub, sha=sha, max_chars=max_chars)
    return dict(sorted(lines.items()))


def _not_run(t: TestResult) -> TestResult:
    return replace(t, outcome=Outcome.NOT_RUN, attempts=(), traceback="")


_DIGEST_LINE = re.compile(r"<!-- mlcheck:digest v\d+ (\S+) [A-Za-z0-9+/=]* -->")


def _merge_base(old: str, new: Mapping[str, str]) -> str:
    """The base section with ``new`` digest lines replacing those of the same keys."""
    lines = {m.group(1): m.group(0) for m in _DIGEST_LINE.finditer(old)}
    lines.update(new)
    return "\n".join(lines[k] for k in sorted(lines))


def _upsert_tracking(
    client: GitHubClient,
    repo: str,
    issue: Issue | None,
    title: str,
    body: str,
    state: Literal["open", "closed"],
) -> Issue:
    if issue is None:
        created = client.create_issue(repo, title, body, TRACKING_LABELS)
        if state == "closed":
            created = client.update_issue(repo, created.number, state="closed")
        return created
    if (issue.title, issue.body, issue.state) == (title, body, state):
        return issue
    return client.update_issue(repo, issue.number, title=title, body=body, state=state)


def _write_base(
    client: GitHubClient,
    event: Event,
    sections: Mapping[str, RunResults],
    author: str,
    options: PublishOptions,
    rec: _Recorder,
    read: tuple[Issue | None] | None = None,
) -> str | None:
    """A push to the default branch: replace its tiers' base digests in the tracking issue.

    ``read`` is the issue as :func:`_read_base` found it moments ago (saves a request).
    """
    repo = event.repository

    def write() -> str:
        issue = read[0] if read is not None else find_tracking_issue(client, repo, author)
        old = issue_sections(issue.body if issue else None)
        new = base_digests(sections, event.head_sha or None)
        merged = {**old, BASE_KEY: _merge_base(old.get(BASE_KEY, ""), new)}
        merged.setdefault(ABOUT_KEY, _ABOUT)
        title = issue.title if issue else options.tracking_title
        # A push keeps the issue's state: only the nightly opens and closes it.
        state: Literal["open", "closed"] = "open" if issue and issue.state == "open" else "closed"
        return _upsert_tracking(client, repo, issue, title, issue_body(merged), state).html_url

    url: str | None = rec.attempt("writing the base digest to the tracking issue", write)
    return url


def _nightly(
    client: GitHubClient,
    event: Event,
    sections: Mapping[str, RunResults],
    ctx: render.RenderContext,
    options: PublishOptions,
    author: str,
    rec: _Recorder,
) -> tuple[str | None, dict[str, Digest]]:
    """Keep the tracking issue up to date; returns its URL and the previous nightly's digests."""
    repo = event.repository
    try:
        issue = find_tracking_issue(client, repo, author)
    except GitHubError as exc:
        rec.problems.append(rec.redactor.redact(f"finding the tracking issue failed: {exc}"))
        return None, {}
    old = issue_sections(issue.body if issue else None)
    previous = _parse_digests(old.get(NIGHTLY_KEY, ""), rec, "previous nightly digest")
    sha = event.head_sha or None
    base = _merge_base(old.get(BASE_KEY, ""), base_digests(sections, sha))
    c = counts(sections, previous)
    failing = c.failed + c.errors
    prev_sha = next((d.sha for d in previous.values() if d.sha), None)
    intro = _nightly_intro(event, sha, prev_sha, bool(previous), c)
    budget = (
        render.COMMENT_BUDGET
        - len(base)
        - len(intro)
        - len(_ABOUT)
        - len(TRACKING_MARKER)
        - 400  # section markers
    )
    report = render.render_report(sections, replace(ctx, base=previous), budget=budget)
    body = issue_body(
        {**old, NIGHTLY_KEY: f"{intro}\n\n{report}", ABOUT_KEY: _ABOUT, BASE_KEY: base}
    )
    if failing:
        new = f", {c.new_failures:,} new" if previous else ""
        title = f"{options.tracking_title}: ❌ {failing:,} failing{new}"
    else:
        title = f"{options.tracking_title}: ✅ all passing"
    state: Literal["open", "closed"] = "open" if failing else "closed"
    done = rec.attempt(
        "updating the tracking issue",
        lambda: _upsert_tracking(client, repo, issue, title, body, state),
    )
    return (done.html_url if done is not None else None), previous


def _nightly_intro(
    event: Event, sha: str | None, prev_sha: str | None, compared: bool, c: Counts
) -> str:
    at = f" of `{sha[:7]}`" if sha and _SHA.fullmatch(sha) else ""
    run = f" · [workflow run]({event.run_url})" if event.run_url else ""
    if not compared:
        since = "First nightly report: nothing to compare with yet."
    else:
        prev = f" (`{prev_sha[:7]}`)" if prev_sha and _SHA.fullmatch(prev_sha) else ""
        since = (
            f"**{c.new_failures:,} new since the last nightly run{prev}**; "
            "*Already failing on base* below means already failing in the last nightly run."
        )
    return f"## Nightly run{at}{run}\n\n{since}"


# ---------------------------------------------------------------------------------------------
# Writing outputs at the edge


def write_github_output(path: Path, values: Mapping[str, str]) -> None:
    """Append ``name=value`` lines to ``GITHUB_OUTPUT`` (values are single-line by design)."""
    with path.open("a", encoding="utf-8") as fh:
        for name, value in values.items():
            fh.write(f"{name}={value.replace(chr(10), ' ').replace(chr(13), ' ')}\n")


def write_step_summary(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text.rstrip("\n") + "\n")


__all__ = [
    "MAX_RESULTS_BYTES",
    "MAX_TESTS",
    "TRACKING_MARKER",
    "Counts",
    "Limits",
    "PublishOptions",
    "PublishResult",
    "base_digests",
    "counts",
    "find_results_files",
    "find_tracking_issue",
    "force_section",
    "head_moved_note",
    "issue_body",
    "issue_sections",
    "load_untrusted",
    "publish",
    "publish_refusal",
    "resolve_author",
    "tier_key",
    "validate",
    "write_github_output",
    "write_step_summary",
]
