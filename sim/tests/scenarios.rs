//! Every scenario file under `scenarios/` is its own test, named by its path
//! (`cargo test -p switchback-sim --test scenarios key_level` runs the matching ones; a new
//! YAML file needs no Rust). Each test runs the scenario in simulation in each of its modes
//! and checks:
//! - the oracle's verdict (expectations, invariants, stream/non-stream equivalence);
//! - determinism: a second run of each mode gives a byte-identical trace;
//! - the reviewed insta snapshot of each mode's trace in `snapshots/`;
//! - the file's teeth: every mutant of its expectations (`common/mutants.rs`: a count, an
//!   order, a status, an event, a value changed) fails against the same runs, unless the
//!   survivor is explained there. The run ends with the corpus's mutation score.
//!
//! A changed trace fails here. Review it with `cargo insta review` (or run with
//! `INSTA_UPDATE=always`, then read the diff in `snapshots/` before committing).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use libtest_mimic::{Arguments, Failed, Trial};
use switchback_sim::run::run_scenario;
use switchback_sim::scenario::{Scenario, find_files};
use switchback_sim::world;

mod common;

use common::mutants;

/// Mutants made, killed (failed as they must), and surviving with an explanation.
static MUTANTS: AtomicUsize = AtomicUsize::new(0);
static KILLED: AtomicUsize = AtomicUsize::new(0);
static EXPLAINED: AtomicUsize = AtomicUsize::new(0);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `scenarios/known_bug/x.yaml` → `known_bug/x`.
fn test_name(file: &Path) -> String {
    let rel = file.strip_prefix(root().join("scenarios")).unwrap_or(file);
    rel.with_extension("").to_string_lossy().replace('\\', "/")
}

fn check(file: &Path) -> Result<(), Failed> {
    let scenario = Scenario::load_file(file).map_err(|e| e.to_string())?;
    let report = run_scenario(file, &scenario);
    let mut problems = report.failures.clone();
    if problems.is_empty() {
        let name = test_name(file);
        // Judging the file itself against the same runs must pass, or the mutants prove
        // nothing.
        let unmutated = mutants::judge(&scenario, &report.runs);
        assert!(unmutated.is_empty(), "{name}: {unmutated:?}");
        for m in mutants::mutants(&scenario) {
            if std::env::var_os("SWITCHBACK_LIST_MUTANTS").is_some() {
                println!("{name}: {}", m.what);
            }
            MUTANTS.fetch_add(1, Ordering::Relaxed);
            if !mutants::judge(&m.scenario, &report.runs).is_empty() {
                KILLED.fetch_add(1, Ordering::Relaxed);
            } else if mutants::explained(&name, &m.what).is_some() {
                EXPLAINED.fetch_add(1, Ordering::Relaxed);
            } else {
                problems.push(format!(
                    "mutant survived: `{}` still passes: the expectation checks nothing (strengthen the file, or explain it in sim/tests/common/mutants.rs)",
                    m.what
                ));
            }
        }
    }
    for run in &report.runs {
        let mode = run.mode.as_str();
        match world::run(&scenario, run.mode) {
            Ok(again) if again.trace != run.trace => {
                let line = run
                    .trace
                    .lines()
                    .zip(again.trace.lines())
                    .position(|(a, b)| a != b);
                problems.push(format!(
                    "[{mode}] not deterministic: a second run's trace differs (first at line {})",
                    line.map_or("end".to_string(), |l| (l + 1).to_string())
                ));
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("[{mode}] second run failed to start: {e}")),
        }
        let name = switchback_sim::run::snapshot_name(file, run.mode);
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(root().join("snapshots"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_description(format!("{} ({mode})", report.name));
        let trace = run.trace.clone();
        let matched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            settings.bind(|| insta::assert_snapshot!(name.clone(), trace));
        }));
        if matched.is_err() {
            problems.push(format!(
                "trace snapshot `{name}` differs (see the diff above)"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let files = find_files(&root().join("scenarios")).expect("scenarios/ is readable");
    assert!(!files.is_empty(), "no scenario files under scenarios/");
    let trials = files
        .into_iter()
        .map(|file| Trial::test(test_name(&file), move || check(&file)))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let (made, killed, explained) = (
        MUTANTS.load(Ordering::Relaxed),
        KILLED.load(Ordering::Relaxed),
        EXPLAINED.load(Ordering::Relaxed),
    );
    println!(
        "mutation score: {killed}/{made} mutants of the corpus's expectations killed ({:.1}%), {explained} surviving with an explanation, {} unexplained",
        100.0 * killed as f64 / made.max(1) as f64,
        made - killed - explained
    );
    conclusion.exit();
}
