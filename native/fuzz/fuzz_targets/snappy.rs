//! Snappy decoding of arbitrary bytes: never panics, honours the cap, and whatever decodes
//! re-encodes to something that decodes back to the same bytes. Also scans the bytes as a
//! snappy-encoded request of both versions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimir_edge_native::snappy::{compress, decompress};
use mimir_edge_native::{scan, Encoding, Error, Protocol};

const CAP: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    match decompress(data, CAP) {
        Ok(out) => {
            assert!(out.len() as u64 <= CAP);
            let again = compress(&out).expect("compress");
            assert_eq!(decompress(&again, CAP).as_deref(), Ok(out.as_slice()));
        }
        Err(Error::TooLarge { declared, limit }) => assert!(declared > limit && limit == CAP),
        Err(Error::Compression { .. }) => {}
        Err(e) => panic!("decompress can only fail on compression or size: {e:?}"),
    }
    for protocol in [Protocol::V1, Protocol::V2] {
        match scan(data, Encoding::Snappy, protocol, CAP) {
            Ok(_)
            | Err(Error::Compression { .. } | Error::TooLarge { .. } | Error::Protobuf { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    // Round trip the input itself.
    let block = compress(data).expect("compress");
    assert_eq!(decompress(&block, data.len() as u64).as_deref(), Ok(data));
});
