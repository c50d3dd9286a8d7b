//! Remote write 2.0: `io.prometheus.write.v2.Request` (prompb/io/prometheus/write/v2/types.proto).
//!
//! ```text
//! Request    { reserved 1 to 3; repeated string symbols = 4; repeated TimeSeries timeseries = 5; }
//! TimeSeries { repeated uint32 labels_refs = 1; repeated Sample samples = 2;
//!              repeated Histogram histograms = 3; repeated Exemplar exemplars = 4;
//!              Metadata metadata = 5; int64 created_timestamp = 6; }
//! Exemplar   { repeated uint32 labels_refs = 1; double value = 2; int64 timestamp = 3; }
//! Metadata   { MetricType type = 1; uint32 help_ref = 3; uint32 unit_ref = 4; }
//! ```
//!
//! Label lengths come from the symbols the refs point to. Symbols are collected in a first
//! pass over the top level, so a body that puts `timeseries` before `symbols` still resolves
//! (Mimir resolves in wire order; every encoder writes symbols first, so the two agree).

use std::cell::RefCell;
use std::collections::HashSet;

use super::common::{exemplar_field, histogram, sample};
use super::WriteStats;
use crate::error::{Error, ProtoFault, Result};
use crate::wire::{Reader, Span, Tag, WT_VARINT};

/// Mimir accepts `labels_refs` only packed; it refuses a lone varint as an odd number of
/// refs, this core as a wrong wire type, which says more.
const PACKED: &str = "labels_refs must be packed varints";

thread_local! {
    static SYMBOLS: RefCell<Vec<Span>> = const { RefCell::new(Vec::new()) };
}

pub fn scan(raw: &[u8]) -> Result<WriteStats> {
    SYMBOLS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut symbols) => {
            symbols.clear();
            let result = scan_with(raw, &mut symbols);
            if symbols.capacity() > 1 << 20 {
                *symbols = Vec::new();
            }
            result
        }
        Err(_) => scan_with(raw, &mut Vec::new()),
    })
}

fn scan_with(raw: &[u8], symbols: &mut Vec<Span>) -> Result<WriteStats> {
    let mut r = Reader::new(raw);
    while r.has_more() {
        let tag = r.tag()?;
        match tag.field {
            4 => symbols.push(r.message(tag, "Request.symbols must be length-delimited")?),
            5 => drop(r.message(tag, "Request.timeseries must be length-delimited")?),
            // Remote write 1.0's timeseries and metadata: a 1.0 body sent as 2.0 would
            // otherwise count as empty. Mimir refuses it the same way.
            1 | 3 => {
                return Err(Error::proto(
                    ProtoFault::WrongProtocol,
                    tag.at,
                    "remote write 1.0 field in a 2.0 request (check Content-Type)",
                ))
            }
            _ => r.skip(tag)?,
        }
    }

    let mut scan = Scan {
        symbols,
        stats: WriteStats::default(),
        metadata: None,
    };
    let mut r = Reader::new(raw);
    while r.has_more() {
        let tag = r.tag()?;
        if tag.field == 5 {
            let span = r.len_delim()?;
            scan.series(&r, span)?;
        } else {
            r.skip(tag)?;
        }
    }
    scan.stats.metadata = scan.metadata.map_or(0, |m| m.len() as u64);
    Ok(scan.stats)
}

struct Scan<'s, 'b> {
    symbols: &'s [Span],
    stats: WriteStats,
    /// Metric families that carried metadata (Mimir keeps one entry per family).
    metadata: Option<HashSet<&'b [u8]>>,
}

impl<'b> Scan<'_, 'b> {
    /// Resolve the symbol ref that starts at the reader's position.
    #[inline(always)]
    fn next_ref(&self, p: &mut Reader<'b>) -> Result<Span> {
        let at = p.pos();
        let v = p.varint()?;
        usize::try_from(v)
            .ok()
            .and_then(|i| self.symbols.get(i))
            .copied()
            .ok_or_else(|| {
                Error::proto(
                    ProtoFault::BadSymbolRef,
                    at,
                    "symbol reference out of range",
                )
            })
    }

    fn series(&mut self, parent: &Reader<'b>, span: Span) -> Result<()> {
        let mut r = parent.nested(span);
        let mut labels = 0u64;
        let mut metric_name: &'b [u8] = &[];
        while r.has_more() {
            let tag = r.tag()?;
            match tag.field {
                1 => {
                    let refs = r.message(tag, PACKED)?;
                    let mut p = r.nested(refs);
                    let mut n = 0u64;
                    while p.has_more() {
                        let name = self.next_ref(&mut p)?;
                        if !p.has_more() {
                            return Err(odd_refs(tag));
                        }
                        let value = self.next_ref(&mut p)?;
                        self.stats.label_lengths(name.len(), value.len());
                        if name.len() == 8 && r.bytes(name) == b"__name__" {
                            metric_name = r.bytes(value);
                        }
                        n += 1;
                    }
                    labels += n;
                }
                2 => {
                    let span = r.message(tag, "TimeSeries.samples must be length-delimited")?;
                    sample(&r, span)?;
                    self.stats.samples += 1;
                }
                3 => {
                    let span = r.message(tag, "TimeSeries.histograms must be length-delimited")?;
                    histogram(&r, span)?;
                    self.stats.histograms += 1;
                }
                4 => {
                    let span = r.message(tag, "TimeSeries.exemplars must be length-delimited")?;
                    self.exemplar(&r, span)?;
                    self.stats.exemplars += 1;
                }
                5 => {
                    let span = r.message(tag, "TimeSeries.metadata must be length-delimited")?;
                    self.metadata(&r, span, metric_name)?;
                }
                6 => {
                    r.expect(
                        tag,
                        WT_VARINT,
                        "TimeSeries.created_timestamp must be a varint",
                    )?;
                    r.skip(tag)?;
                }
                _ => r.skip(tag)?,
            }
        }
        self.stats.end_series(labels);
        Ok(())
    }

    fn exemplar(&mut self, parent: &Reader<'b>, span: Span) -> Result<()> {
        let mut r = parent.nested(span);
        while r.has_more() {
            let tag = r.tag()?;
            match tag.field {
                1 => {
                    let refs = r.message(tag, PACKED)?;
                    let mut p = r.nested(refs);
                    let mut n = 0u64;
                    while p.has_more() {
                        self.next_ref(&mut p)?;
                        n += 1;
                    }
                    if n % 2 == 1 {
                        return Err(odd_refs(tag));
                    }
                }
                _ => exemplar_field(&mut r, tag)?,
            }
        }
        Ok(())
    }

    /// Count metadata the way Mimir's remote write 2.0 conversion does (see
    /// docs/limits.md): one entry per metric family that has a type, help or unit.
    fn metadata(&mut self, parent: &Reader<'b>, span: Span, metric_name: &'b [u8]) -> Result<()> {
        let mut r = parent.nested(span);
        // As in protobuf (and Mimir): the enum keeps the low 32 bits, and a repeated
        // scalar field keeps its last value.
        let mut kind = 0u32;
        let (mut help, mut unit) = (0usize, 0usize);
        while r.has_more() {
            let tag = r.tag()?;
            match tag.field {
                1 => {
                    r.expect(tag, WT_VARINT, "Metadata.type must be a varint")?;
                    kind = r.varint()? as u32;
                }
                3 => {
                    r.expect(tag, WT_VARINT, "Metadata.help_ref must be a varint")?;
                    help = self.next_ref(&mut r)?.len();
                }
                4 => {
                    r.expect(tag, WT_VARINT, "Metadata.unit_ref must be a varint")?;
                    unit = self.next_ref(&mut r)?.len();
                }
                _ => r.skip(tag)?,
            }
        }
        let described = help > 0 || unit > 0;
        let family = family_name(metric_name, kind);
        if !family.is_empty() && (described || kind != 0) {
            self.metadata
                .get_or_insert_with(HashSet::new)
                .insert(family);
        }
        Ok(())
    }
}

fn odd_refs(tag: Tag) -> Error {
    Error::proto(
        ProtoFault::OddLabelRefs,
        tag.at,
        "odd number of label references",
    )
}

/// The metric family a series belongs to: its name without the suffixes its type adds.
fn family_name(name: &[u8], kind: u32) -> &[u8] {
    let suffixes: &[&[u8]] = match kind {
        3 => &[b"_bucket", b"_sum", b"_count"],
        4 => &[b"_bucket", b"_gsum", b"_gcount"],
        5 => &[b"_sum", b"_count"],
        _ => &[],
    };
    for s in suffixes {
        if let Some(stem) = name.strip_suffix(*s) {
            return stem;
        }
    }
    name
}
