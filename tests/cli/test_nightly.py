"""`mlcheck nightly fetch` against the local GitHub server (OpenAPI-checked): the last good
nightly's file map, safely, or nothing and a reason; the map then drives a real selection."""

from __future__ import annotations

import io
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from github_server import Fault, Faults, GitHubServer

from mlcheck.cli import main
from mlcheck.plugin.selection import FileMap, select_in_repo
from mlcheck.results.schema import RunInfo, RunResults, write

NIGHTLY = "mlcheck-nightly.yml"
ARTIFACT = "mlcheck-results-nightly"
OLD, GOOD, RED = "1" * 40, "2" * 40, "3" * 40


@pytest.fixture
def gh(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        monkeypatch.setenv("GITHUB_API_URL", server.url)
        monkeypatch.setenv("GITHUB_TOKEN", server.token)
        monkeypatch.setenv("GITHUB_REPOSITORY", server.state.full_name)
        yield server
        server.assert_clean()  # every request and answer matched GitHub's description


def _zip(entries: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _map(commit: str, tests: dict[str, frozenset[str]] | None = None) -> bytes:
    return (
        FileMap(commit, None, tests or {"tests/test_a.py::test_a": frozenset()}).to_json().encode()
    )


def _results(tmp_path: Path) -> bytes:
    return write(RunResults(RunInfo(tiers=("real", "gpu")), ()), tmp_path / "r").read_bytes()


def _fetch(out: Path, *extra: str) -> int:
    return main(["nightly", "fetch", "--out", str(out), "--retries", "1", *extra])


def test_fetches_the_newest_successful_nightlys_map_and_it_drives_selection(
    gh: GitHubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a project with two modules; the nightly recorded which test ran which file at `base`
    root = tmp_path / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "a.py").write_text("def a():\n    return 1\n")
    (root / "b.py").write_text("def b():\n    return 2\n")
    (root / "tests" / "test_ab.py").write_text("def test_a(): ...\ndef test_b(): ...\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    base = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    base_sha = base.stdout.strip()
    tests = {
        "tests/test_ab.py::test_a": frozenset({"a.py"}),
        "tests/test_ab.py::test_b": frozenset({"b.py"}),
    }
    state = gh.state
    older = state.add_run(head_sha=OLD)
    state.add_artifact(older, ARTIFACT, _zip({"file-map.json": _map(OLD)}))
    good = state.add_run(head_sha=base_sha)
    state.add_artifact(good, "other", _zip({"file-map.json": _map(OLD)}))
    state.add_artifact(
        good,
        ARTIFACT,
        _zip(
            {
                "file-map.json": _map(base_sha, tests),
                "results.json": _results(tmp_path),
                "junit.xml": b"<testsuites/>",  # not wanted: never written
            }
        ),
    )
    red = state.add_run(head_sha=RED, conclusion="failure")  # newer, but red: skipped
    state.add_artifact(red, ARTIFACT, _zip({"file-map.json": _map(RED)}))
    state.add_run(head_sha=RED, conclusion=None)  # still running: skipped
    state.add_run(head_sha=RED, branch="feature")  # another branch: skipped
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("stale")  # an older fetch's file never survives

    assert _fetch(out) == 0
    said = capsys.readouterr().out
    assert f"nightly run #2 of {base_sha[:7]}" in said and gh.token not in said
    assert sorted(p.name for p in out.iterdir()) == ["file-map.json", "results.json"]
    assert FileMap.read(out / "file-map.json").commit == base_sha
    assert state.downloads == [{"path": state.downloads[0]["path"], "auth": False}]  # no token

    # the PR changes b() only: the downloaded map selects test_b, and leaves test_a out
    (root / "b.py").write_text("def b():\n    return 3\n")
    collected = {nodeid: ("tests/test_ab.py", ()) for nodeid in tests}
    selection = select_in_repo(root, base_sha, out / "file-map.json", collected)
    assert not selection.everything, selection.why
    assert [n for n in tests if selection.keeps(n)] == ["tests/test_ab.py::test_b"]


def test_nothing_to_fetch_writes_nothing_and_says_why(
    gh: GitHubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    # no nightly workflow at all (GitHub answers 404 for an unknown workflow file)
    assert _fetch(out) == 0
    assert "no workflow 'mlcheck-nightly.yml'" in capsys.readouterr().out
    # only a failed run
    red = gh.state.add_run(head_sha=RED, conclusion="failure")
    gh.state.add_artifact(red, ARTIFACT, _zip({"file-map.json": _map(RED)}))
    assert _fetch(out) == 0
    assert "no successful run of mlcheck-nightly.yml on main" in capsys.readouterr().out
    # a successful run whose artifact expired
    good = gh.state.add_run(head_sha=GOOD)
    gh.state.add_artifact(good, ARTIFACT, _zip({"file-map.json": _map(GOOD)}), expired=True)
    assert _fetch(out) == 0
    assert "has expired" in capsys.readouterr().out
    # GitHub failing (a 500 on every request, one attempt each)
    gh.state.add_artifact(gh.state.add_run(head_sha=GOOD), ARTIFACT, _zip({}))
    gh.faults = Faults(rate=1.0, kinds=(Fault.error(500),))
    assert _fetch(out) == 0  # the repository's default branch: GET /repos/{owner}/{repo}
    assert "HTTP 500 'Server Error'" in capsys.readouterr().out
    assert _fetch(out, "--branch", "main") == 0  # the runs listing
    said = capsys.readouterr().out
    assert "GitHub did not answer" in said and "selection by change then runs every test" in said
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "entries, links, why",
    [
        ({"../file-map.json": _map(GOOD)}, (), "unsafe entry name '../file-map.json'"),
        ({"/etc/cron.d/x": b"x", "file-map.json": _map(GOOD)}, (), "unsafe entry name"),
        ({}, ("file-map.json",), "a link, 'file-map.json'"),
        ({"file-map.json": _map(GOOD) + b" " * 2_000_000}, (), "over the 1 MiB limit"),
        ({"file-map.json": b'{"version": 1}'}, (), "is not a file map"),
        ({"results.json": b'{"schema_version": 1, "x": 1}'}, (), "results.json in the artifact"),
    ],
    ids=["dotdot", "absolute", "link", "oversize", "not-a-map", "bad-results"],
)
def test_an_unsafe_or_invalid_artifact_is_refused_whole(
    gh: GitHubServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    entries: dict[str, bytes],
    links: tuple[str, ...],
    why: str,
) -> None:
    run = gh.state.add_run(head_sha=GOOD)
    gh.state.add_artifact(
        run, ARTIFACT, _zip({"results.json": _results(tmp_path), **entries}, links)
    )
    out = tmp_path / "out"
    assert _fetch(out, "--max-mb", "1") == 2
    assert why in capsys.readouterr().err
    assert list(out.iterdir()) == []  # nothing of it written, not even the valid results


def test_a_refused_token_is_an_error_that_names_the_fix(
    gh: GitHubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_wrongTOKEN0123456789")
    assert _fetch(tmp_path / "out") == 3
    err = capsys.readouterr().err
    assert "the token is missing or invalid" in err and "ghs_wrongTOKEN0123456789" not in err
    monkeypatch.delenv("GITHUB_TOKEN")
    assert _fetch(tmp_path / "out") == 2
    assert "no token: set GITHUB_TOKEN" in capsys.readouterr().err
