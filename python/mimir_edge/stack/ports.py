"""Addresses of the stack's parts: parsing ``host:port``, checking a port is free, picking one."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

__all__ = ["Address", "PortError", "check_free", "parse_address", "pick_free_port"]


class PortError(Exception):
    """A port the stack needs is taken or unusable (``up`` exits 2 with this message)."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int  # 0: not chosen yet

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """Where to connect to reach it: a wildcard host means loopback."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)

    @property
    def url(self) -> str:
        """``http://host:port`` to connect to."""
        return f"http://{Address(self.connect_host, self.port)}"


def parse_address(text: str) -> Address:
    """``host:port``, ``[v6]:port`` or ``:port`` (loopback). Raises ``ValueError``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port in 0..65535, got {text!r}")
    return Address(host.strip("[]") or "127.0.0.1", int(port))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_free(addr: Address, what: str) -> None:
    """Raise :class:`PortError` naming the port if ``addr`` cannot be listened on.

    The probe sets ``SO_REUSEADDR`` (as Envoy and grpc do) so that a port left in TIME_WAIT by
    a previous run counts as free, but not ``SO_REUSEPORT``: the RLS binds with it, and
    without this check a second stack would silently share the first one's RLS port. Port 0
    is probed too: the host must be one of this machine's addresses.
    """
    with socket.socket(_family(addr.host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr.host, addr.port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortError(
                    f"port {addr.port} is already in use ({what}, {addr}); "
                    "stop what listens there or choose another port"
                ) from None
            raise PortError(f"cannot listen on {addr} ({what}): {e.strerror or e}") from None


def pick_free_port(host: str) -> int:
    """A port on ``host`` that was free a moment ago (for children that need a fixed port,
    such as the RLS, whose workers all bind the same one). Raises :class:`PortError`."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError as e:
            raise PortError(f"cannot listen on {host}: {e.strerror or e}") from None
        port: int = s.getsockname()[1]
        return port
