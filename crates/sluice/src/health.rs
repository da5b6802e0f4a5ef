//! Per-target health shared by every call: the circuit breaker, the retry budget, and the
//! park set by a 429 with a server hint. One registry per [`crate::Client`], keyed by target
//! name, so all requests (and all routes) that use a target see the same state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_core::{
    Admission, BreakerConfig, BreakerState, BudgetConfig, CircuitBreaker, ErrorClass, RetryBudget,
};
use tokio::time::Instant;

use crate::client::Target;

/// Health of one target.
#[derive(Debug)]
pub(crate) struct TargetHealth {
    pub(crate) breaker: CircuitBreaker,
    pub(crate) budget: RetryBudget,
    /// Set by a 429 with a hint: no request goes to the target before this instant.
    pub(crate) parked_until: Option<Instant>,
}

/// Whether a target can take an attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    /// Go ahead; `probe` if this attempt is a half-open probe.
    Ready { probe: bool },
    /// Parked after a rate limit; ready again after `wait`.
    Parked { wait: Duration },
    /// The breaker is open; a probe may go through after `wait`.
    Open { wait: Duration },
}

impl TargetHealth {
    /// Checks the park and asks the breaker for admission (which reserves a probe slot).
    pub(crate) fn admit(&mut self, now: Instant) -> Availability {
        if let Some(until) = self.parked_until {
            if until > now {
                return Availability::Parked { wait: until - now };
            }
            self.parked_until = None;
        }
        match self.breaker.admit(now) {
            Admission::Allowed => Availability::Ready { probe: false },
            Admission::Probe => Availability::Ready { probe: true },
            Admission::Rejected { retry_at } => Availability::Open {
                wait: retry_at.saturating_duration_since(now),
            },
        }
    }

    /// Parks the target until `until`, never shortening an existing park.
    pub(crate) fn park(&mut self, until: Instant) {
        if self.parked_until.is_none_or(|p| p < until) {
            self.parked_until = Some(until);
        }
    }
}

/// A snapshot of one target's health, for status pages and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    /// `provider/model`.
    pub target: Arc<str>,
    /// The breaker's state now.
    pub breaker: BreakerState,
    /// Retries the budget allows right now.
    pub retry_budget: f64,
    /// Time left on a rate-limit park, if any.
    pub parked_for: Option<Duration>,
}

/// All targets' health, created on first use.
#[derive(Debug)]
pub(crate) struct HealthRegistry {
    targets: Mutex<HashMap<Arc<str>, Arc<Mutex<TargetHealth>>>>,
    breaker: BreakerConfig,
    budget: BudgetConfig,
    /// Per-provider overrides.
    provider_breaker: HashMap<Arc<str>, BreakerConfig>,
    provider_budget: HashMap<Arc<str>, BudgetConfig>,
}

impl HealthRegistry {
    pub(crate) fn new(
        breaker: BreakerConfig,
        budget: BudgetConfig,
        provider_breaker: HashMap<Arc<str>, BreakerConfig>,
        provider_budget: HashMap<Arc<str>, BudgetConfig>,
    ) -> Self {
        Self {
            targets: Mutex::new(HashMap::new()),
            breaker,
            budget,
            provider_breaker,
            provider_budget,
        }
    }

    pub(crate) fn get(&self, target: &Target) -> Arc<Mutex<TargetHealth>> {
        let mut targets = self.targets.lock();
        targets
            .entry(target.name().clone())
            .or_insert_with(|| {
                let provider = &target.endpoint().name;
                let breaker = self.provider_breaker.get(provider).unwrap_or(&self.breaker);
                let budget = self.provider_budget.get(provider).unwrap_or(&self.budget);
                Arc::new(Mutex::new(TargetHealth {
                    breaker: CircuitBreaker::new(breaker.clone()),
                    budget: RetryBudget::new(budget.clone()),
                    parked_until: None,
                }))
            })
            .clone()
    }

    pub(crate) fn snapshot(&self, now: Instant) -> Vec<TargetStatus> {
        let targets = self.targets.lock();
        let mut out: Vec<TargetStatus> = targets
            .iter()
            .map(|(name, health)| {
                let h = health.lock();
                TargetStatus {
                    target: name.clone(),
                    breaker: h.breaker.state(now),
                    retry_budget: h.budget.available(now),
                    parked_for: h.parked_until.filter(|u| *u > now).map(|u| u - now),
                }
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

/// Reports an attempt's outcome to the breaker exactly once; an attempt dropped without an
/// outcome (the caller went away) releases its probe slot without counting as a failure.
#[derive(Debug)]
pub(crate) struct AttemptGuard {
    health: Arc<Mutex<TargetHealth>>,
    probe: bool,
    settled: bool,
}

impl AttemptGuard {
    pub(crate) fn new(health: Arc<Mutex<TargetHealth>>, probe: bool) -> Self {
        Self {
            health,
            probe,
            settled: false,
        }
    }

    pub(crate) fn success(mut self, now: Instant) -> Option<sluice_core::Transition> {
        self.settled = true;
        self.health.lock().breaker.on_success(now)
    }

    pub(crate) fn failure(
        mut self,
        class: ErrorClass,
        now: Instant,
    ) -> Option<sluice_core::Transition> {
        self.settled = true;
        self.health.lock().breaker.on_failure(class, now)
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.settled {
            self.health.lock().breaker.on_cancel(self.probe);
        }
    }
}
