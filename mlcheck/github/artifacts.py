"""Another run's results artifact, through the REST API: the last good nightly's file map.

The GPU dispatch selects its tests by the per-test file map a nightly recorded
(:mod:`mlcheck.plugin.selection`), and the scheduler sizes runners by the nightly's measured
peaks; both live in the nightly's results artifact. A trusted job (no PR code, ``actions:
read``) fetches them with :func:`find_nightly` and :func:`download`, and reads only the expected
files out of the zip with :func:`read_members`:

- the run: the newest runs of the nightly's workflow file on the default branch that
  concluded ``success``, newest first (a red nightly's map may miss files a failing test never
  reached), each checked again here (branch, conclusion, this repository's code);
- the artifact: by name, not expired; GitHub answers its download with a 302 to a short-lived
  signed URL off the API host, fetched **without** the token, bounded in size while streaming;
- the zip: every entry's name is checked (no absolute path, no ``..``, no backslash, no link,
  no duplicate of a wanted name) before anything is read; a bad one refuses the whole
  artifact. Only the wanted names at its root are read, each bounded in size after
  decompression (a zip's sizes are claims, so the read itself is capped too).

Nothing to fetch (no such workflow, no successful run, no artifact, an expired one, GitHub
unreachable) is :class:`NothingToFetch`: the caller writes nothing, and selection then runs
every test and says why.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import (
    ArtifactRefused,
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubUnavailable,
    NothingToFetch,
    TooLarge,
)
from .client import GitHubClient

MAX_ZIP_BYTES = 512 * 1024 * 1024  # the whole results artifact, as downloaded
MAX_ENTRIES = 10_000  # entries in its zip: a results folder has a handful
RUNS_LOOKED_AT = 5  # successful runs tried, newest first, for one whose artifact is there


@dataclass(frozen=True)
class Nightly:
    """The run and artifact found: what :func:`download` fetches."""

    run_id: int
    run_number: int
    head_sha: str
    html_url: str
    artifact_id: int
    size: int


def find_nightly(
    client: GitHubClient, repo: str, workflow: str, artifact: str, branch: str
) -> Nightly:
    """The newest successful run of ``workflow`` on ``branch`` that still has ``artifact``.

    Raises :class:`NothingToFetch` when there is none, or GitHub is unreachable; 401 and 403
    (a bad token, a missing ``actions: read``) raise their :class:`GitHubError`.
    """
    try:
        runs = client.workflow_runs(
            repo, workflow, branch=branch, status="success", per_page=RUNS_LOOKED_AT
        )
    except GitHubNotFound:
        raise NothingToFetch(
            f"no workflow {workflow!r} in {repo} (add the nightly, or name its file; a private "
            "repository also answers so without `actions: read`)"
        ) from None
    except (GitHubUnavailable, GitHubRateLimited) as exc:
        raise NothingToFetch(f"GitHub did not answer: {exc}") from None
    good = [r for r in runs if _is_good(r, repo, branch)]
    if not good:
        raise NothingToFetch(f"no successful run of {workflow} on {branch}")
    for run in good:
        try:
            found = client.run_artifacts(repo, int(run["id"]), artifact)
        except (GitHubUnavailable, GitHubRateLimited) as exc:
            raise NothingToFetch(f"GitHub did not answer: {exc}") from None
        named = [a for a in found if a.get("name") == artifact]
        if not named:
            continue  # that run uploaded no such artifact: an older one may have
        newest = max(named, key=lambda a: str(a.get("created_at") or ""))
        if newest.get("expired"):
            raise NothingToFetch(
                f"the artifact {artifact!r} of run #{run['run_number']} ({run['html_url']}) "
                "has expired (raise the nightly's retention-days)"
            )
        return Nightly(
            int(run["id"]),
            int(run["run_number"]),
            str(run["head_sha"]),
            str(run["html_url"]),
            int(newest["id"]),
            int(newest["size_in_bytes"]),
        )
    raise NothingToFetch(
        f"the last {len(good)} successful run(s) of {workflow} uploaded no artifact {artifact!r}"
    )


def _is_good(run: dict[str, Any], repo: str, branch: str) -> bool:
    """What was asked of the API, checked again: this repository's code, on ``branch``, green."""
    head = run.get("head_repository") or {}
    return (
        run.get("conclusion") == "success"
        and run.get("head_branch") == branch
        and str(head.get("full_name", "")).lower() == repo.lower()  # GitHub's names ignore case
    )


def download(
    client: GitHubClient, repo: str, nightly: Nightly, dest: Path, max_bytes: int = MAX_ZIP_BYTES
) -> None:
    """Write the artifact's zip to ``dest``, at most ``max_bytes``; the token is never sent to
    the signed URL GitHub redirects to."""
    if nightly.size > max_bytes:
        raise ArtifactRefused(_too_big("the artifact", nightly.size, max_bytes))
    try:
        location = client.artifact_zip_location(repo, nightly.artifact_id)
    except GitHubError as exc:
        if exc.status == 410:
            raise NothingToFetch(f"the artifact of run #{nightly.run_number} has expired") from None
        if isinstance(exc, GitHubUnavailable | GitHubRateLimited | GitHubNotFound):
            raise NothingToFetch(f"GitHub did not hand out the artifact: {exc}") from None
        raise
    try:
        client.download_signed(location, dest, max_bytes)
    except TooLarge as exc:
        raise ArtifactRefused(_too_big("the artifact", exc.size, max_bytes)) from None
    except GitHubError as exc:
        raise NothingToFetch(f"the artifact's download failed: {exc}") from None


def read_members(zip_path: Path, wanted: Iterable[str], max_bytes: int) -> dict[str, bytes]:
    """The bytes of the ``wanted`` names at the zip's root that it has, each at most
    ``max_bytes``; :class:`ArtifactRefused` if any entry is unsafe or a wanted one too big.

    zipfile's ``extract`` would sanitise names silently; an artifact that needs it is not one
    a nightly uploaded, so it is refused instead, and nothing is extracted to disk here.
    """
    names = set(wanted)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactRefused(f"the artifact is not a readable zip ({exc})") from None
    found: dict[str, zipfile.ZipInfo] = {}
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            raise ArtifactRefused(
                f"the artifact has {len(entries):,} entries, over {MAX_ENTRIES:,}"
            )
        for info in entries:
            _check_entry(info)
            if info.filename in names:
                if info.filename in found:
                    raise ArtifactRefused(f"the artifact holds {info.filename} twice")
                found[info.filename] = info
        out = {}
        for name, info in found.items():
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no type recorded (a plain file)
            if info.is_dir() or kind not in (0, stat.S_IFREG):
                raise ArtifactRefused(f"{name} in the artifact is not a regular file")
            if info.file_size > max_bytes:
                raise ArtifactRefused(_too_big(name, info.file_size, max_bytes))
            with archive.open(info) as member:
                data = member.read(max_bytes + 1)  # the header's size is a claim: cap the read
            if len(data) > max_bytes:
                raise ArtifactRefused(_too_big(name, len(data), max_bytes))
            out[name] = data
    return out


def _check_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename
    path = PurePosixPath(name)
    mode = info.external_attr >> 16
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or path.is_absolute()
        or ".." in path.parts
        or (len(name) > 1 and name[1] == ":")  # a drive letter
    ):
        raise ArtifactRefused(f"the artifact has an unsafe entry name {name!r}")
    if stat.S_ISLNK(mode):
        raise ArtifactRefused(f"the artifact has a link, {name!r}")


def _too_big(what: str, size: int, limit: int) -> str:
    mib = 1024 * 1024
    return (
        f"{what} is {size / mib:.1f} MiB, over the {limit / mib:.0f} MiB limit "
        "(raise it with --max-mb if that is expected)"
    )
