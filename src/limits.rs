//! Every bound the engine enforces, in one place, each with a name and a default.
//!
//! Owns: the `limits:` section of the gateway config and its defaults. Does not own where a
//! limit is enforced (each module checks its own) nor the typed error raised when one is
//! exceeded ([`LimitExceeded`] names the limit so a log line says which knob to turn).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Named bounds. A missing field takes its default, so `limits: {}` is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body a client may send, in bytes.
    pub max_request_body_bytes: usize,
    /// Bytes of an upstream stream held back before commit (role-only or empty chunks)
    /// before the engine commits anyway.
    pub max_precommit_buffer_bytes: usize,
    /// Hard ceiling for any `max_fallbacks` setting, whoever sets it.
    pub max_fallbacks_ceiling: u32,
    /// Hard ceiling for any retry count (`num_retries`, `retry_policy`), whoever sets it.
    pub max_retries_ceiling: u32,
    /// Upstream attempts one request may make, across all groups.
    pub max_attempts: u32,
    /// Seconds one request may take from admission to its last byte, across all attempts.
    pub request_deadline: f64,
    /// Longest SSE line accepted from an upstream, in bytes.
    pub max_sse_line_bytes: usize,
    /// Largest upstream response (JSON body, or aggregated stream content), in bytes.
    pub max_upstream_body_bytes: usize,
    /// Longest Retry-After the engine will wait for before retrying the same group, in
    /// seconds; a longer one makes the group fall back instead.
    pub max_retry_after: f64,
    /// Seconds a client has to send its request headers.
    pub header_read_timeout: f64,
    /// Seconds a client has to send its request body.
    pub body_read_timeout: f64,
    /// Connections the gateway serves at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// SSE frames buffered between the attempt loop and a slow streaming client.
    pub stream_buffer_frames: usize,
    /// Messages in one request.
    pub max_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body_bytes: 1024 * 1024,
            max_precommit_buffer_bytes: 16 * 1024,
            max_fallbacks_ceiling: 16,
            max_retries_ceiling: 10,
            max_attempts: 32,
            request_deadline: 600.0,
            max_sse_line_bytes: 256 * 1024,
            max_upstream_body_bytes: 16 * 1024 * 1024,
            max_retry_after: 30.0,
            header_read_timeout: 10.0,
            body_read_timeout: 30.0,
            max_connections: 4096,
            stream_buffer_frames: 64,
            max_messages: 4096,
        }
    }
}

impl Limits {
    pub fn request_deadline(&self) -> Duration {
        secs(self.request_deadline)
    }
    pub fn max_retry_after(&self) -> Duration {
        secs(self.max_retry_after)
    }
    pub fn header_read_timeout(&self) -> Duration {
        secs(self.header_read_timeout)
    }
    pub fn body_read_timeout(&self) -> Duration {
        secs(self.body_read_timeout)
    }
}

/// Converts validated seconds to a duration. Validation (in `config`) guarantees the value
/// is finite and within [`MAX_SECONDS`]; a violation here is a bug.
pub(crate) fn secs(value: f64) -> Duration {
    assert!(
        value.is_finite() && (0.0..=MAX_SECONDS).contains(&value),
        "unvalidated seconds value {value}"
    );
    Duration::from_secs_f64(value)
}

/// Largest number of seconds any setting may hold (one day).
pub const MAX_SECONDS: f64 = 86_400.0;

/// A request or response went past a named limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit `{name}` exceeded: {detail}")]
pub struct LimitExceeded {
    pub name: &'static str,
    pub detail: String,
}

impl LimitExceeded {
    pub fn new(name: &'static str, detail: impl Into<String>) -> Self {
        LimitExceeded {
            name,
            detail: detail.into(),
        }
    }
}
