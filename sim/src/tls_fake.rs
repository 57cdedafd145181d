//! A fake provider behind TLS, for the benchmark's `https` variant.
//!
//! Owns: [`ThrowawayPki`], a CA and a `localhost` certificate it signs, made by rcgen when
//! the benchmark starts and never kept (the gateway is told to trust the CA through a
//! deployment's `ssl_verify: <path>`), and [`TlsListener`], which completes the TLS
//! handshake of each accepted connection before the fake serves it. ALPN offers `h2` and
//! `http/1.1`, as an https provider does; the listener says which one the client picked, so
//! the fake serves the gateway's HTTP/2 (the gateway's default) or HTTP/1.1. Does not own
//! what the fake answers (`fake`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use switchback::transport::{Accepted, BoxFuture, BoxIo, Listener};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto};

/// A CA and a server configuration for `localhost` whose certificate it signed.
pub struct ThrowawayPki {
    /// The CA's certificate, PEM: what a client must trust.
    pub ca_pem: String,
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
            server: Arc::new(server),
        })
    }
}

/// Accepts TCP connections and completes their TLS handshake. A failed handshake drops that
/// connection and waits for the next; a handshake runs inside `accept`, so a slow client
/// delays the next accept (a fake's concern only).
pub struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub async fn bind(addr: SocketAddr, pki: &ThrowawayPki) -> io::Result<TlsListener> {
        Ok(TlsListener {
            inner: tokio::net::TcpListener::bind(addr).await?,
            acceptor: TlsAcceptor::from(pki.server.clone()),
        })
    }
}

impl Listener for TlsListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let accepted = self.accept_negotiated().await?;
            Ok((accepted.io, accepted.peer))
        })
    }

    fn accept_negotiated(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            loop {
                let (tcp, peer) = self.inner.accept().await?;
                tcp.set_nodelay(true)?;
                if let Ok(tls) = self.acceptor.accept(tcp).await {
                    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    return Ok(Accepted {
                        io: Box::new(tls) as BoxIo,
                        peer,
                        http2,
                    });
                }
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
