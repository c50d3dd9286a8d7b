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

/// Everything `/metrics` shows that lives in the shared table, in Prometheus text format.
pub fn render(table: &SharedTable, out: &mut String, stale_seconds: f64) {
    let _ = writeln!(
        out,
        "# HELP rls_decisions_total Check decisions by outcome and reason."
    );
    let _ = writeln!(out, "# TYPE rls_decisions_total counter");
    for (d, decision) in DECISIONS.iter().enumerate() {
        for (r, reason) in REASONS.iter().enumerate() {
            let v = get(table, DECISION_BASE + d * 16 + r);
            // Always show the series alerts and dashboards use, others once they count.
            let allow_reason = matches!(*reason, "ok" | "not_enforced" | "table_full");
            if v > 0 || (*decision == "allow") == allow_reason && *decision != "would_deny" {
                let _ = writeln!(
                    out,
                    "rls_decisions_total{{decision=\"{decision}\",reason=\"{reason}\"}} {v}"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP rls_body_parse_errors_total Push bodies the core could not count, by reason."
    );
    let _ = writeln!(out, "# TYPE rls_body_parse_errors_total counter");
    for (i, reason) in PARSE_REASONS.iter().enumerate() {
        let v = get(table, PARSE_BASE + i);
        let _ = writeln!(
            out,
            "rls_body_parse_errors_total{{reason=\"{reason}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP rls_authz_check_duration_seconds Time the core took to decide one Check."
    );
    let _ = writeln!(out, "# TYPE rls_authz_check_duration_seconds histogram");
    let mut cumulative = 0;
    for (i, le) in DURATION_BUCKETS.iter().enumerate() {
        cumulative += get(table, DURATION_BASE + i);
        let _ = writeln!(
            out,
            "rls_authz_check_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += get(table, DURATION_BASE + DURATION_BUCKETS.len());
    let _ = writeln!(
        out,
        "rls_authz_check_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "rls_authz_check_duration_seconds_sum {}",
        get(table, DURATION_SUM_NS) as f64 / 1e9
    );
    let _ = writeln!(
        out,
        "rls_authz_check_duration_seconds_count {}",
        get(table, DURATION_COUNT)
    );
    let _ = writeln!(
        out,
        "# HELP rls_limits_stale_seconds Seconds since the limits were last loaded or updated."
    );
    let _ = writeln!(out, "# TYPE rls_limits_stale_seconds gauge");
    let _ = writeln!(out, "rls_limits_stale_seconds {stale_seconds:.3}");
}

/// Per-tenant series.
pub fn render_tenants(rows: &[(String, TenantState, f64, f64)], out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP rls_tenant_requests_total Pushes per tenant by outcome."
    );
    let _ = writeln!(out, "# TYPE rls_tenant_requests_total counter");
    for (t, s, _, _) in rows {
        let _ = writeln!(
            out,
            "rls_tenant_requests_total{{tenant=\"{t}\",decision=\"allow\"}} {}",
            s.allowed_requests
        );
        let _ = writeln!(
            out,
            "rls_tenant_requests_total{{tenant=\"{t}\",decision=\"deny\"}} {}",
            s.denied_requests
        );
        let _ = writeln!(
            out,
            "rls_tenant_requests_total{{tenant=\"{t}\",decision=\"would_deny\"}} {}",
            s.would_deny_requests
        );
    }
    let _ = writeln!(out, "# HELP rls_tenant_samples_total Items (samples, histograms, exemplars, metadata) per tenant by outcome.");
    let _ = writeln!(out, "# TYPE rls_tenant_samples_total counter");
    for (t, s, _, _) in rows {
        let _ = writeln!(
            out,
            "rls_tenant_samples_total{{tenant=\"{t}\",decision=\"allow\"}} {}",
            s.allowed_samples
        );
        let _ = writeln!(
            out,
            "rls_tenant_samples_total{{tenant=\"{t}\",decision=\"deny\"}} {}",
            s.denied_samples
        );
    }
    let _ = writeln!(out, "# HELP rls_tenant_bucket_fill_ratio Tokens left in a tenant's bucket as a share of its burst (1 = full).");
    let _ = writeln!(out, "# TYPE rls_tenant_bucket_fill_ratio gauge");
    for (t, _, ingestion, request) in rows {
        let _ = writeln!(
            out,
            "rls_tenant_bucket_fill_ratio{{tenant=\"{t}\",limit=\"ingestion\"}} {ingestion}"
        );
        let _ = writeln!(
            out,
            "rls_tenant_bucket_fill_ratio{{tenant=\"{t}\",limit=\"request\"}} {request}"
        );
    }
}

/// Requests handled by each worker process.
pub fn render_workers(table: &SharedTable, workers: usize, out: &mut String) {
    let _ = writeln!(out, "# HELP rls_worker_requests_total Check and ShouldRateLimit calls handled by each worker process.");
    let _ = writeln!(out, "# TYPE rls_worker_requests_total counter");
    for w in 0..workers {
        if let Some(c) = table.worker_requests(w) {
            let _ = writeln!(
                out,
                "rls_worker_requests_total{{worker=\"{w}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }
}
