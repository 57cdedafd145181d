//! What a probe holds each request to: what the scenario relies on and expects, as far as an
//! external gateway can show it.
//!
//! Owns: running the scenario once per mode on Switchback in simulation (requests one at a
//! time, as `probe` sends them) to learn which scripted faults each request exercises when
//! the scenario runs as written, and reading the scenario's `expect` into what a probe can
//! check from outside: the status, the content, and the provider call sequence that stands
//! in for `attempts`. Does not talk to the gateway under probe.

use std::collections::BTreeSet;

use switchback::catalog::Catalog;

use crate::scenario::{Expect, Mode, Scenario};
use crate::world::{self, gateway_config};

/// What one request in one mode relies on and is expected to show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// Scripted faults the request exercises, as `(host, outcome)` (`("vertex",
    /// "error_event@3 429")`): each must fire at the gateway under probe too.
    pub faults: BTreeSet<(String, String)>,
    /// The provider calls `(host, upstream model)`, in order, that the scenario's
    /// `expect.attempts` means (an attempt failed by a `mock_testing_*` flag calls no one).
    /// `None` when the scenario does not state its attempts.
    pub calls: Option<Vec<(String, String)>>,
    /// The status the client must see (an error event's, for a stream that failed).
    pub status: Option<u16>,
    /// The text the client must end up with.
    pub content: Option<String>,
    /// The request reaches at least one provider when the scenario runs as written.
    pub reaches_provider: bool,
}

/// Per mode, per request (in the order `probe` sends them: by request, then copy).
#[derive(Debug, Clone, Default)]
pub struct Reference {
    pub non_stream: Vec<Expected>,
    pub stream: Vec<Expected>,
}

impl Reference {
    pub fn for_mode(&self, mode: Mode) -> &[Expected] {
        match mode {
            Mode::NonStream => &self.non_stream,
            Mode::Stream => &self.stream,
        }
    }
}

/// Whether a request body carries a `mock_testing_*` flag that is on: its first attempt
/// then fails inside the gateway, before any provider call.
fn mock_flag_on(body: &serde_json::Map<String, serde_json::Value>) -> bool {
    body.iter().any(|(k, v)| {
        k.starts_with("mock_testing_")
            && !matches!(v, serde_json::Value::Bool(false) | serde_json::Value::Null)
    })
}

/// The provider calls `attempts` (`"<deployment id>: <class>"`) stand for, or `None` when an
/// id is not a deployment of the scenario. With a mock flag, the first attempt in the
/// requested group (`model`) called no provider; a primary skipped because it was cooling
/// made no attempt, and the mock then fails nothing.
fn calls_of(
    attempts: &[String],
    mock: bool,
    model: &str,
    catalog: &Catalog,
) -> Option<Vec<(String, String)>> {
    let deployments: Vec<_> = attempts
        .iter()
        .map(|line| {
            let id = line
                .split_once(':')
                .map_or(line.as_str(), |(id, _)| id)
                .trim();
            catalog.deployments.iter().find(|d| d.id == id)
        })
        .collect::<Option<_>>()?;
    let mocked = deployments
        .iter()
        .position(|d| d.id == model || catalog.group(d.group).name == model)
        .filter(|_| mock);
    // A wildcard group's deployment is called with the model made from the requested name
    // (`openai/*` asked for `openai/gpt-4.1` calls `gpt-4.1`), not its template's `*`.
    let routed = catalog.route(model);
    let called_with = |d: &switchback::catalog::DeploymentSpec| match &routed {
        Some(r) if r.group == d.group => r
            .wildcard
            .as_ref()
            .map_or_else(|| d.upstream_model.clone(), |w| w.upstream_model(d)),
        _ => d.upstream_model.clone(),
    };
    Some(
        deployments
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != mocked)
            .map(|(_, d)| (d.endpoint.host.clone(), called_with(d)))
            .collect(),
    )
}

/// Runs `scenario` on Switchback in simulation, both modes, requests one at a time, and reads
/// what each request relies on and is expected to show.
pub fn reference(scenario: &Scenario) -> Result<Reference, String> {
    let catalog = Catalog::new(&gateway_config(scenario)).map_err(|e| e.to_string())?;
    let mut one_at_a_time = scenario.clone();
    one_at_a_time.sequential = true;
    let mut out = Reference::default();
    for mode in [Mode::NonStream, Mode::Stream] {
        let run = world::run(&one_at_a_time, mode)?;
        if let Some(hang) = &run.hang {
            return Err(format!(
                "the scenario does not finish on Switchback in simulation ({}): {hang}",
                mode.as_str()
            ));
        }
        let mut expected = Vec::new();
        for r in &run.results {
            let spec = &scenario.requests[r.index];
            // As the oracle reads it: a `stream:` or `non_stream:` block beats the fields
            // both modes share.
            let expect = Expect::resolve(spec.expect.as_ref(), &scenario.expect, mode);
            let id = r.request_id();
            let calls: Vec<(&String, &crate::fake::CallRecord)> = run
                .calls
                .iter()
                .flat_map(|(host, calls)| calls.iter().map(move |c| (host, c)))
                .filter(|(_, c)| id.is_some() && c.request_id == id)
                .collect();
            expected.push(Expected {
                faults: calls
                    .iter()
                    .filter(|(_, c)| c.fault_fired)
                    .map(|(h, c)| ((*h).clone(), c.outcome.clone()))
                    .collect(),
                calls: expect
                    .attempts
                    .as_deref()
                    .and_then(|a| calls_of(a, mock_flag_on(&spec.body), &spec.model, &catalog)),
                status: expect.status,
                content: expect.content.clone(),
                reaches_provider: !calls.is_empty(),
            });
        }
        match mode {
            Mode::NonStream => out.non_stream = expected,
            Mode::Stream => out.stream = expected,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rel: &str) -> Scenario {
        let path = format!("{}/../scenarios/{rel}", env!("CARGO_MANIFEST_DIR"));
        Scenario::load_file(std::path::Path::new(&path)).unwrap()
    }

    #[test]
    fn a_midstream_fault_is_relied_on_in_both_modes_and_attempts_become_calls() {
        let r = reference(&load("known_bug/midstream_429_key_fallbacks.yaml")).unwrap();
        for mode in [Mode::NonStream, Mode::Stream] {
            let e = &r.for_mode(mode)[0];
            assert!(
                e.faults
                    .contains(&("vertex".to_string(), "error_event@3 429".to_string())),
                "{mode:?}: {e:?}"
            );
            assert_eq!(
                e.calls.as_deref(),
                Some(
                    &[
                        ("vertex".into(), "gemini-3.1-flash-lite-preview".into()),
                        ("flash".into(), "gemini-2.5-flash".into())
                    ][..]
                )
            );
            assert_eq!(e.status, Some(200));
            assert!(e.reaches_provider);
        }
    }

    /// A request's `stream:` or `non_stream:` block beats the fields both modes share, as
    /// the oracle reads them (they were dropped: the shared fields held for both modes).
    #[test]
    fn a_modes_own_expect_block_is_what_that_mode_expects() {
        let mut scenario = load("known_bug/midstream_429_key_fallbacks.yaml");
        let expect = scenario.requests[0]
            .expect
            .get_or_insert_with(Default::default);
        expect.content = Some("shared".into());
        expect.stream = Some(Box::new(Expect {
            content: Some("the stream's own".into()),
            ..Expect::default()
        }));
        let r = reference(&scenario).unwrap();
        assert_eq!(r.stream[0].content.as_deref(), Some("the stream's own"));
        assert_eq!(r.non_stream[0].content.as_deref(), Some("shared"));
    }

    #[test]
    fn a_mock_failed_attempt_calls_no_provider() {
        let r = reference(&load("known_bug/key_level_fallbacks_stream.yaml")).unwrap();
        let e = &r.stream[0];
        assert!(e.faults.is_empty(), "{e:?}");
        // "lite: transient" is the mock failure; only flash (on host vertex) is called.
        assert_eq!(
            e.calls.as_deref(),
            Some(&[("vertex".into(), "gemini-2.5-flash".into())][..])
        );
    }

    /// A primary skipped because every deployment of it was cooling made no attempt: the
    /// mock failed nothing, and the first attempt listed (a fallback's) did call its provider.
    #[test]
    fn a_mock_drops_only_an_attempt_in_the_requested_group() {
        let scenario = load("known_bug/key_level_fallbacks_stream.yaml");
        let catalog = Catalog::new(&gateway_config(&scenario)).unwrap();
        let model = &scenario.requests[0].model;
        let flash = ("vertex".to_string(), "gemini-2.5-flash".to_string());
        let attempts = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert_eq!(
            calls_of(
                &attempts(&["lite: transient", "flash: ok"]),
                true,
                model,
                &catalog
            ),
            Some(vec![flash.clone()])
        );
        assert_eq!(
            calls_of(&attempts(&["flash: ok"]), true, model, &catalog),
            Some(vec![flash])
        );
        assert_eq!(
            calls_of(&attempts(&["nobody: ok"]), true, model, &catalog),
            None
        );
    }

    /// A wildcard group's deployment is called with the model the requested name makes,
    /// not its template's `*`: expected as `wild *`, every probe of a wildcard scenario
    /// missed its own expectation (`probe --against` found it, once it checked them).
    #[test]
    fn a_wildcard_deployment_is_expected_with_the_requested_model() {
        let r = reference(&load("parity/wildcard_fallbacks_by_requested_name.yaml")).unwrap();
        let call = |host: &str, model: &str| (host.to_string(), model.to_string());
        assert_eq!(
            r.non_stream[0].calls.as_deref(),
            Some(&[call("wild", "gpt-4.1"), call("backup", "backup")][..])
        );
        assert_eq!(
            r.stream[1].calls.as_deref(),
            Some(&[call("wild", "o3"), call("backup", "backup")][..])
        );
    }
}
