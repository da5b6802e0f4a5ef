//! OpenAI Chat Completions (`POST {base_url}/chat/completions`) and every server that speaks it.
//!
//! Error bodies are `{"error": {"message", "type", "param", "code"}}`; some compatible servers
//! (and Anthropic-style proxies) send `{"type": "error", "error": {...}}` instead, and Azure and
//! Gemini put numbers or numeric strings in `code`. All of them are read through the same
//! `error` object and classified by `sluice_core::classify`. In-band stream errors are data
//! events whose JSON has a top-level `error` key.

use std::collections::VecDeque;
use std::time::SystemTime;

use http::HeaderMap;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use sluice_core::{ErrorClass, ErrorSignal, ServerHints, SseEvent, classify};

use crate::{
    Adapter, ChatChunk, ChatRequest, ChatResponse, Endpoint, StreamDecoder, StreamEvent,
    StreamOptions, UpstreamError,
};

/// The OpenAI wire protocol.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenAiAdapter;

/// Error messages longer than this are cut: a misbehaving upstream must not make Sluice's own
/// errors and logs huge.
const MAX_ERROR_MESSAGE: usize = 2000;

impl Adapter for OpenAiAdapter {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn build(
        &self,
        http: &reqwest::Client,
        endpoint: &Endpoint,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let body = if stream {
            // Always ask for the usage chunk upstream: the limiter reconciles with it. Whether the
            // caller sees it is decided by the executor from the caller's own request.
            let mut upstream = req.clone();
            upstream.stream = Some(true);
            let options = upstream
                .stream_options
                .get_or_insert_with(StreamOptions::default);
            options.include_usage = Some(true);
            serde_json::to_vec(&upstream)
        } else if req.stream.is_some() || req.stream_options.is_some() {
            let mut upstream = req.clone();
            upstream.stream = None;
            upstream.stream_options = None;
            serde_json::to_vec(&upstream)
        } else {
            serde_json::to_vec(req)
        }
        .map_err(|e| {
            UpstreamError::new(ErrorClass::BadRequest, "request body cannot be serialized")
                .with_source(e)
        })?;

        let mut builder = http
            .post(endpoint.url("chat/completions"))
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
            let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
                UpstreamError::new(
                    ErrorClass::Auth,
                    format!("the API key of provider {} contains characters not allowed in a header", endpoint.name),
                )
            })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        Ok(builder)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        serde_json::from_slice(body).map_err(|e| {
            UpstreamError::new(
                ErrorClass::Transport,
                format!("malformed response body: {e}"),
            )
            .with_source(e)
        })
    }

    fn parse_error(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> UpstreamError {
        let mut err = error_from_body(Some(status), body);
        err.hints = ServerHints::from_headers(headers, now);
        err
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(OpenAiStreamDecoder)
    }
}

/// Builds a classified error from an error body (`status: None` for in-band errors).
fn error_from_body(status: Option<u16>, body: &[u8]) -> UpstreamError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| -> Option<String> {
        match error?.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let provider_type = field("type");
    let provider_code = field("code");
    let mut message = match (error, field("message")) {
        (_, Some(m)) => m,
        // `{"error": "text"}` from some compatible servers
        (Some(Value::String(s)), None) => s.clone(),
        _ if body.is_empty() => match status {
            Some(s) => format!("HTTP {s} with an empty body"),
            None => "error event with no message".to_owned(),
        },
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    };
    truncate(&mut message, MAX_ERROR_MESSAGE);
    let class = classify(&ErrorSignal {
        status,
        error_type: provider_type.as_deref(),
        code: provider_code.as_deref(),
        message: &message,
    });
    UpstreamError {
        class,
        status,
        message,
        provider_type,
        provider_code,
        hints: ServerHints::default(),
        source: None,
    }
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

/// OpenAI SSE: one JSON chunk per `data:` event, `[DONE]` at the end, no `event:` lines.
#[derive(Debug)]
struct OpenAiStreamDecoder;

impl StreamDecoder for OpenAiStreamDecoder {
    fn decode(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), UpstreamError> {
        let data = event.data.trim();
        if data.starts_with("[DONE]") {
            out.push_back(StreamEvent::Done);
            return Ok(());
        }
        // Cheap pre-check keeps the common path to a single parse into the typed chunk.
        if event.event.as_deref() == Some("error") || data.contains("\"error\"") {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(data) {
                let is_error = map
                    .get("error")
                    .is_some_and(|e| !e.is_null() && e != &Value::Bool(false))
                    || event.event.as_deref() == Some("error");
                if is_error {
                    out.push_back(StreamEvent::Error(error_from_body(None, data.as_bytes())));
                    return Ok(());
                }
            }
        }
        let chunk: ChatChunk = serde_json::from_str(data).map_err(|e| {
            let mut shown = data.to_owned();
            truncate(&mut shown, 200);
            UpstreamError::new(
                ErrorClass::Transport,
                format!("malformed stream frame ({e}): {shown}"),
            )
            .with_source(e)
        })?;
        out.push_back(StreamEvent::Chunk(chunk));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(data: &str) -> Result<Vec<StreamEvent>, UpstreamError> {
        let mut d = OpenAiAdapter.stream_decoder();
        let mut out = VecDeque::new();
        d.decode(
            SseEvent {
                data: data.to_owned(),
                ..SseEvent::default()
            },
            &mut out,
        )?;
        Ok(out.into_iter().collect())
    }

    #[test]
    fn done_chunk_and_inband_error() {
        assert!(matches!(decode("[DONE]").unwrap()[..], [StreamEvent::Done]));
        let chunk =
            decode(r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}"#).unwrap();
        assert!(matches!(&chunk[..], [StreamEvent::Chunk(c)] if c.has_content()));
        let err = decode(
            r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
        )
        .unwrap();
        match &err[..] {
            [StreamEvent::Error(e)] => {
                assert_eq!(e.class, ErrorClass::ServerError);
                assert_eq!(e.message, "boom");
                assert_eq!(e.status, None);
            }
            other => panic!("{other:?}"),
        }
        let overloaded =
            decode(r#"{"error":{"message":"Overloaded","type":"overloaded_error"}}"#).unwrap();
        assert!(
            matches!(&overloaded[..], [StreamEvent::Error(e)] if e.class == ErrorClass::Overloaded)
        );
    }

    #[test]
    fn a_chunk_mentioning_error_in_its_text_is_still_content() {
        let out =
            decode(r#"{"id":"c","choices":[{"index":0,"delta":{"content":"the \"error\" key"}}]}"#)
                .unwrap();
        assert!(matches!(&out[..], [StreamEvent::Chunk(c)] if c.has_content()));
    }

    #[test]
    fn malformed_frame_is_transport() {
        let e = decode("{not json").unwrap_err();
        assert_eq!(e.class, ErrorClass::Transport);
        assert!(
            e.message.starts_with("malformed stream frame"),
            "{}",
            e.message
        );
    }

    #[test]
    fn error_bodies_are_classified_with_hints() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-XXX on tokens per min (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
        let e = OpenAiAdapter.parse_error(429, &headers, body, SystemTime::now());
        assert_eq!(e.class, ErrorClass::RateLimited);
        assert_eq!(e.status, Some(429));
        assert_eq!(
            e.hints.retry_after,
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(e.provider_code.as_deref(), Some("rate_limit_exceeded"));

        let quota = br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let e = OpenAiAdapter.parse_error(429, &HeaderMap::new(), quota, SystemTime::now());
        assert_eq!(e.class, ErrorClass::QuotaExhausted);

        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let e = OpenAiAdapter.parse_error(529, &HeaderMap::new(), anthropic, SystemTime::now());
        assert_eq!(e.class, ErrorClass::Overloaded);
        assert_eq!(e.message, "Overloaded");
    }

    #[test]
    fn non_json_and_empty_error_bodies_still_classify_by_status() {
        let e = OpenAiAdapter.parse_error(
            502,
            &HeaderMap::new(),
            b"<html>Bad Gateway</html>",
            SystemTime::now(),
        );
        assert_eq!(e.class, ErrorClass::ServerError);
        assert_eq!(e.message, "<html>Bad Gateway</html>");
        let e = OpenAiAdapter.parse_error(503, &HeaderMap::new(), b"", SystemTime::now());
        assert_eq!(e.class, ErrorClass::Overloaded);
        assert_eq!(e.message, "HTTP 503 with an empty body");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let body = format!(r#"{{"error":{{"message":"{}"}}}}"#, "é".repeat(3000));
        let e =
            OpenAiAdapter.parse_error(500, &HeaderMap::new(), body.as_bytes(), SystemTime::now());
        assert!(e.message.len() <= MAX_ERROR_MESSAGE + 3);
        assert!(e.message.ends_with("..."));
    }
}
