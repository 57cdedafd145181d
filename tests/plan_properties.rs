//! Property tests of the fallback plan on generated configs: whatever the lists at each
//! level, the allow-list and the failures met, a walk never visits a group twice, never
//! takes more than `max_fallbacks` fallbacks, never reaches a group the key may not use,
//! and is a pure function of its inputs.

use std::sync::Arc;

use proptest::prelude::*;
use switchback::catalog::{Catalog, GroupId};
use switchback::classify::FallbackRoute;
use switchback::config::{FallbackEntry, GatewayConfig, RouterSettings};
use switchback::plan::FallbackPlan;
use switchback::policy::Levels;

const GROUPS: [&str; 6] = ["a", "b", "c", "vertex_ai/d", "e", "f"];

fn catalog(n: usize) -> Catalog {
    let mut yaml = String::from("allow_anonymous: true\nmodel_list:\n");
    for g in &GROUPS[..n] {
        yaml.push_str(&format!(
            "  - {{model_name: \"{g}\", litellm_params: {{model: m, api_base: \"http://p/v1\"}}}}\n"
        ));
    }
    Catalog::new(&GatewayConfig::load("gen.yaml", &yaml).unwrap()).unwrap()
}

fn table(n: usize) -> impl Strategy<Value = Option<Vec<FallbackEntry>>> {
    let entry = (0..n + 1, proptest::collection::vec(0..n, 0..5)).prop_map(move |(from, to)| {
        FallbackEntry {
            group: if from == n {
                "*".to_string()
            } else {
                GROUPS[from].to_string()
            },
            fallbacks: to.into_iter().map(|t| GROUPS[t].to_string()).collect(),
        }
    });
    proptest::option::weighted(0.7, proptest::collection::vec(entry, 0..5))
}

fn settings(n: usize) -> impl Strategy<Value = RouterSettings> {
    (
        table(n),
        table(n),
        table(n),
        proptest::option::of(0u32..7),
        proptest::option::weighted(0.1, any::<bool>()),
    )
        .prop_map(
            |(fallbacks, cw, cp, max_fallbacks, disable)| RouterSettings {
                fallbacks,
                context_window_fallbacks: cw,
                content_policy_fallbacks: cp,
                max_fallbacks,
                disable_fallbacks: disable,
                ..Default::default()
            },
        )
}

fn route() -> impl Strategy<Value = FallbackRoute> {
    prop_oneof![
        4 => Just(FallbackRoute::Generic),
        1 => Just(FallbackRoute::ContextWindow),
        1 => Just(FallbackRoute::ContentPolicy),
        1 => Just(FallbackRoute::NoFallback),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    levels: [RouterSettings; 4],
    allowed: Vec<bool>,
    routes: Vec<FallbackRoute>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=6).prop_flat_map(|n| {
        (
            [settings(n), settings(n), settings(n), settings(n)],
            proptest::collection::vec(proptest::bool::weighted(0.8), n),
            proptest::collection::vec(route(), 1..12),
        )
            .prop_map(move |(levels, mut allowed, routes)| {
                allowed[0] = true; // the primary is always allowed (admission refuses otherwise)
                Case {
                    n,
                    levels,
                    allowed,
                    routes,
                }
            })
    })
}

/// Walks the plan, failing each group with the next route; returns groups in visit order.
fn walk(case: &Case) -> (Vec<GroupId>, u32) {
    let c = catalog(case.n);
    let o: Vec<_> = case
        .levels
        .iter()
        .map(|s| c.overrides(s).unwrap())
        .collect();
    let settings = Levels {
        request: Some(&o[0]),
        key: Some(&o[1]),
        team: Some(&o[2]),
        gateway: &o[3],
    }
    .resolve(&c.limits);
    let max = settings.max_fallbacks.value;
    let plan = FallbackPlan::new(GroupId(0), Arc::new(settings), case.allowed.clone().into());
    let mut w = plan.walk();
    let mut visited = vec![plan.primary];
    let mut current = plan.primary;
    for route in case.routes.iter().cycle().take(64) {
        w.group_failed(current, *route);
        match w.next(&mut |_, _| {}) {
            Some(link) => {
                assert!(
                    visited.contains(&link.from),
                    "a link starts at a visited group"
                );
                visited.push(link.to);
                current = link.to;
            }
            None => break,
        }
    }
    (visited, max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn plan_invariants(case in case()) {
        let (visited, max) = walk(&case);
        let mut seen = visited.clone();
        seen.sort();
        seen.dedup();
        prop_assert_eq!(seen.len(), visited.len(), "a group visited twice: {:?}", visited);
        prop_assert!(visited.len() as u32 <= max + 1, "{} groups with max_fallbacks = {}", visited.len(), max);
        for g in &visited {
            prop_assert!(case.allowed[g.0 as usize], "group {:?} is not allowed", g);
        }
        prop_assert_eq!(walk(&case), (visited, max), "same input, same walk");
    }
}
