//! The ONE attempt loop, shared by streaming and non-streaming requests.
//!
//! Owns: walking a request's [`FallbackPlan`]: choosing a deployment, calling it, reading its
//! answer chunk by chunk, deciding on commit, classifying failures, cooling deployments,
//! retrying inside a group, falling back to the next group, applying the `mid_stream`
//! policy, and emitting a trace event for every decision.
//!
//! The loop does not know the client's mode. The [`Delivery`] it is given does: a
//! streaming delivery writes chunks to the client as they come, an aggregating one keeps them
//! for one JSON body. The commit point is the same in both modes: the first chunk with
//! content (or the pre-commit buffer limit). After commit, a failure under `mid_stream:
//! error` ends the request in both modes; under `continue` the next attempt is built from
//! [`Delivery::restart`]: a stream continues from what the client already has, an
//! aggregate starts afresh. That is the only place the modes differ, and it changes
//! what is *asked* of the next attempt, never *which* attempt comes next.

use std::future::Future;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tokio::time::Instant;

use crate::catalog::{Catalog, DeploymentId, GroupId};
use crate::classify::{Blame, Failure, FailureClass, FallbackRoute, TimeoutKind};
use crate::config::MidStreamPolicy;
use crate::engine::{Admitted, Engine};
use crate::policy::EffectiveSettings;
use crate::route::select::{self, Choice};
use crate::route::{GiveUp, RetryContext, RetryDecision};
use crate::trace::Event;
use crate::upstream::chunk::Chunk;
use crate::upstream::client::{AttemptTimeouts, Call};

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
}

/// How an answer reaches the client. The loop calls these in order: `commit` once, then
/// `chunk` for every chunk of the committed answer, and `restart` before an attempt that
/// follows a failure after commit.
pub trait Delivery: Send {
    fn commit(&mut self, head: CommitHead) -> impl Future<Output = Result<(), ClientGone>> + Send;
    /// A chunk, already stamped with the request's id and the producing deployment's model.
    fn chunk(&mut self, chunk: Chunk) -> impl Future<Output = Result<(), ClientGone>> + Send;
    /// Resolves when the client has gone away, so the loop stops at once instead of
    /// calling upstreams for no one. Watched while waiting on an upstream or a backoff.
    fn gone(&mut self) -> impl Future<Output = GoneReason> + Send;
    /// The text the next attempt must continue from (`None`: ask for a fresh answer).
    fn restart(&mut self) -> Option<String>;
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
    deadline: Instant,
    attempts: Vec<AttemptRecord>,
    retries: u32,
    fallbacks: u32,
    committed: bool,
    at_commit: Option<(u32, u32)>,
    delivered: u32,
    /// The `id` every chunk carries, built once.
    response_id: Value,
}

pub(crate) async fn run<D: Delivery>(engine: &Engine, admitted: &Admitted, out: &mut D) -> Outcome {
    let catalog = engine.catalog();
    let mut run = Run {
        engine,
        admitted,
        catalog,
        settings: &admitted.plan.settings,
        rng: ChaCha8Rng::seed_from_u64(request_seed(catalog.settings.rng_seed, admitted.id)),
        deadline: admitted.admitted_at + catalog.limits.request_deadline(),
        attempts: Vec::new(),
        retries: 0,
        fallbacks: 0,
        committed: false,
        at_commit: None,
        delivered: 0,
        response_id: Value::String(admitted.response_id()),
    };
    // The walk has emitted `client_gone` already when the client left; every other end
    // gets exactly one final event here.
    let (result, client_gone) = match run.walk(out).await {
        Ok(served) => {
            run.emit(Event::Completed {
                group: served.group,
                deployment: served.deployment,
                model: served.model.clone(),
                retries: run.retries,
                fallbacks: run.fallbacks,
                chunks: run.delivered,
            });
            (Ok(served), false)
        }
        Err(Stop::Unserved(unserved)) => {
            run.emit(Event::Failed {
                status: unserved.failure.client_status(),
                error_type: unserved.failure.client_error_type(),
                class: unserved.failure.class,
                committed: run.committed,
            });
            (Err(unserved), false)
        }
        Err(Stop::ClientGone) => {
            let unserved = Unserved {
                failure: Failure::new(FailureClass::Transient, "client went away"),
                summary: String::new(),
            };
            (Err(unserved), true)
        }
    };
    Outcome {
        result,
        attempts: run.attempts,
        retries: run.retries,
        fallbacks: run.fallbacks,
        committed: run.committed,
        at_commit: run.at_commit,
        client_gone,
    }
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
            let mut retries_here = 0;
            while let Some(deployment) = next.take() {
                if let Some(limit) = self.limit_reached() {
                    self.emit(Event::LimitHit { limit });
                    let failure = last.take().unwrap_or_else(|| limit_failure(limit));
                    return Err(Stop::Unserved(self.unserved(failure, &walk)));
                }
                tried.push(deployment);
                let attempt = self.attempts.len() as u32 + 1;
                let continuation =
                    self.committed && self.settings.mid_stream.value == MidStreamPolicy::Continue;
                self.emit(Event::AttemptStarted {
                    attempt,
                    group,
                    deployment,
                    continuation: continuation
                        && self.delivered > 0
                        && self.admitted.request.stream,
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
                    None => self.attempt(group, deployment, out).await,
                };
                let (failure, after_chunks, timeout) = match result {
                    Ok(served) => {
                        self.engine.cooldowns().record_success(deployment);
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
                    let cooled = self.engine.cooldowns().record_failure(
                        deployment,
                        &failure,
                        now,
                        &self.catalog.settings,
                    );
                    if let Some(c) = cooled {
                        self.emit(Event::DeploymentCooled {
                            deployment,
                            duration: c.duration,
                            class: failure.class,
                        });
                    }
                }
                if self.committed && self.settings.mid_stream.value == MidStreamPolicy::Error {
                    return Err(Stop::Unserved(self.unserved(failure, &walk)));
                }
                let decision = {
                    let cx = RetryContext {
                        group,
                        failure: &failure,
                        retries_allowed: self.settings.retries_for(failure.class),
                        retries_used: retries_here,
                        mocked: mocked.is_some(),
                        committed: self.committed,
                        tried: &tried,
                        now,
                        deadline: self.deadline,
                        max_wait: self.catalog.limits.max_retry_after(),
                        backoff_base: self.catalog.settings.retry_backoff_base,
                        backoff_max: self.catalog.settings.retry_backoff_max,
                    };
                    let book = self.engine.cooldowns();
                    self.engine
                        .retry_policy()
                        .decide(&cx, self.catalog, &book, &mut self.rng)
                };
                match decision {
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
                        next = Some(deployment);
                    }
                    RetryDecision::GiveUp(reason) => {
                        self.emit(Event::GroupExhausted { group, reason });
                        route = failure.class.actions(fallback_on_bad_request).fallback;
                    }
                }
                last = Some(failure);
            }
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

    /// The first deployment of a group. A group whose every deployment is cooling is
    /// skipped at once, without an upstream call, as a rate-limit failure carrying the time
    /// until the first deployment recovers (LiteLLM does the same). New requests never queue
    /// behind a cooldown; only a retry that honours a Retry-After waits (see `route`).
    fn enter(&mut self, group: GroupId) -> Result<DeploymentId, Failure> {
        let now = Instant::now();
        let choice = {
            let book = self.engine.cooldowns();
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

    fn limit_reached(&self) -> Option<&'static str> {
        if self.attempts.len() as u32 >= self.catalog.limits.max_attempts {
            return Some("max_attempts");
        }
        if Instant::now() >= self.deadline {
            return Some("request_deadline");
        }
        None
    }

    /// One call to one deployment, read to its end.
    async fn attempt<D: Delivery>(
        &mut self,
        group: GroupId,
        deployment: DeploymentId,
        out: &mut D,
    ) -> Result<Served, AttemptError> {
        let spec = self.catalog.deployment(deployment);
        let settings = self.settings;
        let prefix = if self.committed { out.restart() } else { None };
        let prompt = &self.catalog.settings.continuation_prompt;
        let body = self.admitted.request.upstream_body(
            &spec.upstream_model,
            prefix
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(|p| (p, prompt.as_str())),
        );
        let timeout = spec
            .timeout
            .map_or(settings.timeout.value, |t| t.min(settings.timeout.value));
        let stream_timeout = spec
            .stream_timeout
            .map_or(settings.stream_timeout.value, |t| {
                t.min(settings.stream_timeout.value)
            });
        let attempt_end = Instant::now() + timeout;
        let timeouts = AttemptTimeouts {
            stream_timeout,
            deadline: attempt_end.min(self.deadline),
        };
        // What this deployment would get from the gateway's own settings: a timeout tighter
        // than that was the request's (or its key's, or its team's) choice, and so is the
        // request deadline.
        let (gateway_timeout, gateway_stream_timeout) = self.catalog.gateway_timeouts;
        let own_timeout = spec
            .timeout
            .map_or(gateway_timeout, |t| t.min(gateway_timeout));
        let own_stream_timeout = spec
            .stream_timeout
            .map_or(gateway_stream_timeout, |t| t.min(gateway_stream_timeout));
        let request_deadline = self.deadline;
        let timeout_blame = move |kind: TimeoutKind| {
            let tighter = match kind {
                TimeoutKind::Attempt => timeout < own_timeout || request_deadline < attempt_end,
                TimeoutKind::FirstByte | TimeoutKind::FirstChunk | TimeoutKind::Idle => {
                    stream_timeout < own_stream_timeout
                }
            };
            if tighter {
                Blame::RequestTimeout
            } else {
                Blame::Deployment
            }
        };
        let call = Call {
            endpoint: &spec.endpoint,
            api_key: spec.api_key.as_deref(),
            body: &body,
            request_id: self.admitted.id,
        };
        let (engine, catalog, request) = (self.engine, self.catalog, self.admitted.id);
        let failed = move |e: crate::upstream::client::UpstreamError, after_chunks| {
            if let Some(limit) = e.limit() {
                engine.emit(request, Event::LimitHit { limit });
            }
            let mut failure = e.classify(engine.wall_now());
            if let Some(kind) = e.timeout_kind() {
                failure.blame = timeout_blame(kind);
            }
            // Upstream text reaches the client: keep the deployment's secrets out of it, and
            // never promise a wait longer than the gateway would ever cool for.
            failure.message = catalog
                .redactor
                .redact(&format!("deployment `{}`: {}", spec.id, failure.message));
            let cap = catalog.limits.max_cooldown();
            failure.retry_after = failure.retry_after.map(|r| r.min(cap));
            AttemptError::Failed {
                failure,
                after_chunks,
                timeout: e.timeout_kind(),
            }
        };
        let opened = tokio::select! {
            biased;
            reason = out.gone() => return Err(AttemptError::ClientGone(reason)),
            opened = self.engine.client.open(call, timeouts) => opened,
        };
        let mut stream = opened.map_err(|e| failed(e, 0))?;
        let limits = &self.catalog.limits;
        let mut held: Vec<Chunk> = Vec::new();
        let mut held_bytes = 0;
        let mut content_chunks = 0;
        let mut model = spec.upstream_model.clone();
        loop {
            let next = tokio::select! {
                biased;
                reason = out.gone() => return Err(AttemptError::ClientGone(reason)),
                next = stream.next() => next,
            };
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    if !self.committed {
                        self.commit(deployment, group, out).await?;
                    }
                    for c in held.drain(..) {
                        self.deliver(c, out).await?;
                    }
                    return Ok(Served {
                        group,
                        deployment,
                        model,
                    });
                }
                Err(e) => return Err(failed(e, content_chunks)),
            };
            let chunk = self.stamp(chunk, &spec.upstream_model);
            if let Some(m) = &chunk.model {
                model.clone_from(m);
            }
            if chunk.payload_bytes > 0 {
                content_chunks += 1;
            }
            if self.committed {
                self.deliver(chunk, out).await?;
                continue;
            }
            let size = serde_json::to_vec(&chunk.object).map_or(0, |v| v.len());
            if chunk.payload_bytes > 0 || held_bytes + size > limits.max_precommit_buffer_bytes {
                self.commit(deployment, group, out).await?;
                for c in held.drain(..) {
                    self.deliver(c, out).await?;
                }
                self.deliver(chunk, out).await?;
            } else {
                held_bytes += size;
                held.push(chunk);
            }
        }
    }

    async fn commit<D: Delivery>(
        &mut self,
        deployment: DeploymentId,
        group: GroupId,
        out: &mut D,
    ) -> Result<(), AttemptError> {
        assert!(!self.committed, "a request commits once");
        self.committed = true;
        self.at_commit = Some((self.retries, self.fallbacks));
        self.emit(Event::Committed {
            attempt: self.attempts.len() as u32 + 1,
            deployment,
        });
        let head = CommitHead {
            group: self.catalog.group(group).name.clone(),
            deployment: self.catalog.deployment(deployment).id.clone(),
            retries: self.retries,
            fallbacks: self.fallbacks,
        };
        out.commit(head)
            .await
            .map_err(|ClientGone(reason)| AttemptError::ClientGone(reason))
    }

    async fn deliver<D: Delivery>(
        &mut self,
        chunk: Chunk,
        out: &mut D,
    ) -> Result<(), AttemptError> {
        assert!(self.committed, "nothing reaches the client before commit");
        if !chunk.usage_only {
            self.delivered += 1;
        }
        out.chunk(chunk)
            .await
            .map_err(|ClientGone(reason)| AttemptError::ClientGone(reason))
    }

    /// The request's id on every chunk; the producing deployment's model when the upstream
    /// left it out; no repeated `role` after the first delivered chunk.
    fn stamp(&self, mut chunk: Chunk, upstream_model: &str) -> Chunk {
        chunk.object.insert("id".into(), self.response_id.clone());
        if chunk.model.is_none() {
            chunk.model = Some(upstream_model.to_string());
            chunk
                .object
                .insert("model".into(), Value::String(upstream_model.to_string()));
        }
        if self.delivered > 0 {
            if let Some(Value::Array(choices)) = chunk.object.get_mut("choices") {
                for c in choices {
                    if let Some(Value::Object(delta)) = c.get_mut("delta") {
                        delta.remove("role");
                    }
                }
            }
        }
        chunk
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

fn limit_failure(limit: &'static str) -> Failure {
    Failure::new(
        FailureClass::Timeout,
        format!("limit `{limit}` reached before any attempt"),
    )
}
