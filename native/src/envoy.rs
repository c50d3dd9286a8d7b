//! Envoy's ext_authz and rate limit service messages, read from and written to gRPC bytes.
//!
//! The gRPC handler hands the raw request message here once and sends back the bytes the
//! encoders below produce; no protobuf objects exist in between. Parsing never allocates
//! and never panics: accessors return slices of the request buffer.
//!
//! ```text
//! envoy.service.auth.v3
//!   CheckRequest       { AttributeContext attributes = 1; }
//!   AttributeContext   { Peer source = 1; Peer destination = 2; Request request = 4;
//!                        map<string,string> context_extensions = 10; Metadata metadata_context = 11;
//!                        TLSSession tls_session = 12; Metadata route_metadata_context = 13; }
//!   .Request           { Timestamp time = 1; HttpRequest http = 2; }
//!   .HttpRequest       { string id = 1; string method = 2; map<string,string> headers = 3;
//!                        string path = 4; host = 5; scheme = 6; query = 7; fragment = 8;
//!                        int64 size = 9; string protocol = 10; string body = 11;
//!                        bytes raw_body = 12; HeaderMap header_map = 13; }
//!   CheckResponse      { google.rpc.Status status = 1; DeniedHttpResponse denied_response = 2;
//!                        OkHttpResponse ok_response = 3; }
//!   DeniedHttpResponse { HttpStatus status = 1; repeated HeaderValueOption headers = 2;
//!                        string body = 3; }
//!   OkHttpResponse     { repeated HeaderValueOption headers = 2; }
//! envoy.config.core.v3
//!   HeaderMap          { repeated HeaderValue headers = 1; }
//!   HeaderValue        { string key = 1; string value = 2; bytes raw_value = 3; }
//!   HeaderValueOption  { HeaderValue header = 1; }
//! google.rpc.Status    { int32 code = 1; string message = 2; }
//! envoy.type.v3.HttpStatus { StatusCode code = 1; }
//! envoy.service.ratelimit.v3
//!   RateLimitRequest   { string domain = 1; repeated RateLimitDescriptor descriptors = 2;
//!                        uint32 hits_addend = 3; }
//!   RateLimitResponse  { Code overall_code = 1; repeated DescriptorStatus statuses = 2;
//!                        repeated HeaderValue response_headers_to_add = 3; }
//!   .DescriptorStatus  { Code code = 1; RateLimit current_limit = 2; uint32 limit_remaining = 3;
//!                        google.protobuf.Duration duration_until_reset = 4; }
//!   .RateLimit         { uint32 requests_per_unit = 1; Unit unit = 2; string name = 3; }
//! envoy.extensions.common.ratelimit.v3
//!   RateLimitDescriptor { repeated Entry entries = 1; RateLimitOverride limit = 2;
//!                         google.protobuf.UInt64Value hits_addend = 3; }
//!   .Entry              { string key = 1; string value = 2; }
//! ```
//!
//! Reading follows protobuf's rules: a repeated scalar field keeps its last value, and a
//! message field that occurs more than once is the merge of its occurrences. Every field the
//! accessors read, and every message on the way to them, is checked when the request is
//! parsed (framing and wire types; string contents are not checked for UTF-8), so the
//! accessors cannot fail. Errors are [`Error::Protobuf`] with absolute byte offsets, as in
//! [`crate::wire`].
//!
//! Encoders append to `out` exactly what the Python protobuf runtime serializes for the same
//! message: fields in field-number order, proto3 defaults (0, "") omitted, message fields
//! written when set even if empty. Lengths are computed before writing, so nothing moves.

use crate::error::Result;
use crate::wire::{Reader, Span, WT_VARINT};

/// An absent length-delimited field: the empty slice.
const NONE: Span = Span { start: 0, end: 0 };

// ------------------------------------------------------------------------------------------
// ext_authz: CheckRequest
// ------------------------------------------------------------------------------------------

/// Where the request's `HttpRequest` is.
#[derive(Clone, Copy, Debug)]
enum Http {
    /// No `attributes.request.http` at all.
    Absent,
    /// Exactly one occurrence (what Envoy sends): header lookups walk only it.
    One(Span),
    /// Several occurrences, which protobuf merges: header lookups walk all from the root.
    Split,
}

/// An `envoy.service.auth.v3.CheckRequest`, borrowed from the gRPC message bytes.
///
/// Only `attributes.request.http` is read; everything else (peers, time, metadata, context
/// extensions) is framing-checked and skipped.
#[derive(Clone, Copy, Debug)]
pub struct CheckRequest<'a> {
    buf: &'a [u8],
    http: Http,
    method: Span,
    path: Span,
    size: Option<i64>,
    body: Option<Span>,
    raw_body: Option<Span>,
}

impl<'a> CheckRequest<'a> {
    /// Parse and check a `CheckRequest`. Errors are [`crate::Error::Protobuf`] pointing at
    /// the offending byte of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut req = Self {
            buf,
            http: Http::Absent,
            method: NONE,
            path: NONE,
            size: None,
            body: None,
            raw_body: None,
        };
        let mut r = Reader::new(buf);
        while r.has_more() {
            let tag = r.tag()?;
            match tag.field {
                1 => {
                    let span =
                        r.message(tag, "CheckRequest.attributes must be length-delimited")?;
                    req.attributes(r.nested(span))?;
                }
                _ => r.skip(tag)?,
            }
        }
        Ok(req)
    }

    fn attributes(&mut self, mut r: Reader<'a>) -> Result<()> {
        while r.has_more() {
            let tag = r.tag()?;
            match tag.field {
                4 => {
                    let span =
                        r.message(tag, "AttributeContext.request must be length-delimited")?;
                    self.request(r.nested(span))?;
                }
                1 | 2 | 10..=13 => {
                    r.message(
                        tag,
                        "AttributeContext message fields must be length-delimited",
                    )?;
                }
                _ => r.skip(tag)?,
            }
        }
        Ok(())
    }

    fn request(&mut self, mut r: Reader<'a>) -> Result<()> {
        while r.has_more() {
            let tag = r.tag()?;
            match tag.field {
                1 => {
                    r.message(
                        tag,
                        "AttributeContext.Request.time must be length-delimited",
                    )?;
                }
                2 => {
                    let span = r.message(
                        tag,
                        "AttributeContext.Request.http must be length-delimited",
                    )?;
                    self.http = match self.http {
                        Http::Absent => Http::One(span),
                        Http::One(_) | Http::Split => Http::Split,
                    };
                    self.http_request(r.nested(span))?;
                }
                _ => r.skip(tag)?,
            }
        }
        Ok(())
    }

    fn http_request(&mut self, mut r: Reader<'a>) -> Result<()> {
        while r.has_more() {
            let tag = r.tag()?;
            match tag.field {
                2 => self.method = r.message(tag, "HttpRequest.method must be length-delimited")?,
                3 => {
                    let span = r.message(tag, "HttpRequest.headers must be length-delimited")?;
                    map_entry(r.nested(span))?;
                }
                4 => self.path = r.message(tag, "HttpRequest.path must be length-delimited")?,
                9 => {
                    r.expect(tag, WT_VARINT, "HttpRequest.size must be a varint")?;
                    // int64: the varint is the two's-complement bit pattern.
                    self.size = Some(r.varint()? as i64);
                }
                11 => {
                    self.body = Some(r.message(tag, "HttpRequest.body must be length-delimited")?)
                }
                12 => {
                    self.raw_body =
                        Some(r.message(tag, "HttpRequest.raw_body must be length-delimited")?);
                }
                13 => {
                    let span = r.message(tag, "HttpRequest.header_map must be length-delimited")?;
                    header_map(r.nested(span), |_, _| false)?;
                }
                1 | 5..=8 | 10 => {
                    r.message(tag, "HttpRequest string fields must be length-delimited")?;
                }
                _ => r.skip(tag)?,
            }
        }
        Ok(())
    }

    fn bytes(&self, span: Span) -> &'a [u8] {
        self.buf.get(span.start..span.end).unwrap_or_default()
    }

    /// The value of request header `lowercase_name`, from the `headers` map (field 3) or the
    /// `header_map` (field 13, `raw_value` if that field is on the wire, else `value`), in
    /// wire order; the first match wins (for a `headers` map with a repeated key protobuf
    /// would keep the last, but Envoy never sends one). Names compare ASCII
    /// case-insensitively (Envoy sends them lowercased anyway).
    ///
    /// With the `headers` map Envoy joins repeated headers with "," and replaces invalid
    /// UTF-8 in values; with `header_map` (`encode_raw_headers: true`) it sends each
    /// occurrence as its own entry with the raw bytes, and this returns the first.
    pub fn header(&self, lowercase_name: &[u8]) -> Option<&'a [u8]> {
        let reader = Reader::new(self.buf);
        match self.http {
            Http::Absent => None,
            Http::One(span) => find_header(reader.nested(span), lowercase_name),
            Http::Split => {
                let mut found = None;
                // Framing was checked by `parse`, so the walk cannot fail.
                let _ = each_nested(reader, &[1, 4, 2], &mut |http: Reader<'a>| {
                    found = find_header(http, lowercase_name);
                    found.is_some()
                });
                found
            }
        }
    }

    /// The request body: `raw_body` if that field is on the wire (Envoy's
    /// `with_request_body.pack_as_bytes: true`), else `body`, else empty.
    ///
    /// Envoy sends at most `with_request_body.max_request_bytes` of it; it adds the request
    /// header `x-envoy-auth-partial-body: true` when it cut the body. As `body` (a string)
    /// Envoy replaces invalid UTF-8, which mangles binary bodies: use `pack_as_bytes`.
    pub fn body(&self) -> &'a [u8] {
        self.raw_body
            .or(self.body)
            .map_or(&[][..], |span| self.bytes(span))
    }

    /// Whether `raw_body` or `body` was on the wire at all. Proto3 serializers omit empty
    /// values, so a buffered but empty body is absent too; Envoy's
    /// `x-envoy-auth-partial-body` header tells whether the body was buffered.
    pub fn has_body(&self) -> bool {
        self.raw_body.is_some() || self.body.is_some()
    }

    /// `HttpRequest.method` (the `:method` pseudo-header), empty if absent.
    pub fn method(&self) -> &'a [u8] {
        self.bytes(self.method)
    }

    /// `HttpRequest.path` (`:path`, with the query string), empty if absent.
    pub fn path(&self) -> &'a [u8] {
        self.bytes(self.path)
    }

    /// `HttpRequest.size`, or -1 when the field is absent. Envoy fills it with the bytes
    /// received on the stream so far (not `content-length`), so it is 0 (absent, hence -1)
    /// unless the body was buffered.
    pub fn size(&self) -> i64 {
        self.size.unwrap_or(-1)
    }
}

/// Call `f` with a reader over every occurrence of the message at `path` (field numbers from
/// the root of `r`), in wire order, until `f` returns true.
fn each_nested<'a>(
    mut r: Reader<'a>,
    path: &[u32],
    f: &mut impl FnMut(Reader<'a>) -> bool,
) -> Result<bool> {
    let Some((&field, rest)) = path.split_first() else {
        return Ok(false);
    };
    while r.has_more() {
        let tag = r.tag()?;
        if tag.field != field {
            r.skip(tag)?;
            continue;
        }
        let span = r.message(tag, "expected a length-delimited message")?;
        let nested = r.nested(span);
        let done = if rest.is_empty() {
            f(nested)
        } else {
            each_nested(nested, rest, f)?
        };
        if done {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The first header named `name` (ASCII case-insensitively) in one `HttpRequest`.
fn find_header<'a>(mut r: Reader<'a>, name: &[u8]) -> Option<&'a [u8]> {
    while r.has_more() {
        let tag = r.tag().ok()?;
        match tag.field {
            3 => {
                let span = r.len_delim().ok()?;
                let (key, value) = map_entry(r.nested(span)).ok()?;
                if r.bytes(key).eq_ignore_ascii_case(name) {
                    return Some(r.bytes(value));
                }
            }
            13 => {
                let span = r.len_delim().ok()?;
                let mut found = None;
                header_map(r.nested(span), |key, value| {
                    let hit = key.eq_ignore_ascii_case(name);
                    if hit {
                        found = Some(value);
                    }
                    hit
                })
                .ok()?;
                if found.is_some() {
                    return found;
                }
            }
            _ => r.skip(tag).ok()?,
        }
    }
    None
}

/// A `map<string, string>` entry: (key, value), each empty if absent.
fn map_entry(mut r: Reader<'_>) -> Result<(Span, Span)> {
    let (mut key, mut value) = (NONE, NONE);
    while r.has_more() {
        let tag = r.tag()?;
        match tag.field {
            1 => key = r.message(tag, "map entry key must be length-delimited")?,
            2 => value = r.message(tag, "map entry value must be length-delimited")?,
            _ => r.skip(tag)?,
        }
    }
    Ok((key, value))
}

/// Walk a `HeaderMap`, calling `f(key, value)` for each `HeaderValue` until it returns true.
/// The value is `raw_value` if that field is on the wire, else `value`.
fn header_map<'a>(mut r: Reader<'a>, mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool) -> Result<()> {
    while r.has_more() {
        let tag = r.tag()?;
        if tag.field != 1 {
            r.skip(tag)?;
            continue;
        }
        let span = r.message(tag, "HeaderMap.headers must be length-delimited")?;
        let mut h = r.nested(span);
        let (mut key, mut value, mut raw) = (NONE, NONE, None);
        while h.has_more() {
            let tag = h.tag()?;
            match tag.field {
                1 => key = h.message(tag, "HeaderValue.key must be length-delimited")?,
                2 => value = h.message(tag, "HeaderValue.value must be length-delimited")?,
                3 => raw = Some(h.message(tag, "HeaderValue.raw_value must be length-delimited")?),
                _ => h.skip(tag)?,
            }
        }
        if f(r.bytes(key), r.bytes(raw.unwrap_or(value))) {
            break;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// ext_authz: CheckResponse
// ------------------------------------------------------------------------------------------

/// A response header to send, as an `envoy.config.core.v3.HeaderValue` (`key`, `value`).
/// Envoy lowercases names; the caller passes valid header names and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// Append a `CheckResponse` that lets the request through: `status {}` (code OK) and
/// `ok_response { headers: [...] }`, each header a `HeaderValueOption { header }` (Envoy then
/// sets, not appends, the header on the upstream request). Both messages are written even
/// when empty (`0a 00 1a 00`), as protobuf does for set message fields.
pub fn encode_check_ok(headers_to_add: &[Header<'_>], out: &mut Vec<u8>) {
    use write::*;
    let status = Status {
        code: 0,
        message: "",
    };
    let ok = OkHttpResponse(headers_to_add);
    out.reserve(msg_len(1, &status) + msg_len(3, &ok));
    put_msg(out, 1, &status);
    put_msg(out, 3, &ok);
}

/// Append a `CheckResponse` that refuses the request: `status { code: grpc_code, message:
/// grpc_message }` and `denied_response { status { code: http_status }, headers, body }`.
/// Envoy decides on `grpc_code` alone: 0 (OK) lets the request through, so never pass 0
/// here. It answers the client with `http_status` (403 when 0), `headers` (set, not
/// appended) and `body`; `grpc_message` only reaches Envoy's traces and logs. Zero and empty
/// values are omitted, as protobuf does; `http_status` is an enum on the wire, so keep it
/// below 2^31.
pub fn encode_check_denied(
    grpc_code: i32,
    grpc_message: &str,
    http_status: u32,
    headers: &[Header<'_>],
    body: &str,
    out: &mut Vec<u8>,
) {
    use write::*;
    let status = Status {
        code: grpc_code,
        message: grpc_message,
    };
    let denied = DeniedHttpResponse {
        http_status,
        headers,
        body,
    };
    out.reserve(msg_len(1, &status) + msg_len(2, &denied));
    put_msg(out, 1, &status);
    put_msg(out, 2, &denied);
}

// ------------------------------------------------------------------------------------------
// ratelimit: RateLimitRequest
// ------------------------------------------------------------------------------------------

/// An `envoy.service.ratelimit.v3.RateLimitRequest`, borrowed from the gRPC message bytes.
/// `parse` checks the whole message, descriptors included.
#[derive(Clone, Copy, Debug)]
pub struct RateLimitRequest<'a> {
    buf: &'a [u8],
    domain: Span,
    hits_addend: u32,
}

impl<'a> RateLimitRequest<'a> {
    /// Parse and check a `RateLimitRequest`. Errors are [`crate::Error::Protobuf`] pointing at
    /// the offending byte of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut req = Self {
            buf,
            domain: NONE,
            hits_addend: 0,
        };
        let mut r = Reader::new(buf);
        while r.has_more() {
            let tag = r.tag()?;
            match tag.field {
                1 => {
                    req.domain =
                        r.message(tag, "RateLimitRequest.domain must be length-delimited")?
                }
                2 => {
                    let span =
                        r.message(tag, "RateLimitRequest.descriptors must be length-delimited")?;
                    Descriptor::parse(&r, span)?;
                }
                3 => {
                    r.expect(
                        tag,
                        WT_VARINT,
                        "RateLimitRequest.hits_addend must be a varint",
                    )?;
                    // uint32 from a varint keeps the low 32 bits, as protobuf parsers do.
                    req.hits_addend = r.varint()? as u32;
                }
                _ => r.skip(tag)?,
            }
        }
        Ok(req)
    }

    /// `domain`, empty if absent.
    pub fn domain(&self) -> &'a [u8] {
        self.buf
            .get(self.domain.start..self.domain.end)
            .unwrap_or_default()
    }

    /// The request-level `hits_addend`, 0 if absent. Envoy's semantics, not applied here:
    /// 0 means 1 hit, and a descriptor's own [`Descriptor::hits_addend`] overrides this.
    pub fn hits_addend(&self) -> u32 {
        self.hits_addend
    }

    /// The descriptors (field 2) in wire order, walked lazily. `parse` checked them all, so
    /// no item is an `Err`; the `Result` keeps the walk honest if that ever changes.
    pub fn descriptors(&self) -> impl Iterator<Item = Result<Descriptor<'a>>> {
        let mut r = Reader::new(self.buf);
        std::iter::from_fn(move || {
            while r.has_more() {
                let step = r.tag().and_then(|tag| {
                    if tag.field == 2 {
                        let span = r.message(tag, "descriptors must be length-delimited")?;
                        Descriptor::parse(&r, span).map(Some)
                    } else {
                        r.skip(tag).map(|()| None)
                    }
                });
                match step {
                    Ok(None) => continue,
                    Ok(Some(d)) => return Some(Ok(d)),
                    Err(e) => {
                        r = Reader::new(&[]);
                        return Some(Err(e));
                    }
                }
            }
            None
        })
    }
}

/// One `RateLimitDescriptor` of a [`RateLimitRequest`]. Its `limit` override is not read.
#[derive(Clone, Copy, Debug)]
pub struct Descriptor<'a> {
    buf: &'a [u8],
    /// The descriptor's message in `buf`.
    span: Span,
    hits_addend: Option<u64>,
}

impl<'a> Descriptor<'a> {
    /// Check the descriptor message `span` of `parent`'s buffer and read its `hits_addend`.
    fn parse(parent: &Reader<'a>, span: Span) -> Result<Self> {
        let mut hits_addend = None;
        let mut w = parent.nested(span);
        while w.has_more() {
            let tag = w.tag()?;
            match tag.field {
                1 => {
                    let span =
                        w.message(tag, "RateLimitDescriptor.entries must be length-delimited")?;
                    map_entry(w.nested(span))?;
                }
                2 => {
                    w.message(tag, "RateLimitDescriptor.limit must be length-delimited")?;
                }
                3 => {
                    let span = w.message(
                        tag,
                        "RateLimitDescriptor.hits_addend must be length-delimited",
                    )?;
                    // google.protobuf.UInt64Value { uint64 value = 1; }; a second occurrence
                    // merges into the first, so an absent value keeps the earlier one.
                    let mut v = w.nested(span);
                    let mut value = hits_addend.unwrap_or(0);
                    while v.has_more() {
                        let tag = v.tag()?;
                        if tag.field == 1 {
                            v.expect(tag, WT_VARINT, "UInt64Value.value must be a varint")?;
                            value = v.varint()?;
                        } else {
                            v.skip(tag)?;
                        }
                    }
                    hits_addend = Some(value);
                }
                _ => w.skip(tag)?,
            }
        }
        Ok(Self {
            buf: parent.buf(),
            span,
            hits_addend,
        })
    }

    /// The value of the first entry whose key is exactly `key`.
    pub fn entry(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.entries()
            .filter_map(Result::ok)
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The (key, value) entries in wire order. The descriptor was checked when it was
    /// parsed, so no item is an `Err`.
    pub fn entries(&self) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8])>> {
        let mut r = Reader::new(self.buf).nested(self.span);
        std::iter::from_fn(move || {
            while r.has_more() {
                let step = r.tag().and_then(|tag| {
                    if tag.field == 1 {
                        let span = r.message(tag, "entries must be length-delimited")?;
                        let (k, v) = map_entry(r.nested(span))?;
                        Ok(Some((r.bytes(k), r.bytes(v))))
                    } else {
                        r.skip(tag).map(|()| None)
                    }
                });
                match step {
                    Ok(None) => continue,
                    Ok(Some(kv)) => return Some(Ok(kv)),
                    Err(e) => {
                        r = Reader::new(&[]);
                        return Some(Err(e));
                    }
                }
            }
            None
        })
    }

    /// The descriptor's `hits_addend` (a `UInt64Value`), `None` if absent. When present it
    /// overrides the request's [`RateLimitRequest::hits_addend`], and `Some(0)` is a real 0
    /// (it is a wrapper precisely so that 0 can be told from absent).
    pub fn hits_addend(&self) -> Option<u64> {
        self.hits_addend
    }
}

// ------------------------------------------------------------------------------------------
// ratelimit: RateLimitResponse
// ------------------------------------------------------------------------------------------

/// `RateLimitResponse.Code` (UNKNOWN = 0 is never sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RlsCode {
    /// Under the limit (or no limit applies).
    Ok = 1,
    /// Over the limit: overall, Envoy answers 429 (or what `rate_limited_status` says).
    OverLimit = 2,
}

/// One `RateLimitResponse.DescriptorStatus`, for the descriptor at the same index of the
/// request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorStatus<'a> {
    /// This descriptor's verdict.
    pub code: RlsCode,
    /// `current_limit.requests_per_unit`.
    pub requests_per_unit: u32,
    /// `current_limit.unit`: 1 SECOND, 2 MINUTE, 3 HOUR, 4 DAY, 5 MONTH, 6 YEAR, 7 WEEK.
    pub unit: u32,
    /// `current_limit.name`. `current_limit` is written unless `requests_per_unit`, `unit`
    /// and `limit_name` are all zero/empty, which means "no limit applies".
    pub limit_name: &'a str,
    /// `limit_remaining`: hits left in the current window (omitted when 0).
    pub limit_remaining: u32,
    /// `duration_until_reset`, written unless 0.
    pub until_reset_ns: u64,
}

/// Append a `RateLimitResponse`: `overall_code`, `statuses` and `response_headers_to_add`
/// (which Envoy adds to the response to the client, e.g. `x-ratelimit-*`, `retry-after`).
pub fn encode_rate_limit_response(
    overall: RlsCode,
    statuses: &[DescriptorStatus<'_>],
    response_headers: &[Header<'_>],
    out: &mut Vec<u8>,
) {
    use write::*;
    let statuses = statuses.iter().map(DescriptorStatusMsg);
    let headers = response_headers.iter().map(HeaderValue);
    let len = varint_field_len(1, overall as u64)
        + statuses.clone().map(|s| msg_len(2, &s)).sum::<usize>()
        + headers.clone().map(|h| msg_len(3, &h)).sum::<usize>();
    out.reserve(len);
    put_varint_field(out, 1, overall as u64);
    for s in statuses {
        put_msg(out, 2, &s);
    }
    for h in headers {
        put_msg(out, 3, &h);
    }
}

/// The protobuf writer: each message knows its encoded length, so a length-delimited field
/// writes its length prefix and then the message, with no buffering or patching.
mod write {
    use super::{DescriptorStatus, Header};

    const WT_VARINT: u64 = 0;
    const WT_LEN: u64 = 2;

    /// A message body (without its own key and length).
    pub(super) trait Message {
        fn len(&self) -> usize;
        fn put(&self, out: &mut Vec<u8>);
    }

    pub(super) const fn varint_len(v: u64) -> usize {
        // One byte per 7 significant bits; 0 takes one byte.
        (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
    }

    pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            // Truncation intended: the low 7 bits plus the continuation bit.
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    const fn key(field: u32, wire_type: u64) -> u64 {
        (field as u64) << 3 | wire_type
    }

    pub(super) const fn varint_field_len(field: u32, v: u64) -> usize {
        varint_len(key(field, WT_VARINT)) + varint_len(v)
    }

    pub(super) fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
        put_varint(out, key(field, WT_VARINT));
        put_varint(out, v);
    }

    /// A proto3 scalar varint field: omitted when 0.
    fn opt_varint_len(field: u32, v: u64) -> usize {
        if v == 0 {
            0
        } else {
            varint_field_len(field, v)
        }
    }

    fn put_opt_varint(out: &mut Vec<u8>, field: u32, v: u64) {
        if v != 0 {
            put_varint_field(out, field, v);
        }
    }

    /// An int32 or enum value on the wire: negative values sign-extend to 10 bytes.
    const fn int32(v: i32) -> u64 {
        v as i64 as u64
    }

    const fn len_field_len(field: u32, len: usize) -> usize {
        varint_len(key(field, WT_LEN)) + varint_len(len as u64) + len
    }

    fn put_len_prefix(out: &mut Vec<u8>, field: u32, len: usize) {
        put_varint(out, key(field, WT_LEN));
        put_varint(out, len as u64);
    }

    /// A proto3 string field: omitted when empty.
    fn str_len(field: u32, s: &str) -> usize {
        if s.is_empty() {
            0
        } else {
            len_field_len(field, s.len())
        }
    }

    fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
        if !s.is_empty() {
            put_len_prefix(out, field, s.len());
            out.extend_from_slice(s.as_bytes());
        }
    }

    /// A set message field (written even when empty).
    pub(super) fn msg_len(field: u32, m: &impl Message) -> usize {
        len_field_len(field, m.len())
    }

    pub(super) fn put_msg(out: &mut Vec<u8>, field: u32, m: &impl Message) {
        let len = m.len();
        put_len_prefix(out, field, len);
        let start = out.len();
        m.put(out);
        debug_assert_eq!(out.len() - start, len, "message length mismatch");
    }

    /// `google.rpc.Status { int32 code = 1; string message = 2; }`
    pub(super) struct Status<'a> {
        pub code: i32,
        pub message: &'a str,
    }

    impl Message for Status<'_> {
        fn len(&self) -> usize {
            opt_varint_len(1, int32(self.code)) + str_len(2, self.message)
        }
        fn put(&self, out: &mut Vec<u8>) {
            put_opt_varint(out, 1, int32(self.code));
            put_str(out, 2, self.message);
        }
    }

    /// `envoy.config.core.v3.HeaderValue { string key = 1; string value = 2; }`
    #[derive(Clone, Copy)]
    pub(super) struct HeaderValue<'h, 'a>(pub &'h Header<'a>);

    impl Message for HeaderValue<'_, '_> {
        fn len(&self) -> usize {
            str_len(1, self.0.name) + str_len(2, self.0.value)
        }
        fn put(&self, out: &mut Vec<u8>) {
            put_str(out, 1, self.0.name);
            put_str(out, 2, self.0.value);
        }
    }

    /// `envoy.config.core.v3.HeaderValueOption { HeaderValue header = 1; }`
    struct HeaderValueOption<'h, 'a>(&'h Header<'a>);

    impl Message for HeaderValueOption<'_, '_> {
        fn len(&self) -> usize {
            msg_len(1, &HeaderValue(self.0))
        }
        fn put(&self, out: &mut Vec<u8>) {
            put_msg(out, 1, &HeaderValue(self.0));
        }
    }

    fn options_len(field: u32, headers: &[Header<'_>]) -> usize {
        headers
            .iter()
            .map(|h| msg_len(field, &HeaderValueOption(h)))
            .sum()
    }

    fn put_options(out: &mut Vec<u8>, field: u32, headers: &[Header<'_>]) {
        for h in headers {
            put_msg(out, field, &HeaderValueOption(h));
        }
    }

    /// `envoy.service.auth.v3.OkHttpResponse { repeated HeaderValueOption headers = 2; }`
    pub(super) struct OkHttpResponse<'h, 'a>(pub &'h [Header<'a>]);

    impl Message for OkHttpResponse<'_, '_> {
        fn len(&self) -> usize {
            options_len(2, self.0)
        }
        fn put(&self, out: &mut Vec<u8>) {
            put_options(out, 2, self.0);
        }
    }

    /// `envoy.type.v3.HttpStatus { StatusCode code = 1; }`
    struct HttpStatus(u32);

    impl Message for HttpStatus {
        fn len(&self) -> usize {
            opt_varint_len(1, int32(self.0 as i32))
        }
        fn put(&self, out: &mut Vec<u8>) {
            put_opt_varint(out, 1, int32(self.0 as i32));
        }
    }

    /// `envoy.service.auth.v3.DeniedHttpResponse { HttpStatus status = 1;
    /// repeated HeaderValueOption headers = 2; string body = 3; }`
    pub(super) struct DeniedHttpResponse<'h, 'a> {
        pub http_status: u32,
        pub headers: &'h [Header<'a>],
        pub body: &'h str,
    }

    impl Message for DeniedHttpResponse<'_, '_> {
        fn len(&self) -> usize {
            msg_len(1, &HttpStatus(self.http_status))
                + options_len(2, self.headers)
                + str_len(3, self.body)
        }
        fn put(&self, out: &mut Vec<u8>) {
            put_msg(out, 1, &HttpStatus(self.http_status));
            put_options(out, 2, self.headers);
            put_str(out, 3, self.body);
        }
    }

    /// `RateLimitResponse.RateLimit { uint32 requests_per_unit = 1; Unit unit = 2;
    /// string name = 3; }`
    struct RateLimit<'a> {
        requests_per_unit: u32,
        unit: u32,
        name: &'a str,
    }

    impl Message for RateLimit<'_> {
        fn len(&self) -> usize {
            opt_varint_len(1, u64::from(self.requests_per_unit))
                + opt_varint_len(2, int32(self.unit as i32))
                + str_len(3, self.name)
        }
        fn put(&self, out: &mut Vec<u8>) {
            put_opt_varint(out, 1, u64::from(self.requests_per_unit));
            put_opt_varint(out, 2, int32(self.unit as i32));
            put_str(out, 3, self.name);
        }
    }

    /// `google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; }` from nanoseconds.
    struct Duration(u64);

    impl Duration {
        const fn parts(&self) -> (u64, u64) {
            (self.0 / 1_000_000_000, self.0 % 1_000_000_000)
        }
    }

    impl Message for Duration {
        fn len(&self) -> usize {
            let (s, n) = self.parts();
            opt_varint_len(1, s) + opt_varint_len(2, n)
        }
        fn put(&self, out: &mut Vec<u8>) {
            let (s, n) = self.parts();
            put_opt_varint(out, 1, s);
            put_opt_varint(out, 2, n);
        }
    }

    /// `RateLimitResponse.DescriptorStatus { Code code = 1; RateLimit current_limit = 2;
    /// uint32 limit_remaining = 3; Duration duration_until_reset = 4; }`
    #[derive(Clone, Copy)]
    pub(super) struct DescriptorStatusMsg<'s, 'a>(pub &'s DescriptorStatus<'a>);

    impl DescriptorStatusMsg<'_, '_> {
        fn limit(&self) -> Option<RateLimit<'_>> {
            let s = self.0;
            (s.requests_per_unit != 0 || s.unit != 0 || !s.limit_name.is_empty()).then_some(
                RateLimit {
                    requests_per_unit: s.requests_per_unit,
                    unit: s.unit,
                    name: s.limit_name,
                },
            )
        }

        fn until_reset(&self) -> Option<Duration> {
            (self.0.until_reset_ns != 0).then_some(Duration(self.0.until_reset_ns))
        }
    }

    impl Message for DescriptorStatusMsg<'_, '_> {
        fn len(&self) -> usize {
            opt_varint_len(1, self.0.code as u64)
                + self.limit().map_or(0, |l| msg_len(2, &l))
                + opt_varint_len(3, u64::from(self.0.limit_remaining))
                + self.until_reset().map_or(0, |d| msg_len(4, &d))
        }
        fn put(&self, out: &mut Vec<u8>) {
            put_opt_varint(out, 1, self.0.code as u64);
            if let Some(l) = self.limit() {
                put_msg(out, 2, &l);
            }
            put_opt_varint(out, 3, u64::from(self.0.limit_remaining));
            if let Some(d) = self.until_reset() {
                put_msg(out, 4, &d);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn varint_lengths_match_the_writer() {
            for shift in 0..64 {
                for v in [
                    1u64 << shift,
                    (1u64 << shift) - 1,
                    (1u64 << shift) + 1,
                    u64::MAX,
                ] {
                    let mut out = Vec::new();
                    put_varint(&mut out, v);
                    assert_eq!(out.len(), varint_len(v), "{v}");
                }
            }
            assert_eq!(varint_len(0), 1);
            assert_eq!(varint_len(127), 1);
            assert_eq!(varint_len(128), 2);
            assert_eq!(varint_len(u64::MAX), 10);
        }

        #[test]
        fn negative_int32_sign_extends() {
            let mut out = Vec::new();
            Status {
                code: -1,
                message: "",
            }
            .put(&mut out);
            assert_eq!(
                out,
                [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::error::{Error, ProtoFault};

    fn fault(r: Result<impl std::fmt::Debug>) -> (ProtoFault, usize) {
        match r {
            Err(Error::Protobuf { fault, offset, .. }) => (fault, offset),
            other => panic!("expected a protobuf error, got {other:?}"),
        }
    }

    #[test]
    fn empty_check_request() {
        let req = CheckRequest::parse(&[]).unwrap();
        assert_eq!(req.header(b"x-scope-orgid"), None);
        assert_eq!(req.body(), b"");
        assert!(!req.has_body());
        assert_eq!(req.method(), b"");
        assert_eq!(req.path(), b"");
        assert_eq!(req.size(), -1);
    }

    #[test]
    fn check_request_faults() {
        // attributes as a varint.
        assert_eq!(
            fault(CheckRequest::parse(&[0x08, 0x01])),
            (ProtoFault::WrongWireType, 0)
        );
        // attributes { request { http { size: "x" } } }: size must be a varint.
        let buf = [0x0a, 0x07, 0x22, 0x05, 0x12, 0x03, 0x4a, 0x01, b'x'];
        assert_eq!(
            fault(CheckRequest::parse(&buf)),
            (ProtoFault::WrongWireType, 6)
        );
        // A map entry whose value runs past the entry (but not past the buffer).
        let buf = [
            0x0a, 0x09, 0x22, 0x07, 0x12, 0x05, 0x1a, 0x03, 0x12, 0x05, 0x00,
        ];
        assert_eq!(fault(CheckRequest::parse(&buf)), (ProtoFault::Truncated, 9));
        // A group inside a skipped peer is not looked into; one at the top level is refused.
        assert_eq!(
            fault(CheckRequest::parse(&[0x0b])),
            (ProtoFault::WrongWireType, 0)
        );
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_first_wins() {
        // attributes { request { http { headers { "X-A": "1" }
        //                                header_map { headers { key: "x-a" raw_value: "2" } } } } }
        let http = [
            0x1a, 0x08, 0x0a, 0x03, b'X', b'-', b'A', 0x12, 0x01, b'1', //
            0x6a, 0x0a, 0x0a, 0x08, 0x0a, 0x03, b'x', b'-', b'a', 0x1a, 0x01, b'2',
        ];
        let mut buf = vec![
            0x0a,
            (http.len() + 4) as u8,
            0x22,
            (http.len() + 2) as u8,
            0x12,
        ];
        buf.push(http.len() as u8);
        buf.extend_from_slice(&http);
        let req = CheckRequest::parse(&buf).unwrap();
        assert_eq!(req.header(b"x-a"), Some(&b"1"[..]));
        assert_eq!(req.header(b"X-a"), Some(&b"1"[..]));
        assert_eq!(req.header(b"x-b"), None);
    }

    #[test]
    fn rate_limit_request_faults() {
        assert_eq!(
            fault(RateLimitRequest::parse(&[0x18, 0x80])),
            (ProtoFault::Truncated, 1)
        );
        // descriptors { entries { key: 5 } }: key must be length-delimited.
        assert_eq!(
            fault(RateLimitRequest::parse(&[
                0x12, 0x04, 0x0a, 0x02, 0x08, 0x05
            ])),
            (ProtoFault::WrongWireType, 4)
        );
        // descriptors { hits_addend { value: "" } }
        assert_eq!(
            fault(RateLimitRequest::parse(&[
                0x12, 0x04, 0x1a, 0x02, 0x0a, 0x00
            ])),
            (ProtoFault::WrongWireType, 4)
        );
    }

    #[test]
    fn hits_addend_keeps_the_low_32_bits() {
        // hits_addend: 2^32 + 7
        let buf = [0x18, 0x87, 0x80, 0x80, 0x80, 0x10];
        assert_eq!(RateLimitRequest::parse(&buf).unwrap().hits_addend(), 7);
    }
}
