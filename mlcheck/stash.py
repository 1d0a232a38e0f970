"""What the plugin keeps on each test item (``item.stash``), in one home beside the plugin.

Fixtures that read these (the ``golden`` and ``models`` fixtures) import them from here, so none
of them imports the plugin, which imports them. pytest's side only: :mod:`mlcheck.records`,
which checks and models use outside pytest too, stays free of pytest.
"""

from __future__ import annotations

from typing import Any

import pytest

from .tiers import Needs

NEEDS_KEY = pytest.StashKey[Needs]()  # what the test needs: its tier, models, accelerator
NOT_RUN_KEY = pytest.StashKey[str]()  # why a collected test is not run in this session
FACTS_KEY = pytest.StashKey[dict[str, Any]]()  # the facts the test recorded (records.py)
