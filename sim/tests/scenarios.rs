//! Every scenario file under `scenarios/`, in simulation, in each of its modes: the oracle's
//! verdict (expectations, invariants, equivalence) and a reviewed snapshot of each trace.
//!
//! A changed trace fails here; review it with `cargo insta review` (or set
//! `INSTA_UPDATE=always`, then read the diff in `snapshots/` before committing).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use switchback_sim::run::run_file;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `scenarios/known_bug/x.yaml` in `stream` mode → `known_bug__x__stream`.
fn snapshot_name(file: &Path, mode: &str) -> String {
    let rel = file.strip_prefix(root().join("scenarios")).unwrap_or(file);
    let stem = rel.with_extension("");
    let parts: Vec<String> = stem
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    format!("{}__{mode}", parts.join("__"))
}

#[test]
fn every_scenario_passes_and_matches_its_snapshots() {
    let files = switchback_sim::scenario::find_files(&root().join("scenarios"))
        .expect("scenarios/ is readable");
    assert!(!files.is_empty(), "no scenario files found");
    let queue = Mutex::new(files.clone());
    let problems = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(files.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let Some(file) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let report = run_file(&file);
                    let mut mine: Vec<String> = report
                        .failures
                        .iter()
                        .map(|f| format!("{}: {f}", file.display()))
                        .collect();
                    for run in &report.runs {
                        let name = snapshot_name(&file, run.mode.as_str());
                        let mut settings = insta::Settings::clone_current();
                        settings.set_snapshot_path(root().join("snapshots"));
                        settings.set_prepend_module_to_snapshot(false);
                        settings.set_omit_expression(true);
                        settings.set_description(format!(
                            "{} ({})",
                            report.name,
                            run.mode.as_str()
                        ));
                        let trace = run.trace.clone();
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                settings.bind(|| insta::assert_snapshot!(name.clone(), trace));
                            }));
                        if outcome.is_err() {
                            mine.push(format!(
                                "{}: trace snapshot `{name}` differs (see the diff above)",
                                file.display()
                            ));
                        }
                    }
                    problems.lock().unwrap().extend(mine);
                }
            });
        }
    });
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
