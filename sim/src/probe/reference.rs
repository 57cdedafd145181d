//! What a probe holds each request to: what the scenario relies on and expects, as far as an
//! external gateway can show it.
//!
//! Owns: running the scenario once per mode on Switchback in simulation (requests one at a
//! time, as `probe` sends them) to learn which scripted faults each request exercises when
//! the scenario runs as written, and reading the scenario's `expect` into what a probe can
//! check from outside: the status, the content, and the provider call sequence that stands
//! in for `attempts`. Does not talk to the gateway under probe.

use std::collections::{BTreeMap, BTreeSet};

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
    /// How many calls each named provider host must receive for this request
    /// (`expect.calls`), when Switchback's own run of the scenario one request at a time
    /// shows them: otherwise they depend on requests overlapping, which a probe never does
    /// (see [`Reference::unchecked`]).
    pub host_calls: Option<BTreeMap<String, u32>>,
    /// How many provider calls the request makes in all (`expect.attempt_count`), where
    /// Switchback's own run one request at a time makes one call per attempt: an attempt
    /// that calls no provider (a `mock_testing_*` flag's) is not seen from outside.
    pub call_count: Option<usize>,
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
    /// How many calls each named provider host must receive in the whole non-stream run
    /// (the scenario's `expect.total_calls`), under the same rule as
    /// [`Expected::host_calls`].
    pub non_stream_total_calls: Option<BTreeMap<String, u32>>,
    /// The same for the stream run.
    pub stream_total_calls: Option<BTreeMap<String, u32>>,
    /// What the scenario expects that a probe does not hold the gateway to, and why: shown
    /// in the report, so a green probe never claims more than it checked.
    pub unchecked: Vec<String>,
}

impl Reference {
    pub fn for_mode(&self, mode: Mode) -> &[Expected] {
        match mode {
            Mode::NonStream => &self.non_stream,
            Mode::Stream => &self.stream,
        }
    }

    pub fn total_calls(&self, mode: Mode) -> Option<&BTreeMap<String, u32>> {
        match mode {
            Mode::NonStream => self.non_stream_total_calls.as_ref(),
            Mode::Stream => self.stream_total_calls.as_ref(),
        }
    }
}

/// The `expect` fields a probe checks from outside: the client's status and text, and the
/// provider calls (in order, per request and host, and per host over the whole run).
/// `equivalent` and the mode blocks are how the rest is arranged, not expectations.
pub const CHECKED_FIELDS: &[&str] = &[
    "status",
    "content",
    "attempts",
    "attempt_count",
    "calls",
    "total_calls",
    "equivalent",
    "stream",
    "non_stream",
];

/// The fields of `expect` (and of its mode blocks) that a probe does not check, in the
/// order they first appear: the gateway's own vocabulary (`events`, `retries`,
/// `limits`, `deployment`, `headers`...), which another gateway does not share, or what a
/// probe does not compare (`usage`, `model`, `passthrough`...).
fn unchecked_fields<'a>(expects: impl IntoIterator<Item = &'a Expect>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in expects {
        let blocks = std::iter::once(e)
            .chain(e.stream.as_deref())
            .chain(e.non_stream.as_deref());
        for block in blocks {
            let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(block) else {
                continue;
            };
            for name in fields.keys() {
                if !CHECKED_FIELDS.contains(&name.as_str()) && !out.contains(name) {
                    out.push(name.clone());
                }
            }
        }
    }
    out
}

/// `want` where `got` (Switchback's own calls per host, one request at a time) meets it;
/// otherwise why not, for [`Reference::unchecked`].
fn held_if_shown(
    want: Option<&BTreeMap<String, u32>>,
    got: &BTreeMap<String, u32>,
) -> Result<Option<BTreeMap<String, u32>>, String> {
    let Some(want) = want else {
        return Ok(None);
    };
    let misses: Vec<String> = want
        .iter()
        .filter(|(host, n)| got.get(*host).copied().unwrap_or(0) != **n)
        .map(|(host, n)| {
            format!(
                "{n} to `{host}` (one at a time: {})",
                got.get(host).copied().unwrap_or(0)
            )
        })
        .collect();
    if misses.is_empty() {
        Ok(Some(want.clone()))
    } else {
        Err(misses.join(", "))
    }
}

/// Calls per provider host.
fn per_host<'a>(hosts: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for host in hosts {
        *out.entry(host.clone()).or_insert(0) += 1;
    }
    out
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
        let label =
            |r: &crate::client::ClientResult| format!("r{}.{} {}", r.index, r.copy, mode.as_str());
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
            let host_calls = held_if_shown(
                expect.calls.as_ref(),
                &per_host(calls.iter().map(|(h, _)| *h)),
            )
            .unwrap_or_else(|why| {
                out.unchecked.push(format!(
                    "{} calls: expects {why}; it depends on requests overlapping",
                    label(r)
                ));
                None
            });
            let call_count = expect.attempt_count.and_then(|n| {
                if calls.len() == n as usize {
                    return Some(calls.len());
                }
                out.unchecked.push(format!(
                    "{} attempt_count: expects {n} attempt(s), which make {} provider call(s) \
                     one request at a time (an attempt that calls no provider is not seen \
                     from outside)",
                    label(r),
                    calls.len()
                ));
                None
            });
            expected.push(Expected {
                host_calls,
                call_count,
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
        let whole_run = Expect::resolve(None, &scenario.expect, mode);
        let totals = run
            .calls
            .iter()
            .map(|(host, calls)| (host.clone(), calls.len() as u32))
            .collect();
        let total_calls =
            held_if_shown(whole_run.total_calls.as_ref(), &totals).unwrap_or_else(|why| {
                out.unchecked.push(format!(
                    "{} total_calls: expects {why}; it depends on requests overlapping",
                    mode.as_str()
                ));
                None
            });
        match mode {
            Mode::NonStream => {
                (out.non_stream, out.non_stream_total_calls) = (expected, total_calls)
            }
            Mode::Stream => (out.stream, out.stream_total_calls) = (expected, total_calls),
        }
    }
    let fields = unchecked_fields(
        std::iter::once(&scenario.expect)
            .chain(scenario.requests.iter().filter_map(|r| r.expect.as_ref())),
    );
    if !fields.is_empty() {
        out.unchecked.push(format!(
            "{}: not seen from outside a gateway, or not compared by a probe",
            fields.join(", ")
        ));
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

    /// Call counts are held where Switchback itself shows them one request at a time, and
    /// reported unchecked where they depend on requests overlapping (eight at once meet
    /// the 429 before the first cools it; one at a time, only the first does). What a probe
    /// cannot see is listed too, so a green probe never claims it.
    #[test]
    fn call_counts_are_held_only_where_one_request_at_a_time_shows_them() {
        let r = reference(&load("parity/fallback_to_deployment_id.yaml")).unwrap();
        let totals = [("backup", 1), ("chat", 4), ("east", 0), ("west", 2)]
            .map(|(h, n)| (h.to_string(), n))
            .into();
        assert_eq!(r.total_calls(Mode::NonStream), Some(&totals));
        assert_eq!(r.total_calls(Mode::Stream), Some(&totals));

        let r = reference(&load("cooldown/concurrent_requests.yaml")).unwrap();
        assert_eq!(r.total_calls(Mode::Stream), None);
        assert!(
            r.unchecked
                .iter()
                .any(|u| u.starts_with("stream total_calls: expects 3 to `a` (one at a time: 1)")),
            "{:?}",
            r.unchecked
        );
        assert!(
            r.unchecked
                .iter()
                .any(|u| u.starts_with("deployment: not seen")),
            "{:?}",
            r.unchecked
        );

        let mut counted = load("known_bug/midstream_429_key_fallbacks.yaml");
        counted.requests[0].expect = Some(Expect {
            calls: Some([("vertex".to_string(), 1), ("flash".to_string(), 1)].into()),
            ..Expect::default()
        });
        let r = reference(&counted).unwrap();
        assert_eq!(
            r.stream[0].host_calls,
            Some([("vertex".to_string(), 1), ("flash".to_string(), 1)].into())
        );
        counted.requests[0].expect.as_mut().unwrap().calls =
            Some([("flash".to_string(), 2)].into());
        let r = reference(&counted).unwrap();
        assert_eq!(r.stream[0].host_calls, None);
        assert!(
            r.unchecked
                .contains(&"r0.0 stream calls: expects 2 to `flash` (one at a time: 1); it depends on requests overlapping".to_string()),
            "{:?}",
            r.unchecked
        );
        // `attempt_count` is held as a number of provider calls where that is what it is.
        assert_eq!(
            reference(&load("retries/retry_after_honoured.yaml"))
                .unwrap()
                .stream[0]
                .call_count,
            Some(2)
        );
        // A mock flag's attempt calls no provider: two attempts, one call, not held.
        let mut mocked = load("known_bug/key_level_fallbacks_stream.yaml");
        mocked.expect.attempt_count = Some(2);
        let r = reference(&mocked).unwrap();
        assert_eq!(r.stream[0].call_count, None);
        assert!(
            r.unchecked.iter().any(|u| u.starts_with(
                "r0.0 stream attempt_count: expects 2 attempt(s), which make 1 provider call(s)"
            )),
            "{:?}",
            r.unchecked
        );
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
