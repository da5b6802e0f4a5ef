//! Anthropic message JSON → canonical [`ChatResponse`], and the usage arithmetic shared with the
//! stream decoder.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_core::ErrorClass;

use super::{finish_reason_from_anthropic, unix_now};
use crate::{ChatResponse, Choice, Message, UpstreamError, Usage};

/// Anthropic `usage` (message, `message_start.message.usage`, `message_delta.usage`). Every
/// field is optional because `message_delta` carries only what changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(super) struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Overwrites every field `newer` has (the SDK accumulator's rule: the counts are
    /// cumulative, never added).
    pub fn overwrite_with(&mut self, newer: &AnthropicUsage) {
        let AnthropicUsage {
            input_tokens,
            cache_creation_input_tokens,
            cache_read_input_tokens,
            output_tokens,
        } = *newer;
        self.input_tokens = input_tokens.or(self.input_tokens);
        self.cache_creation_input_tokens =
            cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.output_tokens = output_tokens.or(self.output_tokens);
    }

    /// Canonical usage: prompt = input + cache writes + cache reads.
    pub fn to_openai(self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let prompt_tokens = self.input_tokens.unwrap_or(0)
            + self.cache_creation_input_tokens.unwrap_or(0)
            + cache_read;
        let completion_tokens = self.output_tokens.unwrap_or(0);
        let mut extra = Map::new();
        if cache_read > 0 {
            extra.insert(
                "prompt_tokens_details".into(),
                json!({ "cached_tokens": cache_read }),
            );
        }
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            extra,
        }
    }
}

/// The parts of a non-streaming Anthropic message Sluice reads.
#[derive(Debug, Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// Parses a successful `POST /v1/messages` body.
pub(super) fn parse_message(body: &[u8]) -> Result<ChatResponse, UpstreamError> {
    let msg: AnthropicMessage = serde_json::from_slice(body).map_err(|e| {
        UpstreamError::new(
            ErrorClass::Transport,
            format!("malformed response body: {e}"),
        )
        .with_source(e)
    })?;

    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &msg.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let piece = block.get("text").and_then(Value::as_str).unwrap_or("");
                text.get_or_insert_with(String::new).push_str(piece);
            }
            Some("tool_use") => tool_calls.push(tool_call(block)?),
            // thinking, redacted_thinking, server-tool blocks: not OpenAI answer content.
            _ => {}
        }
    }

    let mut message = Message {
        role: "assistant".into(),
        content: text.map(Value::String),
        extra: Map::new(),
    };
    if !tool_calls.is_empty() {
        message
            .extra
            .insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let finish_reason = msg
        .stop_reason
        .as_deref()
        .map_or("stop", finish_reason_from_anthropic);
    Ok(ChatResponse {
        id: msg.id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: msg.model,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish_reason.to_owned()),
            extra: Map::new(),
        }],
        usage: msg.usage.map(AnthropicUsage::to_openai),
        extra: Map::new(),
    })
}

/// A `tool_use` block as an OpenAI tool call.
fn tool_call(block: &Value) -> Result<Value, UpstreamError> {
    let malformed = || {
        UpstreamError::new(
            ErrorClass::Transport,
            "malformed response body: a tool_use block lacks its id or name",
        )
    };
    let id = block
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?;
    let name = block
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?;
    let input = block
        .get("input")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    }))
}
