//! The gateway config file: what a user writes, and the checks that it makes sense.
//!
//! Owns: the serde model of `config.yaml` (`model_list`, `router_settings`, `teams`, `keys`,
//! `limits`) with LiteLLM's field names so a LiteLLM config pastes in, and validation that
//! points at the offending line. Does not own what the settings *mean* for a request
//! (`policy`), nor the indexed runtime form (`catalog`).
//!
//! Differences from LiteLLM, on purpose:
//! - unknown fields are errors, not silently ignored;
//! - a `fallbacks` entry must have exactly one group (LiteLLM takes the first key);
//! - `keys` and `teams` live in the file, each with its own `router_settings`, and settings
//!   are resolved field by field (see `policy`);
//! - `retry_policy` counts for classes that are never retried (bad request, content policy,
//!   context window) must be 0: a non-zero value would be silently ignored otherwise. (An
//!   auth failure is retried, on another deployment of the group only.)

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::limits::{Limits, MAX_SECONDS, MIN_NONZERO_SECONDS};
use crate::secret::Secret;
use crate::yaml::{self, PathSeg, YamlError};

/// The whole gateway config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Serve requests without a virtual key. Off by default: a config without `keys` is
    /// refused unless this says, on purpose, that anyone who can reach the port may use it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_anonymous: bool,
    /// The deployments: each serves a model group (`model_name`) from one upstream.
    #[serde(default)]
    pub model_list: Vec<Deployment>,
    /// Gateway-level router settings (teams, keys and requests may override the fields not
    /// marked *gateway only*).
    #[serde(default)]
    pub router_settings: RouterSettings,
    /// Teams: allow-lists of groups with their own router settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<Team>,
    /// Virtual keys clients send as `Authorization: Bearer <key>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<Key>,
    /// Named bounds on everything; every field has a default.
    #[serde(default)]
    pub limits: Limits,
    /// LiteLLM's `general_settings`; Switchback reads its `master_key` and
    /// `dangerously_allow_mock_testing_request_params` only.
    #[serde(default, skip_serializing_if = "GeneralSettings::is_empty")]
    pub general_settings: GeneralSettings,
}

/// LiteLLM's `general_settings` section, as far as Switchback has a use for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneralSettings {
    /// The admin key (LiteLLM's name for it). When set, it alone may scrape `GET /metrics`
    /// and call `POST /admin/reload`; it is not a virtual key and cannot make requests.
    /// `os.environ/NAME` reads the environment at load time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Secret>,
    /// Whether requests may carry `mock_testing_*` flags (LiteLLM's name for the same
    /// opt-in). Off by default: a mocked failure counts as a failed attempt in the
    /// gateway's metrics and takes a fallback, so any client could fire every tenant's
    /// "provider is failing" alerts without one upstream call. A request with a flag is
    /// then refused with a 400 naming this setting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dangerously_allow_mock_testing_request_params: bool,
    /// Origins whose browser pages may call the gateway (CORS): `scheme://host[:port]`
    /// each, or `*` for any. Empty (the default): none, and the gateway answers as if CORS
    /// did not exist. Switchback's own setting: LiteLLM allows every origin by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_allowed_origins: Vec<String>,
}

impl GeneralSettings {
    fn is_empty(&self) -> bool {
        self.master_key.is_none()
            && !self.dangerously_allow_mock_testing_request_params
            && self.cors_allowed_origins.is_empty()
    }
}

/// Whether `origin` is one as browsers send it in `Origin`: `*`, or `scheme://host[:port]`
/// with no path, query or trailing slash (what a browser sends never has one, so such an
/// entry would never match).
fn is_cors_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && origin.parse::<http::HeaderValue>().is_ok()
}

/// One upstream deployment serving a model group (`model_name`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// The model group clients ask for.
    pub model_name: String,
    /// How to call the upstream: model, `api_base`, key, timeouts, weight, ...
    pub litellm_params: LitellmParams,
    /// Metadata: the deployment `id` traces, headers and `attempts` name.
    #[serde(default)]
    pub model_info: ModelInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LitellmParams {
    /// Upstream model, optionally with a LiteLLM provider prefix (`openai/gpt-4o`).
    pub model: String,
    /// Base URL of the OpenAI-compatible API, e.g. `http://provider-a:8000/v1`.
    /// `os.environ/NAME` reads the environment at load time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Bearer token sent upstream. `os.environ/NAME` reads the environment at load time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Whole-attempt timeout for this deployment, seconds (the tighter of this and the
    /// request's effective `timeout` applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Time to headers, to the first output and longest gap between chunks for this
    /// deployment, seconds (the tighter one applies). Set here, it bounds the wait for the
    /// first output too (see `RouterSettings::stream_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_timeout: Option<f64>,
    /// Relative share of traffic inside its group (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Requests per minute. Not enforced; when no deployment of the group gives a
    /// `weight`, the group's traffic is shared by `rpm` (LiteLLM's simple-shuffle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens per minute. Not enforced; when the group gives neither `weight` nor `rpm`,
    /// its traffic is shared by `tpm` (LiteLLM's simple-shuffle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Priority tier: a request enters the group at its lowest tier with a healthy
    /// deployment and its retries stay there; once that tier is spent (or cooling) it takes
    /// an order-based fallback to the next tier, before the group's fallbacks (LiteLLM's
    /// semantics; see `attempt` and `route::select`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// Call this deployment without streaming (LiteLLM's name): for providers that cannot
    /// stream a request (reasoning models for unverified organisations, audio output in
    /// `wav`/`mp3`). Both client modes then call it the same way; a streaming client gets
    /// the one answer re-chunked. Default false: deployments are called with `stream: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake_stream: Option<bool>,
    /// Whether a streaming call carries `stream_options` (with `include_usage`). Set false
    /// for upstreams that reject the field (their answers then may lack `usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_stream_options: Option<bool>,
    /// Seconds this deployment rests when it is cooled, beating the response's Retry-After
    /// and the gateway's `cooldown_time`; 0: never cooled, its failures not counted
    /// (LiteLLM: `router.py`, `Router.deployment_callback_on_failure`, and
    /// `router_utils/cooldown_handlers.py`, `_should_run_cooldown_logic`). At most
    /// `limits.max_cooldown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_time: Option<f64>,
    /// Retries of a group whose first failed attempt of the request was on this deployment,
    /// in place of the `num_retries` the request resolved at every level; a `retry_policy`
    /// count for the failure's class still beats it. LiteLLM's semantics: the deployment's
    /// `num_retries` rides back to the router on the exception (`utils.py`, `client`
    /// wrapper) and `router.py`, `Router.async_function_with_retries`, retries with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    /// How an `https` upstream's certificate is checked (LiteLLM's name): `true` (the
    /// default) against the Mozilla root store; a path to a PEM CA bundle to trust only the
    /// certificates in it (a private CA, a self-signed test provider). `false` is refused:
    /// Switchback always verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_verify: Option<SslVerify>,
    /// Azure OpenAI's `api-version` (LiteLLM's name), for an `azure/<deployment>` model:
    /// the deployment is then called at Azure's deployments API,
    /// `{api_base}/openai/deployments/<deployment>/chat/completions?api-version=...`, with
    /// its key as `api-key`, as LiteLLM's `azure/` provider and the `AzureOpenAI` clients
    /// call it; `api_base` is the resource's root (`https://<resource>.openai.azure.com`).
    /// Without it an `azure/` model is called as any OpenAI-compatible API, Azure's v1 API
    /// (`api_base: https://<resource>.openai.azure.com/openai/v1`) among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// `litellm_params.ssl_verify`: `true` (the Mozilla roots) or the path of a PEM CA bundle
/// whose certificates alone are trusted. `false` is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SslVerify {
    /// `true`: verify against the Mozilla roots (`false` is refused at load).
    Enabled(bool),
    /// Path of a PEM CA bundle: only its certificates are trusted.
    CaBundle(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Stable deployment id used in traces and headers; defaults to `<group>#<n>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A team: an allow-list of groups and its own router settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Team {
    /// The team's name, as keys' `team_id` give it.
    pub team_id: String,
    /// Groups the team may use; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The team's router settings: they beat the gateway's, field by field.
    #[serde(default)]
    pub router_settings: RouterSettings,
}

/// A virtual key clients send as `Authorization: Bearer <key>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// The secret clients send (`Authorization: Bearer <key>`). `os.environ/NAME` reads
    /// the environment at load time.
    pub key: Secret,
    /// A readable name for the key (traces show only its last characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    /// The team this key belongs to: its allow-list and router settings apply under the
    /// key's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Groups the key may use; empty means all (within its team's list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The key's router settings: they beat the team's and the gateway's, field by field.
    #[serde(default)]
    pub router_settings: RouterSettings,
}

/// Router settings. The same shape is accepted at gateway, team, key and request level;
/// the fields marked *gateway only* are shared state and are refused anywhere else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// Groups to try, in order, when a group fails (after its retries): `- {group:
    /// [fallback, ...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<FallbackEntry>>,
    /// Fallbacks taken only for a context-window failure (`context_length_exceeded`),
    /// instead of `fallbacks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window_fallbacks: Option<Vec<FallbackEntry>>,
    /// Fallbacks taken only for a content-policy failure, instead of `fallbacks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_policy_fallbacks: Option<Vec<FallbackEntry>>,
    /// Fallbacks for any group without its own entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_fallbacks: Option<Vec<String>>,
    /// Retries of a failed group before its fallbacks (a `retry_policy` count for the class
    /// beats it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    /// Retries per failure class, LiteLLM's names (`RateLimitErrorRetries`, ...); unset
    /// classes use `num_retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Whole-attempt timeout, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Time to headers, to the first output and longest gap between chunks, seconds.
    /// Unset at every level (and on the deployment), only the gaps after the first output
    /// are bounded (60 s): a reasoning model may think in silence up to `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_timeout: Option<f64>,
    /// Fallback groups one request may visit (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fallbacks: Option<u32>,
    /// What happens when a stream fails after its first content chunk: `continue` on the
    /// next attempt (default) or end with an `error` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid_stream: Option<MidStreamPolicy>,
    /// Take no fallbacks at all (retries still happen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_fallbacks: Option<bool>,

    /// *Gateway only.* Seconds a deployment rests after it is cooled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_time: Option<f64>,
    /// *Gateway only.* Consecutive transient failures a deployment may have before cooling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_fails: Option<u32>,
    /// *Gateway only.*
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_strategy: Option<RoutingStrategy>,
    /// *Gateway only.* Instruction appended after the partial answer when a stream is
    /// continued on another attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_prompt: Option<String>,
    /// *Gateway only.* First retry backoff ceiling, seconds (doubles per retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_base: Option<f64>,
    /// *Gateway only.* Largest retry backoff ceiling, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_max: Option<f64>,
    /// *Gateway only.* Whether a `bad_request` failure falls back (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_on_bad_request: Option<bool>,
    /// *Gateway only.* Whether the only deployment of a group is cooled like any other
    /// (default false: LiteLLM's behaviour, which never cools it for a rate limit or a
    /// server error, since cooling it makes the whole group unavailable; see
    /// `route::cooldown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_lone_deployment: Option<bool>,
    /// *Gateway only.* Seed of the gateway's random choices (load balancing, jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng_seed: Option<u64>,
    /// Retries and fallbacks one request may make in all, order-based fallbacks and groups
    /// skipped while cooling included (LiteLLM's `num_retries_per_request`, "for the request
    /// overall (incl. fallbacks + model retries)"). Resolved per request; at most
    /// `limits.max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries_per_request: Option<u32>,
    /// *Gateway only.* Failures of one class a deployment may have before it cools, per
    /// class (LiteLLM's `AllowedFailsPolicy`); a class without a count keeps its own rule
    /// (see `route::cooldown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_fails_policy: Option<AllowedFailsPolicy>,
    /// A retry policy per group, used in that group instead of `retry_policy` (whole: a
    /// class it does not name gets `num_retries`), LiteLLM's semantics. Resolved per
    /// request as one field (a key's map replaces the team's whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_group_retry_policy: Option<BTreeMap<String, RetryPolicy>>,
    /// *Gateway only.* Cool a deployment by its failure rate in the current minute instead
    /// of by consecutive failures: LiteLLM's rule when neither `allowed_fails` nor
    /// `allowed_fails_policy` is set (see `route::cooldown`), so it refuses both. Default
    /// false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_by_failure_rate: Option<bool>,
}

impl RouterSettings {
    /// Names of the gateway-only fields that are set, for the "not allowed here" check.
    pub fn gateway_only_fields_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut check = |present: bool, name: &'static str| {
            if present {
                set.push(name);
            }
        };
        check(self.cooldown_time.is_some(), "cooldown_time");
        check(self.allowed_fails.is_some(), "allowed_fails");
        check(self.routing_strategy.is_some(), "routing_strategy");
        check(self.continuation_prompt.is_some(), "continuation_prompt");
        check(self.retry_backoff_base.is_some(), "retry_backoff_base");
        check(self.retry_backoff_max.is_some(), "retry_backoff_max");
        check(
            self.fallback_on_bad_request.is_some(),
            "fallback_on_bad_request",
        );
        check(
            self.cooldown_lone_deployment.is_some(),
            "cooldown_lone_deployment",
        );
        check(self.rng_seed.is_some(), "rng_seed");
        check(self.allowed_fails_policy.is_some(), "allowed_fails_policy");
        check(
            self.cooldown_by_failure_rate.is_some(),
            "cooldown_by_failure_rate",
        );
        set
    }
}

/// What happens when a stream fails after its first content chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MidStreamPolicy {
    /// Ask the next attempt to continue the partial answer; the client sees one stream.
    #[default]
    Continue,
    /// End the stream with a typed error event and no `[DONE]`.
    Error,
}

impl MidStreamPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MidStreamPolicy::Continue => "continue",
            MidStreamPolicy::Error => "error",
        }
    }
}

/// Load balancing inside a group. Only LiteLLM's default is implemented; asking for
/// another one is a load error rather than a silent substitution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RoutingStrategy {
    #[default]
    #[serde(rename = "simple-shuffle")]
    SimpleShuffle,
}

/// Per-failure-class retry counts, LiteLLM's names. Unset classes use `num_retries`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after a rate limit (429).
    #[serde(
        rename = "RateLimitErrorRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limit: Option<u32>,
    /// Retries after a timeout.
    #[serde(
        rename = "TimeoutErrorRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<u32>,
    /// Also covers malformed upstream responses.
    #[serde(
        rename = "InternalServerErrorRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub internal_server: Option<u32>,
    /// Retries after a bad request: must be 0 (never retried).
    #[serde(
        rename = "BadRequestErrorRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bad_request: Option<u32>,
    /// Retries after an authentication failure (on another deployment of the group only).
    #[serde(
        rename = "AuthenticationErrorRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub authentication: Option<u32>,
    /// Retries after a content-policy failure: must be 0 (never retried).
    #[serde(
        rename = "ContentPolicyViolationErrorRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub content_policy: Option<u32>,
    /// Retries after a context-window failure: must be 0 (never retried).
    #[serde(
        rename = "ContextWindowExceededErrorRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub context_window: Option<u32>,
}

/// Per-failure-class allowed failures before a deployment cools, LiteLLM's names
/// (`types/router.py`, `AllowedFailsPolicy`; read by `router.py`,
/// `Router.get_allowed_fails_from_policy`, for
/// `router_utils/cooldown_handlers.py`, `should_cooldown_based_on_allowed_fails_policy`).
/// `BadRequestErrorAllowedFails` and `ContentPolicyViolationErrorAllowedFails` are accepted
/// (LiteLLM's documented example sets them) and have no effect: those failures never cool
/// a deployment, in LiteLLM neither (no cooldown on a 400).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedFailsPolicy {
    /// Accepted for LiteLLM compatibility; no effect (a 400 never cools a deployment).
    #[serde(
        rename = "BadRequestErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bad_request: Option<u32>,
    /// Authentication failures a deployment may have before it cools.
    #[serde(
        rename = "AuthenticationErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub authentication: Option<u32>,
    /// Timeouts a deployment may have before it cools.
    #[serde(
        rename = "TimeoutErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<u32>,
    /// Rate limits a deployment may have before it cools.
    #[serde(
        rename = "RateLimitErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limit: Option<u32>,
    /// Accepted for LiteLLM compatibility; no effect (a content-policy failure never cools
    /// a deployment).
    #[serde(
        rename = "ContentPolicyViolationErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub content_policy: Option<u32>,
    /// Also covers malformed upstream responses.
    #[serde(
        rename = "InternalServerErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub internal_server: Option<u32>,
}

/// One `{group: [fallback, ...]}` entry. Exactly one group per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackEntry {
    pub group: String,
    pub fallbacks: Vec<String>,
}

impl FallbackEntry {
    pub fn new(group: impl Into<String>, fallbacks: &[&str]) -> Self {
        FallbackEntry {
            group: group.into(),
            fallbacks: fallbacks.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Serialize for FallbackEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(&self.group, &self.fallbacks)?;
        map.end()
    }
}

/// The schema says what the hand-written `Deserialize` below accepts: a mapping with
/// exactly one group, whose value is a list of group names.
impl JsonSchema for FallbackEntry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FallbackEntry".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`{group: [fallback, ...]}`: exactly one group, and the groups (or deployment ids) to try, in order, when it fails.",
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": {"type": "array", "items": {"type": "string"}}
        })
    }
}

impl<'de> Deserialize<'de> for FallbackEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = FallbackEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with one group: `{group: [fallback, ...]}`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FallbackEntry, A::Error> {
                let Some(group) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "empty fallback entry; write `{group: [fallback, ...]}`",
                    ));
                };
                let fallbacks: Vec<String> = map.next_value()?;
                if let Some(other) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a fallback entry names exactly one group, this one names `{group}` and \
                         `{other}`; split it into one `- {{group: [...]}}` item per group"
                    )));
                }
                Ok(FallbackEntry { group, fallbacks })
            }
        }
        d.deserialize_map(EntryVisitor)
    }
}

/// The config could not be loaded: every problem found, each pinned to its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<YamlError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A problem found by [`GatewayConfig::validate`], before it is pinned to a file position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: Vec<PathSeg>,
    pub message: String,
}

/// A path builder that keeps validation code short.
#[derive(Clone, Default)]
pub struct At(pub Vec<PathSeg>);

impl At {
    pub fn key(&self, k: &str) -> At {
        let mut p = self.0.clone();
        p.push(PathSeg::Key(k.to_string()));
        At(p)
    }
    pub fn idx(&self, i: usize) -> At {
        let mut p = self.0.clone();
        p.push(PathSeg::Index(i));
        At(p)
    }
}

impl GatewayConfig {
    /// Parses and validates a config file's text. `file` is used in error messages.
    pub fn load(file: &str, text: &str) -> Result<GatewayConfig, ConfigError> {
        let mut config: GatewayConfig =
            yaml::from_str(file, text).map_err(|e| ConfigError { problems: vec![e] })?;
        config.resolve_env().map_err(|issue| ConfigError {
            problems: vec![yaml::error_at(file, text, &issue.path, issue.message)],
        })?;
        config.validate().map_err(|issues| ConfigError {
            problems: issues
                .into_iter()
                .map(|i| yaml::error_at(file, text, &i.path, i.message))
                .collect(),
        })?;
        Ok(config)
    }

    /// Reads a config file from disk.
    pub fn load_file(path: &std::path::Path) -> Result<GatewayConfig, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![YamlError {
                file: name.clone(),
                line: 0,
                column: 0,
                path: String::new(),
                message: format!("cannot read: {e}"),
                hint: None,
            }],
        })?;
        Self::load(&name, &text)
    }

    /// Replaces `os.environ/NAME` with the variable's value (LiteLLM's syntax) in a
    /// deployment's `api_key`, `api_base` and `api_version`, a virtual key and the
    /// `master_key`. A virtual key written so was once taken as that text, a key anyone
    /// could guess.
    fn resolve_env(&mut self) -> Result<(), Issue> {
        let master = At::default().key("general_settings").key("master_key");
        from_env(&mut self.general_settings.master_key, master)?;
        for (i, d) in self.model_list.iter_mut().enumerate() {
            let at = At::default().key("model_list").idx(i).key("litellm_params");
            let p = &mut d.litellm_params;
            from_env(&mut p.api_key, at.key("api_key"))?;
            from_env_text(&mut p.api_base, at.key("api_base"))?;
            from_env_text(&mut p.api_version, at.key("api_version"))?;
        }
        for (i, k) in self.keys.iter_mut().enumerate() {
            let mut key = Some(k.key.clone());
            from_env(&mut key, At::default().key("keys").idx(i).key("key"))?;
            k.key = key.expect("resolved in place");
        }
        Ok(())
    }

    /// All the ways the config does not make sense. Empty means valid.
    pub fn validate(&self) -> Result<(), Vec<Issue>> {
        let mut issues = Vec::new();
        let mut push = |at: At, message: String| {
            issues.push(Issue {
                path: at.0,
                message,
            })
        };
        let root = At::default();

        let groups: Vec<&str> = {
            let mut g: Vec<&str> = self
                .model_list
                .iter()
                .map(|d| d.model_name.as_str())
                .collect();
            g.sort_unstable();
            g.dedup();
            g
        };
        let known = |g: &str| groups.binary_search(&g).is_ok();
        // A `models` entry may name a model a wildcard group serves.
        let listable = |g: &str| known(g) || served_by(&groups, g).is_some();

        if self.model_list.is_empty() {
            push(
                root.key("model_list"),
                "`model_list` is empty: a gateway needs at least one deployment (is the file \
                 empty or cut short?)"
                    .into(),
            );
        }
        if self.keys.is_empty() && !self.allow_anonymous {
            push(
                root.key("keys"),
                "no `keys`: every client could use this gateway without a key; list the \
                 virtual keys, or set `allow_anonymous: true` to serve anonymous requests on \
                 purpose"
                    .into(),
            );
        }
        let ids = self.deployment_ids();
        let mut last_of_id: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, d) in self.model_list.iter().enumerate() {
            let at = root.key("model_list").idx(i);
            if d.model_name.trim().is_empty() {
                push(
                    at.key("model_name"),
                    "a deployment needs a group: `model_name` is empty".into(),
                );
            }
            // A client names a group or a deployment id in `model` (or the Azure path),
            // where a name longer than this is refused: one here could never be asked for.
            let bound = self.limits.max_model_name_bytes;
            for (field, name) in [
                ("model_name", Some(&d.model_name)),
                ("id", d.model_info.id.as_ref()),
            ] {
                if let Some(name) = name.filter(|n| n.len() > bound) {
                    let at = if field == "id" {
                        at.key("model_info")
                    } else {
                        at.clone()
                    };
                    push(
                        at.key(field),
                        format!(
                            "`{field}` is {} bytes, longer than limits.max_model_name_bytes = \
                             {bound}: no request could name it",
                            name.len()
                        ),
                    );
                }
            }
            let p = &d.litellm_params;
            if p.model.contains('*') && !d.model_name.contains('*') {
                push(
                    at.key("litellm_params").key("model"),
                    format!(
                        "`model` has a `*` but `model_name` `{}` has none: only a wildcard \
                         group (`model_name: \"openai/*\"`) fills in a `*` from the request",
                        d.model_name
                    ),
                );
            }
            if p.model.trim().is_empty() {
                push(
                    at.key("litellm_params").key("model"),
                    "`model` is empty".into(),
                );
            }
            match p.api_base.as_deref() {
                None => push(
                    at.key("litellm_params"),
                    "`api_base` is required: Switchback only talks to OpenAI-compatible endpoints"
                        .into(),
                ),
                Some(base) => {
                    if let Err(why) = crate::upstream::Endpoint::parse(base) {
                        push(at.key("litellm_params").key("api_base"), why);
                    }
                }
            }
            if let Some(why) = azure_problem(p) {
                push(at.key("litellm_params"), why);
            }
            if let Some(why) = native_api_problem(p) {
                push(at.key("litellm_params").key("api_base"), why);
            }
            match &p.ssl_verify {
                Some(SslVerify::Enabled(false)) => push(
                    at.key("litellm_params").key("ssl_verify"),
                    "`ssl_verify: false` is not supported: Switchback always verifies upstream \
                     certificates; give the path of a PEM CA bundle that holds the upstream's \
                     CA (or its self-signed certificate) instead"
                        .into(),
                ),
                Some(SslVerify::CaBundle(path)) => {
                    if let Err(why) = crate::upstream::tls::CaBundle::load(path) {
                        push(at.key("litellm_params").key("ssl_verify"), why);
                    }
                }
                Some(SslVerify::Enabled(true)) | None => {}
            }
            if let Some(key) = &p.api_key {
                if let Err(why) = secret_ok(key.expose()) {
                    push(
                        at.key("litellm_params").key("api_key"),
                        format!("`api_key` {why}"),
                    );
                }
            }
            seconds_ok(
                &mut push,
                at.key("litellm_params").key("timeout"),
                p.timeout,
                false,
            );
            seconds_ok(
                &mut push,
                at.key("litellm_params").key("stream_timeout"),
                p.stream_timeout,
                false,
            );
            seconds_ok(
                &mut push,
                at.key("litellm_params").key("cooldown_time"),
                p.cooldown_time,
                true,
            );
            if let Some(c) = p.cooldown_time {
                if c.is_finite() && c > self.limits.max_cooldown {
                    push(
                        at.key("litellm_params").key("cooldown_time"),
                        format!(
                            "{c} seconds is over the limit max_cooldown = {}",
                            self.limits.max_cooldown
                        ),
                    );
                }
            }
            if let Some(n) = p.num_retries {
                let ceiling = self.limits.max_retries_ceiling;
                if n > ceiling {
                    push(
                        at.key("litellm_params").key("num_retries"),
                        format!("{n} is over the limit max_retries_ceiling = {ceiling}"),
                    );
                }
            }
            if p.weight == Some(0) {
                push(
                    at.key("litellm_params").key("weight"),
                    "`weight` must be at least 1".into(),
                );
            }
            let id = ids[i].as_str();
            if let Some(first) = last_of_id.insert(id, i) {
                push(
                    at.key("model_info").key("id"),
                    format!("duplicate deployment id `{id}` (also used by model_list[{first}])"),
                );
            }
        }

        // Fallbacks may name a deployment id as well as a group (LiteLLM's
        // `Router._common_checks_available_deployment` looks ids up first).
        let group_sizes = self.group_sizes();
        for (i, (d, id)) in self.model_list.iter().zip(&ids).enumerate() {
            // An id that is also a group's name would take every request for that group
            // in LiteLLM; only a group of one deployment named after it is unambiguous.
            let own_group_of_one = *id == d.model_name && group_sizes[d.model_name.as_str()] == 1;
            if known(id) && !own_group_of_one {
                push(
                    root.key("model_list").idx(i).key("model_info").key("id"),
                    format!(
                        "deployment id `{id}` is also the name of model group `{id}`: a \
                         fallback or request naming it would call only this deployment \
                         (LiteLLM looks ids up first); give the deployment another id"
                    ),
                );
            }
            if d.model_info.id.as_ref().is_some_and(|id| id.contains('*')) {
                push(
                    root.key("model_list").idx(i).key("model_info").key("id"),
                    format!("deployment id `{id}` contains `*`, which names wildcard groups"),
                );
            }
        }
        let wild_ids = self.wildcard_deployment_ids();
        let wild: Vec<(&str, &str)> = wild_ids.iter().map(|(id, g)| (id.as_str(), *g)).collect();
        let is_wild = |name: &str| wild.iter().any(|(id, _)| *id == name);
        let targets: Vec<&str> = {
            let mut t: Vec<&str> = groups.clone();
            // The default id of a wildcard group's deployment (`openai/*#1`) names none,
            // and a wildcard deployment cannot be called by any id (see
            // `wildcard_deployment_ids`).
            t.extend(
                ids.iter()
                    .map(String::as_str)
                    .filter(|id| !id.contains('*') && !is_wild(id)),
            );
            // A model a wildcard group serves may be a fallback target in the config (the
            // catalog gives it a group of its own; see `Catalog::wildcard_target`); a
            // wildcard deployment's id is not such a model, even under a `*` group, since
            // ids are looked up first.
            let served: Vec<&str> = self
                .fallback_targets()
                .into_iter()
                .filter(|n| !n.contains('*') && !is_wild(n) && served_by(&groups, n).is_some())
                .collect();
            t.extend(served);
            t.sort_unstable();
            t.dedup();
            t
        };
        // A key's or team's `models` may name a deployment by its id, as a fallback may.
        let listable = |g: &str| listable(g) || targets.binary_search(&g).is_ok();
        let gateway = root.key("router_settings");
        self.check_settings(
            &self.router_settings,
            &gateway,
            true,
            &targets,
            &wild,
            &mut push,
        );

        let mut team_ids = BTreeMap::new();
        for (i, t) in self.teams.iter().enumerate() {
            let at = root.key("teams").idx(i);
            if team_ids.insert(t.team_id.as_str(), i).is_some() {
                push(
                    at.key("team_id"),
                    format!("duplicate team_id `{}`", t.team_id),
                );
            }
            check_groups(&mut push, at.key("models"), &t.models, &listable);
            self.check_settings(
                &t.router_settings,
                &at.key("router_settings"),
                false,
                &targets,
                &wild,
                &mut push,
            );
        }

        let mut key_names = BTreeMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = root.key("keys").idx(i);
            if let Err(why) = secret_ok(k.key.expose()) {
                push(at.key("key"), format!("`key` {why}"));
            }
            if key_names.insert(k.key.expose(), i).is_some() {
                push(at.key("key"), "duplicate key".into());
            }
            if let Some(team) = &k.team_id {
                if !team_ids.contains_key(team.as_str()) {
                    push(at.key("team_id"), format!("unknown team `{team}`"));
                }
            }
            check_groups(&mut push, at.key("models"), &k.models, &listable);
            self.check_settings(
                &k.router_settings,
                &at.key("router_settings"),
                false,
                &targets,
                &wild,
                &mut push,
            );
        }

        for (i, origin) in self
            .general_settings
            .cors_allowed_origins
            .iter()
            .enumerate()
        {
            if !is_cors_origin(origin) {
                push(
                    root.key("general_settings")
                        .key("cors_allowed_origins")
                        .idx(i),
                    format!(
                        "`{origin}` is not an origin: give `scheme://host[:port]` as a browser \
                         sends it (no path, no trailing slash), or `*` for any"
                    ),
                );
            }
        }
        if let Some(master) = &self.general_settings.master_key {
            let at = root.key("general_settings").key("master_key");
            if let Err(why) = secret_ok(master.expose()) {
                push(at, format!("`master_key` {why}"));
            } else if key_names.contains_key(master.expose()) {
                push(
                    at,
                    "the admin key is also a virtual key: give admins a key of their own".into(),
                );
            }
        }

        let l = &self.limits;
        let lat = root.key("limits");
        for (name, v, zero_ok) in l.seconds() {
            seconds_ok(&mut push, lat.key(name), Some(v), zero_ok);
        }
        for (name, v, min, max) in l.counts() {
            if !(min..=max).contains(&v) {
                push(
                    lat.key(name),
                    format!("`{name}` = {v} is out of range ({min} to {max})"),
                );
            }
        }
        // A budget smaller than one allowed body would refuse that body for ever.
        if l.max_in_flight_request_body_bytes < l.max_request_body_bytes {
            push(
                lat.key("max_in_flight_request_body_bytes"),
                format!(
                    "`max_in_flight_request_body_bytes` = {} is below `max_request_body_bytes` \
                     = {}: the gateway could never hold one request of the largest size; \
                     raise it or lower `max_request_body_bytes`",
                    l.max_in_flight_request_body_bytes, l.max_request_body_bytes
                ),
            );
        }
        let rs = &self.router_settings;
        if rs.cooldown_by_failure_rate == Some(true) {
            for (set, field) in [
                (rs.allowed_fails.is_some(), "allowed_fails"),
                (rs.allowed_fails_policy.is_some(), "allowed_fails_policy"),
            ] {
                if set {
                    push(
                        root.key("router_settings").key("cooldown_by_failure_rate"),
                        format!(
                            "`cooldown_by_failure_rate` applies only when `{field}` is not set \
                             (LiteLLM counts allowed failures instead once it is): remove one"
                        ),
                    );
                }
            }
        }
        if let Some(c) = self.router_settings.cooldown_time {
            if c.is_finite() && c > l.max_cooldown {
                push(
                    root.key("router_settings").key("cooldown_time"),
                    format!(
                        "{c} seconds is over the limit max_cooldown = {}",
                        l.max_cooldown
                    ),
                );
            }
        }

        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    fn check_settings(
        &self,
        s: &RouterSettings,
        at: &At,
        is_gateway: bool,
        groups: &[&str],
        wildcard_ids: &[(&str, &str)],
        push: &mut dyn FnMut(At, String),
    ) {
        check_settings_fields(s, at, groups, wildcard_ids, &self.limits, push);
        if !is_gateway {
            for field in s.gateway_only_fields_set() {
                push(
                    at.key(field),
                    format!(
                        "`{field}` is gateway-wide state; set it in the top-level router_settings"
                    ),
                );
            }
        }
    }

    /// Every fallback target named in the config's settings (gateway, teams, keys), in
    /// order of appearance, repeats included.
    pub fn fallback_targets(&self) -> Vec<&str> {
        let blocks = std::iter::once(&self.router_settings)
            .chain(self.teams.iter().map(|t| &t.router_settings))
            .chain(self.keys.iter().map(|k| &k.router_settings));
        let mut out = Vec::new();
        for s in blocks {
            for list in [
                &s.fallbacks,
                &s.context_window_fallbacks,
                &s.content_policy_fallbacks,
            ]
            .into_iter()
            .flatten()
            {
                for e in list {
                    out.extend(e.fallbacks.iter().map(String::as_str));
                }
            }
            if let Some(list) = &s.default_fallbacks {
                out.extend(list.iter().map(String::as_str));
            }
        }
        out
    }

    /// The deployment id of `model_list[i]`: its `model_info.id`, else `group#n` for the
    /// n-th deployment of its group in `model_list`. Counts the deployments before it:
    /// for many, [`Self::deployment_ids`].
    pub fn deployment_id(&self, i: usize) -> String {
        let d = &self.model_list[i];
        match &d.model_info.id {
            Some(id) => id.clone(),
            None => {
                let n = self.model_list[..i]
                    .iter()
                    .filter(|o| o.model_name == d.model_name)
                    .count();
                default_id(&d.model_name, n + 1)
            }
        }
    }

    /// Every deployment's id (as [`Self::deployment_id`] gives it), in `model_list` order,
    /// in one pass: asking for each in turn counted the deployments before each, which
    /// made a config of 16,000 deployments take seconds to load.
    pub fn deployment_ids(&self) -> Vec<String> {
        let mut so_far: BTreeMap<&str, usize> = BTreeMap::new();
        self.model_list
            .iter()
            .map(|d| {
                // Every deployment counts, those with an id of their own too.
                let n = so_far.entry(d.model_name.as_str()).or_default();
                *n += 1;
                match &d.model_info.id {
                    Some(id) => id.clone(),
                    None => default_id(&d.model_name, *n),
                }
            })
            .collect()
    }

    /// How many deployments each group has.
    pub fn group_sizes(&self) -> BTreeMap<&str, usize> {
        let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &self.model_list {
            *sizes.entry(d.model_name.as_str()).or_default() += 1;
        }
        sizes
    }

    /// The ids of the deployments whose `model` has a `*`, each with its wildcard group.
    /// Such a deployment is called with a model made from the requested name; named by its
    /// id there is no such name (it would be sent `"model": "*"`), so no fallback or
    /// request may name it that way (see [`wildcard_id_why`]).
    pub fn wildcard_deployment_ids(&self) -> Vec<(String, &str)> {
        self.model_list
            .iter()
            .zip(self.deployment_ids())
            .filter(|(d, _)| d.litellm_params.model.contains('*'))
            .map(|(d, id)| (id, d.model_name.as_str()))
            // A default id (`openai/*#1`) has the group's `*`: it names nothing already.
            .filter(|(id, _)| !id.contains('*'))
            .collect()
    }
}

/// Why the id of a deployment of wildcard group `group` whose `model` has a `*` cannot
/// name it: for the messages of config validation and of request admission alike.
pub fn wildcard_id_why(group: &str) -> String {
    format!(
        "it is a wildcard deployment of `{group}` (its `model` is made from the requested \
         model name, which an id does not give), so it cannot be called by its id; name a \
         model that `{group}` matches instead"
    )
}

/// Checks the per-request-resolvable fields of one settings block. Shared by config
/// validation and by request admission (request-level overrides).
///
/// `wildcard_ids` are the ids no fallback may name, with their groups (see
/// [`GatewayConfig::wildcard_deployment_ids`]); `groups` does not list them.
pub fn check_settings_fields(
    s: &RouterSettings,
    at: &At,
    groups: &[&str],
    wildcard_ids: &[(&str, &str)],
    limits: &Limits,
    push: &mut dyn FnMut(At, String),
) {
    // Looked up, not scanned: a request's `model_group_retry_policy` may name 250,000
    // groups within `max_request_json_values`, against thousands of groups (found in review).
    let group_set: std::collections::BTreeSet<&str> = groups.iter().copied().collect();
    let known = |g: &str| group_set.contains(g) && !g.contains('*');
    // An entry's key may name a group with or without its provider prefix (see `policy`),
    // or a model a wildcard group serves.
    let entry_known =
        |g: &str| groups.iter().any(|n| entry_names_group(g, n)) || fallback_key_served(groups, g);
    let wildcard_id = |name: &str| {
        wildcard_ids
            .iter()
            .find(|(id, _)| *id == name)
            .map(|(_, group)| *group)
    };
    let target_problem = |target: &str| -> String {
        if let Some(group) = wildcard_id(target) {
            format!(
                "fallback to deployment `{target}`: {}",
                wildcard_id_why(group)
            )
        } else if target.contains('*') {
            format!("cannot fall back to wildcard group `{target}`: a fallback names a model group")
        } else if let Some(pattern) = served_by(groups, target) {
            format!(
                "fallback to `{target}`, which only wildcard group `{pattern}` serves: a \
                 request-level fallback names a model group or deployment id (name the model \
                 in the config's fallbacks, or list it as a group of its own)"
            )
        } else {
            format!(
                "fallback to unknown group `{target}` (no model group or deployment id has \
                 this name)"
            )
        }
    };
    for (name, list) in [
        ("fallbacks", &s.fallbacks),
        ("context_window_fallbacks", &s.context_window_fallbacks),
        ("content_policy_fallbacks", &s.content_policy_fallbacks),
    ] {
        let Some(list) = list else { continue };
        for (i, entry) in list.iter().enumerate() {
            let eat = at.key(name).idx(i).key(&entry.group);
            if let Some(group) = wildcard_id(&entry.group) {
                push(
                    eat.clone(),
                    format!(
                        "fallback entry keyed by deployment `{}` never applies: {}",
                        entry.group,
                        wildcard_id_why(group)
                    ),
                );
            } else if entry.group != "*" && entry.group.contains('*') {
                push(
                    eat.clone(),
                    format!(
                        "fallback entry keyed by wildcard group `{}` never applies: fallbacks \
                         are looked up by the requested model (key the entry by that model, \
                         or by `*`)",
                        entry.group
                    ),
                );
            } else if entry.group != "*" && !entry_known(&entry.group) {
                push(
                    eat.clone(),
                    format!("fallback entry for unknown group `{}`", entry.group),
                );
            }
            for (j, target) in entry.fallbacks.iter().enumerate() {
                if !known(target) {
                    push(eat.idx(j), target_problem(target));
                }
            }
        }
    }
    if let Some(list) = &s.default_fallbacks {
        for (j, target) in list.iter().enumerate() {
            if !known(target) {
                push(at.key("default_fallbacks").idx(j), target_problem(target));
            }
        }
    }
    seconds_ok(push, at.key("timeout"), s.timeout, false);
    seconds_ok(push, at.key("stream_timeout"), s.stream_timeout, false);
    seconds_ok(push, at.key("cooldown_time"), s.cooldown_time, true);
    seconds_ok(
        push,
        at.key("retry_backoff_base"),
        s.retry_backoff_base,
        true,
    );
    seconds_ok(push, at.key("retry_backoff_max"), s.retry_backoff_max, true);
    if let Some(n) = s.max_fallbacks {
        if n > limits.max_fallbacks_ceiling {
            push(
                at.key("max_fallbacks"),
                format!(
                    "{n} is over the limit max_fallbacks_ceiling = {}",
                    limits.max_fallbacks_ceiling
                ),
            );
        }
    }
    let ceiling = limits.max_retries_ceiling;
    let mut retries = |field: &str, v: Option<u32>| {
        if let Some(n) = v {
            if n > ceiling {
                push(
                    at.key(field),
                    format!("{n} is over the limit max_retries_ceiling = {ceiling}"),
                );
            }
        }
    };
    retries("num_retries", s.num_retries);
    if let Some(n) = s.num_retries_per_request {
        if n > limits.max_attempts {
            push(
                at.key("num_retries_per_request"),
                format!(
                    "{n} is over the limit max_attempts = {}",
                    limits.max_attempts
                ),
            );
        }
    }
    if let Some(p) = &s.retry_policy {
        check_retry_policy(p, &at.key("retry_policy"), ceiling, push);
    }
    if let Some(map) = &s.model_group_retry_policy {
        let mat = at.key("model_group_retry_policy");
        for (group, p) in map {
            if !known(group) {
                push(
                    mat.key(group),
                    format!("retry policy for unknown group `{group}`"),
                );
            }
            check_retry_policy(p, &mat.key(group), ceiling, push);
        }
    }
}

/// A `retry_policy` (or one group's, in `model_group_retry_policy`): counts within the
/// ceiling, and 0 for classes Switchback never retries in a group.
fn check_retry_policy(p: &RetryPolicy, pat: &At, ceiling: u32, push: &mut dyn FnMut(At, String)) {
    for (field, v) in [
        ("RateLimitErrorRetries", p.rate_limit),
        ("TimeoutErrorRetries", p.timeout),
        ("InternalServerErrorRetries", p.internal_server),
        ("AuthenticationErrorRetries", p.authentication),
    ] {
        if let Some(n) = v {
            if n > ceiling {
                push(
                    pat.key(field),
                    format!("{n} is over the limit max_retries_ceiling = {ceiling}"),
                );
            }
        }
    }
    for (field, v) in [
        ("BadRequestErrorRetries", p.bad_request),
        ("ContentPolicyViolationErrorRetries", p.content_policy),
        ("ContextWindowExceededErrorRetries", p.context_window),
    ] {
        if v.is_some_and(|n| n > 0) {
            push(
                pat.key(field),
                "must be 0: Switchback never retries this class in the same group (it falls back or fails)".to_string(),
            );
        }
    }
}

fn check_groups(
    push: &mut dyn FnMut(At, String),
    at: At,
    groups: &[String],
    known: &dyn Fn(&str) -> bool,
) {
    for (j, g) in groups.iter().enumerate() {
        // An entry with a `*` is a pattern of names (LiteLLM's allow-list wildcards).
        if !g.contains('*') && !known(g) {
            push(at.idx(j), format!("unknown group `{g}`"));
        }
    }
}

/// The wildcard group among `groups` that serves the model name `name`, if one does (the
/// most specific, as [`crate::catalog::Catalog::route`] picks), unless a group has that
/// exact name.
pub fn served_by<'g>(groups: &[&'g str], name: &str) -> Option<&'g str> {
    use crate::wildcard::Pattern;
    if groups.contains(&name) && !name.contains('*') {
        return None;
    }
    let mut best: Option<((usize, usize), &'g str)> = None;
    for g in groups {
        let Some(p) = Pattern::parse(g) else { continue };
        if p.captures(name).is_some() {
            let key = Pattern::specificity(g);
            if best.is_none_or(|(k, _)| key > k) {
                best = Some((key, g));
            }
        }
    }
    best.map(|(_, g)| g)
}

/// Whether a fallback entry keyed `key` can apply to some request a wildcard group serves:
/// a name a pattern serves as it is, with a provider prefix put in front (an entry `gpt-4.1`
/// applies to a request for `openai/gpt-4.1`), or without its prefix.
pub fn fallback_key_served(groups: &[&str], key: &str) -> bool {
    let bare = strip_provider(key);
    served_by(groups, key).is_some()
        || served_by(groups, bare).is_some()
        || PROVIDER_PREFIXES
            .iter()
            .any(|p| served_by(groups, &format!("{p}/{bare}")).is_some())
}

/// A secret (an upstream `api_key`, a virtual `key`) must be one non-empty run of visible
/// ASCII: whitespace or a control character (a CR/LF pasted in, a stray space) would either
/// break the `Authorization` header or never match what a client sends. The message never
/// repeats the value.
/// A secret given as `os.environ/NAME` becomes the variable's value (the field at `at`).
fn from_env(secret: &mut Option<Secret>, at: At) -> Result<(), Issue> {
    let Some(name) = secret
        .as_ref()
        .map(Secret::expose)
        .and_then(|k| k.strip_prefix("os.environ/"))
    else {
        return Ok(());
    };
    let value = std::env::var(name).map_err(|_| Issue {
        path: at.0,
        message: format!("environment variable `{name}` is not set"),
    })?;
    *secret = Some(Secret::new(value));
    Ok(())
}

/// [`from_env`] for a setting that is no secret.
fn from_env_text(text: &mut Option<String>, at: At) -> Result<(), Issue> {
    let mut secret = text.as_deref().map(Secret::new);
    from_env(&mut secret, at)?;
    *text = secret.map(|s| s.expose().to_string());
    Ok(())
}

fn secret_ok(secret: &str) -> Result<(), &'static str> {
    if secret.is_empty() {
        return Err("is empty");
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("contains whitespace, a control character (CR, LF, tab) or non-ASCII text");
    }
    Ok(())
}

fn seconds_ok(push: &mut dyn FnMut(At, String), at: At, v: Option<f64>, zero_ok: bool) {
    let Some(v) = v else { return };
    // A duration that must not be zero must not round to zero either: `1e-10` is more
    // than 0, and as a `Duration` it would time every attempt out at once.
    let low_ok = if zero_ok {
        v >= 0.0
    } else {
        v >= MIN_NONZERO_SECONDS
    };
    if !v.is_finite() || !low_ok || v > MAX_SECONDS {
        let low = if zero_ok { "0" } else { "0.001" };
        push(
            at,
            format!("{v} seconds is out of range ({low} to {MAX_SECONDS})"),
        );
    }
}

/// What is wrong with a deployment's Azure settings, if anything: `api_version` belongs to
/// an `azure/` model and must be a version (`2024-10-21`, `2025-01-01-preview`); and an
/// Azure OpenAI resource's root needs it, for without it the call goes to
/// `{api_base}/chat/completions`, which Azure answers with a 404 on every request.
fn azure_problem(p: &LitellmParams) -> Option<String> {
    let azure = p.model.starts_with("azure/");
    match &p.api_version {
        Some(_) if !azure => Some(format!(
            "`api_version` is Azure OpenAI's: it needs an `azure/<deployment>` model, not `{}`",
            p.model
        )),
        Some(v)
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            Some(format!(
                "`api_version: {v}` is not an API version (letters, digits, `-` and `.`, \
                 e.g. `2024-10-21`)"
            ))
        }
        // LiteLLM reads these as Azure's v1 API (`.../openai/v1/...`), not a version of
        // the deployments API: sent as `api-version=v1` there, every call would fail.
        Some(v) if ["v1", "preview", "latest"].contains(&v.as_str()) => Some(format!(
            "`api_version: {v}` names Azure's v1 API: give it as `api_base` \
             (`https://<resource>.openai.azure.com/openai/v1`) with no `api_version`"
        )),
        Some(_)
            if p.api_base
                .as_deref()
                .and_then(|b| crate::upstream::Endpoint::parse(b).ok())
                .is_some_and(|e| e.base_path.ends_with("/openai/v1")) =>
        {
            Some(
                "`api_version` is for Azure's deployments API, whose `api_base` is the \
                 resource's root; an `api_base` ending in `/openai/v1` is the v1 API, which \
                 takes none"
                    .to_string(),
            )
        }
        Some(_) => None,
        None if azure => {
            let endpoint = crate::upstream::Endpoint::parse(p.api_base.as_deref()?).ok()?;
            let resource = [".openai.azure.com", ".cognitiveservices.azure.com"]
                .iter()
                .any(|suffix| endpoint.host.ends_with(suffix));
            (resource && !endpoint.base_path.ends_with("/openai/v1")).then(|| {
                format!(
                    "`{}` is an Azure OpenAI resource: its deployments API needs `api_version` \
                     (e.g. `2024-10-21`), or give its v1 API as `api_base` (`https://{}/openai/v1`)",
                    p.api_base.as_deref().unwrap_or_default(),
                    endpoint.host
                )
            })
        }
        None => None,
    }
}

/// A LiteLLM provider whose `api_base` LiteLLM reads as the root of the provider's own API,
/// with the path of the OpenAI-compatible one that Switchback calls in its place.
const NATIVE_API_ROOTS: &[(&str, &str)] = &[
    ("ollama/", "/v1"),
    ("ollama_chat/", "/v1"),
    ("anthropic/", "/v1"),
];

/// An `ollama/`, `ollama_chat/` or `anthropic/` model whose `api_base` is a server's root
/// (`http://localhost:11434`, LiteLLM's own examples): LiteLLM calls that provider's own API
/// there (`/api/chat`, `/v1/messages`); Switchback calls `{api_base}/chat/completions`,
/// which the provider answers with a 404 on every request, and the deployment cooled as
/// `not_found`. Refused at load, naming the OpenAI-compatible `api_base` to give.
fn native_api_problem(p: &LitellmParams) -> Option<String> {
    let (prefix, path) = NATIVE_API_ROOTS
        .iter()
        .find(|(prefix, _)| p.model.starts_with(prefix))?;
    let base = p.api_base.as_deref()?;
    let endpoint = crate::upstream::Endpoint::parse(base).ok()?;
    matches!(endpoint.base_path.as_str(), "" | "/").then(|| {
        format!(
            "`{base}` is the root of the server: LiteLLM's `{prefix}` calls its own API there, \
             Switchback calls OpenAI-compatible APIs only; give that one as `api_base` \
             (`{}{path}`)",
            base.trim_end_matches('/')
        )
    })
}

/// The id of the `n`-th deployment (from 1) of `group` when it gives none.
fn default_id(group: &str, n: usize) -> String {
    format!("{group}#{n}")
}

/// LiteLLM provider prefixes: `openai/gpt-4o` names model `gpt-4o` at an OpenAI-compatible
/// endpoint. Only these are stripped; `google/gemini` (an OpenRouter model id) is kept.
pub const PROVIDER_PREFIXES: &[&str] = &[
    "openai",
    "azure",
    "azure_ai",
    "vertex_ai",
    "gemini",
    "anthropic",
    "openrouter",
    "deepinfra",
    "together_ai",
    "groq",
    "mistral",
    "bedrock",
    "hosted_vllm",
    "fireworks_ai",
    "cohere",
    "deepseek",
    "xai",
    "perplexity",
    "ollama",
    "ollama_chat",
    "custom_openai",
    // LiteLLM's other OpenAI-compatible providers: kept whole, `moonshot/kimi-k2` reached
    // Moonshot as a model it does not have (a 404 for a config LiteLLM serves).
    "moonshot",
    "cerebras",
    "sambanova",
    "nvidia_nim",
    "lm_studio",
    "dashscope",
    "llamafile",
    "nebius",
    "novita",
    "hyperbolic",
    "volcengine",
    "lambda_ai",
    "featherless_ai",
    "xinference",
    "litellm_proxy",
];

/// Whether a fallback entry keyed `key` names the group `group`: the same name, or one of
/// them is the other with a provider prefix (`vertex_ai/x` and `x`, as LiteLLM strips the
/// requested name to look an entry up). Never two different prefixes: an entry for
/// `openai/gpt-4o` is not one for `azure/gpt-4o`.
pub fn entry_names_group(key: &str, group: &str) -> bool {
    key == group || strip_provider(key) == group || key == strip_provider(group)
}

/// `vertex_ai/gemini-2.5-flash` → `gemini-2.5-flash`; names without a known prefix unchanged.
pub fn strip_provider(name: &str) -> &str {
    match name.split_once('/') {
        Some((prefix, rest)) if PROVIDER_PREFIXES.contains(&prefix) => rest,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://provider-a:8000/v1
  - model_name: claude
    litellm_params:
      model: openai/claude
      api_base: http://provider-b:8000/v1
    model_info:
      id: claude-b
router_settings:
  num_retries: 1
  fallbacks:
    - gpt-4o: [claude]
teams:
  - team_id: chatbot
    models: [gpt-4o, claude]
keys:
  - key: sk-1
    team_id: chatbot
    router_settings:
      fallbacks:
        - gpt-4o: [claude]
"#;

    /// The config and the catalog built from it derive `Debug`: printing either (a log
    /// line, a panic message, an assertion) must show no secret it holds.
    #[test]
    fn debug_of_the_config_and_its_catalog_shows_no_secret() {
        let text = r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/m, api_base: "http://up:8000/v1", api_key: sk-upstream-DEBUG-0001}
keys:
  - {key: sk-virtual-DEBUG-0002, key_alias: team-a}
general_settings: {master_key: sk-admin-DEBUG-0003}
"#;
        let config = GatewayConfig::load("t.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        let catalog = crate::catalog::Catalog::new(&config).unwrap();
        for shown in [
            format!("{config:?}"),
            format!("{catalog:?}"),
            format!("{config:#?}"),
        ] {
            assert!(!shown.contains("DEBUG-000"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        // What is sent and compared is the text itself.
        let key = config.model_list[0]
            .litellm_params
            .api_key
            .as_ref()
            .map(Secret::expose);
        assert_eq!(key, Some("sk-upstream-DEBUG-0001"));
    }

    #[test]
    fn loads_a_litellm_style_config() {
        let c = GatewayConfig::load("g.yaml", GOOD).unwrap();
        assert_eq!(c.model_list.len(), 2);
        assert_eq!(c.deployment_id(0), "gpt-4o#1");
        assert_eq!(c.deployment_id(1), "claude-b");
        assert_eq!(
            c.keys[0].router_settings.fallbacks.as_ref().unwrap()[0],
            FallbackEntry::new("gpt-4o", &["claude"])
        );
    }

    fn problems(text: &str) -> Vec<String> {
        GatewayConfig::load("g.yaml", text)
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// A group or deployment id longer than `max_model_name_bytes` could never be asked
    /// for (requests naming it are refused): refused at load, by name.
    #[test]
    fn names_no_request_could_use_are_refused_at_load() {
        let long = "m".repeat(300);
        let config = |name: &str, id: &str, limits: &str| {
            format!(
                "allow_anonymous: true\nmodel_list:\n  - {{model_name: {name}, litellm_params: \
                 {{model: openai/m, api_base: \"http://up/v1\"}}, model_info: {{id: {id}}}}}\n{limits}"
            )
        };
        let p = problems(&config(&long, "d", ""));
        assert!(
            p.len() == 1
                && p[0].contains("model_list[0].model_name")
                && p[0].contains("max_model_name_bytes = 256"),
            "{p:?}"
        );
        let p = problems(&config("g", &long, ""));
        assert!(
            p.len() == 1 && p[0].contains("model_list[0].model_info.id"),
            "{p:?}"
        );
        let raised = "limits: {max_model_name_bytes: 512}\n";
        assert!(GatewayConfig::load("g.yaml", &config(&long, &long, raised)).is_ok());
    }

    #[test]
    fn cors_origins_are_origins_as_browsers_send_them() {
        let with =
            |origins: &str| format!("{GOOD}general_settings:\n  cors_allowed_origins: {origins}\n");
        let c = GatewayConfig::load(
            "g.yaml",
            &with(r#"["*", "https://app.example", "http://localhost:3000"]"#),
        )
        .unwrap();
        assert_eq!(c.general_settings.cors_allowed_origins.len(), 3);
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/chat",
            "https://",
        ] {
            let p = problems(&with(&format!("[\"{bad}\"]")));
            assert!(
                p.len() == 1
                    && p[0].contains("is not an origin")
                    && p[0].contains("cors_allowed_origins[0]"),
                "{bad}: {p:?}"
            );
        }
    }

    /// LiteLLM's `azure/` deployments: with `api_version`, Azure OpenAI's deployments API
    /// (`catalog` turns it into the endpoint's path and `api-key`); without it, an
    /// OpenAI-compatible API such as Azure's v1 (`.../openai/v1`). An Azure resource named
    /// without either would only ever answer 404: refused at load, by name.
    #[test]
    fn azure_deployments_take_litellms_api_version() {
        let with = |params: &str| {
            format!(
                "model_list:\n  - model_name: eu\n    litellm_params: {{{params}}}\nallow_anonymous: true\n"
            )
        };
        let classic = with(
            "model: azure/gpt-4o-eu, api_base: \"https://res.openai.azure.com\", api_version: \"2024-10-21\", api_key: k",
        );
        let c = crate::catalog::Catalog::new(&GatewayConfig::load("g.yaml", &classic).unwrap())
            .unwrap();
        let spec = &c.deployments[0];
        assert_eq!(
            spec.endpoint.azure_api_version.as_deref(),
            Some("2024-10-21")
        );
        assert_eq!(
            spec.endpoint.chat_completions_path(&spec.upstream_model),
            "/openai/deployments/gpt-4o-eu/chat/completions?api-version=2024-10-21"
        );
        for ok in [
            "model: azure/gpt-4o-eu, api_base: \"https://res.openai.azure.com/openai/v1\"",
            "model: azure/gpt-4o-eu, api_base: \"http://az:8000/v1\"",
        ] {
            let c =
                crate::catalog::Catalog::new(&GatewayConfig::load("g.yaml", &with(ok)).unwrap())
                    .unwrap();
            assert_eq!(c.deployments[0].endpoint.azure_api_version, None, "{ok}");
        }
        for (params, says) in [
            (
                "model: openai/gpt-4o, api_base: \"http://a/v1\", api_version: \"2024-10-21\"",
                "`api_version` is Azure OpenAI's",
            ),
            (
                "model: azure/gpt-4o, api_base: \"https://res.openai.azure.com\", api_version: \"2024 10&x=1\"",
                "not an API version",
            ),
            (
                "model: azure/gpt-4o, api_base: \"https://res.openai.azure.com\"",
                "needs `api_version`",
            ),
            (
                "model: azure/gpt-4o, api_base: \"https://res.openai.azure.com\", api_version: v1",
                "names Azure's v1 API",
            ),
            (
                "model: azure/gpt-4o, api_base: \"https://res.openai.azure.com/openai/v1\", api_version: \"2024-10-21\"",
                "takes none",
            ),
            (
                "model: azure/gpt-4o, api_base: \"https://res.cognitiveservices.azure.com/\"",
                "needs `api_version`",
            ),
        ] {
            let p = problems(&with(params));
            assert!(
                p.len() == 1 && p[0].contains(says) && p[0].contains("litellm_params"),
                "{params}: {p:?}"
            );
        }
    }

    /// LiteLLM reads `os.environ/NAME` in any of a deployment's params (its docs' Azure
    /// quick-start gives `api_base` and `api_version` so); here only `api_key` was read, so
    /// such a config was refused as "not a URL". A virtual key written so was taken as the
    /// literal text: `os.environ/PROD_KEY`, a key anyone could guess, let clients in.
    #[test]
    fn os_environ_is_read_in_api_base_api_version_and_virtual_keys() {
        let p = problems(&GOOD.replace(
            "      model: openai/gpt-4o\n      api_base: http://provider-a:8000/v1\n",
            "      model: azure/gpt-4o\n      api_base: https://res.openai.azure.com\n      api_version: os.environ/SWITCHBACK_TEST_UNSET_VAR\n",
        ));
        assert!(
            p.iter()
                .any(|p| p.contains("`SWITCHBACK_TEST_UNSET_VAR` is not set")
                    && p.contains("api_version")),
            "{p:?}"
        );
        let p = problems(&GOOD.replace(
            "api_base: http://provider-a:8000/v1",
            "api_base: os.environ/SWITCHBACK_TEST_UNSET_VAR",
        ));
        assert!(
            p.iter()
                .any(|p| p.contains("`SWITCHBACK_TEST_UNSET_VAR` is not set")
                    && p.contains("api_base")),
            "{p:?}"
        );
        let p = problems(&GOOD.replace("key: sk-1", "key: os.environ/SWITCHBACK_TEST_UNSET_VAR"));
        assert!(
            p.iter()
                .any(|p| p.contains("`SWITCHBACK_TEST_UNSET_VAR` is not set") && p.contains("keys")),
            "a virtual key is the variable's value, never the text: {p:?}"
        );
        // Cargo sets CARGO_PKG_NAME for the tests it runs.
        let c = GatewayConfig::load(
            "g.yaml",
            &GOOD.replace("key: sk-1", "key: os.environ/CARGO_PKG_NAME"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.keys[0].key.expose(), env!("CARGO_PKG_NAME"));
    }

    /// LiteLLM's own examples give Ollama's root as `api_base` (`ollama/llama3`, `api_base:
    /// http://localhost:11434`): it calls Ollama's own API there. Switchback posted to
    /// `{api_base}/chat/completions`, a 404 on every call; `ollama_chat/` also went upstream
    /// as that whole name.
    #[test]
    fn a_native_api_root_is_refused_naming_the_openai_compatible_one() {
        for (model, base, says) in [
            (
                "ollama/llama3",
                "http://localhost:11434",
                "http://localhost:11434/v1",
            ),
            (
                "ollama_chat/llama3",
                "http://localhost:11434/",
                "http://localhost:11434/v1",
            ),
            (
                "anthropic/claude-sonnet-4",
                "https://api.anthropic.com",
                "https://api.anthropic.com/v1",
            ),
        ] {
            let p = problems(&GOOD.replace(
                "      model: openai/gpt-4o\n      api_base: http://provider-a:8000/v1\n",
                &format!("      model: {model}\n      api_base: {base}\n"),
            ));
            assert!(
                p.len() == 1 && p[0].contains(says) && p[0].contains("api_base"),
                "{model}: {p:?}"
            );
        }
        let c = GatewayConfig::load(
            "g.yaml",
            &GOOD.replace("model: openai/gpt-4o", "model: ollama_chat/llama3"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            strip_provider(&c.model_list[0].litellm_params.model),
            "llama3"
        );
    }

    #[test]
    fn the_admin_key_is_litellms_master_key_and_never_a_virtual_key() {
        let with = |master: &str| format!("{GOOD}general_settings:\n  master_key: {master}\n");
        let c = GatewayConfig::load("g.yaml", &with("sk-admin")).unwrap();
        assert_eq!(
            c.general_settings.master_key.as_ref().map(Secret::expose),
            Some("sk-admin")
        );
        let p = problems(&with("sk-1"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("g.yaml:27:15:"), "{p:?}");
        assert!(
            p[0].contains("the admin key is also a virtual key"),
            "{p:?}"
        );
        let p = problems(&with("os.environ/SWITCHBACK_TEST_UNSET_MASTER_KEY"));
        assert!(
            p[0].contains("general_settings.master_key")
                && p[0].contains("`SWITCHBACK_TEST_UNSET_MASTER_KEY` is not set"),
            "{p:?}"
        );
        // LiteLLM's other general settings (a database, ...) mean nothing here: refused,
        // by name, rather than silently ignored.
        let p = problems(&format!(
            "{GOOD}general_settings:\n  database_url: postgres://x\n"
        ));
        assert!(p[0].contains("unknown field `database_url`"), "{p:?}");
    }

    #[test]
    fn unknown_fallback_group_is_pinned_to_its_line() {
        let text = GOOD.replace(
            "      fallbacks:\n        - gpt-4o: [claude]",
            "      fallbacks:\n        - gpt-4o: [clade]",
        );
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("keys[0].router_settings.fallbacks[0].gpt-4o[0]"),
            "{p:?}"
        );
        assert!(p[0].contains("unknown group `clade`"), "{p:?}");
        assert!(p[0].starts_with("g.yaml:25:20:"), "{p:?}");
    }

    #[test]
    fn entry_with_two_groups_is_refused_where_it_is() {
        let text = GOOD.replace(
            "    - gpt-4o: [claude]\nteams",
            "    - {gpt-4o: [claude], claude: [gpt-4o]}\nteams",
        );
        let p = problems(&text);
        assert!(p[0].contains("exactly one group"), "{p:?}");
        assert!(p[0].contains("router_settings.fallbacks"), "{p:?}");
    }

    #[test]
    fn deployment_without_group_and_duplicate_ids() {
        let text = r#"
model_list:
  - model_name: ""
    litellm_params: {model: a, api_base: "http://h/v1"}
  - model_name: b
    litellm_params: {model: b, api_base: "http://h/v1"}
    model_info: {id: x}
  - model_name: c
    litellm_params: {model: c, api_base: "http://h/v1"}
    model_info: {id: x}
"#;
        let p = problems(text);
        assert!(p.iter().any(|m| m.contains("needs a group")), "{p:?}");
        assert!(
            p.iter().any(|m| m.contains("duplicate deployment id `x`")),
            "{p:?}"
        );
    }

    #[test]
    fn missing_model_name_is_a_load_error() {
        let p =
            problems("model_list:\n  - litellm_params: {model: a, api_base: \"http://h/v1\"}\n");
        assert!(p[0].contains("model_name"), "{p:?}");
    }

    #[test]
    fn gateway_only_settings_are_refused_on_keys() {
        let text = GOOD.replace(
            "    router_settings:\n      fallbacks:",
            "    router_settings:\n      cooldown_time: 5\n      fallbacks:",
        );
        let p = problems(&text);
        assert!(
            p[0].contains("cooldown_time") && p[0].contains("gateway-wide"),
            "{p:?}"
        );
    }

    #[test]
    fn typo_suggests_the_field() {
        let text = GOOD.replace("num_retries: 1", "num_retires: 1");
        let p = problems(&text);
        assert!(p[0].contains("did you mean `num_retries`"), "{p:?}");
    }

    #[test]
    fn nonzero_retries_for_never_retried_class_is_refused() {
        let text = GOOD.replace(
            "num_retries: 1",
            "retry_policy: {BadRequestErrorRetries: 2}",
        );
        let p = problems(&text);
        assert!(p[0].contains("must be 0"), "{p:?}");
    }

    #[test]
    fn deployment_cooldown_time_and_num_retries_are_checked_in_place() {
        let with = |extra: &str| {
            GOOD.replace(
                "      api_base: http://provider-b:8000/v1\n",
                &format!("      api_base: http://provider-b:8000/v1\n      {extra}\n"),
            )
        };
        assert!(GatewayConfig::load("g.yaml", &with("cooldown_time: 0")).is_ok());
        assert!(GatewayConfig::load("g.yaml", &with("num_retries: 4")).is_ok());
        let p = problems(&with("cooldown_time: -1"));
        assert!(
            p[0].contains("model_list[1].litellm_params.cooldown_time")
                && p[0].contains("out of range"),
            "{p:?}"
        );
        let p = problems(&with("cooldown_time: 301"));
        assert!(p[0].contains("max_cooldown"), "{p:?}");
        let p = problems(&with("num_retries: 1000"));
        assert!(
            p[0].contains("model_list[1].litellm_params.num_retries")
                && p[0].contains("max_retries_ceiling"),
            "{p:?}"
        );
    }

    #[test]
    fn num_retries_per_request_is_bounded_by_max_attempts() {
        let text = GOOD.replace("num_retries: 1", "num_retries_per_request: 32");
        assert!(GatewayConfig::load("g.yaml", &text).is_ok());
        let text = GOOD.replace("num_retries: 1", "num_retries_per_request: 33");
        let p = problems(&text);
        assert!(
            p[0].contains("router_settings.num_retries_per_request")
                && p[0].contains("max_attempts = 32"),
            "{p:?}"
        );
    }

    #[test]
    fn allowed_fails_policy_is_gateway_only_and_group_retry_policies_are_checked() {
        let text = GOOD.replace(
            "num_retries: 1",
            "allowed_fails_policy: {RateLimitErrorAllowedFails: 2, BadRequestErrorAllowedFails: 1000}",
        );
        assert!(GatewayConfig::load("g.yaml", &text).is_ok());
        let text = GOOD.replace(
            "    router_settings:\n      fallbacks:",
            "    router_settings:\n      allowed_fails_policy: {TimeoutErrorAllowedFails: 1}\n      fallbacks:",
        );
        let p = problems(&text);
        assert!(
            p[0].contains("allowed_fails_policy") && p[0].contains("gateway-wide"),
            "{p:?}"
        );
        let text = GOOD.replace(
            "num_retries: 1",
            "allowed_fails_policy: {RateLimitErrorAllowedFail: 2}",
        );
        assert!(problems(&text)[0].contains("RateLimitErrorAllowedFails"));
        let text = GOOD.replace(
            "num_retries: 1",
            "model_group_retry_policy: {claude: {RateLimitErrorRetries: 1}, gpt-5: {TimeoutErrorRetries: 1}}",
        );
        let p = problems(&text);
        assert!(
            p[0].contains("model_group_retry_policy.gpt-5") && p[0].contains("unknown group"),
            "{p:?}"
        );
        let text = GOOD.replace(
            "num_retries: 1",
            "model_group_retry_policy: {claude: {BadRequestErrorRetries: 1}}",
        );
        let p = problems(&text);
        assert!(
            p[0].contains("model_group_retry_policy.claude.BadRequestErrorRetries")
                && p[0].contains("must be 0"),
            "{p:?}"
        );
    }

    #[test]
    fn cooldown_by_failure_rate_refuses_allowed_fails() {
        let text = GOOD.replace("num_retries: 1", "cooldown_by_failure_rate: true");
        assert!(GatewayConfig::load("g.yaml", &text).is_ok());
        let text = GOOD.replace(
            "num_retries: 1",
            "cooldown_by_failure_rate: true\n  allowed_fails: 3",
        );
        let p = problems(&text);
        assert!(
            p[0].contains("router_settings.cooldown_by_failure_rate")
                && p[0].contains("`allowed_fails` is not set"),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_team_and_unsupported_strategy() {
        let text = GOOD.replace("team_id: chatbot\n    router", "team_id: nope\n    router");
        assert!(problems(&text)[0].contains("unknown team `nope`"));
        let text = GOOD.replace("num_retries: 1", "routing_strategy: least-busy");
        assert!(problems(&text)[0].contains("simple-shuffle"));
    }

    #[test]
    fn bad_seconds_and_limits() {
        let text = GOOD.replace("num_retries: 1", "timeout: -3");
        assert!(problems(&text)[0].contains("out of range"));
        let text = format!("{GOOD}limits:\n  max_attempts: 0\n");
        assert!(problems(&text)[0].contains("max_attempts"));
    }

    #[test]
    fn limits_that_would_panic_at_run_time_are_refused() {
        for (limit, value) in [
            ("max_connections", "2305843009213693952"),
            ("stream_buffer_frames", "18446744073709551615"),
            ("stream_buffer_bytes", "0"),
            ("max_choices", "0"),
        ] {
            let text = format!("{GOOD}limits:\n  {limit}: {value}\n");
            let p = problems(&text);
            assert!(
                p.iter()
                    .any(|m| m.contains(limit) && m.contains("out of range")),
                "{limit} = {value}: {p:?}"
            );
        }
        for limit in [
            "request_deadline",
            "header_read_timeout",
            "client_write_timeout",
        ] {
            let text = format!("{GOOD}limits:\n  {limit}: 0\n");
            assert!(problems(&text)[0].contains(limit), "{limit} = 0");
        }
        let text = format!("{GOOD}limits:\n  max_cooldown: 10\n")
            .replace("num_retries: 1", "cooldown_time: 60");
        assert!(problems(&text)[0].contains("max_cooldown"));
    }

    #[test]
    fn careless_values_are_refused_without_repeating_secrets() {
        let p = problems(&GOOD.replace(
            "api_base: http://provider-a:8000/v1",
            "api_base: http://provider-a:99999/v1",
        ));
        assert!(p[0].contains("port `99999`"), "{p:?}");
        let p = problems(&GOOD.replace(
            "api_base: http://provider-a:8000/v1",
            "api_base: http://user:hunter2@provider-a:8000/v1",
        ));
        assert!(
            p[0].contains("api_key") && !p[0].contains("hunter2"),
            "{p:?}"
        );
        let p = problems(&GOOD.replace(
            "api_base: http://provider-a:8000/v1",
            "api_base: http://provider-a:8000/v1\n      api_key: \"sk-abc\\r\\nX-Evil: 1\"",
        ));
        assert!(
            p[0].contains("api_key")
                && p[0].contains("control character")
                && !p[0].contains("sk-abc"),
            "{p:?}"
        );
        let p = problems(&GOOD.replace("key: sk-1", "key: \"  \""));
        assert!(p[0].contains("`key` contains whitespace"), "{p:?}");
    }

    #[test]
    fn anonymous_serving_is_opt_in_and_empty_files_are_refused() {
        let no_keys = GOOD.split("keys:\n").next().unwrap().to_string();
        let p = problems(&no_keys);
        assert!(p.iter().any(|m| m.contains("allow_anonymous")), "{p:?}");
        assert!(
            GatewayConfig::load("g.yaml", &format!("allow_anonymous: true\n{no_keys}")).is_ok()
        );
        let p = problems("");
        assert!(
            p.iter().any(|m| m.contains("`model_list` is empty")),
            "{p:?}"
        );
        let p = problems("model_list: []\n");
        assert!(
            p.iter().any(|m| m.contains("`model_list` is empty")),
            "{p:?}"
        );
    }

    #[test]
    fn round_trips_through_yaml() {
        let c = GatewayConfig::load("g.yaml", GOOD).unwrap();
        let text = serde_saphyr::to_string(&c).unwrap();
        assert_eq!(GatewayConfig::load("again.yaml", &text).unwrap(), c);
    }

    const WILD: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "http://w/v1"}}
  - {model_name: "*", litellm_params: {model: "openai/*", api_base: "http://c/v1"}}
  - {model_name: backup, litellm_params: {model: openai/b, api_base: "http://b/v1"}}
router_settings:
  fallbacks:
    - openai/gpt-4.1: [backup]
    - gpt-4o: [backup]
keys:
  - {key: sk-1, models: ["openai/*", openai/o3]}
"#;

    #[test]
    fn wildcard_groups_load_and_their_misuses_are_located() {
        GatewayConfig::load("g.yaml", WILD).unwrap();
        let p = problems(&WILD.replace("- gpt-4o: [backup]", "- \"openai/*\": [backup]"));
        assert!(
            p[0].contains("router_settings.fallbacks[1]") && p[0].contains("never applies"),
            "{p:?}"
        );
        let p = problems(&WILD.replace("- gpt-4o: [backup]", "- backup: [\"openai/*\"]"));
        assert!(p[0].contains("cannot fall back to wildcard group"), "{p:?}");
        // A config fallback may name a model a wildcard group serves; a request-level one
        // only a group, a deployment id, or such a model the config names too.
        GatewayConfig::load(
            "g.yaml",
            &WILD.replace("- gpt-4o: [backup]", "- backup: [openai/gpt-4o]"),
        )
        .unwrap();
        let request = RouterSettings {
            fallbacks: Some(vec![FallbackEntry::new("backup", &["openai/o3"])]),
            ..RouterSettings::default()
        };
        let mut p = Vec::new();
        check_settings_fields(
            &request,
            &At::default(),
            &["openai/*", "backup"],
            &[],
            &Limits::default(),
            &mut |_, m| p.push(m),
        );
        assert!(
            p[0].contains("which only wildcard group `openai/*` serves"),
            "{p:?}"
        );
        let p = problems(&WILD.replace("model: openai/b,", "model: \"openai/b*\","));
        assert!(
            p[0].contains("model_list[2].litellm_params.model") && p[0].contains("has none"),
            "{p:?}"
        );
        // An entry or allow-list name that no group serves is unknown.
        let narrow = r#"
allow_anonymous: true
model_list:
  - {model_name: "fixed/*", litellm_params: {model: "openai/*", api_base: "http://w/v1"}}
  - {model_name: backup, litellm_params: {model: openai/b, api_base: "http://b/v1"}}
router_settings:
  fallbacks: [{fixed/x: [backup]}]
keys:
  - {key: sk-1, models: ["fixed/*", fixed/y]}
"#;
        GatewayConfig::load("g.yaml", narrow).unwrap();
        let p = problems(&narrow.replace("fixed/x:", "other:"));
        assert!(
            p[0].contains("fallback entry for unknown group `other`"),
            "{p:?}"
        );
        let p = problems(&narrow.replace("fixed/y]", "other]"));
        assert!(
            p[0].contains("keys[0].models[1]") && p[0].contains("unknown group `other`"),
            "{p:?}"
        );
    }

    #[test]
    fn fallbacks_may_name_deployment_ids_that_exist() {
        // `claude-b` is the id of the `claude` deployment; `gpt-4o#1` the default id.
        let text = GOOD.replace(
            "    - gpt-4o: [claude]\nteams",
            "    - gpt-4o: [claude-b, \"gpt-4o#1\"]\nteams",
        );
        GatewayConfig::load("g.yaml", &text).unwrap();
        let text = GOOD.replace(
            "    - gpt-4o: [claude]\nteams",
            "    - gpt-4o: [claude-c]\nteams",
        );
        let p = problems(&text);
        assert!(
            p[0].contains("router_settings.fallbacks[0].gpt-4o[0]")
                && p[0].contains("no model group or deployment id has this name"),
            "{p:?}"
        );
        // An id that is another group's name is ambiguous; one naming its own group of one
        // deployment is not.
        let p = problems(&GOOD.replace("id: claude-b", "id: gpt-4o"));
        assert!(
            p[0].contains("model_list[1].model_info.id") && p[0].contains("also the name"),
            "{p:?}"
        );
        GatewayConfig::load("g.yaml", &GOOD.replace("id: claude-b", "id: claude")).unwrap();
    }

    /// A deployment whose `model` has a `*` is called with a model made from the requested
    /// name; called by its id there is no such name, and it would be sent `"model": "*"`.
    /// A config fallback naming such an id is refused where it stands, with or without a
    /// pattern (`*`) that would otherwise serve the name.
    #[test]
    fn fallbacks_to_a_wildcard_deployments_id_are_located_errors() {
        let wild = r#"
allow_anonymous: true
model_list:
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "http://w/v1"}, model_info: {id: oa}}
  - {model_name: "fixed/*", litellm_params: {model: openai/f, api_base: "http://f/v1"}, model_info: {id: fx}}
  - {model_name: chat, litellm_params: {model: openai/c, api_base: "http://c/v1"}}
router_settings:
  fallbacks: [{chat: [fx]}]
"#;
        // A deployment of a wildcard group with a fixed `model` is an ordinary target.
        GatewayConfig::load("g.yaml", wild).unwrap();
        let refused = |text: &str, at: &str| {
            let p = problems(text);
            assert!(
                p.len() == 1
                    && p[0].contains(at)
                    && p[0].contains("deployment `oa`")
                    && p[0].contains("wildcard"),
                "{p:?}"
            );
        };
        let to_oa = wild.replace("[{chat: [fx]}]", "[{chat: [fx, oa]}]");
        refused(&to_oa, "router_settings.fallbacks[0].chat[1]");
        let star = "  - {model_name: \"*\", litellm_params: {model: \"openai/*\", api_base: \"http://s/v1\"}}\nrouter_settings:";
        refused(
            &to_oa.replace("router_settings:", star),
            "router_settings.fallbacks[0].chat[1]",
        );
        refused(
            &wild.replace(
                "[{chat: [fx]}]",
                "[{chat: [fx]}]\n  default_fallbacks: [oa]",
            ),
            "router_settings.default_fallbacks[0]",
        );
        // An entry keyed by the id would apply only to requests naming it, which are refused.
        refused(
            &wild.replace("[{chat: [fx]}]", "[{chat: [fx]}, {oa: [chat]}]"),
            "router_settings.fallbacks[1].oa",
        );
        refused(
            &format!(
                "{wild}keys:\n  - key: sk-1\n    router_settings: {{context_window_fallbacks: [{{chat: [oa]}}]}}\n"
            ),
            "keys[0].router_settings.context_window_fallbacks[0].chat[0]",
        );
    }

    #[test]
    fn provider_prefix_stripping() {
        assert_eq!(
            strip_provider("vertex_ai/gemini-2.5-flash"),
            "gemini-2.5-flash"
        );
        assert_eq!(strip_provider("openrouter/google/gemini"), "google/gemini");
        assert_eq!(strip_provider("google/gemini"), "google/gemini");
        assert_eq!(strip_provider("plain"), "plain");
        assert_eq!(
            strip_provider("moonshot/kimi-k2-0711-preview"),
            "kimi-k2-0711-preview"
        );
        assert_eq!(strip_provider("cerebras/llama3.1-8b"), "llama3.1-8b");
        assert_eq!(
            strip_provider("litellm_proxy/openai/gpt-4o"),
            "openai/gpt-4o",
            "one prefix: the proxy's own name for the model goes as it is"
        );
    }
}
