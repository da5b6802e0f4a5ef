//! Errors a call can end with.
//!
//! Following the convention "errors carry three facts": each error says what happened (its
//! [`ErrorClass`]), where (the upstream target, or the caller's own request), and whether a
//! retry or fallback was still possible (the [`GiveUpReason`]). [`CallFailure`] keeps every
//! attempt's cause, with the last provider error as its `source()`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::{ErrorClass, GiveUpReason, RetryPolicy};
use sluice_providers::UpstreamError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every attempt on every target of the chain failed.
    #[error(transparent)]
    Call(Box<CallFailure>),
    /// The request names a model no route or provider serves.
    #[error("unknown model {model:?}: no route, provider prefix or default provider serves it")]
    UnknownModel {
        /// The model as requested.
        model: String,
    },
    /// The request itself is unusable (before any upstream was contacted).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A committed stream failed (only ever yielded as a stream item).
    #[error(transparent)]
    StreamInterrupted(#[from] StreamInterrupted),
}

impl Error {
    /// The class of the failure, if it came from an upstream.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            Self::Call(f) => Some(f.class),
            Self::StreamInterrupted(_) => Some(ErrorClass::StreamInterrupted),
            Self::UnknownModel { .. } | Self::InvalidRequest(_) => None,
        }
    }

    /// The server's retry hint that ended the call, if any (a gateway sends it on as
    /// `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Call(f) => f.retry_after(),
            _ => None,
        }
    }

    /// The call failure, when this is one.
    pub fn as_call_failure(&self) -> Option<&CallFailure> {
        match self {
            Self::Call(f) => Some(f),
            _ => None,
        }
    }
}

/// One failed attempt, as recorded for the final error.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// `provider/model`.
    pub target: Arc<str>,
    /// Attempt number on this target, from 1.
    pub attempt: u32,
    /// The failure's class.
    pub class: ErrorClass,
    /// HTTP status, if any.
    pub status: Option<u16>,
    /// The failure's message (the provider's, or the transport's).
    pub message: String,
    /// The sleep that followed, if the executor retried.
    pub retry_delay: Option<Duration>,
}

impl fmt::Display for AttemptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} attempt {}: {}",
            self.target, self.attempt, self.class
        )?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        Ok(())
    }
}

/// The final failure of a call: the class of the last failure, why retries and fallbacks
/// ended, and every attempt made.
#[derive(Debug)]
pub struct CallFailure {
    /// Class of the last failure.
    pub class: ErrorClass,
    /// Why the last target was given up on.
    pub reason: GiveUpReason,
    /// Every failed attempt, across all targets, in order.
    pub attempts: Vec<AttemptRecord>,
    /// The last provider error.
    pub last: UpstreamError,
    /// Whether more than one target was tried.
    pub targets_tried: usize,
}

impl CallFailure {
    /// The hint that ended the call (`retry-after` too long, or beyond the deadline), else
    /// the last server hint seen on a rate-limited failure.
    pub fn retry_after(&self) -> Option<Duration> {
        RetryPolicy::hint_of(&self.reason).or(self.last.hints.retry_after)
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.attempts.len();
        if self.targets_tried > 1 {
            write!(f, "all targets failed; ")?;
        }
        write!(
            f,
            "{} after {n} attempt{}: {}; attempts: ",
            self.class,
            if n == 1 { "" } else { "s" },
            self.reason
        )?;
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "[{a}]")?;
        }
        write!(f, "; last error: {}", self.last)
    }
}

impl std::error::Error for CallFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.last)
    }
}

/// How a committed stream broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The connection or body ended before the provider's end marker.
    Cut,
    /// No event arrived within the idle timeout.
    Stalled,
    /// The provider sent an error event after content had started.
    InBandError,
    /// The provider sent a frame that could not be decoded.
    MalformedFrame,
    /// The call's total deadline expired mid-stream.
    DeadlineExceeded,
}

impl Interruption {
    /// Low-cardinality label.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Cut => "cut",
            Self::Stalled => "stalled",
            Self::InBandError => "in_band_error",
            Self::MalformedFrame => "malformed_frame",
            Self::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// A committed stream failed. The content already delivered is all the caller gets: Sluice
/// never replays a stream after commit, because the caller has already shown those tokens.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream interrupted after content started ({}): {message} (target {target}, {delivered} content chunks delivered)", kind.metric_label())]
pub struct StreamInterrupted {
    /// How it broke.
    pub kind: Interruption,
    /// Details (the provider's in-band message, or the transport error).
    pub message: String,
    /// The upstream class behind an in-band error (`overloaded`, `server_error`, ...).
    pub upstream_class: Option<ErrorClass>,
    /// `provider/model` that was streaming.
    pub target: Arc<str>,
    /// Content chunks the caller received before the break.
    pub delivered: u64,
}

impl StreamInterrupted {
    /// Always [`ErrorClass::StreamInterrupted`].
    pub fn class(&self) -> ErrorClass {
        ErrorClass::StreamInterrupted
    }
}
