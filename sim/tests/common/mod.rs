//! Helpers shared by the integration tests: a gateway on loopback, and test-only "fronts"
//! that hand chat requests to engines after peeking at `stream` (the deliberately faulty
//! gateways are built from these; they exist only in tests).

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::Incoming;
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::engine::{Engine, SystemWallClock};
use switchback::gateway::body::ResponseBody;
use switchback::gateway::routes::chat_buffered;
use switchback::trace::NoTrace;
use switchback::transport::{Listener, TcpConnector, TcpListener};

pub mod mutants;

/// Switchback on an ephemeral loopback port, real TCP upstreams, no trace.
pub async fn loopback_gateway(config: &GatewayConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind");
    let addr = listener.0.local_addr().expect("bound");
    tokio::spawn(switchback::gateway::serve(
        loopback_engine(config),
        listener,
        std::future::pending(),
    ));
    addr
}

/// An engine for `config` with real TCP upstreams and no trace.
pub fn loopback_engine(config: &GatewayConfig) -> Arc<Engine> {
    Arc::new(Engine::new(
        Arc::new(Catalog::new(config).expect("a valid config")),
        Arc::new(TcpConnector),
        Arc::new(NoTrace),
        Arc::new(SystemWallClock),
    ))
}

/// A response being produced.
pub type Answer = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// How a front answers one chat request: (streams?, bearer token, body).
pub type Front = Arc<dyn Fn(bool, Option<String>, Bytes) -> Answer + Send + Sync>;

/// Serves `front` on `listener`: reads each request's body, sees whether it streams, and
/// lets the front answer.
pub async fn serve_front<L: Listener>(mut listener: L, front: Front) {
    loop {
        let Ok((io, _)) = listener.accept().await else {
            continue;
        };
        let front = front.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let front = front.clone();
                async move {
                    let bearer = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .map(str::to_string);
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let stream = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("stream").and_then(serde_json::Value::as_bool))
                        .unwrap_or(false);
                    Ok::<_, Infallible>(front(stream, bearer, body).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .await;
        });
    }
}

/// A front that sends non-stream requests to one engine and streams to another: the shape
/// of every "the stream path reads a different config" bug.
pub fn split(non_stream: Arc<Engine>, stream: Arc<Engine>) -> Front {
    Arc::new(move |streams, bearer, body| {
        let engine = if streams {
            stream.clone()
        } else {
            non_stream.clone()
        };
        Box::pin(async move { chat_buffered(engine, bearer.as_deref(), &body).await })
    })
}
