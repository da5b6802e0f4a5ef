//! End-to-end tests of the mock's own rate limits (`--rpm` / `--tpm`) over real sockets, on a
//! paused clock: the buckets refill only when a test advances time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sluice_mock::{MockConfig, MockServer};

/// "Say hello." is 10 characters: a prompt estimate of 3 tokens.
const PROMPT_TOKENS: u64 = 3;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No idle-pool timer: on a paused clock it would let time jump (and buckets refill).
    reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .expect("client")
}

fn openai_body(stream: bool, max_tokens: Option<u64>) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": stream,
    });
    if let Some(n) = max_tokens {
        body["max_completion_tokens"] = json!(n);
    }
    body
}

fn anthropic_body(max_tokens: u64) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Say hello."}],
    })
}

struct Mock {
    server: MockServer,
    client: reqwest::Client,
}

impl Mock {
    async fn start(rpm: Option<f64>, tpm: Option<f64>) -> Mock {
        let config = MockConfig {
            rpm,
            tpm,
            ..MockConfig::default()
        };
        Mock {
            server: MockServer::start(config).await.expect("start mock"),
            client: client(),
        }
    }

    async fn chat(&self, body: &Value, fault: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/chat/completions", self.server.base_url()))
            .json(body);
        if let Some(fault) = fault {
            req = req.header("x-sluice-mock-fault", fault);
        }
        req.send().await.expect("response")
    }

    async fn messages(&self, body: &Value, fault: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/messages", self.server.base_url()))
            .header("anthropic-version", "2023-06-01")
            .json(body);
        if let Some(fault) = fault {
            req = req.header("x-sluice-mock-fault", fault);
        }
        req.send().await.expect("response")
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

fn header_u64(headers: &HeaderMap, name: &str) -> u64 {
    header(headers, name).parse().unwrap()
}

/// Reads the body and checks that an OK answer is complete.
async fn assert_ok(resp: reqwest::Response) -> HeaderMap {
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    assert!(text.contains("the0 "), "{text}");
    headers
}

/// Reads a 429 body: (headers, error object).
async fn rejected(resp: reqwest::Response) -> (HeaderMap, Value) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    (headers, body["error"].clone())
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_rpm_get_429_with_hints_and_refill_admits_again() {
    // 6 rpm: one request every 10 s, a burst of 6.
    let mock = Mock::start(Some(6.0), None).await;
    let cost = PROMPT_TOKENS + 50;
    for i in 0..6u64 {
        let h = assert_ok(mock.chat(&openai_body(i % 2 == 1, Some(50)), None).await).await;
        assert_eq!(header_u64(&h, "x-ratelimit-limit-requests"), 6);
        assert_eq!(header_u64(&h, "x-ratelimit-remaining-requests"), 5 - i);
        // Time to full: 10 s per missing request.
        let reset = match i {
            0 => "10s".to_owned(),
            5 => "1m0s".to_owned(),
            _ => format!("{}s", (i + 1) * 10),
        };
        assert_eq!(header(&h, "x-ratelimit-reset-requests"), reset);
        assert!(h.get("x-ratelimit-limit-tokens").is_none(), "tpm is unset");
    }
    let (h, error) = rejected(mock.chat(&openai_body(false, Some(50)), None).await).await;
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(
        error["message"],
        "Rate limit reached for gpt-4o-mini in organization org-sluice-mock on requests per min \
         (RPM): Limit 6, Used 6, Requested 1. Please try again in 10s. Visit \
         https://platform.openai.com/account/rate-limits to learn more."
    );
    assert_eq!(header(&h, "retry-after"), "10");
    assert_eq!(header(&h, "retry-after-ms"), "10000");
    assert_eq!(header_u64(&h, "x-ratelimit-remaining-requests"), 0);
    assert_eq!(header(&h, "x-ratelimit-reset-requests"), "1m0s");
    assert!(h.get("x-request-id").is_some());

    // A rejection debits nothing: 2.5 s later the wait is 7.5 s, not more.
    tokio::time::advance(Duration::from_millis(2500)).await;
    let (h, error) = rejected(mock.chat(&openai_body(true, Some(50)), None).await).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Please try again in 7.5s."),
        "{error}"
    );
    assert_eq!(header(&h, "retry-after"), "8");
    assert_eq!(header(&h, "retry-after-ms"), "7500");

    // Waiting exactly the hint is enough.
    tokio::time::advance(Duration::from_millis(7500)).await;
    let h = assert_ok(mock.chat(&openai_body(true, Some(50)), None).await).await;
    assert_eq!(header_u64(&h, "x-ratelimit-remaining-requests"), 0);
    rejected(mock.chat(&openai_body(false, Some(50)), None).await).await;

    let stats = mock.server.stats();
    assert_eq!(stats.requests, 10);
    assert_eq!(stats.ok, 7);
    assert_eq!(stats.rate_limited, 3);
    assert_eq!(stats.by_outcome["429_limit"], 3);
    assert!(!stats.by_outcome.contains_key("429"));
    assert_eq!(stats.tokens_admitted, 7 * cost);

    // A long pause refills the bucket to one minute's worth, no more.
    tokio::time::advance(Duration::from_secs(600)).await;
    for _ in 0..6 {
        assert_ok(mock.chat(&openai_body(false, Some(50)), None).await).await;
    }
    rejected(mock.chat(&openai_body(false, Some(50)), None).await).await;
}

#[tokio::test(start_paused = true)]
async fn tokens_beyond_tpm_get_429_and_cost_prompt_plus_max_tokens() {
    // 600 tpm: 10 tokens per second.
    let mock = Mock::start(None, Some(600.0)).await;
    let h = assert_ok(mock.chat(&openai_body(false, Some(300)), None).await).await;
    assert_eq!(header_u64(&h, "x-ratelimit-limit-tokens"), 600);
    assert_eq!(
        header_u64(&h, "x-ratelimit-remaining-tokens"),
        600 - 300 - PROMPT_TOKENS
    );
    assert_eq!(header(&h, "x-ratelimit-reset-tokens"), "30.3s");
    assert!(
        h.get("x-ratelimit-limit-requests").is_none(),
        "rpm is unset"
    );
    // `max_tokens` counts when `max_completion_tokens` is absent.
    let mut body = openai_body(true, None);
    body["max_tokens"] = json!(200);
    let h = assert_ok(mock.chat(&body, None).await).await;
    assert_eq!(header_u64(&h, "x-ratelimit-remaining-tokens"), 94);
    // Neither: the answer's chunk count (8).
    let h = assert_ok(mock.chat(&openai_body(false, None), None).await).await;
    assert_eq!(header_u64(&h, "x-ratelimit-remaining-tokens"), 83);

    // 83 left, 103 asked: 20 short at 10/s.
    let (h, error) = rejected(mock.chat(&openai_body(false, Some(100)), None).await).await;
    assert_eq!(error["type"], "tokens");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(
        error["message"],
        "Rate limit reached for gpt-4o-mini in organization org-sluice-mock on tokens per min \
         (TPM): Limit 600, Used 517, Requested 103. Please try again in 2s. Visit \
         https://platform.openai.com/account/rate-limits to learn more."
    );
    assert_eq!(header(&h, "retry-after"), "2");
    assert_eq!(header(&h, "retry-after-ms"), "2000");
    assert_eq!(header_u64(&h, "x-ratelimit-remaining-tokens"), 83);

    // More than a minute's worth: never admissible, no hint.
    let (h, error) = rejected(mock.chat(&openai_body(false, Some(598)), None).await).await;
    assert_eq!(error["type"], "tokens");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Request too large for gpt-4o-mini in organization org-sluice-mock on tokens per \
             min (TPM): Limit 600, Requested 601."
        ),
        "{message}"
    );
    assert!(h.get("retry-after").is_none() && h.get("retry-after-ms").is_none());

    tokio::time::advance(Duration::from_secs(2)).await;
    assert_ok(mock.chat(&openai_body(false, Some(100)), None).await).await;
    let stats = mock.server.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.tokens_admitted, 303 + 203 + 11 + 103);
}

#[tokio::test(start_paused = true)]
async fn anthropic_endpoint_shares_the_buckets_and_speaks_its_headers() {
    // 60 rpm, 3,000 tpm (50 tokens per second).
    let mock = Mock::start(Some(60.0), Some(3000.0)).await;
    let cost = PROMPT_TOKENS + 1000;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let resp = mock.messages(&anthropic_body(1000), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(header_u64(&h, "anthropic-ratelimit-requests-limit"), 60);
    assert_eq!(header_u64(&h, "anthropic-ratelimit-requests-remaining"), 59);
    assert_eq!(header_u64(&h, "anthropic-ratelimit-tokens-limit"), 3000);
    assert_eq!(
        header_u64(&h, "anthropic-ratelimit-tokens-remaining"),
        3000 - cost
    );
    // Requests full again in 1 s, tokens in 1003 / 50 = 20.06 s (rounded up to the second).
    for (name, secs) in [
        ("anthropic-ratelimit-requests-reset", 1),
        ("anthropic-ratelimit-tokens-reset", 21),
    ] {
        let reset = header(&h, name);
        assert!(reset.ends_with('Z') && reset.len() == 20, "{reset}");
        let expect_min = rfc3339_after(now, secs - 1);
        let expect_max = rfc3339_after(now, secs + 2);
        assert!(
            reset >= expect_min.as_str() && reset <= expect_max.as_str(),
            "{name}: {reset} not in {expect_min}..{expect_max}"
        );
    }
    assert!(h.get("x-ratelimit-limit-requests").is_none());

    // The OpenAI endpoint draws on the same buckets.
    let h = assert_ok(mock.chat(&openai_body(false, Some(1000)), None).await).await;
    assert_eq!(header_u64(&h, "x-ratelimit-remaining-requests"), 58);
    assert_eq!(
        header_u64(&h, "x-ratelimit-remaining-tokens"),
        3000 - 2 * cost
    );

    // 994 tokens left, 1003 asked: 9 short at 50/s = 180 ms.
    let resp = mock.messages(&anthropic_body(1000), None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = resp.headers().clone();
    assert_eq!(header(&h, "retry-after"), "1");
    assert_eq!(header(&h, "retry-after-ms"), "180");
    assert_eq!(header_u64(&h, "anthropic-ratelimit-tokens-remaining"), 994);
    assert!(h.get("request-id").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "This request would exceed the rate limit for your organization \
             (org-sluice-mock) of 3,000 tokens per minute."
        ),
        "{message}"
    );

    tokio::time::advance(Duration::from_millis(180)).await;
    let resp = mock.messages(&anthropic_body(1000), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stats = mock.server.stats();
    assert_eq!(stats.by_api["anthropic"], 3);
    assert_eq!(stats.by_api["openai"], 1);
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.tokens_admitted, 3 * cost);
}

#[tokio::test(start_paused = true)]
async fn scripted_requests_bypass_the_limits_but_report_them() {
    let mock = Mock::start(Some(1.0), None).await;
    // Neither checked nor debited.
    for _ in 0..3 {
        let h = assert_ok(mock.chat(&openai_body(false, Some(5)), Some("ok")).await).await;
        assert_eq!(header_u64(&h, "x-ratelimit-remaining-requests"), 1);
        assert_eq!(header(&h, "x-ratelimit-reset-requests"), "0s");
    }
    // A scripted 429 is a scripted 429, counted as `429`, not `429_limit`.
    let (h, error) = rejected(
        mock.chat(&openai_body(false, None), Some("429:ms=250"))
            .await,
    )
    .await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(header(&h, "retry-after-ms"), "250");
    // An Anthropic scripted 429 keeps its own request headers. (A script is counted per
    // script text across endpoints, hence another one.)
    let resp = mock.messages(&anthropic_body(5), Some("429:ra=1")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(resp.headers(), "anthropic-ratelimit-requests-limit"),
        "60"
    );
    assert_eq!(
        header(resp.headers(), "anthropic-ratelimit-requests-remaining"),
        "0"
    );

    // The one request a minute is still there for an unscripted request.
    let h = assert_ok(mock.chat(&openai_body(false, Some(5)), None).await).await;
    assert_eq!(header(&h, "x-ratelimit-reset-requests"), "1m0s");
    let (h, _) = rejected(mock.chat(&openai_body(false, Some(5)), None).await).await;
    assert_eq!(header(&h, "retry-after"), "60");

    let stats = mock.server.stats();
    assert_eq!(stats.by_outcome["429"], 2);
    assert_eq!(stats.by_outcome["429_limit"], 1);
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.tokens_admitted, PROMPT_TOKENS + 5);

    // POST /stats/reset zeroes the counters and refills the buckets.
    let url = format!("http://{}/stats/reset", mock.server.addr());
    let reset: Value = mock
        .client
        .post(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reset["rate_limited"], 0);
    assert_eq!(reset["tokens_admitted"], 0);
    assert_ok(mock.chat(&openai_body(false, Some(5)), None).await).await;
}

#[tokio::test]
async fn no_limits_no_headers() {
    let mock = Mock::start(None, None).await;
    let h = assert_ok(mock.chat(&openai_body(false, Some(5)), None).await).await;
    assert!(h.keys().all(|k| !k.as_str().contains("ratelimit")), "{h:?}");
    let stats = mock.server.stats();
    assert_eq!((stats.rate_limited, stats.tokens_admitted), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn no_limit_headers_keeps_the_limits_and_the_hints() {
    let mock = Mock {
        server: MockServer::start(MockConfig {
            rpm: Some(1.0),
            tpm: Some(1000.0),
            no_limit_headers: true,
            ..MockConfig::default()
        })
        .await
        .unwrap(),
        client: client(),
    };
    let h = assert_ok(mock.chat(&openai_body(false, Some(5)), None).await).await;
    assert!(h.keys().all(|k| !k.as_str().contains("ratelimit")), "{h:?}");
    let (h, error) = rejected(mock.chat(&openai_body(false, Some(5)), None).await).await;
    assert_eq!(error["type"], "requests");
    assert_eq!(header(&h, "retry-after"), "60");
    assert!(h.keys().all(|k| !k.as_str().contains("ratelimit")), "{h:?}");
    let resp = mock.messages(&anthropic_body(5), None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        resp.headers()
            .keys()
            .all(|k| !k.as_str().contains("ratelimit"))
    );
    assert_eq!(mock.server.stats().rate_limited, 2);
}

/// RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`) of `now + secs`, for comparing header values as strings.
fn rfc3339_after(now: u64, secs: u64) -> String {
    let t = now + secs;
    let days = t / 86_400;
    let rem = t % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
