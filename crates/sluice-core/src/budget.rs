//! A retry budget per target, in the style of gRPC retry throttling and Finagle's `RetryBudget`.
//!
//! # Why a budget and not only `max_retries`
//!
//! A per-call retry count is a local decision with a global effect. With `max_retries = 5`,
//! every call that fails may be sent up to six times, so when a provider has an outage (every
//! attempt fails) the load it receives is multiplied by up to 6× — a retry storm at exactly the
//! moment the provider is weakest, which delays its recovery and burns the caller's rate limits
//! on requests that cannot succeed.
//!
//! A budget caps retries by *observed real traffic* instead: over a rolling `window`, retries
//! may add at most `ratio` of the first attempts (`0.2`: at most 20% extra load), plus a small
//! floor of `min_per_sec` retries per second so that a target with little traffic can still
//! retry a sporadic error. When errors are sporadic the budget is far from exhausted and every
//! retry goes through, so a budget costs nothing in the common case; when everything fails the
//! extra load is bounded by `ratio × requests + min_per_sec × window`, no matter how many
//! retries each call would like to make. Retries never refill the budget themselves (only first
//! attempts do, via [`RetryBudget::record_request`]), so an outage cannot fund its own storm.
//! This is the idea behind gRPC's retry throttling (`retryThrottling` in the service config:
//! retries stop while the failure token count is low) and Finagle's `RetryBudget` (deposits per
//! request at a percentage, plus a minimum number of retries per second over a TTL).
//! `max_retries` still bounds a single call; the budget bounds all calls on a target together
//! (architecture invariant 4).
//!
//! # Accounting
//!
//! Counts are kept in [`BUCKETS`] time buckets covering `window`, so memory is constant at any
//! traffic. An event counts for at least `window × (BUCKETS − 1) / BUCKETS` and at most `window`
//! after it happened (it leaves the window with its whole bucket). A withdrawal takes a whole
//! retry: it succeeds when [`RetryBudget::available`] is at least 1, so the retries counted in
//! the window never exceed `min_per_sec × window_secs + ratio × requests_in_window` — exactly,
//! not merely rounded up.
//!
//! The budget is pure: it never reads a clock (every method takes `now`) and holds no lock;
//! a caller sharing one between tasks wraps it in a `parking_lot::Mutex`.

use std::time::Duration;

use tokio::time::Instant;

use crate::PolicyError;

/// Number of time buckets a rolling window is divided into (also used by the circuit breaker).
pub(crate) const BUCKETS: usize = 10;

/// Two counters over a rolling window of [`BUCKETS`] time buckets; O(1) memory.
///
/// Bucket `e` (its "epoch") covers `[origin + e × width, origin + (e + 1) × width)`, where the
/// origin is the first instant anything was recorded. A slot is reused (and zeroed) when an
/// instant of a newer epoch lands on it.
#[derive(Debug, Clone)]
pub(crate) struct RollingCounts {
    /// Bucket width in nanoseconds; at least 1.
    width: u128,
    origin: Option<Instant>,
    slots: [Slot; BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    epoch: u64,
    counts: [u64; 2],
}

impl RollingCounts {
    /// An empty window of length `window` (a zero window behaves as one nanosecond).
    pub(crate) fn new(window: Duration) -> Self {
        let width = (window.as_nanos() / BUCKETS as u128).max(1);
        Self {
            width,
            origin: None,
            slots: [Slot::default(); BUCKETS],
        }
    }

    fn epoch(&self, origin: Instant, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(origin).as_nanos();
        u64::try_from(nanos / self.width).unwrap_or(u64::MAX)
    }

    /// Adds one to counter `which` (0 or 1) at `now`.
    pub(crate) fn add(&mut self, which: usize, now: Instant) {
        let origin = *self.origin.get_or_insert(now);
        let epoch = self.epoch(origin, now);
        let slot = &mut self.slots[(epoch % BUCKETS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                counts: [0; 2],
            };
        }
        slot.counts[which] = slot.counts[which].saturating_add(1);
    }

    /// Both counters summed over the window ending at `now`.
    pub(crate) fn totals(&self, now: Instant) -> [u64; 2] {
        let Some(origin) = self.origin else {
            return [0; 2];
        };
        let current = self.epoch(origin, now);
        let mut totals = [0u64; 2];
        for slot in &self.slots {
            // Buckets from the future (a `now` earlier than a previous one) are not counted.
            if slot.epoch <= current && current - slot.epoch < BUCKETS as u64 {
                totals[0] = totals[0].saturating_add(slot.counts[0]);
                totals[1] = totals[1].saturating_add(slot.counts[1]);
            }
        }
        totals
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.origin = None;
        self.slots = [Slot::default(); BUCKETS];
    }
}

/// Retry budget settings; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// Retries may add at most this fraction of the first attempts in the window.
    pub ratio: f64,
    /// Retries per second always allowed, so low-traffic targets can still retry.
    pub min_per_sec: f64,
    /// The rolling window requests and retries are counted over.
    pub window: Duration,
}

impl BudgetConfig {
    /// Default `ratio`: retries add at most 20% load.
    pub const DEFAULT_RATIO: f64 = 0.2;
    /// Default `min_per_sec`.
    pub const DEFAULT_MIN_PER_SEC: f64 = 10.0;
    /// Default `window`.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

    /// Checks that every value can work; names the first bad key. `ratio = 0` with
    /// `min_per_sec = 0` is valid and disables retries on the target.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(self.ratio.is_finite() && self.ratio >= 0.0) {
            return Err(PolicyError::Invalid {
                key: "budget.ratio",
                message: format!("must be a finite number >= 0 (got {})", self.ratio),
            });
        }
        if !(self.min_per_sec.is_finite() && self.min_per_sec >= 0.0) {
            return Err(PolicyError::Invalid {
                key: "budget.min_per_sec",
                message: format!("must be a finite number >= 0 (got {})", self.min_per_sec),
            });
        }
        if self.window.is_zero() {
            return Err(PolicyError::Invalid {
                key: "budget.window",
                message: "must be greater than zero".into(),
            });
        }
        Ok(())
    }

    /// Retries allowed in a window with no traffic: `min_per_sec × window_secs`.
    pub fn floor(&self) -> f64 {
        self.min_per_sec * self.window.as_secs_f64()
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: Self::DEFAULT_RATIO,
            min_per_sec: Self::DEFAULT_MIN_PER_SEC,
            window: Self::DEFAULT_WINDOW,
        }
    }
}

const REQUESTS: usize = 0;
const RETRIES: usize = 1;

/// Time-bucketed counts of requests (first attempts) and retries on one target over
/// `window`; see the module docs.
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    counts: RollingCounts,
}

impl RetryBudget {
    /// A budget with nothing recorded. `config` should have passed
    /// [`BudgetConfig::validate`]; an invalid one still never panics (a NaN or negative
    /// allowance simply permits no retries).
    pub fn new(config: BudgetConfig) -> Self {
        let counts = RollingCounts::new(config.window);
        Self { config, counts }
    }

    /// Validates `config`, then builds the budget.
    pub fn try_new(config: BudgetConfig) -> Result<Self, PolicyError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Records a call's first attempt on this target.
    pub fn record_request(&mut self, now: Instant) {
        self.counts.add(REQUESTS, now);
    }

    /// Whether a retry may happen now; if so it is recorded (withdrawn) at once.
    ///
    /// Succeeds while [`available`](Self::available) is at least 1, i.e. when
    /// `retries_in_window + 1 <= min_per_sec × window_secs + ratio × requests_in_window`.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.raw_available(now) >= 1.0 {
            self.counts.add(RETRIES, now);
            true
        } else {
            false
        }
    }

    /// Retries that may still be made right now (fractional; 0 when exhausted). Each
    /// successful [`try_withdraw`](Self::try_withdraw) lowers it by exactly 1.
    pub fn available(&self, now: Instant) -> f64 {
        self.raw_available(now).max(0.0)
    }

    fn raw_available(&self, now: Instant) -> f64 {
        let [requests, retries] = self.counts.totals(now);
        self.config.floor() + self.config.ratio * requests as f64 - retries as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = BudgetConfig::default();
        assert_eq!(c.ratio, 0.2);
        assert_eq!(c.min_per_sec, 10.0);
        assert_eq!(c.window, Duration::from_secs(10));
        assert_eq!(c.floor(), 100.0);
        c.validate().unwrap();
    }

    #[test]
    fn validate_names_the_bad_key() {
        let bad = [
            (
                BudgetConfig {
                    ratio: -0.1,
                    ..BudgetConfig::default()
                },
                "budget.ratio",
            ),
            (
                BudgetConfig {
                    ratio: f64::NAN,
                    ..BudgetConfig::default()
                },
                "budget.ratio",
            ),
            (
                BudgetConfig {
                    min_per_sec: f64::INFINITY,
                    ..BudgetConfig::default()
                },
                "budget.min_per_sec",
            ),
            (
                BudgetConfig {
                    window: Duration::ZERO,
                    ..BudgetConfig::default()
                },
                "budget.window",
            ),
        ];
        for (config, want) in bad {
            let err = RetryBudget::try_new(config).unwrap_err();
            let PolicyError::Invalid { key, .. } = &err;
            assert_eq!(*key, want, "{err}");
            assert!(err.to_string().starts_with(want), "{err}");
        }
        let off = BudgetConfig {
            ratio: 0.0,
            min_per_sec: 0.0,
            ..BudgetConfig::default()
        };
        let mut budget = RetryBudget::try_new(off).unwrap();
        let now = Instant::now();
        budget.record_request(now);
        assert!(!budget.try_withdraw(now));
    }

    #[test]
    fn greedy_retries_during_an_outage_stay_within_the_budget() {
        let config = BudgetConfig::default();
        let bound = config.ratio * 500.0 + config.floor();
        let mut budget = RetryBudget::new(config);
        let t0 = Instant::now();
        let (mut retries, mut wanted) = (0u32, 0u32);
        // 500 calls spread over 9s (inside one 10s window); every attempt fails and each call
        // wants its 5 retries (6x the load without a budget).
        for i in 0..500u32 {
            let now = t0 + Duration::from_millis(18) * i;
            budget.record_request(now);
            for _ in 0..5 {
                wanted += 1;
                if budget.try_withdraw(now) {
                    retries += 1;
                } else {
                    break;
                }
            }
        }
        assert!(f64::from(retries) <= bound, "{retries} > {bound}");
        // Greedy callers use the whole budget, and nothing like the 2500 retries they wanted.
        assert!(f64::from(retries) > bound - 1.0, "{retries}");
        assert!(wanted > retries);
    }

    #[test]
    fn the_floor_allows_retries_with_zero_requests() {
        let mut budget = RetryBudget::new(BudgetConfig::default());
        let now = Instant::now();
        for n in 0..100 {
            assert!(budget.try_withdraw(now), "retry {n}");
        }
        assert!(!budget.try_withdraw(now));
        assert_eq!(budget.available(now), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_age_out_after_the_window() {
        let mut budget = RetryBudget::new(BudgetConfig {
            ratio: 1.0,
            min_per_sec: 0.0,
            window: Duration::from_secs(10),
        });
        let start = Instant::now();
        for _ in 0..5 {
            budget.record_request(start);
        }
        assert_eq!(budget.available(start), 5.0);
        assert!(budget.try_withdraw(start));
        assert!(budget.try_withdraw(start));
        assert_eq!(budget.available(start), 3.0);

        // Still inside the window.
        tokio::time::advance(secs(8.5)).await;
        assert_eq!(budget.available(Instant::now()), 3.0);

        // After the window everything recorded at `start` is gone, retries included.
        tokio::time::advance(secs(1.5)).await;
        let now = Instant::now();
        assert_eq!(budget.available(now), 0.0);
        assert!(!budget.try_withdraw(now));
        budget.record_request(now);
        assert_eq!(budget.available(now), 1.0);
        assert!(budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now));

        // Aged-out retries stop counting against new traffic too.
        let mut floor = RetryBudget::new(BudgetConfig::default());
        while floor.try_withdraw(now) {}
        assert_eq!(floor.available(now), 0.0);
        assert_eq!(floor.available(now + Duration::from_secs(10)), 100.0);
    }

    #[test]
    fn available_drops_by_one_per_withdrawal() {
        let mut budget = RetryBudget::new(BudgetConfig::default());
        let now = Instant::now();
        for _ in 0..50 {
            budget.record_request(now);
        }
        let mut before = budget.available(now);
        assert!((before - 110.0).abs() < 1e-9, "{before}");
        while budget.try_withdraw(now) {
            let after = budget.available(now);
            assert!((before - after - 1.0).abs() < 1e-9, "{before} -> {after}");
            before = after;
        }
        assert!(before < 1.0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Request,
        Retry,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Request),
            4 => Just(Op::Retry),
            1 => (0u64..3_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Checked against an independent log of events: whenever a retry is granted, the
        /// retries of the last `window × 9/10` (which the buckets certainly still count) do not
        /// exceed the allowance from the requests of the last full `window` (which the buckets
        /// count at most).
        #[test]
        fn retries_never_exceed_the_budget(
            ops in proptest::collection::vec(op(), 1..600),
            ratio in 0.0f64..1.0,
            min_per_sec in 0.0f64..2.0,
            window_ms in 1_000u64..20_000,
        ) {
            let config = BudgetConfig { ratio, min_per_sec, window: Duration::from_millis(window_ms) };
            let window = config.window;
            let floor = config.floor();
            let mut budget = RetryBudget::new(config);
            let t0 = Instant::now();
            let mut now = t0;
            let mut requests: Vec<Instant> = Vec::new();
            let mut retries: Vec<Instant> = Vec::new();
            for op in ops {
                match op {
                    Op::Request => {
                        budget.record_request(now);
                        requests.push(now);
                    }
                    Op::Retry => {
                        let before = budget.available(now);
                        if budget.try_withdraw(now) {
                            retries.push(now);
                            let sure = window * (BUCKETS as u32 - 1) / BUCKETS as u32;
                            let recent_retries = retries.iter().filter(|t| now - **t < sure).count();
                            let window_requests = requests.iter().filter(|t| now - **t < window).count();
                            let allowance = floor + ratio * window_requests as f64;
                            prop_assert!(recent_retries as f64 <= allowance + 1e-9,
                                "{recent_retries} retries > {allowance}");
                            prop_assert!((before - budget.available(now) - 1.0).abs() < 1e-9);
                        } else {
                            prop_assert!(before < 1.0);
                        }
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                }
            }
        }
    }
}
