//! Real TCP to upstreams with DNS answers cached for a bounded time.
//!
//! Owns: [`CachedDnsConnector`], the [`Connector`] `serve` reaches upstreams with. A host
//! name is resolved once and its addresses reused for `limits.dns_cache_ttl` seconds (at
//! most `limits.max_dns_cache_entries` names are kept), so that a new connection does not pay
//! a lookup; a name whose every address failed to connect is forgotten at once, so that a
//! provider that moved is looked up again on the next attempt. Does not own the connections
//! themselves (the pool in `upstream::pool` keeps those) nor TLS (`upstream::tls`).
//!
//! The system resolver does not say how long an answer may be kept, so the bound is ours:
//! short enough that a DNS change is seen within it, long enough that a busy gateway looks
//! each provider up a few times a minute at most.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::transport::{BoxFuture, BoxIo, Connector};

/// Connects over real TCP, caching what host names resolve to.
#[derive(Debug)]
pub struct CachedDnsConnector {
    cache: Mutex<BTreeMap<(String, u16), Answer>>,
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
        let now = Instant::now();
        if let Some(answer) = self.lock().get(&key)
            && answer.expires > now
        {
            return Ok(answer.addrs.clone());
        }
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u16), Answer>> {
        // Held for plain map edits only, which cannot panic half-way.
        self.cache.lock().expect("dns cache lock poisoned")
    }
}

impl Connector for CachedDnsConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move {
            let addrs = self.resolve(host, port).await?;
            match tokio::net::TcpStream::connect(&addrs[..]).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    Ok(Box::new(stream) as BoxIo)
                }
                Err(e) => {
                    self.forget(host, port);
                    Err(e)
                }
            }
        })
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
