//! The one total deadline of a call.
//!
//! A call's deadline spans every attempt, every backoff sleep and every target of a fallback
//! chain. Keeping it as one value (instead of per-attempt timeouts that add up) is what lets the
//! executor promise invariant 2: a call never sleeps past its deadline, and a server hint longer
//! than the time left ends the retries at once instead of being waited on.

use std::time::Duration;
use tokio::time::Instant;

/// A fixed point in (tokio) time by which a call must have finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    start: Instant,
    at: Instant,
}

impl Deadline {
    /// A deadline `total` after `start`.
    pub fn new(start: Instant, total: Duration) -> Self {
        Self {
            start,
            at: start + total,
        }
    }

    /// The instant the deadline expires.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// When the call started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Time left at `now`; zero once expired.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// Whether the deadline has passed at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.at
    }

    /// Time since the call started.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    /// The earlier of the deadline and `now + timeout`: the instant a per-step timeout fires
    /// without ever outliving the call.
    pub fn cap(&self, now: Instant, timeout: Duration) -> Instant {
        (now + timeout).min(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_and_saturates() {
        let start = Instant::now();
        let d = Deadline::new(start, Duration::from_secs(10));
        assert_eq!(d.remaining(start), Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(d.remaining(Instant::now()), Duration::from_secs(6));
        assert_eq!(d.elapsed(Instant::now()), Duration::from_secs(4));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(d.remaining(Instant::now()), Duration::ZERO);
        assert!(d.is_expired(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn cap_never_outlives_the_deadline() {
        let now = Instant::now();
        let d = Deadline::new(now, Duration::from_secs(5));
        assert_eq!(
            d.cap(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert_eq!(d.cap(now, Duration::from_secs(60)), d.at());
    }
}
