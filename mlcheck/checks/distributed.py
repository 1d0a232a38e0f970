"""Checks for code that trains on several processes (SPEC §14).

- :func:`assert_ddp_equivalent`: training with DDP on ``world_size`` ranks, each on its slice
  of the batch, ends with the parameters one process gets by training on the whole batch.
- :func:`assert_shards_disjoint`: a distributed sampler gives each rank its own rows, and all
  of them.
- :func:`assert_same_on_all_ranks`: inside a distributed test, a value (parameters, a config,
  a seed) is equal on every rank.

>>> from torch.utils.data import DistributedSampler
>>> def sampler(rank, world_size):
...     return DistributedSampler(range(10), num_replicas=world_size, rank=rank, shuffle=False)
>>> assert_shards_disjoint(sampler, world_size=2, dataset_len=10)
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckFailed, UsageError, listing
from ._common import _move, _seed, _seeded
from ._training import _default_loss
from .types import LossFn, OptimizerFactory

# step(model, batch, optimizer): your training step; `model` is the DDP-wrapped model.
TrainStep = Callable[[nn.Module, Any, torch.optim.Optimizer], None]
SamplerFactory = Callable[[int, int], Iterable[int]]

# How close (relative) a measured ratio must be to 1/world_size or world_size to name that
# cause: after several steps the ratio drifts a little from the one-step value (0.48x for 0.5x).
_RATIO_TOL = 0.15


# ---------------------------------------------------------------------------------------------
# assert_ddp_equivalent


def assert_ddp_equivalent(
    make_model: Callable[[], nn.Module],
    batch: Any,
    *,
    world_size: int | None = None,
    steps: int = 1,
    optimizer: OptimizerFactory | None = None,
    loss_fn: LossFn | None = None,
    step: TrainStep | None = None,
    lr: float = 0.1,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    seed: int | None = None,
    timeout: float = 120.0,
    ddp_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """DDP on ``world_size`` ranks, each training on its equal slice of ``batch``, ends with
    the same parameters as one process training on the whole ``batch``.

    ``step(model, batch, optimizer)`` is your training step (default: ``loss_fn``, backward,
    ``optimizer.step()``, ``zero_grad()``); on the ranks ``model`` is the DDP-wrapped model.
    The single-process reference always takes the plain step with ``loss_fn`` (default: the
    Hugging Face ``loss`` from ``labels``, or cross-entropy/MSE on ``(inputs, targets)``). The
    default optimizer is SGD without momentum, so a gradient off by a factor shows as that
    factor in the update (an Adam step hides it). Dropout is off on both sides.

    ``ddp_kwargs`` go to ``DistributedDataParallel`` (e.g. ``find_unused_parameters=True``).
    Called from a plain test, it starts ``world_size`` (default 2) gloo ranks itself: then
    ``make_model``, ``step``, ``loss_fn`` and ``optimizer`` must be importable (module-level
    functions or ``functools.partial`` of them). Called inside a
    ``@pytest.mark.distributed`` test, it uses that test's ranks.

    The failure names the parameters that differ most and the ratio of the DDP update to the
    single-process one: 0.5x on 2 ranks means the loss was divided by the world size once too
    often (DDP already averages gradients); ranks that disagree mean gradients were not
    all-reduced (a ``no_sync()`` left on).

    >>> import functools, torch  # doctest: +SKIP
    >>> batch = (torch.randn(8, 4), torch.randn(8, 2))  # doctest: +SKIP
    >>> assert_ddp_equivalent(functools.partial(torch.nn.Linear, 4, 2), batch)  # doctest: +SKIP
    """
    import torch.distributed as tdist

    seed = _seed(seed)
    if steps < 1:
        raise UsageError(f"assert_ddp_equivalent: steps must be >= 1, got {steps}")
    args = {
        "make_model": make_model,
        "batch": batch,
        "steps": steps,
        "optimizer": optimizer,
        "loss_fn": loss_fn,
        "step": step,
        "lr": lr,
        "seed": seed,
        "ddp_kwargs": dict(ddp_kwargs or {}),
    }
    if tdist.is_available() and tdist.is_initialized():
        size = tdist.get_world_size()
        if world_size not in (None, size):
            raise UsageError(
                f"assert_ddp_equivalent: world_size={world_size}, but this distributed test "
                f"runs {size} ranks: leave world_size out inside a distributed test"
            )
        _split(batch, 0, size)  # a batch that does not split is a usage error on every rank
        device = _current_device()
        mine = _ddp_rank(tdist.get_rank(), size, device, **args)
        finals = _gather(mine)
    else:
        size = 2 if world_size is None else world_size
        _split(batch, 0, size)
        device = torch.device("cpu")
        finals = _launch(size, args, timeout)
    # on the ranks' device, so that CPU-vs-GPU rounding is not taken for a DDP bug
    reference = _train_reference(device, **args)
    _compare(finals, reference, size, rtol, atol, seed)


def _ddp_rank(rank: int, world_size: int, device: torch.device, **args: Any) -> dict[str, Any]:
    """One rank's DDP training; its initial and final parameters (CPU)."""
    from torch.nn.parallel import DistributedDataParallel

    with _seeded(args["seed"]):
        model = args["make_model"]().to(device)
    _dropout_off(model)
    initial = _params(model)
    ddp = DistributedDataParallel(
        model, device_ids=[device] if device.type != "cpu" else None, **args["ddp_kwargs"]
    )
    opt = _make_optimizer(ddp, args)
    shard = _move(_split(args["batch"], rank, world_size), device)
    step = args["step"] or _plain_step(args["loss_fn"])
    for k in range(args["steps"]):
        with _seeded(args["seed"] + k):
            step(ddp, shard, opt)
    return {"rank": rank, "initial": initial, "final": _params(model)}


def _ddp_rank_entry(dist: Any, **args: Any) -> dict[str, Any]:
    """What each launched rank runs (imported by name by :mod:`mlcheck.distributed.rank`)."""
    return _ddp_rank(dist.rank, dist.world_size, dist.device, **args)


def _train_reference(device: torch.device, **args: Any) -> dict[str, Any]:
    with _seeded(args["seed"]):
        model = args["make_model"]().to(device)
    _dropout_off(model)
    initial = _params(model)
    opt = _make_optimizer(model, args)
    step = _plain_step(args["loss_fn"])
    batch = _move(args["batch"], device)
    for k in range(args["steps"]):
        with _seeded(args["seed"] + k):
            step(model, batch, opt)
    return {"initial": initial, "final": _params(model)}


def _plain_step(loss_fn: LossFn | None) -> TrainStep:
    compute = loss_fn or _default_loss

    def step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()
        compute(model, batch).backward()
        optimizer.step()

    return step


def _make_optimizer(model: nn.Module, args: Mapping[str, Any]) -> torch.optim.Optimizer:
    factory = args["optimizer"]
    if factory is not None:
        return factory(model)
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=args["lr"])


def _dropout_off(model: nn.Module) -> None:
    # Random masks differ between a slice and the whole batch: not what this check is about.
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}


def _split(batch: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s contiguous equal slice of every tensor in ``batch`` (first dim)."""
    if isinstance(batch, torch.Tensor):
        rows = batch.shape[0] if batch.dim() else 0
        if rows == 0 or rows % world_size:
            raise UsageError(
                f"assert_ddp_equivalent: the batch has {rows} rows, which does not split into "
                f"{world_size} equal slices: use a batch size divisible by world_size"
            )
        per = rows // world_size
        return batch[rank * per : (rank + 1) * per]
    if isinstance(batch, Mapping):
        return type(batch)({k: _split(v, rank, world_size) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple | list):
        return type(batch)(_split(v, rank, world_size) for v in batch)
    return batch


def _current_device() -> torch.device:
    import torch.distributed as tdist

    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather(mine: dict[str, Any]) -> list[dict[str, Any]]:
    import torch.distributed as tdist

    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, mine)
    return out


def _launch(world_size: int, args: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    from ..distributed.launch import run_ranks, threads_per_rank, verdict_text

    for name in ("make_model", "step", "loss_fn", "optimizer"):
        try:
            pickle.dumps(args[name])
        except Exception as exc:  # pickle raises many types
            raise UsageError(
                f"assert_ddp_equivalent: {name} is sent to each rank and cannot be pickled "
                f"({type(exc).__name__}: {exc}): pass a module-level function or a "
                "functools.partial of one, or call the check inside a "
                "@pytest.mark.distributed test"
            ) from None
    job = {
        "module": __name__,
        "file": __file__,
        "qualname": _ddp_rank_entry.__name__,
        "sys_path": list(sys.path),
        "kwargs": {"dist": None, **args},
        "world_size": world_size,
        "backend": "gloo",
        "device_type": "cpu",
        "timeout": timeout,
        "seed": args["seed"],
        "threads": threads_per_rank(world_size),
    }
    results = run_ranks(job, timeout)
    verdict = verdict_text(results, timeout)
    if verdict is not None:
        raise CheckFailed(
            "assert_ddp_equivalent",
            f"training failed on the ranks: {verdict[1].splitlines()[0]}",
            seed=args["seed"],
            details=verdict[1],
        )
    return [r.value for r in results]


def _compare(
    finals: Sequence[dict[str, Any]],
    reference: dict[str, Any],
    world_size: int,
    rtol: float,
    atol: float,
    seed: int,
) -> None:
    check = "assert_ddp_equivalent"
    base = finals[0]
    # 1. every rank must end with the same parameters (DDP's all-reduce makes them so)
    apart: list[tuple[float, str, int]] = []
    for other in finals[1:]:
        for name, value in base["final"].items():
            gap = float((other["final"][name] - value).abs().max()) if value.numel() else 0.0
            if not torch.allclose(other["final"][name], value, rtol=rtol, atol=atol):
                apart.append((gap, name, int(other["rank"])))
    if apart:
        apart.sort(reverse=True)
        ranks = sorted({r for _, _, r in apart})
        names = list(dict.fromkeys(n for _, n, _ in apart))
        ratios = _ratios(finals, reference, names[:3])
        raise CheckFailed(
            check,
            f"the ranks ended with different parameters after DDP training on {world_size} "
            f"ranks: rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} "
            f"{'differ' if len(ranks) > 1 else 'differs'} from rank 0",
            expected="the same parameters on every rank (DDP all-reduces gradients)",
            actual=listing([f"{n}: max |rank {r} - rank 0| = {g:.3g}" for g, n, r in apart[:5]]),
            difference=listing(ratios),
            seed=seed,
            details="likely cause: gradients were not all-reduced, so each rank stepped on its "
            "own slice (a `with model.no_sync():` left on, or a step that calls the unwrapped "
            "module instead of the DDP model)",
        )
    # 2. and the parameters one process gets from the whole batch
    differing: list[tuple[float, str]] = []
    for name, value in base["final"].items():
        ref = reference["final"][name]
        if not torch.allclose(value, ref, rtol=rtol, atol=atol):
            scale = float(ref.abs().max()) or 1.0
            differing.append((float((value - ref).abs().max()) / scale, name))
    if not differing:
        return
    differing.sort(reverse=True)
    names = [n for _, n in differing]
    ratio = _ratio(base, reference, names)
    raise CheckFailed(
        check,
        f"DDP training on {world_size} ranks does not match one process training on the "
        f"whole batch in {len(names)} of {len(base['final'])} parameters",
        expected="the single-process parameters after the same steps",
        actual=listing([f"{n}: relative max difference {d:.3g}" for d, n in differing[:5]]),
        difference=f"the DDP update is {_fmt_ratio(ratio)} the single-process update "
        f"(over {', '.join(names[:3])})",
        seed=seed,
        details=_ratio_cause(ratio, world_size, base, reference),
    )


def _update_ratio(
    final: torch.Tensor, initial: torch.Tensor, ref: dict[str, Any], name: str
) -> tuple[float, float]:
    mine = (final - initial).double().flatten()
    theirs = (ref["final"][name] - ref["initial"][name]).double().flatten()
    return float(mine @ theirs), float(theirs @ theirs)


def _ratio(side: dict[str, Any], ref: dict[str, Any], names: Sequence[str]) -> float | None:
    """Projection of this side's update on the reference's, over ``names``: 1.0 is equal."""
    dot = norm = 0.0
    for name in names:
        d, n = _update_ratio(side["final"][name], side["initial"][name], ref, name)
        dot, norm = dot + d, norm + n
    return dot / norm if norm > 0 else None


def _ratios(
    finals: Sequence[dict[str, Any]], ref: dict[str, Any], names: Sequence[str]
) -> list[str]:
    return [
        f"rank {f['rank']}'s update is {_fmt_ratio(_ratio(f, ref, names))} the single-process "
        f"update (over {', '.join(names)})"
        for f in finals
    ]


def _fmt_ratio(ratio: float | None) -> str:
    return "undefined against a zero" if ratio is None else f"{ratio:.2f}x"


def _ratio_cause(
    ratio: float | None, world_size: int, side: dict[str, Any], ref: dict[str, Any]
) -> str:
    same_start = all(torch.equal(side["initial"][n], ref["initial"][n]) for n in ref["initial"])
    if not same_start:
        return (
            "likely cause: rank 0 built different initial weights than one process does with "
            "the same seed (make_model depends on the rank or the process group?)"
        )
    if ratio is None:
        return "the single-process step did not change these parameters"
    if abs(ratio - 1 / world_size) < _RATIO_TOL / world_size:
        return (
            f"likely cause: the loss is divided by the world size ({world_size}) once too "
            "often: DDP already averages gradients over ranks"
        )
    if abs(ratio - world_size) < _RATIO_TOL * world_size:
        return (
            f"likely cause: gradients summed over the {world_size} ranks instead of averaged "
            "(a loss multiplied by the world size, or a manual all_reduce without dividing)"
        )
    if abs(ratio) < _RATIO_TOL / world_size:
        return "likely cause: the DDP step did not update these parameters (no optimizer step?)"
    return (
        "the update differs in direction, not only in scale: a loss that depends on the "
        "slice (per-rank normalisation, BatchNorm statistics without SyncBatchNorm)"
    )


# ---------------------------------------------------------------------------------------------
# assert_shards_disjoint


def assert_shards_disjoint(
    make_sampler: SamplerFactory,
    world_size: int,
    dataset_len: int,
    *,
    allow_padding: bool = False,
) -> None:
    """``make_sampler(rank, world_size)`` gives each rank its own rows, and together all
    ``dataset_len`` of them: no row on two ranks, none missing, none out of range.

    ``allow_padding=True`` accepts what ``DistributedSampler`` does to make the shards equal:
    up to ``world_size - 1`` rows repeated (``drop_last=False``) or left out (``drop_last=True``).
    Runs in one process (samplers take ``rank`` and ``num_replicas`` directly).

    >>> from torch.utils.data import DistributedSampler
    >>> def sampler(rank, world_size):
    ...     return DistributedSampler(range(9), num_replicas=world_size, rank=rank)
    >>> assert_shards_disjoint(sampler, 2, 9, allow_padding=True)
    """
    check = "assert_shards_disjoint"
    if world_size < 1 or dataset_len < 0:
        raise UsageError(f"{check}: need world_size >= 1 and dataset_len >= 0")
    shards = [[int(i) for i in make_sampler(rank, world_size)] for rank in range(world_size)]
    slack = world_size - 1 if allow_padding else 0
    owners: dict[int, list[int]] = {}
    for rank, shard in enumerate(shards):
        for index in shard:
            owners.setdefault(index, []).append(rank)
    outside = sorted(i for i in owners if not 0 <= i < dataset_len)
    if outside:
        raise CheckFailed(
            check,
            f"the sampler yields indices outside the dataset of {dataset_len} rows",
            expected=f"indices in 0..{dataset_len - 1}",
            actual=", ".join(map(str, outside[:10])),
        )
    repeated = sorted((i, r) for i, r in owners.items() if len(r) > 1)
    extra = sum(len(r) - 1 for _, r in repeated)
    missing = [i for i in range(dataset_len) if i not in owners]
    sizes = ", ".join(f"rank {r}: {len(s)}" for r, s in enumerate(shards))
    if extra > slack:
        pairs = sorted({(r[0], r[1]) for _, r in repeated})
        first = ", ".join(f"{i} (ranks {', '.join(map(str, r))})" for i, r in repeated[:8])
        shared_by_all = all(len(r) == world_size for _, r in repeated)
        raise CheckFailed(
            check,
            f"{len(repeated)} rows go to more than one rank "
            f"(first between rank {pairs[0][0]} and rank {pairs[0][1]})",
            expected="each row on exactly one rank"
            + (f" (up to {slack} repeated for padding)" if slack else ""),
            actual=f"first shared rows: {first}",
            difference=f"{extra} extra reads of {dataset_len} rows; shard sizes {sizes}",
            details="likely cause: "
            + (
                "every rank reads the same rows: the sampler ignores its rank "
                "(num_replicas/rank not passed, or rank 0 on every process)"
                if shared_by_all and len(repeated) > slack
                else "shards overlap: start/stride computed from the wrong rank or world size, "
                "or shuffled with a different seed on each rank"
            ),
        )
    if len(missing) > slack:
        raise CheckFailed(
            check,
            f"{len(missing)} of {dataset_len} rows go to no rank",
            expected="every row on some rank"
            + (f" (up to {slack} dropped to even out shards)" if slack else ""),
            actual=f"first rows never read: {', '.join(map(str, missing[:10]))}",
            difference=f"shard sizes {sizes}",
            details="likely cause: shards cut too short (integer division dropping the tail, "
            "drop_last=True, or a world size larger than the sampler was told)",
        )


# ---------------------------------------------------------------------------------------------
# assert_same_on_all_ranks


def assert_same_on_all_ranks(
    value: Any, *, name: str = "value", rtol: float = 0.0, atol: float = 0.0
) -> None:
    """Inside a ``@pytest.mark.distributed`` test: ``value`` is equal on every rank.

    ``value`` may be a tensor, a module (its ``state_dict``), a mapping or sequence of them, or
    any picklable object. Tensors are compared exactly unless ``rtol``/``atol`` are given. Every
    rank raises the same failure, naming the ranks that differ from rank 0.

    >>> def test_same_init(dist):  # doctest: +SKIP
    ...     assert_same_on_all_ranks(build_model(), name="initial weights")
    """
    import torch.distributed as tdist

    check = "assert_same_on_all_ranks"
    if not (tdist.is_available() and tdist.is_initialized()):
        raise UsageError(
            f"{check} compares ranks of a process group: call it inside a test marked "
            "@pytest.mark.distributed(world_size=N)"
        )
    mine = _flatten(value.state_dict() if isinstance(value, nn.Module) else value)
    everyone: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(everyone, mine)
    base = everyone[0]
    differ: dict[int, list[str]] = {}
    for rank, other in enumerate(everyone[1:], start=1):
        found = _differences(base, other, rtol, atol)
        if found:
            differ[rank] = found
    if not differ:
        return
    ranks = ", ".join(map(str, differ))
    first = next(iter(differ.values()))
    raise CheckFailed(
        check,
        f"{name} is not the same on every rank: rank{'s' if len(differ) > 1 else ''} {ranks} "
        f"of {len(everyone)} {'differ' if len(differ) > 1 else 'differs'} from rank 0",
        expected="the same on every rank",
        actual=listing([f"rank {r}: {d[0]}" for r, d in differ.items()]),
        difference=listing(first[:5]) if len(first) > 1 else None,
        details="likely cause, for weights: a seed that depends on the rank "
        "(torch.manual_seed(base + rank) before building the model) or a rank-only "
        "initialisation; for a config or seed: a value read from per-rank state",
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{path: leaf}`` with tensors on the CPU, so every rank's values compare by path."""
    if isinstance(value, torch.Tensor):
        return {prefix or "value": value.detach().to("cpu", copy=True)}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, tuple | list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out or {prefix or "value": value}
    return {prefix or "value": value}


def _differences(
    base: Mapping[str, Any], other: Mapping[str, Any], rtol: float, atol: float
) -> list[str]:
    found: list[str] = []
    for key in sorted(set(base) | set(other)):
        if key not in base or key not in other:
            found.append(f"{key}: present on only one of the two ranks")
            continue
        a, b = base[key], other[key]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.shape != b.shape or a.dtype != b.dtype:
                found.append(
                    f"{key}: {tuple(b.shape)} {b.dtype} vs rank 0's {tuple(a.shape)} {a.dtype}"
                )
            elif not torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol, equal_nan=True):
                gap = float((a.double() - b.double()).abs().max())
                found.append(f"{key}: max |difference| {gap:.3g}")
        elif type(a) is not type(b) or a != b:
            found.append(f"{key}: {_short(b)} vs rank 0's {_short(a)}")
    return found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
