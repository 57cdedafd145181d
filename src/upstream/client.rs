//! The OpenAI-compatible upstream client: one attempt, as a stream of chunks.
//!
//! Owns: `POST {api_base}/chat/completions` over hyper 1.x on an injected [`Connector`] (its
//! target in the form each protocol wants: origin form and `Host` for HTTP/1.1, `:scheme`
//! and `:authority` for HTTP/2; its answer asked for uncompressed), the four timeouts
//! (first byte, first chunk, idle gap, whole attempt), reading an error body, reading SSE
//! incrementally (or a whole JSON body from an upstream that ignored `stream`; an answer
//! [`coding`] says is unreadable, not at all), and naming what went wrong as an
//! [`UpstreamError`]. An attempt takes a kept connection from the [`Pool`] or opens one
//! (HTTP/2 when an `https` upstream picks `h2` by ALPN, HTTP/1.1 otherwise); an HTTP/1.1 one
//! is kept again only when its response was read to the end, so an abandoned attempt closes
//! its socket and never leaves a half-read connection, while an abandoned HTTP/2 stream is
//! reset and its connection serves others. A kept connection found closed before the
//! request was written is replaced transparently, and a request an HTTP/2 server refused
//! unprocessed goes once more on a new connection; a request that may have reached the
//! upstream is never re-sent here. Does not own what a failure means for routing
//! (`classify`, `attempt`) nor how long connections are kept (`pool`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use crate::classify::{Failure, FailureClass, Signal, TimeoutKind, TransportFault, classify};
use crate::limits::LimitExceeded;
use crate::transport::{BoxIo, Connector};
use crate::upstream::Endpoint;
use crate::upstream::choices::ChoiceProgress;
use crate::upstream::chunk::{self, Chunk, ChunkError, ChunkLimits, Payload};
use crate::upstream::coding::{self, BodyForm, StreamStart, Unreadable};
use crate::upstream::first_frame::FirstFrameWatch;
use crate::upstream::pool::{
    Checkout, Conn, Http2Conn, Lease, NewConn, Pool, PoolKey, Resend, SettingsWait,
};
use crate::upstream::restatement::SpokenChoices;
use crate::upstream::sse::{SseEvent, SseParser};
use crate::upstream::tls::CaBundle;

/// Header carrying the gateway's request number to upstreams.
pub const REQUEST_ID_HEADER: &str = "x-switchback-request-id";

/// Times one request is sent again after an HTTP/2 upstream proved it did not process it
/// (a refused stream, a stream above a graceful GOAWAY). Once is enough for a server
/// shedding streams of a busy connection; a server refusing a fresh connection's first
/// stream is overloaded, and the attempt fails.
pub const MAX_UNPROCESSED_RESENDS: usize = 1;

/// Largest upstream error body read (the rest is ignored): enough for any error message.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Why an attempt failed, as the upstream showed it.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    Status {
        status: u16,
        headers: Box<HeaderMap>,
        body: Bytes,
    },
    ErrorEvent(Value),
    ContentFiltered,
    Transport(TransportFault, String),
    Timeout(TimeoutKind),
    Malformed(String),
    /// The answer went past a named limit (its size, its number of choices or tool calls).
    Limit(LimitExceeded),
}

impl From<ChunkError> for UpstreamError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::Malformed(m) => UpstreamError::Malformed(m),
            ChunkError::Limit(l) => UpstreamError::Limit(l),
        }
    }
}

impl UpstreamError {
    /// The failure class and details; `now` is the wall clock, for Retry-After dates.
    pub fn classify(&self, now: SystemTime) -> Failure {
        let mut failure = match self {
            UpstreamError::Status {
                status,
                headers,
                body,
            } => {
                // A body in a coding nothing here decodes says nothing (its bytes as text
                // are garbage): the status and headers (Retry-After) say what they say.
                let coded = crate::content_encoding::applied_coding(headers);
                let body = if coded.is_some() { &[][..] } else { body };
                let mut failure = classify(
                    Signal::Status {
                        status: *status,
                        headers,
                        body,
                    },
                    now,
                );
                if let Some(coding) = coded {
                    failure.message = format!(
                        "upstream returned HTTP {status} with its body in content-encoding \
                         `{coding}`, which the gateway does not decode"
                    );
                }
                failure
            }
            UpstreamError::ErrorEvent(v) => classify(Signal::ErrorEvent { error: v }, now),
            UpstreamError::ContentFiltered => classify(Signal::ContentFiltered, now),
            UpstreamError::Transport(fault, _) => classify(Signal::Transport(*fault), now),
            UpstreamError::Timeout(kind) => classify(Signal::Timeout(*kind), now),
            UpstreamError::Malformed(_) => classify(Signal::Malformed, now),
            UpstreamError::Limit(limit) => {
                Failure::new(FailureClass::Malformed, format!("upstream answer: {limit}"))
            }
        };
        // Transport details (host, port, OS error) stay out: they describe the gateway's
        // internals, and the client's message goes out as is.
        if let UpstreamError::Malformed(detail) = self {
            failure.message = format!("{}: {detail}", failure.message);
        }
        failure
    }

    /// The named limit this error hit, if it is one.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            UpstreamError::Limit(l) => Some(l.name),
            _ => None,
        }
    }

    pub fn timeout_kind(&self) -> Option<TimeoutKind> {
        match self {
            UpstreamError::Timeout(k) => Some(*k),
            _ => None,
        }
    }
}

/// Bounds of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeouts {
    /// Longest wait between chunks once the answer has given output (any byte counts as
    /// activity, so keep-alive comments keep a thinking model alive).
    pub stream_timeout: Duration,
    /// Longest wait for response headers and for the answer's first output, bytes before
    /// it resetting the wait as above: `stream_timeout` when some level or the deployment
    /// sets one, else none but `deadline`. A reasoning model thinks in silence: OpenAI's
    /// chat completions send nothing, not even the role chunk, until it has thought (and a
    /// gateway in front of it, LiteLLM or Switchback, not even headers), often for minutes.
    /// Under a default 60 s that no one chose, every such answer was cut, re-asked (and
    /// billed) as many times as the retries allowed, and its deployment cooled.
    pub until_output: Duration,
    /// The attempt ends here whatever happens (its `timeout`, capped by the request deadline),
    /// unless the gateway waits on its client: see [`UpstreamStream::next`].
    pub deadline: Instant,
    /// The request's own deadline: `deadline` never moves past it.
    pub request_deadline: Instant,
}

/// Size bounds of what an upstream may send.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub max_sse_line_bytes: usize,
    /// Every byte of an answer's body counts, SSE comments and content-less chunks included.
    pub max_body_bytes: usize,
    pub chunks: ChunkLimits,
}

/// Opens attempts against upstreams through a connector.
#[derive(Clone)]
pub struct UpstreamClient {
    connector: Arc<dyn Connector>,
    limits: ClientLimits,
    tls: crate::upstream::tls::TrustConfig,
    pool: Pool,
}

/// One upstream call to make.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub endpoint: &'a Endpoint,
    /// The model the body names: Azure's deployments API also names it in the path.
    pub model: &'a str,
    pub api_key: Option<&'a str>,
    pub body: &'a Bytes,
    /// The gateway's request number, sent as `x-switchback-request-id` for correlation.
    pub request_id: u64,
    /// Whether the body asks for a stream (`stream: true`); otherwise the answer is one
    /// JSON completion.
    pub stream: bool,
    /// The deployment's own CA bundle for `https` (none: the Mozilla roots).
    pub ca_bundle: Option<&'a CaBundle>,
}

/// Everything but the key's text (see [`crate::secret`]).
impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("endpoint", self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.api_key.map(|_| crate::redact::REDACTED))
            .field("body_bytes", &self.body.len())
            .field("request_id", &self.request_id)
            .field("stream", &self.stream)
            .field("ca_bundle", &self.ca_bundle.is_some())
            .finish()
    }
}

impl UpstreamClient {
    pub fn new(connector: Arc<dyn Connector>, limits: ClientLimits, pool: Pool) -> UpstreamClient {
        UpstreamClient {
            connector,
            limits,
            tls: crate::upstream::tls::client_config(),
            pool,
        }
    }

    /// The same client, keeping its connections in `pool`.
    pub fn with_pool(mut self, pool: Pool) -> UpstreamClient {
        self.pool = pool;
        self
    }

    /// The connections this client keeps between attempts.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Sends the request and waits for the response head. A non-success status is read
    /// (bounded) and returned as [`UpstreamError::Status`].
    pub async fn open(
        &self,
        call: Call<'_>,
        timeouts: AttemptTimeouts,
    ) -> Result<UpstreamStream, UpstreamError> {
        // `stream_timeout` bounds a streamed call's waits, as LiteLLM's does: a call for one
        // JSON completion (`fake_stream`) gets its head only once the whole answer is
        // written, so only the attempt's `timeout` bounds it. Under `stream_timeout` it
        // could never serve an answer that takes longer to write (a reasoning model's).
        let mut timeouts = timeouts;
        if !call.stream {
            timeouts.stream_timeout = Duration::MAX;
            timeouts.until_output = Duration::MAX;
        }
        let first_byte = Wait::new(
            Instant::now(),
            timeouts.until_output,
            timeouts,
            TimeoutKind::FirstByte,
        );
        let (response, mut lease) = timeout_at(first_byte.at, self.send(call))
            .await
            .map_err(|_| UpstreamError::Timeout(first_byte.kind))??;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        if !lease.is_http2() {
            lease.server_said(&parts.headers);
        }
        let mut stream = UpstreamStream {
            body: Some(body),
            parser: SseParser::new(self.limits.max_sse_line_bytes),
            queue: VecDeque::new(),
            timeouts,
            last_activity: Instant::now(),
            unread_since: None,
            got_chunk: false,
            got_output: false,
            choices: ChoiceProgress::default(),
            spoken: SpokenChoices::default(),
            done: false,
            upstream_ended: false,
            received: 0,
            values: 0,
            limits: self.limits,
            forwarded: Vec::new(),
            lease: Some(lease),
            unconfirmed: None,
            whole_json: None,
            talking: None,
        };
        if !(200..300).contains(&status) {
            let body = stream.read_all(MAX_ERROR_BODY_BYTES, true).await?;
            return Err(UpstreamError::Status {
                status,
                headers: Box::new(parts.headers),
                body,
            });
        }
        // A body nothing here can read is refused before a byte of it is: the connection
        // closes with the stream, and not one chunk of it reaches the client.
        let form = coding::success_body(&parts.headers, call.stream)
            .map_err(|unreadable| UpstreamError::Malformed(unreadable.to_string()))?;
        stream.forwarded = forwarded_copies(&parts.headers);
        drop(parts);
        if let BodyForm::Labelled(label) = form {
            stream.unconfirmed = Some(Unconfirmed {
                label: Some(label),
                first: Vec::new(),
            });
        } else if form == BodyForm::Unlabelled {
            stream.unconfirmed = Some(Unconfirmed {
                label: None,
                first: Vec::new(),
            });
        } else if form == BodyForm::Json {
            let body = stream.read_all(self.limits.max_body_bytes, false).await?;
            if call.stream && coding::reads_as_event_stream(&body) {
                // An event stream labelled `application/json` (some gateways send one; the
                // SDKs read a streamed answer whatever its label): read as what it is, once
                // whole. Its end is judged as any stream's (`[DONE]`, or a finish).
                stream.ingest(&body);
            } else {
                let payload = chunk::from_completion(&body, &self.limits.chunks)?;
                stream.queue_payload(payload)?;
            }
        }
        Ok(stream)
    }

    async fn send(
        &self,
        call: Call<'_>,
    ) -> Result<(http::Response<Incoming>, Lease), UpstreamError> {
        let endpoint = call.endpoint;
        let key = PoolKey {
            worker: crate::upstream::pool::worker(),
            tls: endpoint.tls,
            host: endpoint.host.clone(),
            port: endpoint.port,
            ca_bundle: call.ca_bundle.map(|b| b.path.clone()),
        };
        let mut request = build_request(call)?;
        // Pooled connections tried for this request: each one found closed is dropped, so
        // the bound only matters if other attempts keep returning stale ones.
        let mut stale = 0;
        // Requests the server proved it did not process (HTTP/2 only), sent again; once one
        // was, the request goes on a connection of its own.
        let mut unprocessed = 0;
        // Dials of other attempts this one waited for.
        let mut waits = 0;
        loop {
            let checkout = if stale <= self.pool.limits().max_idle_per_host && unprocessed == 0 {
                self.pool
                    .checkout(&key, call.request_id, waits < MAX_DIAL_WAITS)
            } else {
                Checkout::Open(None)
            };
            let mut lease = match checkout {
                Checkout::Kept(lease) => lease,
                // A wake-up follows a dial that ended, or the wait's bound (a dial that
                // hangs: a server that never sends its SETTINGS): this attempt then finds
                // room, opens the next connection itself, or waits for the one another
                // attempt has begun, up to MAX_DIAL_WAITS times. All of it within the
                // first-byte timeout around this call.
                Checkout::Wait(waiting) => {
                    waiting.until_woken().await;
                    waits += 1;
                    continue;
                }
                Checkout::Open(dial) => {
                    let conn = self.connect(endpoint, call.ca_bundle).await?;
                    self.pool
                        .lease_new(key.clone(), call.request_id, conn, dial)
                }
            };
            // A kept connection is ready once hyper's driver has seen the end of its last
            // response; an error here means the upstream closed it while it was idle.
            if lease.reused() && lease.ready().await.is_err() {
                stale += 1;
                self.pool.count_resend(Resend::StaleConnection);
                continue;
            }
            aim(&mut request, lease.is_http2(), endpoint)?;
            match lease.try_send(request).await {
                Ok(response) => return Ok((response, lease)),
                Err(mut e) => match e.take_message() {
                    // hyper gives the request back only when no byte of it was written:
                    // the upstream cannot have seen it, so another connection may carry it.
                    // A request that may have been sent is never re-sent here; it fails
                    // the attempt like any other transport failure.
                    Some(unsent) if lease.reused() => {
                        stale += 1;
                        self.pool.count_resend(Resend::StaleConnection);
                        request = unsent;
                    }
                    _ => {
                        let error = e.into_error();
                        // HTTP/2 says when the server did not process a stream (a refused
                        // stream, RFC 9113 §8.7; a stream above a graceful GOAWAY, §6.8): it
                        // may go again, on another connection.
                        if lease.is_http2()
                            && unprocessed < MAX_UNPROCESSED_RESENDS
                            && never_processed(&error)
                        {
                            unprocessed += 1;
                            self.pool.count_resend(Resend::NotProcessed);
                            request = build_request(call)?;
                            continue;
                        }
                        return Err(UpstreamError::Transport(
                            TransportFault::Reset,
                            error.to_string(),
                        ));
                    }
                },
            }
        }
    }

    /// Opens a new connection to `endpoint`: TCP through the connector, TLS for https
    /// (whose ALPN decides between HTTP/2 and HTTP/1.1), and hyper's handshake, with the
    /// task that drives it.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        ca_bundle: Option<&CaBundle>,
    ) -> Result<NewConn, UpstreamError> {
        let io = self
            .connector
            .connect(&endpoint.host, endpoint.port)
            .await
            .map_err(|e| {
                let fault = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    TransportFault::ConnectRefused
                } else if is_local_resource(&e) {
                    TransportFault::LocalResource
                } else {
                    TransportFault::ConnectFailed
                };
                UpstreamError::Transport(fault, format!("{}: {e}", endpoint.host_port()))
            })?;
        let (io, http2) = if endpoint.tls {
            let trust = ca_bundle.map_or(&self.tls, |b| &b.config);
            let wrapped = crate::upstream::tls::wrap(
                trust.alpn(self.pool.offers_http2()),
                &endpoint.host,
                io,
            )
            .await
            .map_err(|e| {
                let detail = format!("{}: TLS: {e}", endpoint.host_port());
                UpstreamError::Transport(TransportFault::Tls, detail)
            })?;
            (wrapped.io, wrapped.http2)
        } else {
            (io, false)
        };
        let handshake_failed = |e: hyper::Error| {
            UpstreamError::Transport(TransportFault::ConnectFailed, e.to_string())
        };
        if http2 {
            let limits = self.pool.limits();
            return connect_http2(io, limits.max_http2_streams, limits.http2_keep_alive)
                .await
                .map_err(handshake_failed);
        }
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(io))
                .await
                .map_err(handshake_failed)?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(NewConn::Http1(Conn::new(sender, task)))
    }
}

/// Bytes an HTTP/2 upstream may send on one stream ahead of the gateway reading them (its
/// flow-control window): enough for a whole typical answer, and for 20 MB/s per stream at
/// 50 ms of round trip.
const HTTP2_STREAM_WINDOW: u32 = 1 << 20;

/// The connection's window: room for every stream's window at once, so that streams whose
/// clients read slowly cannot stall the others on the connection (with hyper's default of
/// 5 MiB, three unread streams would). It bounds memory too: at most `max_streams` full
/// windows are ever held unread.
fn http2_connection_window(max_streams: usize) -> u32 {
    // HTTP/2 windows are at most 2^31 - 1 (RFC 9113 §6.9.1).
    const MAX_WINDOW: u64 = (1 << 31) - 1;
    let all = u64::from(HTTP2_STREAM_WINDOW).saturating_mul(max_streams.max(1) as u64);
    u32::try_from(all.min(MAX_WINDOW)).expect("at most 2^31 - 1")
}

/// How many connections other attempts open an attempt waits for before it opens one of its
/// own. A burst then opens the connections it needs mostly one at a time (8 attempts at 2
/// streams per connection: 4 connections), yet no attempt queues behind more than a few
/// handshakes when they are slow or the upstream allows few streams per connection.
const MAX_DIAL_WAITS: usize = 4;

/// hyper's HTTP/2 handshake over a TLS connection whose server picked `h2`, and the task
/// that dispatches its requests (hyper drives the socket itself, in a task it spawns).
async fn connect_http2(
    io: BoxIo,
    max_streams: usize,
    keep_alive: Option<Duration>,
) -> Result<NewConn, hyper::Error> {
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(http2_connection_window(max_streams));
    if let Some(every) = keep_alive {
        // A dead connection ends its dispatcher, which is what the pool sees as closed.
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(every)
            .keep_alive_timeout(every)
            .keep_alive_while_idle(true);
    }
    let settings = SettingsWait::default();
    let told = settings.clone();
    let io = FirstFrameWatch::new(io, Box::new(move || told.known()));
    let (sender, conn) = builder
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await?;
    // The dispatcher is shared with the pool, which reads the server's current
    // SETTINGS_MAX_CONCURRENT_STREAMS from it when it decides whether the connection has
    // room for one more stream (hyper would queue that stream until one ends). It is
    // dropped as soon as it ends, which is what marks the connection closed.
    let conn = Arc::new(std::sync::Mutex::new(Some(Box::pin(conn))));
    let polled = conn.clone();
    let task = tokio::spawn(std::future::poll_fn(move |cx| {
        // Only a panic inside hyper's poll could poison the lock (and a panic ends the
        // process in release).
        let mut slot = polled.lock().expect("HTTP/2 dispatcher lock poisoned");
        let Some(conn) = slot.as_mut() else {
            return std::task::Poll::Ready(());
        };
        let ended = conn.as_mut().poll(cx).is_ready();
        if ended {
            *slot = None;
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }));
    let server_limit = Box::new(move || {
        // (See above for the lock.)
        conn.lock()
            .expect("HTTP/2 dispatcher lock poisoned")
            .as_ref()
            .map_or(0, |conn| conn.current_max_send_streams())
    });
    Ok(NewConn::Http2(
        Http2Conn::new(sender, server_limit, settings.known_flag(), task),
        settings,
    ))
}

/// Whether an HTTP/2 request failed in a way that proves the server did not process it:
/// - it refused the stream (REFUSED_STREAM, RFC 9113 §8.7);
/// - a graceful GOAWAY (NO_ERROR) left it out: h2 fails a stream with the GOAWAY's own
///   error only when its id is above the GOAWAY's last stream id, or when it was opened
///   after the GOAWAY arrived, and neither was processed (RFC 9113 §6.8). A stream at or
///   below that id runs to its end, or fails with the connection (a broken pipe), never
///   with this error.
///
/// A GOAWAY with an error code proves nothing: when the connection then ends, h2 fails the
/// streams below its last stream id with the same error, and those may have been
/// processed. So it counts as a failure like any other: a request that may have reached
/// the upstream is never sent again here.
fn never_processed(error: &hyper::Error) -> bool {
    let Some(h2) = std::error::Error::source(error).and_then(|s| s.downcast_ref::<h2::Error>())
    else {
        return false;
    };
    let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
    let left_out_by_graceful_goaway = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
    h2.is_remote() && (refused || left_out_by_graceful_goaway)
}

/// Where a request goes, in the form each protocol wants: HTTP/1.1 an origin-form target
/// and a `Host` header (RFC 9112 §3.2), HTTP/2 the scheme and authority in the URI, which
/// hyper passes on as `:scheme` and `:authority` (RFC 9113 §8.3.1). Given a path-only URI,
/// h2 sends `:scheme: http` and no `:authority` (a `Host` header is no substitute there),
/// over TLS. A request may go on either kind of connection (a kept HTTP/1.1 one found
/// closed, then a new one that speaks HTTP/2), so it is aimed anew at each send, as
/// hyper-util's own client does. Only a request that changes kind is touched: one built
/// for HTTP/1.1 (the common case) and sent on HTTP/1.1 costs nothing here.
fn aim(
    request: &mut Request<Full<Bytes>>,
    http2: bool,
    endpoint: &Endpoint,
) -> Result<(), UpstreamError> {
    let unusable = |e: &dyn std::fmt::Display| {
        UpstreamError::Transport(
            TransportFault::ConnectFailed,
            format!("{endpoint}: not a request target: {e}"),
        )
    };
    let absolute = request.uri().scheme().is_some();
    if http2 && !absolute {
        let scheme = if endpoint.tls { "https" } else { "http" };
        *request.uri_mut() = format!("{scheme}://{}{}", endpoint.authority(), request.uri())
            .parse()
            .map_err(|e| unusable(&e))?;
        // `:authority` says it; RFC 9113 §8.3.1 would have a `Host` sent along agree.
        request.headers_mut().remove(header::HOST);
    } else if !http2 && absolute {
        let origin = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| unusable(&e))?;
        *request.uri_mut() = origin;
        let host = HeaderValue::from_str(&endpoint.authority()).map_err(|e| unusable(&e))?;
        // Appended: it was first, and HTTP/2 took it out.
        request.headers_mut().insert(header::HOST, host);
    }
    Ok(())
}

/// The upstream request of one call (its target is set per connection, by [`aim`]).
fn build_request(call: Call<'_>) -> Result<Request<Full<Bytes>>, UpstreamError> {
    let endpoint = call.endpoint;
    let mut request = Request::post(endpoint.chat_completions_path(call.model))
        // First, as RFC 9110 §7.2 asks of HTTP/1.1; taken out for HTTP/2.
        .header(header::HOST, endpoint.authority())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::ACCEPT,
            if call.stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        )
        // The body as it is: without this an upstream, or a proxy on the way, may compress
        // the answer (RFC 9110 §12.5.3: no Accept-Encoding means any coding is acceptable),
        // and nothing here decodes one. A client's own `accept-encoding` is its business
        // with the gateway and is never forwarded.
        .header(header::ACCEPT_ENCODING, "identity")
        .header(REQUEST_ID_HEADER, call.request_id)
        .body(Full::new(call.body.clone()))
        .map_err(|e| UpstreamError::Transport(TransportFault::ConnectFailed, e.to_string()))?;
    if let Some(key) = call.api_key {
        let (name, value) = if endpoint.takes_api_key_header() {
            (HeaderName::from_static("api-key"), key.to_string())
        } else {
            (header::AUTHORIZATION, format!("Bearer {key}"))
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            UpstreamError::Transport(
                TransportFault::ConnectFailed,
                "api_key is not a valid header value".into(),
            )
        })?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
    }
    Ok(request)
}

/// Whether a connect error is the gateway's own shortage (descriptors, memory, buffers,
/// ephemeral ports) rather than anything the upstream did. `serve`'s connector reports
/// `AddrNotAvailable` for a name only when every one of its addresses failed so (see
/// `dns::how_telling`): one address family off in a container is not a shortage.
fn is_local_resource(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::OutOfMemory | ErrorKind::AddrNotAvailable
    ) {
        return true;
    }
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the numbers differ between systems.
    #[cfg(target_os = "linux")]
    const CODES: &[i32] = &[24, 23, 105, 12, 99];
    #[cfg(target_vendor = "apple")]
    const CODES: &[i32] = &[24, 23, 55, 12, 49];
    #[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
    const CODES: &[i32] = &[];
    e.raw_os_error().is_some_and(|c| CODES.contains(&c))
}

/// The deadline of one wait and the timeout it reports when it fires.
struct Wait {
    at: Instant,
    kind: TimeoutKind,
}

impl Wait {
    /// A wait of at most `limit` from `from`, and never past the attempt's deadline.
    fn new(from: Instant, limit: Duration, t: AttemptTimeouts, kind: TimeoutKind) -> Wait {
        match from.checked_add(limit) {
            Some(own) if own < t.deadline => Wait { at: own, kind },
            _ => Wait {
                at: t.deadline,
                kind: TimeoutKind::Attempt,
            },
        }
    }
}

/// The body of a successful response, read chunk by chunk.
pub struct UpstreamStream {
    /// Taken only on drop (to drain it in the background).
    body: Option<Incoming>,
    parser: SseParser,
    queue: VecDeque<Result<Payload, ChunkError>>,
    timeouts: AttemptTimeouts,
    last_activity: Instant,
    /// Since when the gateway has not read the upstream's body: set when
    /// [`UpstreamStream::next`] hands a chunk out, cleared at the next read (see there).
    unread_since: Option<Instant>,
    got_chunk: bool,
    /// A chunk with output came: from then on the waits are `stream_timeout`'s.
    got_output: bool,
    /// Which choices have finished: a body that ends without `[DONE]` is a complete answer
    /// only once every choice it named has.
    choices: ChoiceProgress,
    /// Which choices have had deltas: a later `message` alone restates them (MiniMax).
    spoken: SpokenChoices,
    done: bool,
    /// The upstream said the answer is over: `[DONE]`, or an error event (what follows in
    /// the body is drained on drop, and the connection kept if the body ends cleanly).
    upstream_ended: bool,
    /// Body bytes read so far, whatever they were (data, comments, padding).
    received: usize,
    /// JSON values in the chunks handed out so far (`max_upstream_json_values`).
    values: usize,
    limits: ClientLimits,
    /// The response's headers on the [`FORWARDED_HEADERS`] list, copied: the head itself is
    /// not kept (see [`forwarded_copies`]).
    forwarded: Vec<(HeaderName, HeaderValue)>,
    /// The connection, until the stream is dropped: back to the pool if its body was read
    /// to the end, closed otherwise.
    lease: Option<Lease>,
    /// A streamed answer labelled neither an event stream nor JSON, or not labelled, until
    /// its first bytes say what it is.
    unconfirmed: Option<Unconfirmed>,
    /// An unlabelled answer whose first bytes began a JSON object: its bytes so far, parsed
    /// as one completion at its end, as a JSON-labelled answer is.
    whole_json: Option<Vec<u8>>,
    /// Called when a read brings bytes but no chunk (see
    /// [`UpstreamStream::when_talking_without_chunks`]).
    talking: Option<Box<dyn Fn() + Send + Sync>>,
}

/// A streamed answer under another label ([`BodyForm::Labelled`]) or none
/// ([`BodyForm::Unlabelled`]): its label, and its first bytes, held (at most
/// [`coding::MAX_STREAM_START_BYTES`] and a read) until they say what it is.
struct Unconfirmed {
    label: Option<String>,
    first: Vec<u8>,
}

impl Unconfirmed {
    /// Why an answer under this label whose first bytes are no event stream is unreadable.
    fn unreadable(label: Option<String>) -> String {
        match label {
            Some(label) => Unreadable::Labelled(label).to_string(),
            None => Unreadable::Unlabelled.to_string(),
        }
    }
}

/// Upstream response headers passed on to the client (from the committing attempt): the
/// provider's request id, its rate-limit state (every `x-ratelimit-*`: a name ending in `-`
/// is a prefix) and its processing time. The others are names: `x-request-id-anything` is
/// not the request id, and an upstream must not choose what else reaches the client.
pub const FORWARDED_HEADERS: &[&str] = &["x-request-id", "x-ratelimit-", "openai-processing-ms"];

/// Whether `name` is on the [`FORWARDED_HEADERS`] list.
pub fn is_forwarded(name: &str) -> bool {
    FORWARDED_HEADERS.iter().any(|f| {
        if f.ends_with('-') {
            name.starts_with(f)
        } else {
            name == *f
        }
    })
}

/// The headers on the [`FORWARDED_HEADERS`] list, in values of their own. hyper's header
/// values are slices of the connection's read buffer, so an attempt that kept the response
/// head (or clones of its values) for as long as its stream lasts would pin that 8 KiB
/// buffer, and hyper's next read would allocate another: 8 KiB more per open stream,
/// about 8 MiB of 1,000 concurrent streams (measured with massif; see the README).
fn forwarded_copies(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| is_forwarded(name.as_str()))
        .filter_map(|(name, value)| {
            // The same bytes hyper accepted as a header value: valid again.
            let mut copy = HeaderValue::from_bytes(value.as_bytes()).ok()?;
            copy.set_sensitive(value.is_sensitive());
            Some((name.clone(), copy))
        })
        .collect()
}

/// Most bytes read after `[DONE]` (or an error event) to reach the end of the body, so
/// that the connection can be kept (a well-behaved upstream sends only the end of the
/// chunked body).
pub const MAX_DRAIN_BYTES: usize = 16 * 1024;

/// Longest wait for the end of the body after `[DONE]` (or an error event); past it, the
/// connection is closed. A well-behaved upstream ends the body at once; one that keeps it
/// open would otherwise hold the connection, counted as leased, for the stream's idle
/// timeout (a minute by default): at hundreds of requests per second, thousands of sockets.
pub const MAX_DRAIN_WAIT: Duration = Duration::from_secs(1);

impl Drop for UpstreamStream {
    fn drop(&mut self) {
        let (Some(body), Some(lease)) = (self.body.take(), self.lease.take()) else {
            return;
        };
        // Only a stream whose upstream ended it (`[DONE]`, or an error event: the upstream
        // stopped generating either way) is worth keeping: its body has nothing left but
        // the end of the chunked encoding, which usually arrives at once. Anything else (a
        // client gone, a timeout, a malformed chunk, a limit) drops the connection here,
        // which also tells the upstream to stop.
        if lease.is_reusable() || !self.upstream_ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Bounded from now, not by the attempt's deadline: the drain is about the
        // connection, and a stream dropped late (its client slow to take the last chunks)
        // would find that deadline past and close a connection the other mode keeps.
        let until = Instant::now() + MAX_DRAIN_WAIT.min(self.timeouts.stream_timeout);
        runtime.spawn(drain(body, lease, until));
    }
}

/// Reads what is left of a body (at most [`MAX_DRAIN_BYTES`], until `until`: at most
/// [`MAX_DRAIN_WAIT`]) and keeps the connection if the body ends cleanly.
async fn drain(mut body: Incoming, mut lease: Lease, until: Instant) {
    let mut left = MAX_DRAIN_BYTES;
    loop {
        match timeout_at(until, body.frame()).await {
            Ok(None) => {
                lease.reusable();
                return;
            }
            Ok(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len());
                if n > left {
                    return;
                }
                left -= n;
            }
            Ok(Some(Err(_))) | Err(_) => return,
        }
    }
}

impl UpstreamStream {
    /// Moves the attempt's clocks on by `held`, time the upstream is not to answer for.
    fn hold_clocks(&mut self, held: Duration) {
        if held.is_zero() {
            return;
        }
        self.last_activity += held;
        let t = &mut self.timeouts;
        t.deadline = t
            .deadline
            .checked_add(held)
            .map_or(t.request_deadline, |d| d.min(t.request_deadline))
            .max(t.deadline);
    }

    /// Moves the attempt's deadline on to `deadline` and the request's to
    /// `request_deadline` (never back): the response began, and a client's wait for its
    /// beginning (`client_timeout`) no longer bounds it.
    pub fn lift_deadline(&mut self, deadline: Instant, request_deadline: Instant) {
        let t = &mut self.timeouts;
        t.request_deadline = t.request_deadline.max(request_deadline);
        t.deadline = t.deadline.max(deadline.min(t.request_deadline));
    }

    /// Calls `talking` whenever a read brings bytes that complete no chunk: keep-alive
    /// comments while the provider thinks (OpenRouter's `: OPENROUTER PROCESSING`), or the
    /// first part of a long line. The provider is alive; the attempt loop passes that on to
    /// a streaming client.
    pub fn when_talking_without_chunks(&mut self, talking: impl Fn() + Send + Sync + 'static) {
        self.talking = Some(Box::new(talking));
    }

    /// The next chunk, `Ok(None)` at the end (`[DONE]`, or a clean end after a finish
    /// reason when `[DONE]` is missing), or why the stream failed.
    ///
    /// The time the gateway spent away from the upstream (handing chunks to its client) is
    /// not charged to the upstream when the upstream was ahead of it: when its next bytes
    /// are already waiting at the first read after, the attempt's clocks (its `timeout` and
    /// the idle timer) move on by that time. Why: a streaming client that reads slowly holds
    /// the gateway's writes up, where a non-streaming one never does; charged, that time
    /// timed an upstream that was keeping up out in one mode only, blamed on the
    /// deployment, and changed what the two modes called upstream. When nothing is waiting,
    /// the upstream was behind on its own, as it would have been for a non-streaming
    /// client, and nothing moves. The request deadline still bounds the whole.
    pub async fn next(&mut self) -> Result<Option<Chunk>, UpstreamError> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                match item? {
                    Payload::Done => {
                        self.done = true;
                        self.upstream_ended = true;
                        self.queue.clear();
                        // An answer of nothing is no answer: served, it was a 200 with no
                        // choice in it (the SDKs fail on `choices[0]`), and the deployment
                        // counted healthy. So is one whose chunks never named a choice
                        // (`choices: []` and a usage: OpenRouter's free endpoints, Gemini's
                        // empty turns).
                        if !self.got_chunk {
                            return Err(UpstreamError::Malformed(
                                "the stream ended ([DONE]) before its first chunk".to_string(),
                            ));
                        }
                        if !self.choices.named_any() {
                            return Err(UpstreamError::Malformed(
                                "the answer ended without naming a choice".to_string(),
                            ));
                        }
                        return Ok(None);
                    }
                    Payload::Error(v) => {
                        self.upstream_ended = true;
                        return Err(UpstreamError::ErrorEvent(v));
                    }
                    Payload::Chunk(c) => {
                        let mut c = self.spoken.read(c, &self.limits.chunks);
                        c.read_usage_reported_elsewhere();
                        // A non-streaming client's answer is merged from every chunk: their
                        // values are bounded together, and in both modes alike.
                        self.values = self.values.saturating_add(c.object.value_count());
                        if self.values > self.limits.chunks.max_json_values {
                            return Err(UpstreamError::Limit(LimitExceeded::new(
                                "max_upstream_json_values",
                                format!(
                                    "the answer's chunks hold more than {} JSON values \
                                     (max_upstream_json_values)",
                                    self.limits.chunks.max_json_values
                                ),
                            )));
                        }
                        // `finish_reason: content_filter` is an answer here; whether it is
                        // a failure depends on the request's plan (see `attempt`).
                        self.choices.note(&c);
                        self.got_chunk = true;
                        self.got_output |= c.payload_bytes > 0;
                        self.unread_since.get_or_insert_with(Instant::now);
                        return Ok(Some(c));
                    }
                }
            }
            if self.done {
                return Ok(None);
            }
            let kind = if self.got_chunk {
                TimeoutKind::Idle
            } else {
                TimeoutKind::FirstChunk
            };
            // The first read after time away: what is already waiting says whether the
            // upstream was ahead of the gateway meanwhile.
            let waiting = match self.unread_since.take() {
                Some(since) => {
                    let body = self.body();
                    let now_or_never = std::future::poll_fn(|cx| {
                        Poll::Ready(hyper::body::Body::poll_frame(
                            std::pin::Pin::new(&mut *body),
                            cx,
                        ))
                    })
                    .await;
                    match now_or_never {
                        Poll::Ready(frame) => {
                            self.hold_clocks(Instant::now().saturating_duration_since(since));
                            Some(frame)
                        }
                        Poll::Pending => None,
                    }
                }
                None => None,
            };
            let frame = match waiting {
                Some(frame) => frame,
                None => {
                    let limit = if self.got_output {
                        self.timeouts.stream_timeout
                    } else {
                        self.timeouts.until_output
                    };
                    let wait = Wait::new(self.last_activity, limit, self.timeouts, kind);
                    timeout_at(wait.at, self.body().frame())
                        .await
                        .map_err(|_| UpstreamError::Timeout(wait.kind))?
                }
            };
            match frame {
                None => {
                    self.done = true;
                    self.reached_end();
                    // It ended before its first bytes said it is an event stream.
                    if let Some(Unconfirmed { label, .. }) = self.unconfirmed.take() {
                        return Err(UpstreamError::Malformed(Unconfirmed::unreadable(label)));
                    }
                    if let Some(body) = self.whole_json.take() {
                        let payload = chunk::from_completion(&body, &self.limits.chunks)?;
                        self.queue_payload(payload)?;
                        continue;
                    }
                    // A `[DONE]` cut only of its line ends says what it says, whatever
                    // the finishes said (both SDKs end such a stream without an error).
                    if self.parser.has_partial() && self.parser.pending_is_done() {
                        self.queue.push_back(Ok(Payload::Done));
                        continue;
                    }
                    if self.choices.complete() && !self.parser.has_partial() {
                        return Ok(None);
                    }
                    return Err(UpstreamError::Transport(
                        TransportFault::Reset,
                        "stream ended before [DONE]".to_string(),
                    ));
                }
                Some(Err(e)) => {
                    return Err(UpstreamError::Transport(
                        TransportFault::Reset,
                        e.to_string(),
                    ));
                }
                Some(Ok(frame)) => {
                    self.last_activity = Instant::now();
                    if let Some(data) = frame.data_ref() {
                        self.ingest(data);
                    }
                    if let (true, Some(talking)) = (self.queue.is_empty(), &self.talking) {
                        talking();
                    }
                }
            }
        }
    }

    /// Parses `data`, the body's next bytes, into queued payloads (or the error that ends
    /// the stream), within `max_upstream_body_bytes`.
    fn ingest(&mut self, data: &[u8]) {
        if let Some(body) = self.whole_json.as_mut() {
            if data.len() > self.limits.max_body_bytes.saturating_sub(self.received) {
                self.whole_json = None;
                self.end_over_body_limit();
                return;
            }
            self.received += data.len();
            body.extend_from_slice(data);
            return;
        }
        if let Some(unconfirmed) = self.unconfirmed.as_mut() {
            unconfirmed.first.extend_from_slice(data);
            // Blank space says nothing of what the answer is, however much of it comes
            // (servers keep a slow answer's connection alive with it): it is dropped as it
            // comes, counted against the body's limit, and never held as first bytes.
            let blank = coding::leading_blank(&unconfirmed.first);
            if !blank.is_empty() {
                self.received += blank.len();
                unconfirmed.first.drain(blank);
                if self.received > self.limits.max_body_bytes {
                    self.unconfirmed = None;
                    self.end_over_body_limit();
                    return;
                }
            }
            let start = coding::stream_start(&unconfirmed.first);
            let held = unconfirmed.first.len();
            if start == StreamStart::Undecided && held <= coding::MAX_STREAM_START_BYTES {
                return;
            }
            let Some(Unconfirmed { label, first }) = self.unconfirmed.take() else {
                return;
            };
            if start == StreamStart::NotOne {
                if label.is_none() && coding::starts_as_json_object(&first) {
                    self.whole_json = Some(Vec::new());
                    return self.ingest(&first);
                }
                // Not a byte of it is parsed: a page is no answer, whatever lines it has.
                let unreadable = Unconfirmed::unreadable(label);
                self.queue.push_back(Err(ChunkError::Malformed(unreadable)));
                self.done = true;
                return;
            }
            return self.ingest(&first);
        }
        // Only the bytes within the limit are parsed: what lies past it is never delivered,
        // however the reads are cut. A running copy of the message (see
        // `Chunk::running_copy_bytes`) is not counted, from the end of its event on: a read
        // that fits without those credits is parsed whole, and one that would not is parsed
        // a line at a time, so that the limit falls at the same byte whatever the reads.
        let room = self.limits.max_body_bytes.saturating_sub(self.received);
        let mut over = false;
        if data.len() <= room {
            self.received += data.len();
            self.parse_into_queue(data);
        } else {
            let mut start = 0;
            let ends = memchr::memchr2_iter(b'\n', b'\r', data).map(|at| at + 1);
            for end in ends.chain(std::iter::once(data.len())) {
                let line = &data[start..end];
                start = end;
                let room = self.limits.max_body_bytes.saturating_sub(self.received);
                over = line.len() > room;
                let line = &line[..line.len().min(room)];
                self.received += line.len();
                if !self.parse_into_queue(line) || over {
                    break;
                }
            }
        }
        if over {
            self.end_over_body_limit();
        }
    }

    /// Ends the answer with the error of a body past `max_upstream_body_bytes`.
    fn end_over_body_limit(&mut self) {
        self.queue
            .push_back(Err(ChunkError::Limit(LimitExceeded::new(
                "max_upstream_body_bytes",
                format!(
                    "answer over max_upstream_body_bytes = {}",
                    self.limits.max_body_bytes
                ),
            ))));
        self.done = true;
    }

    /// Parses `data` into queued payloads, crediting each chunk's running copy of the
    /// message back to the bytes received; false when a line could not be parsed (its
    /// error is queued after the events completed before it).
    fn parse_into_queue(&mut self, data: &[u8]) -> bool {
        let mut events: Vec<SseEvent> = Vec::new();
        let parsed = self.parser.push(data, &mut events);
        // Events completed before a bad line in the same read still count:
        // how TCP cuts the bytes must not change what is delivered.
        let limits = self.limits.chunks;
        for e in events {
            let payload = chunk::parse_event(e.event.as_deref(), e.data, &limits);
            if let Ok(Payload::Chunk(c)) = &payload {
                self.received = self.received.saturating_sub(c.running_copy_bytes());
            }
            self.queue.push_back(payload);
        }
        match parsed {
            Ok(()) => true,
            Err(e) => {
                let error = match e.limit() {
                    Some(name) => ChunkError::Limit(LimitExceeded::new(name, e.to_string())),
                    None => ChunkError::Malformed(e.to_string()),
                };
                self.queue.push_back(Err(error));
                false
            }
        }
    }

    fn body(&mut self) -> &mut Incoming {
        self.body.as_mut().expect("the body is only taken on drop")
    }

    /// The body was read to its end: the connection may serve another request.
    fn reached_end(&mut self) {
        if let Some(lease) = self.lease.as_mut() {
            lease.reusable();
        }
    }

    fn queue_payload(&mut self, payloads: Vec<Payload>) -> Result<(), UpstreamError> {
        for payload in payloads {
            if let Payload::Error(v) = payload {
                return Err(UpstreamError::ErrorEvent(v));
            }
            self.queue.push_back(Ok(payload));
        }
        self.queue.push_back(Ok(Payload::Done));
        Ok(())
    }

    /// Every choice the answer named has finished, one at least (see
    /// [`ChoiceProgress::complete`]).
    pub fn finished(&self) -> bool {
        self.choices.complete()
    }

    /// How many choices the answer has named.
    pub fn choices_named(&self) -> u64 {
        self.choices.named_count()
    }

    /// This attempt's response headers on the [`FORWARDED_HEADERS`] list.
    pub fn forwarded_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.forwarded
    }

    /// Reads the whole body, up to `max` bytes. With `truncate`, the excess is dropped (an
    /// error body); without, exceeding `max` is a malformed response.
    ///
    /// An answer's waits are those before its first output (`until_output`): a JSON body is
    /// output only once whole, and a reasoning model's behind an upstream that sent its head
    /// at once comes after the model has thought, as a silent stream's first chunk does. An
    /// error body's are the gaps' (`stream_timeout`): its status is known, and a body that
    /// stalls leaves it that status with what came of the body, not a timeout that loses
    /// its class and its `Retry-After`.
    async fn read_all(&mut self, max: usize, truncate: bool) -> Result<Bytes, UpstreamError> {
        let mut buf = BytesMut::new();
        let limit = if truncate {
            self.timeouts.stream_timeout
        } else {
            self.timeouts.until_output
        };
        loop {
            let wait = Wait::new(
                self.last_activity,
                limit,
                self.timeouts,
                TimeoutKind::FirstChunk,
            );
            let Ok(frame) = timeout_at(wait.at, self.body().frame()).await else {
                if truncate {
                    return Ok(buf.freeze());
                }
                return Err(UpstreamError::Timeout(wait.kind));
            };
            match frame {
                None => {
                    self.reached_end();
                    return Ok(buf.freeze());
                }
                Some(Err(e)) => {
                    if truncate {
                        return Ok(buf.freeze());
                    }
                    return Err(UpstreamError::Transport(
                        TransportFault::Reset,
                        e.to_string(),
                    ));
                }
                Some(Ok(frame)) => {
                    self.last_activity = Instant::now();
                    if let Some(data) = frame.data_ref() {
                        let room = max.saturating_sub(buf.len());
                        if data.len() > room {
                            if truncate {
                                buf.extend_from_slice(&data[..room]);
                                return Ok(buf.freeze());
                            }
                            return Err(UpstreamError::Limit(LimitExceeded::new(
                                "max_upstream_body_bytes",
                                format!("response body over max_upstream_body_bytes = {max}"),
                            )));
                        }
                        buf.extend_from_slice(data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_debug_shows_no_key() {
        let endpoint = Endpoint::parse("http://up:8000/v1").unwrap();
        let body = Bytes::from_static(b"{}");
        let call = Call {
            endpoint: &endpoint,
            model: "m",
            api_key: Some("sk-upstream-DEBUG-0004"),
            body: &body,
            request_id: 1,
            stream: true,
            ca_bundle: None,
        };
        let shown = format!("{call:?}");
        assert!(!shown.contains("DEBUG-0004"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}
