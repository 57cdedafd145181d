//! Typed events the engine emits, and the observer seam the embedder provides.
//!
//! Owns: the [`Event`] vocabulary (one variant per decision the engine takes), the
//! [`Observer`] trait, and the canonical one-line rendering used by traces and snapshots:
//! `name field=value ...` with fields in a fixed order and names instead of indices, so a
//! trace reads without the config at hand and is byte-identical for the same run.
//! Does not own timestamps' origin (the engine's start) or where lines go (the observer).

use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::time::Duration;

use crate::attempt::GoneReason;
use crate::catalog::{Catalog, DeploymentId, GroupId};
use crate::classify::{Blame, FailureClass, TimeoutKind};
use crate::config::MidStreamPolicy;
use crate::plan::{ListKind, SkipReason};
use crate::policy::Level;
use crate::route::GiveUp;

/// One decision or observation of the engine, about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Admitted {
        key: String,
        group: GroupId,
        stream: bool,
    },
    PlanResolved {
        chain: Vec<GroupId>,
        fallbacks_from: Level,
        max_fallbacks: u32,
        mid_stream: MidStreamPolicy,
    },
    AttemptStarted {
        attempt: u32,
        group: GroupId,
        deployment: DeploymentId,
        continuation: bool,
    },
    AttemptFailed {
        attempt: u32,
        deployment: DeploymentId,
        class: FailureClass,
        status: Option<u16>,
        retry_after: Option<Duration>,
        /// Content chunks received from this attempt before it failed.
        after_chunks: u32,
        mocked: bool,
        timeout: Option<TimeoutKind>,
    },
    DeploymentCooled {
        deployment: DeploymentId,
        duration: Duration,
        class: FailureClass,
    },
    /// A failed attempt that says nothing about the deployment's health (see [`Blame`]),
    /// so it is not counted towards cooling it.
    FailureNotCounted {
        deployment: DeploymentId,
        reason: Blame,
    },
    RetryScheduled {
        group: GroupId,
        deployment: DeploymentId,
        delay: Duration,
    },
    /// A scheduled retry's deployment was cooled by another request during the backoff:
    /// the retry goes to `to`, healthy when the backoff ended, instead of `from`.
    RetryRerouted {
        group: GroupId,
        from: DeploymentId,
        to: DeploymentId,
    },
    GroupExhausted {
        group: GroupId,
        reason: GiveUp,
    },
    LinkSkipped {
        from: GroupId,
        to: GroupId,
        list: ListKind,
        reason: SkipReason,
    },
    FallbackTaken {
        from: GroupId,
        to: GroupId,
        list: ListKind,
        class: FailureClass,
    },
    /// The group's current `order` tier is spent: the request moves to the group's next
    /// tier with a healthy deployment (LiteLLM's order-based fallback), counted as a
    /// fallback.
    OrderFallbackTaken {
        group: GroupId,
        from_order: u32,
        to_order: u32,
        class: FailureClass,
    },
    Committed {
        attempt: u32,
        deployment: DeploymentId,
    },
    Completed {
        group: GroupId,
        deployment: DeploymentId,
        model: String,
        retries: u32,
        fallbacks: u32,
        chunks: u32,
    },
    Failed {
        status: u16,
        error_type: &'static str,
        class: FailureClass,
        committed: bool,
    },
    /// A failure after commit under `mid_stream: continue` that cannot be continued
    /// (what was delivered is not text of one choice, or is too long to carry): the
    /// request ends as under `error`.
    ContinuationRefused {
        reason: &'static str,
    },
    /// Attempt `attempt` failed under `mid_stream: continue` after the text delivered had
    /// spent the client's whole token budget: the answer ended there, finish reason
    /// `length`, as the provider's own would have (see `commit::Next::Spent`).
    EndedAtBudget {
        attempt: u32,
    },
    /// A continuation's first text completed one of the client's `stop` sequences that the
    /// text delivered before it began: the answer ended there, finish reason `stop`, with
    /// nothing of the continuation (see `seam`).
    StopSequenceAtSeam {
        attempt: u32,
    },
    /// The deployment refused to stream the call with a 400 that names streaming, not the
    /// request (OpenAI's "Your organization must be verified to stream this model"): the
    /// attempt asks it again without streaming.
    StreamRefused {
        attempt: u32,
    },
    /// The client went away (or stopped reading); the request was abandoned.
    ClientGone {
        reason: GoneReason,
    },
    /// A limit stopped the request.
    LimitHit {
        limit: &'static str,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Admitted { .. } => "admitted",
            Event::PlanResolved { .. } => "plan_resolved",
            Event::AttemptStarted { .. } => "attempt_started",
            Event::AttemptFailed { .. } => "attempt_failed",
            Event::DeploymentCooled { .. } => "deployment_cooled",
            Event::FailureNotCounted { .. } => "failure_not_counted",
            Event::RetryScheduled { .. } => "retry_scheduled",
            Event::RetryRerouted { .. } => "retry_rerouted",
            Event::GroupExhausted { .. } => "group_exhausted",
            Event::LinkSkipped { .. } => "link_skipped",
            Event::FallbackTaken { .. } => "fallback_taken",
            Event::OrderFallbackTaken { .. } => "order_fallback_taken",
            Event::Committed { .. } => "committed",
            Event::Completed { .. } => "completed",
            Event::Failed { .. } => "failed",
            Event::ContinuationRefused { .. } => "continuation_refused",
            Event::StopSequenceAtSeam { .. } => "stop_sequence_at_seam",
            Event::EndedAtBudget { .. } => "ended_at_budget",
            Event::StreamRefused { .. } => "stream_refused",
            Event::ClientGone { .. } => "client_gone",
            Event::LimitHit { .. } => "limit_hit",
        }
    }

    /// `name field=value ...`, fields in declaration order, names resolved via `catalog`.
    pub fn render(&self, catalog: &Catalog) -> String {
        let g = |id: &GroupId| catalog.group(*id).name.as_str();
        let d = |id: &DeploymentId| catalog.deployment(*id).id.as_str();
        let mut out = String::from(self.name());
        let mut f = |k: &str, v: &dyn fmt::Display| {
            let _ = write!(out, " {k}={v}");
        };
        match self {
            Event::Admitted { key, group, stream } => {
                f("key", key);
                f("group", &g(group));
                f("stream", stream);
            }
            Event::PlanResolved {
                chain,
                fallbacks_from,
                max_fallbacks,
                mid_stream,
            } => {
                let names: Vec<&str> = chain.iter().map(g).collect();
                f("chain", &format_args!("[{}]", names.join(",")));
                f("fallbacks_from", &fallbacks_from.as_str());
                f("max_fallbacks", max_fallbacks);
                f("mid_stream", &mid_stream.as_str());
            }
            Event::AttemptStarted {
                attempt,
                group,
                deployment,
                continuation,
            } => {
                f("attempt", attempt);
                f("group", &g(group));
                f("deployment", &d(deployment));
                f("continuation", continuation);
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
                f("attempt", attempt);
                f("deployment", &d(deployment));
                f("class", &class.as_str());
                f("status", &opt(status));
                f("retry_after_ms", &opt(&retry_after.map(|r| r.as_millis())));
                f("after_chunks", after_chunks);
                f("mocked", mocked);
                f("timeout", &opt(&timeout.map(|t| t.as_str())));
            }
            Event::DeploymentCooled {
                deployment,
                duration,
                class,
            } => {
                f("deployment", &d(deployment));
                f("for_ms", &duration.as_millis());
                f("class", &class.as_str());
            }
            Event::FailureNotCounted { deployment, reason } => {
                f("deployment", &d(deployment));
                f("reason", &reason.as_str());
            }
            Event::RetryScheduled {
                group,
                deployment,
                delay,
            } => {
                f("group", &g(group));
                f("deployment", &d(deployment));
                f("delay_ms", &delay.as_millis());
            }
            Event::RetryRerouted { group, from, to } => {
                f("group", &g(group));
                f("from", &d(from));
                f("to", &d(to));
            }
            Event::GroupExhausted { group, reason } => {
                f("group", &g(group));
                f("reason", &reason.as_str());
            }
            Event::LinkSkipped {
                from,
                to,
                list,
                reason,
            } => {
                f("from", &g(from));
                f("to", &g(to));
                f("list", &list.as_str());
                f("reason", &reason.as_str());
            }
            Event::FallbackTaken {
                from,
                to,
                list,
                class,
            } => {
                f("from", &g(from));
                f("to", &g(to));
                f("list", &list.as_str());
                f("class", &class.as_str());
            }
            Event::OrderFallbackTaken {
                group,
                from_order,
                to_order,
                class,
            } => {
                f("group", &g(group));
                f("from_order", from_order);
                f("to_order", to_order);
                f("class", &class.as_str());
            }
            Event::Committed {
                attempt,
                deployment,
            } => {
                f("attempt", attempt);
                f("deployment", &d(deployment));
            }
            Event::Completed {
                group,
                deployment,
                model,
                retries,
                fallbacks,
                chunks,
            } => {
                f("group", &g(group));
                f("deployment", &d(deployment));
                f("model", model);
                f("retries", retries);
                f("fallbacks", fallbacks);
                f("chunks", chunks);
            }
            Event::Failed {
                status,
                error_type,
                class,
                committed,
            } => {
                f("status", status);
                f("type", error_type);
                f("class", &class.as_str());
                f("committed", committed);
            }
            Event::ContinuationRefused { reason } => f("reason", &format_args!("{reason:?}")),
            Event::StopSequenceAtSeam { attempt }
            | Event::EndedAtBudget { attempt }
            | Event::StreamRefused { attempt } => f("attempt", attempt),
            Event::ClientGone { reason } => f("reason", &reason.as_str()),
            Event::LimitHit { limit } => f("limit", limit),
        }
        out
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "-".to_string(),
    }
}

/// An event with its time (since the engine started) and request number.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    pub at: Duration,
    pub request: u64,
    pub event: Event,
}

impl TraceRecord {
    /// `<ms> req=<n> <event>`: the canonical trace line (the harness prefixes the host).
    pub fn render(&self, catalog: &Catalog) -> String {
        format!(
            "{:>7}ms req={} {}",
            self.at.as_millis(),
            self.request,
            self.event.render(catalog)
        )
    }
}

/// Receives the engine's events. Called inline on the request path: keep it cheap.
pub trait Observer: Send + Sync + 'static {
    /// When false, the engine skips building events altogether.
    fn enabled(&self) -> bool {
        true
    }
    fn record(&self, record: TraceRecord, catalog: &Catalog);
}

/// Drops everything; the default for production embedders that do not trace.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrace;

impl Observer for NoTrace {
    fn enabled(&self) -> bool {
        false
    }
    fn record(&self, _: TraceRecord, _: &Catalog) {}
}

/// Hands every event to each of several observers, in order (a trace and the metrics, say).
/// Events are built when any of them is enabled, and given only to the enabled ones.
pub struct Fanout(pub Vec<std::sync::Arc<dyn Observer>>);

impl Observer for Fanout {
    fn enabled(&self) -> bool {
        self.0.iter().any(|o| o.enabled())
    }
    fn record(&self, record: TraceRecord, catalog: &Catalog) {
        let mut enabled = self.0.iter().filter(|o| o.enabled()).peekable();
        while let Some(observer) = enabled.next() {
            if enabled.peek().is_some() {
                observer.record(record.clone(), catalog);
            } else {
                observer.record(record, catalog);
                break;
            }
        }
    }
}

/// Keeps rendered lines in memory, up to a bound (for tests and the harness).
#[derive(Debug)]
pub struct TraceLog {
    lines: Mutex<Vec<String>>,
    records: Mutex<Vec<TraceRecord>>,
    max_lines: usize,
}

/// Default bound of a [`TraceLog`]: enough for any scenario, small enough to never matter.
pub const MAX_TRACE_LINES: usize = 100_000;

impl Default for TraceLog {
    fn default() -> Self {
        TraceLog::new(MAX_TRACE_LINES)
    }
}

impl TraceLog {
    pub fn new(max_lines: usize) -> TraceLog {
        TraceLog {
            lines: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
            max_lines,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("trace lock").clone()
    }

    pub fn records(&self) -> Vec<TraceRecord> {
        self.records.lock().expect("trace lock").clone()
    }
}

impl Observer for TraceLog {
    fn record(&self, record: TraceRecord, catalog: &Catalog) {
        let mut lines = self.lines.lock().expect("trace lock");
        if lines.len() < self.max_lines {
            lines.push(record.render(catalog));
        } else if lines.len() == self.max_lines {
            lines.push(format!(
                "... trace truncated at MAX_TRACE_LINES = {}",
                self.max_lines
            ));
        }
        drop(lines);
        let mut records = self.records.lock().expect("trace lock");
        if records.len() < self.max_lines {
            records.push(record);
        }
    }
}
