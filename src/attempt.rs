//! The ONE attempt loop, shared by streaming and non-streaming requests.
//!
//! Owns: walking a request's [`FallbackPlan`]: choosing a deployment, calling it, reading its
//! answer chunk by chunk, deciding on commit, classifying failures, cooling deployments,
//! retrying inside a group, falling back to the next group, applying the `mid_stream`
//! policy, and emitting a trace event for every decision.
//!
//! The loop does not know the client's mode. The [`Delivery`] it is given does: a
//! streaming delivery writes chunks to the client as they come, an aggregating one merges
//! them into one JSON body. Everything else is the same in both modes, by construction:
//! the upstream request of every attempt (built here from the plan, the deployment and the
//! [`CommitState`], never from the client's mode), the commit point (the first chunk with
//! content, or the pre-commit buffer limit), and what happens after a failure past commit:
//! under `mid_stream: error` the request ends; under `continue` the next attempt is asked to
//! continue the text delivered so far, in both modes, so the upstream traffic of the two
//! modes is identical byte for byte, and the non-streaming answer is the same text the
//! streaming client gets. Only text of a single choice can be continued; any other answer
//! (tool calls, several choices, audio, reasoning, logprobs) ends as under `error`.

use std::future::Future;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tokio::time::Instant;

use crate::accumulate::ToolCallCount;
use crate::catalog::{Catalog, DeploymentId, GroupId};
use crate::classify::{Blame, Failure, FailureClass, FallbackRoute, TimeoutKind};
use crate::client_timeout::{self, ClientTimeout};
use crate::commit::{CommitState, Next};
use crate::config::MidStreamPolicy;
use crate::engine::{Admitted, Engine};
use crate::limits::LimitExceeded;
use crate::policy::EffectiveSettings;
use crate::request::{Continuation, UpstreamCall};
use crate::route::select::{self, Choice, Tiers};
use crate::route::{self, GiveUp, RetryContext, RetryDecision};
use crate::seam::{Seam, SeamGuard};
use crate::secret::Secret;
use crate::trace::Event;
use crate::upstream::chunk::{CONTENT_FILTER, Chunk, ChunkLimits, Payload, from_object};
use crate::upstream::chunk_object::ChunkObject;
use crate::upstream::client::{AttemptTimeouts, Call, UpstreamError};

/// The client can no longer receive the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientGone(pub GoneReason);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// It closed its connection.
    Left,
    /// It stopped reading: a write waited past `client_write_timeout` or the deadline.
    TooSlow,
}

impl GoneReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GoneReason::Left => "left",
            GoneReason::TooSlow => "too_slow",
        }
    }
}

/// What the client is told at commit.
#[derive(Debug, Clone)]
pub struct CommitHead {
    pub group: String,
    pub deployment: String,
    pub retries: u32,
    pub fallbacks: u32,
    /// The `id` of the response and of every chunk.
    pub response_id: String,
    /// The committing attempt's headers on the
    /// [`FORWARDED_HEADERS`](crate::upstream::client::FORWARDED_HEADERS) list.
    pub upstream_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// How an answer reaches the client. The loop calls these in order: `commit` once, then
/// `chunk` for every chunk of the committed answer, and `restart` before an attempt that
/// continues the answer after a failure past commit.
pub trait Delivery: Send {
    fn commit(&mut self, head: CommitHead) -> impl Future<Output = Result<(), ClientGone>> + Send;
    /// A chunk, already stamped (see [`CommitState::stamp_and_record`]).
    fn chunk(&mut self, chunk: Chunk) -> impl Future<Output = Result<(), ClientGone>> + Send;
    /// Resolves when the client has gone away, so the loop stops at once instead of
    /// calling upstreams for no one. Watched while waiting on an upstream or a backoff.
    fn gone(&mut self) -> impl Future<Output = GoneReason> + Send;
    /// The attempt that failed is superseded: what it sent past its last content (a
    /// finish chunk, usage) is not the answer's end any more.
    fn restart(&mut self);
    /// An answer that has begun failed, and the loop now waits on its own account until it
    /// delivers again (a backoff or Retry-After, a continuation's connect and first byte,
    /// or the end): a stream keeps its client's connection alive meanwhile, since the
    /// client hears nothing of the wait. A provider's own silence is not this.
    fn waiting(&mut self) {}
    /// What keeps a stream's client alive while its provider keeps the upstream stream
    /// alive with bytes that are no chunk (SSE comments while it thinks): a provider that
    /// talks is not silent (see [`crate::frames::Liveness`]). None for a non-stream client.
    fn liveness(&self) -> Option<crate::frames::Liveness> {
        None
    }
    /// The answer's end, after the loop and before its last event: whatever the delivery
    /// still holds (a stream's held finish chunk and `[DONE]`, or its error event). A client
    /// that goes here is gone as anywhere else: the request is `client_gone`, never
    /// `completed` for an answer whose end it did not get. Not called when the loop already
    /// saw the client go.
    fn conclude(
        &mut self,
        outcome: &Outcome,
        catalog: &Catalog,
    ) -> impl Future<Output = Result<(), ClientGone>> + Send;
}

/// One attempt, as the equivalence check compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRecord {
    pub group: GroupId,
    pub deployment: DeploymentId,
    /// `None` for the attempt that served the answer.
    pub failure: Option<FailureClass>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub group: GroupId,
    pub deployment: DeploymentId,
    /// The `model` of the serving deployment's last chunk.
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    pub failure: Failure,
    /// What was tried, for the client's error message.
    pub summary: String,
}

impl Unserved {
    /// The end of a request whose client left: no one reads it.
    fn client_went_away() -> Unserved {
        Unserved {
            failure: Failure::new(FailureClass::Transient, "client went away"),
            summary: String::new(),
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: Result<Served, Unserved>,
    pub attempts: Vec<AttemptRecord>,
    pub retries: u32,
    pub fallbacks: u32,
    pub committed: bool,
    /// Retries and fallbacks counted at commit (what the response headers said).
    pub at_commit: Option<(u32, u32)>,
    pub client_gone: bool,
    /// The response's `id`, once committed.
    pub response_id: Option<String>,
}

enum AttemptError {
    Failed {
        failure: Failure,
        after_chunks: u32,
        timeout: Option<TimeoutKind>,
    },
    ClientGone(GoneReason),
}

/// Why the walk stopped without an answer.
enum Stop {
    Unserved(Unserved),
    ClientGone,
}

/// The mutable state of one request's run.
struct Run<'a> {
    engine: &'a Engine,
    admitted: &'a Admitted,
    catalog: &'a Catalog,
    settings: &'a EffectiveSettings,
    rng: ChaCha8Rng,
    /// The deadline in force: the request's, or before its response begins the client's
    /// own wait when that is sooner (see `client_timeout`).
    deadline: Instant,
    /// The request's own deadline (`request_deadline` after admission).
    request_deadline: Instant,
    attempts: Vec<AttemptRecord>,
    retries: u32,
    fallbacks: u32,
    at_commit: Option<(u32, u32)>,
    commit: CommitState,
    /// What the next attempt continues, after a failure past commit under `continue`.
    ask: Option<(String, Option<u64>)>,
    /// `num_retries_per_request` stopped a retry or fallback (traced once).
    capped: bool,
}

pub(crate) async fn run<D: Delivery>(engine: &Engine, admitted: &Admitted, out: &mut D) -> Outcome {
    let catalog = engine.catalog();
    let request_deadline = admitted.admitted_at + catalog.limits.request_deadline();
    let mut run = Run {
        engine,
        admitted,
        catalog,
        settings: &admitted.plan.settings,
        rng: ChaCha8Rng::seed_from_u64(request_seed(catalog.settings.rng_seed, admitted.id)),
        deadline: admitted
            .client_timeout
            .as_ref()
            .map_or(request_deadline, |c| c.respond_by.min(request_deadline)),
        request_deadline,
        attempts: Vec::new(),
        retries: 0,
        fallbacks: 0,
        at_commit: None,
        commit: CommitState::new(),
        ask: None,
        capped: false,
    };
    // The walk has emitted `client_gone` already when the client left; every other end
    // gets exactly one final event here.
    // Awaited before the match, not in its scrutinee: there, rustc kept room for the walk's
    // state twice in this future (6,000 bytes instead of 3,300, for every request in flight).
    let walked = run.walk(out).await;
    let (result, client_gone) = match walked {
        Ok(served) => (Ok(served), false),
        Err(Stop::Unserved(unserved)) => (Err(unserved), false),
        Err(Stop::ClientGone) => (Err(Unserved::client_went_away()), true),
    };
    let mut outcome = Outcome {
        result,
        attempts: std::mem::take(&mut run.attempts),
        retries: run.retries,
        fallbacks: run.fallbacks,
        committed: run.commit.is_committed(),
        at_commit: run.at_commit,
        client_gone,
        response_id: run.commit.response_id().map(str::to_string),
    };
    if client_gone {
        return outcome;
    }
    // The last event waits for the answer's end to be out: what the trace, the log and the
    // metrics call `completed` is an answer the client was handed whole.
    if let Err(ClientGone(reason)) = out.conclude(&outcome, catalog).await {
        // A write that found no room by the request's deadline was cut by the deadline
        // (no write waits past it), which says nothing of the client: the request ends
        // as it would have.
        let cut_by_deadline = reason == GoneReason::TooSlow && Instant::now() >= run.deadline;
        if !cut_by_deadline {
            run.emit(Event::ClientGone { reason });
            outcome.result = Err(Unserved::client_went_away());
            outcome.client_gone = true;
            return outcome;
        }
    }
    match &outcome.result {
        Ok(served) => run.emit(Event::Completed {
            group: served.group,
            deployment: served.deployment,
            model: served.model.clone(),
            retries: run.retries,
            fallbacks: run.fallbacks,
            chunks: run.commit.delivered(),
        }),
        Err(unserved) => run.emit(Event::Failed {
            status: unserved.failure.client_status(),
            error_type: unserved.failure.client_error_type(),
            class: unserved.failure.class,
            committed: run.commit.is_committed(),
        }),
    }
    outcome
}

/// A distinct, reproducible random stream per request (SplitMix64 of seed and number).
fn request_seed(seed: u64, request: u64) -> u64 {
    let mut z = seed ^ request.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Run<'_> {
    fn emit(&self, event: Event) {
        self.engine.emit(self.admitted.id, event);
    }

    /// Walks groups until an attempt serves the answer or the plan is exhausted.
    async fn walk<D: Delivery>(&mut self, out: &mut D) -> Result<Served, Stop> {
        let plan = &self.admitted.plan;
        let mut walk = plan.walk();
        let mut group = plan.primary;
        let mut mock = self.admitted.request.mock;
        let mut last: Option<Failure> = None;
        let fallback_on_bad_request = self.catalog.settings.fallback_on_bad_request;
        loop {
            let mut route = FallbackRoute::Generic;
            let mut next = match self.enter(group) {
                Ok(d) => Some(d),
                Err(failure) => {
                    last = Some(failure);
                    None
                }
            };
            let mut tried: Vec<DeploymentId> = Vec::new();
            // The `order` tier the request is in; retries stay inside it (a wildcard
            // group's follow health instead, and this follows the deployment retried).
            let mut tier = next.map_or(0, |d| self.catalog.deployment(d).order);
            let mut retries_here = 0;
            // The first deployment that failed in this tier: its own `num_retries`, if it
            // sets one, is the tier's retry budget (see `EffectiveSettings::retries_in`).
            let mut first_failed: Option<DeploymentId> = None;
            while let Some(deployment) = next.take() {
                if let Some(limit) = self.limit_reached() {
                    self.emit(Event::LimitHit { limit });
                    let failure = last.take().unwrap_or_else(|| self.limit_failure(limit));
                    return Err(Stop::Unserved(self.unserved(failure, &walk)));
                }
                tried.push(deployment);
                let attempt = self.attempts.len() as u32 + 1;
                self.emit(Event::AttemptStarted {
                    attempt,
                    group,
                    deployment,
                    continuation: self.ask.is_some(),
                });
                let mocked = mock.take();
                let result = match mocked {
                    Some(class) => Err(AttemptError::Failed {
                        failure: Failure::new(
                            class,
                            format!("mocked by {}", crate::request::mock_flag(class)),
                        ),
                        after_chunks: 0,
                        timeout: None,
                    }),
                    None => {
                        let content_policy_fails = self.content_policy_would_route(&walk, group)
                            && self.attempts.len() as u32 + 1 < self.catalog.limits.max_attempts;
                        self.attempt(group, deployment, content_policy_fails, out)
                            .await
                    }
                };
                let (failure, after_chunks, timeout) = match result {
                    Ok(served) => {
                        let (id, now) = (self.admitted.id, Instant::now());
                        self.engine.health(now).record_success(deployment, now, id);
                        self.attempts.push(AttemptRecord {
                            group,
                            deployment,
                            failure: None,
                        });
                        return Ok(served);
                    }
                    Err(AttemptError::ClientGone(reason)) => {
                        self.emit(Event::ClientGone { reason });
                        return Err(Stop::ClientGone);
                    }
                    Err(AttemptError::Failed {
                        failure,
                        after_chunks,
                        timeout,
                    }) => (failure, after_chunks, timeout),
                };
                self.attempts.push(AttemptRecord {
                    group,
                    deployment,
                    failure: Some(failure.class),
                });
                self.emit(Event::AttemptFailed {
                    attempt,
                    deployment,
                    class: failure.class,
                    status: failure.status,
                    retry_after: failure.retry_after,
                    after_chunks,
                    mocked: mocked.is_some(),
                    timeout,
                });
                let now = Instant::now();
                if mocked.is_some() {
                    // A mock says nothing about the deployment.
                } else if failure.blame != Blame::Deployment {
                    self.emit(Event::FailureNotCounted {
                        deployment,
                        reason: failure.blame,
                    });
                } else {
                    let cooled = self.engine.health(now).record_failure(
                        deployment,
                        &failure,
                        now,
                        &self.catalog.settings,
                        self.admitted.id,
                    );
                    if let Some(c) = cooled {
                        self.emit(Event::DeploymentCooled {
                            deployment,
                            duration: c.duration,
                            class: failure.class,
                        });
                    }
                }
                if self.commit.is_committed() {
                    out.waiting();
                    if self.settings.mid_stream.value == MidStreamPolicy::Error {
                        return Err(Stop::Unserved(self.unserved(failure, &walk)));
                    }
                    let budget = self.admitted.request.token_budget();
                    match self.commit.after_failure(
                        budget,
                        self.catalog.limits.max_upstream_body_bytes,
                        self.admitted.request.unfit_for_continuation(),
                    ) {
                        Next::Stop(reason) => {
                            self.emit(Event::ContinuationRefused { reason });
                            return Err(Stop::Unserved(self.unserved(failure, &walk)));
                        }
                        Next::Spent { model } => {
                            let model = model.unwrap_or_else(|| {
                                self.catalog.deployment(deployment).upstream_model.clone()
                            });
                            self.emit(Event::EndedAtBudget { attempt });
                            let finish = match failure.class {
                                FailureClass::ContentPolicy => CONTENT_FILTER,
                                _ => "length",
                            };
                            // Boxed, as `end_at_seam`: a rare ending, kept out of the
                            // room every stream's task holds for its whole life.
                            return match Box::pin(self.end_at_budget(&model, finish, out)).await {
                                Ok(()) => Ok(Served {
                                    group,
                                    deployment,
                                    model,
                                }),
                                Err(AttemptError::ClientGone(reason)) => {
                                    self.emit(Event::ClientGone { reason });
                                    Err(Stop::ClientGone)
                                }
                                Err(AttemptError::Failed { .. }) => {
                                    unreachable!("delivering fails only when the client is gone")
                                }
                            };
                        }
                        Next::Fresh => self.ask = None,
                        Next::Continue {
                            prefix,
                            tokens_left,
                        } => self.ask = Some((prefix, tokens_left)),
                    }
                }
                let tier_first = *first_failed.get_or_insert(deployment);
                let order_route = failure.class.actions(fallback_on_bad_request).fallback;
                let order_fallback_possible = self.order_fallback_open(group, order_route, &walk);
                let cx = RetryContext {
                    group,
                    failure: &failure,
                    // A fallback to a deployment id is one call: LiteLLM retries a
                    // model group by its deployments, and an id names none
                    // (`router.py`, `Router.should_retry_this_error` raises when the
                    // name has no healthy deployments to retry on). `probe --against`
                    // on `parity/fallback_to_deployment_id.yaml` shows it.
                    retries_allowed: if self.catalog.pinned(group).is_some() {
                        0
                    } else {
                        self.settings.retries_in(
                            failure.class,
                            Some(group),
                            self.catalog.deployment(tier_first).num_retries,
                        )
                    },
                    retries_used: retries_here,
                    mocked: mocked.is_some(),
                    committed: self.commit.is_committed(),
                    tried: &tried,
                    tier,
                    retries_follow_health: self.serves_a_wildcard(group),
                    order_fallback_possible,
                    now,
                    deadline: self.deadline,
                    max_wait: self.catalog.limits.max_retry_after(),
                    backoff_base: self.catalog.settings.retry_backoff_base,
                    backoff_max: self.catalog.settings.retry_backoff_max,
                };
                let decision = {
                    let health = self.engine.health(now);
                    let book = health.view(self.admitted.id, now);
                    self.engine
                        .retry_policy()
                        .decide(&cx, self.catalog, &book, &mut self.rng)
                };
                match decision {
                    RetryDecision::Retry { .. } if self.cap_hit() => {
                        return Err(Stop::Unserved(self.unserved(failure, &walk)));
                    }
                    // The retry's attempt could not be made: end now, not after its backoff
                    // (which would count a retry never made).
                    RetryDecision::Retry { .. } if self.attempts_spent() => {
                        self.emit(Event::LimitHit {
                            limit: "max_attempts",
                        });
                        return Err(Stop::Unserved(self.unserved(failure, &walk)));
                    }
                    RetryDecision::Retry { deployment, delay } => {
                        self.emit(Event::RetryScheduled {
                            group,
                            deployment,
                            delay,
                        });
                        tokio::select! {
                            biased;
                            reason = out.gone() => {
                                self.emit(Event::ClientGone { reason });
                                return Err(Stop::ClientGone);
                            }
                            () = tokio::time::sleep(delay) => {}
                        }
                        retries_here += 1;
                        self.retries += 1;
                        let to = self.retry_target(&cx, deployment);
                        // A wildcard group's retry may go to another tier (see
                        // `RetryContext::retries_follow_health`).
                        tier = self.catalog.deployment(to).order;
                        next = Some(to);
                    }
                    RetryDecision::GiveUp(reason) => {
                        self.emit(Event::GroupExhausted { group, reason });
                        route = order_route;
                        if let Some(d) =
                            self.order_fallback(group, tier, route, failure.class, &mut walk)
                        {
                            tier = self.catalog.deployment(d).order;
                            retries_here = 0;
                            first_failed = None;
                            next = Some(d);
                        }
                    }
                }
                last = Some(failure);
            }
            // A mock flag fails the primary group's attempt and nothing else. The primary
            // may be left without one (every deployment cooling, a limit reached): the
            // flag is spent all the same, or it would fail the first fallback instead.
            mock = None;
            let failure = last.clone().expect("a group is left only after a failure");
            // No fallback is taken (or counted) that could not be attempted.
            if let Some(limit) = self.limit_reached() {
                self.emit(Event::LimitHit { limit });
                return Err(Stop::Unserved(self.unserved(failure, &walk)));
            }
            walk.group_failed(group, route);
            let mut skipped = Vec::new();
            let link = walk.next(&mut |link, reason| skipped.push((link, reason)));
            for (link, reason) in skipped {
                self.emit(Event::LinkSkipped {
                    from: link.from,
                    to: link.to,
                    list: link.list,
                    reason,
                });
            }
            match link {
                Some(_) if self.cap_hit() => {
                    return Err(Stop::Unserved(self.unserved(failure, &walk)));
                }
                Some(link) => {
                    self.emit(Event::FallbackTaken {
                        from: link.from,
                        to: link.to,
                        list: link.list,
                        class: failure.class,
                    });
                    self.fallbacks += 1;
                    group = link.to;
                }
                None => return Err(Stop::Unserved(self.unserved(failure, &walk))),
            }
        }
    }

    /// The deployment a scheduled retry goes to once its backoff is over: the one planned,
    /// unless another request cooled it meanwhile (see [`route::reroute_after_backoff`]).
    fn retry_target(&mut self, cx: &RetryContext<'_>, planned: DeploymentId) -> DeploymentId {
        let now = Instant::now();
        let rerouted = {
            let health = self.engine.health(now);
            let book = health.view(self.admitted.id, now);
            let cx = RetryContext { now, ..*cx };
            route::reroute_after_backoff(&cx, planned, self.catalog, &book, &mut self.rng)
        };
        let Some(to) = rerouted else {
            return planned;
        };
        self.emit(Event::RetryRerouted {
            group: cx.group,
            from: planned,
            to,
        });
        to
    }

    /// LiteLLM's order-based fallback: when the request's `order` tier of `group` is spent,
    /// the group's next tier with a healthy deployment takes over, with a retry budget of its
    /// own, before the group's fallbacks; it is traced and counted as a fallback
    /// (`litellm/router.py`, `Router.async_function_with_fallbacks_common_utils`, which
    /// prepends `{"model": group, "_target_order": o}` entries for the higher orders to the
    /// fallback list). Tiers whose every deployment is cooling are passed over; none left,
    /// or no fallback allowed (see [`crate::plan::PlanWalk::order_fallback_allowed`]), and
    /// the group is done. No fallback is taken that could not be attempted (a limit
    /// reached).
    fn order_fallback(
        &mut self,
        group: GroupId,
        tier: u32,
        route: FallbackRoute,
        class: FailureClass,
        walk: &mut crate::plan::PlanWalk<'_>,
    ) -> Option<DeploymentId> {
        if !self.order_fallback_open(group, route, walk) || self.limit_reached().is_some() {
            return None;
        }
        let now = Instant::now();
        let choice = {
            let health = self.engine.health(now);
            let book = health.view(self.admitted.id, now);
            select::choose_in(
                self.catalog,
                group,
                Tiers::Above(tier),
                &book,
                now,
                &[],
                &mut self.rng,
            )
        };
        let Some(Choice::Now(d)) = choice else {
            return None;
        };
        if self.cap_hit() {
            return None;
        }
        walk.order_fallback_taken();
        self.fallbacks += 1;
        self.emit(Event::OrderFallbackTaken {
            group,
            from_order: tier,
            to_order: self.catalog.deployment(d).order,
            class,
        });
        Some(d)
    }

    /// The first deployment of a group. A group whose every deployment is cooling is
    /// skipped at once, without an upstream call, as a rate-limit failure carrying the time
    /// until the first deployment recovers (LiteLLM does the same). New requests never queue
    /// behind a cooldown; only a retry that honours a Retry-After waits (see `route`).
    fn enter(&mut self, group: GroupId) -> Result<DeploymentId, Failure> {
        let now = Instant::now();
        let choice = {
            let health = self.engine.health(now);
            let book = health.view(self.admitted.id, now);
            select::choose(self.catalog, group, &book, now, &[], &mut self.rng)
        };
        match choice {
            Choice::Now(d) => Ok(d),
            Choice::After(_, wait) => {
                self.emit(Event::GroupExhausted {
                    group,
                    reason: GiveUp::AllCooling(wait),
                });
                let mut f = Failure::new(
                    FailureClass::RateLimited,
                    format!(
                        "every deployment of `{}` is cooling down (the first recovers in {} ms)",
                        self.catalog.group(group).name,
                        wait.as_millis()
                    ),
                );
                f.retry_after = Some(wait);
                Err(f)
            }
        }
    }

    /// Whether a `finish_reason: content_filter` from `group` would be routed around (see
    /// [`crate::plan::PlanWalk::content_policy_would_route`]), a group being able to serve
    /// when a deployment of it is not cooling, as this request sees the health now.
    fn content_policy_would_route(&self, walk: &crate::plan::PlanWalk<'_>, group: GroupId) -> bool {
        // Each link the walk takes counts against `num_retries_per_request`, a group
        // skipped while cooling included (see `cap_spent`).
        let links_allowed = self
            .settings
            .num_retries_per_request
            .value
            .map_or(u32::MAX, |cap| {
                cap.saturating_sub(self.retries + self.fallbacks)
            });
        let now = Instant::now();
        let health = self.engine.health(now);
        let book = health.view(self.admitted.id, now);
        walk.content_policy_would_route(group, links_allowed, &mut |g| {
            select::has_healthy(self.catalog, g, Tiers::Any, &book, now)
        })
    }

    /// Whether `group`'s higher tiers may take over from a spent one at all: the plan allows
    /// the fallback (see [`crate::plan::PlanWalk::order_fallback_allowed`]) and the group is
    /// not a wildcard's. LiteLLM builds order-based fallbacks from the deployments of the
    /// requested name (`Router._get_all_deployments(model_name=...)`), and a name a wildcard
    /// group serves has none: its tiers never fall back to one another.
    fn order_fallback_open(
        &self,
        group: GroupId,
        route: FallbackRoute,
        walk: &crate::plan::PlanWalk<'_>,
    ) -> bool {
        walk.order_fallback_allowed(route) && !self.serves_a_wildcard(group)
    }

    /// Whether `group` serves this request as a wildcard group: the request's own name
    /// through a pattern, or a fallback target a pattern serves. Its tiers never fall back
    /// to one another, and its retries go to the lowest tier with a healthy deployment.
    fn serves_a_wildcard(&self, group: GroupId) -> bool {
        (self.admitted.plan.wildcard().is_some() && group == self.admitted.plan.primary)
            || self.catalog.wildcard_target(group).is_some()
    }

    /// Whether the request has made every retry and fallback `num_retries_per_request`
    /// allows (order-based fallbacks and groups skipped while cooling count as fallbacks),
    /// so the next one is not made. Traced once, as `limit_hit`.
    fn cap_hit(&mut self) -> bool {
        let spent = self.cap_spent();
        if spent && !self.capped {
            self.capped = true;
            self.emit(Event::LimitHit {
                limit: "num_retries_per_request",
            });
        }
        spent
    }

    /// [`Self::cap_hit`] without tracing it.
    fn cap_spent(&self) -> bool {
        self.settings
            .num_retries_per_request
            .value
            .is_some_and(|cap| self.retries + self.fallbacks >= cap)
    }

    /// Whether the request has made the `max_attempts` attempts it may.
    fn attempts_spent(&self) -> bool {
        self.attempts.len() as u32 >= self.catalog.limits.max_attempts
    }

    fn limit_reached(&self) -> Option<&'static str> {
        if self.attempts_spent() {
            return Some("max_attempts");
        }
        if Instant::now() >= self.deadline {
            return Some(match self.client_timeout_in_force() {
                Some(_) => client_timeout::LIMIT,
                None => "request_deadline",
            });
        }
        None
    }

    /// The failure of a request whose `limit` was reached before any attempt.
    fn limit_failure(&self, limit: &'static str) -> Failure {
        let message = match self.client_timeout_in_force() {
            Some(client) => client.expired("before any attempt"),
            None => format!("limit `{limit}` reached before any attempt"),
        };
        Failure::new(FailureClass::Timeout, message)
    }

    /// The client's own wait, when it is what the deadline in force is.
    fn client_timeout_in_force(&self) -> Option<&ClientTimeout> {
        self.admitted
            .client_timeout
            .as_ref()
            .filter(|_| self.deadline < self.request_deadline)
    }

    /// The response has begun (it was committed): a streaming client's wait bounded only
    /// its beginning, so from here on the request's own deadline holds; true when that
    /// moved the deadline, which the attempt under way must then follow. A non-streaming
    /// client's answer begins only at its end: its wait bounds the whole.
    fn response_begun(&mut self) -> bool {
        if !self.admitted.request.stream || self.deadline == self.request_deadline {
            return false;
        }
        self.deadline = self.request_deadline;
        true
    }

    /// The timeouts of one attempt at `spec`, and who is to blame when one fires: a
    /// timeout tighter than what the deployment gets from the gateway's own settings was
    /// the request's (or its key's, or its team's) choice, and so is the request deadline.
    /// Also the attempt's end by its own `timeout` alone, before the request's deadline.
    fn timeouts(
        &self,
        spec: &crate::catalog::DeploymentSpec,
    ) -> (AttemptTimeouts, TimeoutBlame, Instant) {
        let settings = self.settings;
        let tighter = |own: Option<std::time::Duration>, set: std::time::Duration| {
            own.map_or(set, |t| t.min(set))
        };
        let timeout = tighter(spec.timeout, settings.timeout.value);
        let stream_timeout = tighter(spec.stream_timeout, settings.stream_timeout.value);
        let attempt_end = Instant::now() + timeout;
        let (gateway_timeout, gateway_stream_timeout) = self.catalog.gateway_timeouts;
        let blame = TimeoutBlame {
            attempt_tighter: timeout < tighter(spec.timeout, gateway_timeout),
            attempt_capped: self.deadline < attempt_end,
            stream: stream_timeout < tighter(spec.stream_timeout, gateway_stream_timeout),
        };
        // Only a `stream_timeout` someone set bounds the wait for the first output (see
        // `AttemptTimeouts::until_output`).
        let chosen = spec.stream_timeout.is_some()
            || settings.stream_timeout.from != crate::policy::Level::Default;
        let timeouts = AttemptTimeouts {
            stream_timeout,
            until_output: if chosen {
                stream_timeout
            } else {
                std::time::Duration::MAX
            },
            deadline: attempt_end.min(self.deadline),
            request_deadline: self.deadline,
        };
        (timeouts, blame, attempt_end)
    }

    /// A failed attempt, as the loop records it: classified (never a quota failure for
    /// words the request itself `sent`), blamed, with upstream text redacted and
    /// Retry-After capped by `max_cooldown`.
    fn failed(
        &self,
        spec: &crate::catalog::DeploymentSpec,
        e: UpstreamError,
        blame: TimeoutBlame,
        model_from_request: bool,
        after_chunks: u32,
        sent: &[u8],
    ) -> AttemptError {
        if let Some(limit) = e.limit() {
            self.emit(Event::LimitHit { limit });
        }
        let mut failure = e.classify(self.engine.wall_now()).unless_echoed(sent);
        if let Some(kind) = e.timeout_kind() {
            failure.blame = blame.of(kind);
            // An attempt's deadline moves on while its client holds the gateway up (see
            // `UpstreamStream::next`), and stops at the request's: one that fires there is
            // the request's, whatever the deployment's `timeout` was at the start.
            if kind == TimeoutKind::Attempt && Instant::now() >= self.deadline {
                failure.blame = Blame::RequestTimeout;
                if let Some(client) = self.client_timeout_in_force() {
                    failure.message = client.expired(&failure.message);
                }
            }
        }
        // Under a wildcard group the model is the client's own words: a provider that does
        // not know it says nothing of the deployment, which every tenant shares.
        if model_from_request && failure.class == FailureClass::NotFound {
            failure.blame = Blame::RequestedModel;
        }
        // Upstream text reaches the client: keep the deployment's secrets out of it, and
        // never promise a wait longer than the gateway would ever cool for.
        // Only the upstream's words: a deployment's id is the operator's, and may well
        // contain a placeholder key (`ollama-llama3` beside `api_key: ollama`).
        failure.message = format!(
            "deployment `{}`: {}",
            spec.id,
            self.catalog.redactor.redact(&failure.message)
        );
        if let Some(param) = &failure.param {
            // A field path by now (`classify`), yet a key may look like one.
            let redacted = self.catalog.redactor.redact(param);
            if redacted != *param {
                failure.param = None;
            }
        }
        let cap = self.catalog.limits.max_cooldown();
        failure.retry_after = failure.retry_after.map(|r| r.min(cap));
        AttemptError::Failed {
            failure,
            after_chunks,
            timeout: e.timeout_kind(),
        }
    }

    /// One call to one deployment, read to its end.
    ///
    /// `content_policy_fails`: a `finish_reason: content_filter` is a failure to route
    /// around (a content-policy fallback can still be taken), not the answer.
    async fn attempt<D: Delivery>(
        &mut self,
        group: GroupId,
        deployment: DeploymentId,
        content_policy_fails: bool,
        out: &mut D,
    ) -> Result<Served, AttemptError> {
        let spec = self.catalog.deployment(deployment);
        if self.commit.is_committed() {
            out.restart();
        }
        let prompt = self.catalog.settings.continuation_prompt.as_str();
        let continuation = self.ask.as_ref().map(|(prefix, tokens_left)| Continuation {
            prefix,
            instruction: prompt,
            tokens_left: *tokens_left,
        });
        // A wildcard group's deployment is called with a model made from the requested name.
        let from_request =
            self.admitted.plan.wildcard().is_some() && group == self.admitted.plan.primary;
        let served = match self.admitted.plan.wildcard() {
            Some(w) if from_request => Some(w),
            _ => self.catalog.wildcard_target(group),
        };
        let upstream_model = match served {
            Some(w) => std::borrow::Cow::Owned(w.upstream_model(spec)),
            None => std::borrow::Cow::Borrowed(spec.upstream_model.as_str()),
        };
        // The client chose the model only where the deployment's own has a `*` to fill: a
        // wildcard group may hold a deployment with a fixed model, whose 404 is its own.
        let from_request = from_request && spec.model_template.is_some();
        // A fallback reached through a request-level entry with its own `messages` sends
        // them (LiteLLM: `litellm/router_utils/fallback_event_handlers.py`,
        // `run_async_fallback`, `kwargs.update(entry)`; see `request::client_side_fallbacks`).
        let request = &self.admitted.request;
        let messages = if group == self.admitted.plan.primary {
            request.messages.as_slice()
        } else {
            request.messages_for(&self.catalog.group(group).name)
        };
        let (timeouts, mut blame, attempt_end) = self.timeouts(spec);
        let mut streamed = spec.stream;
        let (opened, body) = loop {
            let to = UpstreamCall {
                model: &upstream_model,
                stream: streamed,
                stream_options: spec.stream_options,
            };
            let body = request.upstream_body_with(&to, continuation.as_ref(), messages);
            let call = Call {
                endpoint: &spec.endpoint,
                model: &upstream_model,
                api_key: spec.api_key.as_ref().map(Secret::expose),
                body: &body,
                request_id: self.admitted.id,
                stream: streamed,
                ca_bundle: spec.ca_bundle.as_deref(),
            };
            let opened = tokio::select! {
                biased;
                reason = out.gone() => return Err(AttemptError::ClientGone(reason)),
                // Boxed: opening (connect, TLS, the request's head) is the largest state of
                // an attempt, and only its first; unboxed, every request in flight would
                // carry its size for as long as its stream lasts.
                opened = Box::pin(self.engine.client.open(call, timeouts)) => opened,
            };
            match opened {
                // The deployment refuses to stream this request, not the request: it is
                // asked again at once without streaming, within the same attempt and in
                // both modes alike (a streaming client gets the answer re-chunked, as from
                // a `fake_stream` deployment). Nothing was generated, so nothing is billed
                // twice; not a failure of the deployment, so nothing is counted against it.
                Err(e)
                    if streamed && e.classify(self.engine.wall_now()).refuses_streaming(&body) =>
                {
                    self.emit(Event::StreamRefused {
                        attempt: self.attempts.len() as u32 + 1,
                    });
                    streamed = false;
                }
                opened => break (opened, body),
            }
        };
        let mut stream = opened.map_err(|e| self.failed(spec, e, blame, from_request, 0, &body))?;
        if let Some(liveness) = out.liveness() {
            stream.when_talking_without_chunks(move || liveness.hold());
        }
        let limits = &self.catalog.limits;
        let mut held: Vec<Chunk> = Vec::new();
        let mut held_bytes = 0;
        let mut content_chunks = 0;
        let mut tool_calls = ToolCallCount::default();
        let mut model = upstream_model.to_string();
        // A continuation's first text may complete a stop sequence that the text delivered
        // before it began (`seam`): its chunks are held until it has, or no longer can.
        let mut seam = self.ask.as_ref().and_then(|(prefix, _)| {
            SeamGuard::new(prefix, &self.admitted.request.stop_sequences())
        });
        let mut at_seam: Vec<Chunk> = Vec::new();
        let mut at_seam_bytes = 0;
        loop {
            let next = tokio::select! {
                biased;
                reason = out.gone() => return Err(AttemptError::ClientGone(reason)),
                next = stream.next() => next,
            };
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                // Every choice asked for has finished: what fails after the finish reasons
                // (a reset or a cut before `[DONE]`, a line of garbage, an error event, a
                // body held open to the idle timeout) takes nothing from the answer. Taken
                // as a failure, a continuation went on from a finished answer and appended
                // whatever the next deployment said to it (with fewer choices named than
                // asked for, another may still come). Only once this attempt gave some of
                // the answer: a finish with nothing before it (a provider's role chunk, when
                // it puts a finish reason on every chunk) is no answer, and before commit a
                // retry costs nothing. A limit hit there is still said: an upstream that
                // floods past its finish is worth seeing.
                Err(e)
                    if stream.finished()
                        && content_chunks > 0
                        && stream.choices_named() >= self.admitted.request.choices_asked() =>
                {
                    if let Some(limit) = e.limit() {
                        self.emit(Event::LimitHit { limit });
                    }
                    break;
                }
                Err(e) => {
                    return Err(self.failed(spec, e, blame, from_request, content_chunks, &body));
                }
            };
            if chunk.finish_reason.as_deref() == Some(CONTENT_FILTER) && content_policy_fails {
                // With a content-policy fallback list for this group, the filter is a
                // failure to route around; without one it is the answer.
                let e = UpstreamError::ContentFiltered;
                return Err(self.failed(spec, e, blame, from_request, content_chunks, &body));
            }
            if tool_calls.push(&chunk.object) > limits.max_tool_calls {
                let e = UpstreamError::Limit(LimitExceeded::new(
                    "max_tool_calls",
                    format!(
                        "more than max_tool_calls = {} tool calls",
                        limits.max_tool_calls
                    ),
                ));
                return Err(self.failed(spec, e, blame, from_request, content_chunks, &body));
            }
            // Azure's filter annotations say `model: ""`: no model, not a new one.
            if let Some(m) = chunk.model.as_ref().filter(|m| !m.is_empty()) {
                model.clone_from(m);
            }
            if chunk.payload_bytes > 0 {
                content_chunks += 1;
            }
            if self.commit.is_committed() {
                // What comes before the continuation's first text (a thinking model's
                // reasoning, a role chunk) decides nothing and goes as it comes: held, it
                // kept a client waiting, and was dropped with the text if that ended the
                // answer at the seam.
                if let Some(guard) = seam
                    .as_mut()
                    .filter(|_| !at_seam.is_empty() || !chunk.text.is_empty())
                {
                    let verdict = guard.push(&chunk.text);
                    at_seam_bytes += chunk_size(&chunk);
                    at_seam.push(chunk);
                    // What a seam holds is bounded as what commit holds: past the bound the
                    // continuation goes as sent, the seam unguarded (content-less chunks
                    // without end after the first text; a stop sequence of megabytes).
                    let verdict = match verdict {
                        Seam::Hold if at_seam_bytes > limits.max_precommit_buffer_bytes => {
                            Seam::Release
                        }
                        verdict => verdict,
                    };
                    match verdict {
                        // The client hears nothing while the seam is undecided: a wait of
                        // the gateway's own, as the continuation's first byte was.
                        Seam::Hold => {
                            out.waiting();
                            continue;
                        }
                        Seam::Release => {
                            seam = None;
                            for c in std::mem::take(&mut at_seam) {
                                self.deliver(c, &upstream_model, out).await?;
                            }
                            continue;
                        }
                        Seam::Stop => {
                            self.emit(Event::StopSequenceAtSeam {
                                attempt: self.attempts.len() as u32 + 1,
                            });
                            // Boxed: its state (over 2 KB) would otherwise be part of
                            // every stream task's future, which is sized for its largest
                            // await, for the stream's whole life (with 1,000 streams open,
                            // about 1 MB of the gateway's memory for a rare ending).
                            Box::pin(self.end_at_seam(&at_seam, &upstream_model, out)).await?;
                            return Ok(Served {
                                group,
                                deployment,
                                model,
                            });
                        }
                    }
                }
                self.deliver(chunk, &upstream_model, out).await?;
                continue;
            }
            // A chunk with content commits whatever its size; one without is held, and the
            // bytes held are the provider's own (or, for a whole completion, as written).
            let size = match chunk.payload_bytes {
                1.. => 0,
                0 => chunk_size(&chunk),
            };
            if chunk.payload_bytes > 0 || held_bytes + size > limits.max_precommit_buffer_bytes {
                let id = held
                    .iter()
                    .chain(std::iter::once(&chunk))
                    .find_map(upstream_id);
                // Boxed, as `deliver`'s: once per attempt, kept out of the stream's room.
                Box::pin(self.commit_with(id, deployment, group, stream.forwarded_headers(), out))
                    .await?;
                if self.response_begun() {
                    stream.lift_deadline(attempt_end.min(self.deadline), self.deadline);
                    blame.attempt_capped = self.deadline < attempt_end;
                }
                for c in held.drain(..) {
                    self.deliver(c, &upstream_model, out).await?;
                }
                self.deliver(chunk, &upstream_model, out).await?;
            } else {
                held_bytes += size;
                held.push(chunk);
            }
        }
        // The answer ended while a seam was undecided: nothing completed a stop sequence.
        for c in at_seam {
            self.deliver(c, &upstream_model, out).await?;
        }
        if !self.commit.is_committed() {
            let id = held.iter().find_map(upstream_id);
            Box::pin(self.commit_with(id, deployment, group, stream.forwarded_headers(), out))
                .await?;
            self.response_begun();
        }
        for c in held.drain(..) {
            self.deliver(c, &upstream_model, out).await?;
        }
        Ok(Served {
            group,
            deployment,
            model,
        })
    }

    /// Commits with the committing attempt's first chunk (its id names the response) and
    /// its response headers.
    async fn commit_with<D: Delivery>(
        &mut self,
        upstream_id: Option<String>,
        deployment: DeploymentId,
        group: GroupId,
        upstream: &[(http::HeaderName, http::HeaderValue)],
        out: &mut D,
    ) -> Result<(), AttemptError> {
        let mut ids = ChaCha8Rng::seed_from_u64(request_seed(
            self.catalog.settings.rng_seed ^ ID_STREAM,
            self.admitted.id,
        ));
        let response_id = self.commit.commit(upstream_id.as_deref(), &mut ids);
        self.at_commit = Some((self.retries, self.fallbacks));
        self.emit(Event::Committed {
            attempt: self.attempts.len() as u32 + 1,
            deployment,
        });
        let upstream_headers = upstream.to_vec();
        let head = CommitHead {
            group: self.catalog.group(group).name.clone(),
            deployment: self.catalog.deployment(deployment).id.clone(),
            retries: self.retries,
            fallbacks: self.fallbacks,
            response_id,
            upstream_headers,
        };
        out.commit(head)
            .await
            .map_err(|ClientGone(reason)| AttemptError::ClientGone(reason))
    }

    /// Ends the answer at a continuation's seam (see `seam`): in place of the
    /// continuation's `held` chunks, a finish chunk (`stop`, choice 0) and a usage chunk
    /// counting one completion token per content chunk held, as for a failed attempt: the
    /// rest of the upstream's answer, its usage report included, is never read. The client
    /// is told the earlier attempts' usage too (`CommitState::stamp_and_record`), and a
    /// stream that did not ask for usage drops the usage chunk as any other.
    async fn end_at_seam<D: Delivery>(
        &mut self,
        held: &[Chunk],
        upstream_model: &str,
        out: &mut D,
    ) -> Result<(), AttemptError> {
        assert!(!held.is_empty(), "a seam is decided by a chunk");
        let mut top = serde_json::Map::new();
        for key in ["id", "created", "model", "system_fingerprint"] {
            if let Some(v) = held[0].object.json(key) {
                top.insert(key.to_string(), v.clone());
            }
        }
        top.insert("object".into(), "chat.completion.chunk".into());
        let content_chunks = held.iter().filter(|c| c.payload_bytes > 0).count() as u64;
        let usage = serde_json::json!({"prompt_tokens": 0, "completion_tokens": content_chunks,
            "total_tokens": content_chunks});
        self.end_answer(top, "stop", usage, upstream_model, out)
            .await
    }

    /// Ends the answer where the client's token budget was spent (see `Next::Spent`): the
    /// failed attempt's held end is dropped as before any next attempt, and a finish chunk
    /// (`finish_reason`, choice 0) and a usage chunk of every attempt that contributed
    /// follow.
    async fn end_at_budget<D: Delivery>(
        &mut self,
        model: &str,
        finish_reason: &str,
        out: &mut D,
    ) -> Result<(), AttemptError> {
        out.restart();
        let top = self.commit.end_fields();
        let usage = Value::Object(self.commit.take_usage_so_far());
        self.end_answer(top, finish_reason, usage, model, out).await
    }

    /// Delivers an end the gateway writes itself: a chunk of `top`'s fields finishing
    /// choice 0 with `finish_reason`, then one of `usage`.
    async fn end_answer<D: Delivery>(
        &mut self,
        top: serde_json::Map<String, Value>,
        finish_reason: &str,
        usage: Value,
        upstream_model: &str,
        out: &mut D,
    ) -> Result<(), AttemptError> {
        let mut finish = top.clone();
        finish.insert(
            "choices".into(),
            serde_json::json!([{"index": 0, "delta": {}, "finish_reason": finish_reason}]),
        );
        let mut with_usage = top;
        with_usage.insert("choices".into(), serde_json::json!([]));
        with_usage.insert("usage".into(), usage);
        for object in [finish, with_usage] {
            let object = ChunkObject::from_map(object);
            let Ok(Payload::Chunk(chunk)) = from_object(object, &ChunkLimits::default()) else {
                unreachable!("a chunk of one choice, or of usage, is a chunk");
            };
            self.deliver(chunk, upstream_model, out).await?;
        }
        Ok(())
    }

    async fn deliver<D: Delivery>(
        &mut self,
        chunk: Chunk,
        upstream_model: &str,
        out: &mut D,
    ) -> Result<(), AttemptError> {
        let chunk = self.commit.stamp_and_record(chunk, upstream_model);
        // Boxed: a stream's task is sized for its largest await, for the stream's whole
        // life, and the delivery's (over 1 KB, of which a chunk is held at every level) was
        // the largest left. One small allocation per chunk, beside the parse's dozens, for a
        // KB less per open stream (about 1 MB with 1,000 open).
        Box::pin(out.chunk(chunk))
            .await
            .map_err(|ClientGone(reason)| AttemptError::ClientGone(reason))
    }

    fn unserved(&self, failure: Failure, walk: &crate::plan::PlanWalk<'_>) -> Unserved {
        let groups: Vec<&str> = walk
            .visited()
            .iter()
            .map(|g| self.catalog.group(*g).name.as_str())
            .collect();
        let summary = format!(
            "{} attempt(s) over groups [{}]; fallbacks from {} settings; retries {}, fallbacks {}",
            self.attempts.len(),
            groups.join(", "),
            self.admitted.plan.fallbacks_from().as_str(),
            self.retries,
            self.fallbacks,
        );
        Unserved { failure, summary }
    }
}

/// The bytes a held chunk stands for: the provider's own (or, for a whole completion, as
/// written).
fn chunk_size(chunk: &Chunk) -> usize {
    match &chunk.raw {
        Some(raw) => raw.len(),
        None => serde_json::to_vec(&chunk.object).map_or(0, |v| v.len()),
    }
}

/// The `id` an upstream gave its chunk, unless empty (Azure's first chunk, with only
/// `prompt_filter_results`, has `id: ""`: the answer's id comes on the next one).
fn upstream_id(chunk: &Chunk) -> Option<String> {
    chunk
        .object
        .json("id")
        .and_then(serde_json::Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// Salt of the random stream generated response ids come from, apart from the stream
/// routing draws from (so an upstream without ids never shifts a routing decision).
const ID_STREAM: u64 = 0x001D_50FC_0441_71D5;

/// Whether each kind of timeout, when it fires, is the request's own doing.
#[derive(Debug, Clone, Copy)]
struct TimeoutBlame {
    /// The whole-attempt timeout is tighter than the deployment's.
    attempt_tighter: bool,
    /// The whole attempt ends at the deadline in force, before its own timeout.
    attempt_capped: bool,
    /// The first-byte, first-chunk and idle timeouts are tighter than the deployment's.
    stream: bool,
}

impl TimeoutBlame {
    fn of(self, kind: TimeoutKind) -> Blame {
        let request = match kind {
            TimeoutKind::Attempt => self.attempt_tighter || self.attempt_capped,
            TimeoutKind::FirstByte | TimeoutKind::FirstChunk | TimeoutKind::Idle => self.stream,
        };
        if request {
            Blame::RequestTimeout
        } else {
            Blame::Deployment
        }
    }
}
