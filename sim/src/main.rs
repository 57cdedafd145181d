//! `switchback`: run scenario suites in simulation, or run the gateway for real.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use switchback::catalog::Catalog;
use switchback::config::GatewayConfig;
use switchback::engine::{Engine, SystemWallClock};
use switchback::trace::NoTrace;
use switchback::transport::{TcpConnector, TcpListener};

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

#[derive(Subcommand)]
enum Command {
    /// Run scenario files (or folders of them) in simulation and print a summary.
    Run {
        /// Files or folders; folders are searched for *.yaml recursively.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print each run's trace.
        #[arg(long)]
        trace: bool,
    },
    /// Run the gateway on real sockets.
    Serve {
        /// Gateway config (LiteLLM-style YAML).
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { paths, trace } => run(&paths, trace),
        Command::Serve { config, listen } => serve(&config, listen),
    }
}

fn run(paths: &[PathBuf], trace: bool) -> ExitCode {
    match switchback_sim::run::run_suite(paths, trace, |line| println!("{line}")) {
        Ok((summary, failed)) => {
            println!(
                "\n{} scenarios, {} passed, {} failed; {} requests simulated in {:.2} s",
                summary.scenarios,
                summary.passed,
                failed.len(),
                summary.requests,
                summary.wall.as_secs_f64()
            );
            if failed.is_empty() && summary.scenarios > 0 {
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

fn serve(config: &std::path::Path, listen: std::net::SocketAddr) -> ExitCode {
    let config = match GatewayConfig::load_file(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let catalog = match Catalog::new(&config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .0
            .local_addr()
            .map_or(listen.to_string(), |a| a.to_string());
        println!(
            "switchback gateway listening on http://{addr} ({} groups, {} deployments)",
            catalog.groups.len(),
            catalog.deployments.len()
        );
        let engine = Arc::new(Engine::new(
            catalog,
            Arc::new(TcpConnector),
            Arc::new(NoTrace),
            Arc::new(SystemWallClock),
        ));
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        switchback::gateway::serve(engine, listener, shutdown).await;
        ExitCode::SUCCESS
    })
}
