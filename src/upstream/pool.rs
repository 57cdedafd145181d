//! The upstream connection pool: idle HTTP/1.1 keep-alive connections, per (scheme, host,
//! port), bounded in number and in idle time.
//!
//! Owns: keeping a connection whose last response was read to its end, handing it to the
//! next attempt to the same upstream (most recently used first), closing it when it has been
//! idle for `upstream_pool_idle_timeout` or when the pool for its host is full, and counting
//! what it holds so the simulation can check that nothing else is left open. Does not own
//! opening connections (`client`, through the [`Connector`](crate::transport::Connector)
//! seam) nor deciding whether a failed send may be re-sent (`client`: only when hyper hands
//! the request back unwritten).
//!
//! Why not hyper-util's pooled client: its checkout races an idle connection against a new
//! connect started in the background, so which connection a request gets, and how many are
//! opened, depend on the order tasks run within one instant (which differs between the
//! streaming and non-streaming paths); it does not say what it holds (the simulation's
//! "nothing else is open" invariant needs the exact idle count); and it wants a `Uri`
//! connector where ours speaks host and port. This pool is small because hyper's
//! `http1::SendRequest` already does the hard part: it knows when a connection is closed
//! and gives a request back when it was never written.
//!
//! A connection goes back only from a [`Lease`] marked [`Lease::reusable`]: its response was
//! read to the end of its body. Any other end (a client gone, a timeout, a failure
//! mid-stream, a body over its limit) drops the connection, which closes the socket, so a
//! half-read connection can never serve the next request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use tokio::time::Instant;

/// Where idle connections are kept apart: connections are only ever reused for the same
/// scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolKey {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The CA bundle the connection's certificate was checked against (none: the Mozilla
    /// roots): a connection is never reused under a different trust.
    pub ca_bundle: Option<String>,
}

/// Bounds of the pool (`limits.max_idle_upstream_connections_per_host`,
/// `limits.upstream_pool_idle_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Idle connections kept per (scheme, host, port); 0 turns pooling off.
    pub max_idle_per_host: usize,
    /// How long a connection may stay idle before it is closed.
    pub idle_timeout: Duration,
}

/// One open upstream connection: the sender of its requests and the task that drives it.
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

struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Default)]
struct State {
    /// Idle connections per key, least recently used first.
    idle: BTreeMap<PoolKey, Vec<Idle>>,
    /// Whether a task is closing idle connections as they expire.
    reaper: bool,
}

/// The pool one engine (and its reloaded successors with the same limits) shares.
#[derive(Clone)]
pub struct Pool {
    state: Arc<Mutex<State>>,
    limits: PoolLimits,
    /// Connections lent to attempts right now.
    leased: Arc<AtomicUsize>,
}

impl Pool {
    pub fn new(limits: PoolLimits) -> Pool {
        Pool {
            state: Arc::default(),
            limits,
            leased: Arc::default(),
        }
    }

    pub fn limits(&self) -> PoolLimits {
        self.limits
    }

    /// The most recently used idle connection for `key` that is still open and not expired,
    /// if any; expired and closed ones met on the way are closed.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<Conn> {
        let now = Instant::now();
        let mut state = self.lock();
        let list = state.idle.get_mut(key)?;
        let mut found = None;
        while let Some(idle) = list.pop() {
            if now.duration_since(idle.since) >= self.limits.idle_timeout {
                // Everything before it in the list is older still.
                list.clear();
                break;
            }
            if !idle.conn.sender.is_closed() {
                found = Some(idle.conn);
                break;
            }
        }
        if list.is_empty() {
            state.idle.remove(key);
        }
        found
    }

    /// Lends `conn` to an attempt; `reused` says whether it came from the pool.
    pub(crate) fn lease(&self, key: PoolKey, conn: Conn, reused: bool) -> Lease {
        self.leased.fetch_add(1, Ordering::SeqCst);
        Lease {
            conn: Some(conn),
            key,
            pool: self.clone(),
            reusable: false,
            reused,
        }
    }

    /// Keeps `conn` idle for `key`, unless it is closed or the host's pool is full.
    fn put(&self, key: PoolKey, conn: Conn) {
        // Outside a runtime (a lease dropped while the process winds down) nothing could
        // close the connection when it expires: it is not kept.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if conn.sender.is_closed() || self.limits.max_idle_per_host == 0 {
            return;
        }
        let start_reaper = {
            let mut state = self.lock();
            let list = state.idle.entry(key).or_default();
            if list.len() >= self.limits.max_idle_per_host {
                // Full: the connection is closed as it drops, outside the lock.
                drop(state);
                drop(conn);
                return;
            }
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
            !std::mem::replace(&mut state.reaper, true)
        };
        if start_reaper {
            runtime.spawn(reap(Arc::downgrade(&self.state), self.limits.idle_timeout));
        }
    }

    /// Idle connections held right now and still open, per key. (A connection the upstream
    /// closed while idle stays listed until the next checkout or reap, but its socket is
    /// already gone.)
    pub fn idle(&self) -> BTreeMap<PoolKey, usize> {
        self.lock()
            .idle
            .iter()
            .map(|(k, v)| {
                let open = v.iter().filter(|i| !i.conn.sender.is_closed()).count();
                (k.clone(), open)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Connections lent to attempts right now.
    pub fn leased(&self) -> usize {
        self.leased.load(Ordering::SeqCst)
    }

    /// Closes every idle connection (on shutdown).
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut self.lock().idle);
        drop(idle);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock is only held for plain map edits, which cannot panic half-way.
        self.state.lock().expect("pool lock poisoned")
    }
}

/// Closes idle connections as they pass the idle timeout; ends when none is left (the next
/// `put` starts another) or when the pool is gone.
async fn reap(state: Weak<Mutex<State>>, timeout: Duration) {
    loop {
        let next = {
            let Some(state) = state.upgrade() else { return };
            let mut s = state.lock().expect("pool lock poisoned");
            let now = Instant::now();
            let mut expired = Vec::new();
            for list in s.idle.values_mut() {
                let keep = list
                    .iter()
                    .position(|i| now.duration_since(i.since) < timeout)
                    .unwrap_or(list.len());
                expired.extend(list.drain(..keep));
            }
            s.idle.retain(|_, list| !list.is_empty());
            let next = s
                .idle
                .values()
                .filter_map(|l| l.first())
                .map(|i| i.since)
                .min();
            if next.is_none() {
                s.reaper = false;
            }
            drop(s);
            drop(expired);
            next
        };
        match next {
            Some(oldest) => tokio::time::sleep_until(oldest + timeout).await,
            None => return,
        }
    }
}

/// A connection lent to one attempt. It goes back to the pool when dropped only if the
/// attempt marked it [`reusable`](Lease::reusable); otherwise it is closed.
pub(crate) struct Lease {
    conn: Option<Conn>,
    key: PoolKey,
    pool: Pool,
    reusable: bool,
    reused: bool,
}

impl Lease {
    pub(crate) fn sender(&mut self) -> &mut http1::SendRequest<Full<Bytes>> {
        &mut self
            .conn
            .as_mut()
            .expect("a lease holds its connection")
            .sender
    }

    /// Whether the connection came from the pool (a request on it may find it closed).
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// The response on this connection was read to its end: it may serve another request.
    pub(crate) fn reusable(&mut self) {
        self.reusable = true;
    }

    pub(crate) fn is_reusable(&self) -> bool {
        self.reusable
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.leased.fetch_sub(1, Ordering::SeqCst);
        if let Some(conn) = self.conn.take()
            && self.reusable
        {
            self.pool.put(self.key.clone(), conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_different_schemes_differ() {
        let a = PoolKey {
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
}
