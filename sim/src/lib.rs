//! The world Switchback is tested in, and the `switchback` command line.
//!
//! # Layout
//!
//! * [`scenario`]: the scenario file model QA write, loaded with located errors.
//! * [`fake`]: scripted OpenAI-compatible providers that inject faults at chunk offsets.
//! * [`dialect`]: how real providers' answers look on the wire (OpenAI, Azure, Gemini, ...).
//! * [`world`]: one turmoil simulation per run: gateway, provider and client hosts.
//! * [`client`]: scripted requests, and what a client sees.
//! * [`sdk_stream`]: how an official SDK reads a stream, apart from the engine's parser.
//! * [`live`]: the same scenarios on real loopback sockets and the real clock.
//! * [`emit`]: gateway configs (Switchback's or LiteLLM's) pointing at loopback fakes.
//! * [`probe`]: equivalence checks against any external gateway on loopback.
//! * [`load`]: an open-loop load generator with HDR histograms.
//! * [`overhead`]: the gateway's added latency against a direct baseline, and its memory.
//! * [`kernel_tcp`]: the kernel's TCP counters (accept-queue overflows, SYN retransmits)
//!   that a benchmark reports beside its latencies.
//! * [`stall`]: watching a runtime's event loop for stalls (`serve`'s workers, the bench).
//! * [`oracle`]: expectations, invariants, stream/non-stream equivalence.
//! * [`metrics_check`]: the gateway's Prometheus counters against its trace, on every run.
//! * [`passthrough`]: wire fidelity (what the provider sent is what the client got) and
//!   secrecy (no deployment key in anything a client receives).
//! * [`explore`]: generated scenarios, swarm fault mixes, shrinking to a scenario file.
//! * [`counted`]: counting the gateway's open connections.
//! * [`trace`]: the canonical per-run trace that snapshots record.
//! * [`run`]: running files and suites, and the summary.
//! * [`schema`]: JSON Schemas of scenario files and the gateway config, for editors.
//! * [`report`]: HTML timelines of runs (`report --html`, `explore --html`, `probe --html`).

pub mod client;
pub mod counted;
pub mod dialect;
pub mod emit;
pub mod explore;
pub mod fake;
pub mod kernel_tcp;
pub mod live;
pub mod load;
pub mod metrics_check;
pub mod oracle;
pub mod overhead;
pub mod passthrough;
pub mod probe;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schema;
pub mod sdk_stream;
pub mod stall;
pub mod tls_fake;
pub mod trace;
pub mod world;
