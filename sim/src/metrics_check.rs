//! The gateway's metrics must say what its trace says.
//!
//! Owns: reading a run's Prometheus exposition (parsed by `prometheus-parse`, as a scraper
//! would) and comparing its counters with counts of the engine's own events: attempts,
//! failed attempts by class, retries, fallbacks (order-based ones included), cooldowns by
//! class, exhausted groups, limit hits, clients gone (but those that left during their
//! upload, before admission, when there is no event), and requests by outcome. Every run of
//! the corpus, of `explore` and of live mode goes through it, so the metrics cannot drift
//! from the engine. Does not own the metrics (`switchback::metrics`) nor other verdicts
//! (`oracle`).

use std::collections::BTreeMap;

use switchback::metrics::LEFT_DURING_UPLOAD;
use switchback::trace::{Event, TraceRecord};

use crate::trace::MAX_TRACE_LINES;

/// A counter family summed by one of its labels (`""`: summed over everything).
fn totals(scrape: &prometheus_parse::Scrape, metric: &str, by: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    // A client that left during its upload is counted before admission, where no event is.
    let before_admission =
        |s: &prometheus_parse::Sample| s.labels.get("reason") == Some(LEFT_DURING_UPLOAD);
    for s in scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && !before_admission(s))
    {
        let v = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let label = if by.is_empty() {
            String::new()
        } else {
            s.labels.get(by).unwrap_or_default().to_string()
        };
        *out.entry(label).or_insert(0) += v as u64;
    }
    out.retain(|_, v| *v > 0);
    out
}

/// The same counts, from the trace.
fn from_trace(records: &[TraceRecord]) -> BTreeMap<(&'static str, String), u64> {
    let mut out = BTreeMap::new();
    let mut bump = |metric: &'static str, label: &str| {
        *out.entry((metric, label.to_string())).or_insert(0) += 1;
    };
    for r in records {
        match &r.event {
            Event::AttemptStarted { .. } => bump("switchback_attempts_total", ""),
            Event::AttemptFailed { class, .. } => {
                bump("switchback_attempt_failures_total", class.as_str())
            }
            Event::RetryScheduled { .. } => bump("switchback_retries_total", ""),
            Event::FallbackTaken { .. } | Event::OrderFallbackTaken { .. } => {
                bump("switchback_fallbacks_total", "")
            }
            Event::DeploymentCooled { class, .. } => {
                bump("switchback_cooldowns_total", class.as_str())
            }
            Event::GroupExhausted { .. } => bump("switchback_groups_exhausted_total", ""),
            Event::LimitHit { limit } => bump("switchback_limit_hits_total", limit),
            Event::ClientGone { .. } => {
                bump("switchback_client_disconnects_total", "");
                bump("switchback_requests_total", "client_gone");
            }
            Event::Completed { .. } => bump("switchback_requests_total", "completed"),
            Event::Failed { committed, .. } => bump(
                "switchback_requests_total",
                if *committed {
                    "failed_after_commit"
                } else {
                    "failed"
                },
            ),
            _ => {}
        }
    }
    out
}

/// Each counter, and the label it is compared by.
const COMPARED: [(&str, &str); 9] = [
    ("switchback_attempts_total", ""),
    ("switchback_attempt_failures_total", "class"),
    ("switchback_retries_total", ""),
    ("switchback_fallbacks_total", ""),
    ("switchback_cooldowns_total", "class"),
    ("switchback_groups_exhausted_total", ""),
    ("switchback_limit_hits_total", "limit"),
    ("switchback_client_disconnects_total", ""),
    ("switchback_requests_total", "outcome"),
];

/// Where `exposition` (the metrics at the end of a run) and `records` (its trace) disagree,
/// one line each. Nothing is compared when the trace was cut at [`MAX_TRACE_LINES`].
pub fn disagreements(exposition: &str, records: &[TraceRecord]) -> Vec<String> {
    if records.len() >= MAX_TRACE_LINES {
        return Vec::new();
    }
    let lines = exposition.lines().map(|l| Ok(l.to_string()));
    let scrape = match prometheus_parse::Scrape::parse(lines) {
        Ok(s) => s,
        Err(e) => return vec![format!("the metrics are not valid Prometheus text: {e}")],
    };
    let trace = from_trace(records);
    let mut out = Vec::new();
    for (metric, by) in COMPARED {
        let got = totals(&scrape, metric, by);
        let want: BTreeMap<String, u64> = trace
            .iter()
            .filter(|((m, _), _)| *m == metric)
            .map(|((_, label), n)| (label.clone(), *n))
            .collect();
        if got != want {
            let by = if by.is_empty() {
                String::new()
            } else {
                format!(" by {by}")
            };
            out.push(format!(
                "{metric}{by} is {got:?} but the trace says {want:?}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchback::catalog::{DeploymentId, GroupId};
    use switchback::classify::FailureClass;

    use super::*;

    fn rec(event: Event) -> TraceRecord {
        TraceRecord {
            at: Duration::ZERO,
            request: 1,
            event,
        }
    }

    const EXPOSITION: &str = "\
# TYPE switchback_attempts_total counter
switchback_attempts_total{group=\"a\",deployment=\"a1\"} 1
# TYPE switchback_attempt_failures_total counter
switchback_attempt_failures_total{deployment=\"a1\",class=\"rate_limited\"} 1
# TYPE switchback_requests_total counter
switchback_requests_total{group=\"a\",key=\"k\",mode=\"stream\",outcome=\"failed\"} 1
";

    fn trace() -> Vec<TraceRecord> {
        vec![
            rec(Event::AttemptStarted {
                attempt: 1,
                group: GroupId(0),
                deployment: DeploymentId(0),
                continuation: false,
            }),
            rec(Event::AttemptFailed {
                attempt: 1,
                deployment: DeploymentId(0),
                class: FailureClass::RateLimited,
                status: Some(429),
                retry_after: None,
                after_chunks: 0,
                mocked: false,
                timeout: None,
            }),
            rec(Event::Failed {
                status: 429,
                error_type: "rate_limit_error",
                class: FailureClass::RateLimited,
                committed: false,
            }),
        ]
    }

    #[test]
    fn metrics_that_say_what_the_trace_says_agree() {
        assert_eq!(disagreements(EXPOSITION, &trace()), Vec::<String>::new());
    }

    /// A client that left during its upload is counted before admission, where the engine
    /// has no request and no event to count it by.
    #[test]
    fn clients_gone_before_admission_are_not_compared() {
        let exposition = format!(
            "{EXPOSITION}# TYPE switchback_client_disconnects_total counter\n\
             switchback_client_disconnects_total{{mode=\"unknown\",reason=\"left_during_upload\"}} 2\n"
        );
        assert_eq!(disagreements(&exposition, &trace()), Vec::<String>::new());
    }

    #[test]
    fn a_missed_or_misfiled_count_is_named() {
        let mut t = trace();
        t.push(rec(Event::RetryScheduled {
            group: GroupId(0),
            deployment: DeploymentId(0),
            delay: Duration::ZERO,
        }));
        let wrong_class = EXPOSITION.replace("rate_limited", "transient");
        assert_eq!(
            disagreements(&wrong_class, &t),
            vec![
                r#"switchback_attempt_failures_total by class is {"transient": 1} but the trace says {"rate_limited": 1}"#,
                r#"switchback_retries_total is {} but the trace says {"": 1}"#,
            ]
        );
    }
}
