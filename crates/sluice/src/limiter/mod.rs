//! The proactive rate limiter: stay under a provider's limits instead of discovering them
//! through 429s.
//!
//! Every target (provider + model, or provider-wide, optionally per client key: the caller
//! chooses the key) has two token buckets, requests per minute and tokens per minute, held by a
//! [`RateLimitStore`] — [`LocalStore`] in this process, or a shared store so several gateway
//! replicas stay under one limit together. The [`Limiter`] in front of the store adds what is
//! per-process by nature: the queue, bounded waiting and limits learned from headers.
//!
//! # Reserve, then reconcile
//!
//! Before an attempt, [`Limiter::reserve`] takes 1 request and the *estimated* tokens (prompt
//! plus expected output) from the buckets; after the response, [`Reservation::reconcile`]
//! corrects the token bucket by the difference between estimate and actual usage (a refund when
//! the estimate was high, a debit that may take the bucket below zero when it was low), and
//! [`Reservation::refund`] gives the tokens back for a failure that consumed nothing.
//!
//! Counting only after the fact — admit while the bucket shows room, debit the usage when the
//! response is done — fails exactly where limits matter: a long stream is admitted at once but
//! its tokens are counted only when it ends, so while it runs the bucket still shows room, and
//! every request arriving meanwhile is admitted on the same stale view. A burst of streams then
//! overshoots the limit many times over, and the provider answers with the 429s the limiter
//! exists to prevent. Reserving makes admission see every request already in flight; reconciling
//! keeps the books exact in the end, so a poor estimate costs only a temporary error in one
//! direction, never a drift.
//!
//! A [`Reservation`] dropped without either call keeps everything it reserved as spent: the
//! conservative choice when the outcome is unknown (the caller went away mid-stream; the
//! provider may well have counted the tokens).
//!
//! # FIFO
//!
//! Waiters for one key are served in arrival order: the first waiter holds the key's queue (a
//! fair `tokio::sync::Mutex`) while it waits for its grant, and everyone who arrives later waits
//! behind it even if their smaller asks would fit sooner. Without this, a large request would
//! be starved by a steady stream of small ones, each of which fits in whatever the refill has
//! just provided. The store may be shared with other processes, so the head waiter asks again
//! after each wait (someone elsewhere may have taken the refill) rather than assuming its grant.
//!
//! # Bounded waits
//!
//! A reservation may wait until the earlier of the call's deadline and `max_queue_wait` after
//! it started ([`LimiterConfig`]). It never sleeps first and fails later: when the time the
//! bucket says it needs (or, for a request arriving behind others, the time the whole line
//! ahead plus its own ask needs) would end after that bound, it fails at once with
//! [`LimitError::WouldWait`] carrying the wait as a `Retry-After`, so the executor can fall back
//! to the next target straight away. An ask larger than a bucket's capacity can never be
//! granted and fails at once with [`LimitError::TooLarge`].
//!
//! # Learned limits
//!
//! [`Limiter::learn`] takes the provider's view from every response's headers
//! ([`RateLimitSnapshot`]). The effective limits of a key are the configured ones tightened by
//! the learned ones: on each axis the smaller rate and the smaller burst, never anything looser
//! than configured; an axis with no configured limit uses the learned one alone, so a target
//! with no configuration at all is still limited once its first response has been seen. The
//! effective limits are passed to the store on every call, so learned limits apply at once
//! (a bucket shrunk by a learned limit keeps its level, clamped to the new capacity).
//!
//! When the provider reports a bucket as exhausted (`remaining` 0) with a reset time, the key
//! is **blocked** until then: a per-key instant in the limiter that every reservation waits
//! out first (bounded like any other wait). A block rather than a debit of the shared store,
//! because the headers describe what *this* process was told: with a shared store, every
//! replica debiting its own copy of the same news would count it several times over. The
//! reset is when the provider's bucket is *fully* replenished, so the block is conservative; it
//! only triggers when the local limits did not prevent exhaustion (the account is shared with
//! other clients, or the limits are configured too high), where conservative is right. A 429
//! with a retry hint is handled by the executor's park of the whole target, not here.
//!
//! Learned limits are kept per key for the life of the limiter; the latest reported limit
//! replaces the previous one, so a raised account limit is picked up (up to the configured
//! one).
//!
//! # Store errors
//!
//! A store error is returned as [`LimitError::Store`]; the limiter does not decide whether to
//! fail open or closed. A shared store wraps its own fallback (to a [`LocalStore`]) when it
//! cannot be reached. Errors while reconciling or refunding are logged and dropped: the
//! response has already been delivered.

mod learn;
mod local;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_core::RateLimitSnapshot;
use tokio::time::Instant;

pub use learn::LearnedLimits;
pub use local::LocalStore;
pub use store::{Ask, Grant, Levels, Limits, RateLimitStore, StoreError};

/// Limiter settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterConfig {
    /// The longest one reservation may wait for its grant, queue included; the call's deadline
    /// bounds it too.
    pub max_queue_wait: Duration,
    /// Whether providers' rate-limit headers tighten the buckets (see `learn`). Off, only the
    /// configured limits apply.
    pub learn_from_headers: bool,
}

impl LimiterConfig {
    /// Default `max_queue_wait`.
    pub const DEFAULT_MAX_QUEUE_WAIT: Duration = Duration::from_secs(30);
    /// Default `learn_from_headers`.
    pub const DEFAULT_LEARN_FROM_HEADERS: bool = true;
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            max_queue_wait: Self::DEFAULT_MAX_QUEUE_WAIT,
            learn_from_headers: Self::DEFAULT_LEARN_FROM_HEADERS,
        }
    }
}

/// Why a reservation was not granted.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The grant would come later than the call's deadline or `max_queue_wait` allow.
    #[error(
        "rate limit of {key}: the request would have to wait {} for capacity, longer than its deadline or max_queue_wait allow",
        fmt_wait(*.retry_after)
    )]
    WouldWait {
        /// The rate-limit key (target).
        key: Arc<str>,
        /// When to try again (a lower bound when others are queued; `Duration::MAX` when a
        /// drained bucket never refills, i.e. a rate of zero).
        retry_after: Duration,
    },
    /// The ask exceeds a bucket's capacity: it can never be granted.
    #[error(
        "request needs {asked} {axis} but the {axis}-per-minute bucket of {key} holds at most {capacity}"
    )]
    TooLarge {
        /// The rate-limit key (target).
        key: Arc<str>,
        /// `"requests"` or `"tokens"`.
        axis: &'static str,
        /// What the request asked for on that axis.
        asked: f64,
        /// The bucket's capacity.
        capacity: f64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LimitError {
    /// Low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::WouldWait { .. } => "would_wait",
            Self::TooLarge { .. } => "too_large",
            Self::Store(_) => "store_unavailable",
        }
    }

    /// The `Retry-After` to report, for [`LimitError::WouldWait`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::WouldWait { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Whole seconds, rounded up (`Retry-After` style), or "forever".
fn fmt_wait(wait: Duration) -> String {
    if wait == Duration::MAX {
        return "forever".into();
    }
    // To the nearest millisecond first, so float noise (30.000000001 s) does not add a second.
    let millis = (wait.as_nanos() + 500_000) / 1_000_000;
    format!("{}s", millis.div_ceil(1000))
}

/// Rate limiting in front of a [`RateLimitStore`]; see the module docs. Cheap to clone (all
/// clones share the queues and learned limits).
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn RateLimitStore>,
    config: LimiterConfig,
    /// Per-key state, created on first use and kept (keys are targets, a bounded set).
    keys: Mutex<HashMap<Arc<str>, Arc<KeyState>>>,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Held by the waiter at the head of the line; fair, so later arrivals queue in order.
    queue: tokio::sync::Mutex<()>,
    /// What everyone in line (the head included) is asking for.
    line: Mutex<Line>,
    learned: Mutex<LearnedLimits>,
    /// The configured limits of the last reservation, so metrics can read the levels later.
    configured: Mutex<Option<Limits>>,
}

#[derive(Debug, Default)]
struct Line {
    waiters: usize,
    requests: f64,
    tokens: f64,
}

impl KeyState {
    fn effective(&self, configured: &Limits) -> Limits {
        self.learned.lock().apply(configured)
    }

    fn blocked_at(&self, now: Instant) -> Option<Instant> {
        self.learned.lock().blocked_at(now)
    }
}

/// A place in a key's line, left on drop (also when the reservation future is cancelled).
struct InLine<'a> {
    state: &'a KeyState,
    ask: Ask,
}

impl<'a> InLine<'a> {
    fn join(state: &'a KeyState, ask: Ask) -> Self {
        let mut line = state.line.lock();
        line.waiters += 1;
        line.requests += ask.requests;
        line.tokens += ask.tokens;
        Self { state, ask }
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let mut line = self.state.line.lock();
        line.waiters -= 1;
        if line.waiters == 0 {
            *line = Line::default();
        } else {
            line.requests -= self.ask.requests;
            line.tokens -= self.ask.tokens;
        }
    }
}

/// A usable amount: finite and positive, else nothing.
fn amount(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

impl Limiter {
    /// A limiter in front of `store`.
    pub fn new(store: Arc<dyn RateLimitStore>, config: LimiterConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                keys: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A limiter over a fresh [`LocalStore`].
    pub fn local(config: LimiterConfig) -> Self {
        Self::new(Arc::new(LocalStore::new()), config)
    }

    /// The settings.
    pub fn config(&self) -> &LimiterConfig {
        &self.inner.config
    }

    /// The store's kind (`local`, `redis`), for logs and metrics.
    pub fn store_kind(&self) -> &'static str {
        self.inner.store.kind()
    }

    fn state(&self, key: &str) -> Arc<KeyState> {
        let mut keys = self.inner.keys.lock();
        if let Some(state) = keys.get(key) {
            return state.clone();
        }
        keys.entry(Arc::from(key)).or_default().clone()
    }

    fn existing(&self, key: &str) -> Option<Arc<KeyState>> {
        self.inner.keys.lock().get(key).cloned()
    }

    /// Waits in `key`'s line until `ask` is granted, or fails at once when the grant would come
    /// after `deadline` or after `max_queue_wait`; see the module docs. `configured` are the
    /// key's configured limits (tightened here by learned ones). Negative or non-finite amounts
    /// in `ask` count as zero. With no limits at all (none configured, none learned) the
    /// reservation is a no-op that never touches the store.
    pub async fn reserve(
        &self,
        key: &str,
        configured: &Limits,
        ask: Ask,
        deadline: Instant,
    ) -> Result<Reservation, LimitError> {
        let ask = Ask {
            requests: amount(ask.requests),
            tokens: amount(ask.tokens),
        };
        let start = Instant::now();
        let give_up_at = start
            .checked_add(self.inner.config.max_queue_wait)
            .map_or(deadline, |t| t.min(deadline));
        let state = self.state(key);
        *state.configured.lock() = Some(*configured);
        let limits = state.effective(configured);
        if limits.is_unlimited() && state.blocked_at(start).is_none() {
            return Ok(Reservation::noop(ask.tokens));
        }
        check_size(key, &limits, ask)?;
        if state.line.lock().waiters > 0 {
            // Everyone ahead is served first: fail now if the line and this ask together need
            // longer than this call may wait.
            let wait = self.line_wait(key, &state, &limits, ask, start).await?;
            if exceeds(start, wait, give_up_at) {
                return Err(would_wait(key, wait));
            }
        }

        let _in_line = InLine::join(&state, ask);
        let Ok(_head) = tokio::time::timeout_at(give_up_at, state.queue.lock()).await else {
            // The line moved slower than estimated (a shared store, a new block, tighter
            // learned limits).
            let now = Instant::now();
            let limits = state.effective(configured);
            let zero = Ask {
                requests: 0.0,
                tokens: 0.0,
            };
            let wait = self.line_wait(key, &state, &limits, zero, now).await?;
            return Err(would_wait(key, wait.max(MIN_WAIT)));
        };

        loop {
            let now = Instant::now();
            if let Some(until) = state.blocked_at(now) {
                if until > give_up_at {
                    return Err(would_wait(key, until - now));
                }
                tracing::debug!(
                    key,
                    wait_ms = (until - now).as_millis() as u64,
                    "rate limit: provider reported an exhausted bucket; waiting for its reset"
                );
                tokio::time::sleep_until(until).await;
                continue;
            }
            // Learned limits may have changed while waiting.
            let limits = state.effective(configured);
            if limits.is_unlimited() {
                return Ok(Reservation::noop(ask.tokens));
            }
            match self.inner.store.try_acquire(key, &limits, ask).await? {
                Grant::Granted => {
                    return Ok(Reservation {
                        tokens: ask.tokens,
                        held: Some(Held {
                            limiter: self.inner.clone(),
                            state: state.clone(),
                            key: Arc::from(key),
                            configured: *configured,
                        }),
                    });
                }
                Grant::Wait(wait) => {
                    let wait = wait.max(MIN_WAIT);
                    if exceeds(now, wait, give_up_at) {
                        return Err(would_wait(key, wait));
                    }
                    tracing::debug!(
                        key,
                        wait_ms = wait.as_millis() as u64,
                        "rate limit: waiting for bucket capacity"
                    );
                    tokio::time::sleep_until(now + wait).await;
                }
                Grant::TooLarge { axis, capacity } => {
                    let asked = if axis == "requests" {
                        ask.requests
                    } else {
                        ask.tokens
                    };
                    return Err(LimitError::TooLarge {
                        key: Arc::from(key),
                        axis,
                        asked,
                        capacity,
                    });
                }
            }
        }
    }

    /// How long until the buckets hold everything the line asks for plus `extra` (a lower
    /// bound: it assumes no one else takes from the store meanwhile), or until a block ends.
    async fn line_wait(
        &self,
        key: &str,
        state: &KeyState,
        limits: &Limits,
        extra: Ask,
        now: Instant,
    ) -> Result<Duration, StoreError> {
        let (requests, tokens) = {
            let line = state.line.lock();
            (line.requests + extra.requests, line.tokens + extra.tokens)
        };
        let mut wait = state
            .blocked_at(now)
            .map_or(Duration::ZERO, |until| until - now);
        if limits.is_unlimited() {
            return Ok(wait);
        }
        let levels = self.inner.store.levels(key, limits).await?;
        for (need, level, per_minute) in [
            (requests, levels.requests, limits.rpm),
            (tokens, levels.tokens, limits.tpm),
        ] {
            let (Some(level), Some(per_minute)) = (level, per_minute) else {
                continue;
            };
            wait = wait.max(refill_time(need - level, per_minute / 60.0));
        }
        Ok(wait)
    }

    /// Folds a response's rate-limit headers into `key`'s learned limits; see the module docs.
    pub fn learn(&self, key: &str, snapshot: &RateLimitSnapshot, now: Instant) {
        if !self.inner.config.learn_from_headers {
            return;
        }
        self.state(key).learned.lock().update(snapshot, now);
    }

    /// What has been learned about `key`.
    pub fn learned(&self, key: &str) -> LearnedLimits {
        self.existing(key)
            .map(|state| *state.learned.lock())
            .unwrap_or_default()
    }

    /// Everything learned, by key (sorted), for status pages and metrics.
    pub fn learned_all(&self) -> Vec<(Arc<str>, LearnedLimits)> {
        let keys = self.inner.keys.lock();
        let mut out: Vec<_> = keys
            .iter()
            .map(|(key, state)| (key.clone(), *state.learned.lock()))
            .filter(|(_, learned)| *learned != LearnedLimits::default())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The limits in effect for `key`: `configured` tightened by what was learned.
    pub fn effective_limits(&self, key: &str, configured: &Limits) -> Limits {
        self.existing(key)
            .map_or(*configured, |state| state.effective(configured))
    }

    /// Every key that has been reserved on with limits in effect, with those limits and its
    /// current levels (metrics scrape this; a shared store is asked once per key).
    pub async fn levels_all(&self) -> Vec<(Arc<str>, Limits, Result<Levels, StoreError>)> {
        let keys: Vec<(Arc<str>, Limits)> = {
            let keys = self.inner.keys.lock();
            keys.iter()
                .filter_map(|(key, state)| {
                    let configured = (*state.configured.lock())?;
                    let limits = state.effective(&configured);
                    (!limits.is_unlimited()).then(|| (key.clone(), limits))
                })
                .collect()
        };
        let mut out = Vec::with_capacity(keys.len());
        for (key, limits) in keys {
            let levels = self.inner.store.levels(&key, &limits).await;
            out.push((key, limits, levels));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The current bucket levels of `key` under its effective limits, for metrics; empty
    /// levels when the key is unlimited (the store is not asked).
    pub async fn levels(&self, key: &str, configured: &Limits) -> Result<Levels, StoreError> {
        let limits = self.effective_limits(key, configured);
        if limits.is_unlimited() {
            return Ok(Levels::default());
        }
        self.inner.store.levels(key, &limits).await
    }
}

/// The shortest wait the limiter sleeps: a store answering "wait zero" must not make it spin.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Whether a wait of `wait` from `now` ends after `bound`.
fn exceeds(now: Instant, wait: Duration, bound: Instant) -> bool {
    now.checked_add(wait).is_none_or(|end| end > bound)
}

fn would_wait(key: &str, retry_after: Duration) -> LimitError {
    LimitError::WouldWait {
        key: Arc::from(key),
        retry_after,
    }
}

/// Time to refill `missing` units at `per_sec`.
fn refill_time(missing: f64, per_sec: f64) -> Duration {
    if missing <= 0.0 {
        return Duration::ZERO;
    }
    if per_sec <= 0.0 {
        return Duration::MAX;
    }
    Duration::try_from_secs_f64(missing / per_sec).unwrap_or(Duration::MAX)
}

fn check_size(key: &str, limits: &Limits, ask: Ask) -> Result<(), LimitError> {
    for (axis, asked, capacity) in [
        ("requests", ask.requests, limits.request_capacity()),
        ("tokens", ask.tokens, limits.token_capacity()),
    ] {
        if let Some(capacity) = capacity.filter(|c| asked > *c) {
            return Err(LimitError::TooLarge {
                key: Arc::from(key),
                axis,
                asked,
                capacity,
            });
        }
    }
    Ok(())
}

/// What one granted reservation holds; see the module docs for reconcile, refund and drop.
#[derive(Debug)]
pub struct Reservation {
    tokens: f64,
    /// `None` for a key without limits: nothing was taken, nothing to correct.
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    limiter: Arc<Inner>,
    state: Arc<KeyState>,
    key: Arc<str>,
    configured: Limits,
}

impl Reservation {
    fn noop(tokens: f64) -> Self {
        Self { tokens, held: None }
    }

    /// The tokens reserved (the estimate).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Whether anything was taken from a store (false for a key without limits).
    pub fn is_limited(&self) -> bool {
        self.held.is_some()
    }

    /// Corrects the token bucket by `reserved - actual_tokens` once the real usage is known:
    /// gives back what the estimate over-reserved, or takes what it under-reserved (possibly
    /// below zero). A negative or non-finite `actual_tokens` keeps the reservation as it is.
    pub async fn reconcile(self, actual_tokens: f64) {
        if !(actual_tokens.is_finite() && actual_tokens >= 0.0) {
            tracing::warn!(
                actual_tokens,
                "rate limit: ignoring an unusable token count"
            );
            return;
        }
        let correction = self.tokens - actual_tokens;
        self.adjust(correction).await;
    }

    /// Gives the reserved tokens back, for a failure that consumed nothing. The request stays
    /// counted: the provider counted it.
    pub async fn refund(self) {
        let tokens = self.tokens;
        self.adjust(tokens).await;
    }

    async fn adjust(self, tokens: f64) {
        let Some(held) = self.held else { return };
        if tokens == 0.0 {
            return;
        }
        // The limits in effect now, so a correction never resizes the bucket back to stale
        // limits.
        let limits = held.state.effective(&held.configured);
        if let Err(e) = held
            .limiter
            .store
            .adjust(&held.key, &limits, 0.0, tokens)
            .await
        {
            tracing::warn!(key = %held.key, error = %e, "rate limit: could not correct the bucket");
        }
    }
}

/// The reservations one attempt holds: the target's, and a per-client one inside it when
/// the call has a limit scope. Settled together.
#[derive(Debug, Default)]
pub struct Reservations(Vec<Reservation>);

impl Reservations {
    /// Adds one.
    pub fn push(&mut self, r: Reservation) {
        self.0.push(r);
    }

    /// Corrects every reservation by the actual usage.
    pub async fn reconcile(self, actual_tokens: f64) {
        for r in self.0 {
            r.reconcile(actual_tokens).await;
        }
    }

    /// Gives the tokens of every reservation back.
    pub async fn refund(self) {
        for r in self.0 {
            r.refund().await;
        }
    }
}

#[cfg(test)]
mod tests;
