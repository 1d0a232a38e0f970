"""The ``models`` fixture (registered by :mod:`mlcheck.plugin`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

import pytest

from .. import constants
from ..stash import NEEDS_KEY
from ..tiers import Tier
from .session import MlcheckState, project_of

if TYPE_CHECKING:
    from ..models import ModelFactory


@pytest.fixture
def models(request: pytest.FixtureRequest) -> Iterator[ModelFactory]:
    """Models built from the local cache only: ``config``, ``random`` (shrunk), ``empty`` (meta),
    ``real`` (pinned cached weights), ``tokenizer``. See ``mlcheck.models.ModelFactory``.

    >>> def test_head(models):  # doctest: +SKIP
    ...     model = models.random("bert-base-uncased", task="sequence-classification")
    """
    from ..models import ModelFactory
    from ..project.cache import locate

    state = request.config.pluginmanager.get_plugin("mlcheck-state")
    # Without opt-in there is no state: the fixture still works, with the default seed.
    seed = state.seed if isinstance(state, MlcheckState) else constants.env_seed()
    # Read through the project's lock (pinned commits, safety options from its manifest).
    # models.real shares this worker's load cache; after the test, models it changed are evicted.
    from ..models.load_cache import shared

    project = project_of(request.config)
    factory = ModelFactory(locate=partial(locate, project=project), seed=seed, cache=shared())
    needs = request.node.stash.get(NEEDS_KEY, None)
    if needs is not None and needs.tier is Tier.FAST:
        factory.fast_test = request.node.nodeid  # models.real fails as in CI's fast job
    yield factory
    factory.release()
