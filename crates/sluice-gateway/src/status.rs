//! The status page (`GET /status`) and the JSON it polls (`GET /status.json`).
//!
//! # Why a ring of buckets
//!
//! Prometheus answers "what happened" over any range, but only with a Prometheus server next to
//! the gateway. The status page answers "how is it going right now" with nothing but the
//! gateway: a [`StatusWindow`] keeps the last [`BUCKETS`] buckets of [`BUCKET_MS`] each (ten
//! minutes of five-second buckets) of counts and latency histograms, per target and for the
//! gateway as a whole. A bucket is reused when its slot comes round again, so memory is fixed by
//! the number of targets, never by traffic. Every method takes the time as unix milliseconds: the window never reads a
//! clock, so tests drive it with plain numbers.
//!
//! Percentiles come from [`LogHistogram`]s (log-spaced buckets, four per doubling), merged over
//! the last [`STATS_BUCKETS`] buckets (five minutes): they are approximate, within about 9 % of
//! the true value, which is plenty for a page read at a glance. For alerting and history, use the
//! Prometheus histograms on `/metrics`.
//!
//! # `GET /status.json` (schema version 1)
//!
//! Durations are milliseconds (`*_ms`), times are unix milliseconds. A percentile is `null`
//! when there are no samples. Series hold one value per bucket, oldest first: entry `i` covers
//! `series_start_ms + i * bucket_ms` onwards, and the last one is the current, still-filling
//! bucket. "Last minute" figures sum the current bucket and the eleven before it.
//!
//! ```text
//! {
//!   "version": 1,
//!   "now_ms": u64, "started_ms": u64,          // the gateway's start
//!   "bucket_ms": 5000, "buckets": 120,         // series resolution and length
//!   "series_start_ms": u64,
//!   "stats_window_ms": 300000,                 // what percentiles and errors_by_class cover
//!   "gateway": {
//!     "in_flight": i64,                        // requests being served now
//!     "totals": {"requests", "ok", "failed"},  // since start
//!     "last_minute": {"requests", "failed", "retries", "fallbacks"},
//!     "latency_ms":  {"p50", "p99", "count"},  // whole request, every route
//!     "ttft_ms":     {"p50", "p99", "count"},  // streams: time to first token
//!     "overhead_ms": {"p50", "p99", "count"},  // the gateway's own time (see metrics.rs)
//!     "series": {"requests": [u64], "failed": [u64], "retries": [u64], "fallbacks": [u64],
//!                "latency_p99_ms": [f64|null], "overhead_p99_ms": [f64|null]}
//!   },
//!   "targets": [{                              // sorted by name
//!     "name": "provider/model",
//!     "health": "healthy" | "degraded" | "open",
//!     "breaker": "closed" | "half_open" | "open",
//!     "retry_budget": f64 | null,              // retries the budget allows now
//!     "parked_for_ms": u64 | null,             // rate-limit park left
//!     "last_minute": {"attempts", "answered", "errors", "retries", "fallbacks"},
//!     "errors_by_class": {"rate_limited": u64, ...},   // failed attempts, stats window
//!     "latency_ms": {"p50", "p99", "count"},   // requests this target answered
//!     "ttft_ms": {"p50", "p99", "count"},
//!     "series": {"attempts": [u64], "errors": [u64], "retries": [u64], "fallbacks": [u64]}
//!   }],
//!   "breaker_events": [{"at_ms", "target", "from", "to"}],  // newest last, at most 32
//!   "rate_limits": [{"key", "requests", "requests_capacity", "tokens", "tokens_capacity"}],
//!   "redis": {"degraded", "fallbacks"} | null              // only with backend = "redis"
//! }
//! ```
//!
//! `health` is `open` while the breaker is open; `degraded` when it is half-open, the target is
//! parked after a rate limit, or an attempt on it failed in the last minute; else `healthy`.
//! The rate limiter's bucket levels will join each target once the limiter exists; nothing
//! stands in for them until then.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sluice::{BreakerState, ErrorClass, TargetStatus};

/// The page: one self-contained HTML file (inline CSS, JS and SVG; no external resource).
pub(crate) const STATUS_HTML: &str = include_str!("../assets/status.html");

/// Width of one bucket.
pub const BUCKET_MS: u64 = 5_000;
/// Buckets kept: ten minutes.
pub const BUCKETS: usize = 120;
/// Buckets that percentiles and `errors_by_class` cover: five minutes.
pub const STATS_BUCKETS: usize = 60;
/// Buckets in "the last minute".
const MINUTE_BUCKETS: usize = 12;
/// Breaker transitions kept for the page.
const MAX_EVENTS: usize = 32;

/// A histogram with log-spaced buckets: four per doubling from 10 µs to about 20 minutes.
/// Quantiles are the geometric middle of their bucket, so within 9 % of the true value.
#[derive(Debug, Clone, Default)]
pub struct LogHistogram {
    counts: Option<Box<[u32; LogHistogram::LEN]>>,
    total: u64,
}

impl LogHistogram {
    const LEN: usize = 108;
    const MIN_SECS: f64 = 10e-6;
    const PER_DOUBLING: f64 = 4.0;

    fn index(value: Duration) -> usize {
        let ratio = value.as_secs_f64() / Self::MIN_SECS;
        if ratio <= 1.0 {
            return 0;
        }
        let i = (ratio.log2() * Self::PER_DOUBLING).floor();
        (i as usize).min(Self::LEN - 1)
    }

    /// Counts one sample.
    pub fn record(&mut self, value: Duration) {
        let counts = self.counts.get_or_insert_with(|| Box::new([0; Self::LEN]));
        let i = Self::index(value);
        counts[i] = counts[i].saturating_add(1);
        self.total += 1;
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LogHistogram) {
        let Some(theirs) = &other.counts else {
            return;
        };
        let ours = self.counts.get_or_insert_with(|| Box::new([0; Self::LEN]));
        for (a, b) in ours.iter_mut().zip(theirs.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1), or `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts = self.counts.as_ref()?;
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                let exp = (i as f64 + 0.5) / Self::PER_DOUBLING;
                return Some(Duration::from_secs_f64(Self::MIN_SECS * exp.exp2()));
            }
        }
        None
    }
}

/// Counts of one target in one bucket.
#[derive(Debug, Clone, Default)]
struct TargetSlot {
    attempts: u64,
    answered: u64,
    errors: [u64; ErrorClass::ALL.len()],
    retries: u64,
    fallbacks: u64,
    latency: LogHistogram,
    ttft: LogHistogram,
}

impl TargetSlot {
    fn errors(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Gateway-wide counts in one bucket.
#[derive(Debug, Clone, Default)]
struct GatewaySlot {
    requests: u64,
    failed: u64,
    retries: u64,
    fallbacks: u64,
    latency: LogHistogram,
    ttft: LogHistogram,
    overhead: LogHistogram,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Bucket number (`now_ms / BUCKET_MS`) whose counts the slot holds.
    number: u64,
    gateway: GatewaySlot,
    targets: HashMap<Arc<str>, TargetSlot>,
}

/// One finished request, as the status page counts it.
#[derive(Debug, Clone)]
pub struct RequestSample {
    /// The target that answered (or the last one tried), if any.
    pub target: Option<Arc<str>>,
    /// Whether the client got a complete answer.
    pub ok: bool,
    /// Whole request.
    pub latency: Duration,
    /// Streams: time to first token.
    pub ttft: Option<Duration>,
    /// The gateway's own time, when the call committed.
    pub overhead: Option<Duration>,
}

/// A breaker transition, for the page's event list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerEvent {
    /// When, unix ms.
    pub at_ms: u64,
    /// `provider/model`.
    pub target: String,
    /// State before.
    pub from: &'static str,
    /// State after.
    pub to: &'static str,
}

/// The last ten minutes of traffic in [`BUCKET_MS`] buckets; see the module docs.
#[derive(Debug)]
pub struct StatusWindow {
    slots: Vec<Slot>,
    events: VecDeque<BreakerEvent>,
    started_ms: u64,
    totals: Totals,
    /// Targets shown even before their first request (the configured chains), sorted.
    configured: Vec<Arc<str>>,
}

/// Request counts since the gateway started.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Every request recorded.
    pub requests: u64,
    /// Requests that got a complete answer.
    pub ok: u64,
    /// The others.
    pub failed: u64,
}

impl StatusWindow {
    /// An empty window started at `now_ms`, listing `configured` targets from the start.
    pub fn new(now_ms: u64, configured: impl IntoIterator<Item = Arc<str>>) -> Self {
        let mut configured: Vec<Arc<str>> = configured.into_iter().collect();
        configured.sort();
        configured.dedup();
        Self {
            slots: vec![Slot::default(); BUCKETS],
            events: VecDeque::new(),
            started_ms: now_ms,
            totals: Totals::default(),
            configured,
        }
    }

    /// The slot for `now_ms`, cleared first if it holds an older bucket.
    fn slot(&mut self, now_ms: u64) -> &mut Slot {
        let number = now_ms / BUCKET_MS;
        let slot = &mut self.slots[(number % BUCKETS as u64) as usize];
        if slot.number != number {
            slot.number = number;
            slot.gateway = GatewaySlot::default();
            slot.targets.clear();
        }
        slot
    }

    fn target(&mut self, now_ms: u64, target: &Arc<str>) -> &mut TargetSlot {
        let slot = self.slot(now_ms);
        if !slot.targets.contains_key(target) {
            slot.targets.insert(target.clone(), TargetSlot::default());
        }
        slot.targets.get_mut(target).expect("inserted above")
    }

    /// An attempt was sent to `target`.
    pub fn attempt(&mut self, now_ms: u64, target: &Arc<str>) {
        self.target(now_ms, target).attempts += 1;
    }

    /// An attempt on `target` failed with `class` (or a committed stream broke).
    pub fn attempt_failed(&mut self, now_ms: u64, target: &Arc<str>, class: ErrorClass) {
        let i = ErrorClass::ALL
            .iter()
            .position(|c| *c == class)
            .unwrap_or(0);
        self.target(now_ms, target).errors[i] += 1;
    }

    /// A retry on `target` was scheduled.
    pub fn retry(&mut self, now_ms: u64, target: &Arc<str>) {
        self.target(now_ms, target).retries += 1;
        self.slot(now_ms).gateway.retries += 1;
    }

    /// A call fell back from `from` to the next target.
    pub fn fallback(&mut self, now_ms: u64, from: &Arc<str>) {
        self.target(now_ms, from).fallbacks += 1;
        self.slot(now_ms).gateway.fallbacks += 1;
    }

    /// `target`'s breaker went from `from` to `to`.
    pub fn breaker(
        &mut self,
        now_ms: u64,
        target: &Arc<str>,
        from: BreakerState,
        to: BreakerState,
    ) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(BreakerEvent {
            at_ms: now_ms,
            target: target.to_string(),
            from: from.metric_label(),
            to: to.metric_label(),
        });
    }

    /// A request finished.
    pub fn request(&mut self, now_ms: u64, sample: &RequestSample) {
        self.totals.requests += 1;
        if sample.ok {
            self.totals.ok += 1;
        } else {
            self.totals.failed += 1;
        }
        let gateway = &mut self.slot(now_ms).gateway;
        gateway.requests += 1;
        if !sample.ok {
            gateway.failed += 1;
        }
        gateway.latency.record(sample.latency);
        if let Some(ttft) = sample.ttft {
            gateway.ttft.record(ttft);
        }
        if let Some(overhead) = sample.overhead {
            gateway.overhead.record(overhead);
        }
        if let (Some(target), true) = (&sample.target, sample.ok) {
            let t = self.target(now_ms, target);
            t.answered += 1;
            t.latency.record(sample.latency);
            if let Some(ttft) = sample.ttft {
                t.ttft.record(ttft);
            }
        }
    }

    /// The slots of the last `n` buckets up to `now_ms`, oldest first; `None` for a bucket
    /// with no data (never written, or overwritten since).
    fn recent(&self, now_ms: u64, n: usize) -> impl Iterator<Item = Option<&Slot>> {
        let current = now_ms / BUCKET_MS;
        (0..n as u64).rev().map(move |back| {
            let number = current.checked_sub(back)?;
            let slot = &self.slots[(number % BUCKETS as u64) as usize];
            (slot.number == number).then_some(slot)
        })
    }

    /// The report `GET /status.json` serves; `health` is [`sluice::Client::target_status`],
    /// `in_flight` the requests being served now.
    pub fn report(&self, now_ms: u64, health: &[TargetStatus], in_flight: i64) -> StatusReport {
        let current = now_ms / BUCKET_MS;
        let series_start_ms = current.saturating_sub(BUCKETS as u64 - 1) * BUCKET_MS;
        let slots: Vec<Option<&Slot>> = self.recent(now_ms, BUCKETS).collect();
        let stats = &slots[BUCKETS - STATS_BUCKETS..];
        let minute = &slots[BUCKETS - MINUTE_BUCKETS..];

        let gw = |f: &dyn Fn(&GatewaySlot) -> u64| -> Vec<u64> {
            slots
                .iter()
                .map(|s| s.map_or(0, |s| f(&s.gateway)))
                .collect()
        };
        let gw_sum = |range: &[Option<&Slot>], f: &dyn Fn(&GatewaySlot) -> u64| -> u64 {
            range.iter().flatten().map(|s| f(&s.gateway)).sum()
        };
        let gw_hist = |f: &dyn Fn(&GatewaySlot) -> &LogHistogram| {
            let mut h = LogHistogram::default();
            for s in stats.iter().flatten() {
                h.merge(f(&s.gateway));
            }
            Quantiles::of(&h)
        };
        let gw_p99 = |f: &dyn Fn(&GatewaySlot) -> &LogHistogram| -> Vec<Option<f64>> {
            slots
                .iter()
                .map(|s| s.and_then(|s| f(&s.gateway).quantile(0.99)).map(ms))
                .collect()
        };
        let gateway = GatewayReport {
            in_flight,
            totals: self.totals,
            last_minute: GatewayMinute {
                requests: gw_sum(minute, &|g| g.requests),
                failed: gw_sum(minute, &|g| g.failed),
                retries: gw_sum(minute, &|g| g.retries),
                fallbacks: gw_sum(minute, &|g| g.fallbacks),
            },
            latency_ms: gw_hist(&|g| &g.latency),
            ttft_ms: gw_hist(&|g| &g.ttft),
            overhead_ms: gw_hist(&|g| &g.overhead),
            series: GatewaySeries {
                requests: gw(&|g| g.requests),
                failed: gw(&|g| g.failed),
                retries: gw(&|g| g.retries),
                fallbacks: gw(&|g| g.fallbacks),
                latency_p99_ms: gw_p99(&|g| &g.latency),
                overhead_p99_ms: gw_p99(&|g| &g.overhead),
            },
        };

        let mut names: Vec<Arc<str>> = self.configured.clone();
        names.extend(health.iter().map(|h| h.target.clone()));
        for slot in slots.iter().flatten() {
            names.extend(slot.targets.keys().cloned());
        }
        names.sort();
        names.dedup();
        let targets = names
            .into_iter()
            .map(|name| {
                let series = |f: &dyn Fn(&TargetSlot) -> u64| -> Vec<u64> {
                    slots
                        .iter()
                        .map(|s| target_of(*s, &name).map_or(0, f))
                        .collect()
                };
                let sum = |range: &[Option<&Slot>], f: &dyn Fn(&TargetSlot) -> u64| -> u64 {
                    range
                        .iter()
                        .filter_map(|s| target_of(*s, &name))
                        .map(f)
                        .sum()
                };
                let hist = |f: &dyn Fn(&TargetSlot) -> &LogHistogram| {
                    let mut h = LogHistogram::default();
                    for t in stats.iter().filter_map(|s| target_of(*s, &name)) {
                        h.merge(f(t));
                    }
                    Quantiles::of(&h)
                };
                let mut errors_by_class = BTreeMap::new();
                for t in stats.iter().filter_map(|s| target_of(*s, &name)) {
                    for (class, n) in ErrorClass::ALL.iter().zip(t.errors) {
                        if n > 0 {
                            *errors_by_class.entry(class.metric_label()).or_insert(0) += n;
                        }
                    }
                }
                let status = health.iter().find(|h| h.target == name);
                let breaker = status.map_or(BreakerState::Closed, |s| s.breaker);
                let parked = status.and_then(|s| s.parked_for);
                let last_minute = TargetMinute {
                    attempts: sum(minute, &|t| t.attempts),
                    answered: sum(minute, &|t| t.answered),
                    errors: sum(minute, &TargetSlot::errors),
                    retries: sum(minute, &|t| t.retries),
                    fallbacks: sum(minute, &|t| t.fallbacks),
                };
                let health = match breaker {
                    BreakerState::Open => "open",
                    BreakerState::HalfOpen => "degraded",
                    BreakerState::Closed if parked.is_some() || last_minute.errors > 0 => {
                        "degraded"
                    }
                    BreakerState::Closed => "healthy",
                };
                TargetReport {
                    name: name.to_string(),
                    health,
                    breaker: breaker.metric_label(),
                    retry_budget: status.map(|s| round3(s.retry_budget)),
                    parked_for_ms: parked.map(|d| d.as_millis() as u64),
                    last_minute,
                    errors_by_class,
                    latency_ms: hist(&|t| &t.latency),
                    ttft_ms: hist(&|t| &t.ttft),
                    series: TargetSeries {
                        attempts: series(&|t| t.attempts),
                        errors: series(&TargetSlot::errors),
                        retries: series(&|t| t.retries),
                        fallbacks: series(&|t| t.fallbacks),
                    },
                }
            })
            .collect();

        StatusReport {
            version: 1,
            now_ms,
            started_ms: self.started_ms,
            bucket_ms: BUCKET_MS,
            buckets: BUCKETS,
            series_start_ms,
            stats_window_ms: STATS_BUCKETS as u64 * BUCKET_MS,
            gateway,
            targets,
            breaker_events: self.events.iter().cloned().collect(),
            rate_limits: Vec::new(),
            redis: None,
        }
    }
}

fn target_of<'a>(slot: Option<&'a Slot>, name: &Arc<str>) -> Option<&'a TargetSlot> {
    slot.and_then(|s| s.targets.get(name))
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1e3)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `GET /status.json`; see the module docs for the schema.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Schema version: 1.
    pub version: u32,
    /// When the report was made.
    pub now_ms: u64,
    /// When the gateway started.
    pub started_ms: u64,
    /// Width of one series entry.
    pub bucket_ms: u64,
    /// Length of every series.
    pub buckets: usize,
    /// Start of the first series entry.
    pub series_start_ms: u64,
    /// What percentiles and `errors_by_class` cover.
    pub stats_window_ms: u64,
    /// The gateway as a whole.
    pub gateway: GatewayReport,
    /// Every configured or used target, sorted by name.
    pub targets: Vec<TargetReport>,
    /// Recent breaker transitions, newest last.
    pub breaker_events: Vec<BreakerEvent>,
    /// The proactive rate limiter's buckets in use, by limiter key (filled in by the handler,
    /// which can ask the store).
    pub rate_limits: Vec<BucketReport>,
    /// The shared Redis store's state, when limits are shared through Redis.
    pub redis: Option<RedisReport>,
}

/// One limiter key's buckets: units available now and the capacity (`None`: not limited).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BucketReport {
    /// Limiter key (`provider/model`, or a provider with provider-wide limits).
    pub key: String,
    /// Requests available now.
    pub requests: Option<f64>,
    /// Request bucket capacity.
    pub requests_capacity: Option<f64>,
    /// Tokens available now (below zero after an overshoot).
    pub tokens: Option<f64>,
    /// Token bucket capacity.
    pub tokens_capacity: Option<f64>,
}

/// The shared rate-limit store's health.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RedisReport {
    /// Whether this replica runs on local buckets because Redis is unreachable.
    pub degraded: bool,
    /// How many times it fell back.
    pub fallbacks: u64,
}

/// p50 / p99 in milliseconds, and the sample count.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Samples.
    pub count: u64,
}

impl Quantiles {
    fn of(h: &LogHistogram) -> Self {
        Self {
            p50: h.quantile(0.5).map(ms),
            p99: h.quantile(0.99).map(ms),
            count: h.count(),
        }
    }
}

/// The gateway part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayReport {
    /// Requests being served now.
    pub in_flight: i64,
    /// Since start.
    pub totals: Totals,
    /// Last minute.
    pub last_minute: GatewayMinute,
    /// Whole-request latency.
    pub latency_ms: Quantiles,
    /// Streams: time to first token.
    pub ttft_ms: Quantiles,
    /// The gateway's own time.
    pub overhead_ms: Quantiles,
    /// Per bucket.
    pub series: GatewaySeries,
}

/// Gateway counts of the last minute.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GatewayMinute {
    /// Requests finished.
    pub requests: u64,
    /// Of which failed.
    pub failed: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Fallbacks taken.
    pub fallbacks: u64,
}

/// Gateway series, one entry per bucket.
#[derive(Debug, Clone, Serialize)]
pub struct GatewaySeries {
    /// Requests finished.
    pub requests: Vec<u64>,
    /// Requests failed.
    pub failed: Vec<u64>,
    /// Retries scheduled.
    pub retries: Vec<u64>,
    /// Fallbacks taken.
    pub fallbacks: Vec<u64>,
    /// p99 of whole-request latency.
    pub latency_p99_ms: Vec<Option<f64>>,
    /// p99 of gateway overhead.
    pub overhead_p99_ms: Vec<Option<f64>>,
}

/// One target in the report.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// `provider/model`.
    pub name: String,
    /// `healthy`, `degraded` or `open`.
    pub health: &'static str,
    /// Breaker state.
    pub breaker: &'static str,
    /// Retries its budget allows now (`None`: not used yet).
    pub retry_budget: Option<f64>,
    /// Rate-limit park left.
    pub parked_for_ms: Option<u64>,
    /// Last minute.
    pub last_minute: TargetMinute,
    /// Failed attempts by class over the stats window.
    pub errors_by_class: BTreeMap<&'static str, u64>,
    /// Latency of the requests it answered.
    pub latency_ms: Quantiles,
    /// Their time to first token (streams).
    pub ttft_ms: Quantiles,
    /// Per bucket.
    pub series: TargetSeries,
}

/// Target counts of the last minute.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TargetMinute {
    /// Attempts sent.
    pub attempts: u64,
    /// Requests it answered.
    pub answered: u64,
    /// Failed attempts (and streams broken after commit).
    pub errors: u64,
    /// Retries scheduled on it.
    pub retries: u64,
    /// Fallbacks away from it.
    pub fallbacks: u64,
}

/// Target series, one entry per bucket.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSeries {
    /// Attempts sent.
    pub attempts: Vec<u64>,
    /// Failed attempts.
    pub errors: Vec<u64>,
    /// Retries scheduled.
    pub retries: Vec<u64>,
    /// Fallbacks away from it.
    pub fallbacks: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn ok(target: &str, latency_ms: u64) -> RequestSample {
        RequestSample {
            target: Some(name(target)),
            ok: true,
            latency: Duration::from_millis(latency_ms),
            ttft: None,
            overhead: Some(Duration::from_micros(100)),
        }
    }

    #[test]
    fn histogram_quantiles_are_within_ten_percent() {
        let mut h = LogHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 1000);
        for (q, want) in [(0.5, 500.0), (0.99, 990.0), (0.01, 10.0)] {
            let got = h.quantile(q).unwrap().as_secs_f64() * 1e3;
            assert!((got / want - 1.0).abs() < 0.1, "q{q}: {got} vs {want}");
        }
        let mut merged = LogHistogram::default();
        merged.merge(&h);
        merged.merge(&LogHistogram::default());
        assert_eq!(merged.quantile(0.5), h.quantile(0.5));
        // Out of range values land in the end buckets instead of panicking.
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(1_000_000));
        assert!(h.quantile(1.0).is_some());
    }

    #[test]
    fn buckets_roll_over_and_old_data_ages_out() {
        let t = name("p/m");
        let mut w = StatusWindow::new(T0, [t.clone()]);
        w.attempt(T0, &t);
        w.attempt_failed(T0, &t, ErrorClass::RateLimited);
        w.retry(T0, &t);
        w.request(T0, &ok("p/m", 50));
        let r = w.report(T0, &[], 0);
        let target = &r.targets[0];
        assert_eq!(target.name, "p/m");
        assert_eq!(target.health, "degraded", "a failure in the last minute");
        assert_eq!(target.last_minute.attempts, 1);
        assert_eq!(target.last_minute.errors, 1);
        assert_eq!(target.errors_by_class["rate_limited"], 1);
        assert_eq!(*target.series.retries.last().unwrap(), 1);
        assert_eq!(r.gateway.last_minute.retries, 1);
        assert_eq!(r.gateway.totals.requests, 1);

        // A minute later the failure no longer colours the target, but still counts in the
        // five-minute stats and in the series.
        let later = T0 + 61_000;
        let r = w.report(later, &[], 0);
        assert_eq!(r.targets[0].health, "healthy");
        assert_eq!(r.targets[0].last_minute.errors, 0);
        assert_eq!(r.targets[0].errors_by_class["rate_limited"], 1);
        assert_eq!(r.targets[0].series.errors.iter().sum::<u64>(), 1);

        // Ten minutes later everything has aged out of the series, but not the totals.
        let much_later = T0 + 11 * 60_000;
        w.request(much_later, &ok("p/m", 10));
        let r = w.report(much_later, &[], 0);
        assert_eq!(r.targets[0].series.errors.iter().sum::<u64>(), 0);
        assert!(r.targets[0].errors_by_class.is_empty());
        assert_eq!(r.gateway.series.requests.iter().sum::<u64>(), 1);
        assert_eq!(r.gateway.totals.requests, 2);
        assert_eq!(r.targets[0].latency_ms.count, 1);
    }

    #[test]
    fn the_series_is_aligned_to_buckets() {
        let t = name("p/m");
        let mut w = StatusWindow::new(T0, []);
        w.attempt(T0, &t);
        w.attempt(T0 + BUCKET_MS, &t);
        w.attempt(T0 + BUCKET_MS, &t);
        let now = T0 + BUCKET_MS;
        let r = w.report(now, &[], 3);
        assert_eq!(r.gateway.in_flight, 3);
        assert_eq!(r.targets[0].series.attempts.len(), BUCKETS);
        assert_eq!(r.targets[0].series.attempts[BUCKETS - 2..], [1, 2]);
        assert_eq!(
            r.series_start_ms + (BUCKETS as u64 - 1) * BUCKET_MS,
            now / BUCKET_MS * BUCKET_MS
        );
        assert_eq!(r.gateway.series.latency_p99_ms[BUCKETS - 1], None);
    }

    #[test]
    fn health_follows_the_breaker_and_the_park() {
        let t = name("p/m");
        let w = StatusWindow::new(T0, [t.clone()]);
        let status = |breaker, parked_for| TargetStatus {
            target: t.clone(),
            breaker,
            retry_budget: 10.0,
            parked_for,
        };
        let health = |s: TargetStatus| w.report(T0, &[s], 0).targets[0].health;
        assert_eq!(health(status(BreakerState::Closed, None)), "healthy");
        assert_eq!(health(status(BreakerState::Open, None)), "open");
        assert_eq!(health(status(BreakerState::HalfOpen, None)), "degraded");
        assert_eq!(
            health(status(BreakerState::Closed, Some(Duration::from_secs(1)))),
            "degraded"
        );
        let r = w.report(T0, &[status(BreakerState::Open, None)], 0);
        assert_eq!(r.targets[0].breaker, "open");
        assert_eq!(r.targets[0].retry_budget, Some(10.0));
    }

    #[test]
    fn breaker_events_are_bounded_and_in_order() {
        let t = name("p/m");
        let mut w = StatusWindow::new(T0, []);
        for i in 0..(MAX_EVENTS as u64 + 5) {
            w.breaker(T0 + i, &t, BreakerState::Closed, BreakerState::Open);
        }
        let r = w.report(T0 + 100, &[], 0);
        assert_eq!(r.breaker_events.len(), MAX_EVENTS);
        assert_eq!(
            r.breaker_events.last().unwrap().at_ms,
            T0 + MAX_EVENTS as u64 + 4
        );
        assert_eq!(r.breaker_events[0].to, "open");
    }

    #[test]
    fn percentiles_cover_answered_requests_and_failures_count_separately() {
        let mut w = StatusWindow::new(T0, []);
        for i in 0..100 {
            w.request(T0, &ok("p/m", 10 + i));
        }
        w.request(
            T0,
            &RequestSample {
                target: Some(name("p/m")),
                ok: false,
                latency: Duration::from_secs(30),
                ttft: None,
                overhead: None,
            },
        );
        let r = w.report(T0, &[], 0);
        let t = &r.targets[0];
        assert_eq!(t.latency_ms.count, 100, "only answered requests");
        let p50 = t.latency_ms.p50.unwrap();
        assert!((p50 / 60.0 - 1.0).abs() < 0.1, "{p50}");
        assert_eq!(r.gateway.totals.failed, 1);
        assert_eq!(r.gateway.last_minute.failed, 1);
        assert_eq!(
            r.gateway.latency_ms.count, 101,
            "the gateway counts every request"
        );
        assert_eq!(r.gateway.overhead_ms.count, 100);
        let overhead = r.gateway.overhead_ms.p50.unwrap();
        assert!((overhead / 0.1 - 1.0).abs() < 0.1, "{overhead}");
    }
}
