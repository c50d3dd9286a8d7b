"""The lifecycle the test fixtures share: started on entry, stopped on exit, never leaked.

:class:`Fixture` turns a ``start()``/``stop()`` pair into a context manager; :func:`terminate`
is the stop of a child process (SIGTERM, a bounded wait, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Fixture", "terminate"]


class Fixture(ABC):
    """A context manager over :meth:`start` (then :meth:`wait_ready`) and :meth:`stop`.

    If starting fails, :meth:`stop` runs before the error is re-raised, so a half-started
    process is not left behind; ``stop`` must therefore cope with whatever ``start`` got to.
    Should ``stop`` fail as well, the start error still wins (the stop error becomes a note
    on it), because that is the one that says what went wrong.
    """

    @abstractmethod
    def start(self) -> object:
        """Start it (and, unless :meth:`wait_ready` does that, wait until it serves)."""

    def wait_ready(self) -> None:
        """Wait until it serves; for fixtures whose :meth:`start` only launches."""
        return  # by default start() has waited already

    @abstractmethod
    def stop(self) -> object:
        """Stop it and release what it holds."""

    def __enter__(self) -> Self:
        try:
            self.start()
            self.wait_ready()
        except BaseException as error:
            try:
                self.stop()
            except Exception as stop_error:
                error.add_note(f"stopping it after the failed start failed too: {stop_error!r}")
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def terminate(proc: subprocess.Popen[bytes], timeout_s: float, *, kill_group: bool = False) -> int:
    """SIGTERM ``proc`` if it still runs, wait up to ``timeout_s``, then SIGKILL and wait;
    its exit code. ``kill_group``: the SIGKILL goes to its process group (``proc`` started
    with ``start_new_session=True``), so children it forked die with it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            if kill_group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
    return proc.returncode
