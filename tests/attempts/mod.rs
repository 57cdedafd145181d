//! One upstream attempt on real sockets, for the pool and TLS contract tests: the client
//! limits they share, opening an attempt, reading it to its end, and waiting for what the
//! pool holds.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use switchback::upstream::Endpoint;
use switchback::upstream::chunk::ChunkLimits;
use switchback::upstream::client::{
    AttemptTimeouts, Call, ClientLimits, UpstreamClient, UpstreamError, UpstreamStream,
};
use switchback::upstream::tls::CaBundle;
use tokio::time::Instant;

/// Longest any condition is waited for; reaching it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Waits until `cond` holds; fails the test after [`PATIENCE`].
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Connections the client's pool keeps idle, over every upstream.
pub fn idle(client: &UpstreamClient) -> usize {
    client.pool().idle().values().sum()
}

pub const LIMITS: ClientLimits = ClientLimits {
    max_sse_line_bytes: 4096,
    max_body_bytes: 64 * 1024,
    chunks: ChunkLimits {
        max_choices: 8,
        max_tool_calls: 8,
        max_json_values: 100_000,
    },
};

/// Opens one streaming attempt against `api_base` (`http(s)://host:port/v1`).
pub async fn open(
    client: &UpstreamClient,
    api_base: &str,
    ca_bundle: Option<&CaBundle>,
) -> Result<UpstreamStream, UpstreamError> {
    open_with(client, api_base, ca_bundle, Duration::from_secs(2)).await
}

/// [`open`], with `stream_timeout` as its first-byte, first-chunk and idle timeout (the
/// attempt's deadline twice that).
pub async fn open_with(
    client: &UpstreamClient,
    api_base: &str,
    ca_bundle: Option<&CaBundle>,
    stream_timeout: Duration,
) -> Result<UpstreamStream, UpstreamError> {
    let endpoint = Endpoint::parse(api_base).expect("api_base");
    let body = Bytes::from_static(br#"{"model":"m","messages":[],"stream":true}"#);
    client
        .open(
            Call {
                endpoint: &endpoint,
                model: "m",
                api_key: None,
                body: &body,
                request_id: 1,
                stream: true,
                ca_bundle,
            },
            AttemptTimeouts {
                stream_timeout,
                until_output: stream_timeout,
                deadline: Instant::now() + 2 * stream_timeout,
                request_deadline: Instant::now() + 2 * stream_timeout,
            },
        )
        .await
}

/// Opens one attempt and reads it to its end: the text, or why it failed.
pub async fn call(
    client: &UpstreamClient,
    api_base: &str,
    ca_bundle: Option<&CaBundle>,
) -> Result<String, UpstreamError> {
    let mut stream = open(client, api_base, ca_bundle).await?;
    let mut text = String::new();
    while let Some(chunk) = stream.next().await? {
        text.push_str(&chunk.text);
    }
    Ok(text)
}

/// The length of the first whole request in `buf` (its head, then `content-length` bytes of
/// body), once all of it has arrived: what a scripted upstream reads before it answers.
pub fn whole_request(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let whole = end + 4 + body;
    (buf.len() >= whole).then_some(whole)
}
