//! A fake provider behind TLS, for the benchmark's `https` variant.
//!
//! Owns: [`ThrowawayPki`], a CA and a `localhost` certificate it signs, made by rcgen when
//! the benchmark starts and never kept (the gateway is told to trust the CA through a
//! deployment's `ssl_verify: <path>`), and [`TlsListener`], which completes the TLS
//! handshake of each accepted connection (concurrently, bounded) before the fake serves it. ALPN offers `h2` and
//! `http/1.1`, as an https provider does; the listener says which one the client picked, so
//! the fake serves the gateway's HTTP/2 (the gateway's default) or HTTP/1.1. Does not own
//! what the fake answers (`fake`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchback::transport::{Accepted, BoxFuture, BoxIo, Listener};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto};

/// A CA and a server configuration for `localhost` whose certificate it signed.
pub struct ThrowawayPki {
    /// The CA's certificate, PEM: what a client must trust.
    pub ca_pem: String,
    /// The same certificate, DER, for a client built in this process.
    pub ca_der: CertificateDer<'static>,
    pub server: Arc<ServerConfig>,
}

impl ThrowawayPki {
    pub fn new() -> Result<ThrowawayPki, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("throw-away PKI: {what}: {e}");
        let ca_key = rcgen::KeyPair::generate().map_err(|e| fail("CA key", &e))?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| fail("CA params", &e))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).map_err(|e| fail("CA", &e))?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().map_err(|e| fail("server key", &e))?;
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .and_then(|p| p.signed_by(&leaf_key, &issuer))
            .map_err(|e| fail("server certificate", &e))?;
        let mut server =
            ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| fail("protocol versions", &e))?
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from(leaf.der().to_vec())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
                )
                .map_err(|e| fail("server config", &e))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ThrowawayPki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server: Arc::new(server),
        })
    }
}

/// Handshakes a [`TlsListener`] runs at once; past it, it stops accepting until one ends
/// (the kernel's accept queue holds the rest), as a server bounds its half-open work.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// How long a connection may take to complete its handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A handshake in progress: the negotiated connection, or nothing when it failed.
type Handshake = Option<Accepted>;

/// Accepts TCP connections and completes their TLS handshakes, each in a task of its own,
/// so a slow or silent client never holds up the others. It used to run each handshake
/// inside `accept`, one after the other: at 2,000 rps a burst of the gateway's new
/// connections queued behind them until the kernel's accept queue overflowed, and the
/// dropped SYNs came back a second later (the 1.1 s maxima of the https variant of
/// `bench-overhead`, which were charged to the gateway). A failed or timed-out handshake
/// drops that connection only.
pub struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Handshake>,
}

impl TlsListener {
    pub async fn bind(addr: SocketAddr, pki: &ThrowawayPki) -> io::Result<TlsListener> {
        Ok(TlsListener {
            inner: tokio::net::TcpListener::bind(addr).await?,
            acceptor: TlsAcceptor::from(pki.server.clone()),
            handshakes: JoinSet::new(),
        })
    }

    /// Starts the handshake of a connection just accepted.
    fn start_handshake(&mut self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            tcp.set_nodelay(true).ok()?;
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                .await
                .ok()?
                .ok()?;
            let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            Some(Accepted {
                io: Box::new(tls) as BoxIo,
                peer,
                http2,
            })
        });
    }
}

impl Listener for TlsListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let accepted = self.accept_negotiated().await?;
            Ok((accepted.io, accepted.peer))
        })
    }

    /// Cancel-safe: a connection accepted is handed to its handshake task in the same poll,
    /// and a finished handshake waits in the set until the next call.
    fn accept_negotiated(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            loop {
                let room = self.handshakes.len() < MAX_CONCURRENT_HANDSHAKES;
                tokio::select! {
                    biased;
                    Some(done) = self.handshakes.join_next() => {
                        if let Ok(Some(accepted)) = done {
                            return Ok(accepted);
                        }
                    }
                    accepted = self.inner.accept(), if room => {
                        let (tcp, peer) = accepted?;
                        self.start_handshake(tcp, peer);
                    }
                }
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    fn connector(pki: &ThrowawayPki) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let config =
            ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// A client that connects and never says a word must not hold up the next one: with
    /// the handshake run inside `accept`, this waited for ever (the guard's 10 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_client_does_not_hold_up_the_next_handshake() {
        let pki = ThrowawayPki::new().unwrap();
        let mut listener = TlsListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &pki)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = connector(&pki);
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .map(|_| ())
        });
        let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept_negotiated())
            .await
            .expect("the second client is accepted while the first stays silent")
            .unwrap();
        assert!(!accepted.http2, "this client offered no ALPN");
        client.await.unwrap().unwrap();
    }

    /// Many clients at once all get through, whatever order their handshakes end in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_clients_is_accepted_in_full() {
        let pki = ThrowawayPki::new().unwrap();
        let mut listener = TlsListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &pki)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = JoinSet::new();
        for _ in 0..64 {
            let connector = connector(&pki);
            clients.spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .unwrap()
            });
        }
        let mut kept = Vec::new();
        for _ in 0..64 {
            let accepted =
                tokio::time::timeout(Duration::from_secs(10), listener.accept_negotiated())
                    .await
                    .expect("every client of the burst is accepted")
                    .unwrap();
            kept.push(accepted);
        }
        while let Some(c) = clients.join_next().await {
            c.unwrap();
        }
        assert_eq!(kept.len(), 64);
    }
}
