//! Anthropic Messages (`POST {base_url}/v1/messages`) and the OpenAI <-> Anthropic translation.
//!
//! Sluice's canonical format is OpenAI Chat Completions ([`ChatRequest`], [`ChatResponse`],
//! [`ChatChunk`]). This module translates in both directions:
//!
//! - **Sluice calling Anthropic** ([`AnthropicAdapter`]): canonical request → Anthropic request
//!   ([`to_anthropic_request`]), Anthropic message / SSE / error body → canonical response,
//!   chunks and classified [`UpstreamError`]s.
//! - **Anthropic clients calling Sluice** (the gateway's `POST /v1/messages`): Anthropic request
//!   → canonical ([`from_anthropic_request`]), canonical response → Anthropic message
//!   ([`to_anthropic_response`]), canonical chunks → Anthropic SSE events
//!   ([`AnthropicStreamEncoder`]), errors → Anthropic error bodies ([`anthropic_error_body`]).
//!
//! A request field is either mapped, dropped for a stated reason, or rejected with a
//! [`TranslateError`] naming it; nothing is dropped silently. A field whose value is `null` is
//! treated as absent in both directions (the OpenAI SDKs' `model_dump()` writes `null` for every
//! unset field, e.g. `"audio": null, "function_call": null` on an echoed assistant message).
//!
//! # OpenAI → Anthropic request ([`to_anthropic_request`])
//!
//! | OpenAI field | Anthropic | Notes |
//! |---|---|---|
//! | `model` | `model` | the executor already put the provider's model name here |
//! | `messages` | `messages` + `system` | see "Messages" below |
//! | `max_completion_tokens`, `max_tokens` | `max_tokens` | the first one set, else [`DEFAULT_MAX_TOKENS`] (Anthropic requires a value) |
//! | `stream` | `stream: true` | the adapter's `stream` argument decides, not the field |
//! | `temperature` | `temperature` | clamped to `0..=1` (OpenAI allows `0..=2`); clamping rather than scaling keeps the usual values 0, 0.2, 0.7, 1 identical |
//! | `top_p` | `top_p` | |
//! | `stop` (string or array) | `stop_sequences` (array) | |
//! | `tools[].function.{name, description, parameters}` | `tools[].{name, description, input_schema}` | missing `parameters` → `{"type":"object","properties":{}}`; `strict` is dropped (classic Messages has no strict mode) |
//! | `tool_choice` `auto` / `required` / `none` / `{function}` | `{type: auto}` / `{type: any}` / `{type: none}` / `{type: tool, name}` | |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` | `{"type":"auto", ...}` when no `tool_choice`; dropped when there are no tools or the choice is `none`; `true` is the default and dropped |
//! | `user` | `metadata.user_id` | |
//! | `stream_options` | dropped | Anthropic always reports usage in a stream; the adapter always emits the usage chunk and the executor decides whether the caller sees it |
//! | `seed` | dropped | a best-effort determinism hint that OpenAI does not guarantee either; Anthropic has none |
//! | `store`, `metadata` | dropped | OpenAI-side storage of the completion and its tags; no effect on the answer |
//! | `service_tier` `"auto"` / `"default"` | dropped | the default; any other tier is rejected |
//! | `n: 1`, `logprobs: false`, `top_logprobs: 0`, `logit_bias: {}`, `presence_penalty: 0`, `frequency_penalty: 0`, `response_format: {"type":"text"}`, `modalities: ["text"]` | dropped | these values ask for exactly what Anthropic does anyway |
//! | `n > 1` | **rejected** | one choice per Anthropic request |
//! | `logprobs: true`, `top_logprobs > 0`, non-empty `logit_bias` | **rejected** | Anthropic returns no log-probabilities and has no token bias |
//! | non-zero `presence_penalty` / `frequency_penalty` | **rejected** | no Anthropic equivalent |
//! | `response_format` json_object / json_schema | **rejected** | no 1:1 equivalent in classic Messages; faking it with a forced tool would change the response shape |
//! | `audio`, `modalities` other than text, `prediction` | **rejected** | text-only API |
//! | `reasoning_effort` | **rejected** | Anthropic's `thinking` needs an explicit budget and changes sampling rules |
//! | any other field (`functions`, `function_call`, `web_search_options`, future fields) | **rejected** | never dropped silently |
//!
//! Messages:
//! - `system` and `developer` messages become the top-level `system` string: every text piece
//!   (string content, or each text part) in order, joined with `"\n\n"`. System messages in the
//!   middle of the conversation are hoisted too: Anthropic has no system turn, and hoisting keeps
//!   the instruction an instruction instead of turning it into user text. Their position is lost.
//! - `user` text parts → `text` blocks; `image_url` parts → `image` blocks (`data:<mime>;base64,`
//!   URLs → `base64` source, `http(s)` URLs → `url` source; `detail` is dropped, Anthropic has no
//!   such knob). `input_audio` and `file` parts are rejected.
//! - `assistant` content (string, `text` / `refusal` parts, and a `refusal` string) → `text`
//!   blocks, then `tool_calls` → `tool_use` blocks whose `input` is `function.arguments` parsed
//!   as JSON. Arguments that are not a JSON object are rejected (Anthropic requires an object);
//!   empty arguments mean `{}`. `annotations` (output citations echoed back) are dropped.
//! - `tool` messages → `tool_result` blocks in a `user` turn (string content stays a string,
//!   text parts become text blocks).
//! - `name` on any message is dropped: Anthropic has no participant names.
//! - The `function` role, `function_call` and `audio` on messages are rejected.
//! - Consecutive turns of the same Anthropic role (e.g. several `tool` results followed by a user
//!   message) are merged into one message, and in a `user` turn every `tool_result` block is
//!   moved before the other blocks (Anthropic requires tool results first). Empty text blocks are
//!   left out (Anthropic rejects them); a turn left without any block is sent with `content: ""`
//!   so that Anthropic, not Sluice, decides whether that is valid (it is for a final assistant
//!   prefill). A turn that is a single text block is sent as a plain string.
//! - The first message is not forced to be `user`; Anthropic decides.
//!
//! # Anthropic → OpenAI response, stream and errors ([`AnthropicAdapter`])
//!
//! - `text` blocks are concatenated into `message.content` (`null` when there are none),
//!   `tool_use` blocks become `tool_calls` with `arguments` = the JSON text of `input`.
//! - `thinking` / `redacted_thinking` blocks and deltas are dropped: they are the model's
//!   scratchpad, not answer content, and OpenAI clients have no standard field for them. Other
//!   server-side blocks (`server_tool_use`, `web_search_tool_result`, ...) are dropped too.
//! - `stop_reason`: `end_turn` / `stop_sequence` → `stop`, `max_tokens` /
//!   `model_context_window_exceeded` / `pause_turn` → `length`, `tool_use` → `tool_calls`,
//!   `refusal` → `content_filter`, anything else → `stop`.
//! - usage: `prompt_tokens = input_tokens + cache_creation_input_tokens +
//!   cache_read_input_tokens`, `completion_tokens = output_tokens`,
//!   `prompt_tokens_details.cached_tokens = cache_read_input_tokens` when non-zero.
//! - Stream: `message_start` → one role-only chunk; text → content chunks; `tool_use` block start
//!   → a tool-call chunk with the tool's ordinal (0, 1, ... over tool calls, not the content
//!   block index) and empty arguments; non-empty `input_json_delta` → argument chunks;
//!   `message_delta` → the finish chunk (once); `message_stop` → the usage-only chunk
//!   (`choices: []`) and then [`StreamEvent::Done`] (preceded by a `stop` finish chunk if no
//!   `message_delta` carried a stop reason). The usage chunk is emitted at
//!   `message_stop` rather than at `message_delta` because a message may carry several
//!   `message_delta`s (cumulative usage, overwritten, not added) and a canonical stream must have
//!   exactly one usage chunk. `ping`, events with empty data and unknown event types
//!   (Anthropic may add new ones) are ignored; `event: error` becomes [`StreamEvent::Error`], classified with no status.
//! - Errors: `{"type":"error","error":{"type","message"},"request_id"}` (or any non-JSON body,
//!   e.g. a Cloudflare 413 page) are classified by `sluice_core::classify` on status, `error.type`
//!   and message; hints come from the headers (`retry-after`, `anthropic-ratelimit-*`,
//!   `request-id`), with the body's `request_id` as the fallback request id.
//!
//! # Anthropic → OpenAI request ([`from_anthropic_request`])
//!
//! | Anthropic field | canonical (OpenAI) | Notes |
//! |---|---|---|
//! | `model`, `messages` | `model`, `messages` | |
//! | `max_tokens` (required) | `max_tokens` | missing → rejected, as Anthropic would |
//! | `system` (string or text blocks) | first message, role `system` | blocks become text parts |
//! | `stop_sequences` | `stop` | |
//! | `temperature`, `top_p` | same | |
//! | `stream` | `stream` + `stream_options.include_usage: true` | usage is needed for the final `message_delta` |
//! | `tools[]` (custom tools) | `tools[]` function tools | server tools (`web_search_...`, `bash_...`, ...) are rejected |
//! | `tool_choice` `auto` / `any` / `none` / `tool` | `auto` / `required` / `none` / `{function}` | `disable_parallel_tool_use: true` → `parallel_tool_calls: false` |
//! | `metadata.user_id` | `user` | other metadata keys are rejected |
//! | `thinking: {"type":"disabled"}` | dropped | the default |
//! | `thinking` (enabled), `top_k`, any other field | **rejected** | no OpenAI equivalent |
//!
//! Blocks: `text` → text parts; `image` → `image_url` parts (`base64` → `data:` URL); `tool_use`
//! → assistant `tool_calls` with `arguments` = JSON text of `input`; `tool_result` → `tool`
//! messages placed before the rest of that user turn. A `tool_result` with `is_error: true`
//! becomes a string prefixed with `"Error: "` (OpenAI tool messages have no error flag); images
//! inside a `tool_result` are moved to a user message right after the tool messages (OpenAI tool
//! messages carry text only). `thinking` / `redacted_thinking` blocks are dropped (they only
//! make sense to an Anthropic model, and the canonical format has no place for signatures).
//! `cache_control` and `citations` on blocks, system blocks and tools are dropped: prompt
//! caching is an optimisation with no OpenAI field, and an OpenAI target would reject the key.
//! `document` and server-tool blocks are rejected.
//!
//! An Anthropic request sent through [`from_anthropic_request`] and back through
//! [`to_anthropic_request`] comes back equal except for these normalizations: consecutive
//! same-role messages merged, a single text block written as a string (and a string system
//! prompt from system blocks joined with `"\n\n"`), `is_error: false`,
//! `disable_parallel_tool_use: false`, `stream: false`, `cache_control`, `citations` and
//! `thinking` blocks removed, `is_error: true` turned into the `"Error: "` prefix, and images
//! inside tool results moved after them.
//!
//! # OpenAI → Anthropic response and stream ([`to_anthropic_response`], [`AnthropicStreamEncoder`])
//!
//! `finish_reason` `stop` → `end_turn`, `length` → `max_tokens`, `tool_calls` / `function_call`
//! → `tool_use`, `content_filter` → `refusal` (also when the message carried a `refusal`),
//! anything else → `end_turn`. Usage: `input_tokens = prompt_tokens - cached_tokens`,
//! `cache_read_input_tokens = cached_tokens` (when non-zero), `output_tokens =
//! completion_tokens`. Only `choices[0]` is represented. Tool-call arguments that are not a JSON
//! object (a model bug) become `input: {}` in a non-streaming response; a stream forwards them
//! verbatim as `input_json_delta`s.

mod request;
mod response;
mod reverse;
mod stream;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use sluice_core::{ErrorClass, ErrorSignal, ServerHints, classify};

use crate::{Adapter, ChatRequest, ChatResponse, Endpoint, StreamDecoder, UpstreamError};
#[cfg(doc)]
use crate::{ChatChunk, StreamEvent};

pub use request::{DEFAULT_MAX_TOKENS, to_anthropic_request};
pub use reverse::{
    AnthropicStreamEncoder, anthropic_error_body, anthropic_error_type, from_anthropic_request,
    to_anthropic_response,
};

/// The `anthropic-version` header value every request carries (the SDKs hard-code it too).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Error messages longer than this are cut: a misbehaving upstream must not make Sluice's own
/// errors and logs huge.
const MAX_ERROR_MESSAGE: usize = 2000;

/// A request that cannot be expressed in the other dialect. `field` names the offending field
/// (a JSON path such as `logprobs` or `messages[3].tool_calls[0].function.arguments`); the
/// `Display` text is the whole sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TranslateError {
    /// The offending field.
    pub field: String,
    /// A full sentence naming the field and saying why.
    pub message: String,
}

impl TranslateError {
    /// An OpenAI field with no Anthropic equivalent.
    fn unsupported(field: impl Into<String>, why: &str) -> Self {
        let field = field.into();
        let message = format!("field `{field}` cannot be sent to an Anthropic model: {why}");
        Self { field, message }
    }

    /// An Anthropic field with no OpenAI equivalent.
    fn untranslatable(field: impl Into<String>, why: &str) -> Self {
        let field = field.into();
        let message =
            format!("field `{field}` of an Anthropic request cannot be translated: {why}");
        Self { field, message }
    }

    /// A field whose value is malformed (`what` completes "field `x` ...").
    fn invalid(field: impl Into<String>, what: &str) -> Self {
        let field = field.into();
        let message = format!("field `{field}` {what}");
        Self { field, message }
    }
}

/// The Anthropic Messages wire protocol.
#[derive(Debug, Default, Clone, Copy)]
pub struct AnthropicAdapter;

impl Adapter for AnthropicAdapter {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn build(
        &self,
        http: &reqwest::Client,
        endpoint: &Endpoint,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let body = to_anthropic_request(req, stream).map_err(|e| {
            UpstreamError::new(ErrorClass::BadRequest, e.to_string()).with_source(e)
        })?;
        let body = serde_json::to_vec(&body).map_err(|e| {
            UpstreamError::new(ErrorClass::BadRequest, "request body cannot be serialized")
                .with_source(e)
        })?;
        let mut builder = http
            .post(messages_url(endpoint))
            .header("anthropic-version", ANTHROPIC_VERSION)
            .header(CONTENT_TYPE, "application/json")
            .header(
                ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(body);
        if let Some(key) = &endpoint.api_key {
            let mut value = HeaderValue::try_from(key.expose()).map_err(|_| {
                UpstreamError::new(
                    ErrorClass::Auth,
                    format!(
                        "the API key of provider {} contains characters not allowed in a header",
                        endpoint.name
                    ),
                )
            })?;
            value.set_sensitive(true);
            builder = builder.header("x-api-key", value);
        }
        Ok(builder)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        response::parse_message(body)
    }

    fn parse_error(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> UpstreamError {
        let (mut err, request_id) = error_from_body(Some(status), body);
        err.hints = ServerHints::from_headers(headers, now);
        if err.hints.request_id.is_none() {
            err.hints.request_id = request_id;
        }
        err
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(stream::AnthropicStreamDecoder::default())
    }
}

/// `{base_url}/v1/messages`, or `{base_url}/messages` when the base URL already ends in `/v1`.
fn messages_url(endpoint: &Endpoint) -> String {
    if endpoint.base_url.trim_end_matches('/').ends_with("/v1") {
        endpoint.url("messages")
    } else {
        endpoint.url("v1/messages")
    }
}

/// Builds a classified error from an Anthropic error body (`status: None` for the data of an
/// in-band `event: error`), plus the body's `request_id`.
fn error_from_body(status: Option<u16>, body: &[u8]) -> (UpstreamError, Option<String>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let text = |v: Option<&Value>, name: &str| -> Option<String> {
        v?.get(name)?.as_str().map(str::to_owned)
    };
    let provider_type = text(error, "type");
    let request_id = text(parsed.as_ref(), "request_id");
    let mut message = match (error, text(error, "message")) {
        (_, Some(m)) => m,
        (Some(Value::String(s)), None) => s.clone(),
        _ if body.is_empty() => match status {
            Some(s) => format!("HTTP {s} with an empty body"),
            None => "error event with no message".to_owned(),
        },
        // Not an Anthropic error body (a proxy's HTML page, plain text): keep it readable.
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    };
    truncate(&mut message, MAX_ERROR_MESSAGE);
    let class = classify(&ErrorSignal {
        status,
        error_type: provider_type.as_deref(),
        code: None,
        message: &message,
    });
    let err = UpstreamError {
        class,
        status,
        message,
        provider_type,
        provider_code: None,
        hints: ServerHints::default(),
        source: None,
    };
    (err, request_id)
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason` (reference §4.3).
fn finish_reason_from_anthropic(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" | "pause_turn" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, and anything new
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason` (reference §4.3).
fn stop_reason_from_openai(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Seconds since the Unix epoch, for `created`.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
