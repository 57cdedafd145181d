//! Reading a client's request body under its limits, and throwing away a refused one.
//!
//! Owns: [`read`], the body under `max_request_body_bytes` and its [`Deadline`] (telling a
//! connection that ended before the body, a cancelled upload, from a body whose framing is
//! broken: only the second has a client left to refuse), and [`discard`], what is left of
//! the body of a request refused before it was read (a 413, a 401) or that came too slowly
//! (a 408). The official SDKs (httpx, undici) send their whole body before they read the
//! response: a gateway that answered and closed the socket with the body unread would have
//! the kernel reset the connection under the client's writes, and the SDK would raise a
//! connection error (and retry, uploading the body again) instead of the 413 or 401. So the
//! rest is read and dropped, up to `max_discarded_request_body_bytes` and within its
//! deadline; past either, the connection is dropped. Also owns the gateway-wide budget of
//! request body bytes in flight ([`BodyBudget`], `max_in_flight_request_body_bytes`): [`read`]
//! takes a body's bytes from it as they come, and the request gives them back when it ends
//! ([`Held`]). Does not own what the request says (`engine::admit`) nor the error responses
//! (`routes`).
//!
//! A body's deadline grows with what it brings: `body_read_timeout` after the head, plus a
//! second for every `min_request_body_bytes_per_second` bytes received (Apache's
//! `mod_reqtimeout` rule), but never to more than `body_read_timeout` after the bytes that
//! moved it: what a body is ahead of the minimum rate is banked for `body_read_timeout` at
//! most. A fixed deadline on the whole body failed honest large uploads on slow uplinks; an
//! idle timeout alone would let a client hold a connection for ever with a byte now and
//! then; the rate alone let a client that sent most of a large body fast, then stopped,
//! hold its connection and the body in memory for as long as it had earned (an hour for
//! 50 MiB); and the rate with an idle timeout still let that client spend what it had
//! earned on a byte every 25 s, holding its share of `max_in_flight_request_body_bytes`
//! the while (four such uploads kept every other tenant at 503). A body that keeps up the
//! minimum rate is read to its end however slow; one that falls `body_read_timeout` behind
//! it, counted from the last time it was ahead, gets its 408.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};

use crate::limits::Limits;

/// Beyond any deadline a valid config can make matter (30 years).
const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);

/// When a body (or what is left of it) must have come by, which grows with what it brings.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    /// The deadline, as time after `start`: `grace` at first, moved on by each read's bytes
    /// at `per_second`, and never past `grace` after that read.
    until: Duration,
    grace: Duration,
    /// 0: the deadline does not grow.
    per_second: u64,
    received: u64,
}

impl Deadline {
    /// A body's deadline as `limits` set it, from now (its head has arrived).
    pub fn new(limits: &Limits) -> Deadline {
        let grace = limits.body_read_timeout().min(FAR);
        Deadline {
            start: Instant::now(),
            until: grace,
            grace,
            per_second: limits.min_request_body_bytes_per_second as u64,
            received: 0,
        }
    }

    /// `grace` from now, whatever comes.
    pub fn fixed(grace: Duration) -> Deadline {
        let grace = grace.min(FAR);
        Deadline {
            start: Instant::now(),
            until: grace,
            grace,
            per_second: 0,
            received: 0,
        }
    }

    /// Bytes of the body received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Time since the deadline was set.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn got(&mut self, bytes: usize) {
        self.received = self.received.saturating_add(bytes as u64);
        if bytes == 0 || self.per_second == 0 {
            return;
        }
        // In nanoseconds: no float, no overflow (2^64 bytes at a byte a second fit a u128).
        let nanos = u128::from(bytes as u64) * 1_000_000_000 / u128::from(self.per_second);
        let earned = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let banked = self.start.elapsed().saturating_add(self.grace);
        self.until = self.until.saturating_add(earned).min(banked);
    }

    fn until(&self) -> Instant {
        // `until` is at most `grace` (capped at `FAR`) past the time elapsed: an
        // `Instant` holds it.
        self.start + self.until
    }
}

/// The bytes of request bodies the whole gateway may hold at once
/// (`max_in_flight_request_body_bytes`), shared by every accept loop as the connection
/// limits are. A request that does not fit is refused at once rather than made to wait:
/// waiting would hold its connection and what it has sent so far while it waits, and a
/// client told 503 with a `retry-after` (which the SDKs retry) costs nothing meanwhile.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    /// A budget of `total` bytes (validated: at most 64 GiB, far below a semaphore's
    /// bound).
    pub fn new(total: usize) -> BodyBudget {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not held by any request right now.
    pub fn free(&self) -> usize {
        self.bytes.available_permits()
    }

    /// A hold on nothing yet, for one request's body.
    pub fn hold(&self) -> Held {
        Held {
            budget: self.clone(),
            permit: None,
            bytes: 0,
        }
    }
}

/// What one request holds of the [`BodyBudget`]; given back when dropped, so whatever owns
/// the request's memory (its parsed body, the attempt loop's task) should own this too.
#[derive(Debug)]
pub struct Held {
    budget: BodyBudget,
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The whole budget this is a hold on, in bytes.
    pub fn budget_total(&self) -> usize {
        self.budget.total
    }

    /// Makes the hold cover `bytes` of body in all, taking only what it lacks, at once or
    /// not at all: `false` when the budget has not that much free. Never waits. A body
    /// larger than the whole budget (only possible once a reload has raised
    /// `max_request_body_bytes` past the budget read at start) is charged the whole
    /// budget: it is then served alone, rather than refused for ever.
    pub fn cover(&mut self, bytes: usize) -> bool {
        let want = bytes.min(self.budget.total);
        if want <= self.bytes {
            return true;
        }
        // A semaphore gives at most a u32 of permits at once, and a request's parsed size
        // can be more: taken in steps, and all given back (on drop) if one step fails.
        let mut lacking = want - self.bytes;
        let mut taken: Option<OwnedSemaphorePermit> = None;
        while lacking > 0 {
            let step = u32::try_from(lacking).unwrap_or(u32::MAX);
            let Ok(more) = self.budget.bytes.clone().try_acquire_many_owned(step) else {
                return false;
            };
            match &mut taken {
                Some(permit) => permit.merge(more),
                None => taken = Some(more),
            }
            lacking -= step as usize;
        }
        if let Some(taken) = taken {
            match &mut self.permit {
                Some(permit) => permit.merge(taken),
                None => self.permit = Some(taken),
            }
        }
        self.bytes = want;
        true
    }
}

/// Why a body could not be read.
pub enum ReadError {
    /// Over the limit; the body, to be discarded under its deadline as it stands.
    TooLarge(Incoming, Deadline),
    /// The gateway's budget of bodies in flight has no room for the next bytes; the body,
    /// to be discarded under its deadline as it stands, and the bytes it had brought.
    OverBudget(Incoming, Deadline),
    /// It came too slowly for its deadline; the body, and the deadline it missed.
    TimedOut(Incoming, Deadline),
    /// The connection ended (closed, reset) before the body was whole: the client cancelled
    /// its request, and nobody is there to be answered.
    Left,
    /// The body's framing is broken (a bad chunk size): the client is still there to be
    /// told.
    Malformed(hyper::Error),
}

/// Reads the whole body: at most `max` bytes, within `deadline`, each one covered by `held`
/// before it is kept.
pub async fn read(
    mut body: Incoming,
    max: usize,
    mut deadline: Deadline,
    held: &mut Held,
) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    loop {
        match timeout_at(deadline.until(), body.frame()).await {
            Err(_) => return Err(ReadError::TimedOut(body, deadline)),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) if is_malformed(&e) => return Err(ReadError::Malformed(e)),
            Ok(Some(Err(_))) => return Err(ReadError::Left),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    deadline.got(data.len());
                    if data.len() > max - buf.len() {
                        return Err(ReadError::TooLarge(body, deadline));
                    }
                    if !held.cover(buf.len() + data.len()) {
                        return Err(ReadError::OverBudget(body, deadline));
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
/// `max` bytes, within `deadline`, after which the body (and with it the connection) is
/// dropped.
pub fn discard(mut body: Incoming, max: usize, mut deadline: Deadline) {
    if max == 0 || body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut left = max;
        while let Ok(Some(Ok(frame))) = timeout_at(deadline.until(), body.frame()).await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n > left {
                return;
            }
            left -= n;
            deadline.got(n);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_takes_what_it_lacks_at_once_or_nothing_and_gives_it_back_when_dropped() {
        let budget = BodyBudget::new(100);
        let mut a = budget.hold();
        assert!(a.cover(30));
        assert!(a.cover(60), "grows by what it lacks");
        assert!(a.cover(10), "never shrinks");
        assert_eq!((a.bytes(), budget.free()), (60, 40));
        let mut b = budget.hold();
        assert!(!b.cover(41), "over what is free: refused");
        assert_eq!((b.bytes(), budget.free()), (0, 40), "and nothing taken");
        assert!(b.cover(40));
        drop(a);
        assert_eq!(budget.free(), 60);
        drop(b);
        assert_eq!(budget.free(), 100, "whole again");
    }

    /// A request's parsed size (its values at their in-memory cost) can pass 4 GiB under
    /// valid limits (`max_request_json_values` up to 10^8, a budget up to 64 GiB): a
    /// semaphore takes at most a u32 of permits at once, and such a hold was refused on an
    /// idle gateway, a 503 "retry shortly" that no retry could mend.
    #[test]
    fn a_hold_over_four_gib_is_taken_in_steps() {
        let budget = BodyBudget::new(16 << 30);
        let mut big = budget.hold();
        assert!(big.cover(5 << 30));
        assert_eq!((big.bytes(), budget.free()), (5 << 30, 11 << 30));
        assert!(!budget.hold().cover(12 << 30), "over what is free: refused");
        assert_eq!(budget.free(), 11 << 30, "and nothing taken");
        drop(big);
        assert_eq!(budget.free(), 16 << 30);
    }

    #[test]
    fn a_body_larger_than_the_whole_budget_takes_all_of_it_rather_than_never_fitting() {
        let budget = BodyBudget::new(100);
        let mut big = budget.hold();
        assert!(big.cover(1_000));
        assert_eq!((big.bytes(), budget.free()), (100, 0));
        assert!(!budget.hold().cover(1), "served alone");
        drop(big);
        assert_eq!(budget.free(), 100);
    }
}
