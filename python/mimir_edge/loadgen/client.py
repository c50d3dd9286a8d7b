"""A minimal HTTP/1.1 keep-alive client for one worker: pre-built request heads, one socket.

``http.client`` costs more per request than the rest of a send together (header objects,
email parsing of the response); the load generator only needs the status code and must know
where the response ends. So the request head is bytes built once per tenant, and the response
parser reads the status line, ``Content-Length``/``Transfer-Encoding: chunked``/``Connection``,
and skips the body (keeping its start, for showing why a request was refused).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from mimir_edge import __version__
from mimir_edge._http import parse_content_length

__all__ = ["Connection", "ProtocolError", "Target", "error_reason", "parse_url"]

_MAX_HEAD = 64 * 1024
_KEEP_BODY = 512  # bytes of a response body kept for the report
_HEX = frozenset(b"0123456789abcdefABCDEF")


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x we can read."""


class _ClosedBeforeAnswer(ProtocolError):
    """The server closed the connection before sending any byte of an answer."""

    def __init__(self) -> None:
        super().__init__("connection closed before an answer")


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send: parsed from the ``--url``."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def head(self, *, tenant: str, content_type: str, version: str) -> bytes:
        """The request head up to (and including) ``Content-Length: `` for one tenant."""
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host_header}",
            f"User-Agent: mimir-edge-load/{__version__}",
            "Content-Encoding: snappy",
            f"Content-Type: {content_type}",
            f"X-Prometheus-Remote-Write-Version: {version}",
            f"X-Scope-OrgID: {tenant}",
            "Content-Length: ",
        ]
        return "\r\n".join(lines).encode("ascii")


def parse_url(url: str) -> Target:
    """A :class:`Target` from an ``http://`` or ``https://`` URL; ``ValueError`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad URL {url!r}: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"bad URL {url!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"bad URL {url!r}: no host")
    if any(c in url for c in "\r\n\t ") or not url.isascii():
        raise ValueError(f"bad URL {url!r}: spaces, control or non-ASCII characters")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname, port or default, path)


def error_reason(e: BaseException) -> str:
    """A short, stable description of a connection-level failure, for counting."""
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(e, BrokenPipeError):
        return "connection closed while sending (broken pipe)"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host: {e.strerror}"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason or e}"
    if isinstance(e, ProtocolError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return f"{type(e).__name__}: {e}"


class Connection:
    """One keep-alive connection to ``target`` (reconnects when the server closes it)."""

    def __init__(self, target: Target, *, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._reused = False
        self._tls = ssl.create_default_context() if target.scheme == "https" else None
        #: The start of the last response's body (for showing why a request was refused).
        self.last_body = b""

    def connect(self) -> None:
        sock = socket.create_connection((self.target.host, self.target.port), self.timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.target.host)
        except BaseException:
            sock.close()
            raise
        self._sock, self._reused = sock, False
        self._buf.clear()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def post(self, head: bytes, body: bytes) -> int:
        """Send one request (``head`` from :meth:`Target.head`) and return the status code.

        A request that fails on a reused connection before any byte of an answer arrives is
        sent once more on a new connection: the server closed an idle keep-alive connection
        (its keepalive timeout), which says nothing about the request. Raises ``OSError``
        (including :class:`ProtocolError` and ``TimeoutError``) on any other failure, after
        closing the connection.
        """
        request = b"%b%d\r\n\r\n%b" % (head, len(body), body)
        reused = self._sock is not None and self._reused
        try:
            return self._exchange(request)
        except (ConnectionResetError, BrokenPipeError, _ClosedBeforeAnswer):
            self.close()
            if not reused:
                raise
        except BaseException:
            self.close()
            raise
        try:
            return self._exchange(request)
        except BaseException:
            self.close()
            raise

    def _exchange(self, request: bytes) -> int:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.sendall(request)
        status, close = self._read_response()
        if close:
            self.close()
        else:
            self._reused = True
        return status

    def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream."""
        assert self._sock is not None
        data = self._sock.recv(65536)
        if not data:
            return False
        self._buf += data
        return True

    def _read_response(self) -> tuple[int, bool]:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ProtocolError("response head larger than 64 KiB")
                if not self._fill():
                    if buf:
                        raise ProtocolError("connection closed in the middle of a response")
                    raise _ClosedBeforeAnswer
                end = buf.find(b"\r\n\r\n")
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            status, close, length, chunked = _parse_head(lines)
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue): the real one follows
            break
        if chunked:
            self._skip_chunked()
        elif length is not None:
            self._skip(length)
        elif status in (204, 304):
            self.last_body = b""
        else:  # no length: the body runs to the end of the stream
            kept = bytes(buf[:_KEEP_BODY])
            buf.clear()
            while self._fill():  # one read at a time: only the start is kept
                kept += bytes(buf[: _KEEP_BODY - len(kept)])
                buf.clear()
            self.last_body = kept
            close = True
        return status, close

    def _skip(self, n: int) -> None:
        """Consume ``n`` body bytes, one read at a time, keeping the first ``_KEEP_BODY``."""
        buf = self._buf
        kept = bytearray()
        while True:
            take = min(n, len(buf))
            kept += buf[: min(take, _KEEP_BODY - len(kept))]
            del buf[:take]
            n -= take
            if n == 0:
                break
            if not self._fill():
                raise ProtocolError("connection closed in the middle of a response body")
        self.last_body = bytes(kept)

    def _line(self) -> bytes:
        buf = self._buf
        while (end := buf.find(b"\r\n")) < 0:
            if len(buf) > _MAX_HEAD or not self._fill():
                raise ProtocolError("bad chunked response body")
        line = bytes(buf[:end])
        del buf[: end + 2]
        return line

    def _skip_chunked(self) -> None:
        kept = bytearray()
        while True:
            digits = self._line().split(b";")[0].strip()
            if not digits or not _HEX.issuperset(digits):  # int() takes "-5", "0x5", "_"
                raise ProtocolError("bad chunk size in a chunked response body")
            size = int(digits, 16)
            if size == 0:
                while self._line():  # trailers, then the empty line
                    pass
                self.last_body = bytes(kept)
                return
            self._skip(size)
            if len(kept) < _KEEP_BODY:
                kept += self.last_body[: _KEEP_BODY - len(kept)]
            if self._line():
                raise ProtocolError("bad chunk end in a chunked response body")


def _parse_head(lines: list[bytes]) -> tuple[int, bool, int | None, bool]:
    """Status, whether the connection closes after, Content-Length, chunked."""
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    close = version == b"HTTP/1.0"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            # A negative length would desynchronise the connection: an error, it reconnects.
            length = parse_content_length(value)
            if length is None:
                raise ProtocolError(f"bad Content-Length {value.strip()[:40]!r}")
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            if token == b"close":
                close = True
            elif token == b"keep-alive":
                close = False
    return int(code), close, length, chunked
