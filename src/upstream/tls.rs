//! TLS for `https` upstreams: rustls with the Mozilla root store (webpki-roots), or only the
//! certificates of a deployment's CA bundle (`litellm_params.ssl_verify: /path/ca.pem`),
//! ALPN `http/1.1`. Each configuration is built once (at config load) and shared, so rustls'
//! session cache lets later connections to the same upstream resume their TLS session
//! instead of a full handshake. The simulation only uses `http`.

use std::io;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use crate::transport::BoxIo;

/// The client TLS configuration every https upstream is reached with by default.
pub fn client_config() -> Arc<ClientConfig> {
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
    pub config: Arc<ClientConfig>,
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

fn with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Runs the TLS handshake for `host` over an open connection.
pub async fn wrap(config: &Arc<ClientConfig>, host: &str, io: BoxIo) -> io::Result<BoxIo> {
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{host}` is not a valid TLS server name"),
        )
    })?;
    let stream = TlsConnector::from(config.clone()).connect(name, io).await?;
    Ok(Box::new(stream))
}
