//! Remote write 1.0: `prometheus.WriteRequest` (prompb/remote.proto, prompb/types.proto).
//!
//! ```text
//! WriteRequest   { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
//! TimeSeries     { repeated Label labels = 1; repeated Sample samples = 2;
//!                  repeated Exemplar exemplars = 3; repeated Histogram histograms = 4; }
//! Label          { string name = 1; string value = 2; }
//! Exemplar       { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }
//! MetricMetadata { MetricType type = 1; string metric_family_name = 2; string help = 4;
//!                  string unit = 5; }
//! ```

use super::common::{histogram, sample};
use super::WriteStats;
use crate::error::{Error, ProtoFault, Result};
use crate::wire::{wt, Reader, Span, WT_FIXED64, WT_LEN, WT_VARINT};

pub fn scan(raw: &[u8]) -> Result<WriteStats> {
    let mut stats = WriteStats::default();
    let mut r = Reader::new(raw);
    while r.has_more() {
        let tag = r.tag()?;
        match tag.field {
            1 => {
                let span = r.message(tag, "WriteRequest.timeseries must be length-delimited")?;
                series(&r, span, &mut stats)?;
            }
            3 => {
                let span = r.message(tag, "WriteRequest.metadata must be length-delimited")?;
                metadata(&r, span)?;
                stats.metadata += 1;
            }
            // Remote write 2.0's symbols and timeseries: a 2.0 body sent as 1.0 would
            // otherwise count as empty. Mimir refuses it the same way.
            4 | 5 => {
                return Err(Error::proto(
                    ProtoFault::WrongProtocol,
                    tag.at,
                    "remote write 2.0 field in a 1.0 request (check Content-Type)",
                ))
            }
            _ => r.skip(tag)?,
        }
    }
    Ok(stats)
}

#[inline(always)]
fn series(parent: &Reader<'_>, span: Span, stats: &mut WriteStats) -> Result<()> {
    let mut r = parent.nested(span);
    let mut labels = 0u64;
    while r.has_more() {
        // Fast paths for the encodings every Prometheus-compatible sender produces; anything
        // else takes the general path below, which checks everything.
        let rest = r.rest();
        if let Some((name, value, used)) = canonical_label(rest) {
            stats.label_lengths(name, value);
            labels += 1;
            r.consume(used);
            continue;
        }
        if let Some(used) = canonical_sample(rest) {
            stats.samples += 1;
            r.consume(used);
            continue;
        }
        let tag = r.tag()?;
        match tag.field {
            1 => {
                let span = r.message(tag, "TimeSeries.labels must be length-delimited")?;
                let (name, value) = label(&r, span)?;
                stats.label_lengths(name, value);
                labels += 1;
            }
            2 => {
                let span = r.message(tag, "TimeSeries.samples must be length-delimited")?;
                sample(&r, span)?;
                stats.samples += 1;
            }
            3 => {
                let span = r.message(tag, "TimeSeries.exemplars must be length-delimited")?;
                exemplar(&r, span)?;
                stats.exemplars += 1;
            }
            4 => {
                let span = r.message(tag, "TimeSeries.histograms must be length-delimited")?;
                histogram(&r, span)?;
                stats.histograms += 1;
            }
            _ => r.skip(tag)?,
        }
    }
    stats.end_series(labels);
    Ok(())
}

/// `0a LL 0a NN <name> 12 VV <value>` with one-byte lengths: a label as every encoder writes
/// it. Returns (name length, value length, bytes used) only if the framing is exactly that.
#[inline(always)]
fn canonical_label(b: &[u8]) -> Option<(usize, usize, usize)> {
    let (&[0x0a, ll, 0x0a, nn], rest) = b.split_first_chunk::<4>()? else {
        return None;
    };
    let (ll, nn) = (usize::from(ll), usize::from(nn));
    if ll >= 0x80 || nn >= 0x80 || ll < nn + 4 || rest.len() < ll - 2 {
        return None;
    }
    let vv = ll - nn - 4;
    match rest.get(nn..nn + 2) {
        Some(&[0x12, v]) if usize::from(v) == vv => Some((nn, vv, ll + 2)),
        _ => None,
    }
}

/// `12 LL 09 <8 bytes> [10 <varint>]`: a sample (value, then timestamp if not zero).
#[inline(always)]
fn canonical_sample(b: &[u8]) -> Option<usize> {
    let (&[0x12, ll, 0x09], rest) = b.split_first_chunk::<3>()? else {
        return None;
    };
    let ll = usize::from(ll);
    if ll == 9 {
        return (rest.len() >= 8).then_some(11);
    }
    if !(12..=20).contains(&ll) || rest.len() < ll - 1 || rest.get(8) != Some(&0x10) {
        return None;
    }
    // The timestamp varint must end exactly at the end of the sample.
    let ts = rest.get(9..ll - 1)?;
    let (last, body) = ts.split_last()?;
    (*last < 0x80 && body.iter().all(|&x| x >= 0x80)).then_some(ll + 2)
}

/// Returns the byte lengths of the label's name and value (the last of each, as protobuf
/// merges repeated scalar fields).
#[inline(always)]
fn label(parent: &Reader<'_>, span: Span) -> Result<(usize, usize)> {
    let mut r = parent.nested(span);
    let (mut name, mut value) = (0, 0);
    while r.has_more() {
        let tag = r.tag()?;
        match tag.field {
            1 => name = r.message(tag, "Label.name must be length-delimited")?.len(),
            2 => value = r.message(tag, "Label.value must be length-delimited")?.len(),
            _ => r.skip(tag)?,
        }
    }
    Ok((name, value))
}

fn exemplar(parent: &Reader<'_>, span: Span) -> Result<()> {
    let mut r = parent.nested(span);
    while r.has_more() {
        let tag = r.tag()?;
        match tag.field {
            1 => {
                let span = r.message(tag, "Exemplar.labels must be length-delimited")?;
                label(&r, span)?;
            }
            2 => {
                r.expect(tag, WT_FIXED64, "Exemplar.value must be a double")?;
                r.skip(tag)?;
            }
            3 => {
                r.expect(tag, WT_VARINT, "Exemplar.timestamp must be a varint")?;
                r.skip(tag)?;
            }
            _ => r.skip(tag)?,
        }
    }
    Ok(())
}

fn metadata(parent: &Reader<'_>, span: Span) -> Result<()> {
    parent.nested(span).check_fields(
        |f| match f {
            1 => Some(wt(WT_VARINT)),
            2 | 4 | 5 => Some(wt(WT_LEN)),
            _ => None,
        },
        "wrong wire type in MetricMetadata",
    )
}
