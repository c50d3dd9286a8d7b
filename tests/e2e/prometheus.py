"""Real Prometheus (the Debian package) as a test fixture: a remote-write sender or receiver.

A *sender* scrapes targets and remote-writes what it scrapes; ``--web.enable-lifecycle`` lets
a test change its scrape targets with :meth:`PrometheusProcess.reload` (the remote-write
section must stay the same across reloads, or Prometheus restarts the queue). A *receiver*
(``receiver=True``) scrapes nothing and takes remote writes on ``/api/v1/write``
(``--web.enable-remote-write-receiver``), standing in for Mimir's distributor: everything in its
TSDB came through remote write.

Each instance has its own TSDB and log in a temporary directory and listens on a free
127.0.0.1 port; it is stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.e2e.harness import LOCALHOST, free_port
from tests.e2e.processes import Fixture, terminate

__all__ = ["PrometheusError", "PrometheusProcess", "parse_metrics", "prometheus_binary"]


class PrometheusError(RuntimeError):
    """Prometheus is missing, rejected its configuration, or did not become ready."""


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin")
    if found is None:
        raise PrometheusError("prometheus not found (Debian: apt-get install prometheus)")
    return found


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> ``{"name{labels}": value}`` (series exactly as exposed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series and "{" in series and not series.endswith("}"):  # a trailing timestamp
            series, _, value = series.rpartition(" ")
        try:
            out[series] = float(value)
        except ValueError:
            continue
    return out


class PrometheusProcess(Fixture):
    """``prometheus`` with ``config`` (a dict, written as JSON, which YAML reads)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        receiver: bool = False,
        port: int | None = None,
        ready_timeout_s: float = 30.0,
        stop_timeout_s: float = 15.0,
    ) -> None:
        self.config = dict(config)
        self.receiver = receiver
        self.port = port if port is not None else free_port()
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_log = ""

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def _dir(self) -> Path:
        if self._tmp is None:
            raise PrometheusError("prometheus is not running")
        return Path(self._tmp.name)

    def start(self) -> None:
        role = "receiver" if self.receiver else "sender"
        self._tmp = tempfile.TemporaryDirectory(prefix=f"mimir-edge-prometheus-{role}-")
        d = self._dir
        (d / "prometheus.yml").write_text(json.dumps(self.config, indent=1))
        cmd = [
            prometheus_binary(),
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--web.enable-lifecycle",
        ]
        if self.receiver:
            cmd.append("--web.enable-remote-write-receiver")
        with (d / "prometheus.log").open("wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self._proc.returncode}:\n{self.log()}"
                )
            if self._get_status("/-/ready") == 200:
                return
            if time.monotonic() > deadline:
                raise PrometheusError(f"not ready after {self.ready_timeout_s} s:\n{self.log()}")
            time.sleep(0.1)

    def _get_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                status: int = resp.status
                return status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, self.stop_timeout_s)
        if self._tmp is not None:
            self._last_log = self.log()
            self._tmp.cleanup()
            self._tmp = None

    def log(self) -> str:
        if self._tmp is None:
            return self._last_log
        path = self._dir / "prometheus.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    # -- API ---------------------------------------------------------------------------------

    def reload(self, config: Mapping[str, Any]) -> None:
        """Write ``config`` and apply it (``POST /-/reload`` answers once it is applied)."""
        self.config = dict(config)
        (self._dir / "prometheus.yml").write_text(json.dumps(self.config, indent=1))
        req = urllib.request.Request(self.url + "/-/reload", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"reload failed ({e.code}): {e.read().decode()}") from None

    def metrics(self) -> dict[str, float]:
        """Its own ``/metrics`` read directly (not through its TSDB)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:
            return parse_metrics(resp.read().decode())

    def metric_sum(self, name: str, where: Callable[[str], bool] = lambda _: True) -> float:
        """The sum of every series of metric ``name`` in :meth:`metrics` (optionally only the
        series whose ``name{labels}`` text satisfies ``where``)."""
        return sum(
            v
            for series, v in self.metrics().items()
            if series.split("{", 1)[0] == name and where(series)
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API; the ``result`` vector."""
        params = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=30) as resp:
                doc = json.load(resp)
        except urllib.error.HTTPError as e:
            raise PrometheusError(
                f"query {expr!r} failed ({e.code}): {e.read().decode()}"
            ) from None
        if doc.get("status") != "success":
            raise PrometheusError(f"query {expr!r} failed: {doc}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def raw_samples(self, selector: str, window: str = "1h") -> dict[str, list[tuple[Any, str]]]:
        """Every stored sample of the series matching ``selector`` over the last ``window``,
        as the TSDB holds them (staleness markers excepted): ``{series: [(t, value), ...]}``,
        the series as sorted ``name="value"`` pairs."""
        out: dict[str, list[tuple[Any, str]]] = {}
        for r in self.query(f"{selector}[{window}]"):
            key = ",".join(f"{k}={v!r}" for k, v in sorted(r["metric"].items()))
            out[key] = [(t, v) for t, v in r["values"]]
        return out
