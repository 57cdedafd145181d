//! OpenAI's accumulation of streamed chunks into one `chat.completion`, in linear time.
//!
//! Owns: [`Accumulator`], which merges `chat.completion.chunk` objects the way the official
//! SDKs do (`accumulate_delta` in openai-python, `ChatCompletionStream` in openai-node),
//! made robust to the dialects real upstreams speak:
//!
//! * deltas merge per choice `index` (a choice without one takes its position);
//! * strings concatenate (`content`, `refusal`, `reasoning_content`, an audio `transcript`
//!   or `data`...), except identifiers and tags (`id`, `type`, `index`, `name`, `role`,
//!   `object`, `model`, `expires_at`), which are set once;
//! * objects merge field by field; lists of objects with an `index` merge by index, other
//!   lists concatenate (`logprobs.content`, `annotations`);
//! * tool calls merge by `index`, but a delta carrying a new `id` and a function name
//!   starts a new call (the OpenAI-compatible endpoints of Gemini, Ollama and SGLang omit
//!   `index` or repeat `index: 0`; a new id alone, as Poolside sends on every fragment,
//!   continues the call), and `function.name` is never concatenated;
//! * every other field, at every level, is kept (last non-null value wins), so nothing a
//!   provider adds is lost, but for the `content_filter_offsets` of Azure's Asynchronous
//!   Filter annotations, which only a stream has.
//!
//! Every merge appends to the accumulated value in place, and a list merged by `index` keeps
//! an index of its items across chunks ([`Lists`]), so the total work is linear in the size
//! of the stream (up to a logarithm), whatever order an upstream sends indexes in. Does not own limits on how many choices or tool calls an answer
//! may have (the chunk parser and [`ToolCallCount`] enforce those) nor the response shape
//! around the choices (`delivery`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::json::{field, field_mut};
use crate::upstream::chunk_object::{Choice, ChoiceField, ChunkObject, Fields};

/// Fields that identify or tag something: a repeat is the same value again, never a
/// continuation to append.
const SET_ONCE: &[&str] = &[
    "id",
    "type",
    "index",
    "name",
    "role",
    "object",
    "model",
    "expires_at",
    // OpenRouter's `reasoning_details[].format`, repeated on every delta of a detail.
    "format",
];

/// One choice being accumulated.
#[derive(Debug, Default, Clone)]
pub struct ChoiceAcc {
    /// The accumulated `delta`s: the final `message`.
    pub message: Map<String, Value>,
    /// Choice-level fields other than `index`, `delta` and `message` (`finish_reason`,
    /// `logprobs`, `content_filter_results`, ...).
    pub fields: Map<String, Value>,
    tools: ToolCalls,
    /// Indexes of the lists in `message` and `fields` merged by `index`.
    lists: Lists,
}

/// Where each item of a list merged by `index` is, per list, kept across chunks: finding
/// the item a delta's `index` continues then costs a lookup, not a scan of the list (an
/// upstream sending a new index per chunk would otherwise cost quadratic time). A list is
/// named by its path from the map it lives in, as a JSON Pointer under a prefix (`m` for
/// the message, `f` for the choice's fields, `t3` for the fourth tool call). A value that
/// is replaced takes the indexes of the lists under it along.
#[derive(Debug, Default, Clone)]
struct Lists {
    /// Per list, the position of the first item carrying each `index`.
    positions: BTreeMap<String, BTreeMap<u64, usize>>,
    /// Indexes built from a list's items (a list seen for the first time, or again after
    /// it was replaced).
    built: usize,
}

/// One step of a path: a key of the delta being merged, or a position in a list.
#[derive(Clone, Copy)]
enum Step<'d> {
    Key(&'d str),
    Position(usize),
}

/// Where a merge is: the lists' indexes and the path of the value being merged, as steps.
/// The path's text is built only where an index is looked up or dropped: most merges (a
/// `content` string appended) meet no indexed list and build none.
struct At<'l, 'd> {
    lists: &'l mut Lists,
    /// The map the path starts from: `m`, `f` or `t3` (see [`Lists`]).
    root: Root,
    steps: smallvec::SmallVec<[Step<'d>; 8]>,
}

/// The map a path starts from.
#[derive(Clone, Copy)]
enum Root {
    Message,
    ChoiceFields,
    ToolCall(usize),
}

impl<'l, 'd> At<'l, 'd> {
    fn new(lists: &'l mut Lists, root: Root) -> At<'l, 'd> {
        At {
            lists,
            root,
            steps: smallvec::SmallVec::new(),
        }
    }

    /// Runs `f` one step below the current path.
    fn below<R>(&mut self, step: Step<'d>, f: impl FnOnce(&mut Self) -> R) -> R {
        self.steps.push(step);
        let out = f(self);
        self.steps.pop();
        out
    }

    /// The current path as text: a JSON Pointer (keys escaped) under the root's prefix.
    fn path(&self) -> String {
        use std::fmt::Write as _;
        let mut path = match self.root {
            Root::Message => "m".to_string(),
            Root::ChoiceFields => "f".to_string(),
            Root::ToolCall(n) => format!("t{n}"),
        };
        for step in &self.steps {
            path.push('/');
            match step {
                Step::Key(key) => {
                    for c in key.chars() {
                        match c {
                            '~' => path.push_str("~0"),
                            '/' => path.push_str("~1"),
                            c => path.push(c),
                        }
                    }
                }
                Step::Position(p) => {
                    let _ = write!(path, "{p}");
                }
            }
        }
        path
    }

    /// The value at the current path was replaced: the indexes of lists in it are gone.
    fn replaced(&mut self) {
        if self.lists.positions.is_empty() {
            return;
        }
        let path = &self.path();
        let stale: Vec<String> = self
            .lists
            .positions
            .range::<str, _>((
                std::ops::Bound::Included(path.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(path.as_str()))
            .filter(|k| k.len() == path.len() || k[path.len()..].starts_with('/'))
            .cloned()
            .collect();
        for k in stale {
            self.lists.positions.remove(&k);
        }
    }
}

/// Tool calls of one choice, as they are being assembled.
#[derive(Debug, Default, Clone)]
struct ToolCalls {
    calls: Vec<Map<String, Value>>,
    /// The call each upstream `index` currently feeds.
    by_index: BTreeMap<u64, usize>,
    /// Indexes of the lists in the calls merged by `index`.
    lists: Lists,
}

/// Merges chunks into choices.
#[derive(Debug, Default, Clone)]
pub struct Accumulator {
    choices: BTreeMap<u64, ChoiceAcc>,
}

impl Accumulator {
    pub fn new() -> Accumulator {
        Accumulator::default()
    }

    /// Merges the `choices` of one chunk (or of a whole completion: `message` reads as
    /// `delta`).
    pub fn push(&mut self, chunk: &ChunkObject) {
        let Some(choices) = chunk.choices() else {
            return;
        };
        for (position, choice) in choices.iter().enumerate() {
            let index = choice.index().unwrap_or(position as u64);
            let Choice::Object(choice) = choice else {
                continue;
            };
            // A streamed chunk's `delta` is the piece; a `message` beside it is not (it
            // is Perplexity's running copy of the whole message so far, which neither the
            // SDKs nor the stream's client read). A whole completion has only `message`.
            let has_delta = choice
                .iter()
                .any(|(key, value)| key == "delta" && matches!(value, ChoiceField::Delta(_)));
            let acc = self.choices.entry(index).or_default();
            for (key, value) in choice.iter() {
                let value = match value {
                    ChoiceField::Delta(delta) => {
                        if key == "delta" || !has_delta {
                            merge_delta(acc, delta);
                        }
                        continue;
                    }
                    ChoiceField::Json(value) => value,
                };
                match key {
                    // A `delta` or `message` that is not an object adds nothing.
                    "index" | "delta" | "message" => {}
                    // Where an async-filtered Azure stream's annotation applies: no
                    // non-stream answer has it, since Azure filters one whole before sending
                    // it (its verdict, `content_filter_results`, is kept).
                    "content_filter_offsets" => {}
                    // Log probabilities are deltas like the message's: lists concatenate.
                    "logprobs" => {
                        let mut at = At::new(&mut acc.lists, Root::ChoiceFields);
                        merge_field(&mut acc.fields, key, value, &mut at);
                    }
                    // Other choice-level fields are the choice's state, not pieces of it
                    // (`finish_reason`, Azure's `content_filter_results`): latest wins.
                    _ => merge_state(&mut acc.fields, key, value),
                }
            }
        }
    }

    /// The merged text of choice 0.
    pub fn text(&self) -> &str {
        self.choices
            .get(&0)
            .and_then(|c| c.message.get("content"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.choices.is_empty()
    }

    /// The `choices` of the final `chat.completion`, in index order: `index`, `message`
    /// (with `role` first, `content` when the stream had it, even as null, and the
    /// assembled `tool_calls`), then the choice-level fields in the order they first
    /// appeared.
    pub fn choices(&self) -> Vec<Value> {
        self.choices
            .iter()
            .map(|(index, c)| {
                let mut message = Map::new();
                let role = c
                    .message
                    .get("role")
                    .cloned()
                    .unwrap_or_else(|| Value::String("assistant".into()));
                message.insert("role".into(), role);
                // A stream that never had `content` (Gemini's tool calls) answers without.
                if let Some(content) = c.message.get("content") {
                    message.insert("content".into(), content.clone());
                }
                for (k, v) in &c.message {
                    if k != "role" && k != "content" {
                        message.insert(k.clone(), v.clone());
                    }
                }
                if !c.tools.calls.is_empty() {
                    message.insert("tool_calls".into(), Value::Array(c.tools.finished()));
                }
                let mut choice = Map::new();
                choice.insert("index".into(), Value::from(*index));
                choice.insert("message".into(), Value::Object(message));
                for (k, v) in &c.fields {
                    choice.insert(k.clone(), v.clone());
                }
                if !choice.contains_key("finish_reason") {
                    choice.insert("finish_reason".into(), Value::Null);
                }
                Value::Object(choice)
            })
            .collect()
    }
}

fn merge_delta(acc: &mut ChoiceAcc, delta: &Fields<Value>) {
    let mut at = At::new(&mut acc.lists, Root::Message);
    for (key, value) in delta.iter() {
        if key == "tool_calls" {
            if let Value::Array(calls) = value {
                for call in calls {
                    if let Value::Object(call) = call {
                        acc.tools.merge(call);
                    }
                }
            }
            continue;
        }
        merge_field(&mut acc.message, key, value, &mut at);
    }
}

impl ToolCalls {
    /// Which call a tool-call delta feeds: the call its `index` feeds (without an index,
    /// the last call), unless the delta starts a call of its own (`None`): an `id` that
    /// differs from that call's, with a function name. A new id without a name is a
    /// fragment of the same call from a provider that ids every fragment afresh (Poolside,
    /// LiteLLM's OCI handler); every new call names its function.
    fn target(&self, delta: &Map<String, Value>) -> Option<usize> {
        let named = delta
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|name| !name.is_empty());
        let id = delta
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| named && !s.is_empty());
        let current = match delta.get("index").and_then(Value::as_u64) {
            Some(index) => self.by_index.get(&index).copied(),
            None => self.calls.len().checked_sub(1),
        };
        match (current, id) {
            // An empty id is none yet: the id that comes later is the same call's.
            (Some(c), Some(id))
                if self.calls[c]
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|existing| !existing.is_empty() && existing != id) =>
            {
                None
            }
            (current, _) => current,
        }
    }

    fn merge(&mut self, delta: &Map<String, Value>) {
        let target = match self.target(delta) {
            Some(t) => t,
            None => {
                self.calls.push(Map::new());
                self.calls.len() - 1
            }
        };
        if let Some(index) = delta.get("index").and_then(Value::as_u64) {
            self.by_index.insert(index, target);
        }
        let call = &mut self.calls[target];
        let mut at = At::new(&mut self.lists, Root::ToolCall(target));
        for (key, value) in delta {
            // The final message numbers calls by position (see `finished`).
            if key != "index" {
                merge_field(call, key, value, &mut at);
            }
        }
    }

    /// The assembled calls, in order, as a non-stream answer has them: without the
    /// streaming `index` (the position says it), keys in the order they came.
    fn finished(&self) -> Vec<Value> {
        self.calls.iter().cloned().map(Value::Object).collect()
    }
}

/// Merges one field of a delta into `into`, per the rules in the module doc.
fn merge_field<'d>(
    into: &mut Map<String, Value>,
    key: &'d str,
    value: &'d Value,
    at: &mut At<'_, 'd>,
) {
    at.below(Step::Key(key), |at| {
        let Some(existing) = field_mut(into, key) else {
            // A new field (no list under its path has an index yet).
            into.insert(key.to_string(), value.clone());
            return;
        };
        if value.is_null() {
            return;
        }
        if existing.is_null() {
            *existing = value.clone();
            return;
        }
        if SET_ONCE.contains(&key) {
            // Tags of a discriminated union follow the latest delta (as the SDKs do);
            // identifiers and names are the first one's that is not empty (an empty one is
            // none yet, as both SDKs read it).
            let unset = existing.as_str().is_some_and(str::is_empty);
            if matches!(key, "type" | "index" | "format") || unset {
                at.replaced();
                *existing = value.clone();
            }
            return;
        }
        match (existing, value) {
            (Value::String(a), Value::String(b)) => a.push_str(b),
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge_field(a, k, v, at);
                }
            }
            (Value::Array(a), Value::Array(b)) => merge_list(a, b, at),
            // `content` that changes kind between text and a list of parts (Mistral's
            // Magistral: strings, then `thinking` parts, then strings) becomes a list of
            // parts, as the provider's own non-stream answer has it: nothing the stream
            // delivered is lost (the SDKs' accumulator keeps only the first kind).
            (
                existing @ (Value::String(_) | Value::Array(_)),
                value @ (Value::String(_) | Value::Array(_)),
            ) if key == "content" => {
                merge_content_parts(existing, value, at);
            }
            (existing, value) => {
                at.replaced();
                *existing = value.clone();
            }
        }
    })
}

/// Merges `content` of one kind into `content` of the other (text into a list of parts, or
/// parts into text): the result is a list of parts, text as `{"type": "text"}` parts, with
/// consecutive text merged into one part.
fn merge_content_parts<'d>(existing: &mut Value, value: &'d Value, at: &mut At<'_, 'd>) {
    debug_assert!(
        matches!(
            (&*existing, value),
            (Value::String(_), Value::Array(_)) | (Value::Array(_), Value::String(_))
        ),
        "content changes kind"
    );
    if let Value::String(text) = existing {
        *existing = Value::Array(match std::mem::take(text) {
            text if text.is_empty() => Vec::new(),
            text => vec![json!({"type": "text", "text": text})],
        });
    }
    let Value::Array(parts) = existing else {
        unreachable!("content is a list of parts by now");
    };
    match value {
        // Parts that carry an `index` merge by it, as any list's do.
        Value::Array(more) => merge_list(parts, more, at),
        Value::String(text) if text.is_empty() => {}
        Value::String(text) => {
            let last_text = parts
                .last_mut()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .and_then(|p| p.get_mut("text"))
                .and_then(|t| match t {
                    Value::String(t) => Some(t),
                    _ => None,
                });
            match last_text {
                Some(t) => t.push_str(text),
                None => parts.push(json!({"type": "text", "text": text})),
            }
        }
        other => unreachable!("content of kind {other:?}"),
    }
}

/// Merges a choice-level state field: a null changes nothing, nor does an empty
/// `finish_reason` (after a real one, as the SDKs read it: they take a truthy one; other
/// fields' empty strings are values, such as Together's last `text`), objects merge field
/// by field, anything else replaces what was there.
fn merge_state(into: &mut Map<String, Value>, key: &str, value: &Value) {
    let nothing =
        value.is_null() || (key == "finish_reason" && value.as_str().is_some_and(str::is_empty));
    if nothing && field(into, key).is_some() {
        return;
    }
    match (field_mut(into, key), value) {
        (Some(Value::Object(existing)), Value::Object(update)) => {
            for (k, v) in update {
                merge_state(existing, k, v);
            }
        }
        _ => {
            into.insert(key.to_string(), value.clone());
        }
    }
}

/// Lists of objects that carry an `index` merge by index; other lists concatenate.
fn merge_list<'d>(acc: &mut Vec<Value>, delta: &'d [Value], at: &mut At<'_, 'd>) {
    let indexed = |v: &Value| v.get("index").and_then(Value::as_u64);
    // The list's path, built at its first indexed item (merging into an item below
    // comes back to this path).
    let mut path: Option<String> = None;
    for item in delta {
        let (Some(i), Value::Object(obj)) = (indexed(item), item) else {
            acc.push(item.clone());
            continue;
        };
        let path = path.get_or_insert_with(|| at.path());
        let lists = &mut *at.lists;
        let positions = match lists.positions.get_mut(path.as_str()) {
            Some(p) => p,
            None => {
                lists.built += 1;
                let mut first = BTreeMap::new();
                for (p, a) in acc.iter().enumerate() {
                    if let Some(i) = indexed(a) {
                        first.entry(i).or_insert(p);
                    }
                }
                lists.positions.entry(path.clone()).or_insert(first)
            }
        };
        match positions.get(&i) {
            Some(&p) => {
                let Some(Value::Object(target)) = acc.get_mut(p) else {
                    unreachable!("an indexed position holds the object carrying that index");
                };
                at.below(Step::Position(p), |at| {
                    for (k, v) in obj {
                        merge_field(target, k, v, at);
                    }
                });
            }
            None => {
                positions.insert(i, acc.len());
                acc.push(item.clone());
            }
        }
    }
}

/// Counts an answer's tool calls per choice, with the accumulator's rule for when a new
/// call starts, so `max_tool_calls` bounds what an aggregate would hold.
#[derive(Debug, Default, Clone)]
pub struct ToolCallCount {
    per_choice: BTreeMap<u64, ToolCalls>,
}

impl ToolCallCount {
    /// Registers a chunk's tool-call deltas; returns the largest number of calls any choice
    /// now has.
    pub fn push(&mut self, chunk: &ChunkObject) -> usize {
        let Some(choices) = chunk.choices() else {
            return self.max();
        };
        for (position, choice) in choices.iter().enumerate() {
            let index = choice.index().unwrap_or(position as u64);
            let delta = choice.delta().and_then(ChoiceField::object);
            let Some(Value::Array(calls)) = delta.and_then(|d| d.get("tool_calls")) else {
                continue;
            };
            let tools = self.per_choice.entry(index).or_default();
            for call in calls {
                if let Value::Object(call) = call {
                    // Only ids, indexes and whether a name comes matter for counting:
                    // keep no arguments.
                    let mut skeleton = Map::new();
                    for k in ["id", "index"] {
                        if let Some(v) = call.get(k) {
                            skeleton.insert(k.to_string(), v.clone());
                        }
                    }
                    if let Some(name) = call.get("function").and_then(|f| f.get("name")) {
                        skeleton.insert("function".into(), json!({ "name": name }));
                    }
                    tools.merge(&skeleton);
                }
            }
        }
        self.max()
    }

    fn max(&self) -> usize {
        self.per_choice
            .values()
            .map(|t| t.calls.len())
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(chunk: &Value) -> ChunkObject {
        ChunkObject::from_map(chunk.as_object().unwrap().clone())
    }

    fn acc(chunks: &[Value]) -> Accumulator {
        let mut a = Accumulator::new();
        for c in chunks {
            a.push(&object(c));
        }
        a
    }

    fn delta(choice: u64, d: Value) -> Value {
        json!({"choices": [{"index": choice, "delta": d, "finish_reason": null}]})
    }

    #[test]
    fn text_refusal_and_unknown_fields_concatenate_or_survive() {
        let a = acc(&[
            delta(0, json!({"role": "assistant", "content": ""})),
            delta(0, json!({"content": "Hel", "reasoning_content": "think"})),
            delta(
                0,
                json!({"content": "lo", "reasoning_content": "ing", "x_provider": 1}),
            ),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": null}]}),
        ]);
        assert_eq!(
            Value::Array(a.choices()),
            json!([{"index": 0, "message": {"role": "assistant", "content": "Hello",
                "reasoning_content": "thinking", "x_provider": 1},
                "finish_reason": "stop", "logprobs": null}])
        );
    }

    /// OpenRouter repeats each reasoning detail's `format` on every delta of it: a tag, as
    /// `type` is. Joined, the answer's `format` was `anthropic-claude-v1anthropic-claude-v1…`,
    /// and a client that sends the signed reasoning back (Claude and Gemini tool use) reads
    /// the format to decide whether it may.
    #[test]
    fn a_reasoning_details_format_is_a_tag_not_text() {
        let detail = |fields: Value| {
            let mut d =
                json!({"type": "reasoning.text", "format": "anthropic-claude-v1", "index": 0});
            d.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            delta(0, json!({"content": "", "reasoning_details": [d]}))
        };
        let a = acc(&[
            detail(json!({"text": "The user "})),
            detail(json!({"text": "wants"})),
            detail(json!({"signature": "sig"})),
        ]);
        assert_eq!(
            a.choices()[0]["message"]["reasoning_details"],
            json!([{"type": "reasoning.text", "format": "anthropic-claude-v1", "index": 0,
                "text": "The user wants", "signature": "sig"}])
        );
    }

    /// Magistral's `content`: text, then lists of `thinking` parts, then text again. The
    /// answer is a list of parts with nothing lost, consecutive text in one part.
    #[test]
    fn content_that_changes_kind_becomes_a_list_of_parts() {
        let thinking =
            |t: &str| json!([{"type": "thinking", "thinking": [{"type": "text", "text": t}]}]);
        let a = acc(&[
            delta(0, json!({"role": "assistant", "content": ""})),
            delta(0, json!({"content": thinking("a")})),
            delta(0, json!({"content": thinking("b")})),
            delta(0, json!({"content": "Hel"})),
            delta(0, json!({"content": "lo"})),
        ]);
        assert_eq!(
            a.choices()[0]["message"]["content"],
            json!([
                {"type": "thinking", "thinking": [{"type": "text", "text": "a"}]},
                {"type": "thinking", "thinking": [{"type": "text", "text": "b"}]},
                {"type": "text", "text": "Hello"},
            ])
        );
        // Text first, then parts: the text becomes the first part.
        let a = acc(&[
            delta(0, json!({"content": "Hi"})),
            delta(0, json!({"content": [{"type": "text", "text": "!"}]})),
        ]);
        assert_eq!(
            a.choices()[0]["message"]["content"],
            json!([{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}])
        );
    }

    /// Perplexity puts the message so far beside each chunk's `delta`: only the delta is a
    /// piece of the answer.
    #[test]
    fn a_message_beside_a_delta_is_not_merged() {
        let a = acc(&[
            json!({"choices": [{"index": 0, "message": {"content": "He"}, "delta": {"content": "He"}}]}),
            json!({"choices": [{"index": 0, "message": {"content": "Hello"}, "delta": {"content": "llo"}}]}),
        ]);
        assert_eq!(a.text(), "Hello");
        // A whole completion has only `message`.
        let a = acc(&[json!({"choices": [{"index": 0, "message": {"content": "Hello"}}]})]);
        assert_eq!(a.text(), "Hello");
    }

    #[test]
    fn interleaved_choices_stay_apart() {
        let a = acc(&[
            delta(1, json!({"role": "assistant", "content": "B"})),
            delta(0, json!({"role": "assistant", "content": "A"})),
            delta(1, json!({"content": "b"})),
            delta(0, json!({"content": "a"})),
        ]);
        let c = a.choices();
        assert_eq!(c[0]["message"]["content"], "Aa");
        assert_eq!(c[1]["message"]["content"], "Bb");
        assert_eq!(c[1]["index"], 1);
    }

    #[test]
    fn indexed_tool_calls_merge_and_names_are_never_concatenated() {
        let a = acc(&[
            delta(
                0,
                json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            ),
            delta(
                0,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            ),
            delta(
                0,
                json!({"tool_calls": [{"index": 1, "id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}),
            ),
            delta(
                0,
                json!({"tool_calls": [{"index": 0, "function": {"name": "get_weather", "arguments": "\"Oslo\"}"}}]}),
            ),
        ]);
        let calls = &a.choices()[0]["message"]["tool_calls"];
        assert_eq!(
            calls,
            &json!([
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ])
        );
        assert_eq!(a.choices()[0]["message"]["content"], Value::Null);
    }

    /// An empty `id` or function `name` is no id or name yet: the one that comes later is
    /// the call's, as both SDKs take it (Python joins `""` and the id; node takes a truthy
    /// one). It was kept, and the later id with a name started a second call. Nor does an
    /// empty `finish_reason` undo a real one, which the SDKs keep (they take a truthy one).
    #[test]
    fn an_empty_id_name_or_finish_reason_is_none_yet() {
        let mut a = acc(&[
            delta(
                0,
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "", "type": "function", "function": {"name": "", "arguments": ""}}]}),
            ),
            delta(
                0,
                json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": "{}"}}]}),
            ),
        ]);
        assert_eq!(
            a.choices()[0]["message"]["tool_calls"],
            json!([{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}])
        );
        a.push(&object(
            &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ));
        a.push(&object(
            &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": ""}], "usage": {"total_tokens": 3}}),
        ));
        assert_eq!(a.choices()[0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn a_new_id_starts_a_new_call_without_or_with_a_repeated_index() {
        // Gemini/Ollama: every call arrives whole at index 0, or with no index at all.
        for with_index in [true, false] {
            let call = |id: &str, name: &str, args: &str| {
                let mut c = json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}});
                if with_index {
                    c["index"] = json!(0);
                }
                delta(0, json!({"tool_calls": [c]}))
            };
            let a = acc(&[
                call("a", "get_weather", "{\"city\":\"Oslo\"}"),
                call("b", "get_weather", "{\"city\":\"Rome\"}"),
            ]);
            let calls = a.choices()[0]["message"]["tool_calls"].clone();
            assert_eq!(calls.as_array().unwrap().len(), 2, "{calls}");
            assert_eq!(calls[1]["function"]["name"], "get_weather");
            assert_eq!(calls[1]["function"]["arguments"], "{\"city\":\"Rome\"}");
            assert!(
                calls[1].get("index").is_none(),
                "a non-stream answer's calls carry no streaming index: {calls}"
            );
        }
    }

    /// Poolside's API, mlx-openai-server before its PR 216 and LiteLLM's OCI handler give
    /// every fragment of one call a fresh `id`: a new id without a function name continues
    /// the call, as both SDKs merge it (by `index`), and the call keeps its first id.
    #[test]
    fn a_new_id_without_a_function_name_continues_the_call() {
        let fragment = |id: &str, function: Value| {
            delta(
                0,
                json!({"tool_calls": [{"index": 0, "id": id, "function": function}]}),
            )
        };
        let a = acc(&[
            fragment("call_A", json!({"name": "get_weather", "arguments": ""})),
            fragment("call_B", json!({"arguments": "{\"city\":"})),
            fragment("call_C", json!({"name": "", "arguments": "\"Oslo\"}"})),
        ]);
        let calls = a.choices()[0]["message"]["tool_calls"].clone();
        assert_eq!(calls.as_array().unwrap().len(), 1, "{calls}");
        assert_eq!(calls[0]["id"], "call_A");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        // And counted so: 200 fragments are one call, not 200 against `max_tool_calls`.
        let mut n = ToolCallCount::default();
        for k in 0..200 {
            let f = if k == 0 {
                json!({"name": "f", "arguments": ""})
            } else {
                json!({"arguments": "x"})
            };
            assert_eq!(n.push(&object(&fragment(&format!("id{k}"), f))), 1);
        }
    }

    #[test]
    fn choice_state_is_the_latest_never_concatenated() {
        // Azure: every content chunk repeats the filter results; the finish chunk has `{}`.
        let safe = json!({"hate": {"filtered": false, "severity": "safe"}});
        let a = acc(&[
            json!({"choices": [{"index": 0, "delta": {"content": "a"}, "content_filter_results": {}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "b"}, "content_filter_results": safe}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "c"}, "content_filter_results": safe}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "content_filter_results": {}}]}),
        ]);
        let c = &a.choices()[0];
        assert_eq!(c["content_filter_results"], safe);
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(c["message"]["content"], "abc");
    }

    #[test]
    fn azure_async_filter_offsets_are_left_out_and_its_verdicts_kept() {
        // Azure's Asynchronous Filter: annotations without a `delta`, one after the finish.
        let safe = json!({"hate": {"filtered": false, "severity": "safe"}});
        let offsets =
            |check: u64| json!({"check_offset": check, "start_offset": 8, "end_offset": 20});
        let a = acc(&[
            delta(0, json!({"content": "ab"})),
            json!({"choices": [{"content_filter_offsets": offsets(8), "content_filter_results": safe, "finish_reason": null, "index": 0}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            json!({"choices": [{"content_filter_offsets": offsets(20), "content_filter_results": safe, "finish_reason": null, "index": 0}]}),
        ]);
        let c = &a.choices()[0];
        assert_eq!(c["content_filter_results"], safe);
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(c["message"]["content"], "ab");
        assert!(c.get("content_filter_offsets").is_none(), "{c}");
    }

    #[test]
    fn logprobs_and_annotations_lists_concatenate() {
        let a = acc(&[
            json!({"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"token": "a", "logprob": -0.1}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "b", "annotations": [{"type": "url_citation"}]}, "logprobs": {"content": [{"token": "b", "logprob": -0.2}]}}]}),
        ]);
        let c = &a.choices()[0];
        assert_eq!(c["logprobs"]["content"].as_array().unwrap().len(), 2);
        assert_eq!(c["message"]["annotations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn audio_transcript_and_data_concatenate_but_its_id_is_set_once() {
        let a = acc(&[
            delta(
                0,
                json!({"audio": {"id": "au_1", "transcript": "Hi", "data": "AAA"}}),
            ),
            delta(
                0,
                json!({"audio": {"id": "au_1", "transcript": " there", "data": "BBB", "expires_at": 5}}),
            ),
        ]);
        assert_eq!(
            a.choices()[0]["message"]["audio"],
            json!({"id": "au_1", "transcript": "Hi there", "data": "AAABBB", "expires_at": 5})
        );
    }

    #[test]
    fn accumulation_is_linear() {
        // 100k fragments of one call's arguments: each merge appends in place.
        let mut a = Accumulator::new();
        let first = delta(
            0,
            json!({"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
        );
        a.push(&object(&first));
        let frag = object(&delta(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "x"}}]}),
        ));
        for _ in 0..100_000 {
            a.push(&frag);
        }
        let args = a.choices()[0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap()
            .len();
        assert_eq!(args, 100_000);
    }

    #[test]
    fn counting_follows_the_same_rule() {
        let mut n = ToolCallCount::default();
        let call = |id: &str| json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": id, "function": {"name": "f"}}]}}]});
        assert_eq!(n.push(&object(&call("a"))), 1);
        assert_eq!(n.push(&object(&call("a"))), 1);
        assert_eq!(n.push(&object(&call("b"))), 2);
    }

    #[test]
    fn a_list_merged_by_index_is_indexed_once_however_its_items_come() {
        // A new index per chunk, in an order no scan could shortcut: with a scan per item
        // this is quadratic; with the kept index, one build.
        let mut a = Accumulator::new();
        let n = 20_000u64;
        for k in 0..n {
            let i = (k * 7_919) % n;
            a.push(&object(&delta(0, json!({"x": [{"index": i, "v": "a"}]}))));
        }
        a.push(&object(&delta(0, json!({"x": [{"index": 5, "v": "b"}]}))));
        let acc = &a.choices[&0];
        assert_eq!(acc.lists.built, 1, "the list's index was built once");
        let x = acc.message["x"].as_array().unwrap();
        assert_eq!(x.len(), n as usize);
        assert_eq!(x.iter().find(|v| v["index"] == 5).unwrap()["v"], "ab");
    }

    #[test]
    fn lists_whose_paths_would_read_alike_keep_their_own_indexes() {
        // `x/y` and `x` then `y`: one path unless the key's `/` is escaped.
        let deltas = [
            json!({"x/y": [{"index": 0, "v": "a"}], "x": {"y": [{"index": 1, "v": "b"}]}}),
            json!({"x/y": [{"index": 1, "v": "c"}], "x": {"y": [{"index": 0, "v": "d"}]}}),
        ];
        let (mut ours, mut theirs, mut lists) = (Map::new(), Map::new(), Lists::default());
        for d in &deltas {
            let mut at = At::new(&mut lists, Root::Message);
            merge_field(&mut ours, "p", d, &mut at);
            reference::merge_field(&mut theirs, "p", d);
        }
        assert_eq!(ours, theirs);
        assert_eq!(ours["p"]["x"]["y"].as_array().unwrap().len(), 2);
    }

    /// The merge as it was before lists kept an index: a scan of the list per item.
    mod reference {
        use super::super::SET_ONCE;
        use serde_json::{Map, Value};

        pub fn merge_field(into: &mut Map<String, Value>, key: &str, value: &Value) {
            let Some(existing) = into.get_mut(key) else {
                into.insert(key.to_string(), value.clone());
                return;
            };
            if value.is_null() {
                return;
            }
            if existing.is_null() {
                *existing = value.clone();
                return;
            }
            if SET_ONCE.contains(&key) {
                if key == "type" || key == "index" {
                    *existing = value.clone();
                }
                return;
            }
            match (existing, value) {
                (Value::String(a), Value::String(b)) => a.push_str(b),
                (Value::Object(a), Value::Object(b)) => {
                    for (k, v) in b {
                        merge_field(a, k, v);
                    }
                }
                (Value::Array(a), Value::Array(b)) => {
                    let indexed = |v: &Value| v.get("index").and_then(Value::as_u64);
                    for item in b {
                        match (indexed(item), item) {
                            (Some(i), Value::Object(obj)) => {
                                match a.iter_mut().find(|x| indexed(x) == Some(i)) {
                                    Some(Value::Object(target)) => {
                                        for (k, v) in obj {
                                            merge_field(target, k, v);
                                        }
                                    }
                                    _ => a.push(item.clone()),
                                }
                            }
                            _ => a.push(item.clone()),
                        }
                    }
                }
                (existing, value) => *existing = value.clone(),
            }
        }
    }

    /// Values whose merges exercise every rule: strings, nulls, numbers, objects, lists of
    /// indexed objects (repeated and new indexes, nested lists) and of anything else, keys
    /// that are tags or need escaping in a path.
    fn merge_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            "[ab]{0,2}".prop_map(Value::from),
            (0u64..3).prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 4, |inner| {
            let key = prop_oneof![
                Just("a".to_string()),
                Just("b".to_string()),
                Just("type".to_string()),
                Just("x/y".to_string()),
                Just("x".to_string()),
                Just("y".to_string()),
                Just("~".to_string()),
                Just("0".to_string()),
            ];
            let object = prop::collection::vec((key, inner.clone()), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect()));
            let indexed = (
                (0u64..4),
                prop::collection::vec(("[ab]", inner.clone()), 0..3),
            )
                .prop_map(|(i, entries)| {
                    let mut m: Map<String, Value> = entries.into_iter().collect();
                    m.insert("index".into(), Value::from(i));
                    Value::Object(m)
                });
            prop_oneof![
                object,
                prop::collection::vec(prop_oneof![3 => indexed, 1 => inner], 0..4)
                    .prop_map(Value::Array),
            ]
        })
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn merging_with_kept_indexes_is_merging_by_scan(
            deltas in prop::collection::vec(
                prop::collection::vec((prop_oneof![Just("p"), Just("q")], merge_value()), 1..3),
                1..10,
            )
        ) {
            let mut ours = Map::new();
            let mut theirs = Map::new();
            let mut lists = Lists::default();
            for delta in &deltas {
                let mut at = At::new(&mut lists, Root::Message);
                for (key, value) in delta {
                    merge_field(&mut ours, key, value, &mut at);
                    reference::merge_field(&mut theirs, key, value);
                }
            }
            prop_assert_eq!(
                serde_json::to_string(&ours).unwrap(),
                serde_json::to_string(&theirs).unwrap()
            );
        }
    }
}
