//! Contract tests of the upstream connection pool (`switchback::upstream::pool`) on real
//! sockets, against a raw HTTP/1.1 server this file scripts byte by byte, so that each test
//! decides exactly when the upstream answers, stalls or closes.
//!
//! Covers: a connection kept after a response read to its end and reused by the next
//! attempt (JSON, and a stream ended by `[DONE]`, whose chunked end is drained, for a second
//! at most); one closed by the upstream while idle, replaced by a new one with no failure; a
//! request that may have reached the upstream, never re-sent; an abandoned stream, whose
//! connection is closed and never kept; the per-host bound; the idle timeout; and a
//! server's shorter `Keep-Alive: timeout=`.
//!
//! Waits are for conditions (a count reaching a value), each bounded by [`attempts::PATIENCE`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchback::classify::TransportFault;
use switchback::transport::TcpConnector;
use switchback::upstream::client::{MAX_DRAIN_WAIT, UpstreamClient, UpstreamError};
use switchback::upstream::pool::{Pool, PoolLimits, UpstreamStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

mod attempts;
use attempts::{LIMITS, idle, until, whole_request};

const JSON_ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;

/// A keep-alive JSON response, with `extra` header lines.
fn json_response(extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{JSON_ANSWER}",
        JSON_ANSWER.len()
    )
    .into_bytes()
}

/// The head of a chunked SSE response, and one SSE event as a chunk.
const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn sse_chunk(data: &str) -> Vec<u8> {
    let event = format!("data: {data}\n\n");
    format!("{:x}\r\n{event}\r\n", event.len()).into_bytes()
}

const CHUNK: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#;

/// What the scripted server does with each request on a connection.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Json,
    /// One chunk, `[DONE]`, then the end of the chunked body.
    Stream,
    /// One chunk, then nothing (until the client closes).
    StallAfterOneChunk,
    /// Read the request, then close without answering.
    HangUpUnanswered,
    /// Answer as `Json`, then close the connection (without `Connection: close`).
    JsonThenClose,
    /// Answer as `Json`, saying `Keep-Alive: timeout=N` (N seconds).
    JsonKeepAlive(u64),
    /// One chunk, an error event (a 429 mid-stream, as vLLM and OpenAI send them), then the
    /// end of the chunked body.
    StreamThenErrorEvent,
    /// One chunk, `[DONE]`, then nothing: the chunked body is never ended (until the client
    /// closes).
    DoneThenStall,
}

/// A scripted upstream: accepts connections, reads each request head and body, and answers
/// with the next item of `answers` (the last one repeats).
struct Upstream {
    base: String,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(answers: Vec<Answer>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, r, c) = (accepted.clone(), requests.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (answers, r, c) = (answers.clone(), r.clone(), c.clone());
                tokio::spawn(async move {
                    serve(socket, answers, r).await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            base,
            accepted,
            requests,
            closed,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Serves one connection until either side closes it.
async fn serve(mut socket: TcpStream, answers: Vec<Answer>, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        // Read one request: its head, then `content-length` bytes of body.
        let whole = loop {
            if let Some(n) = whole_request(&buf) {
                break n;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..whole);
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let answer = answers[n.min(answers.len() - 1)];
        let written = match answer {
            Answer::Json | Answer::JsonThenClose => socket.write_all(&json_response("")).await,
            Answer::JsonKeepAlive(secs) => {
                let extra = format!("keep-alive: timeout={secs}\r\n");
                socket.write_all(&json_response(&extra)).await
            }
            Answer::Stream => {
                let mut out = SSE_HEAD.to_vec();
                out.extend(sse_chunk(CHUNK));
                out.extend(sse_chunk("[DONE]"));
                out.extend_from_slice(b"0\r\n\r\n");
                socket.write_all(&out).await
            }
            Answer::StreamThenErrorEvent => {
                let mut out = SSE_HEAD.to_vec();
                out.extend(sse_chunk(CHUNK));
                out.extend(sse_chunk(
                    r#"{"error":{"message":"rate limited","type":"rate_limit_error","code":429}}"#,
                ));
                out.extend_from_slice(b"0\r\n\r\n");
                socket.write_all(&out).await
            }
            Answer::StallAfterOneChunk | Answer::DoneThenStall => {
                let mut out = SSE_HEAD.to_vec();
                out.extend(sse_chunk(CHUNK));
                if matches!(answer, Answer::DoneThenStall) {
                    out.extend(sse_chunk("[DONE]"));
                }
                let _ = socket.write_all(&out).await;
                // Wait for the client to close.
                let mut sink = [0u8; 64];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Answer::HangUpUnanswered => return,
        };
        if written.is_err() || matches!(answer, Answer::JsonThenClose) {
            return;
        }
    }
}

fn client(limits: PoolLimits) -> UpstreamClient {
    UpstreamClient::new(Arc::new(TcpConnector), LIMITS, Pool::new(limits))
}

fn keep(max_idle_per_host: usize) -> PoolLimits {
    PoolLimits {
        max_idle_per_host,
        idle_timeout: Duration::from_secs(30),
        max_http2_streams: 100,
        http2_keep_alive: None,
    }
}

/// Runs one attempt against `base` (`http://host:port`) and reads it to its end.
async fn call(client: &UpstreamClient, base: &str) -> Result<String, UpstreamError> {
    attempts::call(client, &format!("{base}/v1"), None).await
}

#[tokio::test]
async fn a_json_answer_read_to_its_end_keeps_the_connection_for_the_next_attempt() {
    let up = Upstream::start(vec![Answer::Json]).await;
    let client = client(keep(8));
    for _ in 0..3 {
        assert_eq!(call(&client, &up.base).await.expect("served"), "hi");
    }
    assert_eq!(up.requests(), 3);
    assert_eq!(up.accepted(), 1, "three attempts, one connection");
    assert_eq!(idle(&client), 1);
    assert_eq!(client.pool().leased(), 0);
    // What `/metrics` says of it (`switchback_upstream_connections_*`).
    let stats = client.pool().stats();
    assert_eq!(
        stats.upstreams.get(&up.base),
        Some(&UpstreamStats {
            opened_http1: 1,
            opened_http2: 0,
            reused: 2,
            idle: 1,
        }),
        "{stats:?}"
    );
    assert_eq!((stats.resent_stale, stats.resent_unprocessed), (0, 0));
}

#[tokio::test]
async fn a_stream_ended_by_done_is_drained_and_its_connection_kept() {
    let up = Upstream::start(vec![Answer::Stream]).await;
    let client = client(keep(8));
    assert_eq!(call(&client, &up.base).await.expect("served"), "hi");
    // The end of the chunked body is read after `[DONE]`, in the background.
    until("the drained connection is kept", || idle(&client) == 1).await;
    assert_eq!(call(&client, &up.base).await.expect("served"), "hi");
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn pooling_off_opens_a_connection_per_attempt() {
    let up = Upstream::start(vec![Answer::Json]).await;
    let client = client(keep(0));
    call(&client, &up.base).await.expect("served");
    call(&client, &up.base).await.expect("served");
    assert_eq!(up.accepted(), 2);
    until("both connections closed", || up.closed() == 2).await;
    let stats = client.pool().stats().upstreams[&up.base];
    assert_eq!((stats.opened_http1, stats.reused, stats.idle), (2, 0, 0));
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_a_failure() {
    let up = Upstream::start(vec![Answer::JsonThenClose]).await;
    let client = client(keep(8));
    call(&client, &up.base).await.expect("served");
    until("the upstream closed its side", || up.closed() == 1).await;
    until("the pool saw the close", || idle(&client) == 0).await;
    assert_eq!(call(&client, &up.base).await.expect("served"), "hi");
    assert_eq!(up.accepted(), 2);
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn a_request_that_may_have_reached_the_upstream_is_never_sent_again() {
    // The second request is read by the upstream on the kept connection, which then closes
    // without answering: the upstream may have acted on it, so it must not be re-sent.
    let up = Upstream::start(vec![Answer::Json, Answer::HangUpUnanswered, Answer::Json]).await;
    let client = client(keep(8));
    call(&client, &up.base).await.expect("served");
    let err = call(&client, &up.base)
        .await
        .expect_err("the kept connection was closed");
    assert!(
        matches!(err, UpstreamError::Transport(TransportFault::Reset, _)),
        "{err:?}"
    );
    assert_eq!(up.requests(), 2, "the request was not re-sent");
    assert_eq!(up.accepted(), 1, "no second connection carried it");
}

#[tokio::test]
async fn an_abandoned_stream_closes_its_connection_and_never_keeps_it() {
    let up = Upstream::start(vec![Answer::StallAfterOneChunk, Answer::Json]).await;
    let client = client(keep(8));
    let mut stream = attempts::open(&client, &format!("{}/v1", up.base), None)
        .await
        .expect("opened");
    assert!(stream.next().await.expect("a chunk").is_some());
    assert_eq!(client.pool().leased(), 1);
    drop(stream);
    assert_eq!(client.pool().leased(), 0);
    until("the upstream saw the close", || up.closed() == 1).await;
    assert_eq!(idle(&client), 0, "a half-read connection is never kept");
    call(&client, &up.base).await.expect("served");
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn the_pool_keeps_at_most_its_bound_per_host() {
    let up = Upstream::start(vec![Answer::Json]).await;
    let client = client(keep(1));
    let (tx, mut rx) = mpsc::channel(3);
    for _ in 0..3 {
        let (client, base, tx) = (client.clone(), up.base.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(call(&client, &base).await.is_ok()).await;
        });
    }
    drop(tx);
    while let Some(ok) = rx.recv().await {
        assert!(ok);
    }
    assert!(idle(&client) <= 1, "kept {}", idle(&client));
    let accepted = up.accepted();
    until("connections past the bound closed", || {
        up.closed() == accepted - idle(&client)
    })
    .await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let up = Upstream::start(vec![Answer::Json]).await;
    let client = client(PoolLimits {
        max_idle_per_host: 8,
        idle_timeout: Duration::from_millis(50),
        max_http2_streams: 100,
        http2_keep_alive: None,
    });
    call(&client, &up.base).await.expect("served");
    assert_eq!(idle(&client), 1);
    until("the idle connection was closed", || up.closed() == 1).await;
    assert_eq!(idle(&client), 0);
}

#[tokio::test]
async fn a_connection_is_closed_before_its_server_said_it_closes_idle_ones() {
    // Node.js says `Keep-Alive: timeout=5` and closes idle connections after 5 s: a pool
    // keeping them for its own (longer) timeout sends requests onto connections the server
    // is closing, where they fail after they may have been read. Kept for 2 s - margin here.
    let up = Upstream::start(vec![Answer::JsonKeepAlive(2)]).await;
    let client = client(keep(8));
    call(&client, &up.base).await.expect("served");
    assert_eq!(idle(&client), 1, "kept while the server keeps it");
    // Well before our own 30 s (the wait is bounded by `attempts::PATIENCE`).
    until("closed before the server's timeout", || up.closed() == 1).await;
    assert_eq!(idle(&client), 0);
    call(&client, &up.base).await.expect("served");
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn a_connection_whose_server_keeps_it_no_longer_than_the_margin_is_not_kept() {
    let up = Upstream::start(vec![Answer::JsonKeepAlive(1)]).await;
    let client = client(keep(8));
    call(&client, &up.base).await.expect("served");
    assert_eq!(idle(&client), 0, "the server may close it any moment");
    until("closed at once", || up.closed() == 1).await;
}

#[tokio::test]
async fn idle_time_counts_from_the_end_of_the_response_not_from_when_the_attempt_let_go() {
    // The server's idle clock starts when it wrote the response's end. An attempt that holds
    // a finished answer (a slow client still reading it) must not make the connection look
    // fresher than it is.
    let up = Upstream::start(vec![Answer::Json]).await;
    let client = client(PoolLimits {
        idle_timeout: Duration::from_millis(200),
        ..keep(8)
    });
    let stream = attempts::open(&client, &format!("{}/v1", up.base), None)
        .await
        .expect("opened");
    // The JSON body was read whole when the attempt opened: its end is behind us. The wait
    // is the condition itself (time passing), not a stand-in for one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    assert_eq!(
        idle(&client),
        0,
        "idle for longer than the idle timeout already"
    );
    until("closed", || up.closed() == 1).await;
}

#[tokio::test]
async fn a_connection_kept_later_that_expires_sooner_is_closed_on_time() {
    // The pool's reaper already sleeps until the first connection expires (30 s); a second
    // upstream's connection, kept later, expires in 1 s (its server says `timeout=2`).
    let slow = Upstream::start(vec![Answer::Json]).await;
    let quick = Upstream::start(vec![Answer::JsonKeepAlive(2)]).await;
    let client = client(keep(8));
    call(&client, &slow.base).await.expect("served");
    call(&client, &quick.base).await.expect("served");
    assert_eq!(idle(&client), 2);
    until("the sooner one closed on time", || quick.closed() == 1).await;
    assert_eq!(idle(&client), 1, "the other is kept");
    assert_eq!(slow.closed(), 0);
}

#[test]
fn a_reaper_lost_with_its_runtime_is_started_again() {
    // `serve --workers`: the reaper runs on the runtime of whichever worker first kept a
    // connection. If that runtime goes, the next connection kept must start another, or
    // idle connections are never closed again.
    let lasting = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let up = lasting.block_on(Upstream::start(vec![Answer::Json]));
    let client = client(PoolLimits {
        idle_timeout: Duration::from_millis(200),
        ..keep(8)
    });
    let brief = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    brief.block_on(async { call(&client, &up.base).await.expect("served") });
    // The kept connection's task and the reaper go with their runtime.
    drop(brief);
    lasting.block_on(async {
        until("the first connection closed with its runtime", || {
            up.closed() == 1
        })
        .await;
        call(&client, &up.base).await.expect("served");
        until("the second one closed after the idle timeout", || {
            up.closed() == 2
        })
        .await;
    });
}

#[tokio::test]
async fn a_stream_ended_by_an_error_event_is_drained_and_its_connection_kept() {
    // The upstream said the answer is over (a mid-stream 429 event, then the body's end):
    // its connection is as good as one after `[DONE]`. Closing it cost the next attempt a
    // new connection (and, at 2,000 rps of mid-stream failures, the gateway its CPU).
    let up = Upstream::start(vec![Answer::StreamThenErrorEvent, Answer::Json]).await;
    let client = client(keep(8));
    let err = call(&client, &up.base)
        .await
        .expect_err("the error event fails the attempt");
    assert!(matches!(err, UpstreamError::ErrorEvent(_)), "{err:?}");
    until("the drained connection is kept", || idle(&client) == 1).await;
    assert_eq!(call(&client, &up.base).await.expect("served"), "hi");
    assert_eq!(up.accepted(), 1, "one connection for both");
}

#[tokio::test]
async fn a_body_left_open_after_done_is_closed_soon_not_drained_for_the_idle_timeout() {
    // The end of the body is read after `[DONE]` in the background, the connection counted
    // as leased meanwhile. Waiting for it as long as the stream's idle timeout (a minute by
    // default) held such an upstream's every connection for a minute: at hundreds of
    // requests per second, thousands of sockets.
    let up = Upstream::start(vec![Answer::DoneThenStall]).await;
    let client = client(keep(8));
    let mut stream = attempts::open_with(
        &client,
        &format!("{}/v1", up.base),
        None,
        Duration::from_secs(60),
    )
    .await
    .expect("opened");
    assert!(stream.next().await.expect("a chunk").is_some());
    assert!(stream.next().await.expect("[DONE]").is_none());
    drop(stream);
    assert_eq!(client.pool().leased(), 1, "draining");
    // The clock jumps by the drain's limit; the drain's wait is the only timer due.
    tokio::time::pause();
    tokio::time::advance(MAX_DRAIN_WAIT).await;
    tokio::time::resume();
    until("the drain gave up", || client.pool().leased() == 0).await;
    until("its connection was closed", || up.closed() == 1).await;
    assert_eq!(idle(&client), 0, "a body not ended is not kept");
}
