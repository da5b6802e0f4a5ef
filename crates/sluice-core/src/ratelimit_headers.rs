//! What a provider's rate-limit headers say about its buckets, for the limiter to learn from.
//!
//! Both providers send their view of the account's limits on every response, not only on 429s
//! (reference §1.5 and §2.5):
//!
//! - OpenAI: `x-ratelimit-limit-<kind>`, `x-ratelimit-remaining-<kind>` and
//!   `x-ratelimit-reset-<kind>`, where the reset is a Go duration (`12ms`, `6m0s`) until the
//!   bucket is fully replenished.
//! - Anthropic: `anthropic-ratelimit-<kind>-limit`, `-remaining` and `-reset`, where the reset
//!   is an absolute RFC 3339 time, turned into a duration relative to the injected `now` (zero
//!   once past).
//!
//! A bucket family counts only when all three of its headers are usable: a limit that is a
//! positive finite number, a remaining count that is a non-negative finite number, and a reset
//! that parses. Anything else — Azure's `-1` and `0` placeholders, garbage, non-ASCII bytes — is
//! unknown, never an error. Limits are taken as per-minute values, which is what both providers
//! report for their standard per-minute limits.
//!
//! # Folding several families into one view
//!
//! The limiter keeps one request bucket and one token bucket per target, counting total tokens
//! (prompt plus output). The headers may describe several families per axis:
//!
//! - **Requests**: OpenAI `requests` and Anthropic `requests`. If several are present, the most
//!   restrictive wins (see below).
//! - **Tokens, whole-total families**: OpenAI `tokens` and any `tokens_<variant>` (such as
//!   `tokens_usage_based`), and Anthropic `tokens`. Each limits total tokens, so the view is the
//!   most restrictive of them: the smallest limit, the smallest remaining count, and the latest
//!   reset among the families at that smallest remaining count.
//! - **Tokens, partial families**: Anthropic `input-tokens` and `output-tokens` each limit only
//!   part of the total. Taking their limit as the total-token limit would throttle far below
//!   what the provider allows (in the reference capture, 16 000 output tokens per minute against
//!   96 000 in total), so they do *not* lower the learned limit. They matter only when exhausted:
//!   an exhausted part (remaining `0`) blocks every request, because every request sends input
//!   and asks for output, so the view then reports `remaining = 0` with the latest such reset.
//!   Only when no whole-total family is present is the view built from the parts, as their sum
//!   (total tokens can never exceed input limit plus output limit, so the sum never throttles
//!   below the provider).

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::parse_go_duration;

/// One provider bucket as its headers describe it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketView {
    /// The bucket's limit per minute (its capacity).
    pub limit: f64,
    /// Units left now, as of the response.
    pub remaining: f64,
    /// Time until the bucket is fully replenished.
    pub reset: Duration,
}

impl BucketView {
    /// Whether the provider will refuse anything on this axis until the reset.
    pub fn is_exhausted(&self) -> bool {
        self.remaining <= 0.0
    }
}

/// The provider's view of the request and token buckets, from one response's headers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimitSnapshot {
    /// The requests-per-minute bucket.
    pub requests: Option<BucketView>,
    /// The tokens-per-minute bucket (total tokens; see the module docs for how families fold).
    pub tokens: Option<BucketView>,
}

impl RateLimitSnapshot {
    /// Reads the rate-limit headers of either provider; `now` is when the response arrived.
    /// `None` when no usable bucket is described.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Self> {
        let mut requests = Vec::new();
        let mut whole_tokens = Vec::new();
        let mut part_tokens = Vec::new();

        for name in headers.keys() {
            let name = name.as_str();
            if let Some(kind) = name.strip_prefix("x-ratelimit-limit-") {
                let view = openai_view(headers, kind);
                if kind == "requests" {
                    requests.extend(view);
                } else if kind == "tokens" || kind.starts_with("tokens_") {
                    whole_tokens.extend(view);
                }
            } else if let Some(kind) = name
                .strip_prefix("anthropic-ratelimit-")
                .and_then(|rest| rest.strip_suffix("-limit"))
            {
                let view = anthropic_view(headers, kind, now);
                match kind {
                    "requests" => requests.extend(view),
                    "tokens" => whole_tokens.extend(view),
                    "input-tokens" | "output-tokens" => part_tokens.extend(view),
                    _ => {}
                }
            }
        }

        let snapshot = Self {
            requests: most_restrictive(&requests),
            tokens: tokens_view(&whole_tokens, &part_tokens),
        };
        (snapshot.requests.is_some() || snapshot.tokens.is_some()).then_some(snapshot)
    }
}

fn tokens_view(whole: &[BucketView], parts: &[BucketView]) -> Option<BucketView> {
    let mut view = most_restrictive(whole).or_else(|| {
        (!parts.is_empty()).then(|| BucketView {
            limit: parts.iter().map(|p| p.limit).sum(),
            remaining: parts.iter().map(|p| p.remaining).sum(),
            reset: parts.iter().map(|p| p.reset).max().unwrap_or_default(),
        })
    })?;
    for part in parts.iter().filter(|p| p.is_exhausted()) {
        view.reset = if view.is_exhausted() {
            view.reset.max(part.reset)
        } else {
            part.reset
        };
        view.remaining = 0.0;
    }
    Some(view)
}

/// The smallest limit, the smallest remaining count, and the latest reset among the views at
/// that smallest remaining count.
fn most_restrictive(views: &[BucketView]) -> Option<BucketView> {
    let limit = views.iter().map(|v| v.limit).reduce(f64::min)?;
    let remaining = views.iter().map(|v| v.remaining).reduce(f64::min)?;
    let reset = views
        .iter()
        .filter(|v| v.remaining == remaining)
        .map(|v| v.reset)
        .max()?;
    Some(BucketView {
        limit,
        remaining,
        reset,
    })
}

fn openai_view(headers: &HeaderMap, kind: &str) -> Option<BucketView> {
    let reset =
        header(headers, &format!("x-ratelimit-reset-{kind}")).and_then(parse_go_duration)?;
    view(
        header(headers, &format!("x-ratelimit-limit-{kind}"))?,
        header(headers, &format!("x-ratelimit-remaining-{kind}"))?,
        reset,
    )
}

fn anthropic_view(headers: &HeaderMap, kind: &str, now: SystemTime) -> Option<BucketView> {
    let reset = header(headers, &format!("anthropic-ratelimit-{kind}-reset"))?;
    let reset = humantime::parse_rfc3339(reset).ok()?;
    view(
        header(headers, &format!("anthropic-ratelimit-{kind}-limit"))?,
        header(headers, &format!("anthropic-ratelimit-{kind}-remaining"))?,
        reset.duration_since(now).unwrap_or(Duration::ZERO),
    )
}

fn view(limit: &str, remaining: &str, reset: Duration) -> Option<BucketView> {
    let limit = number(limit).filter(|l| *l > 0.0)?;
    let remaining = number(remaining)?;
    Some(BucketView {
        limit,
        remaining,
        reset,
    })
}

/// A finite, non-negative number.
fn number(value: &str) -> Option<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
}

/// The first value of `name`, trimmed, if it is non-empty visible ASCII.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    /// Builds a header map from `name: value` lines, as captured in the reference.
    fn headers(block: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').expect("name: value");
            map.append(
                HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                HeaderValue::from_str(value.trim()).unwrap(),
            );
        }
        map
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    fn snapshot(block: &str) -> Option<RateLimitSnapshot> {
        RateLimitSnapshot::from_headers(&headers(block), at("2025-08-21T12:40:00Z"))
    }

    fn view(limit: f64, remaining: f64, reset: Duration) -> Option<BucketView> {
        Some(BucketView {
            limit,
            remaining,
            reset,
        })
    }

    /// Reference §1.5.
    const OPENAI_BLOCK: &str = "
        x-ratelimit-limit-requests: 5000
        x-ratelimit-limit-tokens: 160000
        x-ratelimit-remaining-requests: 4999
        x-ratelimit-remaining-tokens: 159976
        x-ratelimit-reset-requests: 12ms
        x-ratelimit-reset-tokens: 9ms
        x-request-id: req_f287898caa6364cd42bc01355f74dd2a
    ";

    /// Reference §2.5.
    const ANTHROPIC_BLOCK: &str = "
        anthropic-ratelimit-requests-limit: 1000
        anthropic-ratelimit-requests-remaining: 999
        anthropic-ratelimit-requests-reset: 2025-08-21T12:40:59Z
        anthropic-ratelimit-tokens-limit: 96000
        anthropic-ratelimit-tokens-remaining: 96000
        anthropic-ratelimit-tokens-reset: 2025-08-21T12:40:59Z
        anthropic-ratelimit-input-tokens-limit: 80000
        anthropic-ratelimit-input-tokens-remaining: 80000
        anthropic-ratelimit-input-tokens-reset: 2025-08-21T12:40:59Z
        anthropic-ratelimit-output-tokens-limit: 16000
        anthropic-ratelimit-output-tokens-remaining: 16000
        anthropic-ratelimit-output-tokens-reset: 2025-08-21T12:41:00Z
        request-id: req_011CSLsW7mFqvHHnzrKdKjAE
    ";

    #[test]
    fn no_rate_limit_headers_no_snapshot() {
        assert_eq!(snapshot(""), None);
        assert_eq!(snapshot("x-request-id: req_1\nretry-after: 2"), None);
    }

    #[test]
    fn openai_reference_block() {
        assert_eq!(
            snapshot(OPENAI_BLOCK),
            Some(RateLimitSnapshot {
                requests: view(5000.0, 4999.0, Duration::from_millis(12)),
                tokens: view(160_000.0, 159_976.0, Duration::from_millis(9)),
            })
        );
    }

    #[test]
    fn openai_exhausted_tokens() {
        let block = OPENAI_BLOCK
            .replace("remaining-tokens: 159976", "remaining-tokens: 0")
            .replace("reset-tokens: 9ms", "reset-tokens: 2s");
        let s = snapshot(&block).unwrap();
        let tokens = s.tokens.unwrap();
        assert!(tokens.is_exhausted());
        assert_eq!(tokens.reset, Duration::from_secs(2));
        assert!(!s.requests.unwrap().is_exhausted());
    }

    #[test]
    fn openai_usage_based_variant_counts_as_total_tokens() {
        let block = format!(
            "{OPENAI_BLOCK}
             x-ratelimit-limit-tokens_usage_based: 40000
             x-ratelimit-remaining-tokens_usage_based: 39000
             x-ratelimit-reset-tokens_usage_based: 6m0s"
        );
        let s = snapshot(&block).unwrap();
        assert_eq!(
            s.tokens,
            view(40_000.0, 39_000.0, Duration::from_secs(360)),
            "the most restrictive total-token family wins"
        );
    }

    #[test]
    fn anthropic_reference_block() {
        assert_eq!(
            snapshot(ANTHROPIC_BLOCK),
            Some(RateLimitSnapshot {
                requests: view(1000.0, 999.0, Duration::from_secs(59)),
                // The combined family, not the 16000 output-token limit.
                tokens: view(96_000.0, 96_000.0, Duration::from_secs(59)),
            })
        );
    }

    #[test]
    fn anthropic_exhausted_part_exhausts_the_tokens_view() {
        let block = ANTHROPIC_BLOCK.replace(
            "output-tokens-remaining: 16000",
            "output-tokens-remaining: 0",
        );
        assert_eq!(
            snapshot(&block).unwrap().tokens,
            view(96_000.0, 0.0, Duration::from_secs(60))
        );
        // Both exhausted: the latest reset.
        let both = block
            .replace("-tokens-remaining: 96000", "-tokens-remaining: 0")
            .replace(
                "anthropic-ratelimit-tokens-reset: 2025-08-21T12:40:59Z",
                "anthropic-ratelimit-tokens-reset: 2025-08-21T12:41:30Z",
            );
        assert_eq!(
            snapshot(&both).unwrap().tokens,
            view(96_000.0, 0.0, Duration::from_secs(90))
        );
    }

    #[test]
    fn anthropic_parts_alone_are_summed() {
        let parts: String = ANTHROPIC_BLOCK
            .lines()
            .filter(|l| l.contains("input-tokens") || l.contains("output-tokens"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            snapshot(&parts).unwrap(),
            RateLimitSnapshot {
                requests: None,
                tokens: view(96_000.0, 96_000.0, Duration::from_secs(60)),
            }
        );
    }

    #[test]
    fn anthropic_reset_in_the_past_is_zero() {
        let s =
            RateLimitSnapshot::from_headers(&headers(ANTHROPIC_BLOCK), at("2025-08-21T13:00:00Z"))
                .unwrap();
        assert_eq!(s.requests.unwrap().reset, Duration::ZERO);
    }

    #[test]
    fn unusable_families_are_unknown() {
        // Azure placeholders.
        let azure = "x-ratelimit-limit-tokens: 0
                     x-ratelimit-remaining-tokens: 0
                     x-ratelimit-reset-tokens: -1
                     x-ratelimit-limit-requests: -1
                     x-ratelimit-remaining-requests: -1
                     x-ratelimit-reset-requests: 0";
        assert_eq!(snapshot(azure), None);
        // A family missing a header is skipped; the other still counts.
        let partial = OPENAI_BLOCK.replace("x-ratelimit-reset-tokens: 9ms", "");
        assert_eq!(
            snapshot(&partial),
            Some(RateLimitSnapshot {
                requests: view(5000.0, 4999.0, Duration::from_millis(12)),
                tokens: None,
            })
        );
        let garbage = ANTHROPIC_BLOCK
            .replace("requests-limit: 1000", "requests-limit: lots")
            .replace("tokens-reset: 2025-08-21T12:40:59Z", "tokens-reset: soon");
        assert_eq!(
            snapshot(&garbage),
            Some(RateLimitSnapshot {
                requests: None,
                // Only output-tokens is left usable, so the view is that part alone.
                tokens: view(16_000.0, 16_000.0, Duration::from_secs(60)),
            })
        );
        for value in ["NaN", "inf", "-5", "1e999"] {
            let block = OPENAI_BLOCK.replace(
                "remaining-requests: 4999",
                &format!("remaining-requests: {value}"),
            );
            assert_eq!(snapshot(&block).unwrap().requests, None, "{value}");
        }
    }

    proptest! {
        #[test]
        fn from_headers_never_panics(values in proptest::collection::vec(any::<Vec<u8>>(), 9)) {
            let names = [
                "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-input-tokens-limit",
                "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset",
            ];
            let mut map = HeaderMap::new();
            for (name, value) in names.into_iter().zip(values) {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    map.insert(name, value);
                }
            }
            if let Some(s) = RateLimitSnapshot::from_headers(&map, SystemTime::UNIX_EPOCH) {
                for v in s.requests.into_iter().chain(s.tokens) {
                    prop_assert!(v.limit > 0.0 && v.limit.is_finite());
                    prop_assert!(v.remaining >= 0.0 && v.remaining.is_finite());
                }
            }
        }
    }
}
