//! JSON Schemas of the files people write by hand: scenario files and the gateway config.
//!
//! Owns: generating both schemas from the Rust types the loaders deserialize (with
//! `schemars`, so a field's doc comment is its description in an editor), the names of the
//! committed files under `schemas/`, and the `# yaml-language-server: $schema=...` comment
//! that points a file at its schema. Does not own validation: the loaders stay the
//! authority (a schema cannot say "this group must exist"), the schema only catches what the
//! shape of a file gets wrong, as it is typed.

use std::path::{Component, Path, PathBuf};

use schemars::generate::SchemaSettings;
use switchback::config::GatewayConfig;

use crate::scenario::Scenario;

/// The folder, at the repository's root, the schemas are committed in.
pub const SCHEMA_DIR: &str = "schemas";

/// The files people write that have a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    Scenario,
    GatewayConfig,
}

impl Document {
    pub const ALL: [Document; 2] = [Document::Scenario, Document::GatewayConfig];

    /// The schema's file name under [`SCHEMA_DIR`].
    pub fn file_name(self) -> &'static str {
        match self {
            Document::Scenario => "scenario.schema.json",
            Document::GatewayConfig => "gateway-config.schema.json",
        }
    }

    /// The schema, as pretty JSON ending in a newline: what the committed file holds.
    pub fn schema_json(self) -> String {
        // Draft 7: what the YAML language server (and VS Code's YAML extension) validates
        // with; it only partly supports the newer drafts.
        let generator = SchemaSettings::draft07().into_generator();
        let mut schema = match self {
            Document::Scenario => generator.into_root_schema_for::<Scenario>(),
            Document::GatewayConfig => generator.into_root_schema_for::<GatewayConfig>(),
        };
        let title = match self {
            Document::Scenario => "Switchback scenario file",
            Document::GatewayConfig => "Switchback gateway config",
        };
        schema.insert("title".into(), title.into());
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
        text.push('\n');
        text
    }
}

/// Writes every schema into `dir`; returns the files written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for doc in Document::ALL {
        let path = dir.join(doc.file_name());
        std::fs::write(&path, doc.schema_json())?;
        written.push(path);
    }
    Ok(written)
}

/// The first line of a file that names its schema for the YAML language server (VS Code's
/// YAML extension and any editor using the server): `schema` relative to the file's folder.
pub fn modeline(relative_schema: &str) -> String {
    format!("# yaml-language-server: $schema={relative_schema}")
}

/// `target` relative to the folder `from` (both taken as absolute, compared lexically):
/// what a `$schema=` comment in a file in `from` says to reach `target`.
pub fn relative_path(from: &Path, target: &Path) -> Option<String> {
    let from = normalize(&std::path::absolute(from).ok()?);
    let target = normalize(&std::path::absolute(target).ok()?);
    let common = from
        .iter()
        .zip(target.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<String> = vec!["..".to_string(); from.len() - common];
    parts.extend(target[common..].iter().cloned());
    Some(parts.join("/"))
}

/// Path components without `.` and with `..` applied.
fn normalize(path: &Path) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    parts
}

/// The modeline for a scenario file written into `dir` by a tool run from `root` (the
/// repository's root, where `schemas/` is): `None` when `root` has no scenario schema, so a
/// tool run elsewhere never writes a comment naming a file that is not there.
pub fn scenario_modeline_for(dir: &Path, root: &Path) -> Option<String> {
    let schema = root.join(SCHEMA_DIR).join(Document::Scenario.file_name());
    if !schema.is_file() {
        return None;
    }
    relative_path(dir, &schema).map(|r| modeline(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_climbs_to_the_common_folder() {
        assert_eq!(
            relative_path(
                Path::new("/repo/scenarios/midstream"),
                Path::new("/repo/schemas/scenario.schema.json")
            )
            .as_deref(),
            Some("../../schemas/scenario.schema.json")
        );
        assert_eq!(
            relative_path(
                Path::new("/repo/./out/../x"),
                Path::new("/repo/schemas/a.json")
            )
            .as_deref(),
            Some("../schemas/a.json")
        );
    }

    #[test]
    fn a_written_scenario_names_the_schema_only_where_there_is_one() {
        let root = std::env::temp_dir().join(format!("sb-schema-{}", std::process::id()));
        let out = root.join("explore-failures");
        std::fs::create_dir_all(&out).unwrap();
        assert_eq!(scenario_modeline_for(&out, &root), None);
        write_all(&root.join(SCHEMA_DIR)).unwrap();
        assert_eq!(
            scenario_modeline_for(&out, &root).as_deref(),
            Some("# yaml-language-server: $schema=../schemas/scenario.schema.json")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn field_docs_become_descriptions() {
        let schema: serde_json::Value =
            serde_json::from_str(&Document::Scenario.schema_json()).unwrap();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        let fault = &schema["definitions"]["Fault"]["properties"]["after_chunks"];
        assert!(
            fault["description"]
                .as_str()
                .is_some_and(|d| d.contains("Chunks sent before the fault")),
            "{fault}"
        );
    }
}
