//! Context windows end to end: the guard truncates or falls back before sending, and a
//! provider's own `context_length` answer is recovered from by one trimmed retry.

mod common;

use std::sync::Arc;

use common::{Recorder, endpoint};
use sluice::{
    Answer, CallEvent, CallOptions, ChatRequest, Client, ContextPolicy, ErrorClass, Message,
    OnOverflow,
};
use sluice_mock::{MockConfig, MockServer, mock_text};

/// A conversation of `turns` long user/assistant exchanges and a short last question.
fn long_history(turns: usize) -> ChatRequest {
    let mut req = ChatRequest::user("chain", "placeholder");
    req.messages.clear();
    req.messages.push(Message::text("system", "You are terse."));
    for i in 0..turns {
        req.messages.push(Message::text(
            "user",
            format!("question {i}: {}", "lorem ipsum dolor sit amet ".repeat(40)),
        ));
        req.messages.push(Message::text(
            "assistant",
            format!("answer {i}: {}", "consectetur adipiscing elit ".repeat(40)),
        ));
    }
    req.messages
        .push(Message::text("user", "And the last question?"));
    req
}

fn policy(on_overflow: OnOverflow) -> ContextPolicy {
    ContextPolicy {
        on_overflow,
        ..ContextPolicy::default()
    }
}

async fn run(c: &Client, req: ChatRequest) -> Result<(String, sluice::CallInfo), sluice::Error> {
    match c.execute(req, &CallOptions::default()).await? {
        Answer::Response(r, info) => Ok((r.text(), info)),
        Answer::Stream(_) => unreachable!("plain request"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_provider_context_error_is_recovered_by_one_trimmed_retry() {
    // The mock knows a 2,000-token window the registry does not (its model is unknown), so
    // the guard lets the prompt through and the provider answers context_length_exceeded.
    let mock = MockServer::start(MockConfig {
        context_limit: Some(2_000),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let rec = Arc::new(Recorder::default());
    let c = Client::builder()
        .endpoint(endpoint("p", &mock, ""))
        .route("chain", &["p/mock-1"])
        .context_policy(policy(OnOverflow::Truncate))
        .observer(rec.clone())
        .build()
        .unwrap();
    let (text, info) = run(&c, long_history(20)).await.unwrap();
    assert_eq!(text, mock_text(8));
    assert_eq!(info.attempts, 2, "one context error, one trimmed retry");
    let t = info.truncation.expect("the retry was truncated");
    assert!(t.dropped_messages > 0 && t.tokens_after <= 2_000, "{t:?}");
    assert_eq!(mock.stats().requests, 2);
    assert!(rec.events().iter().any(|e| matches!(
        e,
        CallEvent::AttemptFailed {
            class: ErrorClass::ContextLength,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn with_error_policy_a_provider_context_error_is_final() {
    let mock = MockServer::start(MockConfig {
        context_limit: Some(2_000),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = Client::builder()
        .endpoint(endpoint("p", &mock, ""))
        .route("chain", &["p/mock-1"])
        .context_policy(policy(OnOverflow::Error))
        .build()
        .unwrap();
    let err = run(&c, long_history(20)).await.unwrap_err();
    assert_eq!(err.class(), Some(ErrorClass::ContextLength));
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn the_guard_truncates_before_sending_when_the_window_is_known() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let c = Client::builder()
        .endpoint(endpoint("p", &mock, ""))
        .route("chain", &["p/small"])
        .context_window("p/small", 3_000)
        .context_policy(ContextPolicy {
            on_overflow: OnOverflow::Truncate,
            default_output: 500,
            ..ContextPolicy::default()
        })
        .build()
        .unwrap();
    let (text, info) = run(&c, long_history(20)).await.unwrap();
    assert_eq!(text, mock_text(8));
    assert_eq!(info.attempts, 1, "truncated before the first attempt");
    let t = info.truncation.unwrap();
    assert!(t.tokens_after <= 3_000 - 500 - 100, "{t:?}");
    assert!(t.tokens_before > t.tokens_after);
}

#[tokio::test(start_paused = true)]
async fn with_fallback_policy_a_larger_window_answers_instead_of_truncating() {
    let small = MockServer::start(MockConfig::default()).await.unwrap();
    let large = MockServer::start(MockConfig::default()).await.unwrap();
    let rec = Arc::new(Recorder::default());
    let c = Client::builder()
        .endpoint(endpoint("small", &small, ""))
        .endpoint(endpoint("large", &large, ""))
        .route("chain", &["small/m", "large/m"])
        .context_window("small/m", 3_000)
        .context_window("large/m", 1_000_000)
        .context_policy(policy(OnOverflow::Fallback))
        .observer(rec.clone())
        .build()
        .unwrap();
    let (_, info) = run(&c, long_history(20)).await.unwrap();
    assert_eq!(info.target.as_ref(), "large/m");
    assert!(
        info.truncation.is_none(),
        "nothing dropped: the larger window fits it"
    );
    assert_eq!(small.stats().requests, 0);
    assert!(rec.events().iter().any(|e| matches!(
        e,
        CallEvent::TargetSkipped {
            reason: "context_fallback",
            ..
        }
    )));

    // The error policy fails before any upstream call, with the counts.
    let c = Client::builder()
        .endpoint(endpoint("small", &small, ""))
        .route("chain", &["small/m"])
        .context_window("small/m", 3_000)
        .context_policy(policy(OnOverflow::Error))
        .build()
        .unwrap();
    let err = run(&c, long_history(20)).await.unwrap_err();
    assert_eq!(err.class(), Some(ErrorClass::ContextLength));
    assert!(
        err.to_string().contains("allows 0")
            || err.to_string().contains("tokens but small/m allows"),
        "{err}"
    );
    assert_eq!(small.stats().requests, 0);
}
