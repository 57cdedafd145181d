//! Per-deployment health shared by all requests: failure counts and cooldowns.
//!
//! Owns: when a deployment is cooled (at once for rate limits and auth errors, after
//! `allowed_fails` consecutive failures for transient ones; `allowed_fails_policy` gives a
//! class its own allowance, a class that cools at once included), for how long (the deployment's
//! own `cooldown_time`, else Retry-After, else the gateway's `cooldown_time`; a deployment
//! whose own `cooldown_time` is 0 is never cooled), and when it is healthy again. A success resets the count. Time is a
//! parameter; the book itself is plain data kept behind a lock by the engine.
//!
//! **Effects that land in the same instant.** Two requests' upstream events can arrive in
//! the same instant (always possible under a paused or simulated clock, where every event of
//! a tick shares one instant). Which of them the runtime processes first is a scheduling
//! accident: under the simulation it even differs between a stream and a non-stream run of
//! the same traffic (their tasks do different work). So the book never lets that order
//! matter:
//! * a request sees every effect from earlier instants, and its own effects at this one; the
//!   other requests' effects at this instant become visible from the next instant on;
//! * an instant's effects on one deployment are combined by one rule, whatever their order:
//!   failures first (their counts add up, a cooldown is the longest one asked for), then
//!   successes (any success resets the count).
//!
//! **A lone deployment** (the only one of its group) is not cooled by default for a rate
//! limit, a server error, a timeout or a malformed answer: cooling it would turn one error
//! into an outage of the whole group for `cooldown_time`. Its failures then leave no effect
//! at all, so the same-instant rule above is untouched. This is LiteLLM's behaviour
//! (`litellm/router_utils/cooldown_handlers.py`, `_should_cooldown_deployment`, the
//! `is_single_deployment_model_group` base case), which still cools it for 401 and 404
//! (statuses `litellm.utils._should_retry` says never to retry): so does Switchback, for the
//! `auth` and `not_found` classes. `cooldown_lone_deployment: true` cools it like any other.
//!
//! **Cooldown by failure rate** (`cooldown_by_failure_rate: true`, gateway only, refused
//! with `allowed_fails` or `allowed_fails_policy`): LiteLLM's rule when neither is set
//! (`litellm/router_utils/cooldown_handlers.py`, `_should_cooldown_deployment`, reading the
//! stats of `router_callbacks/track_deployment_metrics.py`). A server error, a timeout or a
//! malformed answer cools the deployment once more than [`FAILURE_RATE_THRESHOLD_PERCENT`]
//! of at least [`FAILURE_RATE_MINIMUM_REQUESTS`] outcomes of the current minute failed (a
//! lone deployment only when all of at least [`LONE_DEPLOYMENT_ALL_FAILED_REQUESTS`] did);
//! what cools at once still does. The minute's counts lapse [`FAILURE_RATE_WINDOW`] after
//! their last increment, as LiteLLM's TTL cache entries do; time is the engine's
//! (`tokio::time`), simulated in the harness. An instant's outcomes combine by the same
//! order-free rule: its failures are counted, the rate is judged, then its successes count.
//!
//! With a real clock two events practically never share an instant, so this is the
//! sequential rule. A cooldown that only the instant's failures together cause (two
//! transient failures, each within `allowed_fails` alone) is reported as
//! [`Unreported`], attributed to the lowest-numbered request that failed, for the engine to
//! trace.

use std::borrow::Cow;
use std::time::Duration;

use tokio::time::Instant;

use crate::catalog::{DeploymentId, GatewaySettings};
use crate::classify::{CoolDown, Failure, FailureClass};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Health {
    consecutive_fails: u32,
    cooled_until: Option<Instant>,
    /// The class of the failure that set `cooled_until` (the longest cooldown's): whether a
    /// reload's new rules would have cooled the deployment at all ([`may_cool`]).
    cooled_for: Option<FailureClass>,
    /// Successes and failures of "the current minute" (`cooldown_by_failure_rate`).
    minute_successes: Lapsing,
    minute_fails: Lapsing,
}

/// How long a count of the current minute lives after its last increment.
pub const FAILURE_RATE_WINDOW: Duration = Duration::from_secs(60);
/// A failure rate over this (a share of the minute's requests) cools a deployment...
pub const FAILURE_RATE_THRESHOLD_PERCENT: u32 = 50;
/// ... once the minute has at least this many requests (LiteLLM's
/// `DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS`)...
pub const FAILURE_RATE_MINIMUM_REQUESTS: u32 = 5;
/// ... and a lone deployment only when every one of at least this many failed (LiteLLM's
/// `SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD`).
pub const LONE_DEPLOYMENT_ALL_FAILED_REQUESTS: u32 = 1000;

/// A count of the current minute as LiteLLM keeps it: a cache entry whose 60 s TTL restarts
/// at every increment (`router_callbacks/track_deployment_metrics.py`;
/// `caching/in_memory_cache.py`, `InMemoryCache.increment_cache` sets the value again with
/// the TTL), so it lapses 60 s after its last increment. Simulated time only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lapsing {
    count: u32,
    last: Option<Instant>,
}

impl Lapsing {
    fn read(&self, at: Instant) -> u32 {
        match self.last {
            Some(last) if at < last + FAILURE_RATE_WINDOW => self.count,
            _ => 0,
        }
    }

    fn add(&mut self, at: Instant, n: u32) {
        if n > 0 {
            self.count = self.read(at).saturating_add(n);
            self.last = Some(at);
        }
    }
}

/// A deployment was just cooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooled {
    pub deployment: DeploymentId,
    pub until: Instant,
    pub duration: Duration,
}

/// A cooldown no single request's failure caused, found when its instant was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreported {
    /// The lowest-numbered request whose failure counted towards it.
    pub request: u64,
    pub cooled: Cooled,
    pub class: FailureClass,
}

/// What one outcome does to a deployment's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Success,
    /// Counts towards `allowed_fails` (over it, cools for `cooldown_time`).
    Counted {
        class: FailureClass,
        allowed_fails: u32,
        cooldown_time: Duration,
    },
    /// Cools at once for `duration` (zero: only resets the count).
    Immediate {
        class: FailureClass,
        duration: Duration,
    },
    /// `cooldown_by_failure_rate`: counts in the minute's failures; cools for `duration` at
    /// once (`immediate`) or when the minute's failure rate says so.
    Rated {
        class: FailureClass,
        duration: Duration,
        immediate: bool,
        /// The deployment is alone in its group (and `cooldown_lone_deployment` is off).
        lone: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    at: Instant,
    request: u64,
    deployment: DeploymentId,
    effect: Effect,
    /// Carried over to a reloaded config's book, which reports what it causes: this book
    /// still applies it (for requests still in flight here) but does not report it again.
    handed_over: bool,
}

/// The cooldown an instant's effects cause, if any: its length and the class to report.
type Caused = Option<(Duration, FailureClass)>;

/// Applies one instant's effects on one deployment, in the order-free way the module doc
/// describes.
fn combine<'e>(h: &mut Health, at: Instant, effects: impl Iterator<Item = &'e Effect>) -> Caused {
    let mut counted: Option<(u32, Duration, FailureClass)> = None;
    let mut immediate: Caused = None;
    let mut succeeded = false;
    let (mut successes, mut rated_fails) = (0u32, 0u32);
    let mut rated: Option<(Duration, FailureClass, bool)> = None;
    for effect in effects {
        match *effect {
            Effect::Success => {
                succeeded = true;
                successes = successes.saturating_add(1);
            }
            Effect::Rated {
                class,
                duration,
                immediate: at_once,
                lone,
            } => {
                rated_fails = rated_fails.saturating_add(1);
                if at_once {
                    immediate = immediate.max(Some((duration, class)));
                } else {
                    let r = rated.get_or_insert((duration, class, lone));
                    r.0 = r.0.max(duration);
                    r.1 = r.1.max(class);
                    r.2 &= lone;
                }
            }
            Effect::Counted {
                class,
                allowed_fails,
                cooldown_time,
            } => {
                h.consecutive_fails = h.consecutive_fails.saturating_add(1);
                // Order-free: the strictest allowance (failures of different classes can
                // have different ones under `allowed_fails_policy`), the longest cooldown.
                let c = counted.get_or_insert((allowed_fails, cooldown_time, class));
                c.0 = c.0.min(allowed_fails);
                c.1 = c.1.max(cooldown_time);
                c.2 = c.2.max(class);
            }
            Effect::Immediate { class, duration } => {
                immediate = immediate.max(Some((duration, class)));
            }
        }
    }
    let over = counted.filter(|(allowed, _, _)| h.consecutive_fails > *allowed);
    // The minute's failures (this instant's included), then the rate rule, then this
    // instant's successes: the same order-free rule as for counted failures.
    h.minute_fails.add(at, rated_fails);
    let rate = rated.filter(|(_, _, lone)| {
        let fails = h.minute_fails.read(at);
        let total = fails.saturating_add(h.minute_successes.read(at));
        let all_failed = fails == total && total >= LONE_DEPLOYMENT_ALL_FAILED_REQUESTS;
        let over_rate = u64::from(fails) * 100
            > u64::from(total) * u64::from(FAILURE_RATE_THRESHOLD_PERCENT)
            && total >= FAILURE_RATE_MINIMUM_REQUESTS;
        all_failed || (over_rate && !lone)
    });
    h.minute_successes.add(at, successes);
    let caused = immediate
        .max(over.map(|(_, cooldown, class)| (cooldown, class)))
        .max(rate.map(|(duration, class, _)| (duration, class)));
    if over.is_some() || immediate.is_some() {
        h.consecutive_fails = 0;
    }
    if succeeded {
        h.consecutive_fails = 0;
    }
    let caused = caused.filter(|(duration, _)| !duration.is_zero())?;
    let until = at + caused.0;
    // A later cooldown never shortens an earlier, longer one.
    if h.cooled_until.is_none_or(|u| until >= u) {
        h.cooled_until = Some(until);
        h.cooled_for = Some(caused.1);
    }
    Some(caused)
}

/// Whether a failure of class `class` on a deployment may cool it: always, unless the
/// deployment is the only one of its group (`lone`) and the gateway keeps LiteLLM's default
/// (see the module doc).
pub fn may_cool(class: FailureClass, lone: bool, settings: &GatewaySettings) -> bool {
    !lone
        || settings.cooldown_lone_deployment
        || matches!(class, FailureClass::Auth | FailureClass::NotFound)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CooldownBook {
    health: Vec<Health>,
    /// `lone[d]`: `d` is the only deployment of its group.
    lone: Vec<bool>,
    /// `own_cooldown[d]`: `d`'s own `litellm_params.cooldown_time`, if it sets one.
    own_cooldown: Vec<Option<Duration>>,
    /// Effects of the latest instant, not yet seen by other requests.
    pending: Vec<Pending>,
    unreported: Vec<Unreported>,
}

impl CooldownBook {
    pub fn new(deployments: usize) -> CooldownBook {
        CooldownBook {
            health: vec![Health::default(); deployments],
            lone: vec![false; deployments],
            own_cooldown: vec![None; deployments],
            pending: Vec::new(),
            unreported: Vec::new(),
        }
    }

    /// A book for every deployment of `catalog`, knowing which ones are alone in their group.
    pub fn for_catalog(catalog: &crate::catalog::Catalog) -> CooldownBook {
        let n = catalog.deployments.len();
        CooldownBook {
            lone: (0..n)
                .map(|d| catalog.is_lone(DeploymentId(d as u32)))
                .collect(),
            own_cooldown: catalog
                .deployments
                .iter()
                .map(|d| d.cooldown_time)
                .collect(),
            ..CooldownBook::new(n)
        }
    }

    /// A book for the deployments of `catalog` that keeps what `self` (the book of `old`)
    /// knows of each upstream both list ([`DeploymentSpec::is_same_upstream`]: the same
    /// id, `api_base`, model and key): its failure count and cooldown, its outcomes not yet
    /// settled and cooldowns not yet reported. Those two are handed over: this book keeps
    /// applying the outcomes (requests still in flight on the old config read it) but
    /// leaves reporting what they cause to the new book, so a cooldown is traced once. A
    /// reload that adds, removes or reorders deployments so does not forget which of the
    /// others are cooling; a default id
    /// (`g#2`) that now names another upstream does not hand it the health of the one
    /// it named before. A cooldown `catalog` could not have set is dropped: one of a
    /// deployment now alone in its group for a failure the lone-deployment rule never cools
    /// for, or of one whose own `cooldown_time` is now 0. `carried[d]` is where `d` came
    /// from, for every deployment of `catalog`.
    ///
    /// [`DeploymentSpec::is_same_upstream`]: crate::catalog::DeploymentSpec::is_same_upstream
    pub fn carried_over(
        &mut self,
        old: &crate::catalog::Catalog,
        catalog: &crate::catalog::Catalog,
    ) -> (CooldownBook, Vec<Option<DeploymentId>>) {
        assert_eq!(self.health.len(), old.deployments.len(), "a book of `old`");
        let mut book = CooldownBook::for_catalog(catalog);
        let carried = catalog.same_upstreams_in(old);
        // Where each old deployment went: the inverse of `carried` (each old one is carried
        // to at most one new one, as ids are unique).
        let mut moved_to: Vec<Option<DeploymentId>> = vec![None; old.deployments.len()];
        for (d, from) in carried.iter().enumerate() {
            if let Some(from) = from {
                let slot = &mut moved_to[from.0 as usize];
                assert!(slot.is_none(), "an upstream carried over twice");
                *slot = Some(DeploymentId(d as u32));
            }
        }
        let new_index = |from: DeploymentId| moved_to[from.0 as usize];
        // A cooldown the new config could not have set is not kept, nor one still to come
        // from an effect not yet settled: a deployment now alone in its group (the
        // lone-deployment rule) or now never cooled (its own `cooldown_time` of 0) would
        // refuse its group's requests on the old config's word until it ran out.
        let settings = &catalog.settings;
        let unfit = |d: usize, from: DeploymentId, class: FailureClass| {
            let never = book.own_cooldown[d].is_some_and(|c| c.is_zero());
            // The failure-rate rule also cools a lone deployment when every one of many
            // requests failed: a cooldown the old config may have set by that rule (it had
            // the rule, and the deployment was lone there too) the new one could set.
            let by_the_rate_rule_in_both = settings.cooldown_by_failure_rate
                && old.settings.cooldown_by_failure_rate
                && self.lone[from.0 as usize];
            never || (book.lone[d] && !may_cool(class, true, settings) && !by_the_rate_rule_in_both)
        };
        let mut health = Vec::with_capacity(carried.len());
        for (d, from) in carried.iter().enumerate() {
            let Some(from) = *from else {
                health.push(Health::default());
                continue;
            };
            let mut h = self.health[from.0 as usize].clone();
            if h.cooled_for.is_some_and(|class| unfit(d, from, class)) {
                h.cooled_until = None;
                h.cooled_for = None;
            }
            health.push(h);
        }
        // What is carried over is the new book's to report, once; what is dropped stays
        // this book's to report, as this book still applies it.
        let mut pending = Vec::new();
        for p in &mut self.pending {
            let Some(deployment) = new_index(p.deployment) else {
                continue;
            };
            let class = match p.effect {
                Effect::Success => None,
                Effect::Counted { class, .. }
                | Effect::Immediate { class, .. }
                | Effect::Rated { class, .. } => Some(class),
            };
            if class.is_some_and(|class| unfit(deployment.0 as usize, p.deployment, class)) {
                continue;
            }
            p.handed_over = true;
            pending.push(Pending {
                deployment,
                handed_over: false,
                ..*p
            });
        }
        book.health = health;
        book.pending = pending;
        let (moved, stays): (Vec<Unreported>, Vec<Unreported>) = self
            .unreported
            .drain(..)
            .partition(|u| new_index(u.cooled.deployment).is_some());
        self.unreported = stays;
        book.unreported = moved
            .into_iter()
            .map(|mut u| {
                u.cooled.deployment =
                    new_index(u.cooled.deployment).expect("partitioned on being carried");
                u
            })
            .collect();
        (book, carried)
    }

    /// Folds every effect from before `now` into the shared health.
    pub fn settle(&mut self, now: Instant) {
        if self.pending.iter().all(|p| p.at >= now) {
            return;
        }
        let (due, rest): (Vec<Pending>, Vec<Pending>) =
            self.pending.drain(..).partition(|p| p.at < now);
        self.pending = rest;
        let mut instants: Vec<(Instant, DeploymentId)> =
            due.iter().map(|p| (p.at, p.deployment)).collect();
        instants.sort();
        instants.dedup();
        for (at, d) in instants {
            let of = |p: &&Pending| p.at == at && p.deployment == d;
            let mut requests: Vec<u64> = due.iter().filter(of).map(|p| p.request).collect();
            requests.sort_unstable();
            requests.dedup();
            // Whether some request's own view already reported a cooldown here.
            let reported = requests.iter().any(|r| {
                let mut own = self.health[d.0 as usize].clone();
                combine(
                    &mut own,
                    at,
                    due.iter()
                        .filter(of)
                        .filter(|p| p.request == *r)
                        .map(|p| &p.effect),
                )
                .is_some()
            });
            // A reloaded config's book has the effects handed over to it, and reports what
            // they cause: what they cause alone, since it never sees this book's later ones.
            let handed_over_alone = due.iter().filter(of).any(|p| p.handed_over) && {
                let mut theirs = self.health[d.0 as usize].clone();
                combine(
                    &mut theirs,
                    at,
                    due.iter()
                        .filter(of)
                        .filter(|p| p.handed_over)
                        .map(|p| &p.effect),
                )
                .is_some()
            };
            let reported = reported || handed_over_alone;
            let h = &mut self.health[d.0 as usize];
            let caused = combine(h, at, due.iter().filter(of).map(|p| &p.effect));
            if let (Some((duration, class)), false) = (caused, reported) {
                let request = due
                    .iter()
                    .filter(of)
                    .filter(|p| p.effect != Effect::Success)
                    .map(|p| p.request)
                    .min()
                    .expect("a cooldown has a failure behind it");
                self.unreported.push(Unreported {
                    request,
                    cooled: Cooled {
                        deployment: d,
                        until: at + duration,
                        duration,
                    },
                    class,
                });
            }
        }
    }

    /// Cooldowns found by [`CooldownBook::settle`] that no request has reported yet.
    pub fn take_unreported(&mut self) -> Vec<Unreported> {
        std::mem::take(&mut self.unreported)
    }

    /// The health `request` sees at `now`: every earlier effect and its own at `now`.
    /// (The engine settles the book before it asks, so this is usually the book itself, on
    /// the hot path: a copy only when the request has outcomes of its own at `now`.)
    pub fn view(&self, request: u64, now: Instant) -> Cow<'_, CooldownBook> {
        let due = self.pending.iter().any(|p| p.at < now);
        if !due && !self.pending.iter().any(|p| p.request == request) {
            return Cow::Borrowed(self);
        }
        let mut book = self.clone();
        if due {
            book.settle(now);
        }
        for d in book.own_deployments(request) {
            book.health[d.0 as usize] = book.own_health(d, request).0;
        }
        // Only the view's health is read; nothing in it may settle again.
        book.pending.clear();
        book.unreported.clear();
        Cow::Owned(book)
    }

    fn own_deployments(&self, request: u64) -> Vec<DeploymentId> {
        let mut ds: Vec<DeploymentId> = self
            .pending
            .iter()
            .filter(|p| p.request == request)
            .map(|p| p.deployment)
            .collect();
        ds.sort_unstable();
        ds.dedup();
        ds
    }

    /// `d`'s health with `request`'s own pending effects applied, and what they cause.
    fn own_health(&self, d: DeploymentId, request: u64) -> (Health, Caused) {
        let mut h = self.health[d.0 as usize].clone();
        let at = self
            .pending
            .iter()
            .find(|p| p.request == request && p.deployment == d);
        let caused = at.and_then(|first| {
            combine(
                &mut h,
                first.at,
                self.pending
                    .iter()
                    .filter(|p| p.request == request && p.deployment == d)
                    .map(|p| &p.effect),
            )
        });
        (h, caused)
    }

    /// The instant `d` is healthy again, if it is cooling at `now`.
    pub fn cooling_until(&self, d: DeploymentId, now: Instant) -> Option<Instant> {
        self.health[d.0 as usize]
            .cooled_until
            .filter(|until| *until > now)
    }

    pub fn is_cooling(&self, d: DeploymentId, now: Instant) -> bool {
        self.cooling_until(d, now).is_some()
    }

    pub fn record_success(&mut self, d: DeploymentId, now: Instant, request: u64) {
        self.settle(now);
        self.pending.push(Pending {
            at: now,
            request,
            deployment: d,
            effect: Effect::Success,
            handed_over: false,
        });
    }

    /// Applies the decision table's cool-down column, and says whether this failure cooled
    /// `d` as `request` sees it. Mocked failures must not be recorded (they say nothing
    /// about the deployment); the caller ensures that.
    pub fn record_failure(
        &mut self,
        d: DeploymentId,
        failure: &Failure,
        now: Instant,
        settings: &GatewaySettings,
        request: u64,
    ) -> Option<Cooled> {
        let class = failure.class;
        let own = self.own_cooldown[d.0 as usize];
        if own.is_some_and(|c| c.is_zero()) {
            // LiteLLM skips its whole cooldown logic, counting included, for a cooldown
            // of zero (`cooldown_handlers.py`, `_should_run_cooldown_logic`).
            return None;
        }
        let lone = self.lone[d.0 as usize];
        if !settings.cooldown_by_failure_rate && !may_cool(class, lone, settings) {
            return None;
        }
        let rule = class.actions(settings.fallback_on_bad_request).cool_down;
        if rule == CoolDown::Never {
            return None;
        }
        // The deployment's own cooldown_time first, then the response's Retry-After, then
        // the gateway's, whatever the failure's class: a 503 that asks for 120 s rests that
        // long once past `allowed_fails` (LiteLLM: `router.py`,
        // `Router.deployment_callback_on_failure`).
        let duration = own
            .or(failure.retry_after)
            .unwrap_or(settings.cooldown_time);
        if duration.is_zero() && !settings.cooldown_by_failure_rate {
            // A Retry-After of 0: no cooldown logic at all, as for an own cooldown_time of
            // 0 above, so the failure neither counts nor resets the count. (The rate rule
            // still counts it among the minute's failures, as LiteLLM does before it asks;
            // a cooldown of 0 is then never set.)
            return None;
        }
        // `allowed_fails_policy` names how many failures of this class are allowed: a class
        // that cools at once (a rate limit, an auth failure) then counts too.
        let effect = match (settings.allowed_fails_for(class), rule) {
            // Validation keeps `allowed_fails_policy` (and `allowed_fails`) away from this.
            _ if settings.cooldown_by_failure_rate => {
                let lone = lone && !settings.cooldown_lone_deployment;
                Effect::Rated {
                    class,
                    duration,
                    // What cools at once still does (a 429 but on a lone deployment, an
                    // auth or not-found failure); the rest waits for the rate rule.
                    immediate: rule == CoolDown::Immediately && may_cool(class, lone, settings),
                    lone,
                }
            }
            (Some(allowed_fails), _) => Effect::Counted {
                class,
                allowed_fails,
                cooldown_time: duration,
            },
            (None, CoolDown::AfterAllowedFails) => Effect::Counted {
                class,
                allowed_fails: settings.allowed_fails,
                cooldown_time: duration,
            },
            (None, _) => Effect::Immediate { class, duration },
        };
        self.settle(now);
        let (_, before) = self.own_health(d, request);
        self.pending.push(Pending {
            at: now,
            request,
            deployment: d,
            effect,
            handed_over: false,
        });
        let (h, after) = self.own_health(d, request);
        let (duration, _) = after.filter(|_| after != before)?;
        Some(Cooled {
            deployment: d,
            until: h.cooled_until.expect("a cooldown was just caused"),
            duration,
        })
    }

    /// Remaining cooldown of every deployment at `now` (zero when healthy), in id order,
    /// with every effect so far applied: what the equivalence check compares after a run.
    pub fn remaining(&self, now: Instant) -> Vec<Duration> {
        let mut settled = self.clone();
        settled.settle(now + Duration::from_nanos(1));
        settled
            .health
            .iter()
            .map(|h| {
                h.cooled_until
                    .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::FailureClass;

    fn settings(allowed_fails: u32, cooldown: u64) -> GatewaySettings {
        GatewaySettings {
            allowed_fails,
            cooldown_time: Duration::from_secs(cooldown),
            ..GatewaySettings::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rate_limit_cools_at_once_for_retry_after_then_expires() {
        let mut book = CooldownBook::new(1);
        let d = DeploymentId(0);
        let now = Instant::now();
        let mut f = Failure::new(FailureClass::RateLimited, "x");
        f.retry_after = Some(Duration::from_secs(2));
        let cooled = book
            .record_failure(d, &f, now, &settings(3, 60), 1)
            .unwrap();
        assert_eq!(cooled.duration, Duration::from_secs(2));
        let later = now + ms(1);
        assert!(book.view(2, later).is_cooling(d, now + ms(1999)));
        assert!(
            !book
                .view(2, later)
                .is_cooling(d, now + Duration::from_secs(2)),
            "cooldown expires exactly at its end"
        );
        // Without Retry-After, cooldown_time applies.
        f.retry_after = None;
        let cooled = book
            .record_failure(d, &f, later, &settings(3, 60), 1)
            .unwrap();
        assert_eq!(cooled.duration, Duration::from_secs(60));
    }

    #[test]
    fn a_deployments_own_cooldown_time_beats_retry_after_and_zero_never_cools() {
        let yaml = "allow_anonymous: true\nmodel_list:\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://a/v1\", cooldown_time: 1}}\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://b/v1\", cooldown_time: 0}}\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://c/v1\"}}\n";
        let catalog = crate::catalog::Catalog::new(
            &crate::config::GatewayConfig::load("t.yaml", yaml).unwrap(),
        )
        .unwrap();
        let mut book = CooldownBook::for_catalog(&catalog);
        let now = Instant::now();
        let mut f = Failure::new(FailureClass::RateLimited, "429");
        f.retry_after = Some(Duration::from_secs(30));
        let s = settings(0, 60);
        let cooled = |book: &mut CooldownBook, d: u32, f: &Failure| {
            book.record_failure(DeploymentId(d), f, now, &s, 1)
                .map(|c| c.duration)
        };
        assert_eq!(cooled(&mut book, 0, &f), Some(Duration::from_secs(1)));
        assert_eq!(
            cooled(&mut book, 1, &f),
            None,
            "cooldown_time 0: never cooled"
        );
        assert_eq!(cooled(&mut book, 2, &f), Some(Duration::from_secs(30)));
        let t = Failure::new(FailureClass::Transient, "503");
        assert_eq!(cooled(&mut book, 1, &t), None);
        f.retry_after = None;
        let mut book = CooldownBook::for_catalog(&catalog);
        assert_eq!(cooled(&mut book, 0, &t), Some(Duration::from_secs(1)));
        assert_eq!(cooled(&mut book, 2, &t), Some(Duration::from_secs(60)));
    }

    /// `max_cooldown` is the longest any deployment is cooled: the built-in `cooldown_time`
    /// (5 s) must not outlast a smaller limit when the config sets no `cooldown_time`.
    #[test]
    fn the_default_cooldown_time_never_exceeds_max_cooldown() {
        let yaml = "allow_anonymous: true\nmodel_list:\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://a/v1\"}}\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://b/v1\"}}\nlimits: {max_cooldown: 1}\n";
        let catalog = crate::catalog::Catalog::new(
            &crate::config::GatewayConfig::load("t.yaml", yaml).unwrap(),
        )
        .unwrap();
        assert_eq!(catalog.settings.cooldown_time, Duration::from_secs(1));
        let mut book = CooldownBook::for_catalog(&catalog);
        let now = Instant::now();
        // A 429 without Retry-After cools at once for the gateway's cooldown_time; an auth
        // failure too.
        for (d, class) in [(0, FailureClass::RateLimited), (1, FailureClass::Auth)] {
            let f = Failure::new(class, "x");
            let cooled = book
                .record_failure(DeploymentId(d), &f, now, &catalog.settings, 1)
                .map(|c| c.duration);
            assert_eq!(cooled, Some(Duration::from_secs(1)), "{class:?}");
        }
        // A limit above the default leaves the default alone.
        let catalog = crate::catalog::Catalog::new(
            &crate::config::GatewayConfig::load(
                "t.yaml",
                &yaml.replace("max_cooldown: 1", "max_cooldown: 60"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            catalog.settings.cooldown_time,
            crate::catalog::DEFAULT_COOLDOWN_TIME
        );
    }

    #[test]
    fn transient_failures_cool_after_allowed_fails() {
        let mut book = CooldownBook::new(1);
        let d = DeploymentId(0);
        let t = Instant::now();
        let s = settings(2, 10);
        let f = Failure::new(FailureClass::Transient, "x");
        assert!(book.record_failure(d, &f, t, &s, 1).is_none());
        assert!(book.record_failure(d, &f, t + ms(1), &s, 1).is_none());
        assert!(
            book.record_failure(d, &f, t + ms(2), &s, 1).is_some(),
            "the third failure is over allowed_fails = 2"
        );
        // A success in between resets the count.
        let mut book = CooldownBook::new(1);
        book.record_failure(d, &f, t, &s, 1);
        book.record_failure(d, &f, t + ms(1), &s, 1);
        book.record_success(d, t + ms(2), 1);
        assert!(book.record_failure(d, &f, t + ms(3), &s, 1).is_none());
    }

    #[test]
    fn client_side_classes_never_cool() {
        let mut book = CooldownBook::new(1);
        let now = Instant::now();
        for class in [
            FailureClass::ContextWindow,
            FailureClass::ContentPolicy,
            FailureClass::BadRequest,
        ] {
            let f = Failure::new(class, "x");
            assert!(
                book.record_failure(DeploymentId(0), &f, now, &settings(0, 10), 1)
                    .is_none()
            );
        }
        let auth = Failure::new(FailureClass::Auth, "x");
        assert!(
            book.record_failure(DeploymentId(0), &auth, now, &settings(0, 10), 1)
                .is_some()
        );
    }

    #[test]
    fn zero_cooldown_time_disables_cooling() {
        let mut book = CooldownBook::new(1);
        let f = Failure::new(FailureClass::Auth, "x");
        let now = Instant::now();
        assert!(
            book.record_failure(DeploymentId(0), &f, now, &settings(0, 0), 1)
                .is_none()
        );
        assert!(
            !book
                .view(2, now + ms(1))
                .is_cooling(DeploymentId(0), now + ms(1))
        );
    }

    #[test]
    fn another_requests_effect_is_seen_from_the_next_instant_its_own_at_once() {
        let mut book = CooldownBook::new(1);
        let d = DeploymentId(0);
        let t = Instant::now();
        let f = Failure::new(FailureClass::RateLimited, "x");
        assert!(book.record_failure(d, &f, t, &settings(0, 10), 1).is_some());
        assert!(book.view(1, t).is_cooling(d, t), "its own failure, at once");
        assert!(
            !book.view(2, t).is_cooling(d, t),
            "another's, not in the same instant"
        );
        assert!(book.view(2, t + ms(1)).is_cooling(d, t + ms(1)));
    }

    #[test]
    fn a_lone_deployment_is_cooled_only_for_auth_and_not_found_by_default() {
        let s = settings(0, 10);
        let on = GatewaySettings {
            cooldown_lone_deployment: true,
            ..s.clone()
        };
        for class in FailureClass::ALL {
            let cools_anyway = matches!(class, FailureClass::Auth | FailureClass::NotFound);
            assert_eq!(may_cool(class, true, &s), cools_anyway, "{class:?}");
            assert!(may_cool(class, true, &on), "{class:?}");
            assert!(may_cool(class, false, &s), "{class:?}");
        }
        let mut book = CooldownBook::new(1);
        book.lone[0] = true;
        let t = Instant::now();
        let limited = Failure::new(FailureClass::RateLimited, "x");
        assert!(
            book.record_failure(DeploymentId(0), &limited, t, &s, 1)
                .is_none()
        );
        assert!(
            book.record_failure(DeploymentId(0), &limited, t, &on, 1)
                .is_some()
        );
    }

    /// The combined result of one instant's effects does not depend on the order in which
    /// the requests reported them: every permutation settles to the same health.
    #[test]
    fn an_instants_effects_settle_alike_in_any_order() {
        let d = DeploymentId(0);
        let t = Instant::now();
        let s = settings(1, 5);
        let transient = Failure::new(FailureClass::Transient, "x");
        let mut limited = Failure::new(FailureClass::RateLimited, "x");
        limited.retry_after = Some(Duration::from_secs(2));
        // (request, outcome): None = success.
        let outcomes: [(u64, Option<&Failure>); 4] = [
            (1, Some(&transient)),
            (2, None),
            (3, Some(&transient)),
            (4, Some(&limited)),
        ];
        let mut seen = Vec::new();
        for perm in permutations(&[0, 1, 2, 3]) {
            for with_limit in [false, true] {
                let mut book = CooldownBook::new(1);
                let mut reported = Vec::new();
                for &i in &perm {
                    let (request, outcome) = outcomes[i];
                    match outcome {
                        Some(f) if !with_limit && f.class == FailureClass::RateLimited => {}
                        Some(f) => reported.push(book.record_failure(d, f, t, &s, request)),
                        None => book.record_success(d, t, request),
                    }
                }
                let later = t + ms(1);
                book.settle(later);
                let cooling = book.cooling_until(d, later);
                let unreported = book.take_unreported();
                reported.sort_by_key(|c| c.map(|c| c.duration));
                seen.push((with_limit, cooling, unreported, reported));
            }
        }
        for (with_limit, cooling, unreported, reported) in &seen {
            let first = seen.iter().find(|x| x.0 == *with_limit).unwrap();
            assert_eq!(
                (cooling, unreported, reported),
                (&first.1, &first.2, &first.3)
            );
        }
        // Without the rate limit: two transient failures together exceed allowed_fails = 1
        // though neither does alone, so settling reports the cooldown, on request 1.
        let plain = seen.iter().find(|x| !x.0).unwrap();
        assert_eq!(plain.1, Some(t + Duration::from_secs(5)));
        assert_eq!(plain.2.len(), 1);
        assert_eq!(plain.2[0].request, 1);
        assert_eq!(plain.2[0].class, FailureClass::Transient);
        // With it: request 4 reported its own cooldown; the longer transient one wins.
        let limited = seen.iter().find(|x| x.0).unwrap();
        assert_eq!(limited.1, Some(t + Duration::from_secs(5)));
        assert!(limited.2.is_empty(), "request 4 reported a cooldown itself");
    }

    /// Under `allowed_fails_policy`, failures of different classes in one instant have
    /// different allowances: the strictest one and the longest cooldown apply, in any order.
    #[test]
    fn allowances_per_class_combine_alike_in_any_order() {
        let d = DeploymentId(0);
        let t = Instant::now();
        let s = GatewaySettings {
            allowed_fails_policy: crate::config::AllowedFailsPolicy {
                rate_limit: Some(5),
                internal_server: Some(1),
                ..Default::default()
            },
            ..settings(3, 5)
        };
        let mut limited = Failure::new(FailureClass::RateLimited, "429");
        limited.retry_after = Some(Duration::from_secs(2));
        let transient = Failure::new(FailureClass::Transient, "503");
        for order in [[&limited, &transient], [&transient, &limited]] {
            let mut book = CooldownBook::new(1);
            for (request, f) in order.iter().enumerate() {
                assert_eq!(
                    book.record_failure(d, f, t, &s, request as u64 + 1),
                    None,
                    "neither request's own failure passes its allowance"
                );
            }
            book.settle(t + ms(1));
            assert_eq!(
                book.cooling_until(d, t + ms(1)),
                Some(t + Duration::from_secs(5)),
                "two failures pass the 503's allowance of 1; the longer cooldown wins"
            );
            assert_eq!(book.take_unreported().len(), 1);
        }
        // One 429 alone is within its allowance of 5: not cooled at once any more.
        let mut book = CooldownBook::new(1);
        assert_eq!(book.record_failure(d, &limited, t, &s, 1), None);
    }

    #[test]
    fn failure_rate_cools_past_half_of_five_and_a_lone_deployment_only_at_a_thousand() {
        let s = GatewaySettings {
            cooldown_by_failure_rate: true,
            ..settings(3, 10)
        };
        let f = Failure::new(FailureClass::Transient, "500");
        let t = Instant::now();
        let mut book = CooldownBook::new(1);
        let d = DeploymentId(0);
        let mut at = t;
        let mut step = |book: &mut CooldownBook, ok: bool| {
            at += ms(10);
            if ok {
                book.record_success(d, at, 1);
                None
            } else {
                book.record_failure(d, &f, at, &s, 1)
            }
        };
        assert_eq!(step(&mut book, true), None);
        assert_eq!(step(&mut book, true), None);
        assert_eq!(step(&mut book, false), None, "1 in 3");
        assert_eq!(step(&mut book, false), None, "2 in 4: not over half");
        let cooled = step(&mut book, false).expect("3 in 5 is over half of at least 5");
        assert_eq!(cooled.duration, Duration::from_secs(10));

        // A lone deployment: 5 failures in 5 do not cool it; 1,000 in 1,000 do.
        let mut book = CooldownBook::new(1);
        book.lone[0] = true;
        let mut cooled_at = None;
        for i in 1..=LONE_DEPLOYMENT_ALL_FAILED_REQUESTS {
            at += ms(10);
            if book.record_failure(d, &f, at, &s, 1).is_some() {
                cooled_at = Some(i);
                break;
            }
        }
        assert_eq!(cooled_at, Some(LONE_DEPLOYMENT_ALL_FAILED_REQUESTS));
        // A 429 still cools a deployment that is not alone at once.
        let mut book = CooldownBook::new(1);
        let limited = Failure::new(FailureClass::RateLimited, "429");
        assert!(book.record_failure(d, &limited, at, &s, 1).is_some());
    }

    /// Under the rate rule a Retry-After of 0 still counts among the minute's failures (it
    /// tips the next failure over half), but itself never cools, even past half: a cooldown
    /// of 0 is never set (LiteLLM counts before it asks `_should_run_cooldown_logic`).
    #[test]
    fn under_the_rate_rule_a_retry_after_of_zero_counts_but_never_cools() {
        let s = GatewaySettings {
            cooldown_by_failure_rate: true,
            ..settings(3, 10)
        };
        let transient = Failure::new(FailureClass::Transient, "500");
        let mut zero = Failure::new(FailureClass::Transient, "503");
        zero.retry_after = Some(Duration::ZERO);
        let d = DeploymentId(0);
        let start = Instant::now();
        let run = |failures: &[&Failure]| {
            let mut book = CooldownBook::new(2);
            let mut at = start;
            for _ in 0..2 {
                at += ms(10);
                book.record_success(d, at, 1);
            }
            let mut last = None;
            for f in failures {
                at += ms(10);
                last = book.record_failure(d, f, at, &s, 1);
            }
            (last, book.view(9, at + ms(1)).is_cooling(d, at + ms(1)))
        };
        let (cooled, cooling) = run(&[&transient, &zero, &transient]);
        assert_eq!(
            cooled.map(|c| c.duration),
            Some(Duration::from_secs(10)),
            "3 in 5 with the zero counted (2 in 4 without it)"
        );
        assert!(cooling);
        let (cooled, cooling) = run(&[&transient, &transient, &zero]);
        assert_eq!(
            cooled, None,
            "3 in 5, but the failure over half asks for 0 s"
        );
        assert!(!cooling);
    }

    /// Rated failures and successes of one instant settle alike in any order, and the rate
    /// is judged after the instant's failures, before its successes.
    #[test]
    fn rated_effects_of_an_instant_settle_alike_in_any_order() {
        let s = GatewaySettings {
            cooldown_by_failure_rate: true,
            ..settings(3, 10)
        };
        let d = DeploymentId(0);
        let t = Instant::now();
        let f = Failure::new(FailureClass::Transient, "500");
        let mut seen = Vec::new();
        for perm in permutations(&[0, 1, 2, 3, 4]) {
            let mut book = CooldownBook::new(1);
            // Two earlier successes, then, in one instant, three failures and two successes.
            book.record_success(d, t, 9);
            book.record_success(d, t + ms(1), 9);
            let now = t + ms(2);
            for &i in &perm {
                if i < 3 {
                    book.record_failure(d, &f, now, &s, i as u64 + 1);
                } else {
                    book.record_success(d, now, i as u64 + 1);
                }
            }
            book.settle(now + ms(1));
            seen.push((
                book.cooling_until(d, now + ms(1)),
                book.take_unreported().len(),
            ));
        }
        assert!(seen.iter().all(|x| *x == seen[0]), "{seen:?}");
        assert_eq!(
            seen[0],
            (Some(t + ms(2) + Duration::from_secs(10)), 1),
            "3 failures in 5, the instant's successes counted after"
        );
    }

    fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for (i, first) in items.iter().enumerate() {
            let mut rest = items.to_vec();
            rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, *first);
                out.push(p);
            }
        }
        out
    }

    fn catalog_of(yaml: &str) -> crate::catalog::Catalog {
        crate::catalog::Catalog::new(&crate::config::GatewayConfig::load("t.yaml", yaml).unwrap())
            .unwrap()
    }

    /// A cooldown that needs both an effect handed over at a reload and one an old request
    /// recorded after it, at the same instant, is the old book's to report: the new book
    /// never sees the second effect, so it cannot.
    #[test]
    fn a_cooldown_the_handed_over_effects_alone_do_not_cause_is_reported_by_the_old_book() {
        let yaml = "allow_anonymous: true\nmodel_list:\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://a/v1\"}}\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://b/v1\"}}\nrouter_settings: {allowed_fails: 1, cooldown_time: 60}\n";
        let catalog = catalog_of(yaml);
        let mut old = CooldownBook::for_catalog(&catalog);
        let now = Instant::now();
        let d = DeploymentId(0);
        let f = Failure::new(FailureClass::Transient, "503");
        assert!(
            old.record_failure(d, &f, now, &catalog.settings, 1)
                .is_none()
        );
        let (mut new, _) = old.carried_over(&catalog, &catalog);
        // An old request still in flight fails on the old config, at the same instant.
        assert!(
            old.record_failure(d, &f, now, &catalog.settings, 2)
                .is_none()
        );
        let later = now + ms(1);
        old.settle(later);
        new.settle(later);
        assert!(
            old.is_cooling(d, later),
            "two failures against an allowance of one"
        );
        assert!(!new.is_cooling(d, later), "the new book has one of them");
        let reported = old.take_unreported();
        assert_eq!(reported.len(), 1, "the old book reports it: {reported:?}");
        assert_eq!(reported[0].request, 1);
        assert!(new.take_unreported().is_empty());
    }

    /// An effect a reload drops (the new config could not have caused it) is not handed
    /// over: the old book, which still applies it, reports what it causes.
    #[test]
    fn an_effect_a_reload_drops_is_still_reported_by_the_old_book() {
        let two = "allow_anonymous: true\nmodel_list:\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://a/v1\"}}\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://b/v1\"}}\nrouter_settings: {allowed_fails: 1, cooldown_time: 60}\n";
        let lone = "allow_anonymous: true\nmodel_list:\n  - {model_name: g, litellm_params: {model: m, api_base: \"http://a/v1\"}}\nrouter_settings: {allowed_fails: 1, cooldown_time: 60}\n";
        let (before, after) = (catalog_of(two), catalog_of(lone));
        let mut old = CooldownBook::for_catalog(&before);
        let now = Instant::now();
        let d = DeploymentId(0);
        let f = Failure::new(FailureClass::Transient, "503");
        // Two requests, one failure each: neither cools the deployment as it sees it.
        for request in [1, 2] {
            assert!(
                old.record_failure(d, &f, now, &before.settings, request)
                    .is_none()
            );
        }
        let (mut new, carried) = old.carried_over(&before, &after);
        assert_eq!(carried, vec![Some(d)]);
        assert!(
            !old.pending.iter().any(|p| p.handed_over),
            "a lone deployment is never cooled for a 503: nothing of it is handed over"
        );
        let later = now + ms(1);
        old.settle(later);
        new.settle(later);
        assert!(!new.is_cooling(d, later));
        assert!(new.take_unreported().is_empty());
        assert!(old.is_cooling(d, later), "the old config cools it");
        let reported = old.take_unreported();
        assert_eq!(reported.len(), 1, "the old book reports it: {reported:?}");
    }

    /// LiteLLM takes every cooldown's length from the failure's Retry-After (after the
    /// deployment's own `cooldown_time`), whatever the failure's class: a 503 that asks
    /// for 45 s and is past `allowed_fails` cools for 45 s, not the gateway's 60
    /// (`Router.deployment_callback_on_failure`).
    #[test]
    fn a_counted_failure_cools_for_its_retry_after() {
        let mut book = CooldownBook::new(2);
        let now = Instant::now();
        let mut f = Failure::new(FailureClass::Transient, "503");
        f.retry_after = Some(Duration::from_secs(45));
        let cooled = book
            .record_failure(DeploymentId(0), &f, now, &settings(0, 60), 1)
            .expect("past allowed_fails");
        assert_eq!(cooled.duration, Duration::from_secs(45));
        f.retry_after = None;
        let cooled = book
            .record_failure(DeploymentId(1), &f, now, &settings(0, 60), 1)
            .expect("past allowed_fails");
        assert_eq!(cooled.duration, Duration::from_secs(60));
    }

    /// A Retry-After of 0 makes the cooldown's length 0, and LiteLLM then runs none of its
    /// cooldown logic for the failure, counting included (`_should_run_cooldown_logic`):
    /// such a failure neither cools nor counts, nor resets the count of those before it.
    #[test]
    fn a_retry_after_of_zero_neither_cools_nor_counts() {
        let mut book = CooldownBook::new(2);
        let d = DeploymentId(0);
        let s = settings(1, 60);
        let start = Instant::now();
        let t = |n: u64| start + ms(n);
        let transient = Failure::new(FailureClass::Transient, "503");
        let mut now_503 = Failure::new(FailureClass::Transient, "503");
        now_503.retry_after = Some(Duration::ZERO);
        let mut now_429 = Failure::new(FailureClass::RateLimited, "429");
        now_429.retry_after = Some(Duration::ZERO);
        assert!(book.record_failure(d, &transient, t(0), &s, 1).is_none());
        assert!(book.record_failure(d, &now_503, t(10), &s, 2).is_none());
        assert!(
            !book.view(3, t(20)).is_cooling(d, t(20)),
            "one counted failure, within allowed_fails"
        );
        assert!(book.record_failure(d, &now_429, t(30), &s, 3).is_none());
        let cooled = book.record_failure(d, &transient, t(40), &s, 4);
        assert_eq!(
            cooled.map(|c| c.duration),
            Some(Duration::from_secs(60)),
            "the second counted failure is past allowed_fails: the 429 reset nothing"
        );
    }
}
