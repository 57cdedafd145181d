//! Routing, against the whole gateway in memory (see `support`): which attempts a request
//! makes and what each upstream is asked. One test per defect of the routing review, each
//! written to fail on the code before its fix, in both modes.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// A mock flag fails the *primary* attempt (DESIGN.md). When every deployment of the
/// primary group is cooling, the group is skipped without an attempt, and the flag must not
/// then fail the first fallback's attempt instead: the fallback serves the request.
#[tokio::test(start_paused = true)]
async fn a_mock_flag_never_fails_a_fallback_when_the_primary_is_skipped() {
    let config = r#"
allow_anonymous: true
general_settings: {dangerously_allow_mock_testing_request_params: true}
model_list:
  - {model_name: a, litellm_params: {model: openai/m, api_base: "http://pa/v1"}, model_info: {id: a1}}
  - {model_name: b, litellm_params: {model: openai/m, api_base: "http://pb/v1"}, model_info: {id: b1}}
router_settings: {num_retries: 0, cooldown_time: 60, fallbacks: [{a: [b]}]}
"#;
    for stream in [false, true] {
        let net = MemNet::new();
        // An upstream 401 cools `a1` at once, even as its group's only deployment.
        net.host("pa", |_| {
            json_response(401, &json!({"error": {"message": "bad key"}}))
        });
        net.host("pb", |_| sse_answer("m", &["from b"]));
        let gw = Gw::start(config, &net);
        let first = gw.chat(None, chat_body("a", stream)).await;
        assert_eq!(first.status(), 200, "stream={stream}");
        text(first).await;
        assert!(
            gw.saw("deployment_cooled deployment=a1"),
            "{:#?}",
            gw.events()
        );
        // Another request sees the cooldown from the next instant on.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut body = chat_body("a", stream);
        body["mock_testing_fallbacks"] = json!(true);
        let second = gw.chat(None, body).await;
        let status = second.status();
        let text = text(second).await;
        assert_eq!(status, 200, "stream={stream}: {text}\n{:#?}", gw.events());
        assert!(text.contains("from b"), "stream={stream}: {text}");
        assert!(
            !gw.saw("mocked=true"),
            "no attempt was mocked: {:#?}",
            gw.events()
        );
        assert_eq!(net.calls("pa").len(), 1, "a1 was called once, by the first");
        assert_eq!(net.calls("pb").len(), 2, "b1 served both");
    }
}

const WILDCARD_ID: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "http://pw/v1"}, model_info: {id: oa}}
  - {model_name: chat, litellm_params: {model: openai/c, api_base: "http://pc/v1"}, model_info: {id: c1}}
router_settings: {num_retries: 0}
"#;

/// A deployment whose `model` has a `*` takes its model from the requested name. Named by
/// its id there is none, and it was sent `"model": "*"`: a request naming the id, as its
/// `model` or as a request-level fallback, is refused with a 400 that says why, and no
/// upstream is called.
#[tokio::test(start_paused = true)]
async fn a_wildcard_deployment_named_by_its_id_is_refused_with_a_clear_400() {
    for stream in [false, true] {
        let net = MemNet::new();
        net.host("pw", |_| sse_answer("m", &["from the pattern"]));
        net.host("pc", |_| {
            json_response(503, &json!({"error": {"message": "down"}}))
        });
        let gw = Gw::start(WILDCARD_ID, &net);
        let mut by_fallback = chat_body("chat", stream);
        by_fallback["fallbacks"] = json!(["oa"]);
        for (body, param) in [
            (chat_body("oa", stream), "model"),
            (by_fallback, "fallbacks"),
        ] {
            let response = gw.chat(None, body).await;
            let status = response.status();
            let text = text(response).await;
            assert_eq!(status, 400, "stream={stream} {param}: {text}");
            let error: Value = serde_json::from_str(&text).expect("a JSON error");
            let message = error["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("`oa`") && message.contains("wildcard"),
                "stream={stream} {param}: {message}"
            );
            assert!(
                error["error"]["param"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(param)),
                "stream={stream}: {error}"
            );
        }
        assert!(net.calls("pw").is_empty(), "no upstream was asked for `*`");
        // The pattern still serves the names it matches.
        let response = gw.chat(None, chat_body("openai/gpt-4o", stream)).await;
        assert_eq!(response.status(), 200);
        text(response).await;
        assert_eq!(net.calls("pw")[0].body["model"], "gpt-4o");
    }
}

/// The official SDKs' `AzureOpenAI` clients call `/openai/deployments/{deployment}/chat/
/// completions?api-version=...` with the key in an `api-key` header. The deployment in the
/// path is the model group, whatever the body's `model` says (LiteLLM reads it so); a
/// group whose name has a `/` in it is named the same way, as the SDKs do not escape it.
#[tokio::test(start_paused = true)]
async fn the_azure_deployments_route_serves_the_group_its_path_names() {
    let config = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/ma, api_base: "http://pa/v1"}, model_info: {id: a1}}
  - {model_name: "vertex_ai/gemini", litellm_params: {model: openai/mg, api_base: "http://pg/v1"}, model_info: {id: g1}}
keys:
  - {key: sk-azure, key_alias: azure}
"#;
    for stream in [false, true] {
        let net = MemNet::new();
        net.host("pa", |_| sse_answer("ma", &["from a"]));
        net.host("pg", |_| sse_answer("mg", &["from g"]));
        let gw = Gw::start(config, &net);
        for (path, host, upstream_model) in [
            (
                "/openai/deployments/a/chat/completions?api-version=2024-10-21",
                "pa",
                "ma",
            ),
            (
                "/openai/deployments/vertex_ai/gemini/chat/completions",
                "pg",
                "mg",
            ),
            (
                "/openai/deployments/vertex_ai%2Fgemini/chat/completions",
                "pg",
                "mg",
            ),
        ] {
            let before = net.calls(host).len();
            let body = chat_body("not-a-group", stream).to_string();
            let request = http::Request::post(path)
                .header("host", "gateway")
                .header("content-type", "application/json")
                .header("api-key", "sk-azure")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let response = gw.connect().await.send_request(request).await.unwrap();
            let status = response.status();
            let text = text(response).await;
            assert_eq!(status, 200, "stream={stream} {path}: {text}");
            let calls = net.calls(host);
            assert_eq!(calls.len(), before + 1, "stream={stream} {path}");
            assert_eq!(calls[before].body["model"], upstream_model);
        }
        // Paths that only look like the route (the prefix and the suffix share their `/`,
        // or nothing lies between them) are a 404 or a 400, before any key is checked, and
        // the gateway goes on serving.
        for (path, status) in [
            ("/openai/deployments/chat/completions", 404),
            ("/openai/deployments/chat/completions/", 404),
            ("/openai/deployments//chat/completions", 400),
        ] {
            let request = http::Request::post(path)
                .header("host", "gateway")
                .header("api-key", "sk-azure")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    chat_body("a", stream).to_string(),
                )))
                .unwrap();
            let response = gw.connect().await.send_request(request).await;
            let response = response.unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
            assert_eq!(response.status(), status, "stream={stream} {path}");
        }
        // The path's group is checked as the body's would be.
        let request = http::Request::post("/openai/deployments/nope/chat/completions")
            .header("host", "gateway")
            .header("api-key", "sk-azure")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                chat_body("a", stream).to_string(),
            )))
            .unwrap();
        let response = gw.connect().await.send_request(request).await.unwrap();
        assert_eq!(response.status(), 404, "stream={stream}");
    }
}

/// Azure OpenAI's v1 API is called as `OpenAI(base_url=".../openai/v1/")`
/// (`/openai/v1/chat/completions`, `/openai/v1/models`), and openai-python's `AzureOpenAI`
/// with `api_version="preview"` or `"latest"` leaves the deployment out of its path
/// (`/openai/chat/completions?api-version=preview`): the body's `model` names the group,
/// as on `/v1`. Both were a 404 "no route".
#[tokio::test(start_paused = true)]
async fn azures_v1_paths_serve_the_group_the_body_names() {
    let config = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/ma, api_base: "http://pa/v1"}, model_info: {id: a1}}
keys:
  - {key: sk-azure, key_alias: azure}
"#;
    for stream in [false, true] {
        let net = MemNet::new();
        net.host("pa", |_| sse_answer("ma", &["from a"]));
        let gw = Gw::start(config, &net);
        for path in [
            "/openai/v1/chat/completions",
            "/openai/v1/chat/completions?api-version=preview",
            "/openai/chat/completions?api-version=latest",
        ] {
            let before = net.calls("pa").len();
            let request = http::Request::post(path)
                .header("host", "gateway")
                .header("content-type", "application/json")
                .header("api-key", "sk-azure")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    chat_body("a", stream).to_string(),
                )))
                .unwrap();
            let response = gw.connect().await.send_request(request).await.unwrap();
            let status = response.status();
            let text = text(response).await;
            assert_eq!(status, 200, "stream={stream} {path}: {text}");
            assert_eq!(net.calls("pa").len(), before + 1, "stream={stream} {path}");
        }
        let request = http::Request::get("/openai/v1/models")
            .header("host", "gateway")
            .header("api-key", "sk-azure")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = gw.connect().await.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(text(response).await.contains(r#""id":"a""#));
        // `client.models.list()` and `retrieve("a")` on the v1 API's base URL, and from
        // an `AzureOpenAI` client (its base URL is `{endpoint}/openai`).
        for path in [
            "/openai/v1/models/a",
            "/openai/models?api-version=2024-10-21",
            "/openai/models/a?api-version=2024-10-21",
        ] {
            let request = http::Request::get(path)
                .header("host", "gateway")
                .header("api-key", "sk-azure")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let response = gw.connect().await.send_request(request).await.unwrap();
            let status = response.status();
            let text = text(response).await;
            assert_eq!(status, 200, "{path}: {text}");
            assert!(text.contains(r#""id":"a""#), "{path}: {text}");
        }
    }
}

/// A key restricted to some models learns nothing of the gateway's other groups: a name it
/// may not use is refused alike (403) whether the gateway serves it or not. It got a 403
/// for a group that exists and a 404 for one that does not, so one request per guess
/// enumerated the groups of every other tenant. LiteLLM checks a key's models before the
/// router looks the name up. A name the key's list admits (a pattern) that no group serves
/// is still a 404, and so is any unknown name for an unrestricted key.
#[tokio::test(start_paused = true)]
async fn a_restricted_key_cannot_tell_other_groups_from_no_groups() {
    let config = r#"
model_list:
  - {model_name: mine, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
  - {model_name: theirs-secret-project, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
keys:
  - {key: sk-restricted, models: [mine, "team-*"]}
  - {key: sk-open}
"#;
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(config, &net);
    for stream in [false, true] {
        let mut answers = Vec::new();
        for model in ["theirs-secret-project", "no-such-group"] {
            let r = gw
                .chat(Some("sk-restricted"), chat_body(model, stream))
                .await;
            let status = r.status().as_u16();
            let body: Value = serde_json::from_str(&text(r).await).unwrap();
            assert_eq!(status, 403, "{model}: {body}");
            // The same answer but for the name it repeats.
            answers.push(body.to_string().replace(model, "NAME"));
        }
        assert_eq!(answers[0], answers[1]);
        let r = gw
            .chat(Some("sk-restricted"), chat_body("team-x", stream))
            .await;
        assert_eq!(r.status(), 404, "a name its list admits: {}", text(r).await);
        let r = gw
            .chat(Some("sk-open"), chat_body("no-such-group", stream))
            .await;
        assert_eq!(r.status(), 404, "an unrestricted key: {}", text(r).await);
    }
    assert!(net.calls("up").is_empty());
}

/// The same holds for the names a request's own router settings give: a request-level
/// fallback (or retry policy) naming another tenant's group was accepted (and the link
/// skipped), one naming no group was a 400, so a restricted key could still list the
/// groups, one guess per request. Both are now a 400 that reads the same.
#[tokio::test(start_paused = true)]
async fn a_restricted_keys_settings_cannot_tell_other_groups_from_no_groups() {
    let config = r#"
model_list:
  - {model_name: mine, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
  - {model_name: theirs-secret-project, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
keys:
  - {key: sk-restricted, models: [mine]}
  - {key: sk-open}
"#;
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(config, &net);
    let with_settings = |target: &str, which: &str, stream: bool| {
        let mut body = chat_body("mine", stream);
        body[which] = match which {
            "fallbacks" => json!([{"mine": [target]}]),
            _ => json!({target: {"RateLimitErrorRetries": 1}}),
        };
        body
    };
    for which in ["fallbacks", "model_group_retry_policy"] {
        for stream in [false, true] {
            let mut answers = Vec::new();
            for target in ["theirs-secret-project", "no-such-group"] {
                let r = gw
                    .chat(Some("sk-restricted"), with_settings(target, which, stream))
                    .await;
                let status = r.status().as_u16();
                let body = text(r).await;
                assert_eq!(status, 400, "{which} {target}: {body}");
                answers.push(body.replace(target, "NAME"));
            }
            assert_eq!(answers[0], answers[1], "{which}");
            // An unrestricted key may name any group.
            let r = gw
                .chat(
                    Some("sk-open"),
                    with_settings("theirs-secret-project", which, stream),
                )
                .await;
            assert_eq!(r.status(), 200, "{which}: {}", text(r).await);
        }
    }
}

/// The metrics scrape names every group, deployment and key alias. Without an admin key,
/// any virtual key could scrape it, so a key restricted to its own models read the names
/// of every other tenant's groups in one request (what the 403 and 400 above keep from
/// it), and a team's key every other team's key aliases and their traffic. A restricted
/// key, or a team's, is now refused; a key of no team with no `models` restriction (or
/// `*`) still scrapes, and with an admin key only the admin does.
#[tokio::test(start_paused = true)]
async fn a_restricted_key_cannot_read_other_groups_from_the_metrics() {
    let config = r#"
model_list:
  - {model_name: mine, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
  - {model_name: theirs-secret-project, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
teams:
  - {team_id: team-narrow, models: [mine]}
  - {team_id: team-wide}
keys:
  - {key: sk-restricted, models: [mine]}
  - {key: sk-narrow-team, team_id: team-narrow}
  - {key: sk-wide-team, team_id: team-wide}
  - {key: sk-star, models: ["*"]}
  - {key: sk-open}
"#;
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start_metered(config, &net);
    let scrape = |key: &'static str| {
        let gw = &gw;
        async move {
            let mut sender = gw.connect().await;
            let req = hyper::Request::get("/metrics")
                .header("authorization", format!("Bearer {key}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            sender.send_request(req).await.expect("response")
        }
    };
    // Restricted by its own list or its team's, or a team's at all (the series name every
    // key alias with its traffic: another team's too).
    for key in ["sk-restricted", "sk-narrow-team", "sk-wide-team"] {
        let r = scrape(key).await;
        let status = r.status();
        let body = text(r).await;
        assert_eq!(status, 403, "{key}: {body}");
        assert!(!body.contains("theirs-secret-project"), "{key}: {body}");
        assert!(body.contains("master_key"), "says how to scrape: {body}");
        // The type every 403 of the gateway has, a model's refusal's included.
        assert!(
            body.contains(r#""type":"invalid_request_error""#),
            "{key}: {body}"
        );
    }
    for key in ["sk-open", "sk-star"] {
        let r = scrape(key).await;
        let status = r.status();
        let body = text(r).await;
        assert_eq!(status, 200, "{key}: {body}");
        assert!(body.contains("theirs-secret-project"), "{key}: {body}");
    }
}

/// A retry that `max_attempts` would stop is never scheduled: the request ends at once with
/// the limit, where it slept a whole backoff for an attempt it could not make, and told
/// the client (and the metrics) of a retry never made.
#[tokio::test(start_paused = true)]
async fn a_retry_past_max_attempts_is_not_scheduled() {
    let config = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
router_settings: {num_retries: 3, retry_backoff_base: 5, retry_backoff_max: 5}
limits: {max_attempts: 2}
allow_anonymous: true
"#;
    let net = MemNet::new();
    net.host("up", |_| {
        json_response(
            503,
            &json!({"error": {"message": "busy", "type": "server_error"}}),
        )
    });
    let gw = Gw::start(config, &net);
    for stream in [false, true] {
        let started = tokio::time::Instant::now();
        let r = gw.chat(None, chat_body("g", stream)).await;
        let retries = r.headers()[switchback::delivery::HEADER_RETRIES]
            .to_str()
            .unwrap()
            .to_string();
        let status = r.status();
        let body = text(r).await;
        assert_eq!(status, 503, "stream={stream}: {body}");
        assert_eq!(retries, "1", "stream={stream}: the one retry made");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "stream={stream}: one backoff (5 s), not two: {:?}",
            started.elapsed()
        );
    }
    let events = gw.events();
    let scheduled = events
        .iter()
        .filter(|e| e.contains("retry_scheduled"))
        .count();
    assert_eq!(scheduled, 2, "one per request: {events:#?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.contains("limit_hit limit=max_attempts"))
            .count(),
        2,
        "{events:#?}"
    );
}
