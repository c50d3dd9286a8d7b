//! Corrupt remote-write bodies against the crate API: every fault maps to the exact
//! `Error` variant, `ProtoFault` and offset, and nothing panics on any input.
//!
//! Bodies are built with the tiny encoder below. A `HERE` marker placed while building a
//! body records the byte the error must point at, so expected offsets come from the
//! construction, never from the scanner's output. Offset conventions (see src/wire.rs):
//! truncated length-delimited value → its length varint; truncated / bad varint → the
//! varint's first byte; truncated fixed-width value, wrong wire type, invalid tag, wrong
//! protocol, odd `labels_refs` → the field's tag; bad symbol ref → the ref varint.
//!
//! Known core bugs live in `KNOWN_BUGS`: a test asserts they are still present (the Rust
//! equivalent of a strict xfail), so fixing one fails that test until the case moves into
//! the main table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mimir_edge_native::snappy::{compress, decompress};
use mimir_edge_native::{scan, scan_decoded, Encoding, Error, ProtoFault, Protocol, WriteStats};
use proptest::prelude::*;

// ------------------------------------------------------------------------------------------
// Tiny protobuf encoder with a position marker.
// ------------------------------------------------------------------------------------------

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const FIXED32: u8 = 5;

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn key(field: u64, wire_type: u8) -> Vec<u8> {
    varint(field << 3 | u64::from(wire_type))
}

fn vi(field: u64, n: u64) -> Vec<u8> {
    let mut v = key(field, VARINT);
    v.extend(varint(n));
    v
}

fn f64f(field: u64) -> Vec<u8> {
    let mut v = key(field, FIXED64);
    v.extend(1.0f64.to_le_bytes());
    v
}

fn f32f(field: u64) -> Vec<u8> {
    let mut v = key(field, FIXED32);
    v.extend([0u8; 4]);
    v
}

fn packed(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|&v| varint(v)).collect()
}

/// Bytes plus the offset of the `HERE` marker, if one was placed.
#[derive(Clone, Debug, Default)]
struct Enc {
    data: Vec<u8>,
    at: Option<usize>,
}

enum P {
    B(Vec<u8>),
    E(Enc),
    Here,
}

const HERE: P = P::Here;

impl From<Vec<u8>> for P {
    fn from(v: Vec<u8>) -> Self {
        Self::B(v)
    }
}

impl From<&[u8]> for P {
    fn from(v: &[u8]) -> Self {
        Self::B(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for P {
    fn from(v: &[u8; N]) -> Self {
        Self::B(v.to_vec())
    }
}

impl<const N: usize> From<[u8; N]> for P {
    fn from(v: [u8; N]) -> Self {
        Self::B(v.to_vec())
    }
}

impl From<Enc> for P {
    fn from(e: Enc) -> Self {
        Self::E(e)
    }
}

fn mark(at: &mut Option<usize>, offset: usize) {
    assert!(at.is_none(), "only one HERE per body");
    *at = Some(offset);
}

fn cat_parts(parts: Vec<P>) -> Enc {
    let mut out = Enc::default();
    for p in parts {
        match p {
            P::Here => mark(&mut out.at, out.data.len()),
            P::E(e) => {
                if let Some(a) = e.at {
                    mark(&mut out.at, out.data.len() + a);
                }
                out.data.extend(e.data);
            }
            P::B(b) => out.data.extend(b),
        }
    }
    out
}

macro_rules! cat {
    ($($p:expr),* $(,)?) => { cat_parts(vec![$(P::from($p)),*]) };
}

/// A length-delimited field whose length is the true length of its content.
macro_rules! ld {
    ($field:expr $(, $p:expr)* $(,)?) => { ld_enc($field, cat!($($p),*)) };
}

fn ld_enc(field: u64, body: Enc) -> Enc {
    let len = body.data.len() as u64;
    cat!(key(field, LEN), varint(len), body)
}

fn label(name: &[u8], value: &[u8]) -> Enc {
    cat!(ld!(1, name), ld!(2, value))
}

fn sample() -> Enc {
    cat!(f64f(1), vi(2, 1_700_000_000_000))
}

/// A valid top-level v1 TimeSeries field with a name label and `n` samples.
fn good_series(n: usize) -> Enc {
    let mut parts = vec![P::from(ld!(1, label(b"__name__", b"up")))];
    for _ in 0..n {
        parts.push(P::from(ld!(2, sample())));
    }
    ld_enc(1, cat_parts(parts))
}

/// A valid series after a broken one, so a length that overruns its enclosing message still
/// fits inside the body (the bound must be the message, not the buffer).
fn pad() -> Enc {
    good_series(4)
}

/// v2 symbols: 0 "", 1 "__name__", 2 "up", 3 "job".
fn syms() -> Enc {
    cat!(
        ld!(4, b""),
        ld!(4, b"__name__"),
        ld!(4, b"up"),
        ld!(4, b"job")
    )
}

// ------------------------------------------------------------------------------------------
// The table.
// ------------------------------------------------------------------------------------------

struct Case {
    name: &'static str,
    protocol: Protocol,
    body: Enc,
    fault: ProtoFault,
}

fn case(name: &'static str, protocol: Protocol, body: Enc, fault: ProtoFault) -> Case {
    Case {
        name,
        protocol,
        body,
        fault,
    }
}

fn cases() -> Vec<Case> {
    use ProtoFault::{
        BadSymbolRef, BadVarint, InvalidTag, OddLabelRefs, Truncated, WrongProtocol, WrongWireType,
    };
    use Protocol::{V1, V2};
    let ff9 = [0xffu8; 9];
    vec![
        // -- truncated ---------------------------------------------------------------------
        case(
            "top-level len past end",
            V1,
            cat!(key(1, LEN), HERE, varint(5), b"\0\0"),
            Truncated,
        ),
        case(
            "top-level multibyte len past end",
            V1,
            cat!(
                good_series(1),
                key(1, LEN),
                HERE,
                varint(300),
                vec![0u8; 100]
            ),
            Truncated,
        ),
        case(
            "metadata len past end",
            V1,
            cat!(key(3, LEN), HERE, varint(50), b"\x08\x01"),
            Truncated,
        ),
        case(
            "label longer than timeseries",
            V1,
            cat!(ld!(1, key(1, LEN), HERE, varint(9), ld!(1, b"abc")), pad()),
            Truncated,
        ),
        case(
            "sample longer than timeseries",
            V1,
            cat!(
                ld!(
                    1,
                    ld!(1, label(b"a", b"b")),
                    key(2, LEN),
                    HERE,
                    varint(9),
                    b"\x09\0\0\0"
                ),
                pad()
            ),
            Truncated,
        ),
        case(
            "label name longer than label",
            V1,
            cat!(ld!(1, ld!(1, key(1, LEN), HERE, varint(16), b"ab")), pad()),
            Truncated,
        ),
        case(
            "label value longer than label",
            V1,
            cat!(
                ld!(1, ld!(1, ld!(1, b"a"), key(2, LEN), HERE, varint(32), b"b")),
                pad()
            ),
            Truncated,
        ),
        case(
            "exemplar label longer than exemplar",
            V1,
            cat!(
                ld!(
                    1,
                    ld!(3, key(1, LEN), HERE, varint(20), b"\x0a\x01a", f64f(2))
                ),
                pad()
            ),
            Truncated,
        ),
        case(
            "metadata help longer than metadata",
            V1,
            cat!(
                ld!(3, vi(1, 1), key(4, LEN), HERE, varint(40), b"help"),
                pad()
            ),
            Truncated,
        ),
        case(
            "fixed64 cut short",
            V1,
            cat!(ld!(1, ld!(2, HERE, key(1, FIXED64), b"\0\0\0")), pad()),
            Truncated,
        ),
        case(
            "unknown fixed32 cut short",
            V1,
            cat!(
                ld!(1, ld!(1, label(b"a", b"b")), HERE, key(9, FIXED32), b"\0"),
                pad()
            ),
            Truncated,
        ),
        case(
            "varint cut by message end",
            V1,
            cat!(ld!(1, ld!(2, key(2, VARINT), HERE, b"\xff")), pad()),
            Truncated,
        ),
        case(
            "tag varint cut at body end",
            V1,
            cat!(good_series(1), HERE, b"\x80"),
            Truncated,
        ),
        case(
            "tag without value",
            V1,
            cat!(good_series(1), key(1, LEN), HERE),
            Truncated,
        ),
        case(
            "v2 symbol len past end",
            V2,
            cat!(syms(), key(4, LEN), HERE, varint(10), b"abc"),
            Truncated,
        ),
        case(
            "v2 refs longer than series",
            V2,
            cat!(
                syms(),
                ld!(5, key(1, LEN), HERE, varint(6), packed(&[1, 2])),
                ld!(5, ld!(1, packed(&[1, 2, 3, 2])))
            ),
            Truncated,
        ),
        // -- bad varints -------------------------------------------------------------------
        case(
            "tag 11 bytes of 0x80",
            V1,
            cat!(HERE, vec![0x80u8; 11]),
            BadVarint,
        ),
        case(
            "len 11 bytes",
            V1,
            cat!(key(1, LEN), HERE, vec![0x80u8; 10], b"\0"),
            BadVarint,
        ),
        case(
            "len 10th byte 2",
            V1,
            cat!(key(1, LEN), HERE, ff9, b"\x02"),
            BadVarint,
        ),
        case(
            "sample timestamp 10th byte 2 (no value)",
            V1,
            cat!(ld!(1, ld!(2, key(2, VARINT), HERE, ff9, b"\x02")), pad()),
            BadVarint,
        ),
        case(
            "sample timestamp 11 bytes",
            V1,
            cat!(
                ld!(
                    1,
                    ld!(2, f64f(1), key(2, VARINT), HERE, vec![0x80u8; 10], b"\0")
                ),
                pad()
            ),
            BadVarint,
        ),
        case(
            "exemplar timestamp 10th byte 2",
            V1,
            cat!(
                ld!(1, ld!(3, key(3, VARINT), HERE, ff9, b"\x02", f64f(2))),
                pad()
            ),
            BadVarint,
        ),
        case(
            "metadata type 10th byte 0x7f",
            V1,
            cat!(ld!(3, key(1, VARINT), HERE, ff9, b"\x7f")),
            BadVarint,
        ),
        case(
            "v2 label ref 10th byte 2",
            V2,
            cat!(syms(), ld!(5, ld!(1, packed(&[1]), HERE, ff9, b"\x02"))),
            BadVarint,
        ),
        // -- wrong wire types --------------------------------------------------------------
        case(
            "timeseries as varint",
            V1,
            cat!(HERE, vi(1, 5)),
            WrongWireType,
        ),
        case(
            "timeseries as fixed32",
            V1,
            cat!(good_series(1), HERE, f32f(1)),
            WrongWireType,
        ),
        case(
            "metadata as fixed64",
            V1,
            cat!(HERE, f64f(3)),
            WrongWireType,
        ),
        case(
            "labels as varint",
            V1,
            cat!(ld!(1, HERE, vi(1, 1)), pad()),
            WrongWireType,
        ),
        case(
            "label name as fixed64",
            V1,
            cat!(ld!(1, ld!(1, HERE, f64f(1), ld!(2, b"v"))), pad()),
            WrongWireType,
        ),
        case(
            "label value as fixed32",
            V1,
            cat!(ld!(1, ld!(1, ld!(1, b"n"), HERE, f32f(2))), pad()),
            WrongWireType,
        ),
        case(
            "sample as varint",
            V1,
            cat!(ld!(1, ld!(1, label(b"a", b"b")), HERE, vi(2, 3)), pad()),
            WrongWireType,
        ),
        case(
            "sample value as varint",
            V1,
            cat!(ld!(1, ld!(2, HERE, vi(1, 1), vi(2, 5)))),
            WrongWireType,
        ),
        case(
            "sample timestamp as fixed64",
            V1,
            cat!(ld!(1, ld!(2, f64f(1), HERE, f64f(2)))),
            WrongWireType,
        ),
        case(
            "exemplar as varint",
            V1,
            cat!(ld!(1, HERE, vi(3, 1))),
            WrongWireType,
        ),
        case(
            "canonical exemplar, timestamp as len",
            V1,
            cat!(
                ld!(
                    1,
                    ld!(1, label(b"a", b"b")),
                    ld!(3, ld!(1, label(b"t", b"x")), f64f(2), HERE, ld!(3, b""))
                ),
                pad()
            ),
            WrongWireType,
        ),
        case(
            "canonical exemplar, label cut short",
            V1,
            cat!(
                ld!(
                    1,
                    ld!(
                        3,
                        ld!(1, label(b"t", b"x")),
                        key(1, LEN),
                        HERE,
                        varint(30),
                        b"\x0a\x01"
                    )
                ),
                pad()
            ),
            Truncated,
        ),
        case(
            "exemplar value as varint",
            V1,
            cat!(ld!(1, ld!(3, HERE, vi(2, 1)))),
            WrongWireType,
        ),
        case(
            "histogram as fixed64",
            V1,
            cat!(ld!(1, HERE, f64f(4))),
            WrongWireType,
        ),
        case(
            "histogram count_int as len",
            V1,
            cat!(ld!(1, ld!(4, HERE, ld!(1, b"x")))),
            WrongWireType,
        ),
        case(
            "metadata type as len",
            V1,
            cat!(ld!(3, HERE, ld!(1, b"x"))),
            WrongWireType,
        ),
        case(
            "group for timeseries",
            V1,
            cat!(HERE, key(1, SGROUP), key(1, EGROUP)),
            WrongWireType,
        ),
        case(
            "group unknown field",
            V1,
            cat!(good_series(1), HERE, key(9, SGROUP), key(9, EGROUP)),
            WrongWireType,
        ),
        case(
            "end group unknown field",
            V1,
            cat!(HERE, key(9, EGROUP)),
            WrongWireType,
        ),
        case(
            "group inside label",
            V1,
            cat!(ld!(1, ld!(1, HERE, key(3, SGROUP), key(3, EGROUP)))),
            WrongWireType,
        ),
        case(
            "v2 symbols as varint",
            V2,
            cat!(HERE, vi(4, 1)),
            WrongWireType,
        ),
        case(
            "v2 timeseries as fixed64",
            V2,
            cat!(syms(), HERE, f64f(5)),
            WrongWireType,
        ),
        case(
            "v2 labels_refs unpacked varints",
            V2,
            cat!(syms(), ld!(5, HERE, vi(1, 1), vi(1, 2))),
            WrongWireType,
        ),
        case(
            "v2 one unpacked label ref",
            V2,
            cat!(syms(), ld!(5, HERE, vi(1, 1))),
            WrongWireType,
        ),
        case(
            "v2 exemplar refs unpacked",
            V2,
            cat!(
                syms(),
                ld!(5, ld!(1, packed(&[1, 2])), ld!(4, HERE, vi(1, 3), vi(1, 2)))
            ),
            WrongWireType,
        ),
        case(
            "v2 labels_refs as fixed64",
            V2,
            cat!(syms(), ld!(5, HERE, f64f(1))),
            WrongWireType,
        ),
        case(
            "v2 sample as varint",
            V2,
            cat!(syms(), ld!(5, ld!(1, packed(&[1, 2])), HERE, vi(2, 1))),
            WrongWireType,
        ),
        case(
            "v2 metadata type as len",
            V2,
            cat!(syms(), ld!(5, ld!(5, HERE, ld!(1, b"\x01")))),
            WrongWireType,
        ),
        case(
            "v2 help_ref as len",
            V2,
            cat!(syms(), ld!(5, ld!(5, HERE, ld!(3, b"\x01")))),
            WrongWireType,
        ),
        case(
            "v2 created_timestamp as fixed64",
            V2,
            cat!(syms(), ld!(5, HERE, f64f(6))),
            WrongWireType,
        ),
        // -- invalid tags ------------------------------------------------------------------
        case("field 0", V1, cat!(HERE, b"\x00"), InvalidTag),
        case(
            "field 0 len after series",
            V1,
            cat!(good_series(1), HERE, b"\x02\x00"),
            InvalidTag,
        ),
        case("wire type 6", V1, cat!(HERE, key(1, 6), b"\0"), InvalidTag),
        case("wire type 7", V1, cat!(HERE, key(1, 7), b"\0"), InvalidTag),
        case(
            "field above 2^29-1",
            V1,
            cat!(HERE, key(1 << 29, LEN), b"\0"),
            InvalidTag,
        ),
        case("tag u64::MAX", V1, cat!(HERE, ff9, b"\x01"), InvalidTag),
        case(
            "field 0 in timeseries",
            V1,
            cat!(ld!(1, HERE, b"\x02\x00"), pad()),
            InvalidTag,
        ),
        case(
            "wire type 7 in label",
            V1,
            cat!(ld!(1, ld!(1, HERE, key(2, 7)))),
            InvalidTag,
        ),
        case(
            "wire type 6 in sample",
            V1,
            cat!(ld!(1, ld!(2, f64f(1), HERE, key(2, 6)))),
            InvalidTag,
        ),
        case(
            "v2 wire type 7 in metadata",
            V2,
            cat!(syms(), ld!(5, ld!(5, HERE, key(1, 7)))),
            InvalidTag,
        ),
        // -- v2 symbol refs ----------------------------------------------------------------
        case(
            "v2 label value ref out of range",
            V2,
            cat!(syms(), ld!(5, ld!(1, packed(&[1]), HERE, varint(4)))),
            BadSymbolRef,
        ),
        case(
            "v2 label name ref out of range",
            V2,
            cat!(
                syms(),
                ld!(5, ld!(1, packed(&[1, 2]), HERE, varint(300), packed(&[2])))
            ),
            BadSymbolRef,
        ),
        case(
            "v2 ref u64::MAX",
            V2,
            cat!(syms(), ld!(5, ld!(1, HERE, ff9, b"\x01", packed(&[2])))),
            BadSymbolRef,
        ),
        case(
            "v2 ref without symbols",
            V2,
            cat!(ld!(5, ld!(1, HERE, packed(&[0, 0])))),
            BadSymbolRef,
        ),
        case(
            "v2 exemplar ref out of range",
            V2,
            cat!(
                syms(),
                ld!(
                    5,
                    ld!(1, packed(&[1, 2])),
                    ld!(4, ld!(1, packed(&[3]), HERE, varint(9)), f64f(2))
                )
            ),
            BadSymbolRef,
        ),
        case(
            "v2 help_ref out of range",
            V2,
            cat!(
                syms(),
                ld!(
                    5,
                    ld!(1, packed(&[1, 2])),
                    ld!(5, vi(1, 1), key(3, VARINT), HERE, varint(99))
                )
            ),
            BadSymbolRef,
        ),
        case(
            "v2 unit_ref out of range",
            V2,
            cat!(
                syms(),
                ld!(5, ld!(5, key(4, VARINT), HERE, varint(1 << 32)))
            ),
            BadSymbolRef,
        ),
        // -- odd labels_refs ---------------------------------------------------------------
        case(
            "v2 three label refs",
            V2,
            cat!(syms(), ld!(5, HERE, ld!(1, packed(&[1, 2, 3])))),
            OddLabelRefs,
        ),
        case(
            "v2 one label ref",
            V2,
            cat!(syms(), ld!(5, HERE, ld!(1, packed(&[1])))),
            OddLabelRefs,
        ),
        case(
            "v2 exemplar three refs",
            V2,
            cat!(
                syms(),
                ld!(
                    5,
                    ld!(1, packed(&[1, 2])),
                    ld!(4, HERE, ld!(1, packed(&[3, 2, 1])))
                )
            ),
            OddLabelRefs,
        ),
        // -- wrong protocol ----------------------------------------------------------------
        case(
            "v1 body as v2",
            V2,
            cat!(HERE, good_series(1)),
            WrongProtocol,
        ),
        case(
            "v1 metadata as v2",
            V2,
            cat!(syms(), HERE, ld!(3, vi(1, 1))),
            WrongProtocol,
        ),
        case("v2 body as v1", V1, cat!(HERE, syms()), WrongProtocol),
        case(
            "v2 timeseries as v1",
            V1,
            cat!(good_series(1), HERE, ld!(5, ld!(1, packed(&[1, 2])))),
            WrongProtocol,
        ),
    ]
}

/// Faults inside the encodings the scanner's fast paths accept: the fast path must refuse
/// them as the checked path does.
fn fast_path_cases() -> Vec<Case> {
    vec![
        // Once a bug: v1::canonical_sample (the TimeSeries fast path) accepted a 10-byte
        // timestamp varint whose 10th byte is > 1, which the slow path refuses.
        case(
            "canonical sample, timestamp 10th byte 2",
            Protocol::V1,
            cat!(
                ld!(
                    1,
                    ld!(2, f64f(1), key(2, VARINT), HERE, [0xffu8; 9], b"\x02")
                ),
                pad()
            ),
            ProtoFault::BadVarint,
        ),
        // Same for v1::canonical_exemplar: `1a LL <labels> 11 <8 bytes> 18 <10-byte varint>`.
        case(
            "canonical exemplar, timestamp 10th byte 2",
            Protocol::V1,
            cat!(
                ld!(
                    1,
                    ld!(
                        3,
                        ld!(1, label(b"t", b"x")),
                        f64f(2),
                        key(3, VARINT),
                        HERE,
                        [0xffu8; 9],
                        b"\x02"
                    )
                ),
                pad()
            ),
            ProtoFault::BadVarint,
        ),
    ]
}

fn check_case(c: &Case) -> Result<(), String> {
    let at = c
        .body
        .at
        .ok_or_else(|| format!("{}: no HERE marker", c.name))?;
    let want = |r: &mimir_edge_native::Result<WriteStats>| matches!(r, Err(Error::Protobuf { fault, offset, .. }) if *fault == c.fault && *offset == at);
    let direct = scan_decoded(&c.body.data, c.protocol);
    if !want(&direct) {
        return Err(format!(
            "{}: expected {:?} at {at}, got {direct:?}",
            c.name, c.fault
        ));
    }
    // The offset is in the decoded body, whatever the encoding.
    let snappy = scan(
        &compress(&c.body.data).unwrap(),
        Encoding::Snappy,
        c.protocol,
        u64::MAX,
    );
    if !want(&snappy) {
        return Err(format!(
            "{} (snappy): expected {:?} at {at}, got {snappy:?}",
            c.name, c.fault
        ));
    }
    let identity = scan(&c.body.data, Encoding::Identity, c.protocol, u64::MAX);
    if identity != direct {
        return Err(format!("{} (identity): {identity:?} != {direct:?}", c.name));
    }
    let e = direct.unwrap_err();
    check_display(&e)?;
    if e.reason() != c.fault.reason() || e.offset() != Some(at) {
        return Err(format!(
            "{}: reason/offset accessors disagree: {e:?}",
            c.name
        ));
    }
    Ok(())
}

fn check_display(e: &Error) -> Result<(), String> {
    let msg = e.to_string();
    let prefix = match e {
        Error::Compression { .. } => "corrupt snappy: ".to_string(),
        Error::TooLarge { .. } => "decoded body too large: ".to_string(),
        Error::Protobuf { offset, .. } => format!("malformed protobuf at byte {offset}: "),
        Error::UnsupportedEncoding(_) => "unsupported content encoding: ".to_string(),
        Error::UnsupportedContentType(_) => "unsupported content type: ".to_string(),
    };
    if !msg.starts_with(&prefix) {
        return Err(format!("{msg:?} should start with {prefix:?}"));
    }
    if msg.contains('\n') || msg.contains('\r') {
        return Err(format!("multi-line message {msg:?}"));
    }
    Ok(())
}

#[test]
fn corrupt_protobuf_table() {
    let cases: Vec<Case> = cases().into_iter().chain(fast_path_cases()).collect();
    let failures: Vec<String> = cases.iter().filter_map(|c| check_case(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_building_blocks_are_valid() {
    let s = scan_decoded(&cat!(good_series(1), pad()).data, Protocol::V1).unwrap();
    assert_eq!((s.series, s.samples, s.label_pairs), (2, 5, 2));
    let body = cat!(
        syms(),
        ld!(
            5,
            ld!(1, packed(&[1, 2, 3, 2])),
            ld!(2, sample()),
            ld!(4, ld!(1, packed(&[3, 2])), f64f(2)),
            ld!(5, vi(1, 1), vi(3, 2), vi(4, 0))
        )
    );
    let s = scan_decoded(&body.data, Protocol::V2).unwrap();
    assert_eq!(
        (s.series, s.samples, s.exemplars, s.label_pairs, s.metadata),
        (1, 1, 1, 2, 1)
    );
}

// ------------------------------------------------------------------------------------------
// Snappy, the cap, and content negotiation.
// ------------------------------------------------------------------------------------------

fn compression_err(r: mimir_edge_native::Result<WriteStats>, what: &str) {
    match r {
        Err(e @ Error::Compression { .. }) => check_display(&e).unwrap(),
        other => panic!("{what}: expected a compression error, got {other:?}"),
    }
}

#[test]
fn corrupt_snappy_blocks() {
    let cases: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("header cut", b"\x80"),
        ("header cut 3", b"\xff\xff\xff"),
        ("header 6 bytes", b"\x85\x80\x80\x80\x80\x00\x10hello"),
        (
            "header 11 bytes",
            b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00",
        ),
        ("header above 2^32-1", b"\xff\xff\xff\xff\x7f\x00\x00"),
        ("declared 0 with data", b"\x00\x00"),
        ("literal past input", b"\x05\x00"),
        ("literal past declared", b"\x02\x0c\x0a\x00\x0a\x00"),
        ("copy truncated", b"\x05\x01\x05"),
        ("copy before start", b"\x08\x05\x01"),
        ("copy past declared", b"\x04\x04\x0a\x00\x05\x02"),
    ];
    for (what, body) in cases {
        compression_err(scan(body, Encoding::Snappy, Protocol::V1, 32 << 20), what);
    }
}

#[test]
fn snappy_declared_length_lies() {
    let raw = cat!(good_series(3), pad(), ld!(3, vi(1, 1), ld!(2, b"up"))).data;
    let block = compress(&raw).unwrap();
    let header = varint(raw.len() as u64);
    assert!(block.starts_with(&header));
    for declared in [
        raw.len() + 1,
        raw.len() + 1000,
        raw.len() - 1,
        raw.len() / 2,
        0,
    ] {
        let mut lie = varint(declared as u64);
        lie.extend(&block[header.len()..]);
        compression_err(
            scan(&lie, Encoding::Snappy, Protocol::V1, 32 << 20),
            &format!("declared {declared}"),
        );
    }
    // Every truncation of the compressed block is corrupt.
    for cut in 0..block.len() {
        compression_err(
            scan(&block[..cut], Encoding::Snappy, Protocol::V1, 32 << 20),
            &format!("cut {cut}"),
        );
    }
}

#[test]
fn declared_size_over_the_cap() {
    let mut body = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    body.extend(std::iter::repeat_n(0xabu8, 10_000));
    let e = scan(&body, Encoding::Snappy, Protocol::V1, 32 << 20).unwrap_err();
    assert_eq!(
        e,
        Error::TooLarge {
            declared: 4_294_967_295,
            limit: 32 << 20
        }
    );
    check_display(&e).unwrap();
    assert!(
        e.to_string().contains("4294967295") && e.to_string().contains("33554432"),
        "{e}"
    );
    assert_eq!(
        decompress(&body, 32 << 20),
        Err(Error::TooLarge {
            declared: 4_294_967_295,
            limit: 32 << 20
        })
    );

    let one_mib = b"\x0a\x00".repeat(1 << 19);
    let block = compress(&one_mib).unwrap();
    assert_eq!(
        scan(&block, Encoding::Snappy, Protocol::V1, 1024),
        Err(Error::TooLarge {
            declared: 1 << 20,
            limit: 1024
        })
    );
    assert_eq!(
        scan(&block, Encoding::Snappy, Protocol::V1, (1 << 20) - 1),
        Err(Error::TooLarge {
            declared: 1 << 20,
            limit: (1 << 20) - 1
        })
    );
    assert_eq!(
        scan(&block, Encoding::Snappy, Protocol::V1, 1 << 20)
            .unwrap()
            .series,
        1 << 19
    );
    let mut lie = varint(1 << 20);
    lie.extend([0u8; 10]);
    assert_eq!(
        scan(&lie, Encoding::Snappy, Protocol::V1, 1024),
        Err(Error::TooLarge {
            declared: 1 << 20,
            limit: 1024
        })
    );
    assert_eq!(
        scan(&one_mib, Encoding::Identity, Protocol::V1, (1 << 20) - 1),
        Err(Error::TooLarge {
            declared: 1 << 20,
            limit: (1 << 20) - 1
        })
    );
    assert_eq!(
        scan(&one_mib, Encoding::Identity, Protocol::V1, 1 << 20)
            .unwrap()
            .series,
        1 << 19
    );
}

#[test]
fn unsupported_formats() {
    for enc in [
        "gzip",
        "",
        " ",
        "deflate",
        "snappy, gzip",
        "gzip\r\nX-Evil: 1",
    ] {
        let e = Encoding::parse(enc).unwrap_err();
        assert_eq!(e, Error::UnsupportedEncoding(enc.to_string()));
        assert_eq!(e.reason(), "unsupported_encoding");
        assert_eq!(e.offset(), None);
        check_display(&e).unwrap();
    }
    for ct in [
        "application/json",
        "text/plain",
        "application/x-protobuf;proto=foo.Bar",
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        "application/x-protobuf;junk",
        "text/plain\nX-Evil: 1",
    ] {
        let e = Protocol::from_content_type(Some(ct)).unwrap_err();
        assert_eq!(e, Error::UnsupportedContentType(ct.to_string()));
        assert_eq!(e.reason(), "unsupported_content_type");
        check_display(&e).unwrap();
    }
}

// ------------------------------------------------------------------------------------------
// Long runs of empty and unknown fields.
// ------------------------------------------------------------------------------------------

#[test]
fn two_million_empty_series() {
    let n = 2_000_000u64;
    let raw = b"\x0a\x00".repeat(n as usize);
    let s = scan_decoded(&raw, Protocol::V1).unwrap();
    assert_eq!((s.series, s.samples, s.label_pairs), (n, 0, 0));
    let s2 = scan(
        &compress(&raw).unwrap(),
        Encoding::Snappy,
        Protocol::V1,
        32 << 20,
    )
    .unwrap();
    assert_eq!(s, s2);
    let s = scan_decoded(&b"\x2a\x00".repeat(n as usize), Protocol::V2).unwrap();
    assert_eq!(s.series, n);
}

#[test]
fn a_million_empty_labels() {
    let n = 1_000_000u64;
    let raw = ld!(1, b"\x0a\x00".repeat(n as usize)).data;
    let s = scan_decoded(&raw, Protocol::V1).unwrap();
    assert_eq!(
        (s.series, s.label_pairs, s.max_labels_per_series),
        (1, n, n)
    );
}

#[test]
fn long_runs_of_unknown_fields() {
    let unknown = cat!(
        vi(15, 1),
        f64f(16),
        ld!(17, b"xyz"),
        f32f(18),
        vi((1 << 29) - 1, 1)
    )
    .data;
    let top = [unknown.clone(), vi(2, 7)].concat();
    let body = cat!(
        top.repeat(100_000),
        ld!(
            1,
            unknown.repeat(1000),
            ld!(
                1,
                unknown.repeat(10),
                label(b"__name__", b"up"),
                unknown.clone()
            ),
            ld!(2, unknown.clone(), sample())
        ),
        ld!(3, unknown.repeat(10), vi(1, 1), ld!(2, b"up")),
    );
    let s = scan_decoded(&body.data, Protocol::V1).unwrap();
    assert_eq!(
        (s.series, s.samples, s.label_pairs, s.metadata),
        (1, 1, 1, 1)
    );
    assert_eq!((s.max_label_name_length, s.max_label_value_length), (8, 2));
    let body = cat!(
        top.repeat(100_000),
        syms(),
        ld!(
            5,
            unknown.repeat(100),
            ld!(1, packed(&[1, 2])),
            ld!(2, unknown.clone(), sample())
        )
    );
    let s = scan_decoded(&body.data, Protocol::V2).unwrap();
    assert_eq!((s.series, s.samples, s.label_pairs), (1, 1, 1));
}

// ------------------------------------------------------------------------------------------
// Properties.
// ------------------------------------------------------------------------------------------

type Labels = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone)]
struct Series {
    labels: Labels,
    samples: Vec<(f64, i64)>,
    exemplars: Vec<(Labels, f64, i64)>,
    histograms: Vec<u64>,
}

#[derive(Debug, Clone)]
struct Body {
    series: Vec<Series>,
    /// (type, family, help)
    metadata: Vec<(u64, Vec<u8>, Vec<u8>)>,
}

/// Protobuf's int64 encoding: negative numbers take 10 bytes.
#[allow(clippy::cast_sign_loss)]
const fn i64_bits(v: i64) -> u64 {
    v as u64
}

/// Encode like a protobuf encoder: proto3 zero values omitted.
fn sample_v(value: f64, ts: i64) -> Vec<u8> {
    let mut out = Vec::new();
    if value.to_bits() != 0 {
        out.extend(key(1, FIXED64));
        out.extend(value.to_le_bytes());
    }
    if ts != 0 {
        out.extend(vi(2, i64_bits(ts)));
    }
    out
}

fn exemplar_value(value: f64) -> Vec<u8> {
    let mut out = Vec::new();
    if value.to_bits() != 0 {
        out.extend(key(2, FIXED64));
        out.extend(value.to_le_bytes());
    }
    out
}

fn str_field(field: u64, s: &[u8]) -> Vec<u8> {
    if s.is_empty() {
        Vec::new()
    } else {
        ld!(field, s).data
    }
}

fn label_v1(name: &[u8], value: &[u8]) -> Vec<u8> {
    ld!(1, str_field(1, name), str_field(2, value)).data
}

fn histogram(count: u64) -> Vec<u8> {
    cat!(
        vi(1, count),
        f64f(3),
        vi(4, 3),
        ld!(11, vi(1, 0), vi(2, 1)),
        ld!(12, packed(&[2])),
        vi(15, 1_700_000_000_000)
    )
    .data
}

/// The v1 body, and where each top-level field's length varint is.
fn encode_v1(b: &Body) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut push = |field: u64, content: Vec<u8>| {
        let start = out.len();
        out.extend(key(field, LEN));
        fields.push((start, out.len()));
        out.extend(varint(content.len() as u64));
        out.extend(content);
    };
    for s in &b.series {
        let mut c = Vec::new();
        for (n, v) in &s.labels {
            c.extend(label_v1(n, v));
        }
        for &(v, t) in &s.samples {
            c.extend(ld!(2, sample_v(v, t)).data);
        }
        for (labels, v, t) in &s.exemplars {
            let mut e = Vec::new();
            for (n, val) in labels {
                e.extend(label_v1(n, val));
            }
            e.extend(exemplar_value(*v));
            if *t != 0 {
                e.extend(vi(3, i64_bits(*t)));
            }
            c.extend(ld!(3, e).data);
        }
        for &h in &s.histograms {
            c.extend(ld!(4, histogram(h)).data);
        }
        push(1, c);
    }
    for (t, family, help) in &b.metadata {
        let mut c = Vec::new();
        if *t != 0 {
            c.extend(vi(1, *t));
        }
        c.extend(str_field(2, family));
        c.extend(str_field(4, help));
        push(3, c);
    }
    (out, fields)
}

fn encode_v2(b: &Body) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut symbols: Vec<Vec<u8>> = vec![Vec::new()];
    let mut refs = |s: &[u8]| -> u64 {
        if let Some(i) = symbols.iter().position(|x| x == s) {
            return i as u64;
        }
        symbols.push(s.to_vec());
        (symbols.len() - 1) as u64
    };
    let mut series = Vec::new();
    for s in &b.series {
        let mut c = Vec::new();
        let r: Vec<u64> = s
            .labels
            .iter()
            .flat_map(|(n, v)| [refs(n), refs(v)])
            .collect();
        if !r.is_empty() {
            c.extend(ld!(1, packed(&r)).data);
        }
        for &(v, t) in &s.samples {
            c.extend(ld!(2, sample_v(v, t)).data);
        }
        for &h in &s.histograms {
            c.extend(ld!(3, histogram(h)).data);
        }
        for (labels, v, t) in &s.exemplars {
            let r: Vec<u64> = labels
                .iter()
                .flat_map(|(n, val)| [refs(n), refs(val)])
                .collect();
            let mut e = Vec::new();
            if !r.is_empty() {
                e.extend(ld!(1, packed(&r)).data);
            }
            e.extend(exemplar_value(*v));
            if *t != 0 {
                e.extend(vi(3, i64_bits(*t)));
            }
            c.extend(ld!(4, e).data);
        }
        series.push(c);
    }
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut push = |field: u64, content: &[u8]| {
        let start = out.len();
        out.extend(key(field, LEN));
        fields.push((start, out.len()));
        out.extend(varint(content.len() as u64));
        out.extend(content);
    };
    for s in &symbols {
        push(4, s);
    }
    for s in &series {
        push(5, s);
    }
    (out, fields)
}

fn expected(b: &Body) -> WriteStats {
    let labels = b.series.iter().map(|s| s.labels.len() as u64);
    let names = b
        .series
        .iter()
        .flat_map(|s| s.labels.iter().map(|(n, _)| n.len() as u64));
    let values = b
        .series
        .iter()
        .flat_map(|s| s.labels.iter().map(|(_, v)| v.len() as u64));
    WriteStats {
        series: b.series.len() as u64,
        samples: b.series.iter().map(|s| s.samples.len() as u64).sum(),
        histograms: b.series.iter().map(|s| s.histograms.len() as u64).sum(),
        exemplars: b.series.iter().map(|s| s.exemplars.len() as u64).sum(),
        metadata: b.metadata.len() as u64,
        label_pairs: labels.clone().sum(),
        max_labels_per_series: labels.max().unwrap_or(0),
        max_label_name_length: names.max().unwrap_or(0),
        max_label_value_length: values.max().unwrap_or(0),
        decoded_bytes: 0,
    }
}

fn bytes_str() -> impl Strategy<Value = Vec<u8>> {
    // Mostly short (the canonical one-byte-length fast path), sometimes over 127 bytes.
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..20),
        1 => proptest::collection::vec(any::<u8>(), 100..300),
    ]
}

fn labels() -> impl Strategy<Value = Labels> {
    proptest::collection::vec((bytes_str(), bytes_str()), 0..6)
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        1_600_000_000_000i64..1_800_000_000_000,
        any::<i64>()
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0f64), any::<f64>()]
}

fn series() -> impl Strategy<Value = Series> {
    (
        labels(),
        proptest::collection::vec((value(), timestamp()), 0..4),
        proptest::collection::vec((labels(), value(), timestamp()), 0..2),
        proptest::collection::vec(any::<u64>(), 0..2),
    )
        .prop_map(|(labels, samples, exemplars, histograms)| Series {
            labels,
            samples,
            exemplars,
            histograms,
        })
}

fn body() -> impl Strategy<Value = Body> {
    (
        proptest::collection::vec(series(), 0..8),
        proptest::collection::vec((0u64..8, bytes_str(), bytes_str()), 0..3),
    )
        .prop_map(|(series, metadata)| Body { series, metadata })
}

fn le(a: &WriteStats, b: &WriteStats) -> bool {
    a.series <= b.series
        && a.samples <= b.samples
        && a.histograms <= b.histograms
        && a.exemplars <= b.exemplars
        && a.metadata <= b.metadata
        && a.label_pairs <= b.label_pairs
        && a.max_labels_per_series <= b.max_labels_per_series
        && a.max_label_name_length <= b.max_label_name_length
        && a.max_label_value_length <= b.max_label_value_length
}

/// Every cut of a valid body either scans (exactly at a top-level field boundary) with
/// counts no larger than the whole, or fails as truncated at the length varint of the
/// top-level field it cuts through.
fn check_truncations(
    raw: &[u8],
    fields: &[(usize, usize)],
    protocol: Protocol,
    full: &WriteStats,
) -> Result<(), TestCaseError> {
    for cut in 0..raw.len() {
        let r = scan_decoded(&raw[..cut], protocol);
        let i = fields.partition_point(|&(start, _)| start <= cut);
        let at_boundary = cut == 0 || fields[i - 1].0 == cut;
        match r {
            Ok(s) => {
                prop_assert!(at_boundary, "cut {} inside a field scanned as {:?}", cut, s);
                prop_assert!(le(&s, full), "cut {}: {:?} exceeds {:?}", cut, s, full);
                prop_assert_eq!(s.decoded_bytes, cut as u64);
            }
            Err(Error::Protobuf {
                fault: ProtoFault::Truncated,
                offset,
                ..
            }) => {
                prop_assert!(!at_boundary, "boundary cut {} failed", cut);
                prop_assert_eq!(offset, fields[i - 1].1, "cut {}", cut);
            }
            Err(e) => prop_assert!(false, "cut {}: unexpected {:?}", cut, e),
        }
    }
    Ok(())
}

fn never_panics(data: &[u8]) {
    for protocol in [Protocol::V1, Protocol::V2] {
        match scan_decoded(data, protocol) {
            Ok(s) => {
                assert_eq!(s.decoded_bytes, data.len() as u64);
                assert!(s.max_labels_per_series <= s.label_pairs);
            }
            Err(Error::Protobuf { offset, .. }) => assert!(offset <= data.len()),
            Err(e) => panic!("scan_decoded can only fail on protobuf: {e:?}"),
        }
        match scan(data, Encoding::Snappy, protocol, 1 << 20) {
            Ok(_)
            | Err(Error::Compression { .. } | Error::TooLarge { .. } | Error::Protobuf { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// Random protobuf-ish fragments: real tags with real and broken payloads, so mutations
/// reach past the first byte into nested messages.
fn fragments() -> impl Strategy<Value = Vec<u8>> {
    let frag = prop_oneof![
        (1u64..7, 0u8..8).prop_map(|(f, w)| key(f, w)),
        (0u64..300).prop_map(varint),
        (1u64..7, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(f, b)| ld!(f, b).data),
        Just(vec![0xffu8; 10]),
        Just(b"\x0a\x00".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(frag, 0..40).prop_map(|v| {
        // Nest the soup once, so the nested scanners see it too.
        let soup = v.concat();
        let mut out = ld!(1, soup.clone()).data;
        out.extend(ld!(5, soup.clone()).data);
        out.extend(soup);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        never_panics(&data);
    }

    #[test]
    fn protobuf_soup_never_panics(data in fragments()) {
        never_panics(&data);
        never_panics(&compress(&data).unwrap());
    }

    #[test]
    fn v1_bodies_count_exactly_and_truncate_cleanly(b in body()) {
        let (raw, fields) = encode_v1(&b);
        let mut want = expected(&b);
        want.decoded_bytes = raw.len() as u64;
        let full = scan_decoded(&raw, Protocol::V1).unwrap();
        prop_assert_eq!(full, want);
        prop_assert_eq!(scan(&compress(&raw).unwrap(), Encoding::Snappy, Protocol::V1, u64::MAX), Ok(full));
        check_truncations(&raw, &fields, Protocol::V1, &full)?;
    }

    #[test]
    fn v2_bodies_count_exactly_and_truncate_cleanly(b in body()) {
        let b = Body { metadata: Vec::new(), ..b };
        let (raw, fields) = encode_v2(&b);
        let mut want = expected(&b);
        want.decoded_bytes = raw.len() as u64;
        let full = scan_decoded(&raw, Protocol::V2).unwrap();
        prop_assert_eq!(full, want);
        check_truncations(&raw, &fields, Protocol::V2, &full)?;
    }

    #[test]
    fn mutated_valid_bodies_never_panic(b in body(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        for (raw, _) in [encode_v1(&b), encode_v2(&b)] {
            if raw.is_empty() {
                continue;
            }
            let mut m = raw.clone();
            for (i, x) in &flips {
                let i = i.index(m.len());
                m[i] ^= x | 1;
            }
            never_panics(&m);
        }
    }

    #[test]
    fn snappy_round_trip(data in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..4096),
        proptest::collection::vec(0u8..4, 0..65536),
    ]) {
        let block = compress(&data).unwrap();
        prop_assert_eq!(decompress(&block, data.len() as u64), Ok(data.clone()));
        if !data.is_empty() {
            prop_assert_eq!(
                decompress(&block, data.len() as u64 - 1),
                Err(Error::TooLarge { declared: data.len() as u64, limit: data.len() as u64 - 1 })
            );
        }
    }

    #[test]
    fn snappy_scan_equals_decoded_scan(data in fragments()) {
        let block = compress(&data).unwrap();
        for protocol in [Protocol::V1, Protocol::V2] {
            prop_assert_eq!(scan(&block, Encoding::Snappy, protocol, u64::MAX), scan_decoded(&data, protocol));
        }
    }
}
