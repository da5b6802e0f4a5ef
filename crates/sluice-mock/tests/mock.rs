//! End-to-end tests of the mock over real sockets with reqwest.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_mock::{
    MockConfig, MockServer, MockStats, TOOL_ARGUMENTS, chunk_text, mock_text, tool_fragments,
};
use tokio::time::Instant;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("client")
}

fn body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
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

    async fn chat(&self, body: &Value, fault: Option<&str>) -> reqwest::Response {
        self.try_chat(body, fault, None).await.expect("response")
    }

    async fn try_chat(
        &self,
        body: &Value,
        fault: Option<&str>,
        scenario: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut req = self.client.post(self.url("/chat/completions")).json(body);
        if let Some(fault) = fault {
            req = req.header("x-sluice-mock-fault", fault);
        }
        if let Some(scenario) = scenario {
            req = req.header("x-sluice-mock-scenario", scenario);
        }
        req.send().await
    }

    async fn stats_http(&self) -> MockStats {
        let url = format!("http://{}/stats", self.server.addr());
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits (bounded) until the server's stats satisfy `pred`.
    async fn wait_stats(&self, pred: impl Fn(&MockStats) -> bool) -> MockStats {
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

/// Reads SSE `data:` payloads from `resp` until the body ends or fails.
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

    /// The next event's data; `Ok(None)` at a clean end of the body.
    async fn next(&mut self) -> reqwest::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data = text
                    .trim_end()
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data line: {text:?}"));
                return Ok(Some(data.to_owned()));
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

    /// All events to the end, and the error that ended the body, if any.
    async fn collect(mut self) -> (Vec<String>, Option<reqwest::Error>) {
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

fn parse(event: &str) -> Value {
    serde_json::from_str(event).unwrap_or_else(|e| panic!("{e}: {event}"))
}

fn content_of(event: &Value) -> Option<&str> {
    event["choices"][0]["delta"]["content"].as_str()
}

fn assert_preamble(event: &str) {
    let v = parse(event);
    assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(v["choices"][0]["delta"]["content"], "");
    assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
}

fn assert_content(event: &str, i: usize) {
    let v = parse(event);
    assert_eq!(content_of(&v), Some(chunk_text(i).as_str()), "{event}");
    assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
}

#[tokio::test]
async fn non_stream_answer_has_the_openai_shape() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock.chat(&body(false), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-request-id"], "req_mock_1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "chatcmpl-mock-1");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], mock_text(8));
    assert_eq!(choice["finish_reason"], "stop");
    // "Say hello." is 10 characters: ceil(10 / 4) = 3 tokens.
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(v["usage"]["total_tokens"], 11);

    // An empty model is answered with the configured name; the id counter moves on.
    let mut b = body(false);
    b["model"] = json!("");
    let v: Value = mock.chat(&b, None).await.json().await.unwrap();
    assert_eq!(v["model"], "mock-1");
    assert_eq!(v["id"], "chatcmpl-mock-2");
}

#[tokio::test]
async fn stream_sends_preamble_chunks_finish_and_done() {
    let mock = Mock::start(MockConfig {
        chunks: 5,
        ..MockConfig::default()
    })
    .await;
    let resp = mock.chat(&body(true), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (events, err) = Sse::new(resp).collect().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.len(), 1 + 5 + 1 + 1, "{events:#?}");
    assert_preamble(&events[0]);
    let mut text = String::new();
    for (i, event) in events[1..6].iter().enumerate() {
        assert_content(event, i);
        text.push_str(content_of(&parse(event)).unwrap());
    }
    assert_eq!(text, mock_text(5));
    let finish = parse(&events[6]);
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(
        finish.get("usage").is_none(),
        "no usage without include_usage"
    );
    assert_eq!(events[7], "[DONE]");
    // Every chunk shares id, created and model.
    let first = parse(&events[0]);
    for event in &events[..7] {
        let v = parse(event);
        assert_eq!(v["id"], first["id"]);
        assert_eq!(v["created"], first["created"]);
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["object"], "chat.completion.chunk");
    }
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!((stats.requests, stats.ok, stats.cancelled), (1, 1, 0));
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_a_usage_chunk() {
    let mock = Mock::start(MockConfig {
        chunks: 3,
        ..MockConfig::default()
    })
    .await;
    let mut b = body(true);
    b["stream_options"] = json!({"include_usage": true});
    let (events, err) = Sse::new(mock.chat(&b, None).await).collect().await;
    assert!(err.is_none());
    assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1, "{events:#?}");
    for event in &events[..5] {
        assert_eq!(parse(event)["usage"], Value::Null, "{event}");
    }
    let usage = parse(&events[5]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );
    assert_eq!(events[6], "[DONE]");
}

#[tokio::test]
async fn rate_limit_with_ms_hint_twice_then_success() {
    let mock = Mock::start(MockConfig::default()).await;
    for _ in 0..2 {
        let resp = mock.chat(&body(false), Some("429:ms=1500*2")).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["retry-after-ms"], "1500");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "requests");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["param"], Value::Null);
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Rate limit reached for gpt-4o-mini"),
            "{message}"
        );
        assert!(message.contains("Please try again in 1.5s."), "{message}");
    }
    let resp = mock.chat(&body(false), Some("429:ms=1500*2")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stats = mock.server.stats();
    assert_eq!(stats.by_outcome["429"], 2);
    assert_eq!(stats.by_outcome["ok"], 1);
}

#[tokio::test]
async fn rate_limit_hints_seconds_and_none() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock.chat(&body(false), Some("429:ra=3")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert!(resp.headers().get("retry-after-ms").is_none());

    let resp = mock.chat(&body(false), Some("429")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    assert!(resp.headers().get("retry-after-ms").is_none());
    let v: Value = resp.json().await.unwrap();
    assert!(
        !v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again in")
    );

    // Random 429s carry the configured hint.
    let mock = Mock::start(MockConfig {
        p_429: 1.0,
        retry_after: Some(Duration::from_millis(250)),
        ..MockConfig::default()
    })
    .await;
    let resp = mock.chat(&body(false), None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["retry-after-ms"], "250");
}

#[tokio::test]
async fn every_error_step_returns_its_status_and_body() {
    let mock = Mock::start(MockConfig::default()).await;
    // (step, status, error.type, error.code, message fragment)
    let cases: [(&str, u16, &str, Option<&str>, &str); 12] = [
        (
            "429",
            429,
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached",
        ),
        (
            "quota",
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            "You exceeded your current quota",
        ),
        (
            "401",
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided",
        ),
        ("400", 400, "invalid_request_error", None, "Invalid value"),
        (
            "404",
            404,
            "invalid_request_error",
            Some("model_not_found"),
            "The model 'gpt-4o-mini' does not exist",
        ),
        (
            "context",
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 128001 tokens.",
        ),
        (
            "policy",
            400,
            "invalid_request_error",
            Some("content_policy_violation"),
            "rejected as a result of our safety system",
        ),
        (
            "500",
            500,
            "server_error",
            None,
            "The server had an error processing your request",
        ),
        ("502", 502, "server_error", None, "Bad gateway"),
        (
            "503",
            503,
            "server_error",
            None,
            "That model is currently overloaded",
        ),
        ("504", 504, "server_error", None, "Gateway timeout"),
        (
            "inband",
            500,
            "server_error",
            None,
            "The server had an error processing your request",
        ),
    ];
    for (step, status, ty, code, fragment) in cases {
        let resp = mock.chat(&body(false), Some(step)).await;
        assert_eq!(resp.status().as_u16(), status, "{step}");
        assert!(
            resp.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_mock_")
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], ty, "{step}: {v}");
        assert_eq!(v["error"]["code"].as_str(), code, "{step}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{step}: {message}");
    }
    let resp = mock.chat(&body(false), Some("529")).await;
    assert_eq!(resp.status().as_u16(), 529);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})
    );
    // Streaming requests get the same error statuses (before any body).
    let resp = mock
        .try_chat(&body(true), Some("503"), Some("streaming"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "application/json");

    let stats = mock.server.stats();
    assert_eq!(stats.requests, 14);
    assert_eq!(stats.ok, 0);
    for name in [
        "429", "quota", "401", "400", "404", "context", "policy", "500", "502", "504", "529",
        "inband",
    ] {
        assert_eq!(stats.by_outcome[name], 1, "{name}");
    }
    assert_eq!(stats.by_outcome["503"], 2);
}

#[tokio::test]
async fn reset_is_a_connection_error_not_a_response() {
    let mock = Mock::start(MockConfig::default()).await;
    // Warm up a keep-alive connection so the reset hits a reused one, too.
    assert_eq!(mock.chat(&body(false), None).await.status(), StatusCode::OK);
    for stream in [false, true] {
        let err = mock
            .try_chat(&body(stream), Some("reset"), Some(&format!("s{stream}")))
            .await
            .expect_err("reset must not produce a response");
        assert!(err.status().is_none(), "{err:?}");
        assert!(err.is_request() || err.is_connect(), "{err:?}");
    }
    // The server keeps serving afterwards.
    assert_eq!(mock.chat(&body(false), None).await.status(), StatusCode::OK);
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!(stats.by_outcome["reset"], 2);
    assert_eq!(stats.cancelled, 0);
}

#[tokio::test]
async fn cut_stream_ends_without_done_and_with_a_body_error() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock.chat(&body(true), Some("cut:2")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (events, err) = Sse::new(resp).collect().await;
    assert!(
        err.is_some(),
        "a cut must surface as a body error: {events:#?}"
    );
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_preamble(&events[0]);
    assert_content(&events[1], 0);
    assert_content(&events[2], 1);
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!(stats.by_outcome["cut"], 1);
    assert_eq!(stats.cancelled, 0);

    // Without N the cut comes halfway (8 / 2 = 4 chunks).
    let (events, err) = Sse::new(mock.chat(&body(true), Some("cut")).await)
        .collect()
        .await;
    assert!(err.is_some());
    assert_eq!(events.len(), 1 + 4);
}

#[tokio::test]
async fn cut_non_stream_sends_a_truncated_body() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock.chat(&body(false), Some("cut:0*2")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let declared: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut resp = resp;
    let mut received = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(b)) => received.extend_from_slice(&b),
            Ok(None) => panic!("body completed: {}", String::from_utf8_lossy(&received)),
            Err(e) => break e,
        }
    };
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );
    assert!(received.len() < declared);
    assert!(received.starts_with(b"{\"id\":\"chatcmpl-mock-"));
    // And `.json()` fails, as a client would.
    let resp = mock.chat(&body(false), Some("cut:0*2")).await;
    assert!(resp.json::<Value>().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn stall_stream_goes_silent_and_counts_the_client_leaving() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock.chat(&body(true), Some("stall:1")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut sse = Sse::new(resp);
    assert_preamble(&sse.next().await.unwrap().unwrap());
    assert_content(&sse.next().await.unwrap().unwrap(), 0);
    let next = tokio::time::timeout(Duration::from_secs(5), sse.next()).await;
    assert!(next.is_err(), "the stream must stall, got {next:?}");
    let stats = mock.server.stats();
    assert_eq!((stats.in_flight, stats.cancelled), (1, 0));
    assert_eq!(stats.by_outcome["stall"], 1);

    drop(sse);
    let stats = mock.wait_stats(|s| s.cancelled == 1).await;
    assert_eq!(stats.in_flight, 0);
    assert_eq!(mock.stats_http().await.cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn stall_zero_non_stream_never_answers() {
    let mock = Mock::start(MockConfig::default()).await;
    let b = body(false);
    let pending = mock.try_chat(&b, Some("stall:0"), None);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), pending)
            .await
            .is_err()
    );
    let stats = mock.wait_stats(|s| s.cancelled == 1).await;
    assert_eq!(stats.in_flight, 0);

    // stall:N>0 without streaming: headers and half a body, then silence.
    let mut resp = mock.chat(&body(false), Some("stall:2")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"{\"id\""));
    assert!(
        tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn inband_errors_arrive_inside_a_200_stream() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock
        .chat(&body(true), Some("inband:overloaded_error"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (events, err) = Sse::new(resp).collect().await;
    assert!(err.is_none());
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        parse(&events[0]),
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
    );

    let (events, _) = Sse::new(mock.chat(&body(true), Some("inband")).await)
        .collect()
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(parse(&events[0])["error"]["type"], "server_error");

    let (events, err) = Sse::new(mock.chat(&body(true), Some("inband_after:2")).await)
        .collect()
        .await;
    assert!(err.is_none());
    assert_eq!(events.len(), 1 + 2 + 1, "{events:#?}");
    assert_preamble(&events[0]);
    assert_content(&events[2], 1);
    assert_eq!(parse(&events[3])["error"]["type"], "server_error");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!(stats.by_outcome["inband"], 3);
    assert_eq!(stats.cancelled, 0);
}

#[tokio::test]
async fn bad_script_is_a_400_naming_the_step() {
    let mock = Mock::start(MockConfig::default()).await;
    for (script, needle) in [
        ("429,tea", "`tea`"),
        ("cut:x", "`cut:x`"),
        ("500*0", "`500*0`"),
    ] {
        let resp = mock.chat(&body(false), Some(script)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{script}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "x-sluice-mock-fault");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(mock.server.stats().by_outcome["bad_script"], 3);
}

#[tokio::test]
async fn invalid_bodies_are_openai_400s() {
    let mock = Mock::start(MockConfig::default()).await;
    let resp = mock
        .client
        .post(mock.url("/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not parse the JSON body")
    );
    for (b, param) in [
        (json!({"model": "m"}), "messages"),
        (json!({"messages": "hi"}), "messages"),
        (json!({"messages": [], "model": "m"}), "messages"),
    ] {
        let resp = mock.chat(&b, Some("500")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{b}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v["error"],
            json!({"message": v["error"]["message"], "type": "invalid_request_error", "param": param, "code": null})
        );
    }
    // Invalid requests do not consume script steps: the 500 is still next.
    let resp = mock.chat(&body(false), Some("500")).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let stats = mock.server.stats();
    assert_eq!(stats.by_outcome["invalid_request"], 4);
    assert_eq!(stats.requests, 5);
}

#[tokio::test]
async fn stats_count_requests_and_outcomes_and_reset() {
    let mock = Mock::start(MockConfig::default()).await;
    assert_eq!(mock.stats_http().await, MockStats::default());
    let script = "503,reset,ok,500";
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            mock.try_chat(&body(false), Some(script), None)
                .await
                .map(|r| r.status().as_u16())
                .ok(),
        );
    }
    assert_eq!(
        statuses,
        vec![Some(503), None, Some(200), Some(500), Some(200)]
    );
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!(stats, mock.stats_http().await);
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.ok, 2);
    assert_eq!(stats.cancelled, 0);
    assert_eq!(
        stats.by_outcome,
        [("503", 1), ("reset", 1), ("ok", 2), ("500", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    );

    let url = format!("http://{}/stats/reset", mock.server.addr());
    let reset: MockStats = mock
        .client
        .post(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reset, MockStats::default());
    // The script starts over after a reset.
    let resp = mock.chat(&body(false), Some(script)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mock.server.stats().requests, 1);
}

#[tokio::test]
async fn scenarios_count_the_same_script_separately() {
    let mock = Mock::start(MockConfig::default()).await;
    let status = |scenario: &'static str| {
        let mock = &mock;
        async move {
            mock.try_chat(&body(false), Some("429,500"), Some(scenario))
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("a").await, 429);
    assert_eq!(status("b").await, 429);
    assert_eq!(status("a").await, 500);
    assert_eq!(status("a").await, 200);
    assert_eq!(status("b").await, 500);
    // No scenario header is its own scenario.
    assert_eq!(mock.chat(&body(false), Some("429,500")).await.status(), 429);
}

#[tokio::test]
async fn random_faults_are_reproducible_with_a_seed() {
    let config = MockConfig {
        seed: 42,
        p_429: 0.2,
        p_500: 0.2,
        p_503: 0.2,
        ..MockConfig::default()
    };
    async fn outcomes(config: MockConfig) -> Vec<u16> {
        let mock = Mock::start(config).await;
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(mock.chat(&body(false), None).await.status().as_u16());
        }
        out
    }
    let a = outcomes(config.clone()).await;
    let b = outcomes(config.clone()).await;
    assert_eq!(a, b);
    for status in [200, 429, 500, 503] {
        assert!(a.contains(&status), "{status} missing from {a:?}");
    }
    let other = outcomes(MockConfig {
        seed: 43,
        ..config.clone()
    })
    .await;
    assert_ne!(a, other);

    // A reset re-seeds the draw; scripted requests do not draw.
    let mock = Mock::start(config).await;
    assert_eq!(mock.chat(&body(false), Some("ok")).await.status(), 200);
    let mut again = Vec::new();
    for _ in 0..40 {
        again.push(mock.chat(&body(false), None).await.status().as_u16());
    }
    assert_eq!(again, a);
    mock.client
        .post(format!("http://{}/stats/reset", mock.server.addr()))
        .send()
        .await
        .unwrap();
    let first = mock.chat(&body(false), None).await.status().as_u16();
    assert_eq!(first, a[0]);
}

#[tokio::test]
async fn context_limit_rejects_large_prompts_only() {
    let mock = Mock::start(MockConfig {
        context_limit: Some(10),
        ..MockConfig::default()
    })
    .await;
    let with_chars = |n: usize| {
        json!({"model": "m", "messages": [
            {"role": "system", "content": "x".repeat(n / 2)},
            {"role": "user", "content": [{"type": "text", "text": "y".repeat(n - n / 2)}]},
        ]})
    };
    // 40 characters = 10 tokens: fits.
    assert_eq!(
        mock.chat(&with_chars(40), None).await.status(),
        StatusCode::OK
    );
    // 41 characters = 11 tokens: too long.
    let resp = mock.chat(&with_chars(41), None).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"error": {
            "message": "This model's maximum context length is 10 tokens. However, your messages resulted in 11 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }})
    );
    // Streaming requests are rejected the same way, and error steps still win.
    assert_eq!(
        mock.chat(
            &json!({"messages": with_chars(41)["messages"], "stream": true}),
            None
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        mock.chat(&with_chars(41), Some("503")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(mock.server.stats().by_outcome["context"], 2);
}

#[tokio::test(start_paused = true)]
async fn ttft_and_chunk_gap_follow_tokio_time() {
    let mock = Mock::start(MockConfig {
        chunks: 4,
        ttft: Duration::from_millis(200),
        chunk_gap: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let start = Instant::now();
    let mut sse = Sse::new(mock.chat(&body(true), None).await);
    assert_preamble(&sse.next().await.unwrap().unwrap());
    assert!(start.elapsed() < Duration::from_millis(200));
    assert_content(&sse.next().await.unwrap().unwrap(), 0);
    let first = start.elapsed();
    assert!(first >= Duration::from_millis(200), "{first:?}");
    for i in 1..4 {
        assert_content(&sse.next().await.unwrap().unwrap(), i);
    }
    let last = start.elapsed();
    assert!(last - first >= Duration::from_millis(150), "{last:?}");
    assert!(last < Duration::from_millis(400), "{last:?}");

    // Non-streaming answers wait for ttft; `delay:` overrides it.
    let start = Instant::now();
    mock.chat(&body(false), None).await;
    assert!(start.elapsed() >= Duration::from_millis(200));
    let start = Instant::now();
    mock.chat(&body(false), Some("delay:1500")).await;
    assert!(start.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn delay_and_chunks_steps_answer_normally() {
    let mock = Mock::start(MockConfig::default()).await;
    let v: Value = mock
        .chat(&body(false), Some("chunks:3,delay:1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_text(3));
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let v: Value = mock
        .chat(&body(false), Some("chunks:3,delay:1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_text(8));
    let (events, _) = Sse::new(mock.chat(&body(true), Some("chunks:0")).await)
        .collect()
        .await;
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(mock.server.stats().ok, 3);
}

#[tokio::test]
async fn models_and_unknown_paths() {
    let mock = Mock::start(MockConfig {
        model_name: "mock-xl".into(),
        ..MockConfig::default()
    })
    .await;
    let v: Value = mock
        .client
        .get(mock.url("/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"object": "list", "data": [{"id": "mock-xl", "object": "model", "created": 0, "owned_by": "sluice-mock"}]})
    );
    let resp = mock.client.get(mock.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Invalid URL (GET /v1/nope)");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(mock.server.stats().requests, 0);
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let err = MockServer::start(MockConfig {
        p_500: 0.8,
        p_503: 0.8,
        ..MockConfig::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("sum to at most 1"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_stalled_streams_and_stops_serving() {
    let mock = Mock::start(MockConfig::default()).await;
    let mut sse = Sse::new(mock.chat(&body(true), Some("stall:0")).await);
    assert_preamble(&sse.next().await.unwrap().unwrap());
    let url = mock.url("/models");
    let Mock { server, client } = mock;
    let started = Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        sse.next().await.is_err(),
        "the stalled stream ends with an error"
    );
    assert!(client.get(url).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_all_served() {
    let mock = Mock::start(MockConfig::default()).await;
    let mock = std::sync::Arc::new(mock);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let mock = mock.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                let v: Value = mock.chat(&body(false), None).await.json().await.unwrap();
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            } else {
                let (events, err) = Sse::new(mock.chat(&body(true), None).await).collect().await;
                assert!(err.is_none());
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                events
                    .iter()
                    .filter(|e| e.as_str() != "[DONE]")
                    .filter_map(|e| content_of(&parse(e)).map(str::to_owned))
                    .collect()
            }
        });
    }
    while let Some(text) = tasks.join_next().await {
        assert_eq!(text.unwrap(), mock_text(8));
    }
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!((stats.requests, stats.ok, stats.cancelled), (200, 200, 0));
}

#[tokio::test]
async fn tool_step_non_stream_answers_with_one_tool_call() {
    let mock = Mock::start(MockConfig::default()).await;
    // No `tools` in the request: the mock answers with a tool call anyway.
    let resp = mock
        .chat(&body(false), Some("tool,tool:lookup_stock"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "chatcmpl-mock-1");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "call_mock_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}])
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        TOOL_ARGUMENTS
    );
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let v: Value = mock
        .chat(&body(false), Some("tool,tool:lookup_stock"))
        .await
        .json()
        .await
        .unwrap();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "lookup_stock");
    assert_eq!(call["id"], "call_mock_2");
    let stats = mock.server.stats();
    assert_eq!(stats.ok, 2);
    assert_eq!(stats.by_outcome["tool"], 2);
    assert_eq!(stats.by_api, [("openai".to_owned(), 2)].into());
}

#[tokio::test]
async fn tool_step_stream_sends_the_arguments_in_fragments() {
    let mock = Mock::start(MockConfig::default()).await;
    let mut b = body(true);
    b["stream_options"] = json!({"include_usage": true});
    let (events, err) = Sse::new(mock.chat(&b, Some("tool")).await).collect().await;
    assert!(err.is_none(), "{err:?}");
    // Preamble with the first fragment, 3 argument fragments, finish, usage, [DONE].
    assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1, "{events:#?}");
    let pre = parse(&events[0]);
    assert_eq!(
        pre["choices"][0]["delta"],
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
               "id": "call_mock_1", "type": "function",
               "function": {"name": "get_weather", "arguments": ""}}]})
    );
    assert_eq!(pre["choices"][0]["finish_reason"], Value::Null);
    let mut args = String::new();
    for (event, expected) in events[1..4].iter().zip(tool_fragments()) {
        let v = parse(event);
        assert_eq!(
            v["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": expected}}]})
        );
        assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
        args.push_str(
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        );
    }
    assert_eq!(args, TOOL_ARGUMENTS);
    let finish = parse(&events[4]);
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = parse(&events[5]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(events[6], "[DONE]");

    // Without include_usage: no usage chunk.
    let (events, _) = Sse::new(mock.chat(&body(true), Some("tool:f")).await)
        .collect()
        .await;
    assert_eq!(events.len(), 1 + 3 + 1 + 1, "{events:#?}");
    assert_eq!(
        parse(&events[0])["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "f"
    );
    let stats = mock.wait_stats(|s| s.in_flight == 0).await;
    assert_eq!((stats.ok, stats.cancelled), (2, 0));
    assert_eq!(stats.by_outcome["tool"], 2);
}
