//! How long each message takes on the simulated network, decided so that the two modes of
//! a scenario cannot drift apart in time.
//!
//! Owns: [`Net`], which gives every message its latency (and decides a `fail_rate` loss),
//! and [`LinkStream`], the byte stream every simulated connection is wrapped in, at both
//! ends, so that latency is applied here rather than by turmoil. turmoil runs with zero
//! latency: it still carries the bytes, orders them, and applies partitions, holds and
//! crashes. Does not own the hosts or the fault schedule (`world`).
//!
//! # Why the modes cannot drift apart
//!
//! turmoil draws every message's latency from one RNG shared by the whole world, in the
//! order the messages are sent. The client-side traffic differs by mode (many SSE frames
//! against one JSON body), so with turmoil's own latency every later gateway↔provider
//! message got a different draw in each mode, and concurrent requests crossed cooldowns in
//! a different order. Here no draw is shared:
//!
//! * **Gateway↔provider messages**: the latency of a message is a pure function of (the
//!   scenario's seed, the connection's identity, the message's direction and number on that
//!   connection) — [`Net::drawn`]. A connection's identity is the gateway request it
//!   carries (the `x-switchback-request-id` of the first message its opener sends; that
//!   message's hash if it has none) and how many earlier connections from the gateway to
//!   the same provider carried the same request (its attempts, which come one after
//!   another). Nothing another connection or link does can change it: there is no RNG
//!   state to consume, and no dependence on the order in which concurrent requests happen
//!   to open their connections within one step (which does differ by mode: a non-streaming
//!   request runs the attempt loop in its connection's task, a stream in a task of its
//!   own). Opening a connection costs one more drawn latency, added to its first message.
//! * **Client↔gateway messages** take one fixed latency (`network.client_latency_ms`,
//!   default the low end of `latency_ms`). A response ends at the same instant in both
//!   modes (its one body, or its last SSE frame and `[DONE]`, are written when the upstream
//!   ends), so the client sees the end at the same instant too, and a request that waits
//!   for it (`concurrency`, `sequential`) leaves at the same instant.
//! * turmoil's latency is zero, so its RNG decides no timing at all (and `fail_rate` losses
//!   are drawn here, per message, not from turmoil's RNG).
//!
//! By induction over simulated time: requests reach the gateway at the same instants in both
//! modes; the engine sends each request's upstream requests with the same bytes in the same
//! order (its promise, which the oracle checks); each of those messages therefore takes the
//! same time, and every provider-side event — arrival, fault, timeout, cooldown start and
//! end — lands on the same simulated instant. Only the client-side bytes differ, and nothing
//! on the provider side reads them. If the engine itself diverged (different upstream bytes,
//! as under `mid_stream: continue` before both modes asked for the same continuation), the
//! timings would follow, and the oracle reports the engine's divergence, which is the point.
//! (So would an engine whose shared state depended on the order in which the runtime runs
//! two requests' tasks in one instant, an order that does differ by mode:
//! `sim/tests/same_instant/` keeps the two cases that showed it before the engine combined
//! an instant's outcomes by a fixed rule.)
//!
//! A message is handed to turmoil when its latency has passed and arrives at the receiving
//! host's next step: up to one step later than its latency says, the same in both modes.
//! Upstream messages that fall due in the same instant are handed over in one fixed order
//! ([`super::handoff`]): the receiving host reads them in that order, and a fake provider
//! numbers its calls by it.
//!
//! [`WorldOptions::shared_latency_rng`](super::WorldOptions) restores the old behaviour (one
//! RNG for every message of every link, the client's included) so a test can prove the
//! oracle and `explore` notice the drift.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::Instant;
use turmoil::net::TcpStream;
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::handoff::{HandOff, Posting};

/// Messages one direction of a connection may have in flight; a writer past this waits
/// (as a full socket buffer would make it). A scenario's `network.tcp_capacity` lowers it,
/// so that a reader that stops pushes back on its writer through this layer too.
pub const MAX_MESSAGES_IN_FLIGHT: usize = 4096;

/// Which link a connection is on: it decides how its latency is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// Client ↔ gateway: a fixed latency.
    Client,
    /// Gateway ↔ provider: a latency drawn per message from (seed, connection, number).
    Upstream,
}

/// Which end of a connection a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It connected (and names the connection by what it sends first).
    Opener,
    /// It accepted.
    Acceptor,
}

/// The network's timing rules for one run.
pub struct Net {
    seed: u64,
    range_ms: [u64; 2],
    client_ms: u64,
    /// Messages one direction of a connection may have in flight.
    max_in_flight: usize,
    /// What turmoil's own connect handshake costs (one step): a request on a kept
    /// connection waits it too, so that keeping a connection never changes when anything
    /// arrives.
    connect_cost: Duration,
    /// `Some`: the old, drifting behaviour — one RNG state for every message of every link.
    shared: Option<Mutex<u64>>,
    /// Message loss rate per link (host pair, either order).
    fail_rates: Mutex<BTreeMap<(IpAddr, IpAddr), f64>>,
    /// Connections opened so far, per (opener host, target, hash of the first message).
    opened: Mutex<BTreeMap<(IpAddr, SocketAddr, u64), u64>>,
    /// Each named connection's identity, by (opener address, acceptor address).
    names: Mutex<BTreeMap<(SocketAddr, SocketAddr), Named>>,
    /// The order each host hands same-instant upstream messages to turmoil in.
    hand_off: HandOff,
    /// Pipes made so far: each pipe's number on the hand-off boards.
    pipes: AtomicU64,
    /// Whether upstream messages go through `hand_off` (`false` only in tests that show
    /// what it prevents).
    ordered_hand_off: bool,
}

impl Net {
    pub fn new(seed: u64, range_ms: [u64; 2], client_ms: u64, shared_rng: bool) -> Arc<Net> {
        assert!(
            range_ms[0] <= range_ms[1],
            "latency range {range_ms:?} upside down: a scenario is checked for it at load"
        );
        Arc::new(Net {
            seed,
            range_ms,
            client_ms,
            max_in_flight: MAX_MESSAGES_IN_FLIGHT,
            connect_cost: Duration::ZERO,
            shared: shared_rng.then(|| Mutex::new(seed)),
            fail_rates: Mutex::default(),
            opened: Mutex::default(),
            names: Mutex::default(),
            hand_off: HandOff::default(),
            pipes: AtomicU64::new(0),
            ordered_hand_off: true,
        })
    }

    /// Lowers the messages one direction of a connection may have in flight (at least 1).
    pub fn with_max_in_flight(mut self: Arc<Net>, max: usize) -> Arc<Net> {
        Arc::get_mut(&mut self)
            .expect("set before the network is shared")
            .max_in_flight = max.clamp(1, MAX_MESSAGES_IN_FLIGHT);
        self
    }

    /// Whether same-instant upstream messages are handed over in a fixed order (see
    /// `handoff`; the default) or in the order their tasks run.
    pub fn with_ordered_hand_off(mut self: Arc<Net>, ordered: bool) -> Arc<Net> {
        Arc::get_mut(&mut self)
            .expect("set before the network is shared")
            .ordered_hand_off = ordered;
        self
    }

    /// Sets what turmoil's connect handshake costs (the simulation's step).
    pub fn with_connect_cost(mut self: Arc<Net>, cost: Duration) -> Arc<Net> {
        Arc::get_mut(&mut self)
            .expect("set before the network is shared")
            .connect_cost = cost;
        self
    }

    /// Sets the message loss rate between two hosts (a `fail_rate` network fault).
    pub fn set_fail_rate(&self, a: IpAddr, b: IpAddr, rate: f64) {
        self.fail_rates
            .lock()
            .expect("fail rates")
            .insert(pair(a, b), rate);
    }

    fn fail_rate(&self, a: IpAddr, b: IpAddr) -> f64 {
        self.fail_rates
            .lock()
            .expect("fail rates")
            .get(&pair(a, b))
            .copied()
            .unwrap_or(0.0)
    }

    /// The latency of a message identified by `key` on a `kind` link.
    fn latency(&self, kind: LinkKind, key: &[u64]) -> Duration {
        let ms = match (&self.shared, kind) {
            (Some(state), _) => {
                let mut s = state.lock().expect("shared rng");
                *s = mix(*s);
                in_range(self.range_ms, *s)
            }
            (None, LinkKind::Client) => self.client_ms,
            (None, LinkKind::Upstream) => in_range(self.range_ms, Net::drawn(self.seed, key)),
        };
        Duration::from_millis(ms)
    }

    /// A number that depends on `seed` and `key` only: no state, nothing shared.
    pub fn drawn(seed: u64, key: &[u64]) -> u64 {
        key.iter().fold(mix(seed), |h, k| mix(h ^ k))
    }

    /// Whether message `key` on the link `a`–`b` is lost.
    fn lost(&self, a: IpAddr, b: IpAddr, key: &[u64]) -> bool {
        let rate = self.fail_rate(a, b);
        if rate <= 0.0 {
            return false;
        }
        let mut k = key.to_vec();
        k.push(LOSS_SALT);
        // 53 bits of the draw as a uniform number in [0, 1).
        let u = (Net::drawn(self.seed, &k) >> 11) as f64 / (1u64 << 53) as f64;
        u < rate
    }

    /// Names the connection `opener` → `acceptor` by its first message: the gateway request
    /// it carries (`x-switchback-request-id`; the whole message's hash when there is none),
    /// and how many earlier connections from the same host to the same target carried it.
    fn name_opened(&self, opener: SocketAddr, acceptor: SocketAddr, first: &[u8]) -> Named {
        let request = request_id(first);
        let carries = request.map_or_else(|| bytes_key(first), |id| mix(id ^ ID_SALT));
        let nth = {
            let mut opened = self.opened.lock().expect("opened");
            let n = opened.entry((opener.ip(), acceptor, carries)).or_default();
            *n += 1;
            *n
        };
        let named = Named {
            name: mix(carries ^ mix(nth)),
            order: [request.unwrap_or(u64::MAX), nth],
        };
        self.names
            .lock()
            .expect("names")
            .insert((opener, acceptor), named);
        named
    }

    /// The name the opener gave the connection `opener` → `acceptor`, once it has written.
    fn name_of(&self, opener: SocketAddr, acceptor: SocketAddr) -> Option<Named> {
        self.names
            .lock()
            .expect("names")
            .get(&(opener, acceptor))
            .copied()
    }
}

/// A connection's identity on the network (see [`Net::name_opened`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Named {
    /// What its messages' latencies are drawn from.
    name: u64,
    /// Where its messages go among messages its host hands over in the same instant
    /// (`handoff`): the gateway request it carries (`u64::MAX` for none), then its number
    /// among that request's connections to the same target. Readable in a trace: a
    /// provider sees same-instant requests in the gateway's request order.
    order: [u64; 2],
}

const OPEN_SALT: u64 = 0x4f50_454e;
const ID_SALT: u64 = 0x5245_5149_4400;

/// The gateway's request number in an HTTP request head (`x-switchback-request-id: N`).
fn request_id(message: &[u8]) -> Option<u64> {
    const NAME: &[u8] = b"x-switchback-request-id:";
    let head_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let head = &message[..head_end];
    let at = head
        .windows(NAME.len())
        .position(|w| w.eq_ignore_ascii_case(NAME))?;
    let value = &head[at + NAME.len()..];
    let value = value.split(|b| *b == b'\r').next()?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}
const LOSS_SALT: u64 = 0x4c4f_5353;

/// splitmix64's finaliser: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: stable across runs, platforms and Rust versions.
fn bytes_key(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n as u64) ^ ((n >> 64) as u64)
        }
    }
}

fn addr_key(a: SocketAddr) -> u64 {
    mix(ip_key(a.ip())) ^ u64::from(a.port())
}

/// `draw` brought into `[min, max]`. In u128: the range's size, `max - min + 1`, is 2^64
/// when the range is every u64, one past what a u64 holds (a scenario bounds the range
/// well below that; this must not depend on it).
fn in_range([min, max]: [u64; 2], draw: u64) -> u64 {
    let offset = u128::from(draw) % (u128::from(max - min) + 1);
    min + u64::try_from(offset).expect("an offset is at most max - min")
}

fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

/// One direction of a connection, between the writer and its delivery task.
struct Pipe {
    /// Bytes written and not yet handed to turmoil, each with its arrival time, and on an
    /// upstream link its posting on the sender's hand-off board.
    queue: VecDeque<(Instant, Bytes, Option<Posting>)>,
    /// Where this pipe's messages are posted: its number and its sender.
    board: Board,
    /// Arrival time of the last message: a later one never overtakes it.
    last_at: Option<Instant>,
    /// A message was lost: like a TCP gap, nothing after it arrives, not even the close.
    gap: bool,
    /// The writer shut its side down: send FIN once the queue has drained.
    shutdown: bool,
    /// The stream was dropped: hand over its read half, and end once the queue has drained.
    dropped: Option<OwnedReadHalf>,
    closed: bool,
    /// Delivery failed (the peer reset the connection): later writes fail with this.
    error: Option<io::ErrorKind>,
    deliverer: Option<Waker>,
    writer: Option<Waker>,
}

/// A pipe's place on its network's hand-off boards.
#[derive(Clone)]
struct Board {
    net: Arc<Net>,
    sender: IpAddr,
    pipe: u64,
}

impl Board {
    fn withdraw(&self, postings: impl IntoIterator<Item = Posting>) {
        self.net.hand_off.withdraw(self.sender, self.pipe, postings);
    }
}

impl Pipe {
    /// Drops every message not yet handed over (the connection failed or went away).
    fn discard_queue(&mut self) {
        let postings: Vec<Posting> = self.queue.drain(..).filter_map(|(_, _, p)| p).collect();
        self.board.withdraw(postings);
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // A host's crash drops its pipes with messages still queued: they must not hold
        // up the messages of the connections that outlive them.
        self.board
            .net
            .hand_off
            .forget(self.board.sender, self.board.pipe);
    }
}

/// A message its delivery task took off the queue and has not handed over yet.
struct Unsent<'a> {
    board: &'a Board,
    posting: Option<Posting>,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some(posting) = self.posting.take() {
            self.board.withdraw([posting]);
        }
    }
}

/// A simulated TCP connection whose writes arrive after the latency [`Net`] gives them.
pub struct LinkStream {
    read: Option<OwnedReadHalf>,
    pipe: Arc<Mutex<Pipe>>,
    net: Arc<Net>,
    kind: LinkKind,
    end: End,
    local: SocketAddr,
    peer: SocketAddr,
    /// The connection's identity (see [`Net::name_opened`]), once known. A kept-alive
    /// connection is renamed by each request it carries.
    name: Option<Named>,
    /// Messages this side wrote under the current name.
    sent_under_name: u64,
    /// Names the opener gave this connection so far (more than one: it was kept alive).
    names_given: u64,
}

impl LinkStream {
    /// Wraps a connected turmoil stream. Must be called inside the simulation (it spawns the
    /// task that delivers this side's writes).
    pub fn new(
        stream: TcpStream,
        net: Arc<Net>,
        kind: LinkKind,
        end: End,
    ) -> io::Result<LinkStream> {
        let local = stream.local_addr()?;
        let peer = stream.peer_addr()?;
        let (read, write) = stream.into_split();
        let board = Board {
            net: net.clone(),
            sender: local.ip(),
            pipe: net.pipes.fetch_add(1, Ordering::Relaxed),
        };
        let pipe = Arc::new(Mutex::new(Pipe {
            queue: VecDeque::new(),
            board,
            last_at: None,
            gap: false,
            shutdown: false,
            dropped: None,
            closed: false,
            error: None,
            deliverer: None,
            writer: None,
        }));
        tokio::spawn(deliver(write, pipe.clone()));
        Ok(LinkStream {
            read: Some(read),
            pipe,
            net,
            kind,
            end,
            local,
            peer,
            name: None,
            sent_under_name: 0,
            names_given: 0,
        })
    }

    /// The identity `message` is sent under, and its number under it. The opener names
    /// the connection by its first message, and again by every request head that carries
    /// a gateway request id (a kept-alive connection serving its next request); the
    /// acceptor follows the opener's current name. So a request's messages take the same
    /// time whether it got a fresh connection or a kept one.
    fn name(&mut self, message: &[u8]) -> (Named, u64) {
        let name = match self.end {
            End::Opener if self.name.is_none() || request_id(message).is_some() => {
                Some(self.net.name_opened(self.local, self.peer, message))
            }
            End::Opener => self.name,
            End::Acceptor => self.net.name_of(self.peer, self.local),
        };
        // An acceptor that speaks first (no HTTP server does) falls back on the addresses.
        let n = name.unwrap_or_else(|| Named {
            name: mix(addr_key(self.local) ^ mix(addr_key(self.peer))),
            order: [u64::MAX; 2],
        });
        if name.is_some() && self.name != name {
            self.name = name;
            self.sent_under_name = 0;
            self.names_given += 1;
        }
        let nth = self.sent_under_name;
        self.sent_under_name += 1;
        (n, nth)
    }
}

/// Hands this side's messages to turmoil at their arrival times, in order; then closes.
async fn deliver(mut write: OwnedWriteHalf, pipe: Arc<Mutex<Pipe>>) {
    let board = pipe.lock().expect("pipe").board.clone();
    loop {
        let next = std::future::poll_fn(|cx| {
            let mut p = pipe.lock().expect("pipe");
            if let Some(message) = p.queue.pop_front() {
                if let Some(w) = p.writer.take() {
                    w.wake();
                }
                return Poll::Ready(Some(message));
            }
            if p.closed || p.shutdown {
                return Poll::Ready(None);
            }
            p.deliverer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some((at, bytes, posting)) = next else {
            break;
        };
        // Taken off the queue, the message is this task's to withdraw if the task is
        // dropped (its host crashed) before handing it over.
        let unsent = posting.map(|posting| Unsent {
            board: &board,
            posting: Some(posting),
        });
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        if let Some(mut unsent) = unsent {
            let posting = unsent.posting.expect("not handed over yet");
            board
                .net
                .hand_off
                .turn(board.sender, board.pipe, posting)
                .await;
            // `turn` took it off the board.
            unsent.posting = None;
            // If this write has to wait (the reader stopped), this connection holds up
            // nobody else meanwhile.
            board.net.hand_off.stall(board.sender, board.pipe, true);
        }
        let written = write.write_all(&bytes).await;
        if posting.is_some() {
            board.net.hand_off.stall(board.sender, board.pipe, false);
        }
        if let Err(e) = written {
            let mut p = pipe.lock().expect("pipe");
            p.error = Some(e.kind());
            p.discard_queue();
            if let Some(w) = p.writer.take() {
                w.wake();
            }
        }
    }
    let gap = pipe.lock().expect("pipe").gap;
    if gap {
        // Nothing after a lost message arrives, the close included: hold the socket open
        // until the run ends, as a TCP connection waiting for a retransmission would.
        std::future::pending::<()>().await;
    }
    let _ = write.shutdown().await;
    // Wait for the owner to drop the stream before giving up the read half it hands over
    // (dropping a read half with unread data resets the connection, after the data above).
    let read = std::future::poll_fn(|cx| {
        let mut p = pipe.lock().expect("pipe");
        if p.closed {
            return Poll::Ready(p.dropped.take());
        }
        p.deliverer = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
    drop(read);
}

impl AsyncRead for LinkStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.read.as_mut() {
            Some(read) => Pin::new(read).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        let pipe = this.pipe.clone();
        let mut p = pipe.lock().expect("pipe");
        if let Some(kind) = p.error {
            return Poll::Ready(Err(kind.into()));
        }
        if p.shutdown {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if p.queue.len() >= this.net.max_in_flight {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let direction = match this.end {
            End::Opener => 0,
            End::Acceptor => 1,
        };
        let (named, n) = this.name(buf);
        let key = [named.name, direction, n];
        if !p.gap && this.net.lost(this.local.ip(), this.peer.ip(), &key) {
            p.gap = true;
        }
        if p.gap {
            // Accepted, as a socket buffer would, and never delivered.
            return Poll::Ready(Ok(buf.len()));
        }
        let mut latency = this.net.latency(this.kind, &key);
        if this.end == End::Opener && n == 0 {
            // Opening the connection: one more trip before the first message arrives. A
            // request on a kept connection pays it too, and the step turmoil's handshake
            // took, so that whether a connection was kept (which can depend on how fast
            // each mode's client reads) never changes when anything arrives.
            latency += this.net.latency(this.kind, &[key[0], OPEN_SALT]);
            if this.names_given > 1 {
                latency += this.net.connect_cost;
            }
        }
        let at = Instant::now() + latency;
        let at = p.last_at.map_or(at, |last| at.max(last));
        p.last_at = Some(at);
        // Upstream messages are handed to turmoil in a fixed order when several fall due
        // at once (see `handoff`); the client's link has one latency for everything and
        // nothing on the provider side reads it.
        let posting = (this.kind == LinkKind::Upstream && this.net.ordered_hand_off).then(|| {
            let [request, nth] = named.order;
            let posting = (at, [request, nth, named.name, direction, n]);
            this.net
                .hand_off
                .post(p.board.sender, p.board.pipe, posting);
            posting
        });
        p.queue
            .push_back((at, Bytes::copy_from_slice(buf), posting));
        if let Some(w) = p.deliverer.take() {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = self.pipe.lock().expect("pipe");
        p.shutdown = true;
        if let Some(w) = p.deliverer.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LinkStream {
    fn drop(&mut self) {
        let mut p = self.pipe.lock().expect("pipe");
        p.dropped = self.read.take();
        p.closed = true;
        if let Some(w) = p.deliverer.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_depends_on_its_key_only() {
        let a = Net::drawn(7, &[1, 2, 3]);
        assert_eq!(a, Net::drawn(7, &[1, 2, 3]));
        assert_ne!(a, Net::drawn(7, &[1, 2, 4]));
        assert_ne!(a, Net::drawn(8, &[1, 2, 3]));
    }

    #[test]
    fn upstream_latencies_cover_the_range_and_client_latency_is_fixed() {
        let net = Net::new(42, [1, 30], 1, false);
        let seen: std::collections::BTreeSet<u128> = (0..2000)
            .map(|n| net.latency(LinkKind::Upstream, &[1, 0, n]).as_millis())
            .collect();
        assert_eq!(seen.first(), Some(&1));
        assert_eq!(seen.last(), Some(&30));
        assert_eq!(seen.len(), 30, "every value of the range is reachable");
        for n in 0..100 {
            assert_eq!(
                net.latency(LinkKind::Client, &[n]),
                Duration::from_millis(1)
            );
        }
    }

    /// A range as wide as a u64 (its size, 2^64, overflows a u64) and one of a single
    /// value at the top: every draw lands in the range, in both ways of drawing.
    #[test]
    fn latencies_stay_in_ranges_that_reach_u64_max() {
        for range in [[0, u64::MAX], [u64::MAX, u64::MAX], [1, u64::MAX]] {
            for shared in [false, true] {
                let net = Net::new(3, range, 0, shared);
                for n in 0..100 {
                    let ms = net.latency(LinkKind::Upstream, &[1, 0, n]).as_millis();
                    assert!(
                        (u128::from(range[0])..=u128::from(range[1])).contains(&ms),
                        "{ms} outside {range:?}"
                    );
                }
            }
        }
        assert_eq!(in_range([5, 7], 0), 5);
        assert_eq!(in_range([5, 7], 5), 7);
        assert_eq!(in_range([0, u64::MAX], u64::MAX), u64::MAX);
    }

    /// The property the design rests on: what one link sends does not change another's
    /// latencies (the shared RNG, kept for tests, is the counterexample).
    #[test]
    fn client_traffic_does_not_move_upstream_latencies() {
        let upstream = |net: &Net, client_messages: u64| {
            let mut out = Vec::new();
            for n in 0..50 {
                for c in 0..client_messages {
                    net.latency(LinkKind::Client, &[9, c]);
                }
                out.push(net.latency(LinkKind::Upstream, &[1, 0, n]));
            }
            out
        };
        let fresh = || Net::new(5, [1, 30], 1, false);
        assert_eq!(upstream(&fresh(), 1), upstream(&fresh(), 7));
        let shared = || Net::new(5, [1, 30], 1, true);
        assert_ne!(upstream(&shared(), 1), upstream(&shared(), 7));
    }

    #[test]
    fn the_request_id_is_read_from_the_head_only() {
        let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: a:8000\r\nX-Switchback-Request-Id: 17\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(request_id(head), Some(17));
        assert_eq!(
            request_id(b"POST / HTTP/1.1\r\n\r\nx-switchback-request-id: 3"),
            None
        );
        assert_eq!(request_id(b"x-switchback-request-id: nope\r\n\r\n"), None);
    }

    /// A connection is named by the request it carries, not by when it opened: two
    /// requests opening in either order get the same names.
    #[test]
    fn connections_are_named_by_content_not_by_opening_order() {
        let a: SocketAddr = "10.0.0.1:49152".parse().expect("addr");
        let b: SocketAddr = "10.0.0.1:49153".parse().expect("addr");
        let p: SocketAddr = "10.0.0.2:8000".parse().expect("addr");
        let one = Net::new(1, [1, 30], 1, false);
        let (x1, y1) = (
            one.name_opened(a, p, b"request 1"),
            one.name_opened(b, p, b"request 2"),
        );
        let two = Net::new(1, [1, 30], 1, false);
        let (y2, x2) = (
            two.name_opened(a, p, b"request 2"),
            two.name_opened(b, p, b"request 1"),
        );
        assert_eq!((x1, y1), (x2, y2));
        assert_eq!(one.name_of(b, p), Some(y1));
        assert_eq!(
            x1.order,
            [u64::MAX, 1],
            "no request id: ordered after those with one"
        );
        // The second connection opened with the same bytes (a retry) is another connection.
        assert_ne!(one.name_opened(a, p, b"request 1"), x1);
    }
}
