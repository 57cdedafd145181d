//! Choosing where an attempt goes inside a group, and when a retry may happen.
//!
//! Owns: the retry decision ([`plan_retry`]): is there budget left, which deployment takes
//! the retry, how long to wait (backoff, Retry-After, cooldown), and whether that wait still
//! fits the request deadline. Its parts live in submodules: [`select`] (weighted choice with
//! `order` tiers, skipping cooled deployments), [`cooldown`] (shared per-deployment health)
//! and [`backoff`] (exponential backoff with full jitter). All of it is pure: time and
//! randomness are parameters.

pub mod backoff;
pub mod cooldown;
pub mod select;

use std::time::Duration;

use rand::Rng;
/// The RNG trait [`RetryPolicy::decide`] draws from (re-exported so implementors need not
/// depend on the same `rand` version).
pub use rand::RngCore;
use tokio::time::Instant;

use self::cooldown::CooldownBook;
use self::select::{Choice, Tiers};
use crate::catalog::{Catalog, DeploymentId, GroupId};
use crate::classify::Failure;

/// Why a group gets no further retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The failure class is never retried in the same group (or it was a mock).
    NotRetryable,
    /// The group's retries for this class are spent.
    BudgetSpent,
    /// Every deployment is cooling for longer than `max_retry_after`.
    WaitTooLong(Duration),
    /// The wait would end past the request deadline.
    PastDeadline,
    /// Every deployment of the group is cooling (for at least this long): when the request
    /// reaches the group, which is then skipped without a call; or after a failure whose
    /// provider asked for no wait (no Retry-After), so the cooldown is not waited out.
    AllCooling(Duration),
    /// The failure may only be retried on a deployment of the tier this request has not
    /// tried in the group yet ([`Failure::retry_elsewhere_only`]), and none is healthy.
    NoOtherDeployment,
    /// The failure asked for a wait (a Retry-After) before its deployment, not cooled, is
    /// called again, and a higher `order` tier of the group has a healthy deployment that
    /// may take the request now: the tier gives way rather than wait.
    HealthyTierAbove(Duration),
}

impl GiveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::NotRetryable => "not_retryable",
            GiveUp::BudgetSpent => "budget_spent",
            GiveUp::WaitTooLong(_) => "wait_too_long",
            GiveUp::PastDeadline => "past_deadline",
            GiveUp::AllCooling(_) => "all_cooling",
            GiveUp::NoOtherDeployment => "no_other_deployment",
            GiveUp::HealthyTierAbove(_) => "healthy_tier_above",
        }
    }
}

/// What to do after a failed attempt, as far as the same group goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    Retry {
        deployment: DeploymentId,
        delay: Duration,
    },
    GiveUp(GiveUp),
}

/// Everything [`plan_retry`] needs to know about the failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct RetryContext<'a> {
    pub group: GroupId,
    pub failure: &'a Failure,
    /// Retries this failure's class allows in this group.
    pub retries_allowed: u32,
    /// Retries already made in this group.
    pub retries_used: u32,
    /// A mocked failure tests the fallback path: it is never retried.
    pub mocked: bool,
    /// The request has committed (its first content chunk arrived), in either mode.
    pub committed: bool,
    /// Deployments already tried in this group, in order.
    pub tried: &'a [DeploymentId],
    /// The `order` tier the request is in: retries stay inside it, unless
    /// `retries_follow_health`.
    pub tier: u32,
    /// Retries go to the lowest tier with a healthy deployment, whatever tier the request
    /// is in: a wildcard group's, whose tiers never fall back to one another, as LiteLLM
    /// routes each retry among every deployment of the requested name.
    pub retries_follow_health: bool,
    /// A higher tier could take over from this one (the plan allows an order-based
    /// fallback here, and the group is not a wildcard's). Only then is a healthy higher
    /// tier a reason not to wait out a cooling tier's Retry-After: a tier that cannot be
    /// reached serves nobody.
    pub order_fallback_possible: bool,
    pub now: Instant,
    pub deadline: Instant,
    pub max_wait: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// The retry decision as a seam: plain data in, decision out. The engine uses
/// [`DefaultRetryPolicy`] unless the embedder gives another one to
/// `Engine::with_retry_policy` (a tighter budget, a different backoff, or, in tests, a
/// deliberately wrong policy to prove the oracle catches it).
pub trait RetryPolicy: Send + Sync + 'static {
    fn decide(
        &self,
        cx: &RetryContext<'_>,
        catalog: &Catalog,
        book: &CooldownBook,
        rng: &mut dyn RngCore,
    ) -> RetryDecision;
}

/// [`plan_retry`], the policy DESIGN.md describes.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultRetryPolicy;

impl RetryPolicy for DefaultRetryPolicy {
    fn decide(
        &self,
        cx: &RetryContext<'_>,
        catalog: &Catalog,
        book: &CooldownBook,
        rng: &mut dyn RngCore,
    ) -> RetryDecision {
        plan_retry(cx, catalog, book, rng)
    }
}

/// Decides whether and where the group is retried. Retries stay inside the request's
/// current `order` tier ([`RetryContext::tier`]), but for a wildcard group's, which go to its
/// lowest tier with a healthy deployment ([`RetryContext::retries_follow_health`]); another
/// healthy deployment of the tier is preferred. If every deployment of the tier is cooling, the retry waits for the first to
/// come back only when the provider asked for that wait (the failure carried a Retry-After)
/// and no higher tier of the group has a healthy deployment (then the tier gives up and the
/// attempt loop takes an order-based fallback): that is how a Retry-After is honoured, up to
/// `max_wait` and never past the deadline. A cooldown the provider did not ask for
/// (transient failures past `allowed_fails`) is not waited out: the tier gives up at once
/// and the plan goes on.
///
/// A failure that the same deployment cannot mend ([`Failure::retry_elsewhere_only`]: an
/// `auth` failure, a quota or billing error) is retried only on a healthy deployment of the
/// tier not yet tried by this request in this group, never waited for: none, and the tier
/// gives up ([`GiveUp::NoOtherDeployment`]).
pub fn plan_retry(
    cx: &RetryContext<'_>,
    catalog: &Catalog,
    book: &CooldownBook,
    rng: &mut (impl Rng + ?Sized),
) -> RetryDecision {
    if cx.mocked || !cx.failure.class.actions(false).retry {
        return RetryDecision::GiveUp(GiveUp::NotRetryable);
    }
    if cx.retries_used >= cx.retries_allowed {
        return RetryDecision::GiveUp(GiveUp::BudgetSpent);
    }
    let jitter = backoff::full_jitter(cx.retries_used, cx.backoff_base, cx.backoff_max, rng);
    let choice = choose_in_tier(cx, catalog, book, rng)
        .expect("the request's tier has deployments: it made the failed attempt");
    if cx.failure.retry_elsewhere_only() {
        return match choice {
            Choice::Now(d) if !cx.tried.contains(&d) => {
                if cx.now + jitter >= cx.deadline {
                    RetryDecision::GiveUp(GiveUp::PastDeadline)
                } else {
                    RetryDecision::Retry {
                        deployment: d,
                        delay: jitter,
                    }
                }
            }
            // `choose_in` prefers untried healthy deployments: a tried one means none is left.
            Choice::Now(_) => RetryDecision::GiveUp(GiveUp::NoOtherDeployment),
            Choice::After(_, wait) => RetryDecision::GiveUp(GiveUp::AllCooling(wait)),
        };
    }
    let higher_tier_healthy = || {
        cx.order_fallback_possible
            && select::has_healthy(catalog, cx.group, Tiers::Above(cx.tier), book, cx.now)
    };
    let (deployment, delay) = match choice {
        // The deployment that asked for a wait was not cooled (the only one of its group,
        // see `cooldown::may_cool`, or one still within `allowed_fails`) and is the only
        // healthy one of its tier: its Retry-After is honoured all the same, unless a
        // healthy higher tier may take the request now, as when the failure cooled it.
        Choice::Now(d) if cx.tried.last() == Some(&d) && cx.failure.retry_after.is_some() => {
            let wait = cx.failure.retry_after.expect("checked");
            if higher_tier_healthy() {
                return RetryDecision::GiveUp(GiveUp::HealthyTierAbove(wait));
            }
            if wait > cx.max_wait {
                return RetryDecision::GiveUp(GiveUp::WaitTooLong(wait));
            }
            (d, wait.max(jitter))
        }
        Choice::Now(d) => (d, jitter),
        Choice::After(d, wait) => {
            if cx.failure.retry_after.is_none() || higher_tier_healthy() {
                return RetryDecision::GiveUp(GiveUp::AllCooling(wait));
            }
            if wait > cx.max_wait {
                return RetryDecision::GiveUp(GiveUp::WaitTooLong(wait));
            }
            (d, wait.max(jitter))
        }
    };
    if cx.now + delay >= cx.deadline {
        return RetryDecision::GiveUp(GiveUp::PastDeadline);
    }
    RetryDecision::Retry { deployment, delay }
}

/// Where a scheduled retry goes once its backoff is over: `None` keeps the deployment
/// [`plan_retry`] chose when it scheduled the retry (`planned`); `Some` names another one.
/// Another request may have cooled `planned` during the backoff (a failure of its own
/// there): then a deployment of the tier healthy now takes the retry, as LiteLLM's does (it
/// chooses a retry's deployment after the wait, among those healthy then). None healthy
/// (every one cooling, or, for a failure only another deployment can mend, none left
/// untried), and the retry goes where it was planned: the request was promised that
/// attempt, and a retry never waits twice.
pub fn reroute_after_backoff(
    cx: &RetryContext<'_>,
    planned: DeploymentId,
    catalog: &Catalog,
    book: &CooldownBook,
    rng: &mut (impl Rng + ?Sized),
) -> Option<DeploymentId> {
    if catalog.pinned(cx.group).is_some() || !book.is_cooling(planned, cx.now) {
        return None;
    }
    let choice = choose_in_tier(cx, catalog, book, rng)?;
    match choice {
        Choice::Now(d) if cx.failure.retry_elsewhere_only() && cx.tried.contains(&d) => None,
        Choice::Now(d) => {
            debug_assert_ne!(d, planned, "a cooling deployment is never chosen now");
            Some(d)
        }
        Choice::After(..) => None,
    }
}

/// A deployment of the request's tier of its group for a retry, untried healthy ones first.
fn choose_in_tier(
    cx: &RetryContext<'_>,
    catalog: &Catalog,
    book: &CooldownBook,
    rng: &mut (impl Rng + ?Sized),
) -> Option<Choice> {
    let tiers = match cx.retries_follow_health {
        true => Tiers::Any,
        false => Tiers::Only(cx.tier),
    };
    select::choose_in(catalog, cx.group, tiers, book, cx.now, cx.tried, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::GatewaySettings;
    use crate::classify::FailureClass;
    use crate::config::GatewayConfig;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn catalog(n: usize) -> Catalog {
        let mut yaml = String::from("allow_anonymous: true\nmodel_list:\n");
        for i in 0..n {
            yaml.push_str(&format!(
                "  - {{model_name: g, litellm_params: {{model: m, api_base: \"http://p{i}/v1\"}}, model_info: {{id: d{i}}}}}\n"
            ));
        }
        Catalog::new(&GatewayConfig::load("t.yaml", &yaml).unwrap()).unwrap()
    }

    fn cx<'a>(failure: &'a Failure, tried: &'a [DeploymentId], now: Instant) -> RetryContext<'a> {
        RetryContext {
            group: GroupId(0),
            failure,
            retries_allowed: 2,
            retries_used: 0,
            mocked: false,
            committed: false,
            tried,
            tier: 0,
            retries_follow_health: false,
            order_fallback_possible: true,
            now,
            deadline: now + Duration::from_secs(60),
            max_wait: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }

    fn settings() -> GatewaySettings {
        GatewaySettings::default()
    }

    #[test]
    fn budget_and_class_gate_retries() {
        let c = catalog(1);
        let book = CooldownBook::new(1);
        let now = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let f = Failure::new(FailureClass::Transient, "x");
        let tried = [DeploymentId(0)];
        let mut ctx = cx(&f, &tried, now);
        assert!(matches!(
            plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
            RetryDecision::Retry { .. }
        ));
        ctx.retries_used = 2;
        assert_eq!(
            plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
            RetryDecision::GiveUp(GiveUp::BudgetSpent)
        );
        let ctxw = Failure::new(FailureClass::ContextWindow, "x");
        let ctx = cx(&ctxw, &tried, now);
        assert_eq!(
            plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
            RetryDecision::GiveUp(GiveUp::NotRetryable)
        );
        let mut ctx = cx(&f, &tried, now);
        ctx.mocked = true;
        assert_eq!(
            plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
            RetryDecision::GiveUp(GiveUp::NotRetryable)
        );
    }

    #[test]
    fn retry_prefers_another_healthy_deployment() {
        let c = catalog(2);
        let book = CooldownBook::new(2);
        let now = Instant::now();
        let f = Failure::new(FailureClass::Transient, "x");
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let tried = [DeploymentId(1)];
            match plan_retry(&cx(&f, &tried, now), &c, &book.view(1, now), &mut rng) {
                RetryDecision::Retry { deployment, delay } => {
                    assert_eq!(deployment, DeploymentId(0));
                    assert!(
                        delay <= Duration::from_millis(100),
                        "first retry backoff is at most the base"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_by_waiting_for_the_cooldown() {
        let c = catalog(1);
        let mut book = CooldownBook::new(1);
        let now = Instant::now();
        let mut f = Failure::new(FailureClass::RateLimited, "x");
        f.retry_after = Some(Duration::from_secs(3));
        book.record_failure(DeploymentId(0), &f, now, &settings(), 1);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let tried = [DeploymentId(0)];
        assert_eq!(
            plan_retry(&cx(&f, &tried, now), &c, &book.view(1, now), &mut rng),
            RetryDecision::Retry {
                deployment: DeploymentId(0),
                delay: Duration::from_secs(3)
            }
        );
        // Over the cap: give up on the group (fall back) instead of waiting.
        f.retry_after = Some(Duration::from_secs(30));
        let mut book = CooldownBook::new(1);
        book.record_failure(DeploymentId(0), &f, now, &settings(), 1);
        assert_eq!(
            plan_retry(&cx(&f, &tried, now), &c, &book.view(1, now), &mut rng),
            RetryDecision::GiveUp(GiveUp::WaitTooLong(Duration::from_secs(30)))
        );
    }

    #[test]
    fn a_cooldown_the_provider_did_not_ask_for_is_not_waited_out() {
        // Two 503s cooled the only deployment for cooldown_time: no Retry-After, so the
        // group gives up at once and the plan goes on (no 5 s wait for a retry).
        let c = catalog(1);
        let mut book = CooldownBook::new(1);
        let now = Instant::now();
        let f = Failure::new(FailureClass::Transient, "503");
        let s = GatewaySettings {
            allowed_fails: 0,
            ..settings()
        };
        book.record_failure(DeploymentId(0), &f, now, &s, 1);
        let tried = [DeploymentId(0)];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            plan_retry(&cx(&f, &tried, now), &c, &book.view(1, now), &mut rng),
            RetryDecision::GiveUp(GiveUp::AllCooling(s.cooldown_time))
        );
    }

    fn tiered(orders: &[u32]) -> Catalog {
        let mut yaml = String::from("allow_anonymous: true\nmodel_list:\n");
        for (i, order) in orders.iter().enumerate() {
            yaml.push_str(&format!(
                "  - {{model_name: g, litellm_params: {{model: m, api_base: \"http://p{i}/v1\", order: {order}}}, model_info: {{id: d{i}}}}}\n"
            ));
        }
        Catalog::new(&GatewayConfig::load("t.yaml", &yaml).unwrap()).unwrap()
    }

    #[test]
    fn retries_stay_in_their_tier() {
        let c = tiered(&[1, 2]);
        let book = CooldownBook::new(2);
        let now = Instant::now();
        let f = Failure::new(FailureClass::Transient, "500");
        let tried = [DeploymentId(0)];
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut ctx = cx(&f, &tried, now);
            ctx.tier = 1;
            assert!(matches!(
                plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
                RetryDecision::Retry {
                    deployment: DeploymentId(0),
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_cooling_tier_is_not_waited_for_while_a_higher_one_is_healthy() {
        let c = tiered(&[1, 2]);
        let mut book = CooldownBook::new(2);
        let now = Instant::now();
        let mut f = Failure::new(FailureClass::RateLimited, "429");
        f.retry_after = Some(Duration::from_secs(1));
        book.record_failure(DeploymentId(0), &f, now, &settings(), 1);
        let tried = [DeploymentId(0)];
        let mut ctx = cx(&f, &tried, now);
        ctx.tier = 1;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
            RetryDecision::GiveUp(GiveUp::AllCooling(Duration::from_secs(1))),
            "the order-2 tier is healthy: the tier gives up, for an order-based fallback"
        );
        // A healthy tier the request may not fall back to (fallbacks disabled, max_fallbacks
        // spent, a wildcard group) serves nobody: the Retry-After is waited out.
        ctx.order_fallback_possible = false;
        assert_eq!(
            plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
            RetryDecision::Retry {
                deployment: DeploymentId(0),
                delay: Duration::from_secs(1)
            },
            "no order-based fallback can be taken: the cooling tier is waited for"
        );
        // The top tier cooling, with nothing above it: the Retry-After is waited out.
        book.record_failure(DeploymentId(1), &f, now, &settings(), 1);
        let tried = [DeploymentId(1)];
        let mut ctx = cx(&f, &tried, now);
        ctx.tier = 2;
        assert_eq!(
            plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
            RetryDecision::Retry {
                deployment: DeploymentId(1),
                delay: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn a_lone_deployment_is_not_cooled_but_its_retry_after_is_honoured() {
        let c = catalog(1);
        let mut book = CooldownBook::for_catalog(&c);
        let now = Instant::now();
        let mut f = Failure::new(FailureClass::RateLimited, "429");
        f.retry_after = Some(Duration::from_secs(2));
        assert_eq!(
            book.record_failure(DeploymentId(0), &f, now, &settings(), 1),
            None
        );
        let tried = [DeploymentId(0)];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            plan_retry(&cx(&f, &tried, now), &c, &book.view(1, now), &mut rng),
            RetryDecision::Retry {
                deployment: DeploymentId(0),
                delay: Duration::from_secs(2)
            }
        );
        f.retry_after = Some(Duration::from_secs(20));
        assert_eq!(
            plan_retry(&cx(&f, &tried, now), &c, &book.view(1, now), &mut rng),
            RetryDecision::GiveUp(GiveUp::WaitTooLong(Duration::from_secs(20)))
        );
    }

    #[test]
    fn a_failure_the_same_deployment_cannot_mend_is_retried_elsewhere_only() {
        let now = Instant::now();
        let mut quota = Failure::new(FailureClass::RateLimited, "credit balance too low");
        quota.quota = true;
        let auth = Failure::new(FailureClass::Auth, "401");
        for f in [&quota, &auth] {
            // Alone in its group (not cooled): no retry on the same deployment.
            let c = catalog(1);
            let book = CooldownBook::for_catalog(&c);
            let tried = [DeploymentId(0)];
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            assert_eq!(
                plan_retry(&cx(f, &tried, now), &c, &book.view(1, now), &mut rng),
                RetryDecision::GiveUp(GiveUp::NoOtherDeployment),
                "{f:?}"
            );
            // With two, the other one, even though the failed one is not cooling; both
            // tried: give up.
            let c = catalog(2);
            let book = CooldownBook::new(2);
            for seed in 0..10 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                assert!(matches!(
                    plan_retry(&cx(f, &tried, now), &c, &book.view(1, now), &mut rng),
                    RetryDecision::Retry {
                        deployment: DeploymentId(1),
                        ..
                    }
                ));
            }
            let both = [DeploymentId(0), DeploymentId(1)];
            assert_eq!(
                plan_retry(&cx(f, &both, now), &c, &book.view(1, now), &mut rng),
                RetryDecision::GiveUp(GiveUp::NoOtherDeployment)
            );
        }
    }

    #[test]
    fn never_past_the_deadline() {
        let c = catalog(1);
        let mut book = CooldownBook::new(1);
        let now = Instant::now();
        let mut f = Failure::new(FailureClass::RateLimited, "x");
        f.retry_after = Some(Duration::from_secs(5));
        book.record_failure(DeploymentId(0), &f, now, &settings(), 1);
        let tried = [DeploymentId(0)];
        let mut ctx = cx(&f, &tried, now);
        ctx.deadline = now + Duration::from_secs(4);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            plan_retry(&ctx, &c, &book.view(1, now), &mut rng),
            RetryDecision::GiveUp(GiveUp::PastDeadline)
        );
    }

    /// Where a retry planned on d1 (of d0..d2, after `failure` on d0) goes 50 ms later, when
    /// another request cooled each of `cooled` (a 503 with no allowed fails) as it was
    /// planned.
    fn reroute_planned_d1(failure: &Failure, cooled: &[u32], seed: u64) -> Option<DeploymentId> {
        let c = catalog(3);
        let planned_at = Instant::now();
        let later = planned_at + Duration::from_millis(50);
        let mut book = CooldownBook::new(3);
        let s = GatewaySettings {
            allowed_fails: 0,
            ..settings()
        };
        let cause = Failure::new(FailureClass::Transient, "503");
        for &d in cooled {
            book.record_failure(DeploymentId(d), &cause, planned_at, &s, 2);
        }
        let tried = [DeploymentId(0)];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ctx = cx(failure, &tried, later);
        reroute_after_backoff(&ctx, DeploymentId(1), &c, &book.view(1, later), &mut rng)
    }

    #[test]
    fn a_retry_keeps_its_deployment_unless_it_cooled_during_the_backoff() {
        let f = Failure::new(FailureClass::Transient, "500");
        // Nobody cooled the planned deployment: it keeps the retry.
        assert_eq!(reroute_planned_d1(&f, &[2], 3), None);
        // Another request cooled it: a healthy deployment takes the retry, whatever the seed.
        for seed in 0..20 {
            let to = reroute_planned_d1(&f, &[1], seed);
            assert!(
                matches!(to, Some(DeploymentId(0 | 2))),
                "seed {seed}: {to:?}"
            );
        }
        // Every deployment cooling: the retry goes where it was planned (it never waits
        // twice).
        assert_eq!(reroute_planned_d1(&f, &[0, 1, 2], 3), None);
    }

    #[test]
    fn a_rerouted_retry_that_needs_another_deployment_never_returns_to_a_tried_one() {
        // d1 and d2 cooled: only the tried d0 is healthy, and it cannot mend an auth
        // failure; it may take a transient one's retry.
        let auth = Failure::new(FailureClass::Auth, "401");
        assert_eq!(reroute_planned_d1(&auth, &[1, 2], 5), None);
        let transient = Failure::new(FailureClass::Transient, "500");
        assert_eq!(
            reroute_planned_d1(&transient, &[1, 2], 5),
            Some(DeploymentId(0))
        );
    }
}
