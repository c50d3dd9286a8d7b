"""Small HTTP/1.1 helpers shared by the servers and the load generator's client."""

from __future__ import annotations

__all__ = ["parse_content_length"]


def parse_content_length(value: str | bytes | None) -> int | None:
    """The length in a ``Content-Length`` value (surrounding spaces allowed); None when it is
    anything but ASCII digits: negative, signed, empty, ``abc``, ``1_000``, non-ASCII digits.
    (``int()`` takes several of those; a negative length would mean "read to the end".)"""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)
