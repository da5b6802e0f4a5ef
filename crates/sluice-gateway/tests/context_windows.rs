//! Context overflow through the gateway: one trimmed retry after a provider's
//! `context_length_exceeded`, or the larger-window target, as the route's policy says.

use serde_json::{Value, json};
use sluice_core::OnOverflow;
use sluice_gateway::{Config, Gateway, GatewayHandle, GatewayOptions, ModelConfig, ProviderConfig};
use sluice_mock::{MockConfig, MockServer, mock_text};

fn long_history() -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for i in 0..20 {
        messages.push(json!({"role": "user", "content": format!("question {i}: {}", "lorem ipsum dolor sit amet ".repeat(40))}));
        messages.push(json!({"role": "assistant", "content": format!("answer {i}: {}", "consectetur adipiscing elit ".repeat(40))}));
    }
    messages.push(json!({"role": "user", "content": "And the last question?"}));
    json!({"model": "chat", "messages": messages})
}

async fn start(config: Config) -> GatewayHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Gateway::build(config, GatewayOptions::default())
        .await
        .unwrap()
        .start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap()
}

#[tokio::test]
async fn truncate_recovers_from_a_providers_context_error_with_one_trimmed_retry() {
    let mock = MockServer::start(MockConfig {
        context_limit: Some(2_000),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut config = Config::default();
    config
        .providers
        .push(ProviderConfig::openai("p", &mock.base_url()));
    let mut model = ModelConfig::new("chat", &["p/mock-1"], config.policy.clone());
    model.context.on_overflow = OnOverflow::Truncate;
    config.models.push(model);
    let gw = start(config).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", gw.addr()))
        .json(&long_history())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-attempts"], "2");
    let truncated = resp.headers()["x-sluice-truncated"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(truncated.starts_with("messages="), "{truncated}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_text(8));
    assert_eq!(mock.stats().requests, 2);
}

#[tokio::test]
async fn fallback_sends_an_oversized_prompt_to_the_larger_window() {
    let small = MockServer::start(MockConfig::default()).await.unwrap();
    let large = MockServer::start(MockConfig::default()).await.unwrap();
    let mut config = Config::default();
    let mut p_small = ProviderConfig::openai("small", &small.base_url());
    p_small.context_windows = vec![("mock-1".into(), 3_000)];
    let mut p_large = ProviderConfig::openai("large", &large.base_url());
    p_large.context_windows = vec![("mock-1".into(), 1_000_000)];
    config.providers.extend([p_small, p_large]);
    let mut model = ModelConfig::new(
        "chat",
        &["small/mock-1", "large/mock-1"],
        config.policy.clone(),
    );
    model.context.on_overflow = OnOverflow::Fallback;
    config.models.push(model);
    let gw = start(config).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", gw.addr()))
        .json(&long_history())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-target"], "large/mock-1");
    assert!(resp.headers().get("x-sluice-truncated").is_none());
    assert_eq!(small.stats().requests, 0);
    assert_eq!(large.stats().requests, 1);
}
