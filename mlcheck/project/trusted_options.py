"""The safety options (``allow_pickle``, ``trust_remote_code``) a run trusts, fixed before PR
code runs.

``mlcheck run --safety-manifest DIR`` reads the base branch's manifest in its own (parent)
process, before pytest starts, and hands the result to the test process in
``MLCHECK_SAFETY_OPTIONS``. The test process captures that value when this module is first
imported, which the mlcheck plugin does at load time, before any conftest.py runs: a test or
conftest that later pops or rewrites the variable, or a PR's own manifest, changes nothing in
mlcheck's model loading. Arbitrary PR code can still load a pickle by itself; that is why the
GPU runner must be ephemeral and hold no secrets (README, security model).

>>> decode(encode({"org/a": (True, False)}))
{'org/a': (True, False)}
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import constants
from ..constants import ENV_SAFETY_OPTIONS

__all__ = ["ENV_SAFETY_OPTIONS", "captured", "decode", "encode", "resolve"]

Options = dict[str, tuple[bool, bool]]  # model id -> (allow_pickle, trust_remote_code)


def resolve(folder: Path) -> Options:
    """The options the manifest in ``folder`` grants, by model (models it does not name: none)."""
    from .manifest import load_manifest

    manifest = load_manifest(folder)
    return {
        m.model_id: (bool(m.allow_pickle), bool(m.trust_remote_code))
        for m in manifest.models.values()
    }


def encode(options: Options) -> str:
    return json.dumps({k: list(v) for k, v in sorted(options.items())})


def decode(text: str) -> Options:
    data = json.loads(text)
    return {str(k): (v[0] is True, v[1] is True) for k, v in data.items()}


_CAPTURED = constants.safety_options()  # read once, at import: before conftest.py


def captured() -> Options | None:
    """The options this test process was started with; None when the run trusts no manifest."""
    return decode(_CAPTURED) if _CAPTURED else None
