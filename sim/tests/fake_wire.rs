//! What a fake writes on the wire follows its provider's `framing`, hostile parts included:
//! a flood and a malformed line come in the same line ends as the answer's events, so a
//! scenario with CRLF framing tests the gateway's reading of a CRLF flood, not of an LF one
//! that slipped in.
//!
//! The fake is served on a loopback socket and read with a plain hyper client: the bytes
//! checked are the body as it left the fake.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use switchback::transport::{Listener, TcpListener};
use switchback_sim::fake::Fake;
use switchback_sim::scenario::Scenario;
use switchback_sim::trace::NullSink;

/// The raw SSE body of one streamed call to a provider scripted by `script`, with `framing`.
async fn body_of(framing: &str, script: &str) -> String {
    let yaml = format!(
        r#"name: fake wire
seed: 1
gateway:
  allow_anonymous: true
  model_list:
    - {{model_name: chat, litellm_params: {{model: openai/m, api_base: "http://a:8000/v1"}}}}
providers:
  - host: a
    framing: {framing}
    default: {script}
requests: [{{model: chat}}]
"#
    );
    let scenario = Scenario::load("fake_wire.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let fake = Fake::new(scenario.providers[0].clone(), Arc::new(NullSink));
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let server = tokio::spawn(fake.serve(listener));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    // A malformed line ends the fake's body with no `[DONE]`; a cut body is an error here.
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => break,
        }
    }
    server.abort();
    String::from_utf8(bytes).expect("UTF-8")
}

/// Every line end in `body` is CRLF: no LF without its CR before it.
fn lf_without_cr(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

#[tokio::test]
async fn a_flood_and_a_malformed_line_come_in_the_providers_framing() {
    for flood in [
        "comments",
        "role_only",
        "new_choice_index",
        "new_choice_content",
    ] {
        let body = body_of(
            "{line_end: crlf, no_space: true}",
            &format!(
                "{{text: \"abcdef\", chunk_size: 2, flood: {{kind: {flood}, after_chunks: 1, count: 3}}, fault: {{kind: malformed, after_chunks: 2}}}}"
            ),
        )
        .await;
        assert!(
            body.contains("broken"),
            "{flood}: the malformed line went out\n{body:?}"
        );
        if let Some(at) = lf_without_cr(&body) {
            panic!(
                "{flood}: a bare LF at byte {at}, in a CRLF provider's body\n{:?}",
                &body[at.saturating_sub(60)..]
            );
        }
        assert!(
            !body.contains("data: "),
            "{flood}: `data:` with a space, from a provider that writes none\n{body:?}"
        );
    }
}
