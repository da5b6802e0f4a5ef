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

use crate::config::MockConfig;
use crate::script::{Script, SplitMix64, Step, random_step};
use crate::stats::{InFlight, MockStats, Outcome, Stats};
use crate::wire::{
    self, Answer, ChatRequest, DONE_EVENT, StreamTemplate, anthropic_overloaded,
    context_length_error, openai_error,
};

/// Request header carrying a fault script.
const FAULT_HEADER: &str = "x-sluice-mock-fault";
/// Request header naming a scenario: scripts are counted per (scenario, script).
const SCENARIO_HEADER: &str = "x-sluice-mock-scenario";
/// Largest accepted request body.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// How long a graceful shutdown waits for answers in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Context window claimed by the `context` step when no `context_limit` is configured.
const DEFAULT_CONTEXT_WINDOW: u64 = 128_000;

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// State shared by every connection of one server.
struct Shared {
    config: MockConfig,
    random_faults: bool,
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
        (&Method::POST, "/v1/chat/completions") => chat(shared, abort, req).await,
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

fn with_request_id(mut resp: Response<Body>, n: u64) -> Response<Body> {
    if let Ok(v) = HeaderValue::try_from(format!("req_mock_{n}")) {
        resp.headers_mut().insert(REQUEST_ID.clone(), v);
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

/// "644ms", "1.5s": the style of OpenAI's "Please try again in ..." hint.
fn format_hint(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// `POST /v1/chat/completions`.
async fn chat(shared: Arc<Shared>, abort: Arc<Notify>, req: Request<Incoming>) -> Response<Body> {
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    shared.stats.request();
    let mut guard = InFlight::new(shared.stats.clone());
    let (parts, body) = req.into_parts();

    let declared_len = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > MAX_BODY as u64) {
        guard.finish();
        shared.stats.record(Outcome::InvalidRequest);
        let message = format!("Request body too large: the limit is {MAX_BODY} bytes.");
        let body = openai_error(&message, "invalid_request_error", None, None);
        return with_request_id(json_response(StatusCode::PAYLOAD_TOO_LARGE, body), n);
    }
    let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            guard.finish();
            shared.stats.record(Outcome::InvalidRequest);
            let message = format!("Could not read the request body: {e}");
            let body = openai_error(&message, "invalid_request_error", None, None);
            return with_request_id(json_response(StatusCode::BAD_REQUEST, body), n);
        }
    };

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
                    guard.finish();
                    shared.stats.record(Outcome::BadScript);
                    let message = format!("Invalid {FAULT_HEADER} script: {why}");
                    let body =
                        openai_error(&message, "invalid_request_error", Some(FAULT_HEADER), None);
                    return with_request_id(json_response(StatusCode::BAD_REQUEST, body), n);
                }
            }
        }
    };

    let request = match wire::parse_chat_request(&body) {
        Ok(request) => request,
        Err(invalid) => {
            guard.finish();
            shared.stats.record(Outcome::InvalidRequest);
            let body = openai_error(
                &invalid.message,
                "invalid_request_error",
                invalid.param.as_deref(),
                None,
            );
            return with_request_id(json_response(StatusCode::BAD_REQUEST, body), n);
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

    let resp = answer(&shared, &abort, guard, n, &request, step).await;
    with_request_id(resp, n)
}

/// Produces the response for one validated chat request and its fault step.
async fn answer(
    shared: &Arc<Shared>,
    abort: &Notify,
    mut guard: InFlight,
    n: u64,
    request: &ChatRequest,
    step: Step,
) -> Response<Body> {
    let config = &shared.config;
    let model = request.model.as_deref().unwrap_or(&config.model_name);

    if let Some(limit) = config.context_limit
        && step.answers()
        && request.prompt_tokens > limit as u64
    {
        guard.finish();
        shared.stats.record(Outcome::Context);
        let body = context_length_error(limit as u64, request.prompt_tokens);
        return json_response(StatusCode::BAD_REQUEST, body);
    }

    let half = config.chunks / 2;
    let (outcome, plan) = match step {
        Step::Ok => (
            Outcome::Ok,
            Plan::answer(config.chunks, config.ttft, config),
        ),
        Step::Delay(delay) => (Outcome::Ok, Plan::answer(config.chunks, delay, config)),
        Step::Chunks(chunks) => (Outcome::Ok, Plan::answer(chunks, config.ttft, config)),
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
            return error_response(shared, n, model, request, Step::Status(500));
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
            return error_response(shared, n, model, request, error);
        }
    };
    shared.stats.record(outcome);
    let answer = Answer::new(n, model, request.prompt_tokens);

    if request.stream {
        let state = StreamState {
            template: answer.stream_template(request.include_usage),
            include_usage: request.include_usage,
            answer,
            plan,
            phase: Phase::Start,
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
        End::Complete => answer.completion(plan.content),
        _ => answer.completion(config.chunks),
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
        Step::Ok | Step::Delay(_) | Step::Chunks(_) => Outcome::Ok,
    }
}

/// The status, headers and body of an error step.
fn error_response(
    shared: &Shared,
    n: u64,
    model: &str,
    request: &ChatRequest,
    step: Step,
) -> Response<Body> {
    let (status, body) = match &step {
        Step::RateLimited {
            retry_after_secs,
            retry_after_ms,
        } => {
            let hint = retry_after_ms.or(retry_after_secs.map(Duration::from_secs));
            let try_again = hint
                .map(|d| format!(" Please try again in {}.", format_hint(d)))
                .unwrap_or_default();
            let message = format!(
                "Rate limit reached for {model} in organization org-sluice-mock on requests per \
                 min (RPM): Limit 60, Used 60, Requested 1.{try_again} Visit \
                 https://platform.openai.com/account/rate-limits to learn more."
            );
            let body = openai_error(&message, "requests", None, Some("rate_limit_exceeded"));
            let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, body);
            let headers = resp.headers_mut();
            if let Some(secs) = retry_after_secs {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            if let Some(ms) = retry_after_ms
                && let Ok(v) = HeaderValue::try_from(format_ms(*ms))
            {
                headers.insert(RETRY_AFTER_MS.clone(), v);
            }
            return resp;
        }
        Step::Quota => (
            StatusCode::TOO_MANY_REQUESTS,
            openai_error(
                "You exceeded your current quota, please check your plan and billing details. \
                 For more information on this error, read the docs: \
                 https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            ),
        ),
        Step::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            openai_error(
                "Incorrect API key provided: sk-mock***...0000. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
        ),
        Step::BadRequest => (
            StatusCode::BAD_REQUEST,
            openai_error(
                "Invalid value for 'messages': the request was rejected by sluice-mock's \
                 injected `400` fault.",
                "invalid_request_error",
                Some("messages"),
                None,
            ),
        ),
        Step::NotFound => (
            StatusCode::NOT_FOUND,
            openai_error(
                &format!("The model '{model}' does not exist or you do not have access to it."),
                "invalid_request_error",
                None,
                Some("model_not_found"),
            ),
        ),
        Step::Context => {
            let limit = shared
                .config
                .context_limit
                .map_or(DEFAULT_CONTEXT_WINDOW, |l| l as u64);
            let tokens = request.prompt_tokens.max(limit + 1);
            (StatusCode::BAD_REQUEST, context_length_error(limit, tokens))
        }
        Step::Policy => (
            StatusCode::BAD_REQUEST,
            openai_error(
                "Your request was rejected as a result of our safety system. Your prompt may \
                 contain text that is not allowed by our safety system.",
                "invalid_request_error",
                None,
                Some("content_policy_violation"),
            ),
        ),
        Step::Status(502) => (
            StatusCode::BAD_GATEWAY,
            openai_error("Bad gateway.", "server_error", None, None),
        ),
        Step::Status(503) => (
            StatusCode::SERVICE_UNAVAILABLE,
            openai_error(
                "That model is currently overloaded with other requests. You can retry your \
                 request, or contact us through our help center at help.openai.com if the error \
                 persists.",
                "server_error",
                None,
                None,
            ),
        ),
        Step::Status(504) => (
            StatusCode::GATEWAY_TIMEOUT,
            openai_error("Gateway timeout.", "server_error", None, None),
        ),
        Step::Status(529) => (
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            anthropic_overloaded(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            openai_error(
                &format!(
                    "The server had an error processing your request. Sorry about that! You can \
                     retry your request, or contact us through our help center at \
                     help.openai.com if you keep seeing this error. (Please include the request \
                     ID req_mock_{n} in your email.)"
                ),
                "server_error",
                None,
                None,
            ),
        ),
    };
    json_response(status, body)
}

/// How an answer ends after its content chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Finish chunk, optional usage chunk, `[DONE]`.
    Complete,
    /// Abort the connection.
    Cut,
    /// Go silent until the client leaves (or the server shuts down).
    Stall,
    /// An in-band error event of this type, then the end of the stream.
    Inband(String),
}

/// The shape of one answer.
#[derive(Debug, Clone)]
struct Plan {
    /// Content chunks to send.
    content: usize,
    ttft: Duration,
    gap: Duration,
    end: End,
    /// Send the in-band error as the very first event (no preamble).
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
    Start,
    Content(usize),
    Usage,
    Done,
    End,
}

/// The state of one SSE body; each call of [`StreamState::next`] produces one frame.
struct StreamState {
    template: StreamTemplate,
    include_usage: bool,
    answer: Answer,
    plan: Plan,
    phase: Phase,
    guard: InFlight,
    shared: Arc<Shared>,
}

impl StreamState {
    async fn next(mut self) -> Option<(io::Result<Bytes>, StreamState)> {
        let frame = match self.phase {
            Phase::Start => {
                if self.plan.inband_first {
                    self.end_inband()
                } else {
                    self.phase = Phase::Content(0);
                    self.template.preamble()
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
                self.template.content(i)
            }
            Phase::Content(_) => match self.plan.end {
                End::Complete => {
                    self.phase = if self.include_usage {
                        Phase::Usage
                    } else {
                        Phase::Done
                    };
                    self.template.finish()
                }
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
            Phase::Usage => {
                self.phase = Phase::Done;
                self.answer.usage_event(self.plan.content as u64)
            }
            Phase::Done => {
                self.guard.finish();
                self.phase = Phase::End;
                Bytes::from_static(DONE_EVENT)
            }
            Phase::End => return None,
        };
        Some((Ok(frame), self))
    }

    fn end_inband(&mut self) -> Bytes {
        self.guard.finish();
        self.phase = Phase::End;
        match &self.plan.end {
            End::Inband(error_type) => wire::inband_event(error_type),
            _ => wire::inband_event("server_error"),
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
    fn formats_retry_hints() {
        assert_eq!(format_ms(Duration::from_millis(1500)), "1500");
        assert_eq!(format_ms(Duration::from_micros(1500)), "1.500");
        assert_eq!(format_hint(Duration::from_millis(644)), "644ms");
        assert_eq!(format_hint(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_hint(Duration::from_secs(3)), "3s");
    }
}
