//! One in-process request through the whole gateway with one fallback, over an in-memory
//! transport (`tokio::io::duplex`): client → HTTP server → admission → attempt 1 (primary
//! answers 429) → fallback → attempt 2 (backup streams 10 chunks) → response.
//!
//! Run: `cargo bench --bench gateway`. Figures are in the README.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::engine::{Engine, SystemWallClock};
use switchback::trace::NoTrace;
use switchback::transport::{BoxFuture, BoxIo, Connector, Listener};
use tokio::sync::mpsc;

const CONFIG: &str = r#"
model_list:
  - {model_name: primary, litellm_params: {model: openai/p, api_base: "http://primary/v1"}, model_info: {id: p}}
  - {model_name: backup, litellm_params: {model: openai/b, api_base: "http://backup/v1"}, model_info: {id: b}}
router_settings:
  num_retries: 0
  cooldown_time: 0   # every request meets the 429 and falls back (no cooldown short-cut)
  fallbacks: [{primary: [backup]}]
"#;

/// Upstreams living in memory: `primary` answers 429, `backup` streams 10 chunks.
struct MemoryUpstreams;

impl Connector for MemoryUpstreams {
    fn connect<'a>(&'a self, host: &'a str, _port: u16) -> BoxFuture<'a, io::Result<BoxIo>> {
        let rate_limited = host == "primary";
        Box::pin(async move {
            let (near, far) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(upstream_answer(rate_limited))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(far), service)
                    .await;
            });
            Ok(Box::new(near) as BoxIo)
        })
    }
}

fn upstream_answer(rate_limited: bool) -> Response<Full<Bytes>> {
    if rate_limited {
        let mut r = Response::new(Full::new(Bytes::from_static(
            br#"{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#,
        )));
        *r.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return r;
    }
    let mut body = String::new();
    body.push_str("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"backup-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    for i in 0..10 {
        body.push_str(&format!("data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"backup-model\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}},\"finish_reason\":null}}]}}\n\n"));
    }
    body.push_str("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"backup-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// A listener fed by the bench's client side.
struct MemoryListener(mpsc::Receiver<BoxIo>);

impl Listener for MemoryListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let io = self
                .0
                .recv()
                .await
                .ok_or_else(|| io::Error::other("bench ended"))?;
            Ok((io, SocketAddr::from(([127, 0, 0, 1], 1))))
        })
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

async fn one_request(gateway: &mpsc::Sender<BoxIo>, body: &'static str) -> usize {
    let (near, far) = tokio::io::duplex(64 * 1024);
    gateway.send(Box::new(far)).await.expect("gateway running");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(near))
            .await
            .expect("handshake");
    // Closed after the exchange, so connections do not pile up against max_connections.
    let conn = tokio::spawn(conn);
    let request = Request::post("/v1/chat/completions")
        .header("host", "gateway")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    drop(sender);
    let _ = conn.await;
    bytes.len()
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let catalog =
        Arc::new(Catalog::new(&GatewayConfig::load("bench.yaml", CONFIG).unwrap()).unwrap());
    let engine = Arc::new(Engine::new(
        catalog,
        Arc::new(MemoryUpstreams),
        Arc::new(NoTrace),
        Arc::new(SystemWallClock),
    ));
    let (to_gateway, accepted) = mpsc::channel(16);
    runtime.spawn(switchback::gateway::serve(
        engine,
        MemoryListener(accepted),
        std::future::pending(),
    ));

    let non_stream = r#"{"model":"primary","messages":[{"role":"user","content":"hi"}]}"#;
    let stream = r#"{"model":"primary","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    // Sanity: both answers are complete before timing starts.
    let n = runtime.block_on(one_request(&to_gateway, non_stream));
    assert!(n > 50);
    let s = runtime.block_on(one_request(&to_gateway, stream));
    assert!(s > 500);

    c.bench_function("gateway_request_one_fallback_non_stream", |b| {
        b.iter(|| runtime.block_on(one_request(&to_gateway, non_stream)))
    });
    c.bench_function("gateway_request_one_fallback_stream_10_chunks", |b| {
        b.iter(|| runtime.block_on(one_request(&to_gateway, stream)))
    });
}

criterion_group!(gateway, benches);
criterion_main!(gateway);
