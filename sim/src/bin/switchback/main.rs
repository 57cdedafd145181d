//! `switchback`: run scenario suites in simulation or live, inspect one run, or run the
//! gateway for real.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback_sim::run::{self, Summary, Where};
use switchback_sim::scenario::{Mode, Scenario};

#[derive(Parser)]
#[command(
    name = "switchback",
    version,
    about = "Switchback: an LLM gateway whose streams fall back like its non-streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// A mode, spelt as scenario files spell it (`non_stream`; `non-stream` is accepted too).
#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Stream,
    #[value(name = "non_stream", alias = "non-stream")]
    NonStream,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConcurrencyArg {
    /// In some cases (the default mix).
    Sometimes,
    /// In every case.
    Always,
    /// In no case.
    Never,
}

impl From<ConcurrencyArg> for switchback_sim::explore::Concurrency {
    fn from(c: ConcurrencyArg) -> Self {
        use switchback_sim::explore::Concurrency;
        match c {
            ConcurrencyArg::Sometimes => Concurrency::Sometimes,
            ConcurrencyArg::Always => Concurrency::Always,
            ConcurrencyArg::Never => Concurrency::Never,
        }
    }
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Stream => Mode::Stream,
            ModeArg::NonStream => Mode::NonStream,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EmitArg {
    Litellm,
    Switchback,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files (or folders of them) in simulation and print a results table.
    Run {
        /// Files or folders; folders are searched for *.yaml recursively.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Scenarios run at once (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Also compare every trace with its reviewed snapshot in this folder.
        #[arg(long)]
        snapshots: Option<PathBuf>,
    },
    /// Run scenarios as `run` does and write an HTML timeline of each (both modes on one
    /// simulated-time axis), plus `index.html` with the results table, into --html DIR.
    Report {
        /// Files or folders; folders are searched for *.yaml recursively.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Folder for the pages (created if missing).
        #[arg(long, required = true)]
        html: PathBuf,
        /// Scenarios run at once (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run one scenario in one mode in simulation and print its trace.
    Trace {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "stream")]
        mode: ModeArg,
    },
    /// Gateway configs: `config check FILE...` validates them as `serve` would.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Only load and validate scenario files.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run scenarios against the real gateway on loopback sockets (real clock), both modes.
    Live {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Generate random scenarios, run each in both modes, and check every invariant and
    /// stream/non-stream equivalence. Failing cases are shrunk and saved as scenario files.
    Explore {
        /// Cases to run (across all shards).
        #[arg(long, default_value_t = 1000)]
        cases: u64,
        /// First case seed; case i has seed S + i.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop after this long (e.g. 60s, 5m) even if cases remain.
        #[arg(long, value_parser = parse_duration)]
        time: Option<std::time::Duration>,
        /// Run only shard i of n (1-based), e.g. 2/4: disjoint seeds for a CI matrix.
        #[arg(long, value_parser = parse_shard)]
        shard: Option<(u64, u64)>,
        /// Run every case twice and fail on any difference in the traces.
        #[arg(long)]
        check_determinism: bool,
        /// Where shrunk failing cases are written.
        #[arg(long, default_value = "explore-failures")]
        out: PathBuf,
        /// Also write each shrunk failing case's HTML timeline into this folder.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// How often a case has several requests in flight at once, from several keys,
        /// sharing deployments and short cooldowns, on a network with a latency range.
        #[arg(long, value_enum, default_value = "sometimes")]
        concurrency: ConcurrencyArg,
        /// Run in the old, drifting world (one latency RNG for every link), to see explore
        /// catch it. Never for real exploration.
        #[arg(long, hide = true)]
        shared_latency_rng: bool,
    },
    /// Reproduce one generated case exactly and print its traces (and its YAML with --yaml).
    Replay {
        #[arg(long)]
        seed: u64,
        /// Also print the scenario file.
        #[arg(long)]
        yaml: bool,
        /// As given to `explore`.
        #[arg(long, value_enum, default_value = "sometimes")]
        concurrency: ConcurrencyArg,
        /// Also write the case's HTML timeline to this file.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Serve a scenario's fake providers on loopback (provider i on PORT_BASE + i) until
    /// interrupted, logging every request; or, with --emit-config, print a gateway config
    /// whose api_base values point at them. Fails if anything already listens on those ports.
    Fakes {
        scenario: PathBuf,
        /// Port of the first fake on 127.0.0.1; the others take the next ports.
        #[arg(long, default_value_t = 18000)]
        port_base: u16,
        /// Old spelling of --port-base: the first fake's loopback address.
        #[arg(long, hide = true, conflicts_with = "port_base")]
        listen: Option<std::net::SocketAddr>,
        /// Print a config for these fakes and exit: `litellm` or `switchback`.
        #[arg(long, value_enum)]
        emit_config: Option<EmitArg>,
    },
    /// Check an external gateway (started with the emitted config) for stream/non-stream
    /// equivalence: the fakes run in-process on loopback, at the same ports.
    ///
    /// Exit status: 0 equivalent, 1 different, 2 could not run (gateway down, ports taken,
    /// setup refused, bad arguments), 3 inconclusive (a scripted fault never fired, neither
    /// mode reached a provider, neither answered in time, or the gateway did not do what the
    /// scenario describes).
    Probe {
        scenario: PathBuf,
        /// The gateway's base URL on loopback, e.g. http://127.0.0.1:4000.
        #[arg(long)]
        gateway: String,
        /// Key sent by requests that have no key in the scenario (e.g. LiteLLM's master
        /// key). Requests with a key always send the scenario's key.
        #[arg(long)]
        api_key: Option<String>,
        /// Create the scenario's teams and keys first through LiteLLM's admin API
        /// (/team/new, /key/generate) with --master-key. LiteLLM needs a database for this.
        #[arg(long)]
        setup: bool,
        /// Admin key for --setup.
        #[arg(long, default_value = switchback_sim::emit::LITELLM_MASTER_KEY)]
        master_key: String,
        /// Port of the first fake on 127.0.0.1 (as given to `fakes --emit-config`).
        #[arg(long, default_value_t = 18000)]
        port_base: u16,
        /// Old spelling of --port-base: the first fake's loopback address.
        #[arg(long, hide = true, conflicts_with = "port_base")]
        listen: Option<std::net::SocketAddr>,
        /// Seconds between the two modes (default: the scenario's cooldown or Retry-After).
        #[arg(long)]
        pause: Option<f64>,
        /// Seconds each request may take in each mode (default: the scenario's timeout_ms,
        /// at most 60).
        #[arg(long)]
        timeout: Option<f64>,
        /// Compare with a second gateway instead (both configured for the same fakes):
        /// request by request and mode by mode, the provider calls each made and what its
        /// client got. Exit status: 0 the same, 1 different, 2 could not run.
        #[arg(long)]
        against: Option<String>,
        /// Key sent to the --against gateway by requests that have none in the scenario.
        #[arg(long, requires = "against")]
        against_api_key: Option<String>,
        /// Also write an HTML timeline of what each mode's client and the fakes saw to this
        /// file (not with --against).
        #[arg(long, conflicts_with = "against")]
        html: Option<PathBuf>,
    },
    /// Open-loop, constant-rate load against a gateway on loopback, with the scenario's fakes
    /// answering upstream (started here at --listen, as for `probe`). Latency percentiles
    /// from an HDR histogram; for streams, time to first chunk too.
    Load {
        /// The gateway's base URL on loopback, e.g. http://127.0.0.1:4000.
        #[arg(long)]
        gateway: String,
        /// Scenario whose fakes to start and whose first request to send.
        #[arg(long)]
        scenario: PathBuf,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// How long, e.g. 30s.
        #[arg(long, value_parser = parse_duration)]
        duration: std::time::Duration,
        #[arg(long)]
        stream: bool,
        /// Keep-alive connections at most.
        #[arg(long, default_value_t = 256)]
        connections: usize,
        #[arg(long, default_value = "127.0.0.1:18000")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        api_key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure what Switchback adds over calling the provider directly (interleaved, same
    /// process for the load and fakes; the gateway runs as a child process for its RSS).
    BenchOverhead {
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Time per variant, e.g. 30s.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        duration: std::time::Duration,
        #[arg(long, default_value_t = 6)]
        rounds: u32,
        #[arg(long, default_value_t = 256)]
        connections: usize,
        /// Concurrent streams for the memory measurement.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// A plain reverse proxy in front of the `ok` fake (e.g. nginx with keep-alive at
        /// http://127.0.0.1:8089), measured in the same run; see `benches/nginx-reference.sh`.
        #[arg(long)]
        reference: Option<String>,
        /// The same hop built from Switchback's stack alone (`cargo run --release --example
        /// bare_proxy`), measured in the same run: what hyper, tokio and the kernel cost, so
        /// the rest is Switchback's own work.
        #[arg(long)]
        floor: Option<String>,
        /// Fakes listen on this port and the next ones (the `ok` fake on the first), so a
        /// reference proxy can point at it.
        #[arg(long)]
        fakes_port_base: Option<u16>,
        /// The gateway to measure: a `switchback-gateway` binary (what a deployment runs;
        /// `benches/nginx-reference.sh` builds and passes it). Default: this binary's own
        /// `serve`, the same gateway beside the harness, with 2 to 3 MiB more code
        /// resident.
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
    },
    /// Print the JSON Schema of scenario files or of the gateway config (generated from
    /// the types the loaders read), or write both into a folder (`--write schemas`).
    Schema {
        /// Which schema to print.
        #[arg(value_enum, required_unless_present = "write")]
        document: Option<SchemaArg>,
        /// Write every schema into this folder instead (the committed ones: `schemas`).
        #[arg(long, conflicts_with = "document")]
        write: Option<PathBuf>,
    },
    /// Run the gateway on real sockets (`switchback-gateway` is the same, alone).
    Serve(serve::ServeArgs),
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate gateway config files fully, with the same located errors as `serve` (for
    /// CI pipelines). Exit status 0 when every file is valid, 1 otherwise.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SchemaArg {
    /// Scenario files (`scenarios/**/*.yaml`).
    Scenario,
    /// The gateway config `serve --config` reads.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            paths,
            junit,
            jobs,
            snapshots,
        } => suite(
            &paths,
            Where::Simulation,
            junit.as_deref(),
            jobs,
            snapshots.as_deref(),
            None,
        ),
        Command::Report { paths, html, jobs } => {
            suite(&paths, Where::Simulation, None, jobs, None, Some(&html))
        }
        Command::Live { paths } => suite(&paths, Where::Live, None, Some(1), None, None),
        Command::Trace { file, mode } => trace(&file, mode.into()),
        Command::Check { paths } => check(&paths),
        Command::Config {
            action: ConfigAction::Check { files },
        } => config_check(&files),
        Command::Explore {
            cases,
            seed,
            time,
            shard,
            check_determinism,
            out,
            html,
            jobs,
            concurrency,
            shared_latency_rng,
        } => explore::main(explore::Options {
            cases,
            seed,
            time,
            shard: shard.unwrap_or((1, 1)),
            check_determinism,
            out,
            html,
            jobs: jobs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            concurrency: concurrency.into(),
            world: switchback_sim::world::WorldOptions {
                shared_latency_rng,
                ..Default::default()
            },
        }),
        Command::Replay {
            seed,
            yaml,
            concurrency,
            html,
        } => explore::replay(seed, yaml, concurrency.into(), html.as_deref()),
        Command::Fakes {
            scenario,
            port_base,
            listen,
            emit_config,
        } => external::fakes(
            &scenario,
            external::port_base(port_base, listen),
            emit_config.map(|e| matches!(e, EmitArg::Litellm)),
        ),
        Command::Load {
            gateway,
            scenario,
            rate,
            duration,
            stream,
            connections,
            listen,
            api_key,
            json,
        } => external::load(
            &scenario,
            &gateway,
            rate,
            duration,
            stream,
            connections,
            listen,
            api_key,
            json,
        ),
        Command::BenchOverhead {
            rate,
            duration,
            rounds,
            connections,
            streams,
            reference,
            floor,
            fakes_port_base,
            gateway_bin,
        } => external::bench_overhead(
            switchback_sim::overhead::OverheadOptions {
                rate,
                duration,
                rounds,
                connections,
                streams,
                reference,
                floor,
                fakes_port_base,
            },
            gateway_bin,
        ),
        Command::Probe {
            scenario,
            gateway,
            api_key,
            setup,
            master_key,
            port_base,
            listen,
            pause,
            timeout,
            against,
            against_api_key,
            html,
        } => external::probe(external::ProbeArgs {
            scenario,
            gateway,
            api_key,
            setup,
            master_key,
            port_base: external::port_base(port_base, listen),
            pause,
            timeout,
            against,
            against_api_key,
            html,
        }),
        Command::Schema { document, write } => schema(document, write.as_deref()),
        Command::Serve(args) => serve::run(args),
    }
}

fn schema(document: Option<SchemaArg>, write: Option<&Path>) -> ExitCode {
    use switchback_sim::schema::{self, Document};
    if let Some(dir) = write {
        return match schema::write_all(dir) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let doc = match document {
        Some(SchemaArg::Config) => Document::GatewayConfig,
        Some(SchemaArg::Scenario) | None => Document::Scenario,
    };
    print!("{}", doc.schema_json());
    ExitCode::SUCCESS
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}`: expected a number and a unit, e.g. 60s or 5m"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use s, m or h)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected i/n, e.g. 2/4"))?;
    let i: u64 = i
        .parse()
        .map_err(|_| format!("`{s}`: shard index is not a number"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: shard count is not a number"))?;
    if n == 0 || i == 0 || i > n {
        return Err(format!("`{s}`: need 1 <= i <= n"));
    }
    Ok((i, n))
}

mod allocator;
mod explore;
mod external;
mod log_queue;
mod logs;
mod serve;
mod signals;
mod workers;

fn suite(
    paths: &[PathBuf],
    place: Where,
    junit: Option<&Path>,
    jobs: Option<usize>,
    snapshots: Option<&Path>,
    html: Option<&Path>,
) -> ExitCode {
    let files = match run::collect_files(paths) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("error: no scenario files (*.yaml) under {paths:?}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Wall time of the suite, for the summary line only.
    let started = Instant::now();
    let mut reports = run::run_files(&files, place, jobs);
    if let Some(dir) = snapshots {
        run::check_snapshots(&mut reports, dir);
    }
    let summary = Summary::of(&reports, started.elapsed());
    print!("{}", run::table(&reports));
    if let Some(path) = junit {
        if let Err(e) = std::fs::write(path, run::junit(&reports)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(dir) = html {
        match switchback_sim::report::write_suite(&reports, dir) {
            Ok(index) => println!("\nTimelines: {}", index.display()),
            Err(e) => {
                eprintln!("error: cannot write the report into {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let place = match place {
        Where::Simulation => "simulated",
        Where::Live => "live",
    };
    println!(
        "\n{} scenarios: {} passed, {} failed. {} {place} requests in {:.3} s wall ({:.0} requests per wall second; {jobs} scenario(s) at once, modes side by side).",
        summary.scenarios,
        summary.passed,
        summary.scenarios - summary.passed,
        summary.requests,
        summary.wall.as_secs_f64(),
        summary.requests_per_wall_second(),
    );
    if summary.passed == summary.scenarios {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn trace(file: &Path, mode: Mode) -> ExitCode {
    let scenario = match Scenario::load_file(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match switchback_sim::world::run(&scenario, mode) {
        Ok(run) => {
            print!("{}", run.trace);
            let mut failures = Vec::new();
            switchback_sim::oracle::check_run(&scenario, &run, &mut failures);
            for f in &failures {
                eprintln!("{f}");
            }
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(paths: &[PathBuf]) -> ExitCode {
    let files = match run::collect_files(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bad = 0;
    for f in &files {
        match Scenario::load_file(f) {
            Ok(s) => println!("ok   {} ({})", f.display(), s.name),
            Err(e) => {
                bad += 1;
                println!("FAIL {e}");
            }
        }
    }
    println!(
        "\n{} files: {} valid, {bad} invalid",
        files.len(),
        files.len() - bad
    );
    if bad == 0 && !files.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `config check`: each file loaded and validated as `serve` would (environment references
/// included), one line per valid file, the located error for each invalid one.
fn config_check(files: &[PathBuf]) -> ExitCode {
    let mut invalid = 0;
    for file in files {
        let checked = GatewayConfig::load_file(file).and_then(|c| Catalog::new(&c));
        match checked {
            Ok(catalog) => println!(
                "ok: {} ({} groups, {} deployments)",
                file.display(),
                catalog.model_group_count(),
                catalog.deployments.len()
            ),
            Err(e) => {
                invalid += 1;
                eprintln!("{e}");
            }
        }
    }
    if invalid > 0 {
        eprintln!("{invalid} of {} config file(s) invalid", files.len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
