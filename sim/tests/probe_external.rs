//! Live mode against gateways running as separate processes, and simulation/live parity.
//!
//! * `switchback serve` started as a real child process, probed for stream/non-stream
//!   equivalence on corpus scenarios (a fresh child per mode, so cooldowns from one mode do
//!   not leak into the other).
//! * The same scenarios decided the same way in simulation and live.
//! * A deliberately faulty gateway (a test-only front that ignores fallbacks for streams),
//!   probed with the `switchback probe` command: it reports the divergence and exits non-zero.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

mod common;

use switchback_sim::emit;
use switchback_sim::live::start_fakes;
use switchback_sim::oracle;
use switchback_sim::probe::{self, GatewayUrl};
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

/// Probes a fresh `switchback serve` child per mode and returns the report's pairs.
fn probe_child(rel: &str) -> Vec<probe::Pair> {
    let (_, scenario) = corpus(rel);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink: Arc<dyn TraceSink> = Arc::new(NullSink);
        let fakes = start_fakes(&scenario, sink.clone(), None)
            .await
            .expect("fakes start");
        let config =
            emit::switchback_config(&scenario, &fakes.ports).expect("config for the fakes");
        let mut by_mode = Vec::new();
        for mode in [Mode::NonStream, Mode::Stream] {
            let child = serve(
                &format!("{}-{}", rel.replace('/', "_"), mode.as_str()),
                &config,
            );
            let url = GatewayUrl::parse(&format!("http://{}", child.addr)).unwrap();
            by_mode
                .push(probe::probe_mode(&scenario, &fakes, &url, None, mode, sink.clone()).await);
        }
        let s = by_mode.pop().unwrap();
        let n = by_mode.pop().unwrap();
        probe::pair_up(n, s)
    })
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
        let report = probe::report(&scenario, &pairs);
        assert!(
            pairs.iter().all(|p| p.differences.is_empty()),
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
        for (a, b) in sim.runs.iter().zip(&live.runs) {
            assert_eq!(a.mode, b.mode);
            for (x, y) in oracle::stories(a).iter().zip(oracle::stories(b).iter()) {
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

#[test]
fn probe_reports_a_gateway_that_ignores_fallbacks_for_streams() {
    let (path, scenario) = corpus("known_bug/key_level_fallbacks_stream.yaml");
    // Fixed ports: the `probe` command starts its own fakes there, as a user's would.
    let base: u16 = 18_650;
    let ports: emit::PortMap = scenario
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                (p.host.clone(), p.port),
                SocketAddr::from(([127, 0, 0, 1], base + i as u16)),
            )
        })
        .collect();
    let config = emit::switchback_config(&scenario, &ports).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(faulty_gateway(&config));
    let output = Command::new(env!("CARGO_BIN_EXE_switchback"))
        .args(["probe"])
        .arg(&path)
        .args([
            "--gateway",
            &format!("http://{addr}"),
            "--listen",
            &format!("127.0.0.1:{base}"),
            "--pause",
            "0",
        ])
        .output()
        .expect("switchback probe runs");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(
        !output.status.success(),
        "probe must fail on a divergent gateway:\n{text}"
    );
    assert!(text.contains("verdict     DIFFERENT"), "{text}");
    assert!(
        text.contains("1 request(s): 0 equivalent, 1 different"),
        "{text}"
    );
    drop(rt);
}
