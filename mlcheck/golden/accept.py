"""`mlcheck golden accept`: write the observed values of failing golden checks into the golden
files, from results folders (a CI artifact) — no rerun on that hardware.

Results files are untrusted (downloaded artifacts): they are read by
:func:`mlcheck.publish.load_untrusted`, and every path and value is validated before anything
is written; a path must name a ``__golden__/*.json`` file inside the project.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import GoldenFileError
from . import store
from .values import summary


@dataclass(frozen=True)
class Change:
    file: str
    test: str
    name: str
    key: str
    old: str
    new: str

    def line(self) -> str:
        return f"{self.file}  {self.test} › {self.name}  [{self.key}]  {self.old} → {self.new}"


def _safe_path(root: Path, file: str) -> Path:
    rel = PurePosixPath(file)
    if (
        rel.is_absolute()
        or ".." in rel.parts
        or "\\" in file
        or rel.suffix != ".json"
        or len(rel.parts) < 2
        or rel.parts[-2] != store.FOLDER
    ):
        raise GoldenFileError(
            f"results name golden file {file!r}, which is not a {store.FOLDER}/*.json path "
            "inside the project; not written"
        )
    target = root.joinpath(*rel.parts)
    test_file = target.parent.parent / f"{target.stem}.py"
    if not test_file.is_file():
        # the results were made in another folder (a monorepo's sub-project?): say which
        raise GoldenFileError(
            f"results name golden file {file!r}, but {test_file} does not exist: run accept "
            "from the project's root or pass --root"
        )
    return target


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def accept(paths: Iterable[Path], root: Path, *, dry_run: bool = False) -> list[Change]:
    """Write every failing or missing golden value found in the results under ``paths``.

    >>> accept([Path("gpu-results")], Path("."))  # doctest: +SKIP
    [Change(file='tests/__golden__/test_x.json', test='test_x', name='logits', ...)]
    """
    from ..publish import load_untrusted

    # validate everything first: a bad entry anywhere writes nothing
    planned: dict[tuple[str, str, str, str], tuple[Path, dict[str, Any]]] = {}
    for results in load_untrusted(list(paths)):
        for result in results.tests:
            if result.golden is None:
                continue
            for f in result.golden.failures:
                target = _safe_path(root, f.file)
                where = f"results for {f.file} › {f.test} › {f.name}"
                if not store.KEY_RE.match(f.key):
                    raise GoldenFileError(f"{where}: {f.key!r} is not a hardware key")
                if not f.test or not f.name:
                    raise GoldenFileError(f"{where}: empty test or check name")
                record = {"recorded_with": dict(f.recorded_with), "value": dict(f.value)}
                store.validate(
                    target, {"format": store.FORMAT, "tests": {f.test: {f.name: {f.key: record}}}}
                )
                planned[(f.file, f.test, f.name, f.key)] = (target, record)
    changes = []
    for (file, test, name, key), (target, record) in sorted(planned.items()):
        new = summary(record["value"])
        if dry_run:
            current = store.read(target)["tests"].get(test, {}).get(name, {}).get(key)
        else:
            current = store.put(target, test, name, key, record)
        old = summary(current["value"]) if current else "(none)"
        changes.append(Change(file, test, name, key, _clip(old), _clip(new)))
    return changes
