//! Snappy block format (what Prometheus sends), on top of the `snap` crate.
//!
//! The declared length (the varint that opens every block) is read and checked against the
//! caller's cap before a single byte of output is allocated; a 10 KB body that declares
//! 4 GiB costs nothing. Output goes into a per-thread buffer that is reused across requests.

use std::cell::RefCell;

use crate::error::{Error, Result};

/// Buffers bigger than this are dropped after use, so one huge body does not pin memory in
/// every worker thread forever.
const KEEP_BUFFER_BYTES: usize = 8 << 20;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The decoded length a snappy block declares.
pub fn declared_len(block: &[u8]) -> Result<usize> {
    snap::raw::decompress_len(block).map_err(compression_error)
}

/// Decode `block` into a reused per-thread buffer and run `f` on the result.
///
/// Fails with [`Error::TooLarge`] if the block declares more than `limit` bytes.
pub fn with_decoded<T>(block: &[u8], limit: u64, f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
    let n = declared_len(block)?;
    check_limit(n, limit)?;
    SCRATCH.with(|cell| {
        // A re-entrant call (never made by this crate) gets a fresh buffer instead of a panic.
        let mut guard = cell.try_borrow_mut();
        let mut local = Vec::new();
        let buf: &mut Vec<u8> = match guard.as_mut() {
            Ok(b) => b,
            Err(_) => &mut local,
        };
        if buf.len() < n {
            buf.resize(n, 0);
        }
        let out = buf.get_mut(..n).ok_or_else(|| Error::Compression {
            detail: "internal buffer sizing".into(),
        })?;
        let written = snap::raw::Decoder::new()
            .decompress(block, out)
            .map_err(compression_error)?;
        let result = match out.get(..written) {
            Some(decoded) => f(decoded),
            None => Err(Error::Compression {
                detail: "decoder wrote past the declared length".into(),
            }),
        };
        if buf.capacity() > KEEP_BUFFER_BYTES {
            *buf = Vec::new();
        }
        result
    })
}

/// Decode into a fresh `Vec` (tests, tools; not the hot path).
pub fn decompress(block: &[u8], limit: u64) -> Result<Vec<u8>> {
    with_decoded(block, limit, |d| Ok(d.to_vec()))
}

/// Encode `data` as one snappy block.
pub fn compress(data: &[u8]) -> Result<Vec<u8>> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .map_err(compression_error)
}

pub(crate) fn check_limit(n: usize, limit: u64) -> Result<()> {
    let declared = u64::try_from(n).unwrap_or(u64::MAX);
    if declared > limit {
        return Err(Error::TooLarge { declared, limit });
    }
    Ok(())
}

fn compression_error(e: snap::Error) -> Error {
    use snap::Error as S;
    let detail = match e {
        S::TooBig { given, max } => {
            format!("declared length {given} exceeds snappy's maximum {max}")
        }
        S::BufferTooSmall { given, min } => {
            format!("output buffer of {given} bytes, {min} needed")
        }
        S::Empty => "empty body".to_string(),
        S::Header => "bad length header".to_string(),
        S::HeaderMismatch {
            expected_len,
            got_len,
        } => format!("declared length {expected_len} but data decodes to {got_len} bytes"),
        S::Literal {
            len,
            src_len,
            dst_len,
        } => format!(
            "literal of {len} bytes overruns the input ({src_len} left) or output ({dst_len} left)"
        ),
        S::CopyRead { len, src_len } => {
            format!("copy operation of {len} bytes truncated ({src_len} bytes of input left)")
        }
        S::CopyWrite { len, dst_len } => {
            format!("copy of {len} bytes overruns the declared length ({dst_len} bytes left)")
        }
        S::Offset { offset, dst_pos } => {
            format!("copy offset {offset} points before the start of output (at {dst_pos})")
        }
        other => other.to_string(),
    };
    Error::Compression { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data = b"hello hello hello hello snappy".repeat(50);
        let c = compress(&data).unwrap_or_default();
        assert_eq!(decompress(&c, 1 << 20), Ok(data));
    }

    #[test]
    fn declared_length_checked_before_allocating() {
        // varint 0xFFFFFFFF (4 GiB - 1) then garbage.
        let mut body = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
        body.extend(std::iter::repeat_n(0u8, 10_000));
        let err = decompress(&body, 32 << 20);
        assert!(matches!(
            err,
            Err(Error::TooLarge {
                declared: 4_294_967_295,
                ..
            })
        ));
    }

    #[test]
    fn corrupt_inputs_name_the_fault() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (&[0x80], "header"),
            (&[0x05, 0x00], "literal"),
            (&[0x05, 0x08, b'a', b'b', b'c'], "declared length"),
            (&[0x05, 0x01, 0x05], "copy"),
        ];
        for (input, needle) in cases {
            match decompress(input, 1 << 20) {
                Err(Error::Compression { detail }) => {
                    assert!(
                        detail.contains(needle),
                        "{input:?}: {detail:?} should mention {needle:?}"
                    );
                }
                other => panic!("{input:?}: expected a compression error, got {other:?}"),
            }
        }
    }
}
