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

use super::common::{exemplar_field, histogram, sample};
use super::WriteStats;
use crate::error::{Error, ProtoFault, Result};
use crate::wire::{wt, Reader, Span, WT_LEN, WT_VARINT};

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

/// One `TimeSeries`. Runs of labels and samples in the encoding every Prometheus-compatible
/// sender produces take a fast path; any other element takes the general path, which
/// checks everything, and the fast paths resume after it.
#[inline(always)]
fn series(parent: &Reader<'_>, span: Span, stats: &mut WriteStats) -> Result<()> {
    let buf = parent.buf();
    let (mut pos, end) = (span.start, span.end);
    let mut labels = 0u64;
    let (mut max_name, mut max_value) = (0usize, 0usize);
    loop {
        while let Some((name, value, next)) = canonical_label(buf, pos, end) {
            max_name = max_name.max(name);
            max_value = max_value.max(value);
            labels += 1;
            pos = next;
        }
        while let Some(next) = canonical_sample(buf, pos, end) {
            stats.samples += 1;
            pos = next;
        }
        while let Some(next) = canonical_exemplar(buf, pos, end) {
            stats.exemplars += 1;
            pos = next;
        }
        if pos >= end {
            break;
        }
        let mut r = parent.nested(Span { start: pos, end });
        element(&mut r, stats, &mut labels)?;
        pos = r.pos();
    }
    stats.label_lengths(max_name, max_value);
    stats.end_series(labels);
    Ok(())
}

/// One field of a `TimeSeries`, checked in full.
fn element(r: &mut Reader<'_>, stats: &mut WriteStats, labels: &mut u64) -> Result<()> {
    let tag = r.tag()?;
    match tag.field {
        1 => {
            let span = r.message(tag, "TimeSeries.labels must be length-delimited")?;
            let (name, value) = label(r, span)?;
            stats.label_lengths(name, value);
            *labels += 1;
        }
        2 => {
            let span = r.message(tag, "TimeSeries.samples must be length-delimited")?;
            sample(r, span)?;
            stats.samples += 1;
        }
        3 => {
            let span = r.message(tag, "TimeSeries.exemplars must be length-delimited")?;
            exemplar(r, span)?;
            stats.exemplars += 1;
        }
        4 => {
            let span = r.message(tag, "TimeSeries.histograms must be length-delimited")?;
            histogram(r, span)?;
            stats.histograms += 1;
        }
        _ => r.skip(tag)?,
    }
    Ok(())
}

/// `0a LL 0a NN <name> 12 VV <value>` with one-byte lengths at `pos`: a label as every
/// encoder writes it. Returns (name length, value length, next position) only if the framing
/// is exactly that and fits before `end`.
#[inline(always)]
fn canonical_label(buf: &[u8], pos: usize, end: usize) -> Option<(usize, usize, usize)> {
    let head = u32::from_le_bytes(*buf.get(pos..end)?.first_chunk::<4>()?);
    // Bytes 0 and 2 are 0x0a (field 1, length-delimited); bytes 1 and 3 are below 0x80.
    if head & 0x80ff_80ff != 0x000a_000a {
        return None;
    }
    let ll = ((head >> 8) & 0xff) as usize;
    let nn = (head >> 24) as usize;
    let next = pos + 2 + ll;
    if next > end || ll < nn + 4 {
        return None;
    }
    let vv = ll - nn - 4;
    match buf.get(pos + 4 + nn..pos + 6 + nn) {
        Some(&[0x12, v]) if usize::from(v) == vv => Some((nn, vv, next)),
        _ => None,
    }
}

/// `12 LL 09 <8 bytes> [10 <varint>]` at `pos`: a sample (value, then timestamp unless 0).
/// Returns the next position.
#[inline(always)]
fn canonical_sample(buf: &[u8], pos: usize, end: usize) -> Option<usize> {
    let b = buf.get(pos..end)?;
    let (&[0x12, ll, 0x09], rest) = b.split_first_chunk::<3>()? else {
        return None;
    };
    let ll = usize::from(ll);
    if ll == 9 {
        return (rest.len() >= 8).then_some(pos + 11);
    }
    if !(12..=20).contains(&ll) || rest.len() < ll - 1 || rest.get(8) != Some(&0x10) {
        return None;
    }
    // The timestamp varint must end exactly at the end of the sample.
    let ts = rest.get(9..ll - 1)?;
    canonical_varint(ts).then_some(pos + ll + 2)
}

/// `1a LL <canonical labels> [11 <8 bytes>] [18 <varint>]` at `pos`, with a one-byte length:
/// an exemplar. Returns the next position.
#[inline(always)]
fn canonical_exemplar(buf: &[u8], pos: usize, end: usize) -> Option<usize> {
    let &[0x1a, ll] = buf.get(pos..end)?.first_chunk::<2>()? else {
        return None;
    };
    let next = pos + 2 + usize::from(ll);
    if ll >= 0x80 || next > end {
        return None;
    }
    let mut p = pos + 2;
    while let Some((_, _, after)) = canonical_label(buf, p, next) {
        p = after;
    }
    if buf.get(p) == Some(&0x11) && p + 9 <= next {
        p += 9;
    }
    if p < next {
        let (&tag, ts) = buf.get(p..next)?.split_first()?;
        if tag != 0x18 || !canonical_varint(ts) {
            return None;
        }
    }
    Some(next)
}

/// `v` is exactly one varint that fits 64 bits (a 10th byte may only be 0 or 1).
#[inline(always)]
fn canonical_varint(v: &[u8]) -> bool {
    match v.split_last() {
        Some((&last, body)) => {
            last < 0x80
                && body.iter().all(|&x| x >= 0x80)
                && (v.len() < 10 || (v.len() == 10 && last <= 1))
        }
        None => false,
    }
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
            2 => {
                value = r
                    .message(tag, "Label.value must be length-delimited")?
                    .len()
            }
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
            _ => exemplar_field(&mut r, tag)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ProtoFault};

    fn series(inner: &[u8]) -> Vec<u8> {
        let mut b = vec![0x0a, u8::try_from(inner.len()).unwrap_or(0)];
        b.extend_from_slice(inner);
        b
    }

    fn fault(r: Result<WriteStats>) -> Option<(ProtoFault, usize)> {
        match r {
            Err(Error::Protobuf { fault, offset, .. }) => Some((fault, offset)),
            _ => None,
        }
    }

    #[test]
    fn canonical_label_is_counted() {
        // label a="bc", sample value 0 with timestamp 5
        let body = series(&[
            0x0a, 0x07, 0x0a, 0x01, b'a', 0x12, 0x02, b'b', b'c', 0x12, 0x0b, 0x09, 0, 0, 0, 0, 0,
            0, 0, 0, 0x10, 0x05,
        ]);
        let s = scan(&body).unwrap_or_default();
        assert_eq!((s.series, s.label_pairs, s.samples), (1, 1, 1));
        assert_eq!((s.max_label_name_length, s.max_label_value_length), (1, 2));
    }

    #[test]
    fn near_misses_of_the_fast_path_take_the_checked_path() {
        // The value length byte lies (says 2, one byte left): the label is truncated.
        let body = series(&[0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x02, b'b']);
        assert_eq!(fault(scan(&body)), Some((ProtoFault::Truncated, 8)));
        // An unknown field inside the label: not canonical, but valid.
        let body = series(&[0x0a, 0x08, 0x0a, 0x01, b'a', 0x18, 0x01, 0x12, 0x01, b'b']);
        let s = scan(&body).unwrap_or_default();
        assert_eq!((s.label_pairs, s.max_label_value_length), (1, 1));
        // A sample whose timestamp varint ends early: the tail is an invalid field.
        let body = series(&[0x12, 0x0c, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x05, 0x00]);
        assert_eq!(fault(scan(&body)), Some((ProtoFault::InvalidTag, 15)));
        // A sample value carried as a varint: wrong wire type.
        let body = series(&[0x12, 0x02, 0x08, 0x01]);
        assert_eq!(fault(scan(&body)), Some((ProtoFault::WrongWireType, 4)));
    }

    #[test]
    fn exemplar_fast_path_checks_its_tail() {
        // exemplar { labels {t="x"}, value, timestamp 1 }
        let ok = series(&[
            0x1a, 0x13, 0x0a, 0x06, 0x0a, 0x01, b't', 0x12, 0x01, b'x', 0x11, 0, 0, 0, 0, 0, 0, 0,
            0, 0x18, 0x01,
        ]);
        assert_eq!(scan(&ok).map(|s| s.exemplars), Ok(1));
        // Timestamp tag with a wrong wire type.
        let bad = series(&[
            0x1a, 0x13, 0x0a, 0x06, 0x0a, 0x01, b't', 0x12, 0x01, b'x', 0x11, 0, 0, 0, 0, 0, 0, 0,
            0, 0x1a, 0x00,
        ]);
        assert_eq!(fault(scan(&bad)), Some((ProtoFault::WrongWireType, 21)));
    }
}
