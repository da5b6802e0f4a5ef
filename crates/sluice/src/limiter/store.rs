//! Where rate-limit buckets live: in this process ([`super::LocalStore`]) or shared by several
//! gateway replicas (`sluice-redis`). The [`super::Limiter`] in front of a store adds what is
//! per-process by nature: FIFO queueing, waiting bounded by deadlines, learned limits.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::future::BoxFuture;

/// The configured (or learned) limits of one key. `None` means unlimited on that axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<f64>,
    /// Tokens per minute.
    pub tpm: Option<f64>,
    /// Request bucket capacity (burst); default: `rpm` (one minute's worth).
    pub burst_requests: Option<f64>,
    /// Token bucket capacity (burst); default: `tpm`.
    pub burst_tokens: Option<f64>,
}

impl Limits {
    /// No limit at all.
    pub const UNLIMITED: Limits = Limits {
        rpm: None,
        tpm: None,
        burst_requests: None,
        burst_tokens: None,
    };

    /// Whether neither axis is limited.
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    /// Request bucket capacity, if requests are limited.
    pub fn request_capacity(&self) -> Option<f64> {
        self.rpm.map(|rpm| self.burst_requests.unwrap_or(rpm))
    }

    /// Token bucket capacity, if tokens are limited.
    pub fn token_capacity(&self) -> Option<f64> {
        self.tpm.map(|tpm| self.burst_tokens.unwrap_or(tpm))
    }
}

/// What one attempt asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    /// Requests (1 per attempt).
    pub requests: f64,
    /// Estimated tokens: prompt plus expected output.
    pub tokens: f64,
}

/// A store's answer to an acquisition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grant {
    /// Both buckets were debited.
    Granted,
    /// Nothing was taken; both would have enough after this long (assuming no one else takes).
    Wait(Duration),
    /// The ask exceeds a bucket's capacity: it can never be granted.
    TooLarge {
        /// `"requests"` or `"tokens"`.
        axis: &'static str,
        /// The capacity it exceeds.
        capacity: f64,
    },
}

/// Current bucket levels of a key, for metrics and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Levels {
    /// Requests available now (may be negative after reconciliation debits).
    pub requests: Option<f64>,
    /// Tokens available now (may be negative).
    pub tokens: Option<f64>,
}

/// The store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit store unavailable: {0}")]
pub struct StoreError(pub String);

/// Token buckets for requests/min and tokens/min per key, updated atomically per call.
///
/// Every method takes the key's current [`Limits`], so limits learned from provider headers
/// apply at once everywhere, and a shared store needs no separate configuration channel.
pub trait RateLimitStore: Send + Sync + Debug {
    /// Takes `ask` from both buckets of `key` — both or neither — or says how long to wait.
    fn try_acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        ask: Ask,
    ) -> BoxFuture<'a, Result<Grant, StoreError>>;

    /// Corrects both buckets after the fact: positive values give back (a refund never raises a
    /// bucket above its capacity), negative values take more (a bucket may go below zero when a
    /// response used more than was reserved; new asks then wait until it refills).
    fn adjust<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        requests: f64,
        tokens: f64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Current levels of `key`.
    fn levels<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
    ) -> BoxFuture<'a, Result<Levels, StoreError>>;

    /// A short name for logs and metrics (`local`, `redis`).
    fn kind(&self) -> &'static str;
}
