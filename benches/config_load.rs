//! Criterion bench of loading a config of many deployments: parse, validation and the
//! catalog. Every deployment's id, and validation's group counts, once took a pass over the
//! deployments before it, so load time grew with the square of the deployments; the
//! figure belongs here rather than in a test that times itself. Likewise every key's table
//! of the groups it may use (a pass over every group per key: 251 ms for the catalog of 4,000
//! deployments and 4,000 keys, where keys with the same `models` lists now share one).
//!
//! Run: `cargo bench --bench config_load` (`--profile dev` for a debug build's figure).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;

/// Deployments in the config: about 1.4 MB of YAML, well under `MAX_YAML_BYTES`.
const DEPLOYMENTS: usize = 16_000;

fn benches(c: &mut Criterion) {
    let mut text = String::from("allow_anonymous: true\nmodel_list:\n");
    for i in 0..DEPLOYMENTS {
        text.push_str(&format!(
            "  - {{model_name: g{i}, litellm_params: {{model: openai/m, api_base: \"http://p{i}/v1\"}}}}\n"
        ));
    }
    let mut group = c.benchmark_group("config_load");
    group.sample_size(10);
    group.bench_function("load_and_catalog_16000_deployments", |b| {
        b.iter(|| {
            let config = GatewayConfig::load("bench.yaml", black_box(&text)).expect("valid");
            black_box(Catalog::new(&config).expect("builds"))
        })
    });
    let mut text = String::from("model_list:\n");
    for i in 0..KEYED_DEPLOYMENTS {
        text.push_str(&format!(
            "  - {{model_name: g{}, litellm_params: {{model: openai/m{i}, api_base: \"http://p{}/v1\"}}, model_info: {{id: d{i}}}}}\n",
            i / 4,
            i % 50
        ));
    }
    text.push_str("keys:\n");
    for i in 0..KEYED_DEPLOYMENTS {
        text.push_str(&format!(
            "  - {{key: sk-key-{i}, key_alias: k{i}, models: [g{}]}}\n",
            i % 500
        ));
    }
    group.bench_function("load_and_catalog_4000_deployments_4000_keys", |b| {
        b.iter(|| {
            let config = GatewayConfig::load("bench.yaml", black_box(&text)).expect("valid");
            black_box(Catalog::new(&config).expect("builds"))
        })
    });
    group.finish();
}

/// Deployments (in groups of 4) and keys, each key restricted to one group (500 distinct
/// lists), in the keyed config.
const KEYED_DEPLOYMENTS: usize = 4_000;

criterion_group!(config_load, benches);
criterion_main!(config_load);
