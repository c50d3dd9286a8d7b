"""Where the limit set goes: every RLS replica, and the pusher that puts it there.

Targets are base URLs of the replicas' HTTP ports. :class:`StaticTargets` is a fixed list;
:class:`DnsTargets` resolves a headless Service's name on every call, so replicas that come
and go are followed (Endpoints/EndpointSlices are :mod:`mimir_edge.sync.kube`'s). One URL per
replica: the number of targets is the number of replicas that share the traffic.

:class:`Pusher` brings each target to the set and, when given, the replica count: it reads the
replica's set (``GET /api/v1/limits``; the count in force is its ``X-Mimir-Edge-Instances``
header) and replaces it (``PUT /api/v1/limits?instances=N``, bearer token) only when either
differs. Pushing an unchanged set every interval would publish a new generation each time and
keep the replica's ``rls_limits_stale_seconds`` near zero even when the source is long gone.
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

from mimir_edge.rls.http_api import INSTANCES_HEADER, INSTANCES_PARAM

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
    """The A records of ``host`` (a headless Service), resolved on each call, at ``port``; its
    AAAA records when it has no A record.

    One address family, as the EndpointSlices are read: a dual-stack replica has an A and an
    AAAA record, and counting both would make every replica enforce half its share. Raises
    OSError (``socket.gaierror``) when the name does not resolve.
    """

    def __init__(self, hostport: str, scheme: str = "http") -> None:
        self.host, self.port = _split_host_port(hostport)
        self.scheme = scheme

    def targets(self) -> list[str]:
        infos = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        by_family: dict[int, set[str]] = {}
        for family, _, _, _, sockaddr in infos:
            addr = str(sockaddr[0])
            host = f"[{addr}]" if family == socket.AF_INET6 else addr
            by_family.setdefault(family, set()).add(f"{self.scheme}://{host}:{self.port}")
        for family in (socket.AF_INET, socket.AF_INET6):
            if by_family.get(family):
                return sorted(by_family[family])
        return []


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
    #: The PUT changed the replica count the target reported (``held_instances``).
    instances_changed: bool = False
    #: The replica count the target reported before (None: not read, or an RLS that does
    #: not report one).
    held_instances: int | None = None


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
        instances: int | None = None,
    ) -> list[TargetResult]:
        """Make every target hold ``limits_json`` (a ``LimitSet.to_json()``) and, unless None,
        the replica count ``instances``; one result per target, in order. ``force`` PUTs
        without reading the target first; ``confirm`` PUTs to targets that already hold both
        too (the RLS then only marks its limits fresh, which keeps ``rls_limits_stale_seconds``
        true while the source is healthy). A target holding the set but another count gets a
        PUT whatever ``confirm`` says (the RLS does not count a new count alone as fresh
        limits)."""
        desired = json.loads(limits_json)
        body = limits_json.encode()
        token = self._token()
        query = "" if instances is None else f"?{INSTANCES_PARAM}={instances}"
        return list(
            self._pool.map(
                lambda t: self._one(t, desired, body, query, instances, token, force, confirm),
                targets,
            )
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _one(
        self,
        target: str,
        desired: Any,
        body: bytes,
        query: str,
        instances: int | None,
        token: str,
        force: bool,
        confirm: bool,
    ) -> TargetResult:
        url = target + LIMITS_PATH
        changed = True
        held: int | None = None
        if not force:
            try:
                with self._opener.open(url, timeout=self.timeout_seconds) as r:
                    held = _held_instances(r.headers.get(INSTANCES_HEADER))
                    current = json.loads(r.read())
                # An RLS that reports no count (older than the count) ignores the one sent:
                # its set alone decides.
                count_ok = instances is None or held is None or held == instances
                if current == desired and count_ok:
                    if not confirm:
                        return TargetResult(target, ok=True, held_instances=held)
                    changed = False
                elif current == desired:
                    changed = False  # only the count differs
            except (urllib.error.HTTPError, ValueError):
                pass  # it answers but will not say which set it holds: replace it anyway
            except (OSError, http.client.HTTPException) as e:
                return TargetResult(target, ok=False, reason=UNREACHABLE, error=_describe(e))
        req = urllib.request.Request(url + query, data=body, method="PUT")
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=self.timeout_seconds) as r:
                r.read()
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode(errors="replace").strip()
            return TargetResult(
                target,
                ok=False,
                pushed=True,
                reason=REJECTED,
                error=f"HTTP {e.code}: {detail}",
                held_instances=held,
            )
        except (OSError, http.client.HTTPException) as e:
            return TargetResult(
                target,
                ok=False,
                pushed=True,
                reason=UNREACHABLE,
                error=_describe(e),
                held_instances=held,
            )
        return TargetResult(
            target,
            ok=True,
            pushed=True,
            changed=changed,
            instances_changed=held is not None and instances not in (None, held),
            held_instances=held,
        )


def _held_instances(value: str | None) -> int | None:
    """The count of an ``X-Mimir-Edge-Instances`` header (None: absent or not a count)."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return f"{type(e.reason).__name__}: {e.reason}"
    return f"{type(e).__name__}: {e}"
