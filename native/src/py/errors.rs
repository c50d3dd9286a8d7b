//! One conversion from the core's error to Python. The exception classes are defined in
//! Python (`mimir_edge.errors`) so users can import, subclass and document them there.

use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::{Error, ErrorClass};

struct Classes {
    compression: Py<PyType>,
    too_large: Py<PyType>,
    protobuf: Py<PyType>,
    unsupported: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let module = py.import("mimir_edge.errors")?;
        let get = |name: &str| -> PyResult<Py<PyType>> {
            Ok(module
                .getattr(name)
                .map_err(|_| {
                    PyImportError::new_err(format!("mimir_edge.errors.{name} is missing"))
                })?
                .cast_into::<PyType>()?
                .unbind())
        };
        Ok(Classes {
            compression: get("CompressionError")?,
            too_large: get("DecodedTooLargeError")?,
            protobuf: get("MalformedProtobufError")?,
            unsupported: get("UnsupportedFormatError")?,
        })
    })
}

impl From<Error> for PyErr {
    fn from(e: Error) -> Self {
        Python::attach(|py| {
            let classes = match classes(py) {
                Ok(c) => c,
                Err(err) => return err,
            };
            let class = match e.class() {
                ErrorClass::Compression => &classes.compression,
                ErrorClass::TooLarge => &classes.too_large,
                ErrorClass::Protobuf => &classes.protobuf,
                ErrorClass::Unsupported => &classes.unsupported,
            };
            match class
                .bind(py)
                .call1((e.to_string(), e.reason(), e.offset()))
            {
                Ok(instance) => PyErr::from_value(instance),
                Err(err) => err,
            }
        })
    }
}
