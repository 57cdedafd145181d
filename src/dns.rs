//! Real TCP to upstreams with DNS answers cached for a bounded time.
//!
//! Owns: [`CachedDnsConnector`], the [`Connector`] `serve` reaches upstreams with. A host
//! name is resolved once and its addresses reused for `limits.dns_cache_ttl` seconds (at
//! most `limits.max_dns_cache_entries` names are kept), so that a new connection does not pay
//! a lookup; a name whose every address failed to connect, or whose connect was abandoned
//! before any did, is forgotten at once, so that a provider that moved is looked up again on
//! the next attempt. Concurrent attempts that miss the cache for the same name share one
//! lookup. A name with several addresses is connected to as RFC 8305 ("Happy Eyeballs")
//! says: addresses are tried alternating families (IPv6, IPv4, IPv6... when the first is
//! IPv6), the next one when the one before has not answered within
//! [`CONNECTION_ATTEMPT_DELAY`], while the earlier tries go on, and the first to connect
//! wins; so one address that swallows connections (a broken IPv6 route, a dead host) costs
//! each new connection that delay, not its whole timeout. The address that connected is
//! tried first next time. When every address failed, the error reported is the one that
//! says most about the upstream (one address refused beats another's family being off), for
//! it decides whether the deployment or the gateway is blamed. Does not own the connections
//! themselves (the pool in `upstream::pool` keeps those) nor TLS (`upstream::tls`).
//!
//! The system resolver does not say how long an answer may be kept, so the bound is ours:
//! short enough that a DNS change is seen within it, long enough that a busy gateway looks
//! each provider up a few times a minute at most.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::transport::{BoxFuture, BoxIo, Connector};

/// How long one address has to connect before the next one is tried alongside it (RFC 8305
/// §5 recommends 250 ms): longer than a connect to any reachable provider usually takes.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// One lookup of a name, shared by the attempts that wanted it at the same time: its
/// addresses, or its error (as kind and message: `io::Error` is not `Clone`).
type SharedLookup = Arc<tokio::sync::OnceCell<Result<Vec<SocketAddr>, (io::ErrorKind, String)>>>;

/// Connects over real TCP, caching what host names resolve to.
#[derive(Debug)]
pub struct CachedDnsConnector {
    cache: Mutex<BTreeMap<(String, u16), Answer>>,
    /// The lookup in flight per name: attempts that miss the cache together share its
    /// answer, or its failure, instead of each making their own (or waiting in turn).
    resolving: Mutex<BTreeMap<(String, u16), SharedLookup>>,
    ttl: Duration,
    max_entries: usize,
    lookups: AtomicU64,
}

#[derive(Debug, Clone)]
struct Answer {
    addrs: Vec<SocketAddr>,
    expires: Instant,
}

impl CachedDnsConnector {
    /// Keeps each answer for `ttl` (zero: never cached), and at most `max_entries` answers.
    pub fn new(ttl: Duration, max_entries: usize) -> CachedDnsConnector {
        CachedDnsConnector {
            cache: Mutex::default(),
            resolving: Mutex::default(),
            ttl,
            max_entries,
            lookups: AtomicU64::new(0),
        }
    }

    /// Lookups made so far (cache misses).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_string(), port);
        if let Some(addrs) = self.cached(&key) {
            return Ok(addrs);
        }
        let lookup = self
            .resolving
            .lock()
            .expect("dns lookup lock poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        // The first attempt looks up; the others wait for its answer (if it is abandoned
        // half-way, the next one in line looks up instead).
        let answer = lookup
            .get_or_init(|| async {
                self.look_up(host, port, key.clone())
                    .await
                    .map_err(|e| (e.kind(), e.to_string()))
            })
            .await
            .clone();
        // Done: attempts arriving from now on look up afresh (or find the answer cached).
        // The map holds only lookups in flight, and one left by a cancelled attempt is
        // reused by the next.
        let mut resolving = self.resolving.lock().expect("dns lookup lock poisoned");
        if resolving.get(&key).is_some_and(|l| Arc::ptr_eq(l, &lookup)) {
            resolving.remove(&key);
        }
        answer.map_err(|(kind, message)| io::Error::new(kind, message))
    }

    /// A cached answer still within its time.
    fn cached(&self, key: &(String, u16)) -> Option<Vec<SocketAddr>> {
        let now = Instant::now();
        self.lock()
            .get(key)
            .filter(|answer| answer.expires > now)
            .map(|answer| answer.addrs.clone())
    }

    async fn look_up(
        &self,
        host: &str,
        port: u16,
        key: (String, u16),
    ) -> io::Result<Vec<SocketAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let addrs = interleave_families(tokio::net::lookup_host((host, port)).await?.collect());
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{host}` resolves to no address"),
            ));
        }
        if !self.ttl.is_zero() && self.max_entries > 0 {
            let mut cache = self.lock();
            if cache.len() >= self.max_entries && !cache.contains_key(&key) {
                let now = Instant::now();
                cache.retain(|_, a| a.expires > now);
                if cache.len() >= self.max_entries {
                    // Still full: drop the answer that would have expired first.
                    let soonest = cache
                        .iter()
                        .min_by_key(|(_, a)| a.expires)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = soonest {
                        cache.remove(&k);
                    }
                }
            }
            cache.insert(
                key,
                Answer {
                    addrs: addrs.clone(),
                    expires: Instant::now() + self.ttl,
                },
            );
        }
        Ok(addrs)
    }

    fn forget(&self, host: &str, port: u16) {
        self.lock().remove(&(host.to_string(), port));
    }

    /// Puts the address that just connected first in the cached answer.
    fn prefer(&self, host: &str, port: u16, addr: SocketAddr) {
        if let Some(answer) = self.lock().get_mut(&(host.to_string(), port))
            && let Some(at) = answer.addrs.iter().position(|a| *a == addr)
        {
            answer.addrs[..=at].rotate_right(1);
            // Its family first now, the families alternating still.
            answer.addrs = interleave_families(std::mem::take(&mut answer.addrs));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u16), Answer>> {
        // Held for plain map edits only, which cannot panic half-way.
        self.cache.lock().expect("dns cache lock poisoned")
    }
}

impl Connector for CachedDnsConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move {
            let addrs = self.resolve(host, port).await?;
            // Armed until an address connects: a connect abandoned half-way (the attempt's
            // first-byte timeout, while every address swallows SYNs) proves no more than one
            // that failed, and returns no error to forget on.
            let forget = ForgetUnlessConnected {
                connector: self,
                host,
                port,
            };
            let (stream, addr) = connect_any(&addrs, CONNECTION_ATTEMPT_DELAY).await?;
            forget.connected();
            if addrs.first() != Some(&addr) {
                self.prefer(host, port, addr);
            }
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

/// The order addresses are tried in (RFC 8305 §4): the first one's family, then the other,
/// alternately, each family in its own order. getaddrinfo lists every IPv6 address before
/// any IPv4 one (RFC 6724), so with a broken IPv6 route each of them cost
/// [`CONNECTION_ATTEMPT_DELAY`] before an IPv4 address was tried at all.
fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_is_v6 = first.is_ipv6();
    let (mut first_family, mut other): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for addr in &addrs {
        if addr.is_ipv6() == first_is_v6 {
            first_family.push(*addr);
        } else {
            other.push(*addr);
        }
    }
    let (mut first_family, mut other) = (first_family.into_iter(), other.into_iter());
    let mut ordered = Vec::with_capacity(addrs.len());
    loop {
        match (first_family.next(), other.next()) {
            (None, None) => return ordered,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
}

/// Forgets a name's answer when dropped: a connect to it ended without a connection,
/// failed or abandoned.
struct ForgetUnlessConnected<'a> {
    connector: &'a CachedDnsConnector,
    host: &'a str,
    port: u16,
}

impl ForgetUnlessConnected<'_> {
    fn connected(self) {
        // Nothing to free: it holds references only.
        std::mem::forget(self);
    }
}

impl Drop for ForgetUnlessConnected<'_> {
    fn drop(&mut self) {
        self.connector.forget(self.host, self.port);
    }
}

/// Connects to the first of `addrs` that answers: each is tried in turn, the next one as
/// soon as a try fails or when the last one started has not connected within `delay`, the
/// earlier ones going on meanwhile. The tries still running when one connects are dropped.
/// With every address failed, the error that says most about the upstream (see
/// [`how_telling`]), the first of those that say as much.
async fn connect_any(addrs: &[SocketAddr], delay: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    connect_any_with(addrs, delay, TcpStream::connect).await
}

/// [`connect_any`] with `dial` making each try: the tests' seam, for errors a real socket
/// cannot be made to give on demand (an address family turned off in a container).
async fn connect_any_with<S, F, Fut>(
    addrs: &[SocketAddr],
    delay: Duration,
    dial: F,
) -> io::Result<(S, SocketAddr)>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: Send + 'static,
{
    let mut next = addrs.iter().copied();
    let mut tries = JoinSet::new();
    let mut reported: Option<io::Error> = None;
    // When the next address is tried if nothing has happened by then.
    let next_try = tokio::time::sleep(delay);
    tokio::pin!(next_try);
    let mut start_next = true;
    loop {
        if std::mem::take(&mut start_next)
            && let Some(addr) = next.next()
        {
            let dialing = dial(addr);
            tries.spawn(async move { (addr, dialing.await) });
            next_try.as_mut().reset(Instant::now() + delay);
        }
        if tries.is_empty() {
            return Err(reported.take().unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
            }));
        }
        tokio::select! {
            biased;
            done = tries.join_next() => match done {
                Some(Ok((addr, Ok(stream)))) => return Ok((stream, addr)),
                Some(Ok((_, Err(e)))) => {
                    keep_most_telling(&mut reported, e);
                    start_next = true;
                }
                // A try panicked or was cancelled: another address may still answer.
                Some(Err(e)) => {
                    keep_most_telling(&mut reported, io::Error::other(e));
                    start_next = true;
                }
                None => {}
            },
            () = &mut next_try, if next.len() > 0 => start_next = true,
        }
    }
}

/// Makes `e` the error to report if it says more than the one kept so far.
fn keep_most_telling(reported: &mut Option<io::Error>, e: io::Error) {
    if reported
        .as_ref()
        .is_none_or(|r| how_telling(&e) > how_telling(r))
    {
        *reported = Some(e);
    }
}

/// How much a failed connect says about the upstream, to choose the error reported when
/// every address failed (`client` judges the attempt by it). An answer from the upstream's
/// host, or the kernel giving up on one that never answered, is the upstream's state. An
/// address this host cannot use (its family turned off, as IPv6 often is in containers; no
/// route to it) says nothing about the upstream while another address could be tried.
/// Lowest, `AddrNotAvailable`: `client` reads it as the gateway out of ephemeral ports,
/// which holds only when every address said it; with `localhost` resolving to 127.0.0.1
/// and ::1 in a container without IPv6, a refused 127.0.0.1 and an unbindable ::1 blamed a
/// dead upstream on the gateway, and it was never cooled.
fn how_telling(e: &io::Error) -> u8 {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut => 3,
        NetworkUnreachable | HostUnreachable | NetworkDown => 1,
        AddrNotAvailable => 0,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listener() -> (tokio::net::TcpListener, u16) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        (l, port)
    }

    #[tokio::test]
    async fn a_name_is_looked_up_once_within_its_ttl() {
        let (_l, port) = listener().await;
        let c = CachedDnsConnector::new(Duration::from_secs(30), 8);
        c.connect("localhost", port).await.expect("first");
        c.connect("localhost", port).await.expect("second");
        assert_eq!(c.lookups(), 1);
    }

    #[tokio::test]
    async fn a_zero_ttl_looks_up_every_time() {
        let (_l, port) = listener().await;
        let c = CachedDnsConnector::new(Duration::ZERO, 8);
        c.connect("localhost", port).await.expect("first");
        c.connect("localhost", port).await.expect("second");
        assert_eq!(c.lookups(), 2);
    }

    #[tokio::test]
    async fn an_address_literal_needs_no_lookup() {
        let (_l, port) = listener().await;
        let c = CachedDnsConnector::new(Duration::from_secs(30), 8);
        c.connect("127.0.0.1", port).await.expect("connected");
        assert_eq!(c.lookups(), 0);
    }

    #[tokio::test]
    async fn a_failed_connect_forgets_the_answer() {
        let (l, port) = listener().await;
        drop(l);
        let c = CachedDnsConnector::new(Duration::from_secs(30), 8);
        assert!(c.connect("localhost", port).await.is_err());
        assert!(c.connect("localhost", port).await.is_err());
        assert_eq!(c.lookups(), 2, "looked up again after the failure");
    }

    /// A listener that accepts no connection and whose queue is full: the kernel drops
    /// further SYNs, so a connect to it hangs as one to a dead host does.
    async fn swallowing_listener() -> (tokio::net::TcpListener, Vec<TcpStream>, SocketAddr) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let listener = socket.listen(1).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut queued = Vec::new();
        for _ in 0..64 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => queued.push(stream),
                _ => return (listener, queued, addr),
            }
        }
        panic!("the kernel took 64 connections into a queue of 1: no SYN was dropped");
    }

    /// A connector whose cached answer for `example.test:port` is `addrs`.
    fn answering(port: u16, addrs: Vec<SocketAddr>) -> CachedDnsConnector {
        let c = CachedDnsConnector::new(Duration::from_secs(30), 8);
        let expires = Instant::now() + Duration::from_secs(30);
        c.lock().insert(
            ("example.test".to_string(), port),
            Answer { addrs, expires },
        );
        c
    }

    #[tokio::test]
    async fn an_address_that_swallows_connections_does_not_hold_back_the_next() {
        let (_swallowing, _queued, dead) = swallowing_listener().await;
        let (_l, port) = listener().await;
        let alive = SocketAddr::from(([127, 0, 0, 1], port));
        let c = answering(port, vec![dead, alive]);
        // Far longer than the delay, far shorter than the kernel's SYN retries (minutes).
        tokio::time::timeout(Duration::from_secs(20), c.connect("example.test", port))
            .await
            .expect("the second address is tried while the first hangs")
            .expect("connected");
        let key = ("example.test".to_string(), port);
        assert_eq!(c.lock()[&key].addrs, [alive, dead], "tried first next time");
    }

    #[tokio::test]
    async fn a_connect_abandoned_before_any_address_answered_forgets_the_answer() {
        // The attempt's first-byte timeout ends the connect while its only address swallows
        // SYNs: the answer may be stale (the provider moved), and must not be used again
        // for the rest of its time.
        let (_swallowing, _queued, dead) = swallowing_listener().await;
        let c = answering(dead.port(), vec![dead]);
        let abandoned = tokio::time::timeout(
            CONNECTION_ATTEMPT_DELAY,
            c.connect("example.test", dead.port()),
        )
        .await;
        assert!(abandoned.is_err(), "the address swallows connections");
        assert!(c.lock().is_empty(), "the answer is forgotten");
    }

    #[test]
    fn addresses_are_tried_alternating_families_the_first_ones_family_first() {
        let v6 = |n: u16| {
            SocketAddr::from((
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n),
                443,
            ))
        };
        let v4 = |n: u8| SocketAddr::from(([192, 0, 2, n], 443));
        // getaddrinfo's order: every IPv6 address first (RFC 6724).
        assert_eq!(
            interleave_families(vec![v6(1), v6(2), v6(3), v4(1), v4(2)]),
            [v6(1), v4(1), v6(2), v4(2), v6(3)]
        );
        assert_eq!(
            interleave_families(vec![v4(1), v4(2), v4(3), v6(1)]),
            [v4(1), v6(1), v4(2), v4(3)]
        );
        assert_eq!(
            interleave_families(vec![v4(1), v6(1), v6(2), v4(2)]),
            [v4(1), v6(1), v4(2), v6(2)],
            "each family keeps its own order"
        );
        assert_eq!(interleave_families(vec![v6(1), v6(2)]), [v6(1), v6(2)]);
        assert_eq!(interleave_families(Vec::new()), []);
    }

    #[tokio::test]
    async fn a_refused_address_hands_over_at_once() {
        let (_l, port) = listener().await;
        let alive = SocketAddr::from(([127, 0, 0, 1], port));
        let refused = {
            let (l, port) = listener().await;
            drop(l);
            SocketAddr::from(([127, 0, 0, 1], port))
        };
        let never = Duration::from_secs(3600);
        let (_, addr) = connect_any(&[refused, alive], never)
            .await
            .expect("connected");
        assert_eq!(addr, alive);
        assert!(connect_any(&[refused], never).await.is_err());
        assert!(connect_any(&[], never).await.is_err());
    }

    /// Every address fails at once, each with its own error: the one reported is what
    /// the attempt is judged by (`client` reads `AddrNotAvailable` as the gateway's own
    /// shortage: never cooling, a 503 to the client). `localhost` in a container with IPv6
    /// off resolves to 127.0.0.1 and ::1; with the upstream down, 127.0.0.1 refuses and ::1
    /// cannot even be bound (EADDRNOTAVAIL). Reporting the last error blamed a dead upstream
    /// on the gateway, and it was never cooled.
    #[tokio::test(start_paused = true)]
    async fn the_error_reported_when_every_address_fails_is_the_one_that_says_most() {
        use io::ErrorKind::*;
        let v4 = SocketAddr::from(([127, 0, 0, 1], 11434));
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 11434));
        let cases = [
            // The upstream's own answer beats an address this host cannot use.
            (
                [(v4, ConnectionRefused), (v6, AddrNotAvailable)],
                ConnectionRefused,
            ),
            (
                [(v6, AddrNotAvailable), (v4, ConnectionRefused)],
                ConnectionRefused,
            ),
            (
                [(v4, ConnectionReset), (v6, NetworkUnreachable)],
                ConnectionReset,
            ),
            ([(v6, HostUnreachable), (v4, TimedOut)], TimedOut),
            // Only when every address says it is it the gateway's shortage (its ports).
            (
                [(v4, AddrNotAvailable), (v6, AddrNotAvailable)],
                AddrNotAvailable,
            ),
            (
                [(v4, AddrNotAvailable), (v6, NetworkUnreachable)],
                NetworkUnreachable,
            ),
            (
                [(v6, NetworkUnreachable), (v4, AddrNotAvailable)],
                NetworkUnreachable,
            ),
        ];
        for (answers, expected) in cases {
            let addrs: Vec<SocketAddr> = answers.iter().map(|(a, _)| *a).collect();
            let dial = |addr: SocketAddr| {
                let kind = answers
                    .iter()
                    .find(|(a, _)| *a == addr)
                    .map(|(_, k)| *k)
                    .expect("an address of the answer");
                std::future::ready(Err::<(), _>(io::Error::from(kind)))
            };
            let error = connect_any_with(&addrs, Duration::from_secs(3600), dial)
                .await
                .expect_err("every address fails");
            assert_eq!(error.kind(), expected, "{answers:?}");
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_lookup() {
        let (_l, port) = listener().await;
        let c = Arc::new(CachedDnsConnector::new(Duration::from_secs(30), 8));
        let mut tasks = JoinSet::new();
        for _ in 0..20 {
            let c = c.clone();
            tasks.spawn(async move { c.connect("localhost", port).await.map(|_| ()) });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task").expect("connected");
        }
        assert_eq!(c.lookups(), 1);
        assert!(
            c.resolving.lock().unwrap().is_empty(),
            "no lookup left behind"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_share_a_failed_lookup_and_an_uncached_one() {
        for (name, ttl, ok) in [
            ("localhost", Duration::ZERO, true),
            ("no-such-host.invalid", Duration::from_secs(30), false),
        ] {
            let c = Arc::new(CachedDnsConnector::new(ttl, 8));
            let mut tasks = JoinSet::new();
            for _ in 0..20 {
                let c = c.clone();
                tasks.spawn(async move { c.resolve(name, 443).await.map(|_| ()) });
            }
            while let Some(done) = tasks.join_next().await {
                assert_eq!(done.expect("task").is_ok(), ok, "{name}");
            }
            assert_eq!(c.lookups(), 1, "one lookup for all twenty: {name}");
        }
    }

    #[tokio::test]
    async fn the_cache_keeps_at_most_its_bound() {
        let (_a, pa) = listener().await;
        let (_b, pb) = listener().await;
        let c = CachedDnsConnector::new(Duration::from_secs(30), 1);
        c.connect("localhost", pa).await.expect("a");
        c.connect("localhost", pb).await.expect("b");
        assert_eq!(c.lock().len(), 1);
        c.connect("localhost", pb).await.expect("b again");
        assert_eq!(c.lookups(), 2, "b's answer is the one kept");
    }
}
