//! [`RedisStore`]: token buckets that live in Redis, so that several gateway replicas sharing one
//! provider account together stay under one limit.
//!
//! Every operation is one Lua script run atomically on the Redis server (see [`crate::scripts`]
//! for the data layout and each script's contract). The connection is a redis-rs
//! [`ConnectionManager`]: one multiplexed connection per store, cloned per call, that reconnects
//! by itself in the background after the server went away. Nothing here blocks a thread: parsing
//! the URL is pure, and every network step is awaited.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sluice::{Ask, Grant, Levels, Limits, RateLimitStore, StoreError};

use crate::scripts;

/// The key prefix used when the configuration names none.
pub const DEFAULT_PREFIX: &str = "sluice:rl";

/// Each connection attempt gives up after this long (an unreachable host must not stall the
/// reconnect loop for the OS's TCP timeout).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// A command without an answer after this long fails, even without a caller-side timeout.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection: a couple of quick retries with short backoff, then the attempt fails and the
/// next command starts a new one. Long backoff here would delay noticing that Redis is back.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Rate-limit buckets stored in Redis and updated by atomic Lua scripts.
///
/// Cheap to share behind an `Arc`; all methods take `&self`. Errors (Redis unreachable, a reply
/// that makes no sense) come back as [`StoreError`]; [`crate::SharedStore`] turns them into a
/// local fallback.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    /// The URL without credentials, for `Debug` and logs.
    endpoint: String,
    acquire: Script,
    adjust: Script,
    levels: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`) and checks that the server
    /// answers. Keys are named `{prefix}:{<key>}:req` and `{prefix}:{<key>}:tok`.
    ///
    /// Fails if the URL is invalid or the server does not answer within a few seconds. To start
    /// while Redis may be down (and let [`crate::SharedStore`] fall back until it is up), use
    /// [`RedisStore::connect_lazy`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(url, prefix)?;
        let mut conn = store.conn.clone();
        let _: () = redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| StoreError(format!("redis at {} did not answer: {e}", store.endpoint)))?;
        Ok(store)
    }

    /// Like [`RedisStore::connect`], but does no I/O: the first call connects. Only an invalid
    /// URL fails here. Must be called within a Tokio runtime.
    pub fn connect_lazy(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let endpoint = redact(url);
        let client = redis::Client::open(url)
            .map_err(|e| StoreError(format!("invalid redis url {endpoint}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError(format!("redis at {endpoint}: {e}")))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            endpoint,
            acquire: Script::new(&scripts::acquire()),
            adjust: Script::new(&scripts::adjust()),
            levels: Script::new(&scripts::levels()),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis URL without its credentials.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The names of the request and token hashes of `key`: `{prefix}:{key}:req` and
    /// `{prefix}:{key}:tok`, braces included (a Redis Cluster hash tag, so both share a slot).
    pub fn bucket_keys(&self, key: &str) -> (String, String) {
        let base = format!("{}:{{{key}}}", self.prefix);
        (format!("{base}:req"), format!("{base}:tok"))
    }

    /// Prepares an invocation of `script` for `key` with the limits as `ARGV[1..4]`.
    fn invocation<'s>(
        &self,
        script: &'s Script,
        key: &str,
        limits: &Limits,
    ) -> redis::ScriptInvocation<'s> {
        let (req_key, tok_key) = self.bucket_keys(key);
        let (req_rate, req_cap) = axis(limits.rpm, limits.request_capacity());
        let (tok_rate, tok_cap) = axis(limits.tpm, limits.token_capacity());
        let mut invocation = script.prepare_invoke();
        invocation
            .key(req_key)
            .key(tok_key)
            .arg(req_rate)
            .arg(req_cap)
            .arg(tok_rate)
            .arg(tok_cap);
        invocation
    }

    fn error(&self, e: &redis::RedisError) -> StoreError {
        StoreError(format!("redis at {}: {e}", self.endpoint))
    }
}

impl RateLimitStore for RedisStore {
    fn try_acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        ask: Ask,
    ) -> BoxFuture<'a, Result<Grant, StoreError>> {
        Box::pin(async move {
            let mut invocation = self.invocation(&self.acquire, key, limits);
            invocation
                .arg(non_negative(ask.requests))
                .arg(non_negative(ask.tokens));
            let mut conn = self.conn.clone();
            let (status, value): (i64, i64) = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error(&e))?;
            match status {
                1 => Ok(Grant::Granted),
                0 => Ok(Grant::Wait(Duration::from_micros(
                    u64::try_from(value).unwrap_or(0),
                ))),
                2 => Ok(Grant::TooLarge {
                    axis: "requests",
                    capacity: limits.request_capacity().unwrap_or(0.0),
                }),
                3 => Ok(Grant::TooLarge {
                    axis: "tokens",
                    capacity: limits.token_capacity().unwrap_or(0.0),
                }),
                other => Err(StoreError(format!(
                    "redis at {}: unexpected acquire reply {{{other}, {value}}}",
                    self.endpoint
                ))),
            }
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
            let requests = finite(requests);
            let tokens = finite(tokens);
            if requests == 0.0 && tokens == 0.0 {
                return Ok(());
            }
            let mut invocation = self.invocation(&self.adjust, key, limits);
            invocation.arg(requests).arg(tokens);
            let mut conn = self.conn.clone();
            let _: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error(&e))?;
            Ok(())
        })
    }

    fn levels<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
    ) -> BoxFuture<'a, Result<Levels, StoreError>> {
        Box::pin(async move {
            let invocation = self.invocation(&self.levels, key, limits);
            let mut conn = self.conn.clone();
            let (requests, tokens): (Option<String>, Option<String>) = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error(&e))?;
            let parse = |v: Option<String>| -> Result<Option<f64>, StoreError> {
                v.map(|s| {
                    s.parse::<f64>().map_err(|_| {
                        StoreError(format!(
                            "redis at {}: unexpected level {s:?}",
                            self.endpoint
                        ))
                    })
                })
                .transpose()
            };
            Ok(Levels {
                requests: parse(requests)?,
                tokens: parse(tokens)?,
            })
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// One axis as script arguments: `(rate per minute, capacity)`, capacity `-1` when unlimited.
///
/// A limit that is not a finite number limits nothing; a negative one is zero.
fn axis(rate: Option<f64>, capacity: Option<f64>) -> (f64, f64) {
    match (rate, capacity) {
        (Some(rate), Some(capacity)) if rate.is_finite() && capacity.is_finite() => {
            (rate.max(0.0), capacity.max(0.0))
        }
        _ => (0.0, -1.0),
    }
}

/// An ask as a script argument: NaN and negatives are zero, infinity is the largest float.
fn non_negative(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, f64::MAX)
    }
}

/// A correction as a script argument: NaN is zero, infinities are the extreme floats.
fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(f64::MIN, f64::MAX)
    }
}

/// `url` without the password (or user) part, for `Debug` and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact("rediss://user:p@ss@host:6380"),
            "rediss://***@host:6380"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn axis_arguments() {
        assert_eq!(axis(Some(60.0), Some(10.0)), (60.0, 10.0));
        assert_eq!(axis(None, None), (0.0, -1.0));
        assert_eq!(axis(Some(f64::INFINITY), Some(f64::INFINITY)), (0.0, -1.0));
        assert_eq!(axis(Some(f64::NAN), Some(1.0)), (0.0, -1.0));
        assert_eq!(axis(Some(-5.0), Some(-1.0)), (0.0, 0.0));
    }

    #[test]
    fn ask_and_correction_arguments() {
        assert_eq!(non_negative(f64::NAN), 0.0);
        assert_eq!(non_negative(-3.0), 0.0);
        assert_eq!(non_negative(f64::INFINITY), f64::MAX);
        assert_eq!(finite(-3.0), -3.0);
        assert_eq!(finite(f64::NEG_INFINITY), f64::MIN);
    }

    #[tokio::test]
    async fn bucket_keys_share_a_hash_tag() {
        let store = RedisStore::connect_lazy("redis://127.0.0.1:1", DEFAULT_PREFIX).unwrap();
        assert_eq!(
            store.bucket_keys("openai/gpt-4o"),
            (
                "sluice:rl:{openai/gpt-4o}:req".to_owned(),
                "sluice:rl:{openai/gpt-4o}:tok".to_owned()
            )
        );
        let debug = format!("{store:?}");
        assert!(debug.contains("127.0.0.1:1"), "{debug}");
    }

    #[tokio::test]
    async fn invalid_url_is_an_error_without_the_password() {
        let err = RedisStore::connect_lazy("http://:hunter2@host", "p").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
