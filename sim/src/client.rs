//! The scripted client: sends one chat request and records what a client sees.
//!
//! Owns: building the request body from a scenario request, sending it over any
//! [`Connector`] (turmoil or tokio TCP), and recording status, every response header, every
//! SSE chunk (time, `model`, choice 0's text, the payload as it came), the metadata event,
//! an error event, `[DONE]`, the body of a non-stream answer as it came, and the final text
//! and model. Acts out the hostile clients of a scenario: one that disconnects after k
//! chunks or after a time, and one that stops reading and holds its connection. Does not
//! judge anything (`oracle`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use switchback::transport::Connector;

use crate::scenario::{Disconnect, Mode, RequestSpec, StopReading};
use crate::sdk_stream::{SdkEvent, SdkReads, SdkStreamReader};
use crate::trace::TraceSink;

/// Largest response body the client reads.
pub const MAX_CLIENT_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest SSE event the client reads (the SDKs have no bound; the harness must).
pub const MAX_CLIENT_EVENT_BYTES: usize = 1024 * 1024;

/// Largest stream the client reads, in bytes: every chunk it keeps holds its raw text, so
/// a gateway that floods must not grow the harness (or `probe`) without bound until its
/// timeout. Above the gateway's own `max_upstream_body_bytes` default (64 MiB) with room
/// for the fields it stamps on each chunk.
pub const MAX_CLIENT_STREAM_BYTES: usize = 128 * 1024 * 1024;

/// One chunk as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenChunk {
    pub at_ms: u64,
    pub model: Option<String>,
    /// Choice 0's `content` in this chunk.
    pub text: String,
    /// The `data:` payload exactly as it came.
    pub raw: String,
}

/// An error as the client saw it: a JSON error response, or an SSE error event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenError {
    pub status: u16,
    pub error_type: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientResult {
    /// Index of the request in the scenario and the copy number.
    pub index: usize,
    pub copy: u32,
    pub status: Option<u16>,
    /// Headers that report what the gateway did (`x-switchback-*`, `x-litellm-*`).
    pub headers: BTreeMap<String, String>,
    /// Every response header, by (lowercase) name; repeated headers joined with `, `.
    pub response_headers: BTreeMap<String, String>,
    pub chunks: Vec<SeenChunk>,
    /// The body of a non-stream answer (or of an error response) exactly as it came.
    pub body: Option<String>,
    pub text: String,
    /// The response's `model` (non-stream) or the last chunk's (stream).
    pub model: Option<String>,
    pub error: Option<SeenError>,
    /// Every stream event that was not a chunk or `[DONE]` (an error event, a broken one),
    /// as its data came: whatever the SDKs keep of it, all of it is the client's to read,
    /// and the secrecy check reads all of it (`error.param`, `error.metadata`, ...).
    pub other_events: Vec<String>,
    /// The stream ended with `[DONE]`.
    pub done: bool,
    /// The stream's final metadata event (`switchback` field), if any.
    pub meta: Option<Value>,
    /// The request did not complete as HTTP: connect error, reset, client timeout.
    pub broken: Option<String>,
    /// The scripted client left on purpose (disconnected, or stopped reading): how.
    pub left: Option<String>,
}

impl ClientResult {
    /// The gateway's request number, from `x-switchback-request-id`.
    pub fn request_id(&self) -> Option<u64> {
        self.headers
            .get("x-switchback-request-id")
            .and_then(|v| v.parse().ok())
    }

    /// Retries and fallbacks as the client can tell: the metadata event's totals if the
    /// stream sent one, else the response headers.
    pub fn counts(&self) -> (Option<u32>, Option<u32>) {
        let from_meta = |k: &str| {
            self.meta
                .as_ref()
                .and_then(|m| m.get(k))
                .and_then(Value::as_u64)
                .map(|n| n as u32)
        };
        let from_header = |k: &str| self.headers.get(k).and_then(|v| v.parse().ok());
        (
            from_meta("attempted_retries")
                .or_else(|| from_header("x-switchback-attempted-retries")),
            from_meta("attempted_fallbacks")
                .or_else(|| from_header("x-switchback-attempted-fallbacks")),
        )
    }

    pub fn succeeded(&self) -> bool {
        self.status == Some(200)
            && self.error.is_none()
            && self.broken.is_none()
            && self.left.is_none()
    }
}

/// The JSON body of a scenario request in `mode`.
pub fn body(spec: &RequestSpec, mode: Mode) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(spec.model.clone()));
    body.insert("messages".into(), Value::Array(spec.messages.clone()));
    for (k, v) in &spec.body {
        body.insert(k.clone(), v.clone());
    }
    body.insert("stream".into(), Value::Bool(mode.is_stream()));
    Value::Object(body)
}

/// Where the gateway is and how to reach it.
#[derive(Clone)]
pub struct Target {
    pub connector: Arc<dyn Connector>,
    pub host: String,
    pub port: u16,
    /// Path prefix before `/chat/completions` (default `/v1`).
    pub base_path: String,
}

/// A clock for trace and chunk times: simulated in the world, real in live mode.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Sends every request of a scenario on its schedule (`at_ms`, `repeat`, `concurrency`) and
/// returns the results ordered by (request index, copy), however they interleaved.
pub async fn run_requests(
    target: &Target,
    requests: &[RequestSpec],
    sequential: bool,
    mode: Mode,
    sink: Arc<dyn TraceSink>,
    clock: Clock,
) -> Vec<ClientResult> {
    if sequential {
        // One after another, and none before its `at_ms`: a later request that relies on a
        // cooldown having run out is not sent early because the ones before it were quick.
        let start = tokio::time::Instant::now();
        let mut results = Vec::new();
        for (index, spec) in requests.iter().enumerate() {
            tokio::time::sleep_until(start + Duration::from_millis(spec.at_ms)).await;
            for copy in 0..spec.repeat {
                let r = send_spec(
                    target,
                    spec,
                    index,
                    copy,
                    mode,
                    spec.key.as_deref(),
                    sink.as_ref(),
                    clock.as_ref(),
                )
                .await;
                results.push(r);
            }
        }
        return results;
    }
    let start = tokio::time::Instant::now();
    let results: Arc<std::sync::Mutex<Vec<ClientResult>>> = Arc::default();
    let mut tasks = Vec::new();
    for (index, spec) in requests.iter().enumerate() {
        let permits = Arc::new(tokio::sync::Semaphore::new(spec.concurrency as usize));
        for copy in 0..spec.repeat {
            let (target, sink, results, permits, spec, clock) = (
                target.clone(),
                sink.clone(),
                results.clone(),
                permits.clone(),
                spec.clone(),
                clock.clone(),
            );
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_millis(spec.at_ms)).await;
                let _permit = permits.acquire_owned().await.expect("never closed");
                let r = send_spec(
                    &target,
                    &spec,
                    index,
                    copy,
                    mode,
                    spec.key.as_deref(),
                    sink.as_ref(),
                    clock.as_ref(),
                )
                .await;
                results.lock().expect("results").push(r);
            }));
        }
    }
    for t in tasks {
        // A panicking request task is a harness bug: surface it.
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let mut results = std::mem::take(&mut *results.lock().expect("results"));
    results.sort_by_key(|r| (r.index, r.copy));
    results
}

/// Sends copy `copy` of scenario request `index` in `mode`, with `key`, labelled `rI.C`.
#[allow(clippy::too_many_arguments)]
pub async fn send_spec(
    target: &Target,
    spec: &RequestSpec,
    index: usize,
    copy: u32,
    mode: Mode,
    key: Option<&str>,
    sink: &dyn TraceSink,
    clock: &(dyn Fn() -> Duration + Send + Sync),
) -> ClientResult {
    let label = format!("r{index}.{copy}");
    let timeout = Duration::from_millis(spec.timeout_ms);
    let hostile = Hostile {
        disconnect: spec.disconnect.clone(),
        stop_reading: spec.stop_reading.clone(),
    };
    let mut r = send_as(
        target,
        key,
        &body(spec, mode),
        timeout,
        &hostile,
        sink,
        clock,
        &label,
    )
    .await;
    r.index = index;
    r.copy = copy;
    r
}

/// How a scripted client misbehaves (nothing, by default).
#[derive(Debug, Clone, Default)]
pub struct Hostile {
    pub disconnect: Option<Disconnect>,
    pub stop_reading: Option<StopReading>,
}

/// Sends one request and records what comes back. Never panics on what the gateway sends.
pub async fn send(
    target: &Target,
    key: Option<&str>,
    body: &Value,
    timeout: Duration,
    sink: &dyn TraceSink,
    clock: &(dyn Fn() -> Duration + Send + Sync),
    label: &str,
) -> ClientResult {
    send_as(
        target,
        key,
        body,
        timeout,
        &Hostile::default(),
        sink,
        clock,
        label,
    )
    .await
}

/// [`send`], by a client that may misbehave as `hostile` says.
#[allow(clippy::too_many_arguments)]
pub async fn send_as(
    target: &Target,
    key: Option<&str>,
    body: &Value,
    timeout: Duration,
    hostile: &Hostile,
    sink: &dyn TraceSink,
    clock: &(dyn Fn() -> Duration + Send + Sync),
    label: &str,
) -> ClientResult {
    let mut result = ClientResult::default();
    sink.line(
        "client",
        format!(
            "{label} send stream={}",
            body.get("stream").and_then(Value::as_bool).unwrap_or(false)
        ),
    );
    let leave_at = hostile
        .disconnect
        .as_ref()
        .and_then(|d| d.after_ms)
        .map(Duration::from_millis)
        .filter(|t| *t < timeout);
    let run = exchange(target, key, body, hostile, sink, clock, label, &mut result);
    if tokio::time::timeout(leave_at.unwrap_or(timeout), run)
        .await
        .is_err()
    {
        match leave_at {
            Some(t) => {
                result.left = Some(format!("disconnected after {} ms", t.as_millis()));
            }
            None => {
                result.broken = Some(format!(
                    "no complete answer within {} ms",
                    timeout.as_millis()
                ));
            }
        }
    }
    let outcome = match (&result.left, &result.broken, &result.error) {
        (Some(l), _, _) => format!("left ({l})"),
        (None, Some(b), _) => format!("broken ({b})"),
        (None, None, Some(e)) => format!("error status={} type={}", e.status, e.error_type),
        (None, None, None) => format!(
            "ok model={} done={}",
            result.model.as_deref().unwrap_or("-"),
            result.done
        ),
    };
    sink.line(
        "client",
        format!(
            "{label} end status={} {outcome}",
            result.status.map_or("-".into(), |s| s.to_string())
        ),
    );
    result
}

/// Aborts the connection's task when the exchange ends, however it ends (a client that
/// gives up or leaves closes its connection).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    target: &Target,
    key: Option<&str>,
    body_sent: &Value,
    hostile: &Hostile,
    sink: &dyn TraceSink,
    clock: &(dyn Fn() -> Duration + Send + Sync),
    label: &str,
    result: &mut ClientResult,
) {
    let io = match target.connector.connect(&target.host, target.port).await {
        Ok(io) => io,
        Err(e) => {
            result.broken = Some(format!("connect: {e}"));
            return;
        }
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(io)).await {
            Ok(pair) => pair,
            Err(e) => {
                result.broken = Some(format!("handshake: {e}"));
                return;
            }
        };
    let conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut request = Request::post(format!("{}/chat/completions", target.base_path))
        .header(header::HOST, format!("{}:{}", target.host, target.port))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body_sent.to_string())))
        .expect("a valid request");
    if let Some(k) = key {
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {k}")) {
            request.headers_mut().insert(header::AUTHORIZATION, v);
        }
    }
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => {
            result.broken = Some(format!("request: {e}"));
            drop(conn);
            return;
        }
    };
    let status = response.status().as_u16();
    result.status = Some(status);
    for (name, value) in response.headers() {
        let n = name.as_str();
        let v = value.to_str().unwrap_or("").to_string();
        if n.starts_with("x-switchback-") || n.starts_with("x-litellm-") {
            result.headers.insert(n.to_string(), v.clone());
        }
        result
            .response_headers
            .entry(n.to_string())
            .and_modify(|all| {
                all.push_str(", ");
                all.push_str(&v);
            })
            .or_insert(v);
    }
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    sink.line(
        "client",
        format!(
            "{label} head status={status} sse={sse} retries={} fallbacks={} deployment={}",
            header_or_dash(result, "x-switchback-attempted-retries"),
            header_or_dash(result, "x-switchback-attempted-fallbacks"),
            header_or_dash(result, "x-switchback-deployment"),
        ),
    );
    // The other way round from the check at the end: an SDK that sent `stream: false`
    // parses a success's body as one JSON object, and SSE is none (openai-python raises).
    // The parser is chosen by content-type below, so without this the stream would be read
    // as if the client had asked for one.
    let asked_to_stream = body_sent.get("stream").and_then(Value::as_bool) == Some(true);
    if sse && !asked_to_stream && (200..300).contains(&status) {
        result.broken = Some(format!(
            "the gateway streamed ({status}, content-type {}) to a `stream: false` request",
            result
                .response_headers
                .get("content-type")
                .map_or("(none)", String::as_str)
        ));
        return;
    }
    let mut body = response.into_body();
    let leave_after = hostile.disconnect.as_ref().and_then(|d| d.after_chunks);
    let mut stop_after = hostile.stop_reading.as_ref().map(|s| s.after_chunks);
    if sse {
        let mut parser = SdkStreamReader::new(MAX_CLIENT_EVENT_BYTES);
        let mut events = Vec::new();
        let mut received = 0usize;
        'read: loop {
            if leave_after.is_some_and(|k| result.chunks.len() >= k) {
                result.left = Some(format!(
                    "disconnected after {} chunk(s)",
                    result.chunks.len()
                ));
                sink.line("client", format!("{label} disconnects"));
                return;
            }
            if let Some(hold) = hostile
                .stop_reading
                .as_ref()
                .filter(|_| stop_after.is_some_and(|k| result.chunks.len() >= k))
            {
                if !hold.resume {
                    result.left = Some(format!(
                        "stopped reading after {} chunk(s)",
                        result.chunks.len()
                    ));
                }
                sink.line("client", format!("{label} stops reading"));
                // Holds the connection and the unread body, reading nothing.
                tokio::time::sleep(Duration::from_millis(hold.hold_ms)).await;
                if !hold.resume {
                    return;
                }
                sink.line("client", format!("{label} reads on"));
                stop_after = None;
                continue 'read;
            }
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    result.broken = Some(format!("stream broke: {e}"));
                    break;
                }
                Some(Ok(frame)) => {
                    let Some(data) = frame.data_ref() else {
                        continue;
                    };
                    received = received.saturating_add(data.len());
                    if received > MAX_CLIENT_STREAM_BYTES {
                        result.broken = Some(format!(
                            "the stream went past the client's MAX_CLIENT_STREAM_BYTES = \
                             {MAX_CLIENT_STREAM_BYTES} bytes"
                        ));
                        break;
                    }
                    if let Err(e) = parser.push(data, &mut events) {
                        result.broken = Some(format!("bad SSE from gateway: {e}"));
                        break;
                    }
                    let pending = std::mem::take(&mut events);
                    for (i, ev) in pending.iter().enumerate() {
                        on_event(ev, status, result, sink, clock, label);
                        let leaving = leave_after.is_some_and(|k| result.chunks.len() >= k)
                            || stop_after.is_some_and(|k| result.chunks.len() >= k);
                        if leaving && i + 1 < pending.len() {
                            // The rest of this read is not taken: the client leaves now.
                            continue 'read;
                        }
                    }
                }
            }
        }
        if result.broken.is_none() && !result.done && result.error.is_none() {
            result.broken = Some("stream ended without [DONE] or an error event".into());
        }
    } else {
        let bytes = match http_body_util::Limited::new(body, MAX_CLIENT_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                result.broken = Some(format!("body: {e}"));
                return;
            }
        };
        result.body = Some(String::from_utf8_lossy(&bytes).into_owned());
        // An `error` is one only when it holds one, as the SDKs read it (`"error": null` on
        // a healthy completion is part of the answer).
        let holds_error = |v: &Value| {
            v.get("error")
                .is_some_and(|e| !matches!(e, Value::Null | Value::Bool(false)))
        };
        match serde_json::from_slice::<Value>(&bytes) {
            // The SDKs raise on the HTTP status and report it (`response.status_code`);
            // on a 2xx they return the body as a completion, so an error body there is a
            // completion with no choices: the gateway broke the answer.
            Ok(v) if holds_error(&v) && (200..300).contains(&status) => {
                result.broken = Some(format!(
                    "the gateway answered {status} with an error body (an SDK returns it as a \
                     completion without choices)"
                ));
            }
            Ok(v) if holds_error(&v) => {
                let mut seen = seen_error(&v["error"], status);
                seen.status = status;
                result.error = Some(seen);
            }
            // `completion.choices[0]` fails in the SDKs: nothing was answered.
            Ok(v)
                if (200..300).contains(&status)
                    && v.get("choices")
                        .and_then(Value::as_array)
                        .is_none_or(Vec::is_empty) =>
            {
                result.broken = Some(format!(
                    "the gateway answered {status} with a completion without choices"
                ));
            }
            Ok(v) => {
                result.model = v.get("model").and_then(Value::as_str).map(str::to_string);
                result.text = v
                    .pointer("/choices/0/message/content")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
            }
            Err(e) => result.broken = Some(format!("response is not JSON: {e}")),
        }
        // The SDKs read a stream's body as events whatever its type: a JSON answer has none,
        // and the caller gets an empty stream.
        if asked_to_stream && status == 200 && result.broken.is_none() {
            let content_type = result.response_headers.get("content-type");
            result.broken = Some(format!(
                "a stream request was answered 200 with content-type {}, not text/event-stream",
                content_type.map_or("(none)", String::as_str)
            ));
        }
    }
}

fn header_or_dash(r: &ClientResult, name: &str) -> String {
    r.headers.get(name).cloned().unwrap_or_else(|| "-".into())
}

/// An error as gateways send it in a stream's error event (whose HTTP status is the
/// stream's 200): the status from `status`, else from `code` as a number or a numeric
/// string (LiteLLM's stream error events: `litellm/proxy/_types.py`,
/// `ProxyException.to_dict`, whose `code` is `str(status)`), else the HTTP status; `type` as
/// given. A non-numeric `code` (`"rate_limit_exceeded"`) is not a status. An error response
/// is reported with its HTTP status, as the SDKs report it.
fn seen_error(e: &Value, status: u16) -> SeenError {
    let as_status = |v: &Value| {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        n.filter(|n| (100..=599).contains(n)).map(|n| n as u16)
    };
    SeenError {
        status: e
            .get("status")
            .and_then(as_status)
            .or_else(|| e.get("code").and_then(as_status))
            .unwrap_or(status),
        error_type: e
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    }
}

/// Records one event as an SDK reads it (`sdk_stream`). Stricter than the SDK in one way:
/// the SDK stops reading at `[DONE]`, the client reads on, so that an event after it (which
/// an SDK would never deliver) is caught as the gateway's fault.
fn on_event(
    event: &SdkEvent,
    status: u16,
    result: &mut ClientResult,
    sink: &dyn TraceSink,
    clock: &(dyn Fn() -> Duration + Send + Sync),
    label: &str,
) {
    let reads = event.read();
    if reads == SdkReads::Done {
        if result.done {
            result.broken = Some("two [DONE] events".into());
        } else if result.chunks.is_empty() && result.error.is_none() {
            // The SDK's loop yields nothing, and its `stream()` helper has no completion.
            result.broken = Some("the stream ended ([DONE]) before its first chunk".into());
        }
        result.done = true;
        sink.line("client", format!("{label} done"));
        return;
    }
    if result.done {
        result.broken = Some("an event after [DONE]".into());
        return;
    }
    let data = event.data.as_str();
    let v = match reads {
        SdkReads::Done => unreachable!("handled above"),
        SdkReads::Broken(why) => {
            result.broken = Some(format!("event from gateway: {why}"));
            result.other_events.push(data.to_string());
            return;
        }
        SdkReads::Error(e) => {
            result.other_events.push(data.to_string());
            let seen = seen_error(&e, status);
            sink.line(
                "client",
                format!(
                    "{label} error_event status={} type={}",
                    seen.status, seen.error_type
                ),
            );
            result.error = Some(seen);
            return;
        }
        SdkReads::Chunk(v) => v,
    };
    let model = v.get("model").and_then(Value::as_str).map(str::to_string);
    // Post-commit metadata rides on the stream's last chunk (see `delivery`).
    if let Some(meta) = v.get("switchback") {
        sink.line("client", format!("{label} meta {meta}"));
        result.meta = Some(meta.clone());
    }
    let text = choice_zero_content(&v);
    let at_ms = clock().as_millis() as u64;
    if !text.is_empty() {
        sink.line(
            "client",
            format!(
                "{label} chunk model={} text={:?}",
                model.as_deref().unwrap_or("-"),
                text
            ),
        );
    }
    result.text.push_str(&text);
    if model.is_some() {
        result.model.clone_from(&model);
    }
    result.chunks.push(SeenChunk {
        at_ms,
        model,
        text,
        raw: data.to_string(),
    });
}

/// The `content` of choice 0 in a chunk (by `index`; a choice without one by position).
fn choice_zero_content(chunk: &Value) -> String {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(i, c)| c.get("index").and_then(Value::as_u64).unwrap_or(*i as u64) == 0)
        .filter_map(|(_, c)| c.pointer("/delta/content").and_then(Value::as_str))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::NullSink;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one request on loopback with `response` (the raw HTTP response) and sends
    /// `stream` to it; returns what the client saw.
    async fn exchange_with(response: Vec<u8>, stream: bool) -> ClientResult {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            // The request's head and body: read until the body's end (the client sends
            // small JSON, with a content-length), then answer.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let _ = sock.write_all(&response).await;
            let _ = sock.shutdown().await;
        });
        let target = Target {
            connector: Arc::new(switchback::transport::TcpConnector),
            host: "127.0.0.1".into(),
            port,
            base_path: "/v1".into(),
        };
        let body = json!({"model": "m", "messages": [], "stream": stream});
        let r = send(
            &target,
            None,
            &body,
            Duration::from_secs(30),
            &NullSink,
            &|| Duration::ZERO,
            "r0.0",
        )
        .await;
        server.abort();
        r
    }

    fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A gateway that floods a stream (comment lines, which keep no chunk, so only the
    /// byte bound can stop them) is cut at MAX_CLIENT_STREAM_BYTES, not read until the
    /// request's timeout.
    #[tokio::test]
    async fn a_flooding_stream_is_cut_at_the_clients_bound() {
        let line = format!(": {}\n\n", "x".repeat(1020));
        let flood = line.repeat(MAX_CLIENT_STREAM_BYTES / line.len() + 2);
        let r = exchange_with(response("200 OK", "text/event-stream", &flood), true).await;
        assert_eq!(
            r.broken.as_deref(),
            Some(
                format!(
                    "the stream went past the client's MAX_CLIENT_STREAM_BYTES = {MAX_CLIENT_STREAM_BYTES} bytes"
                )
                .as_str()
            ),
            "{:?}",
            r.broken
        );
    }

    /// An error response's status is its HTTP status, as `response.status_code` in the
    /// SDKs, whatever its body's `code` says; an error body on a 200 is a broken answer; an
    /// `"error": null` beside a completion is none.
    #[tokio::test]
    async fn an_error_is_read_as_the_sdks_read_it() {
        let body = r#"{"error":{"message":"slow down","type":"rate_limit_error","code":"429"}}"#;
        let r = exchange_with(
            response("503 Service Unavailable", "application/json", body),
            false,
        )
        .await;
        assert_eq!(r.error.as_ref().map(|e| e.status), Some(503), "{r:?}");
        let r = exchange_with(response("200 OK", "application/json", body), false).await;
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(
            r.broken.as_deref(),
            Some(
                "the gateway answered 200 with an error body (an SDK returns it as a completion without choices)"
            )
        );
        let ok = r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"error":null}"#;
        let r = exchange_with(response("200 OK", "application/json", ok), false).await;
        assert!(r.error.is_none() && r.broken.is_none(), "{r:?}");
        assert_eq!(r.text, "hi");
    }

    /// What the SDKs cannot read as an answer is no success: a completion without
    /// `choices[0]` (the SDKs' own accessor fails on it), and a stream that says `[DONE]`
    /// without a chunk before it (the SDK's loop yields nothing, and its `stream()` helper
    /// fails for want of a completion). Taken as answers of "", two modes that both did it
    /// agreed.
    #[tokio::test]
    async fn an_answer_without_a_choice_is_broken() {
        for body in [
            "{}",
            r#"{"model":"m","choices":[]}"#,
            r#"{"model":"m","choices":null}"#,
        ] {
            let r = exchange_with(response("200 OK", "application/json", body), false).await;
            assert!(!r.succeeded(), "{body}: {r:?}");
            assert_eq!(
                r.broken.as_deref(),
                Some("the gateway answered 200 with a completion without choices"),
                "{body}"
            );
        }
        let r = exchange_with(
            response("200 OK", "text/event-stream", "data: [DONE]\n\n"),
            true,
        )
        .await;
        assert_eq!(
            r.broken.as_deref(),
            Some("the stream ended ([DONE]) before its first chunk"),
            "{r:?}"
        );
        // A tool call's answer has choices and no text: an answer.
        let tool = r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[]}}]}"#;
        let r = exchange_with(response("200 OK", "application/json", tool), false).await;
        assert!(r.succeeded(), "{r:?}");
    }

    const ONE_CHUNK: &str = "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";

    /// An SDK that sent `stream: false` parses the body as JSON and fails on SSE: a
    /// gateway that streams to it broke the answer.
    #[tokio::test]
    async fn a_stream_answering_a_non_stream_request_is_broken() {
        let r = exchange_with(response("200 OK", "text/event-stream", ONE_CHUNK), false).await;
        assert_eq!(
            r.broken.as_deref(),
            Some(
                "the gateway streamed (200, content-type text/event-stream) to a `stream: false` request"
            ),
            "{r:?}"
        );
        assert!(!r.succeeded());
        // The same answer to a stream request is a stream.
        let r = exchange_with(response("200 OK", "text/event-stream", ONE_CHUNK), true).await;
        assert!(r.succeeded(), "{r:?}");
        assert_eq!(r.text, "hi");
    }

    #[test]
    fn error_statuses_are_read_in_every_shape_gateways_send() {
        let seen = |e: Value| {
            let s = seen_error(&e, 200);
            (s.status, s.error_type)
        };
        // Switchback's own event.
        assert_eq!(
            seen(json!({"status": 429, "type": "rate_limit_error"})),
            (429, "rate_limit_error".into())
        );
        // LiteLLM's events: the status in `code`, as a string.
        assert_eq!(
            seen(json!({"message": "x", "type": "throttling_error", "param": null, "code": "429"})),
            (429, "throttling_error".into())
        );
        assert_eq!(seen(json!({"code": "408", "type": null})).0, 408);
        // OpenRouter and Vertex: a number in `code`.
        assert_eq!(seen(json!({"code": 503, "message": "x"})).0, 503);
        // An OpenAI error code is a name, not a status: the HTTP status stands.
        assert_eq!(seen(json!({"code": "rate_limit_exceeded"})).0, 200);
        assert_eq!(seen(json!({"code": "12345"})).0, 200);
    }
}
