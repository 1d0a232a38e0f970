"""The one place a test's tier is decided (SPEC §2).

A test's tier comes from three sources, read here and nowhere else:

- its markers (``@pytest.mark.real_model``, ``@pytest.mark.gpu``);
- the ecosystem's decorators read from its source (``@require_torch_gpu``, ``@slow``;
  :mod:`mlcheck.tiers.decorators`);
- the project's configuration: ``[tool.mlcheck] markers`` maps a suite's own markers to tiers,
  ``[tool.mlcheck] decorators`` adds decorators (:class:`TierRules`).

:func:`decide` combines them; the plugin calls it once per collected test, and ``RUN_SLOW``
(:meth:`TierRules.run_slow`) follows the same rules.

>>> decide([MarkInfo("slow")], rules=TierRules(markers={"slow": "real"})).tier
<Tier.REAL: 'real'>
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import MarkInfo, Needs, Tier, needs_of
from .decorators import BUILTIN, DecoratorRule, marks_of, needs_run_slow, rules

if TYPE_CHECKING:
    from ..project.manifest import Manifest


@dataclass(frozen=True)
class TierRules:
    """A project's configuration of tiers: its own markers (name -> tier) and the decorators
    that move a test (the built-in ones, extended by its manifest)."""

    markers: Mapping[str, str] = field(default_factory=dict)
    decorators: Mapping[str, DecoratorRule] = field(default_factory=lambda: dict(BUILTIN))

    @classmethod
    def of(cls, manifest: Manifest) -> TierRules:
        """The rules a project's manifest (``[tool.mlcheck]``) sets."""
        return cls(markers=dict(manifest.markers), decorators=rules(manifest.decorators))

    def run_slow(self, tiers: Iterable[Tier]) -> bool:
        """Whether a run of ``tiers`` needs ``RUN_SLOW=1`` (see
        :func:`~mlcheck.tiers.decorators.needs_run_slow`)."""
        return needs_run_slow(tiers, self.decorators)


def decide(
    marks: Iterable[MarkInfo],
    obj: Any = None,
    cls: type | None = None,
    rules: TierRules | None = None,
) -> Needs:
    """A test's tier and needs: its markers ``marks``, the decorators of its function ``obj``
    and class ``cls`` (read from their source), both read through the project's ``rules``.
    ``gpu`` wins over ``real``, ``real`` over ``fast``; bad marker arguments are a
    :class:`~mlcheck.errors.UsageError`.

    >>> decide([MarkInfo("gpu"), MarkInfo("real_model", ("org/m",))]).tier
    <Tier.GPU: 'gpu'>
    """
    rules = rules or TierRules()
    found = [*marks, *marks_of(obj, cls, rules.decorators)]
    return needs_of(found, rules.markers)
