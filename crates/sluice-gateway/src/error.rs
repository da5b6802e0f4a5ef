//! Errors as the caller's dialect expects them: OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` with a matching HTTP status.
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

/// An error response in OpenAI's format.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<String>,
    retry_after: Option<Duration>,
    details: Option<Value>,
}

impl ApiError {
    /// A 400 `invalid_request_error` about the caller's own request.
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param)
    }

    /// An error with an explicit status and type.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
            details: None,
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

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body's `error` object (also used for in-band stream errors).
    pub fn error_object(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            error["sluice"] = details.clone();
        }
        error
    }

    /// Maps a failed call to the response a client of the provider would expect.
    pub fn from_call(err: &Error) -> Self {
        match err {
            Error::UnknownModel { model } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist: no route, provider prefix or default upstream serves it."),
            )
            .with_param(Some("model"))
            .with_code("model_not_found"),
            Error::InvalidRequest(message) => Self::invalid_request(message.clone(), None),
            Error::StreamInterrupted(e) => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                e.to_string(),
            )
            .with_code(ErrorClass::StreamInterrupted.metric_label()),
            Error::Call(failure) => {
                let class = failure.class;
                let upstream_status = failure.last.status.and_then(|s| StatusCode::from_u16(s).ok());
                let status = match (class, upstream_status) {
                    (ErrorClass::BadRequest | ErrorClass::Auth | ErrorClass::ContextLength | ErrorClass::ContentPolicy, Some(s))
                        if s.is_client_error() => s,
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
                    kind: class_type(class),
                    param: None,
                    code: Some(code),
                    // A final rate-limit failure always tells the client when to come back; without
                    // a server hint, one second is the smallest honest answer.
                    retry_after: err.retry_after().or(
                        (class == ErrorClass::RateLimited).then_some(Duration::from_secs(1)),
                    ),
                    details: Some(json!({
                        "class": class,
                        "reason": failure.reason.metric_label(),
                        "attempts": attempts,
                    })),
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
fn class_type(class: ErrorClass) -> &'static str {
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
        let mut response =
            (self.status, Json(json!({ "error": self.error_object() }))).into_response();
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
}
