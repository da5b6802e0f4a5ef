//! OpenAI Chat Completions wire types: Sluice's canonical request and response shapes.
//!
//! Only the fields Sluice reasons about are typed (model, messages, streaming flags, token
//! limits, deltas, usage). Everything else lands in the `extra` map of the nearest struct and is
//! written back unchanged, so a field OpenAI adds tomorrow passes through a Sluice built today.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name as the caller sent it (a route name, `provider/model`, or a raw model).
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// `true` for an SSE response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Deprecated output limit, still accepted by most models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Output limit including reasoning tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// Every other field, passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// A request with one user message.
    pub fn user(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            messages: vec![Message::text("user", prompt)],
            ..Self::default()
        }
    }

    /// Whether the caller asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the caller asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Ask for a final chunk with `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options (`include_obfuscation`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One message of the conversation, or the assistant's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant`, `tool`.
    pub role: String,
    /// A string, an array of content parts, or absent/null (assistant tool calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// `name`, `tool_calls`, `tool_call_id`, `refusal`, ... untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A message with plain-text content.
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Some(Value::String(text.into())),
            extra: Map::new(),
        }
    }

    /// The text of the content: the string itself, or the `text` parts joined.
    pub fn content_text(&self) -> String {
        match &self.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            _ => String::new(),
        }
    }
}

/// Non-streaming response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Completion id.
    #[serde(default)]
    pub id: String,
    /// `chat.completion`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// One choice per `n`.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `system_fingerprint`, `service_tier`, ... untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatResponse {
    /// The first choice's text, or empty.
    pub fn text(&self) -> String {
        self.choices
            .first()
            .map(|c| c.message.content_text())
            .unwrap_or_default()
    }
}

/// One choice of a non-streaming response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position in `choices`.
    #[serde(default)]
    pub index: u32,
    /// The assistant's message.
    #[serde(default)]
    pub message: Message,
    /// `stop`, `length`, `tool_calls`, `content_filter`.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// `logprobs`, ... untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Sum of both.
    #[serde(default)]
    pub total_tokens: u64,
    /// Token details, untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `chat.completion.chunk` of a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Completion id, the same for every chunk.
    #[serde(default)]
    pub id: String,
    /// `chat.completion.chunk`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// Deltas; empty in the final usage chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Totals, only in the final usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `system_fingerprint`, `obfuscation`, ... untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatChunk {
    /// Whether this chunk carries content the caller must see: a text, tool-call or refusal
    /// delta. This is the streaming commit point; role-only and finish-only chunks, Azure
    /// filter chunks and the usage chunk are not content.
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.as_ref().is_some_and(|d| {
                d.content.as_deref().is_some_and(|s| !s.is_empty())
                    || d.refusal.as_deref().is_some_and(|s| !s.is_empty())
                    || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
            })
        })
    }

    /// Whether this is the final usage-only chunk (`choices: []` with `usage`).
    pub fn is_usage_only(&self) -> bool {
        self.choices.is_empty() && self.usage.is_some()
    }

    /// The text delta of the first choice, if any.
    pub fn text(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|c| c.delta.as_ref())
            .and_then(|d| d.content.as_deref())
    }
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Choice index (interleaves when `n > 1`).
    #[serde(default)]
    pub index: u32,
    /// The increment; Azure's asynchronous-filter chunks omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// `logprobs`, filter results, ... untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Incremental fields of a chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Only in the first delta of a choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call fragments (`index`, `id`, `function.name`, `function.arguments` pieces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// Refusal text piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Anything else, untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_request_fields_round_trip() {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "user", "content": "hi", "name": "alice"},
                {"role": "assistant", "content": null,
                 "tool_calls": [{"id": "call_1", "type": "function",
                                 "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"ok\":true}"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "response_format": {"type": "json_object"},
            "logprobs": true,
            "future_field": {"nested": [1, 2, 3]},
            "max_completion_tokens": 64
        });
        let req: ChatRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(req.max_completion_tokens, Some(64));
        assert_eq!(req.messages[0].extra["name"], "alice");
        let back = serde_json::to_value(&req).unwrap();
        let mut expected = body;
        // `content: null` and an absent content mean the same thing to every provider
        expected["messages"][1]
            .as_object_mut()
            .unwrap()
            .remove("content");
        assert_eq!(back, expected);
    }

    #[test]
    fn reference_stream_chunks_parse_and_classify() {
        let preamble: ChatChunk = serde_json::from_str(r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"r4N7vQ2m"}"#).unwrap();
        assert!(!preamble.has_content());
        let content: ChatChunk = serde_json::from_str(r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#).unwrap();
        assert!(content.has_content());
        assert_eq!(content.text(), Some("Hello"));
        let usage: ChatChunk = serde_json::from_str(r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#).unwrap();
        assert!(usage.is_usage_only() && !usage.has_content());
        let tool: ChatChunk = serde_json::from_str(r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_D","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#).unwrap();
        assert!(tool.has_content());
        let azure_filter: ChatChunk = serde_json::from_str(r#"{"id":"","object":"","created":0,"model":"","choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#).unwrap();
        assert!(!azure_filter.has_content() && !azure_filter.is_usage_only());
        let no_delta: ChatChunk = serde_json::from_str(
            r#"{"id":"x","choices":[{"index":0,"content_filter_offsets":{}}]}"#,
        )
        .unwrap();
        assert!(!no_delta.has_content());
    }

    #[test]
    fn content_text_joins_text_parts() {
        let m: Message = serde_json::from_value(json!({"role":"user","content":[
            {"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]}))
        .unwrap();
        assert_eq!(m.content_text(), "ab");
    }
}
