"""Words for counts in what mlcheck prints: one home, so no message says "1 models".

>>> plural(1, "model"), plural(1_200, "file"), plural(2, "was", "were")
('1 model', '1,200 files', '2 were')
"""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural (``many``, default ``word + "s"``) unless ``n`` is 1."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
