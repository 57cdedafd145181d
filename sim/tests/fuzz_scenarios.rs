//! Panic and hang hunt over scenario files: a broken or hostile scenario must fail to load
//! with an error that names the file, or run to a report, never panic, hang or abort the
//! harness (QA write these files without touching Rust).

use std::path::Path;

use proptest::prelude::*;
use switchback::yaml::MAX_YAML_DEPTH;
use switchback_sim::run::run_scenario;
use switchback_sim::scenario::{MAX_DURATION_MS, Scenario, ScenarioError};

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

const SPLICES: &[&str] = &[
    "duration_ms: 18446744073709551615",
    "duration_ms: 0",
    "tick_ms: 18446744073709551615",
    "seed: -1",
    "seed: 1e400",
    "x: &a [1, *a]",
    "x: *nope",
    "  - {key: sk-a, model: a, repeat: 4294967295, concurrency: 4294967295}",
    "  - {key: sk-a, model: a, at_ms: 18446744073709551615}",
    "  - {key: sk-a, model: a, timeout_ms: 0}",
    "  - {key: sk-a, model: a, body: {x: [[[[[[[[1]]]]]]]]}}",
    "  - {host: pa, default: {text: \"é😀\", chunk_size: 0}}",
    "  - {host: pc, default: {chunks: []}}",
    "reloads: [{at_ms: 18446744073709551615, gateway: {model_list: []}}]",
    "\u{feff}",
    "---",
    "é😀: [",
    "\t",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// A scenario with a line spliced in, or cut short, loads or fails with an error that
    /// names the file.
    #[test]
    fn mutated_scenarios_load_or_fail_cleanly(
        line in any::<prop::sample::Index>(),
        splice in proptest::sample::select(SPLICES),
        cut in any::<prop::sample::Index>(),
    ) {
        let base = scenario("{}", "ttfb_ms: 1", "timeout_ms: 1000");
        let lines: Vec<&str> = base.lines().collect();
        let at = line.index(lines.len() + 1);
        let mut spliced: Vec<&str> = lines[..at].to_vec();
        spliced.push(splice);
        spliced.extend_from_slice(&lines[at..]);
        let spliced = spliced.join("\n");
        let mut cut_text = spliced.clone();
        let mut n = cut.index(cut_text.len() + 1);
        while !cut_text.is_char_boundary(n) {
            n -= 1;
        }
        cut_text.truncate(n);
        for text in [spliced, cut_text] {
            if let Err(e) = Scenario::load("s.yaml", &text) {
                let shown = e.to_string();
                prop_assert!(shown.contains("s.yaml"), "the error names the file: {shown}");
            }
        }
    }
}

/// Loads `text` and, if it loads, runs it; either must end without a panic.
fn load_and_run(name: &str, text: &str) {
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
}

/// Milliseconds no test means, in every field that holds a length of time: refused at
/// load, naming the field and the limit (`latency_ms` is in `fuzz_scenario_latency.rs`:
/// before the check, it aborted the binary).
#[test]
fn huge_milliseconds_are_refused_naming_the_field() {
    let max = u64::MAX;
    let cases = [
        (
            format!("{{client_latency_ms: {max}}}"),
            "ttfb_ms: 1".to_string(),
            "timeout_ms: 1000".to_string(),
            "network.client_latency_ms",
        ),
        (
            "{}".into(),
            format!("ttfb_ms: {max}"),
            "timeout_ms: 1000".into(),
            "providers[0].default.ttfb_ms",
        ),
        (
            "{}".into(),
            format!("delay_ms: {max}, chunk_size: 1"),
            "timeout_ms: 1000".into(),
            "providers[0].default.delay_ms",
        ),
        (
            "{}".into(),
            format!("delays_ms: [1, {max}], chunk_size: 1"),
            "timeout_ms: 1000".into(),
            "providers[0].default.delays_ms[1]",
        ),
        (
            "{}".into(),
            "ttfb_ms: 1".into(),
            format!("timeout_ms: {max}"),
            "requests[0].timeout_ms",
        ),
        (
            "{}".into(),
            "ttfb_ms: 1".into(),
            format!("disconnect: {{after_ms: {max}}}"),
            "requests[0].disconnect.after_ms",
        ),
    ];
    for (net, provider, request, field) in cases {
        let text = scenario(&net, &provider, &request);
        let Err(e) = Scenario::load("s.yaml", &text) else {
            panic!("{field} = u64::MAX was accepted");
        };
        assert_eq!(e.path, field, "{e}");
        assert!(e.line > 0, "{field}: no place: {e}");
        assert!(
            e.message
                .contains(&format!("over MAX_DURATION_MS = {MAX_DURATION_MS}")),
            "{e}"
        );
    }
}

/// At the limit every such field loads and runs to a report.
#[test]
fn milliseconds_at_the_limit_run_to_a_report() {
    let limit = MAX_DURATION_MS;
    load_and_run(
        "at the limit",
        &scenario(
            &format!("{{client_latency_ms: {limit}}}"),
            &format!("ttfb_ms: {limit}, delay_ms: {limit}"),
            &format!("timeout_ms: {limit}"),
        ),
    );
}

#[test]
fn deep_request_body_fails_cleanly() {
    let deep = format!("body: {{x: {}1{}}}", "[".repeat(60), "]".repeat(60));
    load_and_run("deep body", &scenario("{}", "ttfb_ms: 1", &deep));
}

/// Loads `text` on a thread with the stack of a test thread or a tokio worker (2 MiB).
fn load_on_worker_stack(text: String) -> Result<Scenario, ScenarioError> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || Scenario::load("s.yaml", &text))
        .expect("spawn")
        .join()
        .expect("the load does not panic")
}

/// A request body of `maps` nested maps under `x`: the document nests `4 + maps` deep (the
/// root, `requests`, its item, `body`).
fn deep_map_body(maps: usize) -> String {
    let body = format!("body: {{x: {}1{}}}", "{a: ".repeat(maps), "}".repeat(maps));
    scenario("{}", "ttfb_ms: 1", &body)
}

/// A request body of nested maps loads at the YAML depth limit and is refused past it,
/// on a 2 MiB stack (serde-saphyr's own budget, 64, overflowed it).
#[test]
fn deep_map_request_body_is_loaded_to_the_limit_and_refused_past_it() {
    let at_limit = load_on_worker_stack(deep_map_body(MAX_YAML_DEPTH - 4));
    assert!(at_limit.is_ok(), "{at_limit:?}");
    let e = load_on_worker_stack(deep_map_body(MAX_YAML_DEPTH - 3)).expect_err("too deep");
    assert!(e.message.contains("nested too deeply"), "{e}");
    load_and_run("deep map body", &deep_map_body(60));
}

// A latency range that reached u64::MAX overflowed `world/link.rs`'s draw
// (`min + x % (max - min + 1)`: in debug an add overflow, in release a remainder by zero),
// in a thread whose unwinding then aborted the whole harness.

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
