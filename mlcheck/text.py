"""Words for counts and times in what mlcheck prints: one home, so no message says "1 models"
and every duration reads the same; and the one pattern of a commit SHA.

>>> plural(1, "model"), plural(1_200, "file"), plural(2, "was", "were")
('1 model', '1,200 files', '2 were')
>>> duration_text(0.85), duration_text(12.34), duration_text(245), duration_text(3725)
('850 ms', '12.3 s', '4 min 05 s', '1 h 02 min')
"""

from __future__ import annotations

import re

# A commit as results, digests and links carry it: abbreviated or full, either case (input, so
# checked before it is shown or put in a URL).
SHA_RE = re.compile(r"[0-9a-fA-F]{7,64}")
# A full commit id as GitHub's API and a workflow's inputs give it (SHA-1 or SHA-256).
OBJECT_ID_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def short_sha(sha: str | None) -> str:
    """Seven hex digits of a SHA, or ``?`` for anything that is not one (payloads are input).

    >>> short_sha("0123456789abcdef"), short_sha("<script>")
    ('0123456', '?')
    """
    return sha[:7] if sha and SHA_RE.fullmatch(sha) else "?"


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
