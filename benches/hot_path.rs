//! Criterion benches of the fallback hot path: the pure decisions every request takes.
//!
//! Run: `cargo bench --bench hot_path`. Figures are in the README.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use switchback::catalog::{Catalog, DeploymentId};
use switchback::classify::{Failure, FailureClass, Signal, classify};
use switchback::config::GatewayConfig;
use switchback::plan::FallbackPlan;
use switchback::policy::Levels;
use switchback::route::cooldown::CooldownBook;
use switchback::route::select::choose;

const CONFIG: &str = r#"
model_list:
  - {model_name: primary, litellm_params: {model: openai/p, api_base: "http://a/v1"}, model_info: {id: p1}}
  - {model_name: primary, litellm_params: {model: openai/p, api_base: "http://b/v1"}, model_info: {id: p2}}
  - {model_name: primary, litellm_params: {model: openai/p, api_base: "http://c/v1", order: 2}, model_info: {id: p3}}
  - {model_name: second, litellm_params: {model: openai/s, api_base: "http://d/v1"}}
  - {model_name: third, litellm_params: {model: openai/t, api_base: "http://e/v1"}}
router_settings:
  num_retries: 2
  fallbacks: [{primary: [second]}]
teams:
  - team_id: t
    router_settings: {max_fallbacks: 3, mid_stream: continue}
keys:
  - key: sk-bench
    team_id: t
    router_settings:
      fallbacks: [{primary: [second, third]}, {second: [third]}]
      num_retries: 1
"#;

fn benches(c: &mut Criterion) {
    let config = GatewayConfig::load("bench.yaml", CONFIG).unwrap();
    let catalog = Catalog::new(&config).unwrap();
    let key = catalog.key("sk-bench").unwrap();
    let team = catalog.team(key.team.unwrap());
    let primary = catalog.group_id("primary").unwrap();

    c.bench_function("resolve_policy_key_team", |b| {
        b.iter(|| {
            black_box(
                Levels {
                    request: None,
                    key: Some(&key.overrides),
                    team: Some(&team.overrides),
                    gateway: &catalog.gateway,
                }
                .resolve(&catalog.limits),
            )
        })
    });

    let settings = Arc::new(
        Levels {
            request: None,
            key: Some(&key.overrides),
            team: Some(&team.overrides),
            gateway: &catalog.gateway,
        }
        .resolve(&catalog.limits),
    );
    c.bench_function("build_plan_and_first_fallback", |b| {
        b.iter(|| {
            let plan = FallbackPlan::new(black_box(primary), settings.clone(), key.allowed.clone());
            let mut walk = plan.walk();
            walk.group_failed(plan.primary, switchback::classify::FallbackRoute::Generic);
            black_box(walk.next(&mut |_, _| {}));
        })
    });

    let mut headers = http::HeaderMap::new();
    headers.insert("retry-after", http::HeaderValue::from_static("2"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let body = br#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    c.bench_function("classify_429_retry_after", |b| {
        b.iter(|| {
            black_box(classify(
                Signal::Status {
                    status: 429,
                    headers: &headers,
                    body: black_box(body),
                },
                now,
            ))
        })
    });

    let mut book = CooldownBook::new(catalog.deployments.len());
    let t0 = tokio::time::Instant::now();
    let rate_limited = Failure {
        retry_after: Some(Duration::from_secs(30)),
        ..Failure::new(FailureClass::RateLimited, "x")
    };
    book.record_failure(DeploymentId(0), &rate_limited, t0, &catalog.settings, 1);
    let t1 = t0 + Duration::from_millis(1);
    // As the engine does when it takes the book's lock at t1.
    book.settle(t1);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let tried = [DeploymentId(1)];
    c.bench_function("choose_deployment_with_cooldowns", |b| {
        b.iter(|| {
            // What the engine does per decision: the request's view of the book, then choose.
            black_box(choose(
                &catalog,
                primary,
                &book.view(2, t1),
                t1,
                black_box(&tried),
                &mut rng,
            ))
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
