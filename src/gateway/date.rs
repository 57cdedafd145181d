//! The `Date` header of every response, from the engine's wall clock.
//!
//! Owns: stamping a response with `Date` (RFC 9110 asks an origin server with a clock to
//! send one), formatted once per second. Does not own the clock: the engine's
//! [`WallClock`](crate::engine::WallClock), the system's in `serve`, the simulation's epoch
//! plus simulated time in the harness. hyper's own `Date` reads the system clock, so in the
//! simulation a response carried the machine's real time, which a scenario's `headers`
//! expectation and the secrecy scan read: the same seed gave different responses.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Response, header};

use crate::engine::Engine;

thread_local! {
    /// The last second formatted on this thread, and its header: a gateway worker formats
    /// the date once a second, not once a response.
    static LAST: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// Sets `Date` on `response` to the engine's wall-clock time now.
pub fn stamp<B>(engine: &Engine, response: &mut Response<B>) {
    let value = at(engine.wall_now());
    response.headers_mut().insert(header::DATE, value);
}

/// The `Date` value for `now`, in the IMF-fixdate form.
fn at(now: SystemTime) -> HeaderValue {
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    LAST.with_borrow_mut(|last| match last {
        Some((s, value)) if *s == second => value.clone(),
        _ => {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(second));
            let value = HeaderValue::from_str(&text).expect("an HTTP-date is a valid header value");
            *last = Some((second, value.clone()));
            value
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_date_is_the_clocks_second_whatever_came_before() {
        let epoch = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(at(epoch), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(
            at(epoch + Duration::from_millis(999)),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert_eq!(
            at(epoch + Duration::from_secs(1)),
            "Tue, 14 Nov 2023 22:13:21 GMT"
        );
        // A clock that goes back (another engine on this thread) gets its own second.
        assert_eq!(at(epoch), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(at(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
