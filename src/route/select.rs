//! Picking a deployment inside a group.
//!
//! Owns: the choice among a group's deployments: skip the ones cooling down, prefer ones
//! not yet tried by this request, take the lowest `order` tier present, then a weighted
//! draw from the injected RNG (LiteLLM's "simple-shuffle"). When every deployment is
//! cooling, it names the one that comes back first and how long that takes.

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

pub fn choose(
    catalog: &Catalog,
    group: GroupId,
    book: &CooldownBook,
    now: Instant,
    tried: &[DeploymentId],
    rng: &mut (impl Rng + ?Sized),
) -> Choice {
    let all = &catalog.group(group).deployments;
    assert!(
        !all.is_empty(),
        "a validated group has at least one deployment"
    );
    let healthy = |d: &&DeploymentId| !book.is_cooling(**d, now);
    let fresh = |d: &&DeploymentId| !tried.contains(d);
    let pool: Vec<DeploymentId> = if all.iter().filter(healthy).any(|d| fresh(&d)) {
        all.iter().filter(healthy).filter(fresh).copied().collect()
    } else {
        all.iter().filter(healthy).copied().collect()
    };
    if pool.is_empty() {
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
        return Choice::After(d, until - now);
    }
    let tier = pool
        .iter()
        .map(|d| catalog.deployment(*d).order)
        .min()
        .expect("non-empty pool");
    let pool: Vec<DeploymentId> = pool
        .into_iter()
        .filter(|d| catalog.deployment(*d).order == tier)
        .collect();
    if pool.len() == 1 {
        return Choice::Now(pool[0]);
    }
    let total: u64 = pool
        .iter()
        .map(|d| u64::from(catalog.deployment(*d).weight))
        .sum();
    let mut ticket = rng.random_range(0..total);
    for d in &pool {
        let w = u64::from(catalog.deployment(*d).weight);
        if ticket < w {
            return Choice::Now(*d);
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
