//! `switchback fakes`, `probe` and `load`: testing a gateway that runs as its own process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use switchback_sim::emit;
use switchback_sim::live::{RecordCalls, start_fakes};
use switchback_sim::probe::{self, GatewayUrl, ProbeOptions, Verdict};
use switchback_sim::scenario::Scenario;
use switchback_sim::trace::{NullSink, PrintSink, Trace, TraceSink};

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
    // `fakes` and `load --listen` serve for as long as they run: no call log to grow.
    start_fakes(scenario, sink, Some(base), RecordCalls::No)
        .await
        .map_err(|e| {
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

/// The port base from `--port-base`, or from the old `--listen ADDRESS` spelling.
pub fn port_base(port_base: u16, listen: Option<SocketAddr>) -> Result<u16, String> {
    match listen {
        None => Ok(port_base),
        Some(l) if !l.ip().is_loopback() => {
            Err(format!("--listen {l}: fakes only listen on loopback"))
        }
        Some(l) => Ok(l.port()),
    }
}

/// Checks that the scenario's fakes fit at `base` and that nobody listens there yet.
async fn fake_ports_free(scenario: &Scenario, base: u16) -> Result<(), String> {
    let ports = probe::preflight::fake_ports(base, scenario.providers.len())?;
    probe::preflight::ports_free(&ports).await
}

pub fn fakes(path: &Path, base: Result<u16, String>, emit_litellm: Option<bool>) -> ExitCode {
    let scenario = match load_scenario(path) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let base = match base {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    // A config pointing at ports someone else serves would send the gateway to a stranger.
    if let Err(e) = rt.block_on(fake_ports_free(&scenario, base)) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
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

/// What `switchback probe` was asked.
pub struct ProbeArgs {
    pub scenario: std::path::PathBuf,
    pub gateway: String,
    pub api_key: Option<String>,
    pub setup: bool,
    pub master_key: String,
    pub port_base: Result<u16, String>,
    pub pause: Option<f64>,
    pub timeout: Option<f64>,
    /// A second gateway to compare with, request by request (`--against`).
    pub against: Option<String>,
    pub against_api_key: Option<String>,
    /// Also write the probe's timeline page here.
    pub html: Option<std::path::PathBuf>,
}

/// Prints the verdict of a probe that could not run, and returns its exit status.
fn could_not_run(reason: &str) -> ExitCode {
    println!(
        "verdict: could not run (exit status {}): {reason}",
        Verdict::CouldNotRun.exit_code()
    );
    ExitCode::from(Verdict::CouldNotRun.exit_code())
}

fn seconds(flag: &str, value: Option<f64>, max: f64) -> Result<Option<Duration>, String> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && (0.0..=max).contains(&v) => {
            Ok(Some(Duration::from_secs_f64(v)))
        }
        Some(v) => Err(format!("{flag} {v}: 0 to {max} seconds")),
    }
}

pub fn probe(a: ProbeArgs) -> ExitCode {
    let scenario = match Scenario::load_file(&a.scenario) {
        Ok(s) => s,
        Err(e) => return could_not_run(&e.to_string()),
    };
    let base = match a.port_base {
        Ok(b) => b,
        Err(e) => return could_not_run(&e),
    };
    let gateway = match GatewayUrl::parse(&a.gateway) {
        Ok(g) => g,
        Err(e) => return could_not_run(&format!("--gateway {e}")),
    };
    let pause = match seconds("--pause", a.pause, switchback_sim::scenario::MAX_PAUSE_SECS) {
        Ok(p) => p.map_or_else(|| probe::default_pause(&scenario), probe::Pause::given),
        Err(e) => return could_not_run(&e),
    };
    let timeout = match seconds("--timeout", a.timeout, probe::MAX_REQUEST_TIMEOUT_SECS) {
        Ok(Some(t)) if t.is_zero() => return could_not_run("--timeout 0: give at least 1 ms"),
        Ok(t) => t,
        Err(e) => return could_not_run(&e),
    };
    if !scenario.network.faults.is_empty() {
        return could_not_run(
            "the scenario has network faults, which need the simulated network: run it with `switchback run`",
        );
    }
    if !scenario.reloads.is_empty() {
        return could_not_run(
            "the scenario reloads its config at simulated instants, which needs the simulation: run it with `switchback run`",
        );
    }
    let ports = match probe::preflight::fake_ports(base, scenario.providers.len()) {
        Ok(p) => p,
        Err(e) => return could_not_run(&e),
    };
    let against = match a.against.as_deref().map(GatewayUrl::parse).transpose() {
        Ok(g) => g,
        Err(e) => return could_not_run(&format!("--against {e}")),
    };
    for (flag, g) in
        std::iter::once(("--gateway", &gateway)).chain(against.iter().map(|g| ("--against", g)))
    {
        if ports.contains(&g.port) {
            return could_not_run(&format!(
                "{flag}'s port {} is one of the fakes' ports ({}-{}): choose another --port-base",
                g.port,
                ports[0],
                ports[ports.len() - 1]
            ));
        }
    }
    if let Some(b) = &against {
        if (b.host.as_str(), b.port) == (gateway.host.as_str(), gateway.port) {
            return could_not_run("--against names the same gateway as --gateway");
        }
        if a.setup {
            return could_not_run("--setup is for one gateway: set up keys before `--against`");
        }
        // Which requests reach a provider as the scenario is written: one that reaches
        // none on either gateway tested nothing.
        let reference = match probe::reference::reference(&scenario) {
            Ok(r) => r,
            Err(e) => {
                return could_not_run(&format!("cannot tell what the scenario relies on: {e}"));
            }
        };
        return differential(
            &scenario,
            &reference,
            base,
            [
                probe::differential::Side {
                    label: "A",
                    gateway,
                    api_key: a.api_key,
                },
                probe::differential::Side {
                    label: "B",
                    gateway: b.clone(),
                    api_key: a.against_api_key,
                },
            ],
            pause,
            timeout,
        );
    }
    if !scenario.gateway.keys.is_empty() && a.api_key.is_some() {
        eprintln!(
            "probe: requests with a key in the scenario send that key; --api-key is sent only by requests without one"
        );
    }
    // What each request relies on, from a run on Switchback in simulation (its own runtime).
    let reference = match probe::reference::reference(&scenario) {
        Ok(r) => r,
        Err(e) => {
            return could_not_run(&format!("cannot tell what the scenario relies on: {e}"));
        }
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    let options = ProbeOptions {
        gateway,
        api_key: a.api_key,
        pause,
        timeout,
        setup_master_key: a.setup.then_some(a.master_key),
    };
    rt.block_on(async move {
        if let Err(e) = fake_ports_free(&scenario, base).await {
            return could_not_run(&e);
        }
        // With --html, the client's and the fakes' lines are kept, on the real clock.
        let started = std::time::Instant::now();
        let trace = Trace::new(Box::new(move || started.elapsed()));
        let sink: Arc<dyn TraceSink> = if a.html.is_some() {
            trace.clone()
        } else {
            Arc::new(NullSink)
        };
        let running = match start_fakes(&scenario, sink.clone(), Some(base), RecordCalls::Yes).await
        {
            Ok(r) => r,
            Err(e) => {
                return could_not_run(&format!(
                    "cannot start the fakes at 127.0.0.1:{base}: {e}; choose another --port-base"
                ));
            }
        };
        let progress = |line: &str| eprintln!("probe: {line}");
        let run = probe::probe(&scenario, &reference, &running, &options, sink, &progress).await;
        let text = probe::report(&scenario, &run);
        print!("{text}");
        if let Some(path) = &a.html {
            let page = switchback_sim::report::probe_page::page_of_probe(
                &scenario,
                &a.scenario.display().to_string(),
                &run,
                &text,
                &trace.text(),
            );
            match switchback_sim::report::write_page(&page, path) {
                Ok(()) => eprintln!("probe: timeline written to {}", path.display()),
                Err(e) => eprintln!("probe: cannot write {}: {e}", path.display()),
            }
        }
        ExitCode::from(run.verdict.exit_code())
    })
}

/// `probe --against`: the scenario against two gateways, compared request by request.
fn differential(
    scenario: &Scenario,
    reference: &probe::Reference,
    base: u16,
    sides: [probe::differential::Side; 2],
    pause: probe::Pause,
    timeout: Option<Duration>,
) -> ExitCode {
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    rt.block_on(async move {
        if let Err(e) = fake_ports_free(scenario, base).await {
            return could_not_run(&e);
        }
        let sink: Arc<dyn TraceSink> = Arc::new(NullSink);
        let running = match start_fakes(scenario, sink.clone(), Some(base), RecordCalls::Yes).await
        {
            Ok(r) => r,
            Err(e) => {
                return could_not_run(&format!(
                    "cannot start the fakes at 127.0.0.1:{base}: {e}; choose another --port-base"
                ));
            }
        };
        let progress = |line: &str| eprintln!("probe: {line}");
        let run = probe::differential::differential(
            scenario, reference, &running, sides, pause, timeout, sink, &progress,
        )
        .await;
        print!("{}", probe::differential::report(scenario, &run));
        ExitCode::from(run.verdict().exit_code())
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

pub fn bench_overhead(
    o: switchback_sim::overhead::OverheadOptions,
    gateway_bin: Option<std::path::PathBuf>,
) -> ExitCode {
    use switchback_sim::overhead::GatewayCommand;
    let gateway = match gateway_bin {
        Some(bin) => GatewayCommand::Gateway(bin),
        None => match std::env::current_exe() {
            Ok(e) => GatewayCommand::Serve(e),
            Err(e) => {
                eprintln!("error: cannot find this binary to start the gateway: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return e,
    };
    rt.block_on(async move {
        match switchback_sim::overhead::run(&gateway, &o, |line| eprintln!("{line}")).await {
            Ok((variants, rss_load, rss_streams)) => {
                print!(
                    "{}",
                    switchback_sim::overhead::table(&variants, rss_load, rss_streams, &o)
                );
                println!("gateway measured: {gateway}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
