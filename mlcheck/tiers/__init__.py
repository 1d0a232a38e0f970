"""Tiers: the one vocabulary (SPEC §2). Which tier a test belongs to, which tiers run, how a
selection is written, and what a test needs.

- :class:`Tier`, :data:`TIER_NAMES`; :func:`parse_tiers` reads ``"fast,real"`` / ``"all"``;
  :func:`format_tiers` writes a selection in canonical order, which is also the key of its
  report section (:func:`section_key`, :func:`tier_key`);
- :data:`SCHEDULED_TIERS`: the one name for what a GPU run gets by default (the label's
  dispatch, ``tier: auto`` on ``workflow_dispatch`` and ``pull_request_target``);
  :data:`DEFAULT_GPU_LABEL`: the PR label that asks for one;
- :func:`parse_tiers` is the one parser of tier text: the CLI's ``--tier``, the plugin's
  ``--mlcheck-tier``, ``MLCHECK_TIER``, the action's ``tier:`` input, a dispatch's ``tier``
  input and (through :func:`parse_tier`) the manifest's ``markers`` and ``decorators``;
- a test's tier is decided by :func:`mlcheck.tiers.decide.decide` (markers, decorators,
  configuration); :func:`needs_of` is its marker half (for an event's tiers see
  :mod:`mlcheck.github.event`).

Pure logic over marker names and arguments (no pytest import), plus accelerator detection,
which imports torch only when a selected test needs an accelerator.

>>> needs_of([MarkInfo("real_model", ("org/name",))]).tier
<Tier.REAL: 'real'>
>>> sorted(parse_tiers("fast,real"))
[<Tier.FAST: 'fast'>, <Tier.REAL: 'real'>]
>>> tier_key("gpu,real") == SCHEDULED_TIERS
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

from .. import constants
from ..errors import AcceleratorMissing, UsageError

REAL_MARKER = "real_model"
GPU_MARKER = "gpu"
DISTRIBUTED_MARKER = "distributed"  # mlcheck.distributed.launch; with gpu, one device per rank
DEFAULT_GPU_LABEL = "mlcheck:gpu"
# The workflow the label dispatches (action.yml's `gpu-workflow` default says the same).
DEFAULT_GPU_WORKFLOW = "mlcheck-gpu.yml"


class Tier(StrEnum):
    """In canonical order: a selection is written fast, then real, then gpu."""

    FAST = "fast"
    REAL = "real"
    GPU = "gpu"


ALL_TIERS = frozenset(Tier)
TIER_NAMES: tuple[str, ...] = tuple(t.value for t in Tier)
# The tiers a GPU run gets when the label schedules one (the `tier: auto` of a dispatch).
SCHEDULED_TIERS = "real,gpu"


def parse_tiers(text: str, *, source: str | None = None) -> frozenset[Tier]:
    """Parse ``"fast,real"`` or ``"all"``; unknown names are a usage error naming the valid ones
    (and ``source``, where the text came from, e.g. ``MLCHECK_TIER``).

    >>> sorted(parse_tiers("real,fast"))
    [<Tier.FAST: 'fast'>, <Tier.REAL: 'real'>]
    """
    where = f"{source}: " if source else ""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError(f"{where}no tier given: use fast, real, gpu (comma-separated) or all")
    tiers: set[Tier] = set()
    for name in names:
        if name == "all":
            tiers |= ALL_TIERS
        elif name in Tier.__members__.values():
            tiers.add(Tier(name))
        else:
            raise UsageError(
                f"{where}unknown tier {name!r}: use fast, real, gpu (comma-separated) or all"
            )
    return frozenset(tiers)


def parse_tier(text: object, *, source: str | None = None) -> Tier:
    """Exactly one tier name (a manifest's ``markers`` and ``decorators`` values), read by
    :func:`parse_tiers`: ``all`` or a list is an error naming ``source``.

    >>> parse_tier("real")
    <Tier.REAL: 'real'>
    """
    where = f"{source} = {text!r}" if source else repr(text)
    one = f"{where} is not a tier; use one of {', '.join(repr(t) for t in TIER_NAMES)}"
    if not isinstance(text, str) or "," in text or text.strip().lower() == "all":
        raise UsageError(one)
    try:
        (tier,) = parse_tiers(text)
    except UsageError:
        raise UsageError(one) from None
    return tier


def selected_tiers(option: str | None, option_name: str) -> frozenset[Tier]:
    """The tiers a run selects: the option when given (an empty one is an error), else
    ``MLCHECK_TIER``, else the default; errors name where the bad text came from.

    >>> sorted(selected_tiers("gpu", "--tier"))
    [<Tier.GPU: 'gpu'>]
    """
    if option is not None:
        return parse_tiers(option, source=option_name)
    if (env := constants.env_tier()) is not None:
        return parse_tiers(env, source=f"{constants.ENV_TIER}={env}")
    return parse_tiers(constants.DEFAULT_TIER)


def tier_order(name: str) -> tuple[int, str]:
    """Sort key of a tier name: the tiers in :class:`Tier` order, unknown names after them."""
    return (TIER_NAMES.index(name), "") if name in TIER_NAMES else (len(TIER_NAMES), name)


def format_tiers(tiers: Iterable[str]) -> str:
    """A selection in canonical order, each tier once (the one way tiers are written).

    >>> format_tiers([Tier.GPU, Tier.REAL, Tier.GPU])
    'real,gpu'
    """
    return ",".join(sorted({str(t) for t in tiers}, key=tier_order))


def section_key(tiers: Iterable[str]) -> str:
    """The report section of a run of ``tiers``: :func:`format_tiers`, and ``fast`` for a run
    that names none (results written before runs recorded their tiers).

    >>> section_key(["gpu", "real"]), section_key([])
    ('real,gpu', 'fast')
    """
    return format_tiers(tiers) or Tier.FAST.value


def tier_key(text: str) -> str:
    """The section key of a selection as a user writes it (``"gpu,real"``, ``"all"``); a bad
    name is a usage error.

    >>> tier_key("all")
    'fast,real,gpu'
    """
    return section_key(parse_tiers(text))


@dataclass(frozen=True)
class MarkInfo:
    """A marker as the plugin sees it (name, args, kwargs), decoupled from pytest."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    via: str | None = None  # the decorator this marker stands for (``slow``), if any


@dataclass(frozen=True)
class Needs:
    """What one test needs, derived from its markers."""

    tier: Tier
    models: tuple[str, ...] = ()
    gpu: bool = False
    min_memory_gb: float | None = None
    gpu_count: int = 1
    memory_auto: bool = False  # gpu(min_memory_gb="auto"): estimated by mlcheck.project.sizing
    # what the test was marked with, where it is not mlcheck's own marker: the suite's markers
    # mapped in the manifest and the ecosystem's decorators (``slow``, ``require_torch_gpu``)
    marked: tuple[str, ...] = ()


def needs_of(marks: Iterable[MarkInfo], marker_map: Mapping[str, str] | None = None) -> Needs:
    """The markers' half of :func:`mlcheck.tiers.decide.decide` (which also reads a test's
    decorators; call that): ``gpu`` if marked gpu, else ``real`` if marked real_model, else
    ``fast``. ``marker_map`` maps a suite's own markers to tiers (``{"slow": "real"}``)."""
    marker_map = marker_map or {}
    models: list[str] = []
    real = gpu = False
    min_memory: float | None = None
    count = 1
    world_size = 1
    auto = False
    marked: list[str] = []
    for mark in marks:
        if mark.name == DISTRIBUTED_MARKER:
            size = mark.kwargs.get("world_size", mark.args[0] if mark.args else 1)
            world_size = size if isinstance(size, int) and not isinstance(size, bool) else 1
        mapped = marker_map.get(mark.name)
        if mark.via is not None or mapped in (Tier.REAL, Tier.GPU):
            marked.append(mark.via or mark.name)
        if mark.name == REAL_MARKER or mapped == Tier.REAL:
            real = True
            if mark.name == REAL_MARKER:
                models.extend(_model_ids(mark))
        if mark.name == GPU_MARKER or mapped == Tier.GPU:
            gpu = True
            if mark.name == GPU_MARKER and mark.kwargs.get("min_memory_gb") == "auto":
                auto = True
                kwargs = {k: v for k, v in mark.kwargs.items() if k != "min_memory_gb"}
                mark = MarkInfo(mark.name, mark.args, kwargs)
            if mark.name == GPU_MARKER:
                min_memory, count = _gpu_args(mark, min_memory, count)
    tier = Tier.GPU if gpu else Tier.REAL if real else Tier.FAST
    if gpu:  # a distributed gpu test runs one rank per device
        count = max(count, world_size)
    return Needs(
        tier,
        tuple(dict.fromkeys(models)),
        gpu,
        min_memory,
        count,
        memory_auto=auto,
        marked=tuple(dict.fromkeys(marked)),
    )


def _model_ids(mark: MarkInfo) -> list[str]:
    ids = list(mark.args) + list(mark.kwargs.get("models", ()))
    for model_id in ids:
        if not isinstance(model_id, str) or not model_id:
            raise UsageError(
                f"@pytest.mark.real_model takes model ids as strings, got {model_id!r}: "
                'write @pytest.mark.real_model("org/name")'
            )
    return ids


def _gpu_args(mark: MarkInfo, min_memory: float | None, count: int) -> tuple[float | None, int]:
    unknown = set(mark.kwargs) - {"min_memory_gb", "count"}
    if unknown or mark.args:
        raise UsageError(
            "@pytest.mark.gpu takes only min_memory_gb= and count=, "
            f"got args {mark.args!r} kwargs {sorted(unknown)!r}"
        )
    if "min_memory_gb" in mark.kwargs:
        min_memory = max(float(mark.kwargs["min_memory_gb"]), min_memory or 0.0)
    if "count" in mark.kwargs:
        count = max(int(mark.kwargs["count"]), count)
    return min_memory, count


def not_run_reason(needs: Needs, gpu_label: str = DEFAULT_GPU_LABEL) -> str:
    """Why a test outside the selected tiers did not run, and how to run it."""
    # Say what the test was marked with, not a guess at what it needs: a `@slow` test may build
    # a random model, a `require_torch_npu` one needs that device, not any GPU.
    marked = ", ".join(f"`{m}`" for m in needs.marked)
    if needs.tier is Tier.GPU:
        what = "needs a GPU"
        if needs.models:
            what += " and real weights"
        if marked and not needs.models:
            what = f"marked {marked}"
        return (
            f"{what} (tier gpu): label the PR `{gpu_label}`, or run "
            "`mlcheck run --tier gpu` on a machine with an accelerator"
        )
    if needs.tier is Tier.REAL:
        what = f"marked {marked}" if marked and not needs.models else "needs real weights"
        return (
            f"{what} (tier real): label the PR "
            f"`{gpu_label}`, or run `mlcheck run --tier real` locally"
        )
    return "tier fast not selected: run `mlcheck run --tier fast`"


# ---------------------------------------------------------------------------------------------
# Accelerators


@dataclass(frozen=True)
class Accelerator:
    type: str  # cuda, xpu, mps
    name: str
    count: int
    memory_gb: float | None  # total memory of device 0 where torch can read it


@cache
def detect_accelerator() -> Accelerator | None:
    """The accelerator torch reports: CUDA (ROCm builds too) first, then XPU, then MPS."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Accelerator(
            "cuda", props.name, torch.cuda.device_count(), props.total_memory / 2**30
        )
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        props = xpu.get_device_properties(0)
        return Accelerator("xpu", props.name, xpu.device_count(), props.total_memory / 2**30)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Accelerator("mps", "Apple MPS", 1, None)
    return None


def accelerator_problem(
    needs: Needs, accel: Accelerator | None, gpu_label: str = DEFAULT_GPU_LABEL
) -> str | None:
    """The message for a gpu test this machine cannot run, or None when it can; it names the
    project's GPU label (``--mlcheck-gpu-label``) as the way to a GPU runner."""
    if not needs.gpu:
        return None
    if accel is None:
        return (
            "needs an accelerator, but torch reports none (no CUDA, XPU or MPS device): run the "
            f"gpu tier on a GPU runner (label the PR `{gpu_label}`), or pass "
            "--mlcheck-allow-missing to skip it locally"
        )
    if accel.count < needs.gpu_count:
        return (
            f"needs {needs.gpu_count} accelerators, this machine has {accel.count} "
            f"({accel.name}): send it to a runner with {needs.gpu_count} devices"
        )
    if (
        needs.min_memory_gb
        and accel.memory_gb is not None
        and (accel.memory_gb + 1e-9 < needs.min_memory_gb)
    ):
        return (
            f"needs {needs.min_memory_gb:g} GB of accelerator memory, {accel.name} has "
            f"{accel.memory_gb:.1f} GB: send it to a runner with a larger GPU"
        )
    return None


def require_accelerator() -> Accelerator:
    """The accelerator, or :class:`AcceleratorMissing` with the same text the tier rules use."""
    accel = detect_accelerator()
    problem = accelerator_problem(Needs(Tier.GPU, gpu=True), accel)
    if problem or accel is None:
        raise AcceleratorMissing(problem or "no accelerator")
    return accel
