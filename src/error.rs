//! The errors a client sees, OpenAI-shaped: `{"error": {"message", "type", "code", "param"}}`.
//!
//! Owns: the [`ApiError`] value (status + body) and its constructors for admission failures
//! and for a request whose every attempt failed. Does not own when they happen.

use bytes::Bytes;
use serde_json::json;

use crate::classify::Failure;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub error_type: &'static str,
    /// One of the gateway's own codes (a closed vocabulary), never upstream text.
    pub code: Option<&'static str>,
    pub param: Option<String>,
    /// Sent as `retry-after` (whole seconds, rounded up) when the last failure carried one.
    pub retry_after: Option<std::time::Duration>,
    /// The named limit that refused the request (`max_messages`, ...), for the refusal's
    /// access line and metrics; not sent.
    pub limit: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, error_type: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            error_type,
            code: None,
            param: None,
            retry_after: None,
            limit: None,
        }
    }

    pub fn limit(mut self, limit: Option<&'static str>) -> ApiError {
        self.limit = limit;
        self
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn param(mut self, param: Option<String>) -> ApiError {
        self.param = param;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, "authentication_error", message).code("invalid_api_key")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "permission_error", message).code("model_not_allowed")
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found_error", message)
    }

    /// The final failure of a request, with `summary` (what was tried) appended.
    pub fn from_failure(failure: &Failure, summary: &str) -> ApiError {
        let mut e = ApiError::new(
            failure.client_status(),
            failure.client_error_type(),
            format!("{} ({summary})", failure.message),
        );
        e.code = failure.client_error_code();
        e.retry_after = failure.retry_after;
        // The field of the client's request the upstream named, for an error about the
        // request (a 4xx the client sees as its own); never for the gateway's own statuses.
        if (400..500).contains(&e.status) {
            e.param.clone_from(&failure.param);
        }
        e
    }

    /// `{"error": {...}}`.
    pub fn body_json(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        })
    }

    pub fn body(&self) -> Bytes {
        Bytes::from(self.body_json().to_string())
    }
}
