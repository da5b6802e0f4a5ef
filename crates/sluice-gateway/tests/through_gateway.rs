//! The core fault scripts, end to end through the gateway with a real HTTP client: the client
//! sees one clean answer or one clean error, streaming or not.

mod common;

use common::{chat_body, setup, sse_data, sse_text};
use serde_json::Value;
use sluice_mock::{chunk_text, mock_text};

async fn post(s: &common::Setup, script: &str, scenario: &str, stream: bool) -> reqwest::Response {
    s.http
        .post(s.url("/v1/chat/completions"))
        .header("x-sluice-mock-fault", script)
        .header("x-sluice-mock-scenario", scenario)
        .json(&chat_body("fast", stream))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rate_limits_are_absorbed_for_streaming_and_plain_calls() {
    let s = setup().await;
    for stream in [false, true] {
        let resp = post(&s, "429*3", &format!("s{stream}"), stream).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-sluice-attempts"], "4");
        assert_eq!(resp.headers()["x-sluice-target"], "mock/mock-1");
        assert!(resp.headers().contains_key("x-request-id"));
        let body = resp.text().await.unwrap();
        let text = if stream {
            assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
            sse_text(&body)
        } else {
            let v: Value = serde_json::from_str(&body).unwrap();
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            text,
            mock_text(8),
            "stream={stream}: the answer exactly once"
        );
    }
    assert_eq!(s.mock.stats().requests, 8);
}

#[tokio::test]
async fn final_failures_are_openai_errors_with_matching_status() {
    // The breaker would open after the first run of 503s and make later cases wait for its
    // cooldown; this test is about how each failure is rendered.
    let s = common::setup_with(
        sluice_mock::MockConfig::default(),
        common::fast_policy(),
        |c| {
            c.breaker.consecutive_failures = u32::MAX;
            c.breaker.min_requests = u32::MAX;
        },
    )
    .await;
    let cases = [
        ("401", 401, "invalid_api_key"),
        ("400", 400, "invalid_request_error"),
        ("quota", 429, "insufficient_quota"),
        ("context", 400, "context_length_exceeded"),
        ("503*20", 503, "overloaded"),
        ("429*20", 429, "rate_limit_exceeded"),
    ];
    for (script, status, code) in cases {
        for stream in [false, true] {
            let resp = post(&s, script, &format!("{script}-{stream}"), stream).await;
            assert_eq!(resp.status().as_u16(), status, "{script} stream={stream}");
            assert!(
                resp.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json")
            );
            if status == 429 && script.starts_with("429") {
                assert!(
                    resp.headers().contains_key("retry-after"),
                    "a final rate limit says when to come back"
                );
            }
            let v: Value = resp.json().await.unwrap();
            let err = &v["error"];
            assert!(err["message"].is_string(), "{v}");
            assert!(err["type"].is_string(), "{v}");
            assert!(
                err.get("param").is_some() && err.get("code").is_some(),
                "{v}"
            );
            let got = err["code"].as_str().unwrap_or_default();
            if code == "invalid_request_error" {
                assert_eq!(err["type"], code, "{v}");
            } else {
                assert_eq!(got, code, "{script}: {v}");
            }
            assert!(err["sluice"]["attempts"].is_array());
        }
    }
}

#[tokio::test]
async fn a_stream_cut_after_content_ends_with_an_error_event_and_no_done() {
    let s = setup().await;
    let resp = post(&s, "cut:3", "cut", true).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let data = sse_data(&body);
    assert!(
        !data.iter().any(|d| d == "[DONE]"),
        "a cut answer must not look complete: {body}"
    );
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    assert_eq!(sse_text(&body), (0..3).map(chunk_text).collect::<String>());
    assert_eq!(s.mock.stats().requests, 1, "no replay after commit");
}

#[tokio::test]
async fn failures_before_commit_are_invisible_to_a_streaming_client() {
    let s = setup().await;
    for script in [
        "503",
        "reset",
        "inband:overloaded_error",
        "cut:0",
        "529,502",
    ] {
        let resp = post(&s, script, script, true).await;
        assert_eq!(resp.status(), 200, "{script}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let body = resp.text().await.unwrap();
        assert_eq!(sse_text(&body), mock_text(8), "{script}");
        assert!(!body.contains("\"error\""), "{script}: {body}");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let s = setup().await;
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .header("x-request-id", "my-trace-123")
        .json(&chat_body("fast", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "my-trace-123");
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert!(
        resp.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_sluice_")
    );
}

#[tokio::test]
async fn models_health_and_readiness() {
    let s = setup().await;
    let v: Value = s
        .http
        .get(s.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["id"], "fast");
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        s.http.get(s.url("/readyz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn provider_prefixed_models_go_straight_to_the_provider() {
    let s = setup().await;
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .json(&chat_body("mock/some-model", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-target"], "mock/some-model");
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_stream() {
    let s = common::setup_with(
        sluice_mock::MockConfig {
            chunks: 1000,
            chunk_gap: std::time::Duration::from_millis(20),
            ..Default::default()
        },
        common::fast_policy(),
        |_| {},
    )
    .await;
    let mut resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .json(&chat_body("fast", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_eq!(s.mock.stats().in_flight, 1);
    drop(resp);
    // Bounded wait for the mock to notice: the gateway must drop the upstream stream at once.
    for _ in 0..200 {
        if s.mock.stats().cancelled == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let stats = s.mock.stats();
    assert_eq!(stats.cancelled, 1, "{stats:?}");
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn a_client_disconnect_before_commit_cancels_the_upstream_request() {
    let s = setup().await;
    let http = s.http.clone();
    let url = s.url("/v1/chat/completions");
    let call = tokio::spawn(async move {
        http.post(url)
            .header("x-sluice-mock-fault", "stall:0")
            .json(&chat_body("fast", false))
            .send()
            .await
    });
    for _ in 0..200 {
        if s.mock.stats().in_flight == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(s.mock.stats().in_flight, 1);
    call.abort();
    for _ in 0..200 {
        if s.mock.stats().in_flight == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(s.mock.stats().in_flight, 0, "{:?}", s.mock.stats());
}
