//! Pure resilience policy for LLM API calls. Nothing here performs I/O or reads a clock:
//! every function that depends on time takes `now` as an argument, so the same code runs in
//! production and under `#[tokio::test(start_paused = true)]`.
//!
//! - [`ErrorClass`] is the one classification table (architecture "Error classes"): each class
//!   carries its [`Disposition`] (retry the same target? fall back? trip the breaker?).
//!   [`classify`] maps an HTTP status plus structured error fields ([`ErrorSignal`]) to a class.
//! - [`Backoff`] computes exponential backoff with full jitter from a [`RandomSource`]
//!   ([`SplitMix64`] is the seeded default).
//! - [`ServerHints`] holds what a provider told us about when to retry (`retry-after-ms`,
//!   `retry-after`, `x-should-retry`, `x-ratelimit-reset-*`), parsed by [`ServerHints::from_headers`].
//! - [`RetryPolicy`] bundles the per-call knobs with their defaults (one place for each default);
//!   [`RetryPolicy::decide`] turns a classified failure into a [`RetryDecision`].
//! - [`model_info`] is the model registry: context window, maximum output and tokenizer
//!   [`Encoding`] of well-known models, by exact name or family prefix.
//! - [`Deadline`] is the one total deadline of a call, spanning every attempt and sleep.
//! - [`RetryBudget`] caps retries on a target at a [`BudgetConfig::ratio`] of its real traffic
//!   plus a small floor, over a rolling window, so an outage cannot become a retry storm.
//! - [`CircuitBreaker`] tracks one target's health (closed → open → half-open, see
//!   [`BreakerConfig`]) and answers each call with an [`Admission`], reporting each
//!   [`Transition`] of its [`BreakerState`].
//! - [`Observer`] receives a [`CallEvent`] for every attempt, retry, fallback and commit, so
//!   metrics and logs live outside the policy.
//! - [`SseParser`] is an incremental Server-Sent-Events parser that accepts any split of the
//!   byte stream and yields [`SseItem`]s.

mod backoff;
mod breaker;
mod budget;
mod class;
mod deadline;
mod hints;
mod models;
mod observer;
mod policy;
mod sse;

pub use backoff::{Backoff, RandomSource, SplitMix64};
pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker, Transition};
pub use budget::{BudgetConfig, RetryBudget};
pub use class::{Disposition, ErrorClass, ErrorSignal, FallbackRule, classify};
pub use deadline::Deadline;
pub use hints::{ServerHints, parse_go_duration};
pub use models::{Encoding, ModelInfo, model_info};
pub use observer::{CallEvent, NoopObserver, Observer};
pub use policy::{GiveUpReason, PolicyError, RetryDecision, RetryPolicy};
pub use sse::{SseError, SseEvent, SseItem, SseParser};
