//! A scenario whose `network.latency_ms` reaches u64::MAX: `world/link.rs` drew a latency
//! as `min + x % (max - min + 1)`, which overflowed (debug: "attempt to add with overflow";
//! release: a remainder by zero), in a thread whose unwinding then aborted the process. In
//! a file of its own so that an abort does not hide `fuzz_scenarios.rs`.
//!
//! Panic and hang hunt over scenario files: a broken or hostile scenario must fail to load
//! with an error that names the file, or run to a report, never panic, hang or abort the
//! harness (QA write these files without touching Rust).

use std::path::Path;

use switchback_sim::run::run_scenario;
use switchback_sim::scenario::{MAX_DURATION_MS, Scenario};

/// A small valid scenario; `{NET}`, `{PROVIDER}` and `{REQUEST}` are replaced by the
/// values under test.
const BASE: &str = r#"name: fuzz base
seed: 1
duration_ms: 5000
gateway:
  model_list:
    - {model_name: a, litellm_params: {model: openai/m, api_base: "http://pa:8000/v1"}, model_info: {id: a1}}
    - {model_name: b, litellm_params: {model: openai/m, api_base: "http://pb:8000/v1"}, model_info: {id: b1}}
  router_settings:
    fallbacks: [{a: [b]}]
  keys:
    - {key: sk-a, models: [a, b]}
network: {NET}
providers:
  - {host: pa, default: {text: "hi", {PROVIDER}}}
  - {host: pb, default: {text: "yo"}}
requests:
  - {key: sk-a, model: a, {REQUEST}}
"#;

fn scenario(net: &str, provider: &str, request: &str) -> String {
    BASE.replace("{NET}", net)
        .replace("{PROVIDER}", provider)
        .replace("{REQUEST}", request)
}

/// A latency range that reaches u64::MAX is refused at load, naming the bound.
#[test]
fn huge_latency_range_is_refused() {
    let text = scenario(
        &format!("{{latency_ms: [0, {}]}}", u64::MAX),
        "ttfb_ms: 1",
        "timeout_ms: 1000",
    );
    let Err(e) = Scenario::load("s.yaml", &text) else {
        panic!("latency_ms up to u64::MAX was accepted");
    };
    assert_eq!(e.path, "network.latency_ms[1]", "{e}");
    assert!(e.message.contains("MAX_DURATION_MS"), "{e}");
}

/// The widest range a scenario may give runs to a report: the draws from it do not
/// overflow.
#[test]
fn the_widest_latency_range_runs_to_a_report() {
    let text = scenario(
        &format!("{{latency_ms: [0, {MAX_DURATION_MS}]}}"),
        "ttfb_ms: 1",
        "timeout_ms: 1000",
    );
    let s = Scenario::load("s.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let report = run_scenario(Path::new("s.yaml"), &s);
    eprintln!("ran: {:?}", report.failures);
}
