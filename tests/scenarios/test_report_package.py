"""The report package's layout claims: pure (no network, no environment), one home for the words.

STYLE.md: "every sentence the PR comment or tracking issue says → report/"; "renderers import no
network code". These tests read the source and import the package in a fresh interpreter, so a
new import or a sentence written back into a publisher fails here.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import mlcheck

PACKAGE = Path(mlcheck.__file__).parent
REPORT = PACKAGE / "report"
NETWORK = ("httpx", "requests", "urllib.request", "http", "socket", "mlcheck.github")


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_report_imports_no_network_code_and_reads_no_environment() -> None:
    for path in sorted(REPORT.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        bad = {n for n in _imports(path) if n.split(".")[0] in NETWORK or n.startswith(NETWORK)}
        assert not bad, f"{path.name} imports {sorted(bad)}"
        assert "os.environ" not in source and "getenv(" not in source, path.name


def test_importing_report_loads_no_network_module() -> None:
    code = textwrap.dedent(
        """
        import sys
        import mlcheck.report
        loaded = [m for m in sys.modules if m.split(".")[0] in ("httpx", "requests", "socket")
                  or m.startswith(("mlcheck.github", "mlcheck.publish", "http.client"))]
        print(loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_report_modules_stay_under_600_lines() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in REPORT.glob("*.py")}
    assert sizes and all(n <= 600 for n in sizes.values()), sizes


# Two words or more (hyphenated words count as one): a sentence or a label someone reads.
_WORDS = re.compile(r"[A-Za-z]{2,}[ ,:;'’]+[A-Za-z]{2,}")
# Text for the log, not for the comment: exception messages, and the publisher's notes.
_LOG_CALLS = ("rec.note", "rec.attempt", "rec.problems.append")
# Labels the publisher passes to its own log notes (``_parse_digests(..., where)``).
_LOG_LABELS = {"base digest", "previous nightly digest"}


def _sentences(source: str) -> list[tuple[int, str]]:
    """String literals and f-string templates (``{}`` for each value) of ``source`` that hold
    words, leaving out docstrings, hidden markers (``<!--``), exception messages and log notes."""
    tree = ast.parse(source)
    left_out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                left_out.add(id(first.value))
        if isinstance(node, ast.Raise) or (
            isinstance(node, ast.Call) and ast.unparse(node.func) in _LOG_CALLS
        ):
            left_out.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in left_out:
            continue
        if isinstance(node, ast.JoinedStr):
            left_out.update(id(n) for n in ast.walk(node))
            parts = (v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            found.append((node.lineno, "".join(map(str, parts))))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return [
        (line, text)
        for line, text in found
        if _WORDS.search(text) and "<!--" not in text and text not in _LOG_LABELS
    ]


# What renders or posts the comment, the job summary and the tracking issue (terminal.py
# prints to the console; messages.py is where the words live).
_SPEAKERS = sorted(
    p
    for p in [*REPORT.glob("*.py"), *(PACKAGE / "publish").glob("*.py")]
    if p.name not in ("messages.py", "terminal.py")
)


def test_the_comment_and_issue_sentences_live_in_report() -> None:
    """No renderer or publisher writes a sentence of its own: each one comes from
    mlcheck/report/messages.py, the one place to change how mlcheck talks."""
    # The scan sees what it must: a sentence written into a renderer, in any form.
    planted = (
        "def status(n, phase, rec):\n"
        "    rec.note(f'{n} tests were not read')  # a log note: allowed\n"
        "    if not n:\n"
        "        raise ValueError('no tests at all')  # an error message: allowed\n"
        "    head = f'### {n} failing or flaky tests not listed'\n"
        "    return head + 'error in ' + phase\n"
    )
    assert [text for _, text in _sentences(planted)] == [
        "### {} failing or flaky tests not listed",
        "error in ",
    ]
    assert len(_SPEAKERS) >= 10, _SPEAKERS
    found = [
        f"{path.relative_to(PACKAGE).as_posix()}:{line}: {text!r}"
        for path in _SPEAKERS
        for line, text in _sentences(path.read_text(encoding="utf-8"))
    ]
    assert not found, "say it in mlcheck/report/messages.py:\n" + "\n".join(found)
