//! A scripted OpenAI-compatible provider.
//!
//! Owns: serving `POST /v1/chat/completions` (stream or not) from a [`Provider`] spec: choosing
//! the script by call number and requested model, emitting chunks with their delays, injecting
//! the script's fault at chunk offset k (HTTP error, SSE error event, reset, stall, malformed
//! SSE, `content_filter`), answering a continuation with only the rest of its text, the
//! hostile shapes (content-less floods, errors that echo the request's `Authorization` or
//! headers), and recording every request it receives with what it sent and what its own
//! non-stream answer is. Runs on any [`Listener`]: turmoil in simulation, tokio TCP in
//! live mode. Does not own the shape of an answer in each provider's dialect (`dialect`),
//! the network (`world`) or the verdict (`oracle`).
//!
//! A non-streaming request meets the same fault at the same instant: the whole request fails
//! with that error once the k chunks would have been sent.
//!
//! A fault after chunk k comes after exactly k chunks have left, whatever the delays (a zero
//! delay included), so a fault after the last chunk, before `[DONE]`, is reachable.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
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
use switchback::transport::{Accepted, Listener};
use tokio::sync::mpsc;

use crate::dialect::Reply;
use crate::scenario::{
    Dialect, Echo, Fault, FaultKind, Flavour, Flood, FloodKind, Framing, Provider, Script,
};
use crate::trace::TraceSink;

/// Largest request body a fake reads.
pub const MAX_FAKE_REQUEST_BYTES: usize = 4 * 1024 * 1024;
pub use crate::dialect::CREATED;

/// What a fake received, and what it answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRecord {
    /// Position among all calls to the fakes sharing one order (see [`Fake::with_order`]).
    pub seq: u64,
    /// Its number among this fake's calls, by arrival (calls that arrive in the same
    /// instant come in the gateway's request order: `world::handoff`).
    pub call: u32,
    pub model: String,
    pub stream: bool,
    /// The partial answer this call was asked to continue, if any.
    pub continuation: Option<String>,
    /// Whether it continued it (its text starts with that partial answer) or, not being
    /// able to, answered in full.
    pub continued: bool,
    pub authorization: Option<String>,
    /// Its `api-key` header (Azure's deployments API takes the key there).
    pub api_key: Option<String>,
    /// The path and query it was posted to.
    pub path_and_query: String,
    /// The gateway's request number (`x-switchback-request-id`), when it sent one.
    pub request_id: Option<u64>,
    /// The text (of choice 0) this call sends before its fault (all of it without one).
    pub planned: String,
    /// What the script does: `ok`, or the fault (`http 429`, `error_event@3 429`, ...).
    pub outcome: String,
    /// Whether the scripted fault actually happened: the error status sent, the error event,
    /// reset, malformed line or `content_filter` chunk written after its k chunks, or the
    /// stall begun. `false` without a fault, and when the caller went away before the
    /// fault's turn: a fault that never fired tested nothing (`probe` checks this).
    pub fault_fired: bool,
    pub body: Value,
    /// Every SSE `data:` payload it wrote, in order (`[DONE]` and error events included),
    /// or, for an answer given as one JSON body, that body.
    pub sent: Vec<String>,
    /// When each of `sent` left, in simulated time (zero outside a simulation): what a
    /// network fault may have kept from the gateway is read from it (`oracle`).
    pub sent_at: Vec<Duration>,
    /// It answered with one JSON body (a non-stream call, or a `json_only` provider).
    pub answered_json: bool,
    /// Its own non-stream answer to this call: what it answers, or would have answered,
    /// to the same request with `stream: false` (absent when that is an error).
    pub own_answer: Option<String>,
    /// Its own answer is not stated though it may be served: a stream cut while every
    /// chunk said the answer had finished (`finish_reasons: every_chunk`).
    pub own_answer_unstated: bool,
    /// Its answer included a hostile flood (whose items `sent` does not list): set when
    /// the flood starts to go out, not when it is scripted.
    pub flooded: bool,
    /// The response headers it sent (its script's, and its dialect's own).
    pub headers: Vec<(String, String)>,
}

pub struct Fake {
    pub spec: Provider,
    calls: AtomicU32,
    /// Connections accepted since the last reset.
    accepted: AtomicU32,
    open: AtomicUsize,
    /// Calls whose answer is still being given (from arrival until its body ends or its
    /// caller goes: a stall counts until the gateway gives up on it).
    answering: Arc<AtomicUsize>,
    log: Mutex<Vec<CallRecord>>,
    /// Whether calls go into `log` (see [`Fake::stop_recording`]).
    recording: AtomicBool,
    sink: Arc<dyn TraceSink>,
    /// Shared by the fakes of one run: the order calls arrived in, across hosts.
    order: Arc<std::sync::atomic::AtomicU64>,
    /// The instructions the gateway in front ends a continuation request with (its
    /// `continuation_prompt`, one per config it runs): what tells Switchback's
    /// continuation from a conversation's next turn, which ends `[..., assistant, user]` too.
    continuation_prompts: Vec<String>,
}

type FakeBody = BoxBody<Bytes, io::Error>;

impl Fake {
    pub fn new(spec: Provider, sink: Arc<dyn TraceSink>) -> Arc<Fake> {
        Fake::with_order(
            spec,
            sink,
            Arc::default(),
            vec![switchback::catalog::DEFAULT_CONTINUATION_PROMPT.to_string()],
        )
    }

    /// A fake whose calls are numbered in one sequence with the other fakes sharing `order`,
    /// behind a gateway that continues answers with one of `continuation_prompts`.
    pub fn with_order(
        spec: Provider,
        sink: Arc<dyn TraceSink>,
        order: Arc<std::sync::atomic::AtomicU64>,
        continuation_prompts: Vec<String>,
    ) -> Arc<Fake> {
        Arc::new(Fake {
            spec,
            calls: AtomicU32::new(0),
            accepted: AtomicU32::new(0),
            open: AtomicUsize::new(0),
            answering: Arc::default(),
            log: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            sink,
            order,
            continuation_prompts,
        })
    }

    /// Stops keeping a record of each call ([`Fake::calls`] then lists none after this).
    /// For a fake that serves load rather than a scenario's oracle (`bench-overhead`,
    /// `load --listen`, `switchback fakes`): its log would grow with every call for as long
    /// as it runs, and each time the log's vector doubled, every call waited behind one
    /// copy of it under the lock (measured in `bench-overhead`: the bench's own runtime
    /// stalled up to 400 ms, at the same round of every run).
    pub fn stop_recording(&self) {
        self.recording.store(false, Ordering::SeqCst);
    }

    /// Forgets every call: the next call is call 1 again (a fresh provider for the next run).
    pub fn reset(&self) {
        self.calls.store(0, Ordering::SeqCst);
        self.accepted.store(0, Ordering::SeqCst);
        self.log.lock().expect("fake log").clear();
    }

    /// Every request received so far, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.log.lock().expect("fake log").clone()
    }

    /// Connections accepted since the last reset.
    pub fn accepted(&self) -> u32 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open to this fake.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Calls whose answer is still being given: a gateway waiting on one (a stall, a slow
    /// first byte) may still call again when it gives up, however long no call arrived.
    pub fn answering(&self) -> usize {
        self.answering.load(Ordering::SeqCst)
    }

    /// Serves connections from `listener` forever.
    pub async fn serve<L: Listener>(self: Arc<Self>, mut listener: L) {
        loop {
            let Ok(Accepted { io, http2, .. }) = listener.accept_negotiated().await else {
                continue;
            };
            let fake = self.clone();
            fake.open.fetch_add(1, Ordering::SeqCst);
            fake.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Counts down however the task ends, a crash of the host included.
                let _open = OpenGuard(fake.clone());
                let svc_fake = fake.clone();
                let service = service_fn(move |req| {
                    let fake = svc_fake.clone();
                    async move {
                        let unlabelled = fake.spec.unlabelled;
                        let mut response = fake.handle(req).await;
                        if unlabelled {
                            response.headers_mut().remove(header::CONTENT_TYPE);
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                if http2 {
                    // Only behind TLS (the benchmark's https variant), which never closes
                    // idle connections itself: `keep_alive_ms` is an HTTP/1.1 setting.
                    let mut builder = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    builder.auto_date_header(false);
                    let _ = builder.serve_connection(TokioIo::new(io), service).await;
                    return;
                }
                let mut builder = hyper::server::conn::http1::Builder::new();
                // hyper's automatic Date comes from the real clock, and the engine measures
                // an HTTP-date Retry-After against the response's Date: real time would
                // reach the trace. A fake sends a Date only when its script says so; without
                // one the engine measures against its own (in simulation, simulated) clock.
                builder.auto_date_header(false);
                match fake.spec.keep_alive_ms {
                    Some(0) => {
                        builder.keep_alive(false);
                    }
                    // hyper's header read timeout runs while it waits for the next request
                    // on a kept connection too: it is how servers close idle connections.
                    Some(ms) => {
                        builder
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(std::time::Duration::from_millis(ms));
                    }
                    None => {}
                }
                let _ = builder.serve_connection(TokioIo::new(io), service).await;
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
        let api_key = req
            .headers()
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or_else(|| path.clone(), |p| p.as_str().to_string());
        let request_id = req
            .headers()
            .get("x-switchback-request-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let request_headers: String = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
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
        let answering = Answering::start(&self.answering);
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
        let first_message = body
            .pointer("/messages/0/content")
            .and_then(Value::as_str)
            .unwrap_or("");
        let script = self.script_for(call, &model, first_message).clone();
        let continuation = continuation_prefix(&body, &self.continuation_prompts);
        let fresh = Reply::new(&self.spec, &script, call, &model, None);
        let full = fresh.text(usize::MAX);
        let continued = continuation.as_deref().is_some_and(|p| full.starts_with(p));
        let mut reply = if continued {
            Reply::new(&self.spec, &script, call, &model, continuation.as_deref())
        } else {
            fresh
        };
        reply.stop_at(&stop_sequences(&body));
        reply.cap_tokens(body.as_object().and_then(token_budget));
        reply.include_usage = include_usage;
        reply.prompt_chars = crate::dialect::async_filter::prompt_chars(&body);
        let fault = if self.spec.refuses_streaming && stream {
            Some(stream_refused())
        } else {
            script.fault.clone()
        };
        let k = fault.as_ref().map_or(reply.pieces.len(), |f| {
            f.after_chunks.min(reply.pieces.len())
        });
        let own_answer = match fault.as_ref().map(|f| f.kind) {
            None => Some(reply.whole(reply.pieces.len(), None)),
            Some(FaultKind::ContentFilter) => Some(reply.whole(k, Some("content_filter"))),
            // A stream's fault after its answer had ended (Gemini's finish rides on its last
            // content chunk): a cut, a reset, a malformed line, an error event or a stall
            // takes nothing away, and the gateway serves the answer as it is.
            Some(
                FaultKind::Cut
                | FaultKind::Reset
                | FaultKind::Malformed
                | FaultKind::ErrorEvent
                | FaultKind::Stall,
            ) if stream && !reply.finish_on_every_chunk && reply.complete_after(k, false) => {
                Some(reply.whole(k, None))
            }
            Some(_) => None,
        };
        // A stream cut while every chunk said the answer had finished is served as the
        // chunks sent add up to: dialect by dialect, fields of the finish chunk never sent
        // (Together's end-of-sequence token, Azure's filter results) would have to be
        // taken out of `whole` again, so its own answer is left unstated.
        let own_answer_unstated = stream
            && reply.finish_on_every_chunk
            && fault.as_ref().is_some_and(|f| {
                f.kind != FaultKind::Http
                    && f.kind != FaultKind::ContentFilter
                    && reply.complete_after(k, f.kind == FaultKind::Cut)
            });
        let mut headers = dialect_headers(&self.spec, call);
        for (k, v) in &script.headers {
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v.clone()));
        }
        let json_answer = !stream || self.spec.dialect == Dialect::JsonOnly;
        let seq = self.order.fetch_add(1, Ordering::SeqCst) + 1;
        // Built only when kept: it copies the request's body.
        if self.recording.load(Ordering::SeqCst) {
            self.log.lock().expect("fake log").push(CallRecord {
                seq,
                call,
                model: model.clone(),
                stream,
                continuation: continuation.clone(),
                continued,
                authorization: authorization.clone(),
                api_key,
                path_and_query,
                request_id,
                planned: reply.text(k),
                outcome: fault.as_ref().map_or_else(
                    || "ok".to_string(),
                    |f| match (f.kind, f.status) {
                        (FaultKind::Http, s) => format!("http {}", s.unwrap_or(429)),
                        (_, Some(s)) => format!("{} {s}", fault_at(f, k)),
                        (_, None) => fault_at(f, k),
                    },
                ),
                fault_fired: false,
                body: body.clone(),
                sent: Vec::new(),
                sent_at: Vec::new(),
                answered_json: false,
                own_answer: own_answer.as_ref().map(Value::to_string),
                own_answer_unstated,
                flooded: false,
                headers: headers.clone(),
            });
        }
        let dialect = match self.spec.dialect {
            Dialect::Openai => String::new(),
            d => format!(" dialect={}", d.as_str()),
        };
        self.trace(format!(
            "received call={call} model={model} stream={stream} continuation={} fault={}{dialect}",
            continuation.as_ref().map_or(0, |p| p.chars().count()),
            fault.as_ref().map_or("-".to_string(), |f| fault_at(f, k)),
        ));
        pause(script.ttfb_ms).await;
        let answer = Answer {
            reply,
            k,
            fault,
            flood: script.flood.clone(),
            head_at_once: script.head_at_once,
            framing: self.spec.framing,
            headers,
            echo: EchoSource {
                authorization: authorization.unwrap_or_default(),
                request_headers,
            },
            log: LogHandle {
                fake: self.clone(),
                seq,
            },
            _answering: answering,
        };
        if json_answer {
            answer.whole().await
        } else {
            answer.stream()
        }
    }

    fn script_for(&self, call: u32, model: &str, first_message: &str) -> &Script {
        self.spec
            .calls
            .iter()
            .find(|s| {
                (s.calls.is_empty() || s.calls.contains(&call))
                    && s.every.is_none_or(|n| call % n == 0)
                    && s.for_model.as_deref().is_none_or(|m| m == model)
                    && s.for_first_message
                        .as_deref()
                        .is_none_or(|m| m == first_message)
            })
            .unwrap_or(&self.spec.default)
    }
}

/// A fault as the trace shows it: `kind@k`, where `k` is the chunk it fires after. Where the
/// answer has fewer chunks than scripted (a continuation's answer is only its rest), the fault
/// fires after the last one, and the trace says so rather than print an offset that never was.
fn fault_at(fault: &Fault, k: usize) -> String {
    if k == fault.after_chunks {
        format!("{}@{k}", fault.kind.as_str())
    } else {
        format!(
            "{}@{k} (scripted @{})",
            fault.kind.as_str(),
            fault.after_chunks
        )
    }
}

/// Waits `ms` milliseconds; no wait at all for 0 (a zero-length timer still waits for the
/// timer wheel's next tick, about a millisecond on real clocks).
async fn pause(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Writes into one call's record as its answer goes out.
struct LogHandle {
    fake: Arc<Fake>,
    seq: u64,
}

impl LogHandle {
    fn with(&self, f: impl FnOnce(&mut CallRecord)) {
        let mut log = self.fake.log.lock().expect("fake log");
        if let Some(c) = log.iter_mut().rev().find(|c| c.seq == self.seq) {
            f(c);
        }
    }

    /// The scripted fault happened.
    fn fire(&self) {
        self.with(|c| c.fault_fired = true);
    }

    /// A `data:` payload (or a whole JSON body) left.
    fn sent(&self, payload: String, json: bool) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        self.with(|c| {
            c.sent.push(payload);
            c.sent_at.push(at);
            c.answered_json |= json;
        });
    }
}

struct OpenGuard(Arc<Fake>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The request's `stop` sequences: one string or an array of them.
pub fn stop_sequences(body: &Value) -> Vec<String> {
    match body.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The request's token budget: `max_completion_tokens`, else `max_tokens` (as the
/// gateway reads it, and OpenAI).
pub fn token_budget(body: &serde_json::Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|f| body.get(*f).and_then(Value::as_u64))
}

/// A continuation request ends with the partial answer (assistant) and the gateway's
/// instruction (user: one of `prompts`, its `continuation_prompt`), as Switchback sends it, or with
/// the partial answer itself as an assistant prefix (after a system instruction), as LiteLLM
/// sends it (`litellm/router.py`, `stream_with_fallbacks`: `{"role": "assistant", "content":
/// ..., "prefix": True}`). The fake continues it when its own text starts with that partial
/// answer. A user turn that is not the instruction is a conversation's next turn, answered
/// whole.
fn continuation_prefix(body: &Value, prompts: &[String]) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_string);
    let partial = match messages.as_slice() {
        [.., last] if role(last).as_deref() == Some("assistant") => last,
        [.., prev, last]
            if role(prev).as_deref() == Some("assistant")
                && role(last).as_deref() == Some("user")
                && last
                    .get("content")
                    .and_then(Value::as_str)
                    .is_some_and(|said| prompts.iter().any(|p| p == said)) =>
        {
            prev
        }
        _ => return None,
    };
    let prefix = partial.get("content")?.as_str()?;
    (!prefix.is_empty()).then(|| prefix.to_string())
}

/// The headers a provider of this dialect sends with every answer: its request id and
/// its processing time, as OpenAI and Azure do.
fn dialect_headers(spec: &Provider, call: u32) -> Vec<(String, String)> {
    match spec.dialect {
        Dialect::Openai | Dialect::Azure | Dialect::JsonOnly => vec![
            ("x-request-id".into(), format!("req_{}_{call}", spec.host)),
            ("openai-processing-ms".into(), "7".into()),
        ],
        Dialect::Gemini
        | Dialect::Ollama
        | Dialect::Vllm
        | Dialect::Sglang
        | Dialect::Minimax
        | Dialect::Together
        | Dialect::Kimi
        | Dialect::Perplexity => Vec::new(),
    }
}

/// What a hostile upstream can repeat of the request.
struct EchoSource {
    authorization: String,
    request_headers: String,
}

/// One answer, ready to be sent either way.
struct Answer {
    reply: Reply,
    /// Pieces sent before the fault (all of them without one).
    k: usize,
    fault: Option<Fault>,
    flood: Option<Flood>,
    /// A JSON answer's head goes out before its body is ready (see [`Script::head_at_once`]).
    head_at_once: bool,
    framing: Framing,
    headers: Vec<(String, String)>,
    echo: EchoSource,
    log: LogHandle,
    /// Held for as long as the answer is being given (see [`Fake::answering`]).
    _answering: Answering,
}

/// One call counted in [`Fake::answering`] until dropped.
struct Answering(Arc<AtomicUsize>);

impl Answering {
    fn start(count: &Arc<AtomicUsize>) -> Answering {
        count.fetch_add(1, Ordering::SeqCst);
        Answering(Arc::clone(count))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends one `data:` payload, framed and written as the provider does, and records it;
/// false when the caller is gone.
async fn send_data(
    tx: &mpsc::Sender<Result<Bytes, io::Error>>,
    log: &LogHandle,
    framing: Framing,
    payload: String,
) -> bool {
    if !send_framed(tx, framing, framing.event(&payload)).await {
        return false;
    }
    log.sent(payload, false);
    true
}

/// Writes already framed SSE text as the provider makes its writes (`write_bytes`); false
/// when the caller is gone.
async fn send_framed(
    tx: &mpsc::Sender<Result<Bytes, io::Error>>,
    framing: Framing,
    text: String,
) -> bool {
    for write in framing.writes(Bytes::from(text)) {
        if tx.send(Ok(write)).await.is_err() {
            return false;
        }
    }
    true
}

impl Answer {
    /// Sends the flood, if it comes after `at` pieces; false when the caller is gone.
    async fn flood_at(
        &self,
        at: usize,
        tx: &mpsc::Sender<Result<Bytes, io::Error>>,
        log: &LogHandle,
    ) -> bool {
        let Some(flood) = self.flood.as_ref().filter(|f| f.after_chunks == at) else {
            return true;
        };
        // Only a flood that goes out marks the call: one scripted after the fault never
        // does, and the checks it switches off (passthrough) must then still run.
        log.with(|c| c.flooded = true);
        for i in 0..flood.count {
            // Framed as the provider frames its events: a gateway must read a flood in CRLF
            // or cut across reads as it reads the answer.
            let item = match flood.kind {
                FloodKind::Comments => self.framing.comment(&"x".repeat(flood.pad.max(1))),
                FloodKind::RoleOnly => self
                    .framing
                    .event(&self.reply.role_only(0, flood.pad).to_string()),
                FloodKind::NewChoiceIndex => self.framing.event(
                    &self
                        .reply
                        .role_only(self.reply.choices + i, flood.pad)
                        .to_string(),
                ),
                FloodKind::NewChoiceContent => self
                    .framing
                    .event(&self.reply.content_for(self.reply.choices + i).to_string()),
            };
            if !send_framed(tx, self.framing, item).await {
                return false;
            }
        }
        true
    }

    fn error_body(&self, f: &Fault, event: bool) -> Value {
        match f.echo {
            Some(Echo::Authorization) => {
                let mut echoed = f.clone();
                echoed.message = Some(format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    self.echo.authorization
                ));
                error_body(&echoed, event)
            }
            Some(Echo::Headers) if event => {
                let mut echoed = f.clone();
                echoed.message = Some(format!(
                    "upstream failed; request was: {}",
                    self.echo.request_headers.replace('\n', "; ")
                ));
                error_body(&echoed, event)
            }
            Some(Echo::Param) => {
                let mut body = error_body(f, event);
                let key = self
                    .echo
                    .authorization
                    .strip_prefix("Bearer ")
                    .unwrap_or(&self.echo.authorization);
                // Where the flavour has an error object, as OpenAI's 400 has its `param`.
                if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
                    error.insert("param".into(), Value::String(key.to_string()));
                }
                body
            }
            _ => error_body(f, event),
        }
    }

    fn http_error(&self, f: &Fault) -> Response<FakeBody> {
        let status = f.status.unwrap_or(429);
        let mut r = if f.echo == Some(Echo::Headers) {
            let mut r = Response::new(full(format!(
                "Internal error while handling:\n{}",
                self.echo.request_headers
            )));
            *r.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            add_headers(&mut r, &self.headers);
            r
        } else {
            json_response(status, &self.error_body(f, false), &self.headers)
        };
        if let Some(ra) = f.retry_after {
            r.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&fmt_secs(ra)).expect("number"),
            );
        }
        r
    }

    /// A LiteLLM proxy's failure on the first read of a stream: the error's status, but
    /// the body an event stream of one error event.
    fn http_error_as_event(&self, f: &Fault) -> Response<FakeBody> {
        let mut r = self.http_error(f);
        *r.body_mut() = full(format!("data: {}\n\n", error_body(f, false)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        r
    }

    fn stream(self) -> Response<FakeBody> {
        if let Some(f) = self.fault.as_ref().filter(|f| f.kind == FaultKind::Http) {
            self.log.fire();
            if f.flavour == Flavour::Litellm && f.echo.is_none() {
                return self.http_error_as_event(f);
            }
            return self.http_error(f);
        }
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
        let mut response = Response::new(ChannelBody::new(rx).boxed());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        add_headers(&mut response, &self.headers);
        tokio::spawn(async move {
            let log = &self.log;
            for chunk in self.reply.opening() {
                if !send_data(&tx, log, self.framing, chunk.to_string()).await {
                    return;
                }
            }
            let k = self.k;
            for i in 0..k {
                if !self.flood_at(i, &tx, log).await {
                    return;
                }
                pause(self.reply.pieces[i].delay_ms).await;
                if !send_data(&tx, log, self.framing, self.reply.piece(i).to_string()).await {
                    return;
                }
                // Azure's async-filter annotations follow the text they are about at once.
                for annotation in self.reply.annotations_after(i) {
                    if !send_data(&tx, log, self.framing, annotation.to_string()).await {
                        return;
                    }
                }
            }
            if !self.flood_at(k, &tx, log).await {
                return;
            }
            if let Some(f) = &self.fault {
                if let Some(p) = self.reply.pieces.get(k) {
                    pause(p.delay_ms).await;
                }
                match f.kind {
                    FaultKind::Http => unreachable!("handled before streaming"),
                    FaultKind::ErrorEvent if f.flavour == Flavour::LlamaCpp => {
                        let error = self.error_body(f, true).to_string();
                        let line = self.framing.field_event("error", &error);
                        if send_framed(&tx, self.framing, line).await {
                            log.sent(error, false);
                            log.fire();
                            send_data(&tx, log, self.framing, "[DONE]".into()).await;
                        }
                    }
                    FaultKind::ErrorEvent if f.flavour == Flavour::Vllm => {
                        let abort = json!({"id": self.reply.id, "object": "chat.completion.chunk",
                            "created": crate::dialect::CREATED, "model": self.reply.model,
                            "choices": [{"index": 0, "delta": {}, "logprobs": null,
                                "finish_reason": "abort", "stop_reason": null}]});
                        if send_data(&tx, log, self.framing, abort.to_string()).await {
                            log.fire();
                            send_data(&tx, log, self.framing, "[DONE]".into()).await;
                        }
                    }
                    FaultKind::ErrorEvent => {
                        if send_data(&tx, log, self.framing, self.error_body(f, true).to_string())
                            .await
                        {
                            log.fire();
                        }
                    }
                    FaultKind::Reset => {
                        let reset =
                            io::Error::new(io::ErrorKind::ConnectionReset, "scripted reset");
                        if tx.send(Err(reset)).await.is_ok() {
                            log.fire();
                        }
                    }
                    FaultKind::Stall => {
                        // Hold the connection open with no bytes until the peer gives up.
                        log.fire();
                        tx.closed().await;
                    }
                    FaultKind::Malformed => {
                        let line = self.framing.event("{\"id\": \"broken");
                        if send_framed(&tx, self.framing, line).await {
                            log.fire();
                        }
                    }
                    FaultKind::ContentFilter => {
                        for chunk in self.reply.filtered_after(k) {
                            if !send_data(&tx, log, self.framing, chunk.to_string()).await {
                                return;
                            }
                            // The fault is the first chunk that says `content_filter` (Azure's
                            // async filter sends the usage chunk and a safe annotation first).
                            if says_content_filter(&chunk) {
                                log.fire();
                            }
                        }
                        send_data(&tx, log, self.framing, "[DONE]".into()).await;
                    }
                    FaultKind::Cut => {
                        // The body ends here, cleanly: the sender goes, and with it the
                        // body's last frame.
                        log.fire();
                    }
                }
                return;
            }
            for chunk in self.reply.closing() {
                if !send_data(&tx, log, self.framing, chunk.to_string()).await {
                    return;
                }
            }
            send_data(&tx, log, self.framing, "[DONE]".into()).await;
        });
        response
    }

    /// A JSON answer: its head once the body is ready, or at once (`head_at_once`) with
    /// the body following when it is.
    async fn whole(mut self) -> Response<FakeBody> {
        if !std::mem::take(&mut self.head_at_once) {
            return self.whole_when_ready().await;
        }
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
        let mut head = Response::new(ChannelBody::new(rx).boxed());
        head.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        add_headers(&mut head, &self.headers);
        tokio::spawn(async move {
            // A caller that leaves before the answer is ready takes no fault with it.
            let answer = tokio::select! {
                biased;
                _ = tx.closed() => return,
                answer = self.whole_when_ready() => answer,
            };
            let mut body = answer.into_body();
            while let Some(frame) = body.frame().await {
                let sent = match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => tx.send(Ok(data)).await,
                        Err(_) => continue,
                    },
                    Err(e) => tx.send(Err(e)).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        head
    }

    async fn whole_when_ready(self) -> Response<FakeBody> {
        if let Some(f) = self.fault.as_ref().filter(|f| f.kind == FaultKind::Http) {
            self.log.fire();
            return self.http_error(f);
        }
        let k = self.k;
        let waited: u64 = self.reply.pieces[..k]
            .iter()
            .map(|p| p.delay_ms)
            .sum::<u64>()
            + self
                .fault
                .as_ref()
                .and_then(|_| self.reply.pieces.get(k))
                .map_or(0, |p| p.delay_ms);
        pause(waited).await;
        // The caller waited this long (the future was not dropped): the fault happens now.
        if self.fault.is_some() {
            self.log.fire();
        }
        let answer = |finish: Option<&str>, upto: usize| {
            let body = self.reply.whole(upto, finish).to_string();
            self.log.sent(body.clone(), true);
            let mut r = Response::new(full(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            add_headers(&mut r, &self.headers);
            r
        };
        match &self.fault {
            None => answer(None, self.reply.pieces.len()),
            Some(f) => match f.kind {
                FaultKind::Http => unreachable!("handled above"),
                FaultKind::ErrorEvent => {
                    let mut r = json_response(
                        f.status.unwrap_or(429),
                        &self.error_body(f, false),
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
                FaultKind::ContentFilter => answer(Some("content_filter"), k),
                FaultKind::Cut => {
                    // Half of the answer's JSON, then a clean end.
                    let whole = self.reply.whole(self.reply.pieces.len(), None).to_string();
                    let cut: String = whole.chars().take(whole.chars().count() / 2).collect();
                    self.log.sent(cut.clone(), true);
                    let mut r = Response::new(full(cut));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    add_headers(&mut r, &self.headers);
                    r
                }
            },
        }
    }
}

/// Whether a chunk ends a choice with `finish_reason: content_filter`.
fn says_content_filter(chunk: &Value) -> bool {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|choices| {
            choices
                .iter()
                .any(|c| c.get("finish_reason").and_then(Value::as_str) == Some("content_filter"))
        })
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

/// OpenAI's 400 for a streamed call of o3 or gpt-5 from an organisation not verified.
fn stream_refused() -> Fault {
    Fault {
        kind: FaultKind::Http,
        after_chunks: 0,
        status: Some(400),
        retry_after: None,
        flavour: Flavour::Openai,
        code: Some("unsupported_value".into()),
        message: Some(
            "Your organization must be verified to stream this model. Please go to: \
             https://platform.openai.com/settings/organization/general and click on Verify \
             Organization. If you just verified, it can take up to 15 minutes for access to \
             propagate."
                .into(),
        ),
        param: Some("stream".into()),
        echo: None,
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
            json!({"error": {"message": message, "type": kind, "code": code, "param": f.param}})
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
        Flavour::Vllm => {
            let kind = match status {
                400..=499 => "BadRequestError",
                503 => "ServiceUnavailableError",
                _ => "InternalServerError",
            };
            json!({"object": "error", "message": message, "type": kind, "param": f.param, "code": status})
        }
        Flavour::Litellm => {
            json!({"error": {"message": message, "type": null, "param": null, "code": status.to_string()}})
        }
        Flavour::LlamaCpp => {
            let kind = match status {
                400..=499 => "invalid_request_error",
                503 => "unavailable_error",
                _ => "server_error",
            };
            let e = json!({"code": status, "message": message, "type": kind});
            // Its stream's error field holds the bare object; it sends no Retry-After.
            return if event { e } else { json!({"error": e}) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_are_read_in_switchback_and_litellm_shapes() {
        let prompt = switchback::catalog::DEFAULT_CONTINUATION_PROMPT;
        let prompts = [prompt.to_string()];
        let switchback = json!({"messages": [
            {"role": "user", "content": "say ping"},
            {"role": "assistant", "content": "The q"},
            {"role": "user", "content": prompt},
        ]});
        let litellm = json!({"messages": [
            {"role": "user", "content": "say ping"},
            {"role": "system", "content": "respond in continuation of this text: "},
            {"role": "assistant", "content": "The q", "prefix": true},
        ]});
        let fresh = json!({"messages": [{"role": "user", "content": "say ping"}]});
        assert_eq!(
            continuation_prefix(&switchback, &prompts).as_deref(),
            Some("The q")
        );
        assert_eq!(
            continuation_prefix(&litellm, &prompts).as_deref(),
            Some("The q")
        );
        assert_eq!(continuation_prefix(&fresh, &prompts), None);
        // A conversation's earlier answer, then the user's next turn, is no continuation:
        // the fake answered it with the rest of an answer it took for cut short.
        let next_turn = json!({"messages": [
            {"role": "user", "content": "say ping"},
            {"role": "assistant", "content": "The q"},
            {"role": "user", "content": "and again?"},
        ]});
        assert_eq!(continuation_prefix(&next_turn, &prompts), None);
        // A gateway configured with its own prompt continues with that one.
        let own_prompts = ["Go on.".to_string()];
        assert_eq!(continuation_prefix(&switchback, &own_prompts), None);
        let mut own = switchback.clone();
        own["messages"][2]["content"] = json!("Go on.");
        assert_eq!(
            continuation_prefix(&own, &own_prompts).as_deref(),
            Some("The q")
        );
    }
}
