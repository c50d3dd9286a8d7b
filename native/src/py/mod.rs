//! The Python module `mimir_edge._native`: the only place PyO3 appears. Each binding
//! crosses the boundary once and releases the GIL for any work that scales with input.

mod bucket;
mod engine;
mod errors;
mod scan;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(scan::scan_remote_write, m)?)?;
    m.add_function(wrap_pyfunction!(scan::snappy_compress, m)?)?;
    m.add_function(wrap_pyfunction!(scan::snappy_decompress, m)?)?;
    m.add_class::<scan::WriteStats>()?;
    m.add_class::<bucket::TokenBucket>()?;
    m.add_class::<engine::Engine>()?;
    m.add("DEFAULT_MAX_DECODED_BYTES", scan::DEFAULT_MAX_DECODED_BYTES)?;
    m.add("MAX_BURST", crate::bucket::MAX_BURST)?;
    Ok(())
}
