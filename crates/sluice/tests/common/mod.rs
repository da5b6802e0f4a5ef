//! Shared helpers for the end-to-end tests: a mock provider on 127.0.0.1:0, a client pointed at
//! it with a per-call fault script, and an observer that records every decision.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
use sluice::OpenAiAdapter;
use sluice::{CallEvent, ChatRequest, Client, Endpoint, Observer, RetryPolicy};
use sluice_mock::{MockConfig, MockServer};
use tokio::time::Instant;

/// Records every event with the (paused) time it happened.
#[derive(Debug, Default)]
pub struct Recorder {
    pub events: Mutex<Vec<(Instant, CallEvent)>>,
}

impl Observer for Recorder {
    fn on_event(&self, event: &CallEvent) {
        self.events.lock().push((Instant::now(), event.clone()));
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<CallEvent> {
        self.events.lock().iter().map(|(_, e)| e.clone()).collect()
    }

    /// The failed attempts and scheduled retries, without timestamps: what "the same attempts
    /// and delays" compares.
    pub fn decisions(&self) -> Vec<CallEvent> {
        self.events()
            .into_iter()
            .filter(|e| {
                matches!(
                    e,
                    CallEvent::AttemptStarted { .. }
                        | CallEvent::AttemptFailed { .. }
                        | CallEvent::RetryScheduled { .. }
                        | CallEvent::TargetGaveUp { .. }
                )
            })
            .collect()
    }

    pub fn attempts(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, CallEvent::AttemptStarted { .. }))
            .count()
    }

    /// Times at which each attempt started.
    pub fn attempt_times(&self) -> Vec<Instant> {
        self.events
            .lock()
            .iter()
            .filter(|(_, e)| matches!(e, CallEvent::AttemptStarted { .. }))
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn delays(&self) -> Vec<Duration> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                CallEvent::RetryScheduled { delay, .. } => Some(*delay),
                _ => None,
            })
            .collect()
    }
}

pub async fn mock() -> MockServer {
    mock_with(MockConfig::default()).await
}

pub async fn mock_with(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("mock starts")
}

/// A policy whose numbers are the defaults except where a test says otherwise.
pub fn policy() -> RetryPolicy {
    RetryPolicy::default()
}

/// A client whose every request carries `x-sluice-mock-fault: script` and a scenario id, so
/// the mock's per-script counter starts fresh for this client.
pub fn client(
    mock: &MockServer,
    script: &str,
    scenario: &str,
    policy: RetryPolicy,
    seed: u64,
) -> (Client, Arc<Recorder>) {
    let mut headers = HeaderMap::new();
    if !script.is_empty() {
        headers.insert(
            "x-sluice-mock-fault",
            HeaderValue::from_str(script).unwrap(),
        );
    }
    headers.insert(
        "x-sluice-mock-scenario",
        HeaderValue::from_str(scenario).unwrap(),
    );
    let recorder = Arc::new(Recorder::default());
    let client = Client::builder()
        .endpoint(Endpoint {
            name: Arc::from("mock"),
            base_url: mock.base_url(),
            api_key: Some(sluice::ApiKey::new("sk-test-key")),
            headers,
            adapter: Arc::new(OpenAiAdapter),
        })
        .policy(policy)
        .breaker(breaker_off())
        .seed(seed)
        .observer(recorder.clone())
        .build()
        .expect("client builds");
    (client, recorder)
}

/// A breaker that never opens: the retry tests are about the attempt loop alone (fallback.rs
/// tests the breaker).
pub fn breaker_off() -> sluice::BreakerConfig {
    sluice::BreakerConfig {
        consecutive_failures: u32::MAX,
        min_requests: u32::MAX,
        ..sluice::BreakerConfig::default()
    }
}

pub fn request() -> ChatRequest {
    ChatRequest::user("mock-1", "Say something")
}

/// Collects a stream: the text of every chunk, and the terminal error if any.
pub async fn collect(
    mut stream: sluice::ChatStream,
) -> (String, Option<sluice::StreamInterrupted>, usize) {
    use futures_util::StreamExt;
    let mut text = String::new();
    let mut chunks = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                chunks += 1;
                if let Some(t) = chunk.text() {
                    text.push_str(t);
                }
            }
            Err(e) => {
                assert!(
                    stream.next().await.is_none(),
                    "nothing follows the terminal error"
                );
                return (text, Some(e), chunks);
            }
        }
    }
    (text, None, chunks)
}

/// An endpoint named `name` on `mock` whose requests all carry fault `script` (scenario = name).
pub fn endpoint(name: &str, mock: &MockServer, script: &str) -> Endpoint {
    let mut headers = HeaderMap::new();
    if !script.is_empty() {
        headers.insert(
            "x-sluice-mock-fault",
            HeaderValue::from_str(script).unwrap(),
        );
    }
    headers.insert(
        "x-sluice-mock-scenario",
        HeaderValue::from_str(name).unwrap(),
    );
    Endpoint {
        name: Arc::from(name),
        base_url: mock.base_url(),
        api_key: None,
        headers,
        adapter: Arc::new(OpenAiAdapter),
    }
}
