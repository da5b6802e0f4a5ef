//! End-to-end tests of `POST /v1/messages` (the Anthropic dialect) over real sockets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_mock::{MockConfig, MockServer, TOOL_ARGUMENTS, chunk_text, mock_text, tool_fragments};
use tokio::time::Instant;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("client")
}

fn body(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": stream,
    })
}

struct Mock {
    server: MockServer,
    client: reqwest::Client,
}

impl Mock {
    async fn start(config: MockConfig) -> Mock {
        Mock {
            server: MockServer::start(config).await.expect("start mock"),
            client: client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    fn request(&self, body: &Value, fault: Option<&str>) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(self.url("/messages"))
            .header("x-api-key", "sk-ant-mock")
            .header("anthropic-version", "2023-06-01")
            .json(body);
        if let Some(fault) = fault {
            req = req.header("x-sluice-mock-fault", fault);
        }
        req
    }

    async fn messages(&self, body: &Value, fault: Option<&str>) -> reqwest::Response {
        self.request(body, fault).send().await.expect("response")
    }

    async fn wait_stats(
        &self,
        pred: impl Fn(&sluice_mock::MockStats) -> bool,
    ) -> sluice_mock::MockStats {
        for _ in 0..200 {
            let stats = self.server.stats();
            if pred(&stats) {
                return stats;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("stats never matched: {:?}", self.server.stats());
    }
}

/// One Anthropic SSE event: its `event:` name and parsed `data:`.
#[derive(Debug, Clone)]
struct Event {
    name: String,
    data: Value,
}

/// Reads `event: NAME\ndata: JSON\n\n` events until the body ends or fails.
struct Sse {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Sse {
    fn new(resp: reqwest::Response) -> Sse {
        Sse {
            resp,
            buf: Vec::new(),
        }
    }

    async fn next(&mut self) -> reqwest::Result<Option<Event>> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(raw).unwrap();
                let (name, data) = text
                    .trim_end()
                    .split_once('\n')
                    .unwrap_or_else(|| panic!("not an event: {text:?}"));
                let name = name.strip_prefix("event: ").expect("event line").to_owned();
                let data = data.strip_prefix("data: ").expect("data line");
                let data: Value =
                    serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
                assert_eq!(data["type"], name.as_str(), "type repeats the event name");
                return Ok(Some(Event { name, data }));
            }
            match self.resp.chunk().await? {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => {
                    assert!(self.buf.is_empty(), "trailing bytes {:?}", self.buf);
                    return Ok(None);
                }
            }
        }
    }

    async fn collect(mut self) -> (Vec<Event>, Option<reqwest::Error>) {
        let mut events = Vec::new();
        loop {
            match self.next().await {
                Ok(Some(e)) => events.push(e),
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e)),
            }
        }
    }
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

fn head_names() -> Vec<&'static str> {
    vec!["message_start", "content_block_start", "ping"]
}

fn assert_text_delta(event: &Event, i: usize) {
    assert_eq!(event.name, "content_block_delta");
    assert_eq!(
        event.data,
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": chunk_text(i)}})
    );
}

/// Seconds since the epoch of a `YYYY-MM-DDTHH:MM:SSZ` timestamp.
fn parse_rfc3339(s: &str) -> u64 {
    assert_eq!(s.len(), 20, "{s}");
    assert!(s.ends_with('Z') && &s[10..11] == "T", "{s}");
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + n(11..13) * 3_600 + n(14..16) * 60 + n(17..19)) as u64
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn non_stream_message_has_the_anthropic_shape() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock.messages(&body(false), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["request-id"], "req_mock_1");
    assert!(resp.headers().get("x-request-id").is_none());
    let v: Value = resp.json().await.unwrap();
    // "Say hello." is 10 characters: ceil(10 / 4) = 3 tokens.
    assert_eq!(
        v,
        json!({
            "id": "msg_mock_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": mock_text(8)}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 8},
        })
    );
    // Content blocks and `system` count towards the input estimate.
    let b = json!({"model": "m", "max_tokens": 1, "system": "abcd",
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]});
    let v: Value = mock.messages(&b, None).await.json().await.unwrap();
    assert_eq!(v["usage"]["input_tokens"], 2);
    assert_eq!(v["id"], "msg_mock_2");
    let stats = mock.server.stats();
    assert_eq!((stats.requests, stats.ok), (2, 2));
    assert_eq!(stats.by_api, [("anthropic".to_owned(), 2)].into());
}

#[tokio::test]
async fn stream_follows_the_reference_event_sequence() {
    let mock = Mock::start(MockConfig {
        chunks: 3,
        ..MockConfig::default()
    })
    .await;
    let resp = mock.messages(&body(true), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["request-id"], "req_mock_1");
    let (events, err) = Sse::new(resp).collect().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        events[0].data,
        json!({"type": "message_start", "message": {
            "id": "msg_mock_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 1}}})
    );
    assert_eq!(
        events[1].data,
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(events[2].data, json!({"type": "ping"}));
    let mut text = String::new();
    for (i, event) in events[3..6].iter().enumerate() {
        assert_text_delta(event, i);
        text.push_str(event.data["delta"]["text"].as_str().unwrap());
    }
    assert_eq!(text, mock_text(3));
    assert_eq!(
        events[6].data,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[7].data,
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 3}})
    );
    assert_eq!(events[8].data, json!({"type": "message_stop"}));
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!((stats.requests, stats.ok, stats.cancelled), (1, 1, 0));
}

#[tokio::test]
async fn every_error_step_returns_its_anthropic_status_and_body() {
    let mock = Mock::start(MockConfig::default()).await;
    // (step, status, error.type, message fragment)
    let cases: [(&str, u16, &str, &str); 13] = [
        (
            "429",
            429,
            "rate_limit_error",
            "would exceed the rate limit",
        ),
        (
            "quota",
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & \
             Billing to upgrade or purchase credits.",
        ),
        ("401", 401, "authentication_error", "invalid x-api-key"),
        ("400", 400, "invalid_request_error", "messages:"),
        ("404", 404, "not_found_error", "model: claude-sonnet-4-5"),
        (
            "context",
            400,
            "invalid_request_error",
            "prompt is too long: 200001 tokens > 200000 maximum",
        ),
        (
            "policy",
            400,
            "invalid_request_error",
            "Output blocked by content filtering policy",
        ),
        ("500", 500, "api_error", "Internal server error"),
        ("502", 502, "api_error", "Bad gateway"),
        ("503", 503, "overloaded_error", "Overloaded"),
        ("504", 504, "timeout_error", "Request timed out"),
        ("529", 529, "overloaded_error", "Overloaded"),
        // A non-streaming request cannot carry an in-band error: a plain 500.
        ("inband", 500, "api_error", "Internal server error"),
    ];
    for (step, status, ty, fragment) in cases {
        let resp = mock.messages(&body(false), Some(step)).await;
        assert_eq!(resp.status().as_u16(), status, "{step}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert!(
            resp.headers()["request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_mock_")
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error", "{step}: {v}");
        assert_eq!(v["error"]["type"], ty, "{step}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{step}: {message}");
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
        assert_eq!(v["error"].as_object().unwrap().len(), 2, "{v}");
    }
    // 529 exactly as Anthropic sends it.
    let v: Value = mock
        .request(&body(false), Some("529"))
        .header("x-sluice-mock-scenario", "exact")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})
    );
    // Streaming requests get the same statuses, before any event.
    let resp = mock
        .request(&body(true), Some("503"))
        .header("x-sluice-mock-scenario", "stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "application/json");

    let stats = mock.server.stats();
    assert_eq!(stats.requests, 15);
    assert_eq!(stats.ok, 0);
    for name in [
        "429", "quota", "401", "400", "404", "context", "policy", "500", "502", "504", "inband",
    ] {
        assert_eq!(stats.by_outcome[name], 1, "{name}");
    }
    assert_eq!(stats.by_outcome["503"], 2);
    assert_eq!(stats.by_outcome["529"], 2);
}

#[tokio::test]
async fn rate_limits_carry_retry_after_and_anthropic_ratelimit_headers() {
    let mock = Mock::start(MockConfig::default()).await;
    let before = now_secs();
    let resp = mock.messages(&body(false), Some("429:ra=2")).await;
    let after = now_secs();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = resp.headers();
    assert_eq!(h["retry-after"], "2");
    assert!(h.get("retry-after-ms").is_none());
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "0");
    assert_eq!(h["anthropic-ratelimit-requests-limit"], "60");
    let reset = parse_rfc3339(h["anthropic-ratelimit-requests-reset"].to_str().unwrap());
    assert!(
        (before + 2..=after + 3).contains(&reset),
        "{before} {reset} {after}"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");

    // `ms=`: Anthropic has no retry-after-ms, so both the rounded-up seconds and the exact ms.
    let resp = mock.messages(&body(false), Some("429:ms=1500")).await;
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["retry-after-ms"], "1500");
    assert!(
        resp.headers()
            .contains_key("anthropic-ratelimit-requests-reset")
    );

    // No hint: no retry-after, and the reset is now (rounded up).
    let before = now_secs();
    let resp = mock.messages(&body(false), Some("429")).await;
    let after = now_secs();
    assert!(resp.headers().get("retry-after").is_none());
    assert!(resp.headers().get("retry-after-ms").is_none());
    assert_eq!(
        resp.headers()["anthropic-ratelimit-requests-remaining"],
        "0"
    );
    let reset = parse_rfc3339(
        resp.headers()["anthropic-ratelimit-requests-reset"]
            .to_str()
            .unwrap(),
    );
    assert!((before..=after + 1).contains(&reset), "{reset}");

    // OpenAI 429s do not grow Anthropic headers.
    let resp = mock
        .client
        .post(mock.url("/chat/completions"))
        .header("x-sluice-mock-fault", "429:ra=2")
        .header("x-sluice-mock-scenario", "openai")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        !resp
            .headers()
            .keys()
            .any(|k| k.as_str().starts_with("anthropic-"))
    );
}

#[tokio::test]
async fn inband_errors_are_error_events_inside_a_200() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock
        .messages(&body(true), Some("inband:overloaded_error"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (events, err) = Sse::new(resp).collect().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(names(&events), ["error"]);
    assert_eq!(
        events[0].data,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    // The default type is Anthropic's overloaded_error.
    let (events, _) = Sse::new(mock.messages(&body(true), Some("inband")).await)
        .collect()
        .await;
    assert_eq!(names(&events), ["error"]);
    assert_eq!(events[0].data["error"]["type"], "overloaded_error");

    let (events, err) = Sse::new(
        mock.messages(&body(true), Some("inband_after:2:api_error"))
            .await,
    )
    .collect()
    .await;
    assert!(err.is_none());
    let mut expected = head_names();
    expected.extend(["content_block_delta", "content_block_delta", "error"]);
    assert_eq!(names(&events), expected);
    assert_text_delta(&events[4], 1);
    assert_eq!(
        events[5].data["error"],
        json!({"type": "api_error", "message": "Internal server error"})
    );
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!(stats.by_outcome["inband"], 3);
    assert_eq!(stats.cancelled, 0);
}

#[tokio::test]
async fn cut_aborts_after_n_deltas_without_message_stop() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock.messages(&body(true), Some("cut:2")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (events, err) = Sse::new(resp).collect().await;
    assert!(err.is_some(), "a cut is a body error: {events:#?}");
    let mut expected = head_names();
    expected.extend(["content_block_delta", "content_block_delta"]);
    assert_eq!(names(&events), expected);
    assert_text_delta(&events[3], 0);
    assert_text_delta(&events[4], 1);
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!(stats.by_outcome["cut"], 1);
    assert_eq!(stats.cancelled, 0);

    // Without N: halfway (8 / 2 = 4 deltas). Non-streaming: a truncated JSON body.
    let (events, err) = Sse::new(mock.messages(&body(true), Some("cut")).await)
        .collect()
        .await;
    assert!(err.is_some());
    assert_eq!(events.len(), 3 + 4);
    let mut resp = mock.messages(&body(false), Some("cut:0")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut received = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(b)) => received.extend_from_slice(&b),
            Ok(None) => panic!("body completed"),
            Err(e) => break e,
        }
    };
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );
    assert!(received.starts_with(b"{\"id\":\"msg_mock_"));
}

#[tokio::test(start_paused = true)]
async fn stall_goes_silent_after_n_deltas() {
    let mock = Mock::start(MockConfig::default()).await;
    let mut sse = Sse::new(mock.messages(&body(true), Some("stall:1")).await);
    for name in head_names() {
        assert_eq!(sse.next().await.unwrap().unwrap().name, name);
    }
    assert_text_delta(&sse.next().await.unwrap().unwrap(), 0);
    let next = tokio::time::timeout(Duration::from_secs(5), sse.next()).await;
    assert!(next.is_err(), "the stream must stall, got {next:?}");
    drop(sse);
    let stats = mock.wait_stats(|s| s.cancelled == 1).await;
    assert_eq!(stats.by_outcome["stall"], 1);
}

#[tokio::test]
async fn reset_closes_the_connection() {
    let mock = Mock::start(MockConfig::default()).await;
    let err = mock
        .request(&body(true), Some("reset"))
        .send()
        .await
        .expect_err("reset must not produce a response");
    assert!(err.status().is_none(), "{err:?}");
    assert_eq!(
        mock.messages(&body(false), None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn ttft_and_chunk_gap_apply_to_text_deltas() {
    let mock = Mock::start(MockConfig {
        chunks: 3,
        ttft: Duration::from_millis(200),
        chunk_gap: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let start = Instant::now();
    let mut sse = Sse::new(mock.messages(&body(true), Some("delay:300")).await);
    for name in head_names() {
        assert_eq!(sse.next().await.unwrap().unwrap().name, name);
    }
    assert!(start.elapsed() < Duration::from_millis(300));
    assert_text_delta(&sse.next().await.unwrap().unwrap(), 0);
    assert!(start.elapsed() >= Duration::from_millis(300));
    let first = start.elapsed();
    assert_text_delta(&sse.next().await.unwrap().unwrap(), 1);
    assert_text_delta(&sse.next().await.unwrap().unwrap(), 2);
    assert!(start.elapsed() - first >= Duration::from_millis(100));
}

#[tokio::test]
async fn random_faults_are_reproducible_and_in_anthropic_format() {
    let config = MockConfig {
        seed: 9,
        p_429: 0.2,
        p_500: 0.2,
        p_529: 0.2,
        retry_after: Some(Duration::from_millis(250)),
        ..MockConfig::default()
    };
    async fn outcomes(config: MockConfig) -> Vec<(u16, String)> {
        let mock = Mock::start(config).await;
        let mut out = Vec::new();
        for _ in 0..40 {
            let resp = mock.messages(&body(false), None).await;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(resp.headers()["retry-after"], "1");
                assert_eq!(resp.headers()["retry-after-ms"], "250");
                assert_eq!(
                    resp.headers()["anthropic-ratelimit-requests-remaining"],
                    "0"
                );
            }
            let v: Value = resp.json().await.unwrap();
            let kind = if status.is_success() {
                v["type"].as_str().unwrap().to_owned()
            } else {
                v["error"]["type"].as_str().unwrap().to_owned()
            };
            out.push((status.as_u16(), kind));
        }
        out
    }
    let a = outcomes(config.clone()).await;
    assert_eq!(a, outcomes(config.clone()).await);
    for expected in [
        (200, "message"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ] {
        assert!(
            a.contains(&(expected.0, expected.1.to_owned())),
            "{expected:?} missing from {a:?}"
        );
    }
    // The draw is per request, not per dialect: OpenAI requests see the same status sequence.
    let mock = Mock::start(config).await;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let resp = mock
            .client
            .post(mock.url("/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, a.iter().map(|(s, _)| *s).collect::<Vec<_>>());
}

#[tokio::test]
async fn tool_step_non_stream() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock
        .messages(&body(false), Some("tool,tool:lookup_stock"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({
            "id": "msg_mock_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather",
                         "input": {"location": "Paris"}}],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 3},
        })
    );
    let input: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap();
    assert_eq!(v["content"][0]["input"], input);
    let v: Value = mock
        .messages(&body(false), Some("tool,tool:lookup_stock"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["name"], "lookup_stock");
    assert_eq!(v["content"][0]["id"], "toolu_mock_2");
    let stats = mock.server.stats();
    assert_eq!(stats.ok, 2);
    assert_eq!(stats.by_outcome["tool"], 2);
}

#[tokio::test]
async fn tool_step_stream() {
    let mock = Mock::start(MockConfig::default()).await;
    let (events, err) = Sse::new(mock.messages(&body(true), Some("tool")).await)
        .collect()
        .await;
    assert!(err.is_none(), "{err:?}");
    let mut expected = head_names();
    expected.extend(["content_block_delta"; 4]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    assert_eq!(
        events[1].data,
        json!({"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {}}})
    );
    let parts: Vec<&str> = events[3..7]
        .iter()
        .map(|e| {
            assert_eq!(e.data["index"], 0);
            assert_eq!(e.data["delta"]["type"], "input_json_delta");
            e.data["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(parts[0], "", "the first input_json_delta is empty");
    assert_eq!(&parts[1..], tool_fragments());
    assert_eq!(parts.concat(), TOOL_ARGUMENTS);
    assert_eq!(
        events[8].data,
        json!({"type": "message_delta",
               "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": 3}})
    );
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!((stats.ok, stats.cancelled), (1, 0));
}

#[tokio::test]
async fn invalid_requests_are_anthropic_400s() {
    let mock = Mock::start(MockConfig::default()).await;
    let expect_400 = |resp: reqwest::Response, fragment: &'static str| async move {
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(resp.headers().contains_key("request-id"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{message}");
    };
    // Missing max_tokens, with a script whose step must not be consumed.
    let mut b = body(false);
    b.as_object_mut().unwrap().remove("max_tokens");
    expect_400(
        mock.messages(&b, Some("500")).await,
        "max_tokens: Field required",
    )
    .await;
    // Missing anthropic-version.
    let resp = mock
        .client
        .post(mock.url("/messages"))
        .header("x-sluice-mock-fault", "500")
        .json(&body(false))
        .send()
        .await
        .unwrap();
    expect_400(resp, "anthropic-version: header is required").await;
    for (b, fragment) in [
        (
            json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
            "model: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": []}),
            "messages:",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}),
            "messages.0.role",
        ),
    ] {
        expect_400(mock.messages(&b, Some("500")).await, fragment).await;
    }
    let resp = mock
        .request(&body(false), None)
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_400(resp, "parsing the body").await;
    // A bad script is an Anthropic 400 too.
    expect_400(mock.messages(&body(false), Some("429,tea")).await, "`tea`").await;
    // The 500 is still next.
    assert_eq!(
        mock.messages(&body(false), Some("500")).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let stats = mock.server.stats();
    assert_eq!(stats.by_outcome["invalid_request"], 7);
    assert_eq!(stats.by_outcome["bad_script"], 1);
    assert_eq!(stats.requests, 9);
}

#[tokio::test]
async fn context_limit_is_prompt_too_long() {
    let mock = Mock::start(MockConfig {
        context_limit: Some(2),
        ..MockConfig::default()
    })
    .await;
    let resp = mock.messages(&body(true), None).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "invalid_request_error",
               "message": "prompt is too long: 3 tokens > 2 maximum"}})
    );
}

#[tokio::test]
async fn scripts_and_stats_are_shared_between_dialects() {
    let mock = Mock::start(MockConfig::default()).await;
    let openai = |fault: &'static str| {
        mock.client
            .post(mock.url("/chat/completions"))
            .header("x-sluice-mock-fault", fault)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // One counter per (scenario, script), whichever API the attempt uses.
    assert_eq!(openai("429,503").await.unwrap().status(), 429);
    assert_eq!(
        mock.messages(&body(false), Some("429,503")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(openai("429,503").await.unwrap().status(), 200);
    let stats = mock.server.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(
        stats.by_api,
        [("anthropic".to_owned(), 1), ("openai".to_owned(), 2)].into()
    );
    let reset: sluice_mock::MockStats = mock
        .client
        .post(format!("http://{}/stats/reset", mock.server.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(reset.by_api.is_empty());
}
