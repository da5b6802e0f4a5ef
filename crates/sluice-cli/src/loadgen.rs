//! A small HTTP load generator for OpenAI-compatible Chat Completions endpoints, used by
//! `sluice bench` (and `sluice demo`).
//!
//! - [`LoadSpec`] says what to send: how many requests, streaming or not, and either a
//!   **closed loop** (`rate: None`: `concurrency` requests in flight, a new one starts when one
//!   ends) or an **open loop** (`rate: Some(r)`: request `i` is scheduled at `start + i / r`
//!   whatever happens to earlier ones, and its latency is measured from that *scheduled* instant,
//!   so a server that stalls is charged for the requests it delayed — no coordinated omission).
//! - [`run_load`] runs it and returns a [`LoadReport`]: every [`RequestOutcome`] plus percentiles,
//!   failures per class and the achieved rate.
//!
//! The generator shares the machine with the system under test, so the per-request path is
//! lean: the URL, headers and body are built once and cloned (reference counts), each request is
//! one task with one timer, streams are scanned with [`SseParser`] and only the events before the
//! first content are JSON-parsed; after that an event is only checked for `[DONE]`, an `"error"`
//! key and the length of its `"content"` string.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sluice_core::{ErrorSignal, SseItem, SseParser, classify};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// What to send. `Default` gives 100 closed-loop non-streaming requests, one at a time, to
/// `http://127.0.0.1:8000/v1` with model `mock-1`.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The API base up to the version, e.g. `http://127.0.0.1:8000/v1`; requests go to
    /// `{base_url}/chat/completions`.
    pub base_url: String,
    /// The `model` field of every request.
    pub model: String,
    /// Number of requests to send.
    pub requests: usize,
    /// Closed loop: requests in flight at once. Ignored in an open loop, where the number in
    /// flight is whatever the server's latency makes it (see [`LoadReport::max_in_flight`]).
    pub concurrency: usize,
    /// Open loop: requests per second on a fixed timetable, latency measured from each
    /// request's scheduled start. `None`: closed loop.
    pub rate: Option<f64>,
    /// Send `"stream": true` and read the answer as SSE.
    pub stream: bool,
    /// Extra request headers (e.g. `x-sluice-mock-fault`).
    pub headers: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// The user message.
    pub prompt: String,
    /// Per request, from the moment it is sent until the whole body / `[DONE]`.
    pub timeout: Duration,
    /// The whole run stops after this long: requests in flight are abandoned (class `aborted`)
    /// and requests not yet sent are counted as `not_started`. `None`: no bound beyond
    /// `timeout` per request.
    pub max_duration: Option<Duration>,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            base_url: "http://127.0.0.1:8000/v1".to_owned(),
            model: "mock-1".to_owned(),
            requests: 100,
            concurrency: 1,
            rate: None,
            stream: false,
            headers: Vec::new(),
            api_key: None,
            prompt: "Say hello.".to_owned(),
            timeout: Duration::from_secs(30),
            max_duration: None,
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOutcome {
    /// A 2xx answer read completely: a parseable completion, or a stream that reached
    /// `data: [DONE]` without an error event.
    pub ok: bool,
    /// The failure class ([`sluice_core::ErrorClass::metric_label`]) when not `ok`:
    /// an HTTP error is classified from its status and OpenAI error body; a stream that
    /// breaks after content started (in-band error event, end without `[DONE]`, read error) is
    /// `stream_interrupted`; an in-band error event *before* any content is classified like an
    /// HTTP error (as the client library does); a stream that ends before any content or
    /// `[DONE]`, a malformed body, a refused or reset connection is `transport`; running out of
    /// [`LoadSpec::timeout`] is `timeout`.
    pub class: Option<String>,
    /// The HTTP status, if response headers arrived.
    pub status: Option<u16>,
    /// From the scheduled start (open loop) or the send (closed loop) until the whole body or
    /// `[DONE]` arrived (for failures: until the failure was seen).
    pub latency: Duration,
    /// Streams: from the same start until the first chunk carrying non-empty delta content.
    pub ttfb: Option<Duration>,
    /// Bytes of answer content received (for streams after the first content chunk: the
    /// JSON-escaped length, identical for plain ASCII text).
    pub text_len: usize,
    /// How late the request was actually sent relative to its scheduled start (open loop:
    /// timer and scheduling delay of the generator itself; closed loop: ~0).
    pub send_lag: Duration,
    /// A short description of the failure, when not `ok`.
    pub detail: Option<String>,
}

/// The result of [`run_load`]. Serialises to JSON with every duration as milliseconds (`f64`,
/// three decimals) in a field whose name ends in `_ms`; `outcomes` is not serialised.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Every request that finished (successfully or not), in completion order.
    #[serde(skip)]
    pub outcomes: Vec<RequestOutcome>,
    /// `"open"` or `"closed"`.
    pub mode: &'static str,
    /// Whether the requests streamed.
    pub stream: bool,
    /// Open loop: the scheduled rate.
    pub rate: Option<f64>,
    /// Closed loop: requests in flight.
    pub concurrency: Option<usize>,
    /// Requests planned ([`LoadSpec::requests`]).
    pub requests: usize,
    /// Requests that finished, successfully or not (`outcomes.len()`).
    pub completed: usize,
    /// Requests that finished `ok`.
    pub succeeded: usize,
    /// `requests - succeeded`: failures, plus requests abandoned or never sent.
    pub failed: usize,
    /// Failures per class; also `aborted` (in flight when `max_duration` ran out),
    /// `not_started` (never sent because of it) and `invalid_spec`.
    pub failed_by_class: BTreeMap<String, u64>,
    /// Up to five distinct failure descriptions.
    pub failure_samples: Vec<String>,
    /// Latency percentiles of the successful requests (nearest rank).
    #[serde(rename = "latency_p50_ms", serialize_with = "ser_ms")]
    pub latency_p50: Duration,
    #[serde(rename = "latency_p90_ms", serialize_with = "ser_ms")]
    pub latency_p90: Duration,
    #[serde(rename = "latency_p99_ms", serialize_with = "ser_ms")]
    pub latency_p99: Duration,
    #[serde(rename = "latency_max_ms", serialize_with = "ser_ms")]
    pub latency_max: Duration,
    #[serde(rename = "latency_mean_ms", serialize_with = "ser_ms")]
    pub latency_mean: Duration,
    /// Time to first content of the successful streams (`None` when not streaming).
    #[serde(rename = "ttfb_p50_ms", serialize_with = "ser_opt_ms")]
    pub ttfb_p50: Option<Duration>,
    #[serde(rename = "ttfb_p99_ms", serialize_with = "ser_opt_ms")]
    pub ttfb_p99: Option<Duration>,
    /// Open loop only: how late the generator sent requests relative to the timetable (its own
    /// timer granularity and scheduling); included in every latency above.
    #[serde(rename = "send_lag_p50_ms", serialize_with = "ser_opt_ms")]
    pub send_lag_p50: Option<Duration>,
    #[serde(rename = "send_lag_p99_ms", serialize_with = "ser_opt_ms")]
    pub send_lag_p99: Option<Duration>,
    /// From the start of the run until the last request finished (or the run was stopped).
    #[serde(rename = "elapsed_ms", serialize_with = "ser_ms")]
    pub elapsed: Duration,
    /// Successful requests per second of `elapsed`.
    pub achieved_rps: f64,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// The run hit `max_duration`.
    pub stopped_early: bool,
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1e3)
}

/// Rounds to three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn ser_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms(*d))
}

fn ser_opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(ms(*d)),
        None => s.serialize_none(),
    }
}

/// A pooled HTTP client for load generation: keeps up to `max_conns` idle connections per host,
/// `TCP_NODELAY`, no proxy, no automatic retries and no global timeout (each request is bounded
/// by [`LoadSpec::timeout`]). Installs the ring crypto provider for rustls if none is installed.
pub fn http_client(max_conns: usize) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("sluice-loadgen/", env!("CARGO_PKG_VERSION")))
        .tcp_nodelay(true)
        .no_proxy()
        .retry(reqwest::retry::never())
        .pool_max_idle_per_host(max_conns.max(1))
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("building an HTTP client with a crypto provider installed cannot fail")
}

/// The `p`-th percentile (`p` in `0.0..=100.0`) of an ascending slice by the nearest-rank
/// method: the smallest value with at least `p`% of the values at or below it. `p <= 0` gives
/// the minimum, an empty slice gives zero.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let n = sorted.len();
    let rank = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Everything a request task needs, built once per run.
#[derive(Debug)]
struct Shared {
    url: reqwest::Url,
    headers: HeaderMap,
    body: Bytes,
    stream: bool,
    timeout: Duration,
}

impl Shared {
    fn new(spec: &LoadSpec) -> Result<Shared, String> {
        let url_text = format!("{}/chat/completions", spec.base_url.trim_end_matches('/'));
        let url = reqwest::Url::parse(&url_text).map_err(|e| format!("bad URL {url_text}: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &spec.api_key {
            let mut value = HeaderValue::try_from(format!("Bearer {key}"))
                .map_err(|_| "the API key is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in &spec.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| format!("invalid value for header {name}"))?;
            headers.append(name, value);
        }
        let body = serde_json::json!({
            "model": spec.model,
            "messages": [{"role": "user", "content": spec.prompt}],
            "stream": spec.stream,
        });
        Ok(Shared {
            url,
            headers,
            body: Bytes::from(body.to_string()),
            stream: spec.stream,
            timeout: spec.timeout,
        })
    }
}

/// Runs `spec` and reports. `progress`, if given, is called with (finished, total) at most
/// every 100 ms and once at the end.
///
/// An open loop keeps its timetable on a dedicated thread that sleeps with
/// [`std::thread::park_timeout`] (microsecond precision) and spawns each request onto the
/// current runtime at its scheduled instant: the runtime's own timer has millisecond
/// granularity, which would add up to a millisecond of the generator's lag to every latency.
pub async fn run_load(
    client: &reqwest::Client,
    spec: &LoadSpec,
    progress: Option<&dyn Fn(usize, usize)>,
) -> LoadReport {
    let total = spec.requests;
    let rate = spec.rate.filter(|r| r.is_finite() && *r > 0.0);
    let shared = match Shared::new(spec) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let mut failed = BTreeMap::new();
            if total > 0 {
                failed.insert("invalid_spec".to_owned(), total as u64);
            }
            return summarize(
                spec,
                rate,
                Vec::new(),
                Duration::ZERO,
                RunEnd {
                    failed_extra: failed,
                    samples: vec![e],
                    max_in_flight: 0,
                    stopped_early: false,
                },
            );
        }
    };
    let progress = Progress::new(progress, total);
    let (outcomes, elapsed, end) = match rate {
        Some(rate) => run_open(client, shared, spec, rate, &progress).await,
        None => run_closed(client, shared, spec, &progress).await,
    };
    progress.finish(outcomes.len() + end.failed_extra.get("panic").copied().unwrap_or(0) as usize);
    summarize(spec, rate, outcomes, elapsed, end)
}

/// Throttled progress reports.
struct Progress<'a> {
    report: Option<&'a dyn Fn(usize, usize)>,
    total: usize,
    last: parking_lot::Mutex<Instant>,
}

impl<'a> Progress<'a> {
    fn new(report: Option<&'a dyn Fn(usize, usize)>, total: usize) -> Self {
        Progress {
            report,
            total,
            last: parking_lot::Mutex::new(Instant::now()),
        }
    }

    fn update(&self, done: usize) {
        let Some(report) = self.report else { return };
        let mut last = self.last.lock();
        if done < self.total && last.elapsed() < Duration::from_millis(100) {
            return;
        }
        *last = Instant::now();
        drop(last);
        report(done, self.total);
    }

    fn finish(&self, done: usize) {
        if let Some(report) = self.report {
            report(done, self.total);
        }
    }
}

/// Closed loop: `concurrency` requests in flight, one task each.
async fn run_closed(
    client: &reqwest::Client,
    shared: Arc<Shared>,
    spec: &LoadSpec,
    progress: &Progress<'_>,
) -> (Vec<RequestOutcome>, Duration, RunEnd) {
    let total = spec.requests;
    let concurrency = spec.concurrency.max(1);
    let start = Instant::now();
    let deadline = spec.max_duration.map(|d| start + d);
    let stop = tokio::time::sleep_until(deadline.unwrap_or(start));
    tokio::pin!(stop);
    let mut tasks: JoinSet<RequestOutcome> = JoinSet::new();
    let mut outcomes = Vec::with_capacity(total);
    let mut next = 0usize;
    let mut max_in_flight = 0usize;
    let mut stopped_early = false;
    let mut panicked = 0u64;
    loop {
        while next < total && tasks.len() < concurrency {
            tasks.spawn(execute(client.clone(), shared.clone(), Instant::now()));
            next += 1;
        }
        max_in_flight = max_in_flight.max(tasks.len());
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stop, if deadline.is_some() => {
                stopped_early = true;
                break;
            }
            Some(joined) = tasks.join_next() => {
                match joined {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(_) => panicked += 1,
                }
                progress.update(outcomes.len() + panicked as usize);
            }
        }
    }
    let elapsed = start.elapsed();
    let mut failed_extra = BTreeMap::new();
    if stopped_early {
        let aborted = tasks.len();
        tasks.abort_all();
        insert_nonzero(&mut failed_extra, "aborted", aborted);
        insert_nonzero(&mut failed_extra, "not_started", total - next);
    }
    insert_nonzero(&mut failed_extra, "panic", panicked as usize);
    let end = RunEnd {
        failed_extra,
        samples: Vec::new(),
        max_in_flight,
        stopped_early,
    };
    (outcomes, elapsed, end)
}

fn insert_nonzero(map: &mut BTreeMap<String, u64>, key: &str, n: usize) {
    if n > 0 {
        map.insert(key.to_owned(), n as u64);
    }
}

/// State shared between an open loop's timetable thread, its request tasks and `run_open`.
#[derive(Debug, Default)]
struct OpenLoop {
    stop: AtomicBool,
    dispatched: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    aborts: parking_lot::Mutex<Vec<AbortHandle>>,
}

/// Decrements `in_flight` when a request task ends, however it ends.
struct InFlight(Arc<OpenLoop>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stops the timetable thread when `run_open` returns or is cancelled.
struct StopOnDrop(Arc<OpenLoop>, std::thread::Thread);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.1.unpark();
    }
}

/// Open loop: request `i` starts at `start + i / rate`, latency measured from then.
async fn run_open(
    client: &reqwest::Client,
    shared: Arc<Shared>,
    spec: &LoadSpec,
    rate: f64,
    progress: &Progress<'_>,
) -> (Vec<RequestOutcome>, Duration, RunEnd) {
    let total = spec.requests;
    let state = Arc::new(OpenLoop::default());
    let (tx, mut rx) = mpsc::unbounded_channel::<RequestOutcome>();
    let runtime = tokio::runtime::Handle::current();
    // A little head room so the first requests are not late because the thread is starting.
    let start = Instant::now() + Duration::from_millis(2);
    let timetable = {
        let state = state.clone();
        let client = client.clone();
        move || {
            for i in 0..total {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                loop {
                    if state.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let now = Instant::now();
                    if now >= at {
                        break;
                    }
                    std::thread::park_timeout(at - now);
                }
                let in_flight = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                state.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
                let guard = InFlight(state.clone());
                let tx = tx.clone();
                let request = execute(client.clone(), shared.clone(), at);
                let task = runtime.spawn(async move {
                    let _guard = guard;
                    let _ = tx.send(request.await);
                });
                state.aborts.lock().push(task.abort_handle());
                state.dispatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let thread = match std::thread::Builder::new()
        .name("loadgen-timetable".into())
        .spawn(timetable)
    {
        Ok(handle) => handle.thread().clone(),
        Err(e) => {
            let mut failed_extra = BTreeMap::new();
            insert_nonzero(&mut failed_extra, "not_started", total);
            let end = RunEnd {
                failed_extra,
                samples: vec![format!("cannot start the timetable thread: {e}")],
                max_in_flight: 0,
                stopped_early: true,
            };
            return (Vec::new(), Duration::ZERO, end);
        }
    };
    let stopper = StopOnDrop(state.clone(), thread);

    let deadline = spec.max_duration.map(|d| start + d);
    let stop = tokio::time::sleep_until(deadline.unwrap_or(start));
    tokio::pin!(stop);
    let mut outcomes = Vec::with_capacity(total);
    let mut stopped_early = false;
    loop {
        tokio::select! {
            biased;
            () = &mut stop, if deadline.is_some() => {
                stopped_early = true;
                break;
            }
            received = rx.recv() => match received {
                Some(outcome) => {
                    outcomes.push(outcome);
                    progress.update(outcomes.len());
                }
                // The thread and every task have dropped their senders: all done.
                None => break,
            }
        }
    }
    let elapsed = Instant::now().saturating_duration_since(start);
    drop(stopper);
    let dispatched = state.dispatched.load(Ordering::SeqCst);
    let mut failed_extra = BTreeMap::new();
    if stopped_early {
        for task in state.aborts.lock().drain(..) {
            task.abort();
        }
        insert_nonzero(
            &mut failed_extra,
            "aborted",
            dispatched.saturating_sub(outcomes.len()),
        );
        insert_nonzero(&mut failed_extra, "not_started", total - dispatched);
    } else {
        // Every sender is gone, so a task that sent nothing panicked.
        insert_nonzero(
            &mut failed_extra,
            "panic",
            dispatched.saturating_sub(outcomes.len()),
        );
    }
    let end = RunEnd {
        failed_extra,
        samples: Vec::new(),
        max_in_flight: state.max_in_flight.load(Ordering::Relaxed),
        stopped_early,
    };
    (outcomes, elapsed, end)
}

struct RunEnd {
    failed_extra: BTreeMap<String, u64>,
    samples: Vec<String>,
    max_in_flight: usize,
    stopped_early: bool,
}

fn summarize(
    spec: &LoadSpec,
    rate: Option<f64>,
    outcomes: Vec<RequestOutcome>,
    elapsed: Duration,
    end: RunEnd,
) -> LoadReport {
    let mut latencies: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.ok)
        .map(|o| o.latency)
        .collect();
    latencies.sort_unstable();
    let mut ttfbs: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.ok)
        .filter_map(|o| o.ttfb)
        .collect();
    ttfbs.sort_unstable();
    let mut lags: Vec<Duration> = outcomes.iter().map(|o| o.send_lag).collect();
    lags.sort_unstable();

    let mut failed_by_class = end.failed_extra;
    let mut samples = end.samples;
    for o in outcomes.iter().filter(|o| !o.ok) {
        let class = o.class.as_deref().unwrap_or("unknown");
        *failed_by_class.entry(class.to_owned()).or_default() += 1;
        if samples.len() < 5 {
            let sample = format!("{class}: {}", o.detail.as_deref().unwrap_or("(no detail)"));
            if !samples.contains(&sample) {
                samples.push(sample);
            }
        }
    }
    let succeeded = latencies.len();
    let mean = if latencies.is_empty() {
        Duration::ZERO
    } else {
        latencies.iter().sum::<Duration>() / latencies.len() as u32
    };
    let some_if = |cond: bool, d: Duration| cond.then_some(d);
    let have_ttfb = spec.stream && !ttfbs.is_empty();
    let open = rate.is_some() && !lags.is_empty();
    LoadReport {
        mode: if rate.is_some() { "open" } else { "closed" },
        stream: spec.stream,
        rate,
        concurrency: rate.is_none().then_some(spec.concurrency.max(1)),
        requests: spec.requests,
        completed: outcomes.len(),
        succeeded,
        failed: spec.requests.saturating_sub(succeeded),
        failed_by_class,
        failure_samples: samples,
        latency_p50: percentile(&latencies, 50.0),
        latency_p90: percentile(&latencies, 90.0),
        latency_p99: percentile(&latencies, 99.0),
        latency_max: latencies.last().copied().unwrap_or_default(),
        latency_mean: mean,
        ttfb_p50: some_if(have_ttfb, percentile(&ttfbs, 50.0)),
        ttfb_p99: some_if(have_ttfb, percentile(&ttfbs, 99.0)),
        send_lag_p50: some_if(open, percentile(&lags, 50.0)),
        send_lag_p99: some_if(open, percentile(&lags, 99.0)),
        elapsed,
        achieved_rps: if elapsed.is_zero() {
            0.0
        } else {
            round3(succeeded as f64 / elapsed.as_secs_f64())
        },
        max_in_flight: end.max_in_flight,
        stopped_early: end.stopped_early,
        outcomes,
    }
}

/// One request, from send to the end of its body (or its failure).
async fn execute(
    client: reqwest::Client,
    shared: Arc<Shared>,
    scheduled: Instant,
) -> RequestOutcome {
    let sent = Instant::now();
    let mut out = RequestOutcome {
        ok: false,
        class: None,
        status: None,
        latency: Duration::ZERO,
        ttfb: None,
        text_len: 0,
        send_lag: sent.saturating_duration_since(scheduled),
        detail: None,
    };
    let timer = tokio::time::sleep_until(sent + shared.timeout);
    tokio::pin!(timer);
    let timeout_detail = || format!("no complete answer within {:?}", shared.timeout);

    let request = client
        .post(shared.url.clone())
        .headers(shared.headers.clone())
        .body(shared.body.clone())
        .send();
    let sent_result = tokio::select! {
        biased;
        r = request => r,
        () = &mut timer => return fail(out, scheduled, "timeout", timeout_detail()),
    };
    let mut response = match sent_result {
        Ok(r) => r,
        Err(e) => {
            let class = if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            };
            return fail(out, scheduled, class, error_chain(&e));
        }
    };
    let status = response.status();
    out.status = Some(status.as_u16());

    if !status.is_success() || !shared.stream {
        let body = tokio::select! {
            biased;
            r = response.bytes() => r,
            () = &mut timer => return fail(out, scheduled, "timeout", timeout_detail()),
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                let class = if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                return fail(out, scheduled, class, error_chain(&e));
            }
        };
        if !status.is_success() {
            let (class, detail) = classify_http_error(status.as_u16(), &body);
            return fail(out, scheduled, &class, detail);
        }
        return match parse_completion(&body) {
            Ok(len) => {
                out.ok = true;
                out.text_len = len;
                out.latency = scheduled.elapsed();
                out
            }
            Err((class, detail)) => fail(out, scheduled, &class, detail),
        };
    }

    let mut scanner = StreamScanner::new();
    loop {
        let chunk = tokio::select! {
            biased;
            c = response.chunk() => c,
            () = &mut timer => {
                let class = if scanner.content_seen() { "stream_interrupted" } else { "timeout" };
                out.text_len = scanner.text_len();
                return fail(out, scheduled, class, timeout_detail());
            }
        };
        match chunk {
            Ok(Some(bytes)) => {
                if scanner.push(&bytes) {
                    out.ttfb = Some(scheduled.elapsed());
                }
            }
            Ok(None) => scanner.finish(),
            Err(e) => scanner.fail_read(&error_chain(&e), e.is_timeout()),
        }
        match scanner.state() {
            ScanState::Open => {}
            ScanState::Done => {
                out.latency = scheduled.elapsed();
                out.ok = true;
                out.text_len = scanner.text_len();
                // Read to the end of the body so the connection goes back to the pool; the
                // latency is already taken.
                loop {
                    tokio::select! {
                        biased;
                        c = response.chunk() => match c {
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break,
                        },
                        () = &mut timer => break,
                    }
                }
                return out;
            }
            ScanState::Failed { class, detail } => {
                let (class, detail) = (class.clone(), detail.clone());
                out.text_len = scanner.text_len();
                return fail(out, scheduled, &class, detail);
            }
        }
    }
}

fn fail(
    mut out: RequestOutcome,
    scheduled: Instant,
    class: &str,
    detail: String,
) -> RequestOutcome {
    out.ok = false;
    out.latency = scheduled.elapsed();
    out.class = Some(class.to_owned());
    out.detail = Some(detail);
    out
}

/// An error and its sources, joined with ": " (reqwest's `Display` shows only the top level).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The error fields of an OpenAI (`{"error":{..}}`) or Anthropic
/// (`{"type":"error","error":{..}}`) error object.
fn error_signal_parts(error: &Value) -> (Option<&str>, Option<String>, &str) {
    match error {
        Value::Object(e) => {
            let error_type = e.get("type").and_then(Value::as_str);
            let code = match e.get("code") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let message = e.get("message").and_then(Value::as_str).unwrap_or("");
            (error_type, code, message)
        }
        Value::String(message) => (None, None, message),
        _ => (None, None, ""),
    }
}

/// Classifies a non-2xx answer from its status and error body; returns (class, detail).
pub(crate) fn classify_http_error(status: u16, body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let (error_type, code, message) = error.map_or((None, None, ""), error_signal_parts);
    let class = classify(&ErrorSignal {
        status: Some(status),
        error_type,
        code: code.as_deref(),
        message,
    });
    let shown = if message.is_empty() {
        let text = String::from_utf8_lossy(body);
        truncate(&text, 200).to_owned()
    } else {
        truncate(message, 200).to_owned()
    };
    (
        class.metric_label().to_owned(),
        format!("HTTP {status}: {shown}"),
    )
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Deserialize)]
struct CompletionProbe<'a> {
    #[serde(default, borrow)]
    choices: Vec<PlainChoice<'a>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct PlainChoice<'a> {
    #[serde(default, borrow)]
    message: Option<PlainMessage<'a>>,
}

#[derive(Deserialize)]
struct PlainMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

/// A 2xx non-streaming body: the content length of the first choice, or (class, detail).
pub(crate) fn parse_completion(body: &[u8]) -> Result<usize, (String, String)> {
    let probe: CompletionProbe<'_> = serde_json::from_slice(body).map_err(|e| {
        (
            "transport".to_owned(),
            format!("malformed completion body ({} bytes): {e}", body.len()),
        )
    })?;
    if let Some(error) = probe.error.as_ref().filter(|e| !e.is_null()) {
        let (error_type, code, message) = error_signal_parts(error);
        let class = classify(&ErrorSignal {
            status: None,
            error_type,
            code: code.as_deref(),
            message,
        });
        return Err((
            class.metric_label().to_owned(),
            format!("error object in a 2xx body: {}", truncate(message, 200)),
        ));
    }
    let Some(first) = probe.choices.first() else {
        return Err((
            "transport".to_owned(),
            "completion body without choices".to_owned(),
        ));
    };
    Ok(first
        .message
        .as_ref()
        .and_then(|m| m.content.as_deref())
        .map_or(0, str::len))
}

#[derive(Deserialize)]
struct ChunkProbe<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

/// Where a scanned stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanState {
    /// Still reading.
    Open,
    /// `data: [DONE]` arrived with no error before it.
    Done,
    /// The stream failed; nothing more is read.
    Failed { class: String, detail: String },
}

/// Tracks one SSE answer: first content, `[DONE]`, in-band errors, cuts.
#[derive(Debug)]
pub(crate) struct StreamScanner {
    parser: SseParser,
    content: bool,
    text_len: usize,
    state: ScanState,
}

impl StreamScanner {
    pub(crate) fn new() -> Self {
        StreamScanner {
            parser: SseParser::new(),
            content: false,
            text_len: 0,
            state: ScanState::Open,
        }
    }

    pub(crate) fn state(&self) -> &ScanState {
        &self.state
    }

    pub(crate) fn content_seen(&self) -> bool {
        self.content
    }

    pub(crate) fn text_len(&self) -> usize {
        self.text_len
    }

    /// Feeds received bytes. Returns `true` if the first content arrived in them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        if self.state != ScanState::Open {
            return false;
        }
        let had_content = self.content;
        self.parser.push(bytes);
        while self.state == ScanState::Open {
            let Some(item) = self.parser.next_item() else {
                break;
            };
            self.item(item);
        }
        !had_content && self.content
    }

    /// The body ended.
    pub(crate) fn finish(&mut self) {
        while self.state == ScanState::Open {
            let Some(item) = self.parser.finish() else {
                break;
            };
            self.item(item);
        }
        if self.state == ScanState::Open {
            self.state = if self.content {
                ScanState::Failed {
                    class: "stream_interrupted".to_owned(),
                    detail: "stream ended after content without data: [DONE]".to_owned(),
                }
            } else {
                ScanState::Failed {
                    class: "transport".to_owned(),
                    detail: "stream ended before any content or data: [DONE]".to_owned(),
                }
            };
        }
    }

    /// Reading the body failed.
    pub(crate) fn fail_read(&mut self, detail: &str, timed_out: bool) {
        if self.state != ScanState::Open {
            return;
        }
        let class = if self.content {
            "stream_interrupted"
        } else if timed_out {
            "timeout"
        } else {
            "transport"
        };
        self.state = ScanState::Failed {
            class: class.to_owned(),
            detail: format!("reading the stream failed: {detail}"),
        };
    }

    fn item(&mut self, item: Result<SseItem, sluice_core::SseError>) {
        match item {
            Ok(SseItem::Event(event)) => self.event(&event.data),
            Ok(SseItem::Comment(_)) => {}
            Err(e) => self.fail_malformed(format!("malformed SSE line: {e}")),
        }
    }

    fn fail_malformed(&mut self, detail: String) {
        let class = if self.content {
            "stream_interrupted"
        } else {
            "transport"
        };
        self.state = ScanState::Failed {
            class: class.to_owned(),
            detail,
        };
    }

    fn event(&mut self, data: &str) {
        let data = data.trim();
        if data == "[DONE]" {
            self.state = ScanState::Done;
        } else if self.content {
            self.committed_event(data);
        } else {
            self.first_events(data);
        }
    }

    /// Before any content: parse the event properly.
    fn first_events(&mut self, data: &str) {
        let probe: ChunkProbe<'_> = match serde_json::from_str(data) {
            Ok(p) => p,
            Err(e) => {
                return self.fail_malformed(format!(
                    "malformed stream event: {e}: {}",
                    truncate(data, 120)
                ));
            }
        };
        if let Some(error) = probe.error.as_ref().filter(|e| !e.is_null()) {
            let (error_type, code, message) = error_signal_parts(error);
            let class = classify(&ErrorSignal {
                status: None,
                error_type,
                code: code.as_deref(),
                message,
            });
            self.state = ScanState::Failed {
                class: class.metric_label().to_owned(),
                detail: format!(
                    "in-band error event before any content: {}",
                    truncate(message, 200)
                ),
            };
            return;
        }
        for choice in &probe.choices {
            if let Some(content) = choice.delta.as_ref().and_then(|d| d.content.as_deref())
                && !content.is_empty()
            {
                self.content = true;
                self.text_len += content.len();
            }
        }
    }

    /// After content started: only look for an error key and count content bytes.
    fn committed_event(&mut self, data: &str) {
        if data.contains("\"error\"")
            && let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(data)
            && let Some(error) = obj.get("error").filter(|e| !e.is_null())
        {
            let (_, _, message) = error_signal_parts(error);
            self.state = ScanState::Failed {
                class: "stream_interrupted".to_owned(),
                detail: format!(
                    "in-band error event after content: {}",
                    truncate(message, 200)
                ),
            };
            return;
        }
        self.text_len += content_string_len(data);
    }
}

/// Sum of the raw (still JSON-escaped) lengths of every `"content": "<string>"` in `data`.
pub(crate) fn content_string_len(data: &str) -> usize {
    const KEY: &str = "\"content\"";
    let mut total = 0;
    let mut rest = data;
    while let Some(i) = rest.find(KEY) {
        rest = &rest[i + KEY.len()..];
        let after_colon = match rest.trim_start().strip_prefix(':') {
            Some(r) => r.trim_start(),
            None => continue,
        };
        let Some(string) = after_colon.strip_prefix('"') else {
            rest = after_colon;
            continue;
        };
        let bytes = string.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b'"' => break,
                _ => j += 1,
            }
        }
        let j = j.min(bytes.len());
        total += j;
        rest = string.get(j..).unwrap_or("");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_mock::{MockConfig, MockServer, mock_text};

    fn ms_d(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentile_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        let one = [ms_d(7)];
        assert_eq!(percentile(&one, 0.0), ms_d(7));
        assert_eq!(percentile(&one, 99.0), ms_d(7));
        let v: Vec<Duration> = (1..=100).map(ms_d).collect();
        assert_eq!(percentile(&v, 0.0), ms_d(1));
        assert_eq!(percentile(&v, 50.0), ms_d(50));
        assert_eq!(percentile(&v, 90.0), ms_d(90));
        assert_eq!(percentile(&v, 99.0), ms_d(99));
        assert_eq!(percentile(&v, 99.5), ms_d(100));
        assert_eq!(percentile(&v, 100.0), ms_d(100));
        assert_eq!(percentile(&v, 150.0), ms_d(100));
        let ten: Vec<Duration> = (1..=10).map(ms_d).collect();
        // 99% of 10 values → rank ceil(9.9) = 10.
        assert_eq!(percentile(&ten, 99.0), ms_d(10));
        assert_eq!(percentile(&ten, 50.0), ms_d(5));
        assert_eq!(percentile(&ten, 51.0), ms_d(6));
    }

    #[test]
    fn ms_rounds_to_three_decimals() {
        assert_eq!(ms(Duration::from_nanos(1_234_567)), 1.235);
        assert_eq!(ms(Duration::from_micros(250)), 0.25);
        assert_eq!(ms(Duration::ZERO), 0.0);
    }

    const PREAMBLE: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";

    fn content_event(text: &str) -> String {
        format!(
            "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    }

    const FINISH: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn scan_all(input: &str, chunk: usize) -> (StreamScanner, Option<usize>) {
        let mut s = StreamScanner::new();
        let mut first = None;
        for (i, piece) in input.as_bytes().chunks(chunk).enumerate() {
            if s.push(piece) {
                assert!(first.is_none(), "first content reported twice");
                first = Some(i);
            }
        }
        if *s.state() == ScanState::Open {
            s.finish();
        }
        (s, first)
    }

    #[test]
    fn scanner_complete_stream() {
        let input = format!(
            "{PREAMBLE}: keep-alive\n\n{}{}{FINISH}{DONE}",
            content_event("the0 "),
            content_event("quick1 ")
        );
        for chunk in [1, 3, 17, input.len()] {
            let (s, first) = scan_all(&input, chunk);
            assert_eq!(*s.state(), ScanState::Done, "chunk {chunk}");
            assert_eq!(s.text_len(), "the0 quick1 ".len());
            assert!(first.is_some());
        }
        // The first content is seen in the push that completes its event, not earlier.
        let mut s = StreamScanner::new();
        assert!(!s.push(PREAMBLE.as_bytes()));
        let ev = content_event("x");
        let (a, b) = ev.split_at(ev.len() - 1);
        assert!(!s.push(a.as_bytes()));
        assert!(s.push(b.as_bytes()));
        assert!(!s.push(content_event("y").as_bytes()));
        assert!(!s.push(DONE.as_bytes()));
        assert_eq!(*s.state(), ScanState::Done);
        assert_eq!(s.text_len(), 2);
    }

    #[test]
    fn scanner_empty_content_is_not_content() {
        let (s, first) = scan_all(&format!("{PREAMBLE}{FINISH}{DONE}"), 5);
        assert_eq!(*s.state(), ScanState::Done);
        assert_eq!(first, None);
        assert!(!s.content_seen());
    }

    #[test]
    fn scanner_cut_after_content_is_interrupted() {
        let (s, _) = scan_all(&format!("{PREAMBLE}{}", content_event("a")), 4);
        assert!(
            matches!(s.state(), ScanState::Failed { class, .. } if class == "stream_interrupted")
        );
        // Cut in the middle of an event after content.
        let input = format!("{PREAMBLE}{}data: {{\"choi", content_event("a"));
        let (s, _) = scan_all(&input, 4);
        assert!(
            matches!(s.state(), ScanState::Failed { class, .. } if class == "stream_interrupted")
        );
    }

    #[test]
    fn scanner_cut_before_content_is_transport() {
        let (s, _) = scan_all(PREAMBLE, 7);
        assert!(matches!(s.state(), ScanState::Failed { class, .. } if class == "transport"));
        let (s, _) = scan_all("", 1);
        assert!(matches!(s.state(), ScanState::Failed { class, .. } if class == "transport"));
    }

    #[test]
    fn scanner_inband_errors() {
        let err = "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\",\"param\":null,\"code\":null}}\n\n";
        // Before content: classified like any provider error.
        let (s, first) = scan_all(&format!("{PREAMBLE}{err}{DONE}"), 9);
        assert_eq!(first, None);
        assert!(
            matches!(s.state(), ScanState::Failed { class, .. } if class == "overloaded"),
            "{:?}",
            s.state()
        );
        let server = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
        let (s, _) = scan_all(&format!("{server}{DONE}"), 1000);
        assert!(matches!(s.state(), ScanState::Failed { class, .. } if class == "server_error"));
        // After content: the stream is interrupted, even if [DONE] follows.
        let (s, first) = scan_all(&format!("{PREAMBLE}{}{err}{DONE}", content_event("a")), 11);
        assert!(first.is_some());
        assert!(
            matches!(s.state(), ScanState::Failed { class, detail } if class == "stream_interrupted" && detail.contains("Overloaded"))
        );
        // Content that merely mentions "error" is not an error event.
        let (s, _) = scan_all(
            &format!(
                "{}{}{DONE}",
                content_event("a"),
                content_event("the \\\"error\\\": word")
            ),
            1000,
        );
        assert_eq!(*s.state(), ScanState::Done);
    }

    #[test]
    fn scanner_malformed_first_event_is_transport() {
        let (s, _) = scan_all("data: {not json\n\ndata: [DONE]\n\n", 1000);
        assert!(matches!(s.state(), ScanState::Failed { class, .. } if class == "transport"));
    }

    #[test]
    fn content_lengths() {
        assert_eq!(content_string_len(r#"{"delta":{"content":"abc"}}"#), 3);
        assert_eq!(content_string_len(r#"{"delta":{"content" : "a\"b"}}"#), 4);
        assert_eq!(content_string_len(r#"{"delta":{"content":null}}"#), 0);
        assert_eq!(content_string_len(r#"{"role":"content","x":1}"#), 0);
        assert_eq!(
            content_string_len(r#"[{"content":"ab"},{"content":"cde"}]"#),
            5
        );
        assert_eq!(content_string_len(r#"{"content":"unterminated\"#), 13);
    }

    #[test]
    fn http_errors_are_classified() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(classify_http_error(429, body).0, "rate_limited");
        let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert_eq!(classify_http_error(429, quota).0, "quota_exhausted");
        let overloaded = br#"{"error":{"message":"The engine is currently overloaded","type":"server_error","param":null,"code":null}}"#;
        let (class, detail) = classify_http_error(503, overloaded);
        assert_eq!(class, "overloaded");
        assert!(detail.starts_with("HTTP 503: The engine"), "{detail}");
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(classify_http_error(529, anthropic).0, "overloaded");
        let context = br#"{"error":{"message":"This model's maximum context length is 10 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(classify_http_error(400, context).0, "context_length");
        assert_eq!(classify_http_error(401, b"").0, "auth");
        assert_eq!(
            classify_http_error(500, b"<html>oops</html>").0,
            "server_error"
        );
        assert_eq!(
            classify_http_error(500, b"<html>oops</html>").1,
            "HTTP 500: <html>oops</html>"
        );
        assert_eq!(classify_http_error(504, b"{}").0, "timeout");
        let numeric = br#"{"error":{"message":"x","code":429}}"#;
        assert_eq!(classify_http_error(429, numeric).0, "rate_limited");
    }

    #[test]
    fn completion_bodies() {
        let ok = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}]}"#;
        assert_eq!(parse_completion(ok), Ok(8));
        let truncated = &ok[..ok.len() / 2];
        assert_eq!(parse_completion(truncated).unwrap_err().0, "transport");
        assert_eq!(parse_completion(b"{}").unwrap_err().0, "transport");
        let err = br#"{"error":{"message":"m","type":"server_error"}}"#;
        assert_eq!(parse_completion(err).unwrap_err().0, "server_error");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_streams_against_the_mock() {
        let mock = MockServer::start(MockConfig::default())
            .await
            .expect("mock");
        let client = http_client(16);
        let spec = LoadSpec {
            base_url: mock.base_url(),
            requests: 200,
            concurrency: 8,
            stream: true,
            ..LoadSpec::default()
        };
        let calls = parking_lot::Mutex::new(Vec::new());
        let progress = |done: usize, total: usize| calls.lock().push((done, total));
        let report = run_load(&client, &spec, Some(&progress)).await;
        assert_eq!(report.succeeded, 200, "{:?}", report.failure_samples);
        assert_eq!(report.failed, 0);
        assert!(report.failed_by_class.is_empty());
        assert_eq!(report.completed, 200);
        assert_eq!(report.mode, "closed");
        assert!(report.max_in_flight <= 8);
        assert!(report.ttfb_p50.is_some());
        assert!(report.latency_p50 <= report.latency_p99);
        assert!(report.latency_p99 <= report.latency_max);
        let expected = mock_text(MockConfig::default().chunks).len();
        for o in &report.outcomes {
            assert!(o.ok);
            assert_eq!(o.status, Some(200));
            assert_eq!(o.text_len, expected);
            assert!(o.ttfb.is_some_and(|t| t <= o.latency));
        }
        assert_eq!(calls.lock().last(), Some(&(200, 200)));
        assert_eq!(mock.stats().ok, 200);
        let json = serde_json::to_value(&report).expect("json");
        assert!(json.get("latency_p99_ms").is_some_and(Value::is_f64));
        assert!(json.get("outcomes").is_none());
        mock.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_plain_against_the_mock() {
        let mock = MockServer::start(MockConfig::default())
            .await
            .expect("mock");
        let client = http_client(16);
        let spec = LoadSpec {
            base_url: mock.base_url(),
            requests: 100,
            rate: Some(1000.0),
            ..LoadSpec::default()
        };
        let report = run_load(&client, &spec, None).await;
        assert_eq!(report.succeeded, 100, "{:?}", report.failure_samples);
        assert_eq!(report.mode, "open");
        assert!(report.send_lag_p99.is_some());
        assert!(report.ttfb_p50.is_none());
        // 100 requests at 1000/s take at least 99 ms of timetable.
        assert!(
            report.elapsed >= Duration::from_millis(99),
            "{:?}",
            report.elapsed
        );
        let expected = mock_text(MockConfig::default().chunks).len();
        assert!(report.outcomes.iter().all(|o| o.text_len == expected));
        mock.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripted_503s_are_classified_overloaded() {
        let mock = MockServer::start(MockConfig::default())
            .await
            .expect("mock");
        let client = http_client(16);
        for stream in [false, true] {
            let spec = LoadSpec {
                base_url: mock.base_url(),
                requests: 50,
                concurrency: 4,
                stream,
                headers: vec![
                    ("x-sluice-mock-fault".into(), "503*1000".into()),
                    (
                        "x-sluice-mock-scenario".into(),
                        format!("loadgen-503-{stream}"),
                    ),
                ],
                ..LoadSpec::default()
            };
            let report = run_load(&client, &spec, None).await;
            assert_eq!(report.succeeded, 0);
            assert_eq!(report.failed, 50);
            assert_eq!(
                report.failed_by_class,
                BTreeMap::from([("overloaded".to_owned(), 50)])
            );
            assert!(report.outcomes.iter().all(|o| o.status == Some(503)));
            assert!(!report.failure_samples.is_empty());
        }
        mock.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_faults_are_classified() {
        let mock = MockServer::start(MockConfig::default())
            .await
            .expect("mock");
        let client = http_client(4);
        let run = |fault: &str, stream: bool| {
            let spec = LoadSpec {
                base_url: mock.base_url(),
                requests: 1,
                stream,
                timeout: Duration::from_secs(2),
                headers: vec![
                    ("x-sluice-mock-fault".into(), fault.into()),
                    ("x-sluice-mock-scenario".into(), format!("{fault}-{stream}")),
                ],
                ..LoadSpec::default()
            };
            let client = client.clone();
            async move { run_load(&client, &spec, None).await }
        };
        let class = |r: &LoadReport| r.outcomes[0].class.clone();
        assert_eq!(
            class(&run("cut:2", true).await).as_deref(),
            Some("stream_interrupted")
        );
        assert_eq!(
            class(&run("inband_after:2", true).await).as_deref(),
            Some("stream_interrupted")
        );
        assert_eq!(
            class(&run("inband:overloaded_error", true).await).as_deref(),
            Some("overloaded")
        );
        assert_eq!(
            class(&run("reset", true).await).as_deref(),
            Some("transport")
        );
        assert_eq!(
            class(&run("reset", false).await).as_deref(),
            Some("transport")
        );
        assert_eq!(
            class(&run("cut:2", false).await).as_deref(),
            Some("transport")
        );
        assert_eq!(
            class(&run("429", false).await).as_deref(),
            Some("rate_limited")
        );
        let stalled = run("stall:1", true).await;
        assert_eq!(class(&stalled).as_deref(), Some("stream_interrupted"));
        assert!(stalled.outcomes[0].latency >= Duration::from_secs(2));
        mock.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_duration_stops_the_run() {
        let mock = MockServer::start(MockConfig::default())
            .await
            .expect("mock");
        let client = http_client(4);
        let spec = LoadSpec {
            base_url: mock.base_url(),
            requests: 1000,
            rate: Some(100.0),
            max_duration: Some(Duration::from_millis(200)),
            ..LoadSpec::default()
        };
        let report = run_load(&client, &spec, None).await;
        assert!(report.stopped_early);
        assert!(
            report.succeeded > 5 && report.succeeded < 100,
            "{}",
            report.succeeded
        );
        assert_eq!(report.failed, 1000 - report.succeeded);
        assert!(
            report
                .failed_by_class
                .get("not_started")
                .copied()
                .unwrap_or(0)
                > 800
        );
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn invalid_spec_fails_every_request() {
        let client = http_client(1);
        let spec = LoadSpec {
            base_url: "not a url".into(),
            requests: 3,
            ..LoadSpec::default()
        };
        let report = run_load(&client, &spec, None).await;
        assert_eq!(report.failed, 3);
        assert_eq!(report.failed_by_class.get("invalid_spec"), Some(&3));
    }
}
