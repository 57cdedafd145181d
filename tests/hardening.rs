//! Hostile clients, hostile upstreams and careless configs, against the whole gateway in
//! memory (see `support`): each test is one item of the hardening issue, written to fail on
//! the code before its fix. Time is tokio's paused clock, so waits of minutes cost nothing
//! and every run is the same.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "sk-upstream-SECRET-123";

fn with(config: &str, extra: &str) -> String {
    format!("{config}{extra}")
}

/// Reads frames from a streaming response until `n` data frames arrived.
async fn read_frames(body: &mut hyper::body::Incoming, n: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    while out.len() < n {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    out.push(d);
                }
            }
            _ => break,
        }
    }
    out
}

// 1. A streaming client that leaves must not panic the engine.
#[tokio::test(start_paused = true)]
async fn a_streaming_client_that_leaves_causes_no_panic() {
    watch_panics();
    let net = MemNet::new();
    net.host("up", |_| {
        sse_flood(
            vec![frame(&chunk_json(
                "m",
                json!({"role": "assistant", "content": ""}),
                None,
            ))],
            |i| frame(&chunk_json("m", json!({"content": format!("w{i} ")}), None)),
        )
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let mut response = gw.chat(None, chat_body("g", true)).await;
    assert_eq!(response.status(), 200);
    let got = read_frames(response.body_mut(), 3).await;
    assert_eq!(got.len(), 3);
    drop(response);
    assert!(
        settle(100, || gw.saw("client_gone") && net.open() == 0).await,
        "the engine noticed and closed the upstream: {:#?}",
        gw.events()
    );
    assert_eq!(panics_here(), Vec::<String>::new());
}

// 2. Upstream secrets never reach a client, whether the upstream echoes its key in an error
// status, in a plain-text 500, or in a mid-stream error event.
#[tokio::test(start_paused = true)]
async fn upstream_echoes_of_the_api_key_are_redacted() {
    let net = MemNet::new();
    net.host("up", |call| {
        let auth = call
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match call.n {
            1 => json_response(
                401,
                &json!({"error": {"message": format!("Incorrect API key provided: {auth}"), "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ),
            2 => {
                let mut r = sse(format!(
                    "headers: authorization={auth}; host=up:80; key={}",
                    &auth[7..]
                ));
                *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                r.headers_mut()
                    .insert("content-type", "text/plain".parse().unwrap());
                r
            }
            _ => {
                let mut body = frame(&chunk_json(
                    "m",
                    json!({"role": "assistant", "content": "Hel"}),
                    None,
                ));
                body.push_str(&frame(
                    &json!({"error": {"message": format!("upstream rejected {auth}"), "code": 500}}),
                ));
                sse(body)
            }
        }
    });
    let gw = Gw::start(
        &ONE_GROUP.replace(
            "{num_retries: 0}",
            "{num_retries: 0, mid_stream: error, cooldown_time: 0}",
        ),
        &net,
    );
    for stream in [false, false, true] {
        let response = gw.chat(None, chat_body("g", stream)).await;
        let text = text(response).await;
        assert!(
            !text.contains("SECRET") && !text.contains(SECRET),
            "secret leaked to the client: {text}"
        );
        assert!(
            text.contains("[redacted]"),
            "the echo is shown redacted: {text}"
        );
    }
}

// 2b. The upstream's `param` reaches the client on a 4xx (it names the field of the request
// at fault): an upstream that echoes its key there must not leak it, in either mode, and a
// `param` that is no field path (free text, or over 256 bytes) is not passed on at all.
#[tokio::test(start_paused = true)]
async fn an_upstream_param_echoing_the_key_is_not_passed_on() {
    let net = MemNet::new();
    net.host("up", |call| {
        let auth = call
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let param = match call.n % 3 {
            1 => auth.clone(),
            2 => auth[7..].to_string(),
            _ => "messages.[0].content".to_string(),
        };
        json_response(
            400,
            &json!({"error": {"message": "bad field", "type": "invalid_request_error", "param": param}}),
        )
    });
    let gw = Gw::start(
        &ONE_GROUP.replace("{num_retries: 0}", "{num_retries: 0, cooldown_time: 0}"),
        &net,
    );
    for (n, stream) in [(1, false), (2, true), (3, false)] {
        let response = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(response.status(), 400);
        let body: Value = serde_json::from_str(&text(response).await).unwrap();
        let param = &body["error"]["param"];
        assert!(
            !param.to_string().contains("SECRET"),
            "call {n}: the key leaked through param: {body}"
        );
        if n == 3 {
            assert_eq!(param, "messages.[0].content", "a field path is passed on");
        } else {
            assert_eq!(param, &Value::Null, "call {n}: {body}");
        }
    }
}

// 2d. Local servers take any key, so configs give them placeholders: vLLM's docs use
// `EMPTY`, Ollama's `ollama`, and many a config has `x`. Such a key is still kept out of what
// a client reads, but only where it stands as a word: the gateway's own words (a deployment's
// id) are not the upstream's, and a one-letter key must not eat that letter out of every
// message.
#[tokio::test(start_paused = true)]
async fn a_placeholder_key_is_redacted_only_where_it_stands_as_a_word() {
    let net = MemNet::new();
    net.host("vllm", |_| {
        json_response(
            400,
            &json!({"object": "error", "message": "max_tokens must be at least 1, got 0. (x=EMPTY)", "type": "BadRequestError", "param": null, "code": 400}),
        )
    });
    net.host("ollama", |_| {
        json_response(
            401,
            &json!({"error": {"message": "invalid key ollama for ollama-server", "type": "api_error"}}),
        )
    });
    let config = r#"
allow_anonymous: true
model_list:
  - {model_name: a, litellm_params: {model: hosted_vllm/qwen, api_base: "http://vllm/v1", api_key: x}, model_info: {id: vllm-box}}
  - {model_name: b, litellm_params: {model: ollama/llama3, api_base: "http://ollama/v1", api_key: ollama}, model_info: {id: ollama-llama3}}
router_settings: {num_retries: 0, cooldown_time: 0}
"#;
    let gw = Gw::start(config, &net);
    for stream in [false, true] {
        let body: Value =
            serde_json::from_str(&text(gw.chat(None, chat_body("a", stream)).await).await).unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(
                "deployment `vllm-box`: max_tokens must be at least 1, got 0. ([redacted]=EMPTY)"
            ),
            "stream {stream}: {body}"
        );
        let body: Value =
            serde_json::from_str(&text(gw.chat(None, chat_body("b", stream)).await).await).unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("deployment `ollama-llama3`: "),
            "stream {stream}: the gateway's own words are not redacted: {body}"
        );
        assert!(
            message.contains("invalid key [redacted] for [redacted]-server"),
            "stream {stream}: the key is, wherever the upstream says it as a word: {body}"
        );
    }
}

// 2c. A `mock_testing_*` flag fails an attempt that the metrics count as an upstream's
// failure, and takes a fallback: any client could fire every tenant's alerts without one
// upstream call. Refused unless the gateway opts in, as newer LiteLLM does.
#[tokio::test(start_paused = true)]
async fn mock_flags_are_refused_unless_the_gateway_allows_them() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["real"]));
    let allow = "general_settings: {dangerously_allow_mock_testing_request_params: true}\n";
    for (config, allowed) in [
        (ONE_GROUP.to_string(), false),
        (with(ONE_GROUP, allow), true),
    ] {
        let gw = Gw::start(&config, &net);
        for stream in [false, true] {
            let mut body = chat_body("g", stream);
            body["mock_testing_rate_limit_error"] = json!(true);
            let response = gw.chat(None, body).await;
            let status = response.status();
            let text = text(response).await;
            if allowed {
                assert_eq!(
                    status, 429,
                    "stream={stream}: the mock fails the only group: {text}"
                );
            } else {
                assert_eq!(status, 400, "stream={stream}: {text}");
                assert!(
                    text.contains("dangerously_allow_mock_testing_request_params")
                        && text.contains(r#""param":"mock_testing_rate_limit_error""#),
                    "the error names the flag and the setting: {text}"
                );
                assert!(!gw.saw("attempt_started"), "{:#?}", gw.events());
            }
        }
    }
}

// 15a. An upstream's own 401 is the gateway's misconfiguration, not the client's key: the
// client gets a 502 it can tell from its own 401, without retrying it.
#[tokio::test(start_paused = true)]
async fn an_upstream_401_is_a_gateway_error_for_the_client() {
    let net = MemNet::new();
    net.host("up", |_| {
        json_response(
            401,
            &json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}),
        )
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let response = gw.chat(None, chat_body("g", false)).await;
    assert_eq!(response.status(), 502);
    let body: Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert_eq!(
        body["error"]["code"], "upstream_authentication_error",
        "{body}"
    );
}

// 15b. Error bodies never show internal host names, ports or OS errors.
#[tokio::test(start_paused = true)]
async fn transport_errors_do_not_expose_internal_addresses() {
    let net = MemNet::new(); // `up` is not served: connection refused
    let gw = Gw::start(ONE_GROUP, &net);
    let text = text(gw.chat(None, chat_body("g", false)).await).await;
    assert!(
        !text.contains("up:80") && !text.contains("os error") && !text.contains("refused (os"),
        "{text}"
    );
    assert!(
        text.contains("deployment `d`"),
        "names the deployment instead: {text}"
    );
}

// 3. Retry-After, in every form, is bounded: a far-future date or a huge number cools for at
// most `limits.max_cooldown`, and clients are told no more than that.
#[tokio::test(start_paused = true)]
async fn retry_after_is_capped_by_max_cooldown() {
    for retry_after in ["Fri, 31 Dec 9999 23:59:59 GMT", "100000", "251606658974"] {
        let net = MemNet::new();
        let value = retry_after.to_string();
        net.host("up", move |_| {
            let mut r = json_response(
                429,
                &json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
            );
            r.headers_mut()
                .insert("retry-after", value.parse().unwrap());
            r
        });
        // The group's only deployment: cooled only with cooldown_lone_deployment.
        let config = ONE_GROUP.replace(
            "{num_retries: 0}",
            "{num_retries: 0, cooldown_lone_deployment: true}",
        );
        let gw = Gw::start(&with(&config, "limits: {max_cooldown: 120}\n"), &net);
        let response = gw.chat(None, chat_body("g", false)).await;
        assert_eq!(response.status(), 429);
        let told: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(told, 120, "Retry-After: {retry_after}");
        assert!(
            gw.saw("deployment_cooled deployment=d for_ms=120000 class=rate_limited"),
            "Retry-After: {retry_after}: {:#?}",
            gw.events()
        );
    }
}

// 4. An upstream that invents a new choice index with every chunk cannot grow the gateway's
// memory: the answer fails at `limits.max_choices`.
#[tokio::test(start_paused = true)]
async fn new_choice_index_floods_stop_at_max_choices() {
    let sent = Arc::new(AtomicU64::new(0));
    let net = MemNet::new();
    let counter = sent.clone();
    net.host("up", move |_| {
        let counter = counter.clone();
        sse_flood(Vec::new(), move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            if i > 50_000 {
                return "data: [DONE]\n\n".to_string();
            }
            frame(
                &json!({"id": "x", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": i, "delta": {"content": "x"}, "finish_reason": null}]}),
            )
        })
    });
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let response = gw.chat(None, chat_body("g", stream)).await;
        let text = text(response).await;
        assert!(
            gw.saw("limit_hit limit=max_choices"),
            "stream={stream}: {text:.300}"
        );
    }
    assert!(
        sent.load(Ordering::SeqCst) < 2_000,
        "read {} chunks before stopping",
        sent.load(Ordering::SeqCst)
    );
}

// 5. Content-less chunks (role-only, empty deltas) and SSE comments count against
// `max_upstream_body_bytes` like any other byte, in both modes.
#[tokio::test(start_paused = true)]
async fn content_less_floods_stop_at_max_upstream_body_bytes() {
    for (name, flood) in [
        (
            "role-only",
            frame(&chunk_json("m", json!({"role": "assistant"}), None)),
        ),
        ("comments", ": keep-alive\n\n".to_string()),
    ] {
        for stream in [false, true] {
            let sent = Arc::new(AtomicU64::new(0));
            let net = MemNet::new();
            let (counter, flood_frame) = (sent.clone(), flood.clone());
            net.host("up", move |_| {
                let flood = flood_frame.clone();
                let counter = counter.clone();
                sse_flood(
                    vec![frame(&chunk_json("m", json!({"content": "Hi"}), None))],
                    move |i| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        if i > 100_000 {
                            "data: [DONE]\n\n".to_string()
                        } else {
                            flood.clone()
                        }
                    },
                )
            });
            let gw = Gw::start(
                &with(ONE_GROUP, "limits: {max_upstream_body_bytes: 65536}\n"),
                &net,
            );
            let response = gw.chat(None, chat_body("g", stream)).await;
            let body = text(response).await;
            assert!(
                gw.saw("limit_hit limit=max_upstream_body_bytes"),
                "{name} stream={stream}: {:#?}",
                gw.events()
            );
            assert!(
                body.len() < 100_000,
                "{name} stream={stream}: the client got {} bytes",
                body.len()
            );
            // The limit, plus what the pipes between upstream and gateway buffer (64 KiB).
            let bytes = sent.load(Ordering::SeqCst) * flood.len() as u64;
            assert!(
                bytes < 4 * 65_536,
                "{name} stream={stream}: the upstream got {bytes} bytes of flood out"
            );
        }
    }
}

/// A group whose one deployment answers after `delay` and cools on its first counted failure
/// (`cooldown_lone_deployment`: otherwise the only deployment of a group is never cooled).
fn slow_group(net: &MemNet, delay: Duration) -> Gw {
    net.host_after("up", delay, |_| sse_answer("m", &["pong"]));
    Gw::start(
        &ONE_GROUP.replace(
            "{num_retries: 0}",
            "{num_retries: 0, allowed_fails: 0, cooldown_time: 60, cooldown_lone_deployment: true}",
        ),
        net,
    )
}

// 6. A request's own tight timeout is not the deployment's failure: it never cools a
// deployment that other tenants share.
#[tokio::test(start_paused = true)]
async fn a_tenants_own_tight_timeout_never_cools_a_shared_deployment() {
    for setting in ["timeout", "stream_timeout"] {
        let net = MemNet::new();
        let gw = slow_group(&net, Duration::from_millis(200));
        for _ in 0..4 {
            let mut body = chat_body("g", false);
            body[setting] = json!(0.05);
            let r = gw.chat(None, body).await;
            assert_eq!(r.status(), 504, "{setting}");
        }
        let r = gw.chat(None, chat_body("g", false)).await;
        assert_eq!(r.status(), 200, "{setting}: {:#?}", gw.events());
        assert!(!gw.saw("deployment_cooled"), "{setting}");
        assert!(
            gw.saw("failure_not_counted deployment=d reason=request_timeout"),
            "{setting}: {:#?}",
            gw.events()
        );
    }
}

// 6b. The deployment's own timeout (gateway level) does count.
#[tokio::test(start_paused = true)]
async fn the_gateways_own_timeout_still_counts() {
    let net = MemNet::new();
    net.host_after("up", Duration::from_millis(200), |_| {
        sse_answer("m", &["pong"])
    });
    let gw = Gw::start(
        &ONE_GROUP.replace(
            "{num_retries: 0}",
            "{num_retries: 0, allowed_fails: 0, cooldown_time: 60, cooldown_lone_deployment: true, stream_timeout: 0.05}",
        ),
        &net,
    );
    assert_eq!(gw.chat(None, chat_body("g", false)).await.status(), 504);
    assert!(
        gw.saw("deployment_cooled deployment=d"),
        "{:#?}",
        gw.events()
    );
}

// 7a. Running out of local file descriptors is not the upstream's fault.
#[tokio::test(start_paused = true)]
async fn local_resource_errors_never_cool_a_deployment() {
    const EMFILE: i32 = 24;
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["pong"]));
    let gw = Gw::start(
        &ONE_GROUP.replace(
            "{num_retries: 0}",
            "{num_retries: 0, allowed_fails: 0, cooldown_time: 60, cooldown_lone_deployment: true}",
        ),
        &net,
    );
    net.fail_connects(Some(EMFILE));
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 503, "a local failure is the gateway's own: 503");
        // Overloaded, as over `max_connections`: the SDK's own retry, after a second, is
        // welcome (`x-should-retry: false` made openai-python and openai-node give up).
        let h = r.headers();
        assert_eq!(h.get("x-should-retry"), None, "stream={stream}: {h:?}");
        assert_eq!(
            h.get("retry-after").map(|v| v.to_str().unwrap()),
            Some("1"),
            "stream={stream}: {h:?}"
        );
    }
    net.fail_connects(None);
    let r = gw.chat(None, chat_body("g", false)).await;
    assert_eq!(r.status(), 200, "{:#?}", gw.events());
    assert!(gw.saw("failure_not_counted deployment=d reason=local_resource"));
}

/// A listener that fails every accept with EMFILE, counting calls.
struct FailingListener(Arc<AtomicU64>);

impl switchback::transport::Listener for FailingListener {
    fn accept(
        &mut self,
    ) -> switchback::transport::BoxFuture<
        '_,
        std::io::Result<(switchback::transport::BoxIo, std::net::SocketAddr)>,
    > {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::task::yield_now().await;
            if n >= 1_000 {
                // Enough to tell a spin from a backoff; then let the test's clock run.
                std::future::pending::<()>().await;
            }
            Err(std::io::Error::from_raw_os_error(24))
        })
    }
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

// 7b. The accept loop backs off on errors instead of spinning a core.
#[tokio::test(start_paused = true)]
async fn the_accept_loop_backs_off_on_errors() {
    let net = MemNet::new();
    let gw = Gw::start(ONE_GROUP, &net);
    let calls = Arc::new(AtomicU64::new(0));
    tokio::spawn(switchback::gateway::serve(
        gw.engine.clone(),
        FailingListener(calls.clone()),
        std::future::pending(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = calls.load(Ordering::SeqCst);
    assert!(n < 50, "{n} accepts in one second");
}

// 8. A client that stops reading a stream cannot hold its slot, task and upstream
// connection for ever: the write times out (`client_write_timeout`) and everything is freed.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_after_client_write_timeout() {
    let net = MemNet::new();
    let big = "x".repeat(16 * 1024);
    net.host("up", move |_| {
        let big = big.clone();
        sse_flood(Vec::new(), move |i| {
            if i > 100_000 {
                "data: [DONE]\n\n".into()
            } else {
                frame(&chunk_json("m", json!({"content": big}), None))
            }
        })
    });
    let gw = Gw::start(
        &with(ONE_GROUP, "limits: {client_write_timeout: 5}\n"),
        &net,
    );
    let response = a_stream_never_read(&gw).await;
    // Never read the body.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Whichever notices first (the frame channel's write timeout, `too_slow`, or the
    // socket's, which closes the connection, `left`), the request is abandoned.
    assert!(
        settle(100, || gw.saw("client_gone reason=") && net.open() == 0).await,
        "{:#?}",
        gw.events()
    );
    drop(response);
}

// 8c. A client that reads a non-stream answer as a trickle (a little every 20 s, each read
// inside `client_write_timeout`, which any progress resets) held its connection slot and the
// whole answer for as long as it liked: 512 KiB at 16 KiB per 20 s is over ten minutes,
// and nothing bounded it. A response is written by the request's deadline or not at all.
#[tokio::test(start_paused = true)]
async fn a_client_that_reads_a_trickle_is_cut_at_the_deadline() {
    let net = MemNet::new();
    let piece = "x".repeat(8 * 1024);
    net.host("up", move |_| {
        let pieces: Vec<&str> = std::iter::repeat_n(piece.as_str(), 64).collect();
        sse_answer("m", &pieces)
    });
    let gw = Gw::start(
        &with(
            ONE_GROUP,
            "limits: {request_deadline: 5, client_write_timeout: 30}\n",
        ),
        &net,
    );
    let mut pipe = gw.raw().await;
    let body = chat_body("g", false).to_string();
    pipe.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let mut got = 0;
    let mut buf = vec![0u8; 16 * 1024];
    let closed = loop {
        if started.elapsed() > Duration::from_secs(300) {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break true,
            Ok(n) => got += n,
        }
    };
    assert!(
        closed,
        "still writing {:?} in, {got} bytes read",
        started.elapsed()
    );
    assert!(got < 512 * 1024, "{got}");
}

/// A streaming chat request on a connection whose client never reads (1 KiB of buffer):
/// its response head, a 200.
async fn a_stream_never_read(gw: &Gw) -> http::Response<hyper::body::Incoming> {
    let mut sender = gw.connect_with_buffer(1024).await;
    let response = sender
        .send_request(chat_request(None, &chat_body("g", true)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// An answer's first frames for a client that never reads, under `stream_buffer_frames: 4`:
/// a first chunk that fills hyper's write buffer (more than its 408 KiB), then four that
/// fill the frame channel. Each is handed over; the next write waits.
fn clogging_frames() -> String {
    let mut body = frame(&chunk_json(
        "m",
        json!({"role": "assistant", "content": "x".repeat(500 * 1024)}),
        None,
    ));
    for _ in 0..4 {
        body.push_str(&frame(&chunk_json("m", json!({"content": "y"}), None)));
    }
    body
}

// 8a. The answer's held end (the finish chunk, `[DONE]`) goes to the client after the
// upstream is done: a client that stops reading there is gone, and the request's trace,
// log and metrics say so, never `completed` for an answer whose end it never got.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_before_the_held_end_is_gone_not_completed() {
    let net = MemNet::new();
    net.host("up", |_| {
        // Nothing is left to wait on but the held finish chunk and `[DONE]`.
        let mut body = clogging_frames();
        body.push_str(&frame(&chunk_json("m", json!({}), Some("stop"))));
        body.push_str("data: [DONE]\n\n");
        sse(body)
    });
    let gw = Gw::start(
        &with(
            ONE_GROUP,
            "limits: {client_write_timeout: 5, stream_buffer_frames: 4, \
             max_sse_line_bytes: 1048576}\n",
        ),
        &net,
    );
    let response = a_stream_never_read(&gw).await;
    // Never read the body.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        settle(100, || gw.saw("client_gone reason=") && net.open() == 0).await,
        "{:#?}",
        gw.events()
    );
    assert!(!gw.saw("completed"), "{:#?}", gw.events());
    drop(response);
}

// 8c. A stream whose request deadline passes while its client's buffer is full ends as
// the deadline's failure, not as a client gone: the error event that could not be written
// past the deadline says nothing of the client (found by the review of 8a's change).
#[tokio::test(start_paused = true)]
async fn a_stream_cut_by_the_deadline_is_failed_even_when_its_end_cannot_be_written() {
    let net = MemNet::new();
    net.host("up", |_| {
        let (tx, response) = sse_channel();
        tokio::spawn(async move {
            // Then stalls.
            let body = clogging_frames();
            let _ = tx.send(Ok(Bytes::from(body))).await;
            std::future::pending::<()>().await;
            drop(tx);
        });
        response
    });
    let gw = Gw::start(
        &with(
            ONE_GROUP,
            "limits: {client_write_timeout: 3600, request_deadline: 2, stream_buffer_frames: 4, \
             max_sse_line_bytes: 1048576}\n",
        ),
        &net,
    );
    let response = a_stream_never_read(&gw).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        settle(100, || gw.saw("failed status=")).await,
        "{:#?}",
        gw.events()
    );
    assert!(!gw.saw("client_gone"), "{:#?}", gw.events());
    drop(response);
}

// 8b. Delivery also runs under the request deadline.
#[tokio::test(start_paused = true)]
async fn delivery_runs_under_the_request_deadline() {
    let net = MemNet::new();
    net.host("up", |_| {
        sse_flood(Vec::new(), |_| {
            frame(&chunk_json("m", json!({"content": "y".repeat(4096)}), None))
        })
    });
    let gw = Gw::start(
        &with(
            ONE_GROUP,
            "limits: {client_write_timeout: 3600, request_deadline: 2}\n",
        ),
        &net,
    );
    let mut sender = gw.connect_with_buffer(1024).await;
    let response = sender
        .send_request(chat_request(None, &chat_body("g", true)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(settle(100, || net.open() == 0).await, "{:#?}", gw.events());
    // What the client gets is a stream cut short, never one that ends as if it were whole:
    // no `[DONE]`, no error event, so the body itself must fail (the SDKs raise on it).
    let read = response.into_body().collect().await;
    assert!(
        read.is_err(),
        "a stream cut at the deadline ended cleanly: {:?}",
        read.map(|b| String::from_utf8_lossy(&b.to_bytes())
            .chars()
            .rev()
            .take(200)
            .collect::<String>())
    );
}

const KEYED: &str = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
keys:
  - {key: sk-good, key_alias: good}
"#;

/// A chat request's head and a body of about `bytes` bytes (one long message).
fn big_upload(bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let body = json!({"model": "g", "stream": false,
        "messages": [{"role": "user", "content": "a".repeat(bytes)}]})
    .to_string()
    .into_bytes();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    (head, body)
}

/// A gateway whose upstream answers at once, and a raw connection to it on which a chat
/// request's head has been sent: the body of about `bytes` bytes is the caller's to send.
async fn upload_started(bytes: usize) -> (Gw, tokio::io::DuplexStream, Vec<u8>) {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(ONE_GROUP, &net);
    let (head, body) = big_upload(bytes);
    let mut pipe = gw.raw().await;
    pipe.write_all(&head).await.unwrap();
    (gw, pipe, body)
}

/// Writes `body` at `per_second` bytes a second (in tenths of a second, on the paused
/// clock), as a client on a slow uplink does; the first write that fails ends it.
async fn upload_at(
    pipe: &mut tokio::io::DuplexStream,
    body: &[u8],
    per_second: usize,
) -> std::io::Result<()> {
    for piece in body.chunks(per_second / 10) {
        pipe.write_all(piece).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The response's head: what the pipe holds up to the first blank line.
async fn response_head(pipe: &mut tokio::io::DuplexStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while !all.windows(4).any(|w| w == b"\r\n\r\n") {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

// 8d. `body_read_timeout` bounds how far an upload may fall behind
// `min_request_body_bytes_per_second`, not the whole upload: it was a deadline on the whole
// body, set when the head arrived, so with 50 MiB bodies allowed any vision upload slower
// than 14 Mbit/s got a 408 (and, its body dropped unread, a reset under its writes: the SDK
// retried the upload from the start). A 1 MiB body at 256 kbit/s took 32 s of the 30.
#[tokio::test(start_paused = true)]
async fn a_slow_upload_above_the_minimum_rate_is_read_to_its_end() {
    let (_gw, mut pipe, body) = upload_started(1 << 20).await;
    let started = tokio::time::Instant::now();
    upload_at(&mut pipe, &body, 32 * 1024).await.unwrap();
    assert!(started.elapsed() > Duration::from_secs(30));
    let head = response_head(&mut pipe).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

// 8e. ... and the rule holds the other way: a client below the rate (a slowloris) still
// gets its 408 once it is `body_read_timeout` behind, whatever it declared; the deadline
// grows only with bytes received.
#[tokio::test(start_paused = true)]
async fn an_upload_below_the_minimum_rate_gets_a_408_once_it_falls_behind() {
    let (_gw, pipe, body) = upload_started(1 << 20).await;
    let started = tokio::time::Instant::now();
    // 1 KiB/s, where 16 KiB/s is the minimum: 30 s behind after about 32 s.
    let (mut reader, mut writer) = tokio::io::split(pipe);
    let uploading = tokio::spawn(async move {
        for piece in body.chunks(100) {
            if writer.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut first = [0u8; 64];
    let n = reader.read(&mut first).await.unwrap();
    let waited = started.elapsed();
    uploading.abort();
    let first = String::from_utf8_lossy(&first[..n]);
    assert!(first.starts_with("HTTP/1.1 408"), "{first}");
    assert!(
        waited > Duration::from_secs(31) && waited < Duration::from_secs(34),
        "{waited:?}"
    );
}

// 8e'. A client that sent most of a large body fast, then stops, gets its 408
// `body_read_timeout` after its last byte: the minimum rate alone gave it about a second per
// 16 KiB already sent (for 8 MiB, over eight minutes), a connection and a body in memory
// held for nothing.
#[tokio::test(start_paused = true)]
async fn an_upload_that_stops_gets_its_408_whatever_it_sent_before() {
    let (_gw, mut pipe, body) = upload_started(8 << 20).await;
    pipe.write_all(&body[..body.len() - 1]).await.unwrap();
    let stopped = tokio::time::Instant::now();
    let mut first = [0u8; 64];
    let n = pipe.read(&mut first).await.unwrap();
    let waited = stopped.elapsed();
    let first = String::from_utf8_lossy(&first[..n]);
    assert!(first.starts_with("HTTP/1.1 408"), "{first}");
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}: body_read_timeout after its last byte"
    );
}

// 8e''. ... and a byte now and then after the burst earns nothing: the rate counted from
// the body's start let a client bank the time of everything it sent fast and spend it on a
// byte every 25 s, holding its connection and its body's share of
// `max_in_flight_request_body_bytes` (found live: four such uploads kept every other
// tenant's requests at 503). What a body is ahead of the minimum rate is banked for at most
// `body_read_timeout`.
#[tokio::test(start_paused = true)]
async fn an_upload_that_trickles_after_a_burst_gets_its_408() {
    let (_gw, mut pipe, body) = upload_started(8 << 20).await;
    let (burst, rest) = body.split_at(body.len() - 100);
    pipe.write_all(burst).await.unwrap();
    let stopped = tokio::time::Instant::now();
    let (mut reader, mut writer) = tokio::io::split(pipe);
    let rest = rest.to_vec();
    let trickling = tokio::spawn(async move {
        for byte in rest.chunks(1) {
            tokio::time::sleep(Duration::from_secs(25)).await;
            if writer.write_all(byte).await.is_err() {
                return;
            }
        }
    });
    let mut first = [0u8; 64];
    let n = reader.read(&mut first).await.unwrap();
    let waited = stopped.elapsed();
    trickling.abort();
    let first = String::from_utf8_lossy(&first[..n]);
    assert!(first.starts_with("HTTP/1.1 408"), "{first}");
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}: body_read_timeout after the burst, whatever trickles after it"
    );
}

// 8f. A client that fell behind, then sends the rest of its body soon after, reads its 408:
// the rest is read and thrown away for `body_timeout_grace`, as a refused upload's is. The
// body was dropped unread, so the gateway closed the connection under the client's writes
// (a reset, on TCP) and the SDK saw a connection error instead of the 408.
#[tokio::test(start_paused = true)]
async fn a_408_is_read_as_a_408_by_a_client_that_finishes_its_upload() {
    let net = MemNet::new();
    let gw = Gw::start(ONE_GROUP, &net);
    let (head, body) = big_upload(64 * 1024);
    let mut pipe = gw.raw().await;
    pipe.write_all(&head).await.unwrap();
    pipe.write_all(&body[..1024]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    let sent = pipe.write_all(&body[1024..]).await;
    assert!(sent.is_ok(), "the rest of the upload was cut: {sent:?}");
    let head = response_head(&mut pipe).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");

    // One that sends nothing more is cut once the grace is over, not held.
    let mut pipe = gw.raw().await;
    pipe.write_all(&head_and(&body[..1024])).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut all = Vec::new();
    pipe.read_to_end(&mut all).await.unwrap();
    let held = started.elapsed();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 408"));
    assert!(
        held >= Duration::from_secs(35) && held < Duration::from_secs(36),
        "held {held:?}, for body_read_timeout (30 s) and body_timeout_grace (5 s)"
    );

    // With no grace, the connection closes with the 408.
    let gw = Gw::start(&with(ONE_GROUP, "limits: {body_timeout_grace: 0}\n"), &net);
    let mut pipe = gw.raw().await;
    pipe.write_all(&head_and(&body[..1024])).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(pipe.write_all(&body[1024..]).await.is_err());

    fn head_and(part: &[u8]) -> Vec<u8> {
        let (mut head, _) = big_upload(64 * 1024);
        head.extend_from_slice(part);
        head
    }
}

// 8g. The rest of a refused upload (a 413, a 401) is read and thrown away under the same
// rule, so a slow client still reads its error: the rest was read for `body_read_timeout`
// from the head at most, and a 1.5 MiB upload at 256 kbit/s was cut after 30 s.
#[tokio::test(start_paused = true)]
async fn a_slow_refused_upload_still_reads_its_error() {
    let net = MemNet::new();
    let gw = Gw::start(
        &with(ONE_GROUP, "limits: {max_request_body_bytes: 1048576}\n"),
        &net,
    );
    let (head, body) = big_upload(3 << 19);
    let mut pipe = gw.raw().await;
    pipe.write_all(&head).await.unwrap();
    let sent = upload_at(&mut pipe, &body, 32 * 1024).await;
    assert!(sent.is_ok(), "the upload was cut: {sent:?}");
    let head = response_head(&mut pipe).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

// 8h. The body's limits are range-checked at load, as every limit is.
#[test]
fn the_body_rate_limits_are_range_checked() {
    for (limit, value) in [
        ("min_request_body_bytes_per_second", "-1"),
        ("min_request_body_bytes_per_second", "18446744073709551615"),
        ("body_timeout_grace", "-1"),
        ("body_timeout_grace", "1e9"),
    ] {
        let config = with(ONE_GROUP, &format!("limits: {{{limit}: {value}}}\n"));
        let e = switchback::config::GatewayConfig::load("g.yaml", &config)
            .expect_err(&format!("{limit} = {value} is refused"))
            .to_string();
        assert!(e.contains(limit), "{e}");
    }
    let config = with(
        ONE_GROUP,
        "limits: {min_request_body_bytes_per_second: 0, body_timeout_grace: 0}\n",
    );
    assert!(switchback::config::GatewayConfig::load("g.yaml", &config).is_ok());
}

// 9. The key is checked before the body is read: an unknown key gets 401 at once, whatever
// it is still sending.
#[tokio::test(start_paused = true)]
async fn unknown_keys_are_refused_before_the_body_is_read() {
    let net = MemNet::new();
    let gw = Gw::start(KEYED, &net);
    let mut pipe = gw.raw().await;
    pipe.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\nauthorization: Bearer sk-bad\r\n\
          content-type: application/json\r\ncontent-length: 1000000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), pipe.read(&mut buf))
        .await
        .expect("answered within a second, not after body_read_timeout")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

// 9c'. The key comes before the declared size too: a stranger declaring a body over
// `max_request_body_bytes` gets the 401, and learns nothing of the gateway's limits (it got
// a 413 naming `max_request_body_bytes` and its value). A known key still gets the 413.
#[tokio::test(start_paused = true)]
async fn a_stranger_declaring_a_huge_body_is_refused_for_its_key_first() {
    let net = MemNet::new();
    let gw = Gw::start(
        &with(KEYED, "limits: {max_request_body_bytes: 1048576}\n"),
        &net,
    );
    for (key, status) in [("sk-bad", "401"), ("sk-good", "413")] {
        let mut pipe = gw.raw().await;
        pipe.write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\nauthorization: Bearer {key}\r\n\
                 content-type: application/json\r\ncontent-length: 2000000\r\n\r\n{{\"model\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let head = response_head(&mut pipe).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{key}: {head}"
        );
    }
}

// 9d. A client that leaves in the middle of its upload is a client gone, not a refusal:
// nobody receives an answer. It was counted as a 400 in `switchback_refused_requests_total`
// and logged `outcome="refused" status=400`, so every cancelled upload looked like a bad
// request in the 4xx dashboards.
#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_during_its_upload_is_gone_not_refused() {
    let (logs, _guard) = Logs::capture();
    let net = MemNet::new();
    let gw = Gw::start_metered(ONE_GROUP, &net);
    let mut pipe = gw.raw().await;
    pipe.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    drop(pipe);
    let gone =
        "switchback_client_disconnects_total{mode=\"unknown\",reason=\"left_during_upload\"} 1";
    let seen = settle(100, || {
        let scrape = gw.scrape();
        scrape.contains(gone) || scrape.contains("switchback_refused_requests_total{")
    })
    .await;
    let scrape = gw.scrape();
    assert!(seen, "neither counted:\n{scrape}");
    assert!(scrape.contains(gone), "{scrape}");
    assert!(
        !scrape.contains("switchback_refused_requests_total{"),
        "no refusal: {scrape}"
    );
    let access = logs.lines("switchback::access");
    assert_eq!(access.len(), 1, "{access:#?}");
    assert_eq!(access[0]["route"], "chat", "{access:#?}");
    assert_eq!(access[0]["outcome"], "client_gone", "{access:#?}");
    assert_eq!(access[0]["reason"], "left_during_upload", "{access:#?}");
    assert!(access[0].get("status").is_none(), "{access:#?}");

    // A body whose framing is broken, from a client still there, is still a 400 refusal.
    let mut pipe = gw.raw().await;
    pipe.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n\
          transfer-encoding: chunked\r\n\r\nZZ\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0; 4096];
    let n = pipe.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let refused =
        "switchback_refused_requests_total{route=\"chat\",status=\"400\",limit=\"none\"} 1";
    assert!(
        settle(100, || gw.scrape().contains(refused)).await,
        "{}",
        gw.scrape()
    );
}

// 9b. A key is presented as `Authorization: Bearer <key>`, or, with no Authorization header,
// as Azure OpenAI's `api-key` header (the official SDK's `AzureOpenAI` client sends it, and
// LiteLLM takes it). An Authorization header that is not a bearer token is refused: read as
// no key at all, it served a client that believed it used its own key as anonymous.
#[tokio::test(start_paused = true)]
async fn a_malformed_authorization_header_is_refused_not_read_as_anonymous() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let config = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
  - {model_name: h, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: e}}
keys:
  - {key: sk-good, key_alias: good, models: [g]}
"#;
    let gw = Gw::start(config, &net);
    let send = |headers: Vec<(&'static str, &'static str)>, model: &'static str| {
        let gw = &gw;
        async move {
            let (status, _, text) = send_with(gw, "POST", headers, Some((model, false))).await;
            (status, text)
        }
    };
    for malformed in ["sk-good", "Basic c2stZ29vZA==", "Bearer", "Bearer   "] {
        let (status, text) = send(vec![("authorization", malformed)], "h").await;
        assert_eq!(status, 401, "{malformed:?}: {text}");
        assert!(
            text.contains("Bearer"),
            "the error says what is expected: {text}"
        );
    }
    let (status, text) = send(vec![("api-key", "sk-good")], "h").await;
    assert_eq!(
        status, 403,
        "api-key names the key, which may not use h: {text}"
    );
    let (status, text) = send(vec![("api-key", "sk-good")], "g").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = send(vec![("api-key", "sk-nope")], "g").await;
    assert_eq!(status, 401, "{text}");
    for unusable in ["", "   "] {
        let (status, text) = send(vec![("api-key", unusable)], "h").await;
        assert_eq!(status, 401, "api-key {unusable:?} is no key: {text}");
    }
    let (status, text) = send(vec![], "h").await;
    assert_eq!(status, 200, "no key at all is anonymous here: {text}");

    // A gateway without keys reads no key from any request: a proxy's own Authorization
    // header is not refused there.
    let gw = Gw::start(ONE_GROUP, &net);
    let request = http::Request::post("/v1/chat/completions")
        .header("host", "gateway")
        .header("authorization", "Basic c2stZ29vZA==")
        .body(http_body_util::Full::new(Bytes::from(
            chat_body("g", false).to_string(),
        )))
        .unwrap();
    let response = gw.connect().await.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
}

// 9c. Anthropic-style clients and many proxies send their key as `x-api-key`, and LiteLLM's
// own header is `x-litellm-api-key`: both name the key. Read as no key, a request carrying
// either was served as anonymous (without its key's allow-list, team or aliases) where
// anonymous requests are allowed, and refused as keyless where they are not.
// `x-litellm-api-key` supersedes the other headers, as in LiteLLM (it exists for clients
// whose Authorization carries something else); of the others the first present in
// LiteLLM's order is the key (a proxy's own `x-api-key` beside the client's Authorization
// is not read), one header sent twice with different keys is refused, and no error repeats
// a key.
#[tokio::test(start_paused = true)]
async fn every_key_header_names_the_key_and_the_first_in_litellms_order_is_read() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let config = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
  - {model_name: h, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: e}}
keys:
  - {key: sk-good, key_alias: good, models: [g]}
  - {key: sk-other, key_alias: other}
"#;
    let gw = Gw::start(config, &net);
    let send = |headers: Vec<(&'static str, &'static str)>, model: &'static str| {
        let gw = &gw;
        async move {
            let (status, _, text) = send_with(gw, "POST", headers, Some((model, false))).await;
            (status, text)
        }
    };
    for header in ["x-api-key", "x-litellm-api-key", "X-Api-Key"] {
        let (status, text) = send(vec![(header, "sk-good")], "h").await;
        assert_eq!(
            status, 403,
            "{header} names the key, which may not use h (not anonymous): {text}"
        );
        let (status, text) = send(vec![(header, "sk-good")], "g").await;
        assert_eq!(status, 200, "{header}: {text}");
        let (status, text) = send(vec![(header, "sk-nope")], "g").await;
        assert_eq!(status, 401, "{header}: {text}");
        for unusable in ["", "   "] {
            let (status, text) = send(vec![(header, unusable)], "h").await;
            assert_eq!(status, 401, "{header} {unusable:?} is no key: {text}");
            assert!(
                text.contains(&header.to_ascii_lowercase()),
                "the error names the header: {text}"
            );
        }
    }
    // LiteLLM takes `x-litellm-api-key: Bearer <key>` as well as the bare key.
    let (status, text) = send(vec![("x-litellm-api-key", "Bearer sk-good")], "h").await;
    assert_eq!(status, 403, "{text}");

    // The same key in several headers is that key.
    let (status, text) = send(
        vec![
            ("authorization", "Bearer sk-good"),
            ("api-key", "sk-good"),
            ("x-api-key", "sk-good"),
        ],
        "h",
    )
    .await;
    assert_eq!(status, 403, "{text}");
    // Different keys in Authorization, api-key and x-api-key: the first in LiteLLM's order
    // is the key (sk-other, which may use h), the later ones are not read: a proxy in front
    // adds its own x-api-key beside the client's Authorization.
    for (a, b) in [
        (
            ("authorization", "Bearer sk-other"),
            ("x-api-key", "sk-good"),
        ),
        (("authorization", "Bearer sk-other"), ("api-key", "sk-good")),
        (("api-key", "sk-other"), ("x-api-key", "sk-good")),
        (("api-key", "sk-other"), ("x-api-key", "proxy-credential")),
    ] {
        let (status, text) = send(vec![b, a], "h").await;
        assert_eq!(status, 200, "{a:?} is the key, not {b:?}: {text}");
    }
    // The header read must hold a key: one sent twice with different keys is refused, and
    // the error names it, never a key.
    let (status, text) = send(
        vec![("x-api-key", "sk-other"), ("x-api-key", "sk-good")],
        "h",
    )
    .await;
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("two x-api-key headers") && !text.contains("sk-"),
        "{text}"
    );
    // x-litellm-api-key supersedes the others, whatever they hold (a provider SDK's own
    // token, a proxy's credentials).
    for other in [
        ("authorization", "Bearer sk-other"),
        ("authorization", "Basic c2stZ29vZA=="),
        ("x-api-key", "sk-other"),
    ] {
        let (status, text) = send(vec![other, ("x-litellm-api-key", "sk-good")], "h").await;
        assert_eq!(status, 403, "with {other:?}, the key is sk-good's: {text}");
    }
}

// 10. At `max_connections`, a new connection is still answered: `/health` works and other
// routes get a clear 503, instead of waiting in the kernel's backlog.
#[tokio::test(start_paused = true)]
async fn over_the_connection_cap_health_answers_and_others_get_503() {
    let net = MemNet::new();
    let gw = Gw::start(&with(ONE_GROUP, "limits: {max_connections: 2}\n"), &net);
    let _idle1 = gw.raw().await;
    let _idle2 = gw.raw().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    for (request, expect) in [
        ("GET /health HTTP/1.1\r\nhost: g\r\n\r\n", "HTTP/1.1 200"),
        ("GET /v1/models HTTP/1.1\r\nhost: g\r\n\r\n", "HTTP/1.1 503"),
    ] {
        let mut pipe = gw.raw().await;
        pipe.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(1), pipe.read(&mut buf))
            .await
            .expect("answered at once")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with(expect), "{request}: {head}");
    }
}

// 10b. A browser page on an allowed origin reads the full gateway's 503 (its status and
// `retry-after`), and its preflight is answered as usual, so the page gets that 503 and not
// an opaque network failure. Before, the overflow answers named no origin.
#[tokio::test(start_paused = true)]
async fn over_the_connection_cap_a_listed_origin_still_reads_the_answer() {
    let net = MemNet::new();
    let gw = Gw::start(
        &with(
            ONE_GROUP,
            "limits: {max_connections: 2}\n\
             general_settings: {cors_allowed_origins: [\"https://app.example\"]}\n",
        ),
        &net,
    );
    let _idle1 = gw.raw().await;
    let _idle2 = gw.raw().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    for (request, status) in [
        (
            "OPTIONS /v1/chat/completions HTTP/1.1\r\nhost: g\r\norigin: https://app.example\r\n\
             access-control-request-method: POST\r\n\r\n",
            "HTTP/1.1 204",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\norigin: https://app.example\r\n\
             content-length: 2\r\n\r\n{}",
            "HTTP/1.1 503",
        ),
    ] {
        let mut pipe = gw.raw().await;
        pipe.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(1), pipe.read(&mut buf))
            .await
            .expect("answered at once")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(head.starts_with(&status.to_ascii_lowercase()), "{head}");
        assert!(
            head.contains("access-control-allow-origin: https://app.example"),
            "{head}"
        );
    }
    // Another origin gets no CORS header, full or not.
    let mut pipe = gw.raw().await;
    pipe.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\norigin: https://evil.example\r\n\
          content-length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let mut buf = vec![0; 4096];
    let n = pipe.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

// 10a. Past `max_connections` and `max_overflow_connections` too, a connection is closed at
// once; it is counted (`switchback_connections_dropped_total`), where nothing said the
// gateway was turning clients away without a word.
#[tokio::test(start_paused = true)]
async fn a_connection_past_both_caps_is_closed_and_counted() {
    let net = MemNet::new();
    let gw = Gw::start_metered(
        &with(
            ONE_GROUP,
            "limits: {max_connections: 1, max_overflow_connections: 0}\n",
        ),
        &net,
    );
    let mut held = gw.raw().await;
    held.write_all(b"GET /health HTTP/1.1\r\nhost: g\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = held.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "the one slot is held"
    );
    for _ in 0..2 {
        let mut dropped = gw.raw().await;
        let n = tokio::time::timeout(Duration::from_secs(1), dropped.read(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
    }
    let scrape = gw.scrape();
    assert!(
        scrape
            .lines()
            .any(|l| l
                == r#"switchback_connections_dropped_total{limit="max_overflow_connections"} 2"#),
        "{scrape}"
    );
}

// 10b. Accept loops sharing a gate (`serve --workers`: one per worker thread) share its
// connection cap: connections held on one loop count against the other's.
#[tokio::test(start_paused = true)]
async fn accept_loops_sharing_a_gate_share_the_connection_cap() {
    let net = MemNet::new();
    let gw = Gw::start(&with(ONE_GROUP, "limits: {max_connections: 2}\n"), &net);
    let engine = switchback::reload::LiveEngine::from(gw.engine.clone());
    let gate = switchback::gateway::Gate::new(&engine);
    let (a, a_conns) = tokio::sync::mpsc::channel(8);
    let (b, b_conns) = tokio::sync::mpsc::channel(8);
    for conns in [a_conns, b_conns] {
        let (engine, gate) = (engine.clone(), gate.clone());
        tokio::spawn(async move {
            switchback::gateway::accept(engine, MemListener(conns), std::future::pending(), &gate)
                .await;
        });
    }
    let pipe = |to: &tokio::sync::mpsc::Sender<switchback::transport::BoxIo>| {
        let to = to.clone();
        async move {
            let (near, far) = tokio::io::duplex(64 * 1024);
            to.send(Box::new(far)).await.expect("accepting");
            near
        }
    };
    let _idle1 = pipe(&a).await;
    let _idle2 = pipe(&a).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut other = pipe(&b).await;
    other
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: g\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), other.read(&mut buf))
        .await
        .expect("answered at once")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
}

// 11. A stream whose client leaves before commit stops calling upstreams.
#[tokio::test(start_paused = true)]
async fn a_stream_abandoned_before_commit_stops_calling_upstreams() {
    let net = MemNet::new();
    net.host_after("up", Duration::from_millis(100), |_| {
        json_response(500, &json!({"error": {"message": "boom"}}))
    });
    let gw = Gw::start(
        &ONE_GROUP.replace(
            "{num_retries: 0}",
            "{num_retries: 8, cooldown_time: 0, retry_backoff_base: 0.05, retry_backoff_max: 0.05}",
        ),
        &net,
    );
    let mut sender = gw.connect().await;
    let pending = tokio::spawn(async move {
        sender
            .send_request(chat_request(None, &chat_body("g", true)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    pending.abort();
    let _ = pending.await;
    let at_leave = net.calls("up").len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = net.calls("up").len();
    assert!(
        after <= at_leave + 1,
        "{} calls after the client left: {:#?}",
        after - at_leave,
        gw.events()
    );
    assert!(gw.saw("client_gone reason=left"));
}

// 13. The engine refuses a config without keys unless anonymous mode is asked for.
#[test]
fn anonymous_mode_is_an_explicit_opt_in() {
    let config = ONE_GROUP.replace("allow_anonymous: true\n", "");
    let e = switchback::config::GatewayConfig::load("g.yaml", &config)
        .unwrap_err()
        .to_string();
    assert!(e.contains("allow_anonymous"), "{e}");
    let e = switchback::config::GatewayConfig::load("g.yaml", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("model_list"), "an empty file is refused: {e}");
}

// 10b. A connection that sends nothing is closed after `header_read_timeout`, so idle
// sockets cannot hold the connection slots.
#[tokio::test(start_paused = true)]
async fn silent_connections_are_closed_after_header_read_timeout() {
    let net = MemNet::new();
    let gw = Gw::start(&with(ONE_GROUP, "limits: {header_read_timeout: 2}\n"), &net);
    let mut pipe = gw.raw().await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), pipe.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed by the gateway: {read:?}");
}

// 8c. ... and its connection slot goes with it: the gateway closes the socket once a write
// has waited `client_write_timeout`, rather than sit on a full socket for ever.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_loses_its_connection() {
    let net = MemNet::new();
    net.host("up", |_| {
        sse_flood(Vec::new(), |_| {
            frame(&chunk_json("m", json!({"content": "y".repeat(4096)}), None))
        })
    });
    let gw = Gw::start(
        &with(ONE_GROUP, "limits: {client_write_timeout: 2}\n"),
        &net,
    );
    let mut pipe = gw.raw().await;
    let body = chat_body("g", true).to_string();
    pipe.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Reading now finds what the pipe holds, then the end: the gateway hung up.
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), pipe.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the gateway still writes: the slot is held");
    assert!(all.len() < 256 * 1024, "{} bytes", all.len());
}

/// Sends `method` to the chat route with `headers`, and a chat body for `(model, stream)`
/// when `body` gives one; the status, headers and text of the answer.
async fn send_with(
    gw: &Gw,
    method: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<(&str, bool)>,
) -> (u16, http::HeaderMap, String) {
    let mut b = http::Request::builder()
        .method(method)
        .uri("/v1/chat/completions");
    if !headers.iter().any(|(name, _)| *name == "host") {
        b = b.header("host", "gateway");
    }
    for (name, value) in headers {
        b = b.header(name, value);
    }
    let body = match body {
        Some((model, stream)) => {
            b = b.header("content-type", "application/json");
            Bytes::from(chat_body(model, stream).to_string())
        }
        None => Bytes::new(),
    };
    let response = gw
        .connect()
        .await
        .send_request(b.body(http_body_util::Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, text(response).await)
}

// 12. Browsers: with `general_settings.cors_allowed_origins`, a page on a listed origin may
// call the gateway (its preflight answered, every response, a stream's included, naming its
// origin); an unlisted origin gets no CORS header and its preflight a 403; without the
// setting, nothing changes (a preflight is a 405, as any OPTIONS is). Before, no browser
// page could call the gateway at all: the preflight got a 405 and no response named an
// origin.
#[tokio::test(start_paused = true)]
async fn browsers_on_a_listed_origin_may_call_the_gateway() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let cors = "general_settings: {cors_allowed_origins: [\"https://app.example\"]}\n";
    let preflight = vec![
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        ),
    ];

    let gw = Gw::start(&with(ONE_GROUP, cors), &net);
    let (status, headers, text) = send_with(&gw, "OPTIONS", preflight.clone(), None).await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        headers["access-control-allow-headers"],
        "authorization, content-type, x-stainless-os"
    );
    assert!(headers.get("access-control-max-age").is_some());
    assert!(
        headers.get_all("vary").iter().any(|v| v == "Origin"),
        "{headers:?}"
    );
    for stream in [false, true] {
        let (status, headers, text) = send_with(
            &gw,
            "POST",
            vec![("origin", "https://app.example")],
            Some(("g", stream)),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(headers["access-control-expose-headers"], "*");
        assert!(text.contains("hi"), "{text}");
    }
    // An error names the origin too: the page can read why.
    let (status, headers, _) =
        send_with(&gw, "GET", vec![("origin", "https://app.example")], None).await;
    assert_eq!(status, 405);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    // An unlisted origin: no CORS header, and its preflight refused.
    let mut elsewhere = preflight.clone();
    elsewhere[0] = ("origin", "https://evil.example");
    let (status, headers, text) = send_with(&gw, "OPTIONS", elsewhere, None).await;
    assert_eq!(status, 403, "{text}");
    assert!(headers.get("access-control-allow-origin").is_none());
    assert!(text.contains("cors_allowed_origins"), "{text}");
    let (status, headers, _) = send_with(
        &gw,
        "POST",
        vec![("origin", "https://evil.example")],
        Some(("g", false)),
    )
    .await;
    assert_eq!(
        status, 403,
        "anonymous, from an unlisted origin: see the test below"
    );
    assert!(headers.get("access-control-allow-origin").is_none());

    // Without the setting, nothing changes.
    let gw = Gw::start(ONE_GROUP, &net);
    let (status, headers, _) = send_with(&gw, "OPTIONS", preflight, None).await;
    assert_eq!(status, 405);
    assert!(headers.get("access-control-allow-origin").is_none());
}

// 12b. A page on any site can POST to a gateway without asking first: a `text/plain` body
// is a "simple" request, which browsers send without a preflight (only reading the answer
// is what CORS forbids). Against a gateway that serves anonymous requests (on a laptop, in
// a private network), any page its users opened spent its models. An anonymous POST from
// a browser page (it says its `Origin`) is served only for a listed origin or the gateway's
// own, as Ollama does (`OLLAMA_ORIGINS`); a request with a key is the key's to answer for.
#[tokio::test(start_paused = true)]
async fn a_page_on_another_site_cannot_spend_an_anonymous_gateway() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let cors = "general_settings: {cors_allowed_origins: [\"https://app.example\"]}\n";
    let keyed = "keys:\n  - {key: sk-good, models: [g]}\n";
    for (config, what) in [
        (ONE_GROUP.to_string(), "CORS off"),
        (with(ONE_GROUP, cors), "CORS on"),
    ] {
        let gw = Gw::start(&config, &net);
        let before = net.calls("up").len();
        let (status, _, text) = send_with(
            &gw,
            "POST",
            vec![
                ("origin", "https://evil.example"),
                ("content-type", "text/plain"),
            ],
            Some(("g", false)),
        )
        .await;
        assert_eq!(status, 403, "{what}: {text}");
        assert!(text.contains("cors_allowed_origins"), "{what}: {text}");
        assert_eq!(net.calls("up").len(), before, "{what}: nothing was spent");
        // No Origin (an SDK, curl): served. The gateway's own origin, where its `Host` is
        // an address or `localhost` and the `Origin` names the same: served.
        for headers in [
            vec![],
            vec![
                ("host", "127.0.0.1:4000"),
                ("origin", "http://127.0.0.1:4000"),
            ],
            vec![
                ("host", "localhost:4000"),
                ("origin", "http://localhost:4000"),
            ],
            vec![("host", "[::1]:4000"), ("origin", "http://[::1]:4000")],
        ] {
            let (status, _, text) =
                send_with(&gw, "POST", headers.clone(), Some(("g", false))).await;
            assert_eq!(status, 200, "{what}, {headers:?}: {text}");
        }
        // DNS rebinding: a page on `http://evil.example:4000` whose name the attacker then
        // points at the gateway's address is, to the browser, on the gateway's own origin:
        // `Host` and `Origin` agree and it says `same-origin` (and may read the answers).
        // Behind a proxy that rewrites `Host` to an address, the same page says only its
        // `Origin` and `same-origin`. A `Host` that is a name says nothing of whose page it
        // is, nor does `Sec-Fetch-Site`: a page on the gateway's own named origin is served
        // once listed in `cors_allowed_origins`.
        let before = net.calls("up").len();
        for headers in [
            vec![
                ("host", "evil.example:4000"),
                ("origin", "http://evil.example:4000"),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![
                ("host", "127.0.0.1:4000"),
                ("origin", "http://evil.example:4000"),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![
                ("host", "10.0.0.5:4000"),
                ("origin", "https://ai.corp"),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![("host", "gateway"), ("origin", "http://gateway")],
        ] {
            let (status, _, text) =
                send_with(&gw, "POST", headers.clone(), Some(("g", false))).await;
            assert_eq!(status, 403, "{what}, {headers:?}: {text}");
            assert!(text.contains("cors_allowed_origins"), "{what}: {text}");
        }
        assert_eq!(net.calls("up").len(), before, "{what}: nothing was spent");
    }
    // A listed origin: served.
    let gw = Gw::start(&with(ONE_GROUP, cors), &net);
    let (status, _, text) = send_with(
        &gw,
        "POST",
        vec![("origin", "https://app.example")],
        Some(("g", false)),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // With a key: the key answers for it, whatever the origin.
    let gw = Gw::start(
        &with(&ONE_GROUP.replace("allow_anonymous: true\n", ""), keyed),
        &net,
    );
    let (status, _, text) = send_with(
        &gw,
        "POST",
        vec![
            ("origin", "https://evil.example"),
            ("authorization", "Bearer sk-good"),
        ],
        Some(("g", false)),
    )
    .await;
    assert_eq!(status, 200, "{text}");
}

/// A chat body of one message of `bytes` letters (about `bytes` + 70 bytes of JSON).
fn big_chat(stream: bool, bytes: usize) -> Value {
    json!({"model": "g", "stream": stream,
        "messages": [{"role": "user", "content": "a".repeat(bytes)}]})
}

/// The senders of upstream answers held back by [`stalling`].
type Stalled = Arc<std::sync::Mutex<Vec<tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>>>>;

/// Serves `up` with answers that send their first text (a stream commits on it), then
/// stall until [`release`]: requests in flight for as long as the test wants.
fn stalling(net: &MemNet) -> Stalled {
    let held = Stalled::default();
    let keep = held.clone();
    net.host("up", move |_| {
        let (tx, response) = sse_channel();
        let first = frame(&chunk_json(
            "m",
            json!({"role": "assistant", "content": "Hel"}),
            None,
        ));
        tx.try_send(Ok(Bytes::from(first)))
            .expect("room for one frame");
        keep.lock().unwrap().push(tx);
        response
    });
    held
}

/// Ends every stalled answer.
async fn release(held: &Stalled) {
    let senders = std::mem::take(&mut *held.lock().unwrap());
    for tx in senders {
        let rest = frame(&chunk_json("m", json!({"content": "lo"}), Some("stop")));
        let _ = tx.send(Ok(Bytes::from(rest + "data: [DONE]\n\n"))).await;
    }
}

// 13b. The budget counts bytes that came, never bytes declared: clients that declare the
// largest body and send nothing hold nothing, so others' requests are served meanwhile
// (found by the review of this change: six such connections held the whole default budget
// and every other tenant got a 503, for as long as the body deadline let them wait).
#[tokio::test(start_paused = true)]
async fn declared_bodies_that_do_not_come_hold_no_budget() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["served"]));
    let gw = Gw::start(&with(ONE_GROUP, BODY_BUDGET), &net);
    let mut idle = Vec::new();
    for _ in 0..6 {
        let mut pipe = gw.raw().await;
        pipe.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n\
              content-length: 1048576\r\n\r\n{\"model\": \"g\", ",
        )
        .await
        .unwrap();
        idle.push(pipe);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for stream in [false, true] {
        let response = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(response.status(), 200, "stream={stream}");
        assert!(text(response).await.contains("served"));
    }
    drop(idle);
}

/// Limits for [`request_bodies_in_flight_are_bounded_gateway_wide`]: three bodies of 1 MB
/// fit the budget, a fourth does not.
const BODY_BUDGET: &str =
    "limits: {max_request_body_bytes: 1048576, max_in_flight_request_body_bytes: 3145728}\n";

// 13. Request bodies in flight are bounded for the whole gateway, not only one by one: each
// request may bring `max_request_body_bytes` (50 MiB), held with what it is parsed into and
// the upstream's copy for the request's life, and 8 uploads of 40 MiB to a stalling upstream
// took the gateway from 25 MB to 852 MB (with `max_connections` at 4096, and no key needed
// under `allow_anonymous`). Past `max_in_flight_request_body_bytes`, a request is refused at
// once with a 503 naming the limit, whether its length is declared or it comes chunked; the
// budget is held for the request's life (a committed stream's included, after its handler
// has returned), and is whole again once the requests end.
#[tokio::test(start_paused = true)]
async fn request_bodies_in_flight_are_bounded_gateway_wide() {
    let net = MemNet::new();
    let held = stalling(&net);
    let gw = Gw::start_metered(&with(ONE_GROUP, BODY_BUDGET), &net);
    let size = 1_000_000;
    let mut in_flight = Vec::new();
    let mut streamed = None;
    for stream in [false, true, false] {
        let mut sender = gw.connect().await;
        let request = chat_request(None, &big_chat(stream, size));
        if stream {
            // Its handler returns at commit; its body's budget must stay held.
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            streamed = Some(response);
        } else {
            in_flight.push(tokio::spawn(async move {
                let response = sender.send_request(request).await.unwrap();
                (response.status(), text(response).await)
            }));
        }
    }
    assert!(settle(100, || net.calls("up").len() == 3).await);

    // A fourth large body, its length declared: refused at once, before any upstream call.
    let refused =
        tokio::time::timeout(Duration::from_secs(1), gw.chat(None, big_chat(false, size)))
            .await
            .expect("refused at once, not queued behind the requests in flight");
    assert_eq!(refused.status(), 503);
    let retry_after = refused.headers().get("retry-after").cloned();
    let body: Value = serde_json::from_str(&text(refused).await).unwrap();
    assert!(retry_after.is_some(), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("max_in_flight_request_body_bytes = 3145728"),
        "{body}"
    );
    assert_eq!(net.calls("up").len(), 3, "no upstream call for it");

    // A small request fits in what is left: the budget counts bytes, not requests.
    let mut sender = gw.connect().await;
    let request = chat_request(None, &chat_body("g", false));
    in_flight.push(tokio::spawn(async move {
        let response = sender.send_request(request).await.unwrap();
        (response.status(), text(response).await)
    }));
    assert!(settle(100, || net.calls("up").len() == 4).await);

    // A chunked body (no length declared) is counted as it comes: refused once over.
    let mut pipe = gw.raw().await;
    pipe.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n\
          transfer-encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let body = big_chat(false, size).to_string().into_bytes();
    for piece in body.chunks(64 * 1024) {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        pipe.write_all(&chunk).await.unwrap();
    }
    pipe.write_all(b"0\r\n\r\n").await.unwrap();
    let head = response_head(&mut pipe).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    assert_eq!(net.calls("up").len(), 4, "no upstream call for it");

    release(&held).await;
    for task in in_flight {
        let (status, text) = task.await.unwrap();
        assert_eq!(status, 200, "{text}");
    }
    let streamed = text(streamed.unwrap()).await;
    assert!(streamed.contains("[DONE]"), "{streamed}");

    // The budget is whole again: three large bodies are in flight at once as before.
    let mut again = Vec::new();
    for stream in [false, true, false] {
        let mut sender = gw.connect().await;
        let request = chat_request(None, &big_chat(stream, size));
        again.push(tokio::spawn(async move {
            let response = sender.send_request(request).await.unwrap();
            (response.status(), text(response).await)
        }));
    }
    assert!(
        settle(100, || net.calls("up").len() == 7).await,
        "{} calls",
        net.calls("up").len()
    );
    release(&held).await;
    for task in again {
        let (status, text) = task.await.unwrap();
        assert_eq!(status, 200, "{text}");
    }
    let refusals = "switchback_refused_requests_total{route=\"chat\",status=\"503\",\
                    limit=\"max_in_flight_request_body_bytes\"} 2";
    assert!(gw.scrape().contains(refusals), "{}", gw.scrape());
}

// 13c. What a body is parsed into counts against the same budget: a JSON value takes
// about 80 bytes in memory where its text may take two (`0,`), so a body of 30,000 zeros
// (60 KB on the wire) holds 2.4 MB, and the default budget of 256 MiB let 512 requests of
// 250,000 values hold 10 GB (found in review). With one such request in flight, a second
// does not fit a budget of 3 MiB: refused at admission with the 503 that names the limit,
// before any upstream call (before, only its 60 KB were counted); a small one still fits.
#[tokio::test(start_paused = true)]
async fn what_a_body_is_parsed_into_counts_against_the_budget() {
    let net = MemNet::new();
    let held = stalling(&net);
    let gw = Gw::start_metered(&with(ONE_GROUP, BODY_BUDGET), &net);
    let zeros = |n: usize| {
        let mut body = chat_body("g", false);
        body["metadata_values"] = json!(vec![0; n]);
        body
    };
    assert!(
        zeros(30_000).to_string().len() < 70_000,
        "small on the wire"
    );
    let mut in_flight = Vec::new();
    let mut sender = gw.connect().await;
    let request = chat_request(None, &zeros(30_000));
    in_flight.push(tokio::spawn(async move {
        let response = sender.send_request(request).await.unwrap();
        (response.status(), text(response).await)
    }));
    assert!(settle(100, || net.calls("up").len() == 1).await);

    let refused = gw.chat(None, zeros(30_000)).await;
    assert_eq!(refused.status(), 503);
    let body: Value = serde_json::from_str(&text(refused).await).unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("max_in_flight_request_body_bytes = 3145728")
            && message.contains("30008 JSON values"),
        "{body}"
    );
    assert_eq!(net.calls("up").len(), 1, "no upstream call for it");

    let mut sender = gw.connect().await;
    let request = chat_request(None, &chat_body("g", false));
    in_flight.push(tokio::spawn(async move {
        let response = sender.send_request(request).await.unwrap();
        (response.status(), text(response).await)
    }));
    assert!(settle(100, || net.calls("up").len() == 2).await);
    release(&held).await;
    for task in in_flight {
        let (status, text) = task.await.unwrap();
        assert_eq!(status, 200, "{text}");
    }
}

// 13b. The budget must hold the largest body one request may bring, or that request could
// never be served: such a config is refused at load, naming both limits.
#[test]
fn the_in_flight_body_budget_must_hold_the_largest_body() {
    let load = |limits: &str| {
        switchback::config::GatewayConfig::load("g.yaml", &with(ONE_GROUP, limits))
            .map_err(|e| e.to_string())
    };
    let e =
        load("limits: {max_request_body_bytes: 2048, max_in_flight_request_body_bytes: 2047}\n")
            .expect_err("a budget below the largest body is refused");
    assert!(
        e.contains("max_in_flight_request_body_bytes") && e.contains("max_request_body_bytes"),
        "{e}"
    );
    load("limits: {max_request_body_bytes: 2048, max_in_flight_request_body_bytes: 2048}\n")
        .expect("a budget of one largest body");
    load("limits: {max_in_flight_request_body_bytes: 0}\n").expect_err("zero is refused");
}

/// A wildcard group, a plain one, a key allowed the wildcard's names and one allowed `g`.
const WILDCARD_KEYED: &str = r#"
model_list:
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "http://up/v1"}, model_info: {id: oa}}
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
keys:
  - {key: sk-open, key_alias: open, models: ["openai/*"]}
  - {key: sk-g, key_alias: gonly, models: [g]}
  - {key: sk-any, key_alias: any}
router_settings: {num_retries: 0}
"#;

/// Sends `body` to `path` with `key`: the status and the error body.
async fn post_to(gw: &Gw, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let request = http::Request::post(path)
        .header("host", "gateway")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = gw.connect().await.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let text = text(response).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// 14. A request's model name is bounded (`max_model_name_bytes`): a 40 MiB `openai/AAA...`
// with a key allowed `openai/*` was matched against the allow-list a character at a time (4
// bytes each), took one request from 28 MB to 484 MB, and was sent upstream whole. One byte
// over is a 400 naming the limit (param `model`), in both modes, from the body or from an
// Azure-style path, with no upstream call; at the bound it is served.
#[tokio::test(start_paused = true)]
async fn an_overlong_model_name_is_refused_naming_the_limit() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start_metered(WILDCARD_KEYED, &net);
    let max = 256;
    let name = |bytes: usize| format!("openai/{}", "A".repeat(bytes - "openai/".len()));
    let mut refused = 0;
    for stream in [false, true] {
        for bytes in [max + 1, 1 << 20] {
            let body = json!({"model": name(bytes), "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]});
            let (status, error) = post_to(&gw, "/v1/chat/completions", "sk-open", &body).await;
            assert_eq!(status, 400, "stream={stream} {bytes}: {error}");
            assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
            assert_eq!(error["error"]["param"], "model", "{error}");
            let message = error["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("max_model_name_bytes = 256") && message.len() < 300,
                "stream={stream}: {message}"
            );
            refused += 1;
        }
        // The deployment an Azure-style path names is the model: bounded alike.
        let path = format!(
            "/openai/deployments/{}/chat/completions",
            "A".repeat(max + 1)
        );
        let (status, error) = post_to(&gw, &path, "sk-open", &chat_body("g", stream)).await;
        assert_eq!(status, 400, "stream={stream}: {error}");
        assert_eq!(error["error"]["param"], "model", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_model_name_bytes")),
            "{error}"
        );
        refused += 1;
    }
    assert!(net.calls("up").is_empty(), "no upstream call");
    let counted = format!(
        "switchback_refused_requests_total{{route=\"chat\",status=\"400\",\
         limit=\"max_model_name_bytes\"}} {refused}"
    );
    assert!(gw.scrape().contains(&counted), "{}", gw.scrape());
    for stream in [false, true] {
        let body = json!({"model": name(max), "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]});
        let (status, answer) = post_to(&gw, "/v1/chat/completions", "sk-open", &body).await;
        assert_eq!(status, 200, "at the bound: {answer}");
    }
    assert_eq!(net.calls("up").len(), 2);
    assert_eq!(
        net.calls("up")[0].body["model"].as_str().map(str::len),
        Some(max - "openai/".len())
    );
}

// 14b. An error that repeats a name the client gave (an unknown model, one its key may not
// use, a `GET /v1/models/{id}`, a route taken with the wrong method) shows only its start, cut at a character boundary: the 404
// and 403 repeated the whole name, as long as the body allowed. A name of two-byte
// characters after one ASCII byte puts every even byte offset inside a character.
#[tokio::test(start_paused = true)]
async fn errors_repeat_only_the_start_of_a_long_name() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(
        &with(WILDCARD_KEYED, "limits: {max_model_name_bytes: 100000}\n"),
        &net,
    );
    let long = format!("x{}", "é".repeat(40_000));
    let unknown = chat_body(&long, false);
    let forbidden = chat_body(&format!("openai/{long}"), true);
    for (key, body, status) in [("sk-any", unknown, 404), ("sk-g", forbidden, 403)] {
        let (got, error) = post_to(&gw, "/v1/chat/completions", key, &body).await;
        assert_eq!(got, status, "{error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.len() < 400 && message.contains("xé"),
            "{status}: {} bytes: {}",
            message.len(),
            message.chars().take(200).collect::<String>()
        );
    }
    let mut sender = gw.connect().await;
    // Within what a URI may hold (64 KiB), 10,001 bytes once decoded.
    let id = format!("x{}", "%C3%A9".repeat(5_000));
    let request = http::Request::get(format!("/v1/models/{id}"))
        .header("host", "gateway")
        .header("authorization", "Bearer sk-open")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 404);
    let message = text(response).await;
    assert!(message.len() < 500 && message.contains("xé"), "{message}");
    // A route taken with the wrong method: its 405 named the whole path.
    let long_path = format!(
        "/openai/deployments/x{}/chat/completions",
        "y".repeat(30_000)
    );
    for (method, path) in [("GET", long_path.as_str()), ("DELETE", "/v1/models/{id}")] {
        let path = path.replace("{id}", &id);
        let request = http::Request::builder()
            .method(method)
            .uri(&path)
            .header("host", "gateway")
            .header("authorization", "Bearer sk-open")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 405, "{method}");
        let message = text(response).await;
        assert!(message.len() < 500, "{method}: {} bytes", message.len());
    }
    assert!(net.calls("up").is_empty());
}
