//! Probing any OpenAI-compatible gateway (LiteLLM, Switchback, another) for stream /
//! non-stream equivalence, over real loopback sockets.
//!
//! Owns: running a scenario's requests against an external gateway in both modes (one request
//! at a time, so every provider call belongs to the request in flight), reconstructing each
//! request's attempts from the fakes' call logs (an external gateway has no trace to read),
//! comparing the two modes request by request, and the side-by-side report. The fakes are
//! reset between the modes, so per-call scripts replay identically; the gateway itself cannot
//! be reset, so the modes are separated by a pause long enough for its cooldowns to end.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use switchback::transport::TcpConnector;

use crate::client::{self, ClientResult, Target};
use crate::fake::CallRecord;
use crate::live::RunningFakes;
use crate::scenario::{Mode, Scenario};
use crate::trace::TraceSink;

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
#[derive(Debug, Clone)]
pub struct Observed {
    pub client: ClientResult,
    /// Provider calls made while the request was in flight, in arrival order.
    pub calls: Vec<(String, CallRecord)>,
}

impl Observed {
    /// `host#call model: outcome`, the attempts as the providers saw them.
    pub fn call_lines(&self) -> Vec<String> {
        self.calls
            .iter()
            .map(|(host, c)| format!("{host}#{} {}: {}", c.call, c.model, c.outcome))
            .collect()
    }

    fn outcome(&self) -> String {
        let c = &self.client;
        match (&c.broken, &c.error, c.status) {
            (Some(b), _, _) => format!("broken ({b})"),
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

/// Both modes of one request, and how they differ.
#[derive(Debug, Clone)]
pub struct Pair {
    pub label: String,
    pub non_stream: Observed,
    pub stream: Observed,
    pub differences: Vec<String>,
}

/// Compares the two modes of one request (DESIGN.md's equivalence, as far as an external
/// gateway lets us see it).
pub fn compare(n: &Observed, s: &Observed) -> Vec<String> {
    let mut d = Vec::new();
    if n.outcome() != s.outcome() {
        d.push(format!(
            "outcome: non_stream {}, stream {}",
            n.outcome(),
            s.outcome()
        ));
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
    if both_ok && n.client.model != s.client.model {
        d.push(format!(
            "model: non_stream {:?}, stream {:?}",
            n.client.model, s.client.model
        ));
    }
    if both_ok && n.client.text != s.client.text {
        d.push(format!(
            "text: non_stream {:?}, stream {:?}",
            n.client.text, s.client.text
        ));
    }
    if let (Some(a), Some(b)) = (n.fallbacks_header(), s.fallbacks_header()) {
        if a != b {
            d.push(format!("reported fallbacks: non_stream {a}, stream {b}"));
        }
    }
    d
}

/// Options of one probe.
pub struct ProbeOptions {
    pub gateway: GatewayUrl,
    /// Replaces every request's key (e.g. an external gateway's master key).
    pub api_key: Option<String>,
    /// Pause between the modes, for the gateway's cooldowns to end.
    pub pause: Duration,
}

/// Sends every request of `scenario`, one at a time, in `mode`, against the gateway, with
/// `fakes` (reset first) answering its upstream calls.
pub async fn probe_mode(
    scenario: &Scenario,
    fakes: &RunningFakes,
    gateway: &GatewayUrl,
    api_key: Option<&str>,
    mode: Mode,
    sink: Arc<dyn TraceSink>,
) -> Vec<(String, Observed)> {
    let target = Target {
        connector: Arc::new(TcpConnector),
        host: gateway.host.clone(),
        port: gateway.port,
        base_path: gateway.base_path.clone(),
    };
    // Probing runs on real sockets against a real gateway: real time is the point here
    // (chunk times in the client's record), and nothing here is replayed or snapshotted.
    let started = std::time::Instant::now();
    let clock = move || started.elapsed();
    for f in &fakes.fakes {
        f.reset();
    }
    let mut observed = Vec::new();
    for (index, spec) in scenario.requests.iter().enumerate() {
        for copy in 0..spec.repeat {
            let before: Vec<usize> = fakes.fakes.iter().map(|f| f.calls().len()).collect();
            let key = api_key.or(spec.key.as_deref());
            let r = client::send_spec(&target, spec, index, copy, mode, key, sink.as_ref(), &clock)
                .await;
            let label = format!("r{index}.{copy}");
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
            observed.push((label, Observed { client: r, calls }));
        }
    }
    observed
}

/// Pairs the two modes' observations request by request and compares them.
pub fn pair_up(non_stream: Vec<(String, Observed)>, stream: Vec<(String, Observed)>) -> Vec<Pair> {
    non_stream
        .into_iter()
        .zip(stream)
        .map(|((label, n), (_, s))| {
            let differences = compare(&n, &s);
            Pair {
                label,
                non_stream: n,
                stream: s,
                differences,
            }
        })
        .collect()
}

/// Both modes against one running gateway, non-stream first, `o.pause` apart (the gateway's
/// cooldowns cannot be reset from outside).
pub async fn probe(
    scenario: &Scenario,
    fakes: &RunningFakes,
    o: &ProbeOptions,
    sink: Arc<dyn TraceSink>,
) -> Vec<Pair> {
    let key = o.api_key.as_deref();
    let n = probe_mode(
        scenario,
        fakes,
        &o.gateway,
        key,
        Mode::NonStream,
        sink.clone(),
    )
    .await;
    tokio::time::sleep(o.pause).await;
    let s = probe_mode(scenario, fakes, &o.gateway, key, Mode::Stream, sink).await;
    pair_up(n, s)
}

/// The side-by-side report.
pub fn report(scenario: &Scenario, pairs: &[Pair]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario: {}", scenario.name);
    let _ = writeln!(
        out,
        "(timing-exact expectations are not checked in probe mode; decisions are)"
    );
    for p in pairs {
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
        let (a, b) = (p.non_stream.call_lines(), p.stream.call_lines());
        for i in 0..a.len().max(b.len()) {
            row(
                &mut out,
                if i == 0 { "calls" } else { "" },
                a.get(i).cloned().unwrap_or_default(),
                b.get(i).cloned().unwrap_or_default(),
            );
        }
        match p.differences.first() {
            None => {
                let _ = writeln!(out, "  verdict     equivalent");
            }
            Some(first) => {
                let _ = writeln!(out, "  verdict     DIFFERENT: {first}");
                for more in &p.differences[1..] {
                    let _ = writeln!(out, "              also: {more}");
                }
            }
        }
    }
    let bad = pairs.iter().filter(|p| !p.differences.is_empty()).count();
    let _ = writeln!(
        out,
        "\n{} request(s): {} equivalent, {bad} different",
        pairs.len(),
        pairs.len() - bad
    );
    out
}

/// The pause that lets the scenario's cooldowns end between the modes.
pub fn default_pause(scenario: &Scenario) -> Duration {
    let cooldown = scenario
        .gateway
        .router_settings
        .cooldown_time
        .unwrap_or(switchback::catalog::DEFAULT_COOLDOWN_TIME.as_secs_f64());
    let retry_after = scenario
        .providers
        .iter()
        .flat_map(|p| std::iter::once(&p.default).chain(&p.calls))
        .filter_map(|s| s.fault.as_ref().and_then(|f| f.retry_after))
        .fold(0.0, f64::max);
    Duration::from_secs_f64(
        cooldown
            .max(retry_after)
            .min(crate::scenario::MAX_PAUSE_SECS)
            + 0.5,
    )
}
