//! The HTTP gateway: accepting connections and serving them with hyper.
//!
//! Owns: the accept loop over an injected [`Listener`], the connection limit
//! (`max_connections`: further connections wait in the accept queue), the header read
//! timeout, and shutdown. What each route does lives in [`routes`]; response bodies in
//! [`body`]. Does not own routing decisions (`engine`, `attempt`).

pub mod body;
pub mod routes;

use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::engine::Engine;
use crate::transport::Listener;

/// Serves `listener` until `shutdown` completes. Connections already accepted finish on
/// their own tasks.
pub async fn serve<L: Listener>(
    engine: Arc<Engine>,
    mut listener: L,
    shutdown: impl Future<Output = ()>,
) {
    let limits = engine.catalog().limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (io, _peer) = match accepted {
            Ok(conn) => conn,
            // A failed accept (a reset during the handshake, out of descriptors) concerns
            // that connection only; keep serving the others.
            Err(_) => continue,
        };
        let engine = engine.clone();
        let header_timeout = limits.header_read_timeout();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let engine = engine.clone();
                async move { Ok::<_, std::convert::Infallible>(routes::handle(engine, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            // A connection error (client reset, header timeout) ends that connection only.
            let _ = builder.serve_connection(TokioIo::new(io), service).await;
        });
    }
}
