//! `RedisStore` against a real `redis-server`: the Lua scripts' contract, and several replicas
//! sharing one limit.

mod common;

use std::time::Duration;

use common::{RedisServer, ask, assert_near, free_port, limits};
use futures_util::future::join_all;
use redis::AsyncCommands;
use sluice::{Ask, Grant, Limits, RateLimitStore};
use sluice_redis::{DEFAULT_PREFIX, RedisStore};
use tokio::time::Instant;

/// Every test is bounded: a hang fails it instead of stalling the suite.
const TEST_LIMIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test took longer than 10 s");
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url(), DEFAULT_PREFIX)
        .await
        .expect("connect")
}

async fn level_of(store: &RedisStore, key: &str, limits: &Limits) -> (f64, f64) {
    let levels = store.levels(key, limits).await.unwrap();
    (levels.requests.unwrap(), levels.tokens.unwrap())
}

#[tokio::test]
async fn acquire_takes_both_buckets_or_neither() {
    bounded(async {
        let server = RedisServer::start().await;
        let store = store(&server).await;
        // Slow refill (1 request, 100 tokens per minute) so elapsed time hardly matters.
        let l = Limits {
            rpm: Some(1.0),
            tpm: Some(100.0),
            burst_requests: Some(3.0),
            burst_tokens: Some(100.0),
        };

        assert_eq!(
            store.try_acquire("k", &l, ask(80.0)).await.unwrap(),
            Grant::Granted
        );
        let (req, tok) = level_of(&store, "k", &l).await;
        assert_near(req, 2.0, 0.01);
        assert_near(tok, 20.0, 0.5);

        // Tokens short, requests fine: nothing is taken from either bucket.
        let grant = store.try_acquire("k", &l, ask(50.0)).await.unwrap();
        let Grant::Wait(wait) = grant else {
            panic!("expected a wait, got {grant:?}")
        };
        // 30 tokens missing at 100/min: about 18 s.
        assert_near(wait.as_secs_f64(), 18.0, 0.5);
        let (req, tok) = level_of(&store, "k", &l).await;
        assert_near(req, 2.0, 0.01);
        assert_near(tok, 20.0, 0.5);

        // Requests short, tokens fine: again nothing is taken.
        for _ in 0..2 {
            assert_eq!(
                store.try_acquire("k", &l, ask(1.0)).await.unwrap(),
                Grant::Granted
            );
        }
        let (req, tok) = level_of(&store, "k", &l).await;
        assert_near(req, 0.0, 0.01);
        let grant = store.try_acquire("k", &l, ask(1.0)).await.unwrap();
        let Grant::Wait(wait) = grant else {
            panic!("expected a wait, got {grant:?}")
        };
        // One request missing at 1/min: about 60 s.
        assert_near(wait.as_secs_f64(), 60.0, 0.5);
        let (req_after, tok_after) = level_of(&store, "k", &l).await;
        assert_near(req_after, req, 0.01);
        assert_near(tok_after, tok, 0.5);
    })
    .await;
}

#[tokio::test]
async fn too_large_asks_are_refused_whatever_the_levels() {
    bounded(async {
        let server = RedisServer::start().await;
        let store = store(&server).await;
        let l = limits(Some(10.0), Some(100.0));
        assert_eq!(
            store.try_acquire("k", &l, ask(101.0)).await.unwrap(),
            Grant::TooLarge {
                axis: "tokens",
                capacity: 100.0
            }
        );
        assert_eq!(
            store
                .try_acquire(
                    "k",
                    &l,
                    Ask {
                        requests: 11.0,
                        tokens: 1.0
                    }
                )
                .await
                .unwrap(),
            Grant::TooLarge {
                axis: "requests",
                capacity: 10.0
            }
        );
        // Nothing was taken.
        let (req, tok) = level_of(&store, "k", &l).await;
        assert_eq!((req, tok), (10.0, 100.0));
    })
    .await;
}

#[tokio::test]
async fn refill_follows_redis_server_time() {
    bounded(async {
        let server = RedisServer::start().await;
        let store = store(&server).await;
        let mut raw = server.raw().await;
        // 600 rpm = one request per 100 ms; a burst of one.
        let l = Limits {
            rpm: Some(600.0),
            tpm: None,
            burst_requests: Some(1.0),
            burst_tokens: None,
        };
        assert_eq!(
            store.try_acquire("k", &l, ask(0.0)).await.unwrap(),
            Grant::Granted
        );
        let grant = store.try_acquire("k", &l, ask(0.0)).await.unwrap();
        let Grant::Wait(wait) = grant else {
            panic!("expected a wait, got {grant:?}")
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        tokio::time::sleep(wait).await;
        assert_eq!(
            store.try_acquire("k", &l, ask(0.0)).await.unwrap(),
            Grant::Granted
        );

        // The stored timestamp is Redis's clock: an empty bucket stamped a minute ago by the
        // server's clock is full now, one stamped a minute in the future refills nothing.
        let (req_key, _) = store.bucket_keys("k");
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
        let server_now_us = secs * 1_000_000 + micros;
        let l60 = limits(Some(60.0), None);
        let stamp = |ts: u64| {
            let mut raw = raw.clone();
            let req_key = req_key.clone();
            async move {
                let _: () = raw
                    .hset_multiple(
                        &req_key,
                        &[("level", "0".to_owned()), ("ts", ts.to_string())],
                    )
                    .await
                    .unwrap();
            }
        };
        stamp(server_now_us - 60_000_000).await;
        let (req, _) = store
            .levels("k", &l60)
            .await
            .map(|v| (v.requests.unwrap(), ()))
            .unwrap();
        assert_near(req, 60.0, 0.01);
        stamp(server_now_us + 60_000_000).await;
        let levels = store.levels("k", &l60).await.unwrap();
        assert_eq!(levels.requests, Some(0.0));
        let grant = store.try_acquire("k", &l60, ask(0.0)).await.unwrap();
        assert!(matches!(grant, Grant::Wait(_)), "{grant:?}");
    })
    .await;
}

#[tokio::test]
async fn three_replicas_together_admit_one_limit() {
    bounded(async {
        let server = RedisServer::start().await;
        // Three stores = three connection managers = three replicas.
        let replicas = [
            store(&server).await,
            store(&server).await,
            store(&server).await,
        ];
        let l = &limits(Some(60.0), Some(60_000.0));
        let started = Instant::now();
        let results = join_all(replicas.iter().flat_map(|replica| {
            (0..50).map(move |_| replica.try_acquire("shared", l, ask(100.0)))
        }))
        .await;
        let elapsed = started.elapsed();
        let granted = results
            .iter()
            .filter(|r| matches!(r, Ok(Grant::Granted)))
            .count();
        assert!(results.iter().all(Result::is_ok));
        // 60 at once, plus at most what refilled meanwhile (one per second).
        let refilled = elapsed.as_secs_f64().ceil() as usize;
        assert!(
            (60..=60 + refilled).contains(&granted),
            "{granted} granted in {elapsed:?}"
        );

        // Tokens are the tighter axis now: 600 tokens per request, 60 000 per minute.
        let results = join_all(replicas.iter().flat_map(|replica| {
            (0..50).map(move |_| replica.try_acquire("tokens", l, ask(6_000.0)))
        }))
        .await;
        let granted = results
            .iter()
            .filter(|r| matches!(r, Ok(Grant::Granted)))
            .count();
        assert_eq!(granted, 10);
        let levels = replicas[0].levels("tokens", l).await.unwrap();
        assert_near(levels.requests.unwrap(), 50.0, 1.0);
        assert!(levels.tokens.unwrap() < 6_000.0);
    })
    .await;
}

#[tokio::test]
async fn adjust_refunds_up_to_capacity_and_debits_below_zero() {
    bounded(async {
        let server = RedisServer::start().await;
        let store = store(&server).await;
        let l = limits(Some(60.0), Some(1_000.0));
        assert_eq!(
            store.try_acquire("k", &l, ask(500.0)).await.unwrap(),
            Grant::Granted
        );

        // A refund never lifts a bucket above its capacity.
        store.adjust("k", &l, 5.0, 800.0).await.unwrap();
        let (req, tok) = level_of(&store, "k", &l).await;
        assert_eq!((req, tok), (60.0, 1_000.0));

        // A debit may go below zero; new asks then wait for the refill.
        store.adjust("k", &l, 0.0, -1_500.0).await.unwrap();
        let (req, tok) = level_of(&store, "k", &l).await;
        assert_eq!(req, 60.0);
        assert_near(tok, -500.0, 1.0);
        let grant = store.try_acquire("k", &l, ask(1.0)).await.unwrap();
        let Grant::Wait(wait) = grant else {
            panic!("expected a wait, got {grant:?}")
        };
        // 501 tokens missing at 1000/min: about 30 s.
        assert_near(wait.as_secs_f64(), 30.06, 0.2);

        // Requests can be debited and refunded the same way; zero touches nothing.
        store.adjust("k", &l, -61.0, 0.0).await.unwrap();
        assert_near(level_of(&store, "k", &l).await.0, -1.0, 0.01);
        store.adjust("k", &l, 0.0, 0.0).await.unwrap();
        store.adjust("k", &l, 100.0, 0.0).await.unwrap();
        assert_eq!(level_of(&store, "k", &l).await.0, 60.0);
    })
    .await;
}

#[tokio::test]
async fn keys_use_the_prefix_a_hash_tag_and_expire_when_idle() {
    bounded(async {
        let server = RedisServer::start().await;
        let store = RedisStore::connect(&server.url(), "test:rl").await.unwrap();
        let mut raw = server.raw().await;
        let l = limits(Some(60.0), Some(6_000.0));
        assert_eq!(
            store
                .try_acquire("openai/gpt-4o", &l, ask(10.0))
                .await
                .unwrap(),
            Grant::Granted
        );
        let mut keys: Vec<String> = raw.keys("*").await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            ["test:rl:{openai/gpt-4o}:req", "test:rl:{openai/gpt-4o}:tok"]
        );
        // A full refill takes a minute; keys live at most twice that (plus rounding).
        for key in &keys {
            let ttl: i64 = raw.pttl(key).await.unwrap();
            assert!(ttl > 100_000 && ttl <= 120_000, "{key}: pttl {ttl}");
        }
        let fields: Vec<String> = raw.hkeys(&keys[0]).await.unwrap();
        assert_eq!(fields, ["level", "ts"]);
    })
    .await;
}

#[tokio::test]
async fn an_unlimited_axis_is_neither_checked_nor_stored() {
    bounded(async {
        let server = RedisServer::start().await;
        let store = store(&server).await;
        let mut raw = server.raw().await;
        let l = limits(Some(60.0), None);
        assert_eq!(
            store.try_acquire("k", &l, ask(1e12)).await.unwrap(),
            Grant::Granted
        );
        let (req_key, tok_key) = store.bucket_keys("k");
        assert!(raw.exists::<_, bool>(&req_key).await.unwrap());
        assert!(!raw.exists::<_, bool>(&tok_key).await.unwrap());
        let levels = store.levels("k", &l).await.unwrap();
        assert_eq!(levels.tokens, None);
        assert_near(levels.requests.unwrap(), 59.0, 0.01);
        assert_eq!(
            store
                .try_acquire("k", &Limits::UNLIMITED, ask(1.0))
                .await
                .unwrap(),
            Grant::Granted
        );
    })
    .await;
}

#[tokio::test]
async fn scripts_survive_a_script_flush() {
    bounded(async {
        let server = RedisServer::start().await;
        let store = store(&server).await;
        let mut raw = server.raw().await;
        let l = limits(Some(60.0), Some(1_000.0));
        assert_eq!(
            store.try_acquire("k", &l, ask(1.0)).await.unwrap(),
            Grant::Granted
        );
        // EVALSHA now fails with NOSCRIPT; the store loads the script again.
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(
            store.try_acquire("k", &l, ask(1.0)).await.unwrap(),
            Grant::Granted
        );
        store.adjust("k", &l, 1.0, 1.0).await.unwrap();
        assert!(store.levels("k", &l).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn connect_fails_fast_when_nothing_listens() {
    bounded(async {
        let started = Instant::now();
        let err = RedisStore::connect(&common::url(free_port()), DEFAULT_PREFIX)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // A lazy store connects on first use, and reports the failure as a StoreError.
        let lazy = RedisStore::connect_lazy(&common::url(free_port()), DEFAULT_PREFIX).unwrap();
        let l = limits(Some(60.0), None);
        assert!(lazy.try_acquire("k", &l, ask(1.0)).await.is_err());
        assert_eq!(lazy.kind(), "redis");
    })
    .await;
}
