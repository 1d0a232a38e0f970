"""Words for counts and times in what mlcheck prints: one home, so no message says "1 models"
and every duration reads the same.

>>> plural(1, "model"), plural(1_200, "file"), plural(2, "was", "were")
('1 model', '1,200 files', '2 were')
>>> duration_text(0.85), duration_text(12.34), duration_text(245), duration_text(3725)
('850 ms', '12.3 s', '4 min 05 s', '1 h 02 min')
"""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural (``many``, default ``word + "s"``) unless ``n`` is 1."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def duration_text(seconds: float) -> str:
    """Human time: ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``1 h 02 min``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
