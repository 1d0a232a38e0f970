"""Tiers from the ecosystem's own test decorators (SPEC §2), read from the test's source.

Hugging Face-style suites say what a test needs with decorators, not markers:
``@require_torch_gpu``, ``@require_cuda``, ``@slow``. Their effect depends on the machine (on a
GPU runner ``require_torch_gpu`` returns the function unchanged, on a CPU runner it wraps it in a
``unittest`` skip), so the outcome of the decoration cannot tell a CPU runner and a GPU runner
the same tier. Instead the decorators are read from the test's source at collection: the
function's and its classes' decorator expressions (``ast``), each resolved against the defining
module's globals and matched by **name and origin** (the decorator's ``__module__``), so an
unrelated ``slow`` of the user's own does not move a test.

>>> BUILTIN["require_torch_gpu"].tier
'gpu'
>>> BUILTIN["slow"].origins
('transformers', 'accelerate', 'diffusers')
"""

from __future__ import annotations

import ast
import inspect
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import GPU_MARKER, REAL_MARKER, MarkInfo, Tier

# Top-level packages whose testing helpers define the built-in decorators
# (transformers.testing_utils, accelerate.test_utils.testing, diffusers.utils.testing_utils).
# Matching the package, not the exact module, survives helpers moving between submodules.
HF_ORIGINS = ("transformers", "accelerate", "diffusers")


@dataclass(frozen=True)
class DecoratorRule:
    """What a decorator means: its tier, the packages it may come from (empty: any), and how
    many accelerators it asks for."""

    tier: str
    origins: tuple[str, ...] = HF_ORIGINS
    gpu_count: int = 1


def _gpu(count: int = 1) -> DecoratorRule:
    return DecoratorRule("gpu", HF_ORIGINS, count)


BUILTIN: Mapping[str, DecoratorRule] = {
    # transformers.testing_utils (diffusers re-uses most of these names)
    "require_torch_gpu": _gpu(),
    "require_torch_accelerator": _gpu(),
    "require_torch_large_gpu": _gpu(),
    "require_torch_large_accelerator": _gpu(),
    "require_torch_accelerator_memory": _gpu(),
    "require_torch_non_multi_gpu": _gpu(),
    "require_torch_non_multi_accelerator": _gpu(),
    "require_torch_up_to_2_gpus": _gpu(),
    "require_torch_up_to_2_accelerators": _gpu(),
    "require_torch_multi_gpu": _gpu(2),
    "require_torch_multi_accelerator": _gpu(2),
    "require_torch_n_accelerators": _gpu(2),  # the literal argument, when there is one, wins
    "require_torch_xpu": _gpu(),
    "require_torch_multi_xpu": _gpu(2),
    "require_torch_cuda": _gpu(),
    # Read from transformers 5.25's testing_utils: each skips unless that accelerator (or a
    # library that only runs on one) is there. Not here: require_torch_bf16/fp16 and
    # require_cuda_capability_at_least, which run on CPU too.
    "require_torch_mps": _gpu(),
    "require_torch_npu": _gpu(),
    "require_torch_multi_npu": _gpu(2),
    "require_torch_multi_hpu": _gpu(2),
    "require_torch_tpu": _gpu(),
    "require_torch_xla": _gpu(),
    "require_torch_neuroncore": _gpu(),
    "require_torch_tf32": _gpu(),
    "require_torch_tensorrt_fx": _gpu(),
    "require_flash_attn": _gpu(),
    "require_flash_attn_3": _gpu(),
    "require_flash_attn_4": _gpu(),
    "require_all_flash_attn": _gpu(),
    "require_fbgemm_gpu": _gpu(),
    "require_fp8": _gpu(),  # transformers' and accelerate's
    # accelerate.test_utils.testing (1.16)
    "require_npu": _gpu(),
    "require_mlu": _gpu(),
    "require_musa": _gpu(),
    "require_sdaa": _gpu(),
    "require_tpu": _gpu(),
    "require_neuron": _gpu(),
    "require_cuda_or_hpu": _gpu(),
    "require_transformer_engine": _gpu(),
    "require_transformer_engine_mxfp8": _gpu(),
    "require_cuda": _gpu(),
    "require_non_cpu": _gpu(),
    "require_cuda_or_xpu": _gpu(),
    "require_xpu": _gpu(),
    "require_mps": _gpu(),
    "require_single_device": _gpu(),
    "require_single_gpu": _gpu(),
    "require_single_xpu": _gpu(),
    "require_multi_device": _gpu(2),
    "require_multi_gpu": _gpu(2),
    "require_multi_xpu": _gpu(2),
    "require_multi_gpu_or_xpu": _gpu(2),
    # all three: skipped unless RUN_SLOW is set; the real tier's process sets it
    "slow": DecoratorRule("real"),
}


@dataclass(frozen=True)
class DecoratorTier:
    """A decorator found on a test, and the tier it puts the test in."""

    name: str
    tier: str
    gpu_count: int = 1


def rules(extra: Mapping[str, str] | None = None) -> dict[str, DecoratorRule]:
    """The built-in rules extended (and overridden) by ``[tool.mlcheck] decorators``.

    A manifest key ``name`` matches a decorator of that name from any module; a dotted key
    ``pkg.module.name`` matches only a decorator defined in ``pkg.module`` (or below).

    >>> rules({"require_my_tpu": "gpu"})["require_my_tpu"].origins
    ()
    >>> rules({"mypkg.testing.slow": "real"})["slow"].origins
    ('mypkg.testing',)
    """
    out = dict(BUILTIN)
    for key, tier in (extra or {}).items():
        module, _, name = key.rpartition(".")
        out[name] = DecoratorRule(tier, (module,) if module else ())
    return out


def slow_tier(table: Mapping[str, DecoratorRule]) -> str | None:
    """The tier ``slow`` maps to (the process running that tier gets ``RUN_SLOW=1``)."""
    rule = table.get("slow")
    return rule.tier if rule else None


def needs_run_slow(tiers: Iterable[Tier], table: Mapping[str, DecoratorRule]) -> bool:
    """Whether a run of ``tiers`` runs ``@slow`` tests, so transformers and accelerate must see
    ``RUN_SLOW=1``: ``slow`` maps to a selected tier other than fast, or the gpu tier is selected
    (a ``@slow @require_torch_gpu`` test is in the gpu tier and needs it there too)."""
    slow = slow_tier(table)
    return slow is not None and slow != Tier.FAST and bool(set(tiers) & {Tier(slow), Tier.GPU})


def marks_of(obj: Any, cls: type | None, table: Mapping[str, DecoratorRule]) -> list[MarkInfo]:
    """The tiers that a test's decorators (:func:`tiers_of`) give it, as the markers that mean
    the same; a test object that is not there (``None``) has none."""
    if obj is None:
        return []
    marks: list[MarkInfo] = []
    for found in tiers_of(obj, cls, table):
        if found.tier == Tier.GPU:
            marks.append(MarkInfo(GPU_MARKER, kwargs={"count": found.gpu_count}, via=found.name))
        elif found.tier == Tier.REAL:
            marks.append(MarkInfo(REAL_MARKER, via=found.name))
    return marks


def tiers_of(obj: Any, cls: type | None, table: Mapping[str, DecoratorRule]) -> list[DecoratorTier]:
    """The decorators of test function ``obj`` and of ``cls`` (and its bases) that ``table``
    knows, read from their source. Anything whose source cannot be read gives nothing."""
    found: list[DecoratorTier] = []
    func = inspect.unwrap(obj) if callable(obj) else None
    if func is not None and hasattr(func, "__qualname__"):
        found += _matches(func, table)
    for klass in cls.__mro__ if isinstance(cls, type) else ():
        if klass.__module__ not in ("builtins", "unittest.case"):
            found += _matches(klass, table)
    return found


def _matches(obj: Any, table: Mapping[str, DecoratorRule]) -> list[DecoratorTier]:
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is None or not path or not str(path).endswith(".py"):
        return []
    decorators = _decorators_by_qualname(str(path)).get(obj.__qualname__, ())
    out: list[DecoratorTier] = []
    for expr in decorators:
        call_args: list[ast.expr] = []
        if isinstance(expr, ast.Call):
            call_args, expr = expr.args, expr.func
        resolved = _resolve(expr, vars(module))
        # the decorator's own name first (`from transformers.testing_utils import slow as s`),
        # else the name written in the source (a decorator the import cannot resolve)
        real_name = getattr(resolved, "__name__", None)
        name = real_name if isinstance(real_name, str) and real_name in table else _last_name(expr)
        rule = table.get(name) if name else None
        if rule is None or name is None:
            continue
        if rule.origins and not _origin_matches(resolved, rule.origins):
            continue
        count = rule.gpu_count
        if call_args and isinstance(call_args[0], ast.Constant):
            value = call_args[0].value
            if isinstance(value, int) and not isinstance(value, bool) and "_n_" in name:
                count = value
        out.append(DecoratorTier(name, rule.tier, count))
    return out


def _origin_matches(obj: Any, origins: Iterable[str]) -> bool:
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        return False
    return any(module == o or module.startswith(o + ".") for o in origins)


def _last_name(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return None


def _resolve(expr: ast.expr, namespace: Mapping[str, Any]) -> Any:
    """``a.b.c`` looked up in the module's globals, without evaluating any code."""
    if isinstance(expr, ast.Name):
        return namespace.get(expr.id)
    if isinstance(expr, ast.Attribute):
        base = _resolve(expr.value, namespace)
        if base is None:
            return None
        # `pytest.mark.custom_mark` warns (PytestUnknownMarkWarning) on each lookup of an
        # unregistered mark: the test module already warned where it wrote it, so this lookup
        # must not add a second warning attributed to mlcheck (or raise under `-W error`).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(base, expr.attr, None)
    return None


@lru_cache(maxsize=512)
def _decorators_by_qualname(path: str) -> dict[str, tuple[ast.expr, ...]]:
    """Every function's and class's decorator expressions in one file, by ``__qualname__``."""
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return {}
    out: dict[str, tuple[ast.expr, ...]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                qual = prefix + node.name
                out[qual] = tuple(node.decorator_list)
                visit(node.body, qual + ".")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                qual = prefix + node.name
                out[qual] = tuple(node.decorator_list)
                visit(node.body, qual + ".<locals>.")

    visit(tree.body, "")
    return out
