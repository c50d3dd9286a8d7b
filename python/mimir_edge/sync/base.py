"""The interfaces the overrides sync is built from (the Kubernetes pieces implement them too)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Leadership", "Snapshot", "Source", "TargetSource"]


@dataclass(frozen=True)
class Snapshot:
    #: The ConfigMap's data (or ``{filename: content}`` of a mounted dir/file);
    #: None = source gone (deleted).
    data: Mapping[str, str] | None
    #: Opaque (resourceVersion, or a content hash).
    version: str


class Source(Protocol):
    def run(self, emit: Callable[[Snapshot], None], stop: threading.Event) -> None:
        """Block until ``stop`` is set; emit on every change (and the initial state)."""
        ...


class TargetSource(Protocol):
    def targets(self) -> list[str]:
        """Base URLs of every RLS replica's HTTP port, e.g. ``"http://10.0.0.5:9090"``."""
        ...


class Leadership(Protocol):
    def is_leader(self) -> bool: ...
