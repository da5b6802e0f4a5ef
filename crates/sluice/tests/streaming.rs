//! The commit point: what a caller of `chat_stream` sees before and after the first content
//! event.

mod common;

use std::time::Duration;

use common::{client, collect, mock, policy, request};
use futures_util::StreamExt;
use sluice::{ErrorClass, Interruption, RetryPolicy};
use sluice_mock::{chunk_text, mock_text};
use tokio::time::Instant;

fn text_of(n: usize) -> String {
    (0..n).map(chunk_text).collect()
}

#[tokio::test(start_paused = true)]
async fn a_cut_after_content_delivers_the_content_once_then_a_typed_error() {
    let mock = mock().await;
    let (c, rec) = client(&mock, "cut:3", "cut", policy(), 1);
    let stream = c.chat_stream(request()).await.unwrap();
    let (text, err, _) = collect(stream).await;
    assert_eq!(text, text_of(3));
    let err = err.expect("the stream ends with an error, not silently");
    assert_eq!(err.kind, Interruption::Cut);
    assert_eq!(err.delivered, 3);
    assert_eq!(err.class(), ErrorClass::StreamInterrupted);
    assert_eq!(rec.attempts(), 1);
    assert_eq!(mock.stats().requests, 1, "never replayed after commit");
}

#[tokio::test(start_paused = true)]
async fn a_stall_after_content_ends_after_the_idle_timeout() {
    let mock = mock().await;
    let p = RetryPolicy {
        idle_timeout: Duration::from_secs(5),
        ..policy()
    };
    let (c, _) = client(&mock, "stall:2", "stall", p, 1);
    let stream = c.chat_stream(request()).await.unwrap();
    let started = Instant::now();
    let (text, err, _) = collect(stream).await;
    assert_eq!(text, text_of(2));
    let err = err.unwrap();
    assert_eq!(err.kind, Interruption::Stalled);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn an_in_band_error_after_content_is_terminal_and_keeps_its_class() {
    let mock = mock().await;
    let (c, _) = client(
        &mock,
        "inband_after:2:overloaded_error",
        "inband",
        policy(),
        1,
    );
    let stream = c.chat_stream(request()).await.unwrap();
    let (text, err, _) = collect(stream).await;
    assert_eq!(text, text_of(2));
    let err = err.unwrap();
    assert_eq!(err.kind, Interruption::InBandError);
    assert_eq!(err.upstream_class, Some(ErrorClass::Overloaded));
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn the_preamble_is_held_back_and_then_delivered_in_order() {
    let mock = mock().await;
    let (c, _) = client(&mock, "", "order", policy(), 1);
    let mut stream = c.chat_stream(request()).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let delta = first.choices[0].delta.as_ref().unwrap();
    assert_eq!(
        delta.role.as_deref(),
        Some("assistant"),
        "the preamble comes first"
    );
    assert!(!first.has_content());
    let second = stream.next().await.unwrap().unwrap();
    assert_eq!(second.text(), Some(chunk_text(0).as_str()));
    let (rest, err, _) = collect(stream).await;
    assert!(err.is_none());
    assert_eq!(format!("{}{rest}", chunk_text(0)), mock_text(8));
}

#[tokio::test(start_paused = true)]
async fn the_usage_chunk_reaches_the_caller_only_when_asked_for() {
    let mock = mock().await;
    let (c, _) = client(&mock, "", "usage", policy(), 1);
    for wanted in [false, true] {
        let mut req = request();
        if wanted {
            req.stream_options = Some(sluice::StreamOptions {
                include_usage: Some(true),
                ..Default::default()
            });
        }
        let mut stream = c.chat_stream(req).await.unwrap();
        let mut saw_usage_chunk = false;
        while let Some(item) = stream.next().await {
            saw_usage_chunk |= item.unwrap().is_usage_only();
        }
        assert_eq!(saw_usage_chunk, wanted);
        let usage = stream
            .usage()
            .expect("usage is always read for reconciliation");
        assert_eq!(usage.completion_tokens, 8);
    }
}

#[tokio::test(start_paused = true)]
async fn a_clean_stream_without_content_is_a_complete_empty_answer() {
    let mock = mock().await;
    let (c, rec) = client(&mock, "chunks:0", "empty", policy(), 1);
    let stream = c.chat_stream(request()).await.unwrap();
    let (text, err, chunks) = collect(stream).await;
    assert!(err.is_none());
    assert_eq!(text, "");
    assert!(chunks >= 2, "preamble and finish chunk are delivered");
    assert_eq!(rec.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_before_any_content_is_retried() {
    let mock = mock().await;
    let (c, rec) = client(&mock, "cut:0", "cut0", policy(), 1);
    let stream = c.chat_stream(request()).await.unwrap();
    let (text, err, _) = collect(stream).await;
    assert!(err.is_none());
    assert_eq!(text, mock_text(8));
    assert_eq!(rec.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_a_committed_stream() {
    let mock = mock().await;
    let p = RetryPolicy {
        deadline: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        ..policy()
    };
    let (c, _) = client(&mock, "stall:1", "deadline", p, 1);
    let started = Instant::now();
    let stream = c.chat_stream(request()).await.unwrap();
    let (_, err, _) = collect(stream).await;
    assert_eq!(err.unwrap().kind, Interruption::DeadlineExceeded);
    assert!(started.elapsed() <= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn call_info_separates_upstream_and_backoff_waits_from_overhead() {
    let mock = sluice_mock::MockServer::start(sluice_mock::MockConfig {
        ttft: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .unwrap();
    let (c, _) = client(&mock, "429:ms=1500", "waits", policy(), 1);
    let stream = c.chat_stream(request()).await.unwrap();
    let info = stream.info().clone();
    assert_eq!(info.attempts, 2);
    assert_eq!(info.backoff_wait, Duration::from_millis(1500));
    assert!(info.upstream_wait >= Duration::from_millis(300), "{info:?}");
    // Under paused time nothing but the waits takes time: the overhead is zero.
    assert_eq!(
        info.elapsed,
        info.backoff_wait + info.upstream_wait,
        "{info:?}"
    );
    drop(collect(stream).await);
}
