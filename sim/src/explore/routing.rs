//! Generated routing features: which groups and deployments a request and its fallbacks
//! reach (issue 17's wildcard model groups, fallbacks to a deployment id, request-level
//! fallback entries with their own `messages`).
//!
//! Owns: the strategy for one case's [`Routing`] and applying it to a generated scenario
//! (a wildcard group with a provider of its own, requests for names it serves, fallback
//! entries keyed by those names, fallbacks to those names, wildcard allow-list entries).
//! Does not own the rest of a
//! case (`explore`); what it adds keeps the config valid. Also: a gateway fallback entry
//! whose target is a deployment id, and request bodies whose `fallbacks` are
//! `{model, messages}` objects.

use proptest::prelude::*;
use switchback::config::{Deployment, FallbackEntry, LitellmParams, ModelInfo};

use crate::scenario::Scenario;

/// The wildcard group's deployment id and its provider's host.
pub const WILD_ID: &str = "wild";
const WILD_HOST: &str = "hw";

/// What one case adds.
#[derive(Debug, Clone)]
pub struct Routing {
    pub wildcard: Option<Wildcard>,
    /// A gateway fallback to a deployment id: from group `from` (by position), to the
    /// deployment at position `to` of the model list (a group's first entry if there is none).
    pub id_fallback: Option<(usize, usize)>,
    /// For each request (by position, cycling): client-side fallbacks as `{model, messages}`
    /// objects, each `(group, with messages of its own)`.
    pub client_side: Option<Vec<Vec<(usize, bool)>>>,
}

/// A wildcard group and how the case uses it.
#[derive(Debug, Clone)]
pub struct Wildcard {
    /// `"w/*"`, or the catch-all `"*"`.
    pub pattern: &'static str,
    /// Its deployment's `litellm_params.model`: with a `*` (filled from the request) or not.
    pub template: &'static str,
    /// For each request (by position, cycling): ask for `w/m<k>` instead of its group.
    pub ask: Vec<Option<u8>>,
    /// A gateway fallback entry keyed `w/m<k>` (or `m<k>`, without the prefix) to group `to`.
    pub entry: Option<(u8, bool, usize)>,
    /// Allow-lists that are not empty also get this entry (`"w/*"` or `"w/m<k>"`).
    pub allow: Option<Option<u8>>,
    /// A gateway fallback from group `from` (by position) to `w/m<k>`, a model only the
    /// wildcard group serves.
    pub target: Option<(usize, u8)>,
}

pub fn routing() -> impl Strategy<Value = Routing> {
    let wildcard = (
        prop_oneof![Just("w/*"), Just("*")],
        prop_oneof![Just("openai/*"), Just("openai/fixed-model")],
        proptest::collection::vec(proptest::option::weighted(0.6, 0u8..3), 1..=3),
        proptest::option::weighted(0.5, (0u8..3, any::<bool>(), 0usize..5)),
        proptest::option::weighted(0.5, proptest::option::of(0u8..3)),
        proptest::option::weighted(0.4, (0usize..5, 0u8..3)),
    )
        .prop_map(|(pattern, template, ask, entry, allow, target)| Wildcard {
            pattern,
            template,
            ask,
            entry,
            allow,
            target,
        });
    let client_side = proptest::collection::vec(
        proptest::collection::vec((0usize..5, any::<bool>()), 0..=3),
        1..=3,
    );
    (
        proptest::option::weighted(0.3, wildcard),
        proptest::option::weighted(0.3, (0usize..5, 0usize..10)),
        proptest::option::weighted(0.25, client_side),
    )
        .prop_map(|(wildcard, id_fallback, client_side)| Routing {
            wildcard,
            id_fallback,
            client_side,
        })
}

impl Routing {
    /// Adds the features to a generated scenario whose groups are `g0`..`g<n-1>`.
    pub fn apply(&self, s: &mut Scenario) {
        if let Some((from, to)) = self.id_fallback {
            let groups = groups(s);
            let list = &s.gateway.model_list;
            let d = &list[to % list.len()];
            let id = d
                .model_info
                .id
                .clone()
                .expect("generated deployments have ids");
            let from = groups[from % groups.len()].clone();
            s.gateway
                .router_settings
                .fallbacks
                .get_or_insert_with(Vec::new)
                .insert(0, FallbackEntry::new(from, &[id.as_str()]));
        }
        if let Some(per_request) = &self.client_side {
            let groups = groups(s);
            for (i, r) in s.requests.iter_mut().enumerate() {
                let entries = &per_request[i % per_request.len()];
                if entries.is_empty() {
                    continue;
                }
                let list: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|(g, own)| {
                        let model = &groups[g % groups.len()];
                        if *own {
                            serde_json::json!({"model": model, "messages": [
                                {"role": "user", "content": format!("say the words for {model}")}
                            ]})
                        } else {
                            serde_json::json!({"model": model})
                        }
                    })
                    .collect();
                r.body
                    .insert("fallbacks".into(), serde_json::Value::Array(list));
            }
        }
        if let Some(w) = &self.wildcard {
            w.apply(s);
        }
    }

    /// A line for the case's description.
    pub fn describe(&self) -> String {
        let mut line = String::new();
        if let Some(w) = &self.wildcard {
            line.push_str(&format!(", wildcard {} -> {}", w.pattern, w.template));
        }
        if self.id_fallback.is_some() {
            line.push_str(", fallback to a deployment id");
        }
        if self.client_side.is_some() {
            line.push_str(", client-side fallbacks with messages");
        }
        line
    }
}

fn groups(s: &Scenario) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for d in &s.gateway.model_list {
        if !names.contains(&d.model_name) {
            names.push(d.model_name.clone());
        }
    }
    names
}

impl Wildcard {
    fn apply(&self, s: &mut Scenario) {
        let groups = groups(s);
        let Some(first) = s.providers.first().cloned() else {
            return;
        };
        s.providers.push(crate::scenario::Provider {
            host: WILD_HOST.into(),
            ..first
        });
        s.gateway.model_list.push(Deployment {
            model_name: self.pattern.into(),
            litellm_params: LitellmParams {
                model: self.template.into(),
                api_base: Some(format!("http://{WILD_HOST}:8000/v1")),
                ..LitellmParams::default()
            },
            model_info: ModelInfo {
                id: Some(WILD_ID.into()),
            },
        });
        for (i, r) in s.requests.iter_mut().enumerate() {
            if let Some(k) = self.ask[i % self.ask.len()] {
                r.model = format!("w/m{k}");
            }
        }
        if let Some((k, bare, to)) = self.entry {
            let key = if bare {
                format!("m{k}")
            } else {
                format!("w/m{k}")
            };
            // `m<k>` applies to `w/m<k>` only through a provider prefix; `w` is none, so
            // the bare form is kept for the catch-all, which also serves `m<k>` itself.
            if !bare || self.pattern == "*" {
                let to = groups[to % groups.len()].clone();
                s.gateway
                    .router_settings
                    .fallbacks
                    .get_or_insert_with(Vec::new)
                    .insert(0, FallbackEntry::new(key, &[to.as_str()]));
            }
        }
        if let Some((from, k)) = self.target {
            let from = groups[from % groups.len()].clone();
            let to = format!("w/m{k}");
            s.gateway
                .router_settings
                .fallbacks
                .get_or_insert_with(Vec::new)
                .push(FallbackEntry::new(from, &[to.as_str()]));
        }
        if let Some(entry) = self.allow {
            let entry = entry.map_or_else(|| "w/*".to_string(), |k| format!("w/m{k}"));
            let lists = s
                .gateway
                .keys
                .iter_mut()
                .map(|k| &mut k.models)
                .chain(s.gateway.teams.iter_mut().map(|t| &mut t.models));
            for list in lists {
                if !list.is_empty() {
                    list.push(entry.clone());
                }
            }
        }
    }
}
