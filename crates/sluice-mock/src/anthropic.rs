//! The Anthropic Messages wire format the mock speaks on `POST /v1/messages`: request
//! validation, the `message` JSON (text or one `tool_use` block), the named SSE events of
//! `shared/reference/provider-wire-formats.md` §2.3 and the error bodies and statuses of §2.4.
//!
//! As for OpenAI, the content is [`chunk_text`](crate::chunk_text) output or the fixed tool
//! arguments, so only the echoed model and tool names need escaping (once per request).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::limits::{Axis, Rejection, with_commas};
use crate::script::Step;
use crate::wire::{
    ChatRequest, ErrorContext, Invalid, Kind, TOOL_ARGUMENTS, estimate_tokens, json_string,
    push_chunk_text, tool_fragments,
};

/// The request header Anthropic requires on every call.
pub(crate) const VERSION_HEADER: &str = "anthropic-version";

/// Context window claimed by the `context` step when no `context_limit` is configured.
const DEFAULT_CONTEXT_WINDOW: u64 = 200_000;

/// Requests per minute claimed by the rate-limit headers of a 429.
pub(crate) const RATE_LIMIT_REQUESTS: u64 = 60;

/// The body of a `--rpm` / `--tpm` rejection: 429 `rate_limit_error` with the §2.4 message
/// ("This request would exceed the rate limit for your organization (O) of 40,000 input tokens
/// per minute. ...").
pub(crate) fn limit_error(rejection: &Rejection) -> Bytes {
    let limit = with_commas(rejection.limit.round() as u64);
    let what = match rejection.axis {
        Axis::Requests => "requests",
        Axis::Tokens => "tokens",
    };
    let message = match rejection.retry_after {
        Some(_) => format!(
            "This request would exceed the rate limit for your organization (org-sluice-mock) of \
             {limit} {what} per minute. For details, refer to: \
             https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for \
             current usage. Please reduce the prompt length or the maximum tokens requested, or \
             try again later."
        ),
        None => format!(
            "This request would exceed the rate limit for your organization (org-sluice-mock) of \
             {limit} {what} per minute on its own ({} requested). Please reduce the prompt length \
             or the maximum tokens requested.",
            with_commas(rejection.requested.round() as u64)
        ),
    };
    error_body("rate_limit_error", &message)
}

/// `{"type":"error","error":{"type":..,"message":..}}`.
pub(crate) fn error_body(error_type: &str, message: &str) -> Bytes {
    let body = json!({"type": "error", "error": {"type": error_type, "message": message}});
    Bytes::from(body.to_string())
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid {
        message: message.into(),
        param: None,
    }
}

/// The 400 for a request without `anthropic-version`.
pub(crate) fn missing_version() -> Invalid {
    invalid(format!("{VERSION_HEADER}: header is required"))
}

/// Characters of the text in a `content` value (string or blocks) or a `system` value.
fn content_chars(content: &Value) -> usize {
    match content {
        Value::String(s) => s.chars().count(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|block| {
                let mut n = 0;
                for key in ["text", "name", "thinking"] {
                    if let Some(Value::String(s)) = block.get(key) {
                        n += s.chars().count();
                    }
                }
                if let Some(input) = block.get("input") {
                    n += input.to_string().chars().count();
                }
                if let Some(inner) = block.get("content") {
                    n += content_chars(inner);
                }
                n
            })
            .sum(),
        _ => 0,
    }
}

/// Validates a Messages request body (the fields Anthropic requires, in its error style:
/// `max_tokens: Field required`). The prompt estimate counts `system` and every message's
/// text, tool inputs and tool results.
pub(crate) fn parse_request(body: &[u8]) -> Result<ChatRequest, Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "There was an error parsing the body of your request: {e}"
        ))
    })?;
    let Value::Object(obj) = &value else {
        return Err(invalid("Request body must be a JSON object."));
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => return Err(invalid("model: Field required")),
        Some(Value::String(s)) => (!s.is_empty()).then(|| s.clone()),
        Some(_) => return Err(invalid("model: Input should be a valid string")),
    };
    let max_tokens = match obj.get("max_tokens") {
        None | Some(Value::Null) => return Err(invalid("max_tokens: Field required")),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) if n >= 1 => n as u64,
            Some(_) => {
                return Err(invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ));
            }
            None => return Err(invalid("max_tokens: Input should be a valid integer")),
        },
        Some(_) => return Err(invalid("max_tokens: Input should be a valid integer")),
    };
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => return Err(invalid("messages: Field required")),
        Some(Value::Array(m)) => m,
        Some(_) => return Err(invalid("messages: Input should be a valid list")),
    };
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let mut chars = obj.get("system").map_or(0, content_chars);
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(invalid(format!(
                "messages.{i}: Input should be a valid dictionary"
            )));
        };
        match m.get("role") {
            Some(Value::String(r)) if r == "user" || r == "assistant" => {}
            None => return Err(invalid(format!("messages.{i}.role: Field required"))),
            Some(_) => {
                return Err(invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        }
        match m.get("content") {
            None => return Err(invalid(format!("messages.{i}.content: Field required"))),
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    if !matches!(block.get("type"), Some(Value::String(_))) {
                        return Err(invalid(format!(
                            "messages.{i}.content.{j}: Input should be a content block with a \
                             string `type`"
                        )));
                    }
                }
            }
            Some(_) => {
                return Err(invalid(format!(
                    "messages.{i}.content: Input should be a valid string or a list of content \
                     blocks"
                )));
            }
        }
        chars += m.get("content").map_or(0, content_chars);
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream: Input should be a valid boolean")),
    };
    Ok(ChatRequest {
        model,
        stream,
        include_usage: false,
        prompt_tokens: estimate_tokens(chars),
        max_tokens: Some(max_tokens),
    })
}

/// The status and Anthropic body of an error step (headers are added by the server).
/// Non-error steps get the 500 `api_error`.
pub(crate) fn error_parts(step: &Step, cx: &ErrorContext<'_>) -> (u16, Bytes) {
    let (status, error_type, message): (u16, &str, String) = match step {
        Step::RateLimited { .. } => (
            429,
            "rate_limit_error",
            format!(
                "This request would exceed the rate limit for your organization \
                 (org-sluice-mock) of {RATE_LIMIT_REQUESTS} requests per minute. For details, \
                 refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the \
                 response headers for current usage. Please reduce the prompt length or the \
                 maximum tokens requested, or try again later."
            ),
        ),
        Step::Quota => (
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & \
             Billing to upgrade or purchase credits."
                .to_owned(),
        ),
        Step::Unauthorized => (401, "authentication_error", "invalid x-api-key".to_owned()),
        Step::BadRequest => (
            400,
            "invalid_request_error",
            "messages: the request was rejected by sluice-mock's injected `400` fault.".to_owned(),
        ),
        Step::NotFound => (404, "not_found_error", format!("model: {}", cx.model)),
        Step::Context => {
            let limit = cx.context_limit.unwrap_or(DEFAULT_CONTEXT_WINDOW);
            let tokens = cx.prompt_tokens.max(limit + 1);
            (
                400,
                "invalid_request_error",
                format!("prompt is too long: {tokens} tokens > {limit} maximum"),
            )
        }
        Step::Policy => (
            400,
            "invalid_request_error",
            "Output blocked by content filtering policy".to_owned(),
        ),
        Step::Status(502) => (502, "api_error", "Bad gateway".to_owned()),
        Step::Status(503) => (503, "overloaded_error", "Overloaded".to_owned()),
        Step::Status(504) => (504, "timeout_error", "Request timed out".to_owned()),
        Step::Status(529) => (529, "overloaded_error", "Overloaded".to_owned()),
        _ => (500, "api_error", "Internal server error".to_owned()),
    };
    (status, error_body(error_type, &message))
}

/// The message of an in-band `error` event of this type.
fn inband_message(error_type: &str) -> String {
    match error_type {
        "overloaded_error" => "Overloaded".to_owned(),
        "api_error" => "Internal server error".to_owned(),
        other => format!("Mock in-band error of type {other}."),
    }
}

/// `event: NAME\ndata: JSON\n\n`.
fn event(name: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(name.len() + data.len() + 16);
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(data);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// `event: error` with `{"type":"error","error":{"type":TYPE,"message":..}}`.
pub(crate) fn inband_event(error_type: &str) -> Bytes {
    let body = error_body(error_type, &inband_message(error_type));
    event("error", &String::from_utf8_lossy(&body))
}

/// Everything needed to write one Messages answer.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// `msg_mock_<n>` (and `toolu_mock_<n>` for a tool call).
    id: u64,
    /// JSON string literal, quotes included.
    model_json: String,
    input_tokens: u64,
    kind: Kind,
}

impl Message {
    pub(crate) fn new(id: u64, model: &str, input_tokens: u64, kind: Kind) -> Self {
        Message {
            id,
            model_json: json_string(model),
            input_tokens,
            kind,
        }
    }

    /// `stop_reason` of the finished answer.
    fn stop_reason(&self) -> &'static str {
        match self.kind {
            Kind::Text => "end_turn",
            Kind::Tool(_) => "tool_use",
        }
    }

    /// Output tokens of a finished answer with `items` stream items.
    fn output_tokens(&self, items: usize) -> usize {
        match self.kind {
            Kind::Text => items,
            Kind::Tool(_) => tool_fragments().len(),
        }
    }

    /// Stream items of a tool answer: an empty `input_json_delta`, then the fragments.
    pub(crate) fn tool_items() -> usize {
        tool_fragments().len() + 1
    }

    /// The non-streaming `message` JSON with `items` chunks of text (ignored for tool calls).
    pub(crate) fn full(&self, items: usize) -> Bytes {
        let mut out = String::with_capacity(400 + items * 10);
        let _ = write!(
            out,
            r#"{{"id":"msg_mock_{}","type":"message","role":"assistant","model":{},"content":["#,
            self.id, self.model_json
        );
        match &self.kind {
            Kind::Text => {
                out.push_str(r#"{"type":"text","text":""#);
                for i in 0..items {
                    push_chunk_text(&mut out, i);
                }
                out.push_str(r#""}"#);
            }
            Kind::Tool(name) => {
                let _ = write!(
                    out,
                    r#"{{"type":"tool_use","id":"toolu_mock_{}","name":{},"input":{TOOL_ARGUMENTS}}}"#,
                    self.id,
                    json_string(name)
                );
            }
        }
        let _ = write!(
            out,
            r#"],"stop_reason":"{}","stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":{}}}}}"#,
            self.stop_reason(),
            self.input_tokens,
            self.output_tokens(items)
        );
        Bytes::from(out)
    }

    /// Events before the first content delta: `message_start`, `content_block_start`, `ping`.
    pub(crate) const HEAD_LEN: usize = 3;

    /// Head event `k` (`k < HEAD_LEN`).
    pub(crate) fn head(&self, k: usize) -> Bytes {
        match k {
            0 => {
                let mut data = String::with_capacity(300);
                let _ = write!(
                    data,
                    r#"{{"type":"message_start","message":{{"id":"msg_mock_{}","type":"message","role":"assistant","content":[],"model":{},"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":1}}}}}}"#,
                    self.id, self.model_json, self.input_tokens
                );
                event("message_start", &data)
            }
            1 => {
                let block = match &self.kind {
                    Kind::Text => r#"{"type":"text","text":""}"#.to_owned(),
                    Kind::Tool(name) => format!(
                        r#"{{"type":"tool_use","id":"toolu_mock_{}","name":{},"input":{{}}}}"#,
                        self.id,
                        json_string(name)
                    ),
                };
                event(
                    "content_block_start",
                    &format!(
                        r#"{{"type":"content_block_start","index":0,"content_block":{block}}}"#
                    ),
                )
            }
            _ => event("ping", r#"{"type":"ping"}"#),
        }
    }

    /// Content delta `i`: `text_delta` with `chunk_text(i)`, or for a tool call the
    /// `input_json_delta` `""` (i = 0) and then the argument fragments.
    pub(crate) fn item(&self, i: usize) -> Bytes {
        let mut data = String::with_capacity(120);
        data.push_str(r#"{"type":"content_block_delta","index":0,"delta":"#);
        match self.kind {
            Kind::Text => {
                data.push_str(r#"{"type":"text_delta","text":""#);
                push_chunk_text(&mut data, i);
                data.push_str(r#""}}"#);
            }
            Kind::Tool(_) => {
                let fragment = match i {
                    0 => "",
                    i => tool_fragments()[(i - 1) % tool_fragments().len()],
                };
                let _ = write!(
                    data,
                    r#"{{"type":"input_json_delta","partial_json":{}}}}}"#,
                    json_string(fragment)
                );
            }
        }
        event("content_block_delta", &data)
    }

    /// Events after the last delta: `content_block_stop`, `message_delta`, `message_stop`.
    pub(crate) const TAIL_LEN: usize = 3;

    /// Tail event `k` (`k < TAIL_LEN`) of an answer with `items` deltas.
    pub(crate) fn tail(&self, k: usize, items: usize) -> Bytes {
        match k {
            0 => event(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            1 => event(
                "message_delta",
                &format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"{}","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#,
                    self.stop_reason(),
                    self.output_tokens(items)
                ),
            ),
            _ => event("message_stop", r#"{"type":"message_stop"}"#),
        }
    }
}

/// `2025-08-21T12:40:59Z` for this many seconds since the Unix epoch (UTC, proleptic
/// Gregorian; Howard Hinnant's `civil_from_days`).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// The `anthropic-ratelimit-requests-reset` value: wall-clock now plus `hint`, rounded up to
/// the next whole second (so a client waiting for it never retries early).
pub(crate) fn reset_timestamp(hint: Duration) -> String {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + hint;
    rfc3339(at.as_secs() + u64::from(at.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{chunk_text, mock_text};

    fn split(ev: &Bytes) -> (String, Value) {
        let s = std::str::from_utf8(ev).unwrap();
        let s = s.strip_suffix("\n\n").unwrap();
        let (name, data) = s.split_once('\n').unwrap();
        let name = name.strip_prefix("event: ").unwrap().to_owned();
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], name.as_str());
        (name, data)
    }

    #[test]
    fn validates_requests() {
        let ok = parse_request(
            br#"{"model":"claude","max_tokens":5,"system":"abcd","stream":true,
                "messages":[{"role":"user","content":"abcdefgh"},
                {"role":"assistant","content":[{"type":"text","text":"abcd"},
                  {"type":"tool_use","id":"t","name":"ab","input":{}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"xy"}]}]}"#,
        )
        .unwrap();
        // 4 + 8 + 4 + (2 + 2) + 2 = 22 characters.
        assert_eq!(ok.prompt_tokens, 6);
        assert_eq!(ok.model.as_deref(), Some("claude"));
        assert!(ok.stream && !ok.include_usage);
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        let cases = [
            ("not json".to_owned(), "error parsing the body"),
            ("[1]".to_owned(), "JSON object"),
            (
                format!(r#"{{"max_tokens":1,{msgs}}}"#),
                "model: Field required",
            ),
            (
                format!(r#"{{"model":1,"max_tokens":1,{msgs}}}"#),
                "model: Input should be",
            ),
            (
                format!(r#"{{"model":"m",{msgs}}}"#),
                "max_tokens: Field required",
            ),
            (
                format!(r#"{{"model":"m","max_tokens":0,{msgs}}}"#),
                "greater than or equal to 1",
            ),
            (
                format!(r#"{{"model":"m","max_tokens":1.5,{msgs}}}"#),
                "valid integer",
            ),
            (
                format!(r#"{{"model":"m","max_tokens":"9",{msgs}}}"#),
                "valid integer",
            ),
            (
                r#"{"model":"m","max_tokens":1}"#.to_owned(),
                "messages: Field required",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":{}}"#.to_owned(),
                "valid list",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[]}"#.to_owned(),
                "at least one message",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[1]}"#.to_owned(),
                "messages.0:",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#
                    .to_owned(),
                "messages.0.role: Input should be 'user' or 'assistant'",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"content":"x"}]}"#.to_owned(),
                "messages.0.role: Field required",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user"}]}"#.to_owned(),
                "messages.0.content: Field required",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":3}]}"#
                    .to_owned(),
                "messages.0.content:",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{}]}]}"#
                    .to_owned(),
                "messages.0.content.0:",
            ),
            (
                format!(r#"{{"model":"m","max_tokens":1,"stream":"y",{msgs}}}"#),
                "stream: Input should be a valid boolean",
            ),
        ];
        for (body, needle) in cases {
            let err = parse_request(body.as_bytes()).unwrap_err();
            assert!(err.message.contains(needle), "{body}: {err:?}");
        }
    }

    #[test]
    fn text_message_and_stream() {
        let m = Message::new(3, "claude-\"q\"", 7, Kind::Text);
        let v: Value = serde_json::from_slice(&m.full(3)).unwrap();
        assert_eq!(
            v,
            json!({"id": "msg_mock_3", "type": "message", "role": "assistant",
                   "model": "claude-\"q\"", "content": [{"type": "text", "text": mock_text(3)}],
                   "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 7, "output_tokens": 3}})
        );
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "type",
                "role",
                "model",
                "content",
                "stop_reason",
                "stop_sequence",
                "usage"
            ]
        );
        let (name, start) = split(&m.head(0));
        assert_eq!(name, "message_start");
        assert_eq!(
            start["message"]["usage"],
            json!({"input_tokens": 7, "output_tokens": 1})
        );
        assert_eq!(start["message"]["content"], json!([]));
        assert_eq!(start["message"]["stop_reason"], Value::Null);
        let (_, block) = split(&m.head(1));
        assert_eq!(block["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(split(&m.head(2)).0, "ping");
        let (_, delta) = split(&m.item(4));
        assert_eq!(
            delta["delta"],
            json!({"type": "text_delta", "text": chunk_text(4)})
        );
        assert_eq!(
            split(&m.tail(0, 3)).1,
            json!({"type": "content_block_stop", "index": 0})
        );
        let (_, md) = split(&m.tail(1, 3));
        assert_eq!(md["delta"]["stop_reason"], "end_turn");
        assert_eq!(md["usage"]["output_tokens"], 3);
        assert_eq!(split(&m.tail(2, 3)).0, "message_stop");
    }

    #[test]
    fn tool_message_and_stream() {
        let m = Message::new(9, "c", 1, Kind::Tool("get_weather".into()));
        let v: Value = serde_json::from_slice(&m.full(0)).unwrap();
        assert_eq!(
            v["content"],
            json!([{"type": "tool_use", "id": "toolu_mock_9", "name": "get_weather",
                    "input": {"location": "Paris"}}])
        );
        assert_eq!(v["stop_reason"], "tool_use");
        let (_, block) = split(&m.head(1));
        assert_eq!(
            block["content_block"],
            json!({"type": "tool_use", "id": "toolu_mock_9", "name": "get_weather", "input": {}})
        );
        let parts: Vec<String> = (0..Message::tool_items())
            .map(|i| {
                let (_, d) = split(&m.item(i));
                assert_eq!(d["delta"]["type"], "input_json_delta");
                d["delta"]["partial_json"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(parts[0], "");
        assert_eq!(parts.concat(), TOOL_ARGUMENTS);
        assert_eq!(split(&m.tail(1, 4)).1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn errors_and_inband_events() {
        let (name, v) = split(&inband_event("overloaded_error"));
        assert_eq!(name, "error");
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
        let cx = ErrorContext {
            n: 1,
            model: "claude-x",
            prompt_tokens: 5,
            context_limit: None,
        };
        let (status, body) = error_parts(&Step::Context, &cx);
        assert_eq!(status, 400);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["error"]["message"],
            "prompt is too long: 200001 tokens > 200000 maximum"
        );
        let (status, body) = error_parts(&Step::NotFound, &cx);
        assert_eq!(status, 404);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["error"],
            json!({"type": "not_found_error", "message": "model: claude-x"})
        );
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_755_780_059), "2025-08-21T12:40:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        let r = reset_timestamp(Duration::from_millis(1));
        assert_eq!(r.len(), 20, "{r}");
    }
}
