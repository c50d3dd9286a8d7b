"""``mimir-edge load``: a remote-write load generator. Placeholder, being built."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser("load", help="remote-write load (being built)")
    p.set_defaults(func=lambda _args: 2)
    return p
