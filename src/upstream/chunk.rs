//! One `chat.completion.chunk` from an upstream, parsed just enough to route on.
//!
//! Owns: reading an SSE `data:` payload (or a whole JSON completion, for upstreams that
//! answer a stream request with JSON) into a [`Chunk`]: its `model`, its text, whether it
//! carries content (the commit trigger), its finish reason and usage; or recognising it as
//! an error object. The parsed object ([`ChunkObject`]) is kept whole so that everything
//! the engine does not interpret (tool calls, logprobs, ...) is forwarded unchanged.

use serde_json::{Map, Value};

use super::chunk_object::{Choice, ChoiceField, ChunkObject, Top};
use crate::json::member;
use crate::limits::LimitExceeded;

/// How much one answer may carry, per chunk parsed (see `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Choices per answer: no choice `index` may reach this.
    pub max_choices: usize,
    /// Tool calls per choice: no tool-call `index` (or position) may reach this.
    pub max_tool_calls: usize,
    /// JSON values in one whole JSON answer (`limits.max_upstream_json_values`).
    pub max_json_values: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        let l = crate::limits::Limits::default();
        ChunkLimits {
            max_choices: l.max_choices,
            max_tool_calls: l.max_tool_calls,
            max_json_values: l.max_upstream_json_values,
        }
    }
}

impl Chunk {
    /// Reads a usage reported where OpenAI's is not as the chunk's `usage`, when it has
    /// none of its own: Moonshot's Kimi puts it in the finishing choice (`choices[i].usage`),
    /// Groq, asked for none, under `x_groq.usage`. Read only at the top, it was never
    /// counted (no `usage` in a non-stream answer, none for a client that asked, nothing
    /// summed over a continuation). The provider's own stays where it was; the chunk is
    /// then written anew, its `usage` in the place of a `usage: null`, or at its end.
    pub fn read_usage_reported_elsewhere(&mut self) {
        if self.object.json("usage").is_some_and(|u| !u.is_null()) {
            return;
        }
        let in_a_choice = || {
            self.object
                .choices()?
                .iter()
                .find_map(|choice| match choice {
                    Choice::Object(fields) => match fields.get("usage") {
                        Some(ChoiceField::Json(usage @ Value::Object(_))) => Some(usage),
                        _ => None,
                    },
                    Choice::Json(_) => None,
                })
        };
        let under_x_groq = || {
            self.object
                .json("x_groq")
                .and_then(|x| x.get("usage"))
                .filter(|u| u.is_object())
        };
        if let Some(usage) = in_a_choice().or_else(under_x_groq).cloned() {
            self.object.insert("usage", Top::Json(usage));
            self.raw = None;
        }
    }

    /// Bytes of the running copies of the message in this chunk: a choice's `message`
    /// beside its `delta` (Perplexity's whole answer so far, on every chunk). The delta
    /// is the piece; neither mode keeps the copy, and counted against the answer's size
    /// its bytes grow with the square of the answer's length. Only the copy's text is
    /// counted here (its strings and keys, as read), which the event's own bytes hold at
    /// least once: the copy written anew could be longer than it came (`1e15` is written
    /// `1000000000000000.0`), and an upstream could then send bytes the bound never saw.
    ///
    /// Only a chunk with output earns the credit: one without may be held whole, copy
    /// and all, as the answer's possible end (`held_end`) or before commit, and an
    /// upstream that sent such chunks without end after its finish reason had them held,
    /// uncounted, until the deadline. A content-less chunk's copy (Perplexity's last, with
    /// the finish reason) is counted once, at most the answer's length.
    pub fn running_copy_bytes(&self) -> usize {
        if self.payload_bytes == 0 {
            return 0;
        }
        let Some(choices) = self.object.choices() else {
            return 0;
        };
        choices
            .iter()
            .filter_map(|c| match c {
                Choice::Object(fields) => Some(fields),
                Choice::Json(_) => None,
            })
            .filter(|fields| matches!(fields.get("delta"), Some(ChoiceField::Delta(_))))
            .filter_map(|fields| match fields.get("message") {
                Some(ChoiceField::Delta(message)) => Some(
                    message
                        .iter()
                        .map(|(key, value)| key.len() + text_bytes(value))
                        .sum::<usize>(),
                ),
                _ => None,
            })
            .sum()
    }
}

/// Bytes of the strings and keys in `value`, as parsed (never more than their JSON text).
fn text_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + text_bytes(v)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Not a chunk at all (not JSON, wrong shape).
    Malformed(String),
    /// A chunk over a named limit: an upstream that invents choices or tool calls without
    /// end must not grow the gateway's memory without end.
    Limit(LimitExceeded),
}

impl From<String> for ChunkError {
    fn from(s: String) -> Self {
        ChunkError::Malformed(s)
    }
}

/// A parsed upstream chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub object: ChunkObject,
    pub model: Option<String>,
    /// `choices[0].delta.content` (the text a continuation is built from).
    pub text: String,
    /// Bytes of answer payload in this chunk (content, refusal, tool calls, audio,
    /// reasoning: any delta field but `role` and `name` that is not empty), all choices.
    pub payload_bytes: usize,
    /// A choice's non-empty `finish_reason`: the last choice's, or `content_filter` when
    /// any choice has it.
    pub finish_reason: Option<String>,
    /// No choices, only `usage`: the final usage chunk of `stream_options.include_usage`.
    pub usage_only: bool,
    /// Whether an answer made of chunks like this one can be continued by another attempt:
    /// text of choice 0 only (no other choice, tool call, audio, refusal, reasoning or
    /// logprobs). Decided from what was delivered, which is the same in both modes.
    pub continuable: bool,
    /// For an upstream that answered with one JSON completion: that completion as it
    /// came, so a non-streaming client can get it byte for byte.
    pub whole: Option<Box<Map<String, Value>>>,
    /// The SSE `data` payload exactly as the upstream sent it, while [`Chunk::object`] is
    /// unchanged: a streaming client then gets the provider's own bytes (spacing and number
    /// spellings included). Cleared by whatever changes the object.
    pub raw: Option<String>,
}

/// What one `data:` payload was.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Chunk(Chunk),
    /// `{"error": {...}}`: an error event.
    Error(Value),
    /// `[DONE]`.
    Done,
}

/// Parses one SSE data payload.
pub fn parse_data(data: &str, limits: &ChunkLimits) -> Result<Payload, ChunkError> {
    let data = data.trim();
    let mut payload = parse_trimmed(data, limits)?;
    if let Payload::Chunk(c) = &mut payload {
        c.raw = Some(data.to_string());
    }
    Ok(payload)
}

/// The payload of an event named `event` with `data`. An event named `error` (`event:
/// error`, or the `error:` field of llama.cpp's older servers, see `sse`) is an error
/// whatever its data holds: its data is the error (classified by its `error` member when
/// it has one, else by itself), or the error's message when it is no JSON object. Read as
/// a chunk, llama.cpp's `{"code": 400, "message": "...context size..."}` was a chunk of
/// nothing, and the answer an empty 200.
pub fn parse_event(
    event: Option<&str>,
    data: String,
    limits: &ChunkLimits,
) -> Result<Payload, ChunkError> {
    if event != Some("error") {
        return parse_event_data(data, limits);
    }
    match crate::json::from_slice_bounded(data.trim().as_bytes(), limits.max_json_values) {
        Ok(error @ Value::Object(_)) => Ok(Payload::Error(error)),
        _ => Ok(Payload::Error(
            serde_json::json!({"error": {"message": data}}),
        )),
    }
}

/// [`parse_data`] of an event's own data, which becomes the chunk's [`Chunk::raw`] without
/// a copy when it needs no trimming (the usual case).
pub fn parse_event_data(data: String, limits: &ChunkLimits) -> Result<Payload, ChunkError> {
    if data.trim().len() != data.len() {
        return parse_data(&data, limits);
    }
    let mut payload = parse_trimmed(&data, limits)?;
    if let Payload::Chunk(c) = &mut payload {
        c.raw = Some(data);
    }
    Ok(payload)
}

/// A trimmed payload, without its [`Chunk::raw`].
fn parse_trimmed(data: &str, limits: &ChunkLimits) -> Result<Payload, ChunkError> {
    if data == "[DONE]" {
        return Ok(Payload::Done);
    }
    let object = ChunkObject::parse(data)
        .map_err(|e| format!("chunk is not JSON: {e}"))?
        .ok_or_else(|| "chunk is not a JSON object".to_string())?;
    from_object(object, limits)
}

/// Interprets a parsed chunk or error object.
pub fn from_object(object: ChunkObject, limits: &ChunkLimits) -> Result<Payload, ChunkError> {
    let top = TopFields::of(&object);
    if top.error {
        return Ok(Payload::Error(object.to_value()));
    }
    let model = top.model.and_then(Value::as_str).map(str::to_string);
    let choices = match top.choices {
        Some(Top::Choices(c)) => c.as_slice(),
        None | Some(Top::Json(Value::Null)) => &[],
        Some(_) => return Err("`choices` is not an array".to_string().into()),
    };
    check_limits(choices, limits)?;
    let mut text = String::new();
    let mut payload_bytes = 0;
    let mut finish_reason = None;
    let mut continuable = true;
    for (i, choice) in choices.iter().enumerate() {
        let fields = ChoiceFields::of(choice);
        let index = fields.index.and_then(Value::as_u64).unwrap_or(i as u64);
        if let Some(ChoiceField::Delta(delta)) = fields.delta {
            for (key, value) in delta.iter() {
                if !is_output(key, value) {
                    continue;
                }
                payload_bytes += match value {
                    Value::String(s) => s.len(),
                    other => other.to_string().len(),
                };
                if key == "content" {
                    if let Some(content) = value.as_str() {
                        if index == 0 {
                            text.push_str(content);
                        }
                        continuable &= index == 0;
                        continue;
                    }
                }
                continuable = false;
            }
        }
        if fields
            .logprobs
            .is_some_and(|l| !matches!(l, ChoiceField::Json(Value::Null)))
        {
            continuable = false;
        }
        let reason = fields
            .finish_reason
            .and_then(Value::as_str)
            .filter(|reason| !reason.is_empty());
        if let Some(failed) = failed_choice(index, reason, fields.error) {
            return Ok(Payload::Error(failed));
        }
        // An empty reason is no reason (Ollama's and SGLang's chunks before the last). With
        // several choices, a content filter on any of them is what the plan must see.
        if let Some(reason) = reason {
            if finish_reason.as_deref() != Some(CONTENT_FILTER) {
                finish_reason = Some(match reason {
                    // Zhipu's filter ("blocked by the safety review"), decided on as one;
                    // the client still reads the provider's own word.
                    "sensitive" => CONTENT_FILTER.to_string(),
                    reason => reason.to_string(),
                });
            }
        }
    }
    let usage_only = choices.is_empty() && top.usage.is_some_and(|u| !u.is_null());
    debug_assert!(
        !matches!(top.choices, Some(Top::Json(Value::Array(_)))),
        "an array of choices is read as choices"
    );
    // Azure opens with `choices: []` and `prompt_filter_results`: a content-less chunk like
    // any other. Only an object with no `choices` at all (and no usage) is not a chunk.
    if top.choices.is_none() && !usage_only {
        return Err("chunk has neither `choices` nor `usage`".to_string().into());
    }
    Ok(Payload::Chunk(Chunk {
        object,
        model,
        text,
        payload_bytes,
        finish_reason,
        usage_only,
        continuable,
        whole: None,
        raw: None,
    }))
}

/// Whether an `error` field holds an error: what the SDKs raise on (a truthy value, in
/// openai-python's `if data.get("error")`). Some providers send `"error": null` on every
/// healthy chunk.
/// Whether a member of a delta is a piece of the answer. Labels are not: the role, the
/// speaker's `name` MiniMax puts in every delta, and the id of the token Together puts in
/// every delta (its finish chunk's, too); counted as answer, each made every answer
/// impossible to continue. Nor is an empty value.
fn is_output(key: &str, value: &Value) -> bool {
    !matches!(key, "role" | "name" | "token_id")
        && match value {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Bool(_) | Value::Number(_) => true,
        }
}

/// Whether a choice of a chunk carries a piece of the answer (see [`is_output`]).
pub fn has_output(choice: &Choice) -> bool {
    matches!(choice.delta(), Some(ChoiceField::Delta(d)) if d.iter().any(|(k, v)| is_output(k, v)))
}

/// The finish reason of a content filter, as the plan decides on it.
pub const CONTENT_FILTER: &str = "content_filter";

/// Finish reasons that say the answer FAILED, though the status was 200: vLLM's `abort`
/// (its engine dropped the request), Mistral's, OpenRouter's and Cloudflare's `error`,
/// DeepSeek's `insufficient_system_resource`, Zhipu's `network_error`. Read as finishes,
/// each served an empty or cut answer as complete, and counted the deployment healthy.
pub const FAILURE_FINISH_REASONS: &[&str] = &[
    "abort",
    "error",
    "insufficient_system_resource",
    "network_error",
];

/// The error event a choice's end makes when it says the answer failed: its own `error`
/// object (OpenRouter puts one in the choice), else one naming the finish reason. No status
/// or type in it: it classifies as the server's transient failure.
fn failed_choice(index: u64, reason: Option<&str>, error: Option<&Value>) -> Option<Value> {
    let error = error.filter(|e| is_an_error(e));
    let reason = reason.filter(|r| FAILURE_FINISH_REASONS.contains(r));
    if error.is_none() && reason.is_none() {
        return None;
    }
    Some(match error {
        Some(error @ Value::Object(_)) => serde_json::json!({ "error": error }),
        _ => serde_json::json!({"error": {"message": format!(
            "upstream ended choice {index} with finish_reason `{}`: the answer failed",
            reason.unwrap_or("error")
        )}}),
    })
}

fn is_an_error(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A completion's `message` as a chunk's `delta`: its tool calls get the `index` a delta's
/// must have (OpenAI's chunk schema; the SDKs' stream helpers index by it), their place.
fn as_delta(message: &Value) -> Value {
    let Some(Value::Array(calls)) = message.get("tool_calls") else {
        return message.clone();
    };
    if calls.iter().all(|c| c.get("index").is_some()) {
        return message.clone();
    }
    let calls = calls
        .iter()
        .enumerate()
        .map(|(place, call)| match call {
            Value::Object(fields) if !fields.contains_key("index") => {
                let mut indexed = Map::with_capacity(fields.len() + 1);
                indexed.insert("index".to_string(), Value::from(place));
                indexed.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(indexed)
            }
            other => other.clone(),
        })
        .collect();
    let mut delta = message.clone();
    delta["tool_calls"] = Value::Array(calls);
    delta
}

/// The top-level fields of a chunk the parser reads, found in one pass over its keys: a
/// chunk is parsed for every few tokens, and each map lookup would hash its key.
#[derive(Default)]
struct TopFields<'a> {
    error: bool,
    model: Option<&'a Value>,
    choices: Option<&'a Top>,
    usage: Option<&'a Value>,
}

impl<'a> TopFields<'a> {
    fn of(object: &'a ChunkObject) -> TopFields<'a> {
        let mut top = TopFields::default();
        for (key, value) in object.iter() {
            let json = match value {
                Top::Json(v) => Some(v),
                Top::Choices(_) => None,
            };
            match key {
                "error" => top.error = json.is_some_and(is_an_error),
                "model" => top.model = json,
                "choices" => top.choices = Some(value),
                "usage" => top.usage = json,
                _ => {}
            }
        }
        top
    }
}

/// The fields of one choice the parser reads, found in one pass (see [`TopFields`]).
#[derive(Default)]
struct ChoiceFields<'a> {
    index: Option<&'a Value>,
    delta: Option<&'a ChoiceField>,
    logprobs: Option<&'a ChoiceField>,
    finish_reason: Option<&'a Value>,
    /// OpenRouter's per-choice `error`.
    error: Option<&'a Value>,
}

impl<'a> ChoiceFields<'a> {
    fn of(choice: &'a Choice) -> ChoiceFields<'a> {
        let Some(fields) = choice.fields() else {
            return ChoiceFields::default();
        };
        ChoiceFields {
            index: fields.get("index").and_then(ChoiceField::json),
            // The `delta`, or a whole completion's `message`.
            delta: choice.delta(),
            logprobs: fields.get("logprobs"),
            finish_reason: fields.get("finish_reason").and_then(ChoiceField::json),
            error: fields.get("error").and_then(ChoiceField::json),
        }
    }
}

/// Refuses choice and tool-call indexes (or counts) at or past their limits.
fn check_limits(choices: &[Choice], limits: &ChunkLimits) -> Result<(), ChunkError> {
    let indexes = choices.iter().map(Choice::index);
    within("max_choices", "choice", indexes, limits.max_choices)?;
    for choice in choices {
        if let Some(Value::Array(calls)) = choice
            .delta()
            .and_then(ChoiceField::object)
            .and_then(|d| d.get("tool_calls"))
        {
            let indexes = calls
                .iter()
                .map(|c| member(c, "index").and_then(Value::as_u64));
            within(
                "max_tool_calls",
                "tool call",
                indexes,
                limits.max_tool_calls,
            )?;
        }
    }
    Ok(())
}

/// At most `max` items (choices, tool calls), and none whose `index` (or, without one,
/// position) reaches `max`.
fn within(
    limit: &'static str,
    what: &str,
    indexes: impl ExactSizeIterator<Item = Option<u64>>,
    max: usize,
) -> Result<(), ChunkError> {
    let over = |detail: String| Err(ChunkError::Limit(LimitExceeded::new(limit, detail)));
    if indexes.len() > max {
        return over(format!(
            "{} {what}s in one chunk ({limit} = {max})",
            indexes.len()
        ));
    }
    for (position, index) in indexes.enumerate() {
        let index = index.unwrap_or(position as u64);
        if index >= max as u64 {
            return over(format!("{what} index {index} ({limit} = {max})"));
        }
    }
    Ok(())
}

/// An upstream that answered with a whole JSON `chat.completion` (a deployment called
/// without streaming, or one that ignored `stream: true`): the same answer as chunks, so
/// the attempt loop reads every answer one way. The first chunk carries every choice's
/// `message` as its `delta` (and the completion itself, see [`Chunk::whole`]); a second
/// chunk carries `usage`, as a streamed answer with `include_usage` would.
pub fn from_completion(body: &[u8], limits: &ChunkLimits) -> Result<Vec<Payload>, ChunkError> {
    let body = crate::charset::without_byte_order_mark(body);
    let value =
        crate::json::from_slice_bounded(body, limits.max_json_values).map_err(|e| match e {
            crate::json::BoundedError::Json(e) => {
                ChunkError::from(format!("response is not JSON: {e}"))
            }
            crate::json::BoundedError::TooManyValues => ChunkError::Limit(LimitExceeded::new(
                "max_upstream_json_values",
                format!(
                    "the answer has more than {} JSON values (max_upstream_json_values)",
                    limits.max_json_values
                ),
            )),
        })?;
    let Value::Object(whole) = value else {
        return Err("response is not a JSON object".to_string().into());
    };
    if whole.get("error").is_some_and(is_an_error) {
        return Ok(vec![Payload::Error(Value::Object(whole))]);
    }
    let mut chunk = Map::with_capacity(whole.len() + 1);
    let mut usage = None;
    for (key, value) in &whole {
        match key.as_str() {
            "object" => {
                chunk.insert(key.clone(), Value::String("chat.completion.chunk".into()));
            }
            "usage" => usage = Some(value.clone()),
            "choices" => {
                // `null` reads as no choices, as it does in a streamed chunk.
                let choices = match value {
                    Value::Null => Value::Null,
                    Value::Array(c) => Value::Array(
                        c.iter()
                            .map(|choice| match choice {
                                Value::Object(c) => Value::Object(
                                    c.iter()
                                        .map(|(k, v)| match k.as_str() {
                                            "message" => ("delta".to_string(), as_delta(v)),
                                            _ => (k.clone(), v.clone()),
                                        })
                                        .collect(),
                                ),
                                other => other.clone(),
                            })
                            .collect(),
                    ),
                    other => return Err(format!("`choices` is {other}, not an array").into()),
                };
                chunk.insert(key.clone(), choices);
            }
            _ => {
                chunk.insert(key.clone(), value.clone());
            }
        }
    }
    if !chunk.contains_key("object") {
        chunk.insert(
            "object".into(),
            Value::String("chat.completion.chunk".into()),
        );
    }
    // The usage chunk's fields are read before the first chunk takes the map whole.
    let tail = usage.filter(|u| !u.is_null()).map(|usage| {
        let mut tail = Map::new();
        for key in ["id", "object", "created", "model", "system_fingerprint"] {
            if let Some(v) = chunk.get(key) {
                tail.insert(key.to_string(), v.clone());
            }
        }
        tail.insert("choices".into(), Value::Array(Vec::new()));
        tail.insert("usage".into(), usage);
        tail
    });
    let mut out = Vec::with_capacity(2);
    let mut first = match from_object(ChunkObject::from_map(chunk), limits)? {
        Payload::Chunk(first) => first,
        // A choice that says the answer failed.
        error @ Payload::Error(_) => return Ok(vec![error]),
        Payload::Done => unreachable!("an object is no `[DONE]`"),
    };
    first.whole = Some(Box::new(whole));
    out.push(Payload::Chunk(first));
    if let Some(tail) = tail {
        out.push(from_object(ChunkObject::from_map(tail), limits)?);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_events_own_data_becomes_raw_as_parse_data_would_keep_it() {
        let limits = ChunkLimits::default();
        for data in [
            r#"{"id":"a","choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
            r#"  {"id":"a","choices":[{"index":0,"delta":{"content":"hi"}}]} "#,
            "[DONE]",
            r#"{"error":{"code":429}}"#,
        ] {
            let owned = parse_event_data(data.to_string(), &limits).unwrap();
            assert_eq!(owned, super::parse_data(data, &limits).unwrap(), "{data}");
            if let Payload::Chunk(c) = owned {
                assert_eq!(c.raw.as_deref(), Some(data.trim()));
            }
        }
        assert!(parse_event_data("{".into(), &limits).is_err());
    }

    fn parse_data(data: &str) -> Result<Payload, ChunkError> {
        super::parse_data(data, &ChunkLimits::default())
    }

    /// A chunk parsed as the upstream reader parses one event, for tests.
    pub(crate) fn chunk(data: &str) -> Chunk {
        match parse_event_data(data.to_string(), &ChunkLimits::default()) {
            Ok(Payload::Chunk(c)) => c,
            other => panic!("{data}: {other:?}"),
        }
    }

    /// An empty reason is none (Ollama, SGLang); with several choices a content filter on
    /// any of them is the chunk's reason, whatever the later choices say.
    #[test]
    fn the_chunks_finish_reason_is_a_real_one_and_a_content_filter_wins() {
        let reason = |data: &str| chunk(data).finish_reason;
        assert_eq!(
            reason(r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":""}]}"#),
            None
        );
        assert_eq!(
            reason(
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"},{"index":1,"delta":{},"finish_reason":"stop"}]}"#
            )
            .as_deref(),
            Some("content_filter")
        );
        assert_eq!(
            reason(
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"},{"index":1,"delta":{},"finish_reason":""}]}"#
            )
            .as_deref(),
            Some("length")
        );
    }

    #[test]
    fn content_role_finish_and_usage() {
        let c = chunk(
            r#"{"id":"x","model":"m1","choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
        );
        assert_eq!(
            (c.payload_bytes, c.model.as_deref()),
            (0, Some("m1")),
            "a role-only chunk carries no content"
        );
        let c = chunk(r#"{"model":"m1","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#);
        assert_eq!((c.text.as_str(), c.payload_bytes), ("Hel", 3));
        let c = chunk(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}"#);
        assert_eq!(c.finish_reason.as_deref(), Some("content_filter"));
        let c = chunk(r#"{"choices":[],"usage":{"total_tokens":3}}"#);
        assert!(c.usage_only);
        let c = chunk(
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
        );
        assert!(c.payload_bytes > 0, "tool calls are content");
        assert!(!c.continuable, "a tool call cannot be continued");
    }

    /// Perplexity's running copy counts its text; numbers written longer than they came
    /// (`1e15`) count nothing; a message without a delta beside it is no copy, and one
    /// beside a delta without output earns no credit.
    #[test]
    fn a_running_copy_counts_its_text_and_no_more_than_came() {
        let copy = chunk(
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"delta":{"content":"lo"}}]}"#,
        );
        assert_eq!(
            copy.running_copy_bytes(),
            "role".len() + "assistant".len() + "content".len() + 5
        );
        let numbers = chunk(
            r#"{"choices":[{"index":0,"message":{"n":[1e15,1e15,1e15]},"delta":{"content":"x"}}]}"#,
        );
        assert_eq!(numbers.running_copy_bytes(), 1, "the key only");
        let no_output = chunk(
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"delta":{},"finish_reason":"stop"}]}"#,
        );
        assert_eq!(
            no_output.running_copy_bytes(),
            0,
            "it may be held, copy and all"
        );
        let whole =
            chunk(r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"}}]}"#);
        assert_eq!(whole.running_copy_bytes(), 0);
    }

    /// An event named `error` is an error, whatever its data: llama.cpp's bare error object,
    /// an `{"error": ...}` one, text; any other event is read by its data.
    #[test]
    fn an_event_named_error_is_an_error() {
        let limits = ChunkLimits::default();
        let event = |name, data: &str| parse_event(name, data.to_string(), &limits).unwrap();
        let llama = r#"{"code":400,"message":"the request exceeds the available context size","type":"invalid_request_error"}"#;
        assert_eq!(
            event(Some("error"), llama),
            Payload::Error(serde_json::from_str(llama).unwrap())
        );
        let wrapped = r#"{"error":{"code":429}}"#;
        assert_eq!(
            event(Some("error"), wrapped),
            Payload::Error(serde_json::from_str(wrapped).unwrap())
        );
        assert_eq!(
            event(Some("error"), "overloaded"),
            Payload::Error(serde_json::json!({"error": {"message": "overloaded"}}))
        );
        assert!(matches!(
            event(None, r#"{"choices":[]}"#),
            Payload::Chunk(_)
        ));
        assert!(matches!(
            event(Some("message"), r#"{"choices":[]}"#),
            Payload::Chunk(_)
        ));
    }

    #[test]
    fn only_text_of_choice_zero_is_continuable() {
        let ok = |s: &str| chunk(s).continuable;
        assert!(ok(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi","refusal":null}}]}"#
        ));
        // MiniMax labels every delta with the speaker's name and an empty audio field.
        assert!(ok(
            r#"{"choices":[{"index":0,"delta":{"content":"Hi","role":"assistant","name":"MiniMax AI","audio_content":""}}]}"#
        ));
        // Together puts the token's id in every delta (captured 2024-08, AIProxySwift's
        // TogetherAIChatCompletionStreamingChunkTests), and the choice's `text` and `seed`
        // beside it.
        let together = r#"{"id":"8b43a5cfadf99e5c-SJC","object":"chat.completion.chunk","created":1723834621,"choices":[{"index":0,"text":"ABC","logprobs":null,"finish_reason":null,"seed":null,"delta":{"token_id":30,"role":"assistant","content":"ABC","tool_calls":null}}],"model":"meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo","usage":null}"#;
        assert!(ok(together));
        assert_eq!(chunk(together).payload_bytes, 3, "the text only");
        let last = r#"{"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"eos","seed":2039908639335532000,"delta":{"token_id":128009,"role":"assistant","content":"","tool_calls":null}}],"usage":{"prompt_tokens":12,"completion_tokens":27,"total_tokens":39}}"#;
        assert_eq!(
            chunk(last).payload_bytes,
            0,
            "a finish chunk brings nothing"
        );
        assert!(!ok(r#"{"choices":[{"index":1,"delta":{"content":"Hi"}}]}"#));
        assert!(!ok(
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hm"}}]}"#
        ));
        assert!(!ok(
            r#"{"choices":[{"index":0,"delta":{"audio":{"transcript":"a"}}}]}"#
        ));
        assert!(!ok(
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[]}}]}"#
        ));
        let r = chunk(r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hm"}}]}"#);
        assert!(
            r.payload_bytes > 0,
            "reasoning commits a stream like content"
        );
    }

    #[test]
    fn done_errors_and_garbage() {
        assert_eq!(parse_data("[DONE]").unwrap(), Payload::Done);
        assert!(matches!(
            parse_data(r#"{"error":{"code":429}}"#).unwrap(),
            Payload::Error(_)
        ));
        assert!(parse_data("{not json").is_err());
        assert!(parse_data("[1,2]").is_err());
        assert!(parse_data(r#"{"choices":"x"}"#).is_err());
        assert!(parse_data(r#"{"id":"x"}"#).is_err());
        // Azure's first chunk: no choices yet, only its prompt filter results.
        let azure = chunk(
            r#"{"id":"","object":"","created":0,"model":"","choices":[],"prompt_filter_results":[{"prompt_index":0}]}"#,
        );
        assert_eq!((azure.payload_bytes, azure.usage_only), (0, false));
    }

    #[test]
    fn a_json_answer_of_too_many_values_is_refused_by_name() {
        // A hostile upstream's 16 MiB of `0,` would be 640 MB of values in memory.
        let limits = ChunkLimits {
            max_json_values: 100,
            ..ChunkLimits::default()
        };
        let answer = |n: usize| {
            format!(
                r#"{{"id":"x","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"pad":[{}]}}"#,
                vec!["0"; n].join(",")
            )
        };
        // The answer, id, object, choices, its choice (index, message, role, content,
        // finish_reason) and pad: 11 values.
        assert!(from_completion(answer(89).as_bytes(), &limits).is_ok());
        match from_completion(answer(90).as_bytes(), &limits) {
            Err(ChunkError::Limit(l)) => {
                assert_eq!(l.name, "max_upstream_json_values");
                assert!(l.detail.contains("more than 100 JSON values"), "{l:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn choice_and_tool_call_indexes_are_bounded() {
        let limits = ChunkLimits {
            max_choices: 2,
            max_tool_calls: 2,
            ..ChunkLimits::default()
        };
        let c = |s: &str| super::parse_data(s, &limits);
        assert!(c(r#"{"choices":[{"index":1,"delta":{"content":"x"}}]}"#).is_ok());
        let limit = |r: Result<Payload, ChunkError>| match r {
            Err(ChunkError::Limit(l)) => l.name,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            limit(c(r#"{"choices":[{"index":2,"delta":{"content":"x"}}]}"#)),
            "max_choices"
        );
        assert_eq!(
            limit(c(r#"{"choices":[{"delta":{}},{"delta":{}},{"delta":{}}]}"#)),
            "max_choices"
        );
        assert_eq!(
            limit(c(
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":5,"function":{"name":"f"}}]}}]}"#
            )),
            "max_tool_calls"
        );
    }

    /// A completion's tool calls carry no `index`; a chunk's must (OpenAI's chunk schema,
    /// and the SDKs' stream helpers index by it), so the re-chunked ones get their place.
    #[test]
    fn a_completions_tool_calls_get_their_index_as_chunk_deltas() {
        let body = br#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}},{"index":5,"id":"call_2","type":"function","function":{"name":"g","arguments":"{}"}},{"id":"call_3","type":"function","function":{"name":"h","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#;
        let payloads = from_completion(body, &ChunkLimits::default()).unwrap();
        let Payload::Chunk(c) = &payloads[0] else {
            panic!("{payloads:?}")
        };
        let v = c.object.to_value();
        let calls = v["choices"][0]["delta"]["tool_calls"].as_array().unwrap();
        let indexes: Vec<&Value> = calls.iter().map(|c| &c["index"]).collect();
        assert_eq!(indexes, [&json!(0), &json!(5), &json!(2)], "{v}");
        assert_eq!(
            calls[0]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .map(String::as_str),
            Some("index"),
            "first, as OpenAI writes it"
        );
        let whole = c.whole.as_ref().unwrap();
        assert!(
            whole["choices"][0]["message"]["tool_calls"][0]
                .get("index")
                .is_none(),
            "the completion itself is kept as it came"
        );
    }

    /// `"error": null` (or any other empty value) on a healthy answer is no error: the SDKs
    /// raise only on a truthy `error`, and some providers send the field on every chunk.
    #[test]
    fn an_empty_error_field_is_no_error() {
        for empty in ["null", "false", "\"\"", "{}"] {
            let data = format!(
                r#"{{"id":"x","choices":[{{"index":0,"delta":{{"content":"hi"}}}}],"error":{empty}}}"#
            );
            assert_eq!(chunk(&data).text, "hi", "{data}");
            let body = format!(
                r#"{{"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"error":{empty}}}"#
            );
            let payloads = from_completion(body.as_bytes(), &ChunkLimits::default()).unwrap();
            assert!(
                matches!(payloads[0], Payload::Chunk(_)),
                "{body}: {payloads:?}"
            );
        }
        for error in [r#"{"message":"down"}"#, r#""down""#] {
            let data = format!(r#"{{"choices":[],"error":{error}}}"#);
            assert!(matches!(parse_data(&data), Ok(Payload::Error(_))), "{data}");
            let body = format!(r#"{{"error":{error}}}"#);
            let payloads = from_completion(body.as_bytes(), &ChunkLimits::default()).unwrap();
            assert!(matches!(payloads[0], Payload::Error(_)), "{body}");
        }
    }

    #[test]
    fn whole_completion_reads_like_one_chunk() {
        let body = br#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        let mut payloads = from_completion(body, &ChunkLimits::default()).unwrap();
        assert_eq!(payloads.len(), 1, "no usage, no usage chunk");
        match payloads.remove(0) {
            Payload::Chunk(c) => {
                assert_eq!(
                    (c.text.as_str(), c.finish_reason.as_deref()),
                    ("hi", Some("stop"))
                );
                assert_eq!(c.object.to_value()["object"], "chat.completion.chunk");
                assert_eq!(
                    c.object.to_value()["choices"][0]["delta"]["content"],
                    "hi",
                    "message reads as delta"
                );
                assert!(c.whole.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    /// A completion that begins with UTF-8's byte-order mark (a .NET proxy's JSON writer)
    /// is read as without it, as an event stream's is (RFC 8259 §8.1 lets a parser ignore
    /// one); it was a malformed answer.
    #[test]
    fn a_completion_with_a_byte_order_mark_is_read() {
        let limits = ChunkLimits::default();
        let body = "\u{FEFF}{\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}";
        let payloads = from_completion(body.as_bytes(), &limits).expect("read");
        let Some(Payload::Chunk(first)) = payloads.first() else {
            panic!("{payloads:?}");
        };
        assert_eq!(first.text, "hi");
    }

    /// A completion's `choices: null` reads as it does in a streamed chunk (no choices),
    /// not as a malformed answer; a `choices` that is neither is malformed in both.
    #[test]
    fn null_choices_read_alike_in_a_completion_and_a_chunk() {
        let limits = ChunkLimits::default();
        let body = br#"{"model":"m","choices":null,"usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":1}}"#;
        let payloads = from_completion(body, &limits).expect("no choices is not malformed");
        let [Payload::Chunk(first), Payload::Chunk(usage)] = payloads.as_slice() else {
            panic!("{payloads:?}");
        };
        assert_eq!(
            (first.payload_bytes, first.finish_reason.as_deref()),
            (0, None)
        );
        assert!(usage.usage_only);
        let streamed = parse_event_data(r#"{"model":"m","choices":null}"#.to_string(), &limits);
        assert!(matches!(streamed, Ok(Payload::Chunk(_))), "{streamed:?}");
        for bad in [r#"{"choices":"x"}"#, r#"{"choices":{}}"#] {
            assert!(from_completion(bad.as_bytes(), &limits).is_err(), "{bad}");
            assert!(parse_event_data(bad.to_string(), &limits).is_err(), "{bad}");
        }
    }
}
