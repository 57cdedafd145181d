//! The real `switchback serve` binary on loopback, against a hostile upstream and hostile
//! raw-socket clients: what the hardening guarantees look like from outside the process.
//!
//! Checks: no `panicked` on the gateway's stderr; its memory stays bounded (peak RSS from
//! `/proc`); its open descriptors return to their baseline once the hostile clients are
//! gone (connections, upstream sockets and the tasks holding them are freed); `/health`
//! answers while the connection limit is flooded; secrets and unbounded Retry-After never
//! reach a client; SIGTERM lets an in-flight stream finish before the process exits.
//!
//! Bounded in time (each wait has a deadline; the whole file runs in well under a minute).
//! Linux only: it reads `/proc` and sends signals with `kill`.
#![cfg(target_os = "linux")]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const SECRET: &str = "sk-hostile-upstream-KEY-0042";
const KEY: &str = "sk-client-1";

type UpBody = BoxBody<Bytes, Infallible>;

fn chunk(model: &str, choice: u64, delta: Value) -> String {
    let c = json!({"id": "h", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": choice, "delta": delta, "finish_reason": null}]});
    format!("data: {c}\n\n")
}

/// A body fed by a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> UpBody {
    BodyExt::boxed(ChannelBody(rx))
}

/// An endless SSE body produced by `next(i)`; it ends when the reader goes away.
fn endless(first: String, next: impl Fn(u64) -> String + Send + Sync + 'static) -> UpBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        if tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        for i in 0.. {
            if tx.send(Bytes::from(next(i))).await.is_err() {
                return;
            }
        }
    });
    channel_body(rx)
}

fn sse(body: UpBody) -> Response<UpBody> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn json_body(status: u16, v: &Value) -> Response<UpBody> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// The hostile upstream: what it does depends on the model it is asked for.
async fn hostile(req: Request<Incoming>) -> Response<UpBody> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body: Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let model = body["model"].as_str().unwrap_or("").to_string();
    match model.as_str() {
        "flood-role" => sse(endless(
            chunk("m", 0, json!({"role": "assistant", "content": "a"})),
            |_| chunk("m", 0, json!({"role": "assistant"})),
        )),
        "flood-index" => sse(endless(
            chunk("m", 0, json!({"role": "assistant", "content": "a"})),
            |i| chunk("m", i + 1, json!({"content": "x"})),
        )),
        "big" => sse(endless(
            chunk("m", 0, json!({"role": "assistant", "content": "a"})),
            |_| chunk("m", 0, json!({"content": "z".repeat(16 * 1024)})),
        )),
        "echo-auth" => json_body(
            401,
            &json!({"error": {"message": format!("Incorrect API key provided: {auth}"), "code": "invalid_api_key"}}),
        ),
        "far-retry" => {
            let mut r = json_body(
                429,
                &json!({"error": {"message": "quota", "type": "rate_limit_error"}}),
            );
            r.headers_mut().insert(
                "retry-after",
                "Fri, 31 Dec 9999 23:59:59 GMT".parse().unwrap(),
            );
            r
        }
        // An endless, slow answer: a chunk every 20 ms.
        "slow" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                let _ = tx
                    .send(Bytes::from(chunk(
                        "m",
                        0,
                        json!({"role": "assistant", "content": "go"}),
                    )))
                    .await;
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if tx
                        .send(Bytes::from(chunk("m", 0, json!({"content": " on"}))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            sse(channel_body(rx))
        }
        // A finite answer that takes 600 ms: for the drain on SIGTERM.
        "finite" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                let _ = tx
                    .send(Bytes::from(chunk(
                        "m",
                        0,
                        json!({"role": "assistant", "content": "one"}),
                    )))
                    .await;
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx
                        .send(Bytes::from(chunk("m", 0, json!({"content": " more"}))))
                        .await;
                }
                let end = json!({"id": "h", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                let _ = tx
                    .send(Bytes::from(format!("data: {end}\n\ndata: [DONE]\n\n")))
                    .await;
            });
            sse(channel_body(rx))
        }
        _ => sse(BodyExt::boxed(Full::new(Bytes::from(format!(
            "{}{}data: [DONE]\n\n",
            chunk("m", 0, json!({"role": "assistant", "content": "pong"})),
            format_args!(
                "data: {}\n\n",
                json!({"id": "h", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            )
        ))))),
    }
}

async fn start_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(io),
                        hyper::service::service_fn(|r| async move {
                            Ok::<_, Infallible>(hostile(r).await)
                        }),
                    )
                    .await;
            });
        }
    });
    addr
}

fn config(upstream: SocketAddr) -> String {
    let mut c = String::from("model_list:\n");
    for m in [
        "ok",
        "big",
        "flood-role",
        "flood-index",
        "echo-auth",
        "far-retry",
        "slow",
        "finite",
    ] {
        c.push_str(&format!(
            "  - {{model_name: {m}, litellm_params: {{model: openai/{m}, api_base: \"http://{upstream}/v1\", api_key: os.environ/HOSTILE_UPSTREAM_KEY}}}}\n"
        ));
    }
    c.push_str(&format!(
        "router_settings: {{num_retries: 0, cooldown_time: 0}}\nkeys:\n  - {{key: {KEY}, key_alias: client-1}}\n\
         limits: {{max_connections: 32, max_overflow_connections: 64, max_upstream_body_bytes: 2097152, \
         client_write_timeout: 1, header_read_timeout: 8, body_read_timeout: 2, max_cooldown: 60, \
         shutdown_grace: 5}}\n"
    ));
    c
}

/// `switchback serve` as a child process, with its stderr collected.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    _dir: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

impl Gateway {
    fn start(name: &str, config: &str) -> Gateway {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/hostile-tests")
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchback"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .env("HOSTILE_UPSTREAM_KEY", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("switchback serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = err.read_to_string(&mut buf);
            sink.lock().unwrap().push_str(&buf);
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("serve prints its address");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        // Keep reading stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
        });
        Gateway {
            child,
            addr,
            stderr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status_field(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Open file descriptors (sockets included).
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Sends raw HTTP and returns what came back within `wait` (possibly nothing).
async fn exchange(addr: SocketAddr, request: &str, wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The response's head, read as soon as it is whole: a refused request's connection stays
/// open while the gateway reads and drops the rest of its body (`request_body::discard`).
async fn head_of(addr: SocketAddr, request: &str, wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = timeout(wait, async {
        let mut buf = [0u8; 1024];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn chat(model: &str, stream: bool, key: Option<&str>) -> String {
    let body =
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{auth}content-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Polls `cond` every 50 ms until it holds or `within` passes (real processes, real time).
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_and_upstreams_leave_the_gateway_bounded_and_healthy() {
    let upstream = start_upstream().await;
    let gw = Gateway::start("bounded", &config(upstream));
    let addr = gw.addr;
    // Warm up (first requests allocate the runtime's buffers), then take the baseline.
    for _ in 0..3 {
        let r = exchange(addr, &chat("ok", true, Some(KEY)), Duration::from_secs(5)).await;
        assert!(r.contains("pong"), "{r}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline_fds = gw.fds();

    // Secrets and far-future Retry-After never reach a client.
    let r = exchange(
        addr,
        &chat("echo-auth", false, Some(KEY)),
        Duration::from_secs(5),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(
        !r.contains(SECRET) && !r.contains("KEY-0042"),
        "secret leaked: {r}"
    );
    let r = exchange(
        addr,
        &chat("far-retry", false, Some(KEY)),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        r.to_ascii_lowercase().contains("retry-after: 60\r\n"),
        "{r}"
    );

    // Floods from the upstream end in a named limit, in both modes.
    for model in ["flood-role", "flood-index"] {
        for stream in [false, true] {
            let r = exchange(
                addr,
                &chat(model, stream, Some(KEY)),
                Duration::from_secs(10),
            )
            .await;
            assert!(
                r.contains("max_upstream_body_bytes") || r.contains("max_choices"),
                "{model} stream={stream}: {:.400}",
                r
            );
        }
    }

    // Clients that leave mid-stream, clients that stop reading, unauthenticated stallers.
    let mut held = Vec::new();
    for _ in 0..20 {}
    for _ in 0..10 {
        // Asks for a big answer and never reads it: the socket buffers fill, writes stall.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(chat("big", true, Some(KEY)).as_bytes())
            .await
            .unwrap();
        held.push(s);
    }
    for _ in 0..20 {
        // 401, not the 408 that waiting for the body (body_read_timeout = 2 s) would give.
        // The bound is generous: this checks the order of things, not speed.
        let r = head_of(
            addr,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-wrong\r\n\
             content-length: 1048576\r\n\r\n{\"model\":",
            Duration::from_secs(10),
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 401"),
            "refused before the body is read: {r:.200}"
        );
    }

    // The connection limit flooded with idle sockets: /health still answers at once.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Waiting in the backlog would take until the idle sockets time out (8 s).
    let r = exchange(
        addr,
        "GET /health HTTP/1.1\r\nhost: gw\r\n\r\n",
        Duration::from_secs(4),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "health under a connection flood: {r:.200}"
    );
    drop(idle);

    // What the readers that stopped held is released while they still hold their sockets:
    // they are cut after client_write_timeout = 1 s, their upstream connections with them.
    let back = eventually(Duration::from_secs(20), || gw.fds() <= baseline_fds + 2).await;
    assert!(
        back,
        "descriptors with the hostile sockets still open: baseline {baseline_fds}, now {}",
        gw.fds()
    );
    drop(held);
    let peak_kib = gw.status_field("VmHWM:");
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
    let r = exchange(addr, &chat("ok", false, Some(KEY)), Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "still serving: {r}");
    let stderr = gw.stderr.lock().unwrap().clone();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_stream_finish() {
    let upstream = start_upstream().await;
    let mut gw = Gateway::start("drain", &config(upstream));
    let addr = gw.addr;
    let stream = tokio::spawn(async move {
        exchange(
            addr,
            &chat("finite", true, Some(KEY)),
            Duration::from_secs(10),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let got = stream.await.unwrap();
    assert!(
        got.contains(" more") && got.contains("data: [DONE]"),
        "{got}"
    );
    let exited = eventually(Duration::from_secs(5), || {
        matches!(gw.child.try_wait(), Ok(Some(_)))
    })
    .await;
    assert!(exited, "the gateway exits after draining");
    let status = gw.child.try_wait().unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let stderr = gw.stderr.lock().unwrap().clone();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
