"""A mounted file or directory as a :class:`~mimir_edge.sync.base.Source`, polled as Mimir
polls its runtime config (every 10 s by default).

A directory is read as a ConfigMap volume: one file per key, plus kubelet's ``..data`` symlink
to a timestamped directory that it swaps atomically on every update. When ``..data`` exists
the files are read through it, so one snapshot never mixes two versions of the ConfigMap.
Only regular files (or symlinks to them) count; names starting with ``..`` and
subdirectories are skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from mimir_edge.sync.base import Snapshot

__all__ = ["FileSource"]

#: Version of the snapshot of a path that does not exist.
ABSENT = "absent"
#: Attempts to read a directory that changes while it is read.
_READ_ATTEMPTS = 3


class FileSource:
    """Emits ``{filename: content}`` of ``path`` (a file, or every file of a directory) when it
    changes, ``data=None`` when the path disappears."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        poll_seconds: float = 10.0,
        *,
        log: logging.Logger | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be > 0")
        self.path = Path(path)
        self.poll_seconds = poll_seconds
        self.settle_seconds = min(0.1, poll_seconds / 2)
        self._log = log or logging.getLogger("mimir_edge.sync.file")

    def read(self) -> Snapshot:
        """The path as it is now. Raises OSError if it exists but cannot be read."""
        for attempt in range(_READ_ATTEMPTS):
            try:
                data = self._read_once()
            except FileNotFoundError:
                # A file vanished between listing and reading (kubelet removed the old
                # timestamped directory, or an editor replaced a file): read again.
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                continue
            if data is None:
                return Snapshot(None, ABSENT)
            return Snapshot(data, _digest(data))
        raise AssertionError("unreachable")

    def _read_once(self) -> dict[str, str] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        if stat.S_ISREG(st.st_mode):
            return {self.path.name: _text(self.path)}
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(f"{self.path} is neither a regular file nor a directory")
        base = self.path
        if (self.path / "..data").is_dir():
            base = (self.path / "..data").resolve(strict=True)
        data: dict[str, str] = {}
        with os.scandir(base) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                # is_file() follows symlinks: the keys of a mounted ConfigMap are symlinks.
                if entry.name.startswith("..") or not entry.is_file():
                    continue
                data[entry.name] = _text(Path(entry.path))
        return data

    def run(self, emit: Callable[[Snapshot], None], stop: threading.Event) -> None:
        last_version: str | None = None
        last_error: str | None = None
        while True:
            snap: Snapshot | None = None
            try:
                first = self.read()
                if first.version != last_version:
                    # A file written in place (not renamed over) can be read half-written, and
                    # some editors delete then recreate: a change counts once two reads a
                    # moment apart agree.
                    if stop.wait(self.settle_seconds):
                        return
                    if self.read() == first:
                        snap = first
            except OSError as e:
                # Unreadable is not gone: emit nothing, so the last good set stays, and retry.
                if str(e) != last_error:
                    self._log.error(
                        "cannot read the overrides source",
                        extra={"fields": {"path": str(self.path), "error": str(e)}},
                    )
                last_error = str(e)
            else:
                last_error = None
                if snap is not None and snap.version != last_version:
                    last_version = snap.version
                    emit(snap)
            if stop.wait(self.poll_seconds):
                return


def _text(path: Path) -> str:
    # Undecodable bytes become U+FFFD: the parser then reports the document, not a crash.
    return path.read_bytes().decode("utf-8", errors="replace")


def _digest(data: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(data):
        for part in (name, data[name]):
            raw = part.encode()
            h.update(len(raw).to_bytes(8, "big"))
            h.update(raw)
    return "sha256:" + h.hexdigest()
