//! Azure OpenAI's Asynchronous Filter: the annotation chunks of a stream whose content goes
//! out before the content filter has seen it.
//!
//! Owns: where an async-filtered Azure stream puts its annotations, what they say and what
//! they look like. Follows Microsoft's `content-filter-streaming.md`
//! (`MicrosoftDocs/azure-ai-docs`, its sample streams) and captured annotations
//! (aallam/openai-kotlin PR 340, openai/openai-python issue 1677):
//!
//! * content chunks carry no `content_filter_results` (see `Reply::choice`);
//! * an annotation is a chunk with `created: 0`, `id: ""`, `model: ""`, `object: ""` and
//!   one choice with its `index`, `finish_reason: null`, no `delta`, the filter's
//!   `content_filter_results` and its `content_filter_offsets` (`check_offset`,
//!   `start_offset`, `end_offset`, in that order as captured); keys otherwise alphabetical,
//!   as Azure writes them, and `usage: null` where the content chunks have it;
//! * one per choice after every [`ANNOTATION_EVERY`]-th piece of that choice, and one per
//!   choice after the finish chunks and the usage chunk, before `[DONE]` (the filter is
//!   slower than the model, so its last word comes last: where the usage chunk goes
//!   relative to it is not documented);
//! * a block ends the stream, after the usage chunk, with a safe annotation and then the
//!   blocking one for each choice, both over the same text (Microsoft's blocked sample):
//!   `finish_reason: "content_filter"` and the category that filtered
//!   (`protected_material_text`). The text already sent stays sent.
//!
//! Offsets count characters from the start of the prompt (the request's message texts):
//! `start_offset` is where the answer begins, `end_offset` where the text the annotation
//! covers ends, and `check_offset` how far earlier annotations had moderated (all of it
//! after the finish chunk). A non-stream answer is filtered whole before it is sent: it has
//! no annotations and no offsets, only the verdict on its choices (`Reply::whole`).
//!
//! Does not own the content chunks (`dialect`) nor when any chunk is written (`fake`).

use serde_json::{Map, Value, json};

use super::{Part, Reply};

/// Pieces of one choice between two of its annotations.
pub const ANNOTATION_EVERY: usize = 3;

/// The category that blocks an answer: Microsoft's blocked sample (song lyrics).
const BLOCKING_CATEGORY: &str = "protected_material_text";

/// Characters of the prompt in `body`: the text of its messages (a string `content`, or
/// the `text` of its parts), where the offsets start counting.
pub fn prompt_chars(body: &Value) -> usize {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return 0;
    };
    messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(|content| match content {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(|t| t.chars().count())
                .sum(),
            _ => 0,
        })
        .sum()
}

/// What one annotation covers, as offsets from the start of the prompt.
struct Offsets {
    check: usize,
    start: usize,
    end: usize,
}

impl Reply {
    /// The annotations that follow piece `i` on the wire (none unless the filter is async).
    pub fn annotations_after(&self, i: usize) -> Vec<Value> {
        let Some(piece) = self.pieces.get(i).filter(|_| self.async_filter) else {
            return Vec::new();
        };
        let c = piece.choice;
        let n = self.pieces_of(c, i + 1);
        if n % ANNOTATION_EVERY != 0 {
            return Vec::new();
        }
        let offsets = Offsets {
            check: self.moderated(c, n - ANNOTATION_EVERY),
            start: self.prompt_chars,
            end: self.moderated(c, n),
        };
        vec![self.annotation(c, &offsets, Reply::content_filter_results(), None)]
    }

    /// The annotations after the finish chunks of an answer of `sent` pieces: one per
    /// choice, over all of its text, which is now all moderated.
    pub(super) fn trailing_annotations(&self, sent: usize) -> Vec<Value> {
        (0..self.choices)
            .map(|c| {
                let end = self.moderated(c, self.pieces_of(c, sent));
                let offsets = Offsets {
                    check: end,
                    start: self.prompt_chars,
                    end,
                };
                self.annotation(c, &offsets, Reply::content_filter_results(), None)
            })
            .collect()
    }

    /// The end of an answer the filter blocks after `sent` pieces: the usage chunk (when
    /// asked for), then, for each choice, a safe annotation and the blocking one.
    pub(super) fn blocked_closing(&self, sent: usize) -> Vec<Value> {
        let mut out: Vec<Value> = self.usage_chunk(sent).into_iter().collect();
        for c in 0..self.choices {
            let n = self.pieces_of(c, sent);
            let offsets = Offsets {
                check: self.moderated(c, n - n % ANNOTATION_EVERY),
                start: self.prompt_chars,
                end: self.moderated(c, n),
            };
            out.push(self.annotation(c, &offsets, Reply::content_filter_results(), None));
            let blocking = json!({BLOCKING_CATEGORY: {"detected": true, "filtered": true}});
            out.push(self.annotation(c, &offsets, blocking, Some("content_filter")));
        }
        out
    }

    /// The verdict a choice's `content_filter_results` hold once every annotation is in
    /// (what a non-stream answer reports): every category safe, and the blocking one
    /// filtered when `blocked`.
    pub(super) fn async_verdict(blocked: bool) -> Value {
        let mut verdict = Reply::content_filter_results();
        if blocked {
            if let Some(o) = verdict.as_object_mut() {
                o.insert(
                    BLOCKING_CATEGORY.into(),
                    json!({"detected": true, "filtered": true}),
                );
                o.sort_keys();
            }
        }
        verdict
    }

    /// How many of the first `upto` pieces are choice `c`'s.
    fn pieces_of(&self, c: u32, upto: usize) -> usize {
        self.pieces[..upto.min(self.pieces.len())]
            .iter()
            .filter(|p| p.choice == c)
            .count()
    }

    /// The offset where the text of choice `c`'s first `n` pieces ends.
    fn moderated(&self, c: u32, n: usize) -> usize {
        let text: usize = self
            .pieces
            .iter()
            .filter(|p| p.choice == c)
            .take(n)
            .map(|p| match &p.part {
                Part::Content(t) | Part::Reasoning(t) | Part::Refusal(t) => t.chars().count(),
                Part::Audio { transcript, .. } => transcript.chars().count(),
                Part::ToolCall { arguments, .. } => arguments.chars().count(),
                Part::Annotations => 0,
            })
            .sum();
        self.prompt_chars + text
    }

    /// One annotation chunk for choice `c`.
    fn annotation(&self, c: u32, offsets: &Offsets, results: Value, finish: Option<&str>) -> Value {
        let mut choice = Map::new();
        choice.insert(
            "content_filter_offsets".into(),
            json!({"check_offset": offsets.check, "start_offset": offsets.start, "end_offset": offsets.end}),
        );
        choice.insert("content_filter_results".into(), results);
        choice.insert(
            "finish_reason".into(),
            finish.map_or(Value::Null, |f| json!(f)),
        );
        choice.insert("index".into(), json!(c));
        let mut o = Map::new();
        o.insert("choices".into(), json!([choice]));
        o.insert("created".into(), json!(0));
        o.insert("id".into(), json!(""));
        o.insert("model".into(), json!(""));
        o.insert("object".into(), json!(""));
        if self.include_usage {
            o.insert("usage".into(), Value::Null);
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scenario::{ContentFilterMode, Dialect, Provider, Script};

    fn reply(text: &str, more: &[&str]) -> Reply {
        let spec = Provider {
            host: "az".into(),
            port: 8000,
            model: Some("gpt-4o".into()),
            default: Script::default(),
            calls: Vec::new(),
            dialect: Dialect::Azure,
            tool_call_index: None,
            tool_call_ids: Default::default(),
            keep_alive_ms: None,
            framing: Default::default(),
            content_filter: ContentFilterMode::Async,
            finish_reasons: Default::default(),
            refuses_streaming: false,
            unlabelled: false,
        };
        let script = Script {
            text: Some(text.into()),
            chunk_size: Some(2),
            more_choices: more.iter().map(|t| t.to_string()).collect(),
            ..Script::default()
        };
        let mut r = Reply::new(&spec, &script, 1, "gpt-4o", None);
        r.prompt_chars = 10;
        r
    }

    #[test]
    fn content_chunks_carry_no_results_and_annotations_come_every_third_piece() {
        let r = reply("abcdefgh", &[]);
        assert_eq!(
            r.piece(0).to_string(),
            r#"{"choices":[{"delta":{"content":"ab"},"finish_reason":null,"index":0,"logprobs":null}],"created":1700000000,"id":"chatcmpl-fake-az-1","model":"gpt-4o","object":"chat.completion.chunk","system_fingerprint":"fp_azure01"}"#
        );
        let after: Vec<usize> = (0..r.pieces.len())
            .map(|i| r.annotations_after(i).len())
            .collect();
        assert_eq!(after, [0, 0, 1, 0]);
        assert_eq!(
            r.annotations_after(2)[0].to_string(),
            r#"{"choices":[{"content_filter_offsets":{"check_offset":10,"start_offset":10,"end_offset":16},"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":0}],"created":0,"id":"","model":"","object":""}"#
        );
    }

    #[test]
    fn the_finish_chunk_is_followed_by_one_more_annotation_per_choice() {
        let mut r = reply("abcdefgh", &["xyz"]);
        r.include_usage = true;
        let closing = r.closing();
        let finishes: Vec<&Value> = closing
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .collect();
        // Two finish chunks, the usage chunk (no choices), two annotations.
        assert_eq!(closing.len(), 5, "{closing:?}");
        assert_eq!(finishes[..2], [&json!("stop"), &json!("stop")]);
        assert_eq!(closing[2]["choices"], json!([]));
        for (c, a) in closing[3..].iter().enumerate() {
            assert_eq!(a["model"], "");
            assert_eq!(a["usage"], Value::Null);
            assert!(a["choices"][0].get("delta").is_none(), "{a}");
            assert_eq!(a["choices"][0]["finish_reason"], Value::Null);
            assert_eq!(a["choices"][0]["index"], c);
        }
        // All of choice 0's 8 characters, and choice 1's 3, after the prompt's 10.
        assert_eq!(
            closing[3]["choices"][0]["content_filter_offsets"],
            json!({"check_offset": 18, "start_offset": 10, "end_offset": 18})
        );
        assert_eq!(
            closing[4]["choices"][0]["content_filter_offsets"]["end_offset"],
            13
        );
    }

    #[test]
    fn a_block_ends_with_the_blocking_annotation_and_the_whole_answer_names_it() {
        let r = reply("abcdefgh", &[]);
        let end = r.filtered_after(2);
        assert_eq!(end.len(), 2, "no finish chunk of its own: {end:?}");
        assert_eq!(end[0]["choices"][0]["finish_reason"], Value::Null);
        let last = &end[1]["choices"][0];
        assert_eq!(last["finish_reason"], "content_filter");
        assert_eq!(
            last["content_filter_results"],
            json!({"protected_material_text": {"detected": true, "filtered": true}})
        );
        assert_eq!(
            last["content_filter_offsets"],
            json!({"check_offset": 10, "start_offset": 10, "end_offset": 14})
        );
        // A non-stream answer is filtered whole: the verdict, no offsets.
        let whole = r.whole(2, Some("content_filter"));
        let choice = &whole["choices"][0];
        assert_eq!(choice["message"]["content"], "abcd");
        assert_eq!(choice["finish_reason"], "content_filter");
        assert!(choice.get("content_filter_offsets").is_none(), "{choice}");
        assert_eq!(
            choice["content_filter_results"]["protected_material_text"]["filtered"],
            true
        );
        assert_eq!(choice["content_filter_results"]["hate"]["severity"], "safe");
    }

    #[test]
    fn the_prompt_is_counted_in_characters_of_text() {
        let body = json!({"messages": [
            {"role": "system", "content": "héllo"},
            {"role": "user", "content": [{"type": "text", "text": "abc"}, {"type": "image_url"}]},
            {"role": "assistant", "content": null},
        ]});
        assert_eq!(prompt_chars(&body), 8);
        assert_eq!(prompt_chars(&json!({})), 0);
    }
}
