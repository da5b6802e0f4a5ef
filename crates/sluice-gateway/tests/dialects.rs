//! OpenAI and Anthropic clients served by OpenAI and Anthropic targets, streaming and not,
//! tool calls included; fallback across providers; in-band errors before and after commit.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_gateway::{Config, Gateway, GatewayHandle, GatewayOptions, ModelConfig, ProviderConfig};
use sluice_mock::{MockConfig, MockServer, TOOL_ARGUMENTS, mock_text};

struct Setup {
    openai_mock: MockServer,
    anthropic_mock: MockServer,
    gateway: GatewayHandle,
    http: reqwest::Client,
}

fn policy() -> sluice::RetryPolicy {
    sluice::RetryPolicy {
        backoff: sluice_core::Backoff::try_new(Duration::from_millis(1), Duration::from_millis(5))
            .unwrap(),
        ..sluice::RetryPolicy::default()
    }
}

/// Two mocks: one reached as an OpenAI provider, one as an Anthropic provider. `openai_faults`
/// is sent on every request to the OpenAI provider.
async fn setup(openai_faults: &str) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let openai_mock = MockServer::start(MockConfig::default()).await.unwrap();
    let anthropic_mock = MockServer::start(MockConfig::default()).await.unwrap();
    let mut config = Config {
        policy: policy(),
        ..Config::default()
    };
    let mut oai = ProviderConfig::openai("oai", &openai_mock.base_url());
    if !openai_faults.is_empty() {
        oai.headers
            .push(("x-sluice-mock-fault".into(), openai_faults.into()));
    }
    config.providers.push(oai);
    config.providers.push(ProviderConfig::anthropic(
        "ant",
        &format!("http://{}", anthropic_mock.addr()),
    ));
    config.models.push(ModelConfig::new(
        "to-anthropic",
        &["ant/claude-sonnet-4-5"],
        policy(),
    ));
    config.models.push(ModelConfig::new(
        "to-openai",
        &["oai/gpt-4o-mini"],
        policy(),
    ));
    config.models.push(ModelConfig::new(
        "chain",
        &["oai/gpt-4o-mini", "ant/claude-haiku-4-5"],
        policy(),
    ));
    let gateway = Gateway::build(config, GatewayOptions::default())
        .await
        .unwrap();
    let gateway = gateway
        .start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    Setup {
        openai_mock,
        anthropic_mock,
        gateway,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    async fn openai(&self, model: &str, stream: bool, fault: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!(
                "http://{}/v1/chat/completions",
                self.gateway.addr()
            ))
            .json(&json!({"model": model, "stream": stream,
                "messages": [{"role": "user", "content": "What's the weather in Paris?"}]}));
        if let Some(f) = fault {
            req = req
                .header("x-sluice-mock-fault", f)
                .header("x-sluice-mock-scenario", scenario());
        }
        req.send().await.unwrap()
    }

    async fn anthropic(&self, model: &str, stream: bool, fault: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("http://{}/v1/messages", self.gateway.addr()))
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "max_tokens": 256, "stream": stream,
                "messages": [{"role": "user", "content": "What's the weather in Paris?"}]}));
        if let Some(f) = fault {
            req = req
                .header("x-sluice-mock-fault", f)
                .header("x-sluice-mock-scenario", scenario());
        }
        req.send().await.unwrap()
    }
}

/// A fresh scenario per request, so each request's fault script starts at its first step.
fn scenario() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "s{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// `(event name, data)` pairs of an SSE body.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            (name, value)
        })
        .collect()
}

fn openai_stream_text(body: &str) -> (String, String) {
    let mut text = String::new();
    let mut args = String::new();
    for (_, v) in events(body) {
        let delta = &v["choices"][0]["delta"];
        if let Some(t) = delta["content"].as_str() {
            text.push_str(t);
        }
        if let Some(a) = delta["tool_calls"][0]["function"]["arguments"].as_str() {
            args.push_str(a);
        }
    }
    (text, args)
}

fn anthropic_stream_text(body: &str) -> (String, String, Vec<String>) {
    let mut text = String::new();
    let mut args = String::new();
    let mut names = Vec::new();
    for (name, v) in events(body) {
        match v["delta"]["type"].as_str() {
            Some("text_delta") => text.push_str(v["delta"]["text"].as_str().unwrap()),
            Some("input_json_delta") => args.push_str(v["delta"]["partial_json"].as_str().unwrap()),
            _ => {}
        }
        names.push(name);
    }
    (text, args, names)
}

#[tokio::test]
async fn openai_clients_reach_anthropic_targets() {
    let s = setup("").await;
    let v: Value = s
        .openai("to-anthropic", false, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_text(8), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let resp = s.openai("to-anthropic", true, None).await;
    assert_eq!(resp.headers()["x-sluice-target"], "ant/claude-sonnet-4-5");
    let body = resp.text().await.unwrap();
    assert_eq!(openai_stream_text(&body).0, mock_text(8));
    assert!(body.ends_with("data: [DONE]\n\n"));

    let v: Value = s
        .openai("to-anthropic", false, Some("tool"))
        .await
        .json()
        .await
        .unwrap();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{v}");
    assert_eq!(call["function"]["arguments"], TOOL_ARGUMENTS);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    let body = s
        .openai("to-anthropic", true, Some("tool"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(openai_stream_text(&body).1, TOOL_ARGUMENTS, "{body}");
    assert_eq!(s.anthropic_mock.stats().requests, 4);
    assert_eq!(s.openai_mock.stats().requests, 0);
}

#[tokio::test]
async fn anthropic_clients_reach_openai_targets() {
    let s = setup("").await;
    let resp = s.anthropic("to-openai", false, None).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], mock_text(8), "{v}");
    assert_eq!(v["stop_reason"], "end_turn");

    let body = s
        .anthropic("to-openai", true, None)
        .await
        .text()
        .await
        .unwrap();
    let (text, _, names) = anthropic_stream_text(&body);
    assert_eq!(text, mock_text(8));
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));

    let v: Value = s
        .anthropic("to-openai", false, Some("tool"))
        .await
        .json()
        .await
        .unwrap();
    let block = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(block["input"], json!({"location": "Paris"}), "{v}");
    assert_eq!(v["stop_reason"], "tool_use");

    let body = s
        .anthropic("to-openai", true, Some("tool"))
        .await
        .text()
        .await
        .unwrap();
    let (_, args, _) = anthropic_stream_text(&body);
    assert_eq!(args, TOOL_ARGUMENTS, "{body}");
    assert_eq!(s.openai_mock.stats().requests, 4);
}

#[tokio::test]
async fn a_failing_openai_primary_falls_back_to_anthropic_for_both_dialects() {
    let s = setup("503*1000").await;
    for stream in [false, true] {
        let resp = s.openai("chain", stream, None).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-sluice-target"], "ant/claude-haiku-4-5");
        let body = resp.text().await.unwrap();
        let text = if stream {
            openai_stream_text(&body).0
        } else {
            serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(text, mock_text(8));

        let resp = s.anthropic("chain", stream, None).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-sluice-target"], "ant/claude-haiku-4-5");
    }
}

#[tokio::test]
async fn in_band_overload_before_content_is_retried_and_after_commit_is_terminal() {
    let s = setup("").await;
    // Before commit: retried on the Anthropic target, invisible to the client.
    let body = s
        .anthropic("to-anthropic", true, Some("inband:overloaded_error"))
        .await
        .text()
        .await
        .unwrap();
    let (text, _, names) = anthropic_stream_text(&body);
    assert_eq!(text, mock_text(8));
    assert!(!names.contains(&"error".to_owned()), "{body}");
    assert_eq!(s.anthropic_mock.stats().requests, 2);

    // After commit: the content once, then an error event; no message_stop.
    let body = s
        .anthropic(
            "to-anthropic",
            true,
            Some("inband_after:2:overloaded_error"),
        )
        .await
        .text()
        .await
        .unwrap();
    let evs = events(&body);
    let (text, _, names) = anthropic_stream_text(&body);
    assert_eq!(text, mock_text(2), "{body}");
    assert_eq!(names.last().map(String::as_str), Some("error"), "{body}");
    assert!(!names.contains(&"message_stop".to_owned()));
    assert_eq!(evs.last().unwrap().1["error"]["type"], "overloaded_error");
    assert_eq!(
        s.anthropic_mock.stats().requests,
        3,
        "no replay after commit"
    );

    // The same through the OpenAI dialect: `data: {"error": ...}` and no [DONE].
    let body = s
        .openai(
            "to-anthropic",
            true,
            Some("inband_after:2:overloaded_error"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(!body.contains("[DONE]"));
    assert_eq!(openai_stream_text(&body).0, mock_text(2));
    assert!(body.contains("\"code\":\"stream_interrupted\""), "{body}");
}

#[tokio::test]
async fn anthropic_clients_get_anthropic_errors() {
    let s = setup("").await;
    let resp = s.anthropic("to-openai", false, Some("401")).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    let resp = s.anthropic("to-openai", false, Some("529*100")).await;
    assert_eq!(resp.status(), 529, "overload is 529 for Anthropic clients");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");

    let resp = s
        .http
        .post(format!("http://{}/v1/messages", s.gateway.addr()))
        .json(&json!({"model": "to-openai", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "max_tokens is required");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{v}"
    );
}
