//! Which `Content-Encoding` names a compression, for request and answer bodies alike.
//!
//! Owns: reading a `Content-Encoding` header list (RFC 9110 §8.4) for the first coding that
//! changed the body's bytes. The gateway decodes none: a client's body in one is refused
//! (`gateway::content_coding`), an upstream's success in one is a malformed answer
//! (`upstream::coding`). Does not own those decisions.

use http::{HeaderMap, header};

/// The content codings that change a body's bytes: IANA's HTTP Content Coding Registry
/// (RFC 9110 §16.6.1), less `identity`. Any other name in `Content-Encoding` (`UTF-8`,
/// `none`, `binary`: a charset or a word a misconfigured server or client put there) is
/// no coding the body was put through, and is read past as the SDKs' HTTP clients read it
/// (httpx skips a coding it does not know, as urllib3 and undici do).
const COMPRESSIONS: [&str; 12] = [
    "aes128gcm",
    "br",
    "compress",
    "dcb",
    "dcz",
    "deflate",
    "exi",
    "gzip",
    "pack200-gzip",
    "x-compress",
    "x-gzip",
    "zstd",
];

/// The first content coding `headers` say was applied to the body that changed its bytes
/// (one of [`COMPRESSIONS`]), in lower case; `None` when the body is as it is.
/// `Content-Encoding` lists codings in the order applied, in one header or several (RFC
/// 9110 §8.4): any one is one the gateway cannot undo.
pub fn applied_coding(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .find_map(|c| {
            COMPRESSIONS
                .iter()
                .find(|known| c.eq_ignore_ascii_case(known))
        })
        .map(|known| (*known).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    #[test]
    fn identity_or_no_coding_is_the_body_as_it_is() {
        for h in [
            headers(&[]),
            headers(&[("content-encoding", b"identity")]),
            headers(&[("content-encoding", b"IDENTITY")]),
            headers(&[("content-encoding", b"")]),
            headers(&[("content-encoding", b" , identity ,")]),
        ] {
            assert_eq!(applied_coding(&h), None, "{h:?}");
        }
    }

    #[test]
    fn any_other_coding_is_named_in_lower_case() {
        for (values, named) in [
            (&[&b"gzip"[..]][..], "gzip"),
            (&[b"Br"], "br"),
            (&[b"identity, zstd"], "zstd"),
            (&[b"deflate, gzip"], "deflate"),
            // One coding a header: the list goes on in the next.
            (&[b"identity", b"gzip"], "gzip"),
        ] {
            let h = headers(
                &values
                    .iter()
                    .map(|v| ("content-encoding", *v))
                    .collect::<Vec<_>>(),
            );
            assert_eq!(applied_coding(&h).as_deref(), Some(named), "{h:?}");
        }
    }

    #[test]
    fn a_name_that_is_no_compression_is_no_coding() {
        for value in [
            &b"UTF-8"[..],
            b"none",
            b"binary",
            b"gz\"ip",
            b"gz\xffip",
            b"identity, utf-8",
        ] {
            let h = headers(&[("content-encoding", value)]);
            assert_eq!(applied_coding(&h), None, "{value:?}");
        }
        // A compression after one that is none is still applied.
        let h = headers(&[
            ("content-encoding", b"utf-8"),
            ("content-encoding", b"X-Gzip"),
        ]);
        assert_eq!(applied_coding(&h).as_deref(), Some("x-gzip"));
    }
}
