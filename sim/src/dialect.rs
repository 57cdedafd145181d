//! What real providers' answers look like on the wire.
//!
//! Owns: turning one scripted answer ([`Script`]) of one provider into the pieces of its
//! answer ([`Reply`]), and rendering them the way that provider's dialect streams them
//! (`chat.completion.chunk` payloads) and answers them whole (its own `chat.completion`).
//! Both renderings come from the same pieces, and the whole answer is what OpenAI's
//! accumulation of the stream gives, so "the provider's own non-stream answer" exists for
//! every streamed one. Does not own timing, faults or the HTTP exchange (`fake`).
//!
//! Each dialect follows captures of the real thing (keys in the order the provider writes
//! them):
//!
//! * `openai`: OpenAI's streaming reference and captured streams: `service_tier`,
//!   `system_fingerprint`, a role chunk per choice with `content: ""` and `refusal: null`,
//!   `logprobs: null` on every choice, `usage: null` on every chunk when
//!   `stream_options.include_usage` was asked for, then a usage chunk with `choices: []`,
//!   and the `obfuscation` padding field on streamed chunks.
//! * `azure`: a captured Azure OpenAI stream (`dto-btn/ssc-assistant`,
//!   `mergeOpenAiDelta/testHelpers/simple_chat.ts`) and Microsoft's content-filter
//!   streaming docs (`MicrosoftDocs/azure-ai-docs`, `content-filter-streaming.md`): keys in
//!   alphabetical order, a first chunk with `choices: []`, `created: 0`, `id: ""`,
//!   `model: ""`, `object: ""` and `prompt_filter_results`; `content_filter_results` on
//!   every choice (`{}` on the role and finish chunks). With `content_filter: async`
//!   (Azure's Asynchronous Filter), content chunks carry no results and annotation chunks
//!   come between them and after the finish chunk: [`async_filter`].
//! * `gemini`: captured streams of `generativelanguage.googleapis.com/v1beta/openai`
//!   (gemini-2.5-flash-lite; THU-MAIC/OpenMAIC issue 1556 for tool calls): alphabetical
//!   keys, `role` in every delta, no `finish_reason` until the last content chunk, which
//!   carries it, cumulative `usage` on every chunk, each tool call whole in one chunk
//!   without an `index`.
//! * `ollama`: captured streams of Ollama's `/v1/chat/completions` (g0t4/ask-openai.nvim
//!   notes) and ollama/ollama issue 7881: `system_fingerprint: "fp_ollama"`, `role` and
//!   `content` in every delta, each tool call whole in one chunk, without `index` before
//!   0.4.7 (issue 15457: `index: 0` on every call after; `tool_call_index: zero`).
//! * `vllm`: vLLM's reasoning outputs docs (v0.10): a role chunk, `reasoning_content`
//!   deltas before the content, `stop_reason` beside the finish reason.
//! * `sglang`: a captured SGLang 0.4.3 stream (sgl-project/sglang issue 3912; Ollama
//!   before 0.1.39 and others did the same, ollama/ollama issue 4357): `finish_reason: ""`
//!   on every chunk but the last, `role: null` and `tool_calls: null` in every delta after
//!   the role chunk, `matched_stop: null` beside the finish reason, `usage: null` on every
//!   chunk.
//! * `json_only`: an upstream that ignores `stream: true` and answers with one
//!   `chat.completion` (OpenAI's shape).
//! * `minimax`: MiniMax's `chatcompletion_v2` / `/v1/chat/completions` (streams captured
//!   in higress-group/higress PRs 1593 and 1663, MiniMax-AI/MiniMax-M2 issue 105,
//!   MiniMax-M2.5 issue 2): `role`, `name: "MiniMax AI"` and `audio_content: ""` in every
//!   delta, `usage` with zero counts and `input_sensitive`/`output_sensitive` on every
//!   chunk, no role chunk and no finish chunk. The stream ends with the whole answer once
//!   more, as its own `chat.completion`: each choice's `message` (no `delta`), its finish
//!   reason, the real usage and `base_resp` (ENTERPILOT/GoModel PR 1068, cline PR 9215 and
//!   others found clients that append it doubled). Its non-stream answer is that object.
//! * `together`: Together AI's `/v1/chat/completions` (a stream captured in
//!   lzell/AIProxySwift, `TogetherAIChatCompletionStreamingChunkTests.swift`, 2024-08;
//!   llama-stack's recorded Together streams, 2025-09; togethercomputer/together-py's
//!   chunk type): every delta is `{token_id, role, content, tool_calls: null}`, every
//!   choice `{index, text, logprobs, finish_reason, seed, delta}` with the delta's text
//!   again as `text` and `seed: null`, `usage: null` on every chunk but the finish chunk,
//!   which carries the end-of-sequence token's id, `content: ""`, a `seed` past 2^63 and
//!   the usage, asked for or not. No role chunk, no usage chunk apart.
//! * `kimi`: Moonshot's Kimi (`api.moonshot.ai/v1`; ENTERPILOT/GoModel's recorded Kimi
//!   stream, earendil-works/pi issue 2017): OpenAI's chunks without `logprobs`, a role
//!   chunk, and the usage inside the finishing choice (`choices[i].usage`), asked for or
//!   not; no usage at the top, no usage chunk apart.
//! * `perplexity`: Perplexity's `/chat/completions` (perplexityai/api-discussion issues 193
//!   and 209; LiteLLM's Perplexity tests): every chunk is `object: chat.completion` with
//!   the running `usage` and the `citations`, and every choice holds the whole message so
//!   far as `message` beside its `delta` (which names the role every time). No role chunk,
//!   no usage chunk apart.
//! * `tool_call_ids: every_fragment`, with any OpenAI-style dialect: a fresh `id` on every
//!   fragment of a streamed tool call, the function's name on its first only (Poolside's
//!   API, LiteLLM's OCI handler, mlx-openai-server before its PR 216).
//!
//! Where a real provider's non-stream answer has fields its stream never carries (Azure's
//! `annotations: []`, vLLM's `prompt_logprobs: null` and `tool_calls: []`), the fake's own
//! answer leaves them out, so that it is exactly the accumulation of its stream; a real
//! provider whose two modes disagree (Gemini's streamed tool calls end with
//! `finish_reason: "stop"`, its non-stream ones with `"tool_calls"`: googleapis/python-genai
//! issue 2868) is not reproduced, since no gateway could make that consistent.

use serde_json::{Map, Value, json};

use crate::scenario::{
    ContentFilterMode, Dialect, FinishReasons, Provider, Script, ToolCallIds, ToolCallIndex,
    ToolCallSpec,
};

pub mod async_filter;

/// Fixed `created` timestamp, so answers are byte-identical across runs.
pub const CREATED: u64 = 1_700_000_000;
/// `expires_at` of scripted audio.
pub const AUDIO_EXPIRES_AT: u64 = 1_700_003_600;
/// Prompt tokens every fake reports.
pub const PROMPT_TOKENS: u64 = 5;
/// The token id Together puts in a content delta, and in its finish chunk's (Llama 3's
/// end-of-sequence token).
const TOGETHER_TOKEN_ID: u64 = 30;
const TOGETHER_EOS_TOKEN_ID: u64 = 128_009;
/// The sources Perplexity cites, on every chunk.
const PERPLEXITY_CITATIONS: [&str; 2] = [
    "https://docs.perplexity.ai/guides/streaming",
    "https://example.com/fake-source",
];
/// The `seed` Together puts on its finish chunk (past 2^63, as the captures' are).
const TOGETHER_SEED: u64 = 16_158_686_754_257_986_000;

/// One content piece of an answer: what one content chunk carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Content(String),
    Reasoning(String),
    Refusal(String),
    /// A piece of the audio transcript and its data; the first carries the audio's id.
    Audio {
        transcript: String,
        data: String,
        first: bool,
        last: bool,
    },
    /// A fragment of tool call `call`: the header (id, type, name) and/or arguments.
    ToolCall {
        call: usize,
        header: bool,
        arguments: String,
    },
    /// Every URL citation of the choice.
    Annotations,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub choice: u32,
    pub part: Part,
    /// The gap before this piece, milliseconds.
    pub delay_ms: u64,
}

/// One answer of one call, ready to be rendered either way.
#[derive(Debug, Clone)]
pub struct Reply {
    pub dialect: Dialect,
    pub tool_call_index: ToolCallIndex,
    pub tool_call_ids: ToolCallIds,
    pub id: String,
    pub model: String,
    pub pieces: Vec<Piece>,
    /// Number of choices (n).
    pub choices: u32,
    pub tool_calls: Vec<(String, String, String)>,
    pub annotations: Vec<String>,
    pub logprobs: bool,
    pub finish: String,
    pub audio_id: String,
    /// Whether the request asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// Characters of the request's prompt, where Azure's async-filter offsets start.
    pub prompt_chars: usize,
    /// An Azure deployment with the Asynchronous Filter ([`async_filter`]).
    async_filter: bool,
    /// Which choices have text (content) pieces at all, in the whole answer.
    text_choices: Vec<bool>,
    /// The answer's finish reason on every chunk ([`FinishReasons::EveryChunk`]).
    pub finish_on_every_chunk: bool,
}

/// Cuts `text` into pieces of `size` characters.
pub fn cut(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// The content pieces of `script` as `dialect` sends them, before any continuation: its
/// reasoning, then the text of every choice (interleaved), then annotations, then tool
/// calls. The order of `delays_ms` follows this list.
pub fn pieces(dialect: Dialect, script: &Script) -> Vec<(u32, Part)> {
    let size = script
        .chunk_size
        .unwrap_or(crate::scenario::DEFAULT_CHUNK_SIZE)
        .max(1);
    let mut out = Vec::new();
    if let Some(r) = &script.reasoning {
        out.extend(cut(r, size).into_iter().map(|p| (0, Part::Reasoning(p))));
    }
    let first: Vec<Part> = if let Some(refusal) = &script.refusal {
        cut(refusal, size).into_iter().map(Part::Refusal).collect()
    } else if let Some(transcript) = &script.audio {
        let parts = cut(transcript, size);
        let n = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, t)| Part::Audio {
                data: base64(t.as_bytes()),
                transcript: t,
                first: i == 0,
                last: i + 1 == n,
            })
            .collect()
    } else if script.tool_calls.is_empty() || script.text.is_some() || script.chunks.is_some() {
        script
            .chunk_texts()
            .into_iter()
            .map(Part::Content)
            .collect()
    } else {
        Vec::new()
    };
    let others: Vec<Vec<Part>> = script
        .more_choices
        .iter()
        .map(|t| cut(t, size).into_iter().map(Part::Content).collect())
        .collect();
    let longest = others
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .max(first.len());
    let mut columns: Vec<std::vec::IntoIter<Part>> = std::iter::once(first)
        .chain(others)
        .map(Vec::into_iter)
        .collect();
    for _ in 0..longest {
        for (choice, col) in columns.iter_mut().enumerate() {
            if let Some(p) = col.next() {
                out.push((choice as u32, p));
            }
        }
    }
    if !script.annotations.is_empty() {
        out.push((0, Part::Annotations));
    }
    let whole_calls = matches!(dialect, Dialect::Gemini | Dialect::Ollama);
    for (call, spec) in script.tool_calls.iter().enumerate() {
        match script.arguments_chunk_size.filter(|_| !whole_calls) {
            None => out.push((
                0,
                Part::ToolCall {
                    call,
                    header: true,
                    arguments: spec.arguments.clone(),
                },
            )),
            Some(n) => {
                out.push((
                    0,
                    Part::ToolCall {
                        call,
                        header: true,
                        arguments: String::new(),
                    },
                ));
                out.extend(cut(&spec.arguments, n).into_iter().map(|a| {
                    (
                        0,
                        Part::ToolCall {
                            call,
                            header: false,
                            arguments: a,
                        },
                    )
                }));
            }
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Reply {
    /// The answer `spec` gives to call `call` asking for `requested`, continuing
    /// `continuation` (a prefix of choice 0's text it had already given) if any.
    pub fn new(
        spec: &Provider,
        script: &Script,
        call: u32,
        requested: &str,
        continuation: Option<&str>,
    ) -> Reply {
        let all = pieces(spec.dialect, script);
        let text_choices = {
            let n = 1 + script.more_choices.len();
            (0..n)
                .map(|c| {
                    all.iter()
                        .any(|(ch, p)| *ch as usize == c && matches!(p, Part::Content(_)))
                        || (c == 0 && all.is_empty())
                })
                .collect()
        };
        let mut skip = continuation.map_or(0, |p| p.chars().count());
        let mut out = Vec::new();
        for (i, (choice, part)) in all.into_iter().enumerate() {
            let delay_ms = script.delay_before(i);
            if skip > 0 {
                // Whatever else came before the text it continues is part of what the
                // caller already has.
                if let (Part::Content(t), 0) = (&part, choice) {
                    let n = t.chars().count();
                    if n <= skip {
                        skip -= n;
                        continue;
                    }
                    let rest: String = t.chars().skip(skip).collect();
                    skip = 0;
                    out.push(Piece {
                        choice,
                        part: Part::Content(rest),
                        delay_ms,
                    });
                }
                continue;
            }
            out.push(Piece {
                choice,
                part,
                delay_ms,
            });
        }
        let model = script
            .model
            .clone()
            .or_else(|| spec.model.clone())
            .unwrap_or_else(|| requested.to_string());
        let id = match spec.dialect {
            Dialect::Gemini => format!("{}{call}gemfake", spec.host),
            Dialect::Ollama => format!("chatcmpl-{call}"),
            _ => format!("chatcmpl-fake-{}-{call}", spec.host),
        };
        let tool_calls = script
            .tool_calls
            .iter()
            .enumerate()
            .map(
                |(
                    n,
                    ToolCallSpec {
                        id,
                        name,
                        arguments,
                    },
                )| {
                    (
                        id.clone()
                            .unwrap_or_else(|| format!("call_{}_{n}", spec.host)),
                        name.clone(),
                        arguments.clone(),
                    )
                },
            )
            .collect::<Vec<_>>();
        let finish = script.finish_reason.clone().unwrap_or_else(|| {
            if tool_calls.is_empty() {
                "stop".into()
            } else {
                "tool_calls".into()
            }
        });
        Reply {
            dialect: spec.dialect,
            tool_call_index: spec.tool_call_index(),
            tool_call_ids: spec.tool_call_ids,
            audio_id: format!("audio_{}_{call}", spec.host),
            id,
            model,
            pieces: out,
            choices: 1 + script.more_choices.len() as u32,
            tool_calls,
            annotations: script.annotations.clone(),
            logprobs: script.logprobs,
            finish,
            include_usage: false,
            prompt_chars: 0,
            async_filter: spec.dialect == Dialect::Azure
                && spec.content_filter == ContentFilterMode::Async,
            text_choices,
            finish_on_every_chunk: spec.finish_reasons == FinishReasons::EveryChunk,
        }
    }

    /// Honours the request's `stop` as a provider does: choice 0's text ends just before
    /// the first stop sequence in it, nothing of choice 0 comes after (no later text, tool
    /// call or annotation), and the answer finishes with `stop`. Only a provider's own text
    /// is searched: a continuation's is only its rest, so a stop sequence begun by the text
    /// it continues and completed by its rest goes out, as it does from a real provider.
    /// A script with several choices is sent as written (one finish reason serves them all).
    pub fn stop_at(&mut self, stops: &[String]) {
        if self.choices != 1 {
            return;
        }
        let text = self.text(self.pieces.len());
        let Some(mut left) = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min()
        else {
            return;
        };
        let mut kept = Vec::new();
        for mut piece in std::mem::take(&mut self.pieces) {
            if piece.choice != 0 {
                kept.push(piece);
                continue;
            }
            let Part::Content(t) = &mut piece.part else {
                // Reasoning comes before the text; anything else of choice 0 after it.
                if left > 0 || matches!(piece.part, Part::Reasoning(_)) {
                    kept.push(piece);
                }
                continue;
            };
            if left == 0 {
                continue;
            }
            if t.len() > left {
                t.truncate(left);
            }
            left -= t.len();
            kept.push(piece);
        }
        self.pieces = kept;
        self.finish = "stop".into();
    }

    /// Honours the request's token budget as a provider does: each piece is one token (as
    /// its usage counts them), the answer ends after the budget's last one and finishes
    /// with `length`. A script with several choices is sent as written, as by
    /// [`Reply::stop_at`].
    pub fn cap_tokens(&mut self, budget: Option<u64>) {
        let Some(budget) = budget else {
            return;
        };
        if self.choices != 1 || self.pieces.len() as u64 <= budget {
            return;
        }
        self.pieces.truncate(budget as usize);
        self.finish = "length".into();
    }

    /// Text of choice 0 in the first `upto` pieces.
    pub fn text(&self, upto: usize) -> String {
        self.pieces[..upto.min(self.pieces.len())]
            .iter()
            .filter_map(|p| match (&p.part, p.choice) {
                (Part::Content(t), 0) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn usage(&self, completion: usize) -> Value {
        let (p, c) = (PROMPT_TOKENS, completion as u64);
        let t = p + c;
        let reasoning = self.pieces[..completion.min(self.pieces.len())]
            .iter()
            .filter(|x| matches!(x.part, Part::Reasoning(_)))
            .count();
        match self.dialect {
            Dialect::Openai | Dialect::JsonOnly => json!({
                "prompt_tokens": p, "completion_tokens": c, "total_tokens": t,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
            }),
            Dialect::Azure => json!({
                "completion_tokens": c,
                "completion_tokens_details": {"accepted_prediction_tokens": 0, "audio_tokens": 0,
                    "reasoning_tokens": reasoning, "rejected_prediction_tokens": 0},
                "prompt_tokens": p,
                "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
                "total_tokens": t
            }),
            Dialect::Gemini => {
                json!({"completion_tokens": c, "prompt_tokens": p, "total_tokens": t})
            }
            Dialect::Ollama => {
                json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": t})
            }
            Dialect::Vllm => {
                json!({"prompt_tokens": p, "total_tokens": t, "completion_tokens": c})
            }
            Dialect::Sglang => json!({"prompt_tokens": p, "total_tokens": t,
                "completion_tokens": c, "prompt_tokens_details": null}),
            Dialect::Minimax => json!({"total_tokens": t, "total_characters": 0,
                "prompt_tokens": p, "completion_tokens": c}),
            Dialect::Together => {
                json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": t})
            }
            Dialect::Kimi => json!({"prompt_tokens": p, "completion_tokens": c,
                "total_tokens": t, "cached_tokens": 0}),
            Dialect::Perplexity => json!({"prompt_tokens": p, "completion_tokens": c,
                "total_tokens": t, "search_context_size": "low"}),
        }
    }

    /// What MiniMax puts beside the text of every delta and message.
    fn minimax_labels() -> [(&'static str, Value); 3] {
        [
            ("role", json!("assistant")),
            ("name", json!("MiniMax AI")),
            ("audio_content", json!("")),
        ]
    }

    fn content_filter_results() -> Value {
        let safe = json!({"filtered": false, "severity": "safe"});
        json!({"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe})
    }

    /// The verdict Azure's default (synchronous) filter puts on a choice it stopped
    /// (`finish_reason: content_filter`): the category that filtered it, at the severity
    /// that did, beside the safe ones. A real block names its cause; an all-safe verdict
    /// on a stopped choice would let a gateway that dropped or reordered the finish chunk's
    /// verdict pass unseen.
    fn blocked_results() -> Value {
        let mut verdict = Reply::content_filter_results();
        verdict["violence"] = json!({"filtered": true, "severity": "medium"});
        verdict
    }

    /// A stream chunk with these choices (`n` pieces sent so far, for cumulative usage).
    fn chunk(&self, choices: Vec<Value>, sent: usize, pad: usize) -> Value {
        let mut o = Map::new();
        let mut put = |k: &str, v: Value| {
            o.insert(k.to_string(), v);
        };
        match self.dialect {
            Dialect::Openai | Dialect::JsonOnly => {
                put("id", json!(self.id));
                put("object", json!("chat.completion.chunk"));
                put("created", json!(CREATED));
                put("model", json!(self.model));
                put("service_tier", json!("default"));
                put("system_fingerprint", json!("fp_fake0001"));
                put("choices", Value::Array(choices));
                if self.include_usage {
                    put("usage", Value::Null);
                }
                put("obfuscation", json!(&"x7Qv2Lk9Pz"[..1 + sent % 10]));
            }
            Dialect::Azure => {
                put("choices", Value::Array(choices));
                put("created", json!(CREATED));
                put("id", json!(self.id));
                put("model", json!(self.model));
                put("object", json!("chat.completion.chunk"));
                put("system_fingerprint", json!("fp_azure01"));
                if self.include_usage {
                    put("usage", Value::Null);
                }
            }
            Dialect::Gemini => {
                put("choices", Value::Array(choices));
                put("created", json!(CREATED));
                put("id", json!(self.id));
                put("model", json!(self.model));
                put("object", json!("chat.completion.chunk"));
                put("usage", self.usage(sent));
            }
            Dialect::Ollama => {
                put("id", json!(self.id));
                put("object", json!("chat.completion.chunk"));
                put("created", json!(CREATED));
                put("model", json!(self.model));
                put("system_fingerprint", json!("fp_ollama"));
                put("choices", Value::Array(choices));
            }
            Dialect::Vllm | Dialect::Kimi => {
                put("id", json!(self.id));
                put("object", json!("chat.completion.chunk"));
                put("created", json!(CREATED));
                put("model", json!(self.model));
                put("choices", Value::Array(choices));
            }
            Dialect::Sglang => {
                put("id", json!(self.id));
                put("object", json!("chat.completion.chunk"));
                put("created", json!(CREATED));
                put("model", json!(self.model));
                put("choices", Value::Array(choices));
                put("usage", Value::Null);
            }
            Dialect::Minimax => {
                put("id", json!(self.id));
                put("choices", Value::Array(choices));
                put("created", json!(CREATED));
                put("model", json!(self.model));
                put("object", json!("chat.completion.chunk"));
                put("usage", json!({"total_tokens": 0, "total_characters": 0}));
                put("input_sensitive", json!(false));
                put("output_sensitive", json!(false));
            }
            Dialect::Perplexity => {
                put("id", json!(self.id));
                put("model", json!(self.model));
                put("created", json!(CREATED));
                put("usage", self.usage(sent));
                put("citations", json!(PERPLEXITY_CITATIONS));
                put("object", json!("chat.completion"));
                put("choices", Value::Array(choices));
            }
            Dialect::Together => {
                put("id", json!(self.id));
                put("object", json!("chat.completion.chunk"));
                put("created", json!(CREATED));
                put("choices", Value::Array(choices));
                put("model", json!(self.model));
                put("usage", Value::Null);
            }
        }
        if pad > 0 {
            o.insert("x_pad".into(), json!("p".repeat(pad)));
        }
        Value::Object(o)
    }

    /// One choice of a stream chunk.
    fn choice(
        &self,
        index: u32,
        delta: Value,
        logprobs: Option<Value>,
        finish: Option<&str>,
        filtered: bool,
    ) -> Value {
        let blocked = finish == Some("content_filter");
        let finish = finish.or_else(|| {
            (self.finish_on_every_chunk && self.finish != "content_filter")
                .then_some(self.finish.as_str())
        });
        let finish = finish.map_or(Value::Null, |f| json!(f));
        let logprobs = logprobs.unwrap_or(Value::Null);
        let mut o = Map::new();
        match self.dialect {
            Dialect::Openai | Dialect::JsonOnly => {
                o.insert("index".into(), json!(index));
                o.insert("delta".into(), delta);
                o.insert("logprobs".into(), logprobs);
                o.insert("finish_reason".into(), finish);
            }
            Dialect::Azure => {
                // The Asynchronous Filter's verdicts come in annotations of their own.
                if !self.async_filter {
                    let cfr = if blocked {
                        Reply::blocked_results()
                    } else if filtered {
                        Reply::content_filter_results()
                    } else {
                        json!({})
                    };
                    o.insert("content_filter_results".into(), cfr);
                }
                o.insert("delta".into(), delta);
                o.insert("finish_reason".into(), finish);
                o.insert("index".into(), json!(index));
                o.insert("logprobs".into(), logprobs);
            }
            Dialect::Gemini => {
                o.insert("delta".into(), delta);
                if !finish.is_null() {
                    o.insert("finish_reason".into(), finish);
                }
                o.insert("index".into(), json!(index));
                if !logprobs.is_null() {
                    o.insert("logprobs".into(), logprobs);
                }
            }
            Dialect::Ollama | Dialect::Kimi => {
                o.insert("index".into(), json!(index));
                o.insert("delta".into(), delta);
                if !logprobs.is_null() {
                    o.insert("logprobs".into(), logprobs);
                }
                o.insert("finish_reason".into(), finish);
            }
            Dialect::Vllm => {
                let last = !finish.is_null();
                o.insert("index".into(), json!(index));
                o.insert("delta".into(), delta);
                o.insert("logprobs".into(), logprobs);
                o.insert("finish_reason".into(), finish);
                if last {
                    o.insert("stop_reason".into(), Value::Null);
                }
            }
            Dialect::Sglang => {
                let finish = if finish.is_null() { json!("") } else { finish };
                o.insert("index".into(), json!(index));
                o.insert("delta".into(), delta);
                o.insert("logprobs".into(), logprobs);
                o.insert("finish_reason".into(), finish);
                o.insert("matched_stop".into(), Value::Null);
            }
            Dialect::Together => {
                let text = delta.get("content").cloned().unwrap_or(json!(""));
                let seed = if finish.is_null() {
                    Value::Null
                } else {
                    json!(TOGETHER_SEED)
                };
                o.insert("index".into(), json!(index));
                o.insert("text".into(), text);
                o.insert("logprobs".into(), logprobs);
                o.insert("finish_reason".into(), finish);
                o.insert("seed".into(), seed);
                o.insert("delta".into(), delta);
            }
            // Its running copy of the message is filled in by the caller, who knows how far
            // the answer has gone (`with_running_copy`).
            Dialect::Perplexity => {
                o.insert("index".into(), json!(index));
                o.insert("finish_reason".into(), finish);
                o.insert("message".into(), Value::Null);
                o.insert("delta".into(), delta);
                if !logprobs.is_null() {
                    o.insert("logprobs".into(), logprobs);
                }
            }
            // Its finish reasons come only in the closing `chat.completion` (see `whole`).
            Dialect::Minimax => {
                o.insert("index".into(), json!(index));
                o.insert("delta".into(), delta);
                if !logprobs.is_null() {
                    o.insert("logprobs".into(), logprobs);
                }
            }
        }
        Value::Object(o)
    }

    /// `{role: assistant}` merged into a delta the way this dialect repeats it.
    fn with_role(&self, mut fields: Vec<(&str, Value)>) -> Value {
        let mut o = Map::new();
        match self.dialect {
            Dialect::Gemini => {
                fields.push(("role", json!("assistant")));
                fields.sort_by(|a, b| a.0.cmp(b.0));
            }
            Dialect::Ollama => {
                fields.insert(0, ("role", json!("assistant")));
                if !fields.iter().any(|(k, _)| *k == "content") {
                    fields.insert(1, ("content", json!("")));
                }
            }
            Dialect::Sglang => {
                fields.insert(0, ("role", Value::Null));
                if !fields.iter().any(|(k, _)| *k == "content") {
                    fields.insert(1, ("content", Value::Null));
                }
                if !fields.iter().any(|(k, _)| *k == "tool_calls") {
                    fields.push(("tool_calls", Value::Null));
                }
            }
            Dialect::Minimax => fields.extend(Reply::minimax_labels()),
            Dialect::Perplexity => fields.insert(0, ("role", json!("assistant"))),
            Dialect::Together => {
                fields.insert(0, ("token_id", json!(TOGETHER_TOKEN_ID)));
                fields.insert(1, ("role", json!("assistant")));
                if !fields.iter().any(|(k, _)| *k == "tool_calls") {
                    fields.push(("tool_calls", Value::Null));
                }
            }
            _ => {}
        }
        for (k, v) in fields {
            o.insert(k.to_string(), v);
        }
        Value::Object(o)
    }

    fn reasoning_key(&self) -> &'static str {
        match self.dialect {
            Dialect::Ollama => "reasoning",
            _ => "reasoning_content",
        }
    }

    fn logprob_entry(token: &str, n: usize) -> Value {
        let logprob = -((n % 8) as f64 + 1.0) / 8.0;
        json!({"token": token, "logprob": logprob, "bytes": token.as_bytes(), "top_logprobs": []})
    }

    /// One tool-call delta; `piece` (the piece's place in the answer) makes a fragment's
    /// fresh id under [`ToolCallIds::EveryFragment`].
    fn tool_call_delta(&self, call: usize, header: bool, arguments: &str, piece: usize) -> Value {
        let (id, name, _) = &self.tool_calls[call];
        let index = match self.tool_call_index {
            ToolCallIndex::Sequential => Some(call),
            ToolCallIndex::Zero => Some(0),
            ToolCallIndex::Omit => None,
        };
        let mut o = Map::new();
        match self.dialect {
            Dialect::Gemini => {
                o.insert(
                    "function".into(),
                    json!({"arguments": arguments, "name": name}),
                );
                o.insert("id".into(), json!(id));
                if let Some(i) = index {
                    o.insert("index".into(), json!(i));
                }
                o.insert("type".into(), json!("function"));
            }
            Dialect::Ollama => {
                o.insert("id".into(), json!(id));
                if let Some(i) = index {
                    o.insert("index".into(), json!(i));
                }
                o.insert("type".into(), json!("function"));
                o.insert(
                    "function".into(),
                    json!({"name": name, "arguments": arguments}),
                );
            }
            _ => {
                if let Some(i) = index {
                    o.insert("index".into(), json!(i));
                }
                if header {
                    o.insert("id".into(), json!(id));
                    o.insert("type".into(), json!("function"));
                    o.insert(
                        "function".into(),
                        json!({"name": name, "arguments": arguments}),
                    );
                } else {
                    if self.tool_call_ids == ToolCallIds::EveryFragment {
                        o.insert("id".into(), json!(format!("{id}_{piece}")));
                    }
                    o.insert("function".into(), json!({"arguments": arguments}));
                }
            }
        }
        Value::Object(o)
    }

    fn annotations_value(&self) -> Value {
        Value::Array(
            self.annotations
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    json!({"type": "url_citation", "url_citation": {
                        "end_index": i + 1, "start_index": i, "title": format!("Source {}", i + 1), "url": url}})
                })
                .collect(),
        )
    }

    /// The stream payloads before any content: Azure's prompt-filter chunk and the role
    /// chunks of the dialects that send them.
    pub fn opening(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if self.dialect == Dialect::Azure {
            let mut o = Map::new();
            o.insert("choices".into(), json!([]));
            o.insert("created".into(), json!(0));
            o.insert("id".into(), json!(""));
            o.insert("model".into(), json!(""));
            o.insert("object".into(), json!(""));
            o.insert(
                "prompt_filter_results".into(),
                json!([{"prompt_index": 0, "content_filter_results": Reply::content_filter_results()}]),
            );
            out.push(Value::Object(o));
        }
        match self.dialect {
            Dialect::Openai | Dialect::Azure | Dialect::JsonOnly => {
                for c in 0..self.choices {
                    let content = if self.text_choices[c as usize] {
                        json!("")
                    } else {
                        Value::Null
                    };
                    let delta = if self.dialect == Dialect::Azure {
                        json!({"content": content, "refusal": null, "role": "assistant"})
                    } else {
                        json!({"role": "assistant", "content": content, "refusal": null})
                    };
                    out.push(self.chunk(vec![self.choice(c, delta, None, None, false)], 0, 0));
                }
            }
            Dialect::Vllm | Dialect::Kimi => {
                for c in 0..self.choices {
                    let delta = json!({"role": "assistant", "content": ""});
                    out.push(self.chunk(vec![self.choice(c, delta, None, None, false)], 0, 0));
                }
            }
            Dialect::Sglang => {
                for c in 0..self.choices {
                    let content = if self.text_choices[c as usize] {
                        json!("")
                    } else {
                        Value::Null
                    };
                    let delta =
                        json!({"role": "assistant", "content": content, "tool_calls": null});
                    out.push(self.chunk(vec![self.choice(c, delta, None, None, false)], 0, 0));
                }
            }
            Dialect::Gemini
            | Dialect::Ollama
            | Dialect::Minimax
            | Dialect::Together
            | Dialect::Perplexity => {}
        }
        out
    }

    /// Whether the first `sent` pieces already end the answer, with nothing after them:
    /// Gemini puts each choice's finish reason on its last piece (and sends no usage chunk
    /// apart), so a stream cut after every piece is its whole answer, and a gateway must
    /// serve it as one.
    /// `clean_end`: the stream then ends as a body should (a `cut`); otherwise it breaks
    /// (a reset, a malformed line, an error event, a stall), which before any output is
    /// retried.
    pub fn complete_after(&self, sent: usize, clean_end: bool) -> bool {
        if self.finish_on_every_chunk {
            return self.every_chunk_finished_after(sent, clean_end);
        }
        self.dialect == Dialect::Gemini && !self.pieces.is_empty() && sent >= self.pieces.len()
    }

    /// With a finish reason on every chunk: whether the chunks sent until the cut (the
    /// opening, the first `sent` pieces and the annotations after them) still read as a
    /// finished answer. Each chunk's choices finish, and a choice that gives output after
    /// a chunk of its own had finished was never finished (README, "a finish reason on
    /// every chunk"): a cut then is a broken stream. So is a break before any output.
    fn every_chunk_finished_after(&self, sent: usize, clean_end: bool) -> bool {
        let chunks = self.sent_until(sent);
        let mut finished = std::collections::BTreeSet::new();
        let mut named = std::collections::BTreeSet::new();
        let mut any_output = false;
        for chunk in &chunks {
            let choices = chunk["choices"].as_array().into_iter().flatten();
            for (place, c) in choices.enumerate() {
                let index = c["index"].as_u64().unwrap_or(place as u64);
                let output = crate::passthrough::gives_output(c);
                if output && finished.contains(&index) {
                    return false;
                }
                any_output |= output;
                named.insert(index);
                if c["finish_reason"].as_str().is_some_and(|f| !f.is_empty()) {
                    finished.insert(index);
                }
            }
        }
        // A break before any output is retried: nothing was delivered.
        (any_output || clean_end) && !named.is_empty() && named == finished
    }

    /// The chunks of a stream cut after its first `sent` pieces: the opening, the pieces
    /// and the annotations after them.
    fn sent_until(&self, sent: usize) -> Vec<Value> {
        let mut chunks = self.opening();
        for i in 0..sent.min(self.pieces.len()) {
            chunks.push(self.piece(i));
            chunks.extend(self.annotations_after(i));
        }
        chunks
    }

    /// Whether piece `i` is the last of its choice (Gemini puts the finish reason on it).
    fn last_of_choice(&self, i: usize) -> bool {
        let c = self.pieces[i].choice;
        !self.pieces[i + 1..].iter().any(|p| p.choice == c)
    }

    /// The stream payload of piece `i`.
    pub fn piece(&self, i: usize) -> Value {
        let p = &self.pieces[i];
        let mut logprobs = None;
        let delta = match &p.part {
            Part::Content(t) => {
                if self.logprobs {
                    logprobs =
                        Some(json!({"content": [Reply::logprob_entry(t, i)], "refusal": null}));
                }
                self.with_role(vec![("content", json!(t))])
            }
            Part::Reasoning(t) => self.with_role(vec![(self.reasoning_key(), json!(t))]),
            Part::Refusal(t) => self.with_role(vec![("refusal", json!(t))]),
            Part::Audio {
                transcript,
                data,
                first,
                last,
            } => {
                let mut a = Map::new();
                if *first {
                    a.insert("id".into(), json!(self.audio_id));
                }
                a.insert("transcript".into(), json!(transcript));
                a.insert("data".into(), json!(data));
                if *last {
                    a.insert("expires_at".into(), json!(AUDIO_EXPIRES_AT));
                }
                self.with_role(vec![("audio", Value::Object(a))])
            }
            Part::ToolCall {
                call,
                header,
                arguments,
            } => self.with_role(vec![(
                "tool_calls",
                json!([self.tool_call_delta(*call, *header, arguments, i)]),
            )]),
            Part::Annotations => self.with_role(vec![("annotations", self.annotations_value())]),
        };
        let finish = (self.dialect == Dialect::Gemini && self.last_of_choice(i))
            .then_some(self.finish.as_str());
        let chunk = self.chunk(
            vec![self.choice(p.choice, delta, logprobs, finish, true)],
            i + 1,
            0,
        );
        self.with_running_copy(chunk, p.choice, i + 1)
    }

    /// Perplexity's chunk with its running copy of choice `c`'s message after `sent`
    /// pieces: the role and the text so far (any other dialect's chunk as it is).
    fn with_running_copy(&self, mut chunk: Value, c: u32, sent: usize) -> Value {
        if self.dialect == Dialect::Perplexity {
            let so_far: String = self.pieces[..sent.min(self.pieces.len())]
                .iter()
                .filter(|p| p.choice == c)
                .filter_map(|p| match &p.part {
                    Part::Content(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            chunk["choices"][0]["message"] = json!({"role": "assistant", "content": so_far});
        }
        chunk
    }

    /// A chunk that ends choice `c` with `reason`.
    pub fn finish_chunk(&self, c: u32, reason: &str, sent: usize) -> Value {
        let delta = match self.dialect {
            Dialect::Vllm => json!({"content": ""}),
            Dialect::Gemini => json!({"content": "", "role": "assistant"}),
            Dialect::Ollama => json!({"role": "assistant", "content": ""}),
            Dialect::Sglang => json!({"role": null, "content": null, "tool_calls": null}),
            Dialect::Together => json!({"token_id": TOGETHER_EOS_TOKEN_ID, "role": "assistant",
                "content": "", "tool_calls": null}),
            Dialect::Perplexity => json!({"role": "assistant", "content": ""}),
            _ => json!({}),
        };
        let mut chunk = self.chunk(
            vec![self.choice(c, delta, None, Some(reason), false)],
            sent,
            0,
        );
        // Together's usage rides on its finish chunk, asked for or not; Kimi's, in the
        // finishing choice.
        match self.dialect {
            Dialect::Together => chunk["usage"] = self.usage(sent),
            Dialect::Kimi => chunk["choices"][0]["usage"] = self.usage(sent),
            _ => {}
        }
        self.with_running_copy(chunk, c, sent)
    }

    /// The stream payloads after every piece: finish chunks (where the dialect sends them
    /// apart), the usage chunk (when asked for, in the dialects that send one) and Azure's
    /// last async-filter annotations.
    pub fn closing(&self) -> Vec<Value> {
        self.closing_after(self.pieces.len(), None)
    }

    /// The stream payloads that end an answer the content filter stops after its first
    /// `sent` pieces: every choice finishing with `content_filter` and the usage chunk, or,
    /// with Azure's Asynchronous Filter, the usage chunk and the blocking annotations.
    pub fn filtered_after(&self, sent: usize) -> Vec<Value> {
        if self.async_filter {
            self.blocked_closing(sent)
        } else {
            self.closing_after(sent, Some("content_filter"))
        }
    }

    /// The stream payloads that end the answer after its first `sent` pieces, every choice
    /// finishing with `finish` (default: the script's, which Gemini already put on each
    /// choice's last piece when all were sent), then the usage chunk when asked for, then
    /// Azure's async-filter annotation of each choice.
    fn closing_after(&self, sent: usize, finish: Option<&str>) -> Vec<Value> {
        if self.dialect == Dialect::Minimax {
            // No finish chunk, no usage chunk: the whole answer again, which has both.
            return vec![self.whole(sent, Some(finish.unwrap_or(&self.finish)))];
        }
        let mut out = Vec::new();
        for c in 0..self.choices {
            let finished_on_a_piece = self.dialect == Dialect::Gemini
                && finish.is_none()
                && self.pieces[..sent].iter().any(|p| p.choice == c);
            if !finished_on_a_piece {
                out.push(self.finish_chunk(c, finish.unwrap_or(&self.finish), sent));
            }
        }
        out.extend(self.usage_chunk(sent));
        if self.async_filter {
            out.extend(self.trailing_annotations(sent));
        }
        out
    }

    /// The usage chunk (`choices: []`) after `sent` pieces, when the request asked for one
    /// and the dialect sends one apart.
    fn usage_chunk(&self, sent: usize) -> Option<Value> {
        if !self.include_usage
            || matches!(
                self.dialect,
                Dialect::Gemini
                    | Dialect::Minimax
                    | Dialect::Together
                    | Dialect::Kimi
                    | Dialect::Perplexity
            )
        {
            return None;
        }
        let mut chunk = self.chunk(Vec::new(), sent, 0);
        let o = chunk.as_object_mut()?;
        o.shift_remove("obfuscation");
        o.insert("usage".into(), self.usage(sent));
        if self.dialect == Dialect::Azure {
            // Alphabetical, as Azure writes it.
            o.sort_keys();
        }
        Some(chunk)
    }

    /// A flood item: a role-only chunk, for choice `choice`, with `pad` bytes of padding.
    pub fn role_only(&self, choice: u32, pad: usize) -> Value {
        let delta = json!({"role": "assistant"});
        self.chunk(vec![self.choice(choice, delta, None, None, false)], 0, pad)
    }

    /// A flood item: one character of content for choice `choice`.
    pub fn content_for(&self, choice: u32) -> Value {
        let delta = self.with_role(vec![("content", json!("x"))]);
        self.chunk(vec![self.choice(choice, delta, None, None, true)], 0, 0)
    }

    /// This provider's own non-stream answer made of the first `upto` pieces, ending with
    /// `finish` (default: the script's finish reason): exactly what OpenAI's accumulation
    /// of the same stream gives.
    pub fn whole(&self, upto: usize, finish: Option<&str>) -> Value {
        let pieces = &self.pieces[..upto.min(self.pieces.len())];
        // A finish chunk of its own ends every choice (Gemini otherwise finishes on a piece).
        let finish_chunks = finish.is_some();
        let finish = finish.unwrap_or(&self.finish);
        let alphabetical = matches!(self.dialect, Dialect::Azure | Dialect::Gemini);
        let mut choices = Vec::new();
        for c in 0..self.choices {
            let of_c = || {
                pieces
                    .iter()
                    .enumerate()
                    .filter(move |(_, p)| p.choice == c)
            };
            let joined = |f: &dyn Fn(&Part) -> Option<String>| -> Option<String> {
                let parts: Vec<String> = of_c().filter_map(|(_, p)| f(&p.part)).collect();
                (!parts.is_empty()).then(|| parts.concat())
            };
            let content = joined(&|p| match p {
                Part::Content(t) => Some(t.clone()),
                _ => None,
            });
            let reasoning = joined(&|p| match p {
                Part::Reasoning(t) => Some(t.clone()),
                _ => None,
            });
            let refusal = joined(&|p| match p {
                Part::Refusal(t) => Some(t.clone()),
                _ => None,
            });
            let transcript = joined(&|p| match p {
                Part::Audio { transcript, .. } => Some(transcript.clone()),
                _ => None,
            });
            let data = joined(&|p| match p {
                Part::Audio { data, .. } => Some(data.clone()),
                _ => None,
            });
            let mut audio_last = false;
            let mut calls: Vec<(usize, String)> = Vec::new();
            let mut annotated = false;
            let mut logprobs = Vec::new();
            for (i, p) in of_c() {
                match &p.part {
                    Part::ToolCall {
                        call, arguments, ..
                    } => match calls.iter_mut().find(|(n, _)| n == call) {
                        Some((_, a)) => a.push_str(arguments),
                        None => calls.push((*call, arguments.clone())),
                    },
                    Part::Annotations => annotated = true,
                    Part::Audio { last, .. } => audio_last |= *last,
                    Part::Content(t) if self.logprobs => logprobs.push(Reply::logprob_entry(t, i)),
                    _ => {}
                }
            }
            let mut m: Vec<(&str, Value)> = vec![("role", json!("assistant"))];
            // `content` as the role chunk (or every delta) left it.
            let content = match (self.dialect, content) {
                (_, Some(t)) => Some(json!(t)),
                (Dialect::Ollama, None) => Some(json!("")),
                // A finish chunk of its own carries `content: ""`.
                (Dialect::Gemini, None) if finish_chunks || of_c().next().is_none() => {
                    Some(json!(""))
                }
                (Dialect::Gemini, None) => None,
                // Every delta names the role but only text carries `content`.
                (Dialect::Minimax, None) if of_c().next().is_some() => None,
                (Dialect::Vllm | Dialect::Together | Dialect::Kimi | Dialect::Perplexity, None) => {
                    Some(json!(""))
                }
                (_, None) if self.text_choices[c as usize] => Some(json!("")),
                (_, None) => Some(Value::Null),
            };
            if let Some(v) = content {
                m.push(("content", v));
            }
            if self.dialect == Dialect::Minimax {
                m.retain(|(k, _)| *k != "role");
                m.extend(Reply::minimax_labels());
            }
            // Every delta's token id, the finish chunk's (end of sequence) last.
            if self.dialect == Dialect::Together {
                m.push(("token_id", json!(TOGETHER_EOS_TOKEN_ID)));
            }
            if let Some(r) = reasoning {
                m.push((self.reasoning_key(), json!(r)));
            }
            match (self.dialect, refusal) {
                (_, Some(r)) => m.push(("refusal", json!(r))),
                (Dialect::Openai | Dialect::Azure | Dialect::JsonOnly, None) => {
                    m.push(("refusal", Value::Null))
                }
                _ => {}
            }
            if let Some(t) = transcript {
                let mut a = Map::new();
                a.insert("id".into(), json!(self.audio_id));
                a.insert("transcript".into(), json!(t));
                a.insert("data".into(), json!(data.unwrap_or_default()));
                if audio_last {
                    a.insert("expires_at".into(), json!(AUDIO_EXPIRES_AT));
                }
                m.push(("audio", Value::Object(a)));
            }
            if annotated {
                m.push(("annotations", self.annotations_value()));
            }
            if !calls.is_empty() {
                let list: Vec<Value> = calls
                    .iter()
                    .map(|(n, args)| {
                        let (id, name, _) = &self.tool_calls[*n];
                        if alphabetical {
                            json!({"function": {"arguments": args, "name": name}, "id": id, "type": "function"})
                        } else {
                            json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
                        }
                    })
                    .collect();
                m.push(("tool_calls", Value::Array(list)));
            }
            if alphabetical {
                m.sort_by(|a, b| a.0.cmp(b.0));
            }
            let message: Map<String, Value> =
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let logprobs = if self.logprobs && !logprobs.is_empty() {
                json!({"content": logprobs, "refusal": null})
            } else {
                Value::Null
            };
            let mut ch: Vec<(&str, Value)> = vec![
                ("index", json!(c)),
                ("message", Value::Object(message)),
                ("finish_reason", json!(finish)),
            ];
            match self.dialect {
                Dialect::Openai | Dialect::JsonOnly => ch.insert(2, ("logprobs", logprobs)),
                Dialect::Azure => {
                    ch.push(("logprobs", logprobs));
                    // The results ride on content chunks; role and finish chunks have `{}`,
                    // but for a finish by the filter itself, which names what it filtered.
                    // A deployment with the Asynchronous Filter filters a non-stream answer
                    // whole, as any other: its choices carry the verdict its stream's
                    // annotations add up to, and no offsets.
                    let cfr = if self.async_filter {
                        Reply::async_verdict(finish_chunks && finish == "content_filter")
                    } else if finish_chunks && finish == "content_filter" {
                        Reply::blocked_results()
                    } else if of_c().next().is_some() {
                        Reply::content_filter_results()
                    } else {
                        json!({})
                    };
                    ch.push(("content_filter_results", cfr));
                }
                Dialect::Vllm => {
                    ch.insert(2, ("logprobs", logprobs));
                    ch.push(("stop_reason", Value::Null));
                }
                Dialect::Sglang => {
                    ch.insert(2, ("logprobs", logprobs));
                    ch.push(("matched_stop", Value::Null));
                }
                Dialect::Gemini | Dialect::Ollama | Dialect::Perplexity => {
                    if !logprobs.is_null() {
                        ch.push(("logprobs", logprobs));
                    }
                }
                // Its finish chunk's choice-level usage is the choice's state, kept.
                Dialect::Kimi => {
                    if !logprobs.is_null() {
                        ch.insert(2, ("logprobs", logprobs));
                    }
                    ch.push(("usage", self.usage(upto)));
                }
                // Choice-level state, latest wins: the finish chunk's empty `text` and
                // its seed.
                Dialect::Together => {
                    ch.insert(2, ("text", json!("")));
                    ch.insert(3, ("logprobs", logprobs));
                    ch.push(("seed", json!(TOGETHER_SEED)));
                }
                Dialect::Minimax => {
                    ch.rotate_right(1);
                    if !logprobs.is_null() {
                        ch.push(("logprobs", logprobs));
                    }
                }
            }
            if alphabetical {
                ch.sort_by(|a, b| a.0.cmp(b.0));
            }
            choices.push(Value::Object(
                ch.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ));
        }
        let mut top: Vec<(&str, Value)> = vec![
            ("id", json!(self.id)),
            ("object", json!("chat.completion")),
            ("created", json!(CREATED)),
            ("model", json!(self.model)),
            ("choices", Value::Array(choices)),
            ("usage", self.usage(upto)),
        ];
        match self.dialect {
            Dialect::Openai | Dialect::JsonOnly => {
                top.push(("service_tier", json!("default")));
                top.push(("system_fingerprint", json!("fp_fake0001")));
            }
            Dialect::Azure => {
                top.push((
                    "prompt_filter_results",
                    json!([{"prompt_index": 0, "content_filter_results": Reply::content_filter_results()}]),
                ));
                top.push(("system_fingerprint", json!("fp_azure01")));
            }
            Dialect::Ollama => top.insert(4, ("system_fingerprint", json!("fp_ollama"))),
            Dialect::Gemini | Dialect::Vllm | Dialect::Sglang | Dialect::Kimi => {}
            Dialect::Perplexity => {
                const ORDER: [&str; 6] = ["id", "model", "created", "usage", "object", "choices"];
                top.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k));
                top.insert(4, ("citations", json!(PERPLEXITY_CITATIONS)));
            }
            Dialect::Together => {
                const ORDER: [&str; 6] = ["id", "object", "created", "choices", "model", "usage"];
                top.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k));
            }
            Dialect::Minimax => {
                const ORDER: [&str; 6] = ["id", "choices", "created", "model", "object", "usage"];
                top.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k));
                top.extend([
                    ("input_sensitive", json!(false)),
                    ("output_sensitive", json!(false)),
                    ("input_sensitive_type", json!(0)),
                    ("output_sensitive_type", json!(0)),
                    ("output_sensitive_int", json!(0)),
                    ("base_resp", json!({"status_code": 0, "status_msg": ""})),
                ]);
            }
        }
        if alphabetical {
            top.sort_by(|a, b| a.0.cmp(b.0));
        }
        Value::Object(top.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Provider, Script};

    fn provider(dialect: Dialect) -> Provider {
        Provider {
            host: "p".into(),
            port: 8000,
            model: Some("m".into()),
            default: Script::default(),
            calls: Vec::new(),
            dialect,
            tool_call_index: None,
            tool_call_ids: Default::default(),
            keep_alive_ms: None,
            framing: Default::default(),
            content_filter: Default::default(),
            finish_reasons: Default::default(),
            refuses_streaming: false,
            unlabelled: false,
        }
    }

    fn script() -> Script {
        Script {
            text: Some("Hello".into()),
            chunk_size: Some(2),
            ..Script::default()
        }
    }

    #[test]
    fn azure_opens_with_a_prompt_filter_chunk_in_alphabetical_order() {
        let r = Reply::new(&provider(Dialect::Azure), &script(), 1, "m", None);
        let open = r.opening();
        assert_eq!(
            open[0].to_string(),
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}"#
        );
        assert_eq!(
            r.piece(0).to_string(),
            r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"delta":{"content":"He"},"finish_reason":null,"index":0,"logprobs":null}],"created":1700000000,"id":"chatcmpl-fake-p-1","model":"m","object":"chat.completion.chunk","system_fingerprint":"fp_azure01"}"#
        );
    }

    /// Azure's default filter stops a choice with `content_filter` and says which category
    /// stopped it, in the stream's finish chunk and in the non-stream answer alike.
    #[test]
    fn an_azure_block_names_the_category_that_filtered_it() {
        let r = Reply::new(&provider(Dialect::Azure), &script(), 1, "m", None);
        let end = r.filtered_after(1);
        let finish = &end[0]["choices"][0];
        assert_eq!(finish["finish_reason"], "content_filter");
        let streamed = &finish["content_filter_results"];
        assert_eq!(
            streamed["violence"],
            json!({"filtered": true, "severity": "medium"})
        );
        assert_eq!(streamed["hate"]["severity"], "safe");
        let whole = r.whole(1, Some("content_filter"));
        assert_eq!(&whole["choices"][0]["content_filter_results"], streamed);
        // An answer that ends as it should keeps `{}` on its finish chunk.
        let normal = r.closing();
        assert_eq!(normal[0]["choices"][0]["content_filter_results"], json!({}));
    }

    #[test]
    fn gemini_repeats_the_role_and_finishes_on_the_last_content_chunk() {
        let r = Reply::new(&provider(Dialect::Gemini), &script(), 1, "m", None);
        assert!(r.opening().is_empty());
        assert_eq!(
            r.piece(2).to_string(),
            r#"{"choices":[{"delta":{"content":"o","role":"assistant"},"finish_reason":"stop","index":0}],"created":1700000000,"id":"p1gemfake","model":"m","object":"chat.completion.chunk","usage":{"completion_tokens":3,"prompt_tokens":5,"total_tokens":8}}"#
        );
        assert!(r.closing().is_empty());
    }

    #[test]
    fn tool_calls_are_whole_and_unindexed_in_gemini_and_ollama_and_fragmented_in_openai() {
        let mut s = script();
        s.text = None;
        s.arguments_chunk_size = Some(4);
        s.tool_calls = vec![
            ToolCallSpec {
                id: None,
                name: "get_weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into(),
            },
            ToolCallSpec {
                id: None,
                name: "get_weather".into(),
                arguments: r#"{"city":"Rome"}"#.into(),
            },
        ];
        let g = Reply::new(&provider(Dialect::Gemini), &s, 1, "m", None);
        assert_eq!(g.pieces.len(), 2);
        let call = &g.piece(0)["choices"][0]["delta"]["tool_calls"][0];
        assert!(call.get("index").is_none(), "{call}");
        let o = Reply::new(&provider(Dialect::Ollama), &s, 1, "m", None);
        assert_eq!(o.pieces.len(), 2);
        let mut zero = provider(Dialect::Ollama);
        zero.tool_call_index = Some(ToolCallIndex::Zero);
        let z = Reply::new(&zero, &s, 1, "m", None);
        assert_eq!(
            z.piece(1)["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        let a = Reply::new(&provider(Dialect::Openai), &s, 1, "m", None);
        // A header, then four-character fragments of 15 characters: 1 + 4 per call.
        assert_eq!(a.pieces.len(), 10);
        assert_eq!(
            a.piece(5)["choices"][0]["delta"]["tool_calls"][0]["index"],
            1
        );
        let whole = a.whole(a.pieces.len(), None);
        assert_eq!(
            whole["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"],
            r#"{"city":"Rome"}"#
        );
        assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(whole["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn choices_interleave_and_continuations_skip_the_given_prefix() {
        let mut s = script();
        s.more_choices = vec!["World".into()];
        let r = Reply::new(&provider(Dialect::Openai), &s, 1, "m", None);
        let order: Vec<u32> = r.pieces.iter().map(|p| p.choice).collect();
        assert_eq!(order, vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(r.opening().len(), 2, "a role chunk per choice");
        let w = r.whole(r.pieces.len(), None);
        assert_eq!(w["choices"][1]["message"]["content"], "World");
        let c = Reply::new(&provider(Dialect::Openai), &script(), 2, "m", Some("Hel"));
        assert_eq!(c.text(c.pieces.len()), "lo");
    }

    #[test]
    fn a_stop_sequence_ends_the_text_before_it_and_only_the_providers_own_text_is_searched() {
        let mut s = script();
        s.text = Some("Hello ENDless".into());
        s.tool_calls = vec![ToolCallSpec {
            id: None,
            name: "f".into(),
            arguments: "{}".into(),
        }];
        let mut r = Reply::new(&provider(Dialect::Openai), &s, 1, "m", None);
        r.stop_at(&["xyz".into(), "END".into(), "less".into()]);
        assert_eq!(
            r.text(r.pieces.len()),
            "Hello ",
            "the first match, in the text"
        );
        assert_eq!(r.pieces.len(), 3, "He|ll|o : cut, and no tool call after");
        let w = r.whole(r.pieces.len(), None);
        assert_eq!(w["choices"][0]["finish_reason"], "stop");
        assert!(
            w["choices"][0]["message"].get("tool_calls").is_none(),
            "{w}"
        );
        // Asked to continue "Hello EN", its own text is only "Dless": no match in it.
        let mut c = Reply::new(&provider(Dialect::Openai), &s, 2, "m", Some("Hello EN"));
        c.stop_at(&["END".into()]);
        assert_eq!(c.text(c.pieces.len()), "Dless");
        let mut at_start = Reply::new(&provider(Dialect::Openai), &s, 3, "m", None);
        at_start.stop_at(&["Hel".into(), String::new()]);
        assert_eq!(at_start.text(at_start.pieces.len()), "");
        let mut none = Reply::new(&provider(Dialect::Openai), &s, 4, "m", None);
        none.stop_at(&[String::new()]);
        assert_eq!(
            none.whole(none.pieces.len(), None)["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }

    #[test]
    fn a_token_budget_ends_the_answer_after_its_last_chunk_with_length() {
        let mut s = script();
        s.text = Some("Hello world".into());
        let fresh = || Reply::new(&provider(Dialect::Openai), &s, 1, "m", None);
        let mut r = fresh();
        r.cap_tokens(Some(2));
        assert_eq!(
            r.text(r.pieces.len()),
            "Hell",
            "He|ll: two chunks, two tokens"
        );
        let w = r.whole(r.pieces.len(), None);
        assert_eq!(w["choices"][0]["finish_reason"], "length");
        assert_eq!(w["usage"]["completion_tokens"], 2, "{w}");
        for budget in [None, Some(6), Some(100)] {
            let mut r = fresh();
            r.cap_tokens(budget);
            assert_eq!(r.text(r.pieces.len()), "Hello world", "{budget:?}");
            let w = r.whole(r.pieces.len(), None);
            assert_eq!(w["choices"][0]["finish_reason"], "stop", "{budget:?}");
        }
        s.more_choices = vec!["Another".into()];
        let mut two = Reply::new(&provider(Dialect::Openai), &s, 1, "m", None);
        let pieces = two.pieces.len();
        two.cap_tokens(Some(1));
        assert_eq!(two.pieces.len(), pieces, "several choices: sent as written");
    }

    /// MiniMax: labels in every delta, no finish chunk, and the whole answer again (with
    /// the finish reason and the usage) as the stream's last payload, equal to its own
    /// non-stream answer.
    #[test]
    fn minimax_ends_its_stream_with_the_whole_answer() {
        let r = Reply::new(&provider(Dialect::Minimax), &script(), 1, "m", None);
        assert!(r.opening().is_empty());
        assert_eq!(
            r.piece(0).to_string(),
            r#"{"id":"chatcmpl-fake-p-1","choices":[{"index":0,"delta":{"content":"He","role":"assistant","name":"MiniMax AI","audio_content":""}}],"created":1700000000,"model":"m","object":"chat.completion.chunk","usage":{"total_tokens":0,"total_characters":0},"input_sensitive":false,"output_sensitive":false}"#
        );
        let closing = r.closing();
        assert_eq!(closing.len(), 1, "{closing:?}");
        assert_eq!(
            closing[0].to_string(),
            r#"{"id":"chatcmpl-fake-p-1","choices":[{"finish_reason":"stop","index":0,"message":{"content":"Hello","role":"assistant","name":"MiniMax AI","audio_content":""}}],"created":1700000000,"model":"m","object":"chat.completion","usage":{"total_tokens":8,"total_characters":0,"prompt_tokens":5,"completion_tokens":3},"input_sensitive":false,"output_sensitive":false,"input_sensitive_type":0,"output_sensitive_type":0,"output_sensitive_int":0,"base_resp":{"status_code":0,"status_msg":""}}"#
        );
        assert_eq!(closing[0], r.whole(r.pieces.len(), None));
        let filtered = r.filtered_after(1);
        assert_eq!(filtered.len(), 1);
        assert_eq!(filtered[0]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(filtered[0]["choices"][0]["message"]["content"], "He");
    }

    /// Together: token ids in every delta, the text again as the choice's `text`, no role
    /// chunk, and the usage on the finish chunk even unasked.
    #[test]
    fn together_labels_every_delta_and_puts_the_usage_on_its_finish_chunk() {
        let r = Reply::new(&provider(Dialect::Together), &script(), 1, "m", None);
        assert!(r.opening().is_empty());
        assert_eq!(
            r.piece(0).to_string(),
            r#"{"id":"chatcmpl-fake-p-1","object":"chat.completion.chunk","created":1700000000,"choices":[{"index":0,"text":"He","logprobs":null,"finish_reason":null,"seed":null,"delta":{"token_id":30,"role":"assistant","content":"He","tool_calls":null}}],"model":"m","usage":null}"#
        );
        let closing = r.closing();
        assert_eq!(closing.len(), 1, "{closing:?}");
        assert_eq!(
            closing[0].to_string(),
            r#"{"id":"chatcmpl-fake-p-1","object":"chat.completion.chunk","created":1700000000,"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"stop","seed":16158686754257986000,"delta":{"token_id":128009,"role":"assistant","content":"","tool_calls":null}}],"model":"m","usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#
        );
        // What accumulating that stream gives: the labels kept, the latest state wins.
        assert_eq!(
            r.whole(r.pieces.len(), None).to_string(),
            r#"{"id":"chatcmpl-fake-p-1","object":"chat.completion","created":1700000000,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello","token_id":128009},"text":"","logprobs":null,"finish_reason":"stop","seed":16158686754257986000}],"model":"m","usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#
        );
    }

    /// Kimi: OpenAI's chunks without `logprobs`, and the usage inside the finishing
    /// choice only, even unasked.
    #[test]
    fn kimi_reports_its_usage_inside_the_finishing_choice() {
        let r = Reply::new(&provider(Dialect::Kimi), &script(), 1, "m", None);
        assert_eq!(r.opening().len(), 1, "a role chunk");
        assert_eq!(
            r.piece(0).to_string(),
            r#"{"id":"chatcmpl-fake-p-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"He"},"finish_reason":null}]}"#
        );
        let closing = r.closing();
        assert_eq!(closing.len(), 1, "no usage chunk apart: {closing:?}");
        assert_eq!(
            closing[0].to_string(),
            r#"{"id":"chatcmpl-fake-p-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,"cached_tokens":0}}]}"#
        );
        let whole = r.whole(r.pieces.len(), None);
        assert_eq!(whole["choices"][0]["usage"], whole["usage"], "{whole}");
        assert_eq!(whole["usage"]["completion_tokens"], 3);
    }

    /// Perplexity: `chat.completion` chunks with the running usage and citations, the whole
    /// message so far beside every delta, and a non-stream answer made of the deltas.
    #[test]
    fn perplexity_sends_the_message_so_far_beside_every_delta() {
        let r = Reply::new(&provider(Dialect::Perplexity), &script(), 1, "m", None);
        assert!(r.opening().is_empty());
        assert_eq!(
            r.piece(1).to_string(),
            r#"{"id":"chatcmpl-fake-p-1","model":"m","created":1700000000,"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"search_context_size":"low"},"citations":["https://docs.perplexity.ai/guides/streaming","https://example.com/fake-source"],"object":"chat.completion","choices":[{"index":0,"finish_reason":null,"message":{"role":"assistant","content":"Hell"},"delta":{"role":"assistant","content":"ll"}}]}"#
        );
        let closing = r.closing();
        assert_eq!(closing.len(), 1, "no usage chunk apart: {closing:?}");
        assert_eq!(closing[0]["choices"][0]["message"]["content"], "Hello");
        assert_eq!(closing[0]["choices"][0]["delta"]["content"], "");
        let whole = r.whole(r.pieces.len(), None);
        assert_eq!(
            whole["choices"][0]["message"],
            json!({"role": "assistant", "content": "Hello"})
        );
        assert_eq!(whole["object"], "chat.completion");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"M"), "TQ==");
    }
}
