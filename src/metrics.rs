//! Prometheus metrics, fed by the engine's typed events.
//!
//! Owns: [`Metrics`], an [`Observer`] that folds every [`TraceRecord`] into counters and
//! histograms, and their rendering in the Prometheus text format (0.0.4) through the
//! `prometheus-client` crate. Every series lives in a `BTreeMap`, so a scrape lists series in
//! a fixed order. Label values come only from the config (group names, deployment ids, key
//! aliases) and from the engine's own closed vocabularies (failure classes, limit names,
//! modes, outcomes), never from request data: a model name a client sent that is not a
//! group never reaches admission, so it never becomes a label, and a request a wildcard
//! group serves (`openai/*`) is labelled by that group's pattern, not by the name it sent
//! (its events carry the group, never the name). The upstream connection pool's series are
//! the pool's own counts, read at each scrape ([`PoolStats`]), labelled by the upstreams
//! the config names (`scheme://host:port`).
//! Does not own the `/metrics` route (`gateway::routes`) nor any decision: it only watches.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::catalog::Catalog;
use crate::trace::{Event, Observer, TraceRecord};
use crate::upstream::pool::PoolStats;

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Requests followed from admission to their last event at once. Each HTTP/1 connection
/// carries one request at a time, so `max_connections` (4096 by default) bounds what is in
/// flight; this bound only guards against a request whose last event never comes. Past it,
/// new requests are counted in `switchback_metrics_untracked_requests_total` and otherwise
/// left out of the per-request series.
pub const MAX_TRACKED_REQUESTS: usize = 65_536;

/// The `reason` of a client that left while sending its request body (an admitted
/// request's reasons are [`GoneReason`](crate::attempt::GoneReason)'s).
pub const LEFT_DURING_UPLOAD: &str = "left_during_upload";

/// Upper bounds of the latency histograms' buckets, in seconds: from a loopback upstream's
/// millisecond to `request_deadline`'s default 600 s.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// The engine's counters and histograms. Cheap to share: clone the `Arc`.
pub struct Metrics {
    state: Arc<Mutex<State>>,
    registry: Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What the metrics know of a request between its admission and its last event.
#[derive(Debug, Clone)]
struct InFlight {
    group: String,
    key: String,
    mode: &'static str,
    admitted_at: Duration,
    committed: bool,
    /// When the attempt under way started, if one is.
    attempt_since: Option<Duration>,
    /// Time spent inside attempts (waiting on, or relaying, an upstream) so far.
    upstream: Duration,
    /// Backoff the request slept between attempts (a wait the retry policy chose).
    backoff: Duration,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket of [`LATENCY_BUCKETS`], not cumulative; the last slot is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        if self.counts.is_empty() {
            self.counts = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|upper| secs <= *upper)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += secs;
        self.count += 1;
    }

    /// `(upper bound, count in this bucket only)` pairs, `+Inf` last: the encoder sums
    /// them into the exposition's cumulative `le` buckets.
    fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(|(i, upper)| (upper, self.counts.get(i).copied().unwrap_or(0)))
            .collect()
    }
}

type Labels<const N: usize> = [(&'static str, String); N];

/// Every series, keyed by its label values.
#[derive(Debug, Clone, Default)]
struct State {
    in_flight: BTreeMap<u64, InFlight>,
    untracked: u64,
    /// group, key, mode, outcome
    requests: BTreeMap<[String; 4], u64>,
    /// group, deployment
    attempts: BTreeMap<[String; 2], u64>,
    /// deployment, class
    attempt_failures: BTreeMap<[String; 2], u64>,
    /// deployment
    failures_after_commit: BTreeMap<[String; 1], u64>,
    /// group, deployment
    retries: BTreeMap<[String; 2], u64>,
    /// from, to, class
    fallbacks: BTreeMap<[String; 3], u64>,
    /// group, reason
    groups_exhausted: BTreeMap<[String; 2], u64>,
    /// deployment, class
    cooldowns: BTreeMap<[String; 2], u64>,
    /// limit
    limit_hits: BTreeMap<[String; 1], u64>,
    /// route, status, limit
    refused_requests: BTreeMap<[String; 3], u64>,
    /// mode, reason
    client_disconnects: BTreeMap<[String; 2], u64>,
    /// worker
    worker_stalls: BTreeMap<[String; 1], u64>,
    /// limit
    connections_dropped: BTreeMap<[String; 1], u64>,
    /// reason
    continuations_refused: BTreeMap<[String; 1], u64>,
    /// group, mode, outcome
    request_duration: BTreeMap<[String; 3], Histogram>,
    /// group, mode
    time_to_commit: BTreeMap<[String; 2], Histogram>,
    /// group, mode
    gateway_added: BTreeMap<[String; 2], Histogram>,
    /// Filled just before a scrape: deployment id and remaining cooldown, catalog order.
    cooling: Vec<(String, Duration)>,
    /// Filled just before a scrape: the upstream connection pool's counts.
    pool: PoolStats,
}

fn bump<const N: usize>(map: &mut BTreeMap<[String; N], u64>, key: [&str; N]) {
    *map.entry(key.map(str::to_string)).or_insert(0) += 1;
}

impl State {
    fn record(&mut self, record: &TraceRecord, catalog: &Catalog) {
        let g = |id| catalog.group(id).name.as_str();
        let d = |id| catalog.deployment(id).id.as_str();
        let id = record.request;
        match &record.event {
            Event::Admitted { key, group, stream } => {
                if self.in_flight.len() >= MAX_TRACKED_REQUESTS {
                    self.untracked += 1;
                    return;
                }
                self.in_flight.insert(
                    id,
                    InFlight {
                        group: g(*group).to_string(),
                        key: key.clone(),
                        mode: if *stream { "stream" } else { "non_stream" },
                        admitted_at: record.at,
                        committed: false,
                        attempt_since: None,
                        upstream: Duration::ZERO,
                        backoff: Duration::ZERO,
                    },
                );
            }
            Event::AttemptStarted {
                group, deployment, ..
            } => {
                bump(&mut self.attempts, [g(*group), d(*deployment)]);
                if let Some(r) = self.in_flight.get_mut(&id) {
                    r.attempt_since = Some(record.at);
                }
            }
            Event::AttemptFailed {
                deployment, class, ..
            } => {
                if let Some(r) = self.in_flight.get_mut(&id) {
                    r.end_attempt(record.at);
                }
                bump(&mut self.attempt_failures, [d(*deployment), class.as_str()]);
                if self.in_flight.get(&id).is_some_and(|r| r.committed) {
                    bump(&mut self.failures_after_commit, [d(*deployment)]);
                }
            }
            Event::DeploymentCooled {
                deployment, class, ..
            } => bump(&mut self.cooldowns, [d(*deployment), class.as_str()]),
            Event::RetryScheduled {
                group,
                deployment,
                delay,
            } => {
                bump(&mut self.retries, [g(*group), d(*deployment)]);
                if let Some(r) = self.in_flight.get_mut(&id) {
                    r.backoff += *delay;
                }
            }
            Event::GroupExhausted { group, reason } => {
                bump(&mut self.groups_exhausted, [g(*group), reason.as_str()])
            }
            Event::FallbackTaken {
                from, to, class, ..
            } => bump(&mut self.fallbacks, [g(*from), g(*to), class.as_str()]),
            // An order-based fallback moves to the next tier of the same group.
            Event::OrderFallbackTaken { group, class, .. } => {
                bump(&mut self.fallbacks, [g(*group), g(*group), class.as_str()])
            }
            Event::Committed { .. } => {
                if let Some(r) = self.in_flight.get_mut(&id) {
                    r.committed = true;
                    let waited = record.at.saturating_sub(r.admitted_at);
                    self.time_to_commit
                        .entry([r.group.clone(), r.mode.to_string()])
                        .or_default()
                        .observe(waited);
                }
            }
            Event::Completed { .. } => self.finish(id, "completed", record.at),
            Event::Failed { committed, .. } => {
                let outcome = if *committed {
                    "failed_after_commit"
                } else {
                    "failed"
                };
                self.finish(id, outcome, record.at);
            }
            Event::ClientGone { reason } => {
                let mode = self.in_flight.get(&id).map_or("unknown", |r| r.mode);
                bump(&mut self.client_disconnects, [mode, reason.as_str()]);
                self.finish(id, "client_gone", record.at);
            }
            Event::LimitHit { limit } => bump(&mut self.limit_hits, [limit]),
            Event::ContinuationRefused { reason } => {
                bump(&mut self.continuations_refused, [reason])
            }
            Event::PlanResolved { .. }
            | Event::FailureNotCounted { .. }
            | Event::LinkSkipped { .. }
            | Event::StopSequenceAtSeam { .. }
            | Event::EndedAtBudget { .. }
            | Event::StreamRefused { .. }
            // `switchback_retries_total` counts a retry by the deployment it was scheduled
            // on, when it was: a reroute moves no count.
            | Event::RetryRerouted { .. } => {}
        }
    }

    /// The request's last event: its outcome, total time and the gateway's own share.
    fn finish(&mut self, id: u64, outcome: &str, at: Duration) {
        let Some(mut r) = self.in_flight.remove(&id) else {
            return;
        };
        r.end_attempt(at);
        bump(&mut self.requests, [&r.group, &r.key, r.mode, outcome]);
        let total = at.saturating_sub(r.admitted_at);
        self.gateway_added
            .entry([r.group.clone(), r.mode.to_string()])
            .or_default()
            .observe(total.saturating_sub(r.upstream + r.backoff));
        self.request_duration
            .entry([r.group, r.mode.to_string(), outcome.to_string()])
            .or_default()
            .observe(total);
    }
}

impl InFlight {
    /// The attempt under way, if any, ends at `at`.
    fn end_attempt(&mut self, at: Duration) {
        if let Some(since) = self.attempt_since.take() {
            self.upstream += at.saturating_sub(since);
        }
    }
}

/// The registry's one collector: encodes [`State`] in a fixed order.
#[derive(Debug)]
struct StateCollector(Arc<Mutex<State>>);

impl StateCollector {
    /// A copy of every series, taken under the lock and encoded outside it: every
    /// request's events wait on this lock, and writing the exposition's text takes longer
    /// than copying the series (1.4 ms against 0.9 ms for 5,000 keys' series, release
    /// build).
    /// The requests in flight are left out (nothing encodes them, and there may be
    /// thousands).
    fn series(&self) -> State {
        let mut state = self.0.lock().expect("metrics lock");
        let in_flight = std::mem::take(&mut state.in_flight);
        let copy = state.clone();
        state.in_flight = in_flight;
        copy
    }
}

fn labels<const N: usize>(names: [&'static str; N], values: &[String; N]) -> Labels<N> {
    let mut i = 0;
    names.map(|n| {
        let v = values[i].clone();
        i += 1;
        (n, v)
    })
}

fn counter_family<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    names: [&'static str; N],
    series: &BTreeMap<[String; N], u64>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (values, count) in series {
        let set = labels(names, values);
        metric
            .encode_family(&set)?
            .encode_counter::<NoLabelSet, _, u64>(count, None)?;
    }
    Ok(())
}

fn histogram_family<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    names: [&'static str; N],
    series: &BTreeMap<[String; N], Histogram>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (values, h) in series {
        let set = labels(names, values);
        metric.encode_family(&set)?.encode_histogram::<NoLabelSet>(
            h.sum,
            h.count,
            &h.buckets(),
            None,
        )?;
    }
    Ok(())
}

fn gauge_family<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (S, f64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (set, value) in series {
        metric.encode_family(&set)?.encode_gauge(&value)?;
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = self.series();
        counter_family(
            &mut e,
            "switchback_requests",
            "Admitted requests by requested group, key alias, mode and outcome (completed, failed, failed_after_commit, client_gone).",
            ["group", "key", "mode", "outcome"],
            &s.requests,
        )?;
        counter_family(
            &mut e,
            "switchback_attempts",
            "Upstream attempts started, by group and deployment.",
            ["group", "deployment"],
            &s.attempts,
        )?;
        counter_family(
            &mut e,
            "switchback_attempt_failures",
            "Failed upstream attempts, by deployment and failure class.",
            ["deployment", "class"],
            &s.attempt_failures,
        )?;
        counter_family(
            &mut e,
            "switchback_failures_after_commit",
            "Attempts that failed after the request had committed (a stream already under way), by deployment.",
            ["deployment"],
            &s.failures_after_commit,
        )?;
        counter_family(
            &mut e,
            "switchback_retries",
            "Retries scheduled within a group, by group and the deployment the retry goes to.",
            ["group", "deployment"],
            &s.retries,
        )?;
        counter_family(
            &mut e,
            "switchback_fallbacks",
            "Fallbacks taken, by the group left, the group tried next and the failure class that caused it.",
            ["from", "to", "class"],
            &s.fallbacks,
        )?;
        counter_family(
            &mut e,
            "switchback_groups_exhausted",
            "Groups (or a group's order tier) given up on within a request, by group and reason.",
            ["group", "reason"],
            &s.groups_exhausted,
        )?;
        counter_family(
            &mut e,
            "switchback_cooldowns",
            "Cooldowns started, by deployment and the failure class that caused them.",
            ["deployment", "class"],
            &s.cooldowns,
        )?;
        counter_family(
            &mut e,
            "switchback_limit_hits",
            "Named limits hit (an attempt's upstream answer over one may then be retried), by limit.",
            ["limit"],
            &s.limit_hits,
        )?;
        counter_family(
            &mut e,
            "switchback_refused_requests",
            "Requests refused before admission (a bad key, an unknown route or model, a bad body, a connection past max_connections), by route, status and the named limit that refused them (none: no limit).",
            ["route", "status", "limit"],
            &s.refused_requests,
        )?;
        counter_family(
            &mut e,
            "switchback_client_disconnects",
            "Requests abandoned because the client left or stopped reading, by mode (unknown: it left before its body was read) and reason (left, too_slow, left_during_upload).",
            ["mode", "reason"],
            &s.client_disconnects,
        )?;
        counter_family(
            &mut e,
            "switchback_connections_dropped",
            "Connections closed at once, unanswered, by the limit that was full (max_overflow_connections: past max_connections, the overflow that answers 503 was full too).",
            ["limit"],
            &s.connections_dropped,
        )?;
        counter_family(
            &mut e,
            "switchback_worker_stalls",
            "Times a serve worker's event loop stopped turning for over 50 ms (every connection of that worker waited), by worker.",
            ["worker"],
            &s.worker_stalls,
        )?;
        counter_family(
            &mut e,
            "switchback_continuations_refused",
            "Failures after commit under mid_stream: continue that could not be continued, by reason.",
            ["reason"],
            &s.continuations_refused,
        )?;
        let untracked = BTreeMap::from([([], s.untracked)]);
        counter_family(
            &mut e,
            "switchback_metrics_untracked_requests",
            "Requests left out of per-request series because MAX_TRACKED_REQUESTS were in flight.",
            [],
            &untracked,
        )?;
        histogram_family(
            &mut e,
            "switchback_request_duration_seconds",
            "Time from admission to the request's last event, by requested group, mode and outcome.",
            ["group", "mode", "outcome"],
            &s.request_duration,
        )?;
        histogram_family(
            &mut e,
            "switchback_time_to_commit_seconds",
            "Time from admission to commit (the first content chunk of some attempt: what a streaming client waits for its first byte), by requested group and mode.",
            ["group", "mode"],
            &s.time_to_commit,
        )?;
        histogram_family(
            &mut e,
            "switchback_gateway_added_seconds",
            "The gateway's own share of a request's time: from admission to its last event, less the time inside upstream attempts and the retry backoff slept, by requested group and mode.",
            ["group", "mode"],
            &s.gateway_added,
        )?;
        gauge_family(
            &mut e,
            "switchback_deployment_cooling",
            "1 while a deployment is cooling, else 0.",
            s.cooling.iter().map(|(d, left)| {
                (
                    [("deployment", d.clone())],
                    f64::from(u8::from(!left.is_zero())),
                )
            }),
        )?;
        gauge_family(
            &mut e,
            "switchback_deployment_cooldown_remaining_seconds",
            "Time until a cooling deployment is healthy again (0 when healthy).",
            s.cooling
                .iter()
                .map(|(d, left)| ([("deployment", d.clone())], left.as_secs_f64())),
        )?;
        encode_pool(&mut e, &s.pool)
    }
}

/// The upstream connection pool's series.
fn encode_pool(e: &mut DescriptorEncoder, pool: &PoolStats) -> fmt::Result {
    let mut opened = BTreeMap::new();
    let mut reused = BTreeMap::new();
    for (upstream, u) in &pool.upstreams {
        for (protocol, n) in [("http1", u.opened_http1), ("http2", u.opened_http2)] {
            if n > 0 {
                opened.insert([upstream.clone(), protocol.to_string()], n);
            }
        }
        reused.insert([upstream.clone()], u.reused);
    }
    counter_family(
        e,
        "switchback_upstream_connections_opened",
        "Upstream connections opened, by upstream (scheme://host:port) and protocol (http1, http2).",
        ["upstream", "protocol"],
        &opened,
    )?;
    counter_family(
        e,
        "switchback_upstream_connections_reused",
        "Upstream requests given a connection that was open already (a kept HTTP/1.1 one, or a stream on an open HTTP/2 one), by upstream.",
        ["upstream"],
        &reused,
    )?;
    gauge_family(
        e,
        "switchback_upstream_connections_idle",
        "Idle upstream connections kept right now, by upstream.",
        pool.upstreams
            .iter()
            .map(|(upstream, u)| ([("upstream", upstream.clone())], u.idle as f64)),
    )?;
    let resends = BTreeMap::from([
        (["not_processed".to_string()], pool.resent_unprocessed),
        (["stale_connection".to_string()], pool.resent_stale),
    ]);
    counter_family(
        e,
        "switchback_upstream_resends",
        "Upstream requests sent again on another connection, by reason: stale_connection (a kept connection found closed before any byte was written), not_processed (an HTTP/2 upstream refused the stream, or left it out with a graceful GOAWAY).",
        ["reason"],
        &resends,
    )
}

/// The log writer's count of dropped lines, as a counter.
struct DroppedLogLines(Box<dyn Fn() -> u64 + Send + Sync>);

impl fmt::Debug for DroppedLogLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DroppedLogLines")
    }
}

impl Collector for DroppedLogLines {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let dropped = BTreeMap::from([([], (self.0)())]);
        counter_family(
            &mut e,
            "switchback_log_lines_dropped",
            "Log lines dropped because the queue to stderr was full (--log-queue-lines): stderr's reader fell behind.",
            [],
            &dropped,
        )
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let state = Arc::new(Mutex::new(State::default()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StateCollector(state.clone())));
        Metrics { state, registry }
    }

    /// Adds `switchback_log_lines_dropped_total`, read from `dropped` at each scrape: the
    /// lines `serve`'s log writer dropped because its queue was full (the engine, which logs
    /// them, cannot see that).
    pub fn with_dropped_log_lines(
        mut self,
        dropped: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Metrics {
        self.registry
            .register_collector(Box::new(DroppedLogLines(Box::new(dropped))));
        self
    }

    /// The exposition, with the deployments' cooldowns as `cooling` says (deployment id and
    /// remaining time, in catalog order; see [`crate::engine::Engine::cooling`]) and the
    /// upstream connections as `pool` says ([`crate::upstream::pool::Pool::stats`]).
    pub fn render(&self, cooling: Vec<(String, Duration)>, pool: PoolStats) -> String {
        {
            let mut state = self.state.lock().expect("metrics lock");
            state.cooling = cooling;
            state.pool = pool;
        }
        let mut out = String::new();
        // Writing to a String cannot fail; a collector error would be a bug in this file.
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("metrics encode into a String");
        out
    }

    /// Counts a stall of `serve`'s worker `worker`: its event loop woke late past the
    /// threshold (see `worker_stalled` in the logs). The engine cannot see these: `serve`
    /// reports them.
    pub fn record_worker_stall(&self, worker: usize) {
        *self
            .state
            .lock()
            .expect("metrics lock")
            .worker_stalls
            .entry([worker.to_string()])
            .or_default() += 1;
    }

    /// Counts a connection closed unanswered because every slot, the overflow's too, was
    /// taken. Not logged line by line: a flood of them would flood the log.
    pub fn record_dropped_connection(&self) {
        bump(
            &mut self.state.lock().expect("metrics lock").connections_dropped,
            ["max_overflow_connections"],
        );
    }

    /// Counts a request refused before admission, which the engine's events never see:
    /// `route` is the route's name (`none` for no route), `limit` the named limit that
    /// refused it. Every label is the gateway's own: no request data becomes a label.
    pub fn record_refusal(&self, route: &'static str, status: u16, limit: Option<&'static str>) {
        bump(
            &mut self.state.lock().expect("metrics lock").refused_requests,
            [route, &status.to_string(), limit.unwrap_or("none")],
        );
    }

    /// Counts a client that left while sending its request body: before admission, so its
    /// mode is `unknown`, and its reason says when it left.
    pub fn record_client_gone_before_admission(&self) {
        bump(
            &mut self.state.lock().expect("metrics lock").client_disconnects,
            ["unknown", LEFT_DURING_UPLOAD],
        );
    }

    /// Requests admitted and not yet finished, as the metrics see them.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("metrics lock").in_flight.len()
    }
}

impl Observer for Metrics {
    fn record(&self, record: TraceRecord, catalog: &Catalog) {
        self.state
            .lock()
            .expect("metrics lock")
            .record(&record, catalog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DeploymentId, GroupId};
    use crate::classify::FailureClass;
    use crate::config::GatewayConfig;
    use crate::plan::ListKind;

    const CONFIG: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: a, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: a1}}
  - {model_name: b, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: b1}}
"#;

    fn catalog() -> Catalog {
        let config = GatewayConfig::load("t.yaml", CONFIG).unwrap_or_else(|e| panic!("{e}"));
        Catalog::new(&config).unwrap()
    }

    fn at(ms: u64, request: u64, event: Event) -> TraceRecord {
        TraceRecord {
            at: Duration::from_millis(ms),
            request,
            event,
        }
    }

    fn failed(deployment: u32, class: FailureClass) -> Event {
        Event::AttemptFailed {
            attempt: 1,
            deployment: DeploymentId(deployment),
            class,
            status: Some(429),
            retry_after: None,
            after_chunks: 0,
            mocked: false,
            timeout: None,
        }
    }

    /// One streamed request: a1 rate-limited, fallback to b, b1 commits then fails, and
    /// the request fails after commit. One non-stream request completes on a1.
    fn feed(m: &Metrics, c: &Catalog) {
        feed_scraping(m, c, false);
    }

    /// [`feed`], scraping after every event when `scrape`.
    fn feed_scraping(m: &Metrics, c: &Catalog, scrape: bool) {
        let (a, b) = (GroupId(0), GroupId(1));
        let events = [
            at(
                0,
                1,
                Event::Admitted {
                    key: "anonymous".into(),
                    group: a,
                    stream: true,
                },
            ),
            at(
                0,
                1,
                Event::AttemptStarted {
                    attempt: 1,
                    group: a,
                    deployment: DeploymentId(0),
                    continuation: false,
                },
            ),
            at(2, 1, failed(0, FailureClass::RateLimited)),
            at(
                2,
                1,
                Event::DeploymentCooled {
                    deployment: DeploymentId(0),
                    duration: Duration::from_secs(5),
                    class: FailureClass::RateLimited,
                },
            ),
            at(
                2,
                1,
                Event::FallbackTaken {
                    from: a,
                    to: b,
                    list: ListKind::Fallbacks,
                    class: FailureClass::RateLimited,
                },
            ),
            at(
                2,
                1,
                Event::AttemptStarted {
                    attempt: 2,
                    group: b,
                    deployment: DeploymentId(1),
                    continuation: false,
                },
            ),
            at(
                7,
                1,
                Event::Committed {
                    attempt: 2,
                    deployment: DeploymentId(1),
                },
            ),
            at(9, 1, failed(1, FailureClass::Transient)),
            at(
                9,
                1,
                Event::Failed {
                    status: 502,
                    error_type: "api_error",
                    class: FailureClass::Transient,
                    committed: true,
                },
            ),
            at(
                10,
                2,
                Event::Admitted {
                    key: "anonymous".into(),
                    group: a,
                    stream: false,
                },
            ),
            at(
                10,
                2,
                Event::AttemptStarted {
                    attempt: 1,
                    group: a,
                    deployment: DeploymentId(0),
                    continuation: false,
                },
            ),
            at(
                13,
                2,
                Event::Committed {
                    attempt: 1,
                    deployment: DeploymentId(0),
                },
            ),
            at(
                40,
                2,
                Event::Completed {
                    group: a,
                    deployment: DeploymentId(0),
                    model: "m".into(),
                    retries: 0,
                    fallbacks: 0,
                    chunks: 2,
                },
            ),
            at(
                41,
                3,
                Event::LimitHit {
                    limit: "max_attempts",
                },
            ),
        ];
        for e in events {
            m.record(e, c);
            if scrape {
                m.render(Vec::new(), PoolStats::default());
            }
        }
    }

    /// A scrape copies the series and puts the requests in flight back: scraping between
    /// every two events leaves the same exposition, and no request behind.
    #[test]
    fn a_scrape_between_any_two_events_changes_nothing() {
        let c = catalog();
        let (plain, scraped) = (Metrics::new(), Metrics::new());
        feed(&plain, &c);
        feed_scraping(&scraped, &c, true);
        let render = |m: &Metrics| m.render(Vec::new(), PoolStats::default());
        assert_eq!(render(&scraped), render(&plain));
        assert_eq!(scraped.in_flight(), 0);
        assert!(
            render(&plain).contains("switchback_request_duration_seconds_count{group=\"a\",mode=\"non_stream\",outcome=\"completed\"} 1"),
            "the latency needs the admission time kept in flight across the scrapes"
        );
    }

    #[test]
    fn events_become_counters_with_config_labels_in_a_fixed_order() {
        let (m, c) = (Metrics::new(), catalog());
        feed(&m, &c);
        let pool = || PoolStats {
            upstreams: BTreeMap::from([(
                "https://api.example:443".to_string(),
                crate::upstream::pool::UpstreamStats {
                    opened_http1: 2,
                    opened_http2: 0,
                    reused: 7,
                    idle: 1,
                },
            )]),
            resent_stale: 3,
            resent_unprocessed: 0,
        };
        let text = m.render(
            vec![
                ("a1".into(), Duration::from_millis(4_500)),
                ("b1".into(), Duration::ZERO),
            ],
            pool(),
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let wanted = [
            r#"switchback_requests_total{group="a",key="anonymous",mode="non_stream",outcome="completed"} 1"#,
            r#"switchback_requests_total{group="a",key="anonymous",mode="stream",outcome="failed_after_commit"} 1"#,
            r#"switchback_attempts_total{group="a",deployment="a1"} 2"#,
            r#"switchback_attempts_total{group="b",deployment="b1"} 1"#,
            r#"switchback_attempt_failures_total{deployment="a1",class="rate_limited"} 1"#,
            r#"switchback_attempt_failures_total{deployment="b1",class="transient"} 1"#,
            r#"switchback_failures_after_commit_total{deployment="b1"} 1"#,
            r#"switchback_fallbacks_total{from="a",to="b",class="rate_limited"} 1"#,
            r#"switchback_cooldowns_total{deployment="a1",class="rate_limited"} 1"#,
            r#"switchback_limit_hits_total{limit="max_attempts"} 1"#,
            r#"switchback_metrics_untracked_requests_total 0"#,
            r#"switchback_deployment_cooling{deployment="a1"} 1.0"#,
            r#"switchback_deployment_cooling{deployment="b1"} 0.0"#,
            r#"switchback_deployment_cooldown_remaining_seconds{deployment="a1"} 4.5"#,
            r#"switchback_upstream_connections_opened_total{upstream="https://api.example:443",protocol="http1"} 2"#,
            r#"switchback_upstream_connections_reused_total{upstream="https://api.example:443"} 7"#,
            r#"switchback_upstream_connections_idle{upstream="https://api.example:443"} 1.0"#,
            r#"switchback_upstream_resends_total{reason="stale_connection"} 3"#,
            r#"switchback_upstream_resends_total{reason="not_processed"} 0"#,
        ];
        for w in wanted {
            assert!(lines.contains(&w), "missing `{w}` in:\n{text}");
        }
        // Fixed order: the same events rendered twice give the same bytes, and the series
        // of a family come sorted by their label values.
        let again = Metrics::new();
        feed(&again, &c);
        assert_eq!(
            text,
            again.render(
                vec![
                    ("a1".into(), Duration::from_millis(4_500)),
                    ("b1".into(), Duration::ZERO),
                ],
                pool(),
            )
        );
        assert!(
            !text.contains(r#"protocol="http2""#),
            "no series for a protocol never opened"
        );
        let requests: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("switchback_requests_total"))
            .collect();
        assert!(requests[0].contains("non_stream") && requests[1].contains("\"stream\""));
        assert_eq!(m.in_flight(), 0, "both requests finished");
    }

    #[test]
    fn latency_histograms_measure_from_admission() {
        let (m, c) = (Metrics::new(), catalog());
        feed(&m, &c);
        let text = m.render(Vec::new(), PoolStats::default());
        let has = |w: &str| assert!(text.lines().any(|l| l == w), "missing `{w}` in:\n{text}");
        // Request 1 committed 7 ms after admission, request 2 3 ms after.
        has(r#"switchback_time_to_commit_seconds_bucket{group="a",mode="stream",le="0.005"} 0"#);
        has(r#"switchback_time_to_commit_seconds_bucket{group="a",mode="stream",le="0.01"} 1"#);
        has(
            r#"switchback_time_to_commit_seconds_bucket{group="a",mode="non_stream",le="0.005"} 1"#,
        );
        has(r#"switchback_time_to_commit_seconds_count{group="a",mode="stream"} 1"#);
        // Request 2 took 30 ms in all.
        has(
            r#"switchback_request_duration_seconds_bucket{group="a",mode="non_stream",outcome="completed",le="0.025"} 0"#,
        );
        has(
            r#"switchback_request_duration_seconds_bucket{group="a",mode="non_stream",outcome="completed",le="0.05"} 1"#,
        );
        has(
            r#"switchback_request_duration_seconds_bucket{group="a",mode="non_stream",outcome="completed",le="+Inf"} 1"#,
        );
        has(
            r#"switchback_request_duration_seconds_sum{group="a",mode="non_stream",outcome="completed"} 0.03"#,
        );
        has("# TYPE switchback_request_duration_seconds histogram");
    }

    #[test]
    fn the_gateways_own_time_leaves_out_upstream_waits_and_backoff() {
        let (m, c) = (Metrics::new(), catalog());
        let started = |n| Event::AttemptStarted {
            attempt: n,
            group: GroupId(0),
            deployment: DeploymentId(0),
            continuation: false,
        };
        let events = [
            at(
                0,
                1,
                Event::Admitted {
                    key: "anonymous".into(),
                    group: GroupId(0),
                    stream: false,
                },
            ),
            // 2 ms to admit and plan, 3 ms on the upstream, a 10 ms backoff, 1 ms more of
            // the gateway's own, then 4 ms on the upstream.
            at(2, 1, started(1)),
            at(5, 1, failed(0, FailureClass::Transient)),
            at(
                5,
                1,
                Event::RetryScheduled {
                    group: GroupId(0),
                    deployment: DeploymentId(0),
                    delay: Duration::from_millis(10),
                },
            ),
            at(16, 1, started(2)),
            at(
                20,
                1,
                Event::Committed {
                    attempt: 2,
                    deployment: DeploymentId(0),
                },
            ),
            at(
                20,
                1,
                Event::Completed {
                    group: GroupId(0),
                    deployment: DeploymentId(0),
                    model: "m".into(),
                    retries: 1,
                    fallbacks: 0,
                    chunks: 1,
                },
            ),
        ];
        for e in events {
            m.record(e, &c);
        }
        let text = m.render(Vec::new(), PoolStats::default());
        let has = |w: &str| assert!(text.lines().any(|l| l == w), "missing `{w}` in:\n{text}");
        has(r#"switchback_gateway_added_seconds_sum{group="a",mode="non_stream"} 0.003"#);
        has(r#"switchback_gateway_added_seconds_count{group="a",mode="non_stream"} 1"#);
        has(
            r#"switchback_request_duration_seconds_sum{group="a",mode="non_stream",outcome="completed"} 0.02"#,
        );
    }

    #[test]
    fn worker_stalls_are_counted_by_worker() {
        let m = Metrics::new();
        m.record_worker_stall(1);
        m.record_worker_stall(1);
        m.record_worker_stall(0);
        let text = m.render(Vec::new(), PoolStats::default());
        let has = |w: &str| assert!(text.lines().any(|l| l == w), "missing `{w}` in:\n{text}");
        has(r#"switchback_worker_stalls_total{worker="0"} 1"#);
        has(r#"switchback_worker_stalls_total{worker="1"} 2"#);
    }

    #[test]
    fn requests_past_the_tracking_bound_are_counted_not_followed() {
        let (m, c) = (Metrics::new(), catalog());
        for id in 0..=MAX_TRACKED_REQUESTS as u64 {
            m.record(
                at(
                    0,
                    id,
                    Event::Admitted {
                        key: "anonymous".into(),
                        group: GroupId(0),
                        stream: false,
                    },
                ),
                &c,
            );
        }
        assert_eq!(m.in_flight(), MAX_TRACKED_REQUESTS);
        let text = m.render(Vec::new(), PoolStats::default());
        assert!(
            text.contains("switchback_metrics_untracked_requests_total 1\n"),
            "{text}"
        );
    }
}
