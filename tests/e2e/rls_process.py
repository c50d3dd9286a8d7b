"""The real RLS (``mimir-edge rls``) as a test fixture: started, waited for, stopped."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.e2e.harness import free_port
from tests.e2e.processes import Fixture, terminate

__all__ = ["RlsProcess"]


class RlsProcess(Fixture):
    """``mimir-edge rls`` on 127.0.0.1 with free ports; SIGTERM and wait on exit."""

    def __init__(self, tmp: Path, *args: str, workers: int = 2) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log_path = tmp / f"rls-{self.grpc_port}.log"
        self.args = [
            "--grpc-listen",
            f"127.0.0.1:{self.grpc_port}",
            "--http-listen",
            f"127.0.0.1:{self.http_port}",
            "--workers",
            str(workers),
            "--drain-delay-seconds",
            "0.5",
            "--grace-period-seconds",
            "5",
            *args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name_and_labels: str) -> float:
        """The value of one series of /metrics (0 if absent)."""
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(name_and_labels + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mimir_edge.cli", "rls", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rls exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()  # before reading the log, so the message shows how it shut down
        raise RuntimeError(f"rls not ready in 30 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 15) -> int:
        assert self.proc is not None
        return terminate(self.proc, timeout_s)
