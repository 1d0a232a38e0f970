"""`mlcheck nightly fetch`: the last good nightly's file map and results, for a later job.

The GPU dispatch selects by the nightly's per-test file map (``--changed-since`` /
``--file-map``) and the scheduler sizes runners by its results (``--sizing-results``); both are
in the nightly's results artifact, which another run can only reach through the API with
``actions: read``. A trusted job runs this and hands the files on as an artifact of its own
run, so the job that runs PR code needs no token (README, "Copying the workflows").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ..action.inputs import FILE_MAP_NAME
from ..constants import ENV_GITHUB_REPOSITORY, get, github_token
from ..errors import GitHubAuthError, GitHubError, GitHubPermissionError, UsageError
from ..results.schema import RESULTS_FILE

FILE_MAP = FILE_MAP_NAME  # where a nightly run records its file map, in its results
RESULTS = RESULTS_FILE
DEFAULT_WORKFLOW = "mlcheck-nightly.yml"
DEFAULT_ARTIFACT = "mlcheck-results-nightly"
DEFAULT_MAX_MB = 64.0
WITHOUT = "a selection by change then runs every test, and runner sizing uses the models"

HELP = "fetch the last good nightly's file map and results (for select: changed and sizing)"
DESCRIPTION = """\
`mlcheck nightly fetch` finds the newest run of --workflow on the default branch (or --branch)
that concluded success, takes its artifact --artifact, and writes the file map
(file-map.json, checked to be a file map) and the results (results.json, checked against the
results schema) found at the artifact's root into --out. Nothing else of the artifact is
written; an entry with an unsafe name (absolute, `..`, a link) or a file over --max-mb refuses
the whole artifact.

When there is nothing to fetch (no such workflow, no successful run, no artifact, an expired
one, GitHub unreachable) it says why in one line, writes nothing and exits 0: `mlcheck run
--changed-since` then runs every test and says why ("never fewer when unsure").

Needs a token (GITHUB_TOKEN) with `actions: read`. Run it in a job that runs no PR code, and
hand the files on as an artifact of the current run: the job that runs PR code then needs no
token at all."""
EPILOG = """\
exit codes:
  0  written, or nothing to fetch (the line says why)
  2  usage problem (no token, no repository), or the artifact was refused (nothing written)
  3  the token was refused or lacks `actions: read` (the message says what to add)"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("nightly", help=HELP, description=DESCRIPTION)
    actions = parser.add_subparsers(dest="nightly_command", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument(
        "--workflow",
        default=DEFAULT_WORKFLOW,
        help=f"the nightly's workflow file name or id (default {DEFAULT_WORKFLOW})",
    )
    fetch.add_argument(
        "--artifact",
        default=DEFAULT_ARTIFACT,
        help=f"the nightly's results artifact (default {DEFAULT_ARTIFACT})",
    )
    fetch.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where the files are written"
    )
    fetch.add_argument(
        "--branch", default=None, help="the branch (default: the repository's default branch)"
    )
    fetch.add_argument(
        "--repo",
        default=None,
        metavar="OWNER/NAME",
        help=f"the repository (default ${ENV_GITHUB_REPOSITORY})",
    )
    fetch.add_argument(
        "--max-mb",
        type=float,
        default=DEFAULT_MAX_MB,
        help=f"largest file taken from the artifact, in MiB (default {DEFAULT_MAX_MB:.0f})",
    )
    fetch.add_argument("--retries", type=int, default=4, help="attempts per request (default 4)")
    fetch.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..github import GitHubClient
    from ..github.artifacts import MAX_ZIP_BYTES, NothingToFetch, download, find_nightly

    repo = args.repo or get(ENV_GITHUB_REPOSITORY)
    if not repo:
        raise UsageError(f"no repository: pass --repo OWNER/NAME or set {ENV_GITHUB_REPOSITORY}")
    token = github_token(os.environ)
    if not token:
        raise UsageError(
            "no token: set GITHUB_TOKEN (in a workflow: env: GITHUB_TOKEN: ${{ github.token }}, "
            "with permissions: actions: read)"
        )
    if args.max_mb <= 0:
        raise UsageError(f"--max-mb must be positive, not {args.max_mb}")
    max_bytes = int(args.max_mb * 1024 * 1024)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in (FILE_MAP, RESULTS):  # never leave an older fetch's file behind
        (out / name).unlink(missing_ok=True)
    with GitHubClient.from_env(token=token, max_attempts=args.retries) as client:
        try:
            branch = args.branch or client.get_repo(repo).default_branch
            nightly = find_nightly(client, repo, args.workflow, args.artifact, branch)
            with tempfile.TemporaryDirectory(prefix="mlcheck-nightly-") as tmp:
                zip_path = Path(tmp) / "artifact.zip"
                download(client, repo, nightly, zip_path, max(MAX_ZIP_BYTES, 8 * max_bytes))
                files = _checked(zip_path, Path(tmp), max_bytes)
        except NothingToFetch as why:
            print(f"mlcheck: nothing fetched from the nightly: {why}; {WITHOUT}")
            return 0
        except (GitHubAuthError, GitHubPermissionError) as exc:
            print(f"mlcheck: error: {exc}", file=sys.stderr)
            return 3
        except GitHubError as exc:  # anything else GitHub answered: nothing to use, say why
            print(f"mlcheck: nothing fetched from the nightly: {exc}; {WITHOUT}")
            return 0
    for name, data in files.items():
        (out / name).write_bytes(data)
    took = ", ".join(str(out / name) for name in files) or "nothing (no file-map.json in it)"
    print(
        f"mlcheck: nightly run #{nightly.run_number} of {nightly.head_sha[:7]} "
        f"({nightly.html_url}): wrote {took}"
    )
    return 0


def _checked(zip_path: Path, scratch: Path, max_bytes: int) -> dict[str, bytes]:
    """The map and results in the zip, each checked as what it claims to be."""
    from ..errors import ResultsError
    from ..github.artifacts import ArtifactRefused, read_members
    from ..plugin.selection import FileMap
    from ..results.untrusted import Limits, load_untrusted
    from ..text import OBJECT_ID_RE

    members = read_members(zip_path, (FILE_MAP, RESULTS), max_bytes)
    for name, data in members.items():
        (scratch / name).write_bytes(data)
    if FILE_MAP in members:
        try:
            commit = FileMap.read(scratch / FILE_MAP).commit
        except UsageError as exc:
            raise ArtifactRefused(f"{FILE_MAP} in the artifact is not a file map: {exc}") from None
        if not OBJECT_ID_RE.fullmatch(commit):
            raise ArtifactRefused(f"{FILE_MAP} in the artifact names no commit ({commit[:50]!r})")
    if RESULTS in members:
        try:
            load_untrusted([scratch / RESULTS], limits=Limits(max_bytes=max_bytes))
        except ResultsError as exc:
            raise ArtifactRefused(f"{RESULTS} in the artifact was refused: {exc}") from None
    return members
