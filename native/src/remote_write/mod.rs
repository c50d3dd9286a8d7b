//! Counting what Mimir charges for a remote-write request, without building it.
//!
//! The scanners walk the protobuf once, validate its framing and the wire type of every
//! field they know, and count series, samples, histograms, exemplars, metadata and label
//! sizes. Nothing is copied out of the body.

mod v1;
mod v2;

use crate::error::{Error, Result};
use crate::snappy;
use crate::wire::{Reader, Span};

/// Counts from one remote-write request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub series: u64,
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
    pub metadata: u64,
    pub label_pairs: u64,
    pub max_labels_per_series: u64,
    pub max_label_name_length: u64,
    pub max_label_value_length: u64,
    pub decoded_bytes: u64,
}

impl WriteStats {
    /// What Mimir's ingestion-rate limiter charges: every sample, native histogram,
    /// exemplar and metadata entry counts one.
    pub const fn ingested(&self) -> u64 {
        self.samples
            .saturating_add(self.histograms)
            .saturating_add(self.exemplars)
            .saturating_add(self.metadata)
    }

    /// Close one series with `labels` label pairs.
    #[inline(always)]
    fn end_series(&mut self, labels: u64) {
        self.series += 1;
        self.label_pairs += labels;
        self.max_labels_per_series = self.max_labels_per_series.max(labels);
    }

    #[inline(always)]
    fn label_lengths(&mut self, name: usize, value: usize) {
        self.max_label_name_length = self.max_label_name_length.max(name as u64);
        self.max_label_value_length = self.max_label_value_length.max(value as u64);
    }
}

/// Which remote-write message a body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `prometheus.WriteRequest` (remote write 1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (remote write 2.0).
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Snappy,
    Identity,
}

impl Encoding {
    /// Parse a `Content-Encoding` value (case-insensitive, surrounding spaces ignored).
    pub fn parse(value: &str) -> Result<Self> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("snappy") {
            Ok(Self::Snappy)
        } else if v.eq_ignore_ascii_case("identity") {
            Ok(Self::Identity)
        } else {
            Err(Error::UnsupportedEncoding(value.to_string()))
        }
    }
}

const V2_PROTO: &str = "io.prometheus.write.v2.Request";
const V1_PROTO: &str = "prometheus.WriteRequest";

impl Protocol {
    /// Pick the message from a `Content-Type`, as Prometheus' remote-write spec negotiates it.
    ///
    /// No header (or an empty one) is remote write 1.0, as old senders send it.
    /// `application/x-protobuf` without `proto=` is 1.0; `proto=` must name 1.0 or 2.0.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self> {
        let Some(ct) = content_type else {
            return Ok(Self::V1);
        };
        if ct.trim().is_empty() {
            return Ok(Self::V1);
        }
        let unsupported = || Error::UnsupportedContentType(ct.to_string());
        let mut parts = ct.split(';');
        let media = parts.next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(unsupported());
        }
        let mut protocol = Self::V1;
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                if param.trim().is_empty() {
                    continue;
                }
                return Err(unsupported());
            };
            if !key.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            let value = value.trim().trim_matches('"');
            protocol = if value == V2_PROTO {
                Self::V2
            } else if value == V1_PROTO {
                Self::V1
            } else {
                return Err(unsupported());
            };
        }
        Ok(protocol)
    }
}

/// Decode (if snappy) and scan a body; the whole request path in one call.
pub fn scan(
    body: &[u8],
    encoding: Encoding,
    protocol: Protocol,
    max_decoded_bytes: u64,
) -> Result<WriteStats> {
    match encoding {
        Encoding::Snappy => {
            snappy::with_decoded(body, max_decoded_bytes, |raw| scan_decoded(raw, protocol))
        }
        Encoding::Identity => {
            snappy::check_limit(body.len(), max_decoded_bytes)?;
            scan_decoded(body, protocol)
        }
    }
}

/// Scan an uncompressed protobuf body.
pub fn scan_decoded(raw: &[u8], protocol: Protocol) -> Result<WriteStats> {
    let mut stats = match protocol {
        Protocol::V1 => v1::scan(raw)?,
        Protocol::V2 => v2::scan(raw)?,
    };
    stats.decoded_bytes = raw.len() as u64;
    Ok(stats)
}

/// Field-by-field checks shared by both versions.
mod common {
    use super::{Reader, Result, Span};
    use crate::wire::{wt, Tag, WT_FIXED64, WT_LEN, WT_VARINT};

    /// An `Exemplar` field other than its labels (`double value = 2; int64 timestamp = 3;`,
    /// same in 1.0 and 2.0): check the wire type of the known ones, skip the value.
    #[inline(always)]
    pub fn exemplar_field(r: &mut Reader<'_>, tag: Tag) -> Result<()> {
        match tag.field {
            2 => r.expect(tag, WT_FIXED64, "Exemplar.value must be a double")?,
            3 => r.expect(tag, WT_VARINT, "Exemplar.timestamp must be a varint")?,
            _ => {}
        }
        r.skip(tag)
    }

    /// `Sample { double value = 1; int64 timestamp = 2; }` (same in 1.0 and 2.0).
    #[inline(always)]
    pub fn sample(r: &Reader<'_>, span: Span) -> Result<()> {
        r.nested(span).check_fields(
            |f| match f {
                1 => Some(wt(WT_FIXED64)),
                2 => Some(wt(WT_VARINT)),
                _ => None,
            },
            "wrong wire type in Sample",
        )
    }

    /// `Histogram` (same field numbers in 1.0 and 2.0). Repeated scalars may be packed or not.
    pub fn histogram(r: &Reader<'_>, span: Span) -> Result<()> {
        r.nested(span).check_fields(
            |f| match f {
                1 | 4 | 6 | 14 | 15 => Some(wt(WT_VARINT)),
                2 | 3 | 5 | 7 => Some(wt(WT_FIXED64)),
                8 | 11 => Some(wt(WT_LEN)),
                9 | 12 => Some(wt(WT_LEN) | wt(WT_VARINT)),
                10 | 13 | 16 => Some(wt(WT_LEN) | wt(WT_FIXED64)),
                _ => None,
            },
            "wrong wire type in Histogram",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ok = |ct: Option<&str>| Protocol::from_content_type(ct);
        assert_eq!(ok(None), Ok(Protocol::V1));
        assert_eq!(ok(Some("")), Ok(Protocol::V1));
        assert_eq!(ok(Some("application/x-protobuf")), Ok(Protocol::V1));
        assert_eq!(
            ok(Some(
                "Application/X-Protobuf; proto=prometheus.WriteRequest"
            )),
            Ok(Protocol::V1)
        );
        assert_eq!(
            ok(Some(
                "application/x-protobuf;proto=io.prometheus.write.v2.Request"
            )),
            Ok(Protocol::V2)
        );
        assert_eq!(
            ok(Some(
                "application/x-protobuf; charset=utf-8; proto=\"io.prometheus.write.v2.Request\""
            )),
            Ok(Protocol::V2)
        );
        for bad in [
            "application/json",
            "text/plain",
            "application/x-protobuf;proto=foo.Bar",
            "application/x-protobuf;junk",
        ] {
            assert!(
                matches!(ok(Some(bad)), Err(Error::UnsupportedContentType(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(Encoding::parse("snappy"), Ok(Encoding::Snappy));
        assert_eq!(Encoding::parse(" SNAPPY "), Ok(Encoding::Snappy));
        assert_eq!(Encoding::parse("identity"), Ok(Encoding::Identity));
        assert!(matches!(
            Encoding::parse("gzip"),
            Err(Error::UnsupportedEncoding(_))
        ));
        assert!(matches!(
            Encoding::parse(""),
            Err(Error::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn identity_bodies_are_capped_too() {
        let body = [0u8; 100];
        assert_eq!(
            scan(&body, Encoding::Identity, Protocol::V1, 99),
            Err(Error::TooLarge {
                declared: 100,
                limit: 99
            })
        );
    }
}
