//! `serve`'s worker threads: a runtime per worker, each accepting on a listener of its own.
//!
//! Owns: binding the listening sockets (one per worker, on one address, with
//! `SO_REUSEPORT`, so the kernel spreads new connections across them), starting a thread
//! per worker with a single-threaded tokio runtime that accepts and serves its own
//! connections to their end, and naming each thread's worker for the upstream pool. Why not
//! one multi-threaded runtime: it wakes idle worker threads to steal work at nearly every
//! I/O event, and a connection's tasks (the client's, the upstream's, the request's) move
//! between threads; here a connection lives on one thread from accept to close, as nginx
//! runs a process per core (measured: a sixth less CPU per request, see README
//! "Benchmarks"). Does not own what is served (`switchback::gateway`) nor signals and
//! reloads (`main`).

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use switchback::gateway::{Gate, accept};
use switchback::reload::LiveEngine;
use switchback::transport::TcpListener;
use switchback_sim::stall::StallWatch;
use tokio::sync::watch;

/// Most worker threads `--workers` accepts.
pub const MAX_WORKERS: usize = 256;

/// Pending connections each listening socket queues (tokio's own default).
const BACKLOG: u32 = 1024;

/// How late a worker's stall watch may wake before the worker is said to have stalled
/// (`worker_stalled`, WARN): well above a loaded worker's ordinary lateness (about a
/// millisecond), well below what a client notices.
const STALL_REPORTED_AFTER: Duration = Duration::from_millis(50);

/// How many workers `--workers` (none: one per CPU the process may use) means here: within
/// `1..=MAX_WORKERS`, and one where the kernel does not spread connections across sockets
/// sharing a port (`SO_REUSEPORT` balances only on Linux).
pub fn count(asked: Option<usize>) -> Result<usize, String> {
    let n = match asked {
        Some(0) => return Err("--workers must be at least 1".into()),
        Some(n) if n > MAX_WORKERS => {
            return Err(format!("--workers {n} is over the limit of {MAX_WORKERS}"));
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok(if cfg!(target_os = "linux") { n } else { 1 })
}

/// Binds `n` listening sockets to `addr` (an ephemeral port is chosen by the first, and
/// the others take the same). Runs inside a runtime (tokio registers the sockets, which are
/// handed back unregistered, for each worker's runtime to take).
///
/// `SO_REUSEPORT` would also let a second gateway of the same user join the port and take
/// a share of its connections, silently. So the address is first bound by a socket without
/// it, which fails like a single socket would when anything listens there already; the
/// group then binds the address that probe was given.
pub fn bind(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut at = addr;
    if n > 1 {
        let probe = new_socket(at)?;
        probe.bind(at)?;
        at = probe.local_addr()?;
    }
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = new_socket(at)?;
        #[cfg(target_os = "linux")]
        if n > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(at)?;
        let listener = socket.listen(BACKLOG)?;
        at = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// A TCP socket for `at`'s family, with `SO_REUSEADDR` as tokio's own listeners have.
fn new_socket(at: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if at.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// The worker threads started, and whether every one of them is serving.
pub struct Started {
    pub threads: Vec<JoinHandle<()>>,
    /// The first worker that could not start, and why.
    pub failed: Option<String>,
}

/// Starts a worker thread per listener and returns once each is accepting or has failed.
/// Each accepts until `stop` turns true, then drains with the others (`gate`: the
/// connection limits and the drain are the whole gateway's) and ends once every connection
/// of every worker has closed or the grace has passed.
pub fn start(
    engine: &LiveEngine,
    listeners: Vec<std::net::TcpListener>,
    gate: &Gate,
    stop: &watch::Receiver<bool>,
) -> Started {
    start_with(engine, listeners, gate, stop, |_| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    })
}

/// [`start`], each worker's runtime made by `runtime` (given the worker's index), so that a
/// test can make one fail.
fn start_with(
    engine: &LiveEngine,
    listeners: Vec<std::net::TcpListener>,
    gate: &Gate,
    stop: &watch::Receiver<bool>,
    runtime: impl Fn(usize) -> std::io::Result<tokio::runtime::Runtime> + Clone + Send + 'static,
) -> Started {
    switchback::upstream::pool::set_workers(listeners.len());
    let (ready, readiness) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::with_capacity(listeners.len());
    let mut failed = None;
    for (index, listener) in listeners.into_iter().enumerate() {
        let (engine, gate, mut stop) = (engine.clone(), gate.clone(), stop.clone());
        let (ready, runtime) = (ready.clone(), runtime.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("switchback-worker-{index}"))
            .spawn(move || {
                switchback::upstream::pool::set_worker(index);
                let runtime = match runtime(index) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(format!("worker {index}: its runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => TcpListener(l),
                        Err(e) => {
                            let _ = ready.send(Err(format!("worker {index}: its socket: {e}")));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    // A worker whose loop stops turning holds up every connection it serves:
                    // said in the log, with how long (the thread was busy or not running),
                    // and counted in `switchback_worker_stalls_total`.
                    let watched = engine.clone();
                    let _stalls = StallWatch::start(STALL_REPORTED_AFTER, move |late| {
                        if let Some(metrics) = watched.current().metrics() {
                            metrics.record_worker_stall(index);
                        }
                        tracing::warn!(
                            target: "switchback::worker",
                            worker = index,
                            stalled_ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX),
                            "worker_stalled"
                        );
                    });
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    accept(engine, listener, stopped, &gate).await;
                    gate.drain().await;
                });
                // The drain is over (or its grace is): what is left is cut, and a lookup
                // still on the blocking pool (`getaddrinfo` cannot be cancelled) is not
                // waited for, as dropping the runtime would.
                runtime.shutdown_background();
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                failed.get_or_insert(format!("worker {index}: its thread: {e}"));
                break;
            }
        }
    }
    drop(ready);
    for _ in 0..threads.len() {
        match readiness.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed.get_or_insert(e);
            }
            // Every sender is gone: a worker ended without a word (it cannot, short of
            // a panic, which aborts the process in release).
            Err(_) => {
                failed.get_or_insert_with(|| "a worker ended while starting".into());
                break;
            }
        }
    }
    Started { threads, failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_are_bounded_and_named() {
        assert!(count(Some(0)).unwrap_err().contains("at least 1"));
        assert!(
            count(Some(MAX_WORKERS + 1))
                .unwrap_err()
                .contains("over the limit")
        );
        assert!(count(None).unwrap() >= 1);
        if cfg!(target_os = "linux") {
            assert_eq!(count(Some(3)).unwrap(), 3);
        }
    }

    // `bind` registers the sockets with the runtime it runs in.
    #[tokio::test]
    async fn every_listener_shares_the_first_ones_port() {
        let n = count(Some(3)).unwrap();
        let listeners = bind("127.0.0.1:0".parse().unwrap(), n).expect("bound");
        assert_eq!(listeners.len(), n);
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
    }

    #[test]
    fn a_worker_that_cannot_start_is_named_and_the_others_stop() {
        let config = switchback::config::GatewayConfig::load(
            "test.yaml",
            "allow_anonymous: true\nmodel_list:\n  - {model_name: a, litellm_params: {model: openai/m, api_base: \"http://127.0.0.1:1/v1\"}}\n",
        )
        .expect("valid");
        let catalog = switchback::catalog::Catalog::new(&config).expect("valid");
        let engine = switchback::engine::Engine::new(
            std::sync::Arc::new(catalog),
            std::sync::Arc::new(switchback::transport::TcpConnector),
            std::sync::Arc::new(switchback::trace::Fanout(Vec::new())),
            std::sync::Arc::new(switchback::engine::SystemWallClock),
        );
        let engine = LiveEngine::from(std::sync::Arc::new(engine));
        // `bind` registers the sockets with the runtime it runs in.
        let listeners = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async { bind("127.0.0.1:0".parse().unwrap(), 3) })
            .expect("bound");
        let gate = Gate::new(&engine);
        let (stopping, stopped) = watch::channel(false);
        let started = start_with(&engine, listeners, &gate, &stopped, |index| {
            if index == 1 {
                return Err(std::io::Error::other("no runtime for you"));
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        });
        assert_eq!(
            started.failed.as_deref(),
            Some("worker 1: its runtime: no runtime for you")
        );
        assert_eq!(started.threads.len(), 3, "every thread was started");
        // What `serve` does then: the workers that did start stop, with nothing to drain.
        stopping.send_replace(true);
        let (joined, all_joined) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ended = started.threads.into_iter().map(|t| t.join().is_ok());
            let _ = joined.send(ended.collect::<Vec<_>>());
        });
        let ended = all_joined
            .recv_timeout(Duration::from_secs(30))
            .expect("the workers stop once told to");
        assert_eq!(ended, [true; 3], "no worker panicked");
    }

    #[tokio::test]
    async fn a_port_a_gateway_already_listens_on_is_refused() {
        let n = count(Some(2)).unwrap();
        let first = bind("127.0.0.1:0".parse().unwrap(), n).expect("bound");
        let taken = first[0].local_addr().unwrap();
        // A second gateway on the same port must not quietly take a share of the first
        // one's connections.
        let second = bind(taken, n).expect_err("the port is taken");
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse, "{second}");
        drop(first);
        bind(taken, n).expect("free again");
    }
}
