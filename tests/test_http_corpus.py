"""The request corpus in tests/http_corpus: every valid request parses to its expected
result (whole, and cut into small reads), every invalid one is rejected with its
status and closes the connection without reaching the application."""
import codecs
import glob
import json
import os

import pytest

from http_corpus.harness import FakeConnection, status_of

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "http_corpus")
VALID = sorted(glob.glob(os.path.join(CORPUS, "valid", "*.http")))
INVALID = sorted(glob.glob(os.path.join(CORPUS, "invalid", "*.http")))


def load(path):
    with open(path) as handle:
        text = handle.read().replace("\n", "")
    return codecs.escape_decode(text.encode("latin-1"))[0]


def name_of(path):
    return os.path.basename(path)[:-5]


def seen(request):
    return {"method": request.method, "uri": request.uri, "path": request.path,
            "query": request.query_string, "version": request.version,
            "headers": request.headers, "body": request.body.decode("latin-1"),
            "keep_alive": request.keep_alive}


def feed_in_pieces(data, size):
    connection = FakeConnection()
    for start in range(0, len(data), size):
        connection.feed(data[start:start + size])
    return connection


def test_corpus_is_as_broad_as_gunicorns():
    assert len(VALID) >= 62 and len(INVALID) >= 81


@pytest.mark.parametrize("path", VALID, ids=name_of)
def test_valid_request(path):
    data = load(path)
    with open(path[:-5] + ".json") as handle:
        expected = json.load(handle)
    connection = FakeConnection()
    connection.feed(data)
    assert [seen(r) for r in connection.messages] == expected
    assert not connection.sent and not connection.bad
    assert connection.closed is False
    assert connection.buffer == b""


@pytest.mark.parametrize("path", VALID, ids=name_of)
def test_valid_request_in_pieces(path):
    data = load(path)
    with open(path[:-5] + ".json") as handle:
        expected = json.load(handle)
    connection = feed_in_pieces(data, 1 if len(data) < 2000 else 997)
    assert [seen(r) for r in connection.messages] == expected
    assert not connection.closed and connection.buffer == b""


@pytest.mark.parametrize("path", INVALID, ids=name_of)
def test_invalid_request(path):
    status = int(name_of(path).split("_")[1])
    connection = FakeConnection()
    connection.feed(load(path))
    assert connection.messages == []
    assert connection.closed, "connection left open"
    assert status_of(connection.output()) == status
    assert b"\r\nConnection: close\r\n" in connection.output()


@pytest.mark.parametrize("path", INVALID, ids=name_of)
def test_invalid_request_in_pieces(path):
    status = int(name_of(path).split("_")[1])
    data = load(path)
    connection = feed_in_pieces(data, 1 if len(data) < 2000 else 997)
    assert connection.messages == []
    assert connection.closed
    assert status_of(connection.output()) == status
