"""Make untrusted text (anything a test produced) safe to publish.

Test names, messages and tracebacks come from the code under test, which in a pull request is
written by whoever opened it. Before any of it reaches a PR comment, a job summary, an
annotation or a terminal, it goes through one of the functions here:

- :meth:`Redactor.redact` replaces secret values (tokens from the environment, and anything
  shaped like a GitHub or Hugging Face token) with ``***``. Always first: escaping would split a
  token (``hf\\_abc``) so that a later search misses it, yet GitHub renders it whole.
- :func:`inline` makes one line of Markdown text: Markdown and HTML escaped, ``@mentions`` and
  ``#123`` references broken with a zero-width space, whitespace collapsed.
- :func:`html_text` does the same for text inside raw HTML (``<summary>``), where Markdown
  escapes are not processed.
- :func:`code_block` fences text so that nothing in it can close the fence.

>>> r = Redactor(values=("s3cr3t-value",))
>>> print(inline(r.redact("@alice broke #12 with s3cr3t-value <b>")).replace(ZWSP, "~"))
@~alice broke #~12 with \\*\\*\\* &lt;b&gt;
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from . import constants

REDACTED = "***"
ZWSP = "\u200b"  # breaks GitHub's autolinking of @user and #123 without changing what people read

# Environment variables whose values are secrets whatever they look like (one list, in
# constants.py: action/sandbox.py keeps the same ones from the project under test).
SECRET_ENV_VARS = constants.SECRET_ENV_VARS
# Any variable with one of these in its name is treated as a secret too.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_KEY|CREDENTIAL", re.I)
# Short values (``1``, ``true``) would redact half the report; real secrets are longer.
MIN_SECRET_LENGTH = 8

# Token shapes: GitHub (classic and fine-grained), Hugging Face, bearer JWTs.
TOKEN_PATTERN = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|hf_[A-Za-z0-9]{20,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
)
# The longest token the pattern is meant for; a window this much wider than what we keep is
# always redacted before cutting (see Redactor.clip).
_PATTERN_MARGIN = 2_048


@dataclass(frozen=True)
class Redactor:
    """Replaces secret values and token-shaped strings with ``***``.

    Build it at the edge (CLI, action) with :meth:`from_env` and pass it in.

    >>> Redactor.from_env({"HF_TOKEN": "abcdefgh12"}).redact("token=abcdefgh12")
    'token=***'
    """

    values: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Redactor:
        found = {
            value
            for name, value in environ.items()
            if (name in SECRET_ENV_VARS or _SECRET_NAME.search(name))
            and len(value) >= MIN_SECRET_LENGTH
        }
        return cls(values=tuple(sorted(found, key=len, reverse=True)))

    @cached_property
    def _values_pattern(self) -> re.Pattern[str] | None:
        values = sorted({v for v in self.values if v}, key=len, reverse=True)
        if not values:
            return None
        return re.compile("|".join(re.escape(v) for v in values))

    def redact(self, text: str) -> str:
        if not text:
            return text
        pattern = self._values_pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return TOKEN_PATTERN.sub(REDACTED, text)

    def clip(self, text: str, limit: int, *, keep: str = "tail") -> str:
        """Redact and cut ``text`` to at most about ``limit`` characters.

        Only a window around what is kept is scanned (a multi-megabyte message costs little),
        and the window is wider than any secret, so no secret is cut in half and half-shown.
        ``keep`` is ``"tail"`` (tracebacks end with the error) or ``"head"`` (messages).
        """
        margin = max([_PATTERN_MARGIN, *(len(v) + 1 for v in self.values)])
        if len(text) <= limit:
            return self.redact(text)
        if keep == "head":
            window = self.redact(text[: limit + margin])
            return window if len(window) <= limit else window[:limit] + " …"
        window = self.redact(text[-(limit + margin) :])
        if len(window) <= limit:
            return window
        kept = window[-limit:]
        newline = kept.find("\n", 0, 200)  # start at a whole line where one is near
        return "…\n" + kept[newline + 1 :] if newline >= 0 else "… " + kept


NO_SECRETS = Redactor()

# What can start Markdown or HTML in the middle of a line (our untrusted text never starts one):
# code, emphasis, strike, links and images ([), tags and autolinks (<), entities, table cells,
# math ($), and the escape character itself. Angle brackets become entities instead: hidden
# markers (`<!-- mlcheck:... -->`) are searched in the raw text, where `\<` would still match.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|&~$])")
_WHITESPACE = re.compile(r"\s+")
# A mention is @ followed by a user/team name character; a reference is #, GH- or a ! merge
# request prefix followed by a digit.
_MENTION = re.compile(r"@(?=[A-Za-z0-9_])")
_REFERENCE = re.compile(r"(#|\bGH-)(?=\d)", re.I)
# Control characters (other than tab/newline) corrupt terminals and are rejected by some APIs.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def neutralise(text: str) -> str:
    """Break @mentions and #123 references so GitHub links and notifies nobody.

    >>> neutralise("ping @bob about #7").replace(ZWSP, "~")
    'ping @~bob about #~7'
    """
    return _REFERENCE.sub(lambda m: m.group(1) + ZWSP, _MENTION.sub("@" + ZWSP, text))


def strip_control(text: str) -> str:
    return _CONTROL.sub("", text)


def one_line(text: str, limit: int = 200) -> str:
    """Collapse whitespace to single spaces and cut to ``limit`` characters."""
    text = _WHITESPACE.sub(" ", strip_control(text)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def inline(text: str, limit: int = 200) -> str:
    """One line of untrusted text as Markdown that renders literally (already redacted).

    >>> inline("**bold** <details> | x")
    '\\\\*\\\\*bold\\\\*\\\\* &lt;details&gt; \\\\| x'
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", one_line(text, limit))
    return neutralise(escaped.replace("<", "&lt;").replace(">", "&gt;"))


def html_text(text: str, limit: int = 200) -> str:
    """One line of untrusted text inside raw HTML (a ``<summary>``), where ``\\`` escapes are
    not processed.

    >>> html_text("<b>@x</b>").replace(ZWSP, "~")
    '&lt;b&gt;@~x&lt;/b&gt;'
    """
    return neutralise(html.escape(one_line(text, limit), quote=True))


def code_block(text: str, info: str = "text") -> str:
    """A fenced code block whose fence is longer than any backtick run inside ``text``.

    Mentions and references inside code are not linked by GitHub, so the text is kept as is
    (only control characters removed and line endings normalised).

    >>> code_block("a ``` b")
    '````text\\na ``` b\\n````'
    """
    text = strip_control(text.replace("\r\n", "\n").replace("\r", "\n"))
    # Hidden markers (sections, digests) are found in the raw text: none may come from a test.
    text = text.replace("<!--", "<!" + ZWSP + "--")
    longest = max((len(m.group(0)) for m in re.finditer(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def all_values(redactors: Iterable[Redactor]) -> Redactor:
    """One redactor with every value of several (CLI flags plus environment)."""
    values: set[str] = set()
    for r in redactors:
        values.update(r.values)
    return Redactor(values=tuple(sorted(values, key=len, reverse=True)))
