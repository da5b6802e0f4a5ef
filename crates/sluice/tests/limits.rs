//! The proactive rate limiter in the executor: reserve before sending, reconcile with usage,
//! learn from provider headers, refuse what cannot fit.

mod common;

use std::time::Duration;

use axum::routing::post;
use common::{endpoint, mock};
use futures_util::StreamExt;
use serde_json::json;
use sluice::{
    Answer, CallOptions, ChatRequest, Client, ErrorClass, Limiter, LimiterConfig, Limits,
};
use sluice_core::GiveUpReason;
use tokio::time::Instant;

fn tpm(tokens: f64) -> Limits {
    Limits {
        tpm: Some(tokens),
        ..Limits::UNLIMITED
    }
}

#[tokio::test(start_paused = true)]
async fn usage_reconciles_the_reservation_streaming_and_not() {
    for stream in [false, true] {
        let m = mock().await;
        let limits = tpm(100_000.0);
        let c = Client::builder()
            .endpoint(endpoint("p", &m, ""))
            .limits("p/mock-1", limits)
            .build()
            .unwrap();
        let mut req = ChatRequest::user("p/mock-1", "Say something");
        req.max_tokens = Some(100);
        req.stream = Some(stream);
        let usage = match c.execute(req, &CallOptions::default()).await.unwrap() {
            Answer::Response(r, _) => r.usage.unwrap(),
            Answer::Stream(mut s) => {
                while let Some(item) = s.next().await {
                    item.unwrap();
                }
                s.usage().unwrap()
            }
        };
        let target = c.resolve("p/mock-1").unwrap().targets[0].clone();
        let (key, limits) = c.limit_for(&target);
        let levels = c.limiter().levels(&key, &limits).await.unwrap();
        // The estimate (prompt + 100) was reserved; the actual usage replaced it.
        assert_eq!(
            levels.tokens,
            Some(100_000.0 - usage.total_tokens as f64),
            "stream={stream}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_bucket_fails_at_once_or_falls_back() {
    let small = mock().await;
    let big = mock().await;
    let c = Client::builder()
        .endpoint(endpoint("small", &small, ""))
        .endpoint(endpoint("big", &big, ""))
        .limits("small", tpm(50.0))
        .route("chain", &["small/m", "big/m"])
        .route("only", &["small/m"])
        .build()
        .unwrap();
    let mut req = ChatRequest::user("chain", "hello");
    req.max_tokens = Some(1000);
    let answer = c.chat(req.clone()).await.unwrap();
    assert_eq!(answer.text(), sluice_mock::mock_text(8));
    assert_eq!(
        small.stats().requests,
        0,
        "never sent to the target it cannot fit"
    );
    assert_eq!(big.stats().requests, 1);

    req.model = "only".into();
    let err = c.chat(req).await.unwrap_err();
    assert_eq!(err.class(), Some(ErrorClass::QuotaExhausted));
    assert!(err.to_string().contains("holds at most 50"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_max_queue_wait_is_a_rate_limit_with_retry_after() {
    let m = mock().await;
    let c = Client::builder()
        .endpoint(endpoint("p", &m, ""))
        .limits(
            "p",
            Limits {
                rpm: Some(1.0),
                ..Limits::UNLIMITED
            },
        )
        .limiter(Limiter::local(LimiterConfig {
            max_queue_wait: Duration::from_secs(5),
            ..LimiterConfig::default()
        }))
        .build()
        .unwrap();
    c.chat(ChatRequest::user("p/m", "one")).await.unwrap();
    let started = Instant::now();
    let err = c.chat(ChatRequest::user("p/m", "two")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not after waiting"
    );
    assert_eq!(err.class(), Some(ErrorClass::RateLimited));
    assert!(matches!(
        err.as_call_failure().unwrap().reason,
        GiveUpReason::LimitExceeded { .. }
    ));
    let after = err.retry_after().unwrap();
    assert!(
        after > Duration::from_secs(50) && after <= Duration::from_secs(61),
        "{after:?}"
    );
    assert_eq!(
        m.stats().requests,
        1,
        "the provider never saw the refused request"
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_provider_headers_pause_new_requests_until_the_reset() {
    // An upstream that reports its request bucket empty for the next 2 s on every answer.
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            (
                [
                    ("x-ratelimit-limit-requests", "1"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "2s"),
                ],
                axum::Json(json!({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = Client::builder()
        .openai("p", format!("http://{addr}/v1"), None)
        .build()
        .unwrap();
    c.chat(ChatRequest::user("p/m", "one")).await.unwrap();
    let started = Instant::now();
    c.chat(ChatRequest::user("p/m", "two")).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(3),
        "the second request waited for the provider's reset: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_limit_scope_adds_its_own_buckets_inside_the_targets() {
    let m = mock().await;
    let limits = Limits {
        rpm: Some(10.0),
        ..Limits::UNLIMITED
    };
    let c = Client::builder()
        .endpoint(endpoint("p", &m, ""))
        .limits("p", limits)
        .build()
        .unwrap();
    let options = CallOptions {
        limit_scope: Some("client-a".into()),
        ..CallOptions::default()
    };
    for _ in 0..2 {
        c.execute(ChatRequest::user("p/m", "hi"), &options)
            .await
            .unwrap();
    }
    c.execute(ChatRequest::user("p/m", "hi"), &CallOptions::default())
        .await
        .unwrap();
    let scoped = c.limiter().levels("p/m|client-a", &limits).await.unwrap();
    let target = c.limiter().levels("p/m", &limits).await.unwrap();
    assert_eq!(scoped.requests, Some(8.0), "the client's own bucket");
    assert_eq!(
        target.requests,
        Some(7.0),
        "the target's bucket counts every client"
    );
}
