//! `sluice-gateway`: the Sluice executor behind an OpenAI-compatible HTTP API.
//!
//! - [`Config`] is the validated configuration (TOML in two stages: parse, then validate with
//!   every problem reported with its key path and line, see [`ConfigError`]).
//! - [`Gateway`] is built from a `Config`: it starts in-process mock providers, builds the
//!   `sluice::Client` with one route per `[[models]]` entry, and serves [`router`] on a socket
//!   with a header read timeout and a graceful drain ([`Gateway::serve`], [`Gateway::start`]).
//! - [`router`] is the axum router over an [`AppState`]; tests drive it without a socket.
//! - [`ApiError`] is every error the gateway returns, in OpenAI's error format.
//! - [`Metrics`] is the gateway's observability: the client's observer (every retry, fallback
//!   and breaker transition) plus one record per request, rendered as Prometheus text on
//!   `GET /metrics` and as the live status page `GET /status` (polling `GET /status.json`, a
//!   [`StatusReport`]); optionally on a separate admin listener ([`admin_router`]).
//!
//! The commit-point rule holds on the wire: nothing, not even the status line, is written to
//! the client before the executor commits; after it, a failure ends the SSE stream with an
//! error event and no `[DONE]`.

mod app;
mod config;
mod error;
mod metrics;
mod server;
mod status;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub use app::{AppState, RequestId, admin_router, router};
pub use config::{
    ANTHROPIC_BASE_URL, Config, ConfigError, ConfigProblem, LimitScope, LimitsConfig, ModelConfig,
    OnRedisDown, ProviderConfig, ProviderKind, RateLimitBackend, RateLimitConfig, ServerConfig,
    TargetRef,
};
pub use error::{ApiError, Dialect};
pub use metrics::{DIRECT_ROUTE, MAX_TARGET_LABELS, Metrics, RequestRecorder};
pub use status::{BUCKET_MS, BUCKETS, LogHistogram, STATS_BUCKETS, StatusReport, StatusWindow};

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice::{Adapter, ApiKey, Client, Endpoint, OpenAiAdapter};
use sluice::{Limiter, LimiterConfig, LocalStore, RateLimitStore};
use sluice_mock::MockServer;
use sluice_providers::AnthropicAdapter;
use sluice_redis::{RedisStore, SharedConfig, SharedStore};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A mock provider could not bind its port.
    #[error("provider {provider}: the built-in mock could not start: {source}")]
    Mock {
        /// Provider name.
        provider: String,
        /// Why.
        source: io::Error,
    },
    /// The client could not be built from the configuration.
    #[error(transparent)]
    Client(#[from] sluice::BuildError),
    /// A configured header is not a valid HTTP header.
    #[error("provider {provider}: header {name:?} is not a valid HTTP header")]
    Header {
        /// Provider name.
        provider: String,
        /// Header name.
        name: String,
    },
    /// `server.api_keys_env` names a variable that is unset or empty.
    #[error("server.api_keys_env: variable {0} is not set or holds no keys")]
    ClientKeys(String),
    /// The rate-limit store could not be set up (a bad Redis URL).
    #[error("rate_limit: {0}")]
    RateLimit(String),
}

/// The rate limiter `[rate_limit]` asks for: local buckets, or buckets in Redis shared by every
/// replica with a bounded local fallback while Redis is unreachable.
fn limiter_from(
    config: &RateLimitConfig,
) -> Result<(Limiter, Option<Arc<SharedStore>>), StartError> {
    let mut shared_store = None;
    let store: Arc<dyn RateLimitStore> = match &config.backend {
        RateLimitBackend::Local => Arc::new(LocalStore::new()),
        RateLimitBackend::Redis { url } => {
            let redis = RedisStore::connect_lazy(url, &config.key_prefix)
                .map_err(|e| StartError::RateLimit(e.to_string()))?;
            let shared = SharedConfig {
                expected_replicas: config.expected_replicas,
                on_redis_down: match config.on_redis_down {
                    OnRedisDown::Local => sluice_redis::OnRedisDown::Local,
                    OnRedisDown::Closed => sluice_redis::OnRedisDown::Closed,
                },
                ..SharedConfig::default()
            };
            let store = Arc::new(
                SharedStore::new(redis, shared)
                    .map_err(|e| StartError::RateLimit(e.to_string()))?,
            );
            shared_store = Some(store.clone());
            store
        }
    };
    let limiter = Limiter::new(
        store,
        LimiterConfig {
            max_queue_wait: config.max_queue_wait,
            learn_from_headers: config.learn_from_headers,
        },
    );
    Ok((limiter, shared_store))
}

/// How models that match no `[[models]]` entry and no `provider/` prefix are served.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// Send them to this provider with the model name unchanged (`sluice serve --upstream`).
    /// `None`: they are unknown (404).
    pub default_provider: Option<String>,
    /// Client keys supplied directly (from a secret manager, or a test) instead of through
    /// `server.api_keys_env`. `Some` turns auth on.
    pub client_keys: Option<Vec<String>>,
}

/// A gateway built from a [`Config`], ready to serve.
#[derive(Debug)]
pub struct Gateway {
    state: Arc<AppState>,
    config: Config,
    abort_streams: watch::Sender<bool>,
    mocks: Vec<(String, MockServer)>,
}

impl Gateway {
    /// Builds the client, starts mock providers and reads client keys.
    pub async fn build(config: Config, options: GatewayOptions) -> Result<Self, StartError> {
        let mut mocks = Vec::new();
        // Load the tokenizers now, off the async workers, so the first request does not pay.
        let _ = tokio::task::spawn_blocking(sluice_core::warm_up).await;
        let (limiter, shared_store) = limiter_from(&config.rate_limit)?;
        let mut builder = Client::builder()
            .policy(config.policy.clone())
            .breaker(config.breaker.clone())
            .budget(config.budget.clone());
        for provider in &config.providers {
            let (base_url, adapter): (String, Arc<dyn Adapter>) = match &provider.kind {
                ProviderKind::OpenAi { base_url } => (base_url.clone(), Arc::new(OpenAiAdapter)),
                ProviderKind::Anthropic { base_url } => {
                    (base_url.clone(), Arc::new(AnthropicAdapter))
                }
                ProviderKind::Mock(mock) => {
                    let server = MockServer::start((**mock).clone())
                        .await
                        .map_err(|source| StartError::Mock {
                            provider: provider.name.clone(),
                            source,
                        })?;
                    let url = server.base_url();
                    mocks.push((provider.name.clone(), server));
                    (url, Arc::new(OpenAiAdapter))
                }
            };
            let mut headers = HeaderMap::new();
            for (name, value) in &provider.headers {
                let bad = || StartError::Header {
                    provider: provider.name.clone(),
                    name: name.clone(),
                };
                let name = HeaderName::try_from(name.as_str()).map_err(|_| bad())?;
                let value = HeaderValue::try_from(value.as_str()).map_err(|_| bad())?;
                headers.insert(name, value);
            }
            builder = builder.endpoint(Endpoint {
                name: Arc::from(provider.name.as_str()),
                base_url,
                api_key: provider.api_key_env.as_deref().and_then(ApiKey::from_env),
                headers,
                adapter,
            });
            if let Some(breaker) = &provider.breaker {
                builder = builder.provider_breaker(&provider.name, breaker.clone());
            }
            if let Some(budget) = &provider.budget {
                builder = builder.provider_budget(&provider.name, budget.clone());
            }
            for (model, window) in &provider.context_windows {
                builder = builder.context_window(&format!("{}/{model}", provider.name), *window);
            }
            let limits = provider.limits.to_limits();
            if !limits.is_unlimited() {
                builder = builder.limits(&provider.name, limits);
            }
            if provider.limit_scope == LimitScope::Provider {
                builder = builder.provider_wide_limits(&provider.name);
            }
            for (model, limits) in &provider.model_limits {
                builder = builder.limits(&format!("{}/{model}", provider.name), limits.to_limits());
            }
        }
        builder = builder
            .limiter(limiter.clone())
            .expected_output_tokens(config.rate_limit.expected_output_tokens)
            .context_policy(config.context);
        for model in &config.models {
            builder = builder.route_context_policy(&model.name, model.context);
            if let Some(window) = model.context_window {
                for target in &model.targets {
                    builder = builder.context_window(&target.to_string(), window);
                }
            }
        }
        builder = builder.default_endpoint(options.default_provider.as_deref());
        let metrics = config.server.metrics.then(|| {
            Arc::new(Metrics::new(config.models.iter().map(|m| {
                (
                    m.name.as_str(),
                    m.targets.iter().map(ToString::to_string).collect(),
                )
            })))
        });
        if let Some(metrics) = &metrics {
            builder = builder.observer(metrics.clone());
        }
        let mut models = Vec::new();
        for model in &config.models {
            let targets: Vec<String> = model.targets.iter().map(ToString::to_string).collect();
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            builder = builder.route_with_policy(
                &model.name,
                &targets,
                model.policy.clone(),
                model.fallback_on_content_policy,
            );
            models.push(model.name.clone());
        }
        let client = builder.build()?;
        let client_keys = match (&options.client_keys, &config.server.api_keys_env) {
            (Some(keys), _) => Some(keys.clone()),
            (None, None) => None,
            (None, Some(var)) => {
                let keys: Vec<String> = std::env::var(var)
                    .unwrap_or_default()
                    .split(',')
                    .map(|k| k.trim().to_owned())
                    .filter(|k| !k.is_empty())
                    .collect();
                if keys.is_empty() {
                    return Err(StartError::ClientKeys(var.clone()));
                }
                Some(keys)
            }
        };
        let (abort_tx, abort_rx) = watch::channel(false);
        let state = Arc::new(AppState {
            client,
            models,
            client_keys,
            max_body: config.server.max_body,
            body_read_timeout: config.server.body_read_timeout,
            draining: AtomicBool::new(false),
            abort_streams: abort_rx,
            metrics,
            per_client_key: config.rate_limit.per_client_key,
            shared_store,
        });
        Ok(Self {
            state,
            config,
            abort_streams: abort_tx,
            mocks,
        })
    }

    /// The router over this gateway's state.
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    /// The shared state (the client, model list, keys).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The gateway's metrics (`None` when `server.metrics = false`).
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.state.metrics.as_ref()
    }

    /// The configuration the gateway was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Base URLs of the in-process mock providers, by provider name.
    pub fn mock_urls(&self) -> Vec<(String, String)> {
        self.mocks
            .iter()
            .map(|(n, m)| (n.clone(), m.base_url()))
            .collect()
    }

    /// The in-process mock provider named `name`.
    pub fn mock(&self, name: &str) -> Option<&MockServer> {
        self.mocks.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }

    /// Serves on `listener` until `shutdown` resolves, then drains. With
    /// `server.admin_listen` set, binds it and serves [`admin_router`] there as well.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let admin = match self.config.server.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        self.serve_with_admin(listener, admin, shutdown).await
    }

    /// Serves on `listener` (and [`admin_router`] on `admin`, when given) until `shutdown`
    /// resolves, then drains. The admin listener keeps answering during the drain and closes
    /// after it.
    pub async fn serve_with_admin(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let router = app::build_router(self.state.clone(), admin.is_none());
        let options = server::ServeOptions {
            header_read_timeout: self.config.server.header_read_timeout,
            drain_timeout: self.config.server.drain_timeout,
        };
        let Self {
            state,
            abort_streams,
            mocks,
            ..
        } = self;
        let (stop_admin, admin_stopped) = watch::channel(false);
        let admin_task = admin.map(|listener| {
            let router = admin_router(state.clone());
            let mut stopped = admin_stopped;
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            })
        });
        let result = server::serve(listener, router, state, abort_streams, options, shutdown).await;
        stop_admin.send_replace(true);
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        drop(mocks);
        result
    }

    /// Serves on `listener` in a background task; the handle stops it.
    pub fn start(self, listener: TcpListener) -> io::Result<GatewayHandle> {
        self.start_with_admin(listener, None)
    }

    /// Like [`Gateway::start`], serving [`admin_router`] on `admin` too (its address is
    /// [`GatewayHandle::admin_addr`]). `server.admin_listen` is not bound: `admin` is used.
    pub fn start_with_admin(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
    ) -> io::Result<GatewayHandle> {
        let addr = listener.local_addr()?;
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve_with_admin(listener, admin, async move {
            let _ = rx.await;
        }));
        Ok(GatewayHandle {
            addr,
            admin_addr,
            shutdown: Some(tx),
            task,
        })
    }
}

/// A gateway serving in the background.
#[derive(Debug)]
pub struct GatewayHandle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl GatewayHandle {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// `http://ADDR/status` on the listener that serves the status page.
    pub fn status_url(&self) -> String {
        format!("http://{}/status", self.admin_addr.unwrap_or(self.addr))
    }

    /// `http://ADDR/v1`, the `base_url` for OpenAI SDKs.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Starts the graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        if self.shutdown.is_some() {
            self.task.abort();
        }
    }
}
