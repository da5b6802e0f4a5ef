//! [`SharedStore`]: the Redis store with a plan for when Redis is gone.
//!
//! # Why a fallback, and why a fraction of each limit
//!
//! The rate limiter exists so that the provider sees (almost) no 429s. If every replica kept its
//! full limit when Redis disappears, N replicas would admit N times the limit; if every replica
//! stopped, one cache outage would become a gateway outage. So by default ([`OnRedisDown::Local`])
//! each replica falls back to buckets in its own memory, each limit (rate and capacity) divided by
//! `expected_replicas`: together they stay under the one limit as long as no more replicas than that
//! are running. With [`OnRedisDown::Closed`] a replica refuses instead (fail-closed): acquisitions
//! answer [`Grant::Wait`] until the next probe of Redis, so callers queue and, when their deadline
//! or queue bound runs out, get `rate_limited` (the limiter's "would wait"). In either mode no
//! method returns a [`StoreError`] (the local store cannot fail), so no request is lost to a
//! store error.
//!
//! # Probing without a timeout storm
//!
//! While Redis is healthy every call goes to it, bounded by `call_timeout` (250 ms by default) so
//! a hung server cannot stall requests. The first failure (an error, or no answer in time)
//! switches the store to degraded mode, logs one warning and bumps [`SharedStore::fallbacks`].
//! While degraded, at most one call per `probe_interval` (1 s) tries Redis first; every other
//! call goes straight to the fallback. When a probe is answered, one info line is logged and all
//! calls go to Redis again: sharing resumes. The local buckets keep their state for the next
//! outage (by then they have refilled).
//!
//! # What is approximate
//!
//! Corrections ([`RateLimitStore::adjust`]) go to whichever store is in use when they arrive, so
//! a reservation made in Redis and reconciled during an outage (or the other way round) corrects
//! the other store. Right after a fallback the local buckets start full, so a replica may admit
//! one local share on top of what Redis already granted in that window. In fail-closed mode,
//! corrections that arrive while Redis is down are dropped, and levels read as zero (nothing is
//! available). An ask that fits the full limit but
//! not the local share waits for a full local bucket and then takes it, leaving the bucket in
//! debt (it is never refused as too large only because Redis is down).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use sluice::{Ask, Grant, Levels, Limits, LocalStore, RateLimitStore, StoreError};
use tokio::time::Instant;

use crate::RedisStore;

/// What a replica does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisDown {
    /// Serve from local buckets at `limit / expected_replicas` (the default).
    #[default]
    Local,
    /// Fail closed: admit nothing until Redis answers again (callers wait, then get
    /// `rate_limited`).
    Closed,
}

/// How a [`SharedStore`] behaves when Redis is down. Checked by [`SharedStore::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct SharedConfig {
    /// How many replicas share the limits; while Redis is down each one keeps
    /// `1 / expected_replicas` of every limit. At least 1.
    pub expected_replicas: u32,
    /// Fall back to local buckets or fail closed.
    pub on_redis_down: OnRedisDown,
    /// How long one Redis call may take before it counts as a failure. Not zero.
    pub call_timeout: Duration,
    /// While degraded, how often one call tries Redis again. Not zero.
    pub probe_interval: Duration,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            expected_replicas: 1,
            on_redis_down: OnRedisDown::Local,
            call_timeout: Duration::from_millis(250),
            probe_interval: Duration::from_secs(1),
        }
    }
}

impl SharedConfig {
    /// The default configuration for `expected_replicas` replicas.
    pub fn with_replicas(expected_replicas: u32) -> Self {
        Self {
            expected_replicas,
            ..Self::default()
        }
    }

    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), SharedConfigError> {
        if self.expected_replicas == 0 {
            return Err(SharedConfigError(
                "expected_replicas must be at least 1".to_owned(),
            ));
        }
        if self.call_timeout.is_zero() {
            return Err(SharedConfigError(
                "call_timeout must be greater than zero".to_owned(),
            ));
        }
        if self.probe_interval.is_zero() {
            return Err(SharedConfigError(
                "probe_interval must be greater than zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// An invalid [`SharedConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shared rate-limit config: {0}")]
pub struct SharedConfigError(pub String);

/// Where one call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Redis,
    Fallback,
}

#[derive(Debug)]
struct Health {
    degraded: bool,
    /// While degraded: the earliest time the next call may probe Redis.
    next_probe: Instant,
}

/// A [`RedisStore`] with a local fallback: shared limits while Redis answers, a replica's share
/// of them (or nothing, fail-closed) while it does not. See the module docs.
#[derive(Debug)]
pub struct SharedStore {
    redis: RedisStore,
    local: LocalStore,
    config: SharedConfig,
    health: Mutex<Health>,
    fallbacks: AtomicU64,
    degraded_calls: AtomicU64,
}

impl SharedStore {
    /// Wraps `redis`; fails if `config` is invalid.
    pub fn new(redis: RedisStore, config: SharedConfig) -> Result<Self, SharedConfigError> {
        config.validate()?;
        Ok(Self {
            redis,
            local: LocalStore::new(),
            config,
            health: Mutex::new(Health {
                degraded: false,
                next_probe: Instant::now(),
            }),
            fallbacks: AtomicU64::new(0),
            degraded_calls: AtomicU64::new(0),
        })
    }

    /// Whether Redis is currently considered unreachable (calls are served by the fallback).
    pub fn is_degraded(&self) -> bool {
        self.health.lock().degraded
    }

    /// How many times this store switched from Redis to the fallback (a counter, for metrics).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// How many calls were answered without Redis (a counter, for metrics).
    pub fn degraded_calls(&self) -> u64 {
        self.degraded_calls.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &SharedConfig {
        &self.config
    }

    /// The Redis store underneath.
    pub fn redis(&self) -> &RedisStore {
        &self.redis
    }

    /// Decides where the next call goes; claims the probe slot when a probe is due.
    fn route(&self) -> Route {
        let mut health = self.health.lock();
        if !health.degraded {
            return Route::Redis;
        }
        let now = Instant::now();
        if now >= health.next_probe {
            health.next_probe = now + self.config.probe_interval;
            Route::Redis
        } else {
            Route::Fallback
        }
    }

    /// Runs one Redis call within `call_timeout`; records success or failure.
    async fn try_redis<T>(
        &self,
        call: BoxFuture<'_, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.config.call_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError(format!(
                "redis at {} did not answer within {:?}",
                self.redis.endpoint(),
                self.config.call_timeout
            ))),
        };
        match &result {
            Ok(_) => self.redis_answered(),
            Err(e) => self.redis_failed(e),
        }
        result
    }

    fn redis_answered(&self) {
        let mut health = self.health.lock();
        if health.degraded {
            health.degraded = false;
            drop(health);
            tracing::info!(
                endpoint = self.redis.endpoint(),
                "redis reachable again; sharing limits"
            );
        }
    }

    fn redis_failed(&self, error: &StoreError) {
        let mut health = self.health.lock();
        health.next_probe = Instant::now() + self.config.probe_interval;
        if health.degraded {
            return;
        }
        health.degraded = true;
        drop(health);
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        match self.config.on_redis_down {
            OnRedisDown::Local => tracing::warn!(
                endpoint = self.redis.endpoint(),
                %error,
                "redis unreachable; falling back to local buckets at 1/{} of each limit",
                self.config.expected_replicas
            ),
            OnRedisDown::Closed => tracing::warn!(
                endpoint = self.redis.endpoint(),
                %error,
                "redis unreachable; admitting nothing until it answers again (fail-closed)"
            ),
        }
    }

    /// This replica's share of `limits`: every rate and capacity divided by `expected_replicas`.
    fn share(&self, limits: &Limits) -> Limits {
        let n = f64::from(self.config.expected_replicas);
        Limits {
            rpm: limits.rpm.map(|v| v / n),
            tpm: limits.tpm.map(|v| v / n),
            burst_requests: limits.burst_requests.map(|v| v / n),
            burst_tokens: limits.burst_tokens.map(|v| v / n),
        }
    }

    /// Time until the next probe may run (at least 1 ms), for fail-closed waits.
    fn until_probe(&self) -> Duration {
        let next = self.health.lock().next_probe;
        next.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }

    async fn acquire_fallback(
        &self,
        key: &str,
        limits: &Limits,
        ask: Ask,
    ) -> Result<Grant, StoreError> {
        self.degraded_calls.fetch_add(1, Ordering::Relaxed);
        // Too large is a property of the ask and the real limits, not of where buckets live.
        if let Some(too_large) = too_large(limits, ask) {
            return Ok(too_large);
        }
        if self.config.on_redis_down == OnRedisDown::Closed {
            return Ok(Grant::Wait(self.until_probe()));
        }
        let share = self.share(limits);
        // An ask above the local share (but within the real limit) takes a full local bucket,
        // and the rest as a debt, instead of being refused.
        let clamp = |asked: f64, capacity: Option<f64>| capacity.map_or(asked, |c| asked.min(c));
        let local_ask = Ask {
            requests: clamp(ask.requests, share.request_capacity()),
            tokens: clamp(ask.tokens, share.token_capacity()),
        };
        let grant = self.local.try_acquire(key, &share, local_ask).await?;
        let (debt_requests, debt_tokens) = (
            ask.requests - local_ask.requests,
            ask.tokens - local_ask.tokens,
        );
        if grant == Grant::Granted && (debt_requests > 0.0 || debt_tokens > 0.0) {
            self.local
                .adjust(key, &share, -debt_requests, -debt_tokens)
                .await?;
        }
        Ok(grant)
    }

    async fn adjust_fallback(
        &self,
        key: &str,
        limits: &Limits,
        requests: f64,
        tokens: f64,
    ) -> Result<(), StoreError> {
        self.degraded_calls.fetch_add(1, Ordering::Relaxed);
        match self.config.on_redis_down {
            OnRedisDown::Local => {
                // Corrections are real usage by this replica: applied unscaled to its share.
                self.local
                    .adjust(key, &self.share(limits), requests, tokens)
                    .await
            }
            OnRedisDown::Closed => Ok(()),
        }
    }

    async fn levels_fallback(&self, key: &str, limits: &Limits) -> Result<Levels, StoreError> {
        self.degraded_calls.fetch_add(1, Ordering::Relaxed);
        match self.config.on_redis_down {
            OnRedisDown::Local => self.local.levels(key, &self.share(limits)).await,
            // Fail-closed admits nothing, so nothing is available: a limiter estimating a
            // queue's wait from these levels answers "would wait" (rate_limited), not an error.
            OnRedisDown::Closed => Ok(Levels {
                requests: limits.request_capacity().map(|_| 0.0),
                tokens: limits.token_capacity().map(|_| 0.0),
            }),
        }
    }
}

/// `TooLarge` when `ask` exceeds a capacity of `limits`.
fn too_large(limits: &Limits, ask: Ask) -> Option<Grant> {
    if let Some(capacity) = limits.request_capacity().filter(|c| ask.requests > *c) {
        return Some(Grant::TooLarge {
            axis: "requests",
            capacity,
        });
    }
    if let Some(capacity) = limits.token_capacity().filter(|c| ask.tokens > *c) {
        return Some(Grant::TooLarge {
            axis: "tokens",
            capacity,
        });
    }
    None
}

impl RateLimitStore for SharedStore {
    fn try_acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        ask: Ask,
    ) -> BoxFuture<'a, Result<Grant, StoreError>> {
        Box::pin(async move {
            if self.route() == Route::Redis
                && let Ok(grant) = self
                    .try_redis(self.redis.try_acquire(key, limits, ask))
                    .await
            {
                return Ok(grant);
            }
            self.acquire_fallback(key, limits, ask).await
        })
    }

    fn adjust<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        requests: f64,
        tokens: f64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.route() == Route::Redis
                && self
                    .try_redis(self.redis.adjust(key, limits, requests, tokens))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            self.adjust_fallback(key, limits, requests, tokens).await
        })
    }

    fn levels<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
    ) -> BoxFuture<'a, Result<Levels, StoreError>> {
        Box::pin(async move {
            if self.route() == Route::Redis
                && let Ok(levels) = self.try_redis(self.redis.levels(key, limits)).await
            {
                return Ok(levels);
            }
            self.levels_fallback(key, limits).await
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        assert!(SharedConfig::default().validate().is_ok());
        let err = SharedConfig::with_replicas(0).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid shared rate-limit config: expected_replicas must be at least 1"
        );
        let zero_timeout = SharedConfig {
            call_timeout: Duration::ZERO,
            ..SharedConfig::default()
        };
        assert!(zero_timeout.validate().is_err());
        let zero_probe = SharedConfig {
            probe_interval: Duration::ZERO,
            ..SharedConfig::default()
        };
        assert!(zero_probe.validate().is_err());
    }

    #[test]
    fn too_large_checks_the_real_limits() {
        let limits = Limits {
            rpm: Some(60.0),
            tpm: Some(1000.0),
            burst_requests: None,
            burst_tokens: None,
        };
        let ask = |requests, tokens| Ask { requests, tokens };
        assert_eq!(too_large(&limits, ask(1.0, 1000.0)), None);
        assert_eq!(
            too_large(&limits, ask(1.0, 1001.0)),
            Some(Grant::TooLarge {
                axis: "tokens",
                capacity: 1000.0
            })
        );
        assert_eq!(
            too_large(&limits, ask(61.0, 1.0)),
            Some(Grant::TooLarge {
                axis: "requests",
                capacity: 60.0
            })
        );
        assert_eq!(too_large(&Limits::UNLIMITED, ask(1e9, 1e9)), None);
    }
}
