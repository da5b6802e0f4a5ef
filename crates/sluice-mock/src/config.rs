//! [`MockConfig`]: how the mock answers when a request carries no fault script.
//!
//! The same struct is the `sluice mock` command line (it derives [`clap::Args`] so the CLI can
//! flatten it) and the value tests build in code, so the defaults live in exactly one place: the
//! `#[arg(default_value..)]` attributes, which [`Default`] mirrors (a unit test keeps them equal).

use std::time::Duration;

/// Behaviour of a [`MockServer`](crate::MockServer).
///
/// Random faults (`p_*`) are drawn for requests *without* an `x-sluice-mock-fault` header, in
/// the order the fields are declared, from one uniform draw of a PRNG seeded with `seed`: with
/// `p_429 = 0.1, p_500 = 0.2` a request gets a 429 with probability 0.1, a 500 with 0.2, and a
/// normal answer otherwise. Call [`MockConfig::validate`] (the server does) to check the sum.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct MockConfig {
    /// Content chunks per answer (one chunk = one completion token).
    #[arg(long, default_value_t = 8)]
    pub chunks: usize,

    /// Delay before the first content chunk of a stream, and before a non-streaming answer
    /// (e.g. "50ms", "1s").
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub ttft: Duration,

    /// Delay between two content chunks of a stream (e.g. "5ms").
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub chunk_gap: Duration,

    /// Context window in tokens: a prompt estimated larger (characters of all message text / 4,
    /// rounded up) is answered with 400 `context_length_exceeded`.
    #[arg(long, value_name = "TOKENS")]
    pub context_limit: Option<usize>,

    /// Seed of the pseudo-random fault draw (same seed, same sequence of outcomes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Probability per request of a random 429 rate limit (with the --retry-after hint).
    #[arg(long = "p-429", default_value_t = 0.0, value_name = "P")]
    pub p_429: f64,

    /// Probability per request of a random quota error (OpenAI: 429 `insufficient_quota`;
    /// Anthropic: 400 "credit balance is too low").
    #[arg(long = "p-quota", default_value_t = 0.0, value_name = "P")]
    pub p_quota: f64,

    /// Probability per request of a random 500 server error.
    #[arg(long = "p-500", default_value_t = 0.0, value_name = "P")]
    pub p_500: f64,

    /// Probability per request of a random 502 bad gateway.
    #[arg(long = "p-502", default_value_t = 0.0, value_name = "P")]
    pub p_502: f64,

    /// Probability per request of a random 503 overloaded.
    #[arg(long = "p-503", default_value_t = 0.0, value_name = "P")]
    pub p_503: f64,

    /// Probability per request of a random 504 gateway timeout.
    #[arg(long = "p-504", default_value_t = 0.0, value_name = "P")]
    pub p_504: f64,

    /// Probability per request of a random 529 (Anthropic-style overloaded_error).
    #[arg(long = "p-529", default_value_t = 0.0, value_name = "P")]
    pub p_529: f64,

    /// Probability per request of closing the connection without any response byte.
    #[arg(long = "p-reset", default_value_t = 0.0, value_name = "P")]
    pub p_reset: f64,

    /// Probability per request of cutting the answer halfway (no finish chunk, no `[DONE]`).
    #[arg(long = "p-cut", default_value_t = 0.0, value_name = "P")]
    pub p_cut: f64,

    /// Probability per request of stalling the answer halfway until the client gives up.
    #[arg(long = "p-stall", default_value_t = 0.0, value_name = "P")]
    pub p_stall: f64,

    /// Probability per request of an in-band error event at the start of a stream
    /// (`server_error` for OpenAI, `overloaded_error` for Anthropic; a plain 500 for
    /// non-streaming requests).
    #[arg(long = "p-inband", default_value_t = 0.0, value_name = "P")]
    pub p_inband: f64,

    /// Hint sent with random 429s: `retry-after` (seconds, rounded up) and `retry-after-ms`
    /// (exact), on both endpoints. Without it random 429s carry no hint header.
    #[arg(long, value_parser = parse_duration)]
    pub retry_after: Option<Duration>,

    /// Model name echoed in responses when the request names none; listed by /v1/models.
    #[arg(long, default_value = "mock-1")]
    pub model_name: String,

    /// Requests per minute the mock admits, like a provider's RPM limit: a token bucket of one
    /// minute's worth, refilled continuously, shared by both endpoints. Beyond it: 429
    /// `rate_limit_exceeded` (`requests`) / `rate_limit_error` with the wait as `retry-after`
    /// and `retry-after-ms`. Absent: unlimited.
    #[arg(long, value_name = "N")]
    pub rpm: Option<f64>,

    /// Tokens per minute the mock admits, like a provider's TPM limit; a request costs its
    /// prompt estimate (characters / 4) plus its `max_tokens` (`max_completion_tokens` first;
    /// absent: `--chunks`). Absent: unlimited.
    #[arg(long, value_name = "N")]
    pub tpm: Option<f64>,

    /// With --rpm / --tpm: leave out the `x-ratelimit-*` / `anthropic-ratelimit-*` headers
    /// (429s keep `retry-after`), for measuring a client's own limiter without what it would
    /// learn from them. Real providers always send them.
    #[arg(long)]
    pub no_limit_headers: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            chunks: 8,
            ttft: Duration::ZERO,
            chunk_gap: Duration::ZERO,
            context_limit: None,
            seed: 1,
            p_429: 0.0,
            p_quota: 0.0,
            p_500: 0.0,
            p_502: 0.0,
            p_503: 0.0,
            p_504: 0.0,
            p_529: 0.0,
            p_reset: 0.0,
            p_cut: 0.0,
            p_stall: 0.0,
            p_inband: 0.0,
            retry_after: None,
            model_name: "mock-1".to_owned(),
            rpm: None,
            tpm: None,
            no_limit_headers: false,
        }
    }
}

impl MockConfig {
    /// The random-fault probabilities with their flag names, in draw order.
    pub(crate) fn fault_probabilities(&self) -> [(&'static str, f64); 11] {
        [
            ("p_429", self.p_429),
            ("p_quota", self.p_quota),
            ("p_500", self.p_500),
            ("p_502", self.p_502),
            ("p_503", self.p_503),
            ("p_504", self.p_504),
            ("p_529", self.p_529),
            ("p_reset", self.p_reset),
            ("p_cut", self.p_cut),
            ("p_stall", self.p_stall),
            ("p_inband", self.p_inband),
        ]
    }

    /// Checks that every probability is within `0..=1`, that they sum to at most 1, that
    /// `model_name` is not empty and that `rpm` / `tpm`, when set, are positive and finite.
    /// Returns every problem found, joined by "; ".
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut sum = 0.0;
        for (name, p) in self.fault_probabilities() {
            if !(0.0..=1.0).contains(&p) {
                problems.push(format!("{name} must be between 0 and 1, got {p}"));
            } else {
                sum += p;
            }
        }
        // A little slack so that e.g. 0.1 * 10 (0.9999999999999999 or 1.0000000000000002) passes.
        if sum > 1.0 + 1e-9 {
            problems.push(format!(
                "the fault probabilities must sum to at most 1, got {sum}"
            ));
        }
        if self.model_name.is_empty() {
            problems.push("model_name must not be empty".to_owned());
        }
        for (name, limit) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if let Some(limit) = limit
                && !(limit.is_finite() && limit > 0.0)
            {
                problems.push(format!("{name} must be a positive number, got {limit}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Whether any random fault can be drawn (so the draw can be skipped entirely).
    pub(crate) fn has_random_faults(&self) -> bool {
        self.fault_probabilities().iter().any(|(_, p)| *p > 0.0)
    }
}

/// Parses "50ms", "1s", "1m 30s", ... (humantime syntax; a bare "0" is zero).
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockConfig,
    }

    #[test]
    fn default_matches_the_cli_defaults() {
        let cli = Cli::try_parse_from(["mock"]).unwrap();
        assert_eq!(cli.mock, MockConfig::default());
        assert!(MockConfig::default().validate().is_ok());
    }

    #[test]
    fn cli_flags_parse() {
        let cli = Cli::try_parse_from([
            "mock",
            "--chunks",
            "3",
            "--ttft",
            "50ms",
            "--chunk-gap",
            "1s",
            "--context-limit",
            "100",
            "--seed",
            "7",
            "--p-429",
            "0.25",
            "--p-inband",
            "0.5",
            "--retry-after",
            "1500ms",
            "--model-name",
            "m",
            "--rpm",
            "600",
            "--tpm",
            "1.5e4",
            "--no-limit-headers",
        ])
        .unwrap();
        let c = cli.mock;
        assert_eq!(c.chunks, 3);
        assert_eq!(c.ttft, Duration::from_millis(50));
        assert_eq!(c.chunk_gap, Duration::from_secs(1));
        assert_eq!(c.context_limit, Some(100));
        assert_eq!(c.seed, 7);
        assert_eq!(c.p_429, 0.25);
        assert_eq!(c.p_inband, 0.5);
        assert_eq!(c.retry_after, Some(Duration::from_millis(1500)));
        assert_eq!(c.model_name, "m");
        assert_eq!(c.rpm, Some(600.0));
        assert_eq!(c.tpm, Some(15_000.0));
        assert!(c.no_limit_headers);
        assert!(Cli::try_parse_from(["mock", "--ttft", "soon"]).is_err());
    }

    #[test]
    fn validate_reports_every_problem() {
        let ok = MockConfig {
            p_429: 0.5,
            p_500: 0.5,
            ..MockConfig::default()
        };
        assert!(ok.validate().is_ok());
        let tenths = MockConfig {
            p_429: 0.1,
            p_quota: 0.1,
            p_500: 0.1,
            p_502: 0.1,
            p_503: 0.1,
            p_504: 0.1,
            p_529: 0.1,
            p_reset: 0.1,
            p_cut: 0.1,
            p_stall: 0.1,
            ..MockConfig::default()
        };
        assert!(tenths.validate().is_ok());
        let bad = MockConfig {
            p_429: 0.7,
            p_cut: 0.7,
            p_stall: -0.1,
            model_name: String::new(),
            ..MockConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("sum to at most 1"), "{err}");
        assert!(err.contains("p_stall must be between 0 and 1"), "{err}");
        assert!(err.contains("model_name"), "{err}");
        let nan = MockConfig {
            p_503: f64::NAN,
            ..MockConfig::default()
        };
        assert!(nan.validate().is_err());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let c = MockConfig {
                rpm: Some(bad),
                ..MockConfig::default()
            };
            assert!(c.validate().unwrap_err().contains("rpm must be"), "{bad}");
            let c = MockConfig {
                tpm: Some(bad),
                ..MockConfig::default()
            };
            assert!(c.validate().unwrap_err().contains("tpm must be"), "{bad}");
        }
        let limited = MockConfig {
            rpm: Some(0.5),
            tpm: Some(100.0),
            ..MockConfig::default()
        };
        assert!(limited.validate().is_ok());
    }
}
