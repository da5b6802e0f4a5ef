//! Observer events: how the executor reports each resilience decision without depending on a
//! metrics or logging backend. The library logs through `tracing` itself; the gateway adds an
//! observer that turns the same events into metrics. Tests record events to compare what two
//! calls did (for example a streaming and a non-streaming call under the same faults).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::{BreakerState, ErrorClass, GiveUpReason};

/// One resilience decision or milestone of a call. Targets are named `provider/model`.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// An attempt is about to be sent. `attempt` counts from 1 per target.
    AttemptStarted {
        /// Target name.
        target: Arc<str>,
        /// Attempt number on this target.
        attempt: u32,
    },
    /// An attempt failed before commit.
    AttemptFailed {
        /// Target name.
        target: Arc<str>,
        /// Attempt number on this target.
        attempt: u32,
        /// The failure's class.
        class: ErrorClass,
        /// HTTP status, if the failure had one.
        status: Option<u16>,
    },
    /// The executor will sleep `delay` and then try the same target again.
    RetryScheduled {
        /// Target name.
        target: Arc<str>,
        /// Class of the failure being retried.
        class: ErrorClass,
        /// The attempt that will follow.
        next_attempt: u32,
        /// The sleep before it.
        delay: Duration,
    },
    /// Retries on a target ended.
    TargetGaveUp {
        /// Target name.
        target: Arc<str>,
        /// Class of the last failure.
        class: ErrorClass,
        /// Why.
        reason: GiveUpReason,
    },
    /// A target was passed over without an attempt (breaker open, parked, or a context window
    /// no larger than the one that overflowed).
    TargetSkipped {
        /// Target name.
        target: Arc<str>,
        /// Why, as a low-cardinality label (`circuit_open`, `parked`, `smaller_window`).
        reason: &'static str,
    },
    /// A target's circuit breaker changed state.
    BreakerTransition {
        /// Target name.
        target: Arc<str>,
        /// State before.
        from: BreakerState,
        /// State after.
        to: BreakerState,
    },
    /// A retry was refused because the target's retry budget is spent.
    BudgetExhausted {
        /// Target name.
        target: Arc<str>,
    },
    /// An attempt waited in the proactive rate limiter's queue before it could be sent.
    LimiterWaited {
        /// Target name.
        target: Arc<str>,
        /// How long.
        wait: Duration,
    },
    /// The proactive rate limiter refused an attempt (it would wait too long, or can never
    /// fit), so the call falls back or fails with `rate_limited`.
    LimiterRejected {
        /// Target name.
        target: Arc<str>,
        /// `would_wait`, `too_large` or `store_unavailable`.
        reason: &'static str,
    },
    /// The call moves to the next target of its chain.
    FallbackTaken {
        /// Target given up on.
        from: Arc<str>,
        /// Target tried next.
        to: Arc<str>,
    },
    /// The response was committed to the caller (streams: first content event).
    Committed {
        /// Target that answered.
        target: Arc<str>,
        /// Attempts made across the whole call, this one included.
        attempts: u32,
        /// Whether the call streams.
        streaming: bool,
        /// Time from call start to commit (time to first token for streams).
        elapsed: Duration,
    },
    /// A committed stream failed; it ends with a terminal error item.
    StreamInterrupted {
        /// Target that was streaming.
        target: Arc<str>,
        /// Always [`ErrorClass::StreamInterrupted`] today; the cause is in `cause`.
        cause: ErrorClass,
    },
}

/// Receives [`CallEvent`]s. Implementations must be cheap and must not block: they run inline
/// on the request's task.
pub trait Observer: Send + Sync + Debug {
    /// Called for every event, in order, from the call's task.
    fn on_event(&self, event: &CallEvent);
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn on_event(&self, _event: &CallEvent) {}
}
