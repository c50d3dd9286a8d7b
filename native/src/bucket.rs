//! Token bucket with the semantics of golang.org/x/time/rate, which Mimir's rate limiters
//! wrap: `rate` tokens per second refill up to `burst`; a request for `n` passes only if `n`
//! tokens are there and then consumes them; `n > burst` never passes; an infinite rate
//! passes everything. The bucket starts full.
//!
//! All arithmetic is integer: tokens are kept in nano-tokens and time in nanoseconds, so a
//! refill is exact to 1e-9 token and nothing drifts. The clock is never read here: every
//! call takes `now_ns` from the caller (any monotonic origin).

use std::fmt;

/// Nano-tokens per token.
const SCALE: u64 = 1_000_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Largest burst representable in nano-tokens (about 1.8e10 tokens). Larger bursts are
/// clamped to it: no remote-write body can carry that many samples.
pub const MAX_BURST: u64 = u64::MAX / SCALE;

#[derive(Debug, Clone, PartialEq)]
pub enum LimitError {
    /// Rate is negative or NaN.
    BadRate(f64),
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRate(r) => write!(
                f,
                "invalid rate {r}: must be a number >= 0 (inf for unlimited)"
            ),
        }
    }
}

impl std::error::Error for LimitError {}

/// `Limit::rate` value meaning unlimited (`rate.Inf`).
const UNLIMITED: u64 = u64::MAX;

/// A rate and a burst. Plain integers (`repr(C)`), so it can live in shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Limit {
    /// Nano-tokens per second; [`UNLIMITED`] is unlimited.
    rate: u64,
    burst: u64,
}

impl Limit {
    /// `rate` in tokens per second (`f64::INFINITY` for unlimited), `burst` in tokens.
    pub fn new(rate: f64, burst: u64) -> Result<Self, LimitError> {
        if rate.is_nan() || rate < 0.0 {
            return Err(LimitError::BadRate(rate));
        }
        let rate = if rate.is_infinite() {
            UNLIMITED
        } else {
            // Saturating float-to-int cast: rates above 1.8e10/s become 1.8e10/s (one below
            // the unlimited marker).
            ((rate * SCALE as f64).round() as u64).min(UNLIMITED - 1)
        };
        Ok(Self {
            rate,
            burst: burst.min(MAX_BURST),
        })
    }

    pub const fn unlimited() -> Self {
        Self {
            rate: UNLIMITED,
            burst: 0,
        }
    }

    pub const fn is_unlimited(&self) -> bool {
        self.rate == UNLIMITED
    }

    /// Nano-tokens per second, `None` when unlimited.
    const fn rate_nt(&self) -> Option<u64> {
        if self.is_unlimited() {
            None
        } else {
            Some(self.rate)
        }
    }

    /// Tokens per second (`inf` when unlimited).
    pub fn rate(&self) -> f64 {
        match self.rate_nt() {
            Some(r) => r as f64 / SCALE as f64,
            None => f64::INFINITY,
        }
    }

    pub const fn burst(&self) -> u64 {
        self.burst
    }

    const fn burst_nt(&self) -> u64 {
        self.burst * SCALE
    }
}

/// The outcome of [`Bucket::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied; `retry_after_ns` is when `n` tokens will be there, `None` if never
    /// (`n > burst`, or a zero rate with too few tokens left).
    Deny {
        retry_after_ns: Option<u64>,
    },
}

/// A bucket's state. 16 bytes of plain integers, so it can live in shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Bucket {
    /// Nano-tokens at `last_ns`.
    tokens: u64,
    last_ns: u64,
}

impl Bucket {
    /// A full bucket (x/time/rate limiters start full).
    pub const fn full(limit: Limit, now_ns: u64) -> Self {
        Self {
            tokens: limit.burst_nt(),
            last_ns: now_ns,
        }
    }

    /// Nano-tokens available at `now_ns`. Time going backwards refills nothing.
    fn advance(&self, limit: Limit, now_ns: u64) -> u64 {
        let burst = limit.burst_nt();
        let Some(rate) = limit.rate_nt() else {
            return burst;
        };
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let refill = u128::from(elapsed) * u128::from(rate) / NANOS_PER_SEC;
        let tokens = u128::from(self.tokens) + refill;
        // The min keeps the value within u64 (burst is a u64).
        tokens.min(u128::from(burst)) as u64
    }

    /// Tokens available at `now_ns` (fractional).
    pub fn tokens(&self, limit: Limit, now_ns: u64) -> f64 {
        self.advance(limit, now_ns) as f64 / SCALE as f64
    }

    /// Take `n` tokens if they are there (x/time/rate `AllowN`).
    pub fn take(&mut self, limit: Limit, now_ns: u64, n: u64) -> Decision {
        if limit.is_unlimited() {
            return Decision::Allow;
        }
        let available = self.advance(limit, now_ns);
        match n.checked_mul(SCALE) {
            Some(need) if n <= limit.burst && need <= available => {
                self.tokens = available - need;
                self.last_ns = now_ns;
                Decision::Allow
            }
            _ => Decision::Deny {
                retry_after_ns: self.wait_ns(limit, now_ns, n),
            },
        }
    }

    /// How long until `n` tokens are there: `Some(0)` if they are now, `None` if never.
    pub fn wait_ns(&self, limit: Limit, now_ns: u64, n: u64) -> Option<u64> {
        let Some(rate) = limit.rate_nt() else {
            return Some(0);
        };
        if n > limit.burst {
            return None;
        }
        let need = n * SCALE; // n <= burst <= MAX_BURST: no overflow
        let available = self.advance(limit, now_ns);
        let deficit = need.saturating_sub(available);
        if deficit == 0 {
            return Some(0);
        }
        if rate == 0 {
            return None;
        }
        let ns = (u128::from(deficit) * NANOS_PER_SEC).div_ceil(u128::from(rate));
        Some(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Switch to a new limit at `now_ns`, keeping the tokens earned under the old one
    /// (x/time/rate `SetLimitAt` + `SetBurstAt`). A smaller burst caps the tokens on the
    /// next refill, as in Go.
    pub fn reconfigure(&mut self, old: Limit, new: Limit, now_ns: u64) {
        self.tokens = if old.is_unlimited() {
            // Go's refill under an infinite rate is infinite, capped at the burst: full.
            new.burst_nt()
        } else {
            self.advance(old, now_ns)
        };
        self.last_ns = now_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    fn limit(rate: f64, burst: u64) -> Limit {
        Limit::new(rate, burst).unwrap_or_else(|_| Limit::unlimited())
    }

    #[test]
    fn starts_full_and_refills_at_rate() {
        let l = limit(10.0, 100);
        let mut b = Bucket::full(l, 0);
        assert_eq!(b.take(l, 0, 100), Decision::Allow);
        assert_eq!(
            b.take(l, 0, 1),
            Decision::Deny {
                retry_after_ns: Some(SEC / 10)
            }
        );
        // 1 s later: 10 tokens.
        assert_eq!(
            b.take(l, SEC, 11),
            Decision::Deny {
                retry_after_ns: Some(SEC / 10)
            }
        );
        assert_eq!(b.take(l, SEC, 10), Decision::Allow);
        // Refill caps at burst.
        assert_eq!(b.tokens(l, 1000 * SEC), 100.0);
    }

    #[test]
    fn more_than_burst_never_passes() {
        let l = limit(1e6, 50);
        let mut b = Bucket::full(l, 0);
        assert_eq!(
            b.take(l, 0, 51),
            Decision::Deny {
                retry_after_ns: None
            }
        );
        assert_eq!(
            b.take(l, u64::MAX, 51),
            Decision::Deny {
                retry_after_ns: None
            }
        );
        assert_eq!(
            b.take(l, 0, u64::MAX),
            Decision::Deny {
                retry_after_ns: None
            }
        );
    }

    #[test]
    fn unlimited_passes_everything() {
        let l = limit(f64::INFINITY, 0);
        let mut b = Bucket::full(l, 0);
        assert_eq!(b.take(l, 0, u64::MAX), Decision::Allow);
        assert_eq!(b.wait_ns(l, 0, u64::MAX), Some(0));
    }

    #[test]
    fn zero_rate_spends_the_burst_once() {
        let l = limit(0.0, 5);
        let mut b = Bucket::full(l, 0);
        assert_eq!(b.take(l, 0, 3), Decision::Allow);
        assert_eq!(
            b.take(l, 10 * SEC, 3),
            Decision::Deny {
                retry_after_ns: None
            }
        );
        assert_eq!(b.take(l, 10 * SEC, 2), Decision::Allow);
    }

    #[test]
    fn fractional_rates_are_exact() {
        // 0.5 tokens/s: one token every 2 s.
        let l = limit(0.5, 1);
        let mut b = Bucket::full(l, 0);
        assert_eq!(b.take(l, 0, 1), Decision::Allow);
        // One nano-token short; at 0.5 token/s a nano-token takes 2 ns.
        assert_eq!(
            b.take(l, 2 * SEC - 1, 1),
            Decision::Deny {
                retry_after_ns: Some(2)
            }
        );
        assert_eq!(b.take(l, 2 * SEC, 1), Decision::Allow);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let l = limit(10.0, 10);
        let mut b = Bucket::full(l, 100 * SEC);
        assert_eq!(b.take(l, 100 * SEC, 10), Decision::Allow);
        assert!(matches!(b.take(l, 50 * SEC, 1), Decision::Deny { .. }));
    }

    #[test]
    fn bad_rates_are_refused() {
        assert!(Limit::new(-1.0, 1).is_err());
        assert!(Limit::new(f64::NAN, 1).is_err());
        assert_eq!(Limit::new(1.0, u64::MAX).map(|l| l.burst()), Ok(MAX_BURST));
    }

    #[test]
    fn reconfigure_keeps_earned_tokens() {
        let old = limit(10.0, 100);
        let mut b = Bucket::full(old, 0);
        assert_eq!(b.take(old, 0, 60), Decision::Allow);
        // Raising the burst does not grant tokens, later refill uses the new rate.
        let new = limit(100.0, 1000);
        b.reconfigure(old, new, 0);
        assert_eq!(b.tokens(new, 0), 40.0);
        assert_eq!(b.tokens(new, SEC), 140.0);
        // Lowering the burst caps on the next refill.
        let small = limit(100.0, 10);
        b.reconfigure(new, small, SEC);
        assert_eq!(b.tokens(small, SEC), 10.0);
    }

    /// Reference model in f64, the way x/time/rate computes.
    #[derive(Clone, Copy)]
    struct Model {
        tokens: f64,
        last: f64,
    }

    impl Model {
        fn allow(&mut self, rate: f64, burst: f64, now: f64, n: f64) -> bool {
            let last = self.last.min(now);
            let tokens = (self.tokens + (now - last) * rate).min(burst);
            if n <= burst && tokens - n >= 0.0 {
                self.tokens = tokens - n;
                self.last = now;
                true
            } else {
                false
            }
        }
    }

    proptest! {
        /// Same decisions as a float x/time/rate model, away from exact ties (where the float
        /// model itself is unreliable), and Retry-After never too early.
        #[test]
        fn agrees_with_float_model(
            rate in 1u32..100_000,
            burst in 1u64..1_000_000,
            steps in proptest::collection::vec((0u64..2 * SEC, 0u64..200_000), 1..200),
        ) {
            let rate = f64::from(rate);
            let l = limit(rate, burst);
            let mut b = Bucket::full(l, 0);
            let mut m = Model { tokens: burst as f64, last: 0.0 };
            let mut now = 0u64;
            for (dt, n) in steps {
                now += dt;
                let t = now as f64 / SEC as f64;
                let have = (m.tokens + (t - m.last.min(t)) * rate).min(burst as f64);
                let close = (have - n as f64).abs() < 1e-3;
                let before = b;
                let got = b.take(l, now, n);
                let want = m.allow(rate, burst as f64, t, n as f64);
                if close {
                    // Resync the model to the exact state on ties.
                    m.tokens = b.tokens(l, now);
                    m.last = t;
                    continue;
                }
                prop_assert_eq!(matches!(got, Decision::Allow), want);
                if let Decision::Deny { retry_after_ns: Some(wait) } = got {
                    let mut probe = before;
                    prop_assert_eq!(probe.take(l, now + wait, n), Decision::Allow);
                    if wait > 0 {
                        let mut early = before;
                        let early_decision = early.take(l, now + wait - 1, n);
                        prop_assert!(early_decision != Decision::Allow, "allowed before retry-after");
                    }
                }
            }
        }
    }
}
