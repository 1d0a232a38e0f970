"""`mlcheck calibrate`: false-failure rates with exact bounds, on a real pytest subprocess."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import cmarkgfm
import jsonschema
import pytest
from runcli import mlcheck

from mlcheck.power.calibrate import binomial_cdf, clopper_pearson

SUITE = """\
import random

import pytest
import torch


def test_fails_on_one_seed_in_ten():
    # draws from the seeded generator: fails for about one seed in ten
    assert random.random() >= 0.1, "unlucky draw"


@pytest.fixture
def noise():
    return torch.randn(100)


def test_stable(noise):
    # a fixture, set up afresh for each seed
    assert noise.abs().max() < 10


def test_deterministic():
    assert sum(range(10)) == 45
"""


def _mutant(name: str, killers: list[str]) -> dict[str, object]:
    return {
        "name": name,
        "bug": "",
        "check": "",
        "status": "killed",
        "kill": "failed",
        "killers": killers,
        "message": "",
        "reached_by": killers,
        "hits": 1,
        "duration": 1.0,
        "tests_run": 1,
        "suggestion": None,
    }


MUTATION = {
    "schema_version": 1,
    "score": 1.0,
    "killed": 2,
    "survived": 0,
    "not_reached": 0,
    "not_run": 0,
    "errors": 0,
    "reached": 2,
    "unmutated": {"tests": 3, "duration": 1.0},
    "duration": 3.0,
    "cost": 3.0,
    "settings": {"paths": ["tests"], "tier": None, "all_killers": True, "budget_minutes": None},
    "mutants": [
        _mutant("reduction-sum", ["tests/test_seeded.py::test_stable"]),
        _mutant("loss-detached", ["tests/test_seeded.py::test_stable"]),
    ],
}


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # scipy.stats.beta.ppf values (the textbook Clopper-Pearson limits)
        (0, 20, 0.0, 0.16843),
        (0, 100, 0.0, 0.03622),
        (10, 100, 0.04900, 0.17622),
        (1, 20, 0.00127, 0.24873),
        (20, 20, 0.83157, 1.0),
    ],
)
def test_clopper_pearson_matches_the_beta_quantiles(
    k: int, n: int, low: float, high: float
) -> None:
    got = clopper_pearson(k, n)
    assert got == pytest.approx((low, high), abs=2e-5)
    # the definition: the binomial tails at the limits are 2.5%
    if k < n:
        assert binomial_cdf(k, n, got[1]) == pytest.approx(0.025, abs=1e-9)
    if k > 0:
        assert 1 - binomial_cdf(k - 1, n, got[0]) == pytest.approx(0.025, abs=1e-9)


def test_rates_flaky_stable_and_deterministic_tests(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_seeded.py").write_text(SUITE)
    out = tmp_path / "out"
    out.mkdir()
    # a mutation report in the same folder: the table shows power beside false alarms
    (out / "mutation.json").write_text(json.dumps(MUTATION))
    proc = mlcheck("calibrate", "tests", "--seeds", "100", "--results-dir", str(out), cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "calibration.json").read_text())
    schema = json.loads(
        resources.files("mlcheck").joinpath("schema/calibration.schema.json").read_text()
    )
    jsonschema.validate(data, schema)
    tests = {t["nodeid"].split("::")[1]: t for t in data["tests"]}

    flaky = tests["test_fails_on_one_seed_in_ten"]
    assert flaky["runs"] == 100 and flaky["flaky"] and not flaky["deterministic"]
    assert flaky["lower"] <= 0.10 <= flaky["upper"]  # the exact interval contains the truth
    assert flaky["failures"] == len(flaky["failing_seeds"]) > 0
    assert "unlucky draw" in flaky["message"]

    stable = tests["test_stable"]
    assert (stable["runs"], stable["failures"], stable["flaky"]) == (100, 0, False)
    assert stable["upper"] == pytest.approx(0.03622, abs=1e-4)

    deterministic = tests["test_deterministic"]
    assert deterministic["deterministic"] and deterministic["runs"] == 2  # skipped early
    assert (deterministic["failures"], deterministic["upper"]) == (0, 0.0)

    estimate = data["suite_false_red"]["estimate"]
    assert estimate == pytest.approx(flaky["rate"])  # the only test that fails for nothing
    assert data["suite_false_red"]["upper_bound"] >= estimate

    html = cmarkgfm.github_flavored_markdown_to_html((out / "calibration.md").read_text())
    assert "<strong>flaky by design</strong>" in html
    assert "<th>mutants killed</th>" in html
    assert "<td>2 (reduction-sum, loss-detached)</td>" in html  # test_stable's row
    assert html.count("<td>0</td>") == 2  # the other two tests killed nothing
    assert "skipped early" in html
    assert not list(project.rglob("__pycache__")) and not (project / ".pytest_cache").exists()

    # the reproduction line reproduces the failure on the first failing seed, and only there
    seed = flaky["failing_seeds"][0]
    assert flaky["repro"] == (
        f"MLCHECK_SEED={seed} mlcheck run --seed {seed} "
        "'tests/test_seeded.py::test_fails_on_one_seed_in_ten'"
    )
    node = "tests/test_seeded.py::test_fails_on_one_seed_in_ten"
    rerun = mlcheck(
        "run", "--seed", str(seed), node, "--results-dir", str(tmp_path / "r"), cwd=project
    )
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    passing = next(s for s in range(100) if s not in flaky["failing_seeds"])
    rerun = mlcheck(
        "run", "--seed", str(passing), node, "--results-dir", str(tmp_path / "r"), cwd=project
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--seeds", "1"], "at least 2 seeds"), (["--target", "2"], "between 0 and 1")],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = mlcheck("calibrate", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
