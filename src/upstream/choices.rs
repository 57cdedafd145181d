//! Which choices of an answer have finished.
//!
//! Owns: [`ChoiceProgress`], the record of the choices a stream has named (by `index`, else
//! by place, as the chunk parser reads them) and those that have finished. The upstream
//! reader asks it whether an answer that ends without `[DONE]` is complete; stream delivery
//! asks it when the answer's end begins. Does not own what a finish reason means for the
//! plan (content filters, see `attempt`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::chunk::{Chunk, has_output};
use super::chunk_object::ChoiceField;

/// The choices an answer has named so far and those that have finished.
#[derive(Debug, Default, Clone)]
pub struct ChoiceProgress {
    named: BTreeSet<u64>,
    finished: BTreeSet<u64>,
    /// Choices that went on with output after a finish reason: their provider puts one on
    /// every chunk (Open WebUI's `stop` on reasoning chunks, Gemini relays). Their finish
    /// reasons still mark where the answer may end (the stream delivery holds what follows
    /// one), but never make it complete: only `[DONE]` does. Believed, the first one held
    /// the rest of the stream back, and a cut after it was served as complete.
    finishes_unreliable: BTreeSet<u64>,
}

/// What one chunk said of the answer's choices.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Noted {
    /// It names a choice that has not finished.
    pub going_on: bool,
    /// The choices it gave output after their finish reason: that finish was none.
    pub reopened: Vec<u64>,
}

impl ChoiceProgress {
    /// Notes the choices of `chunk`.
    pub fn note(&mut self, chunk: &Chunk) -> Noted {
        let mut noted = Noted::default();
        for (place, choice) in chunk
            .object
            .choices()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let index = choice.index().unwrap_or(place as u64);
            self.named.insert(index);
            if self.finished.contains(&index) && has_output(choice) {
                self.finished.remove(&index);
                self.finishes_unreliable.insert(index);
                noted.reopened.push(index);
            }
            // Ollama and SGLang send `finish_reason: ""` on every chunk but the last: an
            // empty reason finishes nothing, as `null` does.
            let finishes = choice
                .fields()
                .and_then(|f| f.get("finish_reason"))
                .and_then(ChoiceField::json)
                .and_then(Value::as_str)
                .is_some_and(|reason| !reason.is_empty());
            if finishes {
                self.finished.insert(index);
            }
            noted.going_on |= !self.finished.contains(&index);
        }
        debug_assert!(
            self.finished.is_subset(&self.named),
            "a finished choice was named"
        );
        noted
    }

    /// Some chunk named a choice.
    pub fn named_any(&self) -> bool {
        !self.named.is_empty()
    }

    /// How many choices chunks have named.
    pub fn named_count(&self) -> u64 {
        self.named.len() as u64
    }

    /// Every choice named so far has finished (true before any was named).
    pub fn all_finished(&self) -> bool {
        self.named.len() == self.finished.len()
    }

    /// The answer is complete: some choice finished and none is still going on. With
    /// `n > 1`, one choice's finish reason does not end the answer.
    pub fn complete(&self) -> bool {
        !self.finished.is_empty()
            && self.all_finished()
            && self.finished.is_disjoint(&self.finishes_unreliable)
    }

    /// The answer goes on in another attempt: which choices it names and finishes is that
    /// attempt's own. A choice an earlier attempt named and nothing continues (the second
    /// of two a provider gave, when only the first is continued) is not waited for: held
    /// as still going on, it kept every finish the continuation sent from looking like the
    /// end, and a provider's false ones went out.
    pub fn start_over(&mut self) {
        self.named.clear();
        self.finished.clear();
        // The next attempt may be another provider's, whose finishes mean what they say.
        self.finishes_unreliable.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::chunk::tests::chunk;

    #[test]
    fn an_answer_is_complete_once_every_named_choice_finished() {
        let mut progress = ChoiceProgress::default();
        assert!(!progress.complete(), "nothing named, nothing finished");
        assert!(progress.note(&chunk(
            r#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#
        )).going_on);
        assert!(progress.note(&chunk(
            r#"{"choices":[{"index":1,"delta":{},"finish_reason":"stop"},{"index":0,"delta":{"content":"c"}}]}"#
        )).going_on);
        assert!(!progress.complete(), "choice 0 goes on");
        assert!(
            !progress
                .note(&chunk(
                    r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#
                ))
                .going_on
        );
        assert!(progress.complete());
        progress.start_over();
        assert!(!progress.complete() && !progress.named_any());
    }

    #[test]
    fn output_after_a_finish_reopens_the_choice_and_only_done_completes_it() {
        let mut progress = ChoiceProgress::default();
        let every = |text: &str| {
            chunk(&format!(
                r#"{{"choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":"stop"}}]}}"#
            ))
        };
        assert_eq!(progress.note(&every("a")), Noted::default());
        assert!(progress.complete(), "a finish, as far as anyone knows");
        let noted = progress.note(&every("b"));
        assert_eq!(noted.reopened, vec![0], "output after the finish");
        assert!(
            progress.all_finished(),
            "its own finish marks a possible end"
        );
        assert!(!progress.complete(), "but never completes the answer");
        let empty = chunk(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#);
        assert_eq!(
            progress.note(&empty),
            Noted::default(),
            "no output reopens nothing"
        );
        progress.start_over();
        progress.note(&every("c"));
        assert!(
            progress.complete(),
            "the next attempt's finishes are believed"
        );
    }

    #[test]
    fn choices_without_an_index_are_named_by_place() {
        let mut progress = ChoiceProgress::default();
        progress.note(&chunk(
            r#"{"choices":[{"delta":{},"finish_reason":"stop"},{"delta":{"content":"b"}}]}"#,
        ));
        assert!(!progress.complete());
        progress.note(&chunk(
            r#"{"choices":[{"delta":{},"finish_reason":null},{"delta":{},"finish_reason":"stop"}]}"#,
        ));
        assert!(
            progress.complete(),
            "a null finish reason does not undo one"
        );
    }
}
