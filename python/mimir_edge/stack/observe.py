"""What the live table shows, read from the running parts.

* What clients got: Envoy's JSON access log (one line per request, with the tenant header and
  the status sent back), tailed from its file. This is the only place a 429 from the
  ratelimit filter and one from ext_authz look the same, as they do to the sender.
* What the RLS decided: its admin API, ``GET /api/v1/tenants`` (limits, allowed and denied
  items per tenant).
* What arrived upstream: the built-in sink's totals (read in-process).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["NO_TENANT", "AccessLogCounter", "fetch_json"]

#: Shown for requests without a tenant header.
NO_TENANT = "(none)"


class AccessLogCounter:
    """Per-tenant counts of HTTP statuses, from Envoy's access log (read incrementally)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.statuses: dict[str, Counter[int]] = {}

    def update(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # an unfinished line waits for the next read
        for line in lines:
            self._count(line)

    def _count(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            return  # not an access-log line
        if not isinstance(entry, dict) or "response_code" not in entry:
            return
        tenant = entry.get("tenant")
        key = tenant if isinstance(tenant, str) and tenant not in ("", "-") else NO_TENANT
        code = entry.get("response_code")
        self.statuses.setdefault(key, Counter())[code if isinstance(code, int) else 0] += 1


def fetch_json(url: str, timeout_s: float = 2.0) -> Any:
    """GET ``url`` as JSON; ``None`` if it cannot be had right now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return json.load(resp)
    except (OSError, ValueError, urllib.error.URLError):
        return None
