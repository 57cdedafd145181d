//! A scenario whose `network.latency_ms` reaches u64::MAX: `world/link.rs` draws a latency
//! as `min + x % (max - min + 1)`, which overflows (debug: "attempt to add with overflow";
//! release: a remainder by zero), in a thread whose unwinding then aborts the process. In a
//! file of its own so that the abort does not hide `fuzz_scenarios.rs`.
//!
//! Panic and hang hunt over scenario files: a broken or hostile scenario must fail to load
//! with an error that names the file, or run to a report, never panic, hang or abort the
//! harness (QA write these files without touching Rust).

use std::path::Path;
use std::time::{Duration, Instant};

use switchback_sim::run::run_scenario;
use switchback_sim::scenario::Scenario;

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

/// Loads `text` and, if it loads, runs it; either must end (in bounded wall time) without
/// a panic.
fn load_and_run(name: &str, text: &str) {
    let started = Instant::now();
    match Scenario::load("s.yaml", text) {
        Err(e) => {
            eprintln!("{name}: refused: {e}");
            assert!(e.to_string().contains("s.yaml"), "{name}: {e}");
        }
        Ok(s) => {
            let report = run_scenario(Path::new("s.yaml"), &s);
            eprintln!("{name}: ran: {:?}", report.failures);
        }
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "{name}: took {took:?} to load and run"
    );
}

/// A latency range that reaches u64::MAX is refused at load (or runs to a report).
#[test]
fn huge_latency_range_fails_cleanly() {
    load_and_run(
        "latency_ms",
        &scenario(
            "{latency_ms: [0, 18446744073709551615]}",
            "ttfb_ms: 1",
            "timeout_ms: 1000",
        ),
    );
}
