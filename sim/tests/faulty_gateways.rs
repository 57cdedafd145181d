//! The oracle has teeth: deliberately faulty gateways, each a thin wrapper around the real
//! engine that reproduces a bug real gateways have shipped, must make the equivalence
//! property fail, shrink, and produce a scenario file that reproduces the fault (and passes
//! against Switchback itself). The wrappers live here, in a test, and nowhere else.
//!
//! 1. Key-level fallbacks dropped for streams (the LiteLLM bug: "Available Model Group
//!    Fallbacks=None"): stream requests go to an engine whose keys have no `fallbacks`.
//! 2. The requested model stamped on streamed chunks after a fallback.
//! 3. No retries after commit for streams: stream requests go to an engine whose retry
//!    policy gives up once the answer has started.
//! 4. The primary's model kept on a stream's chunks after a fallback, but for the last
//!    one: the seed bug as a gateway that fixed only the final chunk would ship it.
//! 5. Stream requests answered with the non-streaming JSON body (200, not an event
//!    stream): the SDKs read no event from it.
//! 6. Responses without `x-switchback-request-id`: the harness could not tie them to
//!    their traces, and must say so rather than check nothing.
//! 7. A continued stream that ends with another finish reason than the same answer
//!    without streaming (`length` for `stop`).
//! 8. Upstreams called by the client's mode: non-stream requests go to an engine that
//!    calls every deployment without streaming (`fake_stream`). Both modes answer alike;
//!    only the upstream requests differ.
//! 9. The group's name sent upstream as the model, and 10. each deployment's key sent to
//!    another's upstream: alike in both modes, and every fake answers; only what the calls
//!    name tells.
//! 11. A stream's error before commit without `x-should-retry: false`, where the same
//!     error without streaming has it: the SDKs retry it twice more on their own.
//! 12. After a fallback, another model named on every streamed chunk but the last: on an
//!     answer that brings no text (tool calls).
//! 13. A config reload that streams never see: stream requests go on with the config the
//!     gateway started with, as a handler that kept its router from before the reload would.
//! 14. Another model named on every streamed chunk but the last, on an answer continued
//!     after a mid-stream failure by a fallback that answers with tool calls (no text).
//!
//! Only fault 13's gateway can reload its config, so the searches for the others skip the
//! generated cases that reload (their only failure would be the harness's: "cannot reload"),
//! and fault 13's searches only those.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::Frame;
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::engine::{Engine, WallClock};
use switchback::gateway::body::ResponseBody;
use switchback::gateway::routes::chat_buffered;
use switchback::reload::LiveEngine;
use switchback::route::{
    DefaultRetryPolicy, GiveUp, RetryContext, RetryDecision, RetryPolicy, RngCore,
};
use switchback::trace::Observer;
use switchback::transport::Connector;
use switchback_sim::explore::{self, Concurrency};
use switchback_sim::report;
use switchback_sim::scenario::Scenario;
use switchback_sim::world::{EngineHandle, GatewayUnderTest, SimListener, Switchback};

/// Seeds searched for a case that exposes the fault.
const MAX_SEEDS: u64 = 3_000;
/// Shrinking budget per fault (debug builds are slow; the shrunk case need not be minimal).
const SHRINK_STEPS: u32 = 60;

mod common;

type ServeFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Fault 1: streams read a config whose keys have no fallbacks.
struct DropsKeyFallbacksForStreams;

impl GatewayUnderTest for DropsKeyFallbacksForStreams {
    fn serve(
        &self,
        config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
    ) -> ServeFuture {
        let mut stripped = config.clone();
        for key in &mut stripped.keys {
            key.router_settings.fallbacks = None;
        }
        let stream_catalog = Arc::new(Catalog::new(&stripped).expect("still valid"));
        let front = common::split(
            Arc::new(Engine::new(
                catalog,
                connector.clone(),
                observer.clone(),
                wall.clone(),
            )),
            Arc::new(Engine::new(stream_catalog, connector, observer, wall)),
        );
        Box::pin(common::serve_front(listener, front))
    }
}

/// Fault 3's retry policy: the real one, except that it never retries once committed.
struct NoRetryAfterCommit;

impl RetryPolicy for NoRetryAfterCommit {
    fn decide(
        &self,
        cx: &RetryContext<'_>,
        catalog: &Catalog,
        book: &switchback::route::cooldown::CooldownBook,
        rng: &mut dyn RngCore,
    ) -> RetryDecision {
        if cx.committed {
            return RetryDecision::GiveUp(GiveUp::NotRetryable);
        }
        DefaultRetryPolicy.decide(cx, catalog, book, rng)
    }
}

/// Fault 3: streams are served by an engine that skips retries after commit.
struct SkipsRetriesAfterCommitForStreams;

impl GatewayUnderTest for SkipsRetriesAfterCommitForStreams {
    fn serve(
        &self,
        _config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
    ) -> ServeFuture {
        let front = common::split(
            Arc::new(Engine::new(
                catalog.clone(),
                connector.clone(),
                observer.clone(),
                wall.clone(),
            )),
            Arc::new(
                Engine::new(catalog, connector, observer, wall)
                    .with_retry_policy(Arc::new(NoRetryAfterCommit)),
            ),
        );
        Box::pin(common::serve_front(listener, front))
    }
}

/// Fault 2: after a fallback, every streamed chunk says the requested model.
fn stamps_requested_model(engine: Arc<Engine>) -> common::Front {
    Arc::new(move |stream, bearer, body| {
        let engine = engine.clone();
        Box::pin(async move {
            let requested = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_default();
            let response = chat_buffered(engine, bearer.as_deref(), &body).await;
            if !stream || !fell_back(&response) {
                return response;
            }
            let (parts, body) = response.into_parts();
            let body = body
                .map_frame(move |frame| match frame.into_data() {
                    Ok(data) => Frame::data(stamp(&data, &requested)),
                    Err(frame) => frame,
                })
                .boxed();
            Response::from_parts(parts, body)
        })
    })
}

/// Whether the gateway says the response came after a fallback.
fn fell_back(response: &hyper::Response<ResponseBody>) -> bool {
    response
        .headers()
        .get("x-switchback-attempted-fallbacks")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "0")
}

fn stamp(frame: &Bytes, model: &str) -> Bytes {
    let text = String::from_utf8_lossy(frame);
    let Some(json) = text.strip_prefix("data: ").map(str::trim_end) else {
        return frame.clone();
    };
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(mut v) if v.get("model").is_some() => {
            v["model"] = serde_json::Value::String(model.to_string());
            Bytes::from(format!("data: {v}\n\n"))
        }
        _ => frame.clone(),
    }
}

/// A gateway that is the real engine behind a front built from it (faults 2 and 4 to 7).
struct EngineBehind(fn(Arc<Engine>) -> common::Front);

impl GatewayUnderTest for EngineBehind {
    fn serve(
        &self,
        _config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
    ) -> ServeFuture {
        let front = (self.0)(Arc::new(Engine::new(catalog, connector, observer, wall)));
        Box::pin(common::serve_front(listener, front))
    }
}

/// A front that answers through `engine`, then rewrites each response.
fn rewriting(
    engine: Arc<Engine>,
    rewrite: fn(bool, hyper::Response<ResponseBody>) -> hyper::Response<ResponseBody>,
) -> common::Front {
    Arc::new(move |stream, bearer, body| {
        let engine = engine.clone();
        Box::pin(async move {
            rewrite(
                stream,
                chat_buffered(engine, bearer.as_deref(), &body).await,
            )
        })
    })
}

/// Fault 4: every streamed chunk names the first chunk's model, except the chunk carrying
/// the post-commit metadata (the stream's last), which keeps the engine's.
fn keeps_primary_model_but_last(
    stream: bool,
    response: hyper::Response<ResponseBody>,
) -> hyper::Response<ResponseBody> {
    if !stream {
        return response;
    }
    let first = std::sync::Mutex::new(None::<String>);
    let (parts, body) = response.into_parts();
    let body = body
        .map_frame(move |frame| match frame.into_data() {
            Ok(data) => Frame::data(keep_first_model(&data, &first)),
            Err(frame) => frame,
        })
        .boxed();
    Response::from_parts(parts, body)
}

fn keep_first_model(frame: &Bytes, first: &std::sync::Mutex<Option<String>>) -> Bytes {
    let text = String::from_utf8_lossy(frame);
    let Some(json) = text.strip_prefix("data: ").map(str::trim_end) else {
        return frame.clone();
    };
    let Ok(mut chunk) = serde_json::from_str::<serde_json::Value>(json) else {
        return frame.clone();
    };
    // Azure's first chunk (the prompt filter's) names no model.
    let Some(model) = chunk
        .get("model")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
    else {
        return frame.clone();
    };
    let first = first
        .lock()
        .expect("one frame at a time")
        .get_or_insert(model)
        .clone();
    if chunk.get("switchback").is_some() {
        return frame.clone();
    }
    chunk["model"] = serde_json::Value::String(first);
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// Fault 5: a stream request gets the non-streaming answer, as JSON.
fn answers_streams_with_json(engine: Arc<Engine>) -> common::Front {
    Arc::new(move |_stream, bearer, body| {
        let engine = engine.clone();
        Box::pin(async move {
            let mut request: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return chat_buffered(engine, bearer.as_deref(), &body).await,
            };
            request["stream"] = serde_json::Value::Bool(false);
            let body = serde_json::to_vec(&request).expect("a JSON value serialises");
            chat_buffered(engine, bearer.as_deref(), &body).await
        })
    })
}

/// Fault 6.
fn without_request_id(
    _stream: bool,
    mut response: hyper::Response<ResponseBody>,
) -> hyper::Response<ResponseBody> {
    response.headers_mut().remove("x-switchback-request-id");
    response
}

/// Fault 12: after a fallback, every streamed chunk but the stream's last names another
/// model than the serving deployment's (the seed bug, fixed on the last chunk only).
fn names_another_model_but_last_after_a_fallback(
    stream: bool,
    response: hyper::Response<ResponseBody>,
) -> hyper::Response<ResponseBody> {
    if !fell_back(&response) {
        return response;
    }
    names_another_model_but_last(stream, response)
}

/// Fault 14: another model named on every streamed chunk but the last (the one with the
/// post-commit metadata, which names the serving deployment's model).
fn names_another_model_but_last(
    stream: bool,
    response: hyper::Response<ResponseBody>,
) -> hyper::Response<ResponseBody> {
    if !stream {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = body
        .map_frame(|frame| match frame.into_data() {
            Ok(data) => {
                let text = String::from_utf8_lossy(&data);
                if text.contains("\"switchback\"") {
                    return Frame::data(data);
                }
                Frame::data(stamp(&data, "the-primarys-model"))
            }
            Err(frame) => frame,
        })
        .boxed();
    Response::from_parts(parts, body)
}

/// Fault 11: a stream's error before commit (the JSON error a non-streaming client gets
/// too) without `x-should-retry: false`: the SDKs retry it twice more on their own.
fn stream_errors_invite_sdk_retries(
    stream: bool,
    mut response: hyper::Response<ResponseBody>,
) -> hyper::Response<ResponseBody> {
    if stream {
        response.headers_mut().remove("x-should-retry");
    }
    response
}

/// Fault 7: on a stream, the chunk that carries the post-commit metadata (a continued
/// answer's finish) says `length` where the upstream said `stop`.
fn continued_streams_end_with_length(
    stream: bool,
    response: hyper::Response<ResponseBody>,
) -> hyper::Response<ResponseBody> {
    if !stream {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = body
        .map_frame(|frame| match frame.into_data() {
            Ok(data) => {
                let text = String::from_utf8_lossy(&data);
                if !text.contains("\"switchback\"") {
                    return Frame::data(data);
                }
                let changed =
                    text.replace("\"finish_reason\":\"stop\"", "\"finish_reason\":\"length\"");
                Frame::data(Bytes::from(changed))
            }
            Err(frame) => frame,
        })
        .boxed();
    hyper::Response::from_parts(parts, body)
}

/// Fault 8: non-stream requests are served by an engine that calls every deployment
/// without streaming, as if how an upstream is called followed the client.
struct CallsUpstreamsByClientMode;

impl GatewayUnderTest for CallsUpstreamsByClientMode {
    fn serve(
        &self,
        config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
    ) -> ServeFuture {
        let mut whole = config.clone();
        for d in &mut whole.model_list {
            d.litellm_params.fake_stream = Some(true);
        }
        let whole = Arc::new(Catalog::new(&whole).expect("still valid"));
        let front = common::split(
            Arc::new(Engine::new(
                whole,
                connector.clone(),
                observer.clone(),
                wall.clone(),
            )),
            Arc::new(Engine::new(catalog, connector, observer, wall)),
        );
        Box::pin(common::serve_front(listener, front))
    }
}

/// Faults 9 and 10: a gateway that calls its upstreams wrongly, alike in both modes: the
/// config it serves is `rewrite` of the scenario's. The fakes answer whatever they are
/// asked, so only the oracle's check of what each call names can tell.
struct ServesRewrittenConfig(fn(&mut GatewayConfig));

impl GatewayUnderTest for ServesRewrittenConfig {
    fn serve(
        &self,
        config: &GatewayConfig,
        _catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
    ) -> ServeFuture {
        let mut wrong = config.clone();
        (self.0)(&mut wrong);
        let catalog = Arc::new(Catalog::new(&wrong).expect("still valid"));
        let engine = Arc::new(Engine::new(catalog, connector, observer, wall));
        Box::pin(common::serve_front(
            listener,
            common::split(engine.clone(), engine),
        ))
    }
}

/// Fault 9: the group's name sent upstream as the model (the provider's model is lost).
fn sends_group_names(config: &mut GatewayConfig) {
    for d in &mut config.model_list {
        d.litellm_params.model = format!("openai/{}", d.model_name);
    }
}

/// Fault 10: each deployment's key sent to the next deployment's upstream.
fn sends_the_next_deployments_key(config: &mut GatewayConfig) {
    let keys: Vec<Option<switchback::secret::Secret>> = config
        .model_list
        .iter()
        .map(|d| d.litellm_params.api_key.clone())
        .collect();
    for (i, d) in config.model_list.iter_mut().enumerate() {
        d.litellm_params.api_key = keys[(i + 1) % keys.len()].clone();
    }
}

/// Fault 13: stream requests are served by the engine the gateway started with; only the
/// non-stream ones see a reload.
struct IgnoresReloadsForStreams;

impl GatewayUnderTest for IgnoresReloadsForStreams {
    fn serve(
        &self,
        config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
    ) -> ServeFuture {
        self.serve_reloadable(
            config,
            catalog,
            connector,
            observer,
            wall,
            listener,
            EngineHandle::default(),
        )
    }

    fn serve_reloadable(
        &self,
        _config: &GatewayConfig,
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
        listener: SimListener,
        handle: EngineHandle,
    ) -> ServeFuture {
        let at_start = Arc::new(Engine::new(catalog, connector, observer, wall));
        let live = LiveEngine::from(at_start.clone());
        handle.set(live.clone());
        let front: common::Front = Arc::new(move |streams, bearer, body| {
            let engine = if streams {
                at_start.clone()
            } else {
                live.current()
            };
            Box::pin(async move { chat_buffered(engine, bearer.as_deref(), &body).await })
        });
        Box::pin(common::serve_front(listener, front))
    }
}

/// The faults here are wrong per request, so cases of one request at a time expose them;
/// concurrent cases would only make the search and the shrinking slower.
const SEARCH: Concurrency = Concurrency::Never;

/// Generated case `seed`, when it suits a search: one that reloads its config for fault 13
/// (`reloads`), one that does not for the others, whose gateways cannot reload.
fn searched(seed: u64, reloads: bool) -> Option<Scenario> {
    let case = explore::case_with(seed, SEARCH);
    (case.reloads.is_empty() != reloads).then_some(case)
}

/// Searches generated cases for one the faulty gateway fails, shrinks it, saves it, and
/// checks the saved file: it fails against the faulty gateway and passes against Switchback.
/// Its timeline page is written next to it; returns the page.
fn caught(name: &str, faulty: Arc<dyn GatewayUnderTest>) -> String {
    caught_in(name, faulty, false)
}

/// As [`caught`], searching the cases that reload their config (`reloads`) or those that
/// do not.
fn caught_in(name: &str, faulty: Arc<dyn GatewayUnderTest>, reloads: bool) -> String {
    // Wall time, printed for the README figure; never asserted (no timed tests).
    let started = Instant::now();
    let seed = (0..MAX_SEEDS)
        .find(|seed| {
            searched(*seed, reloads)
                .is_some_and(|case| !explore::judge(&case, &faulty).failures.is_empty())
        })
        .unwrap_or_else(|| {
            panic!("{name}: no case in {MAX_SEEDS} exposes the fault: the oracle has no teeth")
        });
    let (small, failures) =
        explore::shrink_in(seed, SEARCH, &faulty, Default::default(), SHRINK_STEPS);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target/explore-failures")
        .join(name);
    let path = explore::save(&dir, &small, &failures).expect("saved");
    let replayed = Scenario::load_file(&path)
        .unwrap_or_else(|e| panic!("{name}: the saved case does not load: {e}"));
    let again = explore::judge(&replayed, &faulty);
    assert!(
        !again.failures.is_empty(),
        "{name}: the saved case {} no longer fails",
        path.display()
    );
    let page = report::page::render(&report::page_of_runs(
        &replayed.name,
        &path.display().to_string(),
        &again.runs,
        &again.failures,
    ));
    std::fs::write(path.with_extension("html"), &page).expect("page written");
    // Where the oracle says the modes diverge, the page highlights it, with the message
    // naming the diverging attempt when there is one.
    for f in &again.failures {
        if let Some((label, message)) = f
            .strip_prefix("[equivalence] request ")
            .and_then(|r| r.split_once(": "))
            .filter(|(_, m)| m.starts_with("attempts diverge"))
        {
            assert!(
                page.contains(&format!(
                    "class=\"divergence-note\" data-request=\"{label}\""
                )) && page.contains(&report::escape::html(message)),
                "{name}: the page does not highlight {f}"
            );
        }
    }
    let real: Arc<dyn GatewayUnderTest> = Arc::new(Switchback);
    let clean = explore::judge(&replayed, &real);
    assert!(
        clean.failures.is_empty(),
        "{name}: Switchback fails the saved case too: {:?}",
        clean.failures
    );
    println!(
        "{name}: case {seed} caught and shrunk in {:.1} s -> {}\n  replay: cargo run --release -- run {}\n  first failure: {}",
        started.elapsed().as_secs_f64(),
        path.display(),
        path.display(),
        failures.first().map_or("", String::as_str)
    );
    page
}

#[test]
fn dropping_key_fallbacks_for_streams_is_caught() {
    let page = caught(
        "drops_key_fallbacks_for_streams",
        Arc::new(DropsKeyFallbacksForStreams),
    );
    // The modes' attempts differ (the stream takes no fallback): the timeline shows where.
    assert!(
        page.contains("class=\"bar divergence diverges\" data-lane=\"gateway\""),
        "no divergence highlighted on the timeline"
    );
}

#[test]
fn stamping_the_requested_model_after_a_fallback_is_caught() {
    caught(
        "stamps_requested_model",
        Arc::new(EngineBehind(stamps_requested_model)),
    );
}

#[test]
fn skipping_retries_after_commit_is_caught() {
    caught(
        "skips_retries_after_commit",
        Arc::new(SkipsRetriesAfterCommitForStreams),
    );
}

/// Caught by the per-chunk model invariant alone: both modes' final `model` agree.
#[test]
fn keeping_the_primarys_model_on_all_but_the_last_chunk_is_caught() {
    let faulty: Arc<dyn GatewayUnderTest> =
        Arc::new(EngineBehind(|e| rewriting(e, keeps_primary_model_but_last)));
    let found = (0..MAX_SEEDS).find_map(|seed| {
        let failures = explore::judge(&searched(seed, false)?, &faulty).failures;
        let per_chunk = failures
            .iter()
            .any(|f| f.contains("of the serving call's answer names model"));
        let final_model = failures.iter().any(|f| f.contains("final model"));
        (per_chunk && !final_model).then_some((seed, failures))
    });
    let (seed, failures) = found.unwrap_or_else(|| {
        panic!("no case in {MAX_SEEDS} shows the primary's name on a fallback's chunks: no teeth")
    });
    println!("keeps_primary_model_but_last: case {seed}: {failures:?}");
    caught(
        "keeps_primary_model_but_last",
        Arc::new(EngineBehind(|e| rewriting(e, keeps_primary_model_but_last))),
    );
}

#[test]
fn answering_streams_with_json_is_caught() {
    caught(
        "answers_streams_with_json",
        Arc::new(EngineBehind(answers_streams_with_json)),
    );
}

#[test]
fn responses_without_their_request_id_are_caught() {
    caught(
        "without_request_id",
        Arc::new(EngineBehind(|e| rewriting(e, without_request_id))),
    );
}

/// Caught by the modes' comparison of how each choice ended: the per-request checks
/// (passthrough among them) do not look at a continued answer's finish reason.
#[test]
fn a_continued_stream_ending_otherwise_is_caught() {
    let faulty: Arc<dyn GatewayUnderTest> = Arc::new(EngineBehind(|e| {
        rewriting(e, continued_streams_end_with_length)
    }));
    let found = (0..MAX_SEEDS).find_map(|seed| {
        let verdict = explore::judge(&searched(seed, false)?, &faulty);
        let failures = verdict.failures;
        failures
            .iter()
            .any(|f| f.contains("finish reasons differ"))
            .then_some((seed, failures))
    });
    let (seed, failures) = found.unwrap_or_else(|| {
        panic!("no case in {MAX_SEEDS} shows a continued stream's finish reason: no teeth")
    });
    println!("continued_streams_end_with_length: case {seed}: {failures:?}");
}

/// Caught only by the modes' comparison of the upstream requests: a 429 event after three
/// chunks, then a fallback, answered with the same text, attempts, model and counts in both
/// modes; but the non-stream run called both providers without streaming (and, having no
/// partial answer, asked the fallback for a fresh one).
#[test]
fn calling_upstreams_by_the_clients_mode_is_caught() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/midstream/continue_at_chunk_3.yaml");
    let scenario = Scenario::load_file(&file).expect("corpus file");
    let faulty: Arc<dyn GatewayUnderTest> = Arc::new(CallsUpstreamsByClientMode);
    let failures = explore::judge(&scenario, &faulty).failures;
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with("[equivalence] request r0.0: upstream calls diverge at call 1")),
        "not caught: {failures:?}"
    );
    // Nothing else tells: only the new comparison sees it.
    assert!(
        failures.iter().all(|f| f.contains("upstream calls")),
        "{failures:?}"
    );
}

/// A gateway that names the wrong model or key upstream, in both modes alike, is caught by
/// what the calls name; before, both modes agreed and every fake answered, so it passed.
#[test]
fn calling_upstreams_with_the_wrong_model_or_key_is_caught() {
    let corpus = |name: &str| {
        Scenario::load_file(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../scenarios")
                .join(name),
        )
        .expect("corpus file")
    };
    for (file, fault, says) in [
        (
            "streaming/precommit_429_falls_back.yaml",
            sends_group_names as fn(&mut GatewayConfig),
            "named model `primary`",
        ),
        (
            "hostile/upstream_echoes_the_key.yaml",
            sends_the_next_deployments_key,
            "to `echo1` named model `m` with key ...6789",
        ),
    ] {
        let faulty: Arc<dyn GatewayUnderTest> = Arc::new(ServesRewrittenConfig(fault));
        let failures = explore::judge(&corpus(file), &faulty).failures;
        assert!(
            failures
                .iter()
                .any(|f| f.contains("invariant: call") && f.contains(says)),
            "{file}: not caught: {failures:?}"
        );
        let clean: Arc<dyn GatewayUnderTest> = Arc::new(ServesRewrittenConfig(|_| {}));
        let v = explore::judge(&corpus(file), &clean);
        assert!(v.failures.is_empty(), "{file}: {:?}", v.failures);
    }
}

/// A stream's pre-commit error that invites the SDKs' own retries, where the same
/// error without streaming does not, is caught by the modes' comparison.
#[test]
fn stream_errors_inviting_sdk_retries_are_caught() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/retries/final_429_tells_retry_after.yaml");
    let scenario = Scenario::load_file(&file).expect("corpus file");
    let faulty: Arc<dyn GatewayUnderTest> = Arc::new(EngineBehind(|e| {
        rewriting(e, stream_errors_invite_sdk_retries)
    }));
    let failures = explore::judge(&scenario, &faulty).failures;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("x-should-retry differs on the error")),
        "not caught: {failures:?}"
    );
}

/// The seed bug on an answer that brings no text (tool calls, served by a fallback): the
/// chunks before the last named another model. The per-chunk check began at the first
/// chunk with text, so it never began, and the last chunk's right name hid the rest.
#[test]
fn another_model_on_a_fallbacks_tool_call_chunks_is_caught() {
    let yaml = r#"name: a fallback's tool calls
seed: 5
gateway:
  allow_anonymous: true
  model_list:
    - {model_name: primary, litellm_params: {model: openai/p, api_base: "http://pa:8000/v1"}, model_info: {id: pa}}
    - {model_name: backup, litellm_params: {model: openai/b, api_base: "http://pb:8000/v1"}, model_info: {id: pb}}
  router_settings: {num_retries: 0, fallbacks: [{primary: [backup]}]}
providers:
  - host: pa
    default: {fault: {kind: http, status: 429}}
  - host: pb
    default:
      tool_calls: [{name: get_weather, arguments: '{"city":"Oslo"}'}]
      arguments_chunk_size: 4
requests:
  - model: primary
expect: {status: 200, attempts: ["pa: rate_limited", "pb: ok"]}
"#;
    another_model_on_chunks_is_caught(
        yaml,
        Arc::new(EngineBehind(|e| {
            rewriting(e, names_another_model_but_last_after_a_fallback)
        })),
    );
}

/// The seed bug after a mid-stream failure: the primary streamed text and was cut, a
/// fallback continued with tool calls, and every chunk but the last named another model.
/// The per-chunk check began at the first chunk with text past the continued prefix, and
/// the continuation brought none.
#[test]
fn another_model_on_a_continuations_tool_call_chunks_is_caught() {
    let yaml = r#"name: a continuation's tool calls
seed: 5
gateway:
  allow_anonymous: true
  model_list:
    - {model_name: primary, litellm_params: {model: openai/p, api_base: "http://pa:8000/v1"}, model_info: {id: pa}}
    - {model_name: backup, litellm_params: {model: openai/b, api_base: "http://pb:8000/v1"}, model_info: {id: pb}}
  router_settings: {num_retries: 0, fallbacks: [{primary: [backup]}]}
providers:
  - host: pa
    default: {text: "abcdefgh", chunk_size: 2, fault: {kind: cut, after_chunks: 2}}
  - host: pb
    default:
      tool_calls: [{name: get_weather, arguments: '{"city":"Oslo"}'}]
      arguments_chunk_size: 4
requests:
  - model: primary
expect: {status: 200, attempts: ["pa: transient", "pb: ok"]}
"#;
    another_model_on_chunks_is_caught(
        yaml,
        Arc::new(EngineBehind(|e| rewriting(e, names_another_model_but_last))),
    );
}

/// `faulty` names another model on the chunks of the answer `yaml`'s one request gets:
/// the per-chunk model check catches it, and Switchback passes.
fn another_model_on_chunks_is_caught(yaml: &str, faulty: Arc<dyn GatewayUnderTest>) {
    let scenario = Scenario::load("case.yaml", yaml).expect("a valid scenario");
    let failures = explore::judge(&scenario, &faulty).failures;
    assert!(
        failures
            .iter()
            .any(|f| f
                .contains("of the serving call's answer names model Some(\"the-primarys-model\")")),
        "not caught: {failures:?}"
    );
    let real: Arc<dyn GatewayUnderTest> = Arc::new(Switchback);
    let clean = explore::judge(&scenario, &real);
    assert!(clean.failures.is_empty(), "{:?}", clean.failures);
}

/// Caught by the modes' comparison of the config each request was admitted with: a stream
/// admitted after the reload ran with the config from before it.
#[test]
fn a_reload_that_streams_never_see_is_caught() {
    let page = caught_in(
        "ignores_reloads_for_streams",
        Arc::new(IgnoresReloadsForStreams),
        true,
    );
    assert!(
        page.contains("reload #0"),
        "the page does not show the reload"
    );
}

/// The wrappers are real gateways: on a case without faults they pass.
#[test]
fn the_wrappers_pass_a_clean_case() {
    let clean = Scenario::load_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios/streaming/precommit_429_falls_back.yaml"),
    )
    .expect("corpus file");
    let gateways: [Arc<dyn GatewayUnderTest>; 5] = [
        Arc::new(IgnoresReloadsForStreams),
        Arc::new(DropsKeyFallbacksForStreams),
        Arc::new(SkipsRetriesAfterCommitForStreams),
        Arc::new(EngineBehind(|e| rewriting(e, keeps_primary_model_but_last))),
        Arc::new(EngineBehind(|e| {
            rewriting(e, continued_streams_end_with_length)
        })),
    ];
    for gw in gateways {
        let v = explore::judge(&clean, &gw);
        assert!(v.failures.is_empty(), "{:?}", v.failures);
    }
}
