//! A config file whose mistake sits under nested maps must get an error, not a stack
//! overflow. In a file of its own: a stack overflow aborts the whole test binary, and the
//! other fuzz tests (`fuzz_inputs.rs`) must still report.
//!
//! Deserialising recurses once per level of nesting, with large frames in a debug build:
//! before `yaml::MAX_YAML_DEPTH`, serde-saphyr's own budget (64) let through documents whose
//! error path (`yaml::locate`, and the `Node` parse in `yaml::from_str`) overflowed a 2 MiB
//! stack under 50 levels. A stack overflow aborts the process: no error, no message.

use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::yaml::{MAX_YAML_DEPTH, YamlError};

/// The stack of a test thread and of a tokio thread (`POST /admin/reload` parses the file on
/// one of its blocking threads): what a parse must fit in.
const WORKER_STACK: usize = 2 << 20;

/// Loads `text` as a config on a thread with [`WORKER_STACK`], and builds a catalog from it
/// if it loads: the load's first problem, if any.
fn load_on_worker_stack(text: String) -> Option<YamlError> {
    std::thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let result = GatewayConfig::load("h.yaml", &text);
            if let Ok(config) = &result {
                let _ = Catalog::new(config);
            }
            result.err().map(|e| e.problems[0].clone())
        })
        .expect("spawn")
        .join()
        .expect("the load does not panic")
}

/// A config whose deployment has an unknown field `extra` holding `maps` nested maps. The
/// document then nests `4 + maps` deep: the root, `model_list`, its item, `litellm_params`.
fn config_with_extra_maps(maps: usize) -> String {
    format!(
        "model_list:\n  - model_name: a\n    litellm_params: {{model: openai/a, api_base: \"http://pa/v1\", extra: {}1{}}}\n",
        "{a: ".repeat(maps),
        "}".repeat(maps)
    )
}

/// At the limit the mistake is reported for what it is, through the whole error path
/// (the `Node` parse, `locate`), on a worker's stack.
#[test]
fn a_mistake_at_the_depth_limit_is_reported_on_a_workers_stack() {
    let e = load_on_worker_stack(config_with_extra_maps(MAX_YAML_DEPTH - 4))
        .expect("`extra` is not a field");
    assert!(e.message.contains("unknown field `extra`"), "{e}");
    assert_eq!(e.path, "model_list[0].litellm_params.extra", "{e}");
}

/// One level past the limit: refused, saying so and naming the limit, not a bracket.
#[test]
fn a_document_past_the_depth_limit_is_refused_as_too_deep() {
    let e =
        load_on_worker_stack(config_with_extra_maps(MAX_YAML_DEPTH - 3)).expect("too deep to load");
    assert!(
        e.message.contains("nested too deeply")
            && e.message
                .contains(&format!("MAX_YAML_DEPTH = {MAX_YAML_DEPTH}")),
        "{e}"
    );
    assert!(!e.message.contains("unclosed"), "{e}");
    assert!(e.to_string().starts_with("h.yaml"), "{e}");
}

/// The same past the limit in block style and in flow sequences, and far past it.
#[test]
fn every_kind_of_deep_document_is_refused_as_too_deep() {
    let mut block = String::from("model_list:\n");
    for i in 0..MAX_YAML_DEPTH {
        block.push_str(&" ".repeat(2 * i + 2));
        block.push_str("- \n");
    }
    for text in [
        block,
        format!("model_list: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        config_with_extra_maps(60),
    ] {
        let e = load_on_worker_stack(text).expect("too deep to load");
        assert!(e.message.contains("nested too deeply"), "{e}");
    }
}
