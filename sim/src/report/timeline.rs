//! One mode's run as things to draw: what happened on which lane at which simulated instant.
//!
//! Owns: turning a trace (its lines, plus which client request each gateway request number
//! carried) into [`Item`]s on lanes (`client`, `gateway`, one per provider host): request
//! and response arrows, chunk ticks, the fault where it fired, commit, retries, cooldown
//! bars, fallbacks; and each request's attempts, for finding where two modes diverge. Pure:
//! no I/O, no clock. Does not own drawing them (`page`).

use std::collections::{BTreeMap, VecDeque};

use super::parse::{self, get};

/// The shape an item is drawn as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// From (`lane`, `at`) to (`to_lane`, `to_at`).
    Arrow,
    /// A short vertical tick on the lane.
    Tick,
    /// A symbol on the lane.
    Marker,
    /// A bar on the lane from `at` to `until`.
    Bar,
}

/// One thing on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub shape: Shape,
    /// Its CSS classes after the shape's (`request`, `fault`, `commit`, ...): what tests and
    /// the legend name it by.
    pub kind: &'static str,
    pub lane: String,
    pub at: u64,
    /// The arrow's head, for [`Shape::Arrow`].
    pub to: Option<(String, u64)>,
    /// The bar's end, for [`Shape::Bar`].
    pub until: Option<u64>,
    /// Shown on hover: the trace's own words.
    pub title: String,
    /// The client request (`r0.0`) it belongs to, when known.
    pub request: Option<String>,
    /// Its attempt number within that request, when it is about one.
    pub attempt: Option<u32>,
    /// Marked as where the modes diverge (set by [`ModeTimeline::highlight`]).
    pub diverges: bool,
    /// A few words written next to it (the decisions a reader looks for first).
    pub label: Option<String>,
}

impl Item {
    fn new(shape: Shape, kind: &'static str, lane: &str, at: u64, title: String) -> Item {
        Item {
            shape,
            kind,
            lane: lane.to_string(),
            at,
            to: None,
            until: None,
            title,
            request: None,
            attempt: None,
            diverges: false,
            label: None,
        }
    }

    fn labelled(mut self, label: String) -> Item {
        self.label = Some(label);
        self
    }

    fn about(mut self, request: Option<&String>, attempt: Option<u32>) -> Item {
        self.request = request.cloned();
        self.attempt = attempt;
        self
    }
}

/// One attempt as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptView {
    pub number: u32,
    pub deployment: String,
    /// `ok`, a failure class, or `-` while it had no outcome.
    pub outcome: String,
    pub started: u64,
    pub ended: Option<u64>,
}

/// One mode's timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModeTimeline {
    pub mode: String,
    /// Lanes top to bottom: `client`, `gateway`, then the provider hosts.
    pub lanes: Vec<String>,
    pub items: Vec<Item>,
    /// Each client request's attempts, in order, by its label (`r0.0`).
    pub attempts: BTreeMap<String, Vec<AttemptView>>,
    /// The last instant anything happened.
    pub end_ms: u64,
}

/// What the timeline is built from.
pub struct TraceInput<'a> {
    pub mode: &'a str,
    pub trace: &'a str,
    /// Provider hosts, in the order their lanes are drawn.
    pub providers: &'a [String],
    /// Which provider host each deployment id calls.
    pub deployment_hosts: &'a BTreeMap<String, String>,
    /// The client label (`r0.0`) of each gateway request number, when known; unknown ones
    /// are paired with the client's sends in order.
    pub labels: &'a BTreeMap<u64, String>,
    /// Whether the gateway's own events are in the trace. An external gateway (`probe`)
    /// has none: a client's send is then drawn straight into the gateway, and each call a
    /// provider received as coming from it, with its scripted fault marked on arrival.
    pub gateway_traced: bool,
}

struct OpenAttempt {
    label: Option<String>,
    number: u32,
    host: String,
    started: u64,
    /// The scripted fault of the provider call it became (`error_event@3`), once matched.
    scripted_fault: Option<String>,
}

/// Builds one mode's timeline from its trace.
pub fn build(input: &TraceInput<'_>) -> ModeTimeline {
    let mut t = ModeTimeline {
        mode: input.mode.to_string(),
        lanes: vec!["client".to_string(), "gateway".to_string()],
        ..ModeTimeline::default()
    };
    t.lanes.extend(input.providers.iter().cloned());
    let mut sends: BTreeMap<String, u64> = BTreeMap::new();
    let mut unpaired_sends: VecDeque<String> = VecDeque::new();
    let mut labels: BTreeMap<u64, String> = input.labels.clone();
    let known_labels: std::collections::BTreeSet<&String> = input.labels.values().collect();
    // Per gateway request: its attempt in flight.
    let mut open: BTreeMap<u64, OpenAttempt> = BTreeMap::new();
    // Per provider host: attempts started towards it whose call it has not logged yet.
    let mut waiting: BTreeMap<String, VecDeque<u64>> = BTreeMap::new();

    for raw in input.trace.lines() {
        let Some(line) = parse::line(raw) else {
            continue;
        };
        let at = line.at_ms;
        t.end_ms = t.end_ms.max(at);
        match line.host.as_str() {
            "client" => {
                let (label, rest) = line.text.split_once(' ').unwrap_or((&line.text, ""));
                let label = label.to_string();
                let what = rest.split(' ').next().unwrap_or("");
                let f = parse::fields(rest);
                let title = format!("{at} ms client {label} {rest}");
                let req = Some(&label);
                match what {
                    "send" => {
                        if !input.gateway_traced {
                            let mut item =
                                Item::new(Shape::Arrow, "request", "client", at, title.clone())
                                    .about(req, None);
                            item.to = Some(("gateway".into(), at));
                            t.items.push(item);
                        }
                        sends.insert(label.clone(), at);
                        if !known_labels.contains(&label) {
                            unpaired_sends.push_back(label.clone());
                        }
                    }
                    "head" => {
                        let mut item = Item::new(Shape::Arrow, "response", "gateway", at, title)
                            .about(req, None);
                        item.to = Some(("client".into(), at));
                        t.items.push(item);
                    }
                    "chunk" => {
                        let text = get(&f, "text").unwrap_or_default();
                        let model = get(&f, "model").unwrap_or("-");
                        let title = format!("{at} ms {label} chunk {text:?} (model {model})");
                        t.items.push(
                            Item::new(Shape::Tick, "chunk", "client", at, title).about(req, None),
                        );
                    }
                    "end" => {
                        let ok = rest.contains(" ok ");
                        let kind = if ok { "end ok" } else { "end error" };
                        t.items.push(
                            Item::new(Shape::Marker, kind, "client", at, title).about(req, None),
                        );
                    }
                    "error_event" => t.items.push(
                        Item::new(Shape::Marker, "error-event", "client", at, title)
                            .about(req, None),
                    ),
                    "disconnects" | "stops" => t.items.push(
                        Item::new(Shape::Marker, "client-gone", "client", at, title)
                            .about(req, None),
                    ),
                    _ => {}
                }
            }
            "gateway" => {
                let f = parse::fields(&line.text);
                let Some(req) = get(&f, "req").and_then(|r| r.parse::<u64>().ok()) else {
                    continue;
                };
                let event = f.get(1).map_or("", |(k, _)| k.as_str());
                let title = format!("{at} ms gateway {}", line.text);
                let label = labels.get(&req).cloned();
                let host_of = |d: &str| input.deployment_hosts.get(d).cloned();
                match event {
                    "admitted" => {
                        let label = match labels.get(&req) {
                            Some(l) => Some(l.clone()),
                            None => unpaired_sends.pop_front().inspect(|l| {
                                labels.insert(req, l.clone());
                            }),
                        };
                        let from = label.as_ref().and_then(|l| sends.get(l)).copied();
                        let mut item =
                            Item::new(Shape::Arrow, "request", "client", from.unwrap_or(at), title)
                                .about(label.as_ref(), None);
                        item.to = Some(("gateway".into(), at));
                        t.items.push(item);
                    }
                    "attempt_started" => {
                        let number = get(&f, "attempt").and_then(|a| a.parse().ok()).unwrap_or(0);
                        let deployment = get(&f, "deployment").unwrap_or("-").to_string();
                        let host = host_of(&deployment).unwrap_or_else(|| "gateway".into());
                        t.lane(&host);
                        if let Some(l) = &label {
                            t.attempts.entry(l.clone()).or_default().push(AttemptView {
                                number,
                                deployment: deployment.clone(),
                                outcome: "-".into(),
                                started: at,
                                ended: None,
                            });
                        }
                        open.insert(
                            req,
                            OpenAttempt {
                                label: label.clone(),
                                number,
                                host: host.clone(),
                                started: at,
                                scripted_fault: None,
                            },
                        );
                        waiting.entry(host).or_default().push_back(req);
                    }
                    "attempt_failed" => {
                        let class = get(&f, "class").unwrap_or("-").to_string();
                        let deployment = get(&f, "deployment").unwrap_or("-");
                        let attempt = open.remove(&req);
                        let host = attempt
                            .as_ref()
                            .map(|a| a.host.clone())
                            .or_else(|| host_of(deployment))
                            .unwrap_or_else(|| "gateway".into());
                        let number = attempt.as_ref().map(|a| a.number);
                        let scripted = attempt.as_ref().and_then(|a| a.scripted_fault.clone());
                        let kind_name = scripted
                            .as_deref()
                            .and_then(|s| s.split('@').next())
                            .map(str::to_string)
                            .or_else(|| {
                                get(&f, "timeout")
                                    .filter(|t| *t != "-")
                                    .map(|t| format!("timeout {t}"))
                            })
                            .unwrap_or_else(|| class.clone());
                        let k = get(&f, "after_chunks").unwrap_or("-");
                        let status = get(&f, "status").unwrap_or("-");
                        let fault_title = format!(
                            "fault kind={kind_name} k={k} status={status} (class {class}) on {deployment}, attempt {}\n{title}",
                            number.map_or("-".into(), |n| n.to_string())
                        );
                        t.items.push(
                            Item::new(Shape::Marker, "fault", &host, at, fault_title)
                                .about(label.as_ref(), number)
                                .labelled(format!("{kind_name} k={k} {status}")),
                        );
                        let mut back =
                            Item::new(Shape::Arrow, "response failed", &host, at, title.clone())
                                .about(label.as_ref(), number);
                        back.to = Some(("gateway".into(), at));
                        t.items.push(back);
                        end_attempt(&mut t, label.as_ref(), number, &class, at);
                    }
                    "committed" | "completed" => {
                        let number = open.get(&req).map(|a| a.number);
                        let host = open
                            .get(&req)
                            .map(|a| a.host.clone())
                            .or_else(|| get(&f, "deployment").and_then(host_of))
                            .unwrap_or_else(|| "gateway".into());
                        let kind = if event == "committed" {
                            "commit"
                        } else {
                            "completed"
                        };
                        if event == "completed" {
                            open.remove(&req);
                            end_attempt(&mut t, label.as_ref(), number, "ok", at);
                        }
                        if host != "gateway" {
                            let mut back =
                                Item::new(Shape::Arrow, "response", &host, at, title.clone())
                                    .about(label.as_ref(), number);
                            back.to = Some(("gateway".into(), at));
                            t.items.push(back);
                        }
                        t.items.push(
                            Item::new(Shape::Marker, kind, "gateway", at, title)
                                .about(label.as_ref(), number)
                                .labelled(kind.to_string()),
                        );
                    }
                    "retry_scheduled" => t.items.push(
                        Item::new(Shape::Marker, "retry", "gateway", at, title)
                            .about(label.as_ref(), None)
                            .labelled(format!(
                                "retry in {} ms",
                                get(&f, "delay_ms").unwrap_or("-")
                            )),
                    ),
                    "fallback_taken" | "order_fallback_taken" => {
                        let to = get(&f, "to")
                            .map(str::to_string)
                            .or_else(|| get(&f, "to_order").map(|o| format!("order {o}")))
                            .unwrap_or_default();
                        t.items.push(
                            Item::new(Shape::Marker, "fallback", "gateway", at, title)
                                .about(label.as_ref(), None)
                                .labelled(format!("fallback → {to}")),
                        )
                    }
                    "deployment_cooled" => {
                        let deployment = get(&f, "deployment").unwrap_or("-");
                        let host = host_of(deployment).unwrap_or_else(|| "gateway".into());
                        let ms: u64 = get(&f, "for_ms").and_then(|m| m.parse().ok()).unwrap_or(0);
                        let mut bar = Item::new(Shape::Bar, "cooldown", &host, at, title)
                            .about(label.as_ref(), None)
                            .labelled(format!("{deployment} cooling {ms} ms"));
                        bar.until = Some(at.saturating_add(ms));
                        t.items.push(bar);
                    }
                    "failed" => {
                        if let Some(a) = open.remove(&req) {
                            end_attempt(&mut t, label.as_ref(), Some(a.number), "-", at);
                        }
                        t.items.push(
                            Item::new(Shape::Marker, "failed", "gateway", at, title)
                                .about(label.as_ref(), None)
                                .labelled(format!("failed {}", get(&f, "status").unwrap_or("-"))),
                        );
                    }
                    _ => t.items.push(
                        Item::new(Shape::Marker, "event", "gateway", at, title)
                            .about(label.as_ref(), None),
                    ),
                }
            }
            "network" | "harness" => {
                let kind = if line.host == "harness" {
                    "reload"
                } else {
                    "network"
                };
                let title = format!("{at} ms {} {}", line.host, line.text);
                let named: Vec<String> = line
                    .text
                    .split(' ')
                    .skip(1)
                    .filter(|w| t.lanes.iter().any(|l| l == w))
                    .map(str::to_string)
                    .collect();
                let words: String = line.text.chars().take(40).collect();
                if named.is_empty() {
                    t.items
                        .push(Item::new(Shape::Marker, kind, "gateway", at, title).labelled(words));
                } else {
                    for lane in named {
                        t.items.push(
                            Item::new(Shape::Marker, kind, &lane, at, title.clone())
                                .labelled(words.clone()),
                        );
                    }
                }
            }
            host => {
                // A provider: what it received.
                t.lane(host);
                let f = parse::fields(&line.text);
                let title = format!("{at} ms {host} {}", line.text);
                let fault = get(&f, "fault").filter(|f| *f != "-").map(str::to_string);
                let matched = waiting.get_mut(host).and_then(VecDeque::pop_front);
                match matched.and_then(|req| open.get_mut(&req)) {
                    Some(attempt) => {
                        attempt.scripted_fault = fault;
                        let started = attempt.started;
                        let mut item =
                            Item::new(Shape::Arrow, "request upstream", "gateway", started, title)
                                .about(attempt.label.as_ref(), Some(attempt.number));
                        item.to = Some((host.to_string(), at));
                        t.items.push(item);
                    }
                    None if !input.gateway_traced => {
                        let mut item = Item::new(
                            Shape::Arrow,
                            "request upstream",
                            "gateway",
                            at,
                            title.clone(),
                        );
                        item.to = Some((host.to_string(), at));
                        t.items.push(item);
                        if let Some(fault) = fault {
                            t.items.push(
                                Item::new(
                                    Shape::Marker,
                                    "fault",
                                    host,
                                    at,
                                    format!(
                                        "scripted fault {fault} (marked where the call arrived: the gateway's trace, which says when it met it, is not available)\n{title}"
                                    ),
                                )
                                .labelled(format!("scripted {fault}")),
                            );
                        }
                    }
                    None => t
                        .items
                        .push(Item::new(Shape::Marker, "received", host, at, title)),
                }
            }
        }
    }
    // A cooldown that outlasts the run is cut at the axis's end (its label and title say
    // how long it is): stretching the axis to a 30 s cooldown would crush the run itself.
    t
}

fn end_attempt(
    t: &mut ModeTimeline,
    label: Option<&String>,
    number: Option<u32>,
    outcome: &str,
    at: u64,
) {
    let (Some(label), Some(number)) = (label, number) else {
        return;
    };
    if let Some(a) = t
        .attempts
        .get_mut(label)
        .and_then(|v| v.iter_mut().rev().find(|a| a.number == number))
    {
        a.outcome = outcome.to_string();
        a.ended = Some(at);
    }
}

impl ModeTimeline {
    /// Adds `lane` below the others unless it is there already.
    fn lane(&mut self, lane: &str) {
        if !self.lanes.iter().any(|l| l == lane) {
            self.lanes.push(lane.to_string());
        }
    }

    /// Marks every item of `label`'s attempt `number` as where the modes diverge; adds a
    /// highlight band over the attempt on the gateway lane, titled with `message`.
    pub fn highlight(&mut self, label: &str, number: u32, message: &str) {
        for item in &mut self.items {
            if item.request.as_deref() == Some(label) && item.attempt == Some(number) {
                item.diverges = true;
            }
        }
        let span = self
            .attempts
            .get(label)
            .and_then(|v| v.iter().find(|a| a.number == number))
            .map(|a| (a.started, a.ended.unwrap_or(a.started)));
        let (from, to) = span.unwrap_or_else(|| {
            // The mode made no such attempt: mark where its last one ended.
            let last = self.attempts.get(label).and_then(|v| v.last());
            let at = last.map_or(0, |a| a.ended.unwrap_or(a.started));
            (at, at)
        });
        let mut band = Item::new(
            Shape::Bar,
            "divergence",
            "gateway",
            from,
            format!("first diverging attempt: {label} attempt {number}\n{message}"),
        )
        .about(Some(&label.to_string()), Some(number));
        band.until = Some(to.max(from));
        band.diverges = true;
        self.items.push(band);
    }
}

/// The first attempt (1-based) at which two modes' attempts of `label` differ (deployment
/// or outcome); the last attempt when their lists agree (the divergence is elsewhere: the
/// content, the counts, the outcome as the client saw it).
pub fn first_divergence(a: &ModeTimeline, b: &ModeTimeline, label: &str) -> u32 {
    let empty = Vec::new();
    let xa = a.attempts.get(label).unwrap_or(&empty);
    let xb = b.attempts.get(label).unwrap_or(&empty);
    let key = |v: &AttemptView| (v.deployment.clone(), v.outcome.clone());
    let i = xa
        .iter()
        .zip(xb.iter())
        .position(|(p, q)| key(p) != key(q))
        .unwrap_or_else(|| {
            if xa.len() == xb.len() {
                xa.len().saturating_sub(1)
            } else {
                xa.len().min(xb.len())
            }
        });
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}
