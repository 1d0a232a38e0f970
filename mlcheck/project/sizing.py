"""How much accelerator memory a gpu-tier test needs, and which runner class gets it.

An estimate comes from one of two places, the better first:

- a **measured peak**: ``torch.cuda.max_memory_allocated`` recorded for the test in an earlier
  run's ``results.json`` (``gpu_peak_bytes``), plus :data:`PEAK_MARGIN` and the CUDA context;
- the **models it names** (``@pytest.mark.real_model``), built full size on the meta device
  (no memory, no weights): parameter and buffer bytes at their dtype, plus
  :data:`ACTIVATION_ALLOWANCE` of that for activations and workspaces, plus
  :data:`CUDA_CONTEXT_GB` for the CUDA context.

``gpu(min_memory_gb="auto")`` asks for the estimate; :func:`plan_runners` maps the tests'
needs to the runner classes of ``[tool.mlcheck] gpu_runners`` (``{"24" = [labels], "80" =
[labels]}``): each test to the smallest class that fits, one dispatch per class used, and a test
that fits no class reported before any GPU time is spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ManifestError

if TYPE_CHECKING:
    import torch

    from ..results.schema import RunResults

__all__ = [
    "ACTIVATION_ALLOWANCE",
    "CUDA_CONTEXT_GB",
    "PEAK_MARGIN",
    "Estimate",
    "RunnerPlan",
    "estimate_from_models",
    "estimate_from_peak",
    "parameter_bytes",
    "plan_runners",
    "read_gpu_runners",
]

GB = 1024**3
# Inference-style tests hold the weights plus activations a fraction of them for batch sizes that
# tests use; training tests hold more (gradients, optimizer state), which only a measured peak
# knows: after the first GPU run, the peak replaces this allowance.
ACTIVATION_ALLOWANCE = 0.20
# The CUDA context, cuBLAS/cuDNN workspaces and the caching allocator's slack: not counted by
# max_memory_allocated, about 0.5-1 GB on current drivers.
CUDA_CONTEXT_GB = 1.0
PEAK_MARGIN = 0.10  # measured peaks vary with kernels chosen and fragmentation


@dataclass(frozen=True)
class Estimate:
    """A test's memory need in GB and, in words, what it is based on."""

    nodeid: str
    gb: float
    basis: str


def parameter_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of parameters and buffers by dtype (tied weights counted once); works on meta."""
    seen: set[int] = set()
    by_dtype: dict[str, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        key = str(tensor.dtype).removeprefix("torch.")
        by_dtype[key] = by_dtype.get(key, 0) + tensor.numel() * tensor.element_size()
    return by_dtype


def task_of(config: Any) -> str | None:
    """The task whose head the config's checkpoint has (``architectures``), None for the bare
    model: ``LlamaForCausalLM`` -> ``causal-lm``, so the estimate counts an untied ``lm_head``."""
    from ..models import TASKS

    suffixes = {name.removeprefix("AutoModel"): task for task, name in TASKS.items() if task}
    for arch in getattr(config, "architectures", None) or ():
        for suffix, task in suffixes.items():
            if suffix and str(arch).endswith(suffix):
                return task
    return None


def estimate_from_models(
    nodeid: str,
    model_ids: Sequence[Any],
    factory: Any,
    dtype: torch.dtype | None = None,
) -> Estimate:
    """The need of a test using ``model_ids`` (ids or configs), built full size on the meta
    device by ``factory`` (a :class:`~mlcheck.models.ModelFactory`) with the checkpoint's head."""
    weights = 0
    parts = []
    for model_id in model_ids:
        config = factory.config(model_id) if isinstance(model_id, str) else model_id
        model = factory.empty(config, task=task_of(config), dtype=dtype)
        by_dtype = parameter_bytes(model)
        name = model_id if isinstance(model_id, str) else type(model).__name__
        weights += sum(by_dtype.values())
        detail = ", ".join(f"{n / GB:.1f} GB {d}" for d, n in sorted(by_dtype.items()))
        parts.append(f"{name} {detail}")
    gb = weights / GB * (1 + ACTIVATION_ALLOWANCE) + CUDA_CONTEXT_GB
    basis = (
        f"weights on the meta device ({'; '.join(parts)}) + {ACTIVATION_ALLOWANCE:.0%} for "
        f"activations + {CUDA_CONTEXT_GB:g} GB CUDA context"
    )
    return Estimate(nodeid, round(gb, 2), basis)


def estimate_from_peak(nodeid: str, peak_bytes: int, device: str | None = None) -> Estimate:
    gb = peak_bytes / GB * (1 + PEAK_MARGIN) + CUDA_CONTEXT_GB
    where = f" on {device}" if device else ""
    basis = (
        f"measured peak {peak_bytes / GB:.1f} GB{where} + {PEAK_MARGIN:.0%} + "
        f"{CUDA_CONTEXT_GB:g} GB CUDA context"
    )
    return Estimate(nodeid, round(gb, 2), basis)


def measured_peaks(results: RunResults) -> dict[str, tuple[int, str | None]]:
    """``nodeid -> (peak bytes, device)`` from a run's results (tests that recorded a peak)."""
    return {
        t.nodeid: (t.gpu_peak_bytes, t.device)
        for t in results.tests
        if t.gpu_peak_bytes is not None
    }


def estimate(
    nodeid: str,
    model_ids: Sequence[Any],
    factory: Any,
    peaks: Mapping[str, tuple[int, str | None]],
) -> Estimate | None:
    """The measured peak when one was recorded, else the models' estimate; None without either."""
    if nodeid in peaks:
        return estimate_from_peak(nodeid, *peaks[nodeid])
    if model_ids:
        return estimate_from_models(nodeid, model_ids, factory)
    return None


def memory_problem(estimate: Estimate, device_gb: float | None, device: str) -> str | None:
    """For ``gpu(min_memory_gb="auto")`` on the runner: the message when the estimate exceeds
    the device's memory (None: it fits, or the device's memory is not known)."""
    if device_gb is None or estimate.gb <= device_gb + 1e-9:
        return None
    return (
        f"needs about {estimate.gb:.1f} GB of accelerator memory ({estimate.basis}), {device} "
        f"has {device_gb:.1f} GB: send it to a larger runner class ([tool.mlcheck] gpu_runners)"
    )


def reset_peak() -> None:
    """Start measuring this process's peak CUDA memory (a no-op without CUDA in use)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int | None:
    """Peak CUDA memory allocated since :func:`reset_peak` (None: CUDA never used here)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


@dataclass(frozen=True)
class RunnerPlan:
    """Which runner class each test goes to, and the tests no class can hold."""

    dispatches: Mapping[float, tuple[Estimate, ...]] = field(default_factory=dict)  # GB -> tests
    labels: Mapping[float, tuple[str, ...]] = field(default_factory=dict)  # GB -> runs-on labels
    too_big: tuple[Estimate, ...] = ()

    def reasons(self) -> list[str]:
        """One line per dispatch (and per test too big): which runner and why."""
        lines = []
        for gb, tests in sorted(self.dispatches.items()):
            largest = max(tests, key=lambda e: e.gb)
            lines.append(
                f"{len(tests)} test{'s' if len(tests) != 1 else ''} on "
                f"`{', '.join(self.labels[gb])}` ({gb:g} GB class): largest need "
                f"{largest.gb:.1f} GB for {largest.nodeid} ({largest.basis})"
            )
        largest_class = max(self.labels, default=0)
        for est in self.too_big:
            lines.append(
                f"{est.nodeid} needs {est.gb:.1f} GB ({est.basis}), more than the largest "
                f"runner class ({largest_class:g} GB): not dispatched; add a larger class to "
                "[tool.mlcheck] gpu_runners or make the test smaller"
            )
        return lines


def plan_runners(
    estimates: Iterable[Estimate], runners: Mapping[float, Sequence[str]]
) -> RunnerPlan:
    """Each test to the smallest runner class whose memory holds its need."""
    classes = sorted(runners)
    groups: dict[float, list[Estimate]] = {}
    too_big = []
    for est in estimates:
        fits = [gb for gb in classes if gb + 1e-9 >= est.gb]
        if fits:
            groups.setdefault(fits[0], []).append(est)
        else:
            too_big.append(est)
    return RunnerPlan(
        dispatches={gb: tuple(tests) for gb, tests in groups.items()},
        labels={gb: tuple(runners[gb]) for gb in classes},
        too_big=tuple(too_big),
    )


def read_gpu_runners(table: Mapping[str, Any]) -> dict[float, tuple[str, ...]]:
    """``[tool.mlcheck] gpu_runners`` validated: GB (a number as a string) -> runs-on labels."""
    raw = table.get("gpu_runners", {})
    example = 'gpu_runners = { "24" = ["self-hosted", "gpu-24g"], "80" = ["gpu-80g"] }'
    if not isinstance(raw, Mapping):
        raise ManifestError(f"[tool.mlcheck] gpu_runners must be a table, like {example}")
    runners: dict[float, tuple[str, ...]] = {}
    for key, labels in raw.items():
        try:
            gb = float(key)
        except ValueError:
            gb = -1.0
        if not gb > 0:
            raise ManifestError(
                f"[tool.mlcheck] gpu_runners key {key!r} is not a memory size in GB; {example}"
            )
        if isinstance(labels, str):
            labels = [labels]
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise ManifestError(
                f"[tool.mlcheck] gpu_runners.{key} must list runs-on labels as strings; {example}"
            )
        runners[gb] = tuple(labels)
    return runners
