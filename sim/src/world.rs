//! The simulated world a scenario runs in: one turmoil simulation per run.
//!
//! Owns: building the simulation (seed, fixed epoch, bounded duration), the hosts (`gateway`
//! running the real engine and HTTP server, one host per fake provider, and the `client`),
//! the turmoil implementations of the engine's transport seam, applying timed network
//! faults, and stepping to completion. A run that does not finish within the scenario's
//! `duration_ms` is reported as hung, with its last trace lines, never a silent hang.
//! Message latency is [`link`]'s: turmoil itself runs with none, so the two modes of a
//! scenario meet every provider-side event at the same simulated instant (see [`link`] for
//! why that holds by construction), the client sends copies released in the same
//! instant in one order whatever the mode ([`schedule`]), and upstream messages that fall
//! due in the same instant are handed to turmoil in one order (`handoff`). Does not own
//! what the run means (`oracle`).

mod handoff;
pub mod link;
pub mod schedule;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::engine::{Engine, WallClock};
use switchback::metrics::Metrics;
use switchback::reload::LiveEngine;
use switchback::trace::{Observer, TraceRecord};
use switchback::transport::{BoxFuture, BoxIo, Connector, Listener};

use crate::client::{self, ClientResult, Target};
use crate::counted::OpenCount;
use crate::fake::{CallRecord, Fake};
use crate::scenario::{Mode, NetAction, Scenario};
use crate::trace::{EngineObserver, Trace, TraceSink};
use link::{End, LinkKind, LinkStream, Net};

/// The gateway's port in the simulated network.
pub const GATEWAY_PORT: u16 = 4000;
/// The simulation's wall-clock epoch: fixed, so HTTP dates are reproducible.
pub const EPOCH_SECS: u64 = 1_700_000_000;
/// Per-socket message buffer in the simulated network (turmoil's default, 64, is too small
/// for hundreds of concurrent connections to one listener).
pub const TCP_CAPACITY: usize = 1 << 16;
/// Simulated time allowed after the client finishes, for connections to close.
pub const DRAIN: Duration = Duration::from_millis(500);

/// Connects through turmoil's simulated TCP, with [`link`]'s latency, counting open
/// connections when asked to.
pub struct SimConnector {
    pub count: Option<OpenCount>,
    net: Arc<Net>,
    kind: LinkKind,
}

impl SimConnector {
    pub fn new(net: Arc<Net>, kind: LinkKind, count: Option<OpenCount>) -> Self {
        SimConnector { count, net, kind }
    }
}

impl Connector for SimConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect((host, port)).await?;
            let stream = LinkStream::new(stream, self.net.clone(), self.kind, End::Opener)?;
            Ok(match &self.count {
                Some(count) => Box::new(count.track(stream)) as BoxIo,
                None => Box::new(stream) as BoxIo,
            })
        })
    }
}

/// The label of the gateway's own upstream connections in [`ModeRun::open_connections`].
pub const GATEWAY_UPSTREAMS: &str = "gateway->upstreams";

/// Accepts through turmoil's simulated TCP, with [`link`]'s latency on what it sends back.
pub struct SimListener {
    inner: turmoil::net::TcpListener,
    net: Arc<Net>,
    kind: LinkKind,
}

impl SimListener {
    pub fn new(inner: turmoil::net::TcpListener, net: Arc<Net>, kind: LinkKind) -> Self {
        SimListener { inner, net, kind }
    }
}

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            let stream = LinkStream::new(stream, self.net.clone(), self.kind, End::Acceptor)?;
            Ok((Box::new(stream) as BoxIo, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// What runs on the `gateway` host: Switchback's engine by default. Tests plug in others
/// (deliberately faulty wrappers) to prove the oracle catches them.
pub trait GatewayUnderTest: Send + Sync + 'static {
    /// Serves HTTP on `listener` until the host stops.
    /// `config` is what `catalog` was built from, for gateways that need to build their own.
    fn serve(
        &self,
        config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

    /// As [`serve`](Self::serve), and puts its engine into `engine`, for a scenario's
    /// `reloads` and for reading its metrics. By default a gateway under test does not (a
    /// scenario with reloads then fails on it, saying so; its metrics are not checked).
    #[allow(clippy::too_many_arguments)]
    fn serve_reloadable(
        &self,
        config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
        engine: EngineHandle,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        let _ = engine;
        self.serve(config, catalog, connector, observer, wall, listener)
    }
}

/// The gateway's engine, once it serves: the world swaps its config at a reload's instant,
/// between two steps, as `serve` does on SIGHUP, and reads its metrics at the end.
#[derive(Clone, Default)]
pub struct EngineHandle(Arc<Mutex<Option<LiveEngine>>>);

impl EngineHandle {
    pub fn set(&self, engine: LiveEngine) {
        *self.0.lock().expect("reload handle") = Some(engine);
    }

    fn get(&self) -> Option<LiveEngine> {
        self.0.lock().expect("reload handle").clone()
    }
}

/// The real thing.
pub struct Switchback;

impl GatewayUnderTest for Switchback {
    fn serve(
        &self,
        _config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        self.serve_reloadable(
            _config,
            catalog,
            connector,
            observer,
            wall,
            listener,
            EngineHandle::default(),
        )
    }

    fn serve_reloadable(
        &self,
        _config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
        handle: EngineHandle,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        // Metrics on, as `serve` has them by default: the oracle checks them against the
        // trace on every run.
        let engine =
            Engine::new(catalog, connector, observer, wall).with_metrics(Arc::new(Metrics::new()));
        let engine = LiveEngine::from(Arc::new(engine));
        handle.set(engine.clone());
        Box::pin(switchback::gateway::serve(
            engine,
            listener,
            std::future::pending(),
        ))
    }
}

/// The simulation's wall clock: the fixed epoch plus simulated time.
pub struct SimWallClock;

impl WallClock for SimWallClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + turmoil::since_epoch().unwrap_or(Duration::from_secs(EPOCH_SECS))
    }
}

/// Everything one run of one scenario in one mode produced.
pub struct ModeRun {
    pub mode: Mode,
    /// Client results, ordered by (request index, copy).
    pub results: Vec<ClientResult>,
    /// The engine's typed events.
    pub records: Vec<TraceRecord>,
    /// The configs the gateway ran with, in order: the scenario's, then each reload's.
    pub catalogs: Vec<Arc<Catalog>>,
    /// For each request (by number), the config (index in `catalogs`) it was admitted with.
    pub admitted_under: BTreeMap<u64, usize>,
    /// The gateway's Prometheus exposition at the end, when it keeps metrics.
    pub metrics: Option<String>,
    /// Calls each provider received, by host.
    pub calls: BTreeMap<String, Vec<CallRecord>>,
    /// Connections each provider accepted, by host.
    pub connections: BTreeMap<String, u32>,
    /// Connections still open at the end: the gateway's upstream connections
    /// ([`GATEWAY_UPSTREAMS`]), and each provider's when no network fault could have eaten
    /// the packets that close them.
    pub open_connections: BTreeMap<String, usize>,
    /// What the gateway's upstream pool kept idle at the end, by the same labels as
    /// `open_connections`, with its bound per host: every connection open at the end must
    /// be one of these. `None` when the gateway under test does not show its pool (then
    /// only the bound is checked).
    pub kept_connections: Option<BTreeMap<String, usize>>,
    /// Idle connections the pool may keep per host.
    pub max_kept_per_host: usize,
    pub trace: String,
    pub catalog: Arc<Catalog>,
    /// Set when the run did not finish (or the simulation failed).
    pub hang: Option<String>,
    /// Time the run took: simulated in the world, real in live mode.
    pub elapsed: Duration,
    /// Wall-clock time the run took.
    pub wall: Duration,
}

impl ModeRun {
    /// The config the request numbered `request` was admitted with (the scenario's, or a
    /// reload's); the scenario's for a request the gateway never admitted.
    pub fn catalog_for(&self, request: Option<u64>) -> &Catalog {
        request
            .and_then(|r| self.admitted_under.get(&r))
            .and_then(|i| self.catalogs.get(*i))
            .map_or(&self.catalog, |c| c.as_ref())
    }
}

/// The gateway config a scenario runs with: its own, seeded by the scenario unless it
/// fixes `rng_seed` itself.
pub fn gateway_config(scenario: &Scenario) -> GatewayConfig {
    let mut config = scenario.gateway.clone();
    config.router_settings.rng_seed.get_or_insert(scenario.seed);
    config
}

/// Runs `scenario` in `mode` in a fresh world, against Switchback.
pub fn run(scenario: &Scenario, mode: Mode) -> Result<ModeRun, String> {
    run_with(scenario, mode, Arc::new(Switchback))
}

/// How a world is built, beyond what the scenario says. The default is the real thing; the
/// other settings exist to prove the oracle notices what they break.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorldOptions {
    /// Draw every message's latency, on every link (the client's included), from one RNG in
    /// send order: the design [`link`] replaced, under which the two modes drift apart in
    /// time. Only for tests that must see `explore` catch that drift.
    pub shared_latency_rng: bool,
    /// Hand same-instant upstream messages to turmoil in the order their delivery tasks
    /// happen to run, which differs by mode: the world before `handoff`. Only for tests that
    /// must see a provider-side tie still tie.
    pub unordered_hand_off: bool,
}

/// Runs `scenario` in `mode` in a fresh world, against `gateway`.
pub fn run_with(
    scenario: &Scenario,
    mode: Mode,
    gateway: Arc<dyn GatewayUnderTest>,
) -> Result<ModeRun, String> {
    run_in(scenario, mode, gateway, WorldOptions::default())
}

/// Runs `scenario` in `mode` in a fresh world built with `options`, against `gateway`.
pub fn run_in(
    scenario: &Scenario,
    mode: Mode,
    gateway: Arc<dyn GatewayUnderTest>,
    options: WorldOptions,
) -> Result<ModeRun, String> {
    // Real time, only to report how long the run took (`ModeRun::wall`); never in the
    // world, its behaviour or its trace.
    let wall = std::time::Instant::now();
    let config = gateway_config(scenario);
    let catalog = Arc::new(Catalog::new(&config).map_err(|e| e.to_string())?);
    let trace = Trace::simulated();
    let upstreams = OpenCount::default();
    let sink: Arc<dyn TraceSink> = trace.clone();
    let observer = EngineObserver::new(sink.clone());
    observer.know(catalog.clone());
    let reloads = EngineHandle::default();
    let net = Net::new(
        scenario.seed,
        scenario.network.latency_ms,
        scenario.network.client_latency(),
        options.shared_latency_rng,
    )
    .with_ordered_hand_off(!options.unordered_hand_off)
    .with_connect_cost(Duration::from_millis(scenario.tick_ms))
    .with_max_in_flight(
        scenario
            .network
            .tcp_capacity
            .unwrap_or(link::MAX_MESSAGES_IN_FLIGHT),
    );
    // turmoil's own latency is zero: [`link`] decides every message's (see there for why).
    let mut sim = turmoil::Builder::new()
        .rng_seed(scenario.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(Duration::from_millis(scenario.duration_ms) * 2 + DRAIN)
        .tick_duration(Duration::from_millis(scenario.tick_ms))
        .tcp_capacity(scenario.network.tcp_capacity.unwrap_or(TCP_CAPACITY))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::ZERO)
        .build();

    {
        let catalog = catalog.clone();
        let observer = observer.clone();
        let upstreams = upstreams.clone();
        let config = config.clone();
        let net = net.clone();
        let reloads = reloads.clone();
        sim.host("gateway", move || {
            let catalog = catalog.clone();
            let observer: Arc<dyn Observer> = observer.clone();
            let gateway = gateway.clone();
            let upstreams = upstreams.clone();
            let config = config.clone();
            let net = net.clone();
            let reloads = reloads.clone();
            async move {
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", GATEWAY_PORT)).await?;
                let connector =
                    SimConnector::new(net.clone(), LinkKind::Upstream, Some(upstreams.clone()));
                gateway
                    .serve_reloadable(
                        &config,
                        catalog,
                        Arc::new(connector),
                        observer,
                        Arc::new(SimWallClock),
                        SimListener::new(listener, net, LinkKind::Client),
                        reloads,
                    )
                    .await;
                Ok(())
            }
        });
    }

    let mut fakes = Vec::new();
    let mut refusals = Refusals::default();
    // One numbering for every fake's calls: the oracle reads a request's calls across
    // providers in the order they came (a continuation's prefix from the calls before it).
    let order = Arc::default();
    for provider in &scenario.providers {
        let fake = Fake::with_order(
            provider.clone(),
            sink.clone(),
            Arc::clone(&order),
            scenario.continuation_prompts(),
        );
        fakes.push(fake.clone());
        let port = provider.port;
        let net = net.clone();
        let refusing = refusals.add(&provider.host);
        sim.host(provider.host.as_str(), move || {
            let fake = fake.clone();
            let net = net.clone();
            let mut refusing = refusing.clone();
            async move {
                // A refusing host has no listener: turmoil drops a connect's SYN to a port
                // nobody listens on, and the caller gets "connection refused" at once.
                loop {
                    if refusing.wait_for(|r| !*r).await.is_err() {
                        return Ok(());
                    }
                    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
                    let serving = fake.clone().serve(SimListener::new(
                        listener,
                        net.clone(),
                        LinkKind::Upstream,
                    ));
                    tokio::select! {
                        biased;
                        // Dropping `serving` drops the listener; open connections carry on.
                        _ = refusing.wait_for(|r| *r) => {}
                        _ = serving => {}
                    }
                }
            }
        });
    }

    let results: Arc<Mutex<Vec<ClientResult>>> = Arc::default();
    {
        let results = results.clone();
        let requests = scenario.requests.clone();
        let sequential = scenario.sequential;
        let sink = sink.clone();
        let connector = SimConnector::new(net.clone(), LinkKind::Client, None);
        sim.client("client", async move {
            let target = Target {
                connector: Arc::new(connector),
                host: "gateway".into(),
                port: GATEWAY_PORT,
                base_path: "/v1".into(),
            };
            let clock: client::Clock = Arc::new(|| turmoil::sim_elapsed().unwrap_or_default());
            let done =
                schedule::run_requests(&target, &requests, sequential, mode, sink, clock).await;
            *results.lock().expect("results") = done;
            Ok(())
        });
    }

    let mut faults: Vec<(u64, NetAction)> = scenario
        .network
        .faults
        .iter()
        .flat_map(|f| f.actions().into_iter().map(move |a| (f.at_ms, a)))
        .collect();
    faults.sort_by_key(|(at, _)| *at);
    let last_fault = Duration::from_millis(faults.last().map_or(0, |(at, _)| *at));
    let mut faults = faults.into_iter().peekable();
    let mut pending_reloads: Vec<(usize, &crate::scenario::Reload)> =
        scenario.reloads.iter().enumerate().collect();
    pending_reloads.sort_by_key(|(_, r)| r.at_ms);
    let mut pending_reloads = pending_reloads.into_iter().peekable();
    let mut hang = None;
    let mut finished_at: Option<Duration> = None;
    loop {
        let now = sim.elapsed();
        while let Some((at, _)) = faults.peek() {
            if Duration::from_millis(*at) > now {
                break;
            }
            let (_, action) = faults.next().expect("peeked");
            apply(&mut sim, &net, &refusals, &action);
            sink_line_from_outside(&trace, now, &action);
        }
        while let Some((i, r)) =
            pending_reloads.next_if(|(_, r)| Duration::from_millis(r.at_ms) <= now)
        {
            match reload(scenario, &reloads, &observer, r) {
                Ok(line) => trace.line_at(now, "harness", format!("reload #{i}: {line}")),
                Err(e) => {
                    hang = Some(format!("reloads[{i}] at {} ms: {e}", r.at_ms));
                    break;
                }
            }
        }
        if hang.is_some() {
            break;
        }
        match sim.step() {
            Ok(done) => {
                if done && finished_at.is_none() {
                    finished_at = Some(sim.elapsed());
                }
                if let Some(t) = finished_at {
                    // Faults scheduled after the client finished still happen (a release
                    // lets held closes through), then the world drains.
                    if sim.elapsed() >= t.max(last_fault) + DRAIN {
                        break;
                    }
                }
                if finished_at.is_none()
                    && sim.elapsed() >= Duration::from_millis(scenario.duration_ms)
                {
                    hang = Some(hang_report(scenario, &trace));
                    break;
                }
            }
            Err(e) => {
                hang = Some(format!("simulation error: {e}\n{}", tail(&trace)));
                break;
            }
        }
    }

    let results = std::mem::take(&mut *results.lock().expect("results"));
    let kept_connections = reloads
        .get()
        .map(|live| kept_at_end(live.current().upstream_pool()));
    Ok(ModeRun {
        mode,
        results,
        records: observer.records(),
        catalogs: observer.catalogs(),
        admitted_under: observer.admitted_under(),
        metrics: reloads.get().and_then(|live| {
            let engine = live.current();
            engine
                .metrics()
                .map(|m| m.render(Vec::new(), engine.upstream_pool().stats()))
        }),
        calls: fakes
            .iter()
            .map(|f| (f.spec.host.clone(), f.calls()))
            .collect(),
        connections: fakes
            .iter()
            .map(|f| (f.spec.host.clone(), f.accepted()))
            .collect(),
        open_connections: open_at_end(&upstreams, &fakes, scenario.network.faults.is_empty()),
        kept_connections,
        max_kept_per_host: catalog.limits.max_idle_upstream_connections_per_host,
        trace: trace.text(),
        catalog,
        hang,
        elapsed: finished_at.unwrap_or_else(|| sim.elapsed()),
        wall: wall.elapsed(),
    })
}

/// What an upstream pool keeps idle, labelled as [`open_at_end`] labels open connections: by
/// provider host, and in all as [`GATEWAY_UPSTREAMS`].
pub fn kept_at_end(pool: &switchback::upstream::pool::Pool) -> BTreeMap<String, usize> {
    let mut kept = BTreeMap::new();
    for (key, n) in pool.idle() {
        *kept.entry(key.host).or_default() += n;
        *kept.entry(GATEWAY_UPSTREAMS.to_string()).or_default() += n;
    }
    kept
}

/// What is still open when a run ends (see [`ModeRun::open_connections`]).
pub fn open_at_end(
    upstreams: &OpenCount,
    fakes: &[Arc<Fake>],
    provider_side_too: bool,
) -> BTreeMap<String, usize> {
    let mut open = BTreeMap::from([(GATEWAY_UPSTREAMS.to_string(), upstreams.open())]);
    if provider_side_too {
        open.extend(
            fakes
                .iter()
                .map(|f| (f.spec.host.clone(), f.open_connections())),
        );
    }
    open
}

/// Whether each provider host refuses connections (`refuse` / `listen` faults), by host.
#[derive(Default)]
struct Refusals(BTreeMap<String, tokio::sync::watch::Sender<bool>>);

impl Refusals {
    /// Registers `host` (listening) and returns what its software watches.
    fn add(&mut self, host: &str) -> tokio::sync::watch::Receiver<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.0.insert(host.to_string(), tx);
        rx
    }

    fn set(&self, host: &str, refusing: bool) {
        let tx = self
            .0
            .get(host)
            .expect("validation admits refuse/listen for provider hosts only");
        tx.send_replace(refusing);
    }
}

/// Swaps the gateway's config for `r`'s, between two steps: a request admitted from the
/// next step on gets it. The line that says so, or why it could not be done.
fn reload(
    scenario: &Scenario,
    reloads: &EngineHandle,
    observer: &EngineObserver,
    r: &crate::scenario::Reload,
) -> Result<String, String> {
    let live = reloads
        .get()
        .ok_or("the gateway under test cannot reload its config (or is not serving yet)")?;
    let mut config = r.gateway.clone();
    config.router_settings.rng_seed.get_or_insert(scenario.seed);
    let done = live.reload(&config).map_err(|e| e.to_string())?;
    observer.know(live.current().shared_catalog());
    Ok(done.describe())
}

fn apply(sim: &mut turmoil::Sim<'_>, net: &Net, refusals: &Refusals, action: &NetAction) {
    match action {
        NetAction::Refuse(h) => refusals.set(h, true),
        NetAction::Listen(h) => refusals.set(h, false),
        NetAction::Partition([a, b]) => sim.partition(a.as_str(), b.as_str()),
        NetAction::Repair([a, b]) => sim.repair(a.as_str(), b.as_str()),
        NetAction::Hold([a, b]) => sim.hold(a.as_str(), b.as_str()),
        NetAction::Release([a, b]) => sim.release(a.as_str(), b.as_str()),
        NetAction::Crash(h) => sim.crash(h.as_str()),
        NetAction::Bounce(h) => sim.bounce(h.as_str()),
        // Drawn per message by `link`, not by turmoil's shared RNG.
        NetAction::FailRate([a, b], rate) => {
            net.set_fail_rate(sim.lookup(a.as_str()), sim.lookup(b.as_str()), *rate)
        }
    }
}

/// Network faults are applied between steps, outside any host: stamp them with the
/// simulation's own clock.
fn sink_line_from_outside(trace: &Trace, now: Duration, action: &NetAction) {
    let text = match action {
        NetAction::Partition([a, b]) => format!("partition {a} {b}"),
        NetAction::Repair([a, b]) => format!("repair {a} {b}"),
        NetAction::Hold([a, b]) => format!("hold {a} {b}"),
        NetAction::Release([a, b]) => format!("release {a} {b}"),
        NetAction::Crash(h) => format!("crash {h}"),
        NetAction::Bounce(h) => format!("bounce {h}"),
        NetAction::Refuse(h) => format!("refuse {h}"),
        NetAction::Listen(h) => format!("listen {h}"),
        NetAction::FailRate([a, b], r) => format!("fail_rate {a} {b} {r}"),
    };
    trace.line_at(now, "network", text);
}

fn tail(trace: &Trace) -> String {
    let lines = trace.lines();
    let from = lines.len().saturating_sub(15);
    lines[from..].join("\n")
}

fn hang_report(scenario: &Scenario, trace: &Trace) -> String {
    format!(
        "did not finish within duration_ms = {} (simulated); last trace lines:\n{}",
        scenario.duration_ms,
        tail(trace)
    )
}
