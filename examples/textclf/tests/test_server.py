"""Fast tier: the HTTP server on a tiny random model (the real model's server is in test_real.py).

A random model's labels mean nothing, so these tests check the serving code: routes, batch
input, one prediction per text in order, the same answer batched or alone, and clear errors for
malformed requests.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LABELS, TEXTS

from mlcheck.serving import assert_serves, serve
from textclf import TextClassifier
from textclf.server import BadRequest, make_server, parse_texts

EXAMPLE_ROOT = Path(__file__).resolve().parents[1]


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
)
def test_malformed_requests_are_refused(body: bytes, error: str) -> None:
    with pytest.raises(BadRequest, match=error.replace("[", r"\[").replace("{", r"\{")):
        parse_texts(body)


def test_well_formed_request() -> None:
    assert parse_texts(b'{"texts": ["a", "b"]}') == ["a", "b"]
    assert parse_texts(b'{"texts": []}') == []


@pytest.fixture
def tiny_server(tiny_clf: TextClassifier, tokenizer: Any) -> Iterator[str]:
    """The server in-process on a tiny random model: no subprocess start-up cost."""
    with serve(make_server(tiny_clf, tokenizer, port=0)) as server:
        yield server.url


def test_serves_a_batch_in_order(
    tiny_server: str, tiny_clf: TextClassifier, tokenizer: Any
) -> None:
    # The random model's own predictions are the expectation: the server must return them,
    # one per text, in order, the same batched and one at a time.
    expected = tiny_clf.predict(TEXTS, tokenizer)
    assert_serves(tiny_server, TEXTS, [p["label"] for p in expected])


def test_health_and_errors(tiny_server: str) -> None:
    with urllib.request.urlopen(f"{tiny_server}/health", timeout=10) as response:
        assert json.load(response) == {"status": "ok", "labels": {"0": "negative", "1": "positive"}}
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(
            urllib.request.Request(f"{tiny_server}/predict", data=b'{"texts": "x"}'), timeout=10
        )
    assert bad.value.code == 400
    assert "expected" in json.load(bad.value)["error"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{tiny_server}/nothing", timeout=10)
    assert missing.value.code == 404


def test_command_line_server(tiny_clf: TextClassifier, tokenizer: Any, tmp_path: Path) -> None:
    # What production runs: `python -m textclf.server --model DIR` on a saved folder.
    tiny_clf.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    command = [sys.executable, "-m", "textclf.server", "--port", "{port}", "--model", tmp_path]
    with serve([str(c) for c in command], cwd=EXAMPLE_ROOT) as server:
        assert_serves(
            server.url, TEXTS[:2], [p["label"] for p in tiny_clf.predict(TEXTS[:2], tokenizer)]
        )
    assert LABELS
