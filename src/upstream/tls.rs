//! TLS for `https` upstreams: rustls with the Mozilla root store (webpki-roots), ALPN
//! `http/1.1`. Built once per client; the simulation only uses `http`.

use std::io;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use crate::transport::BoxIo;

/// The client TLS configuration every https upstream is reached with.
pub fn client_config() -> Arc<ClientConfig> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
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
