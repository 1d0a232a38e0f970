"""The report package's layout claims: pure (no network, no environment), one home for the words.

STYLE.md: "every sentence the PR comment or tracking issue says → report/"; "renderers import no
network code". These tests read the source and import the package in a fresh interpreter, so a
new import or a sentence written back into a publisher fails here.
"""

from __future__ import annotations

import ast
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


def _literals(path: Path) -> list[str]:
    """String literals of a module, docstrings left out (they may quote what the code says)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


# Words of the PR comment and the tracking issue that used to live in the publishers.
SENTENCES = (
    "⏳ GPU run scheduled",  # `mlcheck schedule --help` may quote it; the comment's heading not
    "⛔ GPU run not scheduled",
    "⚠️ Results not published",
    "These results are for",
    "Safety options come from",
    "Nightly run",
    "all passing",
    "kept up to date by mlcheck",
    "New failures",
)


def test_the_comment_and_issue_sentences_live_in_report() -> None:
    found = {
        (path.relative_to(PACKAGE).as_posix(), sentence)
        for path in PACKAGE.rglob("*.py")
        if REPORT not in path.parents
        for text in _literals(path)
        for sentence in SENTENCES
        if sentence in text
    }
    assert not found, f"say it in mlcheck/report/messages.py: {sorted(found)}"
    said = "\n".join(_literals(REPORT / "messages.py"))
    assert all(sentence in said for sentence in SENTENCES)
