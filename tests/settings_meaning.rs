//! A config means what it says, and what it says in LiteLLM: settings that were read to
//! mean something else (an empty list, a tiny timeout, a key's own retry policy, an id in
//! a key's `models`).

use std::sync::Arc;

use switchback::catalog::{Catalog, DeploymentId, GroupId};
use switchback::classify::{FailureClass, FallbackRoute};
use switchback::config::GatewayConfig;
use switchback::plan::FallbackPlan;
use switchback::policy::Levels;

fn catalog(yaml: &str) -> Catalog {
    Catalog::new(&GatewayConfig::load("t.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))).unwrap()
}

fn names(c: &Catalog, ids: &[GroupId]) -> Vec<String> {
    ids.iter().map(|g| c.group(*g).name.clone()).collect()
}

/// LiteLLM's Router reads an empty `context_window_fallbacks` (or
/// `content_policy_fallbacks`) in its settings as unset (`context_window_fallbacks or
/// litellm.context_window_fallbacks`), and a context-window failure then falls back by
/// `fallbacks` ("No context_window_fallback set. Defaulting to fallbacks"). The README's
/// own example config has both lists empty beside `fallbacks`.
#[test]
fn an_empty_specific_list_in_router_settings_leaves_the_generic_fallbacks() {
    let c = catalog(
        r#"
allow_anonymous: true
model_list:
  - {model_name: a, litellm_params: {model: a, api_base: "http://pa/v1"}}
  - {model_name: b, litellm_params: {model: b, api_base: "http://pb/v1"}}
router_settings:
  fallbacks:
    - a: [b]
  context_window_fallbacks: []
  content_policy_fallbacks: []
"#,
    );
    let s = Levels {
        request: None,
        key: None,
        team: None,
        gateway: &c.gateway,
    }
    .resolve(&c.limits);
    let a = c.group_id("a").unwrap();
    let plan = FallbackPlan::new(a, Arc::new(s), c.all_allowed());
    for route in [
        FallbackRoute::Generic,
        FallbackRoute::ContextWindow,
        FallbackRoute::ContentPolicy,
    ] {
        let (list, kind) = plan.list_for(a, route);
        assert_eq!(names(&c, list), ["b"], "{route:?} (from {kind:?})");
    }
}

/// A timeout must be more than 0; one that is, but under a nanosecond, became a zero
/// duration: every attempt timed out at once and, the timeout being the gateway's own,
/// every deployment was blamed and cooled. Such a value is refused with its place.
#[test]
fn a_timeout_too_small_to_be_a_duration_is_refused() {
    for (yaml, place) in [
        (
            "router_settings: {timeout: 1e-10}\n",
            "router_settings.timeout",
        ),
        (
            "router_settings: {stream_timeout: 0.0000001}\n",
            "router_settings.stream_timeout",
        ),
    ] {
        let yaml = format!(
            "allow_anonymous: true\nmodel_list:\n  - {{model_name: a, litellm_params: {{model: a, api_base: \"http://pa/v1\"}}}}\n{yaml}"
        );
        let e = GatewayConfig::load("t.yaml", &yaml)
            .err()
            .unwrap_or_else(|| panic!("accepted: {yaml}"))
            .to_string();
        assert!(e.contains(place) && e.contains("out of range"), "{e}");
    }
    let e = GatewayConfig::load(
        "t.yaml",
        "allow_anonymous: true\nmodel_list:\n  - {model_name: a, litellm_params: {model: a, api_base: \"http://pa/v1\", timeout: 1e-12}}\n",
    )
    .expect_err("a deployment's tiny timeout is refused")
    .to_string();
    assert!(e.contains("timeout") && e.contains("out of range"), "{e}");
    // A millisecond is a duration.
    let c = catalog(
        "allow_anonymous: true\nmodel_list:\n  - {model_name: a, litellm_params: {model: a, api_base: \"http://pa/v1\", stream_timeout: 0.001}}\nrouter_settings: {timeout: 0.001}\n",
    );
    assert_eq!(c.gateway_timeouts.0, std::time::Duration::from_millis(1));
    assert_eq!(
        c.deployment(DeploymentId(0)).stream_timeout,
        Some(std::time::Duration::from_millis(1))
    );
}

/// "The highest level that sets `retry_policy` gives every count": a key's policy that
/// names only classes never retried (or none) is still the key's policy, so its team's
/// counts do not leak through and the key's `num_retries` applies.
#[test]
fn a_keys_retry_policy_replaces_its_teams_whatever_it_names() {
    for policy in ["{BadRequestErrorRetries: 0}", "{}"] {
        let c = catalog(&format!(
            r#"
model_list:
  - {{model_name: a, litellm_params: {{model: a, api_base: "http://pa/v1"}}}}
teams:
  - team_id: t
    router_settings: {{retry_policy: {{RateLimitErrorRetries: 7}}}}
keys:
  - key: sk-1
    team_id: t
    router_settings: {{num_retries: 1, retry_policy: {policy}}}
"#
        ));
        let key = c.key("sk-1").unwrap();
        let s = Levels {
            request: None,
            key: Some(&key.overrides),
            team: Some(&c.team(key.team.unwrap()).overrides),
            gateway: &c.gateway,
        }
        .resolve(&c.limits);
        assert_eq!(s.retries_for(FailureClass::RateLimited), 1, "{policy}");
    }
}

/// A key (or team) may list a deployment's id in its `models`, as the README says and the
/// catalog computes: validation refused it as an unknown group.
#[test]
fn a_key_may_list_a_deployment_id_in_its_models() {
    let c = catalog(
        r#"
model_list:
  - {model_name: a, litellm_params: {model: a, api_base: "http://pa/v1"}, model_info: {id: a-east}}
  - {model_name: a, litellm_params: {model: a, api_base: "http://pb/v1"}, model_info: {id: a-west}}
  - {model_name: b, litellm_params: {model: b, api_base: "http://pc/v1"}}
teams:
  - {team_id: t, models: [a-east, b]}
keys:
  - {key: sk-1, team_id: t, models: [a-east]}
"#,
    );
    let key = c.key("sk-1").unwrap();
    let east = c.group_id("a-east").expect("an id names its deployment");
    let west = c.group_id("a-west").expect("an id names its deployment");
    assert!(key.allowed[east.0 as usize], "the key lists a-east");
    assert!(
        !key.allowed[west.0 as usize],
        "nor the key nor its team list a-west"
    );
    assert!(!key.allowed[c.group_id("a").unwrap().0 as usize]);
    // A name that is neither a group nor an id is still refused, with its place.
    let e = GatewayConfig::load(
        "t.yaml",
        "model_list:\n  - {model_name: a, litellm_params: {model: a, api_base: \"http://pa/v1\"}}\nkeys:\n  - {key: sk-1, models: [a-eats]}\n",
    )
    .expect_err("refused")
    .to_string();
    assert!(
        e.contains("keys[0].models[0]") && e.contains("a-eats"),
        "{e}"
    );
}
