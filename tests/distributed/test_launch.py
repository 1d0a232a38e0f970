"""Distributed tests (SPEC §14) on real gloo process groups.

Rank processes cost seconds each (an interpreter and torch), so one inner pytest run
(``suite_run``, module scope) holds most scenarios and the tests below read its results; the
xdist scenario runs its own. The SIGTERM scenario lives in test_integrity.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.data import DistributedSampler

from mlcheck.checks import CheckFailed, assert_shards_disjoint
from mlcheck.distributed.launch import RankResult, Spec, verdict_text
from mlcheck.errors import UsageError
from mlcheck.results.schema import Outcome, read

RANKS = """
import os, time
import pytest, torch
import torch.distributed as td


class TestRanks:
    @pytest.mark.distributed(world_size=2)
    @pytest.mark.parametrize("word", ["sent by value"])
    def test_two_ranks(self, dist, tmp_path, word):
        t = torch.tensor([float(dist.rank + 1)])
        td.all_reduce(t)
        assert t.item() == 3.0
        assert dist.all_gather_object(dist.rank) == [0, 1]
        assert (dist.backend, str(dist.device), word) == ("gloo", "cpu", "sent by value")
        env = {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")}
        assert env == {"RANK": str(dist.rank), "LOCAL_RANK": str(dist.rank),
                       "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
        assert int(os.environ["MASTER_PORT"]) > 0
        # the pytest process runs 2 threads (OMP_NUM_THREADS=2): one per rank
        assert torch.get_num_threads() == 1
        (tmp_path / f"rank{dist.rank}").write_text(str(os.getpid()))
        dist.barrier()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]
        print("hello from rank", dist.rank)


@pytest.mark.distributed(world_size=3)
def test_three_ranks(dist):
    assert td.get_world_size() == 3 and dist.world_size == 3
    assert dist.all_gather_object(dist.rank * 10) == [0, 10, 20]


@pytest.mark.distributed(world_size=2)
def test_fails_on_rank_1(dist):
    assert dist.rank == 0, f"rank {dist.rank} took the wrong branch"


@pytest.mark.distributed(world_size=2, timeout=6)
def test_hangs(dist):
    if dist.rank == 0:
        dist.barrier()  # rank 1 never gets here
    else:
        time.sleep(3600)


@pytest.mark.distributed(world_size=2)
def test_rank_dies(dist):
    if dist.rank == 1:
        os.abort()


@pytest.mark.distributed(world_size=2)
def test_process_bound_fixture(dist, monkeypatch):
    pass


def test_dist_outside_a_distributed_test(dist):
    pass
"""

CHECKS = """
import pytest, torch
import torch.distributed as td
from torch import nn
from mlcheck.checks import CheckFailed, assert_ddp_equivalent, assert_same_on_all_ranks
from mlcheck.errors import UsageError


def make_model():
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 3))


def make_model_rank_seeded():  # planted: ranks start from different weights
    torch.manual_seed(1234 + td.get_rank())
    return make_model()


def make_model_seeded():  # its twin
    torch.manual_seed(1234)
    return make_model()


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g))


def loss(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def step(model, batch, opt):  # the correct twin
    opt.zero_grad()
    loss(model, batch).backward()
    opt.step()


def step_no_sync(model, batch, opt):  # planted: gradients never all-reduced
    opt.zero_grad()
    with model.no_sync():
        loss(model, batch).backward()
    opt.step()


def step_divided_twice(model, batch, opt):  # planted: DDP averages already
    opt.zero_grad()
    (loss(model, batch) / td.get_world_size()).backward()
    opt.step()


@pytest.mark.distributed(world_size=2)
def test_planted_bugs_and_twins(dist, tmp_path):
    messages = {}
    for seed in range(5):
        b = batch(seed)
        assert_ddp_equivalent(make_model, b, step=step, loss_fn=loss, seed=seed, steps=2)
        with pytest.raises(CheckFailed, match="not all-reduced") as no_sync:
            assert_ddp_equivalent(make_model, b, step=step_no_sync, loss_fn=loss, seed=seed)
        with pytest.raises(CheckFailed, match=r"0\\.50x(.|\\n)*divided by the world size") as twice:
            assert_ddp_equivalent(make_model, b, step=step_divided_twice, loss_fn=loss, seed=seed)
        assert_same_on_all_ranks(make_model_seeded(), name="initial weights")
        with pytest.raises(CheckFailed, match="rank 1 of 2 differs from rank 0") as init:
            assert_same_on_all_ranks(make_model_rank_seeded(), name="initial weights")
        assert_same_on_all_ranks({"lr": 0.1, "seed": seed})
        messages[seed] = [str(e.value) for e in (no_sync, twice, init)]
    if dist.rank == 0:
        (tmp_path / "messages.json").write_text(__import__("json").dumps(messages))


def test_launches_its_own_ranks():
    b = batch(0)
    assert_ddp_equivalent(make_model, b, step=step, loss_fn=loss)
    with pytest.raises(CheckFailed, match="divided by the world size"):
        assert_ddp_equivalent(make_model, b, step=step_divided_twice, loss_fn=loss)
    with pytest.raises(UsageError, match="cannot be pickled"):
        assert_ddp_equivalent(lambda: make_model(), b)
"""


def _env(threads: int = 2) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def _pytest(root: Path, *args: str, threads: int = 2) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=_env(threads),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("dist")
    (root / "pyproject.toml").write_text("[tool.mlcheck]\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_ranks.py").write_text(RANKS)
    (root / "tests" / "test_dist_checks.py").write_text(CHECKS)
    proc = _pytest(root, "tests", "--mlcheck-results", "res", "--basetemp", str(root / "tmp"))
    return root, proc.stdout + proc.stderr


def _results(suite_run: tuple[Path, str]) -> dict[str, object]:
    root, _ = suite_run
    return {t.name: t for t in read(root / "res").tests}


def test_passing_on_two_and_three_ranks(suite_run: tuple[Path, str]) -> None:
    tests, out = _results(suite_run), suite_run[1]
    two = tests["test_two_ranks[sent by value]"]
    assert two.outcome is Outcome.PASSED, (two.message, out)
    assert [(s.msg, s.outcome) for s in two.subtests] == [
        ("rank 0 of 2", Outcome.PASSED),
        ("rank 1 of 2", Outcome.PASSED),
    ]
    three = tests["test_three_ranks"]
    assert three.outcome is Outcome.PASSED, (three.message, out)
    assert len(three.subtests) == 3
    assert three.tier == "fast"


def test_failure_names_its_rank(suite_run: tuple[Path, str]) -> None:
    failed = _results(suite_run)["test_fails_on_rank_1"]
    assert failed.outcome is Outcome.FAILED and failed.failure_kind == "code"
    assert "rank 1 of 2: AssertionError: rank 1 took the wrong branch" in failed.message
    assert "passed: rank 0 of 2" in failed.message
    assert 'assert dist.rank == 0, f"rank {dist.rank} took the wrong branch"' in failed.traceback
    assert [(s.msg, s.outcome) for s in failed.subtests] == [
        ("rank 0 of 2", Outcome.PASSED),
        ("rank 1 of 2", Outcome.FAILED),
    ]


def test_hang_times_out_with_every_stack_and_no_process_left(
    suite_run: tuple[Path, str],
) -> None:
    hung = _results(suite_run)["test_hangs"]
    assert hung.outcome is Outcome.FAILED and hung.failure_kind == "timeout"
    assert "did not finish within 6.0 s (distributed_timeout)" in hung.message
    text = hung.traceback
    # each rank's Python stack, at the line it waits on
    assert "rank 0 of 2: Python stack when stopped" in text
    assert "rank 1 of 2: Python stack when stopped" in text
    assert "in barrier" in text and "in test_hangs" in text
    root, _ = suite_run
    assert not _ranks_running(root), "a rank outlived its test"


def test_rank_that_dies_is_a_crash(suite_run: tuple[Path, str]) -> None:
    dead = _results(suite_run)["test_rank_dies"]
    assert dead.outcome is Outcome.FAILED and dead.failure_kind == "crash"
    assert "rank 1 of 2: died (SIGABRT)" in dead.message
    assert "Fatal Python error: Aborted" in dead.traceback


def test_fixtures_ranks_cannot_have_are_named(suite_run: tuple[Path, str]) -> None:
    tests = _results(suite_run)
    bound = tests["test_process_bound_fixture"]
    assert bound.outcome is Outcome.FAILED
    assert "fixtures not supported in distributed tests" in bound.message
    assert "monkeypatch (patches the pytest process, not the ranks)" in bound.message
    outside = tests["test_dist_outside_a_distributed_test"]
    assert outside.outcome is Outcome.ERROR
    assert "@pytest.mark.distributed(world_size=N)" in outside.message


def test_rank_output_is_shown_with_its_rank(suite_run: tuple[Path, str]) -> None:
    # output of a passing test is not shown; the failing one's ranks print nothing; the inner
    # run's terminal summary shows each failing rank as a subtest
    out = suite_run[1]
    assert "SUBFAILED[rank 1 of 2] tests/test_ranks.py::test_fails_on_rank_1" in out


def test_planted_ddp_bugs_caught_and_twins_pass_on_five_seeds(
    suite_run: tuple[Path, str],
) -> None:
    tests, out = _results(suite_run), suite_run[1]
    planted = tests["test_planted_bugs_and_twins"]
    assert planted.outcome is Outcome.PASSED, (planted.message, planted.traceback, out)
    launched = tests["test_launches_its_own_ranks"]
    assert launched.outcome is Outcome.PASSED, (launched.message, launched.traceback, out)
    root, _ = suite_run
    found = list((root / "tmp").rglob("messages.json"))
    messages = json.loads(found[0].read_text())
    assert sorted(messages) == ["0", "1", "2", "3", "4"]
    no_sync, twice, init = messages["0"]
    assert "different parameters" in no_sync and "no_sync()" in no_sync
    assert "rank 1's update is" in no_sync
    assert "0.50x" in twice and "once too often" in twice
    assert (
        "initial weights is not the same on every rank" in init
        and "a seed that depends on the rank" in init
    )


def _ranks_running(root: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == root:
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


RENDEZVOUS = """
import os, time
from pathlib import Path
import pytest

def _meet(dist, me, other):
    # each test waits for the other: both must run at the same time to pass
    where = Path(os.environ["RENDEZVOUS"])
    if dist.rank == 0:
        (where / me).write_text(os.environ["MASTER_PORT"])
        deadline = time.monotonic() + 300
        while not (where / other).exists():
            assert time.monotonic() < deadline, "the other distributed test never ran alongside"
            time.sleep(0.1)
    dist.barrier()

@pytest.mark.distributed(world_size=2)
def test_a(dist):
    _meet(dist, "a", "b")

@pytest.mark.distributed(world_size=2)
def test_b(dist):
    _meet(dist, "b", "a")
"""


def test_two_distributed_tests_at_once_under_xdist(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.mlcheck]\n")
    (tmp_path / "test_meet.py").write_text(RENDEZVOUS)
    meet = tmp_path / "meet"
    meet.mkdir()
    os.environ["RENDEZVOUS"] = str(meet)
    try:
        proc = _pytest(tmp_path, "-n", "2", "test_meet.py", "--mlcheck-results", "res", threads=1)
    finally:
        del os.environ["RENDEZVOUS"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outcomes = {t.name: t.outcome for t in read(tmp_path / "res").tests}
    assert outcomes == {"test_a": Outcome.PASSED, "test_b": Outcome.PASSED}
    ports = {(meet / name).read_text() for name in ("a", "b")}
    assert len(ports) == 2  # each test its own store, on a port the OS gave


# ---------------------------------------------------------------------------------------------
# pure parts: the marker, the verdict, the sampler check


def test_marker_arguments_are_checked() -> None:
    assert Spec.of((), {"world_size": 2}) == Spec(2)
    assert Spec.of((3,), {"timeout": 5}) == Spec(3, 5.0)
    for args, kwargs in [
        ((), {}),
        ((), {"world_size": 0}),
        ((), {"ranks": 2}),
        ((2,), {"timeout": -1}),
    ]:
        with pytest.raises(UsageError, match=r"world_size|timeout"):
            Spec.of(args, kwargs)


def test_first_rank_to_fail_decides_the_message() -> None:
    echo = RankResult(0, 2, "failed", "RuntimeError: Connection closed by peer", ended_at=2.0)
    cause = RankResult(1, 2, "failed", "AssertionError: bad shard", ended_at=1.0, kind="code")
    kind, message = verdict_text([echo, cause], 120) or ("", "")
    assert message.splitlines()[:2] == [
        "rank 1 of 2: AssertionError: bad shard",
        "rank 0 of 2: RuntimeError: Connection closed by peer",
    ]
    assert kind == "code"
    assert verdict_text([RankResult(0, 1, "passed")], 120) is None


@pytest.mark.parametrize("seed", range(5))
def test_sampler_shards_planted_overlap_caught_twin_passes(seed: int) -> None:
    def real(rank: int, world_size: int) -> DistributedSampler[int]:
        sampler = DistributedSampler(range(11), num_replicas=world_size, rank=rank, seed=seed)
        return sampler

    def ignores_rank(rank: int, world_size: int) -> DistributedSampler[int]:  # planted
        return DistributedSampler(range(11), num_replicas=world_size, rank=0, seed=seed)

    assert_shards_disjoint(real, 2, 11, allow_padding=True)
    with pytest.raises(CheckFailed, match=r"no rank|more than one rank"):
        assert_shards_disjoint(real, 2, 11)  # 11 rows: padding repeats one
    with pytest.raises(CheckFailed, match=r"more than one rank(.|\n)*ignores its rank"):
        assert_shards_disjoint(ignores_rank, 2, 11, allow_padding=True)


def test_tier_fast_alone_gpu_with_one_device_per_rank() -> None:
    from mlcheck.tiers import MarkInfo, Tier, needs_of

    alone = needs_of([MarkInfo("distributed", (), {"world_size": 2})])
    assert (alone.tier, alone.gpu) == (Tier.FAST, False)
    on_gpus = needs_of([MarkInfo("distributed", (), {"world_size": 2}), MarkInfo("gpu")])
    assert (on_gpus.tier, on_gpus.gpu_count) == (Tier.GPU, 2)


def test_the_same_failure_on_every_rank_is_shown_once() -> None:
    text = "CheckFailed: assert_ddp_equivalent: does not match\n  likely cause: ..."
    ranks = [
        RankResult(0, 2, "failed", text, traceback="tb0\n" + text, ended_at=2.0),
        RankResult(1, 2, "failed", text, traceback="tb1\n" + text, ended_at=1.0),
    ]
    _, message = verdict_text(ranks, 120) or ("", "")
    assert message.splitlines()[:2] == [
        "rank 1 of 2: CheckFailed: assert_ddp_equivalent: does not match",
        "rank 0 of 2: the same failure",
    ]
    assert "tb1" in message and "tb0" not in message
