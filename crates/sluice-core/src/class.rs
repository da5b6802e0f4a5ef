//! The one error-classification table shared by every provider.
//!
//! Every failed attempt ends up as exactly one [`ErrorClass`], and the class alone decides what
//! happens next through its [`Disposition`]: retry the same target, fall back to another one,
//! count against the target's circuit breaker. Keeping the disposition in a `const fn` next to
//! the enum means the retry loop, the fallback router, the breaker and the docs cannot disagree.
//!
//! | class | retry same target | fall back | breaker |
//! |---|---|---|---|
//! | `rate_limited` | yes (never sooner than the server's hint) | always | no |
//! | `quota_exhausted` | no | always | no |
//! | `auth` | no | always (other credential) | no |
//! | `bad_request` | no | never | no |
//! | `context_length` | no | only to a larger window | no |
//! | `content_policy` | no | only if configured | no |
//! | `overloaded` | yes | always | yes |
//! | `server_error` | yes | always | yes |
//! | `timeout` | yes | always | yes |
//! | `transport` | yes | always | yes |
//! | `stream_interrupted` | no | never | yes |
//!
//! `transport`, `timeout` (client side) and `stream_interrupted` are assigned by the code that
//! observes the failure; [`classify`] handles what a provider *said*: an HTTP error response or
//! an in-band error event inside a 200 stream. Providers disagree on where the truth lives (an
//! OpenAI 429 is either a rate limit or an empty wallet; Anthropic reports an empty wallet as a
//! 400), so `classify` reads structured fields first and message text only as a last resort,
//! in this order (the first matching rule wins):
//!
//! | # | signal | class |
//! |---|---|---|
//! | 1 | type or code `insufficient_quota`, code `credit_balance_exhausted`, type `billing_error`, status 402 | `quota_exhausted` |
//! | 2 | status 429 and message starts with "Request too large" (one request above the TPM limit) | `quota_exhausted` |
//! | 3 | code `context_length_exceeded` (*) | `context_length` |
//! | 4 | code `content_policy_violation`, `invalid_prompt` or `content_filter` (†) | `content_policy` |
//! | 5 | type `rate_limit_error`, code `rate_limit_exceeded`, Azure code `"429"` | `rate_limited` |
//! | 6 | type `overloaded_error` | `overloaded` |
//! | 7 | type `authentication_error` / `permission_error`, code `invalid_api_key` | `auth` |
//! | 8 | type `timeout_error` | `timeout` |
//! | 9 | message contains "credit balance is too low" (status not 5xx) | `quota_exhausted` |
//! | 10 | message contains "maximum context length", "prompt is too long", "input tokens exceed the configured limit", "exceeds the maximum number of tokens allowed", "input length and \`max_tokens\` exceed context limit", "context_length_exceeded" or "context window" (*) | `context_length` |
//! | 11 | message contains "content management policy", "content filtering policy", "safety system", "responsibleaipolicyviolation" or "content_policy_violation" (†) | `content_policy` |
//! | 12 | status 429 | `rate_limited` |
//! | 13 | status 401, 403 | `auth` |
//! | 14 | status 408, 504 | `timeout` |
//! | 15 | status 503, 529 | `overloaded` |
//! | 16 | status 409, 500, 502, any other 5xx | `server_error` |
//! | 17 | any other 4xx (400, 404, 405, 413, 415, 422, ...) | `bad_request` |
//! | 18 | no error status: type `invalid_request_error`, `not_found_error`, `request_too_large` | `bad_request` |
//! | 19 | no error status: type `api_error`, `server_error` | `server_error` |
//! | 20 | no error status, nothing recognised | `server_error` |
//!
//! (*) only when the status is 400, 413 or absent, or the type is `invalid_request_error`; never
//! for a 429 or a 5xx, whose text may mention context sizes without the request being too big.
//! (†) only when the status is absent or a 4xx other than 429.
//!
//! "No error status" means [`ErrorSignal::status`] is `None` (an in-band error event) or not a
//! 4xx/5xx (Anthropic's SDK reports in-band errors with the stream's status 200). Rules 1–11 apply
//! to in-band errors exactly as to HTTP errors, so an in-band `overloaded_error` is `overloaded`
//! and an in-band `rate_limit_error` is `rate_limited`. String comparisons ignore ASCII case.

use std::fmt;

/// What went wrong with one attempt, in the provider-neutral taxonomy.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The provider throttled us; the limit refills by itself.
    RateLimited,
    /// The account or key is out of money or quota, or one request exceeds a per-minute limit.
    QuotaExhausted,
    /// The credential was rejected or lacks permission.
    Auth,
    /// The request itself is malformed or names something that does not exist.
    BadRequest,
    /// The input (plus requested output) does not fit the model's context window.
    ContextLength,
    /// The provider's safety system refused the request.
    ContentPolicy,
    /// The provider is temporarily overloaded.
    Overloaded,
    /// The provider failed internally.
    ServerError,
    /// The provider or our own timer gave up waiting.
    Timeout,
    /// The connection failed before a response was committed (reset, refused, TLS, bad frame).
    Transport,
    /// A stream broke after its first bytes were forwarded to the caller.
    StreamInterrupted,
}

/// Whether a failure may move the call to another target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackRule {
    /// Any other target may succeed.
    Always,
    /// Another target would fail the same way (or the caller already has part of the answer).
    Never,
    /// Only a target with a larger context window can help.
    LargerWindowOnly,
    /// Only if the route explicitly allows it (another provider's safety system may differ).
    IfConfigured,
}

/// What the call does after a failure of a given class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    /// Attempt the same target again (after backoff / the server's hint).
    pub retry_same_target: bool,
    /// Whether the call may continue on another target.
    pub fallback: FallbackRule,
    /// Whether the failure counts against the target's circuit breaker.
    pub trips_breaker: bool,
}

impl ErrorClass {
    /// Every class once, in declaration order.
    pub const ALL: [ErrorClass; 11] = [
        ErrorClass::RateLimited,
        ErrorClass::QuotaExhausted,
        ErrorClass::Auth,
        ErrorClass::BadRequest,
        ErrorClass::ContextLength,
        ErrorClass::ContentPolicy,
        ErrorClass::Overloaded,
        ErrorClass::ServerError,
        ErrorClass::Timeout,
        ErrorClass::Transport,
        ErrorClass::StreamInterrupted,
    ];

    /// The architecture's disposition table; see the module docs.
    pub const fn disposition(self) -> Disposition {
        const fn d(
            retry_same_target: bool,
            fallback: FallbackRule,
            trips_breaker: bool,
        ) -> Disposition {
            Disposition {
                retry_same_target,
                fallback,
                trips_breaker,
            }
        }
        use FallbackRule::{Always, IfConfigured, LargerWindowOnly, Never};
        match self {
            // The breaker protects against a sick target; a throttled or misused target is
            // healthy, so client-side and account-side classes never trip it.
            ErrorClass::RateLimited => d(true, Always, false),
            ErrorClass::QuotaExhausted => d(false, Always, false),
            ErrorClass::Auth => d(false, Always, false),
            ErrorClass::BadRequest => d(false, Never, false),
            ErrorClass::ContextLength => d(false, LargerWindowOnly, false),
            ErrorClass::ContentPolicy => d(false, IfConfigured, false),
            ErrorClass::Overloaded => d(true, Always, true),
            ErrorClass::ServerError => d(true, Always, true),
            ErrorClass::Timeout => d(true, Always, true),
            ErrorClass::Transport => d(true, Always, true),
            // Part of the answer already reached the caller: replaying it elsewhere would
            // duplicate output, so the failure is surfaced in-band instead.
            ErrorClass::StreamInterrupted => d(false, Never, true),
        }
    }

    /// Low-cardinality label for metrics and logs; identical to the serde name.
    pub const fn metric_label(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::QuotaExhausted => "quota_exhausted",
            ErrorClass::Auth => "auth",
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::ContextLength => "context_length",
            ErrorClass::ContentPolicy => "content_policy",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::ServerError => "server_error",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Transport => "transport",
            ErrorClass::StreamInterrupted => "stream_interrupted",
        }
    }

    /// Whether the same target may be attempted again.
    pub fn retryable(self) -> bool {
        self.disposition().retry_same_target
    }

    /// Whether the failure counts against the target's circuit breaker.
    pub fn trips_breaker(self) -> bool {
        self.disposition().trips_breaker
    }

    /// One short human sentence describing the class.
    pub fn description(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => {
                "The provider rate-limited the request; it may succeed later."
            }
            ErrorClass::QuotaExhausted => {
                "The account's quota or credit is exhausted, or the request exceeds a per-minute limit."
            }
            ErrorClass::Auth => "The provider rejected the credential or its permissions.",
            ErrorClass::BadRequest => "The provider rejected the request as invalid.",
            ErrorClass::ContextLength => "The input does not fit the model's context window.",
            ErrorClass::ContentPolicy => "The provider's content policy blocked the request.",
            ErrorClass::Overloaded => "The provider is temporarily overloaded.",
            ErrorClass::ServerError => "The provider failed with an internal error.",
            ErrorClass::Timeout => "The request timed out.",
            ErrorClass::Transport => "The connection to the provider failed.",
            ErrorClass::StreamInterrupted => {
                "The response stream broke after part of it was delivered."
            }
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric_label())
    }
}

/// What a provider said about a failure, already pulled out of its error body.
///
/// For OpenAI and Azure the fields come from `{"error": {"type", "code", "message"}}`, for
/// Anthropic from `{"type": "error", "error": {"type", "message"}}` (no `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorSignal<'a> {
    /// The HTTP status, or `None` for an error event inside a successful stream.
    pub status: Option<u16>,
    /// `error.type`, if present and a string.
    pub error_type: Option<&'a str>,
    /// `error.code`, if present (Azure sends numbers as strings, e.g. `"429"`).
    pub code: Option<&'a str>,
    /// `error.message`, or `""`.
    pub message: &'a str,
}

const CONTEXT_PHRASES: &[&str] = &[
    "maximum context length",
    "prompt is too long",
    "input tokens exceed the configured limit",
    "exceeds the maximum number of tokens allowed",
    "input length and `max_tokens` exceed context limit",
    "context_length_exceeded",
    "context window",
];

const POLICY_PHRASES: &[&str] = &[
    "content management policy",
    "content filtering policy",
    "safety system",
    "responsibleaipolicyviolation",
    "content_policy_violation",
];

/// Maps what a provider said to an [`ErrorClass`]; the rules are the table in the module docs.
pub fn classify(signal: &ErrorSignal<'_>) -> ErrorClass {
    // A 2xx/3xx status on an error body is an in-band error (Anthropic's SDK reports the
    // stream's 200); treating it like `None` keeps one set of rules for both.
    let status = signal.status.filter(|s| (400..600).contains(s));
    let ty = signal.error_type.map(str::trim).filter(|t| !t.is_empty());
    let code = signal.code.map(str::trim).filter(|c| !c.is_empty());
    let type_is = |want: &str| ty.is_some_and(|t| t.eq_ignore_ascii_case(want));
    let code_is = |want: &str| code.is_some_and(|c| c.eq_ignore_ascii_case(want));
    let server_side = status.is_some_and(|s| s >= 500);
    let client_side = status.is_none_or(|s| s != 429 && s < 500);
    let context_allowed = client_side
        && (matches!(status, None | Some(400) | Some(413)) || type_is("invalid_request_error"));
    // Messages can be long; lowercase once instead of per phrase.
    let message = signal.message.to_ascii_lowercase();
    let says = |phrases: &[&str]| phrases.iter().any(|p| message.contains(p));

    // 1: the structured quota signals. OpenAI uses 429 for both throttling and an empty
    // account, so these must run before any 429 rule.
    if type_is("insufficient_quota")
        || code_is("insufficient_quota")
        || code_is("credit_balance_exhausted")
        || type_is("billing_error")
        || status == Some(402)
    {
        return ErrorClass::QuotaExhausted;
    }
    // 2: "Request too large ... on tokens per min" arrives as an ordinary rate_limit_exceeded
    // 429, but the single request is bigger than the whole per-minute budget, so waiting can
    // never make it succeed. It behaves like an exhausted quota: do not retry, fall back to a
    // deployment with larger limits.
    if status == Some(429) && message.trim_start().starts_with("request too large") {
        return ErrorClass::QuotaExhausted;
    }
    // 3, 4: codes that name the problem exactly.
    if context_allowed && code_is("context_length_exceeded") {
        return ErrorClass::ContextLength;
    }
    if client_side
        && (code_is("content_policy_violation")
            || code_is("invalid_prompt")
            || code_is("content_filter"))
    {
        return ErrorClass::ContentPolicy;
    }
    // 5-8: specific types and codes beat the status (an OpenAI invalid key is a 401 with the
    // generic type invalid_request_error, an in-band overloaded_error has no status at all).
    if type_is("rate_limit_error") || code_is("rate_limit_exceeded") || code_is("429") {
        return ErrorClass::RateLimited;
    }
    if type_is("overloaded_error") {
        return ErrorClass::Overloaded;
    }
    if type_is("authentication_error") || type_is("permission_error") || code_is("invalid_api_key")
    {
        return ErrorClass::Auth;
    }
    if type_is("timeout_error") {
        return ErrorClass::Timeout;
    }
    // 9-11: message text, for signals the providers only put in prose (Anthropic's credit
    // error and context overflow are plain 400 invalid_request_error).
    if !server_side && message.contains("credit balance is too low") {
        return ErrorClass::QuotaExhausted;
    }
    if context_allowed && says(CONTEXT_PHRASES) {
        return ErrorClass::ContextLength;
    }
    if client_side && says(POLICY_PHRASES) {
        return ErrorClass::ContentPolicy;
    }
    // 12-17: the status.
    if let Some(status) = status {
        return match status {
            429 => ErrorClass::RateLimited,
            401 | 403 => ErrorClass::Auth,
            408 | 504 => ErrorClass::Timeout,
            503 | 529 => ErrorClass::Overloaded,
            409 | 500..=599 => ErrorClass::ServerError,
            _ => ErrorClass::BadRequest,
        };
    }
    // 18-20: in-band errors with only a generic type.
    if type_is("invalid_request_error")
        || type_is("not_found_error")
        || type_is("request_too_large")
    {
        return ErrorClass::BadRequest;
    }
    // An unknown in-band error broke a stream the provider had accepted: assume the provider's
    // fault, which is retryable and counts against the breaker.
    ErrorClass::ServerError
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pulls type/code/message out of an OpenAI, Azure or Anthropic error body, the way a
    /// provider adapter does, and classifies it.
    fn classify_body(status: Option<u16>, body: &str) -> ErrorClass {
        let json: serde_json::Value = serde_json::from_str(body).expect("test body is JSON");
        let error = &json["error"];
        assert!(error.is_object(), "no error object in {body}");
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let ty = text(&error["type"]);
        let code = text(&error["code"]);
        let message = text(&error["message"]).unwrap_or_default();
        classify(&ErrorSignal {
            status,
            error_type: ty.as_deref(),
            code: code.as_deref(),
            message: &message,
        })
    }

    fn openai_body(ty: Option<&str>, code: Option<&str>, message: &str) -> String {
        serde_json::json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
            .to_string()
    }

    fn anthropic_body(ty: &str, message: &str) -> String {
        serde_json::json!({"type": "error", "error": {"type": ty, "message": message}}).to_string()
    }

    fn sig(
        status: Option<u16>,
        ty: Option<&'static str>,
        code: Option<&'static str>,
    ) -> ErrorClass {
        classify(&ErrorSignal {
            status,
            error_type: ty,
            code,
            message: "",
        })
    }

    #[test]
    fn all_lists_each_variant_once_in_order() {
        let mut seen = std::collections::BTreeSet::new();
        for class in ErrorClass::ALL {
            assert!(seen.insert(class), "{class} listed twice");
        }
        assert_eq!(seen.len(), 11);
        // Sorted by the derived Ord means declaration order.
        assert!(ErrorClass::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn dispositions_match_the_architecture_table() {
        use FallbackRule::*;
        let table = [
            ("rate_limited", true, Always, false),
            ("quota_exhausted", false, Always, false),
            ("auth", false, Always, false),
            ("bad_request", false, Never, false),
            ("context_length", false, LargerWindowOnly, false),
            ("content_policy", false, IfConfigured, false),
            ("overloaded", true, Always, true),
            ("server_error", true, Always, true),
            ("timeout", true, Always, true),
            ("transport", true, Always, true),
            ("stream_interrupted", false, Never, true),
        ];
        assert_eq!(table.len(), ErrorClass::ALL.len());
        for (class, (label, retry, fallback, breaker)) in ErrorClass::ALL.into_iter().zip(table) {
            assert_eq!(class.metric_label(), label);
            assert_eq!(class.to_string(), label);
            assert_eq!(
                class.disposition(),
                Disposition {
                    retry_same_target: retry,
                    fallback,
                    trips_breaker: breaker
                },
                "{class}"
            );
            assert_eq!(class.retryable(), retry, "{class}");
            assert_eq!(class.trips_breaker(), breaker, "{class}");
            assert!(!class.description().is_empty());
        }
    }

    #[test]
    fn serde_names_equal_metric_labels() {
        for class in ErrorClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.metric_label()));
            assert_eq!(serde_json::from_str::<ErrorClass>(&json).unwrap(), class);
        }
    }

    /// One row per line of the architecture table's "typical signal" column.
    #[test]
    fn architecture_table_signals() {
        use ErrorClass::*;
        // (status, type, code, message, expected)
        type Row = (
            Option<u16>,
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
            ErrorClass,
        );
        let rows: [Row; 22] = [
            (
                Some(429),
                Some("tokens"),
                Some("rate_limit_exceeded"),
                "",
                RateLimited,
            ),
            (Some(429), Some("rate_limit_error"), None, "", RateLimited),
            (
                Some(429),
                Some("insufficient_quota"),
                Some("insufficient_quota"),
                "",
                QuotaExhausted,
            ),
            (
                Some(400),
                Some("invalid_request_error"),
                None,
                "Your credit balance is too low to access the Anthropic API.",
                QuotaExhausted,
            ),
            (Some(401), None, None, "", Auth),
            (Some(403), None, None, "", Auth),
            (Some(400), None, None, "", BadRequest),
            (Some(404), None, None, "", BadRequest),
            (Some(422), None, None, "", BadRequest),
            (
                Some(400),
                Some("invalid_request_error"),
                Some("context_length_exceeded"),
                "",
                ContextLength,
            ),
            (
                Some(400),
                Some("invalid_request_error"),
                None,
                "prompt is too long",
                ContextLength,
            ),
            (
                Some(400),
                Some("invalid_request_error"),
                Some("content_policy_violation"),
                "",
                ContentPolicy,
            ),
            (Some(400), None, Some("content_filter"), "", ContentPolicy),
            (Some(503), None, None, "", Overloaded),
            (Some(529), Some("overloaded_error"), None, "", Overloaded),
            (
                None,
                Some("overloaded_error"),
                None,
                "Overloaded",
                Overloaded,
            ),
            (Some(500), None, None, "", ServerError),
            (Some(502), None, None, "", ServerError),
            (Some(504), None, None, "", Timeout),
            (Some(408), None, None, "", Timeout),
            (Some(409), None, None, "", ServerError),
            (None, None, None, "something odd happened", ServerError),
        ];
        for (status, error_type, code, message, want) in rows {
            let signal = ErrorSignal {
                status,
                error_type,
                code,
                message,
            };
            assert_eq!(classify(&signal), want, "{signal:?}");
        }
    }

    #[test]
    fn status_only_rules() {
        use ErrorClass::*;
        let cases = [
            (400, BadRequest),
            (401, Auth),
            (402, QuotaExhausted),
            (403, Auth),
            (404, BadRequest),
            (405, BadRequest),
            (408, Timeout),
            (409, ServerError),
            (410, BadRequest),
            (413, BadRequest),
            (415, BadRequest),
            (422, BadRequest),
            (429, RateLimited),
            (500, ServerError),
            (501, ServerError),
            (502, ServerError),
            (503, Overloaded),
            (504, Timeout),
            (520, ServerError),
            (529, Overloaded),
            (599, ServerError),
        ];
        for (status, want) in cases {
            assert_eq!(sig(Some(status), None, None), want, "{status}");
        }
    }

    #[test]
    fn in_band_errors_use_the_type_rules() {
        use ErrorClass::*;
        let cases = [
            ("overloaded_error", Overloaded),
            ("rate_limit_error", RateLimited),
            ("api_error", ServerError),
            ("server_error", ServerError),
            ("timeout_error", Timeout),
            ("authentication_error", Auth),
            ("permission_error", Auth),
            ("billing_error", QuotaExhausted),
            ("invalid_request_error", BadRequest),
            ("not_found_error", BadRequest),
            ("request_too_large", BadRequest),
            ("something_new_error", ServerError),
        ];
        for (ty, want) in cases {
            assert_eq!(sig(None, Some(ty), None), want, "{ty}");
            // Anthropic's SDK reports the stream's own status 200 for in-band errors.
            assert_eq!(sig(Some(200), Some(ty), None), want, "200 {ty}");
        }
        assert_eq!(sig(None, None, None), ServerError);
    }

    #[test]
    fn structured_fields_are_case_insensitive_and_trimmed() {
        assert_eq!(
            sig(Some(429), Some("Insufficient_Quota"), None),
            ErrorClass::QuotaExhausted
        );
        assert_eq!(
            sig(None, Some(" overloaded_error "), None),
            ErrorClass::Overloaded
        );
        assert_eq!(sig(Some(500), Some(""), Some("")), ErrorClass::ServerError);
    }

    #[test]
    fn context_phrases_never_turn_a_429_or_5xx_into_context_length() {
        let msg = "This model's maximum context length is 128000 tokens.";
        for status in [429, 500, 503] {
            let got = classify(&ErrorSignal {
                status: Some(status),
                error_type: Some("invalid_request_error"),
                code: Some("context_length_exceeded"),
                message: msg,
            });
            assert_ne!(got, ErrorClass::ContextLength, "{status}");
        }
        // Other 4xx only with the invalid_request_error type.
        let plain = ErrorSignal {
            status: Some(422),
            error_type: None,
            code: None,
            message: msg,
        };
        assert_eq!(classify(&plain), ErrorClass::BadRequest);
        let typed = ErrorSignal {
            error_type: Some("invalid_request_error"),
            ..plain
        };
        assert_eq!(classify(&typed), ErrorClass::ContextLength);
        let in_band = ErrorSignal {
            status: None,
            ..plain
        };
        assert_eq!(classify(&in_band), ErrorClass::ContextLength);
    }

    #[test]
    fn every_context_phrase_is_recognised() {
        for phrase in CONTEXT_PHRASES {
            let message = format!("Error: {} (details)", phrase.to_uppercase());
            let signal = ErrorSignal {
                status: Some(400),
                error_type: None,
                code: None,
                message: &message,
            };
            assert_eq!(classify(&signal), ErrorClass::ContextLength, "{phrase}");
        }
        for phrase in POLICY_PHRASES {
            let message = format!("Rejected by the {phrase}.");
            let signal = ErrorSignal {
                status: Some(400),
                error_type: None,
                code: None,
                message: &message,
            };
            assert_eq!(classify(&signal), ErrorClass::ContentPolicy, "{phrase}");
        }
    }

    // ---- reference §1.4: OpenAI error bodies -------------------------------------------------

    #[test]
    fn openai_rate_limit_tpm() {
        let body = openai_body(
            Some("tokens"),
            Some("rate_limit_exceeded"),
            "Rate limit reached for gpt-4o in organization org-XXX on tokens per min (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms. Visit https://platform.openai.com/account/rate-limits to learn more.",
        );
        assert_eq!(classify_body(Some(429), &body), ErrorClass::RateLimited);
    }

    #[test]
    fn openai_rate_limit_rpm() {
        let body = openai_body(
            Some("requests"),
            Some("rate_limit_exceeded"),
            "Rate limit reached for ... on requests per min (RPM): ...",
        );
        assert_eq!(classify_body(Some(429), &body), ErrorClass::RateLimited);
    }

    #[test]
    fn openai_request_too_large_for_tpm_is_quota() {
        let body = openai_body(
            Some("tokens"),
            Some("rate_limit_exceeded"),
            "Request too large for gpt-4o in organization org-XXX on tokens per min (TPM): Limit 30000, Requested 31538. The input or output tokens must be reduced in order to run successfully. ...",
        );
        let class = classify_body(Some(429), &body);
        assert_eq!(class, ErrorClass::QuotaExhausted);
        assert!(!class.retryable());
    }

    #[test]
    fn openai_insufficient_quota_all_code_variants() {
        let message = "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.";
        for code in [
            Some("insufficient_quota"),
            None,
            Some("credit_balance_exhausted"),
        ] {
            let body = openai_body(Some("insufficient_quota"), code, message);
            assert_eq!(
                classify_body(Some(429), &body),
                ErrorClass::QuotaExhausted,
                "{code:?}"
            );
        }
        // The 2026 code alone is enough.
        let body = openai_body(None, Some("credit_balance_exhausted"), message);
        assert_eq!(classify_body(Some(429), &body), ErrorClass::QuotaExhausted);
    }

    #[test]
    fn openai_context_length_exceeded() {
        let messages = [
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 204308 tokens. Please reduce the length of the messages.",
            "This model's maximum context length is 128000 tokens. However, you requested 4268 tokens (4012 in the messages, 256 in the completion). Please reduce the length of the messages or completion.",
        ];
        for message in messages {
            let body = serde_json::json!({"error": {"message": message,
                "type": "invalid_request_error", "param": "messages",
                "code": "context_length_exceeded"}})
            .to_string();
            assert_eq!(classify_body(Some(400), &body), ErrorClass::ContextLength);
            // Even without the code, the message alone is enough.
            let body = openai_body(Some("invalid_request_error"), None, message);
            assert_eq!(classify_body(Some(400), &body), ErrorClass::ContextLength);
        }
    }

    #[test]
    fn openai_context_length_newer_models() {
        let body = openai_body(
            Some("invalid_request_error"),
            None,
            "Input tokens exceed the configured limit of 272000 tokens. Your messages resulted in 300000 tokens. Please reduce the length of the messages.",
        );
        assert_eq!(classify_body(Some(400), &body), ErrorClass::ContextLength);
    }

    #[test]
    fn openai_content_policy_violation() {
        let body = openai_body(
            Some("invalid_request_error"),
            Some("content_policy_violation"),
            "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
        );
        assert_eq!(classify_body(Some(400), &body), ErrorClass::ContentPolicy);
    }

    #[test]
    fn openai_invalid_prompt_safety_block() {
        let body = openai_body(
            Some("invalid_request_error"),
            Some("invalid_prompt"),
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt: ...",
        );
        assert_eq!(classify_body(Some(400), &body), ErrorClass::ContentPolicy);
    }

    #[test]
    fn openai_invalid_api_key() {
        let body = openai_body(
            Some("invalid_request_error"),
            Some("invalid_api_key"),
            "Incorrect API key provided: sk-VKMIs***...wjh3. You can find your API key at https://platform.openai.com/account/api-keys.",
        );
        assert_eq!(classify_body(Some(401), &body), ErrorClass::Auth);
    }

    #[test]
    fn openai_model_not_found() {
        let body = openai_body(
            Some("invalid_request_error"),
            Some("model_not_found"),
            "The model 'xyz' does not exist or you do not have access to it.",
        );
        assert_eq!(classify_body(Some(404), &body), ErrorClass::BadRequest);
    }

    #[test]
    fn openai_server_error() {
        let body = openai_body(
            Some("server_error"),
            None,
            "The server had an error processing your request. Sorry about that! You can retry your request, or contact us through our help center at help.openai.com if you keep seeing this error. (Please include the request ID req_... in your email.)",
        );
        assert_eq!(classify_body(Some(500), &body), ErrorClass::ServerError);
    }

    #[test]
    fn openai_overloaded_503() {
        let body = openai_body(
            Some("server_error"),
            None,
            "That model is currently overloaded with other requests. You can retry your request, or contact us through our help center at help.openai.com if the error persists.",
        );
        assert_eq!(classify_body(Some(503), &body), ErrorClass::Overloaded);
    }

    #[test]
    fn openai_mid_stream_error_event() {
        // reference §1.3: a data event with a top-level error key inside a 200 stream
        let body = r#"{"error":{"message":"...","type":"server_error","param":null,"code":null}}"#;
        assert_eq!(classify_body(None, body), ErrorClass::ServerError);
    }

    // ---- reference §2.3/§2.4: Anthropic error bodies ----------------------------------------

    #[test]
    fn anthropic_prompt_too_long_verbatim() {
        let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"},"request_id":"req_011CVQe1dLrGNMJyE1ghG1av"}"#;
        assert_eq!(classify_body(Some(400), body), ErrorClass::ContextLength);
        let body = anthropic_body(
            "invalid_request_error",
            "prompt is too long: 200251 tokens > 200000 maximum",
        );
        assert_eq!(classify_body(Some(400), &body), ErrorClass::ContextLength);
    }

    #[test]
    fn anthropic_input_plus_max_tokens_exceeds_context() {
        let body = anthropic_body(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 149674 + 64000 > 204658, decrease input length or `max_tokens` and try again",
        );
        assert_eq!(classify_body(Some(400), &body), ErrorClass::ContextLength);
    }

    #[test]
    fn anthropic_rate_limit_messages() {
        let messages = [
            "This request would exceed the rate limit for your organization (3f1a2b3c-0000-4000-8000-000000000000) of 40,000 input tokens per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. ...",
            "Rate limited",
            "This request would exceed your account's rate limit. Please try again later.",
        ];
        for message in messages {
            let body = anthropic_body("rate_limit_error", message);
            assert_eq!(
                classify_body(Some(429), &body),
                ErrorClass::RateLimited,
                "{message}"
            );
            assert_eq!(
                classify_body(None, &body),
                ErrorClass::RateLimited,
                "{message}"
            );
        }
    }

    #[test]
    fn anthropic_credit_balance_too_low_is_quota_despite_400() {
        let body = anthropic_body(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        );
        assert_eq!(classify_body(Some(400), &body), ErrorClass::QuotaExhausted);
    }

    #[test]
    fn anthropic_authentication_error() {
        let body = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        assert_eq!(classify_body(Some(401), body), ErrorClass::Auth);
    }

    #[test]
    fn anthropic_overloaded_529_and_internal_500() {
        let body = anthropic_body("overloaded_error", "Overloaded");
        assert_eq!(classify_body(Some(529), &body), ErrorClass::Overloaded);
        let body = anthropic_body("api_error", "Internal server error");
        assert_eq!(classify_body(Some(500), &body), ErrorClass::ServerError);
    }

    #[test]
    fn anthropic_mid_stream_overloaded_event() {
        // reference §2.3, the data line of `event: error`
        let body =
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert_eq!(classify_body(None, body), ErrorClass::Overloaded);
        assert_eq!(classify_body(Some(200), body), ErrorClass::Overloaded);
    }

    #[test]
    fn anthropic_content_filtering_via_vertex() {
        let body = anthropic_body(
            "invalid_request_error",
            "Output blocked by content filtering policy",
        );
        assert_eq!(classify_body(Some(400), &body), ErrorClass::ContentPolicy);
    }

    #[test]
    fn anthropic_error_type_table() {
        use ErrorClass::*;
        let rows = [
            (400, "invalid_request_error", BadRequest),
            (401, "authentication_error", Auth),
            (402, "billing_error", QuotaExhausted),
            (403, "permission_error", Auth),
            (404, "not_found_error", BadRequest),
            (413, "request_too_large", BadRequest),
            (429, "rate_limit_error", RateLimited),
            (500, "api_error", ServerError),
            (504, "timeout_error", Timeout),
            (529, "overloaded_error", Overloaded),
        ];
        for (status, ty, want) in rows {
            let body = anthropic_body(ty, "details");
            assert_eq!(classify_body(Some(status), &body), want, "{status} {ty}");
        }
        // 409 has no documented type; the status decides.
        assert_eq!(sig(Some(409), None, None), ServerError);
    }

    // ---- reference §5.1: Azure OpenAI ---------------------------------------------------------

    #[test]
    fn azure_prompt_content_filter_verbatim() {
        let body = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
 "type":null,"param":"prompt","code":"content_filter","status":400,
 "innererror":{"code":"ResponsibleAIPolicyViolation",
   "content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},
     "self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},
     "violence":{"filtered":true,"severity":"medium"}}}}}"#;
        assert_eq!(classify_body(Some(400), body), ErrorClass::ContentPolicy);
        // The message alone identifies it too, should an adapter lose the code.
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let message = json["error"]["message"].as_str().unwrap();
        let signal = ErrorSignal {
            status: Some(400),
            error_type: None,
            code: None,
            message,
        };
        assert_eq!(classify(&signal), ErrorClass::ContentPolicy);
    }

    #[test]
    fn azure_429_with_string_code() {
        let body = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-08-01-preview have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 86400 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#;
        assert_eq!(classify_body(Some(429), body), ErrorClass::RateLimited);
        // Azure's code alone decides even when the status is lost (in-band).
        assert_eq!(classify_body(None, body), ErrorClass::RateLimited);
    }

    #[test]
    fn gemini_context_overflow_message() {
        let body = r#"{"error":{"code":400,"message":"The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(classify_body(Some(400), body), ErrorClass::ContextLength);
    }
}
