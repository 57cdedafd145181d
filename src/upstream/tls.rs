//! TLS for `https` upstreams: rustls with the Mozilla root store (webpki-roots), or only the
//! certificates of a deployment's CA bundle (`litellm_params.ssl_verify: /path/ca.pem`).
//! ALPN offers `h2` then `http/1.1`, and [`wrap`] says which one the server picked; with
//! HTTP/2 turned off (`limits.max_streams_per_upstream_http2_connection: 0`) it offers only
//! `http/1.1`. Each trust is built once (at config load) and shared, so rustls' session
//! cache lets later connections to the same upstream resume their TLS session instead of a
//! full handshake; the two ALPN variants of one trust share that cache. The simulation only
//! uses `http`.

use std::io;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use crate::transport::BoxIo;

/// The ALPN name of HTTP/2 over TLS (RFC 9113 §3.2).
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// One trust's client configurations: offering HTTP/2 and HTTP/1.1, or HTTP/1.1 only.
#[derive(Debug, Clone)]
pub struct TrustConfig {
    offer_h2: Arc<ClientConfig>,
    http1_only: Arc<ClientConfig>,
}

impl TrustConfig {
    /// The configuration whose ALPN offers HTTP/2 too (`http2`) or only HTTP/1.1.
    pub fn alpn(&self, http2: bool) -> &Arc<ClientConfig> {
        if http2 {
            &self.offer_h2
        } else {
            &self.http1_only
        }
    }
}

/// The client TLS configuration every https upstream is reached with by default.
pub fn client_config() -> TrustConfig {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    with_roots(roots)
}

/// Largest CA bundle read (the Mozilla bundle is about 220 KiB).
pub const MAX_CA_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// A deployment's own trust: the certificates of a PEM CA bundle, and nothing else (as
/// LiteLLM's `ssl_verify: <path>`, which httpx hands to `ssl.create_default_context`).
#[derive(Debug, Clone)]
pub struct CaBundle {
    /// The path as the config gave it: it names the trust in the connection pool's keys.
    pub path: String,
    pub config: TrustConfig,
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl CaBundle {
    /// Reads `path` (at most [`MAX_CA_BUNDLE_BYTES`]); it must hold at least one valid
    /// certificate.
    pub fn load(path: &str) -> Result<CaBundle, String> {
        use std::io::Read as _;
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let mut pem = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CA_BUNDLE_BYTES + 1).read_to_end(&mut pem))
            .map_err(|e| format!("cannot read the CA bundle `{path}`: {e}"))?;
        if pem.len() as u64 > MAX_CA_BUNDLE_BYTES {
            return Err(format!(
                "the CA bundle `{path}` is over {MAX_CA_BUNDLE_BYTES} bytes"
            ));
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let cert = cert.map_err(|e| {
                format!(
                    "the CA bundle `{path}` is not valid PEM (item {}): {e}",
                    i + 1
                )
            })?;
            roots.add(cert).map_err(|e| {
                format!(
                    "certificate {} of the CA bundle `{path}` is not a usable CA: {e}",
                    i + 1
                )
            })?;
        }
        if roots.is_empty() {
            return Err(format!("the CA bundle `{path}` holds no certificate"));
        }
        Ok(CaBundle {
            path: path.to_string(),
            config: with_roots(roots),
        })
    }
}

fn with_roots(roots: RootCertStore) -> TrustConfig {
    let mut offer_h2 =
        ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    offer_h2.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    // A clone shares the session store (`resumption` holds it behind an `Arc`): a session
    // got under one ALPN offer resumes under the other.
    let mut http1_only = offer_h2.clone();
    http1_only.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    TrustConfig {
        offer_h2: Arc::new(offer_h2),
        http1_only: Arc::new(http1_only),
    }
}

/// A TLS connection and whether its server picked HTTP/2.
pub struct Wrapped {
    pub io: BoxIo,
    pub http2: bool,
}

/// Runs the TLS handshake for `host` over an open connection.
pub async fn wrap(config: &Arc<ClientConfig>, host: &str, io: BoxIo) -> io::Result<Wrapped> {
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{host}` is not a valid TLS server name"),
        )
    })?;
    let stream = TlsConnector::from(config.clone()).connect(name, io).await?;
    let http2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    Ok(Wrapped {
        io: Box::new(stream),
        http2,
    })
}
