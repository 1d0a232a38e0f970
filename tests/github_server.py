"""A local GitHub REST API for tests, checked against GitHub's own OpenAPI description.

It serves the endpoints mlcheck calls (``tests/data/github-openapi-subset.json``, extracted by
``scripts/extract_github_openapi.py`` from ``@octokit/openapi``) from in-memory state on
127.0.0.1, with a thread per connection so several publishers can race. Every request is
validated (path parameters, query, JSON body) and refused like GitHub would (400/422) when it
does not match; every response body is validated too, and a mismatch is recorded in
``server.errors`` (the ``github`` fixture fails the test at teardown).

Faults are injected per request, before or after the request takes effect: 5xx, 429 with
``retry-after``, secondary (403 + ``retry-after``) and primary (``x-ratelimit-remaining: 0``)
rate limits, slow answers and connection resets, from a scripted sequence or at a rate with a
fixed seed.

    with GitHubServer() as gh:
        gh.state.add_pull(5, head_sha="a" * 40)
        client = GitHubClient(gh.token, api_url=gh.url)
        ...
        assert gh.count("POST /repos/{owner}/{repo}/issues/{issue_number}/comments") == 1
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SPEC_PATH = Path(__file__).parent / "data" / "github-openapi-subset.json"
DOCS = "https://docs.github.com/rest"
SUPPORTED_API_VERSIONS = {"2022-11-28", "2026-03-10"}
ACTIONS_BOT = "github-actions[bot]"
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


# --- the OpenAPI description, made into JSON Schema


def _nullable_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` -> JSON Schema ``null`` (recursively)."""
    if isinstance(node, list):
        return [_nullable_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_to_jsonschema(value) for key, value in node.items()}
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class Spec:
    """The subset: operations by template, and validators for any part of it."""

    URI = "urn:github-openapi-subset"

    def __init__(self, path: Path = SPEC_PATH) -> None:
        self.raw = json.loads(path.read_text())
        self.doc = _nullable_to_jsonschema(self.raw)
        self.version = self.raw["info"]["x-source"]
        resource = Resource.from_contents(self.doc, default_specification=DRAFT7)
        self.registry: Registry = Registry().with_resource(self.URI, resource)
        self._validators: dict[str, jsonschema.Draft7Validator] = {}
        self.routes: list[tuple[re.Pattern[str], str]] = []
        for template in self.doc["paths"]:
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            self.routes.append((re.compile(f"^{pattern}$"), template))

    def pointer(self, *parts: str) -> str:
        escaped = (p.replace("~", "~0").replace("/", "~1") for p in parts)
        return "#/" + "/".join(escaped)

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self.at(node["$ref"])
        return node

    def at(self, pointer: str) -> Any:
        node = self.doc
        for part in pointer.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def errors(self, instance: Any, pointer: str) -> list[str]:
        """Validation errors of ``instance`` against the schema at ``pointer`` ([] if valid)."""
        validator = self._validators.get(pointer)
        if validator is None:
            validator = jsonschema.Draft7Validator(
                {"$ref": self.URI + pointer},
                registry=self.registry,
                format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
            )
            self._validators[pointer] = validator
        found = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for pattern, template in self.routes:
            if (m := pattern.match(path)) and method.lower() in self.doc["paths"][template]:
                return template, {k: unquote(v) for k, v in m.groupdict().items()}
        return None

    def operation(self, template: str, method: str) -> dict[str, Any]:
        return self.doc["paths"][template][method.lower()]

    def schema_name(self, name: str) -> str:
        return self.pointer("components", "schemas", name)

    # -- minimal valid instances, for the huge objects (repository, pull request) -------------

    def fill(self, schema: Any, overrides: Any = None, name: str = "") -> Any:
        """A valid instance of ``schema``: ``overrides`` where given, plain values elsewhere."""
        schema = self.resolve(schema)
        if "anyOf" in schema or "oneOf" in schema:
            options = [self.resolve(s) for s in schema.get("anyOf") or schema["oneOf"]]
            if overrides is None and any(o.get("type") == "null" for o in options):
                return None
            options = [o for o in options if o.get("type") != "null"]
            if isinstance(overrides, str):
                options = [o for o in options if "string" in _types(o)] or options
            return self.fill(options[0], overrides, name)
        if "allOf" in schema:
            merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
            for part in map(self.resolve, schema["allOf"]):
                merged["properties"].update(part.get("properties", {}))
                merged["required"] += part.get("required", [])
            schema = merged
        types = _types(schema)
        if overrides is not None and not (isinstance(overrides, dict) and "object" in types):
            return overrides
        if "null" in types and overrides is None:
            return None
        if "object" in types:
            overrides = overrides or {}
            props = schema.get("properties", {})
            out = {}
            for key in [*schema.get("required", []), *overrides]:
                if key in out:
                    continue
                out[key] = self.fill(props.get(key, {}), overrides.get(key), key)
            return out
        if "array" in types:
            return []
        if "integer" in types or "number" in types:
            return 1
        if "boolean" in types:
            return False
        if "enum" in schema:
            return schema["enum"][0]
        if schema.get("format") == "date-time":
            return _iso(EPOCH)
        if schema.get("format") == "uri" or name.endswith("_url") or name == "url":
            return f"https://api.github.localhost/{name}"
        return f"{name or 'value'}"


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", "object" if "properties" in schema else "string")
    return kind if isinstance(kind, list) else [kind]


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- state


@dataclass
class Identity:
    """Who a token belongs to and what it may write (``pull_requests``, ``issues``, ``actions``)."""

    login: str
    app: bool = True  # an installation token (GITHUB_TOKEN): GET /user is refused
    write: frozenset[str] = frozenset({"pull_requests", "issues", "actions"})


@dataclass
class State:
    owner: str = "octo"
    name: str = "proj"
    default_branch: str = "main"
    private: bool = False
    branches: set[str] = field(default_factory=lambda: {"main"})
    # workflow file -> declared workflow_dispatch inputs
    workflows: dict[str, set[str]] = field(
        default_factory=lambda: {"mlcheck-gpu.yml": {"sha", "pr", "tier"}}
    )
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> role_name
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)  # PRs too (shared numbers)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    removed_labels: list[tuple[int, str]] = field(default_factory=list)
    next_number: int = 1
    next_id: int = 1000
    ticks: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def now(self) -> str:
        """A clock that moves one second per write, so creation order is visible."""
        self.ticks += 1
        return _iso(EPOCH + timedelta(seconds=self.ticks))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def add_issue(
        self, title: str = "Issue", body: str = "", user: str = "alice", **kw: Any
    ) -> int:
        number = self.next_number
        self.next_number += 1
        now = self.now()
        self.issues[number] = {
            "id": self.new_id(),
            "number": number,
            "title": title,
            "body": body,
            "user": user,
            "state": "open",
            "labels": list(kw.pop("labels", [])),
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "is_pr": False,
            **kw,
        }
        return number

    def add_pull(
        self,
        *,
        head_sha: str = "a" * 40,
        head_ref: str = "feature",
        head_repo: str | None = None,
        base_sha: str = "b" * 40,
        user: str = "alice",
        labels: Iterable[str] = (),
        state: str = "open",
    ) -> int:
        number = self.add_issue(title=f"PR from {user}", user=user, labels=list(labels))
        self.issues[number]["is_pr"] = True
        self.issues[number]["state"] = state
        self.pulls[number] = {
            "head_sha": head_sha,
            "head_ref": head_ref,
            "head_repo": head_repo or self.full_name,
            "base_sha": base_sha,
        }
        return number

    def add_comment(self, number: int, body: str, user: str) -> int:
        now = self.now()
        comment_id = self.new_id()
        self.comments[comment_id] = {
            "id": comment_id,
            "issue": number,
            "body": body,
            "user": user,
            "created_at": now,
            "updated_at": now,
        }
        return comment_id

    def comments_on(self, number: int) -> list[dict[str, Any]]:
        return sorted(
            (c for c in self.comments.values() if c["issue"] == number), key=lambda c: c["id"]
        )


# --- faults


@dataclass(frozen=True)
class Fault:
    """One injected failure. ``after``: the request takes effect, then the answer is lost."""

    kind: str  # status, reset, slow
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    message: str = "Server Error"
    delay: float = 0.0
    after: bool = False

    @classmethod
    def error(cls, status: int = 502, *, after: bool = False) -> Fault:
        return cls("status", status, message="Server Error", after=after)

    @classmethod
    def too_many(cls, retry_after: int = 0) -> Fault:
        return cls("status", 429, (("retry-after", str(retry_after)),), "Too Many Requests")

    @classmethod
    def secondary(cls, retry_after: int = 0) -> Fault:
        message = "You have exceeded a secondary rate limit. Please wait a few minutes."
        return cls("status", 403, (("retry-after", str(retry_after)),), message)

    @classmethod
    def primary(cls, reset_in: int = 1) -> Fault:
        headers = (
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-used", "5000"),
            ("x-ratelimit-reset", str(int(time.time()) + reset_in)),
        )
        return cls("status", 403, headers, "API rate limit exceeded for installation.")

    @classmethod
    def slow(cls, delay: float) -> Fault:
        return cls("slow", delay=delay)

    @classmethod
    def reset(cls, *, after: bool = False) -> Fault:
        return cls("reset", after=after)


TRANSIENT = (
    Fault.error(500),
    Fault.error(502),
    Fault.error(502, after=True),
    Fault.too_many(0),
    Fault.secondary(0),
    Fault.primary(0),
    Fault.reset(),
    Fault.reset(after=True),
    Fault.slow(0.01),
)


@dataclass
class Faults:
    """Which requests fail: ``script`` first (None = no fault), then ``rate`` at random."""

    script: list[Fault | None] = field(default_factory=list)
    rate: float = 0.0
    kinds: tuple[Fault, ...] = TRANSIENT
    seed: int = 0
    only: Callable[[str], bool] = lambda op: True
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def pick(self, op: str) -> Fault | None:
        with self._lock:
            if not self.only(op):
                return None
            if self.script:
                fault = self.script.pop(0)
            elif self.rate and self._random.random() < self.rate:
                fault = self._random.choice(self.kinds)
            else:
                fault = None
            if fault:
                self.injected[
                    f"{fault.kind}:{fault.status or ''}{':after' if fault.after else ''}"
                ] += 1
            return fault


# --- the server


@dataclass(frozen=True)
class Logged:
    method: str
    op: str  # "GET /repos/{owner}/{repo}/..." or the raw path when unknown
    status: int
    token_sent: bool
    api_version: str | None
    fault: str | None


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)


class GitHubServer:
    """The server; ``with GitHubServer() as gh`` starts it on a free 127.0.0.1 port."""

    def __init__(
        self,
        spec: Spec | None = None,
        *,
        token: str = "ghs_localtestTOKEN0123456789",
        prefix: str = "",
    ) -> None:
        self.spec = spec or _shared_spec()
        self.prefix = prefix.rstrip("/")  # "/api/v3" serves like GitHub Enterprise Server
        self.state = State()
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
        handler = type("Handler", (_Handler,), {"app": self})
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


_SPEC: Spec | None = None
_SPEC_LOCK = threading.Lock()


def _shared_spec() -> Spec:
    """Parsing and compiling the description is the slow part: do it once per process."""
    global _SPEC
    with _SPEC_LOCK:
        if _SPEC is None:
            _SPEC = Spec()
        return _SPEC


# --- request handling


class _Handler(BaseHTTPRequestHandler):
    app: GitHubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read server.log
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        app = self.app
        split = urlsplit(self.path)
        if app.prefix:
            path = (
                split.path.removeprefix(app.prefix)
                if split.path.startswith(app.prefix + "/")
                else ""
            )
            split = split._replace(path=path or "/-unknown-")
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else ""
        version = self.headers.get("X-GitHub-Api-Version")
        matched = app.spec.match(self.command, split.path)
        op = f"{self.command} {matched[0] if matched else split.path}"
        fault = app.faults.pick(op)
        if fault and fault.kind == "slow":
            time.sleep(fault.delay)
        if fault and fault.kind == "reset" and not fault.after:
            self._log(op, 0, token, version, fault)
            return self._reset()
        if fault and fault.kind == "status" and not fault.after:
            self._log(op, fault.status, token, version, fault)
            return self._send(
                fault.status, {"message": fault.message, "documentation_url": DOCS}, fault.headers
            )
        try:
            with app.lock:
                status, body, headers = self._route(matched, split.query, raw_body, token, version)
                for hook in app.after_request:
                    hook(op, app.state)
        except ApiError as err:
            status, body, headers = err.status, _error(err.message), err.headers
        if matched and body is not None and status < 300:
            self._check_response(matched[0], status, body)
        if fault and fault.after:  # it happened, but the client never hears so
            self._log(op, fault.status, token, version, fault)
            if fault.kind == "reset":
                return self._reset()
            return self._send(fault.status, {"message": fault.message}, fault.headers)
        self._log(op, status, token, version, None)
        self._send(status, body, headers)

    def _log(
        self, op: str, status: int, token: str, version: str | None, fault: Fault | None
    ) -> None:
        with self.app.lock:
            self.app.log.append(
                Logged(
                    self.command,
                    op,
                    status,
                    bool(token),
                    version,
                    f"{fault.kind}:{fault.status}" if fault else None,
                )
            )

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean close.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send(self, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            self.close_connection = True

    def _check_response(self, template: str, status: int, body: Any) -> None:
        spec = self.app.spec
        responses = spec.operation(template, self.command)["responses"]
        if str(status) not in responses:
            self.app.errors.append(f"{self.command} {template}: undocumented status {status}")
            return
        response = spec.resolve(responses[str(status)])
        if "application/json" not in response.get("content", {}):
            return
        pointer = spec.pointer(
            "paths",
            template,
            self.command.lower(),
            "responses",
            str(status),
            "content",
            "application/json",
            "schema",
        )
        if "$ref" in responses[str(status)]:
            pointer = responses[str(status)]["$ref"] + "/content/application~1json/schema"
        for problem in spec.errors(body, pointer):
            self.app.errors.append(f"{self.command} {template} -> {status}: {problem}")

    # -- validation of the request -----------------------------------------------------------------

    def _route(
        self,
        matched: tuple[str, dict[str, str]] | None,
        query: str,
        raw_body: bytes,
        token: str,
        version: str | None,
    ) -> tuple[int, Any, Iterable[tuple[str, str]]]:
        app = self.app
        if matched is None:
            raise ApiError(404, "Not Found")
        if version is not None and version not in SUPPORTED_API_VERSIONS:
            raise ApiError(400, f"API version {version!r} is not supported.")
        if token not in app.tokens:
            raise ApiError(401, "Bad credentials" if token else "Requires authentication")
        template, path_params = matched
        operation = app.spec.operation(template, self.command)
        params = self._parameters(template, operation, path_params, query)
        body = self._body(template, operation, raw_body)
        return _Routes(app, app.tokens[token], params, body, self.headers.get("Host", "")).dispatch(
            self.command, template
        )

    def _parameters(
        self, template: str, operation: dict[str, Any], path_params: dict[str, str], query: str
    ) -> dict[str, Any]:
        spec = self.app.spec
        given = {"path": dict(path_params), "query": dict(parse_qsl(query, keep_blank_values=True))}
        declared = [spec.resolve(p) for p in operation.get("parameters", [])]
        unknown = set(given["query"]) - {p["name"] for p in declared if p["in"] == "query"}
        if unknown:
            raise ApiError(400, f"unknown query parameters: {sorted(unknown)}")
        out: dict[str, Any] = {}
        for param in declared:
            if param["in"] not in given:
                continue
            raw = given[param["in"]].get(param["name"])
            if raw is None:
                if param.get("required"):
                    raise ApiError(422, f"missing required parameter {param['name']!r}")
                continue
            schema = spec.resolve(param["schema"])
            value: Any = raw
            if "integer" in _types(schema) and re.fullmatch(r"-?\d+", raw):
                value = int(raw)
            elif "boolean" in _types(schema) and raw in ("true", "false"):
                value = raw == "true"
            problems = _param_errors(spec, value, schema)
            if problems:
                raise ApiError(
                    422 if param["in"] == "query" else 404,
                    f"invalid {param['in']} parameter {param['name']}={raw!r}: {problems}",
                )
            out[param["name"]] = value
        return out

    def _body(self, template: str, operation: dict[str, Any], raw: bytes) -> Any:
        request_body = operation.get("requestBody")
        if request_body is None:
            if raw.strip():
                raise ApiError(400, "this endpoint takes no request body")
            return None
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError(400, f"Problems parsing JSON: {exc}") from None
        if body is None and not request_body.get("required"):
            return None
        pointer = self.app.spec.pointer(
            "paths",
            template,
            self.command.lower(),
            "requestBody",
            "content",
            "application/json",
            "schema",
        )
        problems = self.app.spec.errors(body, pointer)
        if problems:
            raise ApiError(422, "Invalid request.\n\n" + "\n".join(problems))
        return body


def _param_errors(spec: Spec, value: Any, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema, registry=spec.registry)
    return [e.message for e in validator.iter_errors(value)]


def _error(message: str) -> dict[str, str]:
    return {"message": message, "documentation_url": DOCS}


class _Routes:
    """The behaviour behind each operation, on ``app.state`` (called under ``app.lock``)."""

    def __init__(
        self, app: GitHubServer, who: Identity, params: dict[str, Any], body: Any, host: str
    ) -> None:
        self.app = app
        self.state = app.state
        self.who = who
        self.params = params
        self.body = body

    def dispatch(self, method: str, template: str) -> tuple[int, Any, Iterable[tuple[str, str]]]:
        if "owner" in self.params and (
            f"{self.params['owner']}/{self.params['repo']}" != self.state.full_name
        ):
            raise ApiError(404, "Not Found")
        handler = {
            "GET /user": self.get_user,
            "GET /repos/{owner}/{repo}": self.get_repo,
            "GET /repos/{owner}/{repo}/issues": self.list_issues,
            "POST /repos/{owner}/{repo}/issues": self.create_issue,
            "GET /repos/{owner}/{repo}/issues/{issue_number}": self.get_issue,
            "PATCH /repos/{owner}/{repo}/issues/{issue_number}": self.update_issue,
            "GET /repos/{owner}/{repo}/issues/{issue_number}/comments": self.list_comments,
            "POST /repos/{owner}/{repo}/issues/{issue_number}/comments": self.create_comment,
            "GET /repos/{owner}/{repo}/issues/comments/{comment_id}": self.get_comment,
            "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}": self.update_comment,
            "DELETE /repos/{owner}/{repo}/issues/comments/{comment_id}": self.delete_comment,
            "DELETE /repos/{owner}/{repo}/issues/{issue_number}/labels/{name}": self.remove_label,
            "GET /repos/{owner}/{repo}/pulls": self.list_pulls,
            "GET /repos/{owner}/{repo}/pulls/{pull_number}": self.get_pull,
            "GET /repos/{owner}/{repo}/commits/{commit_sha}/pulls": self.pulls_for_commit,
            "GET /repos/{owner}/{repo}/collaborators/{username}/permission": self.permission,
            "POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches": (
                self.dispatch_workflow
            ),
        }[f"{method} {template}"]
        return handler()

    # -- helpers -----------------------------------------------------------------------------------

    def need(self, scope: str) -> None:
        if scope not in self.who.write:
            raise ApiError(403, "Resource not accessible by integration")

    def issue_or_404(self, number: int) -> dict[str, Any]:
        issue = self.state.issues.get(number)
        if issue is None:
            raise ApiError(404, "Not Found")
        return issue

    def scope_for(self, issue: dict[str, Any]) -> str:
        return "pull_requests" if issue["is_pr"] else "issues"

    def page(self, items: list[Any], path: str) -> tuple[int, Any, list[tuple[str, str]]]:
        per_page = min(int(self.params.get("per_page", 30)), 100)
        page = int(self.params.get("page", 1))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        query = {
            k: v
            for k, v in self.params.items()
            if k not in ("owner", "repo", "page", "issue_number", "commit_sha")
        }
        query["per_page"] = per_page

        def link(n: int) -> str:
            rest = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items())
            return f"<{self.app.url}{path}?{rest}&page={n}>"

        rels = []
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels += [f'{link(1)}; rel="first"', f'{link(page - 1)}; rel="prev"']
        return 200, chunk, [("Link", ", ".join(rels))] if rels else []

    def repo_path(self) -> str:
        return f"/repos/{self.state.full_name}"

    # -- operations

    def get_user(self) -> tuple[int, Any, list[tuple[str, str]]]:
        if self.who.app:
            raise ApiError(403, "Resource not accessible by integration")
        user = self.app.spec.fill(
            {"$ref": self.app.spec.schema_name("public-user")},
            {
                **self.app.user(self.who.login),
                "name": None,
                "company": None,
                "blog": None,
                "location": None,
                "email": None,
                "bio": None,
                "hireable": None,
            },
        )
        return 200, user, []

    def get_repo(self) -> tuple[int, Any, list[tuple[str, str]]]:
        return 200, self.app.repository("full-repository"), []

    def list_issues(self) -> tuple[int, Any, list[tuple[str, str]]]:
        want_state = self.params.get("state", "open")
        labels = set(filter(None, self.params.get("labels", "").split(",")))
        creator = self.params.get("creator")
        found = [
            i
            for i in self.state.issues.values()
            if (want_state == "all" or i["state"] == want_state)
            and labels <= set(i["labels"])
            and (creator is None or i["user"] == creator)
        ]
        found.sort(
            key=lambda i: i["number"], reverse=self.params.get("direction", "desc") == "desc"
        )
        status, chunk, headers = self.page(found, self.repo_path() + "/issues")
        return status, [self.app.issue(i) for i in chunk], headers

    def create_issue(self) -> tuple[int, Any, list[tuple[str, str]]]:
        self.need("issues")
        labels = [
            lab if isinstance(lab, str) else lab["name"] for lab in self.body.get("labels", [])
        ]
        number = self.state.add_issue(
            str(self.body["title"]), self.body.get("body") or "", self.who.login, labels=labels
        )
        return 201, self.app.issue(self.state.issues[number]), []

    def get_issue(self) -> tuple[int, Any, list[tuple[str, str]]]:
        return 200, self.app.issue(self.issue_or_404(self.params["issue_number"])), []

    def update_issue(self) -> tuple[int, Any, list[tuple[str, str]]]:
        issue = self.issue_or_404(self.params["issue_number"])
        self.need(self.scope_for(issue))
        for key in ("title", "body", "state"):
            if key in self.body and self.body[key] is not None:
                issue[key] = self.body[key]
        issue["updated_at"] = self.state.now()
        issue["closed_at"] = issue["updated_at"] if issue["state"] == "closed" else None
        return 200, self.app.issue(issue), []

    def list_comments(self) -> tuple[int, Any, list[tuple[str, str]]]:
        number = self.params["issue_number"]
        self.issue_or_404(number)
        status, chunk, headers = self.page(
            self.state.comments_on(number), f"{self.repo_path()}/issues/{number}/comments"
        )
        return status, [self.app.comment(c) for c in chunk], headers

    def _check_body(self) -> str:
        body = self.body["body"]
        if len(body) > 65536:
            raise ApiError(422, "Validation Failed: body is too long (maximum is 65536 characters)")
        return body

    def create_comment(self) -> tuple[int, Any, list[tuple[str, str]]]:
        number = self.params["issue_number"]
        issue = self.issue_or_404(number)
        self.need(self.scope_for(issue))
        comment_id = self.state.add_comment(number, self._check_body(), self.who.login)
        comment = self.app.comment(self.state.comments[comment_id])
        return 201, comment, [("Location", comment["url"])]

    def comment_or_404(self) -> dict[str, Any]:
        comment = self.state.comments.get(self.params["comment_id"])
        if comment is None:
            raise ApiError(404, "Not Found")
        return comment

    def get_comment(self) -> tuple[int, Any, list[tuple[str, str]]]:
        return 200, self.app.comment(self.comment_or_404()), []

    def update_comment(self) -> tuple[int, Any, list[tuple[str, str]]]:
        comment = self.comment_or_404()
        self.need(self.scope_for(self.state.issues[comment["issue"]]))
        comment["body"] = self._check_body()
        comment["updated_at"] = self.state.now()
        return 200, self.app.comment(comment), []

    def delete_comment(self) -> tuple[int, Any, list[tuple[str, str]]]:
        comment = self.comment_or_404()
        self.need(self.scope_for(self.state.issues[comment["issue"]]))
        del self.state.comments[comment["id"]]
        return 204, None, []

    def remove_label(self) -> tuple[int, Any, list[tuple[str, str]]]:
        number = self.params["issue_number"]
        issue = self.issue_or_404(number)
        self.need(self.scope_for(issue))
        name = self.params["name"]
        if name not in issue["labels"]:
            raise ApiError(404, "Label does not exist")
        issue["labels"].remove(name)
        self.state.removed_labels.append((number, name))
        return 200, [self.app.label(n) for n in issue["labels"]], []

    def get_pull(self) -> tuple[int, Any, list[tuple[str, str]]]:
        number = self.params["pull_number"]
        if number not in self.state.pulls:
            raise ApiError(404, "Not Found")
        return 200, self.app.pull(number), []

    def list_pulls(self) -> tuple[int, Any, list[tuple[str, str]]]:
        want_state = self.params.get("state", "open")
        head = self.params.get("head")
        found = [
            n
            for n, p in sorted(self.state.pulls.items(), reverse=True)
            if want_state in ("all", self.state.issues[n]["state"])
            and (head is None or f"{p['head_repo'].split('/')[0]}:{p['head_ref']}" == head)
        ]
        status, chunk, headers = self.page(found, f"{self.repo_path()}/pulls")
        return status, [self.app.pull(n, "pull-request-simple") for n in chunk], headers

    def pulls_for_commit(self) -> tuple[int, Any, list[tuple[str, str]]]:
        sha = self.params["commit_sha"]
        # Like GitHub: commits that only live in a fork are not associated with its PR here.
        found = [
            n
            for n, p in sorted(self.state.pulls.items())
            if p["head_sha"] == sha and p["head_repo"] == self.state.full_name
        ]
        status, chunk, headers = self.page(found, f"{self.repo_path()}/commits/{sha}/pulls")
        return status, [self.app.pull(n, "pull-request-simple") for n in chunk], headers

    def permission(self) -> tuple[int, Any, list[tuple[str, str]]]:
        login = self.params["username"]
        role = self.state.collaborators.get(login)
        if role is None:
            if self.state.private:
                raise ApiError(404, f"{login} is not a user")
            role = "read"  # anyone can read a public repository
        permission = {"maintain": "write", "triage": "read"}.get(role, role)
        user = {
            **self.app.user(login),
            "permissions": {
                "admin": role == "admin",
                "maintain": role in ("admin", "maintain"),
                "push": permission in ("admin", "write"),
                "triage": role != "read",
                "pull": True,
            },
        }
        user["role_name"] = role
        return 200, {"permission": permission, "role_name": role, "user": user}, []

    def dispatch_workflow(self) -> tuple[int, Any, list[tuple[str, str]]]:
        self.need("actions")
        workflow = str(self.params["workflow_id"])
        if workflow not in self.state.workflows:
            raise ApiError(404, "Not Found")
        ref = self.body["ref"].removeprefix("refs/heads/")
        if ref not in self.state.branches:
            raise ApiError(422, f"No ref found for: {self.body['ref']}")
        inputs = self.body.get("inputs") or {}
        unexpected = sorted(set(inputs) - self.state.workflows[workflow])
        if unexpected:
            raise ApiError(422, f"Unexpected inputs provided: {unexpected}")
        if any(not isinstance(v, str) for v in inputs.values()):
            raise ApiError(422, "inputs values must be strings")
        self.state.dispatches.append(
            {
                "workflow": workflow,
                "ref": self.body["ref"],
                "inputs": dict(inputs),
                "by": self.who.login,
            }
        )
        return 204, None, []
