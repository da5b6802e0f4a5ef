//! Stage 1: the file exactly as written.
//!
//! Every table denies unknown keys. Values whose meaning stage 2 decides (durations, sizes,
//! addresses, names, URLs) stay strings, and every value keeps its span, so stage 2 can report
//! all of its problems with the line they are on instead of serde stopping at the first.
//! Required keys are `Option`s here for the same reason: a missing `name` is a stage 2 problem
//! reported alongside the others, not a parse failure that hides them.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ConfigProblem, Positions};

/// What a duration must look like; in both the parse-stage and the validation-stage message.
pub(super) const DURATION_EXPECTED: &str = r#"a duration like "1s" or "250ms""#;
/// What a size must look like.
pub(super) const SIZE_EXPECTED: &str = r#"a size like "32MiB" or "512KiB""#;

/// A value that must be a string, kept unparsed; `EXPECTED` is what the error says it should
/// look like when it is not a string at all.
pub(super) trait Expected {
    const EXPECTED: &'static str;
}

/// A humantime duration string, parsed in stage 2.
#[derive(Debug, Clone)]
pub(super) struct RawDuration(pub(super) String);

impl Expected for RawDuration {
    const EXPECTED: &'static str = DURATION_EXPECTED;
}

/// A byte size string (`"32MiB"`), parsed in stage 2.
#[derive(Debug, Clone)]
pub(super) struct RawSize(pub(super) String);

impl Expected for RawSize {
    const EXPECTED: &'static str = SIZE_EXPECTED;
}

/// `rate_limit.redis_url`, checked in stage 2. It may hold a password, so `Debug` does not
/// show it.
pub(super) struct RawSecretUrl(pub(super) String);

impl Expected for RawSecretUrl {
    const EXPECTED: &'static str = r#"a URL like "redis://127.0.0.1:6379""#;
}

impl fmt::Debug for RawSecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSecretUrl(<redacted>)")
    }
}

impl From<String> for RawSecretUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl<'de> Deserialize<'de> for RawSecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StringOnly(std::marker::PhantomData))
    }
}

impl From<String> for RawDuration {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<String> for RawSize {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Accepts only a string, so `deadline = 600` fails with "expected a duration like ..."
/// rather than guessing a unit.
struct StringOnly<T>(std::marker::PhantomData<T>);

impl<T: Expected + From<String>> Visitor<'_> for StringOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::from(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StringOnly(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StringOnly(std::marker::PhantomData))
    }
}

/// An optional key with its span.
pub(super) type Opt<T> = Option<Spanned<T>>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: Opt<RawServer>,
    pub(super) policy: Opt<RawPolicy>,
    pub(super) breaker: Opt<RawBreaker>,
    pub(super) budget: Opt<RawBudget>,
    pub(super) rate_limit: Opt<RawRateLimit>,
    #[serde(default)]
    pub(super) providers: Vec<Spanned<RawProvider>>,
    #[serde(default)]
    pub(super) models: Vec<Spanned<RawModel>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Opt<String>,
    pub(super) api_keys_env: Opt<String>,
    pub(super) max_body: Opt<RawSize>,
    pub(super) header_read_timeout: Opt<RawDuration>,
    pub(super) body_read_timeout: Opt<RawDuration>,
    pub(super) drain_timeout: Opt<RawDuration>,
    pub(super) metrics: Opt<bool>,
    pub(super) admin_listen: Opt<String>,
}

/// Declares the policy keys once, for both `[policy]` and `[[models]]` (serde's `flatten`
/// cannot be combined with `deny_unknown_fields`, and would lose the spans).
macro_rules! policy_keys {
    ($($key:ident: $ty:ty),* $(,)?) => {
        /// `[policy]`, and the overrides of one `[[models]]` entry.
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawPolicy {
            $(pub(super) $key: Opt<$ty>,)*
        }

        impl RawPolicy {
            /// The span of `key` if this table sets it.
            pub(super) fn span_of(&self, key: &str) -> Option<Range<usize>> {
                match key {
                    $(stringify!($key) => self.$key.as_ref().map(Spanned::span),)*
                    _ => None,
                }
            }
        }

        /// One `[[models]]` entry.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawModel {
            pub(super) name: Opt<String>,
            pub(super) targets: Opt<Vec<Spanned<String>>>,
            pub(super) fallback_on_content_policy: Opt<bool>,
            /// Signed, like `context_windows`, so zero and negative values are stage 2
            /// problems at their key.
            pub(super) context_window: Opt<i64>,
            pub(super) max_output: Opt<i64>,
            $(pub(super) $key: Opt<$ty>,)*
        }

        impl RawModel {
            /// This entry's `[policy]` overrides.
            pub(super) fn overrides(&self) -> RawPolicy {
                RawPolicy {
                    $($key: self.$key.clone(),)*
                }
            }
        }
    };
}

policy_keys! {
    max_retries: u32,
    base_delay: RawDuration,
    max_delay: RawDuration,
    max_retry_after: RawDuration,
    deadline: RawDuration,
    connect_timeout: RawDuration,
    first_token_timeout: RawDuration,
    idle_timeout: RawDuration,
    on_context_overflow: String,
    context_buffer: i64,
    default_output_tokens: i64,
    default_context_window: i64,
}

/// One `[[providers]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) name: Opt<String>,
    pub(super) kind: Opt<String>,
    pub(super) base_url: Opt<String>,
    pub(super) api_key_env: Opt<String>,
    pub(super) headers: Opt<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub(super) mock: Opt<RawMock>,
    pub(super) breaker: Opt<RawBreaker>,
    pub(super) budget: Opt<RawBudget>,
    /// Signed so that a zero or negative window is a stage 2 problem at its key, reported
    /// with the others.
    pub(super) context_windows: Opt<BTreeMap<Spanned<String>, Spanned<i64>>>,
    pub(super) rpm: Opt<f64>,
    pub(super) tpm: Opt<f64>,
    pub(super) rpm_burst: Opt<f64>,
    pub(super) tpm_burst: Opt<f64>,
    pub(super) limit_scope: Opt<String>,
    pub(super) model_limits: Opt<BTreeMap<Spanned<String>, Spanned<RawLimits>>>,
}

impl RawProvider {
    /// The provider's own limit keys, as a `model_limits` entry would hold them.
    pub(super) fn limits(&self) -> RawLimits {
        RawLimits {
            rpm: self.rpm.clone(),
            tpm: self.tpm.clone(),
            rpm_burst: self.rpm_burst.clone(),
            tpm_burst: self.tpm_burst.clone(),
        }
    }
}

/// Declares a table whose keys are all optional, with its key → span lookup.
macro_rules! optional_keys {
    ($(#[$doc:meta])* $name:ident { $($key:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $(pub(super) $key: Opt<$ty>,)*
        }

        impl $name {
            /// The span of `key` if this table sets it.
            pub(super) fn span_of(&self, key: &str) -> Option<Range<usize>> {
                match key {
                    $(stringify!($key) => self.$key.as_ref().map(Spanned::span),)*
                    _ => None,
                }
            }
        }
    };
}

optional_keys! {
    /// `[breaker]`, and a provider's `breaker` overrides: fields of `sluice_core::BreakerConfig`.
    RawBreaker {
        failure_rate: f64,
        min_requests: u32,
        window: RawDuration,
        consecutive_failures: u32,
        cooldown: RawDuration,
        half_open_probes: u32,
    }
}

optional_keys! {
    /// `[budget]`, and a provider's `budget` overrides: fields of `sluice_core::BudgetConfig`.
    RawBudget {
        ratio: f64,
        min_per_sec: f64,
        window: RawDuration,
    }
}

/// `[rate_limit]`. Counts are signed so zero and negative values are stage 2 problems at their
/// key, reported with the others.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) backend: Opt<String>,
    pub(super) redis_url: Opt<RawSecretUrl>,
    pub(super) key_prefix: Opt<String>,
    pub(super) max_queue_wait: Opt<RawDuration>,
    pub(super) expected_replicas: Opt<i64>,
    pub(super) on_redis_down: Opt<String>,
    pub(super) expected_output_tokens: Opt<i64>,
    pub(super) per_client_key: Opt<bool>,
    pub(super) learn_from_headers: Opt<bool>,
}

optional_keys! {
    /// A provider's rate limits (its own `rpm`, `tpm`, `rpm_burst`, `tpm_burst` keys, or one
    /// `model_limits` entry). Numbers are floats; an integer is accepted as one.
    RawLimits {
        rpm: f64,
        tpm: f64,
        rpm_burst: f64,
        tpm_burst: f64,
    }
}

optional_keys! {
    /// `[providers.mock]`: every field of `sluice_mock::MockConfig`, each optional.
    RawMock {
    chunks: usize,
    ttft: RawDuration,
    chunk_gap: RawDuration,
    context_limit: usize,
    seed: u64,
    p_429: f64,
    p_quota: f64,
    p_500: f64,
    p_502: f64,
    p_503: f64,
    p_504: f64,
    p_529: f64,
    p_reset: f64,
    p_cut: f64,
    p_stall: f64,
    p_inband: f64,
    retry_after: RawDuration,
    model_name: String,
    }
}

/// Stage 1: deserializes `text`, or returns the one problem that stopped serde, with the key
/// path found from the error's position.
pub(super) fn parse(text: &str) -> Result<RawConfig, ConfigProblem> {
    toml::from_str(text).map_err(|e| {
        let positions = Positions::new(text);
        let span = e.span();
        match DeTable::parse(text) {
            // The document is valid TOML, so serde rejected a key or a value's type.
            Ok(doc) => {
                let path = span
                    .as_ref()
                    .and_then(|span| path_at(doc.as_ref(), span.start))
                    .unwrap_or_default();
                positions.problem(path, span, e.message())
            }
            Err(_) => positions.problem("", span, format!("invalid TOML: {}", e.message())),
        }
    })
}

/// The key path (`providers[1].mock.p_429`) of the innermost key or value whose span holds
/// `offset`. Table headers (`[server]`, `[[models]]`) count as the table's span.
fn path_at(table: &DeTable<'_>, offset: usize) -> Option<String> {
    table
        .iter()
        .find_map(|(key, value)| find_in(key, value, offset, String::new()))
}

fn find_in(
    key: &Spanned<toml::de::DeString<'_>>,
    value: &Spanned<DeValue<'_>>,
    offset: usize,
    parent: String,
) -> Option<String> {
    let path = join_key(&parent, key.get_ref());
    if key.span().contains(&offset) {
        return Some(path);
    }
    find_in_value(value, offset, path)
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: String) -> Option<String> {
    // Children first: a table's span may be just its header, and an inline table's span
    // encloses its children, so the innermost match is the one wanted.
    let inner = match value.get_ref() {
        DeValue::Table(table) => table
            .iter()
            .find_map(|(key, child)| find_in(key, child, offset, path.clone())),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_in_value(item, offset, format!("{path}[{i}]"))),
        _ => None,
    };
    inner.or_else(|| value.span().contains(&offset).then_some(path))
}

/// `parent.key`, quoting `key` when it is not a bare TOML key.
pub(super) fn join_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}
