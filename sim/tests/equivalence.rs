//! The promise, checked by machine: for generated configs, key overrides, fault scripts and
//! network faults, a streaming and a non-streaming request take the same decisions, and
//! every invariant holds.
//!
//! Runs a modest, fixed set of cases (seeded, deterministic); `PROPTEST_CASES=n` runs more.
//! `switchback explore` runs thousands in release. On a failure the case is shrunk and
//! written as a scenario file under `target/explore-failures/`, and the message gives the
//! `switchback run` command that replays it.
//!
//! Every divergence fails. (Before both modes sent the same continuation, issue 12 item 0,
//! cases whose modes asked an attempt differently were counted instead; now such a case
//! is an engine bug like any other, and the message says so if it ever appears.)

use std::sync::Arc;

use switchback_sim::explore;
use switchback_sim::world::{GatewayUnderTest, Switchback};

/// Cases `cargo test` runs (in debug: a few seconds).
const DEFAULT_CASES: u64 = 96;
/// Where the cases start: fixed, so `cargo test` is deterministic.
const FIRST_SEED: u64 = 0x5eed;

fn cases() -> u64 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

#[test]
fn streaming_and_non_streaming_take_the_same_decisions() {
    let gateway: Arc<dyn GatewayUnderTest> = Arc::new(Switchback);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target/explore-failures");
    for seed in FIRST_SEED..FIRST_SEED + cases() {
        let scenario = explore::case(seed);
        scenario.check().unwrap_or_else(|(p, m)| {
            panic!(
                "case {seed}: the generator made an invalid scenario: {}: {m}",
                switchback::yaml::render_path(&p)
            )
        });
        let verdict = explore::judge(&scenario, &gateway);
        if verdict.failures.is_empty() {
            continue;
        }
        let asked = explore::asked_differently(&verdict.runs).map_or_else(String::new, |why| {
            format!("\nthe modes asked differently: {why}")
        });
        let (small, failures) = explore::shrink(seed, &gateway);
        let saved = explore::save(&out, &small, &failures);
        panic!(
            "case {seed} failed:\n  {}{asked}\nshrunk: {}\nreplay: cargo run --release -- run {}",
            verdict.failures.join("\n  "),
            failures.join("\n  "),
            saved
                .as_ref()
                .map_or_else(|e| format!("(not saved: {e})"), |p| p.display().to_string())
        );
    }
}

/// The same seed gives the same case, field for field (replay depends on it).
#[test]
fn a_seed_always_generates_the_same_case() {
    for seed in [0, 1, 77, 123_456] {
        assert_eq!(explore::case(seed), explore::case(seed));
    }
    assert_ne!(explore::case(1), explore::case(2));
}

/// Every generated case is a valid scenario file: it survives a round trip through YAML.
#[test]
fn generated_cases_are_valid_scenario_files() {
    for seed in 0..32 {
        let scenario = explore::case(seed);
        let text = serde_saphyr::to_string(&scenario).expect("serialisable");
        let back = switchback_sim::scenario::Scenario::load("generated.yaml", &text)
            .unwrap_or_else(|e| panic!("case {seed} does not load back: {e}\n{text}"));
        assert_eq!(back, scenario, "case {seed} changes in a YAML round trip");
    }
}
