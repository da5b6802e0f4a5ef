//! The in-process [`RateLimitStore`]: one pair of [`TokenBucket`]s per key behind one lock.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use sluice_core::TokenBucket;
use tokio::time::Instant;

use super::store::{Ask, Grant, Levels, Limits, RateLimitStore, StoreError};

/// Token buckets held in this process; see [`RateLimitStore`].
///
/// Buckets are created full on a key's first use and follow the [`Limits`] passed with every
/// call: a changed capacity or rate resizes the bucket in place (keeping its level, clamped to
/// the new capacity), an axis that becomes unlimited drops its bucket. Refill rates are
/// `rpm / 60` and `tpm / 60` per second. The lock is held only for the arithmetic, never across
/// an `.await`, so the futures this store returns are always ready at once.
#[derive(Debug, Default)]
pub struct LocalStore {
    keys: Mutex<HashMap<Box<str>, Pair>>,
}

#[derive(Debug, Default)]
struct Pair {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
}

impl LocalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the buckets of `key`, brought in line with `limits` at `now`.
    fn with<R>(&self, key: &str, limits: &Limits, f: impl FnOnce(&mut Pair, Instant) -> R) -> R {
        let now = Instant::now();
        let mut keys = self.keys.lock();
        let pair = match keys.get_mut(key) {
            Some(pair) => pair,
            None => keys.entry(key.into()).or_default(),
        };
        sync(
            &mut pair.requests,
            limits.request_capacity(),
            limits.rpm,
            now,
        );
        sync(&mut pair.tokens, limits.token_capacity(), limits.tpm, now);
        f(pair, now)
    }
}

fn sync(
    bucket: &mut Option<TokenBucket>,
    capacity: Option<f64>,
    per_minute: Option<f64>,
    now: Instant,
) {
    let (Some(capacity), Some(per_minute)) = (capacity, per_minute) else {
        *bucket = None;
        return;
    };
    let rate = per_minute / 60.0;
    match bucket {
        Some(b) if b.capacity() == capacity && b.rate() == rate => {}
        Some(b) => b.set_limits(capacity, rate, now),
        None => *bucket = Some(TokenBucket::new(capacity, rate, now)),
    }
}

impl Pair {
    fn try_acquire(&mut self, ask: Ask, now: Instant) -> Grant {
        let axes = [
            ("requests", &mut self.requests, ask.requests),
            ("tokens", &mut self.tokens, ask.tokens),
        ];
        let mut wait = Duration::ZERO;
        for (axis, bucket, n) in &axes {
            let Some(bucket) = bucket else { continue };
            if *n > 0.0 && !bucket.fits(*n) {
                return Grant::TooLarge {
                    axis,
                    capacity: bucket.capacity(),
                };
            }
            wait = wait.max(bucket.time_until(*n, now));
        }
        if !wait.is_zero() {
            return Grant::Wait(wait);
        }
        for (_, bucket, n) in axes {
            if let Some(bucket) = bucket {
                // Cannot fail: both were just checked under the same lock and `now`.
                let _ = bucket.try_acquire(n, now);
            }
        }
        Grant::Granted
    }
}

fn adjust_one(bucket: Option<&mut TokenBucket>, n: f64, now: Instant) {
    let Some(bucket) = bucket else { return };
    if n > 0.0 {
        bucket.refund(n, now);
    } else if n < 0.0 {
        bucket.debit(-n, now);
    }
}

impl RateLimitStore for LocalStore {
    fn try_acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        ask: Ask,
    ) -> BoxFuture<'a, Result<Grant, StoreError>> {
        let grant = self.with(key, limits, |pair, now| pair.try_acquire(ask, now));
        futures_util::future::ready(Ok(grant)).boxed()
    }

    fn adjust<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        requests: f64,
        tokens: f64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(key, limits, |pair, now| {
            adjust_one(pair.requests.as_mut(), requests, now);
            adjust_one(pair.tokens.as_mut(), tokens, now);
        });
        futures_util::future::ready(Ok(())).boxed()
    }

    fn levels<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
    ) -> BoxFuture<'a, Result<Levels, StoreError>> {
        let levels = self.with(key, limits, |pair, now| Levels {
            requests: pair.requests.as_ref().map(|b| b.level(now)),
            tokens: pair.tokens.as_ref().map(|b| b.level(now)),
        });
        futures_util::future::ready(Ok(levels)).boxed()
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const RPM_60: Limits = Limits {
        rpm: Some(60.0),
        tpm: Some(6000.0),
        burst_requests: None,
        burst_tokens: None,
    };

    fn ask(requests: f64, tokens: f64) -> Ask {
        Ask { requests, tokens }
    }

    #[tokio::test(start_paused = true)]
    async fn takes_both_or_neither() {
        let store = LocalStore::new();
        assert_eq!(
            store
                .try_acquire("k", &RPM_60, ask(1.0, 5000.0))
                .await
                .unwrap(),
            Grant::Granted
        );
        // Requests have room, tokens do not: nothing is taken.
        let Grant::Wait(wait) = store
            .try_acquire("k", &RPM_60, ask(1.0, 2000.0))
            .await
            .unwrap()
        else {
            panic!("expected a wait");
        };
        // 1000 tokens missing at 100 tokens/s.
        assert!(wait >= Duration::from_secs(10) && wait < Duration::from_millis(10_001));
        let levels = store.levels("k", &RPM_60).await.unwrap();
        assert_eq!(levels.requests, Some(59.0));
        assert_eq!(levels.tokens, Some(1000.0));
    }

    #[tokio::test(start_paused = true)]
    async fn too_large_names_the_axis() {
        let store = LocalStore::new();
        assert_eq!(
            store
                .try_acquire("k", &RPM_60, ask(1.0, 6001.0))
                .await
                .unwrap(),
            Grant::TooLarge {
                axis: "tokens",
                capacity: 6000.0
            }
        );
        let burst = Limits {
            burst_requests: Some(0.5),
            ..RPM_60
        };
        assert_eq!(
            store.try_acquire("k", &burst, ask(1.0, 1.0)).await.unwrap(),
            Grant::TooLarge {
                axis: "requests",
                capacity: 0.5
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_limits_of_each_call() {
        let store = LocalStore::new();
        store
            .try_acquire("k", &RPM_60, ask(1.0, 1000.0))
            .await
            .unwrap();
        // Tighter limits clamp the level; the bucket is resized, not recreated full.
        let tight = Limits {
            tpm: Some(600.0),
            ..RPM_60
        };
        let levels = store.levels("k", &tight).await.unwrap();
        assert_eq!(levels.tokens, Some(600.0));
        store.adjust("k", &tight, 0.0, -600.0).await.unwrap();
        let levels = store.levels("k", &RPM_60).await.unwrap();
        assert_eq!(levels.tokens, Some(0.0));
        // An axis that becomes unlimited has no bucket.
        let no_tokens = Limits {
            tpm: None,
            ..RPM_60
        };
        let levels = store.levels("k", &no_tokens).await.unwrap();
        assert_eq!(levels.tokens, None);
        assert_eq!(levels.requests, Some(59.0));
        // Keys are independent.
        let other = store.levels("other", &RPM_60).await.unwrap();
        assert_eq!(other.tokens, Some(6000.0));
        assert_eq!(store.kind(), "local");
    }

    #[tokio::test(start_paused = true)]
    async fn adjust_refunds_up_to_capacity_and_debits_below_zero() {
        let store = LocalStore::new();
        store
            .try_acquire("k", &RPM_60, ask(1.0, 1000.0))
            .await
            .unwrap();
        store.adjust("k", &RPM_60, 5.0, 5000.0).await.unwrap();
        let levels = store.levels("k", &RPM_60).await.unwrap();
        assert_eq!((levels.requests, levels.tokens), (Some(60.0), Some(6000.0)));
        store.adjust("k", &RPM_60, 0.0, -7000.0).await.unwrap();
        let levels = store.levels("k", &RPM_60).await.unwrap();
        assert_eq!(levels.tokens, Some(-1000.0));
        tokio::time::advance(Duration::from_secs(10)).await;
        let levels = store.levels("k", &RPM_60).await.unwrap();
        assert_eq!(levels.tokens, Some(0.0));
    }

    /// The store's one lock makes acquisitions atomic under real parallelism.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_acquisitions_never_exceed_the_bucket() {
        let store = Arc::new(LocalStore::new());
        let limits = Limits {
            rpm: Some(60.0),
            tpm: None,
            burst_requests: Some(60.0),
            burst_tokens: None,
        };
        let start = Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .try_acquire("k", &limits, ask(1.0, 0.0))
                        .await
                        .unwrap()
                        == Grant::Granted
                })
            })
            .collect();
        let mut granted = 0;
        for task in tasks {
            granted += usize::from(task.await.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        // 60 at once, plus one per second of test run time (normally none).
        assert!(granted >= 60, "{granted}");
        assert!(
            granted as f64 <= 60.0 + elapsed,
            "{granted} after {elapsed}s"
        );
    }
}
