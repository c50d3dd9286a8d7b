//! Quick timing of the core on a directory of snappy bodies: `cargo run --release --example timing DIR`.
use std::time::Instant;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "../../shared/corpus/prometheus-2.42".into());
    let mut bodies = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "snappy") {
            bodies.push(std::fs::read(e.path()).unwrap_or_default());
        }
    }
    let raws: Vec<Vec<u8>> = bodies.iter().map(|b| mimir_edge_native::snappy::decompress(b, 1 << 30).unwrap_or_default()).collect();
    let rounds = 300;
    let per = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / (rounds * bodies.len()) as f64;
    let t = Instant::now();
    let mut out = vec![0u8; 1 << 20];
    for _ in 0..rounds { for b in &bodies { let n = snap::raw::decompress_len(b).unwrap_or(0); let _ = snap::raw::Decoder::new().decompress(b, &mut out[..n]); } }
    println!("decompress only     {:.1} us", per(t));
    let t = Instant::now();
    for _ in 0..rounds { for r in &raws { let _ = std::hint::black_box(mimir_edge_native::scan_decoded(r, mimir_edge_native::Protocol::V1)); } }
    println!("scan decoded only   {:.1} us", per(t));
    let t = Instant::now();
    for _ in 0..rounds { for b in &bodies { let _ = std::hint::black_box(mimir_edge_native::scan(b, mimir_edge_native::Encoding::Snappy, mimir_edge_native::Protocol::V1, 1 << 30)); } }
    println!("scan full           {:.1} us", per(t));
    let total: usize = raws.iter().map(|r| r.len()).sum();
    println!("avg decoded bytes   {}", total / raws.len());
}
