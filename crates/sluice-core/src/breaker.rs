//! A circuit breaker per target.
//!
//! # The state machine
//!
//! - **Closed** (normal): every call is allowed. Each outcome is recorded in a rolling window
//!   of `window` (kept as ten time buckets, so memory is constant at any traffic; an
//!   outcome counts for between 9/10 of `window` and all of it). The breaker **opens** when either
//!   - the failure rate over the window, `failures / (failures + successes)`, reaches
//!     `failure_rate` *and* the window holds at least `min_requests` outcomes, or
//!   - `consecutive_failures` failures arrive in a row (a success resets the run).
//! - **Open**: calls are rejected at once with the instant the breaker will let a probe
//!   through, so the executor skips to the next target of the chain instead of waiting on a
//!   sick one. Opening clears the window. After `cooldown` the breaker is **half-open**; this
//!   is evaluated lazily from the `now` each method receives, there is no timer.
//! - **HalfOpen**: up to `half_open_probes` calls at a time are let through as probes; the
//!   rest are rejected with a short `retry_at` (`now + cooldown / 10`, since when a probe slot
//!   frees up cannot be known). `half_open_probes` probe successes in a row **close** the
//!   breaker (with a fresh window); a single probe failure **re-opens** it for a fresh
//!   `cooldown`.
//!
//! # Which outcomes count
//!
//! Only failures whose class [trips the breaker](crate::ErrorClass::trips_breaker) count:
//! overload, server errors, timeouts, transport failures and interrupted streams, which say the
//! target is unwell. A 429 says the target is healthy and throttling *us*; a 400, a context
//! overflow, a content-policy refusal, an auth or quota failure say something about the request
//! or the account. None of them says whether the target is up, so while closed they are ignored
//! entirely: not a failure, not a success (counting them as successes would let a flood of fast
//! 429s dilute a real 5xx rate), and they neither extend nor reset a run of consecutive
//! failures. A call the client cancelled, or abandoned because of the caller's own deadline,
//! proves nothing either: [`CircuitBreaker::on_cancel`] only releases a probe slot.
//!
//! While half-open the question is narrower, "does the target answer at all?", so a probe
//! that ends in a non-tripping class (the target answered, if only with a 429 or a 400)
//! counts as a probe success.
//!
//! # Why a rate *and* a consecutive count
//!
//! A rate alone is slow at low traffic: with `min_requests = 20` and two calls a minute, a
//! dead target would be hammered for ten minutes before the window fills. A consecutive count
//! alone is noisy at high traffic: at hundreds of calls a second, five failures in a row happen
//! by chance at a 2% error rate, while a 60% error rate interleaved with successes might never
//! produce five in a row. Each trigger covers the other's blind spot.
//!
//! # Outcomes and probes
//!
//! [`CircuitBreaker::on_success`] and [`CircuitBreaker::on_failure`] do not say whether the
//! attempt was a probe: an outcome that arrives while the breaker is half-open is treated as a
//! probe outcome (and frees a probe slot if one is taken). A call admitted while closed that
//! outlives a whole cooldown is therefore taken as evidence about the target's health now, which
//! it is. Outcomes arriving while open (before the cooldown ends) are ignored: the breaker is
//! already open and a late failure does not extend the cooldown.
//!
//! # Transitions
//!
//! `on_success` and `on_failure` return the [`Transition`] that outcome caused, exactly once,
//! with `from` being the state in effect at `now` (so `HalfOpen`, not `Open`, once the cooldown
//! has passed). The time-driven open → half-open change is caused by no call and is not
//! returned; read it from [`CircuitBreaker::state`] (or schedule on
//! [`CircuitBreaker::earliest_retry`]).
//!
//! The breaker is pure: it never reads a clock (every method that depends on time takes `now`)
//! and holds no lock; a caller sharing one between tasks wraps it in a `parking_lot::Mutex`.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::RollingCounts;
use crate::{ErrorClass, PolicyError};

/// Circuit breaker settings; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open when `failures / (failures + successes)` over `window` is at least this, in
    /// `(0, 1]`...
    pub failure_rate: f64,
    /// ...and the window holds at least this many outcomes.
    pub min_requests: u32,
    /// The rolling window the rate is computed over.
    pub window: Duration,
    /// Or open after this many breaker-tripping failures in a row (`u32::MAX` practically
    /// disables this trigger).
    pub consecutive_failures: u32,
    /// How long the breaker stays open before letting probes through.
    pub cooldown: Duration,
    /// Probes allowed in flight at once while half-open; this many probe successes in a row
    /// close the breaker.
    pub half_open_probes: u32,
}

impl BreakerConfig {
    /// Default `failure_rate`.
    pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
    /// Default `min_requests`.
    pub const DEFAULT_MIN_REQUESTS: u32 = 20;
    /// Default `window`.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
    /// Default `consecutive_failures`.
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    /// Default `cooldown`.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
    /// Default `half_open_probes`.
    pub const DEFAULT_HALF_OPEN_PROBES: u32 = 3;

    /// Checks that every value can work; names the first bad key (`breaker.<field>`).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(PolicyError::Invalid {
                key: "breaker.failure_rate",
                message: format!(
                    "must be greater than 0 and at most 1 (got {})",
                    self.failure_rate
                ),
            });
        }
        let at_least_one = [
            ("breaker.min_requests", self.min_requests),
            ("breaker.consecutive_failures", self.consecutive_failures),
            ("breaker.half_open_probes", self.half_open_probes),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(PolicyError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        let positive = [
            ("breaker.window", self.window),
            ("breaker.cooldown", self.cooldown),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err(PolicyError::Invalid {
                    key,
                    message: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: Self::DEFAULT_FAILURE_RATE,
            min_requests: Self::DEFAULT_MIN_REQUESTS,
            window: Self::DEFAULT_WINDOW,
            consecutive_failures: Self::DEFAULT_CONSECUTIVE_FAILURES,
            cooldown: Self::DEFAULT_COOLDOWN,
            half_open_probes: Self::DEFAULT_HALF_OPEN_PROBES,
        }
    }
}

/// The state of a breaker as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow normally.
    Closed,
    /// Calls are rejected until the cooldown ends.
    Open,
    /// A limited number of probe calls test whether the target recovered.
    HalfOpen,
}

impl BreakerState {
    /// Low-cardinality label for metrics and logs; identical to the serde name.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Value for a state gauge: 0 closed, 1 half-open, 2 open (higher is worse).
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric_label())
    }
}

/// Whether a call may be sent to the target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: send it.
    Allowed,
    /// The breaker is half-open and this call is one of its probes: send it, and report its
    /// outcome (or [`CircuitBreaker::on_cancel`] with `was_probe = true`).
    Probe,
    /// The breaker rejects the call; the target may admit calls again from `retry_at`.
    Rejected {
        /// Open: the end of the cooldown. Half-open with every probe slot taken:
        /// `now + cooldown / 10`, a guess, since when a probe finishes is unknown.
        retry_at: Instant,
    },
}

/// A change of [`BreakerState`] caused by an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state in effect just before.
    pub from: BreakerState,
    /// The state now.
    pub to: BreakerState,
}

const SUCCESSES: usize = 0;
const FAILURES: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed,
    /// Half-open from `until` on, evaluated lazily.
    Open {
        until: Instant,
    },
    HalfOpen,
}

/// A circuit breaker for one target; see the module docs.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
    /// Closed: outcomes over the window (successes, tripping failures).
    outcomes: RollingCounts,
    /// Closed: tripping failures in a row.
    consecutive: u32,
    /// Half-open: probes admitted and not yet reported.
    probes_in_flight: u32,
    /// Half-open: probe successes since the breaker became half-open.
    probe_successes: u32,
}

impl CircuitBreaker {
    /// A closed breaker. `config` should have passed [`BreakerConfig::validate`]; an invalid
    /// one still never panics (a zero `half_open_probes` acts as 1, a zero window as 1ns).
    pub fn new(config: BreakerConfig) -> Self {
        let outcomes = RollingCounts::new(config.window);
        Self {
            config,
            inner: Inner::Closed,
            outcomes,
            consecutive: 0,
            probes_in_flight: 0,
            probe_successes: 0,
        }
    }

    /// Validates `config`, then builds the breaker.
    pub fn try_new(config: BreakerConfig) -> Result<Self, PolicyError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now`: an open breaker whose cooldown has passed is half-open.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to the target now; a [`Admission::Probe`] takes a probe slot
    /// until its outcome (or cancellation) is reported.
    pub fn admit(&mut self, now: Instant) -> Admission {
        self.settle(now);
        match self.inner {
            Inner::Closed => Admission::Allowed,
            Inner::Open { until } => Admission::Rejected { retry_at: until },
            Inner::HalfOpen => {
                if self.probes_in_flight < self.max_probes() {
                    self.probes_in_flight += 1;
                    Admission::Probe
                } else {
                    let wait = (self.config.cooldown / 10).max(Duration::from_nanos(1));
                    Admission::Rejected {
                        retry_at: now + wait,
                    }
                }
            }
        }
    }

    /// Reports a successful call. While half-open this is a probe success, and the last one
    /// needed closes the breaker.
    pub fn on_success(&mut self, now: Instant) -> Option<Transition> {
        self.settle(now);
        match self.inner {
            Inner::Closed => {
                self.outcomes.add(SUCCESSES, now);
                self.consecutive = 0;
                None
            }
            Inner::Open { .. } => None,
            Inner::HalfOpen => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                self.probe_successes = self.probe_successes.saturating_add(1);
                if self.probe_successes >= self.max_probes() {
                    self.close();
                    Some(Transition {
                        from: BreakerState::HalfOpen,
                        to: BreakerState::Closed,
                    })
                } else {
                    None
                }
            }
        }
    }

    /// Reports a failed call. Only classes that [trip the breaker](ErrorClass::trips_breaker)
    /// count as failures; any other class is ignored while closed and counts as a probe
    /// success while half-open (the target answered). See the module docs.
    pub fn on_failure(&mut self, class: ErrorClass, now: Instant) -> Option<Transition> {
        if !class.trips_breaker() {
            self.settle(now);
            return match self.inner {
                Inner::HalfOpen => self.on_success(now),
                Inner::Closed | Inner::Open { .. } => None,
            };
        }
        self.settle(now);
        match self.inner {
            Inner::Closed => {
                self.outcomes.add(FAILURES, now);
                self.consecutive = self.consecutive.saturating_add(1);
                if self.should_open(now) {
                    self.open(now);
                    Some(Transition {
                        from: BreakerState::Closed,
                        to: BreakerState::Open,
                    })
                } else {
                    None
                }
            }
            Inner::Open { .. } => None,
            Inner::HalfOpen => {
                self.open(now);
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Open,
                })
            }
        }
    }

    /// Reports a call that ended without an outcome (the client cancelled, or the caller's
    /// own deadline abandoned it). It counts as nothing and never changes the state; if it was
    /// a probe, its slot is freed.
    pub fn on_cancel(&mut self, was_probe: bool) {
        if was_probe {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    /// When an open breaker becomes half-open; `None` unless open at `now`.
    pub fn earliest_retry(&self, now: Instant) -> Option<Instant> {
        match self.inner {
            Inner::Open { until } if now < until => Some(until),
            _ => None,
        }
    }

    fn max_probes(&self) -> u32 {
        self.config.half_open_probes.max(1)
    }

    /// Applies the time-driven open → half-open change.
    fn settle(&mut self, now: Instant) {
        if let Inner::Open { until } = self.inner {
            if now >= until {
                self.inner = Inner::HalfOpen;
                self.probes_in_flight = 0;
                self.probe_successes = 0;
            }
        }
    }

    fn should_open(&self, now: Instant) -> bool {
        if self.consecutive >= self.config.consecutive_failures {
            return true;
        }
        let [successes, failures] = self.outcomes.totals(now);
        let total = successes.saturating_add(failures);
        total >= u64::from(self.config.min_requests)
            && failures as f64 >= self.config.failure_rate * total as f64
    }

    fn open(&mut self, now: Instant) {
        self.inner = Inner::Open {
            until: now + self.config.cooldown,
        };
        self.reset_counts();
    }

    fn close(&mut self) {
        self.inner = Inner::Closed;
        self.reset_counts();
    }

    fn reset_counts(&mut self) {
        self.outcomes.clear();
        self.consecutive = 0;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn tripping() -> impl Iterator<Item = ErrorClass> {
        ErrorClass::ALL.into_iter().filter(|c| c.trips_breaker())
    }

    fn harmless() -> impl Iterator<Item = ErrorClass> {
        ErrorClass::ALL.into_iter().filter(|c| !c.trips_breaker())
    }

    const CLOSED_TO_OPEN: Option<Transition> = Some(Transition {
        from: BreakerState::Closed,
        to: BreakerState::Open,
    });
    const HALF_OPEN_TO_OPEN: Option<Transition> = Some(Transition {
        from: BreakerState::HalfOpen,
        to: BreakerState::Open,
    });
    const HALF_OPEN_TO_CLOSED: Option<Transition> = Some(Transition {
        from: BreakerState::HalfOpen,
        to: BreakerState::Closed,
    });

    /// A breaker opened at the returned instant by consecutive failures.
    fn opened(config: BreakerConfig) -> (CircuitBreaker, Instant) {
        let mut b = CircuitBreaker::new(config);
        let now = Instant::now();
        while b.state(now) == BreakerState::Closed {
            b.on_failure(ErrorClass::ServerError, now);
        }
        (b, now)
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = BreakerConfig::default();
        assert_eq!(c.failure_rate, 0.5);
        assert_eq!(c.min_requests, 20);
        assert_eq!(c.window, Duration::from_secs(30));
        assert_eq!(c.consecutive_failures, 5);
        assert_eq!(c.cooldown, Duration::from_secs(30));
        assert_eq!(c.half_open_probes, 3);
        c.validate().unwrap();
    }

    #[test]
    fn validate_names_the_bad_key() {
        let d = BreakerConfig::default;
        let bad = [
            (
                BreakerConfig {
                    failure_rate: 0.0,
                    ..d()
                },
                "breaker.failure_rate",
            ),
            (
                BreakerConfig {
                    failure_rate: 1.5,
                    ..d()
                },
                "breaker.failure_rate",
            ),
            (
                BreakerConfig {
                    failure_rate: f64::NAN,
                    ..d()
                },
                "breaker.failure_rate",
            ),
            (
                BreakerConfig {
                    min_requests: 0,
                    ..d()
                },
                "breaker.min_requests",
            ),
            (
                BreakerConfig {
                    window: Duration::ZERO,
                    ..d()
                },
                "breaker.window",
            ),
            (
                BreakerConfig {
                    consecutive_failures: 0,
                    ..d()
                },
                "breaker.consecutive_failures",
            ),
            (
                BreakerConfig {
                    cooldown: Duration::ZERO,
                    ..d()
                },
                "breaker.cooldown",
            ),
            (
                BreakerConfig {
                    half_open_probes: 0,
                    ..d()
                },
                "breaker.half_open_probes",
            ),
        ];
        for (config, want) in bad {
            let err = CircuitBreaker::try_new(config).unwrap_err();
            let PolicyError::Invalid { key, .. } = &err;
            assert_eq!(*key, want, "{err}");
            assert!(err.to_string().starts_with(want), "{err}");
        }
        let rate_one = BreakerConfig {
            failure_rate: 1.0,
            ..d()
        };
        rate_one.validate().unwrap();
    }

    #[test]
    fn state_labels_and_gauge() {
        use BreakerState::*;
        assert_eq!(
            [Closed, HalfOpen, Open].map(BreakerState::metric_label),
            ["closed", "half_open", "open"]
        );
        assert_eq!([Closed, HalfOpen, Open].map(BreakerState::gauge), [0, 1, 2]);
        assert_eq!(serde_json::to_string(&HalfOpen).unwrap(), r#""half_open""#);
        assert_eq!(Open.to_string(), "open");
    }

    #[test]
    fn opens_after_n_consecutive_tripping_failures() {
        for class in tripping() {
            let mut b = CircuitBreaker::new(BreakerConfig::default());
            let now = Instant::now();
            for _ in 0..4 {
                assert_eq!(b.admit(now), Admission::Allowed);
                assert_eq!(b.on_failure(class, now), None, "{class}");
            }
            assert_eq!(b.on_failure(class, now), CLOSED_TO_OPEN, "{class}");
            assert_eq!(b.state(now), BreakerState::Open);
            assert_eq!(
                b.admit(now),
                Admission::Rejected {
                    retry_at: now + 30 * S
                }
            );
        }
    }

    #[test]
    fn a_success_resets_the_consecutive_run() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        let now = Instant::now();
        for _ in 0..3 {
            for _ in 0..4 {
                assert_eq!(b.on_failure(ErrorClass::Overloaded, now), None);
            }
            assert_eq!(b.on_success(now), None);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn opens_on_the_rate_only_once_min_requests_is_reached() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        let now = Instant::now();
        // F F S repeated: a 2/3 failure rate, never more than 2 failures in a row.
        let failure_at = |i: u32| i % 3 != 2;
        for i in 0..19 {
            let t = if failure_at(i) {
                b.on_failure(ErrorClass::ServerError, now)
            } else {
                b.on_success(now)
            };
            assert_eq!(t, None, "outcome {}", i + 1);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
        // The 20th outcome (a failure) fills the window to min_requests.
        assert!(failure_at(19));
        assert_eq!(b.on_failure(ErrorClass::ServerError, now), CLOSED_TO_OPEN);
    }

    #[test]
    fn a_rate_below_the_threshold_keeps_it_closed() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        let now = Instant::now();
        // F S S: 1/3 failures, far above min_requests.
        for _ in 0..100 {
            assert_eq!(b.on_failure(ErrorClass::Timeout, now), None);
            assert_eq!(b.on_success(now), None);
            assert_eq!(b.on_success(now), None);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn non_tripping_classes_never_open_it() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        let now = Instant::now();
        for class in harmless() {
            for _ in 0..1000 {
                assert_eq!(b.admit(now), Admission::Allowed);
                assert_eq!(b.on_failure(class, now), None, "{class}");
            }
            assert_eq!(b.state(now), BreakerState::Closed, "{class}");
        }
        // They do not count as successes either: they neither dilute the rate nor break a run.
        for _ in 0..4 {
            b.on_failure(ErrorClass::ServerError, now);
            b.on_failure(ErrorClass::RateLimited, now);
        }
        assert_eq!(b.on_failure(ErrorClass::ServerError, now), CLOSED_TO_OPEN);
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_then_half_open_then_probe_successes_close_it() {
        let (mut b, opened_at) = opened(BreakerConfig::default());
        assert_eq!(b.earliest_retry(opened_at), Some(opened_at + 30 * S));

        tokio::time::advance(29 * S).await;
        let now = Instant::now();
        assert_eq!(b.state(now), BreakerState::Open);
        assert_eq!(
            b.admit(now),
            Admission::Rejected {
                retry_at: opened_at + 30 * S
            }
        );

        tokio::time::advance(S).await;
        let now = Instant::now();
        assert_eq!(b.state(now), BreakerState::HalfOpen);
        assert_eq!(b.earliest_retry(now), None);
        for _ in 0..3 {
            assert_eq!(b.admit(now), Admission::Probe);
        }
        assert_eq!(b.on_success(now), None);
        assert_eq!(b.on_success(now), None);
        assert_eq!(b.state(now), BreakerState::HalfOpen);
        assert_eq!(b.on_success(now), HALF_OPEN_TO_CLOSED);
        assert_eq!(b.state(now), BreakerState::Closed);
        assert_eq!(b.admit(now), Admission::Allowed);
        // Closed with a fresh window and run: four failures do not reopen it.
        for _ in 0..4 {
            assert_eq!(b.on_failure(ErrorClass::ServerError, now), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_failure_reopens_it_for_a_fresh_cooldown() {
        let (mut b, _) = opened(BreakerConfig::default());
        tokio::time::advance(30 * S).await;
        let now = Instant::now();
        assert_eq!(b.admit(now), Admission::Probe);
        assert_eq!(b.admit(now), Admission::Probe);
        assert_eq!(b.on_success(now), None);
        assert_eq!(b.on_failure(ErrorClass::Transport, now), HALF_OPEN_TO_OPEN);
        assert_eq!(b.state(now), BreakerState::Open);
        assert_eq!(b.earliest_retry(now), Some(now + 30 * S));
        // The other probe's late outcome is ignored while open.
        assert_eq!(b.on_failure(ErrorClass::Transport, now + S), None);
        assert_eq!(b.earliest_retry(now + S), Some(now + 30 * S));

        tokio::time::advance(30 * S - Duration::from_millis(1)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1)).await;
        let now = Instant::now();
        assert_eq!(b.state(now), BreakerState::HalfOpen);
        // The probe success before the failure does not carry over.
        for _ in 0..2 {
            assert_eq!(b.admit(now), Admission::Probe);
            assert_eq!(b.on_success(now), None);
        }
        assert_eq!(b.admit(now), Admission::Probe);
        assert_eq!(b.on_success(now), HALF_OPEN_TO_CLOSED);
    }

    #[test]
    fn probe_concurrency_is_limited() {
        let (mut b, opened_at) = opened(BreakerConfig::default());
        let now = opened_at + 30 * S;
        for _ in 0..3 {
            assert_eq!(b.admit(now), Admission::Probe);
        }
        let full = Admission::Rejected {
            retry_at: now + 3 * S,
        };
        assert_eq!(b.admit(now), full);
        assert_eq!(b.admit(now), full);
        // A cancelled probe frees its slot, and so does an outcome.
        b.on_cancel(true);
        assert_eq!(b.admit(now), Admission::Probe);
        assert_eq!(b.admit(now), full);
        assert_eq!(b.on_success(now), None);
        assert_eq!(b.admit(now), Admission::Probe);
        assert_eq!(b.admit(now), full);
        // A cancelled non-probe call frees nothing.
        b.on_cancel(false);
        assert_eq!(b.admit(now), full);
    }

    #[test]
    fn a_non_tripping_probe_outcome_counts_as_a_probe_success() {
        let (mut b, opened_at) = opened(BreakerConfig::default());
        let now = opened_at + 30 * S;
        for _ in 0..3 {
            assert_eq!(b.admit(now), Admission::Probe);
        }
        assert_eq!(b.on_failure(ErrorClass::RateLimited, now), None);
        assert_eq!(b.on_failure(ErrorClass::BadRequest, now), None);
        assert_eq!(
            b.on_failure(ErrorClass::ContextLength, now),
            HALF_OPEN_TO_CLOSED
        );
    }

    #[test]
    fn old_failures_age_out_of_the_window() {
        let t0 = Instant::now();
        let feed = |b: &mut CircuitBreaker, now: Instant| {
            // 9 failures and 9 successes, alternating: 18 outcomes, below min_requests.
            for _ in 0..9 {
                assert_eq!(b.on_failure(ErrorClass::ServerError, now), None);
                assert_eq!(b.on_success(now), None);
            }
        };
        // Control: within the window, S F makes 20 outcomes at a 50% rate and opens it.
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        feed(&mut b, t0);
        let later = t0 + 20 * S;
        assert_eq!(b.on_success(later), None);
        assert_eq!(b.on_failure(ErrorClass::ServerError, later), CLOSED_TO_OPEN);

        // After the window, the old 18 no longer count.
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        feed(&mut b, t0);
        let later = t0 + 30 * S;
        assert_eq!(b.on_success(later), None);
        assert_eq!(b.on_failure(ErrorClass::ServerError, later), None);
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn cancellations_never_open_it() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        let now = Instant::now();
        for i in 0..1000 {
            assert_eq!(b.admit(now), Admission::Allowed);
            b.on_cancel(i % 2 == 0);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
        // Nor do they reset or extend a run of failures.
        for _ in 0..4 {
            b.on_failure(ErrorClass::Timeout, now);
            b.on_cancel(false);
        }
        assert_eq!(b.on_failure(ErrorClass::Timeout, now), CLOSED_TO_OPEN);
        // Cancels while open change nothing.
        b.on_cancel(true);
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit,
        Success,
        Failure(ErrorClass),
        Cancel(bool),
        Advance(u64),
    }

    fn class() -> impl Strategy<Value = ErrorClass> {
        proptest::sample::select(ErrorClass::ALL.to_vec())
    }

    fn harmless_class() -> impl Strategy<Value = ErrorClass> {
        proptest::sample::select(harmless().collect::<Vec<_>>())
    }

    fn op(failure: BoxedStrategy<ErrorClass>) -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Admit),
            3 => Just(Op::Success),
            4 => failure.prop_map(Op::Failure),
            1 => any::<bool>().prop_map(Op::Cancel),
            2 => (0u64..20_000).prop_map(Op::Advance),
        ]
    }

    fn small_config() -> BreakerConfig {
        BreakerConfig {
            min_requests: 6,
            consecutive_failures: 3,
            window: 10 * S,
            cooldown: 5 * S,
            half_open_probes: 2,
            ..BreakerConfig::default()
        }
    }

    proptest! {
           #[test]
           fn non_tripping_outcomes_keep_it_closed(
               ops in proptest::collection::vec(op(harmless_class().boxed()), 0..400),
           ) {
               let mut b = CircuitBreaker::new(small_config());
               let mut now = Instant::now();
               for op in ops {
                   let t = match op {
                       Op::Admit => {
                           prop_assert_eq!(b.admit(now), Admission::Allowed);
                           None
                       }
                       Op::Success => b.on_success(now),
                       Op::Failure(class) => b.on_failure(class, now),
                       Op::Cancel(was_probe) => {
                           b.on_cancel(was_probe);
                           None
                       }
                       Op::Advance(ms) => {
                           now += Duration::from_millis(ms);
                           None
                       }
                   };
                   prop_assert_eq!(t, None);
                   prop_assert_eq!(b.state(now), BreakerState::Closed);
               }
           }

           /// Every observable state change is reported by the call that caused it, once, and no
           /// call reports a change that did not happen. The only change no call reports is the
           /// time-driven open → half-open one.
           #[test]
           fn transitions_are_reported_exactly_once(
               ops in proptest::collection::vec(op(class().boxed()), 0..400),
           ) {
               let mut b = CircuitBreaker::new(small_config());
               let mut now = Instant::now();
               let mut reported = 0;
               let mut seen_changes = 0;
               for op in ops {
                   if let Op::Advance(ms) = op {
                       let before = b.state(now);
                       now += Duration::from_millis(ms);
                       let after = b.state(now);
                       if before != after {
                           prop_assert_eq!((before, after), (BreakerState::Open, BreakerState::HalfOpen));
                       }
                       continue;
                   }
                   let before = b.state(now);
                   let t = match op {
                       Op::Admit => {
                           let a = b.admit(now);
                           match before {
                               BreakerState::Closed => prop_assert_eq!(a, Admission::Allowed),
                               BreakerState::Open => {
    let ok = matches!(a, Admission::Rejected { retry_at } if retry_at > now);
    prop_assert!(ok, "{:?}", a);
    },
                               BreakerState::HalfOpen => {
    let ok = matches!(a, Admission::Probe | Admission::Rejected { .. });
    prop_assert!(ok, "{:?}", a);
    },
                           }
                           None
                       }
                       Op::Success => b.on_success(now),
                       Op::Failure(class) => b.on_failure(class, now),
                       Op::Cancel(was_probe) => {
                           b.on_cancel(was_probe);
                           None
                       }
                       Op::Advance(_) => unreachable!(),
                   };
                   let after = b.state(now);
                   if before == after {
                       prop_assert_eq!(t, None);
                   } else {
                       seen_changes += 1;
                       prop_assert_eq!(t, Some(Transition { from: before, to: after }));
                   }
                   if t.is_some() {
                       reported += 1;
                   }
                   prop_assert_eq!(b.earliest_retry(now).is_some(), after == BreakerState::Open);
               }
               prop_assert_eq!(reported, seen_changes);
           }
       }
}
