//! Shared rate limits for several Sluice gateway replicas that use one provider account.
//!
//! Sluice's limiter keeps requests/min and tokens/min token buckets per key in a
//! [`sluice::RateLimitStore`]. In one process that is `sluice::LocalStore`; with several
//! replicas, each would admit a full limit, so the buckets must live in one place. This crate
//! puts them in Redis:
//!
//! - [`RedisStore`] implements [`sluice::RateLimitStore`] with one atomic Lua script per
//!   operation: an acquisition refills and checks both buckets of a key by the Redis server's
//!   clock and debits both or neither; reconciliation ([`sluice::RateLimitStore::adjust`]) and
//!   [`sluice::RateLimitStore::levels`] are scripts too. It talks to Redis through a redis-rs
//!   `ConnectionManager`, which reconnects by itself; nothing blocks a thread.
//! - [`SharedStore`] wraps a [`RedisStore`] and is what the gateway uses. While Redis answers it
//!   is a pass-through; when Redis fails or hangs (each call is bounded by
//!   [`SharedConfig::call_timeout`]) it falls back, as [`SharedConfig::on_redis_down`] says
//!   ([`OnRedisDown`]): to local buckets holding `1 / expected_replicas` of every limit, or
//!   fail-closed. It logs the switch once, counts it ([`SharedStore::fallbacks`],
//!   [`SharedStore::is_degraded`] for metrics), probes Redis at most once per
//!   [`SharedConfig::probe_interval`] and shares again as soon as Redis answers.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_redis::{DEFAULT_PREFIX, RedisStore, SharedConfig, SharedStore};
//! let redis = RedisStore::connect_lazy("redis://127.0.0.1:6379", DEFAULT_PREFIX)?;
//! let store = SharedStore::new(redis, SharedConfig::with_replicas(3))?;
//! # let _ = store; Ok(()) }
//! ```

mod redis_store;
mod scripts;
mod shared;

pub use redis_store::{DEFAULT_PREFIX, RedisStore};
pub use shared::{OnRedisDown, SharedConfig, SharedConfigError, SharedStore};
