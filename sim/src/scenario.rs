//! The scenario file: what QA write.
//!
//! Owns: the YAML model of a scenario (gateway config inline, fake providers and their
//! per-call scripts, network faults over time, scripted requests, modes, expectations), with
//! `deny_unknown_fields` everywhere, loading with errors that name the file, line, column and
//! field (and suggest the nearest field for a typo), and the checks that make a scenario
//! runnable (every `api_base` points at a provider, every key exists, ...). Does not own
//! running it (`world`) or judging it (`oracle`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use switchback::config::GatewayConfig;
use switchback::upstream::Endpoint;
use switchback::yaml::{self, PathSeg, YamlError};

mod answer;
pub use answer::*;

/// Upper bounds that keep a scenario finite.
pub const MAX_REQUESTS: u32 = 10_000;
pub const MAX_CHUNKS: usize = 10_000;
pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;
/// Simulated time a scenario may take unless it says otherwise.
pub const DEFAULT_DURATION_MS: u64 = 10 * 60 * 1000;

/// One scenario file: a whole world (the gateway config, fake providers and what each does
/// at which chunk, network faults, requests) and what must happen in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in reports, test names and traces.
    pub name: String,
    /// Free text: what the scenario shows and why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Seed of the simulation (network latency) and of the gateway's RNG.
    #[serde(default)]
    pub seed: u64,
    /// Simulated time bound; a run still going at this point is reported as hung.
    #[serde(default = "default_duration")]
    pub duration_ms: u64,
    /// Simulated time per step of the world (default 1 ms): the resolution of the trace.
    /// Coarser ticks make long waits cheaper to simulate.
    #[serde(default = "default_tick", skip_serializing_if = "is_default_tick")]
    pub tick_ms: u64,
    /// The gateway config, exactly as in a real `config.yaml`; every `api_base` must name
    /// one of `providers`.
    pub gateway: GatewayConfig,
    /// The fake OpenAI-compatible hosts; each `api_base` in `gateway` must name one.
    pub providers: Vec<Provider>,
    /// Latency ranges and timed network faults (partitions, crashes, drop rates, ...).
    #[serde(default)]
    pub network: Network,
    /// Config reloads at simulated instants (as `serve` does on SIGHUP): requests admitted
    /// from then on get the new config, requests in flight keep theirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reloads: Vec<Reload>,
    /// What the client sends, when, and how many copies.
    pub requests: Vec<RequestSpec>,
    /// Send the requests one after another, each starting when the previous one ended,
    /// and not before its `at_ms` (`concurrency` is then ignored).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sequential: bool,
    /// Which client modes run, each in its own fresh world (default both: `[non_stream,
    /// stream]`).
    #[serde(default = "Mode::both")]
    pub modes: Vec<Mode>,
    /// Expectations for every request (a request's own `expect` replaces it field by field).
    #[serde(default)]
    pub expect: Expect,
}

fn default_duration() -> u64 {
    DEFAULT_DURATION_MS
}

fn default_tick() -> u64 {
    1
}

fn is_default_tick(t: &u64) -> bool {
    *t == 1
}

/// Longest pause `probe` puts between the two modes, in seconds.
pub const MAX_PAUSE_SECS: f64 = 60.0;

/// Coarsest tick a scenario may ask for.
pub const MAX_TICK_MS: u64 = 100;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Stream,
    NonStream,
}

impl Mode {
    pub fn both() -> Vec<Mode> {
        vec![Mode::NonStream, Mode::Stream]
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::NonStream => "non_stream",
        }
    }
    pub fn is_stream(self) -> bool {
        self == Mode::Stream
    }
}

/// A fake OpenAI-compatible provider host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Host name in the simulated network (and in `api_base`).
    pub host: String,
    /// Port it listens on in the simulated network (default 8000).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The `model` this provider reports in its answers (default: the model requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The answer when no rule in `calls` matches.
    #[serde(default)]
    pub default: Script,
    /// Per-call answers, first match wins (each with `calls`, `for_model` and/or
    /// `for_first_message`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<Script>,
    /// The wire dialect it speaks (default `openai`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub dialect: Dialect,
    /// How its streamed tool calls are numbered (default: its dialect's way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_index: Option<ToolCallIndex>,
    /// Which of a streamed tool call's deltas carry its `id` (default `once`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub tool_call_ids: ToolCallIds,
    /// Milliseconds it keeps an idle connection open for the next request before closing
    /// it, as uvicorn's `timeout_keep_alive` (5 s) does; 0 closes the connection after
    /// every response (`Connection: close`). Default: kept until the client closes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_ms: Option<u64>,
    /// How it lays its SSE events out on the wire (default: as OpenAI does).
    #[serde(default, skip_serializing_if = "is_default")]
    pub framing: Framing,
    /// `dialect: azure` only: how its content filter streams its verdicts, `default`
    /// (results on every content chunk) or `async` (Azure's Asynchronous Filter:
    /// annotation chunks between the content chunks and after the finish chunk).
    #[serde(default, skip_serializing_if = "is_default")]
    pub content_filter: ContentFilterMode,
    /// Which streamed chunks carry a choice's finish reason: `last` (default) or
    /// `every_chunk` (Open WebUI, Gemini relays).
    #[serde(default, skip_serializing_if = "is_default")]
    pub finish_reasons: FinishReasons,
    /// Refuses every streamed call with a 400 naming `stream`, and answers the same call
    /// without streaming, as OpenAI does for o3 and gpt-5 in an organisation not verified
    /// ("Your organization must be verified to stream this model").
    #[serde(default, skip_serializing_if = "is_default")]
    pub refuses_streaming: bool,
    /// Sends every answer without a `Content-Type`, as a server does that builds its
    /// responses by hand (FastAPI's `StreamingResponse` or `Response` without a
    /// `media_type`): an event stream, or one JSON completion (`dialect: json_only`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub unlabelled: bool,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Provider {
    /// How this provider numbers streamed tool calls.
    pub fn tool_call_index(&self) -> ToolCallIndex {
        self.tool_call_index
            .unwrap_or_else(|| self.dialect.default_tool_call_index())
    }
}

pub fn default_port() -> u16 {
    8000
}

/// One scripted answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// In `calls`: the call numbers (1-based, per provider) this answer is for; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<u32>,
    /// In `calls`: every n-th call (call number divisible by n); absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u32>,
    /// In `calls`: the requested upstream model this answer is for; absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_model: Option<String>,
    /// In `calls`: the text `content` of the request's first message this answer is for
    /// (to see which messages reached the provider); absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_first_message: Option<String>,
    /// The whole answer text, cut into `chunk_size`-character chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Characters per chunk when cutting `text` (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<usize>,
    /// The answer as explicit chunks (instead of `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<String>>,
    /// Time to response headers.
    #[serde(default)]
    pub ttfb_ms: u64,
    /// A JSON answer's head (200, `application/json`) goes out at `ttfb_ms`, and its body
    /// only after the answer's delays, as from a server that flushes its head before it has
    /// the answer (a reasoning model's JSON behind an upstream that ignores `stream: true`).
    /// Whatever the answer turns out to be comes under that 200. Without it, a JSON answer's
    /// head waits for the whole body. Streamed answers send their head at `ttfb_ms` anyway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_at_once: bool,
    /// Gap before every chunk.
    #[serde(default)]
    pub delay_ms: u64,
    /// Gap before each chunk (overrides `delay_ms` where given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delays_ms: Vec<u64>,
    /// Extra response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Overrides the provider's reported model for this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What goes wrong in this answer, after `after_chunks` chunks (absent: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Reasoning streamed before the answer (`reasoning_content`, Ollama's `reasoning`),
    /// cut into `chunk_size`-character chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// A refusal instead of text (`refusal` deltas), cut into `chunk_size`-character chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// A spoken answer instead of text: the audio's transcript, cut into
    /// `chunk_size`-character chunks, each with a piece of audio `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
    /// Tool calls, after any text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallSpec>,
    /// Characters per streamed fragment of a tool call's arguments, in the dialects that
    /// fragment them (Gemini and Ollama send each call whole). Default: one fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments_chunk_size: Option<usize>,
    /// n > 1: the text of choices 1, 2, ... (choice 0's is `text`), cut into
    /// `chunk_size`-character chunks that interleave with choice 0's, round robin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_choices: Vec<String>,
    /// Log probabilities on every content chunk (`logprobs.content` of its choice).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub logprobs: bool,
    /// URL citations (`annotations` of choice 0), in one chunk after its text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// The finish reason of every choice (default `stop`, or `tool_calls` with tool calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Hostile: a content-less flood inside the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood: Option<Flood>,
}

pub const DEFAULT_TEXT: &str = "pong";
pub const DEFAULT_CHUNK_SIZE: usize = 4;

impl Script {
    /// The chunks of the full answer.
    pub fn chunk_texts(&self) -> Vec<String> {
        if let Some(chunks) = &self.chunks {
            return chunks.clone();
        }
        let text = self.text.as_deref().unwrap_or(DEFAULT_TEXT);
        let size = self.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE).max(1);
        let chars: Vec<char> = text.chars().collect();
        chars.chunks(size).map(|c| c.iter().collect()).collect()
    }

    pub fn full_text(&self) -> String {
        self.chunk_texts().concat()
    }

    /// Gap before chunk `i`.
    pub fn delay_before(&self, i: usize) -> u64 {
        self.delays_ms.get(i).copied().unwrap_or(self.delay_ms)
    }
}

/// What goes wrong, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What goes wrong: `http` (an error status before any chunk), `error_event`, `reset`,
    /// `stall`, `malformed` or `content_filter` (after k chunks).
    pub kind: FaultKind,
    /// Chunks sent before the fault (k). `http` requires 0.
    #[serde(default)]
    pub after_chunks: usize,
    /// HTTP status (`http`) or the error event's code (`error_event`); default 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Retry-After in seconds: a header for `http`, a field of the event for `error_event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<f64>,
    /// Error body shape.
    #[serde(default)]
    pub flavour: Flavour,
    /// Error `code` (e.g. `context_length_exceeded`, `content_filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Error `message` (default: one the flavour would send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Error `param`, the request field at fault (flavours with one: `openai`, `vllm`;
    /// default `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Hostile: the error repeats part of the request (`http` and `error_event` faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<Echo>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// An HTTP error status before any chunk.
    Http,
    /// `data: {"error": ...}` after k chunks, then the stream ends.
    ErrorEvent,
    /// The connection breaks after k chunks.
    Reset,
    /// No more bytes after k chunks; the connection stays open.
    Stall,
    /// An unparsable `data:` line after k chunks.
    Malformed,
    /// A chunk with `finish_reason: content_filter` after k chunks.
    ContentFilter,
    /// The body ends cleanly after k chunks: no finish chunk, no `[DONE]` (a proxy that
    /// closes a chunked body early; a non-stream answer cut half-way through its JSON).
    Cut,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Http,
        FaultKind::ErrorEvent,
        FaultKind::Reset,
        FaultKind::Stall,
        FaultKind::Malformed,
        FaultKind::ContentFilter,
        FaultKind::Cut,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Http => "http",
            FaultKind::ErrorEvent => "error_event",
            FaultKind::Reset => "reset",
            FaultKind::Stall => "stall",
            FaultKind::Malformed => "malformed",
            FaultKind::ContentFilter => "content_filter",
            FaultKind::Cut => "cut",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    #[default]
    Openai,
    Openrouter,
    Vertex,
    Anthropic,
    /// llama.cpp's server: `{"error": {"code", "message", "type"}}`; in a stream, as its
    /// builds before 2025-10 sent it (llama.cpp issue 14566), the bare error object in a
    /// field of its own, `error: {...}`, then `data: [DONE]`.
    LlamaCpp,
    /// vLLM's server: `{"object": "error", "message", "type", "param", "code"}`; in a
    /// stream, a request its engine aborted (shut down, scaled down, preempted), as vLLM
    /// reports one (vllm-project/vllm issue 57082): a chunk whose choice ends with
    /// `finish_reason: "abort"`, then `data: [DONE]`, whatever the fault's status.
    Vllm,
    /// A LiteLLM proxy as the upstream: `{"error": {"message", "type": null, "param": null,
    /// "code": "<status>"}}`. An `http` fault on a streaming call comes as recent LiteLLM
    /// proxies send a provider's failure on the first read of a stream: the error's
    /// status, `text/event-stream`, and the error as one SSE event
    /// (`proxy/common_request_processing.py`, `create_streaming_response`).
    Litellm,
}

/// Network shape and timed faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Latency range of gateway↔provider messages, milliseconds: each message's is drawn
    /// from (seed, connection, message number), uniformly in the range.
    #[serde(default = "default_latency")]
    pub latency_ms: [u64; 2],
    /// Latency of every client↔gateway message (default: the low end of `latency_ms`).
    /// Fixed, so that the two modes' different client traffic cannot shift anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_latency_ms: Option<u64>,
    /// Network actions at simulated instants, one action per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<NetFault>,
    /// Messages one direction of a connection may have unread before its writer waits
    /// (default `world::TCP_CAPACITY`): small, a client that stops reading pushes back on
    /// the gateway as a real socket would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_capacity: Option<usize>,
}

impl Network {
    /// The client link's fixed latency, milliseconds.
    pub fn client_latency(&self) -> u64 {
        self.client_latency_ms.unwrap_or(self.latency_ms[0])
    }
}

fn default_latency() -> [u64; 2] {
    [1, 1]
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_ms: default_latency(),
            client_latency_ms: None,
            faults: Vec::new(),
            tcp_capacity: None,
        }
    }
}

/// A config reload at `at_ms`: the whole new gateway config, validated at load like
/// `gateway` itself (its `rng_seed`, when it fixes none, is the scenario's seed again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    /// When the new config takes over (simulated milliseconds).
    pub at_ms: u64,
    /// The whole new gateway config (validated like the scenario's `gateway`).
    pub gateway: GatewayConfig,
}

/// A change to the network at `at_ms`: exactly one action per entry. Host pairs name two
/// hosts (`gateway`, `client`, or a provider host).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetFault {
    /// When the action happens (simulated milliseconds).
    pub at_ms: u64,
    /// Cuts the link between two hosts: messages on it are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<[String; 2]>,
    /// Restores a partitioned link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<[String; 2]>,
    /// Delays the messages on a link until `release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<[String; 2]>,
    /// Delivers the messages a `hold` kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<[String; 2]>,
    /// Stops a provider host (its connections break).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<String>,
    /// Restarts a provider host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<String>,
    /// A provider host stays up but refuses new connections (its listener is closed, so a
    /// connect fails at once with "connection refused"); connections already open carry
    /// on. Lasts until `listen` (a `bounce` does not end it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse: Option<String>,
    /// A refusing provider host accepts connections again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Message drop rate on a link, 0.0 to 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_rate: Option<FailRate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRate {
    /// The two hosts of the link (`gateway`, `client`, or a provider host).
    pub link: [String; 2],
    /// Share of messages dropped, 0.0 to 1.0.
    pub rate: f64,
}

/// One network action, as the world applies it.
#[derive(Debug, Clone, PartialEq)]
pub enum NetAction {
    Partition([String; 2]),
    Repair([String; 2]),
    Hold([String; 2]),
    Release([String; 2]),
    Crash(String),
    Bounce(String),
    Refuse(String),
    Listen(String),
    FailRate([String; 2], f64),
}

impl NetAction {
    /// The action's field name in a scenario file.
    pub fn name(&self) -> &'static str {
        match self {
            NetAction::Partition(_) => "partition",
            NetAction::Repair(_) => "repair",
            NetAction::Hold(_) => "hold",
            NetAction::Release(_) => "release",
            NetAction::Crash(_) => "crash",
            NetAction::Bounce(_) => "bounce",
            NetAction::Refuse(_) => "refuse",
            NetAction::Listen(_) => "listen",
            NetAction::FailRate(..) => "fail_rate",
        }
    }
}

impl NetFault {
    /// The entry's actions (a valid entry has exactly one).
    pub fn actions(&self) -> Vec<NetAction> {
        let mut out = Vec::new();
        if let Some(p) = &self.partition {
            out.push(NetAction::Partition(p.clone()));
        }
        if let Some(p) = &self.repair {
            out.push(NetAction::Repair(p.clone()));
        }
        if let Some(p) = &self.hold {
            out.push(NetAction::Hold(p.clone()));
        }
        if let Some(p) = &self.release {
            out.push(NetAction::Release(p.clone()));
        }
        if let Some(h) = &self.crash {
            out.push(NetAction::Crash(h.clone()));
        }
        if let Some(h) = &self.bounce {
            out.push(NetAction::Bounce(h.clone()));
        }
        if let Some(h) = &self.refuse {
            out.push(NetAction::Refuse(h.clone()));
        }
        if let Some(h) = &self.listen {
            out.push(NetAction::Listen(h.clone()));
        }
        if let Some(f) = &self.fail_rate {
            out.push(NetAction::FailRate(f.link.clone(), f.rate));
        }
        out
    }
}

/// Requests the client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Virtual key sent as `Authorization: Bearer <key>` (absent: no key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The model group asked for (the body's `model`).
    pub model: String,
    /// The chat messages (default: one user message, "say ping").
    #[serde(default = "default_messages")]
    pub messages: Vec<serde_json::Value>,
    /// Extra body fields (`mock_testing_fallbacks`, `max_tokens`, request-level settings...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub body: serde_json::Map<String, serde_json::Value>,
    /// When the first copy is sent.
    #[serde(default)]
    pub at_ms: u64,
    /// Copies sent in total.
    #[serde(default = "one")]
    pub repeat: u32,
    /// Copies in flight at once.
    #[serde(default = "one")]
    pub concurrency: u32,
    /// Client-side bound on one request.
    #[serde(default = "default_client_timeout")]
    pub timeout_ms: u64,
    /// Expectations for this request only: they replace the scenario's `expect`, field by
    /// field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Hostile client: it closes its connection early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnect>,
    /// Hostile client: it stops reading the stream and holds the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reading: Option<StopReading>,
}

impl RequestSpec {
    /// Whether the scripted client means to leave before the answer ends.
    pub fn leaves(&self) -> bool {
        self.disconnect.is_some() || self.stop_reading.is_some()
    }

    /// The request's token budget (`max_completion_tokens`, else `max_tokens`), if it sets one.
    pub fn token_budget(&self) -> Option<u64> {
        crate::fake::token_budget(&self.body)
    }

    /// Whether the request asks for the stream's usage chunk (`stream_options.include_usage`).
    pub fn asks_usage(&self) -> bool {
        self.body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

fn one() -> u32 {
    1
}

fn default_client_timeout() -> u64 {
    300_000
}

fn default_messages() -> Vec<serde_json::Value> {
    vec![serde_json::json!({"role": "user", "content": "say ping"})]
}

/// What must be true of a request's result. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// HTTP status, or for a stream that failed after commit its error event's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Serving model group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Serving deployment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Ordered attempts, each `"<deployment id>: <class>"` or `"<deployment id>: ok"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<String>>,
    /// How many attempts the request made, however they ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_count: Option<u32>,
    /// Exact text the client ends up with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Counters of the usage the client is told last (a non-stream answer's `usage`, a
    /// stream's last usage that is not null): `{prompt_tokens: 5, completion_tokens: 6}`.
    /// Counters not named are not checked; a named one must be there with this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<BTreeMap<String, u64>>,
    /// How choice 0 ended, as its client saw it last (`stop`, `length`, `tool_calls`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// `model` of the response (and of the last chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Retries the client is told about (`x-switchback-attempted-retries`, or a stream's
    /// final metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Fallbacks the client is told about (`x-switchback-attempted-fallbacks`, or a
    /// stream's final metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<u32>,
    /// Error `type` of a failed request (or of a stream's error event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Upstream calls this request made to each provider host: `{pa: 2, pb: 0}`. Hosts not
    /// named are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<BTreeMap<String, u32>>,
    /// Upstream calls each provider host received in the whole run (all requests together):
    /// `{pa: 8, pb: 2}`. Only in the scenario's `expect` (and its `stream`/`non_stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_calls: Option<BTreeMap<String, u32>>,
    /// Connections each provider host accepted in the whole run: `{pa: 1}` says every call
    /// to pa shared one kept-alive connection. Only in the scenario's `expect` (and its
    /// `stream`/`non_stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_connections: Option<BTreeMap<String, u32>>,
    /// Response headers the client saw (names in any case): each must have exactly this
    /// value; `null` means the header must be absent. A stream's headers are those sent at
    /// commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Option<String>>>,
    /// Trace event names that must occur / must not occur (checked against the engine's
    /// event names when the file loads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Trace event names that must not occur.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_events: Vec<String>,
    /// Streamed: the stream ends with an error event and no `[DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_error: Option<bool>,
    /// Stream and non-stream runs must be equivalent (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalent: Option<bool>,
    /// Wire fidelity: a stream reaches the client chunk for chunk as the serving provider
    /// sent it, and a non-stream answer equals that provider's own non-stream answer (as
    /// JSON values; byte for byte when the provider answered with JSON), except for the
    /// fields the README says Switchback sets. The provider's allow-listed headers
    /// (`x-request-id`, `x-ratelimit-*`, `openai-processing-ms`) arrive unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
    /// Limits the engine must name in `limit_hit` events for this request
    /// (`max_upstream_body_bytes`, `max_choices`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Vec<String>>,
    /// Expectations for the stream run only, where the modes legitimately differ: they
    /// replace the fields above, field by field, for that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Box<Expect>>,
    /// Expectations for the non-stream run only (as `stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_stream: Option<Box<Expect>>,
}

impl Expect {
    /// `self` with every unset field taken from `defaults` (the per-mode blocks are not
    /// merged: see [`Expect::resolve`]).
    pub fn or(&self, defaults: &Expect) -> Expect {
        macro_rules! pick {
            ($($f:ident),*) => { Expect { $($f: self.$f.clone().or_else(|| defaults.$f.clone()),)* events: if self.events.is_empty() { defaults.events.clone() } else { self.events.clone() }, no_events: if self.no_events.is_empty() { defaults.no_events.clone() } else { self.no_events.clone() }, stream: None, non_stream: None } };
        }
        pick!(
            status,
            group,
            deployment,
            attempts,
            attempt_count,
            content,
            usage,
            finish_reason,
            model,
            retries,
            fallbacks,
            error_type,
            calls,
            total_calls,
            total_connections,
            headers,
            stream_error,
            equivalent,
            passthrough,
            limits
        )
    }

    /// This block's expectations for `mode` only (empty when it has none).
    pub fn for_mode(&self, mode: Mode) -> Expect {
        let block = match mode {
            Mode::Stream => &self.stream,
            Mode::NonStream => &self.non_stream,
        };
        block.as_deref().cloned().unwrap_or_default()
    }

    /// What a request must show in `mode`, most specific first: the request's block for the
    /// mode, the request's own fields, the scenario's block for the mode, the scenario's.
    pub fn resolve(request: Option<&Expect>, scenario: &Expect, mode: Mode) -> Expect {
        let general = scenario.for_mode(mode).or(scenario);
        match request {
            Some(r) => r.for_mode(mode).or(r).or(&general),
            None => general,
        }
    }

    /// What both modes share (for `equivalent`): the request's fields over the scenario's.
    pub fn shared(request: Option<&Expect>, scenario: &Expect) -> Expect {
        request.map_or_else(|| scenario.or(&Expect::default()), |r| r.or(scenario))
    }
}

/// A scenario that cannot be loaded or run.
pub type ScenarioError = YamlError;

impl Scenario {
    /// The instructions the scenario's gateway ends a continuation request with: its
    /// config's, then each reload's (a reload may change it).
    pub fn continuation_prompts(&self) -> Vec<String> {
        let mut prompts: Vec<String> = Vec::new();
        for gateway in std::iter::once(&self.gateway).chain(self.reloads.iter().map(|r| &r.gateway))
        {
            let prompt = gateway
                .router_settings
                .continuation_prompt
                .as_deref()
                .unwrap_or(switchback::catalog::DEFAULT_CONTINUATION_PROMPT);
            if !prompts.iter().any(|p| p == prompt) {
                prompts.push(prompt.to_string());
            }
        }
        prompts
    }

    pub fn load_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| YamlError {
            file: name.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read: {e}"),
            hint: None,
        })?;
        Scenario::load(&name, &text)
    }

    pub fn load(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = yaml::from_str(file, text)?;
        scenario.problem().map_err(|p| {
            let mut e = yaml::error_at(file, text, &p.path, p.message);
            e.hint = p.hint;
            e
        })?;
        Ok(scenario)
    }

    /// Semantic checks: the first problem, with its path (and the right name for a typo in
    /// the message).
    pub fn check(&self) -> Result<(), (Vec<PathSeg>, String)> {
        self.problem().map_err(|p| {
            let message = match &p.hint {
                Some(h) => format!("{} (did you mean `{h}`?)", p.message),
                None => p.message,
            };
            (p.path, message)
        })
    }

    /// Semantic checks: the first problem.
    pub fn problem(&self) -> Result<(), Problem> {
        self.check_world().map_err(|(path, message)| Problem {
            path,
            message,
            hint: None,
        })?;
        let hosts: Vec<&str> = self.providers.iter().map(|p| p.host.as_str()).collect();
        let key = |k: &str| PathSeg::Key(k.to_string());
        check_expect(&self.expect, vec![key("expect")], Block::Scenario, &hosts)?;
        for (i, r) in self.requests.iter().enumerate() {
            if let Some(e) = &r.expect {
                let at = vec![key("requests"), PathSeg::Index(i), key("expect")];
                check_expect(e, at, Block::Request, &hosts)?;
            }
        }
        Ok(())
    }

    /// A gateway config of the scenario (`gateway`, or a reload's), at `at`: valid, and every
    /// `api_base` one of the scenario's providers.
    fn check_gateway(
        &self,
        gateway: &GatewayConfig,
        at: Vec<PathSeg>,
    ) -> Result<(), (Vec<PathSeg>, String)> {
        check_plain_http(gateway, at.clone())?;
        if let Err(issues) = gateway.validate() {
            let first = &issues[0];
            return Err((join(at, first.path.clone()), first.message.clone()));
        }
        let hosts: Vec<&str> = self.providers.iter().map(|p| p.host.as_str()).collect();
        for (i, d) in gateway.model_list.iter().enumerate() {
            let base = d.litellm_params.api_base.as_deref().unwrap_or_default();
            let at = api_base_at(&at, i);
            let endpoint = Endpoint::parse(base).map_err(|m| (at.clone(), m))?;
            let known = self
                .providers
                .iter()
                .any(|p| p.host == endpoint.host && p.port == endpoint.port);
            if let Some(p) = self.providers.iter().find(|p| p.host == endpoint.host) {
                if !known {
                    return Err((
                        at,
                        format!(
                            "`{base}` names provider `{}` on port {}, but it listens on port {} (set `port: {}` on the provider, or use port {} here)",
                            p.host, endpoint.port, p.port, endpoint.port, p.port
                        ),
                    ));
                }
            }
            if !known {
                return Err((
                    at,
                    format!(
                        "`{base}` is not a provider of this scenario (hosts: {})",
                        hosts.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every length of time in milliseconds is at most [`MAX_DURATION_MS`]. The instants
    /// (`at_ms`) are not here: they must come before `duration_ms`, which is bounded too.
    /// Past a run's length a time means nothing, and the harness computes with these
    /// (`latency_ms` spans a range it draws from, a deadline is a start plus a timeout):
    /// `u64::MAX` there overflowed and aborted the harness.
    fn check_milliseconds(&self) -> Result<(), (Vec<PathSeg>, String)> {
        let key = |k: &str| PathSeg::Key(k.to_string());
        let mut times: Vec<(Vec<PathSeg>, u64)> = Vec::new();
        for (i, ms) in self.network.latency_ms.iter().enumerate() {
            times.push((
                vec![key("network"), key("latency_ms"), PathSeg::Index(i)],
                *ms,
            ));
        }
        if let Some(ms) = self.network.client_latency_ms {
            times.push((vec![key("network"), key("client_latency_ms")], ms));
        }
        for (i, p) in self.providers.iter().enumerate() {
            let at = vec![key("providers"), PathSeg::Index(i)];
            if let Some(ms) = p.keep_alive_ms {
                times.push((join(at.clone(), vec![key("keep_alive_ms")]), ms));
            }
            let scripts = std::iter::once((vec![key("default")], &p.default)).chain(
                p.calls
                    .iter()
                    .enumerate()
                    .map(|(j, s)| (vec![key("calls"), PathSeg::Index(j)], s)),
            );
            for (sub, s) in scripts {
                let at = join(at.clone(), sub);
                times.push((join(at.clone(), vec![key("ttfb_ms")]), s.ttfb_ms));
                times.push((join(at.clone(), vec![key("delay_ms")]), s.delay_ms));
                for (k, ms) in s.delays_ms.iter().enumerate() {
                    times.push((
                        join(at.clone(), vec![key("delays_ms"), PathSeg::Index(k)]),
                        *ms,
                    ));
                }
            }
        }
        for (i, r) in self.requests.iter().enumerate() {
            let at = |f: &[&str]| {
                let mut path = vec![key("requests"), PathSeg::Index(i)];
                path.extend(f.iter().map(|k| key(k)));
                path
            };
            times.push((at(&["timeout_ms"]), r.timeout_ms));
            if let Some(ms) = r.disconnect.as_ref().and_then(|d| d.after_ms) {
                times.push((at(&["disconnect", "after_ms"]), ms));
            }
            if let Some(sr) = &r.stop_reading {
                times.push((at(&["stop_reading", "hold_ms"]), sr.hold_ms));
            }
        }
        match times.into_iter().find(|(_, ms)| *ms > MAX_DURATION_MS) {
            Some((path, ms)) => Err((
                path,
                format!(
                    "{ms} ms is over MAX_DURATION_MS = {MAX_DURATION_MS} (a day), the longest a run may take"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Checks of everything but the expectations.
    fn check_world(&self) -> Result<(), (Vec<PathSeg>, String)> {
        let key = |k: &str| PathSeg::Key(k.to_string());
        check_plain_http(&self.gateway, vec![key("gateway")])?;
        if let Err(issues) = self.gateway.validate() {
            let first = &issues[0];
            let mut path = vec![key("gateway")];
            path.extend(first.path.iter().cloned());
            return Err((path, first.message.clone()));
        }
        if self.tick_ms == 0 || self.tick_ms > MAX_TICK_MS {
            return Err((vec![key("tick_ms")], format!("must be 1 to {MAX_TICK_MS}")));
        }
        if self.duration_ms == 0 || self.duration_ms > MAX_DURATION_MS {
            return Err((
                vec![key("duration_ms")],
                format!("must be 1 to {MAX_DURATION_MS}"),
            ));
        }
        self.check_milliseconds()?;
        let mut hosts: Vec<&str> = vec!["gateway", "client"];
        for (i, p) in self.providers.iter().enumerate() {
            let at = |f: &str| vec![key("providers"), PathSeg::Index(i), key(f)];
            if p.framing.write_bytes == Some(0) {
                return Err((
                    vec![
                        key("providers"),
                        PathSeg::Index(i),
                        key("framing"),
                        key("write_bytes"),
                    ],
                    "must be at least 1".to_string(),
                ));
            }
            if hosts.contains(&p.host.as_str()) {
                return Err((
                    at("host"),
                    format!("host `{}` is used twice (or is reserved)", p.host),
                ));
            }
            if p.host.is_empty()
                || !p
                    .host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err((at("host"), "a host name is letters, digits and `-`".into()));
            }
            if p.content_filter == ContentFilterMode::Async && p.dialect != Dialect::Azure {
                return Err((
                    at("content_filter"),
                    format!(
                        "`async` is Azure's Asynchronous Filter: it needs `dialect: azure`, \
                         and this provider speaks `{}`",
                        p.dialect.as_str()
                    ),
                ));
            }
            hosts.push(&p.host);
            check_script(&p.default, p.dialect)
                .map_err(|(sub, m)| (join(at("default"), sub), m))?;
            if !p.default.calls.is_empty()
                || p.default.for_model.is_some()
                || p.default.for_first_message.is_some()
                || p.default.every.is_some()
            {
                return Err((
                    at("default"),
                    "`calls`, `every`, `for_model` and `for_first_message` belong in `calls` \
                     entries"
                        .into(),
                ));
            }
            for (j, rule) in p.calls.iter().enumerate() {
                let at = vec![
                    key("providers"),
                    PathSeg::Index(i),
                    key("calls"),
                    PathSeg::Index(j),
                ];
                check_script(rule, p.dialect).map_err(|(sub, m)| (join(at, sub), m))?;
            }
        }
        self.check_gateway(&self.gateway, vec![key("gateway")])?;
        for (i, r) in self.reloads.iter().enumerate() {
            let at = vec![key("reloads"), PathSeg::Index(i)];
            self.check_gateway(&r.gateway, join(at.clone(), vec![key("gateway")]))?;
            if r.at_ms >= self.duration_ms {
                return Err((
                    join(at, vec![key("at_ms")]),
                    format!(
                        "at_ms = {} is not before duration_ms = {}",
                        r.at_ms, self.duration_ms
                    ),
                ));
            }
        }
        for (i, f) in self.network.faults.iter().enumerate() {
            let at = vec![key("network"), key("faults"), PathSeg::Index(i)];
            let actions = f.actions();
            if actions.len() != 1 {
                return Err((
                    at,
                    format!("one action per entry, this one has {}", actions.len()),
                ));
            }
            let field = |name: &str| join(at.clone(), vec![key(name)]);
            // The world steps until the last fault (and a drain after it): a fault past the
            // end would keep a finished run stepping, for a day of simulated time here.
            if f.at_ms >= self.duration_ms {
                return Err((
                    field("at_ms"),
                    format!(
                        "at_ms = {} is not before duration_ms = {}",
                        f.at_ms, self.duration_ms
                    ),
                ));
            }
            let (name, named): (&str, Vec<String>) = match &actions[0] {
                NetAction::Partition(p) => ("partition", p.to_vec()),
                NetAction::Repair(p) => ("repair", p.to_vec()),
                NetAction::Hold(p) => ("hold", p.to_vec()),
                NetAction::Release(p) => ("release", p.to_vec()),
                NetAction::Crash(h)
                | NetAction::Bounce(h)
                | NetAction::Refuse(h)
                | NetAction::Listen(h) => {
                    let name = actions[0].name();
                    if h == "gateway" || h == "client" {
                        return Err((field(name), format!("only provider hosts can {name}")));
                    }
                    (name, vec![h.clone()])
                }
                NetAction::FailRate(link, rate) => {
                    if !(0.0..=1.0).contains(rate) {
                        return Err((
                            join(field("fail_rate"), vec![key("rate")]),
                            "rate is 0.0 to 1.0".into(),
                        ));
                    }
                    ("fail_rate", link.to_vec())
                }
            };
            for (j, h) in named.iter().enumerate() {
                if !hosts.contains(&h.as_str()) {
                    let mut path = field(name);
                    match name {
                        "crash" | "bounce" | "refuse" | "listen" => {}
                        "fail_rate" => path.extend([key("link"), PathSeg::Index(j)]),
                        _ => path.push(PathSeg::Index(j)),
                    }
                    return Err((path, format!("unknown host `{h}`")));
                }
            }
        }
        if let Some(c) = self.network.tcp_capacity {
            if !(1..=crate::world::TCP_CAPACITY).contains(&c) {
                return Err((
                    vec![key("network"), key("tcp_capacity")],
                    format!("must be 1 to {}", crate::world::TCP_CAPACITY),
                ));
            }
        }
        if self.network.latency_ms[0] > self.network.latency_ms[1] {
            return Err((
                vec![key("network"), key("latency_ms")],
                "min is above max".into(),
            ));
        }
        if self.requests.is_empty() {
            return Err((
                vec![key("requests")],
                "a scenario needs at least one request".into(),
            ));
        }
        let total: u64 = self.requests.iter().map(|r| u64::from(r.repeat)).sum();
        if total > u64::from(MAX_REQUESTS) {
            return Err((
                vec![key("requests")],
                format!("{total} requests is over MAX_REQUESTS = {MAX_REQUESTS}"),
            ));
        }
        for (i, r) in self.requests.iter().enumerate() {
            let at = |f: &str| vec![key("requests"), PathSeg::Index(i), key(f)];
            if r.repeat == 0 {
                return Err((at("repeat"), "`repeat` must be at least 1".into()));
            }
            if r.concurrency == 0 {
                return Err((at("concurrency"), "`concurrency` must be at least 1".into()));
            }
            if let Some(k) = &r.key {
                if !self.gateway.keys.iter().any(|c| c.key.expose() == k) {
                    return Err((at("key"), format!("key `{k}` is not in gateway.keys")));
                }
            }
            if r.timeout_ms == 0 {
                return Err((at("timeout_ms"), "must be at least 1".into()));
            }
            if r.at_ms >= self.duration_ms {
                return Err((
                    at("at_ms"),
                    format!(
                        "at_ms = {} is not before duration_ms = {}: the run would be over before the request is sent",
                        r.at_ms, self.duration_ms
                    ),
                ));
            }
            let streams_only = !self.modes.contains(&Mode::NonStream);
            if let Some(d) = &r.disconnect {
                let sub = |f: &str| join(at("disconnect"), vec![key(f)]);
                match (d.after_chunks, d.after_ms) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err((
                            at("disconnect"),
                            "give one of `after_chunks` and `after_ms`".into(),
                        ));
                    }
                    (Some(_), None) if !streams_only => {
                        return Err((
                            sub("after_chunks"),
                            "`after_chunks` counts stream chunks: give the scenario `modes: [stream]`".into(),
                        ));
                    }
                    (None, Some(0)) => {
                        return Err((sub("after_ms"), "must be at least 1".into()));
                    }
                    _ => {}
                }
            }
            if let Some(sr) = &r.stop_reading {
                // A slow reader (`resume`) is compared across modes: the non-streaming client
                // reads its one body as any client does.
                if !streams_only && !sr.resume {
                    return Err((
                        at("stop_reading"),
                        "only a stream can stop being read: give the scenario `modes: [stream]` \
                         (or `resume: true`, a slow reader, whose answer is compared across modes)"
                            .into(),
                    ));
                }
                if sr.hold_ms >= r.timeout_ms {
                    return Err((
                        join(at("stop_reading"), vec![key("hold_ms")]),
                        format!(
                            "hold_ms = {} must be below the request's timeout_ms = {}",
                            sr.hold_ms, r.timeout_ms
                        ),
                    ));
                }
                if r.disconnect.is_some() {
                    return Err((
                        at("stop_reading"),
                        "a client either disconnects or stops reading, not both".into(),
                    ));
                }
            }
        }
        if self.modes.is_empty() {
            return Err((vec![key("modes")], "name at least one mode".into()));
        }
        // A mode named twice runs twice and the other never: reported as passed, with no
        // equivalence checked.
        for (i, m) in self.modes.iter().enumerate() {
            if self.modes[..i].contains(m) {
                return Err((
                    vec![key("modes"), PathSeg::Index(i)],
                    format!("mode `{}` is named twice", m.as_str()),
                ));
            }
        }
        Ok(())
    }
}

/// A problem [`Scenario::problem`] found: where, what, and the right name for a typo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: Vec<PathSeg>,
    pub message: String,
    pub hint: Option<String>,
}

/// Where an `expect` block sits, which decides what it may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Scenario,
    Request,
    /// A `stream:` or `non_stream:` block inside one of the above (`of_request`: inside a
    /// request's `expect`, where run-wide counts do not belong either).
    Mode {
        mode: Mode,
        of_request: bool,
    },
}

/// The path of deployment `i`'s `api_base` in the gateway config at `at`.
fn api_base_at(at: &[PathSeg], i: usize) -> Vec<PathSeg> {
    let key = |k: &str| PathSeg::Key(k.to_string());
    join(
        at.to_vec(),
        vec![
            key("model_list"),
            PathSeg::Index(i),
            key("litellm_params"),
            key("api_base"),
        ],
    )
}

/// Every upstream of a scenario's gateway config is plain HTTP, checked before the config's
/// own checks, which would read an `ssl_verify` CA bundle from this machine's disk.
fn check_plain_http(
    gateway: &GatewayConfig,
    at: Vec<PathSeg>,
) -> Result<(), (Vec<PathSeg>, String)> {
    let key = |k: &str| PathSeg::Key(k.to_string());
    for (i, d) in gateway.model_list.iter().enumerate() {
        let base = d.litellm_params.api_base.as_deref().unwrap_or_default();
        let at = api_base_at(&at, i);
        let tls = Endpoint::parse(base).is_ok_and(|e| e.tls);
        // rustls draws a handshake's randomness from the operating system: a TLS
        // upstream in the simulation would name its connection, and so draw its
        // latencies, differently at every run of the same seed.
        if tls {
            return Err((
                at,
                format!(
                    "`{base}` is https: the simulation's upstreams are plain HTTP, since a TLS \
                         handshake's randomness would make the same seed run differently (use \
                         `http://`; TLS is tested on loopback, `tests/upstream_tls.rs`)"
                ),
            ));
        }
        if d.litellm_params.ssl_verify.is_some() {
            let at = join(at[..at.len() - 1].to_vec(), vec![key("ssl_verify")]);
            return Err((
                at,
                "`ssl_verify` is for https upstreams, which a scenario cannot have (and a CA \
                     bundle would be read from this machine's disk)"
                    .to_string(),
            ));
        }
    }
    Ok(())
}

/// Checks an `expect` block: event names are the engine's, hosts are providers, and each
/// field is allowed where it stands.
fn check_expect(e: &Expect, at: Vec<PathSeg>, block: Block, hosts: &[&str]) -> Result<(), Problem> {
    let here = |names: &[PathSeg]| {
        let mut p = at.clone();
        p.extend(names.iter().cloned());
        p
    };
    let key = |k: &str| PathSeg::Key(k.to_string());
    let problem = |path: Vec<PathSeg>, message: String| Problem {
        path,
        message,
        hint: None,
    };
    for (field, names) in [("events", &e.events), ("no_events", &e.no_events)] {
        for (j, name) in names.iter().enumerate() {
            if !crate::oracle::EVENT_NAMES.contains(&name.as_str()) {
                return Err(Problem {
                    path: here(&[key(field), PathSeg::Index(j)]),
                    message: format!(
                        "unknown event `{name}`, expected one of {}",
                        crate::oracle::EVENT_NAMES.join(", ")
                    ),
                    hint: yaml::nearest(name, crate::oracle::EVENT_NAMES.iter().copied()),
                });
            }
        }
    }
    for (field, counts) in [
        ("calls", &e.calls),
        ("total_calls", &e.total_calls),
        ("total_connections", &e.total_connections),
    ] {
        for host in counts.iter().flat_map(|c| c.keys()) {
            if !hosts.contains(&host.as_str()) {
                return Err(Problem {
                    path: here(&[key(field), key(host)]),
                    message: format!(
                        "`{host}` is not a provider host of this scenario (hosts: {})",
                        hosts.join(", ")
                    ),
                    hint: yaml::nearest(host, hosts.iter().copied()),
                });
            }
        }
    }
    if let Some(headers) = &e.headers {
        for name in headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(problem(
                    here(&[key("headers"), key(name)]),
                    format!("`{name}` is not a header name"),
                ));
            }
        }
    }
    let inner = |field: &str| -> Option<Result<(), Problem>> {
        let (mode, sub) = match field {
            "stream" => (Mode::Stream, e.stream.as_deref()?),
            _ => (Mode::NonStream, e.non_stream.as_deref()?),
        };
        Some(match block {
            Block::Mode { .. } => Err(problem(
                here(&[key(field)]),
                "a per-mode block cannot hold another".into(),
            )),
            Block::Scenario | Block::Request => check_expect(
                sub,
                here(&[key(field)]),
                Block::Mode {
                    mode,
                    of_request: block == Block::Request,
                },
                hosts,
            ),
        })
    };
    for field in ["stream", "non_stream"] {
        if let Some(result) = inner(field) {
            result?;
        }
    }
    if let Block::Mode { mode, .. } = block {
        if e.equivalent.is_some() {
            return Err(problem(
                here(&[key("equivalent")]),
                "`equivalent` compares the two modes: it cannot be set for one of them".into(),
            ));
        }
        if mode == Mode::NonStream && e.stream_error.is_some() {
            return Err(problem(
                here(&[key("stream_error")]),
                "`stream_error` is about streams: it cannot be set for non_stream".into(),
            ));
        }
    }
    for (field, set) in [
        ("total_calls", e.total_calls.is_some()),
        ("total_connections", e.total_connections.is_some()),
    ] {
        let of_request = matches!(
            block,
            Block::Request
                | Block::Mode {
                    of_request: true,
                    ..
                }
        );
        if of_request && set {
            return Err(problem(
                here(&[key(field)]),
                format!("`{field}` counts the whole run: put it in the scenario's `expect`"),
            ));
        }
    }
    Ok(())
}

/// Checks one script; an error carries the path (inside the script) of the culprit.
fn check_script(s: &Script, dialect: Dialect) -> Result<(), (Vec<PathSeg>, String)> {
    let at = |names: &[&str]| {
        names
            .iter()
            .map(|n| PathSeg::Key(n.to_string()))
            .collect::<Vec<_>>()
    };
    if s.text.is_some() && s.chunks.is_some() {
        return Err((at(&["chunks"]), "give `text` or `chunks`, not both".into()));
    }
    if s.every == Some(0) {
        return Err((at(&["every"]), "`every` must be at least 1".into()));
    }
    if s.chunk_size == Some(0) {
        return Err((
            at(&["chunk_size"]),
            "`chunk_size` must be at least 1".into(),
        ));
    }
    if s.arguments_chunk_size == Some(0) {
        return Err((
            at(&["arguments_chunk_size"]),
            "`arguments_chunk_size` must be at least 1".into(),
        ));
    }
    let answers = [
        ("text", s.text.is_some() || s.chunks.is_some()),
        ("refusal", s.refusal.is_some()),
        ("audio", s.audio.is_some()),
    ];
    let given: Vec<&str> = answers
        .iter()
        .filter(|(_, g)| *g)
        .map(|(n, _)| *n)
        .collect();
    if let [_, second, ..] = given.as_slice() {
        return Err((
            at(&[second]),
            "an answer is text, a refusal or audio: give one of `text`/`chunks`, `refusal`, `audio`".into(),
        ));
    }
    if !s.more_choices.is_empty() && (s.refusal.is_some() || s.audio.is_some()) {
        return Err((
            at(&["more_choices"]),
            "`more_choices` are text: choice 0 must be text too".into(),
        ));
    }
    for (i, call) in s.tool_calls.iter().enumerate() {
        if call.name.is_empty() {
            return Err((
                vec![
                    PathSeg::Key("tool_calls".into()),
                    PathSeg::Index(i),
                    PathSeg::Key("name".into()),
                ],
                "a tool call needs a name".into(),
            ));
        }
    }
    let chunks = crate::dialect::pieces(dialect, s).len();
    if chunks > MAX_CHUNKS {
        return Err((
            at(&["text"]),
            format!("more than MAX_CHUNKS = {MAX_CHUNKS} chunks"),
        ));
    }
    if let Some(f) = &s.flood {
        if f.count > MAX_FLOOD {
            return Err((
                at(&["flood", "count"]),
                format!("{} items is over MAX_FLOOD = {MAX_FLOOD}", f.count),
            ));
        }
        if f.pad > MAX_FLOOD_PAD {
            return Err((
                at(&["flood", "pad"]),
                format!("{} bytes is over MAX_FLOOD_PAD = {MAX_FLOOD_PAD}", f.pad),
            ));
        }
        if f.after_chunks > chunks {
            return Err((
                at(&["flood", "after_chunks"]),
                format!(
                    "after_chunks = {} but the answer has {chunks} chunks",
                    f.after_chunks
                ),
            ));
        }
    }
    if let Some(f) = &s.fault {
        if f.kind == FaultKind::Http && f.after_chunks != 0 {
            return Err((
                at(&["fault", "after_chunks"]),
                "an `http` fault happens before any chunk: after_chunks must be 0".into(),
            ));
        }
        if f.echo.is_some() && !matches!(f.kind, FaultKind::Http | FaultKind::ErrorEvent) {
            return Err((
                at(&["fault", "echo"]),
                "only `http` and `error_event` faults carry an error to echo into".into(),
            ));
        }
        if f.after_chunks > chunks {
            return Err((
                at(&["fault", "after_chunks"]),
                format!(
                    "after_chunks = {} but the answer has {chunks} chunks",
                    f.after_chunks
                ),
            ));
        }
        if let Some(st) = f.status {
            if !(100..=599).contains(&st) {
                return Err((
                    at(&["fault", "status"]),
                    format!("status {st} is not an HTTP status"),
                ));
            }
        }
    }
    Ok(())
}

fn join(mut base: Vec<PathSeg>, sub: Vec<PathSeg>) -> Vec<PathSeg> {
    base.extend(sub);
    base
}

/// Every `*.yaml` under `dir`, sorted, recursively.
pub fn find_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
