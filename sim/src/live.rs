//! Live mode: the same scenario files over real loopback sockets and the real clock.
//!
//! Owns: starting a scenario's fake providers on `127.0.0.1` (one ephemeral port each), a
//! [`LoopbackConnector`] that maps the scenario's host names to those ports (so the gateway
//! config and every name in the trace stay exactly as in simulation), starting the
//! Switchback gateway on loopback, and running the scenario's requests. The result is a
//! [`ModeRun`], judged by the same oracle as a simulated run.
//!
//! Network faults need the simulated network; a scenario with any is refused here.
//! Only loopback addresses are used.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchback::catalog::Catalog;
use switchback::engine::{Engine, SystemWallClock};
use switchback::transport::{BoxFuture, BoxIo, Connector, TcpConnector, TcpListener};

use crate::client::{self, Clock, Target};
use crate::counted::OpenCount;
use crate::fake::Fake;
use crate::scenario::{Mode, Scenario};
use crate::trace::{EngineObserver, Trace, TraceSink};
use crate::world::{ModeRun, gateway_config};

/// How long live mode waits, at most, for connections to close after the last request.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Connects a scenario host name (`vertex:8000`) to the loopback port its fake listens on.
pub struct LoopbackConnector {
    pub ports: BTreeMap<(String, u16), SocketAddr>,
    /// Counts the connections opened through this connector until they are dropped.
    pub count: OpenCount,
}

impl Connector for LoopbackConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move {
            let addr = self
                .ports
                .get(&(host.to_string(), port))
                .copied()
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("{host}:{port} is not a fake of this scenario"),
                    )
                })?;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(self.count.track(stream)) as BoxIo)
        })
    }
}

/// Fakes running on loopback, for as long as this value lives.
pub struct RunningFakes {
    pub fakes: Vec<Arc<Fake>>,
    pub ports: BTreeMap<(String, u16), SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningFakes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts every provider of `scenario` on `127.0.0.1`. With `port_base`, provider i listens
/// on `port_base + i`; otherwise on an ephemeral port.
/// Whether started fakes keep a record of every call ([`Fake::calls`]): for an oracle, yes;
/// for fakes that serve load for as long as they run, no (see [`Fake::stop_recording`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordCalls {
    Yes,
    No,
}

pub async fn start_fakes(
    scenario: &Scenario,
    sink: Arc<dyn TraceSink>,
    port_base: Option<u16>,
    record_calls: RecordCalls,
) -> io::Result<RunningFakes> {
    let order = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut running = RunningFakes {
        fakes: Vec::new(),
        ports: BTreeMap::new(),
        tasks: Vec::new(),
    };
    for (i, p) in scenario.providers.iter().enumerate() {
        let port = match port_base {
            Some(base) => base
                .checked_add(i as u16)
                .ok_or_else(|| io::Error::other("port_base + providers overflows"))?,
            None => 0,
        };
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        let addr = listener.0.local_addr()?;
        let fake = Fake::with_order(
            p.clone(),
            sink.clone(),
            order.clone(),
            scenario.continuation_prompts(),
        );
        if record_calls == RecordCalls::No {
            fake.stop_recording();
        }
        running.ports.insert((p.host.clone(), p.port), addr);
        running
            .tasks
            .push(tokio::spawn(fake.clone().serve(listener)));
        running.fakes.push(fake);
    }
    Ok(running)
}

/// Runs `scenario` in `mode` against the Switchback engine on loopback.
pub fn run(scenario: &Scenario, mode: Mode) -> Result<ModeRun, String> {
    if !scenario.network.faults.is_empty() {
        return Err(
            "live mode cannot apply network faults; run this scenario in simulation".into(),
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(run_async(scenario, mode))
}

async fn run_async(scenario: &Scenario, mode: Mode) -> Result<ModeRun, String> {
    if !scenario.reloads.is_empty() {
        return Err(
            "the scenario reloads its config at simulated instants: run it with `switchback run`"
                .into(),
        );
    }
    let catalog = Arc::new(Catalog::new(&gateway_config(scenario)).map_err(|e| e.to_string())?);
    let started = Instant::now();
    let trace = Trace::new(Box::new(move || started.elapsed()));
    let sink: Arc<dyn TraceSink> = trace.clone();
    let observer = EngineObserver::new(sink.clone());
    observer.know(catalog.clone());
    let fakes = start_fakes(scenario, sink.clone(), None, RecordCalls::Yes)
        .await
        .map_err(|e| format!("cannot start fakes: {e}"))?;
    let upstreams = OpenCount::default();
    let connector = Arc::new(LoopbackConnector {
        ports: fakes.ports.clone(),
        count: upstreams.clone(),
    });
    let metrics = Arc::new(switchback::metrics::Metrics::new());
    let engine = Arc::new(
        Engine::new(
            catalog.clone(),
            connector,
            observer.clone(),
            Arc::new(SystemWallClock),
        )
        .with_metrics(metrics.clone()),
    );
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    let gateway_addr = listener.0.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pool = engine.upstream_pool().clone();
    let gateway = tokio::spawn(switchback::gateway::serve(engine, listener, async {
        let _ = stopped.await;
    }));
    let target = Target {
        connector: Arc::new(TcpConnector),
        host: gateway_addr.ip().to_string(),
        port: gateway_addr.port(),
        base_path: "/v1".into(),
    };
    let clock: Clock = Arc::new(move || started.elapsed());
    let results = client::run_requests(
        &target,
        &scenario.requests,
        scenario.sequential,
        mode,
        sink.clone(),
        clock,
    )
    .await;
    let _ = stop.send(());
    // A panic in the gateway's serving task is the run's failure, never a silent end.
    if let Err(e) = gateway.await {
        return Err(format!("the gateway's serving task ended abnormally: {e}"));
    }
    let open = wait_for_closes(&upstreams, &fakes.fakes).await;
    Ok(ModeRun {
        mode,
        results,
        records: observer.records(),
        catalogs: observer.catalogs(),
        admitted_under: observer.admitted_under(),
        metrics: Some(metrics.render(Vec::new(), pool.stats())),
        calls: fakes
            .fakes
            .iter()
            .map(|f| (f.spec.host.clone(), f.calls()))
            .collect(),
        connections: fakes
            .fakes
            .iter()
            .map(|f| (f.spec.host.clone(), f.accepted()))
            .collect(),
        open_connections: open,
        // The gateway has stopped, and a stopped gateway closes what it kept.
        kept_connections: Some(BTreeMap::new()),
        max_kept_per_host: 0,
        trace: trace.text(),
        catalog,
        hang: None,
        elapsed: started.elapsed(),
        wall: started.elapsed(),
    })
}

/// Waits (bounded by [`CLOSE_WAIT`]) for the fakes' connections to close, returning what is
/// still open. Closing is the peer's doing, so there is nothing to wait on but the count.
async fn wait_for_closes(upstreams: &OpenCount, fakes: &[Arc<Fake>]) -> BTreeMap<String, usize> {
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        let open = crate::world::open_at_end(upstreams, fakes, true);
        if open.values().all(|n| *n == 0) || tokio::time::Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
