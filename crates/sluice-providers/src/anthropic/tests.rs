//! Tests of the Anthropic adapter and both translation directions, on the reference fixtures.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::HeaderValue;
use serde_json::{Value, json};
use sluice_core::{ErrorClass, SseEvent, SseItem, SseParser};

use super::*;
use crate::{ApiKey, ChatChunk, ChatRequest, StreamEvent};

// ---- helpers -----------------------------------------------------------------------------

/// Splits SSE text into events with the real parser.
fn sse_events(text: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    parser.push(text.as_bytes());
    let mut events = Vec::new();
    while let Some(item) = parser.next_item().or_else(|| parser.finish()) {
        match item.expect("valid SSE") {
            SseItem::Event(e) => events.push(e),
            SseItem::Comment(_) => {}
        }
    }
    events
}

/// Feeds SSE text through a fresh decoder, event by event. Chunks are rendered as JSON with
/// `created` zeroed; `Done` is `"[DONE]"`; errors are `{"error": class, "message": ..}`.
fn decode_stream(text: &str) -> Vec<Value> {
    let mut decoder = AnthropicAdapter.stream_decoder();
    let mut rendered = Vec::new();
    for event in sse_events(text) {
        let mut out = VecDeque::new();
        decoder.decode(event, &mut out).expect("decodes");
        rendered.extend(out.into_iter().map(render));
    }
    rendered
}

fn render(event: StreamEvent) -> Value {
    match event {
        StreamEvent::Chunk(mut chunk) => {
            assert!(chunk.created > 0, "created is set");
            chunk.created = 0;
            serde_json::to_value(chunk).unwrap()
        }
        StreamEvent::Done => json!("[DONE]"),
        StreamEvent::Error(e) => {
            json!({"error": e.class.metric_label(), "message": e.message, "status": e.status})
        }
    }
}

fn chunk_json(id: &str, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn usage_json(id: &str, model: &str, prompt: u64, completion: u64) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
           "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                    "total_tokens": prompt + completion}})
}

fn openai_request(body: Value) -> ChatRequest {
    serde_json::from_value(body).expect("valid canonical request")
}

fn encode_all(model: &str, chunks: &[&str]) -> Vec<Value> {
    let mut encoder = AnthropicStreamEncoder::new(model);
    let mut out = Vec::new();
    for c in chunks {
        let chunk: ChatChunk = serde_json::from_str(c).unwrap();
        encoder.encode(&chunk, &mut out);
    }
    encoder.finish(&mut out);
    // finish is idempotent
    let before = out.len();
    encoder.finish(&mut out);
    assert_eq!(out.len(), before);
    out.into_iter()
        .map(|(event, data)| {
            assert_eq!(
                data["type"], event,
                "the data's type repeats the event name"
            );
            json!({"event": event, "data": data})
        })
        .collect()
}

fn ev(event: &str, data: Value) -> Value {
    json!({"event": event, "data": data})
}

// ---- fixtures (reference §1 and §2, verbatim) ----------------------------------------------

const RESPONSE_2_2: &str = r#"{
  "id": "msg_019Q1hrJbZG26Fb9BQhrkHEr",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-20250514",
  "content": [
    {"type": "text", "text": "I'll check the current weather in Paris for you."},
    {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather",
     "input": {"location": "Paris"}}
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {"input_tokens": 377, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": 65, "service_tier": "standard"}
}"#;

const BASIC_STREAM_2_3: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}

event: message_stop
data: {"type":"message_stop"}

"#;

/// The §2.3 tool-use excerpt, verbatim.
const TOOL_STREAM_EXCERPT_2_3: &str = r#"event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"locati"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"on\": \"Paris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":65}}

"#;

/// The events around the excerpt, assembled from the §2.2 message the fixture streams.
const TOOL_STREAM_HEAD: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_019Q1hrJbZG26Fb9BQhrkHEr","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I'll check the current weather in Paris for you."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

"#;

const MESSAGE_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

const OPENAI_REQUEST_1_1: &str = r#"{
  "model": "gpt-4o-mini",
  "messages": [
    {"role": "developer", "content": "You are terse."},
    {"role": "system", "content": "Answer in English."},
    {"role": "user", "content": "What's the weather in Boston?", "name": "alice"},
    {"role": "assistant", "content": null,
     "tool_calls": [{"id": "call_abc123", "type": "function",
                     "function": {"name": "get_current_weather",
                                  "arguments": "{\"location\":\"Boston, MA\"}"}}]},
    {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temp_f\":51}"},
    {"role": "user", "content": [
      {"type": "text", "text": "And this picture?"},
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR...", "detail": "auto"}}
    ]}
  ],
  "tools": [{"type": "function", "function": {
      "name": "get_current_weather",
      "description": "Get the current weather in a given location",
      "parameters": {"type": "object",
                     "properties": {"location": {"type": "string"},
                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                     "required": ["location"]}}}],
  "tool_choice": "auto",
  "parallel_tool_calls": true,
  "max_completion_tokens": 1024,
  "n": 1,
  "temperature": 0.7,
  "stop": ["\n\nUser:"],
  "response_format": {"type": "json_schema",
                      "json_schema": {"name": "answer", "strict": true,
                                      "schema": {"type": "object", "properties": {"a": {"type": "string"}},
                                                 "required": ["a"], "additionalProperties": false}}},
  "stream": true,
  "stream_options": {"include_usage": true},
  "user": "user-1234"
}"#;

const ANTHROPIC_REQUEST_2_1: &str = r#"{
  "model": "claude-sonnet-4-5-20250929",
  "max_tokens": 1024,
  "system": "You are terse.",
  "messages": [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": [
      {"type": "text", "text": "I'll check."},
      {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather",
       "input": {"location": "Paris"}}]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
       "content": "15°C, cloudy", "is_error": false},
      {"type": "text", "text": "Thanks. Also describe this image."},
      {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR..."}}]}
  ],
  "tools": [{"name": "get_weather", "description": "Get current weather",
             "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                              "required": ["location"]}}],
  "tool_choice": {"type": "auto", "disable_parallel_tool_use": false},
  "stop_sequences": ["\n\nUser:"],
  "temperature": 0.7,
  "stream": true,
  "metadata": {"user_id": "user-1234"}
}"#;

const OPENAI_TEXT_STREAM_1_3: &[&str] = &[
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"r4N7vQ2m"}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
];

const OPENAI_TOOL_STREAM_1_3: &[&str] = &[
    r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"loc"}}]},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ation\":\"Paris\"}"}}]},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
];

// ---- adapter: build ------------------------------------------------------------------------

fn endpoint(base_url: &str) -> Endpoint {
    Endpoint {
        name: Arc::from("anthropic"),
        base_url: base_url.to_owned(),
        api_key: Some(ApiKey::new("sk-ant-test")),
        headers: HeaderMap::new(),
        adapter: Arc::new(AnthropicAdapter),
    }
}

fn http() -> reqwest::Client {
    crate::build_http_client(Duration::from_secs(5)).unwrap()
}

#[test]
fn build_posts_to_v1_messages_with_anthropic_headers() {
    assert_eq!(AnthropicAdapter.kind(), "anthropic");
    let req = ChatRequest::user("claude-sonnet-4-5", "hi");
    let built = AnthropicAdapter
        .build(&http(), &endpoint("https://api.anthropic.com"), &req, true)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(built.method(), http::Method::POST);
    assert_eq!(
        built.url().as_str(),
        "https://api.anthropic.com/v1/messages"
    );
    let h = built.headers();
    assert_eq!(h["x-api-key"], "sk-ant-test");
    assert!(h["x-api-key"].is_sensitive());
    assert_eq!(h["anthropic-version"], "2023-06-01");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["accept"], "text/event-stream");
    assert!(h.get("authorization").is_none());
    let body: Value = serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"model": "claude-sonnet-4-5", "max_tokens": DEFAULT_MAX_TOKENS,
               "messages": [{"role": "user", "content": "hi"}], "stream": true})
    );

    for base in [
        "https://proxy.example/anthropic/v1",
        "https://proxy.example/anthropic/v1/",
    ] {
        let built = AnthropicAdapter
            .build(&http(), &endpoint(base), &req, false)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            built.url().as_str(),
            "https://proxy.example/anthropic/v1/messages"
        );
        assert_eq!(built.headers()["accept"], "application/json");
        let body: Value =
            serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap();
        assert!(body.get("stream").is_none());
    }
}

#[test]
fn build_rejects_untranslatable_requests_as_bad_request() {
    let mut req = ChatRequest::user("claude", "hi");
    req.extra.insert("logprobs".into(), json!(true));
    let err = AnthropicAdapter
        .build(&http(), &endpoint("https://api.anthropic.com"), &req, false)
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::BadRequest);
    assert!(
        err.message
            .starts_with("field `logprobs` cannot be sent to an Anthropic model"),
        "{}",
        err.message
    );
}

// ---- adapter: responses, errors --------------------------------------------------------------

#[test]
fn response_2_2_becomes_canonical() {
    let resp = AnthropicAdapter
        .parse_response(RESPONSE_2_2.as_bytes())
        .unwrap();
    assert_eq!(resp.id, "msg_019Q1hrJbZG26Fb9BQhrkHEr");
    assert_eq!(resp.object, "chat.completion");
    assert_eq!(resp.model, "claude-sonnet-4-20250514");
    assert!(resp.created > 0);
    assert_eq!(resp.choices.len(), 1);
    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(choice.message.role, "assistant");
    assert_eq!(
        choice.message.content,
        Some(json!("I'll check the current weather in Paris for you."))
    );
    assert_eq!(
        choice.message.extra["tool_calls"],
        json!([{"id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}])
    );
    let usage = resp.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (377, 65, 442)
    );
    assert!(usage.extra.is_empty());
}

#[test]
fn response_usage_counts_cache_and_maps_stop_reasons() {
    let body = |stop: &str| {
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
               "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                           {"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
               "stop_reason": stop, "stop_sequence": null,
               "usage": {"input_tokens": 10, "cache_creation_input_tokens": 100,
                         "cache_read_input_tokens": 1000, "output_tokens": 5}})
        .to_string()
    };
    let resp = AnthropicAdapter
        .parse_response(body("end_turn").as_bytes())
        .unwrap();
    assert_eq!(resp.text(), "ab");
    assert!(resp.choices[0].message.extra.get("tool_calls").is_none());
    let usage = resp.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 1110);
    assert_eq!(usage.completion_tokens, 5);
    assert_eq!(usage.total_tokens, 1115);
    assert_eq!(
        usage.extra["prompt_tokens_details"],
        json!({"cached_tokens": 1000})
    );
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "length"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
    ] {
        let resp = AnthropicAdapter
            .parse_response(body(stop).as_bytes())
            .unwrap();
        assert_eq!(
            resp.choices[0].finish_reason.as_deref(),
            Some(finish),
            "{stop}"
        );
    }
    // No text block at all: content is null.
    let only_tool = r#"{"id":"m","content":[{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use"}"#;
    let resp = AnthropicAdapter
        .parse_response(only_tool.as_bytes())
        .unwrap();
    assert_eq!(resp.choices[0].message.content, None);
    assert_eq!(
        resp.choices[0].message.extra["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
}

#[test]
fn malformed_response_is_transport() {
    for body in [&b"{not json"[..], br#"{"id":"x"}"#, b""] {
        let e = AnthropicAdapter.parse_response(body).unwrap_err();
        assert_eq!(e.class, ErrorClass::Transport);
        assert!(e.message.starts_with("malformed response body"));
    }
}

#[test]
fn error_bodies_2_4_are_classified() {
    let now = SystemTime::now();
    let cases: &[(u16, &str, ErrorClass)] = &[
        (
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            ErrorClass::Auth,
        ),
        (
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"},"request_id":"req_011CVQe1dLrGNMJyE1ghG1av"}"#,
            ErrorClass::ContextLength,
        ),
        (
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
            ErrorClass::QuotaExhausted,
        ),
        (
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ErrorClass::Overloaded,
        ),
        (
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#,
            ErrorClass::RateLimited,
        ),
        (
            500,
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
            ErrorClass::ServerError,
        ),
        (
            403,
            r#"{"type":"error","error":{"type":"permission_error","message":"no"}}"#,
            ErrorClass::Auth,
        ),
        (
            404,
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#,
            ErrorClass::BadRequest,
        ),
    ];
    for (status, body, want) in cases {
        let e = AnthropicAdapter.parse_error(*status, &HeaderMap::new(), body.as_bytes(), now);
        assert_eq!(e.class, *want, "{status} {body}");
        assert_eq!(e.status, Some(*status));
        let parsed: Value = serde_json::from_str(body).unwrap();
        assert_eq!(e.provider_type.as_deref(), parsed["error"]["type"].as_str());
        assert_eq!(e.message, parsed["error"]["message"].as_str().unwrap());
        assert_eq!(e.provider_code, None);
    }
}

#[test]
fn error_hints_come_from_headers_with_the_body_request_id_as_fallback() {
    let now = SystemTime::now();
    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"},"request_id":"req_body"}"#;
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("30"));
    headers.insert(
        "anthropic-ratelimit-requests-remaining",
        HeaderValue::from_static("0"),
    );
    let e = AnthropicAdapter.parse_error(429, &headers, body, now);
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.hints.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(e.hints.request_id.as_deref(), Some("req_body"));

    headers.insert("request-id", HeaderValue::from_static("req_header"));
    let e = AnthropicAdapter.parse_error(429, &headers, body, now);
    assert_eq!(e.hints.request_id.as_deref(), Some("req_header"));
}

#[test]
fn non_json_error_bodies_classify_by_status() {
    let now = SystemTime::now();
    let html = b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body><center><h1>413 Request Entity Too Large</h1></center><hr><center>cloudflare</center></body>\r\n</html>\r\n";
    let e = AnthropicAdapter.parse_error(413, &HeaderMap::new(), html, now);
    assert_eq!(e.class, ErrorClass::BadRequest);
    assert_eq!(e.provider_type, None);
    assert!(e.message.starts_with("<html>") && e.message.ends_with("</html>"));

    let e = AnthropicAdapter.parse_error(529, &HeaderMap::new(), b"", now);
    assert_eq!(e.class, ErrorClass::Overloaded);
    assert_eq!(e.message, "HTTP 529 with an empty body");

    let long = format!(
        r#"{{"type":"error","error":{{"type":"api_error","message":"{}"}}}}"#,
        "é".repeat(3000)
    );
    let e = AnthropicAdapter.parse_error(500, &HeaderMap::new(), long.as_bytes(), now);
    assert!(e.message.len() <= MAX_ERROR_MESSAGE + 3 && e.message.ends_with("..."));
}

// ---- adapter: stream decoder -------------------------------------------------------------------

#[test]
fn basic_stream_2_3_decodes_to_canonical_chunks() {
    let id = "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK";
    let model = "claude-3-opus-latest";
    assert_eq!(
        decode_stream(BASIC_STREAM_2_3),
        vec![
            chunk_json(id, model, json!({"role": "assistant", "content": ""}), None),
            chunk_json(id, model, json!({"content": "Hello"}), None),
            chunk_json(id, model, json!({"content": " there"}), None),
            chunk_json(id, model, json!({}), Some("stop")),
            usage_json(id, model, 11, 6),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn tool_use_stream_2_3_decodes_to_tool_call_chunks() {
    let stream = format!("{TOOL_STREAM_HEAD}{TOOL_STREAM_EXCERPT_2_3}{MESSAGE_STOP}");
    let id = "msg_019Q1hrJbZG26Fb9BQhrkHEr";
    let model = "claude-sonnet-4-20250514";
    let chunks = decode_stream(&stream);
    assert_eq!(
        chunks,
        vec![
            chunk_json(id, model, json!({"role": "assistant", "content": ""}), None),
            chunk_json(
                id,
                model,
                json!({"content": "I'll check the current weather in Paris for you."}),
                None
            ),
            // content block 1 is the first tool call: OpenAI index 0
            chunk_json(
                id,
                model,
                json!({"tool_calls": [{"index": 0, "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
                                        "type": "function",
                                        "function": {"name": "get_weather", "arguments": ""}}]}),
                None
            ),
            chunk_json(
                id,
                model,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"locati"}}]}),
                None
            ),
            chunk_json(
                id,
                model,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "on\": \"Paris\"}"}}]}),
                None
            ),
            chunk_json(id, model, json!({}), Some("tool_calls")),
            usage_json(id, model, 377, 65),
            json!("[DONE]"),
        ]
    );
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"location": "Paris"})
    );
}

#[test]
fn mid_stream_overloaded_error_event() {
    let stream = format!(
        "{}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n",
        BASIC_STREAM_2_3
            .split("event: content_block_stop")
            .next()
            .unwrap()
    );
    let out = decode_stream(&stream);
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(
        out[3],
        json!({"error": "overloaded", "message": "Overloaded", "status": null})
    );

    // The typed error itself.
    let mut decoder = AnthropicAdapter.stream_decoder();
    let mut events = VecDeque::new();
    decoder
        .decode(
            SseEvent {
                event: Some("error".into()),
                data: r#"{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}"#
                    .into(),
                ..SseEvent::default()
            },
            &mut events,
        )
        .unwrap();
    match events.pop_front() {
        Some(StreamEvent::Error(e)) => {
            assert_eq!(e.class, ErrorClass::RateLimited);
            assert_eq!(e.status, None);
            assert_eq!(e.provider_type.as_deref(), Some("rate_limit_error"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stream_thinking_ping_unknown_events_and_repeated_message_delta() {
    let stream = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_t","model":"claude","content":[],"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":20,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: ping
data: {"type": "ping"}

event: brand_new_event
data: {"type":"brand_new_event","whatever":1}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":"Hi"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{}}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":7}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":9,"input_tokens":12}}

event: message_stop
data: {"type":"message_stop"}

"#;
    let mut usage = usage_json("msg_t", "claude", 12 + 5 + 20, 9);
    usage["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 20});
    assert_eq!(
        decode_stream(stream),
        vec![
            chunk_json(
                "msg_t",
                "claude",
                json!({"role": "assistant", "content": ""}),
                None
            ),
            // a non-empty text in content_block_start is content
            chunk_json("msg_t", "claude", json!({"content": "Hi"}), None),
            // one finish chunk however many message_deltas
            chunk_json("msg_t", "claude", json!({}), Some("length")),
            // usage overwritten, not added
            usage,
            json!("[DONE]"),
        ]
    );
}

#[test]
fn stream_without_stop_reason_still_finishes_and_empty_pings_are_ignored() {
    let stream = r#"event: message_start
data: {"type":"message_start","message":{"id":"m1","model":"claude","usage":{"input_tokens":3}}}

event: ping
data:

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}

event: message_stop
data: {"type":"message_stop"}

"#;
    assert_eq!(
        decode_stream(stream),
        vec![
            chunk_json(
                "m1",
                "claude",
                json!({"role": "assistant", "content": ""}),
                None
            ),
            chunk_json("m1", "claude", json!({"content": "ok"}), None),
            chunk_json("m1", "claude", json!({}), Some("stop")),
            usage_json("m1", "claude", 3, 0),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn malformed_stream_frame_is_transport() {
    let mut decoder = AnthropicAdapter.stream_decoder();
    for data in [
        "{not json",
        "[1,2]",
        r#"{"type":"content_block_delta","delta":{}}"#,
    ] {
        let mut out = VecDeque::new();
        let e = decoder
            .decode(
                SseEvent {
                    event: Some("content_block_delta".into()),
                    data: data.into(),
                    ..SseEvent::default()
                },
                &mut out,
            )
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Transport);
        assert!(
            e.message.starts_with("malformed stream frame"),
            "{}",
            e.message
        );
        assert!(out.is_empty());
    }
}

// ---- OpenAI → Anthropic request ------------------------------------------------------------------

#[test]
fn openai_request_1_1_translates() {
    let mut body: Value = serde_json::from_str(OPENAI_REQUEST_1_1).unwrap();
    // As written the example asks for a JSON schema answer, which Anthropic cannot promise.
    let err = to_anthropic_request(&openai_request(body.clone()), true).unwrap_err();
    assert_eq!(err.field, "response_format");

    body.as_object_mut().unwrap().remove("response_format");
    let out = to_anthropic_request(&openai_request(body), true).unwrap();
    assert_eq!(
        out,
        json!({
            "model": "gpt-4o-mini",
            "max_tokens": 1024,
            "system": "You are terse.\n\nAnswer in English.",
            "messages": [
                {"role": "user", "content": "What's the weather in Boston?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                     "input": {"location": "Boston, MA"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_abc123", "content": "{\"temp_f\":51}"},
                    {"type": "text", "text": "And this picture?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": "iVBOR..."}}]}
            ],
            "tools": [{"name": "get_current_weather",
                       "description": "Get the current weather in a given location",
                       "input_schema": {"type": "object",
                                        "properties": {"location": {"type": "string"},
                                                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                                        "required": ["location"]}}],
            "tool_choice": {"type": "auto"},
            "stop_sequences": ["\n\nUser:"],
            "temperature": 0.7,
            "stream": true,
            "metadata": {"user_id": "user-1234"}
        })
    );
}

#[test]
fn request_messages_are_hoisted_merged_and_ordered() {
    let req = openai_request(json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
            {"role": "user", "content": "q1"},
            {"role": "user", "content": [{"type": "text", "text": "q2"},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}]},
            {"role": "assistant", "content": "calling", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r1"}]},
            {"role": "developer", "content": "mid-conversation rule"},
            {"role": "tool", "tool_call_id": "c2", "content": "r2"},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": ""}
        ],
        "max_tokens": 50,
        "stop": "END",
        "temperature": 1.6,
        "tools": [{"type": "function", "function": {"name": "f", "strict": true}}],
        "parallel_tool_calls": false,
        "tool_choice": {"type": "function", "function": {"name": "f"}}
    }));
    let out = to_anthropic_request(&req, false).unwrap();
    assert_eq!(
        out,
        json!({
            "model": "claude",
            "max_tokens": 50,
            "system": "A\n\nB\n\nmid-conversation rule",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "q1"},
                    {"type": "text", "text": "q2"},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.png"}}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
                    {"type": "tool_use", "id": "c2", "name": "g", "input": {"x": 1}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "r1"}]},
                    {"type": "tool_result", "tool_use_id": "c2", "content": "r2"},
                    {"type": "text", "text": "thanks"}]},
                {"role": "assistant", "content": ""}
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "temperature": 1.0
        })
    );
}

#[test]
fn request_defaults_and_tool_choice_mapping() {
    let base = || ChatRequest::user("claude", "hi");
    let out = to_anthropic_request(&base(), false).unwrap();
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    assert!(out.get("system").is_none() && out.get("stream").is_none());

    let mut both = base();
    both.max_tokens = Some(10);
    both.max_completion_tokens = Some(20);
    assert_eq!(
        to_anthropic_request(&both, false).unwrap()["max_tokens"],
        20
    );

    let tool =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    for (choice, parallel, want) in [
        (json!("auto"), None, json!({"type": "auto"})),
        (json!("required"), None, json!({"type": "any"})),
        (json!("none"), Some(false), json!({"type": "none"})),
        (
            Value::Null,
            Some(false),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
        (
            json!("required"),
            Some(false),
            json!({"type": "any", "disable_parallel_tool_use": true}),
        ),
    ] {
        let mut req = base();
        req.extra.insert("tools".into(), tool.clone());
        req.extra.insert("tool_choice".into(), choice.clone());
        if let Some(p) = parallel {
            req.extra.insert("parallel_tool_calls".into(), json!(p));
        }
        let out = to_anthropic_request(&req, false).unwrap();
        assert_eq!(out["tool_choice"], want, "{choice} {parallel:?}");
    }
    // parallel_tool_calls without tools means nothing.
    let mut req = base();
    req.extra.insert("parallel_tool_calls".into(), json!(false));
    assert!(
        to_anthropic_request(&req, false)
            .unwrap()
            .get("tool_choice")
            .is_none()
    );
}

#[test]
fn request_drops_neutral_fields() {
    let req = openai_request(json!({
        "model": "claude", "messages": [{"role": "user", "content": "hi", "name": "bob"}],
        "n": 1, "logprobs": false, "top_logprobs": 0, "logit_bias": {}, "seed": 7,
        "store": true, "metadata": {"k": "v"}, "presence_penalty": 0, "frequency_penalty": 0.0,
        "response_format": {"type": "text"}, "modalities": ["text"], "service_tier": "auto",
        "stream_options": {"include_usage": true}, "audio": null, "functions": null,
        "parallel_tool_calls": true, "stream": true
    }));
    assert_eq!(
        to_anthropic_request(&req, false).unwrap(),
        json!({"model": "claude", "max_tokens": DEFAULT_MAX_TOKENS,
               "messages": [{"role": "user", "content": "hi"}]})
    );
    // An assistant message echoed back from the OpenAI SDK (`model_dump()`).
    let req = openai_request(json!({
        "model": "claude", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "refusal": null, "audio": null,
             "function_call": null, "tool_calls": null, "annotations": []}]
    }));
    assert_eq!(
        to_anthropic_request(&req, false).unwrap()["messages"][1],
        json!({"role": "assistant", "content": "hello"})
    );
}

#[test]
fn every_rejected_field_is_named() {
    let top_level = [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(5)),
        ("logit_bias", json!({"50256": -100})),
        ("response_format", json!({"type": "json_object"})),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
        ("modalities", json!(["text", "audio"])),
        ("prediction", json!({"type": "content", "content": "x"})),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(-1)),
        ("reasoning_effort", json!("low")),
        ("service_tier", json!("flex")),
        ("functions", json!([{"name": "f"}])),
        ("function_call", json!("auto")),
        ("web_search_options", json!({})),
        ("made_up_field", json!(1)),
    ];
    for (field, value) in top_level {
        let mut req = ChatRequest::user("claude", "hi");
        req.extra.insert(field.into(), value);
        let err = to_anthropic_request(&req, false).unwrap_err();
        assert_eq!(err.field, field);
        assert!(
            err.to_string().starts_with(&format!(
                "field `{field}` cannot be sent to an Anthropic model: "
            )),
            "{err}"
        );
    }

    let message_level = [
        (
            json!([{"role": "function", "name": "f", "content": "x"}]),
            "messages[0].role",
        ),
        (
            json!([{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]),
            "messages[0].function_call",
        ),
        (
            json!([{"role": "assistant", "audio": {"id": "a1"}}]),
            "messages[0].audio",
        ),
        (
            json!([{"role": "user", "content": "x", "cache_control": {}}]),
            "messages[0].cache_control",
        ),
        (
            json!([{"role": "user", "content": [{"type": "input_audio",
                                                  "input_audio": {"data": "..", "format": "wav"}}]}]),
            "messages[0].content[0].type",
        ),
        (
            json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]),
            "messages[0].content[0].type",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "ftp://x/y.png"}}]}]),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!([{"role": "user", "content": "hi"},
                   {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\": "}}]}]),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "[1,2]"}}]}]),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!([{"role": "tool", "content": "r"}]),
            "messages[0].tool_call_id",
        ),
        (
            json!([{"role": "critic", "content": "r"}]),
            "messages[0].role",
        ),
    ];
    for (messages, field) in message_level {
        let req = openai_request(json!({"model": "claude", "messages": messages}));
        let err = to_anthropic_request(&req, false).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
    }

    let tool_level = [
        (
            json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}),
            "tools[0].type",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "x": 1}}]}),
            "tools[0].function.x",
        ),
        (
            json!({"tool_choice": {"type": "allowed_tools"}}),
            "tool_choice",
        ),
        (json!({"stop": 5}), "stop"),
        (json!({"temperature": "hot"}), "temperature"),
    ];
    for (extra, field) in tool_level {
        let mut body = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let err = to_anthropic_request(&openai_request(body), false).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

// ---- Anthropic → OpenAI request (gateway) ---------------------------------------------------------

#[test]
fn anthropic_request_2_1_to_canonical() {
    let body: Value = serde_json::from_str(ANTHROPIC_REQUEST_2_1).unwrap();
    let req = from_anthropic_request(&body).unwrap();
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({
            "model": "claude-sonnet-4-5-20250929",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What's the weather in Paris?"},
                {"role": "assistant", "content": "I'll check.", "tool_calls": [
                    {"id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
                {"role": "tool", "content": "15°C, cloudy", "tool_call_id": "toolu_01NRLabsLyVHZPKxbKvkfSMn"},
                {"role": "user", "content": [
                    {"type": "text", "text": "Thanks. Also describe this image."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR..."}}]}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 1024,
            "temperature": 0.7,
            "stop": ["\n\nUser:"],
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Get current weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                               "required": ["location"]}}}],
            "tool_choice": "auto",
            "user": "user-1234"
        })
    );
}

#[test]
fn anthropic_request_round_trips_modulo_documented_normalizations() {
    let original: Value = serde_json::from_str(ANTHROPIC_REQUEST_2_1).unwrap();
    let canonical = from_anthropic_request(&original).unwrap();
    let back = to_anthropic_request(&canonical, true).unwrap();
    let mut expected = original.clone();
    // documented normalizations: default-valued flags disappear
    expected["tool_choice"]
        .as_object_mut()
        .unwrap()
        .remove("disable_parallel_tool_use");
    expected["messages"][2]["content"][0]
        .as_object_mut()
        .unwrap()
        .remove("is_error");
    assert_eq!(back, expected);

    // A richer request: consecutive same-role turns merge, a single text block becomes a
    // string, system blocks join, cache_control and thinking disappear.
    let original = json!({
        "model": "claude", "max_tokens": 300,
        "system": [{"type": "text", "text": "S1", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "S2"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}]},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "x"}, {"type": "text", "text": "y"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                {"type": "tool_use", "id": "t2", "name": "f", "input": {"k": [1]}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1",
                 "content": [{"type": "text", "text": "ok"}]},
                {"type": "tool_result", "tool_use_id": "t2", "content": "boom", "is_error": true}]},
            {"role": "assistant", "content": "prefill"}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "tools": [{"name": "f", "input_schema": {"type": "object"},
                   "cache_control": {"type": "ephemeral"}}],
        "stop_sequences": [], "stream": false, "thinking": {"type": "disabled"}, "top_p": 0.9
    });
    let back = to_anthropic_request(&from_anthropic_request(&original).unwrap(), false).unwrap();
    assert_eq!(
        back,
        json!({
            "model": "claude", "max_tokens": 300,
            "system": "S1\n\nS2",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"},
                                             {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "x"}, {"type": "text", "text": "y"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                    {"type": "tool_use", "id": "t2", "name": "f", "input": {"k": [1]}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1",
                     "content": [{"type": "text", "text": "ok"}]},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "Error: boom"}]},
                {"role": "assistant", "content": "prefill"}
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "top_p": 0.9
        })
    );
}

#[test]
fn anthropic_tool_result_images_move_to_a_user_message() {
    let body = json!({
        "model": "claude", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "screenshot:"},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/s.png"}}]},
            {"type": "text", "text": "what now?"}]}]
    });
    let req = from_anthropic_request(&body).unwrap();
    assert_eq!(
        serde_json::to_value(&req.messages).unwrap(),
        json!([
            {"role": "tool", "content": [{"type": "text", "text": "screenshot:"}], "tool_call_id": "t1"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x.test/s.png"}},
                {"type": "text", "text": "what now?"}]}
        ])
    );
    assert!(!req.is_stream() && req.stream_options.is_none());
}

#[test]
fn anthropic_request_rejections_name_the_field() {
    let base = || {
        json!({"model": "claude", "max_tokens": 10,
               "messages": [{"role": "user", "content": "hi"}]})
    };
    let with = |key: &str, value: Value| {
        let mut b = base();
        b[key] = value;
        b
    };
    let cases = [
        (
            with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": 2048}),
            ),
            "thinking",
        ),
        (with("top_k", json!(5)), "top_k"),
        (with("container", json!("c")), "container"),
        (
            with("metadata", json!({"user_id": "u", "tenant": "t"})),
            "metadata.tenant",
        ),
        (
            with(
                "tools",
                json!([{"type": "web_search_20250305", "name": "web_search"}]),
            ),
            "tools[0].type",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]),
            ),
            "messages[0].content[0].type",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": [
                {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]),
            ),
            "messages[0].content[0].source.type",
        ),
        (
            with("messages", json!([{"role": "system", "content": "x"}])),
            "messages[0].role",
        ),
        (
            with("tool_choice", json!({"type": "sometimes"})),
            "tool_choice.type",
        ),
    ];
    for (body, field) in cases {
        let err = from_anthropic_request(&body).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
    }
    let mut no_max = base();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let err = from_anthropic_request(&no_max).unwrap_err();
    assert_eq!(err.field, "max_tokens");
    assert_eq!(
        err.to_string(),
        "field `max_tokens` is required by the Anthropic Messages API"
    );
    assert!(from_anthropic_request(&json!([1])).is_err());
}

// ---- canonical → Anthropic response and errors ---------------------------------------------------

#[test]
fn openai_response_1_2_to_anthropic_message() {
    let resp: crate::ChatResponse = serde_json::from_str(
        r#"{
  "id": "chatcmpl-abc123",
  "object": "chat.completion",
  "created": 1699896916,
  "model": "gpt-4o-mini",
  "choices": [{
    "index": 0,
    "message": {"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": "call_abc123", "type": "function",
                                "function": {"name": "get_current_weather",
                                             "arguments": "{\n\"location\": \"Boston, MA\"\n}"}}]},
    "logprobs": null,
    "finish_reason": "tool_calls"
  }],
  "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}},
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#,
    )
    .unwrap();
    assert_eq!(
        to_anthropic_response(&resp, "my-route"),
        json!({
            "id": "chatcmpl-abc123", "type": "message", "role": "assistant", "model": "my-route",
            "content": [{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                         "input": {"location": "Boston, MA"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 82, "output_tokens": 17}
        })
    );
}

#[test]
fn anthropic_response_text_refusal_cache_and_stop_reasons() {
    let resp = |content: Value, extra: Value, finish: &str| -> crate::ChatResponse {
        let mut message = json!({"role": "assistant", "content": content});
        message
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "id": "c", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                      "prompt_tokens_details": {"cached_tokens": 60}}
        }))
        .unwrap()
    };
    let out = to_anthropic_response(&resp(json!("hi"), json!({}), "length"), "m");
    assert_eq!(out["content"], json!([{"type": "text", "text": "hi"}]));
    assert_eq!(out["stop_reason"], "max_tokens");
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 40, "output_tokens": 5, "cache_read_input_tokens": 60})
    );
    let out = to_anthropic_response(
        &resp(Value::Null, json!({"refusal": "I can't."}), "stop"),
        "m",
    );
    assert_eq!(
        out["content"],
        json!([{"type": "text", "text": "I can't."}])
    );
    assert_eq!(out["stop_reason"], "refusal");
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("content_filter", "refusal"),
        ("function_call", "tool_use"),
        ("weird", "end_turn"),
    ] {
        let out = to_anthropic_response(&resp(json!("x"), json!({}), finish), "m");
        assert_eq!(out["stop_reason"], stop, "{finish}");
    }
    // Broken arguments from a model still give the client an object.
    let out = to_anthropic_response(
        &resp(
            Value::Null,
            json!({"tool_calls": [{"id": "c1", "type": "function",
                                   "function": {"name": "f", "arguments": "{oops"}}]}),
            "tool_calls",
        ),
        "m",
    );
    assert_eq!(out["content"][0]["input"], json!({}));
}

#[test]
fn anthropic_error_shapes() {
    assert_eq!(
        anthropic_error_body("overloaded_error", "Overloaded"),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    let (event, data) = AnthropicStreamEncoder::error_event("api_error", "upstream cut");
    assert_eq!(event, "error");
    assert_eq!(data, anthropic_error_body("api_error", "upstream cut"));
    // Every class maps to a type that classifies back to an equivalent class.
    for class in ErrorClass::ALL {
        let ty = anthropic_error_type(class);
        let back = sluice_core::classify(&sluice_core::ErrorSignal {
            status: None,
            error_type: Some(ty),
            code: None,
            message: "",
        });
        let expected = match class {
            ErrorClass::ContextLength | ErrorClass::ContentPolicy => ErrorClass::BadRequest,
            ErrorClass::Transport | ErrorClass::StreamInterrupted => ErrorClass::ServerError,
            other => other,
        };
        assert_eq!(back, expected, "{class}");
    }
}

// ---- canonical chunks → Anthropic SSE ------------------------------------------------------------

#[test]
fn encoder_openai_text_stream_1_3() {
    assert_eq!(
        encode_all("claude-route", OPENAI_TEXT_STREAM_1_3),
        vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "chatcmpl-123", "type": "message", "role": "assistant", "content": [],
                "model": "claude-route", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}})
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Hello"}})
            ),
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0})
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"input_tokens": 9, "output_tokens": 2}})
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ]
    );
}

#[test]
fn encoder_openai_tool_stream_1_3() {
    assert_eq!(
        encode_all("m", OPENAI_TOOL_STREAM_1_3),
        vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "chatcmpl-9", "type": "message", "role": "assistant", "content": [],
                "model": "m", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}})
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                                  "name": "get_weather", "input": {}}})
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "{\"loc"}})
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "ation\":\"Paris\"}"}})
            ),
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0})
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 0, "output_tokens": 0}})
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ]
    );
}

#[test]
fn encoder_text_then_parallel_tool_calls() {
    let c = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let chunks = [
        c(json!({"role": "assistant", "content": ""}), Value::Null),
        c(json!({"content": "Let me "}), Value::Null),
        c(json!({"content": "check."}), Value::Null),
        c(json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                  "function": {"name": "weather", "arguments": ""}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                  "function": {"name": "time", "arguments": "{}"}}]}), Value::Null),
        c(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
               "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70,
                                        "prompt_tokens_details": {"cached_tokens": 30}}})
        .to_string(),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let events = encode_all("m", &chunks);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        events[1]["data"],
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        events[3]["data"]["delta"],
        json!({"type": "text_delta", "text": "check."})
    );
    assert_eq!(
        events[5]["data"],
        json!({"type": "content_block_start", "index": 1, "content_block":
               {"type": "tool_use", "id": "call_a", "name": "weather", "input": {}}})
    );
    assert_eq!(
        events[6]["data"],
        json!({"type": "content_block_delta", "index": 1,
               "delta": {"type": "input_json_delta", "partial_json": "{\"city\":\"Paris\"}"}})
    );
    assert_eq!(
        events[7]["data"],
        json!({"type": "content_block_stop", "index": 1})
    );
    assert_eq!(events[8]["data"]["index"], 2);
    assert_eq!(events[8]["data"]["content_block"]["id"], "call_b");
    assert_eq!(events[9]["data"]["delta"]["partial_json"], "{}");
    assert_eq!(
        events[10]["data"],
        json!({"type": "content_block_stop", "index": 2})
    );
    assert_eq!(
        events[11]["data"],
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 20, "output_tokens": 20, "cache_read_input_tokens": 30}})
    );
}

#[test]
fn encoder_edge_cases() {
    // An empty canonical stream still yields a well-formed Anthropic stream.
    let events = encode_all("m", &[]);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    assert_eq!(events[1]["data"]["delta"]["stop_reason"], "end_turn");

    // A refusal is text with stop reason refusal; a stream cut before finish_reason still
    // closes its block; choices other than 0 are ignored.
    let chunks = [
        r#"{"id":"c","choices":[{"index":0,"delta":{"refusal":"No."}}]}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{"content":"other choice"}}]}"#,
    ];
    let events = encode_all("m", &chunks);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(events[2]["data"]["delta"]["text"], "No.");
    assert_eq!(events[4]["data"]["delta"]["stop_reason"], "refusal");

    // Nothing is emitted after finish.
    let mut encoder = AnthropicStreamEncoder::new("m");
    let mut out = Vec::new();
    encoder.finish(&mut out);
    let n = out.len();
    let chunk: ChatChunk =
        serde_json::from_str(r#"{"id":"c","choices":[{"index":0,"delta":{"content":"late"}}]}"#)
            .unwrap();
    encoder.encode(&chunk, &mut out);
    assert_eq!(out.len(), n);
}

/// End to end through both stream translations: Anthropic SSE → canonical → Anthropic SSE keeps
/// the text, the tool call, the stop reason and the usage.
#[test]
fn anthropic_stream_survives_both_translations() {
    let stream = format!("{TOOL_STREAM_HEAD}{TOOL_STREAM_EXCERPT_2_3}{MESSAGE_STOP}");
    let mut decoder = AnthropicAdapter.stream_decoder();
    let mut encoder = AnthropicStreamEncoder::new("claude-sonnet-4-20250514");
    let mut out = Vec::new();
    for event in sse_events(&stream) {
        let mut decoded = VecDeque::new();
        decoder.decode(event, &mut decoded).unwrap();
        for e in decoded {
            match e {
                StreamEvent::Chunk(chunk) => encoder.encode(&chunk, &mut out),
                StreamEvent::Done => encoder.finish(&mut out),
                StreamEvent::Error(e) => panic!("{e}"),
            }
        }
    }
    let names: Vec<&str> = out.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(out[0].1["message"]["id"], "msg_019Q1hrJbZG26Fb9BQhrkHEr");
    assert_eq!(
        out[4].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather", "input": {}})
    );
    assert_eq!(
        out[8].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 377, "output_tokens": 65}})
    );
}
