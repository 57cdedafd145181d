//! The file model of what a fake answers besides plain text, and of hostile clients.
//!
//! Owns: the YAML types for a provider's wire [`Dialect`] (and Azure's
//! [`ContentFilterMode`]), the answer shapes a script can
//! produce (tool calls, more choices, reasoning, refusals, audio, annotations, logprobs),
//! the hostile upstream shapes ([`Flood`], [`Echo`]) and the hostile client behaviours
//! ([`Disconnect`], [`StopReading`]), with `deny_unknown_fields` everywhere. Does not own
//! rendering them on the wire (`dialect`, `fake`) or acting them out (`client`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest flood a script may ask for (items), so every hostile scenario stays bounded.
pub const MAX_FLOOD: u32 = 200_000;
/// Longest padding of one flood item, bytes.
pub const MAX_FLOOD_PAD: usize = 64 * 1024;

/// How a provider speaks OpenAI's wire format: the real dialects upstreams use.
/// `dialect::` documents each shape and where it was checked against the real thing.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// OpenAI's own: a role chunk per choice, `usage: null` on every chunk when usage was
    /// asked for, then a usage chunk with `choices: []`.
    #[default]
    Openai,
    /// Azure OpenAI: a first chunk with `choices: []` and `prompt_filter_results`, and
    /// `content_filter_results` on every choice.
    Azure,
    /// Gemini's OpenAI-compatible endpoint: `role` in every delta, usage on every chunk,
    /// the finish reason on the last content chunk, each tool call whole in one chunk.
    Gemini,
    /// Ollama's OpenAI-compatible endpoint: `role` and `content` in every delta, each tool
    /// call whole in one chunk, without an `index`.
    Ollama,
    /// vLLM: `reasoning_content` deltas before the content.
    Vllm,
    /// SGLang 0.4.3: `finish_reason: ""` on every chunk but the last, `role: null` and
    /// `tool_calls: null` in every delta, `matched_stop` beside the finish reason, `usage:
    /// null` on every chunk.
    Sglang,
    /// An upstream that answers a stream request with one JSON `chat.completion`.
    JsonOnly,
    /// MiniMax's OpenAI-compatible endpoint (chatcompletion_v2): `role`, `name` and
    /// `audio_content` in every delta, no finish chunk, and a stream that ends with the
    /// whole answer again as a `chat.completion` (a `message`, the finish reason, the usage).
    Minimax,
    /// Together AI: `token_id`, `role` and `tool_calls: null` in every delta, the text again
    /// as the choice's `text`, a `seed` (null until the finish chunk), and the usage on the
    /// finish chunk, asked for or not.
    Together,
    /// Moonshot's Kimi: the usage inside the finishing choice (`choices[i].usage`), asked
    /// for or not, and nowhere else.
    Kimi,
    /// Perplexity: every chunk a `chat.completion` with the running usage and the
    /// citations, and the whole message so far beside every delta.
    Perplexity,
}

impl Dialect {
    pub const ALL: [Dialect; 11] = [
        Dialect::Openai,
        Dialect::Azure,
        Dialect::Gemini,
        Dialect::Ollama,
        Dialect::Vllm,
        Dialect::Sglang,
        Dialect::JsonOnly,
        Dialect::Minimax,
        Dialect::Together,
        Dialect::Kimi,
        Dialect::Perplexity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Openai => "openai",
            Dialect::Azure => "azure",
            Dialect::Gemini => "gemini",
            Dialect::Ollama => "ollama",
            Dialect::Vllm => "vllm",
            Dialect::Sglang => "sglang",
            Dialect::JsonOnly => "json_only",
            Dialect::Minimax => "minimax",
            Dialect::Together => "together",
            Dialect::Kimi => "kimi",
            Dialect::Perplexity => "perplexity",
        }
    }

    /// How this dialect numbers streamed tool calls unless the provider says otherwise.
    pub fn default_tool_call_index(self) -> ToolCallIndex {
        match self {
            Dialect::Gemini | Dialect::Ollama => ToolCallIndex::Omit,
            _ => ToolCallIndex::Sequential,
        }
    }
}

/// How a provider lays its SSE events out on the wire. The default is what OpenAI sends:
/// `data: <payload>` and a blank line, LF line ends, each event in one write. Real servers
/// differ (CRLF line ends, `data:` with no space, events cut across TCP reads, a UTF-8
/// character among them), and a gateway must read them all alike (WHATWG's SSE parsing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Framing {
    /// The line end after each field and for the blank line (default `lf`).
    #[serde(default, skip_serializing_if = "is_lf")]
    pub line_end: LineEnd,
    /// `data:<payload>`, with no space after the colon (default: one space).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_space: bool,
    /// Writes of at most this many bytes: each event cut across that many reads of the
    /// gateway's (a line, a JSON string, a UTF-8 character cut where they fall). At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bytes: Option<usize>,
}

fn is_lf(l: &LineEnd) -> bool {
    *l == LineEnd::Lf
}

/// An SSE line end (all three are valid SSE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineEnd {
    #[default]
    Lf,
    Crlf,
    Cr,
}

impl LineEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnd::Lf => "\n",
            LineEnd::Crlf => "\r\n",
            LineEnd::Cr => "\r",
        }
    }
}

impl Framing {
    /// One `data:` event, framed.
    pub fn event(&self, payload: &str) -> String {
        self.field_event("data", payload)
    }

    /// One event of a single `field` line (`error: {...}`, as llama.cpp's older servers
    /// sent a failure) and a blank line, framed.
    pub fn field_event(&self, field: &str, payload: &str) -> String {
        let end = self.line_end.as_str();
        let space = if self.no_space { "" } else { " " };
        format!("{field}:{space}{payload}{end}{end}")
    }

    /// One SSE comment line (`: <text>`) and a blank line, framed.
    pub fn comment(&self, text: &str) -> String {
        let end = self.line_end.as_str();
        format!(": {text}{end}{end}")
    }

    /// `bytes` as the writes this provider makes of them.
    pub fn writes(&self, bytes: bytes::Bytes) -> Vec<bytes::Bytes> {
        match self.write_bytes {
            Some(n) if n < bytes.len() => {
                assert!(n > 0, "write_bytes is validated to be at least 1");
                (0..bytes.len())
                    .step_by(n)
                    .map(|at| bytes.slice(at..(at + n).min(bytes.len())))
                    .collect()
            }
            _ => vec![bytes],
        }
    }
}

/// Which streamed chunks carry a choice's finish reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReasons {
    /// The finishing chunk only (OpenAI; `sglang` sends `""` on the others).
    #[default]
    Last,
    /// Every chunk carries the answer's finish reason, the role chunk too: Open WebUI's
    /// `/api/chat/completions` (open-webui issue 16377) and several Gemini relays
    /// (one-hub issue 402). A content filter's finish stays on its own chunk.
    EveryChunk,
}

/// How an Azure OpenAI deployment streams its content filter's verdicts (Microsoft's
/// `content-filter-streaming.md`; set per deployment in the Foundry portal). A non-stream
/// answer is the same in both: the whole answer is filtered before it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContentFilterMode {
    /// The text is filtered before it is sent: every content chunk carries its
    /// `content_filter_results`.
    #[default]
    Default,
    /// Azure's Asynchronous Filter: content chunks go out unfiltered, without results;
    /// annotation chunks (`id: ""`, `model: ""`, no `delta`, `content_filter_offsets`) come
    /// between them and after the finish chunk, and a block ends the stream with an
    /// annotation whose `finish_reason` is `content_filter`, the text already sent staying
    /// sent. Only for `dialect: azure`.
    Async,
}

impl ContentFilterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentFilterMode::Default => "default",
            ContentFilterMode::Async => "async",
        }
    }
}

/// The `index` a streamed tool-call delta carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallIndex {
    /// 0, 1, 2... (OpenAI).
    Sequential,
    /// No `index` at all (Gemini; Ollama before 0.4.7).
    Omit,
    /// `index: 0` on every call (Ollama from 0.4.7 on, SGLang).
    Zero,
}

/// Which of a streamed tool call's deltas carry its `id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallIds {
    /// The call's first delta only (OpenAI).
    #[default]
    Once,
    /// Every fragment, a fresh id each (Poolside's API, LiteLLM's OCI handler,
    /// mlx-openai-server before its PR 216); the call's id is the first. OpenAI-style
    /// dialects only: Gemini and Ollama send each call whole.
    EveryFragment,
}

/// One tool call of a scripted answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallSpec {
    /// The call's id (default `call_<host>_<n>`, n counting from 0 in the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The function's name.
    pub name: String,
    /// The function's arguments, as the JSON text the model writes.
    #[serde(default = "empty_object")]
    pub arguments: String,
}

fn empty_object() -> String {
    "{}".to_string()
}

/// A hostile upstream's content-less flood, sent after `after_chunks` content chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flood {
    /// What the flood is made of.
    pub kind: FloodKind,
    /// Items sent (at most `MAX_FLOOD`).
    pub count: u32,
    /// Content chunks of the answer sent before the flood (0: before any content).
    #[serde(default)]
    pub after_chunks: usize,
    /// Bytes of padding in each item: a comment's text, or a role-only chunk's extra field.
    #[serde(default)]
    pub pad: usize,
}

/// What a flood is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FloodKind {
    /// Chunks whose delta is only `{"role": "assistant"}`.
    RoleOnly,
    /// SSE comment lines (`: ...`).
    Comments,
    /// Role-only chunks, each for a choice `index` never seen before (1, 2, 3...).
    NewChoiceIndex,
    /// Chunks with one character of content, each for a new choice `index`.
    NewChoiceContent,
}

impl FloodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FloodKind::RoleOnly => "role_only",
            FloodKind::Comments => "comments",
            FloodKind::NewChoiceIndex => "new_choice_index",
            FloodKind::NewChoiceContent => "new_choice_content",
        }
    }
}

/// What a hostile upstream repeats of the request it got, in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Echo {
    /// The error message quotes the `Authorization` header (OpenAI's 401 wording).
    Authorization,
    /// The error body is `text/plain` listing every request header, `name: value`.
    Headers,
    /// The error's `param` (the request field a 400 blames) is the key it got, as a field
    /// path would read: the one part of an upstream error passed on to the client as it is.
    Param,
}

/// The scripted client leaves: after `after_chunks` stream chunks, or `after_ms` after it
/// sent the request (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disconnect {
    /// Chunks read (any chunk, content or not) before the client closes its connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_chunks: Option<usize>,
    /// Milliseconds after sending before the client closes its connection, whatever came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
}

/// The scripted client stops reading a stream after `after_chunks` chunks, and holds its
/// connection open without reading for `hold_ms` (bounded by the request's `timeout_ms`);
/// then it leaves, or with `resume`, reads the rest: a slow reader, whose answer must be
/// the one a fast reader gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopReading {
    /// Chunks read before the client stops reading.
    #[serde(default)]
    pub after_chunks: usize,
    /// How long it then holds the connection without reading, milliseconds.
    pub hold_ms: u64,
    /// After `hold_ms`, read on to the end rather than leave (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
}
