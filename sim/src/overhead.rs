//! `bench-overhead`: what Switchback adds on top of calling the provider directly.
//!
//! Owns: the benchmark world (fake providers in this process on loopback; Switchback as a
//! child process, `switchback serve`, so its memory is its own), the variants (the provider
//! directly; Switchback with no fault, with its metrics on (the default) and, from a second
//! child, off; with the upstream called for one JSON completion (`fake_stream`, the request
//! a plain proxy makes) instead of a stream; behind TLS, over HTTP/1.1 and, from a third
//! child, over HTTP/2; the primary answering 429 at once and the fallback serving; the
//! primary failing after 3 chunks and `continue` finishing the stream), running them
//! interleaved in rounds so that drift on the machine hits every variant alike, the
//! added-latency table, the serving gateway's CPU per request for each variant, and the
//! gateway's peak RSS (also under 1,000 concurrent streams).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchback::config::{
    Deployment, FallbackEntry, GatewayConfig, LitellmParams, MidStreamPolicy, ModelInfo,
    RouterSettings, SslVerify,
};

use crate::kernel_tcp::TcpCounters;
use crate::live::{RecordCalls, RunningFakes, start_fakes};
use crate::load::{self, LoadReport, LoadSpec};
use crate::scenario::{
    Expect, Fault, FaultKind, Flavour, Mode, Network, Provider, RequestSpec, Scenario, Script,
};
use crate::stall::StallWatch;
use crate::tls_fake::{ThrowawayPki, TlsListener};
use crate::trace::{NullSink, TraceSink};

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct OverheadOptions {
    pub rate: f64,
    /// Time per variant, split across the rounds.
    pub duration: Duration,
    pub rounds: u32,
    pub connections: usize,
    /// Concurrent streams for the memory measurement.
    pub streams: usize,
    /// A plain reverse proxy (nginx with an upstream keep-alive pool, say) in front of the
    /// `ok` fake, measured as one more variant: the practical floor of a proxy hop.
    pub reference: Option<String>,
    /// The same hop built from Switchback's own stack and nothing else (the `bare_proxy`
    /// example: hyper, a runtime per worker, kept upstream connections; no parsing, routing
    /// or logs), in front of the `ok` fake: what the stack costs, so that the rest of
    /// Switchback's added latency is its own work.
    pub floor: Option<String>,
    /// Where the fakes listen (provider i on base + i; the `ok` fake is the first), so a
    /// reference proxy can be configured before the run; ephemeral ports otherwise.
    pub fakes_port_base: Option<u16>,
}

const ANSWER: &str = "one two three four five six seven eight nine ten";

/// A stall of the bench's own runtime worth naming in a round's line: past what a loaded
/// runtime's timer ordinarily shows (a millisecond or two).
const BENCH_STALL: Duration = Duration::from_millis(20);

fn provider(host: &str, script: Script) -> Provider {
    Provider {
        host: host.into(),
        port: 8000,
        model: Some(format!("{host}-model")),
        default: script,
        calls: Vec::new(),
        dialect: Default::default(),
        tool_call_index: None,
        tool_call_ids: Default::default(),
        keep_alive_ms: None,
        framing: Default::default(),
        content_filter: Default::default(),
        finish_reasons: Default::default(),
        refuses_streaming: false,
        unlabelled: false,
    }
}

fn answer(delay_ms: u64) -> Script {
    Script {
        text: Some(ANSWER.into()),
        chunk_size: Some(5),
        delay_ms,
        ..Script::default()
    }
}

/// The fake providers of the benchmark.
pub fn world() -> Scenario {
    let fault = |kind, after, status| Fault {
        kind,
        after_chunks: after,
        status: Some(status),
        retry_after: None,
        flavour: Flavour::Openai,
        code: None,
        message: None,
        param: None,
        echo: None,
    };
    Scenario {
        name: "bench-overhead".into(),
        description: String::new(),
        seed: 0,
        duration_ms: 60_000,
        tick_ms: 1,
        gateway: GatewayConfig::default(),
        providers: vec![
            provider("ok", answer(0)),
            provider(
                "limited",
                Script {
                    fault: Some(fault(FaultKind::Http, 0, 429)),
                    ..answer(0)
                },
            ),
            provider(
                "midfail",
                Script {
                    fault: Some(fault(FaultKind::ErrorEvent, 3, 429)),
                    ..answer(0)
                },
            ),
            provider(
                "slow",
                Script {
                    chunk_size: Some(3),
                    ..answer(60)
                },
            ),
        ],
        network: Network::default(),
        reloads: Vec::new(),
        requests: vec![RequestSpec {
            key: None,
            model: "plain".into(),
            messages: vec![json!({"role": "user", "content": "count to ten"})],
            body: Default::default(),
            at_ms: 0,
            repeat: 1,
            concurrency: 1,
            timeout_ms: 30_000,
            expect: None,
            disconnect: None,
            stop_reading: None,
        }],
        sequential: false,
        modes: Mode::both(),
        expect: Expect::default(),
    }
}

/// Adds the group `tls`: the `ok` answer from a fake behind TLS at `addr`, whose CA is the
/// PEM file at `ca_path` (trusted through `ssl_verify`).
pub fn with_tls_upstream(
    mut config: GatewayConfig,
    addr: SocketAddr,
    ca_path: &Path,
) -> GatewayConfig {
    config.model_list.push(Deployment {
        model_name: "tls".into(),
        litellm_params: LitellmParams {
            model: "openai/ok-model".into(),
            api_base: Some(format!("https://localhost:{}/v1", addr.port())),
            ssl_verify: Some(SslVerify::CaBundle(ca_path.display().to_string())),
            ..LitellmParams::default()
        },
        model_info: ModelInfo {
            id: Some("tls-ok".into()),
        },
    });
    config
}

/// Switchback's config for the benchmark: one group per variant, on the fakes' ports.
pub fn gateway_config(fakes: &RunningFakes) -> GatewayConfig {
    let base = |host: &str| format!("http://{}/v1", fakes.ports[&(host.to_string(), 8000)]);
    let deployment = |group: &str, host: &str| Deployment {
        model_name: group.into(),
        litellm_params: LitellmParams {
            model: format!("openai/{host}-model"),
            api_base: Some(base(host)),
            ..LitellmParams::default()
        },
        model_info: ModelInfo {
            id: Some(format!("{group}-{host}")),
        },
    };
    // The `ok` answer again, called as one JSON completion (`fake_stream`): the upstream
    // request nginx and `direct` make. Switchback streams from upstreams by default, so
    // that both client modes read the same answer; this variant measures the hop without
    // that choice's cost.
    let json_upstream = Deployment {
        litellm_params: LitellmParams {
            fake_stream: Some(true),
            ..deployment("plain_json", "ok").litellm_params
        },
        ..deployment("plain_json", "ok")
    };
    GatewayConfig {
        model_list: vec![
            deployment("plain", "ok"),
            json_upstream,
            deployment("limited", "limited"),
            deployment("midfail", "midfail"),
            deployment("slow", "slow"),
        ],
        router_settings: RouterSettings {
            num_retries: Some(0),
            // Every request must meet the failure: no cooldown short-cut.
            cooldown_time: Some(0.0),
            mid_stream: Some(MidStreamPolicy::Continue),
            fallbacks: Some(vec![
                FallbackEntry::new("limited", &["plain"]),
                FallbackEntry::new("midfail", &["plain"]),
            ]),
            ..RouterSettings::default()
        },
        limits: switchback::limits::Limits {
            max_connections: 8192,
            ..Default::default()
        },
        // The benchmark's own gateway on loopback: no keys to send.
        allow_anonymous: true,
        ..GatewayConfig::default()
    }
}

/// A `switchback serve` child, killed on drop.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway the benchmark starts, as a child process.
#[derive(Debug, Clone)]
pub enum GatewayCommand {
    /// `switchback serve`: the gateway inside the harness's binary.
    Serve(PathBuf),
    /// A `switchback-gateway` binary: the gateway alone, what a deployment runs.
    Gateway(PathBuf),
}

impl GatewayCommand {
    fn command(&self) -> Command {
        match self {
            GatewayCommand::Serve(exe) => {
                let mut c = Command::new(exe);
                c.arg("serve");
                c
            }
            GatewayCommand::Gateway(exe) => Command::new(exe),
        }
    }

    fn exe(&self) -> &Path {
        match self {
            GatewayCommand::Serve(exe) | GatewayCommand::Gateway(exe) => exe,
        }
    }
}

impl std::fmt::Display for GatewayCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            GatewayCommand::Serve(exe) => write!(f, "{} serve", exe.display()),
            GatewayCommand::Gateway(exe) => write!(f, "{}", exe.display()),
        }
    }
}

impl Gateway {
    /// Starts `gateway` with `config` (written to `config_path`) and `extra` arguments on
    /// an ephemeral port.
    pub fn start(
        gateway: &GatewayCommand,
        config: &GatewayConfig,
        config_path: &Path,
        extra: &[&str],
    ) -> Result<Gateway, String> {
        let text = serde_saphyr::to_string(config).map_err(|e| e.to_string())?;
        std::fs::write(config_path, text).map_err(|e| format!("{}: {e}", config_path.display()))?;
        let log_path = config_path.with_extension("log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut child = gateway
            .command()
            .arg("--config")
            .arg(config_path)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            // Its logs (an access line per request, at the default level) go to a file, as
            // in production, not to the terminal the figures are printed on.
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", gateway.exe().display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line from serve: {line:?}"))?;
        Ok(Gateway { child, addr })
    }

    /// CPU time the gateway has used so far, user and system, every thread; on Linux.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        cpu_ticks(&stat).map(|t| Duration::from_micros(t * TICK_MICROS))
    }

    /// Peak resident memory so far (VmHWM), in KiB, on Linux.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    }
}

/// `/proc/<pid>/stat` counts CPU time in `USER_HZ` ticks, 100 a second on Linux whatever
/// the kernel's own tick rate (it is part of the interface).
const TICK_MICROS: u64 = 10_000;

/// User plus system ticks from a `/proc/<pid>/stat` line. Its second field, the command
/// name, is in parentheses and may itself hold spaces and parentheses: the fields are
/// counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state (field 3) ... utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// One measured variant.
pub struct Variant {
    pub name: &'static str,
    /// The baseline it is compared with.
    pub baseline: Option<&'static str>,
    pub total: Histogram<u64>,
    pub first_chunk: Option<Histogram<u64>>,
    pub ok: u64,
    pub errors: u64,
    pub samples: Vec<String>,
    /// The machine's TCP trouble while this variant ran (`None`: not readable here).
    pub kernel: Option<TcpCounters>,
    /// CPU the gateway that served it used while it ran (`None`: not a gateway this bench
    /// started, such as `direct` or a reference proxy, or not readable here).
    pub gateway_cpu: Option<Duration>,
}

/// The address of a proxy given as `flag URL`: plain http, on this machine.
async fn loopback_proxy(flag: &str, url: &str) -> Result<SocketAddr, String> {
    let e = switchback::upstream::Endpoint::parse(url).map_err(|e| format!("{flag}: {e}"))?;
    if e.tls {
        return Err(format!("{flag}: only http:// is measured"));
    }
    tokio::net::lookup_host((e.host.as_str(), e.port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{flag}: cannot resolve `{}`", e.host))
}

fn body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "count to ten"}]})
}

/// Runs the benchmark, starting `gateway` as the gateway.
pub async fn run(
    gateway_command: &GatewayCommand,
    o: &OverheadOptions,
    mut log: impl FnMut(&str),
) -> Result<(Vec<Variant>, Option<u64>, Option<u64>), String> {
    let scenario = world();
    let sink: Arc<dyn TraceSink> = Arc::new(NullSink);
    let fakes = start_fakes(&scenario, sink, o.fakes_port_base, RecordCalls::No)
        .await
        .map_err(|e| format!("cannot start the fakes: {e}"))?;
    for ((host, _), addr) in &fakes.ports {
        log(&format!("fake `{host}` on {addr}"));
    }
    let reference = match &o.reference {
        Some(url) => Some(loopback_proxy("--reference", url).await?),
        None => None,
    };
    let floor = match &o.floor {
        Some(url) => Some(loopback_proxy("--floor", url).await?),
        None => None,
    };
    // The `ok` answer again, behind TLS, for the https variant.
    let pki = ThrowawayPki::new()?;
    let ca_path =
        std::env::temp_dir().join(format!("switchback-bench-{}-ca.pem", std::process::id()));
    std::fs::write(&ca_path, &pki.ca_pem).map_err(|e| format!("cannot write the CA: {e}"))?;
    let tls_listener = TlsListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &pki)
        .await
        .map_err(|e| format!("cannot start the TLS fake: {e}"))?;
    let tls_addr =
        switchback::transport::Listener::local_addr(&tls_listener).map_err(|e| e.to_string())?;
    let tls_fake = crate::fake::Fake::new(provider("ok", answer(0)), Arc::new(NullSink));
    tls_fake.stop_recording();
    let tls_task = tokio::spawn(tls_fake.serve(tls_listener));
    log(&format!("fake `ok` behind TLS on {tls_addr}"));
    let config_path =
        std::env::temp_dir().join(format!("switchback-bench-{}.yaml", std::process::id()));
    log(&format!("gateway: {gateway_command}"));
    let gateway = Gateway::start(
        gateway_command,
        &with_tls_upstream(gateway_config(&fakes), tls_addr, &ca_path),
        &config_path,
        &[],
    )?;
    let quiet_path = std::env::temp_dir().join(format!(
        "switchback-bench-{}-quiet.yaml",
        std::process::id()
    ));
    let quiet = Gateway::start(
        gateway_command,
        &gateway_config(&fakes),
        &quiet_path,
        &["--metrics", "off"],
    )?;
    // The same https deployment with HTTP/2 offered (off by default): the TLS fake picks it.
    let mut h2_config = with_tls_upstream(gateway_config(&fakes), tls_addr, &ca_path);
    h2_config.limits.max_streams_per_upstream_http2_connection = 100;
    let h2_path =
        std::env::temp_dir().join(format!("switchback-bench-{}-h2.yaml", std::process::id()));
    let h2 = Gateway::start(gateway_command, &h2_config, &h2_path, &[])?;
    let direct = fakes.ports[&("ok".to_string(), 8000)];
    let mut plans: Vec<(&str, Option<&str>, SocketAddr, Value)> = vec![
        ("direct", None, direct, body("ok-model", false)),
        ("direct_stream", None, direct, body("ok-model", true)),
        (
            "switchback",
            Some("direct"),
            gateway.addr,
            body("plain", false),
        ),
        (
            "switchback_json_upstream",
            Some("direct"),
            gateway.addr,
            body("plain_json", false),
        ),
        (
            "metrics_off",
            Some("direct"),
            quiet.addr,
            body("plain", false),
        ),
        (
            "switchback_tls",
            Some("direct"),
            gateway.addr,
            body("tls", false),
        ),
        (
            "switchback_tls_h2",
            Some("direct"),
            h2.addr,
            body("tls", false),
        ),
        (
            "fallback_429",
            Some("direct"),
            gateway.addr,
            body("limited", false),
        ),
        (
            "midstream_continue",
            Some("direct_stream"),
            gateway.addr,
            body("midfail", true),
        ),
    ];
    if let Some(addr) = floor {
        plans.insert(2, ("floor", Some("direct"), addr, body("ok-model", false)));
    }
    if let Some(addr) = reference {
        plans.insert(
            2,
            ("reference", Some("direct"), addr, body("ok-model", false)),
        );
    }
    let mut variants: Vec<Variant> = plans
        .iter()
        .map(|(name, baseline, _, b)| Variant {
            name,
            baseline: *baseline,
            total: load::histogram(),
            first_chunk: b["stream"].as_bool().unwrap_or(false).then(load::histogram),
            ok: 0,
            errors: 0,
            samples: Vec::new(),
            kernel: Some(TcpCounters::default()),
            gateway_cpu: Some(Duration::ZERO),
        })
        .collect();
    // Which of the gateways started here serves an address: its CPU is read around each
    // round of the variants it serves.
    let gateways = [&gateway, &quiet, &h2];
    let serving = |addr: SocketAddr| gateways.into_iter().find(|g| g.addr == addr);
    let slice = o.duration / o.rounds.max(1);
    for round in 0..o.rounds.max(1) {
        for (i, (name, _, addr, b)) in plans.iter().enumerate() {
            let spec = LoadSpec {
                host: addr.ip().to_string(),
                port: addr.port(),
                path: "/v1/chat/completions".into(),
                key: None,
                body: b.clone(),
                rate: o.rate,
                duration: slice,
                connections: o.connections,
            };
            let before = TcpCounters::read();
            let cpu_before = serving(*addr).and_then(Gateway::cpu_time);
            // The load generator and the fakes share this runtime: a stall of theirs would
            // read as the gateway's latency unless it is measured too.
            let own_stalls = StallWatch::start(Duration::MAX, |_| {});
            let r: LoadReport = load::run(&spec, |_, _| {}).await?;
            let own_worst = own_stalls.worst();
            drop(own_stalls);
            let kernel = before.zip(TcpCounters::read()).map(|(b, a)| a.since(b));
            let cpu = cpu_before
                .zip(serving(*addr).and_then(Gateway::cpu_time))
                .map(|(b, a)| a.saturating_sub(b));
            let stalled = if own_worst > BENCH_STALL {
                format!(
                    " (the bench's own runtime stalled up to {} ms)",
                    own_worst.as_millis()
                )
            } else {
                String::new()
            };
            log(&format!(
                "round {}/{} {name:<18} {} ok {} errors p50 {} µs p99 {} µs{}{stalled}",
                round + 1,
                o.rounds,
                r.ok,
                r.errors,
                r.total.value_at_quantile(0.5),
                r.total.value_at_quantile(0.99),
                kernel
                    .filter(|k| k.any())
                    .map_or(String::new(), |k| format!(
                        " (kernel: {} accept-queue overflows, {} SYN retransmits)",
                        k.listen_overflows, k.syn_retransmits
                    )),
            ));
            let v = &mut variants[i];
            v.kernel = v.kernel.zip(kernel).map(|(sum, k)| sum.plus(k));
            v.gateway_cpu = v.gateway_cpu.zip(cpu).map(|(sum, c)| sum + c);
            v.total.add(&r.total).map_err(|e| e.to_string())?;
            if let (Some(h), Some(f)) = (v.first_chunk.as_mut(), r.first_chunk.as_ref()) {
                h.add(f).map_err(|e| e.to_string())?;
            }
            v.ok += r.ok;
            v.errors += r.errors;
            for s in r.error_samples {
                if v.samples.len() < 3 && !v.samples.contains(&s) {
                    v.samples.push(s);
                }
            }
        }
    }
    let rss_after_load = gateway.peak_rss_kib();
    // Memory under many open streams: `streams` slow streams (about 1 s each) at once.
    let spec = LoadSpec {
        host: gateway.addr.ip().to_string(),
        port: gateway.addr.port(),
        path: "/v1/chat/completions".into(),
        key: None,
        body: body("slow", true),
        rate: (o.streams as f64) * 4.0,
        duration: Duration::from_millis(250),
        connections: o.streams,
    };
    let r = load::run(&spec, |_, _| {}).await?;
    log(&format!(
        "{} concurrent slow streams: {} ok, {} errors",
        o.streams, r.ok, r.errors
    ));
    let rss_streams = gateway.peak_rss_kib();
    let _ = std::fs::remove_file(&config_path);
    let _ = std::fs::remove_file(&quiet_path);
    let _ = std::fs::remove_file(&h2_path);
    let _ = std::fs::remove_file(&ca_path);
    tls_task.abort();
    drop(quiet);
    drop(h2);
    Ok((variants, rss_after_load, rss_streams))
}

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// The results table: latency per variant, and what Switchback adds over its baseline.
pub fn table(
    variants: &[Variant],
    rss_after_load: Option<u64>,
    rss_streams: Option<u64>,
    o: &OverheadOptions,
) -> String {
    let by_name: BTreeMap<&str, &Variant> = variants.iter().map(|v| (v.name, v)).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "open loop, {} requests per second, {:.0} s per variant in {} interleaved rounds, {} connections, same host",
        o.rate,
        o.duration.as_secs_f64(),
        o.rounds,
        o.connections
    );
    let _ = writeln!(
        out,
        "\n{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "variant (µs)", "p50", "p90", "p99", "p99.9", "max", "ok", "errors"
    );
    for v in variants {
        let q: Vec<String> = QUANTILES
            .iter()
            .map(|(_, q)| v.total.value_at_quantile(*q).to_string())
            .collect();
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
            v.name,
            q[0],
            q[1],
            q[2],
            q[3],
            v.total.max(),
            v.ok,
            v.errors
        );
        if let Some(f) = &v.first_chunk {
            let q: Vec<String> = QUANTILES
                .iter()
                .map(|(_, q)| f.value_at_quantile(*q).to_string())
                .collect();
            let _ = writeln!(
                out,
                "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "  first chunk",
                q[0],
                q[1],
                q[2],
                q[3],
                f.max()
            );
        }
    }
    let _ = writeln!(
        out,
        "\nadded by Switchback (variant minus baseline, µs; ratio in brackets)"
    );
    for v in variants {
        let Some(base) = v.baseline.and_then(|b| by_name.get(b)) else {
            continue;
        };
        let cells: Vec<String> = QUANTILES
            .iter()
            .map(|(name, q)| {
                let (a, b) = (
                    v.total.value_at_quantile(*q) as f64,
                    base.total.value_at_quantile(*q) as f64,
                );
                format!("{name} {:+.0} [{:.2}x]", a - b, a / b.max(1.0))
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<24} vs {:<14} {}",
            v.name,
            base.name,
            cells.join("  ")
        );
    }
    if let (Some(sb), Some(re), Some(direct)) = (
        by_name.get("switchback"),
        by_name.get("reference"),
        by_name.get("direct"),
    ) {
        let added = |v: &Variant, q: f64| {
            v.total.value_at_quantile(q) as f64 - direct.total.value_at_quantile(q) as f64
        };
        // A ratio over a reference that added nothing (or less than nothing: noise) says
        // nothing; print why instead of a number.
        let ratio = |q: f64| {
            let (s, r) = (added(sb, q), added(re, q));
            if r >= 1.0 {
                format!("{:.2}x", s / r)
            } else {
                format!("n/a (the reference adds {r:+.0} µs)")
            }
        };
        let _ = writeln!(
            out,
            "reference proxy adds p50 {:+.0} µs, p99 {:+.0} µs; switchback adds p50 {:+.0} µs, p99 {:+.0} µs",
            added(re, 0.5),
            added(re, 0.99),
            added(sb, 0.5),
            added(sb, 0.99)
        );
        let _ = writeln!(
            out,
            "switchback's added latency over the reference proxy's: p50 {} (target <= 1.5x), p99 {} (target <= 2x)",
            ratio(0.5),
            ratio(0.99)
        );
    }
    if let (Some(sb), Some(tls), Some(direct)) = (
        by_name.get("switchback"),
        by_name.get("switchback_tls"),
        by_name.get("direct"),
    ) {
        let added = |v: &Variant| {
            v.total.value_at_quantile(0.5) as f64 - direct.total.value_at_quantile(0.5) as f64
        };
        let _ = writeln!(
            out,
            "https upstream: added p50 {:.2}x the plain-http figure (target <= 1.2x)",
            added(tls) / added(sb).max(1.0)
        );
    }
    if let (Some(floor), Some(direct)) = (by_name.get("floor"), by_name.get("direct")) {
        let p50 = |v: &Variant| v.total.value_at_quantile(0.5) as f64;
        let over_floor = |name: &str| {
            by_name.get(name).map_or("n/a".to_string(), |v| {
                format!("{:+.0} µs", p50(v) - p50(floor))
            })
        };
        let _ = writeln!(
            out,
            "the stack's floor (a bare hyper proxy) adds p50 {:+.0} µs; over it, switchback adds p50 {} (JSON upstream: {})",
            p50(floor) - p50(direct),
            over_floor("switchback"),
            over_floor("switchback_json_upstream"),
        );
    }
    cpu_lines(&mut out, variants);
    kernel_lines(&mut out, variants);
    let mib = |k: Option<u64>| {
        k.map_or("n/a".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    let _ = writeln!(
        out,
        "\ngateway peak RSS: {} after the load, {} with {} concurrent streams",
        mib(rss_after_load),
        mib(rss_streams),
        o.streams
    );
    for v in variants.iter().filter(|v| !v.samples.is_empty()) {
        let _ = writeln!(out, "{} errors, e.g.: {}", v.name, v.samples.join("; "));
    }
    out
}

/// The gateway's CPU per answered request, per variant it served: on shared cores its
/// capacity is CPU, and this moves far less with the machine's load than latency does.
fn cpu_lines(out: &mut String, variants: &[Variant]) {
    let cells: Vec<String> = variants
        .iter()
        .filter_map(|v| {
            let cpu = v.gateway_cpu?;
            let requests = v.ok + v.errors;
            (requests > 0).then(|| {
                format!(
                    "{} {:.0} µs",
                    v.name,
                    cpu.as_secs_f64() * 1e6 / requests as f64
                )
            })
        })
        .collect();
    if !cells.is_empty() {
        let _ = writeln!(
            out,
            "
gateway CPU per request (user + system, its process): {}",
            cells.join(", ")
        );
    }
}

/// The machine's TCP trouble per variant, where there was any: a connection that met a
/// full accept queue waits a second for its SYN to be sent again, so a max near a second
/// with these counters is the kernel's (see `kernel_tcp`).
fn kernel_lines(out: &mut String, variants: &[Variant]) {
    if variants.iter().any(|v| v.kernel.is_none()) {
        let _ = writeln!(
            out,
            "\nkernel TCP counters: not readable here (/proc/net/netstat); a max near 1 s may be a SYN retransmit"
        );
        return;
    }
    let troubled: Vec<String> = variants
        .iter()
        .filter_map(|v| Some((v.name, v.kernel?)))
        .filter(|(_, k)| k.any())
        .map(|(name, k)| {
            format!(
                "{name}: {} accept-queue overflows, {} SYN retransmits, {} retransmission timeouts",
                k.listen_overflows, k.syn_retransmits, k.timeouts
            )
        })
        .collect();
    if troubled.is_empty() {
        let _ = writeln!(
            out,
            "\nkernel TCP counters: no accept-queue overflow, SYN retransmit or timeout during any variant"
        );
    } else {
        let _ = writeln!(
            out,
            "\nkernel TCP trouble (whole machine; each SYN retransmit cost its connection 1 s):\n  {}",
            troubled.join("\n  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &'static str, baseline: Option<&'static str>, micros: u64) -> Variant {
        let mut total = load::histogram();
        for _ in 0..100 {
            total.record(micros).unwrap();
        }
        Variant {
            name,
            baseline,
            total,
            first_chunk: None,
            ok: 100,
            errors: 0,
            samples: Vec::new(),
            kernel: Some(TcpCounters::default()),
            gateway_cpu: None,
        }
    }

    fn options() -> OverheadOptions {
        OverheadOptions {
            rate: 2000.0,
            duration: Duration::from_secs(10),
            rounds: 2,
            connections: 256,
            streams: 10,
            reference: Some("http://127.0.0.1:1".into()),
            floor: None,
            fakes_port_base: None,
        }
    }

    #[test]
    fn a_ratio_over_a_reference_that_added_nothing_is_not_a_number() {
        let variants = [
            variant("direct", None, 500),
            variant("reference", Some("direct"), 400),
            variant("switchback", Some("direct"), 900),
        ];
        let text = table(&variants, None, None, &options());
        assert!(
            text.contains("p50 n/a (the reference adds -100 µs)"),
            "{text}"
        );
        let variants = [
            variant("direct", None, 500),
            variant("reference", Some("direct"), 600),
            variant("switchback", Some("direct"), 800),
        ];
        let text = table(&variants, None, None, &options());
        assert!(text.contains("p50 3.00x (target <= 1.5x)"), "{text}");
    }

    #[test]
    fn what_switchback_adds_over_the_stacks_floor_is_its_own_work() {
        let variants = [
            variant("direct", None, 300),
            variant("floor", Some("direct"), 450),
            variant("switchback", Some("direct"), 700),
            variant("switchback_json_upstream", Some("direct"), 560),
        ];
        let text = table(&variants, None, None, &options());
        assert!(
            text.contains(
                "the stack's floor (a bare hyper proxy) adds p50 +150 µs; over it, switchback adds p50 +250 µs (JSON upstream: +110 µs)"
            ),
            "{text}"
        );
        let without = [variant("direct", None, 300)];
        assert!(!table(&without, None, None, &options()).contains("floor"));
    }

    #[test]
    fn cpu_is_read_from_the_fields_after_the_command_name() {
        // A command name may hold spaces and parentheses; utime 250 and stime 40 ticks.
        let stat = "4242 (serve (x) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 40 0 0 20 0 3 0 \
                    100 200000000 5000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(290));
        assert_eq!(cpu_ticks("4242 (serve) S 1 2"), None, "too few fields");
        assert_eq!(cpu_ticks("no name here"), None);
    }

    #[test]
    fn the_gateways_cpu_per_request_is_named_for_the_variants_it_served() {
        let mut served = variant("switchback", Some("direct"), 900);
        served.gateway_cpu = Some(Duration::from_millis(21));
        served.errors = 5;
        let variants = [variant("direct", None, 500), served];
        let text = table(&variants, None, None, &options());
        assert!(
            text.contains(
                "gateway CPU per request (user + system, its process): switchback 200 µs\n"
            ),
            "{text}"
        );
        let none = [variant("direct", None, 500)];
        assert!(!table(&none, None, None, &options()).contains("CPU per request"));
    }

    #[test]
    fn the_kernels_tcp_trouble_is_named_per_variant() {
        let mut troubled = variant("switchback_tls", Some("direct"), 900);
        troubled.kernel = Some(TcpCounters {
            listen_overflows: 3,
            syn_retransmits: 2,
            timeouts: 0,
        });
        let variants = [variant("direct", None, 500), troubled];
        let text = table(&variants, None, None, &options());
        assert!(
            text.contains(
                "switchback_tls: 3 accept-queue overflows, 2 SYN retransmits, 0 retransmission timeouts"
            ),
            "{text}"
        );
        assert!(!text.contains("  direct:"), "{text}");

        let quiet = [variant("direct", None, 500)];
        let text = table(&quiet, None, None, &options());
        assert!(text.contains("no accept-queue overflow"), "{text}");

        let mut unknown = variant("direct", None, 500);
        unknown.kernel = None;
        let text = table(&[unknown], None, None, &options());
        assert!(text.contains("not readable here"), "{text}");
    }
}
