//! One failed upstream attempt, classified.
//!
//! Every way an attempt can fail — an HTTP error status, a transport error, an in-band SSE
//! error event, a malformed body, a timeout — becomes an [`UpstreamError`] with an
//! [`ErrorClass`] from the one classification table in `sluice-core`. The executor decides
//! what to do from the class and the server's hints alone, whatever the provider.

use std::error::Error as StdError;
use std::fmt;

use sluice_core::{ErrorClass, ServerHints};

/// A failed attempt against a provider.
#[derive(Debug)]
pub struct UpstreamError {
    /// What kind of failure this is; decides retry, fallback and breaker.
    pub class: ErrorClass,
    /// HTTP status, when the provider answered with one (`None` for transport errors and
    /// in-band stream errors).
    pub status: Option<u16>,
    /// The provider's message, or a description of the transport failure.
    pub message: String,
    /// The provider's `error.type`, if any.
    pub provider_type: Option<String>,
    /// The provider's `error.code`, if any.
    pub provider_code: Option<String>,
    /// What the response headers said about retrying.
    pub hints: ServerHints,
    /// The underlying error (reqwest, JSON), when there is one.
    pub source: Option<Box<dyn StdError + Send + Sync>>,
}

impl UpstreamError {
    /// A failure with just a class and a message.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            status: None,
            message: message.into(),
            provider_type: None,
            provider_code: None,
            hints: ServerHints::default(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Attaches an HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// A short one-line summary: `rate_limited (HTTP 429): message`.
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} (HTTP {status}): {}", self.class, self.message),
            None => write!(f, "{}: {}", self.class, self.message),
        }
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Classifies a reqwest error that happened before or while reading a response.
///
/// The message walks the error's source chain (for example "connection reset by peer") because
/// reqwest's own top-level message is only "error sending request".
pub fn transport_error(err: reqwest::Error) -> UpstreamError {
    let class = if err.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Transport
    };
    let what = if err.is_connect() {
        "connect failed"
    } else if err.is_body() || err.is_decode() {
        "response body failed"
    } else if err.is_request() {
        "request failed"
    } else {
        "transport failed"
    };
    let mut message = what.to_owned();
    let mut cause: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    UpstreamError::new(class, message).with_source(err.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_class_status_and_message() {
        let e = UpstreamError::new(ErrorClass::RateLimited, "slow down").with_status(429);
        assert_eq!(e.to_string(), "rate_limited (HTTP 429): slow down");
        let e = UpstreamError::new(ErrorClass::Transport, "connect failed: refused");
        assert_eq!(e.to_string(), "transport: connect failed: refused");
    }
}
