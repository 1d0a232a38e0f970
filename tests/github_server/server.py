"""The server: lifecycle, what tests look at, and objects as GitHub returns them."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

from .faults import Faults
from .handler import Handler, Logged
from .spec import Spec, shared_spec
from .state import ACTIONS_BOT, Identity, State

BLOBS = "/_blobs/"  # the signed artifact URLs (not part of the REST API)


class GitHubServer:
    """The server; ``with GitHubServer() as gh`` starts it on a free 127.0.0.1 port."""

    def __init__(
        self,
        spec: Spec | None = None,
        *,
        token: str | None = None,
        prefix: str = "",
    ) -> None:
        self.spec = spec or shared_spec()
        self.prefix = prefix.rstrip("/")  # "/api/v3" serves like GitHub Enterprise Server
        self.state = State()
        # One token per server: a token hunt in one scenario must not find another scenario's
        # token in /proc when two run at once (xdist).
        token = token or f"ghs_localtest{secrets.token_hex(12)}"
        self.token = token
        self.tokens: dict[str, Identity] = {token: Identity(ACTIONS_BOT)}
        self.faults = Faults()
        self.log: list[Logged] = []
        self.errors: list[str] = []  # responses that did not match the OpenAPI description
        # Called as hook(op, state) under the lock after each handled request: races on demand.
        self.after_request: list[Callable[[str, State], None]] = []
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> GitHubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        handler = type("Handler", (Handler,), {"app": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{self.prefix}"

    # -- what tests look at -----------------------------------------------------------------------

    def add_token(self, token: str, identity: Identity) -> str:
        self.tokens[token] = identity
        return token

    def count(self, op: str | None = None) -> int:
        """Requests received (all, or for ``op`` like ``"GET /repos/{owner}/{repo}"``)."""
        with self.lock:
            return sum(1 for entry in self.log if op is None or entry.op == op)

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(entry.op for entry in self.log)

    def assert_clean(self) -> None:
        assert not self.errors, "responses broke the OpenAPI description:\n" + "\n".join(
            self.errors
        )

    # -- objects as GitHub returns them -----------------------------------------------------------

    def web(self) -> str:
        return "https://github.localhost"

    def user(self, login: str) -> dict[str, Any]:
        uid = sum(map(ord, login)) * 7
        bot = login.endswith("[bot]")
        base = f"{self.url}/users/{quote(login)}"
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_{uid}",
            "avatar_url": f"https://avatars.github.localhost/u/{uid}",
            "gravatar_id": "",
            "url": base,
            "html_url": f"{self.web()}/{quote(login)}",
            **{
                f"{k}_url": f"{base}/{k}"
                for k in [
                    "followers",
                    "following",
                    "gists",
                    "starred",
                    "subscriptions",
                    "organizations",
                    "repos",
                    "events",
                    "received_events",
                ]
            },
            "type": "Bot" if bot else "User",
            "site_admin": False,
        }

    def repository(self, schema: str = "repository", full_name: str | None = None) -> Any:
        state = self.state
        full_name = full_name or state.full_name
        owner, name = full_name.split("/")
        api = f"{self.url}/repos/{full_name}"
        overrides = {
            "id": 42 if full_name == state.full_name else 43,
            "node_id": f"R_{full_name}",
            "name": name,
            "full_name": full_name,
            "owner": self.user(owner),
            "private": state.private,
            "fork": full_name != state.full_name,
            "html_url": f"{self.web()}/{full_name}",
            "url": api,
            "default_branch": state.default_branch,
            "description": None,
            "license": None,
        }
        filled = self.spec.fill({"$ref": self.spec.schema_name(schema)}, overrides)
        for key, value in filled.items():  # every *_url field points at this repository
            if key.endswith("_url") and str(value).startswith("https://api.github.localhost/"):
                filled[key] = f"{api}/{key[:-4]}"
        return filled

    def comment(self, c: dict[str, Any]) -> dict[str, Any]:
        kind = "pull" if self.state.issues[c["issue"]]["is_pr"] else "issues"
        full = self.state.full_name
        return {
            "id": c["id"],
            "node_id": f"IC_{c['id']}",
            "url": f"{self.url}/repos/{full}/issues/comments/{c['id']}",
            "html_url": f"{self.web()}/{full}/{kind}/{c['issue']}#issuecomment-{c['id']}",
            "body": c["body"],
            "user": self.user(c["user"]),
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "issue_url": f"{self.url}/repos/{full}/issues/{c['issue']}",
            "author_association": "NONE" if c["user"].endswith("[bot]") else "MEMBER",
        }

    def label(self, name: str) -> dict[str, Any]:
        lid = sum(map(ord, name))
        return {
            "id": lid,
            "node_id": f"LA_{lid}",
            "url": f"{self.url}/repos/{self.state.full_name}/labels/{quote(name)}",
            "name": name,
            "description": None,
            "color": "ededed",
            "default": False,
        }

    def issue(self, i: dict[str, Any]) -> Any:
        full = self.state.full_name
        api = f"{self.url}/repos/{full}/issues/{i['number']}"
        kind = "pull" if i["is_pr"] else "issues"
        out = self.spec.fill(
            {"$ref": self.spec.schema_name("issue")},
            {
                "id": i["id"],
                "node_id": f"I_{i['id']}",
                "number": i["number"],
                "title": i["title"],
                "body": i["body"],
                "state": i["state"],
                "user": self.user(i["user"]),
                "labels": [self.label(name) for name in i["labels"]],
                "comments": len(self.state.comments_on(i["number"])),
                "created_at": i["created_at"],
                "updated_at": i["updated_at"],
                "closed_at": i["closed_at"],
                "url": api,
                "repository_url": f"{self.url}/repos/{full}",
                "labels_url": f"{api}/labels{{/name}}",
                "comments_url": f"{api}/comments",
                "events_url": f"{api}/events",
                "html_url": f"{self.web()}/{full}/{kind}/{i['number']}",
                "assignee": None,
                "milestone": None,
            },
        )
        if i["is_pr"]:
            out["pull_request"] = {
                "url": f"{self.url}/repos/{full}/pulls/{i['number']}",
                "html_url": out["html_url"],
                "diff_url": out["html_url"] + ".diff",
                "patch_url": out["html_url"] + ".patch",
                "merged_at": None,
            }
        return out

    def pull(self, number: int, schema: str = "pull-request") -> Any:
        i = self.state.issues[number]
        p = self.state.pulls[number]
        full = self.state.full_name
        head_owner = p["head_repo"].split("/")[0]

        def side(ref: str, sha: str, repo: str | None) -> dict[str, Any]:
            owner = (repo or full).split("/")[0]
            return {
                "label": f"{owner}:{ref}",
                "ref": ref,
                "sha": sha,
                "user": self.user(owner),
                "repo": self.repository("repository", repo) if repo else None,
            }

        api = f"{self.url}/repos/{full}/pulls/{number}"
        overrides = {
            "id": i["id"],
            "node_id": f"PR_{i['id']}",
            "number": number,
            "state": i["state"],
            "title": i["title"],
            "body": i["body"],
            "user": self.user(i["user"]),
            "labels": [self.label(name) for name in i["labels"]],
            "head": side(p["head_ref"], p["head_sha"], p["head_repo"]),
            "base": side(self.state.default_branch, p["base_sha"], full),
            "html_url": f"{self.web()}/{full}/pull/{number}",
            "url": api,
            "created_at": i["created_at"],
            "updated_at": i["updated_at"],
            "locked": False,
            "author_association": "MEMBER" if head_owner == self.state.owner else "CONTRIBUTOR",
        }
        filled = self.spec.fill({"$ref": self.spec.schema_name(schema)}, overrides)
        filled["_links"] = {
            k: {"href": f"{api}/{k}"}
            for k in (
                "comments",
                "commits",
                "statuses",
                "html",
                "issue",
                "review_comments",
                "review_comment",
                "self",
            )
        }
        return filled

    def minimal_repository(self, full_name: str) -> Any:
        owner, name = full_name.split("/")
        return self.spec.fill(
            {"$ref": self.spec.schema_name("minimal-repository")},
            {
                "id": 42 if full_name == self.state.full_name else 43,
                "node_id": f"R_{full_name}",
                "name": name,
                "full_name": full_name,
                "owner": self.user(owner),
                "private": self.state.private,
                "fork": full_name != self.state.full_name,
                "html_url": f"{self.web()}/{full_name}",
                "url": f"{self.url}/repos/{full_name}",
            },
        )

    def workflow_run(self, r: dict[str, Any]) -> Any:
        full = self.state.full_name
        api = f"{self.url}/repos/{full}/actions/runs/{r['id']}"
        workflow = r["workflow"]
        return self.spec.fill(
            {"$ref": self.spec.schema_name("workflow-run")},
            {
                "id": r["id"],
                "node_id": f"WFR_{r['id']}",
                "name": workflow,
                "head_branch": r["head_branch"],
                "head_sha": r["head_sha"],
                "path": f".github/workflows/{workflow}",
                "display_title": workflow,
                "run_number": r["run_number"],
                "event": r["event"],
                "status": r["status"],
                "conclusion": r["conclusion"],
                "workflow_id": sum(map(ord, workflow)),
                "url": api,
                "html_url": f"{self.web()}/{full}/actions/runs/{r['id']}",
                "created_at": r["created_at"],
                "updated_at": r["created_at"],
                "head_commit": None,
                "head_repository": self.minimal_repository(r["head_repo"]),
                "repository": self.minimal_repository(full),
                "jobs_url": f"{api}/jobs",
                "logs_url": f"{api}/logs",
                "check_suite_url": f"{self.url}/repos/{full}/check-suites/{r['id']}",
                "cancel_url": f"{api}/cancel",
                "rerun_url": f"{api}/rerun",
                "artifacts_url": f"{api}/artifacts",
                "workflow_url": f"{self.url}/repos/{full}/actions/workflows/{workflow}",
                "pull_requests": [],
            },
        )

    def artifact(self, a: dict[str, Any]) -> dict[str, Any]:
        api = f"{self.url}/repos/{self.state.full_name}/actions/artifacts/{a['id']}"
        run = self.state.runs[a["run"]]
        return {
            "id": a["id"],
            "node_id": f"MDg6QXJ0aWZhY3Q{a['id']}",
            "name": a["name"],
            "size_in_bytes": len(a["zip"]),
            "url": api,
            "archive_download_url": f"{api}/zip",
            "expired": a["expired"],
            "created_at": a["created_at"],
            "expires_at": None,
            "updated_at": a["created_at"],
            "workflow_run": {
                "id": run["id"],
                "repository_id": 42,
                "head_repository_id": 42,
                "head_branch": run["head_branch"],
                "head_sha": run["head_sha"],
            },
        }

    def signed_url(self, artifact_id: int) -> str:
        """Where the zip is served: off the API's paths, needing no token (like GitHub's)."""
        return f"{self.url}{BLOBS}{artifact_id}.zip?sig=signed{artifact_id}"
