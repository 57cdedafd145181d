//! The engine: shared state, admission, and the entry to the attempt loop.
//!
//! Owns: what lives as long as the gateway (the catalog, the cooldown book, the upstream
//! client, the observer, the wall clock, the request counter) and admission: authenticating
//! a key, parsing the body, checking the model, resolving the request's settings **once**
//! into a [`FallbackPlan`], and emitting the first trace events. Does not own the attempt
//! loop (`attempt`) nor HTTP serving (`gateway`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::attempt::{self, Delivery, Outcome};
use crate::catalog::{Catalog, KeySpec, Routed};
use crate::client_timeout::ClientTimeout;
use crate::config::{At, RouterSettings, check_settings_fields};
use crate::error::{ApiError, echoed};
use crate::metrics::Metrics;
use crate::plan::FallbackPlan;
use crate::policy::Levels;
use crate::request::ChatRequest;
use crate::route::cooldown::CooldownBook;
use crate::route::{DefaultRetryPolicy, RetryPolicy};
use crate::trace::{Event, Fanout, Observer, TraceRecord};
use crate::transport::Connector;
use crate::upstream::client::{ClientLimits, UpstreamClient};
use crate::upstream::pool::Pool;

/// Wall-clock time, used only to read Retry-After HTTP-dates that come without a `Date`
/// header. Monotonic time is always `tokio::time`.
pub trait WallClock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The operating system's clock. Production only: the simulation injects its own (epoch +
/// simulated time), so this never reaches a simulated run's behaviour or trace.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A seed from the operating system's randomness, for a gateway whose config fixes none
/// (`router_settings.rng_seed`): generated response ids then never repeat across restarts.
/// Simulations always fix the seed.
pub fn os_seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The OS RNG failing is not recoverable and leaves nothing to seed with but time.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return nanos as u64;
    }
    u64::from_le_bytes(bytes)
}

/// A request that passed admission, with its frozen plan.
#[derive(Debug)]
pub struct Admitted {
    /// Admission order, from 1: the request's number in traces.
    pub id: u64,
    pub key_alias: String,
    pub request: ChatRequest,
    pub plan: FallbackPlan,
    pub admitted_at: Instant,
    /// How long the client said it waits for its response to begin (`client_timeout`):
    /// set by the HTTP front end, which reads the headers.
    pub client_timeout: Option<ClientTimeout>,
}

pub struct Engine {
    catalog: Arc<Catalog>,
    /// Shared with a reloaded successor that keeps the same deployments.
    cooldowns: Arc<Mutex<CooldownBook>>,
    pub(crate) client: UpstreamClient,
    connector: Arc<dyn Connector>,
    observer: Arc<dyn Observer>,
    wall: Arc<dyn WallClock>,
    retry_policy: Arc<dyn RetryPolicy>,
    started: Instant,
    /// Wall-clock start, in Unix seconds: the `created` of `/v1/models`.
    started_unix: u64,
    /// Shared with reloaded successors: request numbers never repeat.
    next_request: Arc<AtomicU64>,
    /// What `/metrics` shows, when the embedder asked for metrics.
    metrics: Option<Arc<Metrics>>,
}

impl Engine {
    pub fn new(
        catalog: Arc<Catalog>,
        connector: Arc<dyn Connector>,
        observer: Arc<dyn Observer>,
        wall: Arc<dyn WallClock>,
    ) -> Engine {
        let limits = ClientLimits {
            max_sse_line_bytes: catalog.limits.max_sse_line_bytes,
            max_body_bytes: catalog.limits.max_upstream_body_bytes,
            chunks: crate::upstream::chunk::ChunkLimits {
                max_choices: catalog.limits.max_choices,
                max_tool_calls: catalog.limits.max_tool_calls,
                max_json_values: catalog.limits.max_upstream_json_values,
            },
        };
        let started_unix = wall
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Engine {
            cooldowns: Arc::new(Mutex::new(CooldownBook::for_catalog(&catalog))),
            client: UpstreamClient::new(
                connector.clone(),
                limits,
                Pool::new(catalog.limits.upstream_pool()),
            ),
            connector,
            catalog,
            observer,
            wall,
            retry_policy: Arc::new(DefaultRetryPolicy),
            started: Instant::now(),
            started_unix,
            next_request: Arc::new(AtomicU64::new(1)),
            metrics: None,
        }
    }

    /// Replaces the retry decision (see [`RetryPolicy`]).
    pub fn with_retry_policy(mut self, policy: Arc<dyn RetryPolicy>) -> Engine {
        self.retry_policy = policy;
        self
    }

    /// Feeds `metrics` from the engine's events (besides the observer given to `new`) and
    /// serves them on `GET /metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Engine {
        self.observer = Arc::new(Fanout(vec![self.observer, metrics.clone()]));
        self.metrics = Some(metrics);
        self
    }

    /// The engine for `catalog` that takes over from this one (a config reload): the same
    /// connector, observers, clocks, retry policy, start time and request numbering. The
    /// deployments' health is shared when `catalog` lists the same upstreams in the same
    /// order (the book is indexed by position; see [`DeploymentSpec::is_same_upstream`]),
    /// each still alone in its group or not as before and with the same own
    /// `cooldown_time` (the book knows both), under the same rules for lone deployments;
    /// otherwise the new book starts with each
    /// deployment's health carried over from the same upstream
    /// ([`CooldownBook::carried_over`]), and outcomes of requests still in flight on the old
    /// config stay in the old book.
    ///
    /// [`DeploymentSpec::is_same_upstream`]: crate::catalog::DeploymentSpec::is_same_upstream
    pub fn successor(&self, catalog: Arc<Catalog>) -> Engine {
        // Whether a lone deployment may be cooled at all: turned off, a cooldown the old
        // rules set may be one the new could not have (see `carried_over`).
        let same_lone_rules = |c: &Catalog| {
            (
                c.settings.cooldown_lone_deployment,
                c.settings.cooldown_by_failure_rate,
            )
        };
        let same_deployments = catalog.deployments.len() == self.catalog.deployments.len()
            && same_lone_rules(&catalog) == same_lone_rules(&self.catalog)
            && (0..catalog.deployments.len()).all(|i| {
                let d = crate::catalog::DeploymentId(i as u32);
                let (new, old) = (catalog.deployment(d), self.catalog.deployment(d));
                new.is_same_upstream(old)
                    && catalog.is_lone(d) == self.catalog.is_lone(d)
                    && new.cooldown_time == old.cooldown_time
            });
        let carried = (!same_deployments).then(|| {
            self.cooldowns
                .lock()
                .expect("cooldown lock poisoned")
                .carried_over(&self.catalog, &catalog)
                .0
        });
        let mut next = Engine::new(
            catalog,
            self.connector.clone(),
            self.observer.clone(),
            self.wall.clone(),
        );
        next.retry_policy = self.retry_policy.clone();
        next.started = self.started;
        next.started_unix = self.started_unix;
        next.next_request = self.next_request.clone();
        next.metrics = self.metrics.clone();
        // Kept connections outlive a reload unless the pool's own bounds changed.
        if next.client.pool().limits() == self.client.pool().limits() {
            next.client = next.client.with_pool(self.client.pool().clone());
        }
        match carried {
            None => next.cooldowns = self.cooldowns.clone(),
            Some(book) => next.cooldowns = Arc::new(Mutex::new(book)),
        }
        next
    }

    /// Whether this engine and `other` share deployment health (see [`Engine::successor`]).
    pub fn shares_health_with(&self, other: &Engine) -> bool {
        Arc::ptr_eq(&self.cooldowns, &other.cooldowns)
    }

    /// The upstream connections kept between attempts (shared with reloaded successors
    /// whose pool bounds are unchanged).
    pub fn upstream_pool(&self) -> &Pool {
        self.client.pool()
    }

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Records a request refused before admission (its access line, its count): `route` is
    /// the route's name, `none` for no route.
    pub fn note_refusal(&self, route: &'static str, status: u16, limit: Option<&'static str>) {
        if let Some(metrics) = &self.metrics {
            metrics.record_refusal(route, status, limit);
        }
        crate::decision_log::refused_line(route, status, limit);
    }

    /// Records a connection closed unanswered past `max_connections` and
    /// `max_overflow_connections` (`switchback_connections_dropped_total`).
    pub fn note_dropped_connection(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.record_dropped_connection();
        }
    }

    /// Records a client that left before its request was admitted (in the middle of its
    /// body): its access line and `switchback_client_disconnects_total`, never a refusal,
    /// since nobody receives an answer. `route` as for [`Engine::note_refusal`].
    pub fn note_client_gone(&self, route: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.record_client_gone_before_admission();
        }
        crate::decision_log::gone_line(route);
    }

    pub(crate) fn retry_policy(&self) -> &dyn RetryPolicy {
        self.retry_policy.as_ref()
    }

    /// When the engine started, in Unix seconds (from the injected wall clock).
    pub fn started_at_unix(&self) -> u64 {
        self.started_unix
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The catalog, shared (for whoever keeps it beyond this engine: the simulation's
    /// record of which config each request was admitted with).
    pub fn shared_catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    pub(crate) fn wall_now(&self) -> SystemTime {
        self.wall.now()
    }

    /// The shared deployment health, with every effect from before `now` settled (see
    /// [`CooldownBook`] for why effects of the same instant wait). A cooldown that settling
    /// found and no request reported is traced here, on the request it names.
    pub(crate) fn health(&self, now: Instant) -> std::sync::MutexGuard<'_, CooldownBook> {
        let mut book = self.cooldowns.lock().expect("cooldown lock poisoned");
        book.settle(now);
        for u in book.take_unreported() {
            self.emit(
                u.request,
                Event::DeploymentCooled {
                    deployment: u.cooled.deployment,
                    duration: u.cooled.duration,
                    class: u.class,
                },
            );
        }
        book
    }

    /// Remaining cooldown of every deployment, in catalog order.
    pub fn cooldown_snapshot(&self) -> Vec<Duration> {
        let book = self.cooldowns.lock().expect("cooldown lock poisoned");
        book.remaining(Instant::now())
    }

    /// Every deployment's id and remaining cooldown (zero when healthy), in catalog order.
    pub fn cooling(&self) -> Vec<(String, Duration)> {
        self.catalog
            .deployments
            .iter()
            .zip(self.cooldown_snapshot())
            .map(|(d, left)| (d.id.clone(), left))
            .collect()
    }

    pub(crate) fn tracing(&self) -> bool {
        self.observer.enabled()
    }

    pub(crate) fn emit(&self, request: u64, event: Event) {
        if self.observer.enabled() {
            let record = TraceRecord {
                at: Instant::now().saturating_duration_since(self.started),
                request,
                event,
            };
            self.observer.record(record, &self.catalog);
        }
    }

    /// The key a bearer token names: `Ok(None)` for an anonymous request (only when the
    /// config allows them). Checked before a request body is read, so an unknown key costs
    /// the gateway nothing.
    pub fn authenticate(&self, bearer: Option<&str>) -> Result<Option<&KeySpec>, ApiError> {
        let catalog = &*self.catalog;
        if !catalog.has_keys() {
            // Validation refuses a config without keys unless `allow_anonymous` is set.
            return Ok(None);
        }
        match bearer {
            Some(token) => catalog
                .key(token)
                .map(Some)
                .ok_or_else(|| ApiError::unauthorized("unknown API key")),
            None if catalog.allow_anonymous => Ok(None),
            None => Err(ApiError::unauthorized(
                "missing API key: send `Authorization: Bearer <virtual key>`",
            )),
        }
    }

    /// Authenticates, parses and plans a request. `bearer` is the token after `Bearer `.
    pub fn admit(&self, bearer: Option<&str>, body: &[u8]) -> Result<Admitted, ApiError> {
        self.admit_as(bearer, body, None)
    }

    /// [`Engine::admit`] for the group `model` when the request's path names one (see
    /// [`ChatRequest::parse_as`]).
    pub fn admit_as(
        &self,
        bearer: Option<&str>,
        body: &[u8],
        model: Option<&str>,
    ) -> Result<Admitted, ApiError> {
        self.admit_within(bearer, body, model, |_| Ok(()))
    }

    /// [`Engine::admit_as`], with `afford` asked, once the request is parsed and before
    /// anything of it is recorded, whether the gateway can hold it (its parsed size against
    /// the budget of bodies in flight, see `gateway::routes`).
    pub fn admit_within(
        &self,
        bearer: Option<&str>,
        body: &[u8],
        model: Option<&str>,
        afford: impl FnOnce(&ChatRequest) -> Result<(), ApiError>,
    ) -> Result<Admitted, ApiError> {
        let catalog = &*self.catalog;
        let key = self.authenticate(bearer)?;
        let request =
            ChatRequest::parse_as(body, &catalog.limits, model).map_err(ApiError::from)?;
        afford(&request)?;
        if let Some(class) = request.mock.filter(|_| !catalog.allow_mock_flags) {
            let flag = crate::request::mock_flag(class);
            return Err(ApiError::bad_request(format!(
                "`{flag}` is refused: this gateway does not take mock_testing_* flags (set \
                 general_settings.dangerously_allow_mock_testing_request_params: true in its \
                 config to test fallbacks with them)"
            ))
            .param(Some(flag.into())));
        }
        if let Some(d) = catalog.wildcard_deployment(&request.model) {
            return Err(wildcard_id_refused(catalog, key, &request.model, d));
        }
        let routed = catalog.route(&request.model).ok_or_else(|| {
            // A key restricted to some models learns nothing of the others: a name it may
            // not use is refused alike whether a group serves it or not, as LiteLLM checks a
            // key's models before its router looks the name up.
            if key.is_some_and(|k| !k.admits_name(&request.model)) {
                return ApiError::forbidden(format!(
                    "this key may not use model `{}`",
                    echoed(&request.model)
                ));
            }
            ApiError::not_found(format!(
                "model `{}` is not a model group of this gateway",
                echoed(&request.model)
            ))
            .code("model_not_found")
            .param(Some("model".into()))
        })?;
        let group = routed.group;
        let allowed = key
            .map(|k| k.allowed.clone())
            .unwrap_or_else(|| catalog.all_allowed());
        if !permitted(key, &allowed, &routed, &request.model) {
            return Err(ApiError::forbidden(format!(
                "this key may not use model `{}`",
                echoed(&request.model)
            )));
        }
        let mut problem = None;
        let (groups, wildcard_ids): (Vec<&str>, _) =
            if request.settings == RouterSettings::default() {
                (Vec::new(), Vec::new())
            } else {
                // Only the groups the key may use can be named: one it may not reads as
                // no group at all, so that a restricted key cannot list the others by
                // naming them in its settings (as for its `model`, above).
                let visible = |name: &str| {
                    catalog
                        .group_id(name)
                        .is_some_and(|g| allowed[g.0 as usize])
                };
                (
                    catalog
                        .groups
                        .iter()
                        .map(|g| g.name.as_str())
                        .filter(|name| visible(name))
                        .collect(),
                    catalog
                        .wildcard_ids()
                        .into_iter()
                        .filter(|(_, group)| visible(group))
                        .collect(),
                )
            };
        check_settings_fields(
            &request.settings,
            &At::default(),
            &groups,
            &wildcard_ids,
            &catalog.limits,
            &mut |at, message| {
                problem.get_or_insert((crate::yaml::render_path(&at.0), message));
            },
        );
        if let Some((param, message)) = problem {
            return Err(ApiError::bad_request(format!("`{param}`: {message}")).param(Some(param)));
        }
        let request_overrides = catalog
            .overrides(&request.settings)
            .map_err(ApiError::bad_request)?;
        let team = key.and_then(|k| k.team).map(|t| &catalog.team(t).overrides);
        let settings = Levels {
            request: Some(&request_overrides),
            key: key.map(|k| &k.overrides),
            team,
            gateway: &catalog.gateway,
        }
        .resolve(&catalog.limits);
        let plan = match routed.wildcard {
            None => FallbackPlan::new(group, Arc::new(settings), allowed),
            Some(served) => {
                let alias = catalog.group_id(&request.model);
                FallbackPlan::for_wildcard(group, served, Arc::new(settings), allowed)
                    .with_primary_alias(alias)
            }
        };
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted {
            id,
            key_alias: key
                .map(|k| k.alias.clone())
                .unwrap_or_else(|| "anonymous".into()),
            request,
            plan,
            admitted_at: Instant::now(),
            client_timeout: None,
        };
        if self.tracing() {
            self.emit(
                id,
                Event::Admitted {
                    key: admitted.key_alias.clone(),
                    group,
                    stream: admitted.request.stream,
                },
            );
            let s = &admitted.plan.settings;
            self.emit(
                id,
                Event::PlanResolved {
                    chain: admitted.plan.generic_chain(),
                    fallbacks_from: s.fallbacks.from,
                    max_fallbacks: s.max_fallbacks.value,
                    mid_stream: s.mid_stream.value,
                },
            );
        }
        Ok(admitted)
    }

    /// Runs the request's attempts, delivering the answer through `out`.
    pub async fn execute<D: Delivery>(&self, admitted: &Admitted, out: &mut D) -> Outcome {
        attempt::run(self, admitted, out).await
    }
}

/// Whether the key may call `name`, which `routed` serves: a group's name by the key's
/// allow-list of groups; a name a wildcard group serves checked itself against the key's
/// lists, as LiteLLM checks the requested model (see `KeySpec::admits_name`).
fn permitted(key: Option<&KeySpec>, allowed: &[bool], routed: &Routed, name: &str) -> bool {
    match &routed.wildcard {
        None => allowed[routed.group.0 as usize],
        Some(_) => key.is_none_or(|k| k.admits_name(name)),
    }
}

impl Engine {
    /// Whether `name` is a model this key may ask for, as `GET /v1/models/{id}` answers:
    /// a model group it may use, or a name a wildcard group serves that its lists admit.
    /// A deployment id is callable but names no model: not one, nor is the id of a
    /// wildcard deployment, which chat refuses.
    pub fn is_model_for(&self, key: Option<&KeySpec>, name: &str) -> bool {
        let catalog = &*self.catalog;
        // The id of a deployment whose `model` has a `*` is refused by chat, whatever
        // pattern would match it (see `wildcard_id_refused`).
        if catalog.wildcard_deployment(name).is_some() {
            return false;
        }
        let Some(routed) = catalog.route(name) else {
            return false;
        };
        let allowed = key
            .map(|k| k.allowed.clone())
            .unwrap_or_else(|| catalog.all_allowed());
        catalog.pinned(routed.group).is_none() && permitted(key, &allowed, &routed, name)
    }
}

/// The answer to a request whose `model` is the id of deployment `d`, whose `model` has a
/// `*` (see [`Catalog::wildcard_deployment`]). A key that may not use the deployment is
/// told only that, as for any model it may not use; any other gets a 400 saying why the id
/// cannot be called and what to ask for instead.
fn wildcard_id_refused(
    catalog: &Catalog,
    key: Option<&KeySpec>,
    name: &str,
    d: crate::catalog::DeploymentId,
) -> ApiError {
    let group = catalog.deployment(d).group;
    let permitted = key.is_none_or(|k| k.allowed[group.0 as usize] || k.admits_name(name));
    if !permitted {
        return ApiError::forbidden(format!("this key may not use model `{}`", echoed(name)));
    }
    let why = crate::config::wildcard_id_why(&catalog.group(group).name);
    ApiError::bad_request(format!(
        "model `{}` is the id of a deployment: {why}",
        echoed(name)
    ))
    .param(Some("model".into()))
}
