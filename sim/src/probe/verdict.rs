//! The verdict of a probe, which cannot be vacuous.
//!
//! Owns: comparing the two modes of one request (outcome, provider calls, `model`, text,
//! reported fallbacks), naming the seed's two symptoms when they show (a stream that names
//! the primary after a fallback; a mid-stream failure that the non-stream request survives)
//! apart from a mere naming convention, checking that every scripted fault the request relies
//! on fired and that the scenario's `expect` holds where an outside observer can see it, and
//! the verdict with its exit code. Does not send anything (`probe`) or lay out the report.
//!
//! `equivalent` is only said when something was exercised: both modes reached the providers
//! the scenario reaches, every fault it relies on fired in both, and both meet its `expect`.

use std::collections::{BTreeMap, BTreeSet};

use switchback::catalog::Catalog;

use super::Observed;
use super::reference::Expected;
use crate::scenario::{RequestSpec, Scenario};
use crate::world::gateway_config;

/// The outcome of a probe, of one request or of the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// The modes agree, on a request that exercised what the scenario relies on.
    Equivalent,
    /// Nothing was compared: a fault never fired, neither mode reached a provider, neither
    /// answered in time, or the gateway did not do what the scenario describes.
    Inconclusive,
    /// The probe could not be carried out (gateway down, ports taken, setup failed, ...).
    CouldNotRun,
    /// The modes differ.
    Different,
}

impl Verdict {
    /// The exit status of `switchback probe`. 2 is also what a mistyped command line gets,
    /// which did not run either.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Equivalent => 0,
            Verdict::Different => 1,
            Verdict::CouldNotRun => 2,
            Verdict::Inconclusive => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Equivalent => "equivalent",
            Verdict::Different => "different",
            Verdict::CouldNotRun => "could not run",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// The verdict of a whole run: a difference found is found, whatever else happened; then
    /// a run that could not be completed; then one that tested nothing somewhere.
    pub fn overall(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        verdicts.into_iter().max().unwrap_or(Verdict::Inconclusive)
    }
}

/// A request's verdict, why, and what else is worth knowing.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Why (the first is the main reason); empty for `equivalent`.
    pub reasons: Vec<String>,
    /// Expectations not met and faults not fired, per mode, and hints.
    pub notes: Vec<String>,
}

impl Judgement {
    /// This judgement, for a request whose two observations may not show the gateway's own
    /// doing (`why`: the pause was cut short of a cooldown). A difference is then not
    /// claimed: it becomes `inconclusive`, with `why` as its reason and the differences
    /// kept after it. Other verdicts stand, noted.
    pub fn taint(&mut self, why: &str) {
        if self.verdict == Verdict::Different {
            self.verdict = Verdict::Inconclusive;
            self.reasons = std::iter::once(format!("not judged: {why}"))
                .chain(
                    std::mem::take(&mut self.reasons)
                        .into_iter()
                        .map(|r| format!("seen: {r}")),
                )
                .collect();
        } else {
            self.notes.push(why.to_string());
        }
    }

    /// [`Judgement::taint`] for a request whose provider calls may be another's (`why`: the
    /// gateway went on calling providers for an earlier request whose client gave up). An
    /// agreement is not claimed either: the late calls may be what fired the faults this
    /// request's verdict relies on.
    pub fn taint_calls(&mut self, why: &str) {
        if self.verdict == Verdict::Equivalent {
            self.verdict = Verdict::Inconclusive;
            self.reasons = vec![format!("not judged: {why}")];
        } else {
            self.taint(why);
        }
    }
}

/// What the names of one request's models mean: which names are its primary's, and which
/// provider calls go to its primary.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    primary_names: BTreeSet<String>,
    primary_calls: BTreeSet<(String, String)>,
}

impl Naming {
    /// The requested group's own names: the group (as requested), each deployment's model
    /// with and without its provider prefix, and what its providers report.
    pub fn of(scenario: &Scenario, spec: &RequestSpec) -> Naming {
        let mut n = Naming::default();
        n.primary_names.insert(spec.model.clone());
        let Ok(catalog) = Catalog::new(&gateway_config(scenario)) else {
            return n;
        };
        for (d, entry) in catalog.deployments.iter().zip(&scenario.gateway.model_list) {
            if entry.model_name != spec.model {
                continue;
            }
            n.primary_names.insert(d.upstream_model.clone());
            n.primary_names.insert(entry.litellm_params.model.clone());
            n.primary_calls
                .insert((d.endpoint.host.clone(), d.upstream_model.clone()));
            if let Some(reported) = scenario
                .providers
                .iter()
                .find(|p| p.host == d.endpoint.host)
                .and_then(|p| p.model.clone())
            {
                n.primary_names.insert(reported);
            }
        }
        n
    }

    /// The request was served by something other than its primary: its last provider call
    /// went elsewhere (or, with a mock flag, the primary was never called at all).
    fn fell_back(&self, o: &Observed) -> bool {
        o.calls
            .last()
            .is_some_and(|(h, c)| !self.primary_calls.contains(&(h.clone(), c.model.clone())))
    }
}

impl Naming {
    /// The first chunk the serving (fallback) call produced that names the primary (a
    /// name the serving call's own model is not): every chunk from the first that brings
    /// the text that call sent (the stream's last `planned` bytes, whether it continued an
    /// answer or started afresh), not only the last (a gateway can put the right name on
    /// its last chunk alone).
    fn primary_named_by_the_fallback<'a>(&self, s: &'a Observed) -> Option<(usize, &'a str)> {
        let (_, serving) = s.calls.last()?;
        let before = s.client.text.len().checked_sub(serving.planned.len())?;
        let mut delivered = 0;
        s.client.chunks.iter().enumerate().find_map(|(i, chunk)| {
            delivered += chunk.text.len();
            let model = chunk.model.as_deref()?;
            let names_primary = self.primary_names.contains(model) && model != serving.model;
            (delivered > before && names_primary).then_some((i, model))
        })
    }
}

/// The chunk offset of a fault outcome (`error_event@3 429` → 3), if it has one.
fn fault_offset(outcome: &str) -> Option<usize> {
    let rest = outcome.split_once('@')?.1;
    rest.split_whitespace().next()?.parse().ok()
}

/// The request met a fault after some chunks in this mode (a mid-stream failure).
fn met_midstream_fault(o: &Observed) -> bool {
    o.calls
        .iter()
        .any(|(_, c)| c.fault_fired && fault_offset(&c.outcome).is_some_and(|k| k > 0))
}

/// Compares the two modes of one request (DESIGN.md's equivalence, as far as an external
/// gateway lets us see it). Each difference starts with what differs.
pub fn compare(n: &Observed, s: &Observed, naming: &Naming) -> Vec<String> {
    let mut d = Vec::new();
    let (n_out, s_out) = (n.outcome(), s.outcome());
    if n_out != s_out {
        let streamed_text = s
            .client
            .chunks
            .iter()
            .filter(|c| !c.text.is_empty())
            .count();
        if n.client.succeeded() && streamed_text > 0 {
            d.push(format!(
                "outcome: mid-stream failure that non_stream survives: the stream failed after {streamed_text} chunk(s) of text ({s_out}), non_stream {n_out}"
            ));
        } else {
            d.push(format!("outcome: non_stream {n_out}, stream {s_out}"));
        }
    }
    let (nc, sc) = (n.call_lines(), s.call_lines());
    if nc != sc {
        let i = nc
            .iter()
            .zip(&sc)
            .position(|(a, b)| a != b)
            .unwrap_or(nc.len().min(sc.len()));
        d.push(format!(
            "provider calls diverge at call {}: non_stream {}, stream {}",
            i + 1,
            nc.get(i).map_or("(none)", String::as_str),
            sc.get(i).map_or("(none)", String::as_str)
        ));
    }
    let both_ok = n.client.succeeded() && s.client.succeeded();
    let primary_chunk = if both_ok && naming.fell_back(s) {
        naming.primary_named_by_the_fallback(s)
    } else {
        None
    };
    if let Some((i, model)) = primary_chunk {
        d.push(format!(
            "model: stream names the primary after a fallback: chunk {} of the fallback's answer says `{model}`, non_stream says `{}` (served by {})",
            i + 1,
            n.client.model.as_deref().unwrap_or("-"),
            s.calls
                .last()
                .map_or("-".to_string(), |(h, c)| format!("{h} {}", c.model))
        ));
    } else if both_ok && n.client.model != s.client.model {
        let (nm, sm) = (
            n.client.model.as_deref().unwrap_or("-"),
            s.client.model.as_deref().unwrap_or("-"),
        );
        if naming.fell_back(s) && naming.primary_names.contains(sm) {
            d.push(format!(
                "model: stream names the primary after a fallback: stream chunks say `{sm}`, non_stream says `{nm}` (served by {})",
                s.calls
                    .last()
                    .map_or("-".to_string(), |(h, c)| format!("{h} {}", c.model))
            ));
        } else {
            d.push(format!(
                "model: naming differs: non_stream `{nm}`, stream `{sm}`"
            ));
        }
    }
    if both_ok && n.client.text != s.client.text {
        if met_midstream_fault(s) && n.client.text.starts_with(&s.client.text) {
            d.push(format!(
                "text: mid-stream failure that non_stream survives: the stream ended cleanly after {:?}, non_stream has {:?}",
                s.client.text, n.client.text
            ));
        } else {
            d.push(format!(
                "text: non_stream {:?}, stream {:?}",
                n.client.text, s.client.text
            ));
        }
    }
    if let (Some(a), Some(b)) = (n.fallbacks_header(), s.fallbacks_header()) {
        if a != b {
            d.push(format!("reported fallbacks: non_stream {a}, stream {b}"));
        }
    }
    d
}

/// Where one mode falls short of the scenario's `expect` (status, content, provider calls in
/// order and per host).
pub fn expectation_misses(o: &Observed, e: &Expected) -> Vec<String> {
    let mut misses = Vec::new();
    let c = &o.client;
    let status = c.error.as_ref().map(|e| e.status).or(c.status);
    if let Some(want) = e.status {
        if status != Some(want) {
            misses.push(format!("status: expected {want}, got {}", o.outcome()));
        }
    }
    if let Some(want) = &e.content {
        if &c.text != want {
            misses.push(format!("content: expected {want:?}, got {:?}", c.text));
        }
    }
    if let Some(want) = &e.calls {
        let got: Vec<(String, String)> = o
            .calls
            .iter()
            .map(|(h, c)| (h.clone(), c.model.clone()))
            .collect();
        if &got != want {
            let show = |calls: &[(String, String)]| {
                if calls.is_empty() {
                    "none".to_string()
                } else {
                    calls
                        .iter()
                        .map(|(h, m)| format!("{h} {m}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            misses.push(format!(
                "provider calls: expected {}, got {}",
                show(want),
                show(&got)
            ));
        }
    }
    if let Some(want) = e.call_count {
        if o.calls.len() != want {
            misses.push(format!(
                "provider calls: expected {want} (attempt_count), got {}",
                o.calls.len()
            ));
        }
    }
    for (host, want) in e.host_calls.iter().flatten() {
        let got = o.calls.iter().filter(|(h, _)| h == host).count();
        if got != *want as usize {
            misses.push(format!("calls to {host}: expected {want}, got {got}"));
        }
    }
    misses
}

/// Where a whole mode's run falls short of the scenario's `total_calls`: `got` is what
/// each provider host received in that mode, all requests together.
pub fn total_calls_misses(
    want: Option<&BTreeMap<String, u32>>,
    got: &BTreeMap<String, u32>,
) -> Vec<String> {
    want.into_iter()
        .flatten()
        .filter_map(|(host, n)| {
            let seen = got.get(host).copied().unwrap_or(0);
            (seen != *n).then(|| format!("total_calls to {host}: expected {n}, got {seen}"))
        })
        .collect()
}

/// Why the answer `o` succeeded with is not what its serving provider call wrote (the last
/// call, whose text follows the prefix it was asked to continue, if any): two modes that
/// agree on an answer cut short, emptied, or doubled by a fallback that started over are no
/// pass, and without a `content:` expectation nothing else would notice. Not judged for a
/// request with stop sequences (the gateway ends an answer where it finds one across a
/// continuation's seam), nor when the serving call's own fault fired (an answer ended after
/// its finish, or at the token budget, holds what came before the fault), nor for calls
/// that may be another request's.
pub(super) fn unwritten_answer(o: &Observed) -> Option<String> {
    if !o.client.succeeded() || o.tainted.is_some() {
        return None;
    }
    let (host, serving) = o.calls.last()?;
    let stops = serving.body.get("stop").is_some_and(|s| !s.is_null());
    if stops || serving.fault_fired {
        return None;
    }
    let wrote = format!(
        "{}{}",
        serving.continuation.as_deref().unwrap_or(""),
        serving.planned
    );
    (o.client.text != wrote).then(|| {
        format!(
            "the answer is not what the serving provider call wrote ({host}#{}): it wrote \
             {wrote:?}, the client got {:?}",
            serving.call, o.client.text
        )
    })
}

/// Scripted faults the request relies on that did not fire in this mode.
pub fn unfired(o: &Observed, e: &Expected) -> Vec<String> {
    let fired: BTreeSet<(String, String)> = o
        .calls
        .iter()
        .filter(|(_, c)| c.fault_fired)
        .map(|(h, c)| (h.clone(), c.outcome.clone()))
        .collect();
    e.faults
        .difference(&fired)
        .map(|(h, f)| format!("{h} {f}"))
        .collect()
}

fn connect_failure(o: &Observed) -> Option<&str> {
    o.client
        .broken
        .as_deref()
        .filter(|b| b.starts_with("connect:"))
}

fn timed_out(o: &Observed) -> bool {
    o.client
        .broken
        .as_deref()
        .is_some_and(|b| b.starts_with(crate::probe::TIMED_OUT))
}

/// Judges one request from its two modes and what it relies on in each.
pub fn judge(
    n: &Observed,
    s: &Observed,
    expected: (&Expected, &Expected),
    naming: &Naming,
    key: Option<&str>,
) -> Judgement {
    let (en, es) = expected;
    if let Some(e) = connect_failure(n).or(connect_failure(s)) {
        return Judgement {
            verdict: Verdict::CouldNotRun,
            reasons: vec![format!("the gateway did not take the connection ({e})")],
            notes: Vec::new(),
        };
    }
    let mut notes = Vec::new();
    let (misses_n, misses_s) = (expectation_misses(n, en), expectation_misses(s, es));
    let (unfired_n, unfired_s) = (unfired(n, en), unfired(s, es));
    for (mode, misses) in [("non_stream", &misses_n), ("stream", &misses_s)] {
        for m in misses {
            notes.push(format!("expect not met ({mode}): {m}"));
        }
    }
    for (mode, faults) in [("non_stream", &unfired_n), ("stream", &unfired_s)] {
        for f in faults {
            notes.push(format!("scripted fault never fired ({mode}): {f}"));
        }
    }
    // A count one mode reports and the other keeps quiet about is not a difference in the
    // answer (a stream's headers leave before a later fallback), but a client reading it
    // sees it, so it is shown.
    match (n.fallbacks_header(), s.fallbacks_header()) {
        (Some(count), None) | (None, Some(count)) if count != "0" => {
            let (says, quiet) = if n.fallbacks_header().is_some() {
                ("non_stream", "stream")
            } else {
                ("stream", "non_stream")
            };
            notes.push(format!(
                "reported fallbacks: {says} reports {count}, {quiet} reports none"
            ));
        }
        _ => {}
    }
    let differences = compare(n, s, naming);
    // A broken answer is no outcome (a timeout is judged below): the modes breaking prove
    // nothing, alike or not. This comes before the differences, because a broken answer's
    // words are the client's and depend on the mode (`body: ...` against `stream broke: ...`),
    // so two broken answers always "differ" in outcome; what else differs is kept as notes.
    let broke = |o: &Observed| o.client.broken.clone().filter(|_| !timed_out(o));
    if let (Some(bn), Some(bs)) = (broke(n), broke(s)) {
        notes.extend(
            differences
                .into_iter()
                .filter(|d| !d.starts_with("outcome:"))
                .map(|d| format!("also differs (not judged, nothing was answered): {d}")),
        );
        return Judgement {
            verdict: Verdict::CouldNotRun,
            reasons: vec![format!(
                "the gateway broke the answer in both modes (non_stream: {bn}; stream: {bs})"
            )],
            notes,
        };
    }
    if !differences.is_empty() {
        return Judgement {
            verdict: Verdict::Different,
            reasons: differences,
            notes,
        };
    }
    let inconclusive = |reason: String, mut notes: Vec<String>| {
        if let (Some(k), Some(status)) = (key, n.client.error.as_ref().map(|e| e.status)) {
            if (400..=403).contains(&status) && n.calls.is_empty() {
                notes.push(format!(
                    "this request sends the scenario's key `{k}`: a gateway that does not know the key answers like this; create the keys with `--setup` (LiteLLM keeps keys in a database)"
                ));
            }
        }
        Judgement {
            verdict: Verdict::Inconclusive,
            reasons: vec![reason],
            notes,
        }
    };
    if timed_out(n) && timed_out(s) {
        return inconclusive(
            format!(
                "neither mode answered in time ({}); raise --timeout",
                n.outcome()
            ),
            notes,
        );
    }
    if (en.reaches_provider || es.reaches_provider) && n.calls.is_empty() && s.calls.is_empty() {
        return inconclusive(
            format!(
                "neither mode reached a provider (both: {}), where the scenario reaches one",
                n.outcome()
            ),
            notes,
        );
    }
    if !unfired_n.is_empty() || !unfired_s.is_empty() {
        let all: BTreeSet<&String> = unfired_n.iter().chain(&unfired_s).collect();
        return inconclusive(
            format!(
                "the scripted fault(s) the scenario relies on never fired: {}",
                all.into_iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            notes,
        );
    }
    if let Some(first) = misses_n.first().or(misses_s.first()) {
        return inconclusive(
            format!("the modes agree, but the scenario's expect does not hold: {first}"),
            notes,
        );
    }
    if let Some(why) = unwritten_answer(n).or_else(|| unwritten_answer(s)) {
        return inconclusive(format!("the modes agree, but {why}"), notes);
    }
    Judgement {
        verdict: Verdict::Equivalent,
        reasons: Vec::new(),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientResult, SeenChunk, SeenError};
    use crate::fake::CallRecord;

    fn call(host: &str, model: &str, outcome: &str, fired: bool) -> (String, CallRecord) {
        (
            host.to_string(),
            CallRecord {
                seq: 0,
                call: 1,
                model: model.to_string(),
                stream: true,
                continuation: None,
                continued: false,
                authorization: None,
                request_id: None,
                planned: String::new(),
                outcome: outcome.to_string(),
                fault_fired: fired,
                ..CallRecord::default()
            },
        )
    }

    fn ok(model: &str, text: &str, calls: Vec<(String, CallRecord)>) -> Observed {
        Observed {
            client: ClientResult {
                status: Some(200),
                model: Some(model.into()),
                text: text.into(),
                done: true,
                ..Default::default()
            },
            calls,
            tainted: None,
        }
    }

    fn streamed(models: &[&str], texts: &[&str], calls: Vec<(String, CallRecord)>) -> Observed {
        let mut o = ok(models[models.len() - 1], &texts.concat(), calls);
        o.client.chunks = models
            .iter()
            .zip(texts)
            .map(|(m, t)| SeenChunk {
                at_ms: 0,
                model: Some(m.to_string()),
                text: t.to_string(),
                raw: String::new(),
            })
            .collect();
        o
    }

    /// The known bug's request: primary `vertex_ai/lite` (upstream `lite` on host vertex),
    /// fallback `vertex_ai/flash` (upstream `flash` on host flash).
    fn naming() -> Naming {
        let mut n = Naming::default();
        n.primary_names
            .extend(["vertex_ai/lite".to_string(), "lite".to_string()]);
        n.primary_calls.insert(("vertex".into(), "lite".into()));
        n
    }

    /// The fallback serves "The quick brown fox".
    fn fault_then_fallback() -> Vec<(String, CallRecord)> {
        let mut fallback = call("flash", "flash", "ok", false);
        fallback.1.planned = "The quick brown fox".into();
        vec![call("vertex", "lite", "error_event@3 429", true), fallback]
    }

    #[test]
    fn chunks_naming_the_primary_after_a_fallback_are_the_seed_bug() {
        let n = ok("flash", "The quick brown fox", fault_then_fallback());
        let s = streamed(
            &["vertex_ai/lite", "vertex_ai/lite"],
            &["The quick brown", " fox"],
            fault_then_fallback(),
        );
        let d = compare(&n, &s, &naming());
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].starts_with("model: stream names the primary after a fallback"),
            "{d:?}"
        );
    }

    /// The seed bug with the right name on the last chunk alone: the chunks before it still
    /// say the primary's. A continued answer's own chunks (its prefix) may.
    #[test]
    fn any_chunk_of_the_fallback_naming_the_primary_is_the_seed_bug() {
        let mut fresh = fault_then_fallback();
        fresh[1].1.planned = "The quick brown fox".into();
        let s = streamed(
            &["flash", "vertex_ai/lite", "flash"],
            &["The quick brown", " fox", ""],
            fresh.clone(),
        );
        let n = ok("flash", "The quick brown fox", fresh);
        let d = compare(&n, &s, &naming());
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].starts_with(
                "model: stream names the primary after a fallback: chunk 2 of the fallback's answer says `vertex_ai/lite`"
            ),
            "{d:?}"
        );
        // Chunks the primary sent before its fault are its own, named as it named them.
        let mut continued = fault_then_fallback();
        continued[1].1.continuation = Some("The quick brown".into());
        continued[1].1.planned = " fox".into();
        let s = streamed(
            &["lite", "flash", "flash"],
            &["The quick brown", " fox", ""],
            continued.clone(),
        );
        let n = ok("flash", "The quick brown fox", continued);
        assert_eq!(compare(&n, &s, &naming()), Vec::<String>::new());
    }

    /// Both modes broken the same way is not equivalence: nothing was answered.
    #[test]
    fn both_modes_broken_could_not_run() {
        let expected = Expected {
            faults: BTreeSet::new(),
            calls: None,
            host_calls: None,
            call_count: None,
            status: None,
            content: None,
            reaches_provider: true,
        };
        let broken = || {
            let mut o = ok("flash", "", fault_then_fallback());
            o.client.status = None;
            o.client.done = false;
            o.client.broken = Some("request: connection closed before message completed".into());
            o
        };
        let j = judge(
            &broken(),
            &broken(),
            (&expected, &expected),
            &naming(),
            None,
        );
        assert_eq!(j.verdict, Verdict::CouldNotRun, "{j:?}");
        assert!(j.reasons[0].starts_with("the gateway broke the answer in both modes"));
    }

    /// The client words a broken answer by mode (`body: ...` for non_stream, `stream
    /// broke: ...` or a missing `[DONE]` for stream), so breaking in both modes never shows
    /// the same words; it is still nothing answered, not a difference.
    #[test]
    fn both_modes_broken_in_their_own_words_could_not_run() {
        let expected = Expected {
            reaches_provider: true,
            ..Expected::default()
        };
        let broken = |why: &str| {
            let mut o = ok("flash", "", fault_then_fallback());
            o.client.done = false;
            o.client.broken = Some(why.into());
            o
        };
        let n = broken("body: error reading a body from connection");
        let s = broken("stream ended without [DONE] or an error event");
        let j = judge(&n, &s, (&expected, &expected), &naming(), None);
        assert_eq!(j.verdict, Verdict::CouldNotRun, "{j:?}");
        assert!(
            j.reasons[0].starts_with("the gateway broke the answer in both modes"),
            "{j:?}"
        );
        // One mode broken and the other answered is a difference.
        let j = judge(
            &ok("flash", "hi", fault_then_fallback()),
            &s,
            (&expected, &expected),
            &naming(),
            None,
        );
        assert_eq!(j.verdict, Verdict::Different, "{j:?}");
    }

    /// A difference that may be an artefact of the run (a cut pause, a late call) is not
    /// claimed; an agreement stands, with the reason noted.
    #[test]
    fn a_tainted_difference_is_inconclusive() {
        let expected = Expected::default();
        let n = ok("flash", "The quick brown fox", fault_then_fallback());
        let s = ok("flash", "The quick", fault_then_fallback());
        let mut j = judge(&n, &s, (&expected, &expected), &naming(), None);
        assert_eq!(j.verdict, Verdict::Different);
        j.taint("the pause was cut");
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
        assert_eq!(j.reasons[0], "not judged: the pause was cut");
        assert!(j.reasons[1].starts_with("seen: text:"), "{j:?}");
        let mut same = judge(&n, &n, (&expected, &expected), &naming(), None);
        let before = same.verdict;
        same.taint("the pause was cut");
        assert_eq!(same.verdict, before);
        assert_eq!(
            same.notes.last().map(String::as_str),
            Some("the pause was cut")
        );
        // Calls that may be another request's take an agreement too: they may be what
        // fired the faults it relies on.
        let mut same = judge(&n, &n, (&expected, &expected), &naming(), None);
        assert_eq!(same.verdict, Verdict::Equivalent);
        same.taint_calls("the gateway was still calling");
        assert_eq!(same.verdict, Verdict::Inconclusive, "{same:?}");
        assert_eq!(same.reasons[0], "not judged: the gateway was still calling");
    }

    /// Two modes that agree on an answer the serving provider never wrote (cut short,
    /// emptied, doubled by a fallback that started over) are no pass: the text is held to
    /// what the serving call wrote, its continuation's prefix first.
    #[test]
    fn an_answer_the_serving_call_never_wrote_is_no_pass() {
        let expected = Expected {
            reaches_provider: true,
            ..Expected::default()
        };
        let mut calls = fault_then_fallback();
        let judged = |text: &str, calls: &Vec<(String, CallRecord)>| {
            let o = ok("flash", text, calls.clone());
            judge(&o, &o, (&expected, &expected), &naming(), None)
        };
        assert_eq!(
            judged("The quick brown fox", &calls).verdict,
            Verdict::Equivalent
        );
        for wrong in ["", "The quick", "The quick brown foxThe quick brown fox"] {
            let j = judged(wrong, &calls);
            assert_eq!(j.verdict, Verdict::Inconclusive, "{wrong:?}: {j:?}");
            assert!(
                j.reasons[0].contains("not what the serving provider call wrote"),
                "{j:?}"
            );
        }
        // A continuation: the prefix it was asked to go on from, then what it wrote.
        calls[1].1.continuation = Some("The quick ".into());
        calls[1].1.planned = "brown fox".into();
        assert_eq!(
            judged("The quick brown fox", &calls).verdict,
            Verdict::Equivalent
        );
        assert_eq!(judged("brown fox", &calls).verdict, Verdict::Inconclusive);
        // Stop sequences end an answer where the gateway finds them: not judged here.
        calls[1].1.body = serde_json::json!({"stop": ["fox"]});
        assert_eq!(
            judged("The quick brown ", &calls).verdict,
            Verdict::Equivalent
        );
    }

    #[test]
    fn naming_the_serving_groups_alias_is_only_a_naming_difference() {
        // The fallback continues the primary's "The quick brown": that chunk was the
        // primary's own, and may name it.
        let mut continued = fault_then_fallback();
        continued[1].1.continuation = Some("The quick brown".into());
        continued[1].1.planned = " fox".into();
        let n = ok("flash", "The quick brown fox", continued.clone());
        let s = streamed(
            &["vertex_ai/lite", "vertex_ai/flash"],
            &["The quick brown", " fox"],
            continued,
        );
        let d = compare(&n, &s, &naming());
        assert!(d[0].starts_with("model: naming differs"), "{d:?}");
    }

    #[test]
    fn a_stream_that_dies_or_stops_mid_way_is_the_seeds_second_symptom() {
        let n = ok("flash", "The quick brown fox", fault_then_fallback());
        let mut failed = streamed(
            &["vertex_ai/lite"],
            &["The quick brown"],
            vec![call("vertex", "lite", "error_event@3 429", true)],
        );
        failed.client.error = Some(SeenError {
            status: 429,
            error_type: String::new(),
            message: String::new(),
        });
        failed.client.done = false;
        let d = compare(&n, &failed, &naming());
        assert!(
            d[0].starts_with("outcome: mid-stream failure that non_stream survives"),
            "{d:?}"
        );
        let truncated = streamed(
            &["lite"],
            &["The quick brown"],
            vec![call("vertex", "lite", "reset@3", true)],
        );
        let d = compare(&n, &truncated, &naming());
        assert!(
            d.iter()
                .any(|x| x.starts_with("text: mid-stream failure that non_stream survives")),
            "{d:?}"
        );
    }

    #[test]
    fn agreeing_modes_are_equivalent_only_when_the_faults_fired_and_expect_holds() {
        let expected = Expected {
            faults: [("vertex".to_string(), "error_event@3 429".to_string())].into(),
            calls: Some(vec![
                ("vertex".into(), "lite".into()),
                ("flash".into(), "flash".into()),
            ]),
            host_calls: Some([("vertex".into(), 1), ("flash".into(), 1)].into()),
            call_count: Some(2),
            status: Some(200),
            content: Some("The quick brown fox".into()),
            reaches_provider: true,
        };
        let both = (&expected, &expected);
        let n = ok("flash", "The quick brown fox", fault_then_fallback());
        let s = streamed(&["flash"], &["The quick brown fox"], fault_then_fallback());
        let j = judge(&n, &s, both, &naming(), None);
        assert_eq!(j.verdict, Verdict::Equivalent, "{j:?}");

        // The fault was scripted but the gateway stopped reading first: nothing tested.
        let unfired = vec![
            call("vertex", "lite", "error_event@3 429", false),
            call("flash", "flash", "ok", false),
        ];
        let n = ok("flash", "The quick brown fox", unfired.clone());
        let s = streamed(&["flash"], &["The quick brown fox"], unfired);
        let j = judge(&n, &s, both, &naming(), None);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
        assert!(j.reasons[0].contains("never fired: vertex error_event@3 429"));

        // Served straight by the fallback: the modes agree, on nothing the scenario tests.
        let direct = vec![call("flash", "flash", "ok", false)];
        let j = judge(
            &ok("flash", "The quick brown fox", direct.clone()),
            &streamed(&["flash"], &["The quick brown fox"], direct),
            both,
            &naming(),
            None,
        );
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");

        // Per-host counts (`expect.calls`) hold on their own, where the scenario does not
        // state its attempts: the fallback called twice, in both modes alike, is no pass.
        let counts_only = Expected {
            calls: None,
            call_count: None,
            ..expected.clone()
        };
        let mut twice = fault_then_fallback();
        twice.insert(1, call("flash", "flash", "http 500", true));
        let j = judge(
            &ok("flash", "The quick brown fox", twice.clone()),
            &streamed(&["flash"], &["The quick brown fox"], twice.clone()),
            (&counts_only, &counts_only),
            &naming(),
            None,
        );
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
        assert!(
            j.reasons[0].contains("calls to flash: expected 1, got 2"),
            "{j:?}"
        );
        // So does `attempt_count`, as a number of provider calls.
        let count_only = Expected {
            calls: None,
            host_calls: None,
            ..expected.clone()
        };
        let j = judge(
            &ok("flash", "The quick brown fox", twice.clone()),
            &streamed(&["flash"], &["The quick brown fox"], twice.clone()),
            (&count_only, &count_only),
            &naming(),
            None,
        );
        assert!(
            j.reasons[0].contains("provider calls: expected 2 (attempt_count), got 3"),
            "{j:?}"
        );
    }

    /// A fallback count that one mode reports and the other does not is shown (it is no
    /// difference in the answer: a stream's headers leave before a later fallback).
    #[test]
    fn a_fallback_count_only_one_mode_reports_is_noted() {
        let e = Expected::default();
        let mut n = ok("flash", "The quick brown fox", fault_then_fallback());
        let s = streamed(&["flash"], &["The quick brown fox"], fault_then_fallback());
        n.client
            .headers
            .insert("x-litellm-attempted-fallbacks".into(), "1".into());
        let j = judge(&n, &s, (&e, &e), &naming(), None);
        assert_eq!(j.verdict, Verdict::Equivalent, "{j:?}");
        assert_eq!(
            j.notes,
            vec!["reported fallbacks: non_stream reports 1, stream reports none"]
        );
        n.client
            .headers
            .insert("x-litellm-attempted-fallbacks".into(), "0".into());
        assert!(judge(&n, &s, (&e, &e), &naming(), None).notes.is_empty());
    }

    #[test]
    fn exit_codes_are_distinct_and_a_difference_outranks_everything() {
        let all = [
            Verdict::Equivalent,
            Verdict::Different,
            Verdict::CouldNotRun,
            Verdict::Inconclusive,
        ];
        let codes: BTreeSet<u8> = all.iter().map(|v| v.exit_code()).collect();
        assert_eq!(codes.len(), 4);
        assert_eq!(Verdict::Equivalent.exit_code(), 0);
        assert_eq!(Verdict::overall(all), Verdict::Different);
        assert_eq!(
            Verdict::overall([Verdict::Equivalent, Verdict::Inconclusive]),
            Verdict::Inconclusive
        );
        assert_eq!(
            Verdict::overall([Verdict::Inconclusive, Verdict::CouldNotRun]),
            Verdict::CouldNotRun
        );
        // Nothing probed is not a pass.
        assert_eq!(Verdict::overall([]), Verdict::Inconclusive);
    }
}
