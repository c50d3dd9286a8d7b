//! `Engine`: the RLS decision engine for the Python servers. `check` and
//! `should_rate_limit` take the raw gRPC request bytes and return the raw response bytes,
//! with the GIL released: one boundary crossing per request.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::engine::{self, Config, Decision, LimitsSet, TenantLimits};
use crate::shm::SharedTable;

#[pyclass(frozen, module = "mimir_edge._native")]
pub struct Engine {
    inner: engine::Engine,
}

fn limits_from(d: &Bound<'_, PyDict>, base: TenantLimits) -> PyResult<TenantLimits> {
    let mut l = base;
    for (k, v) in d.iter() {
        let key: String = k.extract()?;
        match key.as_str() {
            "request_rate" => l.request_rate = v.extract()?,
            "request_burst_size" => l.request_burst = v.extract()?,
            "ingestion_rate" => l.ingestion_rate = v.extract()?,
            "ingestion_burst_size" => l.ingestion_burst = v.extract()?,
            "dry_run" => l.dry_run = v.extract()?,
            "enforce" => l.enforce = v.extract()?,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown limit {other:?} (the Python side resolves Mimir's names first)"
                )))
            }
        }
    }
    if l.request_rate.is_nan() || l.ingestion_rate.is_nan() || l.ingestion_rate < 0.0 {
        return Err(PyValueError::new_err("rates must be numbers >= 0"));
    }
    Ok(l)
}

fn limits_dict<'py>(py: Python<'py>, l: &TenantLimits) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("request_rate", l.request_rate)?;
    d.set_item("request_burst_size", l.request_burst)?;
    d.set_item("ingestion_rate", l.ingestion_rate)?;
    d.set_item("ingestion_burst_size", l.ingestion_burst)?;
    d.set_item("dry_run", l.dry_run)?;
    d.set_item("enforce", l.enforce)?;
    Ok(d)
}

const fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
        Decision::WouldDeny => "would_deny",
    }
}

#[pymethods]
impl Engine {
    /// Open (or, with `create=True`, create) the shared tenant table at `table_path`.
    #[new]
    #[pyo3(signature = (table_path, *, create = false, capacity = 65536, tenant_header = "x-scope-orgid", dry_run = false, body_parsing = true, bytes_per_sample = 24, max_decoded_bytes = 33554432, charge_request_rate = true, worker = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        table_path: &str,
        create: bool,
        capacity: usize,
        tenant_header: &str,
        dry_run: bool,
        body_parsing: bool,
        bytes_per_sample: u64,
        max_decoded_bytes: u64,
        charge_request_rate: bool,
        worker: usize,
    ) -> PyResult<Self> {
        if bytes_per_sample == 0 {
            return Err(PyValueError::new_err("bytes_per_sample must be > 0"));
        }
        let table = if create {
            SharedTable::create(table_path, capacity)
        } else {
            SharedTable::open(table_path)
        }
        .map_err(|e| PyOSError::new_err(format!("shared tenant table {table_path}: {e}")))?;
        let cfg = Config {
            tenant_header: tenant_header.to_ascii_lowercase().into_bytes(),
            dry_run,
            body_parsing,
            bytes_per_sample,
            max_decoded_bytes,
            charge_request_rate,
            worker,
        };
        Ok(Self {
            inner: engine::Engine::new(cfg, table),
        })
    }

    /// Decide one ext_authz Check: serialized `CheckRequest` in, `CheckResponse` out.
    #[pyo3(signature = (request, /, *, now_ns = None))]
    fn check<'py>(
        &self,
        py: Python<'py>,
        request: &[u8],
        now_ns: Option<u64>,
    ) -> Bound<'py, PyBytes> {
        let out = py.detach(|| {
            let now = now_ns.unwrap_or_else(engine::monotonic_ns);
            self.inner.check(request, now)
        });
        PyBytes::new(py, &out)
    }

    /// Decide one ShouldRateLimit: serialized `RateLimitRequest` in, response out.
    #[pyo3(signature = (request, /, *, now_ns = None))]
    fn should_rate_limit<'py>(
        &self,
        py: Python<'py>,
        request: &[u8],
        now_ns: Option<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let out = py.detach(|| {
            let now = now_ns.unwrap_or_else(engine::monotonic_ns);
            self.inner.should_rate_limit(request, now)
        })?;
        Ok(PyBytes::new(py, &out))
    }

    /// Replace the limit set: `defaults` and per-tenant dicts of `request_rate`,
    /// `request_burst_size`, `ingestion_rate`, `ingestion_burst_size`, `dry_run`, `enforce`
    /// (tenant dicts override the defaults field by field). `share` is this instance's
    /// share of each rate. Buckets keep their tokens.
    #[pyo3(signature = (defaults, tenants, *, generation, share = 1.0))]
    fn set_limits(
        &self,
        defaults: &Bound<'_, PyDict>,
        tenants: &Bound<'_, PyDict>,
        generation: u64,
        share: f64,
    ) -> PyResult<()> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(PyValueError::new_err("share must be in (0, 1]"));
        }
        let defaults = limits_from(defaults, TenantLimits::MIMIR_DEFAULTS)?;
        let mut set = LimitsSet {
            generation,
            defaults,
            share,
            ..LimitsSet::default()
        };
        for (k, v) in tenants.iter() {
            let tenant: String = k.extract()?;
            engine::validate_tenant(Some(tenant.as_bytes()))
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            let d = v.cast_into::<PyDict>()?;
            set.tenants
                .insert(tenant.into_bytes(), limits_from(&d, defaults)?);
        }
        self.inner.set_limits(set);
        Ok(())
    }

    /// The generation of the limit set this engine enforces.
    #[getter]
    fn limits_generation(&self) -> u64 {
        self.inner.limits().generation
    }

    /// The latest generation any worker published in the shared table.
    #[getter]
    fn shared_generation(&self) -> u64 {
        self.inner
            .table()
            .limits_generation()
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Publish a new generation to every worker (after writing the limit set they reload),
    /// and mark the limits fresh. Returns the new generation.
    #[pyo3(signature = (*, unix_ns))]
    fn publish_generation(&self, unix_ns: u64) -> u64 {
        self.inner.table().bump_limits_generation(unix_ns)
    }

    /// Mark the limits in force fresh (the set was confirmed unchanged) at `unix_ns`.
    #[pyo3(signature = (*, unix_ns))]
    fn touch_limits(&self, unix_ns: u64) {
        self.inner
            .table()
            .limits_updated_unix_ns()
            .store(unix_ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wall-clock time (ns since the epoch) the limits were last published.
    #[getter]
    fn limits_updated_unix_ns(&self) -> u64 {
        self.inner
            .table()
            .limits_updated_unix_ns()
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deny and would-deny events since the last call, as dicts (for the log).
    fn drain_events<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .drain_events()
            .into_iter()
            .map(|e| {
                let d = PyDict::new(py);
                d.set_item("tenant", e.tenant)?;
                d.set_item("decision", decision_name(e.decision))?;
                d.set_item("reason", e.reason.name())?;
                d.set_item("http_status", e.http_status)?;
                d.set_item("ingested", e.ingested)?;
                d.set_item("retry_after_s", e.retry_after_s)?;
                d.set_item("message", e.message)?;
                Ok(d)
            })
            .collect()
    }

    /// The current limits of a tenant (the defaults if it has no overrides).
    fn tenant_limits<'py>(&self, py: Python<'py>, tenant: &str) -> PyResult<Bound<'py, PyDict>> {
        limits_dict(py, self.inner.limits().for_tenant(tenant.as_bytes()))
    }

    /// Every tenant seen: limits, tokens left and counters.
    #[pyo3(signature = (*, now_ns = None))]
    fn tenants<'py>(
        &self,
        py: Python<'py>,
        now_ns: Option<u64>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let now = now_ns.unwrap_or_else(engine::monotonic_ns);
        self.inner
            .tenants(now)
            .into_iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("tenant", r.tenant)?;
                d.set_item("limits", limits_dict(py, &r.limits)?)?;
                d.set_item("ingestion_tokens", r.ingestion_tokens)?;
                d.set_item("ingestion_burst", r.state.ingestion_limit.burst())?;
                d.set_item("request_tokens", r.request_tokens)?;
                d.set_item("allowed_requests", r.state.allowed_requests)?;
                d.set_item("denied_requests", r.state.denied_requests)?;
                d.set_item("would_deny_requests", r.state.would_deny_requests)?;
                d.set_item("allowed_samples", r.state.allowed_samples)?;
                d.set_item("denied_samples", r.state.denied_samples)?;
                Ok(d)
            })
            .collect()
    }

    /// Prometheus text for everything the engine counts (all workers, from the shared table).
    #[pyo3(signature = (*, workers, unix_ns))]
    fn render_metrics(&self, py: Python<'_>, workers: usize, unix_ns: u64) -> String {
        py.detach(|| {
            let updated = self
                .inner
                .table()
                .limits_updated_unix_ns()
                .load(std::sync::atomic::Ordering::Relaxed);
            let stale = unix_ns.saturating_sub(updated) as f64 / 1e9;
            self.inner
                .render_metrics(engine::monotonic_ns(), stale, workers)
        })
    }
}
