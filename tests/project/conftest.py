"""Fixtures the tests of mlcheck/project/ share: a tiny model on the local hub mirror (olah)."""

from __future__ import annotations

from pathlib import Path

import hubserver
import pytest
from hubserver import Hub, hub_env, mlcheck
from projects import project

# the local hub mirror's fixtures, for every test in tests/project/
hub = hubserver.hub
tiny_bert_dir = hubserver.tiny_bert_dir


@pytest.fixture
def tiny_on_hub(
    hub: Hub, tiny_bert_dir: Path, tmp_path: Path
) -> tuple[str, str, Path, dict[str, str]]:
    """A tiny BERT pushed to the mirror, a project that needs its weights, and a hub env."""
    model = hub.model_id("tiny-bert")
    commit = hub.push_folder(model, tiny_bert_dir)
    root = project(tmp_path, {model: '{ needs = "weights" }'})
    env = hub_env(hub, tmp_path / "cache")
    assert mlcheck("lock", cwd=root, env=env).returncode == 0
    return model, commit, root, env
