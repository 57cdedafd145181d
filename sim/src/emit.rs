//! Gateway configs for a scenario whose fakes run on loopback.
//!
//! Owns: rewriting a scenario's gateway config so every `api_base` points at the loopback
//! address its fake listens on, as Switchback's own config (for `switchback serve`) or as a
//! LiteLLM proxy `config.yaml` (for `litellm --config`), and the LiteLLM admin calls that
//! create the scenario's teams and keys (LiteLLM keeps those in its database, not in the
//! file). Does not send those calls (`probe`'s setup does).
//!
//! Every LiteLLM translation is checked against LiteLLM's own source (1.83.0, the seed's
//! line); the doc comment of each names the file and function it follows.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{Map, Value, json};
use switchback::config::{GatewayConfig, RouterSettings};
use switchback::upstream::Endpoint;

use crate::scenario::Scenario;
use crate::world::gateway_config;

/// Loopback address of each fake, by the scenario's `(host, port)`.
pub type PortMap = BTreeMap<(String, u16), SocketAddr>;

/// The LiteLLM master key the emitted config sets. `probe` uses it only for the admin calls
/// of `--setup`, and for requests without a key of their own when given as `--api-key`.
pub const LITELLM_MASTER_KEY: &str = "sk-switchback-master";

/// The LiteLLM setting that lets requests carry `mock_testing_*` flags. Newer LiteLLM
/// versions (1.108 and 1.110 in issue 13) refuse them without it: in LiteLLM's main branch,
/// `litellm/proxy/route_llm_request.py`, `mock_testing_params_allowed` reads
/// `general_settings[MOCK_TESTING_CONFIG_KEY]` and `raise_if_mock_testing_params_disallowed`
/// rejects the request. 1.83.0 does not know the setting and ignores it.
pub const LITELLM_MOCK_SETTING: &str = "dangerously_allow_mock_testing_request_params";

/// Router settings LiteLLM's `Router.__init__` accepts (`litellm/router.py`); the proxy
/// ignores any other key of `router_settings` with a warning (`litellm/proxy/proxy_server.py`,
/// `ProxyConfig.load_config`, "is not a valid argument for Router.__init__()").
const LITELLM_GATEWAY_SETTINGS: &[&str] = &[
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "default_fallbacks",
    "num_retries",
    "retry_policy",
    "timeout",
    "stream_timeout",
    "max_fallbacks",
    "cooldown_time",
    "allowed_fails",
    "routing_strategy",
    "allowed_fails_policy",
    "model_group_retry_policy",
];

/// Team and key settings LiteLLM applies to a request: `litellm/proxy/route_llm_request.py`,
/// `route_request`, the `router_settings_override` branch, copies only these into the
/// request's kwargs (`retry_policy` goes in as `model_group_retry_policy`, read per request
/// by `Router.async_function_with_retries`).
const LITELLM_PER_REQUEST_SETTINGS: &[&str] = &[
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "num_retries",
    "timeout",
    "retry_policy",
];

/// What `/key/generate` keeps of a key's `router_settings`: the fields of LiteLLM's
/// `UpdateRouterConfig` (`litellm/types/router.py`), the type of `router_settings` on
/// `KeyRequestBase` (`litellm/proxy/_types.py`); pydantic drops the rest on input. (A team's
/// `router_settings` is a plain dict, so a team keeps every field.)
const LITELLM_KEY_ROUTER_CONFIG: &[&str] = &[
    "fallbacks",
    "context_window_fallbacks",
    "num_retries",
    "timeout",
    "retry_policy",
];

fn loopback_base(api_base: &str, ports: &PortMap) -> Result<String, String> {
    let e = Endpoint::parse(api_base)?;
    let addr = ports
        .get(&(e.host.clone(), e.port))
        .ok_or_else(|| format!("`{api_base}` is not a provider of this scenario"))?;
    Ok(format!("http://{addr}{}", e.base_path))
}

/// The scenario's gateway config with every `api_base` on loopback.
pub fn switchback_config(scenario: &Scenario, ports: &PortMap) -> Result<GatewayConfig, String> {
    let mut config = gateway_config(scenario);
    for d in &mut config.model_list {
        let base = d.litellm_params.api_base.as_deref().unwrap_or_default();
        d.litellm_params.api_base = Some(loopback_base(base, ports)?);
    }
    Ok(config)
}

/// `settings` as JSON, keeping only the fields in `keep`; the names of the set fields left
/// out are added to `dropped`.
fn settings_json(
    s: &RouterSettings,
    keep: &[&str],
    dropped: &mut BTreeSet<String>,
) -> Map<String, Value> {
    let Ok(Value::Object(all)) = serde_json::to_value(s) else {
        unreachable!("router settings serialise to an object")
    };
    let mut out = Map::new();
    for (k, v) in all {
        if keep.contains(&k.as_str()) {
            out.insert(k, v);
        } else {
            dropped.insert(k);
        }
    }
    out
}

/// A team's or key's settings as LiteLLM applies them per request, `retry_policy` renamed to
/// `model_group_retry_policy` for every group (LiteLLM's per-request form is by group).
fn per_request_settings(
    s: &RouterSettings,
    groups: &[String],
    keep: &[&str],
    dropped: &mut BTreeSet<String>,
) -> Map<String, Value> {
    let allowed: Vec<&str> = LITELLM_PER_REQUEST_SETTINGS
        .iter()
        .copied()
        .filter(|k| keep.contains(k))
        .collect();
    let mut out = settings_json(s, &allowed, dropped);
    if let Some(policy) = out.remove("retry_policy") {
        let by_group: Map<String, Value> =
            groups.iter().map(|g| (g.clone(), policy.clone())).collect();
        out.insert("model_group_retry_policy".into(), Value::Object(by_group));
    }
    out
}

/// `order` as LiteLLM reads it. LiteLLM keeps, among a group's healthy deployments, only
/// those with the lowest `order`, and a deployment *without* `order` is then never chosen
/// (`litellm/utils.py`, `_get_order_filtered_deployments`); higher orders are tried as
/// fallbacks after the lower ones fail (`litellm/router.py`,
/// `async_function_with_fallbacks`, "ORDER-BASED FALLBACKS"). Switchback reads a missing
/// `order` as 0, the first tier. So when any deployment of a group has an `order`, every
/// deployment of that group gets one: its tier's rank, from 1 (missing counts as 0).
/// Groups without any `order` get none.
fn litellm_orders(config: &GatewayConfig) -> Vec<Option<u32>> {
    // Each group that writes an order at all, with its tiers (a missing order is tier 0).
    let mut tiers: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for d in &config.model_list {
        if d.litellm_params.order.is_some() {
            tiers.entry(d.model_name.as_str()).or_default();
        }
    }
    for d in &config.model_list {
        if let Some(group) = tiers.get_mut(d.model_name.as_str()) {
            group.insert(d.litellm_params.order.unwrap_or(0));
        }
    }
    config
        .model_list
        .iter()
        .map(|d| {
            let group = tiers.get(d.model_name.as_str())?;
            let own = d.litellm_params.order.unwrap_or(0);
            Some(group.iter().filter(|o| **o < own).count() as u32 + 1)
        })
        .collect()
}

/// One call to LiteLLM's admin API that creates a team or a key of the scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminCall {
    /// `/team/new` or `/key/generate`.
    pub path: &'static str,
    pub body: Value,
}

/// The admin calls that create the scenario's teams, then its keys, in LiteLLM, and the
/// settings LiteLLM would not apply (left out, named for the config's header).
///
/// * `/team/new` (`litellm/proxy/management_endpoints/team_endpoints.py`, `new_team`):
///   `team_id`, `models`, and `router_settings` at the top level of the team (`TeamBase`
///   in `litellm/proxy/_types.py`), which is where
///   `ProxyConfig._get_hierarchical_router_settings` reads it (not `metadata`).
/// * `/key/generate` (`key_management_endpoints.py`, `generate_key_fn`): the key itself as
///   `key` (so requests can send the scenario's key), `key_alias`, `team_id`, `models`, and
///   `router_settings` at the top level. Only a key *with* settings gets the field: LiteLLM
///   takes the key's settings instead of the team's whenever the key has any (`Key > Team`,
///   the whole object, where Switchback resolves field by field).
pub fn litellm_admin_calls(scenario: &Scenario) -> (Vec<AdminCall>, BTreeSet<String>) {
    let config = &scenario.gateway;
    let mut groups: Vec<String> = Vec::new();
    for d in &config.model_list {
        if !groups.contains(&d.model_name) {
            groups.push(d.model_name.clone());
        }
    }
    let mut dropped = BTreeSet::new();
    let mut calls = Vec::new();
    for t in &config.teams {
        let mut body = json!({"team_id": t.team_id, "models": t.models});
        let settings = per_request_settings(
            &t.router_settings,
            &groups,
            LITELLM_PER_REQUEST_SETTINGS,
            &mut dropped,
        );
        if !settings.is_empty() {
            body["router_settings"] = Value::Object(settings);
        }
        calls.push(AdminCall {
            path: "/team/new",
            body,
        });
    }
    for k in &config.keys {
        let mut body = json!({"key": k.key, "models": k.models});
        if let Some(alias) = &k.key_alias {
            body["key_alias"] = json!(alias);
        }
        if let Some(team) = &k.team_id {
            body["team_id"] = json!(team);
        }
        let settings = per_request_settings(
            &k.router_settings,
            &groups,
            LITELLM_KEY_ROUTER_CONFIG,
            &mut dropped,
        );
        if !settings.is_empty() {
            body["router_settings"] = Value::Object(settings);
        }
        calls.push(AdminCall {
            path: "/key/generate",
            body,
        });
    }
    (calls, dropped)
}

/// Deployment settings the LiteLLM config does not carry, as `<deployment id>: <setting>`:
/// `fake_stream` (how the deployment is called: not confirmed to act the same in LiteLLM
/// 1.83.0's `litellm_params` for its `openai/` provider) and `send_stream_options`
/// (LiteLLM has no such setting). A scenario relying on them cannot be compared with a
/// LiteLLM started from the emitted config: its upstream calls differ by construction.
pub fn litellm_untranslated(scenario: &Scenario) -> Vec<String> {
    let config = &scenario.gateway;
    config
        .model_list
        .iter()
        .enumerate()
        .flat_map(|(i, d)| {
            let p = &d.litellm_params;
            [
                ("fake_stream", p.fake_stream.is_some()),
                ("send_stream_options", p.send_stream_options.is_some()),
            ]
            .into_iter()
            .filter(|(_, set)| *set)
            .map(move |(name, _)| format!("{}: {name}", config.deployment_id(i)))
        })
        .collect()
}

/// A LiteLLM proxy `config.yaml` for the scenario, its fakes on loopback.
pub fn litellm_config(scenario: &Scenario, ports: &PortMap) -> Result<String, String> {
    let config = switchback_config(scenario, ports)?;
    let orders = litellm_orders(&config);
    let model_list: Vec<Value> = config
        .model_list
        .iter()
        .zip(&orders)
        .map(|(d, order)| {
            let p = &d.litellm_params;
            // LiteLLM's `openai/` provider speaks to any OpenAI-compatible api_base and sends
            // the rest of the name upstream: the name Switchback sends, which strips only a
            // provider prefix it knows (`Qwen/Qwen2.5-7B-Instruct` is sent whole). An Azure
            // deployment's `api_version` (its path and `api-key`) is not carried: the fakes
            // answer every path and key alike.
            let bare = switchback::config::strip_provider(&p.model);
            let mut params = json!({
                "model": format!("openai/{bare}"),
                "api_base": p.api_base,
                "api_key": p.api_key.clone().unwrap_or_else(|| "sk-fake".into()),
            });
            for (k, v) in [("timeout", p.timeout), ("stream_timeout", p.stream_timeout)] {
                if let Some(v) = v {
                    params[k] = json!(v);
                }
            }
            if let Some(w) = p.weight {
                params["weight"] = json!(w);
            }
            if let Some(c) = p.cooldown_time {
                params["cooldown_time"] = json!(c);
            }
            if let Some(n) = p.num_retries {
                params["num_retries"] = json!(n);
            }
            if let Some(o) = order {
                params["order"] = json!(o);
            }
            let mut entry = json!({"model_name": d.model_name, "litellm_params": params});
            if let Some(id) = &d.model_info.id {
                entry["model_info"] = json!({"id": id});
            }
            entry
        })
        .collect();
    let mut dropped = BTreeSet::new();
    let router_settings = settings_json(
        &config.router_settings,
        LITELLM_GATEWAY_SETTINGS,
        &mut dropped,
    );
    let mut general = json!({"master_key": LITELLM_MASTER_KEY});
    // The same setting, by the same name: Switchback refuses the flags without it too.
    if config
        .general_settings
        .dangerously_allow_mock_testing_request_params
    {
        general[LITELLM_MOCK_SETTING] = json!(true);
    }
    let mut doc = json!({
        "model_list": model_list,
        "router_settings": router_settings,
        "general_settings": general,
    });
    // LiteLLM keeps `num_retries_per_request` as a module setting (`litellm/__init__.py`),
    // which the proxy sets from `litellm_settings`.
    if dropped.remove("num_retries_per_request") {
        doc["litellm_settings"] = json!({
            "num_retries_per_request": config.router_settings.num_retries_per_request,
        });
    }
    // Cooling by failure rate is what LiteLLM does when `allowed_fails` is not set, and
    // Switchback refuses the setting together with `allowed_fails`: nothing to translate.
    dropped.remove("cooldown_by_failure_rate");
    let body = serde_saphyr::to_string(&doc).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# LiteLLM proxy config for scenario `{}`, generated by Switchback.",
        scenario.name
    );
    let _ = writeln!(
        out,
        "# Fakes: {}",
        ports
            .iter()
            .map(|((h, p), a)| format!("{h}:{p} -> {a}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "# Start: litellm --config config.yaml --host 127.0.0.1 --port 4000"
    );
    // `rng_seed` is Switchback's own; the scenario's seed is always written into it.
    dropped.remove("rng_seed");
    if !dropped.is_empty() {
        let _ = writeln!(
            out,
            "# Gateway settings LiteLLM has no equivalent for, left out: {}",
            dropped.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let untranslated = litellm_untranslated(scenario);
    if !untranslated.is_empty() {
        let _ = writeln!(
            out,
            "# Deployment settings not translated (a scenario relying on them cannot be compared): {}",
            untranslated.join(", ")
        );
    }
    let (calls, not_applied) = litellm_admin_calls(scenario);
    if !calls.is_empty() {
        let _ = writeln!(out, "#");
        let _ = writeln!(
            out,
            "# Teams and keys live in LiteLLM's database, not in this file. They need a database"
        );
        let _ = writeln!(
            out,
            "# (DATABASE_URL, Postgres); without one these calls fail. `switchback probe --setup`"
        );
        let _ = writeln!(
            out,
            "# makes them (and says `could not run` with LiteLLM's error if they fail):"
        );
        for c in &calls {
            let _ = writeln!(
                out,
                "#   curl -s http://127.0.0.1:4000{} -H 'Authorization: Bearer {LITELLM_MASTER_KEY}' -H 'Content-Type: application/json' -d '{}'",
                c.path, c.body
            );
        }
        if !not_applied.is_empty() {
            let _ = writeln!(
                out,
                "# Team or key settings LiteLLM does not apply per request, left out: {}",
                not_applied.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    out.push_str(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rel: &str) -> Scenario {
        let path = format!("{}/../scenarios/{rel}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        Scenario::load(&path, &text).unwrap()
    }

    fn ports(scenario: &Scenario) -> PortMap {
        scenario
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    (p.host.clone(), p.port),
                    SocketAddr::from(([127, 0, 0, 1], 18000 + i as u16)),
                )
            })
            .collect()
    }

    fn yaml(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn issue_17_failure_settings_reach_litellm_under_its_own_names() {
        let scenario = load("parity/num_retries_per_request_caps_retries_and_fallbacks.yaml");
        let lite = litellm_config(&scenario, &ports(&scenario)).unwrap();
        let doc = yaml(&lite);
        assert_eq!(doc["litellm_settings"]["num_retries_per_request"], 3);
        assert!(
            doc["router_settings"]
                .get("num_retries_per_request")
                .is_none()
        );
        let left_out = lite.lines().find(|l| l.contains("left out")).unwrap_or("");
        assert!(!left_out.contains("num_retries_per_request"), "{lite}");
        let scenario = load("parity/deployment_num_retries.yaml");
        let doc = yaml(&litellm_config(&scenario, &ports(&scenario)).unwrap());
        assert_eq!(doc["model_list"][0]["litellm_params"]["num_retries"], 3);
        let scenario = load("parity/deployment_cooldown_time_beats_retry_after.yaml");
        let doc = yaml(&litellm_config(&scenario, &ports(&scenario)).unwrap());
        assert_eq!(doc["model_list"][0]["litellm_params"]["cooldown_time"], 1.0);
        let scenario = load("parity/allowed_fails_policy_rate_limits.yaml");
        let doc = yaml(&litellm_config(&scenario, &ports(&scenario)).unwrap());
        assert_eq!(
            doc["router_settings"]["allowed_fails_policy"]["RateLimitErrorAllowedFails"],
            1
        );
        let scenario = load("parity/model_group_retry_policy.yaml");
        let doc = yaml(&litellm_config(&scenario, &ports(&scenario)).unwrap());
        assert_eq!(
            doc["router_settings"]["model_group_retry_policy"]["chat"]["InternalServerErrorRetries"],
            2
        );
        let scenario = load("parity/cooldown_by_failure_rate.yaml");
        let lite = litellm_config(&scenario, &ports(&scenario)).unwrap();
        let left_out = lite.lines().find(|l| l.contains("left out")).unwrap_or("");
        assert!(!left_out.contains("cooldown_by_failure_rate"), "{lite}");
        assert!(
            yaml(&lite)["router_settings"]
                .get("cooldown_by_failure_rate")
                .is_none()
        );
    }

    /// LiteLLM's `openai/` provider sends the rest of its name upstream: that must be the
    /// name Switchback sends, which keeps a path that is no provider prefix
    /// (`Qwen/Qwen2.5-7B-Instruct`, as vLLM names its models).
    #[test]
    fn litellm_calls_the_upstream_by_the_name_switchback_sends() {
        let mut scenario = load("live/control_no_fault.yaml");
        let names = [
            (
                "Qwen/Qwen2.5-7B-Instruct",
                "openai/Qwen/Qwen2.5-7B-Instruct",
            ),
            ("openai/gpt-4o", "openai/gpt-4o"),
            ("vertex_ai/gemini-2.5-flash", "openai/gemini-2.5-flash"),
            ("plain", "openai/plain"),
        ];
        for (model, _) in names {
            scenario.gateway.model_list[0].litellm_params.model = model.into();
            let doc = yaml(&litellm_config(&scenario, &ports(&scenario)).unwrap());
            let want = names.iter().find(|(m, _)| *m == model).unwrap().1;
            assert_eq!(
                doc["model_list"][0]["litellm_params"]["model"], want,
                "{model}"
            );
            assert_eq!(
                format!("openai/{}", switchback::config::strip_provider(model)),
                want
            );
        }
    }

    /// How a deployment is called (`fake_stream`, `send_stream_options`) is not silently
    /// lost: the header names what the LiteLLM config does not carry.
    #[test]
    fn deployment_settings_not_translated_are_named() {
        let mut scenario = load("live/control_no_fault.yaml");
        scenario.gateway.model_list[0].litellm_params.fake_stream = Some(true);
        scenario.gateway.model_list[1]
            .litellm_params
            .send_stream_options = Some(false);
        let lite = litellm_config(&scenario, &ports(&scenario)).unwrap();
        let line = lite
            .lines()
            .find(|l| l.starts_with("# Deployment settings not translated"))
            .unwrap_or_else(|| panic!("{lite}"));
        let (a, b) = (
            scenario.gateway.deployment_id(0),
            scenario.gateway.deployment_id(1),
        );
        assert!(
            line.ends_with(&format!("{a}: fake_stream, {b}: send_stream_options")),
            "{line}"
        );
        let doc = yaml(&lite);
        assert!(
            doc["model_list"][0]["litellm_params"]
                .get("fake_stream")
                .is_none()
        );
    }

    #[test]
    fn api_bases_point_at_the_fakes_and_keys_become_admin_calls() {
        let scenario = load("known_bug/key_level_fallbacks_stream.yaml");
        let ports = ports(&scenario);
        let sb = switchback_config(&scenario, &ports).unwrap();
        assert_eq!(
            sb.model_list[0].litellm_params.api_base.as_deref(),
            Some("http://127.0.0.1:18000/v1")
        );
        let lite = litellm_config(&scenario, &ports).unwrap();
        let doc = yaml(&lite);
        assert_eq!(
            doc["model_list"][0]["litellm_params"]["api_base"],
            "http://127.0.0.1:18000/v1"
        );
        assert_eq!(
            doc["model_list"][2]["litellm_params"]["model"],
            "openai/google/gemini-3.1-flash-lite-preview"
        );
        assert_eq!(doc["general_settings"]["master_key"], LITELLM_MASTER_KEY);
        // The scenario allows mock_testing_* flags: LiteLLM must be told to accept them.
        assert_eq!(doc["general_settings"][LITELLM_MOCK_SETTING], true);
        assert!(lite.contains("--host 127.0.0.1"), "{lite}");
        assert!(!lite.contains("0.0.0.0"), "{lite}");
        assert!(lite.contains("need a database"), "{lite}");

        let (calls, _) = litellm_admin_calls(&scenario);
        assert_eq!(calls[0].path, "/team/new");
        assert_eq!(calls[0].body["team_id"], "chatbot");
        assert_eq!(calls[1].path, "/key/generate");
        assert_eq!(calls[1].body["key"], "sk-chatbot-prod");
        assert_eq!(calls[1].body["team_id"], "chatbot");
        assert_eq!(calls[1].body["key_alias"], "Chatbot-Prod");
        // Top-level router_settings, where LiteLLM reads it.
        assert_eq!(
            calls[1].body["router_settings"]["fallbacks"][0]["vertex_ai/gemini-3.1-flash-lite-preview"]
                [0],
            "vertex_ai/gemini-2.5-flash"
        );
        assert!(calls[1].body.get("metadata").is_none());
    }

    #[test]
    fn team_settings_are_top_level_and_retry_policy_goes_by_group() {
        let mut scenario = load("known_bug/key_level_fallbacks_stream.yaml");
        let key_settings = scenario.gateway.keys[0].router_settings.clone();
        scenario.gateway.teams[0].router_settings = key_settings;
        scenario.gateway.teams[0].router_settings.retry_policy =
            Some(switchback::config::RetryPolicy {
                rate_limit: Some(2),
                ..Default::default()
            });
        scenario.gateway.teams[0].router_settings.max_fallbacks = Some(2);
        scenario.gateway.keys[0].router_settings = RouterSettings::default();
        let (calls, dropped) = litellm_admin_calls(&scenario);
        let team = &calls[0].body;
        assert!(team.get("metadata").is_none(), "{team}");
        assert!(team["router_settings"]["fallbacks"].is_array(), "{team}");
        assert_eq!(
            team["router_settings"]["model_group_retry_policy"]["vertex_ai/gemini-2.5-flash"]["RateLimitErrorRetries"],
            2
        );
        // LiteLLM applies no per-request max_fallbacks from a team: named, not written.
        assert!(dropped.contains("max_fallbacks"), "{dropped:?}");
        assert!(team["router_settings"].get("max_fallbacks").is_none());
        // A key without settings must not shadow its team's (LiteLLM: key > team, whole).
        assert!(
            calls[1].body.get("router_settings").is_none(),
            "{}",
            calls[1].body
        );
    }

    #[test]
    fn every_deployment_of_a_group_with_an_order_gets_one() {
        let scenario = load("streaming/reset_after_chunks.yaml");
        let config = &scenario.gateway;
        let orders = litellm_orders(config);
        for (d, o) in config.model_list.iter().zip(&orders) {
            let group_has_order = config
                .model_list
                .iter()
                .any(|x| x.model_name == d.model_name && x.litellm_params.order.is_some());
            assert_eq!(o.is_some(), group_has_order, "{}", d.model_name);
        }
        // The primary (no order in the scenario) is tier 1; the backup above it.
        let mut by_group: BTreeMap<&str, Vec<(Option<u32>, u32)>> = BTreeMap::new();
        for (d, o) in config.model_list.iter().zip(&orders) {
            if let Some(o) = o {
                by_group
                    .entry(d.model_name.as_str())
                    .or_default()
                    .push((d.litellm_params.order, *o));
            }
        }
        assert!(!by_group.is_empty(), "the scenario has a group with orders");
        // Numbers reach the YAML as numbers (serde_json's arbitrary_precision once turned
        // them into `{"$serde_json::private::Number": "1"}` maps, which LiteLLM crashed on).
        let lite = litellm_config(&scenario, &ports(&scenario)).unwrap();
        assert!(!lite.contains("serde_json"), "{lite}");
        let doc = yaml(&lite);
        assert!(
            doc["model_list"][0]["litellm_params"]["order"].is_u64(),
            "{lite}"
        );
        for tiers in by_group.values() {
            assert!(tiers.iter().any(|(_, o)| *o == 1), "{tiers:?}");
            for (a, x) in tiers {
                for (b, y) in tiers {
                    if a.unwrap_or(0) < b.unwrap_or(0) {
                        assert!(x < y, "{tiers:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn no_mock_setting_without_mock_flags() {
        let scenario = load("known_bug/midstream_429_key_fallbacks.yaml");
        let doc = yaml(&litellm_config(&scenario, &ports(&scenario)).unwrap());
        assert!(doc["general_settings"].get(LITELLM_MOCK_SETTING).is_none());
        assert_eq!(doc["router_settings"]["num_retries"], 0);
    }
}
