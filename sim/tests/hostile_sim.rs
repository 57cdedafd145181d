//! The hostile scenarios' oracles have teeth: the hostile shapes really reach the gateway,
//! and the secrecy invariant reports a leak when there is one.

use std::path::Path;

use switchback_sim::oracle;
use switchback_sim::scenario::{Mode, Scenario};
use switchback_sim::world;

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/hostile")
        .join(name);
    Scenario::load_file(&path).expect("the corpus loads")
}

#[test]
fn an_echoed_key_reaches_the_gateway_and_never_the_client() {
    let s = scenario("upstream_echoes_the_key.yaml");
    let key = s.gateway.model_list[0]
        .litellm_params
        .api_key
        .clone()
        .unwrap();
    let run = world::run(&s, Mode::NonStream).unwrap();
    let call = &run.calls["echo1"][0];
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {}", key.expose()).as_str())
    );
    let client = &run.results[0];
    let message = &client.error.as_ref().expect("an error").message;
    assert!(
        message.contains("Incorrect API key provided"),
        "the echo came through, redacted: {message}"
    );
    assert!(!message.contains(&key.expose()[8..24]), "{message}");
    let mut failures = Vec::new();
    oracle::check_run(&s, &run, &mut failures);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_leak_anywhere_a_client_looks_is_reported() {
    let s = scenario("upstream_echoes_the_key.yaml");
    let key = s.gateway.model_list[1]
        .litellm_params
        .api_key
        .clone()
        .unwrap();
    for place in ["body", "header", "message", "chunk"] {
        let mut run = world::run(&s, Mode::NonStream).unwrap();
        let client = &mut run.results[1];
        let leak = format!("upstream said: Bearer {}", key.expose());
        match place {
            "body" => client.body = Some(leak),
            "header" => {
                client.response_headers.insert("x-debug".into(), leak);
            }
            "message" => {
                client.error = Some(switchback_sim::client::SeenError {
                    status: 500,
                    error_type: "api_error".into(),
                    message: leak,
                })
            }
            _ => client.chunks.push(switchback_sim::client::SeenChunk {
                at_ms: 0,
                model: None,
                text: String::new(),
                raw: leak,
            }),
        }
        let mut failures = Vec::new();
        oracle::check_run(&s, &run, &mut failures);
        assert!(
            failures
                .iter()
                .any(|f| f.contains("no secret reaches a client")),
            "a key in the {place} went unnoticed: {failures:#?}"
        );
        assert!(
            !failures
                .iter()
                .any(|f| f.contains("no secret reaches a client") && f.contains(&key.expose()[8..])),
            "the secrecy report repeats the key"
        );
    }
}

/// A client that leaves before the response head never sees its request number: its
/// request is still the harness's to know (the only one of its key and model that left),
/// so expectations on its trace are checked, not passed unseen. Here they are false: the
/// request was admitted, planned, attempted (one call to `slow`) and its client went.
#[test]
fn expectations_on_a_client_that_left_before_the_head_can_fail() {
    let mut s = scenario("client_leaves_before_commit.yaml");
    let expect = s.requests[0]
        .expect
        .as_mut()
        .expect("tenant A's expectations");
    expect.no_events = [
        "admitted",
        "plan_resolved",
        "attempt_started",
        "client_gone",
    ]
    .map(String::from)
    .to_vec();
    expect.calls = Some([("slow".to_string(), 0)].into_iter().collect());
    for mode in [Mode::NonStream, Mode::Stream] {
        let run = world::run(&s, mode).unwrap();
        let mut failures = Vec::new();
        oracle::check_run(&s, &run, &mut failures);
        let m = mode.as_str();
        for name in [
            "admitted",
            "plan_resolved",
            "attempt_started",
            "client_gone",
        ] {
            let want = format!("[{m}] request r0.0: no_events: `{name}` occurred");
            assert!(failures.contains(&want), "{want} not in {failures:#?}");
        }
        assert!(
            failures.iter().any(|f| f.starts_with(&format!(
                "[{m}] request r0.0: calls: expected 0 call(s) to `slow`, got 1"
            ))),
            "{failures:#?}"
        );
    }
}

/// A client whose own patience (`timeout_ms`) ran out before the head did not see its
/// request number either: its request is told by elimination as a leaving client's is, and
/// expectations on its trace can fail.
#[test]
fn expectations_on_a_client_that_timed_out_before_the_head_can_fail() {
    let mut s = scenario("client_leaves_before_commit.yaml");
    s.requests[0].disconnect = None;
    s.requests[0].timeout_ms = 50;
    let expect = s.requests[0]
        .expect
        .as_mut()
        .expect("tenant A's expectations");
    expect.no_events = vec!["attempt_started".to_string()];
    expect.calls = Some([("slow".to_string(), 0)].into_iter().collect());
    let run = world::run(&s, Mode::NonStream).unwrap();
    assert!(run.results[0].request_id().is_none() && run.results[0].broken.is_some());
    let mut failures = Vec::new();
    oracle::check_run(&s, &run, &mut failures);
    let want = "[non_stream] request r0.0: no_events: `attempt_started` occurred";
    assert!(
        failures.iter().any(|f| f == want),
        "{want} not in {failures:#?}"
    );
    assert!(
        failures.iter().any(|f| f
            .starts_with("[non_stream] request r0.0: calls: expected 0 call(s) to `slow`, got 1")),
        "{failures:#?}"
    );
}

/// Two clients of one key and model that both leave before the head: which request is
/// whose cannot be told, and an expectation on either's trace is an error, not a pass.
#[test]
fn expectations_on_clients_that_cannot_be_told_apart_are_refused() {
    let mut s = scenario("client_leaves_before_commit.yaml");
    s.requests[0].repeat = 2;
    let run = world::run(&s, Mode::NonStream).unwrap();
    let mut failures = Vec::new();
    oracle::check_run(&s, &run, &mut failures);
    for copy in 0..2 {
        let want = format!(
            "[non_stream] request r0.{copy}: no_events cannot be checked: the client left \
             before the response head, and so did other clients of its key and model, so \
             which of requests [1, 2] is its own is unknown"
        );
        assert!(failures.contains(&want), "{want} not in {failures:#?}");
    }
}

/// The engine's typed events are kept up to MAX_TRACE_LINES; a run that reached it is
/// refused by name, not judged on a cut record (where later requests would show "0 terminal
/// events").
#[test]
fn a_run_whose_events_were_cut_is_refused_by_name() {
    let s = scenario("client_leaves_before_commit.yaml");
    let mut run = world::run(&s, Mode::NonStream).unwrap();
    let filler = run.records[0].clone();
    let filler = switchback::trace::TraceRecord {
        request: 10_000,
        event: switchback::trace::Event::LimitHit { limit: "filler" },
        ..filler
    };
    run.records
        .resize(switchback_sim::trace::MAX_TRACE_LINES, filler);
    let mut failures = Vec::new();
    oracle::check_run(&s, &run, &mut failures);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].contains("the requests past them cannot be judged"),
        "{failures:#?}"
    );
}

/// A call is marked `flooded` (which switches off the passthrough check for it) only when
/// its flood went out: one scripted after the answer's last chunk never goes, and the call
/// must still be held to what it sent.
#[test]
fn only_a_flood_that_went_out_marks_its_call() {
    let mut s = scenario("comment_flood.yaml");
    let run = world::run(&s, Mode::NonStream).unwrap();
    let flooded = run.calls.values().flatten().filter(|c| c.flooded).count();
    assert!(flooded > 0, "the corpus's flood goes out");
    for p in &mut s.providers {
        for script in std::iter::once(&mut p.default).chain(p.calls.iter_mut()) {
            if let Some(f) = script.flood.as_mut() {
                f.after_chunks = 10_000;
            }
        }
    }
    let run = world::run(&s, Mode::NonStream).unwrap();
    let flooded: Vec<_> = run.calls.values().flatten().filter(|c| c.flooded).collect();
    assert!(flooded.is_empty(), "no flood went out, yet: {flooded:?}");
}

/// What the calls name is checked against the config, call by call: a call with another
/// model, another key or no request id is reported (the faulty gateways of
/// `faulty_gateways.rs` show it end to end for the first two).
#[test]
fn a_call_no_deployment_makes_is_reported() {
    let s = scenario("upstream_echoes_the_key.yaml");
    let run = world::run(&s, Mode::NonStream).unwrap();
    assert!(oracle::calls_no_deployment_makes(&run).is_empty());
    let host = "echo1";
    let mutated = |change: fn(&mut switchback_sim::fake::CallRecord)| {
        let mut run = world::run(&s, Mode::NonStream).unwrap();
        change(&mut run.calls.get_mut(host).unwrap()[0]);
        oracle::calls_no_deployment_makes(&run)
    };
    let says = |wrong: Vec<String>, what: &str| {
        assert!(
            wrong.len() == 1 && wrong[0].contains(what),
            "{what}: {wrong:?}"
        );
    };
    says(
        mutated(|c| c.model = "echo-auth".into()),
        "named model `echo-auth`",
    );
    says(mutated(|c| c.authorization = None), "with no key");
    says(
        mutated(|c| c.authorization = Some("Bearer sk-tenant".into())),
        "with key ...nant",
    );
    says(
        mutated(|c| c.request_id = None),
        "carried no x-switchback-request-id",
    );
}
