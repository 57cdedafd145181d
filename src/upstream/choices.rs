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
    /// every chunk (Open WebUI's `stop` on reasoning chunks, Gemini relays), so none of
    /// theirs ends them any more; only `[DONE]` ends the answer. Believed, the first one
    /// held the rest of the stream back, and a cut after it was served as complete.
    finishes_unreliable: BTreeSet<u64>,
}

impl ChoiceProgress {
    /// Notes the choices of `chunk`; whether it names one that has not finished.
    pub fn note(&mut self, chunk: &Chunk) -> bool {
        let mut going_on = false;
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
            }
            // Ollama and SGLang send `finish_reason: ""` on every chunk but the last: an
            // empty reason finishes nothing, as `null` does.
            let finishes = choice
                .fields()
                .and_then(|f| f.get("finish_reason"))
                .and_then(ChoiceField::json)
                .and_then(Value::as_str)
                .is_some_and(|reason| !reason.is_empty())
                && !self.finishes_unreliable.contains(&index);
            if finishes {
                self.finished.insert(index);
            }
            going_on |= !self.finished.contains(&index);
        }
        debug_assert!(
            self.finished.is_subset(&self.named),
            "a finished choice was named"
        );
        going_on
    }

    /// Some chunk named a choice.
    pub fn named_any(&self) -> bool {
        !self.named.is_empty()
    }

    /// Every choice named so far has finished (true before any was named).
    pub fn all_finished(&self) -> bool {
        self.named.len() == self.finished.len()
    }

    /// The answer is complete: some choice finished and none is still going on. With
    /// `n > 1`, one choice's finish reason does not end the answer.
    pub fn complete(&self) -> bool {
        !self.finished.is_empty() && self.all_finished()
    }

    /// The answer goes on in another attempt: no choice has finished any more.
    pub fn forget_finishes(&mut self) {
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
        )));
        assert!(progress.note(&chunk(
            r#"{"choices":[{"index":1,"delta":{},"finish_reason":"stop"},{"index":0,"delta":{"content":"c"}}]}"#
        )));
        assert!(!progress.complete(), "choice 0 goes on");
        assert!(!progress.note(&chunk(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#
        )));
        assert!(progress.complete());
        progress.forget_finishes();
        assert!(!progress.complete() && !progress.all_finished());
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
