"""Process helpers shared by the RLS's workers and ``mimir-edge up``'s children."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

__all__ = ["die_with_parent"]

PR_SET_PDEATHSIG = 1


def die_with_parent(expected_ppid: int | None) -> bool:
    """Ask Linux to SIGTERM this process when its parent dies (even by SIGKILL), so no orphan
    is left running. False if the parent is already gone: it died before the request took
    effect and this process was re-parented. Compared with ``expected_ppid``, not with 1: in a
    container the parent itself may be PID 1 (None: not checked)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such safety net
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return expected_ppid is None or os.getppid() == expected_ppid
