"""serve() and assert_serves() against real servers on 127.0.0.1.

In-process servers run a real tiny BERT classifier; subprocess servers are small stdlib scripts
written to tmp_path and run with this Python (no torch import, so they start in milliseconds).
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import bert_config
from transformers import BertForSequenceClassification, BertTokenizer

from mlcheck.checks import CheckFailed
from mlcheck.serving import ServerFailed, assert_serves, serve

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "love", "hate", "this", "movie", "so"]
TEXTS = ["i love this movie", "i hate this movie so so", "love love love", "hate"]

Predict = Callable[[list[str]], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def predict() -> Predict:
    """A random tiny BERT sentiment classifier; a wide init makes its answers input-dependent."""
    torch.manual_seed(0)
    config = bert_config(
        vocab_size=len(WORDS),
        initializer_range=0.5,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config).eval()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})

    def run(texts: list[str]) -> list[dict[str, Any]]:
        with torch.no_grad():
            probs = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
        return [
            {"label": config.id2label[int(p.argmax())], "score": round(float(p.max()), 6)}
            for p in probs
        ]

    return run


def handler_for(predict: Predict, reorder: bool = False) -> type:
    """An http.server handler serving ``predict``; ``reorder`` plants the bug of sorting the
    answers by score (an 'optimisation' that forgets the input order)."""
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._send(200 if self.path == "/health" else 404, {"status": "ok"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answers = predict(body["inputs"])
            if reorder:
                answers.sort(key=lambda a: a["score"], reverse=True)
            self._send(200, {"predictions": answers})

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def test_in_process_model_server_passes(predict: Predict) -> None:
    expected = [predict([t])[0]["label"] for t in TEXTS]  # the model itself, one text at a time
    assert len(set(expected)) == 2  # both classes occur, so the check below can fail
    with serve(handler_for(predict)) as server:
        answers = assert_serves(server, TEXTS, expected)
        assert_serves(server.url, TEXTS, [{"min_score": 0.5, "max_score": 1.0}] * len(TEXTS))
    assert [a["label"] for a in answers] == expected


def test_out_of_order_server_fails_with_where_items_went(predict: Predict) -> None:
    expected = [predict([t])[0]["label"] for t in TEXTS]
    with serve(handler_for(predict, reorder=True)) as server, pytest.raises(CheckFailed) as failed:
        assert_serves(server, TEXTS, expected)
    message = str(failed.value)
    assert message.startswith("assert_serves: the server returns items out of order")
    assert "it is the answer for input [" in message
    assert "moved to another position" in message


def test_wsgi_app_and_callable_expectations() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/health":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        size = int(environ.get("CONTENT_LENGTH") or 0)
        texts = json.loads(environ["wsgi.input"].read(size))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([len(t) for t in texts]).encode()]

    with serve(app) as server:
        assert_serves(server, ["ab", "abcd"], [2, lambda n: n == 4], request_key=None)
        with pytest.raises(CheckFailed, match=r"\[1\] 'abcd': check <lambda> is False"):
            assert_serves(server, ["ab", "abcd"], [2, lambda n: n == 5], request_key=None)


SERVER_SCRIPT = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

BROKEN = os.environ.get("BROKEN", "")
if BROKEN == "crash":
    print("loading weights from model.safetensors", flush=True)
    raise RuntimeError("weights file is truncated: model.safetensors")

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.reply(503 if BROKEN == "unhealthy" else 200, {"status": "loading"})

    def do_POST(self):
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"]
        answers = [{"label": "long" if len(t) > 5 else "short", "score": len(t) / 100}
                   for t in texts]
        if BROKEN == "drops":
            answers = answers[:1]
        self.reply(200, {"predictions": answers})

    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

port = int(sys.argv[2]) if sys.argv[1:2] == ["--port"] else int(os.environ["PORT"])
print(f"listening on {port}", flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "server.py"
    path.write_text(textwrap.dedent(SERVER_SCRIPT))
    return path


def test_subprocess_server_passes_and_stops(script: Path) -> None:
    with serve([sys.executable, str(script), "--port", "{port}"]) as server:
        answers = assert_serves(server, ["hi", "a longer text"], ["short", "long"])
        assert "listening on" in server.output()
    assert answers[1] == {"label": "long", "score": 0.13}
    assert server.process is not None and server.process.returncode is not None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/health", timeout=2)


def test_subprocess_server_gets_port_from_env(script: Path) -> None:
    with serve(f"{sys.executable} {script}", timeout=10) as server:
        assert_serves(server.url, ["hi"], [{"label": "short", "max_score": 0.05}])


def test_crashing_server_fails_fast_with_its_output(script: Path) -> None:
    start = time.monotonic()
    broken = {"BROKEN": "crash"}
    with pytest.raises(ServerFailed) as failed, serve([sys.executable, str(script)], env=broken):
        pass  # pragma: no cover - never reached
    assert time.monotonic() - start < 10  # not the default 30 s timeout
    message = str(failed.value)
    assert "the server exited with code 1 before it was healthy" in message
    assert "loading weights from model.safetensors" in message
    assert "RuntimeError: weights file is truncated" in message
    assert f"command: {sys.executable} {script}" in message


def test_never_healthy_server_times_out(script: Path) -> None:
    command, broken = [sys.executable, str(script)], {"BROKEN": "unhealthy"}
    with pytest.raises(ServerFailed) as failed, serve(command, env=broken, timeout=1.5):
        pass  # pragma: no cover - never reached
    message = str(failed.value)
    assert "the server did not become healthy within 1.5 s" in message
    assert "last health check: HTTP 503" in message
    assert "/health answers 2xx" in message


def test_server_answering_too_few_items_fails(script: Path) -> None:
    with (
        serve([sys.executable, str(script)], env={"BROKEN": "drops"}) as server,
        pytest.raises(CheckFailed, match="1 answers for 2 inputs") as failed,
    ):
        assert_serves(server, ["hi", "hello there"])
    assert "listening on" in str(failed.value)  # the server's output comes with the failure


def test_wrong_label_is_named(script: Path) -> None:
    with serve([sys.executable, str(script)]) as server, pytest.raises(CheckFailed) as failed:
        assert_serves(server, ["hi", "a longer text"], ["short", "short"])
    message = str(failed.value)
    assert "answers differ from the expected ones" in message
    assert "[1] 'a longer text': expected 'short', got 'long'" in message
    assert "1 of 2 items wrong" in message
