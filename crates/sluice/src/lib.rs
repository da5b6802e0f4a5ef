//! Sluice: calls to LLM provider APIs that survive rate limits, overload, timeouts, dropped
//! connections and stalled streams.
//!
//! - [`Client`] is the entry point. [`Client::chat`] returns a whole [`ChatResponse`];
//!   [`Client::chat_stream`] returns a [`ChatStream`]. Both run the one executor: route
//!   resolution ([`Client::resolve`] → a [`Route`] of [`Target`]s), the attempt loop with
//!   classification, full-jitter backoff, server hints and one deadline per call.
//! - The **commit point** is the only difference between the two: a stream is committed at its
//!   first content event. Every failure before it is retried exactly like a non-streaming
//!   failure; after it, a failure ends the stream with one [`StreamInterrupted`] item and is never
//!   replayed.
//! - [`Error`] is what a call ends with; [`CallFailure`] lists every attempt ([`AttemptRecord`])
//!   and keeps the last provider error as its source.
//! - Per target, the executor also consults shared state: a circuit breaker and a retry budget
//!   ([`TargetStatus`]), the context guard ([`ContextPolicy`]; what it dropped is reported as
//!   [`TruncationInfo`]), and the proactive [`Limiter`] (requests/min and tokens/min buckets in
//!   a [`RateLimitStore`]: [`LocalStore`] here, Redis in `sluice-redis`), reserving before each
//!   attempt and reconciling with the usage after ([`Reservation`]).
//! - [`Answer`] and [`CallInfo`] are what [`Client::execute`] returns to callers (the gateway)
//!   that also need to know which target answered, after how many attempts, and where the time
//!   went.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice::{ApiKey, ChatRequest, Client};
//! let client = Client::builder()
//!     .openai("openai", "https://api.openai.com/v1", ApiKey::from_env("OPENAI_API_KEY"))
//!     .build()?;
//! let answer = client.chat(ChatRequest::user("gpt-4o-mini", "Say hi")).await?;
//! println!("{}", answer.text());
//! # Ok(()) }
//! ```

mod client;
mod context;
mod error;
mod executor;
mod health;
mod limiter;
mod stream;

pub use client::{BuildError, Client, ClientBuilder, Route, Target};
pub use context::TruncationInfo;
pub use error::{AttemptRecord, CallFailure, Error, Interruption, StreamInterrupted};
pub use executor::{Answer, CallInfo, CallOptions};
pub use health::TargetStatus;
pub use limiter::{
    Ask, Grant, LearnedLimits, Levels, LimitError, Limiter, LimiterConfig, Limits, LocalStore,
    RateLimitStore, Reservation, Reservations, StoreError,
};
pub use sluice_core::{
    BreakerConfig, BreakerState, BudgetConfig, CallEvent, ContextPolicy, ErrorClass, NoopObserver,
    Observer, OnOverflow, RandomSource, RetryPolicy, SplitMix64,
};
pub use sluice_providers::{
    Adapter, ApiKey, ChatChunk, ChatRequest, ChatResponse, Endpoint, Message, OpenAiAdapter,
    StreamOptions, Usage,
};
pub use stream::ChatStream;
