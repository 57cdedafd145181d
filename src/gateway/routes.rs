//! The gateway's routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`,
//! `GET /metrics`, `POST /admin/reload`.
//!
//! Owns: reading the request (its key first, from whichever header carries it, then the
//! body, refused unread in a content coding (see [`content_coding`]), under its size limit,
//! its deadline and the gateway's budget of bodies in flight, which the request holds to
//! its end), handing it to the engine, and turning the outcome into a response: one JSON
//! body for `stream: false`; for `stream: true`, a 200 SSE response at commit, or, if every
//! attempt failed before commit, the same JSON error a non-streaming client gets. Either way the committing attempt's `x-request-id`, `x-ratelimit-*` and
//! `openai-processing-ms` headers are passed on, and an error that ends a request whose
//! plan is exhausted says `x-should-retry: false`, so an SDK's own retries do not multiply
//! the gateway's.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use crate::attempt::{CommitHead, Outcome};
use crate::client_timeout::SdkWait;
use crate::delivery::{AggregateDelivery, StreamBounds, StreamDelivery, StreamStart};
use crate::engine::{Admitted, Engine};
use crate::error::{ApiError, echoed};
use crate::gateway::body::{self, ResponseBody};
use crate::gateway::content_coding;
use crate::gateway::cors;
use crate::gateway::request_body::{self, BodyBudget, Held, ReadError};
use crate::gateway::write_timeout::WriteDeadline;
use crate::reload::LiveEngine;

/// `bodies`: the gateway's budget of request bodies in flight.
pub async fn handle(
    live: LiveEngine,
    bodies: &BodyBudget,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    // A request keeps the engine it arrived with to its end, whatever reloads happen.
    let engine = live.current();
    let mut response = respond(live, engine.clone(), bodies, req).await;
    super::date::stamp(&engine, &mut response);
    response
}

async fn respond(
    live: LiveEngine,
    engine: Arc<Engine>,
    bodies: &BodyBudget,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let cors = &engine.catalog().cors;
    if let Some(e) = cross_site_anonymous(&engine, &req) {
        drain(&engine, req);
        return error(&e);
    }
    if cors.is_off() {
        return dispatch(live, engine, bodies, req).await;
    }
    let origin = cors.allowed(req.headers());
    if cors::is_preflight(&req) {
        let response = preflight(&engine, &req, origin);
        drain(&engine, req);
        return response;
    }
    let mut response = dispatch(live, engine, bodies, req).await;
    if let Some(origin) = origin {
        cors::allow(&mut response, origin);
    }
    response
}

/// The 403 for an anonymous `POST` from a browser page on another site. A page can send a
/// "simple" request (a `text/plain` body) without a preflight; CORS only keeps the page from
/// reading the answer, so against a gateway that serves anonymous requests any page its
/// users opened spent its models. A listed origin (`cors_allowed_origins`) and the gateway's
/// own are served, and so is a request without `Origin` (every SDK, curl) or with a key (it
/// answers for what it spends), as Ollama does (`OLLAMA_ORIGINS`).
///
/// The gateway's own origin is one whose `Host` is an address or `localhost` and whose
/// `Origin` names the same. Nothing else proves it: a page on `http://evil.example:4000`
/// whose name its owner then points at the gateway's address (DNS rebinding) is on the
/// gateway's origin as far as the browser knows, so `Host` and `Origin` agree and the
/// browser says `Sec-Fetch-Site: same-origin`; and behind a proxy that rewrites `Host` to
/// an address, such a page's `Origin` is all that is left to tell it by. A page on the
/// gateway's own named origin is listed in `cors_allowed_origins` like any other.
fn cross_site_anonymous<B>(engine: &Engine, req: &Request<B>) -> Option<ApiError> {
    if req.method() != http::Method::POST {
        return None;
    }
    let origin = req.headers().get(header::ORIGIN)?;
    if engine.catalog().cors.allowed(req.headers()).is_some() {
        return None;
    }
    let text = origin.to_str().unwrap_or("");
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let authority = text.split_once("://").map_or(text, |(_, rest)| rest);
    if host.is_some_and(|h| cors::names_no_dns(h) && h.eq_ignore_ascii_case(authority)) {
        return None;
    }
    let key = key_of(engine, req).ok()?;
    if !matches!(engine.authenticate(key), Ok(None)) {
        return None;
    }
    let shown: String = text.chars().take(64).collect();
    Some(ApiError::permission(format!(
        "an anonymous request from a browser page on `{shown}`: list the origin in \
         general_settings.cors_allowed_origins, or send a key"
    )))
}

/// The answer to a browser's preflight: what the route takes, for an allowed origin; a 403
/// naming the setting for another (the browser would refuse the page the call anyway, and
/// the page's developer reads why); the route's 404 for no route.
fn preflight(
    engine: &Engine,
    req: &Request<Incoming>,
    origin: Option<HeaderValue>,
) -> Response<ResponseBody> {
    let route = match route_of(req) {
        Ok(route) => route,
        Err(e) => {
            let mut response = error(&e);
            if let Some(origin) = origin {
                cors::allow(&mut response, origin);
            }
            return response;
        }
    };
    let Some(origin) = origin else {
        engine.note_refusal(route_name(req), 403, None);
        return error(&ApiError::new(
            403,
            "invalid_request_error",
            "this origin may not call the gateway from a browser: it is not in \
             general_settings.cors_allowed_origins",
        ));
    };
    let methods = match route {
        Route::Chat { .. } | Route::AdminReload => "POST",
        Route::Models | Route::Model(_) | Route::Health | Route::Metrics => "GET, HEAD",
    };
    cors::preflight(
        origin,
        req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS),
        methods,
    )
}

/// Serves a request (the preflight aside), whatever its origin.
async fn dispatch(
    live: LiveEngine,
    engine: Arc<Engine>,
    bodies: &BodyBudget,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if req.method() == Method::POST {
        if let Ok(Route::Chat { deployment }) = route_of(&req) {
            let held = bodies.hold();
            return chat(engine, req, live.client_write_timeout(), deployment, held).await;
        }
    }
    // Every other answer is made from the head alone: whatever body came with it is read
    // and dropped, as for a refused chat request (see `request_body`).
    let response = match route_of(&req) {
        Ok(Route::AdminReload) if req.method() == Method::POST => match admin(&engine, &req) {
            Ok(()) => admin_reload(live).await,
            Err(e) => error(&e),
        },
        _ => answer_from_head(&engine, &req),
    };
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        engine.note_refusal(route_name(&req), status.as_u16(), None);
    }
    drain(&engine, req);
    response
}

/// Reads what is left of a request that was answered from its head, and throws it away
/// (up to `max_discarded_request_body_bytes`, within the body's deadline): a client that
/// sends its whole upload before it reads then gets its answer, not a reset.
fn drain(engine: &Engine, req: Request<Incoming>) {
    let limits = &engine.catalog().limits;
    request_body::discard(
        req.into_body(),
        limits.max_discarded_request_body_bytes,
        request_body::Deadline::new(limits),
    );
}

/// The name of the route a request's path names (`none` for none), for refusals' access
/// lines and metrics.
fn route_name<B>(req: &Request<B>) -> &'static str {
    match route_of(req) {
        Ok(Route::Chat { .. }) => "chat",
        Ok(Route::Models) => "models",
        Ok(Route::Model(_)) => "model",
        Ok(Route::Health) => "health",
        Ok(Route::Metrics) => "metrics",
        Ok(Route::AdminReload) => "admin_reload",
        Err(_) => "none",
    }
}

/// Azure OpenAI's chat route, `/openai/deployments/{deployment}/chat/completions` (with
/// `?api-version=...`, ignored), as the official SDKs' `AzureOpenAI` clients call it: the
/// deployment is the model group, whatever the body's `model` says (as LiteLLM reads it).
const AZURE_DEPLOYMENTS: &str = "/openai/deployments/";
const AZURE_CHAT: &str = "/chat/completions";

/// The route a request's path names, or the 404 for none.
fn route_of<B>(req: &Request<B>) -> Result<Route, ApiError> {
    let path = req.uri().path().trim_end_matches('/');
    let route = match path {
        // Azure OpenAI's v1 API (`base_url=".../openai/v1/"`), and openai-python's
        // `AzureOpenAI` with `api_version="preview"` or `"latest"`, which leaves the
        // deployment out of the path: the body names the group.
        "/v1/chat/completions"
        | "/chat/completions"
        | "/openai/v1/chat/completions"
        | "/openai/chat/completions" => Route::Chat { deployment: None },
        // `/openai/models`: the `AzureOpenAI` clients' `models.list()` (their base URL is
        // `{endpoint}/openai`).
        "/v1/models" | "/models" | "/openai/v1/models" | "/openai/models" => Route::Models,
        "/health" | "/health/liveliness" | "/health/readiness" => Route::Health,
        "/metrics" => Route::Metrics,
        "/admin/reload" => Route::AdminReload,
        _ if let Some(name) = path
            .strip_prefix(AZURE_DEPLOYMENTS)
            .and_then(|rest| rest.strip_suffix(AZURE_CHAT)) =>
        {
            match percent_encoding::percent_decode_str(name).decode_utf8() {
                Ok(name) => Route::Chat {
                    deployment: Some(name.into_owned()),
                },
                Err(_) => {
                    return Err(ApiError::not_found(format!(
                        "deployment `{}` is not UTF-8 once percent-decoded",
                        echoed(name)
                    ))
                    .code("model_not_found")
                    .param(Some("model".into())));
                }
            }
        }
        _ => match path
            .strip_prefix("/v1/models/")
            .or_else(|| path.strip_prefix("/models/"))
            .or_else(|| path.strip_prefix("/openai/v1/models/"))
            .or_else(|| path.strip_prefix("/openai/models/"))
        {
            // The Node SDK escapes a model id (`/` as `%2F`), httpx spaces and non-ASCII.
            Some(id) => match percent_encoding::percent_decode_str(id).decode_utf8() {
                Ok(id) => Route::Model(id.into_owned()),
                Err(_) => {
                    return Err(ApiError::not_found(format!(
                        "model `{}` is not UTF-8 once percent-decoded",
                        echoed(id)
                    ))
                    .code("model_not_found")
                    .param(Some("model".into())));
                }
            },
            None => {
                return Err(ApiError::not_found(format!(
                    "no route for {}",
                    echoed(req.uri().path())
                )));
            }
        },
    };
    Ok(route)
}

/// The answer to any request but a chat completion's, from its head.
fn answer_from_head(engine: &Engine, req: &Request<Incoming>) -> Response<ResponseBody> {
    let route = match route_of(req) {
        Ok(route) => route,
        Err(e) => return error(&e),
    };
    let path = req.uri().path().trim_end_matches('/');
    let expected = match route {
        Route::Chat { .. } | Route::AdminReload => Method::POST,
        Route::Models | Route::Model(_) | Route::Health | Route::Metrics => Method::GET,
    };
    // HEAD is GET without the body (RFC 9110 §9.3.2), as uptime checks send it: hyper
    // writes the head of the GET response (its length included) and leaves the body out.
    let takes =
        req.method() == expected || (expected == Method::GET && req.method() == Method::HEAD);
    if !takes {
        let mut response = error(&ApiError::new(
            405,
            "invalid_request_error",
            // The path may hold a long name (an Azure deployment's, a model id): its start.
            format!("{} takes {expected}, not {}", echoed(path), req.method()),
        ));
        // RFC 9110 §15.5.6: a 405 names the methods the resource takes.
        let allow = HeaderValue::from_static(if expected == Method::POST {
            "POST"
        } else {
            "GET, HEAD"
        });
        response.headers_mut().insert(header::ALLOW, allow);
        return response;
    }
    match route {
        Route::Health => health(),
        Route::Metrics => metrics(engine, req),
        Route::AdminReload => unreachable!("a POST to the reload route is served by `dispatch`"),
        Route::Models => models(engine, req),
        Route::Model(id) => model(engine, req, &id),
        Route::Chat { .. } => unreachable!("a POST to the chat route is served by `chat`"),
    }
}

enum Route {
    /// `deployment`: the group an Azure-style path names.
    Chat {
        deployment: Option<String>,
    },
    Models,
    /// `GET /v1/models/{id}`; a group's name may itself contain `/`.
    Model(String),
    Health,
    Metrics,
    AdminReload,
}

fn health() -> Response<ResponseBody> {
    json_response(StatusCode::OK, &json!({"status": "healthy"}))
}

/// The Prometheus exposition, when the engine keeps metrics. With an admin key
/// (`general_settings.master_key`) a scrape must present it; otherwise, with keys
/// configured, a key of no team that may use every group: the series name every group,
/// deployment and key alias with its traffic (never a secret), so an open port does not
/// show the gateway's traffic, a key restricted to its own models does not read the names
/// of every other tenant's groups, and a team's key does not read the other teams'.
fn metrics(engine: &Engine, req: &Request<Incoming>) -> Response<ResponseBody> {
    let Some(metrics) = engine.metrics() else {
        return error(&ApiError::not_found(
            "metrics are off for this gateway (`serve --metrics on`)",
        ));
    };
    if engine.catalog().has_admin_key() {
        if let Err(e) = admin(engine, req) {
            return error(&e);
        }
    } else {
        match key_of(engine, req).and_then(|key| engine.authenticate(key)) {
            Ok(None) if engine.catalog().has_keys() => {
                return error(&ApiError::unauthorized(
                    "missing API key: send `Authorization: Bearer <virtual key>`",
                ));
            }
            Ok(Some(key)) if key.team.is_some() || !key.sees_every_group() => {
                return error(&ApiError::permission(
                    "the metrics name every group and key with its traffic; scrape with a key \
                     of no team and without a `models` restriction, or set \
                     general_settings.master_key and scrape with it",
                ));
            }
            Err(e) => return error(&e),
            Ok(_) => {}
        }
    }
    let mut response = Response::new(body::full(
        metrics.render(engine.cooling(), engine.upstream_pool().stats()),
    ));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// Whether the request presents the admin key. Without one configured, nobody is admin.
fn admin(engine: &Engine, req: &Request<Incoming>) -> Result<(), ApiError> {
    let catalog = engine.catalog();
    if !catalog.has_admin_key() {
        return Err(ApiError::permission(
            "admin routes need an admin key: set general_settings.master_key",
        ));
    }
    match presented_key(req)? {
        Some(token) if catalog.is_admin(token) => Ok(()),
        Some(_) => Err(ApiError::permission(
            "this route needs the admin key (general_settings.master_key)",
        )),
        None => Err(ApiError::unauthorized(
            "missing admin key: send `Authorization: Bearer <master_key>`",
        )),
    }
}

/// `POST /admin/reload` from the admin: re-reads the config file, as SIGHUP does. 200 with
/// what changed, or 400 with the file's located errors (the running config stays).
///
/// The file is read, parsed and checked on a blocking thread, not on the worker that took
/// the request: that is file I/O (a config on a network mount can hang) and, for a large
/// config, a long computation (130 ms for 4,000 deployments and keys, release build), and
/// the worker's other connections would wait for all of it.
async fn admin_reload(live: LiveEngine) -> Response<ResponseBody> {
    let reloaded = match tokio::task::spawn_blocking(move || live.reload_source()).await {
        Ok(reloaded) => reloaded,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => {
            return error(&ApiError::new(
                503,
                "api_error",
                "the reload was cancelled: the gateway is shutting down",
            ));
        }
    };
    match reloaded {
        Ok((path, done)) => {
            done.log(&path, "POST /admin/reload");
            json_response(
                StatusCode::OK,
                &json!({
                    "reloaded": true,
                    "groups": done.groups,
                    "deployments": done.deployments,
                    "deployment_health": if done.health_kept {
                        "kept"
                    } else if done.health_carried > 0 {
                        "carried_by_id"
                    } else {
                        "reset"
                    },
                    "deployments_carried": done.health_carried,
                    "needs_restart": done.needs_restart,
                }),
            )
        }
        Err(refused) => {
            tracing::warn!(target: "switchback::reload", "{refused}");
            error(&ApiError::bad_request(refused).code("invalid_config"))
        }
    }
}

/// The answer on a connection past `max_connections`: `/health` as usual (a load
/// balancer's probe must not read a full gateway as a dead one), anything else a 503 that
/// says why and when to retry. Either way the request's body is drained, as on any route.
/// An allowed origin's page reads it as any answer: its preflight is answered as usual (a
/// preflight that fails is an opaque network error to the page), and the 503 names it.
pub fn overflow(
    engine: &Engine,
    req: Request<Incoming>,
    max_connections: usize,
) -> Response<ResponseBody> {
    let cors = &engine.catalog().cors;
    let origin = if cors.is_off() {
        None
    } else {
        cors.allowed(req.headers())
    };
    if !cors.is_off() && cors::is_preflight(&req) {
        let mut response = preflight(engine, &req, origin);
        drain(engine, req);
        super::date::stamp(engine, &mut response);
        return response;
    }
    let mut response = overflow_answer(engine, req, max_connections);
    if let Some(origin) = origin {
        cors::allow(&mut response, origin);
    }
    response
}

fn overflow_answer(
    engine: &Engine,
    req: Request<Incoming>,
    max_connections: usize,
) -> Response<ResponseBody> {
    let is_health = matches!(route_of(&req), Ok(Route::Health));
    if !is_health {
        engine.note_refusal(route_name(&req), 503, Some("max_connections"));
    }
    drain(engine, req);
    let mut response = if is_health {
        health()
    } else {
        overloaded(max_connections)
    };
    super::date::stamp(engine, &mut response);
    response
}

/// The 503 of a connection past `max_connections`.
fn overloaded(max_connections: usize) -> Response<ResponseBody> {
    let mut e = ApiError::new(
        503,
        "api_error",
        format!(
            "the gateway is serving max_connections = {max_connections} connections; retry shortly"
        ),
    )
    .code("server_overloaded");
    e.retry_after = Some(std::time::Duration::from_secs(1));
    error(&e)
}

/// The headers a key may come in, besides `x-litellm-api-key` (which is read alone, see
/// [`presented_key`]), in LiteLLM's order: `Authorization: Bearer <key>` (the OpenAI SDKs),
/// Azure OpenAI's `api-key` (the official SDKs' `AzureOpenAI` clients) and `x-api-key`
/// (Anthropic's SDKs, and many proxies), each with what to send when it is malformed.
static KEY_HEADERS: [(&HeaderName, &str); 3] = [
    (
        &key_headers::AUTHORIZATION,
        "Authorization: Bearer <virtual key>",
    ),
    (&key_headers::API_KEY, "api-key: <virtual key>"),
    (&key_headers::X_API_KEY, "x-api-key: <virtual key>"),
];

mod key_headers {
    use hyper::header::{self, HeaderName};

    pub static AUTHORIZATION: HeaderName = header::AUTHORIZATION;
    pub static API_KEY: HeaderName = HeaderName::from_static("api-key");
    pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    pub static X_LITELLM_API_KEY: HeaderName = HeaderName::from_static("x-litellm-api-key");
}

/// The key a request presents, `Ok(None)` when it presents none. LiteLLM's own
/// `x-litellm-api-key` (`<key>` or `Bearer <key>`) supersedes every other header, as in
/// LiteLLM (`get_api_key` in `litellm/proxy/auth/user_api_key_auth.py`): it exists for
/// clients whose Authorization header carries something else (a provider SDK's own token, a
/// proxy's credentials), so those are not read then. Otherwise the key is in the first of
/// [`KEY_HEADERS`] present, in LiteLLM's order, and the later ones are not read: a proxy in
/// front (AWS API Gateway's usage plans, Kong, Apigee) adds its own `x-api-key` beside the
/// client's `Authorization`, and must not turn a working request into a 401. The header read
/// must hold a usable key: one that is there but holds none (no `Bearer` scheme, an empty
/// or non-ASCII value), or that is sent twice naming different keys, is refused rather than
/// read as no key, for a client that believes it sends its key must not be served as
/// anonymous. Errors name headers, never what they hold.
fn presented_key<B>(req: &Request<B>) -> Result<Option<&str>, ApiError> {
    let headers = req.headers();
    let malformed = |header: &HeaderName, expected: &str| {
        let name = shown(header);
        ApiError::unauthorized(format!("malformed {name} header: send `{expected}`"))
    };
    let litellm = &key_headers::X_LITELLM_API_KEY;
    if headers.contains_key(litellm) {
        return one_key(headers.get_all(litellm).iter().map(|value| {
            litellm_key(value)
                .map(|key| (litellm, key))
                .ok_or_else(|| malformed(litellm, "x-litellm-api-key: <virtual key>"))
        }));
    }
    let Some(&(name, expected)) = KEY_HEADERS
        .iter()
        .find(|(name, _)| headers.contains_key(*name))
    else {
        return Ok(None);
    };
    one_key(headers.get_all(name).iter().map(|value| {
        let key = if name == header::AUTHORIZATION {
            bearer(value)
        } else {
            bare(value)
        };
        key.map(|key| (name, key))
            .ok_or_else(|| malformed(name, expected))
    }))
}

/// The one key that every value of one header names, the first error, or a 401 when two
/// values disagree.
fn one_key<'r>(
    found: impl Iterator<Item = Result<(&'r HeaderName, &'r str), ApiError>>,
) -> Result<Option<&'r str>, ApiError> {
    let mut first: Option<(&HeaderName, &str)> = None;
    for next in found {
        let (name, key) = next?;
        match first {
            None => first = Some((name, key)),
            Some((_, seen)) if seen == key => {}
            Some((seen_in, _)) => {
                let both = if seen_in == name {
                    format!("two {} headers", shown(name))
                } else {
                    format!("the {} and {} headers", shown(seen_in), shown(name))
                };
                return Err(ApiError::unauthorized(format!(
                    "conflicting API keys: {both} name different keys; send one key, or \
                     the one to use as x-litellm-api-key"
                )));
            }
        }
    }
    Ok(first.map(|(_, key)| key))
}

/// A header's name as clients and docs spell it (`HeaderName` holds it lower-case).
fn shown(name: &HeaderName) -> &str {
    if *name == header::AUTHORIZATION {
        "Authorization"
    } else {
        name.as_str()
    }
}

/// The token of `Bearer <token>`.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.trim_start().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A header that holds the key alone.
fn bare(value: &HeaderValue) -> Option<&str> {
    Some(value.to_str().ok()?.trim()).filter(|key| !key.is_empty())
}

/// `x-litellm-api-key`: the key alone, or `Bearer <key>` (LiteLLM takes both).
fn litellm_key(value: &HeaderValue) -> Option<&str> {
    let key = bare(value)?;
    match key.split_once([' ', '\t']) {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => bearer(value),
        _ if key.eq_ignore_ascii_case("bearer") => None,
        _ => Some(key),
    }
}

/// [`presented_key`] where virtual keys are what is checked: a gateway without `keys:`
/// reads no key from any request, so a header it has no use for (a proxy's own
/// `Authorization: Basic ...`) is not refused there.
fn key_of<'r, B>(engine: &Engine, req: &'r Request<B>) -> Result<Option<&'r str>, ApiError> {
    match presented_key(req) {
        Err(_) if !engine.catalog().has_keys() => Ok(None),
        presented => presented,
    }
}

/// The groups a request's key may use.
fn allowed(engine: &Engine, req: &Request<Incoming>) -> Result<Arc<[bool]>, ApiError> {
    Ok(match engine.authenticate(key_of(engine, req)?)? {
        Some(k) => k.allowed.clone(),
        None => engine.catalog().all_allowed(),
    })
}

fn model_object(engine: &Engine, name: &str) -> serde_json::Value {
    json!({"id": name, "object": "model", "created": engine.started_at_unix(), "owned_by": "switchback"})
}

fn models(engine: &Engine, req: &Request<Incoming>) -> Response<ResponseBody> {
    let allowed = match allowed(engine, req) {
        Ok(a) => a,
        Err(e) => return error(&e),
    };
    let data: Vec<_> = engine
        .catalog()
        .allowed_groups(&allowed)
        .map(|g| model_object(engine, &g.name))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

fn model(engine: &Engine, req: &Request<Incoming>, id: &str) -> Response<ResponseBody> {
    let key = match key_of(engine, req).and_then(|bearer| engine.authenticate(bearer)) {
        Ok(key) => key,
        Err(e) => return error(&e),
    };
    // A name a wildcard group serves is a model too (`openai/gpt-4o` under `openai/*`), as
    // chat serves it: `models.retrieve` before a chat must not call it missing.
    match engine.is_model_for(key, id) {
        true => json_response(StatusCode::OK, &model_object(engine, id)),
        false => error(
            &ApiError::not_found(format!(
                "model `{}` is not a model group this key may use",
                echoed(id)
            ))
            .code("model_not_found")
            .param(Some("model".into())),
        ),
    }
}

/// `write_timeout`: `client_write_timeout` as the listener has it (read at start); `held`:
/// the request's hold on the budget of bodies in flight (nothing yet), kept to its end.
async fn chat(
    engine: Arc<Engine>,
    req: Request<Incoming>,
    write_timeout: std::time::Duration,
    deployment: Option<String>,
    mut held: Held,
) -> Response<ResponseBody> {
    // Only the figures needed: what lives across an await is carried by every request's
    // future, and the future by every client connection.
    let (max, max_discarded, deadline, grace) = {
        let limits = &engine.catalog().limits;
        (
            limits.max_request_body_bytes,
            limits.max_discarded_request_body_bytes,
            request_body::Deadline::new(limits),
            limits.body_timeout_grace(),
        )
    };
    // The connection's deadline for this response, moved to the engine's once admitted.
    let write_deadline = req.extensions().get::<WriteDeadline>().cloned();
    // What the SDK said it waits, counted from the request's arrival or its body's end.
    let (sdk_wait, arrived) = (SdkWait::of(req.headers()), tokio::time::Instant::now());
    // Every way out before admission: no event will ever name the request.
    let refuse = |e: ApiError| {
        engine.note_refusal("chat", e.status, e.limit);
        error(&e)
    };
    let too_large = || {
        refuse(
            ApiError::new(
                413,
                "invalid_request_error",
                format!("request body over max_request_body_bytes = {max}"),
            )
            .code("request_too_large")
            .limit(Some("max_request_body_bytes")),
        )
    };
    // The key first: an unknown one is refused before a byte of its body is read, and
    // before anything else is checked, so a stranger learns none of the gateway's limits.
    let token = key_of(&engine, &req).and_then(|key| {
        engine.authenticate(key)?;
        Ok(key.map(str::to_string))
    });
    let token = match token {
        Ok(token) => token,
        Err(e) => {
            request_body::discard(req.into_body(), max_discarded, deadline);
            return refuse(e);
        }
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        request_body::discard(req.into_body(), max_discarded, deadline);
        return too_large();
    }
    // A body in a content coding is refused before it is read: the gateway decodes none,
    // and the JSON parser would read compressed bytes as a syntax error. After the key, so
    // a stranger learns nothing of what the gateway reads.
    if let Some(e) = content_coding::refusal(req.headers()) {
        request_body::discard(req.into_body(), max_discarded, deadline);
        let mut response = refuse(e);
        content_coding::name_what_is_read(&mut response);
        return response;
    }
    if let Some(e) = content_coding::transfer_refusal(req.headers()) {
        request_body::discard(req.into_body(), max_discarded, deadline);
        // A 5xx the SDKs would retry, and the same answer every time.
        let mut response = refuse(e);
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
        return response;
    }
    // A path's deployment over the bound is refused before its body is read or held.
    if let Some(name) = &deployment {
        if let Err(e) = crate::request::check_model_name(name, "model", &engine.catalog().limits) {
            request_body::discard(req.into_body(), max_discarded, deadline);
            return refuse(ApiError::from(e));
        }
    }
    let total = held.budget_total();
    let over_budget_error = move |what: String| {
        let mut e = ApiError::new(
            503,
            "api_error",
            format!(
                "the gateway holds at most max_in_flight_request_body_bytes = {total} bytes \
                 of request bodies at once, and {what} does not fit in what is free now; \
                 retry shortly"
            ),
        )
        .code("server_overloaded")
        .limit(Some("max_in_flight_request_body_bytes"));
        e.retry_after = Some(std::time::Duration::from_secs(1));
        e
    };
    let over_budget = |received: u64| {
        refuse(over_budget_error(format!(
            "this body, at {received} bytes so far,"
        )))
    };
    // Bytes are taken from the budget as they arrive, never as declared: a client that
    // declares 50 MiB and sends nothing holds nothing (six such connections held the whole
    // default budget, and every other tenant got a 503).
    let body: Bytes = match request_body::read(req.into_body(), max, deadline, &mut held).await {
        Ok(body) => body,
        Err(ReadError::OverBudget(rest, deadline)) => {
            let received = deadline.received();
            request_body::discard(rest, max_discarded, deadline);
            return over_budget(received);
        }
        Err(ReadError::TimedOut(rest, missed)) => {
            // A client that finishes its upload soon after reads the 408 (see
            // `request_body`); one still far from its end is cut after `grace`.
            request_body::discard(rest, max_discarded, request_body::Deadline::fixed(grace));
            let limits = &engine.catalog().limits;
            return refuse(
                ApiError::new(
                    408,
                    "invalid_request_error",
                    format!(
                        "request body too slow: {} bytes in {:.1} s; a body may fall at \
                         most body_read_timeout = {} s behind \
                         min_request_body_bytes_per_second = {} bytes a second, and time \
                         it gets ahead of that rate is kept for body_read_timeout at most",
                        missed.received(),
                        missed.elapsed().as_secs_f64(),
                        limits.body_read_timeout,
                        limits.min_request_body_bytes_per_second,
                    ),
                )
                .limit(Some("body_read_timeout")),
            );
        }
        Err(ReadError::TooLarge(rest, deadline)) => {
            request_body::discard(rest, max_discarded, deadline);
            return too_large();
        }
        // Nobody receives this answer: a cancelled upload is a client gone, not a refusal
        // (a 4xx in the dashboards for every upload a user cancelled).
        Err(ReadError::Left) => {
            engine.note_client_gone("chat");
            return error(&ApiError::bad_request(
                "the connection ended before the request body was complete",
            ));
        }
        Err(ReadError::Malformed(e)) => {
            return refuse(ApiError::bad_request(format!(
                "could not read the request body: {e}"
            )));
        }
    };
    // What the body is parsed into counts against the budget too: a value takes about
    // `PARSED_VALUE_BYTES` in memory where its text may take two bytes (`0,`), so 500 KB
    // of zeros held 20 MB, and the default budget admitted 512 such requests at once.
    let afford = |request: &crate::request::ChatRequest| {
        let parsed = request
            .json_values
            .saturating_mul(crate::request::PARSED_VALUE_BYTES);
        if held.cover(parsed) {
            return Ok(());
        }
        Err(over_budget_error(format!(
            "this body, parsed into {} JSON values (about {parsed} bytes in memory),",
            request.json_values
        )))
    };
    let mut admitted =
        match engine.admit_within(token.as_deref(), &body, deployment.as_deref(), afford) {
            Ok(a) => a,
            Err(e) => return refuse(e),
        };
    admitted.client_timeout = sdk_wait.and_then(|w| w.counted(arrived, admitted.admitted_at));
    if let Some(d) = write_deadline {
        // With `client_write_timeout` to spare: an answer ready just in time (or the
        // deadline's own error event) still reaches a client that keeps reading.
        let limits = &engine.catalog().limits;
        d.set(admitted.admitted_at + limits.request_deadline() + limits.client_write_timeout());
    }
    // The body is a slice of the connection's read buffer, and hyper has already read on
    // for the client's end into a buffer of its own: held for the request's life, the first
    // one would be 8 KiB more per request in flight (a non-streaming one: until its whole
    // answer is in). Admission copied out what the request needs, the key included.
    drop(body);
    drop(token);
    drop(deployment);
    serve_admitted(engine, admitted, write_timeout, Some(held)).await
}

/// A chat completion whose body has been read: admission, the attempt loop, the response.
/// `bearer` is the token after `Bearer `. Public so that a front end (or a test wrapper)
/// that reads the body itself can hand the request to the engine.
pub async fn chat_buffered(
    engine: Arc<Engine>,
    bearer: Option<&str>,
    body: &[u8],
) -> Response<ResponseBody> {
    match engine.admit(bearer, body) {
        Ok(admitted) => {
            let write_timeout = engine.catalog().limits.client_write_timeout();
            serve_admitted(engine, admitted, write_timeout, None).await
        }
        Err(e) => {
            engine.note_refusal("chat", e.status, e.limit);
            error(&e)
        }
    }
}

/// An admitted chat completion: the attempt loop and the response, in the request's mode.
/// `held`: the request's share of the budget of bodies in flight, given back when the
/// attempt loop's task, which owns the request, ends (for a stream, after its last frame,
/// long after this returns).
async fn serve_admitted(
    engine: Arc<Engine>,
    admitted: Admitted,
    write_timeout: std::time::Duration,
    held: Option<Held>,
) -> Response<ResponseBody> {
    if admitted.request.stream {
        let limits = &engine.catalog().limits;
        let bounds = StreamBounds {
            frames: limits.stream_buffer_frames,
            bytes: limits.stream_buffer_bytes,
            write_timeout,
            deadline: admitted.admitted_at + limits.request_deadline(),
            keep_alive: StreamBounds::keep_alive_for(
                limits.stream_keep_alive(),
                admitted
                    .client_timeout
                    .as_ref()
                    .filter(|t| t.header == crate::client_timeout::READ_TIMEOUT)
                    .map(|t| t.wait),
            ),
        };
        stream(engine, admitted, bounds, held).await
    } else {
        aggregate(engine, admitted, held).await
    }
}

/// `stream: false`. The attempt loop runs in a task of its own, as a stream's does, so both
/// modes reach the engine's shared state (deployment health, cooldowns) through the same
/// task structure: when two requests' upstream events land in the same instant, they are
/// processed in the same order whatever the modes (`sim/tests/same_instant/`).
async fn aggregate(
    engine: Arc<Engine>,
    admitted: Admitted,
    held: Option<Held>,
) -> Response<ResponseBody> {
    let (handler, answer) = tokio::sync::oneshot::channel();
    let task_engine = engine.clone();
    let task = tokio::spawn(async move {
        let mut out = AggregateDelivery::watching(handler);
        let outcome = task_engine.execute(&admitted, &mut out).await;
        out.hand_over();
        // The hold goes wherever the request goes: given back with it, here or, when
        // nobody awaits the task any more (the client left), when the task ends.
        (admitted, outcome, held)
    });
    let out = answer.await;
    match (task.await, out) {
        (Ok((admitted, outcome, _held)), Ok(out)) => {
            aggregate_response(&engine, &admitted, out, &outcome)
        }
        (Err(join), _) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        _ => error(&ApiError::new(
            500,
            "api_error",
            "the request ended without a response",
        )),
    }
}

fn aggregate_response(
    engine: &Engine,
    admitted: &Admitted,
    mut out: AggregateDelivery,
    outcome: &Outcome,
) -> Response<ResponseBody> {
    let catalog = engine.catalog();
    let mut response = match (&outcome.result, out.take_head()) {
        (Ok(served), Some(committed)) => {
            let id = outcome
                .response_id
                .as_deref()
                .unwrap_or(&committed.response_id);
            let mut r = json_response(StatusCode::OK, &out.into_response(id));
            forward_upstream_headers(&mut r, &committed);
            // The serving deployment (after a continuation, not the committing one).
            let serving = CommitHead {
                group: catalog.group(served.group).name.clone(),
                deployment: catalog.deployment(served.deployment).id.clone(),
                ..committed
            };
            set_counts(&mut r, outcome.retries, outcome.fallbacks, Some(&serving));
            r
        }
        (Ok(_), None) => unreachable!("a served request has committed"),
        (Err(unserved), _) => {
            let mut r = final_error(
                &ApiError::from_failure(&unserved.failure, &unserved.summary),
                !outcome.attempts.is_empty(),
            );
            set_counts(&mut r, outcome.retries, outcome.fallbacks, None);
            r
        }
    };
    set_request_id(&mut response, admitted.id);
    response
}

/// The committing attempt's headers on the forwarded list.
fn forward_upstream_headers(response: &mut Response<ResponseBody>, head: &CommitHead) {
    let h = response.headers_mut();
    for (name, value) in &head.upstream_headers {
        h.insert(name.clone(), value.clone());
    }
}

/// An error that ends a request after the gateway has already retried and fallen back as
/// far as its plan allows: the client's own retries would only multiply the attempts. One
/// that called no upstream (every deployment cooling) cost nothing to retry: the SDK's
/// own retries, which wait out `retry-after-ms`, are left to it; so is one that ended on
/// the gateway's own overload (out of file descriptors or ports), as over `max_connections`.
fn final_error(e: &ApiError, called_upstream: bool) -> Response<ResponseBody> {
    let mut r = error(e);
    if called_upstream && !e.overloaded() {
        r.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    r
}

async fn stream(
    engine: Arc<Engine>,
    admitted: Admitted,
    bounds: StreamBounds,
    held: Option<Held>,
) -> Response<ResponseBody> {
    let id = admitted.id;
    let (mut delivery, start, body_rx) =
        StreamDelivery::new(admitted.request.include_usage, bounds);
    let task_engine = engine.clone();
    let task = tokio::spawn(async move {
        // Held for as long as the task holds the request: past commit, when this
        // function has long returned the response.
        let _held = held;
        task_engine.execute(&admitted, &mut delivery).await
    });
    match start.await {
        Ok(StreamStart::Committed(head)) => {
            let mut response = Response::new(body::frames(body_rx));
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            forward_upstream_headers(&mut response, &head);
            set_counts(&mut response, head.retries, head.fallbacks, Some(&head));
            set_request_id(&mut response, id);
            response
        }
        Ok(StreamStart::Failed(e)) => {
            let outcome = task.await.ok();
            // Without an outcome (a panic after the error was sent), as if it had called.
            let called = outcome.as_ref().is_none_or(|o| !o.attempts.is_empty());
            let mut response = final_error(&e, called);
            if let Some(o) = outcome {
                set_counts(&mut response, o.retries, o.fallbacks, None);
            }
            set_request_id(&mut response, id);
            response
        }
        // The loop ended without a word: only a panic in the engine does that.
        Err(_) => match task.await {
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            _ => error(&ApiError::new(
                500,
                "api_error",
                "the request ended without a response",
            )),
        },
    }
}

/// Switchback's response headers as header names made once: inserting by `&str` parses
/// and checks the name on every response.
mod names {
    use crate::delivery::{
        HEADER_DEPLOYMENT, HEADER_FALLBACKS, HEADER_GROUP, HEADER_REQUEST_ID, HEADER_RETRIES,
    };
    use hyper::header::HeaderName;

    pub static RETRIES: HeaderName = HeaderName::from_static(HEADER_RETRIES);
    pub static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
    pub static FALLBACKS: HeaderName = HeaderName::from_static(HEADER_FALLBACKS);
    pub static GROUP: HeaderName = HeaderName::from_static(HEADER_GROUP);
    pub static DEPLOYMENT: HeaderName = HeaderName::from_static(HEADER_DEPLOYMENT);
    pub static REQUEST_ID: HeaderName = HeaderName::from_static(HEADER_REQUEST_ID);
}

fn set_counts(
    response: &mut Response<ResponseBody>,
    retries: u32,
    fallbacks: u32,
    head: Option<&CommitHead>,
) {
    let h = response.headers_mut();
    h.insert(names::RETRIES.clone(), HeaderValue::from(retries));
    h.insert(names::FALLBACKS.clone(), HeaderValue::from(fallbacks));
    if let Some(head) = head {
        if let Ok(v) = HeaderValue::from_str(&head.group) {
            h.insert(names::GROUP.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&head.deployment) {
            h.insert(names::DEPLOYMENT.clone(), v);
        }
    }
}

/// The gateway's number for the request (its trace `req=`), to correlate logs.
fn set_request_id(response: &mut Response<ResponseBody>, id: u64) {
    response
        .headers_mut()
        .insert(names::REQUEST_ID.clone(), HeaderValue::from(id));
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    // Straight into bytes, without the `fmt::Write` adapter `to_string` goes through.
    let bytes = serde_json::to_vec(value).expect("a JSON value always serialises");
    let mut response = Response::new(body::full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(e: &ApiError) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = json_response(status, &e.body_json());
    if let Some(wait) = e.retry_after {
        // The SDKs read `retry-after-ms` first: the wait to the millisecond, where whole
        // seconds round a 100 ms cooldown up to 1 s.
        let ms = wait.as_millis() as u64;
        let h = response.headers_mut();
        h.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        h.insert(names::RETRY_AFTER_MS.clone(), HeaderValue::from(ms));
    }
    response
}
