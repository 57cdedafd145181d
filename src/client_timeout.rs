//! How long a client says it will wait for its response to begin, and when the gateway must
//! have begun it.
//!
//! Owns: reading the official SDKs' own word for it from the request's headers
//! (`X-Stainless-Read-Timeout` from openai-python, the httpx read timeout; `X-Stainless-Timeout`
//! from openai-node; seconds, either of them) into a [`ClientTimeout`], and the margin the
//! gateway keeps so that its error is read before the client gives up. Does not own what
//! the attempt loop does with it (`attempt`: the request's deadline until the response
//! begins) nor the error's status (`classify`).
//!
//! Why: both SDKs wait 600 s by default, which is also the gateway's `request_deadline` and
//! `timeout`. Against a silent upstream the SDK gave up a moment before the gateway's error
//! (which says `x-should-retry: false`) and retried twice: three times the upstream's time,
//! 30 minutes before the client heard anything. A client can only shorten its own request
//! this way, never lengthen it, and the time is the client's: a deployment cut by it is
//! never counted as failing. The wait bounds only the response's beginning: the Python
//! SDK's timeout is per read, so a stream that has begun is not cut by it, where a
//! non-streaming answer, sent whole at its end, is bounded by it to the end.

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

/// The name a request cut by its client's wait is traced and counted under
/// (`limit_hit limit=client_timeout`), beside the gateway's own `request_deadline`.
pub const LIMIT: &str = "client_timeout";

/// The headers read, the first one present winning.
pub const HEADERS: [&str; 2] = ["x-stainless-read-timeout", "x-stainless-timeout"];

/// The most of a client's wait the gateway keeps for its error to reach the client (the
/// network, the client's own scheduling): a tenth of the wait, at most this.
pub const MAX_MARGIN: Duration = Duration::from_secs(1);

/// A client's advertised wait, and when the gateway must have begun its response.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTimeout {
    /// The header it came in.
    pub header: &'static str,
    /// The wait it advertised.
    pub wait: Duration,
    /// When the response must have begun: the request's arrival, plus the wait, less the
    /// margin.
    pub respond_by: Instant,
}

impl ClientTimeout {
    /// The wait `headers` advertise for a request that arrived at `arrived`; none when no
    /// header says one, or its value is no positive number of seconds a `Duration` holds.
    pub fn of(headers: &HeaderMap, arrived: Instant) -> Option<ClientTimeout> {
        let (header, value) = HEADERS.iter().find_map(|h| Some((*h, headers.get(*h)?)))?;
        let seconds: f64 = value.to_str().ok()?.trim().parse().ok()?;
        // NaN, zero and below are no wait.
        if seconds.is_nan() || seconds <= 0.0 {
            return None;
        }
        let wait = Duration::try_from_secs_f64(seconds).ok()?;
        let margin = MAX_MARGIN.min(wait / 10);
        Some(ClientTimeout {
            header,
            wait,
            respond_by: arrived.checked_add(wait - margin)?,
        })
    }

    /// How the client's error names it: `x-stainless-read-timeout: 20 s`.
    pub fn said(&self) -> String {
        format!("{}: {} s", self.header, self.wait.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pairs: &[(&'static str, &str)]) -> Option<ClientTimeout> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        ClientTimeout::of(&headers, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_read_from_either_sdks_header_with_a_margin() {
        let now = Instant::now();
        let python = of(&[("x-stainless-read-timeout", "600.0")]).unwrap();
        assert_eq!(python.respond_by, now + Duration::from_secs(599));
        let node = of(&[("x-stainless-timeout", "20")]).unwrap();
        assert_eq!(
            (node.header, node.wait),
            ("x-stainless-timeout", Duration::from_secs(20))
        );
        assert_eq!(node.respond_by, now + Duration::from_secs(19));
        let short = of(&[("x-stainless-read-timeout", "0.5")]).unwrap();
        assert_eq!(
            short.respond_by,
            now + Duration::from_millis(450),
            "a tenth of it"
        );
        let both = of(&[
            ("x-stainless-timeout", "30"),
            ("x-stainless-read-timeout", "20"),
        ]);
        assert_eq!(both.unwrap().header, "x-stainless-read-timeout");
        assert_eq!(python.said(), "x-stainless-read-timeout: 600 s");
    }

    #[test]
    fn what_is_no_positive_time_is_no_wait() {
        for value in ["0", "-5", "nan", "NaN", "inf", "1e400", "soon", "", "20s"] {
            assert_eq!(of(&[("x-stainless-read-timeout", value)]), None, "{value}");
        }
        assert_eq!(of(&[]), None);
    }
}
