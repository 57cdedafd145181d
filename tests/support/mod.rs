//! An in-memory world for engine tests: upstreams are hyper services on `tokio::io::duplex`
//! pipes, the gateway serves an in-memory listener, and a hyper client talks to it. With
//! tokio's paused clock (`#[tokio::test(start_paused = true)]`) everything here is
//! deterministic: time only moves when every task is waiting.
//!
//! Owns: [`MemNet`] (the engine's `Connector`, with scripted upstreams, call and connection
//! counts, and injectable local connect errors), [`Gw`] (a gateway over it, with its trace),
//! and small builders for SSE and JSON upstream answers. Hostile upstreams are scripts that
//! build their body from a channel ([`sse_channel`]) and feed it from a task.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::engine::{Engine, WallClock};
use switchback::trace::TraceLog;
use switchback::transport::{BoxFuture, BoxIo, Connector, Listener};
use tokio::sync::mpsc;

pub type UpBody = BoxBody<Bytes, io::Error>;

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct UpCall {
    /// 1-based, per host.
    pub n: u32,
    pub headers: HeaderMap,
    pub body: Value,
}

/// An upstream: one answer per call.
pub type Script = Arc<dyn Fn(UpCall) -> Response<UpBody> + Send + Sync>;

#[derive(Default)]
struct NetInner {
    /// Each host's script and how long it waits before answering (time to headers).
    hosts: Mutex<BTreeMap<String, (std::time::Duration, Script)>>,
    calls: Mutex<BTreeMap<String, Vec<UpCall>>>,
    open: AtomicUsize,
    /// When set, every connect fails with this OS error (a local resource error).
    connect_error: Mutex<Option<i32>>,
}

/// The engine's connector into an in-memory network of scripted upstreams.
#[derive(Default, Clone)]
pub struct MemNet {
    inner: Arc<NetInner>,
}

struct OpenGuard(Arc<NetInner>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MemNet {
    pub fn new() -> MemNet {
        MemNet::default()
    }

    /// Serves `host` with `script` (any port).
    pub fn host(
        &self,
        host: &str,
        script: impl Fn(UpCall) -> Response<UpBody> + Send + Sync + 'static,
    ) -> &Self {
        self.host_after(host, std::time::Duration::ZERO, script)
    }

    /// Serves `host` with `script`, answering each call's headers `delay` after it arrives.
    pub fn host_after(
        &self,
        host: &str,
        delay: std::time::Duration,
        script: impl Fn(UpCall) -> Response<UpBody> + Send + Sync + 'static,
    ) -> &Self {
        self.inner
            .hosts
            .lock()
            .unwrap()
            .insert(host.to_string(), (delay, Arc::new(script)));
        self
    }

    /// Every connect fails with OS error `code` until cleared with `None`.
    pub fn fail_connects(&self, code: Option<i32>) {
        *self.inner.connect_error.lock().unwrap() = code;
    }

    /// Calls `host` received, in order.
    pub fn calls(&self, host: &str) -> Vec<UpCall> {
        self.inner
            .calls
            .lock()
            .unwrap()
            .get(host)
            .cloned()
            .unwrap_or_default()
    }

    /// Upstream connections open right now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }
}

impl Connector for MemNet {
    fn connect<'a>(&'a self, host: &'a str, _port: u16) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move {
            if let Some(code) = *self.inner.connect_error.lock().unwrap() {
                return Err(io::Error::from_raw_os_error(code));
            }
            let Some((delay, script)) = self.inner.hosts.lock().unwrap().get(host).cloned() else {
                return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
            };
            let (near, far) = tokio::io::duplex(64 * 1024);
            let inner = self.inner.clone();
            inner.open.fetch_add(1, Ordering::SeqCst);
            let host = host.to_string();
            tokio::spawn(async move {
                let _open = OpenGuard(inner.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (script, inner, host) = (script.clone(), inner.clone(), host.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body.collect().await.map(|b| b.to_bytes());
                        let body: Value = bytes
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok())
                            .unwrap_or(Value::Null);
                        let call = {
                            let mut calls = inner.calls.lock().unwrap();
                            let list = calls.entry(host).or_default();
                            let call = UpCall {
                                n: list.len() as u32 + 1,
                                headers: parts.headers,
                                body,
                            };
                            list.push(call.clone());
                            call
                        };
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(script(call))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(far), service)
                    .await;
            });
            Ok(Box::new(near) as BoxIo)
        })
    }
}

/// A listener fed by [`Gw::connect`].
pub struct MemListener(pub mpsc::Receiver<BoxIo>);

impl Listener for MemListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            match self.0.recv().await {
                Some(io) => Ok((io, SocketAddr::from(([127, 0, 0, 1], 1)))),
                // The test is over: park instead of spinning on an error.
                None => std::future::pending().await,
            }
        })
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

/// A fixed wall clock (Retry-After dates are measured against it when no `Date` comes).
pub struct FixedWall(pub std::time::SystemTime);

impl WallClock for FixedWall {
    fn now(&self) -> std::time::SystemTime {
        self.0
    }
}

pub const WALL_EPOCH_SECS: u64 = 1_700_000_000;

/// A gateway over a [`MemNet`].
pub struct Gw {
    pub engine: Arc<Engine>,
    pub trace: Arc<TraceLog>,
    pub net: MemNet,
    conns: mpsc::Sender<BoxIo>,
}

impl Gw {
    /// Loads `yaml` (a gateway config) and serves it over `net`.
    pub fn start(yaml: &str, net: &MemNet) -> Gw {
        Gw::start_with(yaml, net, |engine| engine)
    }

    /// [`Gw::start`] with the engine as `build` makes it from the plain one.
    pub fn start_with(yaml: &str, net: &MemNet, build: impl FnOnce(Engine) -> Engine) -> Gw {
        let config = GatewayConfig::load("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
        let catalog = Arc::new(Catalog::new(&config).unwrap());
        let trace = Arc::new(TraceLog::default());
        let wall = std::time::UNIX_EPOCH + std::time::Duration::from_secs(WALL_EPOCH_SECS);
        let engine = Arc::new(build(Engine::new(
            catalog,
            Arc::new(net.clone()),
            trace.clone(),
            Arc::new(FixedWall(wall)),
        )));
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(switchback::gateway::serve(
            engine.clone(),
            MemListener(rx),
            std::future::pending(),
        ));
        Gw {
            engine,
            trace,
            net: net.clone(),
            conns: tx,
        }
    }

    /// [`Gw::start`] with Prometheus metrics kept (as `serve --metrics on` does).
    pub fn start_metered(yaml: &str, net: &MemNet) -> Gw {
        Gw::start_with(yaml, net, |engine| {
            engine.with_metrics(Arc::new(switchback::metrics::Metrics::new()))
        })
    }

    /// The metrics scrape, as `GET /metrics` renders it.
    pub fn scrape(&self) -> String {
        let metrics = self.engine.metrics().expect("a metered gateway");
        metrics.render(self.engine.cooling(), self.engine.upstream_pool().stats())
    }

    /// A raw byte pipe to the gateway, as a client's socket.
    pub async fn raw(&self) -> tokio::io::DuplexStream {
        let (near, far) = tokio::io::duplex(64 * 1024);
        self.conns.send(Box::new(far)).await.expect("gateway up");
        near
    }

    /// An HTTP/1 client connection to the gateway.
    pub async fn connect(&self) -> SendRequest<Full<Bytes>> {
        self.connect_with_buffer(64 * 1024).await
    }

    /// An HTTP/1 client connection whose pipe buffers at most `bytes` in each direction.
    pub async fn connect_with_buffer(&self, bytes: usize) -> SendRequest<Full<Bytes>> {
        let (near, far) = tokio::io::duplex(bytes);
        self.conns.send(Box::new(far)).await.expect("gateway up");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(near))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender
    }

    /// Sends a chat completion request with `key` as bearer.
    pub async fn chat(&self, key: Option<&str>, body: Value) -> Response<Incoming> {
        let mut sender = self.connect().await;
        sender
            .send_request(chat_request(key, &body))
            .await
            .expect("response")
    }

    /// The trace, one line per event, without timestamps: `req=<n> <event>`.
    pub fn events(&self) -> Vec<String> {
        self.trace
            .lines()
            .iter()
            .map(|l| {
                l.split_once("ms ")
                    .map_or(l.as_str(), |(_, r)| r)
                    .to_string()
            })
            .collect()
    }

    /// Whether some trace line contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        self.events().iter().any(|l| l.contains(needle))
    }
}

pub fn chat_request(key: Option<&str>, body: &Value) -> Request<Full<Bytes>> {
    let mut b = Request::post("/v1/chat/completions")
        .header("host", "gateway")
        .header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// A minimal chat body.
pub fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "say ping"}]})
}

/// Reads a whole response body as text (bounded by the test's own patience).
pub async fn text(response: Response<Incoming>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What a streaming client has read of `response` within `wait`, then all of it.
pub async fn read_early_then_all(
    response: Response<Incoming>,
    wait: std::time::Duration,
) -> (String, String) {
    let mut body = response.into_body();
    let mut seen = String::new();
    let mut read_all = async |seen: &mut String| {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("a body frame").into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    let _ = tokio::time::timeout(wait, read_all(&mut seen)).await;
    let early = seen.clone();
    read_all(&mut seen).await;
    (early, seen)
}

/// The text of choice 0 in an SSE body: its deltas' `content`, joined.
pub fn streamed_text(sse_body: &str) -> String {
    sse_body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|p| *p != "[DONE]")
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The text of choice 0 in an answer's body: a stream's deltas joined, or a completion's
/// message.
pub fn answered_text(body: &str, stream: bool) -> String {
    if stream {
        return streamed_text(body);
    }
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {v}"))
        .to_string()
}

/// Waits until `cond` holds, letting the paused clock run in 10 ms steps (at most `steps`).
/// Time moves only when every task waits, so this is synchronisation, not a guess.
pub async fn settle(steps: u32, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..steps {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cond()
}

// ---------------------------------------------------------------------------------------------
// Upstream answers
// ---------------------------------------------------------------------------------------------

fn full(bytes: impl Into<Bytes>) -> UpBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A whole SSE answer (one chunk saying "hi" with `finish_reason: stop`, then `[DONE]`),
/// gzip-compressed (`gzip -n -9`): what an upstream or a proxy that compresses sends when
/// the request does not say `accept-encoding: identity`.
pub const GZIPPED_SSE_ANSWER: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\x1d\x8e\xc1\x0a\xc2\x30\x10\x44\xef\xf9\x0a\x99\x73\x28\xf6\x9a\xb3\x5e\xf5\x03\x4a\x91\xb8\x59\x49\xb4\xcd\x16\xb3\x82\x50\xfa\xef\x6e\x3d\xce\xcc\xe3\x31\x29\x6a\x0c\x87\x15\x25\x21\x80\x7a\x78\xc8\xfd\xc9\xa4\x7b\xca\x51\x3b\x92\x79\x99\x58\x8b\xd4\x8e\xf2\xa7\xbe\x0c\xa0\x37\x47\x65\xe3\x7b\x8f\x59\x12\x4f\xc6\xce\x7b\x9f\xa5\x10\x37\x84\xc1\x74\x35\xf1\x17\xe1\xe8\x61\xbb\x46\x84\x15\x24\x55\xb9\xee\xe2\x5c\xb0\x79\x3c\x4a\x2d\x2d\xdf\x4c\xd6\xa4\x5a\xdb\x54\x16\x6c\xe3\xe6\x5c\xfa\x7f\x1a\x4e\xd7\xcb\x79\x74\xee\x07\x0d\xf6\x49\x40\xa2\x00\x00\x00";

/// A chunk with `delta` for choice 0.
pub fn chunk_json(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

pub fn frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// A whole SSE answer: role chunk, one chunk per text, stop, `[DONE]`.
pub fn sse_answer(model: &str, texts: &[&str]) -> Response<UpBody> {
    let mut body = frame(&chunk_json(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    for t in texts {
        body.push_str(&frame(&chunk_json(model, json!({"content": t}), None)));
    }
    body.push_str(&frame(&chunk_json(model, json!({}), Some("stop"))));
    body.push_str("data: [DONE]\n\n");
    sse(body)
}

/// An SSE response with this exact body.
pub fn sse(body: impl Into<Bytes>) -> Response<UpBody> {
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

pub fn json_response(status: u16, body: &Value) -> Response<UpBody> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A body fed from a channel; an `Err` item breaks the connection.
pub struct ChannelBody(pub mpsc::Receiver<Result<Bytes, io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(|r| r.map(Frame::data)))
    }
}

/// An SSE response whose body the test (or a task it spawns) writes.
pub fn sse_channel() -> (mpsc::Sender<Result<Bytes, io::Error>>, Response<UpBody>) {
    let (tx, rx) = mpsc::channel(4);
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    (tx, r)
}

/// An SSE response that sends `first` frames, then `frame_fn(i)` for ever (until the reader
/// goes away): a flood.
pub fn sse_flood(
    first: Vec<String>,
    frame_fn: impl Fn(u64) -> String + Send + 'static,
) -> Response<UpBody> {
    let (tx, r) = sse_channel();
    tokio::spawn(async move {
        for f in first {
            if tx.send(Ok(Bytes::from(f))).await.is_err() {
                return;
            }
        }
        let mut i = 0;
        loop {
            if tx.send(Ok(Bytes::from(frame_fn(i)))).await.is_err() {
                return;
            }
            i += 1;
        }
    });
    r
}

/// Minimal config: group `g` with one deployment `d` at host `up`, no retries, no keys.
pub const ONE_GROUP: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1", api_key: sk-upstream-SECRET-123}, model_info: {id: d}}
router_settings: {num_retries: 0}
"#;

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// What a test's log subscriber wrote: JSON lines, one per event.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Records every INFO event of the calling thread (a `#[tokio::test]`'s tasks run on it)
    /// as JSON, until the guard is dropped.
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// The lines of `target` (`switchback::access` for access lines).
    pub fn lines(&self, target: &str) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == target)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------------------------

static PANICS: std::sync::OnceLock<Mutex<Vec<(String, String)>>> = std::sync::OnceLock::new();

/// Starts recording panics (thread name and message), still printing them as usual. A tokio
/// task spawned by a `#[tokio::test]` runs on the test's own thread, which libtest names after
/// the test, so [`panics_here`] sees exactly the panics of the calling test.
pub fn watch_panics() {
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            if let Some(list) = PANICS.get() {
                list.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((thread, info.to_string()));
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    });
}

/// Panic messages recorded on the calling thread since [`watch_panics`].
pub fn panics_here() -> Vec<String> {
    let me = std::thread::current().name().unwrap_or("?").to_string();
    PANICS
        .get()
        .map(|l| {
            l.lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(t, _)| *t == me)
                .map(|(_, m)| m.clone())
                .collect()
        })
        .unwrap_or_default()
}
