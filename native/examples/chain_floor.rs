//! How fast can anything walk a remote-write body? Times the bare minimum a counter must do,
//! one dependent load per element (read the length byte, jump past the element), against
//! snappy decompression and the full scan, on the corpus bodies:
//!
//!     cargo run --release --example chain_floor [CORPUS_DIR] [FILE_PREFIX]
//!
//! The scan cannot beat this floor: it shows how much of the scan's time is inherent.
use std::time::Instant;

use mimir_edge_native::wire::{Reader, WT_LEN};
use mimir_edge_native::{scan, snappy, Encoding, Protocol};

/// Visit every element of every series, by length only. Returns the element count.
fn walk(raw: &[u8]) -> u64 {
    let mut elements = 0;
    let mut top = Reader::new(raw);
    while top.has_more() {
        let Ok(tag) = top.tag() else { break };
        if tag.wire_type != WT_LEN {
            break;
        }
        let Ok(span) = top.len_delim() else { break };
        let mut inner = top.nested(span);
        while inner.has_more() {
            if inner.tag().and_then(|_| inner.len_delim()).is_err() {
                break;
            }
            elements += 1;
        }
    }
    elements
}

fn per_body(rounds: usize, bodies: usize, t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6 / (rounds * bodies) as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "../../shared/corpus/prometheus-2.42".into());
    let prefix = args.next().unwrap_or_default();
    let mut bodies = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".snappy") && name.starts_with(&prefix) {
            bodies.push(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    let raws: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| snappy::decompress(b, 1 << 30).unwrap_or_default())
        .collect();
    if raws.is_empty() {
        eprintln!("no .snappy bodies in {dir}");
        return;
    }
    let rounds = 200;
    let n = raws.len();

    let t = Instant::now();
    for _ in 0..rounds {
        for b in &bodies {
            std::hint::black_box(snappy::decompress(b, 1 << 30).map(|v| v.len()).ok());
        }
    }
    let decompress = per_body(rounds, n, t);

    let t = Instant::now();
    let mut elements = 0;
    for _ in 0..rounds {
        for r in &raws {
            elements += std::hint::black_box(walk(r));
        }
    }
    let floor = per_body(rounds, n, t);

    let t = Instant::now();
    for _ in 0..rounds {
        for r in &raws {
            std::hint::black_box(mimir_edge_native::scan_decoded(r, Protocol::V1).ok());
        }
    }
    let counted = per_body(rounds, n, t);

    let t = Instant::now();
    for _ in 0..rounds {
        for b in &bodies {
            std::hint::black_box(scan(b, Encoding::Snappy, Protocol::V1, 1 << 30).ok());
        }
    }
    let full = per_body(rounds, n, t);

    let avg_elements = elements / (rounds * n) as u64;
    println!("bodies: {n}, elements per body: {avg_elements}");
    println!("snappy decompress          {decompress:8.1} us/body");
    println!(
        "element walk (floor)       {floor:8.1} us/body  {:.2}x decompress",
        floor / decompress
    );
    println!(
        "scan of the decoded body   {counted:8.1} us/body  {:.2}x decompress",
        counted / decompress
    );
    println!(
        "scan_remote_write (full)   {full:8.1} us/body  {:.2}x decompress",
        full / decompress
    );
}
