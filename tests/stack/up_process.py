"""``mimir-edge up`` as a test fixture: started on free ports, read as a person reads it.

:class:`UpProcess` runs the real command in a subprocess (stdout and stderr to files), waits
for its banner and takes the URLs and PIDs from what it printed. On exit it sends SIGINT if
the command still runs, then SIGKILL after a bound; every process ``up`` started is checked
gone by the tests that care.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from tests.e2e.processes import Fixture

__all__ = ["UpProcess", "alive", "descendants", "get", "get_json", "table_rows"]

READY = "mimir-edge up: the edge is ready"


class UpProcess(Fixture):
    """``mimir-edge up --ephemeral-ports --workers 1 ARGS...`` with its logs in ``tmp``."""

    def __init__(self, tmp: Path, *args: str, ready_timeout_s: float = 60.0) -> None:
        self.tmp = tmp
        self.log_dir = tmp / "up-logs"
        self.stdout_path = tmp / "up.stdout"
        self.stderr_path = tmp / "up.stderr"
        self.argv = [
            sys.executable, "-m", "mimir_edge.cli", "up",
            "--ephemeral-ports", "--workers", "1", "--stop-timeout", "8",
            "--log-dir", str(self.log_dir), *args,
        ]  # fmt: skip
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while READY not in self.stdout():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"up exited {self.proc.returncode} before ready:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"up not ready in {self.ready_timeout_s} s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 30.0) -> int:
        """Signal ``up`` (if it still runs) and wait for it; its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"up did not exit in {timeout_s} s:\n{self.output()}") from None

    # -- what it printed ---------------------------------------------------------------------

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout()}--- stderr\n{self.stderr()}"

    def _find(self, pattern: str) -> str:
        m = re.search(pattern, self.stdout(), re.MULTILINE)
        assert m is not None, f"{pattern!r} not in the output:\n{self.output()}"
        return m.group(1)

    @property
    def push_url(self) -> str:
        return self._find(r"^  (http://\S+/api/v1/push)$")

    @property
    def envoy_pid(self) -> int:
        return int(self._find(r"^  envoy +pid (\d+)"))

    @property
    def rls_pid(self) -> int:
        return int(self._find(r"^  rls +pid (\d+)"))

    @property
    def envoy_admin(self) -> str:
        return self._find(r"^  envoy +pid \d+ .* admin (http://\S+)")

    @property
    def rls_admin(self) -> str:
        return self._find(r"^  rls +pid \d+ .* admin (http://\S+)")

    @property
    def sink_url(self) -> str:
        return self._find(r"built-in remote-write sink at (http://\S+)")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, (url, status, body)
    return json.loads(body)


def table_rows(text: str, after: str) -> dict[str, list[str]]:
    """The rows of the last table printed after the line ``after``: tenant -> cells."""
    block = text.rsplit(after, 1)[1].splitlines()[1:]
    header = next(i for i, line in enumerate(block) if line.startswith("tenant "))
    rows: dict[str, list[str]] = {}
    for line in block[header + 1 :]:
        cells = line.split()
        if not cells or not cells[1][0].isdigit():
            break
        rows[cells[0]] = cells[1:]
    return rows


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
