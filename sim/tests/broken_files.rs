//! The broken-file corpus: every file under `sim/tests/broken/` is a valid scenario (the
//! [`BASE`] below) with one mistake, and must fail to load with an error that names the
//! line, the column and the field of that mistake, says what is wrong, and suggests the right
//! name for a typo.
//!
//! [`CASES`] is the table. A file in `broken/` without a row fails
//! [`every_broken_file_has_a_row`], so the corpus cannot grow untested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switchback_sim::scenario::Scenario;

/// What loading one broken file must report.
struct Case {
    /// File name under `sim/tests/broken/`.
    file: &'static str,
    /// 1-based line and column of the offending token.
    line: u64,
    column: u64,
    /// Field path as `YamlError::path` renders it (empty for the document root).
    path: &'static str,
    /// A phrase the message must contain.
    phrase: &'static str,
    /// The "did you mean" suggestion: the right name for a typo, `None` otherwise.
    hint: Option<&'static str>,
    /// Which kind of mistake it is, for the JSON Schema (`schemas/scenario.schema.json`):
    /// an editor flags a `Schema` mistake as it is typed; only the loader sees the others.
    kind: Kind,
}

/// What catches a broken file before `check` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not YAML (or YAML that no JSON value represents, such as a duplicate key): no schema
    /// applies.
    Syntax,
    /// The shape is wrong (unknown field, wrong type, missing field, bad enum value, two
    /// groups in one fallback entry): the schema rejects the file.
    Schema,
    /// The shape is right and the meaning is wrong (an unknown group or host, a count of 0,
    /// a time after the end...): the schema accepts the file, the loader refuses it.
    Semantic,
}
use Kind::{Schema, Semantic, Syntax};

const fn row(
    file: &'static str,
    line: u64,
    column: u64,
    path: &'static str,
    phrase: &'static str,
    hint: Option<&'static str>,
    kind: Kind,
) -> Case {
    Case {
        file,
        line,
        column,
        path,
        phrase,
        hint,
        kind,
    }
}

/// Must pass: file → line, column, field path, message phrase, hint, kind of mistake.
#[rustfmt::skip]
const CASES: &[Case] = &[
    // YAML syntax. An unclosed `[` is reported where it opens, in the middle of the file
    // (the parser only notices at the next key's `:`, a line later) as at its end.
    row("syntax_unclosed_bracket.yaml",        22, 15, "gateway.router_settings.fallbacks[0].chat", "unclosed `[`: it is never closed (the parser gave up at line 23, column 7", None, Syntax),
    row("syntax_unclosed_bracket_at_end.yaml", 47,  8, "modes", "unclosed bracket '['", None, Syntax),
    // Unknown fields (typos), at every depth: the key itself, with a suggestion.
    row("unknown_top_level_field.yaml",        43,  1, "reqests", "unknown field `reqests`", Some("requests"), Schema),
    row("unknown_fault_field.yaml",            34,  9, "providers[0].default.fault.after_chunk", "unknown field `after_chunk`", Some("after_chunks"), Schema),
    row("gateway_setting_typo.yaml",           19,  5, "gateway.router_settings.num_retires", "unknown field `num_retires`", Some("num_retries"), Schema),
    // Wrong types and values: the value.
    row("wrong_type_seed.yaml",                 3,  7, "seed", "expected a whole number from 0 to 18446744073709551615, found `abc`", None, Schema),
    row("wrong_type_repeat.yaml",              46, 13, "requests[0].repeat", "expected a whole number from 0 to 4294967295, found `many`", None, Schema),
    row("bad_fault_kind.yaml",                 33, 15, "providers[0].default.fault.kind", "unknown variant `explode`", None, Schema),
    row("bad_mid_stream.yaml",                 20, 17, "gateway.router_settings.mid_stream", "unknown variant `contine`", Some("continue"), Schema),
    row("mode_typo.yaml",                      47, 21, "modes[1]", "unknown variant `streem`", Some("stream"), Schema),
    // Missing required fields: the mapping that lacks one (reported at its last key).
    row("missing_requests.yaml",               43,  1, "", "missing field `requests`", None, Schema),
    row("missing_request_model.yaml",          45,  5, "requests[0]", "missing field `model`", None, Schema),
    // Gateway config checks, pinned into the scenario's `gateway:` section.
    row("fallback_unknown_group.yaml",         22, 16, "gateway.router_settings.fallbacks[0].chat[0]", "fallback to unknown group `backpu`", None, Semantic),
    row("fallback_two_groups.yaml",            22,  9, "gateway.router_settings.fallbacks[0]", "a fallback entry names exactly one group", None, Schema),
    row("gateway_only_on_key.yaml",            26, 24, "gateway.keys[0].router_settings.cooldown_time", "`cooldown_time` is gateway-wide state", None, Semantic),
    // Scenario checks.
    row("api_base_not_a_provider.yaml",        15, 19, "gateway.model_list[1].litellm_params.api_base", "`http://c:8000/v1` is not a provider of this scenario", None, Semantic),
    row("api_base_https.yaml",                 15, 19, "gateway.model_list[1].litellm_params.api_base", "`https://b:8000/v1` is https: the simulation's upstreams are plain HTTP", None, Semantic),
    row("ssl_verify_in_a_scenario.yaml",       16, 21, "gateway.model_list[1].litellm_params.ssl_verify", "`ssl_verify` is for https upstreams", None, Semantic),
    row("api_base_wrong_port.yaml",            15, 19, "gateway.model_list[1].litellm_params.api_base", "names provider `b` on port 9000, but it listens on port 8000", None, Semantic),
    row("at_ms_after_duration.yaml",           48, 12, "requests[0].at_ms", "at_ms = 5000 is not before duration_ms = 1000", None, Semantic),
    row("fault_at_ms_after_duration.yaml",     42, 14, "network.faults[0].at_ms", "at_ms = 86400000 is not before duration_ms = 1000", None, Semantic),
    row("modes_twice.yaml",                    48, 17, "modes[1]", "mode `stream` is named twice", None, Semantic),
    // Expectations: names checked against the engine's events and the scenario's hosts,
    // and each field where it means something.
    row("event_name_typo.yaml",                49, 12, "expect.events[0]", "unknown event `fallback_takn`", Some("fallback_taken"), Semantic),
    row("calls_unknown_host.yaml",             49, 15, "expect.calls.bb", "`bb` is not a provider host of this scenario (hosts: a, b)", Some("b"), Semantic),
    row("total_calls_on_request.yaml",         47, 14, "requests[0].expect.total_calls", "counts the whole run", None, Semantic),
    row("total_calls_in_request_mode.yaml",    47, 23, "requests[0].expect.stream.total_calls", "counts the whole run", None, Semantic),
    row("equivalent_for_one_mode.yaml",        49, 24, "expect.stream.equivalent", "`equivalent` compares the two modes", None, Semantic),
    row("duplicate_provider_host.yaml",        35, 11, "providers[1].host", "host `a` is used twice", None, Semantic),
    row("network_fault_two_actions.yaml",      41,  7, "network.faults[0]", "one action per entry, this one has 2", None, Semantic),
    row("latency_min_above_max.yaml",          40,  3, "network.latency_ms", "min is above max", None, Semantic),
    row("empty_requests.yaml",                 43,  1, "requests", "a scenario needs at least one request", None, Semantic),
    row("repeat_zero.yaml",                    46, 13, "requests[0].repeat", "at least 1", None, Semantic),
    row("request_key_unknown.yaml",            45, 10, "requests[0].key", "key `sk-2` is not in gateway.keys", None, Semantic),
    row("concurrency_zero.yaml",               46, 18, "requests[0].concurrency", "at least 1", None, Semantic),
    row("duplicate_key.yaml",                  46,  5, "requests[0].key", "`key` appears twice", None, Syntax),
    row("fault_after_last_chunk.yaml",         34, 23, "providers[0].default.fault.after_chunks", "after_chunks = 3 but the answer has 2 chunks", None, Semantic),
    row("http_fault_after_chunks.yaml",        34, 23, "providers[0].default.fault.after_chunks", "after_chunks must be 0", None, Semantic),
    row("network_crash_unknown_host.yaml",     42, 14, "network.faults[0].crash", "unknown host `c`", None, Semantic),
    row("reload_unknown_provider.yaml",        43, 83, "reloads[0].gateway.model_list[0].litellm_params.api_base", "`http://zz:8000/v1` is not a provider of this scenario (hosts: a, b)", None, Semantic),
    row("network_refuse_gateway.yaml",         42, 15, "network.faults[0].refuse", "only provider hosts can refuse", None, Semantic),
    row("network_partition_unknown_host.yaml", 42, 28, "network.faults[0].partition[1]", "unknown host `c`", None, Semantic),
    row("framing_write_bytes_zero.yaml",       37, 20, "providers[1].framing.write_bytes", "must be at least 1", None, Semantic),
    row("content_filter_async_not_azure.yaml", 36, 21, "providers[1].content_filter", "`async` is Azure's Asynchronous Filter: it needs `dialect: azure`", None, Semantic),
];

/// The valid scenario every broken file is a variation of.
const BASE: &str = r#"name: broken-file corpus base (valid)
seed: 1
gateway:
  model_list:
    - model_name: chat
      litellm_params:
        model: openai/m
        api_base: "http://a:8000/v1"
      model_info:
        id: a
    - model_name: backup
      litellm_params:
        model: openai/m
        api_base: "http://b:8000/v1"
      model_info:
        id: b
  router_settings:
    num_retries: 1
    mid_stream: continue
    fallbacks:
      - chat: [backup]
  keys:
    - key: sk-1
      router_settings:
        num_retries: 0
providers:
  - host: a
    default:
      text: "abcdefgh"
      chunk_size: 4
      fault:
        kind: reset
        after_chunks: 1
  - host: b
    default:
      text: "abcdefgh"
      chunk_size: 4
network:
  faults:
    - at_ms: 0
      crash: a
requests:
  - model: chat
    key: sk-1
    repeat: 1
expect:
  status: 200
"#;

/// Lines a broken file may differ from [`BASE`] by (besides its comment and `name:`).
const MAX_CHANGED_LINES: usize = 5;

fn broken_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken")
}

/// Everything about the error for `case.file` that differs from `case` (empty: all good).
/// With `place_too` false, the line, column and path are only required to be present.
fn mismatches(case: &Case, place_too: bool) -> Vec<String> {
    let file = broken_dir().join(case.file);
    let err = match Scenario::load_file(&file) {
        Ok(_) => return vec![format!("{}: loaded without error", case.file)],
        Err(e) => e,
    };
    let shown = err.to_string();
    let mut out = Vec::new();
    let mut fail = |what: String| out.push(format!("{}: {what}\n    error: {shown}", case.file));

    if err.line == 0 || err.column == 0 {
        fail(format!("no location ({}:{})", err.line, err.column));
    }
    if err.path.is_empty() && !case.path.is_empty() {
        fail("no field path".to_string());
    }
    if place_too {
        if (err.line, err.column) != (case.line, case.column) {
            fail(format!(
                "at {}:{}, expected {}:{}",
                err.line, err.column, case.line, case.column
            ));
        }
        if err.path != case.path {
            fail(format!("field `{}`, expected `{}`", err.path, case.path));
        }
    }
    if !err.message.contains(case.phrase) {
        fail(format!("message lacks {:?}", case.phrase));
    }
    if err.hint.as_deref() != case.hint {
        fail(format!("hint {:?}, expected {:?}", err.hint, case.hint));
    }
    let name = file.display().to_string();
    if err.file != name {
        fail(format!("file {:?}, expected {name:?}", err.file));
    }
    let mut prefix = format!("{name}:{}:{}: ", err.line, err.column);
    if !err.path.is_empty() {
        prefix.push_str(&format!("field `{}`: ", err.path));
    }
    if !shown.starts_with(&prefix) {
        fail(format!("rendering does not start with {prefix:?}"));
    }
    out
}

fn assert_all(table: &'static [Case], place_too: bool) {
    let problems: Vec<String> = table
        .iter()
        .flat_map(|c| mismatches(c, place_too))
        .collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn base_scenario_is_valid() {
    if let Err(e) = Scenario::load("base.yaml", BASE) {
        panic!("{e}");
    }
}

#[test]
fn every_broken_file_has_a_row() {
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for c in CASES.iter() {
        *rows.entry(c.file).or_default() += 1;
    }
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "files with more than one row: {twice:?}");

    let mut files = Vec::new();
    for entry in std::fs::read_dir(broken_dir()).expect("sim/tests/broken is readable") {
        let entry = entry.expect("a readable directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            entry.file_type().is_ok_and(|t| t.is_file()),
            "broken/{name} is not a plain file; put every broken file directly in broken/"
        );
        files.push(name);
    }
    files.sort();
    let untested: Vec<_> = files
        .iter()
        .filter(|f| !rows.contains_key(f.as_str()))
        .collect();
    assert!(
        untested.is_empty(),
        "files in sim/tests/broken with no row in CASES or KNOWN_BUGS: {untested:?}"
    );
    let stale: Vec<_> = rows
        .keys()
        .filter(|f| !files.iter().any(|x| x == *f))
        .collect();
    assert!(
        stale.is_empty(),
        "rows for files that do not exist: {stale:?}"
    );
}

/// One mistake per file: apart from its comment and `name:`, a broken file differs from
/// [`BASE`] in a few lines only, so it cannot fail for a reason its row does not name.
#[test]
fn every_broken_file_is_a_small_variation_of_the_base() {
    fn lines(text: &str) -> BTreeMap<&str, i64> {
        let mut count = BTreeMap::new();
        for l in text.lines() {
            if !l.starts_with('#') && !l.starts_with("name:") {
                *count.entry(l).or_default() += 1;
            }
        }
        count
    }
    let base = lines(BASE);
    for c in CASES.iter() {
        let text = std::fs::read_to_string(broken_dir().join(c.file)).expect("readable");
        let mut diff = lines(&text);
        for (l, n) in &base {
            *diff.entry(l).or_default() -= n;
        }
        let changed: usize = diff.values().map(|n| n.unsigned_abs() as usize).sum();
        assert!(
            (1..=MAX_CHANGED_LINES).contains(&changed),
            "{}: {changed} lines differ from the base (1 to {MAX_CHANGED_LINES} expected)",
            c.file
        );
    }
}

#[test]
fn every_broken_file_names_line_column_and_field() {
    assert_all(CASES, true);
}

/// The committed scenario schema, as editors read it.
fn scenario_schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/scenario.schema.json");
    let text = std::fs::read_to_string(&path).expect("schemas/scenario.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// The JSON Schema rejects exactly the rows marked `Schema`: it accepts every `Semantic` one
/// (a mistake it cannot see must not be marked as one it can), and no `Syntax` file even
/// reaches it. Run against the real validator, over every row: none is skipped.
#[test]
fn the_schema_rejects_exactly_the_schema_errors() {
    let validator = scenario_schema();
    let mut wrong = Vec::new();
    for case in CASES {
        let text = std::fs::read_to_string(broken_dir().join(case.file)).expect("read");
        let value = serde_saphyr::from_str::<serde_json::Value>(&text);
        match (case.kind, value) {
            (Syntax, Ok(v)) => wrong.push(format!(
                "{}: marked Syntax but parses as YAML (schema says valid: {})",
                case.file,
                validator.is_valid(&v)
            )),
            (Syntax, Err(_)) => {}
            (_, Err(e)) => wrong.push(format!("{}: does not parse as YAML: {e}", case.file)),
            (Schema, Ok(v)) => {
                if validator.is_valid(&v) {
                    wrong.push(format!("{}: a schema error the schema accepts", case.file));
                }
            }
            (Semantic, Ok(v)) => {
                let errors: Vec<String> = validator
                    .iter_errors(&v)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                if !errors.is_empty() {
                    wrong.push(format!(
                        "{}: marked Semantic but the schema rejects it (mark it Schema?): {}",
                        case.file,
                        errors.join("; ")
                    ));
                }
            }
        }
    }
    let schema_rows = CASES.iter().filter(|c| c.kind == Schema).count();
    assert!(
        schema_rows >= 10,
        "only {schema_rows} rows are schema errors"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
