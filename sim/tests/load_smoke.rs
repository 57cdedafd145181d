//! A short smoke run of the load generator against Switchback on loopback: a few hundred
//! requests, every one accounted for and answered. Counts, not timings: speed targets live in
//! `switchback bench-overhead`, never in a test.

use std::sync::Arc;
use std::time::Duration;

mod common;

use switchback_sim::live::{RecordCalls, start_fakes};
use switchback_sim::load::{self, LoadSpec};
use switchback_sim::overhead;
use switchback_sim::trace::{NullSink, TraceSink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_load_run_is_answered_and_counted() {
    let sink: Arc<dyn TraceSink> = Arc::new(NullSink);
    let fakes = start_fakes(&overhead::world(), sink, None, RecordCalls::No)
        .await
        .unwrap();
    let addr = common::loopback_gateway(&overhead::gateway_config(&fakes)).await;
    for (model, stream) in [
        ("plain", false),
        ("plain_json", false),
        ("limited", false),
        ("midfail", true),
    ] {
        let spec = LoadSpec {
            host: addr.ip().to_string(),
            port: addr.port(),
            path: "/v1/chat/completions".into(),
            key: None,
            body: serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
            rate: 300.0,
            duration: Duration::from_secs(1),
            connections: 32,
        };
        let report = load::run(&spec, |_, _| {}).await.unwrap();
        assert_eq!(report.planned, 300);
        assert!(
            report.accounted(),
            "{model}: lost requests: {}",
            report.text()
        );
        assert_eq!(report.errors, 0, "{model}: {}", report.text());
        assert_eq!(report.total.len(), 300, "{model}: every success recorded");
        assert_eq!(
            report.first_chunk.as_ref().map(|h| h.len()),
            stream.then_some(300),
            "{model}"
        );
    }
    // Fakes serving load keep no log of their calls: it would grow without end.
    for fake in &fakes.fakes {
        assert!(
            fake.calls().is_empty(),
            "{} kept a call log",
            fake.spec.host
        );
    }
}

#[test]
fn bad_load_specs_are_refused() {
    let base = LoadSpec {
        host: "127.0.0.1".into(),
        port: 1,
        path: "/v1/chat/completions".into(),
        key: None,
        body: serde_json::json!({}),
        rate: 10.0,
        duration: Duration::from_secs(1),
        connections: 1,
    };
    assert!(base.check().is_ok());
    for bad in [
        LoadSpec {
            rate: 0.0,
            ..base.clone()
        },
        LoadSpec {
            rate: f64::NAN,
            ..base.clone()
        },
        LoadSpec {
            connections: 0,
            ..base.clone()
        },
        LoadSpec {
            duration: Duration::ZERO,
            ..base.clone()
        },
        LoadSpec {
            rate: 1e6,
            duration: Duration::from_secs(3600),
            ..base.clone()
        },
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
}
