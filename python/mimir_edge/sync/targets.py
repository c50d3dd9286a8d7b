"""Where the limit set goes: every RLS replica, and the pusher that puts it there.

Targets are base URLs of the replicas' HTTP ports. :class:`StaticTargets` is a fixed list;
:class:`DnsTargets` resolves a headless Service's name on every call, so replicas that come
and go are followed (Endpoints/EndpointSlices are :mod:`mimir_edge.sync.kube`'s).

:class:`Pusher` brings each target to the set: it reads the replica's set
(``GET /api/v1/limits``) and replaces it (``PUT``, bearer token) only when it differs. Pushing
an unchanged set every interval would publish a new generation each time and keep the
replica's ``rls_limits_stale_seconds`` near zero even when the source is long gone.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["DnsTargets", "Pusher", "StaticTargets", "TargetResult", "normalize_target"]

LIMITS_PATH = "/api/v1/limits"
#: Error reasons of a target (``overrides_sync_errors_total{reason}``).
UNREACHABLE = "push_unreachable"
REJECTED = "push_rejected"


def normalize_target(target: str, scheme: str = "http") -> str:
    """``host:port`` or a URL → ``scheme://host:port`` (no trailing slash)."""
    t = target.strip()
    if "://" not in t:
        t = f"{scheme}://{t}"
    parts = urllib.parse.urlsplit(t)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) target: {target!r}")
    return t.rstrip("/")


def _split_host_port(hostport: str) -> tuple[str, int]:
    host, sep, port = hostport.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {hostport!r}")
    return host.strip("[]"), int(port)


class StaticTargets:
    """A fixed list of replicas (``host:port`` or URLs)."""

    def __init__(self, targets: Sequence[str], scheme: str = "http") -> None:
        self._targets = sorted({normalize_target(t, scheme) for t in targets if t.strip()})
        if not self._targets:
            raise ValueError("no targets given")

    def targets(self) -> list[str]:
        return list(self._targets)


class DnsTargets:
    """Every A/AAAA record of ``host`` (a headless Service), resolved on each call, at ``port``.

    Raises OSError (``socket.gaierror``) when the name does not resolve.
    """

    def __init__(self, hostport: str, scheme: str = "http") -> None:
        self.host, self.port = _split_host_port(hostport)
        self.scheme = scheme

    def targets(self) -> list[str]:
        infos = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        out: set[str] = set()
        for family, _, _, _, sockaddr in infos:
            addr = str(sockaddr[0])
            host = f"[{addr}]" if family == socket.AF_INET6 else addr
            out.add(f"{self.scheme}://{host}:{self.port}")
        return sorted(out)


@dataclass(frozen=True)
class TargetResult:
    """One replica after one attempt."""

    target: str
    #: The replica holds the set now.
    ok: bool
    #: A PUT was sent (and, if ``ok``, accepted).
    pushed: bool = False
    #: Why not ``ok``: ``push_unreachable`` or ``push_rejected``.
    reason: str | None = None
    error: str | None = None
    #: The PUT changed the target's set (``False``: it only confirmed the set it held).
    changed: bool = True


class Pusher:
    """Brings every target to one limit set, concurrently, each request with a timeout."""

    def __init__(
        self,
        token: str | Callable[[], str],
        *,
        timeout_seconds: float = 5.0,
        concurrency: int = 16,
    ) -> None:
        self._token = token if callable(token) else (lambda: token)
        self.timeout_seconds = timeout_seconds
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="overrides-push"
        )
        # Replicas are reached directly (pod IPs): an HTTP(S)_PROXY from the environment
        # must not reroute them.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def push(
        self,
        limits_json: str,
        targets: Sequence[str],
        *,
        force: bool = False,
        confirm: bool = False,
    ) -> list[TargetResult]:
        """Make every target hold ``limits_json`` (a ``LimitSet.to_json()``); one result per
        target, in order. ``force`` PUTs without reading the target's set first; ``confirm``
        PUTs to targets that already hold it too (the RLS then only marks its limits fresh,
        which keeps ``rls_limits_stale_seconds`` true while the source is healthy)."""
        desired = json.loads(limits_json)
        body = limits_json.encode()
        token = self._token()
        return list(
            self._pool.map(lambda t: self._one(t, desired, body, token, force, confirm), targets)
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _one(
        self, target: str, desired: Any, body: bytes, token: str, force: bool, confirm: bool
    ) -> TargetResult:
        url = target + LIMITS_PATH
        changed = True
        if not force:
            try:
                with self._opener.open(url, timeout=self.timeout_seconds) as r:
                    current = json.loads(r.read())
                if current == desired:
                    if not confirm:
                        return TargetResult(target, ok=True)
                    changed = False
            except (urllib.error.HTTPError, ValueError):
                pass  # it answers but will not say which set it holds: replace it anyway
            except (OSError, http.client.HTTPException) as e:
                return TargetResult(target, ok=False, reason=UNREACHABLE, error=_describe(e))
        req = urllib.request.Request(url, data=body, method="PUT")
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=self.timeout_seconds) as r:
                r.read()
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode(errors="replace").strip()
            return TargetResult(
                target, ok=False, pushed=True, reason=REJECTED, error=f"HTTP {e.code}: {detail}"
            )
        except (OSError, http.client.HTTPException) as e:
            return TargetResult(
                target, ok=False, pushed=True, reason=UNREACHABLE, error=_describe(e)
            )
        return TargetResult(target, ok=True, pushed=True, changed=changed)


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return f"{type(e.reason).__name__}: {e.reason}"
    return f"{type(e).__name__}: {e}"
