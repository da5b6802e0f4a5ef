//! The status page: `GET /status.json` follows its documented schema, `GET /status` is one
//! self-contained page, and a real browser (headless Debian chromium) renders every target from
//! live data with no script error.
//!
//! The browser test never skips: without chromium it fails and says how to install it
//! (`scripts/test` installs it). `SLUICE_CHROMIUM` names another binary.

mod common;

use std::time::Duration;

use common::{chat_body, fast_policy};
use serde_json::Value;
use sluice::BreakerConfig;
use sluice_gateway::{Config, Gateway, GatewayHandle, GatewayOptions, ModelConfig, ProviderConfig};
use sluice_mock::{MockConfig, MockServer};

/// A gateway over one mock with two providers: `flaky` (its breaker opens after 2 failures in
/// a row) and `steady`; route `chain` = flaky then steady.
async fn gateway() -> (MockServer, GatewayHandle) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let policy = sluice::RetryPolicy {
        max_retries: 1,
        ..fast_policy()
    };
    let mut config = Config {
        policy: policy.clone(),
        ..Config::default()
    };
    let mut flaky = ProviderConfig::openai("flaky", &mock.base_url());
    flaky.breaker = Some(BreakerConfig {
        consecutive_failures: 2,
        cooldown: Duration::from_secs(600),
        ..BreakerConfig::default()
    });
    let mut steady = ProviderConfig::openai("steady", &mock.base_url());
    steady.limits.rpm = Some(6000.0);
    config.providers = vec![flaky, steady];
    config.models = vec![ModelConfig::new(
        "chain",
        &["flaky/mock-1", "steady/mock-1"],
        policy,
    )];
    let gateway = Gateway::build(config, GatewayOptions::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (mock, gateway.start(listener).unwrap())
}

/// Traffic that shows every colour: rate limits absorbed on `steady`, `flaky` failing until its
/// breaker opens, fallbacks, streams and plain calls.
async fn traffic(handle: &GatewayHandle) {
    let http = reqwest::Client::new();
    let send = |script: Option<&'static str>, scenario: String, stream: bool| {
        let mut req = http
            .post(format!("{}/chat/completions", handle.base_url()))
            .json(&chat_body("chain", stream));
        if let Some(script) = script {
            req = req
                .header("x-sluice-mock-fault", script)
                .header("x-sluice-mock-scenario", scenario);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        }
    };
    // Two 503s on flaky: retry, give up, breaker opens, fall back to steady.
    send(Some("503,503"), "open".into(), true).await;
    for i in 0..6 {
        // flaky is skipped; steady answers, sometimes after a rate limit.
        let script = (i % 2 == 0).then_some("429");
        send(script, format!("rl{i}"), i % 3 == 0).await;
    }
}

fn obj<'a>(v: &'a Value, key: &str) -> &'a serde_json::Map<String, Value> {
    v[key]
        .as_object()
        .unwrap_or_else(|| panic!("{key} is an object: {v}"))
}

fn is_quantiles(v: &Value) -> bool {
    let ok = |x: &Value| x.is_null() || x.is_f64() || x.is_u64();
    v.as_object().is_some_and(|o| o.len() == 3)
        && ok(&v["p50"])
        && ok(&v["p99"])
        && v["count"].is_u64()
}

fn series_of_len(v: &Value, n: usize, nullable: bool) -> bool {
    v.as_array().is_some_and(|a| {
        a.len() == n
            && a.iter()
                .all(|x| x.is_u64() || (nullable && (x.is_null() || x.is_f64())))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_follows_its_schema() {
    let (_mock, handle) = gateway().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/status.json", handle.addr());
    // Before any traffic, the configured targets are listed, healthy.
    let empty: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = empty["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["flaky/mock-1", "steady/mock-1"]);
    assert!(empty["targets"][0]["retry_budget"].is_null(), "unused yet");
    assert_eq!(empty["targets"][0]["health"], "healthy");

    traffic(&handle).await;
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().await.unwrap();

    let top: Vec<&str> = obj(&v, "gateway").keys().map(String::as_str).collect();
    assert_eq!(
        top,
        [
            "in_flight",
            "totals",
            "last_minute",
            "latency_ms",
            "ttft_ms",
            "overhead_ms",
            "series"
        ]
    );
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "version",
            "now_ms",
            "started_ms",
            "bucket_ms",
            "buckets",
            "series_start_ms",
            "stats_window_ms",
            "gateway",
            "targets",
            "breaker_events",
            "rate_limits",
            "redis"
        ]
    );
    let limits = v["rate_limits"].as_array().unwrap();
    assert_eq!(limits.len(), 1, "{v}");
    assert_eq!(limits[0]["key"], "steady/mock-1");
    assert_eq!(limits[0]["requests_capacity"], 6000.0);
    assert!(
        limits[0]["requests"].as_f64().unwrap() < 6000.0,
        "the bucket was used"
    );
    assert!(v["redis"].is_null(), "local limits: no redis state");
    assert_eq!(v["version"], 1);
    assert_eq!(v["bucket_ms"], 5_000);
    assert_eq!(v["stats_window_ms"], 300_000);
    let n = v["buckets"].as_u64().unwrap() as usize;
    assert_eq!(n, 120, "ten minutes");
    let now = v["now_ms"].as_u64().unwrap();
    assert!(v["started_ms"].as_u64().unwrap() <= now);
    let start = v["series_start_ms"].as_u64().unwrap();
    assert_eq!(start % 5_000, 0);
    assert!(start + 120 * 5_000 > now && start + 119 * 5_000 <= now);

    let g = &v["gateway"];
    assert!(g["in_flight"].is_i64());
    assert_eq!(g["totals"]["requests"], 7);
    assert_eq!(g["totals"]["ok"], 7);
    assert_eq!(g["totals"]["failed"], 0);
    let minute = obj(g, "last_minute");
    assert_eq!(
        minute.keys().collect::<Vec<_>>(),
        ["requests", "failed", "retries", "fallbacks"]
    );
    assert_eq!(g["last_minute"]["requests"], 7);
    assert_eq!(
        g["last_minute"]["fallbacks"], 7,
        "every call fell back from flaky"
    );
    assert_eq!(
        g["last_minute"]["retries"],
        1 + 3,
        "one on flaky, three rate limits"
    );
    for q in ["latency_ms", "ttft_ms", "overhead_ms"] {
        assert!(is_quantiles(&g[q]), "{q}: {}", g[q]);
    }
    assert_eq!(g["latency_ms"]["count"], 7);
    assert_eq!(g["ttft_ms"]["count"], 3, "three streams");
    assert_eq!(g["overhead_ms"]["count"], 7);
    let overhead_p50 = g["overhead_ms"]["p50"].as_f64().unwrap();
    let latency_p50 = g["latency_ms"]["p50"].as_f64().unwrap();
    assert!(
        overhead_p50 < latency_p50,
        "{overhead_p50} vs {latency_p50}"
    );
    let s = &g["series"];
    for key in ["requests", "failed", "retries", "fallbacks"] {
        assert!(series_of_len(&s[key], n, false), "gateway.series.{key}");
    }
    for key in ["latency_p99_ms", "overhead_p99_ms"] {
        assert!(series_of_len(&s[key], n, true), "gateway.series.{key}");
    }
    assert_eq!(
        s["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum::<u64>(),
        7
    );

    let targets = v["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    for t in targets {
        let keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "name",
                "health",
                "breaker",
                "retry_budget",
                "parked_for_ms",
                "last_minute",
                "errors_by_class",
                "latency_ms",
                "ttft_ms",
                "series"
            ]
        );
        assert!(["healthy", "degraded", "open"].contains(&t["health"].as_str().unwrap()));
        assert!(["closed", "half_open", "open"].contains(&t["breaker"].as_str().unwrap()));
        assert!(t["retry_budget"].is_number());
        assert!(t["parked_for_ms"].is_null() || t["parked_for_ms"].is_u64());
        assert_eq!(
            obj(t, "last_minute").keys().collect::<Vec<_>>(),
            ["attempts", "answered", "errors", "retries", "fallbacks"]
        );
        assert!(obj(t, "errors_by_class").values().all(Value::is_u64));
        assert!(is_quantiles(&t["latency_ms"]) && is_quantiles(&t["ttft_ms"]));
        for key in ["attempts", "errors", "retries", "fallbacks"] {
            assert!(series_of_len(&t["series"][key], n, false), "series.{key}");
        }
    }
    let flaky = &targets[0];
    assert_eq!(flaky["name"], "flaky/mock-1");
    assert_eq!(flaky["health"], "open");
    assert_eq!(flaky["breaker"], "open");
    assert_eq!(flaky["errors_by_class"]["overloaded"], 2);
    assert_eq!(flaky["last_minute"]["attempts"], 2);
    assert_eq!(flaky["last_minute"]["fallbacks"], 7);
    assert_eq!(flaky["latency_ms"]["count"], 0);
    let steady = &targets[1];
    assert_eq!(
        steady["health"], "degraded",
        "rate limited in the last minute"
    );
    assert_eq!(steady["breaker"], "closed");
    assert_eq!(steady["errors_by_class"]["rate_limited"], 3);
    assert_eq!(steady["last_minute"]["answered"], 7);
    assert_eq!(steady["last_minute"]["attempts"], 10);
    assert_eq!(steady["latency_ms"]["count"], 7);
    assert_eq!(steady["ttft_ms"]["count"], 3);

    let events = v["breaker_events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        e.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["at_ms", "target", "from", "to"]
    );
    assert_eq!(
        (&e["target"], &e["from"], &e["to"]),
        (&"flaky/mock-1".into(), &"closed".into(), &"open".into())
    );
    assert!(e["at_ms"].as_u64().unwrap() <= now);
}

#[tokio::test]
async fn the_status_page_is_one_self_contained_file() {
    let (_mock, handle) = gateway().await;
    let resp = reqwest::get(format!("http://{}/status", handle.addr()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(html.contains("status.json"));
    // Nothing is loaded from elsewhere: no remote script, style, font or image, and no
    // absolute URL but the SVG namespace (an identifier, never fetched).
    for banned in [
        "<script src",
        "<link",
        "@import",
        "url(",
        "@font-face",
        "<img",
        "<iframe",
    ] {
        assert!(!html.contains(banned), "the page contains {banned:?}");
    }
    let urls: Vec<&str> = html
        .match_indices("http")
        .map(|(i, _)| &html[i..(i + 40).min(html.len())])
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .collect();
    assert!(
        urls.iter()
            .all(|u| u.starts_with("http://www.w3.org/2000/svg")),
        "{urls:?}"
    );
    // Untrusted strings (target names come from clients for direct routes) are only ever
    // set as text, never parsed as HTML.
    assert!(!html.contains("innerHTML") && !html.contains("insertAdjacentHTML"));
}

/// The chromium binary: `SLUICE_CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> String {
    if let Ok(path) = std::env::var("SLUICE_CHROMIUM") {
        return path;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => path.to_string_lossy().into_owned(),
        None => panic!(
            "the browser test needs headless chromium and none was found on the PATH: \
             install it (scripts/test does: apt-get install -y chromium) or set SLUICE_CHROMIUM \
             to a chromium binary"
        ),
    }
}

/// Runs headless chromium on `url` with `extra` flags; returns (stdout, stderr).
async fn run_chromium(url: &str, extra: &[&str]) -> (String, String) {
    let profile = std::env::temp_dir().join(format!(
        "sluice-status-test-{}-{:016x}",
        std::process::id(),
        random()
    ));
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium started");
    let _ = std::fs::remove_dir_all(&profile);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium failed ({}):\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// A random number, for a fresh profile directory.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// The value of attribute `name` on the first tag that has it.
fn attr<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("{name}=\"");
    let start = dom.find(&needle)? + needle.len();
    let end = dom[start..].find('"')?;
    Some(&dom[start..start + end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_the_targets_in_headless_chromium() {
    let (_mock, handle) = gateway().await;
    traffic(&handle).await;
    let url = format!("http://{}/status", handle.addr());
    let (dom, stderr) = run_chromium(&url, &["--virtual-time-budget=5000", "--dump-dom"]).await;

    assert_eq!(
        attr(&dom, "data-errors"),
        Some("0"),
        "script errors on the page:\n{stderr}\n{dom}"
    );
    assert_eq!(attr(&dom, "data-state"), Some("live"), "{dom}");
    let renders: u32 = attr(&dom, "data-renders").unwrap().parse().unwrap();
    assert!(renders >= 1, "the page rendered data: {dom}");
    for line in stderr.lines() {
        let l = line.to_ascii_lowercase();
        assert!(
            !(l.contains("uncaught") || l.contains("console") && l.contains("error")),
            "browser console error: {line}"
        );
    }
    // Every target, with the health the gateway reports and its colour class.
    assert!(
        dom.contains(r#"data-target="flaky/mock-1" data-health="open" data-breaker="open""#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"data-target="steady/mock-1" data-health="degraded" data-breaker="closed""#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<span class="badge open">open</span>"#),
        "{dom}"
    );
    assert!(dom.contains(r#"<span class="badge degraded">degraded</span>"#));
    assert!(dom.contains("rate_limited 3"), "errors by class: {dom}");
    assert!(dom.contains("overloaded 2"), "errors by class: {dom}");
    // Charts were drawn, and the breaker event is listed.
    assert!(dom.matches("<svg class=\"spark\"").count() >= 8, "{dom}");
    assert!(dom.contains("<path d=\"M"), "a sparkline has data: {dom}");
    assert!(dom.contains("st-open"), "breaker transition listed: {dom}");
    assert!(
        dom.contains("requests available") && dom.contains("/ 6,000"),
        "rate limits listed: {dom}"
    );
}
