"""Whether a pytest run has opted in to mlcheck (SPEC §2: inert until opted in).

Installing mlcheck must not change plain ``pytest`` in projects that never asked for it: no
offline mode, no reseeding, no progress lines. A run opts in with any of:

- a ``[tool.mlcheck]`` table in the project's ``pyproject.toml``, or an ``mlcheck.toml``;
- an ``--mlcheck-*`` option on the command line (or in ``addopts``);
- ``MLCHECK_TIER`` in the environment.

``mlcheck run`` always passes ``--mlcheck-*`` options, so it always opts in.

>>> opted_in(["-q", "--mlcheck-tier=real"], [], env={})
True
>>> opted_in(["-q"], [], env={})
False
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from .. import constants
from ..project.manifest import MLCHECK_TOML, PYPROJECT

OPTION_PREFIX = "--mlcheck-"


def opted_in(args: Iterable[str], roots: Iterable[Path], env: Mapping[str, str]) -> bool:
    """True when ``args`` hold an ``--mlcheck-*`` option, ``env`` sets ``MLCHECK_TIER``, or one
    of ``roots`` declares a manifest."""
    if any(str(arg).startswith(OPTION_PREFIX) for arg in args):
        return True
    if env.get(constants.ENV_TIER):
        return True
    return any(declares_manifest(root) for root in roots)


def declares_manifest(root: Path) -> bool:
    """``root`` has an ``mlcheck.toml`` or a ``[tool.mlcheck]`` table in ``pyproject.toml``.

    An unreadable pyproject counts as declaring one when it mentions ``tool.mlcheck``, so that
    the manifest's own parser reports the error instead of mlcheck going silent.
    """
    if (root / MLCHECK_TOML).is_file():
        return True
    pyproject = root / PYPROJECT
    if not pyproject.is_file():
        return False
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        try:
            return "tool.mlcheck" in pyproject.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    tool = data.get("tool")
    return isinstance(tool, dict) and "mlcheck" in tool
