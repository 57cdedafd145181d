//! Every bound the engine enforces, in one place, each with a name and a default.
//!
//! Owns: the `limits:` section of the gateway config and its defaults. Does not own where a
//! limit is enforced (each module checks its own) nor the typed error raised when one is
//! exceeded ([`LimitExceeded`] names the limit so a log line says which knob to turn).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Named bounds. A missing field takes its default, so `limits: {}` is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body a client may send, in bytes.
    pub max_request_body_bytes: usize,
    /// Bytes of a refused request's body (a 413, a 401, a 408) read and thrown away after
    /// its error is sent, so that a client that sends its whole body before it reads (the
    /// SDKs) gets the error rather than a reset connection; past it, the connection is
    /// dropped. 0 drops it at once.
    pub max_discarded_request_body_bytes: usize,
    /// Bytes of request bodies the whole gateway holds at once, across every connection
    /// and worker: a request takes its body's bytes from this budget as they arrive, never
    /// as declared (a client that declares 50 MiB and sends nothing holds nothing), and
    /// gives them back when the request ends (a stream when its last byte is sent). A body
    /// whose next bytes do not fit gets a 503 naming this limit at once, never a place in
    /// a queue. `max_request_body_bytes` bounds one request, not the gateway: 4,096
    /// connections of 50 MiB each, with no key under `allow_anonymous`, is 200 GiB, and a
    /// body is held, parsed and copied for each upstream attempt, about 2.5 times its size
    /// (8 uploads of 40 MiB to a stalling upstream took 852 MB). The default is five
    /// bodies of the largest size at once (about 650 MB of memory at that ratio), or 4,096
    /// connections of 64 KiB, far more than an ordinary chat request; it must be at least
    /// `max_request_body_bytes`, so that any one request can be served. Once parsed, a
    /// request holds the larger of its bytes and its JSON values at
    /// `request::PARSED_VALUE_BYTES` each.
    pub max_in_flight_request_body_bytes: usize,
    /// Bytes of an upstream stream held back before commit (role-only or empty chunks)
    /// before the engine commits anyway; and bytes of a continuation held at its seam
    /// while its text may complete a stop sequence (`seam`), before they are delivered as
    /// sent, the seam unguarded.
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
    /// Largest upstream response (JSON body, or aggregated stream content), in bytes: every
    /// byte but a running copy of the message beside a delta (Perplexity's), which grows
    /// with the square of the answer's length (see `Chunk::running_copy_bytes`).
    pub max_upstream_body_bytes: usize,
    /// Longest Retry-After the engine will wait for before retrying the same group, in
    /// seconds; a longer one makes the group fall back instead.
    pub max_retry_after: f64,
    /// Seconds a client has to send its request headers.
    pub header_read_timeout: f64,
    /// Seconds a client's request body may fall behind `min_request_body_bytes_per_second`:
    /// a body may take this long plus one second for every that many bytes received (a
    /// body too slow for it gets a 408), never to more than this long after the bytes
    /// that moved it (what a body is ahead of the rate is banked this long at most). With
    /// no byte received, it is the time the body has.
    pub body_read_timeout: f64,
    /// The slowest upload a client may keep up, in bytes a second of its request body
    /// (see `body_read_timeout`), as Apache's `mod_reqtimeout` `MinRate`: a deadline on
    /// the whole body would give a 50 MiB vision upload on an ordinary uplink a 408, while
    /// a deadline that grows only with the bytes received lets no client hold a connection
    /// without sending (at most `body_read_timeout` plus `max_request_body_bytes` at this
    /// rate, some 54 minutes of a steady 128 kbit/s for the defaults). The rest of a
    /// refused body is read and thrown away under the same rule. 0: the deadline does not
    /// grow.
    pub min_request_body_bytes_per_second: usize,
    /// Seconds the rest of a body that came too slowly (a 408) is still read and thrown
    /// away after the 408 is sent (up to `max_discarded_request_body_bytes`), so that a
    /// client that finishes its upload soon after, as the SDKs do before they read, gets
    /// the 408 rather than a connection closed under its writes. 0 closes it at once.
    pub body_timeout_grace: f64,
    /// Connections the gateway serves at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// SSE frames buffered between the attempt loop and a slow streaming client.
    pub stream_buffer_frames: usize,
    /// Messages in one request.
    pub max_messages: usize,
    /// Longest model name a request may give, in bytes: its `model`, the deployment an
    /// Azure-style path names, and every name in its fallback lists. A name is matched
    /// against wildcard groups and allow-lists (a character, 4 bytes, at a time), sent
    /// upstream and repeated in errors, so a 40 MiB `openai/AAA...` took one request from
    /// 28 MB to 484 MB and went upstream whole. Provider model names
    /// (`vertex_ai/gemini-2.5-flash-preview-05-20`) are tens of bytes, and Azure deployment
    /// names short labels an operator picks: 256 leaves room for any of them with a prefix.
    pub max_model_name_bytes: usize,
    /// JSON values in one request body (every object, array, string, number, boolean and
    /// null counts one). A value takes about 80 bytes in memory where its text may take two
    /// (`0,`), so `max_request_body_bytes` alone does not bound a request's memory: 50 MiB
    /// of zeros in an array would be 2 GiB. A long conversation with many tools is tens of
    /// thousands of values; images are one string each.
    pub max_request_json_values: usize,
    /// JSON values in one upstream answer: one JSON completion (a `fake_stream`
    /// deployment's, or one that ignored `stream: true`), or all of a streamed answer's
    /// chunks together, from which a non-streaming client's answer is merged; more is a
    /// malformed answer, in both modes alike. The same reason as `max_request_json_values`: `max_upstream_body_bytes` of `0,` would be
    /// 640 MB of values. A 4,096-token answer with 20 `top_logprobs` per token is about
    /// 430,000.
    pub max_upstream_json_values: usize,
    /// Longest any deployment is cooled, in seconds, whatever a Retry-After asks (a date in
    /// the year 9999 included); also the largest `retry-after` a client is told.
    pub max_cooldown: f64,
    /// Choices one answer may carry (the highest `index` + 1); more is a malformed answer.
    pub max_choices: usize,
    /// Tool calls one choice may carry; more is a malformed answer.
    pub max_tool_calls: usize,
    /// Seconds a streaming client may take to accept the next frame before it is dropped
    /// (a client that stops reading must not hold its upstream connection for ever).
    pub client_write_timeout: f64,
    /// Bytes of SSE frames buffered between the attempt loop and a slow streaming client.
    pub stream_buffer_bytes: usize,
    /// Seconds a stream that has begun may go without a byte while the gateway waits on its
    /// own account (a backoff or Retry-After before the next attempt, a continuation's
    /// connect and first byte, a continuation's text held at its seam) before it writes an
    /// SSE comment (`: keep-alive`, which SSE clients and both official SDKs skip); also at
    /// most half the read timeout a client advertises (`x-stainless-read-timeout`); never
    /// below 1 s (`delivery::MIN_KEEP_ALIVE`), whatever either says.
    /// openai-python's read timeout bounds every read, so without it a client gave up
    /// mid-stream where the gateway would have finished. A provider's own silence mid-answer
    /// is passed on as it is; a provider that keeps its stream alive with comments keeps its
    /// client alive too, one comment at most each time it talks. 0 turns it off.
    pub stream_keep_alive: f64,
    /// Connections accepted past `max_connections` only to be told 503 (or served
    /// `/health`); past this many more, a connection is closed at once.
    pub max_overflow_connections: usize,
    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT before the gateway
    /// exits anyway.
    pub shutdown_grace: f64,
    /// Items in each of a request body's fallback lists: `fallbacks` (names, `{model,
    /// messages}` objects or `{group: [...]}` entries), `context_window_fallbacks`,
    /// `content_policy_fallbacks` and `default_fallbacks`, and targets in each `{group:
    /// [...]}` entry's list. Each entry's own `messages` are bounded by `max_messages`.
    pub max_request_fallbacks: usize,
    /// Idle upstream connections kept per (scheme, host, port) for the next attempt (split
    /// evenly across the worker threads of `switchback serve`); 0 turns keep-alive off
    /// (every attempt opens its own connection).
    pub max_idle_upstream_connections_per_host: usize,
    /// Seconds an upstream connection may stay idle before it is closed. Below the 5 s
    /// keep-alive of uvicorn (vLLM, LiteLLM) and most servers, so that the gateway closes an
    /// idle connection before the upstream does, and never sends on one the upstream is
    /// closing (a request that may have been sent is never re-sent). An upstream that
    /// announces a shorter `Keep-Alive: timeout=` has its connections closed a second
    /// before that.
    pub upstream_pool_idle_timeout: f64,
    /// Requests one HTTP/2 upstream connection carries at once, as streams (fewer when the
    /// upstream's `SETTINGS_MAX_CONCURRENT_STREAMS` says so); when every connection to an
    /// upstream is that busy, the next request opens another. A positive value offers
    /// HTTP/2 to `https` upstreams, by ALPN (100 is what most servers announce); 0, the
    /// default, offers HTTP/1.1 alone. Off by default because, measured on loopback at 2,000
    /// requests per second, one multiplexed connection added about 1.45x the latency of the
    /// kept HTTP/1.1 connections (every frame of every stream goes through one connection
    /// task on each side), and the HTTP/1.1 pool already saves the handshakes.
    pub max_streams_per_upstream_http2_connection: usize,
    /// Seconds between PINGs on each HTTP/2 connection to an upstream (with HTTP/2 on),
    /// carrying streams or not; a PING unanswered for as long closes the connection. A
    /// connection that died without a word (a NAT that dropped it, a host that vanished)
    /// then leaves the pool, where it would otherwise take every stream it is given until
    /// each times out. 0 sends none.
    pub upstream_http2_keep_alive: f64,
    /// Seconds an upstream host name's DNS answer is reused for new connections; 0 looks
    /// it up for every connection.
    pub dns_cache_ttl: f64,
    /// Host names whose DNS answers are kept at once.
    pub max_dns_cache_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // OpenAI takes up to 50 MB per request (images as base64 data URLs).
            max_request_body_bytes: 50 * 1024 * 1024,
            max_discarded_request_body_bytes: 64 * 1024 * 1024,
            // Five 50 MiB bodies, or 4,096 connections of 64 KiB (see the field).
            max_in_flight_request_body_bytes: 256 * 1024 * 1024,
            max_precommit_buffer_bytes: 16 * 1024,
            max_fallbacks_ceiling: 16,
            max_retries_ceiling: 10,
            max_attempts: 32,
            request_deadline: 600.0,
            // Gemini's OpenAI endpoint sends a tool call whole in one event: an agent's
            // file write is as long as the file.
            max_sse_line_bytes: 4 * 1024 * 1024,
            // gpt-5's 128,000 output tokens streamed are about 32 MB of chunks.
            max_upstream_body_bytes: 64 * 1024 * 1024,
            max_retry_after: 30.0,
            header_read_timeout: 10.0,
            body_read_timeout: 30.0,
            // 128 kbit/s: a 50 MiB body on any uplink faster than that is read whole.
            min_request_body_bytes_per_second: 16 * 1024,
            body_timeout_grace: 5.0,
            max_connections: 4096,
            stream_buffer_frames: 64,
            max_messages: 4096,
            max_model_name_bytes: 256,
            // About 20 MB of values at most, several times what a real request holds.
            max_request_json_values: 250_000,
            // 128,000 chunks of 16 values each (gpt-5's), with room.
            max_upstream_json_values: 4_000_000,
            max_cooldown: 300.0,
            max_choices: 128,
            max_tool_calls: 128,
            client_write_timeout: 30.0,
            stream_buffer_bytes: 256 * 1024,
            stream_keep_alive: 15.0,
            max_overflow_connections: 64,
            shutdown_grace: 30.0,
            max_request_fallbacks: 16,
            max_idle_upstream_connections_per_host: 64,
            upstream_pool_idle_timeout: 4.0,
            // HTTP/2 off (see the field).
            max_streams_per_upstream_http2_connection: 0,
            upstream_http2_keep_alive: 10.0,
            dns_cache_ttl: 30.0,
            max_dns_cache_entries: 1024,
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
    pub fn body_timeout_grace(&self) -> Duration {
        secs(self.body_timeout_grace)
    }
    pub fn max_cooldown(&self) -> Duration {
        secs(self.max_cooldown)
    }
    pub fn client_write_timeout(&self) -> Duration {
        secs(self.client_write_timeout)
    }
    /// `stream_keep_alive`, `None` when it is off.
    pub fn stream_keep_alive(&self) -> Option<Duration> {
        Some(secs(self.stream_keep_alive)).filter(|every| !every.is_zero())
    }
    pub fn shutdown_grace(&self) -> Duration {
        secs(self.shutdown_grace)
    }
    pub fn dns_cache_ttl(&self) -> Duration {
        secs(self.dns_cache_ttl)
    }

    /// The limits read once, at start (by the listener, its connections and `serve`'s DNS
    /// cache), whose values differ in `next`: a reload leaves them as they were.
    pub fn restart_only_changes(&self, next: &Limits) -> Vec<&'static str> {
        let changed = [
            (
                "header_read_timeout",
                self.header_read_timeout != next.header_read_timeout,
            ),
            (
                "max_connections",
                self.max_connections != next.max_connections,
            ),
            (
                "max_in_flight_request_body_bytes",
                self.max_in_flight_request_body_bytes != next.max_in_flight_request_body_bytes,
            ),
            (
                "client_write_timeout",
                self.client_write_timeout != next.client_write_timeout,
            ),
            (
                "max_overflow_connections",
                self.max_overflow_connections != next.max_overflow_connections,
            ),
            ("shutdown_grace", self.shutdown_grace != next.shutdown_grace),
            ("dns_cache_ttl", self.dns_cache_ttl != next.dns_cache_ttl),
            (
                "max_dns_cache_entries",
                self.max_dns_cache_entries != next.max_dns_cache_entries,
            ),
        ];
        changed
            .into_iter()
            .filter_map(|(name, differs)| differs.then_some(name))
            .collect()
    }
    pub fn upstream_pool(&self) -> crate::upstream::pool::PoolLimits {
        crate::upstream::pool::PoolLimits {
            max_idle_per_host: self.max_idle_upstream_connections_per_host,
            idle_timeout: secs(self.upstream_pool_idle_timeout),
            max_http2_streams: self.max_streams_per_upstream_http2_connection,
            http2_keep_alive: Some(secs(self.upstream_http2_keep_alive))
                .filter(|every| !every.is_zero()),
        }
    }

    /// Every count limit with the range it must lie in. The upper bounds keep each value
    /// within what the structures that use it accept (a semaphore's permits, a channel's
    /// capacity) and what one process could ever need, so no value can panic at run time.
    pub fn counts(&self) -> [(&'static str, usize, usize, usize); 24] {
        const GIB: usize = 1 << 30;
        [
            (
                "max_request_body_bytes",
                self.max_request_body_bytes,
                1,
                GIB,
            ),
            (
                "max_discarded_request_body_bytes",
                self.max_discarded_request_body_bytes,
                0,
                4 * GIB,
            ),
            (
                "max_in_flight_request_body_bytes",
                self.max_in_flight_request_body_bytes,
                1,
                64 * GIB,
            ),
            (
                "max_precommit_buffer_bytes",
                self.max_precommit_buffer_bytes,
                1,
                64 << 20,
            ),
            (
                "max_fallbacks_ceiling",
                self.max_fallbacks_ceiling as usize,
                0,
                1_000,
            ),
            (
                "max_retries_ceiling",
                self.max_retries_ceiling as usize,
                0,
                1_000,
            ),
            ("max_attempts", self.max_attempts as usize, 1, 10_000),
            ("max_sse_line_bytes", self.max_sse_line_bytes, 1, GIB),
            (
                "max_upstream_body_bytes",
                self.max_upstream_body_bytes,
                1,
                4 * GIB,
            ),
            ("max_connections", self.max_connections, 1, 1_000_000),
            (
                "stream_buffer_frames",
                self.stream_buffer_frames,
                1,
                1 << 16,
            ),
            (
                "min_request_body_bytes_per_second",
                self.min_request_body_bytes_per_second,
                0,
                GIB,
            ),
            ("max_messages", self.max_messages, 1, 1_000_000),
            (
                "max_model_name_bytes",
                self.max_model_name_bytes,
                1,
                1 << 20,
            ),
            (
                "max_request_json_values",
                self.max_request_json_values,
                1,
                100_000_000,
            ),
            (
                "max_upstream_json_values",
                self.max_upstream_json_values,
                1,
                100_000_000,
            ),
            ("max_choices", self.max_choices, 1, 1_024),
            ("max_tool_calls", self.max_tool_calls, 1, 4_096),
            ("stream_buffer_bytes", self.stream_buffer_bytes, 1, GIB),
            (
                "max_overflow_connections",
                self.max_overflow_connections,
                0,
                100_000,
            ),
            (
                "max_request_fallbacks",
                self.max_request_fallbacks,
                0,
                1_000,
            ),
            (
                "max_idle_upstream_connections_per_host",
                self.max_idle_upstream_connections_per_host,
                0,
                100_000,
            ),
            (
                "max_streams_per_upstream_http2_connection",
                self.max_streams_per_upstream_http2_connection,
                0,
                // Well within HTTP/2's stream ids (2^31), and more than any server allows.
                1_000_000,
            ),
            (
                "max_dns_cache_entries",
                self.max_dns_cache_entries,
                0,
                1_000_000,
            ),
        ]
    }

    /// Every seconds limit, and whether zero is allowed (zero means "never wait" for the
    /// ones that allow it; a zero deadline or read timeout would refuse every request).
    pub fn seconds(&self) -> [(&'static str, f64, bool); 12] {
        [
            ("request_deadline", self.request_deadline, false),
            ("max_retry_after", self.max_retry_after, true),
            ("header_read_timeout", self.header_read_timeout, false),
            ("body_read_timeout", self.body_read_timeout, false),
            ("body_timeout_grace", self.body_timeout_grace, true),
            ("max_cooldown", self.max_cooldown, true),
            ("client_write_timeout", self.client_write_timeout, false),
            ("stream_keep_alive", self.stream_keep_alive, true),
            ("shutdown_grace", self.shutdown_grace, true),
            (
                "upstream_pool_idle_timeout",
                self.upstream_pool_idle_timeout,
                false,
            ),
            (
                "upstream_http2_keep_alive",
                self.upstream_http2_keep_alive,
                true,
            ),
            ("dns_cache_ttl", self.dns_cache_ttl, true),
        ]
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

/// Smallest number of seconds a duration that must not be zero may hold (one millisecond):
/// any less would round to nothing, or next to it, on the way to a timer.
pub const MIN_NONZERO_SECONDS: f64 = 0.001;

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
