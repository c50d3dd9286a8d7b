//! Per-tenant limits, turned into token-bucket limits the way Mimir's rate strategies do
//! (pkg/distributor/rate_strategy.go; see docs/limits.md for where the edge differs).

use std::collections::HashMap;

use crate::bucket::{Limit, MAX_BURST};

/// One tenant's limits, in Mimir's units and with Mimir's field meanings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    /// `request_rate`: pushes per second; 0 or less disables the request limit.
    pub request_rate: f64,
    /// `request_burst_size`: 0 means no burst limit (Mimir uses MaxInt).
    pub request_burst: u64,
    /// `ingestion_rate`: samples + histograms + exemplars + metadata per second.
    pub ingestion_rate: f64,
    /// `ingestion_burst_size` (or `ingestion_rate * ingestion_burst_factor` when the factor
    /// is set; resolved before it gets here).
    pub ingestion_burst: u64,
    /// Edge-only: decide, count and log, but let every push through.
    pub dry_run: bool,
    /// Edge-only: `false` lets every push of this tenant through without counting it.
    pub enforce: bool,
}

impl TenantLimits {
    /// Mimir's defaults (`-distributor.request-rate-limit` 0, `-distributor.ingestion-rate-limit`
    /// 10000, `-distributor.ingestion-burst-size` 200000).
    pub const MIMIR_DEFAULTS: Self = Self {
        request_rate: 0.0,
        request_burst: 0,
        ingestion_rate: 10_000.0,
        ingestion_burst: 200_000,
        dry_run: false,
        enforce: true,
    };

    /// The request bucket: unlimited unless `request_rate > 0`; burst 0 is unbounded.
    pub fn request_limit(&self, share: f64) -> Limit {
        if self.request_rate > 0.0 {
            let burst = if self.request_burst > 0 {
                self.request_burst
            } else {
                MAX_BURST
            };
            Limit::new(self.request_rate * share, burst).unwrap_or_else(|_| Limit::unlimited())
        } else {
            Limit::unlimited()
        }
    }

    /// The ingestion bucket. The rate is this instance's share (as Mimir divides it among
    /// distributors); the burst is not divided, as in Mimir.
    pub fn ingestion_limit(&self, share: f64) -> Limit {
        let rate = if self.ingestion_rate.is_finite() {
            self.ingestion_rate.max(0.0) * share
        } else {
            f64::INFINITY
        };
        Limit::new(rate, self.ingestion_burst).unwrap_or_else(|_| Limit::unlimited())
    }
}

/// The whole limit set an engine enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsSet {
    /// Changes whenever the set changes; tenants' buckets are reconfigured lazily when they
    /// see a new generation (keeping the tokens they have).
    pub generation: u64,
    pub defaults: TenantLimits,
    pub tenants: HashMap<Vec<u8>, TenantLimits>,
    /// This instance's share of each rate: 1 / the number of RLS instances.
    pub share: f64,
}

impl Default for LimitsSet {
    fn default() -> Self {
        Self {
            generation: 0,
            defaults: TenantLimits::MIMIR_DEFAULTS,
            tenants: HashMap::new(),
            share: 1.0,
        }
    }
}

impl LimitsSet {
    pub fn for_tenant(&self, tenant: &[u8]) -> &TenantLimits {
        self.tenants.get(tenant).unwrap_or(&self.defaults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_limit_follows_mimir() {
        let mut l = TenantLimits::MIMIR_DEFAULTS;
        assert!(l.request_limit(1.0).is_unlimited());
        l.request_rate = 10.0;
        assert_eq!(l.request_limit(1.0).burst(), MAX_BURST);
        l.request_burst = 20;
        assert_eq!(
            (l.request_limit(0.5).rate(), l.request_limit(0.5).burst()),
            (5.0, 20)
        );
    }

    #[test]
    fn ingestion_rate_is_shared_burst_is_not() {
        let l = TenantLimits::MIMIR_DEFAULTS;
        let lim = l.ingestion_limit(0.25);
        assert_eq!((lim.rate(), lim.burst()), (2500.0, 200_000));
    }
}
