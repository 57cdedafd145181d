//! `serve`: the gateway on real sockets, for `switchback serve` and `switchback-gateway`.
//!
//! Owns: the flags of `serve`, loading the config, starting the workers, and the drain on
//! a stop signal. Does not own the workers (`workers`), the signals (`signals`) or the log
//! writer (`logs`). Both binaries include this file and those as modules of their own: the
//! gateway's binary holds what serving needs and nothing of the harness, so it maps less
//! code (see the README's benchmarks).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::ValueEnum;
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::decision_log::DecisionLog;
use switchback::dns::CachedDnsConnector;
use switchback::engine::{Engine, SystemWallClock};
use switchback::gateway::Gate;
use switchback::metrics::Metrics;
use switchback::reload::LiveEngine;
use switchback::trace::Observer;

use crate::{log_queue, logs, signals, workers};

/// The flags of `switchback serve` and of `switchback-gateway`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Gateway config (LiteLLM-style YAML).
    #[arg(long)]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4000")]
    listen: std::net::SocketAddr,
    /// Keep Prometheus metrics and serve them on `GET /metrics`.
    #[arg(long, value_enum, default_value = "on")]
    metrics: Switch,
    /// How log lines on stderr look: `text` (human) or `json` (one object per line).
    #[arg(long, value_enum, default_value = "text")]
    log_format: logs::Format,
    /// The least severe lines written: `info` writes one access line per request and
    /// every decision that matters (failed attempts, cooldowns, retries, fallbacks);
    /// `debug` every routing event; `warn` or `error` less.
    #[arg(long, value_enum, default_value = "info")]
    log_level: LogLevelArg,
    /// Log lines that may wait for stderr: past them, lines are dropped and counted
    /// (`switchback_log_lines_dropped_total`) rather than hold up requests while
    /// stderr's reader falls behind.
    #[arg(long, default_value_t = logs::DEFAULT_LOG_QUEUE_LINES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_777_216))]
    log_queue_lines: usize,
    /// Worker threads, each with a runtime and a listening socket of its own (the
    /// kernel spreads connections across them); default: one per CPU. More than one
    /// only on Linux.
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogLevelArg {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<LogLevelArg> for tracing::Level {
    fn from(l: LogLevelArg) -> tracing::Level {
        match l {
            LogLevelArg::Error => tracing::Level::ERROR,
            LogLevelArg::Warn => tracing::Level::WARN,
            LogLevelArg::Info => tracing::Level::INFO,
            LogLevelArg::Debug => tracing::Level::DEBUG,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

/// Runs the gateway until a stop signal: logs installed first, kept to the end (what is
/// queued is written at exit).
pub fn run(args: ServeArgs) -> ExitCode {
    let logs = logs::install(args.log_format, args.log_level.into(), args.log_queue_lines);
    let dropped = logs.as_ref().map(logs::Logs::dropped);
    serve(
        &args.config,
        args.listen,
        args.metrics == Switch::On,
        args.workers,
        dropped,
    )
}

fn serve(
    config_path: &Path,
    listen: std::net::SocketAddr,
    metrics: bool,
    workers: Option<usize>,
    dropped_log_lines: Option<log_queue::DroppedLines>,
) -> ExitCode {
    let workers = match workers::count(workers) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config_path = config_path.to_path_buf();
    let mut config = match GatewayConfig::load_file(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Unless the config fixes one, a fresh seed per process: generated ids never repeat.
    config
        .router_settings
        .rng_seed
        .get_or_insert_with(switchback::engine::os_seed);
    let catalog = match Catalog::new(&config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // This thread's runtime watches signals and reloads; the workers serve (`workers.rs`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = runtime.block_on(async move {
        // Before anything can announce the gateway (see `signals`).
        let signals::Signals { hangups, mut stop } = signals::Signals::install();
        let listeners = match workers::bind(listen, workers) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listeners[0]
            .local_addr()
            .map_or(listen.to_string(), |a| a.to_string());
        let observer: Arc<dyn Observer> = Arc::new(DecisionLog::new());
        // Reloads keep this connector: its DNS bounds are read once, at start.
        let connector = Arc::new(CachedDnsConnector::new(
            catalog.limits.dns_cache_ttl(),
            catalog.limits.max_dns_cache_entries,
        ));
        let (groups, deployments) = (catalog.model_group_count(), catalog.deployments.len());
        let mut engine = Engine::new(catalog, connector, observer, Arc::new(SystemWallClock));
        if metrics {
            let mut m = Metrics::new();
            if let Some(dropped) = dropped_log_lines {
                m = m.with_dropped_log_lines(move || dropped.get());
            }
            engine = engine.with_metrics(Arc::new(m));
        }
        let engine = LiveEngine::from(Arc::new(engine)).with_source(config_path);
        let grace = engine.limits_at_start().shutdown_grace;
        let gate = Gate::new(&engine);
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let started = workers::start(&engine, listeners, &gate, &stopped);
        let threads = started.threads;
        if let Some(e) = started.failed {
            eprintln!("error: cannot start {e}");
            stopping.send_replace(true);
            let _ = tokio::task::spawn_blocking(move || {
                threads.into_iter().for_each(|t| {
                    let _ = t.join();
                });
            })
            .await;
            return ExitCode::FAILURE;
        }
        say(&format!(
            "switchback gateway listening on http://{addr} ({groups} groups, {deployments} \
             deployments, {workers} workers)"
        ));
        let reloader = tokio::spawn(signals::reload_on_hangups(engine.clone(), hangups));
        let signal = stop.wait().await;
        let first_stop = tokio::time::Instant::now();
        say(&format!(
            "switchback: {signal}: no new connections; draining in-flight requests \
             (up to shutdown_grace = {grace}s)"
        ));
        stopping.send_replace(true);
        let mut joining =
            tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok()));
        // A second stop signal (an operator's second Ctrl-C, a supervisor that will not wait
        // out the grace) ends the drain: what is still in flight is cut. One that comes
        // right after the first is a copy of the same stop, not a second one.
        let joined = loop {
            tokio::select! {
                biased;
                joined = &mut joining => break joined,
                again = stop.wait() => {
                    if first_stop.elapsed() < signals::FORWARDED_STOP_WINDOW {
                        say(&format!(
                            "switchback: {again}: the same stop as {signal} (it came within \
                             {} ms, as a wrapper forwards one); send another to stop now",
                            signals::FORWARDED_STOP_WINDOW.as_millis()
                        ));
                        continue;
                    }
                    say(&format!(
                        "switchback: {again} after {signal}: stopping now; requests still in \
                         flight are cut"
                    ));
                    return ExitCode::FAILURE;
                }
            }
        };
        reloader.abort();
        // Nothing will ask for an upstream connection again: close the kept ones now.
        engine.current().upstream_pool().close_idle();
        if !matches!(joined, Ok(true)) {
            eprintln!("error: a worker thread failed");
            return ExitCode::FAILURE;
        }
        say("switchback: stopped");
        ExitCode::SUCCESS
    });
    // Never waits: after a cut drain, the task joining the workers is still blocked, and a
    // dropped runtime would wait for it (and for any DNS lookup still on its blocking pool).
    runtime.shutdown_background();
    status
}

/// One line of `serve`'s own on stdout. A write that fails (whatever read stdout is gone: a
/// supervisor that read the address, a `| head -1`) is ignored, where `println!` panics and
/// a release build aborts: a SIGTERM then cut every stream instead of draining them.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
