//! `switchback-gateway`: the gateway alone, with the flags of `switchback serve`.
//!
//! Why a binary of its own: `switchback` carries the whole harness beside the gateway
//! (scenarios, explore, probe, load, turmoil), and the kernel maps a binary's code in
//! blocks around each page `serve` runs, so `switchback serve` keeps 2 to 3 MiB more
//! resident than this binary for the same work (see the README's benchmarks). This one
//! holds what serving needs and nothing else: the modules below are `switchback`'s own
//! files, included here rather than copied, so the two cannot drift apart.

#[path = "../switchback/allocator.rs"]
mod allocator;
#[path = "../switchback/log_queue.rs"]
mod log_queue;
#[path = "../switchback/logs.rs"]
mod logs;
#[path = "../switchback/serve.rs"]
mod serve;
#[path = "../switchback/signals.rs"]
mod signals;
#[path = "../switchback/workers.rs"]
mod workers;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "switchback-gateway",
    version,
    about = "Switchback's gateway on real sockets (the same as `switchback serve`)"
)]
struct Cli {
    #[command(flatten)]
    serve: serve::ServeArgs,
}

fn main() -> ExitCode {
    serve::run(Cli::parse().serve)
}
