//! `TokenBucket`: the core limiter for Python callers. Frozen (no Python-visible mutation)
//! and thread-safe (state behind a mutex); the caller passes the time.

use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::bucket::{Bucket, Decision, Limit};

struct State {
    limit: Limit,
    bucket: Bucket,
}

/// A token bucket with golang.org/x/time/rate semantics (what Mimir's limiters use).
#[pyclass(frozen, module = "mimir_edge._native")]
pub struct TokenBucket {
    state: Mutex<State>,
}

fn limit(rate: f64, burst: u64) -> PyResult<Limit> {
    Limit::new(rate, burst).map_err(|e| PyValueError::new_err(e.to_string()))
}

impl TokenBucket {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; recover the state if that ever changes.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl TokenBucket {
    /// `rate` tokens per second (`math.inf`: unlimited), `burst` tokens; starts full.
    #[new]
    #[pyo3(signature = (rate, burst, *, now_ns))]
    fn new(rate: f64, burst: u64, now_ns: u64) -> PyResult<Self> {
        let limit = limit(rate, burst)?;
        Ok(Self {
            state: Mutex::new(State {
                limit,
                bucket: Bucket::full(limit, now_ns),
            }),
        })
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.lock().limit.rate()
    }

    #[getter]
    fn burst(&self) -> u64 {
        self.lock().limit.burst()
    }

    /// Take `n` tokens if they are there now; `False` (and nothing taken) otherwise.
    #[pyo3(signature = (n, /, *, now_ns))]
    fn allow(&self, n: u64, now_ns: u64) -> bool {
        let mut s = self.lock();
        let limit = s.limit;
        s.bucket.take(limit, now_ns, n) == Decision::Allow
    }

    /// Nanoseconds until `n` tokens are there (0: now), `None` if never (`n > burst`).
    #[pyo3(signature = (n, /, *, now_ns))]
    fn wait_ns(&self, n: u64, now_ns: u64) -> Option<u64> {
        let s = self.lock();
        s.bucket.wait_ns(s.limit, now_ns, n)
    }

    /// Tokens available at `now_ns`.
    #[pyo3(signature = (*, now_ns))]
    fn tokens(&self, now_ns: u64) -> f64 {
        let s = self.lock();
        s.bucket.tokens(s.limit, now_ns)
    }

    /// Change rate and burst, keeping the tokens already earned.
    #[pyo3(signature = (rate, burst, *, now_ns))]
    fn set_limits(&self, rate: f64, burst: u64, now_ns: u64) -> PyResult<()> {
        let new = limit(rate, burst)?;
        let mut s = self.lock();
        let old = s.limit;
        s.bucket.reconfigure(old, new, now_ns);
        s.limit = new;
        Ok(())
    }

    fn __repr__(&self) -> String {
        let s = self.lock();
        format!(
            "TokenBucket(rate={}, burst={})",
            s.limit.rate(),
            s.limit.burst()
        )
    }
}
