//! Where a deployment lives: scheme, host, port and base path of its `api_base`.

use std::fmt;

/// A parsed `api_base`, e.g. `http://provider-a:8000/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Base path without a trailing slash (`/v1`), or empty.
    pub base_path: String,
    /// Azure OpenAI's deployments API, at this `api-version` (`litellm_params.api_version`):
    /// the call names its deployment in the path and its version in the query, and sends
    /// its key as `api-key`. None: an OpenAI-compatible API (`{base}/chat/completions`,
    /// a Bearer key), Azure's v1 API (`.../openai/v1`) among them.
    pub azure_api_version: Option<String>,
}

impl Endpoint {
    pub fn parse(api_base: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = api_base
            .parse()
            .map_err(|e| format!("`{api_base}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(format!(
                    "`{api_base}`: scheme `{other}` is not http or https"
                ));
            }
            None => return Err(format!("`{api_base}` needs a scheme (http:// or https://)")),
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if authority.contains('@') {
            return Err(format!(
                "`{}`: credentials in the URL (`user:pass@`) are not sent upstream; put the key \
                 in `api_key`",
                redact_userinfo(api_base)
            ));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{api_base}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if uri.query().is_some() {
            return Err(format!(
                "`{api_base}`: a query string is not allowed in api_base"
            ));
        }
        // `http::Uri` accepts any digits after the colon but reports a port only when it
        // fits in u16 (port 99999 would silently become 80): read it from the authority.
        let after_host = authority
            .rsplit_once(']')
            .map_or(authority, |(_, rest)| rest);
        let port = match after_host.rsplit_once(':') {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some((_, digits)) => match digits.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(format!(
                        "`{api_base}`: port `{digits}` is not a port (1 to 65535)"
                    ));
                }
            },
        };
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(Endpoint {
            tls,
            host,
            port,
            base_path,
            azure_api_version: None,
        })
    }

    /// The upstream as requests name it (`Host`, HTTP/2 `:authority`): the host, with the
    /// port only when it is not the scheme's default. RFC 9110 §4.2.3 makes both forms the
    /// same, but not every server agrees: Envoy-based fronts (Envoy AI Gateway, Envoy
    /// Gateway, Emissary) match virtual hosts on the bare name and answered `host:443` with
    /// `404 NR route_not_found`. curl, httpx and hyper-util leave the default port out.
    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            self.bracketed_host()
        } else {
            self.host_port()
        }
    }

    /// `host:port`, always with the port: where connections go, for messages.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    /// The host, an IPv6 literal in brackets (RFC 3986 §3.2.2).
    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The path (and query) a chat completion of `model` is posted to.
    pub fn chat_completions_path(&self, model: &str) -> String {
        match &self.azure_api_version {
            None => format!("{}/chat/completions", self.base_path),
            Some(version) => {
                // The SDKs' `azure_endpoint` is the resource's root, and they add `/openai`;
                // a base that already ends in it names the same.
                let root = self
                    .base_path
                    .strip_suffix("/openai")
                    .unwrap_or(&self.base_path);
                let mut deployment =
                    percent_encoding::utf8_percent_encode(model, PATH_SEGMENT).to_string();
                // `.` and `..` are unreserved, yet as a whole segment they name another path
                // (RFC 3986 §5.2.4): a wildcard group's `azure/..` would post elsewhere.
                if deployment == "." || deployment == ".." {
                    deployment = deployment.replace('.', "%2E");
                }
                let version =
                    percent_encoding::utf8_percent_encode(version, QUERY_VALUE).to_string();
                format!(
                    "{root}/openai/deployments/{deployment}/chat/completions?api-version={version}"
                )
            }
        }
    }

    /// Whether the key goes in `api-key` (Azure's deployments API) rather than a Bearer.
    pub fn takes_api_key_header(&self) -> bool {
        self.azure_api_version.is_some()
    }
}

/// What a deployment name may not carry as it is in a path segment (RFC 3986 §3.3: anything
/// but unreserved characters is escaped).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The same for a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = PATH_SEGMENT;

/// `http://user:pass@host/` → `http://[redacted]@host/`, so an error never repeats a secret.
fn redact_userinfo(api_base: &str) -> String {
    match (api_base.find("://"), api_base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            format!("{}[redacted]{}", &api_base[..s + 3], &api_base[at..])
        }
        _ => api_base.to_string(),
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_port(), self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let e = Endpoint::parse("http://provider-a:8000/v1/").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.base_path.as_str()),
            (false, "provider-a", 8000, "/v1")
        );
        assert_eq!(e.chat_completions_path("m"), "/v1/chat/completions");
        let e = Endpoint::parse("https://api.openai.com/v1").unwrap();
        assert_eq!((e.tls, e.port), (true, 443));
        let e = Endpoint::parse("http://[::1]:9/").unwrap();
        assert_eq!(
            (
                e.host.as_str(),
                e.authority().as_str(),
                e.base_path.as_str()
            ),
            ("::1", "[::1]:9", "")
        );
    }

    /// `Host` and `:authority` name the port only when it is not the scheme's default, as
    /// curl, httpx and hyper-util send them: Envoy-based fronts (Envoy AI Gateway, Envoy
    /// Gateway, Emissary) match virtual hosts by name and answered `api.example.com:443`
    /// with `404 NR route_not_found`, which cooled the deployment.
    #[test]
    fn the_authority_names_the_port_only_when_it_is_not_the_schemes_default() {
        for (api_base, authority) in [
            ("https://api.openai.com/v1", "api.openai.com"),
            ("https://api.openai.com:443/v1", "api.openai.com"),
            ("http://provider-a/v1", "provider-a"),
            ("http://provider-a:80/v1", "provider-a"),
            ("https://provider-a:8443/v1", "provider-a:8443"),
            ("http://provider-a:443/v1", "provider-a:443"),
            ("https://provider-a:80/v1", "provider-a:80"),
            ("http://provider-a:8000/v1", "provider-a:8000"),
            ("https://[2001:db8::1]/v1", "[2001:db8::1]"),
            ("http://[::1]:9/", "[::1]:9"),
        ] {
            let e = Endpoint::parse(api_base).unwrap();
            assert_eq!(e.authority(), authority, "{api_base}");
        }
    }

    #[test]
    fn an_azure_deployment_is_named_in_the_path() {
        for (api_base, path) in [
            (
                "https://res.openai.azure.com",
                "/openai/deployments/gpt 4o/chat/completions",
            ),
            (
                "https://res.openai.azure.com/",
                "/openai/deployments/gpt 4o/chat/completions",
            ),
            (
                "https://res.openai.azure.com/openai",
                "/openai/deployments/gpt 4o/chat/completions",
            ),
            (
                "https://apim.example.com/eu",
                "/eu/openai/deployments/gpt 4o/chat/completions",
            ),
        ] {
            let mut e = Endpoint::parse(api_base).unwrap();
            assert!(!e.takes_api_key_header());
            e.azure_api_version = Some("2025-01-01-preview".into());
            assert!(e.takes_api_key_header());
            assert_eq!(
                e.chat_completions_path(".."),
                format!(
                    "{}?api-version=2025-01-01-preview",
                    path.replace("gpt 4o", "%2E%2E")
                ),
                "{api_base}: a dot segment would name another path"
            );
            assert_eq!(
                e.chat_completions_path("gpt 4o/x"),
                format!(
                    "{}?api-version=2025-01-01-preview",
                    path.replace("gpt 4o", "gpt%204o%2Fx")
                ),
                "{api_base}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_base_url() {
        for bad in [
            "provider-a:8000",
            "ftp://x/v1",
            "http:///v1",
            "http://x/v1?a=b",
            "not a url",
            "http://x:99999/v1",
            "http://x:0/v1",
            "http://user:pass@x/v1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_problem_without_repeating_credentials() {
        let e = Endpoint::parse("http://x:99999/v1").unwrap_err();
        assert!(e.contains("port `99999`"), "{e}");
        let e = Endpoint::parse("https://me:hunter2@x/v1").unwrap_err();
        assert!(e.contains("api_key") && !e.contains("hunter2"), "{e}");
    }
}
