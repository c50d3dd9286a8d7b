//! Counters the engine keeps in the shared table (so every worker's requests add up in one
//! place, one relaxed atomic add each), and their Prometheus text rendering.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::shm::{SharedTable, TenantState};

/// What the edge decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow = 0,
    Deny = 1,
    /// Dry run: the push would have been denied, and was let through.
    WouldDeny = 2,
}

pub const DECISIONS: [&str; 3] = ["allow", "deny", "would_deny"];

/// Why. `Ok` is the reason of a plain allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok = 0,
    RequestRate,
    IngestionRate,
    IngestionBurst,
    NoTenant,
    BadTenant,
    BadBody,
    BodyTooLarge,
    UnsupportedFormat,
    NotEnforced,
    BadCheckRequest,
    TableFull,
}

pub const REASONS: [&str; 12] = [
    "ok",
    "request_rate",
    "ingestion_rate",
    "ingestion_burst",
    "no_tenant",
    "bad_tenant",
    "bad_body",
    "body_too_large",
    "unsupported_format",
    "not_enforced",
    "bad_check_request",
    "table_full",
];

impl Reason {
    pub const fn name(self) -> &'static str {
        // The discriminants index REASONS.
        match self {
            Self::Ok => REASONS[0],
            Self::RequestRate => REASONS[1],
            Self::IngestionRate => REASONS[2],
            Self::IngestionBurst => REASONS[3],
            Self::NoTenant => REASONS[4],
            Self::BadTenant => REASONS[5],
            Self::BadBody => REASONS[6],
            Self::BodyTooLarge => REASONS[7],
            Self::UnsupportedFormat => REASONS[8],
            Self::NotEnforced => REASONS[9],
            Self::BadCheckRequest => REASONS[10],
            Self::TableFull => REASONS[11],
        }
    }
}

/// `reason` labels of `rls_body_parse_errors_total` (the core's error reasons).
pub const PARSE_REASONS: [&str; 11] = [
    "corrupt_compression",
    "too_large",
    "truncated",
    "bad_varint",
    "wrong_wire_type",
    "invalid_tag",
    "bad_symbol_ref",
    "odd_label_refs",
    "wrong_protocol",
    "unsupported_encoding",
    "unsupported_content_type",
];

/// Upper bounds (seconds) of the check-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1,
];

const DECISION_BASE: usize = 0; // 3 x 16
const PARSE_BASE: usize = 48; // 16
const DURATION_BASE: usize = 64; // buckets + Inf
const DURATION_SUM_NS: usize = DURATION_BASE + DURATION_BUCKETS.len() + 1;
const DURATION_COUNT: usize = DURATION_SUM_NS + 1;

fn add(table: &SharedTable, index: usize, n: u64) {
    if let Some(c) = table.counter(index) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

fn get(table: &SharedTable, index: usize) -> u64 {
    table
        .counter(index)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

pub fn count_decision(table: &SharedTable, decision: Decision, reason: Reason) {
    add(
        table,
        DECISION_BASE + decision as usize * 16 + reason as usize,
        1,
    );
}

pub fn count_parse_error(table: &SharedTable, reason: &str) {
    if let Some(i) = PARSE_REASONS.iter().position(|r| *r == reason) {
        add(table, PARSE_BASE + i, 1);
    }
}

pub fn observe_duration(table: &SharedTable, ns: u64) {
    let secs = ns as f64 / 1e9;
    let bucket = DURATION_BUCKETS
        .iter()
        .position(|&le| secs <= le)
        .unwrap_or(DURATION_BUCKETS.len());
    add(table, DURATION_BASE + bucket, 1);
    add(table, DURATION_SUM_NS, ns);
    add(table, DURATION_COUNT, 1);
}

/// `# HELP` and `# TYPE` lines of one metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line; label values here are tenant IDs (Mimir's charset needs no escaping),
/// numbers and fixed words.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    for (i, (k, v)) in labels.iter().enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        let _ = write!(out, "{k}=\"{v}\"");
    }
    if !labels.is_empty() {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Everything `/metrics` shows that lives in the shared table, in Prometheus text format.
pub fn render(table: &SharedTable, out: &mut String, stale_seconds: f64) {
    family(
        out,
        "rls_decisions_total",
        "counter",
        "Check decisions by outcome and reason.",
    );
    for (d, decision) in DECISIONS.iter().enumerate() {
        for (r, reason) in REASONS.iter().enumerate() {
            let v = get(table, DECISION_BASE + d * 16 + r);
            // Always show the series alerts and dashboards use, others once they count.
            let allow_reason = matches!(*reason, "ok" | "not_enforced" | "table_full");
            if v > 0 || (*decision == "allow") == allow_reason && *decision != "would_deny" {
                let labels = [("decision", *decision), ("reason", *reason)];
                sample(out, "rls_decisions_total", &labels, v);
            }
        }
    }
    let name = "rls_body_parse_errors_total";
    family(
        out,
        name,
        "counter",
        "Push bodies the core could not count, by reason.",
    );
    for (i, reason) in PARSE_REASONS.iter().enumerate() {
        sample(out, name, &[("reason", reason)], get(table, PARSE_BASE + i));
    }
    let name = "rls_authz_check_duration_seconds";
    family(
        out,
        name,
        "histogram",
        "Time the engine took to decide one Check.",
    );
    let mut cumulative = 0;
    for (i, le) in DURATION_BUCKETS.iter().enumerate() {
        cumulative += get(table, DURATION_BASE + i);
        sample(
            out,
            "rls_authz_check_duration_seconds_bucket",
            &[("le", &le.to_string())],
            cumulative,
        );
    }
    cumulative += get(table, DURATION_BASE + DURATION_BUCKETS.len());
    sample(
        out,
        "rls_authz_check_duration_seconds_bucket",
        &[("le", "+Inf")],
        cumulative,
    );
    let sum = get(table, DURATION_SUM_NS) as f64 / 1e9;
    sample(out, "rls_authz_check_duration_seconds_sum", &[], sum);
    sample(
        out,
        "rls_authz_check_duration_seconds_count",
        &[],
        get(table, DURATION_COUNT),
    );
    let name = "rls_table_lock_recoveries_total";
    family(
        out,
        name,
        "counter",
        "Tenant locks taken over from a worker that died holding them.",
    );
    sample(out, name, &[], table.lock_recoveries());
    family(
        out,
        "rls_table_tenants",
        "gauge",
        "Tenants in the shared table.",
    );
    sample(out, "rls_table_tenants", &[], table.len());
    let name = "rls_limits_stale_seconds";
    family(
        out,
        name,
        "gauge",
        "Seconds since the limits were last loaded or updated.",
    );
    sample(out, name, &[], format!("{stale_seconds:.3}"));
}

/// Per-tenant series: (tenant, state, ingestion fill, request fill).
pub fn render_tenants(rows: &[(String, TenantState, f64, f64)], out: &mut String) {
    let name = "rls_tenant_requests_total";
    family(out, name, "counter", "Pushes per tenant by outcome.");
    for (t, s, _, _) in rows {
        for (d, v) in [
            ("allow", s.allowed_requests),
            ("deny", s.denied_requests),
            ("would_deny", s.would_deny_requests),
        ] {
            sample(out, name, &[("tenant", t), ("decision", d)], v);
        }
    }
    let name = "rls_tenant_samples_total";
    family(
        out,
        name,
        "counter",
        "Items (samples, histograms, exemplars, metadata) per tenant by outcome.",
    );
    for (t, s, _, _) in rows {
        for (d, v) in [("allow", s.allowed_samples), ("deny", s.denied_samples)] {
            sample(out, name, &[("tenant", t), ("decision", d)], v);
        }
    }
    let name = "rls_tenant_bucket_fill_ratio";
    family(
        out,
        name,
        "gauge",
        "Tokens left in a tenant's bucket as a share of its burst (1 = full).",
    );
    for (t, _, ingestion, request) in rows {
        sample(
            out,
            name,
            &[("tenant", t), ("limit", "ingestion")],
            ingestion,
        );
        sample(out, name, &[("tenant", t), ("limit", "request")], request);
    }
}

/// Requests handled by each worker process.
pub fn render_workers(table: &SharedTable, workers: usize, out: &mut String) {
    let name = "rls_worker_requests_total";
    family(
        out,
        name,
        "counter",
        "Check and ShouldRateLimit calls handled by each worker process.",
    );
    for w in 0..workers {
        if let Some(c) = table.worker_requests(w) {
            sample(
                out,
                name,
                &[("worker", &w.to_string())],
                c.load(Ordering::Relaxed),
            );
        }
    }
}
