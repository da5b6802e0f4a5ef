//! Proactive limits through the gateway: two replicas sharing Redis stay under one provider
//! limit together, so the provider sees no 429; the clients get Sluice's own 429 with
//! `Retry-After` instead, at once.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use sluice_gateway::{
    Config, Gateway, GatewayHandle, GatewayOptions, LimitsConfig, ModelConfig, ProviderConfig,
    RateLimitBackend,
};
use sluice_mock::{MockConfig, MockServer};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway redis-server on loopback (scripts/test installs it; missing = a clear failure).
async fn redis() -> (tokio::process::Child, u16) {
    let port = free_port();
    let child = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is not installed (scripts/test installs it)");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not start");
}

async fn replica(mock: &MockServer, redis_port: u16) -> GatewayHandle {
    let mut config = Config::default();
    config.rate_limit.backend = RateLimitBackend::Redis {
        url: format!("redis://127.0.0.1:{redis_port}"),
    };
    config.rate_limit.expected_replicas = 2;
    config.rate_limit.max_queue_wait = Duration::from_millis(500);
    config.providers.push(ProviderConfig {
        limits: LimitsConfig {
            rpm: Some(30.0),
            ..LimitsConfig::default()
        },
        ..ProviderConfig::openai("mock", &mock.base_url())
    });
    config.models.push(ModelConfig::new(
        "m",
        &["mock/mock-1"],
        config.policy.clone(),
    ));
    Gateway::build(config, GatewayOptions::default())
        .await
        .unwrap()
        .start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_stay_under_one_limit() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_redis, redis_port) = redis().await;
    // The provider enforces the same 30 requests/min itself.
    let mock = MockServer::start(MockConfig {
        rpm: Some(30.0),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let replicas = [
        replica(&mock, redis_port).await,
        replica(&mock, redis_port).await,
    ];
    let http = reqwest::Client::new();
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..50 {
        let gw = &replicas[i % 2];
        let resp = http
            .post(format!("http://{}/v1/chat/completions", gw.addr()))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(resp.headers().contains_key("retry-after"));
                let v: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(v["error"]["sluice"]["reason"], "limit_exceeded", "{v}");
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // Together the replicas admitted one limit's worth (plus at most the refill during the run).
    assert!((30..=32).contains(&ok), "admitted {ok}");
    assert_eq!(ok + limited, 50);
    let stats = mock.stats();
    assert_eq!(
        stats.rate_limited, 0,
        "the provider never had to say 429: {stats:?}"
    );
    assert_eq!(stats.requests, ok as u64);

    // The limiter's state is visible in /metrics: the shared bucket (nearly empty) and Redis
    // healthy.
    let text = http
        .get(format!("http://{}/metrics", replicas[0].addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let level_line = text
        .lines()
        .find(|l| l.starts_with("sluice_ratelimit_bucket_level{") && l.contains("requests"))
        .unwrap_or_else(|| panic!("no bucket level in:\n{text}"));
    let level: f64 = level_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(level < 3.0, "the shared bucket was drained: {level_line}");
    assert!(text.contains("sluice_ratelimit_redis_degraded 0"), "{text}");
}
