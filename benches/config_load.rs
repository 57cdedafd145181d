//! Criterion bench of loading a config of many deployments: parse, validation and the
//! catalog. Every deployment's id, and validation's group counts, once took a pass over the
//! deployments before it, so load time grew with the square of the deployments; the
//! figure belongs here rather than in a test that times itself.
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
    group.finish();
}

criterion_group!(config_load, benches);
criterion_main!(config_load);
