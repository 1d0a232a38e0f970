"""Every environment variable mlcheck reads, in one place.

Values are read when asked for (functions), not at import, so tests and the CLI can set them
per process. Parse them at the edges (``cli.py``, ``plugin.py``) and pass values inward.
"""

from __future__ import annotations

import os
from pathlib import Path

# Tier selection for plain pytest runs (`--mlcheck-tier` wins over it).
ENV_TIER = "MLCHECK_TIER"
# Seed the plugin gives every test (random, numpy and torch when loaded); recorded in results.
ENV_SEED = "MLCHECK_SEED"
# Where `mlcheck run` writes results.json / junit.xml / report.md.
ENV_RESULTS_DIR = "MLCHECK_RESULTS_DIR"

# Hugging Face variables we honour (huggingface_hub reads most of them itself at import).
ENV_HF_HUB_OFFLINE = "HF_HUB_OFFLINE"
ENV_HF_HUB_CACHE = "HF_HUB_CACHE"
ENV_HF_HOME = "HF_HOME"
ENV_HF_TOKEN = "HF_TOKEN"
ENV_HF_ENDPOINT = "HF_ENDPOINT"
# transformers' and accelerate's `@slow` run only when this is truthy (read at their import);
# the process of the tier that `slow` maps to (real, by default) gets RUN_SLOW=1.
ENV_RUN_SLOW = "RUN_SLOW"

# A folder whose manifest (pyproject.toml / mlcheck.toml) is trusted for safety options
# (allow_pickle, trust_remote_code) instead of the project's own: GPU jobs of pull requests
# point it at the base branch's manifest, so a PR cannot allow pickle for itself.
ENV_SAFETY_MANIFEST = "MLCHECK_SAFETY_MANIFEST"
# Set to 1 to write no journal.jsonl (only to measure the journal's cost: bench/plugin_overhead.py)
ENV_NO_JOURNAL = "MLCHECK_NO_JOURNAL"

DEFAULT_TIER = "fast"
DEFAULT_SEED = 0
DEFAULT_RESULTS_DIR = "mlcheck-results"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, resolved from the environment now (not at import)."""
    if cache := os.environ.get(ENV_HF_HUB_CACHE):
        return Path(cache).expanduser()
    if home := os.environ.get(ENV_HF_HOME):
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def env_tier() -> str | None:
    return os.environ.get(ENV_TIER) or None


def env_seed() -> int:
    raw = os.environ.get(ENV_SEED)
    return int(raw) if raw else DEFAULT_SEED


# GitHub Actions context (read once, by mlcheck/event.py and mlcheck/github.py).
ENV_GITHUB_ACTIONS = "GITHUB_ACTIONS"
ENV_GITHUB_TOKEN = "GITHUB_TOKEN"
ENV_GITHUB_API_URL = "GITHUB_API_URL"  # GitHub Enterprise Server: https://HOST/api/v3
ENV_GITHUB_GRAPHQL_URL = "GITHUB_GRAPHQL_URL"
ENV_GITHUB_SERVER_URL = "GITHUB_SERVER_URL"
ENV_GITHUB_EVENT_NAME = "GITHUB_EVENT_NAME"
ENV_GITHUB_EVENT_PATH = "GITHUB_EVENT_PATH"
ENV_GITHUB_REPOSITORY = "GITHUB_REPOSITORY"
ENV_GITHUB_SHA = "GITHUB_SHA"
ENV_GITHUB_REF = "GITHUB_REF"
ENV_GITHUB_RUN_ID = "GITHUB_RUN_ID"
ENV_GITHUB_RUN_ATTEMPT = "GITHUB_RUN_ATTEMPT"
ENV_GITHUB_WORKFLOW = "GITHUB_WORKFLOW"
ENV_GITHUB_ACTOR = "GITHUB_ACTOR"
DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_GITHUB_SERVER_URL = "https://github.com"


# Durations file (pytest-split format, {nodeid: seconds}) that `mlcheck run --shard` balances by.
ENV_DURATIONS = "MLCHECK_DURATIONS"


def env_durations() -> str | None:
    return os.environ.get(ENV_DURATIONS) or None


def env_safety_manifest() -> Path | None:
    raw = os.environ.get(ENV_SAFETY_MANIFEST)
    return Path(raw).expanduser() if raw else None
