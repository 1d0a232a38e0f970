"""Request handling: routes a request, validates it against the description, injects the
scheduled fault, logs it, and checks the response."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .faults import Fault
from .routes import ApiError, Routes, error_body
from .spec import DOCS, SUPPORTED_API_VERSIONS, param_errors, schema_types

if TYPE_CHECKING:
    from .server import GitHubServer


@dataclass(frozen=True)
class Logged:
    method: str
    op: str  # "GET /repos/{owner}/{repo}/..." or the raw path when unknown
    status: int
    token_sent: bool
    api_version: str | None
    fault: str | None


class Handler(BaseHTTPRequestHandler):
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
        if split.path.startswith("/_blobs/"):
            return self._blob(split.path, split.query, bool(auth))
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
            status, body, headers = err.status, error_body(err.message), err.headers
        if matched and body is not None and status < 300:
            self._check_response(matched[0], status, body)
        if fault and fault.after:  # it happened, but the client never hears so
            self._log(op, fault.status, token, version, fault)
            if fault.kind == "reset":
                return self._reset()
            return self._send(fault.status, {"message": fault.message}, fault.headers)
        self._log(op, status, token, version, None)
        self._send(status, body, headers)

    def _blob(self, path: str, query: str, sent_auth: bool) -> None:
        """A signed artifact URL: the zip, for a GET with the right signature. A request that
        carries an Authorization header is an error of the client (the token left the API)."""
        app = self.app
        name = path.removeprefix("/_blobs/").removesuffix(".zip")
        fault = app.faults.pick(f"{self.command} /_blobs/")
        with app.lock:
            artifact = app.state.artifacts.get(int(name)) if name.isdigit() else None
            app.state.downloads.append({"path": path, "auth": sent_auth})
            if sent_auth:
                app.errors.append(f"GET {path}: the token was sent to the signed download URL")
        if fault and fault.kind == "status":
            return self._send(fault.status, {"message": fault.message})
        if artifact is None or self.command != "GET" or query != f"sig=signed{name}":
            return self._send(403, {"message": "AuthenticationFailed"})
        data = artifact["zip"]
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

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
        return Routes(app, app.tokens[token], params, body, self.headers.get("Host", "")).dispatch(
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
            if "integer" in schema_types(schema) and re.fullmatch(r"-?\d+", raw):
                value = int(raw)
            elif "boolean" in schema_types(schema) and raw in ("true", "false"):
                value = raw == "true"
            problems = param_errors(spec, value, schema)
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
