"""Corrupt remote-write bodies: every one maps to the right exception, reason, prefix and offset.

Bodies are built by hand with the tiny encoder below. Where a protobuf error is expected, the
builder places a ``HERE`` marker at the byte the error must point at, so expected offsets
come from how the body was constructed, never from the scanner's output. Offsets are in the
DECODED body, so every protobuf case also runs snappy-compressed and must give the same one.

Offset conventions checked here (see native/src/wire.rs):
  * truncated length-delimited value: the offset of its length varint;
  * truncated / bad varint: the offset of the varint's first byte;
  * truncated fixed32/fixed64, wrong wire type, invalid tag, wrong protocol, odd
    labels_refs: the offset of the field's tag;
  * bad symbol ref: the offset of the ref varint itself.
"""

from __future__ import annotations

import bisect
import functools
import random
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cramjam
import pytest

import mimir_edge
from mimir_edge import (
    CompressionError,
    DecodedTooLargeError,
    MalformedProtobufError,
    RemoteWriteError,
    UnsupportedFormatError,
    WriteStats,
    scan_remote_write,
)

V1 = "application/x-protobuf;proto=prometheus.WriteRequest"
V2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
DEFAULT_CAP = 32 << 20

# --------------------------------------------------------------------------------------------
# A tiny protobuf encoder that remembers where HERE was placed.
# --------------------------------------------------------------------------------------------


class _Here:
    def __repr__(self) -> str:
        return "HERE"


HERE = _Here()


@dataclass(frozen=True)
class Enc:
    """Encoded bytes plus the offset of the HERE marker (None if none was placed)."""

    data: bytes
    at: int | None = None


Part = bytes | Enc | _Here


def cat(*parts: Part) -> Enc:
    out = bytearray()
    at: int | None = None

    def mark(offset: int) -> None:
        nonlocal at
        assert at is None, "only one HERE per body"
        at = offset

    for p in parts:
        if isinstance(p, _Here):
            mark(len(out))
        elif isinstance(p, Enc):
            if p.at is not None:
                mark(len(out) + p.at)
            out += p.data
        else:
            out += p
    return Enc(bytes(out), at)


def varint(n: int) -> bytes:
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


VARINT, FIXED64, LEN, SGROUP, EGROUP, FIXED32 = range(6)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def ld(field: int, *parts: Part) -> Enc:
    """A length-delimited field whose length is the true length of its content."""
    body = cat(*parts)
    return cat(tag(field, LEN), varint(len(body.data)), body)


def vi(field: int, n: int) -> bytes:
    return tag(field, VARINT) + varint(n)


def f64(field: int, x: float = 1.0) -> bytes:
    return tag(field, FIXED64) + struct.pack("<d", x)


def f32(field: int) -> bytes:
    return tag(field, FIXED32) + b"\x00\x00\x00\x00"


def packed(*values: int) -> bytes:
    return b"".join(varint(v) for v in values)


# v1 building blocks (content of the message, without its own key).
def label(name: bytes, value: bytes) -> Enc:
    return cat(ld(1, name), ld(2, value))


def sample(value: float = 1.0, ts: int = 1_700_000_000_000) -> Enc:
    return cat(f64(1, value), vi(2, ts))


def good_series(n: int = 1) -> Enc:
    """A valid top-level TimeSeries field (v1) with a name label and ``n`` samples."""
    return ld(1, ld(1, label(b"__name__", b"up")), *[ld(2, sample()) for _ in range(n)])


# v2: symbols 0..3.
SYMS = [b"", b"__name__", b"up", b"job"]


def v2_symbols(syms: list[bytes] = SYMS) -> Enc:
    return cat(*[ld(4, s) for s in syms])


def compress(data: bytes) -> bytes:
    """Snappy block format from an encoder independent of the core (cramjam)."""
    return bytes(cramjam.snappy.compress_raw(data))


def decompress(data: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress_raw(data))


# --------------------------------------------------------------------------------------------
# Checking an error completely.
# --------------------------------------------------------------------------------------------

PREFIX = {
    CompressionError: "corrupt snappy: ",
    DecodedTooLargeError: "decoded body too large: ",
}


def check_error(
    e: BaseException,
    cls: type[RemoteWriteError],
    reason: str,
    *,
    offset: int | None = None,
    prefix: str | None = None,
) -> None:
    assert type(e) is cls, f"expected {cls.__name__}, got {type(e).__name__}: {e}"
    assert isinstance(e, RemoteWriteError)
    assert isinstance(e, ValueError)
    assert e.reason == reason, str(e)
    msg = str(e)
    assert "\n" not in msg, f"multi-line message: {msg!r}"
    assert "\r" not in msg, f"multi-line message: {msg!r}"
    if cls is MalformedProtobufError:
        assert offset is not None
        assert e.offset == offset, f"offset {e.offset}, expected {offset}: {msg}"
        assert msg.startswith(f"malformed protobuf at byte {offset}: "), msg
    else:
        assert e.offset is None, msg
        expected_prefix = prefix if prefix is not None else PREFIX[cls]
        assert msg.startswith(expected_prefix), msg
    assert e.http_status == (415 if cls is UnsupportedFormatError else 400)


def raises(
    cls: type[RemoteWriteError], reason: str, fn: Callable[[], Any], **kw: Any
) -> RemoteWriteError:
    with pytest.raises(RemoteWriteError) as ei:
        fn()
    check_error(ei.value, cls, reason, **kw)
    return ei.value


def scan_id(body: bytes, ct: str | None = None, **kw: Any) -> WriteStats:
    return scan_remote_write(body, content_encoding="identity", content_type=ct, **kw)


# --------------------------------------------------------------------------------------------
# The table of corrupt protobuf bodies.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    protocol: str  # "v1" | "v2"
    body: Enc
    reason: str


def _pad() -> Enc:
    """A valid series placed after a broken one, so a length that overruns its enclosing
    message still fits inside the body (proving the bound is the message, not the buffer)."""
    return good_series(4)


CASES: list[Case] = [
    # ---- truncated: length-delimited longer than its message ---------------------------
    Case(
        "v1-top-level-len-past-end",
        "v1",
        cat(tag(1, LEN), HERE, varint(5), b"\x00\x00"),
        "truncated",
    ),
    Case(
        "v1-top-level-multibyte-len-past-end",
        "v1",
        cat(good_series(), tag(1, LEN), HERE, varint(300), b"\x00" * 100),
        "truncated",
    ),
    Case(
        "v1-metadata-len-past-end",
        "v1",
        cat(tag(3, LEN), HERE, varint(50), b"\x08\x01"),
        "truncated",
    ),
    Case(
        "v1-label-longer-than-timeseries",
        "v1",
        cat(ld(1, tag(1, LEN), HERE, varint(9), ld(1, b"abc")), _pad()),
        "truncated",
    ),
    Case(
        "v1-sample-longer-than-timeseries",
        "v1",
        cat(
            ld(1, ld(1, label(b"a", b"b")), tag(2, LEN), HERE, varint(9), b"\x09\x00\x00\x00"),
            _pad(),
        ),
        "truncated",
    ),
    Case(
        "v1-label-name-longer-than-label",
        "v1",
        cat(ld(1, ld(1, tag(1, LEN), HERE, varint(16), b"ab")), _pad()),
        "truncated",
    ),
    Case(
        "v1-label-value-longer-than-label",
        "v1",
        cat(ld(1, ld(1, ld(1, b"a"), tag(2, LEN), HERE, varint(32), b"b")), _pad()),
        "truncated",
    ),
    Case(
        "v1-exemplar-label-longer-than-exemplar",
        "v1",
        cat(ld(1, ld(3, tag(1, LEN), HERE, varint(20), b"\x0a\x01a", f64(2))), _pad()),
        "truncated",
    ),
    Case(
        "v1-metadata-help-longer-than-metadata",
        "v1",
        cat(ld(3, vi(1, 1), tag(4, LEN), HERE, varint(40), b"help"), _pad()),
        "truncated",
    ),
    Case(
        "v1-fixed64-cut-short",
        "v1",
        cat(ld(1, ld(2, HERE, tag(1, FIXED64), b"\x00\x00\x00")), _pad()),
        "truncated",
    ),
    Case(
        "v1-fixed32-unknown-cut-short",
        "v1",
        cat(ld(1, ld(1, label(b"a", b"b")), HERE, tag(9, FIXED32), b"\x00"), _pad()),
        "truncated",
    ),
    Case(
        "v1-varint-cut-by-message-end",
        "v1",
        cat(ld(1, ld(2, tag(2, VARINT), HERE, b"\xff")), _pad()),
        "truncated",
    ),
    Case("v1-tag-varint-cut-at-body-end", "v1", cat(good_series(), HERE, b"\x80"), "truncated"),
    Case("v1-len-varint-cut-at-body-end", "v1", cat(tag(1, LEN), HERE, b"\xff\xff"), "truncated"),
    Case("v1-tag-without-value", "v1", cat(good_series(), tag(1, LEN), HERE), "truncated"),
    # ---- bad varints -------------------------------------------------------------------
    Case("v1-tag-11-bytes-0x80", "v1", cat(HERE, b"\x80" * 11), "bad_varint"),
    Case("v1-len-11-bytes-0x80", "v1", cat(tag(1, LEN), HERE, b"\x80" * 10, b"\x00"), "bad_varint"),
    Case("v1-len-10th-byte-2", "v1", cat(tag(1, LEN), HERE, b"\xff" * 9, b"\x02"), "bad_varint"),
    Case(
        "v1-sample-timestamp-10th-byte-2",
        "v1",
        cat(ld(1, ld(2, tag(2, VARINT), HERE, b"\xff" * 9, b"\x02")), _pad()),
        "bad_varint",
    ),
    Case(
        "v1-sample-timestamp-11-bytes",
        "v1",
        cat(ld(1, ld(2, f64(1), tag(2, VARINT), HERE, b"\x80" * 10, b"\x00")), _pad()),
        "bad_varint",
    ),
    Case(
        # The canonical Sample framing (value, then timestamp) with an overflowing 10-byte
        # timestamp: the same fault as the case above, in the order every encoder writes.
        "v1-canonical-sample-timestamp-10th-byte-2",
        "v1",
        cat(ld(1, ld(2, f64(1), tag(2, VARINT), HERE, b"\xff" * 9, b"\x02")), _pad()),
        "bad_varint",
    ),
    Case(
        "v1-exemplar-timestamp-10th-byte-2",
        "v1",
        cat(ld(1, ld(3, tag(3, VARINT), HERE, b"\xff" * 9, b"\x02", f64(2))), _pad()),
        "bad_varint",
    ),
    Case(
        "v1-canonical-exemplar-timestamp-10th-byte-2",
        "v1",
        cat(
            ld(
                1,
                ld(3, ld(1, label(b"t", b"x")), f64(2), tag(3, VARINT), HERE, b"\xff" * 9, b"\x02"),
            ),
            _pad(),
        ),
        "bad_varint",
    ),
    Case(
        "v1-metadata-type-10th-byte-0x7f",
        "v1",
        cat(ld(3, tag(1, VARINT), HERE, b"\xff" * 9, b"\x7f")),
        "bad_varint",
    ),
    Case(
        "v2-labels-ref-10th-byte-2",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1), HERE, b"\xff" * 9, b"\x02"))),
        "bad_varint",
    ),
    # ---- wrong wire types --------------------------------------------------------------
    Case("v1-timeseries-as-varint", "v1", cat(HERE, vi(1, 5)), "wrong_wire_type"),
    Case("v1-timeseries-as-fixed32", "v1", cat(good_series(), HERE, f32(1)), "wrong_wire_type"),
    Case("v1-metadata-as-fixed64", "v1", cat(HERE, f64(3)), "wrong_wire_type"),
    Case("v1-labels-as-varint", "v1", cat(ld(1, HERE, vi(1, 1)), _pad()), "wrong_wire_type"),
    Case(
        "v1-label-name-as-fixed64",
        "v1",
        cat(ld(1, ld(1, HERE, f64(1), ld(2, b"v"))), _pad()),
        "wrong_wire_type",
    ),
    Case(
        "v1-label-value-as-fixed32",
        "v1",
        cat(ld(1, ld(1, ld(1, b"n"), HERE, f32(2))), _pad()),
        "wrong_wire_type",
    ),
    Case(
        "v1-sample-as-varint",
        "v1",
        cat(ld(1, ld(1, label(b"a", b"b")), HERE, vi(2, 3)), _pad()),
        "wrong_wire_type",
    ),
    Case(
        "v1-sample-value-as-varint",
        "v1",
        cat(ld(1, ld(2, HERE, vi(1, 1), vi(2, 5)))),
        "wrong_wire_type",
    ),
    Case(
        "v1-sample-timestamp-as-fixed64",
        "v1",
        cat(ld(1, ld(2, f64(1), HERE, f64(2)))),
        "wrong_wire_type",
    ),
    Case("v1-exemplar-as-varint", "v1", cat(ld(1, HERE, vi(3, 1))), "wrong_wire_type"),
    Case("v1-exemplar-value-as-varint", "v1", cat(ld(1, ld(3, HERE, vi(2, 1)))), "wrong_wire_type"),
    Case(
        "v1-exemplar-timestamp-as-fixed64", "v1", cat(ld(1, ld(3, HERE, f64(3)))), "wrong_wire_type"
    ),
    Case("v1-exemplar-labels-as-fixed32", "v1", cat(ld(1, ld(3, HERE, f32(1)))), "wrong_wire_type"),
    Case(
        # Canonical exemplar framing (labels, value) up to a timestamp carried as LEN.
        "v1-canonical-exemplar-timestamp-as-len",
        "v1",
        cat(
            ld(
                1,
                ld(1, label(b"a", b"b")),
                ld(3, ld(1, label(b"t", b"x")), f64(2), HERE, ld(3, b"")),
            ),
            _pad(),
        ),
        "wrong_wire_type",
    ),
    Case(
        "v1-canonical-exemplar-label-cut-short",
        "v1",
        cat(
            ld(1, ld(3, ld(1, label(b"t", b"x")), tag(1, LEN), HERE, varint(30), b"\x0a\x01")),
            _pad(),
        ),
        "truncated",
    ),
    Case("v1-histogram-as-fixed64", "v1", cat(ld(1, HERE, f64(4))), "wrong_wire_type"),
    Case(
        "v1-histogram-count-int-as-len",
        "v1",
        cat(ld(1, ld(4, HERE, ld(1, b"x")))),
        "wrong_wire_type",
    ),
    Case(
        "v1-histogram-spans-as-varint",
        "v1",
        cat(ld(1, ld(4, vi(1, 3), HERE, vi(11, 1)))),
        "wrong_wire_type",
    ),
    Case("v1-metadata-type-as-len", "v1", cat(ld(3, HERE, ld(1, b"x"))), "wrong_wire_type"),
    Case(
        "v1-metadata-family-as-varint",
        "v1",
        cat(ld(3, vi(1, 1), HERE, vi(2, 7))),
        "wrong_wire_type",
    ),
    Case(
        "v1-group-for-timeseries",
        "v1",
        cat(HERE, tag(1, SGROUP), tag(1, EGROUP)),
        "wrong_wire_type",
    ),
    Case(
        "v1-group-unknown-field",
        "v1",
        cat(good_series(), HERE, tag(9, SGROUP), tag(9, EGROUP)),
        "wrong_wire_type",
    ),
    Case("v1-end-group-unknown-field", "v1", cat(HERE, tag(9, EGROUP)), "wrong_wire_type"),
    Case(
        "v1-group-inside-timeseries",
        "v1",
        cat(ld(1, HERE, tag(7, SGROUP), tag(7, EGROUP))),
        "wrong_wire_type",
    ),
    Case(
        "v1-group-inside-label",
        "v1",
        cat(ld(1, ld(1, HERE, tag(3, SGROUP), tag(3, EGROUP)))),
        "wrong_wire_type",
    ),
    Case("v2-symbols-as-varint", "v2", cat(HERE, vi(4, 1)), "wrong_wire_type"),
    Case("v2-timeseries-as-fixed64", "v2", cat(v2_symbols(), HERE, f64(5)), "wrong_wire_type"),
    Case(
        "v2-labels-refs-as-fixed64",
        "v2",
        cat(v2_symbols(), ld(5, HERE, f64(1))),
        "wrong_wire_type",
    ),
    Case(
        "v2-labels-refs-unpacked-varints",
        "v2",
        cat(v2_symbols(), ld(5, HERE, vi(1, 1), vi(1, 2))),
        "wrong_wire_type",
    ),
    Case(
        "v2-labels-refs-one-unpacked-varint",
        "v2",
        cat(v2_symbols(), ld(5, HERE, vi(1, 1))),
        "wrong_wire_type",
    ),
    Case(
        "v2-exemplar-refs-unpacked",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1, 2)), ld(4, HERE, vi(1, 3), vi(1, 2)))),
        "wrong_wire_type",
    ),
    Case(
        "v2-sample-as-varint",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1, 2)), HERE, vi(2, 1))),
        "wrong_wire_type",
    ),
    Case(
        "v2-histogram-as-fixed32", "v2", cat(v2_symbols(), ld(5, HERE, f32(3))), "wrong_wire_type"
    ),
    Case(
        "v2-exemplar-timestamp-as-fixed64",
        "v2",
        cat(v2_symbols(), ld(5, ld(4, HERE, f64(3)))),
        "wrong_wire_type",
    ),
    Case(
        "v2-metadata-as-varint", "v2", cat(v2_symbols(), ld(5, HERE, vi(5, 1))), "wrong_wire_type"
    ),
    Case(
        "v2-metadata-type-as-len",
        "v2",
        cat(v2_symbols(), ld(5, ld(5, HERE, ld(1, b"\x01")))),
        "wrong_wire_type",
    ),
    Case(
        "v2-help-ref-as-len",
        "v2",
        cat(v2_symbols(), ld(5, ld(5, HERE, ld(3, b"\x01")))),
        "wrong_wire_type",
    ),
    Case(
        "v2-created-timestamp-as-fixed64",
        "v2",
        cat(v2_symbols(), ld(5, HERE, f64(6))),
        "wrong_wire_type",
    ),
    Case(
        "v2-group-unknown-top-level",
        "v2",
        cat(v2_symbols(), HERE, tag(9, SGROUP), tag(9, EGROUP)),
        "wrong_wire_type",
    ),
    # ---- invalid tags ------------------------------------------------------------------
    Case("v1-field-0-varint", "v1", cat(HERE, b"\x00"), "invalid_tag"),
    Case("v1-field-0-len", "v1", cat(good_series(), HERE, b"\x02\x00"), "invalid_tag"),
    Case("v1-wire-type-6", "v1", cat(HERE, tag(1, 6), b"\x00"), "invalid_tag"),
    Case("v1-wire-type-7", "v1", cat(HERE, tag(1, 7), b"\x00"), "invalid_tag"),
    Case(
        "v1-field-above-2^29-1",
        "v1",
        cat(HERE, varint((1 << 29) << 3 | LEN), b"\x00"),
        "invalid_tag",
    ),
    Case("v1-field-0-in-timeseries", "v1", cat(ld(1, HERE, b"\x02\x00"), _pad()), "invalid_tag"),
    Case("v1-wire-type-7-in-label", "v1", cat(ld(1, ld(1, HERE, tag(2, 7)))), "invalid_tag"),
    Case(
        "v1-wire-type-6-in-sample", "v1", cat(ld(1, ld(2, f64(1), HERE, tag(2, 6)))), "invalid_tag"
    ),
    Case("v1-field-0-in-metadata", "v1", cat(ld(3, HERE, b"\x00\x00")), "invalid_tag"),
    Case("v2-field-0", "v2", cat(v2_symbols(), HERE, b"\x00"), "invalid_tag"),
    Case(
        "v2-wire-type-6-in-series", "v2", cat(v2_symbols(), ld(5, HERE, tag(2, 6))), "invalid_tag"
    ),
    Case(
        "v2-wire-type-7-in-metadata",
        "v2",
        cat(v2_symbols(), ld(5, ld(5, HERE, tag(1, 7)))),
        "invalid_tag",
    ),
    # ---- v2 symbol references ----------------------------------------------------------
    Case(
        "v2-label-value-ref-out-of-range",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1), HERE, varint(4)))),
        "bad_symbol_ref",
    ),
    Case(
        "v2-label-name-ref-out-of-range",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1, 2), HERE, varint(300), packed(2)))),
        "bad_symbol_ref",
    ),
    Case(
        "v2-ref-u64-max",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, HERE, b"\xff" * 9, b"\x01", packed(2)))),
        "bad_symbol_ref",
    ),
    Case(
        "v2-ref-without-symbols",
        "v2",
        cat(ld(5, ld(1, HERE, packed(0), packed(0)))),
        "bad_symbol_ref",
    ),
    Case(
        "v2-ref-in-second-series",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1, 2))), ld(5, ld(1, packed(3), HERE, varint(99)))),
        "bad_symbol_ref",
    ),
    Case(
        "v2-exemplar-ref-out-of-range",
        "v2",
        cat(
            v2_symbols(),
            ld(5, ld(1, packed(1, 2)), ld(4, ld(1, packed(3), HERE, varint(9)), f64(2))),
        ),
        "bad_symbol_ref",
    ),
    Case(
        "v2-help-ref-out-of-range",
        "v2",
        cat(
            v2_symbols(),
            ld(5, ld(1, packed(1, 2)), ld(5, vi(1, 1), tag(3, VARINT), HERE, varint(99))),
        ),
        "bad_symbol_ref",
    ),
    Case(
        "v2-unit-ref-out-of-range",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1, 2)), ld(5, tag(4, VARINT), HERE, varint(1 << 32)))),
        "bad_symbol_ref",
    ),
    # ---- odd labels_refs ---------------------------------------------------------------
    Case(
        "v2-three-label-refs",
        "v2",
        cat(v2_symbols(), ld(5, HERE, ld(1, packed(1, 2, 3)))),
        "odd_label_refs",
    ),
    Case(
        "v2-one-label-ref", "v2", cat(v2_symbols(), ld(5, HERE, ld(1, packed(1)))), "odd_label_refs"
    ),
    Case(
        "v2-odd-refs-after-samples",
        "v2",
        cat(v2_symbols(), ld(5, ld(2, sample()), HERE, ld(1, packed(1, 2, 3, 2, 1)))),
        "odd_label_refs",
    ),
    Case(
        "v2-exemplar-three-refs",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1, 2)), ld(4, HERE, ld(1, packed(3, 2, 1))))),
        "odd_label_refs",
    ),
    # ---- wrong protocol ----------------------------------------------------------------
    Case("v2-ctype-v1-timeseries", "v2", cat(HERE, good_series()), "wrong_protocol"),
    Case("v2-ctype-v1-metadata", "v2", cat(v2_symbols(), HERE, ld(3, vi(1, 1))), "wrong_protocol"),
    Case(
        "v2-ctype-v1-timeseries-after-v2-series",
        "v2",
        cat(v2_symbols(), ld(5, ld(1, packed(1, 2))), HERE, good_series()),
        "wrong_protocol",
    ),
    Case("v1-ctype-v2-symbols", "v1", cat(HERE, v2_symbols()), "wrong_protocol"),
    Case(
        "v1-ctype-v2-timeseries",
        "v1",
        cat(good_series(), HERE, ld(5, ld(1, packed(1, 2)))),
        "wrong_protocol",
    ),
]


def _params() -> Iterator[Any]:
    for c in CASES:
        yield pytest.param(c, id=c.id)


def test_case_table_is_well_formed() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for c in CASES:
        assert c.body.at is not None, c.id
        assert 0 <= c.body.at <= len(c.body.data), c.id
        assert c.id.startswith(c.protocol + "-"), c.id


@pytest.mark.parametrize("encoding", ["identity", "snappy"])
@pytest.mark.parametrize("case", list(_params()))
def test_corrupt_protobuf(case: Case, encoding: str) -> None:
    body = case.body.data if encoding == "identity" else compress(case.body.data)
    ct = V2 if case.protocol == "v2" else None
    raises(
        MalformedProtobufError,
        case.reason,
        lambda: scan_remote_write(body, content_encoding=encoding, content_type=ct),
        offset=case.body.at,
    )


def test_v1_content_type_spellings_agree() -> None:
    """No Content-Type, bare application/x-protobuf and proto=prometheus.WriteRequest: 1.0."""
    body = cat(good_series(), HERE, ld(5, b"")).data
    for ct in (None, "", "application/x-protobuf", V1):
        raises(
            MalformedProtobufError,
            "wrong_protocol",
            functools.partial(scan_id, body, ct),
            offset=len(good_series().data),
        )


def test_the_good_bodies_used_above_scan() -> None:
    """The building blocks are valid on their own, so each case's fault is the only one."""
    s = scan_id(cat(good_series(), _pad()).data)
    assert (s.series, s.samples, s.label_pairs) == (2, 5, 2)
    body = cat(
        v2_symbols(),
        ld(
            5,
            ld(1, packed(1, 2, 3, 2)),
            ld(2, sample()),
            ld(4, ld(1, packed(3, 2)), f64(2)),
            ld(5, vi(1, 1), vi(3, 2), vi(4, 0)),
        ),
    ).data
    s = scan_id(body, V2)
    assert (s.series, s.samples, s.exemplars, s.label_pairs, s.metadata) == (1, 1, 1, 2, 1)
    # Symbols after the series that uses them still resolve (documented in v2.rs).
    s = scan_id(cat(ld(5, ld(1, packed(1, 2))), v2_symbols()).data, V2)
    assert (s.series, s.label_pairs) == (1, 1)


# --------------------------------------------------------------------------------------------
# Truncation of real bodies.
# --------------------------------------------------------------------------------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


@dataclass(frozen=True)
class TopLevel:
    start: int  # offset of the field's tag
    len_at: int  # offset of its length varint
    end: int
    field: int


def top_level_fields(raw: bytes) -> list[TopLevel]:
    """The top-level length-delimited fields of a well-formed body (our own walk)."""
    out, pos = [], 0
    while pos < len(raw):
        key, after_key = read_varint(raw, pos)
        assert key & 7 == LEN, "corpus bodies have only length-delimited top-level fields"
        n, body_start = read_varint(raw, after_key)
        out.append(TopLevel(pos, after_key, body_start + n, key >> 3))
        pos = body_start + n
    assert pos == len(raw)
    return out


COUNTS = ("series", "samples", "histograms", "exemplars", "metadata", "label_pairs", "ingested")


def check_truncations(
    raw: bytes,
    cuts: list[int],
    *,
    ct: str | None,
    series_field: int,
    metadata_field: int | None,
    snappy: bool,
) -> int:
    """Every cut of ``raw`` either fails as truncated at the length varint of the top-level
    field it cuts through, or (cut exactly between two fields) counts exactly the fields
    before it, never more than the whole body. Returns how many cuts scanned cleanly."""
    encoding = "snappy" if snappy else "identity"
    full = scan_remote_write(
        compress(raw) if snappy else raw, content_encoding=encoding, content_type=ct
    )
    fields = top_level_fields(raw)
    starts = [f.start for f in fields]
    clean = 0
    for cut in cuts:
        prefix = raw[:cut]
        body = compress(prefix) if snappy else prefix
        i = bisect.bisect_right(starts, cut) - 1  # the field the cut falls in (or starts)
        if cut == 0 or (i >= 0 and fields[i].start == cut):
            s = scan_remote_write(body, content_encoding=encoding, content_type=ct)
            before = fields[: max(i, 0)] if cut else []
            assert s.series == sum(f.field == series_field for f in before), cut
            if metadata_field is not None:
                assert s.metadata == sum(f.field == metadata_field for f in before), cut
            for k in COUNTS:
                assert getattr(s, k) <= getattr(full, k), (cut, k)
            assert s.decoded_bytes == cut
            clean += 1
            continue
        try:
            s = scan_remote_write(body, content_encoding=encoding, content_type=ct)
        except MalformedProtobufError as e:
            if e.reason != "truncated" or e.offset != fields[i].len_at:
                check_error(e, MalformedProtobufError, "truncated", offset=fields[i].len_at)
        else:
            pytest.fail(f"cut at {cut} (inside field at {fields[i].start}) scanned as {s}")
    return clean


def _decoded(corpus: list[Any], name: str) -> bytes:
    (f,) = [f for f in corpus if f.name == name]
    raw = decompress(f.body)
    assert len(raw) == f.expected["raw_bytes"]
    return raw


# A series body (500 series, ~57 KB decoded), a metadata body (209 entries, ~22 KB) and a
# big one with exemplars (2000 series, ~388 KB; sampled).
SERIES_BODY = "scrape-500-08.snappy"
METADATA_BODY = "app-2000-02.snappy"
BIG_BODY = "app-2000-01.snappy"


@pytest.mark.parametrize("snappy", [False, True], ids=["identity", "snappy"])
@pytest.mark.parametrize("name", [SERIES_BODY, METADATA_BODY])
def test_truncated_decoded_body_every_byte(corpus: list[Any], name: str, snappy: bool) -> None:
    raw = _decoded(corpus, name)
    clean = check_truncations(
        raw, list(range(len(raw))), ct=None, series_field=1, metadata_field=3, snappy=snappy
    )
    assert clean == len(top_level_fields(raw))


@pytest.mark.parametrize("snappy", [False, True], ids=["identity", "snappy"])
def test_truncated_big_body_sampled(corpus: list[Any], snappy: bool) -> None:
    raw = _decoded(corpus, BIG_BODY)
    rng = random.Random(20240601)
    fields = top_level_fields(raw)
    cuts = rng.sample(range(len(raw)), 2000)
    # Cuts at and around a few field boundaries, where off-by-one mistakes live.
    for f in rng.sample(fields, 50):
        cuts += [f.start - 1, f.start, f.start + 1, f.len_at + 1, f.end - 1]
    check_truncations(
        raw, sorted(set(cuts)), ct=None, series_field=1, metadata_field=3, snappy=snappy
    )


def to_v2(pb: Any, raw_v1: bytes) -> bytes:
    """The same series as a remote write 2.0 body, via the reference decoder."""
    req = pb.WriteRequest.FromString(raw_v1)
    symbols: dict[str, int] = {"": 0}

    def ref(s: str) -> int:
        return symbols.setdefault(s, len(symbols))

    out = pb.v2.Request()
    for ts in req.timeseries:
        new = out.timeseries.add()
        for lb in ts.labels:
            new.labels_refs.extend([ref(lb.name), ref(lb.value)])
        for sm in ts.samples:
            new.samples.add(value=sm.value, timestamp=sm.timestamp)
    out.symbols.extend(symbols)
    return bytes(out.SerializeToString())


@pytest.mark.parametrize("snappy", [False, True], ids=["identity", "snappy"])
def test_truncated_v2_body_every_byte(corpus: list[Any], pb: Any, snappy: bool) -> None:
    raw = to_v2(pb, _decoded(corpus, SERIES_BODY))
    full = scan_id(raw, V2)
    ref = pb.v2.Request.FromString(raw)
    assert full.series == len(ref.timeseries)
    assert full.samples == sum(len(t.samples) for t in ref.timeseries)
    assert full.label_pairs == sum(len(t.labels_refs) // 2 for t in ref.timeseries)
    check_truncations(
        raw, list(range(len(raw))), ct=V2, series_field=5, metadata_field=None, snappy=snappy
    )


@pytest.mark.parametrize("name", [SERIES_BODY, METADATA_BODY, BIG_BODY])
def test_truncated_compressed_body_every_byte(corpus: list[Any], name: str) -> None:
    """A snappy block cut anywhere is corrupt: it can never decode to its declared length."""
    (f,) = [f for f in corpus if f.name == name]
    body = f.body
    cuts = (
        range(len(body))
        if len(body) < 20_000
        else sorted(random.Random(7).sample(range(len(body)), 5000))
    )
    for cut in cuts:
        try:
            s = scan_remote_write(body[:cut])
        except CompressionError as e:
            check_error(e, CompressionError, "corrupt_compression")
        else:
            pytest.fail(f"snappy body cut at {cut} of {len(body)} scanned as {s}")


# --------------------------------------------------------------------------------------------
# Flipped bytes, checked against the reference decoder.
# --------------------------------------------------------------------------------------------


def reference_counts(msg: Any) -> dict[str, int]:
    """Count a decoded ``prometheus.WriteRequest`` the way the core does: label_pairs and the
    label maxima are over series labels only (not exemplar labels), lengths in bytes."""
    ts = msg.timeseries
    names = [len(lb.name.encode()) for t in ts for lb in t.labels]
    values = [len(lb.value.encode()) for t in ts for lb in t.labels]
    return {
        "series": len(ts),
        "samples": sum(len(t.samples) for t in ts),
        "exemplars": sum(len(t.exemplars) for t in ts),
        "histograms": sum(len(t.histograms) for t in ts),
        "metadata": len(msg.metadata),
        "label_pairs": sum(len(t.labels) for t in ts),
        "max_labels_per_series": max((len(t.labels) for t in ts), default=0),
        "max_label_name_length": max(names, default=0),
        "max_label_value_length": max(values, default=0),
    }


def core_counts(s: WriteStats) -> dict[str, int]:
    return {k: v for k, v in s.as_dict().items() if k not in ("decoded_bytes", "ingested")}


@pytest.mark.parametrize(
    ("name", "n_positions"), [(SERIES_BODY, 1500), (METADATA_BODY, 800), (BIG_BODY, 400)]
)
def test_flipped_bytes_agree_with_reference(
    corpus: list[Any], pb: Any, name: str, n_positions: int
) -> None:
    from google.protobuf.message import DecodeError

    raw = _decoded(corpus, name)
    assert core_counts(scan_id(raw)) == reference_counts(pb.WriteRequest.FromString(raw))
    rng = random.Random(zlib.crc32(name.encode()))
    positions = sorted(
        set(range(min(200, len(raw)))) | set(rng.sample(range(len(raw)), n_positions))
    )
    both_ok = core_only = ref_only = 0
    mismatches: list[str] = []
    for pos in positions:
        for flipped in (raw[pos] ^ 0xFF, (raw[pos] + 1) & 0xFF):
            body = raw[:pos] + bytes([flipped]) + raw[pos + 1 :]
            core: WriteStats | None = None
            err: RemoteWriteError | None = None
            try:
                core = scan_id(body)
            except RemoteWriteError as e:
                err = e
            if err is not None:
                # Only protobuf faults are possible in an identity body of this size.
                assert type(err) is MalformedProtobufError, err
                assert err.offset is not None
                assert 0 <= err.offset <= len(body)
                assert str(err).startswith(f"malformed protobuf at byte {err.offset}: ")
            try:
                ref = pb.WriteRequest.FromString(body)
            except DecodeError:
                ref = None
            if core is not None and ref is not None:
                both_ok += 1
                got, want = core_counts(core), reference_counts(ref)
                if got != want:
                    mismatches.append(f"byte {pos} -> {flipped:#04x}: core {got} reference {want}")
            elif core is not None:
                core_only += 1
            elif ref is not None:
                ref_only += 1
    assert not mismatches, "\n".join(mismatches[:10])
    # The comparison ran on a meaningful number of mutated bodies.
    assert both_ok > len(positions) // 4, (both_ok, core_only, ref_only)


def test_flipped_compressed_bytes_never_escape(corpus: list[Any]) -> None:
    (f,) = [f for f in corpus if f.name == SERIES_BODY]
    body = f.body
    rng = random.Random(3)
    for pos in sorted(set(range(32)) | set(rng.sample(range(len(body)), 1500))):
        for flipped in (body[pos] ^ 0xFF, (body[pos] + 1) & 0xFF):
            mutated = body[:pos] + bytes([flipped]) + body[pos + 1 :]
            err: RemoteWriteError | None = None
            try:
                scan_remote_write(mutated)
            except RemoteWriteError as e:
                err = e
            if err is not None:
                assert type(err) in (CompressionError, DecodedTooLargeError, MalformedProtobufError)
                assert "\n" not in str(err)


# --------------------------------------------------------------------------------------------
# Snappy length lies and the decoded-size cap.
# --------------------------------------------------------------------------------------------


def with_header(block: bytes, declared: int) -> bytes:
    """``block`` with its length varint replaced by ``declared``."""
    _, data_start = read_varint(block, 0)
    return varint(declared) + block[data_start:]


@pytest.mark.parametrize("delta", [1, 2, 1000, -1, -2, -1000], ids=lambda d: f"{d:+d}")
def test_snappy_declared_length_lies(corpus: list[Any], delta: int) -> None:
    (f,) = [f for f in corpus if f.name == SERIES_BODY]
    true_len = f.expected["raw_bytes"]
    assert read_varint(f.body, 0)[0] == true_len
    body = with_header(f.body, true_len + delta)
    raises(CompressionError, "corrupt_compression", lambda: scan_remote_write(body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x80", id="header-cut-1"),
        pytest.param(b"\xff\xff\xff", id="header-cut-3"),
        pytest.param(b"\x85\x80\x80\x80\x80\x00" + b"\x10hello", id="header-6-bytes"),
        pytest.param(b"\x80" * 10 + b"\x00", id="header-11-bytes"),
        pytest.param(b"\xff\xff\xff\xff\x7f" + b"\x00" * 100, id="header-above-2^32-1"),
        pytest.param(b"\x00\x00", id="declared-0-with-data"),
        pytest.param(b"\x05\x00", id="literal-past-input"),
        pytest.param(b"\x02\x0c\x0a\x00\x0a\x00", id="literal-past-declared"),
        pytest.param(b"\x05\x01\x05", id="copy-truncated"),
        pytest.param(b"\x08\x05\x01", id="copy-before-start"),
        pytest.param(b"\x04\x04\x0a\x00\x05\x02", id="copy-past-declared"),
    ],
)
def test_corrupt_snappy(body: bytes) -> None:
    raises(CompressionError, "corrupt_compression", lambda: scan_remote_write(body))


def test_snappy_empty_block_is_an_empty_request() -> None:
    s = scan_remote_write(b"\x00")
    assert s.series == s.decoded_bytes == s.ingested == 0


def test_4gib_declared_refused_from_the_header() -> None:
    """10 KB declaring 4 GiB - 1: refused from the header alone (no 4 GiB buffer; the test
    would take seconds and gigabytes otherwise)."""
    body = b"\xff\xff\xff\xff\x0f" + bytes(range(256)) * 40
    assert read_varint(body, 0)[0] == 4294967295
    e = raises(DecodedTooLargeError, "too_large", lambda: scan_remote_write(body))
    assert "4294967295" in str(e)
    assert str(DEFAULT_CAP) in str(e)
    assert mimir_edge.DEFAULT_MAX_DECODED_BYTES == DEFAULT_CAP
    # The cap wins even over what snappy itself would refuse as corrupt later.
    e = raises(
        DecodedTooLargeError,
        "too_large",
        lambda: scan_remote_write(body, max_decoded_bytes=1 << 31),
    )
    assert str(1 << 31) in str(e)


def test_cap_is_respected() -> None:
    one_mib = b"\x0a\x00" * (1 << 19)  # 2^19 empty series, 1 MiB decoded
    block = compress(one_mib)
    assert len(block) < 100_000
    e = raises(
        DecodedTooLargeError, "too_large", lambda: scan_remote_write(block, max_decoded_bytes=1024)
    )
    assert re.search(r"\b1048576\b", str(e)), str(e)
    assert re.search(r"\b1024\b", str(e)), str(e)
    raises(
        DecodedTooLargeError,
        "too_large",
        lambda: scan_remote_write(block, max_decoded_bytes=(1 << 20) - 1),
    )
    assert scan_remote_write(block, max_decoded_bytes=1 << 20).series == 1 << 19
    # A header lying about a 1 MiB body is refused before the data is looked at.
    lie = varint(1 << 20) + b"\x00" * 10
    raises(
        DecodedTooLargeError, "too_large", lambda: scan_remote_write(lie, max_decoded_bytes=1024)
    )
    # Identity bodies are capped by their own length.
    raises(
        DecodedTooLargeError, "too_large", lambda: scan_id(one_mib, max_decoded_bytes=(1 << 20) - 1)
    )
    assert scan_id(one_mib, max_decoded_bytes=1 << 20).series == 1 << 19
    raises(DecodedTooLargeError, "too_large", lambda: scan_id(b"\x0a\x00", max_decoded_bytes=0))


# --------------------------------------------------------------------------------------------
# Long runs of empty and unknown fields.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["identity", "snappy"])
def test_two_million_empty_series(encoding: str) -> None:
    n = 2_000_000
    raw = b"\x0a\x00" * n
    body = raw if encoding == "identity" else compress(raw)
    s = scan_remote_write(body, content_encoding=encoding)
    assert (s.series, s.samples, s.label_pairs, s.max_labels_per_series) == (n, 0, 0, 0)
    assert s.decoded_bytes == len(raw)


def test_two_million_empty_metadata() -> None:
    n = 2_000_000
    s = scan_id(b"\x1a\x00" * n)
    assert (s.series, s.metadata, s.ingested) == (0, n, n)


def test_million_empty_labels_in_one_series() -> None:
    n = 1_000_000
    raw = ld(1, b"\x0a\x00" * n).data
    s = scan_remote_write(compress(raw))
    assert (s.series, s.label_pairs, s.max_labels_per_series) == (1, n, n)
    assert (s.max_label_name_length, s.max_label_value_length) == (0, 0)


def test_v2_million_empty_series() -> None:
    n = 1_000_000
    s = scan_id(b"\x2a\x00" * n, V2)
    assert (s.series, s.label_pairs, s.metadata) == (n, 0, 0)


def test_long_runs_of_unknown_fields_are_skipped(pb: Any) -> None:
    # Unknown fields of every wire type, the largest field number among them.
    unknown = vi(15, 1) + f64(16) + ld(17, b"xyz").data + f32(18) + vi((1 << 29) - 1, 1)
    n = 200_000
    body = cat(
        (unknown + vi(2, 7)) * n,  # WriteRequest field 2 is reserved: unknown at the top level
        ld(
            1,
            unknown * 1000,
            ld(1, unknown * 10, label(b"__name__", b"up"), unknown),
            unknown * 10,
            ld(2, unknown, sample()),
        ),
        unknown * 1000,
        ld(3, unknown * 10, vi(1, 1), ld(2, b"up")),
    ).data
    s = scan_remote_write(compress(body))
    assert (s.series, s.samples, s.label_pairs, s.metadata) == (1, 1, 1, 1)
    assert (s.max_label_name_length, s.max_label_value_length) == (8, 2)
    assert core_counts(s) == reference_counts(pb.WriteRequest.FromString(body))

    body2 = cat(
        (unknown + vi(2, 7)) * n,  # Request fields 1 to 3 are reserved; 2 is unknown to both
        v2_symbols(),
        ld(
            5,
            unknown * 100,
            ld(1, packed(1, 2)),
            ld(2, unknown, sample()),
            ld(5, unknown, vi(1, 2)),
        ),
    ).data
    s = scan_id(body2, V2)
    assert (s.series, s.samples, s.label_pairs, s.metadata) == (1, 1, 1, 1)


# --------------------------------------------------------------------------------------------
# Unsupported Content-Encoding / Content-Type.
# --------------------------------------------------------------------------------------------

GOOD_BODY = compress(good_series().data)


@pytest.mark.parametrize(
    "encoding",
    ["gzip", "", " ", "deflate", "zstd", "snappy, gzip", "x-snappy-framed", "gzip\r\nX-Evil: 1"],
)
def test_unsupported_encoding(encoding: str) -> None:
    raises(
        UnsupportedFormatError,
        "unsupported_encoding",
        lambda: scan_remote_write(GOOD_BODY, content_encoding=encoding),
        prefix="unsupported content encoding: ",
    )


@pytest.mark.parametrize(
    "ct",
    [
        "application/json",
        "text/plain",
        "application/x-protobuf;proto=foo.Bar",
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        "application/protobuf",
        "application/x-protobuf;junk",
        "text/plain\nX-Evil: 1",
    ],
)
def test_unsupported_content_type(ct: str) -> None:
    raises(
        UnsupportedFormatError,
        "unsupported_content_type",
        lambda: scan_remote_write(GOOD_BODY, content_type=ct),
        prefix="unsupported content type: ",
    )


def test_unsupported_is_decided_before_the_body_is_read() -> None:
    garbage = b"\xff" * 64
    raises(
        UnsupportedFormatError,
        "unsupported_encoding",
        lambda: scan_remote_write(garbage, content_encoding="gzip"),
        prefix="unsupported content encoding: ",
    )
    raises(
        UnsupportedFormatError,
        "unsupported_content_type",
        lambda: scan_remote_write(garbage, content_type="application/json"),
        prefix="unsupported content type: ",
    )


@pytest.mark.parametrize("encoding", ["snappy", "SNAPPY", " snappy ", "identity"])
@pytest.mark.parametrize("ct", [None, "", "application/x-protobuf", V1, V2])
def test_supported_formats_accepted(encoding: str, ct: str | None) -> None:
    raw = (
        good_series().data
        if ct != V2
        else cat(v2_symbols(), ld(5, ld(1, packed(1, 2)), ld(2, sample()))).data
    )
    body = raw if encoding == "identity" else compress(raw)
    s = scan_remote_write(body, content_encoding=encoding, content_type=ct)
    assert (s.series, s.samples) == (1, 1)


def test_exception_hierarchy() -> None:
    for cls in (
        CompressionError,
        DecodedTooLargeError,
        MalformedProtobufError,
        UnsupportedFormatError,
    ):
        assert issubclass(cls, RemoteWriteError)
        assert issubclass(cls, ValueError)
    assert RemoteWriteError.http_status == 400
    assert UnsupportedFormatError.http_status == 415
