//! `https` upstreams on real sockets: a deployment's own CA bundle (`ssl_verify: <path>`),
//! kept-alive TLS connections, and TLS session resumption across connections.
//!
//! The upstream is hyper's HTTP/1.1 server behind tokio-rustls, with a throw-away CA and a
//! `localhost` certificate made by rcgen for each test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchback::classify::TransportFault;
use switchback::config::GatewayConfig;
use switchback::transport::TcpConnector;
use switchback::upstream::client::{UpstreamClient, UpstreamError};
use switchback::upstream::pool::{Pool, PoolLimits};
use switchback::upstream::tls::CaBundle;
use tokio::sync::Mutex;

mod attempts;
use attempts::LIMITS;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{HandshakeKind, ServerConfig, crypto};

const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"over tls"},"finish_reason":"stop"}]}"#;

/// A throw-away CA (its PEM, written to a file) and a server config for `localhost`
/// signed by it.
struct Pki {
    ca_path: std::path::PathBuf,
    server: Arc<ServerConfig>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("switchback-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write ca");
    let server = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server config");
    Pki {
        ca_path,
        server: Arc::new(server),
        _dir: TempDir(dir),
    }
}

/// An https upstream answering every request with one JSON completion; it records how
/// each connection's handshake went.
struct Upstream {
    port: u16,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Vec<Option<HandshakeKind>>>>,
}

async fn upstream(config: Arc<ServerConfig>) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let handshakes: Arc<Mutex<Vec<Option<HandshakeKind>>>> = Arc::default();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (a, h) = (accepted.clone(), handshakes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let (acceptor, h) = (acceptor.clone(), h.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    h.lock().await.push(None);
                    return;
                };
                h.lock().await.push(tls.get_ref().1.handshake_kind());
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Upstream {
        port,
        accepted,
        handshakes,
    }
}

async fn call(
    client: &UpstreamClient,
    port: u16,
    ca_bundle: Option<&CaBundle>,
) -> Result<String, UpstreamError> {
    attempts::call(client, &format!("https://localhost:{port}/v1"), ca_bundle).await
}

fn client(max_idle_per_host: usize) -> UpstreamClient {
    UpstreamClient::new(
        Arc::new(TcpConnector),
        LIMITS,
        Pool::new(PoolLimits {
            max_idle_per_host,
            idle_timeout: Duration::from_secs(30),
        }),
    )
}

#[tokio::test]
async fn a_deployment_ca_bundle_is_trusted_and_its_connection_kept() {
    let pki = pki("kept");
    let up = upstream(pki.server.clone()).await;
    let bundle = CaBundle::load(pki.ca_path.to_str().expect("utf-8")).expect("bundle");
    let client = client(8);
    for _ in 0..3 {
        let text = call(&client, up.port, Some(&bundle)).await.expect("served");
        assert_eq!(text, "over tls");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "one TLS connection");
}

#[tokio::test]
async fn without_the_bundle_an_unknown_ca_fails_the_handshake() {
    let pki = pki("unknown");
    let up = upstream(pki.server.clone()).await;
    let err = call(&client(8), up.port, None)
        .await
        .expect_err("the Mozilla roots do not know this CA");
    assert!(
        matches!(err, UpstreamError::Transport(TransportFault::Tls, _)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_new_connection_resumes_the_tls_session() {
    let pki = pki("resume");
    let up = upstream(pki.server.clone()).await;
    let bundle = CaBundle::load(pki.ca_path.to_str().expect("utf-8")).expect("bundle");
    // Nothing kept: every call opens a connection, and so a TLS session.
    let client = client(0);
    call(&client, up.port, Some(&bundle)).await.expect("first");
    call(&client, up.port, Some(&bundle)).await.expect("second");
    let kinds = up.handshakes.lock().await.clone();
    assert_eq!(
        kinds,
        vec![Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]
    );
}

/// What loading a config whose one deployment has `ssl_verify: <value>` reports.
fn problems(value: &str) -> String {
    let yaml = format!(
        "allow_anonymous: true\nmodel_list:\n  - model_name: a\n    litellm_params: {{model: openai/m, api_base: \"https://localhost:1/v1\", ssl_verify: {value}}}\n"
    );
    match GatewayConfig::load("test.yaml", &yaml) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ssl_verify_is_checked_at_load() {
    let pki = pki("config");
    let path = pki.ca_path.to_str().expect("utf-8");
    assert_eq!(problems(path), "");
    assert_eq!(problems("true"), "");
    assert!(problems("false").contains("always verifies"));
    let missing = problems("/nonexistent/ca.pem");
    assert!(
        missing.contains("cannot read the CA bundle `/nonexistent/ca.pem`"),
        "{missing}"
    );
    let junk = pki.ca_path.with_file_name("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let junk = problems(junk.to_str().expect("utf-8"));
    assert!(junk.contains("holds no certificate"), "{junk}");
}
