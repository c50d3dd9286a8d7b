//! Remote write 1.0 scanning of arbitrary decoded bytes: never panics, and every result is
//! self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimir_edge_native::{scan, scan_decoded, Encoding, Error, Protocol};

fuzz_target!(|data: &[u8]| {
    let result = scan_decoded(data, Protocol::V1);
    match &result {
        Ok(s) => {
            assert_eq!(s.decoded_bytes, data.len() as u64);
            assert!(s.max_labels_per_series <= s.label_pairs);
            assert!(s.series > 0 || s.label_pairs == 0);
            assert!(s.ingested() >= s.samples);
        }
        Err(Error::Protobuf { offset, .. }) => assert!(*offset <= data.len()),
        Err(e) => panic!("scan_decoded can only fail on protobuf: {e:?}"),
    }
    // The identity path is the same scan behind the size cap.
    assert_eq!(
        scan(data, Encoding::Identity, Protocol::V1, u64::MAX),
        result
    );
});
