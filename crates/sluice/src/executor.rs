//! The one executor. Streaming and non-streaming calls both run [`execute`]: route resolution,
//! the chain of targets, the attempt loop, classification, backoff, server hints and the
//! deadline are shared. The only difference is the commit point, decided in [`attempt`]:
//!
//! - non-streaming: committed when the whole body has arrived and parsed;
//! - streaming: committed when the first content-bearing event (text, tool-call or refusal
//!   delta) arrives, or the stream ends cleanly without content. Preamble events (the role-only
//!   first chunk) are held back until then.
//!
//! Any failure before the commit point — an error status, a reset, an in-band error event, a
//! malformed frame, an empty stream, a first-token timeout — becomes an [`UpstreamError`] and
//! goes through [`RetryPolicy::decide`] exactly like any other. After commit, failures end the
//! stream with a `StreamInterrupted` item (see `stream.rs`) and are never retried: the caller
//! has already seen those tokens, and a replay would duplicate them.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sluice_core::{
    CallEvent, Deadline, ErrorClass, FallbackRule, GiveUpReason, OnOverflow, RateLimitSnapshot,
    RetryDecision, RetryPolicy,
};
use sluice_providers::{ChatRequest, ChatResponse, StreamEvent, UpstreamError, transport_error};
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{Client, Route, Target};
use crate::context::{self, TruncationInfo, Verdict};
use crate::error::{AttemptRecord, CallFailure, Error};
use crate::health::{AttemptGuard, Availability, TargetHealth};
use crate::limiter::{Ask, LimitError, Reservations};
use crate::stream::{ChatStream, Committed, EventReader, ReadError};

/// Whether the caller wants the whole answer or a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Collect,
    Stream,
}

/// Which target answered, after how many attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// `provider/model` that answered.
    pub target: Arc<str>,
    /// Attempts made across the whole call, the successful one included.
    pub attempts: u32,
    /// From the call's start to its commit point (for streams: time to first token).
    pub elapsed: Duration,
    /// Time spent in upstream attempts up to the commit point (sending, waiting, reading).
    pub upstream_wait: Duration,
    /// Time spent waiting on purpose: backoff, parks, rate-limiter queues, waiting for a
    /// breaker to half-open.
    pub backoff_wait: Duration,
    /// What the context guard dropped to make the prompt fit, if anything.
    pub truncation: Option<TruncationInfo>,
}

/// A committed answer.
#[derive(Debug)]
pub enum Answer {
    /// The whole response of a non-streaming call.
    Response(Box<ChatResponse>, CallInfo),
    /// A committed stream.
    Stream(ChatStream),
}

/// Error bodies larger than this are cut while reading: the message is all we need.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// A non-streamed response larger than this is refused (a broken upstream must not exhaust
/// memory).
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// Per-call settings that are not part of the request body.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Extra headers sent upstream on every attempt of this call (after the endpoint's own).
    pub headers: http::HeaderMap,
    /// Rate-limit this call in its own buckets within each target's (per client key, say):
    /// the limiter key becomes `target|scope`. Never put a secret here; a gateway passes a
    /// digest of the client's key.
    pub limit_scope: Option<String>,
}

pub(crate) async fn execute(
    client: &Client,
    mut req: ChatRequest,
    mode: Mode,
    options: &CallOptions,
) -> Result<Answer, Error> {
    let start = Instant::now();
    if req.messages.is_empty() {
        return Err(Error::InvalidRequest("`messages` must not be empty".into()));
    }
    let route = client.resolve(&req.model)?;
    let deadline = Deadline::new(start, route.policy.deadline);
    let forward_usage = mode == Mode::Stream && req.wants_stream_usage();
    // The caller's streaming flags are the executor's business from here on; each adapter
    // sets its own upstream flags from `mode`.
    req.stream = None;
    if mode == Mode::Collect {
        req.stream_options = None;
    }
    let call = Call {
        waits: Waits::default(),
        client,
        route: &route,
        mode,
        deadline,
        forward_usage,
        options,
    };
    call.run(req).await
}

/// Where a call's time went, for the overhead metric (elapsed minus both waits).
#[derive(Debug, Default)]
struct Waits {
    upstream_nanos: AtomicU64,
    backoff_nanos: AtomicU64,
}

impl Waits {
    fn add(counter: &AtomicU64, d: Duration) {
        counter.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn get(counter: &AtomicU64) -> Duration {
        Duration::from_nanos(counter.load(Ordering::Relaxed))
    }
}

struct Call<'a> {
    waits: Waits,
    client: &'a Client,
    route: &'a Route,
    mode: Mode,
    deadline: Deadline,
    forward_usage: bool,
    options: &'a CallOptions,
}

/// Why a target was given up on.
struct TargetFailure {
    last: UpstreamError,
    reason: GiveUpReason,
}

/// What one attempt sends and reports.
struct AttemptSetup<'a> {
    target: &'a Target,
    req: &'a ChatRequest,
    /// Attempts so far across the call, this one included.
    total_attempts: u32,
    health: &'a Arc<parking_lot::Mutex<TargetHealth>>,
    limit_key: &'a str,
    truncation: Option<TruncationInfo>,
}

/// What the context guard decided for one target.
enum Prepared<'r> {
    /// Send this request (the caller's, or a truncated copy) with this many prompt tokens.
    Send {
        request: Cow<'r, ChatRequest>,
        prompt: usize,
        truncation: Option<TruncationInfo>,
    },
    /// Too large here; a later target has a larger window.
    Larger(TargetFailure),
    /// Too large, and the policy says fail.
    Fail(TargetFailure),
}

/// How a target's turn in the chain ended without an answer.
enum TargetOutcome {
    /// Attempts were made and failed.
    Failed(TargetFailure),
    /// No attempt could be made: the breaker is open (a probe may go through after the
    /// duration), or the target is parked for longer than this call may wait (`None`: the
    /// server's hint is final for this call, exactly as if it had answered the 429 itself).
    Unavailable(TargetFailure, Option<Duration>),
}

impl Call<'_> {
    /// Walks the chain: each target gets its own retries; the chain moves on when a failure is
    /// fallback-worthy, skips targets whose breaker is open, and waits for the earliest target
    /// to become available when none is and the deadline allows.
    async fn run(&self, req: ChatRequest) -> Result<Answer, Error> {
        let mut records = Vec::new();
        let mut failure: Option<TargetFailure> = None;
        let mut tried = 0;
        loop {
            let mut earliest: Option<Duration> = None;
            let mut previous: Option<&Target> = None;
            let mut overflowed_window: Option<Option<u32>> = None;
            for (index, target) in self.route.targets.iter().enumerate() {
                if let (Some(prev), Some(f)) = (previous, &failure) {
                    if !self.may_fall_back(f.last.class) || self.deadline.is_expired(Instant::now())
                    {
                        return Err(self.fail(failure, records, tried));
                    }
                    if f.last.class == ErrorClass::ContextLength {
                        overflowed_window
                            .get_or_insert(context::window_of(prev, &self.route.context));
                    }
                }
                if let Some(window) = overflowed_window {
                    // Only a strictly larger, known window can take a prompt that overflowed.
                    let larger = match (window, context::window_of(target, &self.route.context)) {
                        (Some(w), Some(t)) => t > w,
                        _ => false,
                    };
                    if !larger {
                        self.skip(target, "smaller_window");
                        continue;
                    }
                }
                if let (Some(prev), Some(_)) = (previous, &failure) {
                    tracing::warn!(from = %prev.name(), to = %target.name(), "falling back to the next target");
                    self.observe(CallEvent::FallbackTaken {
                        from: prev.name().clone(),
                        to: target.name().clone(),
                    });
                }
                let (to_send, prompt, truncation) = match self.prepare(index, target, &req).await {
                    Prepared::Send {
                        request,
                        prompt,
                        truncation,
                    } => (request, prompt, truncation),
                    Prepared::Larger(f) => {
                        overflowed_window = Some(context::window_of(target, &self.route.context));
                        failure.get_or_insert(f);
                        previous = Some(target);
                        continue;
                    }
                    Prepared::Fail(f) => {
                        failure = Some(f);
                        previous = Some(target);
                        continue;
                    }
                };
                match self
                    .run_target(target, &to_send, prompt, truncation, &mut records)
                    .await
                {
                    Ok(answer) => return Ok(answer),
                    Err(TargetOutcome::Failed(f)) => {
                        tried += 1;
                        failure = Some(f);
                        previous = Some(target);
                    }
                    Err(TargetOutcome::Unavailable(f, wait)) => {
                        if let Some(wait) = wait {
                            earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
                        }
                        failure.get_or_insert(f);
                        previous = Some(target);
                    }
                }
            }
            // Every target failed or was passed over. If none could even be tried (all open or
            // parked), wait for the first to come back when the deadline allows.
            match earliest {
                Some(wait) if tried == 0 && wait < self.deadline.remaining(Instant::now()) => {
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        "every target is unavailable; waiting for the earliest"
                    );
                    self.sleep(wait).await;
                    failure = None;
                }
                _ => return Err(self.fail(failure, records, tried)),
            }
        }
    }

    /// The context guard for one target: counts the prompt when a window or a rate limit will
    /// read the count, and applies the route's overflow policy.
    async fn prepare<'r>(
        &self,
        index: usize,
        target: &Target,
        req: &'r ChatRequest,
    ) -> Prepared<'r> {
        let ctx = &self.route.context;
        let window = context::window_of(target, ctx);
        // Counting costs a tokenizer pass; skip it when neither a window nor a rate limit
        // (configured or learned) will look at the count.
        let (limit_key, limits) = self.client.limit_for(target);
        let counted = window.is_some()
            || !self
                .client
                .inner
                .limiter
                .effective_limits(&limit_key, &limits)
                .is_unlimited();
        let prompt = if counted {
            context::count_prompt(target.model(), req).await
        } else {
            0
        };
        let larger_later = self.route.targets[index + 1..]
            .iter()
            .any(|t| matches!((window, context::window_of(t, ctx)), (Some(w), Some(l)) if l > w));
        match context::guard(target, req, prompt, ctx, larger_later, None).await {
            Verdict::Send(None) => Prepared::Send {
                request: Cow::Borrowed(req),
                prompt,
                truncation: None,
            },
            Verdict::Send(Some((truncated, info))) => Prepared::Send {
                request: Cow::Owned(truncated),
                prompt: info.tokens_after,
                truncation: Some(info),
            },
            Verdict::Larger => {
                self.skip(target, "context_fallback");
                Prepared::Larger(TargetFailure {
                    last: UpstreamError::new(
                        ErrorClass::ContextLength,
                        format!(
                            "the prompt ({prompt} tokens) does not fit {}",
                            target.name()
                        ),
                    ),
                    reason: GiveUpReason::NotRetryable(ErrorClass::ContextLength),
                })
            }
            Verdict::Fail(err) => {
                tracing::warn!(upstream = %target.name(), "{}", err.message);
                Prepared::Fail(TargetFailure {
                    last: err,
                    reason: GiveUpReason::NotRetryable(ErrorClass::ContextLength),
                })
            }
        }
    }

    fn fail(
        &self,
        failure: Option<TargetFailure>,
        records: Vec<AttemptRecord>,
        tried: usize,
    ) -> Error {
        let failure = failure.unwrap_or_else(|| TargetFailure {
            last: UpstreamError::new(
                ErrorClass::ContextLength,
                "no target of this route has a context window larger than the one that overflowed",
            ),
            reason: GiveUpReason::NotRetryable(ErrorClass::ContextLength),
        });
        Error::Call(Box::new(CallFailure {
            class: failure.last.class,
            reason: failure.reason,
            attempts: records,
            last: failure.last,
            targets_tried: tried.max(1),
        }))
    }

    fn skip(&self, target: &Target, reason: &'static str) {
        tracing::info!(upstream = %target.name(), reason, "skipping target");
        self.observe(CallEvent::TargetSkipped {
            target: target.name().clone(),
            reason,
        });
    }

    fn may_fall_back(&self, class: ErrorClass) -> bool {
        match class.disposition().fallback {
            FallbackRule::Always | FallbackRule::LargerWindowOnly => true,
            FallbackRule::Never => false,
            FallbackRule::IfConfigured => self.route.fallback_on_content_policy,
        }
    }

    /// Waits out a park when it is a hint this call would have honoured anyway; else reports
    /// the target unavailable. Returns the admitted attempt's probe flag.
    async fn admit(
        &self,
        target: &Target,
        health: &Arc<parking_lot::Mutex<TargetHealth>>,
    ) -> Result<bool, (GiveUpReason, Duration)> {
        loop {
            let now = Instant::now();
            let availability = health.lock().admit(now);
            match availability {
                Availability::Ready { probe } => return Ok(probe),
                Availability::Parked { wait } => {
                    let remaining = self.deadline.remaining(now);
                    if wait > self.route.policy.max_retry_after || wait >= remaining {
                        self.skip(target, "parked");
                        return Err((GiveUpReason::Parked { wait }, wait));
                    }
                    tracing::debug!(upstream = %target.name(), wait_ms = wait.as_millis() as u64, "target parked after a rate limit; waiting");
                    self.sleep(wait).await;
                }
                Availability::Open { wait } => {
                    self.skip(target, "circuit_open");
                    return Err((GiveUpReason::CircuitOpen { wait }, wait));
                }
            }
        }
    }

    /// The attempt loop on one target: admit, attempt, classify, decide, sleep, repeat.
    async fn run_target(
        &self,
        target: &Target,
        req: &ChatRequest,
        mut prompt: usize,
        mut truncation: Option<TruncationInfo>,
        records: &mut Vec<AttemptRecord>,
    ) -> Result<Answer, TargetOutcome> {
        let policy: &RetryPolicy = &self.route.policy;
        let max_attempts = policy.max_retries + 1;
        let health = self.client.inner.health.get(target);
        let (limit_key, limits) = self.client.limit_for(target);
        // A per-client scope adds its own buckets inside the target's: both must admit.
        let scoped_key: Option<Arc<str>> = match &self.options.limit_scope {
            Some(scope) if !limits.is_unlimited() => {
                Some(Arc::from(format!("{limit_key}|{scope}")))
            }
            _ => None,
        };
        let mut upstream_req = req.clone();
        upstream_req.model = target.model().to_owned();
        let mut retries = 0u32;
        let mut context_retried = false;
        loop {
            let attempt_no = retries + 1;
            let probe = match self.admit(target, &health).await {
                Ok(probe) => probe,
                Err((reason, wait)) => {
                    let class = if matches!(reason, GiveUpReason::Parked { .. }) {
                        ErrorClass::RateLimited
                    } else {
                        ErrorClass::Overloaded
                    };
                    let last =
                        UpstreamError::new(class, format!("{} not tried: {reason}", target.name()));
                    let waitable =
                        matches!(reason, GiveUpReason::CircuitOpen { .. }).then_some(wait);
                    return Err(if retries == 0 {
                        TargetOutcome::Unavailable(TargetFailure { last, reason }, waitable)
                    } else {
                        TargetOutcome::Failed(TargetFailure { last, reason })
                    });
                }
            };
            if retries == 0 {
                health.lock().budget.record_request(Instant::now());
            }
            let guard = AttemptGuard::new(health.clone(), probe);
            // Proactive limit: reserve this attempt's request and estimated tokens before
            // sending, so an admitted stream can never take the target over its limit.
            let output = upstream_req
                .max_completion_tokens
                .or(upstream_req.max_tokens)
                .unwrap_or(u64::from(self.client.inner.expected_output_tokens));
            let ask = Ask {
                requests: 1.0,
                tokens: prompt as f64 + output as f64,
            };
            let queued = Instant::now();
            let limiter = &self.client.inner.limiter;
            let reserved = async {
                let mut held = Reservations::default();
                if let Some(key) = &scoped_key {
                    held.push(
                        limiter
                            .reserve(key, &limits, ask, self.deadline.at())
                            .await?,
                    );
                }
                held.push(
                    limiter
                        .reserve(&limit_key, &limits, ask, self.deadline.at())
                        .await?,
                );
                Ok::<_, LimitError>(held)
            }
            .await;
            Waits::add(&self.waits.backoff_nanos, queued.elapsed());
            let mut reservation = match reserved {
                Ok(r) => Some(r),
                Err(e) => {
                    drop(guard);
                    let (class, reason) = match &e {
                        LimitError::TooLarge { .. } => (
                            ErrorClass::QuotaExhausted,
                            GiveUpReason::NotRetryable(ErrorClass::QuotaExhausted),
                        ),
                        _ => (
                            ErrorClass::RateLimited,
                            GiveUpReason::LimitExceeded {
                                wait: e.retry_after().unwrap_or_default(),
                            },
                        ),
                    };
                    tracing::warn!(upstream = %target.name(), reason = e.metric_label(), "rate limiter refused: {e}");
                    self.observe(CallEvent::LimiterRejected {
                        target: target.name().clone(),
                        reason: e.metric_label(),
                    });
                    let last = UpstreamError::new(class, e.to_string());
                    return Err(TargetOutcome::Failed(TargetFailure { last, reason }));
                }
            };
            // Only a real queue wait is worth an event; the store round trip itself is not.
            let waited = queued.elapsed();
            if waited >= Duration::from_millis(1) {
                self.observe(CallEvent::LimiterWaited {
                    target: target.name().clone(),
                    wait: waited,
                });
            }
            self.observe(CallEvent::AttemptStarted {
                target: target.name().clone(),
                attempt: attempt_no,
            });
            let total_attempts = records.len() as u32 + 1;
            let span =
                tracing::info_span!("attempt", upstream = %target.name(), attempt = attempt_no);
            let attempt_started = Instant::now();
            let outcome = self
                .attempt(
                    AttemptSetup {
                        target,
                        req: &upstream_req,
                        total_attempts,
                        health: &health,
                        limit_key: &limit_key,
                        truncation,
                    },
                    &mut reservation,
                )
                .instrument(span)
                .await;
            Waits::add(&self.waits.upstream_nanos, attempt_started.elapsed());
            let err = match outcome {
                Ok(answer) => {
                    let transition = guard.success(Instant::now());
                    self.transition(target, transition);
                    return Ok(answer);
                }
                Err(err) => err,
            };
            // A failed attempt consumed no tokens; the provider still counted the request.
            if let Some(r) = reservation.take() {
                r.refund().await;
            }
            let now = Instant::now();
            let transition = guard.failure(err.class, now);
            self.transition(target, transition);
            if err.class == ErrorClass::RateLimited {
                if let Some(hint) = err.hints.retry_after {
                    health.lock().park(now + hint);
                }
            }
            self.observe(CallEvent::AttemptFailed {
                target: target.name().clone(),
                attempt: attempt_no,
                class: err.class,
                status: err.status,
            });
            // The provider says the prompt is too long although the guard let it through (an
            // unknown window, or a tokenizer estimate): truncate to the window it names and try
            // once more, unless the route asked for errors only.
            if err.class == ErrorClass::ContextLength
                && !context_retried
                && self.route.context.on_overflow != OnOverflow::Error
            {
                context_retried = true;
                if prompt == 0 {
                    prompt = context::count_prompt(target.model(), &upstream_req).await;
                }
                let window = context::window_from_message(&err.message).or(context::window_of(
                    target,
                    &self.route.context,
                )
                .map(|w| w as usize));
                // The provider measured the prompt against its window; only the output the request
                // itself asks for (not a default reservation) counts against it here.
                let output = upstream_req
                    .max_completion_tokens
                    .or(upstream_req.max_tokens)
                    .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
                let buffer = self.route.context.buffer as usize;
                let mut budget = window.map_or(prompt.saturating_mul(9) / 10, |w| {
                    sluice_core::budget(w, output, buffer)
                });
                // Our count is the provider's only up to its tokenizer: when the provider says
                // how large it found the prompt, scale the budget by how far apart the two are.
                if let Some(theirs) = context::prompt_from_message(&err.message) {
                    if theirs > prompt && prompt > 0 {
                        budget = (budget as u128 * prompt as u128 / theirs as u128) as usize;
                    }
                }
                let budget = budget.min(prompt.saturating_mul(9) / 10);
                if let Verdict::Send(Some((shorter, info))) = context::guard(
                    target,
                    &upstream_req,
                    prompt,
                    &self.route.context,
                    false,
                    Some(budget),
                )
                .await
                {
                    records.push(record(target, attempt_no, &err, Some(Duration::ZERO)));
                    upstream_req = shorter;
                    prompt = info.tokens_after;
                    truncation = Some(match truncation {
                        Some(t) => TruncationInfo {
                            dropped_messages: t.dropped_messages + info.dropped_messages,
                            dropped_tokens: t.tokens_before.saturating_sub(info.tokens_after),
                            tokens_before: t.tokens_before,
                            tokens_after: info.tokens_after,
                        },
                        None => info,
                    });
                    retries += 1;
                    continue;
                }
            }
            let remaining = self.deadline.remaining(now);
            let mut decision = {
                let mut rng = self.client.inner.rng.lock();
                policy.decide(err.class, retries, &err.hints, remaining, rng.as_mut())
            };
            if matches!(decision, RetryDecision::Retry { .. })
                && !health.lock().budget.try_withdraw(now)
            {
                self.observe(CallEvent::BudgetExhausted {
                    target: target.name().clone(),
                });
                decision = RetryDecision::GiveUp(GiveUpReason::BudgetExhausted);
            }
            let status = err
                .status
                .map_or_else(|| "no HTTP status".to_owned(), |s| s.to_string());
            match decision {
                RetryDecision::Retry { delay } => {
                    tracing::warn!(
                        upstream = %target.name(),
                        attempt = attempt_no,
                        class = %err.class,
                        status = err.status,
                        delay_ms = delay.as_millis() as u64,
                        "attempt {attempt_no}/{max_attempts} failed: {} ({status}); retrying in {:.2}s: {}",
                        err.class,
                        delay.as_secs_f64(),
                        short(&err.message),
                    );
                    records.push(record(target, attempt_no, &err, Some(delay)));
                    self.observe(CallEvent::RetryScheduled {
                        target: target.name().clone(),
                        class: err.class,
                        next_attempt: attempt_no + 1,
                        delay,
                    });
                    self.sleep(delay).await;
                    retries += 1;
                }
                RetryDecision::GiveUp(reason) => {
                    tracing::error!(
                        upstream = %target.name(),
                        attempt = attempt_no,
                        class = %err.class,
                        status = err.status,
                        reason = reason.metric_label(),
                        "attempt {attempt_no}/{max_attempts} failed: {} ({status}); giving up on this target: {reason}: {}",
                        err.class,
                        short(&err.message),
                    );
                    records.push(record(target, attempt_no, &err, None));
                    self.observe(CallEvent::TargetGaveUp {
                        target: target.name().clone(),
                        class: err.class,
                        reason,
                    });
                    return Err(TargetOutcome::Failed(TargetFailure { last: err, reason }));
                }
            }
        }
    }

    /// Sleeps on purpose, counting the time as waiting rather than gateway overhead.
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
        Waits::add(&self.waits.backoff_nanos, d);
    }

    /// What the caller learns about a committed call. The attempt that commits is still
    /// running when this is taken, so its time so far counts as upstream wait.
    fn info(
        &self,
        target: &Target,
        attempts: u32,
        attempt_started: Instant,
        truncation: Option<TruncationInfo>,
    ) -> CallInfo {
        let now = Instant::now();
        CallInfo {
            target: target.name().clone(),
            attempts,
            elapsed: self.deadline.elapsed(now),
            upstream_wait: Waits::get(&self.waits.upstream_nanos) + (now - attempt_started),
            backoff_wait: Waits::get(&self.waits.backoff_nanos),
            truncation,
        }
    }

    fn transition(&self, target: &Target, transition: Option<sluice_core::Transition>) {
        if let Some(t) = transition {
            tracing::warn!(upstream = %target.name(), from = t.from.metric_label(), to = t.to.metric_label(), "circuit breaker changed state");
            self.observe(CallEvent::BreakerTransition {
                target: target.name().clone(),
                from: t.from,
                to: t.to,
            });
        }
    }

    /// One attempt, read up to its commit point.
    async fn attempt(
        &self,
        setup: AttemptSetup<'_>,
        reservation: &mut Option<Reservations>,
    ) -> Result<Answer, UpstreamError> {
        let AttemptSetup {
            target,
            req,
            total_attempts,
            health,
            limit_key,
            truncation,
        } = setup;
        let policy = &self.route.policy;
        let endpoint = target.endpoint();
        let stream = self.mode == Mode::Stream;
        let started = Instant::now();
        if self.deadline.is_expired(started) {
            return Err(UpstreamError::new(
                ErrorClass::Timeout,
                "the call's deadline expired",
            ));
        }
        // Streams must show content within first_token_timeout. A non-streamed answer arrives
        // only when generation is done (minutes for long or reasoning outputs), so its wait is
        // bounded by the call's deadline alone rather than timed out and paid for twice.
        let until = if stream {
            self.deadline.cap(started, policy.first_token_timeout)
        } else {
            self.deadline.at()
        };
        let timed_out = |what: &str| {
            if self.deadline.is_expired(Instant::now()) {
                UpstreamError::new(
                    ErrorClass::Timeout,
                    format!("the call's deadline expired while {what}"),
                )
            } else {
                UpstreamError::new(
                    ErrorClass::Timeout,
                    format!(
                        "no content within first_token_timeout ({:.3}s) while {what}",
                        policy.first_token_timeout.as_secs_f64()
                    ),
                )
            }
        };

        let mut builder = endpoint
            .adapter
            .build(&self.client.inner.http, endpoint, req, stream)?;
        if !endpoint.headers.is_empty() {
            builder = builder.headers(endpoint.headers.clone());
        }
        if !self.options.headers.is_empty() {
            builder = builder.headers(self.options.headers.clone());
        }
        let response = match tokio::time::timeout_at(until, builder.send()).await {
            Err(_) => return Err(timed_out("waiting for the response head")),
            Ok(Err(e)) => return Err(transport_error(e)),
            Ok(Ok(r)) => r,
        };
        // Every answer, error or not, tells the limiter what the provider sees.
        if let Some(snapshot) =
            RateLimitSnapshot::from_headers(response.headers(), SystemTime::now())
        {
            self.client
                .inner
                .limiter
                .learn(limit_key, &snapshot, Instant::now());
        }
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_body(
                response,
                MAX_ERROR_BODY,
                self.idle_until(policy.idle_timeout),
                true,
            )
            .await
            .unwrap_or_default();
            return Err(endpoint.adapter.parse_error(
                status.as_u16(),
                &headers,
                &body,
                SystemTime::now(),
            ));
        }

        match self.mode {
            Mode::Collect => {
                let body = read_body(
                    response,
                    MAX_RESPONSE_BODY,
                    self.idle_until(policy.idle_timeout),
                    false,
                )
                .await
                .map_err(|e| match e {
                    BodyError::TimedOut => UpstreamError::new(
                        ErrorClass::Timeout,
                        format!(
                            "response body stalled for idle_timeout ({:.3}s)",
                            policy.idle_timeout.as_secs_f64()
                        ),
                    ),
                    BodyError::TooLarge => UpstreamError::new(
                        ErrorClass::Transport,
                        format!("response body larger than {MAX_RESPONSE_BODY} bytes"),
                    ),
                    BodyError::Transport(e) => transport_error(e),
                })?;
                let parsed = endpoint.adapter.parse_response(&body)?;
                if let Some(r) = reservation.take() {
                    match &parsed.usage {
                        Some(usage) => r.reconcile(usage.total_tokens as f64).await,
                        // No usage reported: keep the estimate as spent (the safe side).
                        None => drop(r),
                    }
                }
                self.committed(target, total_attempts);
                Ok(Answer::Response(
                    Box::new(parsed),
                    self.info(target, total_attempts, started, truncation),
                ))
            }
            Mode::Stream => {
                let mut reader = EventReader::new(response, endpoint.adapter.stream_decoder());
                let mut held = VecDeque::new();
                let finished = loop {
                    match reader.next(until).await {
                        Ok(Some(StreamEvent::Chunk(chunk))) => {
                            let content = chunk.has_content();
                            held.push_back(chunk);
                            if content {
                                break false;
                            }
                        }
                        // A clean end with no content is a complete (empty) answer.
                        Ok(Some(StreamEvent::Done)) => break true,
                        Ok(Some(StreamEvent::Error(e))) => return Err(e),
                        Ok(None) => {
                            return Err(UpstreamError::new(
                                ErrorClass::Transport,
                                "the stream ended before any content and without an end marker",
                            ));
                        }
                        Err(ReadError::TimedOut) => {
                            return Err(timed_out("waiting for the first content event"));
                        }
                        Err(ReadError::Body(e)) => return Err(transport_error(e)),
                        Err(ReadError::Malformed(e)) => return Err(e),
                    }
                };
                self.committed(target, total_attempts);
                Ok(Answer::Stream(ChatStream::start(Committed {
                    info: self.info(target, total_attempts, started, truncation),
                    reservation: reservation.take(),
                    reader,
                    held,
                    finished,
                    target: target.name().clone(),
                    idle_timeout: policy.idle_timeout,
                    deadline: self.deadline,
                    forward_usage: self.forward_usage,
                    observer: self.client.inner.observer.clone(),
                    health: health.clone(),
                })))
            }
        }
    }

    fn idle_until(&self, idle: Duration) -> impl Fn() -> Instant + '_ {
        move || self.deadline.cap(Instant::now(), idle)
    }

    fn committed(&self, target: &Target, attempts: u32) {
        let elapsed = self.deadline.elapsed(Instant::now());
        tracing::debug!(upstream = %target.name(), attempts, elapsed_ms = elapsed.as_millis() as u64, "committed");
        self.observe(CallEvent::Committed {
            target: target.name().clone(),
            attempts,
            streaming: self.mode == Mode::Stream,
            elapsed,
        });
    }

    fn observe(&self, event: CallEvent) {
        self.client.inner.observer.on_event(&event);
    }
}

enum BodyError {
    TimedOut,
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a whole body, each chunk within the idle timeout. With `truncate`, a body over `max`
/// is cut instead of refused (error bodies: the start holds the message).
async fn read_body(
    mut response: reqwest::Response,
    max: usize,
    until: impl Fn() -> Instant,
    truncate: bool,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout_at(until(), response.chunk()).await {
            Err(_) => return Err(BodyError::TimedOut),
            Ok(Err(e)) => return Err(BodyError::Transport(e)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(bytes))) => {
                if body.len() + bytes.len() > max {
                    if truncate {
                        body.extend_from_slice(&bytes[..max - body.len()]);
                        return Ok(body);
                    }
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&bytes);
            }
        }
    }
}

fn record(
    target: &Target,
    attempt: u32,
    err: &UpstreamError,
    retry_delay: Option<Duration>,
) -> AttemptRecord {
    AttemptRecord {
        target: target.name().clone(),
        attempt,
        class: err.class,
        status: err.status,
        message: err.message.clone(),
        retry_delay,
    }
}

/// The first 200 characters of a message, for log lines.
fn short(message: &str) -> &str {
    match message.char_indices().nth(200) {
        Some((i, _)) => &message[..i],
        None => message,
    }
}
