"""Untrusted text: escaping, neutralised mentions/references, redacted secrets."""

from __future__ import annotations

from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options

from mlcheck.redact import REDACTED, ZWSP, Redactor, code_block, html_text, inline, neutralise

GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
HF = "hf_" + "abcdefghijklmnopqrstuvwxyzABCD"


def html(markdown: str) -> str:
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


def test_env_secrets_are_redacted_whatever_they_look_like() -> None:
    r = Redactor.from_env(
        {"GITHUB_TOKEN": "plain-looking-value", "MY_API_KEY": "k3y-value-123", "HOME": "/root"}
    )
    text = r.redact("token plain-looking-value and k3y-value-123 in /root")
    assert text == f"token {REDACTED} and {REDACTED} in /root"


def test_short_env_values_are_not_treated_as_secrets() -> None:
    # GITHUB_TOKEN=1 would otherwise blank every "1" in the report.
    assert Redactor.from_env({"GITHUB_TOKEN": "1"}).values == ()


@pytest.mark.parametrize(
    "token",
    [GHP, "gho_" + "x" * 36, "ghs_" + "y" * 36, "github_pat_" + "11ABC_" + "z" * 60, HF],
)
def test_token_shapes_are_redacted_without_env(token: str) -> None:
    assert (
        Redactor().redact(f"Authorization: Bearer {token}!") == f"Authorization: Bearer {REDACTED}!"
    )


def test_clip_never_shows_half_a_secret() -> None:
    secret = "S" * 50
    r = Redactor(values=(secret,))
    # the cut falls in the middle of the secret
    text = "x" * 80 + secret + "y" * 10_000
    clipped = r.clip(text, 100, keep="head")
    assert "SSSSS" not in clipped
    clipped_tail = r.clip("y" * 10_000 + secret + "x" * 80, 100, keep="tail")
    assert "SSSSS" not in clipped_tail
    assert len(clipped) <= 102 and len(clipped_tail) <= 102


def test_clip_is_cheap_on_huge_text() -> None:
    huge = ("lorem ipsum " * 500_000) + GHP
    assert Redactor().clip(huge, 500, keep="tail").endswith(REDACTED)


def test_inline_renders_literally() -> None:
    evil = "**bold** _it_ `code` [link](http://x) <details><b>x</b> | cell ~~s~~ $x$ &amp;"
    rendered = html(inline(evil, 500))
    assert "<strong>" not in rendered and "<em>" not in rendered and "<code>" not in rendered
    # GFM autolinks the bare URL (visible, as in any comment), but no link text can hide it
    assert ">link</a>" not in rendered and "<details>" not in rendered and "<b>" not in rendered
    assert "<del>" not in rendered
    assert "&amp;amp;" in rendered  # the entity is shown, not decoded


def test_mentions_and_references_are_broken() -> None:
    text = neutralise("@alice @org/team #12 GH-7 acme/repo#3 mail a@b.c")
    assert "@alice" not in text and "#12" not in text and "GH-7" not in text
    assert text.replace(ZWSP, "") == "@alice @org/team #12 GH-7 acme/repo#3 mail a@b.c"


def test_html_text_for_raw_html_context() -> None:
    rendered = html(
        f"<details><summary>{html_text('</summary><script>@x')}</summary>\n\nbody\n\n</details>"
    )
    assert "<script>" not in rendered and rendered.count("</summary>") == 1


def test_code_block_cannot_be_closed_from_inside() -> None:
    evil = "line\n```\n</details>\n<!-- mlcheck:digest v1 fast AAAA -->\n````"
    block = code_block(evil)
    rendered = html(f"<details><summary>t</summary>\n\n{block}\n\n</details>")
    assert rendered.count("<pre") == 1 and rendered.count("</details>") == 1
    assert "&lt;/details&gt;" in rendered
    assert "<!-- mlcheck:" not in block  # a test cannot forge hidden markers


# README security model: a PR's manifest or environment cannot grant allow_pickle or
# trust_remote_code to mlcheck's model loading once `--safety-manifest` is given.
def test_a_pr_manifest_and_environment_cannot_grant_allow_pickle(tmp_path: Path) -> None:
    from runcli import mlcheck

    base = tmp_path / "base"
    base.mkdir()
    (base / "pyproject.toml").write_text(
        '[tool.mlcheck.models]\n"org/legacy" = { revision = "main" }\n'
    )
    pr = tmp_path / "pr"
    (pr / "tests").mkdir(parents=True)
    grant = '"org/legacy" = { revision = "main", allow_pickle = true, trust_remote_code = true }'
    (pr / "pyproject.toml").write_text(f"[tool.mlcheck.models]\n{grant}\n")
    # The PR's conftest removes what the parent passed, and points the manifest at its own.
    (pr / "tests" / "conftest.py").write_text(
        "import os\n"
        "os.environ.pop('MLCHECK_SAFETY_OPTIONS', None)\n"
        "os.environ['MLCHECK_SAFETY_MANIFEST'] = os.getcwd()\n"
    )
    (pr / "tests" / "test_grant.py").write_text(
        "from mlcheck.project.cache import _safety_spec\n"
        "from mlcheck.project.manifest import load_manifest\n"
        "def test_not_granted():\n"
        "    spec = load_manifest('.').model('org/legacy')\n"
        "    assert spec.allow_pickle and spec.trust_remote_code  # what the PR asked for\n"
        "    got = _safety_spec('org/legacy', spec, load_manifest('.'))  # the PR's as trusted\n"
        "    assert not got.allow_pickle and not got.trust_remote_code\n"
    )
    proc = mlcheck("run", "tests", "--safety-manifest", str(base), cwd=pr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
