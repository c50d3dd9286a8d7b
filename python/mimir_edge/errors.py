"""Exceptions raised by mimir-edge.

::

    ValueError
    └── RemoteWriteError            a remote-write body that cannot be counted
        ├── CompressionError        corrupt snappy block            (HTTP 400)
        ├── DecodedTooLargeError    declared size over the cap      (HTTP 400)
        ├── MalformedProtobufError  truncated field, bad varint,
        │                           wrong wire type, bad symbol ref (HTTP 400)
        └── UnsupportedFormatError  Content-Encoding / Content-Type
                                    the core does not read          (HTTP 415)

Every message starts with a stable prefix (``corrupt snappy:``, ``decoded body too
large:``, ``malformed protobuf at byte N:``, ``unsupported content encoding:`` /
``unsupported content type:``). ``reason`` is a short, stable label for metrics; ``offset``
is the byte offset in the decoded body where the protobuf went wrong (``None`` otherwise).
"""

from __future__ import annotations

__all__ = [
    "CompressionError",
    "DecodedTooLargeError",
    "MalformedProtobufError",
    "RemoteWriteError",
    "UnsupportedFormatError",
]


class RemoteWriteError(ValueError):
    """A remote-write body that cannot be decoded or counted."""

    #: HTTP status a server should answer with.
    http_status: int = 400

    def __init__(self, message: str, reason: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.offset = offset


class CompressionError(RemoteWriteError):
    """The snappy block is corrupt. ``reason`` is ``corrupt_compression``."""


class DecodedTooLargeError(RemoteWriteError):
    """The body declares more decoded bytes than allowed. ``reason`` is ``too_large``.

    Decided from snappy's declared length before anything is allocated.
    """


class MalformedProtobufError(RemoteWriteError):
    """The protobuf is malformed at ``offset``.

    ``reason`` is one of ``truncated``, ``bad_varint``, ``wrong_wire_type``,
    ``invalid_tag``, ``bad_symbol_ref``, ``odd_label_refs``, ``wrong_protocol``.
    """


class UnsupportedFormatError(RemoteWriteError):
    """A Content-Encoding or Content-Type the core does not read.

    ``reason`` is ``unsupported_encoding`` or ``unsupported_content_type``.
    """

    http_status = 415
