//! Running scenario files: load, run each mode in a fresh world, judge, report.
//!
//! Owns: the [`Report`] of one scenario and the suite summary the CLI prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::oracle;
use crate::scenario::Scenario;
use crate::world::{self, ModeRun};

/// The result of one scenario file.
pub struct Report {
    pub path: PathBuf,
    pub name: String,
    pub runs: Vec<ModeRun>,
    pub failures: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Where a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// In a turmoil simulation (deterministic, simulated time).
    Simulation,
    /// On loopback sockets with the real clock.
    Live,
}

/// Runs a loaded scenario in each of its modes and judges it.
pub fn run_scenario(path: &Path, scenario: &Scenario) -> Report {
    run_scenario_in(path, scenario, Where::Simulation)
}

/// Runs a loaded scenario in each of its modes, in simulation or live, and judges it.
pub fn run_scenario_in(path: &Path, scenario: &Scenario, place: Where) -> Report {
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    for mode in &scenario.modes {
        let run = match place {
            Where::Simulation => world::run(scenario, *mode),
            Where::Live => crate::live::run(scenario, *mode),
        };
        match run {
            Ok(run) => {
                oracle::check_run(scenario, &run, &mut failures);
                runs.push(run);
            }
            Err(e) => failures.push(format!("[{}] cannot start: {e}", mode.as_str())),
        }
    }
    if let [a, b] = runs.as_slice() {
        if a.hang.is_none() && b.hang.is_none() {
            oracle::check_equivalence(scenario, a, b, &mut failures);
        }
    }
    Report {
        path: path.to_path_buf(),
        name: scenario.name.clone(),
        runs,
        failures,
    }
}

/// Loads and runs one file; a file that does not load is a failed report.
pub fn run_file(path: &Path) -> Report {
    match Scenario::load_file(path) {
        Ok(s) => run_scenario(path, &s),
        Err(e) => Report {
            path: path.to_path_buf(),
            name: path.display().to_string(),
            runs: Vec::new(),
            failures: vec![e.to_string()],
        },
    }
}

/// Suite totals for the summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub scenarios: usize,
    pub passed: usize,
    pub requests: usize,
    pub wall: std::time::Duration,
}

/// Runs every scenario under `paths`, printing one line per scenario; returns the summary.
pub fn run_suite(
    paths: &[PathBuf],
    verbose: bool,
    mut print: impl FnMut(&str),
) -> std::io::Result<(Summary, Vec<Report>)> {
    let started = Instant::now();
    let mut files = Vec::new();
    for p in paths {
        files.extend(crate::scenario::find_files(p)?);
    }
    let mut summary = Summary::default();
    let mut failed = Vec::new();
    for file in files {
        let t = Instant::now();
        let report = run_file(&file);
        summary.scenarios += 1;
        summary.requests += report.runs.iter().map(|r| r.results.len()).sum::<usize>();
        let verdict = if report.passed() { "ok  " } else { "FAIL" };
        print(&format!(
            "{verdict} {} ({}) {:.0} ms",
            file.display(),
            report.name,
            t.elapsed().as_secs_f64() * 1000.0
        ));
        if verbose {
            for run in &report.runs {
                print(&format!(
                    "--- trace, {} ---\n{}",
                    run.mode.as_str(),
                    run.trace
                ));
            }
        }
        if report.passed() {
            summary.passed += 1;
        } else {
            for f in &report.failures {
                print(&format!("     {f}"));
            }
            failed.push(report);
        }
    }
    summary.wall = started.elapsed();
    Ok((summary, failed))
}
