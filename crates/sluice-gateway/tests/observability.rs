//! Metrics and logs, end to end: a scripted run against the mock (rate limits, a fallback, a
//! breaker opening, a spent retry budget, a broken stream) must move exactly the expected
//! counters on `GET /metrics`; no API key, prompt or completion text may reach the logs, the
//! error bodies or the metrics; and the admin listener / `metrics = false` switches work.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::{chat_body, fast_policy, sse_data};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sluice::{BreakerConfig, BudgetConfig};
use sluice_gateway::{Config, Gateway, GatewayHandle, GatewayOptions, ModelConfig, ProviderConfig};
use sluice_mock::{MockConfig, MockServer, mock_text};

/// Mock, gateway and an HTTP client, with the run's config: providers `primary` (a breaker
/// that opens after 2 failures in a row), `backup` and `tight` (a retry budget of zero), all
/// served by one mock; routes `chain` = primary then backup (1 retry each), `solo` = backup,
/// `tight` = tight.
struct Run {
    mock: MockServer,
    gateway: GatewayHandle,
    http: reqwest::Client,
}

fn run_config(mock: &MockServer) -> Config {
    let policy = fast_policy();
    let mut config = Config {
        policy: policy.clone(),
        ..Config::default()
    };
    config.server.drain_timeout = Duration::from_secs(5);
    let mut primary = ProviderConfig::openai("primary", &mock.base_url());
    primary.breaker = Some(BreakerConfig {
        consecutive_failures: 2,
        cooldown: Duration::from_secs(600),
        ..BreakerConfig::default()
    });
    let mut tight = ProviderConfig::openai("tight", &mock.base_url());
    tight.budget = Some(BudgetConfig {
        ratio: 0.0,
        min_per_sec: 0.0,
        ..BudgetConfig::default()
    });
    config.providers = vec![
        primary,
        ProviderConfig::openai("backup", &mock.base_url()),
        tight,
    ];
    let one_retry = sluice::RetryPolicy {
        max_retries: 1,
        ..policy.clone()
    };
    config.models = vec![
        ModelConfig::new("chain", &["primary/mock-1", "backup/mock-1"], one_retry),
        ModelConfig::new("solo", &["backup/mock-1"], policy.clone()),
        ModelConfig::new("tight", &["tight/mock-1"], policy),
    ];
    config
}

async fn start(tweak: impl FnOnce(&mut Config)) -> Run {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let mut config = run_config(&mock);
    tweak(&mut config);
    let gateway = Gateway::build(config, GatewayOptions::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Run {
        mock,
        gateway: gateway.start(listener).unwrap(),
        http: reqwest::Client::new(),
    }
}

impl Run {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway.addr(), path)
    }

    async fn chat(&self, body: &Value, script: Option<(&str, &str)>) -> (u16, String) {
        let mut req = self.http.post(self.url("/v1/chat/completions")).json(body);
        if let Some((script, scenario)) = script {
            req = req
                .header("x-sluice-mock-fault", script)
                .header("x-sluice-mock-scenario", scenario);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    async fn metrics(&self) -> String {
        let resp = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        resp.text().await.unwrap()
    }

    /// `/metrics` once no request is in flight (a stream is recorded when the server drops it,
    /// just after the client has read its last byte).
    async fn settled_metrics(&self) -> String {
        for _ in 0..200 {
            let text = self.metrics().await;
            if sample(&text, "sluice_requests_in_flight") == Some(0.0) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("requests still in flight:\n{}", self.metrics().await);
    }
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// The usage of a non-streamed answer, or of a stream's usage chunk.
fn usage_of(body: &str, stream: bool) -> (f64, f64) {
    let usage = if stream {
        sse_data(body)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
            .expect("the stream carries its usage")
    } else {
        serde_json::from_str::<Value>(body).unwrap()["usage"].clone()
    };
    (
        usage["prompt_tokens"].as_f64().unwrap(),
        usage["completion_tokens"].as_f64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_run_moves_exactly_the_expected_counters() {
    let run = start(|_| {}).await;
    let before = run.metrics().await;
    assert_eq!(
        sample(&before, "sluice_breaker_state{target=\"primary/mock-1\"}"),
        Some(0.0),
        "configured targets have a breaker gauge before any traffic"
    );
    assert!(before.ends_with("# EOF\n"));

    let mut tokens_in = 0.0;
    let mut tokens_out = 0.0;
    // 1. Two rate limits absorbed by retries on `backup`.
    let (status, body) = run
        .chat(&chat_body("solo", false), Some(("429*2", "rate")))
        .await;
    assert_eq!(status, 200, "{body}");
    let (i, o) = usage_of(&body, false);
    tokens_in += i;
    tokens_out += o;
    // 2. A stream whose first target fails twice (its breaker opens on the second failure),
    //    then falls back to `backup`.
    let mut stream = chat_body("chain", true);
    stream["stream_options"] = json!({"include_usage": true});
    let (status, body) = run.chat(&stream, Some(("503,503", "open"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
    let (i, o) = usage_of(&body, true);
    tokens_in += i;
    tokens_out += o;
    // 3. The breaker is open: `primary` is skipped, `backup` answers.
    let (status, body) = run.chat(&chat_body("chain", false), None).await;
    assert_eq!(status, 200, "{body}");
    let (i, o) = usage_of(&body, false);
    tokens_in += i;
    tokens_out += o;
    // 4. A stream cut after two chunks.
    let (status, body) = run
        .chat(&chat_body("solo", true), Some(("cut:2", "cut")))
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("stream_interrupted"), "{body}");
    // 5. A retry refused by an empty retry budget: the 503 is final.
    let (status, _) = run
        .chat(&chat_body("tight", false), Some(("503", "budget")))
        .await;
    assert_eq!(status, 503);
    // 6. Requests the gateway refuses itself.
    let (status, _) = run.chat(&chat_body("no-such-model", false), None).await;
    assert_eq!(status, 404);
    let (status, _) = run.chat(&json!({"model": "solo"}), None).await;
    assert_eq!(status, 400);

    let text = run.settled_metrics().await;
    for family in [
        "# TYPE sluice_requests counter",
        "# TYPE sluice_requests_in_flight gauge",
        "# TYPE sluice_request_duration_seconds histogram",
        "# TYPE sluice_time_to_first_token_seconds histogram",
        "# TYPE sluice_gateway_overhead_seconds histogram",
        "# TYPE sluice_tokens counter",
        "# TYPE sluice_upstream_attempts counter",
        "# TYPE sluice_upstream_attempt_failures counter",
        "# TYPE sluice_retries counter",
        "# TYPE sluice_retry_delay_seconds histogram",
        "# TYPE sluice_target_gave_up counter",
        "# TYPE sluice_target_skipped counter",
        "# TYPE sluice_retry_budget_exhausted counter",
        "# TYPE sluice_fallbacks counter",
        "# TYPE sluice_streams_interrupted counter",
        "# TYPE sluice_breaker_state gauge",
        "# TYPE sluice_breaker_transitions counter",
        "# TYPE sluice_retry_budget_available gauge",
        "# TYPE sluice_target_parked_seconds gauge",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let expected: &[(&str, f64)] = &[
        // requests by route, target and outcome
        (
            r#"sluice_requests_total{route="solo",target="backup/mock-1",outcome="ok",stream="false"}"#,
            1.0,
        ),
        (
            r#"sluice_requests_total{route="chain",target="backup/mock-1",outcome="ok",stream="true"}"#,
            1.0,
        ),
        (
            r#"sluice_requests_total{route="chain",target="backup/mock-1",outcome="ok",stream="false"}"#,
            1.0,
        ),
        (
            r#"sluice_requests_total{route="solo",target="backup/mock-1",outcome="stream_interrupted",stream="true"}"#,
            1.0,
        ),
        (
            r#"sluice_requests_total{route="tight",target="tight/mock-1",outcome="overloaded",stream="false"}"#,
            1.0,
        ),
        (
            r#"sluice_requests_total{route="direct",target="none",outcome="unknown_model",stream="false"}"#,
            1.0,
        ),
        (
            r#"sluice_requests_total{route="none",target="none",outcome="invalid_request",stream="false"}"#,
            1.0,
        ),
        ("sluice_requests_in_flight", 0.0),
        // attempts, failures and retries by target and class
        (
            r#"sluice_upstream_attempts_total{target="backup/mock-1"}"#,
            6.0,
        ),
        (
            r#"sluice_upstream_attempts_total{target="primary/mock-1"}"#,
            2.0,
        ),
        (
            r#"sluice_upstream_attempts_total{target="tight/mock-1"}"#,
            1.0,
        ),
        (
            r#"sluice_upstream_attempt_failures_total{target="backup/mock-1",class="rate_limited"}"#,
            2.0,
        ),
        (
            r#"sluice_upstream_attempt_failures_total{target="primary/mock-1",class="overloaded"}"#,
            2.0,
        ),
        (
            r#"sluice_upstream_attempt_failures_total{target="tight/mock-1",class="overloaded"}"#,
            1.0,
        ),
        (
            r#"sluice_retries_total{target="backup/mock-1",class="rate_limited"}"#,
            2.0,
        ),
        (
            r#"sluice_retries_total{target="primary/mock-1",class="overloaded"}"#,
            1.0,
        ),
        (
            r#"sluice_retry_delay_seconds_count{target="backup/mock-1"}"#,
            2.0,
        ),
        (
            r#"sluice_target_gave_up_total{target="primary/mock-1",class="overloaded",reason="retries_exhausted"}"#,
            1.0,
        ),
        (
            r#"sluice_target_gave_up_total{target="tight/mock-1",class="overloaded",reason="budget_exhausted"}"#,
            1.0,
        ),
        (
            r#"sluice_target_skipped_total{target="primary/mock-1",reason="circuit_open"}"#,
            1.0,
        ),
        (
            r#"sluice_retry_budget_exhausted_total{target="tight/mock-1"}"#,
            1.0,
        ),
        // fallbacks, breaker, broken streams
        (
            r#"sluice_fallbacks_total{from="primary/mock-1",to="backup/mock-1"}"#,
            2.0,
        ),
        (
            r#"sluice_breaker_transitions_total{target="primary/mock-1",from="closed",to="open"}"#,
            1.0,
        ),
        (r#"sluice_breaker_state{target="primary/mock-1"}"#, 2.0),
        (r#"sluice_breaker_state{target="backup/mock-1"}"#, 0.0),
        (
            r#"sluice_streams_interrupted_total{target="backup/mock-1",class="stream_interrupted"}"#,
            1.0,
        ),
        // tokens, from the usage the mock reported
        (
            r#"sluice_tokens_total{target="backup/mock-1",direction="input"}"#,
            tokens_in,
        ),
        (
            r#"sluice_tokens_total{target="backup/mock-1",direction="output"}"#,
            tokens_out,
        ),
        // latency histograms
        (
            r#"sluice_request_duration_seconds_count{route="chain",stream="true"}"#,
            1.0,
        ),
        (
            r#"sluice_request_duration_seconds_count{route="solo",stream="true"}"#,
            1.0,
        ),
        (
            r#"sluice_time_to_first_token_seconds_count{route="chain"}"#,
            1.0,
        ),
        (
            r#"sluice_time_to_first_token_seconds_count{route="solo"}"#,
            1.0,
        ),
        (
            r#"sluice_gateway_overhead_seconds_count{stream="false"}"#,
            2.0,
        ),
        (
            r#"sluice_gateway_overhead_seconds_count{stream="true"}"#,
            2.0,
        ),
    ];
    let mut wrong = BTreeMap::new();
    for (series, want) in expected {
        let got = sample(&text, series);
        if got != Some(*want) {
            wrong.insert(*series, (got, *want));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong or missing (got, want): {wrong:#?}\n{text}"
    );
    assert!(tokens_in > 0.0 && tokens_out > 0.0);
    assert_eq!(
        run.mock.stats().requests,
        9,
        "every upstream attempt counted"
    );
    // The breaker's retry budget and park gauges exist for every target used.
    assert!(
        sample(
            &text,
            r#"sluice_retry_budget_available{target="backup/mock-1"}"#
        )
        .is_some()
    );
    assert_eq!(
        sample(
            &text,
            r#"sluice_target_parked_seconds{target="backup/mock-1"}"#
        ),
        Some(0.0)
    );
    // Overhead is the gateway's own time: far below the request's latency.
    let overhead_sum = sample(
        &text,
        r#"sluice_gateway_overhead_seconds_sum{stream="false"}"#,
    )
    .unwrap();
    assert!(overhead_sum < 0.5, "{overhead_sum}");
}

#[tokio::test]
async fn metrics_can_move_to_an_admin_listener_or_be_turned_off() {
    // On an admin listener: the main listener no longer serves them.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let gateway = Gateway::build(run_config(&mock), GatewayOptions::default())
        .await
        .unwrap();
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = gateway.start_with_admin(main, Some(admin)).unwrap();
    let admin_addr = handle.admin_addr().unwrap();
    assert_eq!(handle.status_url(), format!("http://{admin_addr}/status"));
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/chat/completions", handle.base_url()))
        .json(&chat_body("solo", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for path in ["/metrics", "/status", "/status.json"] {
        let on_main = http
            .get(format!("http://{}{path}", handle.addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            on_main.status(),
            404,
            "{path} must not be on the main listener"
        );
        let on_admin = http
            .get(format!("http://{admin_addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(on_admin.status(), 200, "{path} on the admin listener");
    }
    let text = http
        .get(format!("http://{admin_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(
        r#"sluice_requests_total{route="solo",target="backup/mock-1",outcome="ok",stream="false"} 1"#
    ));
    // The API is not on the admin listener.
    let resp = http
        .post(format!("http://{admin_addr}/v1/chat/completions"))
        .json(&chat_body("solo", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    handle.shutdown().await.unwrap();

    // Turned off: no observer, no routes, and requests still work.
    let run = start(|c| c.server.metrics = false).await;
    let (status, _) = run.chat(&chat_body("solo", true), None).await;
    assert_eq!(status, 200);
    for path in ["/metrics", "/status", "/status.json"] {
        let resp = run.http.get(run.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "metrics_disabled");
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets and content in logs.
//
// The provider key can only reach the gateway through an environment variable, and setting one
// inside a test process is `unsafe` (forbidden here). So the test runs itself again as a child
// process with the variables set, and the child does the work: it captures every log line the
// process writes, at TRACE level for every crate (hyper and reqwest included), in both formats.

const PROVIDER_KEY_VAR: &str = "SLUICE_TEST_PROVIDER_KEY";
const PROVIDER_KEY: &str = "sk-provider-CANARY-0f9e8d7c6b5a49382716";
const CLIENT_KEY: &str = "sk-client-CANARY-a1b2c3d4e5f60718293a";
const WRONG_KEY: &str = "sk-guess-CANARY-5566778899aabbccddee";
const PROMPT: &str = "PROMPT-CANARY tell me about the river Sluice";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn keys_prompts_and_completions_never_reach_logs_error_bodies_or_metrics() {
    if std::env::var_os(PROVIDER_KEY_VAR).is_some() {
        return child();
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "keys_prompts_and_completions_never_reach_logs_error_bodies_or_metrics",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROVIDER_KEY_VAR, PROVIDER_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child run failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
}

fn child() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let text = Captured::default();
    let json = Captured::default();
    let (t, j) = (text.clone(), json.clone());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || t.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(move || j.clone()),
        );
    // Also turns `log` records (from dependencies) into events.
    subscriber.try_init().unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bodies = runtime.block_on(child_run());
    drop(runtime);

    let text = String::from_utf8(text.0.lock().clone()).unwrap();
    let json = String::from_utf8(json.0.lock().clone()).unwrap();
    assert!(text.contains("retrying in"), "the capture works");
    assert!(
        text.contains("hyper_util"),
        "dependencies' TRACE lines were captured: {text}"
    );
    // A stream that breaks after commit is logged while the response body is being written,
    // outside the handler; it still carries the request's span.
    let interrupted = text
        .lines()
        .find(|l| l.contains("stream interrupted after commit"))
        .expect("the broken stream was logged");
    assert!(
        interrupted.contains("request{request_id=") && interrupted.contains("route=\"solo\""),
        "{interrupted}"
    );
    assert!(json.lines().count() > 20, "JSON lines were captured too");
    if let Some(path) = std::env::var_os("SLUICE_TEST_LOG_DUMP") {
        std::fs::write(path, &text).unwrap();
    }
    let completion = mock_text(8);
    let first_words = sluice_mock::chunk_text(0) + &sluice_mock::chunk_text(1);
    for (what, haystack) in [("text logs", &text), ("json logs", &json)] {
        for (needle, name) in [
            (PROVIDER_KEY, "the provider key"),
            (CLIENT_KEY, "the client key"),
            (WRONG_KEY, "a presented wrong key"),
            ("PROMPT-CANARY", "the prompt"),
            (completion.as_str(), "the completion"),
            (first_words.as_str(), "completion text"),
        ] {
            assert!(
                !haystack.contains(needle),
                "{name} appears in the {what}:\n{}",
                haystack
                    .lines()
                    .filter(|l| l.contains(needle))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    for body in &bodies {
        for key in [PROVIDER_KEY, CLIENT_KEY, WRONG_KEY] {
            assert!(!body.contains(key), "a key leaked into a response: {body}");
        }
    }
}

/// The traffic of the child run; returns every error body, `/metrics` and `/status.json`.
async fn child_run() -> Vec<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let mut config = run_config(&mock);
    // Scripts of ten 503s would open `backup`'s breaker, and the next calls would wait out its
    // cooldown; this test is about what gets written, not about the breaker.
    config.breaker.consecutive_failures = u32::MAX;
    config.breaker.min_requests = u32::MAX;
    for provider in &mut config.providers {
        provider.api_key_env = Some(PROVIDER_KEY_VAR.to_owned());
    }
    let gateway = Gateway::build(
        config,
        GatewayOptions {
            client_keys: Some(vec![CLIENT_KEY.to_owned()]),
            ..GatewayOptions::default()
        },
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = gateway.start(listener).unwrap();
    let http = reqwest::Client::new();
    let body = |model: &str, stream: bool| {
        json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}],
        })
    };
    let mut bodies = Vec::new();
    let cases = [
        ("solo", "429,503,ok"),
        ("solo", "401"),
        ("solo", "503*10"),
        ("solo", "cut:2"),
        ("chain", "503,503"),
        ("tight", "503"),
        ("solo", "400"),
    ];
    for (i, (model, script)) in cases.into_iter().enumerate() {
        for stream in [false, true] {
            let resp = http
                .post(format!("{}/chat/completions", handle.base_url()))
                .bearer_auth(CLIENT_KEY)
                .header("x-sluice-mock-fault", script)
                .header("x-sluice-mock-scenario", format!("c{i}-{stream}"))
                .json(&body(model, stream))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            if !status.is_success() || text.contains("error") {
                bodies.push(text);
            }
        }
    }
    // Anthropic dialect, and a wrong key in both header styles.
    let resp = http
        .post(format!("{}/messages", handle.base_url()))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("x-sluice-mock-fault", "503*10")
        .json(&json!({"model": "solo", "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .unwrap();
    bodies.push(resp.text().await.unwrap());
    for wrong in [
        ("authorization", format!("Bearer {WRONG_KEY}")),
        ("x-api-key", WRONG_KEY.to_owned()),
    ] {
        let resp = http
            .post(format!("{}/chat/completions", handle.base_url()))
            .header(wrong.0, wrong.1)
            .json(&body("solo", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        bodies.push(resp.text().await.unwrap());
    }
    for path in ["/metrics", "/status.json", "/status"] {
        let resp = http
            .get(format!("http://{}{path}", handle.addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.text().await.unwrap());
    }
    assert!(mock.stats().requests > 10, "the traffic reached the mock");
    handle.shutdown().await.unwrap();
    bodies
}
