//! The floor of a proxy hop built from Switchback's own parts: hyper 1.x on tokio, a
//! single-threaded runtime per worker thread with a `SO_REUSEPORT` listener each (as
//! `switchback serve` runs), and a per-worker pool of kept HTTP/1.1 upstream connections.
//! It forwards the request body untouched to one upstream and the upstream's answer, whole,
//! back: no parsing, no routing, no logs. Measured next to nginx and Switchback, it says how
//! much of Switchback's added latency is the stack (hyper, tokio, the kernel's loopback)
//! and how much is Switchback's own work.
//!
//! ```sh
//! cargo run --release -p switchback-sim --example bare_proxy -- 127.0.0.1:21391 127.0.0.1:21300
//! ```
//!
//! Not part of the gateway: a measuring stick for `bench-overhead --reference`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Kept upstream connections per worker at most.
const MAX_IDLE: usize = 64;

type Pool = Rc<RefCell<Vec<SendRequest<Full<Bytes>>>>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen
        .parse()
        .unwrap_or_else(|e| fail(&format!("LISTEN_ADDR `{listen}`: {e}")));
    let upstream: SocketAddr = upstream
        .parse()
        .unwrap_or_else(|e| fail(&format!("UPSTREAM_ADDR `{upstream}`: {e}")));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream)))
        .collect();
    eprintln!("bare_proxy on http://{listen} -> {upstream} ({workers} workers)");
    for thread in threads {
        let _ = thread.join();
    }
}

fn fail(message: &str) -> ! {
    eprintln!("bare_proxy: {message}");
    std::process::exit(2);
}

fn worker(listen: SocketAddr, upstream: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start a runtime: {e}")));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let bound = tokio::net::TcpSocket::new_v4().and_then(|socket| {
            socket.set_reuseport(true)?;
            socket.set_reuseaddr(true)?;
            socket.bind(listen)?;
            socket.listen(1024)
        });
        let listener = bound.unwrap_or_else(|e| fail(&format!("cannot listen on {listen}: {e}")));
        let pool: Pool = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |request| forward(request, upstream, pool.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn forward(
    request: Request<Incoming>,
    upstream: SocketAddr,
    pool: Pool,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut sender = match take(&pool) {
        Some(sender) => sender,
        None => match dial(upstream).await {
            Ok(sender) => sender,
            Err(e) => {
                let mut response = Response::new(Full::new(Bytes::from(format!("{e}\n"))));
                *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                return Ok(response);
            }
        },
    };
    let mut outgoing = Request::new(Full::new(body));
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = parts.uri;
    *outgoing.headers_mut() = parts.headers;
    let answer = sender.send_request(outgoing).await?;
    let (parts, body) = answer.into_parts();
    let body = body.collect().await?.to_bytes();
    if pool.borrow().len() < MAX_IDLE {
        pool.borrow_mut().push(sender);
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn take(pool: &Pool) -> Option<SendRequest<Full<Bytes>>> {
    let mut idle = pool.borrow_mut();
    while let Some(sender) = idle.pop() {
        if sender.is_ready() {
            return Some(sender);
        }
    }
    None
}

async fn dial(upstream: SocketAddr) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::task::spawn_local(connection);
    Ok(sender)
}
