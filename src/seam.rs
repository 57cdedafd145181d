//! A stop sequence split across a continuation's seam.
//!
//! Owns: [`SeamGuard`], the decision, chunk by chunk, whether the first text of a
//! continuation completes one of the client's `stop` sequences that the text delivered
//! before the failure began. A provider checks `stop` only against the text it generates:
//! asked to continue "alpha EN" under `stop: END`, the next deployment may say "D omega",
//! and the client's answer would read "alpha END omega", a stop sequence no single
//! provider ever sends. Does not own what happens to the chunks held meanwhile (the
//! attempt loop delivers them or ends the answer) nor a stop sequence wholly inside one
//! provider's text (that provider's own to honour).
//!
//! Only a seam where the delivered text ends with a proper beginning of a stop sequence is
//! guarded, and only until the continuation's text has either completed one or turned away
//! from all of them: every other continuation flows as it comes.

/// What to do with the continuation's chunks held so far, the newest included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seam {
    /// The continuation's text may still complete a stop sequence: keep holding.
    Hold,
    /// It cannot any more: deliver what is held, and everything after it as it comes.
    Release,
    /// It completed one: the answer ends with what was delivered before the seam.
    Stop,
}

/// The stop sequences the delivered text has begun, and how far the continuation has gone.
///
/// Each one is followed with its Knuth–Morris–Pratt automaton over bytes (a match of valid
/// UTF-8 in valid UTF-8 starts on a character, so bytes are enough): the work is linear in
/// the stop sequences' length whatever the texts are, where trying every beginning of a
/// long `stop: "aaaa…"` against an answer of `a`s would be quadratic in the client's bytes.
#[derive(Debug)]
pub struct SeamGuard {
    begun: Vec<Begun>,
    /// Bytes of the continuation's text so far.
    fed: usize,
}

/// One stop sequence the delivered text has begun.
#[derive(Debug)]
struct Begun {
    stop: Vec<u8>,
    /// `border[i]`: the longest proper beginning of `stop[..=i]` that also ends it.
    border: Vec<u32>,
    /// The longest beginning of `stop` the text so far (delivered, then continued) ends with.
    matched: usize,
}

impl Begun {
    fn new(stop: &str) -> Begun {
        let stop = stop.as_bytes().to_vec();
        let mut border = vec![0u32; stop.len()];
        let mut k = 0;
        for i in 1..stop.len() {
            while k > 0 && stop[i] != stop[k] {
                k = border[k - 1] as usize;
            }
            if stop[i] == stop[k] {
                k += 1;
            }
            border[i] = k as u32;
        }
        Begun {
            stop,
            border,
            matched: 0,
        }
    }

    /// Reads one more byte of text: whether it completes the stop sequence.
    fn feed(&mut self, byte: u8) -> bool {
        let mut k = self.matched;
        if k == self.stop.len() {
            k = self.border[k - 1] as usize;
        }
        while k > 0 && self.stop[k] != byte {
            k = self.border[k - 1] as usize;
        }
        if self.stop[k] == byte {
            k += 1;
        }
        self.matched = k;
        k == self.stop.len()
    }
}

impl SeamGuard {
    /// A guard for a continuation of `delivered` under `stops`; `None` when `delivered`
    /// ends with no proper beginning of any of them, so that nothing needs holding.
    pub fn new(delivered: &str, stops: &[&str]) -> Option<SeamGuard> {
        let mut begun = Vec::new();
        for stop in stops.iter().filter(|s| !s.is_empty()) {
            let mut b = Begun::new(stop);
            // Only the last `len - 1` bytes can hold a proper beginning.
            let tail = &delivered.as_bytes()[delivered.len().saturating_sub(stop.len() - 1)..];
            for byte in tail {
                b.feed(*byte);
            }
            // A whole stop sequence in the delivered text was its provider's to honour:
            // only a proper beginning is carried over the seam.
            if b.matched == b.stop.len() {
                b.matched = b.border[b.stop.len() - 1] as usize;
            }
            if b.matched > 0 {
                begun.push(b);
            }
        }
        (!begun.is_empty()).then_some(SeamGuard { begun, fed: 0 })
    }

    /// The continuation's next chunk, with its text of choice 0. A finish reason on it
    /// decides nothing: some providers put one on every chunk, and an answer that does end
    /// there delivers what the seam held at its end.
    pub fn push(&mut self, text: &str) -> Seam {
        for byte in text.bytes() {
            self.fed += 1;
            for b in &mut self.begun {
                // A match that ends here began before the seam when it is longer than
                // what the continuation has said.
                if b.feed(byte) && b.stop.len() > self.fed {
                    return Seam::Stop;
                }
            }
            // A beginning no longer than the continuation's text began after the seam:
            // whatever it becomes is the continuing provider's to honour.
            let fed = self.fed;
            self.begun.retain(|b| b.matched > fed);
            if self.begun.is_empty() {
                return Seam::Release;
            }
        }
        Seam::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_delivered_text_that_begins_a_stop_sequence_is_guarded() {
        assert!(SeamGuard::new("alpha EN", &["END"]).is_some());
        assert!(SeamGuard::new("alpha E", &["END"]).is_some());
        assert!(SeamGuard::new("alpha ", &["END"]).is_none());
        assert!(
            SeamGuard::new("alpha END", &["END"]).is_none(),
            "a whole one was its provider's to honour"
        );
        assert!(SeamGuard::new("alpha EN", &["", "xyz"]).is_none());
        assert!(SeamGuard::new("", &["END"]).is_none());
    }

    #[test]
    fn a_continuation_that_completes_the_stop_sequence_stops() {
        let mut g = SeamGuard::new("alpha EN", &["END"]).unwrap();
        assert_eq!(g.push("D omega"), Seam::Stop);
        let mut g = SeamGuard::new("alpha EN", &["END!"]).unwrap();
        assert_eq!(g.push(""), Seam::Hold, "a role chunk says nothing");
        assert_eq!(g.push("D"), Seam::Hold);
        assert_eq!(g.push("!"), Seam::Stop);
    }

    #[test]
    fn a_continuation_that_turns_away_is_released() {
        let mut g = SeamGuard::new("alpha EN", &["END!"]).unwrap();
        assert_eq!(g.push("D"), Seam::Hold);
        assert_eq!(g.push("x"), Seam::Release);
        let mut g = SeamGuard::new("alpha EN", &["END"]).unwrap();
        assert_eq!(g.push("ough"), Seam::Release);
        let mut g = SeamGuard::new("alpha EN", &["ENDURE"]).unwrap();
        assert_eq!(
            g.push("D"),
            Seam::Hold,
            "a finish reason on it decides nothing"
        );
    }

    #[test]
    fn every_beginning_of_every_stop_sequence_counts() {
        // "…a" begins `aab` (rest "ab") and `ab` (rest "b"); "aa" begins `aab` (rest "b").
        let mut g = SeamGuard::new("xa", &["aab", "ab"]).unwrap();
        assert_eq!(g.push("b"), Seam::Stop, "through `ab`");
        let mut g = SeamGuard::new("xa", &["aab", "zz"]).unwrap();
        assert_eq!(g.push("a"), Seam::Hold);
        assert_eq!(g.push("b"), Seam::Stop);
        let mut g = SeamGuard::new("xaa", &["aab"]).unwrap();
        assert_eq!(g.push("b"), Seam::Stop, "the longer beginning");
    }

    #[test]
    fn beginnings_are_whole_characters() {
        let mut g = SeamGuard::new("le caf", &["fé!"]).unwrap();
        assert_eq!(g.push("é"), Seam::Hold);
        assert_eq!(g.push("!"), Seam::Stop);
        let mut g = SeamGuard::new("naïv", &["ïve"]).unwrap();
        assert_eq!(g.push("e"), Seam::Stop);
    }
}
