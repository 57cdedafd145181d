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

use switchback_sim::explore::{self, Concurrency, Coverage};
use switchback_sim::world::{GatewayUnderTest, Switchback, WorldOptions};

pub struct Options {
    pub cases: u64,
    pub seed: u64,
    pub time: Option<Duration>,
    /// (i, n), 1-based.
    pub shard: (u64, u64),
    pub check_determinism: bool,
    pub out: PathBuf,
    /// Also write each saved case's timeline page here.
    pub html: Option<PathBuf>,
    pub jobs: usize,
    /// How often a case has several requests in flight at once.
    pub concurrency: Concurrency,
    /// The world the cases run in (the default, or a deliberately broken one).
    pub world: WorldOptions,
}

/// Failing cases shrunk and saved per run; the rest are listed by seed.
const MAX_SAVED: usize = 3;

/// A failing case: its seed, what failed, and the first attempt its modes asked differently
/// (continuation against fresh answer), if any.
type Failing = (u64, Vec<String>, Option<String>);

pub fn main(o: Options) -> ExitCode {
    let (shard, shards) = o.shard;
    // Case index j of this shard has global index (shard - 1) + j * shards.
    let mine: u64 = (o.cases + shards - shard) / shards;
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failing: Mutex<Vec<Failing>> = Mutex::new(Vec::new());
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
                    let (failures, asked) = ran.unwrap_or_else(|_| {
                        (
                            vec![format!("case {seed} panicked (see the message above)")],
                            None,
                        )
                    });
                    if !failures.is_empty() {
                        failing
                            .lock()
                            .expect("failing")
                            .push((seed, failures, asked));
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

/// Runs one case; returns what failed, and where its modes asked an attempt differently.
fn run_case(
    seed: u64,
    o: &Options,
    gateway: &Arc<dyn GatewayUnderTest>,
    coverage: &Mutex<Coverage>,
) -> (Vec<String>, Option<String>) {
    let scenario = explore::case_with(seed, o.concurrency);
    let mut failures = match scenario.check() {
        Ok(()) => Vec::new(),
        Err((path, m)) => vec![format!(
            "the generator made an invalid scenario: {}: {m}",
            switchback::yaml::render_path(&path)
        )],
    };
    let mut asked = None;
    if failures.is_empty() {
        let verdict = explore::judge_in(&scenario, gateway, o.world);
        asked = explore::asked_differently(&verdict.runs);
        failures = verdict.failures;
        if o.check_determinism {
            let again = explore::judge_in(&scenario, gateway, o.world);
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
    (failures, asked)
}

fn finish(
    o: &Options,
    started: Instant,
    mine: u64,
    ran: u64,
    failing: Mutex<Vec<Failing>>,
    coverage: Mutex<Coverage>,
) -> ExitCode {
    let (shard, shards) = o.shard;
    progress(ran, mine, started, failing.lock().expect("failing").len());
    eprintln!();
    let elapsed = started.elapsed();
    let coverage = coverage.into_inner().expect("coverage");
    let mut failing = failing.into_inner().expect("failing");
    failing.sort_by_key(|(seed, _, _)| *seed);
    let asked = failing.iter().filter(|(_, _, a)| a.is_some()).count();
    println!(
        "shard {shard}/{shards}: {ran} cases in {:.1} s ({:.0} cases per second), {} failing ({asked} where the modes asked an attempt differently: a continuation in one, a fresh answer in the other)",
        elapsed.as_secs_f64(),
        ran as f64 / elapsed.as_secs_f64().max(1e-9),
        failing.len()
    );
    println!("fault kinds covered: {}", join(&coverage.fault_kinds));
    println!("provider dialects: {}", join(&coverage.dialects));
    println!("answer shapes: {}", join(&coverage.answers));
    println!("failure classes seen: {}", join(&coverage.classes));
    println!("distinct attempt sequences: {}", coverage.sequences.len());
    let shapes: Vec<String> = coverage
        .shapes
        .lines()
        .into_iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!("cases with: {}", shapes.join(", "));
    if failing.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (seed, failures, asked) in failing.iter().take(MAX_SAVED) {
        println!("\ncase {seed} failed:");
        for f in failures.iter().take(5) {
            println!("  {f}");
        }
        if let Some(a) = asked {
            println!("  the modes asked differently: {a}");
        }
        let gateway: Arc<dyn GatewayUnderTest> = Arc::new(Switchback);
        let (small, small_failures) = explore::shrink_in(
            *seed,
            o.concurrency,
            &gateway,
            o.world,
            explore::MAX_SHRINK_STEPS,
        );
        match explore::save(&o.out, &small, &small_failures) {
            Ok(path) => {
                println!(
                    "  shrunk to {}\n  replay: cargo run --release -- run {}\n  or: cargo run --release -- replay --seed {seed}{}",
                    path.display(),
                    path.display(),
                    concurrency_flag(o.concurrency)
                );
                if let Some(dir) = &o.html {
                    html_page(dir, &path, &small, &gateway, o.world);
                }
            }
            Err(e) => println!("  could not save the shrunk case: {e}"),
        }
    }
    if failing.len() > MAX_SAVED {
        let rest: Vec<String> = failing[MAX_SAVED..]
            .iter()
            .map(|(s, _, a)| format!("{s}{}", if a.is_some() { "*" } else { "" }))
            .collect();
        println!(
            "\nalso failing (seeds; * where the modes asked differently): {}",
            rest.join(", ")
        );
    }
    ExitCode::FAILURE
}

/// Judges the shrunk case again (its runs were not kept while shrinking) and writes its
/// timeline next to the others in `dir`, named after its scenario file.
fn html_page(
    dir: &std::path::Path,
    file: &std::path::Path,
    case: &switchback_sim::scenario::Scenario,
    gateway: &Arc<dyn GatewayUnderTest>,
    world: WorldOptions,
) {
    let verdict = explore::judge_in(case, gateway, world);
    let page = switchback_sim::report::page_of_runs(
        &case.name,
        &file.display().to_string(),
        &verdict.runs,
        &verdict.failures,
    );
    let name = file.with_extension("html");
    let path = dir.join(name.file_name().unwrap_or_default());
    match switchback_sim::report::write_page(&page, &path) {
        Ok(()) => println!("  timeline: {}", path.display()),
        Err(e) => println!("  could not write the timeline {}: {e}", path.display()),
    }
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

/// The `--concurrency` flag that regenerates the same cases (empty for the default).
fn concurrency_flag(c: Concurrency) -> &'static str {
    match c {
        Concurrency::Sometimes => "",
        Concurrency::Always => " --concurrency always",
        Concurrency::Never => " --concurrency never",
    }
}

pub fn replay(
    seed: u64,
    yaml: bool,
    concurrency: Concurrency,
    html: Option<&std::path::Path>,
) -> ExitCode {
    let scenario = explore::case_with(seed, concurrency);
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
    if let Some(path) = html {
        let page = switchback_sim::report::page_of_runs(
            &scenario.name,
            &format!("replay --seed {seed}{}", concurrency_flag(concurrency)),
            &verdict.runs,
            &verdict.failures,
        );
        match switchback_sim::report::write_page(&page, path) {
            Ok(()) => println!("timeline: {}", path.display()),
            Err(e) => eprintln!("cannot write the timeline {}: {e}", path.display()),
        }
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
