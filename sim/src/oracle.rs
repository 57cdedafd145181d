//! Judging runs: scenario expectations, global invariants, stream/non-stream equivalence.
//!
//! Owns: reading each request's story out of a run (client result + the engine's events +
//! the fakes' call logs) into a [`RequestStory`], and every check made on it. A check that
//! fails adds a line that says which request, which mode, what was expected and what
//! happened. Does not run anything (`world`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use switchback::catalog::{Catalog, DeploymentId, GroupId};
use switchback::classify::FailureClass;
use switchback::config::MidStreamPolicy;
use switchback::trace::Event;

use crate::client::ClientResult;
use crate::fake::CallRecord;
use crate::scenario::{Expect, Mode, NetAction, Scenario};
use crate::world::ModeRun;

/// Every event name the engine emits, as `events` and `no_events` may list them, in the
/// order of [`Event`]'s variants ([`listed_name`] keeps the two in step).
pub const EVENT_NAMES: &[&str] = &[
    "admitted",
    "plan_resolved",
    "attempt_started",
    "attempt_failed",
    "deployment_cooled",
    "failure_not_counted",
    "retry_scheduled",
    "retry_rerouted",
    "group_exhausted",
    "link_skipped",
    "fallback_taken",
    "order_fallback_taken",
    "committed",
    "completed",
    "failed",
    "continuation_refused",
    "stop_sequence_at_seam",
    "client_gone",
    "limit_hit",
    "stream_refused",
    "ended_at_budget",
];

/// `event`'s name as [`EVENT_NAMES`] lists it. The match is exhaustive on purpose: a new
/// engine event does not compile here until it is listed, so a name in a scenario file
/// can never be checked against a stale list.
pub fn listed_name(event: &Event) -> &'static str {
    let i = match event {
        Event::Admitted { .. } => 0,
        Event::PlanResolved { .. } => 1,
        Event::AttemptStarted { .. } => 2,
        Event::AttemptFailed { .. } => 3,
        Event::DeploymentCooled { .. } => 4,
        Event::FailureNotCounted { .. } => 5,
        Event::RetryScheduled { .. } => 6,
        Event::RetryRerouted { .. } => 7,
        Event::GroupExhausted { .. } => 8,
        Event::LinkSkipped { .. } => 9,
        Event::FallbackTaken { .. } => 10,
        Event::OrderFallbackTaken { .. } => 11,
        Event::Committed { .. } => 12,
        Event::Completed { .. } => 13,
        Event::Failed { .. } => 14,
        Event::ContinuationRefused { .. } => 15,
        Event::StopSequenceAtSeam { .. } => 16,
        Event::ClientGone { .. } => 17,
        Event::LimitHit { .. } => 18,
        Event::StreamRefused { .. } => 19,
        Event::EndedAtBudget { .. } => 20,
    };
    EVENT_NAMES[i]
}

/// One attempt as the equivalence relation compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub group: GroupId,
    pub deployment: DeploymentId,
    /// `None` for the attempt that served the answer (or one cut short by the client).
    pub class: Option<FailureClass>,
}

/// Everything known about one request of one run.
#[derive(Debug, Clone)]
pub struct RequestStory<'r> {
    pub mode: Mode,
    pub client: &'r ClientResult,
    /// The gateway's number for this request, when known (see [`whose`]).
    pub id: Option<u64>,
    /// The requests one of which is this one, when the harness cannot tell which (see
    /// [`Whose::OneOf`]): its trace is unknown, and an expectation on it cannot be checked.
    pub unknown: Option<Vec<u64>>,
    /// The config the request was admitted with (a scenario's `reloads` change it).
    pub catalog: &'r Catalog,
    pub steps: Vec<Step>,
    pub served: Option<(GroupId, DeploymentId, String)>,
    pub engine_counts: Option<(u32, u32)>,
    /// Retries and fallbacks as the trace tells them (`retry_scheduled`; `fallback_taken`
    /// and `order_fallback_taken`), counted apart from the engine's own counters.
    pub traced_counts: (u32, u32),
    pub failed: Option<(u16, &'static str)>,
    pub events: Vec<&'static str>,
    pub committed: bool,
    pub attempt_after_commit: bool,
    /// The serving attempt failed after the text delivered had spent the client's token
    /// budget, and the gateway ended the answer with `length` (`ended_at_budget`): its
    /// finish and usage chunks are the gateway's own, not the serving call's.
    pub ended_at_budget: bool,
    pub max_fallbacks: Option<u32>,
    pub mid_stream: Option<MidStreamPolicy>,
    pub terminal_events: usize,
    /// The provider call that served the answer, when the fakes logged one.
    pub serving_call: Option<&'r CallRecord>,
    /// The request's calls before the serving one, every provider's, in the order they
    /// reached the fakes: what they wrote is what a continuation's prefix must come from.
    pub earlier_calls: Vec<&'r CallRecord>,
    /// The request's last provider call, whatever its end, when the fakes logged one.
    pub last_call: Option<&'r CallRecord>,
    /// The host that received `last_call`.
    pub last_call_host: Option<&'r str>,
    /// Every provider call of the request, with the host that received it, in the order
    /// they reached the fakes.
    pub calls: Vec<(&'r str, &'r CallRecord)>,
    /// The limits named by `limit_hit` events, in order.
    pub limits_hit: Vec<&'static str>,
    /// Why the engine saw the client go (`client_gone`), if it did.
    pub gone: Option<&'static str>,
}

impl RequestStory<'_> {
    /// "<deployment id>: <class>" lines, as `expect.attempts` writes them.
    pub fn attempt_lines(&self, catalog: &Catalog) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| {
                let class = s.class.map_or("ok", |c| c.as_str());
                format!("{}: {class}", catalog.deployment(s.deployment).id)
            })
            .collect()
    }

    /// Success, or the error's (status, type) the client saw (`(0, "client_left")` for a
    /// client that left on purpose).
    pub fn outcome(&self) -> Result<(), (u16, String)> {
        if self.client.left.is_some() {
            return Err((0, "client_left".into()));
        }
        match (&self.client.error, self.client.status) {
            (Some(e), _) => Err((e.status, e.error_type.clone())),
            (None, Some(200)) => Ok(()),
            (None, s) => Err((s.unwrap_or(0), String::new())),
        }
    }
}

/// Whose request a client's is: what the oracle reads its trace by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    /// The gateway's request number: from the response's `x-switchback-request-id`, or, for
    /// a client that left before the response head, the one request of its kind (key,
    /// model, mode) admitted and left by its client that no other client names.
    Request(u64),
    /// No request of the gateway's: refused before admission, or left before it.
    None,
    /// A client that left before the response head, among others of its kind: one of these
    /// requests is its own, but not which, so its trace cannot be read.
    OneOf(Vec<u64>),
}

/// [`Whose`] request each client result is, in the order of `run.results`.
///
/// A client that leaves before the response head never learns its request number. Read by
/// the header alone, its trace would be empty, and every expectation on it (`no_events`,
/// `calls: {h: 0}`) would pass unseen. Every admitted request is named by exactly one
/// client or was left by its client ([`unclaimed_requests`] fails the run otherwise), so
/// the requests a leaving client can own are the admitted, left and unnamed ones whose
/// admission matches its key, model and mode; when exactly one such request matches
/// exactly one such client, it is that client's.
pub fn whose(scenario: &Scenario, run: &ModeRun) -> Vec<Whose> {
    let named: BTreeSet<u64> = run
        .results
        .iter()
        .filter_map(ClientResult::request_id)
        .collect();
    let mut admitted = BTreeMap::new();
    let mut gone = BTreeSet::new();
    for r in &run.records {
        match &r.event {
            Event::Admitted { key, group, stream } => {
                admitted.insert(r.request, (key.as_str(), *group, *stream));
            }
            Event::ClientGone { .. } => {
                gone.insert(r.request);
            }
            _ => {}
        }
    }
    let orphans: Vec<u64> = admitted
        .keys()
        .copied()
        .filter(|id| gone.contains(id) && !named.contains(id))
        .collect();
    // The orphans each client could own, by what its admission says.
    let candidates: Vec<Vec<u64>> = run
        .results
        .iter()
        .map(|c| {
            // A client that left, or that stopped waiting (its `timeout_ms`, a broken
            // head), before the head: either way it never saw its request's number.
            if c.request_id().is_some() || (c.left.is_none() && c.broken.is_none()) {
                return Vec::new();
            }
            let spec = &scenario.requests[c.index];
            orphans
                .iter()
                .copied()
                .filter(|id| {
                    let (key, group, stream) = admitted[id];
                    let catalog = run.catalog_for(Some(*id));
                    let alias = match spec.key.as_deref() {
                        Some(token) => catalog.key(token).map(|k| k.alias.as_str()),
                        None => Some("anonymous"),
                    };
                    alias == Some(key)
                        && catalog.route(&spec.model).map(|r| r.group) == Some(group)
                        && stream == run.mode.is_stream()
                })
                .collect()
        })
        .collect();
    run.results
        .iter()
        .zip(&candidates)
        .map(|(c, mine)| {
            if let Some(id) = c.request_id() {
                return Whose::Request(id);
            }
            match mine.as_slice() {
                [] => Whose::None,
                [id] if candidates.iter().filter(|o| o.contains(id)).count() == 1 => {
                    Whose::Request(*id)
                }
                _ => Whose::OneOf(mine.clone()),
            }
        })
        .collect()
}

/// Reads every request's story out of a run, each client's request known as [`whose`]
/// tells it.
pub fn stories_of<'r>(scenario: &Scenario, run: &'r ModeRun) -> Vec<RequestStory<'r>> {
    stories_by(run, whose(scenario, run))
}

/// Reads every request's story out of a run, each client's request known by its response
/// header alone (for a summary with no scenario at hand: a client that left before the
/// response head has no request there).
pub fn stories(run: &ModeRun) -> Vec<RequestStory<'_>> {
    let whose = run
        .results
        .iter()
        .map(|c| c.request_id().map_or(Whose::None, Whose::Request))
        .collect();
    stories_by(run, whose)
}

fn stories_by(run: &ModeRun, whose: Vec<Whose>) -> Vec<RequestStory<'_>> {
    let mut by_request: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for r in &run.records {
        by_request.entry(r.request).or_default().push(&r.event);
    }
    run.results
        .iter()
        .zip(whose)
        .map(|(client, whose)| {
            let id = match &whose {
                Whose::Request(id) => Some(*id),
                Whose::None | Whose::OneOf(_) => None,
            };
            let events = id
                .and_then(|id| by_request.get(&id))
                .cloned()
                .unwrap_or_default();
            let mut s = story(run, client, id, &events);
            if let Whose::OneOf(ids) = whose {
                s.unknown = Some(ids);
            }
            s
        })
        .collect()
}

fn story<'r>(
    run: &'r ModeRun,
    client: &'r ClientResult,
    id: Option<u64>,
    events: &[&Event],
) -> RequestStory<'r> {
    let mut s = RequestStory {
        mode: run.mode,
        client,
        id,
        unknown: None,
        catalog: run.catalog_for(id),
        steps: Vec::new(),
        served: None,
        engine_counts: None,
        traced_counts: (0, 0),
        failed: None,
        events: events.iter().map(|e| listed_name(e)).collect(),
        committed: false,
        attempt_after_commit: false,
        ended_at_budget: false,
        max_fallbacks: None,
        mid_stream: None,
        terminal_events: 0,
        serving_call: None,
        earlier_calls: Vec::new(),
        last_call: None,
        last_call_host: None,
        calls: Vec::new(),
        limits_hit: Vec::new(),
        gone: None,
    };
    for e in events {
        match e {
            Event::PlanResolved {
                max_fallbacks,
                mid_stream,
                ..
            } => {
                s.max_fallbacks = Some(*max_fallbacks);
                s.mid_stream = Some(*mid_stream);
            }
            Event::AttemptStarted {
                group, deployment, ..
            } => {
                if s.committed {
                    s.attempt_after_commit = true;
                }
                s.steps.push(Step {
                    group: *group,
                    deployment: *deployment,
                    class: None,
                });
            }
            Event::AttemptFailed { class, .. } => {
                if let Some(last) = s.steps.last_mut() {
                    last.class = Some(*class);
                }
            }
            Event::RetryScheduled { .. } => s.traced_counts.0 += 1,
            Event::FallbackTaken { .. } | Event::OrderFallbackTaken { .. } => {
                s.traced_counts.1 += 1;
            }
            Event::Committed { .. } => s.committed = true,
            Event::Completed {
                group,
                deployment,
                model,
                retries,
                fallbacks,
                ..
            } => {
                s.terminal_events += 1;
                s.served = Some((*group, *deployment, model.clone()));
                s.engine_counts = Some((*retries, *fallbacks));
            }
            Event::Failed {
                status, error_type, ..
            } => {
                s.terminal_events += 1;
                s.failed = Some((*status, error_type));
            }
            Event::LimitHit { limit } => s.limits_hit.push(limit),
            Event::ClientGone { reason } => s.gone = Some(reason.as_str()),
            Event::EndedAtBudget { .. } => s.ended_at_budget = true,
            _ => {}
        }
    }
    if let Some(id) = id {
        s.calls = run
            .calls
            .iter()
            .flat_map(|(host, calls)| calls.iter().map(move |c| (host.as_str(), c)))
            .filter(|(_, c)| c.request_id == Some(id))
            .collect();
        s.calls.sort_by_key(|(_, c)| c.seq);
        let last = s.calls.last().copied();
        s.last_call = last.map(|(_, c)| c);
        s.last_call_host = last.map(|(host, _)| host);
    }
    if let (Some((_, deployment, _)), Some(id)) = (&s.served, id) {
        let host = &s.catalog.deployment(*deployment).endpoint.host;
        s.serving_call = run
            .calls
            .get(host)
            .and_then(|calls| calls.iter().rev().find(|c| c.request_id == Some(id)));
        if let Some(serving) = s.serving_call {
            let mut earlier: Vec<&CallRecord> = run
                .calls
                .values()
                .flatten()
                .filter(|c| c.request_id == Some(id) && c.seq < serving.seq)
                .collect();
            earlier.sort_by_key(|c| c.seq);
            s.earlier_calls = earlier;
        }
    }
    s
}

/// The payloads a call wrote, as JSON (an error event's and `[DONE]` are skipped).
fn sent_objects(call: &CallRecord) -> impl Iterator<Item = serde_json::Value> + '_ {
    objects_in(&call.sent)
}

/// [`sent_objects`] of some of a call's payloads.
fn objects_in(payloads: &[String]) -> impl Iterator<Item = serde_json::Value> + '_ {
    payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter(|v| v.get("choices").is_some())
}

/// The text of choice 0 a call's answer carried, as the fake wrote it: its chunks'
/// `delta.content`, or its JSON answer's `message.content`.
fn sent_text(call: &CallRecord) -> String {
    sent_text_of(call, true)
}

/// [`sent_text`], and with `messages`, a `message.content` where a choice has no delta
/// content (a JSON answer's; also Perplexity's running copy and MiniMax's closing
/// restatement of the whole answer, which a streaming client never reads).
fn sent_text_of(call: &CallRecord, messages: bool) -> String {
    text_in(&call.sent, messages)
}

/// [`sent_text_of`] some of a call's payloads.
fn text_in(payloads: &[String], messages: bool) -> String {
    let mut text = String::new();
    for v in objects_in(payloads) {
        for (place, choice) in v["choices"].as_array().into_iter().flatten().enumerate() {
            if choice["index"].as_u64().unwrap_or(place as u64) != 0 {
                continue;
            }
            let content = choice.pointer("/delta/content").or_else(|| {
                messages
                    .then(|| choice.pointer("/message/content"))
                    .flatten()
            });
            if let Some(t) = content.and_then(serde_json::Value::as_str) {
                text.push_str(t);
            }
        }
    }
    text
}

/// The model a call's answer named: the first `model` it wrote that is not empty (Azure's
/// first chunk has `""`). `None` when it named none (the gateway then names the
/// deployment's).
fn sent_model(call: &CallRecord) -> Option<String> {
    sent_objects(call).find_map(|v| {
        v.get("model")
            .and_then(serde_json::Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    })
}

/// What is wrong with the shape of the stream a client got, whatever the upstreams did:
/// one `id` for every chunk that names one (Azure's annotation chunks name `""`), and a
/// choice's `role` once (the gateway drops the ones Gemini repeats in every delta, and the
/// ones an attempt after commit sends again). When `continued` gives the call that served
/// an answer after an attempt past commit, also: no choice finishes more often than that
/// call finished it (a finish an earlier attempt sent, which the continuation went on from,
/// must never reach the client, nor one the serving call went on from with output of that
/// choice, when it gave one choice; a provider's own second finish, as a Gemini answer that
/// ends on a content chunk with its finish and is then filtered, is its own). Text, model,
/// the last finish and usage are judged elsewhere; a chunk that is not JSON is the client's
/// `broken` to report.
/// `ended_at_budget`: the gateway wrote choice 0's finish itself (see
/// `RequestStory::ended_at_budget`), one more than the serving call wrote.
fn stream_shape(
    c: &ClientResult,
    continued: Option<&CallRecord>,
    ended_at_budget: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut id: Option<&str> = None;
    let mut roles: Vec<u64> = Vec::new();
    let mut finishes: BTreeMap<u64, usize> = BTreeMap::new();
    let mut named: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    let objects: Vec<serde_json::Value> = c
        .chunks
        .iter()
        .filter_map(|chunk| serde_json::from_str(&chunk.raw).ok())
        .collect();
    for (i, object) in objects.iter().enumerate() {
        if let Some(this) = object["id"].as_str().filter(|id| !id.is_empty()) {
            match id {
                Some(first) if first != this => {
                    problems.push(format!(
                        "chunk {i} has id {this:?}, an earlier one {first:?}: one stream, one id"
                    ));
                    return problems;
                }
                _ => id = Some(this),
            }
        }
        let choices = object["choices"].as_array().into_iter().flatten();
        for (place, choice) in choices.enumerate() {
            let index = choice["index"].as_u64().unwrap_or(place as u64);
            named.insert(index);
            if choice.pointer("/delta/role").is_some() {
                if roles.contains(&index) {
                    problems.push(format!(
                        "chunk {i} gives choice {index} a role again: the SDKs take a role once"
                    ));
                    return problems;
                }
                roles.push(index);
            }
            if finishes_choice(choice) {
                *finishes.entry(index).or_default() += 1;
            }
        }
    }
    if let Some(call) = continued {
        // A finish the call went on from with output of the same choice was none (a
        // provider that puts one on every chunk): the gateway takes it back, with a single
        // choice. With several, one sent while another choice went on cannot be (README).
        let mut own: BTreeMap<u64, usize> = BTreeMap::new();
        let mut unconfirmed: BTreeMap<u64, usize> = BTreeMap::new();
        for object in sent_objects(call) {
            let choices = object["choices"].as_array().into_iter().flatten();
            for (place, choice) in choices.enumerate() {
                let index = choice["index"].as_u64().unwrap_or(place as u64);
                let n = own.entry(index).or_default();
                let pending = unconfirmed.entry(index).or_default();
                if crate::passthrough::gives_output(choice) {
                    *n -= std::mem::take(pending);
                }
                if finishes_choice(choice) {
                    *n += 1;
                    *pending += 1;
                }
            }
        }
        if unconfirmed.len() > 1 {
            // Several choices: count every finish the call sent, false ones included.
            own.clear();
            for object in sent_objects(call) {
                let choices = object["choices"].as_array().into_iter().flatten();
                for (place, choice) in choices.enumerate() {
                    let index = choice["index"].as_u64().unwrap_or(place as u64);
                    *own.entry(index).or_default() += usize::from(finishes_choice(choice));
                }
            }
        }
        // Only the choices the continuation went on with: one it never named (a second
        // choice of a provider that answered more than the one asked for) ended where the
        // failed call left it, with whatever finish that call gave it.
        // With several choices, a finish one choice sent while another went on cannot be
        // taken back (README): an earlier attempt's, of a choice the continuation's
        // provider answers again unasked, is the client's already. Only choice 0, the one
        // a continuation goes on with, is held to the rule then.
        let several = named.len() > 1;
        for (index, n) in finishes {
            let Some(theirs) = own.get(&index).copied() else {
                continue;
            };
            if several && index != 0 {
                continue;
            }
            let theirs = theirs + usize::from(ended_at_budget && index == 0);
            if n > theirs {
                problems.push(format!(
                    "choice {index} finished {n} time(s), the serving call finished it {theirs} time(s): a finish the answer went on from reached the client"
                ));
            }
        }
    }
    problems
}

/// The last finish reason `call` wrote for choice `index` that did not say the answer
/// failed, if it wrote one: a served answer whose choices had all finished takes nothing
/// from a failure after them (README), a failed finish (vLLM's `abort`) included.
fn last_finish(call: &CallRecord, index: u64) -> Option<String> {
    let mut last = None;
    for object in sent_objects(call) {
        let choices = object["choices"].as_array().into_iter().flatten();
        for (place, choice) in choices.enumerate() {
            let reason = choice["finish_reason"].as_str();
            if choice["index"].as_u64().unwrap_or(place as u64) == index
                && finishes_choice(choice)
                && !reason.is_some_and(crate::passthrough::is_failure_finish)
                && choice.get("error").is_none_or(serde_json::Value::is_null)
            {
                last = reason.map(str::to_string);
            }
        }
    }
    last
}

/// How many of `call`'s payloads (an answer from `host`) surely reached the gateway: all
/// of them unless a network fault on the link between the two (a partition, a hold, a drop
/// rate, a crash or restart of `host`) may have lost or held one back past the gateway's
/// patience. A payload that left at `t` arrives by `t` plus the top of the latency range;
/// one that left later than that before a fault began, and before the link was mended, may
/// never have arrived, nor anything after it. The fake wrote them all and cannot tell, so
/// past this count its record overstates what the gateway got.
fn surely_delivered(scenario: &Scenario, host: &str, call: &CallRecord) -> usize {
    let latency = Duration::from_millis(scenario.network.latency_ms[1]);
    let on_link =
        |link: &[String; 2]| link.iter().any(|h| h == "gateway") && link.iter().any(|h| h == host);
    let mut actions: Vec<(Duration, NetAction)> = scenario
        .network
        .faults
        .iter()
        .flat_map(|f| {
            let at = Duration::from_millis(f.at_ms);
            f.actions().into_iter().map(move |a| (at, a))
        })
        .collect();
    actions.sort_by_key(|(at, _)| *at);
    // When each fault on the link began, and when it was mended (if it was).
    let mut spans: Vec<(Duration, Option<Duration>)> = Vec::new();
    for (at, action) in actions {
        let (begins, mends) = match &action {
            NetAction::Partition(l) | NetAction::Hold(l) => (on_link(l), false),
            NetAction::Repair(l) | NetAction::Release(l) => (false, on_link(l)),
            NetAction::FailRate(l, rate) => (on_link(l) && *rate > 0.0, on_link(l) && *rate == 0.0),
            NetAction::Crash(h) | NetAction::Bounce(h) => (h == host, false),
            NetAction::Refuse(_) | NetAction::Listen(_) => (false, false),
        };
        if begins {
            spans.push((at, None));
        } else if mends {
            for span in spans.iter_mut().filter(|(_, mended)| mended.is_none()) {
                span.1 = Some(at);
            }
        }
    }
    let may_be_lost = |left: Duration| {
        spans
            .iter()
            .any(|&(began, mended)| left + latency >= began && mended.is_none_or(|m| left <= m))
    };
    call.sent_at
        .iter()
        .position(|&left| may_be_lost(left))
        .unwrap_or(call.sent.len())
}

/// [`surely_delivered`] of `s`'s serving call, `call`.
fn serving_call_surely_delivered(
    scenario: &Scenario,
    s: &RequestStory<'_>,
    call: &CallRecord,
) -> usize {
    match &s.served {
        Some((_, d, _)) => {
            surely_delivered(scenario, &s.catalog.deployment(*d).endpoint.host, call)
        }
        None => call.sent.len(),
    }
}

/// Whether a streamed chunk carries what a continued prefix never holds: a finish, or
/// output other than choice 0's text (a tool call, reasoning, a refusal, audio, logprobs,
/// another choice's text). The engine continues only an unfinished answer that is text of
/// one choice (`commit::Next`), so such a chunk came from the call after the seam. A chunk
/// that is not JSON carries nothing here (it is the client's `broken` to report).
fn beyond_continued_text(raw: &str) -> bool {
    const OUTPUT: [&str; 6] = [
        "tool_calls",
        "function_call",
        "reasoning_content",
        "reasoning",
        "refusal",
        "audio",
    ];
    let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else {
        return false;
    };
    let present = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(serde_json::Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    };
    let choices = v["choices"].as_array().into_iter().flatten();
    choices.enumerate().any(|(place, choice)| {
        let index = choice["index"].as_u64().unwrap_or(place as u64);
        let delta = &choice["delta"];
        finishes_choice(choice)
            || present(choice.get("logprobs"))
            || OUTPUT.iter().any(|key| present(delta.get(*key)))
            || (index != 0 && present(delta.get("content")))
    })
}

/// Whether a choice object carries a finish reason. SGLang's `""` on every chunk but the
/// last finishes nothing.
fn finishes_choice(choice: &serde_json::Value) -> bool {
    choice["finish_reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty())
}

/// Whether one of `stops` lies across byte `seam` of `text`: it starts before the seam and
/// ends after it.
fn stop_across(text: &str, seam: usize, stops: &[String]) -> bool {
    stops.iter().filter(|s| !s.is_empty()).any(|stop| {
        (seam.saturating_sub(stop.len() - 1)..seam).any(|at| {
            text.get(at..)
                .is_some_and(|rest| rest.starts_with(stop.as_str()))
        })
    })
}

/// Whether `prefix` is what `calls` delivered, in order: each call a leading part of what it
/// wrote (a gateway may cut an answer short, never skip or repeat a piece of it), nothing
/// else.
fn prefix_comes_from(prefix: &str, calls: &[String]) -> bool {
    // Which (call, byte offset into `prefix`) pairs are reachable: each call moves the
    // offset on by any leading part of its text that matches there. One pass per call, so
    // repetitive text ("ha ha ha") costs calls x length x length at worst, never
    // exponentially many splits.
    let mut reachable = vec![false; prefix.len() + 1];
    reachable[0] = true;
    for call in calls {
        let mut next = reachable.clone();
        for at in (0..=prefix.len()).filter(|&at| reachable[at]) {
            let rest = &prefix[at..];
            for ((i, a), b) in call.char_indices().zip(rest.chars()) {
                if a != b {
                    break;
                }
                next[at + i + a.len_utf8()] = true;
            }
        }
        reachable = next;
    }
    reachable[prefix.len()]
}

/// Checks one run against the scenario's expectations and the invariants.
pub fn check_run(scenario: &Scenario, run: &ModeRun, failures: &mut Vec<String>) {
    let mode = run.mode.as_str();
    if let Some(h) = &run.hang {
        failures.push(format!("[{mode}] {h}"));
        return;
    }
    // The observer keeps this many typed events and drops the rest (a run of MAX_REQUESTS
    // requests can emit more): judged on a cut record, later requests would fail with
    // misleading messages ("0 terminal events"). Say what happened instead.
    if run.records.len() >= crate::trace::MAX_TRACE_LINES {
        failures.push(format!(
            "[{mode}] the engine emitted {} events or more, the most a run keeps \
             (MAX_TRACE_LINES): the requests past them cannot be judged; split the scenario",
            crate::trace::MAX_TRACE_LINES
        ));
        return;
    }
    if let Some(exposition) = &run.metrics {
        for d in crate::metrics_check::disagreements(exposition, &run.records) {
            failures.push(format!("[{mode}] invariant: metrics: {d}"));
        }
    }
    // Every connection open at the end is one the gateway's pool keeps idle, within its
    // bound: nothing in use (no request is live), nothing leaked.
    let providers = run.calls.len().max(1);
    for (host, open) in &run.open_connections {
        let bound = if host == crate::world::GATEWAY_UPSTREAMS {
            run.max_kept_per_host * providers
        } else {
            run.max_kept_per_host
        };
        let kept = match &run.kept_connections {
            Some(kept) => kept.get(host).copied().unwrap_or(0),
            None => (*open).min(bound),
        };
        if *open != kept {
            failures.push(format!(
                "[{mode}] invariant: {open} connection(s) to `{host}` still open at the end, \
                 of which {kept} kept idle by the gateway's pool"
            ));
        }
        if kept > bound {
            failures.push(format!(
                "[{mode}] invariant: the pool keeps {kept} connection(s) to `{host}`, over its \
                 bound of {bound}"
            ));
        }
    }
    for f in calls_no_deployment_makes(run) {
        failures.push(format!("[{mode}] invariant: {f}"));
    }
    for problem in attempts_on_cooling_deployments(scenario, run) {
        failures.push(format!("[{mode}] invariant: {problem}"));
    }
    for id in unclaimed_requests(run) {
        failures.push(format!(
            "[{mode}] invariant: request {id} was admitted, but no client response carries \
             its x-switchback-request-id: its trace goes unchecked"
        ));
    }
    // Secrets of every config the run had: a reload must not leak the old one's either.
    let mut secrets = Vec::new();
    for c in std::iter::once(&run.catalog).chain(&run.catalogs) {
        secrets.extend(crate::passthrough::secrets(c));
    }
    for story in stories_of(scenario, run) {
        let catalog = story.catalog;
        let c = story.client;
        let spec = &scenario.requests[c.index];
        let label = format!("[{mode}] request r{}.{}", c.index, c.copy);
        let mut fail = |msg: String| failures.push(format!("{label}: {msg}"));
        let expect = Expect::resolve(spec.expect.as_ref(), &scenario.expect, run.mode);
        if let Some(leak) = crate::passthrough::leaked(c, &secrets) {
            fail(format!("invariant: no secret reaches a client, but {leak}"));
        }
        check_invariants(&story, catalog, scenario, &mut fail);
        if let Some(problem) = over_token_budget(c, spec.token_budget()) {
            fail(format!("invariant: {problem}"));
        }
        check_expect(&story, &expect, catalog, run, &mut fail);
        if expect.passthrough == Some(true) {
            crate::passthrough::check(
                c,
                story.serving_call,
                run.mode.is_stream(),
                spec.asks_usage(),
                &mut fail,
            );
        }
    }
    let totals = scenario.expect.for_mode(run.mode).or(&scenario.expect);
    for (host, want) in totals.total_connections.iter().flatten() {
        let got = run.connections.get(host).copied().unwrap_or(0);
        if got != *want {
            failures.push(format!(
                "[{mode}] total_connections: expected {want} connection(s) accepted by \
                 `{host}`, got {got}"
            ));
        }
    }
    for (host, want) in totals.total_calls.iter().flatten() {
        let got = run.calls.get(host).map_or(0, Vec::len);
        if got != *want as usize {
            failures.push(format!(
                "[{mode}] total_calls: expected {want} call(s) to `{host}`, got {got}"
            ));
        }
    }
}

/// Attempts started on a deployment chosen while it was cooling, read from the trace alone
/// (the engine's own selection is what is judged). A cooldown counts from the failure that
/// caused it, when the request that failed reports it at that instant, for its `duration`;
/// an attempt chosen strictly inside it, of any request, on a group that does not pin the
/// deployment by its id (LiteLLM hands a pinned one back cooling or not), is a failure. The
/// bounds are strict: another request's failure is seen only from the next instant, and a
/// request that waits for the cooldown's end (a Retry-After) attempts at that end.
///
/// A retry's deployment is chosen when the retry is scheduled (`retry_scheduled`), and
/// looked at again when its backoff ends: if another request cooled it meanwhile, the retry
/// goes to a deployment of the tier healthy then (`retry_rerouted`, judged at that instant),
/// and goes where it was planned only when none is. So a planned retry that meets a cooldown
/// begun during its backoff is a failure when another deployment of its group and tier,
/// one the request never tried, was surely healthy then (no cooldown of any kind, reported
/// late or not, covered it); and a reroute away from a deployment no cooldown covered is one
/// too. Not judged in runs with config reloads (a reload's deployments are a new catalog's).
fn attempts_on_cooling_deployments(scenario: &Scenario, run: &ModeRun) -> Vec<String> {
    if !scenario.reloads.is_empty() {
        return Vec::new();
    }
    let catalog = &run.catalog;
    let name = |d: DeploymentId| catalog.deployment(d).id.clone();
    let mut problems = Vec::new();
    let mut failed_at: BTreeMap<(u64, DeploymentId), Duration> = BTreeMap::new();
    // Cooldowns reported by the failure that caused them, at its instant.
    let mut windows: Vec<(DeploymentId, Duration, Duration, u64)> = Vec::new();
    // Every cooldown the trace tells, however late: when it was told, and until when it
    // may last (from the telling, so never shorter than it really is).
    let mut told: Vec<(DeploymentId, Duration, Duration)> = Vec::new();
    // Each request's scheduled retry, while it waits: its deployment and when it was chosen.
    let mut scheduled: BTreeMap<u64, (DeploymentId, Duration)> = BTreeMap::new();
    let mut tried: BTreeMap<u64, BTreeSet<DeploymentId>> = BTreeMap::new();
    let may_be_cooling = |told: &[(DeploymentId, Duration, Duration)], d: DeploymentId, at| {
        told.iter()
            .any(|(c, from, until)| *c == d && *from <= at && at < *until)
    };
    for r in &run.records {
        match &r.event {
            Event::RetryScheduled { deployment, .. } => {
                scheduled.insert(r.request, (*deployment, r.at));
            }
            Event::RetryRerouted { from, to, .. } => {
                if !may_be_cooling(&told, *from, r.at) {
                    problems.push(format!(
                        "request {} rerouted its retry from `{}` to `{}` at {} ms, but no \
                         cooldown covered `{}` then",
                        r.request,
                        name(*from),
                        name(*to),
                        r.at.as_millis(),
                        name(*from)
                    ));
                }
                scheduled.insert(r.request, (*to, r.at));
            }
            Event::AttemptFailed { deployment, .. } => {
                failed_at.insert((r.request, *deployment), r.at);
            }
            Event::DeploymentCooled {
                deployment,
                duration,
                ..
            } => {
                told.push((*deployment, r.at, r.at + *duration));
                if failed_at.get(&(r.request, *deployment)) == Some(&r.at) {
                    windows.push((*deployment, r.at, r.at + *duration, r.request));
                }
            }
            Event::AttemptStarted {
                group, deployment, ..
            } => {
                let retry = scheduled.remove(&r.request);
                let tried_before = tried.entry(r.request).or_default().clone();
                tried.entry(r.request).or_default().insert(*deployment);
                if catalog.pinned(*group).is_some() {
                    continue;
                }
                let chosen = match retry {
                    Some((d, at)) if d == *deployment => at,
                    _ => r.at,
                };
                // Chosen while cooling, and attempted before the cooldown ended (a retry
                // may wait out a cooldown the provider asked for: it attempts at its end).
                let inside = windows
                    .iter()
                    .find(|(d, from, until, _)| d == deployment && *from < chosen && r.at < *until);
                if let Some((_, from, until, by)) = inside {
                    problems.push(format!(
                        "request {} chose `{}` at {} ms for an attempt, while it was cooling from {} ms to {} ms (request {by}'s failure)",
                        r.request,
                        name(*deployment),
                        chosen.as_millis(),
                        from.as_millis(),
                        until.as_millis()
                    ));
                    continue;
                }
                // A planned retry that met a cooldown begun during its backoff.
                let met = windows.iter().find(|(d, from, until, by)| {
                    d == deployment && *by != r.request && *from < r.at && r.at < *until
                });
                let Some((_, from, _, by)) = met else {
                    continue;
                };
                let tier = catalog.deployment(*deployment).order;
                let healthy = catalog.group(*group).deployments.iter().copied().find(|d| {
                    d != deployment
                        && catalog.deployment(*d).order == tier
                        && !tried_before.contains(d)
                        && !may_be_cooling(&told, *d, r.at)
                });
                if let Some(healthy) = healthy {
                    problems.push(format!(
                        "request {}'s retry went to `{}` at {} ms, cooling since {} ms (request \
                         {by}'s failure), while `{}` was healthy",
                        r.request,
                        name(*deployment),
                        r.at.as_millis(),
                        from.as_millis(),
                        name(healthy)
                    ));
                }
            }
            _ => {}
        }
    }
    problems
}

/// Requests the engine admitted that no client result names by its request id (the header
/// every chat response carries), or that two name: a request whose id the client cannot
/// see has its events read as nobody's, and every check of its trace passes unseen. A
/// client that left before the response head never saw it (its trace says so): [`whose`]
/// tells its request by elimination.
fn unclaimed_requests(run: &ModeRun) -> Vec<u64> {
    let mut claimed = BTreeMap::<u64, usize>::new();
    for id in run.results.iter().filter_map(ClientResult::request_id) {
        *claimed.entry(id).or_default() += 1;
    }
    let mut admitted = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for r in &run.records {
        match r.event {
            Event::Admitted { .. } => {
                admitted.insert(r.request);
            }
            Event::ClientGone { .. } => {
                gone.insert(r.request);
            }
            _ => {}
        }
    }
    admitted
        .into_iter()
        .filter(|id| match claimed.get(id) {
            None => !gone.contains(id),
            Some(n) => *n > 1,
        })
        .collect()
}

/// How an answer ended, as its client saw it: each choice's finish reason (by index) and
/// the usage reported.
#[derive(Debug, Default)]
struct Ending {
    finish_reasons: BTreeMap<u64, String>,
    usage: Option<serde_json::Value>,
}

/// The [`Ending`] of a served answer: from the body, or from the stream's chunks (the
/// latest finish reason per choice, the latest usage that is not null).
fn ending(c: &ClientResult) -> Ending {
    use serde_json::Value;
    let mut ending = Ending::default();
    let mut read = |object: &Value| {
        for (place, choice) in object["choices"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = choice["index"].as_u64().unwrap_or(place as u64);
            if let Some(reason) = choice["finish_reason"].as_str() {
                ending.finish_reasons.insert(index, reason.to_string());
            }
        }
        if let Some(usage) = object.get("usage").filter(|u| !u.is_null()) {
            ending.usage = Some(usage.clone());
        }
    };
    if c.chunks.is_empty() {
        if let Some(body) = c.body.as_deref().and_then(|b| serde_json::from_str(b).ok()) {
            read(&body);
        }
    }
    for chunk in &c.chunks {
        if let Ok(object) = serde_json::from_str::<Value>(&chunk.raw) {
            read(&object);
        }
    }
    ending
}

/// Whether the gateway ended an answer at the client's budget (`ended_at_budget`) before
/// the budget was spent. Counted from what the fakes wrote, not from the gateway's usage:
/// every piece of choice 0's text a call of the request wrote is one token (a JSON answer
/// counts its usage), and writing is no less than delivering, so a count under the budget
/// says the answer was cut short of what the client allowed.
fn ended_short_of_budget(s: &RequestStory<'_>, scenario: &Scenario) -> Option<String> {
    if !s.ended_at_budget {
        return None;
    }
    let Some(budget) = scenario.requests[s.client.index].token_budget() else {
        return Some("the answer was ended at the token budget, but the client set none".into());
    };
    let calls = s.earlier_calls.iter().copied().chain(s.serving_call);
    let written: u64 = calls.map(tokens_written).sum();
    (written < budget).then(|| {
        format!(
            "the answer was ended at the token budget of {budget}, but the request's calls \
             wrote only {written} token(s)"
        )
    })
}

/// What each continuation call was asked of the client's token budget, judged from what
/// the calls before it wrote, not from the gateway's usage (which a stream that did not
/// ask for usage never shows): no more than the budget less the tokens that surely
/// reached the gateway, and no less than the budget less every token written. Before, a
/// gateway that asked a continuation for the whole budget again was caught only through
/// the answer's usage, when the client asked for it.
///
/// The upper bound is not judged where text may have reached the gateway and yet be no
/// part of the answer the budget bounds: under `stop` sequences (a continuation's text
/// held at the seam and dropped with its failure), after a limit was hit (what lies past
/// it is never delivered) or an attempt timed out (the fake may have gone on writing to a
/// gateway that had stopped reading). A whole JSON answer of an earlier call counts for
/// nothing surely delivered: it is delivered whole or, failing, not at all.
fn continuation_budgets(s: &RequestStory<'_>, scenario: &Scenario) -> Vec<String> {
    let spec = &scenario.requests[s.client.index];
    let Some(budget) = spec.token_budget() else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let (mut surely, mut written) = (0u64, 0u64);
    let timed_out = s
        .steps
        .iter()
        .any(|step| step.class == Some(FailureClass::Timeout));
    let uncounted = timed_out || !s.limits_hit.is_empty();
    for (host, call) in &s.calls {
        if call.continuation.is_some() {
            let asked = call.body.as_object().and_then(crate::fake::token_budget);
            let most = budget.saturating_sub(surely);
            let least = budget.saturating_sub(written);
            let seam_may_hold = uncounted || !crate::fake::stop_sequences(&call.body).is_empty();
            match asked {
                None => problems.push(format!(
                    "call {} continued an answer under a token budget of {budget}, but was \
                     asked for none",
                    call.call
                )),
                Some(asked) if asked > most && !seam_may_hold => problems.push(format!(
                    "call {} was asked for {asked} token(s) of the client's budget of \
                     {budget}, but the calls before it surely delivered {surely}",
                    call.call
                )),
                Some(asked) if asked < least => problems.push(format!(
                    "call {} was asked for {asked} token(s) of the client's budget of \
                     {budget}, but the calls before it wrote only {written}",
                    call.call
                )),
                Some(_) => {}
            }
        }
        if !call.answered_json {
            let delivered = surely_delivered(scenario, host, call);
            surely += tokens_in(&call.sent[..delivered.min(call.sent.len())], false);
        }
        written += tokens_written(call);
    }
    problems
}

/// The completion tokens a fake's call wrote for choice 0: one per piece of text (see
/// `Reply::cap_tokens`), or a JSON answer's own count.
fn tokens_written(call: &CallRecord) -> u64 {
    tokens_in(&call.sent, call.answered_json)
}

/// [`tokens_written`] of some of a call's payloads; `whole`: they are one JSON answer,
/// which counts its usage. A stream counts its pieces only: a `message` in one of its
/// chunks is a copy (Perplexity's running one, MiniMax's closing restatement).
fn tokens_in(payloads: &[String], whole: bool) -> u64 {
    let mut tokens = 0;
    for v in objects_in(payloads) {
        if whole {
            let usage = v.pointer("/usage/completion_tokens");
            tokens += usage.and_then(serde_json::Value::as_u64).unwrap_or(0);
            continue;
        }
        for (place, choice) in v["choices"].as_array().into_iter().flatten().enumerate() {
            let text = choice
                .pointer("/delta/content")
                .and_then(serde_json::Value::as_str);
            if choice["index"].as_u64().unwrap_or(place as u64) == 0
                && text.is_some_and(|t| !t.is_empty())
            {
                tokens += 1;
            }
        }
    }
    tokens
}

/// Whether a served answer's usage says more completion tokens than the client's budget
/// allowed (`max_completion_tokens`, else `max_tokens`). The fakes honour a budget (one
/// token per piece, see `Reply::cap_tokens`): over it, some attempt was asked for more
/// than was left of it, such as a continuation asked for the whole budget again.
pub fn over_token_budget(c: &ClientResult, budget: Option<u64>) -> Option<String> {
    let budget = budget?;
    if c.status != Some(200) || c.error.is_some() || c.left.is_some() || c.broken.is_some() {
        return None;
    }
    let ending = ending(c);
    // A fake sends a script of several choices as written (see `Reply::cap_tokens`).
    if ending.finish_reasons.len() > 1 {
        return None;
    }
    let spent = ending.usage?.get("completion_tokens")?.as_u64()?;
    (spent > budget).then(|| {
        format!(
            "the answer's usage says {spent} completion tokens, over the client's budget of \
             {budget}"
        )
    })
}

/// Wire fidelity wherever it must hold in any run (explore's generated cases): every
/// request that succeeded on one attempt's answer (none after commit, no continuation, no
/// flood) got exactly what that provider gave (see `passthrough`).
pub fn check_passthrough_where_it_applies(
    scenario: &Scenario,
    run: &ModeRun,
    failures: &mut Vec<String>,
) {
    let mode = run.mode.as_str();
    for story in stories_of(scenario, run) {
        let c = story.client;
        let Some(call) = story.serving_call else {
            continue;
        };
        // An answer ended at the budget ends as the gateway wrote it.
        if !c.succeeded()
            || story.attempt_after_commit
            || call.continuation.is_some()
            || story.ended_at_budget
        {
            continue;
        }
        // What the call wrote past a network fault on its link may never have come.
        let lossy = serving_call_surely_delivered(scenario, &story, call) < call.sent.len();
        if call.flooded || lossy {
            continue;
        }
        let spec = &scenario.requests[c.index];
        let label = format!("[{mode}] request r{}.{}", c.index, c.copy);
        crate::passthrough::check(
            c,
            Some(call),
            run.mode.is_stream(),
            spec.asks_usage(),
            &mut |m| failures.push(format!("{label}: {m}")),
        );
    }
}

fn check_invariants(
    s: &RequestStory<'_>,
    catalog: &Catalog,
    scenario: &Scenario,
    fail: &mut dyn FnMut(String),
) {
    let c = s.client;
    if let Some(b) = &c.broken {
        fail(format!("invariant: the client got no clean outcome: {b}"));
    }
    if let Some(problem) = ended_short_of_budget(s, scenario) {
        fail(format!("invariant: {problem}"));
    }
    for problem in continuation_budgets(s, scenario) {
        fail(format!("invariant: {problem}"));
    }
    let left = c.left.is_some();
    if left && s.terminal_events > 1 {
        fail(format!(
            "invariant: {} terminal events (completed/failed) for one request",
            s.terminal_events
        ));
    }
    if !left && c.request_id().is_some() && s.terminal_events != 1 {
        fail(format!(
            "invariant: {} terminal events (completed/failed) for one request",
            s.terminal_events
        ));
    }
    if s.mid_stream == Some(MidStreamPolicy::Error) && s.attempt_after_commit {
        fail("invariant: an attempt started after commit under mid_stream: error".into());
    }
    if let Some(max) = s.max_fallbacks {
        let mut groups: Vec<GroupId> = Vec::new();
        for step in &s.steps {
            if groups.last() != Some(&step.group) {
                if groups.contains(&step.group) {
                    fail(format!(
                        "invariant: group `{}` visited twice",
                        catalog.group(step.group).name
                    ));
                }
                groups.push(step.group);
            }
        }
        if groups.len() as u32 > max + 1 {
            fail(format!(
                "invariant: {} groups visited with max_fallbacks = {max}",
                groups.len()
            ));
        }
    }
    if s.steps.len() as u32 > catalog.limits.max_attempts {
        fail(format!(
            "invariant: {} attempts, over max_attempts",
            s.steps.len()
        ));
    }
    let spec = &scenario.requests[c.index];
    if let Some(key) = spec.key.as_deref().and_then(|k| catalog.key(k)) {
        // A name a wildcard group serves is allowed by name, not by the pattern's group.
        let by_name = catalog
            .route(&spec.model)
            .filter(|r| r.wildcard.is_some() && key.admits_name(&spec.model))
            .map(|r| r.group);
        for step in &s.steps {
            if !key.allowed[step.group.0 as usize] && Some(step.group) != by_name {
                fail(format!(
                    "invariant: group `{}` called but the key may not use it",
                    catalog.group(step.group).name
                ));
            }
        }
    }
    // The seed bug's symptom in a stream that failed after commit: with no attempt after
    // commit, every chunk the client got came from the committing call, the last one,
    // and names the model that call's answer named, never a primary's that failed before
    // commit (checked above only for answers that were served).
    if let (Mode::Stream, true, false, None, Some(call)) = (
        s.mode,
        s.committed,
        s.attempt_after_commit,
        &s.served,
        s.last_call,
    ) {
        if let Some(named) = sent_model(call) {
            let wrong = c.chunks.iter().enumerate().find(|(_, chunk)| {
                chunk
                    .model
                    .as_deref()
                    .is_some_and(|m| !m.is_empty() && m != named)
            });
            if let Some((i, chunk)) = wrong {
                fail(format!(
                    "invariant: chunk {i} of a stream that failed after commit names model {:?}, but the committing call's answer named `{named}`",
                    chunk.model
                ));
            }
        }
    }
    if let Some((_, _, model)) = &s.served {
        if c.succeeded() && c.model.as_ref() != Some(model) {
            fail(format!(
                "invariant: the client's final model is {:?} but the serving deployment reported `{model}`",
                c.model
            ));
        }
        if let Some(call) = s.serving_call.filter(|_| c.succeeded()) {
            // The seed bug's own symptom: after a fallback, the chunks kept the primary's
            // name. Every chunk from the first that brings text the serving call produced
            // (past the continued prefix), or anything a continued prefix never holds (a
            // tool call, reasoning, a finish: see `beyond_continued_text`), names the
            // serving deployment's model, not only the last one; without a continuation
            // every chunk came from the serving call, a tool call's, a refusal's or
            // reasoning's included, which bring no text (the primary's name on a
            // fallback's tool-call chunks passed before, and on a continuation's until the
            // second rule).
            let prefix = call.continuation.as_ref().map_or(0, String::len);
            let mut delivered = 0;
            let mut from_serving_call = call.continuation.is_none();
            for (i, chunk) in c.chunks.iter().enumerate() {
                delivered += chunk.text.len();
                from_serving_call |= delivered > prefix || beyond_continued_text(&chunk.raw);
                // Azure's prompt-filter and annotation chunks name no model (`""`), and
                // reach the client as Azure sent them.
                let unnamed = chunk.model.as_deref() == Some("");
                if from_serving_call && !unnamed && chunk.model.as_ref() != Some(model) {
                    fail(format!(
                        "invariant: chunk {i} of the serving call's answer names model {:?}, but the serving deployment reported `{model}`",
                        chunk.model
                    ));
                    break;
                }
            }
        }
        if let Some(call) = s.serving_call {
            // The engine's account of the model is checked against the provider's own,
            // not only the client's against the engine's: an engine that recorded and
            // stamped the same wrong name would otherwise pass.
            if let Some(named) = sent_model(call).filter(|named| named != model) {
                fail(format!(
                    "invariant: the engine reported model `{model}`, but the serving call's answer named `{named}`"
                ));
            }
            // A continuation's prefix is the gateway's own claim: it must be what the
            // earlier calls wrote, in order, each perhaps cut short, or a chunk dropped or
            // repeated before the continuation would pass unseen.
            if let Some(prefix) = &call.continuation {
                let earlier: Vec<String> = s.earlier_calls.iter().map(|c| sent_text(c)).collect();
                if !prefix_comes_from(prefix, &earlier) {
                    fail(format!(
                        "invariant: chunks lost or duplicated before a continuation: it carried {prefix:?}, the earlier calls wrote {earlier:?}"
                    ));
                }
            }
            // In both modes a continuation carries the text delivered so far, and the
            // answer is that text plus what the continuation added; unless what it added
            // completed a stop sequence the text delivered began, where the answer ends
            // with the text delivered (each provider checks `stop` against its own text
            // only: the gateway checks the seam).
            // An answer ended at the budget has what the serving call wrote before it
            // failed, not all it meant to write.
            let mut ended_at_seam = false;
            let written = match s.ended_at_budget {
                // Not a closing restatement's `message` (MiniMax's after its filter).
                true => sent_text_of(call, call.answered_json),
                false => call.planned.clone(),
            };
            let expected = match &call.continuation {
                Some(prefix) => {
                    let whole = format!("{prefix}{written}");
                    let stops = crate::fake::stop_sequences(&call.body);
                    ended_at_seam = stop_across(&whole, prefix.len(), &stops);
                    if ended_at_seam { prefix.clone() } else { whole }
                }
                None => written,
            };
            // A network fault on the serving call's link may have kept the rest of what it
            // wrote from the gateway, which served what came (an answer whose every
            // chunk says it finished, cut by a partition): the client then has at least
            // what surely came and at most what was written.
            let surely = serving_call_surely_delivered(scenario, s, call);
            let lossy = surely < call.sent.len();
            if c.succeeded() && !lossy && c.text != expected {
                fail(format!(
                    "invariant: chunks lost or duplicated: the client has {:?}, the serving call accounts for {expected:?}",
                    c.text
                ));
            }
            if c.succeeded() && lossy {
                let came = if ended_at_seam {
                    expected.clone()
                } else {
                    let prefix = call.continuation.as_deref().unwrap_or("");
                    format!("{prefix}{}", text_in(&call.sent[..surely], false))
                };
                if !expected.starts_with(&c.text) || !c.text.starts_with(&came) {
                    fail(format!(
                        "invariant: chunks lost or duplicated: the client has {:?}, not a leading part of what the serving call accounts for, {expected:?}, that holds what surely reached the gateway before a network fault on its link, {came:?}",
                        c.text
                    ));
                }
            }
            // How choice 0 ended is how the serving call ended it (its last finish, false
            // ones before it taken back), whatever came before: a continued answer's
            // finish was bounded only from above (no finish at all passed in both modes).
            // An answer the gateway ended at a seam ends with `stop`. One a network
            // fault cut ends as what came of it did: not judged.
            if c.succeeded() && !lossy {
                let theirs = if ended_at_seam {
                    Some("stop".to_string())
                } else if s.ended_at_budget {
                    // The provider's filter keeps its verdict (see `commit::Next::Spent`).
                    match s.steps.last().and_then(|step| step.class) {
                        Some(FailureClass::ContentPolicy) => Some("content_filter".to_string()),
                        _ => Some("length".to_string()),
                    }
                } else {
                    last_finish(call, 0)
                };
                let told = ending(c).finish_reasons.remove(&0);
                if let Some(theirs) = theirs.filter(|t| told.as_ref() != Some(t)) {
                    fail(format!(
                        "invariant: choice 0 ended with finish {told:?}, but the serving call's answer ended it with `{theirs}`"
                    ));
                }
            }
        }
    }
    if s.mode.is_stream() {
        let continued = s.serving_call.filter(|_| s.attempt_after_commit);
        for problem in stream_shape(c, continued, s.ended_at_budget) {
            fail(format!("invariant: {problem}"));
        }
    }
    // A stream that failed after commit ends with its last call's failure, under any
    // policy (`mid_stream: error`; or `continue`, its continuation refused or its plan
    // spent): the client has a leading part of the text delivered before that call (its
    // continuation) and what the call wrote, and all of it when the call's fault fired and
    // no limit cut the answer (a chunk held back to carry metadata, and dropped with the
    // error event, passed unseen before). Not all of it when the request has `stop`
    // sequences: a continuation's text that may complete one is held at the seam.
    let failed_stream = s.mode.is_stream() && s.committed && !c.succeeded();
    let stayed = c.left.is_none() && s.gone.is_none();
    // What the fake wrote reached the gateway only if nothing in between lost it: a network
    // fault (a partition) can swallow the rest, and the attempt then ends in a timeout.
    let timed_out = s.steps.last().and_then(|step| step.class) == Some(FailureClass::Timeout);
    let lossless = scenario.network.faults.is_empty() && !timed_out;
    if failed_stream && stayed {
        if let Some(call) = s.last_call.filter(|c| !c.flooded && !c.answered_json) {
            // What the call's stream wrote, not what it planned: an error in a JSON-only
            // dialect is a status before any of its text.
            let wrote = format!(
                "{}{}",
                call.continuation.as_deref().unwrap_or(""),
                sent_text_of(call, false)
            );
            let stops = crate::fake::stop_sequences(&call.body);
            if !wrote.starts_with(&c.text) {
                fail(format!(
                    "invariant: a stream failed after commit with {:?}, which is not a leading part of what was delivered before its last call and what that call wrote, {:?}",
                    c.text, wrote
                ));
            } else if call.fault_fired
                && lossless
                && s.limits_hit.is_empty()
                && stops.iter().all(String::is_empty)
                && c.text != wrote
            {
                fail(format!(
                    "invariant: content lost before a stream's error event: the client has {:?}, what was delivered before its last call and what that call wrote before its fault is {:?}",
                    c.text, wrote
                ));
            }
        }
    }
    // The deployment the client is told served it (the stream's metadata after an attempt
    // past commit, else the header) is the one the fakes saw answer last: judged by the
    // host and model of the last call, not by the engine's own account (a gateway that
    // named the primary after a fallback told both the client and its trace the same).
    if let (true, Some(call), Some(host)) = (c.succeeded(), s.last_call, s.last_call_host) {
        let told = c
            .meta
            .as_ref()
            .and_then(|m| m.get("deployment"))
            .and_then(serde_json::Value::as_str)
            .or_else(|| c.headers.get("x-switchback-deployment").map(String::as_str));
        if let Some(told) = told {
            let named = catalog.deployments.iter().find(|d| d.id == told);
            let answered = named.is_some_and(|d| {
                d.endpoint.host == host
                    && (d.model_template.is_some() || d.upstream_model == call.model)
            });
            if !answered {
                fail(format!(
                    "invariant: the client was told deployment `{told}` served it, but its last call went to `{host}` for model `{}`",
                    call.model
                ));
            }
        }
    }
    if c.succeeded() {
        let (retries, fallbacks) = c.counts();
        if let Some((er, ef)) = s.engine_counts {
            if (retries, fallbacks) != (Some(er), Some(ef)) {
                fail(format!(
                    "invariant: the client was told retries={retries:?} fallbacks={fallbacks:?}, the engine made {er} and {ef}"
                ));
            }
            // The engine's counters against its trace: a counter that missed a retry
            // would tell the client and the trace the same wrong figure.
            let (tr, tf) = s.traced_counts;
            if (er, ef) != (tr, tf) {
                fail(format!(
                    "invariant: the engine counted retries={er} fallbacks={ef}, its trace scheduled {tr} retries and took {tf} fallbacks"
                ));
            }
            // Every attempt after the first was a retry or a fallback's (a fallback
            // taken from a group whose deployments were all cooling made none).
            let attempts = s.steps.len() as u32;
            if attempts > 1 + tr + tf {
                fail(format!(
                    "invariant: {attempts} attempts, but the trace has {tr} retries and {tf} fallbacks: an attempt came from neither"
                ));
            }
        }
    }
}

fn check_expect(
    s: &RequestStory<'_>,
    e: &Expect,
    catalog: &Catalog,
    run: &ModeRun,
    fail: &mut dyn FnMut(String),
) {
    let c = s.client;
    if let Some(ids) = &s.unknown {
        let on_trace = [
            ("group", e.group.is_some()),
            ("deployment", e.deployment.is_some()),
            ("attempts", e.attempts.is_some()),
            ("attempt_count", e.attempt_count.is_some()),
            ("calls", e.calls.is_some()),
            ("events", !e.events.is_empty()),
            ("no_events", !e.no_events.is_empty()),
            ("limits", e.limits.is_some()),
        ];
        let named: Vec<&str> = on_trace
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name)
            .collect();
        if !named.is_empty() {
            // Passing them on an empty trace would pass them unseen.
            fail(format!(
                "{} cannot be checked: the client left before the response head, and so did \
                 other clients of its key and model, so which of requests {ids:?} is its own \
                 is unknown",
                named.join(", ")
            ));
        }
    }
    let status = c.error.as_ref().map(|e| e.status).or(c.status);
    if let Some(want) = e.status {
        if status != Some(want) {
            fail(format!(
                "status: expected {want}, got {status:?} ({})",
                describe_error(c)
            ));
        }
    }
    let served = s.served.as_ref();
    if let Some(want) = &e.group {
        let got = served.map(|(g, _, _)| catalog.group(*g).name.as_str());
        if got != Some(want.as_str()) {
            fail(format!("group: expected `{want}`, got {got:?}"));
        }
    }
    if let Some(want) = &e.deployment {
        let got = served.map(|(_, d, _)| catalog.deployment(*d).id.as_str());
        if got != Some(want.as_str()) {
            fail(format!("deployment: expected `{want}`, got {got:?}"));
        }
    }
    if let Some(want) = &e.attempts {
        let got = s.attempt_lines(catalog);
        if &got != want {
            fail(format!("attempts: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = e.attempt_count {
        if s.steps.len() != want as usize {
            fail(format!(
                "attempt_count: expected {want}, got {} ({:?})",
                s.steps.len(),
                s.attempt_lines(catalog)
            ));
        }
    }
    if let Some(want) = &e.calls {
        let id = s.id;
        for (host, n) in want {
            let mine: Vec<u32> = run
                .calls
                .get(host)
                .into_iter()
                .flatten()
                .filter(|call| id.is_some() && call.request_id == id)
                .map(|call| call.call)
                .collect();
            if mine.len() != *n as usize {
                fail(format!(
                    "calls: expected {n} call(s) to `{host}`, got {} (call numbers {mine:?})",
                    mine.len()
                ));
            }
        }
    }
    if let Some(want) = &e.headers {
        for (name, value) in want {
            let got = c.response_headers.get(&name.to_ascii_lowercase());
            if got != value.as_ref() {
                let show =
                    |v: Option<&String>| v.map_or("absent".to_string(), |v| format!("{v:?}"));
                fail(format!(
                    "headers: expected `{name}` {}, got {}",
                    show(value.as_ref()),
                    show(got)
                ));
            }
        }
    }
    if let Some(want) = &e.content {
        if &c.text != want {
            fail(format!("content: expected {want:?}, got {:?}", c.text));
        }
    }
    if let Some(want) = &e.usage {
        let told = ending(c).usage;
        for (name, n) in want {
            let got = told.as_ref().and_then(|u| u.get(name));
            if got.and_then(serde_json::Value::as_u64) != Some(*n) {
                fail(format!(
                    "usage: expected `{name}` {n}, got {}",
                    got.map_or("none".to_string(), |g| g.to_string())
                ));
            }
        }
    }
    if let Some(want) = &e.finish_reason {
        let got = ending(c).finish_reasons.remove(&0);
        if got.as_ref() != Some(want) {
            fail(format!("finish_reason: expected `{want}`, got {got:?}"));
        }
    }
    if let Some(want) = &e.model {
        if c.model.as_ref() != Some(want) {
            fail(format!("model: expected `{want}`, got {:?}", c.model));
        }
    }
    let (retries, fallbacks) = c.counts();
    if let Some(want) = e.retries {
        if retries != Some(want) {
            fail(format!("retries: expected {want}, got {retries:?}"));
        }
    }
    if let Some(want) = e.fallbacks {
        if fallbacks != Some(want) {
            fail(format!("fallbacks: expected {want}, got {fallbacks:?}"));
        }
    }
    if let Some(want) = &e.error_type {
        let got = c.error.as_ref().map(|e| e.error_type.as_str());
        if got != Some(want.as_str()) {
            fail(format!("error_type: expected `{want}`, got {got:?}"));
        }
    }
    for name in &e.events {
        if !s.events.contains(&name.as_str()) {
            fail(format!(
                "events: `{name}` did not occur (saw {:?})",
                s.events
            ));
        }
    }
    for name in &e.no_events {
        if s.events.contains(&name.as_str()) {
            fail(format!("no_events: `{name}` occurred"));
        }
    }
    for name in e.limits.iter().flatten() {
        if !s.limits_hit.contains(&name.as_str()) {
            fail(format!(
                "limits: `{name}` was not named by a limit_hit event (limits hit: {:?})",
                s.limits_hit
            ));
        }
    }
    if let Some(want) = e.stream_error {
        if s.mode.is_stream() {
            let got = c.error.is_some() && !c.done && c.status == Some(200);
            if got != want {
                fail(format!(
                    "stream_error: expected {want}, got {got} ({})",
                    describe_error(c)
                ));
            }
        }
    }
}

fn describe_error(c: &ClientResult) -> String {
    match (&c.error, &c.broken) {
        (Some(e), _) => format!("error type={} message={:?}", e.error_type, e.message),
        (None, Some(b)) => format!("broken: {b}"),
        (None, None) => "no error".into(),
    }
}

/// Stream/non-stream equivalence (DESIGN.md). Both runs must come from fresh worlds with the
/// same seed. On a mismatch, the message names the first diverging attempt.
pub fn check_equivalence(
    scenario: &Scenario,
    a: &ModeRun,
    b: &ModeRun,
    failures: &mut Vec<String>,
) {
    let (sa, sb) = (stories_of(scenario, a), stories_of(scenario, b));
    for (x, y) in sa.iter().zip(sb.iter()) {
        let spec = &scenario.requests[x.client.index];
        let expect = Expect::shared(spec.expect.as_ref(), &scenario.expect);
        if expect.equivalent == Some(false) {
            continue;
        }
        let label = format!("request r{}.{}", x.client.index, x.client.copy);
        let mut fail = |m: String| failures.push(format!("[equivalence] {label}: {m}"));
        let (ma, mb) = (a.mode.as_str(), b.mode.as_str());
        let under = |run: &ModeRun, s: &RequestStory<'_>| {
            s.id.and_then(|r| run.admitted_under.get(&r).copied())
        };
        if under(a, x) != under(b, y) {
            fail(format!(
                "admitted with different configs (0: the scenario's, n: after reload n): {ma} {:?}, {mb} {:?}",
                under(a, x),
                under(b, y)
            ));
        }
        if x.outcome() != y.outcome() {
            fail(format!(
                "outcome differs: {ma} {:?}, {mb} {:?}",
                x.outcome(),
                y.outcome()
            ));
        }
        // An error response before commit tells the SDKs whether to retry it themselves
        // (openai-python and openai-node retry a 408, 409, 429 or 5xx twice unless
        // `x-should-retry: false`): the two modes must tell them alike, or one mode's
        // clients multiply the gateway's own attempts.
        let should_retry =
            |s: &RequestStory<'_>| s.client.response_headers.get("x-should-retry").cloned();
        if x.outcome().is_err()
            && y.outcome().is_err()
            && !x.committed
            && !y.committed
            && should_retry(x) != should_retry(y)
        {
            fail(format!(
                "x-should-retry differs on the error: {ma} {:?}, {mb} {:?}",
                should_retry(x),
                should_retry(y)
            ));
        }
        if x.steps != y.steps {
            let i = x
                .steps
                .iter()
                .zip(&y.steps)
                .position(|(p, q)| p != q)
                .unwrap_or(x.steps.len().min(y.steps.len()));
            let show = |catalog: &Catalog, s: Option<&Step>| {
                s.map_or("(none)".to_string(), |s| {
                    format!(
                        "{}/{}: {}",
                        catalog.group(s.group).name,
                        catalog.deployment(s.deployment).id,
                        s.class.map_or("ok", |c| c.as_str())
                    )
                })
            };
            fail(format!(
                "attempts diverge at attempt {}: {ma} {}, {mb} {}",
                i + 1,
                show(x.catalog, x.steps.get(i)),
                show(y.catalog, y.steps.get(i))
            ));
        }
        let serving = |s: &RequestStory<'_>| s.served.as_ref().map(|(g, d, _)| (*g, *d));
        let both_served = x.client.succeeded() && y.client.succeeded();
        if serving(x) != serving(y) || (both_served && x.client.model != y.client.model) {
            fail(format!(
                "serving deployment or model differs: {ma} {:?} {:?}, {mb} {:?} {:?}",
                serving(x).map(|(_, d)| &x.catalog.deployment(d).id),
                x.client.model,
                serving(y).map(|(_, d)| &y.catalog.deployment(d).id),
                y.client.model
            ));
        }
        if both_served && x.client.text != y.client.text {
            fail(format!(
                "content differs: {ma} {:?}, {mb} {:?}",
                x.client.text, y.client.text
            ));
        }
        if both_served {
            // How each choice ended, and the usage the client is told (a stream tells it
            // only when asked): a continued answer is the same answer in both modes.
            let (ea, eb) = (ending(x.client), ending(y.client));
            if ea.finish_reasons != eb.finish_reasons {
                fail(format!(
                    "finish reasons differ: {ma} {:?}, {mb} {:?}",
                    ea.finish_reasons, eb.finish_reasons
                ));
            }
            if spec.asks_usage() && ea.usage != eb.usage {
                fail(format!(
                    "usage differs: {ma} {}, {mb} {}",
                    ea.usage.as_ref().map_or("none".into(), |u| u.to_string()),
                    eb.usage.as_ref().map_or("none".into(), |u| u.to_string()),
                ));
            }
        }
        if let Some(m) = upstream_divergence(
            (ma, &upstream_calls(a, x.id)),
            (mb, &upstream_calls(b, y.id)),
        ) {
            fail(m);
        }
        if x.client.succeeded() && y.client.succeeded() && x.client.counts() != y.client.counts() {
            fail(format!(
                "retry/fallback counts differ: {ma} {:?}, {mb} {:?}",
                x.client.counts(),
                y.client.counts()
            ));
        }
    }
    // In time order; within one instant, in a fixed order (which request's task the runtime
    // ran first in that instant is not behaviour).
    let cooled = |run: &ModeRun| -> Vec<(DeploymentId, u128, FailureClass)> {
        let mut cooled: Vec<_> = run
            .records
            .iter()
            .filter_map(|r| match &r.event {
                Event::DeploymentCooled {
                    deployment,
                    duration,
                    class,
                } => Some((r.at, *deployment, duration.as_millis(), *class)),
                _ => None,
            })
            .collect();
        cooled.sort();
        cooled.into_iter().map(|(_, d, ms, c)| (d, ms, c)).collect()
    };
    // Calls no request can be told by (a gateway that does not send its request number
    // upstream): the modes must still have sent the same ones.
    if scenario.expect.equivalent != Some(false) {
        if let Some(m) = upstream_divergence(
            (a.mode.as_str(), &upstream_calls(a, None)),
            (b.mode.as_str(), &upstream_calls(b, None)),
        ) {
            failures.push(format!(
                "[equivalence] calls without x-switchback-request-id: {m}"
            ));
        }
    }
    if cooled(a) != cooled(b) && scenario.expect.equivalent != Some(false) {
        failures.push(format!(
            "[equivalence] cooldowns differ: {} {:?}, {} {:?}",
            a.mode.as_str(),
            cooled(a),
            b.mode.as_str(),
            cooled(b)
        ));
    }
}

/// The upstream calls made for the request numbered `id` (`None`: the calls that carry no
/// request number), in the order they reached the fakes, with the host each went to.
fn upstream_calls(run: &ModeRun, id: Option<u64>) -> Vec<(&str, &CallRecord)> {
    let mut calls: Vec<(&str, &CallRecord)> = run
        .calls
        .iter()
        .flat_map(|(host, calls)| {
            calls
                .iter()
                .filter(move |c| c.request_id == id)
                .map(move |c| (host.as_str(), c))
        })
        .collect();
    calls.sort_by_key(|(_, c)| c.seq);
    calls
}

/// A JSON value as text, its keys in their order.
fn as_text(v: &serde_json::Value) -> String {
    v.to_string()
}

/// Where two modes' upstream calls for one request first differ, if they do. How a
/// deployment is called is the deployment's, never the client's (DESIGN.md: "both modes
/// send identical upstream traffic"), so each call must go to the same host with the same
/// body, key order included: the same `stream` flag, the same continuation, the same
/// messages and parameters.
fn upstream_divergence(
    (ma, xs): (&str, &[(&str, &CallRecord)]),
    (mb, ys): (&str, &[(&str, &CallRecord)]),
) -> Option<String> {
    let i = (0..xs.len().max(ys.len())).find(|&i| {
        match (xs.get(i), ys.get(i)) {
            // As text: `Value`'s equality ignores key order, which the engine keeps.
            (Some((hx, cx)), Some((hy, cy))) => hx != hy || as_text(&cx.body) != as_text(&cy.body),
            _ => true,
        }
    })?;
    let show = |call: Option<&(&str, &CallRecord)>| {
        call.map_or("(none)".to_string(), |(host, c)| {
            format!(
                "{host} stream={} continuation={}",
                c.stream,
                c.continuation.as_ref().map_or(0, |p| p.chars().count())
            )
        })
    };
    let (x, y) = (xs.get(i), ys.get(i));
    let mut m = format!(
        "upstream calls diverge at call {}: {ma} {}, {mb} {}",
        i + 1,
        show(x),
        show(y)
    );
    if let (Some((_, cx)), Some((_, cy))) = (x, y) {
        if show(x) == show(y) {
            m.push_str(&format!(
                " (request bodies differ: {ma} {}, {mb} {})",
                cx.body, cy.body
            ));
        }
    }
    Some(m)
}

/// The upstream calls no deployment of the run's configs would make, or that carry no
/// `x-switchback-request-id` (the oracle ties a call to its request by it): each call must name
/// the model one of the deployments at its host is called with (its `model` with the
/// provider prefix taken off; a wildcard deployment's depends on the request) and carry
/// that deployment's key as a Bearer (none without one; an Azure deployment's goes in
/// `api-key`). A fake answers whatever it is asked, so without this a gateway that sent
/// the group's name, the provider prefix, another deployment's key or the client's own
/// virtual key upstream passed, alike in both modes.
pub fn calls_no_deployment_makes(run: &ModeRun) -> Vec<String> {
    let catalogs: Vec<&switchback::catalog::Catalog> = std::iter::once(&*run.catalog)
        .chain(run.catalogs.iter().map(|c| &**c))
        .collect();
    let mut wrong = Vec::new();
    for (host, calls) in &run.calls {
        let at_host: Vec<&switchback::catalog::DeploymentSpec> = catalogs
            .iter()
            .flat_map(|c| c.deployments.iter())
            .filter(|d| d.endpoint.host == *host)
            .collect();
        if at_host.is_empty() {
            continue;
        }
        for call in calls {
            // The oracle ties a call to its request by this header: without it, the checks
            // of what the serving call sent (lost chunks, the served model, a
            // continuation's prefix) were skipped, not failed.
            if call.request_id.is_none() {
                wrong.push(format!(
                    "call {} to `{host}` carried no x-switchback-request-id: it cannot be \
                     tied to its request, and what it sent goes unchecked",
                    call.call
                ));
            }
            let made_by = |d: &&switchback::catalog::DeploymentSpec| {
                let model = d.model_template.is_some() || d.upstream_model == call.model;
                let key = d.api_key.as_ref().map(|k| k.expose().to_string());
                // Azure's deployments API takes the key in `api-key`, the others a Bearer;
                // and the path names the deployment the body's model is.
                let key = if d.endpoint.takes_api_key_header() {
                    call.authorization.is_none() && call.api_key == key
                } else {
                    call.api_key.is_none()
                        && call.authorization == key.map(|k| format!("Bearer {k}"))
                };
                let path = call.path_and_query == d.endpoint.chat_completions_path(&call.model);
                model && key && path
            };
            if !at_host.iter().any(made_by) {
                let key = match &call.authorization {
                    None => "no key".to_string(),
                    Some(a) => format!("key ...{}", &a[a.len().saturating_sub(4)..]),
                };
                wrong.push(format!(
                    "call {} to `{host}` named model `{}` with {key} at `{}`: no deployment \
                     at `{host}` is called so",
                    call.call, call.model, call.path_and_query
                ));
            }
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::prefix_comes_from;

    use switchback::attempt::GoneReason;
    use switchback::catalog::{DeploymentId, GroupId};
    use switchback::classify::{Blame, FailureClass, TimeoutKind};
    use switchback::config::MidStreamPolicy;
    use switchback::plan::{ListKind, SkipReason};
    use switchback::policy::Level;
    use switchback::route::GiveUp;
    use switchback::trace::Event;

    use super::{EVENT_NAMES, beyond_continued_text, listed_name, surely_delivered};

    /// What a network fault on a call's link leaves surely delivered: the payloads that
    /// arrived (left one top latency) before it began, or left after it was mended.
    #[test]
    fn payloads_a_network_fault_may_have_kept_from_the_gateway() {
        let scenario = |faults: &str| {
            let yaml = format!(
                r#"name: n
gateway:
  allow_anonymous: true
  model_list:
    - {{model_name: a, litellm_params: {{model: openai/m, api_base: "http://pa:8000/v1"}}}}
providers:
  - {{host: pa}}
  - {{host: pb}}
network:
  latency_ms: [1, 2]
  faults: {faults}
requests:
  - {{model: a}}
"#
            );
            crate::scenario::Scenario::load("n.yaml", &yaml).expect("a valid scenario")
        };
        let call = |at: &[u64]| crate::fake::CallRecord {
            sent: at.iter().map(|t| format!("payload at {t}")).collect(),
            sent_at: at.iter().map(|&t| Duration::from_millis(t)).collect(),
            ..Default::default()
        };
        let during = call(&[40, 47, 48, 60]);
        assert_eq!(surely_delivered(&scenario("[]"), "pa", &during), 4);
        let cut = scenario("[{at_ms: 50, partition: [pa, gateway]}]");
        assert_eq!(
            surely_delivered(&cut, "pa", &during),
            2,
            "48 + 2 ms reaches 50"
        );
        assert_eq!(surely_delivered(&cut, "pb", &during), 4, "another link");
        let mended =
            scenario("[{at_ms: 50, partition: [gateway, pa]}, {at_ms: 55, repair: [gateway, pa]}]");
        assert_eq!(surely_delivered(&mended, "pa", &during), 2);
        assert_eq!(
            surely_delivered(&mended, "pa", &call(&[56, 70])),
            2,
            "after the repair"
        );
        let dropping = scenario("[{at_ms: 0, fail_rate: {link: [gateway, pa], rate: 0.1}}]");
        assert_eq!(surely_delivered(&dropping, "pa", &during), 0);
        let crashed = scenario("[{at_ms: 59, crash: pa}]");
        assert_eq!(surely_delivered(&crashed, "pa", &during), 3);
    }

    /// What only the call after a continuation's seam can have sent, and what an earlier
    /// call's text chunks may hold as well.
    #[test]
    fn output_beyond_continued_text_is_told_apart() {
        let chunk = |choices: &str| format!(r#"{{"id":"x","model":"m","choices":[{choices}]}}"#);
        for earlier in [
            r#"{"index":0,"delta":{"role":"assistant","content":""}}"#,
            r#"{"index":0,"delta":{"content":"abc"},"finish_reason":null,"logprobs":null}"#,
            r#"{"index":0,"delta":{"content":"abc","tool_calls":[],"reasoning_content":null}}"#,
            r#"{"index":0,"delta":{"content":"abc"},"finish_reason":""}"#,
            r#"{"index":1,"delta":{"content":""}}"#,
        ] {
            assert!(!beyond_continued_text(&chunk(earlier)), "{earlier}");
        }
        for later in [
            r#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}"#,
            r#"{"index":0,"delta":{"reasoning_content":"hmm"}}"#,
            r#"{"index":0,"delta":{"refusal":"no"}}"#,
            r#"{"index":0,"delta":{},"finish_reason":"stop"}"#,
            r#"{"index":0,"delta":{"content":"a"},"logprobs":{"content":[]}}"#,
            r#"{"index":1,"delta":{"content":"b"}}"#,
        ] {
            assert!(beyond_continued_text(&chunk(later)), "{later}");
        }
        assert!(!beyond_continued_text("not json"));
    }

    /// The list QA's names are checked against is the engine's own vocabulary.
    #[test]
    fn event_names_are_the_engines() {
        let (g, d) = (GroupId(0), DeploymentId(0));
        let class = FailureClass::Transient;
        let every = [
            Event::Admitted {
                key: "k".into(),
                group: g,
                stream: false,
            },
            Event::PlanResolved {
                chain: vec![g],
                fallbacks_from: Level::Default,
                max_fallbacks: 1,
                mid_stream: MidStreamPolicy::Continue,
            },
            Event::AttemptStarted {
                attempt: 1,
                group: g,
                deployment: d,
                continuation: false,
            },
            Event::AttemptFailed {
                attempt: 1,
                deployment: d,
                class,
                status: None,
                retry_after: None,
                after_chunks: 0,
                mocked: false,
                timeout: Some(TimeoutKind::FirstByte),
            },
            Event::DeploymentCooled {
                deployment: d,
                duration: Duration::ZERO,
                class,
            },
            Event::FailureNotCounted {
                deployment: d,
                reason: Blame::RequestTimeout,
            },
            Event::RetryScheduled {
                group: g,
                deployment: d,
                delay: Duration::ZERO,
            },
            Event::RetryRerouted {
                group: g,
                from: d,
                to: DeploymentId(1),
            },
            Event::GroupExhausted {
                group: g,
                reason: GiveUp::BudgetSpent,
            },
            Event::LinkSkipped {
                from: g,
                to: g,
                list: ListKind::Fallbacks,
                reason: SkipReason::NotAllowed,
            },
            Event::FallbackTaken {
                from: g,
                to: g,
                list: ListKind::Fallbacks,
                class,
            },
            Event::OrderFallbackTaken {
                group: g,
                from_order: 1,
                to_order: 2,
                class,
            },
            Event::Committed {
                attempt: 1,
                deployment: d,
            },
            Event::Completed {
                group: g,
                deployment: d,
                model: "m".into(),
                retries: 0,
                fallbacks: 0,
                chunks: 0,
            },
            Event::Failed {
                status: 500,
                error_type: "api_error",
                class,
                committed: false,
            },
            Event::ContinuationRefused { reason: "r" },
            Event::StopSequenceAtSeam { attempt: 2 },
            Event::ClientGone {
                reason: GoneReason::Left,
            },
            Event::LimitHit { limit: "x" },
            Event::StreamRefused { attempt: 1 },
            Event::EndedAtBudget { attempt: 1 },
        ];
        let names: Vec<&str> = every.iter().map(Event::name).collect();
        assert_eq!(names, EVENT_NAMES);
        for e in &every {
            assert_eq!(listed_name(e), e.name());
        }
    }

    /// A continuation's prefix must be what the earlier calls wrote, each perhaps cut
    /// short: a piece dropped or repeated is caught (the review's case: "uick " dropped
    /// and the rest sent on as the prefix), a tail cut is not a fault.
    #[test]
    fn a_prefix_comes_from_the_earlier_calls_or_not() {
        let calls = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(prefix_comes_from(
            "The quick ",
            &calls(&["The quick brown"])
        ));
        assert!(prefix_comes_from("", &calls(&["The quick brown"])));
        assert!(prefix_comes_from(
            "The quick brown",
            &calls(&["The quick brown"])
        ));
        assert!(!prefix_comes_from(
            "The qbrown",
            &calls(&["The quick brown"])
        ));
        assert!(!prefix_comes_from(
            "The quick The quick ",
            &calls(&["The quick brown"])
        ));
        // Two calls, the first cut where the second's text happens to begin alike.
        assert!(prefix_comes_from("abX", &calls(&["ab", "bX"])));
        assert!(prefix_comes_from("ab", &calls(&["", "ab"])));
        assert!(!prefix_comes_from("ba", &calls(&["ab"])));
        // Multi-byte text is split on characters.
        assert!(prefix_comes_from("héx", &calls(&["hé", "x"])));
        // Repetitive text over many calls, with a prefix that does not match: answered
        // without trying every split (this took exponential time).
        let ha = "ha ".repeat(200);
        let many = calls(&[ha.as_str(); 12]);
        assert!(!prefix_comes_from(&format!("{ha}{ha}X"), &many));
        assert!(prefix_comes_from(&format!("{ha}{ha}"), &many));
    }
}
