//! Cross-origin calls from browser pages (CORS), for the origins the config lists.
//!
//! Owns: [`CorsPolicy`], `general_settings.cors_allowed_origins` made ready to match a
//! request's `Origin`; answering a preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`); and the headers every response to an allowed origin
//! carries. Off (no origin listed) it changes nothing: a preflight is then a 405, as any
//! `OPTIONS` is. Does not own which methods a route takes (`routes`) nor keys: a page still
//! sends its virtual key, and CORS only lets the browser hand the page the answer.
//!
//! Why opt-in, where LiteLLM allows every origin by default: a gateway that serves
//! anonymous requests (`allow_anonymous`) inside a private network would let any web page
//! a user of that network opens read its models' answers. (Spending them needs no CORS: a
//! page's "simple" POST goes without a preflight; `routes` refuses an anonymous one from an
//! unlisted origin.) Credentials (cookies) are never allowed: the gateway reads keys from
//! headers only.

use http::{HeaderMap, HeaderValue, Response, header};

/// How long a browser may keep a preflight's answer, seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The origins allowed to call the gateway from a browser page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    origins: Vec<String>,
    any: bool,
}

impl CorsPolicy {
    /// The policy of `cors_allowed_origins` (validated: `*` or `scheme://host[:port]`).
    pub fn new(origins: &[String]) -> CorsPolicy {
        CorsPolicy {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether no origin is allowed: the gateway answers as if CORS did not exist.
    pub fn is_off(&self) -> bool {
        !self.any && self.origins.is_empty()
    }

    /// The request's `Origin`, when it is one the policy allows (`None` without one).
    pub fn allowed(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        let allowed = self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(text));
        allowed.then(|| origin.clone())
    }
}

/// Whether a request is a browser's preflight: `OPTIONS` naming the method it will send.
pub fn is_preflight<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from `origin` (allowed) for a route that takes `methods`: the
/// headers the page asked to send are allowed as asked (the key headers, `content-type`,
/// the SDKs' `x-stainless-*`), for [`PREFLIGHT_MAX_AGE`].
pub fn preflight<B: Default>(
    origin: HeaderValue,
    requested_headers: Option<&HeaderValue>,
    methods: &'static str,
) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    if let Some(requested) = requested_headers {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    allow(&mut response, origin);
    response
}

/// Lets the page on `origin` read `response`, and every header of it (`x-request-id`, the
/// `x-ratelimit-*` headers, `retry-after`, Switchback's own).
pub fn allow<B>(response: &mut Response<B>, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // `*` exposes every header to a request without credentials, which is every request
    // here (keys come in headers, never cookies).
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("*"),
    );
    // The answer depends on the Origin: a cache must not hand it to another page.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Whether a `Host` (`name[:port]`) names the gateway by its address or as `localhost`:
/// names no page of another site can have. Any other DNS name may be a page's own whose
/// owner points it at the gateway's address (DNS rebinding); `localhost` is kept to the
/// machine by browsers themselves.
pub fn names_no_dns(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((v6, _port)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok() || name.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_an_address_or_localhost_names_no_dns() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:4000",
            "10.0.0.5:4000",
            "[::1]:4000",
            "[::1]",
            "localhost",
            "LocalHost:4000",
        ] {
            assert!(super::names_no_dns(host), "{host}");
        }
        for host in [
            "evil.example:4000",
            "gateway",
            "localhost.evil.example",
            "127.0.0.1.nip.io:4000",
            "[::1",
            "",
            "::1",
        ] {
            assert!(!super::names_no_dns(host), "{host}");
        }
    }

    use super::*;

    fn origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn only_a_listed_origin_is_allowed_and_star_allows_any() {
        let policy =
            CorsPolicy::new(&["https://App.example".into(), "http://localhost:3000".into()]);
        assert!(!policy.is_off());
        assert!(policy.allowed(&origin("https://app.example")).is_some());
        assert!(policy.allowed(&origin("http://localhost:3000")).is_some());
        assert!(policy.allowed(&origin("http://localhost:3001")).is_none());
        assert!(
            policy
                .allowed(&origin("https://app.example.evil"))
                .is_none()
        );
        assert!(policy.allowed(&HeaderMap::new()).is_none());
        let any = CorsPolicy::new(&["*".into()]);
        assert!(any.allowed(&origin("null")).is_some());
        assert!(CorsPolicy::new(&[]).is_off());
    }
}
