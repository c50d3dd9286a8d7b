"""mimir-edge: per-tenant ingestion-limit enforcement at the edge of Grafana Mimir.

The public API. ``scan_remote_write`` decodes and counts a remote-write body in one call
into the compiled core; ``TokenBucket`` is the core's limiter with Mimir's semantics.
"""

from mimir_edge._native import (
    DEFAULT_MAX_DECODED_BYTES,
    MAX_BURST,
    TokenBucket,
    WriteStats,
    scan_remote_write,
    snappy_compress,
    snappy_decompress,
)
from mimir_edge.errors import (
    CompressionError,
    DecodedTooLargeError,
    MalformedProtobufError,
    RemoteWriteError,
    UnsupportedFormatError,
)

__version__ = "0.1.0"

#: Content-Type of a remote write 2.0 request.
CONTENT_TYPE_V2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
#: Content-Type of a remote write 1.0 request.
CONTENT_TYPE_V1 = "application/x-protobuf;proto=prometheus.WriteRequest"

__all__ = [
    "CONTENT_TYPE_V1",
    "CONTENT_TYPE_V2",
    "DEFAULT_MAX_DECODED_BYTES",
    "MAX_BURST",
    "CompressionError",
    "DecodedTooLargeError",
    "MalformedProtobufError",
    "RemoteWriteError",
    "TokenBucket",
    "UnsupportedFormatError",
    "WriteStats",
    "__version__",
    "scan_remote_write",
    "snappy_compress",
    "snappy_decompress",
]
