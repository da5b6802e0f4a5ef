//! `sluice-mock`: an OpenAI-compatible fake provider with fault injection — the test double
//! for Sluice's end-to-end tests, benchmarks and `sluice demo`.
//!
//! # Main types
//!
//! - [`MockServer`] — a running mock on a TCP port ([`MockServer::start`] binds `127.0.0.1:0`);
//!   [`MockServer::base_url`] is the OpenAI `base_url` to point a client at.
//! - [`MockConfig`] — chunk count, first-token delay, chunk gap, context window, random fault
//!   probabilities and their seed. It is also the `sluice mock` command line (`clap::Args`).
//! - [`MockStats`] — counters (`requests`, `ok`, `in_flight`, `cancelled`, `by_outcome`), read
//!   with [`MockServer::stats`] or `GET /stats`.
//! - [`mock_text`] / [`chunk_text`] — the exact content every successful answer carries, so
//!   tests can assert that a streamed answer arrived whole, in order and exactly once.
//!
//! ```
//! use sluice_mock::{MockConfig, MockServer, MockStats, mock_text};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mock = MockServer::start(MockConfig { chunks: 3, ..MockConfig::default() }).await?;
//! // Point an OpenAI client at `mock.base_url()`; send `x-sluice-mock-fault: 429*2` to get two
//! // rate limits before the answer, whose content is always `mock_text(3)`.
//! assert!(mock.base_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(mock_text(3), "the0 quick1 brown2 ");
//! assert_eq!(mock.stats(), MockStats::default());
//! mock.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions` — Chat Completions, plain or `"stream": true` (role-only
//!   preamble, one chunk per [`chunk_text`], a finish chunk, the usage chunk when
//!   `stream_options.include_usage`, then `data: [DONE]`).
//! - `GET /v1/models`, `GET /stats`, `POST /stats/reset` (zeroes counters, scenario counters
//!   and re-seeds the random draw). Anything else is a 404 in OpenAI's error format.
//!
//! # Faults
//!
//! A request header `x-sluice-mock-fault: <script>` scripts what the k-th request carrying that
//! script (per `x-sluice-mock-scenario`) gets. A script is a comma-separated list of
//! `NAME[:ARG][*N]` steps; after the last step requests are answered normally:
//!
//! | step | effect |
//! |---|---|
//! | `ok` | normal answer |
//! | `429`, `429:ra=S`, `429:ms=M` | 429 `rate_limit_exceeded`; no hint / `retry-after: S` / `retry-after-ms: M` + `retry-after: ceil(M/1000)` |
//! | `quota` | 429 `insufficient_quota` |
//! | `401`, `400`, `404` | `invalid_api_key`, generic `invalid_request_error`, `model_not_found` |
//! | `context`, `policy` | 400 `context_length_exceeded`, 400 `content_policy_violation` |
//! | `500`, `502`, `503`, `504` | OpenAI `server_error` bodies |
//! | `529` | Anthropic-style `overloaded_error` |
//! | `reset` | TCP connection closed (RST) before any response byte |
//! | `cut[:N]` | stream: preamble + N chunks, then the connection is aborted; plain: 200 with a truncated body |
//! | `stall[:N]` | stream: preamble + N chunks, then silence; plain: `stall:0` never answers, otherwise a 200 with half a body then silence |
//! | `inband[:TYPE]` | stream: 200 and a first event `data: {"error":{..,"type":TYPE}}`; plain: 500 |
//! | `inband_after:N[:TYPE]` | stream: preamble + N chunks, then the in-band error; plain: 500 |
//! | `delay:MS` | normal answer after an MS first-token delay |
//! | `chunks:N` | normal answer with N chunks |
//!
//! `cut` and `stall` without N stop halfway (`chunks / 2`). A script that does not parse is
//! answered 400 naming the bad step. Requests without the header draw random faults from the
//! `p_*` probabilities of [`MockConfig`] with a seeded SplitMix64. A `context_limit` turns
//! oversized prompts (characters / 4) into 400 `context_length_exceeded`.

mod config;
mod script;
mod server;
mod stats;
mod wire;

pub use crate::{
    config::MockConfig,
    server::MockServer,
    stats::MockStats,
    wire::{chunk_text, mock_text},
};
