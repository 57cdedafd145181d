//! Switchback: a routing engine for OpenAI-compatible LLM traffic whose streaming and
//! non-streaming paths cannot diverge.
//!
//! # Layout
//!
//! A request flows top to bottom through these modules; each owns one concept.
//!
//! * [`gateway`]: the HTTP server (hyper): accepting connections, the routes.
//! * [`request`]: a client's chat completion request, parsed, checked, and turned into
//!   upstream bodies.
//! * [`engine`]: shared state (catalog, cooldowns, the pool), admission, and the entry to
//!   the attempt loop.
//! * [`attempt`]: the one attempt loop, shared by streaming and non-streaming requests.
//! * [`delivery`]: the two ways an answer reaches the client, an SSE stream or one body.
//! * [`held_end`]: the rule both deliveries hold and drop the answer's possible end by.
//! * [`frames`]: the bounded channel between the loop and a streaming client.
//! * [`error`]: the OpenAI-shaped errors a client sees.
//! * [`client_timeout`]: how long an SDK says it waits for its response to begin.
//! * [`transport`]: the connect/listen seam, the only place the engine touches sockets.
//! * [`config`]: the gateway config file (LiteLLM field names) and its validation.
//! * [`catalog`]: the validated, indexed config the engine reads at run time.
//! * [`policy`]: the effective settings of one request: request > key > team > gateway >
//!   default, field by field, resolved exactly once.
//! * [`plan`]: the immutable fallback plan and its depth-first walk.
//! * [`classify`]: upstream failure → [`classify::FailureClass`], and the decision table.
//! * [`route`]: deployment choice, cooldowns, retry backoff.
//! * [`upstream`]: the OpenAI-compatible client: endpoint, SSE parser, which answers it
//!   reads (content codings, labels), the pool of kept connections, TLS.
//! * [`dns`]: real TCP to upstreams, with DNS answers cached for a bounded time.
//! * [`json`]: JSON text into `serde_json` values, each map allocated once.
//! * [`charset`]: a client's body is UTF-8 JSON (a byte-order mark skipped), or refused
//!   naming the encoding it is in; the byte-order mark every body reader drops.
//! * [`content_encoding`]: which `Content-Encoding` names a compression (none is decoded).
//! * [`accumulate`]: OpenAI's accumulation of chunks into one completion.
//! * [`commit`]: what the client has been given, and what a continuation may ask.
//! * [`seam`]: a stop sequence split across a continuation's seam.
//! * [`trace`]: typed events and the [`trace::Observer`] seam.
//! * [`decision_log`]: every routing decision, and an access line per request, as `tracing`
//!   events for operators.
//! * [`limits`]: every named bound and its default.
//! * [`metrics`]: Prometheus counters and histograms, fed by the trace events.
//! * [`redact`]: keeping secrets out of every message a client can read.
//! * [`secret`]: a secret's text, which `Debug` never shows.
//! * [`reload`]: swapping the running config for a validated new one.
//! * [`wildcard`]: wildcard model groups (`openai/*`) and wildcard allow-list entries.
//! * [`yaml`]: YAML loading with errors that name file, line, column and field.
//!
//! The decision modules (`policy`, `plan`, `classify`, `route`) are pure: plain data in,
//! decision out, with time and randomness passed in. None of them knows whether the request
//! streams; that is what makes the two modes take the same decisions.
#![forbid(unsafe_code)]

pub mod accumulate;
pub mod attempt;
pub mod catalog;
pub mod charset;
pub mod classify;
pub mod client_timeout;
pub mod commit;
pub mod config;
pub mod content_encoding;
pub mod decision_log;
pub mod delivery;
pub mod dns;
pub mod engine;
pub mod error;
pub mod frames;
pub mod gateway;
pub mod held_end;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod redact;
pub mod reload;
pub mod request;
pub mod route;
pub mod seam;
pub mod secret;
pub mod trace;
pub mod transport;
pub mod upstream;
pub mod wildcard;
pub mod yaml;
