//! `sluice-mock`: a fake LLM provider speaking OpenAI Chat Completions and Anthropic Messages,
//! with fault injection — the test double for Sluice's end-to-end tests, benchmarks and
//! `sluice demo`.
//!
//! # Main types
//!
//! - [`MockServer`] — a running mock on a TCP port ([`MockServer::start`] binds `127.0.0.1:0`);
//!   [`MockServer::base_url`] is the OpenAI `base_url` to point a client at (an Anthropic
//!   client takes `http://{addr}`, see [`MockServer::addr`]).
//! - [`MockConfig`] — chunk count, first-token delay, chunk gap, context window, random fault
//!   probabilities and their seed, rate limits (`rpm`, `tpm`). It is also the `sluice mock`
//!   command line (`clap::Args`).
//! - [`MockStats`] — counters (`requests`, `ok`, `in_flight`, `cancelled`, `by_outcome`,
//!   `by_api`, `rate_limited`, `tokens_admitted`), read with [`MockServer::stats`] or
//!   `GET /stats`.
//! - [`mock_text`] / [`chunk_text`] — the exact content every successful answer carries, so
//!   tests can assert that a streamed answer arrived whole, in order and exactly once.
//! - [`TOOL_ARGUMENTS`] / [`tool_fragments`] — the arguments of every `tool` step answer and
//!   the pieces a streamed one arrives in.
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
//! - `POST /v1/chat/completions` — OpenAI Chat Completions, plain or `"stream": true`
//!   (role-only preamble, one chunk per [`chunk_text`], a finish chunk, the usage chunk when
//!   `stream_options.include_usage`, then `data: [DONE]`). Responses carry
//!   `x-request-id: req_mock_<n>`.
//! - `POST /v1/messages` — Anthropic Messages. Requires the `anthropic-version` header and a
//!   body with `model`, a positive integer `max_tokens` and a non-empty `messages` array of
//!   `user`/`assistant` turns (string or block content); otherwise a 400
//!   `{"type":"error","error":{"type":"invalid_request_error",..}}`. API keys are not checked.
//!   A plain answer is a `message` (`msg_mock_<n>`, one `text` block with [`mock_text`],
//!   `stop_reason: "end_turn"`, `usage.input_tokens` estimated as characters / 4); a stream is
//!   `message_start`, `content_block_start`, `ping`, one `content_block_delta` `text_delta`
//!   per [`chunk_text`], `content_block_stop`, `message_delta`, `message_stop`, each as
//!   `event: NAME\ndata: JSON\n\n` flushed on its own. Responses carry
//!   `request-id: req_mock_<n>`.
//! - `GET /v1/models`, `GET /stats`, `POST /stats/reset` (zeroes counters, scenario counters,
//!   re-seeds the random draw and refills the rate-limit buckets). Anything else is a 404 in
//!   OpenAI's error format.
//!
//! Both completion endpoints run on one fault engine: the same scripts, scenario counters,
//! random draw and [`MockStats`] (`by_api` splits the requests per endpoint); only the wire
//! rendering differs. A script is counted per (scenario, script) whichever endpoint an
//! attempt uses, so a gateway that fails over from one dialect to the other still walks one
//! script.
//!
//! # Faults
//!
//! A request header `x-sluice-mock-fault: <script>` scripts what the k-th request carrying that
//! script (per `x-sluice-mock-scenario`) gets. A script is a comma-separated list of
//! `NAME[:ARG][*N]` steps; after the last step requests are answered normally. "Head" below is
//! the OpenAI role chunk, or Anthropic's `message_start`, `content_block_start` and `ping`:
//!
//! | step | OpenAI (`/v1/chat/completions`) | Anthropic (`/v1/messages`) |
//! |---|---|---|
//! | `ok` | normal answer | normal answer |
//! | `429`, `429:ra=S`, `429:ms=M` | 429 `rate_limit_exceeded`; no hint / `retry-after: S` / `retry-after-ms: M` + `retry-after: ceil(M/1000)` | 429 `rate_limit_error`, the same hint headers¹, plus `anthropic-ratelimit-requests-limit: 60`, `-remaining: 0`, `-reset: <RFC 3339 now + hint>` |
//! | `quota` | 429 `insufficient_quota` | 400 `invalid_request_error` "Your credit balance is too low ..." |
//! | `401` | `invalid_api_key` | `authentication_error` "invalid x-api-key" |
//! | `400`, `404` | generic `invalid_request_error`, `model_not_found` | `invalid_request_error`, `not_found_error` "model: M" |
//! | `context` | 400 `context_length_exceeded` | 400 `invalid_request_error` "prompt is too long: N tokens > M maximum" |
//! | `policy` | 400 `content_policy_violation` | 400 `invalid_request_error` "Output blocked by content filtering policy" |
//! | `500`, `502`, `503`, `504` | OpenAI `server_error` bodies | `api_error` "Internal server error", `api_error`, `overloaded_error`, `timeout_error` |
//! | `529` | Anthropic-style `overloaded_error` | `overloaded_error` "Overloaded" |
//! | `reset` | TCP connection closed (RST) before any response byte | the same |
//! | `cut[:N]` | stream: head + N chunks, then the connection is aborted; plain: 200 with a truncated body | the same (no `message_stop`) |
//! | `stall[:N]` | stream: head + N chunks, then silence; plain: `stall:0` never answers, otherwise a 200 with half a body then silence | the same |
//! | `inband[:TYPE]` | stream: 200 and a first event `data: {"error":{..,"type":TYPE}}` (default `server_error`); plain: 500 | stream: 200 and a first event `event: error` / `{"type":"error","error":{"type":TYPE,..}}` (default `overloaded_error`); plain: 500 `api_error` |
//! | `inband_after:N[:TYPE]` | stream: head + N chunks, then the in-band error; plain: 500 | the same |
//! | `delay:MS` | normal answer after an MS first-token delay | the same |
//! | `chunks:N` | normal answer with N chunks | the same |
//! | `tool[:NAME]` | one tool call instead of text (below) | one `tool_use` block instead of text (below) |
//!
//! ¹ Anthropic documents only `retry-after`; the mock also sends `retry-after-ms` for `ms=`,
//! so sub-second hints stay exact (a client reading only `retry-after` waits the rounded-up
//! seconds). Without a hint the `-reset` timestamp is the current second.
//!
//! `cut` and `stall` without N stop halfway (`chunks / 2`). A script that does not parse is
//! answered 400 naming the bad step. Requests without the header draw random faults from the
//! `p_*` probabilities of [`MockConfig`] with a seeded SplitMix64 (one draw per request, either
//! endpoint), rendered in the request's dialect. A `context_limit` turns oversized prompts
//! (characters / 4) into the dialect's 400 context error.
//!
//! # Rate limits
//!
//! With [`MockConfig::rpm`] and/or [`MockConfig::tpm`] (`--rpm`, `--tpm`) the mock enforces a
//! provider's limits itself, on both endpoints together: one token bucket per limited axis,
//! holding one minute's worth, refilled continuously (on the tokio clock, so paused-time tests
//! control it), starting full. A request asks for 1 request and `prompt estimate + max_tokens`
//! tokens — how OpenAI counts TPM at admission — where the prompt estimate is the characters /
//! 4 above and `max_tokens` is OpenAI's `max_completion_tokens` (else `max_tokens`),
//! Anthropic's `max_tokens`, or, when absent, the answer's chunk count. It is admitted only
//! when every limited bucket holds enough; then both are debited and the cost is added to
//! [`MockStats::tokens_admitted`]. Otherwise nothing is debited and the answer is a 429:
//!
//! | | OpenAI | Anthropic |
//! |---|---|---|
//! | body | `type` `requests` or `tokens`, `code` `rate_limit_exceeded`, "Rate limit reached for M in organization org-sluice-mock on tokens per min (TPM): Limit L, Used U, Requested R. Please try again in 644ms. Visit ..." | `rate_limit_error`, "This request would exceed the rate limit for your organization (org-sluice-mock) of 60,000 tokens per minute. ..." |
//! | hint | `retry-after` (seconds, rounded up) and `retry-after-ms`: the time until every bucket holds what the request asks for | the same |
//!
//! The error names the axis that needs the longer wait. A request asking for more tokens than
//! the whole token bucket gets OpenAI's "Request too large ... on tokens per min (TPM): Limit
//! L, Requested R. ..." (Anthropic: `rate_limit_error`) and no hint, since waiting cannot help.
//! A rejection is counted as outcome `429_limit` and in [`MockStats::rate_limited`], apart
//! from scripted and random `429`s.
//!
//! Every answer of a mock with limits — success, fault or 429 — carries the bucket state
//! after the request: OpenAI `x-ratelimit-limit-requests`, `-remaining-requests`,
//! `-reset-requests` and the same for `-tokens` (limits and remaining as integers, remaining
//! rounded down; reset = time until the bucket is full again as a Go duration, `1.2s`,
//! `6m0s`); Anthropic `anthropic-ratelimit-requests-limit`, `-remaining`, `-reset` and the same
//! for `tokens` (reset as an RFC 3339 time, rounded up to the second). Only limited axes get
//! headers. [`MockConfig::no_limit_headers`] (`--no-limit-headers`) leaves them out (429s keep
//! their hints), to measure a client's own limiter apart from what it learns from them.
//!
//! Limits apply before the random fault draw (an admitted request may still draw a fault; a
//! rejected one draws nothing). A request carrying `x-sluice-mock-fault` bypasses them — it is
//! neither checked nor debited, though it reports the buckets — so scripted tests stay
//! deterministic whatever the limits; a scripted Anthropic `429` keeps its own
//! `anthropic-ratelimit-requests-*` headers.
//!
//! # Tool calls
//!
//! The `tool[:NAME]` step answers with one call to NAME (default `get_weather`, letters,
//! digits, `_` and `-`) whose arguments are [`TOOL_ARGUMENTS`] (`{"location":"Paris"}`),
//! whether or not the request declared `tools`. It counts as `ok` in [`MockStats`] and as
//! `tool` in `by_outcome`; usage reports one output token per [`tool_fragments`] piece.
//!
//! - OpenAI plain: `message.content: null`, `tool_calls: [{"id":"call_mock_<n>","type":
//!   "function","function":{"name":NAME,"arguments":TOOL_ARGUMENTS}}]`, `finish_reason:
//!   "tool_calls"`. Stream: a preamble chunk with the role and the call's first fragment
//!   (`index`, `id`, `type`, `function.name`, `arguments: ""`), one chunk per
//!   [`tool_fragments`] piece, a `finish_reason: "tool_calls"` chunk, the usage chunk if asked,
//!   `[DONE]`.
//! - Anthropic plain: `content: [{"type":"tool_use","id":"toolu_mock_<n>","name":NAME,
//!   "input":{"location":"Paris"}}]`, `stop_reason: "tool_use"`. Stream: `content_block_start`
//!   with the `tool_use` block and `input: {}`, an empty `input_json_delta`, one per
//!   [`tool_fragments`] piece, `content_block_stop`, `message_delta` with `stop_reason:
//!   "tool_use"`, `message_stop`.

mod anthropic;
mod config;
mod dialect;
mod limits;
mod script;
mod server;
mod stats;
mod wire;

pub use crate::{
    config::MockConfig,
    server::MockServer,
    stats::MockStats,
    wire::{TOOL_ARGUMENTS, chunk_text, mock_text, tool_fragments},
};
