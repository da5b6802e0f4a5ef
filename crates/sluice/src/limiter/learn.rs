//! Limits learned from a provider's rate-limit headers, and how they combine with the
//! configured ones.

use std::time::Duration;

use sluice_core::{BucketView, RateLimitSnapshot};
use tokio::time::Instant;

use super::Limits;

/// The longest a key is blocked after a provider reports an exhausted bucket. Resets are per
/// minute in practice; a reset far beyond this is more likely a broken header than a real
/// promise, and a provider that really blocks longer answers with 429s, which park the target.
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(3600);

/// What the provider's headers taught about one key.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LearnedLimits {
    /// The provider's requests-per-minute limit, as last reported.
    pub rpm: Option<f64>,
    /// The provider's tokens-per-minute limit, as last reported.
    pub tpm: Option<f64>,
    /// A bucket was reported exhausted: nothing is granted before this instant.
    pub blocked_until: Option<Instant>,
}

impl LearnedLimits {
    /// Folds in one response's snapshot. The latest reported limit replaces the previous one
    /// (a provider may raise an account's limits); a block is never shortened, since responses
    /// can arrive out of order.
    pub(crate) fn update(&mut self, snapshot: &RateLimitSnapshot, now: Instant) {
        if let Some(view) = snapshot.requests {
            self.rpm = Some(view.limit);
            self.block_if_exhausted(&view, now);
        }
        if let Some(view) = snapshot.tokens {
            self.tpm = Some(view.limit);
            self.block_if_exhausted(&view, now);
        }
    }

    fn block_if_exhausted(&mut self, view: &BucketView, now: Instant) {
        if !view.is_exhausted() || view.reset.is_zero() {
            return;
        }
        // A provider's reset is the time until its bucket is *full* again (reference §1.5), so
        // the next unit is free after reset / limit, not after the whole reset: blocking for
        // the reset would stall a target that runs at its limit, where remaining is 0 all the
        // time.
        let next_unit = view.reset.div_f64(view.limit.max(1.0));
        let until = now + next_unit.min(MAX_BLOCK);
        if self.blocked_until.is_none_or(|b| b < until) {
            self.blocked_until = Some(until);
        }
    }

    /// The block in effect at `now`, if any.
    pub(crate) fn blocked_at(&self, now: Instant) -> Option<Instant> {
        self.blocked_until.filter(|until| *until > now)
    }

    /// `configured` tightened by what was learned: on each axis the smaller of the configured
    /// and learned rates, and the smaller of the configured burst and the learned limit (a
    /// provider's bucket holds one minute's worth). An axis that is not configured takes the
    /// learned limit alone; nothing learned ever loosens a configured limit.
    pub(crate) fn apply(&self, configured: &Limits) -> Limits {
        let (rpm, burst_requests) = tighten(configured.rpm, configured.burst_requests, self.rpm);
        let (tpm, burst_tokens) = tighten(configured.tpm, configured.burst_tokens, self.tpm);
        Limits {
            rpm,
            tpm,
            burst_requests,
            burst_tokens,
        }
    }
}

/// `(rate, burst)` of one axis; unchanged when nothing was learned.
fn tighten(
    rate: Option<f64>,
    burst: Option<f64>,
    learned: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    let Some(learned) = learned else {
        return (rate, burst);
    };
    match rate {
        None => (Some(learned), Some(learned)),
        Some(rate) => (
            Some(rate.min(learned)),
            Some(burst.unwrap_or(rate).min(learned)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::BucketView;

    fn view(limit: f64, remaining: f64, reset_ms: u64) -> Option<BucketView> {
        Some(BucketView {
            limit,
            remaining,
            reset: Duration::from_millis(reset_ms),
        })
    }

    const CONFIGURED: Limits = Limits {
        rpm: Some(500.0),
        tpm: Some(30_000.0),
        burst_requests: Some(100.0),
        burst_tokens: None,
    };

    #[test]
    fn nothing_learned_changes_nothing() {
        assert_eq!(LearnedLimits::default().apply(&CONFIGURED), CONFIGURED);
        assert_eq!(
            LearnedLimits::default().apply(&Limits::UNLIMITED),
            Limits::UNLIMITED
        );
    }

    #[test]
    fn learned_limits_tighten_but_never_loosen() {
        let now = Instant::now();
        let mut learned = LearnedLimits::default();
        learned.update(
            &RateLimitSnapshot {
                requests: view(50.0, 40.0, 100),
                tokens: view(1_000_000.0, 999_000.0, 100),
            },
            now,
        );
        let limits = learned.apply(&CONFIGURED);
        assert_eq!(limits.rpm, Some(50.0));
        assert_eq!(limits.request_capacity(), Some(50.0));
        assert_eq!(limits.tpm, Some(30_000.0));
        assert_eq!(limits.token_capacity(), Some(30_000.0));
        assert_eq!(learned.blocked_at(now), None);
        // A learned limit between the configured burst and rate lowers the rate only.
        learned.rpm = Some(200.0);
        let limits = learned.apply(&CONFIGURED);
        assert_eq!(
            (limits.rpm, limits.request_capacity()),
            (Some(200.0), Some(100.0))
        );
    }

    #[test]
    fn learned_limits_apply_without_configured_ones() {
        let mut learned = LearnedLimits::default();
        learned.update(
            &RateLimitSnapshot {
                requests: None,
                tokens: view(80_000.0, 1.0, 100),
            },
            Instant::now(),
        );
        let limits = learned.apply(&Limits::UNLIMITED);
        assert_eq!(limits.rpm, None);
        assert_eq!(limits.tpm, Some(80_000.0));
        assert_eq!(limits.token_capacity(), Some(80_000.0));
    }

    #[test]
    fn exhaustion_blocks_until_the_next_unit_and_is_never_shortened() {
        let now = Instant::now();
        let mut learned = LearnedLimits::default();
        let exhausted = |reset_ms| RateLimitSnapshot {
            requests: view(1.0, 0.0, reset_ms),
            tokens: None,
        };
        learned.update(&exhausted(2000), now);
        assert_eq!(learned.blocked_at(now), Some(now + Duration::from_secs(2)));
        learned.update(&exhausted(500), now);
        assert_eq!(learned.blocked_at(now), Some(now + Duration::from_secs(2)));
        assert_eq!(learned.blocked_at(now + Duration::from_secs(2)), None);
        // A larger bucket frees its next unit after reset / limit, not after the whole reset:
        // a target running at its limit reports remaining 0 all the time.
        let mut at_limit = LearnedLimits::default();
        at_limit.update(
            &RateLimitSnapshot {
                requests: view(600.0, 0.0, 60_000),
                tokens: None,
            },
            now,
        );
        assert_eq!(
            at_limit.blocked_at(now),
            Some(now + Duration::from_millis(100))
        );
        // Absurd resets are capped.
        learned.update(&exhausted(u64::MAX), now);
        assert_eq!(learned.blocked_until, Some(now + MAX_BLOCK));
    }
}
