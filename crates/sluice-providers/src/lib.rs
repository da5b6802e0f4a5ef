//! Provider wire formats and adapters for Sluice.
//!
//! - [`ChatRequest`], [`ChatResponse`] and [`ChatChunk`] are the canonical request/response types:
//!   OpenAI Chat Completions, with every unknown field kept in an `extra` map so tools,
//!   `response_format`, `logprobs` and future fields pass through untouched.
//! - [`Adapter`] is what a provider implements: build the HTTP request, parse a response, parse
//!   an error body into an [`UpstreamError`] (classified with `sluice_core::classify`), and
//!   create a [`StreamDecoder`] that turns SSE events into canonical [`StreamEvent`]s.
//!   [`OpenAiAdapter`] is the OpenAI implementation. Adding a provider adds one adapter file and
//!   touches nothing in the retry, limiter or breaker code.
//! - [`AnthropicAdapter`] speaks Anthropic Messages, translating to and from the canonical types;
//!   [`to_anthropic_request`], [`from_anthropic_request`], [`to_anthropic_response`] and
//!   [`AnthropicStreamEncoder`] are the same translation for the gateway's `POST /v1/messages`
//!   (the field-by-field table is in the `anthropic` module's source docs).
//! - [`Endpoint`] is one configured provider: name, base URL, [`ApiKey`] and adapter.
//! - [`build_http_client`] makes the one pooled HTTP client (reqwest + rustls) every call shares.

mod adapter;
mod anthropic;
mod error;
mod http_client;
mod openai;
mod secret;
mod wire;

pub use adapter::{Adapter, Endpoint, StreamDecoder, StreamEvent};
pub use anthropic::{
    ANTHROPIC_VERSION, AnthropicAdapter, AnthropicStreamEncoder, DEFAULT_MAX_TOKENS,
    TranslateError, anthropic_error_body, anthropic_error_type, from_anthropic_request,
    to_anthropic_request, to_anthropic_response,
};
pub use error::{UpstreamError, transport_error};
pub use http_client::{HttpClientError, build_http_client};
pub use openai::OpenAiAdapter;
pub use secret::ApiKey;
pub use wire::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Delta, Message, StreamOptions, Usage,
};
