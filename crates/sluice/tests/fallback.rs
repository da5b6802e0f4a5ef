//! Fallback chains, circuit breakers, retry budgets and the one deadline across a chain.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Recorder, collect, endpoint, mock, policy};
use sluice::{
    Answer, BreakerConfig, BreakerState, BudgetConfig, CallEvent, CallOptions, ChatRequest, Client,
    ErrorClass, RetryPolicy,
};
use sluice_core::{Backoff, GiveUpReason};
use sluice_mock::mock_text;
use tokio::time::Instant;

fn chain_request() -> ChatRequest {
    ChatRequest::user("chain", "hello")
}

/// Runs one call (streaming or not) and returns (text, answering target, attempts).
async fn run(c: &Client, stream: bool) -> Result<(String, String, u32), sluice::Error> {
    let mut req = chain_request();
    req.stream = Some(stream);
    match c.execute(req, &CallOptions::default()).await? {
        Answer::Response(r, info) => Ok((r.text(), info.target.to_string(), info.attempts)),
        Answer::Stream(s) => {
            let target = s.target().to_string();
            let attempts = s.attempts();
            let (text, err, _) = collect(s).await;
            assert!(err.is_none(), "{err:?}");
            Ok((text, target, attempts))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_primary_that_always_fails_falls_back_streaming_and_not() {
    for stream in [false, true] {
        let primary = mock().await;
        let backup = mock().await;
        let rec = Arc::new(Recorder::default());
        let c = Client::builder()
            .endpoint(endpoint("primary", &primary, "503*1000"))
            .endpoint(endpoint("backup", &backup, ""))
            .route("chain", &["primary/mock-1", "backup/mock-1"])
            .seed(1)
            .observer(rec.clone())
            .build()
            .unwrap();
        let (text, target, attempts) = run(&c, stream).await.unwrap();
        assert_eq!(text, mock_text(8));
        assert_eq!(target, "backup/mock-1");
        // The default breaker opens at the 5th consecutive failure, which also ends the
        // primary's retries one short of max_retries: the target is down, not flaky.
        assert_eq!(attempts, 6, "five on the primary, one on the backup");
        assert_eq!(primary.stats().requests, 5);
        assert_eq!(backup.stats().requests, 1);
        assert!(
            rec.events()
                .iter()
                .any(|e| matches!(e, CallEvent::FallbackTaken { from, to }
            if from.as_ref() == "primary/mock-1" && to.as_ref() == "backup/mock-1"))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn quota_and_auth_failures_go_straight_to_the_fallback() {
    for script in ["quota", "401"] {
        for stream in [false, true] {
            let primary = mock().await;
            let backup = mock().await;
            let c = Client::builder()
                .endpoint(endpoint("primary", &primary, &format!("{script}*100")))
                .endpoint(endpoint("backup", &backup, ""))
                .route("chain", &["primary/mock-1", "backup/mock-1"])
                .build()
                .unwrap();
            let (text, target, _) = run(&c, stream).await.unwrap();
            assert_eq!(text, mock_text(8));
            assert_eq!(target, "backup/mock-1");
            assert_eq!(
                primary.stats().requests,
                1,
                "{script}: one attempt on the primary"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_bad_request_stops_the_chain() {
    let primary = mock().await;
    let backup = mock().await;
    let c = Client::builder()
        .endpoint(endpoint("primary", &primary, "400*100"))
        .endpoint(endpoint("backup", &backup, ""))
        .route("chain", &["primary/mock-1", "backup/mock-1"])
        .build()
        .unwrap();
    let err = run(&c, false).await.unwrap_err();
    assert_eq!(err.class(), Some(ErrorClass::BadRequest));
    assert_eq!(backup.stats().requests, 0);
}

#[tokio::test(start_paused = true)]
async fn context_overflow_moves_only_to_a_larger_window() {
    let primary = mock().await;
    let smaller = mock().await;
    let larger = mock().await;
    // gpt-4o: 128k; gpt-4: 8k; claude-sonnet-4-6: 1M (the model registry).
    let c = Client::builder()
        .endpoint(endpoint("primary", &primary, "context*100"))
        .endpoint(endpoint("smaller", &smaller, ""))
        .endpoint(endpoint("larger", &larger, ""))
        .route(
            "chain",
            &[
                "primary/gpt-4o",
                "smaller/gpt-4",
                "larger/claude-sonnet-4-6",
            ],
        )
        .route("no-larger", &["primary/gpt-4o", "smaller/gpt-4"])
        .build()
        .unwrap();
    let (_, target, _) = run(&c, false).await.unwrap();
    assert_eq!(target, "larger/claude-sonnet-4-6");
    assert_eq!(smaller.stats().requests, 0, "a smaller window is skipped");

    let mut req = ChatRequest::user("no-larger", "hello");
    req.stream = Some(true);
    let err = c.execute(req, &CallOptions::default()).await.unwrap_err();
    assert_eq!(err.class(), Some(ErrorClass::ContextLength));
    assert_eq!(smaller.stats().requests, 0);
}

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        min_requests: 1000,
        cooldown: Duration::from_secs(30),
        half_open_probes: 2,
        ..BreakerConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_skips_half_opens_and_closes() {
    let primary = mock().await;
    let backup = mock().await;
    let rec = Arc::new(Recorder::default());
    let no_retries = RetryPolicy {
        max_retries: 0,
        ..policy()
    };
    // The primary fails three times, then recovers.
    let c = Client::builder()
        .endpoint(endpoint("primary", &primary, "503*3"))
        .endpoint(endpoint("backup", &backup, ""))
        .route_with_policy(
            "chain",
            &["primary/mock-1", "backup/mock-1"],
            no_retries,
            false,
        )
        .breaker(breaker_config())
        .observer(rec.clone())
        .build()
        .unwrap();
    for _ in 0..3 {
        let (_, target, _) = run(&c, false).await.unwrap();
        assert_eq!(target, "backup/mock-1");
    }
    let status = c.target_status();
    let primary_status = status
        .iter()
        .find(|s| s.target.as_ref() == "primary/mock-1")
        .unwrap();
    assert_eq!(primary_status.breaker, BreakerState::Open);
    // Open: skipped without a request.
    let (_, target, _) = run(&c, true).await.unwrap();
    assert_eq!(target, "backup/mock-1");
    assert_eq!(primary.stats().requests, 3);
    assert!(rec.events().iter().any(|e| matches!(
        e,
        CallEvent::TargetSkipped {
            reason: "circuit_open",
            ..
        }
    )));
    // After the cooldown, probes go through and close it.
    tokio::time::advance(Duration::from_secs(31)).await;
    for _ in 0..2 {
        let (_, target, _) = run(&c, false).await.unwrap();
        assert_eq!(target, "primary/mock-1");
    }
    let primary_status = c
        .target_status()
        .into_iter()
        .find(|s| s.target.as_ref() == "primary/mock-1")
        .unwrap();
    assert_eq!(primary_status.breaker, BreakerState::Closed);
    let transitions: Vec<_> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            CallEvent::BreakerTransition { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        transitions,
        vec![
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::HalfOpen, BreakerState::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limits_never_open_the_breaker() {
    let primary = mock().await;
    let backup = mock().await;
    let no_retries = RetryPolicy {
        max_retries: 0,
        ..policy()
    };
    let c = Client::builder()
        .endpoint(endpoint("primary", &primary, "429*1000"))
        .endpoint(endpoint("backup", &backup, ""))
        .route_with_policy(
            "chain",
            &["primary/mock-1", "backup/mock-1"],
            no_retries,
            false,
        )
        .breaker(breaker_config())
        .build()
        .unwrap();
    for _ in 0..20 {
        run(&c, false).await.unwrap();
    }
    assert_eq!(
        primary.stats().requests,
        20,
        "every call still tries the primary"
    );
    assert!(
        c.target_status()
            .iter()
            .all(|s| s.breaker == BreakerState::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_caps_extra_load_on_a_failing_primary() {
    let primary = mock().await;
    let backup = mock().await;
    let quick = RetryPolicy {
        max_retries: 5,
        backoff: Backoff::try_new(Duration::from_micros(10), Duration::from_micros(100)).unwrap(),
        ..policy()
    };
    let budget = BudgetConfig {
        ratio: 0.2,
        min_per_sec: 1.0,
        window: Duration::from_secs(10),
    };
    let c = Client::builder()
        .endpoint(endpoint("primary", &primary, "503*100000"))
        .endpoint(endpoint("backup", &backup, ""))
        .route_with_policy("chain", &["primary/mock-1", "backup/mock-1"], quick, false)
        .budget(budget)
        // keep the breaker out of this test: it would stop the primary's traffic altogether
        .breaker(common::breaker_off())
        .seed(3)
        .build()
        .unwrap();
    let started = Instant::now();
    let requests = 500;
    for _ in 0..requests {
        run(&c, false).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the run fits one budget window"
    );
    let seen = primary.stats().requests as f64;
    let bound = requests as f64 * 1.2 + 10.0;
    assert!(seen <= bound, "primary saw {seen} attempts, bound {bound}");
    assert!(seen > requests as f64, "some retries were still allowed");
    assert_eq!(backup.stats().requests, requests);
}

#[tokio::test(start_paused = true)]
async fn a_chain_of_slow_targets_never_exceeds_the_deadline() {
    let a = mock().await;
    let b = mock().await;
    let p = RetryPolicy {
        deadline: Duration::from_secs(12),
        first_token_timeout: Duration::from_secs(5),
        ..policy()
    };
    let c = Client::builder()
        .endpoint(endpoint("a", &a, "delay:60000*100"))
        .endpoint(endpoint("b", &b, "delay:60000*100"))
        .route_with_policy("chain", &["a/mock-1", "b/mock-1"], p, false)
        .build()
        .unwrap();
    for stream in [true, false] {
        let started = Instant::now();
        let err = run(&c, stream).await.unwrap_err();
        assert!(
            started.elapsed() <= Duration::from_secs(12),
            "stream={stream}: {:?}",
            started.elapsed()
        );
        assert_eq!(err.class(), Some(ErrorClass::Timeout), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_hint_parks_the_target_for_every_request() {
    let m = mock().await;
    let rec = Arc::new(Recorder::default());
    let c = Client::builder()
        .endpoint(endpoint("p", &m, "429:ra=2"))
        .route("chain", &["p/mock-1"])
        .observer(rec.clone())
        .build()
        .unwrap();
    let first = tokio::spawn({
        let c = c.clone();
        async move { run(&c, false).await }
    });
    // Let the first call receive its 429.
    while m.stats().requests < 1 {
        tokio::task::yield_now().await;
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    let second = run(&c, true).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "waited out the park: {:?}",
        started.elapsed()
    );
    assert_eq!(second.0, mock_text(8));
    first.await.unwrap().unwrap();
    assert_eq!(
        m.stats().requests,
        3,
        "one 429, then one answer per call; no extra 429"
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_target_is_open_the_call_waits_for_the_first_probe_if_the_deadline_allows() {
    let a = mock().await;
    let no_retries = RetryPolicy {
        max_retries: 0,
        deadline: Duration::from_secs(60),
        ..policy()
    };
    let c = Client::builder()
        .endpoint(endpoint("a", &a, "503*3"))
        .route_with_policy("chain", &["a/mock-1"], no_retries.clone(), false)
        .route_with_policy(
            "short",
            &["a/mock-1"],
            RetryPolicy {
                deadline: Duration::from_secs(10),
                ..no_retries
            },
            false,
        )
        .breaker(breaker_config())
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(run(&c, false).await.is_err());
    }
    // Cooldown 30 s > a 10 s deadline: fail at once, saying when to come back.
    let started = Instant::now();
    let err = c.chat(ChatRequest::user("short", "hi")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    let failure = err.as_call_failure().unwrap();
    assert!(
        matches!(failure.reason, GiveUpReason::CircuitOpen { .. }),
        "{:?}",
        failure.reason
    );
    assert!(err.retry_after().unwrap() > Duration::from_secs(20));
    // A 60 s deadline covers the cooldown: the call waits for the half-open probe.
    let (text, _, _) = run(&c, false).await.unwrap();
    assert_eq!(text, mock_text(8));
    assert!(started.elapsed() >= Duration::from_secs(29));
}

#[tokio::test(start_paused = true)]
async fn a_park_longer_than_max_retry_after_refuses_later_calls_at_once() {
    let m = mock().await;
    let c = Client::builder()
        .endpoint(endpoint("p", &m, "429:ra=120"))
        .route("chain", &["p/mock-1"])
        .build()
        .unwrap();
    let err = run(&c, false).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    let started = Instant::now();
    let err = run(&c, true).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no waiting on a long park"
    );
    assert_eq!(err.class(), Some(ErrorClass::RateLimited));
    assert!(matches!(
        err.as_call_failure().unwrap().reason,
        GiveUpReason::Parked { .. }
    ));
    assert!(err.retry_after().unwrap() <= Duration::from_secs(120));
    assert_eq!(
        m.stats().requests,
        1,
        "the parked target was not called again"
    );
}
