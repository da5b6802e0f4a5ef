//! The HTTP surface: routes, request parsing, auth, and the commit-point rule on the wire.
//!
//! Nothing is written to the client before the executor commits — not even the status line —
//! so a failure before commit still becomes a proper JSON error with its own status, and the
//! retries and fallbacks before it are invisible. After commit each upstream event is written as
//! soon as it arrives; a failure ends the SSE stream with `data: {"error": ...}` and no
//! `[DONE]`, so no OpenAI client can mistake a cut answer for a complete one.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::json;
use sluice::{Answer, CallOptions, ChatRequest, ChatStream, Client};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{ApiError, Dialect};
use crate::metrics::{self, Metrics, RequestRecorder};
use crate::status;

/// Everything a request handler needs. Built once at start-up by [`crate::Gateway`].
#[derive(Debug)]
pub struct AppState {
    /// The executor.
    pub client: Client,
    /// Model names listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// Client keys; `None` means no auth.
    pub client_keys: Option<Vec<String>>,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Time allowed to receive a request body.
    pub body_read_timeout: Duration,
    /// Set while draining: `/readyz` turns 503 so load balancers stop sending.
    pub draining: AtomicBool,
    /// Flips to `true` when the drain timeout is over: open streams end with an error event.
    pub abort_streams: watch::Receiver<bool>,
    /// Metrics and the status page's window; `None` when `server.metrics = false`.
    pub metrics: Option<Arc<Metrics>>,
    /// Rate-limit each client key in its own buckets too (`rate_limit.per_client_key`).
    pub per_client_key: bool,
    /// The shared Redis store, when `[rate_limit] backend = "redis"` (for its health metrics).
    pub shared_store: Option<Arc<sluice_redis::SharedStore>>,
}

/// The gateway's routes over `state`, without a socket (tests drive it with `oneshot`):
/// the API, health, and the observability routes of [`admin_router`].
pub fn router(state: Arc<AppState>) -> Router {
    build_router(state, true)
}

/// The gateway's routes; `/metrics`, `/status` and `/status.json` only with `observability`
/// (they move to the admin listener when there is one).
pub(crate) fn build_router(state: Arc<AppState>, observability: bool) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(list_models))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_client_key,
        ));
    let mut main = Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if observability {
        main = main.merge(observability_routes());
    }
    main.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// The admin listener's routes (`server.admin_listen`): metrics, the status page and its JSON,
/// and liveness. No client auth: bind it where only operators can reach it.
pub fn admin_router(state: Arc<AppState>) -> Router {
    observability_routes()
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

fn observability_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
}

fn metrics_disabled() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "Metrics are turned off on this gateway (server.metrics = false).",
    )
    .with_code("metrics_disabled")
    .into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let Some(metrics) = &state.metrics else {
        return metrics_disabled();
    };
    let levels = state.client.limiter().levels_all().await;
    let redis = state
        .shared_store
        .as_ref()
        .map(|s| (s.is_degraded(), s.fallbacks()));
    metrics.set_limiter(&levels, redis);
    let text = metrics.render(&state.client.target_status());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

async fn status_json(State(state): State<Arc<AppState>>) -> Response {
    let Some(metrics) = &state.metrics else {
        return metrics_disabled();
    };
    let mut report = metrics.status_report(metrics::unix_ms(), &state.client.target_status());
    report.rate_limits = state
        .client
        .limiter()
        .levels_all()
        .await
        .into_iter()
        // Client-scoped buckets stay off the page as they stay out of /metrics.
        .filter(|(key, _, _)| !key.contains('|'))
        .filter_map(|(key, limits, levels)| {
            let levels = levels.ok()?;
            Some(status::BucketReport {
                key: key.to_string(),
                requests: levels.requests,
                requests_capacity: limits.request_capacity(),
                tokens: levels.tokens,
                tokens_capacity: limits.token_capacity(),
            })
        })
        .collect();
    report.redis = state.shared_store.as_ref().map(|s| status::RedisReport {
        degraded: s.is_degraded(),
        fallbacks: s.fallbacks(),
    });
    let mut resp = axum::Json(report).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn status_page(State(state): State<Arc<AppState>>) -> Response {
    if state.metrics.is_none() {
        return metrics_disabled();
    }
    let mut resp = axum::response::Html(status::STATUS_HTML).into_response();
    let h = resp.headers_mut();
    // The page is self-contained: it may run its own inline script and style and talk to
    // this origin, nothing else.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The id of a request: the client's `x-request-id` when it is sane, else a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = ?id, method = %req.method(), path = %req.uri().path());
    let mut response = next.run(req).instrument(span).await;
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    response
}

fn new_request_id() -> HeaderValue {
    let id = format!(
        "req_sluice_{:016x}",
        sluice::SplitMix64::from_entropy().next_u64()
    );
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("req_sluice"))
}

async fn require_client_key(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(keys) = &state.client_keys else {
        return next.run(req).await;
    };
    let dialect = dialect_of(req.uri().path());
    let presented = presented_key(req.headers());
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Missing API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`) with a key configured for this gateway.",
        )
        .with_code("missing_api_key")
        .into_response_for(dialect);
    };
    // Compare against every key without stopping early, each in constant time, so the time
    // taken says nothing about which key (or which prefix) was close.
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        matched |= key.as_bytes().ct_eq(presented.as_bytes());
    }
    if bool::from(matched) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect API key provided for this gateway.",
        )
        .with_code("invalid_api_key")
        .into_response_for(dialect)
    }
}

/// The client key a request presents: OpenAI clients send `Authorization: Bearer`, Anthropic
/// clients `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// The rate-limit scope of a request's client key when limits are per key: a digest, so the
/// key itself never becomes a limiter (or Redis) key.
fn client_scope(state: &AppState, headers: &HeaderMap) -> Option<String> {
    use std::hash::{Hash, Hasher};
    if !state.per_client_key || state.client_keys.is_none() {
        return None;
    }
    let key = presented_key(headers)?;
    // SipHash with fixed keys: the same digest on every replica of the same build.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    Some(format!("client-{:016x}", hasher.finish()))
}

fn dialect_of(path: &str) -> Dialect {
    if path.starts_with("/v1/messages") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        axum::Json(json!({"status": "ready"})).into_response()
    }
}

async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    let data: Vec<_> = state
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "sluice"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("Unknown path {} {}", req.method(), req.uri().path()),
    )
    .with_code("not_found")
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!(
            "Method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
    .with_code("method_not_allowed")
    .into_response()
}

/// Client headers passed upstream. Everything else stays here: the client's credentials, hop-by-hop
/// headers, and anything a provider might act on that the gateway did not decide to send.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with("x-sluice-mock-") || n == "openai-beta" || n == "anthropic-beta" {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limited = Limited::new(body, state.max_body);
    match tokio::time::timeout(state.body_read_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "The request body did not arrive within {:.0}s.",
                state.body_read_timeout.as_secs_f64()
            ),
        )
        .with_code("request_timeout")),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "The request body is larger than the gateway's limit of {} bytes.",
                state.max_body
            ),
        )
        .with_code("request_too_large")),
        Ok(Err(e)) => Err(ApiError::invalid_request(
            format!("The request body could not be read: {e}"),
            None,
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Reads a body as one JSON object, with errors that say what is wrong.
fn parse_json_object(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request(
            "The request body is empty; send a JSON request.",
            None,
        ));
    }
    if let Err(e) = std::str::from_utf8(body) {
        return Err(ApiError::invalid_request(
            format!(
                "The request body is not valid UTF-8 (invalid byte at offset {}).",
                e.valid_up_to()
            ),
            None,
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_request(format!("The request body is not valid JSON: {e}."), None)
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid_request(
            "The request body must be a JSON object.",
            None,
        ));
    }
    Ok(value)
}

/// Parses a Chat Completions body, with errors that say what to fix.
fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    // The common case in one pass: a well-formed request parses straight into its type. Only a
    // failure takes the slower path that says exactly what is wrong.
    if let Ok(req) = serde_json::from_slice::<ChatRequest>(body) {
        if !req.messages.is_empty() {
            return Ok(req);
        }
    }
    let value = parse_json_object(body)?;
    let missing = |field: &str| -> ApiError {
        ApiError::invalid_request(
            format!("Missing required parameter: '{field}'."),
            Some(field),
        )
    };
    match value.get("model") {
        None => return Err(missing("model")),
        Some(m) if !m.is_string() => {
            return Err(ApiError::invalid_request(
                "'model' must be a string.",
                Some("model"),
            ));
        }
        _ => {}
    }
    match value.get("messages") {
        None => return Err(missing("messages")),
        Some(serde_json::Value::Array(a)) if a.is_empty() => {
            return Err(ApiError::invalid_request(
                "'messages' must contain at least one message.",
                Some("messages"),
            ));
        }
        Some(serde_json::Value::Array(_)) => {}
        Some(_) => {
            return Err(ApiError::invalid_request(
                "'messages' must be an array.",
                Some("messages"),
            ));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid_request(format!("Invalid request: {e}."), None))
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_chat(&state, &headers, body, Dialect::OpenAi).await
}

async fn messages(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    serve_chat(&state, &headers, body, Dialect::Anthropic).await
}

/// Parses the body in the client's dialect into the canonical request.
fn parse_request(bytes: &[u8], dialect: Dialect) -> Result<ChatRequest, ApiError> {
    match dialect {
        Dialect::OpenAi => parse_chat_request(bytes),
        Dialect::Anthropic => {
            let value = parse_json_object(bytes)?;
            sluice_providers::from_anthropic_request(&value)
                .map_err(|e| ApiError::invalid_request(e.to_string(), Some(&e.field)))
        }
    }
}

/// Both APIs: read, parse into the canonical request, run the one executor, render the answer
/// (or error) in the client's dialect. Every request is recorded once in the metrics (see
/// [`RequestRecorder`]), streams when their last event is written or the client goes away.
async fn serve_chat(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    dialect: Dialect,
) -> Response {
    let mut recorder = RequestRecorder::start(state.metrics.as_ref(), Instant::now());
    let bytes = match read_body(state, body).await {
        Ok(b) => b,
        Err(e) => {
            recorder.outcome("invalid_request");
            return e.into_response_for(dialect);
        }
    };
    let body_read = Instant::now();
    let req = match parse_request(&bytes, dialect) {
        Ok(r) => r,
        Err(e) => {
            recorder.outcome("invalid_request");
            return e.into_response_for(dialect);
        }
    };
    let model = req.model.clone();
    recorder.model(&model, req.is_stream());
    let options = CallOptions {
        headers: forwarded_headers(headers),
        limit_scope: client_scope(state, headers),
    };
    let span = tracing::info_span!("chat", model = %model, route = recorder.route(), stream = req.is_stream());
    match state
        .client
        .execute(req, &options)
        .instrument(span.clone())
        .await
    {
        Ok(Answer::Response(response, info)) => {
            let mut resp = match dialect {
                Dialect::OpenAi => axum::Json(&*response).into_response(),
                Dialect::Anthropic => {
                    axum::Json(sluice_providers::to_anthropic_response(&response, &model))
                        .into_response()
                }
            };
            call_headers(resp.headers_mut(), &info);
            recorder.committed(&info, body_read, Instant::now());
            recorder.usage(response.usage.as_ref());
            recorder.outcome("ok");
            resp
        }
        Ok(Answer::Stream(stream)) => {
            recorder.committed(stream.info(), body_read, Instant::now());
            sse_response(
                stream,
                state.abort_streams.clone(),
                dialect,
                &model,
                recorder,
                span,
            )
        }
        Err(e) => {
            recorder.failed(&e);
            let api = ApiError::from_call(&e);
            if api.status().is_server_error() || api.status() == StatusCode::TOO_MANY_REQUESTS {
                tracing::warn!(model = %model, status = api.status().as_u16(), "call failed: {e}");
            } else {
                tracing::info!(model = %model, status = api.status().as_u16(), "call failed: {e}");
            }
            api.into_response_for(dialect)
        }
    }
}

fn call_headers(headers: &mut HeaderMap, info: &sluice::CallInfo) {
    let (target, attempts) = (info.target.as_ref(), info.attempts);
    if let Some(t) = &info.truncation {
        // What the context guard dropped so the prompt fits, for the client to see.
        let value = format!(
            "messages={}; tokens={}; prompt_tokens={}",
            t.dropped_messages, t.dropped_tokens, t.tokens_after
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-sluice-truncated", v);
        }
    }
    headers.insert("x-sluice-attempts", HeaderValue::from(attempts));
    if let Ok(v) = HeaderValue::from_str(target) {
        headers.insert("x-sluice-target", v);
    }
}

/// Turns canonical chunks into the client's SSE frames.
enum FrameEncoder {
    OpenAi,
    Anthropic(Box<sluice_providers::AnthropicStreamEncoder>),
}

impl FrameEncoder {
    fn chunk(&mut self, chunk: &sluice::ChatChunk) -> Bytes {
        match self {
            Self::OpenAi => frame_bytes(&serde_json::to_vec(chunk).unwrap_or_default()),
            Self::Anthropic(encoder) => {
                let mut events = Vec::new();
                encoder.encode(chunk, &mut events);
                named_frames(&events)
            }
        }
    }

    fn done(&mut self) -> Bytes {
        match self {
            Self::OpenAi => Bytes::from_static(b"data: [DONE]\n\n"),
            Self::Anthropic(encoder) => {
                let mut events = Vec::new();
                encoder.finish(&mut events);
                named_frames(&events)
            }
        }
    }

    fn error(&self, api: &ApiError) -> Bytes {
        match self {
            Self::OpenAi => sse_frame(&json!({"error": api.error_object()})),
            Self::Anthropic(_) => named_frames(&[("error", api.anthropic_body())]),
        }
    }
}

fn named_frames(events: &[(&'static str, serde_json::Value)]) -> Bytes {
    let mut buf = Vec::new();
    for (name, value) in events {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\ndata: ");
        buf.extend_from_slice(&serde_json::to_vec(value).unwrap_or_default());
        buf.extend_from_slice(b"\n\n");
    }
    Bytes::from(buf)
}

/// The committed stream as SSE in the client's dialect, each upstream event written as soon as
/// it arrives. A failure after commit ends it with an error event (no `[DONE]` /
/// `message_stop`), so no client can take a cut answer for a complete one. The stream is polled
/// inside the request's span (so post-commit logs carry its request id), and `recorder` records
/// the request when the stream ends or the client goes away.
fn sse_response(
    stream: ChatStream,
    abort: watch::Receiver<bool>,
    dialect: Dialect,
    model: &str,
    recorder: RequestRecorder,
    span: tracing::Span,
) -> Response {
    let info = stream.info().clone();
    let encoder = match dialect {
        Dialect::OpenAi => FrameEncoder::OpenAi,
        Dialect::Anthropic => FrameEncoder::Anthropic(Box::new(
            sluice_providers::AnthropicStreamEncoder::new(model),
        )),
    };
    let live = LiveStream {
        stream,
        abort,
        encoder,
        recorder,
    };
    let frames = futures_util::stream::unfold(Some(live), |live| async move {
        let mut live = live?;
        let item = tokio::select! {
            biased;
            item = live.stream.next() => item,
            _ = live.abort.wait_for(|a| *a) => {
                let api = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "The gateway is shutting down and its drain timeout ended this stream before the upstream finished.",
                )
                .with_code("gateway_shutdown");
                live.recorder.outcome("gateway_shutdown");
                return Some((Ok::<_, Infallible>(live.encoder.error(&api)), None));
            }
        };
        match item {
            Some(Ok(chunk)) => {
                let frame = live.encoder.chunk(&chunk);
                Some((Ok(frame), Some(live)))
            }
            Some(Err(interrupted)) => {
                live.recorder.outcome("stream_interrupted");
                let api = ApiError::from_call(&sluice::Error::StreamInterrupted(interrupted));
                Some((Ok(live.encoder.error(&api)), None))
            }
            None => {
                live.recorder.outcome("ok");
                Some((Ok(live.encoder.done()), None))
            }
        }
    });
    let frames = InSpan {
        inner: Box::pin(frames),
        span,
    };
    let mut resp = Response::new(Body::from_stream(frames));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    call_headers(h, &info);
    resp
}

/// A committed stream being written to the client. When it is dropped — after its last frame,
/// or when the client goes away — its request is recorded with the usage the provider reported.
struct LiveStream {
    stream: ChatStream,
    abort: watch::Receiver<bool>,
    encoder: FrameEncoder,
    recorder: RequestRecorder,
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.recorder.usage(self.stream.usage().as_ref());
    }
}

/// Polls a stream inside a tracing span.
struct InSpan<S> {
    inner: Pin<Box<S>>,
    span: tracing::Span,
}

impl<S: Stream> Stream for InSpan<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner.as_mut().poll_next(cx)
    }
}

fn sse_frame(value: &serde_json::Value) -> Bytes {
    frame_bytes(&serde_json::to_vec(value).unwrap_or_default())
}

fn frame_bytes(json: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(json.len() + 8);
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}
