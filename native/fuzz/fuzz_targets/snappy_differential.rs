//! Differential: scanning `compress(x)` as snappy gives exactly what scanning `x` decoded
//! gives (same counts, or the same error at the same decoded-body offset), both versions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimir_edge_native::snappy::compress;
use mimir_edge_native::{scan, scan_decoded, Encoding, Protocol};

fuzz_target!(|data: &[u8]| {
    let block = compress(data).expect("compress");
    for protocol in [Protocol::V1, Protocol::V2] {
        assert_eq!(
            scan(&block, Encoding::Snappy, protocol, u64::MAX),
            scan_decoded(data, protocol),
            "{protocol:?}"
        );
    }
});
