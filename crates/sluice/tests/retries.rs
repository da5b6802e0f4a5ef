//! The attempt loop against the mock provider: which failures are retried, how long the
//! executor waits, and how a call ends when it gives up. Every scenario runs both as a
//! streaming and a non-streaming call, because the two must behave the same before commit.

mod common;

use std::time::Duration;

use common::{client, collect, mock, policy, request};
use sluice::{CallEvent, Error, ErrorClass, RetryPolicy};
use sluice_core::{Backoff, GiveUpReason};
use sluice_mock::mock_text;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Stream,
}

const BOTH: [Kind; 2] = [Kind::Plain, Kind::Stream];

/// Runs one call; returns the answer text or the error.
async fn call(c: &sluice::Client, kind: Kind) -> Result<String, Error> {
    match kind {
        Kind::Plain => c.chat(request()).await.map(|r| r.text()),
        Kind::Stream => {
            let s = c.chat_stream(request()).await?;
            let (text, err, _) = collect(s).await;
            match err {
                Some(e) => Err(e.into()),
                None => Ok(text),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limited_three_times_then_success_is_the_same_for_streaming_and_not() {
    let mock = mock().await;
    let mut runs = Vec::new();
    for kind in BOTH {
        let (c, rec) = client(&mock, "429*3", &format!("{kind:?}"), policy(), 42);
        let text = call(&c, kind).await.expect("succeeds after three 429s");
        assert_eq!(
            text,
            mock_text(8),
            "{kind:?}: the answer arrives exactly once"
        );
        assert_eq!(rec.attempts(), 4, "{kind:?}");
        runs.push((rec.decisions(), rec.delays()));
    }
    assert_eq!(runs[0], runs[1], "same faults, same attempts and delays");
    let delays = &runs[0].1;
    assert_eq!(delays.len(), 3);
    for (retry, d) in delays.iter().enumerate() {
        assert!(
            *d < Backoff::default().ceiling(retry as u32),
            "full jitter stays under the ceiling"
        );
    }
    assert_eq!(mock.stats().requests, 8);
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_is_never_undercut() {
    let mock = mock().await;
    for kind in BOTH {
        let (c, rec) = client(&mock, "429:ms=1500", &format!("{kind:?}"), policy(), 1);
        call(&c, kind).await.expect("succeeds after one 429");
        let times = rec.attempt_times();
        assert_eq!(times.len(), 2);
        let waited = times[1] - times[0];
        assert!(
            waited >= Duration::from_millis(1500),
            "{kind:?}: retried after {waited:?}"
        );
        assert_eq!(rec.delays(), vec![Duration::from_millis(1500)]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_hint_beyond_the_deadline_fails_at_once_and_carries_the_hint() {
    let mock = mock().await;
    for kind in BOTH {
        let p = RetryPolicy {
            deadline: Duration::from_secs(10),
            ..policy()
        };
        let (c, rec) = client(&mock, "429:ra=30", &format!("{kind:?}"), p, 1);
        let started = Instant::now();
        let err = call(&c, kind).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "no waiting");
        assert_eq!(rec.attempts(), 1);
        assert_eq!(err.class(), Some(ErrorClass::RateLimited));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
        let failure = err.as_call_failure().unwrap();
        assert!(
            matches!(failure.reason, GiveUpReason::HintBeyondDeadline { .. }),
            "{:?}",
            failure.reason
        );
        assert!(err.to_string().contains("retry after 30.000s"), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hint_above_max_retry_after_fails_at_once() {
    let mock = mock().await;
    let p = RetryPolicy {
        max_retry_after: Duration::from_secs(5),
        ..policy()
    };
    let (c, rec) = client(&mock, "429:ra=6", "cap", p, 1);
    let err = call(&c, Kind::Plain).await.unwrap_err();
    assert_eq!(rec.attempts(), 1);
    assert!(matches!(
        err.as_call_failure().unwrap().reason,
        GiveUpReason::HintTooLong { .. }
    ));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(6)));
}

#[tokio::test(start_paused = true)]
async fn non_retryable_failures_make_exactly_one_attempt() {
    let mock = mock().await;
    let cases = [
        ("401", ErrorClass::Auth),
        ("400", ErrorClass::BadRequest),
        ("404", ErrorClass::BadRequest),
        ("quota", ErrorClass::QuotaExhausted),
        ("context", ErrorClass::ContextLength),
        ("policy", ErrorClass::ContentPolicy),
    ];
    for (script, class) in cases {
        for kind in BOTH {
            let (c, rec) = client(&mock, script, &format!("{script}-{kind:?}"), policy(), 1);
            let err = call(&c, kind).await.unwrap_err();
            assert_eq!(err.class(), Some(class), "{script} {kind:?}: {err}");
            assert_eq!(rec.attempts(), 1, "{script} {kind:?}");
            let failure = err.as_call_failure().unwrap();
            assert_eq!(failure.reason, GiveUpReason::NotRetryable(class));
            assert_eq!(failure.attempts.len(), 1);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_before_commit_are_retried() {
    let mock = mock().await;
    let cases = [
        ("503", ErrorClass::Overloaded),
        ("529", ErrorClass::Overloaded),
        ("502", ErrorClass::ServerError),
        ("500", ErrorClass::ServerError),
        ("504", ErrorClass::Timeout),
        ("reset", ErrorClass::Transport),
    ];
    for (script, class) in cases {
        for kind in BOTH {
            let (c, rec) = client(&mock, script, &format!("{script}-{kind:?}"), policy(), 1);
            let text = call(&c, kind)
                .await
                .unwrap_or_else(|e| panic!("{script} {kind:?}: {e}"));
            assert_eq!(text, mock_text(8));
            assert_eq!(rec.attempts(), 2, "{script} {kind:?}");
            let failed: Vec<_> = rec
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    CallEvent::AttemptFailed { class, .. } => Some(class),
                    _ => None,
                })
                .collect();
            assert_eq!(failed, vec![class], "{script} {kind:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn in_band_error_before_first_content_is_retried() {
    let mock = mock().await;
    for (script, class) in [
        ("inband:overloaded_error", ErrorClass::Overloaded),
        ("inband", ErrorClass::ServerError),
    ] {
        let (c, rec) = client(&mock, script, script, policy(), 1);
        let text = call(&c, Kind::Stream).await.unwrap();
        assert_eq!(text, mock_text(8));
        assert_eq!(rec.attempts(), 2);
        assert!(rec.events().iter().any(
            |e| matches!(e, CallEvent::AttemptFailed { class: c, status: None, .. } if *c == class)
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn first_token_timeout_is_retried() {
    let mock = mock().await;
    let p = RetryPolicy {
        first_token_timeout: Duration::from_secs(2),
        ..policy()
    };
    let (c, rec) = client(&mock, "delay:10000", "ftt", p, 1);
    let started = Instant::now();
    let text = call(&c, Kind::Stream).await.unwrap();
    assert_eq!(text, mock_text(8));
    assert_eq!(rec.attempts(), 2);
    let times = rec.attempt_times();
    let first = times[1] - times[0];
    assert!(first >= Duration::from_secs(2), "timed out after {first:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not wait for the slow answer"
    );
    assert!(rec.events().iter().any(|e| matches!(
        e,
        CallEvent::AttemptFailed {
            class: ErrorClass::Timeout,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_list_every_attempt_with_the_last_error_as_source() {
    let mock = mock().await;
    for kind in BOTH {
        let p = RetryPolicy {
            max_retries: 3,
            ..policy()
        };
        let (c, rec) = client(&mock, "503*10", &format!("{kind:?}"), p, 9);
        let err = call(&c, kind).await.unwrap_err();
        assert_eq!(rec.attempts(), 4);
        let failure = err.as_call_failure().unwrap();
        assert_eq!(
            failure.reason,
            GiveUpReason::RetriesExhausted { retries: 3 }
        );
        assert_eq!(failure.attempts.len(), 4);
        assert!(
            failure
                .attempts
                .iter()
                .all(|a| a.class == ErrorClass::Overloaded && a.status == Some(503))
        );
        assert_eq!(
            failure
                .attempts
                .iter()
                .filter(|a| a.retry_delay.is_some())
                .count(),
            3
        );
        let text = err.to_string();
        assert!(
            text.starts_with("overloaded after 4 attempts: retries exhausted"),
            "{text}"
        );
        for n in 1..=4 {
            assert!(
                text.contains(&format!("mock/mock-1 attempt {n}: overloaded (HTTP 503)")),
                "{text}"
            );
        }
        let source = std::error::Error::source(failure).unwrap().to_string();
        assert!(source.contains("overloaded (HTTP 503)"), "{source}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_never_exceeded() {
    let mock = mock().await;
    for kind in BOTH {
        let p = RetryPolicy {
            max_retries: 1000,
            deadline: Duration::from_secs(20),
            ..policy()
        };
        let (c, rec) = client(&mock, "503*1000", &format!("{kind:?}"), p, 5);
        let started = Instant::now();
        let err = call(&c, kind).await.unwrap_err();
        let took = started.elapsed();
        assert!(took <= Duration::from_secs(20), "{kind:?}: took {took:?}");
        assert!(rec.attempts() > 3, "retried while time was left");
        assert!(matches!(
            err.as_call_failure().unwrap().reason,
            GiveUpReason::DeadlineExceeded { .. }
        ));
    }
}
