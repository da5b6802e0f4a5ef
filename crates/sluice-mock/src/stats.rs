//! Request counters: lock-free atomics on the hot path, a [`MockStats`] snapshot for readers.
//!
//! `in_flight` and `cancelled` are kept by an [`InFlight`] guard that lives as long as the
//! request is being served: inside the handler future for plain answers, inside the body stream
//! for streams. If the guard is dropped before the server marked the response finished, the
//! client went away (hyper drops the handler future or the body when the connection closes), and
//! that is counted in `cancelled`. Gateway tests rely on this to prove that a downstream
//! disconnect ends the upstream request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the mock's counters, as served by `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MockStats {
    /// Completion requests received (valid or not), Chat Completions and Messages together.
    pub requests: u64,
    /// Requests answered normally (outcomes `ok` and `tool`, including `delay:` and `chunks:`
    /// steps).
    pub ok: u64,
    /// Chat requests being served right now (streams until their body ends or is dropped).
    pub in_flight: u64,
    /// Requests whose client went away before the response was finished.
    pub cancelled: u64,
    /// Requests per outcome name (`ok`, `429` (scripted or random), `429_limit` (rejected by
    /// `--rpm` / `--tpm`), `quota`, `reset`, `cut`, `stall`, `inband`, `context`,
    /// `invalid_request`, `bad_script`, `tool`, ...); only non-zero entries.
    pub by_outcome: BTreeMap<String, u64>,
    /// Requests per API dialect (`openai` for `/v1/chat/completions`, `anthropic` for
    /// `/v1/messages`); only non-zero entries.
    #[serde(default)]
    pub by_api: BTreeMap<String, u64>,
    /// Requests rejected by the `--rpm` / `--tpm` limits (429, outcome `429_limit`); scripted
    /// and random 429s are not counted here.
    #[serde(default)]
    pub rate_limited: u64,
    /// The token cost (prompt estimate + `max_tokens`) summed over the requests the limits
    /// admitted; zero without limits. Its rate is the goodput in tokens per minute.
    #[serde(default)]
    pub tokens_admitted: u64,
}

/// The wire dialect a request was made in, for [`MockStats::by_api`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    const ALL: [Api; 2] = [Api::OpenAi, Api::Anthropic];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

/// What a chat request ended up as; the name is the fault step's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    RateLimited,
    Quota,
    Unauthorized,
    BadRequest,
    NotFound,
    Context,
    Policy,
    S500,
    S502,
    S503,
    S504,
    S529,
    Reset,
    Cut,
    Stall,
    Inband,
    InvalidRequest,
    BadScript,
    Tool,
    LimitRejected,
}

impl Outcome {
    const ALL: [Outcome; 21] = [
        Outcome::Ok,
        Outcome::RateLimited,
        Outcome::Quota,
        Outcome::Unauthorized,
        Outcome::BadRequest,
        Outcome::NotFound,
        Outcome::Context,
        Outcome::Policy,
        Outcome::S500,
        Outcome::S502,
        Outcome::S503,
        Outcome::S504,
        Outcome::S529,
        Outcome::Reset,
        Outcome::Cut,
        Outcome::Stall,
        Outcome::Inband,
        Outcome::InvalidRequest,
        Outcome::BadScript,
        Outcome::Tool,
        Outcome::LimitRejected,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RateLimited => "429",
            Outcome::Quota => "quota",
            Outcome::Unauthorized => "401",
            Outcome::BadRequest => "400",
            Outcome::NotFound => "404",
            Outcome::Context => "context",
            Outcome::Policy => "policy",
            Outcome::S500 => "500",
            Outcome::S502 => "502",
            Outcome::S503 => "503",
            Outcome::S504 => "504",
            Outcome::S529 => "529",
            Outcome::Reset => "reset",
            Outcome::Cut => "cut",
            Outcome::Stall => "stall",
            Outcome::Inband => "inband",
            Outcome::InvalidRequest => "invalid_request",
            Outcome::BadScript => "bad_script",
            Outcome::Tool => "tool",
            Outcome::LimitRejected => "429_limit",
        }
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    in_flight: AtomicU64,
    cancelled: AtomicU64,
    by_outcome: [AtomicU64; Outcome::ALL.len()],
    by_api: [AtomicU64; Api::ALL.len()],
    tokens_admitted: AtomicU64,
}

impl Stats {
    pub(crate) fn request(&self, api: Api) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.by_api[api as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, outcome: Outcome) {
        if matches!(outcome, Outcome::Ok | Outcome::Tool) {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
        self.by_outcome[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the token cost of a request the limits admitted.
    pub(crate) fn admitted(&self, tokens: u64) {
        self.tokens_admitted.fetch_add(tokens, Ordering::Relaxed);
    }

    /// Zeroes every counter except the `in_flight` gauge (live guards still decrement it).
    pub(crate) fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.ok.store(0, Ordering::Relaxed);
        self.cancelled.store(0, Ordering::Relaxed);
        self.tokens_admitted.store(0, Ordering::Relaxed);
        for c in self.by_outcome.iter().chain(&self.by_api) {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        let by_outcome = Outcome::ALL
            .iter()
            .filter_map(|o| {
                let n = self.by_outcome[*o as usize].load(Ordering::Relaxed);
                (n > 0).then(|| (o.name().to_owned(), n))
            })
            .collect();
        let by_api = Api::ALL
            .iter()
            .filter_map(|a| {
                let n = self.by_api[*a as usize].load(Ordering::Relaxed);
                (n > 0).then(|| (a.name().to_owned(), n))
            })
            .collect();
        MockStats {
            requests: self.requests.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            by_outcome,
            by_api,
            rate_limited: self.by_outcome[Outcome::LimitRejected as usize].load(Ordering::Relaxed),
            tokens_admitted: self.tokens_admitted.load(Ordering::Relaxed),
        }
    }
}

/// Counts one request in `in_flight` while alive; counts it `cancelled` if dropped unfinished.
#[derive(Debug)]
pub(crate) struct InFlight {
    stats: Arc<Stats>,
    finished: bool,
}

impl InFlight {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats,
            finished: false,
        }
    }

    /// The server completed (or deliberately ended) the response; dropping is no cancellation.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_indices_match_all() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        for (i, a) in Api::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
        }
    }

    #[test]
    fn guard_counts_in_flight_and_cancelled() {
        let stats = Arc::new(Stats::default());
        let mut done = InFlight::new(stats.clone());
        let dropped = InFlight::new(stats.clone());
        assert_eq!(stats.snapshot().in_flight, 2);
        done.finish();
        drop(done);
        drop(dropped);
        stats.request(Api::OpenAi);
        stats.request(Api::Anthropic);
        stats.request(Api::Anthropic);
        stats.record(Outcome::Ok);
        stats.record(Outcome::RateLimited);
        stats.record(Outcome::Tool);
        stats.record(Outcome::LimitRejected);
        stats.admitted(57);
        stats.admitted(3);
        let s = stats.snapshot();
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.cancelled, 1);
        assert_eq!(s.ok, 2);
        assert_eq!(s.requests, 3);
        assert_eq!(s.rate_limited, 1);
        assert_eq!(s.tokens_admitted, 60);
        assert_eq!(
            s.by_outcome,
            BTreeMap::from([
                ("429".to_owned(), 1),
                ("429_limit".to_owned(), 1),
                ("ok".to_owned(), 1),
                ("tool".to_owned(), 1)
            ])
        );
        assert_eq!(
            s.by_api,
            BTreeMap::from([("anthropic".to_owned(), 2), ("openai".to_owned(), 1)])
        );
        stats.reset();
        assert_eq!(stats.snapshot(), MockStats::default());
    }
}
