//! Generated failure policies: the LiteLLM router settings about failure classes, retries and
//! cooldowns that issue 17 added.
//!
//! Owns: the strategy for one case's [`Policies`] and applying it to a generated scenario:
//! billing errors sent as HTTP 400 (in place of some generated 422s). Does not own the rest
//! of a case (`explore`).

use proptest::prelude::*;

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

/// One case's failure policies.
#[derive(Debug, Clone)]
pub struct Policies {
    /// Per provider: which billing error replaces its generated 422s, if any.
    billing: Vec<Option<usize>>,
}

pub fn policies(providers: usize) -> impl Strategy<Value = Policies> {
    proptest::collection::vec(proptest::option::weighted(0.5, 0..BILLING.len()), providers)
        .prop_map(|billing| Policies { billing })
}

pub fn apply(scenario: &mut Scenario, p: &Policies) {
    for (provider, billing) in scenario.providers.iter_mut().zip(&p.billing) {
        if let Some(i) = *billing {
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
