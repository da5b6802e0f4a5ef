//! The gateway's metrics: Prometheus families (`GET /metrics`) and the status page's window
//! (`GET /status.json`, see `status.rs`), fed from two places.
//!
//! - **The executor's [`CallEvent`]s.** [`Metrics`] is the client's [`Observer`]: every
//!   attempt, failure, retry, give-up, skip, breaker transition, spent retry budget, fallback
//!   and broken stream is counted where the executor decides it. `sluice-core` only emits the
//!   events; this module is the one place that knows about Prometheus.
//! - **The HTTP layer.** [`RequestRecorder`] follows one request through `serve_chat` and
//!   records it exactly once, when it drops: its route, the target that answered, the outcome,
//!   the whole latency, time to first token, the gateway's own overhead and the tokens used. A
//!   client that goes away mid-request is recorded too, as `cancelled`.
//!
//! # Overhead
//!
//! `sluice_gateway_overhead_seconds` is the time the gateway itself spent on a request up to
//! its commit point: from the request body having arrived to the response head being ready,
//! minus the time spent in upstream attempts and in deliberate waits (backoff, parks, a breaker
//! cooling down) — [`sluice::CallInfo::upstream_wait`] and [`sluice::CallInfo::backoff_wait`].
//! What is left is parsing, routing, translation, decisions and serialization: the cost of
//! Sluice, independent of how slow the provider was.
//!
//! # Cardinality
//!
//! Labels are route (a configured `[[models]]` name, or `direct` for every other model name a
//! client sends), target (`provider/model`), class, reason and state: never a request id, key or
//! client-chosen string. Direct targets (`provider/anything`, or `--upstream`) are named by the
//! client, so at most [`MAX_TARGET_LABELS`] distinct target names get their own series; later
//! ones are counted under `other`.
//!
//! # Adding families
//!
//! Each family is a field of [`Metrics`], registered in [`Metrics::new`] and fed by the event
//! or request that produces it. The proactive rate limiter reports its waits and rejections as
//! events (`sluice_ratelimit_wait_seconds`, `sluice_ratelimit_rejections_total`); its bucket
//! levels and the Redis store's fallback state are gauges refreshed at each scrape
//! ([`Metrics::set_limiter`], from `Limiter::levels_all` and the shared store), like the breaker
//! gauges are from [`sluice::Client::target_status`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sluice::{CallEvent, CallInfo, ErrorClass, Observer, TargetStatus, Usage};
use tokio::time::Instant;

use crate::status::{RequestSample, StatusReport, StatusWindow};

/// Distinct target names with their own series; the rest are labelled `other`.
pub const MAX_TARGET_LABELS: usize = 64;

/// The `route` label of a model that is not a configured route.
pub const DIRECT_ROUTE: &str = "direct";

/// The content type of `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    target: Arc<str>,
    outcome: &'static str,
    stream: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStreamLabels {
    route: Arc<str>,
    stream: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabels {
    /// The limiter key: a target, or a provider with provider-wide limits.
    key: Arc<str>,
    /// `requests` or `tokens`.
    axis: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetClassLabels {
    target: Arc<str>,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GaveUpLabels {
    target: Arc<str>,
    class: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetReasonLabels {
    target: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    from: Arc<str>,
    to: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    target: Arc<str>,
    from: &'static str,
    to: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    target: Arc<str>,
    direction: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn hist<L: Clone + std::hash::Hash + Eq>(buckets: fn() -> Histogram) -> HistogramFamily<L> {
    Family::new_with_constructor(buckets)
}
type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

fn overhead_histogram() -> Histogram {
    Histogram::new([
        25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
    ])
}

fn limiter_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

fn delay_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

/// Interns target names for labels, up to [`MAX_TARGET_LABELS`].
#[derive(Debug)]
struct TargetNames {
    known: RwLock<HashMap<Arc<str>, Arc<str>>>,
    other: Arc<str>,
}

impl TargetNames {
    fn label(&self, name: &Arc<str>) -> Arc<str> {
        if let Some(label) = self.known.read().get(name) {
            return label.clone();
        }
        let mut known = self.known.write();
        if known.len() < MAX_TARGET_LABELS {
            known.insert(name.clone(), name.clone());
            name.clone()
        } else {
            self.other.clone()
        }
    }
}

/// Every metric family of the gateway, and the status page's window. One per gateway; the
/// client reports to it as its [`Observer`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    request_duration: HistogramFamily<RouteStreamLabels>,
    ttft: HistogramFamily<RouteLabels>,
    overhead: HistogramFamily<StreamLabels>,
    tokens: Family<TokenLabels, Counter>,
    attempts: Family<TargetLabels, Counter>,
    attempt_failures: Family<TargetClassLabels, Counter>,
    retries: Family<TargetClassLabels, Counter>,
    retry_delay: HistogramFamily<TargetLabels>,
    gave_up: Family<GaveUpLabels, Counter>,
    skipped: Family<TargetReasonLabels, Counter>,
    budget_exhausted: Family<TargetLabels, Counter>,
    limiter_wait: HistogramFamily<TargetLabels>,
    limiter_rejections: Family<TargetReasonLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    streams_interrupted: Family<TargetClassLabels, Counter>,
    breaker_state: Family<TargetLabels, Gauge>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    retry_budget: Family<TargetLabels, FloatGauge>,
    parked: Family<TargetLabels, FloatGauge>,
    bucket_level: Family<BucketLabels, FloatGauge>,
    redis_degraded: Gauge,
    redis_fallbacks: Gauge,
    routes: HashMap<String, Arc<str>>,
    direct: Arc<str>,
    none: Arc<str>,
    targets: TargetNames,
    window: Mutex<StatusWindow>,
}

impl Metrics {
    /// Metrics for a gateway whose configured routes are `routes` (model name and its targets,
    /// `provider/model`).
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, Vec<String>)>) -> Self {
        let mut routes_by_name = HashMap::new();
        let mut configured = Vec::new();
        for (route, targets) in routes {
            routes_by_name.insert(route.to_owned(), Arc::from(route));
            configured.extend(targets.into_iter().map(Arc::<str>::from));
        }
        let mut m = Self {
            registry: Registry::with_prefix("sluice"),
            requests: Family::default(),
            in_flight: Gauge::default(),
            request_duration: hist(latency_histogram),
            ttft: hist(latency_histogram),
            overhead: hist(overhead_histogram),
            tokens: Family::default(),
            attempts: Family::default(),
            attempt_failures: Family::default(),
            retries: Family::default(),
            retry_delay: hist(delay_histogram),
            gave_up: Family::default(),
            skipped: Family::default(),
            budget_exhausted: Family::default(),
            limiter_wait: hist(limiter_histogram),
            limiter_rejections: Family::default(),
            fallbacks: Family::default(),
            streams_interrupted: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            retry_budget: Family::default(),
            parked: Family::default(),
            bucket_level: Family::default(),
            redis_degraded: Gauge::default(),
            redis_fallbacks: Gauge::default(),
            routes: routes_by_name,
            direct: Arc::from(DIRECT_ROUTE),
            none: Arc::from("none"),
            targets: TargetNames {
                known: RwLock::new(HashMap::new()),
                other: Arc::from("other"),
            },
            window: Mutex::new(StatusWindow::new(unix_ms(), configured.iter().cloned())),
        };
        m.register();
        for target in &configured {
            // Every configured target has a breaker gauge from the start.
            m.breaker_state.get_or_create(&m.target(target)).set(0);
        }
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "requests",
            "Requests to the chat endpoints, by route (configured model name, or `direct`), answering or last target, outcome (`ok`, an error class, `invalid_request`, `unknown_model`, `cancelled`, `gateway_shutdown`) and whether they streamed",
            self.requests.clone(),
        );
        r.register(
            "requests_in_flight",
            "Chat requests being served now (streams until their last event)",
            self.in_flight.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Whole request latency as the gateway sees it: for streams, until the last event",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        r.register_with_unit(
            "time_to_first_token",
            "Streams: from the call's start to its commit point (first content event)",
            Unit::Seconds,
            self.ttft.clone(),
        );
        r.register_with_unit(
            "gateway_overhead",
            "The gateway's own time per committed request: body received to response head ready, minus upstream attempts and deliberate waits (backoff, parks)",
            Unit::Seconds,
            self.overhead.clone(),
        );
        r.register(
            "tokens",
            "Tokens reported by the provider's usage, by target and direction (`input`, `output`)",
            self.tokens.clone(),
        );
        r.register(
            "upstream_attempts",
            "Attempts sent to a target",
            self.attempts.clone(),
        );
        r.register(
            "upstream_attempt_failures",
            "Attempts that failed before commit, by target and error class",
            self.attempt_failures.clone(),
        );
        r.register(
            "retries",
            "Retries scheduled on a target, by the class of the failure retried (after a failed attempt, before the backoff sleep)",
            self.retries.clone(),
        );
        r.register_with_unit(
            "retry_delay",
            "Backoff delay chosen before a retry (server hints included)",
            Unit::Seconds,
            self.retry_delay.clone(),
        );
        r.register(
            "target_gave_up",
            "Targets given up on by a call, by the last failure's class and why",
            self.gave_up.clone(),
        );
        r.register(
            "target_skipped",
            "Targets passed over without an attempt (`circuit_open`, `parked`, `smaller_window`)",
            self.skipped.clone(),
        );
        r.register(
            "retry_budget_exhausted",
            "Retries refused because the target's retry budget was spent",
            self.budget_exhausted.clone(),
        );
        r.register_with_unit(
            "ratelimit_wait",
            "Time an attempt waited in the proactive rate limiter's queue before it was sent",
            Unit::Seconds,
            self.limiter_wait.clone(),
        );
        r.register(
            "ratelimit_rejections",
            "Attempts the proactive rate limiter refused (`would_wait`, `too_large`, `store_unavailable`)",
            self.limiter_rejections.clone(),
        );
        r.register(
            "fallbacks",
            "Calls that moved from one target of their chain to the next",
            self.fallbacks.clone(),
        );
        r.register(
            "streams_interrupted",
            "Streams that broke after commit (they end with an error event), by target and cause class",
            self.streams_interrupted.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker state per target: 0 closed, 1 half-open, 2 open",
            self.breaker_state.clone(),
        );
        r.register(
            "breaker_transitions",
            "Circuit breaker state changes per target",
            self.breaker_transitions.clone(),
        );
        r.register(
            "retry_budget_available",
            "Retries the target's retry budget allows right now",
            self.retry_budget.clone(),
        );
        r.register_with_unit(
            "target_parked",
            "Time left on a target's rate-limit park (0 when not parked)",
            Unit::Seconds,
            self.parked.clone(),
        );
        r.register(
            "ratelimit_bucket_level",
            "Proactive rate limiter: units available now in each bucket, by limiter key and axis (`requests`, `tokens`); below zero after a response used more than was reserved",
            self.bucket_level.clone(),
        );
        r.register(
            "ratelimit_redis_degraded",
            "1 while the shared Redis rate-limit store is unreachable and this replica runs on local buckets at its share of each limit",
            self.redis_degraded.clone(),
        );
        r.register(
            "ratelimit_redis_fallbacks",
            "How many times this replica has fallen back from Redis to local buckets",
            self.redis_fallbacks.clone(),
        );
    }

    /// The `route` label for a request's model.
    pub fn route_label(&self, model: &str) -> Arc<str> {
        self.routes
            .get(model)
            .cloned()
            .unwrap_or_else(|| self.direct.clone())
    }

    fn target(&self, name: &Arc<str>) -> TargetLabels {
        TargetLabels {
            target: self.targets.label(name),
        }
    }

    /// Refreshes the rate limiter's gauges: bucket levels per key and axis (client-scoped keys
    /// are left out: one series per client key would be unbounded cardinality), and whether the
    /// shared Redis store is degraded to local buckets, with how often it was.
    pub fn set_limiter(
        &self,
        levels: &[(
            Arc<str>,
            sluice::Limits,
            Result<sluice::Levels, sluice::StoreError>,
        )],
        redis: Option<(bool, u64)>,
    ) {
        for (key, _, levels) in levels {
            if key.contains('|') {
                continue;
            }
            let Ok(levels) = levels else { continue };
            for (axis, level) in [("requests", levels.requests), ("tokens", levels.tokens)] {
                if let Some(level) = level {
                    self.bucket_level
                        .get_or_create(&BucketLabels {
                            key: key.clone(),
                            axis,
                        })
                        .set(level);
                }
            }
        }
        if let Some((degraded, fallbacks)) = redis {
            self.redis_degraded.set(i64::from(degraded));
            self.redis_fallbacks
                .set(i64::try_from(fallbacks).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text (OpenMetrics 1.0), with the health gauges refreshed from `health`
    /// ([`sluice::Client::target_status`]) first.
    pub fn render(&self, health: &[TargetStatus]) -> String {
        for status in health {
            let labels = self.target(&status.target);
            self.breaker_state
                .get_or_create(&labels)
                .set(status.breaker.gauge());
            self.retry_budget
                .get_or_create(&labels)
                .set(status.retry_budget);
            self.parked
                .get_or_create(&labels)
                .set(status.parked_for.map_or(0.0, |d| d.as_secs_f64()));
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The status page's report at `now_ms`; see `status.rs` for the schema.
    pub fn status_report(&self, now_ms: u64, health: &[TargetStatus]) -> StatusReport {
        self.window
            .lock()
            .report(now_ms, health, self.in_flight.get())
    }

    fn finish(&self, r: &mut RequestRecorder) {
        let route = r.route.take().unwrap_or_else(|| self.none.clone());
        let target = r.target.as_ref().map(|t| self.targets.label(t));
        let latency = r.started.elapsed();
        self.in_flight.dec();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                target: target.clone().unwrap_or_else(|| self.none.clone()),
                outcome: r.outcome,
                stream: r.stream,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteStreamLabels {
                route: route.clone(),
                stream: r.stream,
            })
            .observe(latency.as_secs_f64());
        if let Some(ttft) = r.ttft {
            self.ttft
                .get_or_create(&RouteLabels { route })
                .observe(ttft.as_secs_f64());
        }
        if let Some(overhead) = r.overhead {
            self.overhead
                .get_or_create(&StreamLabels { stream: r.stream })
                .observe(overhead.as_secs_f64());
        }
        if let (Some(target), Some(usage)) = (&target, &r.usage) {
            for (direction, n) in [
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
            ] {
                if n > 0 {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            target: target.clone(),
                            direction,
                        })
                        .inc_by(n);
                }
            }
        }
        let sample = RequestSample {
            target,
            ok: r.outcome == "ok",
            latency,
            ttft: r.ttft,
            overhead: r.overhead,
        };
        self.window.lock().request(unix_ms(), &sample);
    }
}

impl Observer for Metrics {
    fn on_event(&self, event: &CallEvent) {
        match event {
            CallEvent::AttemptStarted { target, .. } => {
                let labels = self.target(target);
                self.attempts.get_or_create(&labels).inc();
                self.window.lock().attempt(unix_ms(), &labels.target);
            }
            CallEvent::AttemptFailed { target, class, .. } => {
                let target = self.targets.label(target);
                self.attempt_failures
                    .get_or_create(&TargetClassLabels {
                        target: target.clone(),
                        class: class.metric_label(),
                    })
                    .inc();
                self.window
                    .lock()
                    .attempt_failed(unix_ms(), &target, *class);
            }
            CallEvent::RetryScheduled {
                target,
                class,
                delay,
                ..
            } => {
                let labels = self.target(target);
                self.retries
                    .get_or_create(&TargetClassLabels {
                        target: labels.target.clone(),
                        class: class.metric_label(),
                    })
                    .inc();
                self.retry_delay
                    .get_or_create(&labels)
                    .observe(delay.as_secs_f64());
                self.window.lock().retry(unix_ms(), &labels.target);
            }
            CallEvent::TargetGaveUp {
                target,
                class,
                reason,
            } => {
                self.gave_up
                    .get_or_create(&GaveUpLabels {
                        target: self.targets.label(target),
                        class: class.metric_label(),
                        reason: reason.metric_label(),
                    })
                    .inc();
            }
            CallEvent::TargetSkipped { target, reason } => {
                self.skipped
                    .get_or_create(&TargetReasonLabels {
                        target: self.targets.label(target),
                        reason,
                    })
                    .inc();
            }
            CallEvent::BreakerTransition { target, from, to } => {
                let target = self.targets.label(target);
                self.breaker_transitions
                    .get_or_create(&TransitionLabels {
                        target: target.clone(),
                        from: from.metric_label(),
                        to: to.metric_label(),
                    })
                    .inc();
                self.breaker_state
                    .get_or_create(&TargetLabels {
                        target: target.clone(),
                    })
                    .set(to.gauge());
                self.window.lock().breaker(unix_ms(), &target, *from, *to);
            }
            CallEvent::BudgetExhausted { target } => {
                self.budget_exhausted
                    .get_or_create(&self.target(target))
                    .inc();
            }
            CallEvent::LimiterWaited { target, wait } => {
                self.limiter_wait
                    .get_or_create(&self.target(target))
                    .observe(wait.as_secs_f64());
            }
            CallEvent::LimiterRejected { target, reason } => {
                self.limiter_rejections
                    .get_or_create(&TargetReasonLabels {
                        target: self.targets.label(target),
                        reason,
                    })
                    .inc();
            }
            CallEvent::FallbackTaken { from, to } => {
                let from = self.targets.label(from);
                self.fallbacks
                    .get_or_create(&FallbackLabels {
                        from: from.clone(),
                        to: self.targets.label(to),
                    })
                    .inc();
                self.window.lock().fallback(unix_ms(), &from);
            }
            CallEvent::Committed { .. } => {}
            CallEvent::StreamInterrupted { target, cause } => {
                let target = self.targets.label(target);
                self.streams_interrupted
                    .get_or_create(&TargetClassLabels {
                        target: target.clone(),
                        class: cause.metric_label(),
                    })
                    .inc();
                self.window.lock().attempt_failed(
                    unix_ms(),
                    &target,
                    ErrorClass::StreamInterrupted,
                );
            }
        }
    }
}

/// Now, in unix milliseconds (the status window's clock).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Follows one chat request and records it once, when dropped. Without metrics (`None`) every
/// method is a no-op.
#[derive(Debug)]
pub struct RequestRecorder {
    metrics: Option<Arc<Metrics>>,
    started: Instant,
    route: Option<Arc<str>>,
    target: Option<Arc<str>>,
    stream: bool,
    outcome: &'static str,
    ttft: Option<Duration>,
    overhead: Option<Duration>,
    usage: Option<Usage>,
}

impl RequestRecorder {
    /// Starts following a request that arrived at `started`.
    pub fn start(metrics: Option<&Arc<Metrics>>, started: Instant) -> Self {
        if let Some(m) = metrics {
            m.in_flight.inc();
        }
        Self {
            metrics: metrics.cloned(),
            started,
            route: None,
            target: None,
            stream: false,
            // Until told otherwise: the client went away before an answer.
            outcome: "cancelled",
            ttft: None,
            overhead: None,
            usage: None,
        }
    }

    /// The request asked for `model`, streaming or not.
    pub fn model(&mut self, model: &str, stream: bool) {
        if let Some(m) = &self.metrics {
            self.route = Some(m.route_label(model));
        }
        self.stream = stream;
    }

    /// The route label this request is counted under (`none` before the body was parsed).
    pub fn route(&self) -> &str {
        self.route.as_deref().unwrap_or("none")
    }

    /// The call committed with `info`; the response head is ready at `ready`, and the body
    /// had arrived at `body_read`.
    pub fn committed(&mut self, info: &CallInfo, body_read: Instant, ready: Instant) {
        self.target = Some(info.target.clone());
        if self.stream {
            self.ttft = Some(info.elapsed);
        }
        let busy = ready.saturating_duration_since(body_read);
        self.overhead = Some(
            busy.saturating_sub(info.upstream_wait)
                .saturating_sub(info.backoff_wait),
        );
    }

    /// The call failed: counted under its class, at the last target it tried.
    pub fn failed(&mut self, err: &sluice::Error) {
        self.outcome = match err {
            sluice::Error::UnknownModel { .. } => "unknown_model",
            sluice::Error::InvalidRequest(_) => "invalid_request",
            _ => err
                .class()
                .map_or("invalid_request", ErrorClass::metric_label),
        };
        if let Some(last) = err.as_call_failure().and_then(|f| f.attempts.last()) {
            self.target = Some(last.target.clone());
        }
    }

    /// Ends with `outcome` (`ok`, `invalid_request`, `stream_interrupted`, ...).
    pub fn outcome(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }

    /// The provider's token counts, when it reported them.
    pub fn usage(&mut self, usage: Option<&Usage>) {
        if let Some(u) = usage {
            self.usage = Some(u.clone());
        }
    }
}

impl Drop for RequestRecorder {
    fn drop(&mut self) {
        if let Some(m) = self.metrics.take() {
            m.finish(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::BreakerState;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn events_move_their_families() {
        let m = Metrics::new([("chat", vec!["a/m".to_owned(), "b/m".to_owned()])]);
        let text = m.render(&[]);
        assert!(
            text.contains("sluice_breaker_state{target=\"a/m\"} 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        let a = name("a/m");
        for event in [
            CallEvent::AttemptStarted {
                target: a.clone(),
                attempt: 1,
            },
            CallEvent::AttemptFailed {
                target: a.clone(),
                attempt: 1,
                class: ErrorClass::Overloaded,
                status: Some(503),
            },
            CallEvent::RetryScheduled {
                target: a.clone(),
                class: ErrorClass::Overloaded,
                next_attempt: 2,
                delay: Duration::from_millis(30),
            },
            CallEvent::BreakerTransition {
                target: a.clone(),
                from: BreakerState::Closed,
                to: BreakerState::Open,
            },
            CallEvent::FallbackTaken {
                from: a.clone(),
                to: name("b/m"),
            },
            CallEvent::BudgetExhausted { target: a.clone() },
        ] {
            m.on_event(&event);
        }
        let text = m.render(&[]);
        for line in [
            "sluice_upstream_attempts_total{target=\"a/m\"} 1",
            "sluice_upstream_attempt_failures_total{target=\"a/m\",class=\"overloaded\"} 1",
            "sluice_retries_total{target=\"a/m\",class=\"overloaded\"} 1",
            "sluice_retry_delay_seconds_count{target=\"a/m\"} 1",
            "sluice_breaker_transitions_total{target=\"a/m\",from=\"closed\",to=\"open\"} 1",
            "sluice_breaker_state{target=\"a/m\"} 2",
            "sluice_fallbacks_total{from=\"a/m\",to=\"b/m\"} 1",
            "sluice_retry_budget_exhausted_total{target=\"a/m\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn requests_are_recorded_once_with_low_cardinality_labels() {
        let m = Arc::new(Metrics::new([("chat", vec!["a/m".to_owned()])]));
        {
            let mut r = RequestRecorder::start(Some(&m), Instant::now());
            r.model("chat", false);
            assert_eq!(r.route(), "chat");
            r.outcome("ok");
        }
        {
            // An unconfigured model name is `direct`, whatever the client sent.
            let mut r = RequestRecorder::start(Some(&m), Instant::now());
            r.model("provider/some-client-chosen-name", true);
            assert_eq!(r.route(), DIRECT_ROUTE);
        }
        let text = m.render(&[]);
        assert!(text.contains(
            "sluice_requests_total{route=\"chat\",target=\"none\",outcome=\"ok\",stream=\"false\"} 1"
        ), "{text}");
        assert!(text.contains(
            "sluice_requests_total{route=\"direct\",target=\"none\",outcome=\"cancelled\",stream=\"true\"} 1"
        ), "{text}");
        assert!(text.contains("sluice_requests_in_flight 0"), "{text}");
        assert!(!text.contains("some-client-chosen-name"));
    }

    #[test]
    fn target_labels_are_capped() {
        let m = Metrics::new([]);
        for i in 0..(MAX_TARGET_LABELS + 10) {
            m.on_event(&CallEvent::AttemptStarted {
                target: name(&format!("p/model-{i}")),
                attempt: 1,
            });
        }
        let text = m.render(&[]);
        assert_eq!(
            text.matches("sluice_upstream_attempts_total{").count(),
            MAX_TARGET_LABELS + 1
        );
        assert!(text.contains("sluice_upstream_attempts_total{target=\"other\"} 10"));
    }

    #[test]
    fn overhead_is_the_time_not_spent_upstream_or_waiting() {
        let m = Arc::new(Metrics::new([]));
        let t0 = Instant::now();
        let mut r = RequestRecorder::start(Some(&m), t0);
        r.model("x", true);
        r.committed(
            &CallInfo {
                target: name("p/m"),
                attempts: 2,
                elapsed: Duration::from_millis(900),
                upstream_wait: Duration::from_millis(600),
                backoff_wait: Duration::from_millis(300),
                truncation: None,
            },
            t0,
            t0 + Duration::from_millis(901),
        );
        assert_eq!(r.overhead, Some(Duration::from_millis(1)));
        assert_eq!(r.ttft, Some(Duration::from_millis(900)));
    }
}
