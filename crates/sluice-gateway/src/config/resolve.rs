//! Stage 2: from the raw file to a validated [`Config`], collecting every problem.
//!
//! Each check reports into one list and carries on with a stand-in value (the inherited or
//! default one), so a bad `[policy]` value does not hide a bad target three tables later. The
//! stand-ins never escape: any problem means no `Config`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use serde_spanned::Spanned;
use sluice_core::{
    Backoff, BreakerConfig, BudgetConfig, ContextPolicy, OnOverflow, PolicyError, RetryPolicy,
};
use sluice_mock::MockConfig;

use super::raw::{
    DURATION_EXPECTED, Opt, RawBreaker, RawBudget, RawConfig, RawDuration, RawLimits, RawMock,
    RawModel, RawPolicy, RawProvider, RawRateLimit, RawServer, RawSize, SIZE_EXPECTED, join_key,
};
use super::{
    ANTHROPIC_BASE_URL, Config, ConfigProblem, LimitScope, LimitsConfig, ModelConfig, OnRedisDown,
    Positions, ProviderConfig, ProviderKind, RateLimitBackend, RateLimitConfig, ServerConfig,
    TargetRef,
};

/// Durations above this are refused: no timeout needs to be longer, and deadlines computed as
/// `now + duration` must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Header names that carry credentials; those belong in `api_key_env`.
const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "x-api-key"];

/// An example `rate_limit.redis_url`, shown when it is missing or wrong.
const REDIS_URL_EXAMPLE: &str = "redis://127.0.0.1:6379";

/// A value whose problem has already been reported.
struct Reported;

/// Where a table sits in the file, and where the keys it does not set come from; for
/// reporting what a settings type's `validate` refuses.
struct Table<'a> {
    /// Key path of the table, e.g. `breaker` or `providers[1].budget`.
    path: &'a str,
    /// Span of the table (its header, or the whole inline table).
    span: Range<usize>,
    /// Where unset keys come from, e.g. "the default" or "inherited from [breaker]".
    inherited: &'a str,
}

/// Collects problems while stage 2 walks the raw config.
struct Checker<'a> {
    positions: Positions<'a>,
    problems: Vec<ConfigProblem>,
}

/// Stage 2: validates `raw` (parsed from `text`), resolving environment variables with `env`.
pub(super) fn resolve(
    raw: RawConfig,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigProblem>> {
    let mut checker = Checker {
        positions: Positions::new(text),
        problems: Vec::new(),
    };
    let server = match &raw.server {
        Some(server) => checker.server(server.get_ref(), env),
        None => ServerConfig::default(),
    };
    let defaults = RetryPolicy::default();
    let policy = match &raw.policy {
        Some(policy) => checker.policy(
            &defaults,
            policy.get_ref(),
            "policy",
            policy.span(),
            "the default",
        ),
        None => defaults,
    };
    let context = match &raw.policy {
        Some(policy) => checker.context(
            &ContextPolicy::default(),
            policy.get_ref(),
            "policy",
            policy.span(),
            "the default",
        ),
        None => ContextPolicy::default(),
    };
    let breaker = match &raw.breaker {
        Some(table) => checker.breaker(
            &BreakerConfig::default(),
            table.get_ref(),
            &Table {
                path: "breaker",
                span: table.span(),
                inherited: "the default",
            },
        ),
        None => BreakerConfig::default(),
    };
    let budget = match &raw.budget {
        Some(table) => checker.budget(
            &BudgetConfig::default(),
            table.get_ref(),
            &Table {
                path: "budget",
                span: table.span(),
                inherited: "the default",
            },
        ),
        None => BudgetConfig::default(),
    };
    let rate_limit = match &raw.rate_limit {
        Some(table) => checker.rate_limit(table),
        None => RateLimitConfig::default(),
    };
    let providers = checker.providers(
        &raw.providers,
        &breaker,
        &budget,
        rate_limit.expected_output_tokens,
    );
    let provider_names: Vec<&str> = raw
        .providers
        .iter()
        .filter_map(|p| p.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    let models = checker.models(&raw.models, &policy, &context, &provider_names);

    let mut problems = checker.problems;
    if problems.is_empty() {
        Ok(Config {
            server,
            policy,
            breaker,
            budget,
            context,
            rate_limit,
            providers,
            models,
            source: None,
        })
    } else {
        problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
        Err(problems)
    }
}

impl Checker<'_> {
    fn report(
        &mut self,
        path: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        let problem = self.positions.problem(path, span, message);
        self.problems.push(problem);
    }

    /// Parses an optional duration; `Ok(None)` when the key is absent.
    fn duration(
        &mut self,
        path: &str,
        value: &Opt<RawDuration>,
    ) -> Result<Option<Duration>, Reported> {
        let Some(value) = value else {
            return Ok(None);
        };
        let text = &value.get_ref().0;
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d > MAX_DURATION => {
                self.report(
                    path,
                    Some(value.span()),
                    format!(
                        "{text:?} is too long: durations are limited to {}",
                        humantime::format_duration(MAX_DURATION)
                    ),
                );
                Err(Reported)
            }
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                self.report(
                    path,
                    Some(value.span()),
                    format!("expected {DURATION_EXPECTED}, got {text:?} ({e})"),
                );
                Err(Reported)
            }
        }
    }

    /// Parses an optional duration that must not be zero.
    fn positive_duration(
        &mut self,
        path: &str,
        value: &Opt<RawDuration>,
    ) -> Result<Option<Duration>, Reported> {
        match self.duration(path, value)? {
            Some(d) if d.is_zero() => {
                self.report(
                    path,
                    value.as_ref().map(Spanned::span),
                    "must be greater than zero",
                );
                Err(Reported)
            }
            other => Ok(other),
        }
    }

    /// Checks an optional count: an integer from `min` to `u32::MAX`.
    fn count(&mut self, path: &str, value: &Opt<i64>, min: u32) -> Result<Option<u32>, Reported> {
        let Some(value) = value else {
            return Ok(None);
        };
        let n = *value.get_ref();
        let message = if n < i64::from(min) {
            if min == 0 {
                format!("must not be negative, got {n}")
            } else {
                format!("must be at least {min}, got {n}")
            }
        } else {
            match u32::try_from(n) {
                Ok(n) => return Ok(Some(n)),
                Err(_) => format!("{n} is too large: at most {}", u32::MAX),
            }
        };
        self.report(path, Some(value.span()), message);
        Err(Reported)
    }

    /// Checks that `value` names an environment variable. The value is not echoed when it is
    /// not a name: a common slip is pasting the key itself here.
    fn env_name(&mut self, path: &str, value: &Spanned<String>) -> Option<String> {
        let name = value.get_ref();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Some(name.clone())
        } else {
            self.report(
                path,
                Some(value.span()),
                "expected the name of an environment variable, like \"OPENAI_API_KEY\" \
                 (letters, digits and '_'; the value is not shown in case it is a secret)",
            );
            None
        }
    }

    fn server(&mut self, raw: &RawServer, env: &dyn Fn(&str) -> Option<String>) -> ServerConfig {
        let mut server = ServerConfig::default();
        if let Some(listen) = &raw.listen {
            if let Some(addr) = self.socket_addr("server.listen", listen) {
                server.listen = addr;
            }
        }
        if let Some(metrics) = &raw.metrics {
            server.metrics = *metrics.get_ref();
        }
        if let Some(admin) = &raw.admin_listen {
            if let Some(addr) = self.socket_addr("server.admin_listen", admin) {
                if addr == server.listen {
                    self.report(
                        "server.admin_listen",
                        Some(admin.span()),
                        "must differ from server.listen (leave it out to serve /metrics and /status on the main listener)",
                    );
                } else {
                    server.admin_listen = Some(addr);
                }
            }
        }
        if let Some(var) = &raw.api_keys_env {
            if let Some(name) = self.env_name("server.api_keys_env", var) {
                let state = match env(&name) {
                    None => Some("is not set"),
                    Some(keys) if keys.split(',').all(|k| k.trim().is_empty()) => {
                        Some("is empty (it must hold comma-separated client API keys)")
                    }
                    Some(_) => None,
                };
                if let Some(state) = state {
                    self.report(
                        "server.api_keys_env",
                        Some(var.span()),
                        format!("variable {name} named by server.api_keys_env {state}"),
                    );
                }
                server.api_keys_env = Some(name);
            }
        }
        if let Some(size) = &raw.max_body {
            if let Some(bytes) = self.size("server.max_body", size) {
                server.max_body = bytes;
            }
        }
        let timeouts = [
            (
                "server.header_read_timeout",
                &raw.header_read_timeout,
                &mut server.header_read_timeout,
            ),
            (
                "server.body_read_timeout",
                &raw.body_read_timeout,
                &mut server.body_read_timeout,
            ),
            (
                "server.drain_timeout",
                &raw.drain_timeout,
                &mut server.drain_timeout,
            ),
        ];
        for (path, value, field) in timeouts {
            if let Ok(Some(d)) = self.positive_duration(path, value) {
                *field = d;
            }
        }
        server
    }

    /// Parses a socket address.
    fn socket_addr(&mut self, path: &str, value: &Spanned<String>) -> Option<SocketAddr> {
        match value.get_ref().trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report(
                    path,
                    Some(value.span()),
                    format!(
                        "expected an IP address and port like \"127.0.0.1:8080\" or \"[::1]:8080\", got {:?}",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// Parses a positive byte size.
    fn size(&mut self, path: &str, value: &Spanned<RawSize>) -> Option<usize> {
        let text = &value.get_ref().0;
        let message = match text.trim().parse::<bytesize::ByteSize>() {
            Ok(size) => match usize::try_from(size.as_u64()) {
                Ok(0) => "must be greater than zero".to_owned(),
                Ok(bytes) => return Some(bytes),
                Err(_) => format!("{text:?} is too large for this platform"),
            },
            Err(e) => format!("expected {SIZE_EXPECTED}, got {text:?} ({e})"),
        };
        self.report(path, Some(value.span()), message);
        None
    }

    /// Applies the policy keys of `raw` (the table at `table`, e.g. `policy` or `models[0]`)
    /// over `base`, which is valid. Every bad key is reported and replaced by `base`'s value,
    /// so the result is always valid. `inherited` says where unset keys come from, for
    /// messages about a key this table does not set.
    fn policy(
        &mut self,
        base: &RetryPolicy,
        raw: &RawPolicy,
        table: &str,
        table_span: Range<usize>,
        inherited: &str,
    ) -> RetryPolicy {
        let path = |key: &str| format!("{table}.{key}");
        let mut policy = base.clone();
        if let Some(n) = &raw.max_retries {
            policy.max_retries = *n.get_ref();
        }

        let base_delay = self.duration(&path("base_delay"), &raw.base_delay);
        let max_delay = self.duration(&path("max_delay"), &raw.max_delay);
        if let (Ok(base_delay), Ok(max_delay)) = (base_delay, max_delay) {
            if base_delay.is_some() || max_delay.is_some() {
                let base_delay = base_delay.unwrap_or(base.backoff.base());
                let max_delay = max_delay.unwrap_or(base.backoff.max());
                match Backoff::try_new(base_delay, max_delay) {
                    Ok(backoff) => policy.backoff = backoff,
                    Err(e) => self.policy_error(e, raw, table, &table_span, inherited),
                }
            }
        }

        let durations = [
            ("max_retry_after", &raw.max_retry_after),
            ("deadline", &raw.deadline),
            ("connect_timeout", &raw.connect_timeout),
            ("first_token_timeout", &raw.first_token_timeout),
            ("idle_timeout", &raw.idle_timeout),
        ];
        for (key, value) in durations {
            if let Ok(Some(d)) = self.duration(&path(key), value) {
                set_duration(&mut policy, key, d);
            }
        }

        // `validate` names one bad key at a time; report it, put the inherited value back and
        // ask again, so every bad key is reported with the policy's own rule and message.
        for _ in 0..8 {
            let Err(e) = policy.validate() else {
                break;
            };
            let PolicyError::Invalid { key, .. } = &e;
            let key = *key;
            self.policy_error(e, raw, table, &table_span, inherited);
            let Some(inherited_value) = get_duration(base, key) else {
                break;
            };
            set_duration(&mut policy, key, inherited_value);
        }
        policy
    }

    /// Reports a [`PolicyError`] at the key it names, or at the related key this table sets
    /// (`base_delay` for a `max_delay` problem and vice versa), or at the table.
    fn policy_error(
        &mut self,
        error: PolicyError,
        raw: &RawPolicy,
        table: &str,
        table_span: &Range<usize>,
        inherited: &str,
    ) {
        let PolicyError::Invalid { key, message } = error;
        let own = raw.span_of(key);
        let related = match key {
            "base_delay" => raw.span_of("max_delay"),
            "max_delay" => raw.span_of("base_delay"),
            _ => None,
        };
        let message = if own.is_some() {
            message
        } else {
            format!("{message} ({key} is {inherited})")
        };
        let span = own.or(related).unwrap_or_else(|| table_span.clone());
        self.report(format!("{table}.{key}"), Some(span), message);
    }

    /// Applies the `[breaker]` keys of `raw` over `base`, which is valid. Every bad key is
    /// reported and replaced by `base`'s value, so the result is always valid.
    fn breaker(
        &mut self,
        base: &BreakerConfig,
        raw: &RawBreaker,
        table: &Table<'_>,
    ) -> BreakerConfig {
        let path = |key: &str| format!("{}.{key}", table.path);
        let mut breaker = base.clone();
        if let Some(v) = &raw.failure_rate {
            breaker.failure_rate = *v.get_ref();
        }
        let counts = [
            (&raw.min_requests, &mut breaker.min_requests),
            (&raw.consecutive_failures, &mut breaker.consecutive_failures),
            (&raw.half_open_probes, &mut breaker.half_open_probes),
        ];
        for (value, field) in counts {
            if let Some(v) = value {
                *field = *v.get_ref();
            }
        }
        let durations = [
            ("window", &raw.window, &mut breaker.window),
            ("cooldown", &raw.cooldown, &mut breaker.cooldown),
        ];
        for (key, value, field) in durations {
            if let Ok(Some(d)) = self.duration(&path(key), value) {
                *field = d;
            }
        }
        self.settle(
            &mut breaker,
            BreakerConfig::validate,
            |breaker, key| {
                match key {
                    "failure_rate" => breaker.failure_rate = base.failure_rate,
                    "min_requests" => breaker.min_requests = base.min_requests,
                    "window" => breaker.window = base.window,
                    "consecutive_failures" => {
                        breaker.consecutive_failures = base.consecutive_failures;
                    }
                    "cooldown" => breaker.cooldown = base.cooldown,
                    "half_open_probes" => breaker.half_open_probes = base.half_open_probes,
                    _ => return false,
                }
                true
            },
            |key| raw.span_of(key),
            table,
        );
        breaker
    }

    /// Applies the `[budget]` keys of `raw` over `base`, which is valid; as
    /// [`Checker::breaker`].
    fn budget(&mut self, base: &BudgetConfig, raw: &RawBudget, table: &Table<'_>) -> BudgetConfig {
        let mut budget = base.clone();
        if let Some(v) = &raw.ratio {
            budget.ratio = *v.get_ref();
        }
        if let Some(v) = &raw.min_per_sec {
            budget.min_per_sec = *v.get_ref();
        }
        if let Ok(Some(d)) = self.duration(&format!("{}.window", table.path), &raw.window) {
            budget.window = d;
        }
        self.settle(
            &mut budget,
            BudgetConfig::validate,
            |budget, key| {
                match key {
                    "ratio" => budget.ratio = base.ratio,
                    "min_per_sec" => budget.min_per_sec = base.min_per_sec,
                    "window" => budget.window = base.window,
                    _ => return false,
                }
                true
            },
            |key| raw.span_of(key),
            table,
        );
        budget
    }

    /// Asks `validate` about `value` until it is satisfied. `validate` names one bad key at a
    /// time (as `breaker.failure_rate` or `failure_rate`); each is reported at that key of
    /// `table` with the type's own message, and `reset` puts the valid base value back
    /// (returning `false` for a key it does not know, which ends the loop).
    fn settle<T>(
        &mut self,
        value: &mut T,
        validate: impl Fn(&T) -> Result<(), PolicyError>,
        reset: impl Fn(&mut T, &str) -> bool,
        span_of: impl Fn(&str) -> Option<Range<usize>>,
        table: &Table<'_>,
    ) {
        let mut seen: Vec<&'static str> = Vec::new();
        while let Err(PolicyError::Invalid { key, message }) = validate(value) {
            let key = key.rsplit('.').next().unwrap_or(key);
            if seen.contains(&key) {
                break;
            }
            seen.push(key);
            let own = span_of(key);
            let message = if own.is_some() {
                message
            } else {
                format!("{message} ({key} is {})", table.inherited)
            };
            let span = own.unwrap_or_else(|| table.span.clone());
            self.report(format!("{}.{key}", table.path), Some(span), message);
            if !reset(value, key) {
                break;
            }
        }
    }

    /// Applies the context keys of `raw` (the table at `table`, e.g. `policy` or `models[0]`)
    /// over `base`, which is valid; as [`Checker::policy`], every bad key is reported and
    /// replaced by `base`'s value, so the result is always valid.
    fn context(
        &mut self,
        base: &ContextPolicy,
        raw: &RawPolicy,
        table: &str,
        table_span: Range<usize>,
        inherited: &str,
    ) -> ContextPolicy {
        let path = |key: &str| format!("{table}.{key}");
        let mut context = *base;
        if let Some(value) = &raw.on_context_overflow {
            match value.get_ref().as_str() {
                "error" => context.on_overflow = OnOverflow::Error,
                "truncate" => context.on_overflow = OnOverflow::Truncate,
                "fallback" => context.on_overflow = OnOverflow::Fallback,
                other => self.report(
                    path("on_context_overflow"),
                    Some(value.span()),
                    format!(
                        "unknown action {other:?}; expected \"error\", \"truncate\" or \"fallback\""
                    ),
                ),
            }
        }
        if let Ok(Some(n)) = self.count(&path("context_buffer"), &raw.context_buffer, 0) {
            context.buffer = n;
        }
        if let Ok(Some(n)) = self.count(
            &path("default_output_tokens"),
            &raw.default_output_tokens,
            1,
        ) {
            context.default_output = n;
        }
        if let Ok(Some(n)) = self.count(
            &path("default_context_window"),
            &raw.default_context_window,
            1,
        ) {
            context.default_window = Some(n);
        }
        if let Some(window) = context.default_window {
            if let Some(message) = no_room(window, &context) {
                // Only a key this table sets can break a valid base: blame the window if it is
                // set here, else the reservation that grew.
                let key = [
                    "default_context_window",
                    "default_output_tokens",
                    "context_buffer",
                ]
                .into_iter()
                .find(|key| raw.span_of(key).is_some());
                let message = format!("default_context_window = {window}: {message}");
                match key {
                    Some("default_context_window") => {
                        self.report(
                            path("default_context_window"),
                            raw.span_of("default_context_window"),
                            message,
                        );
                    }
                    Some(key) => self.report(
                        path(key),
                        raw.span_of(key),
                        format!("{message} (default_context_window is {inherited})"),
                    ),
                    None => self.report(table, Some(table_span), message),
                }
                context.default_window = base.default_window;
                context.default_output = base.default_output;
                context.buffer = base.buffer;
            }
        }
        context
    }

    /// A `[[models]]` entry's `context_window` and `max_output`, checked against each other
    /// and against the entry's `context` (already resolved).
    fn model_window(
        &mut self,
        at: &str,
        m: &RawModel,
        context: &ContextPolicy,
    ) -> Result<(Option<u32>, Option<u32>), Reported> {
        let window = self.count(&format!("{at}.context_window"), &m.context_window, 1);
        let max_output = self.count(&format!("{at}.max_output"), &m.max_output, 1);
        let (window, max_output) = (window?, max_output?);
        let mut ok = true;
        if let (Some(window), Some(max_output), Some(span)) =
            (window, max_output, m.max_output.as_ref())
        {
            if max_output > window {
                self.report(
                    format!("{at}.max_output"),
                    Some(span.span()),
                    format!("max_output ({max_output}) is above context_window ({window})"),
                );
                ok = false;
            }
        }
        if let (Some(window), Some(span)) = (window, m.context_window.as_ref()) {
            if let Some(message) = no_room(window, context) {
                self.report(
                    format!("{at}.context_window"),
                    Some(span.span()),
                    format!(
                        "context_window = {window}: {message}; lower default_output_tokens for \
                         this model"
                    ),
                );
                ok = false;
            }
        }
        if ok {
            Ok((window, max_output))
        } else {
            Err(Reported)
        }
    }

    /// The `[rate_limit]` table over [`RateLimitConfig::default`]; bad keys are reported and
    /// keep their default. Messages never echo `redis_url`.
    fn rate_limit(&mut self, table: &Spanned<RawRateLimit>) -> RateLimitConfig {
        /// What `backend` says.
        #[derive(PartialEq)]
        enum Backend {
            Local,
            Redis,
            Unknown,
        }
        let r = table.get_ref();
        let mut out = RateLimitConfig::default();
        let backend = match &r.backend {
            None => Backend::Local,
            Some(value) => match value.get_ref().as_str() {
                "local" => Backend::Local,
                "redis" => Backend::Redis,
                other => {
                    self.report(
                        "rate_limit.backend",
                        Some(value.span()),
                        format!("unknown backend {other:?}; expected \"local\" or \"redis\""),
                    );
                    Backend::Unknown
                }
            },
        };
        match (&backend, &r.redis_url) {
            (Backend::Local, Some(url)) => self.report(
                "rate_limit.redis_url",
                Some(url.span()),
                "only used with backend = \"redis\" (the backend is \"local\": each replica \
                 keeps its own buckets); set backend = \"redis\" to share the limits",
            ),
            (Backend::Redis | Backend::Unknown, Some(url)) => {
                match check_redis_url(&url.get_ref().0) {
                    Ok(()) => {
                        if backend == Backend::Redis {
                            out.backend = RateLimitBackend::Redis {
                                url: url.get_ref().0.trim().to_owned(),
                            };
                        }
                    }
                    Err(message) => {
                        self.report("rate_limit.redis_url", Some(url.span()), message);
                    }
                }
            }
            (Backend::Redis, None) => self.report(
                "rate_limit.redis_url",
                r.backend.as_ref().map(Spanned::span),
                format!(
                    "missing required key: backend = \"redis\" needs redis_url, e.g. \
                     {REDIS_URL_EXAMPLE:?}"
                ),
            ),
            (Backend::Local | Backend::Unknown, None) => {}
        }
        if let Some(prefix) = &r.key_prefix {
            let text = prefix.get_ref();
            if text.is_empty() {
                self.report(
                    "rate_limit.key_prefix",
                    Some(prefix.span()),
                    "must not be empty",
                );
            } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.report(
                    "rate_limit.key_prefix",
                    Some(prefix.span()),
                    "must not contain whitespace or control characters",
                );
            } else {
                out.key_prefix = text.clone();
            }
        }
        if let Ok(Some(d)) = self.duration("rate_limit.max_queue_wait", &r.max_queue_wait) {
            out.max_queue_wait = d;
        }
        if let Ok(Some(n)) = self.count("rate_limit.expected_replicas", &r.expected_replicas, 1) {
            out.expected_replicas = n;
        }
        if let Some(value) = &r.on_redis_down {
            match value.get_ref().as_str() {
                "local" => out.on_redis_down = OnRedisDown::Local,
                "closed" => out.on_redis_down = OnRedisDown::Closed,
                other => self.report(
                    "rate_limit.on_redis_down",
                    Some(value.span()),
                    format!("unknown value {other:?}; expected \"local\" or \"closed\""),
                ),
            }
        }
        if let Ok(Some(n)) = self.count(
            "rate_limit.expected_output_tokens",
            &r.expected_output_tokens,
            1,
        ) {
            out.expected_output_tokens = n;
        }
        if let Some(value) = &r.per_client_key {
            out.per_client_key = *value.get_ref();
        }
        if let Some(value) = &r.learn_from_headers {
            out.learn_from_headers = *value.get_ref();
        }
        out
    }

    /// Applies the limit keys of `raw` (the table at `table`: a provider, or one of its
    /// `model_limits` entries) over `base`. Each value must be finite and positive, and the
    /// merged limits usable: a burst only with its rate, a request capacity of at least 1 and
    /// a token capacity of at least `expected_output` tokens. Returns the limits (bad values
    /// left out) and, per axis (requests, tokens), whether it is valid. An axis whose
    /// `base_valid` is false is not cross-checked (its problem is reported already) and stays
    /// invalid.
    fn limits(
        &mut self,
        table: &str,
        raw: &RawLimits,
        base: LimitsConfig,
        base_valid: [bool; 2],
        expected_output: u32,
    ) -> (LimitsConfig, [bool; 2]) {
        let mut out = base;
        let mut valid = base_valid;
        let keys = [
            (0, "rpm", &raw.rpm, &mut out.rpm),
            (1, "tpm", &raw.tpm, &mut out.tpm),
            (0, "rpm_burst", &raw.rpm_burst, &mut out.rpm_burst),
            (1, "tpm_burst", &raw.tpm_burst, &mut out.tpm_burst),
        ];
        let mut checkable = base_valid;
        for (axis, key, value, field) in keys {
            let Some(value) = value else {
                continue;
            };
            let v = *value.get_ref();
            if v.is_finite() && v > 0.0 {
                *field = Some(v);
            } else {
                self.report(
                    join_key(table, key),
                    Some(value.span()),
                    format!("must be a positive number, got {v}"),
                );
                valid[axis] = false;
                checkable[axis] = false;
            }
        }
        // The base is valid on a checkable axis, so whatever is wrong there comes from a key
        // this table sets.
        let axes = [
            ("rpm", "rpm_burst", out.rpm, out.rpm_burst),
            ("tpm", "tpm_burst", out.tpm, out.tpm_burst),
        ];
        for (axis, (rate_key, burst_key, rate, burst)) in axes.into_iter().enumerate() {
            if !checkable[axis] {
                continue;
            }
            let Some(rate) = rate else {
                if burst.is_some() {
                    self.report(
                        join_key(table, burst_key),
                        raw.span_of(burst_key),
                        format!(
                            "{burst_key} needs {rate_key}: it is the capacity of a bucket that \
                             refills at {rate_key} per minute"
                        ),
                    );
                    valid[axis] = false;
                }
                continue;
            };
            let (key, capacity) = match burst {
                Some(burst) => (burst_key, burst),
                None => (rate_key, rate),
            };
            let message = if axis == 0 {
                (capacity < 1.0).then(|| {
                    format!(
                        "{key} = {capacity} makes a request bucket that can never hold one \
                         request: the request capacity ({burst_key}, else {rate_key}) must be \
                         at least 1"
                    )
                })
            } else {
                (capacity < f64::from(expected_output)).then(|| {
                    format!(
                        "{key} = {capacity} makes a token bucket that can never hold the \
                         {expected_output} output tokens reserved for a request without \
                         max_tokens (rate_limit.expected_output_tokens): the token capacity \
                         ({burst_key}, else {rate_key}) must be at least {expected_output}"
                    )
                })
            };
            if let Some(message) = message {
                self.report(join_key(table, key), raw.span_of(key), message);
                valid[axis] = false;
            }
        }
        (out, valid)
    }

    /// A provider's `model_limits`, each merged over the provider's `limits`; `base_valid`
    /// says which axes of those are valid (see [`Checker::limits`]).
    fn model_limits(
        &mut self,
        at: &str,
        p: &RawProvider,
        base: LimitsConfig,
        base_valid: [bool; 2],
        scope: Option<LimitScope>,
        expected_output: u32,
    ) -> Option<Vec<(String, LimitsConfig)>> {
        let Some(table) = &p.model_limits else {
            return Some(Vec::new());
        };
        let path = format!("{at}.model_limits");
        let mut ok = true;
        if scope == Some(LimitScope::Provider) {
            self.report(
                &path,
                Some(table.span()),
                "per-model limits need limit_scope = \"model\" (with \"provider\", every model \
                 shares the provider's buckets)",
            );
            ok = false;
        }
        let mut out = Vec::new();
        for (model, entry) in table.get_ref() {
            let entry_path = join_key(&path, model.get_ref());
            if model.get_ref().trim().is_empty() {
                self.report(
                    entry_path,
                    Some(model.span()),
                    "the model name must not be empty",
                );
                ok = false;
                continue;
            }
            let (limits, valid) = self.limits(
                &entry_path,
                entry.get_ref(),
                base,
                base_valid,
                expected_output,
            );
            if valid == [true, true] {
                out.push((model.get_ref().clone(), limits));
            } else {
                ok = false;
            }
        }
        ok.then_some(out)
    }

    fn limit_scope(&mut self, at: &str, p: &RawProvider) -> Option<LimitScope> {
        let Some(value) = &p.limit_scope else {
            return Some(LimitScope::default());
        };
        match value.get_ref().as_str() {
            "model" => Some(LimitScope::Model),
            "provider" => Some(LimitScope::Provider),
            other => {
                self.report(
                    format!("{at}.limit_scope"),
                    Some(value.span()),
                    format!("unknown scope {other:?}; expected \"model\" or \"provider\""),
                );
                None
            }
        }
    }

    fn providers(
        &mut self,
        raw: &[Spanned<RawProvider>],
        breaker: &BreakerConfig,
        budget: &BudgetConfig,
        expected_output: u32,
    ) -> Vec<ProviderConfig> {
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        let mut providers = Vec::new();
        for (i, entry) in raw.iter().enumerate() {
            let at = format!("providers[{i}]");
            let p = entry.get_ref();

            let name = match &p.name {
                None => {
                    self.report(&at, Some(entry.span()), "missing required key `name`");
                    None
                }
                Some(name) => {
                    let line = self.positions.at(name.span().start).0;
                    let text = name.get_ref().as_str();
                    if !valid_provider_name(text) {
                        self.report(
                            format!("{at}.name"),
                            Some(name.span()),
                            format!(
                                "invalid provider name {text:?}: use letters, digits, '_', '.' and '-' \
                                 ('/' separates provider and model in targets)"
                            ),
                        );
                        None
                    } else if let Some(first) = first_line.get(text) {
                        self.report(
                            format!("{at}.name"),
                            Some(name.span()),
                            format!(
                                "duplicate provider name {text:?} (first defined on line {first})"
                            ),
                        );
                        None
                    } else {
                        first_line.insert(text, line);
                        Some(text.to_owned())
                    }
                }
            };

            let kind = self.provider_kind(&at, entry);

            let api_key_env = match &p.api_key_env {
                None => Some(None),
                Some(var) => self.env_name(&format!("{at}.api_key_env"), var).map(Some),
            };

            let headers = self.headers(&at, p);

            let breaker_path = format!("{at}.breaker");
            let breaker = p.breaker.as_ref().map(|table| {
                self.breaker(
                    breaker,
                    table.get_ref(),
                    &Table {
                        path: &breaker_path,
                        span: table.span(),
                        inherited: "inherited from [breaker]",
                    },
                )
            });
            let budget_path = format!("{at}.budget");
            let budget = p.budget.as_ref().map(|table| {
                self.budget(
                    budget,
                    table.get_ref(),
                    &Table {
                        path: &budget_path,
                        span: table.span(),
                        inherited: "inherited from [budget]",
                    },
                )
            });

            let context_windows = self.context_windows(&at, p);

            let (limits, limits_valid) = self.limits(
                &at,
                &p.limits(),
                LimitsConfig::default(),
                [true, true],
                expected_output,
            );
            let limit_scope = self.limit_scope(&at, p);
            let model_limits =
                self.model_limits(&at, p, limits, limits_valid, limit_scope, expected_output);
            let limits = (limits_valid == [true, true]).then_some(limits);

            if let (
                Some(name),
                Some(kind),
                Some(api_key_env),
                Some(headers),
                Some(context_windows),
                Some(limits),
                Some(limit_scope),
                Some(model_limits),
            ) = (
                name,
                kind,
                api_key_env,
                headers,
                context_windows,
                limits,
                limit_scope,
                model_limits,
            ) {
                providers.push(ProviderConfig {
                    name,
                    kind,
                    api_key_env,
                    headers,
                    breaker,
                    budget,
                    context_windows,
                    limits,
                    limit_scope,
                    model_limits,
                });
            }
        }
        providers
    }

    fn provider_kind(&mut self, at: &str, entry: &Spanned<RawProvider>) -> Option<ProviderKind> {
        let p = entry.get_ref();
        let Some(kind) = &p.kind else {
            self.report(
                at,
                Some(entry.span()),
                "missing required key `kind` (\"openai\", \"anthropic\" or \"mock\")",
            );
            return None;
        };
        match kind.get_ref().as_str() {
            "openai" => self
                .remote_base_url(at, p, kind, "https://api.openai.com/v1", None)
                .map(|base_url| ProviderKind::OpenAi { base_url }),
            "anthropic" => self
                .remote_base_url(at, p, kind, ANTHROPIC_BASE_URL, Some(ANTHROPIC_BASE_URL))
                .map(|base_url| ProviderKind::Anthropic { base_url }),
            "mock" => {
                if let Some(url) = &p.base_url {
                    self.report(
                        format!("{at}.base_url"),
                        Some(url.span()),
                        "not allowed with kind = \"mock\" (the mock provider runs in-process)",
                    );
                }
                let mock = self.mock(at, p.mock.as_ref());
                if p.base_url.is_some() {
                    return None;
                }
                mock.map(|m| ProviderKind::Mock(Box::new(m)))
            }
            other => {
                self.report(
                    format!("{at}.kind"),
                    Some(kind.span()),
                    format!(
                        "unknown provider kind {other:?}; expected \"openai\", \"anthropic\" \
                         or \"mock\""
                    ),
                );
                None
            }
        }
    }

    /// The checked `base_url` of a provider reached over HTTP (`kind` is its `kind` key):
    /// required when there is no `default`; `example` is shown when it is missing or does not
    /// parse. Also refuses a `[providers.mock]` table on such a provider.
    fn remote_base_url(
        &mut self,
        at: &str,
        p: &RawProvider,
        kind: &Spanned<String>,
        example: &str,
        default: Option<&str>,
    ) -> Option<String> {
        let kind_name = kind.get_ref();
        if let Some(mock) = &p.mock {
            self.report(
                format!("{at}.mock"),
                Some(mock.span()),
                format!(
                    "a [providers.mock] table is only allowed with kind = \"mock\" \
                     (this provider is kind = {kind_name:?})"
                ),
            );
        }
        let Some(url) = &p.base_url else {
            if default.is_none() {
                self.report(
                    format!("{at}.base_url"),
                    Some(kind.span()),
                    format!(
                        "missing required key: kind = {kind_name:?} needs base_url, \
                         e.g. {example:?}"
                    ),
                );
            }
            return default.map(str::to_owned);
        };
        match check_base_url(url.get_ref(), example) {
            Ok(()) => Some(url.get_ref().clone()),
            Err(message) => {
                self.report(format!("{at}.base_url"), Some(url.span()), message);
                None
            }
        }
    }

    fn headers(&mut self, at: &str, p: &RawProvider) -> Option<Vec<(String, String)>> {
        let Some(headers) = &p.headers else {
            return Some(Vec::new());
        };
        let mut ok = true;
        let mut out = Vec::new();
        for (name, value) in headers.get_ref() {
            let path = join_key(&format!("{at}.headers"), name.get_ref());
            match http::HeaderName::from_bytes(name.get_ref().as_bytes()) {
                Err(_) => {
                    self.report(path, Some(name.span()), "not a valid HTTP header name");
                    ok = false;
                    continue;
                }
                Ok(header) if CREDENTIAL_HEADERS.contains(&header.as_str()) => {
                    self.report(
                        path,
                        Some(name.span()),
                        "credentials do not belong in headers: name the environment variable \
                         holding the provider key with api_key_env",
                    );
                    ok = false;
                    continue;
                }
                Ok(_) => {}
            }
            if http::HeaderValue::from_str(value.get_ref()).is_err() {
                self.report(
                    path,
                    Some(value.span()),
                    "not a valid HTTP header value (no control characters or line breaks; \
                     the value is not shown)",
                );
                ok = false;
                continue;
            }
            out.push((name.get_ref().clone(), value.get_ref().clone()));
        }
        ok.then_some(out)
    }

    /// Checks `context_windows`: non-empty model names, windows from 1 to `u32::MAX` tokens.
    fn context_windows(&mut self, at: &str, p: &RawProvider) -> Option<Vec<(String, u32)>> {
        let Some(windows) = &p.context_windows else {
            return Some(Vec::new());
        };
        let mut ok = true;
        let mut out = Vec::new();
        for (model, window) in windows.get_ref() {
            let path = join_key(&format!("{at}.context_windows"), model.get_ref());
            if model.get_ref().trim().is_empty() {
                self.report(path, Some(model.span()), "the model name must not be empty");
                ok = false;
                continue;
            }
            let tokens = *window.get_ref();
            match u32::try_from(tokens) {
                Ok(tokens) if tokens > 0 => out.push((model.get_ref().clone(), tokens)),
                Ok(_) => {
                    self.report(
                        path,
                        Some(window.span()),
                        "must be a positive number of tokens, got 0",
                    );
                    ok = false;
                }
                Err(_) if tokens < 0 => {
                    self.report(
                        path,
                        Some(window.span()),
                        format!("must be a positive number of tokens, got {tokens}"),
                    );
                    ok = false;
                }
                Err(_) => {
                    self.report(
                        path,
                        Some(window.span()),
                        format!("{tokens} is too large: at most {} tokens", u32::MAX),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Builds the mock's config: [`MockConfig::default`] with the table's keys applied, checked
    /// by [`MockConfig::validate`].
    fn mock(&mut self, at: &str, raw: Option<&Spanned<RawMock>>) -> Option<MockConfig> {
        let mut mock = MockConfig::default();
        let Some(table) = raw else {
            return Some(mock);
        };
        let r = table.get_ref();
        let at = format!("{at}.mock");
        let path = |key: &str| format!("{at}.{key}");

        macro_rules! copy {
            ($($key:ident),*) => {
                $(if let Some(v) = &r.$key {
                    mock.$key = *v.get_ref();
                })*
            };
        }
        copy!(
            chunks, seed, p_429, p_quota, p_500, p_502, p_503, p_504, p_529, p_reset, p_cut,
            p_stall, p_inband
        );
        if let Some(name) = &r.model_name {
            mock.model_name = name.get_ref().clone();
        }
        if let Some(limit) = &r.context_limit {
            mock.context_limit = Some(*limit.get_ref());
        }
        let mut ok = true;
        match self.duration(&path("ttft"), &r.ttft) {
            Ok(Some(d)) => mock.ttft = d,
            Ok(None) => {}
            Err(Reported) => ok = false,
        }
        match self.duration(&path("chunk_gap"), &r.chunk_gap) {
            Ok(Some(d)) => mock.chunk_gap = d,
            Ok(None) => {}
            Err(Reported) => ok = false,
        }
        match self.duration(&path("retry_after"), &r.retry_after) {
            Ok(d @ Some(_)) => mock.retry_after = d,
            Ok(None) => {}
            Err(Reported) => ok = false,
        }

        if let Err(message) = mock.validate() {
            ok = false;
            // `validate` joins its problems with "; " and starts each with the key at fault
            // when there is one; point each at that key's line.
            for part in message.split("; ") {
                let key = part
                    .split_once(' ')
                    .map(|(first, _)| first)
                    .filter(|first| r.span_of(first).is_some());
                match key {
                    Some(key) => self.report(path(key), r.span_of(key), part),
                    None => self.report(&at, Some(table.span()), part),
                }
            }
        }
        ok.then_some(mock)
    }

    fn models(
        &mut self,
        raw: &[Spanned<RawModel>],
        policy: &RetryPolicy,
        context: &ContextPolicy,
        providers: &[&str],
    ) -> Vec<ModelConfig> {
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        let mut models = Vec::new();
        for (i, entry) in raw.iter().enumerate() {
            let at = format!("models[{i}]");
            let m = entry.get_ref();

            let name = match &m.name {
                None => {
                    self.report(&at, Some(entry.span()), "missing required key `name`");
                    None
                }
                Some(name) if name.get_ref().trim().is_empty() => {
                    self.report(format!("{at}.name"), Some(name.span()), "must not be empty");
                    None
                }
                Some(name) => {
                    let text = name.get_ref().as_str();
                    if let Some(first) = first_line.get(text) {
                        self.report(
                            format!("{at}.name"),
                            Some(name.span()),
                            format!(
                                "duplicate model name {text:?} (first defined on line {first})"
                            ),
                        );
                        None
                    } else {
                        first_line.insert(text, self.positions.at(name.span().start).0);
                        Some(text.to_owned())
                    }
                }
            };

            let targets = self.targets(&at, entry, providers);

            let overrides = m.overrides();
            let model_policy = self.policy(
                policy,
                &overrides,
                &at,
                entry.span(),
                "inherited from [policy]",
            );
            let model_context = self.context(
                context,
                &overrides,
                &at,
                entry.span(),
                "inherited from [policy]",
            );
            let window = self.model_window(&at, m, &model_context);

            if let (Some(name), Some(targets), Ok((context_window, max_output))) =
                (name, targets, window)
            {
                models.push(ModelConfig {
                    name,
                    targets,
                    policy: model_policy,
                    fallback_on_content_policy: m
                        .fallback_on_content_policy
                        .as_ref()
                        .is_some_and(|b| *b.get_ref()),
                    context: model_context,
                    context_window,
                    max_output,
                });
            }
        }
        models
    }

    fn targets(
        &mut self,
        at: &str,
        entry: &Spanned<RawModel>,
        providers: &[&str],
    ) -> Option<Vec<TargetRef>> {
        let Some(list) = &entry.get_ref().targets else {
            self.report(
                at,
                Some(entry.span()),
                "missing required key `targets` (a list of \"provider/model\", in fallback order)",
            );
            return None;
        };
        if list.get_ref().is_empty() {
            self.report(
                format!("{at}.targets"),
                Some(list.span()),
                "must list at least one target, e.g. [\"openai/gpt-4o-mini\"]",
            );
            return None;
        }
        let mut ok = true;
        let mut targets = Vec::new();
        for (j, target) in list.get_ref().iter().enumerate() {
            let path = format!("{at}.targets[{j}]");
            let text = target.get_ref();
            let Some((provider, model)) = text
                .split_once('/')
                .filter(|(p, m)| !p.is_empty() && !m.is_empty())
            else {
                self.report(
                    path,
                    Some(target.span()),
                    format!("expected \"provider/model\", got {text:?}"),
                );
                ok = false;
                continue;
            };
            if !providers.contains(&provider) {
                let defined = if providers.is_empty() {
                    "no [[providers]] are defined".to_owned()
                } else {
                    let names: Vec<String> = providers.iter().map(|p| format!("{p:?}")).collect();
                    format!("defined providers: {}", names.join(", "))
                };
                self.report(
                    path,
                    Some(target.span()),
                    format!("unknown provider {provider:?} in target {text:?} ({defined})"),
                );
                ok = false;
                continue;
            }
            targets.push(TargetRef {
                provider: provider.to_owned(),
                model: model.to_owned(),
            });
        }
        ok.then_some(targets)
    }
}

/// `[a-zA-Z0-9_.-]+`.
fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An `http(s)` URL with a host and no credentials, query or fragment (paths are appended to
/// it). Messages never echo the URL: it might hold credentials.
/// `example` is a valid URL for the provider's kind, shown when `url` does not parse.
fn check_base_url(url: &str, example: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("not a valid URL ({e}); expected e.g. {example:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "expected an http:// or https:// URL, got scheme {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "the URL must not contain credentials (user:password@); name the environment \
             variable holding the key with api_key_env"
                .to_owned(),
        );
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(
            "the URL must not have a query or fragment (request paths are appended to it)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Why `window` leaves no room for a prompt under `context` (its reserved output and buffer
/// take it all), or `None` when it does.
fn no_room(window: u32, context: &ContextPolicy) -> Option<String> {
    let reserved = u64::from(context.default_output) + u64::from(context.buffer);
    (u64::from(window) <= reserved).then(|| {
        format!(
            "leaves no room for the prompt: default_output_tokens ({}) + context_buffer ({}) \
             reserve {reserved} tokens",
            context.default_output, context.buffer
        )
    })
}

/// A `redis://` or `rediss://` URL with a host and, as its path, at most a database number.
/// Messages never echo the URL or any part of it: it may hold a password.
fn check_redis_url(url: &str) -> Result<(), String> {
    const NOT_SHOWN: &str = "the value is not shown: it may hold a password";
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| {
        format!("not a valid URL ({e}); expected e.g. {REDIS_URL_EXAMPLE:?} ({NOT_SHOWN})")
    })?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(format!(
            "expected a redis:// or rediss:// URL, e.g. {REDIS_URL_EXAMPLE:?} ({NOT_SHOWN})"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("the URL has no host ({NOT_SHOWN})"));
    }
    let path = parsed.path();
    let database = path.strip_prefix('/').unwrap_or(path);
    if !database.is_empty() && database.parse::<u32>().is_err() {
        return Err(format!(
            "the URL path must be empty or a database number like \"/0\" ({NOT_SHOWN})"
        ));
    }
    Ok(())
}

/// The policy's duration field named `key` (as [`PolicyError`] names it).
fn get_duration(policy: &RetryPolicy, key: &str) -> Option<Duration> {
    Some(match key {
        "max_retry_after" => policy.max_retry_after,
        "deadline" => policy.deadline,
        "connect_timeout" => policy.connect_timeout,
        "first_token_timeout" => policy.first_token_timeout,
        "idle_timeout" => policy.idle_timeout,
        _ => return None,
    })
}

/// Sets the policy's duration field named `key`.
fn set_duration(policy: &mut RetryPolicy, key: &str, value: Duration) {
    let field = match key {
        "max_retry_after" => &mut policy.max_retry_after,
        "deadline" => &mut policy.deadline,
        "connect_timeout" => &mut policy.connect_timeout,
        "first_token_timeout" => &mut policy.first_token_timeout,
        "idle_timeout" => &mut policy.idle_timeout,
        _ => return,
    };
    *field = value;
}
