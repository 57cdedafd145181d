//! The two ways an answer reaches the client: as an SSE stream, or as one JSON body.
//!
//! Owns: [`StreamDelivery`] (response head at commit, `data:` frames through a bounded
//! channel, the final metadata event, `[DONE]` or a typed error event) and
//! [`AggregateDelivery`] (merging chunks into one `chat.completion`). Both implement the
//! attempt loop's [`Delivery`] seam; neither takes a routing decision.

use std::collections::BTreeMap;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::attempt::{ClientGone, CommitHead, Delivery, GoneReason, Outcome};
use crate::catalog::Catalog;
use crate::error::ApiError;
use crate::frames::{self, FrameReceiver, FrameSender, SendError};
use crate::upstream::chunk::Chunk;

/// Response headers reporting what the engine did.
pub const HEADER_RETRIES: &str = "x-switchback-attempted-retries";
pub const HEADER_FALLBACKS: &str = "x-switchback-attempted-fallbacks";
pub const HEADER_GROUP: &str = "x-switchback-model-group";
pub const HEADER_DEPLOYMENT: &str = "x-switchback-deployment";
pub const HEADER_REQUEST_ID: &str = "x-switchback-request-id";

/// What the HTTP handler of a streaming request waits for.
#[derive(Debug)]
pub enum StreamStart {
    /// Committed: answer 200 with these headers and stream the body channel.
    Committed(CommitHead),
    /// Failed before commit: answer with this error, exactly as a non-stream request would.
    Failed(ApiError),
}

/// How much a streaming client may make the gateway buffer, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct StreamBounds {
    pub frames: usize,
    pub bytes: usize,
    /// Longest wait for the client to take the next frame.
    pub write_timeout: Duration,
    /// The request's deadline: no write waits past it.
    pub deadline: Instant,
}

/// Delivery for `stream: true`.
pub struct StreamDelivery {
    start: Option<oneshot::Sender<StreamStart>>,
    body: FrameSender,
    bounds: StreamBounds,
    include_usage: bool,
    /// `choices[0]` text the client has received: what a continuation continues from.
    delivered_text: String,
    last_created: Option<Value>,
}

impl StreamDelivery {
    pub fn new(
        include_usage: bool,
        bounds: StreamBounds,
    ) -> (
        StreamDelivery,
        oneshot::Receiver<StreamStart>,
        FrameReceiver,
    ) {
        let (start_tx, start_rx) = oneshot::channel();
        let (body_tx, body_rx) = frames::channel(bounds.frames, bounds.bytes);
        (
            StreamDelivery {
                start: Some(start_tx),
                body: body_tx,
                bounds,
                include_usage,
                delivered_text: String::new(),
                last_created: None,
            },
            start_rx,
            body_rx,
        )
    }

    async fn send(&self, frame: Bytes) -> Result<(), ClientGone> {
        let until = (Instant::now() + self.bounds.write_timeout).min(self.bounds.deadline);
        self.body.send(frame, until).await.map_err(|e| match e {
            SendError::Closed => ClientGone(GoneReason::Left),
            SendError::TimedOut => ClientGone(GoneReason::TooSlow),
        })
    }

    /// Ends the stream after the loop: metadata event if anything happened after commit,
    /// then `[DONE]`; or a typed error event (no `[DONE]`); or, if nothing was committed,
    /// the error response.
    pub async fn finish(mut self, outcome: &Outcome, catalog: &Catalog, response_id: &str) {
        if outcome.client_gone {
            return;
        }
        let Some((retries_at_commit, fallbacks_at_commit)) = outcome.at_commit else {
            let error = match &outcome.result {
                Err(unserved) => ApiError::from_failure(&unserved.failure, &unserved.summary),
                Ok(_) => unreachable!("a served request has committed"),
            };
            if let Some(start) = self.start.take() {
                let _ = start.send(StreamStart::Failed(error));
            }
            return;
        };
        match &outcome.result {
            Ok(served) => {
                if outcome.retries != retries_at_commit || outcome.fallbacks != fallbacks_at_commit
                {
                    let mut meta = json!({
                        "id": response_id,
                        "object": "chat.completion.chunk",
                        "model": served.model,
                        "choices": [],
                        "switchback": {
                            "attempted_retries": outcome.retries,
                            "attempted_fallbacks": outcome.fallbacks,
                            "model_group": catalog.group(served.group).name,
                            "deployment": catalog.deployment(served.deployment).id,
                        }
                    });
                    if let Some(created) = self.last_created.take() {
                        meta["created"] = created;
                    }
                    let _ = self.send(sse_frame(&meta)).await;
                }
                let _ = self.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            }
            Err(unserved) => {
                let error = ApiError::from_failure(&unserved.failure, &unserved.summary);
                let mut body = error.body_json();
                body["error"]["status"] = json!(error.status);
                let _ = self.send(sse_frame(&body)).await;
            }
        }
    }
}

fn sse_frame(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut out, value).expect("a JSON value always serialises");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl Delivery for StreamDelivery {
    async fn commit(&mut self, head: CommitHead) -> Result<(), ClientGone> {
        let start = self.start.take().expect("commit happens once");
        start
            .send(StreamStart::Committed(head))
            .map_err(|_| ClientGone(GoneReason::Left))
    }

    async fn gone(&mut self) -> GoneReason {
        match &mut self.start {
            // Before commit the handler waits on `start`; it is dropped with the connection.
            Some(start) => start.closed().await,
            None => self.body.closed().await,
        }
        GoneReason::Left
    }

    async fn chunk(&mut self, chunk: Chunk) -> Result<(), ClientGone> {
        if chunk.usage_only && !self.include_usage {
            return Ok(());
        }
        self.delivered_text.push_str(&chunk.text);
        if let Some(created) = chunk.object.get("created") {
            self.last_created = Some(created.clone());
        }
        let frame = sse_frame(&Value::Object(chunk.object));
        self.send(frame).await
    }

    fn restart(&mut self) -> Option<String> {
        Some(self.delivered_text.clone())
    }
}

/// Delivery for `stream: false`: merges chunks into one `chat.completion`.
#[derive(Debug, Default)]
pub struct AggregateDelivery {
    head: Option<CommitHead>,
    model: Option<String>,
    created: Option<Value>,
    system_fingerprint: Option<Value>,
    usage: Option<Value>,
    choices: BTreeMap<u64, ChoiceAcc>,
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    content: Option<String>,
    refusal: Option<String>,
    finish_reason: Option<Value>,
    tool_calls: BTreeMap<u64, Map<String, Value>>,
}

impl AggregateDelivery {
    pub fn new() -> AggregateDelivery {
        AggregateDelivery::default()
    }

    /// The response body of a served request.
    pub fn response(&self, response_id: &str) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|(index, c)| {
                let mut message = json!({"role": "assistant", "content": c.content});
                if let Some(r) = &c.refusal {
                    message["refusal"] = json!(r);
                }
                if !c.tool_calls.is_empty() {
                    message["tool_calls"] =
                        Value::Array(c.tool_calls.values().cloned().map(Value::Object).collect());
                }
                json!({"index": index, "message": message, "finish_reason": c.finish_reason})
            })
            .collect();
        let mut body = json!({
            "id": response_id,
            "object": "chat.completion",
            "created": self.created.clone().unwrap_or(json!(0)),
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = &self.usage {
            body["usage"] = u.clone();
        }
        if let Some(f) = &self.system_fingerprint {
            body["system_fingerprint"] = f.clone();
        }
        body
    }

    pub fn head(&self) -> Option<&CommitHead> {
        self.head.as_ref()
    }

    /// The merged text of choice 0.
    pub fn text(&self) -> &str {
        self.choices
            .get(&0)
            .and_then(|c| c.content.as_deref())
            .unwrap_or("")
    }
}

impl Delivery for AggregateDelivery {
    async fn commit(&mut self, head: CommitHead) -> Result<(), ClientGone> {
        self.head = Some(head);
        Ok(())
    }

    /// A non-streaming client that leaves drops the whole request future (the HTTP server
    /// cancels it), so there is nothing to watch here.
    async fn gone(&mut self) -> GoneReason {
        std::future::pending().await
    }

    async fn chunk(&mut self, chunk: Chunk) -> Result<(), ClientGone> {
        self.model = chunk.model.clone().or(self.model.take());
        let o = &chunk.object;
        if let Some(c) = o.get("created") {
            self.created = Some(c.clone());
        }
        if let Some(f) = o.get("system_fingerprint").filter(|f| !f.is_null()) {
            self.system_fingerprint = Some(f.clone());
        }
        if let Some(u) = o.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let Some(Value::Array(choices)) = o.get("choices") else {
            return Ok(());
        };
        for (i, choice) in choices.iter().enumerate() {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64);
            let acc = self.choices.entry(index).or_default();
            let delta = choice.get("delta").or_else(|| choice.get("message"));
            if let Some(delta) = delta {
                if let Some(text) = delta.get("content").and_then(Value::as_str) {
                    acc.content.get_or_insert_with(String::new).push_str(text);
                }
                if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
                    acc.refusal.get_or_insert_with(String::new).push_str(text);
                }
                if let Some(Value::Array(calls)) = delta.get("tool_calls") {
                    for (j, call) in calls.iter().enumerate() {
                        merge_tool_call(&mut acc.tool_calls, j as u64, call);
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                acc.finish_reason = Some(reason.clone());
            }
        }
        Ok(())
    }

    fn restart(&mut self) -> Option<String> {
        let head = self.head.take();
        *self = AggregateDelivery {
            head,
            ..AggregateDelivery::default()
        };
        None
    }
}

/// Tool-call deltas arrive in pieces: ids and names once, `arguments` a fragment at a time.
fn merge_tool_call(calls: &mut BTreeMap<u64, Map<String, Value>>, position: u64, delta: &Value) {
    let index = delta
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position);
    let call = calls.entry(index).or_default();
    for field in ["id", "type"] {
        if let Some(v) = delta.get(field).filter(|v| !v.is_null()) {
            call.insert(field.into(), v.clone());
        }
    }
    if let Some(Value::Object(f)) = delta.get("function") {
        let function = call
            .entry("function")
            .or_insert_with(|| json!({"name": "", "arguments": ""}));
        for field in ["name", "arguments"] {
            if let Some(piece) = f.get(field).and_then(Value::as_str) {
                let merged = format!("{}{piece}", function[field].as_str().unwrap_or(""));
                function[field] = Value::String(merged);
            }
        }
    }
}
