//! The errors a client sees, OpenAI-shaped: `{"error": {"message", "type", "code", "param"}}`.
//!
//! Owns: the [`ApiError`] value (status + body) and its constructors for admission failures
//! and for a request whose every attempt failed, and how a message repeats a name the
//! client gave ([`echoed`]). Does not own when they happen.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::json;

use crate::classify::Failure;

/// The most of a client's name (a model, a deployment, a path) an error message repeats, in
/// bytes: enough to recognise any real name, where repeating the whole of one as long as a
/// request may carry would make every error as large as the request.
pub const MAX_ECHOED_NAME_BYTES: usize = 256;

/// `name` as an error message repeats it: whole when short, else its start, cut at a
/// character boundary (a byte offset inside a character would panic a slice) within
/// [`MAX_ECHOED_NAME_BYTES`], and `…` to say it was cut.
pub fn echoed(name: &str) -> Cow<'_, str> {
    if name.len() <= MAX_ECHOED_NAME_BYTES {
        return Cow::Borrowed(name);
    }
    let mut end = MAX_ECHOED_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &name[..end]))
}

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

/// A body that could not be parsed: a 400 naming its field, and its limit if that is what
/// it is over.
impl From<crate::request::BadRequest> for ApiError {
    fn from(e: crate::request::BadRequest) -> ApiError {
        ApiError::bad_request(e.message)
            .param(e.param)
            .limit(e.limit)
    }
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

    /// OpenAI's own 401, 403 and 404 all say `invalid_request_error` (an unknown key:
    /// code `invalid_api_key`; a model it does not serve: `model_not_found`; an unknown
    /// route: "Invalid URL"). These said Anthropic's names (`authentication_error`,
    /// `permission_error`, `not_found_error`): the SDKs map on the status alike, but a
    /// client that branches on `type` read another provider's error.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, "invalid_request_error", message).code("invalid_api_key")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::permission(message).code("model_not_allowed")
    }

    /// A 403 for a key that may not do this: one `type` for every such refusal, a model's
    /// or a route's, so that a client handles them alike.
    pub fn permission(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "invalid_request_error", message)
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
        // The gateway's own overload passes: a client may try again in a second, as over
        // `max_connections`.
        if e.overloaded() {
            e.retry_after
                .get_or_insert(std::time::Duration::from_secs(1));
        }
        // The field of the client's request the upstream named, for an error about the
        // request (a 4xx the client sees as its own); never for the gateway's own statuses.
        if (400..500).contains(&e.status) {
            e.param.clone_from(&failure.param);
        }
        e
    }

    /// The gateway ran out of its own resources: no upstream is to blame, and a retry
    /// later may well be served (see [`crate::classify::GATEWAY_OVERLOADED`]).
    pub fn overloaded(&self) -> bool {
        self.code == Some(crate::classify::GATEWAY_OVERLOADED)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_at_a_character_boundary() {
        assert_eq!(echoed("gpt-4o"), "gpt-4o");
        let at_bound = "a".repeat(MAX_ECHOED_NAME_BYTES);
        assert_eq!(echoed(&at_bound), at_bound.as_str());
        // One ASCII byte, then characters of 2, 3 and 4 bytes: the bound falls inside one
        // of them wherever it is.
        for wide in ["é", "€", "🦀"] {
            let name = format!("x{}", wide.repeat(MAX_ECHOED_NAME_BYTES));
            let shown = echoed(&name);
            let kept = shown.strip_suffix('…').expect("marked as cut");
            assert!(name.starts_with(kept), "{wide}");
            assert!(
                kept.len() <= MAX_ECHOED_NAME_BYTES
                    && kept.len() > MAX_ECHOED_NAME_BYTES - wide.len(),
                "{wide}: {}",
                kept.len()
            );
        }
    }
}
