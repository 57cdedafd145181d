//! Operating the real `switchback serve` binary on loopback: `/metrics` scraped and read by
//! a real Prometheus text parser (`prometheus-parse`), after traffic whose decisions are
//! known (a rate-limited primary, a fallback that serves); the decision log on stderr;
//! a config reload on SIGHUP.

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "sk-ops-client";

/// A one-port upstream: `/a/...` always answers 429, `/b/...` an SSE answer.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let head = read_request(&mut s).await;
                let response = if head.starts_with("POST /a/") {
                    let body = r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#;
                    format!(
                        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    let chunk = |delta: &str, finish: &str| {
                        format!(
                            "data: {{\"id\":\"up\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"mb\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
                        )
                    };
                    let body = chunk(r#"{"role":"assistant","content":"pong"}"#, "null")
                        + &chunk("{}", r#""stop""#)
                        + "data: [DONE]\n\n";
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Reads one request (headers and a `content-length` body); returns its head.
async fn read_request(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text[..end].to_string();
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// `switchback serve` as a child process.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// What `serve` printed on stdout after its address (when its stdout is read).
    stdout: Arc<Mutex<String>>,
    dir: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which binary runs the gateway.
#[derive(Clone, Copy)]
enum Binary {
    /// `switchback serve`.
    Serve,
    /// `switchback-gateway`: the same gateway, alone in its binary.
    Alone,
}

impl Gateway {
    fn start(name: &str, config: &str, args: &[&str]) -> Gateway {
        Gateway::spawn_binary(Binary::Serve, name, config, args, true, true).0
    }

    /// The gateway started from `switchback-gateway` rather than `switchback serve`.
    fn start_alone(name: &str, config: &str, args: &[&str]) -> Gateway {
        Gateway::spawn_binary(Binary::Alone, name, config, args, true, true).0
    }

    /// A gateway whose stdout reader leaves after the first line (a supervisor that read
    /// the address, a `| head -1`): its later writes to stdout fail.
    fn start_then_close_stdout(name: &str, config: &str) -> Gateway {
        Gateway::spawn(name, config, &[], true, false).0
    }

    /// A gateway whose stderr is a pipe that nobody reads (kept open, so writes to it wait
    /// once it is full rather than fail): a log collector that stopped reading.
    fn start_with_stderr_unread(
        name: &str,
        config: &str,
        args: &[&str],
    ) -> (Gateway, std::process::ChildStderr) {
        let (gw, stderr) = Gateway::spawn(name, config, args, false, true);
        (gw, stderr.expect("the unread pipe"))
    }

    fn spawn(
        name: &str,
        config: &str,
        args: &[&str],
        read_stderr: bool,
        read_stdout: bool,
    ) -> (Gateway, Option<std::process::ChildStderr>) {
        Gateway::spawn_binary(Binary::Serve, name, config, args, read_stderr, read_stdout)
    }

    fn spawn_binary(
        binary: Binary,
        name: &str,
        config: &str,
        args: &[&str],
        read_stderr: bool,
        read_stdout: bool,
    ) -> (Gateway, Option<std::process::ChildStderr>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/ops-tests")
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, config).unwrap();
        let mut command = match binary {
            Binary::Serve => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_switchback"));
                c.arg("serve");
                c
            }
            Binary::Alone => Command::new(env!("CARGO_BIN_EXE_switchback-gateway")),
        };
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("switchback serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut unread = None;
        if read_stderr {
            let mut err = BufReader::new(child.stderr.take().unwrap());
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                while err.read_line(&mut line).unwrap_or(0) > 0 {
                    sink.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        } else {
            unread = child.stderr.take();
        }
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("serve prints its address");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        if read_stdout {
            let sink = stdout.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                while out.read_line(&mut line).unwrap_or(0) > 0 {
                    sink.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        } else {
            drop(out);
        }
        let gw = Gateway {
            child,
            addr,
            stderr,
            stdout,
            dir,
        };
        (gw, unread)
    }
}

/// Waits (30 s at most) until `printed` (a gateway's stdout) holds `needle`, checking
/// `meanwhile` at every look.
async fn await_printed(printed: &Mutex<String>, needle: &str, mut meanwhile: impl FnMut()) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !printed.lock().unwrap().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "`{needle}` not printed within 30 s: {}",
            printed.lock().unwrap()
        );
        meanwhile();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two groups of one deployment each; `cooldown_lone_deployment` so that a 429 cools `a1`
/// (by default the only deployment of a group is never cooled).
fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
model_list:
  - {{model_name: a, litellm_params: {{model: openai/ma, api_base: "http://{upstream}/a/v1", api_key: sk-upstream-SECRET-a}}, model_info: {{id: a1}}}}
  - {{model_name: b, litellm_params: {{model: openai/mb, api_base: "http://{upstream}/b/v1", api_key: sk-upstream-SECRET-b}}, model_info: {{id: b1}}}}
router_settings: {{num_retries: 0, cooldown_time: 60, allowed_fails: 0, cooldown_lone_deployment: true, fallbacks: [{{a: [b]}}]}}
keys:
  - {{key: {KEY}, key_alias: client-1}}
"#
    )
}

async fn exchange(addr: SocketAddr, request: String) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway answers within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn chat(model: &str, stream: bool) -> String {
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"ping"}}]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn scrape(key: Option<&str>) -> String {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one sample {name} {labels:?}, got {found:?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_from_a_real_gateway_in_prometheus_text() {
    let up = upstream().await;
    let gw = Gateway::start("metrics", &config(up), &[]);
    // Non-stream then stream: a1 answers 429 and cools (allowed_fails: 0), the request falls
    // back to b; the second request finds a cooling and is skipped to b at once.
    for (n, stream) in [(1, false), (2, true)] {
        let r = exchange(gw.addr, chat("a", stream)).await;
        assert!(r.starts_with("HTTP/1.1 200"), "request {n}: {r}");
    }
    // Without a key: refused, since keys are configured.
    let refused = exchange(gw.addr, scrape(None)).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let response = exchange(gw.addr, scrape(Some(KEY))).await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let requests = |mode| {
        sample(
            &parsed,
            "switchback_requests_total",
            &[
                ("group", "a"),
                ("key", "client-1"),
                ("mode", mode),
                ("outcome", "completed"),
            ],
        )
    };
    assert_eq!(requests("non_stream"), 1.0);
    assert_eq!(requests("stream"), 1.0);
    assert_eq!(
        sample(
            &parsed,
            "switchback_attempt_failures_total",
            &[("deployment", "a1"), ("class", "rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &parsed,
            "switchback_fallbacks_total",
            &[("from", "a"), ("to", "b"), ("class", "rate_limited")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &parsed,
            "switchback_attempts_total",
            &[("deployment", "b1")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &parsed,
            "switchback_deployment_cooling",
            &[("deployment", "a1")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &parsed,
            "switchback_deployment_cooling",
            &[("deployment", "b1")]
        ),
        0.0
    );
    assert!(
        parsed
            .samples
            .iter()
            .any(|s| s.metric == "switchback_time_to_commit_seconds"),
        "histogram present:\n{body}"
    );
    // The upstream answers `connection: close`: three attempts (a1's 429, then b1 twice),
    // three connections, none kept or reused.
    let upstream = format!("http://{up}");
    let pool = |name, protocol: Option<&str>| {
        let mut labels = vec![("upstream", upstream.as_str())];
        labels.extend(protocol.map(|p| ("protocol", p)));
        sample(&parsed, name, &labels)
    };
    assert_eq!(
        pool(
            "switchback_upstream_connections_opened_total",
            Some("http1")
        ),
        3.0
    );
    assert_eq!(
        pool("switchback_upstream_connections_reused_total", None),
        0.0
    );
    assert_eq!(pool("switchback_upstream_connections_idle", None), 0.0);
    assert_eq!(
        sample(
            &parsed,
            "switchback_upstream_resends_total",
            &[("reason", "stale_connection")]
        ),
        0.0
    );
    // No secret and no client-chosen string in any label.
    assert!(!body.contains("SECRET") && !body.contains(KEY), "{body}");
    let stderr = gw.stderr.lock().unwrap().clone();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A request a wildcard group serves is labelled by the group's pattern, never by the model
/// name the client sent: label values stay bounded by the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_served_requests_are_labelled_by_their_pattern() {
    let up = upstream().await;
    let config = format!(
        r#"
model_list:
  - {{model_name: "openai/*", litellm_params: {{model: "openai/*", api_base: "http://{up}/b/v1"}}, model_info: {{id: wild}}}}
keys:
  - {{key: {KEY}, key_alias: client-1}}
"#
    );
    let gw = Gateway::start("metrics-wildcard", &config, &[]);
    for (n, stream) in [(1, false), (2, true), (3, false)] {
        let r = exchange(gw.addr, chat(&format!("openai/client-chosen-{n}"), stream)).await;
        assert!(r.starts_with("HTTP/1.1 200"), "request {n}: {r}");
    }
    let response = exchange(gw.addr, scrape(Some(KEY))).await;
    let (_, body) = response.split_once("\r\n\r\n").expect("a head");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let requests = |mode| {
        sample(
            &parsed,
            "switchback_requests_total",
            &[
                ("group", "openai/*"),
                ("mode", mode),
                ("outcome", "completed"),
            ],
        )
    };
    assert_eq!((requests("non_stream"), requests("stream")), (2.0, 1.0));
    assert!(!body.contains("client-chosen"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let up = upstream().await;
    let gw = Gateway::start("metrics-off", &config(up), &["--metrics", "off"]);
    let r = exchange(gw.addr, scrape(Some(KEY))).await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
}

// A log collector that stops reading (stderr a full pipe) must not stop the gateway: its
// lines wait in a bounded queue, and past it are dropped and counted. Before, a worker
// wrote each line to stderr itself, and blocked there with every connection it served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_never_stops_the_gateway() {
    let up = upstream().await;
    let (gw, _unread) = Gateway::start_with_stderr_unread(
        "log-reader-gone",
        &config(up),
        &["--log-queue-lines", "64"],
    );
    // An access line is about 300 bytes: 1,000 of them are over twice what the pipe (64 KiB),
    // the writer's buffer (64 KiB) and the queue hold together.
    for n in 1..=1000 {
        let r = exchange(gw.addr, chat("b", false)).await;
        assert!(r.starts_with("HTTP/1.1 200"), "request {n}: {r}");
    }
    let response = exchange(gw.addr, scrape(Some(KEY))).await;
    let (_, body) = response.split_once("\r\n\r\n").expect("a head");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let dropped = sample(&parsed, "switchback_log_lines_dropped_total", &[]);
    // The pipe, the writer's buffer and the queue took some; the rest were dropped, and said so.
    assert!(dropped >= 300.0, "{dropped} lines dropped");
}

/// The JSON log lines on the gateway's stderr once `done` appears in them, within a bound.
async fn json_logs_until(gw: &Gateway, done: &str) -> (String, Vec<serde_json::Value>) {
    let stderr = gw.stderr_when(|text| text.contains(done)).await;
    let lines = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (stderr, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_a_json_line_on_stderr_without_secrets() {
    let up = upstream().await;
    let gw = Gateway::start(
        "decision-log",
        &config(up),
        &["--log-format", "json", "--log-level", "debug"],
    );
    let r = exchange(gw.addr, chat("a", true)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let (stderr, lines) = json_logs_until(&gw, r#""target":"switchback::access""#).await;
    let events: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "switchback::decision")
        .collect();
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "admitted",
            "plan_resolved",
            "attempt_started",
            "attempt_failed",
            "deployment_cooled",
            "group_exhausted",
            "fallback_taken",
            "attempt_started",
            "committed",
            "completed"
        ],
        "{stderr}"
    );
    assert!(events.iter().all(|e| e["request"] == 1), "{stderr}");
    assert!(events.iter().all(|e| e["key"] == "client-1"), "{stderr}");
    assert_eq!(events[3]["deployment"], "a1");
    assert_eq!(events[3]["class"], "rate_limited");
    assert_eq!(events[6]["from"], "a");
    assert_eq!(events[6]["to"], "b");
    assert_eq!(events[9]["deployment"], "b1");
    assert!(events[9]["since_admission_ms"].is_u64(), "{stderr}");
    // One access line, last, with what the request came to.
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "switchback::access")
        .collect();
    assert_eq!(access.len(), 1, "{stderr}");
    let a = access[0];
    assert_eq!(
        (
            &a["request"],
            &a["key"],
            &a["group"],
            &a["mode"],
            &a["outcome"],
            &a["status"],
            &a["deployment"],
            &a["attempts"],
            &a["fallbacks"]
        ),
        (
            &json!(1),
            &json!("client-1"),
            &json!("a"),
            &json!("stream"),
            &json!("completed"),
            &json!(200),
            &json!("b1"),
            &json!(2),
            &json!(1)
        ),
        "{stderr}"
    );
    assert!(
        a["duration_ms"].is_u64() && a["time_to_commit_ms"].is_u64(),
        "{stderr}"
    );
    assert!(a["timestamp"].is_string(), "{stderr}");
    assert!(
        !stderr.contains("SECRET") && !stderr.contains(KEY),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_healthy_request_writes_one_text_access_line() {
    let up = upstream().await;
    let gw = Gateway::start("access-log", &config(up), &[]);
    let r = exchange(gw.addr, chat("b", false)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let stderr = gw
        .stderr_when(|text| text.contains("switchback::access"))
        .await;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "INFO: no decision lines for a request served at once:\n{stderr}"
    );
    for part in [
        " INFO switchback::access: request request=1 key=\"client-1\" group=\"b\" mode=\"non_stream\" outcome=\"completed\" status=200 deployment=\"b1\" attempts=1 retries=0 fallbacks=0 duration_ms=",
        " time_to_commit_ms=",
    ] {
        assert!(lines[0].contains(part), "{part:?} not in:\n{stderr}");
    }
}

/// `switchback-gateway` is `switchback serve` alone in its binary (see its module doc): the
/// same flags, the same answers in both modes, the same access lines and metrics, and the
/// same orderly stop.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_binary_serves_as_serve_does() {
    let up = upstream().await;
    let mut gw = Gateway::start_alone(
        "gateway-binary",
        &config(up),
        &["--workers", "1", "--log-format", "json"],
    );
    // a1 answers 429 and cools, the request falls back to b; then a stream, skipped to b.
    for (n, stream) in [(1, false), (2, true)] {
        let r = exchange(gw.addr, chat("a", stream)).await;
        assert!(r.starts_with("HTTP/1.1 200"), "request {n}: {r}");
        assert!(
            r.contains("x-switchback-deployment: b1"),
            "request {n}: {r}"
        );
    }
    let scraped = exchange(gw.addr, scrape(Some(KEY))).await;
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(
        scraped.contains("switchback_requests_total{"),
        "no request counted: {scraped}"
    );
    let stderr = gw
        .stderr_when(|text| text.matches("\"target\":\"switchback::access\"").count() >= 2)
        .await;
    assert!(stderr.contains("\"mode\":\"stream\""), "{stderr}");
    signal_now(&gw, libc::SIGTERM);
    let status = tokio::task::block_in_place(|| gw.child.wait()).unwrap();
    assert!(status.success(), "{status} after a SIGTERM: {stderr}");
    await_printed(&gw.stdout, "switchback: stopped", || {}).await;
}

/// A request refused before admission (a bad key, an unknown model or route, a body over
/// its limit, a connection past `max_connections`) is still a request an operator must see:
/// one access line each, and `switchback_refused_requests_total` by route, status and the
/// limit that refused it. Before, none of them left a trace in the logs or the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_logged_and_counted() {
    let up = upstream().await;
    let config = format!("{}limits: {{max_request_body_bytes: 1000}}\n", config(up));
    let gw = Gateway::start("refused", &config, &[]);
    let requests = [
        (chat("b", false).replace(KEY, "sk-nope"), "401"),
        (chat("nope", false), "404"),
        (chat(&"b".repeat(2000), false), "413"),
        (
            "GET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
            "404",
        ),
    ];
    for (request, status) in &requests {
        let r = exchange(gw.addr, request.clone()).await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{r}");
    }
    let stderr = gw
        .stderr_when(|text| text.matches("outcome=\"refused\"").count() >= 4)
        .await;
    for part in [
        "route=\"chat\" outcome=\"refused\" status=401",
        "route=\"chat\" outcome=\"refused\" status=404",
        "route=\"chat\" outcome=\"refused\" status=413 limit=\"max_request_body_bytes\"",
        "route=\"none\" outcome=\"refused\" status=404",
    ] {
        assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("sk-nope"), "no key in the log: {stderr}");
    let parsed = scraped(&gw).await;
    let refused = |route, status, limit| {
        sample(
            &parsed,
            "switchback_refused_requests_total",
            &[("route", route), ("status", status), ("limit", limit)],
        )
    };
    assert_eq!(refused("chat", "401", "none"), 1.0);
    assert_eq!(refused("chat", "404", "none"), 1.0);
    assert_eq!(refused("chat", "413", "max_request_body_bytes"), 1.0);
    assert_eq!(refused("none", "404", "none"), 1.0);
}

/// The 503 of a connection past `max_connections` is a refusal like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_max_connections_is_logged_and_counted() {
    let up = upstream().await;
    let config = format!(
        "{}limits: {{max_connections: 1, max_overflow_connections: 4}}\n",
        config(up)
    );
    let gw = Gateway::start("overflow", &config, &[]);
    // One connection that has been answered and stays open (keep-alive) holds the one
    // slot, whichever worker accepted it: the next one is past max_connections.
    let mut held = TcpStream::connect(gw.addr).await.unwrap();
    held.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = held.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    let r = exchange(gw.addr, chat("b", false)).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    let stderr = gw
        .stderr_when(|text| text.contains("outcome=\"refused\""))
        .await;
    let part = "route=\"chat\" outcome=\"refused\" status=503 limit=\"max_connections\"";
    assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
    drop(held);
    let parsed = scraped(&gw).await;
    let labels = [
        ("route", "chat"),
        ("status", "503"),
        ("limit", "max_connections"),
    ];
    assert_eq!(
        sample(&parsed, "switchback_refused_requests_total", &labels),
        1.0
    );
}

/// The gateway's metrics, scraped once the scrape is let in: a connection just closed may
/// still hold its slot for a moment (what the overflow test's 503 counts must not be the
/// scrape's own refusal, which is counted on the `metrics` route, not `chat`).
async fn scraped(gw: &Gateway) -> prometheus_parse::Scrape {
    let mut response = String::new();
    for _ in 0..100 {
        response = exchange(gw.addr, scrape(Some(KEY))).await;
        if response.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text")
}

impl Gateway {
    /// Rewrites the config file and sends SIGHUP; returns stderr once it reports the
    /// `n`-th reload (done or refused), within a bound.
    async fn reload(&self, config: &str, n: usize) -> String {
        std::fs::write(self.dir.join("gateway.yaml"), config).unwrap();
        let sent = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        self.stderr_when(|text| text.matches("switchback::reload").count() >= n)
            .await
    }

    /// The gateway's stderr once `ready` says so, or as it is after 10 s. A request's last
    /// lines are written before its last byte is sent, and the reader thread may still be
    /// on its way: this waits for them, within a bound.
    async fn stderr_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.stderr.lock().unwrap().clone();
            if ready(&text) || std::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_and_keeps_the_old_one_on_error() {
    let up = upstream().await;
    let gw = Gateway::start("reload", &config(up), &[]);
    let before = exchange(gw.addr, chat("c", false)).await;
    assert!(before.starts_with("HTTP/1.1 404"), "{before}");

    // A new group `c`, served like `b`.
    let with_c = config(up).replace(
        "router_settings:",
        &format!(
            "  - {{model_name: c, litellm_params: {{model: openai/mb, api_base: \"http://{up}/b/v1\"}}, model_info: {{id: c1}}}}\nrouter_settings:"
        ),
    );
    let stderr = gw.reload(&with_c, 1).await;
    assert!(
        stderr.contains("reloaded") && stderr.contains("3 groups"),
        "{stderr}"
    );
    let after = exchange(gw.addr, chat("c", false)).await;
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");

    // A broken file: refused with its located error, and `c` is still served.
    let stderr = gw.reload("model_list: [{model_name: c}]\n", 2).await;
    assert!(
        stderr.contains("refused, the running config stays"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gateway.yaml"),
        "the error names the file: {stderr}"
    );
    let still = exchange(gw.addr, chat("c", false)).await;
    assert!(still.starts_with("HTTP/1.1 200"), "{still}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Sends `signal` to the gateway at once, from this process (a `kill` child would arrive
/// milliseconds later, past the window this checks).
#[cfg(unix)]
fn signal_now(gw: &Gateway, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(gw.child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
}

/// Once `serve` has printed its address, its signals are handled: a SIGHUP that arrives at
/// that very moment reloads, and never kills the process (SIGHUP's default action), as a
/// process manager's reload right after start would. The handlers used to be installed
/// after the address was printed, and this failed about once in a hundred runs.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_at_once_after_start_reloads_and_does_not_kill() {
    let up = upstream().await;
    for round in 0..20 {
        let mut gw = Gateway::start(&format!("hup-at-once-{round}"), &config(up), &[]);
        signal_now(&gw, libc::SIGHUP);
        let stderr = gw
            .stderr_when(|text| text.contains("switchback::reload"))
            .await;
        assert_eq!(
            gw.child.try_wait().unwrap(),
            None,
            "round {round}: a SIGHUP at start ended the gateway: {stderr}"
        );
        assert!(stderr.contains("reloaded"), "round {round}: {stderr}");
    }
}

/// A SIGTERM at that same moment stops the gateway the orderly way: exit status 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_at_once_after_start_stops_in_order() {
    let up = upstream().await;
    for round in 0..20 {
        let mut gw = Gateway::start(&format!("term-at-once-{round}"), &config(up), &[]);
        signal_now(&gw, libc::SIGTERM);
        let status = tokio::task::block_in_place(|| gw.child.wait()).unwrap();
        let stderr = gw.stderr.lock().unwrap().clone();
        assert!(
            status.success(),
            "round {round}: {status} after a SIGTERM at start: {stderr}"
        );
    }
}

/// A gateway whose stdout nobody reads any more still drains and exits 0 on SIGTERM: its
/// "draining" and "stopped" lines went to stdout with `println!`, which panics when the
/// write fails (a closed pipe), and a release build aborts: no drain, every stream cut.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_drains_even_when_stdout_is_gone() {
    let up = upstream().await;
    let mut gw = Gateway::start_then_close_stdout("term-stdout-gone", &config(up));
    // A request served after stdout closed: the gateway is up and serving.
    let answer = exchange(gw.addr, chat("b", false)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    signal_now(&gw, libc::SIGTERM);
    let status = tokio::task::block_in_place(|| gw.child.wait()).unwrap();
    let stderr = gw.stderr.lock().unwrap().clone();
    assert!(
        status.success(),
        "{status} after a SIGTERM with stdout gone: {stderr}"
    );
}

/// An upstream that reads a request, says so on `got`, and never answers: a request to it
/// stays in flight until its client or the gateway gives up.
async fn silent_upstream() -> (SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got, requests) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                read_request(&mut s).await;
                let _ = got.send(()).await;
                // Held open, unanswered, until the gateway closes it.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    (addr, requests)
}

/// A second SIGTERM (or SIGINT: an operator's second Ctrl-C) during the drain stops the
/// gateway at once, with a failure status, where it was swallowed and the gateway waited
/// out the whole `shutdown_grace` for a request that would never end. A stop signal that
/// comes right after the first (within `FORWARDED_STOP_WINDOW`, 1 s) is not a second one:
/// a Ctrl-C reaches the whole process group, so a wrapper (a shell script, `npm start`, a
/// supervisor) that forwards it as SIGTERM delivered a second signal milliseconds after
/// the first, and every drain under such a wrapper was cut at once.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_signal_during_the_drain_stops_at_once() {
    let (up, mut requests) = silent_upstream().await;
    let config = format!(
        r#"
model_list:
  - {{model_name: b, litellm_params: {{model: openai/mb, api_base: "http://{up}/v1", api_key: sk-up}}}}
keys:
  - {{key: {KEY}}}
limits: {{shutdown_grace: 600}}
"#
    );
    let name = |signal| match signal {
        libc::SIGTERM => "SIGTERM",
        _ => "SIGINT",
    };
    for (first, second) in [
        (libc::SIGTERM, libc::SIGTERM),
        (libc::SIGINT, libc::SIGINT),
        (libc::SIGINT, libc::SIGTERM),
        (libc::SIGTERM, libc::SIGINT),
    ] {
        let mut gw = Gateway::start("second-signal", &config, &[]);
        let mut client = TcpStream::connect(gw.addr).await.unwrap();
        client.write_all(chat("b", true).as_bytes()).await.unwrap();
        requests
            .recv()
            .await
            .expect("the request reached the upstream");
        signal_now(&gw, first);
        // A copy of the stop, as a wrapper forwards it, sent at once after the first (two
        // of the same signal pending at once are one: only a different one can be a copy;
        // two pending at once may be taken in either order).
        let copy = if first == second {
            "draining in-flight requests"
        } else {
            signal_now(&gw, second);
            "the same stop as"
        };
        let printed = gw.stdout.clone();
        await_printed(&printed, copy, || {
            assert!(
                gw.child.try_wait().unwrap().is_none(),
                "a forwarded copy of the stop cut the drain: {}",
                printed.lock().unwrap()
            );
        })
        .await;
        assert!(gw.child.try_wait().unwrap().is_none(), "still draining");
        // A signal past the window is a second stop: sent until it is one.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = gw.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a second signal did not stop a draining gateway within 30 s (grace 600 s)"
            );
            signal_now(&gw, second);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            !status.success(),
            "a cut drain is not an orderly stop: {status}"
        );
        // The reader thread may not have the last line yet: the pipe ends it.
        let cut = format!("{} after ", name(second));
        await_printed(&gw.stdout, &cut, || {}).await;
        assert!(
            gw.stdout.lock().unwrap().contains(": stopping now"),
            "{}",
            gw.stdout.lock().unwrap()
        );
        drop(client);
    }
}

const MASTER: &str = "sk-admin-only-7f3a";

/// `POST /admin/reload` with `key` as the bearer (none: no header).
fn admin_reload(key: Option<&str>) -> String {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /admin/reload HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_reload_route_needs_the_master_key_and_reloads_the_file() {
    let up = upstream().await;
    let with_master = format!("{}general_settings: {{master_key: {MASTER}}}\n", config(up));
    let gw = Gateway::start("admin-reload", &with_master, &[]);
    // Nobody but the admin: a client's key is refused, and so is no key.
    let r = exchange(gw.addr, admin_reload(Some(KEY))).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = exchange(gw.addr, admin_reload(None)).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // Nor can the admin key make requests: it is not a virtual key.
    let chat_as_admin = chat("a", false).replace(KEY, MASTER);
    let r = exchange(gw.addr, chat_as_admin).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // With metrics scraped by the admin only.
    let r = exchange(gw.addr, scrape(Some(KEY))).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = exchange(gw.addr, scrape(Some(MASTER))).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // A new group `c` in the file, reloaded by the admin.
    let with_c = with_master.replace(
        "router_settings:",
        &format!(
            "  - {{model_name: c, litellm_params: {{model: openai/mb, api_base: \"http://{up}/b/v1\"}}, model_info: {{id: c1}}}}\nrouter_settings:"
        ),
    );
    std::fs::write(gw.dir.join("gateway.yaml"), &with_c).unwrap();
    let r = exchange(gw.addr, admin_reload(Some(MASTER))).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains(r#""reloaded":true"#)
            && r.contains(r#""groups":3"#)
            && r.contains(r#""needs_restart":[]"#),
        "{r}"
    );
    let r = exchange(gw.addr, chat("c", false)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // A listener-level limit changed: reloaded, and said to need a restart.
    let with_cap = format!("{with_c}limits: {{max_connections: 77}}\n");
    std::fs::write(gw.dir.join("gateway.yaml"), &with_cap).unwrap();
    let r = exchange(gw.addr, admin_reload(Some(MASTER))).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains(r#""needs_restart":["max_connections"]"#),
        "{r}"
    );

    // A broken file: 400 with its located error; `c` is still served.
    std::fs::write(
        gw.dir.join("gateway.yaml"),
        "model_list: [{model_name: c}]\n",
    )
    .unwrap();
    let r = exchange(gw.addr, admin_reload(Some(MASTER))).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains("refused, the running config stays") && r.contains("gateway.yaml:1:"),
        "{r}"
    );
    assert!(r.contains(r#""code":"invalid_config""#), "{r}");
    let r = exchange(gw.addr, chat("c", false)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_master_key_nobody_may_reload_over_http() {
    let up = upstream().await;
    let gw = Gateway::start("admin-none", &config(up), &[]);
    let r = exchange(gw.addr, admin_reload(Some(KEY))).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("general_settings.master_key"), "{r}");
}

/// A reload over HTTP reads and checks the file off the gateway's workers: a worker that
/// did it itself answered none of its other connections until the reload was done (130 ms
/// for 4,000 deployments and keys in a release build; for ever, for a config on a mount
/// that hangs). Here the file is a FIFO nobody writes yet, so the reload waits, and the
/// one worker must still answer `/health` meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_waiting_on_its_file_does_not_hold_up_the_worker() {
    let up = upstream().await;
    let with_master = format!("{}general_settings: {{master_key: {MASTER}}}\n", config(up));
    let gw = Gateway::start("reload-off-worker", &with_master, &["--workers", "1"]);
    // Canonical: the gateway's open file is seen by its canonical name below.
    let path = std::fs::canonicalize(&gw.dir).unwrap().join("gateway.yaml");
    std::fs::remove_file(&path).unwrap();
    let fifo = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    // Held open for writing (read-write: Linux opens a FIFO so without waiting for a
    // reader), so the gateway's open returns and its read waits for the text.
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let addr = gw.addr;
    let reload = tokio::spawn(async move { exchange(addr, admin_reload(Some(MASTER))).await });
    // Until the reload has opened the FIFO, `/health` would prove nothing: wait for the
    // open, seen as the gateway's open file.
    let pid = gw.child.id();
    let opened = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !opened() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never opened the file"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let health = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string();
    let answered = tokio::time::timeout(Duration::from_secs(5), exchange(addr, health)).await;
    // Whatever the outcome, let the reload finish: the text, then the end of the file.
    std::io::Write::write_all(&mut writer, with_master.as_bytes()).unwrap();
    drop(writer);
    let answered = answered.expect("the worker answered /health while the reload waited");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let r = reload.await.unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains(r#""reloaded":true"#),
        "{r}"
    );
}
