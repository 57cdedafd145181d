//! Reading a client's request body under its limits, and throwing away a refused one.
//!
//! Owns: [`read`], the body under `max_request_body_bytes` and `body_read_timeout` (telling
//! a connection that ended before the body, a cancelled upload, from a body whose framing is
//! broken: only the second has a client left to refuse), and
//! [`discard`], what is left of the body of a request refused before it was read (a 413, a
//! 401). The official SDKs (httpx, undici) send their whole body before they read the
//! response: a gateway that answered and closed the socket with the body unread would have
//! the kernel reset the connection under the client's writes, and the SDK would raise a
//! connection error (and retry, uploading the body again) instead of the 413 or 401. So the
//! rest is read and dropped, up to `max_discarded_request_body_bytes` and within the body
//! read timeout; past either, the connection is dropped. Does not own what the request
//! says (`engine::admit`) nor the error responses (`routes`).

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::time::{Instant, timeout_at};

/// Why a body could not be read.
pub enum ReadError {
    /// Over the limit; the body, to be discarded.
    TooLarge(Incoming),
    /// Not received in time.
    TimedOut,
    /// The connection ended (closed, reset) before the body was whole: the client cancelled
    /// its request, and nobody is there to be answered.
    Left,
    /// The body's framing is broken (a bad chunk size): the client is still there to be
    /// told.
    Malformed(hyper::Error),
}

/// Reads the whole body: at most `max` bytes, by `until`.
pub async fn read(mut body: Incoming, max: usize, until: Instant) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    loop {
        match timeout_at(until, body.frame()).await {
            Err(_) => return Err(ReadError::TimedOut),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) if is_malformed(&e) => return Err(ReadError::Malformed(e)),
            Ok(Some(Err(_))) => return Err(ReadError::Left),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if data.len() > max - buf.len() {
                        return Err(ReadError::TooLarge(body));
                    }
                    buf.extend_from_slice(data);
                }
            }
        }
    }
}

/// Whether a body error is the body's own framing, which hyper's decoder reports as
/// `InvalidInput` or `InvalidData`; every other error (the end of the connection before the
/// body's, a reset) means the connection is gone.
fn is_malformed(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            )
        })
}

/// Reads what is left of a refused request's body in the background and drops it: at most
/// `max` bytes, by `until`, after which the body (and with it the connection) is dropped.
pub fn discard(mut body: Incoming, max: usize, until: Instant) {
    if max == 0 || body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut left = max;
        while let Ok(Some(Ok(frame))) = timeout_at(until, body.frame()).await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n > left {
                return;
            }
            left -= n;
        }
    });
}
