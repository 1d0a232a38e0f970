"""The sticky PR comment's body: one hidden marker, one section per key (pure functions).

A comment looks like this (the markers are HTML comments, invisible on GitHub)::

    <!-- mlcheck:comment v1 -->
    <!-- mlcheck:section fast start -->
    ...Markdown rendered by the fast job...
    <!-- mlcheck:section fast end -->
    <!-- mlcheck:section gpu start -->
    ...
    <!-- mlcheck:section gpu end -->

Each job owns one key (``fast``, ``real``, ``gpu``...) and replaces only its section, so jobs
that finish together do not clobber each other. The read-merge-write-verify loop that applies
these functions to GitHub lives in :func:`mlcheck.publish.comment.update_section`.

>>> body = replace_section(None, "fast", "3 passed")
>>> body = replace_section(body, "gpu", "GPU run scheduled")
>>> parse_sections(body)
{'fast': '3 passed', 'gpu': 'GPU run scheduled'}
>>> has_section(body, "fast", "3 passed")
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mlcheck.tiers import SCHEDULED_TIERS, TIER_NAMES

from . import messages

MARKER = "<!-- mlcheck:comment v1 -->"
# The tracking issue's first line; its sections below are built like a comment's.
TRACKING_MARKER = "<!-- mlcheck:tracking v1 -->"
# GitHub refuses comment and issue bodies longer than this (characters).
MAX_BODY = 65536
# Known keys keep a fixed order in the comment; any other key follows, sorted.
SECTION_ORDER = ("schedule", *TIER_NAMES, SCHEDULED_TIERS, "all", "nightly")

_KEY = re.compile(r"[a-z0-9][a-z0-9_.,:-]{0,63}")
_SECTION = re.compile(
    r"<!-- mlcheck:section (?P<key>[a-z0-9][a-z0-9_.,:-]{0,63}) start -->\n"
    r"(?P<body>.*?)\n?"
    r"<!-- mlcheck:section (?P=key) end -->",
    re.DOTALL,
)
# A section body that contained our markers could forge or end other sections.
# The renderer's own digest line (results.digest) is kept: render.py escapes every `<!--` that
# comes from a test, so a digest in a section body is always the renderer's.
_FORGED = re.compile(r"<!--(\s*)mlcheck:(?!digest v\d+ )", re.IGNORECASE)


def is_sticky(body: str | None) -> bool:
    """Whether ``body`` is an mlcheck sticky comment (by its hidden marker on the first line)."""
    return bool(body) and body.lstrip().startswith(MARKER)  # type: ignore[union-attr]


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid section key (lower-case, short, no spaces)."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid sticky section key {key!r}: use [a-z0-9_.,:-], up to 64 chars")
    return key


def normalize(section: str) -> str:
    """The form a section body is stored in: markers neutralised, outer blank lines stripped."""
    return _FORGED.sub(r"&lt;!--\1mlcheck:", section).strip("\n").rstrip()


def parse_sections(body: str | None) -> dict[str, str]:
    """Sections of a sticky comment, in comment order; ``{}`` for anything else."""
    if not is_sticky(body):
        return {}
    sections: dict[str, str] = {}
    for match in _SECTION.finditer(body or ""):
        sections.setdefault(match["key"], match["body"])
    return sections


def _order(keys: Iterable[str]) -> list[str]:
    known = {key: i for i, key in enumerate(SECTION_ORDER)}
    return sorted(keys, key=lambda k: (known.get(k, len(known)), k))


def build_body(sections: Mapping[str, str]) -> str:
    """The comment body for ``sections`` (normalised, in canonical order).

    >>> print(build_body({"gpu": "g", "fast": "f"}))
    <!-- mlcheck:comment v1 -->
    <!-- mlcheck:section fast start -->
    f
    <!-- mlcheck:section fast end -->
    <!-- mlcheck:section gpu start -->
    g
    <!-- mlcheck:section gpu end -->
    """
    parts = [MARKER]
    for key in _order(sections):
        check_key(key)
        parts += [
            f"<!-- mlcheck:section {key} start -->",
            normalize(sections[key]),
            f"<!-- mlcheck:section {key} end -->",
        ]
    return "\n".join(parts)


def section_budget(sections: Mapping[str, str], key: str) -> int:
    """How many characters section ``key`` may have so that the whole body fits GitHub's limit."""
    others = {k: v for k, v in sections.items() if k != key}
    return MAX_BODY - len(build_body({**others, key: ""}))


def fit_section(sections: Mapping[str, str], key: str, section: str) -> str:
    """``section`` normalised, cut (with a note saying so) if the body would exceed the limit.

    Renderers budget their own output; this is the last guard that keeps a write from being
    refused by GitHub when other sections already use most of the comment.
    """
    text = normalize(section)
    budget = section_budget(sections, key)
    if len(text) <= budget:
        return text
    over = len(text) - budget
    note = "\n\n" + messages.section_truncated(over)
    return text[: max(0, budget - len(note))].rstrip() + note


def merge_sections(kept: Mapping[str, str], *older: Mapping[str, str]) -> dict[str, str]:
    """Sections of the kept comment, plus any section only present in older duplicates.

    ``older`` goes newest first: when two duplicates have the same key the newer one wins, and
    the kept (newest) comment always wins.

    >>> merge_sections({"fast": "new"}, {"fast": "old", "gpu": "g"})
    {'fast': 'new', 'gpu': 'g'}
    """
    merged = dict(kept)
    for sections in older:
        for key, value in sections.items():
            merged.setdefault(key, value)
    return merged


def replace_section(body: str | None, key: str, section: str) -> str:
    """``body`` with section ``key`` set to ``section``, every other section untouched."""
    sections = parse_sections(body)
    sections[check_key(key)] = fit_section(sections, key, section)
    return build_body(sections)


def has_section(body: str | None, key: str, section: str) -> bool:
    """Whether ``body`` holds exactly ``section`` (as :func:`replace_section` would store it)."""
    sections = parse_sections(body)
    return key in sections and sections[key] == fit_section(sections, key, section)
