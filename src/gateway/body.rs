//! Response bodies: a whole buffer, or frames from the attempt loop's bounded channel
//! ([`crate::frames`]).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use crate::frames::{FrameReceiver, StreamCut};

/// A response body; it fails only when a stream is cut short ([`StreamCut`]), which makes
/// hyper close the connection without ending the body.
pub type ResponseBody = BoxBody<Bytes, StreamCut>;

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A body fed by the attempt loop; it ends when the sender is dropped. Dropping the body
/// (the client went away) is what the sender sees as "client gone".
pub fn frames(rx: FrameReceiver) -> ResponseBody {
    rx.boxed()
}
