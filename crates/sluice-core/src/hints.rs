//! What a provider's response headers say about retrying.
//!
//! Providers announce when a retry can succeed in several dialects, and [`ServerHints`]
//! folds them into one `retry_after`, in this order of trust:
//!
//! 1. `retry-after-ms` (OpenAI/Azure, milliseconds, fractions allowed): the most precise and
//!    what the official SDKs prefer.
//! 2. `retry-after` (RFC 9110): delay-seconds (fractions accepted, as the SDKs do) or an
//!    HTTP-date, taken relative to the injected `now`; a date in the past means "now"
//!    (`Duration::ZERO`).
//! 3. Only when neither gives a value: OpenAI's `x-ratelimit-reset-<kind>` (a Go
//!    `time.Duration` string such as `6m0s`) for every bucket whose
//!    `x-ratelimit-remaining-<kind>` is `0`, taking the longest, since the call needs every
//!    bucket to have room.
//! 4. Otherwise Anthropic's `anthropic-ratelimit-<kind>-reset` (an absolute RFC 3339 time) for
//!    every bucket whose `-remaining` is `0`, taking the latest, for the same reason.
//!
//! Reset headers describe when a bucket is *fully* replenished, so they overestimate the wait;
//! they are used only because a precise hint is missing. Both bucket families are matched by
//! header-name pattern rather than a fixed list, so variants like OpenAI's
//! `*-tokens_usage_based` or Anthropic's `input-tokens`/`output-tokens` count too.
//!
//! Values are never clamped here: a huge hint is kept as-is so the retry policy can decide to
//! fail over and report the hint. Negative, NaN, infinite or unparsable values are ignored, as
//! are header values that are not visible ASCII; nothing in here can panic on header bytes.
//! Time is injected (`now`), so the same code runs under paused test clocks.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The retry-related facts a provider put in its response headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerHints {
    /// The earliest time a retry can succeed, relative to the response.
    pub retry_after: Option<Duration>,
    /// `x-should-retry`: the server's explicit verdict, overriding the status code.
    pub should_retry: Option<bool>,
    /// `x-request-id` (OpenAI) or `request-id` (Anthropic), for logs and support tickets.
    pub request_id: Option<String>,
}

impl ServerHints {
    /// Reads the hints from `headers`; `now` is the time the response arrived, used to turn
    /// absolute timestamps into durations.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        let should_retry = header(headers, "x-should-retry").and_then(|v| match v {
            // The SDKs compare the exact strings; anything else is no verdict.
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        let request_id = header(headers, "x-request-id")
            .or_else(|| header(headers, "request-id"))
            .map(str::to_owned);
        Self {
            retry_after: retry_after(headers, now),
            should_retry,
            request_id,
        }
    }
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

fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| parse_number(v, true)) {
        return Some(ms);
    }
    if let Some(value) = header(headers, "retry-after") {
        if let Some(secs) = parse_number(value, false) {
            return Some(secs);
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    // No explicit hint: the reset of an exhausted bucket, from the one parser of the
    // rate-limit headers (OpenAI's and Anthropic's).
    let snapshot = crate::RateLimitSnapshot::from_headers(headers, now)?;
    [snapshot.requests, snapshot.tokens]
        .into_iter()
        .flatten()
        .filter(crate::BucketView::is_exhausted)
        .map(|view| view.reset)
        .max()
}

/// A non-negative finite number of seconds (or milliseconds); integers are converted exactly.
fn parse_number(value: &str, millis: bool) -> Option<Duration> {
    if let Ok(n) = value.parse::<u64>() {
        return Some(if millis {
            Duration::from_millis(n)
        } else {
            Duration::from_secs(n)
        });
    }
    let n = value
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)?;
    let secs = if millis { n / 1000.0 } else { n };
    // Only overflow is left to fail; such a hint is "forever", kept for the caller to cap.
    Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// Units in match order: `ms` must be tried before `m`.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Fraction digits beyond this cannot change the result by a whole nanosecond for any unit,
/// and keeping fewer keeps the arithmetic inside `u128`.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses a Go `time.Duration` string as OpenAI sends in `x-ratelimit-reset-*`: one or more
/// `<number><unit>` pairs (`20ms`, `9.816s`, `6m0s`, `1h2m3s`, `250µs`), numbers may have a
/// fraction, units `h m s ms us µs ns`. A bare `0` is zero. Signs, spaces, a missing unit,
/// trailing junk or a value beyond `Duration::MAX` give `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int_digits, after) = split_digits(rest);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        let (unit, after) = UNITS
            .iter()
            .find_map(|(name, nanos)| after.strip_prefix(name).map(|r| (*nanos, r)))?;
        rest = after;

        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
        }
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac_digits.bytes().take(MAX_FRACTION_DIGITS) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        let nanos = whole.checked_mul(unit)?.checked_add(frac * unit / scale)?;
        total = total.checked_add(nanos)?;
    }
    if total > Duration::MAX.as_nanos() {
        return None;
    }
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    // Both parts fit: total <= Duration::MAX.
    Some(Duration::new(
        (total / NANOS_PER_SEC) as u64,
        (total % NANOS_PER_SEC) as u32,
    ))
}

fn split_digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
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

    fn hints(block: &str) -> ServerHints {
        ServerHints::from_headers(&headers(block), at("2025-08-21T12:40:00Z"))
    }

    const OPENAI_BLOCK: &str = "
        x-ratelimit-limit-requests: 5000
        x-ratelimit-limit-tokens: 160000
        x-ratelimit-remaining-requests: 4999
        x-ratelimit-remaining-tokens: 159976
        x-ratelimit-reset-requests: 12ms
        x-ratelimit-reset-tokens: 9ms
        x-request-id: req_f287898caa6364cd42bc01355f74dd2a
    ";

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
    fn empty_headers_give_no_hints() {
        assert_eq!(hints(""), ServerHints::default());
    }

    #[test]
    fn retry_after_seconds_integer_and_fraction() {
        assert_eq!(
            hints("retry-after: 20").retry_after,
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            hints("retry-after: 1.5").retry_after,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(hints("retry-after: 0").retry_after, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let h = hints("retry-after: 20\nretry-after-ms: 644");
        assert_eq!(h.retry_after, Some(Duration::from_millis(644)));
        let h = hints("retry-after-ms: 12.5\nretry-after: 20");
        assert_eq!(h.retry_after, Some(Duration::from_micros(12_500)));
        // An unusable retry-after-ms falls through to retry-after.
        let h = hints("retry-after-ms: soon\nretry-after: 3");
        assert_eq!(h.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_http_date_is_relative_to_now() {
        let now = at("2015-10-21T07:27:00Z");
        let map = headers("retry-after: Wed, 21 Oct 2015 07:28:00 GMT");
        let h = ServerHints::from_headers(&map, now);
        assert_eq!(h.retry_after, Some(Duration::from_secs(60)));
        // A date already past means the server allows a retry now.
        let later = at("2015-10-21T08:00:00Z");
        assert_eq!(
            ServerHints::from_headers(&map, later).retry_after,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn bad_numbers_are_ignored() {
        for value in [
            "-1", "-0.5", "NaN", "inf", "-inf", "infinity", "soon", "1s", "0x10",
        ] {
            assert_eq!(
                hints(&format!("retry-after: {value}")).retry_after,
                None,
                "{value}"
            );
            assert_eq!(
                hints(&format!("retry-after-ms: {value}")).retry_after,
                None,
                "{value}"
            );
        }
    }

    #[test]
    fn huge_values_are_kept_for_the_caller_to_cap() {
        assert_eq!(
            hints("retry-after: 86400").retry_after,
            Some(Duration::from_secs(86_400))
        );
        let max = u64::MAX;
        assert_eq!(
            hints(&format!("retry-after: {max}")).retry_after,
            Some(Duration::from_secs(max))
        );
        assert_eq!(hints("retry-after: 1e300").retry_after, Some(Duration::MAX));
        assert_eq!(
            hints("retry-after-ms: 1e300").retry_after,
            Some(Duration::MAX)
        );
    }

    #[test]
    fn non_ascii_header_bytes_are_ignored() {
        let mut map = HeaderMap::new();
        for name in [
            "retry-after",
            "retry-after-ms",
            "x-should-retry",
            "x-request-id",
        ] {
            map.insert(name, HeaderValue::from_bytes(b"\xff\xfe 12").unwrap());
        }
        map.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("0"),
        );
        map.insert(
            "x-ratelimit-reset-tokens",
            HeaderValue::from_bytes(b"1\xc3\xa9s").unwrap(),
        );
        let h = ServerHints::from_headers(&map, SystemTime::UNIX_EPOCH);
        assert_eq!(h, ServerHints::default());
    }

    #[test]
    fn should_retry_is_an_exact_match() {
        assert_eq!(hints("x-should-retry: true").should_retry, Some(true));
        assert_eq!(hints("x-should-retry: false").should_retry, Some(false));
        assert_eq!(hints("x-should-retry: TRUE").should_retry, None);
        assert_eq!(hints("x-should-retry: 1").should_retry, None);
    }

    #[test]
    fn request_id_from_either_header() {
        assert_eq!(
            hints("x-request-id: req_1").request_id.as_deref(),
            Some("req_1")
        );
        assert_eq!(
            hints("request-id: req_2").request_id.as_deref(),
            Some("req_2")
        );
        let both = hints("request-id: req_2\nx-request-id: req_1");
        assert_eq!(both.request_id.as_deref(), Some("req_1"));
    }

    #[test]
    fn openai_reference_block() {
        let h = hints(OPENAI_BLOCK);
        // Buckets have room, so the reset times are no hint.
        assert_eq!(
            h,
            ServerHints {
                retry_after: None,
                should_retry: None,
                request_id: Some("req_f287898caa6364cd42bc01355f74dd2a".into()),
            }
        );
    }

    #[test]
    fn openai_exhausted_buckets_give_the_longest_reset() {
        let tokens_empty = OPENAI_BLOCK.replace("remaining-tokens: 159976", "remaining-tokens: 0");
        assert_eq!(
            hints(&tokens_empty).retry_after,
            Some(Duration::from_millis(9))
        );
        let both_empty = tokens_empty.replace("remaining-requests: 4999", "remaining-requests: 0");
        assert_eq!(
            hints(&both_empty).retry_after,
            Some(Duration::from_millis(12))
        );
        // retry-after beats the reset headers.
        let with_hint = format!("{both_empty}\nretry-after: 2");
        assert_eq!(hints(&with_hint).retry_after, Some(Duration::from_secs(2)));
        // Any bucket kind counts, e.g. the usage-based variants (sent, like every family,
        // with its limit; the rate-limit header parser needs all three to trust a family).
        let usage = "x-ratelimit-limit-tokens_usage_based: 90000
                     x-ratelimit-remaining-tokens_usage_based: 0
                     x-ratelimit-reset-tokens_usage_based: 6m0s";
        assert_eq!(hints(usage).retry_after, Some(Duration::from_secs(360)));
    }

    #[test]
    fn azure_placeholders_are_unknown() {
        let h = hints(
            "x-ratelimit-remaining-tokens: 0
             x-ratelimit-reset-tokens: -1
             x-ratelimit-remaining-requests: -1
             x-ratelimit-reset-requests: 0",
        );
        assert_eq!(h.retry_after, None);
    }

    #[test]
    fn anthropic_reference_block() {
        let h = hints(ANTHROPIC_BLOCK);
        assert_eq!(h.retry_after, None);
        assert_eq!(
            h.request_id.as_deref(),
            Some("req_011CSLsW7mFqvHHnzrKdKjAE")
        );
    }

    #[test]
    fn anthropic_exhausted_buckets_give_the_latest_reset() {
        let requests_empty =
            ANTHROPIC_BLOCK.replace("requests-remaining: 999", "requests-remaining: 0");
        assert_eq!(
            hints(&requests_empty).retry_after,
            Some(Duration::from_secs(59))
        );
        let output_empty = requests_empty.replace(
            "output-tokens-remaining: 16000",
            "output-tokens-remaining: 0",
        );
        assert_eq!(
            hints(&output_empty).retry_after,
            Some(Duration::from_secs(60))
        );
        // After the reset the bucket is full again: retry now.
        let late = ServerHints::from_headers(&headers(&output_empty), at("2025-08-21T13:00:00Z"));
        assert_eq!(late.retry_after, Some(Duration::ZERO));
        // retry-after, sent on real 429s, wins.
        let with_hint = format!("{output_empty}\nretry-after: 7");
        assert_eq!(hints(&with_hint).retry_after, Some(Duration::from_secs(7)));
        // A malformed timestamp is ignored; the other exhausted bucket still counts.
        let garbage = output_empty.replace("2025-08-21T12:40:59Z", "tomorrow");
        assert_eq!(hints(&garbage).retry_after, Some(Duration::from_secs(60)));
        let only_garbage = requests_empty.replace("2025-08-21T12:40:59Z", "tomorrow");
        assert_eq!(hints(&only_garbage).retry_after, None);
    }

    #[test]
    fn go_durations() {
        let ok: [(&str, Duration); 16] = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("20ms", Duration::from_millis(20)),
            ("12ms", Duration::from_millis(12)),
            ("1s", Duration::from_secs(1)),
            ("6s", Duration::from_secs(6)),
            ("9.816s", Duration::from_millis(9816)),
            ("6m0s", Duration::from_secs(360)),
            ("1m2s", Duration::from_secs(62)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("1.5us", Duration::from_nanos(1500)),
            ("250µs", Duration::from_micros(250)),
            ("250μs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            (".5s", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
        ];
        for (input, want) in ok {
            assert_eq!(parse_go_duration(input), Some(want), "{input}");
        }
        assert_eq!(
            parse_go_duration("1m30s500ms"),
            Some(Duration::from_millis(90_500))
        );
        assert_eq!(
            parse_go_duration("0.000000001s"),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(
            parse_go_duration("1.0000000000000000000000000001s"),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn go_duration_garbage() {
        for input in [
            "",
            "-1",
            "-1s",
            "+1s",
            "1",
            "00",
            "s",
            ".",
            ".s",
            "1x",
            "1s ",
            " 1s",
            "1s2",
            "1ss",
            "1 s",
            "1.2.3s",
            "ms",
            "1e3s",
            "9999999999999999999999999999999999999999h",
            "1M",
        ] {
            assert_eq!(parse_go_duration(input), None, "{input:?}");
        }
        // Beyond Duration::MAX.
        assert_eq!(parse_go_duration("99999999999999999999h"), None);
    }

    proptest! {
        #[test]
        fn go_duration_never_panics(s in any::<String>()) {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn go_duration_never_panics_on_near_misses(s in "[0-9.µμnumsh+-]{0,24}") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn go_duration_roundtrips_millis(h in 0u64..100, m in 0u64..60, ms in 0u64..60_000) {
            let text = format!("{h}h{m}m{ms}ms");
            let want = Duration::from_secs(h * 3600 + m * 60) + Duration::from_millis(ms);
            prop_assert_eq!(parse_go_duration(&text), Some(want));
        }

        #[test]
        fn from_headers_never_panics(values in proptest::collection::vec(any::<Vec<u8>>(), 8)) {
            let names = [
                "retry-after", "retry-after-ms", "x-should-retry", "x-request-id",
                "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset",
            ];
            let mut map = HeaderMap::new();
            for (name, value) in names.into_iter().zip(values) {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    map.insert(name, value);
                }
            }
            let _ = ServerHints::from_headers(&map, SystemTime::UNIX_EPOCH);
        }
    }
}
