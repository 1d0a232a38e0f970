"""One exception hierarchy. Messages say what happened and the next step.

The CLI maps :class:`MlcheckError` to ``exit_code`` and prints ``str(error)`` on one line, with
no traceback: these are user errors, not bugs.

Each error is also the builtin it is, so code that knows nothing of mlcheck catches it as usual:
a bad value is a ``ValueError`` (:class:`UsageError`, :class:`ManifestError`...), a wrong type a
``TypeError`` (:class:`WrongType`), a missing file a ``FileNotFoundError`` (:class:`MissingFile`,
:class:`ModelNotCached`, :class:`ResultsMissing`), a failed lookup a ``LookupError``
(:class:`UnknownName`, :class:`GitHubNotFound`), what the machine lacks a ``RuntimeError``
(:class:`EnvironmentProblem`, :class:`AcceleratorMissing`), a check's finding an
``AssertionError`` (:class:`CheckFailed`, which pytest reports as a failure).

>>> try:
...     raise ManifestError("`needs` = 'all' is not valid")
... except ValueError as exc:
...     print(type(exc).__name__, isinstance(exc, MlcheckError))
ManifestError True
"""

from __future__ import annotations

from collections.abc import Sequence


class MlcheckError(Exception):
    """Base of every error mlcheck raises on purpose."""

    exit_code: int = 2


class UsageError(MlcheckError, ValueError):
    """Bad command-line input, configuration or argument (exit code 2); a ``ValueError``."""


class WrongType(UsageError, TypeError):
    """An argument of a type mlcheck cannot use; a ``TypeError`` too."""


class MissingFile(UsageError, FileNotFoundError):
    """A file or folder the command was given, or needs, does not exist; a
    ``FileNotFoundError`` too."""


class UnknownName(UsageError, LookupError):
    """A name (a model id in the lock, a task) is not among the known ones; a ``LookupError``
    too (not ``KeyError``, whose ``str()`` would quote the message)."""


class NothingToCheck(UsageError):
    """A check was given a model or inputs it cannot judge (``assert_train_mode`` on a model
    without dropout, ``assert_initial_loss`` on a regression head): a usage error, never a
    silent pass. A ``ValueError``, like the checks' other argument errors."""


class EnvironmentProblem(MlcheckError, RuntimeError):
    """The machine lacks something the command needs (exit code 2); a ``RuntimeError``."""


class NoTestsCollected(EnvironmentProblem):
    """pytest found no tests under the given paths."""


class ManifestError(UsageError):
    """`[tool.mlcheck]` / `mlcheck.toml` is invalid; the message names the key and the fix."""


class RequirementMissing(MlcheckError):
    """A selected test needs something this machine does not have (weights, accelerator)."""


class ModelNotCached(RequirementMissing, FileNotFoundError):
    """A model (at a revision) is not in the local cache; a ``FileNotFoundError`` too (as
    transformers' own "not found locally" is an ``OSError``).

    >>> print(ModelNotCached("org/name", "abc123"))  # doctest: +ELLIPSIS
    'org/name'@abc123 is not in the cache; run `mlcheck cache warm` ...
    """

    def __init__(
        self, model_id: str, revision: str | None = None, detail: str = "", *, fix: str = ""
    ) -> None:
        self.model_id = model_id
        self.revision = revision
        # The error the hub lookup raised, kept out of the chain: its advice ("pass
        # local_files_only=False") is wrong for a test. The plugin chains it back under -v.
        self.hub_cause: BaseException | None = None
        super().__init__(self._text(detail, fix))

    def _text(self, detail: str, fix: str) -> str:
        extra = f" ({detail})" if detail else ""
        fix = fix or (
            f"run `mlcheck cache warm` (or `mlcheck cache add PATH --model {self.model_id} "
            f"--revision {self.revision or 'main'}` for a local folder)"
        )
        return f"'{self.model_id}'{self._at()} is not in the cache{extra}; {fix}"

    def _at(self) -> str:
        return f"@{self.revision}" if self.revision else ""


class ModelNotDeclared(ModelNotCached):
    """Not in the cache, and the manifest does not declare it: ``mlcheck add`` declares, locks
    and fetches it in one step.

    >>> print(ModelNotDeclared("gpt2", need="config"))  # doctest: +ELLIPSIS
    'gpt2' is not in the cache and not declared ...; run `mlcheck add gpt2 --needs config`
    """

    def __init__(self, model_id: str, *, need: str, revision: str | None = None) -> None:
        self.need = need
        super().__init__(model_id, revision)

    def _text(self, detail: str, fix: str) -> str:
        pinned = f" --revision {self.revision}" if self.revision not in (None, "main") else ""
        return (
            f"'{self.model_id}' is not in the cache and not declared in [tool.mlcheck.models]; "
            f"run `mlcheck add {self.model_id} --needs {self.need}{pinned}`"
        )


class ModelNotLocked(ModelNotCached):
    """Declared in the manifest but not pinned in ``mlcheck.lock``, so nothing says which files
    to fetch: ``mlcheck lock`` pins them.

    >>> print(ModelNotLocked("gpt2", "main"))
    'gpt2'@main is declared but not in mlcheck.lock; run `mlcheck lock`, then `mlcheck cache warm`
    """

    def _text(self, detail: str, fix: str) -> str:
        return (
            f"'{self.model_id}'{self._at()} is declared but not in mlcheck.lock; "
            "run `mlcheck lock`, then `mlcheck cache warm`"
        )


class LocalModelMissing(ModelNotCached):
    """A model that ``mlcheck cache add`` put into the cache is not in this machine's cache: no
    hub has it, so ``cache warm`` cannot fetch it; ``cache add`` from its folder (or this
    machine given the cache that holds it) fixes it.

    >>> missing = LocalModelMissing("org/name", "main", "c" * 40, ["config.json: missing"])
    >>> print(missing)  # doctest: +ELLIPSIS
    'org/name'@main (commit cccccccccccc, added with `mlcheck cache add`) is not in the cache: ...
    """

    def __init__(self, model_id: str, revision: str, commit: str, problems: Sequence[str]) -> None:
        self.commit = commit
        self.problems = tuple(problems)
        super().__init__(model_id, revision)

    def _text(self, detail: str, fix: str) -> str:
        shown = "; ".join(self.problems[:3])
        more = f" and {len(self.problems) - 3} more" if len(self.problems) > 3 else ""
        return (
            f"'{self.model_id}'{self._at()} (commit {self.commit[:12]}, added with `mlcheck "
            f"cache add`) is not in the cache: {shown}{more}; no hub has it, so `mlcheck cache "
            f"warm` cannot fetch it: run `{cache_add_command(self.model_id, self.revision)}` "
            "with FOLDER holding its files, or give this machine the cache it was added to "
            '(HF_HUB_CACHE; README: "Offline: give the container a cache")'
        )


def cache_add_command(model_id: str, revision: str | None) -> str:
    """The command that puts a model's local folder into the cache.

    >>> cache_add_command("org/name", "main")
    'mlcheck cache add FOLDER --model org/name --revision main'
    """
    return f"mlcheck cache add FOLDER --model {model_id} --revision {revision or 'main'}"


class RealWeightsInFastTest(UsageError):
    """``models.real`` (or a test's own load of a declared model's weights) in a test whose
    tier is fast: CI's fast job fetches no weights, so the test would pass where the weights
    happen to be cached and fail in CI. The marker fixes it.

    >>> print(RealWeightsInFastTest("org/name", "tests/test_a.py::test_b"))  # doctest: +ELLIPSIS
    models.real('org/name') in tests/test_a.py::test_b, a fast-tier test: ...
    """

    def __init__(self, model_id: str, nodeid: str, what: str | None = None) -> None:
        self.model_id = model_id
        what = what or f"models.real({model_id!r})"
        super().__init__(
            f"{what} in {nodeid}, a fast-tier test: the fast tier has no "
            "weights (CI's fast job fetches none, so this fails there even where the weights "
            f'are cached here); mark the test `@pytest.mark.real_model("{model_id}")` to run it '
            "in the real tier (`mlcheck run --tier real`), or use models.random / models.config"
        )


def hide_frame(excinfo: object) -> bool:
    """For ``__tracebackhide__`` in mlcheck's own frames: pytest leaves them out of a failure
    when the error is one of ours (a user's next step, not a bug), and shows them otherwise.

    >>> hide_frame(type("ExcInfo", (), {"value": UsageError("x")})())
    True
    """
    return isinstance(getattr(excinfo, "value", None), MlcheckError)


class AcceleratorMissing(RequirementMissing, RuntimeError):
    """The test needs an accelerator (CUDA/ROCm, XPU, MPS) and torch reports none, or too small;
    a ``RuntimeError``, as torch's own "no CUDA GPUs are available"."""


class UnsafeModel(MlcheckError, ValueError):
    """Loading would run pickle or remote code that the manifest does not allow; a
    ``ValueError``, as transformers' own refusal without ``trust_remote_code``."""


class ResultsError(MlcheckError, ValueError):
    """A results file (or digest) is malformed, or of an unknown schema version; a
    ``ValueError``."""


class ResultsMissing(ResultsError, FileNotFoundError):
    """No results file (or base digest) where one was named; a ``FileNotFoundError`` too."""


class CacheCorrupted(ModelNotCached):
    """A cached model file does not match the lock (truncated, corrupted); it is never loaded."""


class HubError(EnvironmentProblem):
    """The hub (``HF_ENDPOINT``) is unreachable or refused a request (exit code 2)."""


class NotPlainFile(MlcheckError, OSError):
    """A file that untrusted code could have written is a link, a FIFO, a device, a folder or
    too large: it was not read (:mod:`mlcheck.results.untrusted_files`); an ``OSError``."""


class TooLarge(NotPlainFile):
    """A regular file over the size cap (``size`` bytes, or more when it grew while read)."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class UnmutatedRunFailed(MlcheckError, RuntimeError):
    """``mlcheck mutate``: the suite fails (or collects nothing) without any mutant, and
    mutation needs a green run (exit code 2); a ``RuntimeError``."""


class CheckFailed(MlcheckError, AssertionError):
    """A check (``mlcheck.checks``, ``mlcheck.serving``) found the model or server wrong.

    An ``AssertionError``, so pytest reports it as a test failure (exit code 1, as pytest's).
    The message says what was expected, what happened, how big the difference is, and the seed
    to reproduce it.

    >>> print(CheckFailed("assert_labels", "id2label[2] is wrong", expected="entailment",
    ...                   actual="neutral", seed=0))
    assert_labels: id2label[2] is wrong
      expected:   entailment
      actual:     neutral
      seed:       0 (reproduce with seed=0 or MLCHECK_SEED=0)
    """

    exit_code = 1

    def __init__(
        self,
        check: str,
        problem: str,
        *,
        expected: object = None,
        actual: object = None,
        difference: object = None,
        seed: int | None = None,
        details: str = "",
    ) -> None:
        self.check = check
        self.problem = problem
        self.expected = expected
        self.actual = actual
        self.difference = difference
        self.seed = seed
        self.details = details
        lines = [f"{check}: {problem}"]
        for name, value in (("expected", expected), ("actual", actual), ("difference", difference)):
            if value is not None:
                lines.append(f"  {name + ':':<11} {value}")
        if seed is not None:
            lines.append(
                f"  {'seed:':<11} {seed} (reproduce with seed={seed} or MLCHECK_SEED={seed})"
            )
        if details:
            lines.extend("  " + line for line in details.rstrip().splitlines())
        super().__init__("\n".join(lines))

    def explained(
        self, details: str, *, check: str | None = None, difference: object = None
    ) -> CheckFailed:
        """The same failure with ``details`` (the hint a calling check knows), and optionally
        its own name and a fuller difference; raise it ``from None``."""
        return CheckFailed(
            self.check if check is None else check,
            self.problem,
            expected=self.expected,
            actual=self.actual,
            difference=self.difference if difference is None else difference,
            seed=self.seed,
            details=details,
        )


def listing(items: Sequence[str], limit: int = 10) -> str:
    """Several things a check found, as a :class:`CheckFailed` field shows them: one item
    inline; more as an indented list under the field's line, the first ``limit`` of them.

    >>> listing(["a"]), listing(["a", "b", "c"], limit=2)
    ('a', '\\n    - a\\n    - b\\n    - ... and 1 more')
    """
    shown = [
        *items[:limit],
        *([f"... and {len(items) - limit} more"] if len(items) > limit else []),
    ]
    if len(shown) == 1:
        return shown[0]
    return "".join(f"\n    - {item}" for item in shown)


# --- GitHub (mlcheck/github/) -----------------------------------------------------------------


class GitHubError(MlcheckError):
    """A GitHub API call failed; the message names the call, GitHub's answer and the fix.

    Reporting problems never change a test verdict: the CLI reports them after the results
    files are written.
    """

    def __init__(
        self, message: str, *, status: int | None = None, method: str = "", path: str = ""
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        super().__init__(message)


class GitHubAuthError(GitHubError, PermissionError):
    """401: the token is missing, expired or wrong; a ``PermissionError`` too."""


class GitHubPermissionError(GitHubError, PermissionError):
    """403 (not a rate limit): the token lacks a permission; the message says which to add."""


class GitHubNotFound(GitHubError, LookupError):
    """404: the repository, PR, comment or workflow does not exist (or the token cannot see it);
    a ``LookupError`` too."""


class GitHubValidationFailed(GitHubError, ValueError):
    """422 (or 400): GitHub refused the request's content; a ``ValueError`` too."""


class GitHubRateLimited(GitHubError, RuntimeError):
    """A rate limit asks for a longer wait than the client is allowed (``max_wait``)."""


class GitHubUnavailable(GitHubError, ConnectionError):
    """5xx answers, timeouts or dropped connections persisted through every retry; a
    ``ConnectionError`` too."""


class StickyCommentConflict(GitHubError, RuntimeError):
    """Concurrent writers kept overwriting the sticky comment; nothing converged."""


# --- Golden values (mlcheck/golden/) ------------------------------------------------------------


class GoldenFileError(UsageError):
    """A golden file (``__golden__/*.json``) is malformed; the message names the file and entry."""


class GoldenMismatch(CheckFailed):
    """``golden.check``: the value differs from the golden value, or none is recorded for this
    machine's hardware key (a failure, never a skip)."""


# --- Serving (mlcheck/serving.py) ---------------------------------------------------------------


class ServerFailed(CheckFailed):
    """The server exited before it was healthy, or did not become healthy in time."""


class ServeRequestFailed(MlcheckError):
    """``assert_serves``' POST got no answer, an HTTP error or no JSON; reported as the
    :class:`CheckFailed` of the check that sent it, never raised to a test."""


class NothingToFetch(MlcheckError, LookupError):
    """``mlcheck nightly fetch`` found nothing to fetch, for the reason the message gives: not
    an error (exit code 0; selection then runs every test and says why)."""

    exit_code = 0


class ArtifactRefused(MlcheckError, ValueError):
    """A nightly's artifact is not what a nightly uploads (an unsafe entry, over a limit):
    nothing of it was written (exit code 2)."""
