//! The validated, indexed form of a [`GatewayConfig`]: what the engine reads at run time.
//!
//! Owns: group and deployment indices, each deployment's upstream endpoint, each key's
//! allow-list and prepared settings (one [`Overrides`] per level), and the gateway-wide
//! settings (cooldown, backoff, seed). Built once at start-up; immutable afterwards, so every
//! request (streaming or not) reads exactly the same data. Does not own the precedence rule
//! (`policy`) nor mutable state (cooldowns live in `route::cooldown`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::FailureClass;
use crate::config::{ConfigError, GatewayConfig, RouterSettings, strip_provider};
use crate::limits::{Limits, secs};
use crate::policy::{FallbackTable, Overrides};
use crate::secret::Secret;
use crate::upstream::Endpoint;

/// Index of a model group in [`Catalog::groups`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// Index of a deployment in [`Catalog::deployments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentId(pub u32);

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub deployments: Vec<DeploymentId>,
}

#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    /// Stable id for traces and headers (`model_info.id`, else `<group>#<n>`).
    pub id: String,
    pub group: GroupId,
    pub endpoint: Endpoint,
    /// The model name sent upstream (provider prefix stripped).
    pub upstream_model: String,
    pub api_key: Option<Secret>,
    pub weight: u32,
    pub order: u32,
    pub timeout: Option<Duration>,
    pub stream_timeout: Option<Duration>,
    /// Called with `stream: true` (default) or for one JSON completion (`fake_stream`).
    pub stream: bool,
    /// A streaming call carries `stream_options` (`send_stream_options`, default true).
    pub stream_options: bool,
    /// `litellm_params.model` when it has a `*`: for a deployment of a wildcard group, the
    /// model it is called with comes from the requested name (see [`crate::wildcard`]).
    pub model_template: Option<String>,
    /// `litellm_params.cooldown_time`: beats Retry-After and the gateway's (see
    /// `route::cooldown`).
    pub cooldown_time: Option<Duration>,
    /// `litellm_params.num_retries` (see [`crate::policy::EffectiveSettings::retries_in`]).
    pub num_retries: Option<u32>,
    /// `litellm_params.ssl_verify` as a CA bundle: the only certificates trusted for this
    /// deployment's `https` upstream (none: the Mozilla roots).
    pub ca_bundle: Option<Arc<crate::upstream::tls::CaBundle>>,
}

impl DeploymentSpec {
    /// Whether `other` calls the same upstream as this one: the same id, `api_base`, model
    /// and key. Deployment health belongs to an upstream, and a default id (`<group>#<n>`)
    /// is only a place in its group: after a reload it may name another one.
    pub fn is_same_upstream(&self, other: &DeploymentSpec) -> bool {
        self.id == other.id
            && self.endpoint == other.endpoint
            && self.upstream_model == other.upstream_model
            && self.model_template == other.model_template
            && self.api_key == other.api_key
    }
}

/// A request served by a wildcard group: the name it asked for and what the group's `*`s
/// captured from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WildcardServe {
    pub requested: String,
    pub captures: Vec<String>,
}

impl WildcardServe {
    /// The model `spec` (a deployment of the serving group) is called with: its
    /// `litellm_params.model` with the captures put in, provider prefix stripped.
    pub fn upstream_model(&self, spec: &DeploymentSpec) -> String {
        match &spec.model_template {
            None => spec.upstream_model.clone(),
            Some(template) => {
                let captures: Vec<&str> = self.captures.iter().map(String::as_str).collect();
                let model = crate::wildcard::deployment_model(template, &captures, &self.requested);
                strip_provider(&model).to_string()
            }
        }
    }
}

/// The group a requested model name is served by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub group: GroupId,
    /// Set when a wildcard group serves the name.
    pub wildcard: Option<WildcardServe>,
}

/// SHA-256 of a virtual key: what the catalog keeps instead of the key.
///
/// Looking a presented token up by its digest makes the lookup's timing useless to an
/// attacker: comparisons stop at the first differing byte of two *digests*, and no one can
/// steer a digest's prefix towards a stored one. The catalog (and its `Debug` output) never
/// holds a key in plain text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(secret: &str) -> KeyDigest {
        let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        KeyDigest(out)
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…")
    }
}

/// A virtual key, ready for admission.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub alias: String,
    pub team: Option<usize>,
    /// `allowed[g]`: may this key use group `g` (its own and its team's lists combined)?
    pub allowed: Arc<[bool]>,
    /// The key's and its team's `models` lists, for names a wildcard group serves (which
    /// `allowed` cannot list): see [`KeySpec::admits_name`].
    pub model_lists: [Arc<[String]>; 2],
    pub overrides: Overrides,
}

impl KeySpec {
    /// Whether the key (and its team) may use the model name `name`, as LiteLLM checks a
    /// requested model against a key's `models` (`litellm/proxy/auth/auth_checks.py`,
    /// `_check_model_access_helper`): the name itself, not the wildcard group serving it,
    /// must be listed or match a wildcard entry.
    pub fn admits_name(&self, name: &str) -> bool {
        self.model_lists
            .iter()
            .all(|list| crate::wildcard::allow_list_admits(list, name))
    }

    /// Whether the key (and its team) may use any name at all: no `models` list, or one
    /// holding `*`.
    pub fn sees_every_group(&self) -> bool {
        self.model_lists
            .iter()
            .all(|list| crate::wildcard::allow_list_admits_every_name(list))
    }
}

#[derive(Debug, Clone)]
pub struct TeamSpec {
    pub team_id: String,
    pub overrides: Overrides,
}

/// Gateway-wide settings: shared state and engine behaviour not resolvable per request.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub cooldown_time: Duration,
    pub allowed_fails: u32,
    pub continuation_prompt: String,
    pub retry_backoff_base: Duration,
    pub retry_backoff_max: Duration,
    pub fallback_on_bad_request: bool,
    /// Cool the only deployment of a group too (`cooldown_lone_deployment`).
    pub cooldown_lone_deployment: bool,
    pub rng_seed: u64,
    /// `allowed_fails_policy` (see [`GatewaySettings::allowed_fails_for`]).
    pub allowed_fails_policy: crate::config::AllowedFailsPolicy,
    /// Cool by the failure rate of the current minute (`cooldown_by_failure_rate`).
    pub cooldown_by_failure_rate: bool,
}

pub const DEFAULT_COOLDOWN_TIME: Duration = Duration::from_secs(5);
pub const DEFAULT_ALLOWED_FAILS: u32 = 3;
pub const DEFAULT_RETRY_BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
pub const DEFAULT_CONTINUATION_PROMPT: &str =
    "Continue exactly where your previous message stopped. Do not repeat any of it.";

#[derive(Debug, Clone)]
pub struct Catalog {
    pub groups: Vec<Group>,
    pub deployments: Vec<DeploymentSpec>,
    pub gateway: Overrides,
    pub settings: GatewaySettings,
    pub limits: Limits,
    /// The gateway's own `timeout` and `stream_timeout` (router_settings, else defaults):
    /// a timeout tighter than these (and the deployment's) was asked for by the request.
    pub gateway_timeouts: (Duration, Duration),
    /// Redacts the upstream keys from anything a client may read.
    pub redactor: crate::redact::Redactor,
    /// Whether requests without a key are served (`allow_anonymous`).
    pub allow_anonymous: bool,
    /// Whether requests may carry `mock_testing_*` flags
    /// (`general_settings.dangerously_allow_mock_testing_request_params`).
    pub allow_mock_flags: bool,
    keys: BTreeMap<KeyDigest, KeySpec>,
    /// `general_settings.master_key`, as a digest like the virtual keys.
    admin_key: Option<KeyDigest>,
    /// `general_settings.cors_allowed_origins`.
    pub cors: crate::gateway::cors::CorsPolicy,
    teams: Vec<TeamSpec>,
    by_name: BTreeMap<String, GroupId>,
    /// Wildcard groups, in the order LiteLLM tries them (most specific first).
    patterns: Vec<(GroupId, crate::wildcard::Pattern)>,
    /// Groups from this index on are deployment ids (see [`Catalog::pinned`]).
    pinned_from: usize,
    /// The ids of deployments whose `model` has a `*`, which get no group: see
    /// [`Catalog::wildcard_deployment`].
    wildcard_ids: BTreeMap<String, DeploymentId>,
    /// Groups from this index on are models a wildcard group serves, named as fallback
    /// targets in the config (see [`Catalog::wildcard_target`]), one [`WildcardServe`] each.
    targets_from: usize,
    target_serves: Vec<WildcardServe>,
    all_allowed: Arc<[bool]>,
}

/// What a group's traffic is shared by: LiteLLM's simple-shuffle draws by `weight` when
/// its deployments give one, else by `rpm`, else by `tpm`
/// (`router_strategy/simple_shuffle.py`). Read as informational, a 900/10 `rpm` split was
/// served 50/50, and the small quota's deployment met half the traffic and its 429s. A
/// quota shares the traffic only when every deployment of the group gives it: LiteLLM
/// reads a missing one as 0 when the first deployment listed has one, so a quota noted on
/// one deployment alone would send it all the traffic (or none, by the order listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WeightBasis {
    Weight,
    Rpm,
    Tpm,
}

fn weight_basis(config: &GatewayConfig) -> BTreeMap<&str, WeightBasis> {
    // Per group: whether any deployment gives a weight, and whether all give rpm, tpm.
    let mut seen: BTreeMap<&str, (bool, bool, bool)> = BTreeMap::new();
    for d in &config.model_list {
        let p = &d.litellm_params;
        let e = seen
            .entry(d.model_name.as_str())
            .or_insert((false, true, true));
        e.0 |= p.weight.is_some();
        e.1 &= p.rpm.is_some();
        e.2 &= p.tpm.is_some();
    }
    seen.into_iter()
        .map(|(group, (weight, rpm, tpm))| {
            let basis = match (weight, rpm, tpm) {
                (false, true, _) => WeightBasis::Rpm,
                (false, false, true) => WeightBasis::Tpm,
                _ => WeightBasis::Weight,
            };
            (group, basis)
        })
        .collect()
}

/// A quota as a share of traffic (a group whose shares are all 0 is drawn evenly, see
/// `route::select`).
fn clamp_weight(quota: Option<u64>) -> u32 {
    let quota = quota.expect("a quota basis is chosen only when every deployment gives it");
    u32::try_from(quota).unwrap_or(u32::MAX)
}

impl Catalog {
    /// Builds the catalog of a config that passed [`GatewayConfig::validate`].
    pub fn new(config: &GatewayConfig) -> Result<Catalog, ConfigError> {
        if let Err(issues) = config.validate() {
            return Err(ConfigError {
                problems: issues
                    .into_iter()
                    .map(|i| crate::yaml::error_at("<config>", "", &i.path, i.message))
                    .collect(),
            });
        }
        let mut by_name = BTreeMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for d in &config.model_list {
            if !by_name.contains_key(&d.model_name) {
                by_name.insert(d.model_name.clone(), GroupId(groups.len() as u32));
                groups.push(Group {
                    name: d.model_name.clone(),
                    deployments: Vec::new(),
                });
            }
        }
        let basis = weight_basis(config);
        let mut deployments = Vec::new();
        let ids = config.deployment_ids();
        for (i, (d, deployment_id)) in config.model_list.iter().zip(ids).enumerate() {
            let group = by_name[&d.model_name];
            let p = &d.litellm_params;
            let mut endpoint =
                Endpoint::parse(p.api_base.as_deref().expect("validated: api_base present"))
                    .expect("validated: api_base parses");
            endpoint.azure_api_version = p.api_version.clone();
            let id = DeploymentId(deployments.len() as u32);
            groups[group.0 as usize].deployments.push(id);
            deployments.push(DeploymentSpec {
                id: deployment_id,
                group,
                endpoint,
                upstream_model: strip_provider(&p.model).to_string(),
                api_key: p.api_key.clone(),
                weight: match basis.get(d.model_name.as_str()) {
                    Some(WeightBasis::Rpm) => clamp_weight(p.rpm),
                    Some(WeightBasis::Tpm) => clamp_weight(p.tpm),
                    _ => p.weight.unwrap_or(1),
                },
                order: p.order.unwrap_or(0),
                timeout: p.timeout.map(secs),
                stream_timeout: p.stream_timeout.map(secs),
                stream: !p.fake_stream.unwrap_or(false),
                stream_options: p.send_stream_options.unwrap_or(true),
                cooldown_time: p.cooldown_time.map(secs),
                num_retries: p.num_retries,
                model_template: p.model.contains('*').then(|| p.model.clone()),
                ca_bundle: match &p.ssl_verify {
                    // Read again here: it may have changed since `validate` read it.
                    Some(crate::config::SslVerify::CaBundle(path)) => Some(Arc::new(
                        crate::upstream::tls::CaBundle::load(path).map_err(|why| {
                            use crate::yaml::PathSeg::{Index, Key};
                            let at = [
                                Key("model_list".into()),
                                Index(i),
                                Key("litellm_params".into()),
                                Key("ssl_verify".into()),
                            ];
                            ConfigError {
                                problems: vec![crate::yaml::error_at("<config>", "", &at, why)],
                            }
                        })?,
                    )),
                    _ => None,
                },
            });
        }
        // LiteLLM sorts patterns by specificity, descending; Rust's sort is stable, so ties
        // keep `model_list` order as Python's `sorted` does.
        let mut patterns: Vec<(GroupId, crate::wildcard::Pattern)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                crate::wildcard::Pattern::parse(&g.name).map(|p| (GroupId(i as u32), p))
            })
            .collect();
        patterns.sort_by_key(|(g, _)| {
            std::cmp::Reverse(crate::wildcard::Pattern::specificity(
                &groups[g.0 as usize].name,
            ))
        });
        // Every deployment id is also a name a fallback (or a request) may use: a group of
        // that one deployment. An id that names its own group of one needs none.
        let pinned_from = groups.len();
        let mut wildcard_ids = BTreeMap::new();
        for (i, spec) in deployments.iter().enumerate() {
            // (The default id of a wildcard group's deployment, `openai/*#1`, names none.)
            if spec.id.contains('*') {
                continue;
            }
            // A deployment whose `model` has a `*` is called with a model made from the
            // requested name, and its id gives none: named by it, it would be sent
            // `"model": "*"`. Validation keeps such ids out of fallbacks; a request naming
            // one is refused at admission.
            if spec.model_template.is_some() {
                wildcard_ids.insert(spec.id.clone(), DeploymentId(i as u32));
                continue;
            }
            if !by_name.contains_key(&spec.id) {
                by_name.insert(spec.id.clone(), GroupId(groups.len() as u32));
                groups.push(Group {
                    name: spec.id.clone(),
                    deployments: vec![DeploymentId(i as u32)],
                });
            }
        }
        // A config fallback to a model only a wildcard group serves (`openai/gpt-4.1-mini`
        // under `openai/*`) reaches it as LiteLLM does: the fallback calls the router with
        // that name, which the pattern serves (`litellm/router_utils/
        // fallback_event_handlers.py`, `run_async_fallback` sets `kwargs["model"]`). Each such
        // name becomes a group of the pattern's deployments, called with the name's model.
        let targets_from = groups.len();
        let mut target_serves = Vec::new();
        for target in config.fallback_targets() {
            if by_name.contains_key(target) {
                continue;
            }
            let Some((pattern_group, captures)) = patterns
                .iter()
                .find_map(|(g, p)| p.captures(target).map(|c| (*g, c)))
            else {
                continue;
            };
            by_name.insert(target.to_string(), GroupId(groups.len() as u32));
            let deployments = groups[pattern_group.0 as usize].deployments.clone();
            groups.push(Group {
                name: target.to_string(),
                deployments,
            });
            target_serves.push(WildcardServe {
                requested: target.to_string(),
                captures: captures.into_iter().map(str::to_string).collect(),
            });
        }
        let n = groups.len();
        let mut catalog = Catalog {
            groups,
            deployments,
            gateway: Overrides::default(),
            settings: gateway_settings(&config.router_settings, &config.limits),
            limits: config.limits.clone(),
            gateway_timeouts: (Duration::ZERO, Duration::ZERO),
            redactor: crate::redact::Redactor::new(
                config
                    .model_list
                    .iter()
                    .filter_map(|d| d.litellm_params.api_key.as_ref().map(Secret::expose)),
            ),
            allow_anonymous: config.allow_anonymous,
            allow_mock_flags: config
                .general_settings
                .dangerously_allow_mock_testing_request_params,
            keys: BTreeMap::new(),
            admin_key: config
                .general_settings
                .master_key
                .as_ref()
                .map(Secret::expose)
                .map(KeyDigest::of),
            cors: crate::gateway::cors::CorsPolicy::new(
                &config.general_settings.cors_allowed_origins,
            ),
            teams: Vec::new(),
            by_name,
            patterns,
            pinned_from,
            wildcard_ids,
            targets_from,
            target_serves,
            all_allowed: vec![true; n].into(),
        };
        // LiteLLM's Router reads an empty specific list in its own settings as unset
        // (`context_window_fallbacks or litellm.context_window_fallbacks`, `None` by
        // default), and such a failure then falls back by `fallbacks`. At a key's, a team's
        // or a request's level the list is passed as given (`is not None`): empty, it means
        // no fallback for that class.
        let mut gateway_settings = config.router_settings.clone();
        for list in [
            &mut gateway_settings.context_window_fallbacks,
            &mut gateway_settings.content_policy_fallbacks,
        ] {
            if list.as_ref().is_some_and(Vec::is_empty) {
                *list = None;
            }
        }
        catalog.gateway = catalog
            .overrides(&gateway_settings)
            .expect("validated: gateway settings");
        let baseline = crate::policy::Levels {
            request: None,
            key: None,
            team: None,
            gateway: &catalog.gateway,
        }
        .resolve(&catalog.limits);
        catalog.gateway_timeouts = (baseline.timeout.value, baseline.stream_timeout.value);
        for t in &config.teams {
            let overrides = catalog
                .overrides(&t.router_settings)
                .expect("validated: team settings");
            catalog.teams.push(TeamSpec {
                team_id: t.team_id.clone(),
                overrides,
            });
        }
        // Keys with the same `models` lists (their own and their team's) share one answer:
        // it is a pass over every group (deployment ids included), so with thousands of
        // keys and deployments a reload spent most of its time here, quadratic in the
        // config, and held a copy per key.
        type Lists<'a> = (&'a [String], &'a [String]);
        let mut allowed_by_lists: BTreeMap<Lists, Arc<[bool]>> = BTreeMap::new();
        for k in &config.keys {
            let team = k.team_id.as_ref().map(|id| {
                config
                    .teams
                    .iter()
                    .position(|t| &t.team_id == id)
                    .expect("validated: team exists")
            });
            let team_models = team
                .map(|t| config.teams[t].models.as_slice())
                .unwrap_or(&[]);
            let lists = (k.models.as_slice(), team_models);
            let allowed = match allowed_by_lists.get(&lists) {
                Some(allowed) => allowed.clone(),
                None => {
                    let allowed = catalog.allowed_by(lists.0, lists.1);
                    allowed_by_lists.insert(lists, allowed.clone());
                    allowed
                }
            };
            let model_lists = [k.models.clone().into(), team_models.to_vec().into()];
            let overrides = catalog
                .overrides(&k.router_settings)
                .expect("validated: key settings");
            catalog.keys.insert(
                KeyDigest::of(k.key.expose()),
                KeySpec {
                    alias: k
                        .key_alias
                        .clone()
                        .unwrap_or_else(|| redact(k.key.expose())),
                    team,
                    allowed,
                    model_lists,
                    overrides,
                },
            );
        }
        Ok(catalog)
    }

    /// Prepares one level's settings: group names become ids, seconds become durations.
    /// Fails (with a message) on a name that is not a group, which only request-level
    /// settings can still contain after validation.
    pub fn overrides(&self, s: &RouterSettings) -> Result<Overrides, String> {
        let table = |list: &Option<Vec<crate::config::FallbackEntry>>| -> Result<Option<Arc<FallbackTable>>, String> {
            list.as_ref()
                .map(|entries| FallbackTable::build(entries, self).map(Arc::new))
                .transpose()
        };
        let default_fallbacks = match &s.default_fallbacks {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|g| {
                        self.group_id(g)
                            .ok_or_else(|| format!("fallback to unknown group `{g}`"))
                    })
                    .collect::<Result<Arc<[GroupId]>, String>>()?,
            ),
        };
        let policy = s.retry_policy.as_ref();
        Ok(Overrides {
            fallbacks: table(&s.fallbacks)?,
            context_window_fallbacks: table(&s.context_window_fallbacks)?,
            content_policy_fallbacks: table(&s.content_policy_fallbacks)?,
            default_fallbacks,
            num_retries: s.num_retries,
            retry_policy: policy
                .map(|p| [p.rate_limit, p.timeout, p.internal_server, p.authentication]),
            timeout: s.timeout.map(secs),
            stream_timeout: s.stream_timeout.map(secs),
            max_fallbacks: s.max_fallbacks,
            mid_stream: s.mid_stream,
            disable_fallbacks: s.disable_fallbacks,
            num_retries_per_request: s.num_retries_per_request,
            model_group_retry_policy: match &s.model_group_retry_policy {
                None => None,
                Some(map) => Some(Arc::new(
                    map.iter()
                        .map(|(name, p)| {
                            self.group_id(name)
                                .map(|g| (g, crate::policy::ClassRetries::of(p)))
                                .ok_or_else(|| format!("retry policy for unknown group `{name}`"))
                        })
                        .collect::<Result<_, String>>()?,
                )),
            },
        })
    }

    /// Whether `d` is the only deployment of its group.
    pub fn is_lone(&self, d: DeploymentId) -> bool {
        self.group(self.deployment(d).group).deployments.len() == 1
    }

    pub fn group_id(&self, name: &str) -> Option<GroupId> {
        self.by_name.get(name).copied()
    }

    /// The group serving a requested model name: a group of that exact name, else the most
    /// specific wildcard group whose pattern matches it (`litellm/router.py`,
    /// `Router._common_checks_available_deployment`, then
    /// `PatternMatchRouter.get_deployments_by_pattern`). A wildcard group's own name (a
    /// request for `openai/*` itself) is matched as a pattern too, so its deployments are
    /// always called with a model made from the request.
    pub fn route(&self, name: &str) -> Option<Routed> {
        if let Some(group) = self.group_id(name) {
            // A fallback target a pattern serves is asked for like any name the pattern
            // serves (and labelled by the pattern).
            if !self.is_wildcard(group) && self.wildcard_target(group).is_none() {
                return Some(Routed {
                    group,
                    wildcard: None,
                });
            }
        }
        self.patterns.iter().find_map(|(group, pattern)| {
            pattern.captures(name).map(|captures| Routed {
                group: *group,
                wildcard: Some(WildcardServe {
                    requested: name.to_string(),
                    captures: captures.into_iter().map(str::to_string).collect(),
                }),
            })
        })
    }

    /// The deployment a group stands for when it is a deployment id rather than a model
    /// group: a fallback (or a request) naming `model_info.id` calls exactly that
    /// deployment, as LiteLLM does (`litellm/router.py`,
    /// `Router._common_checks_available_deployment`: `has_model_id` is checked before the
    /// group names, and `get_deployment` returns that deployment as it is, before any
    /// cooldown filter).
    pub fn pinned(&self, group: GroupId) -> Option<DeploymentId> {
        let i = group.0 as usize;
        if i < self.pinned_from || i >= self.targets_from {
            return None;
        }
        self.groups.get(i).map(|g| g.deployments[0])
    }

    /// The deployment `name` is the id of, when that deployment's `model` has a `*`: it
    /// cannot be called by its id (see [`crate::config::wildcard_id_why`]), and a request
    /// naming it is refused rather than routed (ids are looked up before patterns, as in
    /// LiteLLM, so a `*` group must not serve the id as a model name either).
    pub fn wildcard_deployment(&self, name: &str) -> Option<DeploymentId> {
        self.wildcard_ids.get(name).copied()
    }

    /// Every id [`Catalog::wildcard_deployment`] knows, with its deployment's group, in id
    /// order: what request-level fallbacks are checked against.
    pub fn wildcard_ids(&self) -> Vec<(&str, &str)> {
        self.wildcard_ids
            .iter()
            .map(|(id, d)| {
                (
                    id.as_str(),
                    self.group(self.deployment(*d).group).name.as_str(),
                )
            })
            .collect()
    }

    /// For a group that is a config fallback target a wildcard group serves: the name and
    /// captures its deployments are called with.
    pub fn wildcard_target(&self, group: GroupId) -> Option<&WildcardServe> {
        (group.0 as usize)
            .checked_sub(self.targets_from)
            .and_then(|i| self.target_serves.get(i))
    }

    /// How many model groups the config has (the groups that are not deployment ids).
    pub fn model_group_count(&self) -> usize {
        self.pinned_from
    }

    /// Whether `group` is a wildcard group (its name has a `*`).
    pub fn is_wildcard(&self, group: GroupId) -> bool {
        self.patterns.iter().any(|(g, _)| *g == group)
    }

    pub fn group(&self, id: GroupId) -> &Group {
        &self.groups[id.0 as usize]
    }

    pub fn deployment(&self, id: DeploymentId) -> &DeploymentSpec {
        &self.deployments[id.0 as usize]
    }

    /// For each deployment of this catalog, the deployment of `old` that calls the same
    /// upstream ([`DeploymentSpec::is_same_upstream`]), if any: what a reload carries health
    /// over by. Ids are unique within a catalog, so an index of `old`'s ids finds the one
    /// candidate: a reload of many thousands of deployments costs `n log n` comparisons,
    /// where comparing every pair did `n²` under the engine's write lock.
    pub fn same_upstreams_in(&self, old: &Catalog) -> Vec<Option<DeploymentId>> {
        let by_id: BTreeMap<&str, usize> = old
            .deployments
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.as_str(), i))
            .collect();
        assert_eq!(
            by_id.len(),
            old.deployments.len(),
            "deployment ids are unique"
        );
        self.deployments
            .iter()
            .map(|spec| {
                let i = *by_id.get(spec.id.as_str())?;
                old.deployments[i]
                    .is_same_upstream(spec)
                    .then_some(DeploymentId(i as u32))
            })
            .collect()
    }

    pub fn key(&self, secret: &str) -> Option<&KeySpec> {
        self.keys.get(&KeyDigest::of(secret))
    }

    /// Whether an admin key (`general_settings.master_key`) is configured.
    pub fn has_admin_key(&self) -> bool {
        self.admin_key.is_some()
    }

    /// Whether `secret` is the admin key.
    pub fn is_admin(&self, secret: &str) -> bool {
        self.admin_key.as_ref() == Some(&KeyDigest::of(secret))
    }

    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn team(&self, index: usize) -> &TeamSpec {
        &self.teams[index]
    }

    /// Allow-list for requests without a key (tests and benches that bypass auth).
    pub fn all_allowed(&self) -> Arc<[bool]> {
        self.all_allowed.clone()
    }

    /// Groups a key may use, in catalog order.
    pub fn allowed_groups<'a>(
        &'a self,
        allowed: &'a [bool],
    ) -> impl Iterator<Item = &'a Group> + 'a {
        self.groups[..self.pinned_from]
            .iter()
            .zip(allowed.iter())
            .filter(|(_, a)| **a)
            .map(|(g, _)| g)
    }
}

impl Catalog {
    /// `allowed[g]` for a key with the `models` list `own` in a team with `team`'s (empty:
    /// no list). A deployment named by its id may be used by the key that may use its
    /// group (or that lists the id itself).
    fn allowed_by(&self, own: &[String], team: &[String]) -> Arc<[bool]> {
        use crate::wildcard::allow_list_admits_every_name as admits_all;
        if admits_all(own) && admits_all(team) {
            return self.all_allowed.clone();
        }
        (0..self.groups.len())
            .map(|g| {
                let name = &self.groups[g].name;
                let group_of = self
                    .pinned(GroupId(g as u32))
                    .map(|d| &self.group(self.deployment(d).group).name);
                let lets = |list: &[String]| {
                    permits(list, name) || group_of.is_some_and(|own| permits(list, own))
                };
                lets(own) && lets(team)
            })
            .collect()
    }
}

fn permits(list: &[String], group: &str) -> bool {
    crate::wildcard::allow_list_admits(list, group)
}

/// Keys are secrets: traces show an alias, never the key.
fn redact(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

impl Default for GatewaySettings {
    /// The built-in defaults, as for a config whose `router_settings` is empty.
    fn default() -> Self {
        gateway_settings(&RouterSettings::default(), &Limits::default())
    }
}

fn gateway_settings(s: &RouterSettings, limits: &Limits) -> GatewaySettings {
    GatewaySettings {
        // `max_cooldown` is the longest any deployment is cooled, so it bounds the built-in
        // default too; a `cooldown_time` over it was refused at load, where it is written.
        cooldown_time: s
            .cooldown_time
            .map(secs)
            .unwrap_or(DEFAULT_COOLDOWN_TIME.min(limits.max_cooldown())),
        allowed_fails: s.allowed_fails.unwrap_or(DEFAULT_ALLOWED_FAILS),
        continuation_prompt: s
            .continuation_prompt
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTINUATION_PROMPT.to_string()),
        retry_backoff_base: s
            .retry_backoff_base
            .map(secs)
            .unwrap_or(DEFAULT_RETRY_BACKOFF_BASE),
        retry_backoff_max: s
            .retry_backoff_max
            .map(secs)
            .unwrap_or(DEFAULT_RETRY_BACKOFF_MAX),
        fallback_on_bad_request: s.fallback_on_bad_request.unwrap_or(false),
        cooldown_lone_deployment: s.cooldown_lone_deployment.unwrap_or(false),
        rng_seed: s.rng_seed.unwrap_or(0),
        allowed_fails_policy: s.allowed_fails_policy.clone().unwrap_or_default(),
        cooldown_by_failure_rate: s.cooldown_by_failure_rate.unwrap_or(false),
    }
}

impl GatewaySettings {
    /// The failures of `class` a deployment may have before it cools, when
    /// `allowed_fails_policy` names the class (LiteLLM: `router.py`,
    /// `Router.get_allowed_fails_from_policy`). `InternalServerErrorAllowedFails` covers
    /// transient and malformed failures; LiteLLM 1.83.0 declares it but never reads it.
    /// Bad-request and content-policy counts are `None`: those failures never cool.
    pub fn allowed_fails_for(&self, class: FailureClass) -> Option<u32> {
        let p = &self.allowed_fails_policy;
        match class {
            FailureClass::RateLimited => p.rate_limit,
            FailureClass::Timeout => p.timeout,
            FailureClass::Transient | FailureClass::Malformed => p.internal_server,
            FailureClass::Auth => p.authentication,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys with the same `models` lists share one `allowed` table, and keys with none
    /// share the catalog's all-true one: with thousands of keys and deployments, one table
    /// each made a reload quadratic and held a table per key.
    #[test]
    fn keys_with_the_same_model_lists_share_one_table() {
        let config = GatewayConfig::load(
            "t.yaml",
            r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/a, api_base: "http://up/v1"}, model_info: {id: a1}}
  - {model_name: b, litellm_params: {model: openai/b, api_base: "http://up/v1"}, model_info: {id: b1}}
teams:
  - {team_id: t, models: [a, b]}
keys:
  - {key: sk-1, models: [a]}
  - {key: sk-2, models: [a]}
  - {key: sk-3, models: [b]}
  - {key: sk-4}
  - {key: sk-5, models: ["*"]}
  - {key: sk-6, models: [a], team_id: t}
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let catalog = Catalog::new(&config).unwrap();
        let allowed = |k: &str| catalog.key(k).expect("a key").allowed.clone();
        let a = catalog.group_id("a").expect("a");
        let a1 = catalog
            .group_id("a1")
            .expect("a deployment id names a group");
        let b = catalog.group_id("b").expect("b");
        assert!(Arc::ptr_eq(&allowed("sk-1"), &allowed("sk-2")));
        assert!(!Arc::ptr_eq(&allowed("sk-1"), &allowed("sk-3")));
        assert!(
            !Arc::ptr_eq(&allowed("sk-1"), &allowed("sk-6")),
            "its team's list too"
        );
        assert!(Arc::ptr_eq(&allowed("sk-4"), &catalog.all_allowed));
        assert!(Arc::ptr_eq(&allowed("sk-5"), &catalog.all_allowed));
        // And the tables say what they said one per key.
        let table = allowed("sk-1");
        assert!(table[a.0 as usize] && table[a1.0 as usize] && !table[b.0 as usize]);
        let table = allowed("sk-6");
        assert!(table[a.0 as usize] && !table[b.0 as usize]);
        assert!(allowed("sk-3")[b.0 as usize] && !allowed("sk-3")[a.0 as usize]);
    }
}
