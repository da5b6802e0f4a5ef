//! The OpenAI wire format the mock speaks: request validation, answers (text and tool calls),
//! SSE chunks and error bodies (shapes and messages from
//! `shared/reference/provider-wire-formats.md` §1.1–1.5), plus the content every answer of
//! either dialect carries ([`chunk_text`], [`TOOL_ARGUMENTS`]).
//!
//! Answers are written with small `push_str`s into one pre-sized buffer instead of building a
//! `serde_json::Value` per chunk: the mock sits under gateway benchmarks at thousands of
//! requests per second, and its own cost must stay negligible. The content is
//! [`chunk_text`] output (ASCII letters, digits and spaces), so it never needs escaping; the
//! echoed model name is escaped once per request.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::limits::{Axis, Rejection};
use crate::script::Step;

const WORDS: [&str; 16] = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "sluice",
    "gates", "keep", "every", "stream", "flowing",
];

/// The content of chunk `i` of every mock answer: a word, the index and a space ("the0 ",
/// "quick1 ", ...). Unique per index, so a duplicated or dropped chunk is visible.
pub fn chunk_text(i: usize) -> String {
    let mut s = String::with_capacity(16);
    push_chunk_text(&mut s, i);
    s
}

pub(crate) fn push_chunk_text(out: &mut String, i: usize) {
    out.push_str(WORDS[i % WORDS.len()]);
    let _ = write!(out, "{i} ");
}

/// The whole content of a successful answer with `chunks` chunks:
/// `chunk_text(0) + chunk_text(1) + ... + chunk_text(chunks - 1)`.
pub fn mock_text(chunks: usize) -> String {
    let mut s = String::with_capacity(chunks * 10);
    for i in 0..chunks {
        push_chunk_text(&mut s, i);
    }
    s
}

/// The arguments of every mock tool call, as a JSON text: `{"location":"Paris"}`. OpenAI answers
/// carry it verbatim in `function.arguments`; Anthropic answers carry it parsed, as the
/// `tool_use` block's `input`.
pub const TOOL_ARGUMENTS: &str = "{\"location\":\"Paris\"}";

const TOOL_FRAGMENTS: [&str; 3] = ["{\"loc", "ation\":\"Pa", "ris\"}"];

/// The pieces a streamed tool call's arguments arrive in (OpenAI `function.arguments`
/// fragments; Anthropic `input_json_delta`s after a first empty one). They concatenate to
/// [`TOOL_ARGUMENTS`].
pub fn tool_fragments() -> &'static [&'static str] {
    &TOOL_FRAGMENTS
}

/// `s` as a JSON string literal, quotes included.
pub(crate) fn json_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// What a successful answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `mock_text(chunks)`, one chunk per stream event.
    Text,
    /// One tool call to this function/tool name with [`TOOL_ARGUMENTS`].
    Tool(String),
}

/// Seconds since the Unix epoch (the `created` field; wall clock, not the pausable tokio one).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The fields of a chat request the mock cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatRequest {
    /// The requested model, if non-empty.
    pub(crate) model: Option<String>,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    /// Estimated prompt tokens: characters of all message text / 4, rounded up, at least 1.
    pub(crate) prompt_tokens: u64,
    /// The output limit asked for (OpenAI: `max_completion_tokens`, else `max_tokens`;
    /// Anthropic: `max_tokens`), if any.
    pub(crate) max_tokens: Option<u64>,
}

/// A 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) message: String,
    pub(crate) param: Option<String>,
}

fn invalid(message: impl Into<String>, param: Option<&str>) -> Invalid {
    Invalid {
        message: message.into(),
        param: param.map(str::to_owned),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates a Chat Completions request body the way OpenAI does (for the fields it checks).
pub(crate) fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but \
             what was sent was not valid JSON. If you have trouble figuring out how to fix this, \
             please contact us through our help center at help.openai.com.)",
            None,
        )
    })?;
    let Value::Object(obj) = &value else {
        return Err(invalid(
            format!(
                "Invalid type for the request body: expected an object, but got {} instead.",
                type_name(&value)
            ),
            None,
        ));
    };
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => {
            return Err(invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
            ));
        }
        Some(Value::Array(m)) => m,
        Some(other) => {
            return Err(invalid(
                format!(
                    "Invalid type for 'messages': expected an array of objects, but got {} \
                     instead.",
                    type_name(other)
                ),
                Some("messages"),
            ));
        }
    };
    if messages.is_empty() {
        return Err(invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an \
             empty array instead.",
            Some("messages"),
        ));
    }
    let mut chars = 0usize;
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(invalid(
                format!(
                    "Invalid type for 'messages[{i}]': expected an object, but got {} instead.",
                    type_name(m)
                ),
                Some(&format!("messages[{i}]")),
            ));
        };
        match m.get("content") {
            Some(Value::String(s)) => chars += s.chars().count(),
            Some(Value::Array(parts)) => {
                for part in parts {
                    if let Some(Value::String(t)) = part.get("text") {
                        chars += t.chars().count();
                    }
                }
            }
            _ => {}
        }
        if let Some(Value::Array(calls)) = m.get("tool_calls") {
            for call in calls {
                if let Some(f) = call.get("function") {
                    for key in ["name", "arguments"] {
                        if let Some(Value::String(s)) = f.get(key) {
                            chars += s.chars().count();
                        }
                    }
                }
            }
        }
    }
    let model = match obj.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => (!s.is_empty()).then(|| s.clone()),
        Some(other) => {
            return Err(invalid(
                format!(
                    "Invalid type for 'model': expected a string, but got {} instead.",
                    type_name(other)
                ),
                Some("model"),
            ));
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(invalid(
                format!(
                    "Invalid type for 'stream': expected a boolean, but got {} instead.",
                    type_name(other)
                ),
                Some("stream"),
            ));
        }
    };
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(opts) => {
            if !stream {
                return Err(invalid(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    Some("stream_options"),
                ));
            }
            matches!(opts.get("include_usage"), Some(Value::Bool(true)))
        }
    };
    // Lenient: a value that is not a non-negative integer counts as absent.
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| obj.get(*key).and_then(Value::as_u64));
    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        prompt_tokens: estimate_tokens(chars),
        max_tokens,
    })
}

/// Characters / 4, rounded up, at least 1.
pub(crate) fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

/// `{"error":{"message":..,"type":..,"param":..,"code":..}}`.
pub(crate) fn openai_error(
    message: &str,
    error_type: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Bytes {
    let body = json!({
        "error": {"message": message, "type": error_type, "param": param, "code": code}
    });
    Bytes::from(body.to_string())
}

/// Anthropic's 529: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`.
pub(crate) fn anthropic_overloaded() -> Bytes {
    Bytes::from_static(
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )
}

/// OpenAI's 400 `context_length_exceeded` body.
pub(crate) fn context_length_error(limit: u64, tokens: u64) -> Bytes {
    openai_error(
        &format!(
            "This model's maximum context length is {limit} tokens. However, your messages \
             resulted in {tokens} tokens. Please reduce the length of the messages."
        ),
        "invalid_request_error",
        Some("messages"),
        Some("context_length_exceeded"),
    )
}

/// The message of an in-band stream error of this type.
pub(crate) fn inband_message(error_type: &str) -> String {
    match error_type {
        "server_error" => {
            "The server had an error while processing your request. Sorry about that!".to_owned()
        }
        "overloaded_error" => "Overloaded".to_owned(),
        other => format!("Mock in-band error of type {other}."),
    }
}

/// Everything needed to write one answer: its id, timestamp and (escaped) model name.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// `chatcmpl-mock-<n>`.
    pub(crate) id: u64,
    pub(crate) created: u64,
    /// JSON string literal, quotes included.
    pub(crate) model_json: String,
    pub(crate) prompt_tokens: u64,
}

impl Answer {
    pub(crate) fn new(id: u64, model: &str, prompt_tokens: u64) -> Self {
        Answer {
            id,
            created: unix_now(),
            model_json: Value::from(model).to_string(),
            prompt_tokens,
        }
    }

    fn push_head(&self, out: &mut String, object: &str) {
        let _ = write!(
            out,
            r#"{{"id":"chatcmpl-mock-{}","object":"{object}","created":{},"model":{},"system_fingerprint":"fp_sluice_mock","#,
            self.id, self.created, self.model_json
        );
    }

    fn push_usage(&self, out: &mut String, completion_tokens: u64) {
        let _ = write!(
            out,
            r#""usage":{{"prompt_tokens":{},"completion_tokens":{completion_tokens},"total_tokens":{}}}"#,
            self.prompt_tokens,
            self.prompt_tokens + completion_tokens
        );
    }

    /// The non-streaming `chat.completion` JSON with `chunks` chunks of content.
    pub(crate) fn completion(&self, chunks: usize) -> Bytes {
        let mut out = String::with_capacity(400 + chunks * 10);
        self.push_head(&mut out, "chat.completion");
        out.push_str(r#""choices":[{"index":0,"message":{"role":"assistant","content":""#);
        for i in 0..chunks {
            push_chunk_text(&mut out, i);
        }
        out.push_str(r#"","refusal":null},"logprobs":null,"finish_reason":"stop"}],"#);
        self.push_usage(&mut out, chunks as u64);
        out.push('}');
        Bytes::from(out)
    }

    /// The non-streaming `chat.completion` JSON with one tool call to `name`
    /// (`finish_reason: "tool_calls"`; one completion token per argument fragment).
    pub(crate) fn tool_completion(&self, name: &str) -> Bytes {
        let mut out = String::with_capacity(600);
        self.push_head(&mut out, "chat.completion");
        let _ = write!(
            out,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_mock_{}","type":"function","function":{{"name":{},"arguments":{}}}}}],"refusal":null}},"logprobs":null,"finish_reason":"tool_calls"}}],"#,
            self.id,
            json_string(name),
            json_string(TOOL_ARGUMENTS)
        );
        self.push_usage(&mut out, TOOL_FRAGMENTS.len() as u64);
        out.push('}');
        Bytes::from(out)
    }

    /// The fixed parts of every `chat.completion.chunk` of one stream.
    pub(crate) fn stream_template(&self, include_usage: bool) -> StreamTemplate {
        let mut prefix = String::with_capacity(200);
        prefix.push_str("data: ");
        self.push_head(&mut prefix, "chat.completion.chunk");
        prefix.push_str(r#""choices":[{"index":0,"delta":"#);
        StreamTemplate {
            prefix,
            include_usage,
        }
    }

    /// The final usage chunk (`choices: []`), sent only with `include_usage`.
    pub(crate) fn usage_event(&self, completion_tokens: u64) -> Bytes {
        let mut out = String::with_capacity(300);
        out.push_str("data: ");
        self.push_head(&mut out, "chat.completion.chunk");
        out.push_str(r#""choices":[],"#);
        self.push_usage(&mut out, completion_tokens);
        out.push_str("}\n\n");
        Bytes::from(out)
    }
}

/// Writes the chunks of one stream from a prefix computed once per request.
#[derive(Debug, Clone)]
pub(crate) struct StreamTemplate {
    prefix: String,
    include_usage: bool,
}

impl StreamTemplate {
    fn event(&self, delta: &str, finish_reason: &str) -> Bytes {
        let mut out = String::with_capacity(self.prefix.len() + delta.len() + 80);
        out.push_str(&self.prefix);
        out.push_str(delta);
        out.push_str(r#","logprobs":null,"finish_reason":"#);
        out.push_str(finish_reason);
        out.push_str("}]");
        if self.include_usage {
            out.push_str(r#","usage":null"#);
        }
        out.push_str("}\n\n");
        Bytes::from(out)
    }

    /// The role-only first chunk.
    pub(crate) fn preamble(&self) -> Bytes {
        self.event(r#"{"role":"assistant","content":""}"#, "null")
    }

    /// Content chunk `i`.
    pub(crate) fn content(&self, i: usize) -> Bytes {
        let mut delta = String::with_capacity(32);
        delta.push_str(r#"{"content":""#);
        push_chunk_text(&mut delta, i);
        delta.push_str(r#""}"#);
        self.event(&delta, "null")
    }

    /// The chunk with an empty delta and `finish_reason: "stop"`.
    pub(crate) fn finish(&self) -> Bytes {
        self.event("{}", r#""stop""#)
    }

    /// The first chunk of a tool-call answer: the role and the call's first fragment (`id`,
    /// `type`, `function.name` and empty `arguments`).
    pub(crate) fn tool_preamble(&self, id: u64, name: &str) -> Bytes {
        let delta = format!(
            r#"{{"role":"assistant","content":null,"tool_calls":[{{"index":0,"id":"call_mock_{id}","type":"function","function":{{"name":{},"arguments":""}}}}]}}"#,
            json_string(name)
        );
        self.event(&delta, "null")
    }

    /// Argument fragment `i` of a tool-call answer (see [`tool_fragments`]).
    pub(crate) fn tool_fragment(&self, i: usize) -> Bytes {
        let delta = format!(
            r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":{}}}}}]}}"#,
            json_string(TOOL_FRAGMENTS[i % TOOL_FRAGMENTS.len()])
        );
        self.event(&delta, "null")
    }

    /// The chunk with an empty delta and `finish_reason: "tool_calls"`.
    pub(crate) fn tool_finish(&self) -> Bytes {
        self.event("{}", r#""tool_calls""#)
    }
}

/// The facts an error body may mention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorContext<'a> {
    /// The request number (`req_mock_<n>`).
    pub(crate) n: u64,
    /// The model echoed in messages.
    pub(crate) model: &'a str,
    pub(crate) prompt_tokens: u64,
    /// The configured context window, if any.
    pub(crate) context_limit: Option<u64>,
}

/// Context window claimed by the `context` step when no `context_limit` is configured.
const DEFAULT_CONTEXT_WINDOW: u64 = 128_000;

/// "644ms", "1.5s": the style of OpenAI's "Please try again in ..." hint.
pub(crate) fn format_hint(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// The status and OpenAI body of an error step (headers are added by the server).
/// Non-error steps get the 500 `server_error`.
pub(crate) fn error_parts(step: &Step, cx: &ErrorContext<'_>) -> (u16, Bytes) {
    let model = cx.model;
    match step {
        Step::RateLimited {
            retry_after_secs,
            retry_after_ms,
        } => {
            let hint = retry_after_ms.or(retry_after_secs.map(Duration::from_secs));
            let try_again = hint
                .map(|d| format!(" Please try again in {}.", format_hint(d)))
                .unwrap_or_default();
            let message = format!(
                "Rate limit reached for {model} in organization org-sluice-mock on requests per \
                 min (RPM): Limit 60, Used 60, Requested 1.{try_again} Visit \
                 https://platform.openai.com/account/rate-limits to learn more."
            );
            (
                429,
                openai_error(&message, "requests", None, Some("rate_limit_exceeded")),
            )
        }
        Step::Quota => (
            429,
            openai_error(
                "You exceeded your current quota, please check your plan and billing details. \
                 For more information on this error, read the docs: \
                 https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            ),
        ),
        Step::Unauthorized => (
            401,
            openai_error(
                "Incorrect API key provided: sk-mock***...0000. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
        ),
        Step::BadRequest => (
            400,
            openai_error(
                "Invalid value for 'messages': the request was rejected by sluice-mock's \
                 injected `400` fault.",
                "invalid_request_error",
                Some("messages"),
                None,
            ),
        ),
        Step::NotFound => (
            404,
            openai_error(
                &format!("The model '{model}' does not exist or you do not have access to it."),
                "invalid_request_error",
                None,
                Some("model_not_found"),
            ),
        ),
        Step::Context => {
            let limit = cx.context_limit.unwrap_or(DEFAULT_CONTEXT_WINDOW);
            let tokens = cx.prompt_tokens.max(limit + 1);
            (400, context_length_error(limit, tokens))
        }
        Step::Policy => (
            400,
            openai_error(
                "Your request was rejected as a result of our safety system. Your prompt may \
                 contain text that is not allowed by our safety system.",
                "invalid_request_error",
                None,
                Some("content_policy_violation"),
            ),
        ),
        Step::Status(502) => (
            502,
            openai_error("Bad gateway.", "server_error", None, None),
        ),
        Step::Status(503) => (
            503,
            openai_error(
                "That model is currently overloaded with other requests. You can retry your \
                 request, or contact us through our help center at help.openai.com if the error \
                 persists.",
                "server_error",
                None,
                None,
            ),
        ),
        Step::Status(504) => (
            504,
            openai_error("Gateway timeout.", "server_error", None, None),
        ),
        Step::Status(529) => (529, anthropic_overloaded()),
        _ => (
            500,
            openai_error(
                &format!(
                    "The server had an error processing your request. Sorry about that! You can \
                     retry your request, or contact us through our help center at \
                     help.openai.com if you keep seeing this error. (Please include the request \
                     ID req_mock_{} in your email.)",
                    cx.n
                ),
                "server_error",
                None,
                None,
            ),
        ),
    }
}

/// The OpenAI 429 of a `--rpm` / `--tpm` rejection: `type` `requests` or `tokens`, `code`
/// `rate_limit_exceeded`, and the message shape of §1.4 ("Rate limit reached for M in
/// organization O on tokens per min (TPM): Limit L, Used U, Requested R. Please try again in
/// 644ms. ..."), or "Request too large ..." when the request can never fit.
pub(crate) fn limit_error(rejection: &Rejection, model: &str) -> Bytes {
    let (error_type, per_min) = match rejection.axis {
        Axis::Requests => ("requests", "requests per min (RPM)"),
        Axis::Tokens => ("tokens", "tokens per min (TPM)"),
    };
    let limit = rejection.limit.round() as u64;
    let requested = rejection.requested.round() as u64;
    let message = match rejection.retry_after {
        Some(wait) => format!(
            "Rate limit reached for {model} in organization org-sluice-mock on {per_min}: Limit \
             {limit}, Used {}, Requested {requested}. Please try again in {}. Visit \
             https://platform.openai.com/account/rate-limits to learn more.",
            rejection.used.ceil().max(0.0) as u64,
            format_hint(wait.max(Duration::from_millis(1)))
        ),
        None => format!(
            "Request too large for {model} in organization org-sluice-mock on {per_min}: Limit \
             {limit}, Requested {requested}. The input or output tokens must be reduced in order \
             to run successfully. Visit https://platform.openai.com/account/rate-limits to learn \
             more."
        ),
    };
    openai_error(&message, error_type, None, Some("rate_limit_exceeded"))
}

/// The stream terminator.
pub(crate) const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// `data: {"error":{...}}` followed by the blank line.
pub(crate) fn inband_event(error_type: &str) -> Bytes {
    let body = json!({
        "error": {
            "message": inband_message(error_type),
            "type": error_type,
            "param": null,
            "code": null,
        }
    });
    Bytes::from(format!("data: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_texts_are_unique_and_concatenate_to_mock_text() {
        let texts: Vec<String> = (0..100).map(chunk_text).collect();
        let unique: std::collections::HashSet<&String> = texts.iter().collect();
        assert_eq!(unique.len(), 100);
        assert_eq!(chunk_text(0), "the0 ");
        assert_eq!(chunk_text(1), "quick1 ");
        assert_eq!(mock_text(100), texts.concat());
        assert_eq!(mock_text(0), "");
        assert!(
            texts
                .iter()
                .all(|t| t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' '))
        );
    }

    #[test]
    fn tool_fragments_concatenate_to_the_arguments() {
        assert_eq!(tool_fragments().concat(), TOOL_ARGUMENTS);
        let args: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap();
        assert_eq!(args, json!({"location": "Paris"}));
        assert_eq!(tool_fragments().len(), 3);
    }

    #[test]
    fn tool_answers_are_valid_json() {
        let a = Answer::new(4, "m", 2);
        let v: Value = serde_json::from_slice(&a.tool_completion("get_weather")).unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "call_mock_4", "type": "function",
                    "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS}}])
        );
        assert_eq!(v["usage"]["completion_tokens"], 3);
        let t = a.stream_template(false);
        let pre: Value = serde_json::from_slice(&t.tool_preamble(4, "f")[6..]).unwrap();
        assert_eq!(
            pre["choices"][0]["delta"],
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                   "id": "call_mock_4", "type": "function",
                   "function": {"name": "f", "arguments": ""}}]})
        );
        let args: String = (0..3)
            .map(|i| {
                let v: Value = serde_json::from_slice(&t.tool_fragment(i)[6..]).unwrap();
                let call = &v["choices"][0]["delta"]["tool_calls"][0];
                assert_eq!(call["index"], 0);
                assert!(call.get("id").is_none());
                call["function"]["arguments"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(args, TOOL_ARGUMENTS);
        let fin: Value = serde_json::from_slice(&t.tool_finish()[6..]).unwrap();
        assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn formats_retry_hints() {
        assert_eq!(format_hint(Duration::from_millis(644)), "644ms");
        assert_eq!(format_hint(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_hint(Duration::from_secs(3)), "3s");
    }

    #[test]
    fn estimates_tokens() {
        assert_eq!(estimate_tokens(0), 1);
        assert_eq!(estimate_tokens(4), 1);
        assert_eq!(estimate_tokens(5), 2);
        let req = parse_chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"abcdefgh"},
                {"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url"}]},
                {"role":"assistant","content":null,"tool_calls":[{"function":{"name":"ab","arguments":"cd"}}]}]}"#,
        )
        .unwrap();
        // 8 + 4 + 4 = 16 characters.
        assert_eq!(req.prompt_tokens, 4);
        assert_eq!(req.model.as_deref(), Some("m"));
        assert!(!req.stream);
    }

    #[test]
    fn validation_errors() {
        let cases: [(&[u8], &str, Option<&str>); 9] = [
            (b"not json", "could not parse the JSON", None),
            (b"[1]", "expected an object", None),
            (
                b"{}",
                "Missing required parameter: 'messages'",
                Some("messages"),
            ),
            (
                br#"{"messages":"hi"}"#,
                "got a string instead",
                Some("messages"),
            ),
            (br#"{"messages":[]}"#, "empty array", Some("messages")),
            (br#"{"messages":[1]}"#, "'messages[0]'", Some("messages[0]")),
            (br#"{"messages":[{}],"model":3}"#, "'model'", Some("model")),
            (
                br#"{"messages":[{}],"stream":"yes"}"#,
                "'stream'",
                Some("stream"),
            ),
            (
                br#"{"messages":[{}],"stream_options":{"include_usage":true}}"#,
                "only allowed when 'stream' is enabled",
                Some("stream_options"),
            ),
        ];
        for (body, needle, param) in cases {
            let err = parse_chat_request(body).unwrap_err();
            assert!(err.message.contains(needle), "{err:?}");
            assert_eq!(err.param.as_deref(), param);
        }
        let ok = parse_chat_request(
            br#"{"model":"","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(ok.model, None);
        assert!(ok.stream && ok.include_usage);
    }

    #[test]
    fn answers_are_valid_json() {
        let a = Answer::new(7, "gpt-\"quoted\"", 3);
        let v: Value = serde_json::from_slice(&a.completion(3)).unwrap();
        assert_eq!(v["id"], "chatcmpl-mock-7");
        assert_eq!(v["model"], "gpt-\"quoted\"");
        assert_eq!(v["choices"][0]["message"]["content"], mock_text(3));
        assert_eq!(v["usage"]["total_tokens"], 6);
        let t = a.stream_template(true);
        for ev in [
            t.preamble(),
            t.content(5),
            t.finish(),
            a.usage_event(3),
            inband_event("overloaded_error"),
        ] {
            let s = std::str::from_utf8(&ev).unwrap();
            let json = s
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            let _: Value = serde_json::from_str(json).unwrap();
        }
        let c: Value = serde_json::from_slice(&t.content(5)[6..]).unwrap();
        assert_eq!(c["choices"][0]["delta"]["content"], chunk_text(5));
        assert_eq!(c["usage"], Value::Null);
        let no_usage = a.stream_template(false);
        let c: Value = serde_json::from_slice(&no_usage.content(5)[6..]).unwrap();
        assert!(c.get("usage").is_none());
    }
}
