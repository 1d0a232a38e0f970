import pytest

from mlcheck.errors import UsageError
from mlcheck.tiers import (
    Accelerator,
    MarkInfo,
    Needs,
    Tier,
    accelerator_problem,
    needs_of,
    not_run_reason,
    parse_tiers,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fast", {Tier.FAST}),
        ("fast,real", {Tier.FAST, Tier.REAL}),
        (" REAL , gpu ", {Tier.REAL, Tier.GPU}),
        ("all", {Tier.FAST, Tier.REAL, Tier.GPU}),
    ],
)
def test_parse_tiers(text, expected):
    assert parse_tiers(text) == expected


@pytest.mark.parametrize("text", ["", "fats", "fast,gpus", ","])
def test_parse_tiers_rejects_unknown_names_and_says_which_exist(text):
    with pytest.raises(UsageError, match="fast, real, gpu"):
        parse_tiers(text)


def test_unmarked_is_fast():
    assert needs_of([]) == Needs(Tier.FAST)


def test_real_model_marker_gives_real_tier_and_models():
    needs = needs_of(
        [MarkInfo("real_model", ("org/a", "org/b")), MarkInfo("real_model", ("org/a",))]
    )
    assert needs.tier is Tier.REAL
    assert needs.models == ("org/a", "org/b")
    assert not needs.gpu


def test_gpu_wins_over_real_and_keeps_models():
    needs = needs_of(
        [
            MarkInfo("gpu", kwargs={"min_memory_gb": 40, "count": 2}),
            MarkInfo("real_model", ("o/m",)),
        ]
    )
    assert needs == Needs(Tier.GPU, ("o/m",), True, 40.0, 2)


def test_marker_map_maps_a_suites_own_markers():
    mapping = {"slow": "real", "cuda": "gpu"}
    assert needs_of([MarkInfo("slow")], mapping).tier is Tier.REAL
    assert needs_of([MarkInfo("cuda")], mapping).tier is Tier.GPU
    assert needs_of([MarkInfo("other")], mapping).tier is Tier.FAST


def test_bad_marker_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="real_model"):
        needs_of([MarkInfo("real_model", (3,))])
    with pytest.raises(UsageError, match="min_memory_gb"):
        needs_of([MarkInfo("gpu", kwargs={"memory": 3})])


def test_not_run_reasons_say_how_to_run():
    assert "mlcheck:gpu" in not_run_reason(Needs(Tier.REAL, ("o/m",)))
    assert "--tier real" in not_run_reason(Needs(Tier.REAL, ("o/m",)))
    gpu = not_run_reason(Needs(Tier.GPU, gpu=True), gpu_label="run-gpu")
    assert "run-gpu" in gpu and "--tier gpu" in gpu
    assert "--tier fast" in not_run_reason(Needs(Tier.FAST))


H100 = Accelerator("cuda", "NVIDIA H100 80GB HBM3", 1, 79.1)


def test_accelerator_problems():
    gpu = Needs(Tier.GPU, gpu=True)
    assert accelerator_problem(Needs(Tier.FAST), None) is None
    assert "torch reports none" in accelerator_problem(gpu, None)
    assert accelerator_problem(gpu, H100) is None
    big = Needs(Tier.GPU, gpu=True, min_memory_gb=120)
    assert "120 GB" in accelerator_problem(big, H100)
    two = Needs(Tier.GPU, gpu=True, gpu_count=2)
    assert "needs 2 accelerators" in accelerator_problem(two, H100)
    # memory unknown (MPS): not checked
    assert accelerator_problem(big, Accelerator("mps", "Apple MPS", 1, None)) is None
