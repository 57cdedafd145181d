//! Talking to an OpenAI-compatible upstream.
//!
//! Owns: where a deployment lives ([`Endpoint`]), the incremental SSE parser ([`sse`]),
//! chunk parsing ([`chunk`]) and the HTTP client of one attempt ([`client`]).

pub mod chunk;
pub mod client;
pub mod endpoint;
pub mod sse;

pub use endpoint::Endpoint;
