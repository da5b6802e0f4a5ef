//! The one pooled HTTP client all upstream calls share.
//!
//! Choices and why:
//! - rustls with the `ring` provider: no OpenSSL on the target machine, quick to build.
//! - `tcp_nodelay`: SSE events are small writes; Nagle would hold them back.
//! - a connect timeout, but no whole-request `timeout()`: a stream may legitimately run for
//!   many minutes. The executor enforces first-token, idle and total deadlines itself.
//! - generous idle pooling: reconnecting (TCP + TLS) costs more than any retry delay we add.

use std::time::Duration;

/// The HTTP client could not be built (TLS roots or provider setup failed).
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client failed: {0}")]
pub struct HttpClientError(#[source] reqwest::Error);

/// Builds the shared upstream client.
pub fn build_http_client(connect_timeout: Duration) -> Result<reqwest::Client, HttpClientError> {
    // Ignoring the result is right: it fails only when a provider is already installed, which
    // is what we want either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build()
        .map_err(HttpClientError)
}
