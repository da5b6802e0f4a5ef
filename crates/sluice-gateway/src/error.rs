//! Errors in the caller's dialect: OpenAI's `{"error": {"message", "type", "param", "code"}}`
//! or Anthropic's `{"type": "error", "error": {"type", "message"}}`, with a matching status.
//!
//! A call that failed upstream keeps the upstream's status for client errors (400, 401, 404,
//! 422 ...) so SDKs raise the same exception they would against the provider, and maps each
//! failure class to one status otherwise. The error object also carries a `sluice` member with
//! the class, why retries ended and every attempt, which SDKs ignore and operators can read.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use sluice::{Error, ErrorClass};

/// Which API a client speaks: decides the shape of errors and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

/// An error response, rendered in the caller's dialect.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    openai_type: &'static str,
    param: Option<String>,
    code: Option<String>,
    retry_after: Option<Duration>,
    details: Option<Value>,
    /// The upstream class behind the error, when there is one.
    class: Option<ErrorClass>,
}

impl ApiError {
    /// A 400 `invalid_request_error` about the caller's own request.
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param)
    }

    /// An error with an explicit status and OpenAI type.
    pub fn new(status: StatusCode, openai_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            openai_type,
            param: None,
            code: None,
            retry_after: None,
            details: None,
            class: None,
        }
    }

    /// Sets `error.code`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets `error.param`.
    pub fn with_param(mut self, param: Option<&str>) -> Self {
        self.param = param.map(str::to_owned);
        self
    }

    /// The HTTP status for an OpenAI client.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body's `error` object in OpenAI's shape (also used for in-band stream errors).
    pub fn error_object(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.openai_type,
            "param": self.param,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            error["sluice"] = details.clone();
        }
        error
    }

    /// Anthropic's `error.type` for this error.
    pub fn anthropic_type(&self) -> &'static str {
        if let Some(class) = self.class {
            return sluice_providers::anthropic_error_type(class);
        }
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            504 => "timeout_error",
            s if (400..500).contains(&s) => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The status for `dialect`: Anthropic clients know overload as 529.
    pub fn status_for(&self, dialect: Dialect) -> StatusCode {
        match (dialect, self.class) {
            (Dialect::Anthropic, Some(ErrorClass::Overloaded)) => {
                StatusCode::from_u16(529).unwrap_or(self.status)
            }
            _ => self.status,
        }
    }

    /// Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`.
    pub fn anthropic_body(&self) -> Value {
        let mut error = json!({"type": self.anthropic_type(), "message": self.message});
        if let Some(details) = &self.details {
            error["sluice"] = details.clone();
        }
        json!({"type": "error", "error": error})
    }

    /// Renders the error for a client of `dialect`.
    pub fn into_response_for(self, dialect: Dialect) -> Response {
        let (status, body) = match dialect {
            Dialect::OpenAi => (self.status, json!({ "error": self.error_object() })),
            Dialect::Anthropic => (self.status_for(dialect), self.anthropic_body()),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: a client must never come back sooner than asked.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&after.as_millis().to_string()) {
                response.headers_mut().insert("retry-after-ms", v);
            }
        }
        response
    }

    /// Maps a failed call to the response a client of the provider would expect.
    pub fn from_call(err: &Error) -> Self {
        match err {
            Error::UnknownModel { model } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "The model `{model}` does not exist: no route, provider prefix or default upstream serves it."
                ),
            )
            .with_param(Some("model"))
            .with_code("model_not_found"),
            Error::InvalidRequest(message) => Self::invalid_request(message.clone(), None),
            Error::StreamInterrupted(e) => {
                let mut api = Self::new(StatusCode::BAD_GATEWAY, "server_error", e.to_string())
                    .with_code(ErrorClass::StreamInterrupted.metric_label());
                // The upstream's own class (an in-band overloaded_error, say) is what an
                // Anthropic client expects in its error event.
                api.class = Some(e.upstream_class.unwrap_or(ErrorClass::StreamInterrupted));
                api.details = Some(json!({
                    "class": ErrorClass::StreamInterrupted,
                    "upstream_class": e.upstream_class,
                    "interruption": e.kind.metric_label(),
                }));
                api
            }
            Error::Call(failure) => {
                let class = failure.class;
                let upstream_status = failure.last.status.and_then(|s| StatusCode::from_u16(s).ok());
                let status = match (class, upstream_status) {
                    (
                        ErrorClass::BadRequest
                        | ErrorClass::Auth
                        | ErrorClass::ContextLength
                        | ErrorClass::ContentPolicy,
                        Some(s),
                    ) if s.is_client_error() => s,
                    _ => class_status(class),
                };
                let attempts: Vec<Value> = failure
                    .attempts
                    .iter()
                    .map(|a| {
                        json!({
                            "target": a.target.as_ref(),
                            "attempt": a.attempt,
                            "class": a.class,
                            "status": a.status,
                            "message": a.message,
                            "retry_delay_ms": a.retry_delay.map(|d| d.as_millis() as u64),
                        })
                    })
                    .collect();
                let code = failure
                    .last
                    .provider_code
                    .clone()
                    .unwrap_or_else(|| class.metric_label().to_owned());
                Self {
                    status,
                    message: failure.to_string(),
                    openai_type: openai_type_for_class(class),
                    param: None,
                    code: Some(code),
                    // A final rate-limit failure always tells the client when to come back;
                    // without a server hint, one second is the smallest honest answer.
                    retry_after: err
                        .retry_after()
                        .or((class == ErrorClass::RateLimited).then_some(Duration::from_secs(1))),
                    details: Some(json!({
                        "class": class,
                        "reason": failure.reason.metric_label(),
                        "attempts": attempts,
                    })),
                    class: Some(class),
                }
            }
        }
    }
}

/// The status a class maps to when the upstream's own status is not passed on.
fn class_status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::RateLimited | ErrorClass::QuotaExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Auth => StatusCode::UNAUTHORIZED,
        ErrorClass::BadRequest | ErrorClass::ContextLength | ErrorClass::ContentPolicy => {
            StatusCode::BAD_REQUEST
        }
        ErrorClass::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorClass::ServerError | ErrorClass::Transport | ErrorClass::StreamInterrupted => {
            StatusCode::BAD_GATEWAY
        }
    }
}

/// OpenAI's `error.type` for a class.
fn openai_type_for_class(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimited => "rate_limit_error",
        ErrorClass::QuotaExhausted => "insufficient_quota",
        ErrorClass::Auth => "authentication_error",
        ErrorClass::BadRequest | ErrorClass::ContextLength | ErrorClass::ContentPolicy => {
            "invalid_request_error"
        }
        ErrorClass::Overloaded
        | ErrorClass::ServerError
        | ErrorClass::Timeout
        | ErrorClass::Transport
        | ErrorClass::StreamInterrupted => "server_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_for(Dialect::OpenAi)
    }
}
