//! The decision log: every routing decision of the engine as a `tracing` event, and one
//! access-log line per request, for operators.
//!
//! Owns: [`DecisionLog`], an [`Observer`] that turns each [`TraceRecord`] into a `tracing`
//! event (target [`DECISION_TARGET`]) with the request's number and key alias and the
//! event's own fields, groups and deployments by name; and, when a request ends, one event
//! (target [`ACCESS_TARGET`], level INFO) with its outcome, status, attempts, serving
//! deployment and timings. Never a secret: events carry key aliases, never keys, and every
//! free text (aliases, upstream model names) goes through the catalog's
//! [`Redactor`](crate::redact::Redactor) first. Does not own how lines look or where they go
//! (the subscriber `serve` installs: text or JSON, on stderr), which events exist (`trace`)
//! nor when they are emitted (`engine`, `attempt`).
//!
//! Levels: the decisions an operator asks about ("why did this request fall back?") are
//! INFO — failed attempts, cooldowns, retries, fallbacks, exhausted groups, skipped links,
//! limits, failures, clients gone. The routine steps of every request (admitted, plan,
//! attempt started, committed, completed) are DEBUG: at INFO a healthy request writes its
//! access line only. With `tracing`, each event is its own callsite, so its fields are
//! typed and a subscriber can filter by level and target.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{Level, debug, info};

use crate::catalog::{Catalog, DeploymentId, GroupId};
use crate::trace::{Event, Observer, TraceRecord};

/// The `tracing` target of decision events.
pub const DECISION_TARGET: &str = "switchback::decision";
/// The `tracing` target of access-log lines.
pub const ACCESS_TARGET: &str = "switchback::access";

/// Requests whose admission is remembered at once (for the access line's key, group,
/// attempts and timings, and the key alias on every decision line). Past it, lines of newly
/// admitted requests leave those fields out. See [`crate::metrics::MAX_TRACKED_REQUESTS`]
/// for why this never binds in practice.
pub const MAX_TRACKED_REQUESTS: usize = crate::metrics::MAX_TRACKED_REQUESTS;

/// What the log remembers of a request in flight, for its access line.
struct Open {
    admitted: Duration,
    key: String,
    group: GroupId,
    stream: bool,
    attempts: u32,
    /// Retries made and fallbacks taken so far, for an access line that ends without
    /// `completed` (which carries the engine's own counts). A retry counts once its
    /// attempt starts, as the engine counts it: a client that leaves during the backoff
    /// (or a deadline that ends it) leaves one scheduled but never made.
    retries: u32,
    retry_scheduled: bool,
    fallbacks: u32,
    /// When the answer was committed, and from which deployment.
    committed: Option<(Duration, DeploymentId)>,
}

/// Emits every decision, and an access line per request, as `tracing` events.
#[derive(Default)]
pub struct DecisionLog {
    open: Mutex<BTreeMap<u64, Open>>,
}

impl DecisionLog {
    pub fn new() -> DecisionLog {
        DecisionLog::default()
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Observer for DecisionLog {
    fn enabled(&self) -> bool {
        // Nothing listens at INFO or below: the engine need not build events at all.
        tracing::enabled!(target: DECISION_TARGET, Level::INFO)
            || tracing::enabled!(target: ACCESS_TARGET, Level::INFO)
    }

    fn record(&self, record: TraceRecord, catalog: &Catalog) {
        let request = record.request;
        let at = record.at;
        let g = |id: &GroupId| catalog.group(*id).name.as_str();
        let d = |id: &DeploymentId| catalog.deployment(*id).id.as_str();
        let text = |s: &str| catalog.redactor.redact(s);
        let ends = matches!(
            record.event,
            Event::Completed { .. } | Event::Failed { .. } | Event::ClientGone { .. }
        );
        // The request's state is updated under the lock; lines are written after it is
        // released, so requests never wait on each other's writes.
        let (key, since_admission_ms, ended) = {
            let mut open = self.open.lock().expect("decision log lock");
            match &record.event {
                Event::Admitted { key, group, stream } if open.len() < MAX_TRACKED_REQUESTS => {
                    open.insert(
                        request,
                        Open {
                            admitted: at,
                            key: text(key),
                            group: *group,
                            stream: *stream,
                            attempts: 0,
                            retries: 0,
                            retry_scheduled: false,
                            fallbacks: 0,
                            committed: None,
                        },
                    );
                }
                Event::AttemptStarted { .. } => {
                    if let Some(o) = open.get_mut(&request) {
                        o.attempts += 1;
                        if std::mem::take(&mut o.retry_scheduled) {
                            o.retries += 1;
                        }
                    }
                }
                Event::Committed { deployment, .. } => {
                    if let Some(o) = open.get_mut(&request) {
                        o.committed = Some((at, *deployment));
                    }
                }
                Event::RetryScheduled { .. } => {
                    if let Some(o) = open.get_mut(&request) {
                        o.retry_scheduled = true;
                    }
                }
                Event::FallbackTaken { .. } | Event::OrderFallbackTaken { .. } => {
                    if let Some(o) = open.get_mut(&request) {
                        o.fallbacks += 1;
                    }
                }
                _ => {}
            }
            let ended = if ends { open.remove(&request) } else { None };
            let current = ended.as_ref().or_else(|| open.get(&request));
            (
                current.map(|o| o.key.clone()),
                current.map(|o| ms(at.saturating_sub(o.admitted))),
                ended,
            )
        };
        let key = key.as_deref();
        match &record.event {
            Event::Admitted { group, stream, .. } => {
                debug!(target: DECISION_TARGET, request, key, since_admission_ms, group = g(group), stream,
                    "admitted");
            }
            Event::PlanResolved {
                chain,
                fallbacks_from,
                max_fallbacks,
                mid_stream,
            } => {
                let chain: Vec<&str> = chain.iter().map(g).collect();
                debug!(target: DECISION_TARGET, request, key, since_admission_ms,
                    chain = %format_args!("[{}]", chain.join(",")),
                    fallbacks_from = fallbacks_from.as_str(), max_fallbacks,
                    mid_stream = mid_stream.as_str(), "plan_resolved");
            }
            Event::AttemptStarted {
                attempt,
                group,
                deployment,
                continuation,
            } => {
                debug!(target: DECISION_TARGET, request, key, since_admission_ms, attempt, group = g(group),
                    deployment = d(deployment), continuation, "attempt_started");
            }
            Event::AttemptFailed {
                attempt,
                deployment,
                class,
                status,
                retry_after,
                after_chunks,
                mocked,
                timeout,
            } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, attempt,
                    deployment = d(deployment), class = class.as_str(), status,
                    retry_after_ms = retry_after.map(ms), after_chunks, mocked,
                    timeout = timeout.map(|t| t.as_str()), "attempt_failed");
            }
            Event::DeploymentCooled {
                deployment,
                duration,
                class,
            } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, deployment = d(deployment),
                    for_ms = ms(*duration), class = class.as_str(), "deployment_cooled");
            }
            Event::FailureNotCounted { deployment, reason } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, deployment = d(deployment),
                    reason = reason.as_str(), "failure_not_counted");
            }
            Event::RetryScheduled {
                group,
                deployment,
                delay,
            } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, group = g(group),
                    deployment = d(deployment), delay_ms = ms(*delay), "retry_scheduled");
            }
            Event::RetryRerouted { group, from, to } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, group = g(group),
                    from = d(from), to = d(to), "retry_rerouted");
            }
            Event::GroupExhausted { group, reason } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, group = g(group),
                    reason = reason.as_str(), "group_exhausted");
            }
            Event::LinkSkipped {
                from,
                to,
                list,
                reason,
            } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, from = g(from), to = g(to),
                    list = list.as_str(), reason = reason.as_str(), "link_skipped");
            }
            Event::FallbackTaken {
                from,
                to,
                list,
                class,
            } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, from = g(from), to = g(to),
                    list = list.as_str(), class = class.as_str(), "fallback_taken");
            }
            Event::OrderFallbackTaken {
                group,
                from_order,
                to_order,
                class,
            } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, group = g(group), from_order,
                    to_order, class = class.as_str(), "order_fallback_taken");
            }
            Event::Committed {
                attempt,
                deployment,
            } => {
                debug!(target: DECISION_TARGET, request, key, since_admission_ms, attempt,
                    deployment = d(deployment), "committed");
            }
            Event::Completed {
                group,
                deployment,
                model,
                retries,
                fallbacks,
                chunks,
            } => {
                debug!(target: DECISION_TARGET, request, key, since_admission_ms, group = g(group),
                    deployment = d(deployment), model = text(model).as_str(), retries, fallbacks, chunks,
                    "completed");
            }
            Event::Failed {
                status,
                error_type,
                class,
                committed,
            } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, status, r#type = *error_type,
                    class = class.as_str(), committed, "failed");
            }
            Event::ContinuationRefused { reason } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, reason = *reason,
                    "continuation_refused");
            }
            Event::StopSequenceAtSeam { attempt } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, attempt,
                    "stop_sequence_at_seam");
            }
            Event::EndedAtBudget { attempt } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, attempt,
                    "ended_at_budget");
            }
            Event::StreamRefused { attempt } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, attempt,
                    "stream_refused");
            }
            Event::ClientGone { reason } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, reason = reason.as_str(),
                    "client_gone");
            }
            Event::LimitHit { limit } => {
                info!(target: DECISION_TARGET, request, key, since_admission_ms, limit = *limit, "limit_hit");
            }
        }
        if ends {
            access_line(&record, ended.as_ref(), catalog);
        }
    }
}

/// The request's one access-log line, at its last event.
fn access_line(record: &TraceRecord, open: Option<&Open>, catalog: &Catalog) {
    let request = record.request;
    let (outcome, status, deployment, retries, fallbacks) = match &record.event {
        Event::Completed {
            deployment,
            retries,
            fallbacks,
            ..
        } => (
            "completed",
            Some(200),
            Some(catalog.deployment(*deployment).id.as_str()),
            Some(*retries),
            Some(*fallbacks),
        ),
        // Without `completed`, the counts are the events seen, and the deployment is the
        // one whose answer was committed (none before commit): an operator reading a
        // failed line sees how hard the gateway tried.
        Event::Failed {
            status, committed, ..
        } => (
            if *committed {
                "failed_after_commit"
            } else {
                "failed"
            },
            Some(*status),
            committed_deployment(open, catalog),
            open.map(|o| o.retries),
            open.map(|o| o.fallbacks),
        ),
        Event::ClientGone { .. } => (
            "client_gone",
            None,
            committed_deployment(open, catalog),
            open.map(|o| o.retries),
            open.map(|o| o.fallbacks),
        ),
        _ => unreachable!("an access line is written at a request's last event only"),
    };
    let key = open.map(|o| o.key.as_str());
    let group = open.map(|o| catalog.group(o.group).name.as_str());
    let mode = open.map(|o| if o.stream { "stream" } else { "non_stream" });
    let attempts = open.map(|o| o.attempts);
    let duration_ms = open.map(|o| ms(record.at.saturating_sub(o.admitted)));
    let time_to_commit_ms =
        open.and_then(|o| o.committed.map(|(c, _)| ms(c.saturating_sub(o.admitted))));
    info!(target: ACCESS_TARGET, request, key, group, mode, outcome, status, deployment,
        attempts, retries, fallbacks, duration_ms, time_to_commit_ms, "request");
}

/// The id of the deployment whose answer the request committed, if it did.
fn committed_deployment<'c>(open: Option<&Open>, catalog: &'c Catalog) -> Option<&'c str> {
    open.and_then(|o| o.committed)
        .map(|(_, d)| catalog.deployment(d).id.as_str())
}

/// The access line of a request refused before admission, which has no events: its route
/// (`none` for no route), status and the named limit that refused it. Nothing the client
/// sent is written (no key, no model name).
pub fn refused_line(route: &'static str, status: u16, limit: Option<&'static str>) {
    info!(target: ACCESS_TARGET, route, outcome = "refused", status, limit, "request");
}

/// The access line of a client that left while sending its request body, before admission:
/// its route and `outcome="client_gone"`, with the reason that says when it left. No status:
/// nobody received one.
pub fn gone_line(route: &'static str) {
    info!(target: ACCESS_TARGET, route, outcome = "client_gone",
        reason = crate::metrics::LEFT_DURING_UPLOAD, "request");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::DeploymentId;
    use crate::classify::FailureClass;
    use crate::config::GatewayConfig;

    const CONFIG: &str = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/m, api_base: "http://up/v1", api_key: sk-upstream-SECRET-123456}, model_info: {id: a1}}
keys:
  - {key: sk-client-SECRET-abcdef, key_alias: client-1}
"#;

    /// A writer the test subscriber appends to.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines `records` produce at `level`.
    fn json_lines(level: Level, records: Vec<TraceRecord>) -> Vec<serde_json::Value> {
        let config = GatewayConfig::load("t.yaml", CONFIG).unwrap_or_else(|e| panic!("{e}"));
        let catalog = Catalog::new(&config).unwrap();
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .without_time()
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let log = DecisionLog::new();
            assert!(log.enabled());
            for r in records {
                log.record(r, &catalog);
            }
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("SECRET"), "{text}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// An upstream's `model` is its own text: in the text format (what `serve` writes by
    /// default) a line break in it must not start a line of its own, which could pass for
    /// an access line of another request.
    #[test]
    fn an_upstream_model_with_a_line_break_cannot_forge_a_line() {
        let config = GatewayConfig::load("t.yaml", CONFIG).unwrap_or_else(|e| panic!("{e}"));
        let catalog = Catalog::new(&config).unwrap();
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let forged = "m\n INFO switchback::access: request request=999 key=\"admin\"";
        let mut records = request_with_a_retry();
        for r in &mut records {
            if let Event::Completed { model, .. } = &mut r.event {
                *model = forged.to_string();
            }
        }
        let n = records.len();
        tracing::subscriber::with_default(subscriber, || {
            let log = DecisionLog::new();
            for r in records {
                log.record(r, &catalog);
            }
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        // One line per event, and the access line.
        assert_eq!(text.lines().count(), n + 1, "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with(" INFO switchback::access: request request=999")),
            "{text}"
        );
    }

    fn request_with_a_retry() -> Vec<TraceRecord> {
        let rec = |ms, event| TraceRecord {
            at: Duration::from_millis(ms),
            request: 7,
            event,
        };
        vec![
            rec(
                5,
                Event::Admitted {
                    key: "client-1".into(),
                    group: GroupId(0),
                    stream: true,
                },
            ),
            rec(
                6,
                Event::AttemptStarted {
                    attempt: 1,
                    group: GroupId(0),
                    deployment: DeploymentId(0),
                    continuation: false,
                },
            ),
            rec(
                9,
                Event::AttemptFailed {
                    attempt: 1,
                    deployment: DeploymentId(0),
                    class: FailureClass::RateLimited,
                    status: Some(429),
                    retry_after: Some(Duration::from_secs(2)),
                    after_chunks: 0,
                    mocked: false,
                    timeout: None,
                },
            ),
            rec(
                10,
                Event::AttemptStarted {
                    attempt: 2,
                    group: GroupId(0),
                    deployment: DeploymentId(0),
                    continuation: false,
                },
            ),
            rec(
                11,
                Event::Committed {
                    attempt: 2,
                    deployment: DeploymentId(0),
                },
            ),
            rec(
                12,
                Event::Completed {
                    group: GroupId(0),
                    deployment: DeploymentId(0),
                    // An upstream that echoes its key in its model name.
                    model: "m-sk-upstream-SECRET-123456".into(),
                    retries: 1,
                    fallbacks: 0,
                    chunks: 3,
                },
            ),
        ]
    }

    #[test]
    fn at_info_a_request_logs_its_decisions_that_matter_and_one_access_line() {
        let lines = json_lines(Level::INFO, request_with_a_retry());
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_eq!(
            lines[0],
            serde_json::json!({
                "level": "INFO", "message": "attempt_failed", "request": 7, "key": "client-1",
                "since_admission_ms": 4, "attempt": 1, "deployment": "a1",
                "class": "rate_limited", "status": 429, "retry_after_ms": 2000,
                "after_chunks": 0, "mocked": false, "target": DECISION_TARGET
            })
        );
        assert_eq!(
            lines[1],
            serde_json::json!({
                "level": "INFO", "message": "request", "request": 7, "key": "client-1",
                "group": "a", "mode": "stream", "outcome": "completed", "status": 200,
                "deployment": "a1", "attempts": 2, "retries": 1, "fallbacks": 0,
                "duration_ms": 7, "time_to_commit_ms": 6, "target": ACCESS_TARGET
            })
        );
    }

    /// A request that ends without `completed` says how hard the gateway tried: its
    /// retries and fallbacks (they were left out: a failed line read as if nothing had been
    /// tried), and after commit the deployment whose answer it was.
    #[test]
    fn a_failed_access_line_counts_its_retries_and_fallbacks() {
        let rec = |ms, event| TraceRecord {
            at: Duration::from_millis(ms),
            request: 8,
            event,
        };
        let started = |attempt| Event::AttemptStarted {
            attempt,
            group: GroupId(0),
            deployment: DeploymentId(0),
            continuation: false,
        };
        let tried = || {
            vec![
                rec(
                    1,
                    Event::Admitted {
                        key: "client-1".into(),
                        group: GroupId(0),
                        stream: false,
                    },
                ),
                rec(2, started(1)),
                rec(
                    3,
                    Event::RetryScheduled {
                        group: GroupId(0),
                        deployment: DeploymentId(0),
                        delay: Duration::ZERO,
                    },
                ),
                rec(4, started(2)),
                rec(
                    5,
                    Event::FallbackTaken {
                        from: GroupId(0),
                        to: GroupId(0),
                        list: crate::plan::ListKind::Fallbacks,
                        class: FailureClass::RateLimited,
                    },
                ),
                rec(6, started(3)),
            ]
        };
        let mut failed = tried();
        failed.push(rec(
            7,
            Event::Failed {
                status: 429,
                error_type: "rate_limit_error",
                class: FailureClass::RateLimited,
                committed: false,
            },
        ));
        let lines = json_lines(Level::INFO, failed);
        let access = lines.last().unwrap();
        assert_eq!(access["outcome"], "failed", "{access}");
        assert_eq!(access["attempts"], 3, "{access}");
        assert_eq!(access["retries"], 1, "{access}");
        assert_eq!(access["fallbacks"], 1, "{access}");
        assert_eq!(access.get("deployment"), None, "{access}");

        let mut gone = tried();
        gone.push(rec(
            7,
            Event::Committed {
                attempt: 3,
                deployment: DeploymentId(0),
            },
        ));
        gone.push(rec(
            8,
            Event::ClientGone {
                reason: crate::attempt::GoneReason::Left,
            },
        ));
        let lines = json_lines(Level::INFO, gone);
        let access = lines.last().unwrap();
        assert_eq!(access["outcome"], "client_gone", "{access}");
        assert_eq!(access["retries"], 1, "{access}");
        assert_eq!(access["fallbacks"], 1, "{access}");
        assert_eq!(access["deployment"], "a1", "{access}");
    }

    /// A client that leaves during a retry's backoff ends the request before the retry is
    /// made: the access line counts the retries made, as a completed request's (the
    /// engine's own count) does, not the one only scheduled.
    #[test]
    fn a_retry_scheduled_but_never_made_is_not_counted() {
        let rec = |ms, event| TraceRecord {
            at: Duration::from_millis(ms),
            request: 9,
            event,
        };
        let events = vec![
            rec(
                1,
                Event::Admitted {
                    key: "client-1".into(),
                    group: GroupId(0),
                    stream: true,
                },
            ),
            rec(
                2,
                Event::AttemptStarted {
                    attempt: 1,
                    group: GroupId(0),
                    deployment: DeploymentId(0),
                    continuation: false,
                },
            ),
            rec(
                3,
                Event::RetryScheduled {
                    group: GroupId(0),
                    deployment: DeploymentId(0),
                    delay: Duration::from_millis(500),
                },
            ),
            rec(
                4,
                Event::ClientGone {
                    reason: crate::attempt::GoneReason::Left,
                },
            ),
        ];
        let lines = json_lines(Level::INFO, events);
        let access = lines.last().unwrap();
        assert_eq!(access["outcome"], "client_gone", "{access}");
        assert_eq!(access["attempts"], 1, "{access}");
        assert_eq!(access["retries"], 0, "{access}");
    }

    #[test]
    fn at_debug_every_event_is_a_line_and_free_text_is_redacted() {
        let lines = json_lines(Level::DEBUG, request_with_a_retry());
        let names: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "admitted",
                "attempt_started",
                "attempt_failed",
                "attempt_started",
                "committed",
                "completed",
                "request"
            ]
        );
        assert_eq!(lines[5]["model"], "m-[redacted]");
        assert!(lines.iter().all(|l| l["request"] == 7));
        assert!(lines.iter().all(|l| l["key"] == "client-1"));
    }

    #[test]
    fn nobody_listening_means_the_engine_builds_no_events() {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::WARN)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(!DecisionLog::new().enabled());
        });
    }
}
