//! Exponential backoff with full jitter.
//!
//! The delay before retry `n` (counting from 0) is drawn uniformly from `[0, ceiling(n))` where
//! `ceiling(n) = min(max, base * 2^n)`. This is the "full jitter" variant from the AWS
//! Architecture Blog post "Exponential Backoff And Jitter": when many clients fail at the same
//! moment (a provider blip hits every in-flight request at once), plain exponential backoff
//! keeps them synchronised, so they return as the same thundering herd at 1 s, 2 s, 4 s, ...
//! and knock the recovering provider over again. Drawing the whole delay at random spreads the
//! retries evenly over the window, decorrelating the herd; of the variants the post compares it
//! does the least total work for the contending clients while completing about as fast.
//! Server hints (`retry-after`) are a floor applied by the retry policy, not here.
//!
//! Randomness is injected through [`RandomSource`] so tests are deterministic; [`SplitMix64`]
//! is a tiny, dependency-free generator that is plenty for jitter (it is not cryptographic and
//! need not be).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::PolicyError;

/// A source of uniform random numbers in `[0, 1)`.
pub trait RandomSource: Send {
    /// The next number, uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64;
}

/// The SplitMix64 generator (Steele, Lea and Flood, 2014): one add and a mixing function per
/// output, full 2^64 period, good enough statistical quality for jitter.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with a fixed seed, for reproducible tests and simulations.
    pub fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the wall clock, a stack address and a process-wide counter.
    ///
    /// The counter guarantees that generators created in the same nanosecond (many requests
    /// starting together) still get different seeds; otherwise they would jitter in lockstep,
    /// which is exactly what jitter exists to prevent.
    pub fn from_entropy() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let clock = (nanos as u64) ^ ((nanos >> 64) as u64);
        let marker = 0u8;
        let address = std::ptr::addr_of!(marker) as usize as u64;
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Spread the counter over all bits so consecutive counts differ in more than the
        // low bits before the xor with the (correlated) clock.
        let seed = clock ^ address.rotate_left(32) ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl RandomSource for SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly, so every value is a multiple of 2^-53
        // in [0, 1) and 1.0 itself can never come out.
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }
}

/// Exponential backoff bounds; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Ceiling of the first retry.
    pub const DEFAULT_BASE: Duration = Duration::from_secs(1);
    /// Largest ceiling of any retry.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(60);

    /// Validates the bounds: `base` must be positive (a zero base never grows) and `max` must
    /// not be below `base`.
    pub fn try_new(base: Duration, max: Duration) -> Result<Self, PolicyError> {
        if base.is_zero() {
            return Err(PolicyError::Invalid {
                key: "base_delay",
                message: "must be greater than zero".into(),
            });
        }
        if max < base {
            return Err(PolicyError::Invalid {
                key: "max_delay",
                message: format!(
                    "must not be less than base_delay ({} < {})",
                    humantime::format_duration(max),
                    humantime::format_duration(base)
                ),
            });
        }
        Ok(Self { base, max })
    }

    /// The ceiling of the first retry.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest ceiling.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// `min(max, base * 2^retry)`, without overflow for any `retry`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        // Nanoseconds as u128 hold any Duration (< 2^95), so the shift is only unsafe when it
        // would push bits out of the top; then the product is certainly above `max`.
        let base = self.base.as_nanos();
        let scaled = if retry < base.leading_zeros() {
            base << retry
        } else {
            u128::MAX
        };
        duration_from_nanos(scaled.min(self.max.as_nanos()))
    }

    /// A delay drawn uniformly from `[0, ceiling(retry))`; `retry` is 0 for the first retry.
    ///
    /// A misbehaving `rng` (NaN, negative, >= 1) cannot push the delay out of that range.
    pub fn delay(&self, retry: u32, rng: &mut dyn RandomSource) -> Duration {
        let ceiling = self.ceiling(retry).as_nanos();
        let u = rng.next_f64();
        let u = if u.is_finite() && u > 0.0 {
            u.min(1.0)
        } else {
            0.0
        };
        // The float product can round up to the ceiling for huge ceilings; clamp to keep the
        // half-open interval the docs promise. `ceiling >= base > 0`, so the subtraction holds.
        let nanos = ((ceiling as f64) * u) as u128;
        duration_from_nanos(nanos.min(ceiling - 1))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Self::DEFAULT_BASE,
            max: Self::DEFAULT_MAX,
        }
    }
}

/// Inverse of `Duration::as_nanos` for values that came from a `Duration`.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9 and fits a u32.
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Replays fixed outputs, for forcing edge cases.
    struct Fixed(f64);
    impl RandomSource for Fixed {
        fn next_f64(&mut self) -> f64 {
            self.0
        }
    }

    #[test]
    fn default_ceilings_double_then_cap() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..8).map(|r| b.ceiling(r).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
        assert_eq!(
            b,
            Backoff::try_new(Duration::from_secs(1), Duration::from_secs(60)).unwrap()
        );
    }

    #[test]
    fn ceiling_never_overflows() {
        let b = Backoff::try_new(Duration::from_nanos(1), Duration::MAX).unwrap();
        assert_eq!(b.ceiling(0), Duration::from_nanos(1));
        assert_eq!(b.ceiling(10), Duration::from_nanos(1024));
        for retry in [63, 64, 94, 95, 96, 127, 128, 1000, u32::MAX] {
            assert!(b.ceiling(retry) <= Duration::MAX);
        }
        assert_eq!(b.ceiling(u32::MAX), Duration::MAX);
        let big = Backoff::try_new(Duration::MAX, Duration::MAX).unwrap();
        assert_eq!(big.ceiling(1), Duration::MAX);
    }

    #[test]
    fn delay_stays_below_the_ceiling() {
        let b = Backoff::default();
        let mut rng = SplitMix64::seeded(42);
        for retry in 0..20 {
            for _ in 0..200 {
                assert!(b.delay(retry, &mut rng) < b.ceiling(retry));
            }
        }
        // Extremes of the rng, including values it must never produce.
        for u in [
            0.0,
            1.0 - f64::EPSILON,
            1.0,
            2.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
        ] {
            let d = b.delay(3, &mut Fixed(u));
            assert!(d < b.ceiling(3), "{u}: {d:?}");
        }
        assert_eq!(b.delay(3, &mut Fixed(0.5)), Duration::from_secs(4));
    }

    #[test]
    fn delays_spread_over_the_whole_window() {
        let b = Backoff::default();
        let mut rng = SplitMix64::seeded(9);
        let draws: Vec<Duration> = (0..1000).map(|_| b.delay(2, &mut rng)).collect();
        let low = draws
            .iter()
            .filter(|d| **d < Duration::from_secs(1))
            .count();
        let high = draws
            .iter()
            .filter(|d| **d >= Duration::from_secs(3))
            .count();
        // Each quarter of [0, 4s) should get roughly 250 draws.
        assert!((150..350).contains(&low), "{low}");
        assert!((150..350).contains(&high), "{high}");
    }

    #[test]
    fn seeded_generators_are_deterministic() {
        let mut a = SplitMix64::seeded(1234);
        let mut b = SplitMix64::seeded(1234);
        let backoff = Backoff::default();
        for retry in 0..50 {
            assert_eq!(backoff.delay(retry, &mut a), backoff.delay(retry, &mut b));
        }
        // Reference value of SplitMix64 for seed 0 (first output of the published algorithm).
        assert_eq!(SplitMix64::seeded(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn next_f64_is_in_unit_interval() {
        let mut rng = SplitMix64::from_entropy();
        for _ in 0..10_000 {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }

    #[test]
    fn entropy_seeds_differ() {
        let mut a = SplitMix64::from_entropy();
        let mut b = SplitMix64::from_entropy();
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn try_new_rejects_bad_bounds() {
        let err = Backoff::try_new(Duration::ZERO, Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            err,
            PolicyError::Invalid {
                key: "base_delay",
                message: "must be greater than zero".into()
            }
        );
        assert_eq!(err.to_string(), "base_delay: must be greater than zero");

        let err = Backoff::try_new(Duration::from_secs(2), Duration::from_millis(500)).unwrap_err();
        assert!(
            matches!(
                &err,
                PolicyError::Invalid {
                    key: "max_delay",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "max_delay: must not be less than base_delay (500ms < 2s)"
        );

        let equal = Backoff::try_new(Duration::from_secs(2), Duration::from_secs(2)).unwrap();
        assert_eq!(equal.ceiling(5), Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_ceiling(
            base_ns in 1u64..=u64::MAX,
            extra_ns in any::<u64>(),
            retry in any::<u32>(),
            u in any::<f64>(),
        ) {
            let base = Duration::from_nanos(base_ns);
            let max = base.saturating_add(Duration::from_nanos(extra_ns));
            let b = Backoff::try_new(base, max).unwrap();
            let ceiling = b.ceiling(retry);
            prop_assert!(ceiling >= base && ceiling <= max);
            prop_assert!(b.delay(retry, &mut Fixed(u)) <= ceiling);
            prop_assert!(b.delay(retry, &mut Fixed(u)) < ceiling);
        }

        #[test]
        fn ceiling_is_monotonic(base_ms in 1u64..10_000, max_s in 10u64..100_000, retry in 0u32..200) {
            let b = Backoff::try_new(Duration::from_millis(base_ms), Duration::from_secs(max_s)).unwrap();
            prop_assert!(b.ceiling(retry) <= b.ceiling(retry + 1));
        }
    }
}
