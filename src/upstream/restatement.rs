//! A stream's closing restatement of its own answer.
//!
//! Owns: [`SpokenChoices`], the record of which choices of one upstream stream have spoken
//! through `delta`s, and the rewrite of a later choice that holds a `message` and no `delta`
//! object (none, or `null`): the whole answer said again, not more of it. MiniMax (`chatcompletion_v2`, its M2 and M3
//! models) ends every stream so: a `chat.completion` whose choices hold the full `message`,
//! the finish reason and, at the top, the real usage. Read as one more delta (a `message`
//! stands for a `delta` in a whole completion), it doubled the text and tool-call arguments
//! of every non-stream answer and of every streaming client that merges `message` the same
//! way (ENTERPILOT/GoModel PR 1068, cline PR 9215, a hermes browser extension's issue 11).
//!
//! The restated choice keeps its place and every field but the `message`, which becomes an
//! empty `delta`, and its `logprobs`, which become `null` (the whole answer's again); its
//! finish reason and the chunk's usage still count. A chunk that
//! called itself `chat.completion` becomes a `chat.completion.chunk`. A choice's first
//! `message` is never a restatement: an upstream that answers with one completion, or
//! streams its pieces under `message`, is read as before. A `message` beside a `delta`
//! (Perplexity's running copy) is left alone: the `delta` is the piece. Does not own what
//! a chunk's fields mean otherwise (`chunk`) nor which choices finished (`choices`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::chunk::{self, Chunk, ChunkLimits, Payload};
use super::chunk_object::{Choice, ChoiceField, Fields, Top};

/// The choices of one stream that have had a `delta` object.
#[derive(Debug, Default, Clone)]
pub struct SpokenChoices {
    spoken: BTreeSet<u64>,
}

impl SpokenChoices {
    /// `chunk`, with each choice that restates an answer its deltas already gave emptied;
    /// notes the choices that speak through a `delta` in it.
    pub fn read(&mut self, chunk: Chunk, limits: &ChunkLimits) -> Chunk {
        let restated = self.note(&chunk);
        if restated.is_empty() {
            return chunk;
        }
        let mut object = chunk.object.clone();
        if let Some(Top::Choices(choices)) = object.get_mut("choices") {
            for place in restated {
                let Some(Choice::Object(fields)) = choices.get_mut(place) else {
                    unreachable!("a restated choice is an object of this chunk");
                };
                // A `delta` that is not an object (`null`) gives way to the empty one.
                fields.shift_remove("delta");
                let emptied = fields.rename("message", "delta", empty_delta());
                debug_assert!(emptied.is_some(), "a restatement has a message");
                // Its log probabilities are the whole answer's again, too.
                if let Some(logprobs) = fields.get_mut("logprobs") {
                    *logprobs = ChoiceField::Json(Value::Null);
                }
            }
        }
        if let Some(Top::Json(kind)) = object.get_mut("object") {
            if kind.as_str() == Some("chat.completion") {
                *kind = Value::String("chat.completion.chunk".into());
            }
        }
        match chunk::from_object(object, limits) {
            Ok(Payload::Chunk(rewritten)) => rewritten,
            // Emptying a message removes content, never adds an error or a limit's excess.
            other => {
                debug_assert!(false, "a restated chunk reads as a chunk: {other:?}");
                chunk
            }
        }
    }

    /// Notes which choices speak through a `delta` in `chunk`; the places of its choices
    /// that restate one that spoke in an earlier chunk (never in this one: what a chunk
    /// says of itself does not depend on the order of its choices).
    fn note(&mut self, chunk: &Chunk) -> Vec<usize> {
        let Some(choices) = chunk.object.choices() else {
            return Vec::new();
        };
        let mut restated = Vec::new();
        let mut speaking = Vec::new();
        for (place, choice) in choices.iter().enumerate() {
            let index = choice.index().unwrap_or(place as u64);
            let Some(fields) = choice.fields() else {
                continue;
            };
            if speaks(fields) {
                speaking.push(index);
            } else if matches!(fields.get("message"), Some(ChoiceField::Delta(_)))
                && self.spoken.contains(&index)
            {
                restated.push(place);
            }
        }
        self.spoken.extend(speaking);
        restated
    }
}

/// A choice with a `delta` object: a piece of its answer (a `message` beside it is not read).
fn speaks(fields: &Fields<ChoiceField>) -> bool {
    matches!(fields.get("delta"), Some(ChoiceField::Delta(_)))
}

fn empty_delta() -> ChoiceField {
    ChoiceField::Delta(Fields::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accumulate::Accumulator;
    use crate::upstream::chunk::tests::chunk;

    fn written(c: &Chunk) -> String {
        serde_json::to_string(&c.object).unwrap()
    }

    const PIECES: [&str; 2] = [
        r#"{"id":"a","choices":[{"index":0,"delta":{"content":"Hel","role":"assistant","name":"MiniMax AI"}}],"object":"chat.completion.chunk"}"#,
        r#"{"id":"a","choices":[{"index":0,"delta":{"content":"lo","role":"assistant","name":"MiniMax AI"}}],"object":"chat.completion.chunk"}"#,
    ];
    const RESTATED: &str = r#"{"id":"a","choices":[{"finish_reason":"stop","index":0,"message":{"content":"Hello","role":"assistant","name":"MiniMax AI"},"logprobs":{"content":[{"token":"Hello"}]}}],"object":"chat.completion","usage":{"total_tokens":8}}"#;

    /// MiniMax's closing `chat.completion` restates the answer: it adds no text, keeps its
    /// finish reason and usage, and reads as a chunk.
    #[test]
    fn a_message_after_deltas_is_emptied_and_keeps_its_finish_and_usage() {
        let mut spoken = SpokenChoices::default();
        let mut acc = Accumulator::new();
        for p in PIECES {
            let c = spoken.read(chunk(p), &ChunkLimits::default());
            assert_eq!(
                c.raw.as_deref(),
                Some(p),
                "an unchanged chunk keeps its bytes"
            );
            acc.push(&c.object);
        }
        let last = spoken.read(chunk(RESTATED), &ChunkLimits::default());
        assert_eq!(
            written(&last),
            r#"{"id":"a","choices":[{"finish_reason":"stop","index":0,"delta":{},"logprobs":null}],"object":"chat.completion.chunk","usage":{"total_tokens":8}}"#
        );
        assert_eq!(last.raw, None, "a changed chunk is written anew");
        assert_eq!((last.text.as_str(), last.payload_bytes), ("", 0));
        assert_eq!(last.finish_reason.as_deref(), Some("stop"));
        acc.push(&last.object);
        assert_eq!(acc.text(), "Hello");
    }

    /// Without deltas before it, a `message` is the answer itself (a completion sent as
    /// one event, or pieces sent under `message`): nothing is emptied.
    #[test]
    fn a_first_message_is_the_answer() {
        let mut spoken = SpokenChoices::default();
        let whole = spoken.read(chunk(RESTATED), &ChunkLimits::default());
        assert_eq!(whole.text, "Hello");
        let pieces = [
            r#"{"choices":[{"index":0,"message":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"message":{"content":"lo"}}]}"#,
        ];
        let mut spoken = SpokenChoices::default();
        let texts: Vec<String> = pieces
            .iter()
            .map(|p| spoken.read(chunk(p), &ChunkLimits::default()).text)
            .collect();
        assert_eq!(texts, ["Hel", "lo"]);
    }

    /// A `delta: null` beside the closing `message` is no delta: the message is still a
    /// restatement (the accumulator, like the SDKs, reads a `message` there).
    #[test]
    fn a_null_delta_beside_a_restatement_is_no_delta() {
        let mut spoken = SpokenChoices::default();
        let mut acc = Accumulator::new();
        for p in PIECES {
            acc.push(&spoken.read(chunk(p), &ChunkLimits::default()).object);
        }
        let last = spoken.read(
            chunk(r#"{"choices":[{"index":0,"delta":null,"message":{"content":"Hello"},"finish_reason":"stop"}]}"#),
            &ChunkLimits::default(),
        );
        assert_eq!(
            written(&last),
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
        );
        acc.push(&last.object);
        assert_eq!(acc.text(), "Hello");
    }

    /// Whether a choice restates depends on the chunks before, never on the other choices
    /// of its own chunk.
    #[test]
    fn a_chunk_does_not_restate_what_it_says_itself() {
        let mut spoken = SpokenChoices::default();
        spoken.read(
            chunk(r#"{"choices":[{"index":1,"delta":{"content":"a"}}]}"#),
            &ChunkLimits::default(),
        );
        let c = spoken.read(
            chunk(r#"{"choices":[{"index":0,"delta":{"content":"x"}},{"index":0,"message":{"content":"y"}},{"index":1,"message":{"content":"a"}}]}"#),
            &ChunkLimits::default(),
        );
        assert_eq!(
            written(&c),
            r#"{"choices":[{"index":0,"delta":{"content":"x"}},{"index":0,"message":{"content":"y"}},{"index":1,"delta":{}}]}"#
        );
    }

    /// Only the choice that spoke is restated; another choice's first `message` and a
    /// `message` beside a `delta` (Perplexity's running copy) are left as they are.
    #[test]
    fn only_a_choice_that_spoke_through_deltas_is_restated() {
        let mut spoken = SpokenChoices::default();
        spoken.read(chunk(PIECES[0]), &ChunkLimits::default());
        let beside =
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"message":{"content":"Hello"}}]}"#;
        let c = spoken.read(chunk(beside), &ChunkLimits::default());
        assert_eq!(c.raw.as_deref(), Some(beside));
        let both = r#"{"choices":[{"index":0,"message":{"content":"Hello"}},{"index":1,"message":{"content":"Hi"}}]}"#;
        let c = spoken.read(chunk(both), &ChunkLimits::default());
        assert_eq!(
            written(&c),
            r#"{"choices":[{"index":0,"delta":{}},{"index":1,"message":{"content":"Hi"}}]}"#
        );
        assert_eq!(c.text, "", "choice 1's text is not the continuation's");
        assert!(c.payload_bytes > 0, "choice 1 speaks");
    }
}
