use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use futures_util::future::{BoxFuture, FutureExt};
use http::{HeaderMap, HeaderValue};

use super::*;

const KEY: &str = "openai/gpt-4o";

fn tpm(tpm: f64) -> Limits {
    Limits {
        rpm: None,
        tpm: Some(tpm),
        burst_requests: None,
        burst_tokens: None,
    }
}

fn ask(tokens: f64) -> Ask {
    Ask {
        requests: 1.0,
        tokens,
    }
}

fn limiter(max_queue_wait_secs: u64) -> Limiter {
    Limiter::local(LimiterConfig {
        max_queue_wait: Duration::from_secs(max_queue_wait_secs),
        ..LimiterConfig::default()
    })
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

async fn tokens_level(limiter: &Limiter, limits: &Limits) -> f64 {
    limiter.levels(KEY, limits).await.unwrap().tokens.unwrap()
}

fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
}

#[test]
fn defaults_and_send() {
    fn send_static<T: Send + Sync + 'static>() {}
    send_static::<Reservation>();
    send_static::<Limiter>();
    send_static::<LimitError>();
    fn send_future<F: std::future::Future + Send>(_: F) {}
    let l = limiter(1);
    send_future(l.reserve(KEY, &Limits::UNLIMITED, ask(1.0), Instant::now()));
    assert_eq!(
        LimiterConfig::default().max_queue_wait,
        Duration::from_secs(30)
    );
    assert_eq!(l.store_kind(), "local");
}

#[tokio::test(start_paused = true)]
async fn fifo_a_large_ask_queued_first_is_served_before_later_small_ones() {
    let limiter = limiter(120);
    let limits = tpm(1000.0);
    // The bucket holds 100 tokens, refilling at 1000/60 per second.
    limiter
        .reserve(KEY, &limits, ask(900.0), far())
        .await
        .unwrap();
    let start = Instant::now();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, tokens) in [
        ("large", 900.0),
        ("small1", 50.0),
        ("small2", 50.0),
        ("small3", 50.0),
    ] {
        let (limiter, order) = (limiter.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let r = limiter.reserve(KEY, &limits, ask(tokens), far()).await;
            order.lock().push((name, Instant::now() - start));
            r.unwrap();
        }));
        // Each arrives after the previous one has joined the line.
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().clone();
    let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["large", "small1", "small2", "small3"]);
    // The small asks would have fitted at once; they waited for the large one (48 s).
    let (_, large_at) = order[0];
    assert!(large_at >= Duration::from_secs(48) && large_at < Duration::from_millis(48_100));
    for (_, at) in &order[1..] {
        assert!(*at >= large_at);
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_within_the_bounds_is_waited() {
    let limiter = limiter(30);
    let limits = tpm(600.0);
    limiter
        .reserve(KEY, &limits, ask(600.0), far())
        .await
        .unwrap();
    let start = Instant::now();
    limiter
        .reserve(KEY, &limits, ask(100.0), far())
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(10) && waited <= Duration::from_millis(10_002));
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_max_queue_wait_fails_at_once() {
    let limiter = limiter(10);
    let limits = tpm(600.0);
    limiter
        .reserve(KEY, &limits, ask(600.0), far())
        .await
        .unwrap();
    let start = Instant::now();
    let err = limiter
        .reserve(KEY, &limits, ask(300.0), far())
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "must not sleep first");
    let retry_after = err.retry_after().unwrap();
    assert!(retry_after >= Duration::from_secs(30) && retry_after < Duration::from_millis(30_001));
    assert_eq!(err.metric_label(), "would_wait");
    assert_eq!(
        err.to_string(),
        "rate limit of openai/gpt-4o: the request would have to wait 30s for capacity, longer \
         than its deadline or max_queue_wait allow"
    );
    // Nothing was taken: the level is what the refill made of it.
    assert_close(tokens_level(&limiter, &limits).await, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_fails_at_once() {
    let limiter = limiter(120);
    let limits = tpm(600.0);
    limiter
        .reserve(KEY, &limits, ask(600.0), far())
        .await
        .unwrap();
    let start = Instant::now();
    let err = limiter
        .reserve(KEY, &limits, ask(100.0), start + Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(err.retry_after().unwrap() >= Duration::from_secs(10));
    // A deadline already past still gets an immediate grant when there is room.
    let other = limiter
        .reserve("other", &limits, ask(1.0), start - Duration::from_secs(1))
        .await;
    assert!(other.is_ok());
}

#[tokio::test(start_paused = true)]
async fn behind_a_line_longer_than_the_bound_fails_at_once() {
    let limiter = limiter(30);
    let limits = tpm(600.0);
    limiter
        .reserve(KEY, &limits, ask(600.0), far())
        .await
        .unwrap();
    // The head waits 20 s for 200 tokens.
    let head = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.reserve(KEY, &limits, ask(200.0), far()).await })
    };
    tokio::task::yield_now().await;
    let start = Instant::now();
    // On its own 150 tokens would take 15 s; behind the head it takes 35 s.
    let err = limiter
        .reserve(KEY, &limits, ask(150.0), far())
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let retry_after = err.retry_after().unwrap();
    assert!(retry_after >= Duration::from_secs(35) && retry_after < Duration::from_millis(35_001));
    assert!(head.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_line() {
    let limiter = limiter(60);
    let limits = tpm(600.0);
    limiter
        .reserve(KEY, &limits, ask(600.0), far())
        .await
        .unwrap();
    let waiting = limiter.reserve(KEY, &limits, ask(500.0), far());
    assert!(
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .is_err()
    );
    let state = limiter.state(KEY);
    assert_eq!(state.line.lock().waiters, 0);
    // The next ask is not held up by the departed one.
    let start = Instant::now();
    limiter
        .reserve(KEY, &limits, ask(20.0), far())
        .await
        .unwrap();
    // 10 tokens missing at 10 per second.
    assert!(start.elapsed() < Duration::from_millis(1100));
}

#[tokio::test(start_paused = true)]
async fn too_large_fails_at_once_with_a_clear_message() {
    let limiter = limiter(30);
    let err = limiter
        .reserve(KEY, &tpm(30_000.0), ask(50_000.0), far())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        LimitError::TooLarge {
            axis: "tokens",
            asked: 50_000.0,
            capacity: 30_000.0,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "request needs 50000 tokens but the tokens-per-minute bucket of openai/gpt-4o holds at \
         most 30000"
    );
    assert_eq!(err.metric_label(), "too_large");
    let burst = Limits {
        rpm: Some(10.0),
        burst_requests: Some(0.5),
        ..Limits::UNLIMITED
    };
    let err = limiter
        .reserve(KEY, &burst, ask(1.0), far())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "request needs 1 requests but the requests-per-minute bucket of openai/gpt-4o holds at \
         most 0.5"
    );
}

#[tokio::test(start_paused = true)]
async fn reconcile_moves_the_level_by_estimate_minus_actual() {
    let limiter = limiter(30);
    let limits = tpm(6000.0);
    let r = limiter
        .reserve(KEY, &limits, ask(1000.0), far())
        .await
        .unwrap();
    assert_eq!(r.tokens(), 1000.0);
    assert!(r.is_limited());
    assert_close(tokens_level(&limiter, &limits).await, 5000.0);
    // Over-estimated by 600: given back.
    r.reconcile(400.0).await;
    assert_close(tokens_level(&limiter, &limits).await, 5600.0);
    // Under-estimated by 5000: taken, below zero.
    let r = limiter
        .reserve(KEY, &limits, ask(1000.0), far())
        .await
        .unwrap();
    r.reconcile(6000.0).await;
    assert_close(tokens_level(&limiter, &limits).await, -400.0);
    // The debt is waited out: 100 tokens need (400 + 100) / 100 per second.
    let start = Instant::now();
    limiter
        .reserve(KEY, &limits, ask(100.0), far())
        .await
        .unwrap()
        .reconcile(f64::NAN)
        .await;
    assert!(start.elapsed() >= Duration::from_secs(5));
    let level = tokens_level(&limiter, &limits).await;
    assert!((0.0..1.0).contains(&level), "{level}");
}

#[tokio::test(start_paused = true)]
async fn refund_restores_the_tokens_but_not_the_request() {
    let limiter = limiter(30);
    let limits = Limits {
        rpm: Some(60.0),
        ..tpm(6000.0)
    };
    let r = limiter
        .reserve(KEY, &limits, ask(2500.0), far())
        .await
        .unwrap();
    r.refund().await;
    let levels = limiter.levels(KEY, &limits).await.unwrap();
    assert_eq!(levels.tokens, Some(6000.0));
    assert_eq!(levels.requests, Some(59.0));
    // Dropped without an outcome: kept as spent.
    drop(
        limiter
            .reserve(KEY, &limits, ask(2500.0), far())
            .await
            .unwrap(),
    );
    assert_close(tokens_level(&limiter, &limits).await, 3500.0);
}

fn snapshot(
    requests: Option<(f64, f64, u64)>,
    tokens: Option<(f64, f64, u64)>,
) -> RateLimitSnapshot {
    let view = |(limit, remaining, reset_ms)| sluice_core::BucketView {
        limit,
        remaining,
        reset: Duration::from_millis(reset_ms),
    };
    RateLimitSnapshot {
        requests: requests.map(view),
        tokens: tokens.map(view),
    }
}

#[tokio::test(start_paused = true)]
async fn learn_tightens_but_never_loosens_above_configured() {
    let limiter = limiter(30);
    let configured = Limits {
        rpm: Some(100.0),
        ..tpm(10_000.0)
    };
    assert_eq!(limiter.effective_limits(KEY, &configured), configured);
    limiter.learn(
        KEY,
        &snapshot(Some((50.0, 49.0, 1200)), Some((1e6, 1e6, 0))),
        Instant::now(),
    );
    let effective = limiter.effective_limits(KEY, &configured);
    assert_eq!(effective.rpm, Some(50.0));
    assert_eq!(effective.request_capacity(), Some(50.0));
    assert_eq!(effective.tpm, Some(10_000.0));
    // The buckets shrink at once: 50 requests, then a wait.
    for _ in 0..50 {
        limiter
            .reserve(KEY, &configured, ask(1.0), Instant::now())
            .await
            .unwrap();
    }
    assert!(
        limiter
            .reserve(KEY, &configured, ask(1.0), Instant::now())
            .await
            .is_err()
    );
    // A higher provider limit loosens back to the configured one, never beyond.
    limiter.learn(
        KEY,
        &snapshot(Some((5000.0, 4999.0, 12)), None),
        Instant::now(),
    );
    assert_eq!(limiter.effective_limits(KEY, &configured).rpm, Some(100.0));
    assert_eq!(limiter.learned(KEY).rpm, Some(5000.0));
    assert_eq!(limiter.learned(KEY).tpm, Some(1e6));
    assert_eq!(limiter.learned_all().len(), 1);
    assert_eq!(limiter.learned("unknown"), LearnedLimits::default());
}

#[tokio::test(start_paused = true)]
async fn learned_limits_apply_with_no_configured_ones() {
    let limiter = limiter(60);
    let none = Limits::UNLIMITED;
    let r = limiter
        .reserve(KEY, &none, ask(5000.0), far())
        .await
        .unwrap();
    assert!(!r.is_limited());
    r.reconcile(10.0).await;
    assert_eq!(limiter.levels(KEY, &none).await.unwrap(), Levels::default());
    limiter.learn(
        KEY,
        &snapshot(None, Some((1200.0, 1200.0, 10))),
        Instant::now(),
    );
    let err = limiter
        .reserve(KEY, &none, ask(1500.0), far())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        LimitError::TooLarge {
            capacity: 1200.0,
            ..
        }
    ));
    limiter
        .reserve(KEY, &none, ask(1000.0), far())
        .await
        .unwrap();
    let start = Instant::now();
    limiter
        .reserve(KEY, &none, ask(1000.0), far())
        .await
        .unwrap();
    // 800 missing at 20 tokens per second.
    assert!(start.elapsed() >= Duration::from_secs(40));
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_bucket_pauses_new_requests_until_the_reset() {
    let limiter = limiter(30);
    let configured = Limits {
        rpm: Some(600.0),
        ..Limits::UNLIMITED
    };
    // A mock's response: the provider's 600-request bucket is empty and full again in 20 min,
    // so its next request is reset / limit = 2 s away.
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-ratelimit-limit-requests", "600"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "20m0s"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let snapshot = RateLimitSnapshot::from_headers(&headers, SystemTime::now()).unwrap();
    limiter.learn(KEY, &snapshot, Instant::now());
    let blocked_until = limiter.learned(KEY).blocked_until.unwrap();

    let start = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter
                    .reserve(KEY, &configured, ask(1.0), far())
                    .await
                    .unwrap();
                Instant::now()
            })
        })
        .collect();
    for task in tasks {
        let granted_at = task.await.unwrap();
        assert_eq!(granted_at, blocked_until);
        assert_eq!(granted_at - start, Duration::from_secs(2));
    }
    // A call that cannot wait 2 s fails at once with the reset as its Retry-After.
    limiter.learn(KEY, &snapshot, Instant::now());
    let err = limiter
        .reserve(
            KEY,
            &configured,
            ask(1.0),
            Instant::now() + Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn concurrent_reserves_admit_exactly_the_burst_at_once() {
    // 30.5 s: sleeps end on whole milliseconds, so the 30th waiter is granted just after 30 s.
    let limiter = Limiter::local(LimiterConfig {
        max_queue_wait: Duration::from_millis(30_500),
        ..LimiterConfig::default()
    });
    let limits = Limits {
        rpm: Some(60.0),
        burst_requests: Some(60.0),
        ..Limits::UNLIMITED
    };
    let start = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let r = limiter.reserve(KEY, &limits, ask(0.0), far()).await;
                (r.is_ok(), Instant::now() - start)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let at_once = results
        .iter()
        .filter(|(ok, at)| *ok && at.is_zero())
        .count();
    assert_eq!(at_once, 60);
    // The rest queue for one request per second up to max_queue_wait; beyond that they fail
    // at once instead of waiting.
    let mut later: Vec<_> = results
        .iter()
        .filter(|(ok, at)| *ok && !at.is_zero())
        .map(|(_, at)| *at)
        .collect();
    later.sort();
    assert_eq!(later.len(), 30);
    for (i, at) in later.iter().enumerate() {
        let want = Duration::from_secs(i as u64 + 1);
        assert!(
            *at >= want && *at < want + Duration::from_millis(5),
            "{i}: {at:?}"
        );
    }
    let failed: Vec<_> = results.iter().filter(|(ok, _)| !ok).collect();
    assert_eq!(failed.len(), 110);
    assert!(failed.iter().all(|(_, at)| at.is_zero()));
}

/// Counts calls; fails every call when `fail` is set.
#[derive(Debug, Default)]
struct ProbeStore {
    inner: LocalStore,
    calls: AtomicUsize,
    fail: bool,
}

impl ProbeStore {
    fn call<'a, T: Send + 'a>(
        &'a self,
        f: BoxFuture<'a, Result<T, StoreError>>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fail {
            return futures_util::future::ready(Err(StoreError("connection refused".into())))
                .boxed();
        }
        f
    }
}

impl RateLimitStore for ProbeStore {
    fn try_acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        ask: Ask,
    ) -> BoxFuture<'a, Result<Grant, StoreError>> {
        self.call(self.inner.try_acquire(key, limits, ask))
    }

    fn adjust<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
        requests: f64,
        tokens: f64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.call(self.inner.adjust(key, limits, requests, tokens))
    }

    fn levels<'a>(
        &'a self,
        key: &'a str,
        limits: &'a Limits,
    ) -> BoxFuture<'a, Result<Levels, StoreError>> {
        self.call(self.inner.levels(key, limits))
    }

    fn kind(&self) -> &'static str {
        "probe"
    }
}

#[tokio::test(start_paused = true)]
async fn unlimited_keys_never_touch_the_store() {
    let store = Arc::new(ProbeStore::default());
    let limiter = Limiter::new(store.clone(), LimiterConfig::default());
    for _ in 0..10 {
        let r = limiter
            .reserve(KEY, &Limits::UNLIMITED, ask(1e9), far())
            .await
            .unwrap();
        r.reconcile(5.0).await;
    }
    limiter.levels(KEY, &Limits::UNLIMITED).await.unwrap();
    assert_eq!(store.calls.load(Ordering::Relaxed), 0);
    assert_eq!(limiter.store_kind(), "probe");
}

#[tokio::test(start_paused = true)]
async fn store_errors_propagate() {
    let store = Arc::new(ProbeStore {
        fail: true,
        ..ProbeStore::default()
    });
    let limiter = Limiter::new(store, LimiterConfig::default());
    let err = limiter
        .reserve(KEY, &tpm(100.0), ask(1.0), far())
        .await
        .unwrap_err();
    assert!(matches!(err, LimitError::Store(_)));
    assert_eq!(err.metric_label(), "store_unavailable");
    assert_eq!(
        err.to_string(),
        "rate-limit store unavailable: connection refused"
    );
}
