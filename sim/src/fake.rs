//! A scripted OpenAI-compatible provider.
//!
//! Owns: serving `POST /v1/chat/completions` (stream or not) from a [`Provider`] spec: choosing
//! the script by call number and requested model, emitting chunks with their delays, injecting
//! the script's fault at chunk offset k (HTTP error, SSE error event, reset, stall, malformed
//! SSE, `content_filter`), answering a continuation with only the rest of its text, and
//! recording every request it receives. Runs on any [`Listener`]: turmoil in simulation,
//! tokio TCP in live mode. Does not own the network (`world`) or the verdict (`oracle`).
//!
//! A non-streaming request meets the same fault at the same instant: the whole request fails
//! with that error once the k chunks would have been sent.
//!
//! A fault after chunk k comes after exactly k chunks have left, whatever the delays (a zero
//! delay included), so a fault after the last chunk, before `[DONE]`, is reachable.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchback::transport::Listener;
use tokio::sync::mpsc;

use crate::scenario::{Fault, FaultKind, Flavour, Provider, Script};
use crate::trace::TraceSink;

/// Largest request body a fake reads.
pub const MAX_FAKE_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Fixed `created` timestamp, so answers are byte-identical across runs.
pub const CREATED: u64 = 1_700_000_000;

/// What a fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Position among all calls to the fakes sharing one order (see [`Fake::with_order`]).
    pub seq: u64,
    pub call: u32,
    pub model: String,
    pub stream: bool,
    /// The partial answer this call was asked to continue, if any.
    pub continuation: Option<String>,
    /// Whether it continued it (its text starts with that partial answer) or, not being
    /// able to, answered in full.
    pub continued: bool,
    pub authorization: Option<String>,
    /// The gateway's request number (`x-switchback-request-id`), when it sent one.
    pub request_id: Option<u64>,
    /// The text this call sends before its fault (all of it without one).
    pub planned: String,
    /// What the script does: `ok`, or the fault (`http 429`, `error_event@3 429`, ...).
    pub outcome: String,
    pub body: Value,
}

pub struct Fake {
    pub spec: Provider,
    calls: AtomicU32,
    open: AtomicUsize,
    log: Mutex<Vec<CallRecord>>,
    sink: Arc<dyn TraceSink>,
    /// Shared by the fakes of one run: the order calls arrived in, across hosts.
    order: Arc<std::sync::atomic::AtomicU64>,
}

type FakeBody = BoxBody<Bytes, io::Error>;

impl Fake {
    pub fn new(spec: Provider, sink: Arc<dyn TraceSink>) -> Arc<Fake> {
        Fake::with_order(spec, sink, Arc::default())
    }

    /// A fake whose calls are numbered in one sequence with the other fakes sharing `order`.
    pub fn with_order(
        spec: Provider,
        sink: Arc<dyn TraceSink>,
        order: Arc<std::sync::atomic::AtomicU64>,
    ) -> Arc<Fake> {
        Arc::new(Fake {
            spec,
            calls: AtomicU32::new(0),
            open: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            sink,
            order,
        })
    }

    /// Forgets every call: the next call is call 1 again (a fresh provider for the next run).
    pub fn reset(&self) {
        self.calls.store(0, Ordering::SeqCst);
        self.log.lock().expect("fake log").clear();
    }

    /// Every request received so far, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.log.lock().expect("fake log").clone()
    }

    /// Connections currently open to this fake.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Serves connections from `listener` forever.
    pub async fn serve<L: Listener>(self: Arc<Self>, mut listener: L) {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                continue;
            };
            let fake = self.clone();
            fake.open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Counts down however the task ends, a crash of the host included.
                let _open = OpenGuard(fake.clone());
                let svc_fake = fake.clone();
                let service = service_fn(move |req| {
                    let fake = svc_fake.clone();
                    async move { Ok::<_, Infallible>(fake.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), service)
                    .await;
            });
        }
    }

    fn trace(&self, text: String) {
        self.sink.line(&self.spec.host, text);
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<FakeBody> {
        let path = req.uri().path().to_string();
        if req.method() == http::Method::GET && path.ends_with("/models") {
            let model = self.spec.model.clone().unwrap_or_else(|| "fake".into());
            return json_response(
                200,
                &json!({"object": "list", "data": [{"id": model, "object": "model"}]}),
                &[],
            );
        }
        if req.method() != http::Method::POST || !path.ends_with("/chat/completions") {
            return json_response(
                404,
                &json!({"error": {"message": format!("no route {path}")}}),
                &[],
            );
        }
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let request_id = req
            .headers()
            .get("x-switchback-request-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = match http_body_util::Limited::new(req.into_body(), MAX_FAKE_REQUEST_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return json_response(400, &json!({"error": {"message": "body unreadable"}}), &[]);
            }
        };
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return json_response(400, &json!({"error": {"message": "body is not JSON"}}), &[]);
        };
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let script = self.script_for(call, &model).clone();
        let continuation = continuation_prefix(&body);
        let full = script.full_text();
        let continued = continuation.as_deref().is_some_and(|p| full.starts_with(p));
        let answer = Answer::new(
            &self.spec,
            &script,
            call,
            &model,
            continuation.as_deref().filter(|_| continued),
        );
        self.log.lock().expect("fake log").push(CallRecord {
            seq: self.order.fetch_add(1, Ordering::SeqCst) + 1,
            call,
            model: model.clone(),
            stream,
            continuation: continuation.clone(),
            continued,
            authorization,
            request_id,
            planned: answer.chunks[..answer.sent_before_fault()].concat(),
            outcome: script.fault.as_ref().map_or_else(
                || "ok".to_string(),
                |f| match (f.kind, f.status) {
                    (crate::scenario::FaultKind::Http, s) => format!("http {}", s.unwrap_or(429)),
                    (kind, Some(s)) => format!("{}@{} {s}", kind.as_str(), f.after_chunks),
                    (kind, None) => format!("{}@{}", kind.as_str(), f.after_chunks),
                },
            ),
            body: body.clone(),
        });
        self.trace(format!(
            "received call={call} model={model} stream={stream} continuation={} fault={}",
            continuation.as_ref().map_or(0, |p| p.chars().count()),
            script.fault.as_ref().map_or("-".to_string(), |f| format!(
                "{}@{}",
                f.kind.as_str(),
                f.after_chunks
            )),
        ));
        pause(script.ttfb_ms).await;
        if stream {
            answer.stream(include_usage)
        } else {
            answer.whole().await
        }
    }

    fn script_for(&self, call: u32, model: &str) -> &Script {
        self.spec
            .calls
            .iter()
            .find(|s| {
                (s.calls.is_empty() || s.calls.contains(&call))
                    && s.every.is_none_or(|n| call % n == 0)
                    && s.for_model.as_deref().is_none_or(|m| m == model)
            })
            .unwrap_or(&self.spec.default)
    }
}

/// Waits `ms` milliseconds; no wait at all for 0 (a zero-length timer still waits for the
/// timer wheel's next tick, about a millisecond on real clocks).
async fn pause(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

struct OpenGuard(Arc<Fake>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A continuation request ends with the partial answer (assistant) and an instruction
/// (user). The fake continues it when its own text starts with that partial answer.
fn continuation_prefix(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let [.., prev, last] = messages.as_slice() else {
        return None;
    };
    if prev.get("role")?.as_str()? != "assistant" || last.get("role")?.as_str()? != "user" {
        return None;
    }
    let prefix = prev.get("content")?.as_str()?;
    (!prefix.is_empty()).then(|| prefix.to_string())
}

/// One answer, ready to be sent either way.
struct Answer {
    chunks: Vec<String>,
    delays: Vec<u64>,
    model: String,
    id: String,
    fault: Option<Fault>,
    headers: Vec<(String, String)>,
    prompt_messages: usize,
}

impl Answer {
    fn new(
        spec: &Provider,
        script: &Script,
        call: u32,
        requested: &str,
        continuation: Option<&str>,
    ) -> Answer {
        let all = script.chunk_texts();
        let skip = continuation.map_or(0, |p| p.chars().count());
        let mut chunks = Vec::new();
        let mut delays = Vec::new();
        let mut seen = 0;
        for (i, c) in all.iter().enumerate() {
            let n = c.chars().count();
            if seen + n <= skip {
                seen += n;
                continue;
            }
            let cut = skip.saturating_sub(seen);
            chunks.push(c.chars().skip(cut).collect());
            delays.push(script.delay_before(i));
            seen += n;
        }
        let model = script
            .model
            .clone()
            .or_else(|| spec.model.clone())
            .unwrap_or_else(|| requested.to_string());
        Answer {
            chunks,
            delays,
            model,
            id: format!("fake-{}-{call}", spec.host),
            fault: script.fault.clone(),
            headers: script
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            prompt_messages: 0,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    fn usage(&self, completion: usize) -> Value {
        json!({"prompt_tokens": self.prompt_messages + 5, "completion_tokens": completion, "total_tokens": self.prompt_messages + 5 + completion})
    }

    /// Chunks sent before the fault (all of them without one).
    fn sent_before_fault(&self) -> usize {
        self.fault
            .as_ref()
            .map_or(self.chunks.len(), |f| f.after_chunks.min(self.chunks.len()))
    }

    fn stream(self, include_usage: bool) -> Response<FakeBody> {
        if let Some(f) = self.fault.as_ref().filter(|f| f.kind == FaultKind::Http) {
            return http_error(f, &self.headers);
        }
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
        let mut response = Response::new(ChannelBody::new(rx).boxed());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        add_headers(&mut response, &self.headers);
        tokio::spawn(async move {
            let send = |v: &Value| Ok(Bytes::from(format!("data: {v}\n\n")));
            if tx
                .send(send(
                    &self.chunk(json!({"role": "assistant", "content": ""}), None),
                ))
                .await
                .is_err()
            {
                return;
            }
            let k = self.sent_before_fault();
            for i in 0..k {
                pause(self.delays[i]).await;
                if tx
                    .send(send(&self.chunk(json!({"content": self.chunks[i]}), None)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if let Some(f) = &self.fault {
                if let Some(gap) = self.delays.get(k) {
                    pause(*gap).await;
                }
                let end = match f.kind {
                    FaultKind::Http => unreachable!("handled before streaming"),
                    FaultKind::ErrorEvent => Some(send(&error_body(f, true))),
                    FaultKind::Reset => Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "scripted reset",
                    ))),
                    FaultKind::Stall => {
                        // Hold the connection open with no bytes until the peer gives up.
                        tx.closed().await;
                        return;
                    }
                    FaultKind::Malformed => {
                        Some(Ok(Bytes::from_static(b"data: {\"id\": \"broken\n\n")))
                    }
                    FaultKind::ContentFilter => {
                        Some(send(&self.chunk(json!({}), Some("content_filter"))))
                    }
                };
                if let Some(frame) = end {
                    let _ = tx.send(frame).await;
                }
                if f.kind == FaultKind::ContentFilter {
                    let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
                }
                return;
            }
            let _ = tx.send(send(&self.chunk(json!({}), Some("stop")))).await;
            if include_usage {
                let usage = json!({"id": self.id, "object": "chat.completion.chunk", "created": CREATED, "model": self.model, "choices": [], "usage": self.usage(self.chunks.len())});
                let _ = tx.send(send(&usage)).await;
            }
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        });
        response
    }

    async fn whole(self) -> Response<FakeBody> {
        if let Some(f) = self.fault.as_ref().filter(|f| f.kind == FaultKind::Http) {
            return http_error(f, &self.headers);
        }
        let k = self.sent_before_fault();
        let waited: u64 = self.delays[..k].iter().sum::<u64>()
            + self
                .fault
                .as_ref()
                .and_then(|_| self.delays.get(k))
                .copied()
                .unwrap_or(0);
        pause(waited).await;
        let text: String = self.chunks[..k].concat();
        let completion = |finish: &str| {
            json!({
                "id": self.id,
                "object": "chat.completion",
                "created": CREATED,
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": self.usage(k),
            })
        };
        match &self.fault {
            None => json_response(200, &completion("stop"), &self.headers),
            Some(f) => match f.kind {
                FaultKind::Http => unreachable!("handled above"),
                FaultKind::ErrorEvent => {
                    let mut r = json_response(
                        f.status.unwrap_or(429),
                        &error_body(f, false),
                        &self.headers,
                    );
                    if let Some(ra) = f.retry_after {
                        r.headers_mut().insert(
                            "retry-after",
                            HeaderValue::from_str(&fmt_secs(ra)).expect("number"),
                        );
                    }
                    r
                }
                FaultKind::Reset => {
                    let body = futures_error_body();
                    let mut r = Response::new(body);
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                FaultKind::Stall => {
                    std::future::pending::<()>().await;
                    unreachable!("a stall never answers")
                }
                FaultKind::Malformed => {
                    let mut r = Response::new(full("{\"id\": \"broken"));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                FaultKind::ContentFilter => {
                    json_response(200, &completion("content_filter"), &self.headers)
                }
            },
        }
    }
}

/// A 200 whose body breaks before a byte: what a reset looks like to a non-stream client.
fn futures_error_body() -> FakeBody {
    let (tx, rx) = mpsc::channel(1);
    tx.try_send(Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "scripted reset",
    )))
    .expect("fresh channel has room");
    ChannelBody::new(rx).boxed()
}

fn fmt_secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

fn http_error(f: &Fault, headers: &[(String, String)]) -> Response<FakeBody> {
    let status = f.status.unwrap_or(429);
    let mut r = json_response(status, &error_body(f, false), headers);
    if let Some(ra) = f.retry_after {
        r.headers_mut().insert(
            "retry-after",
            HeaderValue::from_str(&fmt_secs(ra)).expect("number"),
        );
    }
    r
}

fn default_message(status: u16, code: Option<&str>) -> &'static str {
    match (status, code) {
        (_, Some("context_length_exceeded")) => {
            "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."
        }
        (_, Some("content_filter" | "content_policy_violation")) => {
            "The response was filtered due to the prompt triggering the content management policy."
        }
        (429, _) => "Rate limit reached for requests",
        (401, _) => "Incorrect API key provided",
        (403, _) => "Permission denied",
        (404, _) => "The model does not exist",
        (500, _) => "The server had an error while processing your request",
        (502, _) => "Bad gateway",
        (503, _) => "The engine is currently overloaded",
        (529, _) => "Overloaded",
        _ => "Scripted failure",
    }
}

/// The error body in the provider flavour. `event`: inside an SSE stream (always an object).
pub fn error_body(f: &Fault, event: bool) -> Value {
    let status = f.status.unwrap_or(429);
    let code = f.code.as_deref();
    let message = f
        .message
        .clone()
        .unwrap_or_else(|| default_message(status, code).to_string());
    let mut v = match f.flavour {
        Flavour::Openai => {
            let kind = match status {
                429 => "rate_limit_error",
                400..=499 => "invalid_request_error",
                _ => "server_error",
            };
            json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
        }
        Flavour::Openrouter => {
            json!({"error": {"code": status, "message": message, "metadata": {}}})
        }
        Flavour::Vertex => {
            let name = match status {
                429 => "RESOURCE_EXHAUSTED",
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            let mut e = json!({"code": status, "message": message, "status": name});
            if let Some(ra) = f.retry_after {
                e["details"] = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{}s", fmt_secs(ra))}]);
            }
            if event {
                json!({"error": e})
            } else {
                json!([{"error": e}])
            }
        }
        Flavour::Anthropic => {
            let kind = match status {
                429 => "rate_limit_error",
                529 | 503 => "overloaded_error",
                400 | 413 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    if event {
        if let Some(ra) = f.retry_after {
            v["error"]["retry_after"] = json!(ra);
        }
        if f.flavour == Flavour::Openai {
            v["error"]["status"] = json!(status);
        }
    }
    v
}

fn full(text: impl Into<Bytes>) -> FakeBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json_response(status: u16, body: &Value, headers: &[(String, String)]) -> Response<FakeBody> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_headers(&mut r, headers);
    r
}

fn add_headers(r: &mut Response<FakeBody>, headers: &[(String, String)]) {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
}

/// A body fed by a channel, which can carry an error (a scripted reset).
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    /// An error taken from the channel, given to hyper on its next poll.
    held: Option<io::Error>,
}

impl ChannelBody {
    fn new(rx: mpsc::Receiver<Result<Bytes, io::Error>>) -> ChannelBody {
        ChannelBody { rx, held: None }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(e) = self.held.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(Err(e)) => {
                // A failing body makes hyper drop the connection with whatever it has
                // buffered but not yet written: the chunks just before a reset would be
                // lost (a reset after chunk k would deliver fewer than k). One pending turn
                // first lets hyper flush them; the error comes on the next poll.
                self.held = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => Poll::Ready(other.map(|r| r.map(Frame::data))),
        }
    }
}
