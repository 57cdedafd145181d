//! Generated failure policies: the LiteLLM router settings about failure classes, retries and
//! cooldowns that issue 17 added.
//!
//! Owns: the strategy for one case's [`Policies`] and applying it to a generated scenario:
//! billing errors sent as HTTP 400 (in place of some generated 422s); a deployment's own
//! `cooldown_time` and `num_retries`; `num_retries_per_request` and
//! `model_group_retry_policy` at the gateway and on a key; `allowed_fails_policy`, or
//! `cooldown_by_failure_rate` instead. Does not own the rest of a case (`explore`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use switchback::config::{AllowedFailsPolicy, RetryPolicy};

use crate::scenario::{FaultKind, Scenario, Script};

/// Billing and credit errors as providers send them (all HTTP 400).
const BILLING: [(Option<&str>, &str); 3] = [
    (
        None,
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    (
        Some("billing_hard_limit_reached"),
        "Billing hard limit has been reached",
    ),
    (
        None,
        "Insufficient credits. Add more using https://openrouter.ai/credits",
    ),
];

/// A deployment's own cooldowns: zero (never cooled), short ones that start and end while
/// concurrent requests still arrive, and one longer than a case's traffic.
const DEPLOYMENT_COOLDOWNS: [f64; 4] = [0.0, 0.05, 0.25, 30.0];

/// What one deployment (one provider: a generated case has one per deployment) gets.
#[derive(Debug, Clone)]
struct PerDeployment {
    /// Which billing error replaces its generated 422s, if any.
    billing: Option<usize>,
    cooldown_time: Option<f64>,
    num_retries: Option<u32>,
}

/// One case's failure policies.
#[derive(Debug, Clone)]
pub struct Policies {
    deployments: Vec<PerDeployment>,
    /// `num_retries_per_request` at the gateway and on the first key.
    per_request: (Option<u32>, Option<u32>),
    allowed_fails_policy: Option<AllowedFailsPolicy>,
    /// `model_group_retry_policy` for the first group, at the gateway and on the first key.
    group_retry_policy: (Option<RetryPolicy>, Option<RetryPolicy>),
    /// `cooldown_by_failure_rate` (in place of `allowed_fails` and `allowed_fails_policy`).
    failure_rate: bool,
}

fn allowed_fails_policy() -> impl Strategy<Value = AllowedFailsPolicy> {
    let count = || proptest::option::weighted(0.4, 0u32..=2);
    (count(), count(), count(), count(), count()).prop_map(
        |(rate_limit, timeout, internal_server, authentication, bad_request)| AllowedFailsPolicy {
            rate_limit,
            timeout,
            internal_server,
            authentication,
            bad_request,
            content_policy: None,
        },
    )
}

fn retry_policy() -> impl Strategy<Value = RetryPolicy> {
    let count = || proptest::option::weighted(0.5, 0u32..=2);
    (count(), count(), count(), count()).prop_map(
        |(rate_limit, timeout, internal_server, authentication)| RetryPolicy {
            rate_limit,
            timeout,
            internal_server,
            authentication,
            ..RetryPolicy::default()
        },
    )
}

pub fn policies(deployments: usize) -> impl Strategy<Value = Policies> {
    let one = (
        proptest::option::weighted(0.5, 0..BILLING.len()),
        proptest::option::weighted(0.2, proptest::sample::select(DEPLOYMENT_COOLDOWNS.to_vec())),
        proptest::option::weighted(0.2, 0u32..=3),
    )
        .prop_map(|(billing, cooldown_time, num_retries)| PerDeployment {
            billing,
            cooldown_time,
            num_retries,
        });
    (
        proptest::collection::vec(one, deployments),
        proptest::option::weighted(0.2, 0u32..=4),
        proptest::option::weighted(0.1, 0u32..=4),
        proptest::option::weighted(0.25, allowed_fails_policy()),
        proptest::option::weighted(0.2, retry_policy()),
        proptest::option::weighted(0.1, retry_policy()),
        proptest::bool::weighted(0.25),
    )
        .prop_map(
            |(deployments, gateway, key, allowed, group_policy, key_group_policy, rate)| Policies {
                deployments,
                per_request: (gateway, key),
                allowed_fails_policy: allowed,
                group_retry_policy: (group_policy, key_group_policy),
                failure_rate: rate,
            },
        )
}

pub fn apply(scenario: &mut Scenario, p: &Policies) {
    let gateway = &mut scenario.gateway;
    let first_group = gateway.model_list[0].model_name.clone();
    let for_first_group = |policy: &Option<RetryPolicy>| {
        policy
            .clone()
            .map(|p| BTreeMap::from([(first_group.clone(), p)]))
    };
    let settings = &mut gateway.router_settings;
    settings.num_retries_per_request = p.per_request.0;
    settings.allowed_fails_policy = p.allowed_fails_policy.clone();
    settings.model_group_retry_policy = for_first_group(&p.group_retry_policy.0);
    if p.failure_rate {
        settings.cooldown_by_failure_rate = Some(true);
        settings.allowed_fails = None;
        settings.allowed_fails_policy = None;
    }
    if let Some(key) = gateway.keys.first_mut() {
        key.router_settings.num_retries_per_request = p.per_request.1;
        key.router_settings.model_group_retry_policy = for_first_group(&p.group_retry_policy.1);
    }
    for (d, own) in scenario.gateway.model_list.iter_mut().zip(&p.deployments) {
        d.litellm_params.cooldown_time = own.cooldown_time;
        d.litellm_params.num_retries = own.num_retries;
    }
    for (provider, own) in scenario.providers.iter_mut().zip(&p.deployments) {
        if let Some(i) = own.billing {
            let scripts = std::iter::once(&mut provider.default).chain(provider.calls.iter_mut());
            for script in scripts {
                billing_instead_of_422(script, BILLING[i]);
            }
        }
    }
}

fn billing_instead_of_422(script: &mut Script, (code, message): (Option<&str>, &str)) {
    if let Some(f) = &mut script.fault {
        if f.kind == FaultKind::Http && f.status == Some(422) {
            f.status = Some(400);
            f.code = code.map(str::to_string);
            f.message = Some(message.to_string());
        }
    }
}
