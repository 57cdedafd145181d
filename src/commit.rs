//! What the client has been given so far, and what that allows next.
//!
//! Owns: [`CommitState`], the request's state from its commit on, kept by the attempt loop
//! in both modes alike: the response `id` chosen at commit (the committing attempt's own
//! upstream id, or a generated one that never repeats across restarts), the text of choice
//! 0 delivered so far, whether that answer can still be continued by another attempt (only
//! text of a single choice can), which choices have had their `role`, the usage of the
//! attempts that contributed, and the client's token budget. It stamps each chunk with the
//! fields Switchback must set and nothing else. Does not own when to commit or which
//! attempt comes next (`attempt`), nor delivery (`delivery`).

use std::collections::BTreeSet;

use rand::RngCore;
use serde_json::{Map, Value};

use crate::upstream::chunk::Chunk;
use crate::upstream::chunk_object::{Choice, ChoiceField, Top};

/// A usage's totals: all zero, it is a placeholder, not a report.
const USAGE_COUNTERS: [&str; 3] = ["prompt_tokens", "completion_tokens", "total_tokens"];

#[derive(Debug, Default)]
pub struct CommitState {
    committed: bool,
    response_id: Option<Value>,
    /// Text of choice 0 delivered so far (what a continuation continues from).
    text: String,
    /// Everything delivered was text of choice 0.
    continuable: bool,
    /// Choices whose `role` the client has had.
    roles: BTreeSet<u64>,
    /// Content chunks delivered, all attempts (usage-only chunks excluded).
    delivered: u32,
    /// The first non-zero `created` delivered: what an end the gateway writes itself
    /// (`Next::Spent`) says, as every other chunk of the answer does.
    created: Option<Value>,
    /// Usage of earlier attempts that contributed (reported, or estimated): every whole
    /// count, summed in the place it was reported, the counters inside a usage
    /// (`prompt_tokens_details.cached_tokens`, DeepSeek's `prompt_cache_hit_tokens`) as its
    /// totals, since a bill is read from both.
    earlier: Map<String, Value>,
    /// This attempt's reported usage, if it reported one.
    attempt_usage: Option<Map<String, Value>>,
    /// Content chunks this attempt delivered: one token each when it reports no usage.
    attempt_chunks: u64,
    /// The last non-empty `model` a chunk of this attempt carried: what a later chunk's
    /// empty one is stamped with. Never an earlier attempt's: after a fallback, a chunk
    /// must not name the model that failed.
    last_model: Option<String>,
    /// An attempt after a failure past commit is delivering: what it says is glued to what
    /// an earlier one said.
    continuing: bool,
}

/// What the attempt after a failure past commit may be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing but content-less chunks was delivered: a fresh answer continues nothing.
    Fresh,
    /// Continue this text, with this much of the client's token budget left.
    Continue {
        prefix: String,
        tokens_left: Option<u64>,
    },
    /// What was delivered is text of one choice that spent the client's whole token
    /// budget: nothing is left to ask a continuation for (a `max_tokens` of 0 is no
    /// request), and the answer is whole as far as the client allowed. It ends with
    /// `length`, as the provider's own would have (or `content_filter`, when the failure was
    /// the provider's filter, routed around only because a content-policy fallback list is
    /// set: without one that finish is the answer's), with `model` (the failed attempt's
    /// last) on its end. Ended in an error before, in both modes, for an answer that had
    /// arrived.
    Spent { model: Option<String> },
    /// What was delivered cannot be continued (tool calls, several choices, audio,
    /// reasoning, logprobs): end as under `mid_stream: error`.
    Stop(&'static str),
}

impl CommitState {
    pub fn new() -> CommitState {
        CommitState {
            continuable: true,
            ..CommitState::default()
        }
    }

    pub fn is_committed(&self) -> bool {
        self.committed
    }

    /// Content chunks delivered so far.
    pub fn delivered(&self) -> u32 {
        self.delivered
    }

    /// Commits. The response's id is `upstream_id`, the committing attempt's own, or, if it
    /// gave none, `chatcmpl-` and 24 random hex digits from `ids` (seeded from the
    /// operating system by `serve`, from the scenario in simulation).
    pub fn commit(&mut self, upstream_id: Option<&str>, ids: &mut dyn RngCore) -> String {
        assert!(!self.committed, "a request commits once");
        self.committed = true;
        let id = match upstream_id.filter(|id| !id.is_empty()) {
            Some(id) => id.to_string(),
            None => format!("chatcmpl-{:016x}{:08x}", ids.next_u64(), ids.next_u32()),
        };
        self.response_id = Some(Value::String(id.clone()));
        id
    }

    /// The response id, once committed.
    pub fn response_id(&self) -> Option<&str> {
        self.response_id.as_ref().and_then(Value::as_str)
    }

    /// Sets what Switchback must set on a chunk it delivers, and nothing else: the
    /// response's `id`; the producing deployment's `model` when the upstream left it out,
    /// and the last one delivered when it says `""` after a real one; no second `role` for
    /// a choice that already had one; and usage covering every attempt that contributed.
    /// Then records what the client now has.
    ///
    /// The empty model: Azure's Asynchronous Filter sends its annotation chunks with
    /// `model: ""`, one of them after the finish chunk. Passed on, the stream's last chunk
    /// named no model where the non-stream answer (whose accumulation, like the SDKs', never
    /// lets an empty one erase a real one) names the deployment's, against DESIGN's rule
    /// that the two agree. Before any real model (Azure's prompt-filter chunk) there is
    /// nothing to stamp but a guess, and the chunk passes as sent.
    pub fn stamp_and_record(&mut self, mut chunk: Chunk, upstream_model: &str) -> Chunk {
        assert!(self.committed, "nothing is delivered before commit");
        let mut changed = false;
        // One pass over the chunk's fields (a chunk comes every few tokens). Only `insert`s
        // below add keys, in the order they always did.
        let mut has_our_id = false;
        for (key, value) in chunk.object.iter_mut() {
            match (key, value) {
                ("id", Top::Json(id)) => has_our_id = self.response_id.as_ref() == Some(&*id),
                // Azure's prompt-filter chunk comes first with `created: 0`: no time, as
                // the non-stream answer (which skips it) reads it.
                ("created", Top::Json(created))
                    if self.created.is_none() && created.as_u64() != Some(0) =>
                {
                    self.created = Some(created.clone());
                }
                // A continuation's chunks say the answer's time, as they say its id: the
                // SDKs read the first chunk's (openai-python) or the last's (openai-node).
                // One attempt's own pass as sent (Ollama's say each chunk's time).
                ("created", Top::Json(created)) if self.continuing => {
                    if let Some(first) = self.created.as_ref().filter(|f| *f != created) {
                        created.clone_from(first);
                        changed = true;
                    }
                }
                ("choices", Top::Choices(choices)) => {
                    changed |= self.drop_repeated_roles(choices);
                }
                // A usage of all zeros is a placeholder, not a report (MiniMax puts one on
                // every content chunk; a real report counts the prompt at least): it
                // neither stands for the attempt's usage nor carries the earlier sums.
                ("usage", Top::Json(Value::Object(usage))) if counters(usage) != [0; 3] => {
                    self.attempt_usage = Some(usage.clone());
                    changed |= add_counts(usage, &self.earlier);
                }
                _ => {}
            }
        }
        if let (Some(id), false) = (&self.response_id, has_our_id) {
            chunk.object.insert("id", Top::Json(id.clone()));
            changed = true;
        }
        let stamp = match chunk.model.as_deref() {
            None => Some(upstream_model),
            // After a failure past commit, a chunk of the next attempt that names no model
            // yet is still that attempt's: left empty, the non-stream answer (which never
            // lets an empty one erase a real one) would name the model that failed.
            Some("") => match (&self.last_model, self.continuing) {
                (Some(model), _) => Some(model.as_str()),
                (None, true) => Some(upstream_model),
                (None, false) => None,
            },
            Some(_) => None,
        };
        if let Some(model) = stamp {
            let model = model.to_string();
            chunk
                .object
                .insert("model", Top::Json(Value::String(model.clone())));
            chunk.model = Some(model);
            changed = true;
        }
        if let Some(model) = chunk.model.as_deref().filter(|m| !m.is_empty()) {
            if self.last_model.as_deref() != Some(model) {
                self.last_model = Some(model.to_string());
            }
        }
        if changed {
            chunk.raw = None;
        }
        if !chunk.usage_only {
            self.delivered += 1;
        }
        if chunk.payload_bytes > 0 {
            self.attempt_chunks += 1;
        }
        self.text.push_str(&chunk.text);
        self.continuable &= chunk.continuable;
        chunk
    }

    /// Removes the `role` of every choice delta whose choice already had one; whether any
    /// was removed.
    fn drop_repeated_roles(&mut self, choices: &mut [Choice]) -> bool {
        let mut changed = false;
        for (position, choice) in choices.iter_mut().enumerate() {
            let index = choice.index().unwrap_or(position as u64);
            let Choice::Object(choice) = choice else {
                continue;
            };
            if let Some(ChoiceField::Delta(delta)) = choice.get_mut("delta") {
                if delta.contains_key("role") && !self.roles.insert(index) {
                    delta.shift_remove("role");
                    changed = true;
                }
            }
        }
        changed
    }

    /// After an attempt that delivered something failed: folds its usage into the
    /// earlier attempts' (its reported usage, else one completion token per content chunk
    /// it delivered) and decides what the next attempt may be asked. `budget` is the
    /// client's `max_completion_tokens` or `max_tokens`; `max_prefix_bytes` bounds the text
    /// a continuation carries (`max_upstream_body_bytes`): past it, answers continued again
    /// and again would grow the gateway's memory and each continuation's request without
    /// end, one upstream answer's worth per attempt.
    ///
    /// `unfit` says why the request's answers can never be continued (see
    /// `ChatRequest::unfit_for_continuation`): a fresh answer is still asked for when
    /// nothing was delivered, never a continuation.
    pub fn after_failure(
        &mut self,
        budget: Option<u64>,
        max_prefix_bytes: usize,
        unfit: Option<&'static str>,
    ) -> Next {
        let usage = self.attempt_usage.take().unwrap_or_else(|| {
            let estimate = Value::from(self.attempt_chunks);
            Map::from_iter([
                ("completion_tokens".to_string(), estimate.clone()),
                ("total_tokens".to_string(), estimate),
            ])
        });
        fold_counts(&mut self.earlier, &usage);
        self.attempt_chunks = 0;
        let model = self.last_model.take();
        self.continuing = true;
        if !self.continuable {
            return Next::Stop("what was delivered is not text of a single choice");
        }
        if self.text.is_empty() {
            return Next::Fresh;
        }
        if let Some(reason) = unfit {
            return Next::Stop(reason);
        }
        // Spent is judged before the prefix's size: an answer that is whole needs no
        // continuation to carry it.
        let tokens_left = match budget {
            None => None,
            Some(b) => match b
                .checked_sub(count(&self.earlier, "completion_tokens"))
                .filter(|left| *left > 0)
            {
                Some(left) => Some(left),
                None => return Next::Spent { model },
            },
        };
        if self.text.len() > max_prefix_bytes {
            return Next::Stop("the answer so far is over max_upstream_body_bytes");
        }
        Next::Continue {
            prefix: self.text.clone(),
            tokens_left,
        }
    }
}

impl CommitState {
    /// The top-level fields of an end the gateway writes itself (`Next::Spent`): the
    /// answer's `created`, and what every chunk says it is. `id` and `model` are stamped
    /// as on any chunk.
    pub fn end_fields(&self) -> Map<String, Value> {
        let mut top = Map::new();
        if let Some(created) = &self.created {
            top.insert("created".into(), created.clone());
        }
        top.insert("object".into(), "chat.completion.chunk".into());
        top
    }

    /// The usage of every attempt that contributed, for an end the gateway writes itself
    /// (`Next::Spent`), with each total it never had as 0 (the SDKs' `CompletionUsage`
    /// requires all three). Taken: the usage chunk that carries it reports it whole, and
    /// nothing is added to it again.
    pub fn take_usage_so_far(&mut self) -> Map<String, Value> {
        let mut usage = std::mem::take(&mut self.earlier);
        for name in USAGE_COUNTERS {
            usage.entry(name).or_insert(Value::from(0));
        }
        usage
    }
}

fn counters(usage: &Map<String, Value>) -> [u64; 3] {
    USAGE_COUNTERS.map(|name| count(usage, name))
}

fn count(usage: &Map<String, Value>, name: &str) -> u64 {
    usage.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// Adds `sums` (see [`fold_counts`]) to every whole count of `usage` at the same place,
/// one object deep; whether any changed. A place `usage` does not have is not made:
/// another provider's counter in an answer the last one reported is not invented.
fn add_counts(usage: &mut Map<String, Value>, sums: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (name, value) in usage.iter_mut() {
        match (value, sums.get(name)) {
            (Value::Object(inner), Some(Value::Object(sums))) => {
                changed |= add_counts_here(inner, sums);
            }
            (value, Some(sum)) => changed |= add_count(value, sum),
            (_, None) => {}
        }
    }
    changed
}

fn add_counts_here(usage: &mut Map<String, Value>, sums: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (name, value) in usage.iter_mut() {
        if let Some(sum) = sums.get(name) {
            changed |= add_count(value, sum);
        }
    }
    changed
}

fn add_count(value: &mut Value, sum: &Value) -> bool {
    match (value.as_u64(), sum.as_u64()) {
        // Usage is the upstreams' to report: a huge count saturates, never overflows.
        (Some(n), Some(sum)) if sum > 0 => {
            *value = Value::from(n.saturating_add(sum));
            true
        }
        _ => false,
    }
}

/// Folds `usage`'s whole counts, and those of its objects one deep, into `sums`.
fn fold_counts(sums: &mut Map<String, Value>, usage: &Map<String, Value>) {
    for (name, value) in usage {
        match value {
            Value::Object(inner) => {
                let entry = sums
                    .entry(name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(sums) = entry {
                    for (name, value) in inner {
                        fold_count(sums, name, value);
                    }
                }
            }
            value => fold_count(sums, name, value),
        }
    }
}

fn fold_count(sums: &mut Map<String, Value>, name: &str, value: &Value) {
    let Some(n) = value.as_u64() else {
        return;
    };
    let sum = sums.get(name).and_then(Value::as_u64).unwrap_or(0);
    sums.insert(name.to_string(), Value::from(sum.saturating_add(n)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::chunk::{ChunkLimits, Payload, parse_data};
    use rand::SeedableRng;

    fn chunk(s: &str) -> Chunk {
        match parse_data(s, &ChunkLimits::default()).unwrap() {
            Payload::Chunk(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn the_response_id_is_the_committing_attempts_own() {
        let mut s = CommitState::new();
        assert_eq!(s.commit(Some("up-1"), &mut rng()), "up-1");
        let later = s.stamp_and_record(
            chunk(r#"{"id":"other","choices":[{"index":0,"delta":{"content":"b"}}]}"#),
            "m",
        );
        assert_eq!(
            later.object.to_value()["id"],
            "up-1",
            "every chunk carries one id"
        );
        let mut s = CommitState::new();
        let id = s.commit(None, &mut rng());
        assert!(id.starts_with("chatcmpl-") && id.len() == 33, "{id}");
    }

    #[test]
    fn an_empty_model_names_this_attempts_last_and_never_an_earlier_attempts() {
        let model = |c: &Chunk| c.object.to_value()["model"].clone();
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        let first = s.stamp_and_record(chunk(r#"{"model":"","choices":[]}"#), "deployment");
        assert_eq!(model(&first), "", "nothing named yet: passed as sent");
        let content = r#"{"model":"gpt-35-turbo","choices":[{"index":0,"delta":{"content":"a"}}]}"#;
        s.stamp_and_record(chunk(content), "deployment");
        let annotation = r#"{"model":"","choices":[{"index":0,"finish_reason":null}]}"#;
        let after = s.stamp_and_record(chunk(annotation), "deployment");
        assert_eq!(model(&after), "gpt-35-turbo");
        assert_eq!(after.model.as_deref(), Some("gpt-35-turbo"));
        // The attempt fails; the next one's chunks must not name the failed model, and
        // name the next one's even before it names one itself (the non-stream answer keeps
        // the last real name, which would be the failed one's).
        s.after_failure(None, 1 << 20, None);
        let next = s.stamp_and_record(chunk(annotation), "fallback");
        assert_eq!(model(&next), "fallback");
    }

    #[test]
    fn roles_are_stripped_per_choice() {
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        let c = s.stamp_and_record(
            chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"a"}}]}"#),
            "m",
        );
        assert_eq!(
            c.object.to_value()["choices"][0]["delta"]["role"],
            "assistant"
        );
        let c = s.stamp_and_record(
            chunk(r#"{"choices":[{"index":1,"delta":{"role":"assistant","content":"b"}},{"index":0,"delta":{"role":"assistant","content":"c"}}]}"#),
            "m",
        );
        assert_eq!(
            c.object.to_value()["choices"][0]["delta"]["role"],
            "assistant",
            "choice 1's first"
        );
        assert!(
            c.object.to_value()["choices"][1]["delta"]
                .get("role")
                .is_none(),
            "choice 0's second"
        );
    }

    /// A continuation carries what was delivered: past `max_upstream_body_bytes` of it,
    /// the answer is not continued again (memory and request size stay bounded).
    #[test]
    fn a_prefix_over_the_limit_is_not_continued() {
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        s.stamp_and_record(
            chunk(r#"{"choices":[{"index":0,"delta":{"content":"Hello"}}]}"#),
            "m",
        );
        assert!(matches!(
            s.after_failure(None, 5, None),
            Next::Continue { .. }
        ));
        s.stamp_and_record(
            chunk(r#"{"choices":[{"index":0,"delta":{"content":"!"}}]}"#),
            "m",
        );
        assert_eq!(
            s.after_failure(None, 5, None),
            Next::Stop("the answer so far is over max_upstream_body_bytes")
        );
    }

    #[test]
    fn continuation_budget_and_usage() {
        let (mut s, next) = two_pieces_then_failure(|t| {
            format!(r#"{{"choices":[{{"index":0,"delta":{{"content":"{t}"}}}}]}}"#)
        });
        assert_eq!(next, continue_with_3(), "two chunks count as two tokens");
        s.stamp_and_record(
            chunk(r#"{"choices":[{"index":0,"delta":{"content":"o"}}]}"#),
            "m",
        );
        let usage = s.stamp_and_record(
            chunk(r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#),
            "m",
        );
        assert_eq!(
            usage.object.to_value()["usage"],
            serde_json::json!({"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}),
            "usage covers both attempts"
        );
        assert_eq!(
            s.after_failure(Some(3), usize::MAX, None),
            Next::Spent {
                model: Some("m".into())
            },
            "the budget is spent, and the answer ends with what the last attempt named"
        );
        assert_eq!(
            Value::Object(s.take_usage_so_far()),
            serde_json::json!({"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}),
            "the end's usage covers every attempt"
        );
        assert_eq!(
            Value::Object(s.take_usage_so_far()),
            serde_json::json!({"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}),
            "taken once"
        );
    }

    /// Azure's prompt-filter chunk comes first with `created: 0`: the end the gateway
    /// writes says the answer's time, as the non-stream answer does, not that 0.
    #[test]
    fn an_end_says_the_first_created_that_is_a_time() {
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        s.stamp_and_record(
            chunk(r#"{"created":0,"model":"","choices":[],"prompt_filter_results":[]}"#),
            "m",
        );
        assert_eq!(s.end_fields().get("created"), None);
        s.stamp_and_record(
            chunk(r#"{"created":7,"choices":[{"index":0,"delta":{"content":"He"}}]}"#),
            "m",
        );
        assert_eq!(s.end_fields()["created"], 7);
    }

    /// A continuation's chunks say the answer's `created`, as they say its `id`: the
    /// non-stream answer and openai-python read the first, openai-node the last chunk's,
    /// so a continuation that said its own time made them disagree. One attempt's own
    /// chunks pass as sent (Ollama's `created` is each chunk's time).
    #[test]
    fn a_continuation_says_the_answers_created() {
        let created = |c: &Chunk| c.object.to_value()["created"].clone();
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        let a = r#"{"created":7,"choices":[{"index":0,"delta":{"content":"He"}}]}"#;
        s.stamp_and_record(chunk(a), "m");
        let b = r#"{"created":8,"choices":[{"index":0,"delta":{"content":"l"}}]}"#;
        assert_eq!(created(&s.stamp_and_record(chunk(b), "m")), 8, "as sent");
        s.after_failure(None, 1 << 20, None);
        let c = r#"{"created":9,"choices":[{"index":0,"delta":{"content":"lo"}}]}"#;
        let next = s.stamp_and_record(chunk(c), "fallback");
        assert_eq!(created(&next), 7);
        assert!(next.raw.is_none(), "written anew");
        assert_eq!(s.end_fields()["created"], 7);
    }

    /// An answer whose budget is spent ends whatever its size: it needs no continuation
    /// to carry it.
    #[test]
    fn a_spent_budget_ends_the_answer_even_past_the_prefix_bound() {
        let (mut s, _) = two_pieces_then_failure(|t| {
            format!(r#"{{"created":7,"choices":[{{"index":0,"delta":{{"content":"{t}"}}}}]}}"#)
        });
        s.stamp_and_record(
            chunk(r#"{"created":8,"choices":[{"index":0,"delta":{"content":"o!"}}]}"#),
            "m2",
        );
        assert_eq!(
            s.after_failure(Some(3), 2, None),
            Next::Spent {
                model: Some("m2".into())
            }
        );
        assert_eq!(
            Value::Object(s.end_fields()),
            serde_json::json!({"created":7,"object":"chat.completion.chunk"}),
            "the first chunk's `created` is the answer's"
        );
    }

    /// The counters inside a usage (cached and reasoning tokens, DeepSeek's cache hits)
    /// cover the same attempts as its totals. Before, the totals were summed and the rest
    /// were the last attempt's alone: 900 cached of a 1,010-token prompt read as 10 of
    /// 1,010, and a bill read from it charged the cached tokens at the full price.
    #[test]
    fn the_counters_inside_a_usage_are_summed_as_its_totals() {
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        s.stamp_and_record(
            chunk(r#"{"choices":[{"index":0,"delta":{"content":"He"}}]}"#),
            "m",
        );
        s.stamp_and_record(
            chunk(r#"{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":50,"total_tokens":1050,"prompt_tokens_details":{"cached_tokens":900},"completion_tokens_details":{"reasoning_tokens":40,"audio_tokens":0},"prompt_cache_hit_tokens":900,"prompt_cache_miss_tokens":100,"cost":0.5,"model":"x"}}"#),
            "m",
        );
        assert!(matches!(
            s.after_failure(None, usize::MAX, None),
            Next::Continue { .. }
        ));
        let usage = s.stamp_and_record(
            chunk(r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":null,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":10,"cost":0.25,"model":"y"}}"#),
            "m",
        );
        assert_eq!(
            usage.object.to_value()["usage"],
            serde_json::json!({
                "prompt_tokens": 1010, "completion_tokens": 55, "total_tokens": 1065,
                "prompt_tokens_details": {"cached_tokens": 900},
                // `null` stands for nothing to add to: the earlier counts are not invented
                // a place.
                "completion_tokens_details": null,
                "prompt_cache_hit_tokens": 900, "prompt_cache_miss_tokens": 110,
                // Only whole counts are summed; what else a provider puts there is its own.
                "cost": 0.25, "model": "y",
            }),
        );
    }

    /// MiniMax puts `usage` with zero counts on every content chunk: a placeholder, not a
    /// report. Taken as one, a cut attempt's tokens went missing from the summed usage and
    /// from the continuation's budget.
    #[test]
    fn a_zero_usage_on_a_content_chunk_is_no_report() {
        let (_, next) = two_pieces_then_failure(|t| {
            format!(
                r#"{{"choices":[{{"index":0,"delta":{{"content":"{t}","role":"assistant","name":"MiniMax AI"}}}}],"usage":{{"total_tokens":0,"total_characters":0}}}}"#
            )
        });
        assert_eq!(
            next,
            continue_with_3(),
            "two chunks count as two tokens, as without a usage field"
        );
    }

    /// A committed answer that delivered "He" and "ll", each in a chunk `shape` makes of
    /// its text, then failed; and what it may ask next with a budget of 5 tokens.
    fn two_pieces_then_failure(shape: impl Fn(&str) -> String) -> (CommitState, Next) {
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        for t in ["He", "ll"] {
            s.stamp_and_record(chunk(&shape(t)), "m");
        }
        let next = s.after_failure(Some(5), usize::MAX, None);
        (s, next)
    }

    fn continue_with_3() -> Next {
        Next::Continue {
            prefix: "Hell".into(),
            tokens_left: Some(3),
        }
    }

    #[test]
    fn only_text_can_be_continued() {
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        s.stamp_and_record(
            chunk(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f"}}]}}]}"#),
            "m",
        );
        assert!(matches!(
            s.after_failure(None, usize::MAX, None),
            Next::Stop(_)
        ));
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        s.stamp_and_record(
            chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#),
            "m",
        );
        assert_eq!(s.after_failure(None, usize::MAX, None), Next::Fresh);
    }
    /// Usage is the upstreams' to report, huge numbers included: the sum across attempts
    /// saturates rather than overflowing (a panic in debug builds, a wrapped count in
    /// release).
    #[test]
    fn usage_sums_saturate() {
        let mut s = CommitState::new();
        s.commit(None, &mut rng());
        s.stamp_and_record(
            chunk(r#"{"choices":[],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1,"total_tokens":18446744073709551615}}"#),
            "m",
        );
        s.stamp_and_record(
            chunk(r#"{"choices":[{"index":0,"delta":{"content":"He"}}]}"#),
            "m",
        );
        assert!(matches!(
            s.after_failure(None, usize::MAX, None),
            Next::Continue { .. }
        ));
        let usage = s.stamp_and_record(
            chunk(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":18446744073709551615,"total_tokens":18446744073709551615}}"#),
            "m",
        );
        assert_eq!(
            usage.object.to_value()["usage"],
            serde_json::json!({"prompt_tokens":u64::MAX,"completion_tokens":u64::MAX,"total_tokens":u64::MAX}),
        );
        assert!(matches!(
            s.after_failure(None, usize::MAX, None),
            Next::Continue { .. }
        ));
    }
}
