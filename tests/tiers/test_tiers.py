import pytest

from mlcheck.errors import UsageError
from mlcheck.tiers import (
    Accelerator,
    MarkInfo,
    Needs,
    Tier,
    accelerator_problem,
    format_tiers,
    needs_of,
    not_run_reason,
    parse_tiers,
    section_key,
    tier_key,
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


# --- one way to write a selection -----------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        (["gpu", "real"], "real,gpu"),
        ([Tier.GPU, Tier.FAST, Tier.GPU], "fast,gpu"),
        (["nightly", "gpu", "aaa"], "gpu,aaa,nightly"),  # unknown names after the tiers
        ([], "fast"),  # results that name no tiers are the fast section
    ],
)
def test_section_key_is_canonical(tiers, expected):
    assert section_key(tiers) == expected


def test_every_writer_of_tiers_agrees():
    """What `mlcheck run` passes to pytest, the report's section key and the schedule's `tier`
    are written one way; the event's and the schedule's default tiers are one canonical key."""
    from mlcheck.action import label_gate as gpu_label
    from mlcheck.github import event
    from mlcheck.publish import tracking
    from mlcheck.report import sticky
    from mlcheck.results import merge
    from mlcheck.results.schema import RunInfo
    from mlcheck.tiers import SCHEDULED_TIERS, TIER_NAMES

    for text in ("real,gpu", "gpu,real", " GPU , real", "gpu,real,gpu"):
        tiers = parse_tiers(text)
        assert format_tiers(tiers) == tier_key(text) == SCHEDULED_TIERS
        assert merge.section_key(RunInfo(tiers=tuple(reversed(sorted(tiers))))) == SCHEDULED_TIERS
    assert tier_key("all") == ",".join(TIER_NAMES) == format_tiers(Tier)
    assert event.TIER_SCHEDULED == gpu_label.DEFAULT_GPU_TIER == tier_key(SCHEDULED_TIERS)
    assert set(tracking.BASE_KEYS) == {*TIER_NAMES, SCHEDULED_TIERS}
    assert set(tracking.BASE_KEYS) <= set(sticky.SECTION_ORDER)
    with pytest.raises(UsageError, match="unknown tier 'gpus'"):
        tier_key("real,gpus")


def test_the_gpu_label_has_one_default():
    """Every place that names the GPU label by default takes it from tiers."""
    from mlcheck.action import label_gate as gpu_label
    from mlcheck.action import main as action
    from mlcheck.cli import build_parser
    from mlcheck.publish import PublishOptions
    from mlcheck.tiers import DEFAULT_GPU_LABEL, SCHEDULED_TIERS

    assert DEFAULT_GPU_LABEL == "mlcheck:gpu"
    assert action.Inputs().gpu_label == action.INPUT_DEFAULTS["gpu-label"] == DEFAULT_GPU_LABEL
    assert PublishOptions().gpu_label == gpu_label.ScheduleOptions().label == DEFAULT_GPU_LABEL
    parser = build_parser()
    assert parser.parse_args(["publish"]).gpu_label == DEFAULT_GPU_LABEL
    schedule = parser.parse_args(["schedule"])
    assert (schedule.label, schedule.tier) == (DEFAULT_GPU_LABEL, SCHEDULED_TIERS)
    assert DEFAULT_GPU_LABEL in accelerator_problem(Needs(Tier.GPU, gpu=True), None)


def test_not_run_reason_says_what_the_test_was_marked_with():
    slow = needs_of([MarkInfo("slow")], {"slow": "real"})
    assert slow.marked == ("slow",)
    assert not_run_reason(slow).startswith("marked `slow` (tier real)")
    # a decorator read from the source, as mlcheck.tiers.decorators hands it over
    npu = needs_of([MarkInfo("gpu", kwargs={"count": 1}, via="require_torch_npu")])
    assert not_run_reason(npu).startswith("marked `require_torch_npu` (tier gpu)")
    # real_model names the weights: that is what it needs
    weights = needs_of([MarkInfo("real_model", ("o/m",)), MarkInfo("slow")], {"slow": "real"})
    assert not_run_reason(weights).startswith("needs real weights (tier real)")
