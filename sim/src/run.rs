//! Running scenario files: load, run each mode in a fresh world, judge, report.
//!
//! Owns: the [`Report`] of one scenario, running a suite in parallel across cores, the
//! results table the CLI prints, and the JUnit XML report for CI dashboards.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::oracle;
use crate::scenario::{Mode, Scenario};
use crate::world::{self, ModeRun};

/// The result of one scenario file.
pub struct Report {
    pub path: PathBuf,
    pub name: String,
    pub runs: Vec<ModeRun>,
    /// Every failed check, each tagged `[mode]` or `[equivalence]`.
    pub failures: Vec<String>,
    pub wall: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether `mode`'s run passed (its own checks and equivalence).
    pub fn mode_passed(&self, mode: Mode) -> bool {
        let tag = format!("[{}]", mode.as_str());
        !self
            .failures
            .iter()
            .any(|f| f.starts_with(&tag) || f.starts_with("[equivalence]") || !f.starts_with('['))
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

/// Runs a loaded scenario in each of its modes, in simulation, and judges it.
pub fn run_scenario(path: &Path, scenario: &Scenario) -> Report {
    run_scenario_in(path, scenario, Where::Simulation)
}

/// Runs a loaded scenario in each of its modes, in simulation or live, and judges it.
pub fn run_scenario_in(path: &Path, scenario: &Scenario, place: Where) -> Report {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    // The modes run in fresh, independent worlds: run them side by side.
    let results: Vec<Result<ModeRun, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = scenario
            .modes
            .iter()
            .map(|mode| {
                s.spawn(move || match place {
                    Where::Simulation => world::run(scenario, *mode),
                    Where::Live => crate::live::run(scenario, *mode),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for (mode, run) in scenario.modes.iter().zip(results) {
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
        wall: started.elapsed(),
    }
}

/// Loads and runs one file; a file that does not load, or a run that panics, is a failed
/// report (the rest of the suite still runs).
pub fn run_file(path: &Path, place: Where) -> Report {
    match Scenario::load_file(path) {
        Ok(s) => match std::panic::catch_unwind(|| run_scenario_in(path, &s, place)) {
            Ok(report) => report,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                Report {
                    path: path.to_path_buf(),
                    name: s.name.clone(),
                    runs: Vec::new(),
                    failures: vec![format!("the run panicked: {what}")],
                    wall: Duration::ZERO,
                }
            }
        },
        Err(e) => Report {
            path: path.to_path_buf(),
            name: path.display().to_string(),
            runs: Vec::new(),
            failures: vec![e.to_string()],
            wall: Duration::ZERO,
        },
    }
}

/// Every scenario file under `paths`, sorted.
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such file or folder", p.display()),
            ));
        }
        files.extend(crate::scenario::find_files(p)?);
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Runs `files` on `jobs` threads; reports come back in file order.
pub fn run_files(files: &[PathBuf], place: Where, jobs: usize) -> Vec<Report> {
    let next = Mutex::new(0usize);
    let slots: Vec<Mutex<Option<Report>>> = files.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, files.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("queue");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(file) = files.get(i) else { return };
                    let report = run_file(file, place);
                    *slots[i].lock().expect("slot") = Some(report);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().expect("slot").expect("every file ran"))
        .collect()
}

/// The snapshot name of `file`'s run in `mode`: its path under the `scenarios` folder, with
/// `/` as `__` (`scenarios/known_bug/x.yaml`, stream → `known_bug__x__stream`).
pub fn snapshot_name(file: &Path, mode: Mode) -> String {
    let parts: Vec<String> = file
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let start = parts
        .iter()
        .rposition(|p| p == "scenarios")
        .map_or(0, |i| i + 1);
    format!("{}__{}", parts[start..].join("__"), mode.as_str())
}

/// The body of an insta `.snap` file (what follows its `---` header).
pub fn snapshot_body(text: &str) -> &str {
    text.strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n").map(|(_, body)| body))
        .unwrap_or(text)
}

/// Compares every run's trace with its reviewed snapshot in `dir` (as `cargo test` does in a
/// debug build): run from a release build, this proves traces are the same in both.
pub fn check_snapshots(reports: &mut [Report], dir: &Path) {
    for r in reports.iter_mut() {
        for m in &r.runs {
            let name = snapshot_name(&r.path, m.mode);
            let path = dir.join(format!("{name}.snap"));
            match std::fs::read_to_string(&path) {
                Err(e) => r.failures.push(format!(
                    "[{}] snapshot {}: {e}",
                    m.mode.as_str(),
                    path.display()
                )),
                Ok(text) => {
                    let (want, got) = (snapshot_body(&text).trim_end(), m.trace.trim_end());
                    if want != got {
                        let line = want
                            .lines()
                            .zip(got.lines())
                            .position(|(a, b)| a != b)
                            .map_or("end".into(), |l| (l + 1).to_string());
                        r.failures.push(format!(
                            "[{}] trace differs from snapshot {} (first at line {line})",
                            m.mode.as_str(),
                            path.display()
                        ));
                    }
                }
            }
        }
    }
}

/// Suite totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub scenarios: usize,
    pub passed: usize,
    /// Requests simulated (all modes).
    pub requests: usize,
    /// Sum of the runs' wall times (CPU-side cost, whatever the parallelism).
    pub run_wall: Duration,
    /// Wall time of the whole suite.
    pub wall: Duration,
}

impl Summary {
    pub fn of(reports: &[Report], wall: Duration) -> Summary {
        Summary {
            scenarios: reports.len(),
            passed: reports.iter().filter(|r| r.passed()).count(),
            requests: reports
                .iter()
                .flat_map(|r| &r.runs)
                .map(|m| m.results.len())
                .sum(),
            run_wall: reports.iter().flat_map(|r| &r.runs).map(|m| m.wall).sum(),
            wall,
        }
    }

    /// Simulated requests per second of the suite's wall time.
    pub fn requests_per_wall_second(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// The results table: one row per scenario and mode, then the failures.
/// A run's attempts in all, and the deployments that served its requests (sorted, each
/// once; `-` for a request nobody served): what the results table and the report's index
/// summarise.
pub fn attempts_and_serving(m: &ModeRun) -> (usize, Vec<String>) {
    let stories = oracle::stories(m);
    let attempts = stories.iter().map(|s| s.steps.len()).sum();
    let mut serving: Vec<String> = stories
        .iter()
        .map(|s| {
            s.served
                .as_ref()
                .map_or("-".into(), |(_, d, _)| s.catalog.deployment(*d).id.clone())
        })
        .collect();
    serving.sort();
    serving.dedup();
    (attempts, serving)
}

pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<52} {:<10} {:<7} {:>8} {:<22} {:>10} {:>9}",
        "scenario", "mode", "verdict", "attempts", "serving", "simulated", "wall"
    );
    for r in reports {
        let name = r
            .path
            .strip_prefix("scenarios")
            .unwrap_or(&r.path)
            .with_extension("")
            .display()
            .to_string();
        if r.runs.is_empty() {
            let _ = writeln!(out, "{name:<52} {:<10} {:<7}", "-", "FAIL");
        }
        for m in &r.runs {
            let (attempts, mut serving) = attempts_and_serving(m);
            let serving = if serving.len() == 1 {
                serving.remove(0)
            } else {
                format!("{} kinds", serving.len())
            };
            let verdict = if r.mode_passed(m.mode) { "ok" } else { "FAIL" };
            let _ = writeln!(
                out,
                "{name:<52} {:<10} {verdict:<7} {attempts:>8} {:<22} {:>8}ms {:>7.1}ms",
                m.mode.as_str(),
                truncate(&serving, 22),
                m.elapsed.as_millis(),
                m.wall.as_secs_f64() * 1000.0
            );
        }
    }
    for r in reports.iter().filter(|r| !r.passed()) {
        let _ = writeln!(out, "\nFAILED {} ({})", r.path.display(), r.name);
        for f in &r.failures {
            let _ = writeln!(out, "  {f}");
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// A JUnit XML report: one test case per scenario and mode.
pub fn junit(reports: &[Report]) -> String {
    let cases: usize = reports.iter().map(|r| r.runs.len().max(1)).sum();
    let failures: usize = reports
        .iter()
        .map(|r| {
            if r.runs.is_empty() {
                1
            } else {
                r.runs.iter().filter(|m| !r.mode_passed(m.mode)).count()
            }
        })
        .sum();
    let total: f64 = reports.iter().map(|r| r.wall.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"switchback\" tests=\"{cases}\" failures=\"{failures}\" time=\"{total:.3}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"scenarios\" tests=\"{cases}\" failures=\"{failures}\" time=\"{total:.3}\">"
    );
    for r in reports {
        let class = xml(&r
            .path
            .with_extension("")
            .display()
            .to_string()
            .replace('/', "."));
        let modes: Vec<(String, bool, f64)> = if r.runs.is_empty() {
            vec![("load".into(), false, 0.0)]
        } else {
            r.runs
                .iter()
                .map(|m| {
                    (
                        m.mode.as_str().to_string(),
                        r.mode_passed(m.mode),
                        m.wall.as_secs_f64(),
                    )
                })
                .collect()
        };
        for (mode, passed, time) in modes {
            let _ = write!(
                out,
                "    <testcase classname=\"{class}\" name=\"{mode}\" time=\"{time:.3}\""
            );
            if passed {
                let _ = writeln!(out, "/>");
            } else {
                let detail = xml(&r.failures.join("\n"));
                let first = xml(r.failures.first().map_or("failed", String::as_str));
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{first}\">{detail}</failure>\n    </testcase>"
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup() {
        assert_eq!(xml("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
