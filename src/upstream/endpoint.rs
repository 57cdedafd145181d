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
        })
    }

    /// `host:port` for the Host header and for connecting.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn chat_completions_path(&self) -> String {
        format!("{}/chat/completions", self.base_path)
    }
}

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
        write!(f, "{scheme}://{}{}", self.authority(), self.base_path)
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
        assert_eq!(e.chat_completions_path(), "/v1/chat/completions");
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
