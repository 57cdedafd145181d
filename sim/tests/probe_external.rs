//! Live mode against gateways running as separate processes, and simulation/live parity.
//!
//! * `switchback serve` started as a real child process, probed for stream/non-stream
//!   equivalence on corpus scenarios (a fresh child per mode, so cooldowns from one mode do
//!   not leak into the other).
//! * The same scenarios decided the same way in simulation and live.
//! * A deliberately faulty gateway (a test-only front that ignores fallbacks for streams),
//!   probed with the `switchback probe` command: it reports the divergence and exits 1.
//! * Every way a probe could pass without testing anything gives `could not run` (exit 2)
//!   or `inconclusive` (exit 3), never `equivalent`: a gateway that is down, a scripted fault
//!   that never fires, both modes failing before any provider call, neither mode answering
//!   in time, a setup the gateway refuses, a fake's port already taken.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

mod common;

use switchback_sim::emit;
use switchback_sim::live::{RecordCalls, start_fakes};
use switchback_sim::oracle;
use switchback_sim::probe::{self, GatewayUrl, Verdict};
use switchback_sim::run::{Where, run_scenario_in};
use switchback_sim::scenario::{Mode, Scenario};
use switchback_sim::trace::{NullSink, TraceSink};

fn corpus(rel: &str) -> (PathBuf, Scenario) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(rel);
    let s = Scenario::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    (path, s)
}

/// A `switchback serve` child, killed when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
    _config: tempfile_path::TempPath,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal temp file handling without another dependency: a file under target/ removed on drop.
mod tempfile_path {
    use std::path::PathBuf;

    pub struct TempPath(pub PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn new(name: &str, text: &str) -> TempPath {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("root")
            .join("target/probe-tests");
        std::fs::create_dir_all(&dir).expect("target/ is writable");
        let path = dir.join(format!("{name}-{}.yaml", std::process::id()));
        std::fs::write(&path, text).expect("config written");
        TempPath(path)
    }
}

/// Starts `switchback serve` on an ephemeral loopback port with `config`.
fn serve(name: &str, config: &switchback::config::GatewayConfig) -> Served {
    let text = serde_saphyr::to_string(config).expect("config serialises");
    let path = tempfile_path::new(name, &text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchback"))
        .args(["serve", "--config"])
        .arg(&path.0)
        .args(["--listen", "127.0.0.1:0"])
        // Warnings only: access lines would go straight to the test run's output.
        .args(["--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("switchback serve starts");
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("serve prints its address");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"));
    Served {
        child,
        addr,
        _config: path,
    }
}

fn quiet(_: &str) {}

/// Probes a fresh `switchback serve` child per mode and returns the judged pairs.
fn probe_child(rel: &str) -> Vec<probe::Pair> {
    let (_, scenario) = corpus(rel);
    let reference = probe::reference::reference(&scenario).expect("reference run");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink: Arc<dyn TraceSink> = Arc::new(NullSink);
        let fakes = start_fakes(&scenario, sink.clone(), None, RecordCalls::Yes)
            .await
            .expect("fakes start");
        let config =
            emit::switchback_config(&scenario, &fakes.ports).expect("config for the fakes");
        let mut by_mode = Vec::new();
        let mut totals = Vec::new();
        for mode in [Mode::NonStream, Mode::Stream] {
            let child = serve(
                &format!("{}-{}", rel.replace('/', "_"), mode.as_str()),
                &config,
            );
            let url = GatewayUrl::parse(&format!("http://{}", child.addr)).unwrap();
            by_mode.push(
                probe::probe_mode(
                    &scenario,
                    &fakes,
                    &url,
                    None,
                    None,
                    mode,
                    sink.clone(),
                    &quiet,
                    &mut None,
                )
                .await,
            );
            totals.push(probe::ModeTotals {
                mode,
                calls: probe::calls_per_host(&fakes),
                tainted: false,
            });
        }
        let whole_run = probe::whole_run_misses(&reference, totals.try_into().unwrap());
        assert!(whole_run.is_empty(), "{rel}: {whole_run:?}");
        let s = by_mode.pop().unwrap();
        let n = by_mode.pop().unwrap();
        probe::pair_up(&scenario, &reference, n, s)
    })
}

fn report_of(scenario: &Scenario, pairs: &[probe::Pair]) -> String {
    let run = probe::ProbeRun {
        verdict: Verdict::overall(pairs.iter().map(|p| p.judgement.verdict)),
        could_not_run: None,
        pairs: pairs.to_vec(),
        whole_run: Vec::new(),
        unchecked: Vec::new(),
    };
    probe::report(scenario, &run)
}

#[test]
fn probing_switchback_serve_finds_the_modes_equivalent() {
    for rel in [
        "known_bug/key_level_fallbacks_stream.yaml",
        "known_bug/midstream_429_key_fallbacks.yaml",
        "streaming/precommit_429_falls_back.yaml",
        "streaming/midstream_continue_same_group.yaml",
        "streaming/midstream_error_policy.yaml",
        "fallbacks/depth_first_nested.yaml",
        "admission/mock_flags.yaml",
    ] {
        let pairs = probe_child(rel);
        assert!(!pairs.is_empty(), "{rel}: no requests");
        let (_, scenario) = corpus(rel);
        let report = report_of(&scenario, &pairs);
        // Equivalent, and not vacuously: every fault fired and every expect held.
        assert!(
            pairs
                .iter()
                .all(|p| p.judgement.verdict == Verdict::Equivalent && p.judgement.notes.is_empty()),
            "{rel}:\n{report}"
        );
        // The provider-side call sequences are real evidence, not empty lists.
        assert!(
            pairs.iter().any(|p| !p.stream.calls.is_empty()),
            "{rel}: no provider calls seen\n{report}"
        );
    }
}

/// The decisions (attempts, serving deployment, model, content) of a scenario are the same
/// in simulation and on real sockets.
#[test]
fn simulation_and_live_decide_the_same() {
    let files = [
        "known_bug/key_level_fallbacks_stream.yaml",
        "known_bug/midstream_429_key_fallbacks.yaml",
        "known_bug/http_429_at_chunk_0_full_chain.yaml",
        "known_bug/event_429_at_chunk_3_full_chain.yaml",
        "streaming/precommit_429_falls_back.yaml",
        "streaming/midstream_continue_same_group.yaml",
        "streaming/midstream_error_policy.yaml",
        "streaming/reset_after_chunks.yaml",
        "streaming/malformed_sse.yaml",
        "streaming/content_filter_policy_list.yaml",
        "fallbacks/depth_first_nested.yaml",
        "fallbacks/context_window_list.yaml",
        "fallbacks/disallowed_group_skipped.yaml",
        "flavours/vertex_resource_exhausted_midstream.yaml",
        "precedence/key_without_fallbacks_inherits_team.yaml",
    ];
    for rel in files {
        let (path, scenario) = corpus(rel);
        let sim = run_scenario_in(&path, &scenario, Where::Simulation);
        let live = run_scenario_in(&path, &scenario, Where::Live);
        assert!(sim.passed(), "{rel} in simulation: {:?}", sim.failures);
        assert!(live.passed(), "{rel} live: {:?}", live.failures);
        // `zip` stops at the shorter: a run or a request missing on one side is a failure,
        // never a comparison skipped.
        assert_eq!(sim.runs.len(), live.runs.len(), "{rel}: runs");
        for (a, b) in sim.runs.iter().zip(&live.runs) {
            assert_eq!(a.mode, b.mode);
            let (xs, ys) = (oracle::stories(a), oracle::stories(b));
            assert_eq!(xs.len(), ys.len(), "{rel} [{}]: requests", a.mode.as_str());
            for (x, y) in xs.iter().zip(ys.iter()) {
                let what = format!(
                    "{rel} [{}] r{}.{}",
                    a.mode.as_str(),
                    x.client.index,
                    x.client.copy
                );
                assert_eq!(
                    x.attempt_lines(&a.catalog),
                    y.attempt_lines(&b.catalog),
                    "{what}: attempts"
                );
                assert_eq!(
                    x.served.as_ref().map(|(g, d, m)| (*g, *d, m.clone())),
                    y.served.as_ref().map(|(g, d, m)| (*g, *d, m.clone())),
                    "{what}: serving deployment and model"
                );
                assert_eq!(x.client.text, y.client.text, "{what}: content");
                assert_eq!(x.client.model, y.client.model, "{what}: model");
            }
        }
    }
}

/// A gateway that ignores fallbacks for streams, in front of real engines on loopback: one
/// engine with the scenario's config for non-stream requests, one without any fallbacks for
/// streams.
async fn faulty_gateway(config: &switchback::config::GatewayConfig) -> SocketAddr {
    let mut stripped = config.clone();
    stripped.router_settings.fallbacks = None;
    for k in &mut stripped.keys {
        k.router_settings.fallbacks = None;
    }
    for t in &mut stripped.teams {
        t.router_settings.fallbacks = None;
    }
    let front = common::split(
        common::loopback_engine(config),
        common::loopback_engine(&stripped),
    );
    let listener = switchback::transport::TcpListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.0.local_addr().unwrap();
    tokio::spawn(common::serve_front(listener, front));
    addr
}

/// A port base with `n` free consecutive loopback ports (other test binaries and other
/// checkouts on this machine probe too, so no port is fixed). Searched below Linux's
/// ephemeral range (32768 and up), where the kernel's own outgoing connections never sit,
/// from a start spread by the process id (other test binaries) and by a counter (the other
/// tests of this one, which run at once and release their ports before the fakes bind).
fn free_port_base(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_000;
    let span = HIGH - LOW;
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let start = (std::process::id().wrapping_mul(7919) + call * 64) % span;
    for step in 0..span / 8 {
        let base = (LOW + (start + step * 8) % span) as u16;
        let held: Vec<_> = (0..n)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} free consecutive loopback ports between {LOW} and {HIGH}");
}

fn ports_at(scenario: &Scenario, base: u16) -> emit::PortMap {
    scenario
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                (p.host.clone(), p.port),
                SocketAddr::from(([127, 0, 0, 1], base + i as u16)),
            )
        })
        .collect()
}

/// What `switchback probe` printed and its exit status.
struct ProbeOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_probe(path: &Path, gateway: &str, base: u16, extra: &[&str]) -> ProbeOutput {
    let output = Command::new(env!("CARGO_BIN_EXE_switchback"))
        .arg("probe")
        .arg(path)
        .args(["--gateway", gateway, "--port-base", &base.to_string()])
        .args(if extra.contains(&"--pause") {
            &[][..]
        } else {
            &["--pause", "0"][..]
        })
        .args(extra)
        .output()
        .expect("switchback probe runs");
    let out = ProbeOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!("{}\n{}", out.stdout, out.stderr);
    out
}

/// `switchback serve` with the scenario's config for fakes at `base`, changed by `edit`.
fn serve_at(
    rel: &str,
    base: u16,
    edit: impl FnOnce(&mut switchback::config::GatewayConfig),
) -> (PathBuf, Served) {
    let (path, scenario) = corpus(rel);
    let mut config = emit::switchback_config(&scenario, &ports_at(&scenario, base)).unwrap();
    edit(&mut config);
    let child = serve(&rel.replace('/', "_"), &config);
    (path, child)
}

#[test]
fn probe_reports_a_gateway_that_ignores_fallbacks_for_streams() {
    let (path, scenario) = corpus("known_bug/key_level_fallbacks_stream.yaml");
    let base = free_port_base(scenario.providers.len() as u16);
    let config = emit::switchback_config(&scenario, &ports_at(&scenario, base)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(faulty_gateway(&config));
    let page = std::env::temp_dir().join(format!("sb-probe-page-{}.html", std::process::id()));
    let out = run_probe(
        &path,
        &format!("http://{addr}"),
        base,
        &["--html", page.to_str().expect("utf-8 path")],
    );
    assert_eq!(out.code, Some(1), "different exits 1");
    // The page shows what each mode's client and the fakes saw, and why they differ.
    let html = std::fs::read_to_string(&page).expect("the probe's page");
    std::fs::remove_file(&page).expect("clean up");
    for mode in ["non_stream", "stream"] {
        assert!(html.contains(&format!("<section class=\"mode\" data-mode=\"{mode}\">")));
    }
    for p in &scenario.providers {
        assert!(html.contains(&format!("<g class=\"lane\" data-lane=\"{}\">", p.host)));
    }
    assert!(html.contains("class=\"arrow request upstream\" data-lane=\"gateway\""));
    assert!(
        html.contains("class=\"marker end "),
        "how each client's request ended"
    );
    assert!(
        html.contains("[probe] request r0.0: different: "),
        "the verdict's reason"
    );
    assert!(html.contains("verdict     DIFFERENT"), "the text report");
    assert!(html.contains("id=\"verdict\" data-passed=\"false\""));
    assert!(
        out.stdout.contains("verdict     DIFFERENT"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("1 request(s): 0 equivalent, 1 different, 0 inconclusive, 0 could not run"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("verdict: different (exit status 1)"),
        "{}",
        out.stdout
    );
    // Progress while it ran, on standard error.
    assert!(
        out.stderr.contains("probe: non_stream r0.0: 200 in"),
        "{}",
        out.stderr
    );
    drop(rt);
}

#[test]
fn the_same_gateway_set_up_right_is_equivalent_through_the_command() {
    let rel = "known_bug/midstream_429_key_fallbacks.yaml";
    let (_, scenario) = corpus(rel);
    let base = free_port_base(scenario.providers.len() as u16);
    let (path, child) = serve_at(rel, base, |_| {});
    let out = run_probe(
        &path,
        &format!("http://{}", child.addr),
        base,
        &["--pause", "1.5"],
    );
    assert_eq!(out.code, Some(0), "equivalent exits 0");
    assert!(
        out.stdout.contains("verdict: equivalent (exit status 0)"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_gateway_that_is_down_could_not_run() {
    let (path, scenario) = corpus("known_bug/midstream_429_key_fallbacks.yaml");
    let base = free_port_base(scenario.providers.len() as u16 + 1);
    // Nothing listens at the port after the fakes' ports.
    let gateway = format!(
        "http://127.0.0.1:{}",
        base + scenario.providers.len() as u16
    );
    let out = run_probe(&path, &gateway, base, &[]);
    assert_eq!(out.code, Some(2), "could not run exits 2");
    assert!(
        out.stdout
            .contains("verdict: could not run (exit status 2): nothing answers at"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("equivalent"), "{}", out.stdout);
}

#[test]
fn a_scripted_fault_that_never_fires_is_inconclusive() {
    // The gateway never calls the primary's provider (its api_base is the fallback's, as when
    // LiteLLM never picks a primary without `order`): both modes are served straight away,
    // agree, and test nothing of the scripted mid-stream 429.
    let rel = "known_bug/midstream_429_key_fallbacks.yaml";
    let (_, scenario) = corpus(rel);
    let base = free_port_base(scenario.providers.len() as u16);
    let (path, child) = serve_at(rel, base, |c| {
        let fallback = c.model_list[1].litellm_params.api_base.clone();
        c.model_list[0].litellm_params.api_base = fallback;
    });
    let out = run_probe(&path, &format!("http://{}", child.addr), base, &[]);
    assert_eq!(out.code, Some(3), "inconclusive exits 3");
    assert!(
        out.stdout.contains(
            "INCONCLUSIVE: the scripted fault(s) the scenario relies on never fired: vertex error_event@3 429"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("verdict: inconclusive (exit status 3)"),
        "{}",
        out.stdout
    );
}

#[test]
fn both_modes_failing_before_any_provider_call_is_inconclusive() {
    // The gateway does not know the scenario's key (LiteLLM without its keys set up): both
    // modes get the same 401 and never reach a provider.
    let rel = "known_bug/key_level_fallbacks_stream.yaml";
    let (_, scenario) = corpus(rel);
    let base = free_port_base(scenario.providers.len() as u16);
    let (path, child) = serve_at(rel, base, |c| c.keys[0].key = "sk-someone-else".into());
    let out = run_probe(&path, &format!("http://{}", child.addr), base, &[]);
    assert_eq!(out.code, Some(3), "inconclusive exits 3");
    assert!(
        out.stdout
            .contains("INCONCLUSIVE: neither mode reached a provider (both: error 401"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("create the keys with `--setup`"),
        "{}",
        out.stdout
    );
}

#[test]
fn neither_mode_answering_in_time_is_inconclusive() {
    // A gateway that takes connections and never answers.
    let (path, scenario) = corpus("known_bug/midstream_429_key_fallbacks.yaml");
    let base = free_port_base(scenario.providers.len() as u16);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for conn in silent.incoming().take(3) {
            open.push(conn);
        }
        open
    });
    let out = run_probe(&path, &format!("http://{addr}"), base, &["--timeout", "1"]);
    assert_eq!(out.code, Some(3), "inconclusive exits 3");
    assert!(
        out.stdout
            .contains("INCONCLUSIVE: neither mode answered in time (broken (no complete answer within 1000 ms))"),
        "{}",
        out.stdout
    );
    // The bound is the flag's: each mode gave up after about a second.
    assert!(
        out.stderr
            .contains("r0.0: broken (no complete answer within 1000 ms) in 1."),
        "{}",
        out.stderr
    );
    // Unblock the acceptor (it waits for a third connection) and let it end.
    let _ = std::net::TcpStream::connect(addr);
    drop(held.join());
}

/// A LiteLLM stand-in without a database: every admin call is refused with LiteLLM's own
/// words, and chat requests must never arrive.
fn admin_without_database() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let chats = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = chats.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = vec![0u8; 64 * 1024];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            if head.contains("/chat/completions") {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let body = r#"{"error":{"message":"{'error': 'No db connected'}","type":"internal_server_error","param":"None","code":"500"}}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, chats)
}

#[test]
fn a_refused_setup_could_not_run_with_the_gateways_own_error() {
    let (path, scenario) = corpus("known_bug/key_level_fallbacks_stream.yaml");
    let base = free_port_base(scenario.providers.len() as u16);
    let (addr, chats) = admin_without_database();
    let out = run_probe(&path, &format!("http://{addr}"), base, &["--setup"]);
    assert_eq!(out.code, Some(2), "could not run exits 2");
    assert!(
        out.stdout.contains(
            "could not run (exit status 2): setting up the scenario's teams and keys failed: /team/new answered 500"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("No db connected"), "{}", out.stdout);
    assert_eq!(
        chats.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request is sent after a failed setup"
    );
}

#[test]
fn a_taken_fake_port_could_not_run() {
    let (path, scenario) = corpus("known_bug/midstream_429_key_fallbacks.yaml");
    let base = free_port_base(scenario.providers.len() as u16);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let out = run_probe(&path, "http://127.0.0.1:9", base, &[]);
    assert_eq!(out.code, Some(2), "could not run exits 2");
    assert!(
        out.stdout
            .contains(&format!("port {} on 127.0.0.1 is taken", base + 1)),
        "{}",
        out.stdout
    );
    // `fakes --emit-config` refuses the same ports before a gateway is pointed at them.
    let emit = Command::new(env!("CARGO_BIN_EXE_switchback"))
        .arg("fakes")
        .arg(&path)
        .args(["--port-base", &base.to_string(), "--emit-config", "litellm"])
        .output()
        .unwrap();
    assert!(!emit.status.success());
    assert!(
        String::from_utf8_lossy(&emit.stderr).contains("is taken"),
        "{}",
        String::from_utf8_lossy(&emit.stderr)
    );
    drop(squatter);
}

#[test]
fn a_differential_probe_shows_exactly_where_two_gateways_differ() {
    // A: `switchback serve` set up right. B: a front that ignores fallbacks for streams. The
    // non-stream requests are the same on both; each stream request differs, and the report
    // says at which call and how.
    let rel = "known_bug/key_level_fallbacks_stream.yaml";
    let (_, scenario) = corpus(rel);
    let base = free_port_base(scenario.providers.len() as u16);
    let (path, right) = serve_at(rel, base, |_| {});
    let config = emit::switchback_config(&scenario, &ports_at(&scenario, base)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let faulty = rt.block_on(faulty_gateway(&config));
    let out = run_probe(
        &path,
        &format!("http://{}", right.addr),
        base,
        &["--against", &format!("http://{faulty}")],
    );
    assert_eq!(out.code, Some(1), "different exits 1");
    let stdout = &out.stdout;
    let section = |name: &str| {
        let from = stdout
            .find(&format!("request {name}\n"))
            .unwrap_or_else(|| panic!("no section for {name}:\n{stdout}"));
        let rest = &stdout[from..];
        let end = rest[1..].find("\nrequest ").map_or(rest.len(), |e| e + 1);
        rest[..end].to_string()
    };
    let non_stream = section("r0.0 non_stream");
    assert!(non_stream.contains("\n  same\n"), "{non_stream}");
    let stream = section("r0.0 stream");
    assert!(!stream.contains("\n  same\n"), "{stream}");
    assert!(
        stream.contains(
            "  differs: calls: 1 against 0 call(s); from call 1 on, A made `vertex#1 gemini-2.5-flash: ok` and B made (no call)\n  differs: outcome: A 200, B error 502\n"
        ),
        "{stream}"
    );
    assert!(
        stdout.contains("2 request-mode(s): 1 the same, 1 different"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict: different (exit status 1)"),
        "{stdout}"
    );
    drop(rt);
}

#[test]
fn a_differential_probe_of_two_equal_gateways_is_the_same() {
    let rel = "parity/order_tier_falls_back_in_group_first.yaml";
    let (_, scenario) = corpus(rel);
    let base = free_port_base(scenario.providers.len() as u16);
    let (path, a) = serve_at(rel, base, |_| {});
    let (_, b) = serve_at(rel, base, |_| {});
    let out = run_probe(
        &path,
        &format!("http://{}", a.addr),
        base,
        &["--against", &format!("http://{}", b.addr)],
    );
    assert_eq!(out.code, Some(0), "the same exits 0");
    assert!(
        out.stdout.contains("first#1 m: http 500"),
        "the calls are listed: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("2 request-mode(s): 2 the same, 0 different\nverdict: same (exit status 0)"),
        "{}",
        out.stdout
    );
    // The same gateway twice compares nothing.
    let same = format!("http://{}", a.addr);
    let out = run_probe(&path, &same, base, &["--against", &same]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "could not run (exit status 2): --against names the same gateway as --gateway"
        ),
        "{}",
        out.stdout
    );
}
