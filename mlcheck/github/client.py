"""The one client that talks to GitHub's REST API.

Why a thin ``httpx`` client rather than PyGithub or githubkit: mlcheck makes about fifteen
calls, and the properties that matter here are exactly the ones a wrapper hides: how many
requests a publish costs (PyGithub objects load lazily and re-fetch), what is retried (a
comment POST is not idempotent; the sticky loop, :func:`mlcheck.publish.comment.update_section`,
handles duplicates itself), how long we
wait for rate limits (capped by ``max_wait`` so a CI job never sleeps for an hour), and that
the token never reaches a log or an exception. ``httpx`` is already installed with
``huggingface_hub``, so this adds no dependency; githubkit would add pydantic-generated models
for 1,000 endpoints we do not call. GraphQL is not used (``GITHUB_GRAPHQL_URL`` is ignored).

Every call pins ``X-GitHub-Api-Version: 2022-11-28``, honours ``GITHUB_API_URL`` (GitHub
Enterprise Server), follows ``Link: rel="next"`` pagination, and retries 5xx answers, dropped
connections, timeouts, ``429``/``403`` rate limits (``retry-after``, ``x-ratelimit-reset``,
secondary limits) with jittered exponential backoff.

>>> client = GitHubClient("ghs_example", api_url="https://ghe.example.com/api/v3")
>>> client  # the token is never shown
GitHubClient(api_url='https://ghe.example.com/api/v3', token=***)
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from mlcheck import constants
from mlcheck.constants import DEFAULT_GITHUB_API_URL
from mlcheck.errors import (
    GitHubAuthError,
    GitHubError,
    GitHubNotFound,
    GitHubPermissionError,
    GitHubRateLimited,
    GitHubUnavailable,
    GitHubValidationFailed,
    TooLarge,
)
from mlcheck.github.payloads import (
    Comment,
    Issue,
    Permission,
    PullRequest,
    Repository,
    parse_comment,
    parse_issue,
    parse_pull_request,
)
from mlcheck.redact import Redactor

API_VERSION = "2022-11-28"
# The author of comments made with a workflow's GITHUB_TOKEN.
ACTIONS_BOT = "github-actions[bot]"
# Workflow permission each kind of write needs (named in 403 errors).
PERM_PULL_REQUESTS = "pull-requests: write"
PERM_ISSUES = "issues: write"
PERM_ACTIONS = "actions: write"
PERM_ACTIONS_READ = "actions: read"  # other runs and their artifacts (the nightly's file map)
_RETRY_STATUSES = {500, 502, 503, 504}
_FORK_HINT = (
    "; pull_request runs from forks always get a read-only token: publish from a "
    "`workflow_run` job instead (see README, fork PRs)"
)


# --- the client


class GitHubClient:
    """A small GitHub REST client. Thread-safe (one ``httpx.Client``); close it or use ``with``.

    ``max_wait`` caps any single wait (rate-limit reset, ``retry-after``): a longer one raises
    :class:`GitHubRateLimited` instead of stalling the job. ``backoff`` is the first retry
    delay for errors that give no wait (doubled per attempt, with jitter).

    >>> with GitHubClient(None, api_url="http://127.0.0.1:1", max_attempts=1) as gh:
    ...     gh.api_url
    'http://127.0.0.1:1'
    """

    def __init__(
        self,
        token: str | None,
        *,
        api_url: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        max_wait: float = 60.0,
        backoff: float = 1.0,
        user_agent: str = "mlcheck",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_url = (api_url or DEFAULT_GITHUB_API_URL).rstrip("/")
        self._token = token or None
        self._redactor = Redactor(values=(self._token,) if self._token else ())
        self.max_attempts = max(1, max_attempts)
        self.max_wait = max_wait
        self.backoff = backoff
        self._sleep = sleep
        self._viewer: str | None = None
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": user_agent,
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self._http = httpx.Client(headers=headers, timeout=timeout, follow_redirects=False)

    @classmethod
    def from_env(
        cls, token: str | None = None, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> GitHubClient:
        """A client for ``GITHUB_API_URL`` with ``token`` (default: ``GITHUB_TOKEN``)."""
        return cls(
            token if token is not None else constants.get(constants.ENV_GITHUB_TOKEN, environ),
            api_url=constants.github_api_url(environ),
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"GitHubClient(api_url={self.api_url!r}, token={'***' if self._token else None})"

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def redact(self, text: str) -> str:
        """``text`` with the token (and anything token-shaped) replaced by ``***``, for
        messages and anything we post: :class:`mlcheck.redact.Redactor`, the one redactor."""
        return self._redactor.redact(text)

    # -- transport ---------------------------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        if not path_or_url.startswith(("http://", "https://")):
            return self.api_url + path_or_url
        # Only follow links (pagination) to the API host: the token must not travel elsewhere.
        if urlsplit(path_or_url)[:2] != urlsplit(self.api_url)[:2]:
            raise GitHubError(f"refusing to follow a link off the API host: {path_or_url}")
        return path_or_url

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``, or None if it is final."""
        status = response.status_code
        headers = response.headers
        limited = status == 429 or (
            status == 403
            and (
                "retry-after" in headers
                or headers.get("x-ratelimit-remaining") == "0"
                or "rate limit" in _message(response, self.redact).lower()
            )
        )
        if not limited and status not in _RETRY_STATUSES:
            return None
        if retry_after := headers.get("retry-after"):
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                pass
        if limited and headers.get("x-ratelimit-remaining") == "0":
            reset = headers.get("x-ratelimit-reset")
            if reset and reset.isdigit():
                return max(0.0, int(reset) - time.time())
        if limited and "secondary rate limit" in _message(response, self.redact).lower():
            return 60.0  # GitHub's advice when a secondary limit gives no retry-after
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        base = self.backoff * 2 ** (attempt - 1)
        return base + random.uniform(0, self.backoff)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        permission: str | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response | None:
        """Send one API request with retries; raise a typed :class:`GitHubError` on failure.

        ``permission`` names the workflow permission a 403 means is missing; with
        ``missing_ok`` a 404 returns None instead of raising.
        """
        url = self._url(path)
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._http.request(method, url, params=params, json=json)
            except httpx.TransportError as exc:  # timeouts, resets, refused connections
                if attempt == self.max_attempts:
                    raise GitHubUnavailable(
                        self.redact(
                            f"{method} {path}: {type(exc).__name__}: {exc} "
                            f"(after {attempt} attempts); GitHub may be down, retry the job"
                        ),
                        method=method,
                        path=path,
                    ) from None
                self._sleep(self._backoff(attempt))
                continue
            if response.status_code < 400:
                return response
            if response.status_code == 404 and missing_ok:
                return None
            wait = self._retry_wait(response, attempt)
            if wait is None:
                raise self._error(response, method, path, permission)
            if wait > self.max_wait:
                raise GitHubRateLimited(
                    f"{method} {path}: GitHub asks to wait {wait:.0f}s (rate limit, "
                    f"HTTP {response.status_code}), more than max_wait={self.max_wait:.0f}s; "
                    "rerun the job later",
                    status=response.status_code,
                    method=method,
                    path=path,
                )
            if attempt == self.max_attempts:
                raise GitHubUnavailable(
                    self.redact(
                        f"{method} {path}: HTTP {response.status_code} "
                        f"{_message(response, self.redact)!r} after {attempt} attempts; "
                        "retry the job"
                    ),
                    status=response.status_code,
                    method=method,
                    path=path,
                )
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(
        self, response: httpx.Response, method: str, path: str, permission: str | None
    ) -> GitHubError:
        status = response.status_code
        said = f"{method} {path}: HTTP {status} {_message(response, self.redact)!r}"
        kind: type[GitHubError] = GitHubError
        if status == 401:
            kind = GitHubAuthError
            said += "; the token is missing or invalid: pass `github-token` (or GITHUB_TOKEN)"
        elif status == 403:
            kind = GitHubPermissionError
            if permission:
                said += (
                    f"; the token lacks `{permission}`: add `permissions: {{{permission}}}` "
                    f"to the workflow or job{_FORK_HINT}"
                )
        elif status == 404:
            kind = GitHubNotFound
            said += "; check the repository, number and workflow file name"
            if permission:
                said += f" (a private repository also answers 404 without `{permission}`)"
        elif status in (400, 422):
            kind = GitHubValidationFailed
        return kind(self.redact(said), status=status, method=method, path=path)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response is not None and response.content else None

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Items of every page of a list endpoint (``per_page=100``, ``Link: rel="next"``)."""
        url: str | None = path
        query: Mapping[str, Any] | None = {"per_page": 100, **(params or {})}
        while url:
            response = self.request("GET", url, params=query)
            assert response is not None
            yield from response.json()
            url = response.links.get("next", {}).get("url")
            query = None  # the next link carries the query

    # -- identity and repository -------------------------------------------------------------

    def viewer_login(self) -> str:
        """The login comments made with this token carry (cached; one request at most).

        Installation tokens (a workflow's ``GITHUB_TOKEN``) cannot read ``/user``: their
        comments come from ``github-actions[bot]``.
        """
        if self._viewer is None:
            try:
                self._viewer = self._json("GET", "/user")["login"]
            except (GitHubPermissionError, GitHubNotFound):
                self._viewer = ACTIONS_BOT
        return self._viewer

    def get_repo(self, repo: str) -> Repository:
        raw = self._json("GET", f"/repos/{_repo(repo)}")
        return Repository(raw["full_name"], raw["default_branch"], raw["private"], raw["html_url"])

    # -- comments ------------------------------------------------------------------------------

    def list_comments(self, repo: str, number: int) -> list[Comment]:
        """Every comment on issue or PR ``number``, oldest first."""
        path = f"/repos/{_repo(repo)}/issues/{int(number)}/comments"
        return [parse_comment(raw) for raw in self.paginate(path)]

    def create_comment(self, repo: str, number: int, body: str) -> Comment:
        path = f"/repos/{_repo(repo)}/issues/{int(number)}/comments"
        raw = self._json(
            "POST", path, json={"body": self.redact(body)}, permission=PERM_PULL_REQUESTS
        )
        return parse_comment(raw)

    def update_comment(self, repo: str, comment_id: int, body: str) -> Comment:
        path = f"/repos/{_repo(repo)}/issues/comments/{int(comment_id)}"
        raw = self._json(
            "PATCH", path, json={"body": self.redact(body)}, permission=PERM_PULL_REQUESTS
        )
        return parse_comment(raw)

    def delete_comment(self, repo: str, comment_id: int) -> bool:
        """Delete a comment; False if it was already gone (a concurrent job deleted it)."""
        path = f"/repos/{_repo(repo)}/issues/comments/{int(comment_id)}"
        return (
            self.request("DELETE", path, permission=PERM_PULL_REQUESTS, missing_ok=True) is not None
        )

    # -- pull requests, permissions, labels, dispatch -------------------------------------------

    def get_pull(self, repo: str, number: int) -> PullRequest:
        return parse_pull_request(self._json("GET", f"/repos/{_repo(repo)}/pulls/{int(number)}"))

    def pulls_for_commit(self, repo: str, sha: str) -> list[PullRequest]:
        """PRs that contain commit ``sha`` (open and closed)."""
        path = f"/repos/{_repo(repo)}/commits/{quote(sha, safe='')}/pulls"
        return [parse_pull_request(raw) for raw in self.paginate(path)]

    def pulls_for_head(
        self, repo: str, head_owner: str, head_branch: str, *, state: str = "open"
    ) -> list[PullRequest]:
        """PRs into ``repo`` from ``head_owner:head_branch`` (works for forks, unlike commits)."""
        params = {"state": state, "head": f"{head_owner}:{head_branch}"}
        return [
            parse_pull_request(raw) for raw in self.paginate(f"/repos/{_repo(repo)}/pulls", params)
        ]

    def open_pull_for_commit(self, repo: str, sha: str) -> PullRequest | None:
        """The open PR whose head is ``sha`` (the PR a push belongs to), if any."""
        pulls = [p for p in self.pulls_for_commit(repo, sha) if p.state == "open"]
        at_head = [p for p in pulls if p.head_sha == sha]
        candidates = at_head or pulls
        return candidates[0] if candidates else None

    def collaborator_permission(self, repo: str, user: str) -> Permission:
        """``user``'s permission on ``repo`` as GitHub computes it (``none`` for strangers)."""
        path = f"/repos/{_repo(repo)}/collaborators/{quote(user, safe='')}/permission"
        raw = self.request("GET", path, missing_ok=True)
        if raw is None:  # not a user, or not a collaborator of a private repository
            return Permission(user, "none", "none")
        data = raw.json()
        return Permission(user, data["permission"], data.get("role_name") or data["permission"])

    def remove_label(self, repo: str, number: int, label: str) -> bool:
        """Remove ``label`` from issue/PR ``number``; False if it was not there."""
        path = f"/repos/{_repo(repo)}/issues/{int(number)}/labels/{quote(label, safe='')}"
        return (
            self.request("DELETE", path, permission=PERM_PULL_REQUESTS, missing_ok=True) is not None
        )

    def dispatch_workflow(
        self, repo: str, workflow: str, ref: str, inputs: Mapping[str, str]
    ) -> None:
        """Start ``workflow`` (file name or id) on ``ref`` with ``inputs`` (all strings)."""
        path = f"/repos/{_repo(repo)}/actions/workflows/{quote(workflow, safe='')}/dispatches"
        self.request(
            "POST", path, json={"ref": ref, "inputs": dict(inputs)}, permission=PERM_ACTIONS
        )

    # -- workflow runs and their artifacts (mlcheck.github.artifacts) ------------------------------

    def workflow_runs(
        self, repo: str, workflow: str, *, branch: str, status: str, per_page: int = 10
    ) -> list[dict[str, Any]]:
        """The newest ``per_page`` runs of ``workflow`` (file name or id) on ``branch`` with
        ``status`` (a status or a conclusion, e.g. ``success``), newest first; raw objects."""
        path = f"/repos/{_repo(repo)}/actions/workflows/{quote(workflow, safe='')}/runs"
        params = {"branch": branch, "status": status, "per_page": per_page}
        data = self._json("GET", path, params=params, permission=PERM_ACTIONS_READ)
        return list(data["workflow_runs"])

    def run_artifacts(self, repo: str, run_id: int, name: str) -> list[dict[str, Any]]:
        """The artifacts named ``name`` of run ``run_id``; raw objects."""
        path = f"/repos/{_repo(repo)}/actions/runs/{int(run_id)}/artifacts"
        params = {"name": name, "per_page": 100}
        data = self._json("GET", path, params=params, permission=PERM_ACTIONS_READ)
        return list(data["artifacts"])

    def artifact_zip_location(self, repo: str, artifact_id: int) -> str:
        """Where GitHub serves artifact ``artifact_id``'s zip: the ``Location`` of its 302, a
        short-lived signed URL to fetch **without** the token (it is off the API host). An
        expired artifact raises :class:`GitHubError` with ``status`` 410."""
        path = f"/repos/{_repo(repo)}/actions/artifacts/{int(artifact_id)}/zip"
        response = self.request("GET", path, permission=PERM_ACTIONS_READ)
        assert response is not None
        location = response.headers.get("location", "")
        if response.status_code != 302 or not location:
            raise GitHubError(
                f"GET {path}: HTTP {response.status_code} without a redirect to the zip",
                status=response.status_code,
                method="GET",
                path=path,
            )
        return location

    def download_signed(self, url: str, dest: Path, max_bytes: int) -> None:
        """Write what ``url`` (a signed URL the API redirected to) serves into ``dest``, at most
        ``max_bytes`` (:class:`TooLarge` beyond, checked while streaming). A client of its own:
        the token is never sent off the API host, and no redirect is followed."""
        scheme = urlsplit(url).scheme
        # http only where the API itself is plain http (a test server, a LAN Enterprise Server)
        if scheme != "https" and not (scheme == "http" and self.api_url.startswith("http://")):
            raise GitHubError(f"refusing to download from a non-https URL ({scheme}://...)")
        written = 0
        try:
            with (
                httpx.Client(timeout=self._http.timeout, follow_redirects=False) as plain,
                plain.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise GitHubUnavailable(
                        f"the signed download answered HTTP {response.status_code}",
                        status=response.status_code,
                    )
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes():
                        written += len(chunk)
                        if written > max_bytes:
                            raise TooLarge(f"the download is over {max_bytes:,} bytes", written)
                        out.write(chunk)
        except httpx.HTTPError as exc:  # the signed URL is never shown: it grants the download
            raise GitHubUnavailable(f"the signed download failed: {type(exc).__name__}") from None

    # -- issues (nightly tracking issue) ----------------------------------------------------------

    def list_issues(
        self,
        repo: str,
        *,
        state: str = "open",
        labels: str | None = None,
        creator: str | None = None,
    ) -> list[Issue]:
        """Issues (not PRs) of ``repo``, newest first."""
        params: dict[str, Any] = {"state": state}
        if labels:
            params["labels"] = labels
        if creator:
            params["creator"] = creator
        raws = self.paginate(f"/repos/{_repo(repo)}/issues", params)
        return [parse_issue(raw) for raw in raws if "pull_request" not in raw]

    def create_issue(self, repo: str, title: str, body: str, labels: tuple[str, ...] = ()) -> Issue:
        payload: dict[str, Any] = {"title": title, "body": self.redact(body)}
        if labels:
            payload["labels"] = list(labels)
        raw = self._json(
            "POST", f"/repos/{_repo(repo)}/issues", json=payload, permission=PERM_ISSUES
        )
        return parse_issue(raw)

    def update_issue(
        self,
        repo: str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: Literal["open", "closed"] | None = None,
    ) -> Issue:
        payload: dict[str, Any] = {}
        if title is not None:
            payload["title"] = title
        if body is not None:
            payload["body"] = self.redact(body)
        if state is not None:
            payload["state"] = state
            if state == "closed":
                payload["state_reason"] = "completed"
        path = f"/repos/{_repo(repo)}/issues/{int(number)}"
        return parse_issue(self._json("PATCH", path, json=payload, permission=PERM_ISSUES))


def _message(response: httpx.Response, redact: Callable[[str], str] = str) -> str:
    """The error's message, redacted **before** it is cut (a cut token would survive)."""
    try:
        data = response.json()
    except ValueError:
        return redact(response.text)[:200]
    return redact(str(data.get("message", "")))[:500] if isinstance(data, dict) else ""


_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def _repo(repo: str) -> str:
    if not _REPO.fullmatch(repo):
        raise GitHubError(f"invalid repository {repo!r}: expected OWNER/NAME")
    return repo
