//! The upstream connection pool: idle HTTP/1.1 keep-alive connections, and HTTP/2
//! connections shared as streams, per (scheme, host, port), bounded in number and in idle
//! time.
//!
//! Owns: keeping an HTTP/1.1 connection whose last response was read to its end, handing it
//! to the next attempt to the same upstream (most recently used first); sharing an HTTP/2
//! connection (`https` only, negotiated by ALPN in `client`) among concurrent attempts, one
//! stream each, up to the lower of its server's `SETTINGS_MAX_CONCURRENT_STREAMS` and
//! [`PoolLimits::max_http2_streams`], a full one making the next attempt open another;
//! making attempts that arrive while a connection to an `https` upstream is being opened
//! wait for it (an HTTP/2 one until its server's SETTINGS, its stream limit, are in: see
//! [`SettingsWait`]; each wait bounded, [`HTTP2_DIAL_WAIT_LIMIT`]), so that a burst opens
//! one HTTP/2 connection, not one each; closing a new HTTP/2 connection whose server has not
//! spoken when its dialer's attempt ends without an answer, rather than keeping it; closing a
//! connection when it has been idle for `upstream_pool_idle_timeout` (counted from the end
//! of its last response), sooner when an HTTP/1.1 server announced a shorter
//! `Keep-Alive: timeout=`, or when the pool for its host is full; and counting what it
//! holds so the simulation can check that nothing else is left open. Does not own opening connections (`client`, through the
//! [`Connector`](crate::transport::Connector) seam) nor deciding whether a failed send may
//! be re-sent (`client`: only when hyper hands the request back unwritten, or an HTTP/2
//! server proves it did not process it).
//!
//! Why not hyper-util's pooled client: its checkout races an idle connection against a new
//! connect started in the background, so which connection a request gets, and how many are
//! opened, depend on the order tasks run within one instant (which differs between the
//! streaming and non-streaming paths); it does not say what it holds (the simulation's
//! "nothing else is open" invariant needs the exact idle count); and it wants a `Uri`
//! connector where ours speaks host and port. This pool is small because hyper's
//! `SendRequest` already does the hard part: it knows when a connection is closed, gives a
//! request back when it was never written, and (HTTP/2) queues a stream the server has no
//! room for yet.
//!
//! An HTTP/1.1 connection goes back only from a [`Lease`] marked [`Lease::reusable`]: its
//! response was read to the end of its body. Any other end (a client gone, a timeout, a
//! failure mid-stream, a body over its limit) drops the connection, which closes the socket,
//! so a half-read connection can never serve the next request. An HTTP/2 connection stays
//! whatever happens to one stream: hyper resets a stream whose response is dropped unread,
//! and the connection's other streams go on. It leaves the pool once it is closed (it
//! failed, or its server sent GOAWAY or hung up) and carries no stream, or when the one
//! stream it was opened for ends unanswered before its server sent anything.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

/// Where idle connections are kept apart: connections are only ever reused for the same
/// scheme, host and port, by the worker thread that opened them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolKey {
    /// The worker thread (see [`set_worker`]): a connection is driven by a task on the
    /// runtime that opened it, so a request from another worker's runtime would cross
    /// threads at every read and write.
    pub worker: usize,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The CA bundle the connection's certificate was checked against (none: the Mozilla
    /// roots): a connection is never reused under a different trust.
    pub ca_bundle: Option<String>,
}

impl PoolKey {
    /// The upstream as the metrics name it: `scheme://host:port` (workers and trust apart
    /// are one upstream).
    pub fn upstream(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// What the pool has done and holds, per upstream, for the metrics ([`Pool::stats`]).
/// Counted from the pool's start: a reload that changes the pool's bounds starts a new
/// pool, and its counts start again from zero (a counter reset, to Prometheus).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Per upstream (`scheme://host:port`).
    pub upstreams: BTreeMap<String, UpstreamStats>,
    /// Requests sent again on another connection because the kept one they were given was
    /// found closed before any byte of them was written.
    pub resent_stale: u64,
    /// Requests sent again on another connection because an HTTP/2 upstream proved it had
    /// not processed them (a refused stream, a stream above a graceful GOAWAY).
    pub resent_unprocessed: u64,
}

/// One upstream's share of [`PoolStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Connections opened, by the protocol they speak.
    pub opened_http1: u64,
    pub opened_http2: u64,
    /// Requests given a connection that was open already: a kept HTTP/1.1 one, or a
    /// stream on an open HTTP/2 one (a kept connection found closed counts here, and its
    /// request again in [`PoolStats::resent_stale`]).
    pub reused: u64,
    /// Idle connections held right now.
    pub idle: u64,
}

/// Why a request went again on another connection (see [`PoolStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    StaleConnection,
    NotProcessed,
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many workers the process runs (see [`set_workers`]).
static WORKERS: AtomicUsize = AtomicUsize::new(1);

/// Tells the pools of this process that `n` worker threads share them, each keeping its own
/// connections: each keeps at most its share of `max_idle_per_host` idle (rounded up), so
/// that the bound holds for the whole gateway, not per worker.
pub fn set_workers(n: usize) {
    WORKERS.store(n.max(1), Ordering::Relaxed);
}

/// One worker's share of `max_idle_per_host` idle connections when `workers` share it:
/// rounded up, so that pooling on stays on in every worker (a bound of 1 with 2 workers
/// keeps 1 in each). The gateway as a whole then keeps at most `workers - 1` more than the
/// bound, and only when the bound is not a multiple of the workers.
fn worker_share(max_idle_per_host: usize, workers: usize) -> usize {
    max_idle_per_host.div_ceil(workers.max(1))
}

/// Names the current thread as worker `index` of a gateway that runs a runtime per worker
/// thread (`switchback serve --workers`): its attempts keep their connections apart from
/// the other workers'. Threads never named are worker 0 (one runtime, the simulation).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The worker the current thread is (see [`set_worker`]).
pub fn worker() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// Bounds of the pool (`limits.max_idle_upstream_connections_per_host`,
/// `limits.upstream_pool_idle_timeout`, `limits.max_streams_per_upstream_http2_connection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Idle connections kept per (scheme, host, port); 0 turns pooling off (an HTTP/2
    /// connection then carries one attempt only, like an HTTP/1.1 one).
    pub max_idle_per_host: usize,
    /// How long a connection may stay idle before it is closed.
    pub idle_timeout: Duration,
    /// Streams one HTTP/2 connection carries at once (fewer if its server says so); 0 turns
    /// HTTP/2 off.
    pub max_http2_streams: usize,
    /// How often each HTTP/2 connection is PINGed, and how long a PING may go unanswered
    /// before the connection is closed; `None` sends none.
    pub http2_keep_alive: Option<Duration>,
}

/// One open HTTP/1.1 upstream connection: the sender of its requests and the task that
/// drives it.
pub(crate) struct Conn {
    pub(crate) sender: http1::SendRequest<Full<Bytes>>,
    /// Aborting the task drops the socket.
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    pub(crate) fn new(
        sender: http1::SendRequest<Full<Bytes>>,
        task: tokio::task::JoinHandle<()>,
    ) -> Conn {
        Conn { sender, task }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How many streams an HTTP/2 connection's server allows at once right now (its latest
/// `SETTINGS_MAX_CONCURRENT_STREAMS`).
pub(crate) type ServerStreamLimit = Box<dyn Fn() -> usize + Send + Sync>;

/// Holds the [`Dial`] of a new HTTP/2 connection until its server's first SETTINGS have
/// been applied (told by [`FirstFrameWatch`](crate::upstream::first_frame::FirstFrameWatch)),
/// so that the attempts waiting for the connection see its server's stream limit. hyper's
/// handshake returns before that, while h2 counts 100 streams allowed: woken then, a burst
/// put up to 100 streams on the connection, its server refused those past its limit, and
/// each refused one went again on a connection of its own. Why not until the dialer's
/// response head, which also comes after the SETTINGS: an answer that is not streamed
/// sends its head only when it is done, and the waiters would wait that long; the
/// SETTINGS come about one round trip after the handshake.
/// Until then the connection itself counts room for one stream only (`Http2Conn::capacity`):
/// an attempt that comes after the handshake, once the dial is held, would otherwise see
/// h2's 100 on it and put a stream there rather than wait. A server that never sends its
/// SETTINGS holds the dial until the connection ends: the waiters look again after
/// [`HTTP2_DIAL_WAIT_LIMIT`], and the connection is closed when its dialer's stream ends
/// unanswered (see [`Lease`]'s drop).
#[derive(Clone, Default)]
pub(crate) struct SettingsWait {
    state: Arc<Mutex<Settings>>,
    known: Arc<AtomicBool>,
}

#[derive(Default)]
enum Settings {
    /// Not yet in: the dial, once the pool has the connection.
    #[default]
    Unknown,
    Waiting(Dial),
    Known,
}

impl SettingsWait {
    /// The dial ends once the SETTINGS are in (at once if they are already).
    fn hold(&self, dial: Option<Dial>) {
        let Some(dial) = dial else { return };
        let mut settings = self.lock();
        if matches!(*settings, Settings::Unknown) {
            *settings = Settings::Waiting(dial);
            return;
        }
        // Outside the lock: ending the dial takes the pool's.
        drop(settings);
        drop(dial);
    }

    /// The server's SETTINGS were applied, or will never be (the connection ended).
    pub(crate) fn known(&self) {
        // First: the attempts the dial's end wakes must find the server's limit counted.
        self.known.store(true, Ordering::SeqCst);
        let was = std::mem::replace(&mut *self.lock(), Settings::Known);
        // Outside the lock, as above.
        if let Settings::Waiting(dial) = was {
            drop(dial);
        }
    }

    /// Whether the server's SETTINGS are in, for the connection to read.
    pub(crate) fn known_flag(&self) -> Arc<AtomicBool> {
        self.known.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Settings> {
        // Held for a plain swap only, which cannot panic half-way.
        self.state.lock().expect("SETTINGS wait lock poisoned")
    }
}

/// One open HTTP/2 upstream connection, shared by the attempts whose streams it carries.
pub(crate) struct Http2Conn {
    sender: http2::SendRequest<Full<Bytes>>,
    server_limit: ServerStreamLimit,
    /// Whether its server's SETTINGS are in ([`SettingsWait`]); before, h2 counts 100.
    settings_known: Arc<AtomicBool>,
    /// Aborting the task ends hyper's request dispatch; the connection then closes as soon
    /// as no stream of it is left (hyper drives the socket in a task of its own).
    task: tokio::task::JoinHandle<()>,
}

impl Http2Conn {
    pub(crate) fn new(
        sender: http2::SendRequest<Full<Bytes>>,
        server_limit: ServerStreamLimit,
        settings_known: Arc<AtomicBool>,
        task: tokio::task::JoinHandle<()>,
    ) -> Http2Conn {
        Http2Conn {
            sender,
            server_limit,
            settings_known,
            task,
        }
    }

    /// Streams it may carry at once: ours or its server's limit, whichever is lower; one
    /// (the dialer's) until the server's SETTINGS say its limit.
    fn capacity(&self, ours: usize) -> usize {
        let server = if self.settings_known.load(Ordering::SeqCst) {
            (self.server_limit)()
        } else {
            1
        };
        ours.min(server)
    }
}

impl Drop for Http2Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection just opened, in the version its server chose. (An HTTP/2 one's
/// [`SettingsWait`] is not kept in its [`Http2Conn`]: holding the dial, hence the pool, it
/// would keep a dropped pool alive for as long as the connection waits for its server.)
pub(crate) enum NewConn {
    Http1(Conn),
    Http2(Http2Conn, SettingsWait),
}

struct Idle {
    conn: Conn,
    /// When it is closed: the idle timeout after its last response ended, or sooner when its
    /// server said it closes idle connections sooner (`Keep-Alive: timeout=`).
    expires: Instant,
    returned: Returned,
}

/// When, and by which request, an idle connection came back to the pool.
///
/// **Connections returned in the same instant.** A connection can come back in the very
/// instant another request looks for one, or come back together (always possible under a
/// paused or simulated clock, where every event of a tick shares one instant). Which of the two the runtime
/// runs first is a scheduling accident, and under the simulation it differs between a
/// stream and a non-stream run of the same traffic; yet it decided which request got which
/// connection, hence which one met a connection its server had just closed, or which one
/// became the upstream's next call. So, as the cooldown book does with deployment health
/// (`route::cooldown`), the pool never lets that order matter: a connection returned at
/// instant t is offered to the request that returned it at once (its own next attempt,
/// which runs after the return in the same task), and to other requests from the next
/// instant on; and connections back in the same instant are kept in the order of the
/// requests that returned them, so that a later request takes the same one whichever
/// returned first. On a real clock two events almost never share an instant, so this costs a
/// live gateway nothing. (Room on a shared HTTP/2 connection is not held back this way:
/// the simulation, the only place ties are common, speaks HTTP/1.1 to its providers.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Returned {
    pub(crate) at: Instant,
    /// The gateway request whose attempt gave it back.
    pub(crate) by: u64,
}

impl Returned {
    /// Whether `request`, looking for a connection at `now`, may take this one.
    ///
    /// Both instants are read under the pool's lock, which orders a return and a checkout:
    /// read before it (as they were), a checkout on one worker thread could read its `now`,
    /// then wait for the lock while another thread returned a connection at a later
    /// instant, and this assertion failed on a live gateway under load
    /// (`load_smoke::every_request_of_a_load_run_is_answered_and_counted`, once in many runs).
    pub(crate) fn offered_to(&self, request: u64, now: Instant) -> bool {
        debug_assert!(
            self.at <= now,
            "a connection cannot come back in the future"
        );
        request == self.by || self.at < now
    }
}

/// An HTTP/2 connection in the pool, busy (carrying `streams`) or idle.
struct Shared {
    conn: Arc<Http2Conn>,
    id: u64,
    streams: usize,
    /// When its last stream ended (meaningful when `streams` is 0).
    since: Instant,
}

impl Shared {
    fn is_idle(&self) -> bool {
        self.streams == 0
    }
}

/// The HTTP/2 side of one `https` upstream.
#[derive(Default)]
struct Http2Host {
    /// Oldest first: new streams go to the oldest connection with room, so that spare
    /// ones fall idle and expire.
    conns: Vec<Shared>,
    /// An attempt is opening a connection that may turn out HTTP/2: attempts arriving
    /// meanwhile wait for it rather than each opening their own.
    dialing: Option<Arc<Notify>>,
    /// The last connection opened to it was HTTP/1.1: nobody waits for a dial.
    speaks_http1: bool,
}

impl Http2Host {
    fn idle(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.is_idle() && !c.conn.sender.is_closed())
            .count()
    }

    fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.dialing.is_none() && !self.speaks_http1
    }
}

#[derive(Default)]
struct State {
    /// Idle HTTP/1.1 connections per key, least recently used first.
    idle: BTreeMap<PoolKey, Vec<Idle>>,
    /// HTTP/2 connections per key (`https` only).
    http2: BTreeMap<PoolKey, Http2Host>,
    /// Whether a task is closing idle connections as they expire.
    reaper: bool,
    /// When that task wakes next (none: it is not asleep on an expiry).
    reaper_wakes_at: Option<Instant>,
    /// Wakes that task early: a connection kept just now expires before it would wake (its
    /// server's `Keep-Alive: timeout=` is shorter, or its response ended a while ago).
    reaper_wake: Arc<Notify>,
    /// The id of the next HTTP/2 connection.
    next_id: u64,
    /// HTTP/1.1 dials in flight per TLS upstream (see [`MAX_TLS_DIALS_PER_HOST`]).
    tls_dials: BTreeMap<PoolKey, TlsDials>,
    /// Connections opened and reused per key, for [`Pool::stats`]. Keys stay for the
    /// pool's life: counters must not go back.
    counts: BTreeMap<PoolKey, KeyCounts>,
}

/// What the pool has done for one key (the idle count is read from the idle lists).
#[derive(Debug, Clone, Copy, Default)]
struct KeyCounts {
    opened_http1: u64,
    opened_http2: u64,
    reused: u64,
}

impl State {
    fn count(&mut self, key: &PoolKey, add: impl FnOnce(&mut KeyCounts)) {
        match self.counts.get_mut(key) {
            Some(counts) => add(counts),
            None => {
                let mut counts = KeyCounts::default();
                add(&mut counts);
                self.counts.insert(key.clone(), counts);
            }
        }
    }
}

/// Most HTTP/1.1 connections one worker opens at once to one TLS upstream; attempts past
/// it wait for one of them, or for a connection to come back to the pool, before they
/// open their own (at most `MAX_DIAL_WAITS` times, see `client.rs`). Why: a TLS handshake
/// costs both sides milliseconds of CPU. With every attempt that found no idle connection
/// opening one, a burst on a cold pool (or any hiccup that leaves every connection busy)
/// opened hundreds at once on 2 cores: the handshakes made requests slower, slower
/// requests left more attempts without a connection, and `bench-overhead`'s https
/// variant stayed at a p50 of 1 s for a whole round. Plain TCP connects are cheap and
/// not held back; HTTP/2 has its single probing dial (`Http2Host::dialing`). Not covered:
/// pooling off (`max_idle_per_host` 0), and an HTTP/2-offering pool whose upstream answered
/// HTTP/1.1 (`speaks_http1`), which still dials per attempt. Wake-ups are not strictly
/// first come, first served: a `notify_one` with nobody registered leaves a permit, which
/// wakes the next waiter for nothing and costs it one of its waits.
pub const MAX_TLS_DIALS_PER_HOST: usize = 4;

/// The HTTP/1.1 dials in flight to one TLS upstream.
struct TlsDials {
    in_flight: usize,
    /// Wakes one attempt waiting per event: a dial ended (a slot is free), or a connection
    /// came back to the pool. Waking them all would spend every waiter's few waits
    /// (`MAX_DIAL_WAITS`) on the first events, and they would then all dial at once.
    changed: Arc<Notify>,
}

/// The pool one engine (and its reloaded successors with the same limits) shares.
#[derive(Clone)]
pub struct Pool {
    state: Arc<Mutex<State>>,
    limits: PoolLimits,
    /// Connections lent to attempts right now (an HTTP/2 connection counts once, however
    /// many streams it carries).
    leased: Arc<AtomicUsize>,
    /// Requests sent again: on a stale connection, and not processed (see [`PoolStats`]).
    resends: Arc<[AtomicU64; 2]>,
}

/// What an attempt does to get a connection.
pub(crate) enum Checkout {
    /// A kept HTTP/1.1 connection, or a stream on an open HTTP/2 one.
    Kept(Lease),
    /// Another attempt is opening a connection to this upstream that may be HTTP/2: wait
    /// until it is open (or failed), then check out again.
    Wait(Waiting),
    /// Open a new connection; with a [`Dial`] guard, attempts arriving meanwhile wait for
    /// it.
    Open(Option<Dial>),
}

/// An attempt waiting for another's dial (or, to a TLS upstream over HTTP/1.1, for a
/// connection to come back or a dial slot to free).
pub(crate) struct Waiting {
    woken: Pin<Box<OwnedNotified>>,
    /// How long one wait may last before the attempt looks again.
    at_most: Duration,
}

impl Waiting {
    /// Waits for the wake-up of a dial: the future is registered with its `Notify` now,
    /// while the pool's lock is held, so no `notify_one` between this checkout and the
    /// first poll can pass it by (an unregistered waiter only leaves a permit, and two
    /// such wake-ups make one: a request then waited for ever, seen twice in 60,000).
    fn registered(notify: &Arc<Notify>, at_most: Duration) -> Waiting {
        let mut woken = Box::pin(notify.clone().notified_owned());
        woken.as_mut().enable();
        Waiting { woken, at_most }
    }

    /// Until this attempt is woken, or `at_most` has passed.
    pub(crate) async fn until_woken(self) {
        let _ = tokio::time::timeout(self.at_most, self.woken).await;
    }
}

/// The longest one wait for a TLS dial slot lasts before the attempt looks again: a wake-up
/// is lost only if a connection taken by a woken waiter never comes back (its attempt
/// was abandoned) while no dial is left to end, and then this bounds the cost.
pub const TLS_DIAL_WAIT_LIMIT: Duration = Duration::from_millis(250);

/// The longest one wait for another attempt's HTTP/2 dial lasts before the attempt looks
/// again; after `MAX_DIAL_WAITS` (4) of them (see `client.rs`) it opens its own connection.
/// Four of them, 8 s, outlast a whole dial (TCP, TLS, then the server's SETTINGS: about
/// three round trips, a second to a distant provider) slowed by two lost SYNs (the kernel
/// sends them again after 1 s, then 2 s more): a dial that is merely slow still gathers
/// its burst onto one connection, where at 500 ms a 2 s dial sent every waiter to open its
/// own handshake at once. A server that completes TLS, picks `h2`, and then never sends
/// its SETTINGS holds its dial until the connection ends: without a bound every attempt to
/// it waited for that, each until its own first-byte timeout (60 s by default), and none
/// opened a connection of its own.
pub const HTTP2_DIAL_WAIT_LIMIT: Duration = Duration::from_secs(2);

/// This attempt is opening the connection others wait for; dropping it (the connection
/// is in the pool, or it failed, or the attempt was abandoned) wakes them.
pub(crate) struct Dial {
    pool: Pool,
    key: PoolKey,
    notify: Arc<Notify>,
    /// One of the HTTP/1.1 dials to a TLS upstream counted in `State::tls_dials`, rather
    /// than the one dial that finds out whether the upstream speaks HTTP/2.
    counted: bool,
}

impl Drop for Dial {
    fn drop(&mut self) {
        if self.counted {
            let mut state = self.pool.lock();
            let dials = state
                .tls_dials
                .get_mut(&self.key)
                .expect("a counted dial is in the count until it drops");
            assert!(dials.in_flight > 0, "a dial ended twice");
            dials.in_flight -= 1;
            let last = dials.in_flight == 0;
            if last {
                state.tls_dials.remove(&self.key);
            }
            drop(state);
            if last {
                // No dial left: every slot is free, so nobody should still wait. Left
                // waiting on a `Notify` the pool no longer holds, they were stranded until
                // the wait's limit (the next dials wake a new one).
                self.notify.notify_waiters();
            } else {
                // One slot freed: one waiter (a waiter dropped meanwhile passes it on).
                self.notify.notify_one();
            }
            return;
        }
        {
            let mut state = self.pool.lock();
            if let Some(host) = state.http2.get_mut(&self.key)
                && host
                    .dialing
                    .as_ref()
                    .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
            {
                host.dialing = None;
                // A dial that failed (or was abandoned) leaves nothing to remember.
                if host.is_empty() {
                    state.http2.remove(&self.key);
                }
            }
        }
        self.notify.notify_waiters();
    }
}

impl Pool {
    pub fn new(limits: PoolLimits) -> Pool {
        Pool {
            state: Arc::default(),
            limits,
            leased: Arc::default(),
            resends: Arc::default(),
        }
    }

    pub fn limits(&self) -> PoolLimits {
        self.limits
    }

    /// Idle connections kept per key: this worker's share of `max_idle_per_host`.
    fn idle_cap(&self) -> usize {
        worker_share(
            self.limits.max_idle_per_host,
            WORKERS.load(Ordering::Relaxed),
        )
    }

    /// Whether `https` upstreams are offered HTTP/2.
    pub fn offers_http2(&self) -> bool {
        self.limits.max_http2_streams > 0
    }

    /// A connection for the next request to `key`: a kept HTTP/1.1 one, a stream on an
    /// HTTP/2 one with room, a connection another attempt is opening (when `may_wait`), or
    /// a new one.
    /// `request` is the gateway request the attempt belongs to (see [`Returned`]).
    pub(crate) fn checkout(&self, key: &PoolKey, request: u64, may_wait: bool) -> Checkout {
        if let Some(conn) = self.take(key, request) {
            return Checkout::Kept(self.lease(key.clone(), request, conn, true));
        }
        if !key.tls || self.limits.max_idle_per_host == 0 {
            return Checkout::Open(None);
        }
        if !self.offers_http2() {
            return self.checkout_tls_dial(key, may_wait);
        }
        let now = Instant::now();
        let mut state = self.lock();
        let host = state.http2.entry(key.clone()).or_default();
        let closing = self.drop_unusable(host, now);
        let ours = self.limits.max_http2_streams;
        let free = host
            .conns
            .iter_mut()
            .find(|c| !c.conn.sender.is_closed() && c.streams < c.conn.capacity(ours));
        let checkout = if let Some(shared) = free {
            if shared.is_idle() {
                self.leased.fetch_add(1, Ordering::SeqCst);
            }
            shared.streams += 1;
            Checkout::Kept(Lease::http2(
                key.clone(),
                request,
                self.clone(),
                &shared.conn,
                Some(shared.id),
                true,
            ))
        } else if let Some(notify) = host.dialing.as_ref() {
            if may_wait && !host.speaks_http1 {
                Checkout::Wait(Waiting::registered(notify, HTTP2_DIAL_WAIT_LIMIT))
            } else {
                Checkout::Open(None)
            }
        } else {
            let notify = Arc::new(Notify::new());
            host.dialing = Some(notify.clone());
            Checkout::Open(Some(Dial {
                pool: self.clone(),
                key: key.clone(),
                notify,
                counted: false,
            }))
        };
        if matches!(checkout, Checkout::Kept(_)) {
            state.count(key, |c| c.reused += 1);
        }
        drop(state);
        drop(closing);
        checkout
    }

    /// No idle HTTP/1.1 connection to the TLS upstream `key`: open one, unless
    /// [`MAX_TLS_DIALS_PER_HOST`] are being opened already and this attempt may wait.
    fn checkout_tls_dial(&self, key: &PoolKey, may_wait: bool) -> Checkout {
        let mut state = self.lock();
        let dials = state
            .tls_dials
            .entry(key.clone())
            .or_insert_with(|| TlsDials {
                in_flight: 0,
                changed: Arc::new(Notify::new()),
            });
        if may_wait && dials.in_flight >= MAX_TLS_DIALS_PER_HOST {
            return Checkout::Wait(Waiting::registered(&dials.changed, TLS_DIAL_WAIT_LIMIT));
        }
        dials.in_flight += 1;
        Checkout::Open(Some(Dial {
            pool: self.clone(),
            key: key.clone(),
            notify: dials.changed.clone(),
            counted: true,
        }))
    }

    /// Takes the closed and expired idle HTTP/2 connections out of `host` (to be dropped
    /// outside the lock).
    fn drop_unusable(&self, host: &mut Http2Host, now: Instant) -> Vec<Shared> {
        let timeout = self.limits.idle_timeout;
        let (gone, kept) = std::mem::take(&mut host.conns).into_iter().partition(|c| {
            c.is_idle() && (c.conn.sender.is_closed() || now.duration_since(c.since) >= timeout)
        });
        host.conns = kept;
        gone
    }

    /// Lends a connection just opened to the attempt that opened it. An HTTP/2 one joins
    /// the pool at once, so that attempts to the same upstream share it; `dial` is dropped
    /// after that (for HTTP/2, once its server's SETTINGS are in: see [`SettingsWait`]),
    /// waking the attempts waiting for it.
    pub(crate) fn lease_new(
        &self,
        key: PoolKey,
        request: u64,
        conn: NewConn,
        dial: Option<Dial>,
    ) -> Lease {
        match conn {
            NewConn::Http1(conn) => {
                if dial.as_ref().is_some_and(|d| !d.counted) {
                    self.lock()
                        .http2
                        .entry(key.clone())
                        .or_default()
                        .speaks_http1 = true;
                }
                drop(dial);
                self.lease(key, request, conn, false)
            }
            NewConn::Http2(conn, settings) => {
                let conn = Arc::new(conn);
                self.leased.fetch_add(1, Ordering::SeqCst);
                if self.limits.max_idle_per_host == 0 {
                    self.lock().count(&key, |c| c.opened_http2 += 1);
                    return Lease::http2(key, request, self.clone(), &conn, None, false);
                }
                let id = {
                    let mut state = self.lock();
                    state.count(&key, |c| c.opened_http2 += 1);
                    let id = state.next_id;
                    state.next_id += 1;
                    let host = state.http2.entry(key.clone()).or_default();
                    host.speaks_http1 = false;
                    host.conns.push(Shared {
                        conn: conn.clone(),
                        id,
                        streams: 1,
                        since: Instant::now(),
                    });
                    id
                };
                settings.hold(dial);
                Lease::http2(key, request, self.clone(), &conn, Some(id), false)
            }
        }
    }

    /// The most recently used idle HTTP/1.1 connection for `key` that is still open, not
    /// expired and offered to `request` (see [`Returned`]), if any; expired and closed ones
    /// met on the way are closed.
    fn take(&self, key: &PoolKey, request: u64) -> Option<Conn> {
        let mut state = self.lock();
        // Read under the lock, as a return's instant is (see `Returned::offered_to`).
        let now = Instant::now();
        let list = state.idle.get_mut(key)?;
        let mut found = None;
        // Expiries differ per connection (a server may say it closes sooner), so the
        // expired ones are skipped one by one rather than cut off at the first.
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let idle = &list[i];
            if idle.expires <= now || idle.conn.sender.is_closed() {
                list.remove(i);
            } else if idle.returned.offered_to(request, now) {
                found = Some(list.remove(i).conn);
                break;
            }
        }
        if list.is_empty() {
            state.idle.remove(key);
        }
        found
    }

    /// Lends the HTTP/1.1 `conn` to an attempt; `reused` says whether it came from the pool.
    fn lease(&self, key: PoolKey, request: u64, conn: Conn, reused: bool) -> Lease {
        self.leased.fetch_add(1, Ordering::SeqCst);
        self.lock().count(&key, |c| {
            if reused {
                c.reused += 1;
            } else {
                c.opened_http1 += 1;
            }
        });
        Lease {
            conn: Some(Leased::Http1(conn)),
            key,
            request,
            pool: self.clone(),
            ended: None,
            server_idle_timeout: None,
            reused,
        }
    }

    /// Keeps the HTTP/1.1 `conn` idle for `key` from `since` (when its last response
    /// ended), unless it is closed, the host's pool is full (of open, unexpired
    /// connections: the others are closed here), or it would already have to
    /// be closed: our idle timeout, or its server's (`server_idle_timeout`, less
    /// [`KEEP_ALIVE_MARGIN`]), whichever is shorter.
    fn put(
        &self,
        key: PoolKey,
        conn: Conn,
        since: Instant,
        by: u64,
        server_idle_timeout: Option<Duration>,
    ) {
        // Outside a runtime (a lease dropped while the process winds down) nothing could
        // close the connection when it expires: it is not kept.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let keep = match server_idle_timeout {
            Some(server) => server
                .saturating_sub(KEEP_ALIVE_MARGIN)
                .min(self.limits.idle_timeout),
            None => self.limits.idle_timeout,
        };
        let expires = since + keep;
        if conn.sender.is_closed()
            || self.limits.max_idle_per_host == 0
            || expires <= Instant::now()
        {
            return;
        }
        let start_reaper = {
            let mut state = self.lock();
            // Read under the lock, as a checkout's instant is (see `Returned::offered_to`).
            let now = Instant::now();
            let waiters = state.tls_dials.get(&key).map(|d| d.changed.clone());
            let list = state.idle.entry(key).or_default();
            // Connections closed or expired while idle stay listed until a checkout or the
            // reaper meets them: counted, they would take the place of good ones (every
            // kept connection closes at once when its upstream restarts).
            let (dead, open): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                .into_iter()
                .partition(|i| i.expires <= now || i.conn.sender.is_closed());
            *list = open;
            if list.len() >= self.idle_cap() {
                // Full: the connection is closed as it drops, outside the lock.
                drop(state);
                drop(dead);
                drop(conn);
                return;
            }
            // The list is in the order connections came back, and `take` prefers the
            // latest; those back in the same instant are in the order of the requests that
            // returned them, not of whichever task the runtime ran first (see `Returned`).
            let returned = Returned { at: now, by };
            let place = list
                .iter()
                .rposition(|i| i.returned.at < now || i.returned.by <= by)
                .map_or(0, |p| p + 1);
            list.insert(
                place,
                Idle {
                    conn,
                    expires,
                    returned,
                },
            );
            // One attempt waiting for a TLS dial may take this one instead (it checks out
            // under this lock, so after the push).
            if let Some(waiters) = waiters {
                waiters.notify_one();
            }
            let start = !std::mem::replace(&mut state.reaper, true);
            if !start && state.reaper_wakes_at.is_none_or(|at| expires < at) {
                state.reaper_wake.notify_one();
            }
            drop(state);
            drop(dead);
            start
        };
        if start_reaper {
            runtime.spawn(reap(Arc::downgrade(&self.state), self.limits.idle_timeout));
        }
    }

    /// One stream of the shared HTTP/2 connection `id` ended. A connection left with none
    /// is idle: kept (within the host's bound) until the idle timeout, or closed; closed
    /// too when `unheard` (see [`Lease`]'s drop).
    fn release_stream(&self, key: &PoolKey, id: u64, unheard: bool) {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut closing = None;
        let start_reaper = {
            let mut state = self.lock();
            let idle_http1 = state.idle.get(key).map_or(0, Vec::len);
            let host = state
                .http2
                .get_mut(key)
                .expect("a shared HTTP/2 connection is in the pool while it has streams");
            let at = host
                .conns
                .iter()
                .position(|c| c.id == id)
                .expect("a shared HTTP/2 connection is in the pool while it has streams");
            let shared = &mut host.conns[at];
            assert!(shared.streams > 0, "a stream ended twice");
            shared.streams -= 1;
            if shared.streams > 0 {
                return;
            }
            self.leased.fetch_sub(1, Ordering::SeqCst);
            shared.since = Instant::now();
            // Outside a runtime nothing could close it when it expires: it is not kept.
            if runtime.is_none()
                || unheard
                || shared.conn.sender.is_closed()
                || idle_http1 + host.idle() > self.idle_cap()
            {
                closing = Some(host.conns.remove(at));
                if host.is_empty() {
                    state.http2.remove(key);
                }
                false
            } else {
                !std::mem::replace(&mut state.reaper, true)
            }
        };
        drop(closing);
        if start_reaper && let Some(runtime) = runtime {
            runtime.spawn(reap(Arc::downgrade(&self.state), self.limits.idle_timeout));
        }
    }

    /// Idle connections held right now and still open, per key. (A connection the upstream
    /// closed while idle stays listed until the next checkout or reap, but its socket is
    /// already gone.) An HTTP/2 connection is idle when it carries no stream.
    pub fn idle(&self) -> BTreeMap<PoolKey, usize> {
        let state = self.lock();
        let mut idle: BTreeMap<PoolKey, usize> = state
            .idle
            .iter()
            .map(|(k, v)| {
                let open = v.iter().filter(|i| !i.conn.sender.is_closed()).count();
                (k.clone(), open)
            })
            .collect();
        for (key, host) in &state.http2 {
            *idle.entry(key.clone()).or_default() += host.idle();
        }
        idle.retain(|_, n| *n > 0);
        idle
    }

    /// Counts a request sent again on another connection, and why.
    pub(crate) fn count_resend(&self, why: Resend) {
        self.resends[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// What the pool has done and holds, per upstream (the metrics read it at a scrape).
    pub fn stats(&self) -> PoolStats {
        let idle = self.idle();
        let mut upstreams: BTreeMap<String, UpstreamStats> = BTreeMap::new();
        for (key, counts) in &self.lock().counts {
            let u = upstreams.entry(key.upstream()).or_default();
            u.opened_http1 += counts.opened_http1;
            u.opened_http2 += counts.opened_http2;
            u.reused += counts.reused;
        }
        for (key, n) in idle {
            upstreams.entry(key.upstream()).or_default().idle += n as u64;
        }
        PoolStats {
            upstreams,
            resent_stale: self.resends[Resend::StaleConnection as usize].load(Ordering::Relaxed),
            resent_unprocessed: self.resends[Resend::NotProcessed as usize].load(Ordering::Relaxed),
        }
    }

    /// Connections lent to attempts right now (an HTTP/2 connection counts once, however
    /// many streams it carries).
    pub fn leased(&self) -> usize {
        self.leased.load(Ordering::SeqCst)
    }

    /// Closes every idle connection (on shutdown).
    pub fn close_idle(&self) {
        let (idle, http2) = {
            let mut state = self.lock();
            let idle = std::mem::take(&mut state.idle);
            let mut http2 = Vec::new();
            for host in state.http2.values_mut() {
                let (gone, busy) = std::mem::take(&mut host.conns)
                    .into_iter()
                    .partition(Shared::is_idle);
                host.conns = busy;
                http2.push(gone);
            }
            state.http2.retain(|_, host| !host.is_empty());
            (idle, http2)
        };
        drop(idle);
        drop(http2);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock is only held for plain map edits, which cannot panic half-way.
        self.state.lock().expect("pool lock poisoned")
    }
}

/// While armed, the reaper task is running: if it is dropped unfinished (its runtime shut
/// down), the pool learns that none runs, so the next connection kept starts another.
struct ReaperRunning {
    state: Weak<Mutex<State>>,
    armed: bool,
}

impl Drop for ReaperRunning {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(state) = self.state.upgrade()
            && let Ok(mut s) = state.lock()
        {
            s.reaper = false;
            s.reaper_wakes_at = None;
        }
    }
}

/// Closes idle connections as they pass the idle timeout; ends when none is left (the next
/// `put` starts another) or when the pool is gone.
fn reap(state: Weak<Mutex<State>>, timeout: Duration) -> impl Future<Output = ()> {
    // Armed before the task first runs: a task dropped unpolled counts too.
    let running = ReaperRunning {
        state: state.clone(),
        armed: true,
    };
    reap_until_none_left(state, timeout, running)
}

async fn reap_until_none_left(
    state: Weak<Mutex<State>>,
    timeout: Duration,
    mut running: ReaperRunning,
) {
    loop {
        let (next, wake) = {
            let Some(state) = state.upgrade() else { return };
            let mut s = state.lock().expect("pool lock poisoned");
            let now = Instant::now();
            let mut expired = Vec::new();
            for list in s.idle.values_mut() {
                let (gone, kept): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                    .into_iter()
                    .partition(|i| i.expires <= now);
                *list = kept;
                expired.extend(gone);
            }
            s.idle.retain(|_, list| !list.is_empty());
            let mut expired_http2 = Vec::new();
            for host in s.http2.values_mut() {
                let (gone, kept) = std::mem::take(&mut host.conns)
                    .into_iter()
                    .partition(|c| c.is_idle() && now.duration_since(c.since) >= timeout);
                host.conns = kept;
                expired_http2.push(gone);
            }
            s.http2.retain(|_, host| !host.is_empty());
            let http1 = s.idle.values().flatten().map(|i| i.expires);
            let http2 = s
                .http2
                .values()
                .flat_map(|h| h.conns.iter())
                .filter(|c| c.is_idle())
                .map(|c| c.since + timeout);
            let next = http1.chain(http2).min();
            s.reaper_wakes_at = next;
            if next.is_none() {
                s.reaper = false;
                running.armed = false;
            }
            let wake = s.reaper_wake.clone();
            drop(s);
            drop(expired);
            drop(expired_http2);
            (next, wake)
        };
        let Some(expires) = next else { return };
        tokio::select! {
            biased;
            () = wake.notified() => {}
            () = tokio::time::sleep_until(expires) => {}
        }
    }
}

/// How much sooner than its server says (`Keep-Alive: timeout=`) an idle connection is
/// closed. The server's clock starts when it wrote the response's end, ours when we read it;
/// a request sent near the server's deadline could cross its close on the wire, and fail
/// after it may have been read (such a request is never re-sent).
pub const KEEP_ALIVE_MARGIN: Duration = Duration::from_secs(1);

/// The idle timeout a server announces in `Keep-Alive: timeout=N` (RFC 2068 §19.7.1.1,
/// whole seconds), the shortest if it says several. Anything unreadable counts as unsaid.
pub fn server_idle_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all("keep-alive")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|param| {
            let (name, value) = param.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("timeout") {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            // Digits only: `u64::from_str` would take a leading `+`.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // A number too long for u64 is longer than any idle timeout of ours anyway.
            Some(
                value
                    .parse::<u64>()
                    .map_or(Duration::MAX, Duration::from_secs),
            )
        })
        .min()
}

/// What a lease holds.
enum Leased {
    Http1(Conn),
    /// A stream on an HTTP/2 connection: `shared` names it in the pool (none: this attempt
    /// has it to itself, pooling being off).
    Http2 {
        conn: Arc<Http2Conn>,
        sender: http2::SendRequest<Full<Bytes>>,
        shared: Option<u64>,
    },
}

/// A connection lent to one attempt. An HTTP/1.1 one goes back to the pool when dropped
/// only if the attempt marked it [`reusable`](Lease::reusable); otherwise it is closed. An
/// HTTP/2 one stays in the pool whatever happened to this attempt's stream (hyper resets a
/// stream whose answer is dropped unread), unless the connection itself closed or its
/// server has sent nothing yet.
pub(crate) struct Lease {
    conn: Option<Leased>,
    key: PoolKey,
    /// The gateway request whose attempt holds it (see [`Returned`]).
    request: u64,
    pool: Pool,
    /// When its response was read to the end (none: it was not): the connection's idle
    /// time counts from there, not from when the attempt let go of it.
    ended: Option<Instant>,
    /// How long its server keeps an idle connection open, as it said (`Keep-Alive:
    /// timeout=`).
    server_idle_timeout: Option<Duration>,
    reused: bool,
}

impl Lease {
    fn http2(
        key: PoolKey,
        request: u64,
        pool: Pool,
        conn: &Arc<Http2Conn>,
        shared: Option<u64>,
        reused: bool,
    ) -> Lease {
        Lease {
            conn: Some(Leased::Http2 {
                sender: conn.sender.clone(),
                conn: conn.clone(),
                shared,
            }),
            key,
            request,
            pool,
            ended: None,
            server_idle_timeout: None,
            reused,
        }
    }

    fn held(&mut self) -> &mut Leased {
        self.conn.as_mut().expect("a lease holds its connection")
    }

    /// Waits until the connection can take a request; an error means it is closed.
    pub(crate) async fn ready(&mut self) -> hyper::Result<()> {
        match self.held() {
            Leased::Http1(conn) => conn.sender.ready().await,
            Leased::Http2 { sender, .. } => sender.ready().await,
        }
    }

    /// Sends `request`; hyper hands it back in the error when none of it was written.
    pub(crate) async fn try_send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Full<Bytes>>>> {
        match self.held() {
            Leased::Http1(conn) => conn.sender.try_send_request(request).await,
            Leased::Http2 { sender, .. } => sender.try_send_request(request).await,
        }
    }

    /// Whether the connection speaks HTTP/2.
    pub(crate) fn is_http2(&self) -> bool {
        matches!(self.conn, Some(Leased::Http2 { .. }))
    }

    /// Whether the connection came from the pool (a request on it may find it closed).
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// The response on this connection was read to its end, just now: it may serve
    /// another request.
    pub(crate) fn reusable(&mut self) {
        self.ended.get_or_insert_with(Instant::now);
    }

    pub(crate) fn is_reusable(&self) -> bool {
        self.ended.is_some()
    }

    /// What the response head said about how long its server keeps the connection open
    /// when idle (HTTP/1.1 `Keep-Alive: timeout=`); a connection is closed before that.
    pub(crate) fn server_said(&mut self, headers: &http::HeaderMap) {
        self.server_idle_timeout = server_idle_timeout(headers);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match self.conn.take() {
            Some(Leased::Http1(conn)) => {
                self.pool.leased.fetch_sub(1, Ordering::SeqCst);
                if let Some(ended) = self.ended {
                    self.pool.put(
                        self.key.clone(),
                        conn,
                        ended,
                        self.request,
                        self.server_idle_timeout,
                    );
                }
            }
            Some(Leased::Http2 {
                conn,
                sender,
                shared,
            }) => {
                drop(sender);
                // Its server has not said a word (its SETTINGS come first, RFC 9113 §3.4) and
                // this stream got no whole answer: the dialer's attempt failed or timed out
                // on it. Kept, it would count room for one stream until its server spoke, and
                // the next attempt would be handed it and wait on it in turn; closed, its
                // dial ends and the next attempt opens a new one.
                let unheard = self.ended.is_none() && !conn.settings_known.load(Ordering::SeqCst);
                match shared {
                    Some(id) => self.pool.release_stream(&self.key, id, unheard),
                    None => {
                        self.pool.leased.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                drop(conn);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_keeps_its_share_of_the_idle_bound_rounded_up() {
        assert_eq!(worker_share(64, 1), 64);
        assert_eq!(worker_share(64, 2), 32);
        assert_eq!(worker_share(5, 2), 3);
        // Pooling on stays on in every worker; off stays off.
        assert_eq!(worker_share(1, 4), 1);
        assert_eq!(worker_share(0, 4), 0);
        // No workers named yet counts as one.
        assert_eq!(worker_share(8, 0), 8);
        for max in 0..40 {
            for workers in 1..9 {
                let all = worker_share(max, workers) * workers;
                assert!(all >= max, "{max} over {workers} workers keeps {all}");
                assert!(
                    all < max + workers,
                    "{max} over {workers} workers keeps {all}"
                );
            }
        }
    }

    #[test]
    fn keys_of_different_schemes_differ() {
        let a = PoolKey {
            worker: 0,
            tls: false,
            host: "h".into(),
            port: 443,
            ca_bundle: None,
        };
        let b = PoolKey {
            tls: true,
            ..a.clone()
        };
        assert_ne!(a, b);
    }

    fn said(values: &[&str]) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append("keep-alive", http::HeaderValue::from_str(v).expect("value"));
        }
        server_idle_timeout(&headers)
    }

    #[test]
    fn a_servers_keep_alive_timeout_is_read_as_it_says_it() {
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(said(&[]), None);
        assert_eq!(said(&["timeout=5"]), secs(5), "Node.js's default");
        assert_eq!(said(&["timeout=5, max=100"]), secs(5), "Apache's");
        assert_eq!(
            said(&["max=100,Timeout = 7"]),
            secs(7),
            "any order and case"
        );
        assert_eq!(said(&["timeout=\"3\""]), secs(3), "quoted");
        assert_eq!(
            said(&["timeout=9", "timeout=4"]),
            secs(4),
            "the shortest said"
        );
        assert_eq!(said(&["timeout=0"]), secs(0));
        assert_eq!(
            said(&["timeout=99999999999999999999999"]),
            Some(Duration::MAX),
            "too long for u64: longer than any idle timeout, not an error"
        );
        for junk in [
            "timeout",
            "timeout=",
            "timeout=-1",
            "timeout=+5",
            "timeout=1.5",
            "timeout=abc",
            "timeouts=5",
            "max=3",
        ] {
            assert_eq!(said(&[junk]), None, "{junk:?} says nothing");
        }
    }

    /// A pool keeping 4 idle connections per host, with `max_http2_streams` (0: HTTP/2
    /// off), and the key of an `https` upstream.
    pub(super) fn tls_pool(max_http2_streams: usize) -> (Pool, PoolKey) {
        let pool = Pool::new(PoolLimits {
            max_idle_per_host: 4,
            idle_timeout: Duration::from_secs(30),
            max_http2_streams,
            http2_keep_alive: None,
        });
        let key = PoolKey {
            worker: 0,
            tls: true,
            host: "h".into(),
            port: 443,
            ca_bundle: None,
        };
        (pool, key)
    }

    #[test]
    fn a_dial_that_ends_without_a_connection_leaves_nothing_behind() {
        let (pool, key) = tls_pool(10);
        let Checkout::Open(Some(dial)) = pool.checkout(&key, 1, true) else {
            panic!("the first attempt opens the connection");
        };
        assert!(
            matches!(pool.checkout(&key, 1, true), Checkout::Wait(_)),
            "the next one waits for it"
        );
        drop(dial);
        assert!(
            pool.lock().http2.is_empty(),
            "no entry for a host with nothing"
        );
        assert!(
            matches!(pool.checkout(&key, 1, true), Checkout::Open(Some(_))),
            "the next attempt dials again"
        );
    }
}

#[cfg(test)]
mod http2_dial_tests {
    use super::tests::tls_pool;
    use super::*;

    /// The dial an attempt waits for never ends (its server completed TLS, picked `h2`, and
    /// never sends its SETTINGS): the wait still does, at its limit, so that the attempt
    /// looks again and, after its few waits, opens a connection of its own. It waited for
    /// ever (until its own first-byte timeout).
    #[tokio::test(start_paused = true)]
    async fn a_wait_for_another_attempts_http2_dial_is_bounded() {
        let (pool, key) = tls_pool(10);
        let Checkout::Open(Some(_dial)) = pool.checkout(&key, 1, true) else {
            panic!("the first attempt opens the connection");
        };
        let Checkout::Wait(waiting) = pool.checkout(&key, 1, true) else {
            panic!("the next one waits for it");
        };
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(3600), waiting.until_woken())
            .await
            .expect("the wait ends while the dial does not");
        assert_eq!(started.elapsed(), HTTP2_DIAL_WAIT_LIMIT);
        assert!(
            matches!(pool.checkout(&key, 1, false), Checkout::Open(None)),
            "once it may wait no more, it opens its own, beside the dial"
        );
    }
}

#[cfg(test)]
mod idle_bound_tests {
    use super::*;

    /// An HTTP/1.1 connection over an in-memory pipe, the pipe's upstream end, and what
    /// says hyper's driver of it has ended (the connection is closed).
    async fn http1_conn() -> (
        Conn,
        tokio::io::DuplexStream,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (sender, conn) = http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(ours))
            .await
            .expect("handshake");
        let (done, ended) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = conn.await;
            let _ = done.send(());
        });
        (Conn::new(sender, task), theirs, ended)
    }

    /// A pool keeping `max_idle_per_host` idle HTTP/1.1 connections per host, HTTP/2 off,
    /// and the key of an `http` upstream.
    fn http_pool(max_idle_per_host: usize) -> (Pool, PoolKey) {
        let pool = Pool::new(PoolLimits {
            max_idle_per_host,
            idle_timeout: Duration::from_secs(30),
            max_http2_streams: 0,
            http2_keep_alive: None,
        });
        let key = PoolKey {
            worker: 0,
            tls: false,
            host: "h".into(),
            port: 80,
            ca_bundle: None,
        };
        (pool, key)
    }

    /// The upstream restarted: the connection kept idle is closed, yet listed until the
    /// next checkout or reap. Counted against the bound, it made the pool close the good
    /// connection that came back after it.
    #[tokio::test]
    async fn a_closed_idle_connection_does_not_take_the_place_of_a_good_one() {
        let (pool, key) = http_pool(1);
        let (old, old_upstream, old_ended) = http1_conn().await;
        pool.put(key.clone(), old, Instant::now(), 1, None);
        assert_eq!(pool.idle().get(&key), Some(&1));
        drop(old_upstream);
        old_ended.await.expect("hyper's driver ended");
        assert_eq!(pool.idle().get(&key), None, "closed");
        let (good, _good_upstream, _) = http1_conn().await;
        pool.put(key.clone(), good, Instant::now(), 1, None);
        assert_eq!(pool.idle().get(&key), Some(&1), "the good one is kept");
        assert_eq!(pool.lock().idle[&key].len(), 1, "the closed one is gone");
    }

    /// A connection that comes back in an instant goes to the request that returned it at
    /// once, and to any other from the next instant on, whatever order the runtime runs
    /// their tasks in (see [`Returned`]).
    #[tokio::test(start_paused = true)]
    async fn a_connection_returned_this_instant_is_offered_to_others_from_the_next() {
        let (pool, key) = http_pool(4);
        let (conn, _upstream, _) = http1_conn().await;
        let (returner, other) = (7, 8);
        pool.put(key.clone(), conn, Instant::now(), returner, None);
        assert!(
            matches!(pool.checkout(&key, other, false), Checkout::Open(None)),
            "another request in the same instant opens its own"
        );
        assert_eq!(pool.idle().get(&key), Some(&1), "and leaves it idle");
        let Checkout::Kept(lease) = pool.checkout(&key, returner, false) else {
            panic!("the request that returned it takes it again at once");
        };
        let mut lease = lease;
        lease.reusable();
        drop(lease);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            matches!(pool.checkout(&key, other, false), Checkout::Kept(_)),
            "from the next instant on, anyone takes it"
        );
    }

    /// Two connections returned in the same instant: which one a later request takes does
    /// not depend on the order the runtime ran their returns in (explore case 98003742: a
    /// stream and a non-stream run of the same traffic gave a later request different
    /// connections, one its server had closed).
    #[tokio::test(start_paused = true)]
    async fn connections_returned_in_one_instant_are_taken_in_the_same_order_whatever_ran_first() {
        let mut left = Vec::new();
        for returners in [[3, 5], [5, 3]] {
            let (pool, key) = http_pool(4);
            let mut upstreams = Vec::new();
            let now = Instant::now();
            for by in returners {
                let (conn, upstream, _) = http1_conn().await;
                upstreams.push(upstream);
                pool.put(key.clone(), conn, now, by, None);
            }
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(pool.take(&key, 9).is_some());
            left.push(pool.lock().idle[&key][0].returned.by);
        }
        assert_eq!(left[0], left[1], "the same one is left idle in both orders");
    }

    #[test]
    fn a_return_is_offered_to_its_own_request_at_once_and_to_others_later() {
        let at = Instant::now();
        let returned = Returned { at, by: 3 };
        assert!(returned.offered_to(3, at));
        assert!(!returned.offered_to(4, at));
        assert!(returned.offered_to(4, at + Duration::from_nanos(1)));
    }
}

#[cfg(test)]
mod tls_dial_tests {
    use super::tests::tls_pool;
    use super::*;

    /// Two attempts wait for TLS dial slots and two dials end before either is first
    /// polled: both are woken. Registered only when first polled, they shared one permit
    /// and the second waited until the wait's limit (for ever, before there was one).
    #[tokio::test(start_paused = true)]
    async fn every_waiter_for_a_tls_dial_slot_is_woken_however_late_it_is_polled() {
        let (pool, key) = tls_pool(0);
        let mut dials: Vec<Dial> = (0..MAX_TLS_DIALS_PER_HOST)
            .map(|_| match pool.checkout(&key, 1, true) {
                Checkout::Open(Some(dial)) => dial,
                _ => panic!("room for a dial"),
            })
            .collect();
        let mut waiting = Vec::new();
        for _ in 0..2 {
            match pool.checkout(&key, 1, true) {
                Checkout::Wait(w) => waiting.push(w),
                _ => panic!("past the cap, an attempt waits"),
            }
        }
        assert!(
            matches!(pool.checkout(&key, 1, false), Checkout::Open(Some(_))),
            "one that may not wait dials past the cap"
        );
        dials.truncate(MAX_TLS_DIALS_PER_HOST - 2);
        let started = tokio::time::Instant::now();
        for w in waiting {
            w.until_woken().await;
        }
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "both were woken by the dials that ended, not by the wait's limit"
        );
        drop(dials);
        assert!(pool.lock().tls_dials.is_empty(), "no count left behind");
    }

    /// Every dial ends while more attempts wait than there were dials: every waiter is
    /// woken, the one left over too. The count's entry was removed with its last dial
    /// and each ending dial woke one waiter, so the one left over sat out the wait's
    /// limit (the next dials woke a new `Notify`).
    #[tokio::test(start_paused = true)]
    async fn a_waiter_left_over_when_every_dial_ended_is_woken_by_the_next_dials() {
        let (pool, key) = tls_pool(0);
        let checkout_dial = || match pool.checkout(&key, 1, true) {
            Checkout::Open(Some(dial)) => dial,
            _ => panic!("room for a dial"),
        };
        let dials: Vec<Dial> = (0..MAX_TLS_DIALS_PER_HOST)
            .map(|_| checkout_dial())
            .collect();
        let mut waiting: Vec<Waiting> = (0..=MAX_TLS_DIALS_PER_HOST)
            .map(|_| match pool.checkout(&key, 1, true) {
                Checkout::Wait(w) => w,
                _ => panic!("past the cap, an attempt waits"),
            })
            .collect();
        let left_over = waiting.pop().expect("one more waiter than dials");
        drop(dials);
        let started = tokio::time::Instant::now();
        for w in waiting {
            w.until_woken().await;
        }
        let again: Vec<Dial> = (0..MAX_TLS_DIALS_PER_HOST)
            .map(|_| checkout_dial())
            .collect();
        drop(again);
        left_over.until_woken().await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "the waiter left over was woken by the next dials, not by the wait's limit"
        );
        assert!(pool.lock().tls_dials.is_empty(), "no count left behind");
    }
}
