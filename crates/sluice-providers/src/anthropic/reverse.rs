//! The gateway's Anthropic face: an Anthropic client's request → canonical, and canonical
//! responses, chunks and errors → Anthropic JSON and SSE events.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use sluice_core::ErrorClass;

use super::{TranslateError, stop_reason_from_openai};
use crate::{ChatChunk, ChatRequest, ChatResponse, Message, StreamOptions, Usage};

/// Block keys that are dropped in this direction: prompt caching and citations have no OpenAI
/// field, and an OpenAI target would reject the key.
const DROPPED_BLOCK_KEYS: &[&str] = &["cache_control", "citations"];

/// Translates an Anthropic Messages request body into the canonical request.
///
/// `max_tokens` is required (as Anthropic requires it); `thinking`, `top_k`, server tools,
/// `document` blocks and unknown fields are rejected with a [`TranslateError`] naming them. The
/// table is the doc comment of `src/anthropic/mod.rs`.
pub fn from_anthropic_request(body: &Value) -> Result<ChatRequest, TranslateError> {
    let obj = body.as_object().ok_or_else(|| TranslateError {
        field: String::new(),
        message: "an Anthropic request body must be a JSON object".into(),
    })?;

    let mut model = None;
    let mut messages = Vec::new();
    let mut has_messages = false;
    let mut max_tokens = None;
    let mut system = None;
    let mut stop = None;
    let mut temperature = None;
    let mut top_p = None;
    let mut stream = false;
    let mut tools = None;
    let mut tool_choice = None;
    let mut parallel_tool_calls = None;
    let mut user = None;
    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" => {
                model = Some(
                    value
                        .as_str()
                        .ok_or_else(|| TranslateError::invalid(key, "must be a string"))?
                        .to_owned(),
                );
            }
            "messages" => {
                has_messages = true;
                reverse_messages(value, &mut messages)?;
            }
            "max_tokens" => {
                max_tokens = Some(value.as_u64().ok_or_else(|| {
                    TranslateError::invalid(key, "must be a non-negative integer")
                })?);
            }
            "system" => system = reverse_system(value)?,
            "stop_sequences" => {
                let items = value
                    .as_array()
                    .filter(|a| a.iter().all(Value::is_string))
                    .ok_or_else(|| TranslateError::invalid(key, "must be an array of strings"))?;
                if !items.is_empty() {
                    stop = Some(value.clone());
                }
            }
            "temperature" | "top_p" => {
                if !value.is_number() {
                    return Err(TranslateError::invalid(key, "must be a number"));
                }
                if key == "temperature" {
                    temperature = Some(value.clone());
                } else {
                    top_p = Some(value.clone());
                }
            }
            "stream" => {
                stream = value
                    .as_bool()
                    .ok_or_else(|| TranslateError::invalid(key, "must be a boolean"))?;
            }
            "tools" => tools = Some(reverse_tools(value)?),
            "tool_choice" => {
                let (choice, disable_parallel) = reverse_tool_choice(value)?;
                tool_choice = Some(choice);
                if disable_parallel {
                    parallel_tool_calls = Some(false);
                }
            }
            "metadata" => {
                let meta = value
                    .as_object()
                    .ok_or_else(|| TranslateError::invalid(key, "must be an object"))?;
                for (k, v) in meta {
                    match (k.as_str(), v) {
                        (_, Value::Null) => {}
                        ("user_id", Value::String(id)) => user = Some(id.clone()),
                        ("user_id", _) => {
                            return Err(TranslateError::invalid(
                                "metadata.user_id",
                                "must be a string",
                            ));
                        }
                        _ => {
                            return Err(TranslateError::untranslatable(
                                format!("metadata.{k}"),
                                "only `metadata.user_id` has an OpenAI equivalent (`user`)",
                            ));
                        }
                    }
                }
            }
            "thinking" => {
                if value.get("type").and_then(Value::as_str) != Some("disabled") {
                    return Err(TranslateError::untranslatable(
                        key,
                        "extended thinking has no OpenAI Chat Completions equivalent",
                    ));
                }
            }
            "top_k" => {
                return Err(TranslateError::untranslatable(
                    key,
                    "OpenAI has no top-k sampling",
                ));
            }
            _ => {
                return Err(TranslateError::untranslatable(
                    key,
                    "it has no OpenAI equivalent",
                ));
            }
        }
    }

    let model = model.ok_or_else(|| TranslateError::invalid("model", "is required"))?;
    if !has_messages {
        return Err(TranslateError::invalid("messages", "is required"));
    }
    let max_tokens = max_tokens.ok_or_else(|| {
        TranslateError::invalid("max_tokens", "is required by the Anthropic Messages API")
    })?;
    if let Some(system) = system {
        messages.insert(0, system);
    }

    let mut extra = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            extra.insert(key.into(), v);
        }
    };
    put("temperature", temperature);
    put("top_p", top_p);
    put("stop", stop);
    put("tools", tools);
    put("tool_choice", tool_choice);
    put("parallel_tool_calls", parallel_tool_calls.map(Value::Bool));
    put("user", user.map(Value::String));
    Ok(ChatRequest {
        model,
        messages,
        stream: stream.then_some(true),
        // The final `message_delta` reports usage, so always ask for it.
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        max_tokens: Some(max_tokens),
        max_completion_tokens: None,
        extra,
    })
}

fn reverse_system(value: &Value) -> Result<Option<Message>, TranslateError> {
    match value {
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(Message::text("system", s.clone()))),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system[{i}]");
                let obj = super::request::object(block, &path)?;
                if obj.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(TranslateError::untranslatable(
                        format!("{path}.type"),
                        "system blocks must be text",
                    ));
                }
                check_block_keys(obj, &path, &["type", "text"])?;
                parts.push(json!({"type": "text", "text": super::request::string_field(obj, "text", &path)?}));
            }
            if parts.is_empty() {
                return Ok(None);
            }
            Ok(Some(Message {
                role: "system".into(),
                content: Some(Value::Array(parts)),
                extra: Map::new(),
            }))
        }
        _ => Err(TranslateError::invalid(
            "system",
            "must be a string or an array of text blocks",
        )),
    }
}

fn reverse_messages(value: &Value, out: &mut Vec<Message>) -> Result<(), TranslateError> {
    let messages = value
        .as_array()
        .ok_or_else(|| TranslateError::invalid("messages", "must be an array"))?;
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let obj = super::request::object(m, &path)?;
        for (key, v) in obj {
            if !v.is_null() && key != "role" && key != "content" {
                return Err(TranslateError::untranslatable(
                    format!("{path}.{key}"),
                    "it has no OpenAI equivalent",
                ));
            }
        }
        let content = obj
            .get("content")
            .filter(|c| !c.is_null())
            .ok_or_else(|| TranslateError::invalid(format!("{path}.content"), "is required"))?;
        match obj.get("role").and_then(Value::as_str) {
            Some("user") => reverse_user(content, &path, out)?,
            Some("assistant") => out.push(reverse_assistant(content, &path)?),
            _ => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    "must be \"user\" or \"assistant\"",
                ));
            }
        }
    }
    Ok(())
}

/// One user turn: its tool results become `tool` messages first, then one user message with the
/// rest (including images that were inside tool results).
fn reverse_user(content: &Value, path: &str, out: &mut Vec<Message>) -> Result<(), TranslateError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(Message::text("user", s.clone()));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "must be a string or an array of blocks",
            ));
        }
    };
    let mut tool_messages = Vec::new();
    let mut moved_images = Vec::new();
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let bpath = format!("{path}.content[{j}]");
        let obj = super::request::object(block, &bpath)?;
        match obj.get("type").and_then(Value::as_str) {
            Some("text") => {
                check_block_keys(obj, &bpath, &["type", "text"])?;
                parts.push(json!({"type": "text", "text": super::request::string_field(obj, "text", &bpath)?}));
            }
            Some("image") => {
                check_block_keys(obj, &bpath, &["type", "source"])?;
                parts.push(image_part(obj, &bpath)?);
            }
            Some("tool_result") => {
                check_block_keys(obj, &bpath, &["type", "tool_use_id", "content", "is_error"])?;
                tool_messages.push(tool_message(obj, &bpath, &mut moved_images)?);
            }
            Some("thinking" | "redacted_thinking") => {
                return Err(TranslateError::invalid(
                    format!("{bpath}.type"),
                    "is only allowed in assistant messages",
                ));
            }
            Some(other) => {
                return Err(TranslateError::untranslatable(
                    format!("{bpath}.type"),
                    &format!("`{other}` blocks have no OpenAI chat equivalent"),
                ));
            }
            None => {
                return Err(TranslateError::invalid(
                    format!("{bpath}.type"),
                    "is required",
                ));
            }
        }
    }
    let had_tools = !tool_messages.is_empty();
    out.extend(tool_messages);
    moved_images.extend(parts);
    let parts = moved_images;
    if !parts.is_empty() || !had_tools {
        out.push(Message {
            role: "user".into(),
            content: Some(Value::Array(parts)),
            extra: Map::new(),
        });
    }
    Ok(())
}

fn tool_message(
    obj: &Map<String, Value>,
    path: &str,
    moved_images: &mut Vec<Value>,
) -> Result<Message, TranslateError> {
    let id = super::request::string_field(obj, "tool_use_id", path)?;
    let is_error = match obj.get("is_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.is_error"),
                "must be a boolean",
            ));
        }
    };
    let mut texts: Vec<String> = Vec::new();
    let mut as_parts = false;
    match obj.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(blocks)) => {
            as_parts = true;
            for (k, block) in blocks.iter().enumerate() {
                let bpath = format!("{path}.content[{k}]");
                let inner = super::request::object(block, &bpath)?;
                match inner.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        check_block_keys(inner, &bpath, &["type", "text"])?;
                        texts.push(super::request::string_field(inner, "text", &bpath)?.to_owned());
                    }
                    Some("image") => {
                        check_block_keys(inner, &bpath, &["type", "source"])?;
                        moved_images.push(image_part(inner, &bpath)?);
                    }
                    _ => {
                        return Err(TranslateError::untranslatable(
                            format!("{bpath}.type"),
                            "tool results can only carry text and images",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "must be a string or an array of blocks",
            ));
        }
    }
    let content = if is_error {
        // OpenAI tool messages have no error flag: say it in the text.
        let joined = texts.concat();
        Value::String(if joined.is_empty() {
            "Error".to_owned()
        } else {
            format!("Error: {joined}")
        })
    } else if as_parts && !texts.is_empty() {
        Value::Array(
            texts
                .into_iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        )
    } else {
        Value::String(texts.concat())
    };
    let mut extra = Map::new();
    extra.insert("tool_call_id".into(), Value::String(id.to_owned()));
    Ok(Message {
        role: "tool".into(),
        content: Some(content),
        extra,
    })
}

fn reverse_assistant(content: &Value, path: &str) -> Result<Message, TranslateError> {
    let blocks = match content {
        Value::String(s) => return Ok(Message::text("assistant", s.clone())),
        Value::Array(blocks) => blocks,
        _ => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "must be a string or an array of blocks",
            ));
        }
    };
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let bpath = format!("{path}.content[{j}]");
        let obj = super::request::object(block, &bpath)?;
        match obj.get("type").and_then(Value::as_str) {
            Some("text") => {
                check_block_keys(obj, &bpath, &["type", "text"])?;
                texts.push(super::request::string_field(obj, "text", &bpath)?.to_owned());
            }
            Some("tool_use") => {
                check_block_keys(obj, &bpath, &["type", "id", "name", "input"])?;
                let input = obj
                    .get("input")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new()));
                tool_calls.push(json!({
                    "id": super::request::string_field(obj, "id", &bpath)?,
                    "type": "function",
                    "function": {
                        "name": super::request::string_field(obj, "name", &bpath)?,
                        "arguments": input.to_string(),
                    },
                }));
            }
            // The model's scratchpad and its signature only mean something to Anthropic.
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(TranslateError::untranslatable(
                    format!("{bpath}.type"),
                    &format!("`{other}` blocks have no OpenAI chat equivalent"),
                ));
            }
            None => {
                return Err(TranslateError::invalid(
                    format!("{bpath}.type"),
                    "is required",
                ));
            }
        }
    }
    let content = match texts.len() {
        0 if tool_calls.is_empty() => Some(Value::String(String::new())),
        0 => None,
        1 => texts.pop().map(Value::String),
        _ => Some(Value::Array(
            texts
                .into_iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        )),
    };
    let mut extra = Map::new();
    if !tool_calls.is_empty() {
        extra.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    Ok(Message {
        role: "assistant".into(),
        content,
        extra,
    })
}

fn image_part(obj: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let spath = format!("{path}.source");
    let source = obj
        .get("source")
        .and_then(Value::as_object)
        .ok_or_else(|| TranslateError::invalid(&spath, "is required and must be an object"))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            super::request::string_field(source, "media_type", &spath)?,
            super::request::string_field(source, "data", &spath)?
        ),
        Some("url") => super::request::string_field(source, "url", &spath)?.to_owned(),
        _ => {
            return Err(TranslateError::untranslatable(
                format!("{spath}.type"),
                "only base64 and url image sources can be translated",
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn reverse_tools(value: &Value) -> Result<Value, TranslateError> {
    let tools = value
        .as_array()
        .ok_or_else(|| TranslateError::invalid("tools", "must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let obj = super::request::object(tool, &path)?;
        match obj.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "custom" => {}
            Some(_) => {
                return Err(TranslateError::untranslatable(
                    format!("{path}.type"),
                    "Anthropic server tools cannot run on other providers",
                ));
            }
        }
        check_block_keys(obj, &path, &["type", "name", "description", "input_schema"])?;
        let mut function = Map::new();
        function.insert(
            "name".into(),
            Value::String(super::request::string_field(obj, "name", &path)?.to_owned()),
        );
        if let Some(d) = obj.get("description").filter(|d| !d.is_null()) {
            function.insert("description".into(), d.clone());
        }
        if let Some(schema) = obj.get("input_schema").filter(|s| !s.is_null()) {
            function.insert("parameters".into(), schema.clone());
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// Returns the OpenAI `tool_choice` and whether parallel tool use was disabled.
fn reverse_tool_choice(value: &Value) -> Result<(Value, bool), TranslateError> {
    let obj = value
        .as_object()
        .ok_or_else(|| TranslateError::invalid("tool_choice", "must be an object"))?;
    check_block_keys(
        obj,
        "tool_choice",
        &["type", "name", "disable_parallel_tool_use"],
    )?;
    let disable = match obj.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(TranslateError::invalid(
                "tool_choice.disable_parallel_tool_use",
                "must be a boolean",
            ));
        }
    };
    let choice = match obj.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = super::request::string_field(obj, "name", "tool_choice")?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(TranslateError::invalid(
                "tool_choice.type",
                "must be auto, any, none or tool",
            ));
        }
    };
    Ok((choice, disable))
}

/// Rejects every non-null key of a block that is neither `allowed` nor in
/// [`DROPPED_BLOCK_KEYS`].
fn check_block_keys(
    obj: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> Result<(), TranslateError> {
    for (key, value) in obj {
        let key = key.as_str();
        if !value.is_null() && !allowed.contains(&key) && !DROPPED_BLOCK_KEYS.contains(&key) {
            return Err(TranslateError::untranslatable(
                format!("{path}.{key}"),
                "it has no OpenAI equivalent",
            ));
        }
    }
    Ok(())
}

/// Translates a canonical response into an Anthropic message for an Anthropic client.
///
/// `model` is the model name to report (the one the client asked for). Only `choices[0]` is
/// represented. `finish_reason` `stop` → `end_turn`, `length` → `max_tokens`, `tool_calls` →
/// `tool_use`, `content_filter` (or a `refusal`) → `refusal`; usage `input_tokens` excludes
/// `prompt_tokens_details.cached_tokens`, which is reported as `cache_read_input_tokens`.
pub fn to_anthropic_response(resp: &ChatResponse, model: &str) -> Value {
    let mut content = Vec::new();
    let mut refused = false;
    let choice = resp.choices.first();
    if let Some(choice) = choice {
        let message = &choice.message;
        let text = message.content_text();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        if let Some(refusal) = message
            .extra
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            refused = true;
            content.push(json!({"type": "text", "text": refusal}));
        }
        if let Some(calls) = message.extra.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                let field = |ptr: &str| call.pointer(ptr).and_then(Value::as_str).unwrap_or("");
                // A model that emits arguments that are not a JSON object is buggy; Anthropic
                // clients require an object, so they get an empty one.
                let input = serde_json::from_str::<Value>(field("/function/arguments"))
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| Value::Object(Map::new()));
                content.push(json!({
                    "type": "tool_use",
                    "id": field("/id"),
                    "name": field("/function/name"),
                    "input": input,
                }));
            }
        }
    }
    let stop_reason = if refused {
        "refusal"
    } else {
        stop_reason_from_openai(choice.and_then(|c| c.finish_reason.as_deref()))
    };
    json!({
        "id": resp.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": anthropic_usage(resp.usage.as_ref()),
    })
}

/// Canonical usage → Anthropic usage (reference §4.4).
fn anthropic_usage(usage: Option<&Usage>) -> Value {
    let Some(usage) = usage else {
        return json!({"input_tokens": 0, "output_tokens": 0});
    };
    let cached = usage
        .extra
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut out = json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(cached),
        "output_tokens": usage.completion_tokens,
    });
    if cached > 0 {
        out["cache_read_input_tokens"] = cached.into();
    }
    out
}

/// `{"type":"error","error":{"type": error_type, "message": message}}`, the body of an
/// Anthropic error response and the data of an `event: error`.
pub fn anthropic_error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// The Anthropic `error.type` an Anthropic client expects for a Sluice error class (the
/// reverse of the classification table), for error bodies and `event: error` frames.
pub fn anthropic_error_type(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimited => "rate_limit_error",
        ErrorClass::QuotaExhausted => "billing_error",
        ErrorClass::Auth => "authentication_error",
        ErrorClass::BadRequest | ErrorClass::ContextLength | ErrorClass::ContentPolicy => {
            "invalid_request_error"
        }
        ErrorClass::Overloaded => "overloaded_error",
        ErrorClass::Timeout => "timeout_error",
        ErrorClass::ServerError | ErrorClass::Transport | ErrorClass::StreamInterrupted => {
            "api_error"
        }
    }
}

/// The content block currently open in the Anthropic stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text(u64),
    Tool(u64),
}

impl OpenBlock {
    fn index(self) -> u64 {
        match self {
            OpenBlock::Text(i) | OpenBlock::Tool(i) => i,
        }
    }
}

/// Turns a canonical chunk stream into Anthropic SSE events (reference §4.6, "OpenAI chunks →
/// Anthropic SSE").
///
/// Feed every canonical chunk to [`encode`](Self::encode) and call [`finish`](Self::finish) at
/// the canonical end of the stream (`[DONE]`); write each `(event, data)` pair as
/// `event: <event>\ndata: <json>\n\n`. The encoder emits `message_start` before the first
/// block, then for each text run or tool call a `content_block_start`, its deltas and a
/// `content_block_stop` (an open block is closed before the next one opens; text and tool calls
/// share one block index space, and each OpenAI tool-call index is mapped to its block).
///
/// `message_start` reports `input_tokens: 0`: OpenAI sends usage only in the last chunk, and
/// holding `message_start` back until then would hold back the whole stream. The real counts go
/// in `message_delta.usage` (`input_tokens`, `output_tokens`, `cache_read_input_tokens`), which
/// the Anthropic SDKs let overwrite the `message_start` values. The finish reason and the usage
/// chunk are remembered and written by `finish`, so `message_delta` carries both.
///
/// Only choice 0 is encoded. A refusal delta is written as text and makes the stop reason
/// `refusal`. If a provider interleaved fragments of parallel tool calls, a fragment for a
/// call whose block is already closed is still sent as an `input_json_delta` on that block's
/// index (best effort; OpenAI has not been seen doing this).
#[derive(Debug)]
pub struct AnthropicStreamEncoder {
    model: String,
    started: bool,
    finished: bool,
    open: Option<OpenBlock>,
    next_block: u64,
    /// OpenAI tool-call index → content block index.
    tool_blocks: HashMap<u64, u64>,
    finish_reason: Option<String>,
    refused: bool,
    usage: Option<Usage>,
}

impl AnthropicStreamEncoder {
    /// An encoder reporting `model` (the model name the client asked for).
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            finished: false,
            open: None,
            next_block: 0,
            tool_blocks: HashMap::new(),
            finish_reason: None,
            refused: false,
            usage: None,
        }
    }

    /// Appends the Anthropic events for one canonical chunk to `out`.
    pub fn encode(&mut self, chunk: &ChatChunk, out: &mut Vec<(&'static str, Value)>) {
        if self.finished {
            return;
        }
        self.start(&chunk.id, out);
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(delta) = &choice.delta {
                if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                    self.text(text, out);
                }
                if let Some(refusal) = delta.refusal.as_deref().filter(|t| !t.is_empty()) {
                    self.refused = true;
                    self.text(refusal, out);
                }
                for call in delta.tool_calls.iter().flatten() {
                    self.tool_fragment(call, out);
                }
            }
            if let Some(reason) = &choice.finish_reason {
                self.close(out);
                self.finish_reason = Some(reason.clone());
            }
        }
    }

    /// Ends the Anthropic stream: closes the open block and appends `message_delta` (stop
    /// reason and usage) and `message_stop`. Calling it again does nothing.
    pub fn finish(&mut self, out: &mut Vec<(&'static str, Value)>) {
        if self.finished {
            return;
        }
        self.start("", out);
        self.close(out);
        self.finished = true;
        let stop_reason = if self.refused {
            "refusal"
        } else {
            stop_reason_from_openai(self.finish_reason.as_deref())
        };
        out.push((
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": anthropic_usage(self.usage.as_ref()),
            }),
        ));
        out.push(("message_stop", json!({"type": "message_stop"})));
    }

    /// The `event: error` frame for an error after the stream started (see
    /// [`anthropic_error_type`] for the type).
    pub fn error_event(error_type: &str, message: &str) -> (&'static str, Value) {
        ("error", anthropic_error_body(error_type, message))
    }

    fn start(&mut self, id: &str, out: &mut Vec<(&'static str, Value)>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = if id.is_empty() { "msg_sluice" } else { id };
        out.push((
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self.model,
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
    }

    fn text(&mut self, text: &str, out: &mut Vec<(&'static str, Value)>) {
        let index = match self.open {
            Some(OpenBlock::Text(i)) => i,
            _ => {
                self.close(out);
                self.open_block(OpenBlock::Text, json!({"type": "text", "text": ""}), out)
            }
        };
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    fn tool_fragment(&mut self, call: &Value, out: &mut Vec<(&'static str, Value)>) {
        let openai_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let index = match self.tool_blocks.get(&openai_index) {
            Some(&i) => i,
            None => {
                self.close(out);
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("call_{openai_index}"), str::to_owned);
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let i = self.open_block(OpenBlock::Tool, block, out);
                self.tool_blocks.insert(openai_index, i);
                i
            }
        };
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !arguments.is_empty() {
            out.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ));
        }
    }

    fn open_block(
        &mut self,
        kind: fn(u64) -> OpenBlock,
        content_block: Value,
        out: &mut Vec<(&'static str, Value)>,
    ) -> u64 {
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(kind(index));
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        ));
        index
    }

    fn close(&mut self, out: &mut Vec<(&'static str, Value)>) {
        if let Some(block) = self.open.take() {
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": block.index()}),
            ));
        }
    }
}
