//! The HTTP gateway: accepting connections and serving them with hyper.
//!
//! Owns: the accept loop over an injected [`Listener`] (with a backoff when accepting fails,
//! so running out of descriptors never spins a core), the connection limit
//! (`max_connections`; past it, up to `max_overflow_connections` more are answered at once —
//! `/health` normally, anything else with a 503 — and any more are closed), the header read
//! timeout, and the graceful drain when `shutdown` completes: no new connections, in-flight
//! requests (streams included) finish, idle keep-alive connections close, all within
//! `shutdown_grace`; and the budget of request body bytes in flight
//! (`max_in_flight_request_body_bytes`, [`request_body::BodyBudget`]), which like the
//! connection limits holds for the whole gateway. Each request is served by the engine
//! current when it arrives ([`LiveEngine`]: a config reload never changes a request in
//! flight); the limits above are read once, at start. Several accept loops may share one
//! gateway's limits and drain through a [`Gate`] (`switchback serve` runs one per worker
//! thread); [`serve`] is one loop with its own. What each route does lives in [`routes`];
//! request bodies in [`request_body`] (and in a content coding, refused: [`content_coding`]),
//! response bodies in [`body`]; browsers' cross-origin calls in [`cors`]; every response's
//! `Date` in [`date`].
//! Does not own routing decisions (`engine`, `attempt`) nor threads and runtimes (the
//! binary's).

pub mod body;
pub mod content_coding;
pub mod cors;
pub mod date;
pub mod request_body;
pub mod routes;
pub mod write_timeout;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};

use crate::reload::LiveEngine;
use crate::transport::{BoxIo, Listener};
use write_timeout::WriteTimeout;

/// First and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Serves `listener` until `shutdown` completes, then drains: returns once every connection
/// has closed or `limits.shutdown_grace` has passed.
pub async fn serve<L: Listener>(
    engine: impl Into<LiveEngine>,
    listener: L,
    shutdown: impl Future<Output = ()>,
) {
    let engine: LiveEngine = engine.into();
    let gate = Gate::new(&engine);
    accept(engine.clone(), listener, shutdown, &gate).await;
    gate.drain().await;
    // Nothing will ask for an upstream connection again: close the kept ones now rather
    // than when the last handle on the engine goes.
    engine.current().upstream_pool().close_idle();
}

/// What the accept loops of one gateway share, however many there are (one per worker
/// thread in `switchback serve`): the connection limits (`max_connections` and
/// `max_overflow_connections` hold for the whole gateway, not per loop), the budget of
/// request bodies in flight, and the drain.
#[derive(Clone)]
pub struct Gate {
    limits: Arc<crate::limits::Limits>,
    permits: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    bodies: request_body::BodyBudget,
    drain: Arc<watch::Sender<bool>>,
}

impl Gate {
    /// The gate of a gateway serving `engine`, with its limits as they were at start
    /// (a reload that changes them says they need a restart).
    pub fn new(engine: &LiveEngine) -> Gate {
        let limits = engine.limits_at_start().clone();
        Gate {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            overflow: Arc::new(Semaphore::new(limits.max_overflow_connections)),
            bodies: request_body::BodyBudget::new(limits.max_in_flight_request_body_bytes),
            drain: Arc::new(watch::channel(false).0),
            limits: Arc::new(limits),
        }
    }

    /// Asks every connection to finish its request in flight and close, then waits until
    /// all have (on every accept loop) or `shutdown_grace` has passed. Call it once every
    /// accept loop has stopped; calling it from several places waits alike.
    pub async fn drain(&self) {
        self.drain.send_replace(true);
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(self.limits.shutdown_grace(), self.permits.acquire_many(all))
            .await;
    }
}

/// Accepts connections from `listener` and serves each in a task of its own, until
/// `shutdown` completes; connections still open then are left to [`Gate::drain`].
pub async fn accept<L: Listener>(
    engine: LiveEngine,
    mut listener: L,
    shutdown: impl Future<Output = ()>,
    gate: &Gate,
) {
    let limits = &gate.limits;
    let mut backoff = ACCEPT_BACKOFF.0;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let io = match accepted {
            Ok((io, _peer)) => {
                backoff = ACCEPT_BACKOFF.0;
                io
            }
            // A failed accept (a reset during the handshake, out of descriptors) concerns
            // that connection only; but it may fail again at once, so wait a little, longer
            // each time, instead of spinning.
            Err(_) => {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        // A client that stops reading must not keep its connection for ever.
        let io = WriteTimeout::new(io, limits.client_write_timeout());
        if let Ok(permit) = gate.permits.clone().try_acquire_owned() {
            let engine = engine.clone();
            let draining = gate.drain.subscribe();
            let header_timeout = limits.header_read_timeout();
            let bodies = gate.bodies.clone();
            tokio::spawn(async move {
                let _permit = permit;
                serve_connection(engine, bodies, io, header_timeout, draining).await;
            });
        } else if let Ok(permit) = gate.overflow.clone().try_acquire_owned() {
            let max = limits.max_connections;
            let header_timeout = limits.header_read_timeout();
            let engine = engine.clone();
            tokio::spawn(async move {
                let _permit = permit;
                serve_overflow(engine, io, max, header_timeout).await;
            });
        } else {
            // Past both limits, the connection is closed at once (dropped), and counted.
            engine.current().note_dropped_connection();
        }
    }
    drop(listener);
}

/// One client connection, until it closes or the drain asks it to finish.
async fn serve_connection(
    engine: LiveEngine,
    bodies: request_body::BodyBudget,
    io: WriteTimeout<BoxIo>,
    header_timeout: Duration,
    mut draining: watch::Receiver<bool>,
) {
    let service = service_fn(request_handler(engine, bodies, io.deadline()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // `Date` comes from the engine's clock (`date`), never the system's.
    builder
        .timer(TokioTimer::new())
        .auto_date_header(false)
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        biased;
        // A connection error (client reset, header timeout) ends that connection only.
        _ = conn.as_mut() => return,
        _ = draining.wait_for(|d| *d) => {}
    }
    // Finish the request in flight (a stream to its end), then close.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// What hyper runs for each request of a connection: a box. hyper keeps room for this
/// future beside the connection for the connection's whole life (its `in_flight`, made
/// when the connection starts), so the state of a request being admitted and answered
/// (about 7 KB: the routes' futures and their locals) lives in the box, only while that
/// request does. A streaming answer outlives it (the stream's task sends the events), and
/// a kept-alive connection waits between requests: unboxed, each held those 7 KB for
/// nothing, 6.6 MiB of the gateway's heap with 1,000 streams open (heaptrack, 2026-12-07).
type Handling = std::pin::Pin<
    Box<
        dyn Future<Output = Result<http::Response<body::ResponseBody>, std::convert::Infallible>>
            + Send,
    >,
>;

/// The service of one connection: sets its write deadline per request and hands the request
/// to [`routes::handle`] in a [`Handling`] box.
fn request_handler(
    engine: LiveEngine,
    bodies: request_body::BodyBudget,
    deadline: write_timeout::WriteDeadline,
) -> impl Fn(Request<Incoming>) -> Handling + Clone {
    move |mut req: Request<Incoming>| {
        // The response must be read by the request's deadline, with `client_write_timeout`
        // to spare: until a chat request is admitted (which starts the engine's, see
        // `routes::chat`), counted from its arrival with the time its body may take.
        let allowance = {
            let current = engine.current();
            let limits = &current.catalog().limits;
            limits.request_deadline()
                + limits.body_read_timeout()
                + limits.body_timeout_grace()
                + limits.client_write_timeout()
        };
        deadline.set(tokio::time::Instant::now() + allowance);
        req.extensions_mut().insert(deadline.clone());
        let (engine, bodies) = (engine.clone(), bodies.clone());
        Box::pin(async move { Ok(routes::handle(engine, &bodies, req).await) })
    }
}

/// A connection past `max_connections`: answered at once, then closed.
async fn serve_overflow(
    engine: LiveEngine,
    io: WriteTimeout<BoxIo>,
    max_connections: usize,
    header_timeout: Duration,
) {
    let service = service_fn(move |req| {
        let engine = engine.current();
        async move { Ok::<_, std::convert::Infallible>(routes::overflow(&engine, req, max_connections)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .auto_date_header(false)
        .header_read_timeout(header_timeout)
        .keep_alive(false);
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::config::GatewayConfig;
    use crate::engine::{Engine, SystemWallClock};
    use crate::trace::TraceLog;
    use crate::transport::TcpConnector;

    /// The size of what `handler` returns, without a request to call it with.
    fn output_size<R>(_: &impl Fn(Request<Incoming>) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_connection_keeps_only_a_pointer_to_its_requests_state() {
        let yaml = "allow_anonymous: true\nmodel_list:\n  - {model_name: m, litellm_params: {model: openai/m, api_base: 'http://up/v1'}}\n";
        let config = GatewayConfig::load("t.yaml", yaml).expect("a config");
        let catalog = Arc::new(Catalog::new(&config).expect("a catalog"));
        let engine = Engine::new(
            catalog,
            Arc::new(TcpConnector),
            Arc::new(TraceLog::default()),
            Arc::new(SystemWallClock),
        );
        let handler = request_handler(
            LiveEngine::from(Arc::new(engine)),
            request_body::BodyBudget::new(1),
            write_timeout::WriteDeadline::default(),
        );
        // A fat pointer: what hyper sets aside per connection for its request in flight.
        assert_eq!(output_size(&handler), 2 * std::mem::size_of::<usize>());
    }
}
