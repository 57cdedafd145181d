//! What a request in flight holds in memory: its connections' buffers, and no second read
//! buffer pinned by bytes the gateway kept. hyper's header values and body frames are
//! slices of the connection's read buffer, and hyper reads on (for the next event, or for
//! the client's end) into a buffer of its own while they live: whatever the gateway keeps
//! of them for the request's life costs 8 KiB more per request (an upstream's response
//! head kept by the attempt was about 4 MiB of the gateway's RSS with 1,000 concurrent
//! streams). Its own binary, for the counting allocator; the tests take turns
//! ([`SERIAL`]), since the count is the process's.
//!
//! The upstream client on real sockets, against a raw HTTP/1.1 upstream scripted byte by
//! byte; the whole gateway over the in-memory network of `support`, paused clock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use switchback::transport::TcpConnector;
use switchback::upstream::client::UpstreamClient;
use switchback::upstream::pool::{Pool, PoolLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

mod attempts;
mod support;
use attempts::{LIMITS, open, whole_request};
use support::{Gw, MemNet, ONE_GROUP, chat_body, chunk_json, frame, settle, sse_channel};

/// One test at a time: the allocation count is the whole process's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` on a current-thread runtime of its own (its clock paused or not), and drops
/// the runtime, with every task the test left, before the next test may count.
fn one_at_a_time<F: Future<Output = ()>>(paused: bool, test: impl FnOnce() -> F) {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .expect("a runtime");
    runtime.block_on(test());
}

/// hyper's buffers are 8 KiB: an allocation at least that large is one of them (or the
/// client's request channel block).
const LARGE: usize = 8 * 1024;

/// The system allocator, counting the allocations of at least [`LARGE`] bytes held now.
struct Counting;

static LARGE_HELD: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && layout.size() >= LARGE {
            LARGE_HELD.fetch_add(1, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        if layout.size() >= LARGE {
            LARGE_HELD.fetch_sub(1, Ordering::SeqCst);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `GlobalAlloc::realloc` requires, passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if layout.size() >= LARGE {
                LARGE_HELD.fetch_sub(1, Ordering::SeqCst);
            }
            if new_size >= LARGE {
                LARGE_HELD.fetch_add(1, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The head of the upstream's response: the headers a provider sends, among them some the
/// gateway forwards to its client (`x-request-id`, `x-ratelimit-*`).
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
transfer-encoding: chunked\r\nx-request-id: req-123\r\n\
x-ratelimit-remaining-requests: 99\r\nx-ratelimit-remaining-tokens: 9999\r\n\
openai-processing-ms: 12\r\nserver: fake\r\n\r\n";

fn sse_chunk(text: &str) -> Vec<u8> {
    let event = format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\
         \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
    );
    format!("{:x}\r\n{event}\r\n", event.len()).into_bytes()
}

/// Reads one request (head, then `content-length` bytes), answers with [`HEAD`] and a first
/// event, then one more event each time `next` changes, until the client closes.
async fn serve(mut socket: TcpStream, mut next: watch::Receiver<usize>) {
    let mut buf = Vec::new();
    while whole_request(&buf).is_none() {
        let mut chunk = [0u8; 1024];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut out = HEAD.to_vec();
    out.extend(sse_chunk("first"));
    if socket.write_all(&out).await.is_err() {
        return;
    }
    while next.changed().await.is_ok() {
        if socket.write_all(&sse_chunk("more")).await.is_err() {
            return;
        }
    }
}

#[test]
fn an_open_stream_holds_one_read_buffer_however_long_it_reads() {
    one_at_a_time(false, an_open_stream_holds_one_read_buffer);
}

async fn an_open_stream_holds_one_read_buffer() {
    const STREAMS: usize = 16;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_base = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let (next_tx, next_rx) = watch::channel(0usize);
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(socket, next_rx.clone()));
        }
    });
    let client = UpstreamClient::new(
        Arc::new(TcpConnector),
        LIMITS,
        Pool::new(PoolLimits {
            max_idle_per_host: 0,
            idle_timeout: Duration::from_secs(30),
            max_http2_streams: 100,
            http2_keep_alive: None,
        }),
    );

    // Nothing else allocates buffers this large: the scripted upstream reads into 1 KiB.
    let mut streams = Vec::with_capacity(STREAMS);
    let baseline = LARGE_HELD.load(Ordering::SeqCst);
    for _ in 0..STREAMS {
        let mut stream = open(&client, &api_base, None).await.expect("opened");
        let first = stream.next().await.expect("read").expect("a first chunk");
        assert_eq!(first.text, "first");
        // What the gateway passes on of the head survives it.
        let forwarded: Vec<(&str, &[u8])> = stream
            .forwarded_headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            forwarded,
            [
                ("x-request-id", &b"req-123"[..]),
                ("x-ratelimit-remaining-requests", b"99"),
                ("x-ratelimit-remaining-tokens", b"9999"),
                ("openai-processing-ms", b"12"),
            ]
        );
        streams.push(stream);
    }
    assert_eq!(served.load(Ordering::SeqCst), STREAMS, "a connection each");

    // An open HTTP/1.1 stream holds three buffers of hyper's: its connection's write buffer,
    // its read buffer, and the block of its client's request channel. Reading on must
    // reuse the read buffer, not allocate another beside one the attempt pins (that was 4
    // per stream). Under 3.5: the runtime may hold one or two large blocks of its own at
    // the moment of counting (seen under CPU load), never one per stream.
    let per_stream = |held: usize| (held - baseline) as f64 / STREAMS as f64;
    let opened = LARGE_HELD.load(Ordering::SeqCst);
    assert!(
        per_stream(opened) < 3.5,
        "{} buffers of 8 KiB or more per open stream after its first event",
        per_stream(opened)
    );
    for round in 1..=3 {
        next_tx.send(round).expect("the upstream listens");
        for stream in &mut streams {
            let more = stream.next().await.expect("read").expect("another chunk");
            assert_eq!(more.text, "more");
        }
        let now = LARGE_HELD.load(Ordering::SeqCst);
        assert!(
            per_stream(now) < 3.5,
            "round {round}: {} buffers of 8 KiB or more per open stream",
            per_stream(now)
        );
    }
}

/// A chat completion request as a client writes it, `stream` or not.
fn chat_request_bytes(stream: bool) -> Vec<u8> {
    let body = chat_body("g", stream).to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_request_in_flight_holds_the_same_buffers_in_both_modes() {
    one_at_a_time(true, same_buffers_in_both_modes);
}

async fn same_buffers_in_both_modes() {
    const REQUESTS: usize = 8;
    type Senders = Vec<mpsc::Sender<Result<Bytes, std::io::Error>>>;
    let answers: std::sync::Arc<std::sync::Mutex<Senders>> = Default::default();
    let net = MemNet::new();
    let upstream = answers.clone();
    // Each call's answer stays open: the test sends one event, then nothing.
    net.host("up", move |_| {
        let (tx, response) = sse_channel();
        upstream.lock().expect("answers").push(tx);
        response
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let event = Bytes::from(frame(&chunk_json("m", json!({"content": "hi"}), None)));

    // A first pass of each mode is not counted: what grows once (the trace, the runtime's
    // tables) has grown by the second.
    let mut held = Vec::new();
    for (pass, stream) in [(0, true), (0, false), (1, true), (1, false)] {
        let before = LARGE_HELD.load(Ordering::SeqCst);
        let mut clients = Vec::new();
        for _ in 0..REQUESTS {
            let mut pipe = gw.raw().await;
            pipe.write_all(&chat_request_bytes(stream))
                .await
                .expect("the gateway reads");
            clients.push(pipe);
        }
        let called = || answers.lock().expect("answers").len() == REQUESTS;
        assert!(
            settle(100, called).await,
            "every request reached the upstream"
        );
        let senders: Senders = std::mem::take(&mut *answers.lock().expect("answers"));
        for tx in &senders {
            tx.send(Ok(event.clone())).await.expect("the gateway reads");
        }
        // Paused time moves only once every task waits: all of it has happened.
        settle(10, || false).await;
        if pass == 1 {
            held.push(LARGE_HELD.load(Ordering::SeqCst) - before);
        }
        // Both ends go; the next mode starts from the same state.
        drop(clients);
        drop(senders);
        assert!(
            settle(100, || net.open() == 0).await,
            "upstream connections closed"
        );
        settle(10, || false).await;
    }
    // Equal, give or take a block of the runtime's own: a buffer pinned per request is
    // `REQUESTS` apart.
    assert!(
        held[0].abs_diff(held[1]) < REQUESTS / 2,
        "buffers of 8 KiB or more held by {REQUESTS} requests in flight, stream: {} and \
         non-stream: {}",
        held[0],
        held[1]
    );
}
