"""Everything mlcheck says about a run, as text: pure functions, results in, text out."""

from __future__ import annotations

from .markdown import *  # noqa: F403
from .markdown import __all__ as __all__
