//! [`MockServer`]: the accept loop, one hyper HTTP/1.1 connection task per client, and the
//! request handlers.
//!
//! Why not `axum::serve`: the `reset` fault must close the TCP connection *before any response
//! byte*, and a handler cannot do that through a router — hyper writes a response head for
//! whatever the service returns. So the mock drives each connection itself: every connection
//! task owns a [`Notify`]; the handler of a `reset` request notifies it and then never
//! completes, and the connection task, which selects on that notification, takes the socket back
//! from hyper, sets `SO_LINGER` to zero and drops it, so the client sees a TCP RST while waiting
//! for the response head.
//!
//! Faults after the head are expressed through the response body: a body stream that returns
//! an error makes hyper abort the connection (`cut`: the client sees an incomplete body), one
//! that stays pending keeps the connection open and silent (`stall`). Before ending a body with
//! an error the stream yields once, so hyper flushes what was already produced.
//!
//! Shutdown is graceful: the accept loop stops, idle keep-alive connections close, answers in
//! progress finish (stalled ones end at once), and whatever is left after a grace period is
//! aborted. Dropping the server aborts everything immediately.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::anthropic::{self, RATE_LIMIT_REQUESTS, VERSION_HEADER};
use crate::config::MockConfig;
use crate::dialect::{Dialect, Render};
use crate::limits::{Limits, Rejection, Snapshot, floor_u64, go_duration};
use crate::script::{DEFAULT_TOOL, Script, SplitMix64, Step, random_step};
use crate::stats::{InFlight, MockStats, Outcome, Stats};
use crate::wire::{ChatRequest, ErrorContext, Invalid, Kind, openai_error};

/// Request header carrying a fault script.
const FAULT_HEADER: &str = "x-sluice-mock-fault";
/// Request header naming a scenario: scripts are counted per (scenario, script).
const SCENARIO_HEADER: &str = "x-sluice-mock-scenario";
/// Largest accepted request body.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// How long a graceful shutdown waits for answers in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("anthropic-ratelimit-requests-limit");
static RATELIMIT_REMAINING: HeaderName =
    HeaderName::from_static("anthropic-ratelimit-requests-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("anthropic-ratelimit-requests-reset");

/// `--rpm` / `--tpm` headers per axis (requests, tokens): (limit, remaining, reset).
static OPENAI_LIMIT_HEADERS: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];
static ANTHROPIC_LIMIT_HEADERS: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ],
];

/// State shared by every connection of one server.
struct Shared {
    config: MockConfig,
    random_faults: bool,
    /// The `--rpm` / `--tpm` buckets, shared by both endpoints; `None`: unlimited.
    limits: Option<Limits>,
    stats: Arc<Stats>,
    rng: SplitMix64,
    /// Next step index per "scenario\nscript" (header values cannot contain a newline).
    scenarios: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn next_step_index(&self, scenario: &str, script: &str) -> u64 {
        let key = format!("{scenario}\n{script}");
        let mut map = self.scenarios.lock();
        let counter = map.entry(key).or_insert(0);
        let k = *counter;
        *counter += 1;
        k
    }

    fn reset(&self) {
        self.scenarios.lock().clear();
        self.stats.reset();
        self.rng.reseed(self.config.seed);
        if let Some(limits) = &self.limits {
            limits.refill_all();
        }
    }

    async fn wait_shutdown(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone, which is a shutdown too.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// A running mock provider. See the crate docs for endpoints and fault scripts.
///
/// Dropping it aborts the server task and every connection; [`MockServer::shutdown`] stops it
/// gracefully.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds `127.0.0.1:0` and starts serving. Fails if the config does not
    /// [validate](MockConfig::validate) (`InvalidInput`) or the bind fails.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        MockServer::start_on(listener, config).await
    }

    /// Starts serving on an already bound listener (e.g. a fixed port for `sluice mock`).
    pub async fn start_on(listener: TcpListener, config: MockConfig) -> io::Result<MockServer> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let addr = listener.local_addr()?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            random_faults: config.has_random_faults(),
            limits: Limits::new(config.rpm, config.tpm),
            rng: SplitMix64::new(config.seed),
            config,
            stats: Arc::new(Stats::default()),
            scenarios: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            shutdown,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        info!(%addr, "sluice-mock listening");
        Ok(MockServer {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, ready to use as an OpenAI `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A snapshot of the counters (the same as `GET /stats`).
    pub fn stats(&self) -> MockStats {
        self.shared.stats.snapshot()
    }

    /// Stops accepting, lets answers in progress finish (stalled ones end at once, anything
    /// still running after 5 seconds is aborted) and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let stop = shared.clone();
    let stopped = stop.wait_shutdown();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "sluice-mock accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        debug!("sluice-mock shutdown grace period over; aborting connections");
    }
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let abort = Arc::new(Notify::new());
    let service = {
        let shared = shared.clone();
        let abort = abort.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let abort = abort.clone();
            async move { Ok::<_, Infallible>(handle(shared, abort, req).await) }
        })
    };
    let mut conn = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    let stopped = shared.wait_shutdown();
    tokio::pin!(stopped);
    let mut draining = false;
    loop {
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    debug!(error = %e, "sluice-mock connection ended with an error");
                }
                return;
            }
            () = abort.notified() => {
                let parts = conn.into_parts();
                if let Err(e) = parts.io.inner().set_zero_linger() {
                    debug!(error = %e, "could not set SO_LINGER");
                }
                return;
            }
            () = &mut stopped, if !draining => {
                draining = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    }
}

async fn handle(shared: Arc<Shared>, abort: Arc<Notify>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => {
            complete(shared, abort, req, Dialect::OpenAi).await
        }
        (&Method::POST, "/v1/messages") => complete(shared, abort, req, Dialect::Anthropic).await,
        (&Method::GET, "/v1/models") => {
            let body = serde_json::json!({
                "object": "list",
                "data": [{
                    "id": shared.config.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "sluice-mock",
                }],
            });
            json_response(StatusCode::OK, Bytes::from(body.to_string()))
        }
        (&Method::GET, "/stats") => stats_response(&shared),
        (&Method::POST, "/stats/reset") => {
            shared.reset();
            stats_response(&shared)
        }
        (method, path) => {
            let message = format!("Invalid URL ({method} {path})");
            let body = openai_error(&message, "invalid_request_error", None, None);
            json_response(StatusCode::NOT_FOUND, body)
        }
    }
}

fn stats_response(shared: &Shared) -> Response<Body> {
    let body = serde_json::to_vec(&shared.stats.snapshot()).unwrap_or_default();
    json_response(StatusCode::OK, Bytes::from(body))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn with_request_id(mut resp: Response<Body>, dialect: Dialect, n: u64) -> Response<Body> {
    if let Ok(v) = HeaderValue::try_from(format!("req_mock_{n}")) {
        resp.headers_mut()
            .insert(dialect.request_id_header().clone(), v);
    }
    resp
}

/// Formats a duration as milliseconds: an integer when whole, else with 3 decimals.
fn format_ms(d: Duration) -> String {
    if d.subsec_nanos() % 1_000_000 == 0 {
        d.as_millis().to_string()
    } else {
        format!("{:.3}", d.as_secs_f64() * 1000.0)
    }
}

/// Answers a request that never reaches the fault engine (bad body, bad script, ...).
fn reject(
    shared: &Shared,
    guard: InFlight,
    dialect: Dialect,
    n: u64,
    outcome: Outcome,
    status: StatusCode,
    body: Bytes,
) -> Response<Body> {
    let resp = json_response(status, body);
    reject_response(shared, guard, dialect, n, outcome, resp)
}

/// [`reject`] with a ready response.
fn reject_response(
    shared: &Shared,
    mut guard: InFlight,
    dialect: Dialect,
    n: u64,
    outcome: Outcome,
    resp: Response<Body>,
) -> Response<Body> {
    guard.finish();
    shared.stats.record(outcome);
    with_request_id(resp, dialect, n)
}

/// `POST /v1/chat/completions` and `POST /v1/messages`: validation, the fault step and the
/// stats are shared; only the wire rendering depends on the dialect.
async fn complete(
    shared: Arc<Shared>,
    abort: Arc<Notify>,
    req: Request<Incoming>,
    dialect: Dialect,
) -> Response<Body> {
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    shared.stats.request(dialect.api());
    let guard = InFlight::new(shared.stats.clone());
    let (parts, body) = req.into_parts();
    let invalid = |message: String, param: Option<&str>| Invalid {
        message,
        param: param.map(str::to_owned),
    };

    let declared_len = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > MAX_BODY as u64) {
        let message = format!("Request body too large: the limit is {MAX_BODY} bytes.");
        let body = dialect.too_large_body(&message);
        let status = StatusCode::PAYLOAD_TOO_LARGE;
        return reject(
            &shared,
            guard,
            dialect,
            n,
            Outcome::InvalidRequest,
            status,
            body,
        );
    }
    let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            let body = dialect.invalid_body(&invalid(
                format!("Could not read the request body: {e}"),
                None,
            ));
            let status = StatusCode::BAD_REQUEST;
            return reject(
                &shared,
                guard,
                dialect,
                n,
                Outcome::InvalidRequest,
                status,
                body,
            );
        }
    };

    if dialect == Dialect::Anthropic && !parts.headers.contains_key(VERSION_HEADER) {
        let body = dialect.invalid_body(&anthropic::missing_version());
        let status = StatusCode::BAD_REQUEST;
        return reject(
            &shared,
            guard,
            dialect,
            n,
            Outcome::InvalidRequest,
            status,
            body,
        );
    }

    let script = match parts.headers.get(FAULT_HEADER) {
        None => None,
        Some(value) => {
            let parsed = value
                .to_str()
                .map_err(|_| "the header is not valid ASCII".to_owned())
                .and_then(|text| Script::parse(text).map(|s| (text, s)));
            match parsed {
                Ok(script) => Some(script),
                Err(why) => {
                    let message = format!("Invalid {FAULT_HEADER} script: {why}");
                    let body = dialect.invalid_body(&invalid(message, Some(FAULT_HEADER)));
                    let status = StatusCode::BAD_REQUEST;
                    return reject(&shared, guard, dialect, n, Outcome::BadScript, status, body);
                }
            }
        }
    };

    let request = match dialect.parse_request(&body) {
        Ok(request) => request,
        Err(why) => {
            let body = dialect.invalid_body(&why);
            let status = StatusCode::BAD_REQUEST;
            return reject(
                &shared,
                guard,
                dialect,
                n,
                Outcome::InvalidRequest,
                status,
                body,
            );
        }
    };

    // Limits come before the fault draw, as at a real provider; a scripted request bypasses
    // them (neither checked nor debited) so scripts stay deterministic, but still reports them.
    let limits = match (&shared.limits, &script) {
        (None, _) => None,
        (Some(limits), Some(_)) => Some(limits.peek()),
        (Some(limits), None) => {
            let cost =
                request.prompt_tokens + request.max_tokens.unwrap_or(shared.config.chunks as u64);
            match limits.admit(cost) {
                Ok(snapshot) => {
                    shared.stats.admitted(cost);
                    Some(snapshot)
                }
                Err(rejection) => {
                    let model = request
                        .model
                        .as_deref()
                        .unwrap_or(&shared.config.model_name);
                    let mut resp = limit_response(dialect, &rejection, model);
                    if !shared.config.no_limit_headers {
                        limit_headers(&mut resp, dialect, &rejection.snapshot);
                    }
                    return reject_response(
                        &shared,
                        guard,
                        dialect,
                        n,
                        Outcome::LimitRejected,
                        resp,
                    );
                }
            }
        }
    };

    let step = match script {
        Some((text, script)) => {
            let scenario = parts
                .headers
                .get(SCENARIO_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            script.step(shared.next_step_index(scenario, text))
        }
        None if shared.random_faults => random_step(&shared.config, shared.rng.next_f64()),
        None => Step::Ok,
    };

    let mut resp = answer(&shared, &abort, guard, dialect, n, &request, step).await;
    if let Some(snapshot) = &limits
        && !shared.config.no_limit_headers
    {
        limit_headers(&mut resp, dialect, snapshot);
    }
    with_request_id(resp, dialect, n)
}

/// The 429 of a request the limits rejected: the dialect's body, `retry-after` (seconds,
/// rounded up) and `retry-after-ms` (none for a request that can never fit). The caller adds
/// the rate-limit headers.
fn limit_response(dialect: Dialect, rejection: &Rejection, model: &str) -> Response<Body> {
    let body = dialect.limit_body(rejection, model);
    let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, body);
    if let Some(wait) = rejection.retry_after {
        let wait = wait.max(Duration::from_millis(1));
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let headers = resp.headers_mut();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        if let Ok(v) = HeaderValue::try_from(format_ms(wait)) {
            headers.insert(RETRY_AFTER_MS.clone(), v);
        }
    }
    resp
}

/// Adds the rate-limit headers of every limited axis: OpenAI `x-ratelimit-limit-*`,
/// `-remaining-*` (integers, remaining rounded down) and `-reset-*` (Go duration until the
/// bucket is full); Anthropic `anthropic-ratelimit-*-limit`, `-remaining` and `-reset`
/// (RFC 3339, rounded up to the second). Headers already set (a scripted Anthropic 429's) win.
fn limit_headers(resp: &mut Response<Body>, dialect: Dialect, snapshot: &Snapshot) {
    let names = match dialect {
        Dialect::OpenAi => &OPENAI_LIMIT_HEADERS,
        Dialect::Anthropic => &ANTHROPIC_LIMIT_HEADERS,
    };
    let headers = resp.headers_mut();
    for (state, [limit, remaining, reset]) in
        [snapshot.requests, snapshot.tokens].into_iter().zip(names)
    {
        let Some(state) = state else { continue };
        let reset_value = match dialect {
            Dialect::OpenAi => go_duration(state.reset),
            Dialect::Anthropic => anthropic::reset_timestamp(state.reset),
        };
        let values = [
            (limit, HeaderValue::from(state.limit.round() as u64)),
            (remaining, HeaderValue::from(floor_u64(state.remaining))),
        ];
        for (name, value) in values {
            headers.entry(name.clone()).or_insert(value);
        }
        if let Ok(v) = HeaderValue::try_from(reset_value) {
            headers.entry(reset.clone()).or_insert(v);
        }
    }
}

/// Produces the response for one validated request and its fault step.
async fn answer(
    shared: &Arc<Shared>,
    abort: &Notify,
    mut guard: InFlight,
    dialect: Dialect,
    n: u64,
    request: &ChatRequest,
    step: Step,
) -> Response<Body> {
    let config = &shared.config;
    let model = request.model.as_deref().unwrap_or(&config.model_name);
    let cx = ErrorContext {
        n,
        model,
        prompt_tokens: request.prompt_tokens,
        context_limit: config.context_limit.map(|l| l as u64),
    };

    if let Some(limit) = config.context_limit
        && step.answers()
        && request.prompt_tokens > limit as u64
    {
        guard.finish();
        shared.stats.record(Outcome::Context);
        return error_response(dialect, &cx, &Step::Context);
    }

    let half = config.chunks / 2;
    let mut kind = Kind::Text;
    let (outcome, plan) = match step {
        Step::Ok => (
            Outcome::Ok,
            Plan::answer(config.chunks, config.ttft, config),
        ),
        Step::Delay(delay) => (Outcome::Ok, Plan::answer(config.chunks, delay, config)),
        Step::Chunks(chunks) => (Outcome::Ok, Plan::answer(chunks, config.ttft, config)),
        Step::Tool(name) => {
            kind = Kind::Tool(name.unwrap_or_else(|| DEFAULT_TOOL.to_owned()));
            let items = dialect.tool_items();
            (Outcome::Tool, Plan::answer(items, config.ttft, config))
        }
        Step::Cut(after) => (
            Outcome::Cut,
            Plan::ending(after.unwrap_or(half), End::Cut, config),
        ),
        Step::Stall(after) => (
            Outcome::Stall,
            Plan::ending(after.unwrap_or(half), End::Stall, config),
        ),
        Step::Inband { error_type, after } if request.stream => {
            let plan = match after {
                None => Plan {
                    inband_first: true,
                    ..Plan::ending(0, End::Inband(error_type), config)
                },
                Some(after) => Plan::ending(after, End::Inband(error_type), config),
            };
            (Outcome::Inband, plan)
        }
        Step::Inband { .. } => {
            guard.finish();
            shared.stats.record(Outcome::Inband);
            return error_response(dialect, &cx, &Step::Status(500));
        }
        Step::Reset => {
            guard.finish();
            shared.stats.record(Outcome::Reset);
            abort.notify_one();
            // The connection task drops this future together with the connection.
            return std::future::pending().await;
        }
        error => {
            guard.finish();
            shared.stats.record(error_outcome(&error));
            return error_response(dialect, &cx, &error);
        }
    };
    shared.stats.record(outcome);
    let render = dialect.render(n, model, request, kind);

    if request.stream {
        let state = StreamState {
            render,
            plan,
            phase: Phase::Head(0),
            guard,
            shared: shared.clone(),
        };
        let stream = futures_util::stream::unfold(state, StreamState::next);
        let mut resp = Response::new(Body::from_stream(stream));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return resp;
    }

    // A cut or stalled plain answer announces (and starts sending) the answer it would have been.
    let full = match plan.end {
        End::Complete => render.full(plan.content),
        _ => render.full(config.chunks),
    };
    // A plain answer's head waits for the whole "generation" to start.
    if !plan.ttft.is_zero() {
        tokio::time::sleep(plan.ttft).await;
    }
    match plan.end {
        End::Complete => {
            guard.finish();
            json_response(StatusCode::OK, full)
        }
        End::Stall if plan.content == 0 => {
            // Never answer; end only with the server.
            shared.wait_shutdown().await;
            guard.finish();
            abort.notify_one();
            std::future::pending().await
        }
        End::Cut | End::Stall => {
            // Announce the whole length, send half of it, then abort (cut) or go silent (stall).
            let len = full.len();
            let partial = full.slice(..len / 2);
            let state = PartialBody {
                partial: Some(partial),
                stall: matches!(plan.end, End::Stall),
                ended: false,
                guard,
                shared: shared.clone(),
            };
            let stream = futures_util::stream::unfold(state, PartialBody::next);
            let mut resp = Response::new(Body::from_stream(stream));
            let headers = resp.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            resp
        }
        // Unreachable: in-band steps of non-streaming requests were answered with a 500 above.
        End::Inband(_) => json_response(StatusCode::OK, full),
    }
}

fn error_outcome(step: &Step) -> Outcome {
    match step {
        Step::RateLimited { .. } => Outcome::RateLimited,
        Step::Quota => Outcome::Quota,
        Step::Unauthorized => Outcome::Unauthorized,
        Step::BadRequest => Outcome::BadRequest,
        Step::NotFound => Outcome::NotFound,
        Step::Context => Outcome::Context,
        Step::Policy => Outcome::Policy,
        Step::Status(502) => Outcome::S502,
        Step::Status(503) => Outcome::S503,
        Step::Status(504) => Outcome::S504,
        Step::Status(529) => Outcome::S529,
        Step::Status(_) => Outcome::S500,
        Step::Reset => Outcome::Reset,
        Step::Cut(_) => Outcome::Cut,
        Step::Stall(_) => Outcome::Stall,
        Step::Inband { .. } => Outcome::Inband,
        Step::Tool(_) => Outcome::Tool,
        Step::Ok | Step::Delay(_) | Step::Chunks(_) => Outcome::Ok,
    }
}

/// The status, headers and body of an error step in `dialect`'s format.
///
/// A 429 carries `retry-after` (seconds) and `retry-after-ms` as scripted, in both dialects
/// (Anthropic documents only `retry-after`; the extra header is harmless and keeps sub-second
/// hints exact). Anthropic 429s also carry `anthropic-ratelimit-requests-limit`,
/// `anthropic-ratelimit-requests-remaining: 0` and `anthropic-ratelimit-requests-reset`
/// (RFC 3339, now + the hint, rounded up to a whole second; now when there is no hint).
fn error_response(dialect: Dialect, cx: &ErrorContext<'_>, step: &Step) -> Response<Body> {
    let (status, body) = dialect.error_parts(step, cx);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(status, body);
    if let Step::RateLimited {
        retry_after_secs,
        retry_after_ms,
    } = step
    {
        let headers = resp.headers_mut();
        if let Some(secs) = retry_after_secs {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(*secs));
        }
        if let Some(ms) = retry_after_ms
            && let Ok(v) = HeaderValue::try_from(format_ms(*ms))
        {
            headers.insert(RETRY_AFTER_MS.clone(), v);
        }
        if dialect == Dialect::Anthropic {
            let hint = retry_after_ms
                .or(retry_after_secs.map(Duration::from_secs))
                .unwrap_or_default();
            headers.insert(
                RATELIMIT_LIMIT.clone(),
                HeaderValue::from(RATE_LIMIT_REQUESTS),
            );
            headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from_static("0"));
            if let Ok(v) = HeaderValue::try_from(anthropic::reset_timestamp(hint)) {
                headers.insert(RATELIMIT_RESET.clone(), v);
            }
        }
    }
    resp
}

/// How an answer ends after its content chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// The dialect's tail events (finish chunk, usage chunk, `[DONE]` / `content_block_stop`,
    /// `message_delta`, `message_stop`).
    Complete,
    /// Abort the connection.
    Cut,
    /// Go silent until the client leaves (or the server shuts down).
    Stall,
    /// An in-band error event of this type (`None`: the dialect's default), then the end of
    /// the stream.
    Inband(Option<String>),
}

/// The shape of one answer.
#[derive(Debug, Clone)]
struct Plan {
    /// Content chunks (or tool-argument fragments) to send.
    content: usize,
    ttft: Duration,
    gap: Duration,
    end: End,
    /// Send the in-band error as the very first event (no head events).
    inband_first: bool,
}

impl Plan {
    fn answer(chunks: usize, ttft: Duration, config: &MockConfig) -> Plan {
        Plan {
            content: chunks,
            ttft,
            gap: config.chunk_gap,
            end: End::Complete,
            inband_first: false,
        }
    }

    fn ending(content: usize, end: End, config: &MockConfig) -> Plan {
        Plan {
            content,
            ttft: config.ttft,
            gap: config.chunk_gap,
            end,
            inband_first: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Head event k (role chunk / `message_start`, `content_block_start`, `ping`).
    Head(usize),
    /// Item i.
    Content(usize),
    /// Tail event k.
    Tail(usize),
    End,
}

/// The state of one SSE body; each call of [`StreamState::next`] produces one event, so every
/// event is flushed on its own.
struct StreamState {
    render: Render,
    plan: Plan,
    phase: Phase,
    guard: InFlight,
    shared: Arc<Shared>,
}

impl StreamState {
    async fn next(mut self) -> Option<(io::Result<Bytes>, StreamState)> {
        let frame = match self.phase {
            Phase::Head(k) => {
                if k == 0 && self.plan.inband_first {
                    self.end_inband()
                } else {
                    self.phase = if k + 1 < self.render.head_len() {
                        Phase::Head(k + 1)
                    } else {
                        Phase::Content(0)
                    };
                    self.render.head(k)
                }
            }
            Phase::Content(i) if i < self.plan.content => {
                let delay = if i == 0 {
                    self.plan.ttft
                } else {
                    self.plan.gap
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                self.phase = Phase::Content(i + 1);
                self.render.item(i)
            }
            Phase::Content(_) => match self.plan.end {
                End::Complete => self.tail(0),
                End::Inband(_) => self.end_inband(),
                End::Cut => {
                    // Let hyper flush what was produced, then abort the connection.
                    tokio::task::yield_now().await;
                    self.guard.finish();
                    self.phase = Phase::End;
                    return Some((Err(io::Error::other("sluice-mock: cut fault")), self));
                }
                End::Stall => {
                    self.shared.wait_shutdown().await;
                    self.guard.finish();
                    self.phase = Phase::End;
                    return Some((Err(io::Error::other("sluice-mock: shutting down")), self));
                }
            },
            Phase::Tail(k) => self.tail(k),
            Phase::End => return None,
        };
        Some((Ok(frame), self))
    }

    /// Tail event k; the last one finishes the request before it is sent, so a client that
    /// hangs up right after it is not counted as cancelled.
    fn tail(&mut self, k: usize) -> Bytes {
        if k + 1 >= self.render.tail_len() {
            self.guard.finish();
            self.phase = Phase::End;
        } else {
            self.phase = Phase::Tail(k + 1);
        }
        self.render.tail(k, self.plan.content)
    }

    fn end_inband(&mut self) -> Bytes {
        self.guard.finish();
        self.phase = Phase::End;
        match &self.plan.end {
            End::Inband(error_type) => self.render.inband(error_type.as_deref()),
            _ => self.render.inband(None),
        }
    }
}

/// A non-streaming body that sends part of the JSON and then aborts (cut) or goes silent (stall).
struct PartialBody {
    partial: Option<Bytes>,
    stall: bool,
    ended: bool,
    guard: InFlight,
    shared: Arc<Shared>,
}

impl PartialBody {
    async fn next(mut self) -> Option<(io::Result<Bytes>, PartialBody)> {
        if let Some(partial) = self.partial.take() {
            return Some((Ok(partial), self));
        }
        if self.ended {
            return None;
        }
        if self.stall {
            self.shared.wait_shutdown().await;
        } else {
            // Let hyper flush the partial body before the error aborts the connection.
            tokio::task::yield_now().await;
        }
        self.guard.finish();
        self.ended = true;
        Some((Err(io::Error::other("sluice-mock: truncated body")), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_retry_ms() {
        assert_eq!(format_ms(Duration::from_millis(1500)), "1500");
        assert_eq!(format_ms(Duration::from_micros(1500)), "1.500");
    }
}
