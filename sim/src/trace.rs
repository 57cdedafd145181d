//! The canonical trace of a run: every host's events, one line each, in time order.
//!
//! Owns: the [`TraceSink`] seam (fakes and the client write to it; the engine's observer is
//! adapted to it), the line format `<ms>ms <host> <event> <fields>` and the bound on its
//! length. Same scenario and seed ⇒ byte-identical trace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchback::catalog::Catalog;
use switchback::trace::{Observer, TraceRecord};

/// Lines a trace keeps; past this it records one truncation line and drops the rest.
pub const MAX_TRACE_LINES: usize = 50_000;

pub trait TraceSink: Send + Sync + 'static {
    fn line(&self, host: &str, text: String);
}

/// Prints every line to standard output (the `fakes` command's request log).
pub struct PrintSink;

impl TraceSink for PrintSink {
    fn line(&self, host: &str, text: String) {
        println!("{host:<9} {text}");
    }
}

/// Drops everything.
pub struct NullSink;

impl TraceSink for NullSink {
    fn line(&self, _: &str, _: String) {}
}

/// Where "now" comes from: the simulation's clock, or a real one in live mode.
pub type Clock = Box<dyn Fn() -> Duration + Send + Sync>;

pub struct Trace {
    lines: Mutex<Vec<String>>,
    clock: Clock,
}

impl Trace {
    pub fn new(clock: Clock) -> Arc<Trace> {
        Arc::new(Trace {
            lines: Mutex::new(Vec::new()),
            clock,
        })
    }

    /// A trace timed by turmoil's simulated clock.
    pub fn simulated() -> Arc<Trace> {
        Trace::new(Box::new(|| turmoil::sim_elapsed().unwrap_or_default()))
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("trace lock").clone()
    }

    pub fn text(&self) -> String {
        let mut t = self.lines().join("\n");
        t.push('\n');
        t
    }
}

impl Trace {
    /// A line stamped with `at` instead of the clock (events from outside any host).
    pub fn line_at(&self, at: Duration, host: &str, text: String) {
        let at = at.as_millis();
        let mut lines = self.lines.lock().expect("trace lock");
        if lines.len() < MAX_TRACE_LINES {
            lines.push(format!("{at:>6}ms {host:<9} {text}"));
        } else if lines.len() == MAX_TRACE_LINES {
            lines.push(format!(
                "... truncated at MAX_TRACE_LINES = {MAX_TRACE_LINES}"
            ));
        }
    }
}

impl TraceSink for Trace {
    fn line(&self, host: &str, text: String) {
        self.line_at((self.clock)(), host, text);
    }
}

/// The engine's observer: writes its events to the run's trace as host `gateway` and keeps
/// the typed records for the oracle.
pub struct EngineObserver {
    sink: Arc<dyn TraceSink>,
    records: Mutex<Vec<TraceRecord>>,
    /// The configs the world gave the gateway (the scenario's, then each reload's).
    catalogs: Mutex<Vec<Arc<Catalog>>>,
    /// Each request's config, by its index in `catalogs`, told by the catalog the engine
    /// names its admission with.
    admitted_under: Mutex<BTreeMap<u64, usize>>,
}

impl EngineObserver {
    pub fn new(sink: Arc<dyn TraceSink>) -> Arc<EngineObserver> {
        Arc::new(EngineObserver {
            sink,
            records: Mutex::new(Vec::new()),
            catalogs: Mutex::new(Vec::new()),
            admitted_under: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn records(&self) -> Vec<TraceRecord> {
        self.records.lock().expect("records lock").clone()
    }

    /// Registers a config the gateway runs with from now on.
    pub fn know(&self, catalog: Arc<Catalog>) {
        self.catalogs.lock().expect("catalogs lock").push(catalog);
    }

    pub fn catalogs(&self) -> Vec<Arc<Catalog>> {
        self.catalogs.lock().expect("catalogs lock").clone()
    }

    pub fn admitted_under(&self) -> BTreeMap<u64, usize> {
        self.admitted_under.lock().expect("admitted lock").clone()
    }
}

impl Observer for EngineObserver {
    fn record(&self, record: TraceRecord, catalog: &Catalog) {
        if let switchback::trace::Event::Admitted { .. } = record.event {
            // A gateway under test that builds engines of its own (a faulty test front)
            // names catalogs the world never saw: those requests count as the first config.
            let known = self.catalogs.lock().expect("catalogs lock");
            let under = known
                .iter()
                .position(|c| std::ptr::eq(&**c, catalog))
                .unwrap_or(0);
            drop(known);
            self.admitted_under
                .lock()
                .expect("admitted lock")
                .insert(record.request, under);
        }
        self.sink.line(
            "gateway",
            format!("req={} {}", record.request, record.event.render(catalog)),
        );
        let mut records = self.records.lock().expect("records lock");
        // Bounded like the trace; the oracle refuses to judge a run whose records reached
        // the bound (`oracle::check_run`) rather than read a cut record as the whole.
        if records.len() < MAX_TRACE_LINES {
            records.push(record);
        }
    }
}
