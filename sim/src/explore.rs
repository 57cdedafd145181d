//! Exploration: random scenarios, run in both modes, judged, shrunk to a scenario file.
//!
//! Owns: the proptest strategies for whole scenarios (gateway configs of 1–5 groups with
//! 1–2 deployments each, fallback lists at every precedence level, keys and teams with
//! allow-lists, per-call provider scripts with faults at random chunk offsets, network
//! faults, request bodies with and without `mock_testing_*` flags), swarm-style: each case
//! first picks which fault kinds (and which other features) are enabled, then draws only
//! from those. One feature is concurrency: several requests in flight at once, from several
//! keys, sharing deployments, short cooldowns and `allowed_fails`, on a network with a
//! latency range, arriving while cooldowns start and end; another is the providers' dialects
//! and answer shapes (from [`shapes`]); another, a config reload mid-run (from
//! [`reloads`]). Also: the property (both modes, every invariant,
//! equivalence, and wire fidelity wherever an answer was passed through), generating case
//! `seed` exactly (`replay`), shrinking a failing case, writing it out as a scenario file,
//! and the coverage report.

pub mod policies;
pub mod reloads;
pub mod routing;
pub mod shapes;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;
use switchback::config::{
    Deployment, FallbackEntry, GatewayConfig, GeneralSettings, Key, LitellmParams, MidStreamPolicy,
    ModelInfo, RetryPolicy, RouterSettings, Team,
};
use switchback::limits::Limits;
use switchback::trace::Event;

use crate::oracle;
use crate::scenario::{
    ContentFilterMode, Expect, Fault, FaultKind, Flavour, Framing, LineEnd, Mode, NetFault,
    Provider, RequestSpec, Scenario, Script,
};
use crate::world::{self, GatewayUnderTest, ModeRun, WorldOptions};

/// The answer every fake gives, so a continuation on any deployment completes it.
pub const TEXT: &str = "alpha beta gamma delta epsilon";
/// Simulated milliseconds per step in generated worlds.
pub const TICK_MS: u64 = 5;
/// ... and in concurrent ones, where coarse steps would lump events of different requests
/// a few milliseconds apart into one instant.
pub const CONCURRENT_TICK_MS: u64 = 1;
/// Shrinking stops after this many steps, whatever is left.
pub const MAX_SHRINK_STEPS: u32 = 500;

/// Which fault kinds (and other features) one case may use.
#[derive(Debug, Clone)]
pub struct Swarm {
    pub kinds: Vec<FaultKind>,
    pub mocks: bool,
    pub network: bool,
    pub request_settings: bool,
    /// Providers speak generated dialects and answer in generated shapes.
    pub shapes: bool,
    /// Several requests in flight at once, from several keys, with short cooldowns, faults
    /// that recur every few calls, and a latency range.
    pub concurrency: bool,
}

/// Share of cases with [`Swarm::concurrency`] on, by default.
pub const CONCURRENCY_WEIGHT: f64 = 0.4;

/// How often generated cases have [`Swarm::concurrency`] on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// In [`CONCURRENCY_WEIGHT`] of the cases.
    #[default]
    Sometimes,
    Always,
    Never,
}

impl Concurrency {
    fn weight(self) -> f64 {
        match self {
            Concurrency::Sometimes => CONCURRENCY_WEIGHT,
            Concurrency::Always => 1.0,
            Concurrency::Never => 0.0,
        }
    }
}
/// Keys a concurrent case may use: `sk-explore`, `sk-explore-1`, ...
pub const MAX_KEYS: usize = 3;

fn swarm(concurrency: Concurrency) -> impl Strategy<Value = Swarm> {
    (
        proptest::sample::subsequence(FaultKind::ALL.to_vec(), 0..=FaultKind::ALL.len()),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(concurrency.weight()),
        proptest::bool::weighted(0.5),
    )
        .prop_map(
            |(kinds, mocks, network, request_settings, concurrency, shapes)| Swarm {
                kinds,
                mocks,
                network,
                request_settings,
                concurrency,
                shapes,
            },
        )
}

fn key_name(i: usize) -> String {
    if i == 0 {
        "sk-explore".to_string()
    } else {
        format!("sk-explore-{i}")
    }
}

fn chunk_count(chunk_size: usize) -> usize {
    TEXT.chars().count().div_ceil(chunk_size)
}

fn fault(kinds: Vec<FaultKind>, chunks: usize) -> BoxedStrategy<Option<Fault>> {
    if kinds.is_empty() {
        return Just(None).boxed();
    }
    let http_status = prop_oneof![
        Just((429, None)),
        Just((500, None)),
        Just((503, None)),
        Just((529, None)),
        Just((401, None)),
        Just((404, None)),
        Just((422, None)),
        Just((400, Some("context_length_exceeded"))),
        Just((400, Some("content_filter"))),
    ];
    let event_status = prop_oneof![
        Just((429, None)),
        Just((500, None)),
        Just((503, None)),
        Just((400, Some("context_length_exceeded"))),
    ];
    (
        proptest::sample::select(kinds),
        0..=chunks,
        http_status,
        event_status,
        // 0: a cooldown of no length, which LiteLLM runs no cooldown logic for at all.
        proptest::option::of(proptest::sample::select(vec![0.0, 0.2, 0.5, 1.0, 2.0, 5.0])),
        proptest::sample::select(vec![
            Flavour::Openai,
            Flavour::Openrouter,
            Flavour::Vertex,
            Flavour::Anthropic,
            Flavour::LlamaCpp,
            Flavour::Vllm,
            Flavour::Litellm,
        ]),
    )
        .prop_map(|(kind, k, (hs, hc), (es, ec), retry_after, flavour)| {
            let (status, code, after) = match kind {
                FaultKind::Http => (Some(hs), hc, 0),
                FaultKind::ErrorEvent => (Some(es), ec, k),
                _ => (None, None, k),
            };
            Some(Fault {
                kind,
                after_chunks: after,
                status,
                // A 503 may ask for a wait too, which then sets its cooldown's length.
                retry_after: if matches!(status, Some(429 | 503)) {
                    retry_after
                } else {
                    None
                },
                flavour,
                code: code.map(str::to_string),
                message: None,
                param: None,
                echo: None,
            })
        })
        .boxed()
}

fn script(kinds: Vec<FaultKind>, fault_weight: f64) -> impl Strategy<Value = Script> {
    (3usize..=8, 0u64..=20, 0u64..=20).prop_flat_map(move |(chunk_size, delay, ttfb)| {
        let chunks = chunk_count(chunk_size);
        proptest::option::weighted(fault_weight, fault(kinds.clone(), chunks)).prop_map(move |f| {
            Script {
                text: Some(TEXT.to_string()),
                chunk_size: Some(chunk_size),
                ttfb_ms: ttfb,
                delay_ms: delay,
                fault: f.flatten(),
                ..Script::default()
            }
        })
    })
}

fn provider(
    host: String,
    model: String,
    kinds: Vec<FaultKind>,
    recurring: bool,
) -> impl Strategy<Value = Provider> {
    // Under concurrency, faults that recur every few calls: many requests meet them, and
    // consecutive failures (allowed_fails) depend on how the requests interleave.
    let every = if recurring {
        proptest::collection::vec((2u32..=4, script(kinds.clone(), 0.9)), 0..=2).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    // How long the provider keeps an idle connection: for ever (most servers), not at all
    // (`Connection: close`), or briefly (uvicorn's keep-alive, scaled to a scenario).
    let keep_alive = prop_oneof![
        4 => Just(None),
        1 => Just(Some(0u64)),
        1 => (20u64..=200).prop_map(Some),
    ];
    // How it frames its events: mostly as OpenAI does, now and then as other servers do
    // (CRLF or CR line ends, no space after `data:`, events cut across reads).
    let framing = prop_oneof![
        5 => Just(Framing::default()),
        1 => (
            prop_oneof![Just(LineEnd::Lf), Just(LineEnd::Crlf), Just(LineEnd::Cr)],
            proptest::bool::ANY,
            proptest::option::of(7usize..=64),
        )
            .prop_map(|(line_end, no_space, write_bytes)| Framing {
                line_end,
                no_space,
                write_bytes,
            }),
    ];
    (
        script(kinds.clone(), 0.15),
        proptest::collection::vec((1u32..=4, script(kinds, 0.9)), 0..=3),
        every,
        keep_alive,
        framing,
    )
        .prop_map(
            move |(default, calls, every, keep_alive_ms, framing)| Provider {
                host: host.clone(),
                port: 8000,
                model: Some(model.clone()),
                default,
                calls: calls
                    .into_iter()
                    .map(|(call, mut s)| {
                        s.calls = vec![call];
                        s
                    })
                    .chain(every.into_iter().map(|(n, mut s)| {
                        s.every = Some(n);
                        s
                    }))
                    .collect(),
                dialect: Default::default(),
                tool_call_index: None,
                tool_call_ids: Default::default(),
                keep_alive_ms,
                framing,
                content_filter: Default::default(),
                finish_reasons: Default::default(),
                refuses_streaming: false,
                unlabelled: false,
            },
        )
}

fn group_name(i: usize) -> String {
    format!("g{i}")
}

/// A fallback list over `n` groups (with `*` now and then).
fn table(n: usize) -> impl Strategy<Value = Option<Vec<FallbackEntry>>> {
    let entry =
        (0..=n, proptest::collection::vec(0..n, 1..=3)).prop_map(move |(from, to)| FallbackEntry {
            group: if from == n {
                "*".to_string()
            } else {
                group_name(from)
            },
            fallbacks: to.into_iter().map(group_name).collect(),
        });
    proptest::option::weighted(0.6, proptest::collection::vec(entry, 1..=4))
}

/// Cooldowns short enough to start and end while concurrent requests are still arriving.
const SHORT_COOLDOWNS: [f64; 4] = [0.02, 0.05, 0.1, 0.25];

fn level_settings(
    n: usize,
    gateway: bool,
    short_cooldowns: bool,
) -> impl Strategy<Value = RouterSettings> {
    let cooldowns = if short_cooldowns {
        SHORT_COOLDOWNS.to_vec()
    } else {
        vec![0.0, 1.0, 30.0]
    };
    (
        table(n),
        proptest::option::weighted(0.2, table(n)),
        proptest::option::weighted(0.2, table(n)),
        proptest::option::weighted(0.15, proptest::collection::vec(0..n, 1..=2)),
        proptest::option::of(0u32..=2),
        proptest::option::weighted(
            0.2,
            (
                proptest::option::of(0u32..=2),
                proptest::option::of(0u32..=2),
            ),
        ),
        proptest::option::weighted(
            0.4,
            prop_oneof![
                Just(MidStreamPolicy::Continue),
                Just(MidStreamPolicy::Error)
            ],
        ),
        proptest::option::weighted(0.3, 0u32..=3),
        (
            proptest::option::weighted(0.1, Just(true)),
            0u32..=2,
            proptest::sample::select(cooldowns),
        ),
    )
        .prop_map(
            move |(
                fallbacks,
                cw,
                cp,
                default,
                retries,
                policy,
                mid,
                max_fb,
                (disable, allowed_fails, cooldown),
            )| {
                let mut s = RouterSettings {
                    fallbacks,
                    context_window_fallbacks: cw.flatten(),
                    content_policy_fallbacks: cp.flatten(),
                    default_fallbacks: default.map(|d| d.into_iter().map(group_name).collect()),
                    num_retries: retries,
                    retry_policy: policy.map(|(rate, internal)| RetryPolicy {
                        rate_limit: rate,
                        internal_server: internal,
                        ..RetryPolicy::default()
                    }),
                    mid_stream: mid,
                    max_fallbacks: max_fb,
                    disable_fallbacks: disable,
                    ..RouterSettings::default()
                };
                if gateway {
                    s.allowed_fails = Some(allowed_fails);
                    s.cooldown_time = Some(cooldown);
                    s.stream_timeout = Some(1.0);
                    s.retry_backoff_base = Some(0.05);
                    s.retry_backoff_max = Some(0.2);
                }
                s
            },
        )
}

fn allow_list(n: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::option::weighted(0.3, proptest::collection::btree_set(0..n, 1..=n))
        .prop_map(|set| set.map_or_else(Vec::new, |s| s.into_iter().map(group_name).collect()))
}

fn request(n: usize, swarm: &Swarm, at_ms: u64) -> impl Strategy<Value = RequestSpec> + use<> {
    let mock = if swarm.mocks {
        proptest::option::weighted(0.5, 0usize..4).boxed()
    } else {
        Just(None).boxed()
    };
    let overrides = if swarm.request_settings {
        proptest::option::weighted(0.6, (table(n), proptest::option::of(0u32..=2))).boxed()
    } else {
        Just(None).boxed()
    };
    (0..n, mock, overrides).prop_map(move |(group, mock, overrides)| {
        let mut body = serde_json::Map::new();
        if let Some(m) = mock {
            body.insert(
                switchback::request::MOCK_FLAGS[m].0.to_string(),
                json!(true),
            );
        }
        if let Some((fallbacks, retries)) = overrides {
            if let Some(f) = fallbacks {
                body.insert(
                    "fallbacks".into(),
                    serde_json::to_value(f).expect("serialisable"),
                );
            }
            if let Some(r) = retries {
                body.insert("num_retries".into(), json!(r));
            }
        }
        RequestSpec {
            key: Some("sk-explore".into()),
            model: group_name(group),
            messages: vec![json!({"role": "user", "content": "say the words"})],
            body,
            at_ms,
            repeat: 1,
            concurrency: 1,
            timeout_ms: 60_000,
            expect: None,
            disconnect: None,
            stop_reading: None,
        }
    })
}

/// Under concurrency: one request spec with copies in flight at once, from one of `keys`
/// keys, arriving within the first 400 ms (while cooldowns start and end).
fn burst(n: usize, swarm: &Swarm, keys: usize) -> impl Strategy<Value = RequestSpec> + use<> {
    (
        request(n, swarm, 0),
        0..keys,
        0u64..=400,
        1u32..=5,
        1u32..=5,
    )
        .prop_map(|(mut r, key, at_ms, repeat, concurrency)| {
            r.key = Some(key_name(key));
            r.at_ms = at_ms;
            r.repeat = repeat;
            r.concurrency = concurrency.min(repeat);
            r
        })
}

/// A whole generated scenario (its name carries nothing; `case` sets it), with the routing
/// features of [`routing`].
pub fn scenario(concurrency: Concurrency) -> impl Strategy<Value = Scenario> {
    // Boxed: the two strategies' value trees nested unboxed overflow a debug build's stack.
    (
        base_scenario(concurrency).boxed(),
        routing::routing().boxed(),
        // Drawn last, so that it leaves every earlier draw of a seed as it was: a seed's case
        // is the one it was before, but for some Azure providers' content filter.
        shapes::content_filters(),
        // Drawn after it, for the same reason.
        reloads::reload(),
        // And after that, likewise.
        shapes::usage_asked(),
        // And after that, likewise.
        shapes::finish_reasons(),
        // And after that, likewise.
        shapes::streaming_refused(),
        // And after that, likewise.
        shapes::unlabelled(),
        // And after that, likewise.
        shapes::token_budget(),
    )
        .prop_map(
            |(mut s, r, filters, reload, usage, finishes, refused, unlabelled, budget)| {
                // Before the wildcard's provider copies the first one.
                shapes::apply_content_filters(&mut s.providers, &filters);
                shapes::apply_finish_reasons(&mut s.providers, &finishes);
                shapes::apply_streaming_refused(&mut s.providers, &refused);
                shapes::apply_unlabelled(&mut s.providers, &unlabelled);
                r.apply(&mut s);
                s.description.push_str(&r.describe());
                shapes::apply_usage_asked(&mut s.requests, usage);
                shapes::apply_token_budget(&mut s.requests, budget);
                // Last: the new config is the case's final one, changed.
                if let Some(reload) = reload {
                    reload.apply(&mut s);
                    s.description.push_str(&reload.describe());
                }
                s
            },
        )
}

fn base_scenario(concurrency: Concurrency) -> impl Strategy<Value = Scenario> {
    (
        swarm(concurrency),
        1usize..=5,
        proptest::collection::vec(1usize..=2, 5),
    )
        .prop_flat_map(|(swarm, n, per_group)| {
            let mut hosts = Vec::new();
            for (g, count) in per_group.iter().take(n).enumerate() {
                for d in 0..*count {
                    hosts.push((g, d));
                }
            }
            let providers: Vec<_> = hosts
                .iter()
                .map(|(g, d)| {
                    provider(
                        format!("h{g}x{d}"),
                        format!("model-{g}-{d}"),
                        swarm.kinds.clone(),
                        swarm.concurrency,
                    )
                })
                .collect();
            let orders = proptest::collection::vec(0u32..=1, hosts.len());
            let shapes = proptest::collection::vec(shapes::shape(), hosts.len());
            let policies = policies::policies(hosts.len());
            let two_requests = proptest::bool::weighted(0.3);
            let net = if swarm.network {
                proptest::option::weighted(
                    0.7,
                    (
                        proptest::sample::select(hosts.clone()),
                        0u64..=200,
                        100u64..=2000,
                        // A host cut off by a partition, or up but refusing connections.
                        proptest::bool::ANY,
                    ),
                )
                .boxed()
            } else {
                Just(None).boxed()
            };
            let keys = if swarm.concurrency { MAX_KEYS } else { 1 };
            let bursts = if swarm.concurrency {
                proptest::collection::vec(burst(n, &swarm, keys), 2..=3).boxed()
            } else {
                Just(Vec::new()).boxed()
            };
            let latency = if swarm.concurrency {
                (0u64..=2, 5u64..=30).prop_map(|(lo, hi)| [lo, hi]).boxed()
            } else {
                Just(crate::scenario::Network::default().latency_ms).boxed()
            };
            (
                Just(swarm.clone()),
                Just(hosts),
                providers,
                orders,
                level_settings(n, true, swarm.concurrency),
                proptest::option::weighted(0.5, (level_settings(n, false, false), allow_list(n))),
                proptest::collection::vec(
                    (level_settings(n, false, false), allow_list(n)),
                    keys,
                ),
                (
                    request(n, &swarm, 0),
                    request(n, &swarm, 2_000),
                    two_requests,
                    bursts,
                ),
                net,
                latency,
                (shapes, policies),
            )
                .prop_map(
                    move |(
                        swarm,
                        hosts,
                        providers,
                        orders,
                        gateway,
                        team,
                        key_levels,
                        (r1, r2, two, bursts),
                        net,
                        latency,
                        (shapes, policies),
                    )| {
                        let mut providers = providers;
                        if swarm.shapes {
                            for (p, shape) in providers.iter_mut().zip(&shapes) {
                                shapes::apply(p, shape);
                            }
                        }
                        let model_list = hosts
                            .iter()
                            .zip(&orders)
                            .map(|((g, d), order)| Deployment {
                                model_name: group_name(*g),
                                litellm_params: LitellmParams {
                                    model: format!("openai/model-{g}-{d}"),
                                    api_base: Some(format!("http://h{g}x{d}:8000/v1")),
                                    order: Some(*order),
                                    ..LitellmParams::default()
                                },
                                model_info: ModelInfo {
                                    id: Some(format!("g{g}d{d}")),
                                },
                            })
                            .collect();
                        let teams: Vec<Team> = team
                            .iter()
                            .map(|(settings, models)| Team {
                                team_id: "team".into(),
                                models: models.clone(),
                                router_settings: settings.clone(),
                            })
                            .collect();
                        let keys: Vec<Key> = key_levels
                            .into_iter()
                            .enumerate()
                            .map(|(i, (key_settings, key_models))| Key {
                                key: key_name(i).into(),
                                key_alias: Some(key_name(i).replace("sk-", "")),
                                team_id: teams.first().map(|t| t.team_id.clone()),
                                models: key_models,
                                router_settings: key_settings,
                            })
                            .collect();
                        let mut network = crate::scenario::Network {
                            latency_ms: latency,
                            ..crate::scenario::Network::default()
                        };
                        if let (Some(((g, d), at, length, refuse)), false) = (net, two) {
                            let host = format!("h{g}x{d}");
                            let (start, end) = if refuse {
                                (
                                    NetFault {
                                        refuse: Some(host.clone()),
                                        ..NetFault::default()
                                    },
                                    NetFault {
                                        listen: Some(host),
                                        ..NetFault::default()
                                    },
                                )
                            } else {
                                let link = ["gateway".to_string(), host];
                                (
                                    NetFault {
                                        partition: Some(link.clone()),
                                        ..NetFault::default()
                                    },
                                    NetFault {
                                        repair: Some(link),
                                        ..NetFault::default()
                                    },
                                )
                            };
                            network.faults.push(NetFault { at_ms: at, ..start });
                            network.faults.push(NetFault {
                                at_ms: at + length,
                                ..end
                            });
                        }
                        let requests = if swarm.concurrency {
                            bursts
                        } else if two {
                            vec![r1, r2]
                        } else {
                            vec![r1]
                        };
                        let kinds: Vec<&str> = swarm.kinds.iter().map(|k| k.as_str()).collect();
                        let mut scenario = Scenario {
                            name: "generated".into(),
                            description: format!(
                                "swarm: kinds [{}], mocks {}, network {}, request settings {}, concurrency {}, shapes {}",
                                kinds.join(", "),
                                swarm.mocks,
                                swarm.network,
                                swarm.request_settings,
                                swarm.concurrency,
                                swarm.shapes
                            ),
                            seed: 0,
                            duration_ms: 120_000,
                            tick_ms: if swarm.concurrency {
                                CONCURRENT_TICK_MS
                            } else {
                                TICK_MS
                            },
                            gateway: GatewayConfig {
                                allow_anonymous: false,
                                model_list,
                                router_settings: gateway,
                                teams,
                                keys,
                                limits: Limits {
                                    request_deadline: 20.0,
                                    max_retry_after: 3.0,
                                    ..Limits::default()
                                },
                                general_settings: GeneralSettings {
                                    dangerously_allow_mock_testing_request_params: swarm.mocks,
                                    ..GeneralSettings::default()
                                },
                            },
                            providers,
                            network,
                            reloads: Vec::new(),
                            requests,
                            sequential: false,
                            modes: Mode::both(),
                            expect: Expect::default(),
                        };
                        policies::apply(&mut scenario, &policies);
                        scenario
                    },
                )
        })
}

/// A proptest RNG for case `seed`: the same seed always generates the same case.
pub fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

fn runner(seed: u64) -> TestRunner {
    TestRunner::new_with_rng(runner_config(), rng(seed))
}

/// The runner's configuration, every field proptest would take from a `PROPTEST_*`
/// variable fixed here: shrinking reads `cases`, `max_flat_map_regens` and the shrink
/// limits, so with `Config::default()` a seed shrank to another case when
/// `PROPTEST_CASES` was set (as `sim/tests/equivalence.rs` suggests, to run more cases).
/// The values are proptest's own defaults; the runner is given its RNG, so the seed
/// fields only say so.
pub fn runner_config() -> Config {
    Config {
        cases: 256,
        max_local_rejects: 65_536,
        max_global_rejects: 1024,
        max_flat_map_regens: 1_000_000,
        failure_persistence: None,
        fork: false,
        timeout: 0,
        max_shrink_time: 0,
        max_shrink_iters: u32::MAX,
        max_default_size_range: 100,
        verbose: 0,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0),
        ..Config::default()
    }
}

/// Generated case `seed`, with its value tree (for shrinking).
pub fn case_tree(seed: u64, concurrency: Concurrency) -> impl ValueTree<Value = Scenario> {
    let mut runner = runner(seed);
    let tree = scenario(concurrency)
        .new_tree(&mut runner)
        .expect("the strategy never rejects");
    // The name and the world's seed follow the case seed, without disturbing shrinking.
    Named { inner: tree, seed }
}

/// Generated case `seed`.
pub fn case(seed: u64) -> Scenario {
    case_with(seed, Concurrency::default())
}

/// Generated case `seed`, with concurrency as often as `concurrency` says.
pub fn case_with(seed: u64, concurrency: Concurrency) -> Scenario {
    case_tree(seed, concurrency).current()
}

struct Named<T> {
    inner: T,
    seed: u64,
}

impl<T: ValueTree<Value = Scenario>> ValueTree for Named<T> {
    type Value = Scenario;
    fn current(&self) -> Scenario {
        let mut s = self.inner.current();
        s.name = format!("explore case {}", self.seed);
        s.seed = self.seed;
        s
    }
    fn simplify(&mut self) -> bool {
        self.inner.simplify()
    }
    fn complicate(&mut self) -> bool {
        self.inner.complicate()
    }
}

/// What one case showed.
pub struct Verdict {
    pub failures: Vec<String>,
    pub runs: Vec<ModeRun>,
}

/// Runs a scenario in both modes against `gateway` and applies every check.
pub fn judge(scenario: &Scenario, gateway: &Arc<dyn GatewayUnderTest>) -> Verdict {
    judge_in(scenario, gateway, WorldOptions::default())
}

/// [`judge`] in worlds built with `options`.
pub fn judge_in(
    scenario: &Scenario,
    gateway: &Arc<dyn GatewayUnderTest>,
    options: WorldOptions,
) -> Verdict {
    let mut failures = Vec::new();
    let runs: Vec<ModeRun> = scenario
        .modes
        .iter()
        .filter_map(
            |mode| match world::run_in(scenario, *mode, gateway.clone(), options) {
                Ok(run) => Some(run),
                Err(e) => {
                    failures.push(format!("[{}] cannot start: {e}", mode.as_str()));
                    None
                }
            },
        )
        .collect();
    for run in &runs {
        oracle::check_run(scenario, run, &mut failures);
        oracle::check_passthrough_where_it_applies(scenario, run, &mut failures);
    }
    if let [a, b] = runs.as_slice() {
        if a.hang.is_none() && b.hang.is_none() {
            oracle::check_equivalence(scenario, a, b, &mut failures);
        }
    }
    Verdict { failures, runs }
}

/// The first attempt the two modes asked differently: a continuation of a partial answer in
/// one mode, a fresh answer in the other (`None` if every attempt was asked alike). The
/// engine sends the same continuation in both modes (issue 12, item 0), so this never finds
/// one; if it did, the upstream would answer the modes differently, which would explain a
/// divergence, so failure reports name it.
pub fn asked_differently(runs: &[ModeRun]) -> Option<String> {
    use std::collections::BTreeMap;
    let asked = |run: &ModeRun| -> BTreeMap<(usize, u32), Vec<bool>> {
        let mut by_id: BTreeMap<u64, Vec<bool>> = BTreeMap::new();
        for r in &run.records {
            if let Event::AttemptStarted { continuation, .. } = &r.event {
                by_id.entry(r.request).or_default().push(*continuation);
            }
        }
        run.results
            .iter()
            .filter_map(|c| Some(((c.index, c.copy), by_id.get(&c.request_id()?)?.clone())))
            .collect()
    };
    let [a, b] = runs else { return None };
    let (x, y) = (asked(a), asked(b));
    x.iter().find_map(|(request, xs)| {
        let ys = y.get(request)?;
        let i = xs.iter().zip(ys).position(|(p, q)| p != q)?;
        let ask = |c: bool| {
            if c {
                "a continuation"
            } else {
                "a fresh answer"
            }
        };
        Some(format!(
            "r{}.{} attempt {}: {} asks for {}, {} for {}",
            request.0,
            request.1,
            i + 1,
            a.mode.as_str(),
            ask(xs[i]),
            b.mode.as_str(),
            ask(ys[i]),
        ))
    })
}

/// Shrinks a failing case: the smallest scenario the strategy can reach that still fails.
pub fn shrink(seed: u64, gateway: &Arc<dyn GatewayUnderTest>) -> (Scenario, Vec<String>) {
    shrink_within(seed, gateway, MAX_SHRINK_STEPS)
}

/// [`shrink`] with a step budget.
pub fn shrink_within(
    seed: u64,
    gateway: &Arc<dyn GatewayUnderTest>,
    max_steps: u32,
) -> (Scenario, Vec<String>) {
    shrink_in(
        seed,
        Concurrency::default(),
        gateway,
        WorldOptions::default(),
        max_steps,
    )
}

/// [`shrink_within`] for a case generated with `concurrency`, in worlds built with
/// `options`.
pub fn shrink_in(
    seed: u64,
    concurrency: Concurrency,
    gateway: &Arc<dyn GatewayUnderTest>,
    options: WorldOptions,
    max_steps: u32,
) -> (Scenario, Vec<String>) {
    shrink_by(seed, concurrency, max_steps, |s| {
        let failures = judge_in(s, gateway, options).failures;
        (!failures.is_empty()).then_some(failures)
    })
}

/// Shrinks case `seed` to the smallest scenario the strategy reaches for which `fails`
/// still says what failed (`None`: it passes).
pub fn shrink_by(
    seed: u64,
    concurrency: Concurrency,
    max_steps: u32,
    fails: impl Fn(&Scenario) -> Option<Vec<String>>,
) -> (Scenario, Vec<String>) {
    let mut tree = case_tree(seed, concurrency);
    let mut best = tree.current();
    let mut best_failures = fails(&best).expect("shrink is only called on a failing case");
    let mut steps = 0;
    let mut fails_now = true;
    while steps < max_steps {
        steps += 1;
        let moved = if fails_now {
            tree.simplify()
        } else {
            tree.complicate()
        };
        if !moved {
            break;
        }
        let candidate = tree.current();
        match fails(&candidate) {
            Some(failures) => {
                fails_now = true;
                best = candidate;
                best_failures = failures;
            }
            None => fails_now = false,
        }
    }
    (best, best_failures)
}

/// Writes a scenario file for a (shrunk) failing case; returns its path.
pub fn save(dir: &Path, scenario: &Scenario, failures: &[String]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("explore_case_{}.yaml", scenario.seed));
    let mut text = String::new();
    // Run from the repository's root (as the README does), the file names the scenario
    // schema for editors, like every file in `scenarios/`.
    if let Some(line) = crate::schema::scenario_modeline_for(dir, Path::new(".")) {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(&format!(
        "# Found by `switchback explore` (case seed {}) and shrunk.\n# Replay: cargo run --release -- run {}\n# What failed:\n",
        scenario.seed,
        path.display()
    ));
    for f in failures.iter().take(20) {
        for line in f.lines() {
            text.push_str(&format!("#   {line}\n"));
        }
    }
    text.push_str(&serde_saphyr::to_string(scenario).map_err(std::io::Error::other)?);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Coverage seen across cases.
#[derive(Debug, Default)]
pub struct Coverage {
    pub fault_kinds: BTreeSet<&'static str>,
    /// Provider dialects and answer shapes (tool calls, choices, reasoning...) generated.
    pub dialects: BTreeSet<&'static str>,
    pub answers: BTreeSet<&'static str>,
    pub classes: BTreeSet<&'static str>,
    pub sequences: BTreeSet<String>,
    pub cases: u64,
    /// Cases by what they exercised (see [`Shape`]).
    pub shapes: Shape,
}

/// How many cases exercised each concurrency shape (counted from what the runs did, not
/// from what the generator meant to do).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Two or more requests in flight in the gateway at the same time.
    pub concurrent: u64,
    /// Requests from two or more keys.
    pub several_keys: u64,
    /// One deployment attempted by two or more requests.
    pub shared_deployment: u64,
    /// A gateway↔provider latency range wider than one value.
    pub latency_range: u64,
    /// A request admitted while a deployment was cooling.
    pub admitted_while_cooling: u64,
    /// A request admitted after a cooldown had ended.
    pub admitted_after_cooldown: u64,
    /// A deployment cooled while other requests were in flight.
    pub cooled_mid_flight: u64,
    /// A request admitted after a config reload.
    pub admitted_after_reload: u64,
    /// A config reload while a request was in flight.
    pub reloaded_mid_flight: u64,
    /// A request that asked for the usage chunk (`stream_options.include_usage`) and was
    /// attempted more than once, where usage is summed across attempts.
    pub usage_over_attempts: u64,
}

impl Shape {
    /// What one run exercised.
    pub fn of(scenario: &Scenario, run: &ModeRun) -> Shape {
        use std::collections::BTreeMap;
        let mut spans: BTreeMap<u64, (u128, u128)> = BTreeMap::new();
        let mut keys = BTreeSet::new();
        let mut admissions = Vec::new();
        let mut cooldowns = Vec::new();
        let mut users: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        let mut attempts: BTreeMap<u64, u32> = BTreeMap::new();
        for r in &run.records {
            let at = r.at.as_millis();
            let span = spans.entry(r.request).or_insert((at, at));
            span.1 = span.1.max(at);
            match &r.event {
                Event::Admitted { key, .. } => {
                    keys.insert(key.clone());
                    admissions.push(at);
                }
                Event::DeploymentCooled { duration, .. } => {
                    cooldowns.push((at, at + duration.as_millis()));
                }
                Event::AttemptStarted { deployment, .. } => {
                    users.entry(deployment.0).or_default().insert(r.request);
                    *attempts.entry(r.request).or_default() += 1;
                }
                _ => {}
            }
        }
        let spans: Vec<(u128, u128)> = spans.into_values().collect();
        let overlapping = |t: u128| spans.iter().filter(|(a, b)| *a <= t && t <= *b).count();
        let flag = |b: bool| u64::from(b);
        let [lo, hi] = scenario.network.latency_ms;
        let reloads: Vec<u128> = scenario
            .reloads
            .iter()
            .map(|r| u128::from(r.at_ms))
            .collect();
        Shape {
            concurrent: flag(spans.iter().any(|(a, _)| overlapping(*a) >= 2)),
            several_keys: flag(keys.len() >= 2),
            shared_deployment: flag(users.values().any(|r| r.len() >= 2)),
            latency_range: flag(hi > lo),
            admitted_while_cooling: flag(
                admissions
                    .iter()
                    .any(|t| cooldowns.iter().any(|(a, b)| a <= t && t < b)),
            ),
            admitted_after_cooldown: flag(
                admissions
                    .iter()
                    .any(|t| cooldowns.iter().any(|(_, b)| b <= t)),
            ),
            cooled_mid_flight: flag(cooldowns.iter().any(|(a, _)| overlapping(*a) >= 2)),
            admitted_after_reload: flag(admissions.iter().any(|t| reloads.iter().any(|r| r <= t))),
            reloaded_mid_flight: flag(reloads.iter().any(|r| overlapping(*r) >= 1)),
            // Which gateway request is which spec is the oracle's to tell; a case whose
            // every request asks for usage is counted exactly, a mixed one when any did.
            usage_over_attempts: flag(
                scenario.requests.iter().any(RequestSpec::asks_usage)
                    && attempts.values().any(|n| *n >= 2),
            ),
        }
    }

    /// Adds one case's flags to the counts.
    fn add(&mut self, other: Shape) {
        self.concurrent += other.concurrent;
        self.several_keys += other.several_keys;
        self.shared_deployment += other.shared_deployment;
        self.latency_range += other.latency_range;
        self.admitted_while_cooling += other.admitted_while_cooling;
        self.admitted_after_cooldown += other.admitted_after_cooldown;
        self.cooled_mid_flight += other.cooled_mid_flight;
        self.admitted_after_reload += other.admitted_after_reload;
        self.reloaded_mid_flight += other.reloaded_mid_flight;
        self.usage_over_attempts += other.usage_over_attempts;
    }

    fn or(self, other: Shape) -> Shape {
        let f = |a: u64, b: u64| a.max(b);
        Shape {
            concurrent: f(self.concurrent, other.concurrent),
            several_keys: f(self.several_keys, other.several_keys),
            shared_deployment: f(self.shared_deployment, other.shared_deployment),
            latency_range: f(self.latency_range, other.latency_range),
            admitted_while_cooling: f(self.admitted_while_cooling, other.admitted_while_cooling),
            admitted_after_cooldown: f(self.admitted_after_cooldown, other.admitted_after_cooldown),
            cooled_mid_flight: f(self.cooled_mid_flight, other.cooled_mid_flight),
            admitted_after_reload: f(self.admitted_after_reload, other.admitted_after_reload),
            reloaded_mid_flight: f(self.reloaded_mid_flight, other.reloaded_mid_flight),
            usage_over_attempts: f(self.usage_over_attempts, other.usage_over_attempts),
        }
    }

    /// `name N` pairs, for the report.
    pub fn lines(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("concurrent requests", self.concurrent),
            ("several keys", self.several_keys),
            ("a deployment shared by requests", self.shared_deployment),
            ("a latency range", self.latency_range),
            (
                "admitted while a deployment cooled",
                self.admitted_while_cooling,
            ),
            (
                "admitted after a cooldown ended",
                self.admitted_after_cooldown,
            ),
            (
                "cooled with other requests in flight",
                self.cooled_mid_flight,
            ),
            ("admitted after a config reload", self.admitted_after_reload),
            ("config reloaded mid-flight", self.reloaded_mid_flight),
            (
                "usage asked over several attempts",
                self.usage_over_attempts,
            ),
        ]
    }
}

impl Coverage {
    pub fn add(&mut self, scenario: &Scenario, runs: &[ModeRun]) {
        self.cases += 1;
        for p in &scenario.providers {
            self.dialects.insert(p.dialect.as_str());
            if p.content_filter == ContentFilterMode::Async {
                self.dialects.insert("azure (async filter)");
            }
            for s in std::iter::once(&p.default).chain(&p.calls) {
                if let Some(f) = &s.fault {
                    self.fault_kinds.insert(f.kind.as_str());
                }
                for (present, name) in [
                    (!s.tool_calls.is_empty(), "tool_calls"),
                    (!s.more_choices.is_empty(), "two_choices"),
                    (s.reasoning.is_some(), "reasoning"),
                    (s.refusal.is_some(), "refusal"),
                    (s.audio.is_some(), "audio"),
                    (s.logprobs, "logprobs"),
                ] {
                    if present {
                        self.answers.insert(name);
                    }
                }
            }
        }
        let mut shape = Shape::default();
        for run in runs {
            shape = shape.or(Shape::of(scenario, run));
            for r in &run.records {
                if let Event::AttemptFailed { class, .. } = &r.event {
                    self.classes.insert(class.as_str());
                }
            }
            for story in oracle::stories(run) {
                self.sequences
                    .insert(story.attempt_lines(story.catalog).join(" > "));
            }
        }
        self.shapes.add(shape);
    }
}
