"""The load generator's response reader: framing it cannot trust is an error (the connection
is dropped and made again), and a large body is read through, keeping only its start."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence

import pytest

from mimir_edge.loadgen.client import Connection, ProtocolError, Target

BIG = 4 << 20


class CannedServer:
    """Answers each request on one connection with the next canned response; closes after
    the last one."""

    def __init__(self, answers: Sequence[bytes]) -> None:
        self.answers = list(answers)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            buf = b""
            for answer in self.answers:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                conn.sendall(answer)

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[list[CannedServer]]:
    started: list[CannedServer] = []
    yield started
    for s in started:
        s.close()


def connect(serve: list[CannedServer], *answers: bytes) -> tuple[Connection, list[int]]:
    """A connection to a server giving ``answers``, and the buffer sizes seen while reading."""
    server = CannedServer(answers)
    serve.append(server)
    conn = Connection(Target("http", "127.0.0.1", server.port, "/"), timeout_s=10)
    sizes: list[int] = []
    fill = conn._fill

    def recording_fill() -> bool:
        more = fill()
        sizes.append(len(conn._buf))
        return more

    conn._fill = recording_fill  # type: ignore[method-assign]
    return conn, sizes


HEAD = b"POST / HTTP/1.1\r\nContent-Length: "


@pytest.mark.parametrize("length", [b"-1", b"abc", b"+3", b""])
def test_a_bad_content_length_is_a_protocol_error(serve: list[CannedServer], length: bytes) -> None:
    conn, _ = connect(serve, b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\nabc")
    with pytest.raises(ProtocolError, match="bad Content-Length"):
        conn.post(HEAD, b"x")
    assert conn._sock is None  # dropped: the next request connects again


def test_a_negative_chunk_size_is_a_protocol_error(serve: list[CannedServer]) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc"
    conn, _ = connect(serve, answer)
    with pytest.raises(ProtocolError, match="bad chunk size"):
        conn.post(HEAD, b"x")


def test_a_large_body_is_read_through_keeping_its_start(serve: list[CannedServer]) -> None:
    body = bytes(range(256)) * (BIG // 256)
    big = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: %d\r\n\r\n%b" % (BIG, body)
    conn, sizes = connect(serve, big, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert conn.post(HEAD, b"x") == 429
    assert conn.last_body == body[:512]
    assert max(sizes) <= 256 * 1024  # never the whole body in memory
    assert conn.post(HEAD, b"x") == 200  # same connection, in step
    assert conn.last_body == b"ok"
    conn.close()


def test_a_body_to_the_end_of_the_stream_keeps_only_its_start(serve: list[CannedServer]) -> None:
    body = b"y" * BIG
    conn, sizes = connect(serve, b"HTTP/1.1 503 Service Unavailable\r\n\r\n" + body)
    assert conn.post(HEAD, b"x") == 503
    assert conn.last_body == body[:512]
    assert max(sizes) <= 256 * 1024
    assert conn._sock is None
