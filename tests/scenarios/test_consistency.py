"""Meta-tests that keep action.yml, the action module, the README and the workflows in sync."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcheck.action import inputs as action

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = sorted(
    [
        *(ROOT / ".github" / "workflows").glob("*.yml"),
        *(ROOT / "examples" / "workflows").glob("*.yml"),
    ]
)
# `uses:` values that mean this action: the published one, or the repository itself.
OUR_ACTION = re.compile(r"^(\./?|[\w.-]+/mlcheck@[\w.-]+)$")


def _yaml(path: Path) -> Any:
    # YAML 1.1 reads a bare `on:` key as True; GitHub reads it as "on".
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and True in data:
        data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def action_yml() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(ROOT / "action.yml")
    return data


def test_action_yml_inputs_are_exactly_what_the_action_module_reads(
    action_yml: dict[str, Any],
) -> None:
    inputs = action_yml["inputs"]
    assert set(inputs) == set(action.INPUT_DEFAULTS)
    for name, spec in inputs.items():
        assert spec.get("description", "").strip(), f"input {name} has no description"
        default = str(spec.get("default", ""))
        if name == "github-token":
            assert default == "${{ github.token }}"
        else:
            assert default == action.INPUT_DEFAULTS[name], name


def test_action_yml_outputs_are_exactly_what_the_action_writes(
    action_yml: dict[str, Any],
) -> None:
    outputs = action_yml["outputs"]
    assert set(outputs) == set(action.OUTPUTS)
    assert all(spec["description"].strip() for spec in outputs.values())


def test_spec_inputs_are_all_there(action_yml: dict[str, Any]) -> None:
    spec_inputs = {"command", "tier", "paths", "workers", "shard", "github-token", "gpu-label"}
    spec_inputs |= {"gpu-workflow", "comment", "fail-on", "install"}
    assert spec_inputs <= set(action_yml["inputs"])


def test_every_input_and_output_is_documented_in_the_readme(action_yml: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [n for n in [*action_yml["inputs"], *action_yml["outputs"]] if f"`{n}`" not in readme]
    assert not missing, f"README.md does not document: {', '.join(missing)}"


def test_action_is_a_docker_action_run_by_the_entrypoint_shim(action_yml: dict[str, Any]) -> None:
    runs = action_yml["runs"]
    assert runs["using"] == "docker"
    assert runs["image"] == "Dockerfile"  # the release workflow pins the published image
    assert runs["entrypoint"] == "/opt/mlcheck/entrypoint.py"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY entrypoint.py /opt/mlcheck/entrypoint.py" in dockerfile
    shim = (ROOT / "entrypoint.py").read_text(encoding="utf-8")
    assert "from mlcheck.action.main import main" in shim
    # the entrypoint reads no input itself: everything goes through mlcheck.action.main
    assert "os.environ" not in shim and "getenv" not in shim


def test_dockerfile_follows_githubs_rules_for_docker_actions() -> None:
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    instructions = {line.split()[0] for line in lines if line and not line[0].isspace()}
    assert "USER" not in instructions and "WORKDIR" not in instructions
    assert not any(re.match(r"ENV .*HF_HUB_OFFLINE", line) for line in lines)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflows_parse_and_use_only_existing_inputs(
    path: Path, action_yml: dict[str, Any]
) -> None:
    workflow = _yaml(path)
    assert workflow.get("on"), f"{path.name}: no triggers"
    assert "permissions" in workflow, f"{path.name}: set permissions explicitly"
    for job_name, job in workflow["jobs"].items():
        assert "runs-on" in job, f"{path.name}: job {job_name} has no runs-on"
        for step in job.get("steps", []):
            uses = step.get("uses", "")
            if OUR_ACTION.match(uses):
                unknown = set(step.get("with", {})) - set(action_yml["inputs"])
                assert not unknown, f"{path.name}: {job_name} passes unknown inputs {unknown}"
                for value in step.get("with", {}).values():
                    for ref in re.findall(r"steps\.\w+\.outputs\.([\w-]+)", str(value)):
                        assert ref in action_yml["outputs"], ref
            for ref in re.findall(r"steps\.mlcheck\.outputs\.([\w-]+)", str(step)):
                assert ref in action_yml["outputs"], f"{path.name}: no output {ref}"


def _workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = _yaml(ROOT / "examples" / "workflows" / name)
    return data


def test_gpu_workflow_is_dispatchable_and_runs_pr_code_without_write_access() -> None:
    gpu = _workflow("mlcheck-gpu.yml")
    inputs = gpu["on"]["workflow_dispatch"]["inputs"]
    assert {"sha", "pr", "tier"} <= set(inputs)  # what `mlcheck schedule` dispatches
    assert gpu["permissions"] == {"contents": "read"}
    assert "cancel-in-progress" in gpu["concurrency"]
    job = gpu["jobs"]["gpu"]
    assert job["permissions"] == {"contents": "read"}
    assert "timeout-minutes" in job
    assert "--gpus all" in job["container"]["options"]  # default, overridable by a variable
    assert "vars." in job["container"]["options"] and "vars." in job["runs-on"]
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["ref"] == "${{ inputs.sha }}"
    assert checkout["with"]["persist-credentials"] is False
    # the one secret: HF_TOKEN in the env of the step that fetches gated models, which runs
    # before any of the PR's code (README "Gated and private models in CI")
    with_secret = [i for i, s in enumerate(job["steps"]) if "secrets." in yaml.safe_dump(s)]
    assert len(with_secret) == 1, with_secret
    warm = job["steps"][with_secret[0]]
    assert warm["env"] == {"HF_TOKEN": "${{ secrets.HF_TOKEN }}"}
    assert warm["run"].startswith("python -I -m mlcheck.action.trusted_warm")
    sandboxed = next(
        i for i, s in enumerate(job["steps"]) if "mlcheck.action.sandbox" in s.get("run", "")
    )
    assert with_secret[0] < sandboxed
    assert "secrets." not in yaml.safe_dump({k: v for k, v in job.items() if k != "steps"})
    # the nightly's file map: fetched by a job of its own that runs no PR code, the only job
    # with a token that reads other runs; the gpu job takes it as this run's artifact, no token
    fetch = gpu["jobs"]["file-map"]
    assert fetch["permissions"] == {"contents": "read", "actions": "read"}
    assert not _checkouts(fetch) and not any("run" in s for s in fetch["steps"])
    ours = [s for s in fetch["steps"] if OUR_ACTION.match(s.get("uses", ""))]
    assert [s["with"]["command"] for s in ours] == ["nightly"]
    assert all("github-token" not in s.get("with", {}) for s in fetch["steps"])
    assert [n for n, j in gpu["jobs"].items() if "actions" in j.get("permissions", {})] == [
        "file-map"
    ]
    assert job["needs"] == "file-map" and job["if"] == "${{ !cancelled() }}"
    download = next(s for s in job["steps"] if "download-artifact" in s.get("uses", ""))
    assert set(download["with"]) == {"name", "path"}  # this run's artifact: no token, no run-id
    assert download["with"]["name"] == next(
        s["with"]["name"] for s in fetch["steps"] if "upload-artifact" in s.get("uses", "")
    )
    assert download["continue-on-error"] is True  # no map: every test runs, and says why
    assert job["steps"].index(download) < sandboxed
    assert checkout["with"]["fetch-depth"] == 0  # the map's commit and the base, for git diff
    # the base is this workflow's own commit, as `select: changed` in the action (selection_args)
    assert job["env"]["BASE_SHA"] == "${{ github.sha }}"
    run = " ".join(job["steps"][sandboxed]["run"].split())
    assert '--changed-since "$BASE_SHA"' in run
    assert '--file-map "$RUNNER_TEMP/mlcheck-nightly/file-map.json"' in run
    # posting is a separate job that runs no PR code
    publish = gpu["jobs"]["publish"]
    assert publish["permissions"].get("pull-requests") == "write"
    assert not any(s.get("uses", "").startswith("actions/checkout") for s in publish["steps"])


def test_the_nightly_records_the_map_that_the_gpu_run_and_the_scheduler_fetch() -> None:
    """`mlcheck nightly fetch`'s defaults name the nightly's file and artifact; the nightly
    records the file map into that artifact; the scheduler fetches the results for sizing."""
    from mlcheck.action.inputs import FILE_MAP_NAME
    from mlcheck.cli.nightly import DEFAULT_ARTIFACT, DEFAULT_WORKFLOW

    nightly = _workflow(DEFAULT_WORKFLOW)["jobs"]["all"]
    run = " ".join(
        next(s["run"] for s in nightly["steps"] if "mlcheck run" in s.get("run", "")).split()
    )
    upload = next(s for s in nightly["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["with"]["name"] == DEFAULT_ARTIFACT
    assert f"--record-map {upload['with']['path']}/{FILE_MAP_NAME}" in run
    steps = _workflow("mlcheck-schedule.yml")["jobs"]["schedule"]["steps"]
    ours = [s for s in steps if OUR_ACTION.match(s.get("uses", ""))]
    fetch, schedule = ours
    assert fetch["with"]["command"] == "nightly" and schedule["with"]["command"] == "schedule"
    assert fetch["continue-on-error"] is True  # a failed fetch never stops the scheduling
    assert schedule["with"]["sizing-results"] == f"{fetch['with']['results-dir']}/results.json"


# The jobs that write the PR comment and run no tests: one queue per PR (README: "Comment
# writes are serialised, test runs are not").
COMMENT_WRITERS = {
    ("mlcheck-gpu.yml", "publish"),
    ("mlcheck-publish.yml", "publish"),
    ("mlcheck-schedule.yml", "schedule"),
    ("mlcheck-sharded.yml", "report"),
}


def test_comment_writes_queue_per_pr_and_test_runs_are_never_in_that_queue() -> None:
    seen = set()
    for path in WORKFLOW_FILES:
        for name, job in _yaml(path)["jobs"].items():
            group = job.get("concurrency") or {}
            steps = job.get("steps", [])
            runs_tests = any(
                "mlcheck run" in str(s.get("run", "")) or "install" in s.get("with", {})
                for s in steps
            )
            in_queue = str(group.get("group", "")).startswith("mlcheck-comment-${{")
            assert not (runs_tests and in_queue), f"{path.name}: {name} runs tests in the queue"
            if (path.name, name) in COMMENT_WRITERS:
                seen.add((path.name, name))
                assert in_queue, f"{path.name}: {name} writes the comment outside the queue"
                # false: a push never cancels a publish; max: GitHub keeps every waiting one
                assert group["cancel-in-progress"] is False and group["queue"] == "max"
                assert not runs_tests
    assert seen == COMMENT_WRITERS


def _checkouts(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout")]


def test_scheduler_never_checks_out_pr_code() -> None:
    sched = _workflow("mlcheck-schedule.yml")
    assert sched["on"] == {"pull_request_target": {"types": ["labeled"]}}
    assert sched["permissions"]["actions"] == "write"
    for job in sched["jobs"].values():
        # pull_request_target with no `ref` checks out the BASE branch: its manifest gives the
        # safety options; any `ref` (or `repository`) could name the PR's code
        for checkout in _checkouts(job):
            assert set(checkout.get("with", {})) == {"persist-credentials"}, checkout
            assert checkout["with"]["persist-credentials"] is False
        assert not any("run" in s for s in job["steps"])  # and runs nothing from it


def test_gpu_job_takes_safety_options_from_the_base_branch_manifest() -> None:
    """The GPU job checks out the PR's pinned SHA, so `allow_pickle`/`trust_remote_code` must
    come from the default branch's manifest, checked out beside it, never from the PR's."""
    job = _workflow("mlcheck-gpu.yml")["jobs"]["gpu"]
    pr_code, base = _checkouts(job)
    assert pr_code["with"]["ref"] == "${{ inputs.sha }}"
    assert job["steps"].index(pr_code) < job["steps"].index(base)  # else the first one wipes it
    folder = base["with"]["path"]
    assert base["with"]["ref"] == "${{ github.sha }}"  # this workflow's own, default-branch commit
    assert "inputs." not in yaml.safe_dump(base)
    assert base["with"]["persist-credentials"] is False
    assert base["with"]["sparse-checkout-cone-mode"] is False
    assert set(base["with"]["sparse-checkout"].split()) == {"pyproject.toml", "mlcheck.toml"}
    # Moved out of the workspace and hashed BEFORE the first PR code (the install step).
    steps = [s.get("run", "") for s in job["steps"]]
    move = next(i for i, run in enumerate(steps) if f'mv {folder} "$RUNNER_TEMP/' in run)
    assert "sha256sum" in steps[move]
    install = next(i for i, run in enumerate(steps) if "pip install" in run)
    assert move < install
    runs = [run for run in steps if "mlcheck run" in run]
    assert runs and all(
        '--safety-manifest "$RUNNER_TEMP/mlcheck-base"' in " ".join(run.split()) for run in runs
    ), runs
    # README security model: no actions/cache in jobs that run PR code.
    for name in ("mlcheck.yml", "mlcheck-gpu.yml"):
        assert "actions/cache" not in yaml.safe_dump(_workflow(name)), name


def _permissions(workflow: dict[str, Any], job: str) -> dict[str, str]:
    perms: dict[str, str] = workflow["jobs"][job].get("permissions", workflow["permissions"])
    return perms


@pytest.mark.parametrize(
    ("name", "job", "needed"),
    [
        # README.md, "Permissions per workflow"
        ("mlcheck.yml", "fast", {"pull-requests": "write", "issues": "read"}),
        ("mlcheck.yml", "default-branch", {"pull-requests": "write", "issues": "write"}),
        ("mlcheck-schedule.yml", "schedule", {"pull-requests": "write", "actions": "write"}),
        ("mlcheck-gpu.yml", "gpu", {"contents": "read"}),
        ("mlcheck-gpu.yml", "file-map", {"actions": "read"}),
        ("mlcheck-gpu.yml", "publish", {"pull-requests": "write", "issues": "read"}),
        ("mlcheck-publish.yml", "publish", {"actions": "read", "pull-requests": "write"}),
        ("mlcheck-nightly.yml", "publish", {"issues": "write"}),
        ("mlcheck-sharded.yml", "report", {"pull-requests": "write", "issues": "read"}),
    ],
)
def test_each_workflow_job_has_the_permissions_it_needs(
    name: str, job: str, needed: dict[str, str]
) -> None:
    perms = _permissions(_workflow(name), job)
    assert needed.items() <= perms.items(), perms
    if name == "mlcheck-publish.yml":
        assert perms.get("issues") in ("read", "write")  # the base digest
    if job == "gpu":
        assert perms == {"contents": "read"}  # PR code: no write token


# Events whose jobs act on a PR's behalf: its code ran (or runs) somewhere in the chain.
PR_EVENTS = {"pull_request", "pull_request_target", "workflow_run", "workflow_dispatch"}


def _triggers(workflow: dict[str, Any]) -> set[str]:
    on = workflow["on"]
    return {on} if isinstance(on, str) else set(on)


# README security model: jobs a PR triggers hold no issues: write.
def test_pr_triggered_jobs_hold_no_issues_write() -> None:
    """`issues: write` keeps the base digest, which only pushes to the default branch and the
    nightly write: a job a PR can trigger never holds it (split into its own job if needed)."""
    checked = 0
    for path in WORKFLOW_FILES:
        workflow = _yaml(path)
        pr_events = _triggers(workflow) & PR_EVENTS
        if path.name == "mlcheck-nightly.yml":
            pr_events -= {"workflow_dispatch"}  # by hand on the default branch, not for a PR
        for name, job in workflow["jobs"].items():
            only_push = job.get("if", "").replace(" ", "") == "github.event_name=='push'"
            if pr_events and not only_push:
                checked += 1
                perms = _permissions(workflow, name)
                assert perms.get("issues") != "write", f"{path.name}: {name} has issues: write"
                assert workflow["permissions"].get("issues") != "write", path.name
    assert checked >= 7
    fast = _workflow("mlcheck.yml")["jobs"]
    assert fast["fast"]["if"] == "github.event_name == 'pull_request'"
    assert _permissions(_workflow("mlcheck.yml"), "default-branch")["issues"] == "write"
    # the two jobs are the same steps: only their permissions differ
    assert fast["fast"]["steps"] == fast["default-branch"]["steps"]


# README security model: a fork's branch name cannot join another PR's comment queue.
def test_fork_publisher_groups_never_collide_with_a_pr_number() -> None:
    group = _workflow("mlcheck-publish.yml")["jobs"]["publish"]["concurrency"]["group"]
    prefix, expression = group.split("${{", 1)
    assert prefix == "mlcheck-comment-"
    first, fallback = (part.strip() for part in expression.rstrip("} ").split("||", 1))
    assert first == "github.event.workflow_run.pull_requests[0].number"  # GitHub's, trusted
    # a fork's run names no PR: its key is prefixed, so a branch named "123" is not PR #123
    found = re.fullmatch(r"format\('fork:\{0\}:\{1\}', (\S+), (\S+)\)", fallback)
    assert found, fallback
    assert found.groups() == (
        "github.event.workflow_run.head_repository.full_name",
        "github.event.workflow_run.head_branch",
    )
    for path in WORKFLOW_FILES:  # no other group keys on a branch name a fork chooses
        assert "head_branch }}" not in path.read_text(), path.name


def test_workflows_run_unchanged_under_act() -> None:
    """No act-only conditions: the e2e tests run the very files users copy, and every action
    they use that needs GitHub has a stand-in in tests/data/act/."""
    stand_ins = {"checkout", "upload-artifact", "download-artifact"}
    for path in (ROOT / "examples" / "workflows").glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        assert "env.ACT" not in text and "event.act" not in text, path.name
        for job in _yaml(path)["jobs"].values():
            for step in job.get("steps", []):
                uses = step.get("uses", "")
                if uses and not OUR_ACTION.match(uses):
                    owner_name, _, version = uses.partition("@")
                    assert owner_name.split("/")[0] == "actions" and version == "v4", uses
                    assert owner_name.split("/")[1] in stand_ins, uses
    for name in stand_ins:
        assert (ROOT / "tests" / "data" / "act" / name / "action.yml").is_file()


def test_fork_safe_publisher_runs_no_pr_code() -> None:
    pub = _workflow("mlcheck-publish.yml")
    assert "workflow_run" in pub["on"]
    for job in pub["jobs"].values():
        assert not any(s.get("uses", "").startswith("actions/checkout") for s in job["steps"])
        assert not any("run" in s for s in job["steps"])


def test_release_pins_the_published_image_by_digest() -> None:
    release = yaml.safe_dump(_yaml(ROOT / ".github" / "workflows" / "release.yml"))
    assert "VARIANT=cpu" in release and "VARIANT=cuda" in release
    assert "docker://$IMAGE@$CPU_DIGEST" in release
    assert 'git tag -fa "v$major"' in release


def test_readme_environment_table_is_generated_from_constants() -> None:
    from mlcheck import constants

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- env-table:start -->\n(.*?)\n<!-- env-table:end -->", readme, re.S)
    assert found, "README.md has no env-table markers"
    assert found.group(1) == constants.readme_table(), (
        "README's environment table is stale: python -m mlcheck.constants > table, paste it "
        "between the env-table markers"
    )
    for name in constants.VARIABLES:
        assert f"| `{name}` |" in found.group(1)


def test_readme_layout_names_every_module_and_only_real_ones() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"## Developing mlcheck\n.*?```\n(mlcheck/\n.*?)\ntests/", readme, re.S)
    assert found, "README.md's Developing mlcheck section has no tree"
    package = ROOT / "mlcheck"
    lines = found.group(1).splitlines()[1:]
    top = {m for line in lines if not line.startswith("    ") for m in _names(line)}
    nested = {m for line in lines if line.startswith("    ") for m in _names(line)}
    folders = {p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.name for p in package.glob("*.py") if not p.name.startswith("__")}
    assert top == modules | folders, (
        sorted((modules | folders) - top),
        sorted(top - modules - folders),
    )
    # the folders whose modules the tree lists one by one (the others get one line each)
    listed = ("report", "github", "project", "results", "action", "distributed", "plugin", "models")
    listed += ("tiers", "publish")
    inside = {p.name for d in listed for p in (package / d).glob("[!_]*.py")}
    assert nested == inside, (sorted(inside - nested), sorted(nested - inside))


def _names(line: str) -> set[str]:
    """The module and folder names a line of the tree describes (its first column)."""
    head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
    names = {n.strip() for n in head.split(",") if n.strip()}
    return names if all(re.fullmatch(r"[a-z_]+(\.py|/)", n) for n in names) else set()


def test_the_readmes_first_test_passes(pytester: pytest.Pytester, monkeypatch) -> None:
    """The quickstart's test, as printed, on a GPT-2 config put into a fresh cache (no hub)."""
    import transformers

    from mlcheck.project.cache import add

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme[readme.index("## Use it in your project") :]
    code = re.search(r"```python\n(.*?)```", quickstart, re.S)
    assert code is not None and "models.random(" in code.group(1)
    cache = pytester.path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what the plugin sets; restored afterwards
    import huggingface_hub.constants as hub_constants

    # the inner run leaves huggingface_hub's constant as this environment had it ("1"):
    # restored afterwards too, or this worker's later downloads stay offline
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", hub_constants.HF_HUB_OFFLINE)
    pytester.makepyprojecttoml(
        '[tool.mlcheck.models]\ngpt2 = { revision = "main", needs = "config" }\n'
    )
    transformers.GPT2Config().save_pretrained(pytester.path / "gpt2-config")
    add(pytester.path / "gpt2-config", "gpt2", "main", cache_dir=cache, root=pytester.path)
    pytester.makepyfile(test_first=code.group(1))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_threat_model_names_only_tests_that_exist() -> None:
    """Each claim of README's per-event threat model names its test: that test must exist."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"### Threat model, per event.*?\n(.*?)\n### ", readme, re.S)
    assert found, "README.md has no per-event threat model"
    named = set(re.findall(r"`(test_\w+)`", found.group(1)))
    assert len(named) >= 12, named
    defined = {
        m
        for path in (ROOT / "tests").rglob("test_*.py")
        for m in re.findall(r"(?m)^def (test_\w+)\(", path.read_text(encoding="utf-8"))
    }
    assert named <= defined, sorted(named - defined)
