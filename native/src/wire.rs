//! Protobuf wire-format reading: varints, tags, length-delimited fields and skipping.
//!
//! A [`Reader`] walks one message, `buf[pos..end]`, of a larger buffer and reports every fault
//! with its absolute byte offset in that buffer. Nothing here allocates or panics on input.

use crate::error::{Error, ProtoFault, Result};

pub const WT_VARINT: u8 = 0;
pub const WT_FIXED64: u8 = 1;
pub const WT_LEN: u8 = 2;
pub const WT_START_GROUP: u8 = 3;
pub const WT_END_GROUP: u8 = 4;
pub const WT_FIXED32: u8 = 5;

/// Largest field number protobuf allows.
const MAX_FIELD: u64 = (1 << 29) - 1;

#[derive(Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

/// A field key: number and wire type, plus where it started (for error offsets).
#[derive(Clone, Copy, Debug)]
pub struct Tag {
    pub field: u32,
    pub wire_type: u8,
    pub at: usize,
}

/// A length-delimited value: `buf[start..end]`.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub const fn len(self) -> usize {
        self.end - self.start
    }

    pub const fn is_empty(self) -> bool {
        self.end == self.start
    }
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// A reader over the nested message `span` of the same buffer.
    pub const fn nested(&self, span: Span) -> Self {
        Self {
            buf: self.buf,
            pos: span.start,
            end: span.end,
        }
    }

    pub const fn buf(&self) -> &'a [u8] {
        self.buf
    }

    #[inline(always)]
    pub const fn has_more(&self) -> bool {
        self.pos < self.end
    }

    pub const fn pos(&self) -> usize {
        self.pos
    }

    /// The unread bytes of this message.
    #[inline(always)]
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..self.end).unwrap_or_default()
    }

    /// Move forward `n` bytes that a fast path has already checked are in this message.
    #[inline(always)]
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }

    /// The bytes of `span`, which came from this reader so are in bounds.
    #[inline(always)]
    pub fn bytes(&self, span: Span) -> &'a [u8] {
        self.buf.get(span.start..span.end).unwrap_or_default()
    }

    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64> {
        if self.pos < self.end {
            if let Some(&b) = self.buf.get(self.pos) {
                if b < 0x80 {
                    self.pos += 1;
                    return Ok(u64::from(b));
                }
            }
        }
        self.varint_slow()
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10u32 {
            let b = match self.buf.get(self.pos) {
                Some(&b) if self.pos < self.end => b,
                _ => {
                    return Err(Error::proto(
                        ProtoFault::Truncated,
                        start,
                        "varint runs past the end of its message",
                    ))
                }
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(Error::proto(
                    ProtoFault::BadVarint,
                    start,
                    "varint overflows 64 bits",
                ));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(Error::proto(
            ProtoFault::BadVarint,
            start,
            "varint longer than 10 bytes",
        ))
    }

    /// The next field key.
    #[inline(always)]
    pub fn tag(&mut self) -> Result<Tag> {
        let at = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        // Truncation to u8 is exact: the value is masked to three bits.
        let wire_type = (key & 7) as u8;
        if field == 0 || field > MAX_FIELD {
            return Err(Error::proto(
                ProtoFault::InvalidTag,
                at,
                "invalid field number",
            ));
        }
        if wire_type > WT_FIXED32 {
            return Err(Error::proto(
                ProtoFault::InvalidTag,
                at,
                "invalid wire type",
            ));
        }
        // Checked above: field fits in 29 bits.
        let field = u32::try_from(field).unwrap_or(u32::MAX);
        Ok(Tag {
            field,
            wire_type,
            at,
        })
    }

    /// A length-delimited value; the reader moves past it.
    #[inline(always)]
    pub fn len_delim(&mut self) -> Result<Span> {
        let at = self.pos;
        let len = self.varint()?;
        let start = self.pos;
        let room = (self.end - start) as u64;
        if len > room {
            return Err(Error::proto(
                ProtoFault::Truncated,
                at,
                "length-delimited field longer than its message",
            ));
        }
        // len <= room, which is a usize.
        self.pos = start + len as usize;
        Ok(Span {
            start,
            end: self.pos,
        })
    }

    fn advance(&mut self, n: usize, at: usize) -> Result<()> {
        if self.end - self.pos < n {
            return Err(Error::proto(
                ProtoFault::Truncated,
                at,
                "fixed-width field runs past the end of its message",
            ));
        }
        self.pos += n;
        Ok(())
    }

    /// Skip the value of a field whose key was just read.
    pub fn skip(&mut self, tag: Tag) -> Result<()> {
        match tag.wire_type {
            WT_VARINT => self.varint().map(drop),
            WT_FIXED64 => self.advance(8, tag.at),
            WT_LEN => self.len_delim().map(drop),
            WT_FIXED32 => self.advance(4, tag.at),
            // Groups: deprecated, and never part of remote write.
            _ => Err(Error::proto(
                ProtoFault::WrongWireType,
                tag.at,
                "groups are not supported",
            )),
        }
    }

    /// Read a field's value after checking its wire type is `want`.
    #[inline(always)]
    pub fn expect(&self, tag: Tag, want: u8, what: &'static str) -> Result<()> {
        if tag.wire_type == want {
            Ok(())
        } else {
            Err(Error::proto(ProtoFault::WrongWireType, tag.at, what))
        }
    }

    /// A length-delimited field, after checking the wire type.
    #[inline(always)]
    pub fn message(&mut self, tag: Tag, what: &'static str) -> Result<Span> {
        self.expect(tag, WT_LEN, what)?;
        self.len_delim()
    }

    /// Walk every field of the rest of this message, checking only the framing.
    pub fn skip_all(&mut self) -> Result<()> {
        while self.has_more() {
            let tag = self.tag()?;
            self.skip(tag)?;
        }
        Ok(())
    }

    /// Walk the rest of this message, checking each known field's wire type with
    /// `allowed(field) -> Option<bitmask of wire types>` (None: unknown field, any type).
    pub fn check_fields(
        &mut self,
        allowed: impl Fn(u32) -> Option<u8>,
        what: &'static str,
    ) -> Result<()> {
        while self.has_more() {
            let tag = self.tag()?;
            if let Some(mask) = allowed(tag.field) {
                if mask & (1 << tag.wire_type) == 0 {
                    return Err(Error::proto(ProtoFault::WrongWireType, tag.at, what));
                }
            }
            self.skip(tag)?;
        }
        Ok(())
    }
}

/// Wire-type bitmask for [`Reader::check_fields`].
pub const fn wt(wire_type: u8) -> u8 {
    1 << wire_type
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> (ProtoFault, usize) {
        match r {
            Err(Error::Protobuf { fault, offset, .. }) => (fault, offset),
            other => panic!("expected a protobuf error, got {other:?}"),
        }
    }

    #[test]
    fn varints() {
        let mut r = Reader::new(&[
            0x96, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        assert_eq!(r.varint(), Ok(150));
        assert_eq!(r.varint(), Ok(0));
        assert_eq!(r.varint(), Ok(u64::MAX));
        assert!(!r.has_more());
    }

    #[test]
    fn varint_faults() {
        assert_eq!(
            err_of(Reader::new(&[0x80; 11]).varint()),
            (ProtoFault::BadVarint, 0)
        );
        assert_eq!(
            err_of(
                Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).varint()
            ),
            (ProtoFault::BadVarint, 0)
        );
        assert_eq!(
            err_of(Reader::new(&[0x80, 0x80]).varint()),
            (ProtoFault::Truncated, 0)
        );
    }

    #[test]
    fn tag_faults() {
        assert_eq!(
            err_of(Reader::new(&[0x00]).tag()),
            (ProtoFault::InvalidTag, 0)
        );
        assert_eq!(
            err_of(Reader::new(&[0x0e]).tag()),
            (ProtoFault::InvalidTag, 0)
        );
        assert_eq!(
            err_of(Reader::new(&[0x0f]).tag()),
            (ProtoFault::InvalidTag, 0)
        );
    }

    #[test]
    fn length_longer_than_message() {
        let buf = [0x0a, 0x05, 1, 2, 3];
        let mut r = Reader::new(&buf);
        let tag = r.tag().unwrap_or(Tag {
            field: 0,
            wire_type: 0,
            at: 0,
        });
        assert_eq!(tag.field, 1);
        assert_eq!(err_of(r.len_delim()), (ProtoFault::Truncated, 1));
    }

    #[test]
    fn nested_reader_stays_inside_its_span() {
        // outer: field 1 LEN 2 bytes [0x08, 0x96] where the inner varint is cut by the span.
        let buf = [0x0a, 0x02, 0x08, 0x96, 0x01];
        let mut r = Reader::new(&buf);
        let _ = r.tag();
        let span = r.len_delim().unwrap_or(Span { start: 0, end: 0 });
        let mut inner = r.nested(span);
        let _ = inner.tag();
        assert_eq!(err_of(inner.varint()), (ProtoFault::Truncated, 3));
    }

    #[test]
    fn skips_each_wire_type() {
        // varint, fixed64, len, fixed32
        let buf = [
            0x08, 0x01, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0x1a, 0x01, 0x00, 0x25, 0, 0, 0, 0,
        ];
        assert_eq!(Reader::new(&buf).skip_all(), Ok(()));
        assert_eq!(
            err_of(Reader::new(&[0x0b]).skip_all()),
            (ProtoFault::WrongWireType, 0)
        );
        assert_eq!(
            err_of(Reader::new(&[0x11, 0, 0]).skip_all()),
            (ProtoFault::Truncated, 0)
        );
    }
}
