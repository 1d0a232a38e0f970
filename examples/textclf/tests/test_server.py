"""Fast tier: the HTTP server on a tiny random model (the real model's server is in test_real.py).

A random model's labels mean nothing, so these tests check the serving code: routes, batch
input, one prediction per text in order, the same answer batched or alone, and clear errors for
malformed requests.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import TEXTS
from textclf import TextClassifier
from textclf.server import BadRequest, make_handler, parse_texts

from mlcheck.serving import Server, assert_serves, serve


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "body is not JSON"),
        (b'["a list"]', 'expected {"texts"'),
        (b'{"text": ["singular key"]}', 'expected {"texts"'),
        (b'{"texts": "one string"}', 'expected {"texts"'),
        (b'{"texts": ["ok", 3]}', 'expected {"texts"'),
        (json.dumps({"texts": ["x"] * 257}).encode(), "at most 256 texts"),
    ],
    ids=["not-json", "a-list", "wrong-key", "one-string", "not-a-string", "too-many"],
)
def test_malformed_requests_are_refused(body: bytes, error: str) -> None:
    with pytest.raises(BadRequest, match=error.replace("[", r"\[").replace("{", r"\{")):
        parse_texts(body)


def test_well_formed_request() -> None:
    assert parse_texts(b'{"texts": ["a", "b"]}') == ["a", "b"]
    assert parse_texts(b'{"texts": []}') == []


@pytest.fixture
def tiny_server(tiny_clf: TextClassifier, tokenizer: Any) -> Iterator[Server]:
    """The server in a thread of the test process, on a tiny random model (no start-up cost)."""
    with serve(make_handler(tiny_clf, tokenizer)) as server:
        yield server


def test_serves_a_batch_in_order(
    tiny_server: Server, tiny_clf: TextClassifier, tokenizer: Any
) -> None:
    # A random model's labels mean nothing: its own predictions are the expectation. The
    # server must return them one per text, in order, the same batched as one at a time.
    expected = [{"label": p["label"]} for p in tiny_clf.predict(TEXTS, tokenizer)]
    answers = assert_serves(tiny_server, TEXTS, expected, request_key="texts")
    assert all(0.5 <= a["score"] <= 1.0 for a in answers)


def test_health_and_errors(tiny_server: Server) -> None:
    with urllib.request.urlopen(f"{tiny_server.url}/health", timeout=10) as response:
        assert json.load(response) == {"status": "ok", "labels": {"0": "negative", "1": "positive"}}
    request = urllib.request.Request(f"{tiny_server.url}/predict", data=b'{"texts": "x"}')
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(request, timeout=10)
    assert bad.value.code == 400
    assert "expected" in json.load(bad.value)["error"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{tiny_server.url}/nothing", timeout=10)
    assert missing.value.code == 404
