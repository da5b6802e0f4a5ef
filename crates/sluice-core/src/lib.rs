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
//! - [`count_text`] and [`TokenCounter`] count tokens offline: exact for OpenAI's
//!   `cl100k_base`/`o200k_base` (vocabularies built in), with the cookbook's chat framing
//!   ([`count_chat`]), and a documented conservative estimate for Anthropic and unknown models.
//! - [`truncate()`] fits a chat into a [`budget`]: keeps system messages and the last user
//!   message, drops the oldest others first (a tool call with its results), and shortens or
//!   fails with an [`Overflow`] when what must stay is still too large.
//! - [`ContextPolicy`] is what the context guard does when a prompt does not fit a window
//!   ([`OnOverflow`]: error, truncate, or fall back to a larger window).
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
//! - [`TokenBucket`] is the rate limiter's bucket (capacity, refill rate, refunds, debits below
//!   zero); [`RateLimitSnapshot::from_headers`] reads a provider's view of its request and token
//!   buckets ([`BucketView`]) from `x-ratelimit-*` / `anthropic-ratelimit-*` headers.

mod backoff;
mod breaker;
mod bucket;
mod budget;
mod class;
mod context_policy;
mod deadline;
mod hints;
mod models;
mod observer;
mod policy;
mod ratelimit_headers;
mod sse;
mod tokens;
mod truncate;

pub use backoff::{Backoff, RandomSource, SplitMix64};
pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker, Transition};
pub use bucket::TokenBucket;
pub use budget::{BudgetConfig, RetryBudget};
pub use class::{Disposition, ErrorClass, ErrorSignal, FallbackRule, classify};
pub use context_policy::{ContextPolicy, OnOverflow};
pub use deadline::Deadline;
pub use hints::{ServerHints, parse_go_duration};
pub use models::{Encoding, ModelInfo, model_info};
pub use observer::{CallEvent, NoopObserver, Observer};
pub use policy::{GiveUpReason, PolicyError, RetryDecision, RetryPolicy};
pub use ratelimit_headers::{BucketView, RateLimitSnapshot};
pub use sse::{SseError, SseEvent, SseItem, SseParser};
pub use tokens::{
    ChatMessageView, ESTIMATE_ENCODING, ESTIMATE_MARGIN_PERCENT, LARGE_TEXT_BYTES,
    NON_TEXT_PART_TOKENS, REPLY_PRIMING, TOKENS_PER_MESSAGE, TOKENS_PER_NAME, TOKENS_PER_TOOL_CALL,
    Tally, TokenCount, TokenCounter, chat_text_len, count_chat, count_chat_json, count_text,
    warm_up,
};
pub use truncate::{
    DEFAULT_BUFFER, DEFAULT_RESERVED_OUTPUT, Overflow, Shortened, Truncation, WhenTooLarge, budget,
    cut_marker, reserved_output, shorten_text, truncate,
};
