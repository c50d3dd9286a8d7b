//! mimir-edge's compiled core: everything that touches a request body.
//!
//! This file only wires the modules together; see each module for what it holds.

pub mod bucket;
pub mod engine;
pub mod envoy;
pub mod error;
pub mod remote_write;
pub mod shm;
pub mod snappy;
pub mod wire;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, ProtoFault, Result};
pub use remote_write::{scan, scan_decoded, Encoding, Protocol, WriteStats};
