//! Exploration: random scenarios, run in both modes, judged, shrunk to a scenario file.
//!
//! Owns: the proptest strategies for whole scenarios (gateway configs of 1–5 groups with
//! 1–2 deployments each, fallback lists at every precedence level, keys and teams with
//! allow-lists, per-call provider scripts with faults at random chunk offsets, network
//! faults, request bodies with and without `mock_testing_*` flags), swarm-style: each case
//! first picks which fault kinds are enabled, then draws faults only from those. Also: the
//! property (both modes, every invariant, equivalence, and wire fidelity wherever an answer
//! was passed through), generating case `seed` exactly (`replay`), shrinking a failing case,
//! and writing it out as a scenario file. The providers' dialects and answer shapes come
//! from [`shapes`].

pub mod shapes;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;
use switchback::config::{
    Deployment, FallbackEntry, GatewayConfig, Key, LitellmParams, MidStreamPolicy, ModelInfo,
    RetryPolicy, RouterSettings, Team,
};
use switchback::limits::Limits;
use switchback::trace::Event;

use crate::oracle;
use crate::scenario::{
    Expect, Fault, FaultKind, Flavour, Mode, NetFault, Provider, RequestSpec, Scenario, Script,
};
use crate::world::{self, GatewayUnderTest, ModeRun};

/// The answer every fake gives, so a continuation on any deployment completes it.
pub const TEXT: &str = "alpha beta gamma delta epsilon";
/// Simulated milliseconds per step in generated worlds.
pub const TICK_MS: u64 = 5;
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
}

fn swarm() -> impl Strategy<Value = Swarm> {
    (
        proptest::sample::subsequence(FaultKind::ALL.to_vec(), 0..=FaultKind::ALL.len()),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.5),
    )
        .prop_map(|(kinds, mocks, network, request_settings, shapes)| Swarm {
            kinds,
            mocks,
            network,
            request_settings,
            shapes,
        })
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
        proptest::option::of(proptest::sample::select(vec![0.2, 0.5, 1.0, 2.0, 5.0])),
        proptest::sample::select(vec![
            Flavour::Openai,
            Flavour::Openrouter,
            Flavour::Vertex,
            Flavour::Anthropic,
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
                retry_after: if status == Some(429) {
                    retry_after
                } else {
                    None
                },
                flavour,
                code: code.map(str::to_string),
                message: None,
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

fn provider(host: String, model: String, kinds: Vec<FaultKind>) -> impl Strategy<Value = Provider> {
    (
        script(kinds.clone(), 0.15),
        proptest::collection::vec((1u32..=4, script(kinds, 0.9)), 0..=3),
    )
        .prop_map(move |(default, calls)| Provider {
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
                .collect(),
            dialect: Default::default(),
            tool_call_index: None,
        })
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

fn level_settings(n: usize, gateway: bool) -> impl Strategy<Value = RouterSettings> {
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
            proptest::sample::select(vec![0.0, 1.0, 30.0]),
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

/// A whole generated scenario (its name carries nothing; `case` sets it).
pub fn scenario() -> impl Strategy<Value = Scenario> {
    (
        swarm(),
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
                    )
                })
                .collect();
            let orders = proptest::collection::vec(0u32..=1, hosts.len());
            let shapes = proptest::collection::vec(shapes::shape(), hosts.len());
            let two_requests = proptest::bool::weighted(0.3);
            let net = if swarm.network {
                proptest::option::weighted(
                    0.7,
                    (
                        proptest::sample::select(hosts.clone()),
                        0u64..=200,
                        100u64..=2000,
                    ),
                )
                .boxed()
            } else {
                Just(None).boxed()
            };
            (
                Just(swarm.clone()),
                Just(hosts),
                providers,
                orders,
                level_settings(n, true),
                proptest::option::weighted(0.5, (level_settings(n, false), allow_list(n))),
                (level_settings(n, false), allow_list(n)),
                (
                    request(n, &swarm, 0),
                    request(n, &swarm, 2_000),
                    two_requests,
                ),
                net,
                shapes,
            )
                .prop_map(
                    move |(
                        swarm,
                        hosts,
                        providers,
                        orders,
                        gateway,
                        team,
                        (key_settings, key_models),
                        (r1, r2, two),
                        net,
                        shapes,
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
                        let key = Key {
                            key: "sk-explore".into(),
                            key_alias: Some("explore".into()),
                            team_id: teams.first().map(|t| t.team_id.clone()),
                            models: key_models,
                            router_settings: key_settings,
                        };
                        let mut network = crate::scenario::Network::default();
                        if let (Some(((g, d), at, length)), false) = (net, two) {
                            let link = ["gateway".to_string(), format!("h{g}x{d}")];
                            network.faults.push(NetFault {
                                at_ms: at,
                                partition: Some(link.clone()),
                                ..NetFault::default()
                            });
                            network.faults.push(NetFault {
                                at_ms: at + length,
                                repair: Some(link),
                                ..NetFault::default()
                            });
                        }
                        let mut requests = vec![r1];
                        if two {
                            requests.push(r2);
                        }
                        let kinds: Vec<&str> = swarm.kinds.iter().map(|k| k.as_str()).collect();
                        Scenario {
                            name: "generated".into(),
                            description: format!(
                                "swarm: kinds [{}], mocks {}, network {}, request settings {}, shapes {}",
                                kinds.join(", "),
                                swarm.mocks,
                                swarm.network,
                                swarm.request_settings,
                                swarm.shapes
                            ),
                            seed: 0,
                            duration_ms: 120_000,
                            tick_ms: TICK_MS,
                            gateway: GatewayConfig {
                                allow_anonymous: false,
                                model_list,
                                router_settings: gateway,
                                teams,
                                keys: vec![key],
                                limits: Limits {
                                    request_deadline: 20.0,
                                    max_retry_after: 3.0,
                                    ..Limits::default()
                                },
                            },
                            providers,
                            network,
                            requests,
                            sequential: false,
                            modes: Mode::both(),
                            expect: Expect::default(),
                        }
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
    TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        rng(seed),
    )
}

/// Generated case `seed`, with its value tree (for shrinking).
pub fn case_tree(seed: u64) -> impl ValueTree<Value = Scenario> {
    let mut runner = runner(seed);
    let tree = scenario()
        .new_tree(&mut runner)
        .expect("the strategy never rejects");
    // The name and the world's seed follow the case seed, without disturbing shrinking.
    Named { inner: tree, seed }
}

/// Generated case `seed`.
pub fn case(seed: u64) -> Scenario {
    case_tree(seed).current()
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
    let mut failures = Vec::new();
    let runs: Vec<ModeRun> = scenario
        .modes
        .iter()
        .filter_map(
            |mode| match world::run_with(scenario, *mode, gateway.clone()) {
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
    let mut tree = case_tree(seed);
    let mut best = tree.current();
    let mut best_failures = judge(&best, gateway).failures;
    assert!(
        !best_failures.is_empty(),
        "shrink is only called on a failing case"
    );
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
        let failures = judge(&candidate, gateway).failures;
        fails_now = !failures.is_empty();
        if fails_now {
            best = candidate;
            best_failures = failures;
        }
    }
    (best, best_failures)
}

/// Writes a scenario file for a (shrunk) failing case; returns its path.
pub fn save(dir: &Path, scenario: &Scenario, failures: &[String]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("explore_case_{}.yaml", scenario.seed));
    let mut text = String::new();
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
}

impl Coverage {
    pub fn add(&mut self, scenario: &Scenario, runs: &[ModeRun]) {
        self.cases += 1;
        for p in &scenario.providers {
            self.dialects.insert(p.dialect.as_str());
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
        for run in runs {
            for r in &run.records {
                if let Event::AttemptFailed { class, .. } = &r.event {
                    self.classes.insert(class.as_str());
                }
            }
            for story in oracle::stories(run) {
                self.sequences
                    .insert(story.attempt_lines(&run.catalog).join(" > "));
            }
        }
    }
}
