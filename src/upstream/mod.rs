//! Talking to an OpenAI-compatible upstream.
//!
//! Owns: where a deployment lives ([`Endpoint`]) and the incremental SSE parser ([`sse`]).

pub mod endpoint;
pub mod sse;

pub use endpoint::Endpoint;
