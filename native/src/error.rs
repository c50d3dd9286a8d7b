//! The one error type of the core. Every malformed input maps to a variant with a stable
//! message prefix (what operators grep for) and a stable `reason` (a metrics label).

use std::fmt;

/// What exactly was wrong with a protobuf body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoFault {
    /// A field, varint or length-delimited value runs past the end of its message.
    Truncated,
    /// A varint longer than 10 bytes, or one that overflows 64 bits.
    BadVarint,
    /// A known field carried with a wire type its schema does not allow, or a group.
    WrongWireType,
    /// Field number 0, or a wire type that does not exist (6, 7).
    InvalidTag,
    /// A remote write 2.0 reference outside the symbols table.
    BadSymbolRef,
    /// A remote write 2.0 `labels_refs` list with an odd number of entries.
    OddLabelRefs,
    /// A field of the other remote-write version (a 2.0 body sent as 1.0 or the reverse).
    WrongProtocol,
}

impl ProtoFault {
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadVarint => "bad_varint",
            Self::WrongWireType => "wrong_wire_type",
            Self::InvalidTag => "invalid_tag",
            Self::BadSymbolRef => "bad_symbol_ref",
            Self::OddLabelRefs => "odd_label_refs",
            Self::WrongProtocol => "wrong_protocol",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The snappy block is corrupt (`detail` says how, `offset` is in the compressed body).
    Compression { detail: String },
    /// The decoded body would exceed the cap. Decided from the declared length, before
    /// anything is allocated.
    TooLarge { declared: u64, limit: u64 },
    /// The protobuf is malformed at `offset` (byte offset in the decoded body).
    Protobuf {
        fault: ProtoFault,
        offset: usize,
        detail: &'static str,
    },
    /// A `Content-Encoding` the core does not decode.
    UnsupportedEncoding(String),
    /// A `Content-Type` that is not remote write 1.0 or 2.0 protobuf.
    UnsupportedContentType(String),
}

/// Which Python exception class an error becomes (the classes live in `mimir_edge.errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Compression,
    TooLarge,
    Protobuf,
    Unsupported,
}

impl Error {
    pub const fn class(&self) -> ErrorClass {
        match self {
            Self::Compression { .. } => ErrorClass::Compression,
            Self::TooLarge { .. } => ErrorClass::TooLarge,
            Self::Protobuf { .. } => ErrorClass::Protobuf,
            Self::UnsupportedEncoding(_) | Self::UnsupportedContentType(_) => {
                ErrorClass::Unsupported
            }
        }
    }

    /// Stable, low-cardinality label for metrics (`rls_body_parse_errors_total{reason}`).
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Compression { .. } => "corrupt_compression",
            Self::TooLarge { .. } => "too_large",
            Self::Protobuf { fault, .. } => fault.reason(),
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::UnsupportedContentType(_) => "unsupported_content_type",
        }
    }

    /// Byte offset the error points at, where there is one.
    pub const fn offset(&self) -> Option<usize> {
        match self {
            Self::Protobuf { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    pub(crate) const fn proto(fault: ProtoFault, offset: usize, detail: &'static str) -> Self {
        Self::Protobuf {
            fault,
            offset,
            detail,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Compression { detail } => write!(f, "corrupt snappy: {detail}"),
            Self::TooLarge { declared, limit } => write!(
                f,
                "decoded body too large: {declared} bytes declared, limit is {limit} bytes"
            ),
            Self::Protobuf {
                fault,
                offset,
                detail,
            } => write!(
                f,
                "malformed protobuf at byte {offset}: {detail} ({})",
                fault.reason()
            ),
            Self::UnsupportedEncoding(e) => {
                write!(
                    f,
                    "unsupported content encoding: {e:?} (expected \"snappy\" or \"identity\")"
                )
            }
            Self::UnsupportedContentType(t) => write!(
                f,
                "unsupported content type: {t:?} (expected application/x-protobuf, remote write 1.0 or 2.0)"
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
