//! One `chat.completion.chunk` from an upstream, parsed just enough to route on.
//!
//! Owns: reading an SSE `data:` payload (or a whole JSON completion, for upstreams that
//! answer a stream request with JSON) into a [`Chunk`]: its `model`, its text, whether it
//! carries content (the commit trigger), its finish reason and usage; or recognising it as
//! an error object. The parsed object is kept whole so that everything the engine does not
//! interpret (tool calls, logprobs, ...) is forwarded unchanged.

use serde_json::{Map, Value};

/// A parsed upstream chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub object: Map<String, Value>,
    pub model: Option<String>,
    /// `choices[0].delta.content` (the text a continuation is built from).
    pub text: String,
    /// Bytes of answer payload in this chunk (content, refusal, tool calls), all choices.
    pub payload_bytes: usize,
    pub finish_reason: Option<String>,
    /// No choices, only `usage`: the final usage chunk of `stream_options.include_usage`.
    pub usage_only: bool,
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

/// Parses one SSE data payload. `Err` carries a short reason for a malformed payload.
pub fn parse_data(data: &str) -> Result<Payload, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Payload::Done);
    }
    let value: Value = serde_json::from_str(data).map_err(|e| format!("chunk is not JSON: {e}"))?;
    from_value(value)
}

/// Interprets a parsed chunk or error object.
pub fn from_value(value: Value) -> Result<Payload, String> {
    let Value::Object(object) = value else {
        return Err("chunk is not a JSON object".to_string());
    };
    if object.contains_key("error") {
        return Ok(Payload::Error(Value::Object(object)));
    }
    let model = object
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    let choices = match object.get("choices") {
        Some(Value::Array(c)) => c.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err("`choices` is not an array".to_string()),
    };
    let mut text = String::new();
    let mut payload_bytes = 0;
    let mut finish_reason = None;
    for (i, choice) in choices.iter().enumerate() {
        let index = choice
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        let delta = choice.get("delta").or_else(|| choice.get("message"));
        if let Some(delta) = delta {
            if let Some(content) = delta.get("content").and_then(Value::as_str) {
                payload_bytes += content.len();
                if index == 0 {
                    text.push_str(content);
                }
            }
            if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
                payload_bytes += refusal.len();
            }
            for calls in ["tool_calls", "function_call"] {
                match delta.get(calls) {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) if a.is_empty() => {}
                    Some(other) => payload_bytes += other.to_string().len().max(1),
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            finish_reason = Some(reason.to_string());
        }
    }
    let usage_only = choices.is_empty() && object.get("usage").is_some_and(|u| !u.is_null());
    if choices.is_empty() && !usage_only {
        return Err("chunk has neither `choices` nor `usage`".to_string());
    }
    Ok(Payload::Chunk(Chunk {
        object,
        model,
        text,
        payload_bytes,
        finish_reason,
        usage_only,
    }))
}

/// An upstream that answered a stream request with a whole JSON completion: the same
/// information as one chunk (`message` read as `delta`).
pub fn from_completion(body: &[u8]) -> Result<Payload, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not JSON: {e}"))?;
    from_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &str) -> Chunk {
        match parse_data(data).unwrap() {
            Payload::Chunk(c) => c,
            other => panic!("{other:?}"),
        }
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
    }

    #[test]
    fn whole_completion_reads_like_one_chunk() {
        let body = br#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        match from_completion(body).unwrap() {
            Payload::Chunk(c) => assert_eq!(
                (c.text.as_str(), c.finish_reason.as_deref()),
                ("hi", Some("stop"))
            ),
            other => panic!("{other:?}"),
        }
    }
}
