"""The ``golden`` fixture and its pytest options (wired by ``mlcheck.plugin``).

>>> def test_logits(golden, models):  # doctest: +SKIP
...     golden.check("logits", model(**batch).logits, mode="allclose")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from .. import records as _record
from ..errors import GoldenMismatch, UsageError
from ..results.builder import installed_versions
from ..stash import NEEDS_KEY
from ..tiers import detect_accelerator
from . import store
from .values import Tolerance, compare, encode

FACTS = "golden"  # per-test facts: {"key", "checks", "failures": [...]} (results.json `golden`)


class GoldenMode(StrEnum):
    CHECK = "check"  # compare; a missing value fails
    RECORD = "record"  # write missing values for this machine's key
    UPDATE = "update"  # write missing and failing values


def addoption(group: Any) -> None:
    group.addoption(
        "--mlcheck-golden",
        default="check",
        choices=[m.value for m in GoldenMode],
        help="golden values: check (default; a missing value fails), record (write missing "
        "values for this machine's key) or update (also rewrite failing ones)",
    )
    group.addoption(
        "--mlcheck-golden-key",
        default=None,
        metavar="KEY",
        help="hardware key to look up and record golden values under (default: this machine's, "
        "e.g. cpu or cuda:sm90; `default` or a device type like `cuda` on purpose)",
    )


def hardware_key(accelerator: bool) -> str:
    """This machine's key: ``cpu``, or for an accelerator ``cuda:sm90``, ``rocm:gfx942``,
    ``xpu:<name>``, ``mps``. Device type plus what changes the numbers (compute capability,
    architecture), not the card's marketing name. Which accelerator: the one probe,
    :func:`mlcheck.tiers.detect_accelerator`.
    """
    accel = detect_accelerator() if accelerator else None
    if accel is None:
        return "cpu"
    if accel.type == "cuda":
        import torch

        if getattr(torch.version, "hip", None):
            arch = getattr(torch.cuda.get_device_properties(0), "gcnArchName", "") or "unknown"
            return f"rocm:{arch.split(':', 1)[0]}"
        major, minor = torch.cuda.get_device_capability(0)
        return f"cuda:sm{major}{minor}"
    if accel.type == "xpu":
        return "xpu:" + "".join(c if c.isalnum() else "-" for c in accel.name.lower()).strip("-")
    return accel.type  # mps


def _versions() -> dict[str, str]:
    """The versions golden values are recorded with (what changes the numbers)."""
    found = installed_versions(("torch", "transformers"))
    return {dist: version for dist, version in found.items() if dist != "python"}


def _version_note(recorded: Mapping[str, str], running: Mapping[str, str]) -> str:
    notes = [
        f"recorded with {dist} {recorded[dist]}, running {running.get(dist, 'none')}"
        for dist in sorted(recorded)
        if recorded[dist] != running.get(dist)
    ]
    return "; ".join(notes)


@dataclass(repr=False)
class Golden:
    """Checks values against ``__golden__/<test file stem>.json``, keyed by hardware.

    ``check(name, value, *, mode="allclose", rtol=None, atol=None, min_cosine=None, k=None)``:
    ``value`` is a tensor (any dtype or device), a number, a string, or a dict/list of them.

    Modes:

    - ``exact``: bitwise equal (after rounding to the dtype, which storage keeps exactly).
    - ``allclose``: ``|actual - golden| <= atol + rtol * |golden|``; defaults by dtype
      (torch.testing's): float16 rtol 1e-3 atol 1e-5, bfloat16 1.6e-2/1e-5, float32
      1.3e-6/1e-5, float64 and Python floats 1e-7/1e-7; integers, bools and strings exact.
    - ``cosine``: cosine similarity of the flattened values ``>= min_cosine`` (default 0.9999):
      robust to GPU nondeterminism where max-abs is not.
    - ``topk``: along the last dimension, the same ``k`` indices (default 1, argmax) win in every
      row, as sets (near-tied logits may swap order).

    Tensors of more than 16,384 elements are stored as leading/trailing slices, a strided sample
    and sum/mean/std/norm; every mode then compares those and says so.

    >>> def test_logits(golden):  # doctest: +SKIP
    ...     golden.check("logits", logits, mode="cosine", min_cosine=0.999)
    """

    file: Path  # the golden file
    test: str  # node name inside the test file: test_x, TestY::test_z[param]
    key: str
    mode: GoldenMode
    relative_file: str  # as results.json records it (relative to pytest's rootdir)
    tier: str = "fast"  # the test's tier, for the exact command in a hint
    nodeid: str = ""  # the test's pytest id, for the exact command in a hint
    _seen: set[str] = field(default_factory=set)
    _facts: dict[str, Any] = field(default_factory=dict)

    def check(
        self,
        name: str,
        value: Any,
        *,
        mode: str = "allclose",
        rtol: float | None = None,
        atol: float | None = None,
        min_cosine: float | None = None,
        k: int | None = None,
    ) -> None:
        """Compare ``value`` with the golden value ``name`` for this machine's key."""
        __tracebackhide__ = True  # the failure is the test's line, not this helper's
        tol = Tolerance(mode, rtol, atol, min_cosine, k)
        if not name or name in self._seen:
            raise UsageError(f"golden.check: name {name!r} is empty or used twice in this test")
        self._seen.add(name)
        observed = encode(value, k=(k or 1) if mode == "topk" else None)
        self._facts["checks"] = self._facts.get("checks", 0) + 1
        versions = _versions()
        keyed = store.read_cached(self.file)["tests"].get(self.test, {}).get(name, {})
        found = store.lookup(keyed, self.key)
        where = f"{self.file} › {self.test} › {name}"
        if found is None:
            if self.mode is not GoldenMode.CHECK:
                self._write(name, observed, versions)
                return
            others = ", ".join(sorted(keyed)) or "none"
            problem = f"no value for {self.key} in {where}"
            details = (
                f"values recorded for: {others} (another device's values are never used)\n"
                f"record it: {self._command('record')} (pytest --mlcheck-golden record), or "
                "accept this run's results: mlcheck golden accept RESULTS_DIR"
            )
            self._failed(name, "missing", problem, observed, versions, None)
            raise GoldenMismatch(f"golden.check({name!r}) [{self.key}]", problem, details=details)
        used, record = found
        diffs = compare(record["value"], observed, tol, name)
        if not diffs:
            return
        if self.mode is GoldenMode.UPDATE:
            self._write(name, observed, versions)
            return
        head = diffs[0]
        stats = [
            f"{label} {v:.4g}"
            for label, v in (("max abs", head.max_abs), ("max rel", head.max_rel))
            if v is not None
        ]
        if head.cosine is not None:
            stats.append(f"cosine {head.cosine:.8f}")
        if head.first:
            stats.append(f"first at {head.first[0].split(':', 1)[0]}")
        problem = f"{mode} failed against {used}: " + ", ".join([head.problem, *stats])
        lines = [d.describe() for d in diffs[:10]]
        if len(diffs) > 10:
            lines.append(f"... and {len(diffs) - 10} more differing parts")
        note = _version_note(record["recorded_with"], versions)
        if note:
            lines.append(note)
        lines.append(
            f"golden value: {where} [{used}]; if the change is intended: "
            f"{self._command('update')}, or mlcheck golden accept RESULTS_DIR"
        )
        self._failed(name, "mismatch", problem, observed, versions, used)
        raise GoldenMismatch(
            f"golden.check({name!r}) [{self.key}]", problem, details="\n".join(lines)
        )

    def _command(self, mode: str) -> str:
        """The exact command that records this test's values: its tier and its id (a real-tier
        test is not run by ``mlcheck run`` alone, which runs the fast tier)."""
        return f"mlcheck run --tier {self.tier} --golden {mode}" + (
            f" {self.nodeid}" if self.nodeid else ""
        )

    def __repr__(self) -> str:
        return f"<golden {self.file.name} {self.test} [{self.key}] {self.mode.value}>"

    def _write(self, name: str, observed: Mapping[str, Any], versions: Mapping[str, str]) -> None:
        record = {"recorded_with": dict(versions), "value": dict(observed)}
        store.put(self.file, self.test, name, self.key, record)
        # counted in results: a check that passed because it was just written says so
        self._facts["written"] = self._facts.get("written", 0) + 1

    def _failed(
        self,
        name: str,
        status: str,
        problem: str,
        observed: Mapping[str, Any],
        versions: Mapping[str, str],
        used: str | None,
    ) -> None:
        # into results.json, so `mlcheck golden accept` can write it without rerunning
        self._facts.setdefault("failures", []).append(
            {
                "file": self.relative_file,
                "test": self.test,
                "name": name,
                "key": self.key,
                "status": status,
                "compared_with": used,
                "problem": problem,
                "recorded_with": dict(versions),
                "value": dict(observed),
            }
        )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    """Golden values keyed by hardware; see :class:`mlcheck.golden.Golden`."""
    config = request.config
    node = request.node
    path = Path(node.path)
    explicit = config.getoption("mlcheck_golden_key")
    if explicit is not None and not store.KEY_RE.match(explicit):
        raise UsageError(f"--golden-key {explicit!r}: use cpu, cuda:sm90, cuda, default, ...")
    needs = node.stash.get(NEEDS_KEY, None)
    # The tier says which hardware made the numbers: gpu tests the accelerator, others the CPU
    # (fast and real tiers run on CPU even on a GPU runner).
    key = explicit or hardware_key(bool(needs and needs.gpu))
    facts: dict[str, Any] = {"key": key, "checks": 0}
    _record.record(FACTS, facts)
    try:
        relative = path.relative_to(config.rootpath)
    except ValueError:
        relative = Path(os.path.relpath(path, config.rootpath))
    return Golden(
        file=store.golden_path(path),
        test=node.nodeid.split("::", 1)[1] if "::" in node.nodeid else node.name,
        key=key,
        mode=GoldenMode(config.getoption("mlcheck_golden")),
        relative_file=store.golden_path(relative).as_posix(),
        tier=needs.tier.value if needs is not None else "fast",
        nodeid=node.nodeid,
        _facts=facts,
    )
