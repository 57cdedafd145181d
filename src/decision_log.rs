//! The decision log: every routing decision of the engine as one line, for operators.
//!
//! Owns: [`DecisionLog`], an [`Observer`] that writes each [`TraceRecord`] to a sink
//! (`serve` gives it stderr) as one JSON object per line, or as the canonical trace line.
//! A JSON line carries the wall-clock time, the request's number (its
//! `x-switchback-request-id`), the time since the request's admission, the event's name and
//! its fields, with groups and deployments by name. Never a secret: events carry key
//! aliases, never keys, and every free text (aliases, upstream model names) goes through the
//! catalog's [`Redactor`](crate::redact::Redactor) first. Fields come in a fixed order.
//! Does not own which events exist (`trace`) nor when they are emitted (`engine`, `attempt`).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::engine::WallClock;
use crate::trace::{Event, Observer, TraceRecord};

/// Requests whose admission time is remembered at once (for `since_admission_ms`). Past it,
/// lines of newly admitted requests leave that field out. See
/// [`crate::metrics::MAX_TRACKED_REQUESTS`] for why this never binds in practice.
pub const MAX_TRACKED_REQUESTS: usize = crate::metrics::MAX_TRACKED_REQUESTS;

/// How each decision is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// The canonical trace line (`<ms> req=<n> <event> field=value ...`).
    Text,
}

/// Writes every event to `sink`, one line each.
pub struct DecisionLog {
    format: LogFormat,
    wall: Arc<dyn WallClock>,
    inner: Mutex<Inner>,
}

struct Inner {
    sink: Box<dyn Write + Send>,
    admitted: BTreeMap<u64, Duration>,
}

impl DecisionLog {
    pub fn new(
        format: LogFormat,
        sink: Box<dyn Write + Send>,
        wall: Arc<dyn WallClock>,
    ) -> DecisionLog {
        DecisionLog {
            format,
            wall,
            inner: Mutex::new(Inner {
                sink,
                admitted: BTreeMap::new(),
            }),
        }
    }

    /// The JSON line of `record` (without its newline).
    pub fn json_line(
        record: &TraceRecord,
        since_admission: Option<Duration>,
        unix_ms: u128,
        catalog: &Catalog,
    ) -> String {
        let mut line = Map::new();
        line.insert("ts_unix_ms".into(), json!(unix_ms as u64));
        line.insert("request".into(), json!(record.request));
        line.insert("at_ms".into(), json!(record.at.as_millis() as u64));
        if let Some(d) = since_admission {
            line.insert("since_admission_ms".into(), json!(d.as_millis() as u64));
        }
        line.insert("event".into(), json!(record.event.name()));
        fields(&record.event, catalog, &mut line);
        Value::Object(line).to_string()
    }
}

/// The event's fields, as [`Event::render`] names them, in the same order.
fn fields(event: &Event, catalog: &Catalog, out: &mut Map<String, Value>) {
    let g = |id| json!(catalog.group(id).name);
    let d = |id| json!(catalog.deployment(id).id);
    let text = |s: &str| json!(catalog.redactor.redact(s));
    let ms = |d: Duration| json!(d.as_millis() as u64);
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_string(), v);
    };
    match event {
        Event::Admitted { key, group, stream } => {
            put("key", text(key));
            put("group", g(*group));
            put("stream", json!(stream));
        }
        Event::PlanResolved {
            chain,
            fallbacks_from,
            max_fallbacks,
            mid_stream,
        } => {
            put("chain", Value::Array(chain.iter().map(|c| g(*c)).collect()));
            put("fallbacks_from", json!(fallbacks_from.as_str()));
            put("max_fallbacks", json!(max_fallbacks));
            put("mid_stream", json!(mid_stream.as_str()));
        }
        Event::OrderFallbackTaken {
            group,
            from_order,
            to_order,
            class,
        } => {
            put("group", g(*group));
            put("from_order", json!(from_order));
            put("to_order", json!(to_order));
            put("class", json!(class.as_str()));
        }
        Event::AttemptStarted {
            attempt,
            group,
            deployment,
            continuation,
        } => {
            put("attempt", json!(attempt));
            put("group", g(*group));
            put("deployment", d(*deployment));
            put("continuation", json!(continuation));
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
            put("attempt", json!(attempt));
            put("deployment", d(*deployment));
            put("class", json!(class.as_str()));
            put("status", json!(status));
            put("retry_after_ms", retry_after.map_or(Value::Null, ms));
            put("after_chunks", json!(after_chunks));
            put("mocked", json!(mocked));
            put("timeout", json!(timeout.map(|t| t.as_str())));
        }
        Event::DeploymentCooled {
            deployment,
            duration,
            class,
        } => {
            put("deployment", d(*deployment));
            put("for_ms", ms(*duration));
            put("class", json!(class.as_str()));
        }
        Event::FailureNotCounted { deployment, reason } => {
            put("deployment", d(*deployment));
            put("reason", json!(reason.as_str()));
        }
        Event::RetryScheduled {
            group,
            deployment,
            delay,
        } => {
            put("group", g(*group));
            put("deployment", d(*deployment));
            put("delay_ms", ms(*delay));
        }
        Event::GroupExhausted { group, reason } => {
            put("group", g(*group));
            put("reason", json!(reason.as_str()));
        }
        Event::LinkSkipped {
            from,
            to,
            list,
            reason,
        } => {
            put("from", g(*from));
            put("to", g(*to));
            put("list", json!(list.as_str()));
            put("reason", json!(reason.as_str()));
        }
        Event::FallbackTaken {
            from,
            to,
            list,
            class,
        } => {
            put("from", g(*from));
            put("to", g(*to));
            put("list", json!(list.as_str()));
            put("class", json!(class.as_str()));
        }
        Event::Committed {
            attempt,
            deployment,
        } => {
            put("attempt", json!(attempt));
            put("deployment", d(*deployment));
        }
        Event::Completed {
            group,
            deployment,
            model,
            retries,
            fallbacks,
            chunks,
        } => {
            put("group", g(*group));
            put("deployment", d(*deployment));
            put("model", text(model));
            put("retries", json!(retries));
            put("fallbacks", json!(fallbacks));
            put("chunks", json!(chunks));
        }
        Event::Failed {
            status,
            error_type,
            class,
            committed,
        } => {
            put("status", json!(status));
            put("type", json!(error_type));
            put("class", json!(class.as_str()));
            put("committed", json!(committed));
        }
        Event::ContinuationRefused { reason } => put("reason", json!(reason)),
        Event::ClientGone { reason } => put("reason", json!(reason.as_str())),
        Event::LimitHit { limit } => put("limit", json!(limit)),
    }
}

impl Observer for DecisionLog {
    fn record(&self, record: TraceRecord, catalog: &Catalog) {
        let mut inner = self.inner.lock().expect("decision log lock");
        let since = match &record.event {
            Event::Admitted { .. } => {
                if inner.admitted.len() < MAX_TRACKED_REQUESTS {
                    inner.admitted.insert(record.request, record.at);
                }
                Some(Duration::ZERO)
            }
            Event::Completed { .. } | Event::Failed { .. } | Event::ClientGone { .. } => inner
                .admitted
                .remove(&record.request)
                .map(|a| record.at.saturating_sub(a)),
            _ => inner
                .admitted
                .get(&record.request)
                .map(|a| record.at.saturating_sub(*a)),
        };
        let line = match self.format {
            LogFormat::Json => {
                let unix_ms = self
                    .wall
                    .now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                DecisionLog::json_line(&record, since, unix_ms, catalog)
            }
            LogFormat::Text => catalog.redactor.redact(&record.render(catalog)),
        };
        // One write per line, so lines from other writers never land inside it. A log that
        // cannot be written (stderr closed) must not stop the gateway.
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        let _ = inner.sink.write_all(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DeploymentId, GroupId};
    use crate::classify::FailureClass;
    use crate::config::GatewayConfig;

    const CONFIG: &str = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/m, api_base: "http://up/v1", api_key: sk-upstream-SECRET-123456}, model_info: {id: a1}}
keys:
  - {key: sk-client-SECRET-abcdef, key_alias: client-1}
"#;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Wall;
    impl WallClock for Wall {
        fn now(&self) -> std::time::SystemTime {
            std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        }
    }

    #[test]
    fn each_decision_is_one_json_line_with_names_and_no_secret() {
        let config = GatewayConfig::load("t.yaml", CONFIG).unwrap_or_else(|e| panic!("{e}"));
        let catalog = Catalog::new(&config).unwrap();
        let alias = "client-1".to_string();
        let out = Arc::new(Mutex::new(Vec::new()));
        let log = DecisionLog::new(
            LogFormat::Json,
            Box::new(Shared(out.clone())),
            Arc::new(Wall),
        );
        let rec = |ms, event| TraceRecord {
            at: Duration::from_millis(ms),
            request: 7,
            event,
        };
        log.record(
            rec(
                5,
                Event::Admitted {
                    key: alias.clone(),
                    group: GroupId(0),
                    stream: true,
                },
            ),
            &catalog,
        );
        log.record(
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
            &catalog,
        );
        log.record(
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
            &catalog,
        );
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[1],
            r#"{"ts_unix_ms":1700000000123,"request":7,"at_ms":9,"since_admission_ms":4,"event":"attempt_failed","attempt":1,"deployment":"a1","class":"rate_limited","status":429,"retry_after_ms":2000,"after_chunks":0,"mocked":false,"timeout":null}"#
        );
        let done: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(done["since_admission_ms"], 7);
        assert_eq!(done["model"], "m-[redacted]");
        assert!(!text.contains("SECRET"), "{text}");
        for l in &lines {
            serde_json::from_str::<Value>(l).expect("every line is JSON");
        }
    }
}
