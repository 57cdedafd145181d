//! A config file whose mistake sits under nested maps must get an error, not a stack
//! overflow. In a file of its own: a stack overflow aborts the whole test binary, and the
//! other fuzz tests (`fuzz_inputs.rs`) must still report.

use std::time::Duration;

use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;

fn load_hostile(name: &str, text: &str) {
    let started = std::time::Instant::now();
    let result = GatewayConfig::load("h.yaml", text);
    let took = started.elapsed();
    if let Ok(config) = &result {
        let _ = Catalog::new(config);
    }
    assert!(
        took < Duration::from_secs(20),
        "{name}: took {took:?} to load"
    );
}

/// A mistake under nested maps within serde-saphyr's depth budget (64): the error path
/// (`yaml::locate`, and the `Node` parse in `yaml::from_str`) recurses once per level with
/// frames so large that 50 levels overflow a 2 MiB stack in a debug build, the stack of a
/// test thread and of a tokio worker (where `POST /admin/reload` parses the file). A stack
/// overflow aborts the process: no error, no message.
#[test]
fn config_deep_map_fails_cleanly() {
    let text = format!(
        "model_list:\n  - model_name: a\n    litellm_params: {{model: openai/a, api_base: \"http://pa/v1\", extra: {}1{}}}\n",
        "{a: ".repeat(60),
        "}".repeat(60)
    );
    load_hostile("deep map", &text);
}
