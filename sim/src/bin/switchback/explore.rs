//! `switchback explore` and `switchback replay`: driving the generator from the command line.
//!
//! Owns: running cases on worker threads (shards take disjoint seeds), the progress line,
//! the coverage report, shrinking and saving failing cases, and replaying one case.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchback_sim::explore::{self, Coverage};
use switchback_sim::world::{GatewayUnderTest, Switchback};

pub struct Options {
    pub cases: u64,
    pub seed: u64,
    pub time: Option<Duration>,
    /// (i, n), 1-based.
    pub shard: (u64, u64),
    pub check_determinism: bool,
    pub out: PathBuf,
    pub jobs: usize,
}

/// Failing cases shrunk and saved per run; the rest are listed by seed.
const MAX_SAVED: usize = 3;

pub fn main(o: Options) -> ExitCode {
    let (shard, shards) = o.shard;
    // Case index j of this shard has global index (shard - 1) + j * shards.
    let mine: u64 = (o.cases + shards - shard) / shards;
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failing: Mutex<Vec<(u64, Vec<String>)>> = Mutex::new(Vec::new());
    let coverage = Mutex::new(Coverage::default());
    let gateway: Arc<dyn GatewayUnderTest> = Arc::new(Switchback);
    let workers = AtomicU64::new(o.jobs.max(1) as u64);
    std::thread::scope(|s| {
        for _ in 0..o.jobs.max(1) {
            s.spawn(|| {
                let _exit = OnDrop(|| {
                    workers.fetch_sub(1, Ordering::Relaxed);
                });
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= mine {
                        return;
                    }
                    if o.time.is_some_and(|t| started.elapsed() >= t) {
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    let seed = o.seed.wrapping_add((shard - 1) + j * shards);
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_case(seed, &o, &gateway, &coverage)
                    }));
                    let failures = ran.unwrap_or_else(|_| {
                        vec![format!("case {seed} panicked (see the message above)")]
                    });
                    if !failures.is_empty() {
                        failing.lock().expect("failing").push((seed, failures));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let mut last = Instant::now();
        while workers.load(Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() >= progress_every() {
                last = Instant::now();
                progress(
                    done.load(Ordering::Relaxed),
                    mine,
                    started,
                    failing.lock().expect("failing").len(),
                );
            }
        }
    });
    finish(
        &o,
        started,
        mine,
        done.load(Ordering::Relaxed),
        failing,
        coverage,
    )
}

/// Runs one case; returns what failed.
fn run_case(
    seed: u64,
    o: &Options,
    gateway: &Arc<dyn GatewayUnderTest>,
    coverage: &Mutex<Coverage>,
) -> Vec<String> {
    let scenario = explore::case(seed);
    let mut failures = match scenario.check() {
        Ok(()) => Vec::new(),
        Err((path, m)) => vec![format!(
            "the generator made an invalid scenario: {}: {m}",
            switchback::yaml::render_path(&path)
        )],
    };
    if failures.is_empty() {
        let verdict = explore::judge(&scenario, gateway);
        failures = verdict.failures;
        if o.check_determinism {
            let again = explore::judge(&scenario, gateway);
            for (a, b) in verdict.runs.iter().zip(&again.runs) {
                if a.trace != b.trace {
                    failures.push(format!(
                        "[{}] not deterministic: a second run's trace differs",
                        a.mode.as_str()
                    ));
                }
            }
        }
        coverage
            .lock()
            .expect("coverage")
            .add(&scenario, &verdict.runs);
    }
    failures
}

fn finish(
    o: &Options,
    started: Instant,
    mine: u64,
    ran: u64,
    failing: Mutex<Vec<(u64, Vec<String>)>>,
    coverage: Mutex<Coverage>,
) -> ExitCode {
    let (shard, shards) = o.shard;
    progress(ran, mine, started, failing.lock().expect("failing").len());
    eprintln!();
    let elapsed = started.elapsed();
    let coverage = coverage.into_inner().expect("coverage");
    let mut failing = failing.into_inner().expect("failing");
    failing.sort_by_key(|(seed, _)| *seed);
    println!(
        "shard {shard}/{shards}: {ran} cases in {:.1} s ({:.0} cases per second), {} failing",
        elapsed.as_secs_f64(),
        ran as f64 / elapsed.as_secs_f64().max(1e-9),
        failing.len()
    );
    println!("fault kinds covered: {}", join(&coverage.fault_kinds));
    println!("provider dialects: {}", join(&coverage.dialects));
    println!("answer shapes: {}", join(&coverage.answers));
    println!("failure classes seen: {}", join(&coverage.classes));
    println!("distinct attempt sequences: {}", coverage.sequences.len());
    if failing.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (seed, failures) in failing.iter().take(MAX_SAVED) {
        println!("\ncase {seed} failed:");
        for f in failures.iter().take(5) {
            println!("  {f}");
        }
        let gateway: Arc<dyn GatewayUnderTest> = Arc::new(Switchback);
        let (small, small_failures) = explore::shrink(*seed, &gateway);
        match explore::save(&o.out, &small, &small_failures) {
            Ok(path) => println!(
                "  shrunk to {}\n  replay: cargo run --release -- run {}\n  or: cargo run --release -- replay --seed {seed}",
                path.display(),
                path.display()
            ),
            Err(e) => println!("  could not save the shrunk case: {e}"),
        }
    }
    if failing.len() > MAX_SAVED {
        let rest: Vec<String> = failing[MAX_SAVED..]
            .iter()
            .map(|(s, _)| s.to_string())
            .collect();
        println!("\nalso failing (seeds): {}", rest.join(", "));
    }
    ExitCode::FAILURE
}

/// Runs its closure when dropped, however the scope ends (a panic included).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A live progress line on a terminal; a line every few seconds in a log.
fn progress_every() -> Duration {
    if std::io::stderr().is_terminal() {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    }
}

fn join(set: &std::collections::BTreeSet<&'static str>) -> String {
    set.iter().copied().collect::<Vec<_>>().join(", ")
}

fn progress(done: u64, total: u64, started: Instant, failing: usize) {
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let width = 30;
    let filled = (done * width as u64)
        .checked_div(total)
        .map_or(width, |f| (f as usize).min(width));
    let end = if std::io::stderr().is_terminal() {
        "\r"
    } else {
        "\n"
    };
    eprint!(
        "[{}{}] {done}/{total} cases  {rate:.0}/s  failing {failing}   {end}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

pub fn replay(seed: u64, yaml: bool) -> ExitCode {
    let scenario = explore::case(seed);
    if yaml {
        match serde_saphyr::to_string(&scenario) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("cannot render the scenario: {e}"),
        }
    }
    let gateway: Arc<dyn GatewayUnderTest> = Arc::new(Switchback);
    let verdict = explore::judge(&scenario, &gateway);
    for run in &verdict.runs {
        println!("--- case {seed}, {} ---\n{}", run.mode.as_str(), run.trace);
    }
    if verdict.failures.is_empty() {
        println!("case {seed}: ok");
        ExitCode::SUCCESS
    } else {
        println!("case {seed}: FAILED");
        for f in &verdict.failures {
            println!("  {f}");
        }
        ExitCode::FAILURE
    }
}
