"""Model servers in tests: start one, wait until it is healthy, check what it serves, stop it.

The seed's third critical test: "the model server can start, take batch input, and return the
expected output". Standard library only (``subprocess``, ``http.server``, ``wsgiref``,
``urllib``), so it works with any server stack.

>>> with serve([sys.executable, "server.py", "--port", "{port}"]) as server:  # doctest: +SKIP
...     assert_serves(server, ["I will hurt you", "thanks!"], ["unsafe", "safe"])
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import CheckFailed, ServeRequestFailed, ServerFailed, UsageError, WrongType, listing
from .text import duration_text

__all__ = ["Server", "ServerFailed", "assert_serves", "serve"]

_OUTPUT_LINES = 200  # lines of server output kept for failure messages
_SHOWN_LINES = 25  # lines of it shown in a message


class Server:
    """A running server: ``url`` (``http://127.0.0.1:PORT``), ``port`` and its recent output."""

    def __init__(self, url: str, port: int, process: subprocess.Popen[str] | None) -> None:
        self.url = url
        self.port = port
        self.process = process
        self._lines: deque[str] = deque(maxlen=_OUTPUT_LINES)

    def output(self, lines: int = _SHOWN_LINES) -> str:
        """The last ``lines`` lines the server printed (subprocess servers only)."""
        return "\n".join(list(self._lines)[-lines:])

    def __repr__(self) -> str:
        return f"Server({self.url!r})"


@contextlib.contextmanager
def serve(
    command_or_app: str | Sequence[str] | type[BaseHTTPRequestHandler] | Callable[..., Any],
    *,
    port: int | None = None,
    health: str | None = "/health",
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    stop_timeout: float = 5.0,
) -> Iterator[Server]:
    """Start a server, wait until ``health`` answers 2xx, yield it, and stop it.

    ``command_or_app`` is a command (a list, or a string split like a shell would) run as a
    subprocess; an ``http.server`` request handler class or a WSGI application run in a thread
    of this process. A subprocess learns its port from ``{port}`` in the command and from the
    ``PORT`` environment variable (a free port unless ``port=`` is given). If the process exits
    before it is healthy, :class:`ServerFailed` comes at once with its exit code and last output
    lines; if it is not healthy within ``timeout`` seconds, with the last health answer. On exit
    the process (and its process group) gets SIGTERM, then SIGKILL after ``stop_timeout``.
    ``health=None`` waits only for the port to accept connections.

    >>> with serve(MyHandler) as server:  # doctest: +SKIP
    ...     urllib.request.urlopen(server.url + "/health")
    """
    if isinstance(command_or_app, str) or (
        isinstance(command_or_app, Sequence) and not callable(command_or_app)
    ):
        with _subprocess_server(
            command_or_app, port, health, timeout, env, cwd, host, stop_timeout
        ) as server:
            yield server
    elif isinstance(command_or_app, type) and issubclass(command_or_app, BaseHTTPRequestHandler):
        with _thread_server(ThreadingHTTPServer((host, port or 0), command_or_app)) as server:
            _wait_healthy(server, health, timeout, None)
            yield server
    elif callable(command_or_app):
        app: Any = command_or_app  # a WSGI application: (environ, start_response) -> body
        httpd = make_server(host, port or 0, app, _ThreadingWSGIServer, _QuietWSGI)
        with _thread_server(httpd) as server:
            _wait_healthy(server, health, timeout, None)
            yield server
    else:
        raise WrongType(
            "serve() takes a command (list or string), an http.server handler class, or a WSGI "
            f"application, not {type(command_or_app).__name__}"
        )


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietWSGI(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise
        pass


@contextlib.contextmanager
def _thread_server(httpd: Any) -> Iterator[Server]:
    port = httpd.server_address[1]
    server = Server(f"http://{httpd.server_address[0]}:{port}", port, None)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def _subprocess_server(
    command: str | Sequence[str],
    port: int | None,
    health: str | None,
    timeout: float,
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    host: str,
    stop_timeout: float,
) -> Iterator[Server]:
    port = port or _free_port(host)
    args = shlex.split(command) if isinstance(command, str) else list(command)
    args = [str(a).replace("{port}", str(port)) for a in args]
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {}), "PORT": str(port)},
        cwd=cwd,
        text=True,
        errors="replace",
        # its own process group, so that workers it forks stop with it
        start_new_session=os.name == "posix",
    )
    server = Server(f"http://{host}:{port}", port, process)
    reader = threading.Thread(target=_read_output, args=(process, server), daemon=True)
    reader.start()
    try:
        _wait_healthy(server, health, timeout, shlex.join(args))
        yield server
    finally:
        _stop(process, stop_timeout)
        reader.join(timeout=2)


def _read_output(process: subprocess.Popen[str], server: Server) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        server._lines.append(line.rstrip("\n"))


def _stop(process: subprocess.Popen[str], stop_timeout: float) -> None:
    if process.poll() is None:
        _signal(process, signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
            process.wait(timeout=stop_timeout)
    elif os.name == "posix":
        # the server is gone; children it left in its group go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _signal(process: subprocess.Popen[str], sig: int) -> None:
    try:
        if os.name == "posix":
            os.killpg(process.pid, sig)
        elif sig == signal.SIGTERM:
            process.terminate()
        else:
            process.kill()
    except ProcessLookupError:
        pass


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_healthy(server: Server, health: str | None, timeout: float, command: str | None) -> None:
    target = f"{server.url}{health}" if health is not None else f"port {server.port}"
    start = time.monotonic()
    delay = 0.02
    last = "no answer yet"
    while True:
        process = server.process
        if process is not None and process.poll() is not None:
            time.sleep(0.1)  # let the reader collect the last lines
            raise ServerFailed(
                "serve",
                f"the server exited with code {process.returncode} before it was healthy",
                expected=f"{target} answers within {timeout:g} s",
                actual=(
                    f"exit code {process.returncode} "
                    f"after {duration_text(time.monotonic() - start)}"
                ),
                details=_context(server, command),
            )
        healthy, last = _probe(server, health)
        if healthy:
            return
        if time.monotonic() - start > timeout:
            raise ServerFailed(
                "serve",
                f"the server did not become healthy within {timeout:g} s",
                expected=f"{target} answers 2xx",
                actual=f"last health check: {last}",
                details=_context(server, command),
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _probe(server: Server, health: str | None) -> tuple[bool, str]:
    if health is None:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return True, "connected"
        except OSError as err:
            return False, str(err)
    try:
        with urllib.request.urlopen(server.url + health, timeout=2) as response:
            return 200 <= response.status < 300, f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code} {_excerpt(err.read())}"
    except (urllib.error.URLError, OSError) as err:
        return False, str(getattr(err, "reason", err))


def _context(server: Server, command: str | None) -> str:
    lines = [f"command: {command}"] if command else []
    if server.process is not None:
        output = server.output()
        lines.append("last output lines:" if output else "the server printed nothing")
        lines.extend("  " + line for line in output.splitlines())
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# assert_serves


def assert_serves(
    url: str | Server,
    batch: Sequence[Any],
    expected: Sequence[Any] | None = None,
    *,
    path: str = "/predict",
    request_key: str | None = "inputs",
    response_key: str | None = None,
    single: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> list[Any]:
    """POST a JSON batch, check each answer, and check that batched and single requests agree.

    The request body is ``{"inputs": batch}`` (``request_key=None`` posts the bare list). The
    answers are the response if it is a list, else the list under ``response_key`` or under
    the first of ``predictions``, ``outputs``, ``results``, ``items``, ``data``. Each
    ``expected`` item is a label (compared with the answer's ``label``, or the answer itself),
    a dict (``{"label": "unsafe", "min_score": 0.99}``: ``min_score``/``max_score`` bound the
    answer's ``score``, other keys must be equal) or a callable that returns False or raises
    on a bad answer. With ``single`` (default) every input is also sent alone, and the answers
    must agree within ``rtol``/``atol``: a server that reorders, pads or mixes items fails,
    with which input's answer landed where. Returns the batched answers.

    >>> assert_serves("http://127.0.0.1:8000", ["great", "awful"], ["pos", "neg"])  # doctest: +SKIP
    """
    base = url.url if isinstance(url, Server) else url.rstrip("/")
    endpoint = base + path
    batch = list(batch)
    if expected is not None and len(expected) != len(batch):
        raise UsageError(f"expected has {len(expected)} items, batch has {len(batch)}")

    def fail(problem: str, **fields: Any) -> CheckFailed:
        details = fields.pop("details", "")
        if isinstance(url, Server) and url.process is not None and url.output():
            details += "\nlast server output lines:\n" + url.output(10)
        return CheckFailed("assert_serves", problem, details=details.strip(), **fields)

    def ask(inputs: list[Any]) -> list[Any]:
        body = {request_key: inputs} if request_key is not None else inputs
        try:
            answer = _post(endpoint, body, timeout, headers)
        except ServeRequestFailed as err:
            raise fail(
                f"POST {endpoint} with {len(inputs)} items failed",
                expected="a JSON answer with status 2xx",
                actual=str(err),
            ) from None
        items = _items(answer, response_key)
        if items is None:
            raise fail(
                f"POST {endpoint}: the answer holds no list of items",
                expected=f"a list, or a list under {response_key or 'predictions/outputs/...'}",
                actual=_excerpt(json.dumps(answer).encode()),
            )
        if len(items) != len(inputs):
            raise fail(
                f"POST {endpoint}: {len(items)} answers for {len(inputs)} inputs",
                expected=f"{len(inputs)} answers",
                actual=f"{len(items)}: {_excerpt(json.dumps(items).encode())}",
            )
        return items

    answers = ask(batch)
    problems: dict[int, list[str]] = {}
    for i, answer in enumerate(answers):
        if expected is not None and (problem := _check_item(answer, expected[i], rtol, atol)):
            problems.setdefault(i, []).append(problem)
    moved: dict[int, int] = {}
    if single:
        alone = [ask([item])[0] for item in batch]
        for i, answer in enumerate(answers):
            if _close(answer, alone[i], rtol, atol):
                continue
            match = [
                j for j in range(len(batch)) if j != i and _close(answer, alone[j], rtol, atol)
            ]
            if match:
                moved[i] = match[0]
                note = f"it is the answer for input [{match[0]}] {_short(batch[match[0]])}"
            else:
                note = "it differs from the answer when sent alone"
            problems.setdefault(i, []).append(
                f"batched answer {_short(answer)}, alone {_short(alone[i])}: {note}"
            )
    if problems:
        lines = [
            f"[{i}] {_short(batch[i])}: {'; '.join(found)}" for i, found in sorted(problems.items())
        ]
        headline = (
            "the server returns items out of order"
            if moved
            else "answers differ from the expected ones"
        )
        raise fail(
            headline,
            expected="each answer as expected, and the same batched as alone"
            if expected is not None
            else "the same answers batched as alone",
            actual=listing(lines),
            difference=f"{len(problems)} of {len(batch)} items wrong"
            + (f", {len(moved)} moved to another position" if moved else ""),
        )
    return answers


def _post(url: str, body: Any, timeout: float, headers: Mapping[str, str] | None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise ServeRequestFailed(f"HTTP {err.code}: {_excerpt(err.read())}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ServeRequestFailed(f"no answer: {getattr(err, 'reason', err)}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise ServeRequestFailed(f"the answer is not JSON: {_excerpt(raw)}") from None


def _items(answer: Any, key: str | None) -> list[Any] | None:
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict):
        keys = [key] if key else ["predictions", "outputs", "results", "items", "data"]
        for name in keys:
            if isinstance(answer.get(name), list):
                return list(answer[name])
    return None


def _check_item(answer: Any, want: Any, rtol: float, atol: float) -> str | None:
    """What is wrong with one answer, or None."""
    if callable(want):
        try:
            ok = want(answer)
        except AssertionError as err:
            return f"check failed: {err}"
        return None if ok is not False else f"check {getattr(want, '__name__', want)} is False"
    if isinstance(want, Mapping):
        if not isinstance(answer, Mapping):
            return f"expected an object like {_short(want)}, got {_short(answer)}"
        wrong = []
        score = answer.get("score")
        for key, value in want.items():
            if key == "min_score":
                if not (isinstance(score, int | float) and score >= value):
                    wrong.append(f"expected score >= {value:g}, got {score!r}")
            elif key == "max_score":
                if not (isinstance(score, int | float) and score <= value):
                    wrong.append(f"expected score <= {value:g}, got {score!r}")
            elif not _close(answer.get(key), value, rtol, atol):
                wrong.append(f"expected {key} {value!r}, got {answer.get(key)!r}")
        return "; ".join(wrong) or None
    got = answer.get("label") if isinstance(answer, Mapping) and "label" in answer else answer
    return None if _close(got, want, rtol, atol) else f"expected {want!r}, got {got!r}"


def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """JSON values equal, numbers within tolerance."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rtol, atol) for k in a)
    return bool(a == b)


def _excerpt(raw: bytes, width: int = 300) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return text if len(text) <= width else text[:width] + "…"


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"
