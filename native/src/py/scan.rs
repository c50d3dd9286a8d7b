//! `scan_remote_write` and the snappy helpers.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::remote_write::{self, Encoding, Protocol};
use crate::snappy;

/// Mimir's default `-distributor.max-recv-msg-size` (100 MiB) is for the compressed body;
/// 32 MiB decoded is what Prometheus senders stay far below.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 32 << 20;
// The signatures below spell the default as a literal so Python's introspection shows it.
const _: () = assert!(DEFAULT_MAX_DECODED_BYTES == 33554432);

/// Counts from one remote-write request (immutable).
#[pyclass(frozen, get_all, eq, hash, module = "mimir_edge._native")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WriteStats {
    series: u64,
    samples: u64,
    histograms: u64,
    exemplars: u64,
    metadata: u64,
    label_pairs: u64,
    max_labels_per_series: u64,
    max_label_name_length: u64,
    max_label_value_length: u64,
    decoded_bytes: u64,
    ingested: u64,
}

impl From<remote_write::WriteStats> for WriteStats {
    fn from(s: remote_write::WriteStats) -> Self {
        Self {
            series: s.series,
            samples: s.samples,
            histograms: s.histograms,
            exemplars: s.exemplars,
            metadata: s.metadata,
            label_pairs: s.label_pairs,
            max_labels_per_series: s.max_labels_per_series,
            max_label_name_length: s.max_label_name_length,
            max_label_value_length: s.max_label_value_length,
            decoded_bytes: s.decoded_bytes,
            ingested: s.ingested(),
        }
    }
}

impl WriteStats {
    fn fields(&self) -> [(&'static str, u64); 11] {
        [
            ("series", self.series),
            ("samples", self.samples),
            ("histograms", self.histograms),
            ("exemplars", self.exemplars),
            ("metadata", self.metadata),
            ("label_pairs", self.label_pairs),
            ("max_labels_per_series", self.max_labels_per_series),
            ("max_label_name_length", self.max_label_name_length),
            ("max_label_value_length", self.max_label_value_length),
            ("decoded_bytes", self.decoded_bytes),
            ("ingested", self.ingested),
        ]
    }
}

#[pymethods]
impl WriteStats {
    /// All counts as a dict (for logs and JSON).
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.fields() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let body: Vec<String> = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("WriteStats({})", body.join(", "))
    }
}

/// Decode and count one remote-write body. The GIL is released while it runs.
#[pyfunction]
#[pyo3(signature = (body, /, *, content_encoding = "snappy", content_type = None, max_decoded_bytes = 33554432))]
pub fn scan_remote_write(
    py: Python<'_>,
    body: &[u8],
    content_encoding: &str,
    content_type: Option<&str>,
    max_decoded_bytes: u64,
) -> PyResult<WriteStats> {
    let encoding = Encoding::parse(content_encoding)?;
    let protocol = Protocol::from_content_type(content_type)?;
    let stats = py.detach(|| remote_write::scan(body, encoding, protocol, max_decoded_bytes))?;
    Ok(stats.into())
}

/// Compress `data` as one snappy block (the format remote write uses).
#[pyfunction]
#[pyo3(signature = (data, /))]
pub fn snappy_compress<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let out = py.detach(|| snappy::compress(data))?;
    Ok(PyBytes::new(py, &out))
}

/// Decompress one snappy block, refusing (before allocating) more than `max_decoded_bytes`.
#[pyfunction]
#[pyo3(signature = (data, /, *, max_decoded_bytes = 33554432))]
pub fn snappy_decompress<'py>(
    py: Python<'py>,
    data: &[u8],
    max_decoded_bytes: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = py.detach(|| snappy::decompress(data, max_decoded_bytes))?;
    Ok(PyBytes::new(py, &out))
}
