//! Probing any OpenAI-compatible gateway (LiteLLM, Switchback, another) for stream /
//! non-stream equivalence, over real loopback sockets.
//!
//! Owns: running a scenario's requests against an external gateway in both modes (one request
//! at a time, so every provider call belongs to the request in flight), with a bound on each
//! request and progress while waiting; reconstructing each request's attempts from the fakes'
//! call logs (an external gateway has no trace to read); the whole run (checks, optional setup
//! of keys and teams, both modes, the verdict); and the side-by-side report. The fakes are
//! reset between the modes, so per-call scripts replay identically; the gateway itself cannot
//! be reset, so the modes are separated by a pause long enough for its cooldowns to end.
//!
//! The parts: [`reference`] (what each request relies on and is expected to show),
//! [`differential`] (one scenario against two gateways, compared),
//! [`verdict`] (comparison and verdict), [`preflight`] (ports and gateway checks), [`setup`]
//! (keys and teams through LiteLLM's admin API).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use switchback::transport::TcpConnector;

use crate::client::{self, ClientResult, Target};
use crate::fake::CallRecord;
use crate::live::RunningFakes;
use crate::scenario::{Mode, Scenario};
use crate::trace::TraceSink;

pub mod differential;
pub mod preflight;
pub mod reference;
pub mod setup;
pub mod verdict;

pub use reference::{Expected, Reference};
pub use verdict::{Judgement, Naming, Verdict};

/// A request waits at most this long in each mode unless `--timeout` says otherwise (or the
/// scenario's own `timeout_ms` is shorter).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `--timeout` accepted, in seconds.
pub const MAX_REQUEST_TIMEOUT_SECS: f64 = 600.0;
/// How often `probe` says it is still waiting for a request.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How the client reports a request that did not finish within its bound.
pub const TIMED_OUT: &str = "no complete answer within";
/// After a request the client gave up on (it timed out, or left as its script says), the
/// gateway may still be calling providers for it, and those calls would land in the next
/// request's window: `probe` waits until no call has arrived for this long...
pub const SETTLE_QUIET: Duration = Duration::from_millis(500);
/// ... but no longer than this. A gateway an outside observer cannot ask when it is done
/// is watched through the fakes' call logs, polled this often.
pub const SETTLE_MAX: Duration = Duration::from_secs(10);
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// Where the gateway under probe listens.
#[derive(Debug, Clone)]
pub struct GatewayUrl {
    pub host: String,
    pub port: u16,
    pub base_path: String,
}

impl GatewayUrl {
    /// Parses `http://127.0.0.1:4000` (a `/v1` path is optional). Only loopback is allowed:
    /// probing sends scripted traffic and must never leave the machine.
    pub fn parse(url: &str) -> Result<GatewayUrl, String> {
        let e = switchback::upstream::Endpoint::parse(url)?;
        if e.tls {
            return Err(format!(
                "`{url}`: probe speaks plain http to a loopback gateway"
            ));
        }
        let loopback = e.host == "localhost"
            || e.host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "`{url}`: only loopback gateways (127.0.0.1, ::1, localhost) may be probed"
            ));
        }
        let base_path = if e.base_path.is_empty() {
            "/v1".to_string()
        } else {
            e.base_path
        };
        Ok(GatewayUrl {
            host: if e.host == "localhost" {
                "127.0.0.1".into()
            } else {
                e.host
            },
            port: e.port,
            base_path,
        })
    }
}

/// What one request showed in one mode.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub client: ClientResult,
    /// Provider calls made while the request was in flight, in arrival order.
    pub calls: Vec<(String, CallRecord)>,
    /// Why `calls` may hold calls the gateway made for an earlier request (one it went on
    /// with after its client gave up): its comparisons are then not judged.
    pub tainted: Option<String>,
}

impl Observed {
    /// `host#call model: outcome`, the attempts as the providers saw them; a scripted fault
    /// that did not happen (the gateway stopped reading first) is marked `(not fired)`.
    pub fn call_lines(&self) -> Vec<String> {
        self.calls
            .iter()
            .map(|(host, c)| {
                let not_fired = if c.outcome != "ok" && !c.fault_fired {
                    " (not fired)"
                } else {
                    ""
                };
                format!("{host}#{} {}: {}{not_fired}", c.call, c.model, c.outcome)
            })
            .collect()
    }

    /// `200`, `error 429 rate_limit_error`, `broken (...)`: what the client got.
    pub fn outcome(&self) -> String {
        let c = &self.client;
        match (&c.broken, &c.error, c.status) {
            (Some(b), _, _) => format!("broken ({b})"),
            (None, Some(e), _) if e.error_type.is_empty() => format!("error {}", e.status),
            (None, Some(e), _) => format!("error {} {}", e.status, e.error_type),
            (None, None, Some(s)) => format!("{s}"),
            (None, None, None) => "no answer".into(),
        }
    }

    fn fallbacks_header(&self) -> Option<String> {
        let h = &self.client.headers;
        let from_meta = self
            .client
            .meta
            .as_ref()
            .and_then(|m| m.get("attempted_fallbacks"))
            .map(|v| v.to_string());
        from_meta
            .or_else(|| h.get("x-switchback-attempted-fallbacks").cloned())
            .or_else(|| h.get("x-litellm-attempted-fallbacks").cloned())
    }

    fn chunk_models(&self) -> Vec<String> {
        let mut models: Vec<String> = Vec::new();
        for c in &self.client.chunks {
            let m = c.model.clone().unwrap_or_else(|| "-".into());
            if models.last() != Some(&m) {
                models.push(m);
            }
        }
        models
    }
}

/// Both modes of one request, and the verdict on them.
#[derive(Debug, Clone)]
pub struct Pair {
    pub label: String,
    pub non_stream: Observed,
    pub stream: Observed,
    pub judgement: Judgement,
}

/// Options of one probe.
pub struct ProbeOptions {
    pub gateway: GatewayUrl,
    /// The key sent by requests that have none in the scenario (e.g. LiteLLM's master key).
    /// A request with its own `key` always sends that key.
    pub api_key: Option<String>,
    /// Pause between the modes, for the gateway's cooldowns to end.
    pub pause: Pause,
    /// Bound on each request (default: the scenario's `timeout_ms`, at most
    /// [`DEFAULT_REQUEST_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// With a master key: create the scenario's teams and keys first (LiteLLM's admin API).
    pub setup_master_key: Option<String>,
}

/// Progress lines while a probe runs (to standard error in the command).
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// How waiting for the fakes to go quiet ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Calls that arrived while waiting.
    pub late: usize,
    /// No call arrived for `quiet` before `max` was up.
    pub quiet: bool,
}

/// Waits until `count` (the calls the fakes have received) has not moved for `quiet`
/// while `busy` (a call still being answered: a gateway waiting out a stall may call again
/// when it gives up) said no, at most `max`, looking every `poll`.
pub async fn settle(
    count: impl Fn() -> usize,
    busy: impl Fn() -> bool,
    quiet: Duration,
    max: Duration,
    poll: Duration,
) -> Settled {
    let start = tokio::time::Instant::now();
    let first = count();
    let (mut last, mut since) = (first, start);
    loop {
        let now = tokio::time::Instant::now();
        if now.duration_since(since) >= quiet {
            return Settled {
                late: last - first,
                quiet: true,
            };
        }
        if now.duration_since(start) >= max {
            return Settled {
                late: last - first,
                quiet: false,
            };
        }
        tokio::time::sleep(poll).await;
        let n = count();
        if n != last || busy() {
            (last, since) = (n, tokio::time::Instant::now());
        }
    }
}

/// Sends every request of `scenario`, one at a time and none before its `at_ms`, in `mode`, against the gateway, with
/// `fakes` (reset first) answering its upstream calls. Requests with a `key` send it;
/// others send `api_key`. `still_calling` says, coming in, why the gateway may still be
/// calling providers for a request sent before (its calls would be taken for the first
/// request's), and going out the same for whatever is sent next.
#[allow(clippy::too_many_arguments)]
pub async fn probe_mode(
    scenario: &Scenario,
    fakes: &RunningFakes,
    gateway: &GatewayUrl,
    api_key: Option<&str>,
    timeout: Option<Duration>,
    mode: Mode,
    sink: Arc<dyn TraceSink>,
    progress: Progress<'_>,
    still_calling: &mut Option<String>,
) -> Vec<(String, Observed)> {
    let target = Target {
        connector: Arc::new(TcpConnector),
        host: gateway.host.clone(),
        port: gateway.port,
        base_path: gateway.base_path.clone(),
    };
    // Probing runs on real sockets against a real gateway: real time is the point here
    // (chunk times in the client's record, progress while waiting), and nothing here is
    // replayed or snapshotted.
    let started = std::time::Instant::now();
    let clock = move || started.elapsed();
    for f in &fakes.fakes {
        f.reset();
    }
    let mut observed = Vec::new();
    // As a sequential scenario runs in simulation (`client::run_requests`): one at a time,
    // none before its `at_ms`, so that a request sent after a cooldown ran out is.
    let mode_started = tokio::time::Instant::now();
    for (index, spec) in scenario.requests.iter().enumerate() {
        tokio::time::sleep_until(mode_started + Duration::from_millis(spec.at_ms)).await;
        let mut spec = spec.clone();
        let bound = timeout
            .unwrap_or_else(|| Duration::from_millis(spec.timeout_ms).min(DEFAULT_REQUEST_TIMEOUT));
        spec.timeout_ms = bound.as_millis().max(1) as u64;
        for copy in 0..spec.repeat {
            let label = format!("r{index}.{copy}");
            let before: Vec<usize> = fakes.fakes.iter().map(|f| f.calls().len()).collect();
            let key = spec.key.as_deref().or(api_key);
            let sent = std::time::Instant::now();
            let send = client::send_spec(
                &target,
                &spec,
                index,
                copy,
                mode,
                key,
                sink.as_ref(),
                &clock,
            );
            tokio::pin!(send);
            let mut ticks = tokio::time::interval_at(
                tokio::time::Instant::now() + PROGRESS_EVERY,
                PROGRESS_EVERY,
            );
            let r = loop {
                tokio::select! {
                    biased;
                    r = &mut send => break r,
                    _ = ticks.tick() => progress(&format!(
                        "{} {label}: still waiting for the gateway ({} s of at most {} s)",
                        mode.as_str(),
                        sent.elapsed().as_secs(),
                        bound.as_secs_f64()
                    )),
                }
            };
            let mut calls: Vec<(String, CallRecord)> = fakes
                .fakes
                .iter()
                .zip(&before)
                .flat_map(|(f, n)| {
                    f.calls()
                        .into_iter()
                        .skip(*n)
                        .map(|c| (f.spec.host.clone(), c))
                })
                .collect();
            calls.sort_by_key(|(_, c)| c.seq);
            let o = Observed {
                client: r,
                calls,
                tainted: still_calling.take(),
            };
            progress(&format!(
                "{} {label}: {} in {:.2} s, {} provider call(s)",
                mode.as_str(),
                o.outcome(),
                sent.elapsed().as_secs_f64(),
                o.calls.len()
            ));
            // The client gave up (or its calls were mixed with an earlier request's): the
            // gateway may go on calling providers for it. Its calls must not be taken for
            // the next request's, so wait for them to stop; if they do not, say so.
            // Any broken answer counts: the client stopped reading there (a timeout, a
            // stream past its bound, bad SSE, a stream to a `stream: false` request), and
            // the gateway may not have stopped with it. Waiting costs a quiet half second.
            // So may a gateway that answered (its own 504, say) while a provider was still
            // answering a call of this request (a `stall` it stopped waiting for): the call's
            // end, and any the gateway makes after it, must not land on the next request.
            let gave_up = o.client.left.is_some() || o.client.broken.is_some();
            let answering = || fakes.fakes.iter().any(|f| f.answering() > 0);
            if gave_up || o.tainted.is_some() || answering() {
                let all_calls = || fakes.fakes.iter().map(|f| f.calls().len()).sum::<usize>();
                let settled =
                    settle(all_calls, answering, SETTLE_QUIET, SETTLE_MAX, SETTLE_POLL).await;
                if settled.late > 0 {
                    progress(&format!(
                        "{} {label}: {} provider call(s) came after the client gave up",
                        mode.as_str(),
                        settled.late
                    ));
                }
                if !settled.quiet {
                    *still_calling = Some(format!(
                        "the gateway was still calling providers {} s after {} {label} ended (it went on after its client gave up), so these calls may include that request's",
                        SETTLE_MAX.as_secs(),
                        mode.as_str()
                    ));
                }
            }
            observed.push((label, o));
        }
    }
    observed
}

/// Pairs the two modes' observations request by request and judges each pair against what
/// the scenario relies on ([`Reference`]).
pub fn pair_up(
    scenario: &Scenario,
    reference: &Reference,
    non_stream: Vec<(String, Observed)>,
    stream: Vec<(String, Observed)>,
) -> Vec<Pair> {
    let none = Expected::default();
    non_stream
        .into_iter()
        .zip(stream)
        .enumerate()
        .map(|(i, ((label, n), (_, s)))| {
            let spec = scenario.requests.get(n.client.index);
            let naming = spec
                .map(|spec| Naming::of(scenario, spec))
                .unwrap_or_default();
            let expected = (
                reference.non_stream.get(i).unwrap_or(&none),
                reference.stream.get(i).unwrap_or(&none),
            );
            let key = spec.and_then(|spec| spec.key.as_deref());
            let mut judgement = verdict::judge(&n, &s, expected, &naming, key);
            for (mode, o) in [("non_stream", &n), ("stream", &s)] {
                if let Some(why) = &o.tainted {
                    judgement.taint_calls(&format!("{mode}: {why}"));
                }
            }
            Pair {
                label,
                non_stream: n,
                stream: s,
                judgement,
            }
        })
        .collect()
}

/// A whole probe: the verdict, and either the pairs or why it could not run.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    pub verdict: Verdict,
    pub could_not_run: Option<String>,
    pub pairs: Vec<Pair>,
    /// Where a mode's whole run fell short of the scenario's `total_calls`: the run is then
    /// no better than `inconclusive`.
    pub whole_run: Vec<String>,
    /// What the scenario expects that the probe did not check ([`Reference::unchecked`]).
    pub unchecked: Vec<String>,
}

impl ProbeRun {
    pub fn could_not_run(reason: impl Into<String>) -> ProbeRun {
        ProbeRun {
            verdict: Verdict::CouldNotRun,
            could_not_run: Some(reason.into()),
            pairs: Vec::new(),
            whole_run: Vec::new(),
            unchecked: Vec::new(),
        }
    }
}

/// Checks the gateway answers, sets up keys and teams if asked, then sends both modes
/// (non-stream first, `o.pause` apart: the gateway's cooldowns cannot be reset from outside)
/// and judges every request. The fakes must already run at the ports the gateway knows.
pub async fn probe(
    scenario: &Scenario,
    reference: &Reference,
    fakes: &RunningFakes,
    o: &ProbeOptions,
    sink: Arc<dyn TraceSink>,
    progress: Progress<'_>,
) -> ProbeRun {
    if let Err(e) = preflight::gateway_answers(&o.gateway).await {
        return ProbeRun::could_not_run(e);
    }
    if let Some(master) = &o.setup_master_key {
        match setup::setup_litellm(scenario, &o.gateway, master, progress).await {
            Ok(n) => progress(&format!("setup: {n} team(s) and key(s) created")),
            Err(e) => {
                return ProbeRun::could_not_run(format!(
                    "setting up the scenario's teams and keys failed: {e}"
                ));
            }
        }
    }
    let key = o.api_key.as_deref();
    let mut still_calling = None;
    let n = probe_mode(
        scenario,
        fakes,
        &o.gateway,
        key,
        o.timeout,
        Mode::NonStream,
        sink.clone(),
        progress,
        &mut still_calling,
    )
    .await;
    let non_stream_totals = calls_per_host(fakes);
    let still_calling_after_non_stream = still_calling.is_some();
    if !o.pause.wait.is_zero() {
        progress(&format!(
            "pausing {:.1} s between the modes, for the gateway's cooldowns to end (--pause)",
            o.pause.wait.as_secs_f64()
        ));
        tokio::time::sleep(o.pause.wait).await;
    }
    let s = probe_mode(
        scenario,
        fakes,
        &o.gateway,
        key,
        o.timeout,
        Mode::Stream,
        sink,
        progress,
        &mut still_calling,
    )
    .await;
    let whole_run = whole_run_misses(
        reference,
        [
            ModeTotals {
                mode: Mode::NonStream,
                calls: non_stream_totals,
                tainted: still_calling_after_non_stream
                    || n.iter().any(|(_, o)| o.tainted.is_some()),
            },
            ModeTotals {
                mode: Mode::Stream,
                calls: calls_per_host(fakes),
                // A cut pause: the cooldowns the first mode left may still turn calls away.
                tainted: still_calling.is_some()
                    || o.pause.cut.is_some()
                    || s.iter().any(|(_, o)| o.tainted.is_some()),
            },
        ],
    );
    let mut pairs = pair_up(scenario, reference, n, s);
    if let Some(cut) = &o.pause.cut {
        for p in &mut pairs {
            p.judgement.taint(cut);
        }
    }
    // The modes may agree request by request and still not do what the scenario expects
    // of the whole run: that agreement proves nothing either.
    let whole_run_verdict = (!whole_run.is_empty()).then_some(Verdict::Inconclusive);
    ProbeRun {
        verdict: Verdict::overall(
            pairs
                .iter()
                .map(|p| p.judgement.verdict)
                .chain(whole_run_verdict),
        ),
        could_not_run: None,
        pairs,
        whole_run,
        unchecked: reference.unchecked.clone(),
    }
}

/// What the providers received in one mode's whole run.
#[derive(Debug, Clone)]
pub struct ModeTotals {
    pub mode: Mode,
    /// Calls each provider host received in the mode, all requests together.
    pub calls: BTreeMap<String, u32>,
    /// The mode's calls may hold another's: a request's calls were marked as possibly
    /// another's, or the gateway was still calling when the mode ended.
    pub tainted: bool,
}

/// Where each mode's whole run falls short of the scenario's `total_calls`, as far as the
/// reference holds a gateway to them; a tainted mode is not held to its totals.
pub fn whole_run_misses(reference: &Reference, modes: [ModeTotals; 2]) -> Vec<String> {
    modes
        .iter()
        .filter(|m| !m.tainted)
        .flat_map(|m| {
            verdict::total_calls_misses(reference.total_calls(m.mode), &m.calls)
                .into_iter()
                .map(|miss| format!("{}: {miss}", m.mode.as_str()))
        })
        .collect()
}

/// Calls each provider host has received since the fakes were last reset.
pub fn calls_per_host(fakes: &RunningFakes) -> BTreeMap<String, u32> {
    fakes
        .fakes
        .iter()
        .map(|f| (f.spec.host.clone(), f.calls().len() as u32))
        .collect()
}

/// The side-by-side report, ending with the verdict and its exit status.
pub fn report(scenario: &Scenario, run: &ProbeRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario: {}", scenario.name);
    if let Some(reason) = &run.could_not_run {
        let _ = writeln!(
            out,
            "\nverdict: could not run (exit status {}): {reason}",
            Verdict::CouldNotRun.exit_code()
        );
        return out;
    }
    let _ = writeln!(
        out,
        "(timing-exact expectations are not checked in probe mode; decisions are)"
    );
    untranslated_note(&mut out, scenario);

    for p in &run.pairs {
        let _ = writeln!(out, "\nrequest {}", p.label);
        let row = |out: &mut String, name: &str, a: String, b: String| {
            let _ = writeln!(out, "  {name:<11} {a:<44} {b}");
        };
        row(&mut out, "", "non_stream".into(), "stream".into());
        row(
            &mut out,
            "outcome",
            p.non_stream.outcome(),
            p.stream.outcome(),
        );
        row(
            &mut out,
            "model",
            format!("{:?}", p.non_stream.client.model),
            format!(
                "{:?} chunks: {}",
                p.stream.client.model,
                p.stream.chunk_models().join(" > ")
            ),
        );
        row(
            &mut out,
            "text",
            format!("{:?}", p.non_stream.client.text),
            format!("{:?}", p.stream.client.text),
        );
        let headers = |o: &Observed| {
            o.client
                .headers
                .iter()
                .filter(|(k, _)| {
                    k.contains("fallback")
                        || k.contains("retries")
                        || k.contains("deployment")
                        || k.contains("model-id")
                })
                .map(|(k, v)| {
                    let short = k
                        .trim_start_matches("x-")
                        .replace("switchback-attempted-", "")
                        .replace("switchback-", "")
                        .replace("litellm-attempted-", "litellm-");
                    format!("{short}={v}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        row(
            &mut out,
            "headers",
            headers(&p.non_stream),
            headers(&p.stream),
        );
        call_rows(
            &mut out,
            &p.non_stream.call_lines(),
            &p.stream.call_lines(),
            &row,
        );
        let j = &p.judgement;
        match j.reasons.first() {
            None => {
                let _ = writeln!(out, "  verdict     {}", j.verdict.as_str());
            }
            Some(first) => {
                let _ = writeln!(
                    out,
                    "  verdict     {}: {first}",
                    j.verdict.as_str().to_uppercase()
                );
                for more in &j.reasons[1..] {
                    let _ = writeln!(out, "              also: {more}");
                }
            }
        }
        for note in &j.notes {
            let _ = writeln!(out, "  note        {note}");
        }
    }
    for miss in &run.whole_run {
        let _ = writeln!(
            out,
            "\nthe whole run: expect not met ({miss}), so the modes' agreement proves nothing"
        );
    }
    unchecked_lines(&mut out, &run.unchecked);
    let count = |v: Verdict| {
        run.pairs
            .iter()
            .filter(|p| p.judgement.verdict == v)
            .count()
    };
    let _ = writeln!(
        out,
        "\n{} request(s): {} equivalent, {} different, {} inconclusive, {} could not run",
        run.pairs.len(),
        count(Verdict::Equivalent),
        count(Verdict::Different),
        count(Verdict::Inconclusive),
        count(Verdict::CouldNotRun),
    );
    let _ = writeln!(
        out,
        "verdict: {} (exit status {})",
        run.verdict.as_str(),
        run.verdict.exit_code()
    );
    out
}

/// What the scenario expects that the probe did not check ([`Reference::unchecked`]), as a
/// report's closing block: nothing when it checked everything.
pub fn unchecked_lines(out: &mut String, unchecked: &[String]) {
    if !unchecked.is_empty() {
        let _ = writeln!(out, "\nnot checked by this probe:");
        for line in unchecked {
            let _ = writeln!(out, "  {line}");
        }
    }
}

/// The `calls` rows of a side-by-side report: `a`'s and `b`'s call lines next to each
/// other, `(none)` for both when neither made a call.
pub fn call_rows(
    out: &mut String,
    a: &[String],
    b: &[String],
    row: &dyn Fn(&mut String, &str, String, String),
) {
    if a.is_empty() && b.is_empty() {
        row(out, "calls", "(none)".into(), "(none)".into());
    }
    for i in 0..a.len().max(b.len()) {
        row(
            out,
            if i == 0 { "calls" } else { "" },
            a.get(i).cloned().unwrap_or_default(),
            b.get(i).cloned().unwrap_or_default(),
        );
    }
}

/// The pause between the modes, and whether its bound cut it short of the scenario's
/// cooldowns.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    pub wait: Duration,
    /// Why the second mode may still meet cooldowns the first mode left, when
    /// [`crate::scenario::MAX_PAUSE_SECS`] cut the pause below the scenario's longest
    /// cooldown: a difference in that mode is then not blamed on the gateway.
    pub cut: Option<String>,
}

impl Pause {
    /// A pause the user chose (`--pause`): taken as given, its risk the user's own.
    pub fn given(wait: Duration) -> Pause {
        Pause { wait, cut: None }
    }
}

/// The longest a deployment of `scenario` may stay cooled, in seconds: the largest of the
/// gateway's `cooldown_time` (or the default), every deployment's own `cooldown_time` (which
/// beats the other two where it is set, and the emitted LiteLLM config keeps), and every
/// Retry-After a script sends (a fault's `retry_after`, or its `headers:` as
/// `retry-after-ms`, seconds or an HTTP-date, read as the gateway reads them). The largest,
/// because which of them a cooldown takes depends on the deployment and the failure.
pub fn longest_cooldown(scenario: &Scenario) -> f64 {
    let router = scenario
        .gateway
        .router_settings
        .cooldown_time
        .unwrap_or(switchback::catalog::DEFAULT_COOLDOWN_TIME.as_secs_f64());
    let deployments = scenario
        .gateway
        .model_list
        .iter()
        .filter_map(|d| d.litellm_params.cooldown_time);
    // Real time: the probe runs on the real clock, and a gateway measures an HTTP-date
    // Retry-After against its own (when the script sends no `date` header to measure by).
    let now = std::time::SystemTime::now();
    let retry_after = scenario
        .providers
        .iter()
        .flat_map(|p| std::iter::once(&p.default).chain(&p.calls))
        .flat_map(|s| {
            let headers: http::HeaderMap = s
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?,
                        http::HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect();
            let from_headers =
                switchback::classify::retry_after(&headers, now).map(|d| d.as_secs_f64());
            s.fault
                .as_ref()
                .and_then(|f| f.retry_after)
                .into_iter()
                .chain(from_headers)
        });
    deployments
        .chain(retry_after)
        .filter(|s| s.is_finite())
        .fold(router, f64::max)
}

/// The pause that lets the scenario's cooldowns end between the modes: the longest cooldown
/// ([`longest_cooldown`]) + 0.5 s, at most [`crate::scenario::MAX_PAUSE_SECS`] + 0.5 s (a
/// probe must end); when that bound cuts it, [`Pause::cut`] says so.
pub fn default_pause(scenario: &Scenario) -> Pause {
    let longest = longest_cooldown(scenario);
    let max = crate::scenario::MAX_PAUSE_SECS;
    let cut = (longest > max).then(|| {
        format!(
            "the pause between the modes was cut to {max} s (its bound), and a deployment may stay cooled for {longest:.1} s in this scenario: the stream mode may have met a cooldown the non_stream mode left"
        )
    });
    Pause {
        wait: Duration::from_secs_f64(longest.min(max) + 0.5),
        cut,
    }
}

/// The report's note on the scenario's settings a LiteLLM config cannot carry, if any.
fn untranslated_note(out: &mut String, scenario: &Scenario) {
    let untranslated = crate::emit::litellm_untranslated(scenario);
    if !untranslated.is_empty() {
        let _ = writeln!(
            out,
            "note: settings a LiteLLM config from `--emit-config litellm` does not carry ({}): against such a LiteLLM, what relies on them cannot be compared",
            untranslated.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rel: &str) -> Scenario {
        let path = format!("{}/../scenarios/{rel}", env!("CARGO_MANIFEST_DIR"));
        Scenario::load_file(std::path::Path::new(&path)).unwrap()
    }

    /// A mode whose provider hosts did not receive the scenario's `total_calls` misses
    /// them, unless its calls may hold another's.
    #[test]
    fn a_whole_run_is_held_to_its_total_calls() {
        let reference = Reference {
            stream_total_calls: Some([("a".to_string(), 1), ("b".to_string(), 0)].into()),
            ..Reference::default()
        };
        let totals = |mode, calls: &[(&str, u32)], tainted| ModeTotals {
            mode,
            calls: calls.iter().map(|(h, n)| (h.to_string(), *n)).collect(),
            tainted,
        };
        let met = [
            totals(Mode::NonStream, &[("a", 9)], false),
            totals(Mode::Stream, &[("a", 1)], false),
        ];
        assert!(whole_run_misses(&reference, met).is_empty());
        let missed = [
            totals(Mode::NonStream, &[], false),
            totals(Mode::Stream, &[("a", 2), ("b", 1)], false),
        ];
        assert_eq!(
            whole_run_misses(&reference, missed),
            vec![
                "stream: total_calls to a: expected 1, got 2",
                "stream: total_calls to b: expected 0, got 1"
            ]
        );
        let tainted = [
            totals(Mode::NonStream, &[], false),
            totals(Mode::Stream, &[("a", 2)], true),
        ];
        assert!(whole_run_misses(&reference, tainted).is_empty());
    }

    /// Every way a scenario can make a deployment rest counts: the gateway's cooldown_time,
    /// a deployment's own, a fault's retry_after, and Retry-After sent in a script's headers
    /// (milliseconds, seconds or an HTTP-date).
    #[test]
    fn the_default_pause_outlasts_every_cooldown_the_scenario_can_cause() {
        let mut s = load("live/control_no_fault.yaml");
        s.gateway.router_settings.cooldown_time = Some(1.0);
        s.providers.truncate(1);
        s.providers[0].calls.clear();
        s.providers[0].default = crate::scenario::Script::default();
        assert_eq!(default_pause(&s).wait, Duration::from_secs_f64(1.5));

        let mut own = s.clone();
        own.gateway.model_list[0].litellm_params.cooldown_time = Some(7.0);
        assert_eq!(default_pause(&own).wait, Duration::from_secs_f64(7.5));

        let header = |name: &str, value: &str| {
            let mut h = s.clone();
            h.providers[0]
                .default
                .headers
                .insert(name.into(), value.into());
            default_pause(&h)
        };
        assert_eq!(
            header("retry-after-ms", "9000").wait,
            Duration::from_secs_f64(9.5)
        );
        assert_eq!(
            header("Retry-After", "12").wait,
            Duration::from_secs_f64(12.5)
        );
        // An HTTP-date, measured by the answer's own Date as the gateway measures it.
        let mut dated = s.clone();
        dated.providers[0].default.headers.extend([
            ("retry-after".into(), "Wed, 21 Oct 2015 07:28:20 GMT".into()),
            ("date".into(), "Wed, 21 Oct 2015 07:28:00 GMT".into()),
        ]);
        let dated = default_pause(&dated);
        assert_eq!(dated.wait, Duration::from_secs_f64(20.5));
        assert_eq!(dated.cut, None);
    }

    /// Calls that keep coming are waited for, at most `max`; calls that stop are waited
    /// out, and counted.
    #[tokio::test]
    async fn settling_waits_for_the_calls_to_stop_and_says_when_they_do_not() {
        let quiet = Duration::from_millis(30);
        let max = Duration::from_millis(300);
        let poll = Duration::from_millis(5);
        let n = std::sync::atomic::AtomicUsize::new(0);
        // Three more calls, one at each of the first looks, then none.
        let stops = || {
            let seen = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            seen.min(3)
        };
        // (A generous bound here: a loaded machine must not turn quiet into not quiet.)
        assert_eq!(
            settle(stops, || false, quiet, Duration::from_secs(30), poll).await,
            Settled {
                late: 3,
                quiet: true
            }
        );
        // No new call, but one still being answered (a stall the gateway is waiting out):
        // not quiet while it lasts, however long no call arrives.
        let looks = std::sync::atomic::AtomicUsize::new(0);
        let answering = || looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 20;
        let started = tokio::time::Instant::now();
        let s = settle(|| 0, answering, quiet, Duration::from_secs(30), poll).await;
        assert!(s.quiet, "{s:?}");
        assert!(
            looks.load(std::sync::atomic::Ordering::SeqCst) >= 20,
            "quiet only once nothing was being answered"
        );
        assert!(started.elapsed() >= quiet);
        // Answering for ever: never quiet.
        let s = settle(|| 0, || true, quiet, max, poll).await;
        assert!(!s.quiet, "{s:?}");
        // A new call at every look: never quiet, however late the looks come (each look
        // that sees a new call starts the quiet time afresh).
        let m = std::sync::atomic::AtomicUsize::new(0);
        let never = || m.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let s = settle(never, || false, quiet, max, poll).await;
        assert!(!s.quiet && s.late > 0, "{s:?}");
    }

    /// A request whose calls may hold an earlier request's is not blamed for a difference.
    #[test]
    fn a_request_after_calls_that_never_stopped_is_not_judged() {
        let s = load("live/control_no_fault.yaml");
        let reference = Reference::default();
        let answered = |text: &str, tainted: Option<&str>| {
            let client = ClientResult {
                status: Some(200),
                text: text.into(),
                done: true,
                ..ClientResult::default()
            };
            (
                "r0.0".to_string(),
                Observed {
                    client,
                    calls: Vec::new(),
                    tainted: tainted.map(str::to_string),
                },
            )
        };
        let clean = pair_up(
            &s,
            &reference,
            vec![answered("a", None)],
            vec![answered("b", None)],
        );
        assert_eq!(clean[0].judgement.verdict, Verdict::Different);
        let late = pair_up(
            &s,
            &reference,
            vec![answered("a", None)],
            vec![answered("b", Some("still calling"))],
        );
        assert_eq!(late[0].judgement.verdict, Verdict::Inconclusive);
        assert_eq!(
            late[0].judgement.reasons[0],
            "not judged: stream: still calling"
        );
    }

    /// A cooldown longer than the pause's bound is not waited out, and the pause says so.
    #[test]
    fn a_pause_cut_by_its_bound_says_so() {
        let p = default_pause(&load("hostile/far_future_retry_after.yaml"));
        assert_eq!(
            p.wait,
            Duration::from_secs_f64(crate::scenario::MAX_PAUSE_SECS + 0.5)
        );
        assert!(
            p.cut
                .as_deref()
                .is_some_and(|c| c.starts_with("the pause between the modes was cut to 60 s")),
            "{p:?}"
        );
        let p = default_pause(&load(
            "parity/deployment_cooldown_time_beats_retry_after.yaml",
        ));
        assert_eq!(p.wait, Duration::from_secs_f64(60.5));
        assert_eq!(p.cut, None);
    }
}
