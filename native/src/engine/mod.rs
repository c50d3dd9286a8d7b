//! The decision engine: one call per Envoy request, bytes in, bytes out.
//!
//! `check` takes a serialized `CheckRequest` and returns a serialized `CheckResponse`:
//! tenant from the configured header (Mimir's tenant rules), the body counted by the
//! remote-write scanner, then the tenant's request and ingestion buckets in the shared table.
//! `should_rate_limit` does the same for the ratelimit API's descriptors. Denies carry
//! Mimir's status codes and wording and a `Retry-After` computed from the bucket.

mod limits;
mod messages;
pub mod metrics;
mod tenant;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

pub use limits::{LimitsSet, TenantLimits};
pub use metrics::{Decision, Reason};
pub use tenant::{validate as validate_tenant, TenantError};

use crate::bucket::{Bucket, Decision as Take, Limit};
use crate::envoy::{self, CheckRequest, DescriptorStatus, Header, RateLimitRequest, RlsCode};
use crate::error::ErrorClass;
use crate::remote_write::{self, Encoding, Protocol, WriteStats};
use crate::shm::{SharedTable, TenantState};

/// gRPC status codes used in `CheckResponse.status` (Envoy only needs "not OK" to deny).
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_UNAUTHENTICATED: i32 = 16;

/// A descriptor no limit applies to.
const NO_LIMIT: DescriptorStatus<'static> = DescriptorStatus {
    code: RlsCode::Ok,
    requests_per_unit: 0,
    unit: 0,
    limit_name: "",
    limit_remaining: 0,
    until_reset_ns: 0,
};

/// Most deny events kept for the Python side to log; older ones are dropped (and counted
/// in the metrics anyway).
const MAX_EVENTS: usize = 1024;

/// How an engine decides; fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct Config {
    /// Tenant header, lowercase (Envoy lowercases header names).
    pub tenant_header: Vec<u8>,
    /// Global dry run: every deny becomes a logged, counted would-deny.
    pub dry_run: bool,
    /// Count samples from the body; `false` estimates them from Content-Length.
    pub body_parsing: bool,
    /// Compressed bytes per item when estimating from Content-Length.
    pub bytes_per_sample: u64,
    pub max_decoded_bytes: u64,
    /// Charge the request-rate bucket in `check` (turn off when Envoy's ratelimit filter
    /// charges it through `should_rate_limit`, so a push is not counted twice).
    pub charge_request_rate: bool,
    /// This worker's index (for the per-worker request counter).
    pub worker: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tenant_header: b"x-scope-orgid".to_vec(),
            dry_run: false,
            body_parsing: true,
            bytes_per_sample: DEFAULT_BYTES_PER_SAMPLE,
            max_decoded_bytes: 32 << 20,
            charge_request_rate: true,
            worker: 0,
        }
    }
}

/// Compressed bytes per item used to estimate a push without parsing it: the corpus of
/// real Prometheus pushes averages 20-26 bytes per item (docs/limits.md).
pub const DEFAULT_BYTES_PER_SAMPLE: u64 = 24;

/// A deny (or dry-run would-deny), for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tenant: String,
    pub decision: Decision,
    pub reason: Reason,
    pub http_status: u32,
    pub ingested: u64,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

/// The outcome of one decision, before it is encoded.
struct Verdict {
    decision: Decision,
    reason: Reason,
    http_status: u32,
    grpc_code: i32,
    message: String,
    retry_after_s: Option<u64>,
    tenant: String,
    ingested: u64,
}

impl Verdict {
    fn allow(reason: Reason, tenant: &[u8], ingested: u64) -> Self {
        Self {
            decision: Decision::Allow,
            reason,
            http_status: 200,
            grpc_code: 0,
            message: String::new(),
            retry_after_s: None,
            tenant: String::from_utf8_lossy(tenant).into_owned(),
            ingested,
        }
    }

    fn deny(reason: Reason, http_status: u32, grpc_code: i32, message: String) -> Self {
        Self {
            decision: Decision::Deny,
            reason,
            http_status,
            grpc_code,
            message,
            retry_after_s: None,
            tenant: String::new(),
            ingested: 0,
        }
    }
}

pub struct Engine {
    cfg: Config,
    table: SharedTable,
    limits: RwLock<Arc<LimitsSet>>,
    events: Mutex<VecDeque<Event>>,
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone)]
pub struct TenantReport {
    pub tenant: String,
    pub limits: TenantLimits,
    pub state: TenantState,
    pub ingestion_tokens: f64,
    pub request_tokens: f64,
}

impl Engine {
    pub fn new(cfg: Config, table: SharedTable) -> Self {
        Self {
            cfg,
            table,
            limits: RwLock::new(Arc::new(LimitsSet::default())),
            events: Mutex::new(VecDeque::new()),
        }
    }

    pub const fn config(&self) -> &Config {
        &self.cfg
    }

    pub const fn table(&self) -> &SharedTable {
        &self.table
    }

    /// Replace the limit set. Tenants keep their tokens; each tenant's buckets switch to
    /// the new limits the next time it is seen.
    pub fn set_limits(&self, set: LimitsSet) {
        *self.limits.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }

    pub fn limits(&self) -> Arc<LimitsSet> {
        Arc::clone(&self.limits.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Deny events since the last call (oldest first).
    pub fn drain_events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }

    /// Decide one ext_authz `Check`: serialized `CheckRequest` in, `CheckResponse` out.
    pub fn check(&self, request: &[u8], now_ns: u64) -> Vec<u8> {
        let started = monotonic_ns();
        let mut verdict = self.decide(request, now_ns);
        if verdict.decision == Decision::Deny && self.cfg.dry_run {
            verdict.decision = Decision::WouldDeny;
        }
        let mut out = Vec::with_capacity(64 + verdict.message.len());
        if verdict.decision == Decision::Deny {
            let retry = verdict.retry_after_s.map(|s| s.to_string());
            let mut headers = vec![Header {
                name: "content-type",
                value: "text/plain; charset=utf-8",
            }];
            if let Some(r) = retry.as_deref() {
                headers.push(Header {
                    name: "retry-after",
                    value: r,
                });
            }
            let body = format!("{}\n", verdict.message);
            envoy::encode_check_denied(
                verdict.grpc_code,
                verdict.reason.name(),
                verdict.http_status,
                &headers,
                &body,
                &mut out,
            );
        } else {
            envoy::encode_check_ok(&[], &mut out);
        }
        metrics::count_decision(&self.table, verdict.decision, verdict.reason);
        self.count_worker_request();
        if verdict.decision != Decision::Allow {
            self.record(verdict);
        }
        metrics::observe_duration(&self.table, monotonic_ns().saturating_sub(started));
        out
    }

    fn record(&self, v: Verdict) {
        let mut q = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(Event {
            tenant: v.tenant,
            decision: v.decision,
            reason: v.reason,
            http_status: v.http_status,
            ingested: v.ingested,
            message: v.message,
            retry_after_s: v.retry_after_s,
        });
    }

    fn decide(&self, request: &[u8], now_ns: u64) -> Verdict {
        let Ok(req) = CheckRequest::parse(request) else {
            return Verdict::deny(
                Reason::BadCheckRequest,
                400,
                GRPC_INVALID_ARGUMENT,
                "malformed ext_authz CheckRequest".into(),
            );
        };
        let tenant = match tenant::validate(req.header(&self.cfg.tenant_header)) {
            Ok(t) => t,
            Err(TenantError::Missing) => {
                return Verdict::deny(
                    Reason::NoTenant,
                    401,
                    GRPC_UNAUTHENTICATED,
                    TenantError::Missing.to_string(),
                )
            }
            Err(e) => {
                return Verdict::deny(Reason::BadTenant, 400, GRPC_INVALID_ARGUMENT, e.to_string())
            }
        };
        let set = self.limits();
        let tl = *set.for_tenant(tenant);
        if !tl.enforce {
            return Verdict::allow(Reason::NotEnforced, tenant, 0);
        }
        let ingested = match self.count(&req) {
            Ok(n) => n,
            Err(mut v) => {
                v.tenant = String::from_utf8_lossy(tenant).into_owned();
                return v;
            }
        };
        let mut verdict = self.charge(tenant, &set, &tl, ingested, now_ns);
        if verdict.decision == Decision::Deny && tl.dry_run {
            verdict.decision = Decision::WouldDeny;
        }
        verdict
    }

    /// What the push charges the ingestion bucket: counted from the body, or estimated
    /// from its size when body parsing is off or Envoy sent no body.
    fn count(&self, req: &CheckRequest<'_>) -> Result<u64, Verdict> {
        if !(self.cfg.body_parsing && req.has_body()) {
            let size = req
                .header(b"content-length")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .or_else(|| u64::try_from(req.size()).ok())
                .unwrap_or(0);
            return Ok(size.div_ceil(self.cfg.bytes_per_sample.max(1)));
        }
        // Envoy cut the body at its max_request_bytes (only with allow_partial_message):
        // the counts would be too low, so refuse as Envoy itself does without it.
        if req.header(b"x-envoy-auth-partial-body") == Some(b"true") {
            return Err(Verdict::deny(
                Reason::BodyTooLarge,
                413,
                GRPC_INVALID_ARGUMENT,
                "request body too large: Envoy sent only part of it (raise \
                 ext_authz max_request_bytes or turn allow_partial_message off)"
                    .into(),
            ));
        }
        let encoding = match req.header(b"content-encoding") {
            None => Ok(Encoding::Snappy),
            Some(v) => Encoding::parse(&String::from_utf8_lossy(v)),
        };
        let content_type = req.header(b"content-type").map(String::from_utf8_lossy);
        let result = encoding.and_then(|enc| {
            let protocol = Protocol::from_content_type(content_type.as_deref())?;
            remote_write::scan(req.body(), enc, protocol, self.cfg.max_decoded_bytes)
        });
        match result {
            Ok(stats) => Ok(charged(&stats)),
            Err(e) => {
                metrics::count_parse_error(&self.table, e.reason());
                let (reason, status) = match e.class() {
                    ErrorClass::Unsupported => (Reason::UnsupportedFormat, 415),
                    ErrorClass::TooLarge => (Reason::BodyTooLarge, 400),
                    ErrorClass::Compression | ErrorClass::Protobuf => (Reason::BadBody, 400),
                };
                Err(Verdict::deny(
                    reason,
                    status,
                    GRPC_INVALID_ARGUMENT,
                    e.to_string(),
                ))
            }
        }
    }

    /// Run `f` on `tenant`'s state in the shared table, creating it (buckets full) if new,
    /// and switching its buckets to `set`'s limits first if they were set from an older
    /// generation (keeping the tokens they have).
    fn with_tenant<R>(
        &self,
        tenant: &[u8],
        set: &LimitsSet,
        tl: &TenantLimits,
        now_ns: u64,
        f: impl FnOnce(&mut TenantState) -> R,
    ) -> Result<R, crate::shm::TableError> {
        let request_limit = tl.request_limit(set.share);
        let ingestion_limit = tl.ingestion_limit(set.share);
        let init = || TenantState {
            limits_generation: set.generation,
            request_limit,
            request_bucket: Bucket::full(request_limit, now_ns),
            ingestion_limit,
            ingestion_bucket: Bucket::full(ingestion_limit, now_ns),
            ..TenantState::default()
        };
        self.table.with_tenant(tenant, init, |st| {
            if st.limits_generation != set.generation {
                st.request_bucket
                    .reconfigure(st.request_limit, request_limit, now_ns);
                st.ingestion_bucket
                    .reconfigure(st.ingestion_limit, ingestion_limit, now_ns);
                st.request_limit = request_limit;
                st.ingestion_limit = ingestion_limit;
                st.limits_generation = set.generation;
            }
            st.last_seen_ns = now_ns;
            f(st)
        })
    }

    fn count_worker_request(&self) {
        if let Some(c) = self.table.worker_requests(self.cfg.worker) {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn charge(
        &self,
        tenant: &[u8],
        set: &LimitsSet,
        tl: &TenantLimits,
        n: u64,
        now_ns: u64,
    ) -> Verdict {
        let ingestion_limit = tl.ingestion_limit(set.share);
        let outcome = self.with_tenant(tenant, set, tl, now_ns, |st| {
            let outcome = take_both(st, self.cfg.charge_request_rate, n, now_ns);
            if outcome.is_none() {
                st.allowed_requests += 1;
                st.allowed_samples += n;
            } else if tl.dry_run || self.cfg.dry_run {
                st.would_deny_requests += 1;
                st.allowed_samples += n;
            } else {
                st.denied_requests += 1;
                st.denied_samples += n;
            }
            outcome
        });
        match outcome {
            Ok(None) => Verdict::allow(Reason::Ok, tenant, n),
            Ok(Some((reason, wait))) => {
                let message = match reason {
                    Reason::RequestRate => {
                        messages::request_rate(tl.request_rate, tl.request_burst)
                    }
                    Reason::IngestionBurst => messages::ingestion_burst(ingestion_limit.burst(), n),
                    _ => messages::ingestion_rate(tl.ingestion_rate, ingestion_limit.burst()),
                };
                let mut v = Verdict::deny(reason, 429, GRPC_RESOURCE_EXHAUSTED, message);
                v.tenant = String::from_utf8_lossy(tenant).into_owned();
                v.ingested = n;
                v.retry_after_s = Some(retry_after_seconds(wait));
                v
            }
            // No room for another tenant: let the push through rather than lose it; the
            // table_full reason shows up in the metrics.
            Err(_) => Verdict::allow(Reason::TableFull, tenant, n),
        }
    }

    /// The ratelimit API: each descriptor with a `tenant` entry is charged to that tenant's
    /// request bucket (`hits_addend` of the descriptor, else of the request, else 1).
    pub fn should_rate_limit(&self, request: &[u8], now_ns: u64) -> crate::Result<Vec<u8>> {
        let req = RateLimitRequest::parse(request)?;
        let set = self.limits();
        let hits = u64::from(req.hits_addend().max(1));
        let mut statuses = Vec::new();
        let mut over = false;
        // Longest wait of the denied descriptors: Envoy adds `response_headers_to_add` to its
        // 429, so the client gets the same Retry-After as from a denied Check.
        let mut retry_after_ns: Option<u64> = None;
        for d in req.descriptors() {
            let d = d?;
            let hits = d.hits_addend().unwrap_or(hits);
            let Some(Ok(tenant)) = d.entry(b"tenant").map(|t| tenant::validate(Some(t))) else {
                statuses.push(NO_LIMIT);
                continue;
            };
            let tl = *set.for_tenant(tenant);
            let limit = tl.request_limit(set.share);
            if limit.is_unlimited() || !tl.enforce {
                statuses.push(NO_LIMIT);
                continue;
            }
            let dry = tl.dry_run || self.cfg.dry_run;
            let (take, remaining, full_in) = self
                .with_tenant(tenant, &set, &tl, now_ns, |st| {
                    let take = st.request_bucket.take(limit, now_ns, hits);
                    match take {
                        Take::Allow => st.allowed_requests += 1,
                        Take::Deny { .. } if dry => st.would_deny_requests += 1,
                        Take::Deny { .. } => st.denied_requests += 1,
                    }
                    let remaining = st.request_bucket.tokens(limit, now_ns);
                    let full_in = st.request_bucket.wait_ns(limit, now_ns, limit.burst());
                    (take, remaining, full_in)
                })
                .unwrap_or((Take::Allow, 0.0, None));
            let denied = matches!(take, Take::Deny { .. });
            let decision = match (denied, dry) {
                (false, _) => Decision::Allow,
                (true, true) => Decision::WouldDeny,
                (true, false) => Decision::Deny,
            };
            metrics::count_decision(
                &self.table,
                decision,
                if denied {
                    Reason::RequestRate
                } else {
                    Reason::Ok
                },
            );
            let until_reset_ns = match take {
                Take::Deny { retry_after_ns } => retry_after_ns.or(full_in).unwrap_or(0),
                Take::Allow => full_in.unwrap_or(0),
            };
            if decision == Decision::Deny {
                over = true;
                if let Take::Deny {
                    retry_after_ns: Some(wait),
                } = take
                {
                    retry_after_ns = Some(retry_after_ns.map_or(wait, |w| w.max(wait)));
                }
            }
            statuses.push(DescriptorStatus {
                code: if decision == Decision::Deny {
                    RlsCode::OverLimit
                } else {
                    RlsCode::Ok
                },
                requests_per_unit: requests_per_second(limit),
                unit: 1,
                limit_name: "request_rate",
                limit_remaining: remaining.clamp(0.0, f64::from(u32::MAX)) as u32,
                until_reset_ns,
            });
        }
        self.count_worker_request();
        let overall = if over {
            RlsCode::OverLimit
        } else {
            RlsCode::Ok
        };
        let retry = retry_after_ns.map(|w| retry_after_seconds(Some(w)).to_string());
        let headers: Vec<Header<'_>> = retry
            .as_deref()
            .map(|value| Header {
                name: "retry-after",
                value,
            })
            .into_iter()
            .collect();
        let mut out = Vec::with_capacity(64);
        envoy::encode_rate_limit_response(overall, &statuses, &headers, &mut out);
        Ok(out)
    }

    /// Every tenant in the table with its limits and current bucket fill.
    pub fn tenants(&self, now_ns: u64) -> Vec<TenantReport> {
        let set = self.limits();
        let mut rows = Vec::new();
        self.table.for_each(|key, state| {
            rows.push(TenantReport {
                tenant: String::from_utf8_lossy(key).into_owned(),
                limits: *set.for_tenant(key),
                ingestion_tokens: state.ingestion_bucket.tokens(state.ingestion_limit, now_ns),
                request_tokens: state.request_bucket.tokens(state.request_limit, now_ns),
                state,
            });
        });
        rows.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        rows
    }

    /// The Prometheus text exposition of everything the engine counts.
    pub fn render_metrics(&self, now_ns: u64, stale_seconds: f64, workers: usize) -> String {
        let mut out = String::with_capacity(4096);
        metrics::render(&self.table, &mut out, stale_seconds);
        metrics::render_workers(&self.table, workers, &mut out);
        let rows: Vec<_> = self
            .tenants(now_ns)
            .into_iter()
            .map(|r| {
                let fill = |tokens: f64, limit: Limit| {
                    if limit.is_unlimited() || limit.burst() == 0 {
                        1.0
                    } else {
                        tokens / limit.burst() as f64
                    }
                };
                let ing = fill(r.ingestion_tokens, r.state.ingestion_limit);
                let req = fill(r.request_tokens, r.state.request_limit);
                (r.tenant, r.state, ing, req)
            })
            .collect();
        metrics::render_tenants(&rows, &mut out);
        out
    }
}

/// What Mimir's ingestion limiter charges: nothing for a push with no samples, histograms
/// or metadata (its exemplars alone are not charged), otherwise every item.
fn charged(s: &WriteStats) -> u64 {
    if s.samples + s.histograms == 0 && s.metadata == 0 {
        0
    } else {
        s.ingested()
    }
}

/// Take 1 request token (if asked) and then `n` ingestion tokens, as Mimir's middlewares
/// do in that order. `None` when both pass; else the limit that refused and its wait.
fn take_both(
    st: &mut TenantState,
    request: bool,
    n: u64,
    now_ns: u64,
) -> Option<(Reason, Option<u64>)> {
    if request {
        if let Take::Deny { retry_after_ns } = st.request_bucket.take(st.request_limit, now_ns, 1) {
            return Some((Reason::RequestRate, retry_after_ns));
        }
    }
    if n == 0 {
        return None;
    }
    match st.ingestion_bucket.take(st.ingestion_limit, now_ns, n) {
        Take::Allow => None,
        Take::Deny {
            retry_after_ns: Some(wait),
        } => Some((Reason::IngestionRate, Some(wait))),
        // More than the burst: it can never pass. Tell the client to come back when the
        // bucket is full, which is the earliest anything of this tenant can pass in bulk.
        Take::Deny {
            retry_after_ns: None,
        } => Some((
            Reason::IngestionBurst,
            st.ingestion_bucket
                .wait_ns(st.ingestion_limit, now_ns, st.ingestion_limit.burst()),
        )),
    }
}

/// Whole seconds, rounded up, at least 1: no client that honours it retries too early.
fn retry_after_seconds(wait_ns: Option<u64>) -> u64 {
    wait_ns.map_or(1, |ns| ns.div_ceil(1_000_000_000).max(1))
}

fn requests_per_second(limit: Limit) -> u32 {
    limit.rate().round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the host, so every
/// worker's buckets agree on time.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}
