//! `SharedStore` against a real `redis-server` that is killed, hung and restarted: the local
//! fallback at `limit / expected_replicas`, fail-closed mode, and sharing again afterwards.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, ask, assert_near, free_port, limits};
use parking_lot::Mutex;
use redis::AsyncCommands;
use sluice::{Ask, Grant, Limits, RateLimitStore};
use sluice_redis::{DEFAULT_PREFIX, OnRedisDown, RedisStore, SharedConfig, SharedStore};
use tokio::time::Instant;

/// Every test is bounded: a hang fails it instead of stalling the suite.
const TEST_LIMIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test took longer than 10 s");
}

fn config(expected_replicas: u32, on_redis_down: OnRedisDown) -> SharedConfig {
    SharedConfig {
        expected_replicas,
        on_redis_down,
        call_timeout: Duration::from_millis(250),
        probe_interval: Duration::from_millis(200),
    }
}

fn shared(url: &str, config: SharedConfig) -> SharedStore {
    SharedStore::new(
        RedisStore::connect_lazy(url, DEFAULT_PREFIX).unwrap(),
        config,
    )
    .unwrap()
}

/// Calls `store` until it is no longer degraded (Redis answered a probe); bounded.
async fn until_sharing(store: &SharedStore, l: &Limits) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.is_degraded() {
        assert!(
            Instant::now() < deadline,
            "still degraded 5 s after Redis returned"
        );
        store.levels("probe", l).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counts the grants among `n` sequential acquisitions; every call must succeed.
async fn granted(store: &SharedStore, key: &str, l: &Limits, ask: Ask, n: usize) -> usize {
    let mut granted = 0;
    for _ in 0..n {
        match store.try_acquire(key, l, ask).await {
            Ok(Grant::Granted) => granted += 1,
            Ok(_) => {}
            Err(e) => panic!("a call failed: {e}"),
        }
    }
    granted
}

/// Captures this thread's log lines (the tests run on a current-thread runtime).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock())
            .matches(needle)
            .count()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn shared_stores_on_several_replicas_admit_one_limit() {
    bounded(async {
        let server = RedisServer::start().await;
        let a = shared(&server.url(), config(2, OnRedisDown::Local));
        let b = shared(&server.url(), config(2, OnRedisDown::Local));
        let l = Limits {
            rpm: Some(1.0),
            tpm: None,
            burst_requests: Some(4.0),
            burst_tokens: None,
        };
        let total =
            granted(&a, "k", &l, ask(1.0), 5).await + granted(&b, "k", &l, ask(1.0), 5).await;
        assert_eq!(total, 4);
        assert!(!a.is_degraded() && !b.is_degraded());
        assert_eq!((a.fallbacks(), a.degraded_calls()), (0, 0));
        assert_eq!(a.kind(), "redis");
    })
    .await;
}

#[tokio::test]
async fn redis_killed_mid_test_falls_back_to_a_local_share_then_shares_again() {
    let logs = Logs::default();
    let _guard = logs.install();
    bounded(async {
        let mut server = RedisServer::start().await;
        let port = server.port();
        let store = shared(&server.url(), config(3, OnRedisDown::Local));
        let l = limits(Some(60.0), Some(60_000.0));

        assert_eq!(granted(&store, "k", &l, ask(100.0), 10).await, 10);
        assert!(!store.is_degraded());

        server.kill().await;
        // Each replica now keeps a third of each limit: 20 requests at once (plus a third of a
        // request per second of refill). No call fails.
        let started = Instant::now();
        let n = granted(&store, "k", &l, ask(100.0), 30).await;
        let refilled = (started.elapsed().as_secs_f64() / 3.0).ceil() as usize;
        assert!(
            (20..=20 + refilled).contains(&n),
            "{n} granted from the local share in {:?}",
            started.elapsed()
        );
        assert!(store.is_degraded());
        assert_eq!(store.fallbacks(), 1);
        assert!(store.degraded_calls() >= 30);
        // Corrections and levels are served locally too.
        store.adjust("k", &l, 0.0, -100.0).await.unwrap();
        let levels = store.levels("k", &l).await.unwrap();
        assert!(levels.requests.unwrap() < 1.5, "{levels:?}");
        assert!(levels.tokens.unwrap() <= 20_000.0, "{levels:?}");

        let _server = RedisServer::start_on(port).await;
        until_sharing(&store, &l).await;
        assert_eq!(store.fallbacks(), 1);

        // Shared again: a second replica sees the same buckets in the (restarted, empty) Redis.
        let other = shared(&common::url(port), config(3, OnRedisDown::Local));
        let small = Limits {
            rpm: Some(1.0),
            tpm: None,
            burst_requests: Some(6.0),
            burst_tokens: None,
        };
        let total = granted(&store, "after", &small, ask(1.0), 4).await
            + granted(&other, "after", &small, ask(1.0), 4).await;
        assert_eq!(total, 6);
        assert!(!store.is_degraded());
    })
    .await;
    assert_eq!(
        logs.count("redis unreachable; falling back to local buckets at 1/3 of each limit"),
        1
    );
    assert_eq!(logs.count("redis reachable again; sharing limits"), 1);
}

#[tokio::test]
async fn a_hung_redis_cannot_stall_calls() {
    bounded(async {
        let server = RedisServer::start().await;
        let store = shared(
            &server.url(),
            SharedConfig {
                probe_interval: Duration::from_secs(1),
                ..config(1, OnRedisDown::Local)
            },
        );
        let l = limits(Some(600.0), None);
        assert_eq!(
            store.try_acquire("k", &l, ask(1.0)).await.unwrap(),
            Grant::Granted
        );

        server.signal("-STOP").await;
        let started = Instant::now();
        assert_eq!(
            store.try_acquire("k", &l, ask(1.0)).await.unwrap(),
            Grant::Granted
        );
        let first = started.elapsed();
        assert!(
            first < Duration::from_millis(800),
            "first call took {first:?}"
        );
        assert!(store.is_degraded());
        // Until the next probe is due, calls do not touch Redis at all (no call waits for it).
        for _ in 0..20 {
            let started = Instant::now();
            assert_eq!(
                store.try_acquire("k", &l, ask(1.0)).await.unwrap(),
                Grant::Granted
            );
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(150),
                "a local call took {took:?}"
            );
        }

        server.signal("-CONT").await;
        until_sharing(&store, &l).await;
        assert_eq!(store.fallbacks(), 1);
    })
    .await;
}

#[tokio::test]
async fn fail_closed_admits_nothing_while_redis_is_down() {
    bounded(async {
        let mut server = RedisServer::start().await;
        let port = server.port();
        let store = shared(&server.url(), config(3, OnRedisDown::Closed));
        let l = limits(Some(60.0), Some(60_000.0));
        assert_eq!(
            store.try_acquire("k", &l, ask(1.0)).await.unwrap(),
            Grant::Granted
        );

        server.kill().await;
        for _ in 0..10 {
            let grant = store.try_acquire("k", &l, ask(1.0)).await.unwrap();
            let Grant::Wait(wait) = grant else {
                panic!("fail-closed admitted a call: {grant:?}")
            };
            assert!(wait <= Duration::from_millis(200), "{wait:?}");
        }
        assert!(store.is_degraded());
        assert_eq!(store.fallbacks(), 1);
        // Too large stays too large; corrections are dropped; nothing is available.
        assert_eq!(
            store.try_acquire("k", &l, ask(60_001.0)).await.unwrap(),
            Grant::TooLarge {
                axis: "tokens",
                capacity: 60_000.0
            }
        );
        store.adjust("k", &l, 1.0, 1.0).await.unwrap();
        let levels = store.levels("k", &l).await.unwrap();
        assert_eq!((levels.requests, levels.tokens), (Some(0.0), Some(0.0)));

        let _server = RedisServer::start_on(port).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match store.try_acquire("k", &l, ask(1.0)).await.unwrap() {
                Grant::Granted => break,
                Grant::Wait(wait) => tokio::time::sleep(wait).await,
                other => panic!("{other:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "never admitted after Redis returned"
            );
        }
        assert!(!store.is_degraded());
    })
    .await;
}

#[tokio::test]
async fn an_ask_above_the_local_share_takes_a_full_local_bucket() {
    bounded(async {
        // Nothing listens: the store starts degraded and stays local.
        let store = shared(&common::url(free_port()), config(3, OnRedisDown::Local));
        let l = limits(Some(60.0), Some(3_000.0));
        // The local share is 1 000 tokens; 1 500 fits the real limit, so it takes the full
        // local bucket and leaves it in debt rather than being refused.
        assert_eq!(
            store.try_acquire("k", &l, ask(1_500.0)).await.unwrap(),
            Grant::Granted
        );
        let levels = store.levels("k", &l).await.unwrap();
        assert_near(levels.tokens.unwrap(), -500.0, 5.0);
        assert!(matches!(
            store.try_acquire("k", &l, ask(1.0)).await.unwrap(),
            Grant::Wait(_)
        ));
        assert_eq!(
            store.try_acquire("k", &l, ask(3_001.0)).await.unwrap(),
            Grant::TooLarge {
                axis: "tokens",
                capacity: 3_000.0
            }
        );
        assert!(store.is_degraded());
    })
    .await;
}

#[tokio::test]
async fn starting_while_redis_is_down_works_locally_then_shares() {
    bounded(async {
        let port = free_port();
        let store = shared(&common::url(port), config(2, OnRedisDown::Local));
        let l = limits(Some(60.0), None);
        assert_eq!(granted(&store, "k", &l, ask(0.0), 40).await, 30);
        assert!(store.is_degraded());

        let server = RedisServer::start_on(port).await;
        until_sharing(&store, &l).await;
        assert_eq!(
            store.try_acquire("k", &l, ask(0.0)).await.unwrap(),
            Grant::Granted
        );
        let mut raw = server.raw().await;
        let (req_key, _) = store.redis().bucket_keys("k");
        assert!(raw.exists::<_, bool>(&req_key).await.unwrap());
    })
    .await;
}
