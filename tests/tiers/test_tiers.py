import dataclasses

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
    parse_tier,
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


@pytest.mark.parametrize("text", ["real,gpu", "gpu,real", " GPU , real", "gpu,real,gpu"])
def test_every_writer_of_tiers_agrees(tmp_path, text):
    """However the tiers are spelled (the action's `tier:` input, a dispatch's `tier`), what the
    action passes to `mlcheck run --tier` and `mlcheck schedule --tier`, the section it
    publishes under, and the section the plugin's results fall in are written one way."""
    from mlcheck.action.inputs import Inputs, cli_args, plan
    from mlcheck.github.event import parse_event
    from mlcheck.results import merge
    from mlcheck.results.schema import RunInfo

    env = {"GITHUB_WORKSPACE": str(tmp_path)}
    push = parse_event("push", {}, {"GITHUB_REPOSITORY": "o/r"})
    dispatch = parse_event(
        "workflow_dispatch", {"inputs": {"tier": text}}, {"GITHUB_REPOSITORY": "o/r"}
    )
    written = set()
    for inputs, event in ((Inputs(tier=text), push), (Inputs(), dispatch)):
        for command in ("run", "schedule", "publish"):
            p = plan(dataclasses.replace(inputs, command=command), event, env)
            args = cli_args(inputs, p)
            flag = "--section" if command == "publish" else "--tier"
            written.add(args[args.index(flag) + 1])
    # the plugin records the tiers it ran (format_tiers), and the report keys its section so
    ran = RunInfo(tiers=tuple(format_tiers(parse_tiers(text)).split(",")))
    written.add(merge.section_key(ran))
    assert written == {"real,gpu"}
    with pytest.raises(UsageError, match="unknown tier 'gpus'"):
        tier_key("real,gpus")


def test_the_scheduled_tiers_have_one_name():
    """What the label dispatches by default is what a dispatch without `tier` and the label's
    own event run: one constant, SCHEDULED_TIERS, read by each."""
    from mlcheck.action.label_gate import ScheduleOptions
    from mlcheck.cli import build_parser
    from mlcheck.github.event import parse_event
    from mlcheck.tiers import SCHEDULED_TIERS

    env = {"GITHUB_REPOSITORY": "o/r"}
    assert parse_event("workflow_dispatch", {"inputs": {}}, env).auto_tier == SCHEDULED_TIERS
    assert parse_event("pull_request_target", {}, env).auto_tier == SCHEDULED_TIERS
    assert ScheduleOptions().tier == SCHEDULED_TIERS
    assert build_parser().parse_args(["schedule"]).tier == SCHEDULED_TIERS
    assert tier_key(SCHEDULED_TIERS) == SCHEDULED_TIERS  # written canonically


def test_the_gpu_label_has_one_default():
    """Every place that names the GPU label by default takes it from tiers, and a configured
    label replaces it in every message (the accelerator error named the default once)."""
    from mlcheck.action import inputs as action
    from mlcheck.action import label_gate as gpu_label
    from mlcheck.cli import build_parser
    from mlcheck.publish import PublishOptions
    from mlcheck.tiers import DEFAULT_GPU_LABEL

    assert DEFAULT_GPU_LABEL == "mlcheck:gpu"
    assert action.Inputs().gpu_label == action.INPUT_DEFAULTS["gpu-label"] == DEFAULT_GPU_LABEL
    assert PublishOptions().gpu_label == gpu_label.ScheduleOptions().label == DEFAULT_GPU_LABEL
    parser = build_parser()
    assert parser.parse_args(["publish"]).gpu_label == DEFAULT_GPU_LABEL
    assert parser.parse_args(["schedule"]).label == DEFAULT_GPU_LABEL
    gpu = Needs(Tier.GPU, gpu=True)
    assert f"`{DEFAULT_GPU_LABEL}`" in accelerator_problem(gpu, None)
    for message in (
        accelerator_problem(gpu, None, gpu_label="run-on-gpu"),
        not_run_reason(gpu, gpu_label="run-on-gpu"),
        not_run_reason(Needs(Tier.REAL, ("o/m",)), gpu_label="run-on-gpu"),
    ):
        assert message is not None
        assert "`run-on-gpu`" in message and DEFAULT_GPU_LABEL not in message


@pytest.mark.parametrize("text", ["real", " GPU ", "fast"])
def test_the_manifest_reads_one_tier_with_the_same_parser(text):
    assert parse_tier(text) == Tier(text.strip().lower())


@pytest.mark.parametrize("text", ["all", "real,gpu", "slow", "", 3])
def test_the_manifest_refuses_anything_but_one_tier(text):
    with pytest.raises(UsageError, match="is not a tier; use one of 'fast', 'real', 'gpu'"):
        parse_tier(text, source="`markers.slow`")


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
