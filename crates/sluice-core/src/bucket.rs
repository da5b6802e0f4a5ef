//! A token bucket: the one primitive behind the requests-per-minute and tokens-per-minute limits.
//!
//! A bucket holds up to `capacity` units (the burst) and refills continuously at
//! `refill_per_sec`. Taking `n` units succeeds when the bucket holds at least `n`; otherwise
//! nothing is taken and the caller learns how long until `n` will fit. So over any interval of
//! length `t` a bucket admits at most `capacity + rate × t` units (plus whatever was refunded),
//! which is exactly the promise a per-minute limit makes.
//!
//! Three corrections exist besides taking:
//!
//! - [`TokenBucket::refund`] gives units back (an attempt that consumed nothing); a refund never
//!   raises the level above `capacity`, so refunds cannot manufacture a burst.
//! - [`TokenBucket::debit`] takes units unconditionally and may leave the level **below zero**:
//!   a response that used more tokens than were reserved has been counted by the provider too,
//!   and the debt makes later asks wait until the refill has paid it back.
//! - [`TokenBucket::set_limits`] changes capacity and rate (limits learned from a provider's
//!   headers) and keeps the current level, clamped to the new capacity.
//!
//! The bucket is pure: it never reads a clock (every method that depends on time takes `now`)
//! and holds no lock; a caller sharing one between tasks wraps it in a `parking_lot::Mutex`.
//! Time that runs backwards (a `now` older than one already seen) counts as no time at all.
//!
//! Capacities and rates that are negative, NaN or infinite are treated as `0`: a bucket of
//! capacity `0` admits nothing but zero-sized asks, one with rate `0` never refills.

use std::time::Duration;

use tokio::time::Instant;

/// A continuously refilling token bucket; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    /// The level at `updated`; never above `capacity`, may be negative.
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket holding at most `capacity` units, refilling `refill_per_sec` units per
    /// second.
    pub fn new(capacity: f64, refill_per_sec: f64, now: Instant) -> Self {
        let capacity = sane(capacity);
        Self {
            capacity,
            rate: sane(refill_per_sec),
            level: capacity,
            updated: now,
        }
    }

    /// The most the bucket can hold (the burst).
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// Units added per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether an ask of `n` can ever be granted, i.e. `n <= capacity`. An ask that does not
    /// fit must be refused at once ("too large"), never waited for.
    pub fn fits(&self, n: f64) -> bool {
        n <= self.capacity
    }

    /// Units available at `now` (negative while a debit is being paid back).
    pub fn level(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        if self.level >= self.capacity {
            return self.capacity;
        }
        (self.level + self.rate * elapsed).min(self.capacity)
    }

    /// How long from `now` until `n` units are available: zero if they are now,
    /// `Duration::MAX` if never (`n` exceeds the capacity, is NaN, or the bucket does not
    /// refill). The bucket is not changed.
    pub fn time_until(&self, n: f64, now: Instant) -> Duration {
        if n.is_nan() || !self.fits(n) {
            return Duration::MAX;
        }
        let level = self.level(now);
        if level >= n {
            return Duration::ZERO;
        }
        if self.rate <= 0.0 {
            return Duration::MAX;
        }
        let secs = (n - level) / self.rate;
        // Rounded up, plus one nanosecond against floating-point error, so that waiting the
        // returned time is enough; never zero, so a caller that sleeps and retries makes progress.
        let nanos = (secs * 1e9).ceil() + 1.0;
        if nanos < u64::MAX as f64 {
            Duration::from_nanos(nanos as u64)
        } else {
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
        }
    }

    /// Takes `n` units if they are available at `now`; otherwise takes nothing and returns the
    /// time until they will be ([`TokenBucket::time_until`]; `Duration::MAX` when `n` can never
    /// fit). Asks of zero or less always succeed and take nothing.
    pub fn try_acquire(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        if n <= 0.0 {
            return Ok(());
        }
        self.refill(now);
        let wait = self.time_until(n, now);
        if wait.is_zero() {
            self.level -= n;
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Gives `n` units back, never raising the level above the capacity. Non-positive or
    /// non-finite `n` is ignored.
    pub fn refund(&mut self, n: f64, now: Instant) {
        self.refill(now);
        if n.is_finite() && n > 0.0 {
            self.level = (self.level + n).min(self.capacity);
        }
    }

    /// Takes `n` units unconditionally; the level may go below zero. Non-positive or
    /// non-finite `n` is ignored.
    pub fn debit(&mut self, n: f64, now: Instant) {
        self.refill(now);
        if n.is_finite() && n > 0.0 {
            self.level -= n;
        }
    }

    /// Changes the capacity and the refill rate, keeping the current level (clamped to the new
    /// capacity). Time up to `now` is refilled at the old rate.
    pub fn set_limits(&mut self, capacity: f64, refill_per_sec: f64, now: Instant) {
        self.refill(now);
        self.capacity = sane(capacity);
        self.rate = sane(refill_per_sec);
        self.level = self.level.min(self.capacity);
    }

    fn refill(&mut self, now: Instant) {
        self.level = self.level(now);
        if now > self.updated {
            self.updated = now;
        }
    }
}

/// A usable capacity or rate: finite and non-negative, else `0`.
fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn starts_full_and_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60.0, 1.0, t0);
        assert_eq!(b.capacity(), 60.0);
        assert_eq!(b.rate(), 1.0);
        assert_eq!(b.level(t0), 60.0);
        assert_eq!(b.try_acquire(60.0, t0), Ok(()));
        assert_eq!(b.level(t0), 0.0);
        assert_eq!(b.level(t0 + secs(2.5)), 2.5);
        // Never above the capacity, however long it rests.
        assert_eq!(b.level(t0 + secs(3600.0)), 60.0);
    }

    #[test]
    fn a_refused_ask_takes_nothing_and_says_how_long() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t0);
        b.try_acquire(9.0, t0).unwrap();
        let wait = b.try_acquire(5.0, t0).unwrap_err();
        assert!(wait >= secs(2.0) && wait < secs(2.0) + Duration::from_micros(1));
        assert_eq!(b.level(t0), 1.0);
        assert_eq!(b.try_acquire(5.0, t0 + wait), Ok(()));
    }

    #[test]
    fn too_large_asks_never_fit_and_never_loop() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 10.0, t0);
        assert!(b.fits(100.0));
        assert!(!b.fits(100.5));
        assert!(!b.fits(f64::NAN));
        assert_eq!(b.try_acquire(101.0, t0), Err(Duration::MAX));
        assert_eq!(b.try_acquire(f64::NAN, t0), Err(Duration::MAX));
        assert_eq!(b.try_acquire(f64::INFINITY, t0), Err(Duration::MAX));
        assert_eq!(b.level(t0), 100.0);
        // Zero-sized and negative asks take nothing.
        assert_eq!(b.try_acquire(0.0, t0), Ok(()));
        assert_eq!(b.try_acquire(-5.0, t0), Ok(()));
        assert_eq!(b.level(t0), 100.0);
    }

    #[test]
    fn a_bucket_that_does_not_refill_says_never() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 0.0, t0);
        b.try_acquire(1.0, t0).unwrap();
        assert_eq!(b.try_acquire(1.0, t0 + secs(1e6)), Err(Duration::MAX));
        let nonsense = TokenBucket::new(f64::NAN, -3.0, t0);
        assert_eq!(nonsense.capacity(), 0.0);
        assert_eq!(nonsense.rate(), 0.0);
    }

    #[test]
    fn huge_waits_saturate_instead_of_overflowing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1e300, 1e-300, t0);
        b.debit(1e300, t0);
        assert_eq!(b.time_until(1.0, t0), Duration::MAX);
    }

    #[test]
    fn debit_goes_below_zero_and_the_debt_is_waited_out() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 10.0, t0);
        b.try_acquire(80.0, t0).unwrap();
        // The response used 150 tokens where 80 were reserved.
        b.debit(70.0, t0);
        assert_eq!(b.level(t0), -50.0);
        let wait = b.try_acquire(10.0, t0).unwrap_err();
        assert!(wait >= secs(6.0) && wait < secs(6.0) + Duration::from_micros(1));
        b.debit(f64::NAN, t0);
        b.debit(-1.0, t0);
        assert_eq!(b.level(t0), -50.0);
    }

    #[test]
    fn refunds_are_capped_at_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 10.0, t0);
        b.try_acquire(30.0, t0).unwrap();
        b.refund(50.0, t0);
        assert_eq!(b.level(t0), 100.0);
        b.refund(f64::INFINITY, t0);
        assert_eq!(b.level(t0), 100.0);
    }

    #[test]
    fn set_limits_keeps_the_level_clamped_to_the_new_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 10.0, t0);
        b.try_acquire(200.0, t0).unwrap();
        // Time before the change refills at the old rate.
        b.set_limits(500.0, 1.0, t0 + secs(5.0));
        assert_eq!(b.level(t0 + secs(5.0)), 500.0);
        assert_eq!((b.capacity(), b.rate()), (500.0, 1.0));
        b.try_acquire(500.0, t0 + secs(5.0)).unwrap();
        assert_eq!(b.level(t0 + secs(7.0)), 2.0);
        // Loosening keeps the level: no free burst.
        b.set_limits(1000.0, 10.0, t0 + secs(7.0));
        assert_eq!(b.level(t0 + secs(7.0)), 2.0);
    }

    #[test]
    fn time_running_backwards_counts_as_no_time() {
        let t0 = Instant::now();
        let later = t0 + secs(10.0);
        let mut b = TokenBucket::new(10.0, 1.0, t0);
        b.try_acquire(10.0, later).unwrap();
        assert_eq!(b.level(t0), 0.0);
        assert!(b.try_acquire(1.0, t0).is_err());
        assert_eq!(b.level(later + secs(1.0)), 1.0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(f64),
        Refund(f64),
        Debit(f64),
        SetLimits(f64, f64),
    }

    fn op() -> impl Strategy<Value = (u64, Op)> {
        let op = prop_oneof![
            4 => (0.0..200.0f64).prop_map(Op::Acquire),
            1 => (0.0..200.0f64).prop_map(Op::Refund),
            1 => (0.0..200.0f64).prop_map(Op::Debit),
            1 => (1.0..500.0f64, 0.0..100.0f64).prop_map(|(c, r)| Op::SetLimits(c, r)),
        ];
        (0u64..5_000, op)
    }

    /// Slack for floating-point rounding in the comparisons below.
    fn eps(x: f64) -> f64 {
        1e-9 * x.abs().max(1.0)
    }

    proptest! {
        #[test]
        fn never_admits_more_than_capacity_plus_rate_times_elapsed(
            capacity in 1.0..1e6f64,
            rate in 0.0..1e4f64,
            asks in proptest::collection::vec((0u64..5_000, 0.0..2e5f64), 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(capacity, rate, t0);
            let mut now = t0;
            let mut admitted = 0.0;
            for (dt_ms, n) in asks {
                now += Duration::from_millis(dt_ms);
                if b.try_acquire(n, now).is_ok() {
                    admitted += n;
                }
                let bound = capacity + rate * (now - t0).as_secs_f64();
                prop_assert!(admitted <= bound + eps(bound), "{admitted} > {bound}");
            }
        }

        #[test]
        fn debits_never_let_more_through(
            capacity in 1.0..1e4f64,
            rate in 0.0..1e3f64,
            ops in proptest::collection::vec((0u64..5_000, 0.0..2e3f64, any::<bool>()), 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(capacity, rate, t0);
            let mut now = t0;
            let mut admitted = 0.0;
            for (dt_ms, n, is_debit) in ops {
                now += Duration::from_millis(dt_ms);
                if is_debit {
                    b.debit(n, now);
                } else if b.try_acquire(n, now).is_ok() {
                    admitted += n;
                }
                // A debit may leave the level negative, but it only ever lowers it: the bound
                // on admissions holds with any debits mixed in.
                let bound = capacity + rate * (now - t0).as_secs_f64();
                prop_assert!(admitted <= bound + eps(bound), "{admitted} > {bound}");
                prop_assert!(b.level(now) <= capacity);
            }
        }

        #[test]
        fn refunds_never_raise_the_level_above_capacity(
            capacity in 1.0..1e4f64,
            rate in 0.0..1e3f64,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(capacity, rate, t0);
            let mut now = t0;
            for (dt_ms, op) in ops {
                now += Duration::from_millis(dt_ms);
                match op {
                    Op::Acquire(n) => { let _ = b.try_acquire(n, now); }
                    Op::Refund(n) => b.refund(n, now),
                    Op::Debit(n) => b.debit(n, now),
                    Op::SetLimits(c, r) => b.set_limits(c, r, now),
                }
                prop_assert!(b.level(now) <= b.capacity(), "{} > {}", b.level(now), b.capacity());
                prop_assert!(b.level(now + Duration::from_secs(3600)) <= b.capacity());
            }
        }

        #[test]
        fn waiting_the_returned_time_is_enough_and_not_too_much(
            capacity in 1.0..1e6f64,
            rate in 1e-3..1e4f64,
            taken in 0.0..1.0f64,
            debt in 0.0..1e4f64,
            ask in 0.0..1.0f64,
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(capacity, rate, t0);
            b.try_acquire(capacity * taken, t0).unwrap();
            b.debit(debt, t0);
            let n = capacity * ask;
            let before = b.clone();
            match b.try_acquire(n, t0) {
                Ok(()) => prop_assert!(before.level(t0) >= n),
                Err(wait) => {
                    prop_assert_eq!(&b, &before, "a refused ask changed the bucket");
                    prop_assert!(wait > Duration::ZERO);
                    prop_assert!(b.clone().try_acquire(n, t0 + wait).is_ok(), "not enough: {:?}", wait);
                    let exact = (n - before.level(t0)) / rate;
                    prop_assert!(wait.as_secs_f64() <= exact + 1e-6 + eps(exact));
                }
            }
        }

        #[test]
        fn asks_beyond_capacity_are_refused_without_change(
            capacity in 0.0..1e6f64,
            extra in 1e-3..1e6f64,
            rate in 0.0..1e4f64,
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(capacity, rate, t0);
            prop_assert!(!b.fits(capacity + extra));
            prop_assert_eq!(b.try_acquire(capacity + extra, t0), Err(Duration::MAX));
            prop_assert_eq!(b.level(t0), capacity);
        }
    }
}
