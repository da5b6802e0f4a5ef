//! Anthropic SSE → canonical stream events (reference §4.6, "Anthropic SSE → OpenAI chunks").

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value, json};
use sluice_core::{ErrorClass, SseEvent};

use super::response::AnthropicUsage;
use super::{error_from_body, finish_reason_from_anthropic, truncate, unix_now};
use crate::{ChatChunk, ChunkChoice, Delta, StreamDecoder, StreamEvent, UpstreamError};

/// State of one Anthropic stream.
#[derive(Debug, Default)]
pub(super) struct AnthropicStreamDecoder {
    id: String,
    model: String,
    created: u64,
    /// Input-side counts from `message_start`, then overwritten by each `message_delta`.
    usage: AnthropicUsage,
    /// Content block index → OpenAI tool-call index (0, 1, ... over tool calls only).
    tool_index: HashMap<u64, u32>,
    next_tool: u32,
    /// Whether the finish chunk went out (a message may have several `message_delta`s).
    finished: bool,
}

impl StreamDecoder for AnthropicStreamDecoder {
    fn decode(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), UpstreamError> {
        let data = event.data.trim();
        if data.is_empty() {
            // A keep-alive some proxies send as `event: ping` with an empty `data:` line.
            return Ok(());
        }
        let frame: Value =
            serde_json::from_str(data).map_err(|e| malformed(data, &e.to_string()))?;
        if !frame.is_object() {
            return Err(malformed(data, "not a JSON object"));
        }
        // The JSON `type` repeats the event name; prefer it (some proxies drop `event:` lines).
        let kind = frame
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or("");
        if kind == "error" || event.event.as_deref() == Some("error") {
            let (err, _) = error_from_body(None, data.as_bytes());
            out.push_back(StreamEvent::Error(err));
            return Ok(());
        }
        match kind {
            "message_start" => self.message_start(&frame, out),
            "content_block_start" => self.block_start(&frame, out, data)?,
            "content_block_delta" => self.block_delta(&frame, out, data)?,
            "message_delta" => self.message_delta(&frame, out, data)?,
            "message_stop" => {
                if !self.finished {
                    // Anthropic always sends a stop reason; a stream that did not still gets
                    // the finish chunk OpenAI clients wait for.
                    self.finished = true;
                    let finish = self.delta_chunk(Delta::default(), Some("stop".to_owned()));
                    out.push_back(StreamEvent::Chunk(finish));
                }
                let usage = self.chunk(Vec::new(), Some(self.usage.to_openai()));
                out.push_back(StreamEvent::Chunk(usage));
                out.push_back(StreamEvent::Done);
            }
            // ping, content_block_stop, and event types Anthropic adds later (its versioning
            // policy says clients must ignore unknown events).
            _ => {}
        }
        Ok(())
    }
}

impl AnthropicStreamDecoder {
    fn message_start(&mut self, frame: &Value, out: &mut VecDeque<StreamEvent>) {
        let message = frame.get("message");
        let text = |key: &str| {
            message
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        self.id = text("id");
        self.model = text("model");
        self.created = unix_now();
        if let Some(usage) = message
            .and_then(|m| m.get("usage"))
            .and_then(|u| serde_json::from_value::<AnthropicUsage>(u.clone()).ok())
        {
            self.usage.overwrite_with(&usage);
        }
        out.push_back(StreamEvent::Chunk(self.delta_chunk(
            Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        )));
    }

    fn block_start(
        &mut self,
        frame: &Value,
        out: &mut VecDeque<StreamEvent>,
        data: &str,
    ) -> Result<(), UpstreamError> {
        let index = block_index(frame, data)?;
        let block = frame
            .get("content_block")
            .ok_or_else(|| malformed(data, "content_block_start without content_block"))?;
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                self.push_text(text, out);
            }
            Some("tool_use") => {
                let ordinal = self.next_tool;
                self.next_tool += 1;
                self.tool_index.insert(index, ordinal);
                let field = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or("");
                let call = json!({
                    "index": ordinal,
                    "id": field("id"),
                    "type": "function",
                    "function": {"name": field("name"), "arguments": ""},
                });
                self.push_tool_calls(call, out);
            }
            // thinking, redacted_thinking, server_tool_use, ...: not OpenAI content.
            _ => {}
        }
        Ok(())
    }

    fn block_delta(
        &mut self,
        frame: &Value,
        out: &mut VecDeque<StreamEvent>,
        data: &str,
    ) -> Result<(), UpstreamError> {
        let index = block_index(frame, data)?;
        let delta = frame
            .get("delta")
            .ok_or_else(|| malformed(data, "content_block_delta without delta"))?;
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                self.push_text(text, out);
            }
            Some("input_json_delta") => {
                let partial = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                // Deltas of a block that is not a client tool call (server_tool_use) are
                // dropped with the block; empty fragments carry nothing.
                match self.tool_index.get(&index) {
                    Some(&ordinal) if !partial.is_empty() => {
                        let call = json!({"index": ordinal, "function": {"arguments": partial}});
                        self.push_tool_calls(call, out);
                    }
                    _ => {}
                }
            }
            // thinking_delta, signature_delta, citations_delta, future delta types.
            _ => {}
        }
        Ok(())
    }

    fn message_delta(
        &mut self,
        frame: &Value,
        out: &mut VecDeque<StreamEvent>,
        data: &str,
    ) -> Result<(), UpstreamError> {
        if let Some(usage) = frame.get("usage").filter(|u| !u.is_null()) {
            let usage: AnthropicUsage = serde_json::from_value(usage.clone())
                .map_err(|e| malformed(data, &e.to_string()))?;
            self.usage.overwrite_with(&usage);
        }
        let stop_reason = frame
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str);
        if let Some(reason) = stop_reason.filter(|_| !self.finished) {
            self.finished = true;
            let finish = finish_reason_from_anthropic(reason).to_owned();
            out.push_back(StreamEvent::Chunk(
                self.delta_chunk(Delta::default(), Some(finish)),
            ));
        }
        Ok(())
    }

    fn push_text(&self, text: &str, out: &mut VecDeque<StreamEvent>) {
        if !text.is_empty() {
            let delta = Delta {
                content: Some(text.to_owned()),
                ..Delta::default()
            };
            out.push_back(StreamEvent::Chunk(self.delta_chunk(delta, None)));
        }
    }

    fn push_tool_calls(&self, call: Value, out: &mut VecDeque<StreamEvent>) {
        let delta = Delta {
            tool_calls: Some(vec![call]),
            ..Delta::default()
        };
        out.push_back(StreamEvent::Chunk(self.delta_chunk(delta, None)));
    }

    fn delta_chunk(&self, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        let choice = ChunkChoice {
            index: 0,
            delta: Some(delta),
            finish_reason,
            extra: Map::new(),
        };
        self.chunk(vec![choice], None)
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<crate::Usage>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            extra: Map::new(),
        }
    }
}

fn block_index(frame: &Value, data: &str) -> Result<u64, UpstreamError> {
    frame
        .get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed(data, "content block event without an index"))
}

fn malformed(data: &str, why: &str) -> UpstreamError {
    let mut shown = data.to_owned();
    truncate(&mut shown, 200);
    UpstreamError::new(
        ErrorClass::Transport,
        format!("malformed stream frame ({why}): {shown}"),
    )
}
