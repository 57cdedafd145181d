//! How an official OpenAI SDK reads a streamed response, written apart from the engine.
//!
//! Owns: [`SdkStreamReader`], the scripted client's SSE reading. It follows openai-python's
//! `SSEDecoder` and `Stream.__stream__` (openai-node reads alike, more leniently), not the
//! engine's own `SseParser`: a client that shared the gateway's parser would share its
//! blind spots, and the harness would prove only that the gateway agrees with itself.
//! What the SDK does, and this reader reports:
//! - lines end at `\r\n`, `\n` or `\r`; a blank line dispatches an event if it had any
//!   `event`, `data`, `id` or `retry` field; `:` lines are comments; a field's value loses
//!   one leading space; `data` lines join with `\n`;
//! - data that starts with `[DONE]` ends the stream (what follows is never read);
//! - every other event's data is parsed as JSON: an event of no data (`event: ping` on its
//!   own, or an empty `data:`) is a JSON error that the SDK raises;
//! - an event with no `event` name whose JSON has a truthy `error`, or an `event: error`
//!   whose JSON has one, is raised as an API error;
//! - an event with another name is handed to the caller as `{"data": ..., "event": ...}`,
//!   which is no chat chunk: its content is lost.
//!
//! Does not own what the client does with an event (`client`).

use serde_json::Value;

/// One dispatched event, as the SDK's decoder builds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdkEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

/// What the SDK makes of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum SdkReads {
    /// `[DONE]`: the stream is over for the caller.
    Done,
    /// A chunk handed to the caller.
    Chunk(Value),
    /// An API error raised to the caller (the `error` object).
    Error(Value),
    /// Something the SDK fails on, or silently loses: why.
    Broken(String),
}

impl SdkEvent {
    /// The SDK's reading of this event.
    pub fn read(&self) -> SdkReads {
        if self.data.starts_with("[DONE]") {
            return SdkReads::Done;
        }
        let json = match serde_json::from_str::<Value>(&self.data) {
            Ok(v) => v,
            Err(e) => {
                return SdkReads::Broken(format!(
                    "the SDK cannot parse event {:?} (data {:?}): {e}",
                    self.event.as_deref().unwrap_or("message"),
                    self.data
                ));
            }
        };
        let error = json.get("error").filter(|e| truthy(e)).cloned();
        match self.event.as_deref() {
            None => match error {
                Some(e) => SdkReads::Error(e),
                None => SdkReads::Chunk(json),
            },
            Some("error") if error.is_some() => SdkReads::Error(error.unwrap_or_default()),
            Some(name) => SdkReads::Broken(format!(
                "openai-python hands a named event ({name:?}) to the caller as \
                 {{\"data\", \"event\"}}, not as a chunk"
            )),
        }
    }
}

/// Python's truthiness of a JSON value (`if data.get("error")`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Reads a body's bytes as the SDK's decoder does, however they are cut.
#[derive(Debug, Default)]
pub struct SdkStreamReader {
    /// Bytes of a line not ended yet.
    line: Vec<u8>,
    /// The last byte was `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    event: Option<String>,
    data: Vec<String>,
    id: Option<String>,
    retry: Option<u64>,
    /// Bytes held for the event being built, against `max_event_bytes`.
    held: usize,
    max_event_bytes: usize,
}

impl SdkStreamReader {
    /// A reader that refuses an event (or a line) longer than `max_event_bytes`: the SDK has
    /// no bound, the harness must.
    pub fn new(max_event_bytes: usize) -> SdkStreamReader {
        SdkStreamReader {
            max_event_bytes,
            ..SdkStreamReader::default()
        }
    }

    /// Feeds bytes; appends the events they complete. An error names the bound exceeded.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SdkEvent>) -> Result<(), String> {
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => self.end_line(out),
                _ => {
                    self.line.push(b);
                    self.held += 1;
                    if self.held > self.max_event_bytes {
                        return Err(format!(
                            "an SSE event over {} bytes from the gateway",
                            self.max_event_bytes
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether bytes of an event not dispatched yet are held (a stream cut mid-event).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.event.is_some() || !self.data.is_empty()
    }

    fn end_line(&mut self, out: &mut Vec<SdkEvent>) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
        if line.is_empty() {
            if self.event.is_some()
                || !self.data.is_empty()
                || self.id.is_some()
                || self.retry.is_some()
            {
                out.push(SdkEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data).join("\n"),
                    id: self.id.take(),
                    retry: self.retry.take(),
                });
            }
            self.held = 0;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => self.data.push(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "retry" => self.retry = value.parse().ok(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events(body: &str) -> Vec<SdkEvent> {
        let mut reader = SdkStreamReader::new(1 << 20);
        let mut out = Vec::new();
        // One byte at a time: how the bytes are cut changes nothing.
        for b in body.as_bytes() {
            reader.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        let mut whole = Vec::new();
        SdkStreamReader::new(1 << 20)
            .push(body.as_bytes(), &mut whole)
            .unwrap();
        assert_eq!(out, whole, "{body:?}");
        out
    }

    fn reads(body: &str) -> Vec<SdkReads> {
        events(body).iter().map(SdkEvent::read).collect()
    }

    #[test]
    fn line_ends_comments_and_spaces_read_as_the_sdk_reads_them() {
        let chunk = json!({"choices": []});
        for body in [
            "data: {\"choices\": []}\n\ndata: [DONE]\n\n",
            "data:{\"choices\": []}\r\n\r\n: keep-alive\r\n\r\ndata:[DONE]\r\n\r\n",
            "data: {\"choices\":\rdata:  []}\r\rdata: [DONE] trailing\r\r",
        ] {
            assert_eq!(
                reads(body),
                [SdkReads::Chunk(chunk.clone()), SdkReads::Done],
                "{body:?}"
            );
        }
    }

    #[test]
    fn only_one_leading_space_is_taken_so_a_spaced_done_is_no_done() {
        let read = reads("data:  [DONE]\n\n");
        let [SdkReads::Broken(why)] = read.as_slice() else {
            panic!("{read:?}")
        };
        assert!(why.contains("cannot parse"), "{why}");
    }

    #[test]
    fn an_event_of_no_data_breaks_the_sdk() {
        for body in ["event: ping\n\n", "data:\n\n", "id: 7\n\n"] {
            assert!(
                matches!(reads(body).as_slice(), [SdkReads::Broken(_)]),
                "{body:?}"
            );
        }
        assert!(reads(": only a comment\n\n\n").is_empty());
    }

    #[test]
    fn errors_are_raised_as_the_sdk_raises_them() {
        let error = json!({"message": "m"});
        assert_eq!(
            reads("data: {\"error\": {\"message\": \"m\"}}\n\n"),
            [SdkReads::Error(error.clone())]
        );
        assert_eq!(
            reads("event: error\ndata: {\"error\": {\"message\": \"m\"}}\n\n"),
            [SdkReads::Error(error)]
        );
        // A falsy `error` is no error: the chunk is handed on.
        let chunk = json!({"error": null, "choices": []});
        assert_eq!(
            reads("data: {\"error\": null, \"choices\": []}\n\n"),
            [SdkReads::Chunk(chunk)]
        );
        assert!(matches!(
            reads("event: delta\ndata: {\"choices\": []}\n\n").as_slice(),
            [SdkReads::Broken(_)]
        ));
    }

    #[test]
    fn an_event_cut_short_is_held_and_an_oversized_one_refused() {
        let mut reader = SdkStreamReader::new(16);
        let mut out = Vec::new();
        reader.push(b"data: [DON", &mut out).unwrap();
        assert!(out.is_empty() && reader.has_partial());
        assert!(reader.push(b"E]xxxxxxxxx", &mut out).is_err());
    }
}
