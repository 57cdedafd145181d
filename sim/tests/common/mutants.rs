//! Mutants of a scenario's expectations: the corpus proves its own teeth.
//!
//! Each mutant changes one expectation of one file (a count, an order, a status, an event,
//! a value) so that it no longer describes what happens. Judged against the very same runs
//! (expectations do not change a run), every mutant must fail; one that passes shows an
//! expectation that checks nothing, and is either killed (by strengthening the file) or
//! explained in [`EXPLAINED`].

use std::collections::BTreeMap;

use switchback_sim::oracle;
use switchback_sim::scenario::{Expect, Scenario};
use switchback_sim::world::ModeRun;

/// One changed expectation.
pub struct Mutant {
    /// Where and what, e.g. `requests[1].expect.retries: 1 -> 2`.
    pub what: String,
    pub scenario: Scenario,
}

/// Surviving mutants that are not a weakness of the file, each with the reason:
/// (file under `scenarios/`, the mutant's `what`, why it cannot fail).
pub const EXPLAINED: &[(&str, &str, &str)] = &[];

/// Whether `what` for `file` is explained, and why.
pub fn explained(file: &str, what: &str) -> Option<&'static str> {
    EXPLAINED
        .iter()
        .find(|(f, w, _)| *f == file && *w == what)
        .map(|(_, _, why)| *why)
}

/// Every mutant of `s`'s expectations.
pub fn mutants(s: &Scenario) -> Vec<Mutant> {
    let groups: Vec<String> = s
        .gateway
        .model_list
        .iter()
        .map(|d| d.model_name.clone())
        .collect();
    let deployments: Vec<String> = s
        .gateway
        .model_list
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.model_info
                .id
                .clone()
                .unwrap_or_else(|| format!("{}#{i}", d.model_name))
        })
        .collect();
    let other = |taken: &str, among: &[String]| among.iter().find(|x| *x != taken).cloned();
    let mut out = Vec::new();
    for (what, e) in block_mutants(&s.expect, &|t| other(t, &groups), &|t| {
        other(t, &deployments)
    }) {
        let mut m = s.clone();
        m.expect = e;
        out.push(Mutant {
            what: format!("expect.{what}"),
            scenario: m,
        });
    }
    for (i, r) in s.requests.iter().enumerate() {
        let Some(e) = &r.expect else { continue };
        for (what, e) in block_mutants(e, &|t| other(t, &groups), &|t| other(t, &deployments)) {
            let mut m = s.clone();
            m.requests[i].expect = Some(e);
            out.push(Mutant {
                what: format!("requests[{i}].expect.{what}"),
                scenario: m,
            });
        }
    }
    out
}

type Other<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Mutants of one `expect` block (and of its per-mode blocks), as (what, mutated block).
fn block_mutants(
    e: &Expect,
    other_group: Other<'_>,
    other_deployment: Other<'_>,
) -> Vec<(String, Expect)> {
    let mut out: Vec<(String, Expect)> = Vec::new();
    let mut add = |what: String, f: &dyn Fn(&mut Expect)| {
        let mut m = e.clone();
        f(&mut m);
        out.push((what, m));
    };
    if let Some(st) = e.status {
        let to = if st == 200 { 429 } else { 200 };
        add(format!("status: {st} -> {to}"), &|m| m.status = Some(to));
    }
    if let Some(g) = &e.group {
        if let Some(to) = other_group(g) {
            add(format!("group: {g} -> {to}"), &|m| {
                m.group = Some(to.clone())
            });
        }
    }
    if let Some(d) = &e.deployment {
        if let Some(to) = other_deployment(d) {
            add(format!("deployment: {d} -> {to}"), &|m| {
                m.deployment = Some(to.clone())
            });
        }
    }
    if let Some(a) = &e.attempts {
        if let Some(i) = (1..a.len()).find(|i| a[i - 1] != a[*i]) {
            add(format!("attempts: swap {} and {}", i, i + 1), &|m| {
                if let Some(v) = m.attempts.as_mut() {
                    v.swap(i - 1, i);
                }
            });
        }
        if let Some(last) = a.last() {
            let (id, class) = last.split_once(": ").unwrap_or((last.as_str(), "ok"));
            let to = if class == "ok" { "transient" } else { "ok" };
            let changed = format!("{id}: {to}");
            add(format!("attempts: last {last:?} -> {changed:?}"), &|m| {
                if let Some(v) = m.attempts.as_mut() {
                    if let Some(l) = v.last_mut() {
                        l.clone_from(&changed);
                    }
                }
            });
            add("attempts: one fewer".to_string(), &|m| {
                if let Some(v) = m.attempts.as_mut() {
                    v.pop();
                }
            });
        }
    }
    if let Some(n) = e.attempt_count {
        add(format!("attempt_count: {n} -> {}", n + 1), &|m| {
            m.attempt_count = Some(n + 1)
        });
    }
    if let Some(c) = &e.content {
        add("content: one character more".to_string(), &|m| {
            m.content = Some(format!("{c}!"))
        });
    }
    for (name, n) in e.usage.iter().flatten() {
        add(format!("usage: {name} {n} -> {}", n + 1), &|m| {
            if let Some(u) = m.usage.as_mut() {
                u.insert(name.clone(), n + 1);
            }
        });
    }
    if let Some(f) = &e.finish_reason {
        let to = if f == "stop" { "length" } else { "stop" };
        add(format!("finish_reason: {f} -> {to}"), &|m| {
            m.finish_reason = Some(to.to_string())
        });
    }
    if let Some(model) = &e.model {
        add(format!("model: {model} -> {model}-other"), &|m| {
            m.model = Some(format!("{model}-other"))
        });
    }
    if let Some(n) = e.retries {
        add(format!("retries: {n} -> {}", n + 1), &|m| {
            m.retries = Some(n + 1)
        });
    }
    if let Some(n) = e.fallbacks {
        add(format!("fallbacks: {n} -> {}", n + 1), &|m| {
            m.fallbacks = Some(n + 1)
        });
    }
    if let Some(t) = &e.error_type {
        let to = if t == "rate_limit_error" {
            "api_error"
        } else {
            "rate_limit_error"
        };
        add(format!("error_type: {t} -> {to}"), &|m| {
            m.error_type = Some(to.to_string())
        });
    }
    for (field, counts) in [
        ("calls", &e.calls),
        ("total_calls", &e.total_calls),
        ("total_connections", &e.total_connections),
    ] {
        for (host, n) in counts.iter().flatten() {
            let bump = |map: &mut Option<BTreeMap<String, u32>>| {
                if let Some(v) = map.as_mut().and_then(|m| m.get_mut(host)) {
                    *v += 1;
                }
            };
            add(
                format!("{field}.{host}: {n} -> {}", n + 1),
                &|m| match field {
                    "calls" => bump(&mut m.calls),
                    "total_calls" => bump(&mut m.total_calls),
                    _ => bump(&mut m.total_connections),
                },
            );
        }
    }
    for (name, value) in e.headers.iter().flatten() {
        let to = match value {
            Some(v) => Some(format!("{v}x")),
            None => Some("1".to_string()),
        };
        add(format!("headers.{name}: {value:?} -> {to:?}"), &|m| {
            if let Some(h) = m.headers.as_mut() {
                h.insert(name.clone(), to.clone());
            }
        });
    }
    for (i, name) in e.events.iter().enumerate() {
        add(format!("events: `{name}` must not occur"), &|m| {
            m.events.remove(i);
            m.no_events.push(name.clone());
        });
    }
    for (i, name) in e.no_events.iter().enumerate() {
        add(format!("no_events: `{name}` must occur"), &|m| {
            m.no_events.remove(i);
            m.events.push(name.clone());
        });
    }
    if let Some(b) = e.stream_error {
        add(format!("stream_error: {b} -> {}", !b), &|m| {
            m.stream_error = Some(!b)
        });
    }
    if e.equivalent == Some(false) {
        add("equivalent: false -> true".to_string(), &|m| {
            m.equivalent = Some(true)
        });
    }
    for (field, block) in [("stream", &e.stream), ("non_stream", &e.non_stream)] {
        let Some(block) = block else { continue };
        for (what, b) in block_mutants(block, other_group, other_deployment) {
            add(format!("{field}.{what}"), &|m| {
                let slot = if field == "stream" {
                    &mut m.stream
                } else {
                    &mut m.non_stream
                };
                *slot = Some(Box::new(b.clone()));
            });
        }
    }
    out
}

/// What the oracle says of `scenario`'s expectations against runs already made.
pub fn judge(scenario: &Scenario, runs: &[ModeRun]) -> Vec<String> {
    let mut failures = Vec::new();
    for run in runs {
        oracle::check_run(scenario, run, &mut failures);
    }
    if let [a, b] = runs {
        if a.hang.is_none() && b.hang.is_none() {
            oracle::check_equivalence(scenario, a, b, &mut failures);
        }
    }
    failures
}
