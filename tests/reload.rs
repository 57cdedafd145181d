//! Config reload on a running gateway (in memory, tokio's paused clock): a valid config
//! serves every request admitted after the reload while a request in flight finishes on
//! the old one; an invalid config changes nothing; deployment health carries over when the
//! deployment ids stay the same.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::*;
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::engine::Engine;
use switchback::reload::LiveEngine;
use switchback::trace::TraceLog;
use tokio::sync::mpsc;

fn config(yaml: &str) -> GatewayConfig {
    GatewayConfig::load("reload.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// A group of one deployment; `cooldown_lone_deployment` so that a 429 cools it (LiteLLM
/// never cools the only deployment of a group, and neither does Switchback by default).
fn deployment_at(host: &str, id: &str) -> String {
    format!(
        r#"
allow_anonymous: true
model_list:
  - {{model_name: g, litellm_params: {{model: openai/m, api_base: "http://{host}/v1"}}, model_info: {{id: {id}}}}}
router_settings: {{num_retries: 0, allowed_fails: 0, cooldown_time: 60, cooldown_lone_deployment: true}}
"#
    )
}

struct Running {
    live: LiveEngine,
    trace: Arc<TraceLog>,
    conns: mpsc::Sender<switchback::transport::BoxIo>,
}

impl Running {
    fn start(yaml: &str, net: &MemNet) -> Running {
        let catalog = Arc::new(Catalog::new(&config(yaml)).unwrap());
        let trace = Arc::new(TraceLog::default());
        let wall = std::time::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS);
        let engine = Arc::new(Engine::new(
            catalog,
            Arc::new(net.clone()),
            trace.clone(),
            Arc::new(FixedWall(wall)),
        ));
        let live = LiveEngine::from(engine);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(switchback::gateway::serve(
            live.clone(),
            MemListener(rx),
            std::future::pending(),
        ));
        Running {
            live,
            trace,
            conns: tx,
        }
    }

    async fn connect(&self) -> SendRequest<Full<Bytes>> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        self.conns.send(Box::new(far)).await.expect("gateway up");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(near))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender
    }
}

fn header(r: &http::Response<hyper::body::Incoming>, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn in_flight_requests_finish_on_the_old_config_and_new_ones_use_the_new() {
    let net = MemNet::new();
    net.host_after("old", Duration::from_secs(5), |_| {
        sse_answer("m-old", &["from old"])
    });
    net.host("new", |_| sse_answer("m-new", &["from new"]));
    let gw = Running::start(&deployment_at("old", "d-old"), &net);
    let before = gw.live.current();

    // Request 1 is admitted on the old config and waits on its upstream.
    let mut first = gw.connect().await;
    let in_flight = tokio::spawn(async move {
        first
            .send_request(chat_request(None, &chat_body("g", true)))
            .await
            .expect("response")
    });
    assert!(settle(100, || net.calls("old").len() == 1).await);

    // An invalid config (a fallback to a group that does not exist) changes nothing.
    let mut broken = config(&deployment_at("new", "d-new"));
    broken.router_settings.fallbacks = serde_json::from_value(json!([{"g": ["nowhere"]}])).unwrap();
    let refused = gw
        .live
        .reload(&broken)
        .expect_err("an invalid config is refused");
    assert!(refused.to_string().contains("nowhere"), "{refused}");
    assert!(Arc::ptr_eq(&before, &gw.live.current()));

    let reloaded = gw
        .live
        .reload(&config(&deployment_at("new", "d-new")))
        .unwrap();
    assert!(!reloaded.health_kept, "the deployment ids changed");

    // Request 2, admitted after the reload, goes to the new deployment at once.
    let mut second = gw.connect().await;
    let r2 = second
        .send_request(chat_request(None, &chat_body("g", false)))
        .await
        .unwrap();
    assert_eq!(r2.status(), 200);
    assert_eq!(header(&r2, "x-switchback-deployment"), "d-new");
    assert_eq!(
        header(&r2, "x-switchback-request-id"),
        "2",
        "numbering goes on"
    );
    assert!(text(r2).await.contains("from new"));

    // Request 1 finishes on the config it was admitted with.
    let r1 = in_flight.await.unwrap();
    assert_eq!(r1.status(), 200);
    assert_eq!(header(&r1, "x-switchback-deployment"), "d-old");
    assert!(text(r1).await.contains("from old"));
    assert_eq!(net.calls("old").len(), 1);
    assert_eq!(net.calls("new").len(), 1);
    let trace = gw.trace.lines().join("\n");
    assert!(
        trace.contains("req=1 completed group=g deployment=d-old"),
        "{trace}"
    );
    assert!(
        trace.contains("req=2 completed group=g deployment=d-new"),
        "{trace}"
    );
}

#[tokio::test(start_paused = true)]
async fn deployment_health_carries_over_when_the_ids_stay() {
    let net = MemNet::new();
    net.host("up", |_| {
        json_response(
            429,
            &json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
        )
    });
    let gw = Running::start(&deployment_at("up", "d"), &net);
    let mut c = gw.connect().await;
    let r = c
        .send_request(chat_request(None, &chat_body("g", false)))
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let cooling = |live: &LiveEngine| live.current().cooling()[0].1;
    assert!(!cooling(&gw.live).is_zero(), "the 429 cooled d");

    // Effects of one instant are seen by others only after it (see `CooldownBook`).
    tokio::time::sleep(Duration::from_millis(10)).await;

    // Same ids (a setting changed): the cooldown stays.
    let same = deployment_at("up", "d").replace("cooldown_time: 60", "cooldown_time: 30");
    assert!(gw.live.reload(&config(&same)).unwrap().health_kept);
    assert!(!cooling(&gw.live).is_zero(), "health carried over");
    let r = gw
        .connect()
        .await
        .send_request(chat_request(None, &chat_body("g", false)))
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        net.calls("up").len(),
        1,
        "the cooling deployment was not called again"
    );

    // A deployment added in another group, listed first: the book is new (positions
    // moved), but d's cooldown carries over by its id.
    let added = deployment_at("up", "d").replace(
        "model_list:\n",
        "model_list:\n  - {model_name: h, litellm_params: {model: openai/m, api_base: \"http://up/v1\"}, model_info: {id: e}}\n",
    );
    let reloaded = gw.live.reload(&config(&added)).unwrap();
    assert!(!reloaded.health_kept, "the book is a new one");
    assert_eq!(reloaded.health_carried, 1, "{}", reloaded.describe());
    assert_eq!(
        reloaded.health(),
        "carried over for 1 of 2 deployments (same id and upstream)"
    );
    let cooling_of = |live: &LiveEngine, id: &str| {
        live.current()
            .cooling()
            .into_iter()
            .find(|(d, _)| d == id)
            .map(|(_, left)| left)
            .expect("listed")
    };
    assert!(!cooling_of(&gw.live, "d").is_zero(), "d is still cooling");
    assert!(cooling_of(&gw.live, "e").is_zero(), "e is new and healthy");

    // Other ids: health starts afresh.
    let reloaded = gw.live.reload(&config(&deployment_at("up", "d2"))).unwrap();
    assert!(!reloaded.health_kept);
    assert_eq!(reloaded.health_carried, 0);
    assert!(cooling(&gw.live).is_zero());
}

/// Listener-level limits are read at start: a reload that changes them says they need a
/// restart (in its description, and so in the log line and the admin answer), rather than
/// reporting a reload that silently left them as they were.
#[tokio::test(start_paused = true)]
async fn a_reload_names_the_limits_that_need_a_restart() {
    let net = MemNet::new();
    let gw = Running::start(&deployment_at("up", "d"), &net);
    let same = gw.live.reload(&config(&deployment_at("up", "d"))).unwrap();
    assert_eq!(same.needs_restart, Vec::<&str>::new());
    assert!(!same.describe().contains("restart"), "{}", same.describe());
    let changed = format!(
        "{}limits: {{client_write_timeout: 5, dns_cache_ttl: 1, max_connections: 7, max_messages: 9}}\n",
        deployment_at("up", "d")
    );
    let reloaded = gw.live.reload(&config(&changed)).unwrap();
    assert_eq!(
        reloaded.needs_restart,
        ["max_connections", "client_write_timeout", "dns_cache_ttl"],
        "max_messages applies to the next request: not listed"
    );
    assert!(
        reloaded.describe().ends_with(
            "; unchanged until a restart: max_connections, client_write_timeout, dns_cache_ttl"
        ),
        "{}",
        reloaded.describe()
    );
}

/// `client_write_timeout` bounds both the socket's writes and a stream's frames: a reload
/// cannot change one without the other, so both keep the value of the start.
#[tokio::test(start_paused = true)]
async fn a_stream_keeps_the_client_write_timeout_of_the_start() {
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
    let at = |timeout: u32| {
        format!(
            "{}limits: {{client_write_timeout: {timeout}}}\n",
            deployment_at("up", "d")
        )
    };
    let gw = Running::start(&at(30), &net);
    gw.live.reload(&config(&at(1))).unwrap();
    let response = gw
        .connect()
        .await
        .send_request(chat_request(None, &chat_body("g", true)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Never read the body.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let trace = gw.trace.lines().join("\n");
    assert!(
        !trace.contains("client_gone"),
        "cut at the reloaded 1 s, not the 30 s the socket keeps: {trace}"
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        gw.trace.lines().join("\n").contains("client_gone"),
        "cut at 30 s"
    );
    drop(response);
}

/// A default id (`g#1`) is a place in the group, not an upstream: a reload that drops the
/// cooling first deployment of a group renames the second `g#1`. Health follows the
/// upstream (id, `api_base`, model, key), so the one left does not inherit the other's
/// cooldown (held cooling, the group's only deployment would refuse every request).
#[test]
fn a_reload_that_drops_a_cooling_deployment_does_not_cool_the_one_left() {
    use switchback::catalog::DeploymentId;
    use switchback::classify::{Failure, FailureClass};
    use switchback::route::cooldown::CooldownBook;
    let catalog = |yaml: &str| Catalog::new(&config(yaml)).unwrap();
    let v1 = catalog(
        r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-a/v1"}}
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-b/v1"}}
router_settings: {allowed_fails: 0, cooldown_time: 300}
"#,
    );
    let v2 = catalog(
        r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-b/v1"}}
router_settings: {allowed_fails: 0, cooldown_time: 300}
"#,
    );
    let mut book = CooldownBook::for_catalog(&v1);
    let now = tokio::time::Instant::now();
    let f = Failure::new(FailureClass::Transient, "503 from provider-a");
    assert!(
        book.record_failure(DeploymentId(0), &f, now, &v1.settings, 1)
            .is_some(),
        "provider-a cooled"
    );
    let (next, carried) = book.carried_over(&v1, &v2);
    let later = now + Duration::from_secs(1);
    assert_eq!(carried, [None], "provider-b was never `g#1` before");
    assert!(!next.view(3, later).is_cooling(DeploymentId(0), later));
}

/// A cooldown carried over is one the new config could have set: a deployment left alone
/// in its group (which LiteLLM's lone-deployment rule never cools for a 503 or a 429) or
/// given a `cooldown_time` of 0 (never cooled) is not kept cooling by the old config's
/// verdict, which would refuse every request to its group until it ran out (300 s here,
/// found in review); a cooldown the new config would set too (an auth failure's) stays.
#[test]
fn a_carried_cooldown_is_one_the_new_config_could_have_set() {
    use switchback::catalog::DeploymentId;
    use switchback::classify::{Failure, FailureClass};
    use switchback::route::cooldown::CooldownBook;
    let catalog = |yaml: &str| Catalog::new(&config(yaml)).unwrap();
    let v1 = catalog(
        r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-a/v1"}, model_info: {id: a}}
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-b/v1"}, model_info: {id: b}}
router_settings: {allowed_fails: 0, cooldown_time: 300}
"#,
    );
    let alone = catalog(
        r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-a/v1"}, model_info: {id: a}}
router_settings: {allowed_fails: 0, cooldown_time: 300}
"#,
    );
    let never = catalog(
        r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-a/v1", cooldown_time: 0}, model_info: {id: a}}
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-b/v1"}, model_info: {id: b}}
router_settings: {allowed_fails: 0, cooldown_time: 300}
"#,
    );
    let now = tokio::time::Instant::now();
    let later = now + Duration::from_secs(1);
    // Right after the failure (its effect not yet settled into the shared health), or
    // later (settled).
    let cooled_by = |class: FailureClass, settled: bool| {
        let mut book = CooldownBook::for_catalog(&v1);
        let f = Failure::new(class, "from provider-a");
        assert!(
            book.record_failure(DeploymentId(0), &f, now, &v1.settings, 1)
                .is_some(),
            "provider-a cooled by {class:?}"
        );
        if settled {
            book.settle(now + Duration::from_millis(1));
        }
        book
    };
    let cooling = |book: &mut CooldownBook, to: &Catalog| {
        let (next, carried) = book.carried_over(&v1, to);
        assert_eq!(carried[0], Some(DeploymentId(0)), "a is carried over");
        next.view(3, later).is_cooling(DeploymentId(0), later)
    };
    for settled in [false, true] {
        let mut transient = cooled_by(FailureClass::Transient, settled);
        assert!(
            !cooling(&mut transient, &alone),
            "alone now: a 503 never cools it ({settled})"
        );
        assert!(
            !cooling(&mut transient, &never),
            "cooldown_time 0: never cooled ({settled})"
        );
        assert!(
            cooling(&mut transient, &v1),
            "the same config keeps it ({settled})"
        );
        let mut auth = cooled_by(FailureClass::Auth, settled);
        assert!(
            cooling(&mut auth, &alone),
            "an auth failure cools a lone deployment too ({settled})"
        );
    }
}

/// A reload that stops cooling lone deployments (`cooldown_lone_deployment: false`, or
/// `cooldown_by_failure_rate` off) lifts the cooldown of a lone deployment cooled for a
/// 429: the new config could not have set it, and keeping it refused every request to the
/// group until it ran out, though the operator's reload was the fix (found in review:
/// the deployments being the same, the book was shared whole). So does a reload that
/// also moves the deployments (the carried-over book).
#[tokio::test(start_paused = true)]
async fn a_reload_that_stops_cooling_lone_deployments_lifts_their_cooldowns() {
    for moved in [false, true] {
        let net = MemNet::new();
        net.host("up", |_| {
            json_response(
                429,
                &json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
            )
        });
        let gw = Running::start(&deployment_at("up", "d"), &net);
        let r = gw
            .connect()
            .await
            .send_request(chat_request(None, &chat_body("g", false)))
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        let cooling = |live: &LiveEngine| live.current().cooling()[0].1;
        assert!(!cooling(&gw.live).is_zero(), "the 429 cooled d");
        tokio::time::sleep(Duration::from_millis(10)).await;

        let mut next = deployment_at("up", "d").replace(
            "cooldown_lone_deployment: true",
            "cooldown_lone_deployment: false",
        );
        // Turning the failure-rate rule on with it: a lone deployment cools under that
        // rule only when every one of many requests failed, never for one 429 (found in
        // review: the rule's being on kept the cooldown).
        if moved {
            next = next.replace("allowed_fails: 0, ", "").replace(
                "cooldown_lone_deployment: false",
                "cooldown_lone_deployment: false, cooldown_by_failure_rate: true",
            );
        }
        if moved {
            next = next.replace(
                "model_list:\n",
                "model_list:\n  - {model_name: h, litellm_params: {model: m, api_base: \"http://other/v1\"}, model_info: {id: first}}\n",
            );
        }
        let done = gw.live.reload(&config(&next)).unwrap();
        // Not shared whole: the rules for lone deployments changed.
        assert!(!done.health_kept, "{}", done.describe());
        let d = gw
            .live
            .current()
            .cooling()
            .into_iter()
            .find(|(id, _)| id == "d")
            .expect("d is listed");
        assert!(d.1.is_zero(), "moved={moved}: d is no longer cooling");
        let r = gw
            .connect()
            .await
            .send_request(chat_request(None, &chat_body("g", false)))
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(
            net.calls("up").len(),
            2,
            "moved={moved}: d was called again"
        );
    }
}

/// A cooldown that effects of the same instant cause together, and that no request has
/// reported yet, is reported once across a reload: by the new book, which the effects are
/// handed to, and not again by the old one when a request still on the old config settles
/// it (found in review: the effects were copied, so both books reported it).
#[test]
fn a_cooldown_pending_at_a_reload_is_reported_once() {
    use switchback::catalog::DeploymentId;
    use switchback::classify::{Failure, FailureClass};
    use switchback::route::cooldown::CooldownBook;
    let catalog = |yaml: &str| Catalog::new(&config(yaml)).unwrap();
    let deployments = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-a/v1"}, model_info: {id: a}}
  - {model_name: g, litellm_params: {model: m, api_base: "http://provider-b/v1"}, model_info: {id: b}}
router_settings: {allowed_fails: 1, cooldown_time: 300}
"#;
    let v1 = catalog(deployments);
    let v2 = catalog(&deployments.replace(
        "router_settings",
        "  - {model_name: g, litellm_params: {model: m, api_base: \"http://provider-c/v1\"}, model_info: {id: c}}\nrouter_settings",
    ));
    let now = tokio::time::Instant::now();
    let later = now + Duration::from_secs(1);
    let mut old = CooldownBook::for_catalog(&v1);
    let f = Failure::new(FailureClass::Transient, "from provider-a");
    // Each of two requests sees one failure, within `allowed_fails`; together they are two.
    for request in [1, 2] {
        assert!(
            old.record_failure(DeploymentId(0), &f, now, &v1.settings, request)
                .is_none(),
            "request {request} alone does not cool a"
        );
    }
    let (mut next, carried) = old.carried_over(&v1, &v2);
    assert_eq!(carried[0], Some(DeploymentId(0)), "a is carried over");
    next.settle(later);
    old.settle(later);
    let reports = next.take_unreported().len() + old.take_unreported().len();
    assert_eq!(reports, 1, "one cooldown, reported once");
    assert!(
        next.is_cooling(DeploymentId(0), later),
        "the new book has it"
    );
}

/// Swapping two deployments' `api_base`s keeps their default ids and their order: the
/// old book must not be shared whole, or each upstream gets the other's health.
#[tokio::test]
async fn a_reload_that_swaps_upstreams_does_not_share_their_health() {
    let yaml = |first: &str, second: &str| {
        format!(
            r#"
allow_anonymous: true
model_list:
  - {{model_name: g, litellm_params: {{model: m, api_base: "http://{first}/v1"}}}}
  - {{model_name: g, litellm_params: {{model: m, api_base: "http://{second}/v1"}}}}
"#
        )
    };
    let c1 = Arc::new(Catalog::new(&config(&yaml("provider-a", "provider-b"))).unwrap());
    let engine = Engine::new(
        c1,
        Arc::new(switchback::transport::TcpConnector),
        Arc::new(TraceLog::default()),
        Arc::new(switchback::engine::SystemWallClock),
    );
    let live = LiveEngine::from(Arc::new(engine));
    let done = live
        .reload(&config(&yaml("provider-b", "provider-a")))
        .unwrap();
    assert!(!done.health_kept, "{}", done.describe());
    assert_eq!(done.health_carried, 0, "{}", done.describe());
    // A setting changed, the upstreams the same: health is kept whole.
    let done = live
        .reload(&config(&format!(
            "{}router_settings: {{cooldown_time: 9}}\n",
            yaml("provider-b", "provider-a")
        )))
        .unwrap();
    assert!(done.health_kept, "{}", done.describe());
}
