//! Talking to an OpenAI-compatible upstream.
//!
//! Owns: where a deployment lives ([`Endpoint`]), the incremental SSE parser ([`sse`]),
//! chunk parsing ([`chunk`]), which choices have finished ([`choices`]), a stream's closing
//! restatement of its answer ([`restatement`]) and the shape a
//! chunk's JSON object is held in ([`chunk_object`]), the HTTP client of one attempt
//! ([`client`]), which answers it reads ([`coding`]: content codings and labels), the
//! connections kept between attempts ([`pool`]), when a new HTTP/2 connection's server has
//! been heard ([`first_frame`]) and TLS for `https` upstreams ([`tls`]).

pub mod choices;
pub mod chunk;
pub mod chunk_object;
pub mod client;
pub mod coding;
pub mod endpoint;
pub mod first_frame;
pub mod pool;
pub mod restatement;
pub mod sse;
pub mod tls;

pub use endpoint::Endpoint;
