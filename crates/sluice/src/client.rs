//! [`Client`]: the library entry point, and how a request's model resolves to a chain of
//! [`Target`]s.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use sluice_core::{
    BreakerConfig, BudgetConfig, ContextPolicy, NoopObserver, Observer, PolicyError, RandomSource,
    RetryPolicy, SplitMix64,
};
use sluice_providers::{
    ApiKey, ChatRequest, ChatResponse, Endpoint, HttpClientError, OpenAiAdapter, build_http_client,
};

use crate::executor::{self, Answer, CallOptions, Mode};
use crate::health::{HealthRegistry, TargetStatus};
use crate::limiter::{Limiter, LimiterConfig, Limits};
use crate::{ChatStream, Error};

/// One place a request can go: a provider endpoint and the model name it is sent with.
#[derive(Debug, Clone)]
pub struct Target {
    endpoint: Arc<Endpoint>,
    model: String,
    name: Arc<str>,
    context_window: Option<u32>,
}

impl Target {
    /// `model` on `endpoint`.
    pub fn new(endpoint: Arc<Endpoint>, model: impl Into<String>) -> Self {
        let model = model.into();
        let name = Arc::from(format!("{}/{}", endpoint.name, model));
        let context_window = sluice_core::model_info(&model).map(|i| i.context_window);
        Self {
            endpoint,
            model,
            name,
            context_window,
        }
    }

    /// Overrides the registry's context window for this target.
    pub fn with_context_window(mut self, window: Option<u32>) -> Self {
        self.context_window = window;
        self
    }

    /// The target's context window: configured, else from the model registry; `None` when
    /// unknown.
    pub fn context_window(&self) -> Option<u32> {
        self.context_window
    }

    /// `provider/model`, the name used in logs, metrics and errors.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The model name sent upstream.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The provider endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

/// A named model: the chain of targets tried in order, and the policy they run under.
#[derive(Debug, Clone)]
pub struct Route {
    /// Targets in fallback order; never empty.
    pub targets: Vec<Target>,
    /// Retry, timeout and deadline policy for calls on this route.
    pub policy: Arc<RetryPolicy>,
    /// Whether a `content_policy` failure moves on to the next target.
    pub fallback_on_content_policy: bool,
    /// What to do when a prompt does not fit a target's context window.
    pub context: Arc<ContextPolicy>,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A policy value cannot work.
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    /// A route names a provider that was not added.
    #[error("route {route:?}: target {target:?} names no known provider (known: {known})")]
    UnknownProvider {
        /// Route name.
        route: String,
        /// The bad target.
        target: String,
        /// Providers that exist.
        known: String,
    },
    /// A route has no targets, or a target is not `provider/model`.
    #[error("route {route:?}: {message}")]
    BadRoute {
        /// Route name.
        route: String,
        /// What is wrong.
        message: String,
    },
    /// Two providers share a name.
    #[error("provider {0:?} is defined twice")]
    DuplicateProvider(String),
    /// The HTTP client failed to build.
    #[error(transparent)]
    Http(#[from] HttpClientError),
}

/// Which endpoint serves models that match no route and no `provider/` prefix.
#[derive(Debug, Clone)]
enum DefaultEndpoint {
    First,
    Named(String),
    Disabled,
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    endpoints: Vec<Endpoint>,
    default_endpoint: DefaultEndpoint,
    routes: Vec<(String, Vec<String>, Option<RetryPolicy>, bool)>,
    policy: RetryPolicy,
    rng: Option<Box<dyn RandomSource>>,
    observer: Arc<dyn Observer>,
    http: Option<reqwest::Client>,
    breaker: BreakerConfig,
    budget: BudgetConfig,
    provider_breaker: HashMap<Arc<str>, BreakerConfig>,
    provider_budget: HashMap<Arc<str>, BudgetConfig>,
    context_windows: HashMap<String, u32>,
    context: ContextPolicy,
    route_context: HashMap<String, ContextPolicy>,
    limiter: Option<Limiter>,
    limits: HashMap<String, Limits>,
    provider_wide_limits: HashSet<String>,
    expected_output_tokens: u32,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("default_endpoint", &self.default_endpoint)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new() -> Self {
        Self {
            endpoints: Vec::new(),
            default_endpoint: DefaultEndpoint::First,
            routes: Vec::new(),
            policy: RetryPolicy::default(),
            rng: None,
            observer: Arc::new(NoopObserver),
            http: None,
            breaker: BreakerConfig::default(),
            budget: BudgetConfig::default(),
            provider_breaker: HashMap::new(),
            provider_budget: HashMap::new(),
            context_windows: HashMap::new(),
            context: ContextPolicy::default(),
            route_context: HashMap::new(),
            limiter: None,
            limits: HashMap::new(),
            provider_wide_limits: HashSet::new(),
            expected_output_tokens: Self::DEFAULT_EXPECTED_OUTPUT_TOKENS,
        }
    }

    /// Output tokens the rate limiter reserves for a request that sets no `max_tokens`.
    pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u32 = 256;

    /// The context guard's policy for routes without their own.
    pub fn context_policy(mut self, policy: ContextPolicy) -> Self {
        self.context = policy;
        self
    }

    /// The context guard's policy for route `name`.
    pub fn route_context_policy(mut self, name: &str, policy: ContextPolicy) -> Self {
        self.route_context.insert(name.to_owned(), policy);
        self
    }

    /// The proactive rate limiter (its store decides local or shared buckets). Default: a
    /// local limiter, which only acts on limits set with [`ClientBuilder::limits`] or learned
    /// from provider headers.
    pub fn limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Requests/min and tokens/min for `key`: a target `provider/model`, or a provider name
    /// (then per target of that provider, or one shared pair with
    /// [`ClientBuilder::provider_wide_limits`]). A target's own entry wins over its provider's.
    pub fn limits(mut self, key: &str, limits: Limits) -> Self {
        self.limits.insert(key.to_owned(), limits);
        self
    }

    /// One bucket pair for all of provider `name`'s targets instead of one per target.
    pub fn provider_wide_limits(mut self, name: &str) -> Self {
        self.provider_wide_limits.insert(name.to_owned());
        self
    }

    /// Output tokens the limiter reserves when a request sets no `max_tokens`.
    pub fn expected_output_tokens(mut self, tokens: u32) -> Self {
        self.expected_output_tokens = tokens;
        self
    }

    /// Circuit breaker settings for every target (a provider may override them).
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Retry budget settings for every target (a provider may override them).
    pub fn budget(mut self, config: BudgetConfig) -> Self {
        self.budget = config;
        self
    }

    /// Breaker settings for the targets of provider `name`.
    pub fn provider_breaker(mut self, name: &str, config: BreakerConfig) -> Self {
        self.provider_breaker.insert(Arc::from(name), config);
        self
    }

    /// Retry budget settings for the targets of provider `name`.
    pub fn provider_budget(mut self, name: &str, config: BudgetConfig) -> Self {
        self.provider_budget.insert(Arc::from(name), config);
        self
    }

    /// Sets the context window of target `provider/model`, overriding the model registry.
    pub fn context_window(mut self, target: &str, window: u32) -> Self {
        self.context_windows.insert(target.to_owned(), window);
        self
    }

    /// Adds a provider endpoint. The first one added serves models that match no route and
    /// no `provider/` prefix, unless [`ClientBuilder::default_endpoint`] says otherwise.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds an OpenAI-compatible endpoint named `name` at `base_url` (`.../v1`).
    pub fn openai(self, name: &str, base_url: impl Into<String>, api_key: Option<ApiKey>) -> Self {
        self.endpoint(Endpoint {
            name: Arc::from(name),
            base_url: base_url.into(),
            api_key,
            headers: http::HeaderMap::new(),
            adapter: Arc::new(OpenAiAdapter),
        })
    }

    /// Which endpoint serves unrouted, unprefixed models; `None` means such models are
    /// rejected as unknown.
    pub fn default_endpoint(mut self, name: Option<&str>) -> Self {
        self.default_endpoint = match name {
            Some(name) => DefaultEndpoint::Named(name.to_owned()),
            None => DefaultEndpoint::Disabled,
        };
        self
    }

    /// Routes model name `name` to `targets` (`provider/model`, in fallback order).
    pub fn route(mut self, name: &str, targets: &[&str]) -> Self {
        self.routes.push((
            name.to_owned(),
            targets.iter().map(|t| (*t).to_owned()).collect(),
            None,
            false,
        ));
        self
    }

    /// Like [`ClientBuilder::route`], with its own policy and content-policy fallback flag.
    pub fn route_with_policy(
        mut self,
        name: &str,
        targets: &[&str],
        policy: RetryPolicy,
        fallback_on_content_policy: bool,
    ) -> Self {
        self.routes.push((
            name.to_owned(),
            targets.iter().map(|t| (*t).to_owned()).collect(),
            Some(policy),
            fallback_on_content_policy,
        ));
        self
    }

    /// The policy for calls that match no route with its own.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Seeds the backoff jitter, so a run's delays can be reproduced.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(Box::new(SplitMix64::seeded(seed)));
        self
    }

    /// Uses `rng` for backoff jitter.
    pub fn rng(mut self, rng: Box<dyn RandomSource>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Reports every attempt, retry, fallback and commit to `observer`.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Shares an existing HTTP client (its connection pool) instead of building one.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Validates everything and builds the client.
    pub fn build(self) -> Result<Client, BuildError> {
        self.policy.validate()?;
        self.breaker.validate()?;
        self.budget.validate()?;
        for c in self.provider_breaker.values() {
            c.validate()?;
        }
        for c in self.provider_budget.values() {
            c.validate()?;
        }
        let mut endpoints: HashMap<Arc<str>, Arc<Endpoint>> = HashMap::new();
        let mut order = Vec::new();
        for e in self.endpoints {
            let name = e.name.clone();
            if endpoints.insert(name.clone(), Arc::new(e)).is_some() {
                return Err(BuildError::DuplicateProvider(name.to_string()));
            }
            order.push(name);
        }
        let default_endpoint = match &self.default_endpoint {
            DefaultEndpoint::Named(name) => {
                Some(endpoints.get(name.as_str()).cloned().ok_or_else(|| {
                    BuildError::UnknownProvider {
                        route: "(default)".into(),
                        target: name.clone(),
                        known: order.join(", "),
                    }
                })?)
            }
            DefaultEndpoint::First => order.first().and_then(|n| endpoints.get(n).cloned()),
            DefaultEndpoint::Disabled => None,
        };
        let default_policy = Arc::new(self.policy);
        let mut routes = HashMap::new();
        for (name, targets, policy, fallback_on_content_policy) in self.routes {
            if targets.is_empty() {
                return Err(BuildError::BadRoute {
                    route: name,
                    message: "has no targets".into(),
                });
            }
            let mut resolved = Vec::new();
            for t in targets {
                let Some((provider, model)) = t.split_once('/') else {
                    return Err(BuildError::BadRoute {
                        route: name,
                        message: format!("target {t:?} is not provider/model"),
                    });
                };
                let endpoint =
                    endpoints
                        .get(provider)
                        .ok_or_else(|| BuildError::UnknownProvider {
                            route: name.clone(),
                            target: t.clone(),
                            known: order.join(", "),
                        })?;
                let target = Target::new(endpoint.clone(), model);
                let window = self
                    .context_windows
                    .get(target.name().as_ref())
                    .copied()
                    .or(target.context_window());
                resolved.push(target.with_context_window(window));
            }
            let policy = match policy {
                Some(p) => {
                    p.validate()?;
                    Arc::new(p)
                }
                None => default_policy.clone(),
            };
            let context = Arc::new(
                self.route_context
                    .get(&name)
                    .copied()
                    .unwrap_or(self.context),
            );
            routes.insert(
                name,
                Route {
                    targets: resolved,
                    policy,
                    fallback_on_content_policy,
                    context,
                },
            );
        }
        let http = match self.http {
            Some(http) => http,
            None => build_http_client(default_policy.connect_timeout)?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                default_endpoint,
                routes,
                default_policy,
                rng: Mutex::new(
                    self.rng
                        .unwrap_or_else(|| Box::new(SplitMix64::from_entropy())),
                ),
                observer: self.observer,
                health: HealthRegistry::new(
                    self.breaker,
                    self.budget,
                    self.provider_breaker,
                    self.provider_budget,
                ),
                context_windows: self.context_windows,
                default_context: Arc::new(self.context),
                limiter: self
                    .limiter
                    .unwrap_or_else(|| Limiter::local(LimiterConfig::default())),
                limits: self.limits,
                provider_wide_limits: self.provider_wide_limits,
                expected_output_tokens: self.expected_output_tokens,
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    endpoints: HashMap<Arc<str>, Arc<Endpoint>>,
    default_endpoint: Option<Arc<Endpoint>>,
    routes: HashMap<String, Route>,
    default_policy: Arc<RetryPolicy>,
    pub(crate) rng: Mutex<Box<dyn RandomSource>>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) health: HealthRegistry,
    context_windows: HashMap<String, u32>,
    default_context: Arc<ContextPolicy>,
    pub(crate) limiter: Limiter,
    limits: HashMap<String, Limits>,
    provider_wide_limits: HashSet<String>,
    pub(crate) expected_output_tokens: u32,
}

/// A resilient LLM client. Cheap to clone; clones share the connection pool and jitter source.
///
/// `chat` and `chat_stream` run through the same executor: the same route resolution, attempt
/// loop, classification, backoff and deadline. They differ only in when the response is
/// committed (see the crate docs).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoints",
                &self.inner.endpoints.keys().collect::<Vec<_>>(),
            )
            .field("routes", &self.inner.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Sends a non-streaming request (whatever `req.stream` says) and returns the whole answer.
    pub async fn chat(&self, req: ChatRequest) -> Result<ChatResponse, Error> {
        match executor::execute(self, req, Mode::Collect, &CallOptions::default()).await? {
            Answer::Response(response, _) => Ok(*response),
            Answer::Stream(_) => unreachable!("collect mode never yields a stream"),
        }
    }

    /// Sends a streaming request. Returns once the stream is committed (its first content
    /// event arrived); every failure before that was retried or fell back like a
    /// non-streaming failure.
    pub async fn chat_stream(&self, req: ChatRequest) -> Result<ChatStream, Error> {
        match executor::execute(self, req, Mode::Stream, &CallOptions::default()).await? {
            Answer::Stream(stream) => Ok(stream),
            Answer::Response(..) => unreachable!("stream mode never yields a whole response"),
        }
    }

    /// Streams when `req.stream` is true, else collects; also reports which target answered
    /// and after how many attempts. This is what the gateway calls.
    pub async fn execute(&self, req: ChatRequest, options: &CallOptions) -> Result<Answer, Error> {
        let mode = if req.is_stream() {
            Mode::Stream
        } else {
            Mode::Collect
        };
        executor::execute(self, req, mode, options).await
    }

    /// Resolves a model name to its route: a configured route, else `provider/model`, else the
    /// default endpoint with the model as-is.
    pub fn resolve(&self, model: &str) -> Result<Route, Error> {
        let inner = &self.inner;
        if let Some(route) = inner.routes.get(model) {
            return Ok(route.clone());
        }
        let direct = |endpoint: &Arc<Endpoint>, model: &str| Route {
            targets: vec![{
                let target = Target::new(endpoint.clone(), model);
                let window = inner.context_windows.get(target.name().as_ref()).copied();
                match window {
                    Some(w) => target.with_context_window(Some(w)),
                    None => target,
                }
            }],
            policy: inner.default_policy.clone(),
            fallback_on_content_policy: false,
            context: inner.default_context.clone(),
        };
        if let Some((provider, rest)) = model.split_once('/') {
            if let Some(endpoint) = inner.endpoints.get(provider) {
                if !rest.is_empty() {
                    return Ok(direct(endpoint, rest));
                }
            }
        }
        match &inner.default_endpoint {
            Some(endpoint) if !model.is_empty() => Ok(direct(endpoint, model)),
            _ => Err(Error::UnknownModel {
                model: model.to_owned(),
            }),
        }
    }

    /// The rate-limit bucket key and configured limits of `target`.
    pub fn limit_for(&self, target: &Target) -> (Arc<str>, Limits) {
        let inner = &self.inner;
        let provider = target.endpoint().name.as_ref();
        let wide = inner.provider_wide_limits.contains(provider);
        if let Some(limits) = inner.limits.get(target.name().as_ref()) {
            return (target.name().clone(), *limits);
        }
        let key: Arc<str> = if wide {
            target.endpoint().name.clone()
        } else {
            target.name().clone()
        };
        let limits = inner
            .limits
            .get(provider)
            .copied()
            .unwrap_or(Limits::UNLIMITED);
        (key, limits)
    }

    /// The proactive rate limiter (levels and learned limits, for status pages).
    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    /// Health of every target used so far: breaker state, retry budget, rate-limit park.
    pub fn target_status(&self) -> Vec<TargetStatus> {
        self.inner.health.snapshot(tokio::time::Instant::now())
    }

    /// The names of configured routes.
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.inner.routes.keys().map(String::as_str)
    }
}
