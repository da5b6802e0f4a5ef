//! Client auth, and what reaches the upstream: never the client's key, never hop-by-hop
//! headers; the provider key comes from the provider's own variable.

mod common;

use std::sync::Arc;

use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};
use sluice_gateway::{Config, Gateway, GatewayOptions, ModelConfig, ProviderConfig};

/// An upstream that records the headers it receives and answers a fixed completion.
async fn recording_upstream() -> (String, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: http::HeaderMap| {
            let record = record.clone();
            async move {
                record.lock().push(headers);
                axum::Json(json!({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), seen)
}

async fn gateway(upstream: &str, keys: Option<Vec<String>>) -> sluice_gateway::GatewayHandle {
    let mut config = Config::default();
    config.providers.push(ProviderConfig {
        headers: vec![("OpenAI-Organization".into(), "org-test".into())],
        ..ProviderConfig::openai("up", upstream)
    });
    let policy = config.policy.clone();
    config
        .models
        .push(ModelConfig::new("m", &["up/upstream-model"], policy));
    let gw = Gateway::build(
        config,
        GatewayOptions {
            client_keys: keys,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    gw.start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap()
}

fn body() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn keys_are_required_when_configured() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (upstream, seen) = recording_upstream().await;
    let gw = gateway(
        &upstream,
        Some(vec!["sk-client-1".into(), "sk-client-2".into()]),
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/chat/completions", gw.addr());
    for (auth, status) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Bearer sk-client-1x"), 401),
        (Some("sk-client-1"), 401),
        (Some("Bearer sk-client-2"), 200),
        (Some("Bearer sk-client-1"), 200),
    ] {
        let mut req = http.post(&url).json(&body());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{auth:?}");
        if status == 401 {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error");
            assert!(v["error"]["code"].as_str().unwrap().contains("api_key"));
        }
    }
    assert_eq!(
        seen.lock().len(),
        2,
        "rejected requests never reach the upstream"
    );
    // Health checks stay open for load balancers.
    let resp = http
        .get(format!("http://{}/healthz", gw.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_upstream_never_sees_the_clients_key_or_hop_by_hop_headers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (upstream, seen) = recording_upstream().await;
    let gw = gateway(&upstream, Some(vec!["sk-client-secret".into()])).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", gw.addr()))
        .header("authorization", "Bearer sk-client-secret")
        .header("x-api-key", "sk-client-secret")
        .header("proxy-authorization", "Basic abc")
        .header("te", "trailers")
        .header("cookie", "session=1")
        .header("x-sluice-mock-fault", "ok")
        .json(&body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen.lock();
    let headers = &seen[0];
    for (name, value) in headers {
        assert!(
            !value.to_str().unwrap_or("").contains("sk-client-secret"),
            "{name} carries the client's key upstream"
        );
    }
    for absent in [
        "authorization",
        "x-api-key",
        "proxy-authorization",
        "te",
        "cookie",
    ] {
        assert!(!headers.contains_key(absent), "{absent} was forwarded");
    }
    assert_eq!(
        headers["openai-organization"], "org-test",
        "configured provider headers are sent"
    );
    assert_eq!(
        headers["x-sluice-mock-fault"], "ok",
        "mock control headers pass through"
    );
}
