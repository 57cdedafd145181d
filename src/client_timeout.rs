//! How long a client says it will wait for its response to begin, and when the gateway must
//! have begun it.
//!
//! Owns: reading the official SDKs' own word for it from the request's headers
//! (`X-Stainless-Read-Timeout` from openai-python, the httpx read timeout, which starts once
//! the body is sent; `X-Stainless-Timeout` from openai-node, the whole call's, upload
//! included; seconds, either of them) into a [`ClientTimeout`], the margin the gateway
//! keeps so that its error is read before the client gives up, and the error's words. Does
//! not own what the attempt loop does with it (`attempt`: the request's deadline until the
//! response begins) nor the error's status (`classify`).
//!
//! Why: both SDKs wait 600 s by default, which is also the gateway's `request_deadline` and
//! `timeout`. Against a silent upstream the SDK gave up a moment before the gateway's error
//! (which says `x-should-retry: false`) and retried twice: three times the upstream's time,
//! 30 minutes before the client heard anything. A client can only shorten its own request
//! this way, never lengthen it, and the time is the client's: a deployment cut by it is
//! never counted as failing. The wait bounds only the response's beginning: openai-node's
//! timer stops once the response's head has come, and openai-python's timeout is per read,
//! so a stream that has begun is read chunk by chunk (a silence of the gateway's own there
//! is broken by keep-alives, `limits.stream_keep_alive`, at most half this read timeout
//! apart), where a non-streaming answer, sent whole at its end, is bounded by it to the end.

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

/// The name a request cut by its client's wait is traced and counted under
/// (`limit_hit limit=client_timeout`), beside the gateway's own `request_deadline`.
pub const LIMIT: &str = "client_timeout";

/// openai-python's: its read timeout, counted once the request's body is sent.
pub const READ_TIMEOUT: &str = "x-stainless-read-timeout";
/// openai-node's: the whole call's timeout, counted before its upload.
pub const CALL_TIMEOUT: &str = "x-stainless-timeout";

/// The headers read, the first one present winning.
pub const HEADERS: [&str; 2] = [READ_TIMEOUT, CALL_TIMEOUT];

/// The most of a client's wait the gateway keeps for its error to reach the client (the
/// network, the client's own scheduling): a tenth of the wait, at most this.
pub const MAX_MARGIN: Duration = Duration::from_secs(1);

/// A client's advertised wait, as read from its headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SdkWait {
    /// The header it came in.
    pub header: &'static str,
    /// The wait it advertised.
    pub wait: Duration,
}

impl SdkWait {
    /// The wait `headers` advertise; none when no header says one, or its value is no
    /// positive number of seconds a `Duration` holds.
    pub fn of(headers: &HeaderMap) -> Option<SdkWait> {
        let (header, value) = HEADERS.iter().find_map(|h| Some((*h, headers.get(*h)?)))?;
        let seconds: f64 = value.to_str().ok()?.trim().parse().ok()?;
        // NaN, zero and below are no wait.
        if seconds.is_nan() || seconds <= 0.0 {
            return None;
        }
        let wait = Duration::try_from_secs_f64(seconds).ok()?;
        Some(SdkWait { header, wait })
    }

    /// When the response must have begun, for a request whose head arrived at `arrived`
    /// and whose body was whole at `body_read`: from where the SDK's clock starts, plus
    /// the wait, less the margin.
    pub fn counted(self, arrived: Instant, body_read: Instant) -> Option<ClientTimeout> {
        let from = match self.header {
            READ_TIMEOUT => body_read,
            _ => arrived,
        };
        let margin = MAX_MARGIN.min(self.wait / 10);
        Some(ClientTimeout {
            header: self.header,
            wait: self.wait,
            respond_by: from.checked_add(self.wait - margin)?,
        })
    }
}

/// A client's advertised wait, and when the gateway must have begun its response.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTimeout {
    /// The header it came in.
    pub header: &'static str,
    /// The wait it advertised.
    pub wait: Duration,
    /// When the response must have begun (see [`SdkWait::counted`]).
    pub respond_by: Instant,
}

impl ClientTimeout {
    /// How the client's error names it: `x-stainless-read-timeout: 20 s`.
    pub fn said(&self) -> String {
        format!("{}: {} s", self.header, self.wait.as_secs_f64())
    }

    /// What the client is told when its wait ran out (`what` happened meanwhile).
    pub fn expired(&self, what: &str) -> String {
        format!(
            "no answer had begun within the client's own timeout ({}, less a margin for \
             this error to reach it): {what}",
            self.said()
        )
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
        let now = Instant::now();
        SdkWait::of(&headers)?.counted(now, now)
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

    /// httpx's read timeout starts once the body is sent; node's covers the upload.
    #[tokio::test(start_paused = true)]
    async fn each_sdks_clock_starts_where_it_does() {
        let arrived = Instant::now();
        let body_read = arrived + Duration::from_secs(40);
        let wait = |header| SdkWait {
            header,
            wait: Duration::from_secs(30),
        };
        let python = wait(READ_TIMEOUT).counted(arrived, body_read).unwrap();
        assert_eq!(python.respond_by, body_read + Duration::from_secs(29));
        let node = wait(CALL_TIMEOUT).counted(arrived, body_read).unwrap();
        assert_eq!(node.respond_by, arrived + Duration::from_secs(29));
    }

    #[test]
    fn what_is_no_positive_time_is_no_wait() {
        for value in ["0", "-5", "nan", "NaN", "inf", "1e400", "soon", "", "20s"] {
            assert_eq!(of(&[("x-stainless-read-timeout", value)]), None, "{value}");
        }
        assert_eq!(of(&[]), None);
    }
}
