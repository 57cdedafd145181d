//! The effective settings of one request, resolved once, at admission.
//!
//! Owns: the precedence rule **request > key > team > gateway > built-in default**, applied
//! *field by field*, and the record of which level supplied each field (so a trace can say
//! "fallbacks from key"). Does not own how settings are used (`plan`, `attempt`).
//!
//! LiteLLM replaces a team's settings with the key's wholesale when a key has any; here a
//! key that sets only `num_retries` still inherits its team's `fallbacks`. The unit of
//! override is the field: a key's `fallbacks` list replaces the team's `fallbacks` list as a
//! whole (entries are not merged across levels).
//!
//! Nothing here knows whether the request streams. That is the point: there is one
//! [`EffectiveSettings`] per request, and both modes consume it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Catalog, GroupId};
use crate::classify::FailureClass;
use crate::config::{FallbackEntry, MidStreamPolicy, RetryPolicy, entry_names_group};
use crate::limits::Limits;

/// One retry policy's counts for the classes Switchback retries: a group's entry in
/// `model_group_retry_policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassRetries {
    pub rate_limit: Option<u32>,
    pub timeout: Option<u32>,
    pub internal_server: Option<u32>,
    pub authentication: Option<u32>,
}

impl ClassRetries {
    pub fn of(p: &RetryPolicy) -> ClassRetries {
        ClassRetries {
            rate_limit: p.rate_limit,
            timeout: p.timeout,
            internal_server: p.internal_server,
            authentication: p.authentication,
        }
    }

    /// The count for `class`, if the policy names one (classes never retried have none).
    pub fn count(&self, class: FailureClass) -> Option<u32> {
        match class {
            FailureClass::RateLimited => self.rate_limit,
            FailureClass::Timeout => self.timeout,
            FailureClass::Transient | FailureClass::Malformed => self.internal_server,
            FailureClass::Auth => self.authentication,
            _ => None,
        }
    }
}

/// `model_group_retry_policy`, by group.
pub type GroupRetryPolicies = BTreeMap<GroupId, ClassRetries>;

pub const DEFAULT_NUM_RETRIES: u32 = 2;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_FALLBACKS: u32 = 5;

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Default,
    Gateway,
    Team,
    Key,
    Request,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Default => "default",
            Level::Gateway => "gateway",
            Level::Team => "team",
            Level::Key => "key",
            Level::Request => "request",
        }
    }
}

/// A fallback list prepared for lookup: for every group, the list that applies to it
/// (exact entry, else provider-stripped entry, else `*`), resolved once at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackTable {
    by_group: Vec<Option<Arc<[GroupId]>>>,
    /// Per group, whether its list came from the `*` entry (and no entry of its own).
    by_star: Vec<bool>,
    /// Every entry by the name it is keyed by, in list order: for a name a wildcard group
    /// serves, looked up when the request arrives (see [`FallbackTable::lookup_name`]).
    named: Vec<(String, Arc<[GroupId]>)>,
}

impl FallbackTable {
    pub fn build(entries: &[FallbackEntry], catalog: &Catalog) -> Result<FallbackTable, String> {
        let resolve = |e: &FallbackEntry| -> Result<Arc<[GroupId]>, String> {
            e.fallbacks
                .iter()
                .map(|g| {
                    catalog
                        .group_id(g)
                        .ok_or_else(|| format!("fallback to unknown group `{g}`"))
                })
                .collect()
        };
        let named = entries
            .iter()
            .map(|e| Ok((e.group.clone(), resolve(e)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let mut by_group = Vec::with_capacity(catalog.groups.len());
        let mut by_star = Vec::with_capacity(catalog.groups.len());
        for group in &catalog.groups {
            let name = group.name.as_str();
            let found = entries
                .iter()
                .find(|e| e.group == name)
                // The last prefix-stripped match and the last `*` win, as in LiteLLM's
                // `get_fallback_model_group` (it keeps overwriting them as it scans; only
                // the exact match stops the scan): a `default_fallbacks` LiteLLM appends as
                // a `*` entry after the table's own then wins, as `FallbackPlan::list_for`
                // has it at one level.
                .or_else(|| {
                    entries
                        .iter()
                        .rev()
                        .find(|e| e.group != "*" && entry_names_group(&e.group, name))
                })
                .or_else(|| entries.iter().rev().find(|e| e.group == "*"));
            by_star.push(found.is_some_and(|e| e.group == "*"));
            by_group.push(found.map(resolve).transpose()?);
        }
        let names: Vec<&str> = catalog.groups.iter().map(|g| g.name.as_str()).collect();
        for e in entries {
            if e.group != "*"
                && !catalog
                    .groups
                    .iter()
                    .any(|g| entry_names_group(&e.group, &g.name))
                && !crate::config::fallback_key_served(&names, &e.group)
            {
                return Err(format!("fallback entry for unknown group `{}`", e.group));
            }
        }
        Ok(FallbackTable {
            by_group,
            by_star,
            named,
        })
    }

    /// The list for a model name a wildcard group serves, looked up as for a group: an
    /// entry keyed by exactly that name, else one that is it with or without a provider
    /// prefix (`entry_names_group`), else `*`. An entry keyed by the wildcard group's own name does not apply (LiteLLM
    /// looks fallbacks up by the requested model: `litellm/router_utils/
    /// fallback_event_handlers.py`, `get_fallback_model_group`); validation refuses such
    /// entries.
    pub fn lookup_name(&self, name: &str) -> Option<&[GroupId]> {
        self.lookup_name_entry(name).map(|(list, _)| list)
    }

    /// [`FallbackTable::lookup_name`], and whether the list is the `*` entry's.
    pub fn lookup_name_entry(&self, name: &str) -> Option<(&[GroupId], bool)> {
        // First exact match, last prefix-stripped one, last `*` (see `FallbackTable::new`).
        let find = |hit: &dyn Fn(&str) -> bool, last: bool| {
            let mut entries = self.named.iter();
            let found = if last {
                entries.rfind(|(key, _)| hit(key))
            } else {
                entries.find(|(key, _)| hit(key))
            };
            found.map(|(key, list)| (&**list, key == "*"))
        };
        find(&|key| key == name, false)
            .or_else(|| find(&|key| key != "*" && entry_names_group(key, name), true))
            .or_else(|| find(&|key| key == "*", true))
    }

    /// The list for `group`, or `None` if the table has no entry that applies.
    pub fn lookup(&self, group: GroupId) -> Option<&[GroupId]> {
        self.lookup_entry(group).map(|(list, _)| list)
    }

    /// [`FallbackTable::lookup`], and whether the list is the `*` entry's.
    pub fn lookup_entry(&self, group: GroupId) -> Option<(&[GroupId], bool)> {
        let i = group.0 as usize;
        let list = self.by_group.get(i).and_then(|l| l.as_deref())?;
        Some((list, self.by_star[i]))
    }
}

/// One level's settings, prepared. `None` means "this level does not say".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub fallbacks: Option<Arc<FallbackTable>>,
    pub context_window_fallbacks: Option<Arc<FallbackTable>>,
    pub content_policy_fallbacks: Option<Arc<FallbackTable>>,
    pub default_fallbacks: Option<Arc<[GroupId]>>,
    pub num_retries: Option<u32>,
    /// `retry_policy`, when this level sets one (whatever counts it names): its counts for
    /// rate limits, timeouts, server errors and authentication failures, in that order.
    pub retry_policy: Option<[Option<u32>; 4]>,
    pub timeout: Option<Duration>,
    pub stream_timeout: Option<Duration>,
    pub max_fallbacks: Option<u32>,
    pub mid_stream: Option<MidStreamPolicy>,
    pub disable_fallbacks: Option<bool>,
    pub num_retries_per_request: Option<u32>,
    pub model_group_retry_policy: Option<Arc<GroupRetryPolicies>>,
}

/// A resolved value and the level that supplied it.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub from: Level,
}

/// Everything one request's attempts are governed by. Immutable once built.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveSettings {
    pub fallbacks: Setting<Option<Arc<FallbackTable>>>,
    pub context_window_fallbacks: Setting<Option<Arc<FallbackTable>>>,
    pub content_policy_fallbacks: Setting<Option<Arc<FallbackTable>>>,
    pub default_fallbacks: Setting<Option<Arc<[GroupId]>>>,
    pub num_retries: Setting<u32>,
    pub rate_limit_retries: Setting<Option<u32>>,
    pub timeout_retries: Setting<Option<u32>>,
    pub internal_server_retries: Setting<Option<u32>>,
    pub timeout: Setting<Duration>,
    pub stream_timeout: Setting<Duration>,
    pub max_fallbacks: Setting<u32>,
    pub mid_stream: Setting<MidStreamPolicy>,
    pub disable_fallbacks: Setting<bool>,
    /// `retry_policy.AuthenticationErrorRetries`.
    pub authentication_retries: Setting<Option<u32>>,
    /// Retries and fallbacks the whole request may make (`num_retries_per_request`).
    pub num_retries_per_request: Setting<Option<u32>>,
    pub model_group_retry_policy: Setting<Option<Arc<GroupRetryPolicies>>>,
}

/// The levels of one request, highest precedence first.
pub struct Levels<'a> {
    pub request: Option<&'a Overrides>,
    pub key: Option<&'a Overrides>,
    pub team: Option<&'a Overrides>,
    pub gateway: &'a Overrides,
}

impl Levels<'_> {
    fn pick<T>(&self, field: impl Fn(&Overrides) -> Option<T>, default: T) -> Setting<T> {
        let ordered = [
            (self.request, Level::Request),
            (self.key, Level::Key),
            (self.team, Level::Team),
            (Some(self.gateway), Level::Gateway),
        ];
        for (overrides, level) in ordered {
            if let Some(value) = overrides.and_then(&field) {
                return Setting { value, from: level };
            }
        }
        Setting {
            value: default,
            from: Level::Default,
        }
    }

    /// Resolves every field. Called exactly once per request.
    ///
    /// The built-in defaults are held to `limits` too: a ceiling bounds every count
    /// ("any retry count", "any `max_fallbacks`"), so a config that lowers one below a
    /// default without setting the count itself gets the ceiling, not the default. A value
    /// some level sets is not clamped here: validation (config load, request admission)
    /// already refused any over its ceiling, with the field's location.
    pub fn resolve(&self, limits: &Limits) -> EffectiveSettings {
        let default_num_retries = DEFAULT_NUM_RETRIES.min(limits.max_retries_ceiling);
        let default_max_fallbacks = DEFAULT_MAX_FALLBACKS.min(limits.max_fallbacks_ceiling);
        // `retry_policy` is one field, as `fallbacks` is: the highest level that sets it
        // gives all four counts (a key's policy replaces its team's whole, even one that
        // names only classes never retried; a class the key's policy leaves out gets
        // `num_retries`, not the team's count for it).
        let retry_policy = self.pick(|o| o.retry_policy, [None; 4]);
        let count = |i: usize| Setting {
            value: retry_policy.value[i],
            from: retry_policy.from,
        };
        EffectiveSettings {
            fallbacks: self.pick(|o| o.fallbacks.clone().map(Some), None),
            context_window_fallbacks: self
                .pick(|o| o.context_window_fallbacks.clone().map(Some), None),
            content_policy_fallbacks: self
                .pick(|o| o.content_policy_fallbacks.clone().map(Some), None),
            default_fallbacks: self.pick(|o| o.default_fallbacks.clone().map(Some), None),
            num_retries: self.pick(|o| o.num_retries, default_num_retries),
            rate_limit_retries: count(0),
            timeout_retries: count(1),
            internal_server_retries: count(2),
            timeout: self.pick(|o| o.timeout, DEFAULT_TIMEOUT),
            stream_timeout: self.pick(|o| o.stream_timeout, DEFAULT_STREAM_TIMEOUT),
            max_fallbacks: self.pick(|o| o.max_fallbacks, default_max_fallbacks),
            mid_stream: self.pick(|o| o.mid_stream, MidStreamPolicy::Continue),
            disable_fallbacks: self.pick(|o| o.disable_fallbacks, false),
            authentication_retries: count(3),
            num_retries_per_request: self.pick(|o| o.num_retries_per_request.map(Some), None),
            model_group_retry_policy: self
                .pick(|o| o.model_group_retry_policy.clone().map(Some), None),
        }
    }
}

impl EffectiveSettings {
    /// Retries allowed in one group for failures of `class`: the class's `retry_policy`
    /// count if any level sets it, else `num_retries`. Classes that are never retried get 0.
    /// An `auth` failure has them too (LiteLLM: `router.py`, `Router.should_retry_this_error`
    /// lets 401/403 through when the group has several deployments), but only ever spends
    /// them on other deployments (`route::plan_retry`).
    pub fn retries_for(&self, class: FailureClass) -> u32 {
        self.retries_in(class, None, None)
    }

    /// [`EffectiveSettings::retries_for`] in a group (or `order` tier) whose first failed
    /// attempt of the request was on a deployment with its own `litellm_params.num_retries`
    /// (`deployment_num_retries`): that count replaces `num_retries` from every level, the
    /// request's included, and a `retry_policy` count for the class still beats it. This is
    /// LiteLLM's order in `router.py`, `Router.async_function_with_retries`: `num_retries`
    /// becomes the failed deployment's (`deployment_num_retries`, carried on the exception
    /// by `utils.py`'s `client` wrapper), then the retry policy's for the error, if any.
    ///
    /// In a `group` with an entry in `model_group_retry_policy`, that policy is the retry
    /// policy, whole: a class it does not name gets `num_retries` (the deployment's, or the
    /// resolved one), never `retry_policy`'s count (`router_utils/get_retry_from_policy.py`,
    /// `get_num_retries_from_retry_policy`, swaps the group's policy in for retry_policy).
    /// Each field is resolved on its own, then the group's policy beats `retry_policy`.
    pub fn retries_in(
        &self,
        class: FailureClass,
        group: Option<GroupId>,
        deployment_num_retries: Option<u32>,
    ) -> u32 {
        if !class.actions(false).retry {
            return 0;
        }
        let group_policy = group.and_then(|g| {
            self.model_group_retry_policy
                .value
                .as_ref()
                .and_then(|m| m.get(&g))
        });
        if let Some(p) = group_policy {
            return p
                .count(class)
                .or(deployment_num_retries)
                .unwrap_or(self.num_retries.value);
        }
        let specific = match class {
            FailureClass::RateLimited => self.rate_limit_retries.value,
            FailureClass::Timeout => self.timeout_retries.value,
            FailureClass::Transient | FailureClass::Malformed => self.internal_server_retries.value,
            // Only ever on another deployment of the group (`Failure::retry_elsewhere_only`).
            FailureClass::Auth => self.authentication_retries.value,
            _ => return 0,
        };
        if !class.actions(false).retry {
            return 0;
        }
        specific
            .or(deployment_num_retries)
            .unwrap_or(self.num_retries.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GatewayConfig, RouterSettings};

    fn catalog() -> Catalog {
        let yaml = r#"
allow_anonymous: true
model_list:
  - {model_name: a, litellm_params: {model: a, api_base: "http://pa/v1"}}
  - {model_name: b, litellm_params: {model: b, api_base: "http://pb/v1"}}
  - {model_name: vertex_ai/c, litellm_params: {model: c, api_base: "http://pc/v1"}}
"#;
        Catalog::new(&GatewayConfig::load("t.yaml", yaml).unwrap()).unwrap()
    }

    fn ov(c: &Catalog, s: RouterSettings) -> Overrides {
        c.overrides(&s).unwrap()
    }

    fn fb(group: &str, to: &[&str]) -> Option<Vec<FallbackEntry>> {
        Some(vec![FallbackEntry::new(group, to)])
    }

    #[test]
    fn every_level_wins_over_the_ones_below() {
        let c = catalog();
        let gateway = ov(
            &c,
            RouterSettings {
                num_retries: Some(1),
                ..Default::default()
            },
        );
        let team = ov(
            &c,
            RouterSettings {
                num_retries: Some(2),
                ..Default::default()
            },
        );
        let key = ov(
            &c,
            RouterSettings {
                num_retries: Some(3),
                ..Default::default()
            },
        );
        let request = ov(
            &c,
            RouterSettings {
                num_retries: Some(4),
                ..Default::default()
            },
        );
        let none = Overrides::default();
        let r = |req, key, team, gw| {
            Levels {
                request: req,
                key,
                team,
                gateway: gw,
            }
            .resolve(&c.limits)
            .num_retries
        };
        assert_eq!(
            r(Some(&request), Some(&key), Some(&team), &gateway),
            Setting {
                value: 4,
                from: Level::Request
            }
        );
        assert_eq!(
            r(None, Some(&key), Some(&team), &gateway),
            Setting {
                value: 3,
                from: Level::Key
            }
        );
        assert_eq!(
            r(None, None, Some(&team), &gateway),
            Setting {
                value: 2,
                from: Level::Team
            }
        );
        assert_eq!(
            r(None, None, None, &gateway),
            Setting {
                value: 1,
                from: Level::Gateway
            }
        );
        assert_eq!(
            r(None, None, None, &none),
            Setting {
                value: DEFAULT_NUM_RETRIES,
                from: Level::Default
            }
        );
    }

    /// `max_retries_ceiling` bounds any retry count and `max_fallbacks_ceiling` any
    /// `max_fallbacks`, the built-in defaults included: a config that sets neither count
    /// must not get 2 retries under a ceiling of 0, nor 5 fallbacks under a ceiling of 2.
    #[test]
    fn built_in_defaults_never_exceed_the_ceilings() {
        let yaml = "allow_anonymous: true\nmodel_list:\n  - {model_name: a, litellm_params: {model: a, api_base: \"http://pa/v1\"}}\nlimits: {max_retries_ceiling: 0, max_fallbacks_ceiling: 2}\n";
        let c = Catalog::new(&GatewayConfig::load("t.yaml", yaml).unwrap()).unwrap();
        let s = Levels {
            request: None,
            key: None,
            team: None,
            gateway: &c.gateway,
        }
        .resolve(&c.limits);
        assert_eq!(
            s.num_retries,
            Setting {
                value: 0,
                from: Level::Default
            }
        );
        assert_eq!(s.retries_for(FailureClass::Transient), 0);
        assert_eq!(
            s.max_fallbacks,
            Setting {
                value: 2,
                from: Level::Default
            }
        );
        // Ceilings above the defaults leave them alone.
        let s = Levels {
            request: None,
            key: None,
            team: None,
            gateway: &c.gateway,
        }
        .resolve(&crate::limits::Limits::default());
        assert_eq!(s.num_retries.value, DEFAULT_NUM_RETRIES);
        assert_eq!(s.max_fallbacks.value, DEFAULT_MAX_FALLBACKS);
    }

    /// The known bug's configuration: fallbacks only on the key, none on the gateway.
    #[test]
    fn key_fallbacks_apply_when_gateway_has_none() {
        let c = catalog();
        let key = ov(
            &c,
            RouterSettings {
                fallbacks: fb("a", &["b"]),
                ..Default::default()
            },
        );
        let gateway = Overrides::default();
        let s = Levels {
            request: None,
            key: Some(&key),
            team: None,
            gateway: &gateway,
        }
        .resolve(&c.limits);
        assert_eq!(s.fallbacks.from, Level::Key);
        let a = c.group_id("a").unwrap();
        assert_eq!(
            s.fallbacks.value.unwrap().lookup(a),
            Some(&[c.group_id("b").unwrap()][..])
        );
    }

    #[test]
    fn fields_resolve_independently() {
        let c = catalog();
        let team = ov(
            &c,
            RouterSettings {
                fallbacks: fb("a", &["b"]),
                ..Default::default()
            },
        );
        let key = ov(
            &c,
            RouterSettings {
                num_retries: Some(0),
                ..Default::default()
            },
        );
        let gateway = ov(
            &c,
            RouterSettings {
                mid_stream: Some(MidStreamPolicy::Error),
                ..Default::default()
            },
        );
        let s = Levels {
            request: None,
            key: Some(&key),
            team: Some(&team),
            gateway: &gateway,
        }
        .resolve(&c.limits);
        assert_eq!(
            s.fallbacks.from,
            Level::Team,
            "a key without fallbacks inherits the team's"
        );
        assert_eq!(s.num_retries.from, Level::Key);
        assert_eq!(
            s.mid_stream,
            Setting {
                value: MidStreamPolicy::Error,
                from: Level::Gateway
            }
        );
        assert_eq!(
            s.max_fallbacks,
            Setting {
                value: DEFAULT_MAX_FALLBACKS,
                from: Level::Default
            }
        );
    }

    #[test]
    fn lookup_exact_then_stripped_then_star() {
        let c = catalog();
        let entries = vec![
            FallbackEntry::new("c", &["a"]),
            FallbackEntry::new("*", &["b"]),
            FallbackEntry::new("b", &["a"]),
        ];
        let t = FallbackTable::build(&entries, &c).unwrap();
        let id = |n| c.group_id(n).unwrap();
        assert_eq!(
            t.lookup(id("vertex_ai/c")),
            Some(&[id("a")][..]),
            "stripped prefix matches"
        );
        assert_eq!(t.lookup(id("b")), Some(&[id("a")][..]), "exact wins over *");
        assert_eq!(t.lookup(id("a")), Some(&[id("b")][..]), "* for the rest");
        let t = FallbackTable::build(&[FallbackEntry::new("b", &["a"])], &c).unwrap();
        assert_eq!(t.lookup(id("a")), None);
        // An entry with another provider's prefix is not the group's: `openai/c` names
        // neither `c` nor `vertex_ai/c`'s provider, and names no group at all.
        assert!(FallbackTable::build(&[FallbackEntry::new("openai/c", &["a"])], &c).is_err());
        let t = FallbackTable::build(
            &[
                FallbackEntry::new("vertex_ai/b", &["a"]),
                FallbackEntry::new("*", &["b"]),
            ],
            &c,
        )
        .unwrap();
        assert_eq!(
            t.lookup(id("b")),
            Some(&[id("a")][..]),
            "a prefix over a bare group"
        );
    }

    #[test]
    fn retry_policy_beats_num_retries_per_class() {
        let c = catalog();
        let gateway = ov(
            &c,
            RouterSettings {
                retry_policy: Some(crate::config::RetryPolicy {
                    rate_limit: Some(1),
                    authentication: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let key = ov(
            &c,
            RouterSettings {
                num_retries: Some(4),
                ..Default::default()
            },
        );
        let s = Levels {
            request: None,
            key: Some(&key),
            team: None,
            gateway: &gateway,
        }
        .resolve(&c.limits);
        assert_eq!(s.retries_for(FailureClass::RateLimited), 1);
        assert_eq!(s.retries_for(FailureClass::Transient), 4);
        assert_eq!(s.retries_for(FailureClass::Malformed), 4);
        assert_eq!(s.retries_for(FailureClass::ContextWindow), 0);
        assert_eq!(s.retries_for(FailureClass::BadRequest), 0);
        assert_eq!(s.retries_for(FailureClass::Auth), 3);
        assert_eq!(s.retries_for(FailureClass::NotFound), 0);
        let s = Levels {
            request: None,
            key: Some(&key),
            team: None,
            gateway: &Overrides::default(),
        }
        .resolve(&c.limits);
        assert_eq!(
            s.retries_for(FailureClass::Auth),
            4,
            "an auth failure has num_retries, on other deployments only"
        );
    }

    /// `retry_policy` is one field: a key's policy replaces its team's whole, as a key's
    /// `fallbacks` does, so a class the key's policy leaves out gets `num_retries`, not the
    /// team's count for it.
    #[test]
    fn a_keys_retry_policy_replaces_its_teams_whole() {
        let c = catalog();
        let policy = |p: crate::config::RetryPolicy| {
            ov(
                &c,
                RouterSettings {
                    retry_policy: Some(p),
                    ..Default::default()
                },
            )
        };
        let team = policy(crate::config::RetryPolicy {
            rate_limit: Some(5),
            ..Default::default()
        });
        let key = policy(crate::config::RetryPolicy {
            timeout: Some(1),
            ..Default::default()
        });
        let s = Levels {
            request: None,
            key: Some(&key),
            team: Some(&team),
            gateway: &Overrides::default(),
        }
        .resolve(&c.limits);
        assert_eq!(s.retries_for(FailureClass::Timeout), 1);
        assert_eq!(
            s.retries_for(FailureClass::RateLimited),
            DEFAULT_NUM_RETRIES,
            "the team's rate-limit count is not the key's"
        );
        assert_eq!(s.rate_limit_retries.from, Level::Key);
        let s = Levels {
            request: None,
            key: None,
            team: Some(&team),
            gateway: &Overrides::default(),
        }
        .resolve(&c.limits);
        assert_eq!(s.retries_for(FailureClass::RateLimited), 5);
    }
}
