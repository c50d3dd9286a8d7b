"""The sink's HTTP framing: a body it does not read never becomes the next request."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from mimir_edge.stack.sink import MAX_BODY_BYTES, RemoteWriteSink


@pytest.fixture
def sink() -> Iterator[RemoteWriteSink]:
    with RemoteWriteSink("127.0.0.1", 0) as s:
        yield s


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on one connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


@pytest.mark.parametrize(
    ("length", "status"),
    [("abc", 400), ("-5", 400), ("+5", 400), ("٣", 400), (str(MAX_BODY_BYTES + 1), 413)],
)
@pytest.mark.parametrize("path", ["/other", "/api/v1/push"])
def test_a_bad_or_too_large_length_is_answered_and_closes(
    sink: RemoteWriteSink, path: str, length: str, status: int
) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Scope-OrgID: t\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    # What follows would be taken for a second request if the connection stayed open.
    answer = exchange(sink.port, request + b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [status]


def test_a_refused_body_is_read_before_the_next_request(sink: RemoteWriteSink) -> None:
    body = b"GET /ready HTTP/1.1\r\n\r\n" * 4000  # looks like requests: must not be taken for any
    first = f"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    last = b"GET /api/v1/totals HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert statuses(exchange(sink.port, first + body + last)) == [404, 200]
