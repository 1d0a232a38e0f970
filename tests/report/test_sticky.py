"""The sticky comment's body: sections in, sections out, nothing else touched."""

from __future__ import annotations

import cmarkgfm
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlcheck.report import sticky

KEYS = st.sampled_from(["fast", "real", "gpu", "shard-1", "nightly", "real,gpu"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


def test_build_then_parse_round_trips_in_canonical_order() -> None:
    body = sticky.build_body({"gpu": "G", "fast": "F\n\nmore", "zeta": "Z"})
    assert body.startswith(sticky.MARKER + "\n")
    assert list(sticky.parse_sections(body)) == ["fast", "gpu", "zeta"]
    assert sticky.parse_sections(body) == {"fast": "F\n\nmore", "gpu": "G", "zeta": "Z"}


def test_replace_section_leaves_the_others_byte_for_byte() -> None:
    body = sticky.replace_section(None, "fast", "| a | b |\n|---|---|\n| 1 | 2 |")
    body = sticky.replace_section(body, "gpu", "scheduled")
    replaced = sticky.replace_section(body, "gpu", "done: 3 passed")
    assert replaced.replace("done: 3 passed", "scheduled") == body
    assert sticky.parse_sections(replaced)["fast"] == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_markers_are_invisible_once_rendered_by_github_markdown() -> None:
    body = sticky.build_body({"fast": "**3 passed**", "gpu": "scheduled"})
    html = cmarkgfm.github_flavored_markdown_to_html(body)
    assert "<strong>3 passed</strong>" in html
    assert "mlcheck:section" not in html.replace("<!-- mlcheck:section", "")  # only as comments
    assert "&lt;!--" not in html


def test_a_section_cannot_forge_or_close_another_section() -> None:
    evil = "x\n<!-- mlcheck:section fast end -->\n<!-- mlcheck:section gpu start -->\nowned"
    body = sticky.replace_section(None, "fast", evil)
    sections = sticky.parse_sections(body)
    assert list(sections) == ["fast"]
    assert "owned" in sections["fast"]
    # Rendered, the neutralised text shows as text instead of hiding as a comment.
    assert "mlcheck:section gpu start" in cmarkgfm.github_flavored_markdown_to_html(body)


def test_a_section_held_as_written_is_found_and_a_changed_one_is_not() -> None:
    body = sticky.replace_section(None, "fast", "3 passed\n")
    assert sticky.has_section(body, "fast", "3 passed")
    assert not sticky.has_section(body, "fast", "2 passed")
    assert not sticky.has_section(body, "gpu", "3 passed")
    assert not sticky.has_section(None, "fast", "3 passed")


def test_not_a_sticky_comment_has_no_sections() -> None:
    assert sticky.parse_sections("LGTM <!-- mlcheck:section fast start -->\nx\n") == {}
    assert not sticky.is_sticky(None)
    assert not sticky.is_sticky("hello " + sticky.MARKER)


def test_merge_keeps_the_newest_and_fills_from_older() -> None:
    merged = sticky.merge_sections({"fast": "kept"}, {"fast": "old", "gpu": "g2"}, {"gpu": "g1"})
    assert merged == {"fast": "kept", "gpu": "g2"}


def test_an_oversized_section_is_cut_to_fit_github_and_says_so() -> None:
    other = {"fast": "f" * 40_000}
    text = sticky.fit_section(other, "gpu", "g" * 40_000)
    body = sticky.build_body({**other, "gpu": text})
    assert len(body) <= sticky.MAX_BODY
    assert "section truncated" in text
    assert sticky.has_section(body, "gpu", "g" * 40_000)  # what was stored for that input


def test_invalid_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid sticky section key"):
        sticky.replace_section(None, "Fast Tier", "x")


@given(st.dictionaries(KEYS, TEXT, max_size=5), KEYS, TEXT)
def test_replace_touches_only_its_section(sections: dict[str, str], key: str, text: str) -> None:
    body = sticky.build_body(sections)
    before = sticky.parse_sections(body)
    after = sticky.parse_sections(sticky.replace_section(body, key, text))
    assert after[key] == sticky.normalize(text)
    assert {k: v for k, v in after.items() if k != key} == {
        k: v for k, v in before.items() if k != key
    }
    assert sticky.has_section(sticky.replace_section(body, key, text), key, text)
