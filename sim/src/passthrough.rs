//! Wire fidelity and secrecy, judged on what a client received.
//!
//! Owns: the `passthrough` expectation (a stream reaches the client chunk for chunk as the
//! serving provider sent it, a non-stream answer equals that provider's own non-stream
//! answer, the provider's allow-listed headers arrive unchanged), each modulo exactly the
//! fields the README says Switchback sets, applied here the same way to what the provider
//! sent; and the global secrecy invariant (no deployment `api_key` in any byte a client
//! receives). Does not own reading a run into stories (`oracle`).

use serde_json::{Map, Value};
use switchback::catalog::Catalog;

use crate::client::ClientResult;
use crate::fake::CallRecord;

/// Upstream headers Switchback forwards (README, "Response headers"): names, and a name
/// ending in `-` is a prefix. The oracle's own copy of the README's list, not the engine's.
pub const FORWARDED: &[&str] = &["x-request-id", "x-ratelimit-", "openai-processing-ms"];

/// Shortest run of a key's characters that counts as leaking it.
pub const SECRET_WINDOW: usize = 16;

/// Checks that `client` got what `call` (the serving provider call) gave, modulo the fields
/// Switchback sets. `stream`: the client's mode; `include_usage`: whether the client asked
/// for `stream_options.include_usage`.
pub fn check(
    client: &ClientResult,
    call: Option<&CallRecord>,
    stream: bool,
    include_usage: bool,
    fail: &mut dyn FnMut(String),
) {
    let mut fail = |m: String| fail(format!("passthrough: {m}"));
    if !client.succeeded() {
        fail("the request did not succeed, so nothing was passed through".into());
        return;
    }
    let Some(call) = call else {
        fail("no provider call served this answer".into());
        return;
    };
    if call.continuation.is_some() {
        fail("the answer was continued after a failure, not passed through".into());
        return;
    }
    if call.flooded {
        fail("the serving answer carried a flood, whose items are not recorded".into());
        return;
    }
    for (name, value) in &call.headers {
        let lower = name.to_ascii_lowercase();
        let listed = FORWARDED
            .iter()
            .any(|f| *f == lower || (f.ends_with('-') && lower.starts_with(f)));
        if listed {
            let got = client.response_headers.get(&lower);
            if got != Some(value) {
                fail(format!(
                    "header `{lower}`: the provider sent {value:?}, the client got {got:?}"
                ));
            }
        }
    }
    let response_id = expected_id(call);
    if stream {
        check_stream(
            client,
            call,
            include_usage,
            response_id.as_deref(),
            &mut fail,
        );
    } else {
        check_whole(client, call, response_id.as_deref(), &mut fail);
    }
}

/// The response id Switchback must use: the first non-empty `id` the provider gave
/// (`None`: it gave none, and a generated `chatcmpl-` id is due).
fn expected_id(call: &CallRecord) -> Option<String> {
    call.sent.iter().find_map(|p| {
        serde_json::from_str::<Value>(p)
            .ok()?
            .get("id")?
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    })
}

fn check_id(got: Option<&str>, want: Option<&str>, fail: &mut dyn FnMut(String)) {
    match (got, want) {
        (Some(g), Some(w)) if g == w => {}
        (Some(g), None) if is_generated_id(g) => {}
        (g, Some(w)) => fail(format!("id: the provider's is {w:?}, the client got {g:?}")),
        (g, None) => fail(format!(
            "id: the provider gave none, so a generated `chatcmpl-` id is due, the client got {g:?}"
        )),
    }
}

fn is_generated_id(id: &str) -> bool {
    id.strip_prefix("chatcmpl-")
        .is_some_and(|hex| hex.len() == 24 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check_stream(
    client: &ClientResult,
    call: &CallRecord,
    include_usage: bool,
    response_id: Option<&str>,
    fail: &mut dyn FnMut(String),
) {
    let got: Vec<Map<String, Value>> = match client
        .chunks
        .iter()
        .map(|c| serde_json::from_str::<Map<String, Value>>(&c.raw))
        .collect()
    {
        Ok(v) => v,
        Err(e) => return fail(format!("a chunk the client got is not a JSON object: {e}")),
    };
    let first_id = got
        .first()
        .and_then(|c| c.get("id"))
        .and_then(Value::as_str);
    check_id(first_id, response_id, fail);
    if got
        .iter()
        .any(|c| c.get("id").and_then(Value::as_str) != first_id)
    {
        fail("id: the chunks do not all carry the same id".into());
    }
    if call.answered_json {
        // The provider answered with one JSON body: the stream must add up to it.
        let Some(own) = call.own_answer.as_deref() else {
            return fail("the provider's own answer is not recorded".into());
        };
        let mut want: Value = serde_json::from_str(own).expect("the fake writes JSON");
        let mut got = reassemble(&got);
        if !include_usage {
            // A stream carries usage only for a client that asked for it; but a usage
            // reported inside a choice (Kimi) is read as the chunk's own and put at its top,
            // as in a streamed answer (below).
            if let Some(o) = want.as_object_mut() {
                o.shift_remove("usage");
                let inside = o
                    .get("choices")
                    .and_then(Value::as_array)
                    .and_then(|choices| {
                        choices
                            .iter()
                            .find_map(|c| c.get("usage").filter(|u| u.is_object()))
                    })
                    .cloned();
                if let Some(usage) = inside {
                    o.insert("usage".into(), usage);
                }
            }
        }
        normalise_id(&mut want);
        normalise_id(&mut got);
        index_tool_calls(&mut want);
        if let Some(d) = first_difference(&want, &got, "") {
            fail(format!(
                "the stream does not add up to the provider's JSON answer: {d}"
            ));
        }
        return;
    }
    let mut want = Vec::new();
    let mut roles = std::collections::BTreeSet::new();
    let mut spoken = std::collections::BTreeSet::new();
    let mut named: Option<Value> = None;
    for payload in &call.sent {
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(payload) else {
            continue; // [DONE]
        };
        // An error event: `{"error": ...}`, or llama.cpp's bare error object (its `error:`
        // field), neither `choices` nor `usage`, or a chunk whose finish reason says the
        // answer failed (vLLM's `abort`).
        if chunk.contains_key("error")
            || !(chunk.contains_key("choices") || chunk.contains_key("usage"))
            || failed_finish(&chunk)
        {
            continue;
        }
        let usage_only = chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
            && chunk.get("usage").is_some_and(|u| !u.is_null());
        if usage_only && !include_usage {
            continue;
        }
        // Switchback's documented changes, applied to what the provider sent: an empty
        // `model` after a real one is that one (a chunk with none is stamped with the
        // model the call was asked for, which then counts as named).
        match chunk.get("model") {
            Some(Value::String(m)) if m.is_empty() => {
                if let Some(real) = &named {
                    chunk.insert("model".into(), real.clone());
                }
            }
            Some(real @ Value::String(_)) => named = Some(real.clone()),
            None => named = Some(Value::String(call.model.clone())),
            Some(_) => {}
        }
        let mut restated = false;
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            let mut speaking = Vec::new();
            for (position, c) in choices.iter_mut().enumerate() {
                let index = c
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                if let Some(Value::Object(delta)) = c.get_mut("delta") {
                    speaking.push(index);
                    if delta.contains_key("role") && !roles.insert(index) {
                        delta.shift_remove("role");
                    }
                } else if spoken.contains(&index) && c.get("message").is_some_and(Value::is_object)
                {
                    // A `message` alone after the choice's deltas restates them: it
                    // arrives as an empty `delta` in its place, its `logprobs` as `null`.
                    // (A `delta` there that is not an object gives way to it.)
                    if let Value::Object(fields) = c {
                        fields.shift_remove("delta");
                        if let Some(logprobs) = fields.get_mut("logprobs") {
                            *logprobs = Value::Null;
                        }
                        *fields = std::mem::take(fields)
                            .into_iter()
                            .map(|(k, v)| match k.as_str() {
                                "message" => ("delta".to_string(), Value::Object(Map::new())),
                                _ => (k, v),
                            })
                            .collect();
                    }
                    restated = true;
                }
            }
            spoken.extend(speaking);
        }
        if restated && chunk.get("object").and_then(Value::as_str) == Some("chat.completion") {
            chunk.insert(
                "object".into(),
                Value::String("chat.completion.chunk".into()),
            );
        }
        // A usage reported inside a choice (Kimi) or under `x_groq`, in a chunk with none
        // of its own, is put at the top too (in the place of a `usage: null`, or last).
        if chunk.get("usage").is_none_or(Value::is_null) {
            let elsewhere = chunk
                .get("choices")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find_map(|c| c.get("usage").filter(|u| u.is_object()))
                })
                .or_else(|| chunk.get("x_groq")?.get("usage").filter(|u| u.is_object()))
                .cloned();
            if let Some(usage) = elsewhere {
                chunk.insert("usage".into(), usage);
            }
        }
        want.push(chunk);
    }
    let several_choices = belied_finishes(&mut want);
    if want.len() != got.len() {
        fail(format!(
            "the provider sent {} chunk(s), the client got {}",
            want.len(),
            got.len()
        ));
    }
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let mut w = w.clone();
        let mut g = g.clone();
        g.shift_remove("switchback");
        if several_choices {
            for c in [&mut w, &mut g] {
                without_finish_reasons(c);
            }
        }
        if !w.contains_key("model") {
            g.shift_remove("model");
        }
        for c in [&mut w, &mut g] {
            if let Some(id) = c.get_mut("id") {
                *id = Value::String("<id>".into());
            }
        }
        let (ws, gs) = (Value::Object(w).to_string(), Value::Object(g).to_string());
        if ws != gs {
            fail(format!(
                "chunk {i} differs (key order included):\n      provider: {}\n      client:   {}",
                clip(&ws),
                clip(&gs)
            ));
            return;
        }
    }
}

/// Switchback's change to a provider that puts a finish reason on every chunk (Open WebUI,
/// Gemini relays): a finish reason that the choice's later output belies is `null` for the
/// client. Applied to `want`, for an answer of one choice; with several, where the gateway
/// holds only what may be the answer's end, which finishes reach the client depends on how
/// the choices interleave, and `true` says to compare without finish reasons (the last one
/// of each choice is judged with the modes' endings).
fn belied_finishes(want: &mut [Map<String, Value>]) -> bool {
    let choices_of = |chunk: &Map<String, Value>| -> Vec<(u64, bool)> {
        let Some(Value::Array(choices)) = chunk.get("choices") else {
            return Vec::new();
        };
        choices
            .iter()
            .enumerate()
            .map(|(place, c)| {
                let index = c
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(place as u64);
                (index, gives_output(c))
            })
            .collect()
    };
    let indexes: std::collections::BTreeSet<u64> = want
        .iter()
        .flat_map(|c| choices_of(c).into_iter().map(|(i, _)| i))
        .collect();
    let mut output_later = std::collections::BTreeSet::new();
    let mut belied = false;
    for chunk in want.iter_mut().rev() {
        let choices = choices_of(chunk);
        if let Some(Value::Array(cs)) = chunk.get_mut("choices") {
            for (c, (index, _)) in cs.iter_mut().zip(&choices) {
                let finish = c.get("finish_reason").and_then(Value::as_str);
                if finish.is_some_and(|f| !f.is_empty()) && output_later.contains(index) {
                    belied = true;
                    if indexes.len() == 1 {
                        c["finish_reason"] = Value::Null;
                    }
                }
            }
        }
        output_later.extend(choices.iter().filter(|(_, o)| *o).map(|(i, _)| *i));
    }
    belied && indexes.len() > 1
}

/// Whether a streamed choice gives a piece of the answer: a `delta` member other than a
/// label (`role`, MiniMax's `name`, Together's `token_id`) that is not empty (the README's
/// rule, in the harness's own words).
pub fn gives_output(choice: &Value) -> bool {
    choice
        .get("delta")
        .and_then(Value::as_object)
        .is_some_and(|d| {
            d.iter().any(|(k, v)| {
                !matches!(k.as_str(), "role" | "name" | "token_id")
                    && match v {
                        Value::Null => false,
                        Value::String(s) => !s.is_empty(),
                        Value::Array(a) => !a.is_empty(),
                        Value::Object(o) => !o.is_empty(),
                        _ => true,
                    }
            })
        })
}

/// Whether a choice of `chunk` ends with a finish reason that says the answer failed (the
/// README's list: vLLM's `abort`, `error`, DeepSeek's `insufficient_system_resource`,
/// Zhipu's `network_error`) or carries an `error` of its own.
fn failed_finish(chunk: &Map<String, Value>) -> bool {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("finish_reason")
                .and_then(Value::as_str)
                .is_some_and(is_failure_finish)
                || c.get("error").is_some_and(|e| !e.is_null())
        })
}

/// Whether a finish reason says the answer failed (the README's list).
pub fn is_failure_finish(reason: &str) -> bool {
    matches!(
        reason,
        "abort" | "error" | "insufficient_system_resource" | "network_error"
    )
}

/// `chunk` with its choices' finish reasons set to null.
fn without_finish_reasons(chunk: &mut Map<String, Value>) {
    if let Some(Value::Array(cs)) = chunk.get_mut("choices") {
        for c in cs {
            if let Some(f) = c.get_mut("finish_reason") {
                *f = Value::Null;
            }
        }
    }
}

fn check_whole(
    client: &ClientResult,
    call: &CallRecord,
    response_id: Option<&str>,
    fail: &mut dyn FnMut(String),
) {
    let Some(body) = client.body.as_deref() else {
        return fail("the client recorded no body".into());
    };
    let Some(own) = call.own_answer.as_deref() else {
        if call.own_answer_unstated {
            // The modes' answers are still compared with each other (`oracle`).
            return;
        }
        return fail("the provider's own answer is not recorded".into());
    };
    let mut got: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return fail(format!("the body is not JSON: {e}")),
    };
    let mut want: Value = serde_json::from_str(own).expect("the fake writes JSON");
    // A provider that answered with JSON gave its own id in it.
    let response_id = if call.answered_json {
        want.get("id").and_then(Value::as_str).map(str::to_string)
    } else {
        response_id.map(str::to_string)
    };
    check_id(
        got.get("id").and_then(Value::as_str),
        response_id.as_deref(),
        fail,
    );
    normalise_id(&mut got);
    normalise_id(&mut want);
    if call.answered_json {
        // The README promises these bytes as they came (but for the id).
        let (want, got) = (want.to_string(), got.to_string());
        if got != want {
            fail(format!(
                "the provider answered with JSON, which must reach the client byte for byte:\n      provider: {}\n      client:   {}",
                clip(&want),
                clip(&got)
            ));
        }
        return;
    }
    if let Some(d) = first_difference(&want, &got, "") {
        fail(format!(
            "the answer differs from the provider's own non-stream answer: {d}"
        ));
    }
}

fn normalise_id(v: &mut Value) {
    if let Some(id) = v.get_mut("id") {
        *id = Value::String("<id>".into());
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 600;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Where two JSON values first differ (keys in any order), as `path: want ..., got ...`.
pub fn first_difference(want: &Value, got: &Value, path: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    None => {
                        return Some(format!(
                            "{p}: the provider has {}, the client has no such field",
                            clip(&wv.to_string())
                        ));
                    }
                    Some(gv) => {
                        if let Some(d) = first_difference(wv, gv, &p) {
                            return Some(d);
                        }
                    }
                }
            }
            g.iter().find(|(k, _)| !w.contains_key(*k)).map(|(k, gv)| {
                format!(
                    "{path}.{k}: the client has {}, the provider has no such field",
                    clip(&gv.to_string())
                )
            })
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                if let Some(d) = first_difference(wv, gv, &format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (w.len() != g.len()).then(|| {
                format!(
                    "{path}: the provider has {} item(s), the client {}",
                    w.len(),
                    g.len()
                )
            })
        }
        (w, g) if w == g => None,
        (w, g) => Some(format!(
            "{path}: the provider has {}, the client {}",
            clip(&w.to_string()),
            clip(&g.to_string())
        )),
    }
}

/// Switchback's documented change to a JSON answer re-chunked for a stream: each tool call
/// without an `index` gets its place, first (a delta's tool calls must carry one).
fn index_tool_calls(answer: &mut Value) {
    let Some(Value::Array(choices)) = answer.get_mut("choices") else {
        return;
    };
    for choice in choices {
        let Some(Value::Array(calls)) = choice.pointer_mut("/message/tool_calls") else {
            continue;
        };
        for (place, call) in calls.iter_mut().enumerate() {
            if let Value::Object(fields) = call {
                if !fields.contains_key("index") {
                    let mut indexed = Map::new();
                    indexed.insert("index".into(), Value::from(place));
                    indexed.extend(std::mem::take(fields));
                    *fields = indexed;
                }
            }
        }
    }
}

/// A client's stream added up into one `chat.completion` by OpenAI's accumulation (per
/// choice index; strings concatenate; tool calls merge by `index`, a new `id` with a function
/// name starting a new call; other lists concatenate; the rest keeps its latest non-null value). Written apart
/// from the engine's own accumulation, so that one is not judged by itself.
pub fn reassemble(chunks: &[Map<String, Value>]) -> Value {
    let mut top = Map::new();
    // Per choice index: its message so far, and its other fields.
    type Choice = (Map<String, Value>, Map<String, Value>);
    let mut choices: std::collections::BTreeMap<u64, Choice> = Default::default();
    for chunk in chunks {
        for (k, v) in chunk {
            match k.as_str() {
                "choices" => {
                    for (position, c) in v.as_array().into_iter().flatten().enumerate() {
                        let index = c
                            .get("index")
                            .and_then(Value::as_u64)
                            .unwrap_or(position as u64);
                        let (message, fields) = choices.entry(index).or_default();
                        for (ck, cv) in c.as_object().into_iter().flatten() {
                            match ck.as_str() {
                                "index" => {}
                                "delta" | "message" => {
                                    for (dk, dv) in cv.as_object().into_iter().flatten() {
                                        accumulate(message, dk, dv);
                                    }
                                }
                                _ => accumulate(fields, ck, cv),
                            }
                        }
                    }
                }
                "object" | "switchback" => {}
                _ if v.is_null() && top.contains_key(k) => {}
                _ => {
                    top.insert(k.clone(), v.clone());
                }
            }
        }
    }
    top.insert("object".into(), Value::String("chat.completion".into()));
    let list = choices
        .into_iter()
        .map(|(index, (message, fields))| {
            let mut c = Map::new();
            c.insert("index".into(), Value::from(index));
            c.insert("message".into(), Value::Object(message));
            c.extend(fields);
            Value::Object(c)
        })
        .collect();
    top.insert("choices".into(), Value::Array(list));
    Value::Object(top)
}

fn accumulate(into: &mut Map<String, Value>, key: &str, value: &Value) {
    let Some(existing) = into.get_mut(key) else {
        into.insert(key.to_string(), value.clone());
        return;
    };
    match (existing, value) {
        (_, Value::Null) => {}
        (e @ Value::Null, v) => *e = v.clone(),
        (Value::String(a), Value::String(b)) => {
            // An empty id or name is none yet: the first one that is not is the answer's.
            if !matches!(key, "id" | "type" | "name" | "role" | "object" | "model") {
                a.push_str(b);
            } else if a.is_empty() {
                a.clone_from(b);
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                accumulate(a, k, v);
            }
        }
        (Value::Array(a), Value::Array(b)) if key == "tool_calls" => {
            for call in b {
                let index = call.get("index").and_then(Value::as_u64);
                // A new id starts a call only with the function's name: a fresh id on
                // every fragment (Poolside) is one call, as both SDKs merge it by index.
                let named = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| named && !s.is_empty());
                let target = a.iter_mut().rev().find(|c| {
                    let same_index =
                        index.is_none_or(|i| c.get("index").and_then(Value::as_u64) == Some(i));
                    // A call with no id yet (or an empty one) is the same call.
                    let same_id = id.is_none_or(|i| {
                        c.get("id")
                            .and_then(Value::as_str)
                            .is_none_or(|e| e.is_empty() || e == i)
                    });
                    same_index && same_id
                });
                match (target, call) {
                    (Some(Value::Object(t)), Value::Object(c)) => {
                        for (k, v) in c {
                            accumulate(t, k, v);
                        }
                    }
                    _ => a.push(call.clone()),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (e, v) => *e = v.clone(),
    }
}

/// The deployments' API keys (as the gateway loaded them), each at least 8 characters.
pub fn secrets(catalog: &Catalog) -> Vec<String> {
    let mut out: Vec<String> = catalog
        .deployments
        .iter()
        .filter_map(|d| d.api_key.as_ref().map(|k| k.expose().to_string()))
        .filter(|k| k.len() >= 8)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The first secret found in anything `client` received (headers, body, chunks, error
/// messages): the whole key, or any `SECRET_WINDOW` consecutive characters of a longer one.
pub fn leaked(client: &ClientResult, secrets: &[String]) -> Option<String> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &client.response_headers {
        seen.push(("a response header name", k));
        seen.push(("a response header", v));
    }
    if let Some(b) = &client.body {
        seen.push(("the body", b));
    }
    for c in &client.chunks {
        seen.push(("a chunk", &c.raw));
    }
    if let Some(e) = &client.error {
        seen.push(("an error message", &e.message));
        seen.push(("an error type", &e.error_type));
    }
    for event in &client.other_events {
        seen.push(("a stream's error event", event));
    }
    for secret in secrets {
        let chars: Vec<char> = secret.chars().collect();
        let windows: Vec<String> = if chars.len() > SECRET_WINDOW {
            chars
                .windows(SECRET_WINDOW)
                .map(|w| w.iter().collect())
                .collect()
        } else {
            vec![secret.clone()]
        };
        for (what, text) in &seen {
            if let Some(w) = windows.iter().find(|w| text.contains(w.as_str())) {
                let masked: String = w.chars().take(4).collect();
                return Some(format!(
                    "{what} contains a deployment's api_key ({} characters of it, starting {masked:?}...)",
                    w.chars().count()
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_their_path() {
        let a = json!({"choices": [{"message": {"content": "a", "x": 1}}]});
        let b = json!({"choices": [{"message": {"x": 1, "content": "b"}}]});
        assert_eq!(
            first_difference(&a, &b, "").unwrap(),
            r#".choices[0].message.content: the provider has "a", the client "b""#
        );
        assert!(first_difference(&a, &a.clone(), "").is_none());
        let extra = json!({"choices": [{"message": {"content": "a", "x": 1}}], "y": 2});
        assert!(
            first_difference(&a, &extra, "")
                .unwrap()
                .contains(".y: the client has 2")
        );
    }

    #[test]
    fn reassembly_merges_text_and_tool_calls_per_choice() {
        let chunks: Vec<Map<String, Value>> = [
            json!({"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}, "finish_reason": null}]}),
            json!({"id": "x", "choices": [{"index": 1, "delta": {"role": "assistant", "content": "W"}}]}),
            json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "y", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}}]}),
            json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "}"}}]}, "finish_reason": "stop"}]}),
            json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"id": "b", "function": {"name": "f", "arguments": "{}"}}]}}]}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let r = reassemble(&chunks);
        assert_eq!(r["object"], "chat.completion");
        assert_eq!(r["choices"][0]["message"]["content"], "Hey");
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
        assert_eq!(r["choices"][1]["message"]["content"], "W");
        let calls = r["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"]["arguments"], "{}");
        assert_eq!(calls[0]["function"]["name"], "f");
    }

    #[test]
    fn a_secret_is_found_whole_or_in_part_and_never_repeated() {
        let key = "sk-live-0123456789abcdefghijklmnop".to_string();
        let mut c = ClientResult {
            body: Some(format!("Incorrect API key provided: Bearer {key}")),
            ..ClientResult::default()
        };
        let found = leaked(&c, std::slice::from_ref(&key)).unwrap();
        assert!(found.starts_with("the body"), "{found}");
        assert!(
            !found.contains(&key[4..]),
            "the report must not leak it again"
        );
        c.body = Some("key ending 3456789abcdefghijk".into());
        assert!(
            leaked(&c, std::slice::from_ref(&key)).is_some(),
            "16 characters of it"
        );
        c.body = None;
        c.other_events = vec![format!(
            r#"{{"error":{{"message":"upstream failed","param":"{}","code":"x"}}}}"#,
            &key[2..20]
        )];
        let found = leaked(&c, std::slice::from_ref(&key)).expect("in a field the SDKs keep");
        assert!(found.starts_with("a stream's error event"), "{found}");
        c.other_events.clear();
        c.body = Some("Incorrect API key provided: sk-live-********mnop".into());
        assert!(leaked(&c, &[key]).is_none(), "a masked echo is no leak");
    }
}
