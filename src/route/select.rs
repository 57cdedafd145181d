//! Picking a deployment inside a group.
//!
//! Owns: the choice among a group's deployments: keep the `order` tiers the caller allows
//! ([`Tiers`]), skip the ones cooling down, take the lowest tier left, prefer deployments
//! of that tier not yet tried by this request, then a weighted draw from the injected RNG
//! (LiteLLM's "simple-shuffle"). When every allowed deployment is cooling, it names the one
//! that comes back first and how long that takes.
//!
//! The tier comes before the preference for untried deployments: a retry never leaves its
//! tier for an untried deployment of a higher one (moving to the next tier is an
//! order-based fallback, decided by the attempt loop). A wildcard group's retry is the
//! exception: its tiers never fall back to one another, so it draws from every tier
//! ([`Tiers::Any`]; see `RetryContext::retries_follow_health`). LiteLLM picks the same way: cooling
//! deployments are filtered out first, then the lowest `order` left
//! (`litellm/router.py`, `Router.async_get_available_deployment`, through
//! `litellm/utils.py`, `_get_order_filtered_deployments`).

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::catalog::{Catalog, DeploymentId, GroupId};
use crate::route::cooldown::CooldownBook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Choice {
    /// A healthy deployment, usable now.
    Now(DeploymentId),
    /// Every deployment is cooling; this one is healthy again after the wait.
    After(DeploymentId, Duration),
}

/// The `order` tiers of a group a choice may draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiers {
    /// Any tier: the lowest one with a healthy deployment (a request entering a group).
    Any,
    /// Only this tier (a retry: retries stay inside their tier, but for a wildcard
    /// group's, which take [`Tiers::Any`]).
    Only(u32),
    /// Tiers above this one: the lowest of them with a healthy deployment (an order-based
    /// fallback).
    Above(u32),
}

impl Tiers {
    fn admits(self, order: u32) -> bool {
        match self {
            Tiers::Any => true,
            Tiers::Only(tier) => order == tier,
            Tiers::Above(tier) => order > tier,
        }
    }
}

/// [`choose_in`] over every tier of the group.
pub fn choose(
    catalog: &Catalog,
    group: GroupId,
    book: &CooldownBook,
    now: Instant,
    tried: &[DeploymentId],
    rng: &mut (impl Rng + ?Sized),
) -> Choice {
    choose_in(catalog, group, Tiers::Any, book, now, tried, rng)
        .expect("a validated group has at least one deployment")
}

/// Whether some deployment of `group` within `tiers` would be called at `now` (no draw):
/// one not cooling, or the deployment a group named by its id pins, which [`choose_in`]
/// calls cooling or not.
pub fn has_healthy(
    catalog: &Catalog,
    group: GroupId,
    tiers: Tiers,
    book: &CooldownBook,
    now: Instant,
) -> bool {
    let pinned = catalog.pinned(group).is_some();
    catalog.group(group).deployments.iter().any(|d| {
        tiers.admits(catalog.deployment(*d).order) && (pinned || !book.is_cooling(*d, now))
    })
}

/// The deployment of `group`, within `tiers`, that takes the next attempt; `None` when no
/// deployment of the group is in `tiers` at all.
pub fn choose_in(
    catalog: &Catalog,
    group: GroupId,
    tiers: Tiers,
    book: &CooldownBook,
    now: Instant,
    tried: &[DeploymentId],
    rng: &mut (impl Rng + ?Sized),
) -> Option<Choice> {
    let all: Vec<DeploymentId> = catalog
        .group(group)
        .deployments
        .iter()
        .copied()
        .filter(|d| tiers.admits(catalog.deployment(*d).order))
        .collect();
    if all.is_empty() {
        return None;
    }
    // A deployment named by its id is called as it is, cooling or not: LiteLLM hands it
    // back before any cooldown filter (see `Catalog::pinned`).
    let pinned = catalog.pinned(group).is_some();
    let healthy: Vec<DeploymentId> = all
        .iter()
        .copied()
        .filter(|d| pinned || !book.is_cooling(*d, now))
        .collect();
    if healthy.is_empty() {
        // Earliest to recover; ties go to catalog order, so the choice is deterministic.
        let (d, until) = all
            .iter()
            .map(|d| {
                (
                    *d,
                    book.cooling_until(*d, now)
                        .expect("every deployment is cooling"),
                )
            })
            .min_by_key(|(d, until)| (*until, *d))
            .expect("non-empty group");
        return Some(Choice::After(d, until - now));
    }
    let tier = healthy
        .iter()
        .map(|d| catalog.deployment(*d).order)
        .min()
        .expect("non-empty pool");
    let in_tier = healthy
        .into_iter()
        .filter(|d| catalog.deployment(*d).order == tier);
    let (fresh, stale): (Vec<DeploymentId>, Vec<DeploymentId>) =
        in_tier.partition(|d| !tried.contains(d));
    let pool = if fresh.is_empty() { stale } else { fresh };
    if pool.len() == 1 {
        return Some(Choice::Now(pool[0]));
    }
    let total: u64 = pool
        .iter()
        .map(|d| u64::from(catalog.deployment(*d).weight))
        .sum();
    // Shares by `rpm` or `tpm` may all be 0 (see `catalog`): then the draw is even.
    let share = |d: &DeploymentId| match total {
        0 => 1,
        _ => u64::from(catalog.deployment(*d).weight),
    };
    let total = if total == 0 { pool.len() as u64 } else { total };
    let mut ticket = rng.random_range(0..total);
    for d in &pool {
        let w = share(d);
        if ticket < w {
            return Some(Choice::Now(*d));
        }
        ticket -= w;
    }
    unreachable!("ticket below the total weight always lands on a deployment")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::GatewaySettings;
    use crate::classify::{Failure, FailureClass};
    use crate::config::GatewayConfig;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn catalog(specs: &[(u32, u32)]) -> Catalog {
        let mut yaml = String::from("allow_anonymous: true\nmodel_list:\n");
        for (i, (weight, order)) in specs.iter().enumerate() {
            yaml.push_str(&format!(
                "  - {{model_name: g, litellm_params: {{model: m, api_base: \"http://p{i}/v1\", weight: {weight}, order: {order}}}, model_info: {{id: d{i}}}}}\n"
            ));
        }
        Catalog::new(&GatewayConfig::load("t.yaml", &yaml).unwrap()).unwrap()
    }

    fn pick(c: &Catalog, book: &CooldownBook, tried: &[DeploymentId], seed: u64) -> Choice {
        choose(
            c,
            GroupId(0),
            book,
            Instant::now(),
            tried,
            &mut ChaCha8Rng::seed_from_u64(seed),
        )
    }

    #[test]
    fn deterministic_for_a_fixed_seed() {
        let c = catalog(&[(1, 0), (1, 0), (1, 0)]);
        let book = CooldownBook::new(3);
        let run = |seed: u64| {
            (0..10u64)
                .map(|i| pick(&c, &book, &[], seed * 100 + i))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        let spread: std::collections::BTreeSet<_> = run(1).into_iter().collect();
        assert!(
            spread.len() > 1,
            "different draws reach different deployments"
        );
    }

    #[test]
    fn weights_shape_the_split() {
        let c = catalog(&[(1, 0), (9, 0)]);
        let book = CooldownBook::new(2);
        let heavy = (0..1000)
            .filter(|s| pick(&c, &book, &[], *s) == Choice::Now(DeploymentId(1)))
            .count();
        assert!(
            (850..=950).contains(&heavy),
            "weight 9 of 10 got {heavy}/1000"
        );
    }

    /// LiteLLM's simple-shuffle shares a group by `weight`, else `rpm`, else `tpm`. Read as
    /// informational, a 900/10 `rpm` split was served 50/50.
    #[test]
    fn rpm_or_tpm_shape_the_split_when_no_weight_is_given() {
        let group = |params: [&str; 2]| {
            let mut yaml = String::from("allow_anonymous: true\nmodel_list:\n");
            for (i, extra) in params.iter().enumerate() {
                yaml.push_str(&format!(
                    "  - {{model_name: g, litellm_params: {{model: m, api_base: \"http://p{i}/v1\"{extra}}}, model_info: {{id: d{i}}}}}\n"
                ));
            }
            Catalog::new(&GatewayConfig::load("t.yaml", &yaml).unwrap()).unwrap()
        };
        let first = |c: &Catalog| {
            let book = CooldownBook::new(2);
            (0..1000)
                .filter(|s| pick(c, &book, &[], *s) == Choice::Now(DeploymentId(0)))
                .count()
        };
        for (params, low, high) in [
            ([", rpm: 900", ", rpm: 10"], 970, 1000),
            ([", tpm: 90000", ", tpm: 10000"], 850, 950),
            // `weight` first: the rpm split says nothing then.
            ([", weight: 1, rpm: 900", ", weight: 1, rpm: 10"], 430, 570),
            // A quota on one deployment alone shares nothing: an even draw.
            ([", rpm: 10", ""], 430, 570),
            ([", tpm: 10", ", rpm: 900"], 430, 570),
            // All 0: an even draw.
            ([", rpm: 0", ", rpm: 0"], 430, 570),
        ] {
            let n = first(&group(params));
            assert!((low..=high).contains(&n), "{params:?}: {n}/1000");
        }
    }

    #[test]
    fn lower_order_tier_first_and_cooled_ones_skipped() {
        let c = catalog(&[(1, 1), (1, 2)]);
        let mut book = CooldownBook::new(2);
        for seed in 0..20 {
            assert_eq!(pick(&c, &book, &[], seed), Choice::Now(DeploymentId(0)));
        }
        let now = Instant::now();
        let f = Failure::new(FailureClass::Auth, "x");
        let s = GatewaySettings::default();
        book.record_failure(DeploymentId(0), &f, now, &s, 1);
        assert_eq!(
            pick(&c, &book.view(1, now), &[], 0),
            Choice::Now(DeploymentId(1))
        );
        let later = now + Duration::from_secs(1);
        book.record_failure(DeploymentId(1), &f, later, &s, 1);
        match choose(
            &c,
            GroupId(0),
            &book.view(1, later),
            now,
            &[],
            &mut ChaCha8Rng::seed_from_u64(0),
        ) {
            Choice::After(d, wait) => {
                assert_eq!(d, DeploymentId(0), "the first to recover");
                assert_eq!(wait, s.cooldown_time);
            }
            other => panic!("{other:?}"),
        }
    }

    fn pick_in(
        c: &Catalog,
        book: &CooldownBook,
        tiers: Tiers,
        tried: &[DeploymentId],
    ) -> Option<Choice> {
        choose_in(
            c,
            GroupId(0),
            tiers,
            book,
            Instant::now(),
            tried,
            &mut ChaCha8Rng::seed_from_u64(0),
        )
    }

    /// Issue 17, item 1: a retry after a failure on the order-1 deployment, with nothing
    /// cooling, stays in order 1 rather than taking the untried order-2 deployment.
    #[test]
    fn the_tier_comes_before_untried_deployments() {
        let c = catalog(&[(1, 1), (1, 2)]);
        let book = CooldownBook::new(2);
        let tried = [DeploymentId(0)];
        for seed in 0..20 {
            assert_eq!(pick(&c, &book, &tried, seed), Choice::Now(DeploymentId(0)));
        }
        assert_eq!(
            pick_in(&c, &book, Tiers::Only(1), &tried),
            Some(Choice::Now(DeploymentId(0)))
        );
    }

    #[test]
    fn tiers_limit_the_choice() {
        let c = catalog(&[(1, 1), (1, 2), (1, 3)]);
        let mut book = CooldownBook::new(3);
        assert_eq!(
            pick_in(&c, &book, Tiers::Above(1), &[]),
            Some(Choice::Now(DeploymentId(1)))
        );
        assert_eq!(
            pick_in(&c, &book, Tiers::Only(3), &[]),
            Some(Choice::Now(DeploymentId(2)))
        );
        assert_eq!(
            pick_in(&c, &book, Tiers::Above(3), &[]),
            None,
            "no tier above the last"
        );
        assert_eq!(pick_in(&c, &book, Tiers::Only(7), &[]), None);
        // A cooling tier is passed over by `Above`; `Only` names when it recovers.
        let now = Instant::now();
        let s = GatewaySettings::default();
        book.record_failure(
            DeploymentId(1),
            &Failure::new(FailureClass::Auth, "x"),
            now,
            &s,
            1,
        );
        let view = book.view(1, now);
        assert_eq!(
            pick_in(&c, &view, Tiers::Above(1), &[]),
            Some(Choice::Now(DeploymentId(2)))
        );
        let only_2 = choose_in(
            &c,
            GroupId(0),
            Tiers::Only(2),
            &view,
            now,
            &[],
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert_eq!(
            only_2,
            Some(Choice::After(DeploymentId(1), s.cooldown_time))
        );
    }

    #[test]
    fn untried_deployments_come_first() {
        let c = catalog(&[(1, 0), (1, 0)]);
        let book = CooldownBook::new(2);
        for seed in 0..20 {
            assert_eq!(
                pick(&c, &book, &[DeploymentId(0)], seed),
                Choice::Now(DeploymentId(1))
            );
        }
        // Everything tried: any healthy one will do.
        let both = [DeploymentId(0), DeploymentId(1)];
        assert!(matches!(pick(&c, &book, &both, 1), Choice::Now(_)));
    }
}
