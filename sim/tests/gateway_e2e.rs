//! End-to-end tests of the real gateway on real loopback sockets: the engine's HTTP server,
//! its upstream client and scripted fake providers, over tokio TCP and the real clock.
//!
//! Each behaviour is a scenario file (shared with the simulated suite), run live in both
//! modes and judged by the same oracle: expectations, invariants (one `[DONE]`, no lost or
//! duplicated chunk, final `model` = serving deployment's) and stream/non-stream
//! equivalence. Bad input is sent as raw HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use switchback_sim::run::{Where, run_scenario_in};
use switchback_sim::scenario::{Mode, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn scenario(rel: &str) -> (PathBuf, Scenario) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(rel);
    let s = Scenario::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    (path, s)
}

fn live(rel: &str) -> switchback_sim::run::Report {
    let (path, s) = scenario(rel);
    let report = run_scenario_in(&path, &s, Where::Live);
    assert!(
        report.passed(),
        "{rel} failed live:\n{}",
        report.failures.join("\n")
    );
    assert_eq!(report.runs.len(), 2, "both modes ran");
    report
}

fn stream_run(r: &switchback_sim::run::Report) -> &switchback_sim::world::ModeRun {
    r.runs
        .iter()
        .find(|m| m.mode == Mode::Stream)
        .expect("stream run")
}

fn non_stream_run(r: &switchback_sim::run::Report) -> &switchback_sim::world::ModeRun {
    r.runs
        .iter()
        .find(|m| m.mode == Mode::NonStream)
        .expect("non-stream run")
}

#[test]
fn a_429_before_the_first_chunk_falls_back_transparently() {
    let r = live("streaming/precommit_429_falls_back.yaml");
    let s = &stream_run(&r).results[0];
    // Transparent: the stream's head already names the fallback; nothing of the failed attempt shows.
    assert_eq!(
        s.headers.get("x-switchback-deployment").map(String::as_str),
        Some("pb")
    );
    assert_eq!(
        s.headers
            .get("x-switchback-attempted-fallbacks")
            .map(String::as_str),
        Some("1")
    );
    assert!(
        s.chunks
            .iter()
            .all(|c| c.model.as_deref() == Some("backup-model"))
    );
    assert_eq!(
        non_stream_run(&r).results[0].model.as_deref(),
        Some("backup-model")
    );
}

#[test]
fn a_429_after_three_chunks_continues_as_one_stream() {
    let r = live("known_bug/midstream_429_key_fallbacks.yaml");
    let s = &stream_run(&r).results[0];
    let n = &non_stream_run(&r).results[0];
    assert!(
        s.done,
        "one [DONE] (two would have been reported as broken)"
    );
    assert_eq!(s.text, "The quick brown fox jumps over the lazy dog.");
    let last = s
        .chunks
        .iter()
        .rev()
        .find(|c| !c.text.is_empty())
        .expect("content chunks");
    assert_eq!(
        last.model, n.model,
        "the last chunk's model is the non-stream response's model"
    );
    // The first three chunks came from the primary and say so.
    let first_models: Vec<_> = s
        .chunks
        .iter()
        .filter(|c| !c.text.is_empty())
        .take(3)
        .map(|c| c.model.clone())
        .collect();
    assert!(
        first_models
            .iter()
            .all(|m| m.as_deref() == Some("gemini-3.1-flash-lite-preview")),
        "{first_models:?}"
    );
    assert!(
        s.meta.is_some(),
        "the fallback after commit is reported in a metadata event"
    );
}

#[test]
fn the_same_failure_under_mid_stream_error_ends_with_an_error_event() {
    let r = live("streaming/midstream_error_policy.yaml");
    let s = &stream_run(&r).results[0];
    assert!(!s.done, "no [DONE] after an error event");
    assert_eq!(s.error.as_ref().map(|e| e.status), Some(429));
    assert_eq!(s.text, "One two three ");
}

#[test]
fn key_level_fallbacks_apply_to_streams() {
    let r = live("known_bug/key_level_fallbacks_stream.yaml");
    let s = &stream_run(&r).results[0];
    assert!(!s.chunks.is_empty());
    for c in &s.chunks {
        assert_eq!(
            c.model.as_deref(),
            Some("gemini-2.5-flash"),
            "every chunk carries the fallback's model"
        );
    }
    assert_eq!(
        non_stream_run(&r).results[0].model.as_deref(),
        Some("gemini-2.5-flash")
    );
}

#[test]
fn mock_testing_flags_behave_the_same_live() {
    live("admission/mock_flags.yaml");
}

#[test]
fn admission_errors_live() {
    live("admission/bad_requests.yaml");
}

/// A gateway on loopback for raw-HTTP tests.
async fn gateway(config: &str) -> std::net::SocketAddr {
    let config = switchback::config::GatewayConfig::load("e2e.yaml", config).unwrap();
    common::loopback_gateway(&config).await
}

const CONFIG: &str = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/m, api_base: "http://127.0.0.1:9/v1"}}
keys:
  - {key: sk-ok}
limits: {max_request_body_bytes: 2048, header_read_timeout: 0.3, body_read_timeout: 0.3, body_timeout_grace: 0.3}
"#;

async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn post(body: &str, auth: Option<&str>) -> Vec<u8> {
    let auth = auth
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let addr = gateway(CONFIG).await;
    let ok_msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (post("{not json", Some("sk-ok")), "400", "not valid JSON"),
        (
            post(&format!("{{{ok_msgs}}}"), Some("sk-ok")),
            "400",
            "`model` is required",
        ),
        (
            post(&format!("{{\"model\":\"zzz\",{ok_msgs}}}"), Some("sk-ok")),
            "404",
            "model_not_found",
        ),
        (
            post(&format!("{{\"model\":\"a\",{ok_msgs}}}"), None),
            "401",
            "missing API key",
        ),
        (
            post(&format!("{{\"model\":\"a\",{ok_msgs}}}"), Some("sk-nope")),
            "401",
            "unknown API key",
        ),
        (
            post(
                &format!("{{\"model\":\"a\",\"stream\":\"yes\",{ok_msgs}}}"),
                Some("sk-ok"),
            ),
            "400",
            "`stream` must be a boolean",
        ),
        (
            post(
                &format!(
                    "{{\"model\":\"a\",\"pad\":\"{}\",{ok_msgs}}}",
                    "x".repeat(4096)
                ),
                Some("sk-ok"),
            ),
            "413",
            "max_request_body_bytes",
        ),
        (
            b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "405",
            "takes POST",
        ),
        (
            b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "404",
            "no route",
        ),
    ];
    for (request, status, phrase) in cases {
        let response = raw(addr, &request).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "wanted {status} for {phrase}:\n{response}"
        );
        assert!(
            response.contains(phrase),
            "wanted {phrase:?} in:\n{response}"
        );
        assert!(
            response.contains("\"error\""),
            "OpenAI-shaped error body:\n{response}"
        );
    }
    // A 405 names the method the route takes (RFC 9110 §15.5.6: `Allow` is a MUST).
    for (request, allow) in [
        (
            &b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
            "allow: POST\r\n",
        ),
        (
            &b"DELETE /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
            "allow: GET, HEAD\r\n",
        ),
    ] {
        let response = raw(addr, request).await;
        assert!(
            response.starts_with("HTTP/1.1 405") && response.contains(allow),
            "wanted 405 with {allow:?}:\n{response}"
        );
    }
    // HEAD is GET without the body (RFC 9110 §9.3.2: a general-purpose server supports
    // both), as uptime checks send it: the same status and headers, no body.
    for path in ["/health", "/v1/models"] {
        let get = raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-ok\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let head = raw(
            addr,
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-ok\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let (get_head, get_body) = get.split_once("\r\n\r\n").expect("a GET response");
        assert!(
            get_head.starts_with("HTTP/1.1 200") && !get_body.is_empty(),
            "{get}"
        );
        assert!(head.starts_with("HTTP/1.1 200"), "HEAD {path}:\n{head}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "HEAD {path} has no body:\n{head}"
        );
        let length = |r: &str| {
            r.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
                .map(str::to_string)
        };
        assert_eq!(
            length(&head),
            length(get_head),
            "HEAD {path} says GET's length"
        );
    }
}

#[tokio::test]
async fn a_model_the_key_may_not_use_is_forbidden() {
    let config = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/m, api_base: "http://127.0.0.1:9/v1"}}
  - {model_name: b, litellm_params: {model: openai/m, api_base: "http://127.0.0.1:9/v1"}}
keys:
  - {key: sk-limited, models: [b]}
"#;
    let addr = gateway(config).await;
    let response = raw(
        addr,
        &post(
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#,
            Some("sk-limited"),
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    let models = raw(addr, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-limited\r\nConnection: close\r\n\r\n").await;
    assert!(
        models.contains("\"id\":\"b\"") && !models.contains("\"id\":\"a\""),
        "models lists only what the key may use:\n{models}"
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let addr = gateway(CONFIG).await;
    // Headers never finish: the header read timeout closes the connection.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the gateway must close a connection whose headers never end"
    );
    // The body never finishes: 408 after the body read timeout.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-ok\r\nContent-Length: 100\r\n\r\n{\"model\"").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let response = String::from_utf8_lossy(&out);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
}

#[tokio::test]
async fn health_answers() {
    let addr = gateway(CONFIG).await;
    let response = raw(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("healthy"),
        "{response}"
    );
}

/// A refused request's client gets its error, not a reset connection. httpx and undici send
/// the whole body before they read: if the gateway answered and then closed the socket
/// with the body unread, the kernel would reset the connection under the client's writes,
/// and the SDK would raise a connection error (and retry, uploading the body again) instead
/// of the 413 or 401. The gateway reads what is left of the body, up to
/// `max_discarded_request_body_bytes`, and throws it away.
#[tokio::test]
async fn a_refused_upload_gets_its_error_not_a_reset() {
    let config = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/m, api_base: "http://127.0.0.1:9/v1"}}
keys:
  - {key: sk-ok}
limits: {max_request_body_bytes: 2048, body_read_timeout: 20}
"#;
    let addr = gateway(config).await;
    let big = format!(
        "{{\"model\":\"a\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "A".repeat(8 << 20)
    );
    let declared = |key: &str| {
        let mut r = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .into_bytes();
        r.extend_from_slice(big.as_bytes());
        r
    };
    // No declared length: the key is judged first, or the limit only once it is passed.
    let chunked = |key: &str| {
        let mut r = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for piece in big.as_bytes().chunks(64 * 1024) {
            r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            r.extend_from_slice(piece);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    // Any route refuses the same way: an unknown one (the SDKs' other endpoints), a GET
    // route posted to, an admin route without the admin key.
    let to = |path: &str| {
        let mut r = declared("sk-ok");
        let head = String::from_utf8_lossy(&r[..40]).replacen("/v1/chat/completions", path, 1);
        r.splice(..40, head.into_bytes());
        r
    };
    for (what, request, status) in [
        ("declared over the limit", declared("sk-ok"), "413"),
        ("unknown key", chunked("sk-nope"), "401"),
        ("chunked over the limit", chunked("sk-ok"), "413"),
        ("an unknown route", to("/v1/responses"), "404"),
        ("a GET route", to("/v1/models"), "405"),
        ("an admin route", to("/admin/reload"), "403"),
    ] {
        let (written, read, response) = upload(addr, &request).await;
        assert!(
            written.is_ok() && read.is_ok(),
            "{what}: the upload was cut ({written:?}, {read:?}):\n{response}"
        );
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: wanted {status}:\n{response}"
        );
    }
    // A connection past max_connections is answered at once with a 503 and closed: its
    // upload is read (and thrown away) first, as above.
    let full = gateway(&config.replace(
        "body_read_timeout: 20}",
        "body_read_timeout: 20, max_connections: 1, max_overflow_connections: 4}",
    ))
    .await;
    let mut held = tokio::net::TcpStream::connect(full).await.unwrap();
    held.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 1024];
    let n = held.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    for (what, request) in [
        ("declared, past max_connections", declared("sk-ok")),
        ("chunked, past max_connections", chunked("sk-ok")),
    ] {
        let (written, read, response) = upload(full, &request).await;
        assert!(
            written.is_ok() && read.is_ok(),
            "{what}: the upload was cut ({written:?}, {read:?}):\n{response}"
        );
        assert!(response.starts_with("HTTP/1.1 503"), "{what}:\n{response}");
    }
    drop(held);
}

/// Sends `request` whole, as the SDKs do, then reads the response's head (within 10 s):
/// whether the write and the read went through, and what was read.
async fn upload(
    addr: std::net::SocketAddr,
    request: &[u8],
) -> (std::io::Result<()>, std::io::Result<()>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let written = s.write_all(request).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the response comes within 10 s");
    (written, read, String::from_utf8_lossy(&out).into_owned())
}
