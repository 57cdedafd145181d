//! The answer's possible end, held back until the answer goes on past it or ends.
//!
//! Owns: [`HeldEnd`], the one rule by which both deliveries hold, release and drop chunks,
//! so that a streaming and a non-streaming client are given the same answer. From the
//! chunk after which no choice the answer named is still going on (the last
//! `finish_reason`), and the usage chunk, everything is held. A chunk that goes on releases
//! what was held; a choice it gives output again loses the held finish reason, which did
//! not end it. A failed attempt's held chunks keep only their content (the continuation
//! goes on from it), without finish reasons; its content-less ones go with it.
//!
//! Does not own what a delivery does with a chunk (an SSE frame, a merge into one
//! completion), nor the metadata a stream puts on its last chunk.

use serde_json::Value;

use crate::upstream::choices::ChoiceProgress;
use crate::upstream::chunk::Chunk;
use crate::upstream::chunk_object::{Choice, ChoiceField, Top};

/// The held chunks of an answer, and which of its choices have finished.
#[derive(Debug, Default)]
pub struct HeldEnd {
    progress: ChoiceProgress,
    tail: Vec<Chunk>,
}

/// What the client is given now, on one chunk's arrival.
#[derive(Debug)]
pub struct Admitted {
    /// Held chunks the answer went on past, in order: they come before `chunk`.
    pub released: Vec<Chunk>,
    /// The chunk itself, unless it was held.
    pub chunk: Option<Chunk>,
}

impl HeldEnd {
    /// Takes `chunk` into the answer: held, or passed on after what it releases.
    pub fn admit(&mut self, chunk: Chunk) -> Admitted {
        let noted = self.progress.note(&chunk);
        let mut released = Vec::new();
        if !self.tail.is_empty() {
            if !noted.going_on && noted.reopened.is_empty() {
                self.tail.push(chunk);
                return Admitted {
                    released,
                    chunk: None,
                };
            }
            // A choice goes on with output of its own (another choice, or one whose
            // provider puts a finish reason on every chunk): the held finish did not end
            // the answer. One that was no finish is not passed on: clients read a finish
            // reason as the choice's end, and OpenAI sends one per choice.
            released = std::mem::take(&mut self.tail);
            for held in &mut released {
                clear_finish_reasons_of(held, &noted.reopened);
            }
        }
        // The usage chunk is held too: it is the stream's last before `[DONE]` (and carries
        // the metadata, if any), whether or not a finish reason came before it.
        if chunk.usage_only || (chunk.finish_reason.is_some() && self.progress.all_finished()) {
            self.tail.push(chunk);
            return Admitted {
                released,
                chunk: None,
            };
        }
        Admitted {
            released,
            chunk: Some(chunk),
        }
    }

    /// The attempt failed and the answer goes on in another (or ends in an error): the
    /// held chunks with content, without their finish reasons. They are the client's all
    /// the same (Gemini puts the finish reason on the last content chunk).
    pub fn restart(&mut self) -> Vec<Chunk> {
        self.progress.start_over();
        let mut kept = std::mem::take(&mut self.tail);
        kept.retain(|chunk| chunk.payload_bytes > 0);
        for chunk in &mut kept {
            clear_finish_reasons(chunk);
        }
        kept
    }

    /// The answer has ended: what was held is its end, as it came.
    pub fn end(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.tail)
    }

    /// Some chunk is held.
    pub fn is_holding(&self) -> bool {
        !self.tail.is_empty()
    }
}

/// Sets every choice's `finish_reason` of `chunk` to null.
fn clear_finish_reasons(chunk: &mut Chunk) {
    if let Some(Top::Choices(choices)) = chunk.object.get_mut("choices") {
        for c in choices {
            if let Choice::Object(c) = c {
                if let Some(reason) = c.get_mut("finish_reason") {
                    *reason = ChoiceField::Json(Value::Null);
                }
            }
        }
    }
    chunk.finish_reason = None;
    chunk.raw = None;
}

/// Sets the `finish_reason` of the choices `indexes` names to null (choices without an
/// `index` by place, as the chunk parser reads them).
fn clear_finish_reasons_of(chunk: &mut Chunk, indexes: &[u64]) {
    if indexes.is_empty() {
        return;
    }
    let Some(Top::Choices(choices)) = chunk.object.get_mut("choices") else {
        return;
    };
    let mut cleared = false;
    let mut kept = None;
    for (place, c) in choices.iter_mut().enumerate() {
        let index = c.index().unwrap_or(place as u64);
        let Choice::Object(c) = c else { continue };
        let Some(reason) = c.get_mut("finish_reason") else {
            continue;
        };
        if indexes.contains(&index) {
            cleared |= !matches!(reason, ChoiceField::Json(Value::Null));
            *reason = ChoiceField::Json(Value::Null);
        } else if let Some(r) = reason
            .json()
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            kept.get_or_insert_with(|| r.to_string());
        }
    }
    if cleared {
        chunk.finish_reason = kept;
        chunk.raw = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::chunk::tests::chunk;

    fn content(index: u64, text: &str, finish: Option<&str>) -> Chunk {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        chunk(&format!(
            r#"{{"id":"a","choices":[{{"index":{index},"delta":{{"content":"{text}"}},"finish_reason":{finish}}}]}}"#
        ))
    }

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn the_last_finish_and_what_follows_it_are_held_until_the_answer_ends() {
        let mut held = HeldEnd::default();
        let passed = held.admit(content(0, "a", None));
        assert!(passed.released.is_empty());
        assert_eq!(passed.chunk.map(|c| c.text), Some("a".into()));

        assert!(held.admit(content(0, "", Some("stop"))).chunk.is_none());
        let usage = chunk(r#"{"id":"a","choices":[],"usage":{"total_tokens":3}}"#);
        assert!(held.admit(usage).chunk.is_none(), "the usage chunk is held");
        assert!(held.is_holding());

        let end = held.end();
        assert_eq!(end.len(), 2);
        assert_eq!(end[0].finish_reason.as_deref(), Some("stop"), "as it came");
        assert!(end[1].usage_only);
        assert!(!held.is_holding());
    }

    /// A provider that puts a finish reason on every chunk: the held finish ended nothing,
    /// and is not passed on as an end.
    #[test]
    fn a_choice_that_goes_on_releases_the_held_chunks_without_its_finish() {
        let mut held = HeldEnd::default();
        assert!(held.admit(content(0, "a", Some("stop"))).chunk.is_none());
        let admitted = held.admit(content(0, "b", Some("stop")));
        assert_eq!(texts(&admitted.released), ["a"]);
        assert_eq!(admitted.released[0].finish_reason, None);
        assert!(
            admitted.released[0].raw.is_none(),
            "its bytes no longer match"
        );
        assert!(
            admitted.chunk.is_none(),
            "the new chunk's finish may be the end"
        );
        assert_eq!(texts(&held.end()), ["b"]);
    }

    /// With `n > 1`, a finished choice's chunk is released by another's output, and keeps
    /// its own finish reason: that choice did end.
    #[test]
    fn another_choices_output_releases_a_finish_that_stays_a_finish() {
        let mut held = HeldEnd::default();
        held.admit(content(0, "a", None));
        held.admit(content(1, "x", None));
        assert!(held.admit(content(0, "", Some("stop"))).chunk.is_some());
        assert!(held.admit(content(1, "", Some("length"))).chunk.is_none());
        // Choice 1 gives output again: its `length` was none.
        let admitted = held.admit(content(1, "y", None));
        assert_eq!(admitted.released.len(), 1);
        assert_eq!(admitted.released[0].finish_reason, None);
        let passed = admitted.chunk.expect("choice 1 goes on: passed on");
        assert_eq!(passed.finish_reason, None);
    }

    #[test]
    fn a_failed_attempts_held_content_is_kept_without_finish_and_the_rest_dropped() {
        let mut held = HeldEnd::default();
        held.admit(content(0, "a", None));
        assert!(held.admit(content(0, "b", Some("stop"))).chunk.is_none());
        assert!(held.admit(content(0, "", None)).chunk.is_none());
        let kept = held.restart();
        assert_eq!(
            texts(&kept),
            ["b"],
            "the content-less chunk went with its attempt"
        );
        assert_eq!(kept[0].finish_reason, None);
        assert!(!held.is_holding());
        // The next attempt's choices are its own: its first finish is the answer's end.
        assert!(held.admit(content(0, "c", Some("stop"))).chunk.is_none());
    }
}
