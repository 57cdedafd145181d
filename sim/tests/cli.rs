//! The command line accepts what the file format and the results table spell: a mode is
//! `non_stream` there, so `trace --mode non_stream` works (and the old `non-stream` still
//! does), and `check` refuses a broken file with the loader's message.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn switchback(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchback"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the switchback binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trace_takes_the_mode_as_scenario_files_spell_it() {
    let file = "scenarios/streaming/precommit_429_falls_back.yaml";
    for mode in ["non_stream", "non-stream"] {
        let (ok, stdout, stderr) = switchback(&["trace", file, "--mode", mode]);
        assert!(ok, "--mode {mode}: {stderr}");
        assert!(stdout.contains("stream=false"), "--mode {mode}:\n{stdout}");
    }
    let (ok, _, stderr) = switchback(&["trace", file, "--mode", "streem"]);
    assert!(!ok);
    assert!(stderr.contains("non_stream"), "{stderr}");
}

#[test]
fn check_refuses_a_request_sent_after_the_run() {
    let (ok, stdout, _) = switchback(&["check", "sim/tests/broken/at_ms_after_duration.yaml"]);
    assert!(!ok);
    assert!(
        stdout.contains("at_ms = 5000 is not before duration_ms = 1000"),
        "{stdout}"
    );
}

#[test]
fn config_check_validates_gateway_configs_as_serve_does() {
    let (ok, stdout, stderr) = switchback(&["config", "check", "sim/tests/configs/valid.yaml"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "ok: sim/tests/configs/valid.yaml (2 groups, 2 deployments)\n"
    );
    // Every problem, each at its line and column, and a failing exit status even when
    // another file is valid.
    let (ok, stdout, stderr) = switchback(&[
        "config",
        "check",
        "sim/tests/configs/valid.yaml",
        "sim/tests/configs/broken.yaml",
    ]);
    assert!(!ok);
    assert!(
        stdout.starts_with("ok: sim/tests/configs/valid.yaml"),
        "{stdout}"
    );
    for line in [
        "sim/tests/configs/broken.yaml:6:23: field `router_settings.fallbacks[0].chat[0]`: fallback to unknown group `backpu`",
        "sim/tests/configs/broken.yaml:8:66: field `keys[0].router_settings.cooldown_time`: `cooldown_time` is gateway-wide state",
        "1 of 2 config file(s) invalid",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    let (ok, _, stderr) = switchback(&["config", "check", "sim/tests/configs/missing.yaml"]);
    assert!(!ok);
    assert!(
        stderr.contains("sim/tests/configs/missing.yaml"),
        "{stderr}"
    );
}

/// `report --html` writes the index and a page per scenario; the same run writes the same
/// bytes (no wall-clock time in the pages), and a failing scenario fails the command.
#[test]
fn report_writes_the_same_timeline_pages_twice() {
    let base = std::env::temp_dir().join(format!("sb-report-cli-{}", std::process::id()));
    let mut pages = Vec::new();
    for round in ["a", "b"] {
        let dir = base.join(round);
        let (ok, stdout, stderr) = switchback(&[
            "report",
            "scenarios/known_bug/midstream_429_key_fallbacks.yaml",
            "scenarios/streaming/precommit_429_falls_back.yaml",
            "--html",
            dir.to_str().expect("utf-8 path"),
        ]);
        assert!(ok, "{stdout}\n{stderr}");
        assert!(stdout.contains("Timelines: "), "{stdout}");
        let index = std::fs::read_to_string(dir.join("index.html")).expect("index.html");
        assert!(
            index.contains("href=\"streaming__precommit_429_falls_back.html\""),
            "{index}"
        );
        assert!(
            index.contains("data-scenarios=\"2\" data-passed=\"2\""),
            "{index}"
        );
        let page = std::fs::read_to_string(dir.join("known_bug__midstream_429_key_fallbacks.html"))
            .expect("the page");
        assert!(page.contains("class=\"marker fault\" data-lane=\"vertex\""));
        pages.push((index, page));
    }
    assert!(pages[0] == pages[1], "two runs wrote different pages");
    // A scenario that cannot load is a failed row, and the command fails.
    let dir = base.join("c");
    let (ok, _, _) = switchback(&[
        "report",
        "sim/tests/broken/at_ms_after_duration.yaml",
        "--html",
        dir.to_str().expect("utf-8 path"),
    ]);
    assert!(!ok, "a broken scenario must fail the report");
    let index = std::fs::read_to_string(dir.join("index.html")).expect("index.html");
    assert!(
        index.contains("data-scenarios=\"1\" data-passed=\"0\""),
        "{index}"
    );
    std::fs::remove_dir_all(&base).expect("clean up");
}

/// `replay --html` writes the generated case's timeline (a seed `explore` listed unsaved).
#[test]
fn replay_writes_a_cases_timeline() {
    let page = std::env::temp_dir().join(format!("sb-replay-{}.html", std::process::id()));
    let (ok, stdout, stderr) = switchback(&[
        "replay",
        "--seed",
        "3",
        "--html",
        page.to_str().expect("utf-8 path"),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let html = std::fs::read_to_string(&page).expect("the page");
    std::fs::remove_file(&page).expect("clean up");
    assert!(html.contains("replay --seed 3"), "names the case");
    for mode in ["non_stream", "stream"] {
        assert!(html.contains(&format!("<section class=\"mode\" data-mode=\"{mode}\">")));
    }
    assert!(html.contains("<g class=\"lane\" data-lane=\"gateway\">"));
}

/// `explore`'s runner reads no `PROPTEST_*` variable: shrinking depends on the runner's
/// configuration, so one that did would shrink the same seed to another case. A child
/// process of this test binary prints the configuration with every variable set.
#[test]
fn explores_runner_reads_no_proptest_variables() {
    // Without `result_cache`, a function's address: it moves between processes.
    let printed = format!("{:?}", switchback_sim::explore::runner_config());
    let printed = match printed.split_once("result_cache: ") {
        Some((before, after)) => format!("{before}{}", after.split_once(", ").unwrap().1),
        None => printed,
    };
    if std::env::var_os("SWITCHBACK_PRINT_RUNNER_CONFIG").is_some() {
        println!("runner config: {printed}");
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "explores_runner_reads_no_proptest_variables",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SWITCHBACK_PRINT_RUNNER_CONFIG", "1")
        .env("PROPTEST_CASES", "1")
        .env("PROPTEST_MAX_FLAT_MAP_REGENS", "0")
        .env("PROPTEST_MAX_SHRINK_ITERS", "1")
        .env("PROPTEST_MAX_SHRINK_TIME", "1")
        .env("PROPTEST_MAX_DEFAULT_SIZE_RANGE", "1")
        .env("PROPTEST_MAX_LOCAL_REJECTS", "1")
        .env("PROPTEST_MAX_GLOBAL_REJECTS", "1")
        .env("PROPTEST_VERBOSE", "2")
        .env("PROPTEST_RNG_ALGORITHM", "xs")
        .env("PROPTEST_RNG_SEED", "7")
        .env("PROPTEST_FORK", "true")
        .env("PROPTEST_TIMEOUT", "5")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("runner config: {printed}")),
        "with PROPTEST_* set: {stdout}\nwithout: {printed}"
    );
}
