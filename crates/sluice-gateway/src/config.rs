//! Gateway configuration: a TOML file read in two stages.
//!
//! # Why two stages
//!
//! Following ripgrep's `LowArgs` / `HiArgs` split, reading the file and deciding what it means
//! are separate steps with separate types:
//!
//! 1. **Raw** (`raw.rs`): serde structs that mirror the file exactly, with
//!    `#[serde(deny_unknown_fields)]` on every table so a misspelt key (`max_retires`) is an
//!    error instead of a silently ignored line. Durations, sizes, addresses and names are kept
//!    as the strings the user wrote, each wrapped in [`serde_spanned::Spanned`] so it remembers
//!    where in the file it came from. This stage only fails on what serde itself rejects: TOML
//!    syntax, unknown keys and wrong value types (a number where a string belongs). Those stop
//!    the parse, so they are reported one at a time.
//! 2. **Validated** (`resolve.rs`): [`Config`] and friends, the only types the rest of the
//!    gateway sees. Every value is parsed and checked, references are resolved (each target of a
//!    model names a real provider), `[[models]]` overrides are merged over `[policy]`, and the
//!    policy is built through the constructors that guard it ([`sluice_core::Backoff::try_new`],
//!    [`RetryPolicy::validate`], [`MockConfig::validate`]), so the process never runs with a
//!    policy those constructors would refuse. This stage does not stop at the first problem: it
//!    collects every one, each with its TOML key path (`models[1].targets[0]`) and the line and
//!    column of that key, so one run of `sluice check` lists everything to fix.
//!
//! Keeping the stages apart keeps each simple: the raw types carry no logic and can be checked
//! against the file format at a glance; the validated types carry no `Option`s for "the user
//! did not say" and no strings to re-parse, so code that uses them cannot forget a default or a
//! check.
//!
//! # Keys
//!
//! `examples/sluice.toml` is the complete, commented example; `examples/minimal.toml` the
//! smallest useful file. Defaults live in one place each and are linked, not restated, here
//! (a unit test checks that the `[policy]`, `[server]`, `[breaker]`, `[budget]` and
//! `[rate_limit]` values in `examples/sluice.toml` equal them). Durations are strings in humantime syntax (`"250ms"`, `"10s"`, `"10m"`, `"1h 30m"`);
//! sizes are strings like `"32MiB"` or `"512KiB"`.
//!
//! | key | type | default |
//! |---|---|---|
//! | `server.listen` | socket address `"ip:port"` | [`ServerConfig::DEFAULT_LISTEN`] |
//! | `server.api_keys_env` | env var name; the variable holds comma-separated client keys. It must be set and non-empty when the file is loaded (fail closed) | none: no client auth |
//! | `server.max_body` | size | [`ServerConfig::DEFAULT_MAX_BODY`] |
//! | `server.header_read_timeout` | duration: a client must send its request head within it | [`ServerConfig::DEFAULT_HEADER_READ_TIMEOUT`] |
//! | `server.body_read_timeout` | duration: a client must send its request body within it | [`ServerConfig::DEFAULT_BODY_READ_TIMEOUT`] |
//! | `server.drain_timeout` | duration: on SIGTERM, how long in-flight streams may finish | [`ServerConfig::DEFAULT_DRAIN_TIMEOUT`] |
//! | `server.metrics` | bool: collect metrics and serve `/metrics`, `/status` and `/status.json` | `true` |
//! | `server.admin_listen` | socket address, not `server.listen`: serve `/metrics`, `/status` and `/status.json` there (without client auth) instead of on the main listener | none: the main listener |
//! | `policy.max_retries` | integer | [`RetryPolicy::DEFAULT_MAX_RETRIES`] |
//! | `policy.base_delay` | duration | [`sluice_core::Backoff::DEFAULT_BASE`] |
//! | `policy.max_delay` | duration, not less than `base_delay` | [`sluice_core::Backoff::DEFAULT_MAX`] |
//! | `policy.max_retry_after` | duration | [`RetryPolicy::DEFAULT_MAX_RETRY_AFTER`] |
//! | `policy.deadline` | duration | [`RetryPolicy::DEFAULT_DEADLINE`] |
//! | `policy.connect_timeout` | duration | [`RetryPolicy::DEFAULT_CONNECT_TIMEOUT`] |
//! | `policy.first_token_timeout` | duration | [`RetryPolicy::DEFAULT_FIRST_TOKEN_TIMEOUT`] |
//! | `policy.idle_timeout` | duration | [`RetryPolicy::DEFAULT_IDLE_TIMEOUT`] |
//! | `policy.on_context_overflow` | `"error"`, `"truncate"` or `"fallback"`: what to do with a prompt over a target's budget ([`sluice_core::OnOverflow`]) | [`sluice_core::OnOverflow::default`] |
//! | `policy.context_buffer` | integer >= 0: tokens kept free besides the output | [`ContextPolicy::DEFAULT_BUFFER`] |
//! | `policy.default_output_tokens` | integer >= 1: output reserved when a request sets no `max_tokens` | [`ContextPolicy::DEFAULT_OUTPUT`] |
//! | `policy.default_context_window` | integer greater than `default_output_tokens + context_buffer`: the window assumed for models the registry does not know | none: unknown models are not checked before sending |
//! | `rate_limit.backend` | `"local"` (buckets in this process) or `"redis"` (shared by every replica) | `"local"` ([`RateLimitBackend::default`]) |
//! | `rate_limit.redis_url` | `redis://` or `rediss://` URL; required with `backend = "redis"`, not allowed otherwise | — |
//! | `rate_limit.key_prefix` | non-empty, no whitespace: prefix of the keys in Redis | [`RateLimitConfig::DEFAULT_KEY_PREFIX`] |
//! | `rate_limit.max_queue_wait` | duration (`"0s"`: never wait): longest a request waits in a limiter queue | [`RateLimitConfig::DEFAULT_MAX_QUEUE_WAIT`] |
//! | `rate_limit.expected_replicas` | integer >= 1: with Redis down and `on_redis_down = "local"`, each replica runs at `limit / expected_replicas` | [`RateLimitConfig::DEFAULT_EXPECTED_REPLICAS`] |
//! | `rate_limit.on_redis_down` | `"local"` (fall back to local buckets) or `"closed"` (refuse limited requests) | `"local"` ([`OnRedisDown::default`]) |
//! | `rate_limit.expected_output_tokens` | integer >= 1: output tokens reserved when a request sets no `max_tokens` (an estimate for the token bucket) | [`RateLimitConfig::DEFAULT_EXPECTED_OUTPUT_TOKENS`] |
//! | `rate_limit.per_client_key` | bool: also limit each client key on its own, with the same limits | [`RateLimitConfig::DEFAULT_PER_CLIENT_KEY`] |
//! | `rate_limit.learn_from_headers` | bool: let providers' rate-limit headers tighten the buckets | [`RateLimitConfig::DEFAULT_LEARN_FROM_HEADERS`] |
//! | `breaker.failure_rate` | number greater than 0 and at most 1: the failure rate over `window` that opens a target's circuit | [`BreakerConfig::DEFAULT_FAILURE_RATE`] |
//! | `breaker.min_requests` | integer >= 1: calls in `window` before `failure_rate` is judged | [`BreakerConfig::DEFAULT_MIN_REQUESTS`] |
//! | `breaker.window` | positive duration: the rolling window calls are counted over | [`BreakerConfig::DEFAULT_WINDOW`] |
//! | `breaker.consecutive_failures` | integer >= 1: failures in a row that open the circuit whatever the rate | [`BreakerConfig::DEFAULT_CONSECUTIVE_FAILURES`] |
//! | `breaker.cooldown` | positive duration: how long an open circuit refuses calls before probing | [`BreakerConfig::DEFAULT_COOLDOWN`] |
//! | `breaker.half_open_probes` | integer >= 1: trial calls let through after the cooldown | [`BreakerConfig::DEFAULT_HALF_OPEN_PROBES`] |
//! | `budget.ratio` | number >= 0: retries may add at most this fraction of first attempts in `window` | [`BudgetConfig::DEFAULT_RATIO`] |
//! | `budget.min_per_sec` | number >= 0: retries per second always allowed | [`BudgetConfig::DEFAULT_MIN_PER_SEC`] |
//! | `budget.window` | positive duration: the rolling window requests and retries are counted over | [`BudgetConfig::DEFAULT_WINDOW`] |
//! | `providers[].name` | required; unique; `[a-zA-Z0-9_.-]+` | — |
//! | `providers[].kind` | required; `"openai"`, `"anthropic"` or `"mock"` | — |
//! | `providers[].base_url` | `http(s)://` URL without credentials, query or fragment; required for `openai`, optional for `anthropic`, not allowed for `mock` | `anthropic`: [`ANTHROPIC_BASE_URL`] |
//! | `providers[].api_key_env` | env var name holding the provider key; an unset variable is a warning, not an error | none |
//! | `providers[].headers` | table of extra headers sent upstream; not `Authorization` / `x-api-key` (use `api_key_env`) | none |
//! | `providers[].mock` | table, only for `kind = "mock"`: any field of [`MockConfig`] (`chunks`, `ttft`, `chunk_gap`, `context_limit`, `seed`, `p_429`, `p_quota`, `p_500`, `p_502`, `p_503`, `p_504`, `p_529`, `p_reset`, `p_cut`, `p_stall`, `p_inband`, `retry_after`, `model_name`) | [`MockConfig::default`] |
//! | `providers[].breaker` | table (inline `breaker = { cooldown = "5s" }` or `[providers.breaker]`) of any `[breaker]` key, overriding it for this provider's targets only | the `[breaker]` value |
//! | `providers[].budget` | table of any `[budget]` key, overriding it for this provider's targets only | the `[budget]` value |
//! | `providers[].rpm`, `providers[].tpm` | number > 0: requests / tokens per minute | none: unlimited |
//! | `providers[].rpm_burst`, `providers[].tpm_burst` | number > 0: bucket capacity; only with `rpm` / `tpm` | one minute's worth (`rpm` / `tpm`) |
//! | `providers[].limit_scope` | `"model"` (one bucket pair per `"provider/model"` target) or `"provider"` (one pair for the whole provider) | `"model"` ([`LimitScope::default`]) |
//! | `providers[].model_limits` | table of model name → table of any of `rpm`, `tpm`, `rpm_burst`, `tpm_burst`, merged over the provider's keys for that model's target; only with `limit_scope = "model"` | none |
//! | `providers[].context_windows` | table of model name → context window in tokens (a positive integer), e.g. `{ "gpt-4o" = 128000 }`; for a target `"{provider}/{model}"` it overrides the built-in model registry ([`sluice_core::model_info`]) | none: the registry |
//! | `models[].name` | required; non-empty; unique; the model name clients send | — |
//! | `models[].targets` | required; non-empty list of `"provider/model"`, in fallback order; the provider must be defined | — |
//! | `models[].fallback_on_content_policy` | bool: fall back to the next target after a content-policy refusal | `false` |
//! | `models[].context_window` | integer greater than the model's `default_output_tokens + context_buffer`: the window of every target of this entry, overriding the registry and `providers[].context_windows` | none: the registry |
//! | `models[].max_output` | integer >= 1, not above `context_window`: the largest output of every target of this entry, overriding the registry | none: the registry |
//! | `models[].<policy key>` | any `[policy]` key (including the context keys), overriding it for this model only | the `[policy]` value |
//!
//! # Rate limits
//!
//! A provider's `rpm` / `tpm` (and bursts) make one bucket pair per target, or one for the
//! whole provider with `limit_scope = "provider"`. A `model_limits` entry sets only the keys
//! it names; the others keep the provider's value:
//!
//! ```toml
//! [[providers]]
//! name = "openai"
//! kind = "openai"
//! base_url = "https://api.openai.com/v1"
//! rpm = 500
//! tpm = 200000
//! model_limits = { "gpt-4o" = { tpm = 30000 } }   # rpm stays 500
//! ```
//!
//! Every limit must be finite and positive, a burst needs its rate, and a bucket must be able
//! to hold one request: the request capacity (`rpm_burst`, else `rpm`) at least 1 and the
//! token capacity (`tpm_burst`, else `tpm`) at least `rate_limit.expected_output_tokens`.
//! That last check is the config's reading of "a target's tpm not below its max_tokens": it
//! compares with `expected_output_tokens` only, not with a model's `max_output` from the
//! registry or `[[models]]`, since requests usually ask for far less than that maximum (a
//! request whose own `max_tokens` exceeds the bucket is refused when it arrives).
//!
//! # Breaker and budget overrides
//!
//! `[breaker]` and `[budget]` hold the settings of every target (one circuit breaker and one
//! retry budget per `"provider/model"`). A provider's `breaker` / `budget` table sets only the
//! keys it names; the others keep the top-level value:
//!
//! ```toml
//! [breaker]
//! cooldown = "30s"
//!
//! [[providers]]
//! name = "flaky"
//! kind = "openai"
//! base_url = "https://llm.example.com/v1"
//! breaker = { consecutive_failures = 3 }   # cooldown stays "30s"
//! budget = { ratio = 0.1 }
//! ```
//!
//! [`ProviderConfig::breaker`] is then `Some` of the merged settings, and `None` for a
//! provider without its own table ([`Config::breaker_for`] picks the one that applies).
//! Each merged result passes [`BreakerConfig::validate`] / [`BudgetConfig::validate`]; a
//! problem is reported at the key at fault (`providers[1].budget.ratio`), or at the provider's
//! table when the key at fault is inherited.
//!
//! # Secrets
//!
//! The file never holds a secret, only the *names* of environment variables that do. Loading
//! checks that `server.api_keys_env` names a non-empty variable (it looks at the value only to
//! see whether it is empty, and neither keeps nor shows it); [`Config::warnings`] reports provider
//! key variables that are not set, by name. Errors never echo a `base_url` (it could carry
//! credentials) or a header value, and the `Debug` output of [`ProviderConfig`] redacts header
//! values. The one exception is `rate_limit.redis_url`, which may carry a Redis password
//! (`redis://:password@host`): errors never echo it, and the `Debug` output of
//! [`RateLimitBackend`] redacts its `user:password@` and query.

mod raw;
mod resolve;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_core::{BreakerConfig, BudgetConfig, ContextPolicy, RetryPolicy};
use sluice_mock::MockConfig;

/// Default `base_url` of a `kind = "anthropic"` provider; paths such as `/v1/messages` are
/// appended to it.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The validated gateway configuration, read with [`Config::from_path`].
///
/// Every key with its type and default is listed in the docs of the `config` module
/// (`src/config.rs`) and, commented, in `examples/sluice.toml`.
///
/// `Default` is an empty configuration: default server, policy, breaker, budget, context
/// policy and rate-limit settings, no providers, no models.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// The `[policy]` table: the retry policy of every model that does not override it.
    pub policy: RetryPolicy,
    /// The `[breaker]` table: the circuit breaker settings of every target whose provider does
    /// not override them (see [`ProviderConfig::breaker`]).
    pub breaker: BreakerConfig,
    /// The `[budget]` table: the retry budget settings of every target whose provider does not
    /// override them (see [`ProviderConfig::budget`]).
    pub budget: BudgetConfig,
    /// The context guard settings of `[policy]` (`on_context_overflow`, `context_buffer`,
    /// `default_output_tokens`, `default_context_window`): those of every model that does not
    /// override them (see [`ModelConfig::context`]).
    pub context: ContextPolicy,
    /// The `[rate_limit]` table: where rate-limit buckets live and how requests wait for them.
    /// The limits themselves are per provider ([`ProviderConfig::limits`]).
    pub rate_limit: RateLimitConfig,
    /// Upstream providers, in file order; names are unique.
    pub providers: Vec<ProviderConfig>,
    /// Model names clients may send, in file order; names are unique.
    pub models: Vec<ModelConfig>,
    /// The file the configuration was read from, if any.
    pub source: Option<PathBuf>,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Name of the environment variable holding the comma-separated client API keys; `None`
    /// means no client authentication.
    pub api_keys_env: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// A client must finish sending its request head within this time.
    pub header_read_timeout: Duration,
    /// A client must finish sending its request body within this time.
    pub body_read_timeout: Duration,
    /// On shutdown, how long in-flight requests and streams may run before they are cut.
    pub drain_timeout: Duration,
    /// Whether metrics are collected and `/metrics`, `/status` and `/status.json` served.
    pub metrics: bool,
    /// A separate address for `/metrics`, `/status` and `/status.json`; `None` serves them on
    /// `listen`.
    pub admin_listen: Option<SocketAddr>,
}

impl ServerConfig {
    /// Default `listen`: loopback only, so an unconfigured gateway is not reachable from the
    /// network.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    /// Default `max_body` (32 MiB): room for long prompts and base64 images.
    pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;
    /// Default `header_read_timeout`.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `body_read_timeout`.
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `drain_timeout`.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Self::DEFAULT_LISTEN,
            api_keys_env: None,
            max_body: Self::DEFAULT_MAX_BODY,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            metrics: true,
            admin_listen: None,
        }
    }
}

/// One `[[providers]]` entry.
#[derive(Clone, PartialEq)]
pub struct ProviderConfig {
    /// Unique name, used in targets (`"{name}/{model}"`).
    pub name: String,
    /// What the provider is and how to reach it.
    pub kind: ProviderKind,
    /// Name of the environment variable holding the provider's API key, if any.
    pub api_key_env: Option<String>,
    /// Extra headers sent upstream with every request, as written (names and values are valid
    /// HTTP; never `Authorization` or `x-api-key`).
    pub headers: Vec<(String, String)>,
    /// This provider's `breaker` table merged over `[breaker]`: `Some` only when the provider
    /// has one; `None` means [`Config::breaker`] applies.
    pub breaker: Option<BreakerConfig>,
    /// This provider's `budget` table merged over `[budget]`: `Some` only when the provider
    /// has one; `None` means [`Config::budget`] applies.
    pub budget: Option<BudgetConfig>,
    /// Context windows in tokens by model name (the model part of a `"{name}/{model}"`
    /// target), sorted by name; each overrides what the built-in model registry
    /// ([`sluice_core::model_info`]) says for that model on this provider. Every window is
    /// positive.
    pub context_windows: Vec<(String, u32)>,
    /// The provider's own `rpm`, `tpm`, `rpm_burst` and `tpm_burst`; all `None` (the default)
    /// means unlimited.
    pub limits: LimitsConfig,
    /// Whether [`ProviderConfig::limits`] apply to each `"provider/model"` target separately
    /// (the default) or once to the whole provider.
    pub limit_scope: LimitScope,
    /// Per-model limits by model name (the model part of a target), sorted by name, each
    /// already merged key by key over [`ProviderConfig::limits`]. Only with
    /// [`LimitScope::Model`].
    pub model_limits: Vec<(String, LimitsConfig)>,
}

impl ProviderConfig {
    /// A `kind = "openai"` provider at `base_url`: no key variable, no extra headers, no
    /// breaker or budget overrides, no context windows.
    pub fn openai(name: &str, base_url: &str) -> Self {
        Self::with_kind(
            name,
            ProviderKind::OpenAi {
                base_url: base_url.to_owned(),
            },
        )
    }

    /// A `kind = "anthropic"` provider at `base_url` (usually [`ANTHROPIC_BASE_URL`]), with
    /// nothing else set, as [`ProviderConfig::openai`].
    pub fn anthropic(name: &str, base_url: &str) -> Self {
        Self::with_kind(
            name,
            ProviderKind::Anthropic {
                base_url: base_url.to_owned(),
            },
        )
    }

    /// An in-process mock provider running `mock`, with nothing else set, as
    /// [`ProviderConfig::openai`].
    pub fn mock(name: &str, mock: MockConfig) -> Self {
        Self::with_kind(name, ProviderKind::Mock(Box::new(mock)))
    }

    fn with_kind(name: &str, kind: ProviderKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            api_key_env: None,
            headers: Vec::new(),
            breaker: None,
            budget: None,
            context_windows: Vec::new(),
            limits: LimitsConfig::default(),
            limit_scope: LimitScope::default(),
            model_limits: Vec::new(),
        }
    }

    /// The context window this provider's `context_windows` sets for `model`, if any.
    pub fn context_window(&self, model: &str) -> Option<u32> {
        self.context_windows
            .iter()
            .find(|(name, _)| name == model)
            .map(|(_, window)| *window)
    }

    /// The limits of this provider's target for `model`: its `model_limits` entry (already
    /// merged over the provider's), else [`ProviderConfig::limits`]. With
    /// [`LimitScope::Provider`] this is always [`ProviderConfig::limits`], shared by every
    /// model.
    pub fn limits_for(&self, model: &str) -> LimitsConfig {
        self.model_limits
            .iter()
            .find(|(name, _)| name == model)
            .map_or(self.limits, |(_, limits)| *limits)
    }
}

/// Header values are redacted: they are not meant to be secret, but nothing stops a user from
/// putting a token in one, and configs end up in logs.
impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("api_key_env", &self.api_key_env)
            .field("headers", &headers)
            .field("breaker", &self.breaker)
            .field("budget", &self.budget)
            .field("context_windows", &self.context_windows)
            .field("limits", &self.limits)
            .field("limit_scope", &self.limit_scope)
            .field("model_limits", &self.model_limits)
            .finish()
    }
}

/// The kind of a provider, with what only that kind needs.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    /// An OpenAI Chat Completions compatible server.
    OpenAi {
        /// Base URL, e.g. `https://api.openai.com/v1`; paths such as `/chat/completions` are
        /// appended to it.
        base_url: String,
    },
    /// An Anthropic Messages API server.
    Anthropic {
        /// Base URL, [`ANTHROPIC_BASE_URL`] unless the file sets one; paths such as
        /// `/v1/messages` are appended to it.
        base_url: String,
    },
    /// The in-process fault-injecting mock provider.
    Mock(Box<MockConfig>),
}

/// One `[[models]]` entry: a model name clients send and the chain of targets serving it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The model name clients send.
    pub name: String,
    /// Targets in fallback order; never empty; each names a configured provider.
    pub targets: Vec<TargetRef>,
    /// `[policy]` with this entry's overrides applied.
    pub policy: RetryPolicy,
    /// Whether a content-policy refusal falls back to the next target.
    pub fallback_on_content_policy: bool,
    /// [`Config::context`] with this entry's overrides of the `[policy]` context keys applied.
    pub context: ContextPolicy,
    /// Context window in tokens for every target of this entry, overriding the built-in model
    /// registry ([`sluice_core::model_info`]) and the providers' `context_windows`; positive,
    /// and larger than `context.default_output + context.buffer`.
    pub context_window: Option<u32>,
    /// Largest output in tokens for every target of this entry, overriding the registry;
    /// positive, and not above `context_window` when both are set.
    pub max_output: Option<u32>,
}

/// A `"provider/model"` target. The provider part never contains `/`; the model part may
/// (`"openrouter/meta-llama/llama-3-70b"` is provider `openrouter`, model `meta-llama/llama-3-70b`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetRef {
    /// A configured provider's name.
    pub provider: String,
    /// The model name sent to that provider.
    pub model: String,
}

impl ModelConfig {
    /// A model named `name` served by `targets` (each `"provider/model"`, in fallback order)
    /// with `policy`, not falling back on content-policy refusals, with the default
    /// [`ContextPolicy`] and no context window or output overrides.
    ///
    /// # Panics
    ///
    /// If a target has no `/`, or nothing before or after it. (Files are checked by
    /// [`Config::from_path`], which reports such targets instead.)
    pub fn new(name: &str, targets: &[&str], policy: RetryPolicy) -> Self {
        let targets = targets
            .iter()
            .map(|target| match target.split_once('/') {
                Some((provider, model)) if !provider.is_empty() && !model.is_empty() => TargetRef {
                    provider: provider.to_owned(),
                    model: model.to_owned(),
                },
                _ => panic!("ModelConfig::new: target {target:?} is not \"provider/model\""),
            })
            .collect();
        Self {
            name: name.to_owned(),
            targets,
            policy,
            fallback_on_content_policy: false,
            context: ContextPolicy::default(),
            context_window: None,
            max_output: None,
        }
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// The `[rate_limit]` table: where the buckets of the providers' limits live and how a request
/// waits for them.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Where buckets live.
    pub backend: RateLimitBackend,
    /// Prefix of every bucket key in a shared store (`backend = "redis"`).
    pub key_prefix: String,
    /// Longest a request waits in a limiter queue before it is refused (zero: never waits).
    pub max_queue_wait: Duration,
    /// Gateway replicas sharing the limits; at least 1. While a shared store is unreachable
    /// and [`OnRedisDown::Local`] applies, each replica limits itself to
    /// `limit / expected_replicas`.
    pub expected_replicas: u32,
    /// What to do while the shared store is unreachable.
    pub on_redis_down: OnRedisDown,
    /// Output tokens reserved from the token bucket when a request sets no `max_tokens` (an
    /// estimate, corrected when the answer reports its usage); at least 1.
    pub expected_output_tokens: u32,
    /// Whether each client key is also limited on its own, with the same `rpm`/`tpm` as the
    /// target it calls.
    pub per_client_key: bool,
    /// Whether providers' `x-ratelimit-*` / `anthropic-ratelimit-*` headers tighten the buckets.
    pub learn_from_headers: bool,
}

impl RateLimitConfig {
    /// Default `key_prefix`.
    pub const DEFAULT_KEY_PREFIX: &'static str = "sluice:rl";
    /// Default `max_queue_wait` (the library's).
    pub const DEFAULT_MAX_QUEUE_WAIT: Duration = sluice::LimiterConfig::DEFAULT_MAX_QUEUE_WAIT;
    /// Default `expected_replicas`.
    pub const DEFAULT_EXPECTED_REPLICAS: u32 = 1;
    /// Default `expected_output_tokens` (the library's).
    pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u32 =
        sluice::ClientBuilder::DEFAULT_EXPECTED_OUTPUT_TOKENS;
    /// Default `per_client_key`.
    pub const DEFAULT_PER_CLIENT_KEY: bool = false;
    /// Default `learn_from_headers` (the library's).
    pub const DEFAULT_LEARN_FROM_HEADERS: bool = sluice::LimiterConfig::DEFAULT_LEARN_FROM_HEADERS;
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            backend: RateLimitBackend::default(),
            key_prefix: Self::DEFAULT_KEY_PREFIX.to_owned(),
            max_queue_wait: Self::DEFAULT_MAX_QUEUE_WAIT,
            expected_replicas: Self::DEFAULT_EXPECTED_REPLICAS,
            on_redis_down: OnRedisDown::default(),
            expected_output_tokens: Self::DEFAULT_EXPECTED_OUTPUT_TOKENS,
            per_client_key: Self::DEFAULT_PER_CLIENT_KEY,
            learn_from_headers: Self::DEFAULT_LEARN_FROM_HEADERS,
        }
    }
}

/// Where rate-limit buckets live (`rate_limit.backend`).
///
/// `Debug` redacts the credentials (`user:password@`) and the query of a Redis URL.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum RateLimitBackend {
    /// In this process: each replica has its own buckets.
    #[default]
    Local,
    /// In a Redis server shared by every replica.
    Redis {
        /// A `redis://` or `rediss://` URL, as written (it may hold a password: never log it;
        /// use [`RateLimitBackend::redacted_url`]).
        url: String,
    },
}

impl RateLimitBackend {
    /// The Redis URL with its credentials and query replaced by `<redacted>`, for logs and
    /// status pages; `None` for [`RateLimitBackend::Local`].
    pub fn redacted_url(&self) -> Option<String> {
        match self {
            Self::Local => None,
            Self::Redis { url } => Some(redact_url(url)),
        }
    }
}

impl fmt::Debug for RateLimitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("Local"),
            Self::Redis { url } => f
                .debug_struct("Redis")
                .field("url", &redact_url(url))
                .finish(),
        }
    }
}

/// `url` with any `user:password@` and `?query` replaced by `<redacted>` (a password may be in
/// either). Works on the text, so it redacts even a URL that does not parse.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("<redacted>@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => format!("{}?<redacted>", &tail[..q]),
        None => tail.to_owned(),
    };
    format!("{scheme}{host}{tail}")
}

/// What the gateway does while the shared rate-limit store is unreachable
/// (`rate_limit.on_redis_down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisDown {
    /// Fall back to local buckets at `limit / expected_replicas` (fail open, but bounded).
    #[default]
    Local,
    /// Refuse requests to limited targets until the store is back (fail closed).
    Closed,
}

/// How many bucket pairs a provider's limits make (`providers[].limit_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitScope {
    /// One pair (requests, tokens) per `"provider/model"` target.
    #[default]
    Model,
    /// One pair for the whole provider, shared by all its models.
    Provider,
}

/// Requests-per-minute and tokens-per-minute limits, with optional burst capacities. `None`
/// means unlimited on that axis; every value set is finite and positive, a burst is only set
/// with its rate, the request capacity is at least 1 and the token capacity at least
/// [`RateLimitConfig::expected_output_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LimitsConfig {
    /// Requests per minute.
    pub rpm: Option<f64>,
    /// Tokens (prompt plus output) per minute.
    pub tpm: Option<f64>,
    /// Request bucket capacity; `None`: `rpm` (one minute's worth).
    pub rpm_burst: Option<f64>,
    /// Token bucket capacity; `None`: `tpm`.
    pub tpm_burst: Option<f64>,
}

impl LimitsConfig {
    /// Whether neither requests nor tokens are limited.
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    /// The same limits as the limiter takes them.
    pub fn to_limits(&self) -> sluice::Limits {
        sluice::Limits {
            rpm: self.rpm,
            tpm: self.tpm,
            burst_requests: self.rpm_burst,
            burst_tokens: self.tpm_burst,
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn from_path(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            problems: vec![ConfigProblem {
                path: String::new(),
                line: None,
                column: None,
                message: format!("cannot read the configuration file: {e}"),
            }],
        })?;
        Self::from_toml_str(&text, Some(path))
    }

    /// Parses and validates `text`, looking environment variables up in the process
    /// environment. `source` is recorded in [`Config::source`] and in errors.
    pub fn from_toml_str(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_toml_str_with_env(text, source, &process_env)
    }

    /// Like [`Config::from_toml_str`], with environment lookups answered by `env` (tests, and
    /// `sluice check` against another environment). `env` returns the variable's value, or
    /// `None` when it is not set; the value is only tested for emptiness.
    pub fn from_toml_str_with_env(
        text: &str,
        source: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: source.map(Path::to_path_buf),
            problems,
        };
        let raw = raw::parse(text).map_err(|problem| fail(vec![problem]))?;
        let mut config = resolve::resolve(raw, text, env).map_err(fail)?;
        config.source = source.map(Path::to_path_buf);
        Ok(config)
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The circuit breaker settings for `provider`'s targets: its own, or `[breaker]`.
    pub fn breaker_for<'a>(&'a self, provider: &'a ProviderConfig) -> &'a BreakerConfig {
        provider.breaker.as_ref().unwrap_or(&self.breaker)
    }

    /// The retry budget settings for `provider`'s targets: its own, or `[budget]`.
    pub fn budget_for<'a>(&'a self, provider: &'a ProviderConfig) -> &'a BudgetConfig {
        provider.budget.as_ref().unwrap_or(&self.budget)
    }

    /// The `[[models]]` entry named `name`.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Non-fatal findings, checked against the process environment now: provider key
    /// variables (`api_key_env`) that are not set or empty. Names variables, never values.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings_with_env(&process_env)
    }

    /// Like [`Config::warnings`], with environment lookups answered by `env`.
    pub fn warnings_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, provider) in self.providers.iter().enumerate() {
            let Some(var) = &provider.api_key_env else {
                continue;
            };
            let state = match env(var) {
                None => "is not set",
                Some(value) if value.trim().is_empty() => "is empty",
                Some(_) => continue,
            };
            warnings.push(format!(
                "providers[{i}].api_key_env: variable {var} {state}; provider \"{}\" will be called without an API key",
                provider.name
            ));
        }
        warnings
    }
}

/// The process environment as an env lookup. Only names validated by stage 2 reach it (no `=`
/// or NUL, not empty), so `var_os` cannot panic.
fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Everything wrong with a configuration file.
///
/// `Display` prints one problem per line, as `{file}:{line}:{column}: {path}: {message}`
/// (`<config>` when there is no file; line and column, and the path, are left out when
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problems are in, if the configuration came from a file.
    pub file: Option<PathBuf>,
    /// Every problem found, in file order; never empty.
    pub problems: Vec<ConfigProblem>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// TOML key path, e.g. `models[1].targets[0]`, `policy.max_delay`, `server.listen`; empty
    /// for problems with the file as a whole (unreadable, TOML syntax).
    pub path: String,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending key or value, when known.
    pub column: Option<usize>,
    /// What is wrong, and where it helps, what was expected.
    pub message: String,
}

impl ConfigProblem {
    /// Writes the problem prefixed with `file` (or `<config>`).
    fn write_in(&self, file: Option<&Path>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match file {
            Some(file) => write!(f, "{}", file.display())?,
            None => f.write_str("<config>")?,
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_in(None, f)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            problem.write_in(self.file.as_deref(), f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Maps byte offsets in the TOML text to 1-based line and column (in characters).
#[derive(Debug, Clone, Copy)]
struct Positions<'a> {
    text: &'a str,
}

impl<'a> Positions<'a> {
    fn new(text: &'a str) -> Self {
        Self { text }
    }

    /// 1-based `(line, column)` of byte `offset` (clamped to the text; a column inside a
    /// multi-byte character counts that character).
    fn at(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// A problem at the start of `span` (position unknown when `span` is `None`).
    fn problem(
        &self,
        path: impl Into<String>,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigProblem {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = self.at(span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigProblem {
            path: path.into(),
            line,
            column,
            message: message.into(),
        }
    }
}
