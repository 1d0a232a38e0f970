#!/usr/bin/env python3
"""Extract the part of GitHub's REST OpenAPI description that mlcheck uses into test data.

The local GitHub server in ``tests/github_server/`` validates every request and response
against this subset, so the client is tested against GitHub's published contract, not against
our reading of it. The description comes from the npm package ``@octokit/openapi`` (GitHub's
own ``api.github.com.json``); the package version is recorded in the output.

    python scripts/extract_github_openapi.py                 # latest, via `npm pack`
    python scripts/extract_github_openapi.py --version 23.0.2
    python scripts/extract_github_openapi.py --tarball octokit-openapi-23.0.2.tgz

Prose (descriptions, examples) is dropped to keep the file small; schemas are kept whole.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "@octokit/openapi"
MEMBER = "package/generated/api.github.com.json"
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "github-openapi-subset.json"

# (path, method) of every REST call mlcheck/github/client.py makes. Keep in sync with the client.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/user", "get"),
    ("/repos/{owner}/{repo}", "get"),
    ("/repos/{owner}/{repo}/issues", "get"),
    ("/repos/{owner}/{repo}/issues", "post"),
    ("/repos/{owner}/{repo}/issues/{issue_number}", "get"),
    ("/repos/{owner}/{repo}/issues/{issue_number}", "patch"),
    ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "get"),
    ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "post"),
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}", "get"),
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}", "patch"),
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}", "delete"),
    ("/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}", "delete"),
    ("/repos/{owner}/{repo}/pulls", "get"),
    ("/repos/{owner}/{repo}/pulls/{pull_number}", "get"),
    ("/repos/{owner}/{repo}/commits/{commit_sha}/pulls", "get"),
    ("/repos/{owner}/{repo}/collaborators/{username}/permission", "get"),
    ("/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches", "post"),
    # `mlcheck nightly fetch` (mlcheck/github/artifacts.py): the last good nightly's artifact
    ("/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs", "get"),
    ("/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts", "get"),
    ("/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}", "get"),
)

# Keys that carry prose only; dropped everywhere except as property names.
PROSE = {"description", "summary", "examples", "example", "externalDocs", "x-github"}


def fetch_tarball(version: str | None, workdir: Path) -> Path:
    spec = f"{PACKAGE}@{version}" if version else PACKAGE
    done = subprocess.run(
        ["npm", "pack", spec, "--silent"], cwd=workdir, check=True, capture_output=True, text=True
    )
    return workdir / done.stdout.strip().splitlines()[-1]


def read_description(tarball: Path) -> tuple[dict[str, Any], str]:
    with tarfile.open(tarball) as tar:
        package = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
        description = json.load(tar.extractfile(MEMBER))  # type: ignore[arg-type]
    return description, package["version"]


def strip_prose(node: Any, *, in_properties: bool = False) -> Any:
    """Drop prose keys; under ``properties`` every key is a field name and is kept."""
    if isinstance(node, dict):
        return {
            key: strip_prose(value, in_properties=key == "properties" and not in_properties)
            for key, value in node.items()
            if in_properties or key not in PROSE
        }
    if isinstance(node, list):
        return [strip_prose(item) for item in node]
    return node


def refs_in(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                found |= refs_in(value)
    elif isinstance(node, list):
        for item in node:
            found |= refs_in(item)
    return found


def subset(description: dict[str, Any], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method in OPERATIONS:
        operation = description["paths"][path][method]
        paths.setdefault(path, {})[method] = strip_prose(operation)
    # Follow $refs transitively so the subset is self-contained.
    components: dict[str, dict[str, Any]] = {}
    pending = refs_in(paths)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)  # "#/components/<kind>/<name>"
        node = strip_prose(description["components"][kind][name])
        components.setdefault(kind, {})[name] = node
        pending |= refs_in(node) - seen
    return {
        "openapi": description["openapi"],
        "info": {
            "title": "GitHub REST API subset used by mlcheck",
            "version": description["info"]["version"],
            "x-source": f"npm {PACKAGE}@{version} {MEMBER}",
            "x-generated-by": "scripts/extract_github_openapi.py",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            kind: dict(sorted(items.items())) for kind, items in sorted(components.items())
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", help=f"{PACKAGE} version (default: latest)")
    parser.add_argument("--tarball", type=Path, help="use an already downloaded `npm pack` file")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch_tarball(args.version, Path(tmp))
        description, version = read_description(tarball)
    result = subset(description, version)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size // 1024} KiB, {PACKAGE}@{version})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
