"""Every environment variable mlcheck reads or sets, in one place.

Each variable is declared once with :func:`_var` (its name, what it means, its default); the
README's table of environment variables is generated from :data:`VARIABLES`
(:func:`readme_table`, kept in sync by ``tests/scenarios/test_consistency.py``). No other
module calls ``os.environ.get``/``os.getenv`` (``tests/scenarios/test_layout.py`` checks):
they call the small readers below, or read a mapping the edge (``cli/``, ``action/main.py``,
``github/event.py``, ``plugin/``) passes in with the names defined here.

Values are read when asked for (functions), not at import, so tests and the CLI can set them
per process; readers take an optional ``environ`` mapping (default ``os.environ``).

>>> env_seed({"MLCHECK_SEED": "7"})
7
>>> github_token({"GH_TOKEN": " t0k "})
't0k'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable (a row of the README's table)."""

    name: str
    meaning: str
    default: str  # as documented; "" means unset
    group: str


VARIABLES: dict[str, EnvVar] = {}
MLCHECK, HUGGING_FACE, PROCESS, GITHUB = "mlcheck", "Hugging Face", "test process", "GitHub Actions"


def _var(name: str, meaning: str, default: str = "", *, group: str) -> str:
    VARIABLES[name] = EnvVar(name, meaning, default, group)
    return name


DEFAULT_TIER = "fast"
DEFAULT_SEED = 0
DEFAULT_RESULTS_DIR = "mlcheck-results"
DEFAULT_ARTIFACT_NAME = "mlcheck-results"
DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_GITHUB_SERVER_URL = "https://github.com"

# -- mlcheck's own ------------------------------------------------------------------------------

ENV_TIER = _var(
    "MLCHECK_TIER",
    "tiers a plain pytest run selects (`--mlcheck-tier` wins); setting it also opts the project in",
    DEFAULT_TIER,
    group=MLCHECK,
)
ENV_SEED = _var(
    "MLCHECK_SEED",
    "seed of random, numpy and torch for every test; recorded in the results",
    str(DEFAULT_SEED),
    group=MLCHECK,
)
ENV_RESULTS_DIR = _var(
    "MLCHECK_RESULTS_DIR",
    "where `mlcheck run` writes results.json, junit.xml and report.md, and what "
    "`mlcheck publish` reads without DIR",
    DEFAULT_RESULTS_DIR,
    group=MLCHECK,
)
ENV_DURATIONS = _var(
    "MLCHECK_DURATIONS",
    "durations file (pytest-split format) that `mlcheck run --shard` balances by",
    "`.test_durations`",
    group=MLCHECK,
)
ENV_ARTIFACT_NAME = _var(
    "MLCHECK_ARTIFACT_NAME",
    "name of the uploaded results artifact that the report's links point to",
    DEFAULT_ARTIFACT_NAME,
    group=MLCHECK,
)
# GPU jobs of pull requests point it at the base branch's manifest, so a PR cannot allow
# pickle for itself.
ENV_SAFETY_MANIFEST = _var(
    "MLCHECK_SAFETY_MANIFEST",
    "folder whose manifest is trusted for the safety options (allow_pickle, "
    "trust_remote_code) instead of the project's own",
    group=MLCHECK,
)
ENV_PR_USER = _var(
    "MLCHECK_PR_USER",
    "(action) the user the project under test runs as; `root` or `0` opts out, with a warning",
    "mlcheck",
    group=MLCHECK,
)
ENV_PASS_ENV = _var(
    "MLCHECK_PASS_ENV",
    "(action) names of secret-holding variables the project under test may see anyway",
    group=MLCHECK,
)
ENV_NO_JOURNAL = _var(
    "MLCHECK_NO_JOURNAL",
    "`1`: write no journal.jsonl (only to measure its cost: bench/plugin_overhead.py)",
    group=MLCHECK,
)
ENV_SAFETY_OPTIONS = _var(
    "MLCHECK_SAFETY_OPTIONS",
    "(set by `mlcheck run` for the test process) the trusted safety options, as JSON",
    group=MLCHECK,
)
ENV_VERIFIED_STAMP = _var(
    "MLCHECK_VERIFIED_STAMP",
    "(set by `mlcheck run` for the test process) file naming the weights already verified",
    group=MLCHECK,
)
ENV_MODEL_CACHE_GB = _var(
    "MLCHECK_MODEL_CACHE_GB",
    "memory (GB) the `models.real` load cache may hold per worker process, least recently used "
    "evicted first; `0`: load for every test",
    "half the machine's memory",
    group=MLCHECK,
)

# `mlcheck mutate` (mlcheck.power): set by it for the test process it starts
ENV_MUTANT = _var(
    "MLCHECK_MUTANT",
    "(set by `mlcheck mutate` for the test process) the ML mutant injected in that run",
    group=MLCHECK,
)
ENV_MUTANT_HITS = _var(
    "MLCHECK_MUTANT_HITS",
    "(set by `mlcheck mutate` for the test process) folder where the mutant records the tests "
    "that reached it",
    group=MLCHECK,
)

ENV_CALIBRATE = _var(
    "MLCHECK_CALIBRATE",
    "(set by `mlcheck calibrate` for the test process) seeds and output folder, as JSON",
    group=MLCHECK,
)

# -- Hugging Face (huggingface_hub reads most of them itself, at import) ------------------------

ENV_HF_HUB_OFFLINE = _var(
    "HF_HUB_OFFLINE",
    "set to `1` for the test process: tests never reach a hub",
    group=HUGGING_FACE,
)
ENV_HF_HUB_CACHE = _var(
    "HF_HUB_CACHE", "the hub cache that `mlcheck cache` fills and tests read", group=HUGGING_FACE
)
ENV_HF_HOME = _var(
    "HF_HOME", "the cache is `$HF_HOME/hub` when HF_HUB_CACHE is unset", group=HUGGING_FACE
)
ENV_XDG_CACHE_HOME = _var(
    "XDG_CACHE_HOME",
    "the cache is `$XDG_CACHE_HOME/huggingface/hub` when neither is set",
    "`~/.cache`",
    group=HUGGING_FACE,
)
ENV_HF_TOKEN = _var(
    "HF_TOKEN",
    "token for gated models (`mlcheck lock`, `cache warm`); redacted",
    group=HUGGING_FACE,
)
ENV_HF_ENDPOINT = _var(
    "HF_ENDPOINT",
    "the hub to resolve and download from",
    "https://huggingface.co",
    group=HUGGING_FACE,
)
# transformers' and accelerate's `@slow` run only when this is truthy (read at their import).
ENV_RUN_SLOW = _var(
    "RUN_SLOW",
    "set to `1` for the tier that `@slow` tests map to (real, by default)",
    group=HUGGING_FACE,
)

# -- the test process ---------------------------------------------------------------------------

ENV_PYTEST_DISABLE_PLUGIN_AUTOLOAD = _var(
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    "when set, `mlcheck run` loads its plugin and xdist explicitly (`-p`)",
    group=PROCESS,
)
ENV_OMP_NUM_THREADS = _var(
    "OMP_NUM_THREADS",
    "set for the test process with several workers (cores / workers), unless already set",
    group=PROCESS,
)
ENV_MKL_NUM_THREADS = _var("MKL_NUM_THREADS", "as OMP_NUM_THREADS", group=PROCESS)
# Each rank of a distributed test (mlcheck.distributed.launch) gets these, as torchrun sets them.
_RANK_VAR = "set in each rank of a distributed test (`@pytest.mark.distributed`)"
ENV_RANK = _var("RANK", f"{_RANK_VAR}: this rank", group=PROCESS)
ENV_LOCAL_RANK = _var("LOCAL_RANK", f"{_RANK_VAR}: this rank on this machine", group=PROCESS)
ENV_WORLD_SIZE = _var("WORLD_SIZE", f"{_RANK_VAR}: how many ranks", group=PROCESS)
ENV_LOCAL_WORLD_SIZE = _var(
    "LOCAL_WORLD_SIZE", f"{_RANK_VAR}: ranks on this machine", group=PROCESS
)
ENV_MASTER_ADDR = _var("MASTER_ADDR", f"{_RANK_VAR}: the group's store host", group=PROCESS)
ENV_MASTER_PORT = _var(
    "MASTER_PORT", f"{_RANK_VAR}: the group's store port, picked by the OS", group=PROCESS
)

# What the action sets for the project under test (mlcheck/action/sandbox.py), not read from it.
ENV_HOME = _var("HOME", "(action) the project's own home folder", group=PROCESS)
ENV_VIRTUAL_ENV = _var(
    "VIRTUAL_ENV", "(action) the project's virtual environment, first on PATH", group=PROCESS
)
ENV_PATH = _var("PATH", "(action) the project's virtual environment's `bin` first", group=PROCESS)
ENV_PYTHONHOME = _var("PYTHONHOME", "(action) removed for the project under test", group=PROCESS)

# -- GitHub Actions (the runner sets them; read once, at the edge) ------------------------------

ENV_GITHUB_ACTIONS = _var(
    "GITHUB_ACTIONS",
    "`true` inside Actions: annotations on by default, GitHub context used",
    group=GITHUB,
)
ENV_GITHUB_TOKEN = _var(
    "GITHUB_TOKEN",
    "token for `publish` and `schedule` (first of GITHUB_TOKEN, INPUT_GITHUB-TOKEN, GH_TOKEN)",
    group=GITHUB,
)
ENV_INPUT_GITHUB_TOKEN = _var(
    "INPUT_GITHUB-TOKEN", "the action's `github-token` input, as the runner passes it", group=GITHUB
)
ENV_GH_TOKEN = _var("GH_TOKEN", "the GitHub CLI's token variable, used last", group=GITHUB)
ENV_GITHUB_API_URL = _var(
    "GITHUB_API_URL",
    "REST API (GitHub Enterprise Server: `https://HOST/api/v3`)",
    DEFAULT_GITHUB_API_URL,
    group=GITHUB,
)
ENV_GITHUB_SERVER_URL = _var(
    "GITHUB_SERVER_URL", "for links in reports", DEFAULT_GITHUB_SERVER_URL, group=GITHUB
)
ENV_GITHUB_EVENT_NAME = _var(
    "GITHUB_EVENT_NAME", "the event: what `auto` runs and publish posts", "`local`", group=GITHUB
)
ENV_GITHUB_EVENT_PATH = _var("GITHUB_EVENT_PATH", "the event's payload (JSON)", group=GITHUB)
ENV_GITHUB_REPOSITORY = _var("GITHUB_REPOSITORY", "`owner/name`", group=GITHUB)
ENV_GITHUB_SHA = _var("GITHUB_SHA", "commit recorded in the results and linked", group=GITHUB)
ENV_GITHUB_REF = _var("GITHUB_REF", "ref recorded in the results", group=GITHUB)
ENV_GITHUB_RUN_ID = _var("GITHUB_RUN_ID", "the run that reports link to", group=GITHUB)
ENV_GITHUB_RUN_ATTEMPT = _var(
    "GITHUB_RUN_ATTEMPT", "a re-run (`> 1`) of `schedule` dispatches nothing", group=GITHUB
)
ENV_GITHUB_WORKFLOW = _var("GITHUB_WORKFLOW", "the workflow's name", group=GITHUB)
ENV_GITHUB_ACTOR = _var("GITHUB_ACTOR", "who triggered the run", group=GITHUB)
ENV_GITHUB_WORKSPACE = _var(
    "GITHUB_WORKSPACE",
    "(action) the checkout; `working-directory` is inside it",
    "cwd",
    group=GITHUB,
)
ENV_GITHUB_OUTPUT = _var(
    "GITHUB_OUTPUT",
    "file the step outputs are written to (github/workflow.py)",
    group=GITHUB,
)
ENV_GITHUB_STEP_SUMMARY = _var(
    "GITHUB_STEP_SUMMARY",
    "file the job summary is appended to (github/workflow.py)",
    group=GITHUB,
)
# The prefix of every action input (``INPUT_<NAME>``); only mlcheck/action/main.py reads them.
INPUT_PREFIX = "INPUT_"

# Variables whose values are secrets whatever they look like: redacted from everything we print
# or post (mlcheck/redact.py) and kept from the project under test (mlcheck/action/sandbox.py).
SECRET_ENV_VARS = (
    ENV_GITHUB_TOKEN,
    ENV_GH_TOKEN,
    "GH_ENTERPRISE_TOKEN",
    "GITHUB_ENTERPRISE_TOKEN",
    ENV_INPUT_GITHUB_TOKEN,
    ENV_HF_TOKEN,
    "HUGGING_FACE_HUB_TOKEN",
    "ACTIONS_RUNTIME_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_CACHE_URL",  # carries a signed path on some runners
)


# -- readers -----------------------------------------------------------------------------------


def get(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value with surrounding whitespace removed; None when unset or empty."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def restore(name: str, value: str | None) -> None:
    """Put a variable back as :func:`get` read it before (``None``: unset)."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def env_tier(environ: Mapping[str, str] | None = None) -> str | None:
    return get(ENV_TIER, environ)


def env_seed(environ: Mapping[str, str] | None = None) -> int:
    raw = get(ENV_SEED, environ)
    return int(raw) if raw else DEFAULT_SEED


def env_durations(environ: Mapping[str, str] | None = None) -> str | None:
    return get(ENV_DURATIONS, environ)


def results_dir(environ: Mapping[str, str] | None = None) -> Path:
    return Path(get(ENV_RESULTS_DIR, environ) or DEFAULT_RESULTS_DIR)


def artifact_name(environ: Mapping[str, str] | None = None) -> str:
    return get(ENV_ARTIFACT_NAME, environ) or DEFAULT_ARTIFACT_NAME


def env_safety_manifest(environ: Mapping[str, str] | None = None) -> Path | None:
    raw = get(ENV_SAFETY_MANIFEST, environ)
    return Path(raw).expanduser() if raw else None


def safety_options(environ: Mapping[str, str] | None = None) -> str | None:
    return get(ENV_SAFETY_OPTIONS, environ)


def verified_stamp(environ: Mapping[str, str] | None = None) -> Path | None:
    raw = get(ENV_VERIFIED_STAMP, environ)
    return Path(raw) if raw else None


def no_journal(environ: Mapping[str, str] | None = None) -> bool:
    return get(ENV_NO_JOURNAL, environ) == "1"


def model_cache_gb(environ: Mapping[str, str] | None = None) -> float | None:
    """``MLCHECK_MODEL_CACHE_GB`` as a number (None: unset)."""
    raw = get(ENV_MODEL_CACHE_GB, environ)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        from .errors import UsageError

        raise UsageError(
            f"{ENV_MODEL_CACHE_GB}={raw!r} is not a number of GB; set it to e.g. 16, or 0 to "
            "load every model afresh for each test"
        )
    return value


def hf_token(environ: Mapping[str, str] | None = None) -> str | None:
    return get(ENV_HF_TOKEN, environ)


def hf_hub_cache(environ: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache folder, resolved from the environment now (not at import)."""
    if cache := get(ENV_HF_HUB_CACHE, environ):
        return Path(cache).expanduser()
    if home := get(ENV_HF_HOME, environ):
        return Path(home).expanduser() / "hub"
    xdg = get(ENV_XDG_CACHE_HOME, environ) or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def plugin_autoload_disabled(environ: Mapping[str, str] | None = None) -> bool:
    return get(ENV_PYTEST_DISABLE_PLUGIN_AUTOLOAD, environ) is not None


def in_github_actions(environ: Mapping[str, str] | None = None) -> bool:
    return get(ENV_GITHUB_ACTIONS, environ) == "true"


def github_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The token: ``GITHUB_TOKEN``, else the action's ``github-token`` input, else ``GH_TOKEN``."""
    for name in (ENV_GITHUB_TOKEN, ENV_INPUT_GITHUB_TOKEN, ENV_GH_TOKEN):
        if value := get(name, environ):
            return value
    return None


def github_api_url(environ: Mapping[str, str] | None = None) -> str:
    return (get(ENV_GITHUB_API_URL, environ) or DEFAULT_GITHUB_API_URL).rstrip("/")


def github_sha(environ: Mapping[str, str] | None = None) -> str | None:
    return get(ENV_GITHUB_SHA, environ)


def github_ref(environ: Mapping[str, str] | None = None) -> str | None:
    return get(ENV_GITHUB_REF, environ)


def github_output(environ: Mapping[str, str] | None = None) -> Path | None:
    raw = get(ENV_GITHUB_OUTPUT, environ)
    return Path(raw) if raw else None


def github_step_summary(environ: Mapping[str, str] | None = None) -> Path | None:
    raw = get(ENV_GITHUB_STEP_SUMMARY, environ)
    return Path(raw) if raw else None


def readme_table() -> str:
    """The README's table of environment variables (generated from :data:`VARIABLES`)."""
    rows = ["| Variable | Meaning | Default |", "| --- | --- | --- |"]
    for group in (MLCHECK, HUGGING_FACE, PROCESS, GITHUB):
        rows.append(f"| **{group}** | | |")
        for var in VARIABLES.values():
            if var.group == group:
                default = var.default if var.default.startswith("`") else f"`{var.default}`"
                rows.append(f"| `{var.name}` | {var.meaning} | {default if var.default else ''} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m mlcheck.constants > table (paste into README.md)
    print(readme_table())
