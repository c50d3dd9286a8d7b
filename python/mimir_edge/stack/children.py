"""The child processes of ``mimir-edge up``: started, watched, described, stopped.

Each child runs in its own session (so a Ctrl-C in the terminal reaches ``up`` alone, which
then stops the children in order) and through :mod:`mimir_edge.stack.launch` (so it dies with
``up`` even if ``up`` is killed). Its output goes to a log file whose last lines are shown
when it dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Child", "stop_all"]


class Child:
    """One child process. ``stdout_path``: where its stdout goes if not to ``log_path``
    (Envoy's stdout is its access log)."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, stdout_path: Path | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stdout_path = stdout_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        launcher = [sys.executable, "-m", "mimir_edge.stack.launch", str(os.getpid())]
        with contextlib.ExitStack() as files:
            log = files.enter_context(self.log_path.open("wb"))
            out = files.enter_context(self.stdout_path.open("wb")) if self.stdout_path else log
            self.proc = subprocess.Popen(
                [*launcher, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    def poll(self) -> int | None:
        """The exit status if it has exited (negative: killed by that signal), else None.

        An exited child is left a zombie (not reaped): its PID, which is also its process
        group's ID, stays taken until :meth:`reap`, so :meth:`kill_group` can never reach an
        unrelated group that got the number after it."""
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere: Popen knows the status
            return self.proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def wait_exit(self, timeout_s: float) -> bool:
        """Whether it exits within ``timeout_s`` (without reaping it, as :meth:`poll`)."""
        deadline = time.monotonic() + timeout_s
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def exit_description(self) -> str:
        """``exited with code 1``, ``was killed by SIGKILL`` or ``is running``."""
        rc = self.poll()
        if rc is None:
            return "is running"
        return f"was killed by {_signal_name(-rc)}" if rc < 0 else f"exited with code {rc}"

    def short_status(self) -> str:
        """``envoy (exit 0)``, ``rls (SIGKILL)`` or ``envoy (running)``."""
        rc = self.poll()
        state = "running" if rc is None else _signal_name(-rc) if rc < 0 else f"exit {rc}"
        return f"{self.name} ({state})"

    def tail(self, lines: int = 15) -> list[str]:
        """The last ``lines`` lines of its log."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def report(self, lines: int = 15) -> str:
        """What happened to it, for a person: status, then the last lines of its log."""
        head = f"{self.name} (pid {self.pid}) {self.exit_description()}"
        tail = self.tail(lines)
        if not tail:
            return f"{head}; its log ({self.log_path}) is empty"
        body = "\n".join("    " + line for line in tail)
        return f"{head}; last lines of {self.log_path}:\n{body}"

    def terminate(self) -> None:
        """SIGTERM to the child itself (it stops its own children in order)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def kill_group(self) -> None:
        """SIGKILL to everything left in its process group (its session's leader is the
        child, so the group ID is its PID). Never once it is reaped: the number may then
        belong to someone else."""
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def reap(self) -> None:
        """Sweep its process group, then reap it (waits for it to exit)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.kill_group()
        self.proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stop_all(children: Sequence[Child], timeout_s: float) -> list[Child]:
    """SIGTERM every running child, wait up to ``timeout_s`` for all of them, then SIGKILL
    what is left; finally sweep each child's process group (nothing it started survives) and
    reap the child. Returns the children that had to be killed."""
    running = [c for c in children if c.poll() is None]
    for c in running:
        c.terminate()
    deadline = time.monotonic() + timeout_s
    killed: list[Child] = []
    for c in running:
        if not c.wait_exit(max(0.0, deadline - time.monotonic())):
            killed.append(c)
            c.kill_group()
    for c in children:
        c.reap()  # the group is swept while the exited child still holds its ID
    return killed
