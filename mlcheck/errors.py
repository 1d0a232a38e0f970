"""One exception hierarchy. Messages say what happened and the next step.

The CLI maps :class:`MlcheckError` to ``exit_code`` and prints ``str(error)`` on one line, with
no traceback: these are user errors, not bugs.
"""

from __future__ import annotations

from collections.abc import Sequence


class MlcheckError(Exception):
    """Base of every error mlcheck raises on purpose."""

    exit_code: int = 2


class UsageError(MlcheckError):
    """Bad command-line input or configuration (exit code 2)."""


class NothingToCheck(UsageError, ValueError):
    """A check was given a model or inputs it cannot judge (``assert_train_mode`` on a model
    without dropout, ``assert_initial_loss`` on a regression head): a usage error, never a
    silent pass. A ``ValueError`` too, like the checks' other argument errors."""


class EnvironmentProblem(MlcheckError):
    """The machine lacks something the command needs (exit code 2)."""


class NoTestsCollected(EnvironmentProblem):
    """pytest found no tests under the given paths."""


class ManifestError(UsageError):
    """`[tool.mlcheck]` / `mlcheck.toml` is invalid; the message names the key and the fix."""


class RequirementMissing(MlcheckError):
    """A selected test needs something this machine does not have (weights, accelerator)."""


class ModelNotCached(RequirementMissing):
    """A model (at a revision) is not in the local cache.

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


def hide_frame(excinfo: object) -> bool:
    """For ``__tracebackhide__`` in mlcheck's own frames: pytest leaves them out of a failure
    when the error is one of ours (a user's next step, not a bug), and shows them otherwise.

    >>> hide_frame(type("ExcInfo", (), {"value": UsageError("x")})())
    True
    """
    return isinstance(getattr(excinfo, "value", None), MlcheckError)


class AcceleratorMissing(RequirementMissing):
    """The test needs an accelerator (CUDA/ROCm, XPU, MPS) and torch reports none, or too small."""


class UnsafeModel(MlcheckError):
    """Loading would run pickle or remote code that the manifest does not allow."""


class ResultsError(MlcheckError):
    """A results file is missing, malformed, or of an unknown schema version."""


class CacheCorrupted(ModelNotCached):
    """A cached model file does not match the lock (truncated, corrupted); it is never loaded."""


class HubError(EnvironmentProblem):
    """The hub (``HF_ENDPOINT``) is unreachable or refused a request (exit code 2)."""


class CheckFailed(AssertionError):
    """A check (``mlcheck.checks``, ``mlcheck.serving``) found the model or server wrong.

    An ``AssertionError``, so pytest reports it as a test failure. The message says what was
    expected, what happened, how big the difference is, and the seed to reproduce it.

    >>> print(CheckFailed("assert_labels", "id2label[2] is wrong", expected="entailment",
    ...                   actual="neutral", seed=0))
    assert_labels: id2label[2] is wrong
      expected:   entailment
      actual:     neutral
      seed:       0 (reproduce with seed=0 or MLCHECK_SEED=0)
    """

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


class GitHubAuthError(GitHubError):
    """401: the token is missing, expired or wrong."""


class GitHubPermissionError(GitHubError):
    """403 (not a rate limit): the token lacks a permission; the message says which to add."""


class GitHubNotFound(GitHubError):
    """404: the repository, PR, comment or workflow does not exist (or the token cannot see it)."""


class GitHubValidationFailed(GitHubError):
    """422 (or 400): GitHub refused the request's content."""


class GitHubRateLimited(GitHubError):
    """A rate limit asks for a longer wait than the client is allowed (``max_wait``)."""


class GitHubUnavailable(GitHubError):
    """5xx answers, timeouts or dropped connections persisted through every retry."""


class StickyCommentConflict(GitHubError):
    """Concurrent writers kept overwriting the sticky comment; nothing converged."""


# --- Golden values (mlcheck/golden/) ------------------------------------------------------------


class GoldenFileError(UsageError):
    """A golden file (``__golden__/*.json``) is malformed; the message names the file and entry."""


class GoldenMismatch(CheckFailed):
    """``golden.check``: the value differs from the golden value, or none is recorded for this
    machine's hardware key (a failure, never a skip)."""
