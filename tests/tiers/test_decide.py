"""The one decision of a test's tier: markers, decorators read from source, and the project's
`[tool.mlcheck]` markers and decorators (mlcheck/tiers/decide.py)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from mlcheck.errors import ManifestError, UsageError
from mlcheck.project.manifest import load_manifest
from mlcheck.tiers import MarkInfo, Tier
from mlcheck.tiers.decide import TierRules, decide

SOURCE = """
import unittest

def require_my_tpu(f):
    return f

def plain(f):
    return f

@require_my_tpu
def test_tpu(): pass

@plain
def test_plain(): pass

@require_my_tpu
class TpuCase(unittest.TestCase):
    def test_method(self): pass
"""


@pytest.fixture
def module(tmp_path: Path) -> Iterator[ModuleType]:
    (tmp_path / "decided_mod.py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, str(tmp_path))
    try:
        import decided_mod  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    yield decided_mod
    sys.modules.pop("decided_mod", None)


@pytest.fixture
def rules(tmp_path: Path) -> TierRules:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.mlcheck]\n"
        'markers = { slow = "REAL", cuda = "gpu" }\n'
        'decorators = { require_my_tpu = "gpu" }\n'
    )
    return TierRules.of(load_manifest(tmp_path))


def test_the_configuration_moves_markers_and_decorators(module, rules) -> None:
    assert rules.markers == {"slow": "real", "cuda": "gpu"}  # read by the one tier parser
    assert decide([MarkInfo("slow")], rules=rules).tier is Tier.REAL
    assert decide([MarkInfo("cuda")], rules=rules).tier is Tier.GPU
    tpu = decide([], module.test_tpu, None, rules)
    assert (tpu.tier, tpu.marked) == (Tier.GPU, ("require_my_tpu",))
    # a class's decorator moves its methods
    method = decide([], module.TpuCase.test_method, module.TpuCase, rules)
    assert method.tier is Tier.GPU
    assert decide([], module.test_plain, None, rules).tier is Tier.FAST


def test_without_the_configuration_nothing_moves(module) -> None:
    """The same test, the same markers: the project's rules are what moved them above."""
    assert decide([MarkInfo("slow")]).tier is Tier.FAST
    assert decide([], module.test_tpu).tier is Tier.FAST


def test_markers_and_decorators_combine_gpu_wins(module, rules) -> None:
    needs = decide(
        [MarkInfo("real_model", ("org/m",)), MarkInfo("slow")], module.test_tpu, None, rules
    )
    assert (needs.tier, needs.models, needs.gpu) == (Tier.GPU, ("org/m",), True)


def test_bad_marker_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="real_model"):
        decide([MarkInfo("real_model", (3,))])


def test_run_slow_follows_where_slow_goes(tmp_path: Path) -> None:
    builtin = TierRules()
    assert builtin.run_slow({Tier.REAL}) and builtin.run_slow({Tier.GPU})
    assert not builtin.run_slow({Tier.FAST})
    (tmp_path / "pyproject.toml").write_text('[tool.mlcheck]\ndecorators = { slow = "fast" }\n')
    assert not TierRules.of(load_manifest(tmp_path)).run_slow({Tier.REAL, Tier.GPU})


@pytest.mark.parametrize("tier", ["all", "real,gpu", "nightly"])
def test_a_manifest_tier_is_one_tier(tmp_path: Path, tier: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f'[tool.mlcheck]\nmarkers = {{ slow = "{tier}" }}\n')
    with pytest.raises(ManifestError, match=r"`tool.mlcheck.markers.slow` = .* is not a tier"):
        load_manifest(tmp_path)
