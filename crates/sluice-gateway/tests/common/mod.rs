//! Helpers: a mock provider and a gateway in front of it, both on 127.0.0.1:0.

#![allow(dead_code)]

use std::time::Duration;

use sluice::RetryPolicy;
use sluice_gateway::{Config, Gateway, GatewayHandle, GatewayOptions, ModelConfig, ProviderConfig};
use sluice_mock::{MockConfig, MockServer};

pub struct Setup {
    pub mock: MockServer,
    pub gateway: GatewayHandle,
    pub http: reqwest::Client,
}

impl Setup {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway.addr(), path)
    }
}

/// A policy with short, test-friendly delays (the defaults wait seconds).
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        backoff: sluice_core::Backoff::try_new(Duration::from_millis(1), Duration::from_millis(5))
            .unwrap(),
        ..RetryPolicy::default()
    }
}

pub fn config_for(mock: &MockServer, policy: RetryPolicy) -> Config {
    let mut config = Config {
        policy: policy.clone(),
        ..Config::default()
    };
    config.server.drain_timeout = Duration::from_secs(5);
    config
        .providers
        .push(ProviderConfig::openai("mock", &mock.base_url()));
    config
        .models
        .push(ModelConfig::new("fast", &["mock/mock-1"], policy));
    config
}

pub async fn setup_with(
    mock_config: MockConfig,
    policy: RetryPolicy,
    tweak: impl FnOnce(&mut Config),
) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockServer::start(mock_config).await.unwrap();
    let mut config = config_for(&mock, policy);
    tweak(&mut config);
    let gateway = Gateway::build(config, GatewayOptions::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = gateway.start(listener).unwrap();
    Setup {
        mock,
        gateway,
        http: reqwest::Client::new(),
    }
}

pub async fn setup() -> Setup {
    setup_with(MockConfig::default(), fast_policy(), |_| {}).await
}

pub fn chat_body(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    })
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Concatenated `delta.content` of an SSE body.
pub fn sse_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}
