//! Provider-side rate limits: the `--rpm` / `--tpm` token buckets the mock enforces itself,
//! the way OpenAI and Anthropic do (`shared/reference/provider-wire-formats.md` §1.4–1.5,
//! §2.4–2.5).
//!
//! Each limited axis is one bucket holding a minute's worth (`rpm` requests, `tpm` tokens),
//! refilled continuously at `limit / 60` per second on the tokio clock (so tests can pause it),
//! starting full. A request asks for 1 request and `prompt estimate + max_tokens` tokens (how
//! OpenAI counts TPM at admission); it is admitted only if *every* limited bucket holds enough,
//! and then both are debited. A rejected request debits nothing. One [`Limits`] is shared by
//! both endpoints.
//!
//! The hint of a rejection is the time until every bucket holds what the request asks for,
//! rounded up to the millisecond, so a client that waits exactly that long is admitted (if
//! nobody else took the capacity meanwhile). A request asking for more tokens than the token
//! bucket can ever hold gets no hint ("Request too large").

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Slack for floating-point refill arithmetic: a bucket short by less than this is full enough.
const EPSILON: f64 = 1e-9;

/// A limited axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    Requests,
    Tokens,
}

/// One bucket: `per_minute` capacity, refilled at `per_minute / 60` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    per_minute: f64,
    level: f64,
}

impl Bucket {
    fn new(per_minute: f64) -> Bucket {
        Bucket {
            per_minute,
            level: per_minute,
        }
    }

    fn per_second(self) -> f64 {
        self.per_minute / 60.0
    }

    fn refill(&mut self, elapsed: Duration) {
        self.level = (self.level + elapsed.as_secs_f64() * self.per_second()).min(self.per_minute);
    }

    fn has(self, amount: f64) -> bool {
        self.level + EPSILON >= amount
    }

    /// Time until the bucket holds `amount` (zero if it does); `None` if it never can.
    fn wait_for(self, amount: f64) -> Option<Duration> {
        if amount > self.per_minute + EPSILON {
            return None;
        }
        Some(secs_ceil_ms((amount - self.level) / self.per_second()))
    }

    fn state(self) -> AxisState {
        AxisState {
            limit: self.per_minute,
            remaining: self.level,
            reset: secs_ceil_ms((self.per_minute - self.level) / self.per_second()),
        }
    }
}

/// `secs` (clamped at zero) as a duration rounded up to a whole millisecond.
fn secs_ceil_ms(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    // Shave float noise off before rounding up, so 0.1 s computed as 0.1000000001 is 100 ms.
    let ms = (secs * 1000.0 - 1e-6).ceil().max(0.0);
    Duration::from_millis(ms as u64)
}

/// What the headers of one answer report about one axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AxisState {
    /// The configured limit per minute.
    pub(crate) limit: f64,
    /// What the bucket holds now (after this request's debit, if it was admitted).
    pub(crate) remaining: f64,
    /// Time until the bucket is full again (rounded up to the millisecond).
    pub(crate) reset: Duration,
}

/// Both axes as the headers report them; `None` for an axis without a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) requests: Option<AxisState>,
    pub(crate) tokens: Option<AxisState>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rejection {
    /// The axis named in the error: the one that needs the longer wait (tokens when the
    /// request is too large).
    pub(crate) axis: Axis,
    /// That axis's limit per minute.
    pub(crate) limit: f64,
    /// That axis's use: limit minus what its bucket holds.
    pub(crate) used: f64,
    /// What the request asked of that axis.
    pub(crate) requested: f64,
    /// Time until every bucket holds enough; `None` when the request asks for more tokens than
    /// the limit (it can never be admitted).
    pub(crate) retry_after: Option<Duration>,
    /// The buckets as they are (nothing was debited).
    pub(crate) snapshot: Snapshot,
}

#[derive(Debug)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    last: Instant,
}

impl State {
    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        for bucket in [&mut self.requests, &mut self.tokens].into_iter().flatten() {
            bucket.refill(elapsed);
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.map(Bucket::state),
            tokens: self.tokens.map(Bucket::state),
        }
    }
}

/// The mock's rate limits (see the module docs).
#[derive(Debug)]
pub(crate) struct Limits {
    state: Mutex<State>,
}

impl Limits {
    /// Buckets for the given limits (each > 0); `None` when neither is set.
    pub(crate) fn new(rpm: Option<f64>, tpm: Option<f64>) -> Option<Limits> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        Some(Limits {
            state: Mutex::new(State {
                requests: rpm.map(Bucket::new),
                tokens: tpm.map(Bucket::new),
                last: Instant::now(),
            }),
        })
    }

    /// Admits a request costing 1 request and `tokens` tokens (debiting both buckets) or
    /// rejects it (debiting nothing).
    pub(crate) fn admit(&self, tokens: u64) -> Result<Snapshot, Rejection> {
        let tokens = tokens as f64;
        let mut state = self.state.lock();
        state.refill();
        let request_ok = state.requests.is_none_or(|b| b.has(1.0));
        let tokens_ok = state.tokens.is_none_or(|b| b.has(tokens));
        if request_ok && tokens_ok {
            if let Some(b) = &mut state.requests {
                b.level -= 1.0;
            }
            if let Some(b) = &mut state.tokens {
                b.level -= tokens;
            }
            return Ok(state.snapshot());
        }
        let request_wait = state.requests.and_then(|b| b.wait_for(1.0));
        let token_wait = match state.tokens {
            Some(b) => match b.wait_for(tokens) {
                Some(wait) => Some(wait),
                None => {
                    // Larger than the bucket: never admissible, whatever the request axis says.
                    return Err(Rejection {
                        axis: Axis::Tokens,
                        limit: b.per_minute,
                        used: b.per_minute - b.level,
                        requested: tokens,
                        retry_after: None,
                        snapshot: state.snapshot(),
                    });
                }
            },
            None => None,
        };
        let request_wait = request_wait.unwrap_or_default();
        let token_wait = token_wait.unwrap_or_default();
        let (axis, bucket, requested) = if !tokens_ok && (request_ok || token_wait >= request_wait)
        {
            (Axis::Tokens, state.tokens, tokens)
        } else {
            (Axis::Requests, state.requests, 1.0)
        };
        let bucket = bucket.unwrap_or(Bucket::new(0.0));
        Err(Rejection {
            axis,
            limit: bucket.per_minute,
            used: bucket.per_minute - bucket.level,
            requested,
            retry_after: Some(request_wait.max(token_wait)),
            snapshot: state.snapshot(),
        })
    }

    /// The buckets as they are now, debiting nothing (for answers that bypass the limits).
    pub(crate) fn peek(&self) -> Snapshot {
        let mut state = self.state.lock();
        state.refill();
        state.snapshot()
    }

    /// Fills every bucket again (as at start-up).
    pub(crate) fn refill_all(&self) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.last = Instant::now();
        for bucket in [&mut state.requests, &mut state.tokens]
            .into_iter()
            .flatten()
        {
            bucket.level = bucket.per_minute;
        }
    }
}

/// A duration the way Go's `time.Duration.String()` writes it, which is what OpenAI's
/// `x-ratelimit-reset-*` headers carry: `0s`, `12ms`, `1.2s`, `6m0s`, `1h2m3.5s`. The duration
/// is taken at millisecond precision (rounded up); sub-second values are whole milliseconds.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = ms / 60_000 % 60;
    let secs = ms / 1000 % 60;
    let frac = ms % 1000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{secs}s"));
    } else {
        let frac = format!("{frac:03}");
        out.push_str(&format!("{secs}.{}s", frac.trim_end_matches('0')));
    }
    out
}

/// An integer with thousands separators (`60,000`), as Anthropic writes limits in messages.
pub(crate) fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A bucket quantity as a header integer (`remaining` rounds down, limits to the nearest).
pub(crate) fn floor_u64(x: f64) -> u64 {
    if x > 0.0 {
        (x + EPSILON).floor() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(go_duration(Duration::from_millis(999)), "999ms");
        assert_eq!(go_duration(Duration::from_millis(1000)), "1s");
        assert_eq!(go_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(go_duration(Duration::from_millis(9816)), "9.816s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(62_050)), "1m2.05s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::from_secs(7200)), "2h0m0s");
    }

    #[test]
    fn commas_and_floors() {
        assert_eq!(with_commas(0), "0");
        assert_eq!(with_commas(600), "600");
        assert_eq!(with_commas(60_000), "60,000");
        assert_eq!(with_commas(1_234_567), "1,234,567");
        assert_eq!(floor_u64(2.999_999_999_9), 3);
        assert_eq!(floor_u64(2.5), 2);
        assert_eq!(floor_u64(-0.1), 0);
    }

    #[test]
    fn rounds_up_to_milliseconds() {
        assert_eq!(secs_ceil_ms(0.0), Duration::ZERO);
        assert_eq!(secs_ceil_ms(-1.0), Duration::ZERO);
        assert_eq!(secs_ceil_ms(f64::NAN), Duration::ZERO);
        assert_eq!(secs_ceil_ms(0.1), Duration::from_millis(100));
        assert_eq!(secs_ceil_ms(0.1001), Duration::from_millis(101));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_is_none() {
        assert!(Limits::new(None, None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn request_bucket_empties_and_refills() {
        // 60 rpm: one request per second, a burst of 60.
        let limits = Limits::new(Some(60.0), None).unwrap();
        for i in 0..60 {
            let s = limits
                .admit(1_000_000)
                .unwrap_or_else(|r| panic!("{i}: {r:?}"));
            assert!(s.tokens.is_none());
            assert_eq!(floor_u64(s.requests.unwrap().remaining), 59 - i);
        }
        let r = limits.admit(1).unwrap_err();
        assert_eq!(r.axis, Axis::Requests);
        assert_eq!(r.limit, 60.0);
        assert_eq!(r.used, 60.0);
        assert_eq!(r.requested, 1.0);
        assert_eq!(r.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(r.snapshot.requests.unwrap().reset, Duration::from_secs(60));
        // Nothing was debited by the rejection.
        tokio::time::advance(Duration::from_millis(400)).await;
        let r = limits.admit(1).unwrap_err();
        assert_eq!(r.retry_after, Some(Duration::from_millis(600)));
        tokio::time::advance(Duration::from_millis(600)).await;
        let s = limits.admit(1).unwrap();
        assert_eq!(floor_u64(s.requests.unwrap().remaining), 0);
        // A long pause refills to the capacity, no further.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let s = limits.peek();
        assert_eq!(s.requests.unwrap().remaining, 60.0);
        assert_eq!(s.requests.unwrap().reset, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_names_tokens_and_waits_for_the_larger_need() {
        // 600 tpm: 10 tokens per second.
        let limits = Limits::new(Some(1000.0), Some(600.0)).unwrap();
        limits.admit(550).unwrap();
        let r = limits.admit(100).unwrap_err();
        assert_eq!(r.axis, Axis::Tokens);
        assert_eq!(r.limit, 600.0);
        assert_eq!(r.used, 550.0);
        assert_eq!(r.requested, 100.0);
        // 50 tokens short at 10/s.
        assert_eq!(r.retry_after, Some(Duration::from_secs(5)));
        let snap = r.snapshot;
        assert_eq!(snap.tokens.unwrap().remaining, 50.0);
        assert_eq!(snap.tokens.unwrap().reset, Duration::from_secs(55));
        assert_eq!(floor_u64(snap.requests.unwrap().remaining), 999);
        // Larger than the whole bucket: never, and no hint.
        let r = limits.admit(601).unwrap_err();
        assert_eq!((r.axis, r.retry_after), (Axis::Tokens, None));
        tokio::time::advance(Duration::from_secs(5)).await;
        limits.admit(100).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn both_short_reports_the_longer_wait() {
        // 6 rpm (10 s per request), 60 tpm (1 token per second).
        let limits = Limits::new(Some(6.0), Some(60.0)).unwrap();
        for _ in 0..6 {
            limits.admit(1).unwrap();
        }
        // Requests: 10 s away; tokens: 54 left, 58 asked: 4 s away.
        let r = limits.admit(58).unwrap_err();
        assert_eq!(r.axis, Axis::Requests);
        assert_eq!(r.retry_after, Some(Duration::from_secs(10)));
        // Tokens: 60 asked, 6 s away; requests 10 s: still requests.
        tokio::time::advance(Duration::from_secs(9)).await;
        // Requests: 1 s away (0.9 held); tokens: 60 asked, bucket full again.
        let r = limits.admit(60).unwrap_err();
        assert_eq!(r.axis, Axis::Requests);
        assert_eq!(r.retry_after, Some(Duration::from_secs(1)));
        limits.admit(0).unwrap_err();
        tokio::time::advance(Duration::from_secs(1)).await;
        limits.admit(60).unwrap();
        // Now tokens are empty and requests hold 0: requests 10 s, tokens 30 s for 30.
        let r = limits.admit(30).unwrap_err();
        assert_eq!(r.axis, Axis::Tokens);
        assert_eq!(r.retry_after, Some(Duration::from_secs(30)));
        limits.refill_all();
        assert_eq!(limits.peek().tokens.unwrap().remaining, 60.0);
        assert_eq!(limits.peek().requests.unwrap().remaining, 6.0);
    }
}
