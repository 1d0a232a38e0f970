"""A tiny HTTP inference server for the classifier (standard library ``http.server``).

    python -m textclf.server --port 8000 --model /path/to/all-MiniLM-L6-v2

- ``GET /health`` -> ``{"status": "ok", "labels": {"0": "negative", "1": "positive"}}``
- ``POST /predict`` with ``{"texts": ["...", ...]}`` ->
  ``{"predictions": [{"label": "positive", "score": 0.98}, ...]}`` (one per text, in order)

``--model`` is a folder with the encoder (``config.json``, weights) and its tokenizer files;
a ``head/`` inside it wins over the trained head shipped with the package.

>>> server = make_server(classifier, tokenizer, port=0)  # doctest: +SKIP  (in-process)
>>> threading.Thread(target=server.serve_forever, daemon=True).start()  # doctest: +SKIP
>>> with mlcheck.serving.serve(make_handler(classifier, tokenizer)) as s: ...  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1 << 20
MAX_TEXTS = 256


class BadRequest(ValueError):
    """The request body is not ``{"texts": [str, ...]}``; answered with 400 and the reason."""


def parse_texts(body: bytes) -> list[str]:
    """The ``texts`` of a ``/predict`` body, validated.

    >>> parse_texts(b'{"texts": ["hi"]}')
    ['hi']
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    texts = payload.get("texts") if isinstance(payload, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest('expected {"texts": ["...", ...]}')
    if len(texts) > MAX_TEXTS:
        raise BadRequest(f"at most {MAX_TEXTS} texts per request, got {len(texts)}")
    return texts


def make_handler(classifier: Any, tokenizer: Any) -> type[BaseHTTPRequestHandler]:
    """The request handler class answering ``/health`` and ``/predict`` for ``classifier``."""
    classifier.eval()
    # one forward pass at a time: torch modules are not meant to be shared across threads
    lock = threading.Lock()
    labels = {str(k): v for k, v in classifier.id2label.items()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(HTTPStatus.OK, {"status": "ok", "labels": labels})
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/predict":
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return
            try:
                texts = parse_texts(self.rfile.read(length))
            except BadRequest as exc:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            with lock:
                predictions = classifier.predict(texts, tokenizer) if texts else []
            self._reply(HTTPStatus.OK, {"predictions": predictions})

        def _reply(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: one line per request drowns the test output

    return Handler


def make_server(
    classifier: Any, tokenizer: Any, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """An HTTP server (not yet started) for ``classifier``; ``port=0`` picks a free port
    (read it from ``server.server_address``)."""
    return ThreadingHTTPServer((host, port), make_handler(classifier, tokenizer))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the textclf classifier over HTTP.")
    parser.add_argument("--model", required=True, help="encoder + tokenizer folder")
    parser.add_argument("--head", help="head folder (default: MODEL/head, else the packaged one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    # imported here so `--help` answers without loading torch
    from transformers import AutoTokenizer

    from textclf.classifier import TextClassifier

    classifier = TextClassifier.from_pretrained(args.model, args.head).to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    server = make_server(classifier, tokenizer, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"textclf serving on http://{host!s}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
