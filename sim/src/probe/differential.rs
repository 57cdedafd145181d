//! Differential probing: one scenario against two gateways, compared request by request and
//! mode by mode.
//!
//! Owns: sending a scenario's requests to two gateways (for example Switchback's `serve` and
//! a LiteLLM proxy, each started with a config `fakes --emit-config` wrote for the same
//! fakes), comparing what each did — the provider calls it made, in order, and what its
//! client got — and the report with its verdict. Does not judge one gateway's two modes
//! against each other (`verdict`), nor start the gateways (the caller does).
//!
//! Every request of one mode goes to gateway A, then the same mode to gateway B; the fakes
//! are reset before each, so per-call scripts replay identically for both. The gateways are
//! separate processes, so one's cooldowns cannot reach the other; each gateway's own modes
//! are still separated by the pause, as in a plain probe.
//!
//! What counts as the same: the provider call lines (`host#call model: outcome`, see
//! [`Observed::call_lines`]) in order, the HTTP status (or `broken`), and the answer's text.
//! Error *types* and header names are each gateway's own vocabulary and are shown, not
//! compared. Agreement is claimed only where something was answered and seen: two answers
//! both broken (a stream cut after its 200 on both), and a row whose provider calls may be
//! another request's, compare nothing, and the run is then `could not run`. Where two
//! gateways are meant to differ (a difference the README documents), the
//! report's `differs:` lines say exactly how, so a test can assert that difference and no
//! other.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::{GatewayUrl, Observed, Pause, Progress, Reference, preflight, probe_mode};
use crate::live::RunningFakes;
use crate::scenario::{Mode, Scenario};
use crate::trace::TraceSink;

/// One of the two gateways compared.
#[derive(Debug, Clone)]
pub struct Side {
    /// How the report names it: `A` or `B`, with its URL.
    pub label: &'static str,
    pub gateway: GatewayUrl,
    /// The key sent by requests that have none in the scenario.
    pub api_key: Option<String>,
}

/// One request in one mode, on both gateways.
#[derive(Debug, Clone)]
pub struct DiffRow {
    pub label: String,
    pub mode: Mode,
    pub a: Observed,
    pub b: Observed,
    /// Empty when the two gateways did the same.
    pub differences: Vec<String>,
    /// Why the differences may not be the gateways' own doing (the pause before this mode
    /// was cut short of a cooldown; a provider call came late): they are shown, and the run
    /// is then `could not run` rather than `different` unless another row differs.
    pub tainted: Option<String>,
    /// The row's provider calls may be another request's (a gateway still calling for one
    /// its client gave up on): its agreement is not claimed either. A cut pause alone
    /// leaves an agreement standing: both gateways met the same leftover cooldowns.
    pub mixed: bool,
}

/// The verdict of a differential probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffVerdict {
    Same,
    Different,
    CouldNotRun,
}

impl DiffVerdict {
    /// The exit status of `switchback probe --against`.
    pub fn exit_code(self) -> u8 {
        match self {
            DiffVerdict::Same => 0,
            DiffVerdict::Different => 1,
            DiffVerdict::CouldNotRun => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DiffVerdict::Same => "same",
            DiffVerdict::Different => "different",
            DiffVerdict::CouldNotRun => "could not run",
        }
    }
}

/// A whole differential probe.
#[derive(Debug, Clone)]
pub struct DiffRun {
    pub sides: [Side; 2],
    pub rows: Vec<DiffRow>,
    pub could_not_run: Option<String>,
    /// What the scenario expects that neither gateway was held to ([`Reference::unchecked`]).
    pub unchecked: Vec<String>,
}

impl DiffRun {
    pub fn verdict(&self) -> DiffVerdict {
        let differs = |r: &&DiffRow| !r.differences.is_empty();
        // A difference that can be trusted stands whatever else went wrong: a request
        // that compared nothing (`could_not_run` with rows) does not hide it.
        if self
            .rows
            .iter()
            .filter(differs)
            .any(|r| r.tainted.is_none())
        {
            DiffVerdict::Different
        } else if self.could_not_run.is_some() || self.rows.iter().any(|r| differs(&r) || r.mixed) {
            // Nothing was compared somewhere, or every difference may be an artefact of the
            // run (see `DiffRow::tainted`), or a row's calls may be another request's (see
            // `DiffRow::mixed`): neither that difference nor that agreement is claimed.
            DiffVerdict::CouldNotRun
        } else {
            DiffVerdict::Same
        }
    }

    /// Why the run could not be judged: its own reason, or the first row that may not show
    /// the gateways' own doing (a difference first).
    pub fn why_not_judged(&self) -> Option<String> {
        if self.verdict() != DiffVerdict::CouldNotRun {
            return None;
        }
        if let Some(r) = &self.could_not_run {
            return Some(r.clone());
        }
        let row = self
            .rows
            .iter()
            .filter(|r| r.tainted.is_some())
            .find(|r| !r.differences.is_empty())
            .or_else(|| self.rows.iter().find(|r| r.mixed))?;
        Some(format!(
            "request {} {} {}, but not judged: {}",
            row.label,
            row.mode.as_str(),
            if row.differences.is_empty() {
                "is the same"
            } else {
                "differs"
            },
            row.tainted.as_deref().unwrap_or_default()
        ))
    }
}

/// What the client got, in words both gateways share: the HTTP status, and an error's
/// status where it differs from it (a stream answered 200 that then failed with an error
/// event is `200 then error 429`, not the `error 429` of a refusal), or `broken`, or `timed
/// out`; never the error's type.
fn status_of(o: &Observed) -> String {
    let c = &o.client;
    match (&c.broken, &c.error, c.status) {
        (Some(_), _, _) if timed_out(o) => "timed out".into(),
        (Some(_), _, _) => "broken".into(),
        (None, Some(e), Some(http)) if http != e.status => {
            format!("{http} then error {}", e.status)
        }
        (None, Some(e), _) => format!("error {}", e.status),
        (None, None, Some(s)) => s.to_string(),
        (None, None, None) => "no answer".into(),
    }
}

/// How `a` and `b` (the same request in the same mode, on gateways A and B) differ; empty
/// when they do not.
pub fn compare(a: &Observed, b: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    let (calls_a, calls_b) = (a.call_lines(), b.call_lines());
    if calls_a != calls_b {
        let first = calls_a
            .iter()
            .zip(&calls_b)
            .position(|(x, y)| x != y)
            .unwrap_or(calls_a.len().min(calls_b.len()));
        let at = |calls: &[String]| {
            calls
                .get(first)
                .map_or_else(|| "(no call)".to_string(), |c| format!("`{c}`"))
        };
        out.push(format!(
            "calls: {} against {} call(s); from call {} on, A made {} and B made {}",
            calls_a.len(),
            calls_b.len(),
            first + 1,
            at(&calls_a),
            at(&calls_b)
        ));
    }
    let (status_a, status_b) = (status_of(a), status_of(b));
    if status_a != status_b {
        out.push(format!("outcome: A {status_a}, B {status_b}"));
    } else if a.client.broken.is_none() && a.client.text != b.client.text {
        // The same status (a broken answer's text is wherever the break fell): the text is
        // compared with an error too, e.g. what two streams delivered before their error.
        out.push(format!(
            "text: A {:?}, B {:?}",
            a.client.text, b.client.text
        ));
    }
    out
}

/// Pairs the two gateways' observations of one mode, request by request.
fn rows(
    mode: Mode,
    a: Vec<(String, Observed)>,
    b: Vec<(String, Observed)>,
    tainted: Option<&str>,
) -> Vec<DiffRow> {
    assert_eq!(
        a.len(),
        b.len(),
        "both gateways are sent every request of the scenario"
    );
    a.into_iter()
        .zip(b)
        .map(|((label, a), (label_b, b))| {
            assert_eq!(label, label_b, "requests are sent in the same order");
            let differences = compare(&a, &b);
            let tainted = tainted
                .map(str::to_string)
                .or_else(|| a.tainted.as_ref().map(|w| format!("A: {w}")))
                .or_else(|| b.tainted.as_ref().map(|w| format!("B: {w}")));
            let mixed = a.tainted.is_some() || b.tainted.is_some();
            DiffRow {
                label,
                mode,
                a,
                b,
                differences,
                tainted,
                mixed,
            }
        })
        .collect()
}

/// Sends every request of `scenario` to both gateways, in both of the scenario's modes
/// (non-stream first, then `pause`, then stream), and compares them. `reference` says which
/// requests reach a provider when the scenario runs as written (on Switchback in
/// simulation): one that reaches none on either gateway compares nothing.
#[allow(clippy::too_many_arguments)]
pub async fn differential(
    scenario: &Scenario,
    reference: &Reference,
    fakes: &RunningFakes,
    sides: [Side; 2],
    pause: Pause,
    timeout: Option<Duration>,
    sink: Arc<dyn TraceSink>,
    progress: Progress<'_>,
) -> DiffRun {
    for side in &sides {
        if let Err(e) = preflight::gateway_answers(&side.gateway).await {
            return DiffRun {
                sides: sides.clone(),
                rows: Vec::new(),
                could_not_run: Some(format!("gateway {}: {e}", side.label)),
                unchecked: Vec::new(),
            };
        }
    }
    let mut all = Vec::new();
    // Calls a gateway goes on making for a request its client gave up on are waited for;
    // if they never stop, the next requests (gateway B's, and the next mode's) are not
    // judged.
    let mut still_calling = None;
    for (i, mode) in scenario.modes.iter().copied().enumerate() {
        if i > 0 && !pause.wait.is_zero() {
            progress(&format!(
                "pausing {:.1} s between the modes, for the gateways' cooldowns to end (--pause)",
                pause.wait.as_secs_f64()
            ));
            tokio::time::sleep(pause.wait).await;
        }
        let mut seen = Vec::new();
        for side in &sides {
            let tell = |line: &str| progress(&format!("{} {line}", side.label));
            seen.push(
                probe_mode(
                    scenario,
                    fakes,
                    &side.gateway,
                    side.api_key.as_deref(),
                    timeout,
                    mode,
                    sink.clone(),
                    &tell,
                    &mut still_calling,
                )
                .await,
            );
        }
        let b = seen.pop().expect("two sides");
        let a = seen.pop().expect("two sides");
        // Only a mode after a pause can meet the cooldowns an earlier mode left.
        let cut = pause.cut.as_deref().filter(|_| i > 0);
        all.extend(rows(mode, a, b, cut));
    }
    DiffRun {
        sides,
        could_not_run: nothing_compared(&all, reference),
        unchecked: {
            let mut unchecked = reference.unchecked.clone();
            if reference.non_stream_total_calls.is_some() || reference.stream_total_calls.is_some()
            {
                unchecked.push(
                    "total_calls: the gateways' calls are compared with each other, call by \
                     call, not with the scenario's totals"
                        .into(),
                );
            }
            unchecked
        },
        rows: all,
    }
}

/// Two gateways that both gave no answer in time, or that both reached no provider for a
/// request that reaches one as the scenario is written (a wrong key: 401 on both; a wrong
/// base path: 404 on both; both gone: broken on both), agree on nothing that was tested; nor
/// do two that did the same but not what the scenario expects (its status, content or
/// provider calls, or a fault it relies on never fired), or that both answered what the
/// serving provider call never wrote (cut short, emptied, doubled): both wrong alike is no
/// evidence that either is right. The first such request, as the reason the run could not be judged.
fn nothing_compared(rows: &[DiffRow], reference: &Reference) -> Option<String> {
    let mut index = [0usize; 2];
    let none = super::reference::Expected::default();
    rows.iter().find_map(|r| {
        // Rows come mode by mode, each in the order the reference has them.
        let i = &mut index[usize::from(r.mode.is_stream())];
        let expected = reference.for_mode(r.mode).get(*i).unwrap_or(&none);
        let reaches = expected.reaches_provider;
        *i += 1;
        let misses = |o: &Observed| {
            let mut m = super::verdict::expectation_misses(o, expected);
            m.extend(
                super::verdict::unfired(o, expected)
                    .into_iter()
                    .map(|f| format!("fault not fired: {f}")),
            );
            m.extend(super::verdict::unwritten_answer(o));
            m
        };
        // As a plain probe judges one gateway's two modes: a broken answer is no outcome.
        let broke = |o: &Observed| o.client.broken.clone().filter(|_| !timed_out(o));
        if timed_out(&r.a) && timed_out(&r.b) {
            Some(format!(
                "request {} {}: neither gateway answered in time ({}); raise --timeout",
                r.label,
                r.mode.as_str(),
                r.a.outcome()
            ))
        } else if reaches && r.a.calls.is_empty() && r.b.calls.is_empty() {
            Some(format!(
                "request {} {}: neither gateway reached a provider (A: {}, B: {}), where the scenario reaches one; check --api-key, --against-api-key and the gateways' URLs",
                r.label,
                r.mode.as_str(),
                r.a.outcome(),
                r.b.outcome()
            ))
        } else if let (Some(a), Some(b)) = (broke(&r.a), broke(&r.b)) {
            Some(format!(
                "request {} {}: both gateways broke the answer (A: {a}; B: {b}), so their agreement tests nothing",
                r.label,
                r.mode.as_str()
            ))
        } else if r.differences.is_empty() && r.tainted.is_none() {
            let (a, b) = (misses(&r.a), misses(&r.b));
            (!a.is_empty() || !b.is_empty()).then(|| {
                format!(
                    "request {} {}: both gateways did the same, but not what the scenario expects (A: {}; B: {}), so their agreement tests nothing",
                    r.label,
                    r.mode.as_str(),
                    if a.is_empty() { "met".into() } else { a.join(", ") },
                    if b.is_empty() { "met".into() } else { b.join(", ") },
                )
            })
        } else {
            None
        }
    })
}

fn timed_out(o: &Observed) -> bool {
    o.client
        .broken
        .as_deref()
        .is_some_and(|b| b.starts_with(super::TIMED_OUT))
}

/// The report: each request and mode with both gateways' calls and outcomes, `same` or the
/// exact differences, then the verdict and its exit status.
pub fn report(scenario: &Scenario, run: &DiffRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario: {}", scenario.name);
    for side in &run.sides {
        let g = &side.gateway;
        let _ = writeln!(
            out,
            "gateway {}: http://{}:{}{}",
            side.label, g.host, g.port, g.base_path
        );
    }
    let verdict = run.verdict();
    // With no rows there is nothing else to show; with rows, they are shown (a difference
    // among them may stand), and the reason comes with the verdict.
    if let Some(reason) = run.could_not_run.as_ref().filter(|_| run.rows.is_empty()) {
        let _ = writeln!(
            out,
            "\nverdict: could not run (exit status {}): {reason}",
            verdict.exit_code()
        );
        return out;
    }
    super::untranslated_note(&mut out, scenario);
    for r in &run.rows {
        let _ = writeln!(out, "\nrequest {} {}", r.label, r.mode.as_str());
        let row = |out: &mut String, name: &str, a: String, b: String| {
            let line = format!("  {name:<9} {a:<44} {b}");
            let _ = writeln!(out, "{}", line.trim_end());
        };
        row(&mut out, "", "A".into(), "B".into());
        row(&mut out, "outcome", r.a.outcome(), r.b.outcome());
        row(
            &mut out,
            "text",
            format!("{:?}", r.a.client.text),
            format!("{:?}", r.b.client.text),
        );
        super::call_rows(&mut out, &r.a.call_lines(), &r.b.call_lines(), &row);
        if r.differences.is_empty() {
            let _ = writeln!(out, "  same");
        }
        for d in &r.differences {
            let _ = writeln!(out, "  differs: {d}");
        }
        if let Some(why) = r
            .tainted
            .as_deref()
            .filter(|_| r.mixed || !r.differences.is_empty())
        {
            let _ = writeln!(out, "  not judged: {why}");
        }
    }
    super::unchecked_lines(&mut out, &run.unchecked);
    let same = run.rows.iter().filter(|r| r.differences.is_empty()).count();
    let _ = writeln!(
        out,
        "\n{} request-mode(s): {same} the same, {} different",
        run.rows.len(),
        run.rows.len() - same
    );
    match run.why_not_judged() {
        Some(why) => {
            let _ = writeln!(
                out,
                "verdict: {} (exit status {}): {why}",
                verdict.as_str(),
                verdict.exit_code()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "verdict: {} (exit status {})",
                verdict.as_str(),
                verdict.exit_code()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientResult, SeenError};
    use crate::fake::CallRecord;

    /// A call with `outcome`; one that is `ok` writes "hi".
    fn call(host: &str, n: u32, outcome: &str) -> (String, CallRecord) {
        (
            host.to_string(),
            CallRecord {
                call: n,
                model: "m".into(),
                outcome: outcome.into(),
                fault_fired: outcome != "ok",
                planned: if outcome == "ok" {
                    "hi".into()
                } else {
                    String::new()
                },
                ..CallRecord::default()
            },
        )
    }

    fn observed(status: u16, text: &str, calls: Vec<(String, CallRecord)>) -> Observed {
        Observed {
            client: ClientResult {
                status: Some(status),
                text: text.into(),
                ..ClientResult::default()
            },
            calls,
            tainted: None,
        }
    }

    /// A timeout is no answer: against a broken stream it is a difference, and two of them
    /// compare nothing (the run could not be judged, never `same`). Nor do two answers both
    /// broken (a stream cut after its 200 on both): nothing was answered to compare.
    #[test]
    fn timeouts_are_not_the_same_as_anything() {
        let broken = |why: &str| Observed {
            client: ClientResult {
                broken: Some(why.into()),
                ..ClientResult::default()
            },
            ..Observed::default()
        };
        let timeout = broken(&format!("{} 60000 ms", crate::probe::TIMED_OUT));
        let cut = broken("stream ended without [DONE] or an error event");
        assert_eq!(
            compare(&timeout, &cut),
            vec!["outcome: A timed out, B broken"]
        );
        let row = |a: &Observed, b: &Observed| DiffRow {
            label: "r0".into(),
            mode: Mode::Stream,
            tainted: None,
            mixed: false,
            differences: compare(a, b),
            a: a.clone(),
            b: b.clone(),
        };
        let reference = Reference::default();
        let both = nothing_compared(&[row(&timeout, &timeout), row(&cut, &cut)], &reference);
        assert!(
            both.as_deref()
                .is_some_and(|r| r.starts_with("request r0 stream: neither gateway answered")),
            "{both:?}"
        );
        assert_eq!(
            nothing_compared(&[row(&cut, &cut)], &reference).as_deref(),
            Some(
                "request r0 stream: both gateways broke the answer (A: stream ended without [DONE] or an error event; B: stream ended without [DONE] or an error event), so their agreement tests nothing"
            )
        );
    }

    /// A difference in a row that may not show the gateways' own doing makes the run
    /// `could not run`, unless a row that can be trusted differs too.
    #[test]
    fn tainted_differences_are_not_claimed() {
        let a = observed(200, "hi", vec![call("a", 1, "ok")]);
        let b = observed(429, "", vec![]);
        let row = |a: &Observed, b: &Observed, tainted: Option<&str>| DiffRow {
            label: "r0.0".into(),
            mode: Mode::Stream,
            differences: compare(a, b),
            mixed: tainted.is_some_and(|t| t.starts_with("A:")),
            tainted: tainted.map(str::to_string),
            a: a.clone(),
            b: b.clone(),
        };
        let run = |rows| DiffRun {
            sides: std::array::from_fn(|i| Side {
                label: ["A", "B"][i],
                gateway: GatewayUrl::parse("http://127.0.0.1:4000").unwrap(),
                api_key: None,
            }),
            rows,
            could_not_run: None,
            unchecked: Vec::new(),
        };
        let cut = run(vec![
            row(&a, &b, Some("the pause was cut")),
            row(&a, &a, None),
        ]);
        assert_eq!(cut.verdict(), DiffVerdict::CouldNotRun);
        assert_eq!(
            cut.why_not_judged().as_deref(),
            Some("request r0.0 stream differs, but not judged: the pause was cut")
        );
        let real = run(vec![
            row(&a, &b, Some("the pause was cut")),
            row(&a, &b, None),
        ]);
        assert_eq!(real.verdict(), DiffVerdict::Different);
        // Nor is an agreement claimed where the calls may be another request's; one after a
        // cut pause is (both gateways met the same leftover cooldowns).
        let mixed_same = run(vec![
            row(&a, &a, Some("A: still calling")),
            row(&a, &a, None),
        ]);
        assert_eq!(mixed_same.verdict(), DiffVerdict::CouldNotRun);
        assert_eq!(
            mixed_same.why_not_judged().as_deref(),
            Some("request r0.0 stream is the same, but not judged: A: still calling")
        );
        let cut_same = run(vec![
            row(&a, &a, Some("the pause was cut")),
            row(&a, &a, None),
        ]);
        assert_eq!(cut_same.verdict(), DiffVerdict::Same);
        assert_eq!(run(vec![row(&a, &a, None)]).verdict(), DiffVerdict::Same);
        // A request that compared nothing does not hide a difference that can be trusted
        // (it did: `could not run`, and no row was shown); alone, it is the reason the run
        // was not judged, shown after the rows.
        let nothing = |rows| DiffRun {
            could_not_run: Some("request r1.0 stream: neither gateway reached a provider".into()),
            ..run(rows)
        };
        let hidden = nothing(vec![row(&a, &b, None)]);
        assert_eq!(hidden.verdict(), DiffVerdict::Different);
        assert_eq!(hidden.why_not_judged(), None);
        let scenario = crate::scenario::Scenario::load_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scenarios/live/control_no_fault.yaml"
        )))
        .unwrap();
        let report = report(&scenario, &hidden);
        assert!(report.contains("differs: "), "{report}");
        assert!(!report.contains("not checked by this probe"), "{report}");
        let unchecked = DiffRun {
            unchecked: vec!["events: not seen from outside a gateway".into()],
            ..hidden.clone()
        };
        let report = super::report(&scenario, &unchecked);
        assert!(
            report
                .contains("not checked by this probe:\n  events: not seen from outside a gateway"),
            "{report}"
        );
        let alone = nothing(vec![row(&a, &a, None)]);
        assert_eq!(alone.verdict(), DiffVerdict::CouldNotRun);
        assert_eq!(
            alone.why_not_judged().as_deref(),
            Some("request r1.0 stream: neither gateway reached a provider")
        );
    }

    /// Two gateways that both refuse before any provider call (a wrong key, a wrong base
    /// path, both gone) tested nothing, where the scenario's request reaches a provider;
    /// where it reaches none as written (a cooled group answering 429 at once), the same
    /// refusal is the same.
    #[test]
    fn neither_gateway_reaching_a_provider_compares_nothing() {
        let refused = |status: u16| {
            let mut o = observed(status, "", vec![]);
            o.client.error = Some(SeenError {
                status,
                error_type: "auth_error".into(),
                message: "bad key".into(),
            });
            o
        };
        let row = |mode: Mode, a: &Observed, b: &Observed| DiffRow {
            label: "r0.0".into(),
            mode,
            differences: compare(a, b),
            tainted: None,
            mixed: false,
            a: a.clone(),
            b: b.clone(),
        };
        let reaches = |yes: bool| Reference {
            non_stream: vec![crate::probe::Expected {
                reaches_provider: yes,
                ..Default::default()
            }],
            stream: vec![crate::probe::Expected {
                reaches_provider: yes,
                ..Default::default()
            }],
            ..Reference::default()
        };
        let served = observed(200, "hi", vec![call("a", 1, "ok")]);
        let rows = [
            row(Mode::NonStream, &served, &served),
            row(Mode::Stream, &refused(401), &refused(401)),
        ];
        assert!(rows.iter().all(|r| r.differences.is_empty()));
        assert_eq!(
            nothing_compared(&rows, &reaches(true)).as_deref(),
            Some(
                "request r0.0 stream: neither gateway reached a provider (A: error 401 auth_error, B: error 401 auth_error), where the scenario reaches one; check --api-key, --against-api-key and the gateways' URLs"
            )
        );
        assert_eq!(nothing_compared(&rows, &reaches(false)), None);
    }

    /// Two gateways that did the same, but not what the scenario expects (both skipped the
    /// primary whose fault the scenario relies on; both served other text), agree on
    /// nothing tested: the run could not be judged, never `same`.
    #[test]
    fn the_same_wrong_answer_on_both_is_not_the_same() {
        let row = |a: &Observed| DiffRow {
            label: "r0.0".into(),
            mode: Mode::NonStream,
            differences: Vec::new(),
            tainted: None,
            mixed: false,
            a: a.clone(),
            b: a.clone(),
        };
        let expecting = |e: crate::probe::Expected| Reference {
            non_stream: vec![e],
            ..Reference::default()
        };
        let fallback_only = observed(200, "hi", vec![call("b", 1, "ok")]);
        let relies_on_primary = expecting(crate::probe::Expected {
            faults: [("a".to_string(), "http 429".to_string())].into(),
            content: Some("hi".into()),
            reaches_provider: true,
            ..Default::default()
        });
        let why = nothing_compared(&[row(&fallback_only)], &relies_on_primary);
        assert_eq!(
            why.as_deref(),
            Some(
                "request r0.0 non_stream: both gateways did the same, but not what the scenario expects (A: fault not fired: a http 429; B: fault not fired: a http 429), so their agreement tests nothing"
            )
        );
        let primary_then_fallback = observed(
            200,
            "hi",
            vec![call("a", 1, "http 429"), call("b", 1, "ok")],
        );
        assert_eq!(
            nothing_compared(&[row(&primary_then_fallback)], &relies_on_primary),
            None
        );
        // Both answering what the serving call never wrote (the fallback started over
        // and its text was added to the primary's) agree on nothing that was tested.
        let no_content = expecting(crate::probe::Expected {
            faults: [("a".to_string(), "http 429".to_string())].into(),
            reaches_provider: true,
            ..Default::default()
        });
        let mut doubled = primary_then_fallback.clone();
        doubled.client.text = "hihi".into();
        assert!(
            nothing_compared(&[row(&doubled)], &no_content)
                .is_some_and(|w| w.contains("not what the serving provider call wrote")),
            "{:?}",
            nothing_compared(&[row(&doubled)], &no_content)
        );
        let other_text = expecting(crate::probe::Expected {
            content: Some("bye".into()),
            reaches_provider: true,
            ..Default::default()
        });
        assert!(
            nothing_compared(&[row(&primary_then_fallback)], &other_text)
                .is_some_and(|w| w.contains(r#"content: expected "bye", got "hi""#))
        );
    }

    /// A stream that was answered 200 and then failed with an error event is not an error
    /// answered with its status, and the text each client got is compared with errors too.
    #[test]
    fn the_http_status_and_the_text_count_when_there_is_an_error() {
        let seen = |status: u16| SeenError {
            status,
            error_type: "rate_limit_error".into(),
            message: "slow down".into(),
        };
        let mut midstream = observed(200, "The quick", vec![]);
        midstream.client.error = Some(seen(429));
        let mut refused = observed(429, "", vec![]);
        refused.client.error = Some(seen(429));
        assert_eq!(
            compare(&midstream, &refused),
            vec!["outcome: A 200 then error 429, B error 429"]
        );
        let mut further = observed(200, "The quick brown", vec![]);
        further.client.error = Some(seen(429));
        assert_eq!(
            compare(&midstream, &further),
            vec![r#"text: A "The quick", B "The quick brown""#]
        );
    }

    #[test]
    fn the_same_calls_and_answer_are_the_same() {
        let a = observed(
            200,
            "hi",
            vec![call("a", 1, "http 500"), call("a", 2, "ok")],
        );
        assert!(compare(&a, &a.clone()).is_empty());
    }

    #[test]
    fn a_different_call_sequence_names_the_first_call_that_differs() {
        let a = observed(
            200,
            "hi",
            vec![call("a", 1, "http 500"), call("a", 2, "ok")],
        );
        let b = observed(
            200,
            "hi",
            vec![call("a", 1, "http 500"), call("b", 1, "ok")],
        );
        assert_eq!(
            compare(&a, &b),
            vec![
                "calls: 2 against 2 call(s); from call 2 on, A made `a#2 m: ok` and B made `b#1 m: ok`"
            ]
        );
        let shorter = observed(200, "hi", vec![call("a", 1, "http 500")]);
        assert_eq!(
            compare(&a, &shorter),
            vec![
                "calls: 2 against 1 call(s); from call 2 on, A made `a#2 m: ok` and B made (no call)"
            ]
        );
    }

    #[test]
    fn outcomes_compare_by_status_and_text_never_by_error_type() {
        let ok = observed(200, "hi", vec![]);
        let mut err_a = observed(429, "", vec![]);
        err_a.client.error = Some(SeenError {
            status: 429,
            error_type: "rate_limit_error".into(),
            message: "slow down".into(),
        });
        let mut err_b = err_a.clone();
        err_b.client.error.as_mut().expect("error").error_type = "RateLimitError".into();
        assert!(compare(&err_a, &err_b).is_empty());
        assert_eq!(compare(&ok, &err_a), vec!["outcome: A 200, B error 429"]);
        let other_text = observed(200, "bye", vec![]);
        assert_eq!(compare(&ok, &other_text), vec![r#"text: A "hi", B "bye""#]);
    }
}
