//! Per-call retry policy: the knobs, their defaults (the one place each default lives), and the
//! pure decision "retry this failure, after how long, or give up and why".
//!
//! The decision is deliberately a pure function of the failure's class, the server's hints, the
//! retries already made and the time left. The executor calls it identically for streaming and
//! non-streaming attempts, which is what makes "same faults → same attempts" hold by
//! construction rather than by two code paths agreeing.
//!
//! Order of the checks (first match wins):
//! 1. `x-should-retry: false` from the server → give up on this target.
//! 2. the class does not allow retrying the same target (table in [`crate::ErrorClass`]) →
//!    give up (`x-should-retry: true` may revive a plain `bad_request`, e.g. a 409-like
//!    conflict, but never auth, quota, context or policy failures that cannot succeed).
//! 3. retries exhausted → give up.
//! 4. a server hint longer than `max_retry_after` → give up now, carrying the hint (waiting
//!    minutes inside a request is worse than falling back or failing fast).
//! 5. a server hint that does not fit in the time left → give up now, carrying the hint.
//! 6. otherwise sleep `max(full-jitter backoff, hint)`: never sooner than the server asked,
//!    and still spread out when many clients got the same hint.
//! 7. if even that sleep does not fit in the time left → give up rather than sleep past the
//!    deadline.

use std::fmt;
use std::time::Duration;

use crate::{Backoff, ErrorClass, RandomSource, ServerHints};

/// An invalid policy value; `key` names the configuration key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `key` has a value that cannot work.
    #[error("{key}: {message}")]
    Invalid {
        /// The configuration key at fault, e.g. `max_delay`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// How one call retries, times out and gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, per target.
    pub max_retries: u32,
    /// Exponential backoff with full jitter between attempts.
    pub backoff: Backoff,
    /// A server hint (`retry-after`) longer than this ends retries on the target at once.
    pub max_retry_after: Duration,
    /// Total time for the call: every attempt, sleep and fallback.
    pub deadline: Duration,
    /// TCP/TLS connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Streaming: time from sending the request to the first content event.
    pub first_token_timeout: Duration,
    /// Longest gap between two stream events (SSE comments do not count as events), and
    /// between two body chunks of a non-streamed response.
    pub idle_timeout: Duration,
}

impl RetryPolicy {
    /// Default `max_retries`.
    pub const DEFAULT_MAX_RETRIES: u32 = 5;
    /// Default `max_retry_after`.
    pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
    /// Default `deadline`.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);
    /// Default `connect_timeout`.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `first_token_timeout`.
    pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default `idle_timeout`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    /// Checks that every value can work; names the first bad key.
    pub fn validate(&self) -> Result<(), PolicyError> {
        Backoff::try_new(self.backoff.base(), self.backoff.max())?;
        let positive = [
            ("max_retry_after", self.max_retry_after),
            ("deadline", self.deadline),
            ("connect_timeout", self.connect_timeout),
            ("first_token_timeout", self.first_token_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err(PolicyError::Invalid {
                    key,
                    message: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }

    /// Decides what to do after a failed attempt. `retries_so_far` is 0 after the first
    /// attempt; `remaining` is the time left before the call's deadline.
    pub fn decide(
        &self,
        class: ErrorClass,
        retries_so_far: u32,
        hints: &ServerHints,
        remaining: Duration,
        rng: &mut dyn RandomSource,
    ) -> RetryDecision {
        if hints.should_retry == Some(false) {
            return RetryDecision::GiveUp(GiveUpReason::ServerSaidNo);
        }
        let revived = hints.should_retry == Some(true) && class == ErrorClass::BadRequest;
        if !class.retryable() && !revived {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable(class));
        }
        if retries_so_far >= self.max_retries {
            return RetryDecision::GiveUp(GiveUpReason::RetriesExhausted {
                retries: retries_so_far,
            });
        }
        if let Some(hint) = hints.retry_after {
            if hint > self.max_retry_after {
                return RetryDecision::GiveUp(GiveUpReason::HintTooLong {
                    hint,
                    cap: self.max_retry_after,
                });
            }
            if hint >= remaining {
                return RetryDecision::GiveUp(GiveUpReason::HintBeyondDeadline { hint, remaining });
            }
        }
        let jitter = self.backoff.delay(retries_so_far, rng);
        let delay = jitter.max(hints.retry_after.unwrap_or(Duration::ZERO));
        if delay >= remaining {
            return RetryDecision::GiveUp(GiveUpReason::DeadlineExceeded { delay, remaining });
        }
        RetryDecision::Retry { delay }
    }

    /// When the caller may come back: the server hint, breaker wait or park carried by a
    /// give-up reason.
    pub fn hint_of(reason: &GiveUpReason) -> Option<Duration> {
        match reason {
            GiveUpReason::HintTooLong { hint, .. }
            | GiveUpReason::HintBeyondDeadline { hint, .. } => Some(*hint),
            GiveUpReason::CircuitOpen { wait }
            | GiveUpReason::Parked { wait }
            | GiveUpReason::LimitExceeded { wait } => Some(*wait),
            _ => None,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: Self::DEFAULT_MAX_RETRIES,
            backoff: Backoff::default(),
            max_retry_after: Self::DEFAULT_MAX_RETRY_AFTER,
            deadline: Self::DEFAULT_DEADLINE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            first_token_timeout: Self::DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Sleep `delay`, then attempt the same target again.
    Retry {
        /// How long to wait first.
        delay: Duration,
    },
    /// Stop retrying this target.
    GiveUp(GiveUpReason),
}

/// Why the retries on a target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The failure's class is never retried on the same target.
    NotRetryable(ErrorClass),
    /// The server sent `x-should-retry: false`.
    ServerSaidNo,
    /// `max_retries` retries were made.
    RetriesExhausted {
        /// Retries made.
        retries: u32,
    },
    /// The server asked for a wait longer than `max_retry_after`.
    HintTooLong {
        /// The server's hint.
        hint: Duration,
        /// The configured cap.
        cap: Duration,
    },
    /// The server asked for a wait longer than the time left before the deadline.
    HintBeyondDeadline {
        /// The server's hint.
        hint: Duration,
        /// Time left.
        remaining: Duration,
    },
    /// The backoff delay does not fit in the time left.
    DeadlineExceeded {
        /// The delay that would have been slept.
        delay: Duration,
        /// Time left.
        remaining: Duration,
    },
    /// The target's retry budget is spent: retrying would amplify an outage.
    BudgetExhausted,
    /// The target's circuit breaker is open (or its half-open probes are all taken).
    CircuitOpen {
        /// Time until the breaker lets a probe through.
        wait: Duration,
    },
    /// The proactive rate limiter has no capacity for this call within its bounds (deadline,
    /// `max_queue_wait`).
    LimitExceeded {
        /// Time until the limiter expects capacity.
        wait: Duration,
    },
    /// The target is parked after a 429 with a hint, for longer than this call can wait.
    Parked {
        /// Time until the park ends.
        wait: Duration,
    },
}

impl GiveUpReason {
    /// Low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotRetryable(_) => "not_retryable",
            Self::ServerSaidNo => "server_said_no",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::HintTooLong { .. } => "hint_too_long",
            Self::HintBeyondDeadline { .. } => "hint_beyond_deadline",
            Self::DeadlineExceeded { .. } => "deadline_exceeded",
            Self::BudgetExhausted => "budget_exhausted",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Parked { .. } => "parked",
            Self::LimitExceeded { .. } => "limit_exceeded",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRetryable(class) => write!(f, "{class} is not retried on the same target"),
            Self::ServerSaidNo => f.write_str("the server sent x-should-retry: false"),
            Self::RetriesExhausted { retries } => {
                write!(f, "retries exhausted ({retries} retries)")
            }
            Self::HintTooLong { hint, cap } => write!(
                f,
                "server asked to retry after {:.3}s, more than max_retry_after {:.3}s",
                hint.as_secs_f64(),
                cap.as_secs_f64()
            ),
            Self::HintBeyondDeadline { hint, remaining } => write!(
                f,
                "server asked to retry after {:.3}s but only {:.3}s remain before the deadline",
                hint.as_secs_f64(),
                remaining.as_secs_f64()
            ),
            Self::DeadlineExceeded { delay, remaining } => write!(
                f,
                "the next retry would start after {:.3}s but only {:.3}s remain before the deadline",
                delay.as_secs_f64(),
                remaining.as_secs_f64()
            ),
            Self::BudgetExhausted => {
                f.write_str("the target's retry budget is spent (retries are capped to protect it)")
            }
            Self::CircuitOpen { wait } => write!(
                f,
                "the target's circuit breaker is open for {:.3}s more",
                wait.as_secs_f64()
            ),
            Self::LimitExceeded { wait } => write!(
                f,
                "the proactive rate limit has no capacity for {:.3}s, longer than this call may wait",
                wait.as_secs_f64()
            ),
            Self::Parked { wait } => write!(
                f,
                "the target is parked for {:.3}s more after a rate limit with a retry hint",
                wait.as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;

    fn hints(retry_after: Option<Duration>, should_retry: Option<bool>) -> ServerHints {
        ServerHints {
            retry_after,
            should_retry,
            ..ServerHints::default()
        }
    }

    const LOTS: Duration = Duration::from_secs(3600);

    #[test]
    fn defaults_match_the_documented_values() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 5);
        assert_eq!(p.backoff.base(), Duration::from_secs(1));
        assert_eq!(p.backoff.max(), Duration::from_secs(60));
        assert_eq!(p.max_retry_after, Duration::from_secs(60));
        assert_eq!(p.deadline, Duration::from_secs(600));
        assert_eq!(p.connect_timeout, Duration::from_secs(10));
        assert_eq!(p.first_token_timeout, Duration::from_secs(60));
        assert_eq!(p.idle_timeout, Duration::from_secs(60));
        p.validate().unwrap();
    }

    #[test]
    fn validate_names_the_bad_key() {
        let p = RetryPolicy {
            idle_timeout: Duration::ZERO,
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "idle_timeout: must be greater than zero"
        );
    }

    #[test]
    fn retryable_classes_retry_with_jitter_below_the_ceiling() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64::seeded(7);
        for class in ErrorClass::ALL.into_iter().filter(|c| c.retryable()) {
            for retry in 0..5 {
                match p.decide(class, retry, &ServerHints::default(), LOTS, &mut rng) {
                    RetryDecision::Retry { delay } => assert!(delay < p.backoff.ceiling(retry)),
                    other => panic!("{class}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn non_retryable_classes_give_up_at_once() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64::seeded(7);
        for class in ErrorClass::ALL.into_iter().filter(|c| !c.retryable()) {
            assert_eq!(
                p.decide(class, 0, &ServerHints::default(), LOTS, &mut rng),
                RetryDecision::GiveUp(GiveUpReason::NotRetryable(class))
            );
        }
    }

    #[test]
    fn retries_stop_at_max_retries() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64::seeded(1);
        let d = p.decide(
            ErrorClass::Overloaded,
            5,
            &ServerHints::default(),
            LOTS,
            &mut rng,
        );
        assert_eq!(
            d,
            RetryDecision::GiveUp(GiveUpReason::RetriesExhausted { retries: 5 })
        );
    }

    #[test]
    fn a_hint_is_a_floor_for_the_delay() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64::seeded(3);
        let hint = Duration::from_millis(1500);
        for _ in 0..100 {
            match p.decide(
                ErrorClass::RateLimited,
                0,
                &hints(Some(hint), None),
                LOTS,
                &mut rng,
            ) {
                // retry 0 ceiling is 1s, so the hint always wins here
                RetryDecision::Retry { delay } => assert_eq!(delay, hint),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn hints_beyond_the_cap_or_the_deadline_end_retries_with_the_hint() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64::seeded(3);
        let long = Duration::from_secs(61);
        let d = p.decide(
            ErrorClass::RateLimited,
            0,
            &hints(Some(long), None),
            LOTS,
            &mut rng,
        );
        let RetryDecision::GiveUp(reason) = d else {
            panic!("{d:?}")
        };
        assert_eq!(RetryPolicy::hint_of(&reason), Some(long));
        assert!(reason.to_string().contains("61.000s"), "{reason}");

        let hint = Duration::from_secs(30);
        let left = Duration::from_secs(10);
        let d = p.decide(
            ErrorClass::RateLimited,
            0,
            &hints(Some(hint), None),
            left,
            &mut rng,
        );
        assert_eq!(
            d,
            RetryDecision::GiveUp(GiveUpReason::HintBeyondDeadline {
                hint,
                remaining: left
            })
        );
    }

    #[test]
    fn a_delay_that_does_not_fit_gives_up_instead_of_sleeping_past_the_deadline() {
        let p = RetryPolicy::default();
        // the first rng draw is used for the jitter; any draw > 0 gives a delay > 1ns
        let mut rng = SplitMix64::seeded(11);
        let d = p.decide(
            ErrorClass::ServerError,
            3,
            &ServerHints::default(),
            Duration::from_nanos(1),
            &mut rng,
        );
        assert!(
            matches!(
                d,
                RetryDecision::GiveUp(GiveUpReason::DeadlineExceeded { .. })
            ),
            "{d:?}"
        );
    }

    #[test]
    fn x_should_retry_overrides() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64::seeded(3);
        let d = p.decide(
            ErrorClass::Overloaded,
            0,
            &hints(None, Some(false)),
            LOTS,
            &mut rng,
        );
        assert_eq!(d, RetryDecision::GiveUp(GiveUpReason::ServerSaidNo));
        let d = p.decide(
            ErrorClass::BadRequest,
            0,
            &hints(None, Some(true)),
            LOTS,
            &mut rng,
        );
        assert!(matches!(d, RetryDecision::Retry { .. }));
        let d = p.decide(
            ErrorClass::Auth,
            0,
            &hints(None, Some(true)),
            LOTS,
            &mut rng,
        );
        assert_eq!(
            d,
            RetryDecision::GiveUp(GiveUpReason::NotRetryable(ErrorClass::Auth))
        );
    }
}
