//! The two ways an answer reaches the client: as an SSE stream, or as one JSON body.
//!
//! Owns: [`StreamDelivery`] (response head at commit, `data:` frames through a bounded
//! channel, the metadata of what happened after commit, `[DONE]` or a typed error event)
//! and [`AggregateDelivery`] (one `chat.completion`, by OpenAI's accumulation, or the
//! upstream's own completion byte for byte when it answered with one). Both implement the
//! attempt loop's [`Delivery`] seam; neither takes a routing decision.
//!
//! Post-commit metadata (retries or fallbacks after the first chunk) rides on the stream's
//! last chunk as a `switchback` field: the chunk with the answer's last `finish_reason`
//! (held back until the upstream's `[DONE]`), or the usage chunk when the client asked for
//! one. It never arrives as a chunk of its own with `choices: []`, which the canonical
//! `chunk.choices[0].delta.content` loop cannot take.
//!
//! Only the answer's end is held back: with `n > 1`, a choice that finishes while another
//! goes on is sent as it comes, and so is everything after it. Both deliveries hold and drop
//! by the one rule in [`crate::held_end`], so that both modes answer alike.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::accumulate::Accumulator;
use crate::attempt::{ClientGone, CommitHead, Delivery, GoneReason, Outcome};
use crate::catalog::Catalog;
use crate::error::ApiError;
use crate::frames::{self, FrameReceiver, FrameSender, SendError};
use crate::held_end::HeldEnd;
use crate::json::{field, field_mut};
use crate::upstream::chunk::Chunk;
use crate::upstream::chunk_object::{ChunkObject, Top};

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
    /// How long the client may go without a byte while the gateway waits on its own
    /// account after commit (see [`Delivery::waiting`]); `None`: no keep-alive.
    pub keep_alive: Option<Duration>,
}

/// The shortest keep-alive interval, whatever read timeout a client advertises: a client
/// that waits less than twice this for a byte is given one this often.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);

impl StreamBounds {
    /// The keep-alive interval for a client: `limit` (`limits.stream_keep_alive`), and at
    /// most half the read timeout the client advertised (`read_timeout`), so that a comment
    /// reaches it before its timeout would fire; never below [`MIN_KEEP_ALIVE`], whatever
    /// either says (a limit of a microsecond would be a comment per timer tick). Only
    /// openai-python's read timeout bounds each read of a stream: openai-node's timeout
    /// stops at the response's head, so it says nothing about the stream.
    pub fn keep_alive_for(
        limit: Option<Duration>,
        read_timeout: Option<Duration>,
    ) -> Option<Duration> {
        let limit = limit?;
        let every = match read_timeout {
            Some(wait) => limit.min(wait / 2),
            None => limit,
        };
        Some(every.max(MIN_KEEP_ALIVE))
    }
}

/// Delivery for `stream: true`.
pub struct StreamDelivery {
    start: Option<oneshot::Sender<StreamStart>>,
    body: FrameSender,
    bounds: StreamBounds,
    include_usage: bool,
    /// The answer's possible end: held until the end so the metadata can ride on it, and
    /// so that a finish a continuation goes on from never reaches the client.
    held: HeldEnd,
    /// The `created` of the last chunk that had one: a metadata chunk of Switchback's own
    /// carries it, as every chunk must.
    created: Option<Value>,
    /// Content a failed attempt had in its held tail (Gemini puts the finish reason on the
    /// last content chunk): the client's all the same, since the continuation goes on from
    /// it, so it is sent before anything else, without the finish reason that no longer
    /// ends the answer.
    carried: Vec<Chunk>,
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
        let (body_tx, body_rx) = frames::channel(bounds.frames, bounds.bytes, bounds.keep_alive);
        (
            StreamDelivery {
                start: Some(start_tx),
                body: body_tx,
                bounds,
                include_usage,
                held: HeldEnd::default(),
                created: None,
                carried: Vec::new(),
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

    /// Sends the content a failed attempt's tail carried.
    async fn send_carried(&mut self) -> Result<(), ClientGone> {
        for chunk in std::mem::take(&mut self.carried) {
            if self.deliverable(&chunk) {
                self.send(sse_frame(&chunk)).await?;
            }
        }
        Ok(())
    }

    /// Sends held chunks the answer went on past.
    async fn send_released(&mut self, released: Vec<Chunk>) -> Result<(), ClientGone> {
        for chunk in released {
            if self.deliverable(&chunk) {
                self.send(sse_frame(&chunk)).await?;
            }
        }
        Ok(())
    }

    /// Ends the stream after the loop: the held tail (carrying the metadata if anything
    /// happened after commit), then `[DONE]`; or a typed error event (no `[DONE]`); or, if
    /// nothing was committed, the error response.
    async fn finish(&mut self, outcome: &Outcome, catalog: &Catalog) -> Result<(), ClientGone> {
        debug_assert!(!outcome.client_gone, "the loop's own end for a client gone");
        let Some((retries_at_commit, fallbacks_at_commit)) = outcome.at_commit else {
            let error = match &outcome.result {
                Err(unserved) => ApiError::from_failure(&unserved.failure, &unserved.summary),
                Ok(_) => unreachable!("a served request has committed"),
            };
            // The handler answers with the error; a client gone before it is hyper's to see.
            if let Some(start) = self.start.take() {
                let _ = start.send(StreamStart::Failed(error));
            }
            return Ok(());
        };
        if outcome.result.is_err() {
            // No continuation follows: the held tail's content (Gemini's last content chunk
            // carries the finish reason) is the client's all the same, and goes out before
            // the error event, without a finish reason the error belies.
            self.restart();
        }
        self.send_carried().await?;
        match &outcome.result {
            Ok(served) => {
                let mut tail = self.held.end();
                let mut carrier = None;
                if outcome.retries != retries_at_commit || outcome.fallbacks != fallbacks_at_commit
                {
                    let meta = json!({
                        "attempted_retries": outcome.retries,
                        "attempted_fallbacks": outcome.fallbacks,
                        "model_group": catalog.group(served.group).name,
                        "deployment": catalog.deployment(served.deployment).id,
                    });
                    carrier = Some(self.attach_meta(&mut tail, meta, outcome, &served.model));
                }
                for (i, chunk) in tail.into_iter().enumerate() {
                    if carrier == Some(i) || self.deliverable(&chunk) {
                        self.send(sse_frame(&chunk)).await?;
                    }
                }
                self.send(Bytes::from_static(b"data: [DONE]\n\n")).await?;
            }
            Err(unserved) => {
                let error = ApiError::from_failure(&unserved.failure, &unserved.summary);
                let mut body = error.body_json();
                body["error"]["status"] = json!(error.status);
                self.send(sse_frame_value(&body)).await?;
            }
        }
        self.body.end();
        Ok(())
    }

    /// Puts `meta` on the usage chunk when the client gets one, else on the chunk with the
    /// finish reason; an answer that had neither gets a chunk with an empty delta for it.
    /// Returns the carrier's place in `tail`: the client gets it, whatever it is.
    fn attach_meta(
        &self,
        tail: &mut Vec<Chunk>,
        meta: Value,
        outcome: &Outcome,
        model: &str,
    ) -> usize {
        let carrier = tail
            .iter()
            .rposition(|c| c.usage_only && self.include_usage)
            .or_else(|| tail.iter().position(|c| c.finish_reason.is_some()));
        match carrier {
            Some(i) => {
                tail[i].object.insert("switchback", Top::Json(meta));
                tail[i].raw = None;
                i
            }
            None => {
                let mut object = Map::new();
                object.insert("id".into(), json!(outcome.response_id));
                object.insert("object".into(), json!("chat.completion.chunk"));
                if let Some(created) = &self.created {
                    object.insert("created".into(), created.clone());
                }
                object.insert("model".into(), json!(model));
                object.insert(
                    "choices".into(),
                    json!([{"index": 0, "delta": {}, "finish_reason": null}]),
                );
                object.insert("switchback".into(), meta);
                tail.push(Chunk {
                    object: ChunkObject::from_map(object),
                    model: Some(model.to_string()),
                    text: String::new(),
                    payload_bytes: 0,
                    finish_reason: None,
                    usage_only: false,
                    continuable: true,
                    whole: None,
                    raw: None,
                });
                tail.len() - 1
            }
        }
    }

    /// Whether the client gets this chunk: the usage chunk only if it asked for usage. (The
    /// chunk carrying the gateway's metadata is sent by place, never by a field an
    /// upstream could send as well.)
    fn deliverable(&self, chunk: &Chunk) -> bool {
        !chunk.usage_only || self.include_usage
    }
}

/// A chunk's SSE frame: the provider's own bytes when the chunk is unchanged.
fn sse_frame(chunk: &Chunk) -> Bytes {
    let mut out = Vec::with_capacity(chunk.raw.as_ref().map_or(256, |r| r.len() + 8));
    out.extend_from_slice(b"data: ");
    match &chunk.raw {
        // A provider may cut one payload over several `data:` lines (the SSE parser joined
        // them with `\n`): each line is written as a `data:` line of its own, which an SSE
        // client joins back into the same payload. A line end written bare would end the
        // field, and the SDK would read half a JSON object.
        Some(raw) if !raw.contains('\r') => {
            for (i, line) in raw.split('\n').enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"\ndata: ");
                }
                out.extend_from_slice(line.as_bytes());
            }
        }
        _ => serde_json::to_writer(&mut out, &chunk.object).expect("a JSON map always serialises"),
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn sse_frame_value(value: &Value) -> Bytes {
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
        // The answer goes on: a silence from here is its provider's, even where this chunk
        // is held back rather than sent.
        self.body.unhold();
        if !self.carried.is_empty() {
            // Boxed: only after a restart; unboxed, every chunk's future would carry it.
            Box::pin(self.send_carried()).await?;
        }
        // The answer's time for the metadata chunk: not Azure's `created: 0` (its filter
        // annotations', which say no time).
        if let Some(created) = chunk
            .object
            .json("created")
            .filter(|c| c.as_u64() != Some(0))
        {
            self.created = Some(created.clone());
        }
        let admitted = self.held.admit(chunk);
        if !admitted.released.is_empty() {
            // Boxed: rare (a finish that was none, or another choice going on).
            Box::pin(self.send_released(admitted.released)).await?;
        }
        match admitted.chunk {
            Some(chunk) if self.deliverable(&chunk) => self.send(sse_frame(&chunk)).await,
            _ => Ok(()),
        }
    }

    async fn conclude(&mut self, outcome: &Outcome, catalog: &Catalog) -> Result<(), ClientGone> {
        self.finish(outcome, catalog).await
    }

    fn restart(&mut self) {
        let kept = self.held.restart();
        self.carried.extend(kept);
    }

    fn waiting(&mut self) {
        self.body.hold();
    }

    fn liveness(&self) -> Option<crate::frames::Liveness> {
        Some(self.body.liveness())
    }
}

/// An upstream's own completion, under the response id the client is given.
fn with_id(mut whole: Map<String, Value>, response_id: &str) -> Value {
    if whole.get("id").and_then(Value::as_str) != Some(response_id) {
        whole.insert("id".into(), json!(response_id));
    }
    Value::Object(whole)
}

/// Top-level fields that describe the backend that produced the chunk, not the answer.
const NAMES_THE_BACKEND: &[&str] = &["system_fingerprint", "service_tier"];

/// Whether `value` is an empty string in a field that names what answered (`model`,
/// `system_fingerprint`): a chunk that says nothing there.
fn blank_identity(key: &str, value: &Value) -> bool {
    matches!(key, "model" | "system_fingerprint") && value.as_str() == Some("")
}

/// Delivery for `stream: false`: one `chat.completion`.
#[derive(Debug, Default)]
pub struct AggregateDelivery {
    head: Option<CommitHead>,
    /// Top-level fields other than `choices`, `usage` and `object`, in the order they first
    /// appeared (`id`, `created`, `model`, `system_fingerprint`, `service_tier`, a
    /// provider's own...).
    top: Map<String, Value>,
    choices: Accumulator,
    usage: Option<Value>,
    /// The latest usage that came on a chunk with output: a streaming client has it
    /// whatever follows (such a chunk is delivered, or carried past a failure), where a
    /// usage-only chunk is held to the end and dropped with its attempt.
    usage_delivered: Option<Value>,
    /// The upstream's own completion, while it is the whole answer (one attempt that
    /// answered with JSON): passed on as it came.
    whole: Option<Box<Map<String, Value>>>,
    /// An attempt after a failure past commit contributed.
    continued: bool,
    /// The chunks a stream holds back as the answer's possible end, by the same rule,
    /// taken in only once the answer goes on past them or ends: a failed continuation's
    /// opening chunks that said `stop` must not add a finished choice that no streaming
    /// client saw.
    held: HeldEnd,
    /// Closed when the handler waiting for this answer is dropped with its connection.
    handler: Option<tokio::sync::oneshot::Sender<Self>>,
}

impl AggregateDelivery {
    pub fn new() -> AggregateDelivery {
        AggregateDelivery::default()
    }

    /// A delivery whose client is the handler holding the receiver: [`Delivery::gone`]
    /// resolves when that handler is dropped, and [`AggregateDelivery::hand_over`] passes
    /// the finished answer to it.
    pub fn watching(handler: tokio::sync::oneshot::Sender<Self>) -> AggregateDelivery {
        AggregateDelivery {
            handler: Some(handler),
            ..AggregateDelivery::default()
        }
    }

    /// Passes the answer to the handler given to [`AggregateDelivery::watching`] (a handler
    /// that left is told nothing: there is no one to tell).
    pub fn hand_over(mut self) {
        if let Some(handler) = self.handler.take() {
            let _ = handler.send(self);
        }
    }

    /// The response body of a served request.
    pub fn response(&self, response_id: &str) -> Value {
        assert!(
            !self.held.is_holding(),
            "an answer is read once it has ended"
        );
        if let Some(whole) = &self.whole {
            return with_id(whole.as_ref().clone(), response_id);
        }
        self.merged(response_id)
    }

    /// [`AggregateDelivery::response`], taking the upstream's own completion rather than
    /// copying it (the gateway's last use of the answer).
    pub fn into_response(mut self, response_id: &str) -> Value {
        assert!(
            !self.held.is_holding(),
            "an answer is read once it has ended"
        );
        match self.whole.take() {
            Some(whole) => with_id(*whole, response_id),
            None => self.merged(response_id),
        }
    }

    /// The answer merged from its chunks.
    fn merged(&self, response_id: &str) -> Value {
        let mut body = Map::new();
        body.insert("id".into(), json!(response_id));
        body.insert("object".into(), json!("chat.completion"));
        for key in ["created", "model"] {
            if let Some(v) = self.top.get(key) {
                body.insert(key.into(), v.clone());
            }
        }
        body.insert("choices".into(), Value::Array(self.choices.choices()));
        if let Some(u) = &self.usage {
            body.insert("usage".into(), u.clone());
        }
        for (k, v) in &self.top {
            if !body.contains_key(k) {
                body.insert(k.clone(), v.clone());
            }
        }
        Value::Object(body)
    }

    pub fn head(&self) -> Option<&CommitHead> {
        self.head.as_ref()
    }

    /// The commit's head, taken out (the answer's body stays).
    pub fn take_head(&mut self) -> Option<CommitHead> {
        self.head.take()
    }

    /// The merged text of choice 0.
    pub fn text(&self) -> &str {
        match &self.whole {
            Some(w) => w
                .get("choices")
                .and_then(|c| c.get(0))
                .and_then(|c| c.pointer("/message/content"))
                .and_then(Value::as_str)
                .unwrap_or(""),
            None => self.choices.text(),
        }
    }
}

impl Delivery for AggregateDelivery {
    async fn commit(&mut self, head: CommitHead) -> Result<(), ClientGone> {
        self.head = Some(head);
        Ok(())
    }

    /// A non-streaming client that leaves drops the handler waiting for the answer (the
    /// HTTP server cancels it with its connection).
    async fn gone(&mut self) -> GoneReason {
        match &mut self.handler {
            Some(handler) => handler.closed().await,
            None => std::future::pending().await,
        }
        GoneReason::Left
    }

    async fn chunk(&mut self, mut chunk: Chunk) -> Result<(), ClientGone> {
        if let Some(mut whole) = chunk.whole.take() {
            if !self.continued && self.choices.is_empty() && !self.held.is_holding() {
                if let (false, Some(model)) = (whole.contains_key("model"), &chunk.model) {
                    whole.insert("model".into(), json!(model));
                }
                self.whole = Some(whole);
            }
        }
        let admitted = self.held.admit(chunk);
        for held in &admitted.released {
            self.take_in(held);
        }
        if let Some(chunk) = &admitted.chunk {
            self.take_in(chunk);
        }
        Ok(())
    }

    /// Takes in the held end: the handler writes the answer once the loop is over. A
    /// handler already dropped with its connection is a client gone, as a stream's closed channel is
    /// at the same moment.
    async fn conclude(&mut self, _: &Outcome, _: &Catalog) -> Result<(), ClientGone> {
        self.end();
        match &self.handler {
            Some(handler) if handler.is_closed() => Err(ClientGone(GoneReason::Left)),
            _ => Ok(()),
        }
    }

    fn restart(&mut self) {
        // What a streaming client is given of the failed attempt's held end: its content.
        for held in self.held.restart() {
            self.take_in(&held);
        }
        // What names the backend that answered is the serving attempt's, as `model` is: a
        // later attempt that says none leaves none (its chunks, the stream's last, say
        // none to a streaming client either).
        for k in NAMES_THE_BACKEND {
            self.top.shift_remove(*k);
        }
        self.whole = None;
        self.continued = true;
        // The superseded attempt's usage is folded into the next usage report (see
        // `CommitState::after_failure`), as the stream's held usage chunk is dropped. What
        // a streaming client was told on chunks with output (Gemini's usage on every
        // chunk) it keeps: so does this answer, if no later attempt reports one.
        self.usage = self.usage_delivered.clone();
    }
}

impl AggregateDelivery {
    /// The answer has ended: what was held as its possible end is its end. (The attempt
    /// loop's `conclude` does it; a caller that feeds chunks itself calls it before
    /// reading the answer.)
    pub fn end(&mut self) {
        for held in self.held.end() {
            self.take_in(&held);
        }
    }

    /// Merges `chunk` into the answer.
    fn take_in(&mut self, chunk: &Chunk) {
        let o = &chunk.object;
        for (k, v) in o.iter() {
            // Only `choices` may hold anything but JSON, and they are read below.
            let Top::Json(v) = v else {
                continue;
            };
            match k {
                // `obfuscation` is padding OpenAI adds to streamed chunks only (against
                // size side channels): no non-stream answer has it.
                "choices" | "object" | "obfuscation" => {}
                "usage" => {
                    if !v.is_null() {
                        self.usage = Some(v.clone());
                        if chunk.payload_bytes > 0 {
                            self.usage_delivered = Some(v.clone());
                        }
                    }
                }
                // The first real `created` (Azure's prompt-filter chunk says 0); every
                // other field's latest value.
                "created" if field(&self.top, "created").is_some_and(|c| c != &json!(0)) => {}
                // What inserting would do (the key keeps its place; a null never replaces
                // a value), without cloning what is already there. An empty `model` or
                // `system_fingerprint` is none either: Azure's filter annotations say
                // `model: ""`, one even after the finish chunk, and the SDKs' accumulation
                // of a stream never lets an empty one erase a real one.
                _ => match field_mut(&mut self.top, k) {
                    Some(old) => {
                        if !v.is_null() && old != v && !blank_identity(k, v) {
                            old.clone_from(v);
                        }
                    }
                    None => {
                        self.top.insert(k.to_string(), v.clone());
                    }
                },
            }
        }
        self.choices.push(o);
        if let (Some(whole), Some(usage)) = (&mut self.whole, &self.usage) {
            // The one completion's usage, summed with nothing: as it came.
            if whole.get("usage") != Some(usage) {
                whole.insert("usage".into(), usage.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::Served;
    use crate::catalog::{DeploymentId, GroupId};
    use crate::config::GatewayConfig;

    /// A gateway of one group, `g`.
    fn one_group() -> Catalog {
        let config = GatewayConfig::load(
            "t.yaml",
            "allow_anonymous: true\nmodel_list:\n  - {model_name: g, litellm_params: {model: openai/m, api_base: \"http://up/v1\"}}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Catalog::new(&config).unwrap()
    }

    /// An outcome committed at once, with nothing after commit, served by `g`.
    fn committed(response_id: Option<&str>) -> Outcome {
        Outcome {
            result: Ok(Served {
                group: GroupId(0),
                deployment: DeploymentId(0),
                model: "m".into(),
            }),
            attempts: Vec::new(),
            retries: 0,
            fallbacks: 0,
            committed: true,
            at_commit: Some((0, 0)),
            client_gone: false,
            response_id: response_id.map(str::to_string),
        }
    }

    /// A stream delivery committed as response `r`, the receiver its commit goes to (kept:
    /// dropped, the client is gone), and what its client receives.
    async fn committed_stream(
        include_usage: bool,
    ) -> (
        StreamDelivery,
        oneshot::Receiver<StreamStart>,
        FrameReceiver,
    ) {
        let bounds = StreamBounds {
            frames: 16,
            bytes: 1 << 16,
            write_timeout: Duration::from_secs(5),
            deadline: Instant::now() + Duration::from_secs(60),
            keep_alive: None,
        };
        let (mut out, start, body) = StreamDelivery::new(include_usage, bounds);
        let head = CommitHead {
            group: "g".into(),
            deployment: "d".into(),
            retries: 0,
            fallbacks: 0,
            response_id: "r".into(),
            upstream_headers: Vec::new(),
        };
        assert!(out.commit(head).await.is_ok());
        (out, start, body)
    }

    /// Hands `out` the upstream chunk `data`.
    async fn deliver_data(out: &mut StreamDelivery, data: &str) {
        use crate::upstream::chunk::{ChunkLimits, Payload, parse_data};
        let Ok(Payload::Chunk(chunk)) = parse_data(data, &ChunkLimits::default()) else {
            panic!("not a chunk: {data}");
        };
        assert!(out.chunk(chunk).await.is_ok());
    }

    /// An empty `model` or `system_fingerprint` (Azure's filter annotations, after the
    /// content) never erases the value the content chunks gave; any other field's latest
    /// value wins, as before.
    #[tokio::test]
    async fn an_empty_model_does_not_erase_the_answers_model() {
        use crate::upstream::chunk::{ChunkLimits, Payload, parse_data};
        let mut out = AggregateDelivery::new();
        for data in [
            r#"{"id":"","model":"","created":0,"choices":[]}"#,
            r#"{"id":"a","model":"gpt-4o","system_fingerprint":"fp_1","created":7,"choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
            r#"{"id":"","model":"","system_fingerprint":"","created":0,"choices":[{"index":0,"finish_reason":null}]}"#,
            r#"{"id":"a","model":"gpt-4o-2024","service_tier":"default","choices":[]}"#,
        ] {
            let Ok(Payload::Chunk(chunk)) = parse_data(data, &ChunkLimits::default()) else {
                panic!("not a chunk: {data}");
            };
            assert!(out.chunk(chunk).await.is_ok());
        }
        out.end();
        let answer = out.response("resp");
        assert_eq!(answer["model"], "gpt-4o-2024", "{answer}");
        assert_eq!(answer["system_fingerprint"], "fp_1", "{answer}");
        assert_eq!(answer["created"], 7, "{answer}");
    }

    /// The non-stream answer holds what a stream holds: a failed continuation's
    /// content-less opening chunks, each saying `stop` (SGLang with a finish reason on every
    /// chunk, naming two choices), go with their attempt, as a stream drops them; taken in
    /// as they came, they added a second, empty, finished choice that no stream had.
    #[tokio::test]
    async fn a_failed_continuations_held_finishes_are_no_part_of_the_answer() {
        use crate::upstream::chunk::{ChunkLimits, Payload, parse_data};
        let mut out = AggregateDelivery::new();
        let feed = async |out: &mut AggregateDelivery, data: &str| {
            let Ok(Payload::Chunk(chunk)) = parse_data(data, &ChunkLimits::default()) else {
                panic!("not a chunk: {data}");
            };
            assert!(out.chunk(chunk).await.is_ok());
        };
        feed(&mut out, r#"{"id":"a","model":"p","choices":[{"index":0,"delta":{"role":"assistant","content":"alp"},"finish_reason":null}]}"#).await;
        out.restart();
        for index in [0, 1] {
            let data = format!(
                r#"{{"id":"s","model":"s","choices":[{{"index":{index},"delta":{{"role":"assistant","content":""}},"finish_reason":"stop"}}]}}"#
            );
            feed(&mut out, &data).await;
        }
        out.restart();
        feed(&mut out, r#"{"id":"b","model":"b","choices":[{"index":0,"delta":{"content":"ha"},"finish_reason":null}]}"#).await;
        feed(
            &mut out,
            r#"{"id":"b","model":"b","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        )
        .await;
        out.end();
        let answer = out.response("resp");
        let choices = answer["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 1, "{answer}");
        assert_eq!(choices[0]["message"]["content"], "alpha", "{answer}");
        assert_eq!(choices[0]["finish_reason"], "stop", "{answer}");
    }

    /// What names the backend that answered (`system_fingerprint`, `service_tier`) is the
    /// serving attempt's, as `model` is: a continuation that says none leaves none, where
    /// the answer kept the failed primary's fingerprint (the stream's last chunks, which
    /// the SDKs' accumulation reads, are the continuation's and say none).
    #[tokio::test]
    async fn a_continuation_does_not_inherit_the_failed_attempts_fingerprint() {
        use crate::upstream::chunk::{ChunkLimits, Payload, parse_data};
        let mut out = AggregateDelivery::new();
        let feed = async |out: &mut AggregateDelivery, data: &str| {
            let Ok(Payload::Chunk(chunk)) = parse_data(data, &ChunkLimits::default()) else {
                panic!("not a chunk: {data}");
            };
            assert!(out.chunk(chunk).await.is_ok());
        };
        feed(&mut out, r#"{"id":"a","created":5,"model":"p","system_fingerprint":"fp_p","service_tier":"default","choices":[{"index":0,"delta":{"role":"assistant","content":"alp"},"finish_reason":null}]}"#).await;
        out.restart();
        feed(&mut out, r#"{"id":"b","created":9,"model":"b","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"ha"},"finish_reason":"stop"}]}"#).await;
        out.end();
        let answer = out.response("resp");
        assert!(answer["system_fingerprint"].is_null(), "{answer}");
        assert!(answer["service_tier"].is_null(), "{answer}");
        assert_eq!(answer["model"], "b", "{answer}");
        assert_eq!(answer["created"], 5, "the first attempt's: {answer}");
        assert_eq!(
            answer["choices"][0]["message"]["content"], "alpha",
            "{answer}"
        );
        // A continuation that names its own is the answer's.
        let mut out = AggregateDelivery::new();
        feed(&mut out, r#"{"id":"a","model":"p","system_fingerprint":"fp_p","choices":[{"index":0,"delta":{"content":"alp"},"finish_reason":null}]}"#).await;
        out.restart();
        feed(&mut out, r#"{"id":"b","model":"b","system_fingerprint":"fp_b","choices":[{"index":0,"delta":{"content":"ha"},"finish_reason":"stop"}]}"#).await;
        out.end();
        assert_eq!(out.response("resp")["system_fingerprint"], "fp_b");
    }

    /// A stream that fails after commit with no continuation to follow (`mid_stream:
    /// error`, a refused continuation, nothing left in the plan) gives the client every
    /// piece it had: Gemini's last content chunk, which carries the finish reason and was
    /// held for the metadata, was dropped with the error event. It goes out without the
    /// finish reason, before the error.
    #[tokio::test]
    async fn a_held_content_chunk_reaches_the_client_before_the_error_event() {
        use crate::attempt::Unserved;
        use crate::classify::{Failure, FailureClass};
        use http_body_util::BodyExt;
        let catalog = one_group();
        let (mut out, _start, body) = committed_stream(false).await;
        for data in [
            r#"{"id":"r","choices":[{"index":0,"delta":{"role":"assistant","content":"alp"}}]}"#,
            r#"{"id":"r","choices":[{"index":0,"delta":{"content":"lon"},"finish_reason":"stop"}]}"#,
        ] {
            deliver_data(&mut out, data).await;
        }
        let outcome = Outcome {
            result: Err(Unserved {
                failure: Failure::new(FailureClass::Malformed, "a line of garbage"),
                summary: "1 attempt".into(),
            }),
            ..committed(Some("r"))
        };
        assert!(out.conclude(&outcome, &catalog).await.is_ok());
        drop(out);
        let sent = body.collect().await.unwrap().to_bytes();
        let sent = String::from_utf8_lossy(&sent);
        let lon = sent
            .find(r#""content":"lon""#)
            .expect("the held piece is sent");
        let error = sent.find(r#""error""#).expect("the error event");
        assert!(lon < error, "{sent}");
        assert!(!sent.contains(r#""finish_reason":"stop""#), "{sent}");
        assert!(!sent.contains("[DONE]"), "{sent}");
    }

    /// After an attempt that named two choices and broke, a continuation of the first
    /// from a provider that puts a finish reason on every chunk: its false finishes stay
    /// off the stream. Delivery held a chunk with a finish back only once every choice
    /// named so far had finished, and still counted the second choice the failed attempt
    /// named, which nothing continues: every false `stop` went out (`explore`, case
    /// 107000201). The choices an answer names are the attempt's own.
    #[tokio::test]
    async fn a_continuations_false_finishes_are_held_after_an_attempt_that_named_two_choices() {
        use http_body_util::BodyExt;
        let catalog = one_group();
        let (mut out, _start, body) = committed_stream(false).await;
        deliver_data(
            &mut out,
            r#"{"id":"r","choices":[{"index":0,"delta":{"role":"assistant"}},{"index":1,"delta":{"role":"assistant"}}]}"#,
        )
        .await;
        deliver_data(
            &mut out,
            r#"{"id":"r","choices":[{"index":0,"delta":{"content":"alp"}}]}"#,
        )
        .await;
        out.restart();
        for text in ["ha ", "beta"] {
            let data = format!(
                r#"{{"id":"r","choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":"stop"}}]}}"#
            );
            deliver_data(&mut out, &data).await;
        }
        assert!(out.conclude(&committed(Some("r")), &catalog).await.is_ok());
        drop(out);
        let sent = body.collect().await.unwrap().to_bytes();
        let sent = String::from_utf8_lossy(&sent);
        assert_eq!(
            sent.matches(r#""finish_reason":"stop""#).count(),
            1,
            "one finish, the last: {sent}"
        );
        let beta = sent.find(r#""content":"beta""#).expect("the last piece");
        assert!(sent[beta..].contains(r#""finish_reason":"stop""#), "{sent}");
    }

    /// A usage chunk reaches a client that asked for usage only. One whose upstream put a
    /// `switchback` field on it (another Switchback in front of the provider, after a
    /// retry of its own) passed as the gateway's own metadata carrier, and a client that
    /// never asked for usage read `choices: []` (`choices[0]` fails in the SDK loops).
    #[tokio::test]
    async fn an_upstreams_switchback_field_does_not_deliver_a_usage_chunk() {
        use http_body_util::BodyExt;
        let catalog = one_group();
        let (mut out, _start, body) = committed_stream(false).await;
        for data in [
            r#"{"id":"r","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}"#,
            r#"{"id":"r","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"r","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"switchback":{"attempted_retries":1}}"#,
        ] {
            deliver_data(&mut out, data).await;
        }
        assert!(out.conclude(&committed(Some("r")), &catalog).await.is_ok());
        drop(out);
        let sent = body.collect().await.unwrap().to_bytes();
        let sent = String::from_utf8_lossy(&sent);
        assert!(!sent.contains("usage"), "{sent}");
        assert!(sent.ends_with("data: [DONE]\n\n"), "{sent}");
    }

    /// The usage chunk is the stream's last before `[DONE]`, as OpenAI sends it, even from
    /// an upstream that named no finish reason: it went out as it came, and the metadata
    /// of a retry after commit followed it in a chunk of its own.
    #[tokio::test]
    async fn the_usage_chunk_stays_last_when_no_finish_reason_came() {
        use http_body_util::BodyExt;
        let catalog = one_group();
        let (mut out, _start, body) = committed_stream(true).await;
        for data in [
            r#"{"id":"r","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}"#,
            r#"{"id":"r","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        ] {
            deliver_data(&mut out, data).await;
        }
        let retried = Outcome {
            retries: 1,
            ..committed(Some("r"))
        };
        assert!(out.conclude(&retried, &catalog).await.is_ok());
        drop(out);
        let sent = body.collect().await.unwrap().to_bytes();
        let sent = String::from_utf8_lossy(&sent);
        let frames: Vec<&str> = sent.split("\n\n").filter(|f| !f.is_empty()).collect();
        assert_eq!(frames.len(), 3, "{sent}");
        assert!(
            frames[1].contains(r#""usage""#) && frames[1].contains(r#""switchback""#),
            "the usage chunk last, carrying the metadata: {sent}"
        );
        assert_eq!(frames[2], "data: [DONE]");
    }

    /// A non-streaming client that left by the time the loop is over is gone, as a
    /// streaming one whose channel is closed is at the same moment: both modes end the
    /// request alike.
    #[tokio::test]
    async fn an_aggregate_whose_handler_left_concludes_as_gone() {
        let catalog = one_group();
        let outcome = committed(None);
        let (handler, waiting) = oneshot::channel();
        let mut out = AggregateDelivery::watching(handler);
        assert!(
            out.conclude(&outcome, &catalog).await.is_ok(),
            "still waited for"
        );
        drop(waiting);
        assert!(matches!(
            out.conclude(&outcome, &catalog).await,
            Err(ClientGone(GoneReason::Left))
        ));
        assert!(
            AggregateDelivery::new()
                .conclude(&outcome, &catalog)
                .await
                .is_ok()
        );
    }

    /// The interval is the limit, or half the read timeout a client advertises when that
    /// is sooner, never below the floor; off stays off.
    #[test]
    fn a_keep_alive_comes_twice_per_client_read_timeout_at_most() {
        let s = Duration::from_secs;
        assert_eq!(StreamBounds::keep_alive_for(Some(s(15)), None), Some(s(15)));
        assert_eq!(
            StreamBounds::keep_alive_for(Some(s(15)), Some(s(600))),
            Some(s(15))
        );
        assert_eq!(
            StreamBounds::keep_alive_for(Some(s(15)), Some(s(6))),
            Some(s(3))
        );
        assert_eq!(
            StreamBounds::keep_alive_for(Some(s(15)), Some(Duration::from_millis(500))),
            Some(MIN_KEEP_ALIVE)
        );
        assert_eq!(StreamBounds::keep_alive_for(None, Some(s(6))), None);
        assert_eq!(
            StreamBounds::keep_alive_for(Some(Duration::from_micros(1)), None),
            Some(MIN_KEEP_ALIVE)
        );
    }
}
