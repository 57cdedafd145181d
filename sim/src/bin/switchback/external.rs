//! `switchback fakes` and `switchback probe`: testing a gateway that runs as its own process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use switchback_sim::emit;
use switchback_sim::live::start_fakes;
use switchback_sim::probe::{self, GatewayUrl, ProbeOptions};
use switchback_sim::scenario::Scenario;
use switchback_sim::trace::{NullSink, PrintSink, TraceSink};

fn load_scenario(path: &Path) -> Result<Scenario, ExitCode> {
    Scenario::load_file(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })
}

fn loopback_base(listen: SocketAddr) -> Result<u16, ExitCode> {
    if !listen.ip().is_loopback() {
        eprintln!("error: --listen {listen}: fakes only listen on loopback");
        return Err(ExitCode::FAILURE);
    }
    if listen.port() == 0 {
        eprintln!("error: --listen {listen}: give a port base, e.g. 127.0.0.1:18000");
        return Err(ExitCode::FAILURE);
    }
    Ok(listen.port())
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Starts the scenario's fakes at `base`, or says why not.
async fn start_at(
    scenario: &Scenario,
    sink: Arc<dyn TraceSink>,
    base: u16,
) -> Result<switchback_sim::live::RunningFakes, ExitCode> {
    start_fakes(scenario, sink, Some(base)).await.map_err(|e| {
        eprintln!("error: cannot start the fakes at 127.0.0.1:{base}: {e}");
        ExitCode::FAILURE
    })
}

fn gateway_url(url: &str) -> Result<GatewayUrl, ExitCode> {
    GatewayUrl::parse(url).map_err(|e| {
        eprintln!("error: --gateway {e}");
        ExitCode::FAILURE
    })
}

/// The port map `fakes` and `probe` agree on: provider i at base + i.
fn planned_ports(scenario: &Scenario, base: u16) -> emit::PortMap {
    scenario
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                (p.host.clone(), p.port),
                SocketAddr::from(([127, 0, 0, 1], base.saturating_add(i as u16))),
            )
        })
        .collect()
}

pub fn fakes(path: &Path, listen: SocketAddr, emit_litellm: Option<bool>) -> ExitCode {
    let (scenario, base) = match (load_scenario(path), loopback_base(listen)) {
        (Ok(s), Ok(b)) => (s, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if let Some(litellm) = emit_litellm {
        let ports = planned_ports(&scenario, base);
        let text = if litellm {
            emit::litellm_config(&scenario, &ports)
        } else {
            emit::switchback_config(&scenario, &ports)
                .and_then(|c| serde_saphyr::to_string(&c).map_err(|e| e.to_string()))
        };
        return match text {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    rt.block_on(async move {
        let sink: Arc<dyn TraceSink> = Arc::new(PrintSink);
        let running = match start_at(&scenario, sink, base).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        for ((host, port), addr) in &running.ports {
            println!("{host}:{port} -> http://{addr}/v1");
        }
        println!(
            "serving {} fake provider(s); Ctrl-C to stop",
            running.fakes.len()
        );
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    })
}

pub fn probe(
    path: &Path,
    gateway: &str,
    api_key: Option<String>,
    listen: SocketAddr,
    pause: Option<f64>,
) -> ExitCode {
    let (scenario, base) = match (load_scenario(path), loopback_base(listen)) {
        (Ok(s), Ok(b)) => (s, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let gateway = match gateway_url(gateway) {
        Ok(g) => g,
        Err(e) => return e,
    };
    let pause = match pause {
        Some(p)
            if p.is_finite() && (0.0..=switchback_sim::scenario::MAX_PAUSE_SECS).contains(&p) =>
        {
            Duration::from_secs_f64(p)
        }
        Some(p) => {
            eprintln!(
                "error: --pause {p}: 0 to {} seconds",
                switchback_sim::scenario::MAX_PAUSE_SECS
            );
            return ExitCode::FAILURE;
        }
        None => probe::default_pause(&scenario),
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    rt.block_on(async move {
        let sink: Arc<dyn TraceSink> = Arc::new(NullSink);
        let running = match start_at(&scenario, sink.clone(), base).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let options = ProbeOptions {
            gateway,
            api_key,
            pause,
        };
        let pairs = probe::probe(&scenario, &running, &options, sink).await;
        print!("{}", probe::report(&scenario, &pairs));
        if pairs.iter().all(|p| p.differences.is_empty()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

#[allow(clippy::too_many_arguments)]
pub fn load(
    path: &Path,
    gateway: &str,
    rate: f64,
    duration: Duration,
    stream: bool,
    connections: usize,
    listen: SocketAddr,
    api_key: Option<String>,
    json: bool,
) -> ExitCode {
    let (scenario, base) = match (load_scenario(path), loopback_base(listen)) {
        (Ok(s), Ok(b)) => (s, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let gateway = match gateway_url(gateway) {
        Ok(g) => g,
        Err(e) => return e,
    };
    let request = &scenario.requests[0];
    let mode = if stream {
        switchback_sim::scenario::Mode::Stream
    } else {
        switchback_sim::scenario::Mode::NonStream
    };
    let spec = switchback_sim::load::LoadSpec {
        host: gateway.host.clone(),
        port: gateway.port,
        path: format!("{}/chat/completions", gateway.base_path),
        key: api_key.or_else(|| request.key.clone()),
        body: switchback_sim::client::body(request, mode),
        rate,
        duration,
        connections,
    };
    if let Err(e) = spec.check() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    rt.block_on(async move {
        let sink: Arc<dyn TraceSink> = Arc::new(NullSink);
        let _fakes = match start_at(&scenario, sink, base).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let report = switchback_sim::load::run(&spec, |done, total| {
            eprintln!("{done}/{total} requests done")
        })
        .await;
        match report {
            Ok(r) => {
                if json {
                    println!("{}", r.to_json());
                } else {
                    print!("{}", r.text());
                }
                if r.accounted() && r.errors == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

pub fn bench_overhead(o: switchback_sim::overhead::OverheadOptions) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this binary to start the gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    rt.block_on(async move {
        match switchback_sim::overhead::run(&exe, &o, |line| eprintln!("{line}")).await {
            Ok((variants, rss_load, rss_streams)) => {
                print!(
                    "{}",
                    switchback_sim::overhead::table(&variants, rss_load, rss_streams, &o)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
