"""One hierarchy: every error mlcheck defines is an ``MlcheckError`` and the builtin it is.

So a user's ``except ValueError`` (or ``FileNotFoundError``, ``LookupError``...) catches
mlcheck's errors as it catches any library's, and ``except MlcheckError`` catches all of them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import mlcheck
from mlcheck import errors
from mlcheck.errors import MlcheckError

# Each error and the builtin it also is. A new error class must be added here (the test below
# fails until it is), which is the moment to decide what it is.
BUILTIN_OF: dict[type[MlcheckError], type[Exception]] = {
    errors.UsageError: ValueError,
    errors.WrongType: TypeError,
    errors.MissingFile: FileNotFoundError,
    errors.UnknownName: LookupError,
    errors.NothingToCheck: ValueError,
    errors.ManifestError: ValueError,
    errors.GoldenFileError: ValueError,
    errors.EnvironmentProblem: RuntimeError,
    errors.NoTestsCollected: RuntimeError,
    errors.HubError: RuntimeError,
    errors.ModelNotCached: FileNotFoundError,
    errors.CacheCorrupted: FileNotFoundError,
    errors.ModelNotDeclared: FileNotFoundError,
    errors.ModelNotLocked: FileNotFoundError,
    errors.LocalModelMissing: FileNotFoundError,
    errors.RealWeightsInFastTest: ValueError,
    errors.AcceleratorMissing: RuntimeError,
    errors.UnsafeModel: ValueError,
    errors.ResultsError: ValueError,
    errors.ResultsMissing: FileNotFoundError,
    errors.CheckFailed: AssertionError,
    errors.GoldenMismatch: AssertionError,
    errors.ServerFailed: AssertionError,
    errors.GitHubAuthError: PermissionError,
    errors.GitHubPermissionError: PermissionError,
    errors.GitHubNotFound: LookupError,
    errors.GitHubValidationFailed: ValueError,
    errors.GitHubRateLimited: RuntimeError,
    errors.GitHubUnavailable: ConnectionError,
    errors.StickyCommentConflict: RuntimeError,
    errors.NothingToFetch: LookupError,
    errors.ArtifactRefused: ValueError,
    errors.NotPlainFile: OSError,
    errors.TooLarge: OSError,
    errors.UnmutatedRunFailed: RuntimeError,
}
# Categories: each concrete error under them says which builtin it is.
ABSTRACT = {MlcheckError, errors.RequirementMissing, errors.GitHubError, errors.ServeRequestFailed}


def _instance(cls: type[MlcheckError]) -> MlcheckError:
    if issubclass(cls, errors.ModelNotDeclared):
        return cls("org/name", need="config")
    if issubclass(cls, errors.LocalModelMissing):
        return cls("org/name", "main", "c" * 40, ["config.json: missing"])
    if issubclass(cls, errors.RealWeightsInFastTest):
        return cls("org/name", "tests/test_a.py::test_b")
    if issubclass(cls, errors.ModelNotCached):
        return cls("org/name", "abc123")
    if issubclass(cls, errors.CheckFailed):
        return cls("assert_x", "it is wrong", expected=1, actual=2)
    if issubclass(cls, errors.TooLarge):
        return cls("something is wrong; do this", 1)
    if issubclass(cls, errors.GitHubError):
        return cls("GET /repos/o/r: 404 Not Found", status=404, method="GET", path="/repos/o/r")
    return cls("something is wrong; do this")


def _defined_errors() -> dict[str, type[BaseException]]:
    """Every exception class defined in any mlcheck module, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(mlcheck.__path__, "mlcheck."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("mlcheck"):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


@pytest.mark.parametrize("cls", list(BUILTIN_OF), ids=lambda c: c.__name__)
def test_each_error_is_mlcheck_error_and_its_builtin(cls: type[MlcheckError]) -> None:
    error = _instance(cls)
    builtin = BUILTIN_OF[cls]
    assert isinstance(error, MlcheckError)
    assert isinstance(error, builtin)
    with pytest.raises(builtin) as caught:  # caught by the builtin's own except clause
        raise error
    assert caught.value is error
    # str() is the message, unchanged: KeyError's would be quoted, OSError's could add [Errno]
    assert str(error) == error.args[0] and str(error)


def test_every_error_class_lives_in_errors_and_derives_from_mlcheck_error() -> None:
    defined = _defined_errors()
    assert defined, "no exception classes found: the walk is broken"
    outside = sorted(name for name, cls in defined.items() if cls.__module__ != "mlcheck.errors")
    assert not outside, f"exception classes defined outside mlcheck/errors.py: {outside}"
    rogue = sorted(name for name, cls in defined.items() if not issubclass(cls, MlcheckError))
    assert not rogue, f"exception classes not under MlcheckError: {rogue}"
    unclassified = sorted(
        name for name, cls in defined.items() if cls not in BUILTIN_OF and cls not in ABSTRACT
    )
    assert not unclassified, f"add these to BUILTIN_OF with the builtin they are: {unclassified}"


def test_public_modules_reexport_the_errors_they_raise() -> None:
    from mlcheck import serving

    assert serving.ServerFailed is errors.ServerFailed
    assert "ServerFailed" in serving.__all__


def test_except_value_error_catches_a_bad_manifest_value(tmp_path: Path) -> None:
    from mlcheck.project.manifest import load_manifest

    (tmp_path / "pyproject.toml").write_text(
        '[tool.mlcheck.models]\n"org/name" = { revision = "main", needs = "everything" }\n'
    )
    try:
        load_manifest(tmp_path)
    except ValueError as exc:
        caught: ValueError = exc
    else:
        pytest.fail("a bad `needs` value was accepted")
    assert isinstance(caught, errors.ManifestError)
    assert "`needs` = 'everything' is not valid" in str(caught)


def test_except_file_not_found_catches_missing_results(tmp_path: Path) -> None:
    from mlcheck.results.schema import read

    with pytest.raises(FileNotFoundError, match="no results at"):
        read(tmp_path / "nothing-here")


def test_except_lookup_error_catches_a_model_missing_from_the_lock(tmp_path: Path) -> None:
    from mlcheck.project.lock import Lock

    with pytest.raises(LookupError, match=r"not in mlcheck\.lock: org/unknown"):
        Lock(models={}).selected(["org/unknown"])


def test_check_failed_keeps_pytests_exit_code_and_usage_errors_theirs() -> None:
    assert errors.CheckFailed.exit_code == 1
    assert errors.UsageError.exit_code == errors.ResultsError.exit_code == 2
