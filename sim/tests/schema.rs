//! The JSON Schemas in `schemas/`: committed as the types generate them, named by every
//! scenario file's first line, and accepting every scenario the corpus holds (checked with a
//! real JSON Schema validator). The broken-file corpus's side is in `broken_files.rs`.

use std::path::{Path, PathBuf};

use switchback_sim::schema::{self, Document};

const REGENERATE: &str = "cargo run -- schema --write schemas";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Scenario files people open in an editor: the corpus, and the kept same-instant cases.
/// (`sim/tests/broken/` is left out on purpose: those files are wrong by design, and a
/// first line added there would move every line and column its table pins.)
fn scenario_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["scenarios", "sim/tests/same_instant"] {
        files.extend(switchback_sim::scenario::find_files(&root().join(dir)).expect("list"));
    }
    files.sort();
    assert!(files.len() > 100, "only {} scenario files", files.len());
    files
}

fn validator(doc: Document) -> jsonschema::Validator {
    let path = root().join(schema::SCHEMA_DIR).join(doc.file_name());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; write it with `{REGENERATE}`", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&value).expect("a valid JSON Schema")
}

#[test]
fn committed_schemas_are_what_the_types_generate() {
    for doc in Document::ALL {
        let path = root().join(schema::SCHEMA_DIR).join(doc.file_name());
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == doc.schema_json(),
            "{} differs from what the Rust types generate (a field, its doc comment or its \
             serde attributes changed): regenerate it with `{REGENERATE}` and commit it",
            path.display()
        );
    }
}

#[test]
fn every_scenario_file_names_its_schema_on_its_first_line() {
    let schema = root()
        .join(schema::SCHEMA_DIR)
        .join(Document::Scenario.file_name());
    let mut wrong = Vec::new();
    for file in scenario_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        let rel = schema::relative_path(file.parent().expect("a folder"), &schema).expect("path");
        let want = schema::modeline(&rel);
        if text.lines().next() != Some(want.as_str()) {
            wrong.push(format!("{}: first line must be `{want}`", file.display()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_schema_accepts_every_scenario_file() {
    let validator = validator(Document::Scenario);
    let mut wrong = Vec::new();
    for file in scenario_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        let value: serde_json::Value = match serde_saphyr::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                wrong.push(format!("{}: not YAML: {e}", file.display()));
                continue;
            }
        };
        for e in validator.iter_errors(&value) {
            wrong.push(format!(
                "{}: {} (at {})",
                file.display(),
                e,
                e.instance_path()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_config_schema_accepts_a_valid_config_and_rejects_a_typo() {
    let validator = validator(Document::GatewayConfig);
    let file = root().join("sim/tests/configs/valid.yaml");
    let text = std::fs::read_to_string(&file).expect("read");
    let value: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    assert!(
        text.starts_with(
            "# yaml-language-server: $schema=../../../schemas/gateway-config.schema.json\n"
        ),
        "{} names its schema",
        file.display()
    );

    let mut typo = value.clone();
    typo["router_settings"]["num_retires"] = 1.into();
    assert!(!validator.is_valid(&typo), "an unknown router setting");
    let mut two_groups = value;
    two_groups["router_settings"]["fallbacks"] = serde_json::json!([{"a": ["b"], "c": ["d"]}]);
    assert!(
        !validator.is_valid(&two_groups),
        "two groups in one fallback entry"
    );
}
